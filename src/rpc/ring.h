/*
 * ring: a consistent-hash ring with virtual nodes. A key maps to the first
 * virtual node clockwise from its hash; adding or removing a node moves only
 * the keys of that node's arcs. Used to pick the message-service node for a
 * conversation, so that one conversation is sequenced by one node at a time.
 * Not thread-safe: each owner keeps its own ring.
 */
#ifndef PARLEY_RING_H
#define PARLEY_RING_H

#include <stddef.h>
#include <stdint.h>

typedef struct ring ring;

/* A ring with `vnodes` virtual nodes per node. NULL on OOM; owned by the caller. */
ring *ring_new(unsigned vnodes);
void ring_free(ring *r);
/* Adds a node by name (copied). 0, -1 if present or on OOM. */
int ring_add(ring *r, const char *name);
/* Removes a node. 0, -1 if absent. */
int ring_del(ring *r, const char *name);
/* The node for key, or NULL if the ring is empty. Valid until the next change. */
const char *ring_get(const ring *r, uint64_t key);
/* Like ring_get, but skips nodes for which skip(arg, name) is true (e.g. an
 * open circuit breaker): the next node clockwise takes over. */
const char *ring_get_if(const ring *r, uint64_t key, int (*skip)(void *arg, const char *name),
                        void *arg);
size_t ring_nodes(const ring *r);
/* Calls fn for every virtual node in ring order. */
void ring_foreach(const ring *r, void (*fn)(void *arg, uint64_t point, const char *name),
                  void *arg);
/* The 64-bit hash used for keys and points (exposed for tools and tests). */
uint64_t ring_hash(const void *data, size_t len);

#endif
