#include "mqtt.h"

#include <string.h>

/* The largest remaining length 4 bytes can say (268,435,455). */
#define MQTT_MAX_REMAINING 268435455u

mqtt_status mqtt_next(const uint8_t *buf, size_t len, size_t max, uint8_t *first,
                      const uint8_t **body, size_t *blen, size_t *used)
{
    if (len < 2)
        return MQTT_NEED_MORE;
    size_t rem = 0;
    size_t i = 1;
    for (int shift = 0;; shift += 7) {
        if (i == 5)
            return MQTT_MALFORMED; /* a fifth length byte */
        if (i >= len)
            return MQTT_NEED_MORE;
        uint8_t b = buf[i++];
        rem |= (size_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            break;
    }
    if (rem > max)
        return MQTT_TOO_LARGE;
    if (len - i < rem)
        return MQTT_NEED_MORE;
    *first = buf[0];
    *body = buf + i;
    *blen = rem;
    *used = i + rem;
    return MQTT_OK;
}

int mqtt_parse_publish(uint8_t first, const uint8_t *body, size_t blen, mqtt_pub *p)
{
    memset(p, 0, sizeof *p);
    p->qos = (first >> 1) & 3;
    p->dup = (first & 0x08) != 0;
    if (p->qos == 3 || blen < 2)
        return -1;
    size_t tlen = (size_t)body[0] << 8 | body[1];
    size_t off = 2;
    if (tlen > blen - off)
        return -1;
    p->topic = body + off;
    p->tlen = tlen;
    off += tlen;
    if (p->qos > 0) {
        if (blen - off < 2)
            return -1;
        p->pid = (uint16_t)(body[off] << 8 | body[off + 1]);
        off += 2;
        if (p->pid == 0)
            return -1;
    }
    p->payload = body + off;
    p->plen = blen - off;
    return 0;
}

/* Writes the fixed header of a packet with `rem` bytes after it; returns its
 * size, 0 if rem is over the limit or the header does not fit. */
static size_t put_header(uint8_t *out, size_t cap, uint8_t first, size_t rem)
{
    if (rem > MQTT_MAX_REMAINING || cap < 1)
        return 0;
    size_t n = 0;
    out[n++] = first;
    do {
        if (n >= cap)
            return 0;
        uint8_t b = rem & 0x7f;
        rem >>= 7;
        out[n++] = rem ? (uint8_t)(b | 0x80) : b;
    } while (rem);
    return n;
}

static uint8_t *put_u16(uint8_t *p, size_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

static uint8_t *put_str(uint8_t *p, const void *s, size_t len)
{
    p = put_u16(p, len);
    memcpy(p, s, len);
    return p + len;
}

size_t mqtt_connect(uint8_t *out, size_t cap, const char *client_id, uint16_t keepalive)
{
    size_t idlen = strlen(client_id);
    if (idlen > 65535)
        return 0;
    size_t rem = 10 + 2 + idlen;
    size_t h = put_header(out, cap, MQTT_CONNECT << 4, rem);
    if (!h || cap - h < rem)
        return 0;
    uint8_t *p = put_str(out + h, "MQTT", 4);
    *p++ = 4;    /* protocol level: 3.1.1 */
    *p++ = 0x02; /* clean session */
    p = put_u16(p, keepalive);
    put_str(p, client_id, idlen);
    return h + rem;
}

size_t mqtt_subscribe(uint8_t *out, size_t cap, uint16_t pid, const char *topic, size_t tlen,
                      int qos)
{
    if (tlen > 65535 || qos < 0 || qos > 2)
        return 0;
    size_t rem = 2 + 2 + tlen + 1;
    size_t h = put_header(out, cap, MQTT_SUBSCRIBE << 4 | 0x02, rem); /* flags 0010 */
    if (!h || cap - h < rem)
        return 0;
    uint8_t *p = put_u16(out + h, pid);
    p = put_str(p, topic, tlen);
    *p = (uint8_t)qos;
    return h + rem;
}

size_t mqtt_publish(uint8_t *out, size_t cap, const char *topic, size_t tlen, uint16_t pid,
                    const void *payload, size_t plen)
{
    if (tlen > 65535 || pid == 0 || plen > MQTT_MAX_REMAINING)
        return 0;
    size_t rem = 2 + tlen + 2 + plen;
    size_t h = put_header(out, cap, MQTT_PUBLISH << 4 | 1 << 1, rem); /* QoS 1 */
    if (!h || cap - h < rem)
        return 0;
    uint8_t *p = put_str(out + h, topic, tlen);
    p = put_u16(p, pid);
    memcpy(p, payload, plen);
    return h + rem;
}

size_t mqtt_puback(uint8_t *out, size_t cap, uint16_t pid)
{
    if (cap < 4)
        return 0;
    out[0] = MQTT_PUBACK << 4;
    out[1] = 2;
    put_u16(out + 2, pid);
    return 4;
}

size_t mqtt_pingreq(uint8_t *out, size_t cap)
{
    if (cap < 2)
        return 0;
    out[0] = MQTT_PINGREQ << 4;
    out[1] = 0;
    return 2;
}
