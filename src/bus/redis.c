/*
 * The Redis bus: presence and push delivery for a cluster, where several
 * gateway processes and several message-service processes share one Redis.
 *
 * Layout in Redis (<id>: a gateway id; <epoch>: 16 hex digits each bus draws
 * at random, so a gateway that crashed and came back under the same id does
 * not inherit the sessions of its previous life):
 *   parley:gw:<id>:alive    string <epoch>, PX 3000, refreshed every second.
 *   parley:presence:<user>  hash "<id>:<epoch>" -> sessions of user there.
 *                           A field counts only while the alive key of <id>
 *                           holds <epoch>; readers delete the others.
 *   parley:gw:<id>          the pub/sub channel of pushes for gateway <id>.
 * A message on it is one or more pushes, each [u32 n][u32 len][u64 msgid]
 * [n x u64 user][len frame bytes], little endian: the message the push
 * carries (0 for other pushes), the users of that gateway it is for, then
 * the framed bytes to write to their sessions. One publish sends a whole
 * batch: a lookup of every user's presence (two round trips) and one
 * message per gateway (one more), whatever the number of pushes.
 *
 * Threads. A bus with a gateway (id != 0) runs a thread with an event_base
 * of its own and two async connections: "command" writes this gateway's
 * presence and refreshes its alive key; "subscriber" listens on its channel
 * and hands pushes to the handler. Gateway loops reach that thread through a
 * mutex-guarded queue and one event_active per batch. The thread keeps the
 * authoritative copy of this gateway's counts: after any loss of Redis it
 * reconnects (100 ms doubling to 1 s), re-writes them all, re-subscribes,
 * then calls the handler's resync, since pushes may have been lost.
 * publish and presence_count run on the caller's thread over synchronous
 * connections taken from a pool (one per concurrent caller) with 1 s
 * timeouts, so a dead Redis never holds a worker for long.
 *
 * Trust (docs/security.md). With credentials every connection, synchronous
 * or not, sends AUTH before anything else. With a cluster key a message on
 * a channel is [32-byte MAC][pushes], the MAC an HMAC-SHA512-256 of the
 * channel's name and the pushes: a gateway checks it before it reads a
 * single size, and drops what fails, with a log line at most every
 * REDIS_BADMAC_LOG_MS; naming the channel keeps a message meant for one
 * gateway from being replayed to another.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <sodium.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "bus/bus.h"
#include "bus/redis_decode.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/u64map.h"

#define REDIS_ALIVE_TTL_MS   3000
#define REDIS_TICK_MS        1000
#define REDIS_BACKOFF_MIN_MS 100
#define REDIS_BACKOFF_MAX_MS 1000
#define REDIS_TIMEOUT_MS     1000
#define REDIS_HOLDOFF_MS     250  /* after a failed connect, fail fast this long */
#define REDIS_STALL_TICKS    3    /* ticks without a reply before giving up a link */
#define REDIS_READY_WAIT_MS  2000 /* how long bus_redis_new waits to be registered */
#define REDIS_EPOCH_LEN      16
#define REDIS_PUSH_HDR       16 /* a push's n, len and msgid */
#define REDIS_TOMB_UNSENT    UINT64_MAX
#define REDIS_MAC_LEN        crypto_auth_hmacsha512256_BYTES
#define REDIS_BADMAC_LOG_MS  10000 /* at most one line this often about bad MACs */

/* Deletes a presence field unless its gateway is (again) alive with that
 * epoch: atomic, so it cannot race with the gateway re-registering. */
static const char redis_cleanup_lua[] = "if redis.call('GET', KEYS[2]) ~= ARGV[2] then "
                                        "return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0";
