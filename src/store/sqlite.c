/*
 * store on SQLite 3 (the "sqlite:" backend behind store_impl.h's ops): one
 * connection per handle, WAL journal, every statement prepared once at open
 * and reused.
 *
 * Callbacks run while their statement is being stepped, so they must not call
 * back into the same handle.
 */
#include "store/store_impl.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "store/cache.h"
#include "store/sqlite_vfs.h"

/* Schema migrations: step i takes user_version from i to i + 1, and says so
 * itself. Append new steps; never edit one that has shipped. */
static const char *const store_migrations[] = {
    /* 0 -> 1: the first schema. */
    "CREATE TABLE IF NOT EXISTS users ("
    " id INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL UNIQUE,"
    " pwhash TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS sessions ("
    " token_hash BLOB PRIMARY KEY,"
    " user_id INTEGER NOT NULL REFERENCES users(id),"
    " created_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS friends ("
    " user_id INTEGER NOT NULL REFERENCES users(id),"
    " friend_id INTEGER NOT NULL REFERENCES users(id),"
    " created_ms INTEGER NOT NULL,"
    " PRIMARY KEY (user_id, friend_id)) WITHOUT ROWID;"
    /* AUTOINCREMENT where rows get deleted: an id is never reused, so an id
     * a client still holds cannot name a newer group or message, and msgids
     * keep increasing even after the newest messages are deleted (messages
     * do that another way since step 3 -> 4). */
    "CREATE TABLE IF NOT EXISTS convs ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " kind INTEGER NOT NULL,"
    " last_seq INTEGER NOT NULL DEFAULT 0," /* dropped by step 2 -> 3 */
    " user_lo INTEGER REFERENCES users(id),"
    " user_hi INTEGER REFERENCES users(id),"
    " UNIQUE (user_lo, user_hi));"
    "CREATE TABLE IF NOT EXISTS groups_ ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " name TEXT NOT NULL UNIQUE,"
    " description TEXT NOT NULL,"
    " creator INTEGER NOT NULL REFERENCES users(id),"
    " conv_id INTEGER NOT NULL UNIQUE REFERENCES convs(id),"
    " created_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS members ("
    " conv_id INTEGER NOT NULL REFERENCES convs(id),"
    " user_id INTEGER NOT NULL REFERENCES users(id),"
    " role INTEGER NOT NULL,"
    " acked_seq INTEGER NOT NULL DEFAULT 0,"
    " joined_ms INTEGER NOT NULL,"
    " PRIMARY KEY (conv_id, user_id)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS members_by_user ON members (user_id);"
    "CREATE TABLE IF NOT EXISTS messages ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " conv_id INTEGER NOT NULL REFERENCES convs(id),"
    " seq INTEGER NOT NULL,"
    " sender INTEGER NOT NULL REFERENCES users(id),"
    " body BLOB NOT NULL,"
    " ts INTEGER NOT NULL,"
    " recalled INTEGER NOT NULL DEFAULT 0,"
    " UNIQUE (conv_id, seq));"
    "PRAGMA user_version = 1;",
    /* 1 -> 2: idempotent sends. ref is the sender's reference for a send,
     * NULL for none; its 64 bits are kept as the signed integer with the
     * same bits. The partial unique index makes a (sender, ref) pair name
     * one message and finds it. DDL is transactional here: store_migrate
     * runs the step whole or not at all. */
    "ALTER TABLE messages ADD COLUMN ref INTEGER;"
    "CREATE UNIQUE INDEX IF NOT EXISTS messages_sender_ref ON messages (sender, ref)"
    " WHERE ref IS NOT NULL;"
    "PRAGMA user_version = 2;",
    /* 2 -> 3: a conversation's last seq is max(seq) of its messages, found
     * in the (conv_id, seq) index; a counter beside it only cost a write of
     * the convs row per message. */
    "ALTER TABLE convs DROP COLUMN last_seq;"
    "PRAGMA user_version = 3;",
    /* 3 -> 4: messages without AUTOINCREMENT, whose counter row in
     * sqlite_sequence was written by every insert: a page of WAL per commit,
     * a quarter of all the WAL a paced load wrote. An id is still never
     * reused: msg_id_floor keeps the highest id as it was before messages
     * were last deleted, and an insert takes the next id above both it and
     * the highest left. The table is copied whole, once. */
    "CREATE TABLE msg_id_floor (id INTEGER NOT NULL);"
    "INSERT INTO msg_id_floor"
    " SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0);"
    "CREATE TABLE messages_v4 ("
    " id INTEGER PRIMARY KEY,"
    " conv_id INTEGER NOT NULL REFERENCES convs(id),"
    " seq INTEGER NOT NULL,"
    " sender INTEGER NOT NULL REFERENCES users(id),"
    " body BLOB NOT NULL,"
    " ts INTEGER NOT NULL,"
    " recalled INTEGER NOT NULL DEFAULT 0,"
    " ref INTEGER,"
    " UNIQUE (conv_id, seq));"
    "INSERT INTO messages_v4 (id, conv_id, seq, sender, body, ts, recalled, ref)"
    " SELECT id, conv_id, seq, sender, body, ts, recalled, ref FROM messages;"
    "DROP TABLE messages;"
    "ALTER TABLE messages_v4 RENAME TO messages;"
    "CREATE UNIQUE INDEX messages_sender_ref ON messages (sender, ref) WHERE ref IS NOT NULL;"
    "DELETE FROM sqlite_sequence WHERE name = 'messages';"
    "PRAGMA user_version = 4;",
    /* 4 -> 5: sessions expire and are bounded per user. last_used is when a
     * session was last used; one from before starts at its created time, so
     * it gets the whole idle time from its login, not none (the NOT NULL
     * column needs a default; every insert names it). Indexes for the
     * housekeeping sweep (oldest first) and for a user's sessions (bound,
     * logout everywhere). members_by_user gains role: a user's groups,
     * whose roles are above ROLE_NONE (0) unlike direct conversations', are
     * then one range of it to count; it still serves every lookup by user. */
    "ALTER TABLE sessions ADD COLUMN last_used INTEGER NOT NULL DEFAULT 0;"
    "UPDATE sessions SET last_used = created_ms;"
    "CREATE INDEX sessions_by_user ON sessions (user_id);"
    "CREATE INDEX sessions_by_last_used ON sessions (last_used);"
    "CREATE INDEX members_by_user_role ON members (user_id, role);"
    "DROP INDEX members_by_user;"
    "PRAGMA user_version = 5;",
    /* 5 -> 6: the ref index leads with ref. Clients send time-ordered ids
     * (docs/protocol.md), so the entries of one commit sit together at the
     * index's end; led by sender, each sender in a commit had a page of its
     * own to change and write, which made a send with an id cost half as
     * much again as one without. Every lookup names both columns. */
    "DROP INDEX messages_sender_ref;"
    "CREATE UNIQUE INDEX messages_ref_sender ON messages (ref, sender) WHERE ref IS NOT NULL;"
    "PRAGMA user_version = 6;",
    /* 6 -> 7: an operator may suspend an account (parleyctl ban). */
    "ALTER TABLE users ADD COLUMN banned INTEGER NOT NULL DEFAULT 0;"
    "PRAGMA user_version = 7;",
};

enum { STORE_SCHEMA_VERSION = sizeof store_migrations / sizeof store_migrations[0] };

/* Every message query yields these columns, in this order (store_msg_row). */
#define STORE_MSG_COLS                                                                             \
    "m.id AS id, m.conv_id AS conv_id, m.seq AS seq, m.sender AS sender, m.body AS body,"          \
    " m.ts AS ts, m.recalled AS recalled, c.kind AS kind, c.user_lo AS user_lo,"                   \
    " c.user_hi AS user_hi, coalesce(g.id, 0) AS group_id"
#define STORE_MSG_CONV                                                                             \
    " JOIN convs AS c ON c.id = m.conv_id LEFT JOIN groups_ AS g ON g.conv_id = m.conv_id"

/* The last seq of conversation `conv` (an SQL expression), 0 if it has no
 * messages: one step down the (conv_id, seq) index. */
