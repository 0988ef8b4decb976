#include "services/svc.h"

#include <ctype.h>
#include <stddef.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/frame.h"
#include "common/log.h"
#include "common/pool.h"
#include "common/utf8.h"
#include "net/loop.h"
#include "services/limits.h"

struct svc_runtime {
    const svc_config *cfg;
    bus *bus;
    pool *store_pool;
    pool *auth_pool;
    pool *file_pool;
    struct svc_worker *file_w; /* the file workers, made by the runtime */
    uint64_t submitted;        /* atomic */
    int stopping;              /* atomic */
    char err[256];
};

typedef struct svc_task {
    pool_task base;
    const svc_def *def;
    unsigned method;
    svc_ctx ctx;
    int64_t deadline_ms;
    svc_gone_fn gone;
    void *gone_arg;
    svc_outcome outcome;
    svc_done_fn done;
    void *done_arg;
} svc_task;

typedef struct svc_worker {
    svc_runtime *rt;
    store *st;
    unsigned idx;
    unsigned split;   /* batches still to run one request at a time */
    bus_push *pushes; /* a batch's pushes, for one publish */
    size_t pushes_cap;
    store_append *appends; /* a batch's deferred appends, for one call */
    svc_task **append_tasks;
    unsigned appends_cap;
    int small; /* an auth or file worker: store_keep_small, no batch transaction */
} svc_worker;

static int64_t svc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *svc_worker_init(void *arg, unsigned idx)
{
    svc_runtime *rt = arg;
    svc_worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->rt = rt;
    w->idx = idx;
    w->st = store_open(rt->cfg->db_path, rt->err, sizeof(rt->err));
    if (!w->st) {
        free(w);
        return NULL;
    }
    return w;
}

/* Auth workers look up one user and write a row at most per request. */
static void *svc_auth_worker_init(void *arg, unsigned idx)
{
    svc_worker *w = svc_worker_init(arg, idx);
    if (w) {
        w->small = 1;
        store_keep_small(w->st);
        /* Hashing is slow on purpose and may be flooded: when the cores
         * are short, the I/O loops and the store worker (everyone's
         * messages) come first. A thread's own nice value on Linux. */
        if (setpriority(PRIO_PROCESS, (id_t)gettid(), 5) < 0)
            log_debug("auth worker: cannot lower its priority");
    }
    return w;
}

/* File workers write and read the bytes of files, and hash an upload's
 * whole content when it completes (services/file.c): their store calls are
 * a few rows each, in short transactions of their own that never span the
 * I/O. Below the store worker and the I/O loops too when the cores are
 * short: a 25 MiB upload's SHA-256 is CPU, and other users' sends come
 * first. A file worker allocates nothing before its first task (its
 * svc_worker is the runtime's, its store opened by svc_reopen): glibc gives
 * a thread its arena at its first malloc, and file workers that took theirs
 * at start made the busy threads share (server_tune_malloc). */
static void *svc_file_worker_init(void *arg, unsigned idx)
{
    svc_runtime *rt = arg;
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), 5) < 0)
        log_debug("file worker: cannot lower its priority");
    return &rt->file_w[idx];
}

static void svc_file_worker_fini(void *ctx)
{
    svc_worker *w = ctx;
    store_close(w->st);
    free(w->pushes);
    free(w->appends);
    free(w->append_tasks);
}

static void svc_worker_fini(void *ctx)
{
    svc_worker *w = ctx;
    store_close(w->st);
    free(w->pushes);
    free(w->appends);
    free(w->append_tasks);
    free(w);
}

int64_t svc_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const svc_def *svc_find(const char *name)
{
    const svc_def *all[] = {&svc_user, &svc_social, &svc_message};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (strcmp(all[i]->desc->name, name) == 0)
            return all[i];
    return NULL;
}

