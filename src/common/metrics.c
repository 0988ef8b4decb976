#include "common/metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef PARLEY_VERSION
#define PARLEY_VERSION "0.1"
#endif

typedef enum { T_COUNTER, T_GAUGE, T_HISTOGRAM } metrics_type;

/* One label: its name and values by index. A NULL value is never shown (a
 * gap in an enum). With no name, each value is already `a="x",b="y"`. */
typedef struct {
    const char *name;
    const char *const *v;
    unsigned n;
} metrics_dim;

typedef struct {
    const char *name, *help;
    metrics_type type;
    metrics_dim d1, d2;
    const uint64_t *bounds; /* histograms: upper bounds, in the unit observed */
    unsigned nb;
    int micros; /* histogram of microseconds, shown in seconds */
} metrics_def;

#define DIM(label, values)                                                                         \
    {                                                                                              \
        label, values, sizeof(values) / sizeof(values[0])                                          \
    }
#define NODIM                                                                                      \
    {                                                                                              \
        NULL, NULL, 0                                                                              \
    }

/* ClientFrame's body fields by number (proto/parley.proto). */
static const char *const m_types[] = {
    [10] = "hello",      [11] = "ping",         [12] = "ack",          [20] = "register",
    [21] = "login",      [22] = "resume",       [23] = "logout",       [30] = "friend_add",
    [31] = "friend_del", [32] = "friend_list",  [40] = "group_create", [41] = "group_join",
    [42] = "group_quit", [43] = "group_delete", [50] = "send_direct",  [51] = "send_group",
    [52] = "history",    [53] = "recall",       [54] = "other",
};
/* ErrorCode by number; 0 is success. */
static const char *const m_results[] = {
    "ok",       "bad_request", "unauthenticated", "forbidden", "not_found",
    "conflict", "too_large",   "unsupported",     "internal",  "unavailable",
    "expired",  "busy",        "other",
};
static const char *const m_login_results[] = {"ok", "failed"};
static const char *const m_paths[] = {"push", "catchup"};
/* The gateway's limiter kinds (LIM_* in gateway.c). */
static const char *const m_limits[] = {
    NULL,
    "connections",
    "registrations",
    "failed_logins_address",
    "failed_logins_account",
    "messages",
    "login_queue",
    "requests",
    "history",
    "other",
};
static const char *const m_transports[] = {"tcp", "tls"};
static const char *const m_links[] = {"command", "subscriber", "publisher"};
static const char *const m_pools[] = {"store", "auth", "file", "other"};
static const char *const m_services[] = {"gateway", "user", "social", "message", "other"};
static const char *const m_rpc_status[] = {"ok", "error", "timeout", "unavailable"};

/* Services and their methods as declared in proto/services.proto; index
 * service * 16 + method. */
enum { RPC_METHODS_MAX = 16, RPC_SERVICES = 3 };
static const char *const m_rpc_services[RPC_SERVICES] = {
    "parley.UserService", "parley.SocialService", "parley.MessageService"};
#define RPC(s, m) "service=\"" s "\",method=\"" m "\""
static const char *const m_rpc_methods[RPC_SERVICES * RPC_METHODS_MAX + 1] = {
    [0] = RPC("user", "CreateAccount"),  [1] = RPC("user", "Login"),
    [2] = RPC("user", "Resume"),         [3] = RPC("user", "Logout"),
    [16] = RPC("social", "FriendAdd"),   [17] = RPC("social", "FriendDel"),
    [18] = RPC("social", "FriendList"),  [19] = RPC("social", "GroupCreate"),
    [20] = RPC("social", "GroupJoin"),   [21] = RPC("social", "GroupQuit"),
    [22] = RPC("social", "GroupDelete"), [23] = RPC("social", "Whois"),
    [24] = RPC("social", "Find"),        [25] = RPC("social", "Typing"),
    [32] = RPC("message", "SendDirect"), [33] = RPC("message", "SendGroup"),
    [34] = RPC("message", "History"),    [35] = RPC("message", "Recall"),
    [36] = RPC("message", "Ack"),        [37] = RPC("message", "Sync"),
    [38] = RPC("message", "FileBegin"),  [39] = RPC("message", "FileChunk"),
    [40] = RPC("message", "FileGet"),    [41] = RPC("message", "Read"),
    [48] = RPC("other", "other"),
};

/* 100 us to 5 s. */
static const uint64_t m_latency[] = {100,   250,    500,    1000,   2500,    5000,    10000,  25000,
                                     50000, 100000, 250000, 500000, 1000000, 2500000, 5000000};
