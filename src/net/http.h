/*
 * http: a minimal HTTP/1.1 server for the admin port (metrics, health),
 * on an event base of the caller's (the main thread's), never blocking it.
 *
 * It serves only GET and HEAD of small answers made at once by a handler:
 * one request per connection, closed after the response. Everything from
 * the peer is hostile: the request head is bounded (HTTP_MAX_REQUEST bytes,
 * else 431), must arrive within HTTP_DEADLINE_S seconds along with the
 * response's writing, and at most HTTP_MAX_CONNS connections are served at
 * once (more are closed at accept). Headers are skipped, not parsed; a
 * body is not read.
 */
#ifndef PARLEY_HTTP_H
#define PARLEY_HTTP_H

#include <stddef.h>

struct event_base;
typedef struct http_server http_server;

enum { HTTP_MAX_REQUEST = 4096, HTTP_MAX_PATH = 256, HTTP_DEADLINE_S = 5, HTTP_MAX_CONNS = 32 };

/* A parsed request line. */
typedef struct http_request {
    int head;                     /* HEAD: send the headers only */
    char path[HTTP_MAX_PATH + 1]; /* the target up to '?', NUL-terminated */
} http_request;

/* What a handler answers: status, content type and a body (malloc'd,
 * taken over by the server; NULL with body_len 0 for none). */
typedef struct http_response {
    int status;
    const char *content_type;
    char *body;
    size_t body_len;
} http_response;

typedef void (*http_handler)(void *arg, const http_request *req, http_response *res);

/* Looks at the first len bytes received. 1: a whole request head, parsed
 * into req; 0: not yet whole, read more; otherwise the HTTP status to
 * answer with (400, 405, 414, 431, 505). Never reads past len. */
int http_parse_request(const char *buf, size_t len, http_request *req);

/* Listens on host:port (0 picks one) and answers each request with
 * handler. NULL on failure with the reason in err. */
http_server *http_server_new(struct event_base *base, const char *host, int port,
                             http_handler handler, void *arg, char *err, size_t errlen);
int http_server_port(const http_server *s);
/* Stops listening and drops the connections still open. */
void http_server_free(http_server *s);

#endif
