/* The abuse limits' building blocks: token buckets, counters with a
 * ceiling, growing delays after failures (common/limiter), the check of
 * strings on the wire (common/pbcheck) and of names (utf8_name_safe). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/limiter.h"
#include "common/pbcheck.h"
#include "common/utf8.h"
#include "parley.pb-c.h"

static void test_bucket_allows_burst_then_refills(void **state)
{
    limiter *l = limiter_new(1000);
    uint64_t k = limiter_key_u64(1, 42);
    uint32_t retry = 0;
    int64_t t = 1000000;
    /* 2 per second, bursts of 4: four at once, the fifth waits ~500 ms. */
    for (int i = 0; i < 4; i++)
        assert_int_equal(limiter_take(l, k, 2, 4, t, &retry), 0);
    assert_int_equal(limiter_take(l, k, 2, 4, t, &retry), -1);
    assert_in_range(retry, 400, 501);
    /* Another key is not touched. */
    assert_int_equal(limiter_take(l, limiter_key_u64(1, 43), 2, 4, t, &retry), 0);
    assert_int_equal(limiter_take(l, limiter_key_u64(2, 42), 2, 4, t, &retry), 0);
    /* Half a second later one token is back, and only one. */
    assert_int_equal(limiter_peek(l, k, 2, 4, t + 500, &retry), 0);
    assert_int_equal(limiter_take(l, k, 2, 4, t + 500, &retry), 0);
    assert_int_equal(limiter_take(l, k, 2, 4, t + 500, &retry), -1);
    /* Rate 0: no limit. */
    for (int i = 0; i < 100; i++)
        assert_int_equal(limiter_take(l, k, 0, 0, t, &retry), 0);
    limiter_free(l);
}

