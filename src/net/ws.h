/*
 * ws: WebSocket (RFC 6455) as a transport of conn, and the web client's
 * static files on the same port.
 *
 * A conn_class that carries a ws_config makes its connections start as
 * HTTP/1.1: a request to upgrade becomes a WebSocket, any other GET or
 * HEAD is answered from the web root and the connection closed. Once
 * upgraded, one binary message carries one frame's payload (the protobuf
 * bytes, no 4-byte length) each way, so the handler sees the same frames
 * as over TCP; over TLS when the class carries a tls_ctx too (wss).
 *
 * The framing is our own decoder, not wslay's: wslay's event context
 * pulls bytes through a recv callback into a 4 KiB buffer of its own and
 * reassembles messages in buffers it keeps, per connection, while conn
 * reads into the loop's scratch buffer and hands whole frames over in
 * place, keeping only a partial tail. A decoder of the RFC's header is
 * small, works in place on those bytes, and is fuzzed (tests/fuzz/fuzz_ws.c).
 *
 * The pure parts (request parser, Accept key, frame header) are exported
 * for the tests and the fuzzer; the rest is for conn.c.
 */
#ifndef PARLEY_WS_H
#define PARLEY_WS_H

#include <stddef.h>
#include <stdint.h>

struct conn;
typedef struct ws_conn ws_conn;
typedef struct ws_config ws_config;

enum {
    WS_MAX_REQUEST = 8192,     /* the request head; longer: 431 */
    WS_MAX_PATH = 512,         /* the target up to '?'; longer: 414 */
    WS_MAX_FILE = 4 << 20,     /* a static file; larger ones are not served */
    WS_KEY_LEN = 24,           /* base64 of 16 bytes */
    WS_ACCEPT_LEN = 28,        /* base64 of a SHA-1 */
    WS_MAX_HEADER = 14,        /* the longest frame header: 2 + 8 + 4 (mask) */
    WS_MAX_SERVER_HEADER = 10, /* a server's frames are not masked */
};

