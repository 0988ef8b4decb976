/* The consistent-hash ring: spread, stability when nodes come and go, skips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "rpc/ring.h"

enum { KEYS = 20000 };

static void test_empty_ring_has_no_node(void **state)
{
    ring *r = ring_new(50);
    assert_null(ring_get(r, 42));
    assert_int_equal(ring_del(r, "x"), -1);
    ring_free(r);
}

static void test_keys_spread_over_nodes(void **state)
{
    ring *r = ring_new(100);
    const char *names[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++)
        assert_int_equal(ring_add(r, names[i]), 0);
    assert_int_equal(ring_add(r, "a"), -1);
    assert_int_equal(ring_nodes(r), 4);
    int count[4] = {0};
    for (uint64_t k = 1; k <= KEYS; k++) {
        const char *n = ring_get(r, k);
        for (int i = 0; i < 4; i++)
            if (strcmp(n, names[i]) == 0)
                count[i]++;
    }
    /* With 100 virtual nodes each, no node should get under half or over
     * twice its fair share. */
    for (int i = 0; i < 4; i++) {
        assert_true(count[i] > KEYS / 8);
        assert_true(count[i] < KEYS / 2);
    }
    ring_free(r);
}

static void test_removing_a_node_moves_only_its_keys(void **state)
{
    ring *r = ring_new(100);
    ring_add(r, "a");
    ring_add(r, "b");
    ring_add(r, "c");
    static char before[KEYS + 1];
    for (uint64_t k = 1; k <= KEYS; k++)
        before[k] = ring_get(r, k)[0];
    assert_int_equal(ring_del(r, "b"), 0);
    for (uint64_t k = 1; k <= KEYS; k++) {
        char now = ring_get(r, k)[0];
        if (before[k] != 'b')
            assert_int_equal(now, before[k]);
        else
            assert_true(now == 'a' || now == 'c');
    }
    /* And back: the same mapping as before. */
    ring_add(r, "b");
    for (uint64_t k = 1; k <= KEYS; k++)
        assert_int_equal(ring_get(r, k)[0], before[k]);
    ring_free(r);
}

static int skip_b(void *arg, const char *name)
{
    return strcmp(name, "b") == 0;
}

static void test_skipped_node_hands_over_to_the_next(void **state)
{
    ring *r = ring_new(20);
    ring_add(r, "a");
    ring_add(r, "b");
    for (uint64_t k = 1; k <= 1000; k++)
        assert_string_equal(ring_get_if(r, k, skip_b, NULL), "a");
    ring_del(r, "a");
    assert_null(ring_get_if(r, 7, skip_b, NULL));
    ring_free(r);
}

static void count_point(void *arg, uint64_t point, const char *name)
{
    (*(int *)arg)++;
}

static void test_virtual_nodes_listed(void **state)
{
    ring *r = ring_new(30);
    ring_add(r, "a");
    ring_add(r, "b");
    int n = 0;
    ring_foreach(r, count_point, &n);
    assert_int_equal(n, 60);
    ring_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_ring_has_no_node),
        cmocka_unit_test(test_keys_spread_over_nodes),
        cmocka_unit_test(test_removing_a_node_moves_only_its_keys),
        cmocka_unit_test(test_skipped_node_hands_over_to_the_next),
        cmocka_unit_test(test_virtual_nodes_listed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
