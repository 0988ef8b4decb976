/*
 * parleyd: the Parley server. Role `all` (the default) runs the gateway and
 * every service in this process on an embedded SQLite store.
 *
 * Threads: this main thread accepts connections and handles signals; N I/O
 * loops own the connections; the service runtime's worker pools do the
 * blocking work (storage, password hashing).
 */
#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus/bus.h"
#include "common/log.h"
#include "common/pwhash.h"
#include "gateway/gateway.h"
#include "net/listener.h"
#include "net/loop.h"
#include "rpc/local.h"
#include "server/config.h"
#include "services/limits.h"
#include "services/svc.h"

/* Everything the process runs, in one place. */
typedef struct server {
    config cfg;
    char db_path[PATH_MAX];
    svc_config svc_cfg;
    struct event_base *base;
    struct event *sigint, *sigterm;
    bus *bus;
    svc_runtime *rt;
    ProtobufCService *user, *social, *message;
    loop **loops;
    gateway *gw;
    listener *ls;
    const char *stop_reason;
} server;

static int server_mkdirs(const char *path, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
            goto fail;
        *p = '/';
    }
    if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
        goto fail;
    return 0;
fail:
    snprintf(err, errlen, "cannot create data directory %.400s: %s", tmp, strerror(errno));
    return -1;
}

/* The client built next to this binary if there is one, else its bare name:
 * the ready line should be a command the user can paste. */
static void server_client_path(char *out, size_t len)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    snprintf(out, len, "parley");
    if (n <= 0)
        return;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash)
        return;
    *slash = '\0';
    char candidate[PATH_MAX + 8];
    snprintf(candidate, sizeof(candidate), "%s/parley", self);
    char cwd[PATH_MAX];
    if (access(candidate, X_OK) != 0)
        return;
    /* Relative to the working directory when inside it: shorter to type. */
    size_t cl = getcwd(cwd, sizeof(cwd)) ? strlen(cwd) : 0;
    if (cl && strncmp(candidate, cwd, cl) == 0 && candidate[cl] == '/')
        snprintf(out, len, "%s", candidate + cl + 1);
    else
        snprintf(out, len, "%.*s", (int)len - 1, candidate);
}

static void server_on_signal(evutil_socket_t sig, short what, void *arg)
{
    server *s = arg;
    s->stop_reason = sig == SIGINT ? "SIGINT" : "SIGTERM";
    event_base_loopbreak(s->base);
}

static void server_on_accept(int fd, void *arg)
{
    server *s = arg;
    gateway_accept(s->gw, fd);
}

static int server_start(server *s, char *err, size_t errlen)
{
    config *cfg = &s->cfg;
    if (strcmp(cfg->role, "all") != 0) {
        snprintf(err, errlen, "role '%s' is not available in this build; use --role all",
                 cfg->role);
        return -1;
    }
    if (server_mkdirs(cfg->data, err, errlen) < 0)
        return -1;
    snprintf(s->db_path, sizeof(s->db_path), "%s/parley.db", cfg->data);
    if (pwhash_init() < 0 || loop_global_init() < 0) {
        snprintf(err, errlen, "cannot initialise libsodium or libevent threads");
        return -1;
    }
    s->svc_cfg = (svc_config){
        .db_path = s->db_path,
        .cost = cfg->cost,
        .store_workers = cfg->store_workers,
        .auth_workers = cfg->auth_workers,
        .max_batch = cfg->max_batch,
        .recall_window_ms = cfg->recall_window_s * 1000,
    };
    s->bus = bus_local_new();
    if (!s->bus) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->rt = svc_runtime_new(&s->svc_cfg, s->bus, err, errlen);
    if (!s->rt)
        return -1;
    s->user = rpc_local_new(s->rt, &svc_user);
    s->social = rpc_local_new(s->rt, &svc_social);
    s->message = rpc_local_new(s->rt, &svc_message);
    s->loops = calloc(cfg->threads, sizeof(*s->loops));
    if (!s->user || !s->social || !s->message || !s->loops) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (unsigned i = 0; i < cfg->threads; i++) {
        s->loops[i] = loop_new(i);
        if (!s->loops[i]) {
            snprintf(err, errlen, "cannot create event loop %u", i);
            return -1;
        }
    }
    gateway_config gcfg = {
        .gateway_id = 1,
        .limits = {.max_frame = cfg->max_frame,
                   .max_out = 8u << 20,
                   .idle_timeout_s = cfg->idle_timeout_s,
                   .max_inflight = cfg->max_inflight},
    };
    s->gw = gateway_new(&gcfg, s->loops, cfg->threads, s->user, s->social, s->message, s->bus);
    if (!s->gw) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (unsigned i = 0; i < cfg->threads; i++) {
        if (loop_start(s->loops[i]) < 0) {
            snprintf(err, errlen, "cannot start I/O thread %u", i);
            return -1;
        }
    }
    s->base = event_base_new();
    if (!s->base) {
        snprintf(err, errlen, "cannot create the main event base");
        return -1;
    }
    s->ls = listener_new(s->base, cfg->bind, cfg->port, server_on_accept, s, err, errlen);
    if (!s->ls)
        return -1;
    s->sigint = evsignal_new(s->base, SIGINT, server_on_signal, s);
    s->sigterm = evsignal_new(s->base, SIGTERM, server_on_signal, s);
    evsignal_add(s->sigint, NULL);
    evsignal_add(s->sigterm, NULL);
    return 0;
}

