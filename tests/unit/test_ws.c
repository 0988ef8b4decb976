/*
 * WebSocket's pure parts (net/ws): the Accept key of RFC 6455's own example,
 * frame headers in every length form, the checks a client's frame must pass,
 * close payloads, the request parser, origins and the web root's paths.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "net/ws.h"

static void test_accept_key_of_the_rfc(void **state)
{
    /* RFC 6455, section 1.3. */
    char out[WS_ACCEPT_LEN + 1];
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    assert_int_equal(ws_accept_key(key, strlen(key), out), 0);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_frame_header_forms(void **state)
{
    static const struct {
        uint64_t len;
        size_t hdr;
    } cases[] = {{0, 2}, {125, 2}, {126, 4}, {65535, 4}, {65536, 10}, {1ull << 40, 10}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t buf[WS_MAX_HEADER];
        size_t h = ws_frame_header(buf, WS_OP_BINARY, cases[i].len);
        assert_int_equal(h, cases[i].hdr);
        assert_int_equal(buf[0], 0x82);
        ws_frame f;
        assert_int_equal(ws_frame_parse(buf, h, &f), 1);
        assert_int_equal(f.len, cases[i].len);
        assert_int_equal(f.hdr_len, h);
        assert_int_equal(f.masked, 0);
        assert_int_equal(f.fin, 1);
        assert_int_equal(f.opcode, WS_OP_BINARY);
        /* Any shorter prefix asks for more. */
        for (size_t k = 0; k < h; k++)
            assert_int_equal(ws_frame_parse(buf, k, &f), 0);
    }
}

