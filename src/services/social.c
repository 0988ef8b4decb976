/*
 * social service: friends and groups.
 */
#include <string.h>

#include "services/limits.h"
#include "services/svc.h"
#include "services/view.h"

/* Checks that the request carries the expected body and a logged-in caller. */
static int social_begin(svc_ctx *ctx, Parley__ClientFrame__BodyCase body)
{
    if (svc_require_user(ctx) < 0)
        return -1;
    if (ctx->call->frame->body_case != body) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "request does not match the method");
        return -1;
    }
    return 0;
}

/* Stores a social event of kind in conv (see view.h), sent by the caller,
 * and pushes it to to[0..n) after the commit, as a send is. For a group,
 * group is its id. -1 with the request failed. */
static int social_event(svc_ctx *ctx, uint64_t conv, int kind, uint64_t peer, uint64_t group,
                        const uint64_t *to, size_t n)
{
    store_msg m;
    store_status st = view_event_append(ctx, conv, kind, &m);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "event");
        return -1;
    }
    Parley__ServerFrame f = PARLEY__SERVER_FRAME__INIT;
    f.body_case = PARLEY__SERVER_FRAME__BODY_MESSAGE;
    f.message = view_message(ctx, &m);
    f.message->to = peer;
    f.message->group = group;
    view_message_names(ctx, f.message);
    svc_push(ctx, to, n, &f);
    return 0;
}

/* The direct conversation of the caller and other, with an event of kind
 * pushed to other. */
static int social_pair_event(svc_ctx *ctx, uint64_t other, int kind)
{
    uint64_t conv;
    store_status st = store_direct_conv(ctx->st, ctx->call->caller->user_id, other, &conv);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "conversation");
        return -1;
    }
    return social_event(ctx, conv, kind, other, 0, &other, 1);
}

/* An event of kind in group g, pushed to its members but the caller. */
static int social_group_event(svc_ctx *ctx, const store_group *g, int kind)
{
    view_ids all, others;
    view_ids_init(&all, ctx->a);
    view_ids_init(&others, ctx->a);
    store_status st = store_conv_members(ctx->st, g->conv, view_ids_add, &all);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "group");
        return -1;
    }
    for (size_t i = 0; i < all.n; i++)
        if (all.v[i] != ctx->call->caller->user_id)
            view_ids_push(&others, all.v[i]);
    return social_event(ctx, g->conv, kind, 0, g->id, others.v, others.n);
}

static void social_done(svc_ctx *ctx)
{
    Parley__ServerFrame *out = svc_reply(ctx);
    Parley__Done *d = arena_alloc(ctx->a, sizeof(*d));
    parley__done__init(d);
    out->body_case = PARLEY__SERVER_FRAME__BODY_DONE;
    out->done = d;
}

/* Fails the request if id's count (of count_fn: friends, groups) has
 * reached max (0: no cap). -1 if it failed. */
static int social_cap(svc_ctx *ctx, store_status (*count_fn)(store *, uint64_t, uint64_t *),
                      uint64_t id, unsigned max, const char *what)
{
    uint64_t count = 0;
    if (!max)
        return 0;
    store_status st = count_fn(ctx->st, id, &count);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, what);
        return -1;
    }
    if (count >= max) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "at most %u %s", max, what);
        return -1;
    }
    return 0;
}

static void social_friend_add(svc_ctx *ctx)
{
    if (social_begin(ctx, PARLEY__CLIENT_FRAME__BODY_FRIEND_ADD) < 0)
        return;
    uint64_t me = ctx->call->caller->user_id, other = ctx->call->frame->friend_add->user_id;
    if (other == me) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "you cannot add yourself as a friend");
        return;
    }
    /* Both lists grow: a full list on either side refuses. */
    unsigned max = ctx->cfg->max_friends;
    if (social_cap(ctx, store_friend_count, me, max, "friends per user") < 0 ||
        social_cap(ctx, store_friend_count, other, max, "friends per user") < 0)
        return;
    store_status st = store_friend_add(ctx->st, me, other, ctx->now_ms);
    if (st == STORE_NOT_FOUND)
        svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND, "user %llu not found",
                 (unsigned long long)other);
    else if (st == STORE_CONFLICT)
        svc_fail(ctx, PARLEY__ERROR_CODE__CONFLICT, "user %llu is already your friend",
                 (unsigned long long)other);
    else if (st != STORE_OK)
        svc_fail_store(ctx, st, "friend");
    else if (social_pair_event(ctx, other, PARLEY__MESSAGE_KIND__FRIEND_ADDED) == 0)
        social_done(ctx);
}

