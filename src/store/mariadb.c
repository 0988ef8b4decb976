/*
 * store on MariaDB (the "mariadb://" backend behind store_impl.h's ops),
 * through libmariadb's prepared statements only: every value travels as a
 * bound parameter and no SQL text is ever built from data.
 *
 *   mariadb://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?OPTION&...]
 *
 * with the options socket=PATH (a unix socket instead of TCP), tls=require
 * (TLS 1.2 or 1.3, or no connection), tls-ca=PATH (as tls=require, and the
 * server's certificate must chain to the CA certificates in PATH and name
 * HOST) and password-file=PATH (the password is the first line of PATH, a
 * file only its owner may read; read at each connect, never kept).
 *
 * One handle is one connection, used by one thread at a time. Statements are
 * prepared on first use and kept for the life of the handle (lazily, because
 * the server caps prepared statements over all connections together).
 *
 * Threads: the client library is set up once per process (pthread_once) and
 * mysql_thread_init/mysql_thread_end bracket each thread's use of it. A
 * handle counts itself on the thread that opened it: the first handle of a
 * thread calls mysql_thread_init, the last one closed there calls
 * mysql_thread_end. So open and close a handle on the same thread, as the
 * service runtime does (worker_init / worker_fini on the worker thread).
 *
 * Transactions run at READ COMMITTED: statements that read one table to
 * write another (the join cursor, the ack cap) then take no shared locks,
 * which would otherwise turn two batches touching one conversation into
 * deadlocks. Each conversation's seq is serialised by the row lock on its
 * convs row (message_append). A deadlock makes MariaDB roll back the whole
 * transaction; the handle remembers that, and every call up to
 * store_rollback fails, so a later store_commit cannot report work that
 * was undone as saved.
 *
 * Results are buffered on the client (mysql_stmt_store_result) before the
 * first callback; callbacks must still not call back into the same handle,
 * whose column buffers hold the current row.
 */
#include "store/store_impl.h"

#include "common/log.h"
#include "common/secret.h"
#include "store/cache.h"

#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    MDB_DEFAULT_PORT = 3306,
    MDB_CONNECT_TIMEOUT_S = 5,
    MDB_IO_TIMEOUT_S = 30,
    MDB_SCHEMA_LOCK_WAIT_S = 20, /* below the I/O timeout: fail, not drop */
    MDB_ARGS_MAX = 8,
    /* Rows per multi-row INSERT or ack UPDATE: every size from 2 to the
     * largest is prepared (on first use), so a batch of up to MDB_MANY_MAX
     * is one statement. With a few sizes a batch took up to five, and at a
     * steady load statements, not rows, are what the database spends on. */
    MDB_MANY_MAX = 32,
    MDB_MANY_SIZES = MDB_MANY_MAX - 1,
    MDB_COLS_MAX = 12,
    MDB_COL_INITIAL = 256,
};

#define MDB_TABLE " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin"

/* Schema migrations: step i takes schema_version from i to i + 1, one
 * statement per entry. Each statement must be safe to run twice (a migration
 * that died half-way runs again). Append new steps; never edit one that has
 * shipped.
 *
 * Against sqlite.c: ids are BIGINT UNSIGNED AUTO_INCREMENT (never reused,
 * like AUTOINCREMENT); text is utf8mb4 with the NO PAD binary collation, so
 * names compare byte for byte ("a" and "a " differ, as in SQLite; the plain
 * utf8mb4_bin collation would call them equal); InnoDB for transactions and
 * foreign keys; foreign key columns get the index InnoDB requires. */
static const char *const mdb_schema_v1[] = {
    "CREATE TABLE IF NOT EXISTS users ("
    " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " name VARCHAR(128) NOT NULL,"
    " pwhash VARCHAR(160) NOT NULL,"
    " created_ms BIGINT NOT NULL,"
    " UNIQUE KEY users_name (name))" MDB_TABLE,
    "CREATE TABLE IF NOT EXISTS sessions ("
    " token_hash BINARY(32) NOT NULL PRIMARY KEY,"
    " user_id BIGINT UNSIGNED NOT NULL,"
    " created_ms BIGINT NOT NULL,"
    " KEY sessions_user (user_id),"
    " CONSTRAINT sessions_user_fk FOREIGN KEY (user_id) REFERENCES users (id))" MDB_TABLE,
    "CREATE TABLE IF NOT EXISTS friends ("
    " user_id BIGINT UNSIGNED NOT NULL,"
    " friend_id BIGINT UNSIGNED NOT NULL,"
    " created_ms BIGINT NOT NULL,"
    " PRIMARY KEY (user_id, friend_id),"
    " KEY friends_friend (friend_id),"
    " CONSTRAINT friends_user_fk FOREIGN KEY (user_id) REFERENCES users (id),"
    " CONSTRAINT friends_friend_fk FOREIGN KEY (friend_id) REFERENCES users (id))" MDB_TABLE,
    "CREATE TABLE IF NOT EXISTS convs ("
    " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " kind TINYINT UNSIGNED NOT NULL,"
    " last_seq BIGINT UNSIGNED NOT NULL DEFAULT 0,"
    " user_lo BIGINT UNSIGNED NULL,"
    " user_hi BIGINT UNSIGNED NULL,"
    " UNIQUE KEY convs_pair (user_lo, user_hi),"
    " KEY convs_hi (user_hi),"
    " CONSTRAINT convs_lo_fk FOREIGN KEY (user_lo) REFERENCES users (id),"
    " CONSTRAINT convs_hi_fk FOREIGN KEY (user_hi) REFERENCES users (id))" MDB_TABLE,
    "CREATE TABLE IF NOT EXISTS groups_ ("
    " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " name VARCHAR(128) NOT NULL,"
    " description VARCHAR(800) NOT NULL,"
    " creator BIGINT UNSIGNED NOT NULL,"
    " conv_id BIGINT UNSIGNED NOT NULL,"
    " created_ms BIGINT NOT NULL,"
    " UNIQUE KEY groups_name (name),"
    " UNIQUE KEY groups_conv (conv_id),"
    " KEY groups_creator (creator),"
    " CONSTRAINT groups_creator_fk FOREIGN KEY (creator) REFERENCES users (id),"
    " CONSTRAINT groups_conv_fk FOREIGN KEY (conv_id) REFERENCES convs (id))" MDB_TABLE,
    "CREATE TABLE IF NOT EXISTS members ("
    " conv_id BIGINT UNSIGNED NOT NULL,"
    " user_id BIGINT UNSIGNED NOT NULL,"
    " role TINYINT UNSIGNED NOT NULL,"
    " acked_seq BIGINT UNSIGNED NOT NULL DEFAULT 0,"
    " joined_ms BIGINT NOT NULL,"
    " PRIMARY KEY (conv_id, user_id),"
    " KEY members_by_user (user_id),"
    " CONSTRAINT members_conv_fk FOREIGN KEY (conv_id) REFERENCES convs (id),"
    " CONSTRAINT members_user_fk FOREIGN KEY (user_id) REFERENCES users (id))" MDB_TABLE,
    "CREATE TABLE IF NOT EXISTS messages ("
    " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " conv_id BIGINT UNSIGNED NOT NULL,"
    " seq BIGINT UNSIGNED NOT NULL,"
    " sender BIGINT UNSIGNED NOT NULL,"
    " body MEDIUMBLOB NOT NULL,"
    " ts BIGINT NOT NULL,"
    " recalled TINYINT UNSIGNED NOT NULL DEFAULT 0,"
    " UNIQUE KEY messages_conv_seq (conv_id, seq),"
    " KEY messages_sender (sender),"
    " CONSTRAINT messages_conv_fk FOREIGN KEY (conv_id) REFERENCES convs (id),"
    " CONSTRAINT messages_sender_fk FOREIGN KEY (sender) REFERENCES users (id))" MDB_TABLE,
    NULL,
};

/* 1 -> 2: idempotent sends. ref is the sender's reference for a send, NULL
 * for none; the unique (sender, ref) key makes a pair name one message (NULLs
 * never collide) and finds it. IF NOT EXISTS makes each statement a no-op
 * the second time, should the step be cut short and run again. */
static const char *const mdb_schema_v2[] = {
    "ALTER TABLE messages ADD COLUMN IF NOT EXISTS ref BIGINT UNSIGNED NULL DEFAULT NULL",
    "ALTER TABLE messages ADD UNIQUE INDEX IF NOT EXISTS messages_sender_ref (sender, ref)",
    NULL,
};

/* 2 -> 3: a message inserted with seq 0 takes the next seq of its
 * conversation in the same statement: the trigger bumps last_seq (taking the
 * row lock the transaction keeps) and reads it back. One round trip per
 * send instead of two; a failed insert undoes the bump with itself. */
static const char *const mdb_schema_v3[] = {
    "CREATE TRIGGER IF NOT EXISTS messages_next_seq BEFORE INSERT ON messages FOR EACH ROW"
    " BEGIN"
    "  IF NEW.seq = 0 THEN"
    "   UPDATE convs SET last_seq = last_seq + 1 WHERE id = NEW.conv_id;"
    "   SET NEW.seq = COALESCE((SELECT last_seq FROM convs WHERE id = NEW.conv_id), 0);"
    "  END IF;"
    " END",
    NULL,
};

/* 3 -> 4: messages_sender is the leading column of messages_sender_ref,
 * which serves the sender's foreign key as well: one index write fewer per
 * message. */
static const char *const mdb_schema_v4[] = {
    "ALTER TABLE messages DROP INDEX IF EXISTS messages_sender",
    NULL,
};

/* 4 -> 5: sessions expire and are bounded per user. last_used is when a
 * session was last used; one from before starts at its created time, so it
 * gets the whole idle time from its login, not none. The UPDATE touches
 * only rows still at the default, so it can run again (every insert names
 * last_used). sessions_last_used serves the housekeeping sweep, oldest
 * first; sessions_user (user_id) already finds a user's sessions.
 * members_by_user gains role: a user's groups, whose roles are above
 * ROLE_NONE (0) unlike direct conversations', are then one range of it to
 * count; it still serves every lookup by user and the user foreign key, so
 * the old index goes, after the new one is there. */
static const char *const mdb_schema_v5[] = {
    "ALTER TABLE sessions ADD COLUMN IF NOT EXISTS last_used BIGINT NOT NULL DEFAULT 0",
    "UPDATE sessions SET last_used = created_ms WHERE last_used = 0",
    "ALTER TABLE sessions ADD INDEX IF NOT EXISTS sessions_last_used (last_used)",
    "ALTER TABLE members ADD INDEX IF NOT EXISTS members_by_user_role (user_id, role)",
    "ALTER TABLE members DROP INDEX IF EXISTS members_by_user",
    NULL,
};

/* 5 -> 6: an operator may suspend an account (parleyctl ban). */
static const char *const mdb_schema_v6[] = {
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS banned TINYINT UNSIGNED NOT NULL DEFAULT 0",
    NULL,
};

/* 6 -> 7: files (store.h, "files"). Contents by SHA-256 (the bytes live in
 * the message nodes' shared directory, docs/architecture.md); uploads in
 * progress or complete and not yet sent; the file of each message that
 * carries one, gone with its message (a group's deletion cascades). */
static const char *const mdb_schema_v7[] = {
    "CREATE TABLE IF NOT EXISTS files ("
    " sha256 BINARY(32) NOT NULL PRIMARY KEY,"
    " size BIGINT UNSIGNED NOT NULL,"
    " created_ms BIGINT NOT NULL)" MDB_TABLE,
    "CREATE TABLE IF NOT EXISTS uploads ("
    " id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " user_id BIGINT UNSIGNED NOT NULL,"
    " sha256 BINARY(32) NOT NULL,"
    " name VARCHAR(255) NOT NULL,"
    " type VARCHAR(127) NOT NULL,"
    " size BIGINT UNSIGNED NOT NULL,"
    " received BIGINT UNSIGNED NOT NULL,"
    " created_ms BIGINT NOT NULL,"
    " KEY uploads_by_user (user_id, sha256),"
    " KEY uploads_by_sha (sha256, received),"
    " KEY uploads_by_created (created_ms),"
    " CONSTRAINT uploads_user_fk FOREIGN KEY (user_id) REFERENCES users (id))" MDB_TABLE,
    "CREATE TABLE IF NOT EXISTS msg_files ("
    " msgid BIGINT UNSIGNED NOT NULL PRIMARY KEY,"
    " sender BIGINT UNSIGNED NOT NULL,"
    " sha256 BINARY(32) NOT NULL,"
    " name VARCHAR(255) NOT NULL,"
    " type VARCHAR(127) NOT NULL,"
    " size BIGINT UNSIGNED NOT NULL,"
    " KEY msg_files_by_sha (sha256),"
    " KEY msg_files_by_sender (sender),"
    " CONSTRAINT msg_files_msg_fk FOREIGN KEY (msgid) REFERENCES messages (id)"
    " ON DELETE CASCADE)" MDB_TABLE,
    NULL,
};

/* 7 -> 8: read cursors (Read), apart from the delivery cursor so that a
 * send's path never touches them. No foreign keys: a deleted group's rows
 * name a conversation id that is never reused. */
static const char *const mdb_schema_v8[] = {
    "CREATE TABLE IF NOT EXISTS read_cursors ("
    " user_id BIGINT UNSIGNED NOT NULL,"
    " conv_id BIGINT UNSIGNED NOT NULL,"
    " seq BIGINT UNSIGNED NOT NULL,"
    " PRIMARY KEY (user_id, conv_id))" MDB_TABLE,
    NULL,
};

static const char *const *const mdb_migrations[] = {mdb_schema_v1, mdb_schema_v2, mdb_schema_v3,
                                                    mdb_schema_v4, mdb_schema_v5, mdb_schema_v6,
                                                    mdb_schema_v7, mdb_schema_v8};

enum { MDB_SCHEMA_VERSION = sizeof mdb_migrations / sizeof mdb_migrations[0] };

static const char mdb_schema_table[] =
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INT UNSIGNED NOT NULL PRIMARY KEY,"
    " applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)" MDB_TABLE;

/* Per connection, before anything else. Strict mode makes a value that does
 * not fit an error instead of a silent truncation; NO_ENGINE_SUBSTITUTION
 * fails CREATE TABLE rather than fall back to an engine without
 * transactions. The lock wait stays below the client's read timeout, so a
 * long wait ends as a retryable error, not as a dropped connection. The
 * pending query recurses once per pending message of a conversation, and
 * past max_recursive_iterations (1000 by default) MariaDB cuts the result
 * short with only a warning. */
static const char *const mdb_session_sql[] = {
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION', SESSION autocommit = 1, SESSION innodb_lock_wait_timeout = 10,"
    " SESSION max_recursive_iterations = 4294967295",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    NULL,
};

/* Every message query yields these columns, in this order (mdb_msg_row). */
#define MDB_MSG_COLS                                                                               \
    "m.id AS id, m.conv_id AS conv_id, m.seq AS seq, m.sender AS sender, m.body AS body,"          \
    " m.ts AS ts, m.recalled AS recalled, c.kind AS kind, c.user_lo AS user_lo,"                   \
    " c.user_hi AS user_hi, COALESCE(g.id, 0) AS group_id"
#define MDB_MSG_TYPES "uuuutiiiuuu"
#define MDB_MSG_CONV                                                                               \
    " JOIN convs AS c ON c.id = m.conv_id LEFT JOIN groups_ AS g ON g.conv_id = m.conv_id"

