/*
 * file service: uploads in chunks, contents stored once by SHA-256 in a
 * directory (the data directory's files/ by default; in a cluster one that
 * every message node shares), downloads of message attachments by the
 * members of their conversation. FileBegin, FileChunk and FileGet run on
 * the runtime's file pool (svc.c), not on the store worker that commits
 * everyone's messages: writing a chunk, an upload's fsync and SHA-256 (16
 * ms for 25 MiB) and the reads of a download held every send behind them.
 * Their store calls are a few rows each, single statements or short
 * transactions of their own, none open across file I/O. Recalls (message.c)
 * still release contents on the store worker, inside its transaction.
 *
 * Under cfg->file_dir:
 *   ab/ab01...ef   a content, named by its SHA-256 in hex; written whole to
 *                  tmp/ first, fsynced and checked, then renamed: never seen
 *                  half done
 *   tmp/N.part     upload N while in progress
 *
 * The database says what exists (store.h, "files"); the bytes follow it: a
 * content's bytes are moved into place only after the transaction that
 * records its row and the complete upload referring to it has committed,
 * and removed only inside the transaction that deletes its row (before
 * its commit). A removal and a placement of the same content thus never
 * cross: the one that commits second sees the other's row (a reference: no
 * removal; or no row: the placement comes after the removal's unlink). On
 * SQLite every such transaction takes the one write lock (BEGIN IMMEDIATE).
 *
 * Races the file pool opens, and how each is handled:
 * - Two chunks of one upload at once: a client keeps several in flight,
 *   and the pool runs one user's requests one at a time in order; across
 *   the nodes of a cluster (or against the expiry sweep) a chunk holds an
 *   exclusive flock on the upload's part file and reads the upload's row
 *   again under it, so a chunk sees where the one before it ended.
 * - A finalize racing a resend of the last chunk: the resend waits for the
 *   lock (or its turn) and then finds the upload complete, as before.
 * - A finalize racing a recall or the sweep of the same content: the order
 *   above. A crash between the commit and the rename leaves a complete
 *   upload without bytes: FileBegin finds it so and has it sent again.
 * - The expiry sweep racing a chunk: it skips a part file locked by a chunk
 *   and decides on the upload's row read again in its transaction.
 * - A download racing a recall: an open that fails because the bytes have
 *   gone is answered NOT_FOUND if the message no longer carries the file.
 * - A connection closed mid-work: its queued file requests are dropped
 *   (droppable), and an upload's finalize is skipped if its caller has gone
 *   by then; nothing of it is recorded, and the client, back, asks where the
 *   upload stands and sends the last chunk again. (Embedded role: over a
 *   cluster's RPC the runtime cannot tell that the client has gone.)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/log.h"
#include "common/utf8.h"
#include "services/file.h"
#include "services/limits.h"
#include "services/view.h"

enum { FILE_PATH_MAX = 4096 + 128 };

static int file_enabled(svc_ctx *ctx)
{
    if (ctx->cfg->file_dir && ctx->cfg->file_dir[0])
        return 1;
    svc_fail(ctx, PARLEY__ERROR_CODE__UNAVAILABLE, "files are not enabled on this server");
    return 0;
}

static void file_hex(const uint8_t sha[32], char out[65])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = digits[sha[i] >> 4];
        out[2 * i + 1] = digits[sha[i] & 15];
    }
    out[64] = '\0';
}

static void file_content_path(svc_ctx *ctx, const uint8_t sha[32], char *out, size_t cap)
{
    char hex[65];
    file_hex(sha, hex);
    snprintf(out, cap, "%s/%.2s/%s", ctx->cfg->file_dir, hex, hex);
}

static void file_part_path(svc_ctx *ctx, uint64_t upload, char *out, size_t cap)
{
    snprintf(out, cap, "%s/tmp/%llu.part", ctx->cfg->file_dir, (unsigned long long)upload);
}

/* mkdir that is fine with a directory already there. */
static int file_mkdir(const char *path)
{
    if (mkdir(path, 0700) == 0 || errno == EEXIST)
        return 0;
    log_error("file: cannot create %s: %s", path, strerror(errno));
    return -1;
}

