/* secret: see secret.h. */
#include "common/secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int secret_read_line(const char *path, char *buf, size_t len, char *err, size_t errlen)
{
    int rc = -1;
    char tmp[1024];
    ssize_t n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s is not a regular file", path);
        goto out;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(err, errlen, "%s may be read by others (mode %03o): chmod 600 it", path,
                 (unsigned)(st.st_mode & 0777));
        goto out;
    }
    for (;;) {
        ssize_t k = read(fd, tmp + n, sizeof(tmp) - 1 - (size_t)n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            goto out;
        }
        if (k == 0 || (size_t)(n += k) == sizeof(tmp) - 1)
            break;
    }
    tmp[n] = '\0';
    size_t line = strcspn(tmp, "\r\n");
    if (line == 0 || line >= len) {
        snprintf(err, errlen, "%s: %s", path, line == 0 ? "empty" : "line too long");
        goto out;
    }
    memcpy(buf, tmp, line);
    buf[line] = '\0';
    rc = 0;
out:
    /* The secret does not linger on the stack. */
    explicit_bzero(tmp, sizeof(tmp));
    close(fd);
    return rc;
}

int secret_is_userpass(const char *s)
{
    const char *colon = s ? strchr(s, ':') : NULL;
    return colon && colon != s && colon[1] != '\0';
}
