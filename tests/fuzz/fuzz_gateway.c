/*
 * fuzz_gateway: a client's byte stream into a real gateway, assembled as
 * parleyd's embedded role assembles it (server/main.c): I/O loops, the
 * service runtime on a temporary SQLite database, the three services
 * in-process (rpc/local) and the local bus. Built once; each input is one
 * client connection (a socketpair handed to gateway_accept) that writes the
 * input, reads every reply until the server has answered everything and
 * gone quiet, then closes; the input ends only when the server has finished
 * with that connection, so nothing of one input runs during the next.
 *
 * Input: one byte of FZ_MODE_* bits saying how to pace the writes (so that
 * a login can complete before the requests that need it, or a client can
 * leave with calls still running) and which port to use (plain, TLS with a
 * real TLS client around the stream, or TLS with the input as the raw
 * bytes of a handshake), then the client's byte stream.
 *
 * Every frame the server writes must be a ServerFrame; descriptors must not
 * pile up. The limits are the server's defaults except those that count
 * per address or per user across connections (registrations, failed logins,
 * messages, history pages): every input comes from the same address and
 * may use the same accounts, and those would end up refusing every input.
 *
 * Four accounts exist from the start (fz_accounts: bob, alice, carol,
 * dave; users 1-4) and bob, the peer, stays logged in. The database lives
 * for the whole run, so an input may meet accounts, friends and groups made
 * by earlier ones: a crash that does not repeat
 * alone may need the inputs before it (libFuzzer's -runs over the corpus).
 * FUZZ_GATEWAY_VERBOSE=1 in the environment prints every reply and the
 * server's log.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <linux/sockios.h>

#include "bus/bus.h"
#include "common/frame.h"
#include "common/log.h"
#include "common/pwhash.h"
#include "fz_common.h"
#include "gateway/gateway.h"
#include "net/loop.h"
#include "net/tls.h"
#include "rpc/local.h"
#include "services/limits.h"
#include "services/svc.h"

/* The login deadline the server uses for rpc_local (--rpc-timeout). */
/* Two I/O loops, as on a two-core machine: connections land on either in
 * turn, so a push often crosses from one loop to the other. */
enum { FZ_RPC_TIMEOUT_MS = 5000, FZ_FD_SLACK = 32, FZ_LOOPS = 2 };

/* The input's first byte: how the client paces its writes. */
enum {
    FZ_MODE_WAIT_AUTH = 1, /* wait for quiet after each register/login/resume/logout */
    FZ_MODE_WAIT_EACH = 2, /* wait for quiet after every frame */
    FZ_MODE_HANG_UP = 4,   /* hang up as soon as all is written, calls still running */
    FZ_MODE_DRIBBLE = 8,   /* write FZ_DRIBBLE bytes at a time, each read alone */
    FZ_MODE_TLS = 16,      /* connect to the TLS port and speak TLS; the input is inside */
    FZ_MODE_TLS_RAW = 32,  /* connect to the TLS port and write the input as it is */
    FZ_DRIBBLE = 7,
};

/* A service of the gateway's, counting the calls it has not yet answered:
 * the harness knows when the server has finished an input's work. */
typedef struct {
    ProtobufCService base;
    ProtobufCService *inner;
} fz_svc;

typedef struct {
    ProtobufCClosure closure;
    void *data;
} fz_call;

static char fz_db[4096];
static svc_config fz_cfg;
static bus *fz_bus;
static svc_runtime *fz_rt;
static loop *fz_loops[FZ_LOOPS];
static ProtobufCService *fz_svcs[3];
static gateway *fz_gw;
static int fz_efd = -1;     /* eventfd: a call was answered */
static unsigned fz_calls;   /* atomic: calls not yet answered */
static int fz_fds_at_start; /* descriptors after the first input */
static pthread_mutex_t fz_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fz_cv = PTHREAD_COND_INITIALIZER;
static uint64_t fz_synced;
static struct event *fz_sync_ev[FZ_LOOPS]; /* at the output flush's priority */
static int fz_verbose; /* FUZZ_GATEWAY_VERBOSE=1: print what the server answers */
static tls_ctx *fz_tls_server, *fz_tls_client;

