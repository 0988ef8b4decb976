/* Frame decoding: whole, split at every byte, coalesced, oversized. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/frame.h"

static size_t put(uint8_t *out, const char *payload)
{
    size_t n = strlen(payload);
    frame_put_header(out, (uint32_t)n);
    memcpy(out + FRAME_HDR, payload, n);
    return FRAME_HDR + n;
}

static void test_whole_frame(void **state)
{
    uint8_t buf[64];
    size_t n = put(buf, "hello");
    const uint8_t *p;
    size_t plen, used;
    assert_int_equal(frame_next(buf, n, 1024, &p, &plen, &used), FRAME_OK);
    assert_int_equal(plen, 5);
    assert_int_equal(used, n);
    assert_memory_equal(p, "hello", 5);
}

static void test_header_is_big_endian(void **state)
{
    uint8_t h[4];
    frame_put_header(h, 0x01020304);
    assert_int_equal(h[0], 1);
    assert_int_equal(h[1], 2);
    assert_int_equal(h[2], 3);
    assert_int_equal(h[3], 4);
}

static void test_split_at_every_byte(void **state)
{
    uint8_t buf[64];
    size_t n = put(buf, "split me");
    const uint8_t *p;
    size_t plen, used;
    for (size_t cut = 0; cut < n; cut++)
        assert_int_equal(frame_next(buf, cut, 1024, &p, &plen, &used), FRAME_NEED_MORE);
    assert_int_equal(frame_next(buf, n, 1024, &p, &plen, &used), FRAME_OK);
}

static void test_coalesced_frames(void **state)
{
    uint8_t buf[256];
    const char *parts[] = {"one", "", "three", "four!"};
    size_t n = 0;
    for (int i = 0; i < 4; i++)
        n += put(buf + n, parts[i]);
    size_t off = 0;
    for (int i = 0; i < 4; i++) {
        const uint8_t *p;
        size_t plen, used;
        assert_int_equal(frame_next(buf + off, n - off, 1024, &p, &plen, &used), FRAME_OK);
        assert_int_equal(plen, strlen(parts[i]));
        assert_memory_equal(p, parts[i], plen);
        off += used;
    }
    assert_int_equal(off, n);
}

static void test_oversized_is_rejected_from_the_header(void **state)
{
    uint8_t buf[4];
    const uint8_t *p;
    size_t plen, used;
    frame_put_header(buf, 65537);
    /* Judged on the header alone: no need to wait for 64 KiB of body. */
    assert_int_equal(frame_next(buf, 4, 65536, &p, &plen, &used), FRAME_TOO_LARGE);
    frame_put_header(buf, 65536);
    assert_int_equal(frame_next(buf, 4, 65536, &p, &plen, &used), FRAME_NEED_MORE);
    frame_put_header(buf, 0xFFFFFFFFu);
    assert_int_equal(frame_next(buf, 4, 65536, &p, &plen, &used), FRAME_TOO_LARGE);
}

static void test_empty_frame(void **state)
{
    uint8_t buf[4];
    const uint8_t *p;
    size_t plen, used;
    frame_put_header(buf, 0);
    assert_int_equal(frame_next(buf, 4, 16, &p, &plen, &used), FRAME_OK);
    assert_int_equal(plen, 0);
    assert_int_equal(used, 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_frame),
        cmocka_unit_test(test_header_is_big_endian),
        cmocka_unit_test(test_split_at_every_byte),
        cmocka_unit_test(test_coalesced_frames),
        cmocka_unit_test(test_oversized_is_rejected_from_the_header),
        cmocka_unit_test(test_empty_frame),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
