/*
 * sess: see sess.h.
 */
#include "client/sess.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/frame.h"

enum { SESS_PROTOCOL_VERSION = 1 };
#ifdef PARLEY_VERSION
#define SESS_CLIENT_NAME "parley/" PARLEY_VERSION
#else
#define SESS_CLIENT_NAME "parley"
#endif

int64_t sess_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sess_init(sess *s, const char *host, const char *port, bool reconnect, out_ctx *o)
{
    memset(s, 0, sizeof(*s));
    s->host = host;
    s->port = port;
    s->reconnect = reconnect;
    s->out = o;
    conn_init(&s->conn);
    seen_init(&s->seen);
    s->next_id = 1;
    s->give_up_ms = SESS_GIVE_UP_MS;
    srand((unsigned)time(NULL) ^ (unsigned)sess_clock_ms());
    if (getrandom(&s->cmid_salt, sizeof(s->cmid_salt), 0) != sizeof(s->cmid_salt))
        s->cmid_salt = (uint64_t)rand() ^ (uint64_t)getpid() << 11;
    s->cmid_salt &= (1u << 22) - 1;
}

/* A new client_msg_id: the time in milliseconds (since 1970) in the top 42
 * bits, below it a random start drawn once per process, and always above
 * the last one. Time-ordered, the ids of everyone's sends meet at one end
 * of the server's index (SQLite writes a page for a commit, not a page per
 * sender in it); the random bits keep two processes of one user apart
 * (they would have to draw the same 22 bits and send in the same
 * millisecond), and a CONFLICT says so if they ever meet. Never 0. */
static uint64_t sess_new_cmid(sess *s)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    uint64_t id = ms << 22 | s->cmid_salt;
    if (id <= s->last_cmid)
        id = s->last_cmid + 1;
    s->last_cmid = id;
    return id ? id : sess_new_cmid(s);
}

static void sess_forget_login(sess *s)
{
    s->logged_in = false;
    s->me = 0;
    s->out->me = 0;
    free(s->name);
    s->name = NULL;
    free(s->token);
    s->token = NULL;
}

static void sess_file_free(sess_file *f);
static void sess_xfer_end(sess *s);

void sess_free(sess *s)
{
    sess_forget_login(s);
    conn_free(&s->conn);
    seen_free(&s->seen);
    sess_xfer_end(s);
    for (size_t i = 0; i < s->npend; i++) {
        free(s->pend[i].body);
        sess_file_free(s->pend[i].file);
    }
    free(s->pend);
    free(s->acks);
    s->pend = NULL;
    s->acks = NULL;
}

void sess_set_identity_cb(sess *s, sess_identity_fn fn, void *ctx)
{
    s->on_identity = fn;
    s->identity_ctx = ctx;
}

static void sess_identity_changed(sess *s)
{
    if (s->on_identity)
        s->on_identity(s->identity_ctx);
}

bool sess_up(const sess *s)
{
    return s->up;
}

size_t sess_busy(const sess *s)
{
    if (s->xfer)
        return s->npend + 1;
    return s->npend;
}

size_t sess_unconfirmed(const sess *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->npend; i++)
        n += s->pend[i].cmid != 0;
    return n;
}

bool sess_can_queue(const sess *s)
{
    return !s->up && s->reconnect && !s->done && s->logged_in && s->token;
}

static bool sess_is_send(cmd_kind kind)
{
    return kind == CMD_CHAT || kind == CMD_GROUPCHAT;
}

/* A send to a user, not a group. */
static bool sess_is_direct(cmd_kind kind)
{
    return kind == CMD_CHAT || kind == CMD_SENDFILE;
}

/* ---- sending ---- */

static int sess_queue(sess *s, Parley__ClientFrame *f)
{
    if (conn_send(&s->conn, f) < 0)
        return -1;
    s->last_tx = sess_clock_ms();
    return 0;
}

static void sess_note_ack(sess *s, uint64_t conv, uint64_t seq)
{
    if (conv == 0 || seq == 0)
        return;
    for (size_t i = 0; i < s->nacks; i++) {
        if (s->acks[i].conv == conv) {
            if (seq > s->acks[i].shown)
                s->acks[i].shown = seq;
            s->acks_due = true;
            return;
        }
    }
    if (s->nacks == s->acks_cap) {
        size_t cap = s->acks_cap ? s->acks_cap * 2 : 8;
        sess_ack *a = realloc(s->acks, cap * sizeof(*a));
        if (!a)
            return; /* the server will re-send; the duplicate is dropped */
        s->acks = a;
        s->acks_cap = cap;
    }
    s->acks[s->nacks].conv = conv;
    s->acks[s->nacks].shown = seq;
    s->acks[s->nacks].acked = 0;
    s->nacks++;
    s->acks_due = true;
}

/* Queues one Ack per conversation with messages printed since its last
 * ack. A duplicate at or below the acked seq still gets an ack: the server
 * sent it again because it missed ours. */
static void sess_send_acks(sess *s)
{
    if (!s->acks_due || !conn_is_open(&s->conn))
        return;
    for (size_t i = 0; i < s->nacks; i++) {
        sess_ack *e = &s->acks[i];
        if (e->shown == 0)
            continue;
        Parley__Ack ack = PARLEY__ACK__INIT;
        Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
        ack.conv = e->conv;
        ack.seq = e->shown > e->acked ? e->shown : e->acked;
        f.id = 0;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_ACK;
        f.ack = &ack;
        if (sess_queue(s, &f) == 0) {
            e->acked = ack.seq;
            e->shown = 0;
            if (s->auto_read && s->logged_in) {
                /* Shown on a terminal: read. Its reply (done, or BUSY past
                 * the rate, when the next one says as much) is not awaited. */
                Parley__Read rd = PARLEY__READ__INIT;
                rd.conv = ack.conv;
                rd.seq = ack.seq;
                f.id = s->next_id++;
                f.body_case = PARLEY__CLIENT_FRAME__BODY_READ;
                f.read = &rd;
                if (sess_queue(s, &f) == 0)
                    out_mark_read(s->out, rd.conv, rd.seq);
            }
        }
    }
    s->acks_due = false;
}

void sess_typing(sess *s, uint64_t peer, uint64_t group)
{
    int64_t now = sess_clock_ms();
    if (!s->up || !s->logged_in || (!peer && !group))
        return;
    if (peer == s->typing_peer && group == s->typing_group &&
        now - s->typing_ms < SESS_TYPING_EVERY_MS)
        return;
    Parley__Typing t = PARLEY__TYPING__INIT;
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    t.peer = peer;
    t.group_id = group;
    /* An id no pending request has: its reply (done or BUSY) is dropped. */
    f.id = s->next_id++;
    f.body_case = PARLEY__CLIENT_FRAME__BODY_TYPING;
    f.typing = &t;
    if (sess_queue(s, &f) == 0) {
        s->typing_peer = peer;
        s->typing_group = group;
        s->typing_ms = now;
    }
}

