#include "rpc/local.h"

#include <stdlib.h>

#include "common/log.h"
#include "net/loop.h"

typedef struct {
    ProtobufCService base;
    svc_runtime *rt;
    const svc_def *def;
    svc_gone_fn gone;
    unsigned timeout_ms;
} rpc_local;

/* Lives in the request's arena until the closure has run. */
typedef struct {
    loop_node node;
    arena *a;
    Parley__Result *res;
    ProtobufCClosure closure;
    void *closure_data;
} local_reply;

static void local_reply_run(void *arg)
{
    local_reply *r = arg;
    r->closure((const ProtobufCMessage *)r->res, r->closure_data);
    arena_free(r->a);
}

static void local_done(void *arg, arena *a, Parley__Result *res, svc_outcome outcome)
{
    local_reply *r = arg;
    r->a = a;
    r->res = res;
    loop *origin = r->node.arg;
    r->node.fn = local_reply_run;
    r->node.arg = r;
    if (origin)
        loop_post_node(origin, &r->node);
    else
        local_reply_run(r);
}

static void local_invoke(ProtobufCService *service, unsigned method, const ProtobufCMessage *input,
                         ProtobufCClosure closure, void *closure_data)
{
    rpc_local *s = (rpc_local *)service;
    arena *a = arena_new();
    if (!a)
        abort();
    /* The caller's message lives only for this call: take a deep copy by
     * packing it, as a remote stub would. */
    size_t len = protobuf_c_message_get_packed_size(input);
    uint8_t *buf = arena_alloc(a, len ? len : 1);
    protobuf_c_message_pack(input, buf);
    Parley__Call *call = parley__call__unpack(arena_pb(a), len, buf);
    if (!call) {
        log_error("rpc/local: cannot copy a call to %s", s->def->desc->name);
        closure(NULL, closure_data);
        arena_free(a);
        return;
    }
    local_reply *r = arena_alloc(a, sizeof(*r));
    r->closure = closure;
    r->closure_data = closure_data;
    r->node.arg = loop_current();
    int64_t deadline = s->timeout_ms ? svc_clock_ms() + s->timeout_ms : 0;
    svc_submit(s->rt, s->def, method, a, call, deadline, s->gone, closure_data, local_done, r);
}

void rpc_local_set_caller(ProtobufCService *service, svc_gone_fn gone, unsigned timeout_ms)
{
    rpc_local *s = (rpc_local *)service;
    s->gone = gone;
    s->timeout_ms = timeout_ms;
}

static void local_destroy(ProtobufCService *service)
{
    free(service);
}

ProtobufCService *rpc_local_new(svc_runtime *rt, const svc_def *def)
{
    rpc_local *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->base.descriptor = def->desc;
    s->base.invoke = local_invoke;
    s->base.destroy = local_destroy;
    s->rt = rt;
    s->def = def;
    return &s->base;
}