enum {
    Q_BEGIN,
    Q_COMMIT,
    Q_ROLLBACK,
    Q_SAVEPOINT,
    Q_RELEASE,
    Q_ROLLBACK_TO,
    Q_OP_SAVEPOINT,
    Q_OP_RELEASE,
    Q_OP_ROLLBACK_TO,
    Q_ROLLBACK_ON_TIMEOUT,
    Q_SCHEMA_VERSION,
    Q_SCHEMA_LOCK,
    Q_SCHEMA_UNLOCK,
    Q_SCHEMA_SET,
    Q_USER_INSERT,
    Q_USER_BY_ID,
    Q_USER_BY_NAME,
    Q_SESSION_INSERT,
    Q_SESSION_TRIM,
    Q_SESSION_GET,
    Q_SESSION_TOUCH,
    Q_SESSION_DELETE,
    Q_SESSION_DELETE_USER,
    Q_SESSIONS_EXPIRE,
    Q_FRIEND_INSERT,
    Q_FRIEND_DELETE,
    Q_FRIEND_LIST,
    Q_FRIEND_COUNT,
    Q_USER_GROUP_COUNT,
    Q_GROUP_MEMBER_COUNT,
    Q_DIRECT_INSERT,
    Q_GROUP_CONV_INSERT,
    Q_CONV_EXISTS,
    Q_CONV_DELETE,
    Q_CONV_MEMBERS,
    Q_CONV_MEMBER_IDS,
    Q_DIRECT_FIND,
    Q_DIRECT_FIND_LOCKED,
    Q_MEMBER_INSERT,
    Q_GROUP_INSERT,
    Q_GROUP_GET,
    Q_GROUP_CONV,
    Q_GROUP_JOIN,
    Q_GROUP_QUIT,
    Q_GROUP_ROLE,
    Q_GROUP_DELETE,
    Q_CONV_DELETE_MEMBERS,
    Q_CONV_DELETE_MESSAGES,
    Q_USER_GROUPS,
    Q_CONV_ROUTE,
    Q_MSG_INSERT,
    Q_MSG_BY_REF,
    Q_MSG_GET,
    Q_MSG_RECALL,
    Q_HISTORY,
    Q_PENDING,
    Q_ACK,
    Q_ACK_STORED,
    Q_CONV_LAST_SEQ,
    Q_USERS_FIND,
    Q_USER_SESSIONS,
    Q_SESSION_COUNT,
    Q_USER_SET_BANNED,
    Q_USER_SET_PWHASH,
    Q_USER_TOMBSTONE,
    Q_UNLINK_FRIENDS,
    Q_UNLINK_GROUPS,
    Q_UNLINK_BODIES,
    Q_UNLINK_FILES,
    Q_UPLOAD_INSERT,
    Q_UPLOAD_GET,
    Q_UPLOAD_FIND,
    Q_UPLOAD_SET_RECEIVED,
    Q_UPLOAD_DELETE,
    Q_UPLOADS_EXPIRED,
    Q_FILE_USAGE,
    Q_FILE_GET,
    Q_FILE_PUT,
    Q_FILE_REFS,
    Q_FILE_DELETE,
    Q_FILES_AFTER,
    Q_MSG_FILE_INSERT,
    Q_MSG_FILE_GET,
    Q_MSG_FILE_DELETE,
    Q_MSG_FILES,
    Q_READ_GET,
    Q_READ_PUT,
    Q_UNREAD,
    Q_COUNT
};

/* args: one letter per '?' (mdb_bind_args); cols: one per result column
 * (mdb_bind_cols). Both are checked against the prepared statement. */
typedef struct {
    const char *sql;
    const char *args;
    const char *cols;
} mdb_query;

static const mdb_query mdb_sql[Q_COUNT] = {
    [Q_BEGIN] = {"START TRANSACTION", "", ""},
    [Q_COMMIT] = {"COMMIT", "", ""},
    [Q_ROLLBACK] = {"ROLLBACK", "", ""},
    /* The caller's savepoint: one level, one fixed name. */
    [Q_SAVEPOINT] = {"SAVEPOINT store_request", "", ""},
    [Q_RELEASE] = {"RELEASE SAVEPOINT store_request", "", ""},
    [Q_ROLLBACK_TO] = {"ROLLBACK TO SAVEPOINT store_request", "", ""},
    /* Makes one multi-statement call atomic inside the caller's transaction;
     * a distinct name so it nests inside store_request. */
    [Q_OP_SAVEPOINT] = {"SAVEPOINT store_op", "", ""},
    [Q_OP_RELEASE] = {"RELEASE SAVEPOINT store_op", "", ""},
    [Q_OP_ROLLBACK_TO] = {"ROLLBACK TO SAVEPOINT store_op", "", ""},
    [Q_ROLLBACK_ON_TIMEOUT] = {"SELECT @@innodb_rollback_on_timeout", "", "i"},

    [Q_SCHEMA_VERSION] = {"SELECT COALESCE(MAX(version), 0) FROM schema_version", "", "u"},
    /* Named after the database: other databases on the server migrate
     * independently. */
    [Q_SCHEMA_LOCK] = {"SELECT GET_LOCK(CONCAT('parley.schema.', DATABASE()), ?)", "d", "i"},
    [Q_SCHEMA_UNLOCK] = {"SELECT RELEASE_LOCK(CONCAT('parley.schema.', DATABASE()))", "", "i"},
    [Q_SCHEMA_SET] = {"INSERT INTO schema_version (version) VALUES (?)", "u", ""},

    [Q_USER_INSERT] = {"INSERT INTO users (name, pwhash, created_ms) VALUES (?, ?, ?)", "tti", ""},
    [Q_USER_BY_ID] = {"SELECT id, name, pwhash, created_ms, banned FROM users WHERE id = ?", "u",
                      "uttii"},
    [Q_USER_BY_NAME] = {"SELECT id, name, pwhash, created_ms, banned FROM users WHERE name = ?",
                        "t", "uttii"},

    [Q_SESSION_INSERT] = {"INSERT INTO sessions (token_hash, user_id, created_ms, last_used)"
                          " VALUES (?, ?, ?, ?)",
                          "huii", ""},
    /* MariaDB takes no LIMIT in an IN subquery, and a DELETE may not read
     * its own table there: the derived table, which a LIMIT keeps from
     * being merged, is read (sessions_user, a few rows sorted) before any
     * row goes. The token breaks ties, so one statement names one set. */
    [Q_SESSION_TRIM] = {"DELETE s FROM sessions AS s JOIN (SELECT token_hash FROM sessions"
                        " WHERE user_id = ? AND token_hash <> ?"
                        " ORDER BY last_used DESC, token_hash DESC"
                        " LIMIT 18446744073709551615 OFFSET ?) AS old"
                        " ON old.token_hash = s.token_hash",
                        "uhu", ""},
    [Q_SESSION_GET] = {"SELECT user_id, last_used FROM sessions WHERE token_hash = ?", "h", "ui"},
    [Q_SESSION_TOUCH] = {"UPDATE sessions SET last_used = ? WHERE token_hash = ? AND last_used < ?",
                         "ihi", ""},
    [Q_SESSION_DELETE] = {"DELETE FROM sessions WHERE token_hash = ? AND last_used < ?", "hi", ""},
    [Q_SESSION_DELETE_USER] = {"DELETE FROM sessions WHERE user_id = ?", "u", ""},
    /* The oldest first down sessions_last_used; at READ COMMITTED only the
     * rows deleted stay locked. */
    [Q_SESSIONS_EXPIRE] = {"DELETE FROM sessions WHERE last_used < ? ORDER BY last_used LIMIT ?",
                           "iu", ""},

    /* Both directions in one statement, so it is atomic on its own. */
    [Q_FRIEND_INSERT] = {"INSERT INTO friends (user_id, friend_id, created_ms)"
                         " VALUES (?, ?, ?), (?, ?, ?)",
                         "uuiuui", ""},
    [Q_FRIEND_DELETE] = {"DELETE FROM friends WHERE (user_id = ? AND friend_id = ?)"
                         " OR (user_id = ? AND friend_id = ?)",
                         "uuuu", ""},
    [Q_FRIEND_LIST] = {"SELECT u.id, u.name FROM friends AS f JOIN users AS u"
                       " ON u.id = f.friend_id WHERE f.user_id = ? ORDER BY f.friend_id",
                       "u", "ut"},
    /* Counts: each a range of one index. A group member's role is above
     * ROLE_NONE, a direct conversation's is ROLE_NONE. */
    [Q_FRIEND_COUNT] = {"SELECT COUNT(*) FROM friends WHERE user_id = ?", "u", "u"},
    [Q_USER_GROUP_COUNT] = {"SELECT COUNT(*) FROM members WHERE user_id = ? AND role > ?", "ud",
                            "u"},
    /* No row for no group: NOT_FOUND. */
    [Q_GROUP_MEMBER_COUNT] = {"SELECT (SELECT COUNT(*) FROM members WHERE conv_id = g.conv_id)"
                              " FROM groups_ AS g WHERE g.id = ?",
                              "u", "u"},

    [Q_DIRECT_INSERT] = {"INSERT INTO convs (kind, user_lo, user_hi) VALUES (?, ?, ?)", "duu", ""},
    [Q_GROUP_CONV_INSERT] = {"INSERT INTO convs (kind) VALUES (?)", "d", ""},
    [Q_CONV_EXISTS] = {"SELECT 1 FROM convs WHERE id = ?", "u", "i"},
    [Q_CONV_DELETE] = {"DELETE FROM convs WHERE id = ?", "u", ""},
    [Q_CONV_MEMBERS] = {"SELECT u.id, u.name, m.role FROM members AS m"
                        " JOIN users AS u ON u.id = m.user_id"
                        " WHERE m.conv_id = ? ORDER BY m.user_id",
                        "u", "uti"},
    /* The primary key's own order: one index range, no join. */
    [Q_CONV_MEMBER_IDS] = {"SELECT user_id FROM members WHERE conv_id = ? ORDER BY user_id", "u",
                           "u"},
    [Q_DIRECT_FIND] = {"SELECT id FROM convs WHERE user_lo = ? AND user_hi = ?", "uu", "u"},
    /* A locking read sees the newest committed row whatever the isolation
     * level: used after losing the race to create the pair. */
    [Q_DIRECT_FIND_LOCKED] = {"SELECT id FROM convs WHERE user_lo = ? AND user_hi = ?"
                              " LOCK IN SHARE MODE",
                              "uu", "u"},
    [Q_MEMBER_INSERT] = {"INSERT INTO members (conv_id, user_id, role, acked_seq, joined_ms)"
                         " VALUES (?, ?, ?, 0, ?)",
                         "uudi", ""},

    [Q_GROUP_INSERT] = {"INSERT INTO groups_ (name, description, creator, conv_id, created_ms)"
                        " VALUES (?, ?, ?, ?, ?)",
                        "ttuui", ""},
    [Q_GROUP_GET] = {"SELECT id, conv_id, creator, name, description FROM groups_ WHERE id = ?",
                     "u", "uuutt"},
    [Q_GROUP_CONV] = {"SELECT conv_id FROM groups_ WHERE id = ?", "u", "u"},
    /* Cursor at the group's last_seq as committed when the row is read. An
     * append still in flight then shows up as pending for the newcomer,
     * which orders the join before that append; nothing can be missed. */
    [Q_GROUP_JOIN] = {"INSERT INTO members (conv_id, user_id, role, acked_seq, joined_ms)"
                      " SELECT g.conv_id, ?, ?, c.last_seq, ?"
                      " FROM groups_ AS g JOIN convs AS c ON c.id = g.conv_id WHERE g.id = ?",
                      "udiu", ""},
    [Q_GROUP_QUIT] = {"DELETE FROM members"
                      " WHERE conv_id = (SELECT conv_id FROM groups_ WHERE id = ?)"
                      " AND user_id = ?",
                      "uu", ""},
    [Q_GROUP_ROLE] = {"SELECT m.role FROM groups_ AS g JOIN members AS m"
                      " ON m.conv_id = g.conv_id WHERE g.id = ? AND m.user_id = ?",
                      "uu", "i"},
    [Q_GROUP_DELETE] = {"DELETE FROM groups_ WHERE id = ?", "u", ""},
    [Q_CONV_DELETE_MEMBERS] = {"DELETE FROM members WHERE conv_id = ?", "u", ""},
    [Q_CONV_DELETE_MESSAGES] = {"DELETE FROM messages WHERE conv_id = ?", "u", ""},
    /* STRAIGHT_JOIN fixes the join order: from the user's memberships
     * (members_by_user_role), not from a scan of all groups. */
    [Q_USER_GROUPS] = {"SELECT g.id, g.conv_id, g.creator, g.name, g.description"
                       " FROM members AS m STRAIGHT_JOIN groups_ AS g ON g.conv_id = m.conv_id"
                       " WHERE m.user_id = ? ORDER BY g.id",
                       "u", "uuutt"},

    [Q_CONV_ROUTE] = {"SELECT c.last_seq, c.kind, c.user_lo, c.user_hi, COALESCE(g.id, 0)"
                      " FROM convs AS c LEFT JOIN groups_ AS g ON g.conv_id = c.id"
                      " WHERE c.id = ?",
                      "u", "uiuuu"},
    /* seq 0: the messages_next_seq trigger takes the next one. A missing
     * conversation leaves it 0 and fails the foreign key (NOT_FOUND). */
    [Q_MSG_INSERT] = {"INSERT INTO messages (conv_id, seq, sender, body, ts, ref)"
                      " VALUES (?, 0, ?, ?, ?, ?) RETURNING id, seq",
                      "uubir", "uu"},
    /* One lookup in messages_sender_ref. A plain read: at READ COMMITTED it
     * sees what is committed when it runs, so after losing the race to
     * insert (the winner has committed) it finds the winner's message. */
    [Q_MSG_BY_REF] = {"SELECT " MDB_MSG_COLS " FROM messages AS m" MDB_MSG_CONV
                      " WHERE m.sender = ? AND m.ref = ?",
                      "uu", MDB_MSG_TYPES},
    [Q_MSG_GET] = {"SELECT " MDB_MSG_COLS " FROM messages AS m" MDB_MSG_CONV " WHERE m.id = ?", "u",
                   MDB_MSG_TYPES},
    [Q_MSG_RECALL] = {"UPDATE messages SET recalled = 1, body = '' WHERE id = ?", "u", ""},
    /* Newest first down the (conv_id, seq) index, then re-sorted: the outer
     * sort only sees `limit` rows. Only ids are sorted; bodies are joined
     * after (see Q_PENDING: a temporary table with them goes to disk). */
    [Q_HISTORY] = {"SELECT " MDB_MSG_COLS " FROM (SELECT m.id, m.seq FROM messages AS m"
                   " WHERE m.conv_id = ? AND m.seq < ? ORDER BY m.seq DESC LIMIT ?) AS pick"
                   " STRAIGHT_JOIN messages AS m FORCE INDEX (PRIMARY) ON m.id = pick.id"
                   " STRAIGHT_JOIN convs AS c FORCE INDEX (PRIMARY) ON c.id = m.conv_id"
                   " LEFT JOIN groups_ AS g ON g.conv_id = m.conv_id ORDER BY pick.seq",
                   "uuu", MDB_MSG_TYPES},
    /* MariaDB cannot start a join's index scan at (conv_id, acked_seq + 1):
     * joined on conv_id it walks every message of every conversation of the
     * user. Seqs are gap-free, so instead the recursive part lists the
     * pending (conv_id, seq) pairs from each membership's (acked_seq,
     * last_seq] and each is one unique-key lookup: the rows read are the
     * pending ones, as with SQLite's index range. The anchor starts from
     * members_by_user_role and skips conversations with nothing new.
     * The page is picked by id alone, then joined for the bodies in id
     * order: sorting rows with the body in them took an on-disk (Aria)
     * temporary table per page, and MariaDB 10.11 crashed freeing one. */
    [Q_PENDING] = {"WITH RECURSIVE p (conv_id, seq, last_seq) AS ("
                   " SELECT mb.conv_id, mb.acked_seq + 1, c.last_seq"
                   " FROM members AS mb STRAIGHT_JOIN convs AS c FORCE INDEX (PRIMARY)"
                   " ON c.id = mb.conv_id WHERE mb.user_id = ? AND c.last_seq > mb.acked_seq"
                   " UNION ALL SELECT conv_id, seq + 1, last_seq FROM p WHERE seq < last_seq)"
                   " SELECT " MDB_MSG_COLS " FROM (SELECT m.id FROM p"
                   " JOIN messages AS m ON m.conv_id = p.conv_id AND m.seq = p.seq"
                   " WHERE m.id > ? ORDER BY m.id LIMIT ?) AS pick"
                   " STRAIGHT_JOIN messages AS m FORCE INDEX (PRIMARY) ON m.id = pick.id"
                   " STRAIGHT_JOIN convs AS c FORCE INDEX (PRIMARY) ON c.id = m.conv_id"
                   " LEFT JOIN groups_ AS g ON g.conv_id = m.conv_id ORDER BY pick.id",
                   "uuu", MDB_MSG_TYPES},
    [Q_ACK] = {"UPDATE members SET acked_seq = GREATEST(acked_seq, ?)"
               " WHERE conv_id = ? AND user_id = ?",
               "uuu", ""},
    /* The usual ack, in one round trip: a seq that names a stored message is
     * no further than the end. At READ COMMITTED the EXISTS locks only that
     * message's index record, which no send touches. */
    [Q_ACK_STORED] = {"UPDATE members SET acked_seq = GREATEST(acked_seq, ?)"
                      " WHERE conv_id = ? AND user_id = ?"
                      " AND EXISTS (SELECT 1 FROM messages WHERE conv_id = ? AND seq = ?)",
                      "uuuuu", ""},
    /* A plain read, taking no lock: read inside the UPDATE it would take a
     * shared lock on the conversation that a concurrent send holds
     * exclusively, and batches of acks and sends would deadlock. */
    [Q_CONV_LAST_SEQ] = {"SELECT last_seq FROM convs WHERE id = ?", "u", "u"},
    /* Read cursors, as in sqlite.c. */
    [Q_READ_GET] = {"SELECT c.last_seq, COALESCE((SELECT r.seq FROM read_cursors AS r"
                    " WHERE r.user_id = ? AND r.conv_id = ?), 0)"
                    " FROM members AS mb JOIN convs AS c ON c.id = mb.conv_id"
                    " WHERE mb.conv_id = ? AND mb.user_id = ?",
                    "uuuu", "uu"},
    [Q_READ_PUT] = {"INSERT INTO read_cursors (user_id, conv_id, seq) VALUES (?, ?, ?)"
                    " ON DUPLICATE KEY UPDATE seq = GREATEST(seq, VALUES(seq))",
                    "uuu", ""},
    [Q_UNREAD] = {"SELECT x.conv_id, x.user_lo, x.user_hi, x.group_id, x.rs, x.ls,"
                  " (SELECT COUNT(*) FROM messages AS m WHERE m.conv_id = x.conv_id"
                  " AND m.seq > GREATEST(x.rs + 1000, x.ls) - 1000 AND m.sender <> ?)"
                  " FROM (SELECT mb.conv_id AS conv_id, COALESCE(c.user_lo, 0) AS user_lo,"
                  " COALESCE(c.user_hi, 0) AS user_hi, COALESCE(g.id, 0) AS group_id,"
                  " COALESCE(r.seq, 0) AS rs, c.last_seq AS ls"
                  " FROM members AS mb JOIN convs AS c ON c.id = mb.conv_id"
                  " LEFT JOIN groups_ AS g ON g.conv_id = mb.conv_id"
                  " LEFT JOIN read_cursors AS r"
                  " ON r.user_id = mb.user_id AND r.conv_id = mb.conv_id"
                  " WHERE mb.user_id = ?) AS x"
                  " WHERE x.ls > x.rs ORDER BY x.conv_id DESC LIMIT ?",
                  "uuu", "uuuuuuu"},

    /* Administration. A range of users_name from the prefix on; the caller
     * stops at the first name without it. */
    [Q_USERS_FIND] = {"SELECT id, name, '', created_ms, banned FROM users"
                      " WHERE name >= ? AND name > ? ORDER BY name LIMIT ?",
                      "ttu", "uttii"},
    [Q_USER_SESSIONS] = {"SELECT created_ms, last_used FROM sessions WHERE user_id = ?"
                         " ORDER BY last_used DESC LIMIT ?",
                         "uu", "ii"},
    [Q_SESSION_COUNT] = {"SELECT COUNT(*) FROM sessions WHERE user_id = ?", "u", "u"},
    [Q_USER_SET_BANNED] = {"UPDATE users SET banned = ? WHERE id = ?", "du", ""},
    [Q_USER_SET_PWHASH] = {"UPDATE users SET pwhash = ? WHERE id = ?", "tu", ""},
    [Q_USER_TOMBSTONE] = {"UPDATE users SET name = ?, pwhash = '', banned = 1 WHERE id = ?", "tu",
                          ""},
    [Q_UNLINK_FRIENDS] = {"DELETE FROM friends WHERE user_id = ? OR friend_id = ?", "uu", ""},
    [Q_UNLINK_GROUPS] = {"DELETE FROM members WHERE user_id = ? AND role > 0", "u", ""},
    /* As recall; messages_sender_ref leads with sender. */
    [Q_UNLINK_BODIES] = {"UPDATE messages SET recalled = 1, body = '' WHERE sender = ?", "u", ""},
    [Q_UNLINK_FILES] = {"DELETE FROM msg_files WHERE sender = ?", "u", ""},

    /* Files. Every upload query yields these columns (mdb_upload_row). */
    [Q_UPLOAD_INSERT] = {"INSERT INTO uploads (user_id, sha256, name, type, size, received,"
                         " created_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         "uhttuui", ""},
    [Q_UPLOAD_GET] = {"SELECT id, user_id, sha256, name, type, size, received, created_ms"
                      " FROM uploads WHERE id = ?",
                      "u", "uutttuui"},
    [Q_UPLOAD_FIND] = {"SELECT id, user_id, sha256, name, type, size, received, created_ms"
                       " FROM uploads WHERE user_id = ? AND sha256 = ? ORDER BY id DESC LIMIT 1",
                       "uh", "uutttuui"},
    [Q_UPLOAD_SET_RECEIVED] = {"UPDATE uploads SET received = ? WHERE id = ?", "uu", ""},
    [Q_UPLOAD_DELETE] = {"DELETE FROM uploads WHERE id = ?", "u", ""},
    [Q_UPLOADS_EXPIRED] = {"SELECT id, user_id, sha256, name, type, size, received, created_ms"
                           " FROM uploads WHERE created_ms < ? ORDER BY created_ms LIMIT ?",
                           "iu", "uutttuui"},
    [Q_FILE_USAGE] = {"SELECT (SELECT COUNT(*) FROM uploads WHERE user_id = ?),"
                      " (SELECT COALESCE(SUM(size), 0) FROM uploads WHERE user_id = ?)"
                      " + (SELECT COALESCE(SUM(size), 0) FROM msg_files WHERE sender = ?)",
                      "uuu", "uu"},
    [Q_FILE_GET] = {"SELECT size FROM files WHERE sha256 = ?", "h", "u"},
    [Q_FILE_PUT] = {"INSERT IGNORE INTO files (sha256, size, created_ms) VALUES (?, ?, ?)", "hui",
                    ""},
    [Q_FILE_REFS] = {"SELECT (SELECT COUNT(*) FROM msg_files WHERE sha256 = ?)"
                     " + (SELECT COUNT(*) FROM uploads WHERE sha256 = ? AND received = size)",
                     "hh", "u"},
    [Q_FILE_DELETE] = {"DELETE FROM files WHERE sha256 = ?", "h", ""},
    [Q_FILES_AFTER] = {"SELECT sha256, size FROM files WHERE sha256 > ? ORDER BY sha256 LIMIT ?",
                       "hu", "tu"},
    [Q_MSG_FILE_INSERT] = {"INSERT INTO msg_files (msgid, sender, sha256, name, type, size)"
                           " VALUES (?, ?, ?, ?, ?, ?)",
                           "uuhttu", ""},
    [Q_MSG_FILE_GET] = {"SELECT msgid, sha256, name, type, size FROM msg_files WHERE msgid = ?",
                        "u", "utttu"},
    [Q_MSG_FILE_DELETE] = {"DELETE FROM msg_files WHERE msgid = ?", "u", ""},
    [Q_MSG_FILES] = {"SELECT msgid, sha256, name, type, size FROM msg_files"
                     " WHERE msgid BETWEEN ? AND ? ORDER BY msgid",
                     "uu", "utttu"},
};

/* Statement k of the multi-row ones has this many rows. */
static unsigned mdb_many_rows(int k)
{
    return MDB_MANY_MAX - (unsigned)k;
}

/* The multi-row statement for the next chunk of `left` rows: the largest,
 * or one of exactly `left` rows; MDB_MANY_SIZES for a single row, which
 * goes through the one-row statement. */
static int mdb_many_pick(size_t left)
{
    if (left >= MDB_MANY_MAX)
        return 0;
    return left < 2 ? MDB_MANY_SIZES : MDB_MANY_MAX - (int)left;
}

typedef struct mdb_store {
    store base; /* first: the dispatcher's store * points here too */
    MYSQL *db;
    MYSQL_STMT *q[Q_COUNT];
    MYSQL_STMT *many[MDB_MANY_SIZES]; /* multi-row message INSERTs, by size */
    MYSQL_STMT *acks[MDB_MANY_SIZES]; /* multi-row ack UPDATEs, by size */
    MYSQL_BIND many_args[MDB_MANY_MAX * 5];
    uint64_t many_u[MDB_MANY_MAX * 3];
    unsigned long many_len[MDB_MANY_MAX];
    MYSQL_STMT *cur;  /* the query whose rows mdb_fetch reads */
    const char *cols; /* its column types */
    /* The current row. Integers land in col_u / col_i (0 for NULL), text
     * and blobs in col_buf, NUL-terminated, grown to fit. */
    MYSQL_BIND col[MDB_COLS_MAX];
    uint64_t col_u[MDB_COLS_MAX];
    int64_t col_i[MDB_COLS_MAX];
    char *col_buf[MDB_COLS_MAX];
    unsigned long col_cap[MDB_COLS_MAX];
    unsigned long col_len[MDB_COLS_MAX];
    my_bool col_null[MDB_COLS_MAX];
    my_bool col_trunc[MDB_COLS_MAX];
    uint64_t affected; /* rows matched (CLIENT_FOUND_ROWS) by the last write */
    uint64_t insert_id;
    unsigned last_errno;
    int in_txn;              /* between our START TRANSACTION and its end */
    int txn_lost;            /* ...which the server has already rolled back */
    int unit_lost;           /* a call's own unit was undone by a deadlock */
    int dead;                /* the connection is gone; it is not reopened */
    int rollback_on_timeout; /* a lock wait timeout undoes the transaction */
    int counted;             /* counted in mdb_thread_handles of owner */
    pthread_t owner;
    char *body; /* copy of the last store_message_get body */
    size_t body_cap;
    /* Forgotten at any rollback: its ids may name rows never committed. */
    store_cache *cache;
    char where[320]; /* "HOST:PORT" or "unix socket PATH", for messages */
    char errmsg[512];
} mdb_store;

static mdb_store *mdb_of(store *base)
{
    return (mdb_store *)base;
}

static void mdb_set_err(mdb_store *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->errmsg, sizeof st->errmsg, fmt, ap);
    va_end(ap);
}

