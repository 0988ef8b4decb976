/*
 * fuzz_ws: WebSocket (net/ws) as a connection reads it: the HTTP request
 * parser, the upgrade's checks, the web root's path decoder, and the frame
 * decoder with its reassembly, control frames and close handling, all
 * through a real conn on a loop driven from this thread.
 *
 * Input: one byte of FZ_* bits (how to cut the writes; whether a valid
 * handshake comes first, so that mutations go to the frames; a small
 * max_frame), then the client's byte stream. The pure parsers also see the
 * whole input on their own.
 *
 * What must hold: the server writes an HTTP answer first; after a 101,
 * only whole, unmasked, final frames of known opcodes (binary messages,
 * pongs, one close as the last); each binary message the handler got is at
 * most max_frame bytes (the handler echoes it: no more comes back);
 * a path the decoder accepts never holds a ".." or a hidden component.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/frame.h"
#include "common/log.h"
#include "fz_common.h"
#include "net/conn.h"
#include "net/loop.h"
#include "net/ws.h"

enum {
    FZ_CHUNK_MASK = 3,  /* 0: all at once, 1: 1 byte, 2: 7 bytes, 3: 61 bytes */
    FZ_HANDSHAKE = 4,   /* a valid upgrade request before the input */
    FZ_SMALL_FRAME = 8, /* max_frame 64 instead of 65536 */
};

static const char fz_upgrade[] = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:1\r\nUpgrade: websocket\r\n"
                                 "Connection: Upgrade\r\n"
                                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                 "Sec-WebSocket-Version: 13\r\n\r\n";

static loop *fz_loop;
static ws_config *fz_ws;
static conn_class fz_cls[2];
static int fz_closed;
static size_t fz_max;
static uint64_t fz_delivered; /* payload bytes handed to the handler */

static void fz_on_frame(conn *c, const uint8_t *payload, size_t len)
{
    if (len > fz_max)
        fz_fail("a message over max_frame reached the handler");
    fz_delivered += len;
    /* Echo it, framed as the gateway frames pushes (conn_send_raw). */
    uint8_t *buf = malloc(FRAME_HDR + len);
    if (!buf)
        abort();
    frame_put_header(buf, (uint32_t)len);
    if (len)
        memcpy(buf + FRAME_HDR, payload, len);
    conn_send_raw(c, buf, FRAME_HDR + len);
    free(buf);
}

static void fz_on_oversize(conn *c, size_t announced)
{
    if (announced <= fz_max)
        fz_fail("oversize announced for a message within max_frame");
}

static void fz_on_close(conn *c, const char *why)
{
    fz_closed = 1;
}

static const conn_handler fz_handler = {
    .on_frame = fz_on_frame, .on_oversize = fz_on_oversize, .on_close = fz_on_close};

