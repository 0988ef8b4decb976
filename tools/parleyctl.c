/*
 * parleyctl: the admin tool of a running Parley (docs/operations.md "Admin").
 *
 *   parleyctl --zk HOSTS nodes
 *       every registered node of every service
 *   parleyctl --zk HOSTS ring list [--service S] [--vnodes N] [--add NAME]... [--del NAME]...
 *       the consistent-hash ring of service S (default message): every virtual node
 *   parleyctl --zk HOSTS ring get KEY [--service S] [--vnodes N] [--add NAME]... [--del NAME]...
 *       the node KEY maps to; KEY is direct:USER:USER, group:GROUP or a number
 *
 * Users (USER is a name or an id), of an embedded parleyd through its admin
 * socket (--data DIR: DIR/admin.sock, trusted by its file permissions), or
 * of a cluster through a service node's RPC port with mutual TLS and a
 * certificate whose OU says admin (--zk HOSTS --cluster-ca CA --admin-cert
 * CERT --admin-key KEY, or --rpc HOST:PORT instead of --zk):
 *   users find PREFIX [--after NAME] [--limit N], users show USER,
 *   sessions USER, kick USER, ban USER, unban USER, delete-user USER,
 *   reset-password USER [--password-stdin]
 * and, of a cluster, drain GATEWAY: the gateway of that name (parleyctl
 * nodes) leaves the registry, tells its clients to reconnect elsewhere and
 * exits once they are gone.
 *
 * --json: every command prints one JSON document on stdout instead.
 *
 * --zk-auth USER:PASS (or --zk-auth-file FILE) gives the credentials of a
 * cluster whose znodes are closed (parleyd --zk-auth): without them such a
 * cluster's nodes cannot be read.
 *
 * --add and --del change the ring before answering, without touching the
 * cluster: "what if a node joined or left?" (the seeds' add / del on a ring).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/frame.h"
#include "common/keys.h"
#include "common/secret.h"
#include "net/tls.h"
#include "registry/registry.h"
#include "rpc.pb-c.h"
#include "rpc/ring.h"
#include "services.pb-c.h"

enum {
    CTL_MAX_RESPONSE = 16 << 20, /* rpc/server.c's RPC_MAX_RESPONSE */
    CTL_MAX_POS = 4,
};

typedef struct {
    const char *zk, *zk_auth, *zk_auth_file, *data, *rpc, *ca, *cert, *key;
    const char *after;
    unsigned limit;
    int json, password_stdin;
    unsigned timeout_ms;
} ctl_opts;

typedef struct {
    const char *service;
    ring *r;
    char **names;
    size_t n;
} ctl_ring;

/* ---- JSON and text output ---- */

static void ctl_json_str(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p < 0x20)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
}

static void ctl_time(int64_t ms, char *out, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (ms <= 0 || !gmtime_r(&t, &tm) || !strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, len, "-");
}

/* ---- nodes and ring (ZooKeeper) ---- */

typedef struct {
    int json, count;
} ctl_nodes;

static void ctl_print_nodes(void *arg, const char *service, const registry_node *nodes, size_t n)
{
    ctl_nodes *cn = arg;
    for (size_t i = 0; i < n; i++) {
        char name[REGISTRY_NAME_MAX + 16];
        registry_node_name(nodes[i].name, name, sizeof(name));
        if (cn->json) {
            printf("%s{\"service\":", cn->count ? "," : "");
            ctl_json_str(service);
            printf(",\"name\":");
            ctl_json_str(name);
            printf(",\"znode\":");
            ctl_json_str(nodes[i].name);
            printf(",\"addr\":");
            ctl_json_str(nodes[i].addr);
            printf("}");
        } else {
            printf("%-10s %-24s %-22s %s\n", service, name, nodes[i].addr, nodes[i].name);
        }
        cn->count++;
    }
    if (n == 0 && !cn->json)
        printf("%-10s (no nodes)\n", service);
}

static void ctl_fill_ring(void *arg, const char *service, const registry_node *nodes, size_t n)
{
    ctl_ring *cr = arg;
    if (strcmp(service, cr->service) != 0)
        return;
    for (size_t i = 0; i < n; i++)
        ring_add(cr->r, nodes[i].name);
}

