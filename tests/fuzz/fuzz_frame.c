/*
 * fuzz_frame: the wire framing (common/frame) as a connection reads it, and
 * the string check (common/pbcheck) every client frame passes before the
 * gateway looks at it.
 *
 * Input: one byte choosing the size limit, then a byte stream cut into
 * frames the way net/conn does. Each whole payload is also unpacked as a
 * ClientFrame: when pbcheck accepts it and protobuf-c parses it, every
 * string protobuf-c hands out must be valid UTF-8 (what the gateway counts
 * on) and the frame must pack and unpack again, else the target aborts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/frame.h"
#include "common/pbcheck.h"
#include "common/utf8.h"
#include "parley.pb-c.h"

static const size_t fz_limits[] = {0, 1, 16, 256, 1024, FRAME_MAX_DEFAULT, 4u << 20, SIZE_MAX};

static void fz_fail(const char *what)
{
    fprintf(stderr, "fuzz_frame: %s\n", what);
    abort();
}

/* Whether every string of m (nested messages included) is valid UTF-8 as
 * far as its C string goes. */
static int fz_strings_ok(const ProtobufCMessage *m, int depth)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (depth > 16)
        fz_fail("messages nested deeper than the schema allows");
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)m;
        if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        /* A member of a oneof is there only when its case says so. */
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue;
        size_t n = 1;
        const void *const *vals = (const void *const *)(base + f->offset);
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)(base + f->quantifier_offset);
            vals = *(const void *const *const *)(base + f->offset);
        }
        for (size_t k = 0; k < n; k++) {
            const void *v = vals[k];
            if (!v)
                continue;
            if (f->type == PROTOBUF_C_TYPE_STRING) {
                const char *s = v;
                if (utf8_count(s, strlen(s)) < 0)
                    return 0;
            } else if (!fz_strings_ok(v, depth + 1)) {
                return 0;
            }
        }
    }
    return 1;
}

static void fz_payload(const uint8_t *p, size_t len)
{
    const char *bad = NULL;
    int checked = pbcheck_strings(&parley__client_frame__descriptor, p, len, &bad);
    if (checked < 0 && !bad)
        fz_fail("pbcheck refused without naming a field");
    Parley__ClientFrame *f = parley__client_frame__unpack(NULL, len, p);
    if (!f)
        return;
    if (checked < 0)
        goto out;
    if (!fz_strings_ok(&f->base, 0))
        fz_fail("pbcheck passed a frame whose strings are not valid UTF-8");
    /* A frame the gateway lets through is packed into a Call and unpacked
     * again by the service (rpc/local copies it that way): it must survive.
     * protobuf-c itself does not promise that for every frame it accepts
     * (an overlong tag of field 0 unpacks, and packs to one that does not),
     * which is one more reason pbcheck stands in front. */
    size_t n = parley__client_frame__get_packed_size(f);
    uint8_t *out = malloc(n ? n : 1);
    if (!out)
        abort();
    if (parley__client_frame__pack(f, out) != n)
        fz_fail("packed size disagrees with pack");
    Parley__ClientFrame *again = parley__client_frame__unpack(NULL, n, out);
    if (!again)
        fz_fail("a packed frame does not unpack");
    if (again->body_case != f->body_case || again->id != f->id)
        fz_fail("a frame changed in a pack/unpack round trip");
    parley__client_frame__free_unpacked(again, NULL);
    free(out);
out:
    parley__client_frame__free_unpacked(f, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t max = fz_limits[data[0] % (sizeof(fz_limits) / sizeof(fz_limits[0]))];
    const uint8_t *buf = data + 1;
    size_t len = size - 1, off = 0;
    for (;;) {
        const uint8_t *payload = NULL;
        size_t plen = 0, used = 0;
        frame_status st = frame_next(buf + off, len - off, max, &payload, &plen, &used);
        if (st == FRAME_NEED_MORE) {
            if (len - off >= FRAME_HDR) {
                const uint8_t *h = buf + off;
                size_t n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
                if (n > max || len - off - FRAME_HDR >= n)
                    fz_fail("NEED_MORE for a header and body that are all there");
            }
            break;
        }
        if (st == FRAME_TOO_LARGE) {
            if (len - off < FRAME_HDR)
                fz_fail("TOO_LARGE without a whole header");
            break;
        }
        if (st != FRAME_OK)
            fz_fail("unknown frame status");
        if (plen > max || used != FRAME_HDR + plen || used > len - off ||
            payload != buf + off + FRAME_HDR)
            fz_fail("FRAME_OK out of bounds");
        uint8_t hdr[FRAME_HDR];
        frame_put_header(hdr, (uint32_t)plen);
        if (memcmp(hdr, buf + off, FRAME_HDR) != 0)
            fz_fail("frame_put_header disagrees with frame_next");
        fz_payload(payload, plen);
        off += used;
    }
    return 0;
}
