#include "net/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/frame.h"
#include "common/log.h"
#include "net/conn_impl.h"
#include "net/loop_impl.h"

/* A wake-up reads at most CONN_READ_BUDGET, then lets the other
 * connections have a turn. */
enum { CONN_SCRATCH = 128 * 1024, CONN_READ_BUDGET = 4 * CONN_SCRATCH, CONN_CLOSE_GRACE_S = 5 };

enum {
    CF_OPEN = 1 << 0,
    CF_CLOSE_AFTER_FLUSH = 1 << 1,
    CF_FLUSH_QUEUED = 1 << 2,
    CF_PAUSED = 1 << 3,
    CF_WANT_WRITE = 1 << 4,
    CF_READING = 1 << 5, /* the event currently includes EV_READ */
    CF_WRITING = 1 << 6, /* the event currently includes EV_WRITE */
    CF_WANT_DRAIN = 1 << 7,
    /* TLS: a read must wait until the socket is writable (a handshake
     * message to send), or a write until it is readable. */
    CF_TLS_READ_WAITS_WRITE = 1 << 8,
    CF_TLS_WRITE_WAITS_READ = 1 << 9,
    /* TLS: bytes wait inside the tls_conn, which the socket will not
     * announce; the event was made active to read them (conn_kick). */
    CF_KICKED = 1 << 10,
};

/* The tail of a partial frame, kept between reads (or, while reading is
 * paused, the frames held back). Only a connection with bytes in flight has
 * one, so the frame clock lives here rather than in every conn. */
struct inbuf {
    size_t len, cap;
    uint32_t since; /* when the first byte of the partial frame arrived */
    uint8_t data[];
};

struct conn {
    struct event ev;
    loop *loop;
    const conn_class *cls;
    conn *prev, *next;
    conn *flush_next;
    struct evbuffer *out;
    struct inbuf *in;
    tls_conn *tls; /* NULL: plain TCP */
    ws_conn *ws;   /* NULL: length-prefixed frames */
    int fd;
    /* The last complete frame; once closing after a flush, the time to
     * give up instead. */
    uint32_t last_active;
    uint32_t deadline; /* conn_set_deadline's, or 0 */
    uint32_t refs;
    uint16_t inflight;
    uint16_t flags;
    uint64_t udata[]; /* 8-byte alignment is enough: the handlers keep ints and pointers */
};

static void conn_on_event(evutil_socket_t fd, short what, void *arg);

static void conn_update_events(conn *c)
{
    if (!(c->flags & CF_OPEN))
        return;
    int want_read =
        !(c->flags & (CF_PAUSED | CF_CLOSE_AFTER_FLUSH)) || (c->flags & CF_TLS_WRITE_WAITS_READ);
    int want_write = (c->flags & (CF_WANT_WRITE | CF_TLS_READ_WAITS_WRITE)) != 0;
    int is_read = (c->flags & CF_READING) != 0;
    int is_write = (c->flags & CF_WRITING) != 0;
    if (want_read == is_read && want_write == is_write)
        return;
    event_del(&c->ev);
    short mask = (short)((want_read ? EV_READ : 0) | (want_write ? EV_WRITE : 0));
    event_assign(&c->ev, c->loop->base, c->fd, mask | EV_PERSIST, conn_on_event, c);
    event_priority_set(&c->ev, 0);
    if (mask)
        event_add(&c->ev, NULL);
    /* event_del dropped a pending kick: make it again. */
    if (c->flags & CF_KICKED)
        event_active(&c->ev, EV_READ, 0);
    c->flags = (uint16_t)((c->flags & ~(CF_READING | CF_WRITING)) | (want_read ? CF_READING : 0) |
                          (want_write ? CF_WRITING : 0));
}

