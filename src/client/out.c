/*
 * out: see out.h. JSON is built with json.h; the human form with a small
 * text buffer (tbuf) that also neutralises control characters in text that
 * came from other users, so a message cannot move the cursor or recolour
 * the terminal.
 */
#include "client/out.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/json.h"

/* ---- text buffer for the human form ---- */

typedef struct tbuf {
    char *p;
    size_t len, cap;
    bool failed;
} tbuf;

static bool tbuf_reserve(tbuf *t, size_t n)
{
    if (t->failed)
        return false;
    if (t->len + n + 1 <= t->cap)
        return true;
    size_t cap = t->cap ? t->cap : 256;
    while (cap < t->len + n + 1)
        cap *= 2;
    char *p = realloc(t->p, cap);
    if (!p) {
        t->failed = true;
        return false;
    }
    t->p = p;
    t->cap = cap;
    return true;
}

static void tbuf_raw(tbuf *t, const char *s, size_t n)
{
    if (!tbuf_reserve(t, n))
        return;
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

static void tbuf_str(tbuf *t, const char *s)
{
    tbuf_raw(t, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void tbuf_printf(tbuf *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !tbuf_reserve(t, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(t->p + t->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

/* Appends text from the network with control characters made visible:
 * newline and tab as \n and \t, others (C0, DEL, and C1 encoded in UTF-8)
 * as \xHH. */
static void tbuf_safe(tbuf *t, const char *s)
{
    char esc[8];
    for (size_t i = 0; s && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') {
            tbuf_str(t, "\\n");
        } else if (c == '\t') {
            tbuf_str(t, "\\t");
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof(esc), "\\x%02x", c);
            tbuf_raw(t, esc, strlen(esc));
        } else if (c == 0xc2 && (unsigned char)s[i + 1] >= 0x80 &&
                   (unsigned char)s[i + 1] <= 0x9f) {
            snprintf(esc, sizeof(esc), "\\x%02x", (unsigned char)s[i + 1]);
            tbuf_raw(t, esc, strlen(esc));
            i++;
        } else {
            tbuf_raw(t, s + i, 1);
        }
    }
}

static void tbuf_free(tbuf *t)
{
    free(t->p);
    memset(t, 0, sizeof(*t));
}

/* ---- sinks ---- */

static void out_stdout_sink(void *ctx, const char *text, size_t len)
{
    out_ctx *o = ctx;
    if (fwrite(text, 1, len, stdout) != len || fflush(stdout) != 0)
        o->failed = true;
}

void out_init(out_ctx *o, bool json)
{
    memset(o, 0, sizeof(*o));
    o->json = json;
    o->sink = out_stdout_sink;
    o->sink_ctx = o;
}

void out_free(out_ctx *o)
{
    for (size_t i = 0; i < o->nnames; i++)
        free(o->names[i].name);
    free(o->names);
    o->names = NULL;
    o->nnames = 0;
    o->names_cap = 0;
    for (size_t i = 0; i < o->ngroups; i++)
        free(o->groups[i].name);
    free(o->groups);
    o->groups = NULL;
    o->ngroups = 0;
    o->groups_cap = 0;
    free(o->convs);
    o->convs = NULL;
    o->nconvs = o->convs_cap = 0;
}

/* The entry of conv, made on first use; NULL on OOM. */
static out_conv *out_conv_of(out_ctx *o, uint64_t conv)
{
    for (size_t i = 0; i < o->nconvs; i++)
        if (o->convs[i].conv == conv)
            return &o->convs[i];
    if (o->nconvs == o->convs_cap) {
        size_t cap = o->convs_cap ? o->convs_cap * 2 : 16;
        out_conv *v = realloc(o->convs, cap * sizeof(*v));
        if (!v)
            return NULL;
        o->convs = v;
        o->convs_cap = cap;
    }
    out_conv *c = &o->convs[o->nconvs++];
    memset(c, 0, sizeof(*c));
    c->conv = conv;
    return c;
}

void out_mark_read(out_ctx *o, uint64_t conv, uint64_t seq)
{
    out_conv *c = out_conv_of(o, conv);
    if (!c || seq <= c->read_seq)
        return;
    /* Each seq above the cursor that was unread: at most what it covers. */
    uint64_t covered = seq - c->read_seq;
    c->unread = covered >= c->unread || seq >= c->last_seq ? 0 : c->unread - covered;
    c->read_seq = seq;
    if (seq > c->last_seq)
        c->last_seq = seq;
}

/* Remembers id's name in a table; best effort (a failed allocation only
 * loses it). */
static void out_learn_in(out_name **tab, size_t *n, size_t *cap, uint64_t id, const char *name)
{
    if (id == 0 || !name || !name[0])
        return;
    for (size_t i = 0; i < *n; i++) {
        if ((*tab)[i].id == id) {
            if (strcmp((*tab)[i].name, name) != 0) {
                char *copy = strdup(name);
                if (copy) {
                    free((*tab)[i].name);
                    (*tab)[i].name = copy;
                }
            }
            return;
        }
    }
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        out_name *t = realloc(*tab, ncap * sizeof(*t));
        if (!t)
            return;
        *tab = t;
        *cap = ncap;
    }
    char *copy = strdup(name);
    if (!copy)
        return;
    (*tab)[*n].id = id;
    (*tab)[*n].name = copy;
    (*n)++;
}

static void out_learn(out_ctx *o, uint64_t id, const char *name)
{
    out_learn_in(&o->names, &o->nnames, &o->names_cap, id, name);
}

int out_find_user(const out_ctx *o, const char *name, uint64_t *id)
{
    for (size_t i = 0; i < o->nnames; i++)
        if (strcmp(o->names[i].name, name) == 0) {
            *id = o->names[i].id;
            return 1;
        }
    return 0;
}

int out_find_group(const out_ctx *o, const char *name, uint64_t *id)
{
    int found = 0;
    for (size_t i = 0; i < o->ngroups; i++)
        if (strcmp(o->groups[i].name, name) == 0) {
            if (found)
                return -1;
            *id = o->groups[i].id;
            found = 1;
        }
    return found;
}

static const char *out_lookup(const out_ctx *o, uint64_t id)
{
    for (size_t i = 0; i < o->nnames; i++)
        if (o->names[i].id == id)
            return o->names[i].name;
    return NULL;
}

static void out_learn_lists(out_ctx *o, size_t nf, Parley__User *const *friends, size_t ng,
                            Parley__Group *const *groups)
{
    for (size_t i = 0; i < nf; i++)
        out_learn(o, friends[i]->id, friends[i]->name);
    for (size_t i = 0; i < ng; i++) {
        out_learn_in(&o->groups, &o->ngroups, &o->groups_cap, groups[i]->id, groups[i]->name);
        for (size_t k = 0; k < groups[i]->n_members; k++)
            out_learn(o, groups[i]->members[k]->id, groups[i]->members[k]->name);
    }
}

void out_set_sink(out_ctx *o, out_sink_fn sink, void *ctx)
{
    o->sink = sink ? sink : out_stdout_sink;
    o->sink_ctx = sink ? ctx : o;
}

static void out_emit(out_ctx *o, const char *text, size_t len)
{
    if (len > 0)
        o->sink(o->sink_ctx, text, len);
}

/* Ends a JSON line and hands it to the sink. */
static void out_json_done(out_ctx *o, json_writer *j)
{
    if (!json_ok(j)) {
        fprintf(stderr, "parley: out of memory formatting output\n");
        json_free(j);
        return;
    }
    size_t len = strlen(json_text(j));
    char *line = malloc(len + 2);
    if (!line) {
        fprintf(stderr, "parley: out of memory formatting output\n");
        json_free(j);
        return;
    }
    memcpy(line, json_text(j), len);
    line[len] = '\n';
    line[len + 1] = '\0';
    out_emit(o, line, len + 1);
    free(line);
    json_free(j);
}

static void out_text_done(out_ctx *o, tbuf *t)
{
    if (t->failed)
        fprintf(stderr, "parley: out of memory formatting output\n");
    else if (t->len > 0)
        out_emit(o, t->p, t->len);
    tbuf_free(t);
}

const char *out_code_name(int code)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&parley__error_code__descriptor, code);
    return v ? v->name : "UNKNOWN";
}

static const char *out_role_name(Parley__Role r)
{
    switch (r) {
    case PARLEY__ROLE__ROLE_CREATOR:
        return "creator";
    case PARLEY__ROLE__ROLE_NORMAL:
        return "normal";
    default:
        return "none";
    }
}

/* ---- shared records, JSON ---- */

static void out_json_users(json_writer *j, const char *key, size_t n, Parley__User *const *users)
{
    json_key(j, key);
    json_arr_begin(j);
    for (size_t i = 0; i < n; i++) {
        json_obj_begin(j);
        json_ku64(j, "id", users[i]->id);
        json_kstr(j, "name", users[i]->name);
        json_kbool(j, "online", users[i]->online);
        json_obj_end(j);
    }
    json_arr_end(j);
}

static void out_json_groups(json_writer *j, size_t n, Parley__Group *const *groups)
{
    json_key(j, "groups");
    json_arr_begin(j);
    for (size_t i = 0; i < n; i++) {
        const Parley__Group *g = groups[i];
        json_obj_begin(j);
        json_ku64(j, "id", g->id);
        json_kstr(j, "name", g->name);
        json_kstr(j, "desc", g->desc);
        json_key(j, "members");
        json_arr_begin(j);
        for (size_t k = 0; k < g->n_members; k++) {
            json_obj_begin(j);
            json_ku64(j, "id", g->members[k]->id);
            json_kstr(j, "name", g->members[k]->name);
            json_kstr(j, "role", out_role_name(g->members[k]->role));
            json_obj_end(j);
        }
        json_arr_end(j);
        json_obj_end(j);
    }
    json_arr_end(j);
}

static void out_hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

/* "file": {name, size, type, sha256 (hex)} */
static void out_json_file(json_writer *j, const char *name, uint64_t size, const char *type,
                          const uint8_t *sha256, size_t sha_len)
{
    char hex[65] = "";
    if (sha_len == 32)
        out_hex(sha256, 32, hex);
    json_key(j, "file");
    json_obj_begin(j);
    json_kstr(j, "name", name ? name : "");
    json_ku64(j, "size", size);
    json_kstr(j, "type", type ? type : "");
    json_kstr(j, "sha256", hex);
    json_obj_end(j);
}

/* A social event's kind as --json names it; NULL for a text. */
static const char *out_kind_name(Parley__MessageKind k)
{
    switch (k) {
    case PARLEY__MESSAGE_KIND__TEXT:
        return NULL;
    case PARLEY__MESSAGE_KIND__FRIEND_ADDED:
        return "friend_added";
    case PARLEY__MESSAGE_KIND__FRIEND_REMOVED:
        return "friend_removed";
    case PARLEY__MESSAGE_KIND__MEMBER_JOINED:
        return "member_joined";
    case PARLEY__MESSAGE_KIND__MEMBER_LEFT:
        return "member_left";
    case PARLEY__MESSAGE_KIND__MEMBER_REMOVED:
        return "member_removed";
    case PARLEY__MESSAGE_KIND__GROUP_RENAMED:
        return "group_renamed";
    default:
        return "event";
    }
}

/* A social event ({"type":"social"}): who did what, where. */
static void out_json_social(json_writer *j, const Parley__Message *m)
{
    json_obj_begin(j);
    json_kstr(j, "type", "social");
    json_kstr(j, "kind", out_kind_name(m->kind));
    json_ku64(j, "msgid", m->msgid);
    json_ku64(j, "seq", m->seq);
    json_ku64(j, "conv", m->conv);
    json_ku64(j, "by", m->from);
    if (m->from_name && m->from_name[0])
        json_kstr(j, "by_name", m->from_name);
    if (m->group) {
        json_ku64(j, "group", m->group);
        if (m->group_name && m->group_name[0])
            json_kstr(j, "group_name", m->group_name);
    } else {
        json_ku64(j, "to", m->to);
    }
    json_ku64(j, "ts", m->ts);
    json_obj_end(j);
}

static void out_json_message(json_writer *j, const Parley__Message *m)
{
    if (m->kind != PARLEY__MESSAGE_KIND__TEXT) {
        out_json_social(j, m);
        return;
    }
    json_obj_begin(j);
    json_kstr(j, "type", "message");
    json_ku64(j, "msgid", m->msgid);
    json_ku64(j, "seq", m->seq);
    json_ku64(j, "conv", m->conv);
    json_ku64(j, "from", m->from);
    if (m->from_name && m->from_name[0])
        json_kstr(j, "from_name", m->from_name);
    if (m->group)
        json_ku64(j, "group", m->group);
    if (m->group && m->group_name && m->group_name[0])
        json_kstr(j, "group_name", m->group_name);
    else
        json_ku64(j, "to", m->to);
    json_kstr(j, "body", m->body);
    json_ku64(j, "ts", m->ts);
    if (m->recalled)
        json_kbool(j, "recalled", true);
    if (m->attachment)
        out_json_file(j, m->attachment->name, m->attachment->size, m->attachment->type,
                      m->attachment->sha256.data, m->attachment->sha256.len);
    json_obj_end(j);
}

/* ---- shared records, human ---- */

/* "alice", "user 1" (name unknown) or "you". User names are unique, so a
 * name alone says who it is. */
static void out_text_user(out_ctx *o, tbuf *t, uint64_t id, const char *name)
{
    if (!name || !name[0])
        name = out_lookup(o, id);
    if (o->me && id == o->me)
        tbuf_str(t, "you");
    else if (name && name[0])
        tbuf_safe(t, name);
    else
        tbuf_printf(t, "user %" PRIu64, id);
}

/* "[12:01] " for a time today, "[2026-12-03 12:01] " for any other day;
 * ts_ms 0 means now. */
static void out_text_time(tbuf *t, uint64_t ts_ms)
{
    time_t now = time(NULL);
    time_t secs = ts_ms ? (time_t)(ts_ms / 1000) : now;
    struct tm tm, today;
    char buf[32];
    if (!localtime_r(&secs, &tm) || !localtime_r(&now, &today))
        return;
    bool same_day = tm.tm_year == today.tm_year && tm.tm_yday == today.tm_yday;
    strftime(buf, sizeof(buf), same_day ? "[%H:%M] " : "[%Y-%m-%d %H:%M] ", &tm);
    tbuf_raw(t, buf, strlen(buf));
}

/* The start of an event line: its time, and a star. */
static void out_text_event(tbuf *t)
{
    out_text_time(t, 0);
    tbuf_str(t, "* ");
}

/* "[team]" when the group's name is known, "[team (1)]" when another
 * known group has that name too (group names need not be unique), else
 * "[group 1]". */
static void out_text_group(out_ctx *o, tbuf *t, uint64_t gid)
{
    const char *name = NULL;
    for (size_t i = 0; i < o->ngroups; i++)
        if (o->groups[i].id == gid)
            name = o->groups[i].name;
    int twin = 0;
    for (size_t i = 0; name && i < o->ngroups; i++)
        if (o->groups[i].id != gid && strcmp(o->groups[i].name, name) == 0)
            twin = 1;
    if (name) {
        tbuf_str(t, "[");
        tbuf_safe(t, name);
        if (twin)
            tbuf_printf(t, " (%" PRIu64 ")", gid);
        tbuf_str(t, "] ");
    } else {
        tbuf_printf(t, "[group %" PRIu64 "] ", gid);
    }
}

/* "12.3 KiB" */
static void out_text_size(tbuf *t, uint64_t n)
{
    if (n < 1024)
        tbuf_printf(t, "%" PRIu64 " bytes", n);
    else if (n < 1024 * 1024)
        tbuf_printf(t, "%.1f KiB", n / 1024.0);
    else
        tbuf_printf(t, "%.1f MiB", n / (1024.0 * 1024.0));
}

/* "[file photo.png, 1.2 MiB, image/png]" */
static void out_text_file(tbuf *t, const char *name, uint64_t size, const char *type)
{
    tbuf_str(t, "[file ");
    tbuf_safe(t, name && name[0] ? name : "(no name)");
    tbuf_str(t, ", ");
    out_text_size(t, size);
    if (type && type[0]) {
        tbuf_str(t, ", ");
        tbuf_safe(t, type);
    }
    tbuf_str(t, "]");
}

/* "[12:01] * bob added you as a friend", "[12:01] [team] * carol joined". */
static void out_text_social(out_ctx *o, tbuf *t, const Parley__Message *m)
{
    out_text_time(t, m->ts);
    if (m->group)
        out_text_group(o, t, m->group);
    tbuf_str(t, "* ");
    out_text_user(o, t, m->from, m->from_name);
    switch (m->kind) {
    case PARLEY__MESSAGE_KIND__FRIEND_ADDED:
    case PARLEY__MESSAGE_KIND__FRIEND_REMOVED:
        tbuf_str(t, m->kind == PARLEY__MESSAGE_KIND__FRIEND_ADDED ? " added " : " removed ");
        out_text_user(o, t, o->me && m->from == o->me ? m->to : o->me, NULL);
        tbuf_str(t, m->kind == PARLEY__MESSAGE_KIND__FRIEND_ADDED ? " as a friend"
                                                                  : " as a friend (no more)");
        break;
    case PARLEY__MESSAGE_KIND__MEMBER_JOINED:
        tbuf_str(t, " joined");
        break;
    case PARLEY__MESSAGE_KIND__MEMBER_LEFT:
        tbuf_str(t, " left");
        break;
    default:
        tbuf_printf(t, " (%s)", out_kind_name(m->kind));
        break;
    }
    tbuf_str(t, "\n");
}

static void out_text_message(out_ctx *o, tbuf *t, const Parley__Message *m)
{
    if (m->kind != PARLEY__MESSAGE_KIND__TEXT) {
        out_text_social(o, t, m);
        return;
    }
    out_text_time(t, m->ts);
    if (m->group) {
        out_text_group(o, t, m->group);
        out_text_user(o, t, m->from, m->from_name);
    } else {
        out_text_user(o, t, m->from, m->from_name);
        tbuf_str(t, " -> ");
        out_text_user(o, t, m->to, NULL);
    }
    tbuf_str(t, ": ");
    if (m->recalled)
        tbuf_str(t, "(recalled)");
    else
        tbuf_safe(t, m->body);
    if (m->attachment && !m->recalled) {
        const Parley__Attachment *a = m->attachment;
        if (m->body && m->body[0])
            tbuf_str(t, " ");
        out_text_file(t, a->name, a->size, a->type);
        tbuf_printf(t, " (getfile:%" PRIu64 ":PATH)", m->msgid);
    }
    tbuf_printf(t, "  #msg %" PRIu64 "\n", m->msgid);
}

/* A send of ours as a conversation line, without its end:
 * "[12:01] you -> bob (2): hi" or "[12:01] [group 1] you: hi". */
static void out_text_own_send(out_ctx *o, tbuf *t, cmd_kind kind, uint64_t to, uint64_t ts_ms,
                              const char *body)
{
    out_text_time(t, ts_ms);
    if (kind == CMD_GROUPCHAT || kind == CMD_GROUPSENDFILE) {
        out_text_group(o, t, to);
        tbuf_str(t, "you");
    } else {
        tbuf_str(t, "you -> ");
        out_text_user(o, t, to, NULL);
    }
    tbuf_str(t, ": ");
    tbuf_safe(t, body ? body : "");
}

static void out_text_lists(out_ctx *o, tbuf *t, size_t nf, Parley__User *const *friends, size_t ng,
                           Parley__Group *const *groups)
{
    if (nf == 0) {
        tbuf_printf(t, "friends: none\n");
    } else {
        tbuf_printf(t, "friends (%zu):\n  %-8s %-20s %s\n", nf, "ID", "NAME", "STATUS");
        for (size_t i = 0; i < nf; i++) {
            tbuf_printf(t, "  %-8" PRIu64 " ", friends[i]->id);
            size_t before = t->len;
            tbuf_safe(t, friends[i]->name);
            size_t w = t->len - before;
            tbuf_printf(t, "%*s %s\n", w < 20 ? (int)(20 - w) : 0, "",
                        friends[i]->online ? "online" : "offline");
        }
    }
    if (ng == 0) {
        tbuf_printf(t, "groups: none\n");
        return;
    }
    tbuf_printf(t, "groups (%zu):\n", ng);
    for (size_t i = 0; i < ng; i++) {
        const Parley__Group *g = groups[i];
        tbuf_printf(t, "  %-8" PRIu64 " ", g->id);
        tbuf_safe(t, g->name);
        if (g->desc && g->desc[0]) {
            tbuf_str(t, " - ");
            tbuf_safe(t, g->desc);
        }
        tbuf_str(t, "\n           members: ");
        for (size_t k = 0; k < g->n_members; k++) {
            const Parley__Member *m = g->members[k];
            if (k > 0)
                tbuf_str(t, ", ");
            if (m->name && m->name[0]) {
                tbuf_safe(t, m->name);
                tbuf_printf(t, " (%" PRIu64, m->id);
            } else {
                tbuf_printf(t, "(%" PRIu64, m->id);
            }
            if (m->role == PARLEY__ROLE__ROLE_CREATOR)
                tbuf_str(t, ", creator");
            tbuf_str(t, ")");
        }
        if (g->n_members == 0)
            tbuf_str(t, "none");
        tbuf_str(t, "\n");
    }
    (void)o;
}

/* ---- replies ---- */

/* A client_msg_id as a JSON string: 64 bits do not fit a JSON number that
 * every reader takes exactly (JavaScript's stop at 2^53). */
static void out_json_cmid(json_writer *j, uint64_t cmid)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%" PRIu64, cmid);
    json_kstr(j, "client_msg_id", buf);
}