/* ---- the counting services ---- */

static void fz_call_done(const ProtobufCMessage *msg, void *data)
{
    fz_call *w = data;
    w->closure(msg, w->data);
    free(w);
    __atomic_sub_fetch(&fz_calls, 1, __ATOMIC_ACQ_REL);
    uint64_t one = 1;
    if (write(fz_efd, &one, sizeof(one)) < 0)
        fz_fail("eventfd write");
}

static void fz_invoke(ProtobufCService *s, unsigned method, const ProtobufCMessage *in,
                      ProtobufCClosure closure, void *data)
{
    fz_svc *f = (fz_svc *)s;
    fz_call *w = malloc(sizeof(*w));
    if (!w)
        abort();
    w->closure = closure;
    w->data = data;
    __atomic_add_fetch(&fz_calls, 1, __ATOMIC_ACQ_REL);
    f->inner->invoke(f->inner, method, in, fz_call_done, w);
}

/* The runtime asks about the gateway's own closure data, under ours. */
static int fz_gone(void *data)
{
    fz_call *w = data;
    return gateway_call_gone(w->data);
}

static void fz_svc_destroy(ProtobufCService *s)
{
    fz_svc *f = (fz_svc *)s;
    protobuf_c_service_destroy(f->inner);
    free(f);
}

static ProtobufCService *fz_svc_new(const svc_def *def, unsigned timeout_ms)
{
    fz_svc *f = calloc(1, sizeof(*f));
    if (!f)
        abort();
    f->inner = rpc_local_new(fz_rt, def);
    if (!f->inner)
        abort();
    rpc_local_set_caller(f->inner, fz_gone, timeout_ms);
    f->base.descriptor = def->desc;
    f->base.invoke = fz_invoke;
    f->base.destroy = fz_svc_destroy;
    return &f->base;
}

/* ---- waiting for the server ---- */

static void fz_sync_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    pthread_mutex_lock(&fz_mu);
    fz_synced++;
    pthread_cond_broadcast(&fz_cv);
    pthread_mutex_unlock(&fz_mu);
}

static void fz_sync_post(void *arg)
{
    event_active(arg, 0, 0);
}

/* Returns once each loop has run everything posted to it before the call,
 * and then the output flush those posts queued: the sync event has the
 * flush's low priority and comes after it in the queue. (A post alone
 * would not do: libevent runs the next pass's posts before a pending
 * lower-priority flush.) */
static void fz_loop_sync(void)
{
    pthread_mutex_lock(&fz_mu);
    uint64_t want = fz_synced + FZ_LOOPS;
    pthread_mutex_unlock(&fz_mu);
    for (int i = 0; i < FZ_LOOPS; i++)
        loop_post(fz_loops[i], fz_sync_post, fz_sync_ev[i]);
    pthread_mutex_lock(&fz_mu);
    while (fz_synced < want)
        pthread_cond_wait(&fz_cv, &fz_mu);
    pthread_mutex_unlock(&fz_mu);
}

static unsigned fz_calls_open(void)
{
    return __atomic_load_n(&fz_calls, __ATOMIC_ACQUIRE);
}

