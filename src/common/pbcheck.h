/*
 * pbcheck: checks the string fields of a protobuf message on the wire,
 * with their lengths. protobuf-c hands strings out NUL-terminated and keeps
 * no length, so "visible\0hidden" would look like "visible" to every later
 * check; this walk sees the bytes as they came.
 */
#ifndef PARLEY_PBCHECK_H
#define PARLEY_PBCHECK_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

/* 0 if every string field of the message of type d in buf[0..len), nested
 * messages included, is valid UTF-8 without NUL; -1 otherwise, with the
 * offending field's name in *field (or "frame" if the bytes do not parse).
 * Unknown fields are skipped, as protobuf-c skips them. */
int pbcheck_strings(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len,
                    const char **field);

#endif
