/*
 * admin service: what an operator asks of parleyctl (find and show users,
 * list their sessions, kick, ban, unban, delete, reset a password).
 *
 * Never reachable from the client port: served on the admin socket of an
 * embedded parleyd and, in a cluster, on a service node's RPC port to a peer
 * whose certificate says role admin only (rpc/server.c). Runs on the auth
 * pool: a reset password is hashed there, and every write is one store
 * call, atomic on its own. Every change is logged as an audit event.
 */
#include "services/admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/utf8.h"
#include "services/limits.h"

enum {
    ADMIN_FIND_DEFAULT = 50,
    ADMIN_PASSWORD_CHARS = 16, /* a generated password: 16 of 32 symbols, 80 bits */
};

static const Parley__AdminRequest *admin_req(svc_ctx *ctx)
{
    return ctx->call->admin;
}

static Parley__AdminReply *admin_reply(svc_ctx *ctx)
{
    if (!ctx->res->admin) {
        ctx->res->admin = arena_alloc(ctx->a, sizeof(*ctx->res->admin));
        parley__admin_reply__init(ctx->res->admin);
    }
    Parley__ServerFrame *out = svc_reply(ctx);
    if (!out->error && out->body_case == PARLEY__SERVER_FRAME__BODY__NOT_SET) {
        Parley__Done *done = arena_alloc(ctx->a, sizeof(*done));
        parley__done__init(done);
        out->body_case = PARLEY__SERVER_FRAME__BODY_DONE;
        out->done = done;
    }
    return ctx->res->admin;
}

/* The user the request names: an id in decimal, else a name. 0, or -1 with
 * the request failed. */
static int admin_user(svc_ctx *ctx, store_user *u)
{
    const Parley__AdminRequest *r = admin_req(ctx);
    if (!r || !r->user[0]) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "name a user (a name or an id)");
        return -1;
    }
    size_t len = strlen(r->user);
    if (svc_check_text(ctx, r->user, 1, 64, "user") < 0)
        return -1;
    int digits = len <= 20;
    for (size_t i = 0; i < len && digits; i++)
        digits = r->user[i] >= '0' && r->user[i] <= '9';
    store_status st = digits ? store_user_by_id(ctx->st, strtoull(r->user, NULL, 10), u)
                             : store_user_by_name(ctx->st, r->user, u);
    if (st == STORE_NOT_FOUND) {
        svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND, "no user '%s'", r->user);
        return -1;
    }
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "user");
        return -1;
    }
    return 0;
}

static int admin_is_deleted(const store_user *u)
{
    return strncmp(u->name, STORE_TOMBSTONE_PREFIX, strlen(STORE_TOMBSTONE_PREFIX)) == 0;
}

static Parley__AdminUser *admin_user_view(svc_ctx *ctx, const store_user *u)
{
    Parley__AdminUser *v = arena_alloc(ctx->a, sizeof(*v));
    parley__admin_user__init(v);
    v->id = u->id;
    v->name = arena_strdup(ctx->a, u->name);
    v->created_ms = u->created_ms;
    v->banned = u->banned;
    v->deleted = admin_is_deleted(u);
    v->online = -1;
    return v;
}

/* Ends every session of user now, wherever it is, with a bye saying why. */
static void admin_kick(svc_ctx *ctx, uint64_t user, const char *why)
{
    Parley__ServerFrame bf = PARLEY__SERVER_FRAME__INIT;
    Parley__Bye bye = PARLEY__BYE__INIT;
    bye.reason = (char *)why;
    bf.body_case = PARLEY__SERVER_FRAME__BODY_BYE;
    bf.bye = &bye;
    svc_push_kick(ctx, &user, 1, &bf);
}

static void admin_audit(svc_ctx *ctx, const char *event, const store_user *u)
{
    log_info("audit event=admin_%s user=%llu name=%s", event, (unsigned long long)u->id, u->name);
}

typedef struct {
    svc_ctx *ctx;
    Parley__AdminUser **v;
    size_t n, cap;
} admin_found;

static int admin_find_row(void *arg, const store_user *u)
{
    admin_found *f = arg;
    if (f->n == f->cap)
        return 1;
    f->v[f->n++] = admin_user_view(f->ctx, u);
    return 0;
}