static void social_friend_del(svc_ctx *ctx)
{
    if (social_begin(ctx, PARLEY__CLIENT_FRAME__BODY_FRIEND_DEL) < 0)
        return;
    uint64_t me = ctx->call->caller->user_id, other = ctx->call->frame->friend_del->user_id;
    store_status st = store_friend_del(ctx->st, me, other);
    if (st == STORE_NOT_FOUND)
        svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND, "user %llu is not your friend",
                 (unsigned long long)other);
    else if (st != STORE_OK)
        svc_fail_store(ctx, st, "friend");
    else if (social_pair_event(ctx, other, PARLEY__MESSAGE_KIND__FRIEND_REMOVED) == 0)
        social_done(ctx);
}

static void social_friend_list(svc_ctx *ctx)
{
    if (social_begin(ctx, PARLEY__CLIENT_FRAME__BODY_FRIEND_LIST) < 0)
        return;
    uint64_t me = ctx->call->caller->user_id;
    Parley__FriendListOk *ok = arena_alloc(ctx->a, sizeof(*ok));
    parley__friend_list_ok__init(ok);
    if (view_friends(ctx, me, &ok->friends, &ok->n_friends) < 0 ||
        view_groups(ctx, me, &ok->groups, &ok->n_groups) < 0)
        return;
    Parley__ServerFrame *out = svc_reply(ctx);
    out->body_case = PARLEY__SERVER_FRAME__BODY_FRIEND_LIST_OK;
    out->friend_list_ok = ok;
}

static void social_group_create(svc_ctx *ctx)
{
    if (social_begin(ctx, PARLEY__CLIENT_FRAME__BODY_GROUP_CREATE) < 0)
        return;
    const Parley__GroupCreate *r = ctx->call->frame->group_create;
    if (svc_check_name(ctx, r->name, "group name") < 0 ||
        svc_check_text(ctx, r->desc, 0, LIMIT_DESC_CHARS, "group description") < 0)
        return;
    if (social_cap(ctx, store_user_group_count, ctx->call->caller->user_id, ctx->cfg->max_groups,
                   "groups per user") < 0)
        return;
    store_group g;
    store_status st =
        store_group_create(ctx->st, r->name, r->desc, ctx->call->caller->user_id, ctx->now_ms, &g);
    if (st == STORE_CONFLICT) {
        svc_fail(ctx, PARLEY__ERROR_CODE__CONFLICT, "the group name '%s' is taken", r->name);
        return;
    }
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "group");
        return;
    }
    Parley__GroupCreateOk *ok = arena_alloc(ctx->a, sizeof(*ok));
    parley__group_create_ok__init(ok);
    ok->group_id = g.id;
    Parley__ServerFrame *out = svc_reply(ctx);
    out->body_case = PARLEY__SERVER_FRAME__BODY_GROUP_CREATE_OK;
    out->group_create_ok = ok;
}

/* The event of the caller's join, once the membership is stored. */
static int social_joined(svc_ctx *ctx, uint64_t gid)
{
    store_group g;
    store_status st = store_group_get(ctx->st, gid, &g);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "group");
        return -1;
    }
    return social_group_event(ctx, &g, PARLEY__MESSAGE_KIND__MEMBER_JOINED);
}

static void social_group_join(svc_ctx *ctx)
{
    if (social_begin(ctx, PARLEY__CLIENT_FRAME__BODY_GROUP_JOIN) < 0)
        return;
    uint64_t gid = ctx->call->frame->group_join->group_id, n = 0;
    if (social_cap(ctx, store_user_group_count, ctx->call->caller->user_id, ctx->cfg->max_groups,
                   "groups per user") < 0)
        return;
    store_status st = store_group_member_count(ctx->st, gid, &n);
    if (st == STORE_OK && ctx->cfg->max_members && n >= ctx->cfg->max_members) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "at most %u members per group",
                 ctx->cfg->max_members);
        return;
    }
    st = store_group_join(ctx->st, gid, ctx->call->caller->user_id, ctx->now_ms);
    if (st == STORE_NOT_FOUND)
        svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND, "group %llu not found",
                 (unsigned long long)gid);
    else if (st == STORE_CONFLICT)
        svc_fail(ctx, PARLEY__ERROR_CODE__CONFLICT, "you are already a member of group %llu",
                 (unsigned long long)gid);
    else if (st != STORE_OK)
        svc_fail_store(ctx, st, "group");
    else if (social_joined(ctx, gid) == 0)
        social_done(ctx);
}

/* The caller's role in gid; fails the request (NOT_FOUND / FORBIDDEN) and
 * returns -1 if there is no such group or the caller is not a member. */
static int social_role(svc_ctx *ctx, uint64_t gid, int *role)
{
    store_group g;
    store_status st = store_group_get(ctx->st, gid, &g);
    if (st == STORE_OK)
        st = store_group_role(ctx->st, gid, ctx->call->caller->user_id, role);
    else if (st == STORE_NOT_FOUND) {
        svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND, "group %llu not found",
                 (unsigned long long)gid);
        return -1;
    }
    if (st == STORE_NOT_FOUND) {
        svc_fail(ctx, PARLEY__ERROR_CODE__FORBIDDEN, "you are not a member of group %llu",
                 (unsigned long long)gid);
        return -1;
    }
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "group");
        return -1;
    }
    return 0;
}

