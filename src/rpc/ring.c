#include "rpc/ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct point {
    uint64_t hash;
    unsigned node;
};

struct ring {
    unsigned vnodes;
    char **names;
    size_t nnames, cap_names;
    struct point *points; /* sorted by hash */
    size_t npoints;
};

/* FNV-1a followed by a finaliser: cheap, and spreads "name#i" points well. */
uint64_t ring_hash(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static uint64_t ring_key_hash(uint64_t key)
{
    return ring_hash(&key, sizeof(key));
}

ring *ring_new(unsigned vnodes)
{
    ring *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->vnodes = vnodes ? vnodes : 1;
    return r;
}

void ring_free(ring *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nnames; i++)
        free(r->names[i]);
    free(r->names);
    free(r->points);
    free(r);
}

static int ring_cmp(const void *a, const void *b)
{
    const struct point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return (int)x->node - (int)y->node;
}

static long ring_find(const ring *r, const char *name)
{
    for (size_t i = 0; i < r->nnames; i++)
        if (r->names[i] && strcmp(r->names[i], name) == 0)
            return (long)i;
    return -1;
}

/* Rebuilds the sorted points from the names: changes are rare, lookups hot. */
static int ring_rebuild(ring *r)
{
    size_t live = 0;
    for (size_t i = 0; i < r->nnames; i++)
        live += r->names[i] != NULL;
    struct point *pts = live ? malloc(live * r->vnodes * sizeof(*pts)) : NULL;
    if (live && !pts)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < r->nnames; i++) {
        if (!r->names[i])
            continue;
        for (unsigned v = 0; v < r->vnodes; v++) {
            char buf[512];
            int len = snprintf(buf, sizeof(buf), "%s#%u", r->names[i], v);
            pts[n].hash = ring_hash(buf, (size_t)len);
            pts[n].node = (unsigned)i;
            n++;
        }
    }
    if (n) /* an empty ring has no array to sort (qsort's pointer must not be NULL) */
        qsort(pts, n, sizeof(*pts), ring_cmp);
    free(r->points);
    r->points = pts;
    r->npoints = n;
    return 0;
}

int ring_add(ring *r, const char *name)
{
    if (ring_find(r, name) >= 0)
        return -1;
    size_t slot = r->nnames;
    for (size_t i = 0; i < r->nnames; i++) {
        if (!r->names[i]) {
            slot = i;
            break;
        }
    }
    if (slot == r->nnames) {
        if (r->nnames == r->cap_names) {
            size_t cap = r->cap_names ? r->cap_names * 2 : 4;
            char **names = realloc(r->names, cap * sizeof(*names));
            if (!names)
                return -1;
            r->names = names;
            r->cap_names = cap;
        }
        r->nnames++;
    }
    r->names[slot] = strdup(name);
    if (!r->names[slot] || ring_rebuild(r) < 0) {
        free(r->names[slot]);
        r->names[slot] = NULL;
        return -1;
    }
    return 0;
}

int ring_del(ring *r, const char *name)
{
    long i = ring_find(r, name);
    if (i < 0)
        return -1;
    free(r->names[i]);
    r->names[i] = NULL;
    return ring_rebuild(r);
}

const char *ring_get_if(const ring *r, uint64_t key, int (*skip)(void *arg, const char *name),
                        void *arg)
{
    if (r->npoints == 0)
        return NULL;
    uint64_t h = ring_key_hash(key);
    size_t lo = 0, hi = r->npoints;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->points[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t k = 0; k < r->npoints; k++) {
        const char *name = r->names[r->points[(lo + k) % r->npoints].node];
        if (!skip || !skip(arg, name))
            return name;
    }
    return NULL;
}

const char *ring_get(const ring *r, uint64_t key)
{
    return ring_get_if(r, key, NULL, NULL);
}

size_t ring_nodes(const ring *r)
{
    size_t live = 0;
    for (size_t i = 0; i < r->nnames; i++)
        live += r->names[i] != NULL;
    return live;
}

void ring_foreach(const ring *r, void (*fn)(void *arg, uint64_t point, const char *name), void *arg)
{
    for (size_t i = 0; i < r->npoints; i++)
        fn(arg, r->points[i].hash, r->names[r->points[i].node]);
}