conn *conn_new(loop *l, int fd, const conn_class *cls, size_t udata_size)
{
    conn *c = calloc(1, sizeof(*c) + udata_size);
    if (!c) {
        close(fd);
        return NULL;
    }
    if (cls->tls) {
        c->tls = tls_conn_new(cls->tls, fd, NULL);
        if (!c->tls) {
            log_warn("closing a new connection: %s", tls_error());
            free(c);
            close(fd);
            return NULL;
        }
    }
    if (cls->ws && !(c->ws = ws_conn_new())) {
        tls_conn_free(c->tls);
        free(c);
        close(fd);
        return NULL;
    }
    c->loop = l;
    c->cls = cls;
    c->fd = fd;
    c->refs = 1;
    loop_update_now(l);
    c->last_active = l->now;
    c->flags = CF_OPEN;
    event_assign(&c->ev, l->base, fd, 0, conn_on_event, c);
    conn_update_events(c);
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    return c;
}

void *conn_udata(conn *c)
{
    return c->udata;
}

const conn_handler *conn_get_handler(const conn *c)
{
    return c->cls->h;
}

loop *conn_loop(const conn *c)
{
    return c->loop;
}

tls_conn *conn_tls(const conn *c)
{
    return c->tls;
}

int conn_is_open(const conn *c)
{
    return (c->flags & CF_OPEN) != 0;
}

void conn_ref(conn *c)
{
    c->refs++;
}

/* Not inlined: GCC 12 at -O3 follows conn_close's unref into free() and then
 * warns that conn_flush_close's own unref uses freed memory, not seeing that
 * the reference it holds keeps the count above zero. */
__attribute__((noinline)) void conn_unref(conn *c)
{
    if (--c->refs == 0) {
        ws_conn_free(c->ws);
        free(c);
    }
}

void conn_close(conn *c, const char *why)
{
    if (!(c->flags & CF_OPEN))
        return;
    c->flags &= (uint16_t) ~(CF_OPEN | CF_WANT_DRAIN);
    c->deadline = 0;
    event_del(&c->ev);
    /* close_notify if the socket takes it now; a closing conn waits for
     * nothing more. */
    tls_conn_free(c->tls);
    c->tls = NULL;
    close(c->fd);
    c->fd = -1;
    if (c->out) {
        evbuffer_free(c->out);
        c->out = NULL;
    }
    free(c->in);
    c->in = NULL;
    if (c->ws)
        ws_conn_closed(c->ws);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->loop->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    c->cls->h->on_close(c, why);
    conn_unref(c);
}

void conn_close_after_flush(conn *c, const char *why)
{
    if (!(c->flags & CF_OPEN))
        return;
    if (c->ws && !(c->flags & CF_CLOSE_AFTER_FLUSH)) {
        ws_conn_goodbye(c, c->ws, WS_CLOSE_NORMAL);
        if (!(c->flags & CF_OPEN))
            return;
    }
    if (!c->out || evbuffer_get_length(c->out) == 0) {
        conn_close(c, why);
        return;
    }
    c->flags |= CF_CLOSE_AFTER_FLUSH;
    c->last_active = c->loop->now + CONN_CLOSE_GRACE_S;
    conn_update_events(c);
}

/* As much of the output as the socket takes (one writev): bytes written, 0
 * if it must become writable first (CF_WANT_WRITE), or -1 if the conn
 * closed. */
static int conn_tcp_write(conn *c)
{
    for (;;) {
        int n = evbuffer_write(c->out, c->fd);
        if (n > 0)
            return n;
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
            c->flags |= CF_WANT_WRITE;
            return 0;
        }
        conn_close(c, strerror(errno));
        return -1;
    }
}

/* One TLS record from the front of the output: bytes written, 0 if the
 * socket must become writable (CF_WANT_WRITE) or readable
 * (CF_TLS_WRITE_WAITS_READ) first, or -1 if the conn closed. A retry after
 * 0 passes the same bytes, and at least as many: the output only grows
 * until written. */
static int conn_tls_write(conn *c)
{
    size_t len = evbuffer_get_length(c->out);
    if (len > TLS_RECORD)
        len = TLS_RECORD;
    /* Gathered into one piece: one full record rather than one per chunk. */
    const unsigned char *p = evbuffer_pullup(c->out, (ev_ssize_t)len);
    if (!p) {
        conn_close(c, "out of memory");
        return -1;
    }
    ssize_t n = tls_write(c->tls, p, len);
    if (n > 0) {
        evbuffer_drain(c->out, (size_t)n);
        return (int)n;
    }
    if (n == TLS_WANT_WRITE) {
        c->flags |= CF_WANT_WRITE;
        return 0;
    }
    if (n == TLS_WANT_READ) {
        c->flags |= CF_TLS_WRITE_WAITS_READ;
        return 0;
    }
    conn_close(c, tls_error());
    return -1;
}