static void svc_run_one(svc_worker *w, svc_task *t)
{
    svc_ctx *ctx = &t->ctx;
    ctx->st = w->st;
    ctx->now_ms = svc_now_ms();
    /* The caller has given up: doing the work now would only surprise it. */
    if (t->deadline_ms && svc_clock_ms() > t->deadline_ms) {
        t->outcome = SVC_EXPIRED;
        svc_fail(ctx, PARLEY__ERROR_CODE__UNAVAILABLE, "deadline exceeded");
        return;
    }
    /* Nobody waits for the answer: a read, or the hashing of a login whose
     * connection closed, would be work for nothing. */
    int droppable = t->def->droppable >> t->method & 1;
    if (droppable && t->gone && t->gone(t->gone_arg)) {
        t->outcome = SVC_EXPIRED;
        svc_fail(ctx, PARLEY__ERROR_CODE__UNAVAILABLE, "the client has gone");
        return;
    }
    if (t->def->slow && droppable && __atomic_load_n(&w->rt->stopping, __ATOMIC_ACQUIRE)) {
        svc_fail(ctx, PARLEY__ERROR_CODE__UNAVAILABLE, "server shutting down, try again");
        return;
    }
    if (t->method >= t->def->desc->n_methods || !t->def->methods[t->method]) {
        svc_fail(ctx, PARLEY__ERROR_CODE__UNSUPPORTED, "unknown method");
        return;
    }
    if (!ctx->call->caller || !ctx->call->frame) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "call without caller or frame");
        return;
    }
    t->def->methods[t->method](ctx);
    svc_reply(ctx); /* every result carries a frame, if only an empty one */
}

void svc_defer_append(svc_ctx *ctx, const store_append *req, svc_then_fn then, void *arg)
{
    svc_deferred *d = arena_alloc(ctx->a, sizeof(*d));
    d->append = *req;
    d->then = then;
    d->arg = arg;
    ctx->deferred = d;
}

typedef struct {
    svc_task **tasks; /* those that deferred, in the order they ran */
} svc_appends;

static void svc_append_done(void *arg, size_t i, store_status st, const store_msg *m)
{
    svc_appends *d = arg;
    svc_ctx *ctx = &d->tasks[i]->ctx;
    svc_deferred *def = ctx->deferred;
    ctx->deferred = NULL;
    def->then(ctx, def->arg, st, m);
}

/* Makes the appends of tasks[0..n) that deferred one, all in one call, and
 * finishes their methods. -1 if the transaction is lost (run the batch
 * again), else 0. */
static int svc_flush_appends(svc_worker *w, pool_task **tasks, unsigned n)
{
    unsigned k = 0;
    for (unsigned i = 0; i < n; i++)
        k += ((svc_task *)tasks[i])->ctx.deferred != NULL;
    if (!k)
        return 0;
    if (k > w->appends_cap) {
        free(w->appends);
        free(w->append_tasks);
        w->appends = malloc(k * sizeof(*w->appends));
        w->append_tasks = malloc(k * sizeof(*w->append_tasks));
        if (!w->appends || !w->append_tasks)
            abort();
        w->appends_cap = k;
    }
    k = 0;
    for (unsigned i = 0; i < n; i++) {
        svc_task *t = (svc_task *)tasks[i];
        if (!t->ctx.deferred)
            continue;
        w->append_tasks[k] = t;
        w->appends[k++] = t->ctx.deferred->append;
    }
    svc_appends d = {.tasks = w->append_tasks};
    if (store_message_append_many(w->st, w->appends, k, svc_append_done, &d) != STORE_OK)
        return -1;
    return 0;
}

static void svc_drop_pushes(svc_ctx *ctx)
{
    for (svc_pushq *p = ctx->pushes; p; p = p->next)
        blob_unref(p->frame);
    ctx->pushes = NULL;
    ctx->pushes_tail = &ctx->pushes;
}

/* Forgets what an attempt at t did, to run it again. */
static void svc_reset(svc_task *t)
{
    svc_drop_pushes(&t->ctx);
    parley__result__init(t->ctx.res);
    t->ctx.failed = 0;
    t->ctx.deferred = NULL;
    t->outcome = SVC_RAN;
}

