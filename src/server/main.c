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
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus/bus.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/pwhash.h"
#include "common/secret.h"
#include "gateway/gateway.h"
#include "net/listener.h"
#include "net/loop.h"
#include "net/tls.h"
#include "registry/registry.h"
#include "rpc/client.h"
#include "rpc/local.h"
#include "rpc/server.h"
#include "server/admin.h"
#include "server/config.h"
#include "services/admin.h"
#include "services/limits.h"
#include "services/svc.h"

/* Everything the process runs, in one place. */
typedef struct server {
    config cfg;
    char db_path[PATH_MAX];
    char file_dir[PATH_MAX];
    svc_config svc_cfg;
    struct event_base *base;
    struct event *sigint, *sigterm, *sighup;
    struct event *trim;
    uint64_t trim_seen;
    /* what runs here */
    int has_gateway;
    const svc_def *local[3]; /* user, social, message when served here */
    size_t nlocal;
    int cluster; /* registered in ZooKeeper */
    registry *reg;
    bus *bus;
    svc_runtime *rt;
    ProtobufCService *svc[3]; /* what the gateway calls: local or remote */
    loop **loops;
    unsigned nloops;
    gateway *gw;
    listener *ls;       /* the client port: TLS if tls is set */
    listener *ls_plain; /* with TLS, --plain-port */
    listener *ls_ws;    /* --ws-port: WebSocket and the web client, TLS if tls is set */
    ws_config *ws;
    tls_ctx *tls;
    rpc_server *rpc;
    rpc_server *admin_rpc;                      /* embedded: the admin socket DATA/admin.sock */
    const svc_def *rpc_defs[4];                 /* what rpc serves: local, and admin */
    char gw_name[REGISTRY_NAME_MAX + 1];        /* the gateway's node name */
    struct event *drain_ev;                     /* parleyctl drain: stop as SIGTERM would */
    const char *bye;                            /* what clients are told at the stop */
    tls_ctx *node_tls_server, *node_tls_client; /* RPC's mutual TLS, or NULL */
    const char *stop_reason;
    int lock_fd;  /* holds the data directory's lock; 0: none */
    admin *admin; /* --admin-port */
} server;

static const char *const server_service_names[3] = {"user", "social", "message"};

/* 1 if this process serves def itself. */
static int server_is_local(const server *s, const svc_def *def)
{
    for (unsigned i = 0; i < s->nlocal; i++)
        if (s->local[i] == def)
            return 1;
    return 0;
}

/* The largest file chunk, up or down: its frame (data and a few fields)
 * must fit under the frame limit. */
static unsigned server_file_chunk(unsigned max_frame)
{
    unsigned room = max_frame > 2048 ? max_frame - 1024 : max_frame / 2;
    return room < LIMIT_FILE_CHUNK ? room : LIMIT_FILE_CHUNK;
}

/* One parleyd per data directory: two writers would each believe their
 * view of the store. An exclusive lock on DATA/parleyd.lock, held for the
 * life of the process (the kernel drops it however the process ends), and
 * the holder's pid in the file for the error message. */
static int server_lock_data(server *s, const char *dir, char *err, size_t errlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/parleyd.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %.400s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        snprintf(err, errlen, "data directory %.400s is in use by another parleyd (pid %s)", dir,
                 pid[0] ? pid : "unknown");
        close(fd);
        return -1;
    }
    char pid[32];
    int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)len, 0) != len)
        log_warn("cannot write the pid to %s: %s", path, strerror(errno));
    s->lock_fd = fd;
    return 0;
}

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

/* Each client is a descriptor: take every one the system allows (as redis
 * does), since the soft limit is often far below the hard one. */
static void server_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_warn("cannot raise the open-file limit: %s", strerror(errno));
    }
}

/* Requests are allocated on one thread and freed on another; with glibc's
 * default trimming every burst shrinks a heap (madvise, TLB shootdowns on
 * every core) only to grow it again. Keep freed memory for reuse; the tick
 * hands it back with malloc_trim when the server is quiet.
 *
 * glibc gives a thread an arena at its first malloc, a new one until the
 * cap, then the existing ones in turn. 4: main, the store worker and two
 * auth workers take theirs at start, the I/O loops share. Each thread with
 * an arena of its own cost idle connections 34 bytes each; file workers
 * that took arenas at start (they now allocate nothing before their first
 * task, services/svc.c) cost the closed loop at 1,000 connections 10-15%. */
static void server_tune_malloc(void)
{
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_ARENA_MAX, 4);
}

/* Once a second: if no request came since the last look, hand the
 * memory freed after the last burst back to the system. */
static void server_on_trim(evutil_socket_t fd, short what, void *arg)
{
    server *s = arg;
    uint64_t n = s->rt ? svc_runtime_submitted(s->rt) : 0;
    if (n == s->trim_seen)
        malloc_trim(0);
    s->trim_seen = n;
}

/* parleyctl drain named this gateway (on the bus thread): the main loop
 * stops as at SIGTERM (leave the registry, stop accepting, bye to every
 * client, close each after its output, exit 0), the bye saying to
 * reconnect. */
static void server_on_drain(void *arg)
{
    server *s = arg;
    event_active(s->drain_ev, 0, 0);
}

static void server_on_drain_ev(evutil_socket_t fd, short what, void *arg)
{
    server *s = arg;
    log_info("audit event=drain gateway=%s: leaving the registry, sending every client elsewhere",
             s->gw_name);
    s->stop_reason = "drain";
    s->bye = "this gateway is draining: reconnect to another gateway";
    event_base_loopbreak(s->base);
}