static void test_counter_has_a_ceiling(void **state)
{
    limiter *l = limiter_new(100);
    uint64_t k = limiter_key(1, "127.0.0.2", 9);
    for (int i = 0; i < 3; i++)
        assert_int_equal(limiter_count(l, k, +1, 3), 0);
    assert_int_equal(limiter_count(l, k, +1, 3), -1);
    assert_int_equal(limiter_count(l, k, -1, 3), 0);
    assert_int_equal(limiter_count(l, k, +1, 3), 0);
    assert_int_equal(limiter_count(l, k, +1, 3), -1);
    /* Never below zero: a stray decrement does not buy a slot. */
    for (int i = 0; i < 10; i++)
        limiter_count(l, k, -1, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(limiter_count(l, k, +1, 3), 0);
    assert_int_equal(limiter_count(l, k, +1, 3), -1);
    limiter_free(l);
}

static void test_failures_grow_the_delay_per_pair(void **state)
{
    limiter *l = limiter_new(100);
    uint64_t pair = limiter_key_u64(4, 7), other = limiter_key_u64(4, 8);
    uint32_t retry = 0;
    int64_t t = 5000000;
    /* Three free tries, then 1 s, 2 s, 4 s, capped at 3 s. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(limiter_fail_note(l, pair, 3, 3000, t), 0);
    assert_int_equal(limiter_fail_check(l, pair, t, &retry), 0);
    assert_int_equal(limiter_fail_note(l, pair, 3, 3000, t), 1000);
    assert_int_equal(limiter_fail_check(l, pair, t + 10, &retry), -1);
    assert_int_equal(retry, 990);
    assert_int_equal(limiter_fail_note(l, pair, 3, 3000, t), 2000);
    assert_int_equal(limiter_fail_note(l, pair, 3, 3000, t), 3000);
    assert_int_equal(limiter_fail_note(l, pair, 3, 3000, t), 3000);
    /* Another pair (the owner elsewhere) is free. */
    assert_int_equal(limiter_fail_check(l, other, t, &retry), 0);
    /* A success forgets. */
    limiter_fail_clear(l, pair);
    assert_int_equal(limiter_fail_check(l, pair, t, &retry), 0);
    limiter_free(l);
}

static void test_table_stays_bounded(void **state)
{
    limiter *l = limiter_new(64);
    uint32_t retry;
    /* Far more keys than room: buckets that hold nothing are forgotten, so
     * new keys keep getting their burst, and nothing fails. */
    for (uint64_t i = 1; i <= 100000; i++)
        assert_int_equal(limiter_take(l, limiter_key_u64(1, i), 1000, 1, (int64_t)i * 10, &retry),
                         0);
    /* Counters above zero are never forgotten. */
    uint64_t k = limiter_key_u64(9, 1);
    assert_int_equal(limiter_count(l, k, +1, 1), 0);
    for (uint64_t i = 1; i <= 10000; i++)
        limiter_take(l, limiter_key_u64(2, i), 1, 1, 0, &retry);
    assert_int_equal(limiter_count(l, k, +1, 1), -1);
    limiter_free(l);
}

static void test_name_safety(void **state)
{
    assert_int_equal(utf8_name_safe("alice", 5), 0);
    assert_int_equal(utf8_name_safe("h\xc3\xa9llo \xe4\xbd\xa0", 10), 0);
    assert_int_equal(utf8_name_safe("a\tb", 3), -1);
    assert_int_equal(utf8_name_safe("a\x7f", 2), -1);
    assert_int_equal(utf8_name_safe("a\xc2\x85", 3), -1);     /* U+0085 NEL */
    assert_int_equal(utf8_name_safe("a\xc2\x9b", 3), -1);     /* U+009B CSI */
    assert_int_equal(utf8_name_safe("a\xe2\x80\xae", 4), -1); /* U+202E RLO */
    assert_int_equal(utf8_name_safe("a\xe2\x81\xa6", 4), -1); /* U+2066 LRI */
    assert_int_equal(utf8_name_safe("a\xe2\x80\x8f", 4), -1); /* U+200F RLM */
    assert_int_equal(utf8_name_safe("\xc2\xa0", 2), 0);       /* U+00A0 is text */
}

/* Packs a Register with the given raw name bytes (may hold a NUL). */
static size_t pack_register(uint8_t *buf, const char *name, size_t nlen)
{
    /* ClientFrame{id: 1, reg (20) {name (1): ..., password (2): "secret"}} */
    uint8_t inner[128];
    size_t n = 0;
    inner[n++] = 0x0a;
    inner[n++] = (uint8_t)nlen;
    memcpy(inner + n, name, nlen);
    n += nlen;
    inner[n++] = 0x12;
    inner[n++] = 6;
    memcpy(inner + n, "secret", 6);
    n += 6;
    size_t m = 0;
    buf[m++] = 0x08;
    buf[m++] = 1;
    buf[m++] = 0xa2; /* field 20, wire type 2: (20 << 3 | 2) = 162 */
    buf[m++] = 0x01;
    buf[m++] = (uint8_t)n;
    memcpy(buf + m, inner, n);
    return m + n;
}

static void test_pbcheck_sees_the_whole_string(void **state)
{
    uint8_t buf[256];
    const char *field = NULL;
    size_t n = pack_register(buf, "alice", 5);
    /* protobuf-c reads it as expected, and the check passes. */
    Parley__ClientFrame *f = parley__client_frame__unpack(NULL, n, buf);
    assert_non_null(f);
    assert_string_equal(f->reg->name, "alice");
    parley__client_frame__free_unpacked(f, NULL);
    assert_int_equal(pbcheck_strings(&parley__client_frame__descriptor, buf, n, &field), 0);

    /* "x\0evil": protobuf-c would hand out "x"; the check refuses it. */
    n = pack_register(buf, "x\0evil", 6);
    f = parley__client_frame__unpack(NULL, n, buf);
    assert_non_null(f);
    assert_string_equal(f->reg->name, "x");
    parley__client_frame__free_unpacked(f, NULL);
    assert_int_equal(pbcheck_strings(&parley__client_frame__descriptor, buf, n, &field), -1);
    assert_string_equal(field, "name");

    /* Invalid UTF-8. */
    n = pack_register(buf, "\xff\xfe", 2);
    assert_int_equal(pbcheck_strings(&parley__client_frame__descriptor, buf, n, &field), -1);

    /* Truncated bytes do not parse. */
    assert_int_equal(pbcheck_strings(&parley__client_frame__descriptor, buf, n - 3, &field), -1);
    assert_string_equal(field, "frame");

    /* Unknown fields are skipped, bytes fields are not text. */
    uint8_t unk[] = {0xf8, 0x07, 0x01, 0x82, 0x08, 0x02, 0x00, 0xff};
    assert_int_equal(pbcheck_strings(&parley__client_frame__descriptor, unk, sizeof(unk), &field),
                     0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_allows_burst_then_refills),
        cmocka_unit_test(test_counter_has_a_ceiling),
        cmocka_unit_test(test_failures_grow_the_delay_per_pair),
        cmocka_unit_test(test_table_stays_bounded),
        cmocka_unit_test(test_name_safety),
        cmocka_unit_test(test_pbcheck_sees_the_whole_string),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