/* Deletes the alive key only if it is still ours. */
static const char redis_unregister_lua[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                                           "return redis.call('DEL', KEYS[1]) end return 0";

/* This gateway's sessions of one user, as the bus thread knows them. */
typedef struct redis_entry {
    uint64_t user;
    uint32_t count;
    /* With count 0, the entry stays until Redis has its HDEL: the sequence
     * number of that HDEL, or REDIS_TOMB_UNSENT. */
    uint64_t tomb;
} redis_entry;

typedef struct redis_op {
    uint64_t user;
    int delta;
} redis_op;

struct bus_redis;

/* One async connection of the bus thread. */
typedef struct redis_link {
    struct bus_redis *b;
    const char *name;
    redisAsyncContext *ac;
    int up;      /* command: connected; subscriber: subscribed */
    int failing; /* an outage is under way (and was logged) */
    unsigned backoff_ms;
    struct event *retry;
} redis_link;

typedef struct bus_redis {
    bus base;
    char *host;
    int port;
    char *user, *pass; /* the Redis ACL user; NULL: none */
    int keyed;         /* messages carry a MAC with key */
    unsigned char key[BUS_KEY_LEN];
    uint32_t gw;
    char epoch[REDIS_EPOCH_LEN + 1];
    char field[32];     /* "<id>:<epoch>" */
    char alive_key[32]; /* parley:gw:<id>:alive */
    char channel[32];   /* parley:gw:<id> */

    /* Synchronous connections for publish and presence_count. */
    pthread_mutex_t pool_lock;
    redisContext **pool;
    size_t npool, pool_cap;
    int64_t down_until_ms;

    /* Shared with the bus thread, under lock. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    redis_op *ops;
    size_t nops, ops_cap;
    int stopping;
    int ready;
    bus_handler h;

    /* The bus thread's own. */
    int thread_started;
    pthread_t thread;
    struct event_base *evb;
    struct event *notify, *tick;
    redis_link cmd, sub;
    redis_op *spare;
    size_t spare_cap;
    u64map *index; /* user -> position in ents + 1 */
    redis_entry *ents;
    size_t nents, ents_cap, ntombs;
    uint64_t sent, acked, acked_at_tick; /* commands on the current command link */
    int stall_ticks;
    int cmd_synced;  /* every entry written since the command link came up */
    int need_resync; /* pushes may have been lost since the handler last synced */
    int stolen_warned;
    uint64_t bad_macs;     /* messages dropped for their MAC, ever */
    uint64_t bad_unlogged; /* ... since the last line about them */
    int64_t bad_logged_ms;
} bus_redis;

static int64_t redis_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void redis_presence_key(char *out, size_t len, uint64_t user)
{
    snprintf(out, len, "parley:presence:%" PRIu64, user);
}

static void redis_alive_key(char *out, size_t len, uint32_t gw)
{
    snprintf(out, len, "parley:gw:%" PRIu32 ":alive", gw);
}

static void redis_put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void redis_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t redis_get_le32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t redis_get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* ---- synchronous connections (publisher and presence_count side) ---- */

static redisContext *redis_connect_sync(const char *host, int port, const char *user,
                                        const char *pass, char *why, size_t whylen)
{
    struct timeval tv = {REDIS_TIMEOUT_MS / 1000, (REDIS_TIMEOUT_MS % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    if (!c) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    if (c->err) {
        snprintf(why, whylen, "%s", c->errstr);
        redisFree(c);
        return NULL;
    }
    /* Command replies are bounded too, not only the connect. */
    if (redisSetTimeout(c, tv) != REDIS_OK || redisEnableKeepAlive(c) != REDIS_OK) {
        snprintf(why, whylen, "%s", c->errstr[0] ? c->errstr : "cannot set socket options");
        redisFree(c);
        return NULL;
    }
    if (!user)
        return c;
    redisReply *r = redisCommand(c, "AUTH %s %s", user, pass);
    if (!r || r->type == REDIS_REPLY_ERROR) {
        snprintf(why, whylen, "AUTH as %s: %s", user,
                 r ? r->str : (c->errstr[0] ? c->errstr : "no answer"));
        if (r)
            freeReplyObject(r);
        redisFree(c);
        return NULL;
    }
    freeReplyObject(r);
    return c;
}

/* Whether an idle pooled connection is still usable: after a Redis restart
 * it has read EOF, and we can tell without sending anything. */
static int redis_idle_ok(const redisContext *c)
{
    char x;
    ssize_t n = recv(c->fd, &x, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* A connection for this call: pooled, or new. NULL while Redis is down. */
static redisContext *redis_pool_take(bus_redis *b)
{
    pthread_mutex_lock(&b->pool_lock);
    while (b->npool) {
        redisContext *c = b->pool[--b->npool];
        if (redis_idle_ok(c)) {
            pthread_mutex_unlock(&b->pool_lock);
            return c;
        }
        redisFree(c);
    }
    /* Right after a failed connect, fail at once rather than make every
     * worker wait for its own timeout. */
    int down = redis_now_ms() < b->down_until_ms;
    pthread_mutex_unlock(&b->pool_lock);
    if (down)
        return NULL;
    char why[128];
    redisContext *c = redis_connect_sync(b->host, b->port, b->user, b->pass, why, sizeof(why));
    if (!c) {
        log_debug("bus: cannot reach Redis at %s:%d: %s", b->host, b->port, why);
        metrics_gauge_set(M_BUS_UP, 2, 0);
        pthread_mutex_lock(&b->pool_lock);
        b->down_until_ms = redis_now_ms() + REDIS_HOLDOFF_MS;
        pthread_mutex_unlock(&b->pool_lock);
    }
    return c;
}

/* Returns c to the pool, or drops it if it failed (it may be out of step
 * with its replies). */
static void redis_pool_give(bus_redis *b, redisContext *c, int failed)
{
    if (!c)
        return;
    metrics_gauge_set(M_BUS_UP, 2, !failed && !c->err);
    if (failed || c->err)
        goto drop;
    pthread_mutex_lock(&b->pool_lock);
    if (b->npool == b->pool_cap) {
        size_t ncap = b->pool_cap ? b->pool_cap * 2 : 8;
        redisContext **np = realloc(b->pool, ncap * sizeof(*np));
        if (!np) {
            pthread_mutex_unlock(&b->pool_lock);
            goto drop;
        }
        b->pool = np;
        b->pool_cap = ncap;
    }
    b->pool[b->npool++] = c;
    pthread_mutex_unlock(&b->pool_lock);
    return;
drop:
    redisFree(c);
}

static int redis_read(redisContext *c, redisReply **out)
{
    void *r = NULL;
    if (redisGetReply(c, &r) != REDIS_OK || !r)
        return -1;
    *out = r;
    return 0;
}

/* Reads and drops k pipelined replies. */
static int redis_skip(redisContext *c, size_t k)
{
    for (size_t i = 0; i < k; i++) {
        redisReply *r;
        if (redis_read(c, &r) < 0)
            return -1;
        freeReplyObject(r);
    }
    return 0;
}

/* A gateway named in presence hashes, and what one lookup learnt of it. */
typedef struct redis_gw {
    uint32_t id;
    char epoch[REDIS_EPOCH_LEN + 1]; /* its live epoch; "" if it is dead */
} redis_gw;

typedef struct redis_lookup {
    redisReply **hashes; /* one HGETALL reply per user */
    size_t n;
    redis_gw *gws;
    size_t ngws, gws_cap;
} redis_lookup;

static void redis_lookup_free(redis_lookup *lk)
{
    for (size_t i = 0; i < lk->n; i++)
        if (lk->hashes[i])
            freeReplyObject(lk->hashes[i]);
    free(lk->hashes);
    free(lk->gws);
}

/* Splits a field "<id>:<epoch>"; -1 if it is not one. */
static int redis_parse_field(const redisReply *f, uint32_t *id, const char **epoch)
{
    if (f->type != REDIS_REPLY_STRING || f->len == 0 || f->str[0] < '0' || f->str[0] > '9')
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(f->str, &end, 10);
    if (errno || *end != ':' || v == 0 || v > UINT32_MAX ||
        (size_t)(end + 1 - f->str) + REDIS_EPOCH_LEN != f->len)
        return -1;
    *id = (uint32_t)v;
    *epoch = end + 1;
    return 0;
}

static redis_gw *redis_lookup_gw(redis_lookup *lk, uint32_t id, int add)
{
    for (size_t i = 0; i < lk->ngws; i++)
        if (lk->gws[i].id == id)
            return &lk->gws[i];
    if (!add)
        return NULL;
    if (lk->ngws == lk->gws_cap) {
        size_t ncap = lk->gws_cap ? lk->gws_cap * 2 : 4;
        redis_gw *ng = realloc(lk->gws, ncap * sizeof(*ng));
        if (!ng)
            return NULL;
        lk->gws = ng;
        lk->gws_cap = ncap;
    }
    redis_gw *g = &lk->gws[lk->ngws++];
    memset(g, 0, sizeof(*g));
    g->id = id;
    return g;
}

/* Fetches the presence hashes of users and the epochs of every gateway they
 * name: two round trips, whatever n. 0, or -1 (drop the connection). */
static int redis_lookup_run(redisContext *c, const uint64_t *users, size_t n, redis_lookup *lk)
{
    const char **argv = NULL;
    size_t *argvlen = NULL;
    char *keys = NULL;
    redisReply *mget = NULL;
    int rc = -1;

    lk->hashes = calloc(n, sizeof(*lk->hashes));
    if (!lk->hashes)
        goto out;
    lk->n = n;
    for (size_t i = 0; i < n; i++) {
        char key[48];
        redis_presence_key(key, sizeof(key), users[i]);
        if (redisAppendCommand(c, "HGETALL %s", key) != REDIS_OK)
            goto out;
    }
    for (size_t i = 0; i < n; i++)
        if (redis_read(c, &lk->hashes[i]) < 0)
            goto out;
    for (size_t i = 0; i < n; i++) {
        const redisReply *h = lk->hashes[i];
        if (h->type != REDIS_REPLY_ARRAY)
            continue;
        for (size_t j = 0; j + 1 < h->elements; j += 2) {
            uint32_t id;
            const char *epoch;
            if (redis_parse_field(h->element[j], &id, &epoch) == 0 && !redis_lookup_gw(lk, id, 1))
                goto out;
        }
    }
    if (lk->ngws == 0) {
        rc = 0;
        goto out;
    }
    /* One MGET of the alive keys tells which of those gateways live. */
    argv = malloc((lk->ngws + 1) * sizeof(*argv));
    argvlen = malloc((lk->ngws + 1) * sizeof(*argvlen));
    keys = malloc(lk->ngws * 32);
    if (!argv || !argvlen || !keys)
        goto out;
    argv[0] = "MGET";
    argvlen[0] = 4;
    for (size_t k = 0; k < lk->ngws; k++) {
        char *key = keys + k * 32;
        redis_alive_key(key, 32, lk->gws[k].id);
        argv[k + 1] = key;
        argvlen[k + 1] = strlen(key);
    }
    if (redisAppendCommandArgv(c, (int)lk->ngws + 1, argv, argvlen) != REDIS_OK ||
        redis_read(c, &mget) < 0)
        goto out;
    if (mget->type != REDIS_REPLY_ARRAY || mget->elements != lk->ngws)
        goto out;
    for (size_t k = 0; k < lk->ngws; k++) {
        const redisReply *e = mget->element[k];
        if (e->type == REDIS_REPLY_STRING && e->len == REDIS_EPOCH_LEN)
            memcpy(lk->gws[k].epoch, e->str, REDIS_EPOCH_LEN + 1);
    }
    rc = 0;
out:
    if (mget)
        freeReplyObject(mget);
    free(argv);
    free(argvlen);
    free(keys);
    return rc;
}

/* What a field of a presence hash is worth: its live gateway, or NULL if
 * the field is dead (then *stale says whether to delete it). */
static redis_gw *redis_field_gw(redis_lookup *lk, const redisReply *f, const char **epoch,
                                int *stale)
{
    uint32_t id;
    *stale = 0;
    if (redis_parse_field(f, &id, epoch) < 0)
        return NULL;
    redis_gw *g = redis_lookup_gw(lk, id, 0);
    if (g && memcmp(g->epoch, *epoch, REDIS_EPOCH_LEN) == 0)
        return g;
    *stale = 1;
    return NULL;
}

/* Queues the deletion of a dead field (lazy clean-up). */
static int redis_append_cleanup(redisContext *c, uint64_t user, const redisReply *f,
                                const char *epoch)
{
    char key[48], alive[32];
    redis_presence_key(key, sizeof(key), user);
    uint32_t id = (uint32_t)strtoul(f->str, NULL, 10);
    redis_alive_key(alive, sizeof(alive), id);
    const char *argv[] = {"EVAL", redis_cleanup_lua, "2", key, alive, f->str, epoch};
    size_t argvlen[] = {
        4, sizeof(redis_cleanup_lua) - 1, 1, strlen(key), strlen(alive), f->len, REDIS_EPOCH_LEN};
    return redisAppendCommandArgv(c, 7, argv, argvlen) == REDIS_OK ? 0 : -1;
}

static long long redis_field_count(const redisReply *v)
{
    if (v->type != REDIS_REPLY_STRING)
        return 0;
    long long n = strtoll(v->str, NULL, 10);
    return n > 0 ? n : 0;
}

static long redis_presence_count(bus *base, uint64_t user, uint32_t except_gateway)
{
    bus_redis *b = (bus_redis *)base;
    redis_lookup lk = {0};
    long total = -1;
    int failed = 1;
    size_t nclean = 0;
    redisContext *c = redis_pool_take(b);
    if (!c)
        return -1;
    if (redis_lookup_run(c, &user, 1, &lk) < 0)
        goto out;
    total = 0;
    const redisReply *h = lk.hashes[0];
    if (h->type == REDIS_REPLY_ARRAY) {
        for (size_t j = 0; j + 1 < h->elements; j += 2) {
            const char *epoch;
            int stale;
            redis_gw *g = redis_field_gw(&lk, h->element[j], &epoch, &stale);
            if (g && g->id != except_gateway)
                total += (long)redis_field_count(h->element[j + 1]);
            else if (stale && redis_append_cleanup(c, user, h->element[j], epoch) == 0)
                nclean++;
        }
    }
    failed = redis_skip(c, nclean) < 0;
out:
    redis_lookup_free(&lk);
    redis_pool_give(b, c, failed);
    return total;
}

/* A growing byte buffer for one gateway's message. */
typedef struct redis_buf {
    uint8_t *p;
    size_t len, cap;
} redis_buf;

static uint8_t *redis_buf_grow(redis_buf *b, size_t more)
{
    if (b->len + more > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + more)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p)
            return NULL;
        b->p = p;
        b->cap = cap;
    }
    uint8_t *at = b->p + b->len;
    b->len += more;
    return at;
}

/* The MAC of a message on channel: HMAC-SHA512-256 over the channel's name,
 * a NUL, and the body. */
static void redis_mac(const bus_redis *b, const char *channel, const uint8_t *body, size_t len,
                      uint8_t *out)
{
    crypto_auth_hmacsha512256_state st;
    crypto_auth_hmacsha512256_init(&st, b->key, sizeof(b->key));
    crypto_auth_hmacsha512256_update(&st, (const uint8_t *)channel, strlen(channel) + 1);
    crypto_auth_hmacsha512256_update(&st, body, len);
    crypto_auth_hmacsha512256_final(&st, out);
    sodium_memzero(&st, sizeof(st));
}

/* The live gateways (indexes into lk->gws) holding sessions of each user:
 * user i's are gw[off[i]] .. gw[off[i + 1] - 1]. */
typedef struct redis_where {
    size_t *off;
    uint32_t *gw;
    uint32_t *cnt; /* the user's sessions on gw[k] */
} redis_where;

static int redis_publish_where(redisContext *c, redis_lookup *lk, const uint64_t *users, size_t n,
                               redis_where *wh, size_t *pending)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        if (lk->hashes[i]->type == REDIS_REPLY_ARRAY)
            total += lk->hashes[i]->elements / 2;
    wh->off = malloc((n + 1) * sizeof(*wh->off));
    wh->gw = malloc((total ? total : 1) * sizeof(*wh->gw));
    wh->cnt = malloc((total ? total : 1) * sizeof(*wh->cnt));
    if (!wh->off || !wh->gw || !wh->cnt)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        wh->off[i] = k;
        const redisReply *h = lk->hashes[i];
        if (h->type != REDIS_REPLY_ARRAY)
            continue;
        for (size_t j = 0; j + 1 < h->elements; j += 2) {
            const char *epoch;
            int stale;
            redis_gw *g = redis_field_gw(lk, h->element[j], &epoch, &stale);
            long long cnt = g ? redis_field_count(h->element[j + 1]) : 0;
            if (g && cnt > 0) {
                wh->cnt[k] = cnt > UINT32_MAX ? UINT32_MAX : (uint32_t)cnt;
                wh->gw[k++] = (uint32_t)(g - lk->gws);
            } else if (stale) {
                if (redis_append_cleanup(c, users[i], h->element[j], epoch) < 0)
                    return -1;
                (*pending)++;
            }
        }
    }
    wh->off[n] = k;
    return 0;
}

/* An own copy (BUS_OWN) goes to the gateways where its user has a session
 * other than the sender: not to the sending session's gateway if that is
 * the only one there. With one session in all, to none (no bytes). */
static int redis_own_skip(const bus_push *bp, uint32_t gw_id, uint32_t sessions)
{
    uint32_t from;
    if (bp->msgid == BUS_KICK || bp->msgid == BUS_DRAIN || !(bp->msgid & BUS_OWN) ||
        bp->frame->len < BUS_OWN_PREFIX)
        return 0;
    memcpy(&from, bp->frame->data, 4);
    return from == gw_id && sessions <= 1;
}

/* Appends to out the pushes for gateway g: each with only its users there. */
static int redis_publish_build(const bus_push *pushes, size_t np, const u64map *index,
                               const redis_where *wh, const redis_lookup *lk, uint32_t g,
                               redis_buf *out, uint64_t *scratch)
{
    for (size_t k = 0; k < np; k++) {
        const bus_push *bp = &pushes[k];
        size_t m = 0;
        for (size_t i = 0; i < bp->n; i++) {
            size_t u = (uintptr_t)u64map_get(index, bp->users[i]) - 1;
            for (size_t j = wh->off[u]; j < wh->off[u + 1]; j++)
                if (wh->gw[j] == g) {
                    if (!redis_own_skip(bp, lk->gws[g].id, wh->cnt[j]))
                        scratch[m++] = bp->users[i];
                    break;
                }
        }
        if (m == 0 || bp->frame->len > UINT32_MAX)
            continue;
        uint8_t *p = redis_buf_grow(out, REDIS_PUSH_HDR + m * 8 + bp->frame->len);
        if (!p)
            return -1;
        redis_put_le32(p, (uint32_t)m);
        redis_put_le32(p + 4, (uint32_t)bp->frame->len);
        redis_put_le64(p + 8, bp->msgid);
        for (size_t i = 0; i < m; i++)
            redis_put_le64(p + REDIS_PUSH_HDR + i * 8, scratch[i]);
        memcpy(p + REDIS_PUSH_HDR + m * 8, bp->frame->data, bp->frame->len);
    }
    return 0;
}

static void redis_publish(bus *base, const bus_push *pushes, size_t np)
{
    bus_redis *b = (bus_redis *)base;
    redis_lookup lk = {0};
    redis_where wh = {0};
    redis_buf msg = {0};
    u64map *index = NULL;
    uint64_t *users = NULL, *scratch = NULL;
    size_t n = 0, pending = 0, most = 0, total = 0;
    int failed = 1;
    uint64_t start = metrics_now_us();
    for (size_t k = 0; k < np; k++) {
        total += pushes[k].n;
        if (pushes[k].n > most)
            most = pushes[k].n;
    }
    if (total == 0)
        return;
    /* Best effort: the message is stored, and reaches the user at the next
     * sync if this push does not. */
    redisContext *c = redis_pool_take(b);
    if (!c)
        return;
    /* Each user looked up once, however many pushes name it. */
    index = u64map_new();
    users = malloc(total * sizeof(*users));
    scratch = malloc(most * sizeof(*scratch));
    if (!index || !users || !scratch)
        goto out;
    for (size_t k = 0; k < np; k++)
        for (size_t i = 0; i < pushes[k].n; i++) {
            uint64_t u = pushes[k].users[i];
            if (u == 0 || u64map_get(index, u))
                continue;
            if (u64map_put(index, u, (void *)(uintptr_t)(n + 1)) < 0)
                goto out;
            users[n++] = u;
        }
    if (redis_lookup_run(c, users, n, &lk) < 0 ||
        redis_publish_where(c, &lk, users, n, &wh, &pending) < 0)
        goto out;
    /* One message per gateway, whatever the number of its pushes. */
    size_t head = b->keyed ? REDIS_MAC_LEN : 0;
    for (size_t g = 0; g < lk.ngws; g++) {
        /* Room for the MAC in front, filled in once the pushes are in. */
        msg.len = 0;
        if (head && !redis_buf_grow(&msg, head))
            goto out;
        if (redis_publish_build(pushes, np, index, &wh, &lk, (uint32_t)g, &msg, scratch) < 0)
            goto out;
        if (msg.len == head)
            continue;
        char channel[32];
        snprintf(channel, sizeof(channel), "parley:gw:%" PRIu32, lk.gws[g].id);
        if (b->keyed)
            redis_mac(b, channel, msg.p + REDIS_MAC_LEN, msg.len - REDIS_MAC_LEN, msg.p);
        const char *argv[] = {"PUBLISH", channel, (const char *)msg.p};
        size_t argvlen[] = {7, strlen(channel), msg.len};
        if (redisAppendCommandArgv(c, 3, argv, argvlen) != REDIS_OK)
            goto out;
        pending++;
    }
    failed = redis_skip(c, pending) < 0;
out:
    if (failed)
        log_debug("bus: %zu pushes were not published (Redis at %s:%d)", np, b->host, b->port);
    metrics_add(M_BUS_PUBLISHES, 0, 0, failed ? 0 : np);
    metrics_since(M_BUS_PUBLISH_SECONDS, 0, start);
    redis_lookup_free(&lk);
    redis_pool_give(b, c, failed);
    free(wh.off);
    free(wh.gw);
    free(wh.cnt);
    free(msg.p);
    free(scratch);
    free(users);
    u64map_free(index);
}

/* ---- the bus thread: this gateway's presence and its subscription ---- */

static void redis_on_reply(redisAsyncContext *ac, void *reply, void *priv);
static void redis_link_connect(redis_link *l);

/* Sends a command on the command link. Its sequence number, or 0 if it
 * could not be sent. */
static uint64_t redis_cmd(bus_redis *b, redisCallbackFn *fn, const char *fmt, ...)
{
    if (!b->cmd.up || !b->cmd.ac)
        return 0;
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAsyncCommand(b->cmd.ac, fn ? fn : redis_on_reply, b, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK)
        return 0;
    return ++b->sent;
}

/* Counts a reply on the current command link. 0 if it is not one. */
static int redis_count_reply(bus_redis *b, redisAsyncContext *ac, const redisReply *r)
{
    if (!r || ac != b->cmd.ac)
        return 0;
    b->acked++;
    if (r->type == REDIS_REPLY_ERROR)
        log_warn("bus: Redis at %s:%d refused a presence update: %s", b->host, b->port, r->str);
    return 1;
}

static void redis_on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    redis_count_reply(priv, ac, reply);
}