/* Opcodes. */
enum {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

/* Close codes (RFC 6455, 7.4.1). */
enum {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_UNSUPPORTED = 1003,
    WS_CLOSE_BAD_DATA = 1007,
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
};

/* ---- configuration, shared by the connections of a class ---- */

/* origins: NULL or "" for same-origin only (the Origin's host[:port] must
 * equal the Host header), "*" for any, else a comma list of origins
 * ("https://chat.example.org", "http://localhost:8080") or of host[:port]
 * (any scheme). web_root: the directory of static files, NULL or "" for
 * none (every GET is 404). NULL with the reason in err. */
ws_config *ws_config_new(const char *origins, const char *web_root, char *err, size_t errlen);
void ws_config_free(ws_config *cfg);
/* 1 if a handshake with this Origin (origin_len 0: none was sent, i.e.
 * not a browser) and this Host may open a WebSocket, else 0. tls: the
 * connection is TLS (the default port of a Host without one). */
int ws_origin_allowed(const ws_config *cfg, const char *origin, size_t origin_len, const char *host,
                      size_t host_len, int tls);

/* ---- the HTTP request (pure) ---- */

typedef enum { WS_M_GET, WS_M_HEAD, WS_M_OTHER } ws_method;

/* A span of the request buffer (not NUL-terminated); len 0: absent. */
typedef struct ws_span {
    size_t off, len;
} ws_span;

typedef struct ws_request {
    ws_method method;
    int minor;      /* HTTP/1.<minor> */
    ws_span target; /* up to '?' */
    ws_span host, origin, key, version, upgrade, connection;
    size_t head_len; /* bytes of the head, blank line included */
} ws_request;

/* Looks at buf[0..len). 1: a whole request head, parsed into req; 0: not
 * yet whole; otherwise the status to answer (400, 414, 431, 505). Never
 * reads past len. */
int ws_parse_request(const char *buf, size_t len, ws_request *req);
/* What to answer to a parsed request before looking at files: 101 for a
 * valid upgrade; 0 for a plain GET/HEAD (a static file); else an error
 * status (400, 403, 405, 426). */
int ws_check_upgrade(const ws_config *cfg, const char *buf, const ws_request *req, int tls);
/* The Sec-WebSocket-Accept value for a key: base64(SHA-1(key + GUID)),
 * NUL-terminated. 0, or -1 if the digest failed. */
int ws_accept_key(const char *key, size_t key_len, char out[WS_ACCEPT_LEN + 1]);
/* Decodes the request target (percent escapes) into a path relative to
 * the web root (no leading '/', "index.html" for a directory), refusing
 * what could leave it: "..", ".", a name starting with '.', NUL, '\\',
 * an escaped '/', control bytes. 0, or -1 (404). */
int ws_target_path(const char *target, size_t len, char *out, size_t outlen);
/* The Content-Type for a file name, by its extension. */
const char *ws_content_type(const char *name);

/* ---- frames (pure) ---- */

typedef struct ws_frame {
    int fin, opcode, masked, rsv;
    uint8_t mask[4];
    uint64_t len;   /* payload bytes */
    size_t hdr_len; /* header bytes, mask included */
} ws_frame;

/* Parses the header at buf[0..len). 1: header whole (the payload may not
 * be); 0: read more; -1: malformed (a 64-bit length with its top bit set,
 * or a length not in its shortest form). Checks nothing else: see
 * ws_frame_check. */
int ws_frame_parse(const uint8_t *buf, size_t len, ws_frame *f);
/* What a server must refuse in a client's frame (0 if none, else the
 * close code): RSV bits, no mask, an unknown opcode, a control frame
 * fragmented or over 125 bytes, a continuation with no message begun or a
 * new message inside one (in_message: a fragmented message is open), a
 * text message (1003: we speak binary only), a message over max bytes
 * (already: its bytes so far) (1009). */
int ws_frame_check(const ws_frame *f, int in_message, uint64_t already, size_t max);
/* XORs p[0..len) with the mask, the first byte being byte `off` of the
 * payload. */
void ws_unmask(uint8_t *p, size_t len, const uint8_t mask[4], size_t off);
/* Writes an unmasked final frame header for len bytes: its length (2, 4 or
 * 10). */
size_t ws_frame_header(uint8_t *out, int opcode, uint64_t len);
/* 0 if a Close frame's payload is acceptable (empty, or a valid code and
 * UTF-8 reason), else the close code to answer with. *code: the code the
 * peer sent (1005: none). */
int ws_close_check(const uint8_t *p, size_t len, unsigned *code);

/* ---- for conn.c ---- */

/* A connection's WebSocket state, starting in HTTP. NULL on OOM. */
ws_conn *ws_conn_new(void);
void ws_conn_free(ws_conn *w);
/* The connection closed: drops the message buffer; nothing more is sent. */
void ws_conn_closed(ws_conn *w);
/* Reading was paused with a message in pieces: that wait was ours, so its
 * clock starts again. */
void ws_conn_restart_clock(ws_conn *w, uint32_t now);
/* 1 once upgraded (frames may be sent), 0 before, or after a close. */
int ws_conn_open(const ws_conn *w);
/* Parses buf[0..len) (the connection's input, unmasked in place):
 * handles the request, then frames, handing whole messages to the
 * handler. Returns the bytes used; the rest is kept for later. */
size_t ws_conn_input(struct conn *c, ws_conn *w, uint8_t *buf, size_t len);
/* If a fragmented message is being put together: 1 and since when. */
int ws_conn_partial_since(const ws_conn *w, uint32_t *since);
/* Queues bytes framed for TCP ([4-byte length][payload]...) as one binary
 * message each. 0 or -1 (closed). */
int ws_conn_send_framed(struct conn *c, const uint8_t *data, size_t len);
/* The server is closing a WebSocket: queue a Close frame (code) unless
 * one was sent. */
void ws_conn_goodbye(struct conn *c, ws_conn *w, unsigned code);

#endif
