/*
 * store_suite: the backend-neutral store tests (see store_suite.h). Each
 * test gets a fresh database from the backend and a handle on it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store_suite.h"

const store_suite_backend *store_suite;

store *store_suite_open(const char *uri)
{
    char err[512] = "";
    store *st = store_open(uri, err, sizeof err);
    if (!st)
        fail_msg("store_open: %s", err);
    return st;
}

int store_suite_setup(void **state)
{
    store_fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    if (store_suite->create(f->uri, sizeof f->uri) != 0) {
        free(f);
        return -1;
    }
    char err[512];
    f->st = store_open(f->uri, err, sizeof err);
    if (!f->st) {
        fprintf(stderr, "store_open: %s\n", err);
        store_suite->destroy(f->uri);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

int store_suite_teardown(void **state)
{
    store_fixture *f = *state;
    store_close(f->st);
    store_suite->destroy(f->uri);
    free(f);
    return 0;
}

static long long raw_int(const char *uri, const char *sql)
{
    return store_suite->raw_int(uri, sql);
}

uint64_t store_suite_mkuser(store *st, const char *name)
{
    uint64_t id = 0;
    assert_int_equal(store_user_create(st, name, "$argon2id$fake", 1000, &id), STORE_OK);
    assert_true(id > 0);
    return id;
}

static uint64_t mkuser(store *st, const char *name)
{
    return store_suite_mkuser(st, name);
}

static uint64_t append(store *st, uint64_t conv, uint64_t sender, const char *body)
{
    store_msg m;
    store_status ret = store_message_append(st, conv, sender, 0, body, strlen(body), 5000, &m);
    if (ret != STORE_OK)
        fail_msg("append: status %d: %s", ret, store_errmsg(st));
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

static int on_id(void *arg, uint64_t id)
{
    list *l = arg;
    l->id[l->n++] = id;
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

void store_test_open_schema(void **state)
{
    store_fixture *f = *state;
    assert_int_equal(raw_int(f->uri, store_suite->schema_version_sql), store_suite->schema_version);
    /* A second handle on an existing, current schema opens and sees data. */
    uint64_t id = mkuser(f->st, "alice");
    store *st2 = store_suite_open(f->uri);
    store_user u;
    assert_int_equal(store_user_by_name(st2, "alice", &u), STORE_OK);
    assert_int_equal(u.id, id);
    store_close(st2);
    store_close(NULL); /* harmless */
    assert_string_equal(store_errmsg(NULL), "no store");
}

typedef struct {
    const char *uri;
    pthread_barrier_t *start;
    int index;
    int ok;
    char err[512];
} opener;