static void redis_write_entry(bus_redis *b, redis_entry *e)
{
    char key[48];
    redis_presence_key(key, sizeof(key), e->user);
    if (e->count) {
        char count[16];
        snprintf(count, sizeof(count), "%" PRIu32, e->count);
        redis_cmd(b, NULL, "HSET %s %s %s", key, b->field, count);
    } else {
        uint64_t seq = redis_cmd(b, NULL, "HDEL %s %s", key, b->field);
        e->tomb = seq ? seq : REDIS_TOMB_UNSENT;
    }
}

static void redis_check_ready(bus_redis *b)
{
    if (!b->cmd_synced || !b->sub.up)
        return;
    pthread_mutex_lock(&b->lock);
    b->ready = 1;
    pthread_cond_broadcast(&b->cond);
    bus_handler h = b->h;
    pthread_mutex_unlock(&b->lock);
    if (!b->need_resync)
        return;
    /* Only now: the subscription is back and publishers see our sessions
     * again, so whatever the sessions fetch next cannot slip through. */
    b->need_resync = 0;
    log_info("bus: gateway %" PRIu32 " registered again with Redis at %s:%d (%zu users); "
             "re-syncing its sessions",
             b->gw, b->host, b->port, b->nents - b->ntombs);
    if (h.resync)
        h.resync(h.arg);
}