/* 1 if the content's bytes are on disk with the size the store gives. */
static int file_on_disk(svc_ctx *ctx, const uint8_t sha[32], uint64_t size)
{
    char path[FILE_PATH_MAX];
    struct stat sb;
    file_content_path(ctx, sha, path, sizeof(path));
    return stat(path, &sb) == 0 && (uint64_t)sb.st_size == size;
}

static void file_unlink(const char *path)
{
    if (unlink(path) < 0 && errno != ENOENT)
        log_warn("file: cannot remove %s: %s", path, strerror(errno));
}

/* A short transaction of the file pool's own (its methods run outside the
 * runtime's batches). -1 with the request failed if it cannot start. */
static int file_txn_begin(svc_ctx *ctx)
{
    store_status st = store_begin(ctx->st);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "file");
        return -1;
    }
    return 0;
}

/* Commits if st is STORE_OK, else rolls back; what came of it. */
static store_status file_txn_end(svc_ctx *ctx, store_status st)
{
    if (st == STORE_OK)
        st = store_commit(ctx->st);
    if (st != STORE_OK)
        store_rollback(ctx->st);
    return st;
}

/* Forgets content sha if nothing refers to it any more, and its bytes with
 * it. Inside a transaction (the recall's batch, the sweep's own): the
 * bytes go before the row's deletion commits. -1 on a store error (request
 * failed). */
static int file_release(svc_ctx *ctx, const uint8_t sha[32])
{
    int gone;
    store_status st = store_file_release(ctx->st, sha, &gone);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "file");
        return -1;
    }
    if (gone) {
        char path[FILE_PATH_MAX];
        file_content_path(ctx, sha, path, sizeof(path));
        file_unlink(path);
    }
    return 0;
}

/* ---- expiry of uploads ---- */

typedef struct {
    store_upload u[64];
    unsigned n;
} file_expired;

static int file_expired_add(void *arg, const store_upload *u)
{
    file_expired *e = arg;
    e->u[e->n++] = *u;
    return e->n == sizeof(e->u) / sizeof(e->u[0]);
}

typedef struct {
    uint8_t sha[256][32];
    unsigned n;
} file_contents;

static int file_contents_add(void *arg, const uint8_t sha256[32], uint64_t size)
{
    (void)size;
    file_contents *c = arg;
    memcpy(c->sha[c->n++], sha256, 32);
    return c->n == sizeof(c->sha) / sizeof(c->sha[0]);
}

/* Contents whose last reference went without a recall (a group deleted
 * with its messages, a user erased, a crash between a commit and the
 * removal of the bytes) are found by walking every content a slice at a
 * time, in hash order, and released if nothing refers to them. */
static void file_sweep_contents(svc_ctx *ctx)
{
    static __thread uint8_t after[32];
    static __thread file_contents c;
    c.n = 0;
    if (store_files_after(ctx->st, after, 256, file_contents_add, &c) != STORE_OK)
        return;
    unsigned gone = 0;
    for (unsigned i = 0; i < c.n; i++) {
        int g = 0;
        /* One content per transaction: the write lock is everyone's. */
        if (store_begin(ctx->st) != STORE_OK)
            return;
        store_status st = store_file_release(ctx->st, c.sha[i], &g);
        if (st == STORE_OK && g) {
            char path[FILE_PATH_MAX];
            file_content_path(ctx, c.sha[i], path, sizeof(path));
            file_unlink(path);
            gone++;
        }
        if (file_txn_end(ctx, st) != STORE_OK)
            return;
    }
    /* Past the last: from the start again next time. */
    if (c.n < 256)
        memset(after, 0, sizeof(after));
    else
        memcpy(after, c.sha[c.n - 1], 32);
    if (gone)
        log_info("file: %u contents nothing refers to removed", gone);
}

/* Uploads older than cfg->upload_ttl_ms go, finished or not (a complete
 * one never sent releases its content). At most once a minute per worker,
 * a bounded number per call: a sweep must not hold the writer long. */
