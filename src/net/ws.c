#include "net/ws.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/frame.h"
#include "common/log.h"
#include "common/utf8.h"
#include "net/conn_impl.h"

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

enum { WS_FILE_CHUNK = 16 * 1024 };

struct ws_config {
    int any_origin;
    size_t norigins;
    char **origins; /* lower case */
    char *web_root; /* NULL: none */
};

typedef enum {
    WS_HTTP = 0, /* reading the request */
    WS_OPEN,     /* upgraded: frames both ways */
    WS_CLOSING,  /* our Close sent (or the peer's answered): nothing more read */
    WS_DONE,     /* an HTTP answer was sent; the conn closes after it */
} ws_state;

/* A connection's state: small, since every connection of a WebSocket
 * port has one; the message buffer exists only while a fragmented message
 * is being put together. */
struct ws_conn {
    uint8_t state;
    uint8_t msg_op; /* the open fragmented message's opcode, 0: none */
    uint32_t since; /* when its first fragment arrived */
    size_t msg_len, msg_cap;
    uint8_t *msg;
};

/* ---- configuration ---- */

static void ws_lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

ws_config *ws_config_new(const char *origins, const char *web_root, char *err, size_t errlen)
{
    ws_config *cfg = calloc(1, sizeof(*cfg));
    char *list = NULL;
    if (!cfg)
        goto oom;
    if (web_root && web_root[0]) {
        struct stat st;
        if (stat(web_root, &st) < 0 || !S_ISDIR(st.st_mode)) {
            snprintf(err, errlen, "--web-root %.200s: not a directory", web_root);
            goto fail;
        }
        cfg->web_root = strdup(web_root);
        if (!cfg->web_root)
            goto oom;
    }
    if (!origins || !origins[0])
        return cfg;
    list = strdup(origins);
    if (!list)
        goto oom;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        size_t n = strlen(tok);
        while (n && tok[n - 1] == ' ')
            tok[--n] = '\0';
        if (!n)
            continue;
        if (strcmp(tok, "*") == 0) {
            cfg->any_origin = 1;
            continue;
        }
        /* An origin has no path: "https://host:port", nothing after. */
        const char *hp = strstr(tok, "://");
        if (strchr(hp ? hp + 3 : tok, '/')) {
            snprintf(err, errlen, "--ws-origins: '%.100s' is not an origin (scheme://host[:port])",
                     tok);
            goto fail;
        }
        char **v = realloc(cfg->origins, (cfg->norigins + 1) * sizeof(*v));
        if (!v)
            goto oom;
        cfg->origins = v;
        if (!(v[cfg->norigins] = strdup(tok)))
            goto oom;
        ws_lower(v[cfg->norigins++]);
    }
    free(list);
    return cfg;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    free(list);
    ws_config_free(cfg);
    return NULL;
}

void ws_config_free(ws_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->norigins; i++)
        free(cfg->origins[i]);
    free(cfg->origins);
    free(cfg->web_root);
    free(cfg);
}

/* Splits "host[:port]" (host may be "[v6]"): the host's length, and the
 * port (0: none given, -1: not a number). */
static size_t ws_split_hostport(const char *s, size_t len, long *port)
{
    size_t hlen = len;
    *port = 0;
    const char *colon = NULL;
    if (len && s[0] == '[') {
        const char *rb = memchr(s, ']', len);
        if (rb && (size_t)(rb - s) + 1 < len && rb[1] == ':')
            colon = rb + 1;
    } else {
        colon = memchr(s, ':', len);
    }
    if (!colon)
        return hlen;
    hlen = (size_t)(colon - s);
    long p = 0;
    size_t digits = len - hlen - 1;
    if (digits == 0 || digits > 5) {
        *port = -1;
        return hlen;
    }
    for (size_t i = hlen + 1; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            *port = -1;
            return hlen;
        }
        p = p * 10 + (s[i] - '0');
    }
    *port = p > 0 && p < 65536 ? p : -1;
    return hlen;
}