static void out_json_reply_ok(json_writer *j, cmd_kind kind, uint64_t cmid,
                              const Parley__ServerFrame *f)
{
    json_obj_begin(j);
    json_kstr(j, "type", "reply");
    json_kstr(j, "cmd", cmd_name(kind));
    json_kbool(j, "ok", true);
    switch (kind) {
    case CMD_REGISTER:
        if (f->body_case == PARLEY__SERVER_FRAME__BODY_REGISTER_OK)
            json_ku64(j, "id", f->register_ok->user_id);
        break;
    case CMD_LOGIN:
        if (f->body_case == PARLEY__SERVER_FRAME__BODY_LOGIN_OK) {
            const Parley__LoginOk *l = f->login_ok;
            json_ku64(j, "id", l->user ? l->user->id : 0);
            json_kstr(j, "name", l->user ? l->user->name : "");
            out_json_users(j, "friends", l->n_friends, l->friends);
            out_json_groups(j, l->n_groups, l->groups);
            json_key(j, "unread");
            json_arr_begin(j);
            for (size_t i = 0; i < l->n_unread; i++) {
                const Parley__Unread *u = l->unread[i];
                json_obj_begin(j);
                json_ku64(j, "conv", u->conv);
                if (u->group)
                    json_ku64(j, "group", u->group);
                else
                    json_ku64(j, "peer", u->peer);
                if (u->name && u->name[0])
                    json_kstr(j, "name", u->name);
                json_ku64(j, "count", u->count);
                json_ku64(j, "last_read_seq", u->last_read_seq);
                json_ku64(j, "last_seq", u->last_seq);
                json_obj_end(j);
            }
            json_arr_end(j);
        }
        break;
    case CMD_CREATEGROUP:
        if (f->body_case == PARLEY__SERVER_FRAME__BODY_GROUP_CREATE_OK)
            json_ku64(j, "id", f->group_create_ok->group_id);
        break;
    case CMD_CHAT:
    case CMD_GROUPCHAT:
        if (f->body_case == PARLEY__SERVER_FRAME__BODY_SEND_OK) {
            json_ku64(j, "msgid", f->send_ok->msgid);
            json_ku64(j, "seq", f->send_ok->seq);
            json_ku64(j, "conv", f->send_ok->conv);
        }
        if (cmid)
            out_json_cmid(j, cmid);
        break;
    case CMD_SHOWFRIENDLIST:
        if (f->body_case == PARLEY__SERVER_FRAME__BODY_FRIEND_LIST_OK) {
            const Parley__FriendListOk *l = f->friend_list_ok;
            out_json_users(j, "friends", l->n_friends, l->friends);
            out_json_groups(j, l->n_groups, l->groups);
        } else {
            out_json_users(j, "friends", 0, NULL);
            out_json_groups(j, 0, NULL);
        }
        break;
    case CMD_WHOIS:
        if (f->body_case == PARLEY__SERVER_FRAME__BODY_WHOIS_OK && f->whois_ok->user) {
            json_ku64(j, "id", f->whois_ok->user->id);
            json_kstr(j, "name", f->whois_ok->user->name);
            json_kbool(j, "online", f->whois_ok->user->online);
        }
        break;
    case CMD_WHO: {
        size_t n = 0;
        Parley__User **on = NULL;
        if (f->body_case == PARLEY__SERVER_FRAME__BODY_FRIEND_LIST_OK) {
            on = f->friend_list_ok->friends;
            n = f->friend_list_ok->n_friends;
        }
        json_key(j, "online");
        json_arr_begin(j);
        for (size_t i = 0; i < n; i++) {
            if (!on[i]->online)
                continue;
            json_obj_begin(j);
            json_ku64(j, "id", on[i]->id);
            json_kstr(j, "name", on[i]->name);
            json_obj_end(j);
        }
        json_arr_end(j);
        break;
    }
    case CMD_HISTORY:
    case CMD_GROUPHISTORY:
        /* Texts in messages, social events apart in events: a script
         * reading messages keeps seeing texts only. */
        for (int ev = 0; ev < 2; ev++) {
            json_key(j, ev ? "events" : "messages");
            json_arr_begin(j);
            if (f->body_case == PARLEY__SERVER_FRAME__BODY_HISTORY_OK)
                for (size_t i = 0; i < f->history_ok->n_messages; i++) {
                    const Parley__Message *m = f->history_ok->messages[i];
                    if ((m->kind != PARLEY__MESSAGE_KIND__TEXT) == ev)
                        out_json_message(j, m);
                }
            json_arr_end(j);
        }
        break;
    case CMD_FIND:
        json_key(j, "users");
        json_arr_begin(j);
        if (f->body_case == PARLEY__SERVER_FRAME__BODY_FIND_OK)
            for (size_t i = 0; i < f->find_ok->n_users; i++) {
                json_obj_begin(j);
                json_ku64(j, "id", f->find_ok->users[i]->id);
                json_kstr(j, "name", f->find_ok->users[i]->name);
                json_obj_end(j);
            }
        json_arr_end(j);
        json_kbool(j, "more",
                   f->body_case == PARLEY__SERVER_FRAME__BODY_FIND_OK && f->find_ok->more);
        break;
    default:
        break;
    }
    json_obj_end(j);
}