static void file_sweep(svc_ctx *ctx)
{
    static __thread int64_t last;
    if (ctx->now_ms - last < 60 * 1000)
        return;
    last = ctx->now_ms;
    /* 64 uploads are 100 KiB: not on the worker's stack. */
    static __thread file_expired e;
    e.n = 0;
    int64_t ttl = ctx->cfg->upload_ttl_ms ? ctx->cfg->upload_ttl_ms : LIMIT_UPLOAD_TTL_MS;
    if (store_uploads_expired(ctx->st, ctx->now_ms - ttl, 64, file_expired_add, &e) != STORE_OK)
        return;
    unsigned removed = 0;
    for (unsigned i = 0; i < e.n; i++) {
        char part[FILE_PATH_MAX];
        file_part_path(ctx, e.u[i].id, part, sizeof(part));
        /* A part file a chunk holds is being written now: next time. */
        int fd = open(part, O_RDWR | O_CLOEXEC);
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0) {
            close(fd);
            continue;
        }
        /* The row again, in the transaction: it may have completed since. */
        store_upload u;
        store_status st = store_begin(ctx->st);
        if (st == STORE_OK)
            st = store_upload_get(ctx->st, e.u[i].id, &u);
        if (st == STORE_OK)
            st = store_upload_delete(ctx->st, u.id);
        if (st == STORE_OK) {
            if (u.received == u.f.size) {
                int gone;
                st = store_file_release(ctx->st, u.f.sha256, &gone);
                if (st == STORE_OK && gone) {
                    char path[FILE_PATH_MAX];
                    file_content_path(ctx, u.f.sha256, path, sizeof(path));
                    file_unlink(path);
                }
            } else {
                file_unlink(part);
            }
        }
        st = file_txn_end(ctx, st);
        if (fd >= 0)
            close(fd);
        if (st == STORE_OK)
            removed++;
        else if (st != STORE_NOT_FOUND)
            return;
    }
    if (removed)
        log_info("file: %u expired uploads removed", removed);
    file_sweep_contents(ctx);
}

/* ---- FileBegin ---- */

static int file_check_sha(svc_ctx *ctx, const ProtobufCBinaryData *sha)
{
    if (sha->len != 32) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST,
                 "sha256 must be the 32 bytes of the content's SHA-256 (got %zu bytes)", sha->len);
        return -1;
    }
    return 0;
}

/* A media type: empty, or printable ASCII without spaces around one '/'. */
static int file_type_ok(const char *t)
{
    size_t n = strlen(t), slashes = 0;
    if (n == 0)
        return 1;
    if (n > STORE_FILE_TYPE_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)t[i];
        if (c <= ' ' || c >= 0x7f)
            return 0;
        slashes += c == '/';
    }
    return slashes == 1 && t[0] != '/' && t[n - 1] != '/';
}

static void file_begin_ok(svc_ctx *ctx, const store_upload *u)
{
    Parley__FileBeginOk *ok = arena_alloc(ctx->a, sizeof(*ok));
    parley__file_begin_ok__init(ok);
    ok->upload_id = u->id;
    ok->offset = u->received;
    ok->complete = u->received == u->f.size;
    ok->chunk_max = ctx->cfg->file_chunk_max;
    Parley__ServerFrame *out = svc_reply(ctx);
    out->body_case = PARLEY__SERVER_FRAME__BODY_FILE_BEGIN_OK;
    out->file_begin_ok = ok;
}

static void file_begin_upload(svc_ctx *ctx);

void file_begin(svc_ctx *ctx)
{
    file_begin_upload(ctx);
    /* Housekeeping after the request's own work, which a failed request
     * would undo with it. */
    if (!ctx->failed)
        file_sweep(ctx);
}