static void social_group_quit(svc_ctx *ctx)
{
    if (social_begin(ctx, PARLEY__CLIENT_FRAME__BODY_GROUP_QUIT) < 0)
        return;
    uint64_t gid = ctx->call->frame->group_quit->group_id;
    int role;
    if (social_role(ctx, gid, &role) < 0)
        return;
    if (role == STORE_ROLE_CREATOR) {
        svc_fail(ctx, PARLEY__ERROR_CODE__FORBIDDEN,
                 "the creator cannot quit group %llu; delete it instead", (unsigned long long)gid);
        return;
    }
    store_group g;
    store_status st = store_group_quit(ctx->st, gid, ctx->call->caller->user_id);
    if (st == STORE_OK)
        st = store_group_get(ctx->st, gid, &g);
    if (st != STORE_OK)
        svc_fail_store(ctx, st, "membership");
    else if (social_group_event(ctx, &g, PARLEY__MESSAGE_KIND__MEMBER_LEFT) == 0)
        social_done(ctx);
}

static void social_group_delete(svc_ctx *ctx)
{
    if (social_begin(ctx, PARLEY__CLIENT_FRAME__BODY_GROUP_DELETE) < 0)
        return;
    uint64_t me = ctx->call->caller->user_id;
    uint64_t gid = ctx->call->frame->group_delete->group_id;
    store_group g;
    store_status st = store_group_get(ctx->st, gid, &g);
    if (st == STORE_NOT_FOUND) {
        svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND, "group %llu not found",
                 (unsigned long long)gid);
        return;
    }
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "group");
        return;
    }
    if (g.creator != me) {
        svc_fail(ctx, PARLEY__ERROR_CODE__FORBIDDEN, "only the creator can delete group %llu",
                 (unsigned long long)gid);
        return;
    }
    view_ids members;
    view_ids_init(&members, ctx->a);
    st = store_conv_members(ctx->st, g.conv, view_ids_add, &members);
    if (st == STORE_OK)
        st = store_group_delete(ctx->st, gid);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "group");
        return;
    }
    view_ids others;
    view_ids_init(&others, ctx->a);
    for (size_t i = 0; i < members.n; i++)
        if (members.v[i] != me)
            view_ids_push(&others, members.v[i]);
    Parley__ServerFrame f = PARLEY__SERVER_FRAME__INIT;
    Parley__GroupDeletedEvent ev = PARLEY__GROUP_DELETED_EVENT__INIT;
    ev.group_id = gid;
    ev.by = me;
    f.body_case = PARLEY__SERVER_FRAME__BODY_GROUP_DELETED;
    f.group_deleted = &ev;
    svc_push(ctx, others.v, others.n, &f);
    social_done(ctx);
}

typedef struct {
    uint64_t id;
    int found;
} social_is_friend;

static int social_find_friend(void *arg, uint64_t id, const char *name)
{
    social_is_friend *f = arg;
    (void)name;
    if (id == f->id)
        f->found = 1;
    return 0;
}

/* A user by id or name. Presence is told for friends only: anyone may ask
 * who a name is, not whether its owner is online. */
static void social_whois(svc_ctx *ctx)
{
    if (social_begin(ctx, PARLEY__CLIENT_FRAME__BODY_WHOIS) < 0)
        return;
    const Parley__Whois *r = ctx->call->frame->whois;
    store_user u;
    store_status st;
    if (r->user_id)
        st = store_user_by_id(ctx->st, r->user_id, &u);
    else if (r->name && r->name[0])
        st = store_user_by_name(ctx->st, r->name, &u);
    else {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "whois needs a user id or a name");
        return;
    }
    if (st == STORE_NOT_FOUND) {
        svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND, "no such user");
        return;
    }
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "user");
        return;
    }
    social_is_friend f = {.id = u.id};
    int online = 0;
    if (u.id != ctx->call->caller->user_id) {
        st = store_friend_list(ctx->st, ctx->call->caller->user_id, social_find_friend, &f);
        if (st != STORE_OK) {
            svc_fail_store(ctx, st, "friends");
            return;
        }
    }
    if (f.found || u.id == ctx->call->caller->user_id)
        online = bus_presence_count(ctx->bus, u.id, 0) > 0;
    Parley__WhoisOk *ok = arena_alloc(ctx->a, sizeof(*ok));
    parley__whois_ok__init(ok);
    ok->user = view_user(ctx, u.id, u.name, online);
    Parley__ServerFrame *out = svc_reply(ctx);
    out->body_case = PARLEY__SERVER_FRAME__BODY_WHOIS_OK;
    out->whois_ok = ok;
}