static void server_on_signal(evutil_socket_t sig, short what, void *arg)
{
    server *s = arg;
    s->stop_reason = sig == SIGINT ? "SIGINT" : "SIGTERM";
    event_base_loopbreak(s->base);
}

/* The client port: TLS when configured. */
static void server_on_accept(int fd, void *arg)
{
    server *s = arg;
    if (s->tls)
        gateway_accept_tls(s->gw, fd);
    else
        gateway_accept(s->gw, fd);
}

static void server_on_accept_plain(int fd, void *arg)
{
    server *s = arg;
    gateway_accept(s->gw, fd);
}

static void server_on_accept_ws(int fd, void *arg)
{
    server *s = arg;
    gateway_accept_ws(s->gw, fd, s->tls != NULL);
}

/* --ws-port: its listener and what it serves (origins, the web root: the
 * build's web output when none is named and it exists). */
static int server_ws(server *s, char *err, size_t errlen)
{
    const config *cfg = &s->cfg;
    const char *root = cfg->web_root;
#ifdef PARLEY_WEB_DIR
    struct stat st;
    if (!root[0] && stat(PARLEY_WEB_DIR, &st) == 0 && S_ISDIR(st.st_mode))
        root = PARLEY_WEB_DIR;
#endif
    s->ws = ws_config_new(cfg->ws_origins, root, err, errlen);
    if (!s->ws)
        return -1;
    if (!root[0])
        log_info("no web client to serve (--web-root, or build it): --ws-port serves WebSocket "
                 "only");
    s->ls_ws = listener_new(s->base, cfg->bind, cfg->ws_port, server_on_accept_ws, s, err, errlen);
    return s->ls_ws ? 0 : -1;
}

/* ---- transport: TLS, or plain text where that is safe ---- */

static int server_tls_wanted(const config *cfg)
{
    return strcmp(cfg->tls, "auto") == 0 || cfg->tls_cert[0];
}

/* 1 if every address host stands for is a loopback one, 0 if not, -1 if it
 * does not resolve (the listener then says so). */
static int server_is_loopback(const char *host)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0)
        return -1;
    int all = 1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)ai->ai_addr;
            all &= (ntohl(a->sin_addr.s_addr) >> 24) == 127;
        } else if (ai->ai_family == AF_INET6) {
            const struct in6_addr *a = &((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
            all &= IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
        } else {
            all = 0;
        }
    }
    freeaddrinfo(res);
    return all;
}

/* Chat in plain text is for this machine only, unless the operator says
 * the network is private (or something else encrypts it). */
/* One USER:PASS secret, given as --NAME or read from --NAME-file, into out
 * ("" if neither is set). 0, or -1 with the reason in err. */
static int server_userpass(const char *name, const char *val, const char *file, char *out,
                           size_t outlen, char *err, size_t errlen)
{
    char why[256];
    out[0] = '\0';
    if (val[0] && file[0]) {
        snprintf(err, errlen, "--%s and --%s-file: give one of them", name, name);
        return -1;
    }
    if (file[0] && secret_read_line(file, out, outlen, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "--%s-file: %s", name, why);
        return -1;
    }
    if (val[0])
        snprintf(out, outlen, "%s", val);
    if (out[0] && !secret_is_userpass(out)) {
        explicit_bzero(out, outlen);
        snprintf(err, errlen, "--%s: expected USER:PASS", name);
        return -1;
    }
    return 0;
}

static int server_check_plain(const server *s, char *err, size_t errlen)
{
    const config *cfg = &s->cfg;
    int plain = !server_tls_wanted(cfg) || cfg->plain_port >= 0;
    if (!s->has_gateway || !plain || cfg->allow_plain || server_is_loopback(cfg->bind) != 0)
        return 0;
    snprintf(err, errlen,
             "refusing to serve plain text on %.200s%s, which is not a loopback address: serve "
             "TLS (--tls auto, or --tls-cert FILE --tls-key FILE), or pass --allow-plain if the "
             "network is private or something else encrypts it",
             cfg->bind, server_tls_wanted(cfg) ? " (--plain-port)" : "");
    return -1;
}

static void server_log_fingerprint(server *s, const char *what)
{
    uint8_t fp[TLS_FP_LEN];
    char text[TLS_FP_TEXT];
    tls_server_fingerprint(s->tls, fp);
    tls_fp_format(fp, text);
    log_info("%s: SHA-256 fingerprint %s", what, text);
}

/* Appends PATH to uri as the value of a query option, %XX-escaping what
 * a URI would misread. -1 if it does not fit. */
static int server_uri_option(char *uri, size_t cap, const char *name, const char *path)
{
    size_t n = strlen(uri);
    int w = snprintf(uri + n, cap - n, "%c%s=", strchr(uri, '?') ? '&' : '?', name);
    if (w < 0 || (size_t)w >= cap - n)
        return -1;
    n += (size_t)w;
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || strchr("/-_.~", *p);
        w = plain ? snprintf(uri + n, cap - n, "%c", *p) : snprintf(uri + n, cap - n, "%%%02X", *p);
        if (w < 0 || (size_t)w >= cap - n)
            return -1;
        n += (size_t)w;
    }
    return 0;
}

/* --db with --db-tls, --db-ca and --db-password-file folded into the
 * MariaDB URI's options, which every store connection is opened from. */