/* Tears down whatever server_start built, in the order that loses nothing:
 * stop accepting, say goodbye to clients, finish the queued storage work,
 * then stop the loops that deliver its results. */
static void server_stop(server *s)
{
    listener_free(s->ls);
    s->ls = NULL;
    if (s->gw)
        gateway_close_all(s->gw, "server shutting down");
    svc_runtime_free(s->rt);
    for (unsigned i = 0; s->loops && i < s->cfg.threads; i++)
        if (s->loops[i])
            loop_stop(s->loops[i]);
    gateway_free(s->gw);
    for (unsigned i = 0; s->loops && i < s->cfg.threads; i++)
        loop_free(s->loops[i]);
    free(s->loops);
    if (s->user)
        protobuf_c_service_destroy(s->user);
    if (s->social)
        protobuf_c_service_destroy(s->social);
    if (s->message)
        protobuf_c_service_destroy(s->message);
    bus_free(s->bus);
    if (s->sigint)
        event_free(s->sigint);
    if (s->sigterm)
        event_free(s->sigterm);
    if (s->base)
        event_base_free(s->base);
    libevent_global_shutdown();
}

int main(int argc, char **argv)
{
    server s;
    char err[512] = "";
    memset(&s, 0, sizeof(s));
    int rc = config_load(&s.cfg, argc, argv, err, sizeof(err));
    if (rc == 1)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "parleyd: %s\n", err);
        return 2;
    }
    log_set_level(s.cfg.level);
    signal(SIGPIPE, SIG_IGN);
    if (server_start(&s, err, sizeof(err)) < 0) {
        log_error("cannot start: %s", err);
        server_stop(&s);
        return 1;
    }
    int port = listener_port(s.ls);
    log_info("data in %s (SQLite), %u I/O threads, %u store workers, password cost %s", s.db_path,
             s.cfg.threads, s.cfg.store_workers,
             s.cfg.cost == PWHASH_INTERACTIVE ? "interactive"
             : s.cfg.cost == PWHASH_MODERATE  ? "moderate"
                                              : "min");
    log_info("listening on %s:%d", s.cfg.bind, port);
    char client[PATH_MAX];
    server_client_path(client, sizeof(client));
    printf("Parley is ready on %s:%d. Connect with: %s --host %s --port %d "
           "(Ctrl-C stops the server)\n",
           s.cfg.bind, port, client, s.cfg.bind, port);
    fflush(stdout);
    event_base_dispatch(s.base);
    log_info("%s received: shutting down", s.stop_reason ? s.stop_reason : "stop");
    server_stop(&s);
    log_info("stopped cleanly");
    return 0;
}
