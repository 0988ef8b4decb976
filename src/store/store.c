/*
 * store dispatcher: picks the backend from the URI handed to store_open and
 * forwards every other call through the handle's ops table.
 */
#include "store/store_impl.h"

#include "common/metrics.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char STORE_SQLITE_SCHEME[] = "sqlite:";
static const char STORE_SQLITE_URL[] = "sqlite://";
static const char STORE_MARIADB_SCHEME[] = "mariadb://";

/* True if uri starts with "scheme://": a URI we cannot take for a file name.
 * Without this a typo such as "mysql://..." would quietly create a file. */
static int store_has_scheme(const char *uri)
{
    size_t i = 0;
    if (!isalpha((unsigned char)uri[0]))
        return 0;
    while (isalnum((unsigned char)uri[i]) || uri[i] == '+' || uri[i] == '-' || uri[i] == '.')
        i++;
    return strncmp(uri + i, "://", 3) == 0;
}

/* Records why store.c refused a call before any backend saw it. */
static void store_err(store *st, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    st->ops->set_err(st, msg);
}

/* Text a backend can store and give back whole: longer values would not fit
 * the fixed buffers of store.h's structs when read back. */
static int store_text_ok(store *st, const char *s, size_t max, const char *what)
{
    if (!s) {
        store_err(st, "%s missing", what);
        return 0;
    }
    if (strnlen(s, max + 1) > max) {
        store_err(st, "%s longer than %zu bytes", what, max);
        return 0;
    }
    return 1;
}

store *store_open(const char *uri, char *err, size_t errlen)
{
    const char *path = uri;
    if (!uri || !*uri) {
        if (err && errlen)
            snprintf(err, errlen, "no store URI given");
        return NULL;
    }
    if (strncmp(uri, STORE_MARIADB_SCHEME, strlen(STORE_MARIADB_SCHEME)) == 0)
        return store_mariadb_open(uri, err, errlen);
    /* The longer prefix first, so that "sqlite:///abs" keeps its one slash. */
    if (strncmp(uri, STORE_SQLITE_URL, strlen(STORE_SQLITE_URL)) == 0)
        path = uri + strlen(STORE_SQLITE_URL);
    else if (strncmp(uri, STORE_SQLITE_SCHEME, strlen(STORE_SQLITE_SCHEME)) == 0)
        path = uri + strlen(STORE_SQLITE_SCHEME);
    else if (store_has_scheme(uri)) {
        if (err && errlen)
            snprintf(err, errlen, "%.*s: unknown store URI scheme (use sqlite: or mariadb://)",
                     (int)(strchr(uri, ':') - uri), uri);
        return NULL;
    }
    /* The one option of the sqlite: forms, as a suffix (a file name with
     * a '?' of its own stays whole unless it ends just so). */
    int sync_full = 0;
    char file[4096];
    size_t plen = strlen(path);
    if (path != uri) {
        static const char full[] = "?sync=full", normal[] = "?sync=normal";
        size_t cut = 0;
        if (plen >= sizeof(full) - 1 && strcmp(path + plen - (sizeof(full) - 1), full) == 0)
            cut = sizeof(full) - 1, sync_full = 1;
        else if (plen >= sizeof(normal) - 1 &&
                 strcmp(path + plen - (sizeof(normal) - 1), normal) == 0)
            cut = sizeof(normal) - 1;
        if (cut) {
            if (plen - cut >= sizeof(file)) {
                if (err && errlen)
                    snprintf(err, errlen, "%s: the file name is too long", uri);
                return NULL;
            }
            memcpy(file, path, plen - cut);
            file[plen - cut] = '\0';
            path = file;
        }
    }
    if (!*path) {
        if (err && errlen)
            snprintf(err, errlen, "%s: no database file named", uri);
        return NULL;
    }
    return store_sqlite_open(path, sync_full, err, errlen);
}

