/*
 * arena: a bump allocator for everything that lives as long as one request
 * (unpacked protobuf messages, reply messages being built). One free at the
 * end instead of walking nested protobuf structures.
 */
#ifndef PARLEY_ARENA_H
#define PARLEY_ARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

typedef struct arena arena;

/* A new arena; the caller owns it and frees it with arena_free(). NULL on OOM. */
arena *arena_new(void);
void arena_free(arena *a);
/* Forgets every allocation but keeps the first block for reuse. */
void arena_reset(arena *a);
/* Memory valid until arena_reset/arena_free; aligned for any type; aborts on OOM. */
void *arena_alloc(arena *a, size_t n);
void *arena_zalloc(arena *a, size_t n);
char *arena_strdup(arena *a, const char *s);
char *arena_strndup(arena *a, const char *s, size_t n);
char *arena_printf(arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A protobuf-c allocator drawing from the arena (its free is a no-op). */
ProtobufCAllocator *arena_pb(arena *a);

/* Helpers for building protobuf messages in an arena. */
#define ARENA_NEW(a, type, init)                                                                   \
    ({                                                                                             \
        type *p_ = arena_alloc((a), sizeof(type));                                                 \
        init(p_);                                                                                  \
        p_;                                                                                        \
    })

#endif
