#include "rpc/client.h"

#include <errno.h>
#include <event2/event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/arena.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/u64map.h"
#include "net/conn.h"
#include "rpc.pb-c.h"
#include "rpc/ring.h"
#include "services.pb-c.h"

enum { RPC_MAX_TRIED = 8, RPC_CONNECT_TIMEOUT_MS = 2000, RPC_SWEEP_MS = 50 };

/* The frame limits of rpc/server.c, where their reasons are: a node reads
 * requests of up to 4 MiB (a call that could not fit fails here, alone,
 * rather than making the node close a connection many calls share) and
 * sends responses of up to 16 MiB (a login or friend-list reply grows with
 * the user's groups and their members). A started frame must be complete
 * within RPC_FRAME_TIMEOUT_S, or the calls behind it would all stall.
 * Idle connections are kept: they are made for calls to come, and a close
 * counts against the node's circuit breaker. */
enum {
    RPC_MAX_REQUEST = 4 << 20,
    RPC_MAX_RESPONSE = 16 << 20,
    RPC_REQUEST_ENVELOPE = 1024, /* call id, names, timeout, tags */
    RPC_FRAME_TIMEOUT_S = 10,
};

typedef struct rpc_call rpc_call;
typedef struct rpc_loop rpc_loop;

typedef struct rpc_node {
    rpc_loop *rl;
    char *name;
    char *addr;
    conn *c;         /* NULL until connected */
    int fd;          /* while connecting, else -1 */
    int connect_err; /* a failure found before connect() could start */
    struct event *connect_ev;
    rpc_call *wait_head, *wait_tail; /* calls waiting for the connection */
    unsigned outstanding;
    unsigned failures;
    int64_t open_until; /* circuit breaker: skipped until then */
} rpc_node;

struct rpc_call {
    rpc_call *prev, *next;   /* every live call of the loop */
    rpc_call *wprev, *wnext; /* a node's waiting list */
    uint64_t id;
    unsigned method;
    uint64_t key;
    uint8_t *payload;
    size_t len;
    int64_t deadline;
    rpc_node *node; /* where it waits or was sent */
    int sent;
    unsigned attempts;
    rpc_node *tried[RPC_MAX_TRIED];
    ProtobufCClosure closure;
    void *closure_data;
    uint64_t start_us; /* for the metrics */
};

struct rpc_loop {
    struct rpc_client *cl;
    loop *l;
    rpc_node **nodes;
    size_t n;
    ring *ring;
    unsigned rr;
    u64map *sent; /* call id -> call, for calls on the wire */
    /* Every call of this loop, newest first. All take the same timeout, so
     * deadlines only grow towards the head: the sweep starts at the tail and
     * stops at the first call still in time. */
    rpc_call *calls, *calls_tail;
    struct event *sweep;
    uint64_t next_id;
};

typedef struct rpc_client {
    ProtobufCService base;
    rpc_client_config cfg;
    loop **loops;
    unsigned nloops;
    rpc_loop *per;
    conn_class cls;
} rpc_client;

typedef struct {
    rpc_node *node;
} rpc_conn_ref;

static int64_t rpc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int rpc_balance_parse(const char *s, rpc_balance *out)
{
    if (strcmp(s, "round-robin") == 0)
        *out = RPC_BALANCE_ROUND_ROBIN;
    else if (strcmp(s, "least-outstanding") == 0)
        *out = RPC_BALANCE_LEAST_OUTSTANDING;
    else if (strcmp(s, "ring") == 0)
        *out = RPC_BALANCE_RING;
    else
        return -1;
    return 0;
}

static const char *rpc_service_name(const rpc_loop *rl)
{
    return rl->cl->base.descriptor->name;
}

/* ---- finishing calls ---- */

static void rpc_wait_unlink(rpc_call *call)
{
    rpc_node *n = call->node;
    if (call->wprev)
        call->wprev->wnext = call->wnext;
    else if (n && n->wait_head == call)
        n->wait_head = call->wnext;
    if (call->wnext)
        call->wnext->wprev = call->wprev;
    else if (n && n->wait_tail == call)
        n->wait_tail = call->wprev;
    call->wprev = call->wnext = NULL;
}

/* Takes the call off its node (waiting list or the wire). */
static void rpc_detach(rpc_loop *rl, rpc_call *call)
{
    if (!call->node)
        return;
    if (call->sent) {
        u64map_del(rl->sent, call->id);
        call->node->outstanding--;
    } else {
        rpc_wait_unlink(call);
    }
    call->node = NULL;
    call->sent = 0;
}

