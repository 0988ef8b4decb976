/*
 * message service: sending (direct and group), history, recall, delivery
 * cursors (ack) and the catch-up of unacknowledged messages (sync).
 *
 * A message is appended to its conversation with the next seq inside the
 * batch's transaction; the push to recipients is published after commit.
 */
#include <stdlib.h>
#include <string.h>

#include "services/file.h"
#include "common/frame.h"

#include "services/limits.h"
#include "services/svc.h"
#include "services/view.h"

/* A text as a client sends it: checked, and never what a stored social
 * event looks like (view.h). */
static int message_check_body(svc_ctx *ctx, const char *body, long min)
{
    if (svc_check_text(ctx, body, min, LIMIT_BODY_CHARS, "message") < 0)
        return -1;
    if (body[0] == VIEW_EVENT_MARK) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "message must not start with U+0001");
        return -1;
    }
    return 0;
}

static int message_begin(svc_ctx *ctx, Parley__ClientFrame__BodyCase body)
{
    if (svc_require_user(ctx) < 0)
        return -1;
    if (ctx->call->frame->body_case != body) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "request does not match the method");
        return -1;
    }
    return 0;
}

/* Who a sent message is pushed to: kept in the request's arena until the
 * runtime has stored the message. */
typedef struct {
    uint64_t conv; /* the conversation the send named */
    const uint64_t *to;
    size_t n;
    const char *body; /* what the send carried, to tell a repeat from a reuse */
    size_t body_len;
    uint64_t client_id; /* the client's client_msg_id, 0 if none */
    /* Looked up before the append: the push is built inside the store's
     * callback, where no other store call may run. NULL: not known. */
    const char *from_name, *group_name;
    const Parley__Attachment *att; /* the file it carries, NULL if none */
    int own;                       /* copy it to the sender's other sessions */
} message_fanout;

static void message_push(svc_ctx *ctx, const store_msg *m, const message_fanout *f);
static int message_answer_repeat(svc_ctx *ctx, uint64_t client_id, const char *body);
static int message_want_own(svc_ctx *ctx);

/* 1 if m, stored earlier under the reference of send f, is what f sends:
 * the same conversation and text. A recalled message counts whatever its
 * body has become: its sender's repeat still gets the first answer. */
static int message_is_repeat(const store_msg *m, const message_fanout *f)
{
    if (m->conv != f->conv)
        return 0;
    if (m->recalled)
        return 1;
    return m->body_len == f->body_len && memcmp(m->body, f->body, f->body_len) == 0;
}

/* The end of a send, once the runtime has appended it: replies with the
 * message's place and pushes it. */
static void message_stored(svc_ctx *ctx, void *arg, store_status st, const store_msg *m)
{
    const message_fanout *f = arg;
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "conversation");
        return;
    }
    /* A retried send finds its message already stored: answer with it and
     * push it again (a push lost with a failed node must still arrive;
     * recipients drop repeats by msgid). A reference naming a message of
     * another conversation or with other text is a collision or a reused
     * id, not a retry: answering it with the old message would lose the
     * new one without a word. */
    if (m->existed && !message_is_repeat(m, f)) {
        if (f->client_id)
            svc_fail(ctx, PARLEY__ERROR_CODE__CONFLICT,
                     "client_msg_id %llu already names another message; send with a new id",
                     (unsigned long long)f->client_id);
        else
            svc_fail(ctx, PARLEY__ERROR_CODE__CONFLICT, "duplicate request reference; send again");
        return;
    }
    Parley__SendOk *ok = arena_alloc(ctx->a, sizeof(*ok));
    parley__send_ok__init(ok);
    ok->msgid = m->msgid;
    ok->conv = m->conv;
    ok->seq = m->seq;
    ok->ts = (uint64_t)m->ts;
    Parley__ServerFrame *out = svc_reply(ctx);
    out->body_case = PARLEY__SERVER_FRAME__BODY_SEND_OK;
    out->send_ok = ok;
    /* Pushing a recalled message again would show its recipients an empty
     * message: they had it, or get it marked recalled from history. */
    if (!(m->existed && m->recalled))
        message_push(ctx, m, f);
}

