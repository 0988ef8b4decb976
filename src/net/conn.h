/*
 * conn: one client connection on a loop: non-blocking socket, framing,
 * output buffering and flow control. The layer above (the gateway) sees whole
 * frames through a conn_handler and answers with conn_send_*.
 *
 * An idle connection is small: the libevent event is embedded, and the input
 * and output buffers exist only while bytes are in flight. Reads go first to
 * a per-loop scratch buffer; only the tail of a partial frame is kept.
 *
 * All functions must be called on the connection's own loop thread.
 */
#ifndef PARLEY_CONN_H
#define PARLEY_CONN_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "net/loop.h"

typedef struct conn conn;

typedef struct conn_handler {
    /* One whole frame; payload is valid during the call only. */
    void (*on_frame)(conn *c, const uint8_t *payload, size_t len);
    /* A header announced more than max_frame bytes. The connection stops
     * reading and closes once what is queued (e.g. an error reply) is sent. */
    void (*on_oversize)(conn *c, size_t announced);
    /* The connection is closed (peer, error, idle timeout or server). The
     * conn stays allocated until its last reference goes. */
    void (*on_close)(conn *c, const char *why);
} conn_handler;

typedef struct conn_limits {
    size_t max_frame;        /* largest payload accepted */
    size_t max_out;          /* output queued beyond this closes the conn */
    uint32_t idle_timeout_s; /* no bytes for this long closes the conn */
    unsigned max_inflight;   /* requests in flight before reading pauses */
} conn_limits;

/* What a kind of connection shares: one pointer in each conn instead of
 * two, since an idle connection is mostly this struct. Owned by the layer
 * that makes the conns, and must outlive them. */
typedef struct conn_class {
    const conn_handler *h;
    conn_limits lim;
} conn_class;

/* Adopts the non-blocking socket fd on loop l (called on l's thread) with
 * udata_size zeroed bytes of per-connection state for the handler (aligned
 * for integers and pointers). The conn holds one reference, dropped when it
 * closes. NULL on failure (fd closed). */
conn *conn_new(loop *l, int fd, const conn_class *cls, size_t udata_size);
void *conn_udata(conn *c);
/* The handler the connection was made with: tells whose a connection is
 * when several layers share a loop. */
const conn_handler *conn_get_handler(const conn *c);
loop *conn_loop(const conn *c);
int conn_is_open(const conn *c);

/* References keep the struct (not the socket) alive across asynchronous
 * calls, e.g. while a service works on the connection's request. */
void conn_ref(conn *c);
void conn_unref(conn *c);

/* Queue one frame; written after the current pass of the loop. 0, or -1 if
 * the connection is closed (or was just closed for exceeding max_out). */
int conn_send_msg(conn *c, const ProtobufCMessage *m);
/* Queue bytes that are already framed (header included). */
int conn_send_raw(conn *c, const uint8_t *data, size_t len);

void conn_close(conn *c, const char *why);
/* Stop reading; close once the queued output is written (or after 5 s). */
void conn_close_after_flush(conn *c, const char *why);

/* Flow control: the handler counts requests in flight; at max_inflight the
 * connection stops reading until one completes. */
void conn_inflight_inc(conn *c);
void conn_inflight_dec(conn *c);

/* For shutdown: writes what c has queued (best effort, without blocking)
 * and closes it. */
void conn_flush_close(conn *c, const char *why);
/* Calls each(c, arg) for every open connection of loop l. each may close c
 * but no other connection. */
void conn_foreach(loop *l, void (*each)(conn *c, void *arg), void *arg);

#endif
