/*
 * conn_impl: what conn.c lends the transports that frame inside it (ws.c):
 * delivering a whole frame, queueing bytes as they are, the clock. Not for
 * the layers above net/.
 */
#ifndef PARLEY_CONN_IMPL_H
#define PARLEY_CONN_IMPL_H

#include "net/conn.h"

const conn_class *conn_class_of(const conn *c);
/* Open, not paused, not closing: the next frame may be handed over. */
int conn_parsing(const conn *c);
/* The loop's clock (seconds) as of the event being handled. */
uint32_t conn_now(const conn *c);
/* Counts as activity for the idle timeout (a whole frame, a handshake). */
void conn_active(conn *c);
/* One whole frame for the handler: activity, then on_frame. */
void conn_deliver(conn *c, const uint8_t *payload, size_t len);
/* Calls the handler's on_oversize (it may queue a reply). */
void conn_oversize(conn *c, size_t announced);
/* Queues a then b as they are, no framing added (b may be NULL with
 * blen 0). 0, or -1 if the conn is closed (or was, for max_out). */
int conn_out_pair(conn *c, const void *a, size_t alen, const void *b, size_t blen);

#endif
