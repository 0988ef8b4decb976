/*
 * mqtt: the few MQTT 3.1.1 packets parley-bench speaks to a broker (--mqtt),
 * so that mosquitto can be measured with the same scenarios as Parley:
 * CONNECT / CONNACK, SUBSCRIBE / SUBACK, PUBLISH at QoS 1 / PUBACK both
 * ways, PINGREQ / PINGRESP.
 *
 * Builders write one whole packet into a caller's buffer and return its
 * length (0 if it does not fit). The reader finds one whole packet at a time
 * in what was read, with the remaining length bounded: at most 4 bytes of it
 * (the standard's limit) and at most `max` bytes of body.
 */
#ifndef PARLEY_BENCH_MQTT_H
#define PARLEY_BENCH_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Packet types: the high nibble of the first byte. */
enum {
    MQTT_CONNECT = 1,
    MQTT_CONNACK = 2,
    MQTT_PUBLISH = 3,
    MQTT_PUBACK = 4,
    MQTT_SUBSCRIBE = 8,
    MQTT_SUBACK = 9,
    MQTT_PINGREQ = 12,
    MQTT_PINGRESP = 13,
    MQTT_DISCONNECT = 14,
};

/* The fixed header and remaining length of the longest packet the bench
 * builds, over its topic and payload. */
enum { MQTT_OVERHEAD = 16 };

typedef enum {
    MQTT_OK,        /* a whole packet */
    MQTT_NEED_MORE, /* not yet all of it */
    MQTT_TOO_LARGE, /* its remaining length is over max */
    MQTT_MALFORMED, /* a remaining length of more than 4 bytes */
} mqtt_status;

/* Looks for one whole packet at the start of buf[0, len). On MQTT_OK: *first
 * is its first byte (type and flags), [*body, *body + *blen) what follows the
 * remaining length, and *used the whole packet's size. */
mqtt_status mqtt_next(const uint8_t *buf, size_t len, size_t max, uint8_t *first,
                      const uint8_t **body, size_t *blen, size_t *used);

/* A PUBLISH received, pointing into the packet's body. */
typedef struct {
    int qos;
    bool dup;
    uint16_t pid; /* 0 at QoS 0 */
    const uint8_t *topic;
    size_t tlen;
    const uint8_t *payload;
    size_t plen;
} mqtt_pub;

/* Parses a PUBLISH's body (first: its first byte). 0, or -1 if malformed
 * (a topic longer than the packet, QoS 3, a packet id of 0). */
int mqtt_parse_publish(uint8_t first, const uint8_t *body, size_t blen, mqtt_pub *p);

/* CONNECT, MQTT 3.1.1, clean session, no will, no user name. */
size_t mqtt_connect(uint8_t *out, size_t cap, const char *client_id, uint16_t keepalive);
/* SUBSCRIBE to one topic filter at `qos`. */
size_t mqtt_subscribe(uint8_t *out, size_t cap, uint16_t pid, const char *topic, size_t tlen,
                      int qos);
/* PUBLISH at QoS 1. */
size_t mqtt_publish(uint8_t *out, size_t cap, const char *topic, size_t tlen, uint16_t pid,
                    const void *payload, size_t plen);
size_t mqtt_puback(uint8_t *out, size_t cap, uint16_t pid);
size_t mqtt_pingreq(uint8_t *out, size_t cap);

#endif
