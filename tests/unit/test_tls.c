/*
 * net/tls, and conn over TLS on a real loop thread: fingerprints as text, a
 * self-signed pair that loads and verifies (by CA file, host name and IP),
 * a reload that new connections see while old ones go on, and an echo of
 * megabytes through a conn whose reader falls behind (the WANT_WRITE and
 * pause paths), plus a plain peer that gets nothing; and node-to-node
 * mutual TLS: roles, a missing certificate, a stranger's CA.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/frame.h"
#include "net/conn.h"
#include "net/loop.h"
#include "net/tls.h"

static char g_dir[64];
static char g_cert[PATH_MAX], g_key[PATH_MAX];

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nonblock(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void make_pair(const char *cert, const char *key)
{
    static const char *const names[] = {"localhost", "127.0.0.1", "::1"};
    char err[512] = "";
    int rc = tls_make_self_signed(cert, key, names, 3, err, sizeof(err));
    if (rc < 0)
        fail_msg("%s", err);
}

static int setup(void **state)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/parley-tls-XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    snprintf(g_cert, sizeof(g_cert), "%s/cert.pem", g_dir);
    snprintf(g_key, sizeof(g_key), "%s/key.pem", g_dir);
    make_pair(g_cert, g_key);
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Both ends of a socketpair through their handshakes, in this thread. */
static void handshake(tls_ctx *srv, tls_ctx *cli, const char *host, tls_conn **s, tls_conn **c,
                      int fds[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    nonblock(fds[0]);
    nonblock(fds[1]);
    *s = tls_conn_new(srv, fds[0], NULL);
    *c = tls_conn_new(cli, fds[1], host);
    assert_non_null(*s);
    assert_non_null(*c);
    int sd = 0, cd = 0;
    for (int i = 0; i < 100 && !(sd && cd); i++) {
        if (!cd) {
            int r = tls_handshake(*c);
            assert_true(r != TLS_ERROR);
            cd = r == 1;
        }
        if (!sd) {
            int r = tls_handshake(*s);
            assert_true(r != TLS_ERROR);
            sd = r == 1;
        }
    }
    assert_true(sd && cd);
}

static void pair_free(tls_conn *s, tls_conn *c, int fds[2])
{
    tls_conn_free(c);
    tls_conn_free(s);
    close(fds[0]);
    close(fds[1]);
}

/* Writes msg on one end and reads it whole on the other. */
static void exchange(tls_conn *from, tls_conn *to, const char *msg)
{
    size_t n = strlen(msg), got = 0;
    char buf[256];
    assert_int_equal(tls_write(from, msg, n), (ssize_t)n);
    for (int i = 0; i < 100 && got < n; i++) {
        ssize_t r = tls_read(to, buf + got, sizeof(buf) - got);
        if (r > 0)
            got += (size_t)r;
        else
            assert_int_equal(r, TLS_WANT_READ);
    }
    assert_int_equal(got, n);
    assert_memory_equal(buf, msg, n);
}

static void test_fingerprint_text(void **state)
{
    uint8_t fp[TLS_FP_LEN], back[TLS_FP_LEN];
    char text[TLS_FP_TEXT], lower[TLS_FP_TEXT + 8];
    for (int i = 0; i < TLS_FP_LEN; i++)
        fp[i] = (uint8_t)(i * 37 + 5);
    tls_fp_format(fp, text);
    assert_int_equal(strlen(text), TLS_FP_TEXT - 1);
    assert_int_equal(tls_fp_parse(text, back), 0);
    assert_memory_equal(fp, back, TLS_FP_LEN);
    /* sha256:, lower case, no colons */
    size_t k = (size_t)snprintf(lower, sizeof(lower), "sha256:");
    for (const char *p = text; *p; p++)
        if (*p != ':')
            lower[k++] = (char)(*p >= 'A' && *p <= 'F' ? *p - 'A' + 'a' : *p);
    lower[k] = '\0';
    memset(back, 0, sizeof(back));
    assert_int_equal(tls_fp_parse(lower, back), 0);
    assert_memory_equal(fp, back, TLS_FP_LEN);
    /* too short, too long, not hex, an odd digit */
    assert_int_equal(tls_fp_parse("AB:CD", back), -1);
    char longer[TLS_FP_TEXT + 3];
    snprintf(longer, sizeof(longer), "%s:00", text);
    assert_int_equal(tls_fp_parse(longer, back), -1);
    char bad[TLS_FP_TEXT];
    memcpy(bad, text, sizeof(bad));
    bad[4] = 'G';
    assert_int_equal(tls_fp_parse(bad, back), -1);
    bad[4] = text[4];
    bad[TLS_FP_TEXT - 2] = '\0';
    assert_int_equal(tls_fp_parse(bad, back), -1);
    assert_int_equal(tls_fp_parse("", back), -1);
}

static void test_self_signed_key_is_private(void **state)
{
    struct stat st;
    assert_int_equal(stat(g_key, &st), 0);
    assert_int_equal(st.st_mode & 077, 0);
    char err[512];
    assert_null(tls_server_new(g_cert, "/nonexistent/key.pem", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/key.pem"));
    /* A key that is not the certificate's. */
    char cert2[PATH_MAX], key2[PATH_MAX];
    snprintf(cert2, sizeof(cert2), "%s/other-cert.pem", g_dir);
    snprintf(key2, sizeof(key2), "%s/other-key.pem", g_dir);
    make_pair(cert2, key2);
    assert_null(tls_server_new(g_cert, key2, err, sizeof(err)));
    unlink(cert2);
    unlink(key2);
}

static void test_handshake_and_verification(void **state)
{
    char err[512], why[256];
    tls_ctx *srv = tls_server_new(g_cert, g_key, err, sizeof(err));
    assert_non_null(srv);
    tls_ctx *by_ca = tls_client_new(g_cert, err, sizeof(err));
    assert_non_null(by_ca);
    tls_ctx *by_store = tls_client_new(NULL, err, sizeof(err));
    assert_non_null(by_store);
    uint8_t served[TLS_FP_LEN], seen[TLS_FP_LEN];
    tls_server_fingerprint(srv, served);

    static const struct {
        int ca;
        const char *host;
        int ok;
        const char *why;
    } cases[] = {
        {1, "localhost", 1, NULL},
        {1, "127.0.0.1", 1, NULL},
        {1, "::1", 1, NULL},
        {1, "example.com", 0, "mismatch"},
        {1, "10.1.2.3", 0, "mismatch"},
        {0, "localhost", 0, "self-signed"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tls_conn *s, *c;
        int fds[2];
        handshake(srv, cases[i].ca ? by_ca : by_store, cases[i].host, &s, &c, fds);
        assert_string_equal(tls_version(c), "TLSv1.3");
        assert_int_equal(tls_peer_fingerprint(c, seen), 0);
        assert_memory_equal(seen, served, TLS_FP_LEN);
        int v = tls_peer_verified(c, why, sizeof(why));
        if (cases[i].ok) {
            assert_int_equal(v, 0);
        } else {
            assert_int_equal(v, -1);
            if (!strstr(why, cases[i].why))
                fail_msg("%s: expected '%s' in '%s'", cases[i].host, cases[i].why, why);
        }
        exchange(c, s, "hello from the client");
        exchange(s, c, "and from the server");
        /* A close_notify reads as the end. */
        tls_conn_free(s);
        char buf[16];
        ssize_t r = TLS_WANT_READ;
        for (int k = 0; k < 100 && r == TLS_WANT_READ; k++)
            r = tls_read(c, buf, sizeof(buf));
        assert_int_equal(r, 0);
        pair_free(NULL, c, fds);
    }
    tls_ctx_free(by_store);
    tls_ctx_free(by_ca);
    tls_ctx_free(srv);
}

static void test_reload_serves_new_connections(void **state)
{
    char cert[PATH_MAX], key[PATH_MAX], cert2[PATH_MAX], key2[PATH_MAX], err[512];
    snprintf(cert, sizeof(cert), "%s/r-cert.pem", g_dir);
    snprintf(key, sizeof(key), "%s/r-key.pem", g_dir);
    snprintf(cert2, sizeof(cert2), "%s/r2-cert.pem", g_dir);
    snprintf(key2, sizeof(key2), "%s/r2-key.pem", g_dir);
    make_pair(cert, key);
    make_pair(cert2, key2);
    tls_ctx *srv = tls_server_new(cert, key, err, sizeof(err));
    tls_ctx *cli = tls_client_new(NULL, err, sizeof(err));
    assert_non_null(srv);
    assert_non_null(cli);
    uint8_t fp1[TLS_FP_LEN], fp2[TLS_FP_LEN], seen[TLS_FP_LEN];
    tls_server_fingerprint(srv, fp1);

    tls_conn *s1, *c1;
    int fds1[2];
    handshake(srv, cli, NULL, &s1, &c1, fds1);

    /* A broken file keeps the old certificate. */
    FILE *f = fopen(cert, "w");
    assert_non_null(f);
    fputs("not a certificate\n", f);
    fclose(f);
    assert_int_equal(tls_server_reload(srv, err, sizeof(err)), -1);
    tls_server_fingerprint(srv, fp2);
    assert_memory_equal(fp1, fp2, TLS_FP_LEN);

    assert_int_equal(rename(key2, key), 0);
    assert_int_equal(rename(cert2, cert), 0);
    assert_int_equal(tls_server_reload(srv, err, sizeof(err)), 0);
    tls_server_fingerprint(srv, fp2);
    assert_memory_not_equal(fp1, fp2, TLS_FP_LEN);

    tls_conn *s2, *c2;
    int fds2[2];
    handshake(srv, cli, NULL, &s2, &c2, fds2);
    assert_int_equal(tls_peer_fingerprint(c2, seen), 0);
    assert_memory_equal(seen, fp2, TLS_FP_LEN);
    /* The first connection goes on with the first certificate. */
    assert_int_equal(tls_peer_fingerprint(c1, seen), 0);
    assert_memory_equal(seen, fp1, TLS_FP_LEN);
    exchange(c1, s1, "still here");
    exchange(s1, c1, "still served");
    exchange(c2, s2, "new here");

    pair_free(s2, c2, fds2);
    /* The old context lives on in s1 alone now. */
    pair_free(s1, c1, fds1);
    tls_ctx_free(cli);
    tls_ctx_free(srv);
}

/* ---- conn over TLS on a loop ---- */

static loop *g_loop;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;

typedef struct {
    conn *c;
    int frames;
    int closed;
    char why[128];
} tstate;

static tstate *st_of(conn *c)
{
    return *(tstate **)conn_udata(c);
}

/* Echoes every frame; every 7th, and "hold", holds reading for a moment (a
 * request in flight) so that input waits inside TLS while the conn is
 * paused. */
static void release_run(void *arg)
{
    conn_inflight_dec(arg);
    conn_unref(arg);
}

static void h_frame(conn *c, const uint8_t *payload, size_t len)
{
    tstate *st = st_of(c);
    uint8_t hdr[FRAME_HDR];
    frame_put_header(hdr, (uint32_t)len);
    conn_send_raw(c, hdr, sizeof(hdr));
    conn_send_raw(c, payload, len);
    pthread_mutex_lock(&g_mu);
    int n = ++st->frames;
    pthread_mutex_unlock(&g_mu);
    if (n % 7 == 0 || (len == 4 && memcmp(payload, "hold", 4) == 0)) {
        conn_inflight_inc(c);
        conn_ref(c);
        loop_post(conn_loop(c), release_run, c);
    }
}

static void h_oversize(conn *c, size_t announced) {}

static void h_close(conn *c, const char *why)
{
    tstate *st = st_of(c);
    pthread_mutex_lock(&g_mu);
    st->closed = 1;
    snprintf(st->why, sizeof(st->why), "%s", why);
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static const conn_handler h_echo = {
    .on_frame = h_frame,
    .on_oversize = h_oversize,
    .on_close = h_close,
};

typedef struct {
    int fd;
    const conn_class *cls;
    tstate *st;
    int done;
} adopt;

static void adopt_run(void *p)
{
    adopt *a = p;
    conn *c = conn_new(g_loop, a->fd, a->cls, sizeof(tstate *));
    if (c) {
        *(tstate **)conn_udata(c) = a->st;
        conn_ref(c); /* the test's */
        a->st->c = c;
    }
    pthread_mutex_lock(&g_mu);
    a->done = 1;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

/* A conn of class cls on the loop over one end of a socketpair; returns the
 * other end (non-blocking). */
static int open_conn(const conn_class *cls, tstate *st)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    nonblock(sv[0]);
    nonblock(sv[1]);
    memset(st, 0, sizeof(*st));
    adopt a = {sv[0], cls, st, 0};
    loop_post(g_loop, adopt_run, &a);
    pthread_mutex_lock(&g_mu);
    while (!a.done)
        pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
    assert_non_null(st->c);
    return sv[1];
}

/* Waits up to ms for the conn to close; 1 if it did. */
static int wait_closed(tstate *st, int ms)
{
    int64_t end = now_ms() + ms;
    pthread_mutex_lock(&g_mu);
    while (!st->closed && now_ms() < end) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&g_cv, &g_mu, &ts);
    }
    int closed = st->closed;
    pthread_mutex_unlock(&g_mu);
    return closed;
}

static void unref_run(void *p)
{
    tstate *st = p;
    conn_close(st->c, "test over");
    conn_unref(st->c);
    pthread_mutex_lock(&g_mu);
    st->c = NULL;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static void close_conn(tstate *st)
{
    loop_post(g_loop, unref_run, st);
    pthread_mutex_lock(&g_mu);
    while (st->c)
        pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
}

/* With interleave, the echo is read while sending, so input waits inside
 * TLS while the conn pauses; without, everything is sent before any of the
 * echo is read, so the server's writes must wait for this reader. */
static void echo_megabytes(int interleave)
{
    enum { FRAMES = 400, MAXLEN = 60000 };
    char err[512];
    tls_ctx *srv = tls_server_new(g_cert, g_key, err, sizeof(err));
    tls_ctx *cli = tls_client_new(g_cert, err, sizeof(err));
    assert_non_null(srv);
    assert_non_null(cli);
    conn_class cls = {.h = &h_echo,
                      .lim = {.max_frame = 64 * 1024, .max_out = 64u << 20, .max_inflight = 1},
                      .tls = srv};
    static tstate st; /* outlives a failed assertion: the loop may still write it */
    int fd = open_conn(&cls, &st);
    tls_conn *tc = tls_conn_new(cli, fd, "localhost");
    assert_non_null(tc);

    size_t total = 0;
    uint8_t *out = malloc((size_t)FRAMES * (FRAME_HDR + MAXLEN));
    assert_non_null(out);
    srand(7);
    for (int i = 0; i < FRAMES; i++) {
        size_t len = i % 10 == 0 ? MAXLEN : (size_t)(rand() % 2000) + 1;
        frame_put_header(out + total, (uint32_t)len);
        for (size_t k = 0; k < len; k++)
            out[total + FRAME_HDR + k] = (uint8_t)(i + k);
        total += FRAME_HDR + len;
    }
    uint8_t *in = malloc(total);
    assert_non_null(in);
    size_t sent = 0, got = 0;
    int64_t end = now_ms() + 20000;
    while (got < total && now_ms() < end) {
        short ev = 0;
        int moved = 0;
        if (sent < total) {
            size_t n = total - sent < TLS_RECORD ? total - sent : TLS_RECORD;
            ssize_t w = tls_write(tc, out + sent, n);
            if (w > 0) {
                sent += (size_t)w;
                moved = 1;
            } else if (w == TLS_WANT_READ) {
                ev |= POLLIN; /* the handshake, driven by the first write */
            } else {
                assert_int_equal(w, TLS_WANT_WRITE);
                ev |= POLLOUT;
            }
        }
        if (interleave || sent == total) {
            ssize_t r;
            while ((r = tls_read(tc, in + got, total - got)) > 0) {
                got += (size_t)r;
                moved = 1;
            }
            if (r != TLS_WANT_READ)
                fail_msg("read %zd: %s", r, tls_error());
            ev |= POLLIN;
        }
        struct pollfd p = {.fd = fd, .events = ev};
        if (!moved)
            poll(&p, 1, 1000);
    }
    assert_int_equal(got, total);
    assert_memory_equal(in, out, total);
    pthread_mutex_lock(&g_mu);
    assert_int_equal(st.frames, FRAMES);
    assert_int_equal(st.closed, 0);
    pthread_mutex_unlock(&g_mu);

    /* The client's close_notify closes the conn. */
    tls_conn_free(tc);
    assert_int_equal(wait_closed(&st, 5000), 1);
    pthread_mutex_lock(&g_mu);
    assert_int_equal(st.closed, 1);
    assert_string_equal(st.why, "peer closed");
    pthread_mutex_unlock(&g_mu);
    close_conn(&st);
    close(fd);
    free(in);
    free(out);
    tls_ctx_free(cli);
    tls_ctx_free(srv);
}

static void test_conn_echoes_megabytes_over_tls(void **state)
{
    echo_megabytes(1);
    echo_megabytes(0);
}

/* Client side of a test: all of buf through tc, or fail. */
static void client_write(tls_conn *tc, int fd, const void *buf, size_t len)
{
    size_t off = 0;
    int64_t end = now_ms() + 5000;
    while (off < len) {
        assert_true(now_ms() < end);
        ssize_t w = tls_write(tc, (const uint8_t *)buf + off, len - off);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        assert_true(w == TLS_WANT_READ || w == TLS_WANT_WRITE);
        struct pollfd p = {.fd = fd, .events = w == TLS_WANT_READ ? POLLIN : POLLOUT};
        poll(&p, 1, 100);
    }
}

/* Reads exactly len bytes within ms; how many arrived. */
static size_t client_read(tls_conn *tc, int fd, uint8_t *buf, size_t len, int ms)
{
    size_t got = 0;
    int64_t end = now_ms() + ms;
    while (got < len && now_ms() < end) {
        ssize_t r = tls_read(tc, buf + got, len - got);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        assert_true(r == TLS_WANT_READ || r == TLS_WANT_WRITE);
        struct pollfd p = {.fd = fd, .events = r == TLS_WANT_READ ? POLLIN : POLLOUT};
        poll(&p, 1, 50);
    }
    return got;
}

static size_t put_frame(uint8_t *at, const char *payload)
{
    size_t n = strlen(payload);
    frame_put_header(at, (uint32_t)n);
    memcpy(at + FRAME_HDR, payload, n);
    return FRAME_HDR + n;
}

/* Two records arrive together; TLS reads both from the socket (read-ahead)
 * but hands out the first, whose last frame pauses the conn. The second
 * waits inside TLS, where no socket event will announce it: the resume
 * must read it anyway. */
static void test_paused_conn_reads_what_tls_holds(void **state)
{
    char err[512];
    tls_ctx *srv = tls_server_new(g_cert, g_key, err, sizeof(err));
    tls_ctx *cli = tls_client_new(g_cert, err, sizeof(err));
    assert_non_null(srv);
    assert_non_null(cli);
    conn_class cls = {.h = &h_echo,
                      .lim = {.max_frame = 64 * 1024, .max_out = 1u << 20, .max_inflight = 1},
                      .tls = srv};
    static tstate st; /* outlives a failed assertion: the loop may still write it */
    int fd = open_conn(&cls, &st);
    tls_conn *tc = tls_conn_new(cli, fd, "localhost");
    assert_non_null(tc);
    for (int round = 0; round < 20; round++) {
        uint8_t a[64], b[64], want[128], got[128];
        size_t na = put_frame(a, "ping"), nb;
        na += put_frame(a + na, "hold");
        nb = put_frame(b, "last");
        memcpy(want, a, na);
        memcpy(want + na, b, nb);
        client_write(tc, fd, a, na); /* one record each */
        client_write(tc, fd, b, nb);
        size_t n = client_read(tc, fd, got, na + nb, 3000);
        if (n != na + nb)
            fail_msg("round %d: %zu of %zu bytes echoed", round, n, na + nb);
        assert_memory_equal(got, want, na + nb);
    }
    tls_conn_free(tc);
    close_conn(&st);
    close(fd);
    tls_ctx_free(cli);
    tls_ctx_free(srv);
}

static void test_plain_peer_gets_nothing(void **state)
{
    char err[512];
    tls_ctx *srv = tls_server_new(g_cert, g_key, err, sizeof(err));
    assert_non_null(srv);
    conn_class cls = {.h = &h_echo,
                      .lim = {.max_frame = 64 * 1024, .max_out = 1u << 20, .max_inflight = 8},
                      .tls = srv};
    static tstate st; /* outlives a failed assertion: the loop may still write it */
    int fd = open_conn(&cls, &st);
    uint8_t f[FRAME_HDR + 5];
    frame_put_header(f, 5);
    memcpy(f + FRAME_HDR, "hello", 5);
    assert_int_equal(send(fd, f, sizeof(f), MSG_NOSIGNAL), (ssize_t)sizeof(f));
    /* The server closes; whatever it sent first is a TLS alert, never a
     * frame. */
    uint8_t buf[256];
    size_t n = 0;
    int64_t end = now_ms() + 5000;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        assert_true(now_ms() < end);
        poll(&p, 1, 100);
        ssize_t r = recv(fd, buf + n, sizeof(buf) - n, 0);
        if (r == 0 || (r < 0 && errno == ECONNRESET))
            break;
        if (r > 0)
            n += (size_t)r;
    }
    assert_true(n == 0 || buf[0] == 0x15);
    assert_int_equal(wait_closed(&st, 5000), 1);
    pthread_mutex_lock(&g_mu);
    assert_int_equal(st.frames, 0);
    pthread_mutex_unlock(&g_mu);
    close_conn(&st);
    close(fd);
    tls_ctx_free(srv);
}

/* ---- mutual TLS between nodes ---- */

/* A CA (DIR/NAME-ca.pem) made with the openssl command, as
 * scripts/cluster.sh makes the cluster's. */
static void make_ca(const char *name)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "
             "%s/%s-ca.key -out %s/%s-ca.pem -days 2 -subj '/CN=%s CA' -addext "
             "basicConstraints=critical,CA:TRUE 2>/dev/null",
             g_dir, name, g_dir, name, name);
    assert_int_equal(system(cmd), 0);
}

/* DIR/NAME.pem and .key, signed by CA, with subject OUs ous ("/OU=x..."). */
static void make_node(const char *ca, const char *name, const char *ous)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "cd %s && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
             "-keyout %s.key -out %s.csr -subj '/O=Parley cluster%s/CN=%s' 2>/dev/null && "
             "printf 'extendedKeyUsage=serverAuth,clientAuth\\n' > %s.ext && "
             "openssl x509 -req -in %s.csr -CA %s-ca.pem -CAkey %s-ca.key -set_serial 7 -days 2 "
             "-extfile %s.ext -out %s.pem 2>/dev/null",
             g_dir, name, name, ous, name, name, name, ca, ca, name, name);
    assert_int_equal(system(cmd), 0);
}

