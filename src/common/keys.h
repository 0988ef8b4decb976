/*
 * keys: routing keys. Requests with the same key are served in order by one
 * worker (in-process) or one node (the message service's ring): the key of a
 * direct conversation is its user pair, of a group conversation the group.
 * Shared by the gateway and parleyctl, which shows where a key goes.
 */
#ifndef PARLEY_KEYS_H
#define PARLEY_KEYS_H

#include <stdint.h>

static inline uint64_t key_direct(uint64_t a, uint64_t b)
{
    uint64_t lo = a < b ? a : b, hi = a < b ? b : a;
    return (lo * 0x9E3779B97F4A7C15ULL ^ hi) | 1;
}

static inline uint64_t key_group(uint64_t g)
{
    return (g * 0xC2B2AE3D27D4EB4FULL) | 1;
}

#endif