/* Writes what is queued without blocking. 0, or -1 if the conn closed. */
static int conn_write(conn *c)
{
    if (!(c->flags & CF_OPEN))
        return -1;
    c->flags &= (uint16_t) ~(CF_WANT_WRITE | CF_TLS_WRITE_WAITS_READ);
    while (c->out && evbuffer_get_length(c->out) > 0) {
        int n = c->tls ? conn_tls_write(c) : conn_tcp_write(c);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
    }
    /* With output left, CF_WANT_WRITE or CF_TLS_WRITE_WAITS_READ is set. */
    if (!c->out || evbuffer_get_length(c->out) == 0) {
        /* Nothing in flight: give the buffer back, an idle conn keeps none. */
        if (c->out) {
            evbuffer_free(c->out);
            c->out = NULL;
        }
        if (c->flags & CF_CLOSE_AFTER_FLUSH) {
            conn_close(c, "closed after reply");
            return -1;
        }
    }
    conn_update_events(c);
    return 0;
}

static void conn_queue_flush(conn *c)
{
    if (c->flags & CF_FLUSH_QUEUED)
        return;
    c->flags |= CF_FLUSH_QUEUED;
    conn_ref(c);
    c->flush_next = c->loop->flushing;
    c->loop->flushing = c;
    /* Queued by a handler the flush itself called (on_drain, on_close): the
     * flush ends by scheduling the next one, see conn_loop_flush. */
    if (!c->loop->in_flush)
        event_active(c->loop->flush, 0, 0);
}

size_t conn_out_pending(const conn *c)
{
    return c->out ? evbuffer_get_length(c->out) : 0;
}

static int conn_drained(const conn *c)
{
    size_t n = conn_out_pending(c);
    return n == 0 || n < c->cls->lim.low_water;
}

/* Calls on_drain if it was asked for and the output is low. Only from the
 * flush, with a reference held: never inside conn_send_*, never twice for a
 * conn in one flush. */
static void conn_drain_call(conn *c)
{
    if ((c->flags & (CF_OPEN | CF_WANT_DRAIN | CF_CLOSE_AFTER_FLUSH)) !=
            (CF_OPEN | CF_WANT_DRAIN) ||
        !conn_drained(c))
        return;
    c->flags &= (uint16_t)~CF_WANT_DRAIN;
    if (c->cls->h->on_drain)
        c->cls->h->on_drain(c);
}

void conn_want_drain(conn *c)
{
    if ((c->flags & (CF_OPEN | CF_CLOSE_AFTER_FLUSH)) != CF_OPEN)
        return;
    c->flags |= CF_WANT_DRAIN;
    if (conn_drained(c))
        conn_queue_flush(c);
}

void conn_loop_drop_flush(loop *l)
{
    conn *c = l->flushing;
    l->flushing = NULL;
    while (c) {
        conn *next = c->flush_next;
        c->flush_next = NULL;
        c->flags &= (uint16_t)~CF_FLUSH_QUEUED;
        conn_unref(c);
        c = next;
    }
}

void conn_loop_flush(loop *l)
{
    conn *c = l->flushing;
    l->flushing = NULL;
    l->in_flush = 1;
    while (c) {
        conn *next = c->flush_next;
        c->flush_next = NULL;
        c->flags &= (uint16_t)~CF_FLUSH_QUEUED;
        if ((c->flags & CF_OPEN) && conn_write(c) == 0)
            conn_drain_call(c);
        conn_unref(c);
        c = next;
    }
    l->in_flush = 0;
    /* What the handlers queued meanwhile goes out on the next pass, after the
     * loop has polled its sockets: running the flush again at once would let
     * a producer that refills on every drain keep the loop to itself. */
    if (l->flushing) {
        static const struct timeval zero = {0, 0};
        event_add(l->flush, &zero);
    }
}

