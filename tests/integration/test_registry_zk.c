/* The ZooKeeper registry against real ZooKeeper servers started with
 * scripts/servers.sh on free loopback ports, all state in one temporary
 * directory. A forked reaper stops the servers and removes the directory
 * when this process ends, however it ends. */
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zookeeper/zookeeper.h>

#include "common/log.h"
#include "registry/registry.h"

#ifndef PARLEY_SOURCE_DIR
#define PARLEY_SOURCE_DIR "."
#endif

#define SESSION_MS  2000
#define CONNECT_MS  5000
#define MAXN        8
#define ZK_PATH_LEN 256

/* Test hook in src/registry/zk.c. */
int registry_zk_current_server(registry *r, char *buf, size_t len);

/* ---- fixture: temporary directory, reaper, standalone server ---- */

static char g_script[1024];
static char g_dir[64];
static char g_hosts[64]; /* the standalone server */
static int g_zk_port;
static int g_reaper_fd = -1;
static pid_t g_reaper = -1;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* n distinct free loopback ports: all bound at once, then released. */
static int free_ports(int *ports, int n)
{
    int fds[16];
    int rc = 0;
    for (int i = 0; i < n; i++)
        fds[i] = -1;
    for (int i = 0; i < n && rc == 0; i++) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
        socklen_t len = sizeof sa;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&sa, sizeof sa) != 0 ||
            getsockname(fds[i], (struct sockaddr *)&sa, &len) != 0)
            rc = -1;
        else
            ports[i] = ntohs(sa.sin_port);
    }
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return rc;
}

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int run(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return rc == 0 ? 0 : -1;
}

/* Stops whatever servers.sh started under the directory and removes it. */
static void stop_all_and_remove(void)
{
    run("for d in '%s'/*/; do [ -d \"$d\" ] && '%s' stop \"$d\"; done; rm -rf '%s'", g_dir,
        g_script, g_dir);
}

/* A child that waits for this process to go (its end of the pipe closes
 * even on a crash) and then cleans up. */
static int start_reaper(void)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        setsid(); /* outlive a signal sent to our process group */
        close(fds[1]);
        char b;
        for (;;) {
            ssize_t n = read(fds[0], &b, 1);
            if (n == 0 || (n < 0 && errno != EINTR))
                break;
        }
        stop_all_and_remove();
        _exit(0);
    }
    close(fds[0]);
    g_reaper_fd = fds[1];
    g_reaper = pid;
    return 0;
}

static int start_standalone(void)
{
    return run("'%s' zookeeper '%s/zk0' %d", g_script, g_dir, g_zk_port);
}

static int group_setup(void **state)
{
    if (getenv("PARLEY_TEST_DEBUG"))
        log_set_level(LOG_DEBUG);
    snprintf(g_script, sizeof g_script, "%s/scripts/servers.sh", PARLEY_SOURCE_DIR);
    snprintf(g_dir, sizeof g_dir, "/tmp/parley-zk-XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    if (start_reaper() != 0 || free_ports(&g_zk_port, 1) != 0)
        return -1;
    snprintf(g_hosts, sizeof g_hosts, "127.0.0.1:%d", g_zk_port);
    int64_t t0 = now_ms();
    if (start_standalone() != 0)
        return -1;
    printf("[ timing   ] standalone ZooKeeper up in %lld ms\n", (long long)(now_ms() - t0));
    return 0;
}

static int group_teardown(void **state)
{
    stop_all_and_remove();
    if (g_reaper_fd >= 0)
        close(g_reaper_fd);
    if (g_reaper > 0)
        waitpid(g_reaper, NULL, 0);
    return 0;
}

/* Handles a failed test left open, freed by the per-test teardown. */
static registry *g_live[8];

static registry *open_reg(const char *hosts, int session_ms, int connect_ms)
{
    char err[256] = "";
    registry *r = registry_zk_new(hosts, session_ms, connect_ms, err, sizeof err);
    if (!r)
        fail_msg("registry_zk_new(%s): %s", hosts, err);
    for (size_t i = 0; i < sizeof g_live / sizeof g_live[0]; i++) {
        if (!g_live[i]) {
            g_live[i] = r;
            break;
        }
    }
    return r;
}

static void close_reg(registry *r)
{
    for (size_t i = 0; i < sizeof g_live / sizeof g_live[0]; i++)
        if (g_live[i] == r)
            g_live[i] = NULL;
    registry_free(r);
}

static int free_live(void **state)
{
    for (size_t i = 0; i < sizeof g_live / sizeof g_live[0]; i++) {
        if (g_live[i]) {
            registry_free(g_live[i]);
            g_live[i] = NULL;
        }
    }
    return 0;
}

static void must_register(registry *r, const char *service, const char *addr)
{
    char err[256] = "";
    if (registry_register(r, service, addr, err, sizeof err) != 0)
        fail_msg("registry_register(%s, %s): %s", service, addr, err);
}

/* ---- a watch callback that records what it was told ---- */

typedef struct rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    int empties;  /* calls with no providers */
    int unsorted; /* calls whose names were out of order */
    int bad_service;
    char service[64];
    size_t n;
    char names[MAXN][64];
    char addrs[MAXN][64];
} rec;