#define STORE_LAST_SEQ(conv) "(SELECT coalesce(max(seq), 0) FROM messages WHERE conv_id = " conv ")"

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
    Q_CONV_INSERT,
    Q_CONV_EXISTS,
    Q_CONV_DELETE,
    Q_CONV_MEMBERS,
    Q_CONV_MEMBER_IDS,
    Q_DIRECT_FIND,
    Q_MEMBER_INSERT,
    Q_GROUP_INSERT,
    Q_GROUP_GET,
    Q_GROUP_CONV,
    Q_GROUP_JOIN,
    Q_GROUP_QUIT,
    Q_GROUP_ROLE,
    Q_GROUP_DELETE,
    Q_CONV_DELETE_MEMBERS,
    Q_MSG_ID_FLOOR,
    Q_CONV_DELETE_MESSAGES,
    Q_USER_GROUPS,
    Q_CONV_ROUTE,
    Q_CONV_LAST_SEQ,
    Q_MSG_INSERT,
    Q_MSG_BY_REF,
    Q_MSG_GET,
    Q_MSG_RECALL,
    Q_HISTORY,
    Q_PENDING,
    Q_ACK,
    Q_USERS_FIND,
    Q_USER_SESSIONS,
    Q_SESSION_COUNT,
    Q_USER_SET_BANNED,
    Q_USER_SET_PWHASH,
    Q_USER_TOMBSTONE,
    Q_UNLINK_FRIENDS,
    Q_UNLINK_GROUPS,
    Q_UNLINK_BODIES,
    Q_COUNT
};

static const char *const store_sql[Q_COUNT] = {
    [Q_BEGIN] = "BEGIN IMMEDIATE",
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
    /* The caller's savepoint: one level, one fixed name. */
    [Q_SAVEPOINT] = "SAVEPOINT store_request",
    [Q_RELEASE] = "RELEASE store_request",
    [Q_ROLLBACK_TO] = "ROLLBACK TO store_request",
    /* Makes one multi-statement call atomic inside the caller's transaction;
     * a distinct name so it nests inside store_request. */
    [Q_OP_SAVEPOINT] = "SAVEPOINT store_op",
    [Q_OP_RELEASE] = "RELEASE store_op",
    [Q_OP_ROLLBACK_TO] = "ROLLBACK TO store_op",

    [Q_USER_INSERT] = "INSERT INTO users (name, pwhash, created_ms) VALUES (?1, ?2, ?3)",
    [Q_USER_BY_ID] = "SELECT id, name, pwhash, created_ms, banned FROM users WHERE id = ?1",
    [Q_USER_BY_NAME] = "SELECT id, name, pwhash, created_ms, banned FROM users WHERE name = ?1",

    [Q_SESSION_INSERT] = "INSERT INTO sessions (token_hash, user_id, created_ms, last_used)"
                         " VALUES (?1, ?2, ?3, ?3)",
    /* A user has a few sessions (sessions_by_user): sorting them is cheap.
     * The token breaks ties, so one statement names one set. */
    [Q_SESSION_TRIM] = "DELETE FROM sessions WHERE token_hash IN (SELECT token_hash FROM sessions"
                       " WHERE user_id = ?1 AND token_hash <> ?2"
                       " ORDER BY last_used DESC, token_hash DESC LIMIT -1 OFFSET ?3)",
    [Q_SESSION_GET] = "SELECT user_id, last_used FROM sessions WHERE token_hash = ?1",
    [Q_SESSION_TOUCH] =
        "UPDATE sessions SET last_used = ?2 WHERE token_hash = ?1 AND last_used < ?2",
    [Q_SESSION_DELETE] = "DELETE FROM sessions WHERE token_hash = ?1 AND last_used < ?2",
    [Q_SESSION_DELETE_USER] = "DELETE FROM sessions WHERE user_id = ?1",
    /* The oldest first down sessions_by_last_used, which holds the token
     * too: the sweep reads only what it deletes. */
    [Q_SESSIONS_EXPIRE] =
        "DELETE FROM sessions WHERE token_hash IN (SELECT token_hash FROM sessions"
        " WHERE last_used < ?1 ORDER BY last_used LIMIT ?2)",

    /* Both directions in one statement, so it is atomic on its own. */
    [Q_FRIEND_INSERT] = "INSERT INTO friends (user_id, friend_id, created_ms)"
                        " VALUES (?1, ?2, ?3), (?2, ?1, ?3)",
    [Q_FRIEND_DELETE] = "DELETE FROM friends WHERE (user_id = ?1 AND friend_id = ?2)"
                        " OR (user_id = ?2 AND friend_id = ?1)",
    [Q_FRIEND_LIST] = "SELECT u.id, u.name FROM friends AS f JOIN users AS u ON u.id = f.friend_id"
                      " WHERE f.user_id = ?1 ORDER BY f.friend_id",
    /* Counts: each a range of one index, no row read. A group member's
     * role is above ?2 (ROLE_NONE), a direct conversation's is ROLE_NONE. */
    [Q_FRIEND_COUNT] = "SELECT count(*) FROM friends WHERE user_id = ?1",
    [Q_USER_GROUP_COUNT] = "SELECT count(*) FROM members WHERE user_id = ?1 AND role > ?2",
    /* No row for no group: NOT_FOUND. */
    [Q_GROUP_MEMBER_COUNT] = "SELECT (SELECT count(*) FROM members WHERE conv_id = g.conv_id)"
                             " FROM groups_ AS g WHERE g.id = ?1",

    [Q_CONV_INSERT] = "INSERT INTO convs (kind, user_lo, user_hi) VALUES (?1, ?2, ?3)",
    [Q_CONV_EXISTS] = "SELECT 1 FROM convs WHERE id = ?1",
    [Q_CONV_DELETE] = "DELETE FROM convs WHERE id = ?1",
    [Q_CONV_MEMBERS] = "SELECT u.id, u.name, m.role FROM members AS m"
                       " JOIN users AS u ON u.id = m.user_id"
                       " WHERE m.conv_id = ?1 ORDER BY m.user_id",
    /* The primary key's own order: one range of one B-tree, no join. */
    [Q_CONV_MEMBER_IDS] = "SELECT user_id FROM members WHERE conv_id = ?1 ORDER BY user_id",
    [Q_DIRECT_FIND] = "SELECT id FROM convs WHERE user_lo = ?1 AND user_hi = ?2",
    [Q_MEMBER_INSERT] = "INSERT INTO members (conv_id, user_id, role, acked_seq, joined_ms)"
                        " VALUES (?1, ?2, ?3, 0, ?4)",

    [Q_GROUP_INSERT] = "INSERT INTO groups_ (name, description, creator, conv_id, created_ms)"
                       " VALUES (?1, ?2, ?3, ?4, ?5)",
    [Q_GROUP_GET] = "SELECT id, conv_id, creator, name, description FROM groups_ WHERE id = ?1",
    [Q_GROUP_CONV] = "SELECT conv_id FROM groups_ WHERE id = ?1",
    /* One statement reads the last seq and inserts, so no message can slip
     * in between and be pending for the newcomer. */
    [Q_GROUP_JOIN] = "INSERT INTO members (conv_id, user_id, role, acked_seq, joined_ms)"
                     " SELECT g.conv_id, ?2, ?3, " STORE_LAST_SEQ(
                         "g.conv_id") ", ?4"
                                      " FROM groups_ AS g WHERE g.id = ?1",
    [Q_GROUP_QUIT] = "DELETE FROM members"
                     " WHERE conv_id = (SELECT conv_id FROM groups_ WHERE id = ?1)"
                     " AND user_id = ?2",
    [Q_GROUP_ROLE] = "SELECT m.role FROM groups_ AS g JOIN members AS m ON m.conv_id = g.conv_id"
                     " WHERE g.id = ?1 AND m.user_id = ?2",
    [Q_GROUP_DELETE] = "DELETE FROM groups_ WHERE id = ?1",
    [Q_CONV_DELETE_MEMBERS] = "DELETE FROM members WHERE conv_id = ?1",
    /* Before any message is deleted: its id, even the highest, stays used. */
    [Q_MSG_ID_FLOOR] =
        "UPDATE msg_id_floor SET id = max(id, coalesce((SELECT max(id) FROM messages), 0))",
    [Q_CONV_DELETE_MESSAGES] = "DELETE FROM messages WHERE conv_id = ?1",
    /* CROSS JOIN fixes the join order: start from the user's memberships
     * (members_by_user_role), not from a scan of all groups. */
    [Q_USER_GROUPS] = "SELECT g.id, g.conv_id, g.creator, g.name, g.description"
                      " FROM members AS m CROSS JOIN groups_ AS g ON g.conv_id = m.conv_id"
                      " WHERE m.user_id = ?1 ORDER BY g.id",

    [Q_CONV_ROUTE] = "SELECT c.kind, c.user_lo, c.user_hi, coalesce(g.id, 0) FROM convs AS c"
                     " LEFT JOIN groups_ AS g ON g.conv_id = c.id WHERE c.id = ?1",
    [Q_CONV_LAST_SEQ] = "SELECT " STORE_LAST_SEQ("?1"),
    /* A missing conversation fails the foreign key (NOT_FOUND), a ref already
     * used by the sender the unique index (CONFLICT). */
    [Q_MSG_INSERT] = "INSERT INTO messages (id, conv_id, seq, sender, body, ts, ref)"
                     " VALUES (max(coalesce((SELECT max(id) FROM messages), 0),"
                     " (SELECT id FROM msg_id_floor)) + 1, ?1, ?2, ?3, ?4, ?5, ?6)",
    /* One lookup in messages_ref_sender: ref = ?2 implies the index's
     * ref IS NOT NULL. */
    [Q_MSG_BY_REF] = "SELECT " STORE_MSG_COLS " FROM messages AS m" STORE_MSG_CONV
                     " WHERE m.sender = ?1 AND m.ref = ?2",
    [Q_MSG_GET] = "SELECT " STORE_MSG_COLS " FROM messages AS m" STORE_MSG_CONV " WHERE m.id = ?1",
    /* A recalled message forgets its body: secure_delete (set at open) zeroes
     * the freed bytes of the old row instead of leaving them in the page. */
    [Q_MSG_RECALL] = "UPDATE messages SET recalled = 1, body = '' WHERE id = ?1",
    /* Newest first through the (conv_id, seq) index, then re-sorted: the
     * outer sort only sees `limit` rows. */
    [Q_HISTORY] = "SELECT * FROM (SELECT " STORE_MSG_COLS " FROM messages AS m" STORE_MSG_CONV
                  " WHERE m.conv_id = ?1 AND m.seq < ?2 ORDER BY m.seq DESC LIMIT ?3)"
                  " ORDER BY seq",
    /* From the user's memberships (members_by_user_role) to each conversation's
     * messages above the cursor ((conv_id, seq) index); CROSS JOIN keeps the
     * planner from scanning all messages in msgid order instead. */
    [Q_PENDING] = "SELECT " STORE_MSG_COLS " FROM members AS mb CROSS JOIN messages AS m"
                  " ON m.conv_id = mb.conv_id AND m.seq > mb.acked_seq" STORE_MSG_CONV
                  " WHERE mb.user_id = ?1 AND m.sender <> ?1 AND m.id > ?2"
                  " ORDER BY m.id LIMIT ?3",
    /* Capped at the last seq: a cursor past the end would hide future
     * messages. */
    [Q_ACK] = "UPDATE members SET acked_seq = max(acked_seq, min(?3, " STORE_LAST_SEQ(
        "?2") "))"
              " WHERE conv_id = ?2 AND user_id = ?1",

    /* Administration. A range of the name index from the prefix on; the
     * caller stops at the first name without it. */
    [Q_USERS_FIND] = "SELECT id, name, '', created_ms, banned FROM users"
                     " WHERE name >= ?1 AND name > ?2 ORDER BY name LIMIT ?3",
    [Q_USER_SESSIONS] = "SELECT created_ms, last_used FROM sessions WHERE user_id = ?1"
                        " ORDER BY last_used DESC LIMIT ?2",
    [Q_SESSION_COUNT] = "SELECT count(*) FROM sessions WHERE user_id = ?1",
    [Q_USER_SET_BANNED] = "UPDATE users SET banned = ?2 WHERE id = ?1",
    [Q_USER_SET_PWHASH] = "UPDATE users SET pwhash = ?2 WHERE id = ?1",
    [Q_USER_TOMBSTONE] = "UPDATE users SET name = ?2, pwhash = '', banned = 1 WHERE id = ?1",
    [Q_UNLINK_FRIENDS] = "DELETE FROM friends WHERE user_id = ?1 OR friend_id = ?1",
    [Q_UNLINK_GROUPS] = "DELETE FROM members WHERE user_id = ?1 AND role > 0",
    /* As recall: secure_delete zeroes the freed bytes. No index leads with
     * sender here (it would cost every send): a scan, for a rare command. */
    [Q_UNLINK_BODIES] = "UPDATE messages SET recalled = 1, body = '' WHERE sender = ?1",
};