/* ---- receiving ---- */

/* Removes pend[i] and frees what it owns: copy what is needed first. */
static void sess_remove_pending(sess *s, size_t i)
{
    free(s->pend[i].body);
    sess_file_free(s->pend[i].file);
    memmove(&s->pend[i], &s->pend[i + 1], (s->npend - i - 1) * sizeof(s->pend[0]));
    s->npend--;
}

static void sess_reply(sess *s, const sess_pending *p, const char *body,
                       const Parley__ServerFrame *f)
{
    if (f->error) {
        out_reply_fail_send(s->out, cmd_name(p->kind), out_code_name(f->error->code),
                            f->error->text ? f->error->text : "", p->cmid);
        return;
    }
    if (p->file) {
        const sess_file *fl = p->file;
        const Parley__SendOk *ok =
            f->body_case == PARLEY__SERVER_FRAME__BODY_SEND_OK ? f->send_ok : NULL;
        out_file_sent(s->out, p->kind, p->arg, p->cmid, ok, fl->name, fl->size, fl->type,
                      fl->sha256);
        return;
    }
    bool identity = false;
    if (p->kind == CMD_LOGIN && f->body_case == PARLEY__SERVER_FRAME__BODY_LOGIN_OK) {
        const Parley__LoginOk *l = f->login_ok;
        char *name = strdup(l->user && l->user->name ? l->user->name : "");
        char *token = strdup(l->token ? l->token : "");
        if (!name || !token) {
            free(name);
            free(token);
            fprintf(stderr, "parley: out of memory\n");
        } else {
            sess_forget_login(s);
            s->name = name;
            s->token = token;
            s->me = l->user ? l->user->id : 0;
            s->out->me = s->me;
            s->logged_in = true;
            identity = true;
        }
    } else if (p->kind == CMD_LOGOUT) {
        sess_forget_login(s);
        identity = true;
    }
    out_reply_ok(s->out, p->kind, p->arg, p->cmid, body, f);
    if (identity)
        sess_identity_changed(s);
}

/* Decides whether a send answered with e goes again (same id, a bit later):
 * BUSY (it was not stored; the server says when), UNAVAILABLE or INTERNAL
 * (it may have been: the id makes a repeat harmless), a few times each; or
 * CONFLICT: its id names another message (this one is not stored under it,
 * or the repeat would have been answered with it), so it goes with a new
 * one at once. */
static bool sess_send_retry(sess *s, sess_pending *p, const Parley__Error *e)
{
    int64_t wait;
    if (e->code == PARLEY__ERROR_CODE__BUSY && p->busy + 1 < SESS_SEND_BUSY_TRIES) {
        p->busy++;
        wait = e->retry_after_ms ? e->retry_after_ms : SESS_RESEND_BASE_MS;
    } else if (e->code == PARLEY__ERROR_CODE__CONFLICT && p->tries + 1 < SESS_SEND_TRIES) {
        p->tries++;
        p->cmid = sess_new_cmid(s);
        wait = 0;
    } else if ((e->code == PARLEY__ERROR_CODE__UNAVAILABLE ||
                e->code == PARLEY__ERROR_CODE__INTERNAL) &&
               p->tries + 1 < SESS_SEND_TRIES) {
        wait = (int64_t)SESS_RESEND_BASE_MS << p->tries;
        p->tries++;
    } else {
        return false;
    }
    p->on_wire = false;
    p->resend_at = sess_clock_ms() + wait;
    return true;
}

/* Writes (again) the send p on the current connection, with its request id
 * and client_msg_id. -1 if it cannot be packed (conn.err says why). */
static int sess_write_send(sess *s, sess_pending *p)
{
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    Parley__SendDirect sd = PARLEY__SEND_DIRECT__INIT;
    Parley__SendGroup sg = PARLEY__SEND_GROUP__INIT;
    Parley__Attachment att = PARLEY__ATTACHMENT__INIT;
    if (p->file) {
        att.sha256.data = p->file->sha256;
        att.sha256.len = 32;
        sd.attachment = &att;
        sg.attachment = &att;
    }
    if (sess_is_direct(p->kind)) {
        sd.to = p->arg;
        sd.body = p->body;
        sd.client_msg_id = p->cmid;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_SEND_DIRECT;
        f.send_direct = &sd;
    } else {
        sg.group_id = p->arg;
        sg.body = p->body;
        sg.client_msg_id = p->cmid;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_SEND_GROUP;
        f.send_group = &sg;
    }
    f.id = p->id;
    if (sess_queue(s, &f) < 0)
        return -1;
    p->on_wire = true;
    p->was_sent = true;
    p->deadline = sess_clock_ms() + SESS_REQUEST_TIMEOUT_MS;
    return 0;
}

/* Fails pend[i], a send, with code and text, adding whether it may have
 * been stored. */
static void sess_fail_send(sess *s, size_t i, const char *code, const char *text)
{
    sess_pending p = s->pend[i];
    p.body = NULL;
    char why[320];
    snprintf(why, sizeof(why), "%s; %s", text,
             p.was_sent ? "the server may or may not have stored it" : "it was not sent");
    sess_remove_pending(s, i);
    out_reply_fail_send(s->out, cmd_name(p.kind), code, why, p.cmid);
}

/* Writes the sends that are due and not on the wire; those whose sender is
 * no longer logged in fail. */
static void sess_send_due(sess *s, int64_t now)
{
    for (size_t i = 0; i < s->npend;) {
        sess_pending *p = &s->pend[i];
        if (!p->cmid || p->on_wire || p->resend_at > now) {
            i++;
            continue;
        }
        if (!s->logged_in || p->sender != s->me) {
            sess_fail_send(s, i, "UNAUTHENTICATED", "the session it was typed in has ended");
            continue;
        }
        if (sess_write_send(s, p) < 0) {
            sess_fail_send(s, i, errno == EMSGSIZE ? "TOO_LARGE" : "INTERNAL", s->conn.err);
            continue;
        }
        i++;
    }
}

static bool sess_xfer_reply(sess *s, const Parley__ServerFrame *f);

/* Handles one frame from the server. Never drops the link itself: a bye is
 * noted in s->got_bye for the caller. */
