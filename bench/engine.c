/*
 * engine: one worker process of parley-bench. T threads, each with its own
 * event_base, drive their share of the connections through the phases the
 * controller sets in shared memory (polled by a short timer on each loop),
 * send the traffic, and check every message that arrives:
 *
 * - A message body starts with the sender's connection index (6 hex digits),
 *   a per-sender counter (8) and the send time on the bench clock (12), then
 *   padding up to --size bytes. At an offered rate the send time is when the
 *   message was due, not when it left: a bench that falls behind shows it in
 *   the latency instead of hiding it (no coordinated omission).
 * - Each receiver keeps, per sender, the msgid it got for each counter: a
 *   second copy under the same msgid is a duplicate (allowed, reported), under
 *   another msgid a mismatch (the message was stored twice: a failure).
 * - Within a conversation seq must increase from one new message to the next.
 * - Each sender keeps the msgid of each SendOk; at the end every acknowledged
 *   message must have reached every recipient under that msgid.
 *
 * login logs each connection in as its users in turn (logout in between, or
 * with --reconnect a new connection each time). regflood's flooders take no
 * part in the setup: when the flood starts each connects from an address of
 * its own and keeps Register requests outstanding, waiting as long as a BUSY
 * reply's retry_after_ms asks; a flooder the server closes connects again.
 *
 * With --tls each connection runs a non-blocking OpenSSL handshake once TCP
 * is up, and then reads and writes through SSL_read / SSL_write on the same
 * events; a plain connection (ssl NULL) takes the plain path unchanged.
 *
 * With --devices N each user has N - 1 more sessions (connections logged in
 * as the same user after its first has registered) that only receive and
 * ack, as a second device would. Each must get, exactly once and under the
 * msgid its SendOk gave, every message the user sent from the first (an own
 * copy: `from` is the user), and every message the user received. Own copies
 * and those other copies are counted apart from the first sessions'
 * deliveries, which stay the scenario's figure.
 *
 * With --mqtt the same scenarios (direct, idle) run against an MQTT broker,
 * at QoS 1: connecting is CONNECT / CONNACK, logging in a SUBSCRIBE to the
 * user's own topic b<run>/<n>, a send a PUBLISH to the partner's topic whose
 * PUBACK stands for SendOk, and a receiver answers each PUBLISH it gets with
 * a PUBACK, as a Parley client acknowledges. MQTT has no msgid and no seq:
 * every message counts as msgid 1 (so a second copy is a duplicate), and the
 * order checked is the sender's counter, which the broker must keep.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "bench.h"
#include "mqtt.h"
#include "wire.h"

enum {
    OP_NONE = 0,
    OP_HELLO,
    OP_REG,
    OP_LOGIN,
    OP_GCREATE,
    OP_GJOIN,
    OP_LOGOUT,
    OP_PING,
    BODY_HDR = 26, /* 6 + 8 + 12 hex digits */
    MAX_CONVS = 4,
    READ_MAX = 1 << 24,
    SCRATCH = 64 * 1024,
    MQTT_READ_MAX = 64 * 1024, /* a broker's packet to the bench is ~200 bytes */
    MQTT_PKT_MAX = 4096 + 128, /* the bench's largest packet: --size 4000 + topic */
};

/* Request ids at or above this are setup and control requests (id = base +
 * op); below it, an id is the counter of the message it sends. */
#define CTL_ID ((uint64_t)1 << 56)
/* A flooder's Register k has id FLOOD_ID + k. */
#define FLOOD_ID (CTL_ID + 1024)
/* okid[k] of a send the server refused with an error. */
#define REFUSED  UINT64_MAX
#define NS       1000000000ull
#define PASSWORD "benchpass1"

typedef struct {
    uint64_t *got; /* msgid received per counter; 0: not yet */
    uint64_t cap;
} stream;

typedef struct {
    uint64_t conv, last_seq, ack_hi, acked;
} convst;

struct bthread;

typedef struct bconn {
    /* The socket, read by `rev` and written straight from the callback that
     * queued the bytes; `wev` waits for connect() to finish and for room the
     * socket had none of. A bufferevent costs two epoll_ctl per write and an
     * ioctl per read, a third of the bench's system calls. */
    int fd; /* -1: closed */
    struct event *rev, *wev;
    struct evbuffer *inb, *out;
    bool connected;
    bool dirty; /* on the thread's list of output to write */
    /* --tls: the session (NULL: plain TCP), whether its handshake is done,
     * and a read that waits for the socket to be writable or a write that
     * waits for it to be readable (OpenSSL may need either for either). */
    SSL *ssl;
    bool tls_up, read_wants_write, write_wants_read;
    /* --ws: the server answered the upgrade; the masking keys' generator */
    bool ws_up;
    uint32_t ws_rng;
    struct bthread *th;
    int idx;  /* global index */
    int port; /* index into o->ports */
    uint64_t user;
    int op;          /* the control request awaiting its reply */
    uint64_t op_t;   /* when it was sent */
    bool phase_busy; /* counted in the setup window */
    bool hello_ok;   /* the server answered Hello: other requests may go */
    /* sending */
    int partner; /* direct: the partner's index */
    int group;   /* group: the group's index, member: place in it */
    int member;
    uint32_t inflight;
    uint64_t nsent;     /* counter of the last message sent */
    uint64_t cmid_base; /* client_msg_ids: their start, or the seed of their draw */
    uint64_t cmid_last; /* IDS_TIME: the last one */
    uint64_t *okid;     /* msgid of each SendOk, by counter */
    uint64_t okcap;
    uint64_t last_tx;
    /* login: the users this connection registers (uwant) and logs in as,
     * in turn */
    uint64_t *uids;
    int nuids, uwant, ucur;
    bool redial; /* login --reconnect: logged out; close and connect again */
    /* regflood */
    bool flooder;
    uint32_t src;     /* source address, network order; 0: the worker's */
    uint64_t next_at; /* flooder: no Register before this (bench clock) */
    uint64_t nreg;    /* flooder: Register requests sent */
    /* --devices: a further session of owner's user (NULL: the user's
     * first); it takes the owner's place (partner, group) but never sends,
     * and gets the owner's sends as own copies in `own` */
    struct bconn *owner;
    int dev; /* 0: the first session; 1..: the others */
    stream own;
    /* receiving */
    stream *in; /* by the sender's slot: direct 0, group: member index */
    int nin;
    convst conv[MAX_CONVS];
    int nconv;
    bool ack_due;
} bconn;

typedef struct worker worker;

typedef struct bthread {
    worker *w;
    int t;
    struct event_base *base;
    struct event *tick;
    struct event *due; /* slow paced sends: a timer for the next one's due time */
    uint64_t due_at;   /* ... set for this time */
    pthread_t tid;
    tstats *st;
    bconn **c;
    int n;
    phase seen;
    int next, active, window; /* setup: next to start, in flight, limit */
    bool sending;
    bconn **snd; /* senders on this thread */
    int nsnd, rr;
    bconn **fl; /* regflood: flooders on this thread */
    int nfl;
    double rate; /* this thread's share of --rate */
    uint64_t issued;
    uint64_t last_scan;
    char *body;    /* size + 1 bytes */
    bconn **dirty; /* connections with output queued in this callback */
    int ndirty;
    uint8_t *scratch; /* SCRATCH bytes: reads land here first */
} bthread;

struct worker {
    const bopts *o;
    shared *sh;
    int w, lo, hi;
    bconn *conns;
    bconn *devs; /* --devices: the other sessions, devices - 1 per user in turn */
    bthread *th;
    uint64_t *gid; /* group ids, by group index */
    int ngroups;
    struct sockaddr_in dst[BENCH_MAX_PORTS];
    struct sockaddr_in src;
    bool bind_src;
    uint32_t flood_base; /* regflood: the first flooder's address, host order */
    int fanout;
    int dev_fanout; /* --devices: the recipients of a message with other sessions */
    int ooo_src;    /* the first message out of order: its sender and counter */
    uint64_t ooo_k;
    SSL_CTX *tls; /* --tls: shared by the threads' connections */
};

/* ---- small helpers ---- */

static inline void cnt(_Atomic uint64_t *a, uint64_t by)
{
    atomic_store_explicit(a, atomic_load_explicit(a, memory_order_relaxed) + by,
                          memory_order_relaxed);
}

static bconn *conn_at(worker *w, int idx)
{
    if (idx < w->lo || idx >= w->hi)
        return NULL;
    return &w->conns[idx - w->lo];
}

/* --devices: session d (1..) of connection idx's user. */
static bconn *dev_at(worker *w, int idx, int d)
{
    if (idx < w->lo || idx >= w->hi || d < 1 || d >= w->o->devices)
        return NULL;
    return &w->devs[(size_t)(idx - w->lo) * (size_t)(w->o->devices - 1) + (size_t)(d - 1)];
}

static bool in_window(worker *w, uint64_t now)
{
    return now >= atomic_load_explicit(&w->sh->win_start, memory_order_relaxed) &&
           now < atomic_load_explicit(&w->sh->win_end, memory_order_relaxed);
}