/* The checkpointer of a handle that writes: a thread with a connection of
 * its own that copies the WAL back into the database (and fsyncs it) while
 * the handle goes on committing. */
typedef struct sq_ckpt {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int kicked, stop;
    sqlite3 *db;
} sq_ckpt;

/* WAL sizes, in frames of one page. Past KICK frames the checkpointer is
 * woken, once per KICK frames more. A passive checkpoint never lets the log
 * start again while commits keep coming, so past BOUND the writer copies the
 * little left itself, and its next transaction starts the log again. */
enum { SQ_WAL_KICK = 1000, SQ_WAL_BOUND = 8192 };

typedef struct sq_store {
    store base; /* first: the dispatcher's store * points here too */
    sqlite3 *db;
    sqlite3_stmt *q[Q_COUNT];
    char *body; /* copy of the last store_message_get body */
    size_t body_cap;
    /* Forgotten at any rollback (an id handed out by an undone transaction
     * is handed out again). A stale entry for a deleted group's conversation
     * is harmless: the insert's foreign key fails first, and ids of
     * committed rows are never reused. */
    store_cache *cache;
    char *path;    /* for the checkpointer's connection */
    int sync_full; /* PRAGMA synchronous = FULL: every commit fsynced */
    sq_ckpt *ckpt; /* started at the first WAL past SQ_WAL_KICK */
    int kicked_at; /* WAL frames when the checkpointer was last woken */
    char errmsg[256];
} sq_store;

static sq_store *sq_of(store *base)
{
    return (sq_store *)base;
}

static void store_set_err(sq_store *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->errmsg, sizeof st->errmsg, fmt, ap);
    va_end(ap);
}

/* Drops the caches: after a rollback they may name what no longer exists. */
static void sq_forget(sq_store *st)
{
    store_cache_forget(st->cache);
}

/* Maps a failed step to a status and records SQLite's reason. */
static store_status store_fail(sq_store *st, int rc)
{
    store_set_err(st, "%s", sqlite3_errmsg(st->db));
    switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
        return STORE_CONFLICT;
    case SQLITE_CONSTRAINT_FOREIGNKEY:
        /* A referenced user, conversation... does not exist. */
        return STORE_NOT_FOUND;
    default:
        return STORE_ERROR;
    }
}

/* SQLite integers are signed: clamp so that a huge id or bound from a client
 * cannot wrap to a negative number and match everything. */
static sqlite3_int64 store_i64(uint64_t v)
{
    return v > (uint64_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)v;
}

static uint64_t store_col_u64(sqlite3_stmt *s, int col)
{
    return (uint64_t)sqlite3_column_int64(s, col);
}

static void store_col_text(sqlite3_stmt *s, int col, char *dst, size_t cap)
{
    const unsigned char *txt = sqlite3_column_text(s, col);
    size_t n = (size_t)sqlite3_column_bytes(s, col);
    if (!txt)
        n = 0;
    if (n > cap - 1)
        n = cap - 1;
    if (n)
        memcpy(dst, txt, n);
    dst[n] = '\0';
}

/* Binds parameters 1, 2, ... from `types`: u uint64_t, i int64_t, d int,
 * t NUL-terminated text, b blob (pointer, size_t), h 32-byte hash, n NULL,
 * r a message ref (uint64_t: NULL for 0, else all 64 bits as a signed
 * integer). The values must outlive the step (SQLITE_STATIC). */
static int store_vbind(sqlite3_stmt *s, const char *types, va_list ap)
{
    int rc = SQLITE_OK;
    for (int i = 0; types[i] && rc == SQLITE_OK; i++) {
        int idx = i + 1;
        switch (types[i]) {
        case 'u':
            rc = sqlite3_bind_int64(s, idx, store_i64(va_arg(ap, uint64_t)));
            break;
        case 'i':
            rc = sqlite3_bind_int64(s, idx, va_arg(ap, int64_t));
            break;
        case 'd':
            rc = sqlite3_bind_int(s, idx, va_arg(ap, int));
            break;
        case 't':
            rc = sqlite3_bind_text(s, idx, va_arg(ap, const char *), -1, SQLITE_STATIC);
            break;
        case 'b': {
            const void *p = va_arg(ap, const void *);
            size_t n = va_arg(ap, size_t);
            /* A NULL pointer would bind SQL NULL; an empty body is a blob. */
            rc = sqlite3_bind_blob64(s, idx, n ? p : "", n, SQLITE_STATIC);
            break;
        }
        case 'h':
            rc = sqlite3_bind_blob(s, idx, va_arg(ap, const uint8_t *), 32, SQLITE_STATIC);
            break;
        case 'n':
            rc = sqlite3_bind_null(s, idx);
            break;
        case 'r': {
            /* Not clamped like 'u': two refs above INT64_MAX must differ. */
            uint64_t ref = va_arg(ap, uint64_t);
            sqlite3_int64 bits;
            memcpy(&bits, &ref, sizeof bits);
            rc = ref ? sqlite3_bind_int64(s, idx, bits) : sqlite3_bind_null(s, idx);
            break;
        }
        default:
            rc = SQLITE_MISUSE;
            break;
        }
    }
    return rc;
}

