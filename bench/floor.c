/*
 * parley-floor: the least a Parley server must do, to measure what the
 * machine allows. No storage, no services, no checks beyond the minimum:
 *
 * - one libevent loop per core, each with its own listening socket on the
 *   same port (SO_REUSEPORT: the kernel spreads the connections);
 * - Hello, Ping, Register (increasing ids), Login (by id, any password),
 *   Logout, GroupCreate and GroupJoin answered from memory; one session per
 *   user (a second login of a user online elsewhere is refused);
 * - SendDirect / SendGroup: a msgid (global counter) and a seq (per sender for
 *   direct, per group for groups), one `message` push per recipient, and a
 *   SendOk to the sender; Ack is read and ignored.
 *
 * A push for a connection on another loop goes through that loop's inbox (a
 * mutex-protected queue and an eventfd, signalled once per batch). Group
 * pushes are queued under the group's lock, so every member sees the group's
 * seq in order. parley-bench runs its direct and group scenarios against
 * this unchanged; --drop N (for testing the bench) loses every N-th push.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "wire.h"

enum { MAX_FRAME = 64 * 1024, BACKLOG = 4096 };

typedef struct fbuf {
    _Atomic int refs;
    size_t len;
    uint8_t data[];
} fbuf;

typedef struct {
    uint64_t user;
    fbuf *b;
} item;

typedef struct fthread {
    int idx;
    struct event_base *base;
    pthread_t tid;
    struct evconnlistener *lis;
    pthread_mutex_t mu;
    item *q, *spare;
    size_t qn, qcap, spare_cap;
    bool signalled; /* a wake-up is on its way */
    int efd;
    struct event *wake;
} fthread;

typedef struct fconn {
    struct bufferevent *bev;
    fthread *th;
    uint64_t user;
    bool hello;
} fconn;

typedef struct {
    _Atomic int th; /* the loop of the user's connection, -1: offline */
    _Atomic(fconn *) conn;
    _Atomic uint64_t seq; /* direct messages sent */
} fuser;

typedef struct {
    pthread_mutex_t mu;
    uint64_t *m;
    size_t n, cap;
    uint64_t seq;
} fgroup;

static fthread *threads;
static int nthreads;
static fuser *users;
static uint64_t max_users = 1 << 21;
static _Atomic uint64_t nusers;
static fgroup *groups;
static uint64_t max_groups = 1 << 16;
static _Atomic uint64_t ngroups;
static _Atomic uint64_t msgids;
static uint64_t drop_every;
static _Atomic uint64_t pushes;

static uint64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static fbuf *fbuf_pack(const Parley__ServerFrame *f)
{
    size_t n = 4 + parley__server_frame__get_packed_size(f);
    fbuf *b = malloc(sizeof(*b) + n);
    if (!b)
        return NULL;
    atomic_init(&b->refs, 1);
    b->len = wire_pack_server(f, b->data, n);
    return b;
}

static void fbuf_unref(fbuf *b)
{
    if (atomic_fetch_sub(&b->refs, 1) == 1)
        free(b);
}

/* ---- inboxes ---- */

static bool push_item(fthread *to, uint64_t user, fbuf *b)
{
    if (to->qn == to->qcap) {
        size_t cap = to->qcap ? to->qcap * 2 : 1024;
        item *q = realloc(to->q, cap * sizeof(*q));
        if (!q)
            return false;
        to->q = q;
        to->qcap = cap;
    }
    atomic_fetch_add(&b->refs, 1);
    to->q[to->qn++] = (item){user, b};
    return true;
}

static void wake(fthread *from, fthread *to)
{
    if (to == from) {
        event_active(to->wake, EV_READ, 0);
    } else {
        uint64_t one = 1;
        if (write(to->efd, &one, sizeof one) < 0 && errno != EAGAIN)
            perror("parley-floor: eventfd");
    }
}

/* True if this push is one --drop throws away. */
static bool dropped(void)
{
    return drop_every && (atomic_fetch_add(&pushes, 1) + 1) % drop_every == 0;
}

