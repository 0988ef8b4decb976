#include "store/cache.h"

#include <stdlib.h>

#include "common/u64map.h"

struct store_cache {
    u64map *direct;   /* lo << 32 | hi -> conversation id */
    u64map *route_of; /* conversation -> index + 1 in routes */
    u64map *last_seq; /* conversation -> last seq seen */
    store_route *routes;
    size_t nroutes, cap;
};

store_cache *store_cache_new(void)
{
    store_cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->direct = u64map_new();
    c->route_of = u64map_new();
    c->last_seq = u64map_new();
    if (!c->direct || !c->route_of || !c->last_seq) {
        store_cache_free(c);
        return NULL;
    }
    return c;
}

void store_cache_free(store_cache *c)
{
    if (!c)
        return;
    u64map_free(c->direct);
    u64map_free(c->route_of);
    u64map_free(c->last_seq);
    free(c->routes);
    free(c);
}

void store_cache_forget(store_cache *c)
{
    if (!c)
        return;
    u64map_clear(c->direct);
    u64map_clear(c->route_of);
    u64map_clear(c->last_seq);
    c->nroutes = 0;
}

/* The key of a pair; 0 (not cached) if an id does not fit in 32 bits. */
static uint64_t store_cache_pair(uint64_t lo, uint64_t hi)
{
    return lo <= UINT32_MAX && hi <= UINT32_MAX && hi ? lo << 32 | hi : 0;
}

int store_cache_direct(const store_cache *c, uint64_t lo, uint64_t hi, uint64_t *conv)
{
    uint64_t key = store_cache_pair(lo, hi);
    uintptr_t v = key ? (uintptr_t)u64map_get(c->direct, key) : 0;
    if (!v)
        return 0;
    *conv = v;
    return 1;
}

void store_cache_direct_put(store_cache *c, uint64_t lo, uint64_t hi, uint64_t conv)
{
    uint64_t key = store_cache_pair(lo, hi);
    if (!key || !conv || conv > UINTPTR_MAX)
        return;
    if (u64map_size(c->direct) >= STORE_CACHE_MAX)
        u64map_clear(c->direct);
    u64map_put(c->direct, key, (void *)(uintptr_t)conv);
}

int store_cache_route(const store_cache *c, uint64_t conv, store_route *r)
{
    uintptr_t at = (uintptr_t)u64map_get(c->route_of, conv);
    if (!at)
        return 0;
    *r = c->routes[at - 1];
    return 1;
}

void store_cache_route_put(store_cache *c, uint64_t conv, const store_route *r)
{
    if (!conv)
        return;
    if (c->nroutes >= STORE_CACHE_MAX) {
        u64map_clear(c->route_of);
        c->nroutes = 0;
    }
    if (c->nroutes == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        store_route *v = realloc(c->routes, cap * sizeof(*v));
        if (!v)
            return;
        c->routes = v;
        c->cap = cap;
    }
    if (u64map_put(c->route_of, conv, (void *)(uintptr_t)(c->nroutes + 1)) == 0)
        c->routes[c->nroutes++] = *r;
}

int store_cache_seq(const store_cache *c, uint64_t conv, uint64_t *seq)
{
    uintptr_t v = (uintptr_t)u64map_get(c->last_seq, conv);
    if (!v)
        return 0;
    *seq = v;
    return 1;
}

void store_cache_seq_put(store_cache *c, uint64_t conv, uint64_t seq)
{
    if (!conv || !seq || seq > UINTPTR_MAX)
        return;
    if (u64map_size(c->last_seq) >= STORE_CACHE_MAX)
        u64map_clear(c->last_seq);
    u64map_put(c->last_seq, conv, (void *)(uintptr_t)seq);
}

void store_cache_seq_del(store_cache *c, uint64_t conv)
{
    u64map_del(c->last_seq, conv);
}

void store_route_msg(store_msg *m, const store_route *r)
{
    if (r->kind == STORE_KIND_DIRECT) {
        m->to = m->sender == r->lo ? r->hi : r->lo;
        m->group = 0;
    } else {
        m->to = 0;
        m->group = r->group;
    }
}