static void sess_handle(sess *s, const Parley__ServerFrame *f)
{
    if (f->id != 0) {
        if (f->id == s->ping_id) {
            s->ping_id = 0;
            return;
        }
        if (sess_xfer_reply(s, f))
            return;
        for (size_t i = 0; i < s->npend; i++) {
            if (s->pend[i].id == f->id) {
                /* A send's attempts share its id: its first send_ok ends
                 * it (later ones match nothing); an error of an attempt
                 * already superseded says nothing. */
                if (s->pend[i].cmid && f->error &&
                    (!s->pend[i].on_wire || sess_send_retry(s, &s->pend[i], f->error)))
                    return;
                /* The body outlives the entry: the reply shows it. */
                sess_pending p = s->pend[i];
                s->pend[i].body = NULL;
                s->pend[i].file = NULL;
                sess_remove_pending(s, i);
                sess_reply(s, &p, p.body, f);
                free(p.body);
                sess_file_free(p.file);
                return;
            }
        }
        return; /* a reply to a request that timed out or was lost */
    }
    if (f->error) {
        out_server_error(s->out, f->error);
        return;
    }
    switch (f->body_case) {
    case PARLEY__SERVER_FRAME__BODY_MESSAGE: {
        const Parley__Message *m = f->message;
        /* Acknowledge duplicates too: the server sent it again because it
         * has not seen our ack. */
        sess_note_ack(s, m->conv, m->seq);
        if (seen_add(&s->seen, m->msgid) != 0)
            out_message(s->out, m);
        break;
    }
    case PARLEY__SERVER_FRAME__BODY_RECALL_EVENT:
        out_recall(s->out, f->recall_event);
        break;
    case PARLEY__SERVER_FRAME__BODY_GROUP_DELETED:
        out_group_deleted(s->out, f->group_deleted);
        break;
    case PARLEY__SERVER_FRAME__BODY_PRESENCE:
        out_presence(s->out, f->presence);
        break;
    case PARLEY__SERVER_FRAME__BODY_READ_EVENT:
        out_read_event(s->out, f->read_event);
        break;
    case PARLEY__SERVER_FRAME__BODY_TYPING_EVENT:
        out_typing(s->out, f->typing_event);
        break;
    case PARLEY__SERVER_FRAME__BODY_BYE:
        out_bye(s->out, f->bye->reason ? f->bye->reason : "");
        s->got_bye = true;
        snprintf(s->bye_reason, sizeof(s->bye_reason), "%s",
                 f->bye->reason && f->bye->reason[0] ? f->bye->reason : "the server said bye");
        break;
    default:
        break; /* a push this client does not know: ignore it */
    }
}

/* Waits for the reply to request id, handling anything else that arrives
 * meanwhile. Returns the reply (the caller frees it), or NULL with the reason
 * in why. */
static Parley__ServerFrame *sess_wait(sess *s, uint64_t id, int timeout_ms, char *why,
                                      size_t whylen)
{
    int64_t deadline = sess_clock_ms() + timeout_ms;
    bool ended = false;

    for (;;) {
        Parley__ServerFrame *f;
        int r;
        while ((r = conn_next(&s->conn, &f)) == 1) {
            s->last_rx = sess_clock_ms();
            if (f->id == id)
                return f;
            sess_handle(s, f);
            parley__server_frame__free_unpacked(f, NULL);
        }
        if (r < 0 || ended) {
            snprintf(why, whylen, "%s", s->conn.err);
            return NULL;
        }
        if (s->got_bye) {
            snprintf(why, whylen, "%s", s->bye_reason);
            return NULL;
        }
        if (conn_flush(&s->conn) < 0) {
            snprintf(why, whylen, "%s", s->conn.err);
            return NULL;
        }
        int64_t left = deadline - sess_clock_ms();
        if (left <= 0) {
            snprintf(why, whylen, "no answer from the server");
            return NULL;
        }
        struct pollfd p = {.fd = conn_fd(&s->conn), .events = POLLIN};
        if (conn_want_write(&s->conn))
            p.events |= POLLOUT;
        int n = poll(&p, 1, (int)left);
        if (n < 0 && errno != EINTR) {
            snprintf(why, whylen, "%s", strerror(errno));
            return NULL;
        }
        if (n > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)) && conn_read(&s->conn) < 0)
            ended = true; /* handle what was read before the end first */
    }
}

/* On a freshly opened connection: Hello, then Resume if there is a session
 * to resume. Returns 0 when the link is usable, -1 with why otherwise. When
 * the session could not be resumed, the link is still usable: *resume_error
 * then says why, and the login is forgotten. */
static int sess_handshake(sess *s, char *why, size_t whylen, char *resume_error, size_t relen,
                          bool *resume_failed)
{
    Parley__ServerFrame *r = NULL;
    int rc = -1;

    *resume_failed = false;
    s->got_bye = false;
    s->conn.max_out = FRAME_MAX_DEFAULT;

    Parley__Hello hello = PARLEY__HELLO__INIT;
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    hello.version = SESS_PROTOCOL_VERSION;
    hello.client = SESS_CLIENT_NAME;
    f.id = s->next_id++;
    f.body_case = PARLEY__CLIENT_FRAME__BODY_HELLO;
    f.hello = &hello;
    if (sess_queue(s, &f) < 0) {
        snprintf(why, whylen, "%s", s->conn.err);
        goto out;
    }
    r = sess_wait(s, f.id, SESS_HANDSHAKE_TIMEOUT_MS, why, whylen);
    if (!r)
        goto out;
    if (r->error) {
        snprintf(why, whylen, "the server refused the connection: %s: %s",
                 out_code_name(r->error->code), r->error->text ? r->error->text : "");
        goto out;
    }
    if (r->body_case != PARLEY__SERVER_FRAME__BODY_HELLO_OK) {
        snprintf(why, whylen, "the server did not answer Hello with hello_ok");
        goto out;
    }
    if (r->hello_ok->max_frame > 0)
        s->conn.max_out = r->hello_ok->max_frame;
    parley__server_frame__free_unpacked(r, NULL);
    r = NULL;

    if (s->token) {
        Parley__Resume resume = PARLEY__RESUME__INIT;
        Parley__ClientFrame rf = PARLEY__CLIENT_FRAME__INIT;
        resume.token = s->token;
        rf.id = s->next_id++;
        rf.body_case = PARLEY__CLIENT_FRAME__BODY_RESUME;
        rf.resume = &resume;
        if (sess_queue(s, &rf) < 0) {
            snprintf(why, whylen, "%s", s->conn.err);
            goto out;
        }
        r = sess_wait(s, rf.id, SESS_HANDSHAKE_TIMEOUT_MS, why, whylen);
        if (!r)
            goto out;
        if (r->error) {
            snprintf(resume_error, relen, "%s: %s", out_code_name(r->error->code),
                     r->error->text ? r->error->text : "");
            *resume_failed = true;
            sess_forget_login(s);
        } else if (r->body_case == PARLEY__SERVER_FRAME__BODY_LOGIN_OK && r->login_ok->token &&
                   r->login_ok->token[0]) {
            /* The server may hand out a fresh token. */
            char *token = strdup(r->login_ok->token);
            if (token) {
                free(s->token);
                s->token = token;
            }
        }
    }
    rc = 0;

out:
    if (r)
        parley__server_frame__free_unpacked(r, NULL);
    return rc;
}

