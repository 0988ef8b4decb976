/*
 * store_impl: the contract between the store dispatcher (store.c) and the
 * storage backends (sqlite.c, mariadb.c). Private to src/store/.
 *
 * A backend's handle struct starts with a `struct store` whose ops point at
 * the backend's table, so a store * is also a pointer to the backend handle.
 * Most public store_* calls are forwarded unchanged to the matching op, so a
 * backend implements the semantics documented in store.h. Where both
 * backends would do the same thing with different SQL (sessions: expiry,
 * refresh, the per-user bound), store.c holds the logic once and the ops
 * below are single statements. store.c also checks the arguments both
 * backends would refuse alike, so an op sees only text that fits store.h's
 * buffers and never a = b where two users are meant.
 */
#ifndef PARLEY_STORE_IMPL_H
#define PARLEY_STORE_IMPL_H

#include "store/store.h"

/* What store_ops.count counts, of the id it is given. */
typedef enum {
    STORE_COUNT_FRIENDS,       /* user: friends */
    STORE_COUNT_USER_GROUPS,   /* user: groups the user is a member of */
    STORE_COUNT_GROUP_MEMBERS, /* group: members; NOT_FOUND for no group */
    STORE_COUNT_SESSIONS,      /* user: session tokens */
} store_count_kind;

/* What store_ops.user_unlink removes of a user. */
typedef enum {
    STORE_UNLINK_FRIENDS, /* friendships, both directions */
    STORE_UNLINK_GROUPS,  /* group memberships (not direct conversations) */
    STORE_UNLINK_BODIES,  /* the bodies of the messages sent, as recall does */
} store_unlink_kind;

