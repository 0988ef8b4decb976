/*
 * bus/redis_decode: how the Redis bus reads a message from its gateway's
 * channel (the layout is described at the top of redis.c). Anyone who can
 * reach Redis may publish there, so every size in it is checked. With a
 * cluster key redis.c checks the message's MAC first and hands over only
 * the body; the sizes are checked all the same. Exposed for tests/fuzz.
 */
#ifndef PARLEY_BUS_REDIS_DECODE_H
#define PARLEY_BUS_REDIS_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "bus/bus.h"

/* Splits p[0..len) into its pushes and hands them all to h->deliver (if
 * set) in one call; a malformed message is logged and dropped whole. */
void bus_redis_decode(const uint8_t *p, size_t len, const bus_handler *h);

#endif