/* A worker whose database connection died opens a new one. */
/* Opens the worker's store on its first task (file workers), or again
 * after the connection died. */
static int svc_reopen(svc_worker *w)
{
    if (w->st && !store_is_dead(w->st))
        return 0;
    char err[256];
    store *st = store_open(w->rt->cfg->db_path, err, sizeof(err));
    if (!st) {
        log_error("store: cannot %s: %s", w->st ? "reconnect" : "open", err);
        return -1;
    }
    char shown[512];
    if (w->st)
        log_info("store: reconnected to %s",
                 store_uri_redacted(w->rt->cfg->db_path, shown, sizeof(shown)));
    store_close(w->st);
    w->st = st;
    if (w->small)
        store_keep_small(st);
    return 0;
}

/* Runs every task of the batch in one transaction. 0 if it committed (each
 * task's own failure was rolled back to its savepoint), -1 if the database
 * threw the whole transaction away and it must be run again. */
static int svc_atomic(const svc_task *t)
{
    return (t->def->atomic >> t->method) & 1;
}

static int svc_attempt(svc_worker *w, pool_task **tasks, unsigned n)
{
    /* A batch of atomic requests needs no transaction around it on a
     * database over the network: each of their writes commits by itself,
     * and the sends' appends are one statement (up to 32 rows). BEGIN and
     * COMMIT would be two more round trips, each a wake-up of the database
     * thread and of this one; at a steady load they were half the
     * statements. Not on SQLite, where BEGIN and COMMIT cost no round trip
     * but every commit writes the WAL: a gateway's coalesced ack of 256
     * cursors was 256 commits, and the sends behind it waited for them. */
    unsigned atomic = 0;
    while (atomic < n && svc_atomic((svc_task *)tasks[atomic]))
        atomic++;
    /* The auth pool's methods hash passwords: slow on purpose. Never in a
     * transaction, which on SQLite would hold the one write lock (everyone's
     * sends) for the whole hash; their store writes are single statements.
     * The file pool's likewise: its methods open short transactions of
     * their own around their metadata, between the reads and writes of
     * file data. */
    if ((atomic == n && !store_single_writer(w->st)) || w->small) {
        for (unsigned i = 0; i < n; i++) {
            svc_task *t = (svc_task *)tasks[i];
            svc_run_one(w, t);
            /* Run the batch again on a new connection: a send that did
             * commit is found by its ref, and acks may repeat. A deadlock
             * undid only this request's own statement or transaction (a
             * login's session and its trim): running it again is safe. */
            if (t->ctx.failed && (store_is_dead(w->st) || store_txn_lost(w->st)))
                return -1;
        }
        if (svc_flush_appends(w, tasks, n) < 0)
            return -1;
        for (unsigned i = 0; i < n; i++) {
            svc_task *t = (svc_task *)tasks[i];
            if (t->ctx.failed) {
                if (store_is_dead(w->st))
                    return -1;
                svc_drop_pushes(&t->ctx);
            }
        }
        return 0;
    }
    if (store_begin(w->st) != STORE_OK) {
        log_error("store: cannot begin a transaction: %s", store_errmsg(w->st));
        return store_is_dead(w->st) ? -1 : -2;
    }
    for (unsigned i = 0; i < n; i++) {
        svc_task *t = (svc_task *)tasks[i];
        /* A savepoint copies every page the request changes first: most of
         * the work of a send, were it not skipped where nothing needs undo. */
        int sp = !svc_atomic(t);
        if (sp && store_savepoint(w->st) != STORE_OK)
            return -1;
        svc_run_one(w, t);
        if (store_txn_lost(w->st))
            return -1;
        if (t->ctx.failed) {
            if (sp)
                store_rollback_to(w->st);
            svc_drop_pushes(&t->ctx);
        } else if (sp) {
            store_release(w->st);
        }
        if (store_txn_lost(w->st))
            return -1;
    }
    /* The sends' appends, together: on MariaDB one statement per batch (or
     * a few), where each was a round trip. */
    if (svc_flush_appends(w, tasks, n) < 0)
        return -1;
    if (store_commit(w->st) != STORE_OK)
        return store_txn_lost(w->st) || store_is_dead(w->st) ? -1 : -2;
    return 0;
}