static void fz_init(void)
{
    log_set_level(LOG_ERROR);
    if (loop_global_init() < 0 || !(fz_loop = loop_new(0)))
        fz_fail("loop");
    const char *dir = fz_data_dir();
    char path[4096];
    snprintf(path, sizeof(path), "%s/index.html", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        fz_fail("web root");
    fputs("<!doctype html>", f);
    fclose(f);
    char err[256];
    fz_ws = ws_config_new("", dir, err, sizeof(err));
    if (!fz_ws)
        fz_fail(err);
    for (int i = 0; i < 2; i++) {
        fz_cls[i].h = &fz_handler;
        fz_cls[i].ws = fz_ws;
        fz_cls[i].lim = (conn_limits){.max_frame = i ? 64 : 65536,
                                      .max_out = 1 << 20,
                                      .max_inflight = 64,
                                      .frame_timeout_s = 10,
                                      .idle_timeout_s = 60};
    }
}

/* The pure parts on the whole input. */
static void fz_pure(const uint8_t *data, size_t size)
{
    ws_request req;
    int st = ws_parse_request((const char *)data, size, &req);
    if (st == 1) {
        if (req.head_len > size || req.target.off + req.target.len > size)
            fz_fail("a span past the input");
        ws_check_upgrade(fz_ws, (const char *)data, &req, 0);
        char out[WS_MAX_PATH + 16];
        if (ws_target_path((const char *)data + req.target.off, req.target.len, out, sizeof(out)) ==
            0) {
            if (strstr(out, "..") && (strncmp(out, "..", 2) == 0 || strstr(out, "/..")))
                fz_fail("a path with a '..' component was accepted");
            if (out[0] == '.' || strstr(out, "/."))
                fz_fail("a hidden component was accepted");
            if (out[0] == '/' || strstr(out, "//"))
                fz_fail("an empty component was accepted");
        }
    }
    ws_frame f;
    size_t off = 0;
    while (off < size && ws_frame_parse(data + off, size - off, &f) == 1) {
        if (f.hdr_len < 2 || f.hdr_len > WS_MAX_HEADER)
            fz_fail("a header length out of range");
        ws_frame_check(&f, 0, 0, 65536);
        if (f.len > size - off - f.hdr_len)
            break;
        off += f.hdr_len + (size_t)f.len;
    }
}

/* Runs the loop until it has nothing to do right now. */
static void fz_spin(void)
{
    for (int i = 0; i < 4; i++)
        event_base_loop(loop_base(fz_loop), EVLOOP_NONBLOCK);
}

/* Reads what the server wrote so far into *buf. */
static void fz_read(int fd, uint8_t **buf, size_t *len, size_t *cap, int *eof)
{
    for (;;) {
        if (*cap - *len < 65536) {
            *cap = *cap ? *cap * 2 : 131072;
            *buf = realloc(*buf, *cap);
            if (!*buf)
                abort();
        }
        ssize_t n = read(fd, *buf + *len, *cap - *len);
        if (n > 0) {
            *len += (size_t)n;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            *eof = 1;
        return;
    }
}

/* Checks what the server wrote: an HTTP answer, then (after a 101)
 * frames only. */
static void fz_check_output(const uint8_t *out, size_t len)
{
    if (len == 0)
        return;
    if (len < 12 || memcmp(out, "HTTP/1.1 ", 9) != 0)
        fz_fail("the first bytes written are not an HTTP answer");
    const uint8_t *end = NULL;
    for (size_t i = 0; i + 3 < len; i++)
        if (memcmp(out + i, "\r\n\r\n", 4) == 0) {
            end = out + i + 4;
            break;
        }
    if (!end)
        fz_fail("an HTTP answer without its end");
    if (memcmp(out + 9, "101", 3) != 0)
        return;
    size_t off = (size_t)(end - out);
    int seen_close = 0;
    uint64_t echoed = 0;
    while (off < len) {
        ws_frame f;
        int st = ws_frame_parse(out + off, len - off, &f);
        if (st < 0)
            fz_fail("the server wrote a malformed frame header");
        /* A tail cut short: output still queued when the conn closed. */
        if (st == 0 || f.len > len - off - f.hdr_len)
            break;
        if (f.masked || !f.fin || f.rsv)
            fz_fail("a server frame masked, fragmented or with RSV bits");
        if (seen_close)
            fz_fail("a frame after the server's Close");
        switch (f.opcode) {
        case WS_OP_BINARY:
            echoed += f.len;
            break;
        case WS_OP_PONG:
            if (f.len > 125)
                fz_fail("a pong over 125 bytes");
            break;
        case WS_OP_CLOSE:
            seen_close = 1;
            if (f.len == 1 || f.len > 125)
                fz_fail("a close payload of a bad size");
            break;
        default:
            fz_fail("the server wrote an unexpected opcode");
        }
        off += f.hdr_len + (size_t)f.len;
    }
    if (echoed > fz_delivered)
        fz_fail("more echoed than the handler was given");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fz_loop)
        fz_init();
    if (size < 1)
        return 0;
    unsigned mode = data[0];
    data++;
    size--;
    fz_pure(data, size);

    static const size_t chunks[] = {SIZE_MAX, 1, 7, 61};
    size_t chunk = chunks[mode & FZ_CHUNK_MASK];
    if (size / chunk > 2048) /* a long input dribbled would only be slow */
        chunk = size / 2048 + 1;
    const conn_class *cls = &fz_cls[(mode & FZ_SMALL_FRAME) ? 1 : 0];
    fz_max = cls->lim.max_frame;
    fz_closed = 0;
    fz_delivered = 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        fz_fail("socketpair");
    conn *c = conn_new(fz_loop, sv[1], cls, 0);
    if (!c)
        fz_fail("conn_new");
    conn_ref(c);
    uint8_t *out = NULL;
    size_t out_len = 0, out_cap = 0;
    int eof = 0;
    if (mode & FZ_HANDSHAKE) {
        if (write(sv[0], fz_upgrade, sizeof(fz_upgrade) - 1) < 0)
            fz_fail("write");
        fz_spin();
    }
    size_t off = 0;
    while (off < size && !fz_closed && !eof) {
        size_t n = size - off < chunk ? size - off : chunk;
        ssize_t w = send(sv[0], data + off, n, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN)
            break;
        if (w > 0)
            off += (size_t)w;
        fz_spin();
        fz_read(sv[0], &out, &out_len, &out_cap, &eof);
    }
    fz_spin();
    fz_read(sv[0], &out, &out_len, &out_cap, &eof);
    /* The client leaves; the server notices and lets go. */
    shutdown(sv[0], SHUT_WR);
    for (int i = 0; i < 8 && !fz_closed; i++) {
        fz_spin();
        fz_read(sv[0], &out, &out_len, &out_cap, &eof);
    }
    if (!fz_closed)
        conn_close(c, "fuzz input done");
    fz_read(sv[0], &out, &out_len, &out_cap, &eof);
    fz_check_output(out, out_len);
    conn_unref(c);
    close(sv[0]);
    free(out);
    return 0;
}
