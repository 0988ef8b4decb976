/*
 * secret: reading the cluster's shared secrets (ZooKeeper and Redis
 * credentials, the bus key) from files an operator made for them. A secret
 * file that others may read is refused: a password in a world-readable file
 * protects nothing, and saying so at start beats finding out later.
 */
#ifndef PARLEY_SECRET_H
#define PARLEY_SECRET_H

#include <stddef.h>

/* Reads the first line of path (a USER:PASS pair, say) into buf without its
 * line end. The file must be a regular file that neither group nor others
 * may read or write, and the line must fit and be non-empty. 0, or -1 with
 * the reason in err. */
int secret_read_line(const char *path, char *buf, size_t len, char *err, size_t errlen);

/* Reads exactly len bytes, the whole of path (a key of random bytes), into
 * buf; same rules for the file. 0, or -1 with the reason in err. */
int secret_read_key(const char *path, unsigned char *buf, size_t len, char *err, size_t errlen);

/* Whether s is "USER:PASS" with both parts non-empty. */
int secret_is_userpass(const char *s);

#endif
