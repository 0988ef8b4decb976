/*
 * frame: the wire framing shared by server and client. A frame is a 4-byte
 * big-endian payload length followed by that many bytes of protobuf.
 * Pure functions: no I/O, no allocation.
 */
#ifndef PARLEY_FRAME_H
#define PARLEY_FRAME_H

#include <stddef.h>
#include <stdint.h>

enum { FRAME_HDR = 4, FRAME_MAX_DEFAULT = 64 * 1024 };

typedef enum {
    FRAME_NEED_MORE = 0, /* not a whole frame yet: keep the bytes, read more */
    FRAME_OK,            /* a whole frame: *payload, *plen, *consumed are set */
    FRAME_TOO_LARGE,     /* the header announces more than max bytes */
} frame_status;

/* Looks for one frame at the start of buf[0..len). On FRAME_OK *payload
 * points into buf and *consumed is FRAME_HDR + *plen. */
frame_status frame_next(const uint8_t *buf, size_t len, size_t max, const uint8_t **payload,
                        size_t *plen, size_t *consumed);

/* Writes the 4-byte header for a payload of len bytes. */
void frame_put_header(uint8_t hdr[FRAME_HDR], uint32_t len);

#endif
