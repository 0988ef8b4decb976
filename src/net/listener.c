#include "net/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"

struct listener {
    struct evconnlistener *ev;
    struct event *retry;
    listener_fn on_accept;
    void *arg;
    int port;
    char *path; /* a Unix socket's, removed at free */
};

static void listener_on_accept(struct evconnlistener *ev, evutil_socket_t fd, struct sockaddr *sa,
                               int salen, void *arg)
{
    listener *ls = arg;
    int one = 1;
    if (!ls->path)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ls->on_accept(fd, ls->arg);
}

static void listener_on_retry(evutil_socket_t fd, short what, void *arg)
{
    listener *ls = arg;
    evconnlistener_enable(ls->ev);
}

static void listener_on_error(struct evconnlistener *ev, void *arg)
{
    listener *ls = arg;
    int err = EVUTIL_SOCKET_ERROR();
    /* Out of descriptors: pause accepting for a moment rather than spin. */
    log_warn("accept failed: %s; pausing accepts for 100 ms", evutil_socket_error_to_string(err));
    evconnlistener_disable(ls->ev);
    struct timeval tv = {0, 100 * 1000};
    event_add(ls->retry, &tv);
}

listener *listener_new(struct event_base *base, const char *host, int port, listener_fn on_accept,
                       void *arg, char *err, size_t errlen)
{
    listener *ls = calloc(1, sizeof(*ls));
    struct addrinfo hints = {0}, *ai = NULL;
    char portstr[16];
    if (!ls) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ls->on_accept = on_accept;
    ls->arg = arg;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(portstr, sizeof(portstr), "%d", port);
    int rc = getaddrinfo(host, portstr, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(rc));
        goto fail;
    }
    ls->ev =
        evconnlistener_new_bind(base, listener_on_accept, ls,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                1024, ai->ai_addr, (int)ai->ai_addrlen);
    if (!ls->ev) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s%s", host, port, strerror(errno),
                 errno == EADDRINUSE ? " (another parleyd running? pick one with --port)" : "");
        goto fail;
    }
    evconnlistener_set_error_cb(ls->ev, listener_on_error);
    ls->retry = evtimer_new(base, listener_on_retry, ls);
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    getsockname(evconnlistener_get_fd(ls->ev), (struct sockaddr *)&ss, &sslen);
    ls->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                              : ((struct sockaddr_in *)&ss)->sin_port);
    freeaddrinfo(ai);
    return ls;
fail:
    if (ai)
        freeaddrinfo(ai);
    listener_free(ls);
    return NULL;
}

listener *listener_new_unix(struct event_base *base, const char *path, listener_fn on_accept,
                            void *arg, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "socket path %.200s is too long", path);
        return NULL;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    listener *ls = calloc(1, sizeof(*ls));
    if (!ls || !(ls->path = strdup(path))) {
        free(ls);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ls->on_accept = on_accept;
    ls->arg = arg;
    /* A socket file that nobody accepts on is a dead process's: replace it.
     * One that answers is another's, and stays. */
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        close(probe);
        snprintf(err, errlen, "another process is serving %.300s", path);
        free(ls->path);
        free(ls);
        return NULL;
    }
    if (probe >= 0)
        close(probe);
    unlink(path);
    /* 0600 before listen(): nobody else can connect at any moment. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, 0600) < 0) {
        snprintf(err, errlen, "cannot listen on %.300s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        goto fail;
    }
    ls->ev = evconnlistener_new(base, listener_on_accept, ls, LEV_OPT_CLOSE_ON_FREE, 16, fd);
    if (!ls->ev) {
        snprintf(err, errlen, "cannot listen on %.300s: %s", path, strerror(errno));
        close(fd);
        goto fail;
    }
    evconnlistener_set_error_cb(ls->ev, listener_on_error);
    ls->retry = evtimer_new(base, listener_on_retry, ls);
    return ls;
fail:
    listener_free(ls); /* removes the file too */
    return NULL;
}

int listener_port(const listener *ls)
{
    return ls->port;
}

void listener_free(listener *ls)
{
    if (!ls)
        return;
    if (ls->retry)
        event_free(ls->retry);
    if (ls->ev)
        evconnlistener_free(ls->ev);
    if (ls->path) {
        unlink(ls->path);
        free(ls->path);
    }
    free(ls);
}
