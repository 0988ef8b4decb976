#include "rpc/server.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/blob.h"
#include "common/frame.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/pbcheck.h"
#include "net/conn.h"
#include "net/listener.h"
#include "rpc.pb-c.h"
#include "rpc/server_decode.h"
#include "services/admin.h"

/* Frame limits of the two directions; rpc/client.c holds the same numbers
 * and keeps to them before sending, so that one oversized call fails alone
 * instead of closing a connection that many calls share.
 *
 * Requests (what this side reads): a Call carries one client frame, and the
 * largest a client may legitimately send is a message of 4,000 characters
 * (16 KB of UTF-8); the biggest Call of the gateway's own is an Ack of 256
 * cursors. 4 MiB is far above both, and it bounds what one connection to
 * this port can make a node hold.
 *
 * Responses (what the gateway reads): a Sync page is 200 such messages, about
 * 3.3 MB, but a login or friend-list reply lists every group of the user with
 * its members, which neither a page nor 4 MiB bounds; the gateway cuts a
 * client whose output passes 8 MiB anyway. A larger reply is answered with
 * an error instead of being sent. */
enum {
    RPC_MAX_REQUEST = 4 << 20,
    RPC_MAX_RESPONSE = 16 << 20,
    RPC_MAX_INFLIGHT = 4096,
    /* A frame started must be complete within this: a half-sent frame would
     * otherwise stall every call behind it on the connection. */
    RPC_FRAME_TIMEOUT_S = 10,
    /* A gateway connects when it has calls to send, so the first comes at
     * once; a connection that sends none is not a gateway. */
    RPC_FIRST_FRAME_S = 10,
};

struct rpc_server {
    listener *ls;
    loop **loops;
    unsigned nloops;
    unsigned next; /* atomic */
    svc_runtime *rt;
    const svc_def *const *defs;
    size_t ndefs;
    conn_class cls;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned closed;
    int served;      /* atomic: set at the first request */
    int local_admin; /* a Unix socket: every peer is an admin */
};

typedef struct {
    rpc_server *srv;
    int peer; /* RPC_PEER_*, learnt from the first frame */
    /* With node TLS, the peer's address, for the log lines that say who
     * was refused (the socket is gone by the time a close is seen). */
    char addr[INET6_ADDRSTRLEN];
} rpc_conn;

/* Who is calling, by its node certificate. Every call carries a Caller
 * whose user id (and session, gateway id) the services believe: only a
 * gateway may assert one. Service nodes never call each other, so a peer of
 * any other role has no call to make at all. */
enum { RPC_PEER_UNKNOWN = 0, RPC_PEER_GATEWAY, RPC_PEER_OTHER, RPC_PEER_ADMIN };

/* One call on its way through the runtime; lives in the call's arena. */
typedef struct {
    loop_node node;
    conn *c;
    uint64_t call_id;
    arena *a;
    blob *response;
    uint64_t start_us; /* for the metrics */
    unsigned method;   /* metrics_rpc_method() */
} rpc_inflight;

static void rpc_send_status(conn *c, uint64_t call_id, Parley__RpcStatus status, const char *error)
{
    Parley__RpcResponse r = PARLEY__RPC_RESPONSE__INIT;
    r.call_id = call_id;
    r.status = status;
    r.error = (char *)error;
    conn_send_msg(c, &r.base);
}

static void rpc_reply_run(void *arg)
{
    rpc_inflight *f = arg;
    conn *c = f->c;
    conn_inflight_dec(c);
    if (conn_is_open(c))
        conn_send_raw(c, f->response->data, f->response->len);
    blob_unref(f->response);
    conn_unref(c);
    arena_free(f->a);
}

