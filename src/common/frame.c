#include "common/frame.h"

frame_status frame_next(const uint8_t *buf, size_t len, size_t max, const uint8_t **payload,
                        size_t *plen, size_t *consumed)
{
    if (len < FRAME_HDR)
        return FRAME_NEED_MORE;
    uint32_t n =
        (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | (uint32_t)buf[3];
    /* Judge the size before waiting for the body: a hostile header must not
     * make us buffer gigabytes. */
    if (n > max)
        return FRAME_TOO_LARGE;
    if (len - FRAME_HDR < n)
        return FRAME_NEED_MORE;
    *payload = buf + FRAME_HDR;
    *plen = n;
    *consumed = FRAME_HDR + (size_t)n;
    return FRAME_OK;
}

void frame_put_header(uint8_t hdr[FRAME_HDR], uint32_t len)
{
    hdr[0] = (uint8_t)(len >> 24);
    hdr[1] = (uint8_t)(len >> 16);
    hdr[2] = (uint8_t)(len >> 8);
    hdr[3] = (uint8_t)len;
}
