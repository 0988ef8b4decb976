#include "net/tls.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

struct tls_ctx {
    int server;
    pthread_mutex_t lock; /* guards ssl and fp, which a reload replaces */
    SSL_CTX *ssl;
    uint8_t fp[TLS_FP_LEN];
    char *cert_file, *key_file; /* a server's, for reloads */
    char *peer_role;            /* node TLS: the role a peer must carry, or NULL */
};

/* A tls_conn is OpenSSL's SSL itself: no wrapper, one allocation less per
 * connection. */
static SSL *tls_ssl(const tls_conn *tc)
{
    return (SSL *)tc;
}

static __thread char tls_err_text[256];

const char *tls_error(void)
{
    return tls_err_text;
}

/* "what: OpenSSL's reason" into buf; empties this thread's error queue, so
 * that the next call's errors are its own. */
static void tls_describe(char *buf, size_t len, const char *what)
{
    unsigned long e = ERR_get_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    if (reason)
        snprintf(buf, len, "%s: %s", what, reason);
    else if (e)
        snprintf(buf, len, "%s: error %lx", what, e);
    else
        snprintf(buf, len, "%s", what);
    ERR_clear_error();
}

static void tls_fail(char *err, size_t errlen, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    tls_describe(err, errlen, what);
}

/* What both sides use: TLS 1.2 and 1.3 only; in 1.2 only forward-secret
 * AEAD suites (1.3 has no others). No renegotiation, no compression, and no
 * session resumption, which would keep sessions (server) or tickets around
 * for clients that do not resume. Record buffers are freed whenever empty. */
static SSL_CTX *tls_ctx_base(int server, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx) {
        tls_fail(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    /* AES-128 first: as safe here, fewer rounds, and SHA-256's state is
     * smaller than SHA-384's in every idle connection. */
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:"
                                      "TLS_AES_256_GCM_SHA384") != 1 ||
        SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM+AES128:ECDHE+CHACHA20:ECDHE+AESGCM") != 1) {
        tls_fail(err, errlen, "cannot configure TLS");
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* A peer that closes without close_notify reads as an end: the frames
     * carry their own lengths, so a cut is seen anyway. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_TICKET);
    /* Partial writes and a moving buffer: conn writes from the front of an
     * evbuffer, which may be rearranged between a write that must wait and
     * its retry (the bytes stay the same). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (server) {
        SSL_CTX_set_num_tickets(ctx, 0);
        SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
        /* Fewer system calls: read what the socket has, not a record
         * header and then its body (conn reads again while tls_pending). */
        SSL_CTX_set_read_ahead(ctx, 1);
    }
    return ctx;
}

/* Loads a certificate (chain) and its key into ctx, and their fingerprint
 * into fp. 0, or -1 with the reason in err. */
static int tls_use_pair(SSL_CTX *ctx, const char *cert_file, const char *key_file,
                        uint8_t fp[TLS_FP_LEN], char *err, size_t errlen)
{
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        tls_fail(err, errlen, "cannot load the certificate %s", cert_file);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        tls_fail(err, errlen, "cannot load the key %s", key_file);
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        tls_fail(err, errlen, "the key %s is not the certificate's (%s)", key_file, cert_file);
        return -1;
    }
    X509 *x = SSL_CTX_get0_certificate(ctx);
    unsigned n = 0;
    if (!x || X509_digest(x, EVP_sha256(), fp, &n) != 1 || n != TLS_FP_LEN) {
        tls_fail(err, errlen, "cannot hash the certificate %s", cert_file);
        return -1;
    }
    return 0;
}

