/*
 * fuzz_gateway: a client's byte stream into a real gateway, assembled as
 * parleyd's embedded role assembles it (server/main.c): an I/O loop, the
 * service runtime on a temporary SQLite database, the three services
 * in-process (rpc/local) and the local bus. Built once; each input is one
 * client connection (a socketpair handed to gateway_accept) that writes the
 * input, reads every reply until the server has answered everything and
 * gone quiet, then closes; the input ends only when the server has finished
 * with that connection, so nothing of one input runs during the next.
 *
 * Input: one byte of FZ_MODE_* bits saying how to pace the writes (so that
 * a login can complete before the requests that need it, or a client can
 * leave with calls still running), then the client's byte stream.
 *
 * Every frame the server writes must be a ServerFrame; descriptors must not
 * pile up. The limits are the server's defaults except those that count
 * per address or per user across connections (registrations, failed logins,
 * messages): every input comes from the same address and may use the same
 * accounts, and those would end up refusing every input.
 *
 * The database lives for the whole run, so an input may meet accounts,
 * friends and groups made by earlier ones: a crash that does not repeat
 * alone may need the inputs before it (libFuzzer's -runs over the corpus).
 * FUZZ_GATEWAY_VERBOSE=1 in the environment prints every reply and the
 * server's log.
 */
#include <errno.h>
#include <poll.h>
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
#include "rpc/local.h"
#include "services/svc.h"

/* The login deadline the server uses for rpc_local (--rpc-timeout). */
enum { FZ_RPC_TIMEOUT_MS = 5000, FZ_FD_SLACK = 32 };

/* The input's first byte: how the client paces its writes. */
enum {
    FZ_MODE_WAIT_AUTH = 1, /* wait for quiet after each register/login/resume/logout */
    FZ_MODE_WAIT_EACH = 2, /* wait for quiet after every frame */
    FZ_MODE_HANG_UP = 4,   /* hang up as soon as all is written, calls still running */
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
static loop *fz_loop;
static ProtobufCService *fz_svcs[3];
static gateway *fz_gw;
static int fz_efd = -1;     /* eventfd: a call was answered */
static unsigned fz_calls;   /* atomic: calls not yet answered */
static int fz_fds_at_start; /* descriptors after the first input */
static pthread_mutex_t fz_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fz_cv = PTHREAD_COND_INITIALIZER;
static uint64_t fz_synced;
static struct event *fz_sync_ev; /* on the loop, at the output flush's priority */
static int fz_verbose;           /* FUZZ_GATEWAY_VERBOSE=1: print what the server answers */

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
    (void)arg;
    event_active(fz_sync_ev, 0, 0);
}

/* Returns once the loop has run everything posted to it before the call,
 * and then the output flush those posts queued: the sync event has the
 * flush's low priority and comes after it in the queue. (A post alone
 * would not do: libevent runs the next pass's posts before a pending
 * lower-priority flush.) */
static void fz_loop_sync(void)
{
    pthread_mutex_lock(&fz_mu);
    uint64_t want = fz_synced + 1;
    pthread_mutex_unlock(&fz_mu);
    loop_post(fz_loop, fz_sync_post, NULL);
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

/* ---- the client's side ---- */

typedef struct {
    uint8_t *buf;
    size_t len, cap;
} fz_rx;

/* Checks every whole frame received so far; keeps a partial one. */
static void fz_rx_frames(fz_rx *rx)
{
    size_t off = 0;
    for (;;) {
        const uint8_t *payload;
        size_t plen, used;
        if (frame_next(rx->buf + off, rx->len - off, SIZE_MAX, &payload, &plen, &used) != FRAME_OK)
            break;
        Parley__ServerFrame *f = parley__server_frame__unpack(NULL, plen, payload);
        if (!f)
            fz_fail("the server wrote a frame that is not a ServerFrame");
        if (fz_verbose)
            fprintf(stderr, "  <- id %llu body %d%s%s\n", (unsigned long long)f->id,
                    (int)f->body_case, f->error ? " error: " : "",
                    f->error && f->error->text ? f->error->text : "");
        parley__server_frame__free_unpacked(f, NULL);
        off += used;
    }
    memmove(rx->buf, rx->buf + off, rx->len - off);
    rx->len -= off;
}

/* Reads what has arrived: 1 at end of stream, else 0; *got says whether
 * anything came. */
static int fz_drain(int fd, fz_rx *rx, int *got)
{
    for (;;) {
        if (rx->cap - rx->len < 65536) {
            size_t cap = rx->cap ? rx->cap * 2 : 131072;
            uint8_t *p = realloc(rx->buf, cap);
            if (!p)
                abort();
            rx->buf = p;
            rx->cap = cap;
        }
        ssize_t n = read(fd, rx->buf + rx->len, rx->cap - rx->len);
        if (n > 0) {
            rx->len += (size_t)n;
            *got = 1;
            fz_rx_frames(rx);
            continue;
        }
        if (n == 0)
            return 1;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return 1; /* ECONNRESET: the server closed with input unread */
    }
}

/* Waits until the client socket is readable or a call was answered. */
static void fz_wait(int fd, int timeout_ms)
{
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = fz_efd, .events = POLLIN}};
    if (poll(p, 2, timeout_ms) < 0 && errno != EINTR)
        fz_fail("poll");
    if (p[1].revents & POLLIN)
        fz_efd_clear();
}

