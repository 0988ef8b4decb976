/*
 * Connections on a real loop thread, seen from the peer's side of a socket:
 * a frame dribbled too slowly is cut, idle counts whole frames and not
 * bytes, deadlines fire, on_drain waits for the reader, and the peer's
 * address reads as text. Limits are 1 s, so the whole file takes seconds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/frame.h"
#include "net/conn.h"
#include "net/loop.h"

enum { LOW_WATER = 256 * 1024, BIG = 4 << 20, PAGE = 1024 };

static loop *g_loop;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;

/* What the handler saw of one connection; guarded by g_mu. */
typedef struct {
    conn *c;
    int frames;
    int drains;
    int deadlines;
    int closed;
    int in_drain, reentered;
    int pages_left;
    size_t pending_at_drain;
    int64_t closed_ms;
    char why[64];
} tstate;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static tstate *st_of(conn *c)
{
    return *(tstate **)conn_udata(c);
}

/* ---- the handler ---- */

static void h_frame(conn *c, const uint8_t *payload, size_t len)
{
    tstate *st = st_of(c);
    pthread_mutex_lock(&g_mu);
    st->frames++;
    pthread_mutex_unlock(&g_mu);
    if (len == 4 && memcmp(payload, "hold", 4) == 0)
        conn_inflight_inc(c); /* a request that never completes */
}

static void h_oversize(conn *c, size_t announced) {}

