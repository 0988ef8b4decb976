/*
 * The store suite (tests/store_suite.c) on MariaDB, against a server of its
 * own: scripts/servers.sh starts one on a free port in a temporary
 * directory, each test gets a database parley_tN of its own, and the server
 * is stopped and its directory removed at the end. If this process dies
 * without getting there (a crash, a sanitizer abort), a guardian process
 * it forked does the cleanup when it sees the process gone.
 *
 * Plus what only MariaDB has: connection failures, the unix socket form,
 * the schema as created, deadlocks and lost connections.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <mysql.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../store_suite.h"

/* CMake builds this program from this one file. */
#include "../store_suite.c"

#ifndef PARLEY_SOURCE_DIR
#error "PARLEY_SOURCE_DIR must name the source tree (scripts/servers.sh)"
#endif

static const char srv_script[] = PARLEY_SOURCE_DIR "/scripts/servers.sh";
static char srv_dir[64];
static int srv_port;
static int srv_running;
static int srv_guard_fd = -1; /* closing it (by exiting) wakes the guardian */
static pid_t srv_guard_pid;
static int db_counter;

/* ---- server lifecycle ---- */

/* A port nothing listens on right now: bind port 0 and ask which one. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* Runs argv (no shell) and returns its exit status, -1 if it did not run. */
static int run(const char *const argv[])
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0)
            dup2(null, STDIN_FILENO);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