/* Stores body in conv, pushed to to[0..n) (memory that outlives the
 * request's method): left to the runtime, which stores a batch's sends
 * together.
 *
 * The store keeps one message per (sender, ref). With the client's id as
 * the ref, a repeat from the client (after a lost reply, on another
 * connection or gateway, after a restart) finds the message it stored;
 * the gateway's own ref, for its retries, is not needed then: its retry
 * carries the same frame. Without a client id the gateway's ref stays
 * (0 in the embedded server, where nothing retries). Both are the same
 * sender's, so a random client id and a gateway ref could only collide by
 * chance (2^-64 a pair), and message_is_repeat turns that into an error. */
static void message_append(svc_ctx *ctx, uint64_t conv, const char *body, uint64_t client_id,
                           const uint64_t *to, size_t n, const char *group_name,
                           const store_upload *claim)
{
    message_fanout *f = arena_alloc(ctx->a, sizeof(*f));
    f->from_name = view_user_name(ctx, ctx->call->caller->user_id);
    f->group_name = group_name;
    f->conv = conv;
    f->to = to;
    f->n = n;
    f->body = body;
    f->body_len = strlen(body);
    f->client_id = client_id;
    f->att = NULL;
    f->own = message_want_own(ctx);
    store_append req = {.conv = conv,
                        .sender = ctx->call->caller->user_id,
                        .ref = client_id ? client_id : ctx->call->ref,
                        .body = body,
                        .body_len = f->body_len,
                        .ts = ctx->now_ms};
    if (claim) {
        /* The message and its file's reference are one unit: not left to
         * the batch's multi-row append, whose callback may not write. */
        f->att = file_view(ctx, &claim->f);
        store_msg m;
        store_status st = store_message_append_file(ctx->st, req.conv, req.sender, req.ref,
                                                    req.body, req.body_len, req.ts, claim, &m);
        message_stored(ctx, f, st, st == STORE_OK ? &m : NULL);
        return;
    }
    svc_defer_append(ctx, &req, message_stored, f);
}

/* The body of a send (the caption, when it carries a file: then it may be
 * empty) and its file, claimed from the caller's uploads into *claim. -1
 * with the request failed, or answered as a repeat. */
static int message_check_send(svc_ctx *ctx, const char *body, const Parley__Attachment *att,
                              uint64_t client_id, store_upload *claim)
{
    if (message_check_body(ctx, body, att ? 0 : 1) < 0)
        return -1;
    if (!att)
        return 0;
    /* A repeat finds the upload used by its first attempt: answered first. */
    if (message_answer_repeat(ctx, client_id, body))
        return -1;
    return file_claim(ctx, att, claim);
}

/* 1 if the sender may have other sessions to copy its send to. The
 * calling gateway counts its own; in a cluster (the only bus that can drain
 * a gateway) others may hold some, and the bus finds them in the lookup it
 * makes for the recipients anyway. With one session, embedded: no work. */
static int message_want_own(svc_ctx *ctx)
{
    return ctx->call->caller->local_sessions > 0 || ctx->bus->ops->drain != NULL;
}

/* Queues frame as an own copy for the caller's other sessions (BUS_OWN). */
static void message_push_own(svc_ctx *ctx, const Parley__ServerFrame *frame, uint64_t msgid)
{
    const Parley__Caller *c = ctx->call->caller;
    svc_pushq *p = arena_alloc(ctx->a, sizeof(*p));
    p->next = NULL;
    p->users = arena_alloc(ctx->a, sizeof(*p->users));
    p->users[0] = c->user_id;
    p->n = 1;
    p->msgid = msgid | BUS_OWN;
    size_t len = parley__server_frame__get_packed_size(frame);
    p->frame = blob_new(BUS_OWN_PREFIX + FRAME_HDR + len);
    uint32_t gw = c->gateway_id;
    uint64_t sess = c->session_id;
    memcpy(p->frame->data, &gw, 4);
    memcpy(p->frame->data + 4, &sess, 8);
    frame_put_header(p->frame->data + BUS_OWN_PREFIX, (uint32_t)len);
    parley__server_frame__pack(frame, p->frame->data + BUS_OWN_PREFIX + FRAME_HDR);
    *ctx->pushes_tail = p;
    ctx->pushes_tail = &p->next;
}