static void file_begin_upload(svc_ctx *ctx)
{
    if (svc_require_user(ctx) < 0 || !file_enabled(ctx))
        return;
    if (ctx->call->frame->body_case != PARLEY__CLIENT_FRAME__BODY_FILE_BEGIN) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "request does not match the method");
        return;
    }
    const Parley__FileBegin *r = ctx->call->frame->file_begin;
    uint64_t me = ctx->call->caller->user_id;
    if (file_check_sha(ctx, &r->sha256) < 0 ||
        svc_check_text(ctx, r->name, 1, STORE_FILE_NAME_MAX, "file name") < 0)
        return;
    if (utf8_name_safe(r->name, strlen(r->name)) < 0 || strchr(r->name, '/')) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST,
                 "file name must not contain '/', control or text-direction characters");
        return;
    }
    if (!file_type_ok(r->type)) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST,
                 "file type must be a media type such as image/png (or empty)");
        return;
    }
    if (r->size == 0) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "the file is empty");
        return;
    }
    if (r->size > ctx->cfg->max_file_size) {
        svc_fail(ctx, PARLEY__ERROR_CODE__TOO_LARGE,
                 "file of %llu bytes is over the server's limit of %llu bytes",
                 (unsigned long long)r->size, (unsigned long long)ctx->cfg->max_file_size);
        return;
    }
    store_upload u;
    store_status st = store_upload_find(ctx->st, me, r->sha256.data, &u);
    if (st == STORE_OK) {
        /* A resume (or the same file announced again): where it stands. */
        if (u.f.size != r->size) {
            svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST,
                     "size %llu differs from your earlier upload of this sha256 (%llu bytes)",
                     (unsigned long long)r->size, (unsigned long long)u.f.size);
            return;
        }
        /* Complete, but its bytes are not in place: a crash between the
         * finalize's commit and its rename (or a removal undone by a failed
         * commit). It is uploaded again. */
        if (u.received == u.f.size && !file_on_disk(ctx, u.f.sha256, u.f.size)) {
            st = store_upload_set_received(ctx->st, u.id, 0);
            if (st != STORE_OK) {
                svc_fail_store(ctx, st, "upload");
                return;
            }
            u.received = 0;
        }
        file_begin_ok(ctx, &u);
        return;
    }
    if (st != STORE_NOT_FOUND) {
        svc_fail_store(ctx, st, "upload");
        return;
    }
    uint64_t uploads, bytes;
    st = store_file_usage(ctx->st, me, &uploads, &bytes);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "file usage");
        return;
    }
    if (uploads >= LIMIT_UPLOADS_PER_USER) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BUSY,
                 "you have %llu uploads not yet sent (at most %d): send or finish them first, or "
                 "wait for them to expire (24 h)",
                 (unsigned long long)uploads, LIMIT_UPLOADS_PER_USER);
        return;
    }
    /* Even content already stored counts against the quota: each message
     * that carries it does. */
    if (bytes + r->size > ctx->cfg->file_quota) {
        svc_fail(ctx, PARLEY__ERROR_CODE__TOO_LARGE,
                 "file quota exceeded: %llu of your %llu bytes are used, this file needs %llu",
                 (unsigned long long)bytes, (unsigned long long)ctx->cfg->file_quota,
                 (unsigned long long)r->size);
        return;
    }
    memset(&u, 0, sizeof(u));
    u.user = me;
    u.created_ms = ctx->now_ms;
    memcpy(u.f.sha256, r->sha256.data, 32);
    u.f.size = r->size;
    snprintf(u.f.name, sizeof(u.f.name), "%s", r->name);
    snprintf(u.f.type, sizeof(u.f.type), "%s", r->type);
    /* Stored already (whoever sent it): nothing to upload. A row whose bytes
     * are gone (a recall's removal undone by a failed commit) is uploaded
     * again. */
    /* In one transaction with the upload's row, which refers to the
     * content once complete: a recall or sweep removing it commits either
     * before (no row: uploaded again) or after (a reference: it stays). */
    uint64_t size;
    if (file_txn_begin(ctx) < 0)
        return;
    st = store_file_get(ctx->st, u.f.sha256, &size);
    if (st == STORE_OK && size == u.f.size && file_on_disk(ctx, u.f.sha256, size))
        u.received = u.f.size;
    if (st == STORE_OK || st == STORE_NOT_FOUND)
        st = store_upload_create(ctx->st, &u, &u.id);
    st = file_txn_end(ctx, st);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "upload");
        return;
    }
    file_begin_ok(ctx, &u);
}

/* ---- FileChunk ---- */