/* ---- library and thread setup ---- */

static pthread_once_t mdb_once = PTHREAD_ONCE_INIT;
static int mdb_library_ok;
static _Thread_local unsigned mdb_thread_handles;

/* mysql_library_init is not thread-safe: once, whichever thread is first. */
static void mdb_library_init(void)
{
    mdb_library_ok = mysql_library_init(0, NULL, NULL) == 0;
}

static void mdb_thread_enter(mdb_store *st)
{
    if (mdb_thread_handles++ == 0)
        mysql_thread_init();
    st->owner = pthread_self();
    st->counted = 1;
}

static void mdb_thread_leave(mdb_store *st)
{
    /* A handle closed on a foreign thread cannot release its opener's
     * thread state from here; that thread keeps it (harmless). */
    if (!st->counted || !pthread_equal(st->owner, pthread_self()))
        return;
    st->counted = 0;
    if (--mdb_thread_handles == 0)
        mysql_thread_end();
}

/* ---- errors ---- */

/* Maps a server or client error to a status and records why. */
static store_status mdb_status(mdb_store *st, unsigned err, const char *msg)
{
    st->last_errno = err;
    switch (err) {
    case ER_DUP_ENTRY:
        mdb_set_err(st, "%s", msg);
        return STORE_CONFLICT;
    case ER_NO_REFERENCED_ROW:
    case ER_NO_REFERENCED_ROW_2:
        /* A referenced user, conversation... does not exist. */
        mdb_set_err(st, "%s", msg);
        return STORE_NOT_FOUND;
    case ER_LOCK_DEADLOCK:
        if (st->in_txn)
            st->txn_lost = 1;
        else
            st->unit_lost = 1; /* the statement alone was undone */
        mdb_set_err(st, "deadlock: MariaDB rolled the transaction back, retry it (%s)", msg);
        return STORE_ERROR;
    case ER_LOCK_WAIT_TIMEOUT:
        if (st->in_txn && st->rollback_on_timeout)
            st->txn_lost = 1;
        else if (!st->in_txn)
            st->unit_lost = 1;
        mdb_set_err(st, "lock wait timeout: roll back and retry the transaction (%s)", msg);
        return STORE_ERROR;
    case CR_SERVER_GONE_ERROR:
    case CR_SERVER_LOST:
    case CR_SERVER_LOST_EXTENDED:
    case ER_CONNECTION_KILLED:
        /* Reconnecting is off: a new connection would silently drop the
         * transaction and the session settings. */
        st->dead = 1;
        if (st->in_txn)
            st->txn_lost = 1;
        mdb_set_err(st, "connection to MariaDB at %s lost: %s", st->where, msg);
        return STORE_ERROR;
    default:
        mdb_set_err(st, "%s", msg);
        return STORE_ERROR;
    }
}

static store_status mdb_fail_stmt(mdb_store *st, MYSQL_STMT *s)
{
    return mdb_status(st, mysql_stmt_errno(s), mysql_stmt_error(s));
}

static store_status mdb_fail_db(mdb_store *st)
{
    return mdb_status(st, mysql_errno(st->db), mysql_error(st->db));
}

/* ---- statements ---- */

/* Prepares query id on first use and checks it against its declaration. */
static MYSQL_STMT *mdb_stmt(mdb_store *st, int id)
{
    if (st->q[id])
        return st->q[id];
    const mdb_query *q = &mdb_sql[id];
    /* The binding arrays are sized for the longest declaration. */
    if (strlen(q->args) > MDB_ARGS_MAX || strlen(q->cols) > MDB_COLS_MAX) {
        mdb_set_err(st, "internal: query %d has too many parameters or columns", id);
        st->last_errno = 0;
        return NULL;
    }
    MYSQL_STMT *s = mysql_stmt_init(st->db);
    if (!s) {
        mdb_fail_db(st);
        return NULL;
    }
    if (mysql_stmt_prepare(s, q->sql, strlen(q->sql)) != 0) {
        mdb_fail_stmt(st, s);
        mysql_stmt_close(s);
        return NULL;
    }
    /* MariaDB describes the columns of INSERT ... RETURNING only once it has
     * run: mdb_vrun checks those then. */
    unsigned fields = mysql_stmt_field_count(s);
    if (fields == 0 && strstr(q->sql, " RETURNING "))
        fields = (unsigned)strlen(q->cols);
    if (mysql_stmt_param_count(s) != strlen(q->args) || fields != strlen(q->cols)) {
        mdb_set_err(st, "internal: query %d does not match its declared types", id);
        st->last_errno = 0;
        mysql_stmt_close(s);
        return NULL;
    }
    st->q[id] = s;
    return s;
}

