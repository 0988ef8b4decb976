/*
 * log: leveled, timestamped events, one per line, on stderr or in a file
 * (--log-file, reopened on SIGHUP for logrotate). Each line is written with a
 * single write() so lines from several threads do not interleave.
 *
 * Two formats (--log-format): text, `TS LEVEL message`, and json, one object
 * per line with the stable keys ts, level and msg. Audit events (log_audit)
 * carry named fields: in text `audit key=value ...` (a value with a space, a
 * quote or a control character is quoted and escaped), in json the same keys
 * as members of the object, numbers as numbers. A log_msg line of the old
 * form "audit key=value ..." is split into fields in json too.
 */
#ifndef PARLEY_LOG_H
#define PARLEY_LOG_H

#include <stddef.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;
typedef enum { LOG_TEXT = 0, LOG_JSON } log_format;

/* Sets the lowest level printed (default LOG_INFO). Call before threads start. */
void log_set_level(log_level level);
/* Parses "debug", "info", "warn" or "error"; -1 if none. */
int log_level_parse(const char *s, log_level *out);
/* Text (the default) or JSON lines. Call before threads start. */
void log_set_format(log_format format);
/* Parses "text" or "json"; -1 if neither. */
int log_format_parse(const char *s, log_format *out);
/* Writes to path (appending, created mode 0640) instead of stderr. Call
 * before threads start. 0, or -1 with the reason in err. */
int log_open_file(const char *path, char *err, size_t errlen);
/* Opens the file again under its name (after logrotate moved it), for
 * SIGHUP; lines written meanwhile by other threads go to one or the other.
 * 0 (also when logging to stderr), or -1 with the reason in err: the old
 * file is kept then. */
int log_reopen(char *err, size_t errlen);

void log_msg(log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

/* One named value of an audit event. str may hold any bytes (a user name
 * from the wire); it is escaped in both formats. A field whose key is NULL
 * (LOG_SKIP) is left out: for a field that only some events of a kind have. */
typedef struct {
    const char *key;
    const char *str; /* a string (NULL: empty), unless is_num */
    unsigned long long num;
    int is_num;
} log_field;

#define LOG_STR(k, v) ((log_field){.key = (k), .str = (v), .num = 0, .is_num = 0})
#define LOG_U64(k, v)                                                                              \
    ((log_field){.key = (k), .str = NULL, .num = (unsigned long long)(v), .is_num = 1})
#define LOG_SKIP ((log_field){.key = NULL, .str = NULL, .num = 0, .is_num = 0})

/* An info event "audit" whose first field is event=name, then the fields. */
void log_audit_fields(const char *event, const log_field *f, size_t n);
#define log_audit(event, ...)                                                                      \
    do {                                                                                           \
        const log_field log_f_[] = {__VA_ARGS__};                                                  \
        log_audit_fields((event), log_f_, sizeof(log_f_) / sizeof(log_f_[0]));                     \
    } while (0)

#endif