static void out_learn_unread(out_ctx *o, const Parley__LoginOk *l, tbuf *t);

static void out_text_reply_ok(out_ctx *o, tbuf *t, cmd_kind kind, uint64_t arg, const char *body,
                              const Parley__ServerFrame *f)
{
    switch (kind) {
    case CMD_REGISTER:
        if (f->body_case == PARLEY__SERVER_FRAME__BODY_REGISTER_OK)
            tbuf_printf(t, "ok: registered, your id is %" PRIu64 "\n", f->register_ok->user_id);
        else
            tbuf_printf(t, "ok: registered\n");
        break;
    case CMD_LOGIN:
        if (f->body_case == PARLEY__SERVER_FRAME__BODY_LOGIN_OK && f->login_ok->user) {
            const Parley__LoginOk *l = f->login_ok;
            tbuf_str(t, "ok: logged in as ");
            tbuf_safe(t, l->user->name);
            tbuf_printf(t, " (%" PRIu64 ")\n", l->user->id);
            out_text_lists(o, t, l->n_friends, l->friends, l->n_groups, l->groups);
            out_learn_unread(o, l, t);
        } else {
            tbuf_printf(t, "ok: logged in\n");
        }
        break;
    case CMD_CHAT:
    case CMD_GROUPCHAT:
        /* Stored by the server: the line, with a mark and the id recall
         * takes. */
        if (f->body_case == PARLEY__SERVER_FRAME__BODY_SEND_OK) {
            out_text_own_send(o, t, kind, arg, f->send_ok->ts, body);
            tbuf_printf(t, "  \u2713 #msg %" PRIu64 "\n", f->send_ok->msgid);
        } else {
            out_text_own_send(o, t, kind, arg, 0, body);
            tbuf_str(t, "  \u2713\n");
        }
        break;
    case CMD_ADDFRIEND:
        tbuf_printf(t, "ok: user %" PRIu64 " is now your friend\n", arg);
        break;
    case CMD_DELFRIEND:
        tbuf_printf(t, "ok: user %" PRIu64 " is no longer your friend\n", arg);
        break;
    case CMD_CREATEGROUP:
        if (f->body_case == PARLEY__SERVER_FRAME__BODY_GROUP_CREATE_OK)
            tbuf_printf(t, "ok: created group %" PRIu64 "\n", f->group_create_ok->group_id);
        else
            tbuf_printf(t, "ok: created the group\n");
        break;
    case CMD_ADDGROUP:
        tbuf_printf(t, "ok: joined group %" PRIu64 "\n", arg);
        break;
    case CMD_QUITGROUP:
        tbuf_printf(t, "ok: left group %" PRIu64 "\n", arg);
        break;
    case CMD_DELGROUP:
        tbuf_printf(t, "ok: deleted group %" PRIu64 "\n", arg);
        break;
    case CMD_RECALL:
        tbuf_printf(t, "ok: recalled message %" PRIu64 "\n", arg);
        break;
    case CMD_LOGOUT:
        tbuf_printf(t, "ok: logged out\n");
        break;
    case CMD_SHOWFRIENDLIST:
        if (f->body_case == PARLEY__SERVER_FRAME__BODY_FRIEND_LIST_OK)
            out_text_lists(o, t, f->friend_list_ok->n_friends, f->friend_list_ok->friends,
                           f->friend_list_ok->n_groups, f->friend_list_ok->groups);
        else
            out_text_lists(o, t, 0, NULL, 0, NULL);
        break;
    case CMD_WHOIS:
        if (f->body_case == PARLEY__SERVER_FRAME__BODY_WHOIS_OK && f->whois_ok->user) {
            const Parley__User *u = f->whois_ok->user;
            tbuf_safe(t, u->name);
            tbuf_printf(t, " is user %" PRIu64 "%s\n", u->id, u->online ? ", online" : "");
        } else {
            tbuf_str(t, "ok\n");
        }
        break;
    case CMD_FIND: {
        size_t n = f->body_case == PARLEY__SERVER_FRAME__BODY_FIND_OK ? f->find_ok->n_users : 0;
        if (n == 0) {
            tbuf_str(t, "nobody found\n");
            break;
        }
        for (size_t i = 0; i < n; i++) {
            tbuf_str(t, i ? ", " : "found: ");
            tbuf_safe(t, f->find_ok->users[i]->name);
            tbuf_printf(t, " (%" PRIu64 ")", f->find_ok->users[i]->id);
        }
        tbuf_str(t, "\n");
        if (f->find_ok->more) {
            tbuf_str(t, "more: find:PREFIX:");
            tbuf_safe(t, f->find_ok->users[n - 1]->name);
            tbuf_str(t, "\n");
        }
        break;
    }
    case CMD_WHO: {
        size_t n = 0, shown = 0;
        Parley__User **fr = NULL;
        if (f->body_case == PARLEY__SERVER_FRAME__BODY_FRIEND_LIST_OK) {
            fr = f->friend_list_ok->friends;
            n = f->friend_list_ok->n_friends;
        }
        for (size_t i = 0; i < n; i++) {
            if (!fr[i]->online)
                continue;
            tbuf_str(t, shown++ ? ", " : "online: ");
            tbuf_safe(t, fr[i]->name);
        }
        tbuf_str(t, shown ? "\n" : "none of your friends is online\n");
        break;
    }
    case CMD_HISTORY:
    case CMD_GROUPHISTORY: {
        const char *what = kind == CMD_HISTORY ? "user" : "group";
        size_t n =
            f->body_case == PARLEY__SERVER_FRAME__BODY_HISTORY_OK ? f->history_ok->n_messages : 0;
        if (n == 0) {
            tbuf_printf(t, "no messages with %s %" PRIu64 "\n", what, arg);
            break;
        }
        tbuf_printf(t, "history with %s %" PRIu64 " (%zu message%s):\n", what, arg, n,
                    n == 1 ? "" : "s");
        for (size_t i = 0; i < n; i++) {
            tbuf_str(t, "  ");
            out_text_message(o, t, f->history_ok->messages[i]);
        }
        break;
    }
    default:
        tbuf_printf(t, "ok\n");
        break;
    }
}