/* Forgets a statement only needed at open (the server caps how many are
 * prepared at once). */
static void mdb_unprepare(mdb_store *st, int id)
{
    if (st->q[id]) {
        mysql_stmt_close(st->q[id]);
        st->q[id] = NULL;
    }
}

/* Parameter values live here while the statement runs. */
typedef struct {
    MYSQL_BIND b[MDB_ARGS_MAX];
    uint64_t u[MDB_ARGS_MAX];
    int64_t i[MDB_ARGS_MAX];
    int d[MDB_ARGS_MAX];
    unsigned long len[MDB_ARGS_MAX];
} mdb_args;

/* Binds parameters from `types`: u uint64_t, i int64_t, d int, t
 * NUL-terminated text, b bytes (pointer, size_t), h 32-byte hash, r a
 * message ref (uint64_t, NULL for 0). */
static void mdb_bind_args(mdb_args *a, const char *types, va_list ap)
{
    memset(a, 0, sizeof *a);
    for (int k = 0; types[k]; k++) {
        MYSQL_BIND *b = &a->b[k];
        switch (types[k]) {
        case 'u':
            a->u[k] = va_arg(ap, uint64_t);
            b->buffer_type = MYSQL_TYPE_LONGLONG;
            b->buffer = &a->u[k];
            b->is_unsigned = 1;
            break;
        case 'i':
            a->i[k] = va_arg(ap, int64_t);
            b->buffer_type = MYSQL_TYPE_LONGLONG;
            b->buffer = &a->i[k];
            break;
        case 'd':
            a->d[k] = va_arg(ap, int);
            b->buffer_type = MYSQL_TYPE_LONG;
            b->buffer = &a->d[k];
            break;
        case 't': {
            const char *t = va_arg(ap, const char *);
            a->len[k] = (unsigned long)strlen(t);
            b->buffer_type = MYSQL_TYPE_STRING;
            b->buffer = (void *)t;
            b->buffer_length = a->len[k];
            b->length = &a->len[k];
            break;
        }
        case 'b': {
            const void *p = va_arg(ap, const void *);
            a->len[k] = (unsigned long)va_arg(ap, size_t);
            /* A NULL buffer would bind SQL NULL; an empty body is bytes. */
            b->buffer_type = MYSQL_TYPE_BLOB;
            b->buffer = a->len[k] ? (void *)p : (void *)"";
            b->buffer_length = a->len[k];
            b->length = &a->len[k];
            break;
        }
        case 'h':
            a->len[k] = 32;
            b->buffer_type = MYSQL_TYPE_BLOB;
            b->buffer = (void *)va_arg(ap, const uint8_t *);
            b->buffer_length = 32;
            b->length = &a->len[k];
            break;
        case 'r':
            a->u[k] = va_arg(ap, uint64_t);
            b->buffer_type = a->u[k] ? MYSQL_TYPE_LONGLONG : MYSQL_TYPE_NULL;
            b->buffer = &a->u[k];
            b->is_unsigned = 1;
            break;
        }
    }
}

/* Points the result bindings of s at the row buffers, per `cols`: u
 * unsigned, i signed (integers of any width), t text or bytes. Bound again
 * for each run: another statement may have grown a buffer since. */
static store_status mdb_bind_cols(mdb_store *st, MYSQL_STMT *s, const char *cols)
{
    memset(st->col, 0, sizeof st->col);
    for (int k = 0; cols[k]; k++) {
        MYSQL_BIND *b = &st->col[k];
        b->is_null = &st->col_null[k];
        b->error = &st->col_trunc[k];
        b->length = &st->col_len[k];
        if (cols[k] == 't') {
            if (!st->col_buf[k]) {
                st->col_buf[k] = malloc(MDB_COL_INITIAL);
                if (!st->col_buf[k]) {
                    mdb_set_err(st, "out of memory");
                    return STORE_ERROR;
                }
                st->col_cap[k] = MDB_COL_INITIAL;
            }
            b->buffer_type = MYSQL_TYPE_STRING;
            b->buffer = st->col_buf[k];
            b->buffer_length = st->col_cap[k] - 1; /* room for our NUL */
        } else {
            b->buffer_type = MYSQL_TYPE_LONGLONG;
            b->buffer = cols[k] == 'u' ? (void *)&st->col_u[k] : (void *)&st->col_i[k];
            b->is_unsigned = cols[k] == 'u';
        }
    }
    if (mysql_stmt_bind_result(s, st->col) != 0)
        return mdb_fail_stmt(st, s);
    return STORE_OK;
}

/* Ends the current query: frees its buffered rows. */
static void mdb_done(mdb_store *st)
{
    if (st->cur) {
        mysql_stmt_free_result(st->cur);
        st->cur = NULL;
    }
}

/* Runs query id with its parameters. A query with rows becomes the current
 * one, all rows buffered, for mdb_fetch; a write records affected rows and
 * the new AUTO_INCREMENT id. */
static store_status mdb_vrun(mdb_store *st, int id, va_list ap)
{
    mdb_done(st);
    if (st->dead) {
        mdb_set_err(st, "connection to MariaDB at %s lost; reopen the store", st->where);
        return STORE_ERROR;
    }
    /* Only ROLLBACK may follow a transaction the server has undone: anything
     * else would run outside it, in autocommit. */
    if (st->in_txn && st->txn_lost && id != Q_ROLLBACK) {
        mdb_set_err(st, "the transaction was rolled back by MariaDB after an earlier error;"
                        " roll back and retry");
        return STORE_ERROR;
    }
    MYSQL_STMT *s = mdb_stmt(st, id);
    if (!s)
        return STORE_ERROR;
    const mdb_query *q = &mdb_sql[id];
    mdb_args a;
    mdb_bind_args(&a, q->args, ap);
    if ((q->args[0] && mysql_stmt_bind_param(s, a.b) != 0) || mysql_stmt_execute(s) != 0)
        return mdb_fail_stmt(st, s);
    if (!q->cols[0]) {
        st->affected = mysql_stmt_affected_rows(s);
        st->insert_id = mysql_stmt_insert_id(s);
        return STORE_OK;
    }
    if (mysql_stmt_store_result(s) != 0)
        return mdb_fail_stmt(st, s);
    if (mysql_stmt_field_count(s) != strlen(q->cols)) {
        mysql_stmt_free_result(s);
        mdb_set_err(st, "internal: query %d returned other columns than declared", id);
        st->last_errno = 0;
        return STORE_ERROR;
    }
    st->cur = s;
    st->cols = q->cols;
    store_status ret = mdb_bind_cols(st, s, q->cols);
    if (ret != STORE_OK)
        mdb_done(st);
    return ret;
}

/* Runs a write; *affected (if asked) gets the rows it matched. */
static store_status mdb_exec(mdb_store *st, int id, uint64_t *affected, ...)
{
    va_list ap;
    va_start(ap, affected);
    store_status ret = mdb_vrun(st, id, ap);
    va_end(ap);
    if (affected)
        *affected = ret == STORE_OK ? st->affected : 0;
    return ret;
}

/* Runs a query whose rows the caller reads with mdb_fetch, then mdb_done. */
static store_status mdb_query_run(mdb_store *st, int id, ...)
{
    va_list ap;
    va_start(ap, id);
    store_status ret = mdb_vrun(st, id, ap);
    va_end(ap);
    return ret;
}

/* Reads the next row into the column buffers: 1 row, 0 no more, -1 error. */
static int mdb_fetch(mdb_store *st)
{
    MYSQL_STMT *s = st->cur;
    int rc = mysql_stmt_fetch(s);
    if (rc == MYSQL_NO_DATA)
        return 0;
    if (rc != 0 && rc != MYSQL_DATA_TRUNCATED) {
        mdb_fail_stmt(st, s);
        return -1;
    }
    int rebind = 0;
    for (int k = 0; st->cols[k]; k++) {
        if (st->cols[k] != 't') {
            if (st->col_null[k]) {
                st->col_u[k] = 0;
                st->col_i[k] = 0;
            }
            continue;
        }
        if (st->col_null[k]) {
            st->col_len[k] = 0;
        } else if (st->col_len[k] >= st->col_cap[k]) {
            /* Longer than the buffer: grow it and fetch this column again. */
            unsigned long cap = st->col_len[k] + 1;
            char *p = realloc(st->col_buf[k], cap);
            if (!p) {
                mdb_set_err(st, "out of memory");
                return -1;
            }
            st->col_buf[k] = p;
            st->col_cap[k] = cap;
            st->col[k].buffer = p;
            st->col[k].buffer_length = cap - 1;
            if (mysql_stmt_fetch_column(s, &st->col[k], (unsigned)k, 0) != 0) {
                mdb_fail_stmt(st, s);
                return -1;
            }
            rebind = 1;
        }
        st->col_buf[k][st->col_len[k]] = '\0';
    }
    /* The statement still points at the old buffers for the next rows. */
    if (rebind && mysql_stmt_bind_result(s, st->col) != 0) {
        mdb_fail_stmt(st, s);
        return -1;
    }
    return 1;
}

/* Runs a query and reads its first row: OK with the row in the buffers,
 * NOT_FOUND if there is none. The caller reads it, then calls mdb_done. */
static store_status mdb_first(mdb_store *st, int id, ...)
{
    va_list ap;
    va_start(ap, id);
    store_status ret = mdb_vrun(st, id, ap);
    va_end(ap);
    if (ret != STORE_OK)
        return ret;
    int rc = mdb_fetch(st);
    if (rc > 0)
        return STORE_OK;
    mdb_done(st);
    return rc == 0 ? STORE_NOT_FOUND : STORE_ERROR;
}

/* Runs a statement that takes no parameters and returns no rows, once (the
 * schema's DDL), without keeping it prepared. */
static store_status mdb_sql_once(mdb_store *st, const char *sql)
{
    MYSQL_STMT *s = mysql_stmt_init(st->db);
    if (!s)
        return mdb_fail_db(st);
    store_status ret = STORE_OK;
    if (mysql_stmt_prepare(s, sql, strlen(sql)) != 0 || mysql_stmt_execute(s) != 0)
        ret = mdb_fail_stmt(st, s);
    mysql_stmt_close(s);
    return ret;
}

static void mdb_copy_text(mdb_store *st, int col, char *dst, size_t cap)
{
    size_t n = st->col_len[col];
    if (n > cap - 1)
        n = cap - 1;
    memcpy(dst, st->col_buf[col], n);
    dst[n] = '\0';
}

/* ---- transactions ---- */

/* Runs a cleanup statement without overwriting the error being reported. */
static void mdb_quiet(mdb_store *st, int id)
{
    char saved[sizeof st->errmsg];
    unsigned saved_errno = st->last_errno;
    memcpy(saved, st->errmsg, sizeof saved);
    mdb_exec(st, id, NULL);
    memcpy(st->errmsg, saved, sizeof saved);
    st->last_errno = saved_errno;
}

static store_status mdb_tx_begin(mdb_store *st)
{
    /* START TRANSACTION inside one would silently commit it. */
    if (st->in_txn) {
        mdb_set_err(st, "cannot start a transaction within a transaction");
        return STORE_ERROR;
    }
    store_status ret = mdb_exec(st, Q_BEGIN, NULL);
    if (ret == STORE_OK) {
        st->in_txn = 1;
        st->txn_lost = 0;
        st->unit_lost = 0;
    }
    return ret;
}

static store_status mdb_tx_commit(mdb_store *st)
{
    /* COMMIT outside a transaction would succeed doing nothing. */
    if (!st->in_txn) {
        mdb_set_err(st, "cannot commit - no transaction is active");
        return STORE_ERROR;
    }
    /* in_txn holds through a failure: a COMMIT refused for a deadlock (as
     * Galera does) marks the transaction lost, for the caller to retry. */
    store_status ret = mdb_exec(st, Q_COMMIT, NULL);
    if (ret == STORE_OK)
        st->in_txn = 0;
    return ret;
}

static store_status mdb_tx_rollback(mdb_store *st)
{
    st->unit_lost = 0; /* the caller has taken note */
    if (!st->in_txn) {
        mdb_set_err(st, "cannot rollback - no transaction is active");
        return STORE_ERROR;
    }
    /* Over whatever happens to the statement: the server ends the
     * transaction on a failed ROLLBACK or a lost connection too. */
    store_status ret = mdb_exec(st, Q_ROLLBACK, NULL);
    st->in_txn = 0;
    st->txn_lost = 0;
    store_cache_forget(st->cache);
    return ret;
}

/* Makes a multi-statement call atomic: its own transaction when none is
 * open, else a savepoint inside the caller's. */
static store_status mdb_op_begin(mdb_store *st, int *own)
{
    *own = !st->in_txn;
    return *own ? mdb_tx_begin(st) : mdb_exec(st, Q_OP_SAVEPOINT, NULL);
}

static store_status mdb_op_end(mdb_store *st, int own, store_status ret)
{
    if (ret == STORE_OK) {
        ret = own ? mdb_tx_commit(st) : mdb_exec(st, Q_OP_RELEASE, NULL);
        if (ret == STORE_OK)
            return STORE_OK;
    }
    if (own) {
        char saved[sizeof st->errmsg];
        int lost = st->txn_lost;
        memcpy(saved, st->errmsg, sizeof saved);
        mdb_tx_rollback(st);
        memcpy(st->errmsg, saved, sizeof saved);
        st->unit_lost = lost;
    } else if (!st->txn_lost) {
        /* After a deadlock the savepoint is gone with the transaction. */
        mdb_quiet(st, Q_OP_ROLLBACK_TO);
        mdb_quiet(st, Q_OP_RELEASE);
    }
    store_cache_forget(st->cache);
    return ret;
}

/* For store.c's logic over several ops. */
static store_status mdb_base_op_begin(store *base, int *own)
{
    return mdb_op_begin(mdb_of(base), own);
}

static store_status mdb_base_op_end(store *base, int own, store_status ret)
{
    return mdb_op_end(mdb_of(base), own, ret);
}

static store_status mdb_begin(store *base)
{
    return mdb_tx_begin(mdb_of(base));
}

static store_status mdb_commit(store *base)
{
    return mdb_tx_commit(mdb_of(base));
}

static store_status mdb_rollback(store *base)
{
    return mdb_tx_rollback(mdb_of(base));
}

static store_status mdb_savepoint(store *base)
{
    mdb_store *st = mdb_of(base);
    /* Outside a transaction a savepoint would protect nothing. */
    if (!st->in_txn) {
        mdb_set_err(st, "savepoint outside a transaction");
        return STORE_ERROR;
    }
    return mdb_exec(st, Q_SAVEPOINT, NULL);
}

static store_status mdb_release(store *base)
{
    return mdb_exec(mdb_of(base), Q_RELEASE, NULL);
}

static store_status mdb_rollback_to(store *base)
{
    mdb_store *st = mdb_of(base);
    store_cache_forget(st->cache);
    store_status ret = mdb_exec(st, Q_ROLLBACK_TO, NULL);
    if (ret != STORE_OK)
        return ret;
    return mdb_exec(st, Q_RELEASE, NULL);
}

/* The caller's transaction, or the unit a single call ran by itself (a
 * statement, or a login's session insert and trim), was undone by a
 * deadlock: running the same work again is safe and likely to succeed. The
 * latter is reported until the caller begins or rolls back. */
