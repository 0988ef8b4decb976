/*
 * rpc/server: serves the service runtime's methods to remote callers.
 * Connections are accepted on the main event base and handed to the I/O
 * loops; each RpcRequest runs on the runtime's workers and its RpcResponse
 * is written back by the connection's own loop.
 */
#ifndef PARLEY_RPC_SERVER_H
#define PARLEY_RPC_SERVER_H

#include <stddef.h>

#include "net/loop.h"
#include "net/tls.h"
#include "services/svc.h"

struct event_base;
typedef struct rpc_server rpc_server;

/* Listens on host:port (0 picks a port) and serves defs[0..ndefs). loops
 * must be running or about to run; rt and defs must outlive the server.
 * With tls (a server's tls_node_new context, which must outlive the server)
 * every connection is mutual TLS: one without a certificate of the cluster
 * CA fails its handshake and closes before a byte of it is read as a call,
 * and only a peer whose certificate says gateway may call; others are
 * answered RPC_UNAUTHORISED. NULL tls: plain TCP, anyone may call. NULL on
 * failure with the reason in err. */
rpc_server *rpc_server_new(struct event_base *base, const char *host, int port, loop **loops,
                           unsigned nloops, svc_runtime *rt, const svc_def *const *defs,
                           size_t ndefs, tls_ctx *tls, char *err, size_t errlen);
/* Admin methods (services/admin.h) among defs go only to a peer whose
 * certificate says admin, which may call nothing else; a gateway never gets
 * them, and without tls nobody does. */
/* As rpc_server_new, on a Unix socket at path (made mode 0600, replacing
 * a stale one; removed when the server is freed): whoever can open it is
 * trusted as an admin (file permissions), and may call admin methods only.
 * The embedded parleyd's admin socket. */
rpc_server *rpc_server_new_unix(struct event_base *base, const char *path, loop **loops,
                                unsigned nloops, svc_runtime *rt, const svc_def *const *defs,
                                size_t ndefs, char *err, size_t errlen);
int rpc_server_port(const rpc_server *s);
/* Stops accepting and closes every connection (callers retry elsewhere);
 * waits until each loop has done so. */
void rpc_server_close_all(rpc_server *s);
void rpc_server_free(rpc_server *s);

#endif
