/*
 * json: see json.h.
 */
#include "client/json.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void json_init(json_writer *j)
{
    memset(j, 0, sizeof(*j));
}

void json_free(json_writer *j)
{
    free(j->buf);
    json_init(j);
}

void json_reset(json_writer *j)
{
    j->len = 0;
    if (j->buf)
        j->buf[0] = '\0';
    j->depth = 0;
    j->after_key = false;
    j->failed = false;
    memset(j->need_comma, 0, sizeof(j->need_comma));
}

bool json_ok(const json_writer *j)
{
    return !j->failed;
}

const char *json_text(const json_writer *j)
{
    return j->buf ? j->buf : "";
}

/* Makes room for n more bytes plus a NUL. */
static bool json_reserve(json_writer *j, size_t n)
{
    if (j->failed)
        return false;
    if (j->len + n + 1 <= j->cap)
        return true;
    size_t cap = j->cap ? j->cap : 256;
    while (cap < j->len + n + 1) {
        if (cap > SIZE_MAX / 2) {
            j->failed = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(j->buf, cap);
    if (!p) {
        j->failed = true;
        return false;
    }
    j->buf = p;
    j->cap = cap;
    return true;
}

static void json_raw(json_writer *j, const char *s, size_t n)
{
    if (!json_reserve(j, n))
        return;
    memcpy(j->buf + j->len, s, n);
    j->len += n;
    j->buf[j->len] = '\0';
}

static void json_ch(json_writer *j, char c)
{
    json_raw(j, &c, 1);
}

/* Called before every value and key: writes the separating comma. */
static void json_sep(json_writer *j)
{
    if (j->after_key) {
        j->after_key = false;
        return;
    }
    if (j->depth > 0) {
        if (j->need_comma[j->depth - 1])
            json_ch(j, ',');
        j->need_comma[j->depth - 1] = true;
    }
}

static void json_open(json_writer *j, char c)
{
    json_sep(j);
    if (j->depth >= JSON_MAX_DEPTH) {
        j->failed = true;
        return;
    }
    json_ch(j, c);
    j->need_comma[j->depth++] = false;
}

static void json_close(json_writer *j, char c)
{
    if (j->depth <= 0) {
        j->failed = true;
        return;
    }
    j->depth--;
    json_ch(j, c);
}

void json_obj_begin(json_writer *j)
{
    json_open(j, '{');
}

void json_obj_end(json_writer *j)
{
    json_close(j, '}');
}

void json_arr_begin(json_writer *j)
{
    json_open(j, '[');
}

void json_arr_end(json_writer *j)
{
    json_close(j, ']');
}

/* Writes s[0..n) as a quoted, escaped JSON string. */
static void json_quote(json_writer *j, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    json_ch(j, '"');
    size_t run = 0; /* start of the pending run of plain bytes */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char ubuf[7];
        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        default:
            if (c < 0x20 || c == 0x7f) {
                ubuf[0] = '\\';
                ubuf[1] = 'u';
                ubuf[2] = '0';
                ubuf[3] = '0';
                ubuf[4] = hex[c >> 4];
                ubuf[5] = hex[c & 15];
                ubuf[6] = '\0';
                esc = ubuf;
            }
            break;
        }
        if (!esc)
            continue;
        json_raw(j, s + run, i - run);
        json_raw(j, esc, strlen(esc));
        run = i + 1;
    }
    json_raw(j, s + run, n - run);
    json_ch(j, '"');
}

void json_key(json_writer *j, const char *key)
{
    json_sep(j);
    json_quote(j, key, strlen(key));
    json_ch(j, ':');
    j->after_key = true;
}

void json_strn(json_writer *j, const char *s, size_t n)
{
    json_sep(j);
    json_quote(j, s ? s : "", s ? n : 0);
}

void json_str(json_writer *j, const char *s)
{
    json_strn(j, s, s ? strlen(s) : 0);
}

void json_u64(json_writer *j, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);
    json_sep(j);
    json_raw(j, tmp, (size_t)n);
}

void json_bool(json_writer *j, bool v)
{
    json_sep(j);
    if (v)
        json_raw(j, "true", 4);
    else
        json_raw(j, "false", 5);
}

void json_kstr(json_writer *j, const char *key, const char *s)
{
    json_key(j, key);
    json_str(j, s);
}

void json_ku64(json_writer *j, const char *key, uint64_t v)
{
    json_key(j, key);
    json_u64(j, v);
}

void json_kbool(json_writer *j, const char *key, bool v)
{
    json_key(j, key);
    json_bool(j, v);
}