static int svc_alone(const svc_worker *w, const svc_task *t)
{
    return !store_single_writer(w->st) && ((t->def->alone >> t->method) & 1);
}

static void svc_publish(svc_worker *w, pool_task **tasks, unsigned n)
{
    size_t np = 0;
    for (unsigned i = 0; i < n; i++)
        for (svc_pushq *p = ((svc_task *)tasks[i])->ctx.pushes; p; p = p->next)
            np++;
    if (np > w->pushes_cap) {
        bus_push *v = realloc(w->pushes, np * sizeof(*v));
        if (!v)
            abort();
        w->pushes = v;
        w->pushes_cap = np;
    }
    np = 0;
    for (unsigned i = 0; i < n; i++)
        for (svc_pushq *p = ((svc_task *)tasks[i])->ctx.pushes; p; p = p->next)
            w->pushes[np++] =
                (bus_push){.users = p->users, .n = p->n, .frame = p->frame, .msgid = p->msgid};
    bus_publish_many(w->rt->bus, w->pushes, np);
    for (unsigned i = 0; i < n; i++)
        svc_drop_pushes(&((svc_task *)tasks[i])->ctx);
}

static void svc_run_batch(void *wctx, pool_task **tasks, unsigned n)
{
    svc_worker *w = wctx;
    int rc = -1;
    /* Requests that want a transaction of their own go after the rest. */
    if (n > 1) {
        unsigned nalone = 0;
        for (unsigned i = 0; i < n; i++)
            nalone += (unsigned)svc_alone(w, (svc_task *)tasks[i]);
        if (nalone) {
            pool_task **order = malloc(n * sizeof(*order));
            if (!order)
                abort();
            unsigned together = 0, solo = n - nalone;
            for (unsigned i = 0; i < n; i++) {
                if (svc_alone(w, (svc_task *)tasks[i]))
                    order[solo++] = tasks[i];
                else
                    order[together++] = tasks[i];
            }
            if (together)
                svc_run_batch(wctx, order, together);
            for (unsigned i = together; i < n; i++)
                svc_run_batch(wctx, &order[i], 1);
            free(order);
            return;
        }
    }
    /* A batch that keeps deadlocking runs one request per transaction: the
     * fewer locks a transaction holds, the less it collides. */
    if (n > 1 && w->split) {
        for (unsigned i = 0; i < n; i++)
            svc_run_batch(wctx, &tasks[i], 1);
        w->split--;
        return;
    }
    /* Deadlocks and lost connections undo the whole batch: run it again,
     * from scratch, a few times before giving up. */
    for (int attempt = 0; attempt < 5 && rc == -1; attempt++) {
        if (attempt == 2 && n > 1) {
            store_rollback(w->st);
            for (unsigned i = 0; i < n; i++)
                svc_reset((svc_task *)tasks[i]);
            w->split = 8; /* and the next few batches too */
            svc_run_batch(wctx, tasks, n);
            return;
        }
        if (attempt > 0) {
            log_warn("store: %s; running %u requests again", store_errmsg(w->st), n);
            store_rollback(w->st);
            for (unsigned i = 0; i < n; i++)
                svc_reset((svc_task *)tasks[i]);
            struct timespec pause = {0, (long)(attempt * 2 + (int)(svc_clock_ms() % 5)) * 1000000};
            nanosleep(&pause, NULL);
        }
        if (svc_reopen(w) < 0)
            break;
        rc = svc_attempt(w, tasks, n);
    }
    if (rc != 0) {
        log_error("store: giving up on %u requests: %s", n,
                  w->st ? store_errmsg(w->st) : "no database connection");
        if (w->st)
            store_rollback(w->st);
        for (unsigned i = 0; i < n; i++) {
            svc_task *t = (svc_task *)tasks[i];
            svc_reset(t);
            svc_fail(&t->ctx, PARLEY__ERROR_CODE__INTERNAL, "storage error, not saved");
            svc_drop_pushes(&t->ctx);
        }
    }
    /* Only now, with everything durable, tell anybody: the whole batch's
     * pushes in one publish, in the order the requests ran, which keeps
     * each conversation in seq order. The pushes and replies are posted to
     * the loops together at the end: one wake-up per loop per batch. */
    loop_hold();
    svc_publish(w, tasks, n);
    for (unsigned i = 0; i < n; i++) {
        svc_task *t = (svc_task *)tasks[i];
        svc_reply(&t->ctx);
        /* done owns the arena, and t with it: t is gone after this call. */
        t->done(t->done_arg, t->ctx.a, t->ctx.res, t->outcome);
    }
    loop_release();
}