const char *store_uri_redacted(const char *uri, char *out, size_t outlen)
{
    if (!outlen)
        return out;
    const char *auth = store_has_scheme(uri) ? strstr(uri, "://") : NULL;
    const char *at = auth ? strchr(auth + 3, '@') : NULL;
    const char *colon = auth ? memchr(auth + 3, ':', at ? (size_t)(at - auth - 3) : 0) : NULL;
    if (!colon) {
        snprintf(out, outlen, "%s", uri);
        return out;
    }
    snprintf(out, outlen, "%.*s***%s", (int)(colon + 1 - uri), uri, at);
    return out;
}

void store_close(store *st)
{
    if (st)
        st->ops->close(st);
}

const char *store_errmsg(const store *st)
{
    return st ? st->ops->errmsg(st) : "no store";
}

int store_txn_lost(const store *st)
{
    return st ? st->ops->txn_lost(st) : 0;
}

int store_is_dead(const store *st)
{
    return st ? st->ops->is_dead(st) : 0;
}

void store_keep_small(store *st)
{
    if (st && st->ops->keep_small)
        st->ops->keep_small(st);
}

int store_single_writer(const store *st)
{
    return st ? st->ops->single_writer : 0;
}

store_status store_begin(store *st)
{
    return st->ops->begin(st);
}

store_status store_commit(store *st)
{
    uint64_t start = metrics_now_us();
    store_status rc = st->ops->commit(st);
    metrics_since(M_STORE_COMMIT_SECONDS, 0, start);
    metrics_gauge_set(M_STORE_LOST, 0, store_is_dead(st));
    return rc;
}

store_status store_rollback(store *st)
{
    return st->ops->rollback(st);
}

store_status store_savepoint(store *st)
{
    return st->ops->savepoint(st);
}

store_status store_release(store *st)
{
    return st->ops->release(st);
}

store_status store_rollback_to(store *st)
{
    return st->ops->rollback_to(st);
}

store_status store_user_create(store *st, const char *name, const char *pwhash, int64_t now_ms,
                               uint64_t *id_out)
{
    if (!store_text_ok(st, name, STORE_NAME_MAX * 4, "name") ||
        !store_text_ok(st, pwhash, STORE_HASH_MAX, "password hash"))
        return STORE_ERROR;
    return st->ops->user_create(st, name, pwhash, now_ms, id_out);
}

store_status store_user_by_id(store *st, uint64_t id, store_user *out)
{
    return st->ops->user_by_id(st, id, out);
}

store_status store_user_by_name(store *st, const char *name, store_user *out)
{
    if (!name)
        return STORE_NOT_FOUND;
    return st->ops->user_by_name(st, name, out);
}

/* ---- sessions: the logic of both backends, over their single statements ---- */

/* now_ms - ms, or INT64_MIN where that would be below it: a huge max idle
 * time from a config file must mean "long", not wrap to "always". */
static int64_t store_ms_before(int64_t now_ms, int64_t ms)
{
    if (ms > 0 && now_ms < INT64_MIN + ms)
        return INT64_MIN;
    return now_ms - ms;
}

/* How old last_used may get before a use writes it again. A refresh is a
 * write on what is otherwise a read: on SQLite it takes the database's one
 * write lock and adds a page to the WAL, on MariaDB a row and index update
 * with its redo and, at commit, a log flush. A client that reconnects every
 * few seconds would turn each resume into one. Skipping the write while
 * last_used is under a minute old costs expiry (days) and the LRU order a
 * minute of precision at most. Against a short max idle time (tests,
 * unusual configs) the slack shrinks to 1/64 of it, so a session in use
 * cannot expire early by more than that. */
static int64_t store_touch_after(int64_t max_idle_ms)
{
    int64_t after = STORE_SESSION_TOUCH_MS;
    if (max_idle_ms > 0 && max_idle_ms / 64 < after)
        after = max_idle_ms / 64;
    return after;
}

store_status store_session_create(store *st, const uint8_t token_hash[32], uint64_t user,
                                  int64_t now_ms, unsigned max_per_user)
{
    int own;
    store_status ret = st->ops->op_begin(st, &own);
    if (ret != STORE_OK)
        return ret;
    ret = st->ops->session_insert(st, token_hash, user, now_ms);
    /* In the same unit: a failed insert leaves the others alone, and no one
     * sees the user with more than the bound. */
    if (ret == STORE_OK && max_per_user > 0)
        ret = st->ops->session_trim(st, user, token_hash, max_per_user - 1);
    return st->ops->op_end(st, own, ret);
}