static int mdb_txn_lost(const store *base)
{
    const mdb_store *st = (const mdb_store *)base;
    return (st->in_txn && st->txn_lost) || st->unit_lost;
}

static int mdb_is_dead(const store *base)
{
    return ((const mdb_store *)base)->dead;
}

/* ---- users and sessions ---- */

static store_status mdb_user_create(store *base, const char *name, const char *pwhash,
                                    int64_t now_ms, uint64_t *id_out)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_exec(st, Q_USER_INSERT, NULL, name, pwhash, now_ms);
    if (ret == STORE_OK && id_out)
        *id_out = st->insert_id;
    return ret;
}

static void mdb_user_row(mdb_store *st, store_user *out)
{
    out->id = st->col_u[0];
    mdb_copy_text(st, 1, out->name, sizeof out->name);
    mdb_copy_text(st, 2, out->pwhash, sizeof out->pwhash);
    out->created_ms = st->col_i[3];
    out->banned = st->col_i[4] != 0;
}

static store_status mdb_user_by_id(store *base, uint64_t id, store_user *out)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_first(st, Q_USER_BY_ID, id);
    if (ret == STORE_OK)
        mdb_user_row(st, out);
    mdb_done(st);
    return ret;
}

static store_status mdb_user_by_name(store *base, const char *name, store_user *out)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_first(st, Q_USER_BY_NAME, name);
    if (ret == STORE_OK)
        mdb_user_row(st, out);
    mdb_done(st);
    return ret;
}

static store_status mdb_session_insert(store *base, const uint8_t token_hash[32], uint64_t user,
                                       int64_t now_ms)
{
    return mdb_exec(mdb_of(base), Q_SESSION_INSERT, NULL, token_hash, user, now_ms, now_ms);
}

static store_status mdb_session_trim(store *base, uint64_t user, const uint8_t keep_hash[32],
                                     unsigned keep)
{
    return mdb_exec(mdb_of(base), Q_SESSION_TRIM, NULL, user, keep_hash, (uint64_t)keep);
}

static store_status mdb_session_get(store *base, const uint8_t token_hash[32], uint64_t *user,
                                    int64_t *last_used)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_first(st, Q_SESSION_GET, token_hash);
    if (ret == STORE_OK) {
        *user = st->col_u[0];
        *last_used = st->col_i[1];
    }
    mdb_done(st);
    return ret;
}

static store_status mdb_session_touch(store *base, const uint8_t token_hash[32], int64_t now_ms)
{
    return mdb_exec(mdb_of(base), Q_SESSION_TOUCH, NULL, now_ms, token_hash, now_ms);
}

static store_status mdb_session_delete(store *base, const uint8_t token_hash[32], int64_t before_ms,
                                       uint64_t *n)
{
    return mdb_exec(mdb_of(base), Q_SESSION_DELETE, n, token_hash, before_ms);
}

static store_status mdb_session_delete_user(store *base, uint64_t user)
{
    return mdb_exec(mdb_of(base), Q_SESSION_DELETE_USER, NULL, user);
}

static store_status mdb_sessions_expire(store *base, int64_t before_ms, unsigned limit, uint64_t *n)
{
    return mdb_exec(mdb_of(base), Q_SESSIONS_EXPIRE, n, before_ms, (uint64_t)limit);
}

static store_status mdb_count(store *base, store_count_kind what, uint64_t id, uint64_t *n)
{
    mdb_store *st = mdb_of(base);
    store_status ret;
    switch (what) {
    case STORE_COUNT_FRIENDS:
        ret = mdb_first(st, Q_FRIEND_COUNT, id);
        break;
    case STORE_COUNT_USER_GROUPS:
        ret = mdb_first(st, Q_USER_GROUP_COUNT, id, STORE_ROLE_NONE);
        break;
    case STORE_COUNT_GROUP_MEMBERS:
        ret = mdb_first(st, Q_GROUP_MEMBER_COUNT, id);
        break;
    case STORE_COUNT_SESSIONS:
        ret = mdb_first(st, Q_SESSION_COUNT, id);
        break;
    default:
        mdb_set_err(st, "unknown count %d", (int)what);
        return STORE_ERROR;
    }
    if (ret == STORE_OK)
        *n = st->col_u[0];
    mdb_done(st);
    return ret;
}

/* ---- friends ---- */

static store_status mdb_friend_add(store *base, uint64_t a, uint64_t b, int64_t now_ms)
{
    /* Foreign keys answer NOT_FOUND for a missing user, the primary key
     * CONFLICT for an existing friendship. */
    return mdb_exec(mdb_of(base), Q_FRIEND_INSERT, NULL, a, b, now_ms, b, a, now_ms);
}

static store_status mdb_friend_del(store *base, uint64_t a, uint64_t b)
{
    uint64_t n;
    store_status ret = mdb_exec(mdb_of(base), Q_FRIEND_DELETE, &n, a, b, b, a);
    if (ret == STORE_OK && n == 0)
        return STORE_NOT_FOUND;
    return ret;
}

static store_status mdb_friend_list(store *base, uint64_t user, store_user_cb cb, void *arg)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_query_run(st, Q_FRIEND_LIST, user);
    if (ret != STORE_OK)
        return ret;
    int rc;
    while ((rc = mdb_fetch(st)) > 0) {
        if (cb(arg, st->col_u[0], st->col_buf[1]) != 0)
            break;
    }
    if (rc < 0)
        ret = STORE_ERROR;
    mdb_done(st);
    return ret;
}

/* ---- conversations ---- */

/* Hands the members of conv to cb (id, name, role). */
static store_status mdb_members_each(mdb_store *st, uint64_t conv, store_member_cb cb, void *arg)
{
    store_status ret = mdb_query_run(st, Q_CONV_MEMBERS, conv);
    if (ret != STORE_OK)
        return ret;
    int rc;
    while ((rc = mdb_fetch(st)) > 0) {
        uint64_t id = st->col_u[0];
        const char *name = st->col_buf[1];
        if (cb(arg, id, name, (int)st->col_i[2]))
            break;
    }
    if (rc < 0)
        ret = STORE_ERROR;
    mdb_done(st);
    return ret;
}

static store_status mdb_conv_exists(mdb_store *st, uint64_t conv)
{
    store_status ret = mdb_first(st, Q_CONV_EXISTS, conv);
    mdb_done(st);
    return ret;
}

static store_status mdb_find_pair(mdb_store *st, int id, uint64_t lo, uint64_t hi, uint64_t *conv)
{
    store_status ret = mdb_first(st, id, lo, hi);
    if (ret == STORE_OK)
        *conv = st->col_u[0];
    mdb_done(st);
    return ret;
}

static store_status mdb_direct_conv(store *base, uint64_t a, uint64_t b, uint64_t *conv_out)
{
    mdb_store *st = mdb_of(base);
    uint64_t lo = a < b ? a : b, hi = a < b ? b : a, conv = 0;
    int own, raced;

    /* Direct conversations are never deleted: a pair, once found, stays. */
    if (store_cache_direct(st->cache, lo, hi, &conv)) {
        if (conv_out)
            *conv_out = conv;
        return STORE_OK;
    }
    /* Usual case: it exists. */
    store_status ret = mdb_find_pair(st, Q_DIRECT_FIND, lo, hi, &conv);
    if (ret != STORE_NOT_FOUND)
        goto done;

    ret = mdb_op_begin(st, &own);
    if (ret != STORE_OK)
        return ret;
    /* The unique (user_lo, user_hi) key settles a race with another
     * connection: our insert waits for theirs and then fails with CONFLICT.
     * A missing user fails a foreign key: NOT_FOUND. */
    ret = mdb_exec(st, Q_DIRECT_INSERT, NULL, STORE_KIND_DIRECT, lo, hi);
    if (ret != STORE_OK)
        goto out;
    conv = st->insert_id;
    ret = mdb_exec(st, Q_MEMBER_INSERT, NULL, conv, lo, STORE_ROLE_NONE, (int64_t)0);
    if (ret != STORE_OK)
        goto out;
    ret = mdb_exec(st, Q_MEMBER_INSERT, NULL, conv, hi, STORE_ROLE_NONE, (int64_t)0);
out:
    raced = ret == STORE_CONFLICT;
    ret = mdb_op_end(st, own, ret);
    if (raced)
        ret = mdb_find_pair(st, Q_DIRECT_FIND_LOCKED, lo, hi, &conv);
done:
    if (ret == STORE_OK) {
        store_cache_direct_put(st->cache, lo, hi, conv);
        if (conv_out)
            *conv_out = conv;
    }
    return ret;
}

static store_status mdb_conv_members(store *base, uint64_t conv, store_id_cb cb, void *arg)
{
    mdb_store *st = mdb_of(base);
    unsigned n = 0;
    store_status ret = mdb_query_run(st, Q_CONV_MEMBER_IDS, conv);
    if (ret != STORE_OK)
        return ret;
    int rc;
    while ((rc = mdb_fetch(st)) > 0) {
        n++;
        if (cb(arg, st->col_u[0]))
            break;
    }
    if (rc < 0)
        ret = STORE_ERROR;
    mdb_done(st);
    /* Only an empty answer needs to tell "no members" from "no such conv". */
    if (ret == STORE_OK && n == 0)
        ret = mdb_conv_exists(st, conv);
    return ret;
}

/* ---- groups ---- */

static void mdb_group_row(mdb_store *st, store_group *out)
{
    out->id = st->col_u[0];
    out->conv = st->col_u[1];
    out->creator = st->col_u[2];
    mdb_copy_text(st, 3, out->name, sizeof out->name);
    mdb_copy_text(st, 4, out->desc, sizeof out->desc);
}

static store_status mdb_group_create(store *base, const char *name, const char *desc,
                                     uint64_t creator, int64_t now_ms, store_group *out)
{
    mdb_store *st = mdb_of(base);
    uint64_t conv = 0, id = 0;
    int own;
    store_status ret = mdb_op_begin(st, &own);
    if (ret != STORE_OK)
        return ret;
    ret = mdb_exec(st, Q_GROUP_CONV_INSERT, NULL, STORE_KIND_GROUP);
    if (ret != STORE_OK)
        goto out;
    conv = st->insert_id;
    ret = mdb_exec(st, Q_GROUP_INSERT, NULL, name, desc, creator, conv, now_ms);
    if (ret != STORE_OK)
        goto out;
    id = st->insert_id;
    ret = mdb_exec(st, Q_MEMBER_INSERT, NULL, conv, creator, STORE_ROLE_CREATOR, now_ms);
out:
    ret = mdb_op_end(st, own, ret);
    if (ret == STORE_OK && out) {
        out->id = id;
        out->conv = conv;
        out->creator = creator;
        snprintf(out->name, sizeof out->name, "%s", name);
        snprintf(out->desc, sizeof out->desc, "%s", desc);
    }
    return ret;
}

static store_status mdb_group_get(store *base, uint64_t group, store_group *out)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_first(st, Q_GROUP_GET, group);
    if (ret == STORE_OK && out)
        mdb_group_row(st, out);
    mdb_done(st);
    return ret;
}

static store_status mdb_group_join(store *base, uint64_t group, uint64_t user, int64_t now_ms)
{
    uint64_t n;
    store_status ret =
        mdb_exec(mdb_of(base), Q_GROUP_JOIN, &n, user, STORE_ROLE_NORMAL, now_ms, group);
    if (ret == STORE_OK && n == 0) /* no such group */
        return STORE_NOT_FOUND;
    return ret;
}

static store_status mdb_group_quit(store *base, uint64_t group, uint64_t user)
{
    uint64_t n;
    store_status ret = mdb_exec(mdb_of(base), Q_GROUP_QUIT, &n, group, user);
    if (ret == STORE_OK && n == 0)
        return STORE_NOT_FOUND;
    return ret;
}

static store_status mdb_group_conv(mdb_store *st, uint64_t group, uint64_t *conv)
{
    store_status ret = mdb_first(st, Q_GROUP_CONV, group);
    if (ret == STORE_OK)
        *conv = st->col_u[0];
    mdb_done(st);
    return ret;
}

static store_status mdb_group_delete(store *base, uint64_t group)
{
    mdb_store *st = mdb_of(base);
    uint64_t conv;
    int own;
    store_status ret = mdb_op_begin(st, &own);
    if (ret != STORE_OK)
        return ret;
    ret = mdb_group_conv(st, group, &conv);
    if (ret != STORE_OK)
        goto out;
    /* Children first: the foreign keys point at the conversation. */
    ret = mdb_exec(st, Q_CONV_DELETE_MEMBERS, NULL, conv);
    if (ret == STORE_OK)
        ret = mdb_exec(st, Q_CONV_DELETE_MESSAGES, NULL, conv);
    if (ret == STORE_OK)
        ret = mdb_exec(st, Q_GROUP_DELETE, NULL, group);
    if (ret == STORE_OK)
        ret = mdb_exec(st, Q_CONV_DELETE, NULL, conv);
out:
    return mdb_op_end(st, own, ret);
}

static store_status mdb_group_role(store *base, uint64_t group, uint64_t user, int *role_out)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_first(st, Q_GROUP_ROLE, group, user);
    if (ret == STORE_OK && role_out)
        *role_out = (int)st->col_i[0];
    mdb_done(st);
    return ret;
}

static store_status mdb_group_members(store *base, uint64_t group, store_member_cb cb, void *arg)
{
    mdb_store *st = mdb_of(base);
    uint64_t conv;
    store_status ret = mdb_group_conv(st, group, &conv);
    if (ret != STORE_OK)
        return ret;
    return mdb_members_each(st, conv, cb, arg);
}

static store_status mdb_user_groups(store *base, uint64_t user, store_group_cb cb, void *arg)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_query_run(st, Q_USER_GROUPS, user);
    if (ret != STORE_OK)
        return ret;
    int rc;
    while ((rc = mdb_fetch(st)) > 0) {
        store_group g;
        mdb_group_row(st, &g);
        if (cb(arg, &g) != 0)
            break;
    }
    if (rc < 0)
        ret = STORE_ERROR;
    mdb_done(st);
    return ret;
}

/* ---- messages ---- */

/* Fills the routing fields from the conversation's kind and pair. */
/* Reads a row made of MDB_MSG_COLS; body points into the column buffer. */
static void mdb_msg_row(mdb_store *st, store_msg *m)
{
    m->msgid = st->col_u[0];
    m->conv = st->col_u[1];
    m->seq = st->col_u[2];
    m->sender = st->col_u[3];
    m->body = st->col_buf[4];
    m->body_len = st->col_len[4];
    m->ts = st->col_i[5];
    m->recalled = st->col_i[6] != 0;
    store_route r = {
        .kind = (int)st->col_i[7], .lo = st->col_u[8], .hi = st->col_u[9], .group = st->col_u[10]};
    store_route_msg(m, &r);
    m->existed = 0;
}

/* Reads the current row (MDB_MSG_COLS) into out with the body copied into
 * the handle: the column buffer is reused by the next query, the copy lives
 * until the next call that makes one. */
static store_status mdb_msg_keep(mdb_store *st, store_msg *out)
{
    store_msg m;
    mdb_msg_row(st, &m);
    if (m.body_len + 1 > st->body_cap) {
        char *p = realloc(st->body, m.body_len + 1);
        if (!p) {
            mdb_set_err(st, "out of memory");
            return STORE_ERROR;
        }
        st->body = p;
        st->body_cap = m.body_len + 1;
    }
    memcpy(st->body, m.body, m.body_len);
    st->body[m.body_len] = '\0';
    m.body = st->body;
    if (out)
        *out = m;
    return STORE_OK;
}

/* The message sender sent with ref: OK (out filled, existed set), NOT_FOUND
 * or ERROR. */
