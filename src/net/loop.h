/*
 * loop: an event-loop thread (one libevent event_base per thread, as in
 * memcached and muduo). Other threads hand work to a loop with loop_post();
 * everything a loop owns (its connections, its session table) is touched
 * only from its own thread, so none of it needs locks.
 */
#ifndef PARLEY_LOOP_H
#define PARLEY_LOOP_H

#include <stdint.h>

struct event_base;
typedef struct loop loop;

typedef void (*loop_fn)(void *arg);

/* An intrusive post: embed it in a struct that lives until fn has run. */
typedef struct loop_node {
    struct loop_node *next;
    loop_fn fn;
    void *arg;
} loop_node;

/* Call once per process before creating any loop (enables libevent's locks
 * so that other threads may wake a loop). 0 or -1. */
int loop_global_init(void);

/* A new loop with the given index; its thread starts with loop_start().
 * The caller owns it (loop_free). NULL on failure. */
loop *loop_new(unsigned index);
int loop_start(loop *l);
/* Asks the loop to run every post queued so far, then leave its thread;
 * waits for the thread to end. */
void loop_stop(loop *l);
/* Runs the posts still queued (there are none after loop_stop unless more
 * were posted since) and frees the loop. */
void loop_free(loop *l);

/* Runs fn(arg) on l's thread, in the order posted. Thread-safe. Aborts on OOM. */
void loop_post(loop *l, loop_fn fn, void *arg);
void loop_post_node(loop *l, loop_node *n);
/* Between loop_hold and loop_release (they nest), this thread's posts are
 * kept and then handed to each loop at once: one lock and at most one
 * wake-up per loop for a whole batch of replies and pushes, instead of one
 * per post that finds its loop's queue just emptied. */
void loop_hold(void);
void loop_release(void);

struct event_base *loop_base(loop *l);
unsigned loop_index(const loop *l);
/* Seconds on a monotonic clock, refreshed once a second by the loop. */
uint32_t loop_now(const loop *l);
/* The loop whose thread is calling, or NULL on any other thread. */
loop *loop_current(void);

/* One pointer of per-loop state for the layer above (the gateway). */
void loop_set_udata(loop *l, void *udata);
void *loop_udata(const loop *l);

#endif