store_status store_session_user(store *st, const uint8_t token_hash[32], int64_t now_ms,
                                int64_t max_idle_ms, uint64_t *user_out)
{
    uint64_t user = 0;
    int64_t last_used = 0;
    store_status ret = st->ops->session_get(st, token_hash, &user, &last_used);
    if (ret != STORE_OK)
        return ret;
    if (max_idle_ms > 0) {
        int64_t cutoff = store_ms_before(now_ms, max_idle_ms);
        if (last_used < cutoff) {
            /* Only while still idle by the same measure: a handle whose clock
             * is behind ours may have used it just now. */
            uint64_t n;
            ret = st->ops->session_delete(st, token_hash, cutoff, &n);
            return ret == STORE_OK ? STORE_NOT_FOUND : ret;
        }
    }
    if (last_used <= store_ms_before(now_ms, store_touch_after(max_idle_ms))) {
        ret = st->ops->session_touch(st, token_hash, now_ms);
        /* The token is valid whatever the refresh did; a refresh that fails
         * (a busy database) is tried again at the next use. Only a
         * transaction or connection the caller must redo is its business. */
        if (ret != STORE_OK && (store_txn_lost(st) || store_is_dead(st)))
            return ret;
    }
    if (user_out)
        *user_out = user;
    return STORE_OK;
}

store_status store_session_delete(store *st, const uint8_t token_hash[32])
{
    uint64_t n = 0;
    store_status ret = st->ops->session_delete(st, token_hash, INT64_MAX, &n);
    if (ret == STORE_OK && n == 0)
        return STORE_NOT_FOUND;
    return ret;
}

store_status store_session_delete_user(store *st, uint64_t user)
{
    return st->ops->session_delete_user(st, user);
}

store_status store_sessions_expire(store *st, int64_t now_ms, int64_t max_idle_ms,
                                   uint64_t *deleted)
{
    uint64_t n = 0;
    store_status ret = STORE_OK;
    if (max_idle_ms > 0)
        ret = st->ops->sessions_expire(st, store_ms_before(now_ms, max_idle_ms),
                                       STORE_SESSIONS_EXPIRE_MAX, &n);
    if (deleted)
        *deleted = ret == STORE_OK ? n : 0;
    return ret;
}

store_status store_friend_add(store *st, uint64_t a, uint64_t b, int64_t now_ms)
{
    if (a == b) {
        store_err(st, "cannot befriend oneself");
        return STORE_CONFLICT;
    }
    return st->ops->friend_add(st, a, b, now_ms);
}

store_status store_friend_del(store *st, uint64_t a, uint64_t b)
{
    return st->ops->friend_del(st, a, b);
}

store_status store_friend_list(store *st, uint64_t user, store_user_cb cb, void *arg)
{
    return st->ops->friend_list(st, user, cb, arg);
}

/* The counts leave *n alone unless they return STORE_OK. */
store_status store_friend_count(store *st, uint64_t user, uint64_t *n)
{
    return st->ops->count(st, STORE_COUNT_FRIENDS, user, n);
}

store_status store_user_group_count(store *st, uint64_t user, uint64_t *n)
{
    return st->ops->count(st, STORE_COUNT_USER_GROUPS, user, n);
}

store_status store_group_member_count(store *st, uint64_t group, uint64_t *n)
{
    return st->ops->count(st, STORE_COUNT_GROUP_MEMBERS, group, n);
}

store_status store_group_create(store *st, const char *name, const char *desc, uint64_t creator,
                                int64_t now_ms, store_group *out)
{
    if (!desc)
        desc = "";
    if (!store_text_ok(st, name, STORE_NAME_MAX * 4, "group name") ||
        !store_text_ok(st, desc, STORE_DESC_MAX * 4, "group description"))
        return STORE_ERROR;
    return st->ops->group_create(st, name, desc, creator, now_ms, out);
}

