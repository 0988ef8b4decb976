/*
 * svc: the service runtime. Service methods (user.c, social.c, message.c)
 * are plain synchronous functions over the store and the bus; the runtime
 * runs them on worker pools, several requests per store transaction (group
 * commit, each request in its own savepoint), and hands the result back
 * only after the commit. Pushes a method emits are published after the
 * commit too, so nobody is told of a message that is not stored.
 *
 * The same runtime serves in-process callers (rpc/local.c) and, in a
 * cluster, the RPC server.
 */
#ifndef PARLEY_SVC_H
#define PARLEY_SVC_H

#include <stdint.h>

#include "bus/bus.h"
#include "common/arena.h"
#include "common/pwhash.h"
#include "services.pb-c.h"
#include "store/store.h"

/* File transfer workers when svc_config.file_workers is 0. */
enum { SVC_FILE_WORKERS = 2 };

typedef struct svc_config {
    const char *db_path;
    pwhash_cost cost;
    unsigned store_workers; /* store pool size */
    unsigned auth_workers;  /* password hashing pool size */
    unsigned file_workers;  /* file transfer pool size (0: SVC_FILE_WORKERS) */
    unsigned max_batch;     /* requests per transaction */
    unsigned linger_us;     /* how long a small batch waits for more (group commit) */
    unsigned recall_window_ms;
    /* caps (0: none) and sessions */
    unsigned max_friends, max_groups, max_members;
    int64_t session_ttl_ms;     /* a token unused this long expires (0: never) */
    unsigned sessions_per_user; /* tokens kept per user (0: no bound) */
    /* Files (services/file.c): where contents live (NULL or "": no files),
     * the largest file, each user's quota, and the largest chunk taken or
     * given (under the frame limit). */
    const char *file_dir;
    uint64_t max_file_size, file_quota;
    unsigned file_chunk_max;
    int64_t upload_ttl_ms; /* an upload not sent by then is dropped (0: LIMIT_UPLOAD_TTL_MS) */
} svc_config;

typedef struct svc_pushq {
    struct svc_pushq *next;
    uint64_t *users;
    size_t n;
    blob *frame;
    uint64_t msgid; /* of a message push, so that a gateway can drop a repeat */
} svc_pushq;

/* What a method sees. It reads call, fills res (via svc_reply / svc_fail),
 * and may queue pushes. Everything is allocated in a (the request's arena). */
typedef struct svc_ctx svc_ctx;

/* The rest of a method that left its message append to the runtime: called
 * with the method's arg and what store_message_append would have returned
 * (m valid during the call only). */
typedef void (*svc_then_fn)(svc_ctx *ctx, void *arg, store_status st, const store_msg *m);

typedef struct svc_deferred {
    store_append append;
    svc_then_fn then;
    void *arg;
} svc_deferred;

struct svc_ctx {
    store *st;
    bus *bus;
    const svc_config *cfg;
    arena *a;
    const Parley__Call *call;
    Parley__Result *res;
    svc_pushq *pushes, **pushes_tail;
    int64_t now_ms;
    int failed;
    /* Set by svc_defer_append (in a): the runtime makes the append together
     * with the batch's others (one statement on MariaDB), then calls then.
     * A pointer, not the fields: every request carries a ctx. */
    struct svc_deferred *deferred;
};

typedef void (*svc_method_fn)(svc_ctx *ctx);

/* Ends the method, leaving req's append (store_message_append's arguments)
 * to the runtime, which calls then(ctx, ...) with its outcome, in the order
 * the batch's methods ran, before the commit. arg is the method's own (in
 * ctx->a). A method defers at most once, as its last store call. */
void svc_defer_append(svc_ctx *ctx, const store_append *req, svc_then_fn then, void *arg);

typedef struct svc_def {
    const ProtobufCServiceDescriptor *desc;
    const svc_method_fn *methods; /* indexed like desc->methods */
    int slow;                     /* runs on the auth pool (password hashing) */
    uint64_t alone;               /* bit i: method i runs in a transaction of its own */
    /* bit i: method i needs no savepoint. Each of its writes is one atomic
     * store call, and any write made before it fails may stay. */
    uint64_t atomic;
    /* bit i: method i may be dropped when its caller is gone, or answered
     * UNAVAILABLE at a stop (reads, logins). */
    uint64_t droppable;
    /* bit i: method i runs on the file pool (file data I/O, services/file.c),
     * outside any batch transaction, its caller's requests in order. */
    uint64_t file;
} svc_def;

