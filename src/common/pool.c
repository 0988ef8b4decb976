#include "common/pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

#include "common/log.h"
#include "common/metrics.h"

struct worker {
    pool *p;
    unsigned idx;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pool_task *head, *tail;
    unsigned queued;
    int stop;
    void *ctx;
    uint64_t last_take_us; /* when the worker last took a batch */
};

/* A fair pool's queue: the tasks of one key, in order. */
struct flow {
    struct flow *next;
    uint64_t key;
    pool_task *head, *tail;
};

struct pool {
    const pool_hooks *hooks;
    void *arg;
    unsigned n, max_batch, linger_us;
    unsigned rr;      /* atomic round-robin cursor */
    uint64_t pending; /* atomic: submitted and not yet run */
    struct worker *w;
    pthread_mutex_t start_lock;
    pthread_cond_t start_cond;
    unsigned started, failed;
    char name[16];
    /* fair pools: one queue of flows, served in turn, under flock */
    int fair, fstop;
    int ordered; /* one task of a flow at a time (pool_new_fair_ordered) */
    pthread_mutex_t flock;
    pthread_cond_t fcond;
    struct flow *flows, *flows_tail;
    struct flow *busy; /* ordered pools: flows whose task is running */
};

/* Appends f to the line of flows waiting to be served (under flock). */
static void pool_flow_queue(pool *p, struct flow *f)
{
    f->next = NULL;
    if (p->flows_tail)
        p->flows_tail->next = f;
    else
        p->flows = f;
    p->flows_tail = f;
}

/* A fair pool's worker: the first flow's first task, then that flow goes
 * to the back of the line (an ordered pool's, once that task is done). */
static void pool_main_fair(struct worker *w)
{
    pool *p = w->p;
    for (;;) {
        pthread_mutex_lock(&p->flock);
        while (!p->flows && !p->fstop)
            pthread_cond_wait(&p->fcond, &p->flock);
        struct flow *f = p->flows;
        if (!f) {
            pthread_mutex_unlock(&p->flock);
            break;
        }
        pool_task *t = f->head;
        f->head = t->next;
        if (!f->head)
            f->tail = NULL;
        p->flows = f->next;
        if (!p->flows)
            p->flows_tail = NULL;
        if (p->ordered) {
            /* Off the line until its task is done: the flow's next task
             * cannot overtake this one on another worker. */
            f->next = p->busy;
            p->busy = f;
        } else if (f->head) {
            pool_flow_queue(p, f);
        } else {
            free(f);
        }
        pthread_mutex_unlock(&p->flock);
        p->hooks->run_batch(w->ctx, &t, 1);
        if (p->ordered) {
            pthread_mutex_lock(&p->flock);
            struct flow **pp = &p->busy;
            while (*pp != f)
                pp = &(*pp)->next;
            *pp = f->next;
            if (f->head) {
                pool_flow_queue(p, f);
                pthread_cond_signal(&p->fcond);
            } else {
                free(f);
            }
            pthread_mutex_unlock(&p->flock);
        }
        __atomic_sub_fetch(&p->pending, 1, __ATOMIC_RELEASE);
    }
}

static void pool_submit_fair(pool *p, uint64_t key, pool_task *t)
{
    t->next = NULL;
    pthread_mutex_lock(&p->flock);
    struct flow *f = p->flows;
    while (f && f->key != key)
        f = f->next;
    for (struct flow *b = p->busy; !f && b; b = b->next)
        if (b->key == key)
            f = b;
    if (!f) {
        f = calloc(1, sizeof(*f));
        if (!f)
            abort();
        f->key = key;
        pool_flow_queue(p, f);
    }
    if (f->tail)
        f->tail->next = t;
    else
        f->head = t;
    f->tail = t;
    pthread_cond_signal(&p->fcond);
    pthread_mutex_unlock(&p->flock);
}

static uint64_t pool_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Whether a worker that woke to a small queue lets it gather: only while
 * requests keep coming, so a request to an idle server runs at once and
 * only a busy one trades a little latency for fewer, larger batches. */