/* ---- connection life ---- */

int sess_start(sess *s)
{
    char why[256], rerr[256];
    bool resume_failed;

    if (conn_open(&s->conn, s->host, s->port, SESS_CONNECT_TIMEOUT_MS) < 0) {
        fprintf(stderr, "parley: cannot connect to %s:%s: %s%s\n", s->host, s->port, s->conn.err,
                s->conn.refused ? "" : " (is parleyd running? start it with 'make run')");
        return -1;
    }
    if (sess_handshake(s, why, sizeof(why), rerr, sizeof(rerr), &resume_failed) < 0) {
        /* A TLS port drops a plain Hello without a word. */
        fprintf(stderr, "parley: %s:%s: %s%s\n", s->host, s->port, why,
                !s->conn.trust && !s->got_bye ? " (if the port is TLS, add --tls)" : "");
        conn_close(&s->conn);
        return -1;
    }
    s->up = true;
    s->last_rx = s->last_tx = sess_clock_ms();
    sess_send_acks(s);
    if (conn_flush(&s->conn) < 0) {
        fprintf(stderr, "parley: %s:%s: %s\n", s->host, s->port, s->conn.err);
        s->up = false;
        conn_close(&s->conn);
        return -1;
    }
    return 0;
}

void sess_finish(sess *s, int timeout_ms)
{
    int64_t deadline = sess_clock_ms() + timeout_ms;
    if (!s->up)
        return;
    sess_send_acks(s);
    while (conn_want_write(&s->conn)) {
        if (conn_flush(&s->conn) < 0)
            return;
        int64_t left = deadline - sess_clock_ms();
        if (left <= 0 || !conn_want_write(&s->conn))
            return;
        struct pollfd p = {.fd = conn_fd(&s->conn), .events = POLLOUT};
        if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
            return;
    }
}

/* A delay around ms: between ms/2 and 3ms/2, so that many clients dropped at
 * once do not come back in lockstep. */
static int sess_jitter(int ms)
{
    return ms / 2 + rand() % (ms + 1);
}

static void sess_xfer_lost(sess *s);
static void sess_xfer_resume(sess *s);

static void sess_drop(sess *s, const char *reason)
{
    char why[256];
    snprintf(why, sizeof(why), "%s", reason);
    conn_close(&s->conn);
    s->up = false;
    /* Acks not yet queued are lost: those messages come again after Resume,
     * and are acked then. */
    for (size_t i = 0; i < s->nacks; i++)
        s->acks[i].shown = 0;
    s->acks_due = false;
    s->ping_id = 0;
    out_disconnected(s->out, why);
    sess_xfer_lost(s);
    /* Requests in flight are lost: fail them, they are not sent again.
     * Sends stay: they go again, with their ids, once the session is
     * resumed. */
    for (size_t i = 0; i < s->npend;) {
        sess_pending *p = &s->pend[i];
        if (p->cmid && s->reconnect) {
            p->on_wire = false;
            i++;
        } else if (p->cmid) {
            sess_fail_send(s, i, "UNAVAILABLE", "connection lost");
        } else {
            sess_pending q = *p;
            sess_remove_pending(s, i);
            out_reply_fail(s->out, cmd_name(q.kind), "UNAVAILABLE", "connection lost");
        }
    }
    if (!s->reconnect) {
        s->done = true;
        s->exit_code = 1;
        return;
    }
    int64_t now = sess_clock_ms();
    s->down_since = now;
    s->backoff_ms = SESS_BACKOFF_START_MS;
    s->next_attempt = now + sess_jitter(s->backoff_ms);
    s->told_at = 0;
    s->told_wait_s = -1;
    sess_identity_changed(s); /* the prompt says offline */
}

/* Says when the next attempt is: when the wait (in whole seconds) changes,
 * and once a minute while it stays the same. */
static void sess_tell_retry(sess *s, int64_t now, const char *why)
{
    int64_t wait = s->next_attempt - now;
    int64_t secs = (wait + 999) / 1000;
    if (secs == s->told_wait_s && now - s->told_at < 60000)
        return;
    s->told_wait_s = secs;
    s->told_at = now;
    out_reconnecting(s->out, wait, why);
}

static void sess_attempt(sess *s)
{
    char why[256], rerr[256];
    bool resume_failed = false;

    if (conn_open(&s->conn, s->host, s->port, SESS_CONNECT_TIMEOUT_MS) < 0) {
        snprintf(why, sizeof(why), "%s", s->conn.err);
    } else if (sess_handshake(s, why, sizeof(why), rerr, sizeof(rerr), &resume_failed) == 0) {
        s->up = true;
        s->last_rx = s->last_tx = sess_clock_ms();
        out_reconnected(s->out, resume_failed ? rerr : NULL);
        sess_identity_changed(s); /* online again, perhaps logged out */
        sess_send_acks(s);
        /* Then every unconfirmed send, in the order typed (those of a
         * session that could not be resumed fail instead). */
        size_t n = s->logged_in ? sess_unconfirmed(s) : 0;
        if (n)
            out_resending(s->out, n);
        sess_send_due(s, INT64_MAX);
        sess_xfer_resume(s);
        if (conn_flush(&s->conn) < 0)
            sess_drop(s, s->conn.err);
        return;
    }
    conn_close(&s->conn);

    int64_t now = sess_clock_ms();
    if (s->give_up_ms > 0 && now - s->down_since >= s->give_up_ms) {
        fprintf(stderr,
                "parley: lost the connection to %s:%s and could not reconnect for %lld s: %s\n",
                s->host, s->port, (long long)(s->give_up_ms / 1000), why);
        while (s->npend > 0)
            sess_fail_send(s, 0, "UNAVAILABLE", "could not reconnect to the server");
        s->done = true;
        s->exit_code = 1;
        return;
    }
    s->backoff_ms *= 2;
    if (s->backoff_ms > SESS_BACKOFF_MAX_MS)
        s->backoff_ms = SESS_BACKOFF_MAX_MS;
    s->next_attempt = now + sess_jitter(s->backoff_ms);
    /* Make one last attempt when the time is up rather than well after. */
    if (s->give_up_ms > 0 && s->next_attempt > s->down_since + s->give_up_ms)
        s->next_attempt = s->down_since + s->give_up_ms;
    sess_tell_retry(s, now, why);
}

/* ---- requests ---- */

/* Room for one more pending request. */
static int sess_pend_reserve(sess *s)
{
    if (s->npend < s->pend_cap)
        return 0;
    size_t cap = s->pend_cap ? s->pend_cap * 2 : 8;
    sess_pending *p = realloc(s->pend, cap * sizeof(*p));
    if (!p)
        return -1;
    s->pend = p;
    s->pend_cap = cap;
    return 0;
}

