/*
 * loop_impl: the inside of a loop, shared by loop.c and conn.c only.
 */
#ifndef PARLEY_LOOP_IMPL_H
#define PARLEY_LOOP_IMPL_H

#include <event2/event.h>
#include <pthread.h>

#include "net/loop.h"

struct conn;

struct loop {
    struct event_base *base;
    pthread_t thread;
    int started;
    unsigned index;
    uint32_t now;
    void *udata;

    pthread_mutex_t lock; /* guards posts */
    loop_node *posts_head, *posts_tail;
    int stopping;
    struct event *wake;
    int wake_fd; /* eventfd: written by a poster that finds the queue empty */

    struct event *tick;     /* once a second: clock, idle sweep */
    struct event *flush;    /* low priority: runs after the reads of one pass */
    struct conn *conns;     /* every open connection of this loop */
    struct conn *flushing;  /* connections with output to write this pass */
    int in_flush;           /* conn_loop_flush is running */
    unsigned char *scratch; /* read buffer shared by the loop's connections */
};

/* Reads the clock into l->now: the sweep does once a second, conn.c when it
 * notes the time of an event that a limit counts from. */
void loop_update_now(struct loop *l);

void conn_loop_tick(struct loop *l);
void conn_loop_flush(struct loop *l);
/* The loop has stopped for good: drops the references of the connections
 * still queued for a flush that will never run, calling no handler. */
void conn_loop_drop_flush(struct loop *l);

#endif