/* Leaves a statement ready for its next use and drops the bound pointers. */
static void store_finish(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
}

/* Binds, for statements the caller then steps itself. */
static store_status store_bind(sq_store *st, sqlite3_stmt *s, const char *types, ...)
{
    va_list ap;
    va_start(ap, types);
    int rc = store_vbind(s, types, ap);
    va_end(ap);
    return rc == SQLITE_OK ? STORE_OK : store_fail(st, rc);
}

/* Binds and steps once: OK with the statement on its first row, NOT_FOUND if
 * there is none. The caller reads the row, then calls store_finish. */
static store_status store_first(sq_store *st, sqlite3_stmt *s, const char *types, ...)
{
    va_list ap;
    va_start(ap, types);
    int rc = store_vbind(s, types, ap);
    va_end(ap);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        return STORE_OK;
    if (rc == SQLITE_DONE)
        return STORE_NOT_FOUND;
    return store_fail(st, rc);
}

/* Runs a statement that returns no rows; *changes (if asked) gets the number
 * of rows it inserted, updated or deleted. */
static store_status store_exec(sq_store *st, int id, int *changes, const char *types, ...)
{
    sqlite3_stmt *s = st->q[id];
    va_list ap;
    va_start(ap, types);
    int rc = store_vbind(s, types, ap);
    va_end(ap);
    if (rc == SQLITE_OK) {
        do
            rc = sqlite3_step(s);
        while (rc == SQLITE_ROW);
    }
    store_status ret = rc == SQLITE_DONE ? STORE_OK : store_fail(st, rc);
    if (changes)
        *changes = ret == STORE_OK ? sqlite3_changes(st->db) : 0;
    store_finish(s);
    return ret;
}

/* Makes a multi-statement call atomic: its own write transaction when none is
 * open, else a savepoint inside the caller's. */
static store_status store_op_begin(sq_store *st, int *own)
{
    *own = sqlite3_get_autocommit(st->db);
    return store_exec(st, *own ? Q_BEGIN : Q_OP_SAVEPOINT, NULL, "");
}

/* Steps a cleanup statement without overwriting the error being reported. */
static void store_quiet(sq_store *st, int id)
{
    sqlite3_step(st->q[id]);
    sqlite3_reset(st->q[id]);
}

static store_status store_op_end(sq_store *st, int own, store_status ret)
{
    if (ret == STORE_OK) {
        ret = store_exec(st, own ? Q_COMMIT : Q_OP_RELEASE, NULL, "");
        if (ret == STORE_OK)
            return STORE_OK;
    }
    /* Some errors (I/O, out of memory) make SQLite roll back by itself;
     * then there is nothing left to undo. */
    if (sqlite3_get_autocommit(st->db))
        return ret;
    if (own) {
        store_quiet(st, Q_ROLLBACK);
    } else {
        store_quiet(st, Q_OP_ROLLBACK_TO);
        store_quiet(st, Q_OP_RELEASE);
    }
    sq_forget(st);
    return ret;
}

/* ---- open / close ---- */

static store_status store_run_sql(sq_store *st, const char *sql)
{
    if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        store_set_err(st, "%s", sqlite3_errmsg(st->db));
        return STORE_ERROR;
    }
    return STORE_OK;
}

/* Runs a one-row PRAGMA and copies its value as text. */
static store_status store_pragma(sq_store *st, const char *sql, char *out, size_t cap)
{
    sqlite3_stmt *s = NULL;
    store_status ret = STORE_ERROR;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &s, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        store_col_text(s, 0, out, cap);
        ret = STORE_OK;
    } else if (rc == SQLITE_DONE) {
        store_set_err(st, "%s: no result", sql);
    } else {
        store_set_err(st, "%s", sqlite3_errmsg(st->db));
    }
    sqlite3_finalize(s);
    return ret;
}

static store_status store_configure(sq_store *st)
{
    char val[32];
    /* First, so that the others wait for a handle that is opening at the
     * same moment instead of failing with SQLITE_BUSY. */
    if (store_run_sql(st, "PRAGMA busy_timeout = 10000") != STORE_OK)
        return STORE_ERROR;
    if (store_pragma(st, "PRAGMA journal_mode = WAL", val, sizeof val) != STORE_OK)
        return STORE_ERROR;
    /* ":memory:" databases cannot use WAL; anything else must. */
    if (strcmp(val, "wal") != 0 && strcmp(val, "memory") != 0) {
        store_set_err(st, "cannot use WAL journal (got %s)", val);
        return STORE_ERROR;
    }
    /* With WAL, synchronous=NORMAL syncs at checkpoints, not at each commit.
     * A crash of parleyd loses nothing committed (the WAL is in the OS
     * cache); a power loss or OS crash may lose the last few transactions
     * but never corrupts the database. That trade buys far fewer fsyncs.
     * --sync full (FULL) fsyncs the WAL at every commit: a batch's send_ok
     * then waits for the disk, and a power loss loses nothing answered. */
    if (store_run_sql(st, st->sync_full ? "PRAGMA synchronous = FULL"
                                        : "PRAGMA synchronous = NORMAL") != STORE_OK ||
        store_run_sql(st, "PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON") != STORE_OK)
        return STORE_ERROR;
    /* The writer touches the tail of every busy conversation's index: with
     * SQLite's default 2 MB cache those pages were read again (a pread
     * each) at nearly every message. The cache grows only as pages are used;
     * mmap lets reads of the database file skip the copy. Statement journals
     * (one per savepoint) stay in memory. */
    if (store_run_sql(st, "PRAGMA cache_size = -65536; PRAGMA mmap_size = 268435456;"
                          " PRAGMA temp_store = MEMORY") != STORE_OK)
        return STORE_ERROR;
    /* NOT_FOUND answers rely on foreign keys: make sure they are on. */
    if (store_pragma(st, "PRAGMA foreign_keys", val, sizeof val) != STORE_OK)
        return STORE_ERROR;
    if (strcmp(val, "1") != 0) {
        store_set_err(st, "SQLite without foreign key support");
        return STORE_ERROR;
    }
    return STORE_OK;
}

static store_status store_user_version(sq_store *st, int *version)
{
    char val[32];
    if (store_pragma(st, "PRAGMA user_version", val, sizeof val) != STORE_OK)
        return STORE_ERROR;
    *version = atoi(val);
    return STORE_OK;
}

/* Brings the schema to STORE_SCHEMA_VERSION one step at a time. Handles
 * opening at once serialise on BEGIN IMMEDIATE; the version is read again
 * under the lock so that only the first one migrates. */
static store_status store_migrate(sq_store *st)
{
    int version;
    if (store_user_version(st, &version) != STORE_OK)
        return STORE_ERROR;
    if (version == STORE_SCHEMA_VERSION)
        return STORE_OK;
    if (store_run_sql(st, "BEGIN IMMEDIATE") != STORE_OK)
        return STORE_ERROR;
    store_status ret = store_user_version(st, &version);
    if (ret != STORE_OK)
        goto out;
    if (version < 0 || version > STORE_SCHEMA_VERSION) {
        store_set_err(st, "schema version %d unknown to this build (latest %d)", version,
                      STORE_SCHEMA_VERSION);
        ret = STORE_ERROR;
        goto out;
    }
    /* A step may copy a table: on a big database that takes a while. */
    if (version > 0 && version < STORE_SCHEMA_VERSION)
        log_info("store: upgrading %s from schema version %d to %d", st->path, version,
                 STORE_SCHEMA_VERSION);
    for (; version < STORE_SCHEMA_VERSION; version++) {
        ret = store_run_sql(st, store_migrations[version]);
        if (ret != STORE_OK)
            goto out;
    }
    ret = store_run_sql(st, "COMMIT");
out:
    if (ret != STORE_OK && !sqlite3_get_autocommit(st->db))
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    return ret;
}

static store_status store_prepare(sq_store *st)
{
    for (int i = 0; i < Q_COUNT; i++) {
        if (sqlite3_prepare_v3(st->db, store_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->q[i],
                               NULL) != SQLITE_OK) {
            store_set_err(st, "%s", sqlite3_errmsg(st->db));
            return STORE_ERROR;
        }
    }
    return STORE_OK;
}

