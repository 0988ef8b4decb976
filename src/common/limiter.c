#include "common/limiter.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { LIM_SHARDS = 16, LIM_MIN_CAP = 64 };

typedef struct lim_slot {
    uint64_t key;    /* 0: empty */
    double tokens;   /* bucket: tokens left */
    int64_t last_ms; /* bucket: last refill; fail: last failure */
    int64_t until;   /* fail: no try before this */
    int64_t ttl_ms;  /* forgettable once now - last_ms passes this */
    uint32_t count;  /* counter; fail: failures so far */
    uint8_t kind;    /* LIM_BUCKET, LIM_COUNT or LIM_FAIL */
} lim_slot;

enum { LIM_BUCKET = 1, LIM_COUNT, LIM_FAIL };

typedef struct lim_shard {
    pthread_mutex_t lock;
    lim_slot *slot;
    unsigned cap, used, max; /* cap a power of two; max: ceiling on cap */
} lim_shard;

struct limiter {
    lim_shard shard[LIM_SHARDS];
};

int64_t limiter_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t lim_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

uint64_t limiter_key_u64(unsigned kind, uint64_t v)
{
    uint64_t k = lim_mix(v ^ lim_mix((uint64_t)kind + 1));
    return k ? k : 1;
}

uint64_t limiter_key(unsigned kind, const void *data, unsigned len)
{
    /* FNV-1a, then mixed with the kind: keys only need to be spread, and an
     * attacker who makes two addresses collide only shares one bucket. */
    uint64_t h = 0xcbf29ce484222325ULL;
    const unsigned char *p = data;
    for (unsigned i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return limiter_key_u64(kind, h);
}

limiter *limiter_new(unsigned max_keys)
{
    limiter *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    unsigned max = LIM_MIN_CAP;
    while (max < 2 * (max_keys / LIM_SHARDS + 1))
        max *= 2;
    for (int i = 0; i < LIM_SHARDS; i++) {
        lim_shard *s = &l->shard[i];
        pthread_mutex_init(&s->lock, NULL);
        s->max = max;
        s->cap = LIM_MIN_CAP;
        s->slot = calloc(s->cap, sizeof(*s->slot));
        if (!s->slot) {
            limiter_free(l);
            return NULL;
        }
    }
    return l;
}

void limiter_free(limiter *l)
{
    if (!l)
        return;
    for (int i = 0; i < LIM_SHARDS; i++) {
        free(l->shard[i].slot);
        pthread_mutex_destroy(&l->shard[i].lock);
    }
    free(l);
}

static lim_shard *lim_shard_of(limiter *l, uint64_t key)
{
    return &l->shard[key >> 60];
}

static lim_slot *lim_find(lim_shard *s, uint64_t key)
{
    unsigned mask = s->cap - 1;
    for (unsigned i = (unsigned)key & mask;; i = (i + 1) & mask) {
        if (s->slot[i].key == key || s->slot[i].key == 0)
            return &s->slot[i];
    }
}

/* Rebuilds the shard into cap slots, keeping what still matters: counts
 * above zero always, the rest unless forgettable (or `hard`, when the
 * table is at its ceiling: a forgotten bucket starts full again, which
 * costs a little precision, never a denial). */
static int lim_rebuild(lim_shard *s, unsigned cap, int64_t now_ms, int hard)
{
    lim_slot *old = s->slot;
    unsigned oldcap = s->cap;
    lim_slot *v = calloc(cap, sizeof(*v));
    if (!v)
        return -1;
    s->slot = v;
    s->cap = cap;
    s->used = 0;
    for (unsigned i = 0; i < oldcap; i++) {
        lim_slot *e = &old[i];
        if (!e->key)
            continue;
        int idle = now_ms - e->last_ms >= e->ttl_ms, keep;
        if (e->kind == LIM_COUNT)
            keep = e->count > 0;
        else if (e->kind == LIM_BUCKET)
            keep = !idle && !hard;
        else /* a failure record: kept while its wait runs, or recent */
            keep = e->until > now_ms || (!idle && !hard);
        if (!keep)
            continue;
        *lim_find(s, e->key) = *e;
        s->used++;
    }
    free(old);
    return 0;
}

/* The entry for key, created (zeroed, with key set) if absent; NULL if the
 * table cannot hold it. Called with the shard locked. */
static lim_slot *lim_get(lim_shard *s, uint64_t key, uint8_t kind, int64_t now_ms, int *fresh)
{
    lim_slot *e = lim_find(s, key);
    *fresh = 0;
    if (e->key == key)
        return e;
    if ((s->used + 1) * 4 > s->cap * 3) {
        /* Forget what holds nothing first; grow only if that did not help. */
        if (lim_rebuild(s, s->cap, now_ms, 0) < 0)
            return NULL;
        if ((s->used + 1) * 2 > s->cap) {
            if (s->cap < s->max) {
                if (lim_rebuild(s, s->cap * 2, now_ms, 0) < 0)
                    return NULL;
            } else if (lim_rebuild(s, s->cap, now_ms, 1) < 0 || (s->used + 1) * 4 > s->cap * 3) {
                return NULL;
            }
        }
        e = lim_find(s, key);
    }
    memset(e, 0, sizeof(*e));
    e->key = key;
    e->kind = kind;
    e->last_ms = now_ms;
    s->used++;
    *fresh = 1;
    return e;
}

static int lim_bucket(limiter *l, uint64_t key, double per_sec, double burst, int64_t now_ms,
                      uint32_t *retry_ms, double cost)
{
    if (per_sec <= 0)
        return 0;
    if (burst < 1)
        burst = 1;
    lim_shard *s = lim_shard_of(l, key);
    int rc = 0, fresh;
    pthread_mutex_lock(&s->lock);
    /* A look at a bucket never seen finds it full: no entry for it, or every
     * client that only ever looks would hold one. */
    if (cost == 0 && lim_find(s, key)->key != key)
        goto out;
    lim_slot *e = lim_get(s, key, LIM_BUCKET, now_ms, &fresh);
    if (!e)
        goto out; /* no room: let it through rather than refuse everyone */
    if (fresh) {
        e->tokens = burst;
    } else if (now_ms > e->last_ms) {
        e->tokens += (double)(now_ms - e->last_ms) * per_sec / 1000.0;
        if (e->tokens > burst)
            e->tokens = burst;
    }
    e->last_ms = now_ms;
    /* Forgettable once it would be full again anyway. */
    e->ttl_ms = (int64_t)(burst / per_sec * 1000.0) + 1;
    if (e->tokens >= 1.0) {
        e->tokens -= cost;
    } else {
        double wait = (1.0 - e->tokens) * 1000.0 / per_sec;
        *retry_ms = (uint32_t)(wait < 1 ? 1 : wait + 0.999);
        rc = -1;
    }
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int limiter_take(limiter *l, uint64_t key, double per_sec, double burst, int64_t now_ms,
                 uint32_t *retry_ms)
{
    return lim_bucket(l, key, per_sec, burst, now_ms, retry_ms, 1.0);
}

int limiter_peek(limiter *l, uint64_t key, double per_sec, double burst, int64_t now_ms,
                 uint32_t *retry_ms)
{
    return lim_bucket(l, key, per_sec, burst, now_ms, retry_ms, 0.0);
}

int limiter_count(limiter *l, uint64_t key, int delta, unsigned max)
{
    lim_shard *s = lim_shard_of(l, key);
    int rc = 0, fresh;
    int64_t now = limiter_now_ms();
    pthread_mutex_lock(&s->lock);
    lim_slot *e = lim_get(s, key, LIM_COUNT, now, &fresh);
    if (!e) {
        rc = delta > 0 ? -1 : 0;
        goto out;
    }
    if (delta > 0 && max && e->count + (unsigned)delta > max) {
        rc = -1;
    } else if (delta < 0 && (unsigned)-delta >= e->count) {
        e->count = 0;
    } else {
        e->count = (uint32_t)((int64_t)e->count + delta);
    }
    e->last_ms = now;
    e->ttl_ms = 0;
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int limiter_fail_check(limiter *l, uint64_t key, int64_t now_ms, uint32_t *retry_ms)
{
    lim_shard *s = lim_shard_of(l, key);
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    lim_slot *e = lim_find(s, key);
    if (e->key == key && e->until > now_ms) {
        *retry_ms = (uint32_t)(e->until - now_ms);
        rc = -1;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

uint32_t limiter_fail_note(limiter *l, uint64_t key, unsigned free_tries, uint32_t max_delay_ms,
                           int64_t now_ms)
{
    lim_shard *s = lim_shard_of(l, key);
    uint32_t wait = 0;
    int fresh;
    pthread_mutex_lock(&s->lock);
    lim_slot *e = lim_get(s, key, LIM_FAIL, now_ms, &fresh);
    if (!e)
        goto out;
    e->count++;
    if (e->count > free_tries) {
        unsigned over = e->count - free_tries - 1;
        uint64_t d = over >= 31 ? max_delay_ms : (uint64_t)1000 << over;
        wait = d > max_delay_ms ? max_delay_ms : (uint32_t)d;
        e->until = now_ms + wait;
    }
    e->last_ms = now_ms;
    /* Failures are remembered for a while after the longest wait, so that
     * a slow guesser does not start again from free tries. */
    e->ttl_ms = 2 * (int64_t)max_delay_ms + 60000;
out:
    pthread_mutex_unlock(&s->lock);
    return wait;
}

void limiter_fail_clear(limiter *l, uint64_t key)
{
    lim_shard *s = lim_shard_of(l, key);
    pthread_mutex_lock(&s->lock);
    lim_slot *e = lim_find(s, key);
    if (e->key == key) {
        /* The next rebuild drops it: nothing to wait for, no ttl. */
        e->count = 0;
        e->until = 0;
        e->ttl_ms = 0;
    }
    pthread_mutex_unlock(&s->lock);
}