/* Stops the server and removes its directory: safe to call twice. */
static void srv_cleanup_now(void)
{
    if (!srv_dir[0])
        return;
    const char *stop[] = {"bash", srv_script, "stop", srv_dir, NULL};
    run(stop);
    nftw(srv_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Forks the process that cleans up after us should we die first. It waits
 * for EOF on a pipe only we hold: a byte means "done already", EOF without
 * one means we are gone. Its own session and ignored signals keep it alive
 * through a Ctrl-C or a kill of our process group. */
static void srv_start_guardian(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[1]);
        setsid();
        signal(SIGINT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        char c;
        ssize_t n;
        do
            n = read(p[0], &c, 1);
        while (n < 0 && errno == EINTR);
        if (n == 0)
            srv_cleanup_now();
        _exit(0);
    }
    close(p[0]);
    if (pid < 0) {
        close(p[1]);
        return;
    }
    srv_guard_fd = p[1];
    srv_guard_pid = pid;
}

static void srv_stop(void)
{
    srv_cleanup_now();
    srv_dir[0] = '\0';
    srv_running = 0;
    if (srv_guard_fd >= 0) {
        ssize_t n = write(srv_guard_fd, "x", 1);
        (void)n;
        close(srv_guard_fd);
        srv_guard_fd = -1;
        waitpid(srv_guard_pid, NULL, 0);
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int srv_start(void **state)
{
    double t0 = now_s();
    snprintf(srv_dir, sizeof srv_dir, "/tmp/parley-mariadb-XXXXXX");
    if (!mkdtemp(srv_dir)) {
        perror("mkdtemp");
        srv_dir[0] = '\0';
        return -1;
    }
    atexit(srv_stop);
    srv_start_guardian();
    srv_port = free_port();
    char port[16];
    snprintf(port, sizeof port, "%d", srv_port);
    const char *start[] = {"bash", srv_script, "mariadb", srv_dir, port, NULL};
    if (srv_port <= 0 || run(start) != 0) {
        fprintf(stderr, "cannot start MariaDB with %s in %s\n", srv_script, srv_dir);
        return -1;
    }
    srv_running = 1;
    fprintf(stderr, "MariaDB on 127.0.0.1:%d (%s), up in %.1f s\n", srv_port, srv_dir,
            now_s() - t0);
    return 0;
}

static int srv_teardown(void **state)
{
    srv_stop();
    return 0;
}

/* ---- backend for the suite ---- */

/* A plain client connection as the test user, to the server or one
 * database. The test's own queries are fixed text: no data is spliced in
 * but database names this program generates. */
static MYSQL *raw_connect(const char *db)
{
    MYSQL *m = mysql_init(NULL);
    if (m &&
        !mysql_real_connect(m, "127.0.0.1", "parley", "parley", db, (unsigned)srv_port, NULL, 0)) {
        fprintf(stderr, "raw connect: %s\n", mysql_error(m));
        mysql_close(m);
        return NULL;
    }
    return m;
}

static const char *db_of(const char *uri)
{
    const char *slash = strrchr(uri, '/');
    return slash ? slash + 1 : uri;
}

static int raw_exec(const char *db, const char *sql)
{
    MYSQL *m = raw_connect(db);
    if (!m)
        return -1;
    int rc = mysql_query(m, sql);
    if (rc)
        fprintf(stderr, "%s: %s\n", sql, mysql_error(m));
    mysql_close(m);
    return rc ? -1 : 0;
}

static int mariadb_create(char *uri, size_t cap)
{
    char sql[128];
    int n = ++db_counter;
    snprintf(sql, sizeof sql, "CREATE DATABASE parley_t%d", n);
    if (raw_exec(NULL, sql) != 0)
        return -1;
    snprintf(uri, cap, "mariadb://parley:parley@127.0.0.1:%d/parley_t%d", srv_port, n);
    return 0;
}

static void mariadb_destroy(const char *uri)
{
    char sql[128];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", db_of(uri));
    raw_exec(NULL, sql);
}

static long long mariadb_raw_int(const char *uri, const char *sql)
{
    long long v = -1;
    MYSQL *m = raw_connect(db_of(uri));
    if (!m)
        return -1;
    if (mysql_query(m, sql) == 0) {
        MYSQL_RES *r = mysql_store_result(m);
        MYSQL_ROW row = r ? mysql_fetch_row(r) : NULL;
        if (row && row[0])
            v = strtoll(row[0], NULL, 10);
        mysql_free_result(r);
    } else {
        fprintf(stderr, "%s: %s\n", sql, mysql_error(m));
    }
    mysql_close(m);
    return v;
}

static int mariadb_raw_exec(const char *uri, const char *sql)
{
    return raw_exec(db_of(uri), sql);
}

/* Undoes mariadb.c's steps 6 -> 7, 5 -> 6 and 4 -> 5. */
static const char *const mariadb_to_v4[] = {
    "DROP TABLE msg_files",
    "DROP TABLE uploads",
    "DROP TABLE files",
    "ALTER TABLE users DROP COLUMN banned",
    "ALTER TABLE sessions DROP INDEX sessions_last_used",
    "ALTER TABLE sessions DROP COLUMN last_used",
    "ALTER TABLE members ADD INDEX members_by_user (user_id)",
    "ALTER TABLE members DROP INDEX members_by_user_role",
    "DELETE FROM schema_version WHERE version > 4",
    NULL,
};

static const store_suite_backend mariadb_backend = {
    .name = "mariadb",
    .create = mariadb_create,
    .destroy = mariadb_destroy,
    .raw_int = mariadb_raw_int,
    .schema_version_sql = "SELECT MAX(version) FROM schema_version",
    .schema_version = 7,
    .raw_exec = mariadb_raw_exec,
    .to_v4 = mariadb_to_v4,
    /* INNODB_TRX needs the PROCESS privilege; the user's own threads are
     * visible. A store write still executing is one waiting for a lock. */
    .lock_waits_sql = "SELECT count(*) FROM information_schema.PROCESSLIST"
                      " WHERE DB = DATABASE() AND ID <> CONNECTION_ID() AND COMMAND = 'Execute'"
                      " AND (INFO LIKE 'INSERT INTO messages%' OR INFO LIKE 'UPDATE convs%')",
};

/* ---- MariaDB only ---- */

static void open_fails(const char *uri, const char *want, const char *secret)
{
    char err[512] = "";
    store *st = store_open(uri, err, sizeof err);
    if (st) {
        store_close(st);
        fail_msg("store_open(%s) succeeded", uri);
    }
    if (!strstr(err, want))
        fail_msg("store_open: \"%s\" does not say \"%s\"", err, want);
    if (secret)
        assert_null(strstr(err, secret));
}

static void test_mariadb_open_errors(void **state)
{
    char uri[256], want[128];
    /* Nobody listening: a clear message, and quickly. */
    int port = free_port();
    snprintf(uri, sizeof uri, "mariadb://parley:parley@127.0.0.1:%d/parley", port);
    snprintf(want, sizeof want, "cannot connect to MariaDB at 127.0.0.1:%d: ", port);
    double t0 = now_s();
    open_fails(uri, want, NULL);
    assert_true(now_s() - t0 < 5.0);

    snprintf(uri, sizeof uri, "mariadb://parley:wr0ng-s3cret@127.0.0.1:%d/parley", srv_port);
    snprintf(want, sizeof want, "cannot connect to MariaDB at 127.0.0.1:%d: ", srv_port);
    open_fails(uri, want, "wr0ng-s3cret");
    open_fails(uri, "Access denied", "wr0ng-s3cret");
    snprintf(uri, sizeof uri, "mariadb://parley:parley@127.0.0.1:%d/parley_missing", srv_port);
    open_fails(uri, "parley_missing", NULL);
    snprintf(uri, sizeof uri, "mariadb://parley:s3cret@127.0.0.1:%d/parley?socket=", srv_port);
    open_fails(uri, "bad MariaDB URI", "s3cret");
}

/* The unix socket form, with an escaped path, reaches the same database. */
static void test_mariadb_socket(void **state)
{
    store_fixture *f = *state;
    uint64_t id = mkuser(f->st, "alice");
    char path[256], escaped[512], uri[1200];
    snprintf(path, sizeof path, "%s/mysqld.sock", srv_dir);
    size_t o = 0;
    for (const char *c = path; *c && o + 4 < sizeof escaped; c++) {
        if (*c == '/')
            o += (size_t)snprintf(escaped + o, sizeof escaped - o, "%%2F");
        else
            escaped[o++] = *c;
    }
    escaped[o] = '\0';
    /* No password: user parley has one, so this must fail first. */
    snprintf(uri, sizeof uri, "mariadb://parley@localhost/%s?socket=%s", db_of(f->uri), escaped);
    open_fails(uri, "cannot connect to MariaDB at unix socket ", NULL);
    snprintf(uri, sizeof uri, "mariadb://parley:parley@localhost/%s?socket=%s", db_of(f->uri),
             escaped);
    store *st = store_suite_open(uri);
    store_user u;
    assert_int_equal(store_user_by_name(st, "alice", &u), STORE_OK);
    assert_int_equal(u.id, id);
    store_close(st);
}

/* What version 2 added, a nullable ref and the unique (sender, ref) key,
 * version 3, the trigger that takes the next seq, version 4, messages
 * without the index on sender alone, version 5, sessions' last_used
 * with its index and members_by_user with role, version 6, users.banned, and
 * version 7, the file tables. */
static void assert_schema_latest(const char *u)
{
    assert_int_equal(raw_int(u, "SELECT MAX(version) FROM schema_version"), 7);
    assert_int_equal(raw_int(u, "SELECT count(*) FROM schema_version"), 7);
    assert_int_equal(raw_int(u, "SELECT count(*) FROM information_schema.COLUMNS"
                                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'users'"
                                " AND COLUMN_NAME = 'banned' AND IS_NULLABLE = 'NO'"),
                     1);
    assert_int_equal(raw_int(u, "SELECT count(*) FROM information_schema.COLUMNS"
                                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'sessions'"
                                " AND COLUMN_NAME = 'last_used' AND IS_NULLABLE = 'NO'"
                                " AND DATA_TYPE = 'bigint'"),
                     1);
    assert_int_equal(raw_int(u, "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX)"
                                " = 'last_used' FROM information_schema.STATISTICS"
                                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'sessions'"
                                " AND INDEX_NAME = 'sessions_last_used'"),
                     1);
    assert_int_equal(raw_int(u, "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX)"
                                " = 'user_id' FROM information_schema.STATISTICS"
                                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'sessions'"
                                " AND INDEX_NAME = 'sessions_user'"),
                     1);
    assert_int_equal(raw_int(u, "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX)"
                                " = 'user_id,role' FROM information_schema.STATISTICS"
                                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'members'"
                                " AND INDEX_NAME = 'members_by_user_role'"),
                     1);
    assert_int_equal(raw_int(u, "SELECT count(*) FROM information_schema.STATISTICS"
                                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'members'"
                                " AND INDEX_NAME = 'members_by_user'"),
                     0);
    assert_int_equal(raw_int(u, "SELECT count(*) FROM information_schema.STATISTICS"
                                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'messages'"
                                " AND INDEX_NAME = 'messages_sender'"),
                     0);
    assert_int_equal(raw_int(u,
                             "SELECT count(*) FROM information_schema.TRIGGERS"
                             " WHERE TRIGGER_SCHEMA = DATABASE()"
                             " AND TRIGGER_NAME = 'messages_next_seq'"
                             " AND EVENT_OBJECT_TABLE = 'messages' AND ACTION_TIMING = 'BEFORE'"),
                     1);
    assert_int_equal(raw_int(u, "SELECT count(*) FROM information_schema.COLUMNS"
                                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'messages'"
                                " AND COLUMN_NAME = 'ref' AND IS_NULLABLE = 'YES'"
                                " AND DATA_TYPE = 'bigint' AND COLUMN_TYPE LIKE '%unsigned'"),
                     1);
    assert_int_equal(raw_int(u, "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX)"
                                " = 'sender,ref' FROM information_schema.STATISTICS"
                                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'messages'"
                                " AND INDEX_NAME = 'messages_sender_ref' AND NON_UNIQUE = 0"),
                     1);
}

/* The schema as the server has it: engine, collations, keys, version. */
static void test_mariadb_schema(void **state)
{
    store_fixture *f = *state;
    const char *u = f->uri;
    assert_int_equal(raw_int(u, "SELECT count(*) FROM information_schema.TABLES"
                                " WHERE TABLE_SCHEMA = DATABASE()"),
                     8);
    assert_int_equal(raw_int(u, "SELECT count(*) FROM information_schema.TABLES"
                                " WHERE TABLE_SCHEMA = DATABASE() AND ENGINE <> 'InnoDB'"),
                     0);
    /* Every text column compares exactly. */
    assert_int_equal(raw_int(u, "SELECT count(*) FROM information_schema.COLUMNS"
                                " WHERE TABLE_SCHEMA = DATABASE() AND COLLATION_NAME IS NOT NULL"
                                " AND COLLATION_NAME <> 'utf8mb4_nopad_bin'"),
                     0);
    assert_int_equal(raw_int(u, "SELECT count(*) FROM information_schema.COLUMNS"
                                " WHERE TABLE_SCHEMA = DATABASE()"
                                " AND COLLATION_NAME = 'utf8mb4_nopad_bin'"),
                     4); /* users.name, users.pwhash, groups_.name, groups_.description */
    assert_int_equal(raw_int(u, "SELECT count(*) FROM information_schema.REFERENTIAL_CONSTRAINTS"
                                " WHERE CONSTRAINT_SCHEMA = DATABASE()"),
                     11);
    /* The keys pending and history walk. */
    assert_int_equal(raw_int(u, "SELECT count(*) FROM information_schema.STATISTICS"
                                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'messages'"
                                " AND INDEX_NAME = 'messages_conv_seq' AND NON_UNIQUE = 0"),
                     2);
    assert_schema_latest(u);
    /* Opening again neither migrates nor duplicates anything. */
    store_close(store_suite_open(u));
    assert_int_equal(raw_int(u, "SELECT count(*) FROM schema_version"),
                     mariadb_backend.schema_version);
}

/* Takes a database back to version 1: what version 2 added, removed. */
static void downgrade_to_v1(const char *uri, int drop_column, int drop_index)
{
    const char *db = db_of(uri);
    assert_int_equal(raw_exec(db, "DROP TRIGGER IF EXISTS messages_next_seq"), 0);
    /* Before messages_sender_ref goes: the sender's foreign key needs one. */
    assert_int_equal(
        raw_exec(db, "ALTER TABLE messages ADD INDEX IF NOT EXISTS messages_sender (sender)"), 0);
    if (drop_index)
        assert_int_equal(raw_exec(db, "ALTER TABLE messages DROP INDEX messages_sender_ref"), 0);
    if (drop_column)
        assert_int_equal(raw_exec(db, "ALTER TABLE messages DROP COLUMN ref"), 0);
    assert_int_equal(raw_exec(db, "DELETE FROM schema_version WHERE version > 1"), 0);
    assert_int_equal(raw_int(uri, "SELECT MAX(version) FROM schema_version"), 1);
}

/* A version 1 database is migrated on open and keeps its rows; the step also
 * runs again over a migration cut short (column added, index or version
 * record missing). */
static void test_mariadb_migrate_v1(void **state)
{
    store_fixture *f = *state;
    const char *u = f->uri;
    uint64_t a = mkuser(f->st, "alice"), b = mkuser(f->st, "bob");
    uint64_t ab;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    uint64_t old1 = append(f->st, ab, a, "old one");
    append(f->st, ab, b, "old two");
    store_close(f->st);
    f->st = NULL;

    downgrade_to_v1(u, 1, 1);
    assert_int_equal(raw_int(u, "SELECT count(*) FROM information_schema.COLUMNS"
                                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'messages'"
                                " AND COLUMN_NAME = 'ref'"),
                     0);
    f->st = store_suite_open(u);
    assert_schema_latest(u);
    assert_int_equal(raw_int(u, "SELECT count(*) FROM messages WHERE ref IS NULL"), 2);
    store_msg m;
    assert_int_equal(store_message_get(f->st, old1, &m), STORE_OK);
    assert_int_equal(m.seq, 1);
    assert_int_equal(m.to, b);
    assert_memory_equal(m.body, "old one", 7);
    msgs h = {0};
    assert_int_equal(store_history(f->st, ab, 0, 10, on_msg, &h), STORE_OK);
    assert_int_equal(h.n, 2);
    assert_string_equal(h.body[1], "old two");
    store_msg r = append_ref(f->st, ab, a, 5, "with ref", 1);
    assert_int_equal(r.existed, 0);
    assert_int_equal(r.seq, 3);

    /* Cut short after both statements, before the version was recorded. */
    store_close(f->st);
    f->st = NULL;
    downgrade_to_v1(u, 0, 0);
    f->st = store_suite_open(u);
    assert_schema_latest(u);
    store_msg again = append_ref(f->st, ab, a, 5, "again", 2);
    assert_same_msg(&again, &r, "with ref");

    /* Cut short after the column. */
    store_close(f->st);
    f->st = NULL;
    downgrade_to_v1(u, 0, 1);
    f->st = store_suite_open(u);
    assert_schema_latest(u);
    again = append_ref(f->st, ab, a, 5, "again", 3);
    assert_same_msg(&again, &r, "with ref");
    assert_int_equal(raw_int(u, "SELECT count(*) FROM messages"), 3);
    assert_seqs_gap_free(u);
}

/* Step 4 -> 5 cut short runs again: after the column and its values (no
 * index yet, no version record), and after everything but the record. Rows
 * already in use keep their last_used. */
static void test_mariadb_migrate_v4_again(void **state)
{
    store_fixture *f = *state;
    const char *u = f->uri;
    const char *db = db_of(u);
    uint64_t a = mkuser(f->st, "alice"), who;
    store_group g;
    assert_int_equal(store_group_create(f->st, "g", "", a, 1, &g), STORE_OK);
    uint8_t t[32] = {7};
    assert_int_equal(store_session_create(f->st, t, a, 1000, 32), STORE_OK);
    assert_int_equal(store_session_user(f->st, t, 100000, 0, &who), STORE_OK);
    store_close(f->st);
    f->st = NULL;

    assert_int_equal(raw_exec(db, "ALTER TABLE sessions DROP INDEX sessions_last_used"), 0);
    assert_int_equal(raw_exec(db, "ALTER TABLE members ADD INDEX members_by_user (user_id)"), 0);
    assert_int_equal(raw_exec(db, "ALTER TABLE members DROP INDEX members_by_user_role"), 0);
    assert_int_equal(raw_exec(db, "DELETE FROM schema_version WHERE version > 4"), 0);
    f->st = store_suite_open(u);
    assert_schema_latest(u);
    assert_int_equal(raw_int(u, "SELECT last_used FROM sessions"), 100000);
    store_close(f->st);
    f->st = NULL;

    assert_int_equal(raw_exec(db, "DELETE FROM schema_version WHERE version > 4"), 0);
    f->st = store_suite_open(u);
    assert_schema_latest(u);
    assert_int_equal(raw_int(u, "SELECT last_used FROM sessions"), 100000);
    assert_int_equal(store_session_user(f->st, t, 100000 + 1000, 1000, &who), STORE_OK);
    assert_int_equal(who, a);
    uint64_t n = 0;
    assert_int_equal(store_user_group_count(f->st, a, &n), STORE_OK);
    assert_int_equal(n, 1);
}

/* One side of a deadlock: a handle of its own, on its own thread. */
typedef struct {
    const char *uri;
    uint64_t sender, first, second; /* appends to first, then to second */
    pthread_barrier_t *locked;      /* both hold their first row lock */
    int delay_ms;                   /* before asking for the second */
    store_status first_ret, second_ret;
    store_status commit_ret, savepoint_ret, write_ret, rollback_ret, retry_ret;
    int lost_begun, lost, dead, lost_after_commit, lost_after_rollback;
    char err[512];
    char lost_err[512];
} dl_side;

static void *dl_thread(void *arg)
{
    dl_side *s = arg;
    store *st = store_open(s->uri, s->err, sizeof s->err);
    if (!st) {
        pthread_barrier_wait(s->locked);
        s->first_ret = STORE_ERROR;
        return NULL;
    }
    store_msg m;
    store_begin(st);
    s->lost_begun = store_txn_lost(st);
    s->first_ret = store_message_append(st, s->first, s->sender, 0, "1", 1, 1, &m);
    pthread_barrier_wait(s->locked);
    usleep((useconds_t)s->delay_ms * 1000);
    s->second_ret = store_message_append(st, s->second, s->sender, 0, "2", 1, 1, &m);
    snprintf(s->err, sizeof s->err, "%s", store_errmsg(st));
    s->lost = store_txn_lost(st);
    s->dead = store_is_dead(st);
    if (s->second_ret == STORE_OK) {
        s->commit_ret = store_commit(st);
        s->lost_after_commit = store_txn_lost(st);
    } else {
        /* The server undid the whole transaction: nothing may pretend to
         * go on with it, and nothing may slip out in autocommit. */
        s->commit_ret = store_commit(st);
        s->lost_after_commit = store_txn_lost(st);
        snprintf(s->lost_err, sizeof s->lost_err, "%s", store_errmsg(st));
        s->savepoint_ret = store_savepoint(st);
        uint64_t id;
        s->write_ret = store_user_create(st, "sneaky", "h", 1, &id);
        s->rollback_ret = store_rollback(st);
        s->lost_after_rollback = store_txn_lost(st);
        /* The caller's retry works on the same handle. */
        s->retry_ret = store_message_append(st, s->second, s->sender, 0, "retry", 5, 1, &m);
    }
    store_close(st);
    return NULL;
}

static void test_mariadb_deadlock(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice"), b = mkuser(f->st, "bob"), c = mkuser(f->st, "carol");
    uint64_t ab, ac;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    assert_int_equal(store_direct_conv(f->st, a, c, &ac), STORE_OK);

    pthread_barrier_t locked;
    pthread_barrier_init(&locked, NULL, 2);
    /* Opposite orders: each waits for the other's conversation row. */
    dl_side s[2] = {
        {.uri = f->uri, .sender = a, .first = ab, .second = ac, .locked = &locked},
        {.uri = f->uri, .sender = a, .first = ac, .second = ab, .locked = &locked, .delay_ms = 300},
    };
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, dl_thread, &s[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&locked);

    for (int i = 0; i < 2; i++) {
        if (s[i].first_ret != STORE_OK)
            fail_msg("side %d: first append: %s", i, s[i].err);
    }
    int loser = s[0].second_ret == STORE_OK ? 1 : 0, winner = 1 - loser;
    assert_int_equal(s[winner].second_ret, STORE_OK);
    assert_int_equal(s[winner].commit_ret, STORE_OK);
    assert_int_equal(s[loser].second_ret, STORE_ERROR);
    if (!strstr(s[loser].err, "deadlock"))
        fail_msg("loser says: %s", s[loser].err);
    assert_int_equal(s[loser].commit_ret, STORE_ERROR);
    if (!strstr(s[loser].lost_err, "roll back and retry"))
        fail_msg("commit after deadlock says: %s", s[loser].lost_err);
    assert_int_equal(s[loser].savepoint_ret, STORE_ERROR);
    assert_int_equal(s[loser].write_ret, STORE_ERROR);
    assert_int_equal(s[loser].rollback_ret, STORE_OK);
    assert_int_equal(s[loser].retry_ret, STORE_OK);
    /* The runtime's signals: the loser must run its transaction again, up to
     * its rollback; nobody's connection is dead. */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(s[i].lost_begun, 0);
        assert_int_equal(s[i].dead, 0);
    }
    assert_int_equal(s[winner].lost, 0);
    assert_int_equal(s[winner].lost_after_commit, 0);
    assert_int_equal(s[loser].lost, 1);
    assert_int_equal(s[loser].lost_after_commit, 1);
    assert_int_equal(s[loser].lost_after_rollback, 0);

    /* Winner: 2 messages; loser: only its retry. Seqs stay gap-free. */
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM messages"), 3);
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM users WHERE name = 'sneaky'"), 0);
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM convs c WHERE last_seq <>"
                                     " (SELECT count(*) FROM messages m WHERE m.conv_id = c.id)"),
                     0);
    assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM messages m JOIN convs c"
                                     " ON c.id = m.conv_id WHERE m.seq > c.last_seq"),
                     0);
}

