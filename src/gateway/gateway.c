#include "gateway/gateway.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/arena.h"
#include "common/keys.h"
#include "common/limiter.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/pbcheck.h"
#include "common/pwhash.h"
#include "common/u64map.h"
#include "services.pb-c.h"
#include "services/limits.h"

/* Method indexes, as declared in services.proto. */
enum { USER_CREATE = 0, USER_LOGIN, USER_RESUME, USER_LOGOUT };
enum {
    SOC_FRIEND_ADD = 0,
    SOC_FRIEND_DEL,
    SOC_FRIEND_LIST,
    SOC_GROUP_CREATE,
    SOC_GROUP_JOIN,
    SOC_GROUP_QUIT,
    SOC_GROUP_DELETE,
    SOC_WHOIS,
    SOC_FIND,
    SOC_TYPING
};
enum { MSG_SEND_DIRECT = 0, MSG_SEND_GROUP, MSG_HISTORY, MSG_RECALL, MSG_ACK, MSG_SYNC };
enum { MSG_FILE_BEGIN = 6, MSG_FILE_CHUNK, MSG_FILE_GET, MSG_READ };

typedef struct gw_loop {
    gateway *gw;
    loop *l;
    u64map *users; /* user id -> first conn of that user on this loop */
    arena *scratch;
    uint64_t rng; /* xorshift state for send references */
    /* Acks read in this pass of the loop, one per (user, conversation),
     * sent to the message service together when the pass ends. */
    Parley__Cursor *acks;
    size_t nacks, cap_acks;
    u64map *ack_index; /* user ^ conv mix -> index + 1 in acks */
    struct event *ack_flush;
} gw_loop;

struct gateway {
    gateway_config cfg;
    conn_class cls;     /* the handler and cfg.limits */
    conn_class cls_tls; /* the same over TLS (cfg.tls) */
    conn_class cls_ws;  /* WebSocket (cfg.ws) */
    conn_class cls_wss; /* WebSocket over TLS */
    loop **loops;
    unsigned nloops;
    unsigned next_loop;    /* atomic */
    uint64_t next_session; /* atomic */
    ProtobufCService *user, *social, *message;
    bus *bus;
    gw_loop *per_loop;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned closed_loops;
    const char *bye_reason;
    pthread_mutex_t count_lock; /* guards sessions */
    u64map *sessions;           /* user -> sessions on this gateway (all loops) */
    u64map *homes;              /* user -> mask of the loops holding a session (count_lock) */
    limiter *lim;               /* per-address and per-user limits, all loops */
    unsigned auth_queued;       /* atomic: register/login calls in flight */
    int64_t audit_last[9];      /* atomic: when each kind of limit was last logged */
};

/* Kinds of limiter key (limiter_key's `kind`): one table, no collisions. */
enum { LIM_ADDR = 1, LIM_REG, LIM_FAIL_IP, LIM_FAIL_PAIR, LIM_MSG, LIM_AUTHQ, LIM_REQ, LIM_HIST };
/* Keys of their own, counted (metrics, audit) with the reads (LIM_HIST):
 * typing per (user, conversation), read cursors per user. */
enum { LIM_TYPING = 16, LIM_READ };
/* Typing: one event per conversation every 2 s per user (it lasts ~5 s on
 * the client); read cursors: 5 a second per user, bursts of 20. */
#define GW_TYPING_RATE 0.5
#define GW_READ_RATE   5.0

/* Per-connection state, in the conn's udata. */
typedef struct gw_session {
    gw_loop *gl;
    conn *next_of_user; /* the user's next conn on this loop */
    uint64_t session_id;
    uint64_t user;       /* 0 until logged in */
    uint64_t addr_key;   /* limiter key of the client's address */
    uint64_t sync_after; /* a catch-up page waits for the output to drain */
    float req_tokens;    /* the connection's request bucket */
    uint32_t req_last_ms;
    uint8_t hello;
    uint8_t authenticating;
    uint8_t has_token;
    uint8_t auth_queued; /* register/login calls in flight */
    uint8_t gone;        /* atomic: closed; its queued reads are dropped */
    /* While catching up (syncs > 0): the msgids written to this session, so
     * that a message both pushed live and read by the catch-up goes out
     * once. NULL otherwise. */
    unsigned syncs;
    u64map *sent;
    uint8_t token[PWHASH_TOKEN_RAW]; /* packed: 12 bytes less in every session */
} gw_session;

/* Past this many msgids a catch-up stops remembering: repeats are allowed
 * (clients drop them by msgid), unbounded memory is not. */
enum { GW_SENT_MAX = 4096 };

/* Acks wait this long for company before they go to the message service,
 * unless GW_ACK_BATCH of them are waiting. A client acks each message as it
 * arrives; at a few thousand messages a second each ack alone was a store
 * write of its own (an UPDATE in the cluster's database, a third of its
 * statements). Waiting costs nothing a user sees: an ack only moves the
 * read cursor, and one lost in a crash means a repeat the client drops. */
enum { GW_ACK_DELAY_US = 10000, GW_ACK_BATCH = 256 };

static void gw_ack_flush(evutil_socket_t fd, short what, void *arg);

typedef enum {
    CALL_REPLY,
    CALL_REGISTER,
    CALL_LOGIN,
    CALL_LOGOUT,
    CALL_QUIET,
    CALL_SYNC
} gw_call_kind;

/* What a register or login call carries for the limits and the audit log. */
typedef struct gw_auth {
    uint64_t fail_key; /* the account from this address (logins) */
    const char *name;  /* as the client gave it */
} gw_auth;

typedef struct gw_pending {
    conn *c;
    uint64_t req_id;
    gw_call_kind kind;
    uint8_t auth; /* holds a place in the auth queue */
    uint8_t type; /* the request's ClientFrame body, for the metrics */
    uint64_t fail_key;
    char name[]; /* auth calls only */
} gw_pending;

static gw_session *gw_sess(conn *c)
{
    return conn_udata(c);
}

/* Adds delta to the user's session count on this gateway; returns the new
 * count (the old one for delta 0). */
static unsigned gw_count(gateway *gw, uint64_t user, int delta)
{
    pthread_mutex_lock(&gw->count_lock);
    uintptr_t n = (uintptr_t)u64map_get(gw->sessions, user);
    if (delta > 0)
        n++;
    else if (delta < 0 && n > 0)
        n--;
    if (delta && n)
        u64map_put(gw->sessions, user, (void *)n);
    else if (delta)
        u64map_del(gw->sessions, user);
    pthread_mutex_unlock(&gw->count_lock);
    return (unsigned)n;
}

/* The session's user's other sessions on this gateway: on its own loop
 * first (no lock), the gateway's count only where that finds none. */
static unsigned gw_others_here(const gw_session *s);

/* Notes whether loop gl holds a session of user (bit i for loop i): a push
 * goes only to the loops that hold a recipient, not to every loop, since
 * each post wakes its loop. Loops past 63 always get every push. */
static int gw_home(gw_loop *gl, uint64_t user, int here)
{
    gateway *gw = gl->gw;
    unsigned i = (unsigned)(gl - gw->per_loop);
    int rc = 0;
    if (i >= 64)
        return 0;
    pthread_mutex_lock(&gw->count_lock);
    uintptr_t mask = (uintptr_t)u64map_get(gw->homes, user);
    if (here)
        mask |= (uintptr_t)1 << i;
    else
        mask &= ~((uintptr_t)1 << i);
    if (mask)
        rc = u64map_put(gw->homes, user, (void *)mask);
    else
        u64map_del(gw->homes, user);
    pthread_mutex_unlock(&gw->count_lock);
    return rc;
}

static long gw_bus_count(void *arg, uint64_t user)
{
    return (long)gw_count(arg, user, 0);
}

/* ---- replies ---- */

static void gw_send_error(conn *c, uint64_t id, Parley__ErrorCode code, const char *text)
{
    Parley__ServerFrame f = PARLEY__SERVER_FRAME__INIT;
    Parley__Error e = PARLEY__ERROR__INIT;
    e.code = code;
    e.text = (char *)text;
    f.id = id;
    f.error = &e;
    conn_send_msg(c, &f.base);
}