/* The unread counts of a login, kept and (human form) shown. */
static void out_learn_unread(out_ctx *o, const Parley__LoginOk *l, tbuf *t)
{
    o->nconvs = 0;
    for (size_t i = 0; i < l->n_unread; i++) {
        const Parley__Unread *u = l->unread[i];
        if (u->name && u->name[0] && !u->group)
            out_learn(o, u->peer, u->name);
        out_conv *c = out_conv_of(o, u->conv);
        if (!c)
            continue;
        c->peer = u->peer;
        c->group = u->group;
        c->read_seq = u->last_read_seq;
        c->last_seq = u->last_seq;
        c->unread = u->count;
        if (!t)
            continue;
        tbuf_str(t, i ? ", " : "unread: ");
        if (u->group) {
            if (u->name && u->name[0])
                out_learn_in(&o->groups, &o->ngroups, &o->groups_cap, u->group, u->name);
            out_text_group(o, t, u->group);
            t->len--; /* out_text_group ends with a space */
        } else {
            out_text_user(o, t, u->peer, u->name);
        }
        tbuf_printf(t, " %u", u->count);
    }
    if (t && l->n_unread)
        tbuf_str(t, "\n");
}

void out_reply_ok(out_ctx *o, cmd_kind kind, uint64_t arg, uint64_t cmid, const char *body,
                  const Parley__ServerFrame *f)
{
    if (f->body_case == PARLEY__SERVER_FRAME__BODY_SEND_OK) {
        out_conv *c = out_conv_of(o, f->send_ok->conv);
        if (c) {
            c->own_seq = f->send_ok->seq;
            if (kind == CMD_CHAT)
                c->peer = arg;
            else
                c->group = arg;
            if (f->send_ok->seq > c->last_seq)
                c->last_seq = f->send_ok->seq;
        }
    }
    if (f->body_case == PARLEY__SERVER_FRAME__BODY_LOGIN_OK) {
        const Parley__LoginOk *l = f->login_ok;
        if (l->user)
            out_learn(o, l->user->id, l->user->name);
        out_learn_lists(o, l->n_friends, l->friends, l->n_groups, l->groups);
        if (o->json)
            out_learn_unread(o, l, NULL);
    } else if (f->body_case == PARLEY__SERVER_FRAME__BODY_FRIEND_LIST_OK) {
        const Parley__FriendListOk *l = f->friend_list_ok;
        out_learn_lists(o, l->n_friends, l->friends, l->n_groups, l->groups);
    } else if (f->body_case == PARLEY__SERVER_FRAME__BODY_WHOIS_OK && f->whois_ok->user) {
        out_learn(o, f->whois_ok->user->id, f->whois_ok->user->name);
    }
    if (o->json) {
        json_writer j;
        json_init(&j);
        out_json_reply_ok(&j, kind, cmid, f);
        out_json_done(o, &j);
    } else {
        tbuf t = {0};
        out_text_reply_ok(o, &t, kind, arg, body, f);
        out_text_done(o, &t);
    }
}

