/* Unit tests of the SQLite store: each test gets a fresh database in its own
 * temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"

typedef struct {
    char dir[64];
    char path[128];
    store *st;
} fixture;

static store *open_or_fail(const char *path)
{
    char err[256] = "";
    store *st = store_open(path, err, sizeof err);
    if (!st)
        fail_msg("store_open: %s", err);
    return st;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/parley-store-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof f->path, "%s/parley.db", f->dir);
    char err[256];
    f->st = store_open(f->path, err, sizeof err);
    if (!f->st) {
        fprintf(stderr, "store_open: %s\n", err);
        rmdir(f->dir);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    store_close(f->st);
    /* The database and whatever WAL/SHM files SQLite left next to it. */
    DIR *d = opendir(f->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char p[512];
            snprintf(p, sizeof p, "%s/%s", f->dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    int rc = rmdir(f->dir);
    free(f);
    return rc;
}

/* Reads one integer with a separate raw connection, to look behind the API. */
static long long raw_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *s = NULL;
    long long v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

static uint64_t mkuser(store *st, const char *name)
{
    uint64_t id = 0;
    assert_int_equal(store_user_create(st, name, "$argon2id$fake", 1000, &id), STORE_OK);
    assert_true(id > 0);
    return id;
}

static uint64_t append(store *st, uint64_t conv, uint64_t sender, const char *body)
{
    store_msg m;
    assert_int_equal(store_message_append(st, conv, sender, body, strlen(body), 5000, &m),
                     STORE_OK);
    return m.msgid;
}

/* ---- collectors for the iteration callbacks ---- */

enum { LIST_MAX = 2048 };

typedef struct {
    size_t n, stop_after; /* stop_after 0: never stop */
    uint64_t id[LIST_MAX];
    char name[LIST_MAX][STORE_NAME_MAX * 4 + 1];
    int role[LIST_MAX];
    store_group group[16];
} list;

static int on_user(void *arg, uint64_t id, const char *name)
{
    list *l = arg;
    l->id[l->n] = id;
    snprintf(l->name[l->n], sizeof l->name[0], "%s", name);
    l->n++;
    return l->stop_after && l->n >= l->stop_after;
}

static int on_member(void *arg, uint64_t id, const char *name, int role)
{
    list *l = arg;
    l->role[l->n] = role;
    return on_user(arg, id, name);
}

static int on_group(void *arg, const store_group *g)
{
    list *l = arg;
    l->group[l->n] = *g;
    l->id[l->n] = g->id;
    l->n++;
    return 0;
}

typedef struct {
    size_t n, stop_after;
    store_msg m[LIST_MAX];
    char body[LIST_MAX][32];
} msgs;

static int on_msg(void *arg, const store_msg *m)
{
    msgs *l = arg;
    l->m[l->n] = *m;
    /* The body pointer dies with the callback: keep a copy. */
    size_t n = m->body_len < sizeof l->body[0] - 1 ? m->body_len : sizeof l->body[0] - 1;
    memcpy(l->body[l->n], m->body, n);
    l->body[l->n][n] = '\0';
    l->m[l->n].body = NULL;
    l->n++;
    return l->stop_after && l->n >= l->stop_after;
}

/* ---- open ---- */

static void test_open_bad_path(void **state)
{
    char err[256] = "";
    store *st = store_open("/nonexistent-parley-dir/sub/parley.db", err, sizeof err);
    assert_null(st);
    assert_true(strlen(err) > 0);
}

static void test_open_schema(void **state)
{
    fixture *f = *state;
    assert_int_equal(raw_int(f->path, "PRAGMA user_version"), 1);
    /* WAL is a property of the file: a raw connection sees it. */
    sqlite3 *db;
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
    sqlite3_finalize(s);
    sqlite3_close(db);
    /* A second handle on an existing, current schema opens and sees data. */
    uint64_t id = mkuser(f->st, "alice");
    store *st2 = open_or_fail(f->path);
    store_user u;
    assert_int_equal(store_user_by_name(st2, "alice", &u), STORE_OK);
    assert_int_equal(u.id, id);
    store_close(st2);
    store_close(NULL); /* harmless */
}

typedef struct {
    const char *path;
    pthread_barrier_t *start;
    int index;
    int ok;
    char err[256];
} opener;

static void *open_thread(void *arg)
{
    opener *o = arg;
    pthread_barrier_wait(o->start);
    store *st = store_open(o->path, o->err, sizeof o->err);
    if (!st)
        return NULL;
    char name[32];
    snprintf(name, sizeof name, "user%d", o->index);
    uint64_t id;
    o->ok = store_user_create(st, name, "h", 1, &id) == STORE_OK;
    if (!o->ok)
        snprintf(o->err, sizeof o->err, "%s", store_errmsg(st));
    store_close(st);
    return NULL;
}

/* Many handles creating the schema of a brand-new file at the same moment. */
static void test_open_concurrent(void **state)
{
    fixture *f = *state;
    enum { N = 8 };
    char path[192];
    snprintf(path, sizeof path, "%s/fresh.db", f->dir);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N);
    pthread_t th[N];
    opener o[N];
    for (int i = 0; i < N; i++) {
        o[i] = (opener){.path = path, .start = &start, .index = i};
        assert_int_equal(pthread_create(&th[i], NULL, open_thread, &o[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < N; i++) {
        if (!o[i].ok)
            fail_msg("opener %d: %s", i, o[i].err);
    }
    assert_int_equal(raw_int(path, "SELECT count(*) FROM users"), N);
    assert_int_equal(raw_int(path, "PRAGMA user_version"), 1);
}

/* ---- users and sessions ---- */

static void test_users(void **state)
{
    fixture *f = *state;
    uint64_t alice = mkuser(f->st, "alice");
    uint64_t bob = mkuser(f->st, "bob");
    assert_int_not_equal(alice, bob);

    uint64_t id = 0;
    assert_int_equal(store_user_create(f->st, "alice", "other", 2, &id), STORE_CONFLICT);
    /* Lookup is exact, not case-insensitive. */
    assert_int_equal(store_user_create(f->st, "Alice", "h2", 2, &id), STORE_OK);
    assert_int_not_equal(id, alice);

    store_user u;
    assert_int_equal(store_user_by_name(f->st, "alice", &u), STORE_OK);
    assert_int_equal(u.id, alice);
    assert_string_equal(u.name, "alice");
    assert_string_equal(u.pwhash, "$argon2id$fake");
    memset(&u, 0, sizeof u);
    assert_int_equal(store_user_by_id(f->st, bob, &u), STORE_OK);
    assert_int_equal(u.id, bob);
    assert_string_equal(u.name, "bob");
    assert_string_equal(u.pwhash, "$argon2id$fake");

    assert_int_equal(store_user_by_name(f->st, "carol", &u), STORE_NOT_FOUND);
    assert_int_equal(store_user_by_name(f->st, "alic", &u), STORE_NOT_FOUND);
    assert_int_equal(store_user_by_id(f->st, 9999, &u), STORE_NOT_FOUND);
    /* An id beyond int64 must not wrap around and match something. */
    assert_int_equal(store_user_by_id(f->st, UINT64_MAX, &u), STORE_NOT_FOUND);
}

static void test_user_limits(void **state)
{
    fixture *f = *state;
    char name[STORE_NAME_MAX * 4 + 2];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    uint64_t id;
    /* One byte more than a store_user can hold back. */
    assert_int_equal(store_user_create(f->st, name, "h", 1, &id), STORE_ERROR);
    assert_true(strlen(store_errmsg(f->st)) > 0);
    name[sizeof name - 2] = '\0';
    assert_int_equal(store_user_create(f->st, name, "h", 1, &id), STORE_OK);
    store_user u;
    assert_int_equal(store_user_by_id(f->st, id, &u), STORE_OK);
    assert_string_equal(u.name, name);

    char hash[STORE_HASH_MAX + 2];
    memset(hash, 'h', sizeof hash - 1);
    hash[sizeof hash - 1] = '\0';
    assert_int_equal(store_user_create(f->st, "x", hash, 1, &id), STORE_ERROR);
    assert_int_equal(store_user_create(f->st, NULL, "h", 1, &id), STORE_ERROR);
}

static void test_user_name_verbatim(void **state)
{
    fixture *f = *state;
    const char *evil = "x'); DROP TABLE users;--";
    const char *utf8 = "\xc3\xa9l\xc3\xa8ve \"q\" %s";
    uint64_t a = mkuser(f->st, evil);
    uint64_t b = mkuser(f->st, utf8);
    store_user u;
    assert_int_equal(store_user_by_id(f->st, a, &u), STORE_OK);
    assert_string_equal(u.name, evil);
    assert_int_equal(store_user_by_name(f->st, evil, &u), STORE_OK);
    assert_int_equal(u.id, a);
    assert_int_equal(store_user_by_name(f->st, utf8, &u), STORE_OK);
    assert_int_equal(u.id, b);
    /* The table is still there and holds both rows. */
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM users"), 2);
    assert_int_equal(store_group_create(f->st, evil, evil, a, 1, NULL), STORE_OK);
    list l = {0};
    assert_int_equal(store_user_groups(f->st, a, on_group, &l), STORE_OK);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.group[0].name, evil);
    assert_string_equal(l.group[0].desc, evil);
}

static void test_sessions(void **state)
{
    fixture *f = *state;
    uint64_t alice = mkuser(f->st, "alice");
    uint8_t t1[32], t2[32];
    memset(t1, 0xa1, sizeof t1);
    memset(t2, 0xa1, sizeof t2);
    t2[31] = 0; /* differs in the last byte only */

    uint64_t user = 0;
    assert_int_equal(store_session_user(f->st, t1, &user), STORE_NOT_FOUND);
    assert_int_equal(store_session_create(f->st, t1, alice, 10), STORE_OK);
    assert_int_equal(store_session_create(f->st, t1, alice, 11), STORE_CONFLICT);
    assert_int_equal(store_session_create(f->st, t2, 9999, 11), STORE_NOT_FOUND);
    assert_int_equal(store_session_user(f->st, t1, &user), STORE_OK);
    assert_int_equal(user, alice);
    assert_int_equal(store_session_user(f->st, t2, &user), STORE_NOT_FOUND);

    assert_int_equal(store_session_delete(f->st, t1), STORE_OK);
    assert_int_equal(store_session_user(f->st, t1, &user), STORE_NOT_FOUND);
    assert_int_equal(store_session_delete(f->st, t1), STORE_NOT_FOUND);
}

/* ---- friends ---- */

static void test_friends(void **state)
{
    fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t c = mkuser(f->st, "carol");

    assert_int_equal(store_friend_add(f->st, a, a, 1), STORE_CONFLICT);
    assert_int_equal(store_friend_add(f->st, a, 9999, 1), STORE_NOT_FOUND);
    assert_int_equal(store_friend_add(f->st, 9999, a, 1), STORE_NOT_FOUND);
    assert_int_equal(store_friend_add(f->st, c, a, 1), STORE_OK);
    assert_int_equal(store_friend_add(f->st, a, b, 1), STORE_OK);
    assert_int_equal(store_friend_add(f->st, a, b, 1), STORE_CONFLICT);
    assert_int_equal(store_friend_add(f->st, b, a, 1), STORE_CONFLICT);

    list l = {0};
    assert_int_equal(store_friend_list(f->st, a, on_user, &l), STORE_OK);
    assert_int_equal(l.n, 2); /* ordered by id, not by insertion */
    assert_int_equal(l.id[0], b);
    assert_string_equal(l.name[0], "bob");
    assert_int_equal(l.id[1], c);
    assert_string_equal(l.name[1], "carol");
    memset(&l, 0, sizeof l);
    assert_int_equal(store_friend_list(f->st, b, on_user, &l), STORE_OK);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.id[0], a);

    /* The callback can stop the iteration. */
    memset(&l, 0, sizeof l);
    l.stop_after = 1;
    assert_int_equal(store_friend_list(f->st, a, on_user, &l), STORE_OK);
    assert_int_equal(l.n, 1);

    /* Deleting from either side removes both directions. */
    assert_int_equal(store_friend_del(f->st, b, a), STORE_OK);
    assert_int_equal(store_friend_del(f->st, a, b), STORE_NOT_FOUND);
    assert_int_equal(store_friend_del(f->st, b, c), STORE_NOT_FOUND);
    memset(&l, 0, sizeof l);
    assert_int_equal(store_friend_list(f->st, a, on_user, &l), STORE_OK);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.id[0], c);
    memset(&l, 0, sizeof l);
    assert_int_equal(store_friend_list(f->st, b, on_user, &l), STORE_OK);
    assert_int_equal(l.n, 0);
    /* And they can be friends again. */
    assert_int_equal(store_friend_add(f->st, b, a, 2), STORE_OK);
}