static void *sq_ckpt_main(void *arg)
{
    sq_ckpt *c = arg;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (!c->kicked && !c->stop)
            pthread_cond_wait(&c->cond, &c->lock);
        if (c->stop)
            break;
        c->kicked = 0;
        pthread_mutex_unlock(&c->lock);
        /* Busy only if another checkpoint runs: then there is nothing to do. */
        sqlite3_wal_checkpoint_v2(c->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

static void sq_ckpt_free(sq_ckpt *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    c->stop = 1;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);
    sqlite3_close_v2(c->db);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* The handle's checkpointer, started on first use; NULL if it cannot be
 * (the writer then checkpoints at SQ_WAL_BOUND only, which is slower but
 * right). */
static sq_ckpt *sq_ckpt_get(sq_store *st)
{
    if (st->ckpt)
        return st->ckpt;
    sq_ckpt *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    if (sqlite3_open_v2(st->path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                        SQLITE_VFS_NAME) != SQLITE_OK) {
        sqlite3_close_v2(c->db);
        free(c);
        return NULL;
    }
    sqlite3_busy_timeout(c->db, 1000);
    /* A connection opens the WAL at its first read; until then a checkpoint
     * on it finds no WAL and does nothing. */
    sqlite3_exec(c->db, "SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    if (pthread_create(&c->thread, NULL, sq_ckpt_main, c) != 0) {
        sqlite3_close_v2(c->db);
        pthread_cond_destroy(&c->cond);
        pthread_mutex_destroy(&c->lock);
        free(c);
        return NULL;
    }
    pthread_setname_np(c->thread, "checkpoint");
    st->ckpt = c;
    return c;
}

/* Called by SQLite after each commit with the WAL's size; replaces its own
 * checkpoint every 1000 frames, which ran (and fsynced) on the committing
 * thread. */
static int sq_wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    sq_store *st = arg;
    if (frames < st->kicked_at)
        st->kicked_at = 0; /* the log started again */
    if (frames >= SQ_WAL_BOUND) {
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        st->kicked_at = 0;
        return SQLITE_OK;
    }
    if (frames - st->kicked_at < SQ_WAL_KICK)
        return SQLITE_OK;
    sq_ckpt *c = sq_ckpt_get(st);
    if (!c)
        return SQLITE_OK;
    st->kicked_at = frames;
    pthread_mutex_lock(&c->lock);
    c->kicked = 1;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
    return SQLITE_OK;
}

static void sq_close(store *base)
{
    sq_store *st = sq_of(base);
    if (!st)
        return;
    /* First, so that the handle's close is the last and removes the WAL. */
    sq_ckpt_free(st->ckpt);
    for (int i = 0; i < Q_COUNT; i++)
        sqlite3_finalize(st->q[i]);
    sqlite3_close_v2(st->db);
    store_cache_free(st->cache);
    free(st->path);
    free(st->body);
    free(st);
}

static const store_ops sq_ops;

/* Process-wide settings, made before SQLite's first use. */
static void sq_init_once(void)
{
    /* Memory statistics take a global mutex around every allocation, on
     * every thread; nothing here reads them. */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    sqlite3_initialize();
    sqlite_vfs_register(); /* if it fails, opens fail and say so */
}

store *store_sqlite_open(const char *path, int sync_full, char *err, size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sq_init_once);
    sq_store *st = calloc(1, sizeof *st);
    if (!st) {
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    st->base.ops = &sq_ops;
    st->cache = store_cache_new();
    st->path = strdup(path);
    st->sync_full = sync_full;
    if (!st->cache || !st->path) {
        store_set_err(st, "out of memory");
        goto fail;
    }
    int rc = sqlite3_open_v2(path, &st->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             SQLITE_VFS_NAME);
    if (rc != SQLITE_OK) {
        store_set_err(st, "%s", st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
        goto fail;
    }
    /* So that constraint failures say which constraint (CONFLICT vs
     * NOT_FOUND). */
    sqlite3_extended_result_codes(st->db, 1);
    if (store_configure(st) != STORE_OK || store_migrate(st) != STORE_OK ||
        store_prepare(st) != STORE_OK)
        goto fail;
    sqlite3_wal_hook(st->db, sq_wal_hook, st);
    return &st->base;
fail:
    if (err && errlen)
        snprintf(err, errlen, "%s: %s", path, st->errmsg);
    sq_close(&st->base);
    return NULL;
}

static void sq_set_err(store *base, const char *msg)
{
    store_set_err(sq_of(base), "%s", msg);
}

static const char *sq_errmsg(const store *base)
{
    const sq_store *st = (const sq_store *)base;
    return st ? st->errmsg : "no store";
}

/* SQLite has no server to undo a transaction or drop a connection. */
static int sq_txn_lost(const store *base)
{
    return 0;
}

static int sq_is_dead(const store *base)
{
    return 0;
}

/* ---- transactions ---- */

static store_status sq_begin(store *base)
{
    sq_store *st = sq_of(base);
    return store_exec(st, Q_BEGIN, NULL, "");
}

static store_status sq_commit(store *base)
{
    sq_store *st = sq_of(base);
    store_status ret = store_exec(st, Q_COMMIT, NULL, "");
    if (ret != STORE_OK)
        sq_forget(st); /* whatever the caller does next */
    return ret;
}

static store_status sq_rollback(store *base)
{
    sq_store *st = sq_of(base);
    sq_forget(st);
    return store_exec(st, Q_ROLLBACK, NULL, "");
}

static store_status sq_savepoint(store *base)
{
    sq_store *st = sq_of(base);
    /* Outside BEGIN a savepoint would open a deferred transaction, whose
     * later upgrade to a writer can fail without waiting. */
    if (sqlite3_get_autocommit(st->db)) {
        store_set_err(st, "savepoint outside a transaction");
        return STORE_ERROR;
    }
    return store_exec(st, Q_SAVEPOINT, NULL, "");
}

static store_status sq_release(store *base)
{
    sq_store *st = sq_of(base);
    return store_exec(st, Q_RELEASE, NULL, "");
}

static store_status sq_rollback_to(store *base)
{
    sq_store *st = sq_of(base);
    sq_forget(st);
    store_status ret = store_exec(st, Q_ROLLBACK_TO, NULL, "");
    if (ret != STORE_OK)
        return ret;
    return store_exec(st, Q_RELEASE, NULL, "");
}

/* For store.c's logic over several ops. */
static store_status sq_op_begin(store *base, int *own)
{
    return store_op_begin(sq_of(base), own);
}

static store_status sq_op_end(store *base, int own, store_status ret)
{
    return store_op_end(sq_of(base), own, ret);
}

/* ---- users and sessions ---- */

static store_status sq_user_create(store *base, const char *name, const char *pwhash,
                                   int64_t now_ms, uint64_t *id_out)
{
    sq_store *st = sq_of(base);
    store_status ret = store_exec(st, Q_USER_INSERT, NULL, "tti", name, pwhash, now_ms);
    if (ret == STORE_OK && id_out)
        *id_out = (uint64_t)sqlite3_last_insert_rowid(st->db);
    return ret;
}

static void store_user_row(sqlite3_stmt *s, store_user *out)
{
    out->id = store_col_u64(s, 0);
    store_col_text(s, 1, out->name, sizeof out->name);
    store_col_text(s, 2, out->pwhash, sizeof out->pwhash);
    out->created_ms = sqlite3_column_int64(s, 3);
    out->banned = sqlite3_column_int(s, 4) != 0;
}

static store_status sq_user_by_id(store *base, uint64_t id, store_user *out)
{
    sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->q[Q_USER_BY_ID];
    store_status ret = store_first(st, s, "u", id);
    if (ret == STORE_OK)
        store_user_row(s, out);
    store_finish(s);
    return ret;
}

static store_status sq_user_by_name(store *base, const char *name, store_user *out)
{
    sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->q[Q_USER_BY_NAME];
    store_status ret = store_first(st, s, "t", name);
    if (ret == STORE_OK)
        store_user_row(s, out);
    store_finish(s);
    return ret;
}

static store_status sq_session_insert(store *base, const uint8_t token_hash[32], uint64_t user,
                                      int64_t now_ms)
{
    return store_exec(sq_of(base), Q_SESSION_INSERT, NULL, "hui", token_hash, user, now_ms);
}

static store_status sq_session_trim(store *base, uint64_t user, const uint8_t keep_hash[32],
                                    unsigned keep)
{
    return store_exec(sq_of(base), Q_SESSION_TRIM, NULL, "uhi", user, keep_hash, (int64_t)keep);
}

static store_status sq_session_get(store *base, const uint8_t token_hash[32], uint64_t *user,
                                   int64_t *last_used)
{
    sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->q[Q_SESSION_GET];
    store_status ret = store_first(st, s, "h", token_hash);
    if (ret == STORE_OK) {
        *user = store_col_u64(s, 0);
        *last_used = sqlite3_column_int64(s, 1);
    }
    store_finish(s);
    return ret;
}

static store_status sq_session_touch(store *base, const uint8_t token_hash[32], int64_t now_ms)
{
    return store_exec(sq_of(base), Q_SESSION_TOUCH, NULL, "hi", token_hash, now_ms);
}

static store_status sq_session_delete(store *base, const uint8_t token_hash[32], int64_t before_ms,
                                      uint64_t *n)
{
    int changes;
    store_status ret =
        store_exec(sq_of(base), Q_SESSION_DELETE, &changes, "hi", token_hash, before_ms);
    *n = (uint64_t)changes;
    return ret;
}

static store_status sq_session_delete_user(store *base, uint64_t user)
{
    return store_exec(sq_of(base), Q_SESSION_DELETE_USER, NULL, "u", user);
}

static store_status sq_sessions_expire(store *base, int64_t before_ms, unsigned limit, uint64_t *n)
{
    int changes;
    store_status ret =
        store_exec(sq_of(base), Q_SESSIONS_EXPIRE, &changes, "ii", before_ms, (int64_t)limit);
    *n = (uint64_t)changes;
    return ret;
}

static store_status sq_count(store *base, store_count_kind what, uint64_t id, uint64_t *n)
{
    sq_store *st = sq_of(base);
    sqlite3_stmt *s;
    store_status ret;
    switch (what) {
    case STORE_COUNT_FRIENDS:
        s = st->q[Q_FRIEND_COUNT];
        ret = store_first(st, s, "u", id);
        break;
    case STORE_COUNT_USER_GROUPS:
        s = st->q[Q_USER_GROUP_COUNT];
        ret = store_first(st, s, "ud", id, STORE_ROLE_NONE);
        break;
    case STORE_COUNT_GROUP_MEMBERS:
        s = st->q[Q_GROUP_MEMBER_COUNT];
        ret = store_first(st, s, "u", id);
        break;
    case STORE_COUNT_SESSIONS:
        s = st->q[Q_SESSION_COUNT];
        ret = store_first(st, s, "u", id);
        break;
    default:
        store_set_err(st, "unknown count %d", (int)what);
        return STORE_ERROR;
    }
    if (ret == STORE_OK)
        *n = store_col_u64(s, 0);
    store_finish(s);
    return ret;
}

/* ---- friends ---- */

static store_status sq_friend_add(store *base, uint64_t a, uint64_t b, int64_t now_ms)
{
    sq_store *st = sq_of(base);
    /* Foreign keys answer NOT_FOUND for a missing user, the primary key
     * CONFLICT for an existing friendship. */
    return store_exec(st, Q_FRIEND_INSERT, NULL, "uui", a, b, now_ms);
}

static store_status sq_friend_del(store *base, uint64_t a, uint64_t b)
{
    sq_store *st = sq_of(base);
    int changes;
    store_status ret = store_exec(st, Q_FRIEND_DELETE, &changes, "uu", a, b);
    if (ret == STORE_OK && changes == 0)
        return STORE_NOT_FOUND;
    return ret;
}

static store_status sq_friend_list(store *base, uint64_t user, store_user_cb cb, void *arg)
{
    sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->q[Q_FRIEND_LIST];
    store_status ret = store_bind(st, s, "u", user);
    if (ret != STORE_OK)
        goto out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (cb(arg, store_col_u64(s, 0), (const char *)sqlite3_column_text(s, 1)) != 0)
            goto out;
    }
    if (rc != SQLITE_DONE)
        ret = store_fail(st, rc);
out:
    store_finish(s);
    return ret;
}

/* ---- conversations ---- */

/* Hands the members of conv to cb (id, name, role). */
static store_status store_members_each(sq_store *st, uint64_t conv, store_member_cb cb, void *arg)
{
    sqlite3_stmt *s = st->q[Q_CONV_MEMBERS];
    store_status ret = store_bind(st, s, "u", conv);
    if (ret != STORE_OK)
        goto out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        uint64_t id = store_col_u64(s, 0);
        const char *name = (const char *)sqlite3_column_text(s, 1);
        if (cb(arg, id, name, sqlite3_column_int(s, 2)))
            goto out;
    }
    if (rc != SQLITE_DONE)
        ret = store_fail(st, rc);
out:
    store_finish(s);
    return ret;
}

