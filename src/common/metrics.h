/*
 * metrics: the process's counters, gauges and histograms, rendered in the
 * Prometheus text format (0.0.4) for the admin port's /metrics.
 *
 * Every metric is declared once, in the table in metrics.c (names,
 * help, labels), and used by its id from the code it measures. A label is
 * a small fixed set of values addressed by index (an enum the caller
 * already has: a transport, an error code, a request's field number); an
 * index past the set counts as its last value.
 *
 * Cost on the hot path: counters and histograms live in per-thread shards
 * (one writer each, relaxed atomics, no lock, no shared cache line); a
 * scrape sums the shards. Gauges are one shared relaxed atomic each and are
 * meant for things that change per connection or per state, not per
 * message.
 *
 * Thread-safe: every function may be called from any thread.
 */
#ifndef PARLEY_METRICS_H
#define PARLEY_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef enum metrics_id {
    /* counters */
    M_LOGINS,           /* label: 0 ok, 1 failed */
    M_REGISTRATIONS,    /* no label */
    M_REQUESTS,         /* labels: ClientFrame field number, ErrorCode (0: ok) */
    M_MESSAGES_STORED,  /* no label */
    M_DELIVERIES,       /* label: 0 push, 1 catch-up */
    M_ACKS,             /* no label */
    M_LIMIT_HITS,       /* label: the gateway's limiter kind */
    M_RPC_CLIENT_CALLS, /* labels: metrics_rpc_method(), metrics_rpc_status */
    M_RPC_SERVER_CALLS, /* labels: metrics_rpc_method(), metrics_rpc_status */
    M_BUS_PUBLISHES,    /* no label: pushes published */
    M_BUS_RECONNECTS,   /* no label: Redis connections lost */
    /* histograms: values in microseconds (_seconds) or plain counts */
    M_RPC_CLIENT_SECONDS, /* label: metrics_rpc_method() */
    M_RPC_SERVER_SECONDS, /* label: metrics_rpc_method() */
    M_STORE_COMMIT_SECONDS,
    M_STORE_APPEND_BATCH,   /* messages per append call */
    M_STORE_APPEND_SECONDS, /* a batched append statement (MariaDB) */
    M_BUS_PUBLISH_SECONDS,
    /* gauges */
    M_CONNECTIONS,      /* label: 0 tcp, 1 tls */
    M_SESSIONS,         /* logged-in connections; label: as M_CONNECTIONS */
    M_CATCHUP_SESSIONS, /* sessions with a catch-up under way */
    M_POOL_QUEUE,       /* label: metrics_pool_label(); set by callbacks */
    M_REGISTRY_UP,      /* 1 while the ZooKeeper session is connected */
    M_REGISTRY_NODES,   /* label: metrics_service_label() */
    M_BUS_UP,           /* label: 0 command, 1 subscriber link; 2 publishers' last try */
    M_STORE_LOST,       /* 1 from a commit that lost its connection to one that worked */
    M_COUNT
} metrics_id;

/* RPC outcomes, for the status label. */
typedef enum metrics_rpc_status {
    METRICS_RPC_OK = 0,
    METRICS_RPC_ERROR,       /* failed there, or the reply was malformed */
    METRICS_RPC_TIMEOUT,     /* the deadline passed */
    METRICS_RPC_UNAVAILABLE, /* no node to send it to */
} metrics_rpc_status;

/* Stops counters and histograms (and metrics_now_us reads no clock): what
 * `parleyd --no-metrics` does, so that the bench can measure their cost.
 * Gauges go on: readiness is read from them. Call before any thread counts. */
void metrics_disable(void);

/* Counters: adds n to the series of label indexes (l1, l2). */
void metrics_add(metrics_id id, unsigned l1, unsigned l2, uint64_t n);
static inline void metrics_inc(metrics_id id, unsigned l1)
{
    metrics_add(id, l1, 0, 1);
}
/* Histograms: one observation of v (microseconds for a _seconds metric). */
void metrics_observe(metrics_id id, unsigned l1, uint64_t v);
/* A _seconds histogram: the time since start_us (metrics_now_us()). */
void metrics_since(metrics_id id, unsigned l1, uint64_t start_us);
/* Gauges. */
void metrics_gauge_add(metrics_id id, unsigned l1, int64_t delta);
void metrics_gauge_set(metrics_id id, unsigned l1, int64_t v);
int64_t metrics_gauge_get(metrics_id id, unsigned l1);

/* A gauge read at each scrape: fn(arg) is added to the series l1 of id
 * (several sources may share one series). fn runs on the scraping thread
 * and must not block. Unregister before arg goes. 0 or -1 (OOM). */
int metrics_gauge_fn(metrics_id id, unsigned l1, int64_t (*fn)(void *arg), void *arg);
void metrics_gauge_fn_remove(void *arg);

/* One RPC call ended (client side, or served): counted by outcome, and
 * timed from start_us. method is metrics_rpc_method()'s. */
void metrics_rpc_done(int server, unsigned method, metrics_rpc_status st, uint64_t start_us);

/* Microseconds on a monotonic clock. */
uint64_t metrics_now_us(void);

/* Label indexes for names the callers hold. */
unsigned metrics_rpc_method(const char *service, unsigned method); /* "parley.UserService" */
unsigned metrics_pool_label(const char *pool);                     /* "store", "auth" */
unsigned metrics_service_label(const char *service);               /* "user", "gateway" */

/* The whole exposition, NUL-terminated, in *out (malloc'd: free it) with
 * its length in *len. 0, or -1 on OOM. */
int metrics_render(char **out, size_t *len);

#endif