int ws_origin_allowed(const ws_config *cfg, const char *origin, size_t origin_len, const char *host,
                      size_t host_len, int tls)
{
    (void)tls;
    /* No Origin: not a browser, so not a page of another site using the
     * visitor's browser; such a client logs in like any TCP client. */
    if (origin_len == 0)
        return 1;
    if (cfg->any_origin)
        return 1;
    /* scheme "://" host[:port], nothing else ("null" is never allowed
     * unless listed). */
    const char *sep = NULL;
    for (size_t i = 0; i + 2 < origin_len; i++)
        if (origin[i] == ':' && origin[i + 1] == '/' && origin[i + 2] == '/') {
            sep = origin + i;
            break;
        }
    const char *hp = sep ? sep + 3 : NULL;
    size_t hp_len = hp ? origin_len - (size_t)(hp - origin) : 0;
    if (cfg->norigins) {
        for (size_t i = 0; i < cfg->norigins; i++) {
            const char *e = cfg->origins[i];
            size_t elen = strlen(e);
            if (strstr(e, "://")) {
                if (elen == origin_len && strncasecmp(e, origin, elen) == 0)
                    return 1;
            } else if (hp && elen == hp_len && strncasecmp(e, hp, elen) == 0) {
                return 1;
            }
        }
        return 0;
    }
    /* Same origin: the page was served by this port (or by the proxy in
     * front of it, which passes the Host it was asked for). */
    if (!hp || hp_len == 0 || host_len == 0)
        return 0;
    long oport, hport;
    size_t ohost = ws_split_hostport(hp, hp_len, &oport);
    size_t hhost = ws_split_hostport(host, host_len, &hport);
    if (oport < 0 || hport < 0 || ohost != hhost || ohost == 0 || strncasecmp(hp, host, ohost) != 0)
        return 0;
    size_t slen = (size_t)(sep - origin);
    long dflt = slen == 5 && strncasecmp(origin, "https", 5) == 0  ? 443
                : slen == 4 && strncasecmp(origin, "http", 4) == 0 ? 80
                                                                   : -1;
    /* A Host without a port is whatever port the client dialled (a proxy
     * may listen on 443 and pass plain text): the Origin must name none. */
    if (hport == 0)
        return oport == 0;
    return oport == hport || (oport == 0 && dflt == hport);
}

/* ---- the request ---- */