store_status store_group_get(store *st, uint64_t group, store_group *out)
{
    return st->ops->group_get(st, group, out);
}

store_status store_group_join(store *st, uint64_t group, uint64_t user, int64_t now_ms)
{
    return st->ops->group_join(st, group, user, now_ms);
}

store_status store_group_quit(store *st, uint64_t group, uint64_t user)
{
    return st->ops->group_quit(st, group, user);
}

store_status store_group_delete(store *st, uint64_t group)
{
    return st->ops->group_delete(st, group);
}

store_status store_group_role(store *st, uint64_t group, uint64_t user, int *role_out)
{
    return st->ops->group_role(st, group, user, role_out);
}

store_status store_group_members(store *st, uint64_t group, store_member_cb cb, void *arg)
{
    return st->ops->group_members(st, group, cb, arg);
}

store_status store_user_groups(store *st, uint64_t user, store_group_cb cb, void *arg)
{
    return st->ops->user_groups(st, user, cb, arg);
}

store_status store_direct_conv(store *st, uint64_t a, uint64_t b, uint64_t *conv_out)
{
    if (a == b) {
        store_err(st, "a direct conversation needs two users");
        return STORE_CONFLICT;
    }
    return st->ops->direct_conv(st, a, b, conv_out);
}

store_status store_conv_members(store *st, uint64_t conv, store_id_cb cb, void *arg)
{
    return st->ops->conv_members(st, conv, cb, arg);
}

store_status store_message_append(store *st, uint64_t conv, uint64_t sender, uint64_t ref,
                                  const char *body, size_t body_len, int64_t ts, store_msg *out)
{
    return st->ops->message_append(st, conv, sender, ref, body, body_len, ts, out);
}

store_status store_message_append_many(store *st, const store_append *reqs, size_t n,
                                       store_append_cb cb, void *arg)
{
    metrics_observe(M_STORE_APPEND_BATCH, 0, n);
    metrics_add(M_MESSAGES_STORED, 0, 0, n);
    uint64_t start = metrics_now_us();
    if (st->ops->message_append_many) {
        store_status rc = st->ops->message_append_many(st, reqs, n, cb, arg);
        metrics_since(M_STORE_APPEND_SECONDS, 0, start);
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        const store_append *r = &reqs[i];
        store_msg m;
        store_status ret = st->ops->message_append(st, r->conv, r->sender, r->ref, r->body,
                                                   r->body_len, r->ts, &m);
        if (store_txn_lost(st) || store_is_dead(st))
            return STORE_ERROR;
        cb(arg, i, ret, ret == STORE_OK ? &m : NULL);
    }
    return STORE_OK;
}

store_status store_message_get(store *st, uint64_t msgid, store_msg *out)
{
    return st->ops->message_get(st, msgid, out);
}

store_status store_message_by_ref(store *st, uint64_t sender, uint64_t ref, store_msg *out)
{
    if (!ref) {
        store_err(st, "no message has reference 0");
        return STORE_NOT_FOUND;
    }
    return st->ops->message_by_ref(st, sender, ref, out);
}

store_status store_message_recall(store *st, uint64_t msgid)
{
    return st->ops->message_recall(st, msgid);
}

store_status store_history(store *st, uint64_t conv, uint64_t before_seq, unsigned limit,
                           store_msg_cb cb, void *arg)
{
    return st->ops->history(st, conv, before_seq, limit, cb, arg);
}

store_status store_pending(store *st, uint64_t user, uint64_t after_msgid, unsigned limit,
                           store_msg_cb cb, void *arg)
{
    return st->ops->pending(st, user, after_msgid, limit, cb, arg);
}

store_status store_ack(store *st, uint64_t user, uint64_t conv, uint64_t seq)
{
    return st->ops->ack(st, user, conv, seq);
}

store_status store_ack_many(store *st, const store_cursor *c, size_t n)
{
    if (st->ops->ack_many)
        return st->ops->ack_many(st, c, n);
    for (size_t i = 0; i < n; i++) {
        store_status ret = st->ops->ack(st, c[i].user, c[i].conv, c[i].seq);
        if (ret != STORE_OK && ret != STORE_NOT_FOUND)
            return ret;
    }
    return STORE_OK;
}