static int server_db_uri(server *s, char *err, size_t errlen)
{
    const config *cfg = &s->cfg;
    char *uri = s->db_path;
    size_t cap = sizeof(s->db_path);
    snprintf(uri, cap, "%s", cfg->db);
    if ((strcmp(cfg->db_tls, "require") == 0 && !cfg->db_ca[0] &&
         server_uri_option(uri, cap, "tls", "require") < 0) ||
        (cfg->db_ca[0] && server_uri_option(uri, cap, "tls-ca", cfg->db_ca) < 0) ||
        (cfg->db_password_file[0] &&
         server_uri_option(uri, cap, "password-file", cfg->db_password_file) < 0)) {
        snprintf(err, errlen, "--db and its --db-* options make too long a URI");
        return -1;
    }
    if (cfg->db_tls[0] && strcmp(cfg->db_tls, "require") == 0 && !cfg->db_ca[0])
        log_warn("--db-tls require without --db-ca: the connection to MariaDB is encrypted, "
                 "but whoever answers at its address is trusted (docs/security.md)");
    return 0;
}

/* --sync full: the SQLite URI's option (store.h), added to the path the
 * store connections open. */
static int server_sync_full(server *s, char *err, size_t errlen)
{
    char uri[sizeof(s->db_path)];
    const char *path = s->db_path;
    if (strncmp(path, "sqlite:", 7) == 0)
        path += strncmp(path, "sqlite://", 9) == 0 ? 9 : 7;
    int n = snprintf(uri, sizeof(uri), "sqlite:%s?sync=full", path);
    if (n < 0 || (size_t)n >= sizeof(uri)) {
        snprintf(err, errlen, "--sync full: the database path is too long");
        return -1;
    }
    memcpy(s->db_path, uri, (size_t)n + 1);
    return 0;
}

/* --tls-cert and --tls-key: loaded before anything is made, so that a bad
 * file stops the start with nothing left behind. */
static int server_tls_files(server *s, char *err, size_t errlen)
{
    const config *cfg = &s->cfg;
    if (!s->has_gateway || !cfg->tls_cert[0])
        return 0;
    struct stat st;
    if (stat(cfg->tls_key, &st) == 0 && (st.st_mode & 077))
        log_warn("the TLS key %s can be read by other users: chmod 600 it", cfg->tls_key);
    s->tls = tls_server_new(cfg->tls_cert, cfg->tls_key, err, errlen);
    if (!s->tls)
        return -1;
    server_log_fingerprint(s, "TLS certificate");
    return 0;
}

/* --tls auto: DATA/tls-cert.pem and DATA/tls-key.pem, made on the first
 * start (self-signed) and loaded on every start. */
static int server_tls_auto(server *s, char *err, size_t errlen)
{
    config *cfg = &s->cfg;
    if (!s->has_gateway || strcmp(cfg->tls, "auto") != 0)
        return 0;
    char cert[PATH_MAX], key[PATH_MAX];
    snprintf(cert, sizeof(cert), "%.4000s/tls-cert.pem", cfg->data);
    snprintf(key, sizeof(key), "%.4000s/tls-key.pem", cfg->data);
    if (server_mkdirs(cfg->data, err, errlen) < 0)
        return -1;
    int made = 0;
    if (access(cert, F_OK) != 0 || access(key, F_OK) != 0) {
        /* The names a client may know this server by; a client that pins
         * the fingerprint needs none of them. */
        char host[256] = "";
        const char *names[5];
        size_t n = 0;
        names[n++] = "localhost";
        if (gethostname(host, sizeof(host) - 1) == 0 && host[0] && strcmp(host, "localhost") != 0)
            names[n++] = host;
        names[n++] = "127.0.0.1";
        names[n++] = "::1";
        if (strcmp(cfg->advertise, "127.0.0.1") != 0 && strcmp(cfg->advertise, "0.0.0.0") != 0 &&
            strcmp(cfg->advertise, "::") != 0)
            names[n++] = cfg->advertise;
        if (tls_make_self_signed(cert, key, names, n, err, errlen) < 0)
            return -1;
        made = 1;
    }
    s->tls = tls_server_new(cert, key, err, errlen);
    if (!s->tls)
        return -1;
    if (made)
        log_info("made a self-signed TLS certificate %s (key %s)", cert, key);
    server_log_fingerprint(s, "TLS certificate");
    return 0;
}

/* SIGHUP: the certificate and key files again. New connections get them;
 * open ones keep what they have. */
static void server_on_hup(evutil_socket_t sig, short what, void *arg)
{
    server *s = arg;
    char err[512];
    /* logrotate moved the log file: write to a new one under its name. */
    if (log_reopen(err, sizeof(err)) < 0)
        log_error("SIGHUP: %s; still writing to the old file", err);
    if (!s->tls) {
        log_info("SIGHUP: no TLS certificate to reload");
        return;
    }
    if (tls_server_reload(s->tls, err, sizeof(err)) < 0) {
        log_error("SIGHUP: cannot reload the TLS certificate, still serving the old one: %s", err);
        return;
    }
    server_log_fingerprint(s, "SIGHUP: reloaded the TLS certificate");
}

/* ---- RPC between nodes: mutual TLS with the cluster's CA ---- */

/* --cluster-ca, --node-cert, --node-key: the contexts of the RPC server
 * (a service node's) and client (a gateway's), loaded before anything is
 * made. A gateway dials only nodes whose certificate says service; a node
 * answers only gateways (rpc/server.h). Without the flags a cluster node
 * serves and dials RPC in plain text and believes whoever connects: said
 * loudly, since anyone who reaches the port can act as any user. */