/* Where the head ends (just past its blank line), or 0. */
static size_t ws_head_end(const char *buf, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (buf[i] != '\n')
            continue;
        if (buf[i + 1] == '\n')
            return i + 2;
        if (buf[i + 1] == '\r' && i + 2 < len && buf[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

static int ws_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int ws_name_is(const char *name, size_t len, const char *want)
{
    return strlen(want) == len && strncasecmp(name, want, len) == 0;
}

int ws_parse_request(const char *buf, size_t len, ws_request *req)
{
    memset(req, 0, sizeof(*req));
    size_t end = ws_head_end(buf, len < WS_MAX_REQUEST ? len : WS_MAX_REQUEST);
    if (!end)
        return len >= WS_MAX_REQUEST ? 431 : 0;
    req->head_len = end;
    /* The request line: METHOD SP TARGET SP HTTP/1.x */
    const char *eol = memchr(buf, '\n', end);
    size_t line = (size_t)(eol - buf);
    if (line && buf[line - 1] == '\r')
        line--;
    size_t i = 0;
    while (i < line && ws_tchar((unsigned char)buf[i]))
        i++;
    if (i == 0 || i >= line || buf[i] != ' ')
        return 400;
    if (i == 3 && memcmp(buf, "GET", 3) == 0)
        req->method = WS_M_GET;
    else if (i == 4 && memcmp(buf, "HEAD", 4) == 0)
        req->method = WS_M_HEAD;
    else
        req->method = WS_M_OTHER;
    size_t t0 = ++i;
    while (i < line && buf[i] > 0x20 && buf[i] < 0x7f)
        i++;
    if (i == t0 || i >= line || buf[i] != ' ')
        return 400;
    size_t t1 = i++;
    if (line - i != 8 || memcmp(buf + i, "HTTP/1.", 7) != 0)
        return line - i >= 5 && memcmp(buf + i, "HTTP/", 5) == 0 ? 505 : 400;
    if (buf[i + 7] != '0' && buf[i + 7] != '1')
        return 505;
    req->minor = buf[i + 7] - '0';
    if (buf[t0] != '/')
        return 400;
    const char *q = memchr(buf + t0, '?', t1 - t0);
    size_t tend = q ? (size_t)(q - buf) : t1;
    if (tend - t0 > WS_MAX_PATH)
        return 414;
    req->target = (ws_span){t0, tend - t0};

    /* Header fields: NAME ":" OWS VALUE OWS, one a line. */
    size_t pos = (size_t)(eol - buf) + 1;
    for (;;) {
        const char *nl = memchr(buf + pos, '\n', end - pos);
        size_t llen = (size_t)(nl - (buf + pos));
        if (llen && buf[pos + llen - 1] == '\r')
            llen--;
        if (llen == 0)
            break; /* the blank line */
        const char *l = buf + pos;
        size_t n = 0;
        while (n < llen && ws_tchar((unsigned char)l[n]))
            n++;
        /* No name, white space before the colon, or a folded line. */
        if (n == 0 || n >= llen || l[n] != ':')
            return 400;
        size_t v0 = n + 1, v1 = llen;
        while (v0 < v1 && (l[v0] == ' ' || l[v0] == '\t'))
            v0++;
        while (v1 > v0 && (l[v1 - 1] == ' ' || l[v1 - 1] == '\t'))
            v1--;
        for (size_t k = v0; k < v1; k++) {
            unsigned char ch = (unsigned char)l[k];
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
                return 400;
        }
        ws_span *slot = ws_name_is(l, n, "host")                    ? &req->host
                        : ws_name_is(l, n, "origin")                ? &req->origin
                        : ws_name_is(l, n, "sec-websocket-key")     ? &req->key
                        : ws_name_is(l, n, "sec-websocket-version") ? &req->version
                        : ws_name_is(l, n, "upgrade")               ? &req->upgrade
                        : ws_name_is(l, n, "connection")            ? &req->connection
                                                                    : NULL;
        if (slot) {
            /* Twice: which one would a proxy have looked at? */
            if (slot->off)
                return 400;
            slot->off = pos + v0;
            slot->len = v1 - v0;
        }
        pos = (size_t)(nl - buf) + 1;
    }
    return 1;
}

/* Whether a comma list of tokens (a Connection or Upgrade value) holds
 * tok, case-insensitively. */
static int ws_list_has(const char *v, size_t len, const char *tok)
{
    size_t tlen = strlen(tok), i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < len && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tlen && strncasecmp(v + s, tok, tlen) == 0)
            return 1;
    }
    return 0;
}

static int ws_b64char(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '+' || ch == '/';
}

/* base64 of exactly 16 bytes: 22 characters, the last holding 2 bits,
 * then "==". */
static int ws_key_valid(const char *k, size_t len)
{
    if (len != WS_KEY_LEN || k[22] != '=' || k[23] != '=')
        return 0;
    for (size_t i = 0; i < 22; i++)
        if (!ws_b64char(k[i]))
            return 0;
    return strchr("AQgw", k[21]) != NULL;
}

int ws_check_upgrade(const ws_config *cfg, const char *buf, const ws_request *req, int tls)
{
    if (req->method == WS_M_OTHER)
        return 405;
    if (!req->upgrade.off || !ws_list_has(buf + req->upgrade.off, req->upgrade.len, "websocket"))
        return 0; /* not for us: a static file */
    if (req->method != WS_M_GET || req->minor < 1 || !req->host.len || !req->connection.off ||
        !ws_list_has(buf + req->connection.off, req->connection.len, "upgrade"))
        return 400;
    if (!ws_key_valid(buf + req->key.off, req->key.len))
        return 400;
    if (req->version.len != 2 || memcmp(buf + req->version.off, "13", 2) != 0)
        return 426;
    /* An empty Origin is not "none": browsers never send one. */
    if ((req->origin.off && !req->origin.len) ||
        !ws_origin_allowed(cfg, buf + req->origin.off, req->origin.len, buf + req->host.off,
                           req->host.len, tls))
        return 403;
    return 101;
}

int ws_accept_key(const char *key, size_t key_len, char out[WS_ACCEPT_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int rc = -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return -1;
    if (EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1 && EVP_DigestUpdate(ctx, key, key_len) == 1 &&
        EVP_DigestUpdate(ctx, ws_guid, sizeof(ws_guid) - 1) == 1 &&
        EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 20) {
        EVP_EncodeBlock((unsigned char *)out, md, 20); /* 28 characters and a NUL */
        rc = 0;
    }
    EVP_MD_CTX_free(ctx);
    return rc;
}

static int ws_hex(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* A path component a visitor may name: not empty, not "." or "..", not
 * hidden (".git", ".env"). */
static int ws_component_ok(const char *s, size_t len)
{
    return len > 0 && s[0] != '.';
}

int ws_target_path(const char *target, size_t len, char *out, size_t outlen)
{
    static const char index[] = "index.html";
    if (len == 0 || target[0] != '/' || outlen < sizeof(index))
        return -1;
    size_t o = 0, comp = 0;
    for (size_t i = 1; i < len; i++) {
        unsigned char ch = (unsigned char)target[i];
        if (ch == '/') {
            if (!ws_component_ok(out + comp, o - comp) || o + 1 >= outlen)
                return -1;
            out[o++] = '/';
            comp = o;
            continue;
        }
        if (ch == '%') {
            int hi = i + 2 < len ? ws_hex(target[i + 1]) : -1;
            int lo = i + 2 < len ? ws_hex(target[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return -1;
            ch = (unsigned char)(hi << 4 | lo);
            i += 2;
            /* An escaped separator would hide a component from the check. */
            if (ch == '/')
                return -1;
        }
        if (ch < 0x20 || ch == 0x7f || ch == '\\')
            return -1;
        if (o + 1 >= outlen)
            return -1;
        out[o++] = (char)ch;
    }
    if (o == comp) { /* "/" or "dir/": its index */
        if (o + sizeof(index) > outlen)
            return -1;
        memcpy(out + o, index, sizeof(index));
        return 0;
    }
    if (!ws_component_ok(out + comp, o - comp))
        return -1;
    out[o] = '\0';
    return 0;
}

const char *ws_content_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {"html", "text/html; charset=utf-8"},
        {"htm", "text/html; charset=utf-8"},
        {"js", "text/javascript; charset=utf-8"},
        {"mjs", "text/javascript; charset=utf-8"},
        {"css", "text/css; charset=utf-8"},
        {"json", "application/json"},
        {"map", "application/json"},
        {"webmanifest", "application/manifest+json"},
        {"png", "image/png"},
        {"jpg", "image/jpeg"},
        {"jpeg", "image/jpeg"},
        {"gif", "image/gif"},
        {"webp", "image/webp"},
        {"svg", "image/svg+xml"},
        {"ico", "image/x-icon"},
        {"wasm", "application/wasm"},
        {"woff2", "font/woff2"},
        {"txt", "text/plain; charset=utf-8"},
    };
    const char *slash = strrchr(name, '/');
    const char *dot = strrchr(slash ? slash + 1 : name, '.');
    if (dot)
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
            if (strcasecmp(dot + 1, types[i].ext) == 0)
                return types[i].type;
    return "application/octet-stream";
}

/* A name with a content hash in it ("app-5XPSUMVK.js", "app.3f9a1c2e.css"):
 * its content never changes, so it may be cached for good. */
static int ws_hashed_name(const char *name)
{
    const char *slash = strrchr(name, '/');
    const char *s = slash ? slash + 1 : name;
    const char *last_dot = strrchr(s, '.');
    for (const char *p = s; *p && p < last_dot; p++) {
        if (*p != '-' && *p != '.')
            continue;
        size_t n = 0, digits = 0;
        while (p[1 + n] && p[1 + n] != '.' && p[1 + n] != '-') {
            char ch = p[1 + n];
            if (ch >= '0' && ch <= '9')
                digits++;
            else if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'f')))
                break;
            n++;
        }
        char next = p[1 + n];
        if (n >= 8 && digits > 0 && (next == '.' || next == '-'))
            return 1;
    }
    return 0;
}

