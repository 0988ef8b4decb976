#include "common/pbcheck.h"

#include "common/utf8.h"

/* Nesting deeper than any of Parley's messages is refused, not followed. */
enum { PBCHECK_MAX_DEPTH = 8 };

static int pb_varint(const uint8_t *buf, size_t len, size_t *at, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && *at < len; shift += 7) {
        uint8_t b = buf[(*at)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

static int pb_walk(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len, int depth,
                   const char **field)
{
    size_t at = 0;
    if (depth > PBCHECK_MAX_DEPTH) {
        *field = "frame";
        return -1;
    }
    while (at < len) {
        uint64_t tag, n;
        if (pb_varint(buf, len, &at, &tag) < 0 || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
            goto bad;
        unsigned wt = tag & 7;
        switch (wt) {
        case 0:
            if (pb_varint(buf, len, &at, &n) < 0)
                goto bad;
            continue;
        case 1:
            if (len - at < 8)
                goto bad;
            at += 8;
            continue;
        case 5:
            if (len - at < 4)
                goto bad;
            at += 4;
            continue;
        case 2:
            break;
        default: /* groups: nothing of Parley's uses them */
            goto bad;
        }
        if (pb_varint(buf, len, &at, &n) < 0 || n > len - at)
            goto bad;
        const uint8_t *v = buf + at;
        at += n;
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3));
        if (!f)
            continue;
        if (f->type == PROTOBUF_C_TYPE_STRING) {
            if (utf8_count((const char *)v, n) < 0) {
                *field = f->name;
                return -1;
            }
        } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            if (pb_walk(f->descriptor, v, n, depth + 1, field) < 0)
                return -1;
        }
    }
    return 0;
bad:
    *field = "frame";
    return -1;
}

int pbcheck_strings(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len,
                    const char **field)
{
    return pb_walk(d, buf, len, 0, field);
}