static store_status mdb_msg_by_ref(mdb_store *st, uint64_t sender, uint64_t ref, store_msg *out)
{
    store_status ret = mdb_first(st, Q_MSG_BY_REF, sender, ref);
    if (ret == STORE_OK)
        ret = mdb_msg_keep(st, out);
    mdb_done(st);
    if (ret == STORE_OK)
        out->existed = 1;
    return ret;
}

/* Hands each row of the current message query to cb. */
static store_status mdb_msg_each(mdb_store *st, store_msg_cb cb, void *arg, unsigned *count)
{
    int rc;
    *count = 0;
    while ((rc = mdb_fetch(st)) > 0) {
        store_msg m;
        mdb_msg_row(st, &m);
        (*count)++;
        if (cb(arg, &m) != 0)
            return STORE_OK;
    }
    return rc == 0 ? STORE_OK : STORE_ERROR;
}

/* The routing of conv, from the cache or the database. */
static store_status mdb_conv_route(mdb_store *st, uint64_t conv, store_route *r)
{
    if (store_cache_route(st->cache, conv, r))
        return STORE_OK;
    store_status ret = mdb_first(st, Q_CONV_ROUTE, conv);
    if (ret == STORE_OK) {
        r->kind = (int)st->col_i[1];
        r->lo = st->col_u[2];
        r->hi = st->col_u[3];
        r->group = st->col_u[4];
    }
    mdb_done(st);
    if (ret == STORE_OK)
        store_cache_route_put(st->cache, conv, r);
    return ret;
}

static store_status mdb_message_append(store *base, uint64_t conv, uint64_t sender, uint64_t ref,
                                       const char *body, size_t body_len, int64_t ts,
                                       store_msg *out)
{
    mdb_store *st = mdb_of(base);
    store_msg m = {.conv = conv, .sender = sender, .ts = ts, .body = body, .body_len = body_len};
    /* One statement, atomic with its trigger's bump of last_seq, whose row
     * lock a transaction keeps until its end: no savepoint needed, a failed
     * insert takes no seq, and outside a transaction it commits alone. */
    store_status ret =
        mdb_first(st, Q_MSG_INSERT, conv, sender, (const void *)body, body_len, ts, ref);
    if (ret == STORE_OK) {
        m.msgid = st->col_u[0];
        m.seq = st->col_u[1];
        mdb_done(st);
    }
    /* A retry of a stored send: the unique (sender, ref) key made our
     * insert wait for the other transaction and fail. It is answered with
     * what the send did, even if conv is gone or another. */
    if ((ret == STORE_CONFLICT || ret == STORE_NOT_FOUND) && ref && !st->txn_lost) {
        char why[sizeof st->errmsg];
        memcpy(why, st->errmsg, sizeof why);
        store_status first = ret;
        store_msg old;
        ret = mdb_msg_by_ref(st, sender, ref, &old);
        if (ret == STORE_OK && out)
            *out = old;
        else if (ret == STORE_NOT_FOUND) {
            /* Not a retry: report the insert's error. */
            memcpy(st->errmsg, why, sizeof why);
            ret = first;
        }
        return ret;
    }
    if (ret != STORE_OK)
        return ret;
    store_route r;
    ret = mdb_conv_route(st, conv, &r);
    if (ret == STORE_OK && out) {
        store_route_msg(&m, &r);
        *out = m;
    }
    return ret;
}

static store_status mdb_message_by_ref(store *base, uint64_t sender, uint64_t ref, store_msg *out)
{
    store_msg m;
    return mdb_msg_by_ref(mdb_of(base), sender, ref, out ? out : &m);
}

static store_status mdb_message_get(store *base, uint64_t msgid, store_msg *out)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_first(st, Q_MSG_GET, msgid);
    if (ret == STORE_OK)
        ret = mdb_msg_keep(st, out);
    mdb_done(st);
    return ret;
}

static store_status mdb_message_recall(store *base, uint64_t msgid)
{
    uint64_t n;
    /* Matched rows, not changed ones: recalling twice finds the row. */
    store_status ret = mdb_exec(mdb_of(base), Q_MSG_RECALL, &n, msgid);
    if (ret == STORE_OK && n == 0)
        return STORE_NOT_FOUND;
    return ret;
}

static store_status mdb_history(store *base, uint64_t conv, uint64_t before_seq, unsigned limit,
                                store_msg_cb cb, void *arg)
{
    mdb_store *st = mdb_of(base);
    unsigned n = 0;
    store_status ret =
        mdb_query_run(st, Q_HISTORY, conv, before_seq ? before_seq : UINT64_MAX, (uint64_t)limit);
    if (ret == STORE_OK)
        ret = mdb_msg_each(st, cb, arg, &n);
    mdb_done(st);
    if (ret == STORE_OK && n == 0)
        ret = mdb_conv_exists(st, conv);
    return ret;
}

static store_status mdb_pending(store *base, uint64_t user, uint64_t after_msgid, unsigned limit,
                                store_msg_cb cb, void *arg)
{
    mdb_store *st = mdb_of(base);
    unsigned n;
    store_status ret = mdb_query_run(st, Q_PENDING, user, after_msgid, (uint64_t)limit);
    if (ret == STORE_OK)
        ret = mdb_msg_each(st, cb, arg, &n);
    mdb_done(st);
    return ret;
}

static store_status mdb_ack(store *base, uint64_t user, uint64_t conv, uint64_t seq)
{
    mdb_store *st = mdb_of(base);
    uint64_t n, last = 0;
    store_status ret = mdb_exec(st, Q_ACK_STORED, &n, seq, conv, user, conv, seq);
    if (ret != STORE_OK || n > 0)
        return ret;
    /* Not a member, or a seq past the end (or 0): capped at last_seq, since
     * a cursor past the end would hide future messages. */
    ret = mdb_first(st, Q_CONV_LAST_SEQ, conv);
    if (ret == STORE_OK)
        last = st->col_u[0];
    mdb_done(st);
    if (ret != STORE_OK && ret != STORE_NOT_FOUND)
        return ret;
    if (seq > last)
        seq = last;
    /* Matched rows: an ack that moves nothing still finds the member. */
    ret = mdb_exec(st, Q_ACK, &n, seq, conv, user);
    if (ret == STORE_OK && n == 0)
        return STORE_NOT_FOUND;
    return ret;
}

static store_status mdb_read_get(store *base, uint64_t user, uint64_t conv, uint64_t *last,
                                 uint64_t *cur)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_first(st, Q_READ_GET, user, conv, conv, user);
    if (ret == STORE_OK) {
        *last = st->col_u[0];
        *cur = st->col_u[1];
        mdb_done(st);
    }
    return ret;
}

static store_status mdb_read_put(store *base, uint64_t user, uint64_t conv, uint64_t seq)
{
    return mdb_exec(mdb_of(base), Q_READ_PUT, NULL, user, conv, seq);
}

static store_status mdb_unread(store *base, uint64_t user, unsigned limit, store_unread_row_cb cb,
                               void *arg)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_query_run(st, Q_UNREAD, user, user, (uint64_t)limit);
    if (ret != STORE_OK)
        return ret;
    int rc;
    while ((rc = mdb_fetch(st)) > 0) {
        store_unread_row r = {.conv = st->col_u[0],
                              .user_lo = st->col_u[1],
                              .user_hi = st->col_u[2],
                              .group = st->col_u[3],
                              .read_seq = st->col_u[4],
                              .last_seq = st->col_u[5],
                              .tail_count = st->col_u[6]};
        if (cb(arg, &r) != 0)
            break;
    }
    if (rc < 0)
        ret = STORE_ERROR;
    mdb_done(st);
    return ret;
}

/* A statement built at run time, prepared; NULL with the error set. */
static MYSQL_STMT *mdb_prepare_sql(mdb_store *st, const char *sql, int len)
{
    MYSQL_STMT *s = mysql_stmt_init(st->db);
    if (!s) {
        mdb_fail_db(st);
        return NULL;
    }
    if (mysql_stmt_prepare(s, sql, (unsigned long)len) != 0) {
        mdb_fail_stmt(st, s);
        mysql_stmt_close(s);
        return NULL;
    }
    return s;
}

/* The multi-row INSERT of mdb_many_rows(k) messages, prepared on first use. */
static MYSQL_STMT *mdb_many_stmt(mdb_store *st, int k)
{
    if (st->many[k])
        return st->many[k];
    char sql[128 + MDB_MANY_MAX * 24]; /* 20 bytes a row */
    int len = snprintf(sql, sizeof sql,
                       "INSERT INTO messages (conv_id, seq, sender, body, ts, ref) VALUES ");
    for (unsigned r = 0; r < mdb_many_rows(k); r++)
        len += snprintf(sql + len, sizeof sql - (size_t)len, "%s(?, 0, ?, ?, ?, ?)", r ? ", " : "");
    len += snprintf(sql + len, sizeof sql - (size_t)len, " RETURNING id, seq, conv_id");
    st->many[k] = mdb_prepare_sql(st, sql, len);
    return st->many[k];
}

/* Inserts reqs[0..rows) in one statement (s, of that many rows) and hands
 * each stored message to cb as reqs[base + i]. STORE_OK; or an error with
 * *stored 0: the statement failed whole, nothing stored, cb not called; or
 * an error with *stored 1: the rows are in, but their answer was lost. */
static store_status mdb_many_run(mdb_store *st, MYSQL_STMT *s, const store_append *reqs,
                                 unsigned rows, size_t base, store_append_cb cb, void *arg,
                                 int *stored)
{
    *stored = 0;
    memset(st->many_args, 0, sizeof(MYSQL_BIND) * rows * 5);
    for (unsigned r = 0; r < rows; r++) {
        const store_append *q = &reqs[r];
        MYSQL_BIND *b = &st->many_args[r * 5];
        uint64_t *u = &st->many_u[r * 3];
        u[0] = q->conv;
        u[1] = q->sender;
        u[2] = q->ref;
        b[0].buffer_type = b[1].buffer_type = MYSQL_TYPE_LONGLONG;
        b[0].buffer = &u[0];
        b[1].buffer = &u[1];
        b[0].is_unsigned = b[1].is_unsigned = 1;
        st->many_len[r] = (unsigned long)q->body_len;
        b[2].buffer_type = MYSQL_TYPE_BLOB;
        b[2].buffer = q->body_len ? (void *)q->body : (void *)"";
        b[2].buffer_length = st->many_len[r];
        b[2].length = &st->many_len[r];
        b[3].buffer_type = MYSQL_TYPE_LONGLONG;
        b[3].buffer = (void *)&q->ts;
        b[4].buffer_type = q->ref ? MYSQL_TYPE_LONGLONG : MYSQL_TYPE_NULL;
        b[4].buffer = &u[2];
        b[4].is_unsigned = 1;
    }
    /* The rows of RETURNING stream as they are inserted: a duplicate ref
     * or a missing conversation shows up while reading them, and undoes
     * the whole statement like an error of execute. */
    if (mysql_stmt_bind_param(s, st->many_args) != 0 || mysql_stmt_execute(s) != 0 ||
        mysql_stmt_store_result(s) != 0) {
        store_status ret = mdb_fail_stmt(st, s);
        mysql_stmt_free_result(s);
        return ret;
    }
    *stored = 1;
    store_status ret = STORE_OK;
    if (mysql_stmt_field_count(s) != 3 || mysql_stmt_num_rows(s) != rows) {
        mdb_set_err(st, "internal: a multi-row insert returned %u columns, %llu rows",
                    mysql_stmt_field_count(s), (unsigned long long)mysql_stmt_num_rows(s));
        st->last_errno = 0;
        ret = STORE_ERROR;
        goto out;
    }
    uint64_t col[3];
    MYSQL_BIND rb[3];
    memset(rb, 0, sizeof rb);
    for (int c = 0; c < 3; c++) {
        rb[c].buffer_type = MYSQL_TYPE_LONGLONG;
        rb[c].buffer = &col[c];
        rb[c].is_unsigned = 1;
    }
    if (mysql_stmt_bind_result(s, rb) != 0) {
        ret = mdb_fail_stmt(st, s);
        goto out;
    }
    /* RETURNING gives the rows in the order they were inserted, which is
     * the order of VALUES: each row is checked against its request. */
    for (unsigned r = 0; r < rows; r++) {
        const store_append *q = &reqs[r];
        if (mysql_stmt_fetch(s) != 0 || col[2] != q->conv) {
            mdb_set_err(st, "internal: a multi-row insert returned its rows out of order");
            st->last_errno = 0;
            ret = STORE_ERROR;
            goto out;
        }
        store_msg m = {.msgid = col[0],
                       .conv = q->conv,
                       .seq = col[1],
                       .sender = q->sender,
                       .ts = q->ts,
                       .body = q->body,
                       .body_len = q->body_len};
        store_route rt;
        store_status rs = mdb_conv_route(st, q->conv, &rt);
        if (rs == STORE_OK)
            store_route_msg(&m, &rt);
        cb(arg, base + r, rs, rs == STORE_OK ? &m : NULL);
    }
out:
    mysql_stmt_free_result(s);
    return ret;
}

static store_status mdb_message_append_many(store *base, const store_append *reqs, size_t n,
                                            store_append_cb cb, void *arg)
{
    mdb_store *st = mdb_of(base);
    size_t i = 0;
    while (i < n) {
        int k = mdb_many_pick(n - i);
        store_status ret = STORE_ERROR;
        if (k < MDB_MANY_SIZES) {
            mdb_done(st);
            MYSQL_STMT *s = mdb_many_stmt(st, k);
            int stored = 0;
            if (s && !(st->in_txn && st->txn_lost))
                ret = mdb_many_run(st, s, &reqs[i], mdb_many_rows(k), i, cb, arg, &stored);
            if (ret == STORE_OK) {
                i += mdb_many_rows(k);
                continue;
            }
            /* A statement whose rows stopped with an error is not to be run
             * again (the client library then reports the server gone):
             * prepare it afresh next time. */
            if (s && !st->dead) {
                mysql_stmt_close(s);
                st->many[k] = NULL;
            }
            if (stored && st->in_txn) {
                /* Stored, but which row got which msgid is unknown: undo
                 * the transaction and run it again rather than guess. */
                st->txn_lost = 1;
                return STORE_ERROR;
            }
            if (st->dead || (st->in_txn && st->txn_lost))
                return STORE_ERROR;
            if (stored) {
                /* Outside a transaction the rows stay: their senders are
                 * told of an error, and a retry with the same ref finds its
                 * message. */
                for (unsigned r = 0; r < mdb_many_rows(k); r++, i++)
                    cb(arg, i, STORE_ERROR, NULL);
                continue;
            }
        }
        /* One row left, or a statement that failed whole (a retried send's
         * ref, a conversation gone): each of its rows alone, which tells
         * them apart. A failed statement stored nothing, trigger included. */
        size_t end = k < MDB_MANY_SIZES ? i + mdb_many_rows(k) : i + 1;
        for (; i < end; i++) {
            const store_append *q = &reqs[i];
            store_msg m;
            ret = mdb_message_append(base, q->conv, q->sender, q->ref, q->body, q->body_len, q->ts,
                                     &m);
            if (st->dead || (st->in_txn && st->txn_lost))
                return STORE_ERROR;
            cb(arg, i, ret, ret == STORE_OK ? &m : NULL);
        }
    }
    return STORE_OK;
}

/* The UPDATE of mdb_many_rows(k) cursors, prepared on first use. Like
 * Q_ACK_STORED for each: a cursor moves only to the seq of a stored
 * message. */