static void h_close(conn *c, const char *why)
{
    tstate *st = st_of(c);
    pthread_mutex_lock(&g_mu);
    st->closed = 1;
    st->closed_ms = now_ms();
    snprintf(st->why, sizeof(st->why), "%s", why);
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static void h_deadline(conn *c)
{
    tstate *st = st_of(c);
    pthread_mutex_lock(&g_mu);
    st->deadlines++;
    pthread_mutex_unlock(&g_mu);
    uint8_t bye[FRAME_HDR + 3];
    frame_put_header(bye, 3);
    memcpy(bye + FRAME_HDR, "bye", 3);
    conn_send_raw(c, bye, sizeof(bye));
    conn_close_after_flush(c, "too late");
}

/* A pager: each call sends one page and asks again while pages are left. */
static void h_drain(conn *c)
{
    static uint8_t page[PAGE];
    tstate *st = st_of(c);
    pthread_mutex_lock(&g_mu);
    if (st->in_drain)
        st->reentered = 1;
    st->in_drain = 1;
    st->drains++;
    st->pending_at_drain = conn_out_pending(c);
    int more = st->pages_left > 0;
    if (more)
        st->pages_left--;
    pthread_mutex_unlock(&g_mu);
    if (more) {
        conn_send_raw(c, page, sizeof(page)); /* must not call us again */
        conn_want_drain(c);                   /* below low water: next pass */
    }
    pthread_mutex_lock(&g_mu);
    st->in_drain = 0;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static const conn_handler h_full = {
    .on_frame = h_frame,
    .on_oversize = h_oversize,
    .on_close = h_close,
    .on_deadline = h_deadline,
    .on_drain = h_drain,
};

static const conn_handler h_plain = {
    .on_frame = h_frame,
    .on_oversize = h_oversize,
    .on_close = h_close,
};

static conn_class make_class(const conn_handler *h, uint32_t idle_s, uint32_t frame_s)
{
    return (conn_class){.h = h,
                        .lim = {.max_frame = 64 * 1024,
                                .max_out = 16u << 20,
                                .low_water = LOW_WATER,
                                .idle_timeout_s = idle_s,
                                .frame_timeout_s = frame_s,
                                .max_inflight = 64}};
}

/* ---- running things on the loop's thread ---- */

typedef struct {
    void (*fn)(void *);
    void *arg;
    int done;
} job;

static void job_run(void *p)
{
    job *j = p;
    j->fn(j->arg);
    pthread_mutex_lock(&g_mu);
    j->done = 1;
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static void on_loop(void (*fn)(void *), void *arg)
{
    job j = {fn, arg, 0};
    loop_post(g_loop, job_run, &j);
    pthread_mutex_lock(&g_mu);
    while (!j.done)
        pthread_cond_wait(&g_cv, &g_mu);
    pthread_mutex_unlock(&g_mu);
}

typedef struct {
    int fd;
    const conn_class *cls;
    tstate *st;
} adopt;

static void adopt_run(void *p)
{
    adopt *a = p;
    conn *c = conn_new(g_loop, a->fd, a->cls, sizeof(tstate *));
    if (!c)
        abort(); /* not assert_*: this is the loop's thread */
    *(tstate **)conn_udata(c) = a->st;
    conn_ref(c); /* the test's, so that it may ask a closed conn */
    a->st->c = c;
}

/* Gives one end of a fresh socketpair to a conn on the loop; returns the
 * peer's end (blocking). */
static int open_conn(const conn_class *cls, tstate *st)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    memset(st, 0, sizeof(*st));
    adopt a = {sv[0], cls, st};
    on_loop(adopt_run, &a);
    return sv[1];
}

static void close_run(void *p)
{
    tstate *st = p;
    conn_close(st->c, "test over"); /* nothing if closed already */
    conn_unref(st->c);
}

static void close_conn(tstate *st, int peer)
{
    on_loop(close_run, st);
    close(peer);
}

static int is_closed(tstate *st)
{
    pthread_mutex_lock(&g_mu);
    int closed = st->closed;
    pthread_mutex_unlock(&g_mu);
    return closed;
}

/* Waits up to ms for the conn to close; 1 if it did. */
static int wait_closed(tstate *st, int ms)
{
    int64_t end = now_ms() + ms;
    while (!is_closed(st) && now_ms() < end)
        sleep_ms(10);
    return is_closed(st);
}

static int get_int(const int *field)
{
    pthread_mutex_lock(&g_mu);
    int v = *field;
    pthread_mutex_unlock(&g_mu);
    return v;
}

static void send_bytes(int fd, const void *p, size_t n)
{
    assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* For a peer the server may cut at any moment. */
static void send_try(int fd, const void *p, size_t n)
{
    (void)!send(fd, p, n, MSG_NOSIGNAL);
}

static void send_frame(int fd, const char *payload)
{
    uint8_t buf[64];
    size_t n = strlen(payload);
    frame_put_header(buf, (uint32_t)n);
    memcpy(buf + FRAME_HDR, payload, n);
    send_bytes(fd, buf, FRAME_HDR + n);
}

/* Reads exactly n bytes (or fails the test after 5 s). */
static void read_exactly(int fd, uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd pfd = {fd, POLLIN, 0};
        assert_int_equal(poll(&pfd, 1, 5000), 1);
        ssize_t r = read(fd, buf + got, n - got);
        assert_true(r > 0);
        got += (size_t)r;
    }
}

/* ---- frame timeout ---- */

static void test_dribbled_frame_is_cut_after_frame_timeout(void **state)
{
    conn_class cls = make_class(&h_plain, 0, 1);
    tstate slow, steady;
    int ps = open_conn(&cls, &slow);
    int pt = open_conn(&cls, &steady);
    /* slow: a 20-byte frame, one byte per 200 ms (4.8 s in all).
     * steady: small frames, each complete within 0.4 s, for as long. */
    uint8_t frame[FRAME_HDR + 20] = {0};
    frame_put_header(frame, 20);
    uint8_t small[FRAME_HDR + 2] = {0};
    frame_put_header(small, 2);
    int64_t start = now_ms();
    size_t i = 0;
    for (; i < sizeof(frame) && !is_closed(&slow); i++) {
        send_try(ps, frame + i, 1);
        send_bytes(pt, small + (i % 3) * 2, 2);
        sleep_ms(200);
    }
    assert_true(wait_closed(&slow, 3000));
    assert_int_equal(get_int(&slow.frames), 0);
    int64_t took = slow.closed_ms - start;
    assert_string_equal(slow.why, "frame timeout");
    assert_true(i < sizeof(frame)); /* cut before the frame was whole */
    assert_true(took >= 950);       /* never before the timeout */
    assert_true(took <= 4000);      /* and about a second or two after */
    /* The steady peer took longer in all, but each of its frames was quick. */
    assert_false(is_closed(&steady));
    assert_true(get_int(&steady.frames) >= (int)(i / 3) - 1);
    close_conn(&slow, ps);
    close_conn(&steady, pt);
}

/* ---- idle ---- */

static void test_idle_counts_frames_not_bytes(void **state)
{
    conn_class cls = make_class(&h_plain, 1, 0);
    tstate dribbler, pinger, busy;
    int pd = open_conn(&cls, &dribbler);
    int pp = open_conn(&cls, &pinger);
    int pb = open_conn(&cls, &busy);
    int64_t start = now_ms();
    send_frame(pb, "hold"); /* one request in flight, never answered */
    uint8_t hdr[FRAME_HDR];
    frame_put_header(hdr, 100);
    send_bytes(pd, hdr, sizeof(hdr));
    /* For 3.6 s, well past the 1-3 s in which a silent conn is closed: the
     * dribbler sends a byte of its frame, the pinger a whole frame, every
     * 300 ms. */
    uint8_t byte = 'x';
    for (int i = 0; i < 12; i++) {
        if (!is_closed(&dribbler))
            send_try(pd, &byte, 1);
        send_frame(pp, "ping");
        sleep_ms(300);
        assert_false(is_closed(&pinger));
    }
    int64_t last = now_ms() - 300;
    assert_true(is_closed(&dribbler));
    assert_string_equal(dribbler.why, "idle timeout");
    assert_int_equal(get_int(&dribbler.frames), 0);
    assert_true(dribbler.closed_ms - start >= 950);
    assert_true(dribbler.closed_ms - start <= 3500);
    assert_int_equal(get_int(&pinger.frames), 12);
    /* As quiet as the dribbler since the start, but with a request in
     * flight: not idle. */
    assert_false(is_closed(&busy));
    /* The pinger stops: closed a second or two later. */
    assert_true(wait_closed(&pinger, 4000));
    assert_string_equal(pinger.why, "idle timeout");
    assert_true(pinger.closed_ms - last >= 950);
    close_conn(&dribbler, pd);
    close_conn(&pinger, pp);
    close_conn(&busy, pb);
}

/* ---- deadline ---- */

typedef struct {
    tstate *a, *b, *cleared;
} deadline_job;

static void set_deadlines(void *p)
{
    deadline_job *j = p;
    conn_set_deadline(j->a->c, 1);
    conn_set_deadline(j->b->c, 1);
    conn_set_deadline(j->cleared->c, 1);
    conn_set_deadline(j->cleared->c, 0);
}

static void test_deadline_fires_on_deadline(void **state)
{
    conn_class full = make_class(&h_full, 0, 0);
    conn_class plain = make_class(&h_plain, 0, 0);
    tstate a, b, cleared;
    int pa = open_conn(&full, &a);
    int pb = open_conn(&plain, &b);
    int pc = open_conn(&full, &cleared);
    deadline_job j = {&a, &b, &cleared};
    int64_t start = now_ms();
    on_loop(set_deadlines, &j);
    /* Traffic does not move a deadline. */
    send_frame(pa, "ping");
    /* a's handler says goodbye, then the conn closes. */
    uint8_t bye[FRAME_HDR + 3];
    read_exactly(pa, bye, sizeof(bye));
    assert_memory_equal(bye + FRAME_HDR, "bye", 3);
    assert_true(now_ms() - start >= 950);
    assert_true(wait_closed(&a, 2000));
    assert_int_equal(get_int(&a.deadlines), 1);
    assert_int_equal(read(pa, bye, 1), 0); /* EOF after the goodbye */
    /* b has no on_deadline: closed with the reason. */
    assert_true(wait_closed(&b, 2000));
    assert_string_equal(b.why, "deadline passed");
    assert_true(b.closed_ms - start >= 950);
    assert_true(b.closed_ms - start <= 4000);
    /* Same deadline, cleared: nothing happened. */
    sleep_ms(1100);
    assert_false(is_closed(&cleared));
    assert_int_equal(get_int(&cleared.deadlines), 0);
    close_conn(&a, pa);
    close_conn(&b, pb);
    close_conn(&cleared, pc);
}

/* ---- drain ---- */

static size_t g_pending;

static void queue_big(void *p)
{
    tstate *st = p;
    uint8_t *big = calloc(1, BIG);
    if (!big || conn_send_raw(st->c, big, BIG) < 0)
        abort();
    free(big);
    conn_want_drain(st->c);
    g_pending = conn_out_pending(st->c);
}

static void read_pending(void *p)
{
    tstate *st = p;
    g_pending = conn_out_pending(st->c);
}

static void start_paging(void *p)
{
    tstate *st = p;
    pthread_mutex_lock(&g_mu);
    st->pages_left = 3;
    pthread_mutex_unlock(&g_mu);
    conn_want_drain(st->c);
}

static void want_then_close(void *p)
{
    tstate *st = p;
    conn_want_drain(st->c); /* already low: due on the next pass... */
    conn_close(st->c, "closed first");
    conn_unref(st->c);
}

static void test_drain_waits_for_the_reader(void **state)
{
    conn_class cls = make_class(&h_full, 0, 0);
    tstate st;
    int p = open_conn(&cls, &st);
    on_loop(queue_big, &st);
    assert_int_equal(g_pending, BIG);
    assert_int_equal(get_int(&st.drains), 0); /* not from inside the send */

    /* The reader reads nothing, then a quarter: still above low water. */
    sleep_ms(300);
    assert_int_equal(get_int(&st.drains), 0);
    uint8_t *buf = malloc(BIG);
    assert_non_null(buf);
    read_exactly(p, buf, BIG / 4);
    sleep_ms(300);
    on_loop(read_pending, &st);
    assert_true(g_pending > LOW_WATER);
    assert_int_equal(get_int(&st.drains), 0);

    /* The reader catches up: one call, with the queue below low water. */
    read_exactly(p, buf, BIG - BIG / 4);
    int64_t end = now_ms() + 2000;
    while (get_int(&st.drains) == 0 && now_ms() < end)
        sleep_ms(5);
    assert_int_equal(get_int(&st.drains), 1);
    assert_true(st.pending_at_drain < LOW_WATER);
    sleep_ms(200);
    assert_int_equal(get_int(&st.drains), 1); /* once per request */

    /* A pager that sends a page and asks again from on_drain: one call per
     * pass, never nested inside its own conn_send_raw. */
    on_loop(start_paging, &st);
    read_exactly(p, buf, 3 * PAGE);
    end = now_ms() + 2000;
    while (get_int(&st.drains) < 5 && now_ms() < end)
        sleep_ms(5);
    assert_int_equal(get_int(&st.drains), 5);
    assert_int_equal(get_int(&st.reentered), 0);

    /* Never after close. */
    on_loop(want_then_close, &st);
    sleep_ms(200);
    assert_int_equal(get_int(&st.drains), 5);
    assert_string_equal(st.why, "closed first");
    free(buf);
    close(p);
}

/* ---- peer address ---- */

typedef struct {
    tstate *st;
    char buf[64];
    size_t len;
    int rc;
} addr_job;

static void peer_addr_run(void *p)
{
    addr_job *j = p;
    j->rc = conn_peer_addr(j->st->c, j->buf, j->len);
}

static void close_then_addr_run(void *p)
{
    addr_job *j = p;
    conn *c = j->st->c;
    conn_close(c, "test over");
    j->rc = conn_peer_addr(c, j->buf, j->len);
    conn_unref(c);
}

static int tcp_pair(int family, const char *host, int *client)
{
    int ls = socket(family, SOCK_STREAM, 0);
    if (ls < 0)
        return -1;
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        inet_pton(AF_INET, host, &sin->sin_addr);
        sl = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, host, &sin6->sin6_addr);
        sl = sizeof(*sin6);
    }
    if (bind(ls, (struct sockaddr *)&ss, sl) < 0 || listen(ls, 1) < 0 ||
        getsockname(ls, (struct sockaddr *)&ss, &sl) < 0) {
        close(ls);
        return -1;
    }
    *client = socket(family, SOCK_STREAM, 0);
    assert_true(*client >= 0);
    assert_int_equal(connect(*client, (struct sockaddr *)&ss, sl), 0);
    int fd = accept(ls, NULL, NULL);
    close(ls);
    assert_true(fd >= 0);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void test_peer_addr(void **state)
{
    conn_class cls = make_class(&h_plain, 0, 0);
    tstate st;
    int client;
    int fd = tcp_pair(AF_INET, "127.0.0.1", &client);
    assert_true(fd >= 0);
    memset(&st, 0, sizeof(st));
    adopt a = {fd, &cls, &st};
    on_loop(adopt_run, &a);
    addr_job j = {.st = &st, .len = sizeof(j.buf)};
    on_loop(peer_addr_run, &j);
    assert_int_equal(j.rc, 0);
    assert_string_equal(j.buf, "127.0.0.1");
    j.len = 4; /* too small */
    on_loop(peer_addr_run, &j);
    assert_int_equal(j.rc, -1);
    j.len = sizeof(j.buf); /* closed */
    on_loop(close_then_addr_run, &j);
    assert_int_equal(j.rc, -1);
    close(client);

    /* IPv6, where the machine has it. */
    fd = tcp_pair(AF_INET6, "::1", &client);
    if (fd >= 0) {
        memset(&st, 0, sizeof(st));
        adopt a6 = {fd, &cls, &st};
        on_loop(adopt_run, &a6);
        j.len = sizeof(j.buf);
        on_loop(peer_addr_run, &j);
        assert_int_equal(j.rc, 0);
        assert_string_equal(j.buf, "::1");
        close_conn(&st, client);
    }

    /* Not an IP socket. */
    int p = open_conn(&cls, &st);
    on_loop(peer_addr_run, &j);
    assert_int_equal(j.rc, -1);
    close_conn(&st, p);
}

static int setup(void **state)
{
    if (loop_global_init() < 0)
        return -1;
    g_loop = loop_new(0);
    return g_loop && loop_start(g_loop) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    loop_free(g_loop);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_peer_addr),
        cmocka_unit_test(test_drain_waits_for_the_reader),
        cmocka_unit_test(test_dribbled_frame_is_cut_after_frame_timeout),
        cmocka_unit_test(test_idle_counts_frames_not_bytes),
        cmocka_unit_test(test_deadline_fires_on_deadline),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