/* ---- frames ---- */

int ws_frame_parse(const uint8_t *buf, size_t len, ws_frame *f)
{
    if (len < 2)
        return 0;
    f->fin = buf[0] >> 7;
    f->rsv = (buf[0] >> 4) & 7;
    f->opcode = buf[0] & 0x0f;
    f->masked = buf[1] >> 7;
    uint64_t n = buf[1] & 0x7f;
    size_t h = 2;
    if (n == 126) {
        if (len < 4)
            return 0;
        n = (uint64_t)buf[2] << 8 | buf[3];
        h = 4;
        if (n < 126)
            return -1;
    } else if (n == 127) {
        if (len < 10)
            return 0;
        n = 0;
        for (int i = 0; i < 8; i++)
            n = n << 8 | buf[2 + i];
        h = 10;
        if (n >> 63 || n <= 0xffff)
            return -1;
    }
    if (f->masked) {
        if (len < h + 4)
            return 0;
        memcpy(f->mask, buf + h, 4);
        h += 4;
    } else {
        memset(f->mask, 0, 4);
    }
    f->len = n;
    f->hdr_len = h;
    return 1;
}

int ws_frame_check(const ws_frame *f, int in_message, uint64_t already, size_t max)
{
    if (f->rsv || !f->masked)
        return WS_CLOSE_PROTOCOL;
    switch (f->opcode) {
    case WS_OP_CLOSE:
    case WS_OP_PING:
    case WS_OP_PONG:
        return !f->fin || f->len > 125 ? WS_CLOSE_PROTOCOL : 0;
    case WS_OP_CONT:
        if (!in_message)
            return WS_CLOSE_PROTOCOL;
        break;
    case WS_OP_TEXT:
    case WS_OP_BINARY:
        if (in_message)
            return WS_CLOSE_PROTOCOL;
        if (f->opcode == WS_OP_TEXT)
            return WS_CLOSE_UNSUPPORTED;
        break;
    default:
        return WS_CLOSE_PROTOCOL;
    }
    if (f->len > max || already + f->len > max)
        return WS_CLOSE_TOO_BIG;
    return 0;
}