/* RFC 6455 5.7: a masked "Hello" from a client. */
static void test_masked_hello(void **state)
{
    uint8_t buf[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    ws_frame f;
    assert_int_equal(ws_frame_parse(buf, sizeof(buf), &f), 1);
    assert_int_equal(f.opcode, WS_OP_TEXT);
    assert_int_equal(f.masked, 1);
    assert_int_equal(f.len, 5);
    assert_int_equal(f.hdr_len, 6);
    ws_unmask(buf + 6, 5, f.mask, 0);
    assert_memory_equal(buf + 6, "Hello", 5);
    /* Unmasking in pieces, at any offset, is the same. */
    uint8_t big[100], ref[100];
    for (int i = 0; i < 100; i++)
        big[i] = ref[i] = (uint8_t)(i * 7);
    ws_unmask(ref, 100, f.mask, 0);
    ws_unmask(big, 13, f.mask, 0);
    ws_unmask(big + 13, 87, f.mask, 13);
    assert_memory_equal(big, ref, 100);
}

static void test_lengths_not_shortest_are_refused(void **state)
{
    ws_frame f;
    uint8_t l16[] = {0x82, 0xfe, 0x00, 0x7d};
    assert_int_equal(ws_frame_parse(l16, sizeof(l16), &f), -1);
    uint8_t l64[] = {0x82, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    assert_int_equal(ws_frame_parse(l64, sizeof(l64), &f), -1);
    uint8_t top[] = {0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(ws_frame_parse(top, sizeof(top), &f), -1);
}

static ws_frame frame_of(int fin, int op, int masked, int rsv, uint64_t len)
{
    ws_frame f = {.fin = fin, .opcode = op, .masked = masked, .rsv = rsv, .len = len};
    return f;
}

static void test_frame_checks(void **state)
{
    ws_frame f;
    f = frame_of(1, WS_OP_BINARY, 1, 0, 10);
    assert_int_equal(ws_frame_check(&f, 0, 0, 100), 0);
    f = frame_of(1, WS_OP_BINARY, 0, 0, 10);
    assert_int_equal(ws_frame_check(&f, 0, 0, 100), WS_CLOSE_PROTOCOL); /* unmasked */
    f = frame_of(1, WS_OP_BINARY, 1, 1, 10);
    assert_int_equal(ws_frame_check(&f, 0, 0, 100), WS_CLOSE_PROTOCOL); /* rsv */
    f = frame_of(1, WS_OP_TEXT, 1, 0, 10);
    assert_int_equal(ws_frame_check(&f, 0, 0, 100), WS_CLOSE_UNSUPPORTED);
    f = frame_of(1, 3, 1, 0, 0);
    assert_int_equal(ws_frame_check(&f, 0, 0, 100), WS_CLOSE_PROTOCOL);
    f = frame_of(1, 0xB, 1, 0, 0);
    assert_int_equal(ws_frame_check(&f, 0, 0, 100), WS_CLOSE_PROTOCOL);
    f = frame_of(1, WS_OP_BINARY, 1, 0, 101);
    assert_int_equal(ws_frame_check(&f, 0, 0, 100), WS_CLOSE_TOO_BIG);
    f = frame_of(1, WS_OP_CONT, 1, 0, 60);
    assert_int_equal(ws_frame_check(&f, 1, 50, 100), WS_CLOSE_TOO_BIG);
    assert_int_equal(ws_frame_check(&f, 1, 40, 100), 0);
    assert_int_equal(ws_frame_check(&f, 0, 0, 100), WS_CLOSE_PROTOCOL); /* nothing begun */
    f = frame_of(0, WS_OP_BINARY, 1, 0, 10);
    assert_int_equal(ws_frame_check(&f, 1, 10, 100), WS_CLOSE_PROTOCOL); /* one inside another */
    /* Control frames: final, at most 125 bytes, allowed inside a message. */
    f = frame_of(1, WS_OP_PING, 1, 0, 125);
    assert_int_equal(ws_frame_check(&f, 1, 10, 100), 0);
    f = frame_of(1, WS_OP_PING, 1, 0, 126);
    assert_int_equal(ws_frame_check(&f, 0, 0, 1000), WS_CLOSE_PROTOCOL);
    f = frame_of(0, WS_OP_CLOSE, 1, 0, 2);
    assert_int_equal(ws_frame_check(&f, 0, 0, 1000), WS_CLOSE_PROTOCOL);
    /* A huge announced length is refused from the header. */
    f = frame_of(1, WS_OP_BINARY, 1, 0, UINT64_MAX >> 1);
    assert_int_equal(ws_frame_check(&f, 0, 0, 65536), WS_CLOSE_TOO_BIG);
}

static void test_close_payloads(void **state)
{
    unsigned code;
    assert_int_equal(ws_close_check(NULL, 0, &code), 0);
    assert_int_equal(code, 1005);
    uint8_t one[] = {0x03};
    assert_int_equal(ws_close_check(one, 1, &code), WS_CLOSE_PROTOCOL);
    uint8_t ok[] = {0x03, 0xe8, 'b', 'y', 'e'};
    assert_int_equal(ws_close_check(ok, sizeof(ok), &code), 0);
    assert_int_equal(code, 1000);
    uint8_t reserved[] = {0x03, 0xed}; /* 1005 */
    assert_int_equal(ws_close_check(reserved, 2, &code), WS_CLOSE_PROTOCOL);
    uint8_t app[] = {0x0f, 0xa0}; /* 4000 */
    assert_int_equal(ws_close_check(app, 2, &code), 0);
    uint8_t bad_utf8[] = {0x03, 0xe8, 0xc3, 0x28};
    assert_int_equal(ws_close_check(bad_utf8, sizeof(bad_utf8), &code), WS_CLOSE_BAD_DATA);
}

static const char upgrade[] = "GET /ws?x=1 HTTP/1.1\r\n"
                              "Host: chat.example:8080\r\n"
                              "Upgrade: websocket\r\n"
                              "Connection: keep-alive, Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Origin: http://chat.example:8080\r\n"
                              "Sec-WebSocket-Version: 13\r\n\r\n";

static void test_request_parser(void **state)
{
    ws_request r;
    size_t n = strlen(upgrade);
    for (size_t k = 0; k < n; k++)
        assert_int_equal(ws_parse_request(upgrade, k, &r), 0);
    assert_int_equal(ws_parse_request(upgrade, n, &r), 1);
    assert_int_equal(r.method, WS_M_GET);
    assert_int_equal(r.head_len, n);
    assert_int_equal(r.target.len, 3);
    assert_memory_equal(upgrade + r.target.off, "/ws", 3);
    assert_int_equal(r.key.len, 24);
    ws_config *cfg = ws_config_new(NULL, NULL, NULL, 0);
    assert_non_null(cfg);
    assert_int_equal(ws_check_upgrade(cfg, upgrade, &r, 0), 101);
    ws_config_free(cfg);

    assert_int_equal(ws_parse_request("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 31, &r), 400);
    assert_int_equal(ws_parse_request("GET / HTTP/1.1\r\n folded\r\n\r\n", 27, &r), 400);
    assert_int_equal(ws_parse_request("GET / HTTP/3.0\r\n\r\n", 18, &r), 505);
    assert_int_equal(ws_parse_request("GET x HTTP/1.1\r\n\r\n", 18, &r), 400);
    const char *dup = "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
    assert_int_equal(ws_parse_request(dup, strlen(dup), &r), 400);
    const char *post = "POST / HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_int_equal(ws_parse_request(post, strlen(post), &r), 1);
    assert_int_equal(ws_check_upgrade(NULL, post, &r, 0), 405);
    static char big[WS_MAX_REQUEST + 10];
    memset(big, 'a', sizeof(big));
    assert_int_equal(ws_parse_request(big, sizeof(big), &r), 431);
}

static void test_origins(void **state)
{
    ws_config *same = ws_config_new("", NULL, NULL, 0);
    const char *h = "chat.example:8080";
    assert_true(ws_origin_allowed(same, "", 0, h, strlen(h), 0));
    const char *o = "http://chat.example:8080";
    assert_true(ws_origin_allowed(same, o, strlen(o), h, strlen(h), 0));
    o = "http://CHAT.example:8080";
    assert_true(ws_origin_allowed(same, o, strlen(o), h, strlen(h), 0));
    o = "http://chat.example:8081";
    assert_false(ws_origin_allowed(same, o, strlen(o), h, strlen(h), 0));
    o = "http://evil.example:8080";
    assert_false(ws_origin_allowed(same, o, strlen(o), h, strlen(h), 0));
    o = "https://chat.example";
    assert_true(ws_origin_allowed(same, o, strlen(o), "chat.example", 12, 0));
    assert_false(ws_origin_allowed(same, o, strlen(o), h, strlen(h), 0));
    o = "http://chat.example";
    assert_true(ws_origin_allowed(same, o, strlen(o), "chat.example:80", 15, 0));
    assert_false(ws_origin_allowed(same, "null", 4, h, strlen(h), 0));
    ws_config_free(same);

    char err[128];
    ws_config *list = ws_config_new("https://App.example, localhost:5173", NULL, err, sizeof(err));
    assert_non_null(list);
    o = "https://app.example";
    assert_true(ws_origin_allowed(list, o, strlen(o), h, strlen(h), 0));
    o = "http://app.example";
    assert_false(ws_origin_allowed(list, o, strlen(o), h, strlen(h), 0));
    o = "http://localhost:5173";
    assert_true(ws_origin_allowed(list, o, strlen(o), h, strlen(h), 0));
    ws_config_free(list);
    assert_null(ws_config_new("https://a.example/path", NULL, err, sizeof(err)));
    ws_config *any = ws_config_new("*", NULL, err, sizeof(err));
    o = "http://whatever";
    assert_true(ws_origin_allowed(any, o, strlen(o), h, strlen(h), 0));
    ws_config_free(any);
}

static void test_target_paths(void **state)
{
    char out[64];
    static const struct {
        const char *in, *out;
    } ok[] = {
        {"/", "index.html"},
        {"/app.js", "app.js"},
        {"/assets/", "assets/index.html"},
        {"/assets/a%20b.css", "assets/a b.css"},
        {"/caf%C3%A9.png", "caf\xc3\xa9.png"},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(ws_target_path(ok[i].in, strlen(ok[i].in), out, sizeof(out)), 0);
        assert_string_equal(out, ok[i].out);
    }
    static const char *bad[] = {"/..",      "/../x", "/a/../x", "/%2e%2e/x", "/%2E./x",  "/.env",
                                "/a/.git/", "//x",   "/a%2fb",  "/a%00b",    "/a\\..\\", "/%5c",
                                "/%",       "/%4",   "/%zz",    "/a/./b",    "x",        ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(ws_target_path(bad[i], strlen(bad[i]), out, sizeof(out)), -1);
    char longer[200];
    memset(longer, 'a', sizeof(longer));
    longer[0] = '/';
    assert_int_equal(ws_target_path(longer, sizeof(longer), out, sizeof(out)), -1);
}

static void test_content_types(void **state)
{
    assert_string_equal(ws_content_type("index.html"), "text/html; charset=utf-8");
    assert_string_equal(ws_content_type("a/app-X.JS"), "text/javascript; charset=utf-8");
    assert_string_equal(ws_content_type("x.wasm"), "application/wasm");
    assert_string_equal(ws_content_type("x.map"), "application/json");
    assert_string_equal(ws_content_type("noext"), "application/octet-stream");
    assert_string_equal(ws_content_type("dir.png/noext"), "application/octet-stream");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_key_of_the_rfc),
        cmocka_unit_test(test_frame_header_forms),
        cmocka_unit_test(test_masked_hello),
        cmocka_unit_test(test_lengths_not_shortest_are_refused),
        cmocka_unit_test(test_frame_checks),
        cmocka_unit_test(test_close_payloads),
        cmocka_unit_test(test_request_parser),
        cmocka_unit_test(test_origins),
        cmocka_unit_test(test_target_paths),
        cmocka_unit_test(test_content_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