static store_status store_conv_exists(sq_store *st, uint64_t conv)
{
    sqlite3_stmt *s = st->q[Q_CONV_EXISTS];
    store_status ret = store_first(st, s, "u", conv);
    store_finish(s);
    return ret;
}

static store_status sq_direct_conv(store *base, uint64_t a, uint64_t b, uint64_t *conv_out)
{
    sq_store *st = sq_of(base);
    uint64_t lo = a < b ? a : b, hi = a < b ? b : a, conv = 0;
    sqlite3_stmt *find = st->q[Q_DIRECT_FIND];
    /* Direct conversations are never deleted: a pair, once found, stays. */
    if (store_cache_direct(st->cache, lo, hi, &conv)) {
        if (conv_out)
            *conv_out = conv;
        return STORE_OK;
    }

    /* Usual case: it exists, and a read needs no write lock. */
    store_status ret = store_first(st, find, "uu", lo, hi);
    if (ret == STORE_OK)
        conv = store_col_u64(find, 0);
    store_finish(find);
    if (ret != STORE_NOT_FOUND)
        goto done;

    int own;
    ret = store_op_begin(st, &own);
    if (ret != STORE_OK)
        return ret;
    /* Again under the write lock: another handle may have just created it. */
    ret = store_first(st, find, "uu", lo, hi);
    if (ret == STORE_OK)
        conv = store_col_u64(find, 0);
    store_finish(find);
    if (ret != STORE_NOT_FOUND)
        goto out;
    /* A missing user fails the foreign key here: NOT_FOUND. The call has no
     * clock, so joined_ms stays 0 for direct conversations. */
    ret = store_exec(st, Q_CONV_INSERT, NULL, "duu", STORE_KIND_DIRECT, lo, hi);
    if (ret != STORE_OK)
        goto out;
    conv = (uint64_t)sqlite3_last_insert_rowid(st->db);
    ret = store_exec(st, Q_MEMBER_INSERT, NULL, "uudi", conv, lo, STORE_ROLE_NONE, (int64_t)0);
    if (ret != STORE_OK)
        goto out;
    ret = store_exec(st, Q_MEMBER_INSERT, NULL, "uudi", conv, hi, STORE_ROLE_NONE, (int64_t)0);
out:
    ret = store_op_end(st, own, ret);
done:
    if (ret == STORE_OK) {
        store_cache_direct_put(st->cache, lo, hi, conv);
        if (conv_out)
            *conv_out = conv;
    }
    return ret;
}

static store_status sq_conv_members(store *base, uint64_t conv, store_id_cb cb, void *arg)
{
    sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->q[Q_CONV_MEMBER_IDS];
    unsigned n = 0;
    store_status ret = store_bind(st, s, "u", conv);
    if (ret == STORE_OK) {
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            n++;
            if (cb(arg, store_col_u64(s, 0)))
                break;
        }
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            ret = store_fail(st, rc);
    }
    store_finish(s);
    /* Only an empty answer needs to tell "no members" from "no such conv". */
    if (ret == STORE_OK && n == 0)
        ret = store_conv_exists(st, conv);
    return ret;
}

/* ---- groups ---- */

static void store_group_row(sqlite3_stmt *s, store_group *out)
{
    out->id = store_col_u64(s, 0);
    out->conv = store_col_u64(s, 1);
    out->creator = store_col_u64(s, 2);
    store_col_text(s, 3, out->name, sizeof out->name);
    store_col_text(s, 4, out->desc, sizeof out->desc);
}

