/*
 * store_suite: the store's cmocka tests, written once against store.h and
 * run by one program per backend: tests/unit/test_store.c (SQLite, no
 * server) and tests/integration/test_store_mariadb.c (a MariaDB server of
 * its own). A program describes its backend in a store_suite_backend, sets
 * store_suite, and lists STORE_SUITE_TESTS plus its backend's own tests.
 *
 * CMake builds each test program from its one file, so a program compiles
 * the suite in with #include "../store_suite.c".
 */
#ifndef PARLEY_TEST_STORE_SUITE_H
#define PARLEY_TEST_STORE_SUITE_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

typedef struct store_suite_backend {
    const char *name;
    /* Makes a new, empty database and writes a URI store_open accepts.
     * Returns 0 on success. */
    int (*create)(char *uri, size_t cap);
    /* Removes what create made, once every handle on it is closed. */
    void (*destroy)(const char *uri);
    /* Reads one integer with a connection of its own, to look behind the
     * API; -1 on any failure. */
    long long (*raw_int)(const char *uri, const char *sql);
    /* The query raw_int answers with the schema version, and the version
     * the backend creates. */
    const char *schema_version_sql;
    int schema_version;
    /* Runs one statement with a connection of its own; 0 on success. */
    int (*raw_exec)(const char *uri, const char *sql);
    /* Statements (NULL-terminated, for raw_exec) that take a database of
     * the latest schema back to version 4, before sessions had last_used:
     * what a database made before that change looks like. */
    const char *const *to_v4;
    /* A query raw_int answers with the number of other connections waiting
     * for a lock (or at least in a store statement still running), or NULL
     * if the backend cannot tell (tests then just sleep). */
    const char *lock_waits_sql;
} store_suite_backend;

/* The backend under test: set by main before running the tests. */
extern const store_suite_backend *store_suite;

/* Each test's state: a fresh database and a handle on it. */
typedef struct {
    char uri[512];
    store *st;
} store_fixture;

int store_suite_setup(void **state);
int store_suite_teardown(void **state);

/* store_open, failing the test (with the reason) if it fails. */
store *store_suite_open(const char *uri);
/* A user named `name`, failing the test if it cannot be made. */
uint64_t store_suite_mkuser(store *st, const char *name);

void store_test_open_schema(void **state);
void store_test_files(void **state);
void store_test_open_concurrent(void **state);
void store_test_users(void **state);
void store_test_user_limits(void **state);
void store_test_user_name_verbatim(void **state);
void store_test_names_exact(void **state);
void store_test_sessions(void **state);
void store_test_session_expiry(void **state);
void store_test_session_refresh(void **state);
void store_test_session_bound(void **state);
void store_test_session_delete_user(void **state);
void store_test_sessions_expire(void **state);
void store_test_session_migrate(void **state);
void store_test_counts(void **state);
void store_test_friends(void **state);
void store_test_groups(void **state);
void store_test_group_delete(void **state);
void store_test_direct_conv(void **state);
void store_test_direct_conv_race(void **state);
void store_test_append_seq(void **state);
void store_test_append_seq_handles(void **state);
void store_test_message_get_recall(void **state);
void store_test_big_bodies(void **state);
void store_test_history(void **state);
void store_test_pending(void **state);
void store_test_pending_many(void **state);
void store_test_ack(void **state);
void store_test_join_cursor(void **state);
void store_test_transactions(void **state);
void store_test_persistence(void **state);
void store_test_concurrent_append(void **state);
void store_test_append_ref(void **state);
void store_test_append_ref_txn(void **state);
void store_test_append_ref_persist(void **state);
void store_test_append_ref_blocked(void **state);
void store_test_append_ref_race(void **state);
void store_test_txn_flags(void **state);
void store_test_append_many(void **state);
void store_test_ack_many(void **state);
void store_test_message_by_ref(void **state);
void store_test_admin(void **state);

#define STORE_SUITE_T(fn)                                                                          \
    cmocka_unit_test_setup_teardown(fn, store_suite_setup, store_suite_teardown)

#define STORE_SUITE_TESTS                                                                          \
    STORE_SUITE_T(store_test_open_schema), STORE_SUITE_T(store_test_open_concurrent),              \
        STORE_SUITE_T(store_test_files), STORE_SUITE_T(store_test_users),                          \
        STORE_SUITE_T(store_test_user_limits), STORE_SUITE_T(store_test_user_name_verbatim),       \
        STORE_SUITE_T(store_test_names_exact), STORE_SUITE_T(store_test_sessions),                 \
        STORE_SUITE_T(store_test_session_expiry), STORE_SUITE_T(store_test_session_refresh),       \
        STORE_SUITE_T(store_test_session_bound), STORE_SUITE_T(store_test_session_delete_user),    \
        STORE_SUITE_T(store_test_sessions_expire), STORE_SUITE_T(store_test_session_migrate),      \
        STORE_SUITE_T(store_test_counts), STORE_SUITE_T(store_test_friends),                       \
        STORE_SUITE_T(store_test_groups), STORE_SUITE_T(store_test_group_delete),                  \
        STORE_SUITE_T(store_test_direct_conv), STORE_SUITE_T(store_test_direct_conv_race),         \
        STORE_SUITE_T(store_test_append_seq), STORE_SUITE_T(store_test_append_seq_handles),        \
        STORE_SUITE_T(store_test_message_get_recall), STORE_SUITE_T(store_test_big_bodies),        \
        STORE_SUITE_T(store_test_history), STORE_SUITE_T(store_test_pending),                      \
        STORE_SUITE_T(store_test_pending_many), STORE_SUITE_T(store_test_ack),                     \
        STORE_SUITE_T(store_test_join_cursor), STORE_SUITE_T(store_test_transactions),             \
        STORE_SUITE_T(store_test_persistence), STORE_SUITE_T(store_test_concurrent_append),        \
        STORE_SUITE_T(store_test_append_ref), STORE_SUITE_T(store_test_append_ref_txn),            \
        STORE_SUITE_T(store_test_append_ref_persist),                                              \
        STORE_SUITE_T(store_test_append_ref_blocked), STORE_SUITE_T(store_test_append_ref_race),   \
        STORE_SUITE_T(store_test_txn_flags), STORE_SUITE_T(store_test_append_many),                \
        STORE_SUITE_T(store_test_ack_many), STORE_SUITE_T(store_test_message_by_ref),              \
        STORE_SUITE_T(store_test_admin)

#endif