static tls_ctx *node_ctx(int server, const char *ca, const char *name, const char *peer_role)
{
    char caf[PATH_MAX], cert[PATH_MAX], key[PATH_MAX], err[512] = "";
    snprintf(caf, sizeof(caf), "%s/%s-ca.pem", g_dir, ca);
    snprintf(cert, sizeof(cert), "%s/%s.pem", g_dir, name);
    snprintf(key, sizeof(key), "%s/%s.key", g_dir, name);
    tls_ctx *t = tls_node_new(server, caf, cert, key, peer_role, err, sizeof(err));
    if (!t)
        fail_msg("%s", err);
    return t;
}

/* Runs both handshakes until both are done (1) or one fails (0). */
static int try_handshake(tls_ctx *srv, tls_ctx *cli, tls_conn **s, tls_conn **c, int fds[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    nonblock(fds[0]);
    nonblock(fds[1]);
    *s = tls_conn_new(srv, fds[0], NULL);
    *c = tls_conn_new(cli, fds[1], NULL);
    assert_non_null(*s);
    assert_non_null(*c);
    int sd = 0, cd = 0;
    for (int i = 0; i < 100 && !(sd && cd); i++) {
        if (!cd) {
            int r = tls_handshake(*c);
            if (r == TLS_ERROR)
                return 0;
            cd = r == 1;
        }
        if (!sd) {
            int r = tls_handshake(*s);
            if (r == TLS_ERROR)
                return 0;
            sd = r == 1;
        }
    }
    /* TLS 1.3: the client is done before the server has judged its
     * certificate; a refusal reaches it as its first read fails. */
    char b;
    return sd && cd && tls_read(*c, &b, 1) == TLS_WANT_READ;
}

static void test_node_mutual_tls(void **state)
{
    make_ca("cluster");
    make_ca("other");
    make_node("cluster", "gw", "/OU=gateway");
    make_node("cluster", "svc", "/OU=service");
    make_node("cluster", "both", "/OU=gateway/OU=service");
    make_node("other", "stranger", "/OU=gateway");
    tls_ctx *srv = node_ctx(1, "cluster", "svc", NULL);
    tls_ctx *gw = node_ctx(0, "cluster", "gw", TLS_ROLE_SERVICE);
    tls_ctx *svc_cli = node_ctx(0, "cluster", "svc", TLS_ROLE_SERVICE);
    tls_ctx *stranger = node_ctx(0, "other", "stranger", NULL);
    tls_ctx *gw_srv = node_ctx(1, "cluster", "gw", NULL);
    tls_ctx *both = node_ctx(1, "cluster", "both", NULL);
    char caf[PATH_MAX], err[512];
    snprintf(caf, sizeof(caf), "%s/cluster-ca.pem", g_dir);
    tls_ctx *anon = tls_client_new(caf, err, sizeof(err));
    assert_non_null(anon);

    assert_int_equal(tls_ctx_has_role(srv, TLS_ROLE_SERVICE), 1);
    assert_int_equal(tls_ctx_has_role(srv, TLS_ROLE_GATEWAY), 0);
    assert_int_equal(tls_ctx_has_role(both, TLS_ROLE_GATEWAY), 1);
    assert_int_equal(tls_ctx_has_role(both, TLS_ROLE_SERVICE), 1);

    tls_conn *s, *c;
    int fds[2];
    /* A gateway and a service node: both sides know the other's role. */
    assert_int_equal(try_handshake(srv, gw, &s, &c, fds), 1);
    assert_int_equal(tls_peer_has_role(s, TLS_ROLE_GATEWAY), 1);
    assert_int_equal(tls_peer_has_role(s, TLS_ROLE_SERVICE), 0);
    assert_int_equal(tls_peer_has_role(c, TLS_ROLE_SERVICE), 1);
    exchange(c, s, "call");
    pair_free(s, c, fds);
    /* A service node's certificate is let in, but is no gateway. */
    assert_int_equal(try_handshake(srv, svc_cli, &s, &c, fds), 1);
    assert_int_equal(tls_peer_has_role(s, TLS_ROLE_GATEWAY), 0);
    pair_free(s, c, fds);
    /* No certificate, or one of another CA: no handshake. */
    assert_int_equal(try_handshake(srv, anon, &s, &c, fds), 0);
    pair_free(s, c, fds);
    assert_int_equal(try_handshake(srv, stranger, &s, &c, fds), 0);
    pair_free(s, c, fds);
    /* A gateway does not talk to a "service" whose certificate is a
     * gateway's. */
    assert_int_equal(try_handshake(gw_srv, gw, &s, &c, fds), 0);
    pair_free(s, c, fds);
    /* A node with both roles serves gateways. */
    assert_int_equal(try_handshake(both, gw, &s, &c, fds), 1);
    pair_free(s, c, fds);
    /* A node context has no files to reload. */
    assert_int_equal(tls_server_reload(srv, err, sizeof(err)), -1);

    tls_ctx *list[] = {srv, gw, svc_cli, stranger, gw_srv, both, anon};
    for (size_t i = 0; i < sizeof(list) / sizeof(list[0]); i++)
        tls_ctx_free(list[i]);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (loop_global_init() < 0)
        return 1;
    g_loop = loop_new(0);
    if (!g_loop || loop_start(g_loop) < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fingerprint_text),
        cmocka_unit_test(test_self_signed_key_is_private),
        cmocka_unit_test(test_handshake_and_verification),
        cmocka_unit_test(test_reload_serves_new_connections),
        cmocka_unit_test(test_conn_echoes_megabytes_over_tls),
        cmocka_unit_test(test_paused_conn_reads_what_tls_holds),
        cmocka_unit_test(test_plain_peer_gets_nothing),
        cmocka_unit_test(test_node_mutual_tls),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    loop_stop(g_loop);
    loop_free(g_loop);
    return rc;
}