static void ctl_print_point(void *arg, uint64_t point, const char *name)
{
    int *json = arg;
    if (*json < 0) {
        printf("%016" PRIx64 "  %s\n", point, name);
        return;
    }
    printf("%s{\"point\":\"%016" PRIx64 "\",\"node\":", *json ? "," : "", point);
    ctl_json_str(name);
    printf("}");
    *json = 1;
}

static int ctl_parse_key(const char *s, uint64_t *key)
{
    unsigned long long a, b;
    char tail;
    if (sscanf(s, "direct:%llu:%llu%c", &a, &b, &tail) == 2) {
        *key = key_direct(a, b);
        return 0;
    }
    if (sscanf(s, "group:%llu%c", &a, &tail) == 1) {
        *key = key_group(a);
        return 0;
    }
    if (sscanf(s, "%llu%c", &a, &tail) == 1) {
        *key = a;
        return 0;
    }
    return -1;
}

static registry *ctl_registry(const ctl_opts *o)
{
    char err[512], auth[256] = "";
    if (o->zk_auth_file &&
        secret_read_line(o->zk_auth_file, auth, sizeof(auth), err, sizeof(err)) < 0) {
        fprintf(stderr, "parleyctl: --zk-auth-file: %s\n", err);
        return NULL;
    }
    if (o->zk_auth)
        snprintf(auth, sizeof(auth), "%s", o->zk_auth);
    registry *reg = registry_zk_new_auth(o->zk, 4000, 5000, auth, err, sizeof(err));
    explicit_bzero(auth, sizeof(auth));
    if (!reg)
        fprintf(stderr, "parleyctl: %s\n", err);
    return reg;
}

/* ---- the admin call: one RpcRequest, one RpcResponse ---- */

typedef struct {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    unsigned timeout_ms;
} ctl_link;

static void ctl_link_close(ctl_link *l)
{
    if (l->ssl) {
        SSL_shutdown(l->ssl);
        SSL_free(l->ssl);
    }
    if (l->ctx)
        SSL_CTX_free(l->ctx);
    if (l->fd >= 0)
        close(l->fd);
    l->ssl = NULL;
    l->ctx = NULL;
    l->fd = -1;
}

