/*
 * seen: a growable hash set of message ids, used to print each pushed
 * message once although the server may deliver it more than once (after a
 * resume it re-sends everything not yet acknowledged). Open addressing with
 * linear probing; 0 is the empty slot and is never a valid msgid.
 */
#ifndef PARLEY_CLIENT_SEEN_H
#define PARLEY_CLIENT_SEEN_H

#include <stddef.h>
#include <stdint.h>

typedef struct seen {
    uint64_t *slots;
    size_t cap; /* a power of two, or 0 before the first insert */
    size_t count;
} seen;

void seen_init(seen *s);
void seen_free(seen *s);
/* Records id. Returns 1 if it was new, 0 if already present, -1 when out of
 * memory (then id is treated as new but not recorded). id 0 is always new. */
int seen_add(seen *s, uint64_t id);

#endif