static SSL_CTX *tls_server_load(const char *cert_file, const char *key_file, uint8_t fp[TLS_FP_LEN],
                                char *err, size_t errlen)
{
    SSL_CTX *ctx = tls_ctx_base(1, err, errlen);
    if (ctx && tls_use_pair(ctx, cert_file, key_file, fp, err, errlen) < 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static tls_ctx *tls_ctx_wrap(int server, SSL_CTX *ssl)
{
    tls_ctx *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->server = server;
    t->ssl = ssl;
    pthread_mutex_init(&t->lock, NULL);
    return t;
}

tls_ctx *tls_server_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    uint8_t fp[TLS_FP_LEN];
    SSL_CTX *ssl = tls_server_load(cert_file, key_file, fp, err, errlen);
    if (!ssl)
        return NULL;
    tls_ctx *t = tls_ctx_wrap(1, ssl);
    if (t) {
        t->cert_file = strdup(cert_file);
        t->key_file = strdup(key_file);
    }
    if (!t || !t->cert_file || !t->key_file) {
        snprintf(err, errlen, "out of memory");
        if (!t)
            SSL_CTX_free(ssl);
        tls_ctx_free(t);
        return NULL;
    }
    memcpy(t->fp, fp, sizeof(fp));
    return t;
}

int tls_server_reload(tls_ctx *t, char *err, size_t errlen)
{
    if (!t->cert_file) {
        snprintf(err, errlen, "this TLS context cannot be reloaded");
        return -1;
    }
    uint8_t fp[TLS_FP_LEN];
    SSL_CTX *ssl = tls_server_load(t->cert_file, t->key_file, fp, err, errlen);
    if (!ssl)
        return -1;
    /* Each SSL holds a reference to the context it was made from: the
     * connections made so far keep the old one alive until they end. */
    pthread_mutex_lock(&t->lock);
    SSL_CTX *old = t->ssl;
    t->ssl = ssl;
    memcpy(t->fp, fp, sizeof(fp));
    pthread_mutex_unlock(&t->lock);
    SSL_CTX_free(old);
    return 0;
}

void tls_server_fingerprint(tls_ctx *t, uint8_t fp[TLS_FP_LEN])
{
    pthread_mutex_lock(&t->lock);
    memcpy(fp, t->fp, TLS_FP_LEN);
    pthread_mutex_unlock(&t->lock);
}

tls_ctx *tls_client_new(const char *ca_file, char *err, size_t errlen)
{
    SSL_CTX *ssl = tls_ctx_base(0, err, errlen);
    if (!ssl)
        return NULL;
    /* Verified, but decided on after the handshake (tls_peer_verified),
     * since a pinned or remembered fingerprint may stand in for a CA. */
    SSL_CTX_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    int ok =
        ca_file ? SSL_CTX_load_verify_file(ssl, ca_file) : SSL_CTX_set_default_verify_paths(ssl);
    if (ok != 1) {
        if (ca_file)
            tls_fail(err, errlen, "cannot load CA certificates from %s", ca_file);
        else
            tls_fail(err, errlen, "cannot load the system's CA certificates");
        SSL_CTX_free(ssl);
        return NULL;
    }
    tls_ctx *t = tls_ctx_wrap(0, ssl);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        SSL_CTX_free(ssl);
    }
    return t;
}

void tls_ctx_free(tls_ctx *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ssl);
    pthread_mutex_destroy(&t->lock);
    free(t->cert_file);
    free(t->key_file);
    free(t->peer_role);
    free(t);
}

/* ---- mutual TLS between nodes ---- */

/* 1 if one of the subject's OU entries is exactly role. */
static int tls_cert_has_role(X509 *x, const char *role)
{
    X509_NAME *name = x ? X509_get_subject_name(x) : NULL;
    size_t len = strlen(role);
    if (!name)
        return 0;
    for (int i = -1; (i = X509_NAME_get_index_by_NID(name, NID_organizationalUnitName, i)) >= 0;) {
        const ASN1_STRING *v = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
        if (v && (size_t)ASN1_STRING_length(v) == len &&
            memcmp(ASN1_STRING_get0_data(v), role, len) == 0)
            return 1;
    }
    return 0;
}

/* OpenSSL's chain check, and then for the peer's own certificate (depth 0)
 * the role its context asks for: a node with the wrong role fails the
 * handshake like one with a bad chain. */
