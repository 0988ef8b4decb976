/*
 * trust: see trust.h.
 */
#include "client/trust.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef enum {
    TRUST_STORE, /* the system's CAs, else trust on first use */
    TRUST_CA,    /* --ca FILE */
    TRUST_PIN,   /* --fingerprint */
    TRUST_ANY,   /* --insecure */
} trust_mode;

struct trust {
    trust_mode mode;
    tls_ctx *tls;
    uint8_t pin[TLS_FP_LEN];
    bool warned; /* the changed-certificate warning was printed */
};

trust *trust_new(const char *ca_file, const char *fingerprint, bool insecure, char *err,
                 size_t errlen)
{
    trust *t = calloc(1, sizeof(*t));
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (insecure) {
        t->mode = TRUST_ANY;
    } else if (fingerprint) {
        t->mode = TRUST_PIN;
        if (tls_fp_parse(fingerprint, t->pin) < 0) {
            snprintf(err, errlen,
                     "--fingerprint: expected a SHA-256 fingerprint (64 hex digits, colons "
                     "allowed), got '%.100s'",
                     fingerprint);
            goto fail;
        }
    } else if (ca_file) {
        t->mode = TRUST_CA;
    }
    /* The system's store is loaded only where it can decide something. */
    t->tls = tls_client_new(t->mode == TRUST_CA ? ca_file : NULL, err, errlen);
    if (!t->tls)
        goto fail;
    return t;
fail:
    trust_free(t);
    return NULL;
}

void trust_free(trust *t)
{
    if (!t)
        return;
    tls_ctx_free(t->tls);
    free(t);
}

tls_ctx *trust_tls(const trust *t)
{
    return t->tls;
}

/* ~/.parley/known_servers into buf (making ~/.parley if asked). 0 or -1. */
static int trust_known_path(char *buf, size_t len, bool make_dir)
{
    const char *home = getenv("HOME");
    if (!home || !*home) {
        struct passwd *pw = getpwuid(getuid());
        home = pw ? pw->pw_dir : NULL;
    }
    if (!home)
        return -1;
    if (snprintf(buf, len, "%s/.parley", home) >= (int)len)
        return -1;
    if (make_dir && mkdir(buf, 0700) < 0 && errno != EEXIST)
        return -1;
    return snprintf(buf, len, "%s/.parley/known_servers", home) < (int)len ? 0 : -1;
}

/* The key of a server in the file: HOST:PORT, an IPv6 address in
 * brackets. */
static void trust_key(char *buf, size_t len, const char *host, const char *port)
{
    if (strchr(host, ':'))
        snprintf(buf, len, "[%s]:%s", host, port);
    else
        snprintf(buf, len, "%s:%s", host, port);
}

/* Finds key's line: 1 with its fingerprint and line number, 0 if there is
 * none (or no file). Lines are "KEY FINGERPRINT"; '#' starts a comment. */
static int trust_lookup(const char *path, const char *key, uint8_t fp[TLS_FP_LEN], int *lineno)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[1024];
    int n = 0, found = 0;
    while (!found && fgets(line, sizeof(line), f)) {
        n++;
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '#' || !*p)
            continue;
        char *k = strtok(p, " \t\r\n"), *v = strtok(NULL, " \t\r\n");
        if (k && v && strcmp(k, key) == 0 && tls_fp_parse(v, fp) == 0) {
            *lineno = n;
            found = 1;
        }
    }
    fclose(f);
    return found;
}

static int trust_remember(const char *path, const char *key, const uint8_t fp[TLS_FP_LEN])
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    char text[TLS_FP_TEXT], line[1024];
    tls_fp_format(fp, text);
    struct stat st;
    int len = 0;
    if (fstat(fd, &st) == 0 && st.st_size == 0)
        len = snprintf(line, sizeof(line),
                       "# parley: the SHA-256 fingerprint of each server's certificate, "
                       "first seen there\n");
    len += snprintf(line + len, sizeof(line) - (size_t)len, "%s %s\n", key, text);
    /* One write: appends of several clients at once do not interleave. */
    int rc = write(fd, line, (size_t)len) == len ? 0 : -1;
    if (close(fd) < 0)
        rc = -1;
    return rc;
}

/* The default: CA-verified, or known, or new (then remembered). */
static int trust_tofu(trust *t, const tls_conn *tc, const uint8_t fp[TLS_FP_LEN], const char *host,
                      const char *port, char *err, size_t errlen)
{
    char why[256], path[PATH_MAX], key[600], now[TLS_FP_TEXT], was[TLS_FP_TEXT];
    if (tls_peer_verified(tc, why, sizeof(why)) == 0)
        return 0;
    trust_key(key, sizeof(key), host, port);
    tls_fp_format(fp, now);
    if (trust_known_path(path, sizeof(path), true) < 0) {
        snprintf(err, errlen,
                 "refused: the certificate is not trusted (%s), and there is no home "
                 "directory to remember it in",
                 why);
        return -1;
    }
    uint8_t known[TLS_FP_LEN];
    int lineno = 0;
    if (trust_lookup(path, key, known, &lineno)) {
        if (memcmp(known, fp, TLS_FP_LEN) == 0)
            return 0;
        tls_fp_format(known, was);
        if (!t->warned)
            fprintf(stderr,
                    "parley: WARNING: the certificate of %s has changed!\n"
                    "parley:   it is now  SHA-256 %s\n"
                    "parley:   it was     SHA-256 %s (%s, line %d)\n"
                    "parley: Someone may be intercepting the connection, or the server has a "
                    "new certificate.\n"
                    "parley: If you know it has, delete that line and connect again.\n",
                    key, now, was, path, lineno);
        t->warned = true;
        snprintf(err, errlen, "refused: the server's certificate has changed (see above)");
        return -1;
    }
    if (trust_remember(path, key, fp) < 0)
        fprintf(stderr, "parley: cannot write %s: %s\n", path, strerror(errno));
    fprintf(stderr,
            "parley: %s is new, and its certificate is not vouched for by a known CA (%s).\n"
            "parley: Trusting it on first use: SHA-256 %s\n"
            "parley: remembered in %s; a different certificate there will be refused.\n",
            key, why, now, path);
    return 0;
}

int trust_check(trust *t, const tls_conn *tc, const char *host, const char *port, char *err,
                size_t errlen)
{
    uint8_t fp[TLS_FP_LEN];
    char why[256];
    if (t->mode == TRUST_ANY)
        return 0;
    if (tls_peer_fingerprint(tc, fp) < 0) {
        snprintf(err, errlen, "refused: the server sent no certificate");
        return -1;
    }
    switch (t->mode) {
    case TRUST_PIN: {
        if (memcmp(fp, t->pin, TLS_FP_LEN) == 0)
            return 0;
        char text[TLS_FP_TEXT];
        tls_fp_format(fp, text);
        snprintf(err, errlen, "refused: the certificate's SHA-256 is %s, not the --fingerprint",
                 text);
        return -1;
    }
    case TRUST_CA:
        if (tls_peer_verified(tc, why, sizeof(why)) == 0)
            return 0;
        snprintf(err, errlen, "refused: the certificate does not verify with --ca (%s)", why);
        return -1;
    default:
        return trust_tofu(t, tc, fp, host, port, err, errlen);
    }
}
