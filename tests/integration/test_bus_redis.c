/*
 * The Redis bus against a real redis-server (scripts/servers.sh), as a
 * cluster uses it: two buses as gateways 1 and 2, a third one (gateway 0) as
 * the message service that counts presence and publishes.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/thread.h>
#include <hiredis/hiredis.h>
#include <sodium.h>

#include "bus/bus.h"

#ifndef PARLEY_SOURCE_DIR
#error "PARLEY_SOURCE_DIR must name the source tree (for scripts/servers.sh)"
#endif

#define HOST               "127.0.0.1"
#define REDIS_MAC_TEST_LEN 32 /* a MAC in front of every message with a key */

static char redis_dir[64];
static int redis_port;
static int reaper_fd = -1; /* closing it (or dying) makes the reaper clean up */
static pid_t reaper_pid = -1;

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

/* A port nobody listens on (for now). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static int servers(const char *what)
{
    char cmd[512];
    if (strcmp(what, "stop") == 0)
        snprintf(cmd, sizeof(cmd), "'%s/scripts/servers.sh' stop '%s'", PARLEY_SOURCE_DIR,
                 redis_dir);
    else
        snprintf(cmd, sizeof(cmd), "'%s/scripts/servers.sh' redis '%s' %d", PARLEY_SOURCE_DIR,
                 redis_dir, redis_port);
    return system(cmd);
}

/* A child that waits for this process to end, however it ends (a failed
 * assertion, a sanitizer abort), then stops Redis and removes its dir. */