static int tls_node_verify(int ok, X509_STORE_CTX *store)
{
    if (!ok || X509_STORE_CTX_get_error_depth(store) != 0)
        return ok;
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    const char *role = ssl ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
    if (role && !tls_cert_has_role(X509_STORE_CTX_get_current_cert(store), role)) {
        X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    return 1;
}

tls_ctx *tls_node_new(int server, const char *ca_file, const char *cert_file, const char *key_file,
                      const char *peer_role, char *err, size_t errlen)
{
    uint8_t fp[TLS_FP_LEN];
    tls_ctx *t = NULL;
    SSL_CTX *ssl = tls_ctx_base(server, err, errlen);
    if (!ssl)
        return NULL;
    if (tls_use_pair(ssl, cert_file, key_file, fp, err, errlen) < 0)
        goto fail;
    if (SSL_CTX_load_verify_file(ssl, ca_file) != 1) {
        tls_fail(err, errlen, "cannot load the cluster CA from %s", ca_file);
        goto fail;
    }
    if (server) {
        /* Tells a client which CA to pick its certificate for. */
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca_file);
        if (!names) {
            tls_fail(err, errlen, "no CA certificate in %s", ca_file);
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ssl, names);
    }
    SSL_CTX_set_verify(ssl, SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                       tls_node_verify);
    t = tls_ctx_wrap(server, ssl);
    if (!t || (peer_role && !(t->peer_role = strdup(peer_role)))) {
        snprintf(err, errlen, "out of memory");
        if (!t)
            SSL_CTX_free(ssl);
        tls_ctx_free(t);
        return NULL;
    }
    SSL_CTX_set_app_data(ssl, t->peer_role);
    memcpy(t->fp, fp, sizeof(fp));
    return t;
fail:
    SSL_CTX_free(ssl);
    return NULL;
}

int tls_ctx_has_role(tls_ctx *t, const char *role)
{
    pthread_mutex_lock(&t->lock);
    int has = tls_cert_has_role(SSL_CTX_get0_certificate(t->ssl), role);
    pthread_mutex_unlock(&t->lock);
    return has;
}

int tls_peer_has_role(const tls_conn *tc, const char *role)
{
    SSL *ssl = tls_ssl(tc);
    X509 *x = SSL_get0_peer_certificate(ssl);
    return x && SSL_get_verify_result(ssl) == X509_V_OK && tls_cert_has_role(x, role);
}

/* ---- a self-signed certificate ---- */

static int tls_is_ip(const char *s)
{
    unsigned char a[16];
    return inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
}