/* SHA-256 of the first size bytes of fd into out. 0 or -1. */
static int file_sha256_fd(int fd, uint64_t size, uint8_t out[32])
{
    static __thread uint8_t buf[1 << 20];
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ret = -1;
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
        goto out;
    for (uint64_t off = 0; off < size;) {
        size_t want = size - off < sizeof(buf) ? (size_t)(size - off) : sizeof(buf);
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n <= 0)
            goto out;
        if (EVP_DigestUpdate(md, buf, (size_t)n) != 1)
            goto out;
        off += (uint64_t)n;
    }
    unsigned len = 0;
    if (EVP_DigestFinal_ex(md, out, &len) == 1 && len == 32)
        ret = 0;
out:
    EVP_MD_CTX_free(md);
    return ret;
}

/* Checks the part file of u, complete: fsynced, then its SHA-256 against
 * the one announced. 1 if it matches, 0 if not, -1 on an I/O error. */
static int file_check_part(int fd, const store_upload *u)
{
    uint8_t got[32];
    if (fsync(fd) < 0 || file_sha256_fd(fd, u->f.size, got) < 0) {
        log_error("file: upload %llu: cannot read back: %s", (unsigned long long)u->id,
                  strerror(errno));
        return -1;
    }
    return memcmp(got, u->f.sha256, 32) == 0;
}

/* Moves the checked part file of u into place: renamed, then the directory
 * fsynced. 0 or -1. */
static int file_place(svc_ctx *ctx, const store_upload *u)
{
    char part[FILE_PATH_MAX], path[FILE_PATH_MAX], dir[FILE_PATH_MAX];
    char hex[65];
    file_hex(u->f.sha256, hex);
    snprintf(dir, sizeof(dir), "%s/%.2s", ctx->cfg->file_dir, hex);
    file_part_path(ctx, u->id, part, sizeof(part));
    file_content_path(ctx, u->f.sha256, path, sizeof(path));
    if (file_mkdir(dir) < 0)
        return -1;
    /* Over the same content already there (another upload of it): the
     * same bytes. */
    if (rename(part, path) < 0) {
        log_error("file: cannot rename %s to %s: %s", part, path, strerror(errno));
        return -1;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

static void file_chunk_ok(svc_ctx *ctx, const store_upload *u)
{
    Parley__FileChunkOk *ok = arena_alloc(ctx->a, sizeof(*ok));
    parley__file_chunk_ok__init(ok);
    ok->upload_id = u->id;
    ok->offset = u->received;
    ok->complete = u->received == u->f.size;
    Parley__ServerFrame *out = svc_reply(ctx);
    out->body_case = PARLEY__SERVER_FRAME__BODY_FILE_CHUNK_OK;
    out->file_chunk_ok = ok;
}

/* Reads upload r->upload_id into *u and checks chunk r against it. 1 if the
 * chunk is to be written, 0 if it is answered already (a repeat of the
 * end of a complete upload: ok), -1 if the request failed. */
static int file_chunk_check(svc_ctx *ctx, const Parley__FileChunk *r, store_upload *u)
{
    store_status st = store_upload_get(ctx->st, r->upload_id, u);
    if (st == STORE_NOT_FOUND) {
        svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND,
                 "no upload %llu (it may have expired): start again with file_begin",
                 (unsigned long long)r->upload_id);
        return -1;
    }
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "upload");
        return -1;
    }
    if (u->user != ctx->call->caller->user_id) {
        svc_fail(ctx, PARLEY__ERROR_CODE__FORBIDDEN, "upload %llu is not yours",
                 (unsigned long long)r->upload_id);
        return -1;
    }
    if (u->received == u->f.size) {
        if (r->offset == u->f.size && r->data.len == 0) {
            file_chunk_ok(ctx, u);
            return 0;
        }
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "upload %llu is already complete",
                 (unsigned long long)u->id);
        return -1;
    }
    if (r->offset != u->received) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST,
                 "chunk at offset %llu, but upload %llu continues at %llu",
                 (unsigned long long)r->offset, (unsigned long long)u->id,
                 (unsigned long long)u->received);
        return -1;
    }
    if (r->data.len == 0) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "empty chunk");
        return -1;
    }
    if (r->data.len > ctx->cfg->file_chunk_max) {
        svc_fail(ctx, PARLEY__ERROR_CODE__TOO_LARGE, "chunk of %zu bytes: at most %u", r->data.len,
                 ctx->cfg->file_chunk_max);
        return -1;
    }
    if (r->data.len > u->f.size - u->received) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST,
                 "chunk goes past the announced size of %llu bytes", (unsigned long long)u->f.size);
        return -1;
    }
    return 1;
}