static int server_node_tls(server *s, char *err, size_t errlen)
{
    const config *cfg = &s->cfg;
    int serves = s->cluster && s->nlocal > 0;
    int calls = s->cluster && s->has_gateway && s->nlocal < 3;
    if (!serves && !calls) {
        if (cfg->cluster_ca[0])
            log_warn("--cluster-ca: no RPC to or from this process (it runs every service "
                     "itself); ignored");
        return 0;
    }
    if (!cfg->cluster_ca[0]) {
        if (serves)
            log_warn("WARNING: no --cluster-ca: the RPC port trusts anyone who can reach it; any "
                     "process on the network may read, send and log out as any user. Give every "
                     "node --cluster-ca, --node-cert and --node-key (docs/security.md)");
        if (calls)
            log_warn("WARNING: no --cluster-ca: calls to service nodes, users' messages and "
                     "passwords in them, go in plain text to whatever the registry names");
        return 0;
    }
    struct stat st;
    if (stat(cfg->node_key, &st) == 0 && (st.st_mode & 077))
        log_warn("the node key %s can be read by other users: chmod 600 it", cfg->node_key);
    if (serves) {
        s->node_tls_server =
            tls_node_new(1, cfg->cluster_ca, cfg->node_cert, cfg->node_key, NULL, err, errlen);
        if (!s->node_tls_server)
            return -1;
        if (!tls_ctx_has_role(s->node_tls_server, TLS_ROLE_SERVICE)) {
            snprintf(err, errlen,
                     "--node-cert %.400s is not a service node's: its subject needs OU=%s",
                     cfg->node_cert, TLS_ROLE_SERVICE);
            return -1;
        }
    }
    if (calls) {
        s->node_tls_client = tls_node_new(0, cfg->cluster_ca, cfg->node_cert, cfg->node_key,
                                          TLS_ROLE_SERVICE, err, errlen);
        if (!s->node_tls_client)
            return -1;
        if (!tls_ctx_has_role(s->node_tls_client, TLS_ROLE_GATEWAY)) {
            snprintf(err, errlen, "--node-cert %.400s is not a gateway's: its subject needs OU=%s",
                     cfg->node_cert, TLS_ROLE_GATEWAY);
            return -1;
        }
    }
    log_info("RPC between nodes: mutual TLS with the cluster CA %s", cfg->cluster_ca);
    return 0;
}