/* Writes the key (pk) or the certificate (x) to path through path.tmp. */
static int tls_save(const char *path, mode_t mode, EVP_PKEY *pk, X509 *x, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        snprintf(err, errlen, "path too long: %.200s", path);
        return -1;
    }
    unlink(tmp); /* left by a start that died midway */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %.400s: %s", tmp, strerror(errno));
        return -1;
    }
    FILE *f = fdopen(fd, "w");
    if (!f) {
        snprintf(err, errlen, "cannot write %.400s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    int ok = pk ? PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) : PEM_write_X509(f, x);
    ok = ok && fflush(f) == 0 && fsync(fd) == 0;
    if (fclose(f) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) < 0) {
        snprintf(err, errlen, "cannot write %.400s: %s", path, strerror(errno ? errno : EIO));
        ERR_clear_error();
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int tls_add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
    if (!ext)
        return -1;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1 ? 0 : -1;
}

int tls_make_self_signed(const char *cert_file, const char *key_file, const char *const *names,
                         size_t nnames, char *err, size_t errlen)
{
    EVP_PKEY *pk = NULL;
    X509 *x = NULL;
    BIGNUM *bn = NULL;
    int rc = -1;
    char san[2048] = "";
    size_t off = 0;

    ERR_clear_error();
    pk = EVP_EC_gen("P-256");
    x = X509_new();
    unsigned char serial[16];
    if (!pk || !x || RAND_bytes(serial, sizeof(serial)) != 1)
        goto ossl;
    serial[0] &= 0x7f; /* a positive serial number */
    bn = BN_bin2bn(serial, sizeof(serial), NULL);
    if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) ||
        X509_set_version(x, X509_VERSION_3) != 1 ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), 10L * 365 * 86400) || X509_set_pubkey(x, pk) != 1)
        goto ossl;
    /* A common name is at most 64 characters. */
    const char *cn = nnames > 0 && strlen(names[0]) <= 64 ? names[0] : "parley";
    X509_NAME *name = X509_get_subject_name(x);
    if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                   0) != 1 ||
        X509_set_issuer_name(x, name) != 1)
        goto ossl;
    for (size_t i = 0; i < nnames; i++) {
        const char *n = names[i];
        if (!*n || strchr(n, ',') || (strchr(n, ':') && !tls_is_ip(n)))
            continue;
        int w = snprintf(san + off, sizeof(san) - off, "%s%s:%s", off ? "," : "",
                         tls_is_ip(n) ? "IP" : "DNS", n);
        if (w < 0 || (size_t)w >= sizeof(san) - off) {
            san[off] = '\0';
            break;
        }
        off += (size_t)w;
    }
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    if (tls_add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
        tls_add_ext(x, &v3, NID_ext_key_usage, "serverAuth") < 0 ||
        tls_add_ext(x, &v3, NID_subject_key_identifier, "hash") < 0 ||
        (off && tls_add_ext(x, &v3, NID_subject_alt_name, san) < 0))
        goto ossl;
    if (X509_sign(x, pk, EVP_sha256()) <= 0)
        goto ossl;
    /* The key first: a certificate without its key would not load. */
    if (tls_save(key_file, 0600, pk, NULL, err, errlen) < 0 ||
        tls_save(cert_file, 0644, NULL, x, err, errlen) < 0)
        goto out;
    rc = 0;
    goto out;
ossl:
    tls_fail(err, errlen, "cannot make a self-signed certificate");
out:
    BN_free(bn);
    X509_free(x);
    EVP_PKEY_free(pk);
    return rc;
}

/* ---- connections ---- */

tls_conn *tls_conn_new(tls_ctx *t, int fd, const char *host)
{
    ERR_clear_error();
    pthread_mutex_lock(&t->lock);
    SSL *ssl = SSL_new(t->ssl);
    pthread_mutex_unlock(&t->lock);
    if (!ssl)
        goto fail;
    /* A socket BIO: reads and writes go straight to fd, nothing buffered. */
    if (SSL_set_fd(ssl, fd) != 1)
        goto fail;
    if (t->server) {
        SSL_set_accept_state(ssl);
    } else {
        if (host && *host) {
            if (tls_is_ip(host)) {
                if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1)
                    goto fail;
            } else if (SSL_set_tlsext_host_name(ssl, host) != 1 || SSL_set1_host(ssl, host) != 1) {
                goto fail;
            }
        }
        SSL_set_connect_state(ssl);
    }
    return (tls_conn *)ssl;
fail:
    tls_describe(tls_err_text, sizeof(tls_err_text), "cannot start TLS");
    SSL_free(ssl);
    return NULL;
}

void tls_conn_free(tls_conn *tc)
{
    SSL *ssl = tls_ssl(tc);
    if (!ssl)
        return;
    /* After a fatal error (quiet shutdown is set then) there must be no
     * close_notify; before the handshake there is nothing to close. */
    if (SSL_is_init_finished(ssl) && !SSL_get_quiet_shutdown(ssl)) {
        ERR_clear_error();
        (void)SSL_shutdown(ssl);
    }
    ERR_clear_error();
    SSL_free(ssl);
}