/* regflood: inside the window during the flood (never elsewhere: 0, 0) */
static bool in_window2(worker *w, uint64_t now)
{
    return now >= atomic_load_explicit(&w->sh->win2_start, memory_order_relaxed) &&
           now < atomic_load_explicit(&w->sh->win2_end, memory_order_relaxed);
}

static void put_hex(char *p, int digits, uint64_t v)
{
    static const char hx[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--) {
        p[i] = hx[v & 15];
        v >>= 4;
    }
}

static bool get_hex(const char *p, int digits, uint64_t *v)
{
    uint64_t r = 0;
    for (int i = 0; i < digits; i++) {
        char ch = p[i];
        int d;
        if (ch >= '0' && ch <= '9')
            d = ch - '0';
        else if (ch >= 'a' && ch <= 'f')
            d = ch - 'a' + 10;
        else
            return false;
        r = r << 4 | (uint64_t)d;
    }
    *v = r;
    return true;
}

/* Grows a counter-indexed array so that index k exists (new slots zeroed). */
static bool grow(uint64_t **arr, uint64_t *cap, uint64_t k)
{
    if (k < *cap)
        return true;
    uint64_t ncap = *cap ? *cap : 256;
    while (ncap <= k)
        ncap *= 2;
    uint64_t *a = realloc(*arr, ncap * sizeof(*a));
    if (!a)
        return false;
    memset(a + *cap, 0, (ncap - *cap) * sizeof(*a));
    *arr = a;
    *cap = ncap;
    return true;
}

static const char *err_name(Parley__ErrorCode c)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&parley__error_code__descriptor, (int)c);
    return v ? v->name : "?";
}

static const char *op_name(int op)
{
    switch (op) {
    case OP_HELLO:
        return "hello";
    case OP_REG:
        return "register";
    case OP_LOGIN:
        return "login";
    case OP_GCREATE:
        return "group_create";
    case OP_GJOIN:
        return "group_join";
    case OP_LOGOUT:
        return "logout";
    case OP_PING:
        return "ping";
    default:
        return "?";
    }
}

/* ---- sending ---- */

/* Queues a frame; the callback's flush_dirty() writes it. */
static void send_frame(bconn *c, Parley__ClientFrame *f)
{
    if (c->fd < 0)
        return;
    if ((c->th->w->o->ws ? wire_put_client_ws(c->out, f, &c->ws_rng) : wire_put_client(c->out, f)) <
        0)
        bench_fail(c->th->w->sh, "out of memory queueing a frame");
    if (!c->dirty) {
        c->dirty = true;
        c->th->dirty[c->th->ndirty++] = c;
    }
    c->last_tx = bench_now();
}

/* --mqtt: queues one packet, as send_frame does a frame. */
static void send_mqtt(bconn *c, const uint8_t *p, size_t n)
{
    if (c->fd < 0)
        return;
    if (n == 0 || evbuffer_add(c->out, p, n) < 0)
        bench_fail(c->th->w->sh, "cannot queue an MQTT packet (%zu bytes)", n);
    if (!c->dirty) {
        c->dirty = true;
        c->th->dirty[c->th->ndirty++] = c;
    }
    c->last_tx = bench_now();
}

/* --mqtt: user n's topic, b<run>/<n>; its length. */
static size_t mqtt_topic(worker *w, int n, char *out, size_t len)
{
    int r = snprintf(out, len, "b%s/%d", w->o->run_id, n);
    return r > 0 && (size_t)r < len ? (size_t)r : 0;
}

/* --mqtt: the packet id of message k (1..65535, then round again). */
static uint16_t mqtt_pid(uint64_t k)
{
    return (uint16_t)((k - 1) % 65535 + 1);
}

static void send_ctl(bconn *c, int op, Parley__ClientFrame *f)
{
    f->id = CTL_ID + (uint64_t)op;
    if (op != OP_PING) {
        c->op = op;
        c->op_t = bench_now();
    }
    send_frame(c, f);
}

static void send_hello(bconn *c)
{
    if (c->th->w->o->mqtt) {
        /* The broker drops a client silent for 1.5 keep-alives; the bench
         * pings after ping_every. */
        char id[64];
        uint8_t pkt[128];
        snprintf(id, sizeof id, "b%s_%d", c->th->w->o->run_id, c->idx);
        double ka = c->th->w->o->ping_every * 3 + 1;
        c->op = OP_HELLO;
        c->op_t = bench_now();
        send_mqtt(c, pkt, mqtt_connect(pkt, sizeof pkt, id, (uint16_t)(ka > 65535 ? 65535 : ka)));
        return;
    }
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    Parley__Hello h = PARLEY__HELLO__INIT;
    h.version = 1;
    h.client = "parley-bench";
    f.body_case = PARLEY__CLIENT_FRAME__BODY_HELLO;
    f.hello = &h;
    send_ctl(c, OP_HELLO, &f);
}

static void user_name(worker *w, long k, char *out, size_t len)
{
    snprintf(out, len, "b%s_%ld", w->o->run_id, k);
}

/* Registers c's next user: user idx, or with login's --users the idx-th,
 * (idx + conns)-th, ... */
static void send_register(bconn *c)
{
    char name[64];
    worker *w = c->th->w;
    user_name(w, c->idx + (long)w->o->conns * c->nuids, name, sizeof name);
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    Parley__Register r = PARLEY__REGISTER__INIT;
    r.name = name;
    r.password = PASSWORD;
    f.body_case = PARLEY__CLIENT_FRAME__BODY_REG;
    f.reg = &r;
    send_ctl(c, OP_REG, &f);
}

static void send_login(bconn *c)
{
    if (c->th->w->o->mqtt) {
        /* Logging in is subscribing to the user's own topic, at QoS 1. */
        char topic[64];
        uint8_t pkt[128];
        size_t tlen = mqtt_topic(c->th->w, c->idx, topic, sizeof topic);
        c->op = OP_LOGIN;
        c->op_t = bench_now();
        send_mqtt(c, pkt, mqtt_subscribe(pkt, sizeof pkt, 1, topic, tlen, 1));
        return;
    }
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    Parley__Login l = PARLEY__LOGIN__INIT;
    l.user_id = c->user;
    l.password = PASSWORD;
    f.body_case = PARLEY__CLIENT_FRAME__BODY_LOGIN;
    f.login = &l;
    send_ctl(c, OP_LOGIN, &f);
}

/* login: logs in as c's next user. */
static void login_next(bconn *c)
{
    c->user = c->uids[c->ucur++ % c->nuids];
    cnt(&c->th->st->sent, 1);
    send_login(c);
}

static void send_logout(bconn *c)
{
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    Parley__Logout l = PARLEY__LOGOUT__INIT;
    f.body_case = PARLEY__CLIENT_FRAME__BODY_LOGOUT;
    f.logout = &l;
    send_ctl(c, OP_LOGOUT, &f);
}

static void send_ping(bconn *c)
{
    if (c->th->w->o->mqtt) {
        uint8_t pkt[2];
        send_mqtt(c, pkt, mqtt_pingreq(pkt, sizeof pkt));
        cnt(&c->th->st->pings, 1);
        return;
    }
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    Parley__Ping p = PARLEY__PING__INIT;
    p.nonce = (uint64_t)c->idx;
    f.body_case = PARLEY__CLIENT_FRAME__BODY_PING;
    f.ping = &p;
    send_ctl(c, OP_PING, &f);
    cnt(&c->th->st->pings, 1);
}

static void send_gcreate(bconn *c)
{
    char name[64];
    snprintf(name, sizeof name, "b%s_g%d", c->th->w->o->run_id, c->group);
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    Parley__GroupCreate g = PARLEY__GROUP_CREATE__INIT;
    g.name = name;
    g.desc = "parley-bench";
    f.body_case = PARLEY__CLIENT_FRAME__BODY_GROUP_CREATE;
    f.group_create = &g;
    send_ctl(c, OP_GCREATE, &f);
}

static void send_gjoin(bconn *c)
{
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    Parley__GroupJoin g = PARLEY__GROUP_JOIN__INIT;
    g.group_id = c->th->w->gid[c->group];
    f.body_case = PARLEY__CLIENT_FRAME__BODY_GROUP_JOIN;
    f.group_join = &g;
    send_ctl(c, OP_GJOIN, &f);
}