/* Reconnecting is off: a killed connection fails every later call with a
 * clear message, and the open transaction cannot be committed. */
static void test_mariadb_connection_lost(void **state)
{
    store_fixture *f = *state;
    store *st = store_suite_open(f->uri);
    assert_int_equal(store_begin(st), STORE_OK);
    mkuser(st, "doomed");
    assert_int_equal(store_is_dead(st), 0);
    assert_int_equal(store_txn_lost(st), 0);
    /* The handle's connection is the other one on this database. */
    char sql[768];
    snprintf(sql, sizeof sql,
             "SELECT max(ID) FROM information_schema.PROCESSLIST WHERE DB = '%s'"
             " AND ID <> CONNECTION_ID()",
             db_of(f->uri));
    long long victim = raw_int(f->uri, sql);
    assert_true(victim > 0);
    snprintf(sql, sizeof sql, "KILL CONNECTION %lld", victim);
    /* f->st holds another connection: kill the newest, st's. */
    assert_int_equal(raw_exec(NULL, sql), 0);
    uint64_t id;
    assert_int_equal(store_user_create(st, "after", "h", 1, &id), STORE_ERROR);
    if (!strstr(store_errmsg(st), "lost"))
        fail_msg("after kill: %s", store_errmsg(st));
    assert_int_equal(store_is_dead(st), 1);
    assert_int_equal(store_txn_lost(st), 1);
    assert_int_equal(store_commit(st), STORE_ERROR);
    store_rollback(st);
    /* The transaction is over; the connection stays dead. */
    assert_int_equal(store_txn_lost(st), 0);
    assert_int_equal(store_is_dead(st), 1);
    store_user u;
    assert_int_equal(store_user_by_name(st, "doomed", &u), STORE_ERROR);
    if (!strstr(store_errmsg(st), "reopen"))
        fail_msg("dead handle: %s", store_errmsg(st));
    store_close(st);
    /* Nothing of the killed transaction was kept; the other handle is fine. */
    assert_int_equal(store_user_by_name(f->st, "doomed", &u), STORE_NOT_FOUND);
    mkuser(f->st, "survivor");
}

