/*
 * histfile: the terminal client's command history across runs, in
 * ~/.parley/history (mode 0600, one line per command, oldest first). Each
 * line is appended as it is run, so a killed client loses nothing; the file
 * is cut back to its newest lines when it grows well past them. The caller
 * keeps passwords out (cmd_history_len()).
 */
#ifndef PARLEY_CLIENT_HISTFILE_H
#define PARLEY_CLIENT_HISTFILE_H

#include <stddef.h>

enum { HISTFILE_KEEP = 1000 }; /* lines loaded at start */

/* ~/.parley/history into buf, making ~/.parley (0700) if needed. 0 or -1. */
int histfile_path(char *buf, size_t len);
/* Calls add for each of the newest HISTFILE_KEEP lines of path, oldest
 * first; rewrites the file with only those when it holds many more. */
void histfile_load(const char *path, int (*add)(const char *line));
/* Appends the first len bytes of line. Best effort. */
void histfile_append(const char *path, const char *line, size_t len);

#endif