/* Queues b for every user in list[0..n) except `skip`, one lock per loop. */
static void deliver(fthread *from, const uint64_t *list, size_t n, uint64_t skip, fbuf *b)
{
    for (int t = 0; t < nthreads; t++) {
        fthread *to = &threads[t];
        bool any = false, signal_it = false;
        for (size_t i = 0; i < n; i++) {
            uint64_t u = list[i];
            if (u == skip || atomic_load_explicit(&users[u].th, memory_order_relaxed) != t)
                continue;
            if (dropped())
                continue;
            if (!any) {
                pthread_mutex_lock(&to->mu);
                any = true;
            }
            push_item(to, u, b);
        }
        if (any) {
            if (!to->signalled)
                to->signalled = signal_it = true;
            pthread_mutex_unlock(&to->mu);
            if (signal_it)
                wake(from, to);
        }
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    fthread *th = arg;
    uint64_t v;
    if (read(th->efd, &v, sizeof v) < 0 && errno != EAGAIN)
        perror("parley-floor: eventfd");
    pthread_mutex_lock(&th->mu);
    item *q = th->q;
    size_t n = th->qn, cap = th->qcap;
    th->q = th->spare;
    th->qcap = th->spare_cap;
    th->qn = 0;
    th->signalled = false;
    pthread_mutex_unlock(&th->mu);
    for (size_t i = 0; i < n; i++) {
        fconn *c = atomic_load_explicit(&users[q[i].user].conn, memory_order_relaxed);
        if (c && c->th == th && c->bev)
            bufferevent_write(c->bev, q[i].b->data, q[i].b->len);
        fbuf_unref(q[i].b);
    }
    th->spare = q;
    th->spare_cap = cap;
}

/* ---- requests ---- */

static void reply(fconn *c, Parley__ServerFrame *f)
{
    wire_put_server(bufferevent_get_output(c->bev), f);
}

static void reply_error(fconn *c, uint64_t id, Parley__ErrorCode code, const char *text)
{
    Parley__ServerFrame f = PARLEY__SERVER_FRAME__INIT;
    Parley__Error e = PARLEY__ERROR__INIT;
    e.code = code;
    e.text = (char *)text;
    f.id = id;
    f.error = &e;
    reply(c, &f);
}

static void unbind_user(fconn *c)
{
    if (!c->user)
        return;
    fuser *u = &users[c->user];
    fconn *expect = c;
    if (atomic_compare_exchange_strong(&u->conn, &expect, NULL))
        atomic_store(&u->th, -1);
    c->user = 0;
}

static void send_message(fconn *c, Parley__ClientFrame *f)
{
    Parley__ServerFrame push = PARLEY__SERVER_FRAME__INIT;
    Parley__Message m = PARLEY__MESSAGE__INIT;
    m.from = c->user;
    m.ts = unix_ms();
    push.body_case = PARLEY__SERVER_FRAME__BODY_MESSAGE;
    push.message = &m;
    if (f->body_case == PARLEY__CLIENT_FRAME__BODY_SEND_DIRECT) {
        uint64_t to = f->send_direct->to;
        if (!to || to > atomic_load(&nusers)) {
            reply_error(c, f->id, PARLEY__ERROR_CODE__NOT_FOUND, "no such user");
            return;
        }
        uint64_t lo = to < c->user ? to : c->user, hi = to < c->user ? c->user : to;
        m.msgid = atomic_fetch_add(&msgids, 1) + 1;
        m.conv = lo << 32 | hi;
        m.seq = atomic_fetch_add(&users[c->user].seq, 1) + 1;
        m.to = to;
        m.body = f->send_direct->body;
        fbuf *b = fbuf_pack(&push);
        if (b) {
            deliver(c->th, &to, 1, 0, b);
            fbuf_unref(b);
        }
    } else {
        uint64_t gid = f->send_group->group_id;
        if (!gid || gid > atomic_load(&ngroups)) {
            reply_error(c, f->id, PARLEY__ERROR_CODE__NOT_FOUND, "no such group");
            return;
        }
        fgroup *g = &groups[gid];
        pthread_mutex_lock(&g->mu);
        m.msgid = atomic_fetch_add(&msgids, 1) + 1;
        m.conv = (uint64_t)1 << 63 | gid;
        m.seq = ++g->seq;
        m.group = gid;
        m.body = f->send_group->body;
        fbuf *b = fbuf_pack(&push);
        if (b) {
            deliver(c->th, g->m, g->n, c->user, b);
            fbuf_unref(b);
        }
        pthread_mutex_unlock(&g->mu);
    }
    Parley__ServerFrame r = PARLEY__SERVER_FRAME__INIT;
    Parley__SendOk ok = PARLEY__SEND_OK__INIT;
    ok.msgid = m.msgid;
    ok.conv = m.conv;
    ok.seq = m.seq;
    ok.ts = m.ts;
    r.id = f->id;
    r.body_case = PARLEY__SERVER_FRAME__BODY_SEND_OK;
    r.send_ok = &ok;
    reply(c, &r);
}

static bool group_add(uint64_t gid, uint64_t user)
{
    fgroup *g = &groups[gid];
    pthread_mutex_lock(&g->mu);
    bool ok = true;
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 16;
        uint64_t *m = realloc(g->m, cap * sizeof(*m));
        if (m) {
            g->m = m;
            g->cap = cap;
        } else {
            ok = false;
        }
    }
    if (ok)
        g->m[g->n++] = user;
    pthread_mutex_unlock(&g->mu);
    return ok;
}