/* The outcome of an SSL call that returned rc (not success). */
static int tls_status(SSL *ssl, int rc, const char *what)
{
    int saved = errno;
    switch (SSL_get_error(ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        return TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        SSL_set_quiet_shutdown(ssl, 1);
        if (ERR_peek_error())
            tls_describe(tls_err_text, sizeof(tls_err_text), what);
        else
            snprintf(tls_err_text, sizeof(tls_err_text), "%s: %s", what,
                     saved ? strerror(saved) : "connection closed");
        return TLS_ERROR;
    default:
        SSL_set_quiet_shutdown(ssl, 1);
        tls_describe(tls_err_text, sizeof(tls_err_text), what);
        return TLS_ERROR;
    }
}

int tls_handshake(tls_conn *tc)
{
    SSL *ssl = tls_ssl(tc);
    ERR_clear_error();
    errno = 0;
    int rc = SSL_do_handshake(ssl);
    if (rc == 1)
        return 1;
    int st = tls_status(ssl, rc, "TLS handshake");
    if (st == 0) {
        snprintf(tls_err_text, sizeof(tls_err_text), "TLS handshake: connection closed");
        return TLS_ERROR;
    }
    return st;
}

ssize_t tls_read(tls_conn *tc, void *buf, size_t len)
{
    SSL *ssl = tls_ssl(tc);
    size_t n = 0;
    ERR_clear_error();
    errno = 0;
    if (SSL_read_ex(ssl, buf, len, &n) == 1)
        return (ssize_t)n;
    return tls_status(ssl, 0, "TLS");
}

ssize_t tls_write(tls_conn *tc, const void *buf, size_t len)
{
    SSL *ssl = tls_ssl(tc);
    size_t n = 0;
    ERR_clear_error();
    errno = 0;
    if (SSL_write_ex(ssl, buf, len, &n) == 1)
        return (ssize_t)n;
    int st = tls_status(ssl, 0, "TLS");
    if (st == 0) {
        snprintf(tls_err_text, sizeof(tls_err_text), "TLS: the peer closed");
        return TLS_ERROR;
    }
    return st;
}

int tls_pending(const tls_conn *tc)
{
    return SSL_has_pending(tls_ssl(tc));
}

int tls_peer_verified(const tls_conn *tc, char *why, size_t whylen)
{
    SSL *ssl = tls_ssl(tc);
    if (!SSL_get0_peer_certificate(ssl)) {
        snprintf(why, whylen, "the server sent no certificate");
        return -1;
    }
    long r = SSL_get_verify_result(ssl);
    if (r != X509_V_OK) {
        snprintf(why, whylen, "%s", X509_verify_cert_error_string(r));
        return -1;
    }
    return 0;
}

int tls_peer_fingerprint(const tls_conn *tc, uint8_t fp[TLS_FP_LEN])
{
    X509 *x = SSL_get0_peer_certificate(tls_ssl(tc));
    unsigned n = 0;
    if (!x || X509_digest(x, EVP_sha256(), fp, &n) != 1 || n != TLS_FP_LEN) {
        ERR_clear_error();
        return -1;
    }
    return 0;
}

const char *tls_version(const tls_conn *tc)
{
    return SSL_get_version(tls_ssl(tc));
}

void tls_fp_format(const uint8_t fp[TLS_FP_LEN], char out[TLS_FP_TEXT])
{
    static const char hex[] = "0123456789ABCDEF";
    for (int i = 0; i < TLS_FP_LEN; i++) {
        out[i * 3] = hex[fp[i] >> 4];
        out[i * 3 + 1] = hex[fp[i] & 15];
        out[i * 3 + 2] = i + 1 < TLS_FP_LEN ? ':' : '\0';
    }
}

int tls_fp_parse(const char *text, uint8_t fp[TLS_FP_LEN])
{
    if (strncasecmp(text, "sha256:", 7) == 0)
        text += 7;
    int n = 0, half = -1;
    for (const char *p = text; *p; p++) {
        if (*p == ':')
            continue;
        if (!isxdigit((unsigned char)*p) || n == TLS_FP_LEN)
            return -1;
        int v = isdigit((unsigned char)*p) ? *p - '0' : tolower((unsigned char)*p) - 'a' + 10;
        if (half < 0) {
            half = v;
        } else {
            fp[n++] = (uint8_t)(half << 4 | v);
            half = -1;
        }
    }
    return n == TLS_FP_LEN && half < 0 ? 0 : -1;
}