static void redis_on_synced(redisAsyncContext *ac, void *reply, void *priv)
{
    bus_redis *b = priv;
    if (!redis_count_reply(b, ac, reply))
        return;
    b->cmd_synced = 1;
    b->cmd.failing = 0;
    b->cmd.backoff_ms = 0;
    redis_check_ready(b);
}

/* Writes every entry again (after a reconnect, or after our alive key was
 * found gone), then marks the link synced when Redis has it all. */
static void redis_rewrite(bus_redis *b)
{
    b->cmd_synced = 0;
    for (size_t i = 0; i < b->nents; i++)
        redis_write_entry(b, &b->ents[i]);
    redis_cmd(b, redis_on_synced, "PING");
}

static void redis_on_alive(redisAsyncContext *ac, void *reply, void *priv)
{
    bus_redis *b = priv;
    const redisReply *r = reply;
    if (!redis_count_reply(b, ac, r) || !b->cmd_synced)
        return; /* the first refresh after a connect finds nothing: expected */
    if (r->type == REDIS_REPLY_STRING && strcmp(r->str, b->epoch) == 0)
        return;
    if (r->type == REDIS_REPLY_STRING) {
        if (!b->stolen_warned)
            log_error("bus: another process runs as gateway %" PRIu32 " on Redis at %s:%d", b->gw,
                      b->host, b->port);
        b->stolen_warned = 1;
        return;
    }
    if (r->type != REDIS_REPLY_NIL)
        return;
    /* The key had expired (Redis or this thread stalled): publishers took us
     * for dead, skipped our users and may have deleted our fields. */
    log_warn("bus: gateway %" PRIu32 " was taken for dead by Redis at %s:%d; registering again",
             b->gw, b->host, b->port);
    b->need_resync = 1;
    redis_rewrite(b);
}

