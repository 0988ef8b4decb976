/*
 * user service: accounts and sessions (register, login, resume, logout).
 * Runs on the auth pool: hashing passwords is slow on purpose.
 */
#include <string.h>

#include "common/log.h"
#include "common/utf8.h"
#include "services/limits.h"
#include "services/svc.h"
#include "services/view.h"

static void user_create_account(svc_ctx *ctx)
{
    const Parley__ClientFrame *f = ctx->call->frame;
    if (f->body_case != PARLEY__CLIENT_FRAME__BODY_REG) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "expected a register request");
        return;
    }
    const Parley__Register *r = f->reg;
    if (svc_check_name(ctx, r->name, "name") < 0)
        return;
    if (svc_check_text(ctx, r->password, 0, LIMIT_PASSWORD_MAX, "password") < 0)
        return;
    if (utf8_count(r->password, strlen(r->password)) < LIMIT_PASSWORD_MIN) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "password must have at least %d characters",
                 LIMIT_PASSWORD_MIN);
        return;
    }
    char hash[PWHASH_STR_MAX];
    if (pwhash_hash(r->password, strlen(r->password), ctx->cfg->cost, hash) < 0) {
        svc_fail(ctx, PARLEY__ERROR_CODE__INTERNAL, "cannot hash the password");
        return;
    }
    uint64_t id;
    store_status st = store_user_create(ctx->st, r->name, hash, ctx->now_ms, &id);
    if (st == STORE_CONFLICT) {
        svc_fail(ctx, PARLEY__ERROR_CODE__CONFLICT, "the name '%s' is taken", r->name);
        return;
    }
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "user");
        return;
    }
    Parley__ServerFrame *out = svc_reply(ctx);
    Parley__RegisterOk *ok = arena_alloc(ctx->a, sizeof(*ok));
    parley__register_ok__init(ok);
    ok->user_id = id;
    out->body_case = PARLEY__SERVER_FRAME__BODY_REGISTER_OK;
    out->register_ok = ok;
}

/* Tells the friends of user that it came online or went offline. */
static void user_push_presence(svc_ctx *ctx, uint64_t user, int online)
{
    view_ids ids;
    view_ids_init(&ids, ctx->a);
    if (store_friend_list(ctx->st, user, view_ids_add_user, &ids) != STORE_OK)
        return;
    Parley__ServerFrame f = PARLEY__SERVER_FRAME__INIT;
    Parley__PresenceEvent ev = PARLEY__PRESENCE_EVENT__INIT;
    ev.user_id = user;
    ev.online = online;
    f.body_case = PARLEY__SERVER_FRAME__BODY_PRESENCE;
    f.presence = &ev;
    svc_push(ctx, ids.v, ids.n, &f);
}

/* The user's sessions, not counting the one being opened or closed: the
 * calling gateway's own count comes with the call, since its presence
 * updates reach the bus asynchronously. -1 if unknown. */
static long user_sessions_elsewhere(svc_ctx *ctx, uint64_t user)
{
    const Parley__Caller *c = ctx->call->caller;
    long others = bus_presence_count(ctx->bus, user, c->gateway_id);
    return others < 0 ? -1 : others + (long)c->local_sessions;
}

typedef struct {
    svc_ctx *ctx;
    Parley__Unread **v;
    size_t n;
} user_unread;

static int user_unread_row(void *arg, const store_unread *u)
{
    user_unread *l = arg;
    Parley__Unread *pu = arena_alloc(l->ctx->a, sizeof(*pu));
    parley__unread__init(pu);
    pu->conv = u->conv;
    pu->peer = u->peer;
    pu->group = u->group;
    pu->count = u->count > UINT32_MAX ? UINT32_MAX : (uint32_t)u->count;
    pu->last_read_seq = u->read_seq;
    pu->last_seq = u->last_seq;
    l->v[l->n++] = pu;
    /* Names after the walk: no store call inside its callback. */
    return 0;
}

