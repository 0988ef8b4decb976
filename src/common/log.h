/*
 * log: leveled, timestamped lines on stderr. One line per call, written with
 * a single write() so lines from several threads do not interleave.
 */
#ifndef PARLEY_LOG_H
#define PARLEY_LOG_H

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

/* Sets the lowest level printed (default LOG_INFO). Call before threads start. */
void log_set_level(log_level level);
/* Parses "debug", "info", "warn" or "error"; -1 if none. */
int log_level_parse(const char *s, log_level *out);
void log_msg(log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