/* On the worker: pack the response there, so the loop only copies bytes. */
static void rpc_done(void *arg, arena *a, Parley__Result *res, svc_outcome outcome)
{
    rpc_inflight *f = arg;
    Parley__RpcResponse r = PARLEY__RPC_RESPONSE__INIT;
    r.call_id = f->call_id;
    if (outcome == SVC_EXPIRED) {
        r.status = PARLEY__RPC_STATUS__RPC_DEADLINE_EXCEEDED;
        r.error = "deadline exceeded before the call ran";
    } else {
        size_t n = parley__result__get_packed_size(res);
        if (n > RPC_MAX_RESPONSE - 64) { /* 64: room for the envelope */
            log_warn("rpc: a %zu-byte result is over the %u-byte frame limit", n,
                     (unsigned)RPC_MAX_RESPONSE);
            r.status = PARLEY__RPC_STATUS__RPC_INTERNAL;
            r.error = "result too large";
        } else {
            r.payload.data = arena_alloc(a, n ? n : 1);
            r.payload.len = parley__result__pack(res, r.payload.data);
        }
    }
    metrics_rpc_done(1, f->method,
                     r.status == PARLEY__RPC_STATUS__RPC_OK                  ? METRICS_RPC_OK
                     : r.status == PARLEY__RPC_STATUS__RPC_DEADLINE_EXCEEDED ? METRICS_RPC_TIMEOUT
                                                                             : METRICS_RPC_ERROR,
                     f->start_us);
    size_t len = parley__rpc_response__get_packed_size(&r);
    f->response = blob_new(FRAME_HDR + len);
    frame_put_header(f->response->data, (uint32_t)len);
    parley__rpc_response__pack(&r, f->response->data + FRAME_HDR);
    f->node.fn = rpc_reply_run;
    f->node.arg = f;
    loop_post_node(conn_loop(f->c), &f->node);
}

/* Who the peer of c is: RPC_PEER_ADMIN on the admin socket; without node
 * TLS everyone is taken for a gateway (the node warned at start); with it
 * the handshake is over by the first frame, and the peer's verified
 * certificate says gateway, admin or neither. */
static int rpc_peer(conn *c)
{
    rpc_conn *rc = conn_udata(c);
    if (rc->srv->local_admin)
        return RPC_PEER_ADMIN;
    if (!rc->srv->cls.tls)
        return RPC_PEER_GATEWAY;
    if (rc->peer == RPC_PEER_UNKNOWN) {
        tls_conn *tc = conn_tls(c);
        rc->peer = tc && tls_peer_has_role(tc, TLS_ROLE_GATEWAY) ? RPC_PEER_GATEWAY
                   : tc && tls_peer_has_role(tc, TLS_ROLE_ADMIN) ? RPC_PEER_ADMIN
                                                                 : RPC_PEER_OTHER;
        if (rc->peer == RPC_PEER_OTHER)
            log_warn("rpc: refusing the calls of %s: its node certificate is not a gateway's "
                     "(nor an admin's)",
                     rc->addr);
        if (rc->peer == RPC_PEER_ADMIN)
            log_info("rpc: admin connection from %s", rc->addr);
    }
    return rc->peer;
}

/* NULL if peer may call def, else why not. Admin methods and the rest are
 * apart: a gateway speaks for users, an admin for the operator. */
static const char *rpc_refusal(int peer, const rpc_server *srv, const svc_def *def)
{
    int admin_def = def == &svc_admin;
    if (peer == RPC_PEER_ADMIN && !admin_def)
        return "an admin may call admin methods only";
    if (peer != RPC_PEER_ADMIN && admin_def)
        return srv->cls.tls ? "admin methods need an admin certificate"
                            : "admin methods need node TLS (--cluster-ca) and an admin "
                              "certificate";
    return NULL;
}