static const uint64_t m_sizes[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};

#define LATENCY m_latency, sizeof(m_latency) / sizeof(m_latency[0]), 1
#define SIZES   m_sizes, sizeof(m_sizes) / sizeof(m_sizes[0]), 0

static const metrics_def m_defs[M_COUNT] = {
    [M_LOGINS] = {"parley_logins_total", "Logins and resumes answered, by result", T_COUNTER,
                  DIM("result", m_login_results), NODIM},
    [M_REGISTRATIONS] = {"parley_registrations_total", "Accounts registered", T_COUNTER, NODIM,
                         NODIM},
    [M_REQUESTS] = {"parley_requests_total",
                    "Client requests answered by a service, by type and result", T_COUNTER,
                    DIM("type", m_types), DIM("result", m_results)},
    [M_MESSAGES_STORED] = {"parley_messages_stored_total",
                           "Messages appended to the store (a retried transaction counts again)",
                           T_COUNTER, NODIM, NODIM},
    [M_DELIVERIES] = {"parley_deliveries_total",
                      "Messages written to client sessions, pushed live or by a catch-up",
                      T_COUNTER, DIM("path", m_paths), NODIM},
    [M_ACKS] = {"parley_acks_total", "Acknowledgements received from clients", T_COUNTER, NODIM,
                NODIM},
    [M_LIMIT_HITS] = {"parley_limit_hits_total", "Requests or connections refused by a limit",
                      T_COUNTER, DIM("limit", m_limits), NODIM},
    [M_RPC_CLIENT_CALLS] = {"parley_rpc_client_calls_total",
                            "RPC calls made to service nodes, by outcome", T_COUNTER,
                            DIM(NULL, m_rpc_methods), DIM("status", m_rpc_status)},
    [M_RPC_SERVER_CALLS] = {"parley_rpc_server_calls_total",
                            "RPC calls served for gateways, by outcome", T_COUNTER,
                            DIM(NULL, m_rpc_methods), DIM("status", m_rpc_status)},
    [M_BUS_PUBLISHES] = {"parley_bus_publishes_total", "Pushes published on the bus", T_COUNTER,
                         NODIM, NODIM},
    [M_BUS_RECONNECTS] = {"parley_bus_reconnects_total",
                          "Connections to Redis lost (each is then reopened)", T_COUNTER, NODIM,
                          NODIM},
    [M_RPC_CLIENT_SECONDS] = {"parley_rpc_client_duration_seconds",
                              "Time from an RPC call to its answer, retries included", T_HISTOGRAM,
                              DIM(NULL, m_rpc_methods), NODIM, LATENCY},
    [M_RPC_SERVER_SECONDS] = {"parley_rpc_server_duration_seconds",
                              "Time from an RPC request's arrival to its result, queueing included",
                              T_HISTOGRAM, DIM(NULL, m_rpc_methods), NODIM, LATENCY},
    [M_STORE_COMMIT_SECONDS] = {"parley_store_commit_duration_seconds",
                                "Time a store transaction takes to commit", T_HISTOGRAM, NODIM,
                                NODIM, LATENCY},
    [M_STORE_APPEND_BATCH] = {"parley_store_append_batch_size",
                              "Messages appended to the store together", T_HISTOGRAM, NODIM, NODIM,
                              SIZES},
    [M_STORE_APPEND_SECONDS] = {"parley_store_append_duration_seconds",
                                "Time one batched append statement takes (MariaDB)", T_HISTOGRAM,
                                NODIM, NODIM, LATENCY},
    [M_BUS_PUBLISH_SECONDS] = {"parley_bus_publish_duration_seconds",
                               "Time a batch of pushes takes to publish", T_HISTOGRAM, NODIM, NODIM,
                               LATENCY},
    [M_CONNECTIONS] = {"parley_connections", "Open client connections, by transport", T_GAUGE,
                       DIM("transport", m_transports), NODIM},
    [M_SESSIONS] = {"parley_sessions", "Logged-in client connections, by transport", T_GAUGE,
                    DIM("transport", m_transports), NODIM},
    [M_CATCHUP_SESSIONS] = {"parley_catchup_sessions",
                            "Sessions being sent what they missed (catch-up backlog)", T_GAUGE,
                            NODIM, NODIM},
    [M_POOL_QUEUE] = {"parley_pool_queue_depth",
                      "Tasks queued or running in a worker pool, by pool", T_GAUGE,
                      DIM("pool", m_pools), NODIM},
    [M_REGISTRY_UP] = {"parley_registry_connected", "1 while connected to ZooKeeper", T_GAUGE,
                       NODIM, NODIM},
    [M_REGISTRY_NODES] = {"parley_registry_nodes",
                          "Providers of each watched service seen in the registry", T_GAUGE,
                          DIM("service", m_services), NODIM},
    [M_BUS_UP] = {"parley_bus_connected", "1 while the link to Redis is up, by link", T_GAUGE,
                  DIM("link", m_links), NODIM},
    [M_STORE_LOST] = {"parley_store_connection_lost",
                      "1 from a commit that lost the database connection to one that worked",
                      T_GAUGE, NODIM, NODIM},
};

