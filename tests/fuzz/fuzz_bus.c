/*
 * fuzz_bus: the Redis bus's decoder of a message received on a gateway's
 * channel (bus/redis_decode.h), which anyone able to reach Redis can
 * publish. The input is the message. What reaches the handler must be
 * exactly what the message says: every push with users and a frame, all
 * inside the message, in order; else the target aborts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/redis_decode.h"
#include "common/log.h"

typedef struct {
    const uint8_t *msg;
    size_t len;
    int calls;
} fz_seen;

static void fz_fail(const char *what)
{
    fprintf(stderr, "fuzz_bus: %s\n", what);
    abort();
}

static uint64_t fz_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Walks the message again beside what the decoder handed over. */
static void fz_deliver(void *arg, const bus_push *pushes, size_t n)
{
    fz_seen *s = arg;
    size_t off = 0;
    s->calls++;
    if (n == 0)
        fz_fail("a delivery of no pushes");
    for (size_t k = 0; k < n; k++) {
        const bus_push *p = &pushes[k];
        if (s->len - off < 16)
            fz_fail("more pushes than the message holds");
        uint64_t users = fz_le(s->msg + off, 4), flen = fz_le(s->msg + off + 4, 4);
        if (p->n != users || !p->frame || p->frame->len != flen || !p->n || !flen)
            fz_fail("a push's sizes differ from its header");
        if (p->msgid != fz_le(s->msg + off + 8, 8))
            fz_fail("a push's msgid differs from its header");
        off += 16;
        if ((s->len - off) / 8 < users || s->len - off - users * 8 < flen)
            fz_fail("a push reaches past the end of the message");
        for (size_t i = 0; i < p->n; i++)
            if (p->users[i] != fz_le(s->msg + off + i * 8, 8))
                fz_fail("a user differs from the message");
        off += users * 8;
        if (memcmp(p->frame->data, s->msg + off, flen) != 0)
            fz_fail("a frame differs from the message");
        off += flen;
    }
    if (off != s->len)
        fz_fail("bytes of the message were not delivered");
}

/* Whether the message is well formed: one or more whole pushes, each with
 * at least one user and a frame of at least one byte, and nothing after. */
static int fz_valid(const uint8_t *p, size_t len)
{
    size_t off = 0;
    if (len == 0)
        return 0;
    while (off < len) {
        if (len - off < 16)
            return 0;
        uint64_t users = fz_le(p + off, 4), flen = fz_le(p + off + 4, 4);
        off += 16;
        if (!users || !flen || users > (len - off) / 8 || flen > len - off - users * 8)
            return 0;
        off += users * 8 + flen;
    }
    return 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_ERROR); /* "ignored a malformed push" for most inputs */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_seen s = {.msg = data, .len = size};
    bus_handler h = {.deliver = fz_deliver, .arg = &s};
    bus_redis_decode(data, size, &h);
    if (s.calls != fz_valid(data, size))
        fz_fail(s.calls ? "a malformed message was delivered" : "a good message was dropped");
    return 0;
}