static void handle(fconn *c, Parley__ClientFrame *f)
{
    Parley__ServerFrame r = PARLEY__SERVER_FRAME__INIT;
    r.id = f->id;
    if (!c->hello && f->body_case != PARLEY__CLIENT_FRAME__BODY_HELLO) {
        reply_error(c, f->id, PARLEY__ERROR_CODE__BAD_REQUEST, "say hello first");
        return;
    }
    switch (f->body_case) {
    case PARLEY__CLIENT_FRAME__BODY_HELLO: {
        Parley__HelloOk h = PARLEY__HELLO_OK__INIT;
        h.version = 1;
        h.server = "parley-floor";
        h.max_frame = MAX_FRAME;
        c->hello = true;
        r.body_case = PARLEY__SERVER_FRAME__BODY_HELLO_OK;
        r.hello_ok = &h;
        reply(c, &r);
        return;
    }
    case PARLEY__CLIENT_FRAME__BODY_PING: {
        Parley__Pong p = PARLEY__PONG__INIT;
        p.nonce = f->ping->nonce;
        r.body_case = PARLEY__SERVER_FRAME__BODY_PONG;
        r.pong = &p;
        reply(c, &r);
        return;
    }
    case PARLEY__CLIENT_FRAME__BODY_ACK:
        return;
    case PARLEY__CLIENT_FRAME__BODY_REG: {
        uint64_t id = atomic_fetch_add(&nusers, 1) + 1;
        if (id >= max_users) {
            reply_error(c, f->id, PARLEY__ERROR_CODE__INTERNAL, "the floor is full (--max-users)");
            return;
        }
        Parley__RegisterOk ok = PARLEY__REGISTER_OK__INIT;
        ok.user_id = id;
        r.body_case = PARLEY__SERVER_FRAME__BODY_REGISTER_OK;
        r.register_ok = &ok;
        reply(c, &r);
        return;
    }
    case PARLEY__CLIENT_FRAME__BODY_LOGIN: {
        uint64_t id = f->login->user_id;
        if (!id || id > atomic_load(&nusers)) {
            reply_error(c, f->id, PARLEY__ERROR_CODE__UNAUTHENTICATED, "log in by user id");
            return;
        }
        /* One session per user: no own copies to other devices, so a
         * second session (parley-bench --devices) is refused, not served
         * wrongly. */
        fconn *cur = atomic_load(&users[id].conn);
        if (cur && cur != c) {
            reply_error(c, f->id, PARLEY__ERROR_CODE__UNSUPPORTED,
                        "the floor keeps one session per user (no --devices)");
            return;
        }
        unbind_user(c);
        c->user = id;
        atomic_store(&users[id].conn, c);
        atomic_store(&users[id].th, c->th->idx);
        Parley__LoginOk ok = PARLEY__LOGIN_OK__INIT;
        Parley__User u = PARLEY__USER__INIT;
        u.id = id;
        u.online = true;
        ok.user = &u;
        ok.token = "floor";
        r.body_case = PARLEY__SERVER_FRAME__BODY_LOGIN_OK;
        r.login_ok = &ok;
        reply(c, &r);
        return;
    }
    default:
        break;
    }
    if (!c->user) {
        reply_error(c, f->id, PARLEY__ERROR_CODE__UNAUTHENTICATED, "log in first");
        return;
    }
    Parley__Done done = PARLEY__DONE__INIT;
    switch (f->body_case) {
    case PARLEY__CLIENT_FRAME__BODY_LOGOUT:
        unbind_user(c);
        r.body_case = PARLEY__SERVER_FRAME__BODY_DONE;
        r.done = &done;
        reply(c, &r);
        return;
    case PARLEY__CLIENT_FRAME__BODY_GROUP_CREATE: {
        uint64_t gid = atomic_fetch_add(&ngroups, 1) + 1;
        if (gid >= max_groups || !group_add(gid, c->user)) {
            reply_error(c, f->id, PARLEY__ERROR_CODE__INTERNAL, "the floor is full (--max-groups)");
            return;
        }
        Parley__GroupCreateOk ok = PARLEY__GROUP_CREATE_OK__INIT;
        ok.group_id = gid;
        r.body_case = PARLEY__SERVER_FRAME__BODY_GROUP_CREATE_OK;
        r.group_create_ok = &ok;
        reply(c, &r);
        return;
    }
    case PARLEY__CLIENT_FRAME__BODY_GROUP_JOIN: {
        uint64_t gid = f->group_join->group_id;
        if (!gid || gid > atomic_load(&ngroups)) {
            reply_error(c, f->id, PARLEY__ERROR_CODE__NOT_FOUND, "no such group");
            return;
        }
        if (!group_add(gid, c->user)) {
            reply_error(c, f->id, PARLEY__ERROR_CODE__INTERNAL, "out of memory");
            return;
        }
        r.body_case = PARLEY__SERVER_FRAME__BODY_DONE;
        r.done = &done;
        reply(c, &r);
        return;
    }
    case PARLEY__CLIENT_FRAME__BODY_SEND_DIRECT:
    case PARLEY__CLIENT_FRAME__BODY_SEND_GROUP:
        send_message(c, f);
        return;
    default:
        reply_error(c, f->id, PARLEY__ERROR_CODE__UNSUPPORTED, "the floor does not do that");
        return;
    }
}

