/*
 * listener: the accepting socket, run on the main event base. Accepted
 * sockets are made non-blocking with TCP_NODELAY and handed to on_accept,
 * which passes them on to an I/O loop.
 */
#ifndef PARLEY_LISTENER_H
#define PARLEY_LISTENER_H

#include <stddef.h>

struct event_base;
typedef struct listener listener;

typedef void (*listener_fn)(int fd, void *arg);

/* Binds host:port (port 0 picks a free one) and starts accepting on base.
 * NULL on failure with the reason in err. The caller owns the listener. */
listener *listener_new(struct event_base *base, const char *host, int port, listener_fn on_accept,
                       void *arg, char *err, size_t errlen);
/* Binds a Unix stream socket at path, mode 0600 (whoever may open it is
 * trusted: see the caller), replacing a file left there by a process that
 * is gone; the file is removed by listener_free. NULL on failure with the
 * reason in err (also if another process is accepting on path). */
listener *listener_new_unix(struct event_base *base, const char *path, listener_fn on_accept,
                            void *arg, char *err, size_t errlen);
/* The port actually bound (0 for a Unix socket). */
int listener_port(const listener *ls);
void listener_free(listener *ls);

#endif