static void *open_thread(void *arg)
{
    opener *o = arg;
    pthread_barrier_wait(o->start);
    store *st = store_open(o->uri, o->err, sizeof o->err);
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

/* Many handles creating the schema of a brand-new database at once. */
void store_test_open_concurrent(void **state)
{
    enum { N = 8 };
    char uri[512];
    assert_int_equal(store_suite->create(uri, sizeof uri), 0);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N);
    pthread_t th[N];
    opener o[N];
    for (int i = 0; i < N; i++) {
        o[i] = (opener){.uri = uri, .start = &start, .index = i};
        assert_int_equal(pthread_create(&th[i], NULL, open_thread, &o[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    long long users = raw_int(uri, "SELECT count(*) FROM users");
    long long version = raw_int(uri, store_suite->schema_version_sql);
    store_suite->destroy(uri);
    for (int i = 0; i < N; i++) {
        if (!o[i].ok)
            fail_msg("opener %d: %s", i, o[i].err);
    }
    assert_int_equal(users, N);
    assert_int_equal(version, store_suite->schema_version);
}

/* ---- users and sessions ---- */

void store_test_users(void **state)
{
    store_fixture *f = *state;
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

void store_test_user_limits(void **state)
{
    store_fixture *f = *state;
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

void store_test_user_name_verbatim(void **state)
{
    store_fixture *f = *state;
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
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM users"), 2);
    assert_int_equal(store_group_create(f->st, evil, evil, a, 1, NULL), STORE_OK);
    list l = {0};
    assert_int_equal(store_user_groups(f->st, a, on_group, &l), STORE_OK);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.group[0].name, evil);
    assert_string_equal(l.group[0].desc, evil);
}

void store_test_sessions(void **state)
{
    store_fixture *f = *state;
    uint64_t alice = mkuser(f->st, "alice");
    uint8_t t1[32], t2[32];
    memset(t1, 0xa1, sizeof t1);
    memset(t2, 0xa1, sizeof t2);
    t2[31] = 0; /* differs in the last byte only */

    uint64_t user = 0;
    assert_int_equal(store_session_user(f->st, t1, 10, 0, &user), STORE_NOT_FOUND);
    assert_int_equal(store_session_create(f->st, t1, alice, 10, 0), STORE_OK);
    assert_int_equal(store_session_create(f->st, t1, alice, 11, 0), STORE_CONFLICT);
    assert_int_equal(store_session_create(f->st, t2, 9999, 11, 0), STORE_NOT_FOUND);
    assert_int_equal(store_session_create(f->st, t2, 9999, 11, 5), STORE_NOT_FOUND);
    assert_int_equal(store_session_user(f->st, t1, 12, 0, &user), STORE_OK);
    assert_int_equal(user, alice);
    assert_int_equal(store_session_user(f->st, t2, 12, 0, &user), STORE_NOT_FOUND);

    assert_int_equal(store_session_delete(f->st, t1), STORE_OK);
    assert_int_equal(store_session_user(f->st, t1, 13, 0, &user), STORE_NOT_FOUND);
    assert_int_equal(store_session_delete(f->st, t1), STORE_NOT_FOUND);
}

/* ---- session expiry and bounds ---- */

enum { SUITE_DAY_MS = 24 * 3600 * 1000 };

/* Token hash number i: distinct in its first bytes. */
static void token(uint8_t t[32], unsigned i)
{
    memset(t, 0x5e, 32);
    t[0] = (uint8_t)(i >> 8);
    t[1] = (uint8_t)i;
}

/* A hex literal both backends read as the 32 bytes of t. */
static void token_sql(char out[70], const uint8_t t[32])
{
    snprintf(out, 70, "X'");
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 + 2 * i, 3, "%02x", t[i]);
    snprintf(out + 66, 4, "'");
}

/* The stored last_used of a session, -1 if there is no such row. */
static long long last_used_of(const char *uri, const uint8_t t[32])
{
    char lit[70], sql[160];
    token_sql(lit, t);
    snprintf(sql, sizeof sql,
             "SELECT coalesce(max(last_used), -1) FROM sessions WHERE token_hash = %s", lit);
    return raw_int(uri, sql);
}

static long long sessions_of(const char *uri, uint64_t user)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM sessions WHERE user_id = %llu",
             (unsigned long long)user);
    return raw_int(uri, sql);
}

static void mksession(store *st, unsigned i, uint64_t user, int64_t now_ms, unsigned max)
{
    uint8_t t[32];
    token(t, i);
    store_status ret = store_session_create(st, t, user, now_ms, max);
    if (ret != STORE_OK)
        fail_msg("session_create %u: status %d: %s", i, ret, store_errmsg(st));
}

static store_status use_session(store *st, unsigned i, int64_t now_ms, int64_t max_idle_ms,
                                uint64_t *user)
{
    uint8_t t[32];
    token(t, i);
    return store_session_user(st, t, now_ms, max_idle_ms, user);
}

void store_test_session_expiry(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice"), who = 0;
    const int64_t idle = 10000;
    uint8_t t2[32];
    token(t2, 2);
    for (unsigned i = 1; i <= 3; i++)
        mksession(f->st, i, a, 1000, 0);

    /* Unused for exactly the idle time: still good. */
    assert_int_equal(use_session(f->st, 1, 1000 + idle, idle, &who), STORE_OK);
    assert_int_equal(who, a);
    /* A millisecond more: gone, and deleted, whatever is asked next. */
    who = 0;
    assert_int_equal(use_session(f->st, 2, 1000 + idle + 1, idle, &who), STORE_NOT_FOUND);
    assert_int_equal(who, 0);
    assert_int_equal(last_used_of(f->uri, t2), -1);
    assert_int_equal(use_session(f->st, 2, 1000, 0, &who), STORE_NOT_FOUND);
    assert_int_equal(store_session_delete(f->st, t2), STORE_NOT_FOUND);
    /* 0: never expires. */
    assert_int_equal(use_session(f->st, 3, 1000 + (int64_t)1000 * SUITE_DAY_MS, 0, &who), STORE_OK);
    /* A max idle time too big to subtract means a long time, not none. */
    assert_int_equal(use_session(f->st, 1, 2000 + idle, INT64_MAX, &who), STORE_OK);
    assert_int_equal(use_session(f->st, 1, INT64_MIN + 5, INT64_MAX, &who), STORE_OK);
    assert_int_equal(sessions_of(f->uri, a), 2);
}

void store_test_session_refresh(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice"), who;
    const int64_t idle = 10000;
    uint8_t t1[32], t2[32];
    token(t1, 1);
    token(t2, 2);

    /* Each use within the idle time of the one before keeps it alive, long
     * past the idle time from its login. */
    mksession(f->st, 1, a, 1000, 0);
    int64_t now;
    for (now = 1000 + 8000; now <= 1000 + 5 * 8000; now += 8000)
        assert_int_equal(use_session(f->st, 1, now, idle, &who), STORE_OK);
    assert_int_equal(last_used_of(f->uri, t1), 1000 + 5 * 8000);
    /* A clock behind never moves it back. */
    assert_int_equal(use_session(f->st, 1, 5000, idle, &who), STORE_OK);
    assert_int_equal(last_used_of(f->uri, t1), 1000 + 5 * 8000);

    /* Against a long idle time the write waits until last_used is a minute
     * old. */
    const int64_t month = (int64_t)30 * SUITE_DAY_MS;
    mksession(f->st, 2, a, 1000, 0);
    assert_int_equal(use_session(f->st, 2, 1000 + 30000, month, &who), STORE_OK);
    assert_int_equal(last_used_of(f->uri, t2), 1000);
    assert_int_equal(use_session(f->st, 2, 1000 + STORE_SESSION_TOUCH_MS - 1, month, &who),
                     STORE_OK);
    assert_int_equal(last_used_of(f->uri, t2), 1000);
    assert_int_equal(use_session(f->st, 2, 1000 + STORE_SESSION_TOUCH_MS, month, &who), STORE_OK);
    assert_int_equal(last_used_of(f->uri, t2), 1000 + STORE_SESSION_TOUCH_MS);

    /* Unused since its last refresh: it expires from there. */
    now = 1000 + 5 * 8000;
    assert_int_equal(use_session(f->st, 1, now + idle + 1, idle, &who), STORE_NOT_FOUND);

    /* Inside the caller's transaction a refresh is part of it. */
    assert_int_equal(store_begin(f->st), STORE_OK);
    assert_int_equal(use_session(f->st, 2, 10 * STORE_SESSION_TOUCH_MS, month, &who), STORE_OK);
    assert_int_equal(who, a);
    assert_int_equal(store_commit(f->st), STORE_OK);
    assert_int_equal(last_used_of(f->uri, t2), 10 * STORE_SESSION_TOUCH_MS);
}

static int has_session(const char *uri, unsigned i)
{
    uint8_t t[32];
    token(t, i);
    return last_used_of(uri, t) >= 0;
}

void store_test_session_bound(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice"), b = mkuser(f->st, "bob"), who;
    mksession(f->st, 0, a, 1000, 3);
    mksession(f->st, 1, a, 2000, 3);
    mksession(f->st, 100, b, 1500, 3);
    mksession(f->st, 2, a, 3000, 3);
    assert_int_equal(sessions_of(f->uri, a), 3);

    /* Using the oldest makes 1 the least recently used: the fourth login
     * drops it, and nothing of bob's. */
    assert_int_equal(use_session(f->st, 0, 100000, 0, &who), STORE_OK);
    mksession(f->st, 3, a, 100001, 3);
    assert_int_equal(sessions_of(f->uri, a), 3);
    assert_true(has_session(f->uri, 0));
    assert_false(has_session(f->uri, 1));
    assert_true(has_session(f->uri, 2));
    assert_true(has_session(f->uri, 3));
    assert_int_equal(use_session(f->st, 1, 100002, 0, &who), STORE_NOT_FOUND);
    assert_int_equal(sessions_of(f->uri, b), 1);

    /* A token that exists fails, and drops nothing. */
    uint8_t t0[32];
    token(t0, 0);
    assert_int_equal(store_session_create(f->st, t0, a, 200000, 1), STORE_CONFLICT);
    assert_int_equal(sessions_of(f->uri, a), 3);

    /* A bound of 1 keeps the new one, even beside one last used at the
     * same moment. */
    mksession(f->st, 4, a, 100001, 1);
    assert_int_equal(sessions_of(f->uri, a), 1);
    assert_true(has_session(f->uri, 4));

    /* 0: no bound. */
    for (unsigned i = 5; i < 45; i++)
        mksession(f->st, i, a, 300000 + i, 0);
    assert_int_equal(sessions_of(f->uri, a), 41);
    /* And back under a bound, the most recent stay. */
    mksession(f->st, 45, a, 400000, 5);
    assert_int_equal(sessions_of(f->uri, a), 5);
    for (unsigned i = 41; i <= 45; i++)
        assert_true(has_session(f->uri, i));
    assert_int_equal(sessions_of(f->uri, b), 1);

    /* Inside the caller's transaction, undone with it. */
    assert_int_equal(store_begin(f->st), STORE_OK);
    mksession(f->st, 46, a, 500000, 1);
    assert_int_equal(store_rollback(f->st), STORE_OK);
    assert_int_equal(sessions_of(f->uri, a), 5);
    assert_false(has_session(f->uri, 46));
}

void store_test_session_delete_user(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice"), b = mkuser(f->st, "bob"), who;
    for (unsigned i = 0; i < 3; i++)
        mksession(f->st, i, a, 1000, 0);
    mksession(f->st, 10, b, 1000, 0);
    assert_int_equal(store_session_delete_user(f->st, a), STORE_OK);
    assert_int_equal(sessions_of(f->uri, a), 0);
    for (unsigned i = 0; i < 3; i++)
        assert_int_equal(use_session(f->st, i, 2000, 0, &who), STORE_NOT_FOUND);
    assert_int_equal(use_session(f->st, 10, 2000, 0, &who), STORE_OK);
    assert_int_equal(who, b);
    /* Nothing (more) to delete is no error. */
    assert_int_equal(store_session_delete_user(f->st, a), STORE_OK);
    assert_int_equal(store_session_delete_user(f->st, 9999), STORE_OK);
    /* A new login works as before. */
    mksession(f->st, 0, a, 3000, 32);
    assert_int_equal(use_session(f->st, 0, 3000, 0, &who), STORE_OK);
    assert_int_equal(who, a);
}

void store_test_sessions_expire(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice"), b = mkuser(f->st, "bob"), n = 99;
    const unsigned old = 2 * STORE_SESSIONS_EXPIRE_MAX + 345;
    const int64_t idle = 1000000, now = 10000000;
    assert_int_equal(store_begin(f->st), STORE_OK);
    for (unsigned i = 0; i < old; i++)
        mksession(f->st, i, a, 1000 + i, 0);
    for (unsigned i = 0; i < 5; i++)
        mksession(f->st, 5000 + i, b, now - i, 0);
    /* Exactly the idle time: stays. */
    mksession(f->st, 6000, b, now - idle, 0);
    assert_int_equal(store_commit(f->st), STORE_OK);

    assert_int_equal(store_sessions_expire(f->st, now, 0, &n), STORE_OK);
    assert_int_equal(n, 0);
    /* Bounded batches, the oldest first, until nothing is left. */
    assert_int_equal(store_sessions_expire(f->st, now, idle, &n), STORE_OK);
    assert_int_equal(n, STORE_SESSIONS_EXPIRE_MAX);
    assert_int_equal(raw_int(f->uri, "SELECT min(last_used) FROM sessions"),
                     1000 + STORE_SESSIONS_EXPIRE_MAX);
    assert_int_equal(store_sessions_expire(f->st, now, idle, &n), STORE_OK);
    assert_int_equal(n, STORE_SESSIONS_EXPIRE_MAX);
    assert_int_equal(store_sessions_expire(f->st, now, idle, &n), STORE_OK);
    assert_int_equal(n, 345);
    assert_int_equal(store_sessions_expire(f->st, now, idle, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(sessions_of(f->uri, a), 0);
    assert_int_equal(sessions_of(f->uri, b), 6);
    assert_int_equal(store_sessions_expire(f->st, now, idle, NULL), STORE_OK);
}

/* A database made before sessions had last_used: its sessions count as
 * last used when they were created, and everything new works on it. */
void store_test_session_migrate(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice"), b = mkuser(f->st, "bob"), who = 0;
    store_group g;
    assert_int_equal(store_group_create(f->st, "g", "", a, 1, &g), STORE_OK);
    assert_int_equal(store_group_join(f->st, g.id, b, 1), STORE_OK);
    store_close(f->st);
    f->st = NULL;
    for (const char *const *sql = store_suite->to_v4; *sql; sql++) {
        if (store_suite->raw_exec(f->uri, *sql) != 0)
            fail_msg("to_v4: %s", *sql);
    }
    assert_int_equal(raw_int(f->uri, store_suite->schema_version_sql), 4);
    uint8_t t1[32], t2[32];
    token(t1, 1);
    token(t2, 2);
    char l1[70], l2[70], sql[400];
    token_sql(l1, t1);
    token_sql(l2, t2);
    snprintf(sql, sizeof sql,
             "INSERT INTO sessions (token_hash, user_id, created_ms)"
             " VALUES (%s, %llu, 5000000), (%s, %llu, 1000)",
             l1, (unsigned long long)a, l2, (unsigned long long)b);
    assert_int_equal(store_suite->raw_exec(f->uri, sql), 0);

    f->st = store_suite_open(f->uri);
    assert_int_equal(raw_int(f->uri, store_suite->schema_version_sql), store_suite->schema_version);
    assert_int_equal(last_used_of(f->uri, t1), 5000000);
    assert_int_equal(last_used_of(f->uri, t2), 1000);
    /* A whole idle time from its login... */
    const int64_t idle = 1000000;
    assert_int_equal(store_session_user(f->st, t1, 5000000 + idle, idle, &who), STORE_OK);
    assert_int_equal(who, a);
    /* ...and no more. */
    assert_int_equal(store_session_user(f->st, t2, 5000000 + idle, idle, &who), STORE_NOT_FOUND);
    /* The bound and the counts on the migrated schema. */
    mksession(f->st, 3, a, 6000000, 1);
    assert_int_equal(sessions_of(f->uri, a), 1);
    uint64_t n = 0;
    assert_int_equal(store_user_group_count(f->st, b, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(store_group_member_count(f->st, g.id, &n), STORE_OK);
    assert_int_equal(n, 2);
    /* Opening again changes nothing more. */
    store_close(f->st);
    f->st = store_suite_open(f->uri);
    assert_int_equal(raw_int(f->uri, store_suite->schema_version_sql), store_suite->schema_version);
    assert_true(has_session(f->uri, 3));
}

/* ---- counts for the caps ---- */

void store_test_counts(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice"), b = mkuser(f->st, "bob");
    uint64_t c = mkuser(f->st, "carol"), d = mkuser(f->st, "dave"), n = 99, ab;

    assert_int_equal(store_friend_count(f->st, a, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(store_friend_add(f->st, a, b, 1), STORE_OK);
    assert_int_equal(store_friend_add(f->st, a, c, 1), STORE_OK);
    assert_int_equal(store_friend_add(f->st, d, a, 1), STORE_OK);
    assert_int_equal(store_friend_count(f->st, a, &n), STORE_OK);
    assert_int_equal(n, 3);
    assert_int_equal(store_friend_count(f->st, d, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(store_friend_del(f->st, c, a), STORE_OK);
    assert_int_equal(store_friend_count(f->st, a, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_int_equal(store_friend_count(f->st, c, &n), STORE_OK);
    assert_int_equal(n, 0);
    n = 99;
    assert_int_equal(store_friend_count(f->st, 9999, &n), STORE_OK);
    assert_int_equal(n, 0);

    /* Direct conversations are not groups. */
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    assert_int_equal(store_user_group_count(f->st, a, &n), STORE_OK);
    assert_int_equal(n, 0);
    store_group g1, g2;
    assert_int_equal(store_group_create(f->st, "g1", "", a, 1, &g1), STORE_OK);
    assert_int_equal(store_group_create(f->st, "g2", "", b, 1, &g2), STORE_OK);
    assert_int_equal(store_group_join(f->st, g2.id, a, 1), STORE_OK);
    assert_int_equal(store_group_join(f->st, g2.id, c, 1), STORE_OK);
    assert_int_equal(store_group_join(f->st, g2.id, d, 1), STORE_OK);
    assert_int_equal(store_user_group_count(f->st, a, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_int_equal(store_user_group_count(f->st, b, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(store_group_member_count(f->st, g2.id, &n), STORE_OK);
    assert_int_equal(n, 4);
    assert_int_equal(store_group_member_count(f->st, g1.id, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(store_group_quit(f->st, g2.id, a), STORE_OK);
    assert_int_equal(store_user_group_count(f->st, a, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(store_group_member_count(f->st, g2.id, &n), STORE_OK);
    assert_int_equal(n, 3);

    /* No group: NOT_FOUND, and n left alone. */
    assert_int_equal(store_group_delete(f->st, g1.id), STORE_OK);
    n = 99;
    assert_int_equal(store_group_member_count(f->st, g1.id, &n), STORE_NOT_FOUND);
    assert_int_equal(store_group_member_count(f->st, 9999, &n), STORE_NOT_FOUND);
    assert_int_equal(n, 99);
    assert_int_equal(store_user_group_count(f->st, a, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(store_user_group_count(f->st, 9999, &n), STORE_OK);
    assert_int_equal(n, 0);
}

/* ---- friends ---- */

void store_test_friends(void **state)
{
    store_fixture *f = *state;
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

void store_test_groups(void **state)
{
    store_fixture *f = *state;
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
    assert_int_equal(store_conv_members(f->st, g.conv, on_id, &l), STORE_OK);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.id[0], a);
    assert_int_equal(l.id[1], b);
    assert_int_equal(l.id[2], c);
    assert_int_equal(store_conv_members(f->st, 9999, on_id, &l), STORE_NOT_FOUND);

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

void store_test_group_delete(void **state)
{
    store_fixture *f = *state;
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
    assert_int_equal(store_message_append(f->st, g.conv, a, 0, "x", 1, 1, &m), STORE_NOT_FOUND);
    list l = {0};
    assert_int_equal(store_conv_members(f->st, g.conv, on_id, &l), STORE_NOT_FOUND);
    assert_int_equal(store_user_groups(f->st, b, on_group, &l), STORE_OK);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.group[0].id, other.id);
    msgs p = {0};
    assert_int_equal(store_pending(f->st, b, 0, 100, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 1);
    assert_int_equal(p.m[0].msgid, kept_msg);
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM convs"), 1);

    /* The name is free again; ids are not reused. */
    store_group again;
    assert_int_equal(store_group_create(f->st, "doomed", "", b, 1, &again), STORE_OK);
    assert_true(again.id > other.id);
    assert_true(again.conv > other.conv);
    assert_true(append(f->st, again.conv, b, "new") > kept_msg);

    /* Not even when the newest messages go, nor after a restart. */
    store_group last;
    assert_int_equal(store_group_create(f->st, "last", "", a, 1, &last), STORE_OK);
    uint64_t newest = append(f->st, last.conv, a, "the newest");
    assert_int_equal(store_group_delete(f->st, last.id), STORE_OK);
    assert_true(append(f->st, other.conv, a, "after") > newest);
    assert_int_equal(store_group_create(f->st, "last", "", a, 1, &last), STORE_OK);
    newest = append(f->st, last.conv, a, "the newest again");
    assert_int_equal(store_group_delete(f->st, last.id), STORE_OK);
    store_close(f->st);
    f->st = store_suite_open(f->uri);
    assert_non_null(f->st);
    assert_true(append(f->st, other.conv, a, "after a restart") > newest);
}

/* ---- conversations and messages ---- */

void store_test_direct_conv(void **state)
{
    store_fixture *f = *state;
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
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM convs"), 2);

    list l = {0};
    assert_int_equal(store_conv_members(f->st, ab, on_id, &l), STORE_OK);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.id[0], a);
    assert_int_equal(l.id[1], b);
    /* Both cursors start at 0: the first message is pending. */
    append(f->st, ab, b, "hi");
    msgs p = {0};
    assert_int_equal(store_pending(f->st, a, 0, 10, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 1);
}

static void assert_seqs_gap_free(const char *uri);

/* Two handles taking turns in one conversation: each must see the other's
 * messages when it takes the next seq, whatever it remembers. A rolled-back
 * append gives its seq back too. */
void store_test_append_seq_handles(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice"), b = mkuser(f->st, "bob"), ab;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    store *other = store_suite_open(f->uri);
    store_msg m;
    for (uint64_t i = 1; i <= 6; i++) {
        store *st = i % 2 ? other : f->st;
        assert_int_equal(store_message_append(st, ab, a, 0, "x", 1, 1, &m), STORE_OK);
        assert_int_equal(m.seq, i);
    }
    assert_int_equal(store_begin(f->st), STORE_OK);
    assert_int_equal(store_message_append(f->st, ab, a, 0, "undone", 6, 1, &m), STORE_OK);
    assert_int_equal(m.seq, 7);
    assert_int_equal(store_rollback(f->st), STORE_OK);
    assert_int_equal(store_message_append(f->st, ab, b, 0, "again", 5, 1, &m), STORE_OK);
    assert_int_equal(m.seq, 7);
    assert_int_equal(store_message_append(other, ab, b, 0, "other", 5, 1, &m), STORE_OK);
    assert_int_equal(m.seq, 8);
    store_close(other);
    assert_seqs_gap_free(f->uri);
}

void store_test_append_seq(void **state)
{
    store_fixture *f = *state;
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
        assert_int_equal(store_message_append(f->st, ab, a, 0, body, 6, 100 + i, &m), STORE_OK);
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

        assert_int_equal(store_message_append(f->st, g.conv, a, 0, "grp", 3, 200, &n), STORE_OK);
        assert_int_equal(n.seq, (uint64_t)i + 1);
        assert_int_equal(n.to, 0);
        assert_int_equal(n.group, g.id);
        assert_true(n.msgid > last_id);
        last_id = n.msgid;
    }
    /* `to` is the other user whichever side sends. */
    store_msg m;
    assert_int_equal(store_message_append(f->st, ab, b, 0, "back", 4, 1, &m), STORE_OK);
    assert_int_equal(m.seq, 4);
    assert_int_equal(m.to, a);
    /* An empty body is allowed (and reads back empty, not NULL). */
    assert_int_equal(store_message_append(f->st, ab, b, 0, NULL, 0, 1, &m), STORE_OK);
    store_msg got;
    assert_int_equal(store_message_get(f->st, m.msgid, &got), STORE_OK);
    assert_int_equal(got.body_len, 0);
    assert_non_null(got.body);

    assert_int_equal(store_message_append(f->st, 9999, a, 0, "x", 1, 1, &m), STORE_NOT_FOUND);
    assert_int_equal(store_message_append(f->st, ab, 9999, 0, "x", 1, 1, &m), STORE_NOT_FOUND);
    /* Failed appends consumed no seq. */
    assert_int_equal(store_message_append(f->st, ab, a, 0, "x", 1, 1, &m), STORE_OK);
    assert_int_equal(m.seq, 6);
}

void store_test_message_get_recall(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t ab;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    /* Bodies are bytes: an embedded NUL survives. */
    const char body[] = {'h', 'i', '\0', '!'};
    store_msg m;
    assert_int_equal(store_message_append(f->st, ab, b, 0, body, sizeof body, 77, &m), STORE_OK);

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
    assert_int_equal(got.body_len, 0); /* the body is gone, not hidden */
    assert_int_equal(store_message_get(f->st, other, &got), STORE_OK);
    assert_int_equal(got.recalled, 0);
    msgs h = {0};
    assert_int_equal(store_history(f->st, ab, 0, 10, on_msg, &h), STORE_OK);
    assert_int_equal(h.n, 2);
    assert_int_equal(h.m[0].recalled, 1);
    assert_int_equal(h.m[1].recalled, 0);
}

void store_test_history(void **state)
{
    store_fixture *f = *state;
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

void store_test_pending(void **state)
{
    store_fixture *f = *state;
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
    uint64_t m3 = append(f->st, ab, a, "own");   /* a's own: pending for a's other devices */
    append(f->st, bc, b, "not a's");
    uint64_t m5 = append(f->st, ab, b, "5");     /* for a */
    uint64_t m6 = append(f->st, g.conv, a, "6"); /* a's own in the group, likewise */
    uint64_t m7 = append(f->st, g.conv, c, "7"); /* for a */

    msgs p = {0};
    assert_int_equal(store_pending(f->st, a, 0, 100, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 6);
    assert_int_equal(p.m[0].msgid, m1);
    assert_int_equal(p.m[1].msgid, m2);
    assert_int_equal(p.m[2].msgid, m3);
    assert_int_equal(p.m[3].msgid, m5);
    assert_int_equal(p.m[4].msgid, m6);
    assert_int_equal(p.m[5].msgid, m7);
    assert_string_equal(p.body[5], "7");
    assert_int_equal(p.m[0].to, a);
    assert_int_equal(p.m[0].group, 0);
    assert_int_equal(p.m[1].group, g.id);
    assert_int_equal(p.m[1].to, 0);
    assert_int_equal(p.m[1].conv, g.conv);
    assert_int_equal(p.m[2].sender, a);
    assert_int_equal(p.m[2].to, b);

    /* limit keeps the oldest; after_msgid pages on from the last one seen. */
    memset(&p, 0, sizeof p);
    assert_int_equal(store_pending(f->st, a, 0, 2, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.m[0].msgid, m1);
    assert_int_equal(p.m[1].msgid, m2);
    memset(&p, 0, sizeof p);
    assert_int_equal(store_pending(f->st, a, m2, 2, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.m[0].msgid, m3);
    assert_int_equal(p.m[1].msgid, m5);
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
    assert_int_equal(p.n, 5);
    assert_int_equal(p.m[0].msgid, m2);
    assert_int_equal(store_ack(f->st, a, g.conv, 1), STORE_OK);
    memset(&p, 0, sizeof p);
    assert_int_equal(store_pending(f->st, a, 0, 100, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 4);
    assert_int_equal(p.m[0].msgid, m3);
    assert_int_equal(p.m[1].msgid, m5);
    assert_int_equal(p.m[2].msgid, m6);
    assert_int_equal(p.m[3].msgid, m7);

    /* c's view: bc and the group, its own sends included. */
    memset(&p, 0, sizeof p);
    assert_int_equal(store_pending(f->st, c, 0, 100, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 4); /* m2 (its own), "not a's" in bc, m6, m7 (its own) */
    assert_int_equal(p.m[0].msgid, m2);
    assert_int_equal(p.m[2].msgid, m6);

    /* Leaving the group drops its messages from pending. */
    assert_int_equal(store_group_quit(f->st, g.id, a), STORE_OK);
    memset(&p, 0, sizeof p);
    assert_int_equal(store_pending(f->st, a, 0, 100, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.m[0].msgid, m3);
    assert_int_equal(p.m[1].msgid, m5);
}

void store_test_ack(void **state)
{
    store_fixture *f = *state;
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

/* Read cursors: apart from delivery, forward only, capped at the end;
 * unread counts others' messages above them. */
typedef struct {
    store_unread u[8];
    size_t n;
} unreads;

static int on_unread(void *arg, const store_unread *u)
{
    unreads *l = arg;
    if (l->n < 8)
        l->u[l->n++] = *u;
    return 0;
}

void store_test_read_cursor(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t c = mkuser(f->st, "carol");
    uint64_t ab, prev, now;
    store_group g;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    assert_int_equal(store_group_create(f->st, "g", "", c, 1, &g), STORE_OK);
    assert_int_equal(store_group_join(f->st, g.id, a, 1), STORE_OK);
    for (int i = 0; i < 5; i++)
        append(f->st, ab, b, "x");
    append(f->st, ab, a, "mine"); /* seq 6: a's own never counts for a */
    append(f->st, g.conv, c, "g1");
    append(f->st, g.conv, c, "g2");

    unreads l = {0};
    assert_int_equal(store_unread_list(f->st, a, 10, on_unread, &l), STORE_OK);
    assert_int_equal(l.n, 2);
    /* Newest conversation first: the group. */
    assert_int_equal(l.u[0].conv, g.conv);
    assert_int_equal(l.u[0].group, g.id);
    assert_int_equal(l.u[0].peer, 0);
    assert_int_equal(l.u[0].count, 2);
    assert_int_equal(l.u[1].conv, ab);
    assert_int_equal(l.u[1].peer, b);
    assert_int_equal(l.u[1].count, 5);
    assert_int_equal(l.u[1].read_seq, 0);
    assert_int_equal(l.u[1].last_seq, 6);

    /* Reading part of it; the delivery cursor is another thing. */
    assert_int_equal(store_read_set(f->st, a, ab, 3, &prev, &now), STORE_OK);
    assert_int_equal(prev, 0);
    assert_int_equal(now, 3);
    msgs p = {0};
    assert_int_equal(store_pending(f->st, a, 0, 100, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 8);
    memset(&l, 0, sizeof l);
    assert_int_equal(store_unread_list(f->st, a, 10, on_unread, &l), STORE_OK);
    assert_int_equal(l.u[1].count, 2);
    assert_int_equal(l.u[1].read_seq, 3);
    /* Never backwards; past the end is the end. */
    assert_int_equal(store_read_set(f->st, a, ab, 1, &prev, &now), STORE_OK);
    assert_int_equal(prev, 3);
    assert_int_equal(now, 3);
    assert_int_equal(store_read_set(f->st, a, ab, UINT64_MAX, &prev, &now), STORE_OK);
    assert_int_equal(now, 6);
    memset(&l, 0, sizeof l);
    assert_int_equal(store_unread_list(f->st, a, 10, on_unread, &l), STORE_OK);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.u[0].conv, g.conv);
    /* Others' cursors are their own; strangers have none. */
    memset(&l, 0, sizeof l);
    assert_int_equal(store_unread_list(f->st, b, 10, on_unread, &l), STORE_OK);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.u[0].count, 1);
    assert_int_equal(store_read_set(f->st, c, ab, 1, &prev, &now), STORE_NOT_FOUND);
    assert_int_equal(store_read_set(f->st, a, 99999, 1, &prev, &now), STORE_NOT_FOUND);
    /* A limit of one: the newest conversation. */
    memset(&l, 0, sizeof l);
    assert_int_equal(store_unread_list(f->st, b, 1, on_unread, &l), STORE_OK);
    assert_int_equal(l.n, 1);

    /* A backlog past the scanned tail still counts every message. */
    uint64_t ca;
    assert_int_equal(store_direct_conv(f->st, c, a, &ca), STORE_OK);
    assert_int_equal(store_begin(f->st), STORE_OK);
    for (int i = 0; i < STORE_UNREAD_SCAN + 100; i++)
        append(f->st, ca, c, "backlog");
    assert_int_equal(store_commit(f->st), STORE_OK);
    assert_int_equal(store_read_set(f->st, a, ca, 50, &prev, &now), STORE_OK);
    memset(&l, 0, sizeof l);
    assert_int_equal(store_unread_list(f->st, a, 10, on_unread, &l), STORE_OK);
    assert_int_equal(l.u[0].conv, ca);
    assert_int_equal(l.u[0].count, STORE_UNREAD_SCAN + 50);
    assert_int_equal(l.u[0].read_seq, 50);
}

/* Many pending in one conversation, paged through: nothing is cut short
 * (MariaDB stops recursive queries at 1000 steps by default). */
void store_test_pending_many(void **state)
{
    store_fixture *f = *state;
    enum { N = 1500, PAGE = 400 };
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t ab;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    assert_int_equal(store_begin(f->st), STORE_OK);
    for (int i = 0; i < N; i++)
        append(f->st, ab, i % 10 == 9 ? a : b, "x"); /* every tenth is a's own */
    assert_int_equal(store_commit(f->st), STORE_OK);
    static msgs p;
    uint64_t after = 0, want_seq = 1;
    size_t total = 0;
    for (;;) {
        memset(&p, 0, sizeof p);
        assert_int_equal(store_pending(f->st, a, after, PAGE, on_msg, &p), STORE_OK);
        for (size_t i = 0; i < p.n; i++) {
            assert_int_equal(p.m[i].seq, want_seq); /* a's own too */
            assert_true(p.m[i].msgid > after);
            after = p.m[i].msgid;
            want_seq++;
        }
        total += p.n;
        if (p.n < PAGE)
            break;
    }
    assert_int_equal(total, N);
    /* The cursor near the end leaves only the tail. */
    assert_int_equal(store_ack(f->st, a, ab, N - 5), STORE_OK);
    memset(&p, 0, sizeof p);
    assert_int_equal(store_pending(f->st, a, 0, PAGE, on_msg, &p), STORE_OK);
    assert_int_equal(p.n, 5); /* N - 4 .. N */
    assert_int_equal(p.m[0].seq, N - 4);
}

/* A newcomer's cursor starts at the group's last seq. */
void store_test_join_cursor(void **state)
{
    store_fixture *f = *state;
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

void store_test_transactions(void **state)
{
    store_fixture *f = *state;
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
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM convs"), 1);
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM groups_"), 1);

    assert_int_equal(store_commit(f->st), STORE_ERROR);
    assert_int_equal(store_savepoint(f->st), STORE_ERROR); /* only inside begin */
    assert_true(strlen(store_errmsg(f->st)) > 0);

    /* An append rolled back gives its seq back. */
    uint64_t b = mkuser(f->st, "b");
    uint64_t ab;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    store_msg m;
    assert_int_equal(store_begin(f->st), STORE_OK);
    assert_int_equal(store_message_append(f->st, ab, a, 0, "x", 1, 1, &m), STORE_OK);
    assert_int_equal(m.seq, 1);
    assert_int_equal(store_message_append(f->st, ab, a, 0, "y", 1, 1, &m), STORE_OK);
    assert_int_equal(m.seq, 2);
    assert_int_equal(store_rollback(f->st), STORE_OK);
    assert_int_equal(store_message_append(f->st, ab, a, 0, "z", 1, 1, &m), STORE_OK);
    assert_int_equal(m.seq, 1);
}

void store_test_persistence(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint8_t tok[32] = {1, 2, 3};
    store_group g;
    uint64_t ab;
    assert_int_equal(store_session_create(f->st, tok, a, 1, 32), STORE_OK);
    assert_int_equal(store_friend_add(f->st, a, b, 1), STORE_OK);
    assert_int_equal(store_group_create(f->st, "g", "d", a, 1, &g), STORE_OK);
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    append(f->st, ab, a, "one");
    append(f->st, ab, a, "two");
    assert_int_equal(store_ack(f->st, b, ab, 1), STORE_OK);

    store_close(f->st);
    f->st = store_suite_open(f->uri);

    store_user u;
    assert_int_equal(store_user_by_name(f->st, "bob", &u), STORE_OK);
    assert_int_equal(u.id, b);
    uint64_t who;
    assert_int_equal(store_session_user(f->st, tok, 2, SUITE_DAY_MS, &who), STORE_OK);
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
    assert_int_equal(store_message_append(f->st, ab, b, 0, "three", 5, 1, &m), STORE_OK);
    assert_int_equal(m.seq, 3);
}

/* ---- concurrency ---- */

enum { PER_THREAD = 500 };

typedef struct {
    const char *uri;
    uint64_t conv, sender;
    pthread_barrier_t *start;
    uint64_t seq[PER_THREAD];
    int failed;
    char err[256];
} appender;

static void *append_thread(void *arg)
{
    appender *t = arg;
    store *st = store_open(t->uri, t->err, sizeof t->err);
    pthread_barrier_wait(t->start);
    if (!st) {
        t->failed = 1;
        return NULL;
    }
    for (int i = 0; i < PER_THREAD; i++) {
        store_msg m;
        char body[32];
        int n = snprintf(body, sizeof body, "%llu:%d", (unsigned long long)t->sender, i);
        if (store_message_append(st, t->conv, t->sender, 0, body, (size_t)n, i, &m) != STORE_OK) {
            t->failed = 1;
            snprintf(t->err, sizeof t->err, "%s", store_errmsg(st));
            break;
        }
        t->seq[i] = m.seq;
    }
    store_close(st);
    return NULL;
}

void store_test_concurrent_append(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t ab;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);

    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    static appender t[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        t[i] = (appender){.uri = f->uri, .conv = ab, .sender = i ? b : a, .start = &start};
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
    assert_int_equal(store_message_append(f->st, ab, a, 0, "last", 4, 1, &m), STORE_OK);
    assert_int_equal(m.seq, 2 * PER_THREAD + 1);
}

/* ---- added with the MariaDB backend: what a server's defaults get wrong ---- */

/* Names are compared byte for byte: no case folding, no accent folding, no
 * padding (MariaDB's utf8mb4_bin would ignore trailing spaces). */
void store_test_names_exact(void **state)
{
    store_fixture *f = *state;
    const char *names[] = {"bob", "bob ", "Bob", "\xc3\xa9", "e\xcc\x81" /* é decomposed */, "e"};
    enum { N = sizeof names / sizeof names[0] };
    uint64_t ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = mkuser(f->st, names[i]);
    for (int i = 0; i < N; i++) {
        store_user u;
        assert_int_equal(store_user_by_name(f->st, names[i], &u), STORE_OK);
        assert_int_equal(u.id, ids[i]);
        assert_string_equal(u.name, names[i]);
    }
    store_user u;
    assert_int_equal(store_user_by_name(f->st, "bob  ", &u), STORE_NOT_FOUND);
    uint64_t id;
    assert_int_equal(store_user_create(f->st, "bob ", "h", 1, &id), STORE_CONFLICT);
    assert_int_equal(store_group_create(f->st, "g", "", ids[0], 1, NULL), STORE_OK);
    assert_int_equal(store_group_create(f->st, "g ", "", ids[0], 1, NULL), STORE_OK);
    assert_int_equal(store_group_create(f->st, "G", "", ids[0], 1, NULL), STORE_OK);
    assert_int_equal(store_group_create(f->st, "g ", "", ids[0], 1, NULL), STORE_CONFLICT);
}

typedef struct {
    const char *uri;
    pthread_barrier_t *start;
    const uint64_t *users; /* users[0] talks to each of users[1..npairs] */
    int npairs;
    uint64_t conv[64];
    int failed;
    char err[512];
} pair_maker;

static void *pair_thread(void *arg)
{
    pair_maker *t = arg;
    store *st = store_open(t->uri, t->err, sizeof t->err);
    pthread_barrier_wait(t->start);
    if (!st) {
        t->failed = 1;
        return NULL;
    }
    for (int i = 0; i < t->npairs; i++) {
        /* Alternate the argument order: both must name the same pair. */
        uint64_t a = t->users[0], b = t->users[i + 1];
        store_status r = i % 2 ? store_direct_conv(st, b, a, &t->conv[i])
                               : store_direct_conv(st, a, b, &t->conv[i]);
        if (r != STORE_OK) {
            t->failed = 1;
            snprintf(t->err, sizeof t->err, "pair %d: status %d: %s", i, r, store_errmsg(st));
            break;
        }
    }
    store_close(st);
    return NULL;
}

/* Handles racing to create the same direct conversations all get the one
 * that was made, and only one is made per pair. */
void store_test_direct_conv_race(void **state)
{
    store_fixture *f = *state;
    enum { THREADS = 6, PAIRS = 40 };
    uint64_t users[PAIRS + 1];
    for (int i = 0; i <= PAIRS; i++) {
        char name[16];
        snprintf(name, sizeof name, "u%d", i);
        users[i] = mkuser(f->st, name);
    }
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, THREADS);
    static pair_maker t[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        t[i] = (pair_maker){.uri = f->uri, .start = &start, .users = users, .npairs = PAIRS};
        assert_int_equal(pthread_create(&th[i], NULL, pair_thread, &t[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < THREADS; i++) {
        if (t[i].failed)
            fail_msg("thread %d: %s", i, t[i].err);
    }
    for (int p = 0; p < PAIRS; p++) {
        for (int i = 1; i < THREADS; i++)
            assert_int_equal(t[i].conv[p], t[0].conv[p]);
        list l = {0};
        assert_int_equal(store_conv_members(f->st, t[0].conv[p], on_id, &l), STORE_OK);
        assert_int_equal(l.n, 2);
    }
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM convs"), PAIRS);
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM members"), 2 * PAIRS);
}

typedef struct {
    size_t n;
    size_t len[8];
    int intact[8];
} sizes;

/* Bodies of i * 37 KiB, byte k being (k * 7 + i) % 256: NULs included. */
static char *big_body(int i, size_t *len)
{
    *len = (size_t)i * 37 * 1024;
    char *b = malloc(*len + 1);
    assert_non_null(b);
    for (size_t k = 0; k < *len; k++)
        b[k] = (char)((k * 7 + (size_t)i) % 256);
    return b;
}

static int on_sized(void *arg, const store_msg *m)
{
    sizes *s = arg;
    size_t len;
    int i = (int)m->seq; /* appended in seq order, body i */
    char *want = big_body(i, &len);
    s->len[s->n] = m->body_len;
    s->intact[s->n] = m->body_len == len && memcmp(m->body, want, len) == 0;
    s->n++;
    free(want);
    return 0;
}

/* Large bodies, of growing and shrinking sizes, read back whole. */
void store_test_big_bodies(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t ab;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    uint64_t ids[8] = {0};
    /* Body s has seq s; sizes grow, then shrink when read back. */
    for (int s = 1; s <= 5; s++) {
        size_t len;
        char *body = big_body(s, &len);
        store_msg m;
        assert_int_equal(store_message_append(f->st, ab, a, 0, body, len, 1, &m), STORE_OK);
        assert_int_equal(m.seq, (uint64_t)s);
        ids[s] = m.msgid;
        free(body);
    }
    for (int s = 5; s >= 1; s--) {
        size_t len;
        char *want = big_body(s, &len);
        store_msg got;
        assert_int_equal(store_message_get(f->st, ids[s], &got), STORE_OK);
        assert_int_equal(got.body_len, len);
        assert_memory_equal(got.body, want, len);
        free(want);
    }
    sizes h = {0};
    assert_int_equal(store_history(f->st, ab, 0, 10, on_sized, &h), STORE_OK);
    assert_int_equal(h.n, 5);
    for (size_t i = 0; i < h.n; i++)
        assert_true(h.intact[i]);
    sizes p = {0};
    assert_int_equal(store_pending(f->st, b, 0, 10, on_sized, &p), STORE_OK);
    assert_int_equal(p.n, 5);
    for (size_t i = 0; i < p.n; i++)
        assert_true(p.intact[i]);
    /* Small rows after big ones still read right. */
    append(f->st, ab, b, "tiny");
    msgs m = {0};
    assert_int_equal(store_history(f->st, ab, 0, 1, on_msg, &m), STORE_OK);
    assert_int_equal(m.n, 1);
    assert_string_equal(m.body[0], "tiny");
}

/* ---- idempotent sends: message_append with a ref ---- */

/* Appends with ref, failing the test unless STORE_OK. existed starts out as
 * neither 0 nor 1, so the call must set it. */
static store_msg append_ref(store *st, uint64_t conv, uint64_t sender, uint64_t ref,
                            const char *body, int64_t ts)
{
    store_msg m;
    memset(&m, 0x5a, sizeof m);
    store_status ret = store_message_append(st, conv, sender, ref, body, strlen(body), ts, &m);
    if (ret != STORE_OK)
        fail_msg("append ref %llu: status %d: %s", (unsigned long long)ref, ret, store_errmsg(st));
    return m;
}

static long long last_seq(const char *uri, uint64_t conv)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT coalesce(max(seq), 0) FROM messages WHERE conv_id = %llu",
             (unsigned long long)conv);
    return raw_int(uri, sql);
}

/* Every conversation's messages have seqs 1..n: no gap, no extra. */
static void assert_seqs_gap_free(const char *uri)
{
    assert_int_equal(raw_int(uri, "SELECT count(*) FROM (SELECT conv_id FROM messages"
                                  " GROUP BY conv_id HAVING min(seq) <> 1 OR max(seq) <> count(*))"
                                  " AS bad"),
                     0);
}

/* m is what was stored as `want` (msgid, place, routing, body). */
static void assert_same_msg(const store_msg *m, const store_msg *want, const char *body)
{
    assert_int_equal(m->existed, 1);
    assert_int_equal(m->msgid, want->msgid);
    assert_int_equal(m->conv, want->conv);
    assert_int_equal(m->seq, want->seq);
    assert_int_equal(m->sender, want->sender);
    assert_int_equal(m->to, want->to);
    assert_int_equal(m->group, want->group);
    assert_int_equal(m->ts, want->ts);
    assert_int_equal(m->body_len, strlen(body));
    assert_memory_equal(m->body, body, strlen(body));
}

void store_test_append_ref(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t ab;
    store_group g;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    assert_int_equal(store_group_create(f->st, "g", "", a, 1, &g), STORE_OK);
    assert_int_equal(store_group_join(f->st, g.id, b, 1), STORE_OK);

    store_msg first = append_ref(f->st, ab, a, 7, "first", 100);
    assert_int_equal(first.existed, 0);
    assert_int_equal(first.seq, 1);
    assert_int_equal(first.to, b);
    assert_memory_equal(first.body, "first", 5);

    /* A retry stores nothing and answers with the first message. */
    store_msg again = append_ref(f->st, ab, a, 7, "retried body", 200);
    assert_same_msg(&again, &first, "first");
    assert_int_equal(again.recalled, 0);
    assert_int_equal(last_seq(f->uri, ab), 1);
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM messages"), 1);
    /* The retry took no seq: the next message has the next one. */
    store_msg m = append_ref(f->st, ab, a, 0, "second", 300);
    assert_int_equal(m.existed, 0);
    assert_int_equal(m.seq, 2);

    /* The same ref from another sender is another message. */
    store_msg bobs = append_ref(f->st, ab, b, 7, "bob's", 400);
    assert_int_equal(bobs.existed, 0);
    assert_int_equal(bobs.seq, 3);
    assert_int_not_equal(bobs.msgid, first.msgid);
    again = append_ref(f->st, ab, b, 7, "bob's again", 401);
    assert_same_msg(&again, &bobs, "bob's");

    /* ref 0 never dedupes. */
    store_msg z1 = append_ref(f->st, ab, a, 0, "same", 500);
    store_msg z2 = append_ref(f->st, ab, a, 0, "same", 500);
    assert_int_equal(z1.existed, 0);
    assert_int_equal(z2.existed, 0);
    assert_int_not_equal(z1.msgid, z2.msgid);
    assert_int_equal(z2.seq, 5);

    /* A ref names one message of the sender whatever the conversation: sent
     * again to another one, the first message comes back and the group gets
     * nothing. */
    again = append_ref(f->st, g.conv, a, 7, "elsewhere", 600);
    assert_same_msg(&again, &first, "first");
    assert_int_equal(last_seq(f->uri, g.conv), 0);
    /* Even to a conversation that does not exist: the lookup comes first. */
    again = append_ref(f->st, 9999, a, 7, "nowhere", 600);
    assert_same_msg(&again, &first, "first");
    store_msg nf;
    assert_int_equal(store_message_append(f->st, 9999, a, 8, "x", 1, 1, &nf), STORE_NOT_FOUND);
    /* ...which a failed send does not consume. */
    store_msg eight = append_ref(f->st, ab, a, 8, "eight", 700);
    assert_int_equal(eight.existed, 0);
    assert_int_equal(eight.seq, 6);

    /* A group message comes back with its group routing. */
    store_msg gm = append_ref(f->st, g.conv, b, 9, "to the group", 800);
    assert_int_equal(gm.existed, 0);
    assert_int_equal(gm.seq, 1);
    assert_int_equal(gm.group, g.id);
    assert_int_equal(gm.to, 0);
    again = append_ref(f->st, ab, b, 9, "to the pair?", 801);
    assert_same_msg(&again, &gm, "to the group");

    /* A recalled message is still the answer, flagged recalled, its body
     * forgotten. */
    assert_int_equal(store_message_recall(f->st, first.msgid), STORE_OK);
    again = append_ref(f->st, ab, a, 7, "after recall", 900);
    assert_same_msg(&again, &first, "");
    assert_int_equal(again.recalled, 1);

    /* Refs use all 64 bits: these are three different ones. */
    const uint64_t big[] = {UINT64_MAX, (uint64_t)INT64_MAX + 1, (uint64_t)INT64_MAX};
    store_msg bm[3];
    for (int i = 0; i < 3; i++) {
        bm[i] = append_ref(f->st, ab, a, big[i], "big", 1000 + i);
        assert_int_equal(bm[i].existed, 0);
    }
    for (int i = 0; i < 3; i++) {
        again = append_ref(f->st, ab, a, big[i], "big again", 2000);
        assert_same_msg(&again, &bm[i], "big");
    }

    /* Everything listed has existed = 0; the store kept each message once. */
    msgs h = {0};
    assert_int_equal(store_history(f->st, ab, 0, 100, on_msg, &h), STORE_OK);
    assert_int_equal(h.n, 9);
    for (size_t i = 0; i < h.n; i++) {
        assert_int_equal(h.m[i].seq, i + 1);
        assert_int_equal(h.m[i].existed, 0);
    }
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM messages"), 10);
    assert_seqs_gap_free(f->uri);
}

/* Refs inside the caller's transactions and savepoints. */
void store_test_append_ref_txn(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t ab;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);

    /* A transaction sees its own stored ref; the duplicate leaves it usable. */
    assert_int_equal(store_begin(f->st), STORE_OK);
    store_msg m = append_ref(f->st, ab, a, 5, "in txn", 1);
    assert_int_equal(m.existed, 0);
    assert_int_equal(m.seq, 1);
    store_msg again = append_ref(f->st, ab, a, 5, "dup in txn", 2);
    assert_same_msg(&again, &m, "in txn");
    store_msg n = append_ref(f->st, ab, a, 0, "next", 3);
    assert_int_equal(n.seq, 2);
    assert_int_equal(store_commit(f->st), STORE_OK);
    assert_int_equal(last_seq(f->uri, ab), 2);

    /* Rolled back, the ref is free again and so is the seq. */
    assert_int_equal(store_begin(f->st), STORE_OK);
    m = append_ref(f->st, ab, a, 6, "undone", 4);
    assert_int_equal(m.seq, 3);
    assert_int_equal(store_rollback(f->st), STORE_OK);
    m = append_ref(f->st, ab, a, 6, "kept", 5);
    assert_int_equal(m.existed, 0);
    assert_int_equal(m.seq, 3);

    /* The same with a request savepoint, and a duplicate within a batch. */
    assert_int_equal(store_begin(f->st), STORE_OK);
    assert_int_equal(store_savepoint(f->st), STORE_OK);
    m = append_ref(f->st, ab, a, 10, "undone", 6);
    assert_int_equal(m.seq, 4);
    assert_int_equal(store_rollback_to(f->st), STORE_OK);
    assert_int_equal(store_savepoint(f->st), STORE_OK);
    m = append_ref(f->st, ab, a, 10, "kept", 7);
    assert_int_equal(m.existed, 0);
    assert_int_equal(m.seq, 4);
    assert_int_equal(store_release(f->st), STORE_OK);
    assert_int_equal(store_savepoint(f->st), STORE_OK);
    again = append_ref(f->st, ab, a, 10, "retry", 8);
    assert_same_msg(&again, &m, "kept");
    assert_int_equal(store_release(f->st), STORE_OK);
    assert_int_equal(store_commit(f->st), STORE_OK);

    assert_int_equal(last_seq(f->uri, ab), 4);
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM messages"), 4);
    assert_seqs_gap_free(f->uri);
}

void store_test_append_ref_persist(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t ab;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    store_msg m = append_ref(f->st, ab, a, 42, "kept", 1);
    assert_int_equal(m.existed, 0);

    store_close(f->st);
    f->st = store_suite_open(f->uri);

    store_msg again = append_ref(f->st, ab, a, 42, "after reopen", 2);
    assert_same_msg(&again, &m, "kept");
    store_msg next = append_ref(f->st, ab, a, 43, "next", 3);
    assert_int_equal(next.existed, 0);
    assert_int_equal(next.seq, 2);
    assert_seqs_gap_free(f->uri);
}

/* One send on a handle of its own, on its own thread. */
typedef struct {
    const char *uri;
    uint64_t conv, sender, ref;
    int in_txn; /* inside store_begin; then one more message and commit */
    store_status ret, after_ret, commit_ret;
    store_msg m;
    char body[32];
    uint64_t after_seq;
    char err[512];
} ref_sender;

static void *ref_send_thread(void *arg)
{
    ref_sender *t = arg;
    store *st = store_open(t->uri, t->err, sizeof t->err);
    t->ret = STORE_ERROR;
    if (!st)
        return NULL;
    if (t->in_txn && store_begin(st) != STORE_OK) {
        snprintf(t->err, sizeof t->err, "begin: %s", store_errmsg(st));
        store_close(st);
        return NULL;
    }
    t->ret = store_message_append(st, t->conv, t->sender, t->ref, "second", 6, 2, &t->m);
    if (t->ret == STORE_OK) {
        /* The body lives in the handle: keep a copy. */
        size_t n = t->m.body_len < sizeof t->body - 1 ? t->m.body_len : sizeof t->body - 1;
        memcpy(t->body, t->m.body, n);
        t->body[n] = '\0';
    } else {
        snprintf(t->err, sizeof t->err, "%s", store_errmsg(st));
    }
    t->m.body = NULL;
    if (t->in_txn) {
        store_msg n;
        t->after_ret = store_message_append(st, t->conv, t->sender, 0, "after", 5, 3, &n);
        t->after_seq = n.seq;
        t->commit_ret = store_commit(st);
    }
    store_close(st);
    return NULL;
}

/* Waits until another handle waits for a lock: 0, or -1 on a timeout. Seen
 * twice in a row, so that a statement merely running at that instant does
 * not count. A backend that cannot tell gets a fixed delay. */
static int wait_lock_wait(const char *uri)
{
    if (!store_suite->lock_waits_sql) {
        usleep(300 * 1000);
        return 0;
    }
    int seen = 0;
    for (int i = 0; i < 500 && seen < 2; i++) {
        seen = raw_int(uri, store_suite->lock_waits_sql) >= 1 ? seen + 1 : 0;
        usleep(10 * 1000);
    }
    return seen >= 2 ? 0 : -1;
}

/* The race on a ref made certain: one handle has stored (sender, ref) and
 * not committed yet when another sends the same. The second waits (on the
 * unique key, or on the conversation's row lock) and, once the first
 * commits, gets the first's message, having stored nothing and taken no
 * seq. */
void store_test_append_ref_blocked(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t c = mkuser(f->st, "carol");
    uint64_t ab, ac;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    assert_int_equal(store_direct_conv(f->st, a, c, &ac), STORE_OK);

    for (int round = 0; round < 2; round++) {
        /* Round 0: the other send goes to another conversation, in
         * autocommit. Round 1: to the same one, in a transaction of the
         * other handle, which then goes on and commits. */
        uint64_t ref = 100 + (uint64_t)round;
        assert_int_equal(store_begin(f->st), STORE_OK);
        store_msg m = append_ref(f->st, ab, a, ref, "first", 1);
        assert_int_equal(m.existed, 0);
        ref_sender t = {
            .uri = f->uri, .conv = round ? ab : ac, .sender = a, .ref = ref, .in_txn = round};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, ref_send_thread, &t), 0);
        int waited = wait_lock_wait(f->uri);
        store_status committed = store_commit(f->st);
        pthread_join(th, NULL);
        assert_int_equal(waited, 0);
        assert_int_equal(committed, STORE_OK);
        if (t.ret != STORE_OK)
            fail_msg("round %d: the other send: %s", round, t.err);
        assert_int_equal(t.m.existed, 1);
        assert_int_equal(t.m.msgid, m.msgid);
        assert_int_equal(t.m.conv, ab);
        assert_int_equal(t.m.seq, m.seq);
        assert_int_equal(t.m.to, b);
        assert_string_equal(t.body, "first");
        if (round) {
            assert_int_equal(t.after_ret, STORE_OK);
            assert_int_equal(t.after_seq, m.seq + 1);
            assert_int_equal(t.commit_ret, STORE_OK);
        }
    }
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM messages"), 3);
    assert_int_equal(last_seq(f->uri, ac), 0);
    assert_int_equal(last_seq(f->uri, ab), 3);
    assert_seqs_gap_free(f->uri);
}

enum { RACERS = 4, RACE_REFS = 100 };

typedef struct {
    const char *uri;
    uint64_t conv, sender;
    pthread_barrier_t *start;
    uint64_t msgid[RACE_REFS], seq[RACE_REFS];
    int existed[RACE_REFS];
    int failed;
    char err[512];
} ref_racer;

static void *ref_race_thread(void *arg)
{
    ref_racer *t = arg;
    store *st = store_open(t->uri, t->err, sizeof t->err);
    pthread_barrier_wait(t->start);
    if (!st) {
        t->failed = 1;
        return NULL;
    }
    for (int r = 0; r < RACE_REFS; r++) {
        store_msg m;
        char body[16];
        int n = snprintf(body, sizeof body, "r%d", r);
        store_status ret =
            store_message_append(st, t->conv, t->sender, (uint64_t)r + 1, body, (size_t)n, r, &m);
        if (ret != STORE_OK) {
            t->failed = 1;
            snprintf(t->err, sizeof t->err, "ref %d: status %d: %s", r + 1, ret, store_errmsg(st));
            break;
        }
        t->msgid[r] = m.msgid;
        t->seq[r] = m.seq;
        t->existed[r] = m.existed;
    }
    store_close(st);
    return NULL;
}

/* Handles sending the same refs in lockstep: each ref is stored once, every
 * sender of it gets that one message, and seqs stay gap-free. */
void store_test_append_ref_race(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t ab;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);

    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, RACERS);
    static ref_racer t[RACERS];
    pthread_t th[RACERS];
    for (int i = 0; i < RACERS; i++) {
        t[i] = (ref_racer){.uri = f->uri, .conv = ab, .sender = a, .start = &start};
        assert_int_equal(pthread_create(&th[i], NULL, ref_race_thread, &t[i]), 0);
    }
    for (int i = 0; i < RACERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    for (int i = 0; i < RACERS; i++) {
        if (t[i].failed)
            fail_msg("racer %d: %s", i, t[i].err);
    }
    static char seen[RACE_REFS + 1];
    memset(seen, 0, sizeof seen);
    for (int r = 0; r < RACE_REFS; r++) {
        int stored = 0;
        for (int i = 0; i < RACERS; i++) {
            assert_int_equal(t[i].msgid[r], t[0].msgid[r]);
            assert_int_equal(t[i].seq[r], t[0].seq[r]);
            assert_true(t[i].existed[r] == 0 || t[i].existed[r] == 1);
            stored += !t[i].existed[r];
        }
        assert_int_equal(stored, 1);
        uint64_t s = t[0].seq[r];
        assert_true(s >= 1 && s <= RACE_REFS);
        assert_false(seen[s]);
        seen[s] = 1;
    }
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM messages"), RACE_REFS);
    assert_int_equal(last_seq(f->uri, ab), RACE_REFS);
    assert_seqs_gap_free(f->uri);
    store_msg m = append_ref(f->st, ab, b, 0, "last", 1);
    assert_int_equal(m.seq, RACE_REFS + 1);
}

/* A healthy handle reports no lost transaction and no dead connection,
 * whatever its calls answered. */
void store_test_txn_flags(void **state)
{
    store_fixture *f = *state;
    assert_int_equal(store_txn_lost(f->st), 0);
    assert_int_equal(store_is_dead(f->st), 0);
    uint64_t a = mkuser(f->st, "alice");
    assert_int_equal(store_begin(f->st), STORE_OK);
    assert_int_equal(store_txn_lost(f->st), 0);
    uint64_t id;
    assert_int_equal(store_user_create(f->st, "alice", "h", 1, &id), STORE_CONFLICT);
    assert_int_equal(store_group_create(f->st, "g", "", 9999, 1, NULL), STORE_NOT_FOUND);
    assert_int_equal(store_txn_lost(f->st), 0);
    assert_int_equal(store_is_dead(f->st), 0);
    assert_int_equal(store_group_create(f->st, "g", "", a, 1, NULL), STORE_OK);
    assert_int_equal(store_commit(f->st), STORE_OK);
    assert_int_equal(store_txn_lost(f->st), 0);
    assert_int_equal(store_commit(f->st), STORE_ERROR); /* no transaction */
    assert_int_equal(store_txn_lost(f->st), 0);
    assert_int_equal(store_is_dead(f->st), 0);
    assert_int_equal(store_txn_lost(NULL), 0);
    assert_int_equal(store_is_dead(NULL), 0);
}

/* ---- a batch of sends: store_message_append_many ---- */

typedef struct {
    size_t calls;
    size_t order_ok; /* calls that came with the index expected next */
    store_status st[64];
    store_msg m[64];
    char body[64][16]; /* m's bodies: valid during the call only */
} many_seen;

static void many_cb(void *arg, size_t i, store_status st, const store_msg *m)
{
    many_seen *s = arg;
    if (i == s->calls && i < 64) {
        s->order_ok++;
        s->st[i] = st;
        if (m) {
            s->m[i] = *m;
            snprintf(s->body[i], sizeof s->body[i], "%.*s", (int)m->body_len, m->body);
            s->m[i].body = s->body[i];
        }
    }
    s->calls++;
}

void store_test_append_many(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t c = mkuser(f->st, "carol");
    uint64_t ab, ac;
    store_group g;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    assert_int_equal(store_direct_conv(f->st, a, c, &ac), STORE_OK);
    assert_int_equal(store_group_create(f->st, "g", "", a, 1, &g), STORE_OK);
    assert_int_equal(store_group_join(f->st, g.id, b, 1), STORE_OK);
    store_msg earlier = append_ref(f->st, ab, a, 77, "earlier", 50);

    /* 43 sends (chunks of 32, 8, 2 and 1 on MariaDB) over three
     * conversations, interleaved, in one transaction as the runtime runs
     * them. */
    store_append req[43];
    char body[43][16];
    for (int i = 0; i < 43; i++) {
        snprintf(body[i], sizeof body[i], "m%d", i);
        uint64_t conv = i % 3 == 0 ? ab : i % 3 == 1 ? ac : g.conv;
        req[i] = (store_append){.conv = conv,
                                .sender = i % 3 == 2 ? b : a,
                                .ref = (uint64_t)(1000 + i),
                                .body = body[i],
                                .body_len = strlen(body[i]),
                                .ts = 100 + i};
    }
    many_seen s = {0};
    assert_int_equal(store_begin(f->st), STORE_OK);
    assert_int_equal(store_message_append_many(f->st, req, 43, many_cb, &s), STORE_OK);
    assert_int_equal(store_commit(f->st), STORE_OK);
    assert_int_equal(s.calls, 43);
    assert_int_equal(s.order_ok, 43);
    uint64_t next_seq[3] = {2, 1, 1}; /* ab already holds "earlier" */
    uint64_t last_id = earlier.msgid;
    for (int i = 0; i < 43; i++) {
        assert_int_equal(s.st[i], STORE_OK);
        const store_msg *m = &s.m[i];
        /* Seqs follow the order of the requests, msgids increase. */
        assert_int_equal(m->conv, req[i].conv);
        assert_int_equal(m->seq, next_seq[i % 3]++);
        assert_true(m->msgid > last_id);
        last_id = m->msgid;
        assert_int_equal(m->existed, 0);
        assert_int_equal(m->sender, req[i].sender);
        assert_int_equal(m->ts, req[i].ts);
        assert_int_equal(m->to, i % 3 == 0 ? b : i % 3 == 1 ? c : 0);
        assert_int_equal(m->group, i % 3 == 2 ? g.id : 0);
        assert_int_equal(m->body_len, strlen(body[i]));
        assert_memory_equal(m->body, body[i], strlen(body[i]));
        store_msg got;
        assert_int_equal(store_message_get(f->st, m->msgid, &got), STORE_OK);
        assert_int_equal(got.seq, m->seq);
        assert_memory_equal(got.body, body[i], strlen(body[i]));
    }

    /* One bad request among good ones fails alone: a retry answered with
     * its stored message, a conversation that does not exist, a new send. */
    store_append mixed[4] = {
        {.conv = ab, .sender = a, .ref = 2001, .body = "x", .body_len = 1, .ts = 300},
        {.conv = ab, .sender = a, .ref = 77, .body = "earlier", .body_len = 7, .ts = 301},
        {.conv = 999999, .sender = a, .ref = 2002, .body = "y", .body_len = 1, .ts = 302},
        {.conv = ac, .sender = a, .ref = 2003, .body = "z", .body_len = 1, .ts = 303},
    };
    memset(&s, 0, sizeof s);
    assert_int_equal(store_begin(f->st), STORE_OK);
    assert_int_equal(store_message_append_many(f->st, mixed, 4, many_cb, &s), STORE_OK);
    assert_int_equal(store_commit(f->st), STORE_OK);
    assert_int_equal(s.order_ok, 4);
    assert_int_equal(s.st[0], STORE_OK);
    assert_int_equal(s.m[0].seq, 17);
    assert_int_equal(s.st[1], STORE_OK);
    assert_same_msg(&s.m[1], &earlier, "earlier");
    assert_int_equal(s.st[2], STORE_NOT_FOUND);
    assert_int_equal(s.st[3], STORE_OK);
    assert_int_equal(s.m[3].seq, 15);
    assert_int_equal(last_seq(f->uri, ab), 17);
    assert_int_equal(last_seq(f->uri, ac), 15);
    assert_seqs_gap_free(f->uri);

    /* Outside a transaction each statement commits by itself. */
    memset(&s, 0, sizeof s);
    assert_int_equal(store_message_append_many(f->st, mixed, 1, many_cb, &s), STORE_OK);
    assert_int_equal(s.st[0], STORE_OK);
    assert_int_equal(s.m[0].existed, 1);
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM messages"), 1 + 43 + 2);
}

/* A client's own repeats (client_msg_id as the ref): found by
 * store_message_by_ref, and one message when a repeat lands in the same
 * batch as its original (the client sent again after a cut while the first
 * was still queued). */
void store_test_message_by_ref(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice");
    uint64_t b = mkuser(f->st, "bob");
    uint64_t ab;
    store_group g;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    assert_int_equal(store_group_create(f->st, "g", "", a, 1, &g), STORE_OK);
    assert_int_equal(store_group_join(f->st, g.id, b, 1), STORE_OK);

    const uint64_t top = UINT64_MAX - 2; /* client ids use all 64 bits */
    store_msg d = append_ref(f->st, ab, a, top, "direct", 10);
    store_msg gm = append_ref(f->st, g.conv, a, 5, "to the group", 11);
    store_msg m;
    memset(&m, 0x5a, sizeof m);
    assert_int_equal(store_message_by_ref(f->st, a, top, &m), STORE_OK);
    assert_same_msg(&m, &d, "direct");
    assert_int_equal(store_message_by_ref(f->st, a, 5, &m), STORE_OK);
    assert_same_msg(&m, &gm, "to the group");
    assert_int_equal(store_message_by_ref(f->st, a, 5, NULL), STORE_OK);
    /* Another sender's, another ref, ref 0: none. */
    assert_int_equal(store_message_by_ref(f->st, b, top, &m), STORE_NOT_FOUND);
    assert_int_equal(store_message_by_ref(f->st, a, top - 1, &m), STORE_NOT_FOUND);
    append_ref(f->st, ab, a, 0, "no ref", 12);
    assert_int_equal(store_message_by_ref(f->st, a, 0, &m), STORE_NOT_FOUND);
    /* A recalled message is still found, marked. */
    assert_int_equal(store_message_recall(f->st, d.msgid), STORE_OK);
    assert_int_equal(store_message_by_ref(f->st, a, top, &m), STORE_OK);
    assert_int_equal(m.msgid, d.msgid);
    assert_int_equal(m.recalled, 1);

    /* One batch: a send, its repeat twice, another send, the group's
     * repeat, as the runtime runs them in one transaction. */
    store_append req[5] = {
        {.conv = ab, .sender = b, .ref = 900, .body = "r", .body_len = 1, .ts = 20},
        {.conv = ab, .sender = b, .ref = 900, .body = "r", .body_len = 1, .ts = 21},
        {.conv = ab, .sender = b, .ref = 901, .body = "s", .body_len = 1, .ts = 22},
        {.conv = ab, .sender = b, .ref = 900, .body = "r", .body_len = 1, .ts = 23},
        {.conv = g.conv, .sender = a, .ref = 5, .body = "to the group", .body_len = 12, .ts = 24},
    };
    many_seen s = {0};
    long long before = raw_int(f->uri, "SELECT count(*) FROM messages");
    assert_int_equal(store_begin(f->st), STORE_OK);
    assert_int_equal(store_message_append_many(f->st, req, 5, many_cb, &s), STORE_OK);
    assert_int_equal(store_commit(f->st), STORE_OK);
    assert_int_equal(s.order_ok, 5);
    for (int i = 0; i < 5; i++)
        assert_int_equal(s.st[i], STORE_OK);
    assert_int_equal(s.m[0].existed, 0);
    assert_same_msg(&s.m[1], &s.m[0], "r");
    assert_int_equal(s.m[2].existed, 0);
    assert_int_equal(s.m[2].seq, s.m[0].seq + 1);
    assert_same_msg(&s.m[3], &s.m[0], "r");
    assert_same_msg(&s.m[4], &gm, "to the group");
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM messages"), before + 2);
    assert_int_equal(store_message_by_ref(f->st, b, 900, &m), STORE_OK);
    assert_int_equal(m.msgid, s.m[0].msgid);
    assert_seqs_gap_free(f->uri);

    /* Gone with its group. */
    assert_int_equal(store_group_delete(f->st, g.id), STORE_OK);
    assert_int_equal(store_message_by_ref(f->st, a, 5, &m), STORE_NOT_FOUND);
}

static long long acked_seq(const char *uri, uint64_t conv, uint64_t user)
{
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT acked_seq FROM members WHERE conv_id = %llu AND user_id = %llu",
             (unsigned long long)conv, (unsigned long long)user);
    return raw_int(uri, sql);
}

/* The gateway's coalesced acks: many cursors at once, each as store_ack. */
void store_test_ack_many(void **state)
{
    store_fixture *f = *state;
    enum { N = 41 };
    uint64_t hub = mkuser(f->st, "hub");
    uint64_t u[N], conv[N];
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "u%d", i);
        u[i] = mkuser(f->st, name);
        assert_int_equal(store_direct_conv(f->st, hub, u[i], &conv[i]), STORE_OK);
        for (int k = 0; k < 3; k++)
            append(f->st, conv[i], hub, "hello");
    }
    uint64_t outsider = mkuser(f->st, "outsider");
    /* 41 cursors (chunks of 32 and 8, then one): most move to seq 2. */
    store_cursor c[N];
    for (int i = 0; i < N; i++)
        c[i] = (store_cursor){.user = u[i], .conv = conv[i], .seq = 2};
    assert_int_equal(store_ack_many(f->st, c, N), STORE_OK);
    for (int i = 0; i < N; i++)
        assert_int_equal(acked_seq(f->uri, conv[i], u[i]), 2);

    /* Mixed: one goes back (stays), one past the end (capped at 3), one of
     * a user not in the conversation (changes nothing), the rest to 3. */
    for (int i = 0; i < N; i++)
        c[i].seq = 3;
    c[3].seq = 1;
    c[7].seq = 99;
    c[10].user = outsider;
    assert_int_equal(store_ack_many(f->st, c, N), STORE_OK);
    for (int i = 0; i < N; i++)
        assert_int_equal(acked_seq(f->uri, conv[i], u[i]), i == 3 || i == 10 ? 2 : 3);
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM members"), 2 * N);
}

/* ---- administration (parleyctl) ---- */

typedef struct {
    char names[8][STORE_NAME_MAX * 4 + 1];
    int banned[8];
    size_t n;
} found_users;

static int found_user(void *arg, const store_user *u)
{
    found_users *f = arg;
    assert_true(f->n < 8);
    assert_string_equal(u->pwhash, "");
    snprintf(f->names[f->n], sizeof f->names[0], "%s", u->name);
    f->banned[f->n++] = u->banned;
    return 0;
}

static int count_session(void *arg, int64_t created_ms, int64_t last_used_ms)
{
    int64_t *prev = arg;
    assert_true(last_used_ms >= created_ms);
    assert_true(last_used_ms <= *prev); /* most recently used first */
    *prev = last_used_ms;
    return 0;
}

void store_test_admin(void **state)
{
    store_fixture *f = *state;
    uint64_t ann = mkuser(f->st, "ann"), anna = mkuser(f->st, "anna"), bo = mkuser(f->st, "bo");
    mkuser(f->st, "an\xc3\xa9"); /* "ané": bytes above 'n' */
    mkuser(f->st, "Ann");
    found_users fu = {.n = 0};

    /* A prefix's names, in byte order, paged with `after`. */
    assert_int_equal(store_users_find(f->st, "ann", "", 10, found_user, &fu), STORE_OK);
    assert_int_equal(fu.n, 2);
    assert_string_equal(fu.names[0], "ann");
    assert_string_equal(fu.names[1], "anna");
    fu.n = 0;
    assert_int_equal(store_users_find(f->st, "an", "ann", 10, found_user, &fu), STORE_OK);
    assert_int_equal(fu.n, 2);
    assert_string_equal(fu.names[0], "anna");
    assert_string_equal(fu.names[1], "an\xc3\xa9");
    fu.n = 0;
    assert_int_equal(store_users_find(f->st, "", "", 2, found_user, &fu), STORE_OK);
    assert_int_equal(fu.n, 2);
    assert_string_equal(fu.names[0], "Ann");
    fu.n = 0;
    assert_int_equal(store_users_find(f->st, "zz", "", 10, found_user, &fu), STORE_OK);
    assert_int_equal(fu.n, 0);
    assert_int_equal(store_users_find(f->st, "a", "", 0, found_user, &fu), STORE_ERROR);

    /* Sessions: listed, counted; a ban deletes them and is seen by lookups. */
    for (unsigned i = 0; i < 3; i++)
        mksession(f->st, i, ann, 1000 + i * 100000, 0);
    mksession(f->st, 9, bo, 1000, 0);
    uint64_t n = 0;
    assert_int_equal(store_user_session_count(f->st, ann, &n), STORE_OK);
    assert_int_equal(n, 3);
    int64_t prev = INT64_MAX;
    assert_int_equal(store_user_sessions(f->st, ann, count_session, &prev), STORE_OK);
    assert_int_equal(prev, 1000);
    assert_int_equal(store_user_set_banned(f->st, ann, 1), STORE_OK);
    assert_int_equal(store_user_set_banned(f->st, ann, 1), STORE_OK); /* again: no error */
    assert_int_equal(store_user_session_count(f->st, ann, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(store_user_session_count(f->st, bo, &n), STORE_OK);
    assert_int_equal(n, 1);
    store_user u;
    assert_int_equal(store_user_by_name(f->st, "ann", &u), STORE_OK);
    assert_int_equal(u.banned, 1);
    assert_int_equal(u.created_ms, 1000);
    assert_int_equal(store_user_set_banned(f->st, ann, 0), STORE_OK);
    assert_int_equal(store_user_by_id(f->st, ann, &u), STORE_OK);
    assert_int_equal(u.banned, 0);
    assert_int_equal(store_user_set_banned(f->st, 999999, 1), STORE_NOT_FOUND);

    /* A new password hash ends the sessions too. */
    mksession(f->st, 20, ann, 5000, 0);
    assert_int_equal(store_user_set_password(f->st, ann, "$argon2id$new"), STORE_OK);
    assert_int_equal(store_user_by_id(f->st, ann, &u), STORE_OK);
    assert_string_equal(u.pwhash, "$argon2id$new");
    assert_int_equal(sessions_of(f->uri, ann), 0);
    assert_int_equal(store_user_set_password(f->st, 999999, "$x"), STORE_NOT_FOUND);

    /* Erase: tombstone, no friends, no group memberships, no bodies. */
    assert_int_equal(store_friend_add(f->st, ann, bo, 1000), STORE_OK);
    store_group g;
    assert_int_equal(store_group_create(f->st, "bos", "", bo, 1000, &g), STORE_OK);
    assert_int_equal(store_group_join(f->st, g.id, ann, 1000), STORE_OK);
    uint64_t conv;
    assert_int_equal(store_direct_conv(f->st, ann, bo, &conv), STORE_OK);
    store_msg m1, m2, m3, got;
    assert_int_equal(store_message_append(f->st, conv, ann, 0, "hers", 4, 10, &m1), STORE_OK);
    assert_int_equal(store_message_append(f->st, g.conv, ann, 0, "hers2", 5, 11, &m2), STORE_OK);
    assert_int_equal(store_message_append(f->st, conv, bo, 0, "his", 3, 12, &m3), STORE_OK);
    mksession(f->st, 30, ann, 6000, 0);
    assert_int_equal(store_user_erase(f->st, ann), STORE_OK);
    assert_int_equal(store_user_by_id(f->st, ann, &u), STORE_OK);
    char tomb[64];
    snprintf(tomb, sizeof tomb, STORE_TOMBSTONE_PREFIX "%llu", (unsigned long long)ann);
    assert_string_equal(u.name, tomb);
    assert_string_equal(u.pwhash, "");
    assert_int_equal(u.banned, 1);
    assert_int_equal(store_user_by_name(f->st, "ann", &u), STORE_NOT_FOUND);
    assert_int_equal(sessions_of(f->uri, ann), 0);
    assert_int_equal(store_friend_count(f->st, bo, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(store_user_group_count(f->st, ann, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(store_group_member_count(f->st, g.id, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(store_message_get(f->st, m1.msgid, &got), STORE_OK);
    assert_int_equal(got.recalled, 1);
    assert_int_equal(got.body_len, 0);
    assert_int_equal(store_message_get(f->st, m2.msgid, &got), STORE_OK);
    assert_int_equal(got.body_len, 0);
    assert_int_equal(store_message_get(f->st, m3.msgid, &got), STORE_OK);
    assert_int_equal(got.recalled, 0);
    assert_int_equal(got.body_len, 3);
    /* The name is free again; erasing twice is harmless. */
    mkuser(f->st, "ann");
    assert_int_equal(store_user_erase(f->st, ann), STORE_OK);
    assert_int_equal(store_user_erase(f->st, 999999), STORE_NOT_FOUND);
    (void)anna;
}

/* ---- files ---- */

static int count_msgfile(void *arg, uint64_t msgid, const store_file *f)
{
    (void)msgid;
    (void)f;
    (*(int *)arg)++;
    return 0;
}

static int count_upload(void *arg, const store_upload *u)
{
    (void)u;
    (*(int *)arg)++;
    return 0;
}

static uint64_t mkupload(store *st, uint64_t user, uint8_t fill, uint64_t size, uint64_t received,
                         int64_t created_ms)
{
    store_upload u;
    memset(&u, 0, sizeof u);
    u.user = user;
    memset(u.f.sha256, fill, 32);
    u.f.size = size;
    snprintf(u.f.name, sizeof u.f.name, "pic \xc3\xa9.png");
    snprintf(u.f.type, sizeof u.f.type, "image/png");
    u.received = received;
    u.created_ms = created_ms;
    uint64_t id = 0;
    assert_int_equal(store_upload_create(st, &u, &id), STORE_OK);
    assert_true(id > 0);
    return id;
}

void store_test_files(void **state)
{
    store_fixture *f = *state;
    store *st = f->st;
    uint64_t a = mkuser(st, "alice"), b = mkuser(st, "bob"), ab;
    assert_int_equal(store_direct_conv(st, a, b, &ab), STORE_OK);
    uint8_t sha[32];
    memset(sha, 7, 32);

    /* An upload: found by id and by (user, content), counted for the quota. */
    uint64_t id = mkupload(st, a, 7, 1000, 0, 100);
    store_upload u;
    assert_int_equal(store_upload_get(st, id, &u), STORE_OK);
    assert_int_equal(u.user, a);
    assert_int_equal(u.f.size, 1000);
    assert_int_equal(u.received, 0);
    assert_int_equal(u.created_ms, 100);
    assert_memory_equal(u.f.sha256, sha, 32);
    assert_string_equal(u.f.name, "pic \xc3\xa9.png");
    assert_string_equal(u.f.type, "image/png");
    assert_int_equal(store_upload_find(st, a, sha, &u), STORE_OK);
    assert_int_equal(u.id, id);
    assert_int_equal(store_upload_find(st, b, sha, &u), STORE_NOT_FOUND);
    assert_int_equal(store_upload_get(st, id + 100, &u), STORE_NOT_FOUND);
    uint64_t n = 9, bytes = 9;
    assert_int_equal(store_file_usage(st, a, &n, &bytes), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(bytes, 1000);
    assert_int_equal(store_file_usage(st, b, &n, &bytes), STORE_OK);
    assert_int_equal(n + bytes, 0);

    /* Complete: the content is recorded (twice is fine), and referenced. */
    assert_int_equal(store_upload_set_received(st, id, 1000), STORE_OK);
    assert_int_equal(store_upload_set_received(st, id + 100, 1), STORE_NOT_FOUND);
    assert_int_equal(store_file_get(st, sha, NULL), STORE_NOT_FOUND);
    assert_int_equal(store_file_put(st, sha, 1000, 5), STORE_OK);
    assert_int_equal(store_file_put(st, sha, 1000, 6), STORE_OK);
    uint64_t size = 0;
    assert_int_equal(store_file_get(st, sha, &size), STORE_OK);
    assert_int_equal(size, 1000);
    int gone = 1;
    assert_int_equal(store_file_release(st, sha, &gone), STORE_OK);
    assert_int_equal(gone, 0);

    /* Sent: the upload is used up, the message carries the file. */
    assert_int_equal(store_upload_get(st, id, &u), STORE_OK);
    store_msg m, m2;
    assert_int_equal(store_message_append_file(st, ab, a, 0, "", 0, 50, &u, &m), STORE_OK);
    assert_int_equal(m.existed, 0);
    assert_int_equal(store_upload_get(st, id, &u), STORE_NOT_FOUND);
    store_file fl;
    assert_int_equal(store_msg_file(st, m.msgid, &fl), STORE_OK);
    assert_memory_equal(fl.sha256, sha, 32);
    assert_int_equal(fl.size, 1000);
    assert_string_equal(fl.name, "pic \xc3\xa9.png");
    assert_string_equal(fl.type, "image/png");
    assert_int_equal(store_file_usage(st, a, &n, &bytes), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(bytes, 1000);
    int k = 0;
    assert_int_equal(store_msg_files(st, m.msgid, m.msgid, count_msgfile, &k), STORE_OK);
    assert_int_equal(k, 1);
    k = 0;
    assert_int_equal(store_msg_files(st, 0, m.msgid - 1, count_msgfile, &k), STORE_OK);
    assert_int_equal(k, 0);
    uint64_t plain = append(st, ab, b, "no file");
    assert_int_equal(store_msg_file(st, plain, &fl), STORE_NOT_FOUND);

    /* A repeat of the send (same ref) attaches nothing and keeps the upload. */
    uint64_t id2 = mkupload(st, a, 7, 1000, 1000, 200);
    assert_int_equal(store_upload_get(st, id2, &u), STORE_OK);
    assert_int_equal(store_message_append_file(st, ab, a, 42, "x", 1, 60, &u, &m2), STORE_OK);
    assert_int_equal(store_upload_get(st, id2, &u), STORE_NOT_FOUND);
    uint64_t id3 = mkupload(st, a, 7, 1000, 1000, 300);
    assert_int_equal(store_upload_get(st, id3, &u), STORE_OK);
    store_msg again;
    assert_int_equal(store_message_append_file(st, ab, a, 42, "x", 1, 61, &u, &again), STORE_OK);
    assert_int_equal(again.existed, 1);
    assert_int_equal(again.msgid, m2.msgid);
    assert_int_equal(store_upload_get(st, id3, &u), STORE_OK);
    assert_int_equal(store_upload_delete(st, id3), STORE_OK);
    assert_int_equal(store_upload_delete(st, id3), STORE_NOT_FOUND);

    /* Recall of one: the other still refers to the content; then none. */
    assert_int_equal(store_msg_file_drop(st, m.msgid, &fl), STORE_OK);
    assert_int_equal(store_msg_file_drop(st, m.msgid, &fl), STORE_NOT_FOUND);
    assert_int_equal(store_file_release(st, sha, &gone), STORE_OK);
    assert_int_equal(gone, 0);
    assert_int_equal(store_msg_file_drop(st, m2.msgid, &fl), STORE_OK);
    assert_int_equal(store_file_release(st, sha, &gone), STORE_OK);
    assert_int_equal(gone, 1);
    assert_int_equal(store_file_get(st, sha, NULL), STORE_NOT_FOUND);

    /* Expiry lists the old uploads only, the oldest first. */
    mkupload(st, b, 9, 10, 0, 1000);
    mkupload(st, b, 8, 10, 0, 5);
    k = 0;
    assert_int_equal(store_uploads_expired(st, 500, 10, count_upload, &k), STORE_OK);
    assert_int_equal(k, 1);

    /* A group's deletion takes its messages' files along. */
    store_group g;
    assert_int_equal(store_group_create(st, "team", "", a, 1, &g), STORE_OK);
    uint64_t id4 = mkupload(st, a, 6, 10, 10, 400);
    assert_int_equal(store_upload_get(st, id4, &u), STORE_OK);
    store_msg gm;
    assert_int_equal(store_message_append_file(st, g.conv, a, 0, "", 0, 70, &u, &gm), STORE_OK);
    assert_int_equal(store_msg_file(st, gm.msgid, &fl), STORE_OK);
    assert_int_equal(store_group_delete(st, g.id), STORE_OK);
    assert_int_equal(store_msg_file(st, gm.msgid, &fl), STORE_NOT_FOUND);

    /* Text that does not fit is refused before it reaches the database. */
    assert_int_equal(store_upload_get(st, id4 - 1, &u), STORE_OK);
    memset(u.f.name, 'x', sizeof u.f.name);
    uint64_t bad;
    assert_int_equal(store_upload_create(st, &u, &bad), STORE_ERROR);
}
