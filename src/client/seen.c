/*
 * seen: see seen.h.
 */
#include "client/seen.h"

#include <stdlib.h>
#include <string.h>

enum { SEEN_MIN_CAP = 64 };

void seen_init(seen *s)
{
    memset(s, 0, sizeof(*s));
}

void seen_free(seen *s)
{
    free(s->slots);
    seen_init(s);
}

/* A 64-bit mixer (the finaliser of splitmix64) so sequential ids spread. */
static size_t seen_hash(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return (size_t)x;
}

/* Puts id into slots without checking the load; id must not be present. */
static void seen_place(uint64_t *slots, size_t cap, uint64_t id)
{
    size_t i = seen_hash(id) & (cap - 1);
    while (slots[i] != 0)
        i = (i + 1) & (cap - 1);
    slots[i] = id;
}

static int seen_grow(seen *s)
{
    size_t cap = s->cap ? s->cap * 2 : SEEN_MIN_CAP;
    if (cap < s->cap)
        return -1;
    uint64_t *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -1;
    for (size_t i = 0; i < s->cap; i++)
        if (s->slots[i] != 0)
            seen_place(slots, cap, s->slots[i]);
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    return 0;
}

int seen_add(seen *s, uint64_t id)
{
    if (id == 0)
        return 1;
    if (s->cap) {
        size_t i = seen_hash(id) & (s->cap - 1);
        while (s->slots[i] != 0) {
            if (s->slots[i] == id)
                return 0;
            i = (i + 1) & (s->cap - 1);
        }
    }
    /* Keep the load under 3/4 so probes stay short. */
    if ((s->count + 1) * 4 > s->cap * 3 && seen_grow(s) < 0)
        return -1;
    seen_place(s->slots, s->cap, id);
    s->count++;
    return 1;
}
