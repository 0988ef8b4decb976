/*
 * limiter: the state of the abuse limits, keyed by a 64-bit key (a source
 * address, a user, an account and address pair), shared by threads.
 *
 * Three kinds of entry live in one table, each key used for one kind only:
 *   - token buckets (requests, messages, registrations per unit of time);
 *   - counters with a ceiling (connections or queued logins per address);
 *   - failure records with a growing delay (wrong passwords).
 *
 * The table is split into shards, each behind its own mutex, so threads
 * rarely meet. It is bounded: past its capacity it forgets entries that
 * hold nothing (a full bucket, a zero count, an old failure), which is the
 * same as never having seen them.
 */
#ifndef PARLEY_LIMITER_H
#define PARLEY_LIMITER_H

#include <stdint.h>

typedef struct limiter limiter;

/* A table of at most about max_keys entries. NULL on OOM. */
limiter *limiter_new(unsigned max_keys);
void limiter_free(limiter *l);

/* Milliseconds on a monotonic clock. */
int64_t limiter_now_ms(void);

/* Takes one token from key's bucket, which refills at per_sec tokens a
 * second up to burst (a new key starts full). 0 if taken; -1 if empty, with
 * the wait until a token is there in *retry_ms. per_sec 0: no limit. */
int limiter_take(limiter *l, uint64_t key, double per_sec, double burst, int64_t now_ms,
                 uint32_t *retry_ms);

/* As limiter_take, but only looks: 0 if a token is there (none taken). */
int limiter_peek(limiter *l, uint64_t key, double per_sec, double burst, int64_t now_ms,
                 uint32_t *retry_ms);

/* Adds delta to key's count, unless that would take it above max (max 0: no
 * ceiling). 0 if done, -1 if refused. A count never goes below 0. */
int limiter_count(limiter *l, uint64_t key, int delta, unsigned max);

/* Failures of key (an account from an address): 0 if a try may go ahead
 * now, else the milliseconds to wait in *retry_ms. */
int limiter_fail_check(limiter *l, uint64_t key, int64_t now_ms, uint32_t *retry_ms);
/* Notes a failure. After `free_tries` failures each further one makes the
 * next try wait: 1 s, doubling, at most max_delay_ms. Returns that wait (0
 * while tries are still free). */
uint32_t limiter_fail_note(limiter *l, uint64_t key, unsigned free_tries, uint32_t max_delay_ms,
                           int64_t now_ms);
/* A success: forget key's failures. */
void limiter_fail_clear(limiter *l, uint64_t key);

/* A key from bytes (an address) and a kind, so that kinds never collide. */
uint64_t limiter_key(unsigned kind, const void *data, unsigned len);
/* A key from a number (a user id) and a kind. */
uint64_t limiter_key_u64(unsigned kind, uint64_t v);

#endif
