/*
 * blob: an immutable, reference-counted byte string that several threads may
 * hold at once (a packed push frame on its way to many connections).
 */
#ifndef PARLEY_BLOB_H
#define PARLEY_BLOB_H

#include <stddef.h>
#include <stdint.h>

typedef struct blob {
    int refs; /* atomic */
    size_t len;
    uint8_t data[];
} blob;

/* A blob of len bytes (contents to be filled by the creator before sharing),
 * with one reference owned by the caller. Aborts on OOM. */
blob *blob_new(size_t len);
blob *blob_ref(blob *b);
void blob_unref(blob *b);

#endif