static void fz_efd_clear(void)
{
    uint64_t n;
    if (read(fz_efd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        fz_fail("eventfd read");
}

/* Bytes written to the socket that the server has not read yet. */
static int fz_unread(int fd)
{
    int n = 0;
    if (ioctl(fd, SIOCOUTQ, &n) < 0)
        fz_fail("SIOCOUTQ");
    return n;
}

/* ---- the clients ---- */

/* A connection of the harness's: the input's client, or the peer. */
typedef struct {
    int fd;         /* -1: none */
    int eof;        /* the server has closed it */
    int peer;       /* acknowledges the messages it receives, as clients do */
    int logged_in;  /* a LoginOk arrived */
    int raw;        /* talks to the TLS port without TLS: what comes back is not frames */
    tls_conn *tc;   /* speaks TLS */
    short rblocked; /* TLS: what the last read waits for (POLLIN, POLLOUT) or 0 */
    short wblocked; /* ... the last write */
    uint64_t next_id;
    uint8_t *buf; /* what has arrived, past the last whole frame */
    size_t len, cap;
} fz_client;

/* The peer: a client logged in as bob (user 1, creator of group 1) that
 * stays connected from one input to the next, so that what an input sends
 * to user 1 or group 1 is pushed to a live session. See fz_accounts. */
static fz_client fz_peer = {.fd = -1, .peer = 1};

/* A new connection to the gateway's plain port, or (mode FZ_MODE_TLS*) to
 * its TLS port. */
static void fz_client_open(fz_client *c, unsigned mode)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        fz_fail("socketpair");
    c->fd = sv[0];
    c->eof = 0;
    c->logged_in = 0;
    c->len = 0;
    c->rblocked = c->wblocked = 0;
    c->raw = (mode & FZ_MODE_TLS_RAW) != 0;
    c->tc = NULL;
    if ((mode & FZ_MODE_TLS) && !c->raw) {
        c->tc = tls_conn_new(fz_tls_client, c->fd, NULL);
        if (!c->tc)
            fz_fail(tls_error());
    }
    if (mode & (FZ_MODE_TLS | FZ_MODE_TLS_RAW))
        gateway_accept_tls(fz_gw, sv[1]);
    else
        gateway_accept(fz_gw, sv[1]);
}

static void fz_client_close(fz_client *c)
{
    tls_conn_free(c->tc);
    c->tc = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
}

/* read() or send() on c, through TLS if c speaks it: > 0, 0 at the end of
 * the stream, or -1 with errno (EAGAIN: try again once the socket is ready
 * for c->rblocked or c->wblocked). */
static ssize_t fz_recv(fz_client *c, void *buf, size_t len)
{
    if (!c->tc)
        return read(c->fd, buf, len);
    ssize_t n = tls_read(c->tc, buf, len);
    c->rblocked = n == TLS_WANT_READ ? POLLIN : n == TLS_WANT_WRITE ? POLLOUT : 0;
    if (n >= 0)
        return n;
    errno = c->rblocked ? EAGAIN : ECONNRESET;
    return -1;
}

static ssize_t fz_send(fz_client *c, const void *buf, size_t len)
{
    if (!c->tc)
        return send(c->fd, buf, len, MSG_NOSIGNAL);
    ssize_t n = tls_write(c->tc, buf, len);
    c->wblocked = n == TLS_WANT_READ ? POLLIN : n == TLS_WANT_WRITE ? POLLOUT : 0;
    if (n >= 0)
        return n;
    errno = c->wblocked ? EAGAIN : EPIPE;
    return -1;
}

/* Sends one frame of the harness's own (best effort: an ack of the peer's
 * that does not fit is dropped, as the message simply comes again). */
static void fz_send_frame(fz_client *c, Parley__ClientFrame *f)
{
    uint8_t buf[512];
    f->id = f->body_case == PARLEY__CLIENT_FRAME__BODY_ACK ? 0 : ++c->next_id;
    size_t n = parley__client_frame__get_packed_size(f);
    if (c->fd < 0 || c->eof || n > sizeof(buf) - FRAME_HDR)
        return;
    frame_put_header(buf, (uint32_t)n);
    parley__client_frame__pack(f, buf + FRAME_HDR);
    if (fz_send(c, buf, FRAME_HDR + n) < 0 && errno != EAGAIN)
        c->eof = 1;
}

/* What the peer does with a frame it received. */
static void fz_peer_saw(fz_client *c, const Parley__ServerFrame *f)
{
    if (f->body_case == PARLEY__SERVER_FRAME__BODY_LOGIN_OK)
        c->logged_in = 1;
    if (f->body_case == PARLEY__SERVER_FRAME__BODY_MESSAGE && f->message) {
        Parley__ClientFrame out = PARLEY__CLIENT_FRAME__INIT;
        Parley__Ack ack = PARLEY__ACK__INIT;
        ack.conv = f->message->conv;
        ack.seq = f->message->seq;
        out.body_case = PARLEY__CLIENT_FRAME__BODY_ACK;
        out.ack = &ack;
        fz_send_frame(c, &out);
    }
}

/* Checks every whole frame received so far; keeps a partial one. */
static void fz_frames(fz_client *c)
{
    size_t off = 0;
    for (;;) {
        const uint8_t *payload;
        size_t plen, used;
        if (frame_next(c->buf + off, c->len - off, SIZE_MAX, &payload, &plen, &used) != FRAME_OK)
            break;
        Parley__ServerFrame *f = parley__server_frame__unpack(NULL, plen, payload);
        if (!f)
            fz_fail("the server wrote a frame that is not a ServerFrame");
        if (fz_verbose)
            fprintf(stderr, "  %s<- id %llu body %d%s%s\n", c->peer ? "peer " : "",
                    (unsigned long long)f->id, (int)f->body_case, f->error ? " error: " : "",
                    f->error && f->error->text ? f->error->text : "");
        if (c->peer)
            fz_peer_saw(c, f);
        parley__server_frame__free_unpacked(f, NULL);
        off += used;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
}

/* Reads what has arrived; returns c->eof. *got is set if anything came. */
static int fz_drain(fz_client *c, int *got)
{
    while (c->fd >= 0 && !c->eof) {
        if (c->cap - c->len < 65536) {
            size_t cap = c->cap ? c->cap * 2 : 131072;
            uint8_t *p = realloc(c->buf, cap);
            if (!p)
                abort();
            c->buf = p;
            c->cap = cap;
        }
        ssize_t n = fz_recv(c, c->buf + c->len, c->cap - c->len);
        if (n > 0) {
            *got = 1;
            if (c->raw && fz_verbose)
                fprintf(stderr, "  <- %zd bytes\n", n);
            if (!c->raw) {
                c->len += (size_t)n;
                fz_frames(c);
            }
        } else if (n == 0) {
            c->eof = 1;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else if (errno != EINTR) {
            c->eof = 1; /* ECONNRESET: closed with our input unread */
        }
    }
    return c->eof;
}

static int fz_open(const fz_client *c)
{
    return c && c->fd >= 0 && !c->eof;
}

/* Waits until a's socket (if any) is readable (or writable, with out),
 * the peer's is readable, or a call was answered. A TLS read or write that
 * waits for the other readiness gets that one instead. */
static void fz_wait(const fz_client *a, int out, int timeout_ms)
{
    short ev = POLLIN;
    if (a && ((out && a->wblocked != POLLIN) || a->rblocked == POLLOUT))
        ev |= POLLOUT;
    struct pollfd p[3] = {
        {.fd = fz_efd, .events = POLLIN},
        {.fd = fz_open(&fz_peer) ? fz_peer.fd : -1, .events = POLLIN},
        {.fd = fz_open(a) ? a->fd : -1, .events = ev},
    };
    if (poll(p, 3, timeout_ms) < 0 && errno != EINTR)
        fz_fail("poll");
    if (p[0].revents & POLLIN)
        fz_efd_clear();
}

/* Bytes the harness wrote that the server has not read yet. */
static int fz_unread_all(const fz_client *a)
{
    return (fz_open(a) ? fz_unread(a->fd) : 0) + (fz_open(&fz_peer) ? fz_unread(fz_peer.fd) : 0);
}

/* Writes data[0..len) to a, reading meanwhile so that the server never
 * waits for us; dribbling, FZ_DRIBBLE bytes at a time, each read by the
 * server before the next goes. Returns a->eof. */
static int fz_write(fz_client *a, const uint8_t *data, size_t len, int dribble)
{
    int got = 0;
    for (size_t off = 0; off < len && !a->eof;) {
        fz_wait(a, 1, -1);
        fz_drain(&fz_peer, &got);
        if (fz_drain(a, &got))
            break;
        size_t chunk = len - off;
        if (dribble && chunk > FZ_DRIBBLE)
            chunk = FZ_DRIBBLE;
        ssize_t n = fz_send(a, data + off, chunk);
        if (n > 0) {
            off += (size_t)n;
            if (dribble)
                fz_loop_sync();
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            a->eof = 1;
        }
    }
    return a->eof;
}

/* Waits until the server has read everything written to a (if any) and to
 * the peer, answered every call, and two passes of its loop in a row wrote
 * nothing more. Returns a->eof (0 without a). */
static int fz_quiet(fz_client *a)
{
    for (int quiet = 0; quiet < 2;) {
        int got = 0;
        fz_drain(&fz_peer, &got);
        if (a && fz_drain(a, &got))
            return 1;
        if (fz_calls_open()) {
            fz_wait(a, 0, 1000);
            quiet = 0;
            continue;
        }
        int unread = fz_unread_all(a);
        fz_loop_sync();
        quiet = got || unread ? 0 : quiet + 1;
    }
    return 0;
}

/* The accounts made at the start, in this order (user ids 1, 2, ...), with
 * the passwords the seeds use: an input that registers one of these names
 * with another password cannot take the account away from the inputs after
 * it. The first is the peer's. */
static const char *const fz_accounts[][2] = {
    {"bob", "bobsecret1"},
    {"alice", "secret123"},
    {"carol", "secret123"},
    {"dave", "secret123"},
};

/* Connects the peer again if the server closed it (a kick, a timeout) and
 * logs it in as bob; at the start, registers the accounts and creates group
 * 1 as well. */
static void fz_peer_up(int first)
{
    if (fz_open(&fz_peer))
        return;
    fz_client_close(&fz_peer);
    fz_client_open(&fz_peer, 0);
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    Parley__Hello hello = PARLEY__HELLO__INIT;
    hello.version = PROTOCOL_VERSION;
    hello.client = "fuzz-peer";
    f.body_case = PARLEY__CLIENT_FRAME__BODY_HELLO;
    f.hello = &hello;
    fz_send_frame(&fz_peer, &f);
    for (size_t i = 0; first && i < sizeof(fz_accounts) / sizeof(fz_accounts[0]); i++) {
        Parley__Register reg = PARLEY__REGISTER__INIT;
        reg.name = (char *)fz_accounts[i][0];
        reg.password = (char *)fz_accounts[i][1];
        f.body_case = PARLEY__CLIENT_FRAME__BODY_REG;
        f.reg = &reg;
        fz_send_frame(&fz_peer, &f);
        fz_quiet(NULL);
    }
    Parley__Login login = PARLEY__LOGIN__INIT;
    login.name = (char *)fz_accounts[0][0];
    login.password = (char *)fz_accounts[0][1];
    f.body_case = PARLEY__CLIENT_FRAME__BODY_LOGIN;
    f.login = &login;
    fz_send_frame(&fz_peer, &f);
    fz_quiet(NULL);
    if (first) {
        Parley__GroupCreate gc = PARLEY__GROUP_CREATE__INIT;
        gc.name = "lobby";
        gc.desc = "the peer's group";
        f.body_case = PARLEY__CLIENT_FRAME__BODY_GROUP_CREATE;
        f.group_create = &gc;
        fz_send_frame(&fz_peer, &f);
        fz_quiet(NULL);
        if (!fz_peer.logged_in)
            fz_fail("the peer cannot log in at the start");
    }
}

/* Whether a frame is a register, login, resume or logout: the requests whose
 * answer changes what the next ones mean. */
static int fz_is_auth(const uint8_t *payload, size_t len)
{
    Parley__ClientFrame *f = parley__client_frame__unpack(NULL, len, payload);
    if (!f)
        return 0;
    int auth = f->body_case == PARLEY__CLIENT_FRAME__BODY_REG ||
               f->body_case == PARLEY__CLIENT_FRAME__BODY_LOGIN ||
               f->body_case == PARLEY__CLIENT_FRAME__BODY_RESUME ||
               f->body_case == PARLEY__CLIENT_FRAME__BODY_LOGOUT;
    parley__client_frame__free_unpacked(f, NULL);
    return auth;
}

/* Where the next write stops to let the server catch up (see FZ_MODE_*):
 * the end of a frame, or size. */
static size_t fz_next_stop(const uint8_t *data, size_t size, size_t off, unsigned mode)
{
    if (!(mode & (FZ_MODE_WAIT_AUTH | FZ_MODE_WAIT_EACH)))
        return size;
    while (off < size) {
        const uint8_t *payload;
        size_t plen, used;
        if (frame_next(data + off, size - off, FRAME_MAX_DEFAULT, &payload, &plen, &used) !=
            FRAME_OK)
            return size;
        off += used;
        if ((mode & FZ_MODE_WAIT_EACH) || fz_is_auth(payload, plen))
            return off;
    }
    return size;
}

/* One client connection: see the top of the file. */
static void fz_session(const uint8_t *data, size_t size)
{
    unsigned mode = 0;
    if (size) {
        mode = data[0];
        data++;
        size--;
    }
    int got = 0;
    fz_peer_up(0);
    fz_client a = {.fd = -1};
    fz_client_open(&a, mode);
    for (size_t off = 0; off < size && !a.eof;) {
        size_t stop = fz_next_stop(data, size, off, mode);
        fz_write(&a, data + off, stop - off, mode & FZ_MODE_DRIBBLE);
        off = stop;
        if (off < size)
            fz_quiet(&a);
    }
    if (!(mode & FZ_MODE_HANG_UP))
        fz_quiet(&a);

    /* Hang up, and wait until the server has closed its side and finished
     * the calls still running and those that closing makes (the logout). */
    shutdown(a.fd, SHUT_WR);
    while (!fz_drain(&a, &got)) {
        fz_wait(&a, 0, 1000);
        fz_drain(&fz_peer, &got);
    }
    fz_loop_sync();
    while (fz_calls_open()) {
        fz_wait(NULL, 0, 1000);
        fz_drain(&fz_peer, &got);
    }
    fz_loop_sync();
    fz_loop_sync();
    fz_drain(&fz_peer, &got);
    fz_client_close(&a);

    int fds = fz_count_fds();
    if (!fz_fds_at_start)
        fz_fds_at_start = fds;
    else if (fds > fz_fds_at_start + FZ_FD_SLACK)
        fz_fail("descriptors pile up: the gateway leaks one per connection");
}

/* ---- life cycle ---- */

static void fz_teardown(void)
{
    /* server_stop's order. */
    svc_runtime_stop(fz_rt);
    gateway_close_all(fz_gw, "fuzzing done");
    svc_runtime_free(fz_rt);
    for (int i = 0; i < FZ_LOOPS; i++)
        loop_stop(fz_loops[i]);
    fz_client_close(&fz_peer);
    gateway_free(fz_gw);
    tls_ctx_free(fz_tls_server);
    tls_ctx_free(fz_tls_client);
    for (int i = 0; i < FZ_LOOPS; i++)
        event_free(fz_sync_ev[i]);
    for (int k = 0; k < 3; k++)
        protobuf_c_service_destroy(fz_svcs[k]);
    for (int i = 0; i < FZ_LOOPS; i++)
        loop_free(fz_loops[i]);
    bus_free(fz_bus);
    close(fz_efd);
    libevent_global_shutdown();
    fz_data_dir_remove();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[512];
    fz_verbose = getenv("FUZZ_GATEWAY_VERBOSE") != NULL;
    signal(SIGPIPE, SIG_IGN); /* as parleyd: a write to a closed socket is EPIPE */
    log_set_level(fz_verbose ? LOG_INFO : LOG_ERROR);
    if (pwhash_init() < 0 || loop_global_init() < 0)
        fz_fail("pwhash_init or loop_global_init");
    fz_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fz_efd < 0)
        fz_fail("eventfd");
    const char *dir = fz_data_dir();
    snprintf(fz_db, sizeof(fz_db), "%s/parley.db", dir);
    /* The TLS port's certificate, which the harness's TLS client trusts. */
    char cert[4096], key[4096];
    const char *names[] = {"localhost"};
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    if (tls_make_self_signed(cert, key, names, 1, err, sizeof(err)) < 0 ||
        !(fz_tls_server = tls_server_new(cert, key, err, sizeof(err))) ||
        !(fz_tls_client = tls_client_new(cert, err, sizeof(err))))
        fz_fail(err);
    fz_svc_config(&fz_cfg, fz_db);
    static char files[4200];
    snprintf(files, sizeof(files), "%s/files", dir);
    fz_cfg.file_dir = files;
    fz_bus = bus_local_new();
    if (!fz_bus)
        fz_fail("bus_local_new");
    fz_rt = svc_runtime_new(&fz_cfg, fz_bus, err, sizeof(err));
    if (!fz_rt) {
        fprintf(stderr, "fuzz_gateway: %s\n", err);
        abort();
    }
    for (int i = 0; i < FZ_LOOPS; i++) {
        fz_loops[i] = loop_new((unsigned)i);
        if (!fz_loops[i])
            fz_fail("loop_new");
    }
    /* As server_gateway_services: only a login gives up at the deadline. */
    fz_svcs[0] = fz_svc_new(&svc_user, FZ_RPC_TIMEOUT_MS);
    fz_svcs[1] = fz_svc_new(&svc_social, 0);
    fz_svcs[2] = fz_svc_new(&svc_message, 0);
    gateway_config gcfg = {
        .gateway_id = 1,
        .limits = {.max_frame = FRAME_MAX_DEFAULT,
                   .max_out = 8u << 20,
                   .idle_timeout_s = 60,
                   .frame_timeout_s = 10,
                   .max_inflight = 64,
                   .low_water = 256u << 10},
        .abuse = {.max_conns_per_ip = 64,
                  .hello_timeout_s = 5,
                  .login_timeout_s = 30,
                  .req_rate = 100,
                  .msg_rate = 0,
                  .history_rate = 0,
                  .reg_rate = 0,
                  .fail_rate = 0,
                  .fail_free = 0,
                  .fail_max_delay_s = 0,
                  .auth_per_conn = 2,
                  .auth_per_ip = 8,
                  .auth_total = 256},
        .tls = fz_tls_server,
    };
    fz_gw = gateway_new(&gcfg, fz_loops, FZ_LOOPS, fz_svcs[0], fz_svcs[1], fz_svcs[2], fz_bus);
    if (!fz_gw)
        fz_fail("gateway_new");
    for (int i = 0; i < FZ_LOOPS; i++) {
        fz_sync_ev[i] = event_new(loop_base(fz_loops[i]), -1, 0, fz_sync_done, NULL);
        if (!fz_sync_ev[i] || event_priority_set(fz_sync_ev[i], 1) < 0)
            fz_fail("the sync event");
        if (loop_start(fz_loops[i]) < 0)
            fz_fail("loop_start");
    }
    atexit(fz_teardown);
    fz_peer_up(1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_session(data, size);
    return 0;
}