static void rpc_calls_unlink(rpc_loop *rl, rpc_call *call)
{
    if (call->prev)
        call->prev->next = call->next;
    else
        rl->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    else
        rl->calls_tail = call->prev;
    call->prev = call->next = NULL;
}

static void rpc_complete(rpc_loop *rl, rpc_call *call, const ProtobufCMessage *result)
{
    rpc_detach(rl, call);
    rpc_calls_unlink(rl, call);
    metrics_rpc_done(0, metrics_rpc_method(rpc_service_name(rl), call->method),
                     result           ? METRICS_RPC_OK
                     : call->attempts ? METRICS_RPC_ERROR
                                      : METRICS_RPC_UNAVAILABLE,
                     call->start_us);
    call->closure(result, call->closure_data);
    free(call->payload);
    free(call);
}

/* ---- choosing a node ---- */

static int rpc_tried(const rpc_call *call, const rpc_node *n)
{
    for (unsigned i = 0; i < call->attempts && i < RPC_MAX_TRIED; i++)
        if (call->tried[i] == n)
            return 1;
    return 0;
}

static int rpc_usable(const rpc_call *call, const rpc_node *n, int64_t now)
{
    return n->open_until <= now && !rpc_tried(call, n);
}

typedef struct {
    rpc_loop *rl;
    const rpc_call *call;
    int64_t now;
} rpc_skip_ctx;

static rpc_node *rpc_node_by_name(rpc_loop *rl, const char *name)
{
    for (size_t i = 0; i < rl->n; i++)
        if (strcmp(rl->nodes[i]->name, name) == 0)
            return rl->nodes[i];
    return NULL;
}

static int rpc_ring_skip(void *arg, const char *name)
{
    rpc_skip_ctx *sk = arg;
    rpc_node *n = rpc_node_by_name(sk->rl, name);
    return !n || !rpc_usable(sk->call, n, sk->now);
}

static rpc_node *rpc_pick(rpc_loop *rl, const rpc_call *call)
{
    int64_t now = rpc_now();
    if (rl->n == 0)
        return NULL;
    switch (rl->cl->cfg.balance) {
    case RPC_BALANCE_RING: {
        rpc_skip_ctx sk = {rl, call, now};
        const char *name = ring_get_if(rl->ring, call->key, rpc_ring_skip, &sk);
        return name ? rpc_node_by_name(rl, name) : NULL;
    }
    case RPC_BALANCE_LEAST_OUTSTANDING: {
        rpc_node *best = NULL;
        for (size_t i = 0; i < rl->n; i++) {
            rpc_node *n = rl->nodes[(rl->rr + i) % rl->n];
            if (rpc_usable(call, n, now) && (!best || n->outstanding < best->outstanding))
                best = n;
        }
        rl->rr++; /* ties rotate */
        return best;
    }
    case RPC_BALANCE_ROUND_ROBIN:
    default:
        for (size_t i = 0; i < rl->n; i++) {
            rpc_node *n = rl->nodes[rl->rr++ % rl->n];
            if (rpc_usable(call, n, now))
                return n;
        }
        return NULL;
    }
}

/* ---- sending ---- */

static void rpc_dispatch(rpc_loop *rl, rpc_call *call);

static void rpc_send(rpc_loop *rl, rpc_call *call)
{
    rpc_node *n = call->node;
    Parley__RpcRequest req = PARLEY__RPC_REQUEST__INIT;
    int64_t left = call->deadline - rpc_now();
    req.call_id = call->id;
    req.service = (char *)rpc_service_name(rl);
    req.method = (char *)rl->cl->base.descriptor->methods[call->method].name;
    req.timeout_ms = left > 0 ? (uint32_t)left : 1;
    req.payload.data = call->payload;
    req.payload.len = call->len;
    call->sent = 1;
    n->outstanding++;
    u64map_put(rl->sent, call->id, call);
    conn_send_msg(n->c, &req.base);
}

static void rpc_node_failed(rpc_node *n, const char *why)
{
    n->failures++;
    if (n->failures >= n->rl->cl->cfg.breaker_failures && n->open_until <= rpc_now()) {
        n->open_until = rpc_now() + n->rl->cl->cfg.breaker_open_ms;
        log_warn("%s node %s (%s): %s; skipping it for %u ms", rpc_service_name(n->rl), n->name,
                 n->addr, why, n->rl->cl->cfg.breaker_open_ms);
    }
}