/* A 64-bit mix (splitmix64's finaliser): spreads a counter over all bits. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The client_msg_id of message k of c, as --client-ids says (0: none). */
static uint64_t msg_cmid(bconn *c, uint64_t k)
{
    uint64_t id;
    struct timespec ts;
    switch (c->th->w->o->ids) {
    case IDS_TIME:
        clock_gettime(CLOCK_REALTIME, &ts);
        id = ((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000) << 22 |
             (c->cmid_base & ((1u << 22) - 1));
        if (id <= c->cmid_last)
            id = c->cmid_last + 1;
        c->cmid_last = id;
        break;
    case IDS_COUNT:
        id = c->cmid_base + k;
        break;
    case IDS_RANDOM:
        id = mix64(c->cmid_base + k);
        break;
    default:
        return 0;
    }
    return id ? id : 1;
}

/* Queues message k of sender c as a Parley SendDirect / SendGroup, its
 * body already in th->body. */
static void send_parley_msg(bconn *c, uint64_t k)
{
    bthread *th = c->th;
    worker *w = th->w;
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    f.id = k;
    Parley__SendDirect sd = PARLEY__SEND_DIRECT__INIT;
    Parley__SendGroup sg = PARLEY__SEND_GROUP__INIT;
    if (bench_pairs(w->o)) {
        sd.to = conn_at(w, c->partner)->user;
        sd.body = th->body;
        sd.client_msg_id = msg_cmid(c, k);
        f.body_case = PARLEY__CLIENT_FRAME__BODY_SEND_DIRECT;
        f.send_direct = &sd;
    } else {
        sg.group_id = w->gid[c->group];
        sg.body = th->body;
        sg.client_msg_id = msg_cmid(c, k);
        f.body_case = PARLEY__CLIENT_FRAME__BODY_SEND_GROUP;
        f.send_group = &sg;
    }
    send_frame(c, &f);
}

/* --mqtt: queues message k of sender c as a PUBLISH at QoS 1 to the
 * partner's topic. */
static void send_mqtt_msg(bconn *c, uint64_t k)
{
    bthread *th = c->th;
    worker *w = th->w;
    char topic[64];
    uint8_t pkt[MQTT_PKT_MAX];
    size_t tlen = mqtt_topic(w, c->partner, topic, sizeof topic);
    send_mqtt(
        c, pkt,
        mqtt_publish(pkt, sizeof pkt, topic, tlen, mqtt_pid(k), th->body, (size_t)w->o->size));
}

/* Sends the next message of sender c, stamped `stamp` (bench clock, ns). */
static void send_msg_at(bconn *c, uint64_t stamp)
{
    bthread *th = c->th;
    worker *w = th->w;
    uint64_t k = c->nsent + 1;
    if (k >= CTL_ID || !grow(&c->okid, &c->okcap, k)) {
        bench_fail(w->sh, "out of memory for message bookkeeping");
        return;
    }
    c->nsent = k;
    put_hex(th->body, 6, (uint64_t)c->idx);
    put_hex(th->body + 6, 8, k);
    put_hex(th->body + 14, 12, stamp);
    if (w->o->mqtt)
        send_mqtt_msg(c, k);
    else
        send_parley_msg(c, k);
    c->inflight++;
    cnt(&th->st->sent, 1);
    if (in_window(w, stamp))
        cnt(&th->st->sent_win, 1);
}

static void send_msg(bconn *c)
{
    send_msg_at(c, bench_now());
}

/* A flooder's next Register, under a name of its own. */
static void send_flood_reg(bconn *c)
{
    char name[64];
    c->nreg++;
    snprintf(name, sizeof name, "f%s_%d_%llu", c->th->w->o->run_id, c->idx,
             (unsigned long long)c->nreg);
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    Parley__Register r = PARLEY__REGISTER__INIT;
    r.name = name;
    r.password = PASSWORD;
    f.id = FLOOD_ID + c->nreg;
    f.body_case = PARLEY__CLIENT_FRAME__BODY_REG;
    f.reg = &r;
    send_frame(c, &f);
    c->inflight++;
    cnt(&c->th->st->flood_sent, 1);
}

/* Keeps --flood-inflight Register requests outstanding, unless a BUSY reply
 * asked the flooder to wait. */
static void flood_fill(bconn *c, uint64_t now)
{
    const bopts *o = c->th->w->o;
    while (c->fd >= 0 && c->hello_ok && c->inflight < (uint32_t)o->flood_inflight &&
           now >= c->next_at)
        send_flood_reg(c);
}

/* ---- the setup phases ---- */

static void conn_close(bconn *c)
{
    if (c->fd < 0)
        return;
    event_free(c->rev);
    event_free(c->wev);
    evbuffer_free(c->inb);
    evbuffer_free(c->out);
    /* No close_notify: the server takes a bare end as one (frames carry
     * their lengths), and the bench has no use for one more write. */
    SSL_free(c->ssl);
    c->ssl = NULL;
    c->tls_up = c->read_wants_write = c->write_wants_read = false;
    close(c->fd);
    c->rev = c->wev = NULL;
    c->inb = c->out = NULL;
    c->fd = -1;
}

/* The connection broke (why: what the socket said): a failure of the run
 * unless it is over. */
static void conn_broke(bconn *c, const char *why)
{
    bthread *th = c->th;
    if (c->flooder) {
        /* Being cut off is what a flooder may expect: it tries again. */
        cnt(&th->st->flood_closed, 1);
        conn_close(c);
        c->hello_ok = false;
        c->inflight = 0;
        c->next_at = bench_now() + NS / 10;
        return;
    }
    if (th->seen < PH_STOP && !atomic_load(&th->w->sh->failed))
        bench_fail(th->w->sh, "connection %d (session %d of its user; port %d, during %s): %s",
                   c->idx, c->dev + 1, th->w->o->ports[c->port], phase_name(th->seen), why);
    conn_close(c);
}

/* ---- TLS (--tls) ---- */

/* The connection broke in OpenSSL (what: the step): why, from its error
 * queue or errno. */
static void tls_broke(bconn *c, const char *what)
{
    int saved = errno;
    unsigned long e = ERR_get_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    char why[256];
    if (reason)
        snprintf(why, sizeof why, "%s: %s", what, reason);
    else if (e)
        snprintf(why, sizeof why, "%s: error %lx", what, e);
    else
        snprintf(why, sizeof why, "%s: %s", what, saved ? strerror(saved) : "connection closed");
    ERR_clear_error();
    conn_broke(c, why);
}

/* Moves c's handshake on; true once it is done. A handshake that waits to
 * read needs nothing (rev is always on); one that waits to write, wev. */
static bool tls_handshake_step(bconn *c)
{
    if (c->tls_up)
        return true;
    ERR_clear_error();
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        c->tls_up = true;
        return true;
    }
    switch (SSL_get_error(c->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        break;
    case SSL_ERROR_WANT_WRITE:
        event_add(c->wev, NULL);
        break;
    default:
        tls_broke(c, "TLS handshake (is the server's port TLS?)");
        break;
    }
    return false;
}

/* conn_write's TLS half: the handshake first, then what is queued, one
 * record (at most 16 KiB) per SSL_write. A write that must wait is retried
 * with the same bytes first (the buffer only grows at its end), as OpenSSL
 * asks. */
static void tls_write_out(bconn *c)
{
    c->write_wants_read = false;
    if (!tls_handshake_step(c))
        return;
    size_t len;
    while ((len = evbuffer_get_length(c->out)) > 0) {
        size_t n = len < 16384 ? len : 16384, done = 0;
        unsigned char *p = evbuffer_pullup(c->out, (ssize_t)n);
        if (!p) {
            bench_fail(c->th->w->sh, "out of memory writing connection %d", c->idx);
            conn_close(c);
            return;
        }
        ERR_clear_error();
        int rc = SSL_write_ex(c->ssl, p, n, &done);
        if (rc == 1) {
            evbuffer_drain(c->out, done);
            continue;
        }
        switch (SSL_get_error(c->ssl, rc)) {
        case SSL_ERROR_WANT_WRITE:
            event_add(c->wev, NULL);
            return;
        case SSL_ERROR_WANT_READ:
            c->write_wants_read = true; /* on_readable writes again */
            return;
        default:
            tls_broke(c, "TLS write");
            return;
        }
    }
}

/* Writes what c has queued; what the socket does not take waits for wev. */
static void conn_write(bconn *c)
{
    if (c->fd < 0 || !c->connected || event_pending(c->wev, EV_WRITE, NULL))
        return;
    if (c->ssl) {
        tls_write_out(c);
        return;
    }
    while (evbuffer_get_length(c->out) > 0) {
        int n = evbuffer_write(c->out, c->fd);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            conn_broke(c, strerror(errno));
            return;
        }
    }
    if (evbuffer_get_length(c->out) > 0)
        event_add(c->wev, NULL);
}

/* Writes the output every callback of this pass queued. */
static void flush_dirty(bthread *th)
{
    for (int i = 0; i < th->ndirty; i++) {
        bconn *c = th->dirty[i];
        c->dirty = false;
        conn_write(c);
    }
    th->ndirty = 0;
}

static void phase_done(bconn *c)
{
    bthread *th = c->th;
    atomic_fetch_add(&th->st->done[th->seen], 1);
    if (c->phase_busy) {
        c->phase_busy = false;
        th->active--;
    }
}

static void on_readable(evutil_socket_t fd, short what, void *arg);
static void on_writable(evutil_socket_t fd, short what, void *arg);

