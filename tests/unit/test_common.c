/* The small common pieces: UTF-8 validation, the u64 map, the arena, how a
 * pool picks a worker. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "common/arena.h"
#include "common/keys.h"
#include "common/pool.h"
#include "common/u64map.h"
#include "common/utf8.h"

static void test_utf8_counts_code_points(void **state)
{
    assert_int_equal(utf8_count("", 0), 0);
    assert_int_equal(utf8_count("abc", 3), 3);
    assert_int_equal(utf8_count("h\xc3\xa9llo", 6), 5);             /* é */
    assert_int_equal(utf8_count("\xe4\xbd\xa0\xe5\xa5\xbd", 6), 2); /* 你好 */
    assert_int_equal(utf8_count("\xf0\x9f\x98\x80", 4), 1);         /* emoji */
}

static void test_utf8_rejects_malformed(void **state)
{
    assert_int_equal(utf8_count("\xff", 1), -1);
    assert_int_equal(utf8_count("\xc3", 1), -1);             /* truncated */
    assert_int_equal(utf8_count("\xc0\xaf", 2), -1);         /* overlong '/' */
    assert_int_equal(utf8_count("\xed\xa0\x80", 3), -1);     /* surrogate */
    assert_int_equal(utf8_count("\xf4\x90\x80\x80", 4), -1); /* > U+10FFFF */
    assert_int_equal(utf8_count("a\0b", 3), -1);             /* NUL */
    assert_int_equal(utf8_count("\x80", 1), -1);             /* lone continuation */
}

static void test_u64map_put_get_del(void **state)
{
    u64map *m = u64map_new();
    assert_non_null(m);
    for (uint64_t k = 1; k <= 10000; k++)
        assert_int_equal(u64map_put(m, k * 7919, (void *)(uintptr_t)k), 0);
    assert_int_equal(u64map_size(m), 10000);
    for (uint64_t k = 1; k <= 10000; k++)
        assert_ptr_equal(u64map_get(m, k * 7919), (void *)(uintptr_t)k);
    assert_null(u64map_get(m, 5));
    /* Delete every other key; the rest must stay reachable (backward shift). */
    for (uint64_t k = 1; k <= 10000; k += 2)
        assert_ptr_equal(u64map_del(m, k * 7919), (void *)(uintptr_t)k);
    assert_int_equal(u64map_size(m), 5000);
    for (uint64_t k = 1; k <= 10000; k++) {
        void *want = (k % 2) ? NULL : (void *)(uintptr_t)k;
        assert_ptr_equal(u64map_get(m, k * 7919), want);
    }
    assert_null(u64map_del(m, 3));
    u64map_put(m, 2 * 7919, (void *)99);
    assert_ptr_equal(u64map_get(m, 2 * 7919), (void *)99);
    assert_int_equal(u64map_size(m), 5000);
    u64map_clear(m);
    assert_int_equal(u64map_size(m), 0);
    assert_null(u64map_get(m, 2 * 7919));
    assert_int_equal(u64map_put(m, 7, (void *)7), 0);
    assert_ptr_equal(u64map_get(m, 7), (void *)7);
    u64map_free(m);
}

static void test_arena_alloc_and_reset(void **state)
{
    arena *a = arena_new();
    char *small = arena_strdup(a, "hello");
    char *big = arena_alloc(a, 100000);
    memset(big, 'x', 100000);
    assert_string_equal(small, "hello");
    assert_string_equal(arena_printf(a, "%d-%s", 42, "x"), "42-x");
    for (int i = 0; i < 1000; i++)
        assert_non_null(arena_zalloc(a, 64));
    assert_true(((uintptr_t)arena_alloc(a, 3) % _Alignof(max_align_t)) == 0);
    arena_reset(a);
    assert_string_equal(arena_strndup(a, "abcdef", 3), "abc");
    arena_free(a);
}

/* Conversations spread over a pool's workers: every routing key is odd,
 * and with key % n all of them once went to one worker of two. */
static void test_pool_spreads_conversations(void **state)
{
    for (unsigned n = 2; n <= 4; n++) {
        unsigned direct[4] = {0}, group[4] = {0};
        for (uint64_t u = 1; u <= 1000; u += 2) {
            unsigned w = pool_key_worker(key_direct(u, u + 1), n);
            assert_true(w < n);
            assert_int_equal(w, pool_key_worker(key_direct(u + 1, u), n)); /* either side */
            direct[w]++;
            group[pool_key_worker(key_group(u), n)]++;
        }
        for (unsigned w = 0; w < n; w++) {
            /* 500 of each; a fair share is 500 / n. */
            assert_true(direct[w] > 500 / n * 3 / 4);
            assert_true(group[w] > 500 / n * 3 / 4);
        }
    }
}

typedef struct {
    pthread_mutex_t mu;
    unsigned batches, tasks;
} batch_log;

static void *log_init(void *arg, unsigned idx)
{
    (void)idx;
    return arg;
}

static void log_batch(void *ctx, pool_task **tasks, unsigned n)
{
    (void)tasks;
    batch_log *l = ctx;
    pthread_mutex_lock(&l->mu);
    l->batches++;
    l->tasks += n;
    pthread_mutex_unlock(&l->mu);
}

/* With a batch wait, requests that arrive while the first waits run with it
 * as one batch (one transaction, one statement on MariaDB), once requests
 * keep coming. */
