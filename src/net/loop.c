#include "net/loop.h"

#include <errno.h>
#include <event2/thread.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "net/loop_impl.h"

static __thread loop *loop_self;

int loop_global_init(void)
{
    return evthread_use_pthreads();
}

static uint32_t loop_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint32_t)ts.tv_sec;
}

void loop_update_now(loop *l)
{
    l->now = loop_clock();
}

static void loop_run_posts(loop *l)
{
    pthread_mutex_lock(&l->lock);
    loop_node *n = l->posts_head;
    l->posts_head = l->posts_tail = NULL;
    int stopping = l->stopping;
    pthread_mutex_unlock(&l->lock);
    while (n) {
        loop_node *next = n->next;
        n->fn(n->arg); /* may free n */
        n = next;
    }
    if (stopping)
        event_base_loopexit(l->base, NULL);
}

/* Wakes l's thread (from any thread): its eventfd becomes readable. */
static void loop_kick(loop *l)
{
    uint64_t one = 1;
    while (write(l->wake_fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
    /* EAGAIN: the counter is full, so a wake-up is pending anyway. */
}

/* Edge-triggered: every write to the eventfd is an event of its own, so
 * the counter is never read (a system call less per wake-up); a post after
 * the queue is taken below writes again. It would take 2^64 posts to fill. */
static void loop_on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    loop_run_posts(arg);
}

static void loop_on_tick(evutil_socket_t fd, short what, void *arg)
{
    loop *l = arg;
    l->now = loop_clock();
    conn_loop_tick(l);
}

static void loop_on_flush(evutil_socket_t fd, short what, void *arg)
{
    conn_loop_flush(arg);
}

loop *loop_new(unsigned index)
{
    loop *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->index = index;
    l->now = loop_clock();
    l->wake_fd = -1;
    pthread_mutex_init(&l->lock, NULL);
    l->base = event_base_new();
    if (!l->base)
        goto fail;
    /* Priority 0: I/O, posts and the flush. The flush is activated by the
     * first handler that queues output, so it runs after every event the
     * same poll made active: everything read in one pass is answered with
     * one write per connection. At priority 1 it ran only after another
     * epoll_wait (libevent runs one priority per pass), a system call more
     * per wake-up. Priority 1: the gateway's ack timer. */
    if (event_base_priority_init(l->base, 2) < 0)
        goto fail;
    /* Posts wake the loop through an eventfd of its own, written after the
     * queue's lock is let go, not with event_active: that writes libevent's
     * notification while holding the base's lock, which the woken loop
     * then waits for (a futex wait and wake more per post). */
    l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->wake_fd < 0)
        goto fail;
    l->wake = event_new(l->base, l->wake_fd, EV_READ | EV_PERSIST | EV_ET, loop_on_wake, l);
    l->tick = event_new(l->base, -1, EV_PERSIST, loop_on_tick, l);
    l->flush = event_new(l->base, -1, 0, loop_on_flush, l);
    if (!l->wake || !l->tick || !l->flush || event_add(l->wake, NULL) < 0)
        goto fail;
    event_priority_set(l->wake, 0);
    event_priority_set(l->tick, 0);
    event_priority_set(l->flush, 0);
    struct timeval one = {1, 0};
    event_add(l->tick, &one);
    return l;
fail:
    loop_free(l);
    return NULL;
}

static void *loop_main(void *arg)
{
    loop *l = arg;
    loop_self = l;
    event_base_loop(l->base, EVLOOP_NO_EXIT_ON_EMPTY);
    loop_self = NULL;
    return NULL;
}

int loop_start(loop *l)
{
    if (pthread_create(&l->thread, NULL, loop_main, l) != 0)
        return -1;
    char tname[16];
    snprintf(tname, sizeof tname, "loop-%u", l->index % 1000u);
    pthread_setname_np(l->thread, tname);
    l->started = 1;
    return 0;
}

