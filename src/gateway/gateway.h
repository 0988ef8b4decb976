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

typedef struct gateway_config {
    uint32_t gateway_id;
    conn_limits limits;
    /* Give each send an idempotency reference: only worth its index write
     * where a send may run twice (a remote message service, a database
     * connection that can die). */
    int send_refs;
} gateway_config;

typedef struct gateway gateway;

/* A gateway serving connections on loops[0..nloops) (not yet started),
 * calling the three services and subscribed to b. Everything passed in must
 * outlive it. NULL on OOM. */
gateway *gateway_new(const gateway_config *cfg, loop **loops, unsigned nloops,
                     ProtobufCService *user, ProtobufCService *social, ProtobufCService *message,
                     bus *b);
/* Hands an accepted socket to the next loop. Thread-safe. */
void gateway_accept(gateway *gw, int fd);
/* Says goodbye to every client (Bye{reason}), closes every connection and
 * waits until each loop has done so. The loops keep running. */
void gateway_close_all(gateway *gw, const char *reason);
/* Frees the gateway; call after the loops have stopped. */
void gateway_free(gateway *gw);

#endif
