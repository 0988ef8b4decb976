/*
 * store: Parley's durable state behind one interface (users, sessions,
 * friends, groups, conversations, messages, delivery cursors).
 *
 * A `store` handle is one database connection. It is not thread-safe: each
 * worker thread opens its own handle and uses it alone. Every call is
 * synchronous (it blocks), so it must only be made from a worker thread,
 * never from an event-loop thread.
 *
 * Only prepared statements with bound parameters reach the database.
 * Functions return a store_status; on STORE_ERROR store_errmsg() says why.
 * On MariaDB a deadlock or lock wait timeout is a STORE_ERROR whose message
 * says so: roll the transaction back and retry it. After a deadlock the
 * server has already undone the transaction (store_txn_lost() says so), and
 * every call but store_rollback fails until the caller rolls back. A lost
 * connection (store_is_dead()) fails every call: close the handle and open
 * another.
 *
 * Data model:
 *   - a conversation is a user pair (direct) or a group; it has last_seq;
 *   - a message belongs to one conversation, with a global id (msgid,
 *     increasing) and a per-conversation seq (gap-free from 1);
 *   - members(conv, user) carry the role (groups) and acked_seq, the
 *     delivery cursor: everything above it not sent by the user is pending.
 */
#ifndef PARLEY_STORE_H
#define PARLEY_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct store store;

typedef enum {
    STORE_OK = 0,
    STORE_NOT_FOUND,
    STORE_CONFLICT,
    STORE_ERROR,
} store_status;

enum { STORE_NAME_MAX = 32, STORE_DESC_MAX = 200, STORE_HASH_MAX = 160 };

enum { STORE_ROLE_NONE = 0, STORE_ROLE_CREATOR = 1, STORE_ROLE_NORMAL = 2 };

typedef struct {
    uint64_t id;
    char name[STORE_NAME_MAX * 4 + 1]; /* UTF-8, up to 32 characters */
    char pwhash[STORE_HASH_MAX + 1];   /* argon2id string, empty if not asked for */
    int64_t created_ms;                /* unix ms */
    int banned;                        /* suspended by an operator: no login, no resume */
} store_user;

typedef struct {
    uint64_t id;
    uint64_t conv;
    uint64_t creator;
    char name[STORE_NAME_MAX * 4 + 1];
    char desc[STORE_DESC_MAX * 4 + 1];
} store_group;

typedef struct {
    uint64_t msgid;
    uint64_t conv;
    uint64_t seq;
    uint64_t sender;
    uint64_t to;    /* direct: the other user of the pair; 0 for groups */
    uint64_t group; /* group id for group conversations; 0 for direct */
    int64_t ts;     /* unix ms */
    int recalled;
    const char *body; /* valid only during the callback / until the next call */
    size_t body_len;
    int existed; /* message_append: 1 if ref named a message already stored */
} store_msg;

/* Callbacks return 0 to go on, non-zero to stop the iteration early. */
typedef int (*store_user_cb)(void *arg, uint64_t id, const char *name);
typedef int (*store_member_cb)(void *arg, uint64_t id, const char *name, int role);
typedef int (*store_id_cb)(void *arg, uint64_t id);
typedef int (*store_group_cb)(void *arg, const store_group *g);
typedef int (*store_msg_cb)(void *arg, const store_msg *m);
typedef int (*store_userrow_cb)(void *arg, const store_user *u); /* pwhash empty */
typedef int (*store_session_cb)(void *arg, int64_t created_ms, int64_t last_used_ms);

/* Opens a store and creates or migrates its schema. `path` is a URI that
 * picks the backend:
 *   PATH, sqlite:PATH, sqlite://PATH
 *       an SQLite database file, created if missing;
 *   mariadb://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?socket=SOCKET_PATH]
 *       a connection to an existing MariaDB database (port 3306 by default;
 *       with socket=, over that unix socket). %XX escapes are undone in the
 *       user, password, database and socket path. Further options,
 *       &-separated: tls=require, tls-ca=PATH, password-file=PATH (the
 *       top of mariadb.c says what they do).
 * Any other "scheme://" is an error rather than a file name. A MariaDB handle
 * is one connection; open and close it on the thread that uses it (it sets
 * up the client library's per-thread state) and open a new one if calls
 * report the connection lost: it does not reconnect by itself.
 * On failure returns NULL and writes the reason (never the password) to err.
 * The caller owns the handle and frees it with store_close(). */