static bool start_connect(bconn *c)
{
    worker *w = c->th->w;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        bench_fail(w->sh, "socket(): %s (connection %d; see ulimit -n)", strerror(errno), c->idx);
        return false;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in src = w->src;
    if (c->src) {
        src.sin_family = AF_INET;
        src.sin_port = 0;
        src.sin_addr.s_addr = c->src;
    }
    if (w->bind_src || c->src) {
        /* Leave the port to connect(), so that ports are shared between
         * destinations: only the 4-tuple must be unique. */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            char a[INET_ADDRSTRLEN];
            inet_ntop(AF_INET, &src.sin_addr, a, sizeof a);
            bench_fail(w->sh, "bind to %s: %s", a, strerror(errno));
            close(fd);
            return false;
        }
    }
    c->fd = fd;
    c->connected = false;
    c->ws_up = false;
    c->ws_rng = (uint32_t)(c->idx * 2654435761u) | 1;
    if (w->tls) {
        /* The handshake starts once TCP is up (on_writable). */
        c->ssl = SSL_new(w->tls);
        if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
            ERR_clear_error();
            SSL_free(c->ssl);
            c->ssl = NULL;
            bench_fail(w->sh, "cannot start TLS on connection %d", c->idx);
            close(fd);
            c->fd = -1;
            return false;
        }
        SSL_set_connect_state(c->ssl);
    }
    c->rev = event_new(c->th->base, fd, EV_READ | EV_PERSIST, on_readable, c);
    c->wev = event_new(c->th->base, fd, EV_WRITE, on_writable, c);
    c->inb = evbuffer_new();
    c->out = evbuffer_new();
    if (!c->rev || !c->wev || !c->inb || !c->out) {
        bench_fail(w->sh, "out of memory creating connection %d", c->idx);
        goto fail;
    }
    if (connect(fd, (struct sockaddr *)&w->dst[c->port], sizeof w->dst[0]) < 0 &&
        errno != EINPROGRESS) {
        bench_fail(w->sh, "connect (connection %d, port %d): %s", c->idx, w->o->ports[c->port],
                   strerror(errno));
        goto fail;
    }
    if (event_add(c->wev, NULL) < 0 || event_add(c->rev, NULL) < 0) {
        bench_fail(w->sh, "cannot watch connection %d", c->idx);
        goto fail;
    }
    return true;
fail:
    if (c->rev) {
        conn_close(c);
    } else {
        close(fd);
        c->fd = -1;
    }
    return false;
}

/* Starts connection c's part of the current setup phase; false if it has
 * none (it then counts as done at once). */
static bool start_op(bconn *c, phase ph)
{
    const bopts *o = c->th->w->o;
    if (c->flooder)
        return false; /* it connects when the flood starts */
    switch (ph) {
    case PH_CONNECT:
        return start_connect(c);
    case PH_REGISTER:
        if (o->mqtt || c->owner)
            return false; /* an MQTT broker has no accounts; a device logs in as its owner */
        send_register(c);
        return true;
    case PH_LOGIN:
        if (c->owner)
            c->user = c->owner->user; /* registered in the phase before */
        send_login(c);
        return true;
    case PH_GCREATE:
        if (o->sc != SC_GROUP || c->member != 0 || c->owner)
            return false;
        send_gcreate(c);
        return true;
    case PH_GJOIN:
        if (o->sc != SC_GROUP || c->member == 0 || c->owner)
            return false;
        send_gjoin(c);
        return true;
    default:
        return false;
    }
}

static bool setup_phase(phase ph)
{
    return ph >= PH_CONNECT && ph <= PH_GJOIN;
}

static void pump(bthread *th)
{
    if (!setup_phase(th->seen))
        return;
    while (th->active < th->window && th->next < th->n) {
        if (atomic_load(&th->w->sh->failed))
            return;
        bconn *c = th->c[th->next++];
        c->phase_busy = true;
        th->active++;
        if (!start_op(c, th->seen))
            phase_done(c);
    }
}

static void start_run(bthread *th)
{
    const bopts *o = th->w->o;
    th->sending = true;
    if (o->sc == SC_LOGIN) {
        for (int i = 0; i < th->n; i++)
            login_next(th->c[i]);
        return;
    }
    if (o->rate > 0)
        return; /* the tick sends at the offered rate */
    for (int i = 0; i < th->nsnd; i++)
        for (int k = 0; k < o->inflight; k++)
            send_msg(th->snd[i]);
}

static void enter_phase(bthread *th, phase ph)
{
    th->seen = ph;
    switch (ph) {
    case PH_CONNECT:
    case PH_REGISTER:
    case PH_LOGIN:
    case PH_GCREATE:
    case PH_GJOIN:
        th->next = 0;
        th->active = 0;
        pump(th);
        break;
    case PH_RUN:
        start_run(th);
        break;
    case PH_DRAIN:
        th->sending = false;
        /* The flood ends: the server may drop what they still had queued. */
        for (int i = 0; i < th->nfl; i++)
            conn_close(th->fl[i]);
        break;
    case PH_STOP:
        th->sending = false;
        for (int i = 0; i < th->n; i++)
            conn_close(th->c[i]);
        event_base_loopexit(th->base, NULL);
        break;
    default:
        break;
    }
}

/* ---- receiving ---- */

static convst *conv_of(bconn *c, uint64_t conv)
{
    for (int i = 0; i < c->nconv; i++)
        if (c->conv[i].conv == conv)
            return &c->conv[i];
    if (c->nconv == MAX_CONVS)
        return NULL;
    convst *s = &c->conv[c->nconv++];
    memset(s, 0, sizeof *s);
    s->conv = conv;
    return s;
}

/* Which of c's incoming streams messages from sender `src` belong to. */
static stream *stream_of(bconn *c, int src)
{
    worker *w = c->th->w;
    const bopts *o = w->o;
    if (src == c->idx) /* the sending session gets SendOk only; the others a copy */
        return c->owner ? &c->own : NULL;
    if (bench_pairs(o))
        return src == c->partner ? &c->in[0] : NULL;
    if (o->sc != SC_GROUP)
        return NULL;
    int base = c->group * o->group_size;
    int m = src - base;
    if (m < 0 || m >= o->senders)
        return NULL;
    return &c->in[m];
}

/* Checks and counts one delivered message: its body (b, blen bytes), and
 * Parley's conversation, seq, msgid and sender (`from`; 0: not checked).
 * With --mqtt, which has none of them, the conversation is the sender's,
 * seq its counter and msgid 1. */
static void deliver(bconn *c, const char *b, size_t blen, uint64_t conv, uint64_t seq,
                    uint64_t msgid, uint64_t from)
{
    bthread *th = c->th;
    worker *w = th->w;
    uint64_t now = bench_now();
    uint64_t src, k, t;
    if (!b || blen < BODY_HDR || !get_hex(b, 6, &src) || !get_hex(b + 6, 8, &k) ||
        !get_hex(b + 14, 12, &t) || k == 0 || (msgid == 0 && !w->o->mqtt)) {
        cnt(&th->st->bogus, 1);
        return;
    }
    if (w->o->mqtt) {
        conv = src + 1;
        seq = k;
        msgid = 1;
    }
    stream *s = stream_of(c, (int)src);
    convst *cv = conv_of(c, conv);
    bconn *sender = conn_at(w, (int)src);
    /* Every push names its sender: for an own copy, the receiving user. */
    if (!s || !cv || (from && (!sender || sender->user != from))) {
        cnt(&th->st->bogus, 1);
        return;
    }
    bool own = s == &c->own, other = c->owner && !own;
    /* Acknowledge every copy, as a client does: the server resends what it
     * has not seen acknowledged. (MQTT: each PUBLISH has had its PUBACK.) */
    if (!w->o->mqtt) {
        if (seq > cv->ack_hi)
            cv->ack_hi = seq;
        c->ack_due = true;
    }
    if (!grow(&s->got, &s->cap, k)) {
        bench_fail(w->sh, "out of memory for message bookkeeping");
        return;
    }
    if (s->got[k]) {
        cnt(s->got[k] == msgid ? &th->st->dups : &th->st->mismatch, 1);
        if (own && s->got[k] == msgid)
            cnt(&th->st->own_dups, 1);
        if (!atomic_load_explicit(&th->st->first_dup, memory_order_relaxed))
            atomic_store_explicit(&th->st->first_dup, now, memory_order_relaxed);
        return;
    }
    s->got[k] = msgid;
    cnt(own ? &th->st->own_unique : other ? &th->st->dev_unique : &th->st->unique, 1);
    if (seq <= cv->last_seq) {
        cnt(&th->st->ooo, 1);
        int expect = 0;
        if (atomic_compare_exchange_strong(&w->sh->disordered, &expect, 1)) {
            w->ooo_src = (int)src;
            w->ooo_k = k;
            snprintf(w->sh->first_ooo, sizeof w->sh->first_ooo,
                     "connection %d (user %llu) got seq %llu (msgid %llu, message %llu of "
                     "connection %llu) after seq %llu in conversation %llu",
                     c->idx, (unsigned long long)c->user, (unsigned long long)seq,
                     (unsigned long long)msgid, (unsigned long long)k, (unsigned long long)src,
                     (unsigned long long)cv->last_seq, (unsigned long long)conv);
        }
    } else
        cv->last_seq = seq;
    if (own || other) {
        if (in_window(w, now)) {
            cnt(own ? &th->st->own_win : &th->st->dev_win, 1);
            if (own)
                hist_record(&th->st->lat_own, now > t ? now - t : 0);
        }
    } else if (in_window(w, now)) {
        cnt(&th->st->recv_win, 1);
        hist_record(&th->st->lat, now > t ? now - t : 0);
    } else if (in_window2(w, now)) {
        cnt(&th->st->recv_win2, 1);
        hist_record(&th->st->lat2, now > t ? now - t : 0);
    }
}

