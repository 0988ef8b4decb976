/*
 * conn: see conn.h.
 */
#include "client/conn.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/frame.h"

enum { CONN_READ_CHUNK = 16 * 1024, CONN_READ_BUDGET = 1024 * 1024 };

void conn_init(conn *c)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->max_out = FRAME_MAX_DEFAULT;
}

void conn_set_tls(conn *c, trust *t)
{
    c->trust = t;
}

void conn_free(conn *c)
{
    conn_close(c);
    free(c->in);
    free(c->out);
    conn_init(c);
}

void conn_close(conn *c)
{
    tls_conn_free(c->tls);
    c->tls = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->in_off = 0;
    c->in_len = 0;
    c->out_off = 0;
    c->out_len = 0;
}

bool conn_is_open(const conn *c)
{
    return c->fd >= 0;
}

int conn_fd(const conn *c)
{
    return c->fd;
}

bool conn_want_write(const conn *c)
{
    return c->fd >= 0 && c->out_off < c->out_len;
}

static void conn_set_errno(conn *c, int e)
{
    snprintf(c->err, sizeof(c->err), "%s", strerror(e));
}

/* Connects one non-blocking socket to ai. Returns the fd, or -1 with errno. */
static int conn_try(const struct addrinfo *ai, int timeout_ms)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return -1;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        if (errno != EINPROGRESS)
            goto fail;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int n;
        do {
            n = poll(&p, 1, timeout_ms);
        } while (n < 0 && errno == EINTR);
        if (n < 0)
            goto fail;
        if (n == 0) {
            errno = ETIMEDOUT;
            goto fail;
        }
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
            goto fail;
        if (soerr != 0) {
            errno = soerr;
            goto fail;
        }
    }
    int one = 1;
    /* Chat lines are small and latency matters more than packet count. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;

fail:;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

static int64_t conn_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The TLS handshake on the connected c->fd, then whether to trust the
 * server. 0, or -1 with the reason in c->err. */
static int conn_tls_start(conn *c, const char *host, const char *port, int timeout_ms)
{
    c->tls = tls_conn_new(trust_tls(c->trust), c->fd, host);
    if (!c->tls) {
        snprintf(c->err, sizeof(c->err), "%s", tls_error());
        return -1;
    }
    int64_t deadline = conn_clock_ms() + timeout_ms;
    for (;;) {
        int r = tls_handshake(c->tls);
        if (r == 1)
            break;
        if (r == TLS_ERROR) {
            snprintf(c->err, sizeof(c->err), "%s (is that port TLS?)", tls_error());
            return -1;
        }
        int64_t left = deadline - conn_clock_ms();
        struct pollfd p = {.fd = c->fd, .events = r == TLS_WANT_READ ? POLLIN : POLLOUT};
        int n = left > 0 ? poll(&p, 1, (int)left) : 0;
        if (n < 0 && errno != EINTR) {
            conn_set_errno(c, errno);
            return -1;
        }
        if (n == 0 && left <= 0) {
            snprintf(c->err, sizeof(c->err), "no TLS handshake within %d ms", timeout_ms);
            return -1;
        }
    }
    if (trust_check(c->trust, c->tls, host, port, c->err, sizeof(c->err)) < 0) {
        c->refused = true;
        return -1;
    }
    return 0;
}

int conn_open(conn *c, const char *host, const char *port, int timeout_ms)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = -1;

    conn_close(c);
    c->refused = false;
    int g = getaddrinfo(host, port, &hints, &res);
    if (g != 0) {
        if (g == EAI_SYSTEM)
            conn_set_errno(c, errno);
        else
            snprintf(c->err, sizeof(c->err), "%s", gai_strerror(g));
        goto out;
    }
    int e = ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = conn_try(ai, timeout_ms);
        if (fd >= 0) {
            c->fd = fd;
            /* A server that was reached but failed TLS is the answer: no
             * other address is tried. */
            if (c->trust && conn_tls_start(c, host, port, timeout_ms) < 0) {
                char why[sizeof(c->err)];
                bool refused = c->refused;
                memcpy(why, c->err, sizeof(why));
                conn_close(c);
                memcpy(c->err, why, sizeof(why));
                c->refused = refused;
                goto out;
            }
            rc = 0;
            goto out;
        }
        e = errno;
    }
    conn_set_errno(c, e);

out:
    if (res)
        freeaddrinfo(res);
    return rc;
}