static void redis_link_retry(redis_link *l)
{
    l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : REDIS_BACKOFF_MIN_MS;
    if (l->backoff_ms > REDIS_BACKOFF_MAX_MS)
        l->backoff_ms = REDIS_BACKOFF_MAX_MS;
    struct timeval tv = {l->backoff_ms / 1000, (l->backoff_ms % 1000) * 1000};
    evtimer_add(l->retry, &tv);
}

static void redis_link_lost(redis_link *l, const char *why)
{
    bus_redis *b = l->b;
    l->up = 0;
    metrics_gauge_set(M_BUS_UP, l == &b->sub, 0);
    metrics_add(M_BUS_RECONNECTS, 0, 0, !l->failing);
    if (l == &b->cmd)
        b->cmd_synced = 0;
    b->need_resync = 1;
    if (!l->failing)
        log_warn("bus: %s connection to Redis at %s:%d lost: %s; reconnecting", l->name, b->host,
                 b->port, why && why[0] ? why : "closed");
    else
        log_debug("bus: %s connection to Redis at %s:%d: %s", l->name, b->host, b->port,
                  why && why[0] ? why : "closed");
    l->failing = 1;
    redis_link_retry(l);
}

/* Drops a link at once; its callbacks then see it is no longer current. */
static void redis_link_close(redis_link *l)
{
    if (l->retry)
        evtimer_del(l->retry);
    redisAsyncContext *ac = l->ac;
    l->ac = NULL;
    l->up = 0;
    if (ac)
        redisAsyncFree(ac);
}

void bus_redis_decode(const uint8_t *p, size_t len, const bus_handler *h)
{
    bus_push *pushes = NULL;
    uint64_t *users = NULL;
    size_t np = 0, nusers = 0;
    /* Never trust the sizes in a message: anyone may publish here. First
     * check and count every record, then copy. */
    if (len == 0)
        goto bad;
    for (size_t off = 0; off < len; np++) {
        if (len - off < REDIS_PUSH_HDR)
            goto bad;
        uint32_t n = redis_get_le32(p + off), flen = redis_get_le32(p + off + 4);
        size_t rest = len - off - REDIS_PUSH_HDR;
        if (n == 0 || flen == 0 || n > rest / 8 || flen > rest - (size_t)n * 8)
            goto bad;
        nusers += n;
        off += REDIS_PUSH_HDR + (size_t)n * 8 + flen;
    }
    pushes = calloc(np ? np : 1, sizeof(*pushes));
    users = malloc((nusers ? nusers : 1) * sizeof(*users));
    if (!pushes || !users) {
        log_error("bus: out of memory for %zu pushes", np);
        goto out;
    }
    uint64_t *u = users;
    size_t off = 0;
    for (size_t k = 0; k < np; k++) {
        uint32_t n = redis_get_le32(p + off), flen = redis_get_le32(p + off + 4);
        uint64_t msgid = redis_get_le64(p + off + 8);
        off += REDIS_PUSH_HDR;
        for (uint32_t i = 0; i < n; i++)
            u[i] = redis_get_le64(p + off + (size_t)i * 8);
        off += (size_t)n * 8;
        blob *frame = blob_new(flen);
        memcpy(frame->data, p + off, flen);
        off += flen;
        pushes[k] = (bus_push){.users = u, .n = n, .frame = frame, .msgid = msgid};
        u += n;
    }
    if (h->deliver)
        h->deliver(h->arg, pushes, np);
    for (size_t k = 0; k < np; k++)
        blob_unref(pushes[k].frame);
    goto out;
bad:
    log_warn("bus: ignored a malformed push message (%zu bytes)", len);
out:
    free(pushes);
    free(users);
}

/* Whether a message on our channel carries a valid MAC; logs (rate
 * limited) what does not: whoever wrote it is no node of this cluster, or
 * one with another key. */
static int redis_mac_ok(bus_redis *b, const uint8_t *p, size_t len)
{
    uint8_t want[REDIS_MAC_LEN];
    int ok = 0;
    if (len >= REDIS_MAC_LEN) {
        redis_mac(b, b->channel, p + REDIS_MAC_LEN, len - REDIS_MAC_LEN, want);
        ok = crypto_verify_32(want, p) == 0;
    }
    if (ok)
        return 1;
    __atomic_add_fetch(&b->bad_macs, 1, __ATOMIC_RELAXED);
    b->bad_unlogged++;
    int64_t now = redis_now_ms();
    if (b->bad_logged_ms == 0 || now - b->bad_logged_ms >= REDIS_BADMAC_LOG_MS) {
        log_warn("bus: dropped %" PRIu64 " message(s) on %s without a valid MAC (%zu bytes the "
                 "last): not written by a node with this cluster's key",
                 b->bad_unlogged, b->channel, len);
        b->bad_unlogged = 0;
        b->bad_logged_ms = now;
    }
    return 0;
}

static void redis_decode_push(bus_redis *b, const uint8_t *p, size_t len)
{
    pthread_mutex_lock(&b->lock);
    bus_handler h = b->h;
    pthread_mutex_unlock(&b->lock);
    bus_redis_decode(p, len, &h);
}