static void file_chunk_locked(svc_ctx *ctx, const Parley__FileChunk *r, int fd, const char *part);

void file_chunk(svc_ctx *ctx)
{
    if (svc_require_user(ctx) < 0 || !file_enabled(ctx))
        return;
    if (ctx->call->frame->body_case != PARLEY__CLIENT_FRAME__BODY_FILE_CHUNK) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "request does not match the method");
        return;
    }
    const Parley__FileChunk *r = ctx->call->frame->file_chunk;
    store_upload u;
    /* Checked first without the lock: a stranger's or a bad chunk creates
     * no part file and waits for nobody. */
    if (file_chunk_check(ctx, r, &u) <= 0)
        return;
    char dir[FILE_PATH_MAX], part[FILE_PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/tmp", ctx->cfg->file_dir);
    file_part_path(ctx, u.id, part, sizeof(part));
    if (file_mkdir(ctx->cfg->file_dir) < 0 || file_mkdir(dir) < 0) {
        svc_fail(ctx, PARLEY__ERROR_CODE__INTERNAL, "cannot store files now");
        return;
    }
    int fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        log_error("file: cannot open %s: %s", part, strerror(errno));
        svc_fail(ctx, PARLEY__ERROR_CODE__INTERNAL, "cannot store files now");
        return;
    }
    /* This upload's chunks one at a time, whichever node or worker runs
     * them: the lock is the upload's alone, nobody else waits for it. */
    int lk;
    while ((lk = flock(fd, LOCK_EX)) < 0 && errno == EINTR)
        ;
    if (lk < 0) {
        log_error("file: cannot lock %s: %s", part, strerror(errno));
        close(fd);
        svc_fail(ctx, PARLEY__ERROR_CODE__INTERNAL, "cannot store files now");
        return;
    }
    file_chunk_locked(ctx, r, fd, part);
    close(fd); /* and the lock with it */
}

/* The rest of file_chunk, holding the lock of part (open as fd). */
static void file_chunk_locked(svc_ctx *ctx, const Parley__FileChunk *r, int fd, const char *part)
{
    /* Again under the lock: a chunk before it may have ended since, or the
     * sweep removed the upload (whose part file this open may have made
     * again: gone with it). */
    store_upload u;
    int go = file_chunk_check(ctx, r, &u);
    if (go < 0 && ctx->res->frame->error &&
        ctx->res->frame->error->code == PARLEY__ERROR_CODE__NOT_FOUND)
        file_unlink(part);
    if (go <= 0)
        return;
    store_status st;
    struct stat sb;
    if (fstat(fd, &sb) < 0 || (uint64_t)sb.st_size < u.received) {
        /* The bytes already taken are gone (tmp/ was cleared): start over. */
        store_upload_set_received(ctx->st, u.id, 0);
        svc_refuse(ctx, PARLEY__ERROR_CODE__BAD_REQUEST,
                   "upload %llu lost its data: send it again from offset 0",
                   (unsigned long long)u.id);
        return;
    }
    /* Bytes past the offset are a chunk whose commit was undone, or one
     * whose client left before its finalize. */
    const uint8_t *p = r->data.data;
    size_t left = r->data.len;
    off_t off = (off_t)r->offset;
    int ok = ftruncate(fd, off) == 0;
    while (ok && left) {
        ssize_t n = pwrite(fd, p, left, off);
        if (n < 0 && errno == EINTR)
            continue;
        ok = n > 0;
        if (ok) {
            p += n;
            left -= (size_t)n;
            off += n;
        }
    }
    if (!ok) {
        log_error("file: cannot write %s: %s", part, strerror(errno));
        svc_fail(ctx, PARLEY__ERROR_CODE__INTERNAL, "cannot store files now");
        return;
    }
    u.received += r->data.len;
    if (u.received < u.f.size) {
        st = store_upload_set_received(ctx->st, u.id, u.received);
        if (st != STORE_OK) {
            svc_fail_store(ctx, st, "upload");
            return;
        }
        file_chunk_ok(ctx, &u);
        return;
    }
    /* The last chunk. Nobody waits for the finalize of a client that has
     * gone: back, it resends this chunk (the bytes past the stored offset
     * are cut first). */
    if (svc_caller_gone(ctx)) {
        svc_fail(ctx, PARLEY__ERROR_CODE__UNAVAILABLE, "the client has gone");
        return;
    }
    int good = file_check_part(fd, &u);
    if (good < 0) {
        svc_fail(ctx, PARLEY__ERROR_CODE__INTERNAL, "cannot store files now");
        return;
    }
    if (!good) {
        /* Nothing of it is kept: the client starts again. */
        file_unlink(part);
        st = store_upload_delete(ctx->st, u.id);
        if (st != STORE_OK) {
            svc_fail_store(ctx, st, "upload");
            return;
        }
        svc_refuse(ctx, PARLEY__ERROR_CODE__BAD_REQUEST,
                   "SHA-256 mismatch: the data sent is not the file announced; upload %llu "
                   "is dropped",
                   (unsigned long long)u.id);
        return;
    }
    /* The content's row and the complete upload that refers to it commit
     * before the bytes move into place (see the top of this file). */
    if (file_txn_begin(ctx) < 0)
        return;
    st = store_file_put(ctx->st, u.f.sha256, u.f.size, ctx->now_ms);
    if (st == STORE_OK)
        st = store_upload_set_received(ctx->st, u.id, u.received);
    st = file_txn_end(ctx, st);
    if (st == STORE_NOT_FOUND) {
        file_unlink(part);
        svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND,
                 "no upload %llu (it may have expired): start again with file_begin",
                 (unsigned long long)u.id);
        return;
    }
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "file");
        return;
    }
    if (file_place(ctx, &u) < 0) {
        /* Not complete after all: the client sends the last chunk again. */
        store_upload_set_received(ctx->st, u.id, u.received - r->data.len);
        svc_fail(ctx, PARLEY__ERROR_CODE__INTERNAL, "cannot store files now");
        return;
    }
    file_chunk_ok(ctx, &u);
}

