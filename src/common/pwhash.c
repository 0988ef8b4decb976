/* pwhash on libsodium: argon2id strings and SHA-256 of random tokens. */
#include "common/pwhash.h"

#include <sodium.h>
#include <string.h>

_Static_assert(PWHASH_STR_MAX >= crypto_pwhash_STRBYTES, "argon2id string buffer too small");
_Static_assert(sodium_base64_ENCODED_LEN(PWHASH_TOKEN_RAW,
                                         sodium_base64_VARIANT_URLSAFE_NO_PADDING) ==
                   PWHASH_TOKEN_LEN + 1,
               "token length does not match its encoding");
_Static_assert(crypto_hash_sha256_BYTES == 32, "token hash is 32 bytes");

int pwhash_cost_parse(const char *s, pwhash_cost *out)
{
    static const struct {
        const char *name;
        pwhash_cost cost;
    } names[] = {
        {"interactive", PWHASH_INTERACTIVE},
        {"moderate", PWHASH_MODERATE},
        {"min", PWHASH_MIN},
    };
    if (!s)
        return -1;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s, names[i].name) == 0) {
            if (out)
                *out = names[i].cost;
            return 0;
        }
    }
    return -1;
}

int pwhash_init(void)
{
    /* 1 means already initialised, which is fine. */
    return sodium_init() < 0 ? -1 : 0;
}

int pwhash_hash(const char *password, size_t len, pwhash_cost cost, char out[PWHASH_STR_MAX])
{
    unsigned long long ops;
    size_t mem;
    switch (cost) {
    case PWHASH_INTERACTIVE:
        ops = crypto_pwhash_OPSLIMIT_INTERACTIVE;
        mem = crypto_pwhash_MEMLIMIT_INTERACTIVE;
        break;
    case PWHASH_MODERATE:
        ops = crypto_pwhash_OPSLIMIT_MODERATE;
        mem = crypto_pwhash_MEMLIMIT_MODERATE;
        break;
    case PWHASH_MIN:
        ops = crypto_pwhash_OPSLIMIT_MIN;
        mem = crypto_pwhash_MEMLIMIT_MIN;
        break;
    default:
        return -1;
    }
    if (!password && len)
        return -1;
    /* Fails only when out of memory (the memory limit is allocated). */
    if (crypto_pwhash_str_alg(out, password ? password : "", len, ops, mem,
                              crypto_pwhash_ALG_ARGON2ID13) != 0)
        return -1;
    return 0;
}

int pwhash_verify(const char *stored, const char *password, size_t len)
{
    if (!stored || (!password && len))
        return -1;
    /* libsodium takes a crypto_pwhash_STRBYTES buffer: a stored string must
     * fit in one, NUL included, or it is not ours. */
    char buf[crypto_pwhash_STRBYTES] = {0};
    size_t n = strnlen(stored, sizeof buf);
    if (n == sizeof buf)
        return -1;
    memcpy(buf, stored, n);
    int rc = crypto_pwhash_str_verify(buf, password ? password : "", len);
    return rc == 0 ? 0 : -1;
}

void pwhash_token_new(char token[PWHASH_TOKEN_LEN + 1], uint8_t hash[32])
{
    unsigned char raw[PWHASH_TOKEN_RAW];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(token, PWHASH_TOKEN_LEN + 1, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    /* Hash the text the client will present, so that lookups need no
     * decoding. */
    pwhash_token_hash(token, PWHASH_TOKEN_LEN, hash);
}

int pwhash_token_pack(const char *token, uint8_t raw[PWHASH_TOKEN_RAW])
{
    size_t len = token ? strnlen(token, PWHASH_TOKEN_LEN + 1) : 0, n = 0;
    if (len != PWHASH_TOKEN_LEN)
        return -1;
    if (sodium_base642bin(raw, PWHASH_TOKEN_RAW, token, len, NULL, &n, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        n != PWHASH_TOKEN_RAW)
        return -1;
    return 0;
}

void pwhash_token_unpack(const uint8_t raw[PWHASH_TOKEN_RAW], char token[PWHASH_TOKEN_LEN + 1])
{
    sodium_bin2base64(token, PWHASH_TOKEN_LEN + 1, raw, PWHASH_TOKEN_RAW,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

void pwhash_token_hash(const char *token, size_t len, uint8_t hash[32])
{
    crypto_hash_sha256(hash, (const unsigned char *)(token ? token : ""), token ? len : 0);
}

void pwhash_random(void *buf, size_t n)
{
    randombytes_buf(buf, n);
}
