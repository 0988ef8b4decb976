#include "wire.h"

#include "common/frame.h"

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
