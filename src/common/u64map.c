#include "common/u64map.h"

#include <stdlib.h>
#include <string.h>

/* Linear probing with backward-shift deletion: no tombstones, so lookups
 * stay short after many logins and logouts. */
struct slot {
    uint64_t key; /* 0 = empty */
    void *val;
};

struct u64map {
    struct slot *slots;
    size_t cap; /* power of two */
    size_t size;
};

static size_t u64map_hash(uint64_t k, size_t cap)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (size_t)k & (cap - 1);
}

u64map *u64map_new(void)
{
    u64map *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->cap = 16;
    m->slots = calloc(m->cap, sizeof(*m->slots));
    if (!m->slots) {
        free(m);
        return NULL;
    }
    return m;
}

void u64map_free(u64map *m)
{
    if (!m)
        return;
    free(m->slots);
    free(m);
}

void *u64map_get(const u64map *m, uint64_t key)
{
    for (size_t i = u64map_hash(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (m->slots[i].key == key)
            return m->slots[i].val;
        if (m->slots[i].key == 0)
            return NULL;
    }
}

static int u64map_grow(u64map *m)
{
    size_t ncap = m->cap * 2;
    struct slot *ns = calloc(ncap, sizeof(*ns));
    if (!ns)
        return -1;
    for (size_t j = 0; j < m->cap; j++) {
        if (m->slots[j].key == 0)
            continue;
        size_t i = u64map_hash(m->slots[j].key, ncap);
        while (ns[i].key != 0)
            i = (i + 1) & (ncap - 1);
        ns[i] = m->slots[j];
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return 0;
}

int u64map_put(u64map *m, uint64_t key, void *val)
{
    if ((m->size + 1) * 4 > m->cap * 3 && u64map_grow(m) < 0)
        return -1;
    size_t i = u64map_hash(key, m->cap);
    while (m->slots[i].key != 0 && m->slots[i].key != key)
        i = (i + 1) & (m->cap - 1);
    if (m->slots[i].key == 0)
        m->size++;
    m->slots[i].key = key;
    m->slots[i].val = val;
    return 0;
}

void *u64map_del(u64map *m, uint64_t key)
{
    size_t mask = m->cap - 1;
    size_t i = u64map_hash(key, m->cap);
    while (m->slots[i].key != key) {
        if (m->slots[i].key == 0)
            return NULL;
        i = (i + 1) & mask;
    }
    void *old = m->slots[i].val;
    m->size--;
    /* Shift later members of the probe run back into the hole. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->slots[j].key != 0; j = (j + 1) & mask) {
        size_t home = u64map_hash(m->slots[j].key, m->cap);
        /* j may move to hole if home is not cyclically in (hole, j]. */
        int in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!in_range) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole].key = 0;
    m->slots[hole].val = NULL;
    return old;
}

size_t u64map_size(const u64map *m)
{
    return m->size;
}

void u64map_clear(u64map *m)
{
    memset(m->slots, 0, m->cap * sizeof(*m->slots));
    m->size = 0;
}
