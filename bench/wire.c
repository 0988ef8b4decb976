#include "wire.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "common/frame.h"
#include "net/ws.h"

static int put(struct evbuffer *out, size_t n, const void *msg,
               size_t (*pack)(const void *, uint8_t *))
{
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)(FRAME_HDR + n), &v, 1) < 1 ||
        v.iov_len < FRAME_HDR + n)
        return -1;
    uint8_t *p = v.iov_base;
    frame_put_header(p, (uint32_t)n);
    pack(msg, p + FRAME_HDR);
    v.iov_len = FRAME_HDR + n;
    return evbuffer_commit_space(out, &v, 1);
}

static size_t pack_client(const void *m, uint8_t *out)
{
    return parley__client_frame__pack(m, out);
}

static size_t pack_server(const void *m, uint8_t *out)
{
    return parley__server_frame__pack(m, out);
}

int wire_put_client(struct evbuffer *out, const Parley__ClientFrame *f)
{
    return put(out, parley__client_frame__get_packed_size(f), f, pack_client);
}

int wire_put_server(struct evbuffer *out, const Parley__ServerFrame *f)
{
    return put(out, parley__server_frame__get_packed_size(f), f, pack_server);
}

size_t wire_pack_server(const Parley__ServerFrame *f, uint8_t *buf, size_t cap)
{
    size_t n = parley__server_frame__get_packed_size(f);
    if (FRAME_HDR + n > cap)
        return 0;
    frame_put_header(buf, (uint32_t)n);
    parley__server_frame__pack(f, buf + FRAME_HDR);
    return FRAME_HDR + n;
}

int wire_read_frames(struct evbuffer *in, size_t max, wire_frame_fn fn, void *arg)
{
    size_t len = evbuffer_get_length(in);
    if (len < FRAME_HDR)
        return 0;
    /* One linear view of everything read so far; usually it already is. */
    const uint8_t *buf = evbuffer_pullup(in, -1);
    if (!buf)
        return -1;
    size_t off = 0;
    for (;;) {
        const uint8_t *payload;
        size_t plen, used;
        frame_status st = frame_next(buf + off, len - off, max, &payload, &plen, &used);
        if (st == FRAME_TOO_LARGE)
            return -1;
        if (st == FRAME_NEED_MORE)
            break;
        if (fn(arg, payload, plen) < 0)
            return -2;
        off += used;
    }
    evbuffer_drain(in, off);
    return 0;
}

/* ---- WebSocket ---- */

int wire_ws_request(struct evbuffer *out, const char *host, int port)
{
    uint8_t raw[16];
    unsigned char key[32];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return -1;
    /* base64 by hand: the bench need not link more of OpenSSL for this. */
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t k = 0;
    for (size_t i = 0; i < 15; i += 3) {
        uint32_t v = (uint32_t)raw[i] << 16 | (uint32_t)raw[i + 1] << 8 | raw[i + 2];
        key[k++] = (unsigned char)b64[v >> 18];
        key[k++] = (unsigned char)b64[(v >> 12) & 63];
        key[k++] = (unsigned char)b64[(v >> 6) & 63];
        key[k++] = (unsigned char)b64[v & 63];
    }
    key[k++] = (unsigned char)b64[raw[15] >> 2];
    key[k++] = (unsigned char)b64[(raw[15] & 3) << 4];
    key[k++] = '=';
    key[k++] = '=';
    key[k] = '\0';
    return evbuffer_add_printf(out,
                               "GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                               "Sec-WebSocket-Version: 13\r\n\r\n",
                               host, port, (const char *)key) < 0
               ? -1
               : 0;
}

int wire_put_client_ws(struct evbuffer *out, const Parley__ClientFrame *f, uint32_t *rng)
{
    size_t n = parley__client_frame__get_packed_size(f);
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)(WS_MAX_HEADER + n), &v, 1) < 1 ||
        v.iov_len < WS_MAX_HEADER + n)
        return -1;
    uint8_t *p = v.iov_base;
    size_t h = ws_frame_header(p, WS_OP_BINARY, n);
    p[1] |= 0x80; /* masked, as a client's frames must be */
    /* xorshift32: a fresh key per message, as browsers draw them. */
    uint32_t x = *rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *rng = x;
    uint8_t mask[4] = {(uint8_t)(x >> 24), (uint8_t)(x >> 16), (uint8_t)(x >> 8), (uint8_t)x};
    memcpy(p + h, mask, 4);
    h += 4;
    parley__client_frame__pack(f, p + h);
    ws_unmask(p + h, n, mask, 0);
    v.iov_len = h + n;
    return evbuffer_commit_space(out, &v, 1);
}

int wire_read_ws(struct evbuffer *in, size_t max, bool *up, wire_frame_fn fn, void *arg)
{
    if (!*up) {
        struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        if (end.pos < 0)
            return evbuffer_get_length(in) > 8192 ? -3 : 0;
        char status[13] = "";
        evbuffer_copyout(in, status, 12);
        if (memcmp(status, "HTTP/1.1 101", 12) != 0)
            return -3;
        evbuffer_drain(in, (size_t)end.pos + 4);
        *up = true;
    }
    size_t len = evbuffer_get_length(in);
    if (len < 2)
        return 0;
    const uint8_t *buf = evbuffer_pullup(in, -1);
    if (!buf)
        return -1;
    size_t off = 0;
    for (;;) {
        ws_frame f;
        int st = ws_frame_parse(buf + off, len - off, &f);
        if (st == 0)
            break;
        if (st < 0 || f.masked || !f.fin || f.len > max)
            return -1;
        if (f.len > len - off - f.hdr_len)
            break;
        const uint8_t *p = buf + off + f.hdr_len;
        if (f.opcode == WS_OP_CLOSE)
            return -3;
        if (f.opcode == WS_OP_BINARY && fn(arg, p, (size_t)f.len) < 0)
            return -2;
        if (f.opcode != WS_OP_BINARY && f.opcode != WS_OP_PING && f.opcode != WS_OP_PONG)
            return -1;
        off += f.hdr_len + (size_t)f.len;
    }
    evbuffer_drain(in, off);
    return 0;
}