/* A lock wait timeout (the store's session waits 10 s). With
 * innodb_rollback_on_timeout off, the server's default, only the statement is
 * undone: the transaction goes on and is not lost. With it on, the server
 * undoes the whole transaction and store_txn_lost says so. */
static void test_mariadb_lock_wait_timeout(void **state)
{
    store_fixture *f = *state;
    uint64_t a = mkuser(f->st, "alice"), b = mkuser(f->st, "bob"), c = mkuser(f->st, "carol");
    uint64_t ab, ac;
    assert_int_equal(store_direct_conv(f->st, a, b, &ab), STORE_OK);
    assert_int_equal(store_direct_conv(f->st, a, c, &ac), STORE_OK);
    long long undoes = raw_int(f->uri, "SELECT @@innodb_rollback_on_timeout");
    assert_true(undoes == 0 || undoes == 1);

    /* Another connection holds the row lock of ab. */
    MYSQL *holder = raw_connect(db_of(f->uri));
    assert_non_null(holder);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT last_seq FROM convs WHERE id = %llu FOR UPDATE",
             (unsigned long long)ab);
    assert_int_equal(mysql_query(holder, "START TRANSACTION"), 0);
    assert_int_equal(mysql_query(holder, sql), 0);
    mysql_free_result(mysql_store_result(holder));

    assert_int_equal(store_begin(f->st), STORE_OK);
    store_msg m = append_ref(f->st, ac, a, 0, "before", 1);
    assert_int_equal(m.seq, 1);
    store_status blocked = store_message_append(f->st, ab, a, 0, "blocked", 7, 2, &m);
    char why[512];
    snprintf(why, sizeof why, "%s", store_errmsg(f->st));
    mysql_query(holder, "ROLLBACK");
    mysql_close(holder);
    assert_int_equal(blocked, STORE_ERROR);
    if (!strstr(why, "lock wait timeout"))
        fail_msg("blocked append says: %s", why);
    assert_int_equal(store_is_dead(f->st), 0);
    if (!undoes) {
        assert_int_equal(store_txn_lost(f->st), 0);
        /* Alive: the first append stays and the retried one goes through. */
        m = append_ref(f->st, ab, a, 0, "after", 3);
        assert_int_equal(m.seq, 1);
        assert_int_equal(store_commit(f->st), STORE_OK);
        assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM messages"), 2);
    } else {
        assert_int_equal(store_txn_lost(f->st), 1);
        assert_int_equal(store_commit(f->st), STORE_ERROR);
        assert_int_equal(store_rollback(f->st), STORE_OK);
        assert_int_equal(store_txn_lost(f->st), 0);
        assert_int_equal(raw_int(f->uri, "SELECT count(*) FROM messages"), 0);
    }
    assert_seqs_gap_free(f->uri);
}

int main(void)
{
    store_suite = &mariadb_backend;
    const struct CMUnitTest tests[] = {
        STORE_SUITE_TESTS,
        cmocka_unit_test(test_mariadb_open_errors),
        STORE_SUITE_T(test_mariadb_socket),
        STORE_SUITE_T(test_mariadb_schema),
        STORE_SUITE_T(test_mariadb_deadlock),
        STORE_SUITE_T(test_mariadb_connection_lost),
        STORE_SUITE_T(test_mariadb_migrate_v1),
        STORE_SUITE_T(test_mariadb_migrate_v4_again),
        STORE_SUITE_T(test_mariadb_lock_wait_timeout),
    };
    return cmocka_run_group_tests_name("store on MariaDB", tests, srv_start, srv_teardown);
}