static int pool_should_linger(const pool *p, const struct worker *w, uint64_t now)
{
    return p->linger_us && w->queued < POOL_LINGER_ENOUGH && !w->stop &&
           now - w->last_take_us < (uint64_t)p->linger_us * POOL_LINGER_BUSY;
}

static void *pool_main(void *arg)
{
    struct worker *w = arg;
    pool *p = w->p;
    w->ctx = p->hooks->worker_init(p->arg, w->idx);
    pthread_mutex_lock(&p->start_lock);
    p->started++;
    if (!w->ctx)
        p->failed++;
    pthread_cond_broadcast(&p->start_cond);
    pthread_mutex_unlock(&p->start_lock);
    if (!w->ctx)
        return NULL;
    if (p->fair) {
        pool_main_fair(w);
        goto out;
    }

    /* The batch wait is a few hundred microseconds: the default timer slack
     * (50 us) would add a fifth to it. */
    if (p->linger_us)
        prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    pool_task **batch = malloc(sizeof(*batch) * p->max_batch);
    if (!batch)
        abort();
    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (!w->head && !w->stop)
            pthread_cond_wait(&w->cond, &w->lock);
        if (!w->head && w->stop) {
            pthread_mutex_unlock(&w->lock);
            break;
        }
        /* Let more requests join a small batch (group commit): each batch
         * pays a transaction's fixed price (locks, a WAL write, on MariaDB a
         * round trip) and a wake-up of every loop it answers, so a few
         * bigger batches cost much less than many small ones. Submitters do
         * not signal a worker whose queue is not empty, so the wait costs no
         * wake-ups. */
        uint64_t now = pool_now_us();
        if (pool_should_linger(p, w, now)) {
            pthread_mutex_unlock(&w->lock);
            struct timespec ts = {(time_t)(p->linger_us / 1000000),
                                  (long)(p->linger_us % 1000000) * 1000};
            nanosleep(&ts, NULL);
            pthread_mutex_lock(&w->lock);
        }
        w->last_take_us = now;
        unsigned n = 0;
        while (w->head && n < p->max_batch) {
            batch[n++] = w->head;
            w->head = w->head->next;
        }
        w->queued -= n;
        if (!w->head)
            w->tail = NULL;
        pthread_mutex_unlock(&w->lock);
        p->hooks->run_batch(w->ctx, batch, n);
        __atomic_sub_fetch(&p->pending, n, __ATOMIC_RELEASE);
    }
    free(batch);
out:
    if (p->hooks->worker_fini)
        p->hooks->worker_fini(w->ctx);
    return NULL;
}

/* Queue depth for the metrics: tasks submitted and not yet run. */
static int64_t pool_depth(void *arg)
{
    return (int64_t)__atomic_load_n(&((pool *)arg)->pending, __ATOMIC_RELAXED);
}

static pool *pool_start(const char *name, unsigned n, unsigned max_batch, unsigned linger_us,
                        const pool_hooks *hooks, void *arg, int fair)
{
    pool *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->fair = fair != 0;
    p->ordered = fair == 2;
    pthread_mutex_init(&p->flock, NULL);
    pthread_cond_init(&p->fcond, NULL);
    p->hooks = hooks;
    p->arg = arg;
    p->n = n ? n : 1;
    p->max_batch = max_batch ? max_batch : 1;
    p->linger_us = linger_us;
    snprintf(p->name, sizeof(p->name), "%s", name);
    pthread_mutex_init(&p->start_lock, NULL);
    pthread_cond_init(&p->start_cond, NULL);
    p->w = calloc(p->n, sizeof(*p->w));
    if (!p->w) {
        free(p);
        return NULL;
    }
    unsigned created = 0;
    for (unsigned i = 0; i < p->n; i++) {
        struct worker *w = &p->w[i];
        w->p = p;
        w->idx = i;
        pthread_mutex_init(&w->lock, NULL);
        pthread_cond_init(&w->cond, NULL);
        if (pthread_create(&w->thread, NULL, pool_main, w) != 0)
            break;
        char tname[16]; /* the kernel keeps 15 bytes: enough for top -H */
        snprintf(tname, sizeof tname, "%.8s-%u", p->name, i % 1000u);
        pthread_setname_np(w->thread, tname);
        created++;
    }
    pthread_mutex_lock(&p->start_lock);
    while (p->started < created)
        pthread_cond_wait(&p->start_cond, &p->start_lock);
    pthread_mutex_unlock(&p->start_lock);
    if (created < p->n || p->failed) {
        log_error("%s pool: %u of %u workers failed to start", p->name, p->n - created + p->failed,
                  p->n);
        p->n = created;
        pool_free(p);
        return NULL;
    }
    metrics_gauge_fn(M_POOL_QUEUE, metrics_pool_label(name), pool_depth, p);
    return p;
}