/* ---- groups ---- */

static void test_groups(void **state)
{
    fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t c = mkuser(f->st, "carol");

    store_group g, g2;
    assert_int_equal(store_group_create(f->st, "book club", "we read", a, 1, &g), STORE_OK);
    assert_true(g.id > 0);
    assert_true(g.conv > 0);
    assert_int_equal(g.creator, a);
    assert_string_equal(g.name, "book club");
    assert_string_equal(g.desc, "we read");
    assert_int_equal(store_group_create(f->st, "book club", "again", b, 1, NULL), STORE_CONFLICT);
    assert_int_equal(store_group_create(f->st, "nobody's", "", 9999, 1, NULL), STORE_NOT_FOUND);
    assert_int_equal(store_group_create(f->st, "chess", NULL, b, 1, &g2), STORE_OK);
    assert_string_equal(g2.desc, "");
    assert_int_not_equal(g.conv, g2.conv);

    store_group got;
    assert_int_equal(store_group_get(f->st, g.id, &got), STORE_OK);
    assert_int_equal(got.id, g.id);
    assert_int_equal(got.conv, g.conv);
    assert_int_equal(got.creator, a);
    assert_string_equal(got.name, "book club");
    assert_string_equal(got.desc, "we read");
    assert_int_equal(store_group_get(f->st, 9999, &got), STORE_NOT_FOUND);

    int role = -1;
    assert_int_equal(store_group_role(f->st, g.id, a, &role), STORE_OK);
    assert_int_equal(role, STORE_ROLE_CREATOR);
    assert_int_equal(store_group_role(f->st, g.id, b, &role), STORE_NOT_FOUND);

    assert_int_equal(store_group_join(f->st, g.id, c, 2), STORE_OK);
    assert_int_equal(store_group_join(f->st, g.id, b, 2), STORE_OK);
    assert_int_equal(store_group_join(f->st, g.id, b, 3), STORE_CONFLICT);
    assert_int_equal(store_group_join(f->st, g.id, a, 3), STORE_CONFLICT);
    assert_int_equal(store_group_join(f->st, 9999, b, 3), STORE_NOT_FOUND);
    assert_int_equal(store_group_join(f->st, g.id, 9999, 3), STORE_NOT_FOUND);
    assert_int_equal(store_group_role(f->st, g.id, b, &role), STORE_OK);
    assert_int_equal(role, STORE_ROLE_NORMAL);

    list l = {0};
    assert_int_equal(store_group_members(f->st, g.id, on_member, &l), STORE_OK);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.id[0], a);
    assert_string_equal(l.name[0], "alice");
    assert_int_equal(l.role[0], STORE_ROLE_CREATOR);
    assert_int_equal(l.id[1], b);
    assert_string_equal(l.name[1], "bob");
    assert_int_equal(l.role[1], STORE_ROLE_NORMAL);
    assert_int_equal(l.id[2], c);
    assert_int_equal(l.role[2], STORE_ROLE_NORMAL);
    assert_int_equal(store_group_members(f->st, 9999, on_member, &l), STORE_NOT_FOUND);

    memset(&l, 0, sizeof l);
    assert_int_equal(store_conv_members(f->st, g.conv, on_user, &l), STORE_OK);
    assert_int_equal(l.n, 3);
    assert_int_equal(store_conv_members(f->st, 9999, on_user, &l), STORE_NOT_FOUND);

    /* bob is in both, listed by group id. */
    memset(&l, 0, sizeof l);
    assert_int_equal(store_user_groups(f->st, b, on_group, &l), STORE_OK);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.group[0].id, g.id);
    assert_int_equal(l.group[0].conv, g.conv);
    assert_int_equal(l.group[0].creator, a);
    assert_string_equal(l.group[0].name, "book club");
    assert_string_equal(l.group[0].desc, "we read");
    assert_int_equal(l.group[1].id, g2.id);

    assert_int_equal(store_group_quit(f->st, g.id, b), STORE_OK);
    assert_int_equal(store_group_quit(f->st, g.id, b), STORE_NOT_FOUND);
    assert_int_equal(store_group_quit(f->st, 9999, b), STORE_NOT_FOUND);
    assert_int_equal(store_group_role(f->st, g.id, b, &role), STORE_NOT_FOUND);
    memset(&l, 0, sizeof l);
    assert_int_equal(store_user_groups(f->st, b, on_group, &l), STORE_OK);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.group[0].id, g2.id);
    memset(&l, 0, sizeof l);
    assert_int_equal(store_group_members(f->st, g.id, on_member, &l), STORE_OK);
    assert_int_equal(l.n, 2);

    /* A group with no members left still exists and lists empty. */
    assert_int_equal(store_group_quit(f->st, g2.id, b), STORE_OK);
    memset(&l, 0, sizeof l);
    assert_int_equal(store_group_members(f->st, g2.id, on_member, &l), STORE_OK);
    assert_int_equal(l.n, 0);
}

