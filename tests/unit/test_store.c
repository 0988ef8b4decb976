/* Unit tests of the store on SQLite: the shared suite (tests/store_suite.c),
 * each test on a fresh database file in its own temporary directory, plus
 * what only SQLite has (WAL, file paths) and the URI forms store_open takes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
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

static int sqlite_raw_exec(const char *uri, const char *sql)
{
    sqlite3 *db = NULL;
    char *err = NULL;
    int rc = sqlite3_open_v2(sqlite_file(uri), &db, SQLITE_OPEN_READWRITE, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK)
        fprintf(stderr, "%s: %s\n", sql, err ? err : sqlite3_errmsg(db));
    sqlite3_free(err);
    sqlite3_close(db);
    return rc == SQLITE_OK ? 0 : -1;
}

/* Undoes sqlite.c's steps 6 -> 7, 5 -> 6 and 4 -> 5. */
static const char *const sqlite_to_v4[] = {
    "ALTER TABLE users DROP COLUMN banned",
    "DROP INDEX messages_ref_sender",
    "CREATE UNIQUE INDEX messages_sender_ref ON messages (sender, ref) WHERE ref IS NOT NULL",
    "DROP INDEX sessions_by_user",
    "DROP INDEX sessions_by_last_used",
    "ALTER TABLE sessions DROP COLUMN last_used",
    "CREATE INDEX members_by_user ON members (user_id)",
    "DROP INDEX members_by_user_role",
    "PRAGMA user_version = 4",
    NULL,
};

static const store_suite_backend sqlite_backend = {
    .name = "sqlite",
    .create = sqlite_create,
    .destroy = sqlite_destroy,
    .raw_int = sqlite_raw_int,
    .schema_version_sql = "PRAGMA user_version",
    .schema_version = 7,
    .raw_exec = sqlite_raw_exec,
    .to_v4 = sqlite_to_v4,
};

/* ---- SQLite only ---- */

static void test_open_bad_path(void **state)
{
    char err[256] = "";
    store *st = store_open("/nonexistent-parley-dir/sub/parley.db", err, sizeof err);
    assert_null(st);
    assert_true(strlen(err) > 0);
}