/* ---- administration: the logic of both backends, over their single statements ---- */

typedef struct {
    const char *prefix;
    size_t len;
    store_userrow_cb cb;
    void *arg;
    int stopped;
} store_find;

/* Names with the prefix are one run in name order, from the prefix on: the
 * first name without it ends the run. */
static int store_find_row(void *arg, const store_user *u)
{
    store_find *f = arg;
    if (strncmp(u->name, f->prefix, f->len) != 0) {
        f->stopped = 1;
        return 1;
    }
    return f->cb(f->arg, u);
}

store_status store_users_find(store *st, const char *prefix, const char *after, unsigned limit,
                              store_userrow_cb cb, void *arg)
{
    if (!prefix || !after || limit == 0 || limit > STORE_FIND_MAX ||
        !store_text_ok(st, prefix, STORE_NAME_MAX * 4, "prefix") ||
        !store_text_ok(st, after, STORE_NAME_MAX * 4, "name"))
        return STORE_ERROR;
    store_find f = {.prefix = prefix, .len = strlen(prefix), .cb = cb, .arg = arg};
    return st->ops->users_find(st, prefix, after, limit, store_find_row, &f);
}

store_status store_user_sessions(store *st, uint64_t user, store_session_cb cb, void *arg)
{
    return st->ops->user_sessions(st, user, STORE_SESSIONS_LIST_MAX, cb, arg);
}

store_status store_user_session_count(store *st, uint64_t user, uint64_t *n)
{
    return st->ops->count(st, STORE_COUNT_SESSIONS, user, n);
}

/* The row must exist: an UPDATE's count of changed rows cannot tell (on
 * MariaDB it counts only rows whose values changed). */
static store_status store_user_exists(store *st, uint64_t user)
{
    store_user u;
    return st->ops->user_by_id(st, user, &u);
}

store_status store_user_set_banned(store *st, uint64_t user, int banned)
{
    int own;
    store_status ret = st->ops->op_begin(st, &own);
    if (ret != STORE_OK)
        return ret;
    ret = store_user_exists(st, user);
    if (ret == STORE_OK)
        ret = st->ops->user_set_banned(st, user, banned ? 1 : 0);
    if (ret == STORE_OK && banned)
        ret = st->ops->session_delete_user(st, user);
    return st->ops->op_end(st, own, ret);
}

store_status store_user_set_password(store *st, uint64_t user, const char *pwhash)
{
    if (!store_text_ok(st, pwhash, STORE_HASH_MAX, "password hash"))
        return STORE_ERROR;
    int own;
    store_status ret = st->ops->op_begin(st, &own);
    if (ret != STORE_OK)
        return ret;
    ret = store_user_exists(st, user);
    if (ret == STORE_OK)
        ret = st->ops->user_set_pwhash(st, user, pwhash);
    if (ret == STORE_OK)
        ret = st->ops->session_delete_user(st, user);
    return st->ops->op_end(st, own, ret);
}

store_status store_user_erase(store *st, uint64_t user)
{
    char name[64];
    snprintf(name, sizeof(name), STORE_TOMBSTONE_PREFIX "%llu", (unsigned long long)user);
    int own;
    store_status ret = st->ops->op_begin(st, &own);
    if (ret != STORE_OK)
        return ret;
    ret = store_user_exists(st, user);
    if (ret == STORE_OK)
        ret = st->ops->user_tombstone(st, user, name);
    if (ret == STORE_OK)
        ret = st->ops->session_delete_user(st, user);
    if (ret == STORE_OK)
        ret = st->ops->user_unlink(st, user, STORE_UNLINK_FRIENDS);
    if (ret == STORE_OK)
        ret = st->ops->user_unlink(st, user, STORE_UNLINK_GROUPS);
    if (ret == STORE_OK)
        ret = st->ops->user_unlink(st, user, STORE_UNLINK_BODIES);
    return st->ops->op_end(st, own, ret);
}