static void on_message(bconn *c, const Parley__Message *m)
{
    /* A social event (a member joined the bench's group): acknowledged as
     * a client does, not counted; it takes a seq of the conversation, so
     * the messages around it skip one. */
    if (m->kind != PARLEY__MESSAGE_KIND__TEXT) {
        convst *cv = conv_of(c, m->conv);
        if (cv && m->seq > cv->ack_hi) {
            cv->ack_hi = m->seq;
            c->ack_due = true;
        }
        return;
    }
    deliver(c, m->body, m->body ? strlen(m->body) : 0, m->conv, m->seq, m->msgid, m->from);
}

/* A send of c was answered: message k has msgid `msgid` (REFUSED: an error
 * reply). Counts it and, in a closed loop, sends the next. */
static void send_answered(bconn *c, uint64_t k, uint64_t msgid)
{
    bthread *th = c->th;
    worker *w = th->w;
    c->inflight--;
    c->okid[k] = msgid;
    if (msgid == REFUSED) {
        cnt(&th->st->errors, 1);
    } else {
        cnt(&th->st->answered, 1);
        cnt(&th->st->expected, (uint64_t)w->fanout);
        if (w->o->devices > 1) {
            uint64_t more = (uint64_t)w->o->devices - 1;
            cnt(&th->st->own_expected, more);
            cnt(&th->st->dev_expected, more * (uint64_t)w->dev_fanout);
        }
    }
    if (th->sending && w->o->rate <= 0)
        send_msg(c);
}

static void on_send_reply(bconn *c, const Parley__ServerFrame *f)
{
    bthread *th = c->th;
    worker *w = th->w;
    uint64_t k = f->id;
    if (k == 0 || k > c->nsent || k >= c->okcap || c->okid[k] || c->inflight == 0) {
        cnt(&th->st->bogus, 1);
        return;
    }
    if (f->error && f->error->code != PARLEY__ERROR_CODE__OK) {
        /* Not a loss: the sender is told the message was not taken. */
        bench_note_error(w->sh, "%s: %s", err_name(f->error->code),
                         f->error->text ? f->error->text : "");
        send_answered(c, k, REFUSED);
        return;
    }
    if (f->body_case != PARLEY__SERVER_FRAME__BODY_SEND_OK || f->send_ok->msgid == 0) {
        c->inflight--;
        cnt(&th->st->bogus, 1);
        return;
    }
    send_answered(c, k, f->send_ok->msgid);
}

static void on_ctl_reply(bconn *c, const Parley__ServerFrame *f)
{
    bthread *th = c->th;
    worker *w = th->w;
    int op = (int)(f->id - CTL_ID);
    if (op == OP_PING)
        return;
    if (op != c->op) {
        cnt(&th->st->bogus, 1);
        return;
    }
    c->op = OP_NONE;
    if (f->error && f->error->code != PARLEY__ERROR_CODE__OK) {
        bench_fail(w->sh, "%s of connection %d (user %llu) failed: %s: %s", op_name(op), c->idx,
                   (unsigned long long)c->user, err_name(f->error->code),
                   f->error->text ? f->error->text : "");
        return;
    }
    switch (op) {
    case OP_HELLO:
        if (f->body_case != PARLEY__SERVER_FRAME__BODY_HELLO_OK)
            break;
        c->hello_ok = true;
        if (th->seen >= PH_RUN) { /* login --reconnect: a new connection */
            if (th->sending)
                login_next(c);
            return;
        }
        phase_done(c);
        return;
    case OP_REG:
        if (f->body_case != PARLEY__SERVER_FRAME__BODY_REGISTER_OK || !f->register_ok->user_id)
            break;
        c->user = f->register_ok->user_id;
        if (c->uids) {
            c->uids[c->nuids++] = c->user;
            if (c->nuids < c->uwant) {
                send_register(c);
                return;
            }
        }
        phase_done(c);
        return;
    case OP_LOGIN:
        if (f->body_case != PARLEY__SERVER_FRAME__BODY_LOGIN_OK)
            break;
        if (w->o->sc == SC_LOGIN && th->seen >= PH_RUN) {
            uint64_t now = bench_now();
            cnt(&th->st->answered, 1);
            if (in_window(w, now)) {
                cnt(&th->st->answered_win, 1);
                hist_record(&th->st->lat, now - c->op_t);
            }
            send_logout(c);
            return;
        }
        phase_done(c);
        return;
    case OP_LOGOUT:
        if (f->body_case != PARLEY__SERVER_FRAME__BODY_DONE)
            break;
        if (!th->sending)
            return;
        if (w->o->reconnect)
            c->redial = true; /* on_readable does it, once the frames are read */
        else
            login_next(c);
        return;
    case OP_GCREATE:
        if (f->body_case != PARLEY__SERVER_FRAME__BODY_GROUP_CREATE_OK)
            break;
        w->gid[c->group] = f->group_create_ok->group_id;
        phase_done(c);
        return;
    case OP_GJOIN:
        if (f->body_case != PARLEY__SERVER_FRAME__BODY_DONE)
            break;
        phase_done(c);
        return;
    default:
        break;
    }
    bench_fail(w->sh, "%s of connection %d: unexpected reply (body %d)", op_name(op), c->idx,
               (int)f->body_case);
}

/* A flooder's error reply other than BUSY: counted, the first one kept. */
static void flood_error(bconn *c, const char *what, const Parley__ServerFrame *f)
{
    cnt(&c->th->st->flood_err, 1);
    if (f->error)
        bench_note_flood_error(c->th->w->sh, "%s: %s: %s", what, err_name(f->error->code),
                               f->error->text ? f->error->text : "");
    else
        bench_note_flood_error(c->th->w->sh, "%s: unexpected reply (body %d)", what,
                               (int)f->body_case);
}

/* Everything a flooder receives: no reply makes the run fail. */
static void on_flood_frame(bconn *c, const Parley__ServerFrame *f)
{
    bthread *th = c->th;
    uint64_t now = bench_now();
    const Parley__Error *e = f->error && f->error->code != PARLEY__ERROR_CODE__OK ? f->error : NULL;
    if (f->id == CTL_ID + OP_HELLO) {
        c->op = OP_NONE;
        if (e || f->body_case != PARLEY__SERVER_FRAME__BODY_HELLO_OK) {
            flood_error(c, "hello", f);
            return;
        }
        c->hello_ok = true;
        flood_fill(c, now);
        return;
    }
    if (f->id < FLOOD_ID) {
        /* A ping's answer, or a push: an error or a bye (the close follows). */
        if (e && f->id != CTL_ID + OP_PING)
            flood_error(c, "push", f);
        return;
    }
    if (f->id - FLOOD_ID > c->nreg || c->inflight == 0) {
        cnt(&th->st->bogus, 1);
        return;
    }
    c->inflight--;
    bool win = in_window2(th->w, now);
    if (e && e->code == PARLEY__ERROR_CODE__BUSY) {
        cnt(&th->st->flood_busy, 1);
        if (win)
            cnt(&th->st->flood_busy_win, 1);
        uint64_t wait = e->retry_after_ms ? (uint64_t)e->retry_after_ms * 1000000 : NS / 100;
        if (c->next_at < now + wait)
            c->next_at = now + wait;
    } else if (e || f->body_case != PARLEY__SERVER_FRAME__BODY_REGISTER_OK) {
        flood_error(c, "register", f);
        c->next_at = now + NS / 100; /* not in a tight loop */
    } else {
        cnt(&th->st->flood_ok, 1);
        if (win)
            cnt(&th->st->flood_ok_win, 1);
    }
    flood_fill(c, now);
}

static int on_frame(void *arg, const uint8_t *p, size_t n)
{
    bconn *c = arg;
    worker *w = c->th->w;
    Parley__ServerFrame *f = parley__server_frame__unpack(NULL, n, p);
    if (!f) {
        bench_fail(w->sh, "connection %d: a frame the bench cannot decode", c->idx);
        return -1;
    }
    if (c->flooder) {
        on_flood_frame(c, f);
    } else if (f->id == 0) {
        switch (f->body_case) {
        case PARLEY__SERVER_FRAME__BODY_MESSAGE:
            on_message(c, f->message);
            break;
        case PARLEY__SERVER_FRAME__BODY_BYE:
            if (c->th->seen < PH_STOP)
                bench_fail(w->sh, "connection %d: the server said bye (%s)", c->idx,
                           f->bye->reason ? f->bye->reason : "");
            break;
        case PARLEY__SERVER_FRAME__BODY_PRESENCE:
            break;
        default:
            if (f->error && f->error->code != PARLEY__ERROR_CODE__OK)
                bench_fail(w->sh, "connection %d: error from the server: %s: %s", c->idx,
                           err_name(f->error->code), f->error->text ? f->error->text : "");
            break;
        }
    } else if (f->id >= CTL_ID) {
        on_ctl_reply(c, f);
    } else {
        on_send_reply(c, f);
    }
    parley__server_frame__free_unpacked(f, NULL);
    return c->redial ? -2 : 0;
}

