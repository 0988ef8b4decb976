/* Unit tests of password hashing and session tokens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/pwhash.h"

static int group_setup(void **state)
{
    return pwhash_init() == 0 ? 0 : -1;
}

static void test_cost_parse(void **state)
{
    pwhash_cost c = PWHASH_MIN;
    assert_int_equal(pwhash_cost_parse("interactive", &c), 0);
    assert_int_equal(c, PWHASH_INTERACTIVE);
    assert_int_equal(pwhash_cost_parse("moderate", &c), 0);
    assert_int_equal(c, PWHASH_MODERATE);
    assert_int_equal(pwhash_cost_parse("min", &c), 0);
    assert_int_equal(c, PWHASH_MIN);
    assert_int_equal(pwhash_cost_parse("MIN", &c), -1);
    assert_int_equal(pwhash_cost_parse("", &c), -1);
    assert_int_equal(pwhash_cost_parse("minimal", &c), -1);
    assert_int_equal(pwhash_cost_parse(NULL, &c), -1);
    assert_int_equal(c, PWHASH_MIN);    /* untouched on failure */
    assert_int_equal(pwhash_init(), 0); /* twice is fine */
}

static void test_hash_verify(void **state)
{
    const char *pw = "correct horse battery staple";
    char h[PWHASH_STR_MAX];
    assert_int_equal(pwhash_hash(pw, strlen(pw), PWHASH_INTERACTIVE, h), 0);
    assert_true(strlen(h) < PWHASH_STR_MAX);
    assert_int_equal(strncmp(h, "$argon2id$", 10), 0);
    /* libsodium's interactive setting: 64 MiB, 2 passes. */
    assert_non_null(strstr(h, "$m=65536,t=2,p=1$"));
    assert_null(strstr(h, pw));
    assert_null(strstr(h, "horse"));

    assert_int_equal(pwhash_verify(h, pw, strlen(pw)), 0);
    assert_int_equal(pwhash_verify(h, "correct horse battery stapler", strlen(pw) + 1), -1);
    assert_int_equal(pwhash_verify(h, "Correct horse battery staple", strlen(pw)), -1);
    assert_int_equal(pwhash_verify(h, pw, strlen(pw) - 1), -1); /* a prefix */
    assert_int_equal(pwhash_verify(h, "", 0), -1);
}

static void test_hashes_are_salted(void **state)
{
    const char *pw = "hunter2";
    char h1[PWHASH_STR_MAX], h2[PWHASH_STR_MAX];
    assert_int_equal(pwhash_hash(pw, strlen(pw), PWHASH_MIN, h1), 0);
    assert_int_equal(pwhash_hash(pw, strlen(pw), PWHASH_MIN, h2), 0);
    assert_string_not_equal(h1, h2);
    assert_int_equal(pwhash_verify(h1, pw, strlen(pw)), 0);
    assert_int_equal(pwhash_verify(h2, pw, strlen(pw)), 0);
}

static void test_min_cost(void **state)
{
    /* Length-delimited: bytes after len are not part of the password. */
    const char pw[] = "pw\0with nul";
    char h[PWHASH_STR_MAX];
    assert_int_equal(pwhash_hash(pw, sizeof pw - 1, PWHASH_MIN, h), 0);
    assert_int_equal(strncmp(h, "$argon2id$", 10), 0);
    /* libsodium's minimum: 8 KiB, 1 pass. */
    assert_non_null(strstr(h, "$m=8,t=1,p=1$"));
    assert_int_equal(pwhash_verify(h, pw, sizeof pw - 1), 0);
    assert_int_equal(pwhash_verify(h, pw, 2), -1);
    /* The empty password hashes and verifies too. */
    assert_int_equal(pwhash_hash("", 0, PWHASH_MIN, h), 0);
    assert_int_equal(pwhash_verify(h, "", 0), 0);
    assert_int_equal(pwhash_verify(h, "x", 1), -1);
    assert_int_equal(pwhash_hash("x", 1, (pwhash_cost)42, h), -1);
}

static void test_moderate_cost(void **state)
{
    char h[PWHASH_STR_MAX];
    assert_int_equal(pwhash_hash("pw", 2, PWHASH_MODERATE, h), 0);
    /* libsodium's moderate setting: 256 MiB, 3 passes. */
    assert_non_null(strstr(h, "$m=262144,t=3,p=1$"));
    assert_int_equal(pwhash_verify(h, "pw", 2), 0);
}

