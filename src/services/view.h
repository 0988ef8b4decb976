/*
 * view: builds the protobuf records that replies carry (users, groups,
 * messages) from the store, in the request's arena. Shared by the services.
 */
#ifndef PARLEY_VIEW_H
#define PARLEY_VIEW_H

#include "services/svc.h"

/* A growable list of user ids in an arena. */
typedef struct view_ids {
    arena *a;
    uint64_t *v;
    size_t n, cap;
} view_ids;

void view_ids_init(view_ids *ids, arena *a);
void view_ids_push(view_ids *ids, uint64_t id);
/* store_user_cb that appends the id. */
int view_ids_add_user(void *arg, uint64_t id, const char *name);
/* The same for a store_id_cb. */
int view_ids_add(void *arg, uint64_t id);

Parley__User *view_user(svc_ctx *ctx, uint64_t id, const char *name, int online);
/* Friends of user with their online state. -1 (request failed) on error. */
int view_friends(svc_ctx *ctx, uint64_t user, Parley__User ***out, size_t *n);
/* Groups of user with their members and roles. -1 on error. */
int view_groups(svc_ctx *ctx, uint64_t user, Parley__Group ***out, size_t *n);
/* m as a protobuf Message in the arena (a recalled message shows no body),
 * without names: this may run inside a store call's row callback, where no
 * other store call may run. */
Parley__Message *view_message(svc_ctx *ctx, const store_msg *m);
/* Fills pm's from_name and group_name. Names are cached per worker thread
 * for a minute; a miss is one store lookup, so never call this from a store
 * callback. A name that cannot be had is left empty. */
void view_message_names(svc_ctx *ctx, Parley__Message *pm);
/* The name of a user or a group (cached likewise), in ctx's arena; NULL if
 * there is none or it cannot be had. */
const char *view_user_name(svc_ctx *ctx, uint64_t id);

/* Social events (friend added, member joined, ...) are stored as messages
 * of their conversation, sent by whoever acted, whose body is
 * VIEW_EVENT_MARK and the kind (Parley__MessageKind) as one digit: they take
 * a seq, reach offline members through the catch-up and show in history
 * like any message, with no change to the schema. A client's text never
 * starts with the mark (message.c refuses it). view_message turns such a
 * body into Message.kind with an empty body. */
#define VIEW_EVENT_MARK '\x01'
/* The kind of an event body, 0 (TEXT) for any other. */
int view_event_kind(const char *body, size_t len);
/* Appends an event of kind to conv, sent by the caller, in the request's
 * transaction. */
store_status view_event_append(svc_ctx *ctx, uint64_t conv, int kind, store_msg *out);
const char *view_group_name(svc_ctx *ctx, uint64_t id);

#endif