/* ---- FileGet ---- */

static int file_is_member(void *arg, uint64_t id)
{
    uint64_t *who = arg;
    if (*who == id) {
        *who = 0;
        return 1;
    }
    return 0;
}

void file_get(svc_ctx *ctx)
{
    if (svc_require_user(ctx) < 0 || !file_enabled(ctx))
        return;
    if (ctx->call->frame->body_case != PARLEY__CLIENT_FRAME__BODY_FILE_GET) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "request does not match the method");
        return;
    }
    const Parley__FileGet *r = ctx->call->frame->file_get;
    store_msg m;
    store_status st = store_message_get(ctx->st, r->msgid, &m);
    if (st == STORE_OK && m.recalled)
        st = STORE_NOT_FOUND;
    if (st == STORE_NOT_FOUND) {
        svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND, "message %llu not found",
                 (unsigned long long)r->msgid);
        return;
    }
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "message");
        return;
    }
    /* Its conversation's members now: the two of a direct chat, a group's
     * current members. Who is not one learns nothing of the file. */
    uint64_t who = ctx->call->caller->user_id;
    st = store_conv_members(ctx->st, m.conv, file_is_member, &who);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "conversation");
        return;
    }
    if (who != 0) {
        svc_fail(ctx, PARLEY__ERROR_CODE__FORBIDDEN,
                 "you are not in the conversation of message %llu", (unsigned long long)r->msgid);
        return;
    }
    store_file f;
    st = store_msg_file(ctx->st, r->msgid, &f);
    if (st == STORE_NOT_FOUND) {
        svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND, "message %llu carries no file",
                 (unsigned long long)r->msgid);
        return;
    }
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "file");
        return;
    }
    if (r->offset > f.size) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "offset %llu is past the end (%llu bytes)",
                 (unsigned long long)r->offset, (unsigned long long)f.size);
        return;
    }
    uint64_t want = f.size - r->offset;
    uint32_t limit =
        r->limit && r->limit < ctx->cfg->file_chunk_max ? r->limit : ctx->cfg->file_chunk_max;
    if (want > limit)
        want = limit;
    uint8_t *buf = arena_alloc(ctx->a, want ? want : 1);
    char path[FILE_PATH_MAX];
    file_content_path(ctx, f.sha256, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int open_err = fd < 0 ? errno : 0;
    size_t got = 0;
    while (fd >= 0 && got < want) {
        ssize_t n = pread(fd, buf + got, want - got, (off_t)(r->offset + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (fd >= 0)
        close(fd);
    store_file now;
    if (open_err == ENOENT && store_msg_file(ctx->st, r->msgid, &now) == STORE_NOT_FOUND) {
        /* Recalled while this request waited its turn. */
        svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND, "message %llu not found",
                 (unsigned long long)r->msgid);
        return;
    }
    if (got < want) {
        log_error("file: cannot read %s: %s", path, fd < 0 ? strerror(open_err) : "short file");
        svc_fail(ctx, PARLEY__ERROR_CODE__INTERNAL, "the file cannot be read now");
        return;
    }
    Parley__FileData *d = arena_alloc(ctx->a, sizeof(*d));
    parley__file_data__init(d);
    d->msgid = r->msgid;
    d->offset = r->offset;
    d->data.data = buf;
    d->data.len = got;
    d->attachment = file_view(ctx, &f);
    d->eof = r->offset + got == f.size;
    Parley__ServerFrame *out = svc_reply(ctx);
    out->body_case = PARLEY__SERVER_FRAME__BODY_FILE_DATA;
    out->file_data = d;
}

/* ---- for message.c ---- */

int file_claim(svc_ctx *ctx, const Parley__Attachment *att, store_upload *out)
{
    if (!file_enabled(ctx) || file_check_sha(ctx, &att->sha256) < 0)
        return -1;
    store_status st = store_upload_find(ctx->st, ctx->call->caller->user_id, att->sha256.data, out);
    if (st == STORE_OK && out->received != out->f.size)
        st = STORE_NOT_FOUND;
    if (st == STORE_NOT_FOUND) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST,
                 "attachment: upload the file first (file_begin, file_chunk)");
        return -1;
    }
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "upload");
        return -1;
    }
    return 0;
}