/* --mqtt: one packet from the broker (first: its first byte, b[0, n) its
 * body). 0, or -1 if the run failed and the connection is to be closed. */
static int on_mqtt_packet(bconn *c, uint8_t first, const uint8_t *b, size_t n)
{
    bthread *th = c->th;
    worker *w = th->w;
    int type = first >> 4;
    switch (type) {
    case MQTT_PUBLISH: {
        mqtt_pub p;
        char topic[64];
        size_t tlen = mqtt_topic(w, c->idx, topic, sizeof topic);
        if (mqtt_parse_publish(first, b, n, &p) < 0) {
            bench_fail(w->sh, "connection %d: a malformed PUBLISH from the broker", c->idx);
            return -1;
        }
        /* Acknowledge every copy, as a Parley client acks every push. */
        if (p.qos == 1) {
            uint8_t ack[4];
            send_mqtt(c, ack, mqtt_puback(ack, sizeof ack, p.pid));
        }
        if (p.qos != 1 || p.tlen != tlen || memcmp(p.topic, topic, tlen) != 0) {
            cnt(&th->st->bogus, 1); /* not what the bench subscribed to */
            return 0;
        }
        deliver(c, (const char *)p.payload, p.plen, 0, 0, 1, 0);
        return 0;
    }
    case MQTT_PUBACK: {
        if (n != 2)
            break;
        /* Packet ids go round every 65,535 messages; the one answered is
         * the latest of c's sends with this id. */
        uint16_t pid = (uint16_t)(b[0] << 8 | b[1]);
        uint64_t back = c->nsent ? (mqtt_pid(c->nsent) + 65535u - pid) % 65535u : 0;
        uint64_t k = c->nsent - back;
        if (!c->nsent || !pid || back >= c->nsent || k >= c->okcap || c->okid[k] ||
            c->inflight == 0) {
            cnt(&th->st->bogus, 1);
            return 0;
        }
        send_answered(c, k, 1);
        return 0;
    }
    case MQTT_CONNACK:
        if (n != 2 || c->op != OP_HELLO)
            break;
        if (b[1] != 0) {
            bench_fail(w->sh, "connection %d: the broker refused the connection (CONNACK %d)",
                       c->idx, b[1]);
            return -1;
        }
        c->op = OP_NONE;
        c->hello_ok = true;
        c->user = (uint64_t)c->idx;
        phase_done(c);
        return 0;
    case MQTT_SUBACK:
        if (n != 3 || c->op != OP_LOGIN || b[0] != 0 || b[1] != 1)
            break;
        if (b[2] != 1) {
            bench_fail(w->sh, "connection %d: the broker granted %s, not QoS 1", c->idx,
                       b[2] == 0x80 ? "no subscription"
                       : b[2]       ? "QoS 2"
                                    : "QoS 0");
            return -1;
        }
        c->op = OP_NONE;
        phase_done(c);
        return 0;
    case MQTT_PINGRESP:
        if (n != 0)
            break;
        return 0;
    default:
        break;
    }
    bench_fail(w->sh, "connection %d: an unexpected MQTT packet (type %d, %zu bytes) during %s",
               c->idx, type, n, phase_name(th->seen));
    return -1;
}

/* --mqtt: hands every whole packet in c->inb to on_mqtt_packet and drains
 * them. 0, or -2 if the run failed and the connection is to be closed. */
static int mqtt_read_packets(bconn *c)
{
    size_t len = evbuffer_get_length(c->inb);
    if (len < 2)
        return 0;
    const uint8_t *buf = evbuffer_pullup(c->inb, -1);
    if (!buf) {
        bench_fail(c->th->w->sh, "out of memory reading connection %d", c->idx);
        return -2;
    }
    size_t off = 0;
    for (;;) {
        uint8_t first;
        const uint8_t *body;
        size_t blen, used;
        mqtt_status st =
            mqtt_next(buf + off, len - off, MQTT_READ_MAX, &first, &body, &blen, &used);
        if (st == MQTT_NEED_MORE)
            break;
        if (st != MQTT_OK) {
            bench_fail(c->th->w->sh, "connection %d: %s from the broker", c->idx,
                       st == MQTT_TOO_LARGE ? "a packet over 64 KiB"
                                            : "a malformed remaining length");
            return -2;
        }
        if (on_mqtt_packet(c, first, body, blen) < 0)
            return -2;
        off += used;
    }
    evbuffer_drain(c->inb, off);
    return 0;
}

static void flush_acks(bconn *c)
{
    c->ack_due = false;
    for (int i = 0; i < c->nconv; i++) {
        convst *s = &c->conv[i];
        if (s->ack_hi <= s->acked)
            continue;
        Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
        Parley__Ack a = PARLEY__ACK__INIT;
        a.conv = s->conv;
        a.seq = s->ack_hi;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_ACK;
        f.ack = &a;
        send_frame(c, &f);
        s->acked = s->ack_hi;
    }
}

/* on_readable's TLS half: moves the handshake on (and then writes what
 * waited for it), and appends what the records hold to c->inb: every record
 * OpenSSL has read ahead, then the socket's next read waits for rev. false
 * if there is nothing new to look at (or c is gone). */
static bool tls_read_in(bconn *c)
{
    bthread *th = c->th;
    if (!c->tls_up) {
        if (!tls_handshake_step(c))
            return false;
        conn_write(c); /* the Hello, queued when TCP came up */
        if (c->fd < 0)
            return false;
    }
    c->read_wants_write = false;
    bool got = false;
    for (;;) {
        size_t n = 0;
        ERR_clear_error();
        int rc = SSL_read_ex(c->ssl, th->scratch, SCRATCH, &n);
        if (rc == 1) {
            if (evbuffer_add(c->inb, th->scratch, n) < 0) {
                bench_fail(th->w->sh, "out of memory reading connection %d", c->idx);
                conn_close(c);
                return false;
            }
            got = true;
            if (SSL_has_pending(c->ssl))
                continue;
            break;
        }
        switch (SSL_get_error(c->ssl, rc)) {
        case SSL_ERROR_WANT_READ:
            break;
        case SSL_ERROR_WANT_WRITE:
            c->read_wants_write = true; /* on_writable reads again */
            event_add(c->wev, NULL);
            break;
        case SSL_ERROR_ZERO_RETURN:
            conn_broke(c, "closed by the server");
            return false;
        default:
            tls_broke(c, "TLS read");
            return false;
        }
        break;
    }
    if (c->write_wants_read)
        conn_write(c);
    return got && c->fd >= 0;
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    bconn *c = arg;
    bthread *th = c->th;
    if (c->ssl) {
        if (!tls_read_in(c)) {
            flush_dirty(th);
            return;
        }
    } else {
        ssize_t n = read(fd, th->scratch, SCRATCH);
        if (n <= 0) {
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                return;
            conn_broke(c, n == 0 ? "closed by the server" : strerror(errno));
            flush_dirty(th);
            return;
        }
        if (evbuffer_add(c->inb, th->scratch, (size_t)n) < 0) {
            bench_fail(th->w->sh, "out of memory reading connection %d", c->idx);
            conn_close(c);
            flush_dirty(th);
            return;
        }
    }
    int r = th->w->o->mqtt ? mqtt_read_packets(c)
            : th->w->o->ws ? wire_read_ws(c->inb, READ_MAX, &c->ws_up, on_frame, c)
                           : wire_read_frames(c->inb, READ_MAX, on_frame, c);
    if (c->redial) {
        /* login --reconnect: the logout is answered; a new connection. */
        c->redial = false;
        c->hello_ok = false;
        conn_close(c);
        cnt(&th->st->reconnects, 1);
        start_connect(c);
    } else {
        if (r == -1)
            bench_fail(th->w->sh, "connection %d: a frame over %d bytes", c->idx, READ_MAX);
        if (r == -3)
            bench_fail(th->w->sh, "connection %d: the server refused the WebSocket or closed it",
                       c->idx);
        if (r < 0)
            conn_close(c);
        else if (c->ack_due)
            flush_acks(c);
    }
    pump(th);
    flush_dirty(th);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    bconn *c = arg;
    bthread *th = c->th;
    if (!c->connected) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err) {
            conn_broke(c, strerror(err));
            flush_dirty(th);
            return;
        }
        c->connected = true;
        /* --ws: the upgrade, and the Hello right behind it (the server
         * reads frames that follow the request). */
        if (th->w->o->ws && wire_ws_request(c->out, th->w->o->host, th->w->o->ports[c->port]) < 0) {
            bench_fail(th->w->sh, "out of memory queueing the upgrade of connection %d", c->idx);
            conn_close(c);
            return;
        }
        send_hello(c); /* with TLS, written once the handshake is done */
    }
    /* The read first (it may queue an Ack), then what waited for room,
     * which a read that had to wait for it held back too. */
    if (c->ssl && c->read_wants_write)
        on_readable(fd, EV_READ, c);
    conn_write(c);
    flush_dirty(th);
}