static void test_group_delete(void **state)
{
    fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    store_group g, other;
    assert_int_equal(store_group_create(f->st, "doomed", "", a, 1, &g), STORE_OK);
    assert_int_equal(store_group_create(f->st, "other", "", a, 1, &other), STORE_OK);
    assert_int_equal(store_group_join(f->st, g.id, b, 2), STORE_OK);
    assert_int_equal(store_group_join(f->st, other.id, b, 2), STORE_OK);
    uint64_t doomed_msg = append(f->st, g.conv, a, "bye");
    uint64_t kept_msg = append(f->st, other.conv, a, "stay");

    assert_int_equal(store_group_delete(f->st, g.id), STORE_OK);
    assert_int_equal(store_group_delete(f->st, g.id), STORE_NOT_FOUND);
    assert_int_equal(store_group_get(f->st, g.id, NULL), STORE_NOT_FOUND);
    store_msg m;
    assert_int_equal(store_message_get(f->st, doomed_msg, &m), STORE_NOT_FOUND);
    assert_int_equal(store_message_get(f->st, kept_msg, &m), STORE_OK);
    assert_int_equal(store_message_append(f->st, g.conv, a, "x", 1, 1, &m), STORE_NOT_FOUND);
    list l = {0};
    assert_int_equal(store_conv_members(f->st, g.conv, on_user, &l), STORE_NOT_FOUND);
    assert_int_equal(store_user_groups(f->st, b, on_group, &l), STORE_OK);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.group[0].id, other.id);
    msgs p = {0};
    assert_int_equal(store_pending(f->st, b, 0, 100, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 1);
    assert_int_equal(p.m[0].msgid, kept_msg);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM convs"), 1);

    /* The name is free again; ids are not reused. */
    store_group again;
    assert_int_equal(store_group_create(f->st, "doomed", "", b, 1, &again), STORE_OK);
    assert_true(again.id > other.id);
    assert_true(again.conv > other.conv);
    assert_true(append(f->st, again.conv, b, "new") > kept_msg);
}