typedef struct {
    svc_ctx *ctx;
    Parley__User **v;
    size_t n, cap, rows;
} social_found;

static int social_find_row(void *arg, const store_user *u)
{
    social_found *f = arg;
    f->rows++;
    /* A deleted account's tombstone is nobody to find. */
    if (strncmp(u->name, STORE_TOMBSTONE_PREFIX, strlen(STORE_TOMBSTONE_PREFIX)) == 0)
        return 0;
    if (f->n < f->cap)
        f->v[f->n++] = view_user(f->ctx, u->id, u->name, 0);
    return 0;
}

/* Users by name prefix, a page at a time: one range of the name index, as
 * parleyctl's users find. Presence is not told. */
static void social_find(svc_ctx *ctx)
{
    if (social_begin(ctx, PARLEY__CLIENT_FRAME__BODY_FIND) < 0)
        return;
    const Parley__Find *r = ctx->call->frame->find;
    if (svc_check_text(ctx, r->prefix, 1, LIMIT_NAME_CHARS, "prefix") < 0 ||
        svc_check_text(ctx, r->after, 0, LIMIT_NAME_CHARS, "after") < 0)
        return;
    unsigned limit = r->limit ? r->limit : LIMIT_FIND_DEFAULT;
    if (limit > LIMIT_FIND_MAX)
        limit = LIMIT_FIND_MAX;
    /* One more than the page: whether another follows. */
    social_found f = {.ctx = ctx, .cap = limit};
    f.v = arena_alloc(ctx->a, f.cap * sizeof(*f.v));
    store_status st =
        store_users_find(ctx->st, r->prefix, r->after, limit + 1, social_find_row, &f);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "user");
        return;
    }
    Parley__FindOk *ok = arena_alloc(ctx->a, sizeof(*ok));
    parley__find_ok__init(ok);
    ok->users = f.v;
    ok->n_users = f.n;
    ok->more = f.rows > limit;
    Parley__ServerFrame *out = svc_reply(ctx);
    out->body_case = PARLEY__SERVER_FRAME__BODY_FIND_OK;
    out->find_ok = ok;
}

/* "The caller is typing": relayed to the peer or the group's other members
 * (only those online get it), never stored. The gateway limits the rate. */
static void social_typing(svc_ctx *ctx)
{
    if (social_begin(ctx, PARLEY__CLIENT_FRAME__BODY_TYPING) < 0)
        return;
    const Parley__Typing *r = ctx->call->frame->typing;
    uint64_t me = ctx->call->caller->user_id;
    if ((r->peer != 0) == (r->group_id != 0)) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "typing needs a peer or a group, not both");
        return;
    }
    Parley__TypingEvent ev = PARLEY__TYPING_EVENT__INIT;
    ev.user = me;
    const char *my_name = view_user_name(ctx, me);
    ev.user_name = my_name ? (char *)my_name : "";
    view_ids to;
    view_ids_init(&to, ctx->a);
    if (r->peer) {
        if (r->peer == me) {
            svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "no conversation with yourself");
            return;
        }
        if (!view_user_name(ctx, r->peer)) {
            svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND, "user %llu not found",
                     (unsigned long long)r->peer);
            return;
        }
        view_ids_push(&to, r->peer);
    } else {
        int role;
        store_group g;
        if (social_role(ctx, r->group_id, &role) < 0)
            return;
        store_status st = store_group_get(ctx->st, r->group_id, &g);
        if (st == STORE_OK) {
            view_ids all;
            view_ids_init(&all, ctx->a);
            st = store_conv_members(ctx->st, g.conv, view_ids_add, &all);
            for (size_t i = 0; st == STORE_OK && i < all.n; i++)
                if (all.v[i] != me)
                    view_ids_push(&to, all.v[i]);
        }
        if (st != STORE_OK) {
            svc_fail_store(ctx, st, "group");
            return;
        }
        ev.group = g.id;
        ev.group_name = arena_strdup(ctx->a, g.name);
    }
    Parley__ServerFrame f = PARLEY__SERVER_FRAME__INIT;
    f.body_case = PARLEY__SERVER_FRAME__BODY_TYPING_EVENT;
    f.typing_event = &ev;
    svc_push(ctx, to.v, to.n, &f);
    social_done(ctx);
}

static const svc_method_fn social_methods[] = {
    social_friend_add, social_friend_del, social_friend_list,  social_group_create,
    social_group_join, social_group_quit, social_group_delete, social_whois,
    social_find,       social_typing,
};

const svc_def svc_social = {
    .desc = &parley__social_service__descriptor,
    .methods = social_methods,
    /* FriendList, Whois, Find only read; a late typing event is worth nothing. */
    .droppable = (1u << 2) | (1u << 7) | (1u << 8) | (1u << 9),
};