/* A chat or groupchat: kept until confirmed, queued while the link is down. */
static int sess_submit_send(sess *s, const cmd *c)
{
    const char *name = cmd_name(c->kind);
    if (!s->up && !sess_can_queue(s)) {
        out_reply_fail(s->out, name, "UNAVAILABLE", "not connected to the server");
        return -1;
    }
    char *body = strdup(c->b ? c->b : "");
    if (!body || sess_pend_reserve(s) < 0) {
        free(body);
        out_reply_fail(s->out, name, "INTERNAL", "out of memory");
        return -1;
    }
    sess_pending *p = &s->pend[s->npend];
    memset(p, 0, sizeof(*p));
    p->id = s->next_id++;
    p->kind = c->kind;
    p->arg = c->id;
    p->cmid = sess_new_cmid(s);
    p->sender = s->me;
    p->body = body;
    if (!s->up) {
        s->npend++;
        out_send_queued(s->out, c->kind, c->id, p->cmid, body);
        return 0;
    }
    if (sess_write_send(s, p) < 0) {
        free(body);
        out_reply_fail_send(s->out, name, errno == EMSGSIZE ? "TOO_LARGE" : "INTERNAL", s->conn.err,
                            p->cmid);
        return -1;
    }
    s->npend++;
    if (conn_flush(&s->conn) < 0)
        sess_drop(s, s->conn.err);
    return 0;
}

static int sess_xfer_start(sess *s, const cmd *c);

int sess_submit(sess *s, const cmd *c)
{
    const char *name = cmd_name(c->kind);
    if (sess_is_send(c->kind))
        return sess_submit_send(s, c);
    if (c->kind == CMD_SENDFILE || c->kind == CMD_GROUPSENDFILE || c->kind == CMD_GETFILE)
        return sess_xfer_start(s, c);
    if (!s->up) {
        out_reply_fail(s->out, name, "UNAVAILABLE", "not connected to the server");
        return -1;
    }
    if (sess_pend_reserve(s) < 0) {
        out_reply_fail(s->out, name, "INTERNAL", "out of memory");
        return -1;
    }

    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    Parley__Register reg = PARLEY__REGISTER__INIT;
    Parley__Login login = PARLEY__LOGIN__INIT;
    Parley__Logout logout = PARLEY__LOGOUT__INIT;
    Parley__FriendAdd fadd = PARLEY__FRIEND_ADD__INIT;
    Parley__FriendDel fdel = PARLEY__FRIEND_DEL__INIT;
    Parley__FriendList flist = PARLEY__FRIEND_LIST__INIT;
    Parley__GroupCreate gcreate = PARLEY__GROUP_CREATE__INIT;
    Parley__GroupJoin gjoin = PARLEY__GROUP_JOIN__INIT;
    Parley__GroupQuit gquit = PARLEY__GROUP_QUIT__INIT;
    Parley__GroupDelete gdel = PARLEY__GROUP_DELETE__INIT;
    Parley__History hist = PARLEY__HISTORY__INIT;
    Parley__Recall recall = PARLEY__RECALL__INIT;
    Parley__Whois whois = PARLEY__WHOIS__INIT;
    Parley__Find find = PARLEY__FIND__INIT;
    Parley__Read rd = PARLEY__READ__INIT;
    Parley__Typing typing = PARLEY__TYPING__INIT;

    switch (c->kind) {
    case CMD_FIND:
        find.prefix = (char *)c->a;
        find.after = (char *)c->b;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_FIND;
        f.find = &find;
        break;
    case CMD_READ:
        rd.conv = c->id;
        rd.seq = c->seq;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_READ;
        f.read = &rd;
        out_mark_read(s->out, rd.conv, rd.seq);
        break;
    case CMD_TYPING:
    case CMD_GROUPTYPING:
        if (c->kind == CMD_TYPING)
            typing.peer = c->id;
        else
            typing.group_id = c->id;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_TYPING;
        f.typing = &typing;
        break;
    case CMD_REGISTER:
        reg.name = (char *)c->a;
        reg.password = (char *)c->b;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_REG;
        f.reg = &reg;
        break;
    case CMD_LOGIN:
        login.user_id = c->id;
        if (c->a)
            login.name = (char *)c->a;
        login.password = (char *)c->b;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_LOGIN;
        f.login = &login;
        break;
    case CMD_LOGOUT:
        logout.all = c->count == 1;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_LOGOUT;
        f.logout = &logout;
        break;
    case CMD_ADDFRIEND:
        fadd.user_id = c->id;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_FRIEND_ADD;
        f.friend_add = &fadd;
        break;
    case CMD_DELFRIEND:
        fdel.user_id = c->id;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_FRIEND_DEL;
        f.friend_del = &fdel;
        break;
    case CMD_SHOWFRIENDLIST:
    case CMD_WHO: /* the friends, of whom the reply shows those online */
        f.body_case = PARLEY__CLIENT_FRAME__BODY_FRIEND_LIST;
        f.friend_list = &flist;
        break;
    case CMD_WHOIS:
        whois.user_id = c->id;
        if (c->ref_name)
            whois.name = (char *)c->ref_name;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_WHOIS;
        f.whois = &whois;
        break;
    case CMD_CREATEGROUP:
        gcreate.name = (char *)c->a;
        gcreate.desc = (char *)c->b;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_GROUP_CREATE;
        f.group_create = &gcreate;
        break;
    case CMD_ADDGROUP:
        gjoin.group_id = c->id;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_GROUP_JOIN;
        f.group_join = &gjoin;
        break;
    case CMD_QUITGROUP:
        gquit.group_id = c->id;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_GROUP_QUIT;
        f.group_quit = &gquit;
        break;
    case CMD_DELGROUP:
        gdel.group_id = c->id;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_GROUP_DELETE;
        f.group_delete = &gdel;
        break;
    case CMD_HISTORY:
    case CMD_GROUPHISTORY:
        if (c->kind == CMD_HISTORY)
            hist.peer = c->id;
        else
            hist.group_id = c->id;
        hist.limit = c->count;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_HISTORY;
        f.history = &hist;
        break;
    case CMD_RECALL:
        recall.msgid = c->id;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_RECALL;
        f.recall = &recall;
        break;
    default:
        out_reply_fail(s->out, cmd_reply_name(c), "USAGE", "not a request for the server");
        return -1;
    }

    f.id = s->next_id++;
    if (sess_queue(s, &f) < 0) {
        if (errno == EMSGSIZE)
            out_reply_fail(s->out, name, "TOO_LARGE", s->conn.err);
        else
            out_reply_fail(s->out, name, "INTERNAL", s->conn.err);
        return -1;
    }
    sess_pending *p = &s->pend[s->npend++];
    memset(p, 0, sizeof(*p));
    p->id = f.id;
    p->kind = c->kind;
    p->arg = c->id;
    p->deadline = sess_clock_ms() + SESS_REQUEST_TIMEOUT_MS;
    if (conn_flush(&s->conn) < 0)
        sess_drop(s, s->conn.err);
    return 0;
}