store *store_open(const char *path, char *err, size_t errlen);
/* uri as it may be shown (logs, messages): a password in a
 * "scheme://user:password@..." URI becomes "***". Writes into out (outlen
 * bytes, truncated to fit) and returns out. */
const char *store_uri_redacted(const char *uri, char *out, size_t outlen);
void store_close(store *st);
const char *store_errmsg(const store *st);

/* 1 if the current transaction was rolled back by the server (deadlock, lock
 * wait timeout that undoes it, lost connection): the caller must
 * store_rollback() and run the whole transaction again. Also 1 after a call
 * outside a transaction whose own unit a deadlock undid (a login's session
 * insert and trim): that call may simply run again; store_rollback() or the
 * next begin clears it. 0 otherwise (always 0 on SQLite). */
int store_txn_lost(const store *st);
/* 1 if the handle's connection is gone for good: close it and open a new one.
 * Always 0 on SQLite. */
int store_is_dead(const store *st);

/* The handle will serve short lookups and single-row writes (logins,
 * registrations), never a send: keep its caches small. On SQLite, where
 * every handle caches the database on its own, this bounds what the login
 * handles hold of a growing users table; MariaDB caches in the server. */
void store_keep_small(store *st);

/* 1 if write transactions on this database run one at a time (SQLite): they
 * cannot deadlock each other, so a batch needs no care for lock order. 0 on
 * MariaDB. */
int store_single_writer(const store *st);

/* Transactions. begin starts a write transaction; savepoints nest inside it
 * so that one failed request in a batch does not undo the others. */
store_status store_begin(store *st);
store_status store_commit(store *st);
store_status store_rollback(store *st);
store_status store_savepoint(store *st);
store_status store_release(store *st);     /* keep the work since savepoint */
store_status store_rollback_to(store *st); /* undo it (and release) */

/* Users. Names are unique (CONFLICT); lookup by name is exact. */
store_status store_user_create(store *st, const char *name, const char *pwhash, int64_t now_ms,
                               uint64_t *id_out);
store_status store_user_by_id(store *st, uint64_t id, store_user *out);
store_status store_user_by_name(store *st, const char *name, store_user *out);

/* Sessions: a hash of the random token handed to the client at login, with
 * the time (unix ms) it was last used. Unused sessions expire and each user
 * keeps a bounded number of them, so tokens do not pile up.
 *
 * create: CONFLICT if the token exists, NOT_FOUND if the user does not.
 * With max_per_user > 0 it also deletes the user's least recently used
 * sessions so that at most max_per_user remain, the new one among them (0:
 * no bound). Two logins of one user at the same moment on MariaDB may each
 * leave one more for a while; the next login trims them. */
store_status store_session_create(store *st, const uint8_t token_hash[32], uint64_t user,
                                  int64_t now_ms, unsigned max_per_user);
/* The session's user. NOT_FOUND if the token is unknown or was last used
 * more than max_idle_ms before now_ms (0: never expires); an expired session
 * is deleted. Otherwise counts as a use: last_used moves up to now_ms (never
 * down), but is written only once it is STORE_SESSION_TOUCH_MS old (or
 * max_idle_ms / 64, if less), so expiry and the least-recently-used order
 * are exact to that much. A refresh that fails is left for the next use
 * unless the transaction or connection is lost (then STORE_ERROR). */
store_status store_session_user(store *st, const uint8_t token_hash[32], int64_t now_ms,
                                int64_t max_idle_ms, uint64_t *user_out);
/* NOT_FOUND if there is no such session. */
store_status store_session_delete(store *st, const uint8_t token_hash[32]);
/* Deletes every session of user (logout from all devices); OK if none. */
store_status store_session_delete_user(store *st, uint64_t user);
/* Housekeeping: deletes sessions unused for more than max_idle_ms (0: none
 * expire), at most STORE_SESSIONS_EXPIRE_MAX per call, oldest first, so that
 * one call never holds the write lock for long. *deleted gets how many; while
 * it is STORE_SESSIONS_EXPIRE_MAX, there may be more: call again. */
