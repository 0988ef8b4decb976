/*
 * json: a small writer that builds one JSON object (or any JSON value) in a
 * growable buffer. Commas between members and elements are inserted
 * automatically; strings are escaped (quote, backslash, control characters)
 * and bytes >= 0x80 pass through untouched, so UTF-8 stays UTF-8.
 *
 * Allocation failure is sticky: after it every call is a no-op and
 * json_ok() returns false. The buffer belongs to the json struct; release it
 * with json_free().
 */
#ifndef PARLEY_CLIENT_JSON_H
#define PARLEY_CLIENT_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { JSON_MAX_DEPTH = 16 };

typedef struct json_writer {
    char *buf;
    size_t len, cap;
    int depth;
    bool need_comma[JSON_MAX_DEPTH]; /* per open container: a value was written */
    bool after_key;                  /* the next value follows a key */
    bool failed;
} json_writer;

void json_init(json_writer *j);
void json_free(json_writer *j);
/* Empties the buffer for reuse, keeping its memory. */
void json_reset(json_writer *j);
bool json_ok(const json_writer *j);
/* The text written so far, NUL-terminated (never NULL). */
const char *json_text(const json_writer *j);

void json_obj_begin(json_writer *j);
void json_obj_end(json_writer *j);
void json_arr_begin(json_writer *j);
void json_arr_end(json_writer *j);
/* A member name; the next value call writes its value. */
void json_key(json_writer *j, const char *key);

void json_str(json_writer *j, const char *s);
void json_strn(json_writer *j, const char *s, size_t n);
void json_u64(json_writer *j, uint64_t v);
void json_bool(json_writer *j, bool v);

/* Shorthands for key + value. */
void json_kstr(json_writer *j, const char *key, const char *s);
void json_ku64(json_writer *j, const char *key, uint64_t v);
void json_kbool(json_writer *j, const char *key, bool v);

#endif