static int conn_out_check(conn *c)
{
    if (evbuffer_get_length(c->out) > c->cls->lim.max_out) {
        log_warn("closing a connection whose reader is too slow (%zu bytes queued)",
                 evbuffer_get_length(c->out));
        conn_close(c, "output limit exceeded");
        return -1;
    }
    conn_queue_flush(c);
    return 0;
}

static int conn_out_ready(conn *c)
{
    if (!(c->flags & CF_OPEN))
        return -1;
    if (!c->out) {
        c->out = evbuffer_new();
        if (!c->out) {
            conn_close(c, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* A frame as one binary WebSocket message (dropped before the upgrade:
 * there is nothing to carry it yet). */
static int conn_send_msg_ws(conn *c, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    struct evbuffer_iovec iov;
    if (evbuffer_reserve_space(c->out, (ev_ssize_t)(WS_MAX_SERVER_HEADER + n), &iov, 1) < 1) {
        conn_close(c, "out of memory");
        return -1;
    }
    uint8_t *p = iov.iov_base;
    size_t h = ws_frame_header(p, WS_OP_BINARY, n);
    protobuf_c_message_pack(m, p + h);
    iov.iov_len = h + n;
    evbuffer_commit_space(c->out, &iov, 1);
    return conn_out_check(c);
}

int conn_send_msg(conn *c, const ProtobufCMessage *m)
{
    if (c->ws && (c->flags & CF_OPEN) && !ws_conn_open(c->ws))
        return 0;
    if (conn_out_ready(c) < 0)
        return -1;
    if (c->ws)
        return conn_send_msg_ws(c, m);
    size_t n = protobuf_c_message_get_packed_size(m);
    struct evbuffer_iovec iov;
    if (evbuffer_reserve_space(c->out, (ev_ssize_t)(FRAME_HDR + n), &iov, 1) < 1) {
        conn_close(c, "out of memory");
        return -1;
    }
    uint8_t *p = iov.iov_base;
    frame_put_header(p, (uint32_t)n);
    protobuf_c_message_pack(m, p + FRAME_HDR);
    iov.iov_len = FRAME_HDR + n;
    evbuffer_commit_space(c->out, &iov, 1);
    return conn_out_check(c);
}

int conn_send_raw(conn *c, const uint8_t *data, size_t len)
{
    if (c->ws)
        return (c->flags & CF_OPEN) && ws_conn_open(c->ws) ? ws_conn_send_framed(c, data, len)
               : (c->flags & CF_OPEN)                      ? 0
                                                           : -1;
    if (conn_out_ready(c) < 0)
        return -1;
    if (evbuffer_add(c->out, data, len) < 0) {
        conn_close(c, "out of memory");
        return -1;
    }
    return conn_out_check(c);
}

/* Hands each whole frame in buf[0..len) to the handler; returns how many
 * bytes were consumed (the rest is a partial frame, or unread because the
 * connection paused or closed). */
static size_t conn_parse(conn *c, uint8_t *buf, size_t len)
{
    if (c->ws)
        return (c->flags & CF_OPEN) && !(c->flags & (CF_PAUSED | CF_CLOSE_AFTER_FLUSH))
                   ? ws_conn_input(c, c->ws, buf, len)
                   : 0;
    size_t off = 0;
    while ((c->flags & CF_OPEN) && !(c->flags & (CF_PAUSED | CF_CLOSE_AFTER_FLUSH))) {
        const uint8_t *payload;
        size_t plen, used;
        frame_status st =
            frame_next(buf + off, len - off, c->cls->lim.max_frame, &payload, &plen, &used);
        if (st == FRAME_NEED_MORE)
            break;
        if (st == FRAME_TOO_LARGE) {
            const uint8_t *h = buf + off;
            size_t announced = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
            c->cls->h->on_oversize(c, announced);
            conn_close_after_flush(c, "frame too large");
            return len;
        }
        off += used;
        c->last_active = c->loop->now; /* only a whole frame counts as activity */
        c->cls->h->on_frame(c, payload, plen);
    }
    return off;
}

/* Keeps data[0..len) as the pending input (data may point into c->in).
 * `restart`: a frame was completed, so what is kept starts a new frame now;
 * else it is the same partial frame as before, whose clock goes on. */
static int conn_keep(conn *c, const uint8_t *data, size_t len, int restart)
{
    if (len == 0) {
        free(c->in);
        c->in = NULL;
        return 0;
    }
    if (c->in && data >= c->in->data && data < c->in->data + c->in->cap) {
        memmove(c->in->data, data, len);
        c->in->len = len;
        if (restart)
            c->in->since = c->loop->now;
        return 0;
    }
    if (!c->in)
        restart = 1;
    if (!c->in || c->in->cap < len) {
        size_t cap = len < 256 ? 256 : len;
        struct inbuf *in = realloc(c->in, sizeof(*in) + cap);
        if (!in)
            return -1;
        in->cap = cap;
        c->in = in;
    }
    memcpy(c->in->data, data, len);
    c->in->len = len;
    if (restart)
        c->in->since = c->loop->now;
    return 0;
}

static int conn_append(conn *c, const uint8_t *data, size_t len)
{
    size_t need = c->in->len + len;
    if (need > c->in->cap) {
        size_t cap = c->in->cap * 2 > need ? c->in->cap * 2 : need;
        struct inbuf *in = realloc(c->in, sizeof(*in) + cap);
        if (!in)
            return -1;
        in->cap = cap;
        c->in = in;
    }
    memcpy(c->in->data + c->in->len, data, len);
    c->in->len += len;
    return 0;
}

/* Parses what is kept in c->in (after a pause, or after appending). */
static void conn_parse_kept(conn *c)
{
    if (!c->in)
        return;
    size_t used = conn_parse(c, c->in->data, c->in->len);
    if (!(c->flags & CF_OPEN))
        return;
    if (conn_keep(c, c->in->data + used, c->in->len - used, used > 0) < 0)
        conn_close(c, "out of memory");
}

/* Runs conn_read on a later pass of the loop (the event made active by
 * hand): for TLS bytes already inside the tls_conn, and for a handshake
 * step that waited while reading was paused. */
static void conn_kick(conn *c)
{
    c->flags |= CF_KICKED;
    event_active(&c->ev, EV_READ, 0);
}

/* Reads into buf: bytes (> 0), 0 if none are there now, -1 if the conn
 * closed. */
static ssize_t conn_recv(conn *c, uint8_t *buf, size_t len)
{
    if (c->tls) {
        ssize_t n = tls_read(c->tls, buf, len);
        if (n > 0 || n == TLS_WANT_READ)
            return n > 0 ? n : 0;
        if (n == TLS_WANT_WRITE) {
            c->flags |= CF_TLS_READ_WAITS_WRITE;
            conn_update_events(c);
            return 0;
        }
        conn_close(c, n == 0 ? "peer closed" : tls_error());
        return -1;
    }
    for (;;) {
        ssize_t n = read(c->fd, buf, len);
        if (n > 0)
            return n;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        conn_close(c, n == 0 ? "peer closed" : strerror(errno));
        return -1;
    }
}

static void conn_read(conn *c)
{
    loop *l = c->loop;
    if (!l->scratch) {
        l->scratch = malloc(CONN_SCRATCH);
        if (!l->scratch) {
            conn_close(c, "out of memory");
            return;
        }
    }
    for (size_t budget = CONN_READ_BUDGET; budget > 0;) {
        if (!(c->flags & CF_OPEN) || (c->flags & (CF_PAUSED | CF_CLOSE_AFTER_FLUSH)))
            return;
        ssize_t n = conn_recv(c, l->scratch, CONN_SCRATCH);
        if (n <= 0)
            return;
        loop_update_now(l); /* the frame clocks start from here */
        if (c->in) {
            if (conn_append(c, l->scratch, (size_t)n) < 0) {
                conn_close(c, "out of memory");
                return;
            }
            conn_parse_kept(c);
        } else {
            size_t used = conn_parse(c, l->scratch, (size_t)n);
            if ((c->flags & CF_OPEN) && conn_keep(c, l->scratch + used, (size_t)n - used, 1) < 0) {
                conn_close(c, "out of memory");
                return;
            }
        }
        budget -= (size_t)n < budget ? (size_t)n : budget;
        /* A short read emptied the socket; TLS returns a record at a time,
         * so it reads on until it has to wait. */
        if (!c->tls && (size_t)n < CONN_SCRATCH)
            return;
    }
    /* Out of budget: the socket still says readable, but what TLS already
     * took from it would not be announced. */
    if (c->tls && (c->flags & CF_OPEN) && tls_pending(c->tls))
        conn_kick(c);
}

static void conn_on_event(evutil_socket_t fd, short what, void *arg)
{
    conn *c = arg;
    conn_ref(c);
    c->flags &= (uint16_t)~CF_KICKED;
    /* TLS may turn readiness round: a write that waits for the socket to be
     * readable, a read (a handshake step) that waits for it to be writable. */
    int wr = (what & EV_WRITE) || (c->flags & CF_TLS_WRITE_WAITS_READ);
    int rd = (what & EV_READ) || (c->flags & CF_TLS_READ_WAITS_WRITE);
    c->flags &= (uint16_t)~CF_TLS_READ_WAITS_WRITE; /* conn_recv sets it again */
    /* A drain it waits for is called from the flush, on this same pass. */
    if (wr && conn_write(c) == 0 && (c->flags & CF_WANT_DRAIN) && conn_drained(c))
        conn_queue_flush(c);
    if (rd && (c->flags & CF_OPEN))
        conn_read(c);
    /* A read that did not run (paused) leaves nothing to wait for: the
     * resume kicks it. */
    conn_update_events(c);
    conn_unref(c);
}

void conn_inflight_inc(conn *c)
{
    c->inflight++;
    if (c->inflight >= c->cls->lim.max_inflight && !(c->flags & CF_PAUSED)) {
        c->flags |= CF_PAUSED;
        conn_update_events(c);
    }
}

static void conn_resume(void *arg)
{
    conn *c = arg;
    if ((c->flags & CF_OPEN) && !(c->flags & CF_PAUSED)) {
        loop_update_now(c->loop);
        conn_parse_kept(c);
        conn_update_events(c);
        /* TLS may hold bytes (or a handshake step) the socket will not
         * announce again. */
        if (c->tls && (c->flags & CF_OPEN) && !(c->flags & CF_PAUSED))
            conn_kick(c);
    }
    conn_unref(c);
}

void conn_inflight_dec(conn *c)
{
    if (c->inflight > 0)
        c->inflight--;
    if ((c->flags & CF_PAUSED) && c->inflight <= c->cls->lim.max_inflight / 2) {
        c->flags &= (uint16_t)~CF_PAUSED;
        /* What was held back waited for us, not for the peer: its frame
         * clock starts again. */
        if (c->in) {
            loop_update_now(c->loop);
            c->in->since = c->loop->now;
        }
        if (c->ws)
            ws_conn_restart_clock(c->ws, c->loop->now);
        /* Parse what was held back on a fresh turn of the loop, not inside
         * the caller's completion callback. */
        conn_ref(c);
        loop_post(c->loop, conn_resume, c);
    }
}

void conn_set_deadline(conn *c, uint32_t secs)
{
    if (!(c->flags & CF_OPEN))
        return;
    if (secs == 0) {
        c->deadline = 0;
        return;
    }
    loop_update_now(c->loop);
    c->deadline = c->loop->now + secs;
    if (c->deadline == 0) /* 0 means none; one second late at the wrap */
        c->deadline = 1;
}

static void conn_deadline_passed(conn *c)
{
    c->deadline = 0; /* one shot: on_deadline may set the next one */
    if (c->cls->h->on_deadline)
        c->cls->h->on_deadline(c);
    else
        conn_close(c, "deadline passed");
}

/* If part of a frame (or of a WebSocket message in pieces) has arrived:
 * 1 and since when. */
static int conn_partial_since(const conn *c, uint32_t *since)
{
    uint32_t w;
    int any = 0;
    if (c->in) {
        *since = c->in->since;
        any = 1;
    }
    if (c->ws && ws_conn_partial_since(c->ws, &w) && (!any || (int32_t)(w - *since) < 0)) {
        *since = w;
        any = 1;
    }
    return any;
}

/* Once a second, O(conns) and without allocating. Each limit of S seconds
 * fires when the clock (in whole seconds, read when its event happened) has
 * moved more than S since: never early, at most about two seconds late. */
void conn_loop_tick(loop *l)
{
    uint32_t now = l->now, since;
    conn *c = l->conns;
    while (c) {
        conn *next = c->next;
        const conn_limits *lim = &c->cls->lim;
        if (c->flags & CF_CLOSE_AFTER_FLUSH) {
            if ((int32_t)(now - c->last_active) >= 0)
                conn_close(c, "close grace expired");
        } else if (lim->frame_timeout_s && !(c->flags & CF_PAUSED) &&
                   conn_partial_since(c, &since) && now - since > lim->frame_timeout_s) {
            conn_close(c, "frame timeout");
        } else if (c->deadline && (int32_t)(now - c->deadline) > 0) {
            conn_deadline_passed(c);
        } else if (lim->idle_timeout_s && c->inflight == 0 &&
                   now - c->last_active > lim->idle_timeout_s) {
            conn_close(c, "idle timeout");
        }
        c = next;
    }
}

int conn_peer_addr(const conn *c, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    if (!(c->flags & CF_OPEN) || len == 0 || getpeername(c->fd, (struct sockaddr *)&ss, &sslen) < 0)
        return -1;
    int af = ss.ss_family;
    const void *addr;
    if (af == AF_INET) {
        addr = &((const struct sockaddr_in *)&ss)->sin_addr;
    } else if (af == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)&ss)->sin6_addr;
        addr = a6;
        /* An IPv4 client of a dual-stack socket: one address, one spelling,
         * so per-address limits count it once. */
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            af = AF_INET;
            addr = a6->s6_addr + 12;
        }
    } else {
        return -1;
    }
    socklen_t cap = len > INET6_ADDRSTRLEN ? INET6_ADDRSTRLEN : (socklen_t)len;
    return inet_ntop(af, addr, buf, cap) ? 0 : -1;
}

void conn_flush_close(conn *c, const char *why)
{
    conn_ref(c);
    if (c->ws && (c->flags & CF_OPEN))
        ws_conn_goodbye(c, c->ws, WS_CLOSE_GOING_AWAY);
    conn_write(c);
    conn_close(c, why);
    conn_unref(c);
}

void conn_foreach(loop *l, void (*each)(conn *c, void *arg), void *arg)
{
    conn *c = l->conns;
    while (c) {
        conn *next = c->next;
        each(c, arg);
        c = next;
    }
}

/* ---- for the transports of net/ (conn_impl.h) ---- */

const conn_class *conn_class_of(const conn *c)
{
    return c->cls;
}

int conn_parsing(const conn *c)
{
    return (c->flags & (CF_OPEN | CF_PAUSED | CF_CLOSE_AFTER_FLUSH)) == CF_OPEN;
}

uint32_t conn_now(const conn *c)
{
    return c->loop->now;
}

void conn_active(conn *c)
{
    c->last_active = c->loop->now;
}

void conn_deliver(conn *c, const uint8_t *payload, size_t len)
{
    c->last_active = c->loop->now; /* only a whole frame counts as activity */
    c->cls->h->on_frame(c, payload, len);
}

void conn_oversize(conn *c, size_t announced)
{
    c->cls->h->on_oversize(c, announced);
}

int conn_out_pair(conn *c, const void *a, size_t alen, const void *b, size_t blen)
{
    if (conn_out_ready(c) < 0)
        return -1;
    if (evbuffer_add(c->out, a, alen) < 0 || (blen && evbuffer_add(c->out, b, blen) < 0)) {
        conn_close(c, "out of memory");
        return -1;
    }
    return conn_out_check(c);
}
