#include "hist.h"

static inline void bump(_Atomic uint64_t *a, uint64_t by)
{
    atomic_store_explicit(a, atomic_load_explicit(a, memory_order_relaxed) + by,
                          memory_order_relaxed);
}

int hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (int)v;
    int e = 63 - __builtin_clzll(v); /* the top bit, >= HIST_SUB_BITS */
    int sub = (int)((v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1));
    return (e - HIST_SUB_BITS + 1) * HIST_SUB + sub;
}

uint64_t hist_lo(int i)
{
    if (i < HIST_SUB)
        return (uint64_t)i;
    int e = i / HIST_SUB + HIST_SUB_BITS - 1;
    uint64_t sub = (uint64_t)(i % HIST_SUB);
    return (HIST_SUB + sub) << (e - HIST_SUB_BITS);
}

uint64_t hist_hi(int i)
{
    if (i < HIST_SUB)
        return (uint64_t)i;
    int e = i / HIST_SUB + HIST_SUB_BITS - 1;
    return hist_lo(i) + ((uint64_t)1 << (e - HIST_SUB_BITS)) - 1;
}

void hist_record(hist *h, uint64_t v)
{
    bump(&h->n[hist_index(v)], 1);
    bump(&h->count, 1);
    bump(&h->sum, v);
    if (v > atomic_load_explicit(&h->max, memory_order_relaxed))
        atomic_store_explicit(&h->max, v, memory_order_relaxed);
}

void hist_add(hist_snap *s, const hist *h)
{
    uint64_t count = 0;
    for (int i = 0; i < HIST_N; i++) {
        uint64_t n = atomic_load_explicit(&h->n[i], memory_order_relaxed);
        s->n[i] += n;
        count += n;
    }
    /* Summing the buckets (rather than reading h->count) keeps count and
     * buckets consistent while the writer goes on. */
    s->count += count;
    s->sum += atomic_load_explicit(&h->sum, memory_order_relaxed);
    uint64_t mx = atomic_load_explicit(&h->max, memory_order_relaxed);
    if (mx > s->max)
        s->max = mx;
}

void hist_merge(hist_snap *s, const hist_snap *o)
{
    for (int i = 0; i < HIST_N; i++)
        s->n[i] += o->n[i];
    s->count += o->count;
    s->sum += o->sum;
    if (o->max > s->max)
        s->max = o->max;
}

uint64_t hist_quantile(const hist_snap *s, double q)
{
    if (s->count == 0)
        return 0;
    if (q <= 0)
        q = 0;
    /* The rank of the value sought, 1-based: the smallest value with at
     * least q * count values at or below it. */
    double want = q * (double)s->count;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want || rank == 0)
        rank++;
    if (rank > s->count)
        rank = s->count;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_N; i++) {
        seen += s->n[i];
        if (seen >= rank) {
            uint64_t lo = hist_lo(i), hi = hist_hi(i);
            uint64_t mid = lo + (hi - lo) / 2;
            return mid > s->max ? s->max : mid;
        }
    }
    return s->max;
}

double hist_mean(const hist_snap *s)
{
    return s->count ? (double)s->sum / (double)s->count : 0.0;
}

void hist_write_json(FILE *f, const hist_snap *s)
{
    fputc('[', f);
    int first = 1;
    for (int i = 0; i < HIST_N; i++) {
        if (!s->n[i])
            continue;
        fprintf(f, "%s[%llu,%llu]", first ? "" : ",", (unsigned long long)hist_lo(i),
                (unsigned long long)s->n[i]);
        first = 0;
    }
    fputc(']', f);
}