void out_reply_fail(out_ctx *o, const char *cmdname, const char *code, const char *text)
{
    out_reply_fail_send(o, cmdname, code, text, 0);
}

void out_reply_fail_send(out_ctx *o, const char *cmdname, const char *code, const char *text,
                         uint64_t cmid)
{
    o->fails++;
    if (o->json) {
        json_writer j;
        json_init(&j);
        json_obj_begin(&j);
        json_kstr(&j, "type", "reply");
        json_kstr(&j, "cmd", cmdname);
        json_kbool(&j, "ok", false);
        json_kstr(&j, "error", text);
        json_kstr(&j, "code", code);
        if (cmid)
            out_json_cmid(&j, cmid);
        json_obj_end(&j);
        out_json_done(o, &j);
        return;
    }
    tbuf t = {0};
    tbuf_str(&t, "error: ");
    /* A usage text speaks for itself; server errors get their code. */
    if (strcmp(code, "USAGE") != 0) {
        tbuf_safe(&t, code);
        tbuf_str(&t, ": ");
    }
    tbuf_safe(&t, text);
    tbuf_str(&t, "\n");
    out_text_done(o, &t);
}

void out_help(out_ctx *o)
{
    size_t n;
    const cmd_help_entry *h = cmd_help(&n);
    if (o->json) {
        json_writer j;
        json_init(&j);
        json_obj_begin(&j);
        json_kstr(&j, "type", "reply");
        json_kstr(&j, "cmd", "help");
        json_kbool(&j, "ok", true);
        json_key(&j, "commands");
        json_arr_begin(&j);
        for (size_t i = 0; i < n; i++)
            json_str(&j, h[i].synopsis);
        json_arr_end(&j);
        json_obj_end(&j);
        out_json_done(o, &j);
        return;
    }
    tbuf t = {0};
    tbuf_printf(&t, "commands (a TEXT or PASSWORD may contain colons):\n");
    for (size_t i = 0; i < n; i++)
        tbuf_printf(&t, "  %-28s %s\n", h[i].synopsis, h[i].what);
    out_text_done(o, &t);
}

