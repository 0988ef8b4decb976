/* Reading the cluster's secrets from files (common/secret): a file others
 * may read is refused, a USER:PASS line loses its line end, a key must have
 * exactly its length. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/secret.h"

static char g_dir[64];

static const char *write_file(const char *name, const void *data, size_t len, mode_t mode)
{
    static char path[128];
    snprintf(path, sizeof(path), "%s/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static void test_line(void **state)
{
    char buf[64], err[256];
    const char *p = write_file("ok", "parley:pw\n", 10, 0600);
    assert_int_equal(secret_read_line(p, buf, sizeof(buf), err, sizeof(err)), 0);
    assert_string_equal(buf, "parley:pw");
    assert_true(secret_is_userpass(buf));
    p = write_file("crlf", "a:b\r\nrest", 9, 0400);
    assert_int_equal(secret_read_line(p, buf, sizeof(buf), err, sizeof(err)), 0);
    assert_string_equal(buf, "a:b");

    p = write_file("open", "parley:pw\n", 10, 0644);
    assert_int_equal(secret_read_line(p, buf, sizeof(buf), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "chmod 600"));
    p = write_file("empty", "\n", 1, 0600);
    assert_int_equal(secret_read_line(p, buf, sizeof(buf), err, sizeof(err)), -1);
    p = write_file("long", "0123456789", 10, 0600);
    assert_int_equal(secret_read_line(p, buf, 8, err, sizeof(err)), -1);
    assert_int_equal(secret_read_line(g_dir, buf, sizeof(buf), err, sizeof(err)), -1);
    assert_int_equal(secret_read_line("/nonexistent/x", buf, sizeof(buf), err, sizeof(err)), -1);

    assert_false(secret_is_userpass("nopass"));
    assert_false(secret_is_userpass(":pw"));
    assert_false(secret_is_userpass("user:"));
    assert_false(secret_is_userpass(NULL));
}

static void test_key(void **state)
{
    unsigned char key[32], want[32];
    char err[256];
    for (int i = 0; i < 32; i++)
        want[i] = (unsigned char)(i * 7 + 1);
    const char *p = write_file("key", want, 32, 0600);
    assert_int_equal(secret_read_key(p, key, 32, err, sizeof(err)), 0);
    assert_memory_equal(key, want, 32);
    p = write_file("short", want, 31, 0600);
    assert_int_equal(secret_read_key(p, key, 32, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "exactly 32 bytes"));
    p = write_file("longer", "0123456789012345678901234567890123", 33, 0600);
    assert_int_equal(secret_read_key(p, key, 32, err, sizeof(err)), -1);
    p = write_file("shared", want, 32, 0640);
    assert_int_equal(secret_read_key(p, key, 32, err, sizeof(err)), -1);
}

static int setup(void **state)
{
    snprintf(g_dir, sizeof(g_dir), "/tmp/parley-secret-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line),
        cmocka_unit_test(test_key),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