/* A call's attempt failed. `executed_maybe`: it may have run on the node. */
static void rpc_retry(rpc_loop *rl, rpc_call *call, int executed_maybe, const char *why)
{
    int idempotent = (rl->cl->cfg.idempotent >> call->method) & 1;
    rpc_detach(rl, call);
    if ((executed_maybe && !idempotent) || call->attempts >= rl->cl->cfg.attempts ||
        rpc_now() >= call->deadline) {
        log_warn("%s.%s failed: %s", rpc_service_name(rl),
                 rl->cl->base.descriptor->methods[call->method].name, why);
        rpc_complete(rl, call, NULL);
        return;
    }
    rpc_dispatch(rl, call);
}

static void rpc_fail_node_calls(rpc_node *n, const char *why)
{
    rpc_loop *rl = n->rl;
    size_t count = 0, k = 0;
    for (rpc_call *call = rl->calls; call; call = call->next)
        count += call->node == n;
    if (!count)
        return;
    /* Take them all off the node first: retrying one may complete others. */
    rpc_call **calls = malloc(count * sizeof(*calls));
    int *was_sent = malloc(count * sizeof(*was_sent));
    if (!calls || !was_sent)
        abort();
    for (rpc_call *call = rl->calls; call; call = call->next) {
        if (call->node == n) {
            calls[k] = call;
            was_sent[k++] = call->sent;
        }
    }
    for (k = 0; k < count; k++)
        rpc_detach(rl, calls[k]);
    for (k = 0; k < count; k++)
        rpc_retry(rl, calls[k], was_sent[k], why);
    free(calls);
    free(was_sent);
}

/* ---- connections ---- */

static void rpc_cl_on_frame(conn *c, const uint8_t *payload, size_t len)
{
    rpc_node *n = ((rpc_conn_ref *)conn_udata(c))->node;
    if (!n)
        return;
    rpc_loop *rl = n->rl;
    arena *a = arena_new();
    if (!a)
        abort();
    Parley__RpcResponse *resp = parley__rpc_response__unpack(arena_pb(a), len, payload);
    if (!resp) {
        log_warn("%s node %s sent a malformed response", rpc_service_name(rl), n->addr);
        goto out;
    }
    rpc_call *call = u64map_get(rl->sent, resp->call_id);
    if (!call || call->node != n)
        goto out; /* gave up on it already */
    switch (resp->status) {
    case PARLEY__RPC_STATUS__RPC_OK: {
        Parley__Result *res =
            parley__result__unpack(arena_pb(a), resp->payload.len, resp->payload.data);
        n->failures = 0;
        n->open_until = 0;
        if (!res)
            log_warn("%s node %s sent a malformed result", rpc_service_name(rl), n->addr);
        rpc_complete(rl, call, res ? &res->base : NULL);
        break;
    }
    case PARLEY__RPC_STATUS__RPC_UNAVAILABLE:
    case PARLEY__RPC_STATUS__RPC_DEADLINE_EXCEEDED:
    case PARLEY__RPC_STATUS__RPC_NOT_FOUND:
        /* Not run there: safe to try elsewhere whatever the method. */
        rpc_node_failed(n, resp->error);
        rpc_retry(rl, call, 0, resp->error);
        break;
    default:
        log_warn("%s node %s: %s", rpc_service_name(rl), n->addr, resp->error);
        rpc_complete(rl, call, NULL);
        break;
    }
out:
    arena_free(a);
}

static void rpc_cl_on_oversize(conn *c, size_t announced)
{
    log_warn("rpc: a node announced a %zu-byte frame; closing", announced);
}

static void rpc_cl_on_close(conn *c, const char *why)
{
    rpc_node *n = ((rpc_conn_ref *)conn_udata(c))->node;
    if (!n)
        return;
    n->c = NULL;
    conn_unref(c);
    rpc_node_failed(n, why);
    rpc_fail_node_calls(n, why);
}

static const conn_handler rpc_cl_handler = {
    .on_frame = rpc_cl_on_frame,
    .on_oversize = rpc_cl_on_oversize,
    .on_close = rpc_cl_on_close,
};