static store_status sq_group_create(store *base, const char *name, const char *desc,
                                    uint64_t creator, int64_t now_ms, store_group *out)
{
    sq_store *st = sq_of(base);
    uint64_t conv = 0, id = 0;
    int own;
    store_status ret = store_op_begin(st, &own);
    if (ret != STORE_OK)
        return ret;
    ret = store_exec(st, Q_CONV_INSERT, NULL, "dnn", STORE_KIND_GROUP);
    if (ret != STORE_OK)
        goto out;
    conv = (uint64_t)sqlite3_last_insert_rowid(st->db);
    ret = store_exec(st, Q_GROUP_INSERT, NULL, "ttuui", name, desc, creator, conv, now_ms);
    if (ret != STORE_OK)
        goto out;
    id = (uint64_t)sqlite3_last_insert_rowid(st->db);
    ret = store_exec(st, Q_MEMBER_INSERT, NULL, "uudi", conv, creator, STORE_ROLE_CREATOR, now_ms);
out:
    ret = store_op_end(st, own, ret);
    if (ret == STORE_OK && out) {
        out->id = id;
        out->conv = conv;
        out->creator = creator;
        snprintf(out->name, sizeof out->name, "%s", name);
        snprintf(out->desc, sizeof out->desc, "%s", desc);
    }
    return ret;
}

static store_status sq_group_get(store *base, uint64_t group, store_group *out)
{
    sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->q[Q_GROUP_GET];
    store_status ret = store_first(st, s, "u", group);
    if (ret == STORE_OK && out)
        store_group_row(s, out);
    store_finish(s);
    return ret;
}

static store_status sq_group_join(store *base, uint64_t group, uint64_t user, int64_t now_ms)
{
    sq_store *st = sq_of(base);
    int changes;
    store_status ret =
        store_exec(st, Q_GROUP_JOIN, &changes, "uudi", group, user, STORE_ROLE_NORMAL, now_ms);
    if (ret == STORE_OK && changes == 0) /* no such group */
        return STORE_NOT_FOUND;
    return ret;
}

static store_status sq_group_quit(store *base, uint64_t group, uint64_t user)
{
    sq_store *st = sq_of(base);
    int changes;
    store_status ret = store_exec(st, Q_GROUP_QUIT, &changes, "uu", group, user);
    if (ret == STORE_OK && changes == 0)
        return STORE_NOT_FOUND;
    return ret;
}

static store_status store_group_conv(sq_store *st, uint64_t group, uint64_t *conv)
{
    sqlite3_stmt *s = st->q[Q_GROUP_CONV];
    store_status ret = store_first(st, s, "u", group);
    if (ret == STORE_OK)
        *conv = store_col_u64(s, 0);
    store_finish(s);
    return ret;
}

static store_status sq_group_delete(store *base, uint64_t group)
{
    sq_store *st = sq_of(base);
    uint64_t conv;
    int own;
    store_status ret = store_op_begin(st, &own);
    if (ret != STORE_OK)
        return ret;
    ret = store_group_conv(st, group, &conv);
    if (ret != STORE_OK)
        goto out;
    /* Children first: the foreign keys point at the conversation. */
    ret = store_exec(st, Q_CONV_DELETE_MEMBERS, NULL, "u", conv);
    if (ret == STORE_OK)
        ret = store_exec(st, Q_MSG_ID_FLOOR, NULL, "");
    if (ret == STORE_OK)
        ret = store_exec(st, Q_CONV_DELETE_MESSAGES, NULL, "u", conv);
    if (ret == STORE_OK)
        ret = store_exec(st, Q_GROUP_DELETE, NULL, "u", group);
    if (ret == STORE_OK)
        ret = store_exec(st, Q_CONV_DELETE, NULL, "u", conv);
out:
    return store_op_end(st, own, ret);
}

static store_status sq_group_role(store *base, uint64_t group, uint64_t user, int *role_out)
{
    sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->q[Q_GROUP_ROLE];
    store_status ret = store_first(st, s, "uu", group, user);
    if (ret == STORE_OK && role_out)
        *role_out = sqlite3_column_int(s, 0);
    store_finish(s);
    return ret;
}

static store_status sq_group_members(store *base, uint64_t group, store_member_cb cb, void *arg)
{
    sq_store *st = sq_of(base);
    uint64_t conv;
    store_status ret = store_group_conv(st, group, &conv);
    if (ret != STORE_OK)
        return ret;
    return store_members_each(st, conv, cb, arg);
}

static store_status sq_user_groups(store *base, uint64_t user, store_group_cb cb, void *arg)
{
    sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->q[Q_USER_GROUPS];
    store_status ret = store_bind(st, s, "u", user);
    if (ret != STORE_OK)
        goto out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        store_group g;
        store_group_row(s, &g);
        if (cb(arg, &g) != 0)
            goto out;
    }
    if (rc != SQLITE_DONE)
        ret = store_fail(st, rc);
out:
    store_finish(s);
    return ret;
}

/* ---- messages ---- */

/* Fills the routing fields from the conversation's kind and pair. */
/* Reads a row made of STORE_MSG_COLS; body points into the statement. */
static void store_msg_row(sqlite3_stmt *s, store_msg *m)
{
    m->msgid = store_col_u64(s, 0);
    m->conv = store_col_u64(s, 1);
    m->seq = store_col_u64(s, 2);
    m->sender = store_col_u64(s, 3);
    const void *body = sqlite3_column_blob(s, 4);
    m->body_len = (size_t)sqlite3_column_bytes(s, 4);
    m->body = body ? body : ""; /* SQLite gives NULL for an empty blob */
    m->ts = sqlite3_column_int64(s, 5);
    m->recalled = sqlite3_column_int(s, 6) != 0;
    store_route r = {.kind = sqlite3_column_int(s, 7),
                     .lo = store_col_u64(s, 8),
                     .hi = store_col_u64(s, 9),
                     .group = store_col_u64(s, 10)};
    store_route_msg(m, &r);
    m->existed = 0;
}

/* Reads the row s is on (STORE_MSG_COLS) into out with the body copied into
 * the handle: the column memory dies at reset, and the statement must not
 * stay open (it would pin a read snapshot). The copy lives until the next
 * call that makes one. */
