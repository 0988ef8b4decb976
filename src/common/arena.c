#include "common/arena.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct block {
    struct block *next;
    size_t size, used;
    max_align_t data[];
};

struct arena {
    struct block *head;
    struct block *first; /* kept across resets */
    ProtobufCAllocator pb;
};

enum { ARENA_BLOCK = 4096 - sizeof(struct block) };

static void *arena_pb_alloc(void *data, size_t n)
{
    return arena_alloc(data, n);
}

static void arena_pb_free(void *data, void *p)
{
    (void)data;
    (void)p;
}

static struct block *block_new(size_t size)
{
    struct block *b = malloc(sizeof(*b) + size);
    if (!b)
        abort();
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

/* Each thread keeps a few reset arenas for reuse: a request's arena is made
 * and freed once per call, on the hot path. */
enum { ARENA_CACHE = 16 };

typedef struct {
    arena *free[ARENA_CACHE];
    unsigned n;
} arena_cache;

static pthread_key_t arena_key;
static pthread_once_t arena_once = PTHREAD_ONCE_INIT;

static void arena_destroy(arena *a);

static void arena_cache_free(void *p)
{
    arena_cache *c = p;
    for (unsigned i = 0; i < c->n; i++)
        arena_destroy(c->free[i]);
    free(c);
}

static void arena_key_init(void)
{
    pthread_key_create(&arena_key, arena_cache_free);
}

static arena_cache *arena_cache_get(void)
{
    pthread_once(&arena_once, arena_key_init);
    arena_cache *c = pthread_getspecific(arena_key);
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (c && pthread_setspecific(arena_key, c) != 0) {
            free(c);
            c = NULL;
        }
    }
    return c;
}

arena *arena_new(void)
{
    arena_cache *c = arena_cache_get();
    if (c && c->n)
        return c->free[--c->n];
    arena *a = malloc(sizeof(*a));
    if (!a)
        return NULL;
    a->head = a->first = block_new(ARENA_BLOCK);
    a->pb.alloc = arena_pb_alloc;
    a->pb.free = arena_pb_free;
    a->pb.allocator_data = a;
    return a;
}

void arena_reset(arena *a)
{
    struct block *b = a->head;
    while (b) {
        struct block *next = b->next;
        if (b != a->first)
            free(b);
        b = next;
    }
    a->first->used = 0;
    a->first->next = NULL;
    a->head = a->first;
}

void arena_free(arena *a)
{
    if (!a)
        return;
    arena_cache *c = arena_cache_get();
    if (c && c->n < ARENA_CACHE) {
        arena_reset(a);
        c->free[c->n++] = a;
        return;
    }
    arena_destroy(a);
}

static void arena_destroy(arena *a)
{
    struct block *b = a->head;
    while (b) {
        struct block *next = b->next;
        free(b);
        b = next;
    }
    free(a);
}

void *arena_alloc(arena *a, size_t n)
{
    const size_t align = _Alignof(max_align_t);
    n = (n + align - 1) & ~(align - 1);
    if (n == 0)
        n = align;
    struct block *b = a->head;
    if (b->size - b->used < n) {
        /* Big requests get a block of their own behind the head, so the
         * head's free space stays usable. */
        if (n > ARENA_BLOCK / 4) {
            struct block *big = block_new(n);
            big->used = n;
            big->next = b->next;
            b->next = big;
            return big->data;
        }
        b = block_new(ARENA_BLOCK);
        b->next = a->head;
        a->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

void *arena_zalloc(arena *a, size_t n)
{
    void *p = arena_alloc(a, n);
    memset(p, 0, n);
    return p;
}

char *arena_strndup(arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *arena_strdup(arena *a, const char *s)
{
    return arena_strndup(a, s, strlen(s));
}

char *arena_printf(arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    char *p = arena_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

ProtobufCAllocator *arena_pb(arena *a)
{
    return &a->pb;
}