/* Appends the chain head..tail to l's posts; wakes l if they were empty. */
static void loop_post_chain(loop *l, loop_node *head, loop_node *tail)
{
    pthread_mutex_lock(&l->lock);
    int was_empty = l->posts_head == NULL;
    if (l->posts_tail)
        l->posts_tail->next = head;
    else
        l->posts_head = head;
    l->posts_tail = tail;
    pthread_mutex_unlock(&l->lock);
    /* One wake-up per batch of posts is enough. */
    if (was_empty)
        loop_kick(l);
}

/* The posts a thread holds back between loop_hold and loop_release, per
 * loop, in the order posted. */
#define LOOP_HELD_MAX 16
static __thread struct {
    unsigned depth, n;
    struct {
        loop *l;
        loop_node *head, *tail;
    } v[LOOP_HELD_MAX];
} loop_held;

void loop_hold(void)
{
    loop_held.depth++;
}

void loop_release(void)
{
    if (!loop_held.depth || --loop_held.depth)
        return;
    for (unsigned i = 0; i < loop_held.n; i++)
        loop_post_chain(loop_held.v[i].l, loop_held.v[i].head, loop_held.v[i].tail);
    loop_held.n = 0;
}

void loop_post_node(loop *l, loop_node *n)
{
    n->next = NULL;
    if (loop_held.depth) {
        unsigned i = 0;
        while (i < loop_held.n && loop_held.v[i].l != l)
            i++;
        if (i < loop_held.n) {
            loop_held.v[i].tail->next = n;
            loop_held.v[i].tail = n;
            return;
        }
        if (i < LOOP_HELD_MAX) {
            loop_held.v[i].l = l;
            loop_held.v[i].head = loop_held.v[i].tail = n;
            loop_held.n++;
            return;
        }
        /* More loops than slots: this loop's posts go now, still in order
         * (none of them is held). */
    }
    loop_post_chain(l, n, n);
}

struct loop_heap_post {
    loop_node node;
    loop_fn fn;
    void *arg;
};

static void loop_heap_run(void *arg)
{
    struct loop_heap_post *p = arg;
    loop_fn fn = p->fn;
    void *fnarg = p->arg;
    free(p);
    fn(fnarg);
}

void loop_post(loop *l, loop_fn fn, void *arg)
{
    struct loop_heap_post *p = malloc(sizeof(*p));
    if (!p)
        abort();
    p->fn = fn;
    p->arg = arg;
    p->node.fn = loop_heap_run;
    p->node.arg = p;
    loop_post_node(l, &p->node);
}

void loop_stop(loop *l)
{
    if (!l->started)
        return;
    pthread_mutex_lock(&l->lock);
    l->stopping = 1;
    pthread_mutex_unlock(&l->lock);
    loop_kick(l);
    pthread_join(l->thread, NULL);
    l->started = 0;
}

void loop_free(loop *l)
{
    if (!l)
        return;
    if (l->started)
        loop_stop(l);
    /* Whatever was posted after the thread left still owns memory. */
    loop_self = l;
    while (l->posts_head)
        loop_run_posts(l);
    loop_self = NULL;
    /* Output queued just before the stop (a gateway's last calls) is never
     * written: without this its connections would keep a reference each. */
    conn_loop_drop_flush(l);
    if (l->wake)
        event_free(l->wake);
    if (l->tick)
        event_free(l->tick);
    if (l->flush)
        event_free(l->flush);
    if (l->base)
        event_base_free(l->base);
    if (l->wake_fd >= 0)
        close(l->wake_fd);
    pthread_mutex_destroy(&l->lock);
    free(l->scratch);
    free(l);
}

struct event_base *loop_base(loop *l)
{
    return l->base;
}

unsigned loop_index(const loop *l)
{
    return l->index;
}

uint32_t loop_now(const loop *l)
{
    return l->now;
}

loop *loop_current(void)
{
    return loop_self;
}

void loop_set_udata(loop *l, void *udata)
{
    l->udata = udata;
}

void *loop_udata(const loop *l)
{
    return l->udata;
}
