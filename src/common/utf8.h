/*
 * utf8: validation of text that arrives from the network.
 */
#ifndef PARLEY_UTF8_H
#define PARLEY_UTF8_H

#include <stddef.h>

/* Number of code points in s[0..len) if it is well-formed UTF-8 (no
 * overlongs, no surrogates, nothing above U+10FFFF, no NUL); -1 otherwise. */
long utf8_count(const char *s, size_t len);

#endif
