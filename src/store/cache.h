/*
 * store cache: what a backend handle looks up at every send, kept in memory:
 * the conversation of a user pair and the routing of a conversation, which
 * never change while they exist, and the last seq this handle saw in a
 * conversation, which a caller must be ready to find stale (another handle
 * may have appended since). Private to src/store/.
 *
 * One cache per handle, used by its thread alone. A backend forgets it
 * whenever a transaction is rolled back, since the rows it names may never
 * have been committed. Each map is bounded: past STORE_CACHE_MAX entries it
 * starts again empty.
 */
#ifndef PARLEY_STORE_CACHE_H
#define PARLEY_STORE_CACHE_H

#include <stdint.h>

#include "store/store.h"

enum { STORE_KIND_DIRECT = 1, STORE_KIND_GROUP = 2, STORE_CACHE_MAX = 1 << 16 };

/* A conversation's kind, its two users (direct) or its group. */
typedef struct store_route {
    int kind;
    uint64_t lo, hi, group;
} store_route;

typedef struct store_cache store_cache;

/* A new empty cache, owned by the caller (store_cache_free). NULL on OOM. */
store_cache *store_cache_new(void);
void store_cache_free(store_cache *c);
void store_cache_forget(store_cache *c);

/* The direct conversation of users lo < hi: 1 and *conv if known, else 0. */
int store_cache_direct(const store_cache *c, uint64_t lo, uint64_t hi, uint64_t *conv);
/* Remembers it; best effort (nothing on OOM or ids past 32 bits). */
void store_cache_direct_put(store_cache *c, uint64_t lo, uint64_t hi, uint64_t conv);

/* The routing of conv: 1 and *r if known, else 0. */
int store_cache_route(const store_cache *c, uint64_t conv, store_route *r);
void store_cache_route_put(store_cache *c, uint64_t conv, const store_route *r);

/* The last seq of conv as this handle last saw it: 1 and *seq, else 0. */
int store_cache_seq(const store_cache *c, uint64_t conv, uint64_t *seq);
void store_cache_seq_put(store_cache *c, uint64_t conv, uint64_t seq);
void store_cache_seq_del(store_cache *c, uint64_t conv);

/* Fills m->to / m->group from the route of its conversation. */
void store_route_msg(store_msg *m, const store_route *r);

#endif