/* A thread's counters: written by that thread only, read by scrapes. */
typedef struct shard {
    struct shard *next;
    int idle; /* its thread ended: the next new thread adopts it */
    uint64_t v[];
} shard;

typedef struct gauge_fn {
    struct gauge_fn *next;
    metrics_id id;
    unsigned l1;
    int64_t (*fn)(void *arg);
    void *arg;
} gauge_fn;

static pthread_once_t m_once = PTHREAD_ONCE_INIT;
static pthread_key_t m_key;
static pthread_mutex_t m_lock = PTHREAD_MUTEX_INITIALIZER; /* shards, fns */
static unsigned m_base[M_COUNT], m_nslots;                 /* shard slots, or gauge slots */
static int64_t *m_gauges;
static shard *m_shards;
static gauge_fn *m_fns;
static __thread shard *m_mine;
static double m_start_time;

__attribute__((constructor)) static void metrics_note_start(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    m_start_time = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned dim_n(const metrics_dim *d)
{
    return d->n ? d->n : 1;
}

static unsigned metrics_slots(const metrics_def *d)
{
    if (d->type == T_HISTOGRAM)
        return dim_n(&d->d1) * (d->nb + 3); /* buckets, +Inf, sum, count */
    return dim_n(&d->d1) * dim_n(&d->d2);
}

static void metrics_shard_gone(void *p)
{
    pthread_mutex_lock(&m_lock);
    ((shard *)p)->idle = 1;
    pthread_mutex_unlock(&m_lock);
}

static void metrics_layout(void)
{
    unsigned gauges = 0;
    for (int i = 0; i < M_COUNT; i++) {
        const metrics_def *d = &m_defs[i];
        if (d->type == T_GAUGE) {
            m_base[i] = gauges;
            gauges += metrics_slots(d);
        } else {
            m_base[i] = m_nslots;
            m_nslots += metrics_slots(d);
        }
    }
    m_gauges = calloc(gauges, sizeof(*m_gauges));
    if (!m_gauges || pthread_key_create(&m_key, metrics_shard_gone) != 0)
        abort();
}

/* The calling thread's shard, made (or adopted) on its first use. */
static shard *metrics_shard(void)
{
    shard *s = m_mine;
    if (s)
        return s;
    pthread_once(&m_once, metrics_layout);
    pthread_mutex_lock(&m_lock);
    for (s = m_shards; s && !s->idle; s = s->next)
        ;
    if (s) {
        s->idle = 0;
    } else {
        s = calloc(1, sizeof(*s) + m_nslots * sizeof(uint64_t));
        if (!s)
            abort();
        s->next = m_shards;
        m_shards = s;
    }
    pthread_mutex_unlock(&m_lock);
    pthread_setspecific(m_key, s);
    m_mine = s;
    return s;
}

static unsigned clamp(unsigned i, const metrics_dim *d)
{
    unsigned n = dim_n(d);
    return i < n ? i : n - 1;
}

/* One writer per shard: a plain add, made atomic only so that a scrape
 * reads whole values. */
static inline void bump(uint64_t *p, uint64_t n)
{
    __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static int m_off; /* written once, before the threads that count start */

void metrics_disable(void)
{
    m_off = 1;
}

void metrics_add(metrics_id id, unsigned l1, unsigned l2, uint64_t n)
{
    if (__builtin_expect(m_off, 0))
        return;
    const metrics_def *d = &m_defs[id];
    shard *s = metrics_shard();
    bump(&s->v[m_base[id] + clamp(l1, &d->d1) * dim_n(&d->d2) + clamp(l2, &d->d2)], n);
}

void metrics_observe(metrics_id id, unsigned l1, uint64_t v)
{
    if (__builtin_expect(m_off, 0))
        return;
    const metrics_def *d = &m_defs[id];
    shard *s = metrics_shard();
    uint64_t *h = &s->v[m_base[id] + clamp(l1, &d->d1) * (d->nb + 3)];
    unsigned b = 0;
    while (b < d->nb && v > d->bounds[b])
        b++;
    bump(&h[b], 1);
    bump(&h[d->nb + 1], v);
    bump(&h[d->nb + 2], 1);
}

uint64_t metrics_now_us(void)
{
    if (__builtin_expect(m_off, 0))
        return 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void metrics_since(metrics_id id, unsigned l1, uint64_t start_us)
{
    if (__builtin_expect(m_off, 0))
        return;
    uint64_t now = metrics_now_us();
    metrics_observe(id, l1, now > start_us ? now - start_us : 0);
}

void metrics_rpc_done(int server, unsigned method, metrics_rpc_status st, uint64_t start_us)
{
    metrics_add(server ? M_RPC_SERVER_CALLS : M_RPC_CLIENT_CALLS, method, st, 1);
    metrics_since(server ? M_RPC_SERVER_SECONDS : M_RPC_CLIENT_SECONDS, method, start_us);
}

static int64_t *gauge_slot(metrics_id id, unsigned l1)
{
    pthread_once(&m_once, metrics_layout);
    return &m_gauges[m_base[id] + clamp(l1, &m_defs[id].d1)];
}

void metrics_gauge_add(metrics_id id, unsigned l1, int64_t delta)
{
    __atomic_add_fetch(gauge_slot(id, l1), delta, __ATOMIC_RELAXED);
}

void metrics_gauge_set(metrics_id id, unsigned l1, int64_t v)
{
    __atomic_store_n(gauge_slot(id, l1), v, __ATOMIC_RELAXED);
}

int64_t metrics_gauge_get(metrics_id id, unsigned l1)
{
    return __atomic_load_n(gauge_slot(id, l1), __ATOMIC_RELAXED);
}

int metrics_gauge_fn(metrics_id id, unsigned l1, int64_t (*fn)(void *arg), void *arg)
{
    gauge_fn *g = malloc(sizeof(*g));
    if (!g)
        return -1;
    *g = (gauge_fn){.id = id, .l1 = l1, .fn = fn, .arg = arg};
    pthread_mutex_lock(&m_lock);
    g->next = m_fns;
    m_fns = g;
    pthread_mutex_unlock(&m_lock);
    return 0;
}

void metrics_gauge_fn_remove(void *arg)
{
    pthread_mutex_lock(&m_lock);
    for (gauge_fn **pp = &m_fns; *pp;) {
        gauge_fn *g = *pp;
        if (g->arg == arg) {
            *pp = g->next;
            free(g);
        } else {
            pp = &g->next;
        }
    }
    pthread_mutex_unlock(&m_lock);
}

unsigned metrics_rpc_method(const char *service, unsigned method)
{
    for (unsigned i = 0; i < RPC_SERVICES; i++)
        if (strcmp(service, m_rpc_services[i]) == 0 && method < RPC_METHODS_MAX)
            return i * RPC_METHODS_MAX + method;
    return RPC_SERVICES * RPC_METHODS_MAX;
}

static unsigned metrics_find(const char *const *v, unsigned n, const char *name)
{
    for (unsigned i = 0; i + 1 < n; i++)
        if (v[i] && strcmp(v[i], name) == 0)
            return i;
    return n - 1;
}

unsigned metrics_pool_label(const char *pool)
{
    return metrics_find(m_pools, sizeof(m_pools) / sizeof(m_pools[0]), pool);
}

unsigned metrics_service_label(const char *service)
{
    return metrics_find(m_services, sizeof(m_services) / sizeof(m_services[0]), service);
}

/* ---- the exposition ---- */

/* `{a="x",b="y"` without the closing brace (or "" with no label). */
static void put_labels(FILE *f, const metrics_def *d, unsigned i1, unsigned i2, int more)
{
    const metrics_dim *dims[2] = {&d->d1, &d->d2};
    unsigned idx[2] = {i1, i2};
    int n = 0;
    for (int k = 0; k < 2; k++) {
        if (!dims[k]->n)
            continue;
        fputs(n++ ? "," : "{", f);
        if (dims[k]->name)
            fprintf(f, "%s=\"%s\"", dims[k]->name, dims[k]->v[idx[k]]);
        else
            fputs(dims[k]->v[idx[k]], f);
    }
    if (n && !more)
        fputc('}', f);
    else if (!n && more)
        fputc('{', f);
    else if (n && more)
        fputc(',', f);
}

/* v in microseconds as seconds, exactly. */
static void put_micros(FILE *f, uint64_t v)
{
    fprintf(f, "%llu.%06llu", (unsigned long long)(v / 1000000u),
            (unsigned long long)(v % 1000000u));
}

static uint64_t sum_slot(unsigned slot)
{
    uint64_t v = 0;
    for (shard *s = m_shards; s; s = s->next)
        v += __atomic_load_n(&s->v[slot], __ATOMIC_RELAXED);
    return v;
}

static void put_histogram(FILE *f, const metrics_def *d, unsigned base, unsigned i1)
{
    unsigned at = base + i1 * (d->nb + 3);
    uint64_t cum = 0;
    for (unsigned b = 0; b <= d->nb; b++) {
        cum += sum_slot(at + b);
        fprintf(f, "%s_bucket", d->name);
        put_labels(f, d, i1, 0, 1);
        fputs("le=\"", f);
        if (b == d->nb)
            fputs("+Inf", f);
        else if (d->micros)
            put_micros(f, d->bounds[b]);
        else
            fprintf(f, "%llu", (unsigned long long)d->bounds[b]);
        fprintf(f, "\"} %llu\n", (unsigned long long)cum);
    }
    fprintf(f, "%s_sum", d->name);
    put_labels(f, d, i1, 0, 0);
    fputc(' ', f);
    if (d->micros)
        put_micros(f, sum_slot(at + d->nb + 1));
    else
        fprintf(f, "%llu", (unsigned long long)sum_slot(at + d->nb + 1));
    /* The +Inf bucket's count, not the count slot: read a moment apart,
     * they could differ while observations are made. */
    fprintf(f, "\n%s_count", d->name);
    put_labels(f, d, i1, 0, 0);
    fprintf(f, " %llu\n", (unsigned long long)cum);
}

static void put_metric(FILE *f, metrics_id id)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    const metrics_def *d = &m_defs[id];
    /* Series of many label combinations (requests by type and result,
     * RPC methods) appear once they count something: hundreds of zeros
     * would say nothing. */
    int sparse = d->d2.n || (d->type == T_HISTOGRAM && d->d1.n);
    fprintf(f, "# HELP %s %s.\n# TYPE %s %s\n", d->name, d->help, d->name, types[d->type]);
    for (unsigned i1 = 0; i1 < dim_n(&d->d1); i1++) {
        if (d->d1.n && !d->d1.v[i1])
            continue;
        if (d->type == T_HISTOGRAM) {
            if (!sparse || sum_slot(m_base[id] + i1 * (d->nb + 3) + d->nb + 2))
                put_histogram(f, d, m_base[id], i1);
            continue;
        }
        for (unsigned i2 = 0; i2 < dim_n(&d->d2); i2++) {
            if (d->d2.n && !d->d2.v[i2])
                continue;
            unsigned slot = m_base[id] + i1 * dim_n(&d->d2) + i2;
            if (sparse && d->type == T_COUNTER && !sum_slot(slot))
                continue;
            fputs(d->name, f);
            put_labels(f, d, i1, i2, 0);
            if (d->type == T_GAUGE) {
                int64_t v = __atomic_load_n(&m_gauges[slot], __ATOMIC_RELAXED);
                for (gauge_fn *g = m_fns; g; g = g->next)
                    if (g->id == id && clamp(g->l1, &d->d1) == i1)
                        v += g->fn(g->arg);
                fprintf(f, " %lld\n", (long long)v);
            } else {
                fprintf(f, " %llu\n", (unsigned long long)sum_slot(slot));
            }
        }
    }
}

int metrics_render(char **out, size_t *len)
{
    pthread_once(&m_once, metrics_layout);
    *out = NULL;
    *len = 0;
    FILE *f = open_memstream(out, len);
    if (!f)
        return -1;
    fputs("# HELP parley_build_info Parley's version.\n# TYPE parley_build_info gauge\n"
          "parley_build_info{version=\"" PARLEY_VERSION "\"} 1\n",
          f);
    fprintf(f,
            "# HELP process_start_time_seconds Start time of the process since the Unix epoch.\n"
            "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.3f\n",
            m_start_time);
    pthread_mutex_lock(&m_lock);
    for (int i = 0; i < M_COUNT; i++)
        put_metric(f, (metrics_id)i);
    pthread_mutex_unlock(&m_lock);
    if (fclose(f) != 0) {
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}