static const pool_hooks svc_hooks = {
    .worker_init = svc_worker_init,
    .run_batch = svc_run_batch,
    .worker_fini = svc_worker_fini,
};

static const pool_hooks svc_auth_hooks = {
    .worker_init = svc_auth_worker_init,
    .run_batch = svc_run_batch,
    .worker_fini = svc_worker_fini,
};

static const pool_hooks svc_file_hooks = {
    .worker_init = svc_file_worker_init,
    .run_batch = svc_run_batch,
    .worker_fini = svc_file_worker_fini,
};

svc_runtime *svc_runtime_new(const svc_config *cfg, bus *b, char *err, size_t errlen)
{
    svc_runtime *rt = calloc(1, sizeof(*rt));
    if (!rt) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rt->cfg = cfg;
    rt->bus = b;
    /* Create or migrate the schema once, here, before the workers open their
     * own handles: a clear error at start beats one per worker. */
    store *st = store_open(cfg->db_path, err, errlen);
    if (!st) {
        free(rt);
        return NULL;
    }
    store_close(st);
    rt->store_pool =
        pool_new("store", cfg->store_workers, cfg->max_batch, cfg->linger_us, &svc_hooks, rt);
    if (rt->store_pool)
        rt->auth_pool = pool_new_fair("auth", cfg->auth_workers, &svc_auth_hooks, rt);
    /* File transfers (services/file.c) off the store worker, which on
     * SQLite commits everyone's messages: a 25 MiB upload's fsync and hash
     * held every send behind it. Shared out by user, in turn, and each
     * user's requests one at a time in order: a client keeps several
     * chunks of an upload in flight, and each continues where the one
     * before it ended. A user with a big upload waits behind itself; any
     * other user's request waits for at most one task per worker. Their
     * few rows are read and written on the file worker's own connection,
     * as the auth pool's are (short transactions, never across I/O):
     * handing them back to the store worker would put each chunk through
     * its queue and batch wait twice. */
    unsigned nfile = cfg->file_workers ? cfg->file_workers : SVC_FILE_WORKERS;
    rt->file_w = calloc(nfile, sizeof(*rt->file_w));
    for (unsigned i = 0; rt->file_w && i < nfile; i++) {
        rt->file_w[i].rt = rt;
        rt->file_w[i].idx = i;
        rt->file_w[i].small = 1;
    }
    if (rt->auth_pool && rt->file_w)
        rt->file_pool = pool_new_fair_ordered("file", nfile, &svc_file_hooks, rt);
    if (!rt->store_pool || !rt->auth_pool || !rt->file_pool) {
        snprintf(err, errlen, "%s", rt->err[0] ? rt->err : "cannot start worker threads");
        svc_runtime_free(rt);
        return NULL;
    }
    return rt;
}

void svc_runtime_free(svc_runtime *rt)
{
    if (!rt)
        return;
    /* Logins may queue logouts and those nothing further: auth first. */
    pool_free(rt->auth_pool);
    pool_free(rt->file_pool);
    free(rt->file_w);
    pool_free(rt->store_pool);
    free(rt);
}