static void admin_users_find(svc_ctx *ctx)
{
    const Parley__AdminRequest *r = admin_req(ctx);
    if (!r) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "expected an admin request");
        return;
    }
    if (svc_check_text(ctx, r->prefix, 0, LIMIT_NAME_CHARS + 16, "prefix") < 0 ||
        svc_check_text(ctx, r->after, 0, LIMIT_NAME_CHARS + 16, "after") < 0)
        return;
    unsigned limit = r->limit ? r->limit : ADMIN_FIND_DEFAULT;
    if (limit > STORE_FIND_MAX - 1)
        limit = STORE_FIND_MAX - 1;
    /* One more than the page: whether another follows. */
    admin_found f = {.ctx = ctx, .cap = limit + 1};
    f.v = arena_alloc(ctx->a, f.cap * sizeof(*f.v));
    store_status st = store_users_find(ctx->st, r->prefix, r->after, limit + 1, admin_find_row, &f);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "user");
        return;
    }
    Parley__AdminReply *out = admin_reply(ctx);
    out->more = f.n > limit;
    out->n_users = f.n > limit ? limit : f.n;
    out->users = f.v;
}

static void admin_users_show(svc_ctx *ctx)
{
    store_user u;
    if (admin_user(ctx, &u) < 0)
        return;
    Parley__AdminUser *v = admin_user_view(ctx, &u);
    uint64_t sessions = 0, friends = 0, groups = 0;
    store_status st = store_user_session_count(ctx->st, u.id, &sessions);
    if (st == STORE_OK)
        st = store_friend_count(ctx->st, u.id, &friends);
    if (st == STORE_OK)
        st = store_user_group_count(ctx->st, u.id, &groups);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "user");
        return;
    }
    v->sessions = (uint32_t)sessions;
    v->friends = (uint32_t)friends;
    v->groups = (uint32_t)groups;
    long online = bus_presence_count(ctx->bus, u.id, 0);
    v->online = online < 0 ? -1 : (int32_t)online;
    Parley__AdminReply *out = admin_reply(ctx);
    out->users = arena_alloc(ctx->a, sizeof(*out->users));
    out->users[0] = v;
    out->n_users = 1;
}

typedef struct {
    svc_ctx *ctx;
    Parley__AdminSession **v;
    size_t n;
} admin_sessions_acc;

static int admin_session_row(void *arg, int64_t created_ms, int64_t last_used_ms)
{
    admin_sessions_acc *acc = arg;
    if (acc->n == STORE_SESSIONS_LIST_MAX)
        return 1;
    Parley__AdminSession *s = arena_alloc(acc->ctx->a, sizeof(*s));
    parley__admin_session__init(s);
    s->created_ms = created_ms;
    s->last_used_ms = last_used_ms;
    acc->v[acc->n++] = s;
    return 0;
}

static void admin_sessions(svc_ctx *ctx)
{
    store_user u;
    if (admin_user(ctx, &u) < 0)
        return;
    admin_sessions_acc acc = {.ctx = ctx};
    acc.v = arena_alloc(ctx->a, STORE_SESSIONS_LIST_MAX * sizeof(*acc.v));
    store_status st = store_user_sessions(ctx->st, u.id, admin_session_row, &acc);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "session");
        return;
    }
    Parley__AdminReply *out = admin_reply(ctx);
    out->sessions = acc.v;
    out->n_sessions = acc.n;
    out->users = arena_alloc(ctx->a, sizeof(*out->users));
    out->users[0] = admin_user_view(ctx, &u);
    out->n_users = 1;
}

static void admin_kick_user(svc_ctx *ctx)
{
    store_user u;
    if (admin_user(ctx, &u) < 0)
        return;
    store_status st = store_session_delete_user(ctx->st, u.id);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "session");
        return;
    }
    admin_kick(ctx, u.id, "your sessions were ended by an administrator");
    admin_audit(ctx, "kick", &u);
    admin_reply(ctx);
}

static void admin_set_ban(svc_ctx *ctx, int banned)
{
    store_user u;
    if (admin_user(ctx, &u) < 0)
        return;
    if (!banned && admin_is_deleted(&u)) {
        svc_fail(ctx, PARLEY__ERROR_CODE__CONFLICT, "user %llu is deleted",
                 (unsigned long long)u.id);
        return;
    }
    store_status st = store_user_set_banned(ctx->st, u.id, banned);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "user");
        return;
    }
    if (banned)
        admin_kick(ctx, u.id, "account suspended");
    admin_audit(ctx, banned ? "ban" : "unban", &u);
    u.banned = banned;
    Parley__AdminReply *out = admin_reply(ctx);
    out->users = arena_alloc(ctx->a, sizeof(*out->users));
    out->users[0] = admin_user_view(ctx, &u);
    out->n_users = 1;
}

static void admin_ban(svc_ctx *ctx)
{
    admin_set_ban(ctx, 1);
}

