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

#endif