static void redis_on_message(redisAsyncContext *ac, void *reply, void *priv)
{
    bus_redis *b = priv;
    const redisReply *r = reply;
    if (!r || ac != b->sub.ac || r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = r->element[0]->str;
    if (strcmp(kind, "subscribe") == 0) {
        b->sub.up = 1;
        b->sub.failing = 0;
        b->sub.backoff_ms = 0;
        redis_check_ready(b);
    } else if (strcmp(kind, "message") == 0 && r->element[2]->type == REDIS_REPLY_STRING) {
        const uint8_t *p = (const uint8_t *)r->element[2]->str;
        size_t len = r->element[2]->len;
        if (b->keyed) {
            if (!redis_mac_ok(b, p, len))
                return;
            p += REDIS_MAC_LEN;
            len -= REDIS_MAC_LEN;
        }
        redis_decode_push(b, p, len);
    }
}

/* The answer to a link's AUTH: refused, the link is useless (every command
 * after it fails); drop it and try again later, loudly. */
static void redis_on_auth(redisAsyncContext *ac, void *reply, void *priv)
{
    redis_link *l = priv;
    const redisReply *r = reply;
    if (!r || ac != l->ac || r->type != REDIS_REPLY_ERROR)
        return;
    bus_redis *b = l->b;
    if (!l->failing)
        log_error("bus: Redis at %s:%d refused user %s on the %s connection: %s", b->host, b->port,
                  b->user, l->name, r->str);
    redis_link_close(l);
    redis_link_lost(l, "AUTH refused");
}

static void redis_on_connect(const redisAsyncContext *cac, int status)
{
    redis_link *l = cac->data;
    /* hiredis hands its own context back as const; commands need it not. */
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    if (!l || l->ac != ac)
        return;
    bus_redis *b = l->b;
    if (status != REDIS_OK) {
        l->ac = NULL; /* hiredis frees it on return */
        redis_link_lost(l, cac->c.errstr);
        return;
    }
    metrics_gauge_set(M_BUS_UP, l == &b->sub, 1);
    /* First in the pipeline: whatever follows runs as our user. (Not freed
     * here if it cannot be queued: hiredis still uses the context after this
     * callback; the commands after it fail the same way and the link with them.) */
    if (b->user &&
        redisAsyncCommand(ac, redis_on_auth, l, "AUTH %s %s", b->user, b->pass) != REDIS_OK)
        log_warn("bus: cannot send AUTH on the %s connection to Redis at %s:%d", l->name, b->host,
                 b->port);
    if (l == &b->sub) {
        if (redisAsyncCommand(ac, redis_on_message, b, "SUBSCRIBE %s", b->channel) != REDIS_OK)
            log_warn("bus: cannot subscribe to %s", b->channel);
        return;
    }
    b->sent = b->acked = b->acked_at_tick = 0;
    b->stall_ticks = 0;
    l->up = 1;
    /* The alive key first: a field with our epoch must never exist while
     * the key does not say the epoch is alive. */
    redis_cmd(b, redis_on_alive, "SET %s %s PX %d GET", b->alive_key, b->epoch, REDIS_ALIVE_TTL_MS);
    redis_rewrite(b);
}

static void redis_on_disconnect(const redisAsyncContext *cac, int status)
{
    redis_link *l = cac->data;
    if (!l || l->ac != cac)
        return; /* dropped by us */
    l->ac = NULL;
    redis_link_lost(l, cac->c.errstr);
}

static void redis_link_connect(redis_link *l)
{
    bus_redis *b = l->b;
    redisAsyncContext *ac = redisAsyncConnect(b->host, b->port);
    if (!ac) {
        redis_link_lost(l, "out of memory");
        return;
    }
    if (ac->err) {
        char why[128];
        snprintf(why, sizeof(why), "%s", ac->c.errstr);
        redisAsyncFree(ac);
        redis_link_lost(l, why);
        return;
    }
    redisEnableKeepAlive(&ac->c);
    ac->data = l;
    l->ac = ac;
    /* The adapter must be attached before the callbacks are set. */
    redisLibeventAttach(ac, b->evb);
    redisAsyncSetConnectCallback(ac, redis_on_connect);
    redisAsyncSetDisconnectCallback(ac, redis_on_disconnect);
}

static void redis_on_retry(evutil_socket_t fd, short what, void *arg)
{
    redis_link_connect(arg);
}

static int redis_grow_ents(bus_redis *b)
{
    size_t ncap = b->ents_cap ? b->ents_cap * 2 : 64;
    redis_entry *ne = realloc(b->ents, ncap * sizeof(*ne));
    if (!ne)
        return -1;
    b->ents = ne;
    b->ents_cap = ncap;
    return 0;
}

static void redis_apply(bus_redis *b, uint64_t user, int delta)
{
    size_t pos = (uintptr_t)u64map_get(b->index, user);
    redis_entry *e;
    if (pos) {
        e = &b->ents[pos - 1];
    } else {
        if (delta < 0)
            return; /* nothing counted, nothing to take back */
        if ((b->nents == b->ents_cap && redis_grow_ents(b) < 0) ||
            u64map_put(b->index, user, (void *)(uintptr_t)(b->nents + 1)) < 0) {
            log_error("bus: out of memory for the presence of user %" PRIu64, user);
            return;
        }
        e = &b->ents[b->nents++];
        e->user = user;
        e->count = 0;
        b->ntombs++;
    }
    if (delta > 0) {
        if (e->count++ == 0)
            b->ntombs--;
    } else {
        if (e->count == 0)
            return;
        if (--e->count == 0)
            b->ntombs++;
    }
    e->tomb = REDIS_TOMB_UNSENT;
    /* While the link is down only the table changes: the rewrite on
     * reconnect carries it. */
    if (b->cmd.up)
        redis_write_entry(b, e);
}

/* Forgets the entries at zero whose HDEL Redis has answered. */
static void redis_sweep(bus_redis *b)
{
    for (size_t i = b->nents; i-- > 0;) {
        redis_entry *e = &b->ents[i];
        if (e->count || e->tomb == REDIS_TOMB_UNSENT || e->tomb > b->acked)
            continue;
        u64map_del(b->index, e->user);
        b->ntombs--;
        b->nents--;
        if (i != b->nents) {
            b->ents[i] = b->ents[b->nents];
            u64map_put(b->index, b->ents[i].user, (void *)(uintptr_t)(i + 1));
        }
    }
}

static void redis_stop(bus_redis *b)
{
    redis_link_close(&b->cmd);
    redis_link_close(&b->sub);
    event_del(b->tick);
    event_base_loopbreak(b->evb);
}

static void redis_on_notify(evutil_socket_t fd, short what, void *arg)
{
    bus_redis *b = arg;
    pthread_mutex_lock(&b->lock);
    redis_op *ops = b->ops;
    size_t n = b->nops, cap = b->ops_cap;
    b->ops = b->spare;
    b->ops_cap = b->spare_cap;
    b->nops = 0;
    int stop = b->stopping;
    pthread_mutex_unlock(&b->lock);
    for (size_t i = 0; i < n; i++)
        redis_apply(b, ops[i].user, ops[i].delta);
    b->spare = ops;
    b->spare_cap = cap;
    if (stop)
        redis_stop(b);
}

static void redis_on_tick(evutil_socket_t fd, short what, void *arg)
{
    bus_redis *b = arg;
    if (!b->cmd.up)
        return;
    /* A link that takes commands but never answers (a half-open TCP
     * connection) would otherwise keep us from reconnecting. */
    if (b->sent > b->acked && b->acked == b->acked_at_tick) {
        if (++b->stall_ticks >= REDIS_STALL_TICKS) {
            log_warn("bus: Redis at %s:%d stopped answering; reconnecting", b->host, b->port);
            b->cmd.failing = b->sub.failing = 1;
            redis_link_close(&b->cmd);
            redis_link_close(&b->sub);
            redis_link_lost(&b->cmd, "no answer");
            redis_link_lost(&b->sub, "no answer");
            return;
        }
    } else {
        b->stall_ticks = 0;
    }
    b->acked_at_tick = b->acked;
    redis_cmd(b, redis_on_alive, "SET %s %s PX %d GET", b->alive_key, b->epoch, REDIS_ALIVE_TTL_MS);
    if (b->ntombs)
        redis_sweep(b);
}

static void *redis_thread(void *arg)
{
    bus_redis *b = arg;
    redis_link_connect(&b->cmd);
    redis_link_connect(&b->sub);
    event_base_dispatch(b->evb);
    return NULL;
}

/* ---- the interface ---- */

static int redis_queue(bus_redis *b, uint64_t user, uint32_t gateway, int delta)
{
    if (!b->gw || gateway != b->gw || user == 0)
        return -1;
    pthread_mutex_lock(&b->lock);
    if (b->nops == b->ops_cap) {
        size_t ncap = b->ops_cap ? b->ops_cap * 2 : 64;
        redis_op *no = realloc(b->ops, ncap * sizeof(*no));
        if (!no) {
            pthread_mutex_unlock(&b->lock);
            return -1;
        }
        b->ops = no;
        b->ops_cap = ncap;
    }
    b->ops[b->nops++] = (redis_op){.user = user, .delta = delta};
    /* One wake-up per batch: the thread takes the whole queue at once. */
    int wake = b->nops == 1;
    pthread_mutex_unlock(&b->lock);
    if (wake)
        event_active(b->notify, EV_READ, 0);
    return 0;
}

static int redis_presence_add(bus *base, uint64_t user, uint32_t gateway)
{
    return redis_queue((bus_redis *)base, user, gateway, 1);
}

static int redis_presence_remove(bus *base, uint64_t user, uint32_t gateway)
{
    return redis_queue((bus_redis *)base, user, gateway, -1);
}

static void redis_subscribe(bus *base, uint32_t gateway, const bus_handler *h)
{
    bus_redis *b = (bus_redis *)base;
    if (gateway != b->gw)
        log_error("bus: gateway %" PRIu32 " subscribes on the bus of gateway %" PRIu32, gateway,
                  b->gw);
    pthread_mutex_lock(&b->lock);
    b->h = *h;
    pthread_mutex_unlock(&b->lock);
}

/* On a clean stop, tells the cluster at once that this gateway is gone
 * rather than let its alive key expire. */
static void redis_unregister(bus_redis *b)
{
    redisContext *c = redis_pool_take(b);
    if (!c)
        return;
    int failed = 1;
    size_t pending = 0;
    const char *argv[] = {"EVAL", redis_unregister_lua, "1", b->alive_key, b->epoch};
    size_t argvlen[] = {4, sizeof(redis_unregister_lua) - 1, 1, strlen(b->alive_key),
                        REDIS_EPOCH_LEN};
    if (redisAppendCommandArgv(c, 5, argv, argvlen) != REDIS_OK)
        goto out;
    pending++;
    for (size_t i = 0; i < b->nents; i++) {
        char key[48];
        redis_presence_key(key, sizeof(key), b->ents[i].user);
        if (redisAppendCommand(c, "HDEL %s %s", key, b->field) != REDIS_OK)
            goto out;
        pending++;
    }
    failed = 0;
out:
    if (redis_skip(c, pending) < 0)
        failed = 1;
    if (failed)
        log_warn("bus: could not unregister gateway %" PRIu32 " from Redis at %s:%d", b->gw,
                 b->host, b->port);
    redis_pool_give(b, c, failed);
}

static void redis_destroy(bus_redis *b)
{
    if (b->cmd.retry)
        event_free(b->cmd.retry);
    if (b->sub.retry)
        event_free(b->sub.retry);
    if (b->notify)
        event_free(b->notify);
    if (b->tick)
        event_free(b->tick);
    if (b->evb)
        event_base_free(b->evb);
    for (size_t i = 0; i < b->npool; i++)
        redisFree(b->pool[i]);
    free(b->pool);
    free(b->ops);
    free(b->spare);
    free(b->ents);
    u64map_free(b->index);
    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->lock);
    pthread_mutex_destroy(&b->pool_lock);
    if (b->pass)
        sodium_memzero(b->pass, strlen(b->pass));
    free(b->user);
    free(b->pass);
    sodium_memzero(b->key, sizeof(b->key));
    free(b->host);
    free(b);
}