static void message_push(svc_ctx *ctx, const store_msg *m, const message_fanout *fan)
{
    Parley__ServerFrame f = PARLEY__SERVER_FRAME__INIT;
    f.body_case = PARLEY__SERVER_FRAME__BODY_MESSAGE;
    f.message = view_message(ctx, m);
    if (fan->from_name)
        f.message->from_name = (char *)fan->from_name;
    if (m->group && fan->group_name)
        f.message->group_name = (char *)fan->group_name;
    if (fan->att)
        f.message->attachment = (Parley__Attachment *)fan->att;
    svc_push(ctx, fan->to, fan->n, &f);
    if (fan->own)
        message_push_own(ctx, &f, m->msgid);
}

static void message_send_direct(svc_ctx *ctx)
{
    if (message_begin(ctx, PARLEY__CLIENT_FRAME__BODY_SEND_DIRECT) < 0)
        return;
    const Parley__SendDirect *r = ctx->call->frame->send_direct;
    uint64_t me = ctx->call->caller->user_id;
    store_upload claim;
    if (message_check_send(ctx, r->body, r->attachment, r->client_msg_id, &claim) < 0)
        return;
    if (r->to == me) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "you cannot send a message to yourself");
        return;
    }
    uint64_t conv;
    store_status st = store_direct_conv(ctx->st, me, r->to, &conv);
    if (st == STORE_NOT_FOUND) {
        svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND, "user %llu not found",
                 (unsigned long long)r->to);
        return;
    }
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "conversation");
        return;
    }
    message_append(ctx, conv, r->body, r->client_msg_id, &r->to, 1, NULL,
                   r->attachment ? &claim : NULL);
}

/* A send with client id client_id that its checks refuse may repeat one
 * stored before they changed (its sender has left the group since): the
 * repeat is owed the first answer. 1 if so, with the request answered (not
 * pushed again: the conversation's members may have changed as well), 0
 * if the refusal stands. */
static int message_answer_repeat(svc_ctx *ctx, uint64_t client_id, const char *body)
{
    store_msg m;
    if (!client_id ||
        store_message_by_ref(ctx->st, ctx->call->caller->user_id, client_id, &m) != STORE_OK)
        return 0;
    message_fanout f = {
        .conv = m.conv, .body = body, .body_len = strlen(body), .client_id = client_id};
    if (!message_is_repeat(&m, &f))
        return 0;
    message_stored(ctx, &f, STORE_OK, &m);
    return 1;
}

/* Checks that the caller is a member of gid; returns the group's
 * conversation in *conv, or -1 with the request failed (or, for a send
 * with a client id, answered as the repeat of one already stored). */
static int message_group_conv(svc_ctx *ctx, uint64_t gid, uint64_t *conv, uint64_t client_id,
                              const char *body, const char **name)
{
    store_group g;
    int role;
    store_status got = store_group_get(ctx->st, gid, &g), st = got;
    if (st == STORE_OK)
        st = store_group_role(ctx->st, gid, ctx->call->caller->user_id, &role);
    if (st == STORE_NOT_FOUND && message_answer_repeat(ctx, client_id, body))
        return -1;
    if (got == STORE_NOT_FOUND) {
        svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND, "group %llu not found",
                 (unsigned long long)gid);
        return -1;
    }
    if (st == STORE_NOT_FOUND) {
        svc_fail(ctx, PARLEY__ERROR_CODE__FORBIDDEN, "you are not a member of group %llu",
                 (unsigned long long)gid);
        return -1;
    }
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "group");
        return -1;
    }
    *conv = g.conv;
    if (name)
        *name = arena_strdup(ctx->a, g.name);
    return 0;
}

/* Every member of conv but the caller. */
static int message_others(svc_ctx *ctx, uint64_t conv, view_ids *out)
{
    view_ids all;
    view_ids_init(&all, ctx->a);
    view_ids_init(out, ctx->a);
    store_status st = store_conv_members(ctx->st, conv, view_ids_add, &all);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "conversation");
        return -1;
    }
    for (size_t i = 0; i < all.n; i++)
        if (all.v[i] != ctx->call->caller->user_id)
            view_ids_push(out, all.v[i]);
    return 0;
}