/* ---- conversations and messages ---- */

static void test_direct_conv(void **state)
{
    fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t c = mkuser(f->st, "carol");
    uint64_t ab = 0, ba = 0, ac = 0, x = 0;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    assert_int_equal(store_direct_conv(f->st, b, a, &ba), STORE_OK);
    assert_int_equal(ab, ba);
    assert_int_equal(store_direct_conv(f->st, a, b, &x), STORE_OK);
    assert_int_equal(x, ab);
    assert_int_equal(store_direct_conv(f->st, a, c, &ac), STORE_OK);
    assert_int_not_equal(ab, ac);
    assert_int_equal(store_direct_conv(f->st, a, a, &x), STORE_CONFLICT);
    assert_int_equal(store_direct_conv(f->st, a, 9999, &x), STORE_NOT_FOUND);
    assert_int_equal(store_direct_conv(f->st, 9999, a, &x), STORE_NOT_FOUND);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM convs"), 2);

    list l = {0};
    assert_int_equal(store_conv_members(f->st, ab, on_user, &l), STORE_OK);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.id[0], a);
    assert_string_equal(l.name[0], "alice");
    assert_int_equal(l.id[1], b);
    assert_string_equal(l.name[1], "bob");
    /* Both cursors start at 0: the first message is pending. */
    append(f->st, ab, b, "hi");
    msgs p = {0};
    assert_int_equal(store_pending(f->st, a, 0, 10, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 1);
}

