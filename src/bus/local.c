/*
 * The in-process bus: one gateway, so publishing is a direct call into it.
 * Presence is that gateway's own session count when it offers one, else a
 * map from user to session count under one mutex.
 */
#include <pthread.h>
#include <stdlib.h>

#include "bus/bus.h"
#include "common/u64map.h"

typedef struct {
    bus base;
    pthread_mutex_t lock;
    u64map *sessions; /* user -> session count, stored in the pointer */
    bus_handler h;
} bus_local;

static int local_presence_add(bus *b, uint64_t user, uint32_t gateway)
{
    bus_local *bl = (bus_local *)b;
    (void)gateway;
    if (bl->h.count)
        return 0;
    pthread_mutex_lock(&bl->lock);
    uintptr_t n = (uintptr_t)u64map_get(bl->sessions, user);
    int rc = u64map_put(bl->sessions, user, (void *)(n + 1));
    pthread_mutex_unlock(&bl->lock);
    return rc;
}

static int local_presence_remove(bus *b, uint64_t user, uint32_t gateway)
{
    bus_local *bl = (bus_local *)b;
    (void)gateway;
    if (bl->h.count)
        return 0;
    pthread_mutex_lock(&bl->lock);
    uintptr_t n = (uintptr_t)u64map_get(bl->sessions, user);
    if (n <= 1)
        u64map_del(bl->sessions, user);
    else
        u64map_put(bl->sessions, user, (void *)(n - 1));
    pthread_mutex_unlock(&bl->lock);
    return 0;
}

static long local_presence_count(bus *b, uint64_t user, uint32_t except_gateway)
{
    bus_local *bl = (bus_local *)b;
    /* One gateway only: excepting it leaves nobody. */
    if (except_gateway)
        return 0;
    if (bl->h.count)
        return bl->h.count(bl->h.arg, user);
    pthread_mutex_lock(&bl->lock);
    uintptr_t n = (uintptr_t)u64map_get(bl->sessions, user);
    pthread_mutex_unlock(&bl->lock);
    return (long)n;
}

static void local_publish(bus *b, const bus_push *pushes, size_t n)
{
    bus_local *bl = (bus_local *)b;
    if (bl->h.deliver && n > 0)
        bl->h.deliver(bl->h.arg, pushes, n);
}

static void local_subscribe(bus *b, uint32_t gateway, const bus_handler *h)
{
    bus_local *bl = (bus_local *)b;
    bl->h = *h;
}

static void local_free(bus *b)
{
    bus_local *bl = (bus_local *)b;
    u64map_free(bl->sessions);
    pthread_mutex_destroy(&bl->lock);
    free(bl);
}

static const bus_ops local_ops = {
    .presence_add = local_presence_add,
    .presence_remove = local_presence_remove,
    .presence_count = local_presence_count,
    .publish = local_publish,
    .subscribe = local_subscribe,
    .free = local_free,
};

bus *bus_local_new(void)
{
    bus_local *bl = calloc(1, sizeof(*bl));
    if (!bl)
        return NULL;
    bl->sessions = u64map_new();
    if (!bl->sessions) {
        free(bl);
        return NULL;
    }
    pthread_mutex_init(&bl->lock, NULL);
    bl->base.ops = &local_ops;
    return &bl->base;
}
