/* secret: see secret.h. */
#include "common/secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Reads up to cap bytes of a private regular file. The count, or -1 with
 * the reason in err. */
static ssize_t secret_slurp(const char *path, void *buf, size_t cap, char *err, size_t errlen)
{
    ssize_t n = -1;
    size_t got = 0;
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
    while (got < cap) {
        ssize_t k = read(fd, (char *)buf + got, cap - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            goto out;
        }
        if (k == 0)
            break;
        got += (size_t)k;
    }
    n = (ssize_t)got;
out:
    close(fd);
    return n;
}

int secret_read_line(const char *path, char *buf, size_t len, char *err, size_t errlen)
{
    int rc = -1;
    char tmp[1024];
    ssize_t n = secret_slurp(path, tmp, sizeof(tmp) - 1, err, errlen);
    if (n < 0)
        return -1;
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
    return rc;
}

int secret_read_key(const char *path, unsigned char *buf, size_t len, char *err, size_t errlen)
{
    unsigned char tmp[256];
    if (len >= sizeof(tmp)) {
        snprintf(err, errlen, "key too long");
        return -1;
    }
    /* One byte more than wanted tells a longer file from the right one. */
    ssize_t n = secret_slurp(path, tmp, len + 1, err, errlen);
    int rc = -1;
    if (n >= 0 && (size_t)n != len)
        snprintf(err, errlen, "%s must hold exactly %zu bytes (head -c %zu /dev/urandom)", path,
                 len, len);
    else if (n >= 0) {
        memcpy(buf, tmp, len);
        rc = 0;
    }
    explicit_bzero(tmp, sizeof(tmp));
    return rc;
}

int secret_is_userpass(const char *s)
{
    const char *colon = s ? strchr(s, ':') : NULL;
    return colon && colon != s && colon[1] != '\0';
}