static void test_append_seq(void **state)
{
    fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t ab;
    store_group g;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    assert_int_equal(store_group_create(f->st, "g", "", a, 1, &g), STORE_OK);

    uint64_t last_id = 0;
    for (int i = 0; i < 3; i++) {
        store_msg m, n;
        const char *body = "direct";
        assert_int_equal(store_message_append(f->st, ab, a, body, 6, 100 + i, &m), STORE_OK);
        assert_int_equal(m.seq, (uint64_t)i + 1);
        assert_int_equal(m.conv, ab);
        assert_int_equal(m.sender, a);
        assert_int_equal(m.to, b);
        assert_int_equal(m.group, 0);
        assert_int_equal(m.ts, 100 + i);
        assert_int_equal(m.recalled, 0);
        assert_ptr_equal(m.body, body);
        assert_int_equal(m.body_len, 6);
        assert_true(m.msgid > last_id);
        last_id = m.msgid;

        assert_int_equal(store_message_append(f->st, g.conv, a, "grp", 3, 200, &n), STORE_OK);
        assert_int_equal(n.seq, (uint64_t)i + 1);
        assert_int_equal(n.to, 0);
        assert_int_equal(n.group, g.id);
        assert_true(n.msgid > last_id);
        last_id = n.msgid;
    }
    /* `to` is the other user whichever side sends. */
    store_msg m;
    assert_int_equal(store_message_append(f->st, ab, b, "back", 4, 1, &m), STORE_OK);
    assert_int_equal(m.seq, 4);
    assert_int_equal(m.to, a);
    /* An empty body is allowed (and reads back empty, not NULL). */
    assert_int_equal(store_message_append(f->st, ab, b, NULL, 0, 1, &m), STORE_OK);
    store_msg got;
    assert_int_equal(store_message_get(f->st, m.msgid, &got), STORE_OK);
    assert_int_equal(got.body_len, 0);
    assert_non_null(got.body);

    assert_int_equal(store_message_append(f->st, 9999, a, "x", 1, 1, &m), STORE_NOT_FOUND);
    assert_int_equal(store_message_append(f->st, ab, 9999, "x", 1, 1, &m), STORE_NOT_FOUND);
    /* Failed appends consumed no seq. */
    assert_int_equal(store_message_append(f->st, ab, a, "x", 1, 1, &m), STORE_OK);
    assert_int_equal(m.seq, 6);
}

static void test_message_get_recall(void **state)
{
    fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t ab;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    /* Bodies are bytes: an embedded NUL survives. */
    const char body[] = {'h', 'i', '\0', '!'};
    store_msg m;
    assert_int_equal(store_message_append(f->st, ab, b, body, sizeof body, 77, &m), STORE_OK);

    store_msg got;
    assert_int_equal(store_message_get(f->st, m.msgid, &got), STORE_OK);
    assert_int_equal(got.msgid, m.msgid);
    assert_int_equal(got.conv, ab);
    assert_int_equal(got.seq, 1);
    assert_int_equal(got.sender, b);
    assert_int_equal(got.to, a);
    assert_int_equal(got.group, 0);
    assert_int_equal(got.ts, 77);
    assert_int_equal(got.recalled, 0);
    assert_int_equal(got.body_len, sizeof body);
    assert_memory_equal(got.body, body, sizeof body);
    /* The body stays valid after the call returns. */
    uint64_t other = append(f->st, ab, a, "other");
    assert_memory_equal(got.body, body, sizeof body);
    assert_int_equal(store_message_get(f->st, 9999, &got), STORE_NOT_FOUND);

    assert_int_equal(store_message_recall(f->st, m.msgid), STORE_OK);
    assert_int_equal(store_message_recall(f->st, m.msgid), STORE_OK); /* idempotent */
    assert_int_equal(store_message_recall(f->st, 9999), STORE_NOT_FOUND);
    assert_int_equal(store_message_get(f->st, m.msgid, &got), STORE_OK);
    assert_int_equal(got.recalled, 1);
    assert_int_equal(store_message_get(f->st, other, &got), STORE_OK);
    assert_int_equal(got.recalled, 0);
    msgs h = {0};
    assert_int_equal(store_history(f->st, ab, 0, 10, on_msg, &h), STORE_OK);
    assert_int_equal(h.n, 2);
    assert_int_equal(h.m[0].recalled, 1);
    assert_int_equal(h.m[1].recalled, 0);
}