/* Fills the reply of a successful login or resume. */
static void user_login_reply(svc_ctx *ctx, const store_user *u, const char *token)
{
    Parley__ServerFrame *out = svc_reply(ctx);
    Parley__LoginOk *ok = arena_alloc(ctx->a, sizeof(*ok));
    parley__login_ok__init(ok);
    ok->user = view_user(ctx, u->id, u->name, 1);
    ok->token = arena_strdup(ctx->a, token);
    if (view_friends(ctx, u->id, &ok->friends, &ok->n_friends) < 0 ||
        view_groups(ctx, u->id, &ok->groups, &ok->n_groups) < 0)
        return;
    /* Unread counts are a convenience: a login does not fail for them. */
    user_unread ur = {.ctx = ctx};
    ur.v = arena_alloc(ctx->a, STORE_UNREAD_MAX * sizeof(*ur.v));
    store_status st = store_unread_list(ctx->st, u->id, STORE_UNREAD_MAX, user_unread_row, &ur);
    if (st == STORE_OK) {
        for (size_t i = 0; i < ur.n; i++) {
            const char *name = ur.v[i]->group ? view_group_name(ctx, ur.v[i]->group)
                                              : view_user_name(ctx, ur.v[i]->peer);
            if (name)
                ur.v[i]->name = (char *)name;
        }
        ok->unread = ur.v;
        ok->n_unread = ur.n;
    } else {
        log_warn("login: no unread counts for user %llu: %s", (unsigned long long)u->id,
                 store_errmsg(ctx->st));
    }
    out->body_case = PARLEY__SERVER_FRAME__BODY_LOGIN_OK;
    out->login_ok = ok;
    /* The gateway counts this session only after the reply: nobody anywhere
     * (the calling gateway included, whose own count the call cannot carry:
     * it learns whose login this is from the reply) means the user was
     * offline until now. A second session does not repeat "online". */
    if (bus_presence_count(ctx->bus, u->id, 0) == 0)
        user_push_presence(ctx, u->id, 1);
}

/* Tokens nobody used for the TTL are deleted when presented, and the rest
 * here: at most once a minute per auth worker, a bounded sweep (its own
 * short statement, so it never holds the store for long). */
static void user_expire_sessions(svc_ctx *ctx)
{
    static _Thread_local int64_t last_ms;
    uint64_t deleted = 0;
    if (!ctx->cfg->session_ttl_ms || ctx->now_ms - last_ms < 60000)
        return;
    last_ms = ctx->now_ms;
    if (store_sessions_expire(ctx->st, ctx->now_ms, ctx->cfg->session_ttl_ms, &deleted) ==
            STORE_OK &&
        deleted)
        log_info("sessions: %llu expired session tokens deleted", (unsigned long long)deleted);
}

static void user_login(svc_ctx *ctx)
{
    const Parley__ClientFrame *f = ctx->call->frame;
    if (f->body_case != PARLEY__CLIENT_FRAME__BODY_LOGIN) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "expected a login request");
        return;
    }
    const Parley__Login *r = f->login;
    if (svc_check_text(ctx, r->name, 0, LIMIT_NAME_CHARS, "name") < 0 ||
        svc_check_text(ctx, r->password, 0, LIMIT_PASSWORD_MAX, "password") < 0)
        return;
    store_user u;
    store_status st;
    if (r->user_id)
        st = store_user_by_id(ctx->st, r->user_id, &u);
    else if (r->name[0])
        st = store_user_by_name(ctx->st, r->name, &u);
    else {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "login needs a user id or a name");
        return;
    }
    if (st == STORE_NOT_FOUND ||
        (st == STORE_OK && pwhash_verify(u.pwhash, r->password, strlen(r->password)) < 0)) {
        /* One answer for both: do not tell which names exist. */
        svc_fail(ctx, PARLEY__ERROR_CODE__UNAUTHENTICATED, "wrong user or password");
        return;
    }
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "user");
        return;
    }
    /* After the password: only its holder learns of the suspension. */
    if (u.banned) {
        svc_fail(ctx, PARLEY__ERROR_CODE__FORBIDDEN, "account suspended");
        return;
    }
    user_expire_sessions(ctx);
    char token[PWHASH_TOKEN_LEN + 1];
    uint8_t hash[32];
    pwhash_token_new(token, hash);
    st = store_session_create(ctx->st, hash, u.id, ctx->now_ms, ctx->cfg->sessions_per_user);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "session");
        return;
    }
    user_login_reply(ctx, &u, token);
}