static void redis_free(bus *base)
{
    bus_redis *b = (bus_redis *)base;
    if (b->thread_started) {
        pthread_mutex_lock(&b->lock);
        b->stopping = 1;
        pthread_mutex_unlock(&b->lock);
        event_active(b->notify, EV_READ, 0);
        pthread_join(b->thread, NULL);
        redis_unregister(b);
    }
    redis_destroy(b);
}

/* Every gateway subscribed to its channel gets, MAC'd like any push, one
 * push BUS_DRAIN for user 0 whose frame is the name (PUBSUB CHANNELS: the
 * one command this adds to the Redis user's ACL). */
static long redis_drain(bus *base, const char *name)
{
    bus_redis *b = (bus_redis *)base;
    size_t nlen = strlen(name), head = b->keyed ? REDIS_MAC_LEN : 0;
    long sent = 0;
    int failed = 1;
    redis_buf msg = {0};
    redisContext *c = redis_pool_take(b);
    if (!c)
        return 0;
    uint8_t *p = redis_buf_grow(&msg, head + REDIS_PUSH_HDR + 8 + nlen);
    if (!p)
        goto out;
    redis_put_le32(p + head, 1);
    redis_put_le32(p + head + 4, (uint32_t)nlen);
    redis_put_le64(p + head + 8, BUS_DRAIN);
    redis_put_le64(p + head + REDIS_PUSH_HDR, 0);
    memcpy(p + head + REDIS_PUSH_HDR + 8, name, nlen);
    /* The live gateways: each is subscribed to its own channel. */
    redisReply *r = redisCommand(c, "PUBSUB CHANNELS parley:gw:*");
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        log_warn("bus: cannot list the gateways' channels for a drain: %s",
                 r && r->type == REDIS_REPLY_ERROR ? r->str : "no reply");
        if (r)
            freeReplyObject(r);
        goto out;
    }
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *k = r->element[i];
        unsigned long id;
        char tail;
        if (k->type != REDIS_REPLY_STRING || sscanf(k->str, "parley:gw:%lu%c", &id, &tail) != 1 ||
            id == 0 || id > UINT32_MAX)
            continue;
        char channel[32];
        snprintf(channel, sizeof(channel), "parley:gw:%lu", id);
        if (b->keyed)
            redis_mac(b, channel, msg.p + REDIS_MAC_LEN, msg.len - REDIS_MAC_LEN, msg.p);
        redisReply *pr = redisCommand(c, "PUBLISH %s %b", channel, msg.p, msg.len);
        if (pr && pr->type == REDIS_REPLY_INTEGER)
            sent += pr->integer > 0;
        if (pr)
            freeReplyObject(pr);
    }
    freeReplyObject(r);
    failed = 0;
out:
    redis_pool_give(b, c, failed);
    free(msg.p);
    return sent;
}

static const bus_ops redis_ops = {
    .presence_add = redis_presence_add,
    .presence_remove = redis_presence_remove,
    .presence_count = redis_presence_count,
    .publish = redis_publish,
    .subscribe = redis_subscribe,
    .free = redis_free,
    .drain = redis_drain,
};