/* ---- events ---- */

void out_message(out_ctx *o, const Parley__Message *m)
{
    out_conv *c = out_conv_of(o, m->conv);
    if (c) {
        c->peer = m->group ? 0 : (o->me && m->from == o->me ? m->to : m->from);
        c->group = m->group;
        /* What login_ok counted (up to its last_seq) counts once. */
        if (m->seq > c->last_seq && m->seq > c->read_seq && m->from != o->me &&
            m->kind == PARLEY__MESSAGE_KIND__TEXT)
            c->unread++;
        if (m->seq > c->last_seq)
            c->last_seq = m->seq;
        if (o->me && m->from == o->me && m->seq > c->own_seq)
            c->own_seq = m->seq;
    }
    out_learn(o, m->from, m->from_name);
    if (m->group)
        out_learn_in(&o->groups, &o->ngroups, &o->groups_cap, m->group, m->group_name);
    if (o->json) {
        json_writer j;
        json_init(&j);
        out_json_message(&j, m);
        out_json_done(o, &j);
        return;
    }
    tbuf t = {0};
    out_text_message(o, &t, m);
    out_text_done(o, &t);
}

void out_recall(out_ctx *o, const Parley__RecallEvent *e)
{
    if (o->json) {
        json_writer j;
        json_init(&j);
        json_obj_begin(&j);
        json_kstr(&j, "type", "recall");
        json_ku64(&j, "msgid", e->msgid);
        json_obj_end(&j);
        out_json_done(o, &j);
        return;
    }
    tbuf t = {0};
    out_text_event(&t);
    tbuf_printf(&t, "message %" PRIu64 " was recalled", e->msgid);
    if (e->by) {
        tbuf_str(&t, " by ");
        out_text_user(o, &t, e->by, NULL);
    }
    tbuf_str(&t, "\n");
    out_text_done(o, &t);
}

void out_group_deleted(out_ctx *o, const Parley__GroupDeletedEvent *e)
{
    if (o->json) {
        json_writer j;
        json_init(&j);
        json_obj_begin(&j);
        json_kstr(&j, "type", "group_deleted");
        json_ku64(&j, "group", e->group_id);
        json_obj_end(&j);
        out_json_done(o, &j);
        return;
    }
    tbuf t = {0};
    out_text_event(&t);
    tbuf_printf(&t, "group %" PRIu64 " was deleted", e->group_id);
    if (e->by) {
        tbuf_str(&t, " by ");
        out_text_user(o, &t, e->by, NULL);
    }
    tbuf_str(&t, "\n");
    out_text_done(o, &t);
}

