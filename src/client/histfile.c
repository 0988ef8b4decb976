/*
 * histfile: see histfile.h.
 */
#include "client/histfile.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int histfile_path(char *buf, size_t len)
{
    const char *home = getenv("HOME");
    if (!home || !home[0]) {
        struct passwd *pw = getpwuid(getuid());
        home = pw ? pw->pw_dir : NULL;
    }
    if (!home || snprintf(buf, len, "%s/.parley", home) >= (int)len)
        return -1;
    if (mkdir(buf, 0700) < 0 && errno != EEXIST)
        return -1;
    return snprintf(buf, len, "%s/.parley/history", home) < (int)len ? 0 : -1;
}

/* Writes lines[first..n) to path through a temporary file and a rename, so
 * a crash leaves the old file or the new one. */
static void histfile_rewrite(const char *path, char **lines, size_t first, size_t n)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    FILE *fp = fdopen(fd, "w");
    if (!fp) {
        close(fd);
        unlink(tmp);
        return;
    }
    for (size_t i = first; i < n; i++)
        fprintf(fp, "%s\n", lines[i]);
    if (fclose(fp) != 0 || rename(tmp, path) < 0)
        unlink(tmp);
}

void histfile_load(const char *path, int (*add)(const char *line))
{
    FILE *fp = fopen(path, "re");
    if (!fp)
        return;
    char **lines = NULL;
    size_t n = 0, cap = 0;
    char *line = NULL;
    size_t linecap = 0;
    ssize_t got;
    while ((got = getline(&line, &linecap, fp)) > 0) {
        if (line[got - 1] == '\n')
            line[--got] = '\0';
        if (got == 0)
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 256;
            char **p = realloc(lines, ncap * sizeof(*p));
            if (!p)
                break;
            lines = p;
            cap = ncap;
        }
        if (!(lines[n] = strdup(line)))
            break;
        n++;
    }
    free(line);
    fclose(fp);
    size_t first = n > HISTFILE_KEEP ? n - HISTFILE_KEEP : 0;
    for (size_t i = first; i < n; i++)
        add(lines[i]);
    if (n > 2 * HISTFILE_KEEP)
        histfile_rewrite(path, lines, first, n);
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
}

void histfile_append(const char *path, const char *line, size_t len)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    /* A file made by an older client, or by hand, is made private too. */
    (void)fchmod(fd, 0600);
    char *buf = malloc(len + 1);
    if (buf) {
        memcpy(buf, line, len);
        buf[len] = '\n';
        (void)!write(fd, buf, len + 1);
        free(buf);
    }
    close(fd);
}