static void test_history(void **state)
{
    fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t c = mkuser(f->st, "carol");
    uint64_t ab, ac;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    assert_int_equal(store_direct_conv(f->st, a, c, &ac), STORE_OK);
    for (int i = 1; i <= 10; i++) {
        char body[16];
        snprintf(body, sizeof body, "m%d", i);
        append(f->st, ab, i % 2 ? a : b, body);
        append(f->st, ac, a, "noise");
    }

    /* Newest 3, oldest first. */
    msgs h = {0};
    assert_int_equal(store_history(f->st, ab, 0, 3, on_msg, &h), STORE_OK);
    assert_int_equal(h.n, 3);
    assert_int_equal(h.m[0].seq, 8);
    assert_int_equal(h.m[1].seq, 9);
    assert_int_equal(h.m[2].seq, 10);
    assert_string_equal(h.body[0], "m8");
    assert_string_equal(h.body[2], "m10");
    assert_int_equal(h.m[2].sender, b);
    assert_int_equal(h.m[2].to, a);
    assert_int_equal(h.m[1].to, b);

    /* Page back from the oldest seen. */
    memset(&h, 0, sizeof h);
    assert_int_equal(store_history(f->st, ab, 8, 3, on_msg, &h), STORE_OK);
    assert_int_equal(h.n, 3);
    assert_int_equal(h.m[0].seq, 5);
    assert_int_equal(h.m[2].seq, 7);
    memset(&h, 0, sizeof h);
    assert_int_equal(store_history(f->st, ab, 3, 10, on_msg, &h), STORE_OK);
    assert_int_equal(h.n, 2);
    assert_int_equal(h.m[0].seq, 1);
    assert_string_equal(h.body[0], "m1");
    assert_int_equal(h.m[1].seq, 2);
    memset(&h, 0, sizeof h);
    assert_int_equal(store_history(f->st, ab, 1, 10, on_msg, &h), STORE_OK);
    assert_int_equal(h.n, 0);
    /* Everything, only this conversation. */
    memset(&h, 0, sizeof h);
    assert_int_equal(store_history(f->st, ab, 0, 100, on_msg, &h), STORE_OK);
    assert_int_equal(h.n, 10);
    for (size_t i = 0; i < h.n; i++) {
        assert_int_equal(h.m[i].conv, ab);
        assert_int_equal(h.m[i].seq, i + 1);
    }
    memset(&h, 0, sizeof h);
    h.stop_after = 2;
    assert_int_equal(store_history(f->st, ab, 0, 100, on_msg, &h), STORE_OK);
    assert_int_equal(h.n, 2);

    memset(&h, 0, sizeof h);
    assert_int_equal(store_history(f->st, 9999, 0, 10, on_msg, &h), STORE_NOT_FOUND);
    uint64_t empty;
    assert_int_equal(store_direct_conv(f->st, b, c, &empty), STORE_OK);
    assert_int_equal(store_history(f->st, empty, 0, 10, on_msg, &h), STORE_OK);
    assert_int_equal(h.n, 0);
}