void ws_unmask(uint8_t *p, size_t len, const uint8_t mask[4], size_t off)
{
    size_t i = 0;
    /* Eight bytes at a time once aligned to the mask. */
    for (; i < len && ((off + i) & 3); i++)
        p[i] ^= mask[(off + i) & 3];
    if (len - i >= 8) {
        uint64_t m8;
        uint8_t mb[8] = {mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]};
        memcpy(&m8, mb, 8);
        for (; len - i >= 8; i += 8) {
            uint64_t v;
            memcpy(&v, p + i, 8);
            v ^= m8;
            memcpy(p + i, &v, 8);
        }
    }
    for (; i < len; i++)
        p[i] ^= mask[(off + i) & 3];
}

size_t ws_frame_header(uint8_t *out, int opcode, uint64_t len)
{
    out[0] = (uint8_t)(0x80 | (opcode & 0x0f));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

int ws_close_check(const uint8_t *p, size_t len, unsigned *code)
{
    *code = 1005;
    if (len == 0)
        return 0;
    if (len == 1)
        return WS_CLOSE_PROTOCOL;
    unsigned c = (unsigned)p[0] << 8 | p[1];
    *code = c;
    /* Codes a peer may send (7.4): 1000-1003, 1007-1011 and the ranges for
     * applications; 1004-1006 and 1015 are never sent on the wire. */
    int ok = (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1011) || (c >= 3000 && c <= 4999);
    if (!ok)
        return WS_CLOSE_PROTOCOL;
    /* The reason is UTF-8 (no NUL either: utf8_count refuses it too). */
    if (len > 2 && utf8_count((const char *)p + 2, len - 2) < 0)
        return WS_CLOSE_BAD_DATA;
    return 0;
}

/* ---- a connection ---- */

ws_conn *ws_conn_new(void)
{
    return calloc(1, sizeof(ws_conn));
}

static void ws_msg_drop(ws_conn *w)
{
    free(w->msg);
    w->msg = NULL;
    w->msg_len = w->msg_cap = 0;
    w->msg_op = 0;
}

void ws_conn_free(ws_conn *w)
{
    if (!w)
        return;
    free(w->msg);
    free(w);
}

void ws_conn_closed(ws_conn *w)
{
    ws_msg_drop(w);
    if (w->state == WS_OPEN)
        w->state = WS_CLOSING;
}

int ws_conn_open(const ws_conn *w)
{
    return w->state == WS_OPEN;
}

int ws_conn_partial_since(const ws_conn *w, uint32_t *since)
{
    if (!w->msg_op)
        return 0;
    *since = w->since;
    return 1;
}

void ws_conn_restart_clock(ws_conn *w, uint32_t now)
{
    if (w->msg_op)
        w->since = now;
}

static int ws_send_frame(conn *c, int opcode, const uint8_t *p, size_t len)
{
    uint8_t hdr[WS_MAX_SERVER_HEADER];
    size_t h = ws_frame_header(hdr, opcode, len);
    return conn_out_pair(c, hdr, h, p, len);
}

static void ws_send_close(conn *c, ws_conn *w, unsigned code)
{
    if (w->state != WS_OPEN)
        return;
    w->state = WS_CLOSING;
    uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    /* 1005 means "no code": an empty Close. */
    ws_send_frame(c, WS_OP_CLOSE, p, code == 1005 ? 0 : 2);
}

void ws_conn_goodbye(conn *c, ws_conn *w, unsigned code)
{
    ws_send_close(c, w, code);
}

int ws_conn_send_framed(conn *c, const uint8_t *data, size_t len)
{
    size_t off = 0;
    while (off < len) {
        const uint8_t *p;
        size_t plen, used;
        if (frame_next(data + off, len - off, len, &p, &plen, &used) != FRAME_OK)
            return -1; /* the caller framed them: cannot happen */
        if (ws_send_frame(c, WS_OP_BINARY, p, plen) < 0)
            return -1;
        off += used;
    }
    return 0;
}

/* The peer broke the protocol: say why in a Close, read nothing more. */
static void ws_fail(conn *c, ws_conn *w, unsigned code, const char *why)
{
    log_debug("websocket closed (%u): %s", code, why);
    ws_send_close(c, w, code);
    ws_msg_drop(w);
    conn_close_after_flush(c, why);
}

/* Appends a fragment to the message being put together. */
static int ws_msg_append(ws_conn *w, const uint8_t *p, size_t n)
{
    size_t need = w->msg_len + n;
    if (need > w->msg_cap) {
        size_t cap = w->msg_cap ? w->msg_cap * 2 : 256;
        while (cap < need)
            cap *= 2;
        uint8_t *m = realloc(w->msg, cap);
        if (!m)
            return -1;
        w->msg = m;
        w->msg_cap = cap;
    }
    if (n)
        memcpy(w->msg + w->msg_len, p, n);
    w->msg_len = need;
    return 0;
}

static const char *ws_close_reason(int code)
{
    switch (code) {
    case WS_CLOSE_UNSUPPORTED:
        return "websocket: text frame (binary only)";
    case WS_CLOSE_TOO_BIG:
        return "websocket: message too large";
    default:
        return "websocket: protocol error";
    }
}

/* The frames in buf[0..len): bytes used. */
static size_t ws_frames(conn *c, ws_conn *w, uint8_t *buf, size_t len)
{
    size_t max = conn_class_of(c)->lim.max_frame;
    size_t off = 0;
    while (off < len && conn_parsing(c) && w->state == WS_OPEN) {
        ws_frame f;
        int st = ws_frame_parse(buf + off, len - off, &f);
        if (st == 0)
            break;
        if (st < 0) {
            ws_fail(c, w, WS_CLOSE_PROTOCOL, "websocket: malformed frame header");
            return len;
        }
        /* Refused on the header alone: an oversized frame is never read. */
        int code = ws_frame_check(&f, w->msg_op != 0, w->msg_len, max);
        if (code) {
            if (code == WS_CLOSE_TOO_BIG)
                conn_oversize(c, f.len + w->msg_len > SIZE_MAX ? SIZE_MAX
                                                               : (size_t)(f.len + w->msg_len));
            ws_fail(c, w, (unsigned)code, ws_close_reason(code));
            return len;
        }
        if (len - off - f.hdr_len < f.len)
            break;
        uint8_t *p = buf + off + f.hdr_len;
        size_t n = (size_t)f.len;
        ws_unmask(p, n, f.mask, 0);
        off += f.hdr_len + n;
        switch (f.opcode) {
        case WS_OP_PING:
            ws_send_frame(c, WS_OP_PONG, p, n);
            break;
        case WS_OP_PONG:
            break;
        case WS_OP_CLOSE: {
            unsigned peer;
            int bad = ws_close_check(p, n, &peer);
            if (bad) {
                ws_fail(c, w, (unsigned)bad, "websocket: bad close frame");
                return len;
            }
            /* Echo the peer's code (none for none), then close. */
            ws_send_close(c, w, peer);
            ws_msg_drop(w);
            conn_close_after_flush(c, "websocket closed by the peer");
            return len;
        }
        case WS_OP_BINARY:
            if (f.fin) {
                conn_deliver(c, p, n);
                break;
            }
            w->msg_op = WS_OP_BINARY;
            w->since = conn_now(c);
            if (ws_msg_append(w, p, n) < 0) {
                conn_close(c, "out of memory");
                return len;
            }
            break;
        default: /* WS_OP_CONT */
            if (ws_msg_append(w, p, n) < 0) {
                conn_close(c, "out of memory");
                return len;
            }
            if (f.fin) {
                /* Taken from w first: the handler may close c. */
                uint8_t *m = w->msg;
                size_t mlen = w->msg_len;
                w->msg = NULL;
                ws_msg_drop(w);
                conn_deliver(c, m, mlen);
                free(m);
            }
            break;
        }
    }
    return off;
}

static const char *ws_reason(int status)
{
    switch (status) {
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 414:
        return "URI Too Long";
    case 426:
        return "Upgrade Required";
    case 431:
        return "Request Header Fields Too Large";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status < 500 ? "Client Error" : "Server Error";
    }
}

/* An error answer, and the connection closes after it. */
static void ws_http_error(conn *c, ws_conn *w, int status)
{
    char body[64], hdr[512];
    int blen = snprintf(body, sizeof(body), "%d %s\n", status, ws_reason(status));
    int n =
        snprintf(hdr, sizeof(hdr),
                 "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 "Content-Length: %d\r\nCache-Control: no-store\r\n%s%sConnection: close\r\n\r\n",
                 status, ws_reason(status), blen, status == 405 ? "Allow: GET, HEAD\r\n" : "",
                 status == 426 ? "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n" : "");
    w->state = WS_DONE;
    log_debug("http: answered %d", status);
    if (conn_out_pair(c, hdr, (size_t)n, body, (size_t)blen) == 0)
        conn_close_after_flush(c, "http: answered");
}

/* Opens root/rel without following a symbolic link at any step, so that
 * nothing outside root is reached whatever the tree holds. An fd, or -1. */
static int ws_open_beneath(const char *root, const char *rel)
{
    int dir = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return -1;
    char part[WS_MAX_PATH + 16];
    const char *s = rel;
    for (;;) {
        const char *slash = strchr(s, '/');
        size_t n = slash ? (size_t)(slash - s) : strlen(s);
        if (n == 0 || n >= sizeof(part)) {
            close(dir);
            return -1;
        }
        memcpy(part, s, n);
        part[n] = '\0';
        int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (slash ? O_DIRECTORY : O_NONBLOCK);
        int fd = openat(dir, part, flags);
        close(dir);
        if (fd < 0 || !slash)
            return fd;
        dir = fd;
        s = slash + 1;
    }
}

static void ws_serve_file(conn *c, ws_conn *w, const ws_config *cfg, const char *buf,
                          const ws_request *req)
{
    char rel[WS_MAX_PATH + 16];
    if (!cfg->web_root ||
        ws_target_path(buf + req->target.off, req->target.len, rel, sizeof(rel)) < 0) {
        ws_http_error(c, w, 404);
        return;
    }
    int fd = ws_open_beneath(cfg->web_root, rel);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        ws_http_error(c, w, 404);
        return;
    }
    /* Read at once, so capped well below what a connection may queue. */
    size_t cap = conn_class_of(c)->lim.max_out / 2;
    if (cap > WS_MAX_FILE)
        cap = WS_MAX_FILE;
    if ((uint64_t)st.st_size > cap) {
        log_warn("web: not serving %.200s: %lld bytes, over the %zu a file may have", rel,
                 (long long)st.st_size, cap);
        close(fd);
        ws_http_error(c, w, 404);
        return;
    }
    const char *base = strrchr(rel, '/');
    base = base ? base + 1 : rel;
    const char *cache = strcasecmp(base, "index.html") != 0 && ws_hashed_name(rel)
                            ? "public, max-age=31536000, immutable"
                            : "no-cache";
    char hdr[512];
    int n = snprintf(hdr, sizeof(hdr),
                     "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %lld\r\n"
                     "Cache-Control: %s\r\nX-Content-Type-Options: nosniff\r\n"
                     "Connection: close\r\n\r\n",
                     ws_content_type(rel), (long long)st.st_size, cache);
    w->state = WS_DONE;
    if (conn_out_pair(c, hdr, (size_t)n, NULL, 0) < 0) {
        close(fd);
        return;
    }
    size_t left = req->method == WS_M_HEAD ? 0 : (size_t)st.st_size;
    uint8_t chunk[WS_FILE_CHUNK];
    while (left > 0) {
        ssize_t r = read(fd, chunk, left < sizeof(chunk) ? left : sizeof(chunk));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) { /* shrank meanwhile: the length sent is wrong, cut it */
            close(fd);
            conn_close(c, "web: file changed while read");
            return;
        }
        if (conn_out_pair(c, chunk, (size_t)r, NULL, 0) < 0) {
            close(fd);
            return;
        }
        left -= (size_t)r;
    }
    close(fd);
    conn_close_after_flush(c, "http: served");
}