/* ---- driving ---- */

void sess_poll_prepare(const sess *s, struct pollfd *p)
{
    p->fd = s->up ? conn_fd(&s->conn) : -1;
    p->events = POLLIN;
    if (s->up && conn_want_write(&s->conn))
        p->events |= POLLOUT;
    p->revents = 0;
}

void sess_poll_done(sess *s, short revents)
{
    if (!s->up || revents == 0)
        return;
    if ((revents & POLLOUT) && conn_flush(&s->conn) < 0) {
        sess_drop(s, s->conn.err);
        return;
    }
    int rd = 0;
    if (revents & (POLLIN | POLLHUP | POLLERR))
        rd = conn_read(&s->conn);

    Parley__ServerFrame *f;
    int r;
    while ((r = conn_next(&s->conn, &f)) == 1) {
        s->last_rx = sess_clock_ms();
        sess_handle(s, f);
        parley__server_frame__free_unpacked(f, NULL);
    }
    if (r < 0) {
        sess_drop(s, s->conn.err);
        return;
    }
    /* One ack per conversation for everything this read brought. */
    sess_send_acks(s);
    if (s->got_bye) {
        s->got_bye = false;
        sess_drop(s, s->bye_reason);
        return;
    }
    if (rd < 0) {
        sess_drop(s, s->conn.err);
        return;
    }
    if (conn_flush(&s->conn) < 0)
        sess_drop(s, s->conn.err);
}

static int64_t sess_xfer_deadline(const sess *s);
static void sess_xfer_tick(sess *s, int64_t now);

int64_t sess_next_timer(const sess *s)
{
    if (s->done)
        return INT64_MAX;
    if (!s->up)
        return s->reconnect ? s->next_attempt : INT64_MAX;
    int64_t t = s->last_tx + SESS_PING_AFTER_MS;
    if (sess_xfer_deadline(s) < t)
        t = sess_xfer_deadline(s);
    if (s->last_rx + SESS_DEAD_AFTER_MS < t)
        t = s->last_rx + SESS_DEAD_AFTER_MS;
    for (size_t i = 0; i < s->npend; i++) {
        const sess_pending *p = &s->pend[i];
        int64_t due = p->cmid && !p->on_wire ? p->resend_at : p->deadline;
        if (due < t)
            t = due;
    }
    return t;
}

void sess_tick(sess *s)
{
    if (s->done)
        return;
    int64_t now = sess_clock_ms();
    if (!s->up) {
        if (s->reconnect && now >= s->next_attempt)
            sess_attempt(s);
        return;
    }
    for (size_t i = 0; i < s->npend;) {
        sess_pending *p = &s->pend[i];
        if (p->cmid && !p->on_wire) {
            i++;
        } else if (p->deadline > now) {
            i++;
        } else if (p->cmid && p->tries + 1 < SESS_SEND_TRIES) {
            /* No answer: the same send again, which is stored once. */
            p->tries++;
            p->on_wire = false;
            p->resend_at = now;
            i++;
        } else if (p->cmid) {
            sess_fail_send(s, i, "TIMEOUT", "no answer from the server");
        } else {
            sess_pending q = *p;
            sess_remove_pending(s, i);
            out_reply_fail(s->out, cmd_name(q.kind), "TIMEOUT", "timed out");
        }
    }
    sess_send_due(s, now);
    sess_xfer_tick(s, now);
    if (now - s->last_rx >= SESS_DEAD_AFTER_MS) {
        sess_drop(s, "the server stopped answering");
        return;
    }
    if (now - s->last_tx >= SESS_PING_AFTER_MS) {
        Parley__Ping ping = PARLEY__PING__INIT;
        Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
        f.id = s->next_id++;
        ping.nonce = f.id;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_PING;
        f.ping = &ping;
        if (sess_queue(s, &f) == 0)
            s->ping_id = f.id;
    }
    if (conn_flush(&s->conn) < 0)
        sess_drop(s, s->conn.err);
}

/* ---- files: sendfile, groupsendfile, getfile ---- */

struct sess_xfer {
    cmd_kind kind;   /* CMD_SENDFILE, CMD_GROUPSENDFILE or CMD_GETFILE */
    uint64_t target; /* the user or group sent to; the message read */
    char *path;      /* the local file */
    uint8_t *data;   /* the whole file (up: read at the start; down: filled in) */
    uint64_t size;   /* down: 0 until the first chunk says */
    uint8_t sha256[32];
    char *name, *type;
    uint64_t upload_id;
    uint64_t next;                       /* the next offset to ask for or send */
    uint64_t done;                       /* bytes confirmed (up) or received (down) */
    uint32_t chunk;                      /* bytes per chunk */
    uint64_t ids[SESS_XFER_WINDOW + 1];  /* requests in flight */
    uint64_t offs[SESS_XFER_WINDOW + 1]; /* ... and the offset each asks for */
    unsigned nids;
    bool begun;       /* up: FileBegin answered on this connection */
    uint8_t resyncs;  /* up: times a refused chunk made it ask where the upload stands */
    int64_t deadline; /* no answer by then: the transfer fails */
};

static void sess_file_free(sess_file *f)
{
    if (!f)
        return;
    free(f->name);
    free(f->type);
    free(f);
}

static void sess_xfer_end(sess *s)
{
    sess_xfer *x = s->xfer;
    if (!x)
        return;
    free(x->path);
    free(x->data);
    free(x->name);
    free(x->type);
    free(x);
    s->xfer = NULL;
}

static void sess_xfer_fail(sess *s, const char *code, const char *text)
{
    const char *name = cmd_name(s->xfer->kind);
    sess_xfer_end(s);
    out_reply_fail(s->out, name, code, text);
}

static int sess_sha256(const uint8_t *p, size_t n, uint8_t out[32])
{
    unsigned len = 0;
    return EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) == 1 && len == 32 ? 0 : -1;
}

/* A media type from the file name's extension (the web client shows
 * images inline by it). */
static const char *sess_file_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".png", "image/png"},  {".jpg", "image/jpeg"},      {".jpeg", "image/jpeg"},
        {".gif", "image/gif"},  {".webp", "image/webp"},     {".svg", "image/svg+xml"},
        {".txt", "text/plain"}, {".pdf", "application/pdf"}, {".zip", "application/zip"},
        {".mp3", "audio/mpeg"}, {".mp4", "video/mp4"},       {".json", "application/json"},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++)
        if (strcasecmp(dot, types[i].ext) == 0)
            return types[i].type;
    return "application/octet-stream";
}