static int start_reaper(void)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    reaper_pid = fork();
    if (reaper_pid < 0)
        return -1;
    if (reaper_pid == 0) {
        signal(SIGINT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        close(fds[1]);
        char c;
        for (;;) {
            ssize_t n = read(fds[0], &c, 1);
            if (n == 0 || (n < 0 && errno != EINTR))
                break;
        }
        char cmd[512];
        snprintf(cmd, sizeof(cmd),
                 "'%s/scripts/servers.sh' stop '%s'; '%s/scripts/servers.sh' stop '%s/secure'; "
                 "rm -rf '%s'",
                 PARLEY_SOURCE_DIR, redis_dir, PARLEY_SOURCE_DIR, redis_dir, redis_dir);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(fds[0]);
    reaper_fd = fds[1];
    return 0;
}

static int group_setup(void **state)
{
    snprintf(redis_dir, sizeof(redis_dir), "/tmp/parley-bus-redis-XXXXXX");
    if (!mkdtemp(redis_dir))
        return -1;
    redis_port = free_port();
    if (redis_port < 0 || start_reaper() < 0)
        return -1;
    return servers("redis") == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    if (reaper_fd >= 0)
        close(reaper_fd);
    if (reaper_pid > 0)
        waitpid(reaper_pid, NULL, 0);
    return 0;
}

/* A command on a connection of the test's own, to look into Redis. */
static redisReply *raw(const char *fmt, ...)
{
    redisContext *c = redisConnect(HOST, redis_port);
    if (!c || c->err) {
        redisFree(c);
        return NULL;
    }
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return r;
}

static long long raw_int(const char *fmt, ...)
{
    redisContext *c = redisConnect(HOST, redis_port);
    if (!c || c->err) {
        redisFree(c);
        return -100;
    }
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -200;
    freeReplyObject(r);
    return v;
}

/* ---- a gateway stand-in that records what the bus hands it ---- */

#define MAX_DELIVERIES 16

typedef struct delivery {
    uint64_t users[16];
    size_t n;
    blob *frame;
    uint64_t msgid;
} delivery;

typedef struct recorder {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    delivery d[MAX_DELIVERIES];
    int ndeliv, resyncs;
    int ncalls; /* deliver calls: a batch is one */
} recorder;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void rec_deliver(void *arg, const bus_push *pushes, size_t np)
{
    recorder *r = arg;
    pthread_mutex_lock(&r->lock);
    for (size_t k = 0; k < np; k++) {
        if (r->ndeliv < MAX_DELIVERIES) {
            delivery *d = &r->d[r->ndeliv];
            d->n = pushes[k].n < 16 ? pushes[k].n : 16;
            memcpy(d->users, pushes[k].users, d->n * sizeof(*d->users));
            qsort(d->users, d->n, sizeof(*d->users), cmp_u64);
            d->frame = blob_ref(pushes[k].frame);
            d->msgid = pushes[k].msgid;
        }
        r->ndeliv++;
    }
    r->ncalls++;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

static void rec_resync(void *arg)
{
    recorder *r = arg;
    pthread_mutex_lock(&r->lock);
    r->resyncs++;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

static recorder *rec_new(void)
{
    recorder *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    return r;
}

static void rec_free(recorder *r)
{
    for (int i = 0; i < r->ndeliv && i < MAX_DELIVERIES; i++)
        blob_unref(r->d[i].frame);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* Waits until *field (deliveries or resyncs) reaches want; its value. */
static int rec_wait(recorder *r, const int *field, int want, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&r->lock);
    int rc = 0;
    while (*field < want && rc == 0)
        rc = pthread_cond_timedwait(&r->cond, &r->lock, &until);
    int v = *field;
    pthread_mutex_unlock(&r->lock);
    return v;
}

static void assert_delivery(recorder *r, int i, const uint64_t *users, size_t n, const blob *f)
{
    pthread_mutex_lock(&r->lock);
    assert_true(i < r->ndeliv);
    delivery *d = &r->d[i];
    assert_int_equal(d->n, n);
    for (size_t k = 0; k < n; k++)
        assert_int_equal(d->users[k], users[k]);
    assert_int_equal(d->frame->len, f->len);
    assert_memory_equal(d->frame->data, f->data, f->len);
    pthread_mutex_unlock(&r->lock);
}

static bus *gateway_bus(uint32_t id, recorder *r)
{
    char err[256] = "";
    bus *b = bus_redis_new(HOST, redis_port, id, err, sizeof(err));
    if (!b)
        fail_msg("bus_redis_new: %s", err);
    if (r) {
        bus_handler h = {.deliver = rec_deliver, .resync = rec_resync, .arg = r};
        bus_subscribe(b, id, &h);
    }
    return b;
}

/* Presence updates are queued: wait until the count says want. */
static long poll_count(bus *b, uint64_t user, long want, int ms)
{
    int64_t until = now_ms() + ms;
    long v;
    while ((v = bus_presence_count(b, user, 0)) != want && now_ms() < until)
        sleep_ms(10);
    return v;
}

static blob *frame_of(const char *s, size_t len)
{
    blob *f = blob_new(len);
    memcpy(f->data, s, len);
    return f;
}

/* ---- tests ---- */

static void test_unreachable_redis_fails_clearly(void **state)
{
    int port = free_port();
    char err[256] = "", want[64];
    bus *b = bus_redis_new(HOST, port, 1, err, sizeof(err));
    assert_null(b);
    snprintf(want, sizeof(want), "cannot reach Redis at %s:%d: ", HOST, port);
    assert_non_null(strstr(err, want));
    err[0] = 0;
    assert_null(bus_redis_new(HOST, port, 0, err, sizeof(err)));
    assert_non_null(strstr(err, want));
}

static void test_presence_across_gateways(void **state)
{
    bus *g1 = gateway_bus(1, NULL), *g2 = gateway_bus(2, NULL), *p = gateway_bus(0, NULL);
    assert_int_equal(bus_presence_add(g1, 101, 1), 0);
    assert_int_equal(bus_presence_add(g1, 101, 1), 0);
    assert_int_equal(bus_presence_add(g2, 101, 2), 0);
    assert_int_equal(bus_presence_add(g2, 102, 2), 0);
    assert_int_equal(poll_count(p, 101, 3, 2000), 3);
    assert_int_equal(poll_count(p, 102, 1, 2000), 1);
    assert_int_equal(bus_presence_count(p, 103, 0), 0);
    /* Any bus counts every gateway. */
    assert_int_equal(bus_presence_count(g2, 101, 0), 3);
    /* Excepting a gateway leaves out its sessions (a service asking "any
     * others?" on behalf of that gateway). */
    assert_int_equal(bus_presence_count(p, 101, 1), 1);
    assert_int_equal(bus_presence_count(p, 101, 2), 2);

    assert_int_equal(bus_presence_remove(g1, 101, 1), 0);
    assert_int_equal(poll_count(p, 101, 2, 2000), 2);
    assert_int_equal(bus_presence_remove(g2, 102, 2), 0);
    assert_int_equal(poll_count(p, 102, 0, 2000), 0);
    /* The last session gone, the field goes too. */
    assert_int_equal(raw_int("HLEN parley:presence:102"), 0);
    /* A remove with nothing to remove changes nothing. */
    assert_int_equal(bus_presence_remove(g2, 102, 2), 0);
    assert_int_equal(bus_presence_add(g2, 104, 2), 0);
    assert_int_equal(poll_count(p, 104, 1, 2000), 1);
    assert_int_equal(bus_presence_count(p, 102, 0), 0);

    /* Presence belongs to the gateway the bus was made for. */
    assert_int_equal(bus_presence_add(p, 101, 0), -1);
    assert_int_equal(bus_presence_add(g1, 101, 2), -1);
    bus_free(g1);
    bus_free(g2);
    bus_free(p);
}

static void test_publish_reaches_the_right_gateways(void **state)
{
    recorder *r1 = rec_new(), *r2 = rec_new();
    bus *g1 = gateway_bus(1, r1), *g2 = gateway_bus(2, r2), *p = gateway_bus(0, NULL);
    bus_presence_add(g1, 201, 1);
    bus_presence_add(g2, 202, 2);
    bus_presence_add(g1, 203, 1);
    bus_presence_add(g2, 203, 2);
    assert_int_equal(poll_count(p, 201, 1, 2000), 1);
    assert_int_equal(poll_count(p, 202, 1, 2000), 1);
    assert_int_equal(poll_count(p, 203, 2, 2000), 2);

    static const char bytes[] = "\x00\x00\x00\x10\x01\xff binary \x00 push frame";
    blob *f1 = frame_of(bytes, sizeof(bytes) - 1);
    uint64_t to[] = {204, 203, 202, 201}; /* 204 is offline */
    bus_publish(p, to, 4, f1);
    assert_int_equal(rec_wait(r1, &r1->ndeliv, 1, 2000), 1);
    assert_int_equal(rec_wait(r2, &r2->ndeliv, 1, 2000), 1);
    assert_delivery(r1, 0, (uint64_t[]){201, 203}, 2, f1);
    assert_delivery(r2, 0, (uint64_t[]){202, 203}, 2, f1);

    /* Only the holder's gateway gets a push. Redis keeps a publisher's order,
     * so had f2 gone to gateway 2 it would have come before f3, and had f3
     * gone to gateway 1, before f4. */
    blob *f2 = frame_of("two", 3), *f3 = frame_of("three", 5), *f4 = frame_of("four", 4);
    bus_publish(p, (uint64_t[]){201}, 1, f2);
    bus_publish(p, (uint64_t[]){202}, 1, f3);
    bus_publish(p, (uint64_t[]){201}, 1, f4);
    assert_int_equal(rec_wait(r1, &r1->ndeliv, 3, 2000), 3);
    assert_int_equal(rec_wait(r2, &r2->ndeliv, 2, 2000), 2);
    assert_delivery(r1, 1, (uint64_t[]){201}, 1, f2);
    assert_delivery(r1, 2, (uint64_t[]){201}, 1, f4);
    assert_delivery(r2, 1, (uint64_t[]){202}, 1, f3);
    /* Nobody online: nothing sent, nothing breaks. */
    bus_publish(p, (uint64_t[]){205, 206}, 2, f2);
    /* A gateway's bus publishes too. */
    bus_publish(g1, (uint64_t[]){202}, 1, f4);
    assert_int_equal(rec_wait(r2, &r2->ndeliv, 3, 2000), 3);
    assert_delivery(r2, 2, (uint64_t[]){202}, 1, f4);
    assert_int_equal(r1->ndeliv, 3);
    assert_int_equal(r1->resyncs + r2->resyncs, 0);

    bus_free(g1);
    bus_free(g2);
    bus_free(p);
    blob_unref(f1);
    blob_unref(f2);
    blob_unref(f3);
    blob_unref(f4);
    rec_free(r1);
    rec_free(r2);
}

static void test_dead_gateways_do_not_count(void **state)
{
    recorder *r1 = rec_new(), *r2 = rec_new();
    bus *g1 = gateway_bus(1, r1), *g2 = gateway_bus(2, r2), *g3 = gateway_bus(3, NULL);
    bus *p = gateway_bus(0, NULL);
    bus_presence_add(g1, 301, 1);
    bus_presence_add(g3, 301, 3);
    bus_presence_add(g2, 302, 2);
    assert_int_equal(poll_count(p, 301, 2, 2000), 2);
    assert_int_equal(poll_count(p, 302, 1, 2000), 1);

    /* A gateway that stops no longer counts, at once. */
    bus_free(g3);
    assert_int_equal(bus_presence_count(p, 301, 0), 1);
    assert_int_equal(raw_int("HLEN parley:presence:301"), 1);

    /* A gateway whose alive key is gone (expired: the process died or hung)
     * is dead to publishers, who also clear its fields. Delete the key just
     * after a refresh, so the gateway does not notice before we look. */
    int64_t until = now_ms() + 2000;
    while (raw_int("PTTL parley:gw:2:alive") < 2950 && now_ms() < until)
        sleep_ms(2);
    assert_int_equal(raw_int("DEL parley:gw:2:alive"), 1);
    assert_int_equal(bus_presence_count(p, 302, 0), 0);
    assert_int_equal(raw_int("HLEN parley:presence:302"), 0);
    blob *f1 = frame_of("to the living", 13), *f2 = frame_of("after", 5);
    bus_publish(p, (uint64_t[]){301, 302}, 2, f1);
    assert_int_equal(rec_wait(r1, &r1->ndeliv, 1, 2000), 1);
    assert_delivery(r1, 0, (uint64_t[]){301}, 1, f1);

    /* Still running, gateway 2 finds out on its next refresh, registers
     * again and asks its sessions to catch up on what it missed. */
    int64_t t0 = now_ms();
    assert_int_equal(rec_wait(r2, &r2->resyncs, 1, 3000), 1);
    assert_int_equal(poll_count(p, 302, 1, 2000), 1);
    print_message("gateway 2 re-registered after %" PRId64 " ms\n", now_ms() - t0);
    bus_publish(p, (uint64_t[]){302}, 1, f2);
    assert_int_equal(rec_wait(r2, &r2->ndeliv, 1, 2000), 1);
    assert_delivery(r2, 0, (uint64_t[]){302}, 1, f2); /* f1 never came */
    assert_int_equal(r1->resyncs, 0);

    bus_free(g1);
    bus_free(g2);
    bus_free(p);
    blob_unref(f1);
    blob_unref(f2);
    rec_free(r1);
    rec_free(r2);
}

/* A batch goes to each gateway as one message: every push with only its
 * users there, in the order given, and nothing for gateways it misses. */
static void test_publish_many_is_one_message_per_gateway(void **state)
{
    recorder *r1 = rec_new(), *r2 = rec_new(), *r3 = rec_new();
    bus *g1 = gateway_bus(1, r1), *g2 = gateway_bus(2, r2), *g3 = gateway_bus(3, r3);
    bus *p = gateway_bus(0, NULL);
    bus_presence_add(g1, 601, 1);
    bus_presence_add(g2, 602, 2);
    bus_presence_add(g1, 603, 1);
    bus_presence_add(g2, 603, 2);
    bus_presence_add(g3, 609, 3);
    assert_int_equal(poll_count(p, 601, 1, 2000), 1);
    assert_int_equal(poll_count(p, 602, 1, 2000), 1);
    assert_int_equal(poll_count(p, 603, 2, 2000), 2);
    assert_int_equal(poll_count(p, 609, 1, 2000), 1);

    blob *f[5] = {frame_of("one", 3), frame_of("two", 3), frame_of("three", 5), frame_of("four", 4),
                  frame_of("five", 4)};
    bus_push batch[] = {
        {.users = (uint64_t[]){601, 602}, .n = 2, .frame = f[0], .msgid = 11},
        {.users = (uint64_t[]){602}, .n = 1, .frame = f[1], .msgid = 12},
        {.users = (uint64_t[]){604}, .n = 1, .frame = f[2], .msgid = 13}, /* offline */
        {.users = (uint64_t[]){603, 601, 604}, .n = 3, .frame = f[3]},    /* not a message */
        {.users = (uint64_t[]){601}, .n = 1, .frame = f[4], .msgid = (uint64_t)1 << 62},
    };
    bus_publish_many(p, batch, 5);
    assert_int_equal(rec_wait(r1, &r1->ndeliv, 3, 2000), 3);
    assert_int_equal(rec_wait(r2, &r2->ndeliv, 3, 2000), 3);
    assert_int_equal(r1->ncalls, 1);
    assert_int_equal(r2->ncalls, 1);
    assert_delivery(r1, 0, (uint64_t[]){601}, 1, f[0]);
    assert_delivery(r1, 1, (uint64_t[]){601, 603}, 2, f[3]);
    assert_delivery(r1, 2, (uint64_t[]){601}, 1, f[4]);
    assert_delivery(r2, 0, (uint64_t[]){602}, 1, f[0]);
    assert_delivery(r2, 1, (uint64_t[]){602}, 1, f[1]);
    assert_delivery(r2, 2, (uint64_t[]){603}, 1, f[3]);
    /* Each push keeps the msgid it was published with. */
    assert_int_equal(r1->d[0].msgid, 11);
    assert_int_equal(r1->d[1].msgid, 0);
    assert_int_equal(r1->d[2].msgid, (uint64_t)1 << 62);
    assert_int_equal(r2->d[0].msgid, 11);
    assert_int_equal(r2->d[1].msgid, 12);
    /* Gateway 3 holds none of them: a later push to it is its first. */
    bus_publish(p, (uint64_t[]){609}, 1, f[2]);
    assert_int_equal(rec_wait(r3, &r3->ndeliv, 1, 2000), 1);
    assert_delivery(r3, 0, (uint64_t[]){609}, 1, f[2]);
    assert_int_equal(r1->ndeliv, 3);
    assert_int_equal(r2->ndeliv, 3);

    bus_free(g1);
    bus_free(g2);
    bus_free(g3);
    bus_free(p);
    for (int i = 0; i < 5; i++)
        blob_unref(f[i]);
    rec_free(r1);
    rec_free(r2);
    rec_free(r3);
}

#define MSGID   "\x00\x00\x00\x00\x00\x00\x00\x00"
#define USER401 "\x91\x01\x00\x00\x00\x00\x00\x00"

static void test_garbage_on_the_channel_is_ignored(void **state)
{
    recorder *r1 = rec_new();
    bus *g1 = gateway_bus(1, r1), *p = gateway_bus(0, NULL);
    bus_presence_add(g1, 401, 1);
    assert_int_equal(poll_count(p, 401, 1, 2000), 1);

    static const struct {
        const char *bytes;
        size_t len;
    } junk[] = {
        {"", 0},
        {"abc", 3},
        /* [u32 n][u32 len][u64 msgid][users][frame] with something wrong */
        {"\x00\x00\x00\x00\x03\x00\x00\x00" MSGID "xyz", 19},   /* no users */
        {"\x01\x00\x00\x00\x00\x00\x00\x00" MSGID USER401, 24}, /* no frame */
        {"\xff\xff\xff\xff\x03\x00\x00\x00" MSGID "xyz", 19},   /* a huge count */
        /* a frame longer than the rest */
        {"\x01\x00\x00\x00\x09\x00\x00\x00" MSGID USER401 "x", 25},
        {"\x01\x00\x00\x00\xff\xff\xff\xff" MSGID USER401 "x", 25},
        /* a good push, then a truncated one: the whole message goes */
        {"\x01\x00\x00\x00\x01\x00\x00\x00" MSGID USER401 "x\x01\x00\x00", 28},
        {"\x01\x00\x00\x00\x01\x00\x00\x00" MSGID, 16}, /* header only */
        {"\x00\x00\x00\x20", 4},
    };
    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
        redisReply *r = raw("PUBLISH parley:gw:1 %b", junk[i].bytes, junk[i].len);
        assert_non_null(r);
        assert_int_equal(r->integer, 1); /* gateway 1 did receive it */
        freeReplyObject(r);
    }
    /* The documented format, by hand: [u32 n][u32 len][u64 msgid][n x u64]
     * [frame], little endian. */
    redisReply *r = raw(
        "PUBLISH parley:gw:1 %b",
        "\x01\x00\x00\x00\x09\x00\x00\x00\x2a\x00\x00\x00\x00\x00\x00\x00" USER401 "hand-made", 33);
    assert_non_null(r);
    freeReplyObject(r);
    blob *hand = frame_of("hand-made", 9), *f = frame_of("real", 4);
    bus_publish(p, (uint64_t[]){401}, 1, f);
    assert_int_equal(rec_wait(r1, &r1->ndeliv, 2, 2000), 2);
    assert_delivery(r1, 0, (uint64_t[]){401}, 1, hand);
    assert_int_equal(r1->d[0].msgid, 42);
    assert_delivery(r1, 1, (uint64_t[]){401}, 1, f);

    bus_free(g1);
    bus_free(p);
    blob_unref(hand);
    blob_unref(f);
    rec_free(r1);
}

static void test_redis_restart_is_ridden_out(void **state)
{
    recorder *r1 = rec_new();
    bus *g1 = gateway_bus(1, r1), *g2 = gateway_bus(2, NULL), *p = gateway_bus(0, NULL);
    bus_presence_add(g1, 501, 1);
    bus_presence_add(g2, 501, 2);
    assert_int_equal(poll_count(p, 501, 2, 2000), 2);

    int64_t t0 = now_ms();
    assert_int_equal(servers("stop"), 0);
    /* Unknown while Redis is away; pushes are dropped without harm. */
    assert_int_equal(bus_presence_count(p, 501, 0), -1);
    blob *f = frame_of("lost", 4), *f2 = frame_of("back", 4);
    bus_publish(p, (uint64_t[]){501}, 1, f);
    /* Sessions come and go meanwhile: the gateway's bus keeps count. */
    assert_int_equal(bus_presence_add(g1, 502, 1), 0);
    assert_int_equal(bus_presence_add(g1, 503, 1), 0);
    assert_int_equal(bus_presence_remove(g1, 503, 1), 0);
    /* A gateway stopping during the outage stops at once. */
    int64_t tf = now_ms();
    bus_free(g2);
    assert_true(now_ms() - tf < 500);
    sleep_ms(300);
    int64_t t1 = now_ms();
    assert_int_equal(servers("redis"), 0); /* empty: it lost everything */
    int64_t t2 = now_ms();

    assert_int_equal(rec_wait(r1, &r1->resyncs, 1, 5000), 1);
    int64_t t3 = now_ms();
    assert_int_equal(poll_count(p, 501, 1, 2000), 1);
    assert_int_equal(poll_count(p, 502, 1, 2000), 1);
    assert_int_equal(bus_presence_count(p, 503, 0), 0);
    bus_publish(p, (uint64_t[]){501, 502}, 2, f2);
    assert_int_equal(rec_wait(r1, &r1->ndeliv, 1, 2000), 1);
    int64_t t4 = now_ms();
    assert_delivery(r1, 0, (uint64_t[]){501, 502}, 2, f2);
    print_message("down %" PRId64 " ms, restart took %" PRId64 " ms, resync %" PRId64
                  " ms after it, push delivered %" PRId64 " ms after it\n",
                  t1 - t0, t2 - t1, t3 - t2, t4 - t2);

    bus_free(g1);
    bus_free(p);
    blob_unref(f);
    blob_unref(f2);
    rec_free(r1);
}

/* ---- a Redis that trusts only Parley, and messages only Parley wrote ---- */

#define SECURE_AUTH "parley:bus-test-pw"

/* Test hook in src/bus/redis.c. */
uint64_t bus_redis_bad_macs(bus *b);

static int secure_port;

static redisReply *secure_cmd(redisContext *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    return r;
}

static void assert_refused(redisReply *r, const char *what)
{
    if (r->type != REDIS_REPLY_ERROR)
        fail_msg("%s was not refused (reply type %d)", what, r->type);
    freeReplyObject(r);
}

/* The MAC a Parley node puts in front of a message on channel. */
static void mac_of(const unsigned char *key, const char *channel, const char *body, size_t len,
                   unsigned char *out)
{
    crypto_auth_hmacsha512256_state st;
    crypto_auth_hmacsha512256_init(&st, key, BUS_KEY_LEN);
    crypto_auth_hmacsha512256_update(&st, (const unsigned char *)channel, strlen(channel) + 1);
    crypto_auth_hmacsha512256_update(&st, (const unsigned char *)body, len);
    crypto_auth_hmacsha512256_final(&st, out);
}

static int count_lines_with(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int n = 0;
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

static void test_secured_redis_and_macs(void **state)
{
    char cmd[512], dir[128], err[256] = "";
    snprintf(dir, sizeof(dir), "%s/secure", redis_dir);
    secure_port = free_port();
    snprintf(cmd, sizeof(cmd), "'%s/scripts/servers.sh' redis '%s' %d '%s'", PARLEY_SOURCE_DIR, dir,
             secure_port, SECURE_AUTH);
    assert_int_equal(system(cmd), 0);

    /* Nobody gets in without the password, not even to publish. */
    redisContext *anon = redisConnect(HOST, secure_port);
    assert_true(anon && !anon->err);
    assert_refused(secure_cmd(anon, "PING"), "PING without AUTH");
    assert_refused(secure_cmd(anon, "PUBLISH parley:gw:1 x"), "PUBLISH without AUTH");
    assert_refused(secure_cmd(anon, "GET parley:gw:1:alive"), "GET without AUTH");
    assert_refused(secure_cmd(anon, "AUTH parley wrong-pw"), "a wrong password");
    assert_refused(secure_cmd(anon, "AUTH default \"\""), "the default user");
    redisFree(anon);
    /* The bus says why it cannot start without the password, or with a wrong one. */
    assert_null(bus_redis_new(HOST, secure_port, 1, err, sizeof(err)));
    assert_non_null(strstr(err, "NOAUTH"));
    bus_redis_secrets bad = {.auth = "parley:wrong-pw"};
    assert_null(bus_redis_new_secure(HOST, secure_port, 1, &bad, err, sizeof(err)));
    assert_non_null(strstr(err, "AUTH as parley"));

    /* Parley's user may touch Parley's keys only. */
    redisContext *in = redisConnect(HOST, secure_port);
    assert_true(in && !in->err);
    redisReply *r = secure_cmd(in, "AUTH parley bus-test-pw");
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
    assert_refused(secure_cmd(in, "SET other:key 1"), "a key outside parley:*");
    assert_refused(secure_cmd(in, "CONFIG SET requirepass x"), "CONFIG");
    assert_refused(secure_cmd(in, "FLUSHALL"), "FLUSHALL");

    /* A cluster with credentials and a key works as before. */
    unsigned char key[BUS_KEY_LEN];
    randombytes_buf(key, sizeof(key));
    bus_redis_secrets sec = {.auth = SECURE_AUTH, .key = key};
    recorder *r1 = rec_new();
    bus *g1 = bus_redis_new_secure(HOST, secure_port, 1, &sec, err, sizeof(err));
    if (!g1)
        fail_msg("bus_redis_new_secure: %s", err);
    bus_handler h = {.deliver = rec_deliver, .resync = rec_resync, .arg = r1};
    bus_subscribe(g1, 1, &h);
    bus *p = bus_redis_new_secure(HOST, secure_port, 0, &sec, err, sizeof(err));
    if (!p)
        fail_msg("bus_redis_new_secure: %s", err);
    bus_presence_add(g1, 601, 1);
    assert_int_equal(poll_count(p, 601, 1, 2000), 1);
    blob *f = frame_of("signed", 6);
    bus_publish(p, (uint64_t[]){601}, 1, f);
    assert_int_equal(rec_wait(r1, &r1->ndeliv, 1, 2000), 1);
    assert_delivery(r1, 0, (uint64_t[]){601}, 1, f);

    /* Someone with the Redis password but not the key (or a rogue client
     * of an open Redis) forges pushes: a well-formed push with no MAC, a
     * wrong one, and one made for another gateway's channel. Each is
     * dropped, and logged once (rate limited). */
    static const char push[] = "\x01\x00\x00\x00\x06\x00\x00\x00\x2a\x00\x00\x00\x00\x00\x00"
                               "\x00\x59\x02\x00\x00\x00\x00\x00\x00"
                               "forged";
    size_t plen = sizeof(push) - 1;
    char msg[REDIS_MAC_TEST_LEN + sizeof(push)];
    char logpath[160];
    snprintf(logpath, sizeof(logpath), "%s/stderr.log", redis_dir);
    int saved = dup(2), logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && logfd >= 0);
    fflush(stderr);
    dup2(logfd, 2);

    r = secure_cmd(in, "PUBLISH parley:gw:1 %b", push, plen);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    memset(msg, 0x5a, REDIS_MAC_TEST_LEN);
    memcpy(msg + REDIS_MAC_TEST_LEN, push, plen);
    r = secure_cmd(in, "PUBLISH parley:gw:1 %b", msg, REDIS_MAC_TEST_LEN + plen);
    freeReplyObject(r);
    mac_of(key, "parley:gw:2", push, plen, (unsigned char *)msg);
    r = secure_cmd(in, "PUBLISH parley:gw:1 %b", msg, REDIS_MAC_TEST_LEN + plen);
    freeReplyObject(r);
    /* The same bytes with the right MAC are delivered, and come last: once
     * it is in, the three before it were seen. */
    mac_of(key, "parley:gw:1", push, plen, (unsigned char *)msg);
    r = secure_cmd(in, "PUBLISH parley:gw:1 %b", msg, REDIS_MAC_TEST_LEN + plen);
    freeReplyObject(r);
    int got = rec_wait(r1, &r1->ndeliv, 2, 2000);

    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(logfd);
    assert_int_equal(got, 2);
    blob *forged = frame_of("forged", 6);
    assert_delivery(r1, 1, (uint64_t[]){601}, 1, forged);
    assert_int_equal(bus_redis_bad_macs(g1), 3);
    assert_int_equal(count_lines_with(logpath, "without a valid MAC"), 1);

    redisFree(in);
    bus_free(g1);
    bus_free(p);
    blob_unref(f);
    blob_unref(forged);
    rec_free(r1);
    snprintf(cmd, sizeof(cmd), "'%s/scripts/servers.sh' stop '%s'", PARLEY_SOURCE_DIR, dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    evthread_use_pthreads();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unreachable_redis_fails_clearly),
        cmocka_unit_test(test_presence_across_gateways),
        cmocka_unit_test(test_publish_reaches_the_right_gateways),
        cmocka_unit_test(test_dead_gateways_do_not_count),
        cmocka_unit_test(test_publish_many_is_one_message_per_gateway),
        cmocka_unit_test(test_garbage_on_the_channel_is_ignored),
        cmocka_unit_test(test_redis_restart_is_ridden_out),
        cmocka_unit_test(test_secured_redis_and_macs),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