static void rpc_connected(rpc_node *n, int fd)
{
    rpc_loop *rl = n->rl;
    conn *c = conn_new(rl->l, fd, &rl->cl->cls, sizeof(rpc_conn_ref));
    if (!c) {
        rpc_node_failed(n, "out of memory");
        rpc_fail_node_calls(n, "out of memory");
        return;
    }
    conn_ref(c); /* the node's reference, dropped when it closes */
    ((rpc_conn_ref *)conn_udata(c))->node = n;
    n->c = c;
    while (n->wait_head) {
        rpc_call *call = n->wait_head;
        rpc_wait_unlink(call);
        rpc_send(rl, call);
    }
}

static void rpc_on_connect(evutil_socket_t fd, short what, void *arg)
{
    rpc_node *n = arg;
    int err = 0;
    socklen_t len = sizeof(err);
    event_free(n->connect_ev);
    n->connect_ev = NULL;
    n->fd = -1;
    if (n->connect_err)
        err = n->connect_err;
    else if (what & EV_TIMEOUT)
        err = ETIMEDOUT;
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    n->connect_err = 0;
    if (err) {
        char why[128];
        if (fd >= 0)
            close(fd);
        snprintf(why, sizeof(why), "cannot connect: %s", strerror(err));
        rpc_node_failed(n, why);
        rpc_fail_node_calls(n, why);
        return;
    }
    rpc_connected(n, fd);
}

/* Starts connecting n. The outcome always arrives through rpc_on_connect,
 * from the loop: failing calls from inside an invoke would let one call's
 * failure free others that its caller is still walking. */
static void rpc_connect(rpc_node *n)
{
    char host[256];
    const char *colon = strrchr(n->addr, ':');
    struct addrinfo hints = {0}, *ai = NULL;
    int fd = -1;
    n->connect_err = 0;
    if (!colon || (size_t)(colon - n->addr) >= sizeof(host)) {
        n->connect_err = EINVAL;
        goto schedule;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - n->addr), n->addr);
    hints.ai_socktype = SOCK_STREAM;
    /* Numeric only: a DNS lookup would block the loop. */
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0) {
        n->connect_err = EINVAL;
        goto schedule;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        n->connect_err = errno;
        goto schedule;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
        n->connect_err = errno;
        close(fd);
        fd = -1;
    }
schedule:
    if (ai)
        freeaddrinfo(ai);
    n->fd = fd;
    struct timeval tv = {RPC_CONNECT_TIMEOUT_MS / 1000, (RPC_CONNECT_TIMEOUT_MS % 1000) * 1000};
    if (fd < 0) {
        tv.tv_sec = 0;
        tv.tv_usec = 0;
    }
    n->connect_ev = event_new(loop_base(n->rl->l), fd, fd < 0 ? 0 : EV_WRITE, rpc_on_connect, n);
    event_add(n->connect_ev, &tv);
}

static void rpc_dispatch(rpc_loop *rl, rpc_call *call)
{
    rpc_node *n = rpc_pick(rl, call);
    if (!n) {
        log_warn("%s.%s: no node available", rpc_service_name(rl),
                 rl->cl->base.descriptor->methods[call->method].name);
        rpc_complete(rl, call, NULL);
        return;
    }
    if (call->attempts < RPC_MAX_TRIED)
        call->tried[call->attempts] = n;
    call->attempts++;
    call->node = n;
    if (n->c) {
        rpc_send(rl, call);
        return;
    }
    /* Queue behind the connection being made (or about to be). */
    call->wprev = n->wait_tail;
    call->wnext = NULL;
    if (n->wait_tail)
        n->wait_tail->wnext = call;
    else
        n->wait_head = call;
    n->wait_tail = call;
    if (!n->connect_ev)
        rpc_connect(n);
}

/* ---- the service interface ---- */

static void rpc_invoke(ProtobufCService *service, unsigned method, const ProtobufCMessage *input,
                       ProtobufCClosure closure, void *closure_data)
{
    rpc_client *cl = (rpc_client *)service;
    loop *l = loop_current();
    if (!l || loop_index(l) >= cl->nloops || cl->loops[loop_index(l)] != l) {
        log_error("rpc: %s called off its loops", service->descriptor->name);
        closure(NULL, closure_data);
        return;
    }
    rpc_loop *rl = &cl->per[loop_index(l)];
    size_t len = protobuf_c_message_get_packed_size(input);
    if (len > RPC_MAX_REQUEST - RPC_REQUEST_ENVELOPE) {
        log_warn("rpc: %s.%s: a %zu-byte call is over the %u-byte frame limit",
                 service->descriptor->name, service->descriptor->methods[method].name, len,
                 (unsigned)RPC_MAX_REQUEST);
        closure(NULL, closure_data);
        return;
    }
    rpc_call *call = calloc(1, sizeof(*call));
    if (!call)
        abort();
    call->len = len;
    call->payload = malloc(call->len ? call->len : 1);
    if (!call->payload)
        abort();
    protobuf_c_message_pack(input, call->payload);
    call->id = ++rl->next_id;
    call->method = method;
    call->key = ((const Parley__Call *)input)->key;
    call->deadline = rpc_now() + cl->cfg.timeout_ms;
    call->start_us = metrics_now_us();
    call->closure = closure;
    call->closure_data = closure_data;
    call->next = rl->calls;
    if (rl->calls)
        rl->calls->prev = call;
    else
        rl->calls_tail = call;
    rl->calls = call;
    rpc_dispatch(rl, call);
}