static void message_send_group(svc_ctx *ctx)
{
    if (message_begin(ctx, PARLEY__CLIENT_FRAME__BODY_SEND_GROUP) < 0)
        return;
    const Parley__SendGroup *r = ctx->call->frame->send_group;
    store_upload claim;
    if (message_check_send(ctx, r->body, r->attachment, r->client_msg_id, &claim) < 0)
        return;
    uint64_t conv;
    const char *gname = NULL;
    if (message_group_conv(ctx, r->group_id, &conv, r->client_msg_id, r->body, &gname) < 0)
        return;
    view_ids to;
    if (message_others(ctx, conv, &to) < 0)
        return;
    message_append(ctx, conv, r->body, r->client_msg_id, to.v, to.n, gname,
                   r->attachment ? &claim : NULL);
}

typedef struct {
    svc_ctx *ctx;
    Parley__Message **v;
    size_t n, cap;
} message_list;

static int message_collect(void *arg, const store_msg *m)
{
    message_list *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        Parley__Message **v = arena_alloc(l->ctx->a, cap * sizeof(*v));
        if (l->n)
            memcpy(v, l->v, l->n * sizeof(*v));
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = view_message(l->ctx, m);
    return 0;
}

static void message_history(svc_ctx *ctx)
{
    if (message_begin(ctx, PARLEY__CLIENT_FRAME__BODY_HISTORY) < 0)
        return;
    const Parley__History *r = ctx->call->frame->history;
    uint64_t me = ctx->call->caller->user_id, conv;
    store_status st;
    if ((r->peer != 0) == (r->group_id != 0)) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "history needs a peer or a group, not both");
        return;
    }
    if (r->group_id) {
        if (message_group_conv(ctx, r->group_id, &conv, 0, NULL, NULL) < 0)
            return;
    } else {
        if (r->peer == me) {
            svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "no conversation with yourself");
            return;
        }
        st = store_direct_conv(ctx->st, me, r->peer, &conv);
        if (st == STORE_NOT_FOUND) {
            svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND, "user %llu not found",
                     (unsigned long long)r->peer);
            return;
        }
        if (st != STORE_OK) {
            svc_fail_store(ctx, st, "conversation");
            return;
        }
    }
    unsigned limit = r->limit ? r->limit : LIMIT_HISTORY_DEFAULT;
    if (limit > LIMIT_HISTORY_MAX)
        limit = LIMIT_HISTORY_MAX;
    message_list l = {.ctx = ctx};
    st = store_history(ctx->st, conv, r->before_seq, limit, message_collect, &l);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "history");
        return;
    }
    Parley__HistoryOk *ok = arena_alloc(ctx->a, sizeof(*ok));
    parley__history_ok__init(ok);
    for (size_t i = 0; i < l.n; i++)
        view_message_names(ctx, l.v[i]);
    if (file_attach_views(ctx, l.v, l.n) < 0)
        return;
    ok->messages = l.v;
    ok->n_messages = l.n;
    Parley__ServerFrame *out = svc_reply(ctx);
    out->body_case = PARLEY__SERVER_FRAME__BODY_HISTORY_OK;
    out->history_ok = ok;
}

static void message_recall(svc_ctx *ctx)
{
    if (message_begin(ctx, PARLEY__CLIENT_FRAME__BODY_RECALL) < 0)
        return;
    uint64_t me = ctx->call->caller->user_id, msgid = ctx->call->frame->recall->msgid;
    store_msg m;
    store_status st = store_message_get(ctx->st, msgid, &m);
    if (st == STORE_NOT_FOUND) {
        svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND, "message %llu not found",
                 (unsigned long long)msgid);
        return;
    }
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "message");
        return;
    }
    if (m.sender != me || view_event_kind(m.body, m.body_len)) {
        svc_fail(ctx, PARLEY__ERROR_CODE__FORBIDDEN, "you can only recall your own messages");
        return;
    }
    if (ctx->now_ms - m.ts > (int64_t)ctx->cfg->recall_window_ms) {
        svc_fail(ctx, PARLEY__ERROR_CODE__EXPIRED,
                 "message %llu is older than the recall window of %u seconds",
                 (unsigned long long)msgid, ctx->cfg->recall_window_ms / 1000);
        return;
    }
    view_ids to;
    if (!m.recalled) {
        st = store_message_recall(ctx->st, msgid);
        if (st != STORE_OK) {
            svc_fail_store(ctx, st, "message");
            return;
        }
        if (file_recalled(ctx, msgid) < 0)
            return;
        if (message_others(ctx, m.conv, &to) < 0)
            return;
        Parley__ServerFrame f = PARLEY__SERVER_FRAME__INIT;
        Parley__RecallEvent ev = PARLEY__RECALL_EVENT__INIT;
        ev.msgid = msgid;
        ev.conv = m.conv;
        ev.by = me;
        f.body_case = PARLEY__SERVER_FRAME__BODY_RECALL_EVENT;
        f.recall_event = &ev;
        svc_push(ctx, to.v, to.n, &f);
    }
    Parley__Done *d = arena_alloc(ctx->a, sizeof(*d));
    parley__done__init(d);
    Parley__ServerFrame *out = svc_reply(ctx);
    out->body_case = PARLEY__SERVER_FRAME__BODY_DONE;
    out->done = d;
}

