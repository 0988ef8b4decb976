#include "services/view.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Names shown on messages, cached per worker thread: a push then costs no
 * store lookup (on MariaDB a round trip) for a sender or group just seen.
 * An entry is trusted for VIEW_NAME_TTL_MS only, so a name an operator
 * changed (a deleted user's is replaced by a tombstone) shows as it is now
 * within that time on every node. Direct-mapped: a collision just looks the
 * name up again. */
enum { VIEW_NAMES = 1024, VIEW_NAME_TTL_MS = 60 * 1000 };

typedef struct {
    uint64_t key; /* id << 1 | is_group; 0: empty */
    int64_t until;
    char name[STORE_NAME_MAX * 4 + 1];
} view_name;

static pthread_key_t view_names_key;
static pthread_once_t view_names_once = PTHREAD_ONCE_INIT;

static void view_names_init(void)
{
    /* The destructor frees a worker's table when its thread ends. */
    if (pthread_key_create(&view_names_key, free) != 0)
        abort();
}

static view_name *view_names(void)
{
    pthread_once(&view_names_once, view_names_init);
    view_name *t = pthread_getspecific(view_names_key);
    if (!t) {
        t = calloc(VIEW_NAMES, sizeof(*t));
        if (t && pthread_setspecific(view_names_key, t) != 0) {
            free(t);
            t = NULL;
        }
    }
    return t; /* NULL on OOM: every name is looked up */
}

/* The name of user id (or of group id), in ctx's arena; NULL if it cannot
 * be had. A name is decoration: a failed lookup fails nothing. */
static const char *view_name_of(svc_ctx *ctx, uint64_t id, int group)
{
    if (!id || id >> 63)
        return NULL;
    uint64_t key = id << 1 | (uint64_t)(group != 0);
    view_name *t = view_names();
    view_name *e = t ? &t[(key * 0x9e3779b97f4a7c15ull) >> 54] : NULL;
    if (e && e->key == key && ctx->now_ms < e->until)
        return arena_strdup(ctx->a, e->name);
    const char *name;
    store_user u;
    store_group g;
    if (group) {
        if (store_group_get(ctx->st, id, &g) != STORE_OK)
            return NULL;
        name = g.name;
    } else {
        if (store_user_by_id(ctx->st, id, &u) != STORE_OK)
            return NULL;
        name = u.name;
    }
    if (e) {
        e->key = key;
        e->until = ctx->now_ms + VIEW_NAME_TTL_MS;
        memcpy(e->name, name, sizeof(e->name));
        e->name[sizeof(e->name) - 1] = '\0';
    }
    return arena_strdup(ctx->a, name);
}

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
    int kind = view_event_kind(m->body, m->body_len);
    if (kind) {
        pm->kind = (Parley__MessageKind)kind;
        pm->body = "";
        return pm;
    }
    pm->body = m->recalled ? "" : arena_strndup(ctx->a, m->body, m->body_len);
    return pm;
}

int view_event_kind(const char *body, size_t len)
{
    if (len != 2 || body[0] != VIEW_EVENT_MARK || body[1] < '1' || body[1] > '9')
        return 0;
    return body[1] - '0';
}

store_status view_event_append(svc_ctx *ctx, uint64_t conv, int kind, store_msg *out)
{
    /* Static: out->body points at it after the call. */
    static const char bodies[10][2] = {
        {VIEW_EVENT_MARK, '0'}, {VIEW_EVENT_MARK, '1'}, {VIEW_EVENT_MARK, '2'},
        {VIEW_EVENT_MARK, '3'}, {VIEW_EVENT_MARK, '4'}, {VIEW_EVENT_MARK, '5'},
        {VIEW_EVENT_MARK, '6'}, {VIEW_EVENT_MARK, '7'}, {VIEW_EVENT_MARK, '8'},
        {VIEW_EVENT_MARK, '9'},
    };
    if (kind < 1 || kind > 9)
        return STORE_ERROR;
    return store_message_append(ctx->st, conv, ctx->call->caller->user_id, 0, bodies[kind], 2,
                                ctx->now_ms, out);
}

const char *view_user_name(svc_ctx *ctx, uint64_t id)
{
    return view_name_of(ctx, id, 0);
}

const char *view_group_name(svc_ctx *ctx, uint64_t id)
{
    return view_name_of(ctx, id, 1);
}

void view_message_names(svc_ctx *ctx, Parley__Message *pm)
{
    const char *from = view_name_of(ctx, pm->from, 0);
    if (from)
        pm->from_name = (char *)from;
    if (pm->group) {
        const char *g = view_name_of(ctx, pm->group, 1);
        if (g)
            pm->group_name = (char *)g;
    }
}