static int ctl_io(ctl_link *l, void *buf, size_t n, int writing)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t k;
        if (l->ssl) {
            size_t done = 0;
            int ok = writing ? SSL_write_ex(l->ssl, p, n, &done) : SSL_read_ex(l->ssl, p, n, &done);
            k = ok ? (ssize_t)done : -1;
        } else {
            k = writing ? send(l->fd, p, n, MSG_NOSIGNAL) : recv(l->fd, p, n, 0);
            if (k < 0 && errno == EINTR)
                continue;
        }
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static void ctl_set_timeout(int fd, unsigned ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int ctl_connect_unix(ctl_link *l, const char *data, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/admin.sock", data);
    if (n < 0 || (size_t)n >= sizeof(sa.sun_path)) {
        snprintf(err, errlen, "--data %s: path too long for a socket", data);
        return -1;
    }
    l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l->fd < 0 || connect(l->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        snprintf(err, errlen, "cannot reach %s: %s (is parleyd running with --data %s?)",
                 sa.sun_path, strerror(errno), data);
        return -1;
    }
    ctl_set_timeout(l->fd, l->timeout_ms);
    return 0;
}

/* 1 if one of the certificate's OU entries is exactly role. */
static int ctl_cert_has_role(X509 *x, const char *role)
{
    X509_NAME *name = x ? X509_get_subject_name(x) : NULL;
    for (int i = -1;
         name && (i = X509_NAME_get_index_by_NID(name, NID_organizationalUnitName, i)) >= 0;) {
        ASN1_STRING *v = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
        if ((size_t)ASN1_STRING_length(v) == strlen(role) &&
            memcmp(ASN1_STRING_get0_data(v), role, strlen(role)) == 0)
            return 1;
    }
    return 0;
}

/* Mutual TLS to a service node at addr (HOST:PORT): our admin certificate,
 * theirs signed by the cluster CA and saying service. */
static int ctl_connect_tls(ctl_link *l, const ctl_opts *o, const char *addr, char *err,
                           size_t errlen)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof(host)) {
        snprintf(err, errlen, "bad node address '%s'", addr);
        return -1;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0 || !ai) {
        snprintf(err, errlen, "cannot resolve %s", addr);
        return -1;
    }
    l->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ctl_set_timeout(l->fd, l->timeout_ms);
    int rc = l->fd < 0 ? -1 : connect(l->fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (rc < 0) {
        snprintf(err, errlen, "cannot connect to %s: %s", addr, strerror(errno));
        return -1;
    }
    l->ctx = SSL_CTX_new(TLS_client_method());
    if (!l->ctx || SSL_CTX_set_min_proto_version(l->ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_load_verify_locations(l->ctx, o->ca, NULL) != 1 ||
        SSL_CTX_use_certificate_chain_file(l->ctx, o->cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(l->ctx, o->key, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "cannot load --cluster-ca, --admin-cert or --admin-key: %s",
                 ERR_reason_error_string(ERR_get_error()));
        return -1;
    }
    SSL_CTX_set_verify(l->ctx, SSL_VERIFY_PEER, NULL);
    l->ssl = SSL_new(l->ctx);
    if (!l->ssl || SSL_set_fd(l->ssl, l->fd) != 1 || SSL_connect(l->ssl) != 1) {
        unsigned long e = ERR_get_error();
        snprintf(err, errlen, "TLS handshake with %s failed: %s", addr,
                 e ? ERR_reason_error_string(e) : "connection closed");
        return -1;
    }
    X509 *peer = SSL_get1_peer_certificate(l->ssl);
    int service = ctl_cert_has_role(peer, TLS_ROLE_SERVICE);
    X509_free(peer);
    if (!service) {
        snprintf(err, errlen, "%s is not a service node (its certificate lacks OU=%s)", addr,
                 TLS_ROLE_SERVICE);
        return -1;
    }
    return 0;
}

/* Service nodes of the cluster, from the registry: where admin calls go. */
typedef struct {
    char addrs[16][300];
    size_t n;
} ctl_targets;

static void ctl_collect(void *arg, const char *service, const registry_node *nodes, size_t n)
{
    ctl_targets *t = arg;
    if (strcmp(service, "user") != 0 && strcmp(service, "social") != 0 &&
        strcmp(service, "message") != 0)
        return;
    for (size_t i = 0; i < n && t->n < 16; i++) {
        int dup = 0;
        for (size_t k = 0; k < t->n; k++)
            dup |= strcmp(t->addrs[k], nodes[i].addr) == 0;
        if (!dup)
            snprintf(t->addrs[t->n++], sizeof(t->addrs[0]), "%s", nodes[i].addr);
    }
}

static int ctl_open(ctl_link *l, const ctl_opts *o, char *err, size_t errlen)
{
    l->fd = -1;
    l->timeout_ms = o->timeout_ms;
    if (o->data)
        return ctl_connect_unix(l, o->data, err, errlen);
    if (!o->ca || !o->cert || !o->key) {
        snprintf(err, errlen,
                 "a cluster's admin calls need --cluster-ca, --admin-cert and "
                 "--admin-key (scripts/cluster.sh makes pki/admin.pem); an "
                 "embedded server's, --data DIR");
        return -1;
    }
    if (o->rpc)
        return ctl_connect_tls(l, o, o->rpc, err, errlen);
    registry *reg = ctl_registry(o);
    if (!reg) {
        snprintf(err, errlen, "cannot read the registry");
        return -1;
    }
    ctl_targets t = {.n = 0};
    int rc = registry_list_all(reg, ctl_collect, &t, err, errlen);
    registry_free(reg);
    if (rc < 0)
        return -1;
    if (t.n == 0) {
        snprintf(err, errlen, "no service node is registered");
        return -1;
    }
    for (size_t i = 0; i < t.n; i++) {
        if (ctl_connect_tls(l, o, t.addrs[i], err, errlen) == 0)
            return 0;
        fprintf(stderr, "parleyctl: %s\n", err);
        ctl_link_close(l);
    }
    return -1;
}

/* Calls AdminService.method with req; *out (free with
 * parley__result__free_unpacked) on success. 0, or -1 with the reason in
 * err (and the service's error code in *code, if it answered one). */
static int ctl_call(const ctl_opts *o, const char *method, Parley__AdminRequest *req,
                    Parley__Result **out, Parley__ErrorCode *code, char *err, size_t errlen)
{
    ctl_link l = {.fd = -1};
    uint8_t *buf = NULL;
    int ret = -1;
    Parley__RpcResponse *resp = NULL;
    *out = NULL;
    *code = PARLEY__ERROR_CODE__OK;
    if (ctl_open(&l, o, err, errlen) < 0)
        goto out;
    Parley__Caller caller = PARLEY__CALLER__INIT;
    Parley__ClientFrame frame = PARLEY__CLIENT_FRAME__INIT;
    Parley__Call call = PARLEY__CALL__INIT;
    caller.addr = "parleyctl";
    call.caller = &caller;
    call.frame = &frame;
    call.admin = req;
    size_t clen = parley__call__get_packed_size(&call);
    uint8_t *cbuf = malloc(clen ? clen : 1);
    if (!cbuf)
        abort();
    parley__call__pack(&call, cbuf);
    Parley__RpcRequest rq = PARLEY__RPC_REQUEST__INIT;
    rq.call_id = 1;
    rq.service = "parley.AdminService";
    rq.method = (char *)method;
    rq.timeout_ms = o->timeout_ms;
    rq.payload.data = cbuf;
    rq.payload.len = clen;
    size_t len = parley__rpc_request__get_packed_size(&rq);
    buf = malloc(FRAME_HDR + len);
    if (!buf)
        abort();
    frame_put_header(buf, (uint32_t)len);
    parley__rpc_request__pack(&rq, buf + FRAME_HDR);
    free(cbuf);
    if (ctl_io(&l, buf, FRAME_HDR + len, 1) < 0) {
        snprintf(err, errlen, "cannot send the request: %s", strerror(errno));
        goto out;
    }
    free(buf);
    buf = NULL;
    uint8_t hdr[FRAME_HDR];
    if (ctl_io(&l, hdr, sizeof(hdr), 0) < 0) {
        snprintf(err, errlen, "no answer (timed out or closed)");
        goto out;
    }
    uint32_t rlen =
        (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    if (rlen > CTL_MAX_RESPONSE) {
        snprintf(err, errlen, "answer too large (%u bytes)", rlen);
        goto out;
    }
    buf = malloc(rlen ? rlen : 1);
    if (!buf)
        abort();
    if (ctl_io(&l, buf, rlen, 0) < 0) {
        snprintf(err, errlen, "answer cut short");
        goto out;
    }
    resp = parley__rpc_response__unpack(NULL, rlen, buf);
    if (!resp) {
        snprintf(err, errlen, "malformed answer");
        goto out;
    }
    if (resp->status != PARLEY__RPC_STATUS__RPC_OK) {
        snprintf(err, errlen, "refused: %s", resp->error && resp->error[0] ? resp->error : "?");
        goto out;
    }
    *out = parley__result__unpack(NULL, resp->payload.len, resp->payload.data);
    if (!*out || !(*out)->frame) {
        snprintf(err, errlen, "malformed result");
        goto out;
    }
    if ((*out)->frame->error) {
        *code = (*out)->frame->error->code;
        snprintf(err, errlen, "%s", (*out)->frame->error->text ? (*out)->frame->error->text : "?");
        goto out;
    }
    ret = 0;
out:
    if (ret < 0 && *out) {
        parley__result__free_unpacked(*out, NULL);
        *out = NULL;
    }
    if (resp)
        parley__rpc_response__free_unpacked(resp, NULL);
    free(buf);
    ctl_link_close(&l);
    return ret;
}

/* ---- admin commands ---- */

typedef struct {
    const char *name;
    int found;
} ctl_find_gw;

static void ctl_find_gateway(void *arg, const char *service, const registry_node *nodes, size_t n)
{
    ctl_find_gw *f = arg;
    if (strcmp(service, "gateway") != 0)
        return;
    for (size_t i = 0; i < n; i++) {
        char name[REGISTRY_NAME_MAX + 16];
        registry_node_name(nodes[i].name, name, sizeof(name));
        f->found |= strcmp(name, f->name) == 0;
    }
}

/* 1 if a gateway named name is registered, 0 if not, -1 if unknown. */
static int ctl_gateway_listed(const ctl_opts *o, const char *name)
{
    char err[512];
    registry *reg = ctl_registry(o);
    if (!reg)
        return -1;
    ctl_find_gw f = {.name = name};
    int rc = registry_list_all(reg, ctl_find_gateway, &f, err, sizeof(err));
    registry_free(reg);
    if (rc < 0) {
        fprintf(stderr, "parleyctl: %s\n", err);
        return -1;
    }
    return f.found;
}

static int64_t ctl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void ctl_json_user(const Parley__AdminUser *u, int full)
{
    printf("{\"id\":%" PRIu64 ",\"name\":", u->id);
    ctl_json_str(u->name);
    char t[40];
    ctl_time(u->created_ms, t, sizeof(t));
    printf(",\"created_ms\":%" PRId64 ",\"created\":\"%s\",\"banned\":%s,\"deleted\":%s",
           u->created_ms, t, u->banned ? "true" : "false", u->deleted ? "true" : "false");
    if (full)
        printf(",\"sessions\":%u,\"friends\":%u,\"groups\":%u,\"online\":%d", u->sessions,
               u->friends, u->groups, u->online);
    printf("}");
}

static const char *ctl_state(const Parley__AdminUser *u)
{
    return u->deleted ? "deleted" : u->banned ? "banned" : "active";
}

static int ctl_admin(const ctl_opts *o, const char *cmd, const char *const *pos, size_t npos)
{
    static const struct {
        const char *cmd, *method, *done, *tail;
    } verbs[] = {
        {"kick", "Kick", "ended every session of", ""},
        {"ban", "Ban", "banned", " (every session ended)"},
        {"unban", "Unban", "unbanned", ""},
        {"delete-user", "DeleteUser", "deleted the personal data of", ""},
        {"reset-password", "ResetPassword", "reset the password of", " (every session ended)"},
        {"sessions", "Sessions", NULL, NULL},
    };
    Parley__AdminRequest req = PARLEY__ADMIN_REQUEST__INIT;
    const char *method = NULL, *done = "done:", *tail = "";
    char pw[300] = "";
    int find = 0;
    if (strcmp(cmd, "users") == 0 && npos == 2 && strcmp(pos[0], "find") == 0) {
        method = "UsersFind";
        req.prefix = (char *)pos[1];
        req.after = (char *)(o->after ? o->after : "");
        req.limit = o->limit;
        find = 1;
    } else if (strcmp(cmd, "users") == 0 && npos == 1 && strcmp(pos[0], "find") == 0) {
        method = "UsersFind";
        req.after = (char *)(o->after ? o->after : "");
        req.limit = o->limit;
        find = 1;
    } else if (strcmp(cmd, "drain") == 0 && npos == 1) {
        method = "Drain";
        req.node = (char *)pos[0];
        /* A name nobody registered would be asked of every gateway for
         * nothing: say so instead. */
        if (!o->data && o->zk && ctl_gateway_listed(o, pos[0]) == 0) {
            if (o->json)
                printf("{\"ok\":false,\"error\":\"no such gateway\",\"code\":\"NOT_FOUND\"}\n");
            fprintf(stderr, "parleyctl: no gateway named %s (parleyctl nodes)\n", pos[0]);
            return 1;
        }
    } else if (strcmp(cmd, "users") == 0 && npos == 2 && strcmp(pos[0], "show") == 0) {
        method = "UsersShow";
        req.user = (char *)pos[1];
    } else {
        for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
            if (strcmp(cmd, verbs[i].cmd) == 0 && npos == 1) {
                method = verbs[i].method;
                done = verbs[i].done;
                tail = verbs[i].tail;
                req.user = (char *)pos[0];
            }
    }
    if (!method)
        return 2;
    if (strcmp(method, "ResetPassword") == 0 && o->password_stdin) {
        if (!fgets(pw, sizeof(pw), stdin)) {
            fprintf(stderr, "parleyctl: --password-stdin: nothing on standard input\n");
            return 1;
        }
        pw[strcspn(pw, "\r\n")] = '\0';
        req.password = pw;
    }
    Parley__Result *res = NULL;
    Parley__ErrorCode code;
    char err[512];
    int rc = ctl_call(o, method, &req, &res, &code, err, sizeof(err));
    explicit_bzero(pw, sizeof(pw));
    if (rc < 0) {
        if (o->json) {
            printf("{\"ok\":false,\"error\":");
            ctl_json_str(err);
            const ProtobufCEnumValue *v =
                protobuf_c_enum_descriptor_get_value(&parley__error_code__descriptor, (int)code);
            printf(",\"code\":\"%s\"}\n", v && code ? v->name : "");
        }
        fprintf(stderr, "parleyctl: %s\n", err);
        return 1;
    }
    const Parley__AdminReply *r = res->admin;
    Parley__AdminReply empty = PARLEY__ADMIN_REPLY__INIT;
    if (!r)
        r = &empty;
    const Parley__AdminUser *u = r->n_users ? r->users[0] : NULL;
    char t1[40], t2[40];
    if (find) {
        if (o->json) {
            printf("{\"ok\":true,\"users\":[");
            for (size_t i = 0; i < r->n_users; i++) {
                printf("%s", i ? "," : "");
                ctl_json_user(r->users[i], 0);
            }
            printf("],\"more\":%s", r->more ? "true" : "false");
            if (r->more && r->n_users) {
                printf(",\"next_after\":");
                ctl_json_str(r->users[r->n_users - 1]->name);
            }
            printf("}\n");
        } else {
            printf("%-10s %-34s %-21s %s\n", "ID", "NAME", "CREATED", "STATE");
            for (size_t i = 0; i < r->n_users; i++) {
                ctl_time(r->users[i]->created_ms, t1, sizeof(t1));
                printf("%-10" PRIu64 " %-34s %-21s %s\n", r->users[i]->id, r->users[i]->name, t1,
                       ctl_state(r->users[i]));
            }
            if (r->more && r->n_users)
                printf("(more: --after '%s')\n", r->users[r->n_users - 1]->name);
        }
    } else if (strcmp(method, "UsersShow") == 0 && u) {
        if (o->json) {
            printf("{\"ok\":true,\"user\":");
            ctl_json_user(u, 1);
            printf("}\n");
        } else {
            ctl_time(u->created_ms, t1, sizeof(t1));
            printf("id:       %" PRIu64 "\nname:     %s\ncreated:  %s\nstate:    %s\n"
                   "sessions: %u stored, ",
                   u->id, u->name, t1, ctl_state(u), u->sessions);
            if (u->online < 0)
                printf("online unknown\n");
            else
                printf("%d connected\n", u->online);
            printf("friends:  %u\ngroups:   %u\n", u->friends, u->groups);
        }
    } else if (strcmp(method, "Drain") == 0) {
        /* Done when the gateway has left the registry (it does so first,
         * then says bye to its clients and exits). */
        int64_t t0 = ctl_now_ms(), limit = o->timeout_ms;
        int gone = -1;
        while (o->zk && ctl_now_ms() - t0 < limit) {
            gone = ctl_gateway_listed(o, req.node) == 0;
            if (gone)
                break;
            usleep(100 * 1000);
        }
        double secs = (double)(ctl_now_ms() - t0) / 1000.0;
        if (o->json) {
            printf("{\"ok\":true,\"gateway\":");
            ctl_json_str(req.node);
            printf(",\"left_registry\":%s,\"seconds\":%.1f}\n",
                   gone == 1   ? "true"
                   : gone == 0 ? "false"
                               : "null",
                   secs);
        } else if (gone == 1)
            printf("draining %s: it left the registry after %.1f s; its clients are told to "
                   "reconnect elsewhere\n",
                   req.node, secs);
        else
            printf("asked %s to drain%s\n", req.node,
                   gone == 0 ? " (still registered: see its log)" : "");
    } else if (strcmp(method, "Sessions") == 0) {
        if (o->json) {
            printf("{\"ok\":true");
            if (u) {
                printf(",\"user\":");
                ctl_json_user(u, 0);
            }
            printf(",\"sessions\":[");
            for (size_t i = 0; i < r->n_sessions; i++) {
                ctl_time(r->sessions[i]->created_ms, t1, sizeof(t1));
                ctl_time(r->sessions[i]->last_used_ms, t2, sizeof(t2));
                printf("%s{\"created_ms\":%" PRId64 ",\"created\":\"%s\",\"last_used_ms\":%" PRId64
                       ",\"last_used\":\"%s\"}",
                       i ? "," : "", r->sessions[i]->created_ms, t1, r->sessions[i]->last_used_ms,
                       t2);
            }
            printf("]}\n");
        } else {
            printf("%-21s %s\n", "CREATED", "LAST USED");
            for (size_t i = 0; i < r->n_sessions; i++) {
                ctl_time(r->sessions[i]->created_ms, t1, sizeof(t1));
                ctl_time(r->sessions[i]->last_used_ms, t2, sizeof(t2));
                printf("%-21s %s\n", t1, t2);
            }
            if (r->n_sessions == 0)
                printf("(no sessions)\n");
        }
    } else {
        if (o->json) {
            printf("{\"ok\":true");
            if (u) {
                printf(",\"user\":");
                ctl_json_user(u, 0);
            }
            if (r->password && r->password[0]) {
                printf(",\"password\":");
                ctl_json_str(r->password);
            }
            printf("}\n");
        } else {
            printf("%s %s%s\n", done, req.user, tail);
            if (r->password && r->password[0])
                printf("new password: %s\n", r->password);
        }
    }
    parley__result__free_unpacked(res, NULL);
    return 0;
}

static void ctl_usage(FILE *f)
{
    fprintf(f, "usage: parleyctl --zk HOSTS [--json] nodes\n"
               "       parleyctl --zk HOSTS [--json] ring list [--service S] [--vnodes N] "
               "[--add NAME]... [--del NAME]...\n"
               "       parleyctl --zk HOSTS [--json] ring get KEY [same options]\n"
               "       parleyctl WHERE [--json] users find PREFIX [--after NAME] [--limit N]\n"
               "       parleyctl WHERE [--json] users show USER\n"
               "       parleyctl WHERE [--json] sessions USER\n"
               "       parleyctl WHERE [--json] kick|ban|unban|delete-user USER\n"
               "       parleyctl WHERE [--json] reset-password USER [--password-stdin]\n"
               "       parleyctl WHERE [--json] drain GATEWAY   (a cluster's gateway, by name)\n"
               "WHERE is --data DIR (an embedded parleyd: DIR/admin.sock), or a cluster:\n"
               "  --zk HOSTS (or --rpc HOST:PORT of a service node) --cluster-ca FILE\n"
               "  --admin-cert FILE --admin-key FILE (a certificate with OU=admin).\n"
               "USER is a name or an id. KEY is direct:USER:USER, group:GROUP or a number.\n"
               "--zk-auth USER:PASS or --zk-auth-file FILE: ZooKeeper credentials.\n"
               "--timeout MS: how long an admin call may take (default 30000).\n");
}

static int ctl_nodes_ring(const ctl_opts *o, const char *cmd, const char *const *pos, size_t npos,
                          const char *service, unsigned vnodes, const char **adds, size_t nadd,
                          const char **dels, size_t ndel)
{
    char err[512];
    int rc = 1;
    ctl_ring cr = {0};
    if (!o->zk) {
        ctl_usage(stderr);
        return 2;
    }
    registry *reg = ctl_registry(o);
    if (!reg)
        return 1;
    if (strcmp(cmd, "nodes") == 0) {
        ctl_nodes cn = {.json = o->json};
        if (o->json)
            printf("{\"nodes\":[");
        else
            printf("%-10s %-24s %-22s %s\n", "SERVICE", "NAME", "ADDRESS", "ZNODE");
        if (registry_list_all(reg, ctl_print_nodes, &cn, err, sizeof(err)) < 0) {
            if (o->json)
                printf("]}\n");
            fprintf(stderr, "parleyctl: %s\n", err);
            goto out;
        }
        if (o->json)
            printf("]}\n");
        rc = 0;
        goto out;
    }
    if (npos < 1) {
        ctl_usage(stderr);
        rc = 2;
        goto out;
    }
    cr.service = service;
    cr.r = ring_new(vnodes);
    if (!cr.r || registry_list_all(reg, ctl_fill_ring, &cr, err, sizeof(err)) < 0) {
        fprintf(stderr, "parleyctl: %s\n", cr.r ? err : "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nadd; i++)
        ring_add(cr.r, adds[i]);
    for (size_t i = 0; i < ndel; i++)
        if (ring_del(cr.r, dels[i]) < 0)
            fprintf(stderr, "parleyctl: %s is not on the ring\n", dels[i]);
    if (strcmp(pos[0], "list") == 0) {
        int json = o->json ? 0 : -1;
        if (o->json) {
            printf("{\"service\":");
            ctl_json_str(service);
            printf(",\"nodes\":%zu,\"vnodes\":%u,\"points\":[", ring_nodes(cr.r), vnodes);
        } else {
            printf("# %s ring: %zu nodes x %u virtual nodes\n", service, ring_nodes(cr.r), vnodes);
        }
        ring_foreach(cr.r, ctl_print_point, &json);
        if (o->json)
            printf("]}\n");
        rc = 0;
    } else if (strcmp(pos[0], "get") == 0 && npos >= 2) {
        uint64_t key;
        if (ctl_parse_key(pos[1], &key) < 0) {
            fprintf(stderr, "parleyctl: bad key '%s'\n", pos[1]);
            rc = 2;
            goto out;
        }
        const char *node = ring_get(cr.r, key);
        if (!node) {
            fprintf(stderr, "parleyctl: no %s nodes registered\n", service);
            goto out;
        }
        if (o->json) {
            printf("{\"key\":");
            ctl_json_str(pos[1]);
            printf(",\"node\":");
            ctl_json_str(node);
            printf("}\n");
        } else {
            printf("%s -> %s\n", pos[1], node);
        }
        rc = 0;
    } else {
        ctl_usage(stderr);
        rc = 2;
    }
out:
    ring_free(cr.r);
    registry_free(reg);
    return rc;
}

int main(int argc, char **argv)
{
    ctl_opts o = {.timeout_ms = 30000};
    const char *service = "message", *cmd = NULL;
    const char *pos[CTL_MAX_POS];
    size_t npos = 0;
    unsigned vnodes = 100;
    const char *adds[64], *dels[64];
    size_t nadd = 0, ndel = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            ctl_usage(stdout);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            o.json = 1;
        } else if (strcmp(a, "--password-stdin") == 0) {
            o.password_stdin = 1;
        } else if (strcmp(a, "--zk") == 0 && v) {
            o.zk = v, i++;
        } else if (strcmp(a, "--zk-auth") == 0 && v) {
            o.zk_auth = v, i++;
        } else if (strcmp(a, "--zk-auth-file") == 0 && v) {
            o.zk_auth_file = v, i++;
        } else if (strcmp(a, "--data") == 0 && v) {
            o.data = v, i++;
        } else if (strcmp(a, "--rpc") == 0 && v) {
            o.rpc = v, i++;
        } else if (strcmp(a, "--cluster-ca") == 0 && v) {
            o.ca = v, i++;
        } else if (strcmp(a, "--admin-cert") == 0 && v) {
            o.cert = v, i++;
        } else if (strcmp(a, "--admin-key") == 0 && v) {
            o.key = v, i++;
        } else if (strcmp(a, "--after") == 0 && v) {
            o.after = v, i++;
        } else if (strcmp(a, "--limit") == 0 && v) {
            o.limit = (unsigned)strtoul(v, NULL, 10), i++;
        } else if (strcmp(a, "--timeout") == 0 && v) {
            o.timeout_ms = (unsigned)strtoul(v, NULL, 10), i++;
        } else if (strcmp(a, "--service") == 0 && v) {
            service = v, i++;
        } else if (strcmp(a, "--vnodes") == 0 && v) {
            vnodes = (unsigned)strtoul(v, NULL, 10), i++;
        } else if (strcmp(a, "--add") == 0 && v && nadd < 64) {
            adds[nadd++] = v, i++;
        } else if (strcmp(a, "--del") == 0 && v && ndel < 64) {
            dels[ndel++] = v, i++;
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "parleyctl: unknown option %s (or its value is missing)\n", a);
            return 2;
        } else if (!cmd) {
            cmd = a;
        } else if (npos < CTL_MAX_POS) {
            pos[npos++] = a;
        } else {
            ctl_usage(stderr);
            return 2;
        }
    }
    if (!cmd || vnodes == 0 || o.timeout_ms == 0) {
        ctl_usage(stderr);
        return 2;
    }
    if (strcmp(cmd, "nodes") == 0 || strcmp(cmd, "ring") == 0)
        return ctl_nodes_ring(&o, cmd, pos, npos, service, vnodes, adds, nadd, dels, ndel);
    int rc = ctl_admin(&o, cmd, pos, npos);
    if (rc == 2)
        ctl_usage(stderr);
    return rc;
}
