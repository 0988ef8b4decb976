/*
 * wire: Parley frames (4-byte big-endian length + protobuf) on libevent
 * buffers, shared by parley-bench and parley-floor.
 */
#ifndef PARLEY_BENCH_WIRE_H
#define PARLEY_BENCH_WIRE_H

#include <event2/buffer.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "parley.pb-c.h"

/* Appends one length-prefixed frame to out. 0, or -1 if out of memory. */
int wire_put_client(struct evbuffer *out, const Parley__ClientFrame *f);
int wire_put_server(struct evbuffer *out, const Parley__ServerFrame *f);

/* Packs a ServerFrame with its header into buf (cap bytes); returns the
 * length, or 0 if it does not fit. */
size_t wire_pack_server(const Parley__ServerFrame *f, uint8_t *buf, size_t cap);

/* Called for each whole frame; returns 0 to go on, < 0 to stop (the reader
 * then leaves the buffer alone: the connection is being closed). */
typedef int (*wire_frame_fn)(void *arg, const uint8_t *payload, size_t len);

/* Hands every whole frame in `in` to fn and drains them. Returns 0, -1 if a
 * header announces more than max bytes, -2 if fn stopped. */
int wire_read_frames(struct evbuffer *in, size_t max, wire_frame_fn fn, void *arg);

/* ---- WebSocket (parley-bench --ws): one binary message per frame ---- */

/* Appends the upgrade request for host:port (a fresh random key). 0 or -1. */
int wire_ws_request(struct evbuffer *out, const char *host, int port);
/* Appends one ClientFrame as a masked binary message; *rng (nonzero) draws
 * the masking keys. 0, or -1 if out of memory. */
int wire_put_client_ws(struct evbuffer *out, const Parley__ClientFrame *f, uint32_t *rng);
/* As wire_read_frames for a WebSocket: first the 101 answer (*up is set
 * once it came), then each binary message to fn. Returns 0, -1 for a
 * message over max bytes or a frame no server may send, -2 if fn stopped,
 * -3 if the server refused the upgrade or sent a Close. */
int wire_read_ws(struct evbuffer *in, size_t max, bool *up, wire_frame_fn fn, void *arg);

#endif
