/*
 * pool: worker threads for blocking work (storage, password hashing).
 *
 * Each worker has its own queue and its own context (e.g. a store handle).
 * Tasks submitted with the same non-zero key go to the same worker and run
 * in submission order; key 0 spreads tasks round-robin. A worker takes
 * every task queued for it (up to max_batch) and runs them as one batch, so
 * that the layer above can commit them together (group commit).
 */
#ifndef PARLEY_POOL_H
#define PARLEY_POOL_H

#include <stdint.h>

typedef struct pool pool;

typedef struct pool_task {
    struct pool_task *next;
} pool_task;

typedef struct pool_hooks {
    /* Runs on worker idx's thread before any task; returns its context, or
     * NULL on failure (the pool then fails to start). */
    void *(*worker_init)(void *arg, unsigned idx);
    /* Runs a batch of n >= 1 tasks on the worker's thread, oldest first. */
    void (*run_batch)(void *ctx, pool_task **tasks, unsigned n);
    /* Runs on the worker's thread after its last batch. */
    void (*worker_fini)(void *ctx);
} pool_hooks;

/* A worker that wakes to fewer queued tasks than this waits linger_us for
 * more before it runs them; with this many, waiting gains little. It waits
 * only while requests keep coming, when its previous batch was taken less
 * than POOL_LINGER_BUSY times linger_us ago: a lone request to an idle
 * server runs at once. */
enum { POOL_LINGER_ENOUGH = 32, POOL_LINGER_BUSY = 20 };

/* Starts n worker threads. linger_us: how long a worker lets a small batch
 * gather (0: runs at once). NULL on failure. The caller owns the pool. */
pool *pool_new(const char *name, unsigned n, unsigned max_batch, unsigned linger_us,
               const pool_hooks *hooks, void *arg);
/* A pool whose workers share one fair queue: tasks are grouped into flows
 * by the key given to pool_submit (e.g. the client's address), and the
 * workers take one task from each flow in turn. A flow with a thousand tasks
 * queued delays another flow's first task by one task per worker, not a
 * thousand. For slow work (password hashing); batches are of one task. */
pool *pool_new_fair(const char *name, unsigned n, const pool_hooks *hooks, void *arg);
/* As pool_new_fair, and a flow's tasks run one at a time, in the order
 * submitted (a fair pool runs a flow's next task on another worker at
 * once): for a client's pipelined requests that must not overtake each
 * other (a file's chunks). */
pool *pool_new_fair_ordered(const char *name, unsigned n, const pool_hooks *hooks, void *arg);
/* The worker (of n) that a task with non-zero key goes to. */
unsigned pool_key_worker(uint64_t key, unsigned n);
/* Queues t (owned by the caller until run_batch has seen it). Thread-safe. */
void pool_submit(pool *p, uint64_t key, pool_task *t);
/* Waits until every task submitted so far has run (or timeout_ms passes):
 * for a clean stop that answers what is queued before closing its clients.
 * 0 if the pool is idle, -1 on timeout. */
int pool_wait_idle(pool *p, unsigned timeout_ms);
/* Runs every task already queued, then stops and joins the workers. */
void pool_free(pool *p);
unsigned pool_size(const pool *p);

#endif