void rpc_server_decode(const svc_def *const *defs, size_t ndefs, arena *a, const uint8_t *payload,
                       size_t len, rpc_decoded *out)
{
    memset(out, 0, sizeof(*out));
    out->status = PARLEY__RPC_STATUS__RPC_INVALID;
    Parley__RpcRequest *req = parley__rpc_request__unpack(arena_pb(a), len, payload);
    if (!req) {
        out->error = "malformed request";
        return;
    }
    out->req = req;
    out->call_id = req->call_id;
    const svc_def *def = NULL;
    for (size_t i = 0; i < ndefs; i++)
        if (strcmp(defs[i]->desc->name, req->service) == 0)
            def = defs[i];
    if (!def) {
        out->status = PARLEY__RPC_STATUS__RPC_NOT_FOUND;
        out->error = "service not served by this node";
        return;
    }
    const ProtobufCMethodDescriptor *m =
        protobuf_c_service_descriptor_get_method_by_name(def->desc, req->method);
    if (!m) {
        out->error = "unknown method";
        return;
    }
    Parley__Call *call = parley__call__unpack(arena_pb(a), req->payload.len, req->payload.data);
    if (!call) {
        out->error = "malformed payload";
        return;
    }
    /* Bytes from another node are checked like a client's: a string cut at
     * a NUL by protobuf-c must not reach a service as something else. */
    const char *bad;
    if (pbcheck_strings(&parley__call__descriptor, req->payload.data, req->payload.len, &bad) < 0) {
        out->error = "a string of the payload is not valid UTF-8 text";
        return;
    }
    out->status = PARLEY__RPC_STATUS__RPC_OK;
    out->def = def;
    out->method = (unsigned)(m - def->desc->methods);
    out->call = call;
}

static void rpc_on_frame(conn *c, const uint8_t *payload, size_t len)
{
    rpc_server *srv = ((rpc_conn *)conn_udata(c))->srv;
    conn_set_deadline(c, 0); /* RPC_FIRST_FRAME_S is met */
    arena *a = arena_new();
    if (!a)
        abort();
    rpc_decoded d;
    rpc_server_decode(srv->defs, srv->ndefs, a, payload, len, &d);
    int peer = rpc_peer(c);
    if (peer == RPC_PEER_OTHER) {
        rpc_send_status(c, d.call_id, PARLEY__RPC_STATUS__RPC_UNAUTHORISED,
                        "only a gateway or an admin may call a service node");
        arena_free(a);
        return;
    }
    if (d.status != PARLEY__RPC_STATUS__RPC_OK) {
        rpc_send_status(c, d.call_id, d.status, d.error);
        arena_free(a);
        return;
    }
    const char *refused = rpc_refusal(peer, srv, d.def);
    if (refused) {
        rpc_send_status(c, d.call_id, PARLEY__RPC_STATUS__RPC_UNAUTHORISED, refused);
        arena_free(a);
        return;
    }
    rpc_inflight *f = arena_alloc(a, sizeof(*f));
    f->c = c;
    f->call_id = d.call_id;
    f->a = a;
    f->start_us = metrics_now_us();
    f->method = metrics_rpc_method(d.def->desc->name, d.method);
    conn_ref(c);
    conn_inflight_inc(c);
    if (!__atomic_exchange_n(&srv->served, 1, __ATOMIC_RELAXED))
        log_info("first request served: %s.%s", d.req->service, d.req->method);
    int64_t deadline = d.req->timeout_ms ? svc_clock_ms() + d.req->timeout_ms : 0;
    svc_submit(srv->rt, d.def, d.method, a, d.call, deadline, NULL, NULL, rpc_done, f);
}

static void rpc_on_oversize(conn *c, size_t announced)
{
    rpc_send_status(c, 0, PARLEY__RPC_STATUS__RPC_INVALID, "frame too large");
}

static void rpc_on_close(conn *c, const char *why)
{
    rpc_conn *rc = conn_udata(c);
    /* Under node TLS a gateway connects to call: a connection that ends
     * before its first call is most likely one refused at the handshake
     * (no certificate, another CA) or a scan. */
    if (rc->srv->cls.tls && rc->peer == RPC_PEER_UNKNOWN)
        log_info("rpc: %s closed before any call: %s", rc->addr, why);
    else
        log_debug("rpc connection closed: %s", why);
}

static const conn_handler rpc_handler = {
    .on_frame = rpc_on_frame,
    .on_oversize = rpc_on_oversize,
    .on_close = rpc_on_close,
};

typedef struct {
    rpc_server *srv;
    loop *l;
    int fd;
} rpc_adopt;

static void rpc_adopt_run(void *arg)
{
    rpc_adopt *ad = arg;
    conn *c = conn_new(ad->l, ad->fd, &ad->srv->cls, sizeof(rpc_conn));
    if (c) {
        rpc_conn *rc = conn_udata(c);
        rc->srv = ad->srv;
        if (ad->srv->cls.tls && conn_peer_addr(c, rc->addr, sizeof(rc->addr)) < 0)
            snprintf(rc->addr, sizeof(rc->addr), "?");
        conn_set_deadline(c, RPC_FIRST_FRAME_S);
    }
    free(ad);
}