/* ---- connections ---- */

static void conn_free(fconn *c)
{
    unbind_user(c);
    bufferevent_free(c->bev);
    free(c);
}

static int on_frame(void *arg, const uint8_t *p, size_t n)
{
    fconn *c = arg;
    Parley__ClientFrame *f = parley__client_frame__unpack(NULL, n, p);
    if (!f) {
        reply_error(c, 0, PARLEY__ERROR_CODE__BAD_REQUEST, "malformed frame");
        return 0;
    }
    handle(c, f);
    parley__client_frame__free_unpacked(f, NULL);
    return 0;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    fconn *c = arg;
    if (wire_read_frames(bufferevent_get_input(bev), MAX_FRAME, on_frame, c) < 0)
        conn_free(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        conn_free(arg);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    fthread *th = arg;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fconn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    c->th = th;
    c->bev = bufferevent_socket_new(th->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        close(fd);
        free(c);
        return;
    }
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void *thread_main(void *arg)
{
    fthread *th = arg;
    event_base_dispatch(th->base);
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: parley-floor [--bind ADDR] [--port PORT] [--threads N]\n"
               "\n"
               "A minimal Parley relay (no storage) that parley-bench compares Parley with.\n"
               "  --bind ADDR     address to listen on (default 127.0.0.1)\n"
               "  --port PORT     port (default 0: any; the ready line says which)\n"
               "  --threads N     event loops (default: cores)\n"
               "  --max-users N   users it can register (default 2097152)\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"bind", required_argument, NULL, 'b'},
        {"port", required_argument, NULL, 'p'},
        {"threads", required_argument, NULL, 't'},
        {"max-users", required_argument, NULL, 'u'},
        {"drop", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *bind_addr = "127.0.0.1";
    int port = 0;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    nthreads = cores > 0 ? (int)cores : 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'b':
            bind_addr = optarg;
            break;
        case 'p':
            port = atoi(optarg);
            break;
        case 't':
            nthreads = atoi(optarg);
            break;
        case 'u':
            max_users = strtoull(optarg, NULL, 10) + 1;
            break;
        case 'd': /* hidden: lose every N-th push, to check that the bench notices */
            drop_every = strtoull(optarg, NULL, 10);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (nthreads < 1 || nthreads > 256 || port < 0 || port > 65535 || max_users < 2) {
        usage(stderr);
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();
    users = calloc(max_users, sizeof(*users));
    groups = calloc(max_groups, sizeof(*groups));
    threads = calloc((size_t)nthreads, sizeof(*threads));
    if (!users || !groups || !threads) {
        fprintf(stderr, "parley-floor: out of memory\n");
        return 1;
    }
    for (uint64_t i = 0; i < max_users; i++)
        atomic_init(&users[i].th, -1);
    for (uint64_t i = 0; i < max_groups; i++)
        pthread_mutex_init(&groups[i].mu, NULL);

    struct sockaddr_in sin = {0};
    sin.sin_family = AF_INET;
    if (inet_pton(AF_INET, bind_addr, &sin.sin_addr) != 1) {
        fprintf(stderr, "parley-floor: --bind %s: give an IPv4 address\n", bind_addr);
        return 2;
    }
    sin.sin_port = htons((uint16_t)port);
    for (int t = 0; t < nthreads; t++) {
        fthread *th = &threads[t];
        th->idx = t;
        pthread_mutex_init(&th->mu, NULL);
        th->base = event_base_new();
        th->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (!th->base || th->efd < 0) {
            fprintf(stderr, "parley-floor: cannot set up loop %d\n", t);
            return 1;
        }
        th->wake = event_new(th->base, th->efd, EV_READ | EV_PERSIST, on_wake, th);
        event_add(th->wake, NULL);
        /* Every loop listens on the same port; the first one picks it. */
        th->lis = evconnlistener_new_bind(th->base, on_accept, th,
                                          LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                              LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_EXEC,
                                          BACKLOG, (struct sockaddr *)&sin, sizeof sin);
        if (!th->lis) {
            fprintf(stderr, "parley-floor: cannot listen on %s:%d: %s\n", bind_addr,
                    ntohs(sin.sin_port), strerror(errno));
            return 1;
        }
        if (t == 0) {
            socklen_t len = sizeof sin;
            getsockname(evconnlistener_get_fd(th->lis), (struct sockaddr *)&sin, &len);
        }
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    for (int t = 0; t < nthreads; t++)
        if (pthread_create(&threads[t].tid, NULL, thread_main, &threads[t]) != 0) {
            fprintf(stderr, "parley-floor: cannot start a thread\n");
            return 1;
        }
    printf("parley-floor is ready on %s:%d (%d loops%s)\n", bind_addr, ntohs(sin.sin_port),
           nthreads, drop_every ? ", dropping pushes" : "");
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    /* Nothing to save: the floor keeps no state worth a clean stop. */
    fprintf(stderr, "parley-floor: stopping (%s)\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    _exit(0);
}