/* ---- the loop ---- */

/* regflood: once the flood has started, flooders (re)connect and send. */
static void flood_tick(bthread *th, uint64_t now)
{
    uint64_t fs = atomic_load_explicit(&th->w->sh->flood_start, memory_order_relaxed);
    if (th->seen != PH_RUN || !fs || now < fs)
        return;
    for (int i = 0; i < th->nfl; i++) {
        bconn *c = th->fl[i];
        if (c->fd >= 0) {
            flood_fill(c, now);
        } else if (now >= c->next_at) {
            cnt(&th->st->flood_connects, 1);
            if (!start_connect(c))
                return;
        }
    }
}

static void rate_send(bthread *th, uint64_t now)
{
    uint64_t start = atomic_load_explicit(&th->w->sh->run_start, memory_order_relaxed);
    if (now <= start || th->nsnd == 0)
        return;
    /* Message k (from 0) is due at start + k / rate: by now, those up to
     * and including the floor of (now - start) * rate. */
    uint64_t due = (uint64_t)((double)(now - start) * th->rate / 1e9) + 1;
    int idle = 0; /* senders tried in a row with no room */
    while (th->issued < due && idle < th->nsnd) {
        bconn *c = th->snd[th->rr];
        th->rr = (th->rr + 1) % th->nsnd;
        if (c->fd >= 0 && c->inflight < (uint32_t)th->w->o->inflight) {
            send_msg_at(c, start + (uint64_t)((double)th->issued * 1e9 / th->rate));
            th->issued++;
            idle = 0;
        } else {
            idle++;
        }
    }
    if (th->due) {
        uint64_t next = start + (uint64_t)((double)th->issued * 1e9 / th->rate);
        if (next > now && next != th->due_at) {
            th->due_at = next;
            struct timeval tv = {(time_t)((next - now) / NS),
                                 (suseconds_t)((next - now) % NS / 1000)};
            event_add(th->due, &tv);
        }
    }
}

static void on_due(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    bthread *th = arg;
    if (th->sending)
        rate_send(th, bench_now());
    flush_dirty(th);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    bthread *th = arg;
    worker *w = th->w;
    phase ph = (phase)atomic_load(&w->sh->phase);
    if (ph != th->seen)
        enter_phase(th, ph);
    if (ph == PH_STOP)
        return;
    uint64_t now = bench_now();
    if (th->sending && w->o->rate > 0)
        rate_send(th, now);
    if (th->nfl)
        flood_tick(th, now);
    if (now - th->last_scan >= NS) {
        th->last_scan = now;
        uint64_t quiet = (uint64_t)(w->o->ping_every * 1e9);
        for (int i = 0; i < th->n; i++) {
            bconn *c = th->c[i];
            if (c->fd >= 0 && c->hello_ok && now - c->last_tx >= quiet)
                send_ping(c);
        }
    }
    flush_dirty(th);
}

/* An event base; `precise` asks for timers finer than epoll's 1 ms (a
 * timerfd), which the paced tick needs. */
static struct event_base *new_base(bool precise)
{
    struct event_config *cfg = event_config_new();
    if (!cfg)
        return NULL;
    if (precise)
        event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    struct event_base *b = event_base_new_with_config(cfg);
    event_config_free(cfg);
    return b;
}

static void *thread_main(void *arg)
{
    bthread *th = arg;
    event_base_dispatch(th->base);
    return NULL;
}

/* ---- the check at the end ---- */

typedef struct {
    uint64_t lost, unacked, mismatch, phantom;
} tally;

/* Checks that stream `in` of receiver x holds every message sender s had
 * acknowledged, under its msgid; counts what it does not. */
static void check_stream(worker *w, bconn *s, stream *in, bconn *x, tally *t)
{
    wresult *r = shared_wresult(w->sh, w->w);
    for (uint64_t k = 1; k <= s->nsent; k++) {
        uint64_t ok = k < s->okcap ? s->okid[k] : 0;
        if (ok == REFUSED)
            ok = 0; /* refused, yet perhaps stored: "delivered, never acknowledged" */
        uint64_t got = k < in->cap ? in->got[k] : 0;
        if (ok && !got) {
            if (!r->example[0]) /* the first one lost */
                snprintf(r->example, sizeof r->example,
                         "message %llu (msgid %llu) of connection %d (user %llu) never reached "
                         "connection %d (user %llu%s)",
                         (unsigned long long)k, (unsigned long long)ok, s->idx,
                         (unsigned long long)s->user, x->idx, (unsigned long long)x->user,
                         !x->owner       ? ""
                         : in == &x->own ? ", another session of the sender: an own copy"
                                         : ", another session of the receiver");
            t->lost++;
        } else if (ok && got != ok) {
            t->mismatch++;
        } else if (!ok && got) {
            t->unacked++;
        }
    }
    for (uint64_t k = s->nsent + 1; k < in->cap; k++)
        if (in->got[k])
            t->phantom++;
}

/* Checks every incoming stream of x (a first session or a device). */
static void check_conn(worker *w, bconn *x, tally *t)
{
    const bopts *o = w->o;
    for (int slot = 0; slot < x->nin; slot++) {
        int src = bench_pairs(o) ? x->partner : x->group * o->group_size + slot;
        bconn *s = conn_at(w, src);
        if (!s || s->idx == x->idx)
            continue;
        check_stream(w, s, &x->in[slot], x, t);
    }
}

static void verify(worker *w)
{
    const bopts *o = w->o;
    wresult *r = shared_wresult(w->sh, w->w);
    uint64_t unanswered = 0, refused = 0;
    tally t = {0}, own = {0}, other = {0};
    for (int i = w->lo; i < w->hi; i++) {
        bconn *x = conn_at(w, i);
        for (uint64_t k = 1; k <= x->nsent; k++) {
            if (k >= x->okcap || !x->okid[k])
                unanswered++;
            else if (x->okid[k] == REFUSED)
                refused++;
        }
        check_conn(w, x, &t);
        /* --devices: the user's other sessions got what it received, and
         * what it sent as own copies. */
        for (int d = 1; d < o->devices; d++) {
            bconn *dv = dev_at(w, i, d);
            if (!dv->owner)
                continue; /* --devices-for senders: x does not send */
            check_conn(w, dv, &other);
            check_stream(w, x, &dv->own, dv, &own);
        }
    }
    atomic_store(&r->lost, t.lost + own.lost + other.lost);
    atomic_store(&r->lost_own, own.lost);
    atomic_store(&r->lost_dev, other.lost);
    atomic_store(&r->unanswered, unanswered);
    atomic_store(&r->refused, refused);
    /* Say what became of the send behind the first message out of order. */
    bconn *os = w->ooo_k ? conn_at(w, w->ooo_src) : NULL;
    if (os) {
        uint64_t ok = w->ooo_k < os->okcap ? os->okid[w->ooo_k] : 0;
        size_t len = strlen(w->sh->first_ooo);
        snprintf(w->sh->first_ooo + len, sizeof w->sh->first_ooo - len, "; its send was %s",
                 ok == REFUSED ? "refused with an error"
                 : ok          ? "acknowledged"
                               : "never answered");
    }
    atomic_store(&r->unacked_delivered, t.unacked + own.unacked + other.unacked);
    /* Count these with the thread-0 counters of this worker. */
    tstats *st = shared_tstats(w->sh, w->w, 0);
    atomic_fetch_add(&st->mismatch, t.mismatch + own.mismatch + other.mismatch);
    atomic_fetch_add(&st->bogus, t.phantom + own.phantom + other.phantom);
    atomic_store(&r->finished, 1);
}

/* ---- the worker ---- */

static void place(worker *w, bconn *c)
{
    const bopts *o = w->o;
    int i = c->idx, np = o->nports;
    c->partner = -1;
    c->group = -1;
    if (bench_is_flooder(o, i)) {
        int j = i - (o->conns - o->flood_conns);
        c->flooder = true;
        c->src = htonl(w->flood_base + (uint32_t)(j % o->flood_addrs));
        c->port = j % np;
        return; /* nin 0: it receives no messages */
    }
    switch (o->sc) {
    case SC_DIRECT:
    case SC_REGFLOOD: /* the uninvolved pairs */
        c->partner = i ^ 1;
        c->port = o->cross ? i % np : (i / 2) % np;
        c->nin = 1;
        break;
    case SC_GROUP:
        c->group = i / o->group_size;
        c->member = i % o->group_size;
        c->port = o->cross ? c->member % np : c->group % np;
        c->nin = o->senders;
        break;
    default:
        c->port = i % np;
        c->nin = 0;
        break;
    }
    bool nomem = false;
    if (o->sc == SC_LOGIN) {
        c->uwant = (o->users - 1 - i) / o->conns + 1;
        c->uids = calloc((size_t)c->uwant, sizeof(*c->uids));
        nomem = !c->uids;
    }
    if (c->nin) {
        c->in = calloc((size_t)c->nin, sizeof(*c->in));
        nomem = nomem || !c->in;
    }
    if (nomem) {
        fprintf(stderr, "parley-bench: out of memory\n");
        _exit(1);
    }
}