void out_presence(out_ctx *o, const Parley__PresenceEvent *e)
{
    if (o->json) {
        json_writer j;
        json_init(&j);
        json_obj_begin(&j);
        json_kstr(&j, "type", "presence");
        json_ku64(&j, "user", e->user_id);
        json_kbool(&j, "online", e->online);
        json_obj_end(&j);
        out_json_done(o, &j);
        return;
    }
    tbuf t = {0};
    out_text_event(&t);
    out_text_user(o, &t, e->user_id, NULL);
    tbuf_printf(&t, " is now %s\n", e->online ? "online" : "offline");
    out_text_done(o, &t);
}

void out_read_event(out_ctx *o, const Parley__ReadEvent *e)
{
    out_learn(o, e->user, e->user_name);
    /* Read on another device of ours: no longer unread here (--json says
     * so as a read event of our own id). */
    bool mine = o->me && e->user == o->me;
    if (mine) {
        out_mark_read(o, e->conv, e->seq);
        if (!o->json)
            return;
    }
    out_conv *c = mine ? NULL : out_conv_of(o, e->conv);
    /* Human form: a mark when a send of ours is newly seen. */
    bool news = c && c->own_seq && e->seq >= c->own_seq && c->seen_seq < c->own_seq;
    if (c && e->seq > c->seen_seq)
        c->seen_seq = e->seq;
    if (o->json) {
        json_writer j;
        json_init(&j);
        json_obj_begin(&j);
        json_kstr(&j, "type", "read");
        json_ku64(&j, "conv", e->conv);
        json_ku64(&j, "user", e->user);
        if (e->user_name && e->user_name[0])
            json_kstr(&j, "user_name", e->user_name);
        json_ku64(&j, "seq", e->seq);
        if (e->group)
            json_ku64(&j, "group", e->group);
        json_obj_end(&j);
        out_json_done(o, &j);
        return;
    }
    if (!news)
        return;
    tbuf t = {0};
    out_text_event(&t);
    if (c->group)
        out_text_group(o, &t, c->group);
    out_text_user(o, &t, e->user, e->user_name);
    tbuf_str(&t, " read your messages \u2713\u2713\n");
    out_text_done(o, &t);
}

void out_typing(out_ctx *o, const Parley__TypingEvent *e)
{
    out_learn(o, e->user, e->user_name);
    if (o->json) {
        json_writer j;
        json_init(&j);
        json_obj_begin(&j);
        json_kstr(&j, "type", "typing");
        json_ku64(&j, "user", e->user);
        if (e->user_name && e->user_name[0])
            json_kstr(&j, "user_name", e->user_name);
        if (e->group)
            json_ku64(&j, "group", e->group);
        json_ku64(&j, "expires_ms", OUT_TYPING_MS);
        json_obj_end(&j);
        out_json_done(o, &j);
        return;
    }
    /* Once until it expires: a typist sends one every few seconds. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    out_typing_entry *slot = &o->typing[0];
    for (size_t i = 0; i < OUT_TYPING_SLOTS; i++) {
        out_typing_entry *s = &o->typing[i];
        if (s->user == e->user && s->group == e->group) {
            if (now < s->until_ms) {
                s->until_ms = now + OUT_TYPING_MS;
                return;
            }
            slot = s;
            break;
        }
        if (s->until_ms < slot->until_ms)
            slot = s;
    }
    slot->user = e->user;
    slot->group = e->group;
    slot->until_ms = now + OUT_TYPING_MS;
    tbuf t = {0};
    out_text_event(&t);
    if (e->group)
        out_text_group(o, &t, e->group);
    out_text_user(o, &t, e->user, e->user_name);
    tbuf_str(&t, " is typing\u2026\n");
    out_text_done(o, &t);
}

void out_unread(out_ctx *o)
{
    if (o->json) {
        json_writer j;
        json_init(&j);
        json_obj_begin(&j);
        json_kstr(&j, "type", "reply");
        json_kstr(&j, "cmd", "unread");
        json_kbool(&j, "ok", true);
        json_key(&j, "unread");
        json_arr_begin(&j);
        for (size_t i = 0; i < o->nconvs; i++) {
            const out_conv *c = &o->convs[i];
            if (!c->unread)
                continue;
            json_obj_begin(&j);
            json_ku64(&j, "conv", c->conv);
            if (c->group)
                json_ku64(&j, "group", c->group);
            else
                json_ku64(&j, "peer", c->peer);
            json_ku64(&j, "count", c->unread);
            json_ku64(&j, "last_read_seq", c->read_seq);
            json_obj_end(&j);
        }
        json_arr_end(&j);
        json_obj_end(&j);
        out_json_done(o, &j);
        return;
    }
    tbuf t = {0};
    size_t shown = 0;
    for (size_t i = 0; i < o->nconvs; i++) {
        const out_conv *c = &o->convs[i];
        if (!c->unread)
            continue;
        tbuf_str(&t, shown++ ? ", " : "unread: ");
        if (c->group) {
            out_text_group(o, &t, c->group);
            t.len--;
        } else {
            out_text_user(o, &t, c->peer, NULL);
        }
        tbuf_printf(&t, " %" PRIu64, c->unread);
    }
    tbuf_str(&t, shown ? "\n" : "nothing unread\n");
    out_text_done(o, &t);
}

void out_bye(out_ctx *o, const char *reason)
{
    if (o->json) {
        json_writer j;
        json_init(&j);
        json_obj_begin(&j);
        json_kstr(&j, "type", "bye");
        json_kstr(&j, "reason", reason);
        json_obj_end(&j);
        out_json_done(o, &j);
        return;
    }
    tbuf t = {0};
    out_text_event(&t);
    tbuf_str(&t, "the server says goodbye: ");
    tbuf_safe(&t, reason && reason[0] ? reason : "(no reason given)");
    tbuf_str(&t, "\n");
    out_text_done(o, &t);
}

void out_server_error(out_ctx *o, const Parley__Error *e)
{
    const char *code = out_code_name(e->code);
    if (o->json) {
        json_writer j;
        json_init(&j);
        json_obj_begin(&j);
        json_kstr(&j, "type", "error");
        json_kstr(&j, "error", e->text);
        json_kstr(&j, "code", code);
        json_obj_end(&j);
        out_json_done(o, &j);
        return;
    }
    tbuf t = {0};
    out_text_event(&t);
    tbuf_printf(&t, "server error: %s: ", code);
    tbuf_safe(&t, e->text);
    tbuf_str(&t, "\n");
    out_text_done(o, &t);
}

void out_send_queued(out_ctx *o, cmd_kind kind, uint64_t to, uint64_t cmid, const char *body)
{
    bool group = kind == CMD_GROUPCHAT;
    if (o->json) {
        json_writer j;
        json_init(&j);
        json_obj_begin(&j);
        json_kstr(&j, "type", "queued");
        json_kstr(&j, "cmd", cmd_name(kind));
        json_ku64(&j, group ? "group" : "to", to);
        out_json_cmid(&j, cmid);
        json_obj_end(&j);
        out_json_done(o, &j);
        return;
    }
    tbuf t = {0};
    out_text_own_send(o, &t, kind, to, 0, body);
    tbuf_str(&t, "  (pending: goes when reconnected)\n");
    out_text_done(o, &t);
}

void out_reconnecting(out_ctx *o, int64_t ms, const char *why)
{
    if (o->json)
        return; /* not part of the JSON contract: "disconnected" says it */
    tbuf t = {0};
    out_text_event(&t);
    tbuf_printf(&t, "reconnecting (next try in %lld s)", (long long)((ms + 999) / 1000));
    if (why && why[0]) {
        tbuf_str(&t, ": ");
        tbuf_safe(&t, why);
    }
    tbuf_str(&t, "\n");
    out_text_done(o, &t);
}