static void user_resume(svc_ctx *ctx)
{
    const Parley__ClientFrame *f = ctx->call->frame;
    if (f->body_case != PARLEY__CLIENT_FRAME__BODY_RESUME) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "expected a resume request");
        return;
    }
    const char *token = f->resume->token;
    size_t len = strlen(token);
    uint8_t hash[32];
    uint64_t uid;
    store_user u;
    /* Only a token of the length handed out can match: anything else is
     * refused before it is hashed or looked up. */
    if (len != PWHASH_TOKEN_LEN) {
        svc_fail(ctx, PARLEY__ERROR_CODE__UNAUTHENTICATED, "invalid session token");
        return;
    }
    pwhash_token_hash(token, len, hash);
    store_status st =
        store_session_user(ctx->st, hash, ctx->now_ms, ctx->cfg->session_ttl_ms, &uid);
    if (st == STORE_OK)
        st = store_user_by_id(ctx->st, uid, &u);
    if (st == STORE_NOT_FOUND) {
        svc_fail(ctx, PARLEY__ERROR_CODE__UNAUTHENTICATED, "unknown or expired session token");
        return;
    }
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "session");
        return;
    }
    /* A ban deletes the tokens too: this is a resume that raced it. */
    if (u.banned) {
        svc_fail(ctx, PARLEY__ERROR_CODE__FORBIDDEN, "account suspended");
        return;
    }
    user_login_reply(ctx, &u, token);
}

/* Called by the gateway when a session ends (logout or dropped connection),
 * after it has stopped counting the session. */
static void user_logout(svc_ctx *ctx)
{
    const Parley__ClientFrame *f = ctx->call->frame;
    uint64_t user = ctx->call->caller->user_id;
    if (svc_require_user(ctx) < 0)
        return;
    /* An explicit logout ends the token too; a dropped link keeps it for
     * the client to resume. */
    if (f->body_case == PARLEY__CLIENT_FRAME__BODY_LOGOUT && f->logout->token[0]) {
        uint8_t hash[32];
        pwhash_token_hash(f->logout->token, strlen(f->logout->token), hash);
        store_session_delete(ctx->st, hash);
    }
    /* From every device: every token goes, and every other session is
     * told why and closed (the gateways end the sessions a kick reaches). */
    if (f->body_case == PARLEY__CLIENT_FRAME__BODY_LOGOUT && f->logout->all) {
        store_status st = store_session_delete_user(ctx->st, user);
        if (st != STORE_OK) {
            svc_fail_store(ctx, st, "session");
            return;
        }
        Parley__ServerFrame bf = PARLEY__SERVER_FRAME__INIT;
        Parley__Bye bye = PARLEY__BYE__INIT;
        bye.reason = "logged out on every device";
        bf.body_case = PARLEY__SERVER_FRAME__BODY_BYE;
        bf.bye = &bye;
        svc_push_kick(ctx, &user, 1, &bf);
        log_info("audit event=logout_all user=%llu addr=%s", (unsigned long long)user,
                 ctx->call->caller->addr[0] ? ctx->call->caller->addr : "?");
    }
    if (user_sessions_elsewhere(ctx, user) == 0)
        user_push_presence(ctx, user, 0);
    Parley__ServerFrame *out = svc_reply(ctx);
    Parley__Done *done = arena_alloc(ctx->a, sizeof(*done));
    parley__done__init(done);
    out->body_case = PARLEY__SERVER_FRAME__BODY_DONE;
    out->done = done;
}

static const svc_method_fn user_methods[] = {
    user_create_account,
    user_login,
    user_resume,
    user_logout,
};

const svc_def svc_user = {
    .desc = &parley__user_service__descriptor,
    .methods = user_methods,
    .slow = 1,
    /* Register, Login, Resume: nobody to answer once the client has gone.
     * Logout always runs: it tells the friends the user went offline. */
    .droppable = (1u << 0) | (1u << 1) | (1u << 2),
};