void svc_runtime_stop(svc_runtime *rt)
{
    if (!rt)
        return;
    __atomic_store_n(&rt->stopping, 1, __ATOMIC_RELEASE);
    /* Their answers are posted to the loops before the caller closes the
     * connections, so the clients learn why (a hash under way finishes). */
    if (pool_wait_idle(rt->auth_pool, 3000) < 0)
        log_warn("stop: logins still running after 3 s; their clients will not hear back");
    if (rt->file_pool && pool_wait_idle(rt->file_pool, 3000) < 0)
        log_warn("stop: file transfers still running after 3 s");
}

void svc_submit(svc_runtime *rt, const svc_def *def, unsigned m, arena *a, Parley__Call *call,
                int64_t deadline_ms, svc_gone_fn gone, void *gone_arg, svc_done_fn done, void *arg)
{
    /* The task lives in the request's arena: one allocation less per call. */
    svc_task *t = arena_zalloc(a, sizeof(*t));
    t->def = def;
    t->method = m;
    t->deadline_ms = deadline_ms;
    t->gone = gone;
    t->gone_arg = gone_arg;
    t->done = done;
    t->done_arg = arg;
    t->ctx.bus = rt->bus;
    t->ctx.cfg = rt->cfg;
    t->ctx.a = a;
    t->ctx.call = call;
    t->ctx.res = arena_alloc(a, sizeof(*t->ctx.res));
    parley__result__init(t->ctx.res);
    t->ctx.pushes_tail = &t->ctx.pushes;
    __atomic_add_fetch(&rt->submitted, 1, __ATOMIC_RELAXED);
    if (def->slow) {
        /* Hashing is shared out by the client's address, in turn: a flood
         * from one place waits behind itself, not in front of everyone. */
        uint64_t flow = 0xcbf29ce484222325ULL;
        const char *addr = call->caller && call->caller->addr ? call->caller->addr : "";
        for (const char *p = addr; *p; p++)
            flow = (flow ^ (unsigned char)*p) * 0x100000001b3ULL;
        if (!addr[0] && call->caller)
            flow ^= call->caller->session_id;
        pool_submit(rt->auth_pool, flow, &t->base);
        return;
    }
    if ((def->file >> m & 1) && call->caller) {
        /* By user: one user's transfers in turn with everyone else's. */
        uint64_t flow =
            call->caller->user_id ? call->caller->user_id : call->caller->session_id | 1ULL << 63;
        pool_submit(rt->file_pool, flow, &t->base);
        return;
    }
    pool_submit(rt->store_pool, call->key, &t->base);
}

int svc_caller_gone(svc_ctx *ctx)
{
    svc_task *t = (svc_task *)((char *)ctx - offsetof(svc_task, ctx));
    return t->gone && t->gone(t->gone_arg);
}

Parley__ServerFrame *svc_reply(svc_ctx *ctx)
{
    if (!ctx->res->frame) {
        ctx->res->frame = arena_alloc(ctx->a, sizeof(*ctx->res->frame));
        parley__server_frame__init(ctx->res->frame);
        if (ctx->call->frame)
            ctx->res->frame->id = ctx->call->frame->id;
    }
    return ctx->res->frame;
}

void svc_fail(svc_ctx *ctx, Parley__ErrorCode code, const char *fmt, ...)
{
    Parley__ServerFrame *f = svc_reply(ctx);
    Parley__Error *e = arena_alloc(ctx->a, sizeof(*e));
    parley__error__init(e);
    e->code = code;
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    e->text = arena_strdup(ctx->a, buf);
    f->error = e;
    f->body_case = PARLEY__SERVER_FRAME__BODY__NOT_SET;
    ctx->res->n_messages = 0;
    ctx->failed = 1;
}

void svc_refuse(svc_ctx *ctx, Parley__ErrorCode code, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    svc_fail(ctx, code, "%s", buf);
    ctx->failed = 0;
}