/* Writes data[0..len), reading the replies meanwhile so that the server
 * never waits for us. 1 if the server closed, else 0. */
static int fz_write(int fd, const uint8_t *data, size_t len, fz_rx *rx)
{
    int got = 0;
    for (size_t off = 0; off < len;) {
        struct pollfd p = {.fd = fd, .events = POLLIN | POLLOUT};
        if (poll(&p, 1, -1) < 0 && errno != EINTR)
            fz_fail("poll");
        if ((p.revents & (POLLIN | POLLHUP | POLLERR)) && fz_drain(fd, rx, &got))
            return 1;
        if (p.revents & POLLOUT) {
            ssize_t n = send(fd, data + off, len - off, MSG_NOSIGNAL);
            if (n > 0)
                off += (size_t)n;
            else if (n < 0 && errno != EAGAIN && errno != EINTR)
                return 1;
        }
    }
    return 0;
}

/* Waits until the server has read everything, answered every call, and two
 * passes of its loop in a row wrote nothing more. 1 if it closed, else 0. */
static int fz_quiet(int fd, fz_rx *rx)
{
    for (int quiet = 0; quiet < 2;) {
        int got = 0;
        if (fz_drain(fd, rx, &got))
            return 1;
        if (fz_calls_open()) {
            fz_wait(fd, 1000);
            quiet = 0;
            continue;
        }
        int unread = fz_unread(fd);
        fz_loop_sync();
        quiet = got || unread ? 0 : quiet + 1;
    }
    return 0;
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
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        fz_fail("socketpair");
    int fd = sv[0], got = 0, eof = 0;
    fz_rx rx = {0};
    gateway_accept(fz_gw, sv[1]);

    for (size_t off = 0; off < size && !eof;) {
        size_t stop = fz_next_stop(data, size, off, mode);
        eof = fz_write(fd, data + off, stop - off, &rx);
        off = stop;
        if (!eof && off < size)
            eof = fz_quiet(fd, &rx);
    }
    if (!eof && !(mode & FZ_MODE_HANG_UP))
        eof = fz_quiet(fd, &rx);

    /* Hang up, and wait until the server has closed its side and finished
     * the calls still running and those that closing makes (the logout). */
    shutdown(fd, SHUT_WR);
    while (!eof) {
        fz_wait(fd, 1000);
        eof = fz_drain(fd, &rx, &got);
    }
    fz_loop_sync();
    while (fz_calls_open())
        fz_wait(-1, 1000);
    fz_loop_sync();
    fz_loop_sync();
    close(fd);
    free(rx.buf);

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
    loop_stop(fz_loop);
    gateway_free(fz_gw);
    event_free(fz_sync_ev);
    for (int k = 0; k < 3; k++)
        protobuf_c_service_destroy(fz_svcs[k]);
    loop_free(fz_loop);
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
    log_set_level(fz_verbose ? LOG_INFO : LOG_ERROR);
    if (pwhash_init() < 0 || loop_global_init() < 0)
        fz_fail("pwhash_init or loop_global_init");
    fz_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fz_efd < 0)
        fz_fail("eventfd");
    snprintf(fz_db, sizeof(fz_db), "%s/parley.db", fz_data_dir());
    fz_svc_config(&fz_cfg, fz_db);
    fz_bus = bus_local_new();
    if (!fz_bus)
        fz_fail("bus_local_new");
    fz_rt = svc_runtime_new(&fz_cfg, fz_bus, err, sizeof(err));
    if (!fz_rt) {
        fprintf(stderr, "fuzz_gateway: %s\n", err);
        abort();
    }
    fz_loop = loop_new(0);
    if (!fz_loop)
        fz_fail("loop_new");
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
                  .reg_rate = 0,
                  .fail_rate = 0,
                  .fail_free = 0,
                  .fail_max_delay_s = 0,
                  .auth_per_conn = 2,
                  .auth_per_ip = 8,
                  .auth_total = 256},
    };
    fz_gw = gateway_new(&gcfg, &fz_loop, 1, fz_svcs[0], fz_svcs[1], fz_svcs[2], fz_bus);
    if (!fz_gw)
        fz_fail("gateway_new");
    fz_sync_ev = event_new(loop_base(fz_loop), -1, 0, fz_sync_done, NULL);
    if (!fz_sync_ev || event_priority_set(fz_sync_ev, 1) < 0)
        fz_fail("the sync event");
    if (loop_start(fz_loop) < 0)
        fz_fail("loop_start");
    atexit(fz_teardown);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_session(data, size);
    return 0;
}
