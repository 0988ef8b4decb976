/* The log's two formats (common/log): every JSON line is well-formed
 * whatever bytes a field holds (control characters, quotes, invalid UTF-8,
 * a value longer than a line), text lines stay one line, and old-style
 * "audit k=v" messages get the same fields in JSON as log_audit's. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "common/utf8.h"

static char g_path[64];
static char g_out[32768];

/* Empties the log file; the next read_line returns what was written since. */
static void reset(void)
{
    int fd = open(g_path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    close(fd);
}

/* The one line written since reset(), from its message on (the timestamp
 * and level cut off), without its newline. */
static const char *read_line(void)
{
    FILE *f = fopen(g_path, "rb");
    assert_non_null(f);
    size_t n = fread(g_out, 1, sizeof(g_out) - 1, f);
    fclose(f);
    g_out[n] = '\0';
    assert_true(n > 0 && g_out[n - 1] == '\n');
    g_out[n - 1] = '\0';
    assert_null(strchr(g_out, '\n')); /* one line */
    const char *m = strstr(g_out, "\"msg\":");
    if (m)
        return m;
    m = strstr(g_out, "Z info  ");
    assert_non_null(m);
    return m + 8;
}

static void test_json_escapes(void **state)
{
    log_set_format(LOG_JSON);
    reset();
    log_audit("x", LOG_STR("name", "q\"b\\n\n\x01\x7f\xc2\x85\xe5\xbc\xa0"), LOG_U64("user", 12),
              LOG_SKIP, LOG_STR("none", NULL));
    assert_string_equal(read_line(), "\"msg\":\"audit\",\"event\":\"x\",\"name\":"
                                     "\"q\\\"b\\\\n\\n\\u0001\\u007f\\u0085\xe5\xbc\xa0\","
                                     "\"user\":12,\"none\":\"\"}");
    /* Invalid UTF-8: a lone continuation byte, an overlong NUL, a
     * surrogate, a byte never in UTF-8, a sequence cut short. */
    reset();
    log_audit("x", LOG_STR("name", "a\x80"
                                   "b\xc0\x80"
                                   "c\xed\xa0\x80"
                                   "d\xff"
                                   "e\xe5\xbc"));
    assert_string_equal(read_line(),
                        "\"msg\":\"audit\",\"event\":\"x\",\"name\":\"a\\ufffdb\\ufffd\\ufffdc"
                        "\\ufffd\\ufffd\\ufffdd\\ufffde\\ufffd\\ufffd\"}");
    reset();
    log_info("tab\there \"quoted\" \xff");
    assert_string_equal(read_line(), "\"msg\":\"tab\\there \\\"quoted\\\" \\ufffd\"}");
}

static void test_text_escapes(void **state)
{
    log_set_format(LOG_TEXT);
    reset();
    log_audit("x", LOG_STR("plain", "alice"), LOG_STR("spaced", "a b"), LOG_STR("empty", ""),
              LOG_STR("eq", "k=v"), LOG_STR("bad", "q\"\\\n\xff\xc2\x85\xe5\xbc\xa0"),
              LOG_U64("n", 7));
    assert_string_equal(read_line(), "audit event=x plain=alice spaced=\"a b\" empty=\"\" "
                                     "eq=\"k=v\" bad=\"q\\\"\\\\\\n\\xff\\u0085\xe5\xbc\xa0\" n=7");
    /* A message with a line end stays on one line. */
    reset();
    log_warn("two\nlines\r\x1b[2J");
    FILE *f = fopen(g_path, "rb");
    size_t n = fread(g_out, 1, sizeof(g_out) - 1, f);
    fclose(f);
    g_out[n] = '\0';
    assert_non_null(strstr(g_out, " warn  two\\nlines\\r\\x1b[2J\n"));
}

/* A value too long for a line is cut, never in the middle of a character
 * or an escape, and the line still closes. */
static void test_long_values(void **state)
{
    static char big[30000];
    for (size_t i = 0; i + 3 < sizeof(big); i += 3)
        memcpy(big + i, "\xe5\xbc\xa0", 3);
    big[sizeof(big) - 3] = '\0';
    for (int fmt = 0; fmt < 2; fmt++) {
        log_set_format(fmt ? LOG_JSON : LOG_TEXT);
        reset();
        log_audit("long", LOG_STR("name", big), LOG_U64("after", 1));
        const char *m = read_line();
        size_t len = strlen(g_out);
        assert_true(len < 8192);
        assert_true(utf8_count(g_out, len) > 0);
        assert_null(strstr(m, "after"));
        assert_int_equal(g_out[len - 1], fmt ? '}' : '"');
        assert_int_equal(g_out[len - 2], fmt ? '"' : '\xa0');
        /* Escapes are not cut either: "\n" * many. */
        memset(big, '\n', 10000);
        big[10000] = '\0';
        reset();
        log_audit("long", LOG_STR("name", big));
        m = read_line();
        len = strlen(g_out);
        /* An even number of backslash-n pairs before the closing quote. */
        const char *q = strstr(m, "name=\"");
        q = q ? q + 6 : strstr(m, "\"name\":\"") + 8;
        size_t body = (size_t)(g_out + len - q) - (fmt ? 2 : 1);
        assert_int_equal(body % 2, 0);
        for (size_t i = 0; i < body; i += 2)
            assert_memory_equal(q + i, "\\n", 2);
        for (size_t i = 0; i + 3 < sizeof(big); i += 3)
            memcpy(big + i, "\xe5\xbc\xa0", 3);
        big[sizeof(big) - 3] = '\0';
    }
}

/* "audit k=v ..." from log_info: the same fields as log_audit in JSON;
 * any other shape stays one message. */
static void test_audit_text_in_json(void **state)
{
    log_set_format(LOG_JSON);
    reset();
    log_info("audit event=ban user=12 by=admin zero=0 lead=012");
    assert_string_equal(read_line(), "\"msg\":\"audit\",\"event\":\"ban\",\"user\":12,"
                                     "\"by\":\"admin\",\"zero\":0,\"lead\":\"012\"}");
    reset();
    log_info("audit event=x note=two words");
    assert_string_equal(read_line(), "\"msg\":\"audit event=x note=two words\"}");
    reset();
    log_info("auditor says hi");
    assert_string_equal(read_line(), "\"msg\":\"auditor says hi\"}");
}

static void test_level_filter(void **state)
{
    log_set_format(LOG_TEXT);
    log_set_level(LOG_WARN);
    reset();
    log_audit("x", LOG_U64("n", 1));
    log_info("hidden");
    log_warn("shown");
    log_set_level(LOG_INFO);
    FILE *f = fopen(g_path, "rb");
    size_t n = fread(g_out, 1, sizeof(g_out) - 1, f);
    fclose(f);
    g_out[n] = '\0';
    assert_null(strstr(g_out, "hidden"));
    assert_null(strstr(g_out, "audit"));
    assert_non_null(strstr(g_out, "shown"));
}

int main(void)
{
    strcpy(g_path, "/tmp/parley-test-log-XXXXXX");
    int fd = mkstemp(g_path);
    char err[256];
    if (fd < 0 || log_open_file(g_path, err, sizeof(err)) < 0)
        return 1;
    close(fd);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_escapes), cmocka_unit_test(test_text_escapes),
        cmocka_unit_test(test_long_values),  cmocka_unit_test(test_audit_text_in_json),
        cmocka_unit_test(test_level_filter),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(g_path);
    return rc;
}