static void test_pending(void **state)
{
    fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t c = mkuser(f->st, "carol");
    uint64_t ab, bc;
    store_group g;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    assert_int_equal(store_direct_conv(f->st, b, c, &bc), STORE_OK);
    assert_int_equal(store_group_create(f->st, "g", "", c, 1, &g), STORE_OK);
    assert_int_equal(store_group_join(f->st, g.id, a, 1), STORE_OK);

    /* Interleaved across conversations; msgid order is the global order. */
    uint64_t m1 = append(f->st, ab, b, "1");     /* for a */
    uint64_t m2 = append(f->st, g.conv, c, "2"); /* for a */
    append(f->st, ab, a, "own");                 /* a's own: never pending for a */
    append(f->st, bc, b, "not a's");
    uint64_t m5 = append(f->st, ab, b, "5");     /* for a */
    uint64_t m6 = append(f->st, g.conv, a, "6"); /* a's own in the group */
    uint64_t m7 = append(f->st, g.conv, c, "7"); /* for a */

    msgs p = {0};
    assert_int_equal(store_pending(f->st, a, 0, 100, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 4);
    assert_int_equal(p.m[0].msgid, m1);
    assert_int_equal(p.m[1].msgid, m2);
    assert_int_equal(p.m[2].msgid, m5);
    assert_int_equal(p.m[3].msgid, m7);
    assert_string_equal(p.body[3], "7");
    assert_int_equal(p.m[0].to, a);
    assert_int_equal(p.m[0].group, 0);
    assert_int_equal(p.m[1].group, g.id);
    assert_int_equal(p.m[1].to, 0);
    assert_int_equal(p.m[1].conv, g.conv);
    for (size_t i = 0; i < p.n; i++)
        assert_int_not_equal(p.m[i].sender, a);

    /* limit keeps the oldest; after_msgid pages on from the last one seen. */
    memset(&p, 0, sizeof p);
    assert_int_equal(store_pending(f->st, a, 0, 2, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.m[0].msgid, m1);
    assert_int_equal(p.m[1].msgid, m2);
    memset(&p, 0, sizeof p);
    assert_int_equal(store_pending(f->st, a, m2, 2, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.m[0].msgid, m5);
    assert_int_equal(p.m[1].msgid, m7);
    memset(&p, 0, sizeof p);
    assert_int_equal(store_pending(f->st, a, m7, 2, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 0);
    assert_int_equal(store_pending(f->st, a, UINT64_MAX, 2, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 0);
    assert_int_equal(store_pending(f->st, a, 0, 0, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 0);

    /* The cursor hides what was acked, per conversation. */
    assert_int_equal(store_ack(f->st, a, ab, 1), STORE_OK);
    memset(&p, 0, sizeof p);
    assert_int_equal(store_pending(f->st, a, 0, 100, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 3);
    assert_int_equal(p.m[0].msgid, m2);
    assert_int_equal(store_ack(f->st, a, g.conv, 1), STORE_OK);
    memset(&p, 0, sizeof p);
    assert_int_equal(store_pending(f->st, a, 0, 100, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.m[0].msgid, m5);
    assert_int_equal(p.m[1].msgid, m7);

    /* c's view: the group (minus its own) is pending; m6 is a's. */
    memset(&p, 0, sizeof p);
    assert_int_equal(store_pending(f->st, c, 0, 100, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 2); /* "not a's" in bc, and m6 */
    assert_int_equal(p.m[1].msgid, m6);

    /* Leaving the group drops its messages from pending. */
    assert_int_equal(store_group_quit(f->st, g.id, a), STORE_OK);
    memset(&p, 0, sizeof p);
    assert_int_equal(store_pending(f->st, a, 0, 100, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 1);
    assert_int_equal(p.m[0].msgid, m5);
}

static void test_ack(void **state)
{
    fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t c = mkuser(f->st, "carol");
    uint64_t ab;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    for (int i = 0; i < 5; i++)
        append(f->st, ab, b, "x");

    msgs p = {0};
    assert_int_equal(store_ack(f->st, a, ab, 3), STORE_OK);
    assert_int_equal(store_pending(f->st, a, 0, 100, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.m[0].seq, 4);
    /* Never backwards. */
    assert_int_equal(store_ack(f->st, a, ab, 1), STORE_OK);
    memset(&p, 0, sizeof p);
    assert_int_equal(store_pending(f->st, a, 0, 100, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.m[0].seq, 4);
    /* Beyond the end is capped at the last message, so later ones still
     * show up. */
    assert_int_equal(store_ack(f->st, a, ab, 1000), STORE_OK);
    memset(&p, 0, sizeof p);
    assert_int_equal(store_pending(f->st, a, 0, 100, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 0);
    append(f->st, ab, b, "later");
    assert_int_equal(store_pending(f->st, a, 0, 100, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 1);
    assert_int_equal(p.m[0].seq, 6);
    assert_int_equal(store_ack(f->st, a, ab, UINT64_MAX), STORE_OK);
    memset(&p, 0, sizeof p);
    assert_int_equal(store_pending(f->st, a, 0, 100, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 0);

    assert_int_equal(store_ack(f->st, c, ab, 1), STORE_NOT_FOUND);
    assert_int_equal(store_ack(f->st, a, 9999, 1), STORE_NOT_FOUND);
}

/* A newcomer's cursor starts at the group's last_seq. */
static void test_join_cursor(void **state)
{
    fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    store_group g;
    assert_int_equal(store_group_create(f->st, "g", "", a, 1, &g), STORE_OK);
    append(f->st, g.conv, a, "before 1");
    append(f->st, g.conv, a, "before 2");
    assert_int_equal(store_group_join(f->st, g.id, b, 2), STORE_OK);
    msgs p = {0};
    assert_int_equal(store_pending(f->st, b, 0, 100, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 0);
    append(f->st, g.conv, a, "after");
    assert_int_equal(store_pending(f->st, b, 0, 100, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 1);
    assert_int_equal(p.m[0].seq, 3);
    assert_string_equal(p.body[0], "after");
    /* History is still readable. */
    msgs h = {0};
    assert_int_equal(store_history(f->st, g.conv, 0, 10, on_msg, &h), STORE_OK);
    assert_int_equal(h.n, 3);
}

/* ---- transactions ---- */

static void test_transactions(void **state)
{
    fixture *f = *state;
    store_user u;
    uint64_t id;

    assert_int_equal(store_begin(f->st), STORE_OK);
    assert_int_equal(store_begin(f->st), STORE_ERROR); /* no nesting */
    mkuser(f->st, "gone");
    assert_int_equal(store_rollback(f->st), STORE_OK);
    assert_int_equal(store_user_by_name(f->st, "gone", &u), STORE_NOT_FOUND);

    /* A batch: the failed request is undone, the others kept. */
    assert_int_equal(store_begin(f->st), STORE_OK);
    assert_int_equal(store_savepoint(f->st), STORE_OK);
    uint64_t a = mkuser(f->st, "a");
    assert_int_equal(store_release(f->st), STORE_OK);
    assert_int_equal(store_savepoint(f->st), STORE_OK);
    mkuser(f->st, "b");
    assert_int_equal(store_rollback_to(f->st), STORE_OK);
    assert_int_equal(store_savepoint(f->st), STORE_OK);
    mkuser(f->st, "c");
    assert_int_equal(store_release(f->st), STORE_OK);
    /* A call failing inside the transaction leaves it usable. */
    assert_int_equal(store_user_create(f->st, "a", "h", 1, &id), STORE_CONFLICT);
    assert_int_equal(store_group_create(f->st, "g", "", 9999, 1, NULL), STORE_NOT_FOUND);
    assert_int_equal(store_group_create(f->st, "g", "", a, 1, NULL), STORE_OK);
    assert_int_equal(store_group_create(f->st, "g", "", a, 1, NULL), STORE_CONFLICT);
    assert_int_equal(store_commit(f->st), STORE_OK);

    assert_int_equal(store_user_by_name(f->st, "a", &u), STORE_OK);
    assert_int_equal(store_user_by_name(f->st, "b", &u), STORE_NOT_FOUND);
    assert_int_equal(store_user_by_name(f->st, "c", &u), STORE_OK);
    /* The failed creates left no half-made group behind. */
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM convs"), 1);
    assert_int_equal(raw_int(f->path, "SELECT count(*) FROM groups_"), 1);

    assert_int_equal(store_commit(f->st), STORE_ERROR);
    assert_int_equal(store_savepoint(f->st), STORE_ERROR); /* only inside begin */
    assert_true(strlen(store_errmsg(f->st)) > 0);

    /* An append rolled back gives its seq back. */
    uint64_t b = mkuser(f->st, "b");
    uint64_t ab;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    store_msg m;
    assert_int_equal(store_begin(f->st), STORE_OK);
    assert_int_equal(store_message_append(f->st, ab, a, "x", 1, 1, &m), STORE_OK);
    assert_int_equal(m.seq, 1);
    assert_int_equal(store_message_append(f->st, ab, a, "y", 1, 1, &m), STORE_OK);
    assert_int_equal(m.seq, 2);
    assert_int_equal(store_rollback(f->st), STORE_OK);
    assert_int_equal(store_message_append(f->st, ab, a, "z", 1, 1, &m), STORE_OK);
    assert_int_equal(m.seq, 1);
}

static void test_persistence(void **state)
{
    fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint8_t tok[32] = {1, 2, 3};
    store_group g;
    uint64_t ab;
    assert_int_equal(store_session_create(f->st, tok, a, 1), STORE_OK);
    assert_int_equal(store_friend_add(f->st, a, b, 1), STORE_OK);
    assert_int_equal(store_group_create(f->st, "g", "d", a, 1, &g), STORE_OK);
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    append(f->st, ab, a, "one");
    append(f->st, ab, a, "two");
    assert_int_equal(store_ack(f->st, b, ab, 1), STORE_OK);

    store_close(f->st);
    f->st = open_or_fail(f->path);

    store_user u;
    assert_int_equal(store_user_by_name(f->st, "bob", &u), STORE_OK);
    assert_int_equal(u.id, b);
    uint64_t who;
    assert_int_equal(store_session_user(f->st, tok, &who), STORE_OK);
    assert_int_equal(who, a);
    list l = {0};
    assert_int_equal(store_friend_list(f->st, b, on_user, &l), STORE_OK);
    assert_int_equal(l.n, 1);
    store_group got;
    assert_int_equal(store_group_get(f->st, g.id, &got), STORE_OK);
    assert_string_equal(got.desc, "d");
    uint64_t again;
    assert_int_equal(store_direct_conv(f->st, b, a, &again), STORE_OK);
    assert_int_equal(again, ab);
    msgs p = {0};
    assert_int_equal(store_pending(f->st, b, 0, 10, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 1);
    assert_string_equal(p.body[0], "two");
    store_msg m;
    assert_int_equal(store_message_append(f->st, ab, b, "three", 5, 1, &m), STORE_OK);
    assert_int_equal(m.seq, 3);
}

/* ---- concurrency ---- */

enum { PER_THREAD = 500 };

typedef struct {
    const char *path;
    uint64_t conv, sender;
    pthread_barrier_t *start;
    uint64_t seq[PER_THREAD];
    int failed;
    char err[256];
} appender;

static void *append_thread(void *arg)
{
    appender *t = arg;
    store *st = store_open(t->path, t->err, sizeof t->err);
    pthread_barrier_wait(t->start);
    if (!st) {
        t->failed = 1;
        return NULL;
    }
    for (int i = 0; i < PER_THREAD; i++) {
        store_msg m;
        char body[32];
        int n = snprintf(body, sizeof body, "%llu:%d", (unsigned long long)t->sender, i);
        if (store_message_append(st, t->conv, t->sender, body, (size_t)n, i, &m) != STORE_OK) {
            t->failed = 1;
            snprintf(t->err, sizeof t->err, "%s", store_errmsg(st));
            break;
        }
        t->seq[i] = m.seq;
    }
    store_close(st);
    return NULL;
}

static void test_concurrent_append(void **state)
{
    fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t ab;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);

    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    static appender t[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        t[i] = (appender){.path = f->path, .conv = ab, .sender = i ? b : a, .start = &start};
        assert_int_equal(pthread_create(&th[i], NULL, append_thread, &t[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < 2; i++) {
        if (t[i].failed)
            fail_msg("appender %d: %s", i, t[i].err);
    }

    /* Each thread saw its own seqs increase; together they are 1..1000. */
    static char seen[2 * PER_THREAD + 1];
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < PER_THREAD; j++) {
            uint64_t s = t[i].seq[j];
            assert_true(s >= 1 && s <= 2 * PER_THREAD);
            assert_false(seen[s]);
            seen[s] = 1;
            if (j)
                assert_true(s > t[i].seq[j - 1]);
        }
    }
    /* And so does the database, with msgids in seq order. */
    static msgs h;
    memset(&h, 0, sizeof h);
    assert_int_equal(store_history(f->st, ab, 0, 2 * PER_THREAD + 10, on_msg, &h), STORE_OK);
    assert_int_equal(h.n, 2 * PER_THREAD);
    for (size_t i = 0; i < h.n; i++) {
        assert_int_equal(h.m[i].seq, i + 1);
        if (i)
            assert_true(h.m[i].msgid > h.m[i - 1].msgid);
    }
    store_msg m;
    assert_int_equal(store_message_append(f->st, ab, a, "last", 4, 1, &m), STORE_OK);
    assert_int_equal(m.seq, 2 * PER_THREAD + 1);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_bad_path),
        T(test_open_schema),
        T(test_open_concurrent),
        T(test_users),
        T(test_user_limits),
        T(test_user_name_verbatim),
        T(test_sessions),
        T(test_friends),
        T(test_groups),
        T(test_group_delete),
        T(test_direct_conv),
        T(test_append_seq),
        T(test_message_get_recall),
        T(test_history),
        T(test_pending),
        T(test_ack),
        T(test_join_cursor),
        T(test_transactions),
        T(test_persistence),
        T(test_concurrent_append),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