/* ---- limits ---- */

static int64_t gw_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The client's address for the log; "?" if the socket cannot say. */
static const char *gw_addr(conn *c, char *buf, size_t len)
{
    if (conn_peer_addr(c, buf, len) < 0)
        snprintf(buf, len, "?");
    return buf;
}

static uint64_t gw_ip_key(const gw_session *s, unsigned kind)
{
    return limiter_key_u64(kind, s->addr_key);
}

/* One audit line per kind of limit per second at most: a flood must not
 * become a flood of log lines. */
static void gw_audit_limit(gateway *gw, unsigned kind, const char *limit, const char *addr,
                           uint64_t user)
{
    metrics_inc(M_LIMIT_HITS, kind);
    int64_t now = gw_now_ms(), last = __atomic_load_n(&gw->audit_last[kind], __ATOMIC_RELAXED);
    if (now - last < 1000 || !__atomic_compare_exchange_n(&gw->audit_last[kind], &last, now, 0,
                                                          __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        return;
    log_audit("limit", LOG_STR("limit", limit), LOG_STR("addr", addr),
              user ? LOG_U64("user", user) : LOG_SKIP);
}

/* Answers a request over a limit: BUSY, and when to try again. */
static void gw_busy(conn *c, uint64_t id, unsigned kind, const char *limit, uint32_t retry_ms)
{
    gw_session *s = gw_sess(c);
    char addr[64], text[160];
    gw_audit_limit(s->gl->gw, kind, limit, gw_addr(c, addr, sizeof(addr)), s->user);
    if (retry_ms < 1000)
        snprintf(text, sizeof(text), "too many %s; try again in %u ms", limit, retry_ms);
    else
        snprintf(text, sizeof(text), "too many %s; try again in %.1f s", limit, retry_ms / 1000.0);
    Parley__ServerFrame f = PARLEY__SERVER_FRAME__INIT;
    Parley__Error e = PARLEY__ERROR__INIT;
    e.code = PARLEY__ERROR_CODE__BUSY;
    e.text = text;
    e.retry_after_ms = retry_ms ? retry_ms : 1;
    f.id = id;
    f.error = &e;
    conn_send_msg(c, &f.base);
}

/* The connection's own request bucket (its loop's thread only, so no
 * lock): cost tokens, refilled at req_rate a second up to twice that. */
static int gw_req_take(gw_session *s, float cost, uint32_t *retry_ms)
{
    unsigned rate = s->gl->gw->cfg.abuse.req_rate;
    if (!rate)
        return 0;
    float burst = 2.0f * (float)rate;
    uint32_t now = (uint32_t)gw_now_ms();
    s->req_tokens += (float)(uint32_t)(now - s->req_last_ms) * (float)rate / 1000.0f;
    if (s->req_tokens > burst)
        s->req_tokens = burst;
    s->req_last_ms = now;
    if (s->req_tokens >= cost) {
        s->req_tokens -= cost;
        return 0;
    }
    *retry_ms = (uint32_t)((cost - s->req_tokens) * 1000.0f / (float)rate) + 1;
    return -1;
}

/* Takes a place in the auth queue (register, login, resume): a few per
 * connection, per address and in all, so that nobody's flood is everyone's
 * wait. -1 (and BUSY sent) if there is none. */
static int gw_auth_admit(conn *c, uint64_t id)
{
    gw_session *s = gw_sess(c);
    gateway *gw = s->gl->gw;
    const gateway_abuse *a = &gw->cfg.abuse;
    if (a->auth_per_conn && s->auth_queued >= a->auth_per_conn) {
        gw_busy(c, id, LIM_AUTHQ, "login requests on this connection", 1000);
        return -1;
    }
    if (s->auth_queued == UINT8_MAX) {
        gw_busy(c, id, LIM_AUTHQ, "login requests on this connection", 1000);
        return -1;
    }
    unsigned total = __atomic_add_fetch(&gw->auth_queued, 1, __ATOMIC_RELAXED);
    if (a->auth_total && total > a->auth_total) {
        __atomic_sub_fetch(&gw->auth_queued, 1, __ATOMIC_RELAXED);
        gw_busy(c, id, LIM_AUTHQ, "login requests on this server", 1000);
        return -1;
    }
    if (limiter_count(gw->lim, gw_ip_key(s, LIM_AUTHQ), +1, a->auth_per_ip) < 0) {
        __atomic_sub_fetch(&gw->auth_queued, 1, __ATOMIC_RELAXED);
        gw_busy(c, id, LIM_AUTHQ, "login requests from your address", 1000);
        return -1;
    }
    s->auth_queued++;
    return 0;
}

static void gw_auth_release(gw_session *s)
{
    gateway *gw = s->gl->gw;
    s->auth_queued--;
    __atomic_sub_fetch(&gw->auth_queued, 1, __ATOMIC_RELAXED);
    limiter_count(gw->lim, gw_ip_key(s, LIM_AUTHQ), -1, 0);
}

/* The key of an account (as the client named it) from the client's address:
 * wrong passwords slow down that pair only, never the owner elsewhere. */
static uint64_t gw_fail_key(const gw_session *s, const Parley__Login *r)
{
    uint8_t buf[8 + 8 + 4 * 32 + 1];
    size_t n = strlen(r->name);
    memcpy(buf, &s->addr_key, 8);
    if (r->user_id || n > sizeof(buf) - 16) {
        memcpy(buf + 8, &r->user_id, 8);
        n = 0;
    } else {
        memset(buf + 8, 0, 8);
        memcpy(buf + 16, r->name, n);
    }
    return limiter_key(LIM_FAIL_PAIR, buf, (unsigned)(16 + n));
}

/* ---- the session table of a loop ---- */

static void gw_session_add(conn *c, uint64_t user)
{
    gw_session *s = gw_sess(c);
    s->user = user;
    s->next_of_user = u64map_get(s->gl->users, user);
    if (u64map_put(s->gl->users, user, c) < 0) {
        s->user = 0;
        conn_close(c, "out of memory");
        return;
    }
    gw_count(s->gl->gw, user, +1);
    metrics_gauge_add(M_SESSIONS, conn_tls(c) != NULL, 1);
    bus_presence_add(s->gl->gw->bus, user, s->gl->gw->cfg.gateway_id);
    /* A session its loop's pushes would miss is no session: the client
     * logs in again and catches up. */
    if (gw_home(s->gl, user, 1) < 0)
        conn_close(c, "out of memory");
}

static unsigned gw_others_here(const gw_session *s)
{
    conn *head = u64map_get(s->gl->users, s->user);
    if (head && (gw_sess(head) != s || gw_sess(head)->next_of_user))
        return 1;
    if (s->gl->gw->nloops == 1)
        return 0; /* this loop's list was all of them: no lock per send */
    unsigned n = gw_count(s->gl->gw, s->user, 0);
    return n > 0 ? n - 1 : 0;
}

/* 1 if msgid already went to this session during its catch-up (drop this
 * copy); else notes it and returns 0. */
static int gw_sent_before(gw_session *s, uint64_t msgid)
{
    if (!s->sent || !msgid)
        return 0;
    if (u64map_get(s->sent, msgid))
        return 1;
    if (u64map_size(s->sent) < GW_SENT_MAX)
        u64map_put(s->sent, msgid, (void *)1); /* on OOM: a repeat at worst */
    return 0;
}

/* A catch-up chain ended (its last page, or a failure). */
static void gw_sync_end(gw_session *s)
{
    if (s->syncs && --s->syncs == 0) {
        metrics_gauge_add(M_CATCHUP_SESSIONS, 0, -1);
        u64map_free(s->sent);
        s->sent = NULL;
    }
}

static void gw_session_remove(conn *c)
{
    gw_session *s = gw_sess(c);
    u64map_free(s->sent);
    s->sent = NULL;
    if (s->syncs)
        metrics_gauge_add(M_CATCHUP_SESSIONS, 0, -1);
    s->syncs = 0;
    if (!s->user)
        return;
    conn **pp = NULL, *head = u64map_get(s->gl->users, s->user);
    if (head == c) {
        if (s->next_of_user)
            u64map_put(s->gl->users, s->user, s->next_of_user);
        else
            u64map_del(s->gl->users, s->user);
    } else {
        for (conn *p = head; p; p = gw_sess(p)->next_of_user) {
            pp = &gw_sess(p)->next_of_user;
            if (*pp == c) {
                *pp = s->next_of_user;
                break;
            }
        }
    }
    s->next_of_user = NULL;
    gw_count(s->gl->gw, s->user, -1);
    if (!u64map_get(s->gl->users, s->user))
        gw_home(s->gl, s->user, 0);
    metrics_gauge_add(M_SESSIONS, conn_tls(c) != NULL, -1);
    bus_presence_remove(s->gl->gw->bus, s->user, s->gl->gw->cfg.gateway_id);
    /* The session's acks go before it is gone: its next login then
     * catches up from where it stopped reading. */
    if (s->gl->nacks)
        gw_ack_flush(-1, 0, s->gl);
}

/* ---- calls into the services ---- */

static void gw_call_done(const ProtobufCMessage *msg, void *data);

/* auth: a register or login that holds a place in the auth queue (given
 * back when the call completes), NULL for any other call. */
static void gw_call_ex(conn *c, ProtobufCService *svc, unsigned method, gw_call_kind kind,
                       Parley__ClientFrame *frame, uint64_t key, uint64_t after,
                       unsigned local_sessions, uint64_t ref, const gw_auth *auth)
{
    gw_session *s = gw_sess(c);
    size_t nlen = auth && auth->name ? strnlen(auth->name, 200) : 0;
    gw_pending *call = malloc(sizeof(*call) + (auth ? nlen + 1 : 0));
    if (!call) {
        if (auth)
            gw_auth_release(s);
        gw_send_error(c, frame->id, PARLEY__ERROR_CODE__INTERNAL, "out of memory");
        return;
    }
    call->c = c;
    call->req_id = frame->id;
    call->kind = kind;
    call->type = (uint8_t)frame->body_case;
    call->auth = auth != NULL;
    call->fail_key = auth ? auth->fail_key : 0;
    if (auth) {
        memcpy(call->name, auth->name ? auth->name : "", nlen);
        call->name[nlen] = '\0';
    }
    conn_ref(c);
    conn_inflight_inc(c);

    Parley__Caller caller = PARLEY__CALLER__INIT;
    char addr[64] = "";
    caller.user_id = s->user;
    caller.session_id = s->session_id;
    caller.gateway_id = s->gl->gw->cfg.gateway_id;
    caller.local_sessions = local_sessions;
    /* The user service logs where logins come from. */
    if (svc == s->gl->gw->user && conn_is_open(c))
        gw_addr(c, addr, sizeof(addr));
    caller.addr = addr;
    Parley__Call in = PARLEY__CALL__INIT;
    in.caller = &caller;
    in.frame = frame;
    in.key = key;
    in.after_msgid = after;
    in.ref = ref;
    svc->invoke(svc, method, &in.base, gw_call_done, call);
}

static void gw_call(conn *c, ProtobufCService *svc, unsigned method, gw_call_kind kind,
                    Parley__ClientFrame *frame, uint64_t key, uint64_t after)
{
    gw_call_ex(c, svc, method, kind, frame, key, after, 0, 0, NULL);
}

/* Asks for the messages above the session's cursors, after msgid `after`
 * (0: a new catch-up, whose pages follow one another). */
static void gw_sync(conn *c, uint64_t after)
{
    gw_session *s = gw_sess(c);
    if (!after) {
        if (++s->syncs == 1)
            metrics_gauge_add(M_CATCHUP_SESSIONS, 0, 1);
        if (!s->sent)
            s->sent = u64map_new(); /* NULL on OOM: repeats are allowed */
    }
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    gw_call(c, gw_sess(c)->gl->gw->message, MSG_SYNC, CALL_SYNC, &f, 0, after);
}

static const conn_handler gw_handler;

static void gw_resync_conn(conn *c, void *arg)
{
    /* The loop's RPC connections are not ours to touch. */
    if (conn_get_handler(c) == &gw_handler && gw_sess(c)->user)
        gw_sync(c, 0);
}

/* The end of a register or login call, whether or not its connection is
 * still open: give back its place in the queue, count a wrong password
 * against that account from that address, and write the audit line. */
static void gw_auth_done(conn *c, gw_pending *call, const Parley__Result *res)
{
    gw_session *s = gw_sess(c);
    gateway *gw = s->gl->gw;
    const gateway_abuse *a = &gw->cfg.abuse;
    gw_auth_release(s);
    const Parley__ServerFrame *f = res ? res->frame : NULL;
    if (!f)
        return;
    char addr[64];
    gw_addr(c, addr, sizeof(addr));
    if (call->kind == CALL_REGISTER) {
        metrics_add(M_REGISTRATIONS, 0, 0, f->body_case == PARLEY__SERVER_FRAME__BODY_REGISTER_OK);
        if (f->body_case == PARLEY__SERVER_FRAME__BODY_REGISTER_OK)
            log_audit("register", LOG_U64("user", f->register_ok->user_id),
                      LOG_STR("name", call->name), LOG_STR("addr", addr));
        return;
    }
    if (f->body_case == PARLEY__SERVER_FRAME__BODY_LOGIN_OK && f->login_ok->user) {
        if (call->fail_key)
            limiter_fail_clear(gw->lim, call->fail_key);
        metrics_inc(M_LOGINS, 0);
        log_audit("login", LOG_U64("user", f->login_ok->user->id), LOG_STR("addr", addr),
                  call->fail_key ? LOG_SKIP : LOG_U64("resume", 1));
        return;
    }
    if (!f->error || f->error->code != PARLEY__ERROR_CODE__UNAUTHENTICATED)
        return;
    metrics_inc(M_LOGINS, 1);
    if (!call->fail_key) {
        log_audit("login_failed", LOG_U64("resume", 1), LOG_STR("addr", addr));
        return;
    }
    int64_t now = limiter_now_ms();
    uint32_t retry;
    limiter_take(gw->lim, gw_ip_key(s, LIM_FAIL_IP), a->fail_rate / 60.0, a->fail_rate, now,
                 &retry);
    uint32_t wait = a->fail_free || a->fail_max_delay_s
                        ? limiter_fail_note(gw->lim, call->fail_key, a->fail_free,
                                            a->fail_max_delay_s * 1000u, now)
                        : 0;
    log_audit("login_failed", LOG_STR("name", call->name), LOG_STR("addr", addr));
    if (wait)
        log_audit("login_delayed", LOG_STR("name", call->name), LOG_STR("addr", addr),
                  LOG_U64("wait_ms", wait));
}

static void gw_login_done(conn *c, gw_pending *call, const Parley__Result *res)
{
    gw_session *s = gw_sess(c);
    s->authenticating = 0;
    const Parley__ServerFrame *f = res->frame;
    /* A reply from another node is checked before it is believed: a
     * LoginOk without its user or token logs nobody in. */
    if (f->body_case == PARLEY__SERVER_FRAME__BODY_LOGIN_OK && !f->error && !s->user &&
        f->login_ok->user && f->login_ok->token) {
        const Parley__LoginOk *ok = f->login_ok;
        s->has_token = pwhash_token_pack(ok->token, s->token) == 0;
        gw_session_add(c, ok->user->id);
        conn_set_deadline(c, 0);
        conn_send_msg(c, &f->base);
        /* Registered first, then caught up: a message stored in between
         * arrives twice at worst (the client drops repeats by msgid),
         * never not at all. */
        if (conn_is_open(c))
            gw_sync(c, 0);
        return;
    }
    conn_send_msg(c, &f->base);
}

/* A login that succeeded after its client left: the friends were told
 * "online", so tell them "offline" unless another session remains. */
static void gw_login_orphaned(conn *c, const Parley__Result *res)
{
    gw_session *s = gw_sess(c);
    const Parley__ServerFrame *f = res ? res->frame : NULL;
    if (!f || f->body_case != PARLEY__SERVER_FRAME__BODY_LOGIN_OK || !f->login_ok->user || s->user)
        return;
    Parley__ClientFrame none = PARLEY__CLIENT_FRAME__INIT;
    s->user = f->login_ok->user->id;
    gw_call_ex(c, s->gl->gw->user, USER_LOGOUT, CALL_QUIET, &none, 0, 0,
               gw_count(s->gl->gw, s->user, 0), 0, NULL);
    s->user = 0;
}

int gateway_call_gone(void *closure_data)
{
    gw_pending *call = closure_data;
    return call && __atomic_load_n(&gw_sess(call->c)->gone, __ATOMIC_ACQUIRE);
}

static void gw_call_done(const ProtobufCMessage *msg, void *data)
{
    gw_pending *call = data;
    conn *c = call->c;
    const Parley__Result *res = (const Parley__Result *)msg;
    conn_inflight_dec(c);
    if (call->kind != CALL_QUIET && call->kind != CALL_SYNC)
        metrics_add(M_REQUESTS, call->type,
                    !res || !res->frame ? PARLEY__ERROR_CODE__UNAVAILABLE
                    : res->frame->error ? res->frame->error->code
                                        : 0,
                    1);
    if (call->auth)
        gw_auth_done(c, call, res);
    if (!conn_is_open(c)) {
        if (call->kind == CALL_LOGIN)
            gw_login_orphaned(c, res);
        goto out;
    }
    if (!res || !res->frame) {
        if (call->kind == CALL_LOGIN)
            gw_sess(c)->authenticating = 0;
        if (call->kind != CALL_QUIET && call->kind != CALL_SYNC)
            gw_send_error(c, call->req_id, PARLEY__ERROR_CODE__UNAVAILABLE,
                          "service unavailable, try again");
        if (call->kind == CALL_SYNC) {
            gw_sync_end(gw_sess(c));
            if (!res)
                conn_close(c, "catch-up failed");
        }
        goto out;
    }
    res->frame->id = call->req_id;
    switch (call->kind) {
    case CALL_REPLY:
    case CALL_REGISTER:
    case CALL_LOGOUT:
        conn_send_msg(c, &res->frame->base);
        break;
    case CALL_LOGIN:
        gw_login_done(c, call, res);
        break;
    case CALL_SYNC: {
        if (res->frame->error) {
            /* Without the catch-up the client would silently miss messages. */
            log_warn("catch-up for user %llu failed: %s", (unsigned long long)gw_sess(c)->user,
                     res->frame->error->text);
            conn_close(c, "catch-up failed");
            break;
        }
        Parley__ServerFrame f = PARLEY__SERVER_FRAME__INIT;
        f.body_case = PARLEY__SERVER_FRAME__BODY_MESSAGE;
        for (size_t i = 0; i < res->n_messages && conn_is_open(c); i++) {
            if (gw_sent_before(gw_sess(c), res->messages[i]->msgid))
                continue;
            f.message = res->messages[i];
            conn_send_msg(c, &f.base);
            metrics_inc(M_DELIVERIES, 1);
        }
        if (res->more && res->n_messages && conn_is_open(c)) {
            uint64_t after = res->messages[res->n_messages - 1]->msgid;
            /* The next page only once this one is mostly read: a slow
             * reader catches up at its own pace, however large its backlog,
             * instead of being cut off for a full output queue. */
            if (conn_out_pending(c) > gw_sess(c)->gl->gw->cfg.limits.low_water) {
                gw_sess(c)->sync_after = after;
                conn_want_drain(c);
            } else {
                gw_sync(c, after);
            }
        } else {
            gw_sync_end(gw_sess(c));
        }
        break;
    }
    case CALL_QUIET:
        break;
    }
out:
    conn_unref(c);
    free(call);
}

/* ---- requests ---- */

static uint64_t gw_ack_key(uint64_t user, uint64_t conv)
{
    return (user * 0x9E3779B97F4A7C15ULL ^ conv * 0xC2B2AE3D27D4EB4FULL) | 1;
}

/* Keeps the highest ack per (user, conversation) for up to GW_ACK_DELAY_US:
 * a client acknowledging every message costs one store write per batch,
 * not one per message. */
static void gw_ack_add(gw_loop *gl, uint64_t user, uint64_t conv, uint64_t seq)
{
    uint64_t key = gw_ack_key(user, conv);
    uintptr_t at = (uintptr_t)u64map_get(gl->ack_index, key);
    if (at && gl->acks[at - 1].user == user && gl->acks[at - 1].conv == conv) {
        if (gl->acks[at - 1].seq < seq)
            gl->acks[at - 1].seq = seq;
        return;
    }
    if (gl->nacks == gl->cap_acks) {
        size_t cap = gl->cap_acks ? gl->cap_acks * 2 : 64;
        Parley__Cursor *a = realloc(gl->acks, cap * sizeof(*a));
        if (!a)
            return; /* an ack lost costs a repeat delivery, nothing more */
        gl->acks = a;
        gl->cap_acks = cap;
    }
    Parley__Cursor *cur = &gl->acks[gl->nacks++];
    parley__cursor__init(cur);
    cur->user = user;
    cur->conv = conv;
    cur->seq = seq;
    if (!at)
        u64map_put(gl->ack_index, key, (void *)(uintptr_t)gl->nacks);
    if (gl->nacks == 1) {
        struct timeval tv = {0, GW_ACK_DELAY_US};
        event_add(gl->ack_flush, &tv);
    } else if (gl->nacks == GW_ACK_BATCH) {
        event_active(gl->ack_flush, EV_TIMEOUT, 0);
    }
}

static void gw_ack_done(const ProtobufCMessage *msg, void *data)
{
    (void)msg;
    (void)data;
}

static void gw_ack_flush(evutil_socket_t fd, short what, void *arg)
{
    gw_loop *gl = arg;
    (void)fd;
    (void)what;
    event_del(gl->ack_flush);
    if (!gl->nacks)
        return;
    Parley__Cursor **list = malloc(gl->nacks * sizeof(*list));
    if (!list)
        abort();
    for (size_t i = 0; i < gl->nacks; i++)
        list[i] = &gl->acks[i];
    Parley__Caller caller = PARLEY__CALLER__INIT;
    caller.gateway_id = gl->gw->cfg.gateway_id;
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    Parley__Call in = PARLEY__CALL__INIT;
    in.caller = &caller;
    in.frame = &f;
    in.acks = list;
    in.n_acks = gl->nacks;
    gl->gw->message->invoke(gl->gw->message, MSG_ACK, &in.base, gw_ack_done, NULL);
    free(list);
    gl->nacks = 0;
    u64map_clear(gl->ack_index);
}

/* A fresh idempotency reference for a send: a node that fails mid-call can
 * then be retried on another without storing the message twice. 0 (none)
 * when the service is in this process. */
static uint64_t gw_ref(gw_loop *gl)
{
    if (!gl->gw->cfg.send_refs)
        return 0;
    uint64_t x = gl->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    gl->rng = x;
    return x | 1;
}

static void gw_hello(conn *c, const Parley__ClientFrame *f)
{
    gw_session *s = gw_sess(c);
    if (f->hello->version != PROTOCOL_VERSION) {
        char text[96];
        snprintf(text, sizeof(text), "protocol version %u is not supported (this server speaks %d)",
                 f->hello->version, PROTOCOL_VERSION);
        gw_send_error(c, f->id, PARLEY__ERROR_CODE__UNSUPPORTED, text);
        conn_close_after_flush(c, "unsupported protocol version");
        return;
    }
    s->hello = 1;
    /* Now the clock for logging in runs; a second hello restarts nothing. */
    if (!s->user)
        conn_set_deadline(c, s->gl->gw->cfg.abuse.login_timeout_s);
    Parley__ServerFrame out = PARLEY__SERVER_FRAME__INIT;
    Parley__HelloOk ok = PARLEY__HELLO_OK__INIT;
    ok.version = PROTOCOL_VERSION;
    ok.server = "parleyd/0.1";
    ok.max_frame = (uint32_t)s->gl->gw->cfg.limits.max_frame;
    ok.idle_timeout_ms = s->gl->gw->cfg.limits.idle_timeout_s * 1000;
    out.id = f->id;
    out.body_case = PARLEY__SERVER_FRAME__BODY_HELLO_OK;
    out.hello_ok = &ok;
    conn_send_msg(c, &out.base);
}

static void gw_logout(conn *c, Parley__ClientFrame *f)
{
    gw_session *s = gw_sess(c);
    gateway *gw = s->gl->gw;
    /* Stop counting the session first, so the service sees whether this
     * was the user's last one. */
    gw_session_remove(c);
    char token[PWHASH_TOKEN_LEN + 1] = "";
    if (s->has_token)
        pwhash_token_unpack(s->token, token);
    f->logout->token = token;
    gw_call_ex(c, gw->user, USER_LOGOUT, CALL_LOGOUT, f, 0, 0, gw_count(gw, s->user, 0), 0, NULL);
    s->user = 0;
    s->has_token = 0;
    memset(s->token, 0, sizeof(s->token));
    /* Logged out, the connection has the login timeout again to log in. */
    conn_set_deadline(c, gw->cfg.abuse.login_timeout_s);
}

static void gw_on_frame(conn *c, const uint8_t *payload, size_t len)
{
    gw_session *s = gw_sess(c);
    gateway *gw = s->gl->gw;
    arena *a = s->gl->scratch;
    arena_reset(a);
    Parley__ClientFrame *f = parley__client_frame__unpack(arena_pb(a), len, payload);
    if (!f) {
        gw_send_error(c, 0, PARLEY__ERROR_CODE__BAD_REQUEST, "malformed frame");
        return;
    }
    /* Every string with its length: protobuf-c's C strings end at the first
     * NUL, and "visible\0hidden" must not be stored as "visible". */
    const char *bad;
    if (pbcheck_strings(&parley__client_frame__descriptor, payload, len, &bad) < 0) {
        char text[128];
        snprintf(text, sizeof(text), "%s is not valid UTF-8 text (or contains NUL)", bad);
        if (f->body_case != PARLEY__CLIENT_FRAME__BODY_ACK)
            gw_send_error(c, f->id, PARLEY__ERROR_CODE__BAD_REQUEST, text);
        return;
    }
    /* Acks come with every message received and cost a coalesced cursor
     * move: a tenth of a request. Past the limit an ack is dropped (the
     * message comes again later), not answered. */
    uint32_t retry;
    int is_ack = f->body_case == PARLEY__CLIENT_FRAME__BODY_ACK;
    /* A file moves in chunks: each is a quarter of a request, so that a
     * 25 MiB file in 64 KiB frames is not held to 100 frames a second. */
    int is_chunk = f->body_case == PARLEY__CLIENT_FRAME__BODY_FILE_CHUNK ||
                   f->body_case == PARLEY__CLIENT_FRAME__BODY_FILE_GET;
    if (gw_req_take(s, is_ack ? 0.1f : is_chunk ? 0.25f : 1.0f, &retry) < 0) {
        if (!is_ack)
            gw_busy(c, f->id, LIM_REQ, "requests", retry);
        return;
    }
    if (f->body_case == PARLEY__CLIENT_FRAME__BODY_HELLO) {
        if (s->hello) {
            gw_send_error(c, f->id, PARLEY__ERROR_CODE__BAD_REQUEST, "hello was already sent");
            return;
        }
        gw_hello(c, f);
        return;
    }
    if (!s->hello) {
        gw_send_error(c, f->id, PARLEY__ERROR_CODE__BAD_REQUEST, "send hello first");
        return;
    }
    int need_user = 1;
    switch (f->body_case) {
    case PARLEY__CLIENT_FRAME__BODY_PING:
    case PARLEY__CLIENT_FRAME__BODY_REG:
    case PARLEY__CLIENT_FRAME__BODY_LOGIN:
    case PARLEY__CLIENT_FRAME__BODY_RESUME:
        need_user = 0;
        break;
    case PARLEY__CLIENT_FRAME__BODY_ACK:
        if (!s->user)
            return; /* acks get no reply, not even an error */
        break;
    case PARLEY__CLIENT_FRAME__BODY__NOT_SET:
        gw_send_error(c, f->id, PARLEY__ERROR_CODE__UNSUPPORTED, "unknown request type");
        return;
    default:
        break;
    }
    if (need_user && !s->user) {
        gw_send_error(c, f->id, PARLEY__ERROR_CODE__UNAUTHENTICATED, "log in first");
        return;
    }
    /* Messages per user, whichever of its sessions they come from. */
    if (f->body_case == PARLEY__CLIENT_FRAME__BODY_SEND_DIRECT ||
        f->body_case == PARLEY__CLIENT_FRAME__BODY_SEND_GROUP) {
        const gateway_abuse *ab = &gw->cfg.abuse;
        if (limiter_take(gw->lim, limiter_key_u64(LIM_MSG, s->user), ab->msg_rate,
                         2.0 * ab->msg_rate, limiter_now_ms(), &retry) < 0) {
            gw_busy(c, f->id, LIM_MSG, "messages", retry);
            return;
        }
    }
    /* A history page reads up to 100 messages on the store worker that
     * stores everyone's sends: per user, over all its sessions. */
    if (f->body_case == PARLEY__CLIENT_FRAME__BODY_HISTORY ||
        f->body_case == PARLEY__CLIENT_FRAME__BODY_FIND) {
        const gateway_abuse *ab = &gw->cfg.abuse;
        if (limiter_take(gw->lim, limiter_key_u64(LIM_HIST, s->user), ab->history_rate,
                         2.0 * ab->history_rate, limiter_now_ms(), &retry) < 0) {
            gw_busy(c, f->id, LIM_HIST, "history requests", retry);
            return;
        }
    }
    switch (f->body_case) {
    case PARLEY__CLIENT_FRAME__BODY_PING: {
        Parley__ServerFrame out = PARLEY__SERVER_FRAME__INIT;
        Parley__Pong pong = PARLEY__PONG__INIT;
        pong.nonce = f->ping->nonce;
        out.id = f->id;
        out.body_case = PARLEY__SERVER_FRAME__BODY_PONG;
        out.pong = &pong;
        conn_send_msg(c, &out.base);
        break;
    }
    case PARLEY__CLIENT_FRAME__BODY_ACK:
        metrics_inc(M_ACKS, 0);
        gw_ack_add(s->gl, s->user, f->ack->conv, f->ack->seq);
        break;
    case PARLEY__CLIENT_FRAME__BODY_REG: {
        const gateway_abuse *ab = &gw->cfg.abuse;
        if (limiter_take(gw->lim, gw_ip_key(s, LIM_REG), ab->reg_rate / 60.0, 2.0 * ab->reg_rate,
                         limiter_now_ms(), &retry) < 0) {
            gw_busy(c, f->id, LIM_REG, "registrations from your address", retry);
            return;
        }
        if (gw_auth_admit(c, f->id) < 0)
            return;
        gw_auth au = {.name = f->reg->name};
        gw_call_ex(c, gw->user, USER_CREATE, CALL_REGISTER, f, 0, 0, 0, 0, &au);
        break;
    }
    case PARLEY__CLIENT_FRAME__BODY_LOGIN:
    case PARLEY__CLIENT_FRAME__BODY_RESUME: {
        if (s->user || s->authenticating) {
            gw_send_error(c, f->id, PARLEY__ERROR_CODE__CONFLICT,
                          s->user ? "already logged in; log out first" : "a login is in progress");
            return;
        }
        gw_auth au = {0};
        if (f->body_case == PARLEY__CLIENT_FRAME__BODY_LOGIN) {
            /* Wrong passwords: each account from each address waits longer
             * and longer, and each address has a budget of failures; the
             * owner logging in from elsewhere is not held up. Refused here,
             * before any hashing. */
            const gateway_abuse *ab = &gw->cfg.abuse;
            int64_t now = limiter_now_ms();
            au.fail_key = gw_fail_key(s, f->login);
            au.name = f->login->name;
            if (limiter_fail_check(gw->lim, au.fail_key, now, &retry) < 0) {
                gw_busy(c, f->id, LIM_FAIL_PAIR, "failed logins for this account", retry);
                return;
            }
            if (limiter_peek(gw->lim, gw_ip_key(s, LIM_FAIL_IP), ab->fail_rate / 60.0,
                             ab->fail_rate, now, &retry) < 0) {
                gw_busy(c, f->id, LIM_FAIL_IP, "failed logins from your address", retry);
                return;
            }
        }
        if (gw_auth_admit(c, f->id) < 0)
            return;
        s->authenticating = 1;
        /* Whose login this is becomes known only in the reply, so the
         * gateway's own count goes as 0: at worst a second session on this
         * gateway repeats the friends' "online" event. */
        gw_call_ex(c, gw->user,
                   f->body_case == PARLEY__CLIENT_FRAME__BODY_LOGIN ? USER_LOGIN : USER_RESUME,
                   CALL_LOGIN, f, 0, 0, 0, 0, &au);
        break;
    }
    case PARLEY__CLIENT_FRAME__BODY_LOGOUT:
        gw_logout(c, f);
        break;
    case PARLEY__CLIENT_FRAME__BODY_FRIEND_ADD:
        /* Its event is a message of the pair's conversation: the pair's key. */
        gw_call(c, gw->social, SOC_FRIEND_ADD, CALL_REPLY, f,
                key_direct(s->user, f->friend_add->user_id), 0);
        break;
    case PARLEY__CLIENT_FRAME__BODY_FRIEND_DEL:
        gw_call(c, gw->social, SOC_FRIEND_DEL, CALL_REPLY, f,
                key_direct(s->user, f->friend_del->user_id), 0);
        break;
    case PARLEY__CLIENT_FRAME__BODY_FRIEND_LIST:
        gw_call(c, gw->social, SOC_FRIEND_LIST, CALL_REPLY, f, 0, 0);
        break;
    case PARLEY__CLIENT_FRAME__BODY_WHOIS:
        gw_call(c, gw->social, SOC_WHOIS, CALL_REPLY, f, 0, 0);
        break;
    case PARLEY__CLIENT_FRAME__BODY_GROUP_CREATE:
        gw_call(c, gw->social, SOC_GROUP_CREATE, CALL_REPLY, f, 0, 0);
        break;
    case PARLEY__CLIENT_FRAME__BODY_GROUP_JOIN:
        gw_call(c, gw->social, SOC_GROUP_JOIN, CALL_REPLY, f, key_group(f->group_join->group_id),
                0);
        break;
    case PARLEY__CLIENT_FRAME__BODY_GROUP_QUIT:
        gw_call(c, gw->social, SOC_GROUP_QUIT, CALL_REPLY, f, key_group(f->group_quit->group_id),
                0);
        break;
    case PARLEY__CLIENT_FRAME__BODY_GROUP_DELETE:
        gw_call(c, gw->social, SOC_GROUP_DELETE, CALL_REPLY, f,
                key_group(f->group_delete->group_id), 0);
        break;
    case PARLEY__CLIENT_FRAME__BODY_SEND_DIRECT:
        /* One conversation, one worker: its messages are stored and pushed
         * in the order they arrive. The user's other sessions here tell the
         * service whether an own copy is wanted (none: no extra work). */
        gw_call_ex(c, gw->message, MSG_SEND_DIRECT, CALL_REPLY, f,
                   key_direct(s->user, f->send_direct->to), 0, gw_others_here(s), gw_ref(s->gl),
                   NULL);
        break;
    case PARLEY__CLIENT_FRAME__BODY_SEND_GROUP:
        gw_call_ex(c, gw->message, MSG_SEND_GROUP, CALL_REPLY, f,
                   key_group(f->send_group->group_id), 0, gw_others_here(s), gw_ref(s->gl), NULL);
        break;
    case PARLEY__CLIENT_FRAME__BODY_FIND:
        gw_call(c, gw->social, SOC_FIND, CALL_REPLY, f, 0, 0);
        break;
    case PARLEY__CLIENT_FRAME__BODY_TYPING: {
        const Parley__Typing *t = f->typing;
        uint64_t target = t->group_id ? key_group(t->group_id) : key_direct(s->user, t->peer);
        uint8_t kb[16];
        memcpy(kb, &s->user, 8);
        memcpy(kb + 8, &target, 8);
        if (limiter_take(gw->lim, limiter_key(LIM_TYPING, kb, sizeof(kb)), GW_TYPING_RATE, 1.0,
                         limiter_now_ms(), &retry) < 0) {
            gw_busy(c, f->id, LIM_HIST, "typing events", retry);
            return;
        }
        gw_call(c, gw->social, SOC_TYPING, CALL_REPLY, f, target, 0);
        break;
    }
    case PARLEY__CLIENT_FRAME__BODY_READ:
        if (limiter_take(gw->lim, limiter_key_u64(LIM_READ, s->user), GW_READ_RATE,
                         4.0 * GW_READ_RATE, limiter_now_ms(), &retry) < 0) {
            gw_busy(c, f->id, LIM_HIST, "read receipts", retry);
            return;
        }
        /* Counting the user's other sessions: they are told of the read. */
        gw_call_ex(c, gw->message, MSG_READ, CALL_REPLY, f, f->read->conv, 0, gw_others_here(s), 0,
                   NULL);
        break;
    case PARLEY__CLIENT_FRAME__BODY_HISTORY:
        gw_call(c, gw->message, MSG_HISTORY, CALL_REPLY, f, 0, 0);
        break;
    case PARLEY__CLIENT_FRAME__BODY_RECALL:
        gw_call(c, gw->message, MSG_RECALL, CALL_REPLY, f, 0, 0);
        break;
    /* Files (services/file.c). An upload's chunks are keyed by it: they run
     * in order on one worker (one node), so several may be in flight. */
    case PARLEY__CLIENT_FRAME__BODY_FILE_BEGIN:
        gw_call(c, gw->message, MSG_FILE_BEGIN, CALL_REPLY, f, key_group(s->user) ^ 2, 0);
        break;
    case PARLEY__CLIENT_FRAME__BODY_FILE_CHUNK:
        gw_call(c, gw->message, MSG_FILE_CHUNK, CALL_REPLY, f,
                key_group(f->file_chunk->upload_id) ^ 2, 0);
        break;
    case PARLEY__CLIENT_FRAME__BODY_FILE_GET:
        gw_call(c, gw->message, MSG_FILE_GET, CALL_REPLY, f, 0, 0);
        break;
    default:
        gw_send_error(c, f->id, PARLEY__ERROR_CODE__UNSUPPORTED, "unknown request type");
        break;
    }
}

static void gw_on_oversize(conn *c, size_t announced)
{
    char text[128];
    snprintf(text, sizeof(text), "frame of %zu bytes exceeds the limit of %zu bytes; closing",
             announced, gw_sess(c)->gl->gw->cfg.limits.max_frame);
    gw_send_error(c, 0, PARLEY__ERROR_CODE__TOO_LARGE, text);
}

static void gw_on_close(conn *c, const char *why)
{
    gw_session *s = gw_sess(c);
    log_debug("session %llu closed: %s", (unsigned long long)s->session_id, why);
    metrics_gauge_add(M_CONNECTIONS, conn_tls(c) != NULL, -1);
    /* Its queued reads and logins are dropped before they run. */
    __atomic_store_n(&s->gone, 1, __ATOMIC_RELEASE);
    limiter_count(s->gl->gw->lim, s->addr_key, -1, 0);
    s->sync_after = 0;
    if (!s->user)
        return;
    gw_session_remove(c);
    /* The user service sets the user offline for the friends if this was
     * the last session. The token stays valid for a reconnect. */
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    gw_call_ex(c, s->gl->gw->user, USER_LOGOUT, CALL_QUIET, &f, 0, 0,
               gw_count(s->gl->gw, s->user, 0), 0, NULL);
    s->user = 0;
}

/* Too slow to say hello or to log in: a connection that holds a slot and
 * does nothing is how a few hosts exhaust a server's descriptors. */
static void gw_on_deadline(conn *c)
{
    gw_session *s = gw_sess(c);
    gw_send_error(c, 0, PARLEY__ERROR_CODE__UNAUTHENTICATED,
                  s->hello ? "not logged in in time; closing" : "no hello in time; closing");
    conn_close_after_flush(c, s->hello ? "login timeout" : "hello timeout");
}

/* The output has drained: the catch-up's next page. */
static void gw_on_drain(conn *c)
{
    gw_session *s = gw_sess(c);
    uint64_t after = s->sync_after;
    s->sync_after = 0;
    if (after && s->user && conn_is_open(c))
        gw_sync(c, after);
}

static const conn_handler gw_handler = {
    .on_frame = gw_on_frame,
    .on_oversize = gw_on_oversize,
    .on_close = gw_on_close,
    .on_deadline = gw_on_deadline,
    .on_drain = gw_on_drain,
};

/* ---- accepting ---- */

typedef struct {
    gw_loop *gl;
    const conn_class *cls;
    int fd;
    uint64_t addr_key;
} gw_adopt;

static void gw_adopt_run(void *arg)
{
    gw_adopt *ad = arg;
    gw_loop *gl = ad->gl;
    uint64_t key = ad->addr_key;
    conn *c = conn_new(gl->l, ad->fd, ad->cls, sizeof(gw_session));
    free(ad);
    if (!c) {
        limiter_count(gl->gw->lim, key, -1, 0);
        return;
    }
    gw_session *s = gw_sess(c);
    metrics_gauge_add(M_CONNECTIONS, conn_tls(c) != NULL, 1);
    s->gl = gl;
    s->addr_key = key;
    s->session_id = __atomic_add_fetch(&gl->gw->next_session, 1, __ATOMIC_RELAXED);
    s->req_tokens = 2.0f * (float)gl->gw->cfg.abuse.req_rate;
    s->req_last_ms = (uint32_t)gw_now_ms();
    conn_set_deadline(c, gl->gw->cfg.abuse.hello_timeout_s);
}

/* The text of a socket's peer address; "?" if it has none. */
static void gw_fd_addr(int fd, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    snprintf(buf, len, "?");
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
        return;
    if (ss.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, buf, (socklen_t)len);
    else if (ss.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, buf, (socklen_t)len);
}

static void gw_accept(gateway *gw, int fd, const conn_class *cls)
{
    char addr[64];
    gw_fd_addr(fd, addr, sizeof(addr));
    uint64_t key = limiter_key(LIM_ADDR, addr, (unsigned)strlen(addr));
    if (limiter_count(gw->lim, key, +1, gw->cfg.abuse.max_conns_per_ip) < 0) {
        gw_audit_limit(gw, LIM_ADDR, "connections", addr, 0);
        close(fd);
        return;
    }
    unsigned i = __atomic_fetch_add(&gw->next_loop, 1, __ATOMIC_RELAXED) % gw->nloops;
    gw_adopt *ad = malloc(sizeof(*ad));
    if (!ad) {
        limiter_count(gw->lim, key, -1, 0);
        close(fd);
        return;
    }
    ad->gl = &gw->per_loop[i];
    ad->cls = cls;
    ad->fd = fd;
    ad->addr_key = key;
    loop_post(gw->loops[i], gw_adopt_run, ad);
}

void gateway_accept(gateway *gw, int fd)
{
    gw_accept(gw, fd, &gw->cls);
}

void gateway_accept_tls(gateway *gw, int fd)
{
    if (!gw->cls_tls.tls) {
        close(fd);
        return;
    }
    gw_accept(gw, fd, &gw->cls_tls);
}

void gateway_accept_ws(gateway *gw, int fd, int tls)
{
    if (!gw->cls_ws.ws || (tls && !gw->cls_wss.tls)) {
        close(fd);
        return;
    }
    gw_accept(gw, fd, tls ? &gw->cls_wss : &gw->cls_ws);
}

/* ---- pushes ---- */

/* A batch of pushes, shared by every loop's gw_push; the last loop done
 * frees it. */
typedef struct {
    int pending; /* loops yet to run */
    size_t n;
    bus_push *v; /* users point into the block after v */
} gw_batch;

typedef struct {
    loop_node node;
    gw_loop *gl;
    gw_batch *b;
} gw_push;

/* An own copy (BUS_OWN): the session that sent the message, which has its
 * send_ok, is skipped; the frame follows the prefix. 1 if bp is one. */
static int gw_own_copy(const bus_push *bp, uint32_t gateway_id, uint64_t *skip,
                       const uint8_t **data, size_t *len)
{
    if (bp->msgid == BUS_KICK || bp->msgid == BUS_DRAIN || !(bp->msgid & BUS_OWN) ||
        bp->frame->len < BUS_OWN_PREFIX)
        return 0;
    uint32_t gw;
    memcpy(&gw, bp->frame->data, 4);
    memcpy(skip, bp->frame->data + 4, 8);
    if (gw != gateway_id)
        *skip = 0;
    *data = bp->frame->data + BUS_OWN_PREFIX;
    *len = bp->frame->len - BUS_OWN_PREFIX;
    return 1;
}

static void gw_push_run(void *arg)
{
    gw_push *p = arg;
    gw_batch *b = p->b;
    for (size_t k = 0; k < b->n; k++) {
        const bus_push *bp = &b->v[k];
        uint64_t skip = 0;
        const uint8_t *data;
        size_t len;
        if (gw_own_copy(bp, p->gl->gw->cfg.gateway_id, &skip, &data, &len)) {
            conn *c = bp->n ? u64map_get(p->gl->users, bp->users[0]) : NULL;
            for (; c; c = gw_sess(c)->next_of_user) {
                if (gw_sess(c)->session_id == skip ||
                    gw_sent_before(gw_sess(c), bp->msgid & ~BUS_OWN))
                    continue;
                conn_send_raw(c, data, len);
                metrics_inc(M_DELIVERIES, 0);
            }
            continue;
        }
        for (size_t i = 0; i < bp->n; i++) {
            conn *c = u64map_get(p->gl->users, bp->users[i]);
            while (c) {
                conn *next = gw_sess(c)->next_of_user;
                if (bp->msgid == BUS_KICK) {
                    char addr[64];
                    log_audit("kick", LOG_U64("user", bp->users[i]),
                              LOG_STR("addr", gw_addr(c, addr, sizeof(addr))));
                    conn_send_raw(c, bp->frame->data, bp->frame->len);
                    conn_close_after_flush(c, "session ended by the server");
                } else if (!gw_sent_before(gw_sess(c), bp->msgid)) {
                    conn_send_raw(c, bp->frame->data, bp->frame->len);
                    metrics_inc(M_DELIVERIES, 0);
                }
                c = next;
            }
        }
    }
    if (__atomic_sub_fetch(&b->pending, 1, __ATOMIC_ACQ_REL) == 0) {
        for (size_t k = 0; k < b->n; k++)
            blob_unref(b->v[k].frame);
        free(b);
    }
    free(p);
}

/* Each loop holding a recipient gets the whole batch: one post per such
 * loop, whatever its size. */
static void gw_deliver(void *arg, const bus_push *pushes, size_t n)
{
    gateway *gw = arg;
    /* A drain names its gateway; its user 0 has no session to deliver to. */
    for (size_t k = 0; k < n; k++)
        if (pushes[k].msgid == BUS_DRAIN && gw->cfg.on_drain && gw->cfg.node_name &&
            pushes[k].frame->len == strlen(gw->cfg.node_name) &&
            memcmp(pushes[k].frame->data, gw->cfg.node_name, pushes[k].frame->len) == 0)
            gw->cfg.on_drain(gw->cfg.drain_arg);
    /* Only the loops holding a recipient: a session that logs in on
     * another loop after this look registered before asking for its
     * catch-up, which reads these messages, already committed. */
    uint64_t mask = 0;
    if (gw->nloops > 64) {
        mask = UINT64_MAX;
    } else {
        uint64_t all = gw->nloops == 64 ? UINT64_MAX : ((uint64_t)1 << gw->nloops) - 1;
        pthread_mutex_lock(&gw->count_lock);
        for (size_t k = 0; k < n && mask != all; k++)
            for (size_t i = 0; i < pushes[k].n && mask != all; i++)
                mask |= (uintptr_t)u64map_get(gw->homes, pushes[k].users[i]);
        pthread_mutex_unlock(&gw->count_lock);
    }
    int nposts = 0;
    for (unsigned i = 0; i < gw->nloops; i++)
        nposts += i >= 64 || (mask >> i & 1);
    if (!nposts)
        return;
    size_t nusers = 0;
    for (size_t k = 0; k < n; k++)
        nusers += pushes[k].n;
    gw_batch *b = malloc(sizeof(*b) + n * sizeof(bus_push) + nusers * sizeof(uint64_t));
    if (!b)
        abort();
    b->pending = nposts;
    b->n = n;
    b->v = (bus_push *)(b + 1);
    uint64_t *users = (uint64_t *)(b->v + n);
    for (size_t k = 0; k < n; k++) {
        memcpy(users, pushes[k].users, pushes[k].n * sizeof(*users));
        b->v[k] = (bus_push){.users = users,
                             .n = pushes[k].n,
                             .frame = blob_ref(pushes[k].frame),
                             .msgid = pushes[k].msgid};
        users += pushes[k].n;
    }
    for (unsigned i = 0; i < gw->nloops; i++) {
        if (i < 64 && !(mask >> i & 1))
            continue;
        gw_push *p = malloc(sizeof(*p));
        if (!p)
            abort();
        p->gl = &gw->per_loop[i];
        p->b = b;
        p->node.fn = gw_push_run;
        p->node.arg = p;
        loop_post_node(gw->loops[i], &p->node);
    }
}

/* After a bus outage pushes may be lost: catch every session up again. */
static void gw_resync_loop(void *arg)
{
    gw_loop *gl = arg;
    log_info("re-syncing the sessions of loop %u after a bus outage", loop_index(gl->l));
    conn_foreach(gl->l, gw_resync_conn, NULL);
}

static void gw_resync(void *arg)
{
    gateway *gw = arg;
    for (unsigned i = 0; i < gw->nloops; i++)
        loop_post(gw->loops[i], gw_resync_loop, &gw->per_loop[i]);
}

/* ---- life cycle ---- */

gateway *gateway_new(const gateway_config *cfg, loop **loops, unsigned nloops,
                     ProtobufCService *user, ProtobufCService *social, ProtobufCService *message,
                     bus *b)
{
    gateway *gw = calloc(1, sizeof(*gw));
    if (!gw)
        return NULL;
    gw->cfg = *cfg;
    gw->cls = (conn_class){.h = &gw_handler, .lim = cfg->limits};
    gw->cls_tls = (conn_class){.h = &gw_handler, .lim = cfg->limits, .tls = cfg->tls};
    gw->cls_ws = (conn_class){.h = &gw_handler, .lim = cfg->limits, .ws = cfg->ws};
    gw->cls_wss =
        (conn_class){.h = &gw_handler, .lim = cfg->limits, .tls = cfg->tls, .ws = cfg->ws};
    gw->loops = loops;
    gw->nloops = nloops;
    gw->user = user;
    gw->social = social;
    gw->message = message;
    gw->bus = b;
    pthread_mutex_init(&gw->lock, NULL);
    pthread_cond_init(&gw->cond, NULL);
    pthread_mutex_init(&gw->count_lock, NULL);
    gw->sessions = u64map_new();
    gw->homes = u64map_new();
    /* Room for every connection's address and then some; beyond, entries
     * that hold nothing are forgotten. */
    gw->lim = limiter_new(65536);
    if (!gw->sessions || !gw->homes || !gw->lim)
        goto fail;
    gw->per_loop = calloc(nloops, sizeof(*gw->per_loop));
    if (!gw->per_loop)
        goto fail;
    for (unsigned i = 0; i < nloops; i++) {
        gw_loop *gl = &gw->per_loop[i];
        gl->gw = gw;
        gl->l = loops[i];
        gl->users = u64map_new();
        gl->scratch = arena_new();
        if (!gl->users || !gl->scratch)
            goto fail;
        pwhash_random(&gl->rng, sizeof(gl->rng));
        gl->rng |= 1;
        gl->ack_index = u64map_new();
        /* A timer, at low priority: after every read of its pass. */
        gl->ack_flush = event_new(loop_base(loops[i]), -1, 0, gw_ack_flush, gl);
        if (!gl->ack_index || !gl->ack_flush)
            goto fail;
        event_priority_set(gl->ack_flush, 1);
        loop_set_udata(loops[i], gl);
    }
    bus_handler h = {.deliver = gw_deliver, .resync = gw_resync, .count = gw_bus_count, .arg = gw};
    bus_subscribe(b, cfg->gateway_id, &h);
    return gw;
fail:
    gateway_free(gw);
    return NULL;
}

static void gw_send_bye(conn *c, void *arg)
{
    gateway *gw = arg;
    Parley__ServerFrame f = PARLEY__SERVER_FRAME__INIT;
    Parley__Bye bye = PARLEY__BYE__INIT;
    bye.reason = (char *)gw->bye_reason;
    f.body_case = PARLEY__SERVER_FRAME__BODY_BYE;
    f.bye = &bye;
    conn_send_msg(c, &f.base);
}

static void gw_close_one(conn *c, void *arg)
{
    /* Only client connections: the loop may also carry RPC traffic. */
    if (conn_get_handler(c) != &gw_handler)
        return;
    gw_send_bye(c, arg);
    conn_flush_close(c, "server shutting down");
}

static void gw_close_loop(void *arg)
{
    gw_loop *gl = arg;
    gateway *gw = gl->gw;
    conn_foreach(gl->l, gw_close_one, gw);
    gw_ack_flush(-1, 0, gl);
    pthread_mutex_lock(&gw->lock);
    gw->closed_loops++;
    pthread_cond_broadcast(&gw->cond);
    pthread_mutex_unlock(&gw->lock);
}

void gateway_close_all(gateway *gw, const char *reason)
{
    gw->bye_reason = reason;
    gw->closed_loops = 0;
    for (unsigned i = 0; i < gw->nloops; i++)
        loop_post(gw->loops[i], gw_close_loop, &gw->per_loop[i]);
    pthread_mutex_lock(&gw->lock);
    while (gw->closed_loops < gw->nloops)
        pthread_cond_wait(&gw->cond, &gw->lock);
    pthread_mutex_unlock(&gw->lock);
}

void gateway_free(gateway *gw)
{
    if (!gw)
        return;
    for (unsigned i = 0; gw->per_loop && i < gw->nloops; i++) {
        gw_loop *gl = &gw->per_loop[i];
        u64map_free(gl->users);
        arena_free(gl->scratch);
        u64map_free(gl->ack_index);
        free(gl->acks);
        if (gl->ack_flush)
            event_free(gl->ack_flush);
    }
    free(gw->per_loop);
    u64map_free(gw->sessions);
    u64map_free(gw->homes);
    limiter_free(gw->lim);
    pthread_mutex_destroy(&gw->count_lock);
    pthread_mutex_destroy(&gw->lock);
    pthread_cond_destroy(&gw->cond);
    free(gw);
}
