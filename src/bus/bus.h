/*
 * bus: presence (which gateways hold sessions of a user) and delivery of
 * push frames to those gateways. The local bus serves the single-process
 * role; the Redis bus (bus_redis_new) serves a cluster behind the same
 * functions.
 *
 * Every function is thread-safe. Who calls what:
 *   - presence_add / presence_remove: gateway event loops. They must not
 *     block: a cluster bus queues the update and returns at once.
 *   - presence_count, publish: service worker threads. They may block.
 *   - subscribe: once, at start-up, before any publish.
 */
#ifndef PARLEY_BUS_H
#define PARLEY_BUS_H

#include <stddef.h>
#include <stdint.h>

#include "common/blob.h"

typedef struct bus bus;

/* One push: framed bytes to write to every session of the given users. */
typedef struct bus_push {
    const uint64_t *users;
    size_t n;
    blob *frame;
    uint64_t msgid; /* the message the frame carries; 0 for other pushes */
} bus_push;

/* A push whose msgid is BUS_KICK ends each session it reaches once the
 * frame (a Bye) is written: logout from every device, a ban. */
#define BUS_KICK UINT64_MAX
/* A push whose msgid is BUS_DRAIN asks the gateway whose name is its frame
 * (the bytes of the name, not a ServerFrame) to drain (docs/operations.md
 * "Admin"). It names user 0, who has no sessions: a gateway that does not
 * know it delivers it to nobody. */
#define BUS_DRAIN (UINT64_MAX - 1)
/* A push whose msgid has BUS_OWN set (and is neither of the above) is a
 * user's own message for their other sessions: its frame starts with
 * BUS_OWN_PREFIX bytes, the sending session's gateway (u32) and session id
 * (u64) in host order, which the gateway skips (it has its send_ok) before
 * writing the rest to the user's sessions. users names that user alone;
 * msgid & ~BUS_OWN is the message's. The Redis bus sends it only to the
 * gateways where the user has another session (none if the sender is the
 * only one). */
#define BUS_OWN        (1ULL << 62)
#define BUS_OWN_PREFIX 12

/* What a gateway hands the bus to receive pushes. Both run on a bus or
 * publisher thread, never on a gateway loop: they must hand work over. */
typedef struct bus_handler {
    /* Pushes to write, in order, to the sessions of their users on this
     * gateway (a push names only users with sessions here). Everything is
     * borrowed: blob_ref a frame to keep it. */
    void (*deliver)(void *arg, const bus_push *pushes, size_t n);
    /* Pushes may have been lost (the bus lost its connection and is back):
     * re-send every session what it has not acknowledged. */
    void (*resync)(void *arg);
    /* Optional: the sessions user has on this gateway, counted by the
     * gateway anyway. The local bus answers presence from it rather than
     * keep a second map of every user online. Any thread. */
    long (*count)(void *arg, uint64_t user);
    void *arg;
} bus_handler;

typedef struct bus_ops {
    int (*presence_add)(bus *b, uint64_t user, uint32_t gateway);
    int (*presence_remove)(bus *b, uint64_t user, uint32_t gateway);
    long (*presence_count)(bus *b, uint64_t user, uint32_t except_gateway);
    void (*publish)(bus *b, const bus_push *pushes, size_t n);
    void (*subscribe)(bus *b, uint32_t gateway, const bus_handler *h);
    void (*free)(bus *b);
    /* Optional: a drain for the gateway named name, on every live
     * gateway's channel (each compares the name with its own). The number
     * of gateways it went to, or -1. */
    long (*drain)(bus *b, const char *name);
} bus_ops;

struct bus {
    const bus_ops *ops;
};

/* The in-process bus (one gateway, presence in memory). Owned by the caller. */
bus *bus_local_new(void);
/* A bus on Redis at host:port, for a cluster. gateway_id is this process's
 * gateway (0 if it runs no gateway). Fails (NULL, reason in err) if Redis
 * cannot be reached at start; later outages are ridden out (see redis.c). */
bus *bus_redis_new(const char *host, int port, uint32_t gateway_id, char *err, size_t errlen);

/* What a cluster's Redis bus proves and checks (docs/security.md). */
#define BUS_KEY_LEN 32
typedef struct bus_redis_secrets {
    /* "USER:PASS" of a Redis ACL user: every connection sends AUTH first.
     * NULL or "": none (Redis's default user). */
    const char *auth;
    /* BUS_KEY_LEN bytes shared by every node: each message published
     * carries an HMAC-SHA512-256 of its channel and body, and a gateway
     * drops (and logs) whatever arrives without a valid one. NULL: no MAC,
     * nothing checked. */
    const unsigned char *key;
} bus_redis_secrets;

/* bus_redis_new with credentials and a message key; sec may be NULL. */
bus *bus_redis_new_secure(const char *host, int port, uint32_t gateway_id,
                          const bus_redis_secrets *sec, char *err, size_t errlen);

/* Counts one more session of user on gateway. 0, or -1 on failure. */
static inline int bus_presence_add(bus *b, uint64_t user, uint32_t gateway)
{
    return b->ops->presence_add(b, user, gateway);
}
/* Counts one session less. 0, or -1 on failure. */
static inline int bus_presence_remove(bus *b, uint64_t user, uint32_t gateway)
{
    return b->ops->presence_remove(b, user, gateway);
}
/* Sessions of user on every live gateway but except_gateway (0: none
 * excepted), or -1 if unknown (e.g. Redis unreachable). A gateway's own
 * updates reach the bus asynchronously, so a service deciding "was that the
 * last session?" excepts the calling gateway and adds the count the gateway
 * reported itself (Caller.local_sessions). */
static inline long bus_presence_count(bus *b, uint64_t user, uint32_t except_gateway)
{
    return b->ops->presence_count(b, user, except_gateway);
}
/* Sends each push (frames borrowed) to every session of its users, wherever
 * they are; pushes to one session arrive in the order given. One call costs
 * what one push costs, whatever n: batch what is ready. Best effort: a push
 * that cannot be sent is not an error, since the message is stored and
 * reaches the user at the next sync. */
static inline void bus_publish_many(bus *b, const bus_push *pushes, size_t n)
{
    if (n)
        b->ops->publish(b, pushes, n);
}
/* One push: frame to every session of users[0..n). */
static inline void bus_publish(bus *b, const uint64_t *users, size_t n, blob *frame)
{
    bus_push p = {.users = users, .n = n, .frame = frame};
    bus_publish_many(b, &p, 1);
}
/* Registers the gateway that receives pushes for sessions it holds. Call
 * before any publish; h is copied. */
static inline void bus_subscribe(bus *b, uint32_t gateway, const bus_handler *h)
{
    b->ops->subscribe(b, gateway, h);
}
/* Asks the gateway named name to drain: -1 where the bus has no other
 * gateway to send clients to (the local bus), else the live gateways the
 * request went to (0: none). Service worker threads; may block. */
static inline long bus_drain(bus *b, const char *name)
{
    return b->ops->drain ? b->ops->drain(b, name) : -1;
}

static inline void bus_free(bus *b)
{
    if (b)
        b->ops->free(b);
}

#endif