/* Reads path whole into *data. 0, or -1 with why. */
static int sess_read_file(const char *path, uint8_t **data, uint64_t *size, char *why,
                          size_t whylen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        snprintf(why, whylen, "cannot read %s: %s", path,
                 fd < 0 || errno ? strerror(errno) : "not a regular file");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (sb.st_size <= 0 || sb.st_size > SESS_FILE_MAX) {
        snprintf(why, whylen, "%s: %s", path, sb.st_size <= 0 ? "the file is empty" : "too large");
        close(fd);
        return -1;
    }
    uint8_t *p = malloc((size_t)sb.st_size);
    size_t got = 0;
    while (p && got < (size_t)sb.st_size) {
        ssize_t n = read(fd, p + got, (size_t)sb.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (!p || got != (size_t)sb.st_size) {
        snprintf(why, whylen, "cannot read %s: %s", path, p ? "short read" : "out of memory");
        free(p);
        return -1;
    }
    *data = p;
    *size = got;
    return 0;
}

static int sess_xfer_queue(sess *s, Parley__ClientFrame *f, uint64_t off)
{
    sess_xfer *x = s->xfer;
    f->id = s->next_id++;
    if (sess_queue(s, f) < 0)
        return -1;
    x->ids[x->nids] = f->id;
    x->offs[x->nids++] = off;
    x->deadline = sess_clock_ms() + SESS_REQUEST_TIMEOUT_MS;
    return 0;
}

/* Asks where the upload stands: the start, and the resume after a
 * reconnect. */
static int sess_xfer_begin(sess *s)
{
    sess_xfer *x = s->xfer;
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    Parley__FileBegin b = PARLEY__FILE_BEGIN__INIT;
    b.name = x->name;
    b.type = x->type;
    b.size = x->size;
    b.sha256.data = x->sha256;
    b.sha256.len = 32;
    f.body_case = PARLEY__CLIENT_FRAME__BODY_FILE_BEGIN;
    f.file_begin = &b;
    x->begun = false;
    return sess_xfer_queue(s, &f, 0);
}

/* Keeps SESS_XFER_WINDOW chunks in flight, up or down. */
static int sess_xfer_pump(sess *s)
{
    sess_xfer *x = s->xfer;
    bool up = x->kind != CMD_GETFILE;
    while (x->nids < SESS_XFER_WINDOW && (up ? x->begun : x->size > 0) && x->next < x->size) {
        uint64_t n = x->size - x->next < x->chunk ? x->size - x->next : x->chunk;
        Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
        Parley__FileChunk ch = PARLEY__FILE_CHUNK__INIT;
        Parley__FileGet g = PARLEY__FILE_GET__INIT;
        if (up) {
            ch.upload_id = x->upload_id;
            ch.offset = x->next;
            ch.data.data = x->data + x->next;
            ch.data.len = (size_t)n;
            f.body_case = PARLEY__CLIENT_FRAME__BODY_FILE_CHUNK;
            f.file_chunk = &ch;
        } else {
            g.msgid = x->target;
            g.offset = x->next;
            g.limit = (uint32_t)n;
            f.body_case = PARLEY__CLIENT_FRAME__BODY_FILE_GET;
            f.file_get = &g;
        }
        if (sess_xfer_queue(s, &f, x->next) < 0)
            return -1;
        x->next += n;
    }
    return 0;
}

/* The upload is stored: send it as a message, kept and resent like a chat
 * until the server confirms it. */
static void sess_xfer_send(sess *s)
{
    sess_xfer *x = s->xfer;
    sess_file *fl = calloc(1, sizeof(*fl));
    char *body = strdup("");
    if (!fl || !body || sess_pend_reserve(s) < 0) {
        free(fl);
        free(body);
        sess_xfer_fail(s, "INTERNAL", "out of memory");
        return;
    }
    memcpy(fl->sha256, x->sha256, 32);
    fl->size = x->size;
    fl->name = x->name;
    fl->type = x->type;
    x->name = x->type = NULL;
    sess_pending *p = &s->pend[s->npend++];
    memset(p, 0, sizeof(*p));
    p->id = s->next_id++;
    p->kind = x->kind;
    p->arg = x->target;
    p->cmid = sess_new_cmid(s);
    p->sender = s->me;
    p->body = body;
    p->file = fl;
    sess_xfer_end(s);
    if (s->up && sess_write_send(s, p) < 0)
        sess_fail_send(s, s->npend - 1, "INTERNAL", s->conn.err);
}

/* The download is whole: check it and write it. */
static void sess_xfer_save(sess *s)
{
    sess_xfer *x = s->xfer;
    uint8_t got[32];
    char why[600];
    if (sess_sha256(x->data, (size_t)x->size, got) < 0 || memcmp(got, x->sha256, 32) != 0) {
        sess_xfer_fail(s, "BAD_DATA", "the file received does not match its SHA-256; not saved");
        return;
    }
    size_t plen = strlen(x->path);
    char *tmp = malloc(plen + 8);
    if (!tmp) {
        sess_xfer_fail(s, "INTERNAL", "out of memory");
        return;
    }
    snprintf(tmp, plen + 8, "%s.part", x->path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    size_t off = 0;
    while (fd >= 0 && off < x->size) {
        ssize_t n = write(fd, x->data + off, (size_t)x->size - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    if (fd < 0 || off != x->size || fsync(fd) < 0 || close(fd) < 0 || rename(tmp, x->path) < 0) {
        snprintf(why, sizeof(why), "cannot write %s: %s", x->path, strerror(errno));
        if (fd >= 0)
            unlink(tmp);
        free(tmp);
        sess_xfer_fail(s, "LOCAL", why);
        return;
    }
    free(tmp);
    out_file_saved(s->out, x->target, x->path, x->name, x->size, x->type, x->sha256);
    sess_xfer_end(s);
}

static int sess_xfer_start(sess *s, const cmd *c)
{
    const char *name = cmd_name(c->kind);
    char why[600];
    if (!s->up) {
        out_reply_fail(s->out, name, "UNAVAILABLE", "not connected to the server");
        return -1;
    }
    if (s->xfer) {
        out_reply_fail(s->out, name, "BUSY", "a file transfer is in progress; wait for it");
        return -1;
    }
    sess_xfer *x = calloc(1, sizeof(*x));
    if (!x || !(x->path = strdup(c->b))) {
        free(x);
        out_reply_fail(s->out, name, "INTERNAL", "out of memory");
        return -1;
    }
    s->xfer = x;
    x->kind = c->kind;
    x->target = c->id;
    /* Under the frame limit, with room for the other fields. */
    x->chunk = s->conn.max_out > 2048 ? (uint32_t)(s->conn.max_out - 1024) : 1024;
    if (x->chunk > 256 * 1024)
        x->chunk = 256 * 1024;
    if (c->kind == CMD_GETFILE) {
        Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
        Parley__FileGet g = PARLEY__FILE_GET__INIT;
        g.msgid = x->target;
        g.limit = x->chunk;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_FILE_GET;
        f.file_get = &g;
        if (sess_xfer_queue(s, &f, 0) < 0) {
            sess_xfer_fail(s, "INTERNAL", s->conn.err);
            return -1;
        }
        x->next = 0;
    } else {
        if (sess_read_file(x->path, &x->data, &x->size, why, sizeof(why)) < 0) {
            sess_xfer_fail(s, "LOCAL", why);
            return -1;
        }
        const char *slash = strrchr(x->path, '/');
        x->name = strdup(slash ? slash + 1 : x->path);
        x->type = strdup(sess_file_type(x->path));
        if (!x->name || !x->type || sess_sha256(x->data, (size_t)x->size, x->sha256) < 0) {
            sess_xfer_fail(s, "INTERNAL", "out of memory");
            return -1;
        }
        if (sess_xfer_begin(s) < 0) {
            sess_xfer_fail(s, "INTERNAL", s->conn.err);
            return -1;
        }
    }
    if (conn_flush(&s->conn) < 0)
        sess_drop(s, s->conn.err);
    return 0;
}

/* Handles the reply f if it belongs to the transfer: true if it did. */
static bool sess_xfer_reply(sess *s, const Parley__ServerFrame *f)
{
    sess_xfer *x = s->xfer;
    unsigned i = 0;
    while (x && i < x->nids && x->ids[i] != f->id)
        i++;
    if (!x || i == x->nids)
        return false;
    uint64_t off = x->offs[i];
    memmove(&x->ids[i], &x->ids[i + 1], (x->nids - i - 1) * sizeof(x->ids[0]));
    memmove(&x->offs[i], &x->offs[i + 1], (x->nids - i - 1) * sizeof(x->offs[0]));
    x->nids--;
    x->deadline = sess_clock_ms() + SESS_REQUEST_TIMEOUT_MS;
    /* A chunk refused for its offset (a chunk of the connection before a
     * reconnect ran late, on another node) or its hash: ask where the
     * upload stands and go on from there, a few times. Replies to the
     * chunks still in flight are then ignored. */
    if (f->error && f->error->code == PARLEY__ERROR_CODE__BAD_REQUEST && x->kind != CMD_GETFILE &&
        x->begun && x->resyncs < 3) {
        x->resyncs++;
        x->nids = 0;
        if (sess_xfer_begin(s) < 0)
            sess_xfer_fail(s, "INTERNAL", s->conn.err);
        return true;
    }
    if (f->error) {
        sess_xfer_fail(s, out_code_name(f->error->code), f->error->text ? f->error->text : "");
        return true;
    }
    switch (f->body_case) {
    case PARLEY__SERVER_FRAME__BODY_FILE_BEGIN_OK: {
        const Parley__FileBeginOk *ok = f->file_begin_ok;
        x->upload_id = ok->upload_id;
        x->next = x->done = ok->offset;
        if (ok->chunk_max && ok->chunk_max < x->chunk)
            x->chunk = ok->chunk_max;
        x->begun = true;
        if (ok->complete || ok->offset >= x->size) {
            sess_xfer_send(s);
            return true;
        }
        break;
    }
    case PARLEY__SERVER_FRAME__BODY_FILE_CHUNK_OK: {
        const Parley__FileChunkOk *ok = f->file_chunk_ok;
        if (ok->offset > x->done)
            x->done = ok->offset;
        if (ok->complete) {
            sess_xfer_send(s);
            return true;
        }
        break;
    }
    case PARLEY__SERVER_FRAME__BODY_FILE_DATA: {
        const Parley__FileData *d = f->file_data;
        const Parley__Attachment *a = d->attachment;
        if (!a || a->sha256.len != 32 || d->offset != off || (x->size && a->size != x->size) ||
            a->size > SESS_FILE_MAX || d->data.len > a->size - d->offset ||
            (d->data.len == 0 && d->offset < a->size)) {
            sess_xfer_fail(s, "BAD_DATA", "the server sent a chunk that does not fit the file");
            return true;
        }
        if (!x->size) {
            x->size = a->size;
            memcpy(x->sha256, a->sha256.data, 32);
            x->name = strdup(a->name ? a->name : "");
            x->type = strdup(a->type ? a->type : "");
            x->data = malloc((size_t)x->size);
            if (!x->data || !x->name || !x->type) {
                sess_xfer_fail(s, "INTERNAL", "out of memory");
                return true;
            }
            x->next = d->data.len;
        }
        memcpy(x->data + d->offset, d->data.data, d->data.len);
        x->done += d->data.len;
        if (x->done >= x->size) {
            sess_xfer_save(s);
            return true;
        }
        break;
    }
    default:
        sess_xfer_fail(s, "INTERNAL", "an unexpected reply to a file request");
        return true;
    }
    if (sess_xfer_pump(s) < 0)
        sess_xfer_fail(s, "INTERNAL", s->conn.err);
    return true;
}

/* The connection dropped: what was in flight is lost. An upload resumes
 * from where the server stands, a download from what it has. */
static void sess_xfer_lost(sess *s)
{
    sess_xfer *x = s->xfer;
    if (!x)
        return;
    if (!s->reconnect) {
        sess_xfer_fail(s, "UNAVAILABLE", "connection lost");
        return;
    }
    x->nids = 0;
    x->begun = false;
    /* A download starts again (its chunks may have come in any order); a
     * file is at most the server's limit, tens of MiB. */
    if (x->kind == CMD_GETFILE)
        x->next = x->done = 0;
}

static void sess_xfer_resume(sess *s)
{
    sess_xfer *x = s->xfer;
    if (!x)
        return;
    if (!s->logged_in) {
        sess_xfer_fail(s, "UNAUTHENTICATED", "the session could not be resumed");
        return;
    }
    int r;
    if (x->kind != CMD_GETFILE) {
        r = sess_xfer_begin(s);
    } else if (!x->size) {
        Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
        Parley__FileGet g = PARLEY__FILE_GET__INIT;
        g.msgid = x->target;
        g.limit = x->chunk;
        f.body_case = PARLEY__CLIENT_FRAME__BODY_FILE_GET;
        f.file_get = &g;
        r = sess_xfer_queue(s, &f, 0);
    } else {
        r = sess_xfer_pump(s);
    }
    if (r < 0)
        sess_xfer_fail(s, "INTERNAL", s->conn.err);
}

static int64_t sess_xfer_deadline(const sess *s)
{
    return s->xfer && s->xfer->nids ? s->xfer->deadline : INT64_MAX;
}

static void sess_xfer_tick(sess *s, int64_t now)
{
    if (s->xfer && s->xfer->nids && now >= s->xfer->deadline)
        sess_xfer_fail(s, "TIMEOUT", "no answer from the server");
}