void out_whoami(out_ctx *o, const char *name, uint64_t id, const char *server, bool tls, bool up)
{
    if (o->json) {
        json_writer j;
        json_init(&j);
        json_obj_begin(&j);
        json_kstr(&j, "type", "reply");
        json_kstr(&j, "cmd", "whoami");
        json_kbool(&j, "ok", true);
        if (name) {
            json_ku64(&j, "id", id);
            json_kstr(&j, "name", name);
        }
        json_kstr(&j, "server", server);
        json_kbool(&j, "tls", tls);
        json_kbool(&j, "connected", up);
        json_obj_end(&j);
        out_json_done(o, &j);
        return;
    }
    tbuf t = {0};
    if (name) {
        tbuf_safe(&t, name);
        tbuf_printf(&t, " (%" PRIu64 ")", id);
    } else {
        tbuf_str(&t, "not logged in");
    }
    tbuf_str(&t, up ? ", connected to " : ", offline from ");
    tbuf_safe(&t, server);
    tbuf_str(&t, tls ? " with TLS\n" : "\n");
    out_text_done(o, &t);
}

void out_resending(out_ctx *o, size_t n)
{
    if (o->json) {
        json_writer j;
        json_init(&j);
        json_obj_begin(&j);
        json_kstr(&j, "type", "resending");
        json_ku64(&j, "count", n);
        json_obj_end(&j);
        out_json_done(o, &j);
        return;
    }
    tbuf t = {0};
    out_text_event(&t);
    tbuf_printf(&t, "sending %zu unconfirmed message%s (each is stored once)\n", n,
                n == 1 ? "" : "s");
    out_text_done(o, &t);
}

void out_unconfirmed(out_ctx *o, size_t n)
{
    if (o->json) {
        json_writer j;
        json_init(&j);
        json_obj_begin(&j);
        json_kstr(&j, "type", "unconfirmed");
        json_ku64(&j, "count", n);
        json_obj_end(&j);
        out_json_done(o, &j);
        return;
    }
    tbuf t = {0};
    tbuf_printf(&t,
                "%zu message%s not confirmed by the server yet; quit again to leave anyway "
                "(%s may be lost)\n",
                n, n == 1 ? " is" : "s are", n == 1 ? "it" : "they");
    out_text_done(o, &t);
}

void out_disconnected(out_ctx *o, const char *reason)
{
    if (o->json) {
        json_writer j;
        json_init(&j);
        json_obj_begin(&j);
        json_kstr(&j, "type", "disconnected");
        json_kstr(&j, "reason", reason);
        json_obj_end(&j);
        out_json_done(o, &j);
        return;
    }
    tbuf t = {0};
    out_text_event(&t);
    tbuf_str(&t, "disconnected: ");
    tbuf_safe(&t, reason);
    tbuf_str(&t, "\n");
    out_text_done(o, &t);
}

void out_reconnected(out_ctx *o, const char *resume_error)
{
    if (o->json) {
        json_writer j;
        json_init(&j);
        json_obj_begin(&j);
        json_kstr(&j, "type", "reconnected");
        if (resume_error) {
            json_kbool(&j, "resumed", false);
            json_kstr(&j, "error", resume_error);
        }
        json_obj_end(&j);
        out_json_done(o, &j);
        return;
    }
    tbuf t = {0};
    out_text_event(&t);
    if (resume_error) {
        tbuf_str(&t, "reconnected, but the session could not be resumed (");
        tbuf_safe(&t, resume_error);
        tbuf_str(&t, "): please log in again\n");
    } else {
        tbuf_str(&t, "reconnected\n");
    }
    out_text_done(o, &t);
}

void out_file_sent(out_ctx *o, cmd_kind kind, uint64_t to, uint64_t cmid, const Parley__SendOk *ok,
                   const char *name, uint64_t size, const char *type, const uint8_t *sha256)
{
    if (o->json) {
        json_writer j;
        json_init(&j);
        json_obj_begin(&j);
        json_kstr(&j, "type", "reply");
        json_kstr(&j, "cmd", cmd_name(kind));
        json_kbool(&j, "ok", true);
        if (ok) {
            json_ku64(&j, "msgid", ok->msgid);
            json_ku64(&j, "seq", ok->seq);
            json_ku64(&j, "conv", ok->conv);
        }
        if (cmid)
            out_json_cmid(&j, cmid);
        out_json_file(&j, name, size, type, sha256, 32);
        json_obj_end(&j);
        out_json_done(o, &j);
        return;
    }
    tbuf t = {0};
    out_text_own_send(o, &t, kind, to, ok ? ok->ts : 0, "");
    out_text_file(&t, name, size, type);
    if (ok)
        tbuf_printf(&t, "  \u2713 #msg %" PRIu64 "\n", ok->msgid);
    else
        tbuf_str(&t, "  \u2713\n");
    out_text_done(o, &t);
}

void out_file_saved(out_ctx *o, uint64_t msgid, const char *path, const char *name, uint64_t size,
                    const char *type, const uint8_t *sha256)
{
    if (o->json) {
        json_writer j;
        json_init(&j);
        json_obj_begin(&j);
        json_kstr(&j, "type", "reply");
        json_kstr(&j, "cmd", "getfile");
        json_kbool(&j, "ok", true);
        json_ku64(&j, "msgid", msgid);
        json_kstr(&j, "path", path);
        out_json_file(&j, name, size, type, sha256, 32);
        json_obj_end(&j);
        out_json_done(o, &j);
        return;
    }
    tbuf t = {0};
    tbuf_str(&t, "ok: saved ");
    out_text_file(&t, name, size, type);
    tbuf_printf(&t, " of message %" PRIu64 " to ", msgid);
    tbuf_safe(&t, path);
    tbuf_str(&t, " (SHA-256 checked)\n");
    out_text_done(o, &t);
}
