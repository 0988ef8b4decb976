/*
 * gateway: holds client connections, checks each request, routes it to the
 * service that owns it and writes the reply back; delivers pushes from the
 * bus to the sessions of the users they are for.
 *
 * Each I/O loop keeps its own table of the sessions it holds (user -> its
 * connections on that loop), touched only by that loop's thread.
 */
#ifndef PARLEY_GATEWAY_H
#define PARLEY_GATEWAY_H

#include <protobuf-c/protobuf-c.h>
#include <stdint.h>

#include "bus/bus.h"
#include "net/conn.h"
#include "net/loop.h"

/* The abuse limits the gateway enforces (0 disables one); docs/security.md
 * says what each defends. Rates are per second unless named otherwise. */
typedef struct gateway_abuse {
    unsigned max_conns_per_ip;
    unsigned hello_timeout_s, login_timeout_s;
    unsigned req_rate;     /* requests per connection, bursts of 2x */
    unsigned msg_rate;     /* messages per user, bursts of 2x */
    unsigned history_rate; /* history pages per user, bursts of 2x */
    unsigned reg_rate;     /* registrations per minute per address, bursts of 2x */
    unsigned fail_rate;    /* failed logins per minute per address */
    unsigned fail_free;    /* failures of an account from an address before a delay */
    unsigned fail_max_delay_s;
    unsigned auth_per_conn, auth_per_ip, auth_total; /* queued register/login */
} gateway_abuse;

typedef struct gateway_config {
    uint32_t gateway_id;
    conn_limits limits;
    gateway_abuse abuse;
    /* Give each send an idempotency reference: only worth its index write
     * where a send may run twice (a remote message service, a database
     * connection that can die). */
    int send_refs;
    /* The server side of TLS for gateway_accept_tls (NULL: none); must
     * outlive the gateway. */
    tls_ctx *tls;
    /* The WebSocket port's origins and static files, for gateway_accept_ws
     * (NULL: none); must outlive the gateway. */
    const ws_config *ws;
    /* Drain (parleyctl drain NAME): a BUS_DRAIN push naming node_name calls
     * on_drain(drain_arg) on the bus thread, which must hand it over. */
    const char *node_name;
    void (*on_drain)(void *arg);
    void *drain_arg;
} gateway_config;

typedef struct gateway gateway;

/* A gateway serving connections on loops[0..nloops) (not yet started),
 * calling the three services and subscribed to b. Everything passed in must
 * outlive it. NULL on OOM. */
gateway *gateway_new(const gateway_config *cfg, loop **loops, unsigned nloops,
                     ProtobufCService *user, ProtobufCService *social, ProtobufCService *message,
                     bus *b);
/* Hands an accepted socket to the next loop, unless its address already
 * has as many connections as allowed (then it is closed). Thread-safe. */
void gateway_accept(gateway *gw, int fd);
/* The same for a socket of the TLS port: the connection speaks TLS with
 * cfg.tls (closed at once if there is none). */
void gateway_accept_tls(gateway *gw, int fd);
/* The same for a socket of the WebSocket port (cfg.ws; closed at once if
 * there is none): WebSocket, over TLS with cfg.tls if tls is set. */
void gateway_accept_ws(gateway *gw, int fd, int tls);
/* For rpc_local_set_caller: whether the client of a call (its closure
 * data) has gone. Any thread. */
int gateway_call_gone(void *closure_data);
/* Says goodbye to every client (Bye{reason}), closes every connection and
 * waits until each loop has done so. The loops keep running. */
void gateway_close_all(gateway *gw, const char *reason);
/* Frees the gateway; call after the loops have stopped. */
void gateway_free(gateway *gw);

#endif