/* The URI goes into logs: its password must not. */
static void test_uri_redacted_hides_the_password(void **state)
{
    (void)state;
    char out[256];
    assert_string_equal(
        store_uri_redacted("mariadb://parley:s3cret@db.example:3306/parley", out, sizeof(out)),
        "mariadb://parley:***@db.example:3306/parley");
    assert_string_equal(
        store_uri_redacted("mariadb://u:p%40ss@localhost/d?socket=/run/m.sock", out, sizeof(out)),
        "mariadb://u:***@localhost/d?socket=/run/m.sock");
    /* No password, or no URI at all: shown as given. */
    assert_string_equal(store_uri_redacted("mariadb://parley@h/d", out, sizeof(out)),
                        "mariadb://parley@h/d");
    assert_string_equal(store_uri_redacted("/var/lib/parley/parley.db", out, sizeof(out)),
                        "/var/lib/parley/parley.db");
    assert_string_equal(store_uri_redacted("data/a:b@c.db", out, sizeof(out)), "data/a:b@c.db");
    /* Truncated to fit, never past the end. */
    char small[12];
    assert_string_equal(store_uri_redacted("mariadb://u:pw@h/d", small, sizeof(small)),
                        "mariadb://u");
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

    /* ?sync=full (parleyd --sync full) is an option, not part of the name:
     * the same file opens, and no "PATH?sync=full" file appears. */
    snprintf(uri, sizeof uri, "sqlite:%s?sync=full", f->uri);
    st = store_suite_open(uri);
    assert_int_equal(store_user_by_name(st, "alice", &u), STORE_OK);
    store_close(st);
    snprintf(uri, sizeof uri, "%s?sync=full", f->uri);
    assert_int_equal(access(uri, F_OK), -1);

    open_fails(NULL, "no store URI");
    open_fails("", "no store URI");
    open_fails("sqlite:?sync=full", "no database file");
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

/* The schema as version 1 made it (sqlite.c's first migration step, which
 * never changes), with a few rows: what an existing database holds. */
static const char v1_database[] =
    "CREATE TABLE users ("
    " id INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL UNIQUE,"
    " pwhash TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL);"
    "CREATE TABLE sessions ("
    " token_hash BLOB PRIMARY KEY,"
    " user_id INTEGER NOT NULL REFERENCES users(id),"
    " created_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE friends ("
    " user_id INTEGER NOT NULL REFERENCES users(id),"
    " friend_id INTEGER NOT NULL REFERENCES users(id),"
    " created_ms INTEGER NOT NULL,"
    " PRIMARY KEY (user_id, friend_id)) WITHOUT ROWID;"
    "CREATE TABLE convs ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " kind INTEGER NOT NULL,"
    " last_seq INTEGER NOT NULL DEFAULT 0,"
    " user_lo INTEGER REFERENCES users(id),"
    " user_hi INTEGER REFERENCES users(id),"
    " UNIQUE (user_lo, user_hi));"
    "CREATE TABLE groups_ ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " name TEXT NOT NULL UNIQUE,"
    " description TEXT NOT NULL,"
    " creator INTEGER NOT NULL REFERENCES users(id),"
    " conv_id INTEGER NOT NULL UNIQUE REFERENCES convs(id),"
    " created_ms INTEGER NOT NULL);"
    "CREATE TABLE members ("
    " conv_id INTEGER NOT NULL REFERENCES convs(id),"
    " user_id INTEGER NOT NULL REFERENCES users(id),"
    " role INTEGER NOT NULL,"
    " acked_seq INTEGER NOT NULL DEFAULT 0,"
    " joined_ms INTEGER NOT NULL,"
    " PRIMARY KEY (conv_id, user_id)) WITHOUT ROWID;"
    "CREATE INDEX members_by_user ON members (user_id);"
    "CREATE TABLE messages ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " conv_id INTEGER NOT NULL REFERENCES convs(id),"
    " seq INTEGER NOT NULL,"
    " sender INTEGER NOT NULL REFERENCES users(id),"
    " body BLOB NOT NULL,"
    " ts INTEGER NOT NULL,"
    " recalled INTEGER NOT NULL DEFAULT 0,"
    " UNIQUE (conv_id, seq));"
    "INSERT INTO users VALUES (1, 'alice', 'h', 1), (2, 'bob', 'h', 1);"
    "INSERT INTO sessions VALUES"
    " (X'0102000000000000000000000000000000000000000000000000000000000000', 2, 777);"
    "INSERT INTO convs VALUES (1, 1, 2, 1, 2);"
    "INSERT INTO members VALUES (1, 1, 0, 0, 0), (1, 2, 0, 1, 0);"
    "INSERT INTO messages VALUES (1, 1, 1, 1, CAST('old one' AS BLOB), 10, 0),"
    " (2, 1, 2, 2, CAST('old two' AS BLOB), 20, 1);"
    /* Messages 3 to 5 were stored and deleted since. */
    "UPDATE sqlite_sequence SET seq = 5 WHERE name = 'messages';"
    "PRAGMA user_version = 1;";

/* Opening a version 1 database adds the ref column and its index (led by
 * ref), drops the seq counter of convs, takes AUTOINCREMENT off messages
 * without reusing the ids it had handed out, gives sessions last_used (their
 * created time) and the indexes expiry and the caps need, and keeps every
 * row. */
static void test_migrate_v1(void **state)
{
    char uri[512];
    assert_int_equal(sqlite_create(uri, sizeof uri), 0);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(uri, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, v1_database, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(raw_int(uri, "PRAGMA user_version"), 1);

    store *st = store_suite_open(uri);
    assert_int_equal(raw_int(uri, "PRAGMA user_version"), 7);
    assert_int_equal(raw_int(uri, "SELECT count(*) FROM users WHERE banned = 0"), 2);
    assert_int_equal(raw_int(uri, "SELECT last_used FROM sessions"), 777);
    assert_int_equal(raw_int(uri, "SELECT count(*) FROM pragma_table_info('sessions')"
                                  " WHERE name = 'last_used' AND \"notnull\" = 1"),
                     1);
    assert_int_equal(raw_int(uri, "SELECT group_concat(name) = 'user_id'"
                                  " FROM pragma_index_info('sessions_by_user')"),
                     1);
    assert_int_equal(raw_int(uri, "SELECT group_concat(name) = 'last_used'"
                                  " FROM pragma_index_info('sessions_by_last_used')"),
                     1);
    assert_int_equal(raw_int(uri, "SELECT group_concat(name) = 'user_id,role'"
                                  " FROM pragma_index_info('members_by_user_role')"),
                     1);
    assert_int_equal(raw_int(uri, "SELECT count(*) FROM sqlite_schema"
                                  " WHERE name = 'members_by_user'"),
                     0);
    assert_int_equal(raw_int(uri, "SELECT count(*) FROM sqlite_schema WHERE name = 'messages'"
                                  " AND sql LIKE '%AUTOINCREMENT%'"),
                     0);
    assert_int_equal(raw_int(uri, "SELECT count(*) FROM sqlite_sequence WHERE name = 'messages'"),
                     0);
    assert_int_equal(raw_int(uri, "SELECT count(*) FROM pragma_index_list('messages')"
                                  " WHERE origin = 'u' AND \"unique\" = 1"),
                     1);
    assert_int_equal(raw_int(uri, "SELECT count(*) FROM pragma_table_info('convs')"
                                  " WHERE name = 'last_seq'"),
                     0);
    assert_int_equal(raw_int(uri, "SELECT count(*) FROM pragma_table_info('messages')"
                                  " WHERE name = 'ref' AND \"notnull\" = 0"),
                     1);
    assert_int_equal(raw_int(uri, "SELECT count(*) FROM pragma_index_list('messages')"
                                  " WHERE name = 'messages_ref_sender'"
                                  " AND \"unique\" = 1 AND partial = 1"),
                     1);
    assert_int_equal(raw_int(uri, "SELECT group_concat(name) = 'ref,sender'"
                                  " FROM pragma_index_info('messages_ref_sender')"),
                     1);
    assert_int_equal(raw_int(uri, "SELECT count(*) FROM sqlite_schema"
                                  " WHERE name = 'messages_sender_ref'"),
                     0);
    assert_int_equal(raw_int(uri, "SELECT count(*) FROM messages WHERE ref IS NULL"), 2);

    /* The old rows read back as they were. */
    store_msg m;
    assert_int_equal(store_message_get(st, 1, &m), STORE_OK);
    assert_int_equal(m.seq, 1);
    assert_int_equal(m.sender, 1);
    assert_int_equal(m.to, 2);
    assert_int_equal(m.ts, 10);
    assert_int_equal(m.recalled, 0);
    assert_int_equal(m.body_len, 7);
    assert_memory_equal(m.body, "old one", 7);
    assert_int_equal(store_message_get(st, 2, &m), STORE_OK);
    assert_int_equal(m.recalled, 1);
    assert_memory_equal(m.body, "old two", 7);
    store_user u;
    assert_int_equal(store_user_by_name(st, "bob", &u), STORE_OK);
    assert_int_equal(u.id, 2);
    msgs p = {0};
    assert_int_equal(store_pending(st, 1, 0, 10, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 1);
    assert_int_equal(p.m[0].msgid, 2);

    /* New messages go on from there, with refs, and above every id handed
     * out before. */
    assert_int_equal(store_message_append(st, 1, 1, 0, "new", 3, 30, &m), STORE_OK);
    assert_int_equal(m.seq, 3);
    assert_int_equal(m.msgid, 6);
    assert_int_equal(store_message_append(st, 1, 2, 77, "ref'd", 5, 40, &m), STORE_OK);
    assert_int_equal(m.existed, 0);
    assert_int_equal(m.seq, 4);
    store_msg again;
    assert_int_equal(store_message_append(st, 1, 2, 77, "again", 5, 50, &again), STORE_OK);
    assert_int_equal(again.existed, 1);
    assert_int_equal(again.msgid, m.msgid);

    /* The old session is good for the idle time from its creation. */
    uint8_t tok[32] = {1, 2};
    uint64_t who = 0;
    assert_int_equal(store_session_user(st, tok, 777 + 1000, 1000, &who), STORE_OK);
    assert_int_equal(who, 2);
    store_close(st);

    /* Opening again finds version 7 and leaves it be. */
    st = store_suite_open(uri);
    assert_int_equal(store_message_append(st, 1, 2, 77, "again", 5, 60, &again), STORE_OK);
    assert_int_equal(again.existed, 1);
    assert_int_equal(store_session_user(st, tok, 777 + 2001, 1000, &who), STORE_NOT_FOUND);
    store_close(st);
    assert_int_equal(raw_int(uri, "PRAGMA user_version"), 7);
    assert_int_equal(raw_int(uri, "SELECT count(*) FROM messages"), 4);
    sqlite_destroy(uri);
}

/* The lookup of a ref is one search of messages_ref_sender, not a scan. */
static void test_ref_lookup_plan(void **state)
{
    store_fixture *f = *state;
    sqlite3 *db;
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_open_v2(f->uri, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    /* The query sqlite.c runs (Q_MSG_BY_REF). */
    const char *sql =
        "EXPLAIN QUERY PLAN SELECT m.id AS id, m.conv_id AS conv_id, m.seq AS seq,"
        " m.sender AS sender, m.body AS body, m.ts AS ts, m.recalled AS recalled,"
        " c.kind AS kind, c.user_lo AS user_lo, c.user_hi AS user_hi,"
        " coalesce(g.id, 0) AS group_id FROM messages AS m"
        " JOIN convs AS c ON c.id = m.conv_id LEFT JOIN groups_ AS g ON g.conv_id = m.conv_id"
        " WHERE m.sender = ?1 AND m.ref = ?2";
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    int uses_index = 0, scans_messages = 0;
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *detail = (const char *)sqlite3_column_text(s, 3);
        if (strstr(detail, "messages_ref_sender (ref=? AND sender=?)"))
            uses_index = 1;
        if (strncmp(detail, "SCAN m", 6) == 0)
            scans_messages = 1;
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    assert_true(uses_index);
    assert_false(scans_messages);
}

/* 1 if the plan of sql mentions want and scans no table whole. */
static int plan_is(sqlite3 *db, const char *sql, const char *want)
{
    char q[1024];
    snprintf(q, sizeof q, "EXPLAIN QUERY PLAN %s", sql);
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, q, -1, &s, NULL) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", sql, sqlite3_errmsg(db));
        return 0;
    }
    int found = 0, scans = 0;
    char plan[1024] = "";
    size_t used = 0;
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *detail = (const char *)sqlite3_column_text(s, 3);
        if (strstr(detail, want))
            found = 1;
        if (strncmp(detail, "SCAN ", 5) == 0)
            scans = 1;
        if (used < sizeof plan)
            used += (size_t)snprintf(plan + used, sizeof plan - used, "  %s\n", detail);
    }
    sqlite3_finalize(s);
    if (!found || scans)
        fprintf(stderr, "%s\nplan:\n%s", sql, plan);
    return found && !scans;
}

/* The counts for the caps and the session sweeps are index ranges, not
 * scans of tables that grow with the users (the queries sqlite.c runs). */
static void test_count_and_session_plans(void **state)
{
    store_fixture *f = *state;
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(f->uri, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_true(plan_is(db, "SELECT count(*) FROM friends WHERE user_id = ?1",
                        "friends USING PRIMARY KEY (user_id=?)"));
    assert_true(
        plan_is(db, "SELECT count(*) FROM members WHERE user_id = ?1 AND role > ?2",
                "members USING COVERING INDEX members_by_user_role (user_id=? AND role>?)"));
    assert_true(plan_is(db,
                        "SELECT (SELECT count(*) FROM members WHERE conv_id = g.conv_id)"
                        " FROM groups_ AS g WHERE g.id = ?1",
                        "members USING PRIMARY KEY (conv_id=?)"));
    assert_true(plan_is(db,
                        "DELETE FROM sessions WHERE token_hash IN (SELECT token_hash FROM sessions"
                        " WHERE last_used < ?1 ORDER BY last_used LIMIT ?2)",
                        "sessions USING COVERING INDEX sessions_by_last_used (last_used<?)"));
    assert_true(plan_is(db,
                        "DELETE FROM sessions WHERE token_hash IN (SELECT token_hash FROM sessions"
                        " WHERE user_id = ?1 AND token_hash <> ?2"
                        " ORDER BY last_used DESC, token_hash DESC LIMIT -1 OFFSET ?3)",
                        "sessions USING INDEX sessions_by_user (user_id=?)"));
    assert_true(
        plan_is(db, "DELETE FROM sessions WHERE user_id = ?1", "sessions_by_user (user_id=?)"));
    sqlite3_close(db);
}

enum { BIG_N = 3000, BIG_BODY = 900 };

/* Appends BIG_N messages of BIG_BODY bytes to conv in one transaction: about
 * 4 MB of WAL, past the VFS's buffer and many times the write size. */
static void append_big_batch(store *st, uint64_t conv, uint64_t sender)
{
    char body[BIG_BODY];
    assert_int_equal(store_begin(st), STORE_OK);
    for (int i = 0; i < BIG_N; i++) {
        memset(body, 'a' + i % 26, sizeof body);
        store_msg m;
        assert_int_equal(store_message_append(st, conv, sender, 0, body, sizeof body, i, &m),
                         STORE_OK);
    }
    assert_int_equal(store_commit(st), STORE_OK);
}

/* WAL writes are gathered in a buffer (sqlite_vfs.c): a commit must still be
 * whole in the file when it returns, for other connections at once and for
 * the next process after a crash. */
static void test_wal_buffer_commit_is_visible(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice"), b = mkuser(f->st, "bob"), ab;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    store *other = store_suite_open(f->uri);
    /* Uncommitted bytes, buffered or not, are nobody else's business. */
    assert_int_equal(store_begin(f->st), STORE_OK);
    append(f->st, ab, a, "not yet");
    msgs h = {0};
    assert_int_equal(store_history(other, ab, 0, 10, on_msg, &h), STORE_OK);
    assert_int_equal(h.n, 0);
    assert_int_equal(store_commit(f->st), STORE_OK);

    append_big_batch(f->st, ab, a);
    /* Another connection reads every row of it, bodies intact. */
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM messages"), BIG_N + 1);
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM messages WHERE length(body) = 900"
                                     " AND substr(body, 1, 1) = substr(body, 900, 1)"),
                     BIG_N);
    assert_int_equal(raw_int(f->uri, "SELECT max(seq) FROM messages"), BIG_N + 1);
    h.n = 0;
    assert_int_equal(store_history(other, ab, 0, 5, on_msg, &h), STORE_OK);
    assert_int_equal(h.n, 5);
    assert_int_equal(h.m[4].seq, BIG_N + 1);
    store_close(other);
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM pragma_integrity_check"
                                     " WHERE integrity_check = 'ok'"),
                     1);
}