void svc_fail_store(svc_ctx *ctx, store_status st, const char *what)
{
    switch (st) {
    case STORE_NOT_FOUND:
        svc_fail(ctx, PARLEY__ERROR_CODE__NOT_FOUND, "%s not found", what);
        break;
    case STORE_CONFLICT:
        svc_fail(ctx, PARLEY__ERROR_CODE__CONFLICT, "%s already exists", what);
        break;
    default:
        /* A deadlock is retried by the runtime: a warning there is enough. */
        if (store_txn_lost(ctx->st) && !store_is_dead(ctx->st))
            log_debug("store error on %s: %s", what, store_errmsg(ctx->st));
        else
            log_error("store error on %s: %s", what, store_errmsg(ctx->st));
        svc_fail(ctx, PARLEY__ERROR_CODE__INTERNAL, "storage error");
        break;
    }
}

void svc_push(svc_ctx *ctx, const uint64_t *users, size_t n, const Parley__ServerFrame *frame)
{
    if (n == 0)
        return;
    svc_pushq *p = arena_alloc(ctx->a, sizeof(*p));
    p->next = NULL;
    p->users = arena_alloc(ctx->a, n * sizeof(*users));
    memcpy(p->users, users, n * sizeof(*users));
    p->n = n;
    p->msgid = frame->body_case == PARLEY__SERVER_FRAME__BODY_MESSAGE && frame->message
                   ? frame->message->msgid
                   : 0;
    /* Packed and framed once here; every session gets the same bytes. */
    size_t len = parley__server_frame__get_packed_size(frame);
    p->frame = blob_new(FRAME_HDR + len);
    frame_put_header(p->frame->data, (uint32_t)len);
    parley__server_frame__pack(frame, p->frame->data + FRAME_HDR);
    *ctx->pushes_tail = p;
    ctx->pushes_tail = &p->next;
}

void svc_push_kick(svc_ctx *ctx, const uint64_t *users, size_t n, const Parley__ServerFrame *frame)
{
    svc_pushq **tail = ctx->pushes_tail;
    svc_push(ctx, users, n, frame);
    if (ctx->pushes_tail != tail)
        (*tail)->msgid = BUS_KICK;
}

int svc_check_text(svc_ctx *ctx, const char *s, long min_chars, long max_chars, const char *what)
{
    long n = utf8_count(s, strlen(s));
    if (n < 0) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "%s is not valid UTF-8", what);
        return -1;
    }
    if (n < min_chars) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "%s must not be empty", what);
        return -1;
    }
    if (n > max_chars) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "%s is too long (at most %ld characters)",
                 what, max_chars);
        return -1;
    }
    return 0;
}

int svc_check_name(svc_ctx *ctx, const char *name, const char *what)
{
    if (svc_check_text(ctx, name, 1, LIMIT_NAME_CHARS, what) < 0)
        return -1;
    size_t len = strlen(name);
    if (utf8_name_safe(name, len) < 0 || memchr(name, ':', len)) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST,
                 "%s must not contain ':', control or text-direction characters", what);
        return -1;
    }
    int digits = 1;
    for (size_t i = 0; i < len && digits; i++)
        digits = isdigit((unsigned char)name[i]) != 0;
    if (digits) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "%s must not be only digits", what);
        return -1;
    }
    if (isspace((unsigned char)name[0]) || isspace((unsigned char)name[len - 1])) {
        svc_fail(ctx, PARLEY__ERROR_CODE__BAD_REQUEST, "%s must not start or end with a space",
                 what);
        return -1;
    }
    return 0;
}

int svc_require_user(svc_ctx *ctx)
{
    if (ctx->call->caller->user_id == 0) {
        svc_fail(ctx, PARLEY__ERROR_CODE__UNAUTHENTICATED, "log in first");
        return -1;
    }
    return 0;
}

uint64_t svc_runtime_submitted(const svc_runtime *rt)
{
    return __atomic_load_n(&rt->submitted, __ATOMIC_RELAXED);
}
