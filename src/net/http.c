#include "net/http.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "net/listener.h"

typedef struct http_conn {
    struct http_conn *prev, *next;
    http_server *s;
    int fd;
    struct event *io, *deadline;
    size_t len; /* request bytes in buf */
    char *out;  /* the response, once made */
    size_t out_len, out_off;
    char buf[HTTP_MAX_REQUEST];
} http_conn;

struct http_server {
    struct event_base *base;
    listener *ls;
    http_handler handler;
    void *arg;
    http_conn *conns;
    unsigned nconns;
};

/* ---- parsing ---- */

/* Where the request head ends (just past its blank line), or 0. */
static size_t http_head_end(const char *buf, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (buf[i + 1] == '\n')
            return i + 2;
        if (buf[i + 1] == '\r' && i + 2 < len && buf[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

int http_parse_request(const char *buf, size_t len, http_request *req)
{
    size_t end = http_head_end(buf, len);
    if (!end)
        return len >= HTTP_MAX_REQUEST ? 431 : 0;
    const char *eol = memchr(buf, '\n', end);
    size_t line = (size_t)(eol - buf);
    if (line && buf[line - 1] == '\r')
        line--;
    /* METHOD SP TARGET SP VERSION, nothing but visible ASCII in each. */
    const char *sp1 = memchr(buf, ' ', line);
    if (!sp1)
        return 400;
    size_t mlen = (size_t)(sp1 - buf);
    const char *target = sp1 + 1;
    const char *sp2 = memchr(target, ' ', line - mlen - 1);
    if (!sp2)
        return 400;
    size_t tlen = (size_t)(sp2 - target);
    const char *version = sp2 + 1;
    size_t vlen = line - mlen - tlen - 2;
    for (size_t i = 0; i < line; i++) {
        unsigned char ch = (unsigned char)buf[i];
        if ((ch < 0x21 || ch > 0x7e) && !(ch == ' ' && (buf + i == sp1 || buf + i == sp2)))
            return 400;
    }
    if (mlen == 0 || tlen == 0 || vlen == 0)
        return 400;
    if (vlen != 8 || memcmp(version, "HTTP/1.", 7) != 0)
        return memcmp(version, "HTTP/", vlen < 5 ? vlen : 5) == 0 ? 505 : 400;
    if (version[7] != '0' && version[7] != '1')
        return 505;
    if (target[0] != '/')
        return 400;
    const char *q = memchr(target, '?', tlen);
    size_t plen = q ? (size_t)(q - target) : tlen;
    if (plen > HTTP_MAX_PATH)
        return 414;
    if (mlen == 3 && memcmp(buf, "GET", 3) == 0)
        req->head = 0;
    else if (mlen == 4 && memcmp(buf, "HEAD", 4) == 0)
        req->head = 1;
    else
        return 405;
    memcpy(req->path, target, plen);
    req->path[plen] = '\0';
    return 1;
}

/* ---- connections ---- */

static void http_conn_free(http_conn *c)
{
    http_server *s = c->s;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    event_free(c->io);
    event_free(c->deadline);
    close(c->fd);
    free(c->out);
    free(c);
}

static const char *http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status < 500 ? "Client Error" : "Server Error";
    }
}

static void http_on_write(evutil_socket_t fd, short what, void *arg);

/* Queues the response (body taken over) and switches to writing it. */
static void http_respond(http_conn *c, http_response *res, int head)
{
    char hdr[512];
    const char *type = res->content_type ? res->content_type : "text/plain; charset=utf-8";
    int n = snprintf(hdr, sizeof(hdr),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
                     res->status, http_reason(res->status), type, res->body_len,
                     res->status == 405 ? "Allow: GET, HEAD\r\n" : "");
    size_t body = head ? 0 : res->body_len;
    c->out = malloc((size_t)n + body);
    if (c->out) {
        memcpy(c->out, hdr, (size_t)n);
        if (body)
            memcpy(c->out + n, res->body, body);
        c->out_len = (size_t)n + body;
    }
    free(res->body);
    res->body = NULL;
    if (!c->out) {
        http_conn_free(c);
        return;
    }
    event_del(c->io);
    event_assign(c->io, c->s->base, c->fd, EV_WRITE | EV_PERSIST, http_on_write, c);
    event_add(c->io, NULL);
}

static void http_error(http_conn *c, int status)
{
    char text[64];
    int n = snprintf(text, sizeof(text), "%d %s\n", status, http_reason(status));
    http_response res = {.status = status, .body = strdup(text), .body_len = (size_t)n};
    if (!res.body)
        res.body_len = 0;
    http_respond(c, &res, 0);
}

static void http_on_write(evutil_socket_t fd, short what, void *arg)
{
    http_conn *c = arg;
    while (c->out_off < c->out_len) {
        ssize_t n = send(fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        if (n <= 0)
            break;
        c->out_off += (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    http_conn_free(c);
}

static void http_on_read(evutil_socket_t fd, short what, void *arg)
{
    http_conn *c = arg;
    ssize_t n = recv(fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        http_conn_free(c);
        return;
    }
    c->len += (size_t)n;
    http_request req;
    int rc = http_parse_request(c->buf, c->len, &req);
    if (rc == 0)
        return;
    if (rc != 1) {
        http_error(c, rc);
        return;
    }
    http_response res = {.status = 500};
    c->s->handler(c->s->arg, &req, &res);
    http_respond(c, &res, req.head);
}

static void http_on_deadline(evutil_socket_t fd, short what, void *arg)
{
    http_conn_free(arg);
}

static void http_on_accept(int fd, void *arg)
{
    http_server *s = arg;
    if (s->nconns >= HTTP_MAX_CONNS) {
        close(fd);
        return;
    }
    http_conn *c = malloc(sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    memset(c, 0, offsetof(http_conn, buf));
    c->s = s;
    c->fd = fd;
    c->io = event_new(s->base, fd, EV_READ | EV_PERSIST, http_on_read, c);
    c->deadline = evtimer_new(s->base, http_on_deadline, c);
    if (!c->io || !c->deadline) {
        if (c->io)
            event_free(c->io);
        if (c->deadline)
            event_free(c->deadline);
        close(fd);
        free(c);
        return;
    }
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    struct timeval tv = {HTTP_DEADLINE_S, 0};
    event_add(c->deadline, &tv);
    event_add(c->io, NULL);
}

/* ---- the server ---- */

http_server *http_server_new(struct event_base *base, const char *host, int port,
                             http_handler handler, void *arg, char *err, size_t errlen)
{
    http_server *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->base = base;
    s->handler = handler;
    s->arg = arg;
    s->ls = listener_new(base, host, port, http_on_accept, s, err, errlen);
    if (!s->ls) {
        free(s);
        return NULL;
    }
    return s;
}

int http_server_port(const http_server *s)
{
    return listener_port(s->ls);
}

void http_server_free(http_server *s)
{
    if (!s)
        return;
    listener_free(s->ls);
    while (s->conns)
        http_conn_free(s->conns);
    free(s);
}