store_status store_sessions_expire(store *st, int64_t now_ms, int64_t max_idle_ms,
                                   uint64_t *deleted);

enum { STORE_SESSION_TOUCH_MS = 60 * 1000, STORE_SESSIONS_EXPIRE_MAX = 1000 };

/* Friends, stored in both directions. add: NOT_FOUND if either user does not
 * exist, CONFLICT if already friends or a == b. del: NOT_FOUND if not friends. */
store_status store_friend_add(store *st, uint64_t a, uint64_t b, int64_t now_ms);
store_status store_friend_del(store *st, uint64_t a, uint64_t b);
store_status store_friend_list(store *st, uint64_t user, store_user_cb cb, void *arg);
/* How many friends user has (0 for an unknown user): one range of an index,
 * cheap enough to check a cap before every add. */
store_status store_friend_count(store *st, uint64_t user, uint64_t *n);

/* Groups. create: CONFLICT if the name is taken; the creator becomes member
 * with ROLE_CREATOR. join: NOT_FOUND no group, CONFLICT already a member; a
 * new member's cursor starts at the group's current last_seq. quit:
 * NOT_FOUND if not a member. delete removes the group, its members and its
 * messages. role: NOT_FOUND if not a member. */
store_status store_group_create(store *st, const char *name, const char *desc, uint64_t creator,
                                int64_t now_ms, store_group *out);
store_status store_group_get(store *st, uint64_t group, store_group *out);
store_status store_group_join(store *st, uint64_t group, uint64_t user, int64_t now_ms);
store_status store_group_quit(store *st, uint64_t group, uint64_t user);
store_status store_group_delete(store *st, uint64_t group);
store_status store_group_role(store *st, uint64_t group, uint64_t user, int *role_out);
store_status store_group_members(store *st, uint64_t group, store_member_cb cb, void *arg);
store_status store_user_groups(store *st, uint64_t user, store_group_cb cb, void *arg);
/* How many groups user is a member of (0 for an unknown user); direct
 * conversations do not count. One range of an index, like the next. */
store_status store_user_group_count(store *st, uint64_t user, uint64_t *n);
/* How many members group has; NOT_FOUND if there is no such group. */
store_status store_group_member_count(store *st, uint64_t group, uint64_t *n);

/* Conversations. direct_conv returns the conversation of the pair, creating
 * it (and both members, cursors at 0) on first use; NOT_FOUND if either user
 * does not exist. conv_members hands over the ids of a conversation's users,
 * ascending: no names, since a send to a group of 500 needs only ids. */
store_status store_direct_conv(store *st, uint64_t a, uint64_t b, uint64_t *conv_out);
store_status store_conv_members(store *st, uint64_t conv, store_id_cb cb, void *arg);

/* Messages. append stores body in conv with the next seq and a new msgid and
 * fills out (out->body points at the caller's body, out->existed = 0).
 *
 * ref is the caller's idempotency reference for the send (0: none). A
 * (sender, ref) pair names at most one message, whatever its conversation:
 * if sender already has a message with this ref, nothing is stored and out
 * gets that message as store_message_get would give it (body in memory of
 * the handle, valid until the next call), with out->existed = 1. This holds
 * even if conv differs from the stored message's or does not exist (the
 * retry of a send is answered with what the send did). A duplicate takes no
 * seq; two handles racing with one (sender, ref) store one message and both
 * get it. */
store_status store_message_append(store *st, uint64_t conv, uint64_t sender, uint64_t ref,
                                  const char *body, size_t body_len, int64_t ts, store_msg *out);
/* One send of store_message_append_many. */
typedef struct store_append {
    uint64_t conv, sender, ref;
    const char *body;
    size_t body_len;
    int64_t ts;
} store_append;
/* The outcome of reqs[i]: what store_message_append would have returned and
 * given (m valid during the call only; NULL unless st is STORE_OK). */
