/*
 * conn: one client connection on a loop: non-blocking socket, framing,
 * output buffering and flow control. The layer above (the gateway) sees whole
 * frames through a conn_handler and answers with conn_send_*.
 *
 * An idle connection is small: the libevent event is embedded, and the input
 * and output buffers exist only while bytes are in flight. Reads go first to
 * a per-loop scratch buffer; only the tail of a partial frame is kept.
 *
 * Time limits, all checked by the loop's one-second sweep (so a limit of S
 * seconds closes after more than S and at most about S + 2 seconds):
 * - frame timeout: once a frame's first byte arrived, the rest must follow
 *   in time, so a peer cannot hold a buffer by dribbling bytes (frames held
 *   back while reading is paused wait for us, not the peer: not counted);
 * - idle timeout: counts complete frames only (and the connection's start),
 *   not bytes; a connection with requests in flight is never idle;
 * - a deadline set by the handler (e.g. "log in within 30 s").
 *
 * Output: conn_want_drain() asks for one on_drain() once the queued output is
 * below low_water, so a producer (a backlog) goes at the pace of the reader.
 *
 * Transport: plain TCP, or TLS when the conn_class carries a tls_ctx (see
 * net/tls.h); framed by a 4-byte length, or by WebSocket when the class
 * carries a ws_config (net/ws.h). The handler sees the same frames either
 * way. A TLS conn keeps
 * no record buffers while idle; the handshake runs within its first reads,
 * under the same time limits (a handler's deadline for the first frame
 * covers it).
 *
 * All functions must be called on the connection's own loop thread.
 */
#ifndef PARLEY_CONN_H
#define PARLEY_CONN_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "net/loop.h"
#include "net/tls.h"
#include "net/ws.h"

typedef struct conn conn;

typedef struct conn_handler {
    /* One whole frame; payload is valid during the call only. */
    void (*on_frame)(conn *c, const uint8_t *payload, size_t len);
    /* A header announced more than max_frame bytes. The connection stops
     * reading and closes once what is queued (e.g. an error reply) is sent. */
    void (*on_oversize)(conn *c, size_t announced);
    /* The connection is closed (peer, error, a timeout or server). The
     * conn stays allocated until its last reference goes. */
    void (*on_close)(conn *c, const char *why);
    /* Optional: the deadline of conn_set_deadline() passed. It may send a
     * frame and close c (conn_close_after_flush), or set a new deadline; it
     * must not close another connection. Without it the conn closes with
     * "deadline passed". */
    void (*on_deadline)(conn *c);
    /* Optional: the output queue went below low_water after
     * conn_want_drain(). Called once per request, from the loop (never from
     * inside conn_send_*), never once c is closing or closed. */
    void (*on_drain)(conn *c);
} conn_handler;

/* A 0 turns a limit off (except max_frame, max_out and max_inflight). */
typedef struct conn_limits {
    size_t max_frame;         /* largest payload accepted */
    size_t max_out;           /* output queued beyond this closes the conn */
    size_t low_water;         /* on_drain fires below this (0: when empty) */
    uint32_t idle_timeout_s;  /* no complete frame for this long closes the conn */
    uint32_t frame_timeout_s; /* a started frame must be complete within this */
    unsigned max_inflight;    /* requests in flight before reading pauses */
} conn_limits;

/* What a kind of connection shares: one pointer in each conn instead of
 * two, since an idle connection is mostly this struct. Owned by the layer
 * that makes the conns, and must outlive them. */
typedef struct conn_class {
    const conn_handler *h;
    conn_limits lim;
    /* NULL: plain TCP. Else each conn speaks TLS as this context's side
     * (a server's accepts; a client's connects, naming no host). */
    tls_ctx *tls;
    /* NULL: frames are length-prefixed. Else each conn starts as HTTP/1.1
     * and, once upgraded, carries one frame per binary WebSocket message;
     * other GETs get the static files of this config (net/ws.h). */
    const ws_config *ws;
} conn_class;

/* Adopts the non-blocking socket fd on loop l (called on l's thread) with
 * udata_size zeroed bytes of per-connection state for the handler (aligned
 * for integers and pointers). The conn holds one reference, dropped when it
 * closes. NULL on failure (fd closed): out of memory, or TLS could not
 * start. */
conn *conn_new(loop *l, int fd, const conn_class *cls, size_t udata_size);
void *conn_udata(conn *c);
/* The handler the connection was made with: tells whose a connection is
 * when several layers share a loop. */
const conn_handler *conn_get_handler(const conn *c);
loop *conn_loop(const conn *c);
/* The connection's TLS state, NULL for plain TCP: e.g. to ask who the peer
 * of a mutual-TLS connection is once its first frame arrived. */
tls_conn *conn_tls(const conn *c);
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

/* Bytes queued for output, not yet written to the socket. */
size_t conn_out_pending(const conn *c);
/* Asks for one call of on_drain as soon as the queued output is below
 * lim.low_water: on the next pass of the loop if it already is. Cleared by
 * the call; ask again for another. */
void conn_want_drain(conn *c);

/* An absolute deadline secs seconds from now, replacing any earlier one;
 * 0 clears it. When it passes, on_deadline runs once (see conn_handler). */
void conn_set_deadline(conn *c, uint32_t secs);

/* The peer's address as text ("127.0.0.1", "::1"; an IPv4 client of a
 * dual-stack socket shows as IPv4) into buf. 0, or -1 (closed, not an IP
 * socket, or buf too small: INET6_ADDRSTRLEN is always enough). A system
 * call each time (the conn keeps no copy): ask once, not per request. */
int conn_peer_addr(const conn *c, char *buf, size_t len);

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
