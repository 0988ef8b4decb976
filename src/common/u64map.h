/*
 * u64map: an open-addressing hash map from non-zero uint64 keys to pointers.
 * Not thread-safe: each map has one owning thread.
 */
#ifndef PARLEY_U64MAP_H
#define PARLEY_U64MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct u64map u64map;

/* A new empty map, owned by the caller (u64map_free). NULL on OOM. */
u64map *u64map_new(void);
void u64map_free(u64map *m);
/* The value for key, or NULL. */
void *u64map_get(const u64map *m, uint64_t key);
/* Sets key to val (val non-NULL). 0, or -1 on OOM. */
int u64map_put(u64map *m, uint64_t key, void *val);
/* Removes key; returns the old value or NULL. */
void *u64map_del(u64map *m, uint64_t key);
size_t u64map_size(const u64map *m);
/* Removes every key, keeping the table's size for reuse. */
void u64map_clear(u64map *m);

#endif