Parley__Attachment *file_view(svc_ctx *ctx, const store_file *f)
{
    Parley__Attachment *a = arena_alloc(ctx->a, sizeof(*a));
    parley__attachment__init(a);
    uint8_t *sha = arena_alloc(ctx->a, 32);
    memcpy(sha, f->sha256, 32);
    a->sha256.data = sha;
    a->sha256.len = 32;
    a->name = arena_strdup(ctx->a, f->name);
    a->type = arena_strdup(ctx->a, f->type);
    a->size = f->size;
    return a;
}

typedef struct {
    svc_ctx *ctx;
    Parley__Message **v;
    size_t n;
} file_page;

static int file_page_add(void *arg, uint64_t msgid, const store_file *f)
{
    file_page *p = arg;
    /* The page is in msgid order only for a catch-up; history is in seq
     * order, which within one conversation is msgid order too. */
    for (size_t i = 0; i < p->n; i++)
        if (p->v[i]->msgid == msgid && !p->v[i]->recalled) {
            p->v[i]->attachment = file_view(p->ctx, f);
            break;
        }
    return 0;
}

int file_attach_views(svc_ctx *ctx, Parley__Message **v, size_t n)
{
    if (!n)
        return 0;
    uint64_t lo = UINT64_MAX, hi = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i]->msgid < lo)
            lo = v[i]->msgid;
        if (v[i]->msgid > hi)
            hi = v[i]->msgid;
    }
    file_page p = {.ctx = ctx, .v = v, .n = n};
    store_status st = store_msg_files(ctx->st, lo, hi, file_page_add, &p);
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "files");
        return -1;
    }
    return 0;
}

int file_recalled(svc_ctx *ctx, uint64_t msgid)
{
    store_file f;
    store_status st = store_msg_file_drop(ctx->st, msgid, &f);
    if (st == STORE_NOT_FOUND)
        return 0;
    if (st != STORE_OK) {
        svc_fail_store(ctx, st, "file");
        return -1;
    }
    return file_release(ctx, f.sha256);
}
