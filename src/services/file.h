/*
 * file: files attached to messages. Uploads in chunks (resumable), contents
 * stored once by SHA-256 outside the database, downloads by the members of
 * the message's conversation. The methods are MessageService's FileBegin,
 * FileChunk and FileGet; message.c calls the helpers below for sends that
 * carry an attachment, for recalls, and for the messages it shows.
 */
#ifndef PARLEY_FILE_H
#define PARLEY_FILE_H

#include "services/svc.h"

void file_begin(svc_ctx *ctx);
void file_chunk(svc_ctx *ctx);
void file_get(svc_ctx *ctx);

/* The caller's complete upload of the content a send's attachment names,
 * into *out: 0, or -1 with the request failed (no such upload: upload the
 * file first). */
int file_claim(svc_ctx *ctx, const Parley__Attachment *att, store_upload *out);
/* f as a protobuf Attachment in the request's arena. */
Parley__Attachment *file_view(svc_ctx *ctx, const store_file *f);
/* Fills the attachment of each of v[0..n) that carries one (one store
 * query for the page). -1 with the request failed on a store error. */
int file_attach_views(svc_ctx *ctx, Parley__Message **v, size_t n);
/* Message msgid was recalled: drops its file, and the content with it once
 * nothing else refers to it. -1 with the request failed on a store error. */
int file_recalled(svc_ctx *ctx, uint64_t msgid);

#endif