static size_t ws_http(conn *c, ws_conn *w, uint8_t *buf, size_t len)
{
    const conn_class *cls = conn_class_of(c);
    const char *text = (const char *)buf;
    ws_request req;
    int st = ws_parse_request(text, len, &req);
    if (st == 0)
        return 0;
    if (st == 1)
        st = ws_check_upgrade(cls->ws, text, &req, cls->tls != NULL);
    if (st == 0) {
        ws_serve_file(c, w, cls->ws, text, &req);
        return len;
    }
    if (st != 101) {
        ws_http_error(c, w, st);
        return len;
    }
    char accept[WS_ACCEPT_LEN + 1], hdr[256];
    if (ws_accept_key(text + req.key.off, req.key.len, accept) < 0) {
        ws_http_error(c, w, 500);
        return len;
    }
    int n = snprintf(hdr, sizeof(hdr),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     accept);
    if (conn_out_pair(c, hdr, (size_t)n, NULL, 0) < 0)
        return len;
    w->state = WS_OPEN;
    conn_active(c);
    /* Frames sent right behind the request are read as well. */
    return req.head_len + ws_frames(c, w, buf + req.head_len, len - req.head_len);
}

size_t ws_conn_input(conn *c, ws_conn *w, uint8_t *buf, size_t len)
{
    switch (w->state) {
    case WS_HTTP:
        return ws_http(c, w, buf, len);
    case WS_OPEN:
        return ws_frames(c, w, buf, len);
    default:
        return len; /* closing: what comes now is dropped */
    }
}
