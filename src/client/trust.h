/*
 * trust: whether the client believes the server at the other end of a TLS
 * connection is the one it meant. One of, by the options:
 *  - --fingerprint FP: the certificate's SHA-256 must be FP, nothing else;
 *  - --ca FILE: the chain must verify against FILE and name the host;
 *  - --insecure: anything (tests only);
 *  - otherwise a certificate that verifies against the system's CA store and
 *    names the host is trusted; any other is trusted on first use, as ssh
 *    does: its fingerprint is remembered in ~/.parley/known_servers for
 *    HOST:PORT, and a later connection whose certificate differs from the
 *    remembered one is refused.
 */
#ifndef PARLEY_CLIENT_TRUST_H
#define PARLEY_CLIENT_TRUST_H

#include <stdbool.h>
#include <stddef.h>

#include "net/tls.h"

typedef struct trust trust;

/* From the options (NULL / false when not given). NULL with the reason in
 * err for a bad fingerprint or CA file. */
trust *trust_new(const char *ca_file, const char *fingerprint, bool insecure, char *err,
                 size_t errlen);
void trust_free(trust *t);

/* The client TLS context connections are made with. */
tls_ctx *trust_tls(const trust *t);

/* After the handshake with host:port: 0 to go on, or -1 with a short
 * reason in err (a refused changed certificate is explained on stderr, once
 * per run). A first use is remembered and said on stderr. */
int trust_check(trust *t, const tls_conn *tc, const char *host, const char *port, char *err,
                size_t errlen);

#endif
