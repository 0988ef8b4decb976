/*
 * rpc/client: calls a service on remote nodes. It is a ProtobufCService, so
 * the gateway calls remote and in-process services the same way.
 *
 * Each I/O loop keeps its own connections to the nodes (many calls in flight
 * on each, matched by call id), its own balancer and its own circuit
 * breakers, so a call never crosses threads. invoke() must be called on one
 * of the loops given at creation; its closure runs on the same loop.
 *
 * A call that fails (connection lost, node unavailable, deadline) is retried
 * on another node if it was never sent, or if its method is idempotent. A
 * node that fails `breaker_failures` times in a row is skipped for
 * `breaker_open_ms`, then probed again.
 */
#ifndef PARLEY_RPC_CLIENT_H
#define PARLEY_RPC_CLIENT_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "net/loop.h"
#include "net/tls.h"
#include "registry/registry.h"

typedef enum {
    RPC_BALANCE_ROUND_ROBIN = 0,
    RPC_BALANCE_LEAST_OUTSTANDING,
    RPC_BALANCE_RING, /* consistent hash of the call's key (Call.key) */
} rpc_balance;

typedef struct rpc_client_config {
    rpc_balance balance;
    unsigned timeout_ms;       /* per call, all attempts together */
    unsigned attempts;         /* at most this many nodes tried */
    unsigned breaker_failures; /* consecutive failures that open the breaker */
    unsigned breaker_open_ms;
    unsigned vnodes;     /* virtual nodes per node on the ring */
    uint64_t idempotent; /* bit i set: method i may be retried after it was sent */
    /* A client's tls_node_new context (outliving the client): every node
     * is dialled with mutual TLS. NULL: plain TCP. */
    tls_ctx *tls;
} rpc_client_config;

/* Parses "round-robin", "least-outstanding" or "ring". -1 if none. */
int rpc_balance_parse(const char *s, rpc_balance *out);

/* A client for desc over loops[0..nloops) (which must outlive it). NULL on
 * OOM. Free with protobuf_c_service_destroy() after the loops have stopped. */
ProtobufCService *rpc_client_new(const ProtobufCServiceDescriptor *desc, loop **loops,
                                 unsigned nloops, const rpc_client_config *cfg);
/* Replaces the set of nodes (thread-safe, e.g. from a registry watch). */
void rpc_client_set_nodes(ProtobufCService *svc, const registry_node *nodes, size_t n);
/* A registry_watch_fn that feeds rpc_client_set_nodes; arg is the service. */
void rpc_client_on_nodes(void *arg, const char *service, const registry_node *nodes, size_t n);

#endif
