/*
 * hist: a log-bucketed histogram of 64-bit values (nanoseconds here).
 *
 * Values below 32 have a bucket each; above, every power of two is split into
 * 32 buckets, so a bucket is at most 1/32 (3%) wide relative to its values and
 * a reported quantile (the bucket's middle) is within 1.6% of the truth.
 * 1,920 buckets cover the whole uint64_t range.
 *
 * A `hist` has one writer (the thread that records) and any number of readers
 * (the progress display, another process through shared memory): counters are
 * atomics that the writer updates with plain loads and stores, so recording
 * costs no locked instruction. `hist_snap` is a plain copy to compute on.
 */
#ifndef PARLEY_BENCH_HIST_H
#define PARLEY_BENCH_HIST_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

enum {
    HIST_SUB_BITS = 5,
    HIST_SUB = 1 << HIST_SUB_BITS,
    HIST_N = (64 - HIST_SUB_BITS + 1) * HIST_SUB
};

typedef struct {
    _Atomic uint64_t n[HIST_N];
    _Atomic uint64_t count, sum, max;
} hist;

typedef struct {
    uint64_t n[HIST_N];
    uint64_t count, sum, max;
} hist_snap;

/* Records v. Only one thread may record into a given hist. */
void hist_record(hist *h, uint64_t v);

/* Bucket arithmetic: the bucket of v, and the range [lo, hi] of a bucket. */
int hist_index(uint64_t v);
uint64_t hist_lo(int i);
uint64_t hist_hi(int i);

/* Adds h's current contents to s (s starts zeroed). */
void hist_add(hist_snap *s, const hist *h);
/* Adds another snapshot. */
void hist_merge(hist_snap *s, const hist_snap *o);

/* The value below which a fraction q (0..1) of the recorded values lie, as
 * the middle of its bucket, never above the largest value; 0 when empty. */
uint64_t hist_quantile(const hist_snap *s, double q);
double hist_mean(const hist_snap *s);

/* Writes the non-empty buckets as a JSON array of [lo, count] pairs. */
void hist_write_json(FILE *f, const hist_snap *s);

#endif