static int message_cursor_cmp(const void *x, const void *y)
{
    const Parley__Cursor *a = *(Parley__Cursor *const *)x, *b = *(Parley__Cursor *const *)y;
    if (a->conv != b->conv)
        return a->conv < b->conv ? -1 : 1;
    return a->user < b->user ? -1 : a->user > b->user;
}

static void message_ack(svc_ctx *ctx)
{
    /* The gateway's coalesced form: cursors of its logged-in sessions. A
     * cursor of a conversation the user is not in changes nothing. */
    if (ctx->call->n_acks) {
        /* Every batch takes its row locks in one global order, so that two
         * gateways' batches cannot deadlock each other. */
        qsort(ctx->call->acks, ctx->call->n_acks, sizeof(*ctx->call->acks), message_cursor_cmp);
        size_t n = 0;
        store_cursor *c = arena_alloc(ctx->a, ctx->call->n_acks * sizeof(*c));
        for (size_t i = 0; i < ctx->call->n_acks; i++) {
            const Parley__Cursor *a = ctx->call->acks[i];
            /* The gateway sends each (user, conversation) once; a repeat
             * from elsewhere would make the store's count of moved
             * cursors lie, so it goes. */
            if (n && c[n - 1].user == a->user && c[n - 1].conv == a->conv) {
                if (a->seq > c[n - 1].seq)
                    c[n - 1].seq = a->seq;
                continue;
            }
            c[n++] = (store_cursor){.user = a->user, .conv = a->conv, .seq = a->seq};
        }
        store_status st = store_ack_many(ctx->st, c, n);
        if (st != STORE_OK && st != STORE_NOT_FOUND)
            svc_fail_store(ctx, st, "cursor");
        return;
    }
    if (message_begin(ctx, PARLEY__CLIENT_FRAME__BODY_ACK) < 0)
        return;
    const Parley__Ack *r = ctx->call->frame->ack;
    store_status st = store_ack(ctx->st, ctx->call->caller->user_id, r->conv, r->seq);
    if (st == STORE_NOT_FOUND)
        svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND, "not a conversation of yours");
    else if (st != STORE_OK)
        svc_fail_store(ctx, st, "cursor");
}

static void message_sync(svc_ctx *ctx)
{
    if (svc_require_user(ctx) < 0)
        return;
    message_list l = {.ctx = ctx};
    store_status st = store_pending(ctx->st, ctx->call->caller->user_id, ctx->call->after_msgid,
                                    LIMIT_SYNC_BATCH, message_collect, &l);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "pending messages");
        return;
    }
    for (size_t i = 0; i < l.n; i++)
        view_message_names(ctx, l.v[i]);
    if (file_attach_views(ctx, l.v, l.n) < 0)
        return;
    ctx->res->messages = l.v;
    ctx->res->n_messages = l.n;
    ctx->res->more = l.n == LIMIT_SYNC_BATCH;
}

/* When each (reader, conversation) last told a group it read, per worker
 * thread (a conversation's calls go to one worker): at most one event a
 * second each. Direct-mapped; a collision only lets an event through. */
enum { MESSAGE_READ_SLOTS = 4096 };
static _Thread_local struct {
    uint64_t key;
    int64_t ms;
} message_read_last[MESSAGE_READ_SLOTS];