static void rpc_on_accept(int fd, void *arg)
{
    rpc_server *srv = arg;
    rpc_adopt *ad = malloc(sizeof(*ad));
    if (!ad) {
        close(fd);
        return;
    }
    unsigned i = __atomic_fetch_add(&srv->next, 1, __ATOMIC_RELAXED) % srv->nloops;
    ad->srv = srv;
    ad->l = srv->loops[i];
    ad->fd = fd;
    loop_post(srv->loops[i], rpc_adopt_run, ad);
}

static rpc_server *rpc_server_make(loop **loops, unsigned nloops, svc_runtime *rt,
                                   const svc_def *const *defs, size_t ndefs, tls_ctx *tls)
{
    rpc_server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return NULL;
    srv->loops = loops;
    srv->nloops = nloops;
    srv->rt = rt;
    srv->defs = defs;
    srv->ndefs = ndefs;
    srv->cls = (conn_class){.h = &rpc_handler,
                            .lim = {.max_frame = RPC_MAX_REQUEST,
                                    .max_out = 256u << 20,
                                    /* A gateway keeps its connection for
                                     * calls to come, however quiet. */
                                    .idle_timeout_s = 0,
                                    .frame_timeout_s = RPC_FRAME_TIMEOUT_S,
                                    .max_inflight = RPC_MAX_INFLIGHT},
                            .tls = tls};
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->cond, NULL);
    return srv;
}

rpc_server *rpc_server_new(struct event_base *base, const char *host, int port, loop **loops,
                           unsigned nloops, svc_runtime *rt, const svc_def *const *defs,
                           size_t ndefs, tls_ctx *tls, char *err, size_t errlen)
{
    rpc_server *srv = rpc_server_make(loops, nloops, rt, defs, ndefs, tls);
    if (!srv) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    srv->ls = listener_new(base, host, port, rpc_on_accept, srv, err, errlen);
    if (!srv->ls) {
        rpc_server_free(srv);
        return NULL;
    }
    return srv;
}

rpc_server *rpc_server_new_unix(struct event_base *base, const char *path, loop **loops,
                                unsigned nloops, svc_runtime *rt, const svc_def *const *defs,
                                size_t ndefs, char *err, size_t errlen)
{
    rpc_server *srv = rpc_server_make(loops, nloops, rt, defs, ndefs, NULL);
    if (!srv) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    srv->local_admin = 1;
    srv->ls = listener_new_unix(base, path, rpc_on_accept, srv, err, errlen);
    if (!srv->ls) {
        rpc_server_free(srv);
        return NULL;
    }
    return srv;
}

int rpc_server_port(const rpc_server *s)
{
    return listener_port(s->ls);
}

typedef struct {
    rpc_server *srv;
    loop *l;
} rpc_close_job;

static void rpc_close_each(conn *c, void *arg)
{
    /* Only this server's connections: a loop may also carry client traffic. */
    if (conn_get_handler(c) == &rpc_handler && ((rpc_conn *)conn_udata(c))->srv == arg)
        conn_close(c, "service node shutting down");
}

static void rpc_close_loop(void *arg)
{
    rpc_close_job *job = arg;
    rpc_server *srv = job->srv;
    conn_foreach(job->l, rpc_close_each, srv);
    free(job);
    pthread_mutex_lock(&srv->lock);
    srv->closed++;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
}

void rpc_server_close_all(rpc_server *s)
{
    listener_free(s->ls);
    s->ls = NULL;
    s->closed = 0;
    for (unsigned i = 0; i < s->nloops; i++) {
        rpc_close_job *job = malloc(sizeof(*job));
        if (!job)
            abort();
        job->srv = s;
        job->l = s->loops[i];
        loop_post(s->loops[i], rpc_close_loop, job);
    }
    pthread_mutex_lock(&s->lock);
    while (s->closed < s->nloops)
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
}

void rpc_server_free(rpc_server *s)
{
    if (!s)
        return;
    listener_free(s->ls);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s);
}
