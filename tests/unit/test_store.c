/* Unit tests of the store on SQLite: the shared suite (tests/store_suite.c),
 * each test on a fresh database file in its own temporary directory, plus
 * what only SQLite has (WAL, file paths) and the URI forms store_open takes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../store_suite.h"

/* CMake builds this program from this one file. */
#include "../store_suite.c"

/* The file behind a URI of either form the fixture or a test uses. */
static const char *sqlite_file(const char *uri)
{
    return strncmp(uri, "sqlite:", 7) == 0 ? uri + 7 : uri;
}

static int sqlite_create(char *uri, size_t cap)
{
    char dir[] = "/tmp/parley-store-XXXXXX";
    if (!mkdtemp(dir))
        return -1;
    snprintf(uri, cap, "%s/parley.db", dir);
    return 0;
}

/* Removes the database's directory with whatever WAL/SHM files SQLite left
 * next to it. */
static void sqlite_destroy(const char *uri)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s", sqlite_file(uri));
    char *slash = strrchr(dir, '/');
    if (!slash)
        return;
    *slash = '\0';
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static long long sqlite_raw_int(const char *uri, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    long long v = -1;
    if (sqlite3_open_v2(sqlite_file(uri), &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static const store_suite_backend sqlite_backend = {
    .name = "sqlite",
    .create = sqlite_create,
    .destroy = sqlite_destroy,
    .raw_int = sqlite_raw_int,
    .schema_version_sql = "PRAGMA user_version",
};

/* ---- SQLite only ---- */

static void test_open_bad_path(void **state)
{
    char err[256] = "";
    store *st = store_open("/nonexistent-parley-dir/sub/parley.db", err, sizeof err);
    assert_null(st);
    assert_true(strlen(err) > 0);
}

static void test_sqlite_wal(void **state)
{
    store_fixture *f = *state;
    /* WAL is a property of the file: a raw connection sees it. */
    sqlite3 *db;
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_open_v2(f->uri, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
    sqlite3_finalize(s);
    sqlite3_close(db);
}

/* store_open must fail with this message fragment. */
static void open_fails(const char *uri, const char *want)
{
    char err[512] = "";
    store *st = store_open(uri, err, sizeof err);
    if (st) {
        store_close(st);
        fail_msg("store_open(%s) succeeded", uri ? uri : "NULL");
    }
    if (!strstr(err, want))
        fail_msg("store_open(%s): \"%s\" does not say \"%s\"", uri ? uri : "NULL", err, want);
    /* Whatever went wrong, the password is not repeated. */
    assert_null(strstr(err, "s3cret"));
}

static void test_open_uri_forms(void **state)
{
    store_fixture *f = *state;
    char uri[600];
    /* "sqlite:PATH" and "sqlite://" + absolute path name the same file. */
    mkuser(f->st, "alice");
    snprintf(uri, sizeof uri, "sqlite:%s", f->uri);
    store *st = store_suite_open(uri);
    store_user u;
    assert_int_equal(store_user_by_name(st, "alice", &u), STORE_OK);
    store_close(st);
    snprintf(uri, sizeof uri, "sqlite://%s", f->uri);
    st = store_suite_open(uri);
    assert_int_equal(store_user_by_name(st, "alice", &u), STORE_OK);
    store_close(st);

    open_fails(NULL, "no store URI");
    open_fails("", "no store URI");
    open_fails("sqlite:", "no database file");
    /* A scheme we do not know is not taken for a file name. */
    open_fails("mysql://u@localhost/parley", "unknown store URI scheme");
    /* MariaDB URIs are checked before any connection is tried. */
    const char *bad = "bad MariaDB URI";
    open_fails("mariadb://", bad);
    open_fails("mariadb://localhost/parley", bad);            /* no user */
    open_fails("mariadb://u:s3cret@localhost", bad);          /* no database */
    open_fails("mariadb://u:s3cret@localhost/", bad);         /* empty database */
    open_fails("mariadb://u:s3cret@localhost:0/parley", bad); /* port */
    open_fails("mariadb://u:s3cret@localhost:70000/parley", bad);
    open_fails("mariadb://u:s3cret@localhost:33x/parley", bad);
    open_fails("mariadb://u:s3cret@/parley", bad);        /* no host, no socket */
    open_fails("mariadb://u:s3cret@[::1/parley", bad);    /* unclosed [ */
    open_fails("mariadb://u:s3%2@localhost/parley", bad); /* broken escape */
    open_fails("mariadb://u:s3cret@localhost/parley?sock=/x", bad);
    open_fails("mariadb://u:s3cret@localhost/parley#frag", bad);
}

int main(void)
{
    store_suite = &sqlite_backend;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_bad_path),
        STORE_SUITE_T(test_sqlite_wal),
        STORE_SUITE_T(test_open_uri_forms),
        STORE_SUITE_TESTS,
    };
    return cmocka_run_group_tests_name("store on SQLite", tests, NULL, NULL);
}