static void test_wal_buffer_survives_a_crash(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice"), b = mkuser(f->st, "bob"), ab;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* A process that commits, then dies without closing anything. */
        char err[256];
        store *st = store_open(f->uri, err, sizeof err);
        if (!st)
            _exit(2);
        if (store_begin(st) != STORE_OK)
            _exit(3);
        for (int i = 0; i < BIG_N; i++) {
            char body[BIG_BODY];
            memset(body, 'x', sizeof body);
            store_msg m;
            if (store_message_append(st, ab, a, 0, body, sizeof body, i, &m) != STORE_OK)
                _exit(4);
        }
        if (store_commit(st) != STORE_OK)
            _exit(5);
        kill(getpid(), SIGKILL);
        _exit(6);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    store_close(f->st);
    f->st = store_suite_open(f->uri);
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM messages WHERE length(body) = 900"),
                     BIG_N);
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM pragma_integrity_check"
                                     " WHERE integrity_check = 'ok'"),
                     1);
}

int main(void)
{
    store_suite = &sqlite_backend;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_bad_path),
        cmocka_unit_test(test_uri_redacted_hides_the_password),
        STORE_SUITE_T(test_sqlite_wal),
        STORE_SUITE_T(test_open_uri_forms),
        cmocka_unit_test(test_migrate_v1),
        STORE_SUITE_T(test_ref_lookup_plan),
        STORE_SUITE_T(test_count_and_session_plans),
        STORE_SUITE_T(test_wal_buffer_commit_is_visible),
        STORE_SUITE_T(test_wal_buffer_survives_a_crash),
        STORE_SUITE_TESTS,
    };
    return cmocka_run_group_tests_name("store on SQLite", tests, NULL, NULL);
}