static void test_pool_batch_wait_gathers(void **state)
{
    static const pool_hooks hooks = {.worker_init = log_init, .run_batch = log_batch};
    batch_log l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    pool *p = pool_new("test", 1, 64, 1000000, &hooks, &l); /* 1 s: ample */
    assert_non_null(p);
    pool_task t[6];
    /* A first request: the pool is busy from now on (for 20 s). */
    pool_submit(p, 7, &t[5]);
    assert_int_equal(pool_wait_idle(p, 5000), 0);
    pool_submit(p, 7, &t[0]);
    /* Long enough for the worker to wake: without the wait it would run
     * the first request alone. */
    struct timespec pause = {0, 50 * 1000000};
    nanosleep(&pause, NULL);
    for (int i = 1; i < 5; i++)
        pool_submit(p, 7, &t[i]);
    pool_free(p); /* runs what is queued, then joins */
    assert_int_equal(l.tasks, 6);
    assert_int_equal(l.batches, 2);
}

/* A lone request to an idle pool does not wait for company: a user of a
 * quiet server gets no added latency from the batch wait. */
static void test_pool_idle_runs_at_once(void **state)
{
    static const pool_hooks hooks = {.worker_init = log_init, .run_batch = log_batch};
    batch_log l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    pool *p = pool_new("test", 1, 64, 10000000, &hooks, &l); /* 10 s */
    assert_non_null(p);
    pool_task t;
    pool_submit(p, 7, &t);
    /* Well under the 10 s wait, even under a sanitizer on a busy machine. */
    assert_int_equal(pool_wait_idle(p, 3000), 0);
    pool_free(p);
    assert_int_equal(l.tasks, 1);
}

/* A fair pool serves its flows in turn: one flooded flow does not hold up
 * another's first task. */
typedef struct {
    pool_task base;
    int flow;
} flow_task;

typedef struct {
    pthread_mutex_t mu;
    int order[16];
    int n;
} flow_log;

static void *flow_init(void *arg, unsigned idx)
{
    return arg;
}

static void flow_batch(void *ctx, pool_task **tasks, unsigned n)
{
    flow_log *l = ctx;
    struct timespec pause = {0, 2 * 1000000};
    nanosleep(&pause, NULL);
    pthread_mutex_lock(&l->mu);
    for (unsigned i = 0; i < n; i++)
        l->order[l->n++] = ((flow_task *)tasks[i])->flow;
    pthread_mutex_unlock(&l->mu);
}

static void test_pool_fair_serves_flows_in_turn(void **state)
{
    static const pool_hooks hooks = {.worker_init = flow_init, .run_batch = flow_batch};
    flow_log l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    pool *p = pool_new_fair("fair", 1, &hooks, &l);
    assert_non_null(p);
    flow_task t[11];
    for (int i = 0; i < 10; i++) {
        t[i].flow = 1;
        pool_submit(p, 111, &t[i].base);
    }
    t[10].flow = 2;
    pool_submit(p, 222, &t[10].base);
    assert_int_equal(pool_wait_idle(p, 5000), 0);
    pool_free(p);
    assert_int_equal(l.n, 11);
    /* The one task of flow 2 ran within the first three, not last. */
    int at = -1;
    for (int i = 0; i < l.n; i++)
        if (l.order[i] == 2)
            at = i;
    assert_in_range(at, 0, 2);
}

/* An ordered fair pool runs a flow's tasks one at a time, in order, even
 * with idle workers (a file's chunks), and still serves other flows. */
typedef struct {
    pthread_mutex_t mu;
    int seq[32], n;
    int running[3], overlap;
} ordered_log;

typedef struct {
    pool_task base;
    int flow, seq;
} ordered_task;

static void ordered_batch(void *ctx, pool_task **tasks, unsigned n)
{
    ordered_log *l = ctx;
    ordered_task *t = (ordered_task *)tasks[0];
    assert_int_equal(n, 1);
    pthread_mutex_lock(&l->mu);
    if (l->running[t->flow]++)
        l->overlap++;
    pthread_mutex_unlock(&l->mu);
    struct timespec pause = {0, 1000000};
    nanosleep(&pause, NULL);
    pthread_mutex_lock(&l->mu);
    l->running[t->flow]--;
    if (t->flow == 1)
        l->seq[l->n++] = t->seq;
    pthread_mutex_unlock(&l->mu);
}

static void test_pool_fair_ordered_keeps_a_flow_in_order(void **state)
{
    static const pool_hooks hooks = {.worker_init = flow_init, .run_batch = ordered_batch};
    ordered_log l = {.mu = PTHREAD_MUTEX_INITIALIZER};
    pool *p = pool_new_fair_ordered("ordered", 3, &hooks, &l);
    assert_non_null(p);
    ordered_task t[24];
    for (int i = 0; i < 24; i++) {
        t[i].flow = i % 3 == 2 ? 2 : 1;
        t[i].seq = i;
        pool_submit(p, t[i].flow == 1 ? 111 : 222, &t[i].base);
    }
    assert_int_equal(pool_wait_idle(p, 5000), 0);
    pool_free(p);
    assert_int_equal(l.overlap, 0);
    assert_int_equal(l.n, 16);
    for (int i = 1; i < l.n; i++)
        assert_true(l.seq[i - 1] < l.seq[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_counts_code_points),
        cmocka_unit_test(test_utf8_rejects_malformed),
        cmocka_unit_test(test_u64map_put_get_del),
        cmocka_unit_test(test_arena_alloc_and_reset),
        cmocka_unit_test(test_pool_spreads_conversations),
        cmocka_unit_test(test_pool_batch_wait_gathers),
        cmocka_unit_test(test_pool_idle_runs_at_once),
        cmocka_unit_test(test_pool_fair_serves_flows_in_turn),
        cmocka_unit_test(test_pool_fair_ordered_keeps_a_flow_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