typedef void (*store_append_cb)(void *arg, size_t i, store_status st, const store_msg *m);
/* Appends n messages, each as store_message_append would, and calls cb for
 * each in order. On MariaDB rows go in multi-row INSERTs: a batch of sends
 * costs a round trip or a few, not one each. Where reqs name one
 * conversation more than once, their seqs follow the order of reqs. Returns
 * STORE_ERROR (and stops) only if the transaction was lost or the
 * connection died (store_txn_lost, store_is_dead); a request's own failure
 * goes to cb. */
store_status store_message_append_many(store *st, const store_append *reqs, size_t n,
                                       store_append_cb cb, void *arg);
store_status store_message_get(store *st, uint64_t msgid, store_msg *out);
/* The message sender stored with ref, as store_message_get gives it, with
 * out->existed = 1: what a repeat of that send would be answered with.
 * NOT_FOUND if there is none (always, for ref 0). */
store_status store_message_by_ref(store *st, uint64_t sender, uint64_t ref, store_msg *out);
store_status store_message_recall(store *st, uint64_t msgid);
/* The newest `limit` messages of conv with seq < before_seq (0: no bound),
 * handed to cb oldest first. */
store_status store_history(store *st, uint64_t conv, uint64_t before_seq, unsigned limit,
                           store_msg_cb cb, void *arg);
/* Messages pending for user: in any of the user's conversations, seq above
 * the user's cursor, not sent by the user, msgid > after_msgid; at most
 * `limit`, oldest (lowest msgid) first. */
store_status store_pending(store *st, uint64_t user, uint64_t after_msgid, unsigned limit,
                           store_msg_cb cb, void *arg);
/* Moves the user's cursor in conv up to seq (never down). NOT_FOUND if the
 * user is not a member of conv. */
store_status store_ack(store *st, uint64_t user, uint64_t conv, uint64_t seq);
/* One cursor of store_ack_many. */
typedef struct store_cursor {
    uint64_t user, conv, seq;
} store_cursor;
/* store_ack for each of c[0..n), whose (user, conv) pairs are distinct;
 * a cursor of a conversation the user is not in changes nothing. On MariaDB
 * a multi-row UPDATE moves many at once. STORE_OK, or the first error other
 * than NOT_FOUND. */
store_status store_ack_many(store *st, const store_cursor *c, size_t n);

/* ---- administration (parleyctl, services/admin.c) ----
 *
 * Users whose name starts with prefix and sorts after `after` ("" for the
 * first page), in name order (bytes), at most limit (1..STORE_FIND_MAX):
 * one range of the name index. */
enum { STORE_FIND_MAX = 1000, STORE_SESSIONS_LIST_MAX = 1000 };
store_status store_users_find(store *st, const char *prefix, const char *after, unsigned limit,
                              store_userrow_cb cb, void *arg);
/* The user's sessions (never their token hashes), the most recently used
 * first, at most STORE_SESSIONS_LIST_MAX. */
store_status store_user_sessions(store *st, uint64_t user, store_session_cb cb, void *arg);
/* How many session tokens user has. */
store_status store_user_session_count(store *st, uint64_t user, uint64_t *n);
/* Bans (banned = 1) or unbans a user; a ban deletes every session token too,
 * in the same unit. NOT_FOUND for no such user. */
store_status store_user_set_banned(store *st, uint64_t user, int banned);
/* Replaces the password hash and deletes every session token, as one unit.
 * NOT_FOUND for no such user. */
store_status store_user_set_password(store *st, uint64_t user, const char *pwhash);
/* Deletes a user's personal data, as one unit (docs/operations.md "Admin"):
 * the name becomes STORE_TOMBSTONE_PREFIX and the id (which registration
 * can never produce: ':' is refused), the password hash is emptied (no
 * password matches it) and the row banned; every session token, friendship
 * (both directions) and group membership goes; the body of every message the
 * user sent is erased as a recall erases it. What stays: the id and row
 * (other rows refer to it), created_ms, the user's cursors in direct
 * conversations, groups the user created (creator keeps the id) and the
 * erased messages' ids, seqs and times. NOT_FOUND for no such user. */
