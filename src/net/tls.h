/*
 * tls: TLS 1.2 and 1.3 (OpenSSL 3) over a non-blocking socket, for conn (the
 * server's connections) and for the terminal client. The only module that
 * includes OpenSSL.
 *
 * A tls_ctx holds what many connections share: the certificate and key of
 * a server, or the trust store of a client. A server's tls_ctx can be
 * reloaded from its files while connections use it (SIGHUP): connections
 * made afterwards get the new certificate, the others keep theirs.
 *
 * A tls_conn is one connection's TLS state over a socket it does not own.
 * It reads and writes the socket directly (no BIO buffers of its own), and
 * gives back its record buffers whenever they are empty, so an idle
 * connection holds only OpenSSL's per-connection structures.
 *
 * Reads and writes never block: TLS_WANT_READ / TLS_WANT_WRITE say which
 * readiness of the socket the call waits for (a read may need to write, a
 * write to read); call it again with the same arguments (a write: at least
 * as many bytes, the same ones first) when the socket has it. The handshake
 * runs inside the first reads and writes, or through tls_handshake().
 *
 * tls_ctx functions are thread-safe; a tls_conn belongs to one thread.
 */
#ifndef PARLEY_TLS_H
#define PARLEY_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct tls_ctx tls_ctx;
typedef struct tls_conn tls_conn;

enum {
    TLS_FP_LEN = 32,   /* a SHA-256 fingerprint */
    TLS_FP_TEXT = 96,  /* its text, "AB:CD:...:EF", with the NUL */
    TLS_RECORD = 16384 /* the largest plaintext of one record */
};

/* Results of the I/O calls below 0. */
enum { TLS_ERROR = -1, TLS_WANT_READ = -2, TLS_WANT_WRITE = -3 };

/* A server context from a PEM certificate (chain) file and key file. NULL
 * with the reason in err. */
tls_ctx *tls_server_new(const char *cert_file, const char *key_file, char *err, size_t errlen);
/* Reads the server's files again. 0, or -1 with the reason in err, in
 * which case the certificate served so far stays. */
int tls_server_reload(tls_ctx *t, char *err, size_t errlen);
/* The fingerprint of the certificate a server serves to new connections. */
void tls_server_fingerprint(tls_ctx *t, uint8_t fp[TLS_FP_LEN]);

/* A client context trusting the CA certificates of ca_file, or the
 * system's store if ca_file is NULL. The handshake does not fail on an
 * untrusted certificate: the caller decides with tls_peer_verified() (and
 * may trust a pinned fingerprint instead). NULL with the reason in err. */
tls_ctx *tls_client_new(const char *ca_file, char *err, size_t errlen);

void tls_ctx_free(tls_ctx *t);

/* ---- mutual TLS between the nodes of a cluster ----
 *
 * Every node holds a certificate signed by the cluster's own CA that names
 * what the node is in its subject's organizational unit (OU): a "gateway"
 * speaks for users, a "service" node serves them; a process that is both
 * carries both OU entries. Only the cluster CA is trusted, not the system's
 * store. There is no host-name check: the CA signs node certificates only,
 * the addresses come from the registry, and what a peer may do follows from
 * its role rather than from where it is (docs/security.md). */
#define TLS_ROLE_GATEWAY "gateway"
#define TLS_ROLE_SERVICE "service"
/* parleyctl's certificate: may call admin methods only (rpc/server.c). */
#define TLS_ROLE_ADMIN "admin"

/* A context for one side of node-to-node TLS, presenting cert_file and
 * key_file and trusting ca_file alone. A server requires a client
 * certificate that the CA verifies: without one the handshake fails. A
 * client requires the same of the server's. If peer_role is not NULL the
 * peer's certificate must also carry it, else the handshake fails. NULL
 * with the reason in err. Such a context cannot be reloaded. */
tls_ctx *tls_node_new(int server, const char *ca_file, const char *cert_file, const char *key_file,
                      const char *peer_role, char *err, size_t errlen);
/* 1 if the certificate the context presents carries role, else 0. */
int tls_ctx_has_role(tls_ctx *t, const char *role);

/* Writes a new self-signed certificate for the names (host names or IP
 * addresses; the first is its common name) and its key (ECDSA P-256,
 * mode 0600) to the two paths, each through a temporary file renamed into
 * place. 0, or -1 with the reason in err. */
int tls_make_self_signed(const char *cert_file, const char *key_file, const char *const *names,
                         size_t nnames, char *err, size_t errlen);

/* TLS over socket fd (not owned, non-blocking), as t's side: a server
 * accepts, a client connects and expects host (a name or an IP address, or
 * NULL for none) in the certificate. NULL on failure (tls_error() says
 * why). */
tls_conn *tls_conn_new(tls_ctx *t, int fd, const char *host);
/* Sends close_notify if the handshake was done and the socket takes it at
 * once, then frees; the socket stays open. NULL is allowed. */
void tls_conn_free(tls_conn *tc);

/* Runs the handshake: 1 when done, TLS_WANT_*, or TLS_ERROR. */
int tls_handshake(tls_conn *tc);
/* Up to len bytes of plaintext (at most one record's worth): > 0, 0 when
 * the peer closed, TLS_WANT_*, or TLS_ERROR. */
ssize_t tls_read(tls_conn *tc, void *buf, size_t len);
/* Writes len > 0 bytes: how many (all of them, up to TLS_RECORD), TLS_WANT_*
 * or TLS_ERROR. After a TLS_WANT_*, call again with the same bytes first. */
ssize_t tls_write(tls_conn *tc, const void *buf, size_t len);
/* Nonzero if bytes already read from the socket wait inside (a record not
 * yet returned): the socket will not signal them, so read again. */
int tls_pending(const tls_conn *tc);

/* Client side, after the handshake: 0 if the peer's certificate chain
 * verified against the context's trust store and names the host; else -1
 * with the reason in why. */
int tls_peer_verified(const tls_conn *tc, char *why, size_t whylen);
/* After the handshake: 1 if the peer's certificate verified against the
 * context's trust store and carries role (an OU entry equal to it), else 0.
 * Meaningful where the handshake requires verification (tls_node_new). */
int tls_peer_has_role(const tls_conn *tc, const char *role);
/* The SHA-256 fingerprint of the peer's certificate. 0, or -1 if it sent
 * none. */
int tls_peer_fingerprint(const tls_conn *tc, uint8_t fp[TLS_FP_LEN]);
/* "TLSv1.3" or "TLSv1.2". */
const char *tls_version(const tls_conn *tc);

/* Why the last call on this thread that failed with TLS_ERROR (or a NULL
 * tls_conn_new) failed. */
const char *tls_error(void);

/* Fingerprints as text: upper-case hex pairs joined by ':'. Parsing also
 * takes lower case, no colons, and a "SHA256:" prefix. 0 or -1. */
void tls_fp_format(const uint8_t fp[TLS_FP_LEN], char out[TLS_FP_TEXT]);
int tls_fp_parse(const char *text, uint8_t fp[TLS_FP_LEN]);

#endif