static void rec_init(rec *r, const char *service)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    snprintf(r->service, sizeof r->service, "%s", service);
}

static void rec_destroy(rec *r)
{
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

static void rec_cb(void *arg, const char *service, const registry_node *nodes, size_t n)
{
    rec *r = arg;
    pthread_mutex_lock(&r->mu);
    r->calls++;
    if (n == 0)
        r->empties++;
    if (strcmp(service, r->service) != 0)
        r->bad_service++;
    for (size_t i = 1; i < n; i++)
        if (strcmp(nodes[i - 1].name, nodes[i].name) >= 0)
            r->unsorted++;
    r->n = n < MAXN ? n : MAXN;
    for (size_t i = 0; i < r->n; i++) {
        snprintf(r->names[i], sizeof r->names[i], "%s", nodes[i].name);
        snprintf(r->addrs[i], sizeof r->addrs[i], "%s", nodes[i].addr);
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Whether the last list holds exactly these addresses (any order). mu held. */
static int rec_is(rec *r, const char *const *want, size_t nwant)
{
    if (r->n != nwant)
        return 0;
    for (size_t i = 0; i < nwant; i++) {
        int found = 0;
        for (size_t j = 0; j < r->n && !found; j++)
            found = strcmp(r->addrs[j], want[i]) == 0;
        if (!found)
            return 0;
    }
    return 1;
}

/* rec_is from a thread other than the callback's. */
static int rec_now_is(rec *r, const char *const *want, size_t nwant)
{
    pthread_mutex_lock(&r->mu);
    int ok = rec_is(r, want, nwant);
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static int rec_calls(rec *r)
{
    pthread_mutex_lock(&r->mu);
    int n = r->calls;
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* Waits until the list is exactly want; its delay in ms, or -1 on timeout. */
static int rec_wait(rec *r, int timeout_ms, const char *const *want, size_t nwant)
{
    int64_t t0 = now_ms(), deadline = t0 + timeout_ms;
    int ok;
    pthread_mutex_lock(&r->mu);
    while (!(ok = rec_is(r, want, nwant)) && now_ms() < deadline) {
        struct timespec ts = {deadline / 1000, (long)(deadline % 1000) * 1000000};
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    pthread_mutex_unlock(&r->mu);
    return ok ? (int)(now_ms() - t0) : -1;
}

static void must_watch(registry *reg, const char *service, rec *r)
{
    char err[256] = "";
    if (registry_watch(reg, service, rec_cb, r, err, sizeof err) != 0)
        fail_msg("registry_watch(%s): %s", service, err);
}

/* ---- tests ---- */

static void test_unreachable(void **state)
{
    int port;
    char hosts[64], err[256] = "";
    assert_int_equal(free_ports(&port, 1), 0);
    snprintf(hosts, sizeof hosts, "127.0.0.1:%d", port);
    int64_t t0 = now_ms();
    registry *r = registry_zk_new(hosts, SESSION_MS, 1000, err, sizeof err);
    int64_t took = now_ms() - t0;
    assert_null(r);
    printf("[ timing   ] unreachable: failed in %lld ms: %s\n", (long long)took, err);
    assert_non_null(strstr(err, "cannot reach ZooKeeper at 127.0.0.1:"));
    assert_non_null(strstr(err, hosts));
    assert_true(took >= 900 && took < 2500);
}

static void test_register_watch_free(void **state)
{
    const char *both[] = {"10.0.0.1:7001", "10.0.0.2:7002"};
    const char *b_only[] = {"10.0.0.2:7002"};
    registry *a = open_reg(g_hosts, SESSION_MS, CONNECT_MS);
    registry *b = open_reg(g_hosts, SESSION_MS, CONNECT_MS);
    registry *c = open_reg(g_hosts, SESSION_MS, CONNECT_MS);
    must_register(a, "message", both[0]);
    must_register(b, "message", both[1]);

    rec w1, w2, other;
    rec_init(&w1, "message");
    rec_init(&w2, "message");
    rec_init(&other, "social-empty");
    must_watch(c, "message", &w1);
    /* Delivered before registry_watch returned. */
    pthread_mutex_lock(&w1.mu);
    assert_int_equal(w1.calls, 1);
    assert_true(rec_is(&w1, both, 2));
    pthread_mutex_unlock(&w1.mu);
    must_watch(c, "message", &w2);
    must_watch(c, "social-empty", &other);
    assert_int_equal(rec_calls(&other), 1);
    assert_true(rec_now_is(&other, NULL, 0));
    assert_true(rec_now_is(&w2, both, 2));

    int64_t t0 = now_ms();
    close_reg(a);
    int d1 = rec_wait(&w1, 3000, b_only, 1);
    int d2 = rec_wait(&w2, 3000, b_only, 1);
    printf("[ timing   ] closed handle gone from the watch in %lld ms\n",
           (long long)(now_ms() - t0));
    assert_true(d1 >= 0 && d2 >= 0);
    assert_true(now_ms() - t0 < 2000);

    /* A late provider shows up too; the unrelated watch hears nothing. */
    registry *d = open_reg(g_hosts, SESSION_MS, CONNECT_MS);
    must_register(d, "message", "10.0.0.4:7004");
    const char *later[] = {"10.0.0.2:7002", "10.0.0.4:7004"};
    assert_true(rec_wait(&w1, 3000, later, 2) >= 0);
    assert_true(rec_wait(&w2, 3000, later, 2) >= 0);
    assert_int_equal(rec_calls(&other), 1);
    pthread_mutex_lock(&w1.mu);
    pthread_mutex_lock(&w2.mu);
    assert_int_equal(w1.unsorted + w2.unsorted + w1.bad_service + w2.bad_service, 0);
    pthread_mutex_unlock(&w2.mu);
    pthread_mutex_unlock(&w1.mu);

    close_reg(d);
    close_reg(b);
    close_reg(c);
    rec_destroy(&w1);
    rec_destroy(&w2);
    rec_destroy(&other);
}

/* ---- a TCP proxy in front of ZooKeeper, to cut one client off ---- */

#define PROXY_PAIRS 16

typedef struct proxy {
    int lfd;
    int port;
    int upstream;
    pthread_t th;
    pthread_mutex_t mu;
    int down; /* under mu: cut every connection and refuse new ones */
    int stop; /* under mu */
    int pairs[PROXY_PAIRS][2];
} proxy;

static void proxy_cut(proxy *p)
{
    for (int i = 0; i < PROXY_PAIRS; i++) {
        for (int j = 0; j < 2; j++) {
            if (p->pairs[i][j] >= 0)
                close(p->pairs[i][j]);
            p->pairs[i][j] = -1;
        }
    }
}

static void proxy_accept(proxy *p, int down)
{
    int cfd = accept(p->lfd, NULL, NULL);
    if (cfd < 0)
        return;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p->upstream)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int sfd = down ? -1 : socket(AF_INET, SOCK_STREAM, 0);
    int slot = -1;
    for (int i = 0; i < PROXY_PAIRS && slot < 0; i++)
        if (p->pairs[i][0] < 0)
            slot = i;
    if (sfd < 0 || slot < 0 || connect(sfd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(cfd);
        if (sfd >= 0)
            close(sfd);
        return;
    }
    p->pairs[slot][0] = cfd;
    p->pairs[slot][1] = sfd;
}

static void *proxy_main(void *arg)
{
    proxy *p = arg;
    char buf[65536];
    for (;;) {
        pthread_mutex_lock(&p->mu);
        int stop = p->stop, down = p->down;
        pthread_mutex_unlock(&p->mu);
        if (stop || down)
            proxy_cut(p);
        if (stop)
            break;
        struct pollfd pfd[1 + 2 * PROXY_PAIRS];
        int n = 0;
        pfd[n++] = (struct pollfd){.fd = p->lfd, .events = POLLIN};
        for (int i = 0; i < PROXY_PAIRS; i++)
            for (int j = 0; j < 2; j++)
                if (p->pairs[i][j] >= 0)
                    pfd[n++] = (struct pollfd){.fd = p->pairs[i][j], .events = POLLIN};
        if (poll(pfd, (nfds_t)n, 20) <= 0)
            continue;
        if (pfd[0].revents & POLLIN)
            proxy_accept(p, down);
        for (int k = 1; k < n; k++) {
            if (!(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            for (int i = 0; i < PROXY_PAIRS; i++) {
                for (int j = 0; j < 2; j++) {
                    if (p->pairs[i][j] != pfd[k].fd)
                        continue;
                    ssize_t got = read(pfd[k].fd, buf, sizeof buf);
                    int ok = got > 0;
                    for (ssize_t off = 0; ok && off < got;) {
                        ssize_t w = write(p->pairs[i][1 - j], buf + off, (size_t)(got - off));
                        ok = w > 0;
                        off += w > 0 ? w : 0;
                    }
                    if (!ok) {
                        close(p->pairs[i][0]);
                        close(p->pairs[i][1]);
                        p->pairs[i][0] = p->pairs[i][1] = -1;
                    }
                }
            }
        }
    }
    return NULL;
}

static int proxy_start(proxy *p, int upstream)
{
    memset(p, 0, sizeof *p);
    for (int i = 0; i < PROXY_PAIRS; i++)
        p->pairs[i][0] = p->pairs[i][1] = -1;
    p->upstream = upstream;
    pthread_mutex_init(&p->mu, NULL);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t len = sizeof sa;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    p->lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(p->lfd, 16) != 0 || getsockname(p->lfd, (struct sockaddr *)&sa, &len) != 0)
        return -1;
    p->port = ntohs(sa.sin_port);
    return pthread_create(&p->th, NULL, proxy_main, p) == 0 ? 0 : -1;
}

static void proxy_set_down(proxy *p, int down)
{
    pthread_mutex_lock(&p->mu);
    p->down = down;
    pthread_mutex_unlock(&p->mu);
}

static void proxy_stop(proxy *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->th, NULL);
    close(p->lfd);
    pthread_mutex_destroy(&p->mu);
}

/* Waits until the list is the one addr under a name other than old. */
static int rec_wait_renamed(rec *r, int timeout_ms, const char *addr, const char *old)
{
    int64_t deadline = now_ms() + timeout_ms;
    int ok;
    pthread_mutex_lock(&r->mu);
    while (!(ok = r->n == 1 && strcmp(r->addrs[0], addr) == 0 && strcmp(r->names[0], old) != 0) &&
           now_ms() < deadline) {
        struct timespec ts = {deadline / 1000, (long)(deadline % 1000) * 1000000};
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

/* A is cut off from ZooKeeper longer than its session timeout, so the
 * server expires the session; once A gets through again it must open a new
 * session and publish its node again. */
static void test_session_expiry(void **state)
{
    const char *addr = "10.0.0.3:7003";
    proxy px;
    assert_int_equal(proxy_start(&px, g_zk_port), 0);
    char via[64];
    snprintf(via, sizeof via, "127.0.0.1:%d", px.port);
    registry *a = open_reg(via, SESSION_MS, CONNECT_MS);
    registry *c = open_reg(g_hosts, SESSION_MS, CONNECT_MS);
    must_register(a, "social", addr);
    rec mine, theirs;
    rec_init(&mine, "social");
    rec_init(&theirs, "social");
    must_watch(a, "social", &mine); /* a watch on the handle that expires */
    must_watch(c, "social", &theirs);
    assert_true(rec_now_is(&theirs, &addr, 1));
    char old[64];
    pthread_mutex_lock(&theirs.mu);
    snprintf(old, sizeof old, "%s", theirs.names[0]);
    pthread_mutex_unlock(&theirs.mu);

    int64_t t0 = now_ms();
    proxy_set_down(&px, 1);
    /* The server drops the node when it expires the session. */
    int gone = rec_wait(&theirs, SESSION_MS + 4000, NULL, 0);
    printf("[ timing   ] expiry: node dropped by the server %lld ms after the cut\n",
           (long long)(now_ms() - t0));
    assert_true(gone >= 0);
    /* Meanwhile a's own watch kept its last list. */
    assert_true(rec_now_is(&mine, &addr, 1));

    int64_t t1 = now_ms();
    proxy_set_down(&px, 0);
    assert_true(rec_wait_renamed(&theirs, 5000, addr, old));
    printf("[ timing   ] expiry: re-registered and seen by another handle %lld ms after the "
           "heal\n",
           (long long)(now_ms() - t1));
    /* The expired handle's own watch was re-armed on the new session, and
     * since registrations come back before re-reads it never saw itself
     * missing. */
    assert_true(rec_wait_renamed(&mine, 3000, addr, old));
    pthread_mutex_lock(&mine.mu);
    int mine_empties = mine.empties;
    pthread_mutex_unlock(&mine.mu);
    assert_int_equal(mine_empties, 0);

    /* And it keeps working: a new registration on the renewed handle. */
    must_register(a, "social", "10.0.0.5:7005");
    const char *two[] = {addr, "10.0.0.5:7005"};
    assert_true(rec_wait(&theirs, 3000, two, 2) >= 0);
    assert_true(rec_wait(&mine, 3000, two, 2) >= 0);

    close_reg(a);
    close_reg(c);
    proxy_stop(&px);
    rec_destroy(&mine);
    rec_destroy(&theirs);
}

typedef struct listing {
    int calls;
    int alpha, beta; /* times seen */
    size_t na, nb;   /* providers */
    int alpha_ok;    /* both alpha addresses present */
    char prev[64];   /* services arrive sorted */
    int unsorted;
} listing;

static void list_cb(void *arg, const char *service, const registry_node *nodes, size_t n)
{
    listing *l = arg;
    l->calls++;
    if (l->prev[0] && strcmp(l->prev, service) >= 0)
        l->unsorted++;
    snprintf(l->prev, sizeof l->prev, "%s", service);
    if (strcmp(service, "alpha") == 0) {
        l->alpha++;
        l->na = n;
        int x = 0, y = 0;
        for (size_t i = 0; i < n; i++) {
            x |= strcmp(nodes[i].addr, "10.0.2.1:1") == 0;
            y |= strcmp(nodes[i].addr, "10.0.2.2:2") == 0;
        }
        l->alpha_ok = x && y;
    } else if (strcmp(service, "beta") == 0) {
        l->beta++;
        l->nb = n;
    }
}

static void test_list_all(void **state)
{
    registry *a = open_reg(g_hosts, SESSION_MS, CONNECT_MS);
    registry *b = open_reg(g_hosts, SESSION_MS, CONNECT_MS);
    must_register(a, "alpha", "10.0.2.1:1");
    must_register(b, "alpha", "10.0.2.2:2");
    must_register(b, "beta", "10.0.2.3:3");
    listing l = {0};
    char err[256] = "";
    assert_int_equal(registry_list_all(a, list_cb, &l, err, sizeof err), 0);
    assert_int_equal(l.alpha, 1);
    assert_int_equal(l.beta, 1);
    assert_int_equal(l.na, 2);
    assert_true(l.alpha_ok);
    assert_int_equal(l.nb, 1);
    assert_int_equal(l.unsorted, 0);
    assert_true(l.calls >= 2);
    close_reg(a);
    close_reg(b);
}

/* Several threads register and watch through one handle at once, and a
 * callback calls back into the registry. */
typedef struct conc_arg {
    registry *r;
    int id;
    rec w;
    int rc;
} conc_arg;

static void *conc_main(void *arg)
{
    conc_arg *ca = arg;
    char err[256], addr[64];
    for (int i = 0; i < 2 && ca->rc == 0; i++) {
        snprintf(addr, sizeof addr, "10.0.3.%d:%d", ca->id, 100 + i);
        ca->rc = registry_register(ca->r, "conc", addr, err, sizeof err);
    }
    if (ca->rc == 0)
        ca->rc = registry_watch(ca->r, "conc", rec_cb, &ca->w, err, sizeof err);
    return NULL;
}

typedef struct reentrant {
    registry *r;
    pthread_mutex_t mu;
    int calls, list_ok;
} reentrant;

static void count_cb(void *arg, const char *service, const registry_node *nodes, size_t n) {}

static void reentrant_cb(void *arg, const char *service, const registry_node *nodes, size_t n)
{
    reentrant *re = arg;
    char err[256];
    int ok = registry_list_all(re->r, count_cb, NULL, err, sizeof err) == 0;
    pthread_mutex_lock(&re->mu);
    re->calls++;
    re->list_ok += ok;
    pthread_mutex_unlock(&re->mu);
}

static void test_concurrent_and_reentrant(void **state)
{
    registry *r = open_reg(g_hosts, SESSION_MS, CONNECT_MS);
    reentrant re = {.r = r, .mu = PTHREAD_MUTEX_INITIALIZER};
    char err[256] = "";
    assert_int_equal(registry_watch(r, "conc", reentrant_cb, &re, err, sizeof err), 0);
    conc_arg ca[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        ca[i] = (conc_arg){.r = r, .id = i + 1};
        rec_init(&ca[i].w, "conc");
        assert_int_equal(pthread_create(&th[i], NULL, conc_main, &ca[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    const char *all[] = {"10.0.3.1:100", "10.0.3.1:101", "10.0.3.2:100", "10.0.3.2:101",
                         "10.0.3.3:100", "10.0.3.3:101", "10.0.3.4:100", "10.0.3.4:101"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(ca[i].rc, 0);
        assert_true(rec_wait(&ca[i].w, 3000, all, 8) >= 0);
    }
    pthread_mutex_lock(&re.mu);
    int calls = re.calls, list_ok = re.list_ok;
    pthread_mutex_unlock(&re.mu);
    assert_true(calls >= 2);
    assert_int_equal(list_ok, calls);
    close_reg(r);
    for (int i = 0; i < 4; i++)
        rec_destroy(&ca[i].w);
}

/* The only server goes away and comes back: the session survives (the
 * server restores it), and the watch never reports the outage as "no
 * providers". Last in the group: it restarts the shared server. */
static void test_connection_loss_keeps_list(void **state)
{
    const char *one[] = {"10.0.0.7:7007"};
    const char *two[] = {"10.0.0.7:7007", "10.0.0.8:7008"};
    /* Margin over the worst reconnect delay (2/3 of the timeout). */
    registry *a = open_reg(g_hosts, 4000, CONNECT_MS);
    registry *c = open_reg(g_hosts, 4000, CONNECT_MS);
    must_register(a, "keep", one[0]);
    rec w;
    rec_init(&w, "keep");
    must_watch(c, "keep", &w);
    assert_true(rec_now_is(&w, one, 1));

    int64_t t0 = now_ms();
    assert_int_equal(run("'%s' stop '%s/zk0'", g_script, g_dir), 0);
    sleep_ms(500);
    pthread_mutex_lock(&w.mu);
    int calls_down = w.calls;
    int still = rec_is(&w, one, 1);
    pthread_mutex_unlock(&w.mu);
    assert_int_equal(calls_down, 1);
    assert_true(still);
    assert_int_equal(start_standalone(), 0);
    printf("[ timing   ] server down and back in %lld ms\n", (long long)(now_ms() - t0));

    /* Registering again works once the connection is back. */
    int64_t t1 = now_ms();
    must_register(a, "keep", two[1]);
    assert_true(rec_wait(&w, 5000, two, 2) >= 0);
    printf("[ timing   ] after the restart, a new provider was seen in %lld ms\n",
           (long long)(now_ms() - t1));
    pthread_mutex_lock(&w.mu);
    int empties = w.empties;
    pthread_mutex_unlock(&w.mu);
    assert_int_equal(empties, 0);

    close_reg(a);
    close_reg(c);
    rec_destroy(&w);
}

static void test_ensemble_member_down(void **state)
{
    int ports[9]; /* client, peer, election for each of three */
    assert_int_equal(free_ports(ports, 9), 0);
    char ens[256], hosts[128];
    snprintf(ens, sizeof ens, "1:%d:%d,2:%d:%d,3:%d:%d", ports[3], ports[6], ports[4], ports[7],
             ports[5], ports[8]);
    snprintf(hosts, sizeof hosts, "127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", ports[0], ports[1],
             ports[2]);
    int64_t t0 = now_ms();
    /* Started side by side: a member waits for its peers anyway. */
    assert_int_equal(run("S='%s'; D='%s'; E='%s';"
                         " \"$S\" zookeeper \"$D/ens1\" %d 1 %d %d \"$E\" & p1=$!;"
                         " \"$S\" zookeeper \"$D/ens2\" %d 2 %d %d \"$E\" & p2=$!;"
                         " \"$S\" zookeeper \"$D/ens3\" %d 3 %d %d \"$E\" & p3=$!;"
                         " wait $p1 && wait $p2 && wait $p3",
                         g_script, g_dir, ens, ports[0], ports[3], ports[6], ports[1], ports[4],
                         ports[7], ports[2], ports[5], ports[8]),
                     0);
    /* A session only once a quorum serves. */
    registry *a = open_reg(hosts, 4000, 20000);
    registry *c = open_reg(hosts, 4000, 20000);
    printf("[ timing   ] ensemble serving in %lld ms\n", (long long)(now_ms() - t0));
    const char *one[] = {"10.0.1.1:9001"};
    const char *two[] = {"10.0.1.1:9001", "10.0.1.2:9002"};
    must_register(a, "gateway", one[0]);
    rec w;
    rec_init(&w, "gateway");
    must_watch(c, "gateway", &w);
    /* c may talk to another member, which sees a's node only once it has
     * caught up with the leader: ZooKeeper orders each session's own view,
     * not one session's write against another's read. */
    assert_true(rec_wait(&w, 5000, one, 1) >= 0);

    /* Kill the member the registering handle talks to. */
    char cur[128] = "";
    assert_int_equal(registry_zk_current_server(a, cur, sizeof cur), 0);
    const char *colon = strrchr(cur, ':');
    assert_non_null(colon);
    int port = atoi(colon + 1), member = 0;
    for (int i = 0; i < 3; i++)
        if (ports[i] == port)
            member = i + 1;
    assert_true(member > 0);
    int64_t t1 = now_ms();
    assert_int_equal(run("'%s' stop '%s/ens%d'", g_script, g_dir, member), 0);
    printf("[ timing   ] member %d (%s) stopped in %lld ms\n", member, cur,
           (long long)(now_ms() - t1));

    int64_t t2 = now_ms();
    must_register(a, "gateway", two[1]);
    printf("[ timing   ] registration after the loss took %lld ms\n", (long long)(now_ms() - t2));
    int d = rec_wait(&w, 10000, two, 2);
    printf("[ timing   ] watch saw it %d ms later\n", d);
    assert_true(d >= 0);
    pthread_mutex_lock(&w.mu);
    int empties = w.empties;
    pthread_mutex_unlock(&w.mu);
    /* The first node never vanished: the session moved to another member. */
    assert_int_equal(empties, 0);

    close_reg(a);
    close_reg(c);
    rec_destroy(&w);
    for (int i = 1; i <= 3; i++)
        run("'%s' stop '%s/ens%d'", g_script, g_dir, i);
}

/* ---- digest ACLs: only Parley's credentials reach Parley's znodes ---- */

#define ACL_AUTH "parley:s3cret-for-tests"

static void raw_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx) {}

/* A plain ZooKeeper handle, connected, with the given digest credentials
 * (NULL: none): what anyone on the network could open. */
static zhandle_t *raw_open(const char *auth)
{
    zhandle_t *zh = zookeeper_init(g_hosts, raw_watcher, SESSION_MS, NULL, NULL, 0);
    assert_non_null(zh);
    if (auth)
        assert_int_equal(zoo_add_auth(zh, "digest", auth, (int)strlen(auth), NULL, NULL), ZOK);
    int64_t deadline = now_ms() + CONNECT_MS;
    while (zoo_state(zh) != ZOO_CONNECTED_STATE && now_ms() < deadline)
        sleep_ms(20);
    assert_int_equal(zoo_state(zh), ZOO_CONNECTED_STATE);
    return zh;
}

/* Everything an outsider might try on the tree under root; each must be
 * refused for want of rights. */
static void outsider_refused(zhandle_t *zh, const char *root, const char *node)
{
    char path[ZK_PATH_LEN * 2], svc[ZK_PATH_LEN], data[64];
    struct String_vector kids = {0, NULL};
    struct Stat st;
    int len = (int)sizeof data;
    snprintf(svc, sizeof svc, "%s/parley/services/acl", root);
    snprintf(path, sizeof path, "%s/%s", svc, node);
    assert_int_equal(zoo_get_children(zh, svc, 0, &kids), ZNOAUTH);
    assert_int_equal(zoo_get(zh, path, 0, data, &len, &st), ZNOAUTH);
    assert_int_equal(zoo_set(zh, path, "10.6.6.6:1", 10, -1), ZNOAUTH);
    assert_int_equal(zoo_delete(zh, path, -1), ZNOAUTH);
    /* A rogue provider, in the service's directory or as a new service. */
    snprintf(path, sizeof path, "%s/node-", svc);
    assert_int_equal(zoo_create(zh, path, "10.6.6.6:1", 10, &ZOO_OPEN_ACL_UNSAFE,
                                ZOO_EPHEMERAL_SEQUENTIAL, NULL, 0),
                     ZNOAUTH);
    snprintf(path, sizeof path, "%s/parley/services/rogue", root);
    assert_int_equal(zoo_create(zh, path, NULL, -1, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0), ZNOAUTH);
    snprintf(path, sizeof path, "%s/parley", root);
    assert_int_equal(zoo_get_children(zh, path, 0, &kids), ZNOAUTH);
    assert_int_equal(zoo_set_acl(zh, path, -1, &ZOO_OPEN_ACL_UNSAFE), ZNOAUTH);
}

static void test_digest_acl(void **state)
{
    /* A tree of its own (a chroot), so the open trees the other tests make
     * do not stand in the way. */
    const char *root = "/acl";
    char hosts[128], err[256] = "";
    zhandle_t *anon = raw_open(NULL);
    int rc = zoo_create(anon, root, NULL, -1, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
    assert_true(rc == ZOK || rc == ZNODEEXISTS);
    snprintf(hosts, sizeof hosts, "%s%s", g_hosts, root);

    /* A bad pair is refused before anything is sent. */
    assert_null(registry_zk_new_auth(hosts, SESSION_MS, CONNECT_MS, "nopass", err, sizeof err));

    registry *a = registry_zk_new_auth(hosts, SESSION_MS, CONNECT_MS, ACL_AUTH, err, sizeof err);
    if (!a)
        fail_msg("registry_zk_new_auth: %s", err);
    g_live[0] = a;
    registry *b = registry_zk_new_auth(hosts, SESSION_MS, CONNECT_MS, ACL_AUTH, err, sizeof err);
    if (!b)
        fail_msg("registry_zk_new_auth: %s", err);
    g_live[1] = b;
    must_register(a, "acl", "10.0.3.1:1");

    /* Another node with the same credentials sees it and adds its own. */
    rec w;
    rec_init(&w, "acl");
    must_watch(b, "acl", &w);
    const char *one[] = {"10.0.3.1:1"};
    assert_true(rec_now_is(&w, one, 1));
    must_register(b, "acl", "10.0.3.2:2");
    const char *two[] = {"10.0.3.1:1", "10.0.3.2:2"};
    assert_true(rec_wait(&w, 3000, two, 2) >= 0);

    char node[64];
    pthread_mutex_lock(&w.mu);
    snprintf(node, sizeof node, "%s", w.names[0]);
    pthread_mutex_unlock(&w.mu);

    /* No credentials, and wrong ones: nothing to read, make, change or delete. */
    outsider_refused(anon, root, node);
    zhandle_t *wrong = raw_open("parley:not-the-password");
    outsider_refused(wrong, root, node);

    /* The right credentials may. */
    zhandle_t *ok = raw_open(ACL_AUTH);
    char path[ZK_PATH_LEN];
    struct String_vector kids = {0, NULL};
    snprintf(path, sizeof path, "%s/parley/services/acl", root);
    assert_int_equal(zoo_get_children(ok, path, 0, &kids), ZOK);
    assert_int_equal(kids.count, 2);
    deallocate_String_vector(&kids);

    /* And the registry still works: a provider that leaves is seen to. */
    g_live[0] = NULL;
    registry_free(a);
    assert_true(rec_wait(&w, 3000, &two[1], 1) >= 0);

    zookeeper_close(ok);
    zookeeper_close(wrong);
    zookeeper_close(anon);
    rec_destroy(&w);
}

/* A session that expires is replaced by one that authenticates too: the
 * registration comes back in the closed tree, and another node sees it. */
static void test_digest_acl_after_expiry(void **state)
{
    const char *addr = "10.0.4.1:1";
    char via[128], hosts[128], err[256] = "", old[64];
    zhandle_t *anon = raw_open(NULL);
    int rc = zoo_create(anon, "/acl2", NULL, -1, &ZOO_OPEN_ACL_UNSAFE, 0, NULL, 0);
    assert_true(rc == ZOK || rc == ZNODEEXISTS);
    proxy px;
    assert_int_equal(proxy_start(&px, g_zk_port), 0);
    snprintf(via, sizeof via, "127.0.0.1:%d/acl2", px.port);
    snprintf(hosts, sizeof hosts, "%s/acl2", g_hosts);
    registry *a = registry_zk_new_auth(via, SESSION_MS, CONNECT_MS, ACL_AUTH, err, sizeof err);
    if (!a)
        fail_msg("registry_zk_new_auth: %s", err);
    g_live[0] = a;
    registry *c = registry_zk_new_auth(hosts, SESSION_MS, CONNECT_MS, ACL_AUTH, err, sizeof err);
    if (!c)
        fail_msg("registry_zk_new_auth: %s", err);
    g_live[1] = c;
    must_register(a, "acl", addr);
    rec theirs;
    rec_init(&theirs, "acl");
    must_watch(c, "acl", &theirs);
    assert_true(rec_now_is(&theirs, &addr, 1));
    pthread_mutex_lock(&theirs.mu);
    snprintf(old, sizeof old, "%s", theirs.names[0]);
    pthread_mutex_unlock(&theirs.mu);

    proxy_set_down(&px, 1);
    assert_true(rec_wait(&theirs, SESSION_MS + 4000, NULL, 0) >= 0);
    proxy_set_down(&px, 0);
    assert_true(rec_wait_renamed(&theirs, 5000, addr, old));
    /* Still closed to outsiders after the renewal. */
    struct String_vector kids = {0, NULL};
    assert_int_equal(zoo_get_children(anon, "/acl2/parley/services/acl", 0, &kids), ZNOAUTH);

    g_live[0] = g_live[1] = NULL;
    registry_free(a);
    registry_free(c);
    proxy_stop(&px);
    zookeeper_close(anon);
    rec_destroy(&theirs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_unreachable, free_live),
        cmocka_unit_test_teardown(test_register_watch_free, free_live),
        cmocka_unit_test_teardown(test_session_expiry, free_live),
        cmocka_unit_test_teardown(test_list_all, free_live),
        cmocka_unit_test_teardown(test_digest_acl, free_live),
        cmocka_unit_test_teardown(test_digest_acl_after_expiry, free_live),
        cmocka_unit_test_teardown(test_concurrent_and_reentrant, free_live),
        cmocka_unit_test_teardown(test_connection_loss_keeps_list, free_live),
        cmocka_unit_test_teardown(test_ensemble_member_down, free_live),
    };
    setvbuf(stdout, NULL, _IONBF, 0);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