/* Makes room for n more bytes in buf (of *len used out of *cap). */
static int conn_reserve(uint8_t **buf, size_t *len, size_t *cap, size_t n)
{
    if (*len + n <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 4096;
    while (ncap < *len + n)
        ncap *= 2;
    uint8_t *p = realloc(*buf, ncap);
    if (!p)
        return -1;
    *buf = p;
    *cap = ncap;
    return 0;
}

int conn_send(conn *c, const Parley__ClientFrame *f)
{
    size_t n = parley__client_frame__get_packed_size(f);
    if (n > c->max_out) {
        errno = EMSGSIZE;
        snprintf(c->err, sizeof(c->err), "request of %zu bytes is over the limit of %zu", n,
                 c->max_out);
        return -1;
    }
    /* Reclaim the space of bytes already written. */
    if (c->out_off == c->out_len) {
        c->out_off = 0;
        c->out_len = 0;
    } else if (c->out_off > 0 && c->out_off >= c->out_cap / 2) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if (conn_reserve(&c->out, &c->out_len, &c->out_cap, FRAME_HDR + n) < 0) {
        errno = ENOMEM;
        conn_set_errno(c, ENOMEM);
        return -1;
    }
    frame_put_header(c->out + c->out_len, (uint32_t)n);
    parley__client_frame__pack(f, c->out + c->out_len + FRAME_HDR);
    c->out_len += FRAME_HDR + n;
    return 0;
}

int conn_flush(conn *c)
{
    if (c->fd < 0) {
        snprintf(c->err, sizeof(c->err), "not connected");
        return -1;
    }
    while (c->out_off < c->out_len) {
        if (c->tls) {
            /* A record at a time; after a WANT the same bytes come first
             * again, and no fewer (the buffer only grows until sent). */
            size_t len = c->out_len - c->out_off;
            ssize_t n = tls_write(c->tls, c->out + c->out_off, len < TLS_RECORD ? len : TLS_RECORD);
            if (n > 0) {
                c->out_off += (size_t)n;
                continue;
            }
            /* A write waiting to read happens in TLS 1.2 renegotiation
             * only, which both sides refuse. */
            if (n == TLS_WANT_WRITE || n == TLS_WANT_READ)
                return 0;
            snprintf(c->err, sizeof(c->err), "%s", tls_error());
            return -1;
        }
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            conn_set_errno(c, errno);
            return -1;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = 0;
    c->out_len = 0;
    return 0;
}

int conn_read(conn *c)
{
    if (c->fd < 0) {
        snprintf(c->err, sizeof(c->err), "not connected");
        return -1;
    }
    int got = 0;
    size_t budget = CONN_READ_BUDGET;
    if (c->in_off > 0) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    /* Past the budget, still what TLS holds: the socket would not say. */
    while (budget > 0 || (c->tls && tls_pending(c->tls))) {
        if (conn_reserve(&c->in, &c->in_len, &c->in_cap, CONN_READ_CHUNK) < 0) {
            conn_set_errno(c, ENOMEM);
            return -1;
        }
        ssize_t n;
        if (c->tls) {
            n = tls_read(c->tls, c->in + c->in_len, c->in_cap - c->in_len);
            if (n == TLS_WANT_READ || n == TLS_WANT_WRITE)
                return got;
            if (n == TLS_ERROR) {
                snprintf(c->err, sizeof(c->err), "%s", tls_error());
                return -1;
            }
        } else {
            n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return got;
            conn_set_errno(c, errno);
            return -1;
        }
        if (n == 0) {
            snprintf(c->err, sizeof(c->err), "connection closed by the server");
            return -1;
        }
        c->in_len += (size_t)n;
        budget = (size_t)n >= budget ? 0 : budget - (size_t)n;
        got = 1;
    }
    return got;
}

int conn_next(conn *c, Parley__ServerFrame **out)
{
    const uint8_t *payload;
    size_t plen, used;

    *out = NULL;
    if (c->in_off == c->in_len)
        return 0;
    frame_status st =
        frame_next(c->in + c->in_off, c->in_len - c->in_off, CONN_MAX_IN, &payload, &plen, &used);
    if (st == FRAME_NEED_MORE)
        return 0;
    if (st == FRAME_TOO_LARGE) {
        const uint8_t *h = c->in + c->in_off;
        /* A TLS record (an alert, a handshake) read as a frame header. */
        if (!c->tls && (h[0] == 0x15 || h[0] == 0x16) && h[1] == 0x03)
            snprintf(c->err, sizeof(c->err), "the server speaks TLS on this port: use --tls");
        else
            snprintf(c->err, sizeof(c->err), "the server sent a frame over %d bytes", CONN_MAX_IN);
        return -1;
    }
    Parley__ServerFrame *f = parley__server_frame__unpack(NULL, plen, payload);
    c->in_off += used;
    if (c->in_off == c->in_len) {
        c->in_off = 0;
        c->in_len = 0;
    }
    if (!f) {
        snprintf(c->err, sizeof(c->err), "the server sent a frame that does not decode");
        return -1;
    }
    *out = f;
    return 1;
}