static MYSQL_STMT *mdb_acks_stmt(mdb_store *st, int k)
{
    if (st->acks[k])
        return st->acks[k];
    char sql[512 + MDB_MANY_MAX * 32]; /* 27 bytes a row */
    int len = snprintf(sql, sizeof sql, "UPDATE members AS mb JOIN (");
    for (unsigned r = 0; r < mdb_many_rows(k); r++)
        len += snprintf(sql + len, sizeof sql - (size_t)len, "%s",
                        r ? " UNION ALL SELECT ?, ?, ?" : "SELECT ? AS u, ? AS c, ? AS s");
    len += snprintf(sql + len, sizeof sql - (size_t)len,
                    ") AS v ON mb.user_id = v.u AND mb.conv_id = v.c"
                    " SET mb.acked_seq = GREATEST(mb.acked_seq, v.s)"
                    " WHERE EXISTS (SELECT 1 FROM messages AS m"
                    " WHERE m.conv_id = v.c AND m.seq = v.s)");
    st->acks[k] = mdb_prepare_sql(st, sql, len);
    return st->acks[k];
}

static store_status mdb_ack_many(store *base, const store_cursor *c, size_t n)
{
    mdb_store *st = mdb_of(base);
    size_t i = 0;
    while (i < n) {
        int k = mdb_many_pick(n - i);
        size_t end = i + 1;
        if (k < MDB_MANY_SIZES) {
            unsigned rows = mdb_many_rows(k);
            end = i + rows;
            mdb_done(st);
            MYSQL_STMT *s = mdb_acks_stmt(st, k);
            if (!s)
                return STORE_ERROR;
            memset(st->many_args, 0, sizeof(MYSQL_BIND) * rows * 3);
            for (unsigned r = 0; r < rows; r++) {
                st->many_u[r * 3] = c[i + r].user;
                st->many_u[r * 3 + 1] = c[i + r].conv;
                st->many_u[r * 3 + 2] = c[i + r].seq;
            }
            for (unsigned a = 0; a < rows * 3; a++) {
                st->many_args[a].buffer_type = MYSQL_TYPE_LONGLONG;
                st->many_args[a].buffer = &st->many_u[a];
                st->many_args[a].is_unsigned = 1;
            }
            if (mysql_stmt_bind_param(s, st->many_args) != 0 || mysql_stmt_execute(s) != 0) {
                store_status ret = mdb_fail_stmt(st, s);
                mysql_stmt_close(s);
                st->acks[k] = NULL;
                return ret;
            }
            /* Every cursor matched (CLIENT_FOUND_ROWS): done. Otherwise
             * some are not members or name no stored message, which
             * store_ack tells apart one by one (moving a cursor again is
             * harmless). */
            if (mysql_stmt_affected_rows(s) == rows) {
                i = end;
                continue;
            }
        }
        for (; i < end; i++) {
            store_status ret = mdb_ack(base, c[i].user, c[i].conv, c[i].seq);
            if (ret != STORE_OK && ret != STORE_NOT_FOUND)
                return ret;
        }
    }
    return STORE_OK;
}

/* ---- URI ---- */

typedef struct {
    char user[128];
    char password[128];
    char host[256];
    char db[65];
    char socket[108]; /* sun_path's size */
    char tls_ca[1024];
    char password_file[1024];
    int tls; /* tls=require or tls-ca=: no connection without TLS */
    unsigned port;
} mdb_uri;

static int mdb_hex(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Copies s[0..n) into out, undoing %XX escapes (so a password may hold '@'
 * or '/'). 0 on success, -1 if malformed, too long or holding a NUL. */
static int mdb_unescape(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = mdb_hex(s[i + 1]), lo = mdb_hex(s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = hi * 16 + lo;
            i += 2;
        }
        if (c == 0 || o + 1 >= cap)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

/* Splits mariadb://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?OPTION&...] (the
 * options at the top of this file). The message never repeats the password. */
static int mdb_parse_uri(const char *uri, mdb_uri *u, char *err, size_t errlen)
{
    const char *why = NULL;
    memset(u, 0, sizeof *u);
    u->port = MDB_DEFAULT_PORT;
    const char *p = uri + strlen("mariadb://");
    const char *auth_end = p + strcspn(p, "/?#");
    const char *at = NULL;
    for (const char *c = p; c < auth_end; c++) {
        if (*c == '@')
            at = c; /* the last one: the host has none */
    }
    if (!at) {
        why = "no USER@ before the host";
        goto bad;
    }
    const char *colon = memchr(p, ':', (size_t)(at - p));
    const char *user_end = colon ? colon : at;
    if (user_end == p || mdb_unescape(p, (size_t)(user_end - p), u->user, sizeof u->user) != 0) {
        why = "bad or empty user";
        goto bad;
    }
    if (colon &&
        mdb_unescape(colon + 1, (size_t)(at - colon - 1), u->password, sizeof u->password) != 0) {
        why = "bad password";
        goto bad;
    }
    const char *h = at + 1, *h_end = auth_end, *port = NULL;
    if (*h == '[') { /* [IPv6]:PORT */
        const char *close = memchr(h, ']', (size_t)(auth_end - h));
        if (!close) {
            why = "unclosed [ in host";
            goto bad;
        }
        if (close + 1 < auth_end) {
            if (close[1] != ':') {
                why = "bad host";
                goto bad;
            }
            port = close + 2;
        }
        h++;
        h_end = close;
    } else {
        const char *c = memchr(h, ':', (size_t)(auth_end - h));
        if (c) {
            port = c + 1;
            h_end = c;
        }
    }
    if (mdb_unescape(h, (size_t)(h_end - h), u->host, sizeof u->host) != 0) {
        why = "bad host";
        goto bad;
    }
    if (port) {
        unsigned long v = 0;
        const char *c = port;
        for (; c < auth_end && *c >= '0' && *c <= '9' && v <= 65535; c++)
            v = v * 10 + (unsigned long)(*c - '0');
        if (c != auth_end || c == port || v == 0 || v > 65535) {
            why = "bad port";
            goto bad;
        }
        u->port = (unsigned)v;
    }
    if (*auth_end != '/') {
        why = "no /DATABASE";
        goto bad;
    }
    const char *d = auth_end + 1;
    const char *d_end = d + strcspn(d, "?#");
    if (d_end == d || mdb_unescape(d, (size_t)(d_end - d), u->db, sizeof u->db) != 0) {
        why = "bad or empty database name";
        goto bad;
    }
    if (*d_end == '#') {
        why = "unexpected #";
        goto bad;
    }
    for (const char *q = d_end; *q == '?' || *q == '&';) {
        q++;
        size_t n = strcspn(q, "&#");
        if (n > 7 && strncmp(q, "socket=", 7) == 0) {
            if (mdb_unescape(q + 7, n - 7, u->socket, sizeof u->socket) != 0) {
                why = "bad socket path";
                goto bad;
            }
        } else if (n == 11 && strncmp(q, "tls=require", 11) == 0) {
            u->tls = 1;
        } else if (n > 7 && strncmp(q, "tls-ca=", 7) == 0) {
            if (mdb_unescape(q + 7, n - 7, u->tls_ca, sizeof u->tls_ca) != 0) {
                why = "bad tls-ca path";
                goto bad;
            }
            u->tls = 1;
        } else if (n > 14 && strncmp(q, "password-file=", 14) == 0) {
            if (mdb_unescape(q + 14, n - 14, u->password_file, sizeof u->password_file) != 0) {
                why = "bad password-file path";
                goto bad;
            }
        } else {
            why = "unknown option (socket=PATH, tls=require, tls-ca=PATH, password-file=PATH)";
            goto bad;
        }
        q += n;
        if (*q == '#') {
            why = "unexpected #";
            goto bad;
        }
    }
    if (!u->host[0] && !u->socket[0]) {
        why = "no host";
        goto bad;
    }
    if (u->password[0] && u->password_file[0]) {
        why = "a password and a password-file: give one of them";
        goto bad;
    }
    return 0;
bad:
    if (err && errlen)
        snprintf(err, errlen,
                 "bad MariaDB URI (want mariadb://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
                 "[?OPTION&...]): %s",
                 why);
    return -1;
}

/* ---- open / close ---- */

/* tls=require / tls-ca=: TLS 1.2 or 1.3 or no connection at all; with a
 * CA, the server's certificate must chain to it and name the host we dial
 * (the library checks both with SSL_VERIFY_SERVER_CERT). */
static store_status mdb_tls_options(mdb_store *st, const mdb_uri *u)
{
    my_bool on = 1;
    if (!u->tls)
        return STORE_OK;
    if (mysql_options(st->db, MYSQL_OPT_SSL_ENFORCE, &on) != 0 ||
        mysql_options(st->db, MARIADB_OPT_TLS_VERSION, "TLSv1.2,TLSv1.3") != 0 ||
        (u->tls_ca[0] && (mysql_options(st->db, MYSQL_OPT_SSL_CA, u->tls_ca) != 0 ||
                          mysql_options(st->db, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &on) != 0))) {
        mdb_set_err(st, "cannot set MariaDB TLS options: %s", mysql_error(st->db));
        return STORE_ERROR;
    }
    return STORE_OK;
}

/* Says once per process (then at debug level) how the store's connection
 * is protected, and refuses one without TLS when TLS was asked for: the
 * library's enforcement is checked, not trusted. */
static store_status mdb_tls_check(mdb_store *st, const mdb_uri *u)
{
    static atomic_int said;
    const char *version = NULL;
    if (mariadb_get_infov(st->db, MARIADB_CONNECTION_TLS_VERSION, &version) != 0)
        version = NULL;
    if (u->tls && !version) {
        mdb_set_err(st,
                    "cannot connect to MariaDB at %s: TLS required, and the connection has none",
                    st->where);
        return STORE_ERROR;
    }
    log_level level = atomic_exchange(&said, 1) ? LOG_DEBUG : LOG_INFO;
    if (version)
        log_msg(level, "mariadb: connected over %s to %s (%s)", version, st->where,
                u->tls_ca[0] ? "server certificate verified with tls-ca"
                             : "server certificate not verified: no tls-ca");
    else if (level == LOG_INFO && !u->socket[0] && strcmp(u->host, "127.0.0.1") != 0 &&
             strcmp(u->host, "localhost") != 0 && strcmp(u->host, "::1") != 0)
        log_warn("mariadb: connected without TLS to %s: passwords and messages cross the "
                 "network in plain text (docs/security.md)",
                 st->where);
    else
        log_msg(level, "mariadb: connected without TLS to %s", st->where);
    return STORE_OK;
}

static store_status mdb_connect(mdb_store *st, const mdb_uri *u)
{
    unsigned connect_timeout = MDB_CONNECT_TIMEOUT_S, io_timeout = MDB_IO_TIMEOUT_S;
    unsigned protocol = u->socket[0] ? MYSQL_PROTOCOL_SOCKET : MYSQL_PROTOCOL_TCP;
    unsigned no = 0;
    my_bool reconnect = 0;
    if (u->socket[0])
        snprintf(st->where, sizeof st->where, "unix socket %s", u->socket);
    else
        snprintf(st->where, sizeof st->where, "%s:%u", u->host, u->port);
    st->db = mysql_init(NULL);
    if (!st->db) {
        mdb_set_err(st, "out of memory");
        return STORE_ERROR;
    }
    /* No reconnect: a silent new connection would lose the transaction and
     * the session settings. The protocol is explicit so that "localhost"
     * means TCP unless a socket is named. No LOAD DATA LOCAL: the server
     * gets no way to ask for our files. */
    if (mysql_options(st->db, MYSQL_OPT_RECONNECT, &reconnect) != 0 ||
        mysql_options(st->db, MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout) != 0 ||
        mysql_options(st->db, MYSQL_OPT_READ_TIMEOUT, &io_timeout) != 0 ||
        mysql_options(st->db, MYSQL_OPT_WRITE_TIMEOUT, &io_timeout) != 0 ||
        mysql_options(st->db, MYSQL_SET_CHARSET_NAME, "utf8mb4") != 0 ||
        mysql_options(st->db, MYSQL_OPT_PROTOCOL, &protocol) != 0 ||
        mysql_options(st->db, MYSQL_OPT_LOCAL_INFILE, &no) != 0) {
        mdb_set_err(st, "cannot set MariaDB client options: %s", mysql_error(st->db));
        return STORE_ERROR;
    }
    if (mdb_tls_options(st, u) != STORE_OK)
        return STORE_ERROR;
    char password[sizeof u->password], why[256];
    snprintf(password, sizeof password, "%s", u->password);
    if (u->password_file[0] &&
        secret_read_line(u->password_file, password, sizeof password, why, sizeof why) < 0) {
        mdb_set_err(st, "MariaDB password-file: %s", why);
        return STORE_ERROR;
    }
    /* CLIENT_FOUND_ROWS: an UPDATE reports the rows it matched, so an ack
     * or recall that changes nothing is not mistaken for a missing row. */
    MYSQL *ok = mysql_real_connect(st->db, u->host[0] ? u->host : "localhost", u->user,
                                   password[0] ? password : NULL, u->db, u->port,
                                   u->socket[0] ? u->socket : NULL, CLIENT_FOUND_ROWS);
    explicit_bzero(password, sizeof password);
    if (!ok) {
        mdb_set_err(st, "cannot connect to MariaDB at %s%s: %s", st->where,
                    u->tls ? (u->tls_ca[0] ? " (TLS required, server verified with tls-ca)"
                                           : " (TLS required)")
                           : "",
                    mysql_error(st->db));
        return STORE_ERROR;
    }
    return mdb_tls_check(st, u);
}

static store_status mdb_configure(mdb_store *st)
{
    for (int i = 0; mdb_session_sql[i]; i++) {
        if (mdb_sql_once(st, mdb_session_sql[i]) != STORE_OK)
            return STORE_ERROR;
    }
    /* Read once: the server cannot change it without a restart. With it on,
     * a lock wait timeout ends the whole transaction (and @@in_transaction
     * reads 0 afterwards), like a deadlock. */
    store_status ret = mdb_first(st, Q_ROLLBACK_ON_TIMEOUT);
    if (ret == STORE_OK)
        st->rollback_on_timeout = st->col_i[0] != 0;
    mdb_done(st);
    mdb_unprepare(st, Q_ROLLBACK_ON_TIMEOUT);
    return ret == STORE_OK ? STORE_OK : STORE_ERROR;
}

/* The applied version; 0 on a database without the schema_version table. */
static store_status mdb_schema_version(mdb_store *st, uint64_t *version)
{
    store_status ret = mdb_first(st, Q_SCHEMA_VERSION);
    if (ret == STORE_OK)
        *version = st->col_u[0];
    mdb_done(st);
    if (ret == STORE_ERROR && st->last_errno == ER_NO_SUCH_TABLE) {
        *version = 0;
        ret = STORE_OK;
    }
    return ret == STORE_OK ? STORE_OK : STORE_ERROR;
}

/* Brings the schema to MDB_SCHEMA_VERSION. DDL commits implicitly, so
 * connections opening at once serialise on a named lock instead of a
 * transaction; the version is read again under it so that only the first
 * one migrates. */
static store_status mdb_migrate(mdb_store *st)
{
    uint64_t version = 0;
    int locked = 0;
    store_status ret = mdb_schema_version(st, &version);
    if (ret != STORE_OK || version == MDB_SCHEMA_VERSION)
        goto out;
    ret = mdb_first(st, Q_SCHEMA_LOCK, (int)MDB_SCHEMA_LOCK_WAIT_S);
    locked = ret == STORE_OK && !st->col_null[0] && st->col_i[0] == 1;
    mdb_done(st);
    if (ret != STORE_OK)
        goto out;
    if (!locked) {
        mdb_set_err(st, "timed out waiting for another connection to migrate the schema");
        ret = STORE_ERROR;
        goto out;
    }
    ret = mdb_sql_once(st, mdb_schema_table);
    if (ret == STORE_OK)
        ret = mdb_schema_version(st, &version);
    if (ret != STORE_OK)
        goto out;
    if (version > MDB_SCHEMA_VERSION) {
        mdb_set_err(st, "schema version %llu unknown to this build (latest %d)",
                    (unsigned long long)version, MDB_SCHEMA_VERSION);
        ret = STORE_ERROR;
        goto out;
    }
    for (; version < MDB_SCHEMA_VERSION; version++) {
        for (const char *const *sql = mdb_migrations[version]; *sql && ret == STORE_OK; sql++)
            ret = mdb_sql_once(st, *sql);
        if (ret == STORE_OK)
            ret = mdb_exec(st, Q_SCHEMA_SET, NULL, version + 1);
        if (ret != STORE_OK)
            goto out;
    }
out:
    if (locked) {
        /* Also released when the connection closes, should this fail. */
        char saved[sizeof st->errmsg];
        memcpy(saved, st->errmsg, sizeof saved);
        if (mdb_first(st, Q_SCHEMA_UNLOCK) == STORE_OK)
            mdb_done(st);
        memcpy(st->errmsg, saved, sizeof saved);
    }
    mdb_unprepare(st, Q_SCHEMA_VERSION);
    mdb_unprepare(st, Q_SCHEMA_LOCK);
    mdb_unprepare(st, Q_SCHEMA_UNLOCK);
    mdb_unprepare(st, Q_SCHEMA_SET);
    return ret;
}

static void mdb_close(store *base)
{
    mdb_store *st = mdb_of(base);
    if (!st)
        return;
    mdb_done(st);
    for (int i = 0; i < Q_COUNT; i++) {
        if (st->q[i])
            mysql_stmt_close(st->q[i]);
    }
    for (int i = 0; i < MDB_MANY_SIZES; i++) {
        if (st->many[i])
            mysql_stmt_close(st->many[i]);
        if (st->acks[i])
            mysql_stmt_close(st->acks[i]);
    }
    /* An open transaction is rolled back by the server. */
    if (st->db)
        mysql_close(st->db);
    for (int k = 0; k < MDB_COLS_MAX; k++)
        free(st->col_buf[k]);
    free(st->body);
    store_cache_free(st->cache);
    mdb_thread_leave(st);
    free(st);
}

static void mdb_base_set_err(store *base, const char *msg)
{
    mdb_set_err(mdb_of(base), "%s", msg);
}

static const char *mdb_errmsg(const store *base)
{
    const mdb_store *st = (const mdb_store *)base;
    return st ? st->errmsg : "no store";
}

static const store_ops mdb_ops;

store *store_mariadb_open(const char *uri, char *err, size_t errlen)
{
    mdb_uri u;
    if (mdb_parse_uri(uri, &u, err, errlen) != 0)
        return NULL;
    pthread_once(&mdb_once, mdb_library_init);
    mdb_store *st = calloc(1, sizeof *st);
    if (!st || !mdb_library_ok) {
        if (err && errlen)
            snprintf(err, errlen, "%s",
                     st ? "cannot initialise the MariaDB client library" : "out of memory");
        free(st);
        explicit_bzero(u.password, sizeof u.password);
        return NULL;
    }
    st->base.ops = &mdb_ops;
    st->cache = store_cache_new();
    if (!st->cache) {
        free(st);
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        explicit_bzero(u.password, sizeof u.password);
        return NULL;
    }
    mdb_thread_enter(st);
    int connected = mdb_connect(st, &u) == STORE_OK;
    explicit_bzero(u.password, sizeof u.password);
    if (!connected)
        goto fail;
    if (mdb_configure(st) != STORE_OK || mdb_migrate(st) != STORE_OK) {
        char why[sizeof st->errmsg];
        memcpy(why, st->errmsg, sizeof why);
        mdb_set_err(st, "MariaDB at %s, database %s: %s", st->where, u.db, why);
        goto fail;
    }
    return &st->base;
fail:
    if (err && errlen)
        snprintf(err, errlen, "%s", st->errmsg);
    mdb_close(&st->base);
    return NULL;
}

/* ---- administration ---- */

static store_status mdb_users_find(store *base, const char *from, const char *after, unsigned limit,
                                   store_userrow_cb cb, void *arg)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_query_run(st, Q_USERS_FIND, from, after, (uint64_t)limit);
    if (ret != STORE_OK)
        return ret;
    int rc;
    while ((rc = mdb_fetch(st)) > 0) {
        store_user u;
        mdb_user_row(st, &u);
        if (cb(arg, &u) != 0)
            break;
    }
    if (rc < 0)
        ret = STORE_ERROR;
    mdb_done(st);
    return ret;
}

static store_status mdb_user_sessions(store *base, uint64_t user, unsigned limit,
                                      store_session_cb cb, void *arg)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_query_run(st, Q_USER_SESSIONS, user, (uint64_t)limit);
    if (ret != STORE_OK)
        return ret;
    int rc;
    while ((rc = mdb_fetch(st)) > 0) {
        if (cb(arg, st->col_i[0], st->col_i[1]) != 0)
            break;
    }
    if (rc < 0)
        ret = STORE_ERROR;
    mdb_done(st);
    return ret;
}