static void test_verify_garbage(void **state)
{
    assert_int_equal(pwhash_verify("", "pw", 2), -1);
    assert_int_equal(pwhash_verify("not a hash", "pw", 2), -1);
    assert_int_equal(pwhash_verify("$argon2id$v=19$m=8,t=1,p=1$", "pw", 2), -1);
    assert_int_equal(pwhash_verify(NULL, "pw", 2), -1);
    /* Longer than any argon2id string: rejected without overreading. */
    char big[300];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, "$argon2id$", 10);
    assert_int_equal(pwhash_verify(big, "pw", 2), -1);
}

static int is_base64url(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

static void test_tokens(void **state)
{
    char t1[PWHASH_TOKEN_LEN + 1], t2[PWHASH_TOKEN_LEN + 1];
    uint8_t h1[32], h2[32], check[32];
    memset(t1, '#', sizeof t1);
    pwhash_token_new(t1, h1);
    pwhash_token_new(t2, h2);

    assert_int_equal(strlen(t1), 43);
    assert_int_equal(strlen(t2), 43);
    for (size_t i = 0; i < PWHASH_TOKEN_LEN; i++) {
        assert_true(is_base64url(t1[i]));
        assert_true(is_base64url(t2[i]));
    }
    assert_string_not_equal(t1, t2);
    assert_memory_not_equal(h1, h2, 32);

    /* The stored hash is the hash of the token as presented. */
    pwhash_token_hash(t1, strlen(t1), check);
    assert_memory_equal(check, h1, 32);
    pwhash_token_hash(t2, strlen(t2), check);
    assert_memory_equal(check, h2, 32);
    /* One character off gives another hash. */
    t1[0] = t1[0] == 'A' ? 'B' : 'A';
    pwhash_token_hash(t1, strlen(t1), check);
    assert_memory_not_equal(check, h1, 32);
}

/* The gateway keeps a session's token in 32 bytes: packing must give back
 * the very text the client holds, and refuse anything else. */
static void test_token_pack(void **state)
{
    (void)state;
    for (int i = 0; i < 64; i++) {
        char token[PWHASH_TOKEN_LEN + 1], back[PWHASH_TOKEN_LEN + 1];
        uint8_t hash[32], raw[PWHASH_TOKEN_RAW];
        pwhash_token_new(token, hash);
        assert_int_equal(pwhash_token_pack(token, raw), 0);
        pwhash_token_unpack(raw, back);
        assert_string_equal(back, token);
    }
    uint8_t raw[PWHASH_TOKEN_RAW];
    char bad[PWHASH_TOKEN_LEN + 2];
    memset(bad, 'A', sizeof bad - 1);
    bad[sizeof bad - 1] = '\0';
    assert_int_equal(pwhash_token_pack(bad, raw), -1); /* one too long */
    bad[PWHASH_TOKEN_LEN - 1] = '\0';
    assert_int_equal(pwhash_token_pack(bad, raw), -1); /* one too short */
    memset(bad, 'A', PWHASH_TOKEN_LEN);
    bad[PWHASH_TOKEN_LEN] = '\0';
    bad[5] = '+'; /* standard base64, not URL-safe */
    assert_int_equal(pwhash_token_pack(bad, raw), -1);
    assert_int_equal(pwhash_token_pack("", raw), -1);
    assert_int_equal(pwhash_token_pack(NULL, raw), -1);
}

static void test_token_hash_is_sha256(void **state)
{
    /* SHA-256("abc"), FIPS 180-2 test vector. */
    static const uint8_t want[32] = {
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
        0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
        0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad,
    };
    uint8_t got[32];
    pwhash_token_hash("abcdef", 3, got);
    assert_memory_equal(got, want, 32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cost_parse),
        cmocka_unit_test(test_hash_verify),
        cmocka_unit_test(test_hashes_are_salted),
        cmocka_unit_test(test_min_cost),
        cmocka_unit_test(test_moderate_cost),
        cmocka_unit_test(test_verify_garbage),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_token_pack),
        cmocka_unit_test(test_token_hash_is_sha256),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
