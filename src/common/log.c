#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/utf8.h"

/* Written once at start-up, before any thread exists; read-only afterwards
 * (log_reopen changes the file behind log_fd, never log_fd itself). */
static log_level log_min = LOG_INFO;
static log_format log_fmt = LOG_TEXT;
static int log_fd = STDERR_FILENO;
static char log_path[4096];

static const char *const log_tags[] = {"debug", "info", "warn", "error"};

void log_set_level(log_level level)
{
    log_min = level;
}

int log_level_parse(const char *s, log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, log_tags[i]) == 0) {
            *out = (log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_set_format(log_format format)
{
    log_fmt = format;
}

int log_format_parse(const char *s, log_format *out)
{
    if (strcmp(s, "text") == 0)
        *out = LOG_TEXT;
    else if (strcmp(s, "json") == 0)
        *out = LOG_JSON;
    else
        return -1;
    return 0;
}

static int log_open_path(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    if (fd < 0)
        snprintf(err, errlen, "cannot open log file %s: %s", path, strerror(errno));
    return fd;
}

int log_open_file(const char *path, char *err, size_t errlen)
{
    if (strlen(path) >= sizeof(log_path)) {
        snprintf(err, errlen, "log file name too long");
        return -1;
    }
    int fd = log_open_path(path, err, errlen);
    if (fd < 0)
        return -1;
    memcpy(log_path, path, strlen(path) + 1);
    log_fd = fd;
    return 0;
}

int log_reopen(char *err, size_t errlen)
{
    if (!log_path[0])
        return 0;
    int fd = log_open_path(log_path, err, errlen);
    if (fd < 0)
        return -1;
    /* dup3 swaps the file under log_fd at once: a writer on another thread
     * writes its whole line to the old file or to the new one. */
    int rc = dup3(fd, log_fd, O_CLOEXEC) < 0 ? -1 : 0;
    if (rc < 0)
        snprintf(err, errlen, "cannot reopen log file %s: %s", log_path, strerror(errno));
    close(fd);
    return rc;
}

/* ---- one line, built in a fixed buffer ---- */

/* Room kept at the end for what closes a line ("}\n"), so that a long
 * event is cut but still well-formed. */
#define LOG_LINE  8192
#define LOG_CLOSE 2

typedef struct {
    char p[LOG_LINE];
    size_t len;
    int full; /* something did not fit */
} log_line;

static int line_put(log_line *l, const char *s, size_t n)
{
    if (l->full || l->len + n > LOG_LINE - LOG_CLOSE) {
        l->full = 1;
        return -1;
    }
    memcpy(l->p + l->len, s, n);
    l->len += n;
    return 0;
}

static int line_puts(log_line *l, const char *s)
{
    return line_put(l, s, strlen(s));
}

/* Bytes of the well-formed UTF-8 sequence at s (at most n bytes), 0 if
 * there is none. */
static size_t log_utf8_len(const unsigned char *s, size_t n)
{
    size_t k = s[0] < 0xC0 ? 0 : s[0] < 0xE0 ? 2 : s[0] < 0xF0 ? 3 : s[0] < 0xF8 ? 4 : 0;
    if (!k || k > n || utf8_count((const char *)s, k) != 1)
        return 0;
    return k;
}

/* Does this value need quotes in a text line? */
static int log_text_bare(const char *s, size_t n)
{
    if (!n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= ' ' || ch == '"' || ch == '\\' || ch == '=' || ch >= 0x7F)
            return 0;
    }
    return 1;
}

/* s[0..n) escaped: for JSON (a JSON string body; invalid UTF-8 becomes
 * U+FFFD) or for text (\xHH for bytes that are not UTF-8), control
 * characters escaped in both so that an event stays on one line. quotes:
 * escape '"' too. Appends what fits, plus `tail` (which always fits if the
 * line had room for it before): a string cut short is still closed. */
static void line_escaped(log_line *l, const char *s, size_t n, int json, int quotes,
                         const char *tail)
{
    size_t tlen = strlen(tail);
    for (size_t i = 0; i < n && !l->full;) {
        unsigned char ch = (unsigned char)s[i];
        char esc[8];
        const char *u = esc;
        size_t ulen, step = 1;
        if (ch == '"' && quotes) {
            u = "\\\"", ulen = 2;
        } else if (ch == '\\' && (quotes || json)) {
            u = "\\\\", ulen = 2;
        } else if (ch == '\n') {
            u = "\\n", ulen = 2;
        } else if (ch == '\r') {
            u = "\\r", ulen = 2;
        } else if (ch == '\t') {
            u = "\\t", ulen = 2;
        } else if (ch < 0x20 || ch == 0x7F) {
            ulen = (size_t)snprintf(esc, sizeof(esc), json ? "\\u%04x" : "\\x%02x", ch);
        } else if (ch < 0x80) {
            u = s + i, ulen = 1;
        } else if ((step = log_utf8_len((const unsigned char *)s + i, n - i)) != 0) {
            /* C1 controls (U+0080-009F) move terminals about too. */
            if (step == 2 && ch == 0xC2 && (unsigned char)s[i + 1] < 0xA0)
                ulen = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", (unsigned char)s[i + 1]);
            else
                u = s + i, ulen = step;
        } else {
            step = 1;
            if (json)
                u = "\\ufffd", ulen = 6;
            else
                ulen = (size_t)snprintf(esc, sizeof(esc), "\\x%02x", ch);
        }
        if (l->len + ulen + tlen > LOG_LINE - LOG_CLOSE) {
            l->full = 1;
            break;
        }
        memcpy(l->p + l->len, u, ulen);
        l->len += ulen;
        i += step;
    }
    if (l->len + tlen <= LOG_LINE - LOG_CLOSE) {
        memcpy(l->p + l->len, tail, tlen);
        l->len += tlen;
    }
}

static void line_json_str(log_line *l, const char *s, size_t n)
{
    if (line_put(l, "\"", 1) == 0)
        line_escaped(l, s, n, 1, 1, "\"");
}

/* `,"key":value` in JSON, ` key=value` in text; a field that does not fit
 * whole is left out, except a string value, which is cut. */
static void line_field(log_line *l, const char *key, const char *str, size_t slen, int is_num,
                       unsigned long long num)
{
    size_t save = l->len;
    char nb[24];
    int json = log_fmt == LOG_JSON;
    if (json ? line_puts(l, ",\"") || line_puts(l, key) || line_puts(l, "\":")
             : line_puts(l, " ") || line_puts(l, key) || line_puts(l, "="))
        goto undo;
    if (is_num) {
        snprintf(nb, sizeof(nb), "%llu", num);
        if (line_puts(l, nb))
            goto undo;
    } else if (json) {
        if (l->len + 2 > LOG_LINE - LOG_CLOSE)
            goto undo;
        line_json_str(l, str, slen);
    } else if (log_text_bare(str, slen)) {
        if (line_put(l, str, slen))
            goto undo;
    } else {
        if (l->len + 2 > LOG_LINE - LOG_CLOSE || line_put(l, "\"", 1))
            goto undo;
        line_escaped(l, str, slen, 0, 1, "\"");
    }
    return;
undo:
    l->len = save;
    l->full = 1;
}

static void line_begin(log_line *l, log_level level)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    l->len = 0;
    l->full = 0;
    int n = snprintf(l->p, LOG_LINE,
                     log_fmt == LOG_JSON ? "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\","
                                           "\"level\":\"%s\",\"msg\":"
                                         : "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(tv.tv_usec / 1000), log_tags[level]);
    l->len = (size_t)n;
}

static void line_end(log_line *l)
{
    /* LOG_CLOSE bytes are always free here. */
    if (log_fmt == LOG_JSON)
        l->p[l->len++] = '}';
    l->p[l->len++] = '\n';
    ssize_t w = write(log_fd, l->p, l->len);
    (void)w;
}

static int log_key_ok(const char *s, size_t n)
{
    if (!n || n > 32)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || s[i] == '_' || (s[i] >= '0' && s[i] <= '9')))
            return 0;
    return 1;
}