static store_status store_msg_keep(sq_store *st, sqlite3_stmt *s, store_msg *out)
{
    store_msg m;
    store_msg_row(s, &m);
    if (m.body_len + 1 > st->body_cap) {
        char *p = realloc(st->body, m.body_len + 1);
        if (!p) {
            store_set_err(st, "out of memory");
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
static store_status store_msg_by_ref(sq_store *st, uint64_t sender, uint64_t ref, store_msg *out)
{
    sqlite3_stmt *s = st->q[Q_MSG_BY_REF];
    store_status ret = store_first(st, s, "ur", sender, ref);
    if (ret == STORE_OK)
        ret = store_msg_keep(st, s, out);
    store_finish(s);
    if (ret == STORE_OK)
        out->existed = 1;
    return ret;
}

/* Steps a bound message query, handing each row to cb. */
static store_status store_msg_each(sq_store *st, sqlite3_stmt *s, store_msg_cb cb, void *arg,
                                   unsigned *count)
{
    int rc;
    *count = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        store_msg m;
        store_msg_row(s, &m);
        (*count)++;
        if (cb(arg, &m) != 0)
            return STORE_OK;
    }
    return rc == SQLITE_DONE ? STORE_OK : store_fail(st, rc);
}

/* The routing of conv into *r, from the cache or the database. */
static store_status store_conv_route(sq_store *st, uint64_t conv, store_route *r)
{
    if (store_cache_route(st->cache, conv, r))
        return STORE_OK;
    sqlite3_stmt *s = st->q[Q_CONV_ROUTE];
    store_status ret = store_first(st, s, "u", conv);
    if (ret == STORE_OK) {
        r->kind = sqlite3_column_int(s, 0);
        r->lo = store_col_u64(s, 1);
        r->hi = store_col_u64(s, 2);
        r->group = store_col_u64(s, 3);
    }
    store_finish(s);
    if (ret == STORE_OK)
        store_cache_route_put(st->cache, conv, r);
    return ret;
}

static store_status sq_message_append(store *base, uint64_t conv, uint64_t sender, uint64_t ref,
                                      const char *body, size_t body_len, int64_t ts, store_msg *out)
{
    sq_store *st = sq_of(base);
    sqlite3_stmt *last = st->q[Q_CONV_LAST_SEQ];
    store_msg m = {.conv = conv, .sender = sender, .ts = ts, .body = body, .body_len = body_len};
    /* Reading the last seq and inserting the next must be one write
     * transaction. Inside the caller's, nothing more is needed: a failed
     * insert undoes itself, and the read changed nothing. */
    int own = sqlite3_get_autocommit(st->db);
    store_status ret = own ? store_exec(st, Q_BEGIN, NULL, "") : STORE_OK;
    if (ret != STORE_OK)
        return ret;
    uint64_t last_seq = 0;
    int cached = store_cache_seq(st->cache, conv, &last_seq);
    for (;;) {
        if (!cached) {
            ret = store_first(st, last, "u", conv);
            if (ret == STORE_OK)
                last_seq = store_col_u64(last, 0);
            store_finish(last);
            if (ret != STORE_OK)
                break;
        }
        m.seq = last_seq + 1;
        ret = store_exec(st, Q_MSG_INSERT, NULL, "uuubir", conv, m.seq, sender, (const void *)body,
                         body_len, ts, ref);
        /* The cached seq is stale if another handle has appended since (the
         * (conv_id, seq) key says so): read it again, once. */
        if (ret != STORE_CONFLICT || !cached)
            break;
        store_cache_seq_del(st->cache, conv);
        cached = 0;
    }
    if (ret == STORE_OK) {
        m.msgid = (uint64_t)sqlite3_last_insert_rowid(st->db);
        store_cache_seq_put(st->cache, conv, m.seq);
    }
    if (own) {
        if (ret == STORE_OK)
            ret = store_exec(st, Q_COMMIT, NULL, "");
        if (ret != STORE_OK) {
            if (!sqlite3_get_autocommit(st->db))
                store_quiet(st, Q_ROLLBACK);
            sq_forget(st);
        }
    }
    if (ret == STORE_CONFLICT && ref) {
        /* The ref is taken (a failed insert takes no seq): the answer is the
         * message that took it. */
        char why[sizeof st->errmsg];
        memcpy(why, st->errmsg, sizeof why);
        store_msg old;
        ret = store_msg_by_ref(st, sender, ref, &old);
        if (ret == STORE_OK && out)
            *out = old;
        if (ret == STORE_NOT_FOUND) {
            memcpy(st->errmsg, why, sizeof why);
            ret = STORE_CONFLICT;
        }
        return ret;
    }
    if (ret != STORE_OK)
        return ret;
    store_route r;
    ret = store_conv_route(st, conv, &r);
    if (ret == STORE_OK && out) {
        store_route_msg(&m, &r);
        *out = m;
    }
    return ret;
}

static store_status sq_message_by_ref(store *base, uint64_t sender, uint64_t ref, store_msg *out)
{
    store_msg m;
    return store_msg_by_ref(sq_of(base), sender, ref, out ? out : &m);
}

static store_status sq_message_get(store *base, uint64_t msgid, store_msg *out)
{
    sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->q[Q_MSG_GET];
    store_status ret = store_first(st, s, "u", msgid);
    if (ret == STORE_OK)
        ret = store_msg_keep(st, s, out);
    store_finish(s);
    return ret;
}

static store_status sq_message_recall(store *base, uint64_t msgid)
{
    sq_store *st = sq_of(base);
    int changes;
    store_status ret = store_exec(st, Q_MSG_RECALL, &changes, "u", msgid);
    if (ret == STORE_OK && changes == 0)
        return STORE_NOT_FOUND;
    return ret;
}

static store_status sq_history(store *base, uint64_t conv, uint64_t before_seq, unsigned limit,
                               store_msg_cb cb, void *arg)
{
    sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->q[Q_HISTORY];
    unsigned n = 0;
    store_status ret =
        store_bind(st, s, "uui", conv, before_seq ? before_seq : UINT64_MAX, (int64_t)limit);
    if (ret == STORE_OK)
        ret = store_msg_each(st, s, cb, arg, &n);
    store_finish(s);
    if (ret == STORE_OK && n == 0)
        ret = store_conv_exists(st, conv);
    return ret;
}

static store_status sq_pending(store *base, uint64_t user, uint64_t after_msgid, unsigned limit,
                               store_msg_cb cb, void *arg)
{
    sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->q[Q_PENDING];
    unsigned n;
    store_status ret = store_bind(st, s, "uui", user, after_msgid, (int64_t)limit);
    if (ret == STORE_OK)
        ret = store_msg_each(st, s, cb, arg, &n);
    store_finish(s);
    return ret;
}

static store_status sq_ack(store *base, uint64_t user, uint64_t conv, uint64_t seq)
{
    sq_store *st = sq_of(base);
    int changes;
    store_status ret = store_exec(st, Q_ACK, &changes, "uuu", user, conv, seq);
    if (ret == STORE_OK && changes == 0)
        return STORE_NOT_FOUND;
    return ret;
}

static void sq_keep_small(store *base)
{
    sq_store *st = (sq_store *)base;
    /* No mmap: its pages would count once per handle that touched them.
     * A login reads a handful of pages; 1 MiB keeps the hot ones. */
    if (store_run_sql(st, "PRAGMA mmap_size = 0; PRAGMA cache_size = -1024") != STORE_OK)
        log_warn("store: cannot shrink a handle's cache: %s", sqlite3_errmsg(st->db));
}

/* ---- administration ---- */

static store_status sq_users_find(store *base, const char *from, const char *after, unsigned limit,
                                  store_userrow_cb cb, void *arg)
{
    sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->q[Q_USERS_FIND];
    store_status ret = store_bind(st, s, "tti", from, after, (int64_t)limit);
    if (ret != STORE_OK)
        goto out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        store_user u;
        store_user_row(s, &u);
        if (cb(arg, &u) != 0)
            goto out;
    }
    if (rc != SQLITE_DONE)
        ret = store_fail(st, rc);
out:
    store_finish(s);
    return ret;
}

static store_status sq_user_sessions(store *base, uint64_t user, unsigned limit,
                                     store_session_cb cb, void *arg)
{
    sq_store *st = sq_of(base);
    sqlite3_stmt *s = st->q[Q_USER_SESSIONS];
    store_status ret = store_bind(st, s, "ui", user, (int64_t)limit);
    if (ret != STORE_OK)
        goto out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (cb(arg, sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 1)) != 0)
            goto out;
    }
    if (rc != SQLITE_DONE)
        ret = store_fail(st, rc);
out:
    store_finish(s);
    return ret;
}

static store_status sq_user_set_banned(store *base, uint64_t user, int banned)
{
    return store_exec(sq_of(base), Q_USER_SET_BANNED, NULL, "ud", user, banned);
}

static store_status sq_user_set_pwhash(store *base, uint64_t user, const char *pwhash)
{
    return store_exec(sq_of(base), Q_USER_SET_PWHASH, NULL, "ut", user, pwhash);
}

static store_status sq_user_tombstone(store *base, uint64_t user, const char *name)
{
    return store_exec(sq_of(base), Q_USER_TOMBSTONE, NULL, "ut", user, name);
}

static store_status sq_user_unlink(store *base, uint64_t user, store_unlink_kind what)
{
    int q = what == STORE_UNLINK_FRIENDS  ? Q_UNLINK_FRIENDS
            : what == STORE_UNLINK_GROUPS ? Q_UNLINK_GROUPS
                                          : Q_UNLINK_BODIES;
    return store_exec(sq_of(base), q, NULL, "u", user);
}

static const store_ops sq_ops = {
    .name = "sqlite",
    .close = sq_close,
    .errmsg = sq_errmsg,
    .set_err = sq_set_err,
    .txn_lost = sq_txn_lost,
    .is_dead = sq_is_dead,
    .keep_small = sq_keep_small,
    .single_writer = 1,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .savepoint = sq_savepoint,
    .release = sq_release,
    .rollback_to = sq_rollback_to,
    .user_create = sq_user_create,
    .user_by_id = sq_user_by_id,
    .user_by_name = sq_user_by_name,
    .op_begin = sq_op_begin,
    .op_end = sq_op_end,
    .session_insert = sq_session_insert,
    .session_trim = sq_session_trim,
    .session_get = sq_session_get,
    .session_touch = sq_session_touch,
    .session_delete = sq_session_delete,
    .session_delete_user = sq_session_delete_user,
    .sessions_expire = sq_sessions_expire,
    .count = sq_count,
    .friend_add = sq_friend_add,
    .friend_del = sq_friend_del,
    .friend_list = sq_friend_list,
    .group_create = sq_group_create,
    .group_get = sq_group_get,
    .group_join = sq_group_join,
    .group_quit = sq_group_quit,
    .group_delete = sq_group_delete,
    .group_role = sq_group_role,
    .group_members = sq_group_members,
    .user_groups = sq_user_groups,
    .direct_conv = sq_direct_conv,
    .conv_members = sq_conv_members,
    .message_append = sq_message_append,
    .message_get = sq_message_get,
    .message_by_ref = sq_message_by_ref,
    .message_recall = sq_message_recall,
    .history = sq_history,
    .pending = sq_pending,
    .ack = sq_ack,
    .users_find = sq_users_find,
    .user_sessions = sq_user_sessions,
    .user_set_banned = sq_user_set_banned,
    .user_set_pwhash = sq_user_set_pwhash,
    .user_tombstone = sq_user_tombstone,
    .user_unlink = sq_user_unlink,
};
