#include "services/view.h"

#include <string.h>

void view_ids_init(view_ids *ids, arena *a)
{
    ids->a = a;
    ids->v = NULL;
    ids->n = ids->cap = 0;
}

void view_ids_push(view_ids *ids, uint64_t id)
{
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 16;
        uint64_t *v = arena_alloc(ids->a, cap * sizeof(*v));
        if (ids->n)
            memcpy(v, ids->v, ids->n * sizeof(*v));
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
}

int view_ids_add(void *arg, uint64_t id)
{
    view_ids_push(arg, id);
    return 0;
}

int view_ids_add_user(void *arg, uint64_t id, const char *name)
{
    view_ids_push(arg, id);
    return 0;
}

Parley__User *view_user(svc_ctx *ctx, uint64_t id, const char *name, int online)
{
    Parley__User *u = arena_alloc(ctx->a, sizeof(*u));
    parley__user__init(u);
    u->id = id;
    u->name = arena_strdup(ctx->a, name);
    u->online = online;
    return u;
}

/* A growable array of pointers in the arena. */
typedef struct {
    svc_ctx *ctx;
    void **v;
    size_t n, cap;
} view_vec;

static void view_vec_push(view_vec *vec, void *p)
{
    if (vec->n == vec->cap) {
        size_t cap = vec->cap ? vec->cap * 2 : 8;
        void **v = arena_alloc(vec->ctx->a, cap * sizeof(*v));
        if (vec->n)
            memcpy(v, vec->v, vec->n * sizeof(*v));
        vec->v = v;
        vec->cap = cap;
    }
    vec->v[vec->n++] = p;
}

static int view_add_friend(void *arg, uint64_t id, const char *name)
{
    view_vec *vec = arg;
    long online = bus_presence_count(vec->ctx->bus, id, 0);
    view_vec_push(vec, view_user(vec->ctx, id, name, online > 0));
    return 0;
}

int view_friends(svc_ctx *ctx, uint64_t user, Parley__User ***out, size_t *n)
{
    view_vec vec = {.ctx = ctx};
    store_status st = store_friend_list(ctx->st, user, view_add_friend, &vec);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "friend list");
        return -1;
    }
    *out = (Parley__User **)vec.v;
    *n = vec.n;
    return 0;
}

/* Members listed in one reply, over all its groups: a login of a user in
 * 500 groups of 2,000 would otherwise be a frame of tens of megabytes. */
enum { VIEW_MEMBERS_MAX = 5000 };

typedef struct {
    view_vec vec;
    size_t budget; /* members this group may still list */
} view_members;

static int view_add_member(void *arg, uint64_t id, const char *name, int role)
{
    view_members *vm = arg;
    view_vec *vec = &vm->vec;
    if (vec->n >= vm->budget)
        return 1;
    Parley__Member *m = arena_alloc(vec->ctx->a, sizeof(*m));
    parley__member__init(m);
    m->id = id;
    m->name = arena_strdup(vec->ctx->a, name);
    m->role = role == STORE_ROLE_CREATOR ? PARLEY__ROLE__ROLE_CREATOR : PARLEY__ROLE__ROLE_NORMAL;
    view_vec_push(vec, m);
    return 0;
}

static int view_add_group(void *arg, const store_group *sg)
{
    view_vec *vec = arg;
    Parley__Group *g = arena_alloc(vec->ctx->a, sizeof(*g));
    parley__group__init(g);
    g->id = sg->id;
    g->name = arena_strdup(vec->ctx->a, sg->name);
    g->desc = arena_strdup(vec->ctx->a, sg->desc);
    view_vec_push(vec, g);
    return 0;
}

int view_groups(svc_ctx *ctx, uint64_t user, Parley__Group ***out, size_t *n)
{
    view_vec groups = {.ctx = ctx};
    store_status st = store_user_groups(ctx->st, user, view_add_group, &groups);
    size_t listed = 0;
    for (size_t i = 0; st == STORE_OK && i < groups.n; i++) {
        Parley__Group *g = groups.v[i];
        view_members members = {.vec = {.ctx = ctx}, .budget = VIEW_MEMBERS_MAX - listed};
        st = store_group_members(ctx->st, g->id, view_add_member, &members);
        g->members = (Parley__Member **)members.vec.v;
        g->n_members = members.vec.n;
        g->members_total = (uint32_t)members.vec.n;
        listed += members.vec.n;
        uint64_t total = 0;
        if (st == STORE_OK && members.vec.n == members.budget &&
            store_group_member_count(ctx->st, g->id, &total) == STORE_OK)
            g->members_total = (uint32_t)total;
    }
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "group list");
        return -1;
    }
    *out = (Parley__Group **)groups.v;
    *n = groups.n;
    return 0;
}

Parley__Message *view_message(svc_ctx *ctx, const store_msg *m)
{
    Parley__Message *pm = arena_alloc(ctx->a, sizeof(*pm));
    parley__message__init(pm);
    pm->msgid = m->msgid;
    pm->conv = m->conv;
    pm->seq = m->seq;
    pm->from = m->sender;
    pm->to = m->to;
    pm->group = m->group;
    pm->ts = (uint64_t)m->ts;
    pm->recalled = m->recalled != 0;
    pm->body = m->recalled ? "" : arena_strndup(ctx->a, m->body, m->body_len);
    return pm;
}
