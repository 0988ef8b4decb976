/*
 * utf8: validation of text that arrives from the network.
 */
#ifndef PARLEY_UTF8_H
#define PARLEY_UTF8_H

#include <stddef.h>

/* Number of code points in s[0..len) if it is well-formed UTF-8 (no
 * overlongs, no surrogates, nothing above U+10FFFF, no NUL); -1 otherwise. */
long utf8_count(const char *s, size_t len);

/* 0 if s[0..len) (valid UTF-8) has nothing that hides or disguises text
 * where a name is shown: no C0 or C1 control (U+0000-001F, U+007F-009F) and
 * no bidirectional control (U+061C, U+200E-200F, U+202A-202E, U+2066-2069);
 * -1 otherwise. */
int utf8_name_safe(const char *s, size_t len);

#endif
