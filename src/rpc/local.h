/*
 * rpc/local: a service served in this process. It is a ProtobufCService like
 * a remote stub, so the gateway calls both the same way; calls run on the
 * service runtime's workers and the closure runs back on the caller's loop.
 */
#ifndef PARLEY_RPC_LOCAL_H
#define PARLEY_RPC_LOCAL_H

#include <protobuf-c/protobuf-c.h>

#include "services/svc.h"

/* A service for def on runtime rt; free with protobuf_c_service_destroy().
 * NULL on OOM. The result passed to a closure is valid during the call only. */
ProtobufCService *rpc_local_new(svc_runtime *rt, const svc_def *def);
/* What the runtime may ask about a caller: gone(closure_data) says whether
 * it has left (see svc_submit), and a call not started within timeout_ms
 * (0: none) is not run at all. Set before the first call. */
void rpc_local_set_caller(ProtobufCService *service, svc_gone_fn gone, unsigned timeout_ms);

#endif
