/*
 * conn: one TCP connection to parleyd, plain or TLS, and its framing. Frames
 * out are packed into an output buffer and written as the socket accepts
 * them; bytes in are gathered in an input buffer and cut into ServerFrames.
 * The socket is non-blocking once open; the caller drives it with poll()
 * (conn_fd, conn_want_write). With TLS (conn_set_tls), conn_open also runs
 * the handshake and asks trust.h whether to believe the server, before a
 * byte of the protocol is sent. Reconnecting is the session's business
 * (sess.h).
 */
#ifndef PARLEY_CLIENT_CONN_H
#define PARLEY_CLIENT_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/trust.h"
#include "net/tls.h"
#include "parley.pb-c.h"

enum {
    CONN_MAX_IN = 4 * 1024 * 1024, /* the largest frame accepted from the server */
};

typedef struct conn {
    int fd; /* -1 when closed */
    uint8_t *in;
    size_t in_off, in_len, in_cap; /* unparsed bytes are in[in_off..in_len) */
    uint8_t *out;
    size_t out_off, out_len, out_cap; /* unsent bytes are out[out_off..out_len) */
    size_t max_out;                   /* the largest frame we may send */
    trust *trust;                     /* not owned; NULL: plain TCP */
    tls_conn *tls;                    /* while open over TLS */
    bool refused;                     /* conn_open reached the server but did not trust it */
    char err[256];                    /* why the last call failed */
} conn;

void conn_init(conn *c);
/* Connections from now on speak TLS and trust servers by t (which must
 * outlive c); NULL for plain TCP. */
void conn_set_tls(conn *c, trust *t);
/* Closes the socket and frees the buffers. */
void conn_free(conn *c);

/* Connects to host:port, trying each address getaddrinfo gives, waiting at
 * most timeout_ms for each (and as long again for a TLS handshake). Returns
 * 0, or -1 with the reason in c->err (the strerror text, without the
 * address); c->refused if the server was reached but not trusted. */
int conn_open(conn *c, const char *host, const char *port, int timeout_ms);
/* Closes the socket and drops buffered bytes; the buffers are kept. */
void conn_close(conn *c);
bool conn_is_open(const conn *c);
int conn_fd(const conn *c);
bool conn_want_write(const conn *c);

/* Packs f and queues it. Returns 0, or -1: the frame is over max_out
 * (errno EMSGSIZE) or memory ran out (ENOMEM). Nothing is written yet. */
int conn_send(conn *c, const Parley__ClientFrame *f);
/* Writes what the socket takes. Returns 0, or -1 on a broken link. */
int conn_flush(conn *c);
/* Reads what the socket has. Returns 1 if bytes arrived, 0 if none, -1 on
 * end of file or error (c->err says which). Bytes read before the end stay
 * buffered: call conn_next until it returns 0 even after -1. */
int conn_read(conn *c);
/* Cuts the next whole frame from the input. Returns 1 with *out set (free
 * it with parley__server_frame__free_unpacked), 0 when no whole frame is
 * buffered, -1 on a frame that is too large or does not decode. */
int conn_next(conn *c, Parley__ServerFrame **out);

#endif