/* A message "audit k=v k=v ..." from a caller not yet on log_audit: in
 * JSON, its pairs become fields (numbers where the value is all digits).
 * 0 if done, -1 if the message has another shape. */
static int log_json_audit_text(log_line *l, const char *m, size_t n)
{
    if (n < 7 || memcmp(m, "audit ", 6) != 0)
        return -1;
    /* Check the whole shape first: a value with a space makes it ambiguous. */
    for (size_t i = 6; i < n;) {
        size_t e = i;
        while (e < n && m[e] != ' ')
            e++;
        const char *eq = memchr(m + i, '=', e - i);
        if (!eq || !log_key_ok(m + i, (size_t)(eq - (m + i))))
            return -1;
        i = e + 1;
    }
    line_json_str(l, "audit", 5);
    for (size_t i = 6; i < n;) {
        size_t e = i;
        while (e < n && m[e] != ' ')
            e++;
        const char *eq = memchr(m + i, '=', e - i);
        char key[40];
        size_t klen = (size_t)(eq - (m + i)), vlen = (size_t)(m + e - (eq + 1));
        memcpy(key, m + i, klen);
        key[klen] = '\0';
        int digits = vlen > 0 && vlen < 16 && (eq[1] != '0' || vlen == 1);
        for (size_t k = 0; k < vlen && digits; k++)
            digits = eq[1 + k] >= '0' && eq[1 + k] <= '9';
        unsigned long long num = 0;
        for (size_t k = 0; k < vlen && digits; k++)
            num = num * 10 + (unsigned long long)(eq[1 + k] - '0');
        line_field(l, key, eq + 1, vlen, digits, num);
        i = e + 1;
    }
    return 0;
}

void log_msg(log_level level, const char *fmt, ...)
{
    if (level < log_min)
        return;
    log_line l;
    char msg[LOG_LINE];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    size_t mlen = m < 0 ? 0 : (size_t)m >= sizeof(msg) ? sizeof(msg) - 1 : (size_t)m;
    line_begin(&l, level);
    if (log_fmt == LOG_JSON) {
        if (log_json_audit_text(&l, msg, mlen) < 0)
            line_json_str(&l, msg, mlen);
    } else {
        line_escaped(&l, msg, mlen, 0, 0, "");
    }
    line_end(&l);
}

void log_audit_fields(const char *event, const log_field *f, size_t n)
{
    if (LOG_INFO < log_min)
        return;
    log_line l;
    line_begin(&l, LOG_INFO);
    if (log_fmt == LOG_JSON)
        line_json_str(&l, "audit", 5);
    else
        line_puts(&l, "audit");
    line_field(&l, "event", event, strlen(event), 0, 0);
    for (size_t i = 0; i < n; i++) {
        if (!f[i].key)
            continue;
        const char *s = f[i].str ? f[i].str : "";
        line_field(&l, f[i].key, s, strlen(s), f[i].is_num, f[i].num);
    }
    line_end(&l);
}