#define STORE_TOMBSTONE_PREFIX "deleted:"
store_status store_user_erase(store *st, uint64_t user);

/* ---- files (services/file.c) ----
 *
 * A file's content lives outside the database (services/file.c keeps it on
 * disk, named by its SHA-256); these rows say which contents exist (files),
 * what each user is uploading or has uploaded and not yet sent (uploads: an
 * upload whose received == size is complete, a "claim" the user may attach
 * to one message), and which message carries which file (msg_files; the row
 * goes with its message: recall, group deletion, user erasure). A content
 * is referenced while a msg_files row or a complete upload names it. */
enum { STORE_FILE_NAME_MAX = 255, STORE_FILE_TYPE_MAX = 127 }; /* characters */

typedef struct {
    uint8_t sha256[32];
    uint64_t size;
    char name[STORE_FILE_NAME_MAX * 4 + 1]; /* UTF-8 */
    char type[STORE_FILE_TYPE_MAX * 4 + 1]; /* a media type, may be empty */
} store_file;

typedef struct {
    uint64_t id;
    uint64_t user;
    uint64_t received; /* bytes stored so far; == f.size when complete */
    int64_t created_ms;
    store_file f;
} store_upload;

/* (msgid, its file) for store_msg_files. */
typedef int (*store_msgfile_cb)(void *arg, uint64_t msgid, const store_file *f);
typedef int (*store_upload_cb)(void *arg, const store_upload *u);

/* A new upload of u (id ignored); *id_out gets its id. NOT_FOUND if the user
 * does not exist. */
store_status store_upload_create(store *st, const store_upload *u, uint64_t *id_out);
/* NOT_FOUND if there is no such upload. */
store_status store_upload_get(store *st, uint64_t id, store_upload *out);
/* user's newest upload of content sha256, complete or not; NOT_FOUND if none. */
store_status store_upload_find(store *st, uint64_t user, const uint8_t sha256[32],
                               store_upload *out);
store_status store_upload_set_received(store *st, uint64_t id, uint64_t received);
store_status store_upload_delete(store *st, uint64_t id);
/* Uploads created before before_ms, the oldest first, at most limit. */
store_status store_uploads_expired(store *st, int64_t before_ms, unsigned limit, store_upload_cb cb,
                                   void *arg);
/* How many uploads (complete or not) user holds, and the bytes they and the
 * user's sent attachments count against the quota. */
store_status store_file_usage(store *st, uint64_t user, uint64_t *uploads, uint64_t *bytes);

/* Contents: *size_out (may be NULL) gets the size; NOT_FOUND if not stored. */
store_status store_file_get(store *st, const uint8_t sha256[32], uint64_t *size_out);
/* Records a stored content; OK if it was recorded already. */
store_status store_file_put(store *st, const uint8_t sha256[32], uint64_t size, int64_t now_ms);
/* Forgets content sha256 if nothing refers to it any more: *gone gets 1 if
 * it did (the caller then removes the bytes), 0 if a reference remains. */
store_status store_file_release(store *st, const uint8_t sha256[32], int *gone);

/* Appends a message as store_message_append does and attaches the content
 * of user's complete upload `claim` to it, consuming the upload, as one
 * unit. A repeat (out->existed) attaches nothing. */
store_status store_message_append_file(store *st, uint64_t conv, uint64_t sender, uint64_t ref,
                                       const char *body, size_t body_len, int64_t ts,
                                       const store_upload *claim, store_msg *out);
/* The file message msgid carries: NOT_FOUND if none. */
store_status store_msg_file(store *st, uint64_t msgid, store_file *out);
/* Drops the file of message msgid (recall): out gets what it was; NOT_FOUND
 * if it had none. The content may then be unreferenced: store_file_release. */
store_status store_msg_file_drop(store *st, uint64_t msgid, store_file *out);
/* The files of messages lo..hi (msgids), in msgid order: one range of an
 * index, for a page of history or catch-up. */
store_status store_msg_files(store *st, uint64_t lo, uint64_t hi, store_msgfile_cb cb, void *arg);

#endif
