/*
 * pwhash: password hashing (argon2id via libsodium) and session tokens.
 * Hashing is deliberately slow: call it from a worker thread only.
 */
#ifndef PARLEY_PWHASH_H
#define PARLEY_PWHASH_H

#include <stddef.h>
#include <stdint.h>

/* Cost of argon2id: INTERACTIVE is libsodium's interactive setting (the
 * default); MIN is libsodium's minimum, for tests and benchmarks only. */
typedef enum { PWHASH_INTERACTIVE = 0, PWHASH_MODERATE, PWHASH_MIN } pwhash_cost;

enum {
    PWHASH_STR_MAX = 128,
    PWHASH_TOKEN_RAW = 32,
    PWHASH_TOKEN_LEN = 43 /* base64url of PWHASH_TOKEN_RAW bytes */
};

/* Parses "interactive", "moderate" or "min"; -1 if none. */
int pwhash_cost_parse(const char *s, pwhash_cost *out);
/* Initialises libsodium; call once at start. 0 or -1. */
int pwhash_init(void);
/* Writes the argon2id string (NUL-terminated) into out[PWHASH_STR_MAX]. 0 or -1. */
int pwhash_hash(const char *password, size_t len, pwhash_cost cost, char out[PWHASH_STR_MAX]);
/* 0 if password matches the stored string, -1 otherwise (constant time). */
int pwhash_verify(const char *stored, const char *password, size_t len);
/* A new random token (URL-safe base64, NUL-terminated) and its SHA-256, which
 * is what the store keeps. */
void pwhash_token_new(char token[PWHASH_TOKEN_LEN + 1], uint8_t hash[32]);
/* Fills buf with n random bytes (CSPRNG). */
void pwhash_random(void *buf, size_t n);
/* A token's bytes, for keeping it in 32 bytes instead of 44: 0, or -1 if
 * token is not the text of PWHASH_TOKEN_RAW bytes. */
int pwhash_token_pack(const char *token, uint8_t raw[PWHASH_TOKEN_RAW]);
/* The text of a packed token (NUL-terminated). */
void pwhash_token_unpack(const uint8_t raw[PWHASH_TOKEN_RAW], char token[PWHASH_TOKEN_LEN + 1]);
/* SHA-256 of a token presented by a client. */
void pwhash_token_hash(const char *token, size_t len, uint8_t hash[32]);

#endif