static void admin_unban(svc_ctx *ctx)
{
    admin_set_ban(ctx, 0);
}

static void admin_delete_user(svc_ctx *ctx)
{
    store_user u;
    if (admin_user(ctx, &u) < 0)
        return;
    store_status st = store_user_erase(ctx->st, u.id);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "user");
        return;
    }
    admin_kick(ctx, u.id, "account deleted");
    admin_audit(ctx, "delete", &u);
    if (store_user_by_id(ctx->st, u.id, &u) != STORE_OK) {
        svc_fail(ctx, PARLEY__ERROR_CODE__INTERNAL, "user %llu vanished", (unsigned long long)u.id);
        return;
    }
    Parley__AdminReply *out = admin_reply(ctx);
    out->users = arena_alloc(ctx->a, sizeof(*out->users));
    out->users[0] = admin_user_view(ctx, &u);
    out->n_users = 1;
}

/* ADMIN_PASSWORD_CHARS symbols from an alphabet without look-alikes. */
static void admin_make_password(char *out)
{
    static const char alphabet[] = "abcdefghijkmnpqrstuvwxyz23456789"; /* 32 */
    uint8_t raw[ADMIN_PASSWORD_CHARS];
    pwhash_random(raw, sizeof(raw));
    for (size_t i = 0; i < sizeof(raw); i++)
        out[i] = alphabet[raw[i] & 31];
    out[ADMIN_PASSWORD_CHARS] = '\0';
}

static void admin_reset_password(svc_ctx *ctx)
{
    store_user u;
    if (admin_user(ctx, &u) < 0)
        return;
    if (admin_is_deleted(&u)) {
        svc_fail(ctx, PARLEY__ERROR_CODE__CONFLICT, "user %llu is deleted",
                 (unsigned long long)u.id);
        return;
    }
    const Parley__AdminRequest *r = admin_req(ctx);
    char made[ADMIN_PASSWORD_CHARS + 1];
    const char *pw = r->password;
    if (pw[0]) {
        if (svc_check_text(ctx, pw, LIMIT_PASSWORD_MIN, LIMIT_PASSWORD_MAX, "password") < 0)
            return;
    } else {
        admin_make_password(made);
        pw = made;
    }
    char hash[PWHASH_STR_MAX];
    if (pwhash_hash(pw, strlen(pw), ctx->cfg->cost, hash) < 0) {
        svc_fail(ctx, PARLEY__ERROR_CODE__INTERNAL, "cannot hash the password");
        return;
    }
    store_status st = store_user_set_password(ctx->st, u.id, hash);
    explicit_bzero(hash, sizeof(hash));
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "user");
        return;
    }
    admin_kick(ctx, u.id, "your password was reset by an administrator: log in again");
    admin_audit(ctx, "reset_password", &u);
    Parley__AdminReply *out = admin_reply(ctx);
    if (pw == made)
        out->password = arena_strdup(ctx->a, made);
    explicit_bzero(made, sizeof(made));
}

/* Asks the gateway named in the request, over the bus (a BUS_DRAIN push on
 * every live gateway's channel, MAC'd like any), to drain. */
static void admin_drain(svc_ctx *ctx)
{
    const Parley__AdminRequest *r = admin_req(ctx);
    if (!r || !r->node[0] || svc_check_text(ctx, r->node, 1, 64, "node") < 0) {
        if (!ctx->failed)
            svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "name the gateway to drain");
        return;
    }
    long n = bus_drain(ctx->bus, r->node);
    if (n < 0) {
        svc_fail(ctx, PARLEY__ERROR_CODE__UNSUPPORTED,
                 "drain needs a cluster: an embedded parleyd is its only gateway (stop it with "
                 "SIGTERM)");
        return;
    }
    if (n == 0) {
        svc_fail(ctx, PARLEY__ERROR_CODE__UNAVAILABLE, "no live gateway reached over the bus");
        return;
    }
    log_info("audit event=admin_drain gateway=%s (asked %ld gateways)", r->node, n);
    admin_reply(ctx);
}

static const svc_method_fn admin_methods[] = {
    admin_users_find, admin_users_show,  admin_sessions,       admin_kick_user, admin_ban,
    admin_unban,      admin_delete_user, admin_reset_password, admin_drain,
};

const svc_def svc_admin = {
    .desc = &parley__admin_service__descriptor,
    .methods = admin_methods,
    /* The auth pool: a reset password is hashed, and the pool runs each
     * request outside a batch transaction (each write is one unit). */
    .slow = 1,
};
