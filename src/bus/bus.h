/*
 * bus: presence (which gateways hold sessions of a user) and delivery of
 * push frames to those gateways. The local bus serves the single-process
 * role; a Redis bus serves a cluster behind the same functions.
 *
 * Every function is thread-safe: service workers publish, gateways update
 * presence from their loops.
 */
#ifndef PARLEY_BUS_H
#define PARLEY_BUS_H

#include <stddef.h>
#include <stdint.h>

#include "common/blob.h"

typedef struct bus bus;

/* Called with the users of a push that have sessions on this gateway and
 * the framed bytes to write to each of their sessions. It runs on the
 * publisher's thread: it must hand the work to the gateway's loops. */
typedef void (*bus_deliver_fn)(void *arg, const uint64_t *users, size_t n, blob *frame);

typedef struct bus_ops {
    int (*presence_add)(bus *b, uint64_t user, uint32_t gateway);
    int (*presence_remove)(bus *b, uint64_t user, uint32_t gateway);
    long (*presence_count)(bus *b, uint64_t user);
    void (*publish)(bus *b, const uint64_t *users, size_t n, blob *frame);
    void (*subscribe)(bus *b, uint32_t gateway, bus_deliver_fn fn, void *arg);
    void (*free)(bus *b);
} bus_ops;

struct bus {
    const bus_ops *ops;
};

/* The in-process bus (one gateway, presence in memory). Owned by the caller. */
bus *bus_local_new(void);

/* Counts one more session of user on gateway; returns the user's session
 * count before this one (0: the user just came online), or -1 on failure. */
static inline int bus_presence_add(bus *b, uint64_t user, uint32_t gateway)
{
    return b->ops->presence_add(b, user, gateway);
}
/* Counts one session less; returns the sessions left, or -1 on failure. */
static inline int bus_presence_remove(bus *b, uint64_t user, uint32_t gateway)
{
    return b->ops->presence_remove(b, user, gateway);
}
/* Sessions of user on every gateway (0: offline), or -1 if unknown. */
static inline long bus_presence_count(bus *b, uint64_t user)
{
    return b->ops->presence_count(b, user);
}
/* Sends frame to every session of the given users, wherever they are. */
static inline void bus_publish(bus *b, const uint64_t *users, size_t n, blob *frame)
{
    b->ops->publish(b, users, n, frame);
}
/* Registers the gateway that receives pushes for sessions it holds. Call
 * before any publish. */
static inline void bus_subscribe(bus *b, uint32_t gateway, bus_deliver_fn fn, void *arg)
{
    b->ops->subscribe(b, gateway, fn, arg);
}
static inline void bus_free(bus *b)
{
    if (b)
        b->ops->free(b);
}

#endif