typedef struct store_ops {
    const char *name; /* "sqlite", "mariadb": for messages */
    void (*close)(store *st);
    const char *(*errmsg)(const store *st);
    /* Makes msg what errmsg says: for a call store.c refuses itself. */
    void (*set_err)(store *st, const char *msg);
    int (*txn_lost)(const store *st);
    int (*is_dead)(const store *st);
    int single_writer;
    /* Optional: nothing to do without it. */
    void (*keep_small)(store *st);

    store_status (*begin)(store *st);
    store_status (*commit)(store *st);
    store_status (*rollback)(store *st);
    store_status (*savepoint)(store *st);
    store_status (*release)(store *st);
    store_status (*rollback_to)(store *st);
    /* Make the ops called between them one unit for store.c: a transaction
     * of their own when none is open (*own = 1), else a savepoint inside
     * the caller's. op_end keeps the work if ret is STORE_OK and undoes it
     * otherwise; it returns ret, or why keeping the work failed. */
    store_status (*op_begin)(store *st, int *own);
    store_status (*op_end)(store *st, int own, store_status ret);

    store_status (*user_create)(store *st, const char *name, const char *pwhash, int64_t now_ms,
                                uint64_t *id_out);
    store_status (*user_by_id)(store *st, uint64_t id, store_user *out);
    store_status (*user_by_name)(store *st, const char *name, store_user *out);

    /* Sessions: one statement each; store.c's store_session_* hold the
     * logic. insert: created and last used at now_ms. */
    store_status (*session_insert)(store *st, const uint8_t token_hash[32], uint64_t user,
                                   int64_t now_ms);
    /* Deletes user's sessions but keep_hash and the `keep` most recently
     * used of the others. */
    store_status (*session_trim)(store *st, uint64_t user, const uint8_t keep_hash[32],
                                 unsigned keep);
    store_status (*session_get)(store *st, const uint8_t token_hash[32], uint64_t *user,
                                int64_t *last_used);
    /* last_used = now_ms, unless it is already that recent. */
    store_status (*session_touch)(store *st, const uint8_t token_hash[32], int64_t now_ms);
    /* Deletes the session if it was last used before before_ms (INT64_MAX:
     * whenever); *n gets 1 if it did, else 0. */
    store_status (*session_delete)(store *st, const uint8_t token_hash[32], int64_t before_ms,
                                   uint64_t *n);
    store_status (*session_delete_user)(store *st, uint64_t user);
    /* Deletes at most limit sessions last used before before_ms, the oldest
     * first; *n gets how many. */
    store_status (*sessions_expire)(store *st, int64_t before_ms, unsigned limit, uint64_t *n);

    /* Counts for the per-user caps, each one range of an index. */
    store_status (*count)(store *st, store_count_kind what, uint64_t id, uint64_t *n);

    store_status (*friend_add)(store *st, uint64_t a, uint64_t b, int64_t now_ms);
    store_status (*friend_del)(store *st, uint64_t a, uint64_t b);
    store_status (*friend_list)(store *st, uint64_t user, store_user_cb cb, void *arg);

    store_status (*group_create)(store *st, const char *name, const char *desc, uint64_t creator,
                                 int64_t now_ms, store_group *out);
    store_status (*group_get)(store *st, uint64_t group, store_group *out);
    store_status (*group_join)(store *st, uint64_t group, uint64_t user, int64_t now_ms);
    store_status (*group_quit)(store *st, uint64_t group, uint64_t user);
    store_status (*group_delete)(store *st, uint64_t group);
    store_status (*group_role)(store *st, uint64_t group, uint64_t user, int *role_out);
    store_status (*group_members)(store *st, uint64_t group, store_member_cb cb, void *arg);
    store_status (*user_groups)(store *st, uint64_t user, store_group_cb cb, void *arg);

    store_status (*direct_conv)(store *st, uint64_t a, uint64_t b, uint64_t *conv_out);
    store_status (*conv_members)(store *st, uint64_t conv, store_id_cb cb, void *arg);

    store_status (*message_append)(store *st, uint64_t conv, uint64_t sender, uint64_t ref,
                                   const char *body, size_t body_len, int64_t ts, store_msg *out);
    /* Optional: store_message_append_many calls message_append in turn
     * without it. */
    store_status (*message_append_many)(store *st, const store_append *reqs, size_t n,
                                        store_append_cb cb, void *arg);
    store_status (*message_get)(store *st, uint64_t msgid, store_msg *out);
    /* ref is not 0. */
    store_status (*message_by_ref)(store *st, uint64_t sender, uint64_t ref, store_msg *out);
    store_status (*message_recall)(store *st, uint64_t msgid);
    store_status (*history)(store *st, uint64_t conv, uint64_t before_seq, unsigned limit,
                            store_msg_cb cb, void *arg);
    store_status (*pending)(store *st, uint64_t user, uint64_t after_msgid, unsigned limit,
                            store_msg_cb cb, void *arg);
    store_status (*ack)(store *st, uint64_t user, uint64_t conv, uint64_t seq);
    /* Optional: store_ack_many calls ack in turn without it. */
    store_status (*ack_many)(store *st, const store_cursor *c, size_t n);

    /* Administration: one statement each; store.c composes them. find:
     * name >= from and > after, in name order, at most limit rows (store.c
     * stops at the first name without the prefix). */
    store_status (*users_find)(store *st, const char *from, const char *after, unsigned limit,
                               store_userrow_cb cb, void *arg);
    store_status (*user_sessions)(store *st, uint64_t user, unsigned limit, store_session_cb cb,
                                  void *arg);
    store_status (*user_set_banned)(store *st, uint64_t user, int banned);
    store_status (*user_set_pwhash)(store *st, uint64_t user, const char *pwhash);
    /* name = name, pwhash = '', banned = 1. */
    store_status (*user_tombstone)(store *st, uint64_t user, const char *name);
    store_status (*user_unlink)(store *st, uint64_t user, store_unlink_kind what);
} store_ops;

/* The first member of every backend handle. */
struct store {
    const store_ops *ops;
};

/* Opens an SQLite database file (created if missing). */
/* sync_full: fsync every commit (PRAGMA synchronous = FULL), so that a power
 * loss loses nothing that was acknowledged; else NORMAL (see sqlite.c). */
store *store_sqlite_open(const char *path, int sync_full, char *err, size_t errlen);

/* Opens a MariaDB connection from a whole "mariadb://..." URI. */
store *store_mariadb_open(const char *uri, char *err, size_t errlen);

#endif
