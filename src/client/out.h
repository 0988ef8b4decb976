/*
 * out: everything the client prints on standard output, in one of two
 * forms: JSON (--json: one object per line, the names are a contract that
 * scripts and tests rely on) or human-readable lines. Each call renders one
 * complete piece of text (one or more whole lines) and hands it to the sink,
 * which by default writes it to stdout and flushes; the terminal front end
 * installs a sink that keeps the prompt and the half-typed line intact.
 */
#ifndef PARLEY_CLIENT_OUT_H
#define PARLEY_CLIENT_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/cmd.h"
#include "parley.pb-c.h"

/* Receives text made of whole lines, each ending in '\n'. */
typedef void (*out_sink_fn)(void *ctx, const char *text, size_t len);

/* A user name learnt from a login or friend list reply, so the human form
 * can say "alice (1)" where the server sent only the id. */
typedef struct out_name {
    uint64_t id;
    char *name;
} out_name;

typedef struct out_ctx {
    bool json;
    uint64_t me; /* the logged-in user's id, 0 if none: "you" in human form */
    out_sink_fn sink;
    void *sink_ctx;
    bool failed; /* writing to stdout failed (e.g. the reader went away) */
    out_name *names;
    size_t nnames, names_cap;
    out_name *groups; /* group names, likewise (for completion) */
    size_t ngroups, groups_cap;
    unsigned fails; /* failed replies printed so far (script mode exits 1) */
} out_ctx;

void out_init(out_ctx *o, bool json);
void out_free(out_ctx *o);
/* Installs a sink; NULL restores the stdout sink. */
void out_set_sink(out_ctx *o, out_sink_fn sink, void *ctx);

/* The name of an ErrorCode ("FORBIDDEN"), or "UNKNOWN". */
const char *out_code_name(int code);
/* The id of the user named name, as this client learned it: 1 and *id, or
 * 0 if it has not. User names are unique. */
int out_find_user(const out_ctx *o, const char *name, uint64_t *id);
/* The same for a group: -1 if two known groups have that name. */
int out_find_group(const out_ctx *o, const char *name, uint64_t *id);

/* A successful reply to a request of kind; arg is the command's id argument
 * (user, group or message id) for the human form; cmid a send's
 * client_msg_id (0 for other requests) and body its text (the human form
 * shows a confirmed send as a conversation line). */
void out_reply_ok(out_ctx *o, cmd_kind kind, uint64_t arg, uint64_t cmid, const char *body,
                  const Parley__ServerFrame *f);
/* A failed reply: "ok":false with error text and code. */
void out_reply_fail(out_ctx *o, const char *cmdname, const char *code, const char *text);
/* The same for a send with client_msg_id cmid (0: as out_reply_fail). */
void out_reply_fail_send(out_ctx *o, const char *cmdname, const char *code, const char *text,
                         uint64_t cmid);
/* A send (chat to user `to`, groupchat to group `to`) typed while
 * disconnected: it goes once the session is back. */
void out_send_queued(out_ctx *o, cmd_kind kind, uint64_t to, uint64_t cmid, const char *body);
/* The link is down: the next attempt is in ms (human form only). */
void out_reconnecting(out_ctx *o, int64_t ms, const char *why);
/* The reply to whoami: the user (NULL if not logged in) and the server. */
void out_whoami(out_ctx *o, const char *name, uint64_t id, const char *server, bool tls, bool up);

/* After a reconnect: n sends the server had not confirmed go again. */
void out_resending(out_ctx *o, size_t n);
/* quit with n sends not yet confirmed: asks for a second quit. */
void out_unconfirmed(out_ctx *o, size_t n);
/* The reply to help. */
void out_help(out_ctx *o);

void out_message(out_ctx *o, const Parley__Message *m);
/* A file sent (sendfile, groupsendfile: kind) to `to` and confirmed (ok may
 * be NULL); sha256 is 32 bytes. */
void out_file_sent(out_ctx *o, cmd_kind kind, uint64_t to, uint64_t cmid, const Parley__SendOk *ok,
                   const char *name, uint64_t size, const char *type, const uint8_t *sha256);
/* The file of message msgid saved at path (getfile), its SHA-256 checked. */
void out_file_saved(out_ctx *o, uint64_t msgid, const char *path, const char *name, uint64_t size,
                    const char *type, const uint8_t *sha256);
void out_recall(out_ctx *o, const Parley__RecallEvent *e);
void out_group_deleted(out_ctx *o, const Parley__GroupDeletedEvent *e);
void out_presence(out_ctx *o, const Parley__PresenceEvent *e);
void out_bye(out_ctx *o, const char *reason);
/* An error the server sent outside any request (id 0). */
void out_server_error(out_ctx *o, const Parley__Error *e);
void out_disconnected(out_ctx *o, const char *reason);
/* resumed: NULL if there was no session to resume or it was resumed;
 * otherwise why resuming failed (the user is then logged out). */
void out_reconnected(out_ctx *o, const char *resume_error);

#endif