static void rpc_on_sweep(evutil_socket_t fd, short what, void *arg)
{
    rpc_loop *rl = arg;
    int64_t now = rpc_now();
    rpc_call *expired = NULL;
    /* Move the expired calls to a list of their own first: completing one
     * runs the caller's closure, which may start new calls. */
    while (rl->calls_tail && now >= rl->calls_tail->deadline) {
        rpc_call *call = rl->calls_tail;
        if (call->node)
            rpc_node_failed(call->node, "deadline exceeded");
        rpc_detach(rl, call);
        rpc_calls_unlink(rl, call);
        call->next = expired;
        expired = call;
    }
    while (expired) {
        rpc_call *call = expired;
        expired = call->next;
        log_warn("%s.%s: deadline exceeded", rpc_service_name(rl),
                 rl->cl->base.descriptor->methods[call->method].name);
        metrics_rpc_done(0, metrics_rpc_method(rpc_service_name(rl), call->method),
                         METRICS_RPC_TIMEOUT, call->start_us);
        call->closure(NULL, call->closure_data);
        free(call->payload);
        free(call);
    }
}

/* ---- node set updates ---- */

typedef struct {
    int refs; /* atomic: one per loop */
    size_t n;
    registry_node *nodes;
} rpc_nodeset;

typedef struct {
    rpc_loop *rl;
    rpc_nodeset *set;
} rpc_update;