extern const svc_def svc_user, svc_social, svc_message;

typedef struct svc_runtime svc_runtime;

/* Asks, on a worker thread, whether the caller of a queued request has gone
 * (its connection closed): work nobody waits for is dropped before it runs.
 * Must be safe to call from any thread. */
typedef int (*svc_gone_fn)(void *arg);

/* Opens one store handle per worker and starts the pools. NULL on failure
 * with the reason in err. The caller owns the runtime (svc_runtime_free,
 * which runs every queued request first). cfg and b must outlive it. */
svc_runtime *svc_runtime_new(const svc_config *cfg, bus *b, char *err, size_t errlen);
void svc_runtime_free(svc_runtime *rt);

typedef enum {
    SVC_RAN = 0, /* the method ran; res says how it went */
    SVC_EXPIRED, /* the deadline passed before it could run; nothing was done */
} svc_outcome;

/* Called on a worker thread once the request is done and committed. It
 * owns a (and res, which lives in a) and must free it. */
typedef void (*svc_done_fn)(void *arg, arena *a, Parley__Result *res, svc_outcome outcome);

/* Runs method m of def for call (allocated in a; a passes to the runtime).
 * deadline_ms is on svc_clock_ms()'s clock; 0 means none. gone (may be
 * NULL) tells whether the caller has left; if so, or once the deadline has
 * passed, a request that only reads or that is slow (registration, login)
 * is answered SVC_EXPIRED without running if it is droppable (see
 * svc_def). Writes a client may already count on (sends, acks, friends,
 * groups, logouts) still run. */
void svc_submit(svc_runtime *rt, const svc_def *def, unsigned m, arena *a, Parley__Call *call,
                int64_t deadline_ms, svc_gone_fn gone, void *gone_arg, svc_done_fn done, void *arg);
/* Starts a clean stop: requests still queued on the slow (auth) pool are
 * answered UNAVAILABLE instead of run, so that a stop with a thousand
 * registrations queued takes a moment, not minutes of hashing. Returns once
 * they are answered (at most a few seconds). */
void svc_runtime_stop(svc_runtime *rt);
/* Requests submitted so far (for telling a busy server from a quiet one). */
uint64_t svc_runtime_submitted(const svc_runtime *rt);
/* Milliseconds on a monotonic clock. */
int64_t svc_clock_ms(void);
/* The service definition whose descriptor is named name ("parley.UserService"),
 * or NULL. */
const svc_def *svc_find(const char *name);

/* ---- helpers for methods ---- */

/* The reply frame of this request (created on first use). */
Parley__ServerFrame *svc_reply(svc_ctx *ctx);
/* Fails the request: the reply carries code and text, its store work is
 * rolled back and its pushes dropped. */
void svc_fail(svc_ctx *ctx, Parley__ErrorCode code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* As svc_fail, but the request's store work is kept (committed with the
 * batch): for a refusal whose cleanup must stay done. */
void svc_refuse(svc_ctx *ctx, Parley__ErrorCode code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Fails with the code matching a store status; `what` names the object. */
void svc_fail_store(svc_ctx *ctx, store_status st, const char *what);
/* Queues frame for every session of users[0..n) (copied), sent after commit. */
void svc_push(svc_ctx *ctx, const uint64_t *users, size_t n, const Parley__ServerFrame *frame);
/* As svc_push, and ends each session the frame reaches (BUS_KICK). */
void svc_push_kick(svc_ctx *ctx, const uint64_t *users, size_t n, const Parley__ServerFrame *frame);
/* Checks text from the network: valid UTF-8, 1..max code points (min_chars
 * may be 0). Fails the request with BAD_REQUEST naming `what` if not. */
int svc_check_text(svc_ctx *ctx, const char *s, long min_chars, long max_chars, const char *what);
/* Checks a user or group name: as svc_check_text (1..LIMIT_NAME_CHARS),
 * and nothing that disguises it where it is shown or typed: no control or
 * bidirectional-control character, no ':' (the client's separator), no
 * space at either end, not only digits (commands take ids too). */
int svc_check_name(svc_ctx *ctx, const char *name, const char *what);
/* Requires a logged-in caller; fails with UNAUTHENTICATED otherwise. */
int svc_require_user(svc_ctx *ctx);
/* 1 if the caller's connection has closed (nobody waits for the answer):
 * for a method to drop slow work it is in the middle of. */
int svc_caller_gone(svc_ctx *ctx);

#endif