static int message_read_event_due(uint64_t user, uint64_t conv, int64_t now)
{
    uint64_t key = user * 0x9e3779b97f4a7c15ull ^ conv;
    size_t i = (size_t)((key * 0xff51afd7ed558ccdull) >> 52) % MESSAGE_READ_SLOTS;
    if (message_read_last[i].key == key && now - message_read_last[i].ms < 1000)
        return 0;
    message_read_last[i].key = key;
    message_read_last[i].ms = now;
    return 1;
}

/* Moves the caller's read cursor; tells the other party of a direct chat,
 * or the members of a group of at most LIMIT_READ_EVENT_MEMBERS. */
static void message_read(svc_ctx *ctx)
{
    if (message_begin(ctx, PARLEY__CLIENT_FRAME__BODY_READ) < 0)
        return;
    const Parley__Read *r = ctx->call->frame->read;
    uint64_t me = ctx->call->caller->user_id, prev, now;
    store_status st = store_read_set(ctx->st, me, r->conv, r->seq, &prev, &now);
    if (st == STORE_NOT_FOUND) {
        svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND, "not a conversation of yours");
        return;
    }
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "read cursor");
        return;
    }
    Parley__ServerFrame *out = svc_reply(ctx);
    Parley__Done *d = arena_alloc(ctx->a, sizeof(*d));
    parley__done__init(d);
    out->body_case = PARLEY__SERVER_FRAME__BODY_DONE;
    out->done = d;
    if (now <= prev)
        return;
    view_ids to;
    if (message_others(ctx, r->conv, &to) < 0)
        return;
    /* A direct conversation has the caller and one other; a group of two
     * is told as a direct chat would be, which is what it looks like. The
     * caller's other sessions are told always: what was read there is not
     * unread here (every device in sync). */
    int others = to.n <= 1 || (to.n < LIMIT_READ_EVENT_MEMBERS &&
                               message_read_event_due(me, r->conv, ctx->now_ms));
    int own = message_want_own(ctx);
    if (!others && !own)
        return;
    Parley__ReadEvent ev = PARLEY__READ_EVENT__INIT;
    ev.conv = r->conv;
    ev.user = me;
    ev.seq = now;
    /* Which group: the newest message says (one row of an index). */
    message_list last = {.ctx = ctx};
    if (store_history(ctx->st, r->conv, 0, 1, message_collect, &last) == STORE_OK && last.n)
        ev.group = last.v[0]->group;
    const char *name = view_user_name(ctx, me);
    ev.user_name = name ? (char *)name : "";
    Parley__ServerFrame f = PARLEY__SERVER_FRAME__INIT;
    f.body_case = PARLEY__SERVER_FRAME__BODY_READ_EVENT;
    f.read_event = &ev;
    if (others)
        svc_push(ctx, to.v, to.n, &f);
    if (own)
        message_push_own(ctx, &f, 0);
}

static const svc_method_fn message_methods[] = {
    message_send_direct, message_send_group, message_history, message_recall, message_ack,
    message_sync,        file_begin,         file_chunk,      file_get,       message_read,
};

const svc_def svc_message = {
    .desc = &parley__message_service__descriptor,
    .methods = message_methods,
    /* A coalesced ack touches the cursors of many conversations: batched with
     * sends, whose conversations it shares, it would deadlock them (where
     * writers can deadlock at all). */
    .alone = 1u << 4,
    /* History and Sync only read: nobody needs them once the caller left.
     * Nor a file request: a client that comes back asks where its upload
     * stands (FileBegin) and goes on from the offset stored. */
    .droppable = (1u << 2) | (1u << 5) | (1u << 6) | (1u << 7) | (1u << 8),
    /* All but recall, whose change must go if its push cannot be built,
     * and the file methods, which write several rows. A send's new direct
     * conversation may stay without its message; a send with a file makes
     * its writes one unit itself (store_message_append_file). */
    .atomic = ~((1u << 3) | (1u << 6) | (1u << 7) | (1u << 8)),
    /* FileBegin, FileChunk, FileGet: on the file pool, off the store
     * worker that commits everyone's sends (services/file.c). */
    .file = (1u << 6) | (1u << 7) | (1u << 8),
};