/* Parses --role into what runs here. */
static int server_roles(server *s, char *err, size_t errlen)
{
    const svc_def *defs[3] = {&svc_user, &svc_social, &svc_message};
    int want[3] = {0, 0, 0};
    char roles[sizeof(s->cfg.role)];
    snprintf(roles, sizeof(roles), "%s", s->cfg.role);
    for (char *save = NULL, *tok = strtok_r(roles, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (strcmp(tok, "all") == 0) {
            s->has_gateway = 1;
            want[0] = want[1] = want[2] = 1;
        } else if (strcmp(tok, "gateway") == 0) {
            s->has_gateway = 1;
        } else {
            int found = 0;
            for (int i = 0; i < 3; i++) {
                if (strcmp(tok, server_service_names[i]) == 0)
                    want[i] = found = 1;
            }
            if (!found) {
                snprintf(err, errlen,
                         "unknown role '%s': use all, or a comma list of gateway, user, social, "
                         "message",
                         tok);
                return -1;
            }
        }
    }
    for (int i = 0; i < 3; i++)
        if (want[i])
            s->local[s->nlocal++] = defs[i];
    if (!s->has_gateway && s->nlocal == 0) {
        snprintf(err, errlen, "--role names nothing to run");
        return -1;
    }
    s->cluster = s->cfg.zk[0] != 0;
    if (s->cfg.node_name[0] && !registry_name_ok(s->cfg.node_name)) {
        snprintf(err, errlen, "--node-name: 1 to %d letters, digits, '.', '_' or '-'",
                 REGISTRY_NAME_MAX);
        return -1;
    }
    int all_local = s->has_gateway && s->nlocal == 3;
    if (!all_local && !s->cluster) {
        snprintf(err, errlen, "role '%s' is part of a cluster: it needs --zk (and --redis)",
                 s->cfg.role);
        return -1;
    }
    if (s->cluster && !s->cfg.redis[0]) {
        snprintf(err, errlen, "a cluster node needs --redis HOST:PORT for presence and delivery");
        return -1;
    }
    return 0;
}

/* --node-name, or ROLE-ADDR-PORT with what a name may not hold made '_':
 * the name parleyctl shows (docs/operations.md "Admin"). */
static void server_node_name(const server *s, int port, char *out, size_t len)
{
    const config *cfg = &s->cfg;
    /* A name cut to fit is still a name: the results are only checked so
     * that GCC knows the cut is meant. */
    if (!len)
        return;
    if (cfg->node_name[0]) {
        size_t k = strnlen(cfg->node_name, len - 1);
        memcpy(out, cfg->node_name, k);
        out[k] = '\0';
        return;
    }
    int n = snprintf(out, len, "%.20s-%.40s-%d", cfg->role, cfg->advertise, port);
    if (n < 0)
        out[0] = '\0';
    for (char *p = out; *p; p++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", *p))
            *p = '_';
}

static int server_svc_index(const svc_def *d)
{
    return d == &svc_user ? 0 : d == &svc_social ? 1 : 2;
}

/* The services the gateway calls: in-process where served here, else remote
 * nodes found in the registry. */
static int server_gateway_services(server *s, char *err, size_t errlen)
{
    /* Bit i: method i may run twice without harm (reads, acks, logins). */
    static const uint64_t idempotent[3] = {
        (1u << 1) | (1u << 2) | (1u << 3), /* Login, Resume, Logout */
        (1u << 2),                         /* FriendList */
        /* SendDirect, SendGroup (by their reference), History, Recall, Ack, Sync */
        (1u << 0) | (1u << 1) | (1u << 2) | (1u << 3) | (1u << 4) | (1u << 5),
    };
    const char *balance[3] = {s->cfg.balance_user, s->cfg.balance_social, s->cfg.balance_message};
    const ProtobufCServiceDescriptor *descs[3] = {&parley__user_service__descriptor,
                                                  &parley__social_service__descriptor,
                                                  &parley__message_service__descriptor};
    for (size_t i = 0; i < s->nlocal; i++) {
        int k = server_svc_index(s->local[i]);
        s->svc[k] = rpc_local_new(s->rt, s->local[i]);
        if (!s->svc[k])
            goto oom;
        /* A login not started within the RPC deadline has been given up
         * on, as a remote call would be; other calls run however late. */
        rpc_local_set_caller(s->svc[k], gateway_call_gone, k == 0 ? s->cfg.rpc_timeout_ms : 0);
    }
    for (int k = 0; k < 3; k++) {
        if (s->svc[k])
            continue;
        rpc_client_config rc = {.timeout_ms = s->cfg.rpc_timeout_ms,
                                .idempotent = idempotent[k],
                                .tls = s->node_tls_client};
        if (rpc_balance_parse(balance[k], &rc.balance) < 0) {
            snprintf(err, errlen, "--balance-%s: expected round-robin, least-outstanding or ring",
                     server_service_names[k]);
            return -1;
        }
        s->svc[k] = rpc_client_new(descs[k], s->loops, s->nloops, &rc);
        if (!s->svc[k])
            goto oom;
        if (registry_watch(s->reg, server_service_names[k], rpc_client_on_nodes, s->svc[k], err,
                           errlen) < 0)
            return -1;
    }
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

/* --admin-port: ready when what this role uses is reachable. */
static int server_admin(server *s, char *err, size_t errlen)
{
    int redis = s->cfg.redis[0] != 0;
    admin_needs needs = {.registry = s->cluster,
                         .bus_links = redis && s->has_gateway,
                         .bus_publish = redis && !s->has_gateway,
                         .store = s->nlocal};
    static const svc_def *const defs[3] = {&svc_user, &svc_social, &svc_message};
    for (int k = 0, n = 0; k < 3 && s->has_gateway; k++)
        if (!server_is_local(s, defs[k]))
            needs.services[n++] = server_service_names[k];
    s->admin = admin_new(s->base, s->cfg.admin_bind, s->cfg.admin_port, &needs, err, errlen);
    if (!s->admin)
        return -1;
    log_info("admin port on %s:%d: /metrics, /healthz, /readyz", s->cfg.admin_bind,
             admin_port(s->admin));
    return 0;
}

static int server_start(server *s, char *err, size_t errlen)
{
    config *cfg = &s->cfg;
    if (server_roles(s, err, errlen) < 0)
        return -1;
    if (pwhash_init() < 0 || loop_global_init() < 0) {
        snprintf(err, errlen, "cannot initialise libsodium or libevent threads");
        return -1;
    }
    if (!cfg->gateway_id) {
        uint32_t r;
        pwhash_random(&r, sizeof(r));
        cfg->gateway_id = (r & 0x7fffffff) | 1;
    }
    if (!cfg->advertise[0])
        snprintf(cfg->advertise, sizeof(cfg->advertise), "%s",
                 strcmp(cfg->bind, "0.0.0.0") == 0 ? "127.0.0.1" : cfg->bind);

    /* The client port first: a server that cannot listen must leave
     * nothing behind (no data directory, no database). Nothing is accepted
     * before the loop runs, by which time the gateway exists. */
    s->base = event_base_new();
    if (!s->base) {
        snprintf(err, errlen, "cannot create the main event base");
        return -1;
    }
    if (server_check_plain(s, err, errlen) < 0 || server_tls_files(s, err, errlen) < 0)
        return -1;
    if (server_node_tls(s, err, errlen) < 0)
        return -1;
    if (s->has_gateway) {
        s->ls = listener_new(s->base, cfg->bind, cfg->port, server_on_accept, s, err, errlen);
        if (!s->ls)
            return -1;
        if (server_tls_wanted(cfg) && cfg->plain_port >= 0) {
            s->ls_plain = listener_new(s->base, cfg->bind, cfg->plain_port, server_on_accept_plain,
                                       s, err, errlen);
            if (!s->ls_plain)
                return -1;
        }
        if (cfg->ws_port && server_ws(s, err, errlen) < 0)
            return -1;
    }

    /* Reach the shared servers first: a clear error now beats a node that
     * starts and then serves nobody. */
    if (s->cluster) {
        char auth[256];
        if (server_userpass("zk-auth", cfg->zk_auth, cfg->zk_auth_file, auth, sizeof(auth), err,
                            errlen) < 0)
            return -1;
        if (!auth[0])
            log_warn("no --zk-auth: Parley's znodes are open to anyone who reaches ZooKeeper "
                     "(docs/security.md)");
        s->reg = registry_zk_new_auth(cfg->zk, (int)cfg->zk_timeout_ms, 5000, auth, err, errlen);
        explicit_bzero(auth, sizeof(auth));
        if (!s->reg)
            return -1;
    }
    if (cfg->redis[0]) {
        char host[256];
        const char *colon = strrchr(cfg->redis, ':');
        if (!colon || colon == cfg->redis || !colon[1]) {
            snprintf(err, errlen, "--redis: expected HOST:PORT, got '%s'", cfg->redis);
            return -1;
        }
        snprintf(host, sizeof(host), "%.*s", (int)(colon - cfg->redis), cfg->redis);
        char auth[256], why[256];
        unsigned char key[BUS_KEY_LEN];
        bus_redis_secrets sec = {.auth = auth, .key = NULL};
        if (server_userpass("redis-auth", cfg->redis_auth, cfg->redis_auth_file, auth, sizeof(auth),
                            err, errlen) < 0)
            return -1;
        if (cfg->cluster_key_file[0]) {
            if (secret_read_key(cfg->cluster_key_file, key, sizeof(key), why, sizeof(why)) < 0) {
                explicit_bzero(auth, sizeof(auth));
                snprintf(err, errlen, "--cluster-key-file: %s", why);
                return -1;
            }
            sec.key = key;
        }
        if (!auth[0])
            log_warn("no --redis-auth: this node uses Redis's default user (docs/security.md)");
        if (!sec.key)
            log_warn("no --cluster-key-file: bus messages carry no MAC, and a gateway delivers "
                     "whatever anyone publishes on its channel (docs/security.md)");
        s->bus = bus_redis_new_secure(host, atoi(colon + 1), s->has_gateway ? cfg->gateway_id : 0,
                                      &sec, err, errlen);
        explicit_bzero(auth, sizeof(auth));
        explicit_bzero(key, sizeof(key));
    } else {
        s->bus = bus_local_new();
        if (!s->bus)
            snprintf(err, errlen, "out of memory");
    }
    if (!s->bus)
        return -1;

    if (s->nlocal) {
        if (cfg->db[0]) {
            if (server_db_uri(s, err, errlen) < 0)
                return -1;
        } else {
            if (server_mkdirs(cfg->data, err, errlen) < 0 ||
                server_lock_data(s, cfg->data, err, errlen) < 0)
                return -1;
            snprintf(s->db_path, sizeof(s->db_path), "%s/parley.db", cfg->data);
        }
        if (strcmp(cfg->sync, "full") == 0 && server_sync_full(s, err, errlen) < 0)
            return -1;
        /* SQLite has a single writer: a second worker would only wait on
         * its lock (sleeping in the busy handler) while batches shrink. On
         * MariaDB one per node too: the ring already spreads conversations
         * over the nodes, and in a local cluster at 5,000 msg/s offered a
         * second worker per node (each taking half the conversations) gave
         * smaller batches, more statements and a p50 of 8-30 ms against
         * 4.5-6.4 ms with one. Set more where the database has cores to
         * spare. */
        if (!cfg->store_workers)
            cfg->store_workers = 1;
        /* Files beside the database by default; a cluster's message nodes
         * name one directory they all reach (docs/architecture.md). */
        if (cfg->file_dir[0])
            snprintf(s->file_dir, sizeof(s->file_dir), "%s", cfg->file_dir);
        else
            snprintf(s->file_dir, sizeof(s->file_dir), "%s/files", cfg->data);
        /* Group commit, while requests keep coming (common/pool). A
         * statement to MariaDB is a round trip that costs its server far
         * more than the rows in it: 2 ms took MariaDB from 75-93% of a core
         * to 53-64% at 5,000 msg/s in a local cluster, the p99 from 97-814
         * ms to 35-81 ms. On SQLite each commit still costs its locks, a
         * WAL write and a wake-up of every loop it answers: 500 us cut the
         * server's CPU per message at a paced 5,000/s by about 25% for 0.5
         * ms more p50 (docs/performance.md). */
        if (cfg->batch_wait_us == CONFIG_UNSET)
            cfg->batch_wait_us = strncmp(s->db_path, "mariadb://", 10) == 0 ? 2000 : 500;
        s->svc_cfg = (svc_config){
            .db_path = s->db_path,
            .cost = cfg->cost,
            .store_workers = cfg->store_workers,
            .auth_workers = cfg->auth_workers,
            .max_batch = cfg->max_batch,
            .linger_us = cfg->batch_wait_us,
            .recall_window_ms = cfg->recall_window_s * 1000,
            .max_friends = cfg->max_friends,
            .max_groups = cfg->max_groups,
            .max_members = cfg->max_members,
            .session_ttl_ms = (int64_t)cfg->session_ttl_days * 86400000,
            .sessions_per_user = cfg->sessions_per_user,
            .file_dir = s->file_dir,
            .max_file_size = cfg->max_file_size,
            .file_quota = cfg->file_quota,
            .file_chunk_max = server_file_chunk(cfg->max_frame),
            .upload_ttl_ms = (int64_t)cfg->upload_ttl_s * 1000,
        };
        s->rt = svc_runtime_new(&s->svc_cfg, s->bus, err, errlen);
        if (!s->rt)
            return -1;
    }

    if (server_tls_auto(s, err, errlen) < 0)
        return -1;

    s->nloops = cfg->threads;
    s->loops = calloc(s->nloops, sizeof(*s->loops));
    if (!s->loops) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (unsigned i = 0; i < s->nloops; i++) {
        s->loops[i] = loop_new(i);
        if (!s->loops[i]) {
            snprintf(err, errlen, "cannot create event loop %u", i);
            return -1;
        }
    }
    if (s->has_gateway) {
        if (server_gateway_services(s, err, errlen) < 0)
            return -1;
        server_node_name(s, listener_port(s->ls), s->gw_name, sizeof(s->gw_name));
        s->drain_ev = event_new(s->base, -1, 0, server_on_drain_ev, s);
        gateway_config gcfg = {
            .gateway_id = cfg->gateway_id,
            /* A call to a remote node, or a statement on a MariaDB connection
             * that died, may be run again: a ref makes that safe. */
            .send_refs =
                !server_is_local(s, &svc_message) || strncmp(s->db_path, "mariadb://", 10) == 0,
            .limits = {.max_frame = cfg->max_frame,
                       .max_out = 8u << 20,
                       .idle_timeout_s = cfg->idle_timeout_s,
                       .frame_timeout_s = cfg->frame_timeout_s,
                       .max_inflight = cfg->max_inflight,
                       /* A catch-up page waits until the output is below
                        * this: a page is at most a few hundred KiB. */
                       .low_water = 256u << 10},
            .abuse = {.max_conns_per_ip = cfg->max_conns_per_ip,
                      .hello_timeout_s = cfg->hello_timeout_s,
                      .login_timeout_s = cfg->login_timeout_s,
                      .req_rate = cfg->req_rate,
                      .msg_rate = cfg->msg_rate,
                      .history_rate = cfg->history_rate,
                      .reg_rate = cfg->reg_rate,
                      .fail_rate = cfg->login_fail_rate,
                      .fail_free = cfg->login_fail_free,
                      .fail_max_delay_s = cfg->login_fail_max_delay_s,
                      .auth_per_conn = cfg->auth_queue_per_conn,
                      .auth_per_ip = cfg->auth_queue_per_ip,
                      .auth_total = cfg->auth_queue},
            .tls = s->tls,
            .ws = s->ws,
            .node_name = s->gw_name,
            .on_drain = s->cluster ? server_on_drain : NULL,
            .drain_arg = s,
        };
        s->gw = gateway_new(&gcfg, s->loops, s->nloops, s->svc[0], s->svc[1], s->svc[2], s->bus);
        if (!s->gw) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    for (unsigned i = 0; i < s->nloops; i++) {
        if (loop_start(s->loops[i]) < 0) {
            snprintf(err, errlen, "cannot start I/O thread %u", i);
            return -1;
        }
    }
    if (s->cluster && s->nlocal) {
        /* Admin methods too, for a peer with an admin certificate only. */
        memcpy(s->rpc_defs, s->local, s->nlocal * sizeof(s->local[0]));
        s->rpc_defs[s->nlocal] = &svc_admin;
        s->rpc = rpc_server_new(s->base, cfg->bind, cfg->rpc_port, s->loops, s->nloops, s->rt,
                                s->rpc_defs, s->nlocal + 1, s->node_tls_server, err, errlen);
        if (!s->rpc)
            return -1;
        char addr[300], name[REGISTRY_NAME_MAX + 1];
        snprintf(addr, sizeof(addr), "%s:%d", cfg->advertise, rpc_server_port(s->rpc));
        server_node_name(s, rpc_server_port(s->rpc), name, sizeof(name));
        for (size_t i = 0; i < s->nlocal; i++) {
            if (registry_register_named(s->reg, server_service_names[server_svc_index(s->local[i])],
                                        name, addr, err, errlen) < 0)
                return -1;
        }
        log_info("serving RPC on %s", addr);
    }
    /* Embedded: parleyctl --data DIR speaks to this, trusted by the file's
     * permissions (docs/operations.md "Admin"). Only where the data
     * directory's lock is ours: the socket there is then ours too. */
    if (!s->cluster && s->nlocal && s->lock_fd > 0) {
        static const svc_def *const admin_only[] = {&svc_admin};
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%.4000s/admin.sock", cfg->data);
        s->admin_rpc = rpc_server_new_unix(s->base, path, s->loops, s->nloops, s->rt, admin_only, 1,
                                           err, errlen);
        if (!s->admin_rpc)
            return -1;
        log_info("admin socket on %s (parleyctl --data %s)", path, cfg->data);
    }
    if (s->has_gateway) {
        if (s->cluster) {
            char addr[300];
            snprintf(addr, sizeof(addr), "%s:%d", cfg->advertise, listener_port(s->ls));
            if (registry_register_named(s->reg, "gateway", s->gw_name, addr, err, errlen) < 0)
                return -1;
        }
    }
    if (cfg->admin_port && server_admin(s, err, errlen) < 0)
        return -1;
    s->trim = event_new(s->base, -1, EV_PERSIST, server_on_trim, s);
    struct timeval every = {1, 0};
    event_add(s->trim, &every);
    s->sigint = evsignal_new(s->base, SIGINT, server_on_signal, s);
    s->sigterm = evsignal_new(s->base, SIGTERM, server_on_signal, s);
    /* Also keeps SIGHUP from ending the process. */
    s->sighup = evsignal_new(s->base, SIGHUP, server_on_hup, s);
    evsignal_add(s->sigint, NULL);
    evsignal_add(s->sigterm, NULL);
    evsignal_add(s->sighup, NULL);
    return 0;
}

/* Tears down whatever server_start built, in the order that loses nothing:
 * leave the registry and stop accepting, say goodbye to clients, finish the
 * queued storage work and send its results, then stop the loops. */
static void server_stop(server *s)
{
    admin_free(s->admin);
    s->admin = NULL;
    registry_free(s->reg);
    s->reg = NULL;
    listener_free(s->ls);
    s->ls = NULL;
    listener_free(s->ls_plain);
    s->ls_plain = NULL;
    listener_free(s->ls_ws);
    s->ls_ws = NULL;
    /* No admin call may come in once the runtime is going. */
    if (s->admin_rpc)
        rpc_server_close_all(s->admin_rpc);
    /* Queued logins and registrations are answered, not hashed. */
    svc_runtime_stop(s->rt);
    if (s->gw)
        gateway_close_all(s->gw, s->bye ? s->bye : "server shutting down");
    svc_runtime_free(s->rt);
    if (s->rpc)
        rpc_server_close_all(s->rpc);
    for (unsigned i = 0; s->loops && i < s->nloops; i++)
        if (s->loops[i])
            loop_stop(s->loops[i]);
    gateway_free(s->gw);
    for (int k = 0; k < 3; k++)
        if (s->svc[k])
            protobuf_c_service_destroy(s->svc[k]);
    for (unsigned i = 0; s->loops && i < s->nloops; i++)
        loop_free(s->loops[i]);
    free(s->loops);
    rpc_server_free(s->rpc);
    rpc_server_free(s->admin_rpc);
    bus_free(s->bus);
    if (s->trim)
        event_free(s->trim);
    if (s->sigint)
        event_free(s->sigint);
    if (s->sigterm)
        event_free(s->sigterm);
    if (s->sighup)
        event_free(s->sighup);
    if (s->drain_ev)
        event_free(s->drain_ev);
    /* After the loops: their connections are gone. */
    tls_ctx_free(s->tls);
    ws_config_free(s->ws);
    tls_ctx_free(s->node_tls_server);
    tls_ctx_free(s->node_tls_client);
    if (s->base)
        event_base_free(s->base);
    libevent_global_shutdown();
    if (s->lock_fd > 0)
        close(s->lock_fd);
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
    if (s.cfg.no_metrics)
        metrics_disable();
    log_format lf = LOG_TEXT;
    log_format_parse(s.cfg.log_format, &lf);
    log_set_format(lf);
    if (s.cfg.log_file[0] && log_open_file(s.cfg.log_file, err, sizeof(err)) < 0) {
        fprintf(stderr, "parleyd: %s\n", err);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    server_raise_nofile();
    server_tune_malloc();
    if (server_start(&s, err, sizeof(err)) < 0) {
        log_error("cannot start: %s", err);
        server_stop(&s);
        return 1;
    }
    char shown[PATH_MAX];
    if (s.nlocal)
        log_info("role %s: data in %s, %u I/O threads, %u store workers, password cost %s",
                 s.cfg.role, store_uri_redacted(s.db_path, shown, sizeof(shown)), s.cfg.threads,
                 s.cfg.store_workers,
                 s.cfg.cost == PWHASH_INTERACTIVE ? "interactive"
                 : s.cfg.cost == PWHASH_MODERATE  ? "moderate"
                                                  : "min");
    if (s.ls) {
        int port = listener_port(s.ls);
        log_info("gateway %u listening on %s:%d%s", s.cfg.gateway_id, s.cfg.bind, port,
                 s.tls ? " (TLS)" : "");
        if (s.ls_plain)
            log_info("plain TCP on %s:%d too (--plain-port)", s.cfg.bind,
                     listener_port(s.ls_plain));
        if (s.ls_ws)
            log_info("web client at %s://%s:%d/ (WebSocket: %s://%s:%d/ws)",
                     s.tls ? "https" : "http", s.cfg.bind, listener_port(s.ls_ws),
                     s.tls ? "wss" : "ws", s.cfg.bind, listener_port(s.ls_ws));
        char client[PATH_MAX], pin[TLS_FP_TEXT + 16] = "";
        server_client_path(client, sizeof(client));
        /* A self-signed certificate: the command pins it. */
        if (s.tls && strcmp(s.cfg.tls, "auto") == 0) {
            uint8_t fp[TLS_FP_LEN];
            tls_server_fingerprint(s.tls, fp);
            strcpy(pin, " --fingerprint ");
            tls_fp_format(fp, pin + strlen(pin));
        }
        printf("Parley is ready on %s:%d%s. Connect with: %s%s%s --host %s --port %d "
               "(Ctrl-C stops the server)\n",
               s.cfg.bind, port, s.tls ? " (TLS)" : "", client, s.tls ? " --tls" : "", pin,
               s.cfg.bind, port);
        if (s.ls_ws)
            printf("Web client: %s://%s:%d/\n", s.tls ? "https" : "http", s.cfg.bind,
                   listener_port(s.ls_ws));
    } else {
        printf("Parley %s node is ready (RPC on %s:%d)\n", s.cfg.role, s.cfg.advertise,
               rpc_server_port(s.rpc));
    }
    fflush(stdout);
    event_base_dispatch(s.base);
    log_info("%s received: shutting down", s.stop_reason ? s.stop_reason : "stop");
    server_stop(&s);
    log_info("stopped cleanly");
    return 0;
}