static void redis_new_epoch(char *out)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
        /* Unique enough to tell a restarted gateway from its past life. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r = ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 16);
    }
    snprintf(out, REDIS_EPOCH_LEN + 1, "%016" PRIx64, r);
}

/* One command during the probe: its reply, or NULL with the reason. */
static redisReply *redis_probe_cmd(redisContext *c, const char *cmd, char *why, size_t whylen)
{
    redisReply *r = redisCommand(c, cmd);
    if (!r) {
        snprintf(why, whylen, "%s", c->errstr[0] ? c->errstr : "no answer");
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(why, whylen, "%s", r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* Checks Redis answers, so that a wrong address fails at start; a gateway
 * also needs SET ... GET (Redis 6.2) for its alive key. */
static redisContext *redis_probe(const bus_redis *b, int gateway, char *why, size_t whylen)
{
    redisContext *c = redis_connect_sync(b->host, b->port, b->user, b->pass, why, whylen);
    if (!c)
        return NULL;
    redisReply *r = redis_probe_cmd(c, "PING", why, whylen);
    if (!r)
        goto fail;
    freeReplyObject(r);
    if (!gateway)
        return c;
    r = redis_probe_cmd(c, "INFO server", why, whylen);
    if (!r)
        goto fail;
    const char *v = r->type == REDIS_REPLY_STRING ? strstr(r->str, "redis_version:") : NULL;
    unsigned major = 0, minor = 0;
    if (v && sscanf(v + 14, "%u.%u", &major, &minor) == 2 &&
        (major < 6 || (major == 6 && minor < 2))) {
        snprintf(why, whylen, "Redis %u.%u is too old (6.2 or later needed)", major, minor);
        freeReplyObject(r);
        goto fail;
    }
    freeReplyObject(r);
    return c;
fail:
    redisFree(c);
    return NULL;
}

static int redis_start_thread(bus_redis *b, char *why, size_t whylen)
{
    redis_new_epoch(b->epoch);
    snprintf(b->field, sizeof(b->field), "%" PRIu32 ":%s", b->gw, b->epoch);
    redis_alive_key(b->alive_key, sizeof(b->alive_key), b->gw);
    snprintf(b->channel, sizeof(b->channel), "parley:gw:%" PRIu32, b->gw);
    b->cmd = (redis_link){.b = b, .name = "command"};
    b->sub = (redis_link){.b = b, .name = "subscriber"};
    b->index = u64map_new();
    b->evb = event_base_new();
    if (!b->index || !b->evb)
        goto oom;
    b->notify = event_new(b->evb, -1, 0, redis_on_notify, b);
    b->tick = event_new(b->evb, -1, EV_PERSIST, redis_on_tick, b);
    b->cmd.retry = evtimer_new(b->evb, redis_on_retry, &b->cmd);
    b->sub.retry = evtimer_new(b->evb, redis_on_retry, &b->sub);
    if (!b->notify || !b->tick || !b->cmd.retry || !b->sub.retry)
        goto oom;
    struct timeval tv = {REDIS_TICK_MS / 1000, (REDIS_TICK_MS % 1000) * 1000};
    event_add(b->tick, &tv);
    int rc = pthread_create(&b->thread, NULL, redis_thread, b);
    if (rc) {
        snprintf(why, whylen, "cannot start the bus thread: %s", strerror(rc));
        return -1;
    }
    pthread_setname_np(b->thread, "bus-redis");
    b->thread_started = 1;
    return 0;
oom:
    snprintf(why, whylen, "out of memory");
    return -1;
}

/* Waits (a little) for the gateway to be registered and subscribed, so
 * that pushes reach it as soon as the caller goes on. */
static void redis_wait_ready(bus_redis *b)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += REDIS_READY_WAIT_MS / 1000;
    until.tv_nsec += (long)(REDIS_READY_WAIT_MS % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&b->lock);
    int rc = 0;
    while (!b->ready && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&b->cond, &b->lock, &until);
    int ready = b->ready;
    pthread_mutex_unlock(&b->lock);
    if (!ready)
        log_warn("bus: gateway %" PRIu32 " not yet registered with Redis at %s:%d; retrying "
                 "in the background",
                 b->gw, b->host, b->port);
}

bus *bus_redis_new(const char *host, int port, uint32_t gateway_id, char *err, size_t errlen)
{
    return bus_redis_new_secure(host, port, gateway_id, NULL, err, errlen);
}

/* Takes the secrets into b. 0, or -1 with the reason in why. */
static int redis_take_secrets(bus_redis *b, const bus_redis_secrets *sec, char *why, size_t whylen)
{
    if (!sec)
        return 0;
    if (sec->auth && sec->auth[0]) {
        const char *colon = strchr(sec->auth, ':');
        if (!colon || colon == sec->auth || !colon[1]) {
            snprintf(why, whylen, "credentials must be USER:PASS");
            return -1;
        }
        b->user = strndup(sec->auth, (size_t)(colon - sec->auth));
        b->pass = strdup(colon + 1);
        if (!b->user || !b->pass) {
            snprintf(why, whylen, "out of memory");
            return -1;
        }
    }
    if (sec->key) {
        if (sodium_init() < 0) {
            snprintf(why, whylen, "libsodium cannot start");
            return -1;
        }
        memcpy(b->key, sec->key, sizeof(b->key));
        b->keyed = 1;
    }
    return 0;
}

bus *bus_redis_new_secure(const char *host, int port, uint32_t gateway_id,
                          const bus_redis_secrets *sec, char *err, size_t errlen)
{
    char why[160] = "";
    int reached = 0;
    redisContext *c = NULL;
    bus_redis *b = calloc(1, sizeof(*b));
    if (!b || !(b->host = strdup(host))) {
        snprintf(why, sizeof(why), "out of memory");
        goto fail;
    }
    b->base.ops = &redis_ops;
    b->port = port;
    b->gw = gateway_id;
    pthread_mutex_init(&b->pool_lock, NULL);
    pthread_mutex_init(&b->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (redis_take_secrets(b, sec, why, sizeof(why)) < 0)
        goto fail;

    c = redis_probe(b, gateway_id != 0, why, sizeof(why));
    if (!c)
        goto fail;
    redis_pool_give(b, c, 0);
    reached = 1;
    /* Without a gateway there is nothing to register or listen to: only
     * the caller-thread side is needed. */
    if (gateway_id && redis_start_thread(b, why, sizeof(why)) < 0)
        goto fail;
    if (gateway_id)
        redis_wait_ready(b);
    return &b->base;
fail:
    if (err && errlen && reached)
        snprintf(err, errlen, "Redis bus at %s:%d: %s", host, port, why);
    else if (err && errlen)
        snprintf(err, errlen, "cannot reach Redis at %s:%d: %s", host, port, why);
    if (b && b->host)
        redis_destroy(b);
    else
        free(b);
    return NULL;
}

/* Test hook (not in bus.h): messages this gateway's bus dropped for a
 * missing or wrong MAC. Any thread. */
uint64_t bus_redis_bad_macs(bus *base)
{
    return __atomic_load_n(&((bus_redis *)base)->bad_macs, __ATOMIC_RELAXED);
}