pool *pool_new(const char *name, unsigned n, unsigned max_batch, unsigned linger_us,
               const pool_hooks *hooks, void *arg)
{
    return pool_start(name, n, max_batch, linger_us, hooks, arg, 0);
}

pool *pool_new_fair(const char *name, unsigned n, const pool_hooks *hooks, void *arg)
{
    return pool_start(name, n, 1, 0, hooks, arg, 1);
}

pool *pool_new_fair_ordered(const char *name, unsigned n, const pool_hooks *hooks, void *arg)
{
    return pool_start(name, n, 1, 0, hooks, arg, 2);
}

unsigned pool_key_worker(uint64_t key, unsigned n)
{
    /* From the product's high half: routing keys are odd (0 means none),
     * and key % 2 sent every conversation to the same one of two workers. */
    return (unsigned)(((key * 0x9E3779B97F4A7C15ULL) >> 32) % n);
}

void pool_submit(pool *p, uint64_t key, pool_task *t)
{
    unsigned i;
    if (p->fair) {
        __atomic_add_fetch(&p->pending, 1, __ATOMIC_RELAXED);
        pool_submit_fair(p, key, t);
        return;
    }
    if (key)
        i = pool_key_worker(key, p->n);
    else
        i = __atomic_fetch_add(&p->rr, 1, __ATOMIC_RELAXED) % p->n;
    struct worker *w = &p->w[i];
    t->next = NULL;
    __atomic_add_fetch(&p->pending, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&w->lock);
    /* A worker waits only on an empty queue. */
    int wake = !w->head;
    if (w->tail)
        w->tail->next = t;
    else
        w->head = t;
    w->tail = t;
    w->queued++;
    pthread_mutex_unlock(&w->lock);
    /* After the unlock: signalled with the lock held, the worker woke only
     * to wait for it again (a futex wait and wake more per request). */
    if (wake)
        pthread_cond_signal(&w->cond);
}

int pool_wait_idle(pool *p, unsigned timeout_ms)
{
    /* Polled: it runs once, at a stop, and the tasks it waits for take
     * milliseconds each. */
    for (unsigned waited = 0; p && __atomic_load_n(&p->pending, __ATOMIC_ACQUIRE); waited += 5) {
        if (waited >= timeout_ms)
            return -1;
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

void pool_free(pool *p)
{
    if (!p)
        return;
    metrics_gauge_fn_remove(p);
    pthread_mutex_lock(&p->flock);
    p->fstop = 1;
    pthread_cond_broadcast(&p->fcond);
    pthread_mutex_unlock(&p->flock);
    for (unsigned i = 0; i < p->n; i++) {
        struct worker *w = &p->w[i];
        pthread_mutex_lock(&w->lock);
        w->stop = 1;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);
    }
    for (unsigned i = 0; i < p->n; i++) {
        pthread_join(p->w[i].thread, NULL);
        pthread_mutex_destroy(&p->w[i].lock);
        pthread_cond_destroy(&p->w[i].cond);
    }
    pthread_mutex_destroy(&p->start_lock);
    pthread_cond_destroy(&p->start_cond);
    pthread_mutex_destroy(&p->flock);
    pthread_cond_destroy(&p->fcond);
    free(p->w);
    free(p);
}

unsigned pool_size(const pool *p)
{
    return p->n;
}
