#include "common/blob.h"

#include <stdlib.h>

blob *blob_new(size_t len)
{
    blob *b = malloc(sizeof(*b) + len);
    if (!b)
        abort();
    b->refs = 1;
    b->len = len;
    return b;
}

blob *blob_ref(blob *b)
{
    __atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
    return b;
}

void blob_unref(blob *b)
{
    if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(b);
}