static void rpc_nodeset_unref(rpc_nodeset *set)
{
    if (__atomic_sub_fetch(&set->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (size_t i = 0; i < set->n; i++) {
        free((char *)set->nodes[i].name);
        free((char *)set->nodes[i].addr);
    }
    free(set->nodes);
    free(set);
}

static void rpc_node_remove(rpc_loop *rl, size_t idx)
{
    rpc_node *n = rl->nodes[idx];
    rl->nodes[idx] = rl->nodes[--rl->n];
    ring_del(rl->ring, n->name);
    log_info("%s: node %s (%s) left", rpc_service_name(rl), n->name, n->addr);
    /* Calls there go elsewhere: unsent ones always, sent ones if idempotent. */
    n->failures = 0;
    if (n->connect_ev) {
        event_free(n->connect_ev);
        if (n->fd >= 0)
            close(n->fd);
        n->connect_ev = NULL;
        n->fd = -1;
    }
    if (n->c) {
        conn *c = n->c;
        ((rpc_conn_ref *)conn_udata(c))->node = NULL;
        n->c = NULL;
        conn_close(c, "node left the registry");
        conn_unref(c);
    }
    rpc_fail_node_calls(n, "node left");
    free(n->name);
    free(n->addr);
    free(n);
}

static void rpc_update_run(void *arg)
{
    rpc_update *u = arg;
    rpc_loop *rl = u->rl;
    rpc_nodeset *set = u->set;
    for (size_t i = 0; i < rl->n;) {
        int keep = 0;
        for (size_t j = 0; j < set->n; j++)
            if (strcmp(rl->nodes[i]->name, set->nodes[j].name) == 0 &&
                strcmp(rl->nodes[i]->addr, set->nodes[j].addr) == 0)
                keep = 1;
        if (keep)
            i++;
        else
            rpc_node_remove(rl, i);
    }
    for (size_t j = 0; j < set->n; j++) {
        if (rpc_node_by_name(rl, set->nodes[j].name))
            continue;
        rpc_node **nodes = realloc(rl->nodes, (rl->n + 1) * sizeof(*nodes));
        rpc_node *n = calloc(1, sizeof(*n));
        if (!nodes || !n)
            abort();
        rl->nodes = nodes;
        n->rl = rl;
        n->fd = -1;
        n->name = strdup(set->nodes[j].name);
        n->addr = strdup(set->nodes[j].addr);
        rl->nodes[rl->n++] = n;
        ring_add(rl->ring, n->name);
        if (loop_index(rl->l) == 0)
            log_info("%s: node %s (%s) joined", rpc_service_name(rl), n->name, n->addr);
    }
    rpc_nodeset_unref(set);
    free(u);
}

void rpc_client_set_nodes(ProtobufCService *svc, const registry_node *nodes, size_t n)
{
    rpc_client *cl = (rpc_client *)svc;
    rpc_nodeset *set = calloc(1, sizeof(*set));
    if (!set)
        abort();
    set->refs = (int)cl->nloops;
    set->n = n;
    set->nodes = calloc(n ? n : 1, sizeof(*set->nodes));
    if (!set->nodes)
        abort();
    for (size_t i = 0; i < n; i++) {
        set->nodes[i].name = strdup(nodes[i].name);
        set->nodes[i].addr = strdup(nodes[i].addr);
    }
    for (unsigned i = 0; i < cl->nloops; i++) {
        rpc_update *u = malloc(sizeof(*u));
        if (!u)
            abort();
        u->rl = &cl->per[i];
        u->set = set;
        loop_post(cl->loops[i], rpc_update_run, u);
    }
}

void rpc_client_on_nodes(void *arg, const char *service, const registry_node *nodes, size_t n)
{
    rpc_client_set_nodes(arg, nodes, n);
}

/* ---- life cycle ---- */

static void rpc_destroy(ProtobufCService *service)
{
    rpc_client *cl = (rpc_client *)service;
    for (unsigned i = 0; cl->per && i < cl->nloops; i++) {
        rpc_loop *rl = &cl->per[i];
        /* The loops have stopped: fail what is left without callbacks into
         * connections that no longer exist. */
        while (rl->n)
            rpc_node_remove(rl, rl->n - 1);
        while (rl->calls)
            rpc_complete(rl, rl->calls, NULL);
        free(rl->nodes);
        ring_free(rl->ring);
        u64map_free(rl->sent);
        if (rl->sweep)
            event_free(rl->sweep);
    }
    free(cl->per);
    free(cl);
}

ProtobufCService *rpc_client_new(const ProtobufCServiceDescriptor *desc, loop **loops,
                                 unsigned nloops, const rpc_client_config *cfg)
{
    rpc_client *cl = calloc(1, sizeof(*cl));
    if (!cl)
        return NULL;
    cl->base.descriptor = desc;
    cl->base.invoke = rpc_invoke;
    cl->base.destroy = rpc_destroy;
    cl->cfg = *cfg;
    if (!cl->cfg.attempts)
        cl->cfg.attempts = 3;
    if (!cl->cfg.timeout_ms)
        cl->cfg.timeout_ms = 5000;
    if (!cl->cfg.breaker_failures)
        cl->cfg.breaker_failures = 3;
    if (!cl->cfg.breaker_open_ms)
        cl->cfg.breaker_open_ms = 2000;
    if (!cl->cfg.vnodes)
        cl->cfg.vnodes = 100;
    cl->loops = loops;
    cl->nloops = nloops;
    cl->cls = (conn_class){.h = &rpc_cl_handler,
                           .lim = {.max_frame = RPC_MAX_RESPONSE,
                                   .max_out = 256u << 20,
                                   .idle_timeout_s = 0,
                                   .frame_timeout_s = RPC_FRAME_TIMEOUT_S,
                                   .max_inflight = ~0u},
                           .tls = cl->cfg.tls};
    cl->per = calloc(nloops, sizeof(*cl->per));
    if (!cl->per)
        goto fail;
    for (unsigned i = 0; i < nloops; i++) {
        rpc_loop *rl = &cl->per[i];
        rl->cl = cl;
        rl->l = loops[i];
        rl->ring = ring_new(cl->cfg.vnodes);
        rl->sent = u64map_new();
        rl->sweep = event_new(loop_base(loops[i]), -1, EV_PERSIST, rpc_on_sweep, rl);
        if (!rl->ring || !rl->sent || !rl->sweep)
            goto fail;
        struct timeval tv = {0, RPC_SWEEP_MS * 1000};
        event_add(rl->sweep, &tv);
    }
    return &cl->base;
fail:
    rpc_destroy(&cl->base);
    return NULL;
}
