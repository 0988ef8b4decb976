/*
 * rpc/server_decode: how a service node reads one RPC request frame, apart
 * from its connection: the envelope, the service and method it names, and
 * the Call it carries. rpc/server.c answers or runs what this returns;
 * tests/fuzz drives it directly.
 */
#ifndef PARLEY_RPC_SERVER_DECODE_H
#define PARLEY_RPC_SERVER_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "common/arena.h"
#include "rpc.pb-c.h"
#include "services/svc.h"

/* One request: what to run, or the status to answer it with. */
typedef struct rpc_decoded {
    Parley__RpcStatus status; /* RPC_OK: req, def, method and call are set */
    const char *error;        /* otherwise the text of the answer */
    uint64_t call_id;         /* 0 if the envelope did not parse */
    Parley__RpcRequest *req;
    const svc_def *def;
    unsigned method; /* index in def->desc->methods */
    Parley__Call *call;
} rpc_decoded;

/* Decodes the payload of one frame into a (everything unpacked lives there)
 * against the services defs[0..ndefs) this node serves. */
void rpc_server_decode(const svc_def *const *defs, size_t ndefs, arena *a, const uint8_t *payload,
                       size_t len, rpc_decoded *out);

#endif