static store_status mdb_user_set_banned(store *base, uint64_t user, int banned)
{
    return mdb_exec(mdb_of(base), Q_USER_SET_BANNED, NULL, banned, user);
}

static store_status mdb_user_set_pwhash(store *base, uint64_t user, const char *pwhash)
{
    return mdb_exec(mdb_of(base), Q_USER_SET_PWHASH, NULL, pwhash, user);
}

static store_status mdb_user_tombstone(store *base, uint64_t user, const char *name)
{
    return mdb_exec(mdb_of(base), Q_USER_TOMBSTONE, NULL, name, user);
}

static store_status mdb_user_unlink(store *base, uint64_t user, store_unlink_kind what)
{
    mdb_store *st = mdb_of(base);
    if (what == STORE_UNLINK_FRIENDS)
        return mdb_exec(st, Q_UNLINK_FRIENDS, NULL, user, user);
    return mdb_exec(st,
                    what == STORE_UNLINK_GROUPS  ? Q_UNLINK_GROUPS
                    : what == STORE_UNLINK_FILES ? Q_UNLINK_FILES
                                                 : Q_UNLINK_BODIES,
                    NULL, user);
}

/* ---- files ---- */

static void mdb_copy_hash(mdb_store *st, int col, uint8_t out[32])
{
    memset(out, 0, 32);
    if (st->col_len[col] == 32)
        memcpy(out, st->col_buf[col], 32);
}

static void mdb_upload_row(mdb_store *st, store_upload *u)
{
    u->id = st->col_u[0];
    u->user = st->col_u[1];
    mdb_copy_hash(st, 2, u->f.sha256);
    mdb_copy_text(st, 3, u->f.name, sizeof u->f.name);
    mdb_copy_text(st, 4, u->f.type, sizeof u->f.type);
    u->f.size = st->col_u[5];
    u->received = st->col_u[6];
    u->created_ms = st->col_i[7];
}

/* msgid, sha256, name, type, size */
static uint64_t mdb_msgfile_row(mdb_store *st, store_file *f)
{
    mdb_copy_hash(st, 1, f->sha256);
    mdb_copy_text(st, 2, f->name, sizeof f->name);
    mdb_copy_text(st, 3, f->type, sizeof f->type);
    f->size = st->col_u[4];
    return st->col_u[0];
}

static store_status mdb_upload_insert(store *base, const store_upload *u, uint64_t *id_out)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_exec(st, Q_UPLOAD_INSERT, NULL, u->user, u->f.sha256, u->f.name,
                                u->f.type, u->f.size, u->received, u->created_ms);
    if (ret == STORE_OK)
        *id_out = st->insert_id;
    return ret;
}

static store_status mdb_upload_get(store *base, uint64_t id, store_upload *out)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_first(st, Q_UPLOAD_GET, id);
    if (ret == STORE_OK)
        mdb_upload_row(st, out);
    mdb_done(st);
    return ret;
}

static store_status mdb_upload_find(store *base, uint64_t user, const uint8_t sha256[32],
                                    store_upload *out)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_first(st, Q_UPLOAD_FIND, user, sha256);
    if (ret == STORE_OK)
        mdb_upload_row(st, out);
    mdb_done(st);
    return ret;
}

/* A write of one row by key: NOT_FOUND if it matched none. */
static store_status mdb_one_row(store_status ret, uint64_t affected)
{
    return ret == STORE_OK && affected == 0 ? STORE_NOT_FOUND : ret;
}

static store_status mdb_upload_set_received(store *base, uint64_t id, uint64_t received)
{
    uint64_t n;
    store_status ret = mdb_exec(mdb_of(base), Q_UPLOAD_SET_RECEIVED, &n, received, id);
    return mdb_one_row(ret, n);
}

static store_status mdb_upload_delete(store *base, uint64_t id)
{
    uint64_t n;
    store_status ret = mdb_exec(mdb_of(base), Q_UPLOAD_DELETE, &n, id);
    return mdb_one_row(ret, n);
}

static store_status mdb_uploads_expired(store *base, int64_t before_ms, unsigned limit,
                                        store_upload_cb cb, void *arg)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_query_run(st, Q_UPLOADS_EXPIRED, before_ms, (uint64_t)limit);
    if (ret != STORE_OK)
        return ret;
    int rc;
    while ((rc = mdb_fetch(st)) > 0) {
        store_upload u;
        mdb_upload_row(st, &u);
        if (cb(arg, &u) != 0)
            break;
    }
    if (rc < 0)
        ret = STORE_ERROR;
    mdb_done(st);
    return ret;
}

static store_status mdb_file_usage(store *base, uint64_t user, uint64_t *uploads, uint64_t *bytes)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_first(st, Q_FILE_USAGE, user, user, user);
    if (ret == STORE_OK) {
        *uploads = st->col_u[0];
        *bytes = st->col_u[1];
    }
    mdb_done(st);
    return ret;
}

static store_status mdb_file_get(store *base, const uint8_t sha256[32], uint64_t *size_out)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_first(st, Q_FILE_GET, sha256);
    if (ret == STORE_OK)
        *size_out = st->col_u[0];
    mdb_done(st);
    return ret;
}

static store_status mdb_file_put(store *base, const uint8_t sha256[32], uint64_t size,
                                 int64_t now_ms)
{
    return mdb_exec(mdb_of(base), Q_FILE_PUT, NULL, sha256, size, now_ms);
}

static store_status mdb_file_refs(store *base, const uint8_t sha256[32], uint64_t *n)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_first(st, Q_FILE_REFS, sha256, sha256);
    if (ret == STORE_OK)
        *n = st->col_u[0];
    mdb_done(st);
    return ret;
}

static store_status mdb_file_delete(store *base, const uint8_t sha256[32])
{
    uint64_t n;
    store_status ret = mdb_exec(mdb_of(base), Q_FILE_DELETE, &n, sha256);
    return mdb_one_row(ret, n);
}

static store_status mdb_files_after(store *base, const uint8_t after[32], unsigned limit,
                                    store_content_cb cb, void *arg)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_query_run(st, Q_FILES_AFTER, after, (uint64_t)limit);
    if (ret != STORE_OK)
        return ret;
    int rc;
    while ((rc = mdb_fetch(st)) > 0) {
        uint8_t sha[32];
        mdb_copy_hash(st, 0, sha);
        if (cb(arg, sha, st->col_u[1]) != 0)
            break;
    }
    if (rc < 0)
        ret = STORE_ERROR;
    mdb_done(st);
    return ret;
}

static store_status mdb_msg_file_insert(store *base, uint64_t msgid, uint64_t sender,
                                        const store_file *f)
{
    return mdb_exec(mdb_of(base), Q_MSG_FILE_INSERT, NULL, msgid, sender, f->sha256, f->name,
                    f->type, f->size);
}

static store_status mdb_msg_file_get(store *base, uint64_t msgid, store_file *out)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_first(st, Q_MSG_FILE_GET, msgid);
    if (ret == STORE_OK)
        mdb_msgfile_row(st, out);
    mdb_done(st);
    return ret;
}

static store_status mdb_msg_file_delete(store *base, uint64_t msgid)
{
    uint64_t n;
    store_status ret = mdb_exec(mdb_of(base), Q_MSG_FILE_DELETE, &n, msgid);
    return mdb_one_row(ret, n);
}

static store_status mdb_msg_files(store *base, uint64_t lo, uint64_t hi, store_msgfile_cb cb,
                                  void *arg)
{
    mdb_store *st = mdb_of(base);
    store_status ret = mdb_query_run(st, Q_MSG_FILES, lo, hi);
    if (ret != STORE_OK)
        return ret;
    int rc;
    while ((rc = mdb_fetch(st)) > 0) {
        store_file f;
        uint64_t msgid = mdb_msgfile_row(st, &f);
        if (cb(arg, msgid, &f) != 0)
            break;
    }
    if (rc < 0)
        ret = STORE_ERROR;
    mdb_done(st);
    return ret;
}

static const store_ops mdb_ops = {
    .name = "mariadb",
    .close = mdb_close,
    .errmsg = mdb_errmsg,
    .set_err = mdb_base_set_err,
    .txn_lost = mdb_txn_lost,
    .is_dead = mdb_is_dead,
    .begin = mdb_begin,
    .commit = mdb_commit,
    .rollback = mdb_rollback,
    .savepoint = mdb_savepoint,
    .release = mdb_release,
    .rollback_to = mdb_rollback_to,
    .user_create = mdb_user_create,
    .user_by_id = mdb_user_by_id,
    .user_by_name = mdb_user_by_name,
    .op_begin = mdb_base_op_begin,
    .op_end = mdb_base_op_end,
    .session_insert = mdb_session_insert,
    .session_trim = mdb_session_trim,
    .session_get = mdb_session_get,
    .session_touch = mdb_session_touch,
    .session_delete = mdb_session_delete,
    .session_delete_user = mdb_session_delete_user,
    .sessions_expire = mdb_sessions_expire,
    .count = mdb_count,
    .friend_add = mdb_friend_add,
    .friend_del = mdb_friend_del,
    .friend_list = mdb_friend_list,
    .group_create = mdb_group_create,
    .group_get = mdb_group_get,
    .group_join = mdb_group_join,
    .group_quit = mdb_group_quit,
    .group_delete = mdb_group_delete,
    .group_role = mdb_group_role,
    .group_members = mdb_group_members,
    .user_groups = mdb_user_groups,
    .direct_conv = mdb_direct_conv,
    .conv_members = mdb_conv_members,
    .message_append = mdb_message_append,
    .message_append_many = mdb_message_append_many,
    .ack_many = mdb_ack_many,
    .message_get = mdb_message_get,
    .message_by_ref = mdb_message_by_ref,
    .message_recall = mdb_message_recall,
    .history = mdb_history,
    .pending = mdb_pending,
    .ack = mdb_ack,
    .users_find = mdb_users_find,
    .read_get = mdb_read_get,
    .read_put = mdb_read_put,
    .unread = mdb_unread,
    .user_sessions = mdb_user_sessions,
    .user_set_banned = mdb_user_set_banned,
    .user_set_pwhash = mdb_user_set_pwhash,
    .user_tombstone = mdb_user_tombstone,
    .user_unlink = mdb_user_unlink,
    .upload_insert = mdb_upload_insert,
    .upload_get = mdb_upload_get,
    .upload_find = mdb_upload_find,
    .upload_set_received = mdb_upload_set_received,
    .upload_delete = mdb_upload_delete,
    .uploads_expired = mdb_uploads_expired,
    .file_usage = mdb_file_usage,
    .file_get = mdb_file_get,
    .file_put = mdb_file_put,
    .file_refs = mdb_file_refs,
    .file_delete = mdb_file_delete,
    .files_after = mdb_files_after,
    .msg_file_insert = mdb_msg_file_insert,
    .msg_file_get = mdb_msg_file_get,
    .msg_file_delete = mdb_msg_file_delete,
    .msg_files = mdb_msg_files,
};