/* --devices: c is session d of owner's user, in owner's place; on another
 * port than owner's when there are several (a device elsewhere). */
static void place_device(worker *w, bconn *c, bconn *owner, int d)
{
    c->owner = owner;
    c->dev = d;
    c->partner = owner->partner;
    c->group = owner->group;
    c->member = owner->member;
    c->port = (owner->port + d) % w->o->nports;
    c->nin = owner->nin;
    if (c->nin) {
        c->in = calloc((size_t)c->nin, sizeof(*c->in));
        if (!c->in) {
            fprintf(stderr, "parley-bench: out of memory\n");
            _exit(1);
        }
    }
}

void engine_worker(const bopts *o, shared *sh, int wi, int nw, int lo, int hi)
{
    worker w = {.o = o, .sh = sh, .w = wi, .lo = lo, .hi = hi, .fanout = bench_fanout(o)};
    /* --devices-for senders: a group's other senders are its only
     * recipients with more sessions (direct: every user sends). */
    w.dev_fanout = !o->devices_senders ? w.fanout : o->sc == SC_GROUP ? o->senders - 1 : w.fanout;
    int n = hi - lo, nth = o->threads;
    if (nth > n && n > 0)
        nth = n;
    if (nth < 1)
        nth = 1;
    int more = o->devices > 1 ? o->devices - 1 : 0; /* further sessions per user */
    w.conns = calloc((size_t)(n ? n : 1), sizeof(*w.conns));
    w.devs = calloc((size_t)(n ? n : 1) * (size_t)(more ? more : 1), sizeof(*w.devs));
    w.th = calloc((size_t)nth, sizeof(*w.th));
    if (o->sc == SC_GROUP) {
        w.ngroups = (hi + o->group_size - 1) / o->group_size;
        w.gid = calloc((size_t)w.ngroups, sizeof(*w.gid));
    }
    if (!w.conns || !w.devs || !w.th || (o->sc == SC_GROUP && !w.gid)) {
        bench_fail(sh, "out of memory");
        _exit(1);
    }
    for (int p = 0; p < o->nports; p++) {
        w.dst[p].sin_family = AF_INET;
        w.dst[p].sin_port = htons((uint16_t)o->ports[p]);
        if (inet_pton(AF_INET, o->host, &w.dst[p].sin_addr) != 1) {
            bench_fail(sh, "--host %s: give an IPv4 address", o->host);
            _exit(1);
        }
    }
    /* Worker w connects from the w-th address after --src-base, so that
     * each has a full range of ephemeral ports of its own. */
    if (o->src_base) {
        struct in_addr a;
        if (inet_pton(AF_INET, o->src_base, &a) != 1) {
            bench_fail(sh, "--src-base %s: give an IPv4 address", o->src_base);
            _exit(1);
        }
        w.src.sin_family = AF_INET;
        w.src.sin_addr.s_addr = htonl(ntohl(a.s_addr) + (uint32_t)wi);
        w.bind_src = true;
    }
    if (o->sc == SC_REGFLOOD) {
        struct in_addr a;
        if (inet_pton(AF_INET, o->flood_src, &a) != 1) {
            bench_fail(sh, "--flood-src %s: give an IPv4 address", o->flood_src);
            _exit(1);
        }
        w.flood_base = ntohl(a.s_addr);
    }
    (void)nw;
    if (o->tls) {
        /* No verification (loopback, and the bench measures). No session
         * tickets or cache, as parleyd has none; reading ahead into a
         * larger buffer saves a read() per record. Idle connections are
         * many and quiet: they give their buffers back, as parleyd's do. */
        w.tls = SSL_CTX_new(TLS_client_method());
        if (!w.tls || SSL_CTX_set_min_proto_version(w.tls, TLS1_2_VERSION) != 1) {
            bench_fail(sh, "cannot create a TLS context");
            _exit(1);
        }
        SSL_CTX_set_verify(w.tls, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_options(w.tls, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_TICKET |
                                       SSL_OP_NO_COMPRESSION);
        SSL_CTX_set_session_cache_mode(w.tls, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_mode(w.tls, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                    (o->sc == SC_IDLE ? SSL_MODE_RELEASE_BUFFERS : 0));
        SSL_CTX_set_read_ahead(w.tls, 1);
        if (o->sc != SC_IDLE)
            SSL_CTX_set_default_read_buffer_len(w.tls, SCRATCH);
    }
    int window = o->setup_window / nth;
    if (window < 1)
        window = 1;
    for (int t = 0; t < nth; t++) {
        bthread *th = &w.th[t];
        th->w = &w;
        th->t = t;
        th->st = shared_tstats(sh, wi, t);
        th->window = window;
        th->seen = PH_INIT;
        th->base = new_base(o->rate > 0);
        /* Each thread's connections: its users' first sessions, and with
         * --devices a share of the others. */
        size_t per = (size_t)(n / nth + 1) * (size_t)(more + 1);
        th->c = calloc(per, sizeof(*th->c));
        th->snd = calloc((size_t)(n / nth + 1), sizeof(*th->snd));
        th->body = malloc((size_t)o->size + 1);
        th->dirty = calloc(per, sizeof(*th->dirty));
        th->fl = calloc((size_t)(n / nth + 1), sizeof(*th->fl));
        th->scratch = malloc(SCRATCH);
        if (!th->base || !th->c || !th->snd || !th->body || !th->dirty || !th->fl || !th->scratch) {
            bench_fail(sh, "out of memory");
            _exit(1);
        }
        for (int i = 0; i < o->size; i++)
            th->body[i] = (char)('a' + i % 26);
        th->body[o->size] = '\0';
    }
    for (int i = lo; i < hi; i++) {
        bconn *c = &w.conns[i - lo];
        bthread *th = &w.th[(i - lo) % nth];
        c->idx = i;
        c->fd = -1;
        c->cmid_base = mix64(((uint64_t)getpid() << 32) ^ bench_now() ^ mix64((uint64_t)i));
        c->th = th;
        place(&w, c);
        th->c[th->n++] = c;
        if (bench_is_sender(o, i))
            th->snd[th->nsnd++] = c;
        if (c->flooder)
            th->fl[th->nfl++] = c;
    }
    /* The other sessions come after every first one in each thread's list,
     * so a setup phase starts the first sessions first; session d of a user
     * is d threads away from its first (another loop, when there are two). */
    for (int d = 1; d <= more; d++)
        for (int i = lo; i < hi; i++) {
            if (o->devices_senders && !bench_is_sender(o, i))
                continue;
            bconn *c = dev_at(&w, i, d);
            bthread *th = &w.th[(i - lo + d) % nth];
            c->idx = i;
            c->fd = -1;
            c->th = th;
            place_device(&w, c, &w.conns[i - lo], d);
            th->c[th->n++] = c;
        }
    int total_snd = 0;
    for (int t = 0; t < nth; t++)
        total_snd += w.th[t].nsnd;
    for (int t = 0; t < nth; t++) {
        bthread *th = &w.th[t];
        th->rate = total_snd ? o->rate * th->nsnd / total_snd : 0;
        /* Phases need no more than a 10 ms tick. When pacing, a tick comes
         * about once per message (from 50 us to 1 ms apart): a coarser tick
         * sends bursts, and a burst's last message waits for all the others,
         * which measures the bench's pacing rather than the server. */
        long us = 10000;
        if (o->rate > 0) {
            double per = th->rate > 0 ? 1e6 / th->rate : 1000;
            us = per < 50 ? 50 : per > 1000 ? 1000 : (long)per;
        }
        /* Slower than one message a millisecond, a timer for each due time
         * keeps the sends on time, where the 1 ms tick would add up to 1 ms. */
        if (o->rate > 0 && th->rate > 0 && 1e6 / th->rate > 1000) {
            th->due = evtimer_new(th->base, on_due, th);
            if (!th->due) {
                bench_fail(sh, "cannot start a timer");
                _exit(1);
            }
        }
        struct timeval iv = {0, us};
        th->tick = event_new(th->base, -1, EV_PERSIST, on_tick, th);
        if (!th->tick || event_add(th->tick, &iv) < 0) {
            bench_fail(sh, "cannot start a timer");
            _exit(1);
        }
    }
    for (int t = 0; t < nth; t++)
        if (pthread_create(&w.th[t].tid, NULL, thread_main, &w.th[t]) != 0) {
            bench_fail(sh, "cannot start a thread");
            _exit(1);
        }
    for (int t = 0; t < nth; t++)
        pthread_join(w.th[t].tid, NULL);
    verify(&w);
    _exit(0);
}
