/*
 * filebench: parley-bench's "file" scenario. One user uploads a file of
 * --file-mib MiB in chunks (8 in flight, each as large as the server takes)
 * and sends it to another, who downloads it the same way; the figures are
 * the upload's and the download's throughput in MB/s (10^6 bytes), each
 * from its first request to its last reply, and the download's SHA-256 is
 * checked. Plain blocking sockets: two connections, nothing else to drive.
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <openssl/evp.h>

#include "common/frame.h"
#include "parley.pb-c.h"

enum { FB_WINDOW = 8, FB_MAX_IN = 4 * 1024 * 1024 };

typedef struct {
    int fd;
    uint64_t next_id;
    uint8_t *buf; /* one frame read */
} fb_conn;

static double fb_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int fb_connect(fb_conn *c, const char *host, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return -1;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->next_id = 1;
    c->buf = malloc(FB_MAX_IN);
    return c->buf ? 0 : -1;
}

static int fb_write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int fb_read_all(int fd, uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Sends f with the next id; returns the id, 0 on failure. */
static uint64_t fb_send(fb_conn *c, Parley__ClientFrame *f)
{
    f->id = c->next_id++;
    size_t n = parley__client_frame__get_packed_size(f);
    uint8_t *p = malloc(FRAME_HDR + n);
    if (!p)
        return 0;
    frame_put_header(p, (uint32_t)n);
    parley__client_frame__pack(f, p + FRAME_HDR);
    int r = fb_write_all(c->fd, p, FRAME_HDR + n);
    free(p);
    return r < 0 ? 0 : f->id;
}

/* The next reply (a frame with an id; pushes are skipped), or NULL. */
static Parley__ServerFrame *fb_reply(fb_conn *c)
{
    for (;;) {
        uint8_t hdr[FRAME_HDR];
        if (fb_read_all(c->fd, hdr, FRAME_HDR) < 0)
            return NULL;
        uint32_t n =
            (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
        if (n > FB_MAX_IN || fb_read_all(c->fd, c->buf, n) < 0)
            return NULL;
        Parley__ServerFrame *f = parley__server_frame__unpack(NULL, n, c->buf);
        if (!f)
            return NULL;
        if (f->id)
            return f;
        parley__server_frame__free_unpacked(f, NULL);
    }
}

/* One request and its reply: the reply if it has body `want`, else NULL
 * with why said on stderr. */
static Parley__ServerFrame *fb_call(fb_conn *c, Parley__ClientFrame *f, int want, const char *what)
{
    if (!fb_send(c, f)) {
        fprintf(stderr, "parley-bench: file: %s: cannot send\n", what);
        return NULL;
    }
    Parley__ServerFrame *r = fb_reply(c);
    if (r && (int)r->body_case == want)
        return r;
    fprintf(stderr, "parley-bench: file: %s: %s\n", what,
            !r                           ? "connection lost"
            : r->error && r->error->text ? r->error->text
                                         : "refused");
    if (r)
        parley__server_frame__free_unpacked(r, NULL);
    return NULL;
}

static int fb_login(fb_conn *c, const char *name)
{
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    Parley__Hello h = PARLEY__HELLO__INIT;
    Parley__Register reg = PARLEY__REGISTER__INIT;
    Parley__Login login = PARLEY__LOGIN__INIT;
    h.version = 1;
    h.client = "parley-bench";
    f.body_case = PARLEY__CLIENT_FRAME__BODY_HELLO;
    f.hello = &h;
    Parley__ServerFrame *r = fb_call(c, &f, PARLEY__SERVER_FRAME__BODY_HELLO_OK, "hello");
    if (!r)
        return -1;
    parley__server_frame__free_unpacked(r, NULL);
    reg.name = (char *)name;
    reg.password = "benchpass1";
    f.body_case = PARLEY__CLIENT_FRAME__BODY_REG;
    f.reg = &reg;
    r = fb_call(c, &f, PARLEY__SERVER_FRAME__BODY_REGISTER_OK, "register");
    if (!r)
        return -1;
    uint64_t id = r->register_ok->user_id;
    parley__server_frame__free_unpacked(r, NULL);
    login.name = (char *)name;
    login.password = "benchpass1";
    f.body_case = PARLEY__CLIENT_FRAME__BODY_LOGIN;
    f.login = &login;
    r = fb_call(c, &f, PARLEY__SERVER_FRAME__BODY_LOGIN_OK, "login");
    if (!r)
        return -1;
    parley__server_frame__free_unpacked(r, NULL);
    return (int)id;
}

static void fb_json(const char *path, const char *label, const char *host, int port, bool ok,
                    const char *why, uint64_t size, uint32_t chunk, double up_s, double down_s)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return;
    fprintf(f,
            "{\"scenario\":\"file\",\"label\":\"%s\",\"ok\":%s,\"failure\":\"%s\",\n"
            "\"settings\":{\"host\":\"%s\",\"ports\":[%d],\"size\":%llu,\"inflight\":%d,"
            "\"chunk\":%u},\n\"results\":{",
            label, ok ? "true" : "false", why, host, port, (unsigned long long)size, FB_WINDOW,
            chunk);
    if (ok)
        fprintf(f,
                "\"upload_s\":%.3f,\"download_s\":%.3f,\"upload_mb_per_s\":%.1f,"
                "\"download_mb_per_s\":%.1f",
                up_s, down_s, size / up_s / 1e6, size / down_s / 1e6);
    fprintf(f, "}}\n");
    fclose(f);
}

/* Uploads data through c with up to FB_WINDOW chunks in flight. 0 or -1. */
static int fb_upload(fb_conn *c, const uint8_t *data, uint64_t size, const uint8_t sha[32],
                     uint32_t *chunk_out)
{
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    Parley__FileBegin b = PARLEY__FILE_BEGIN__INIT;
    b.name = "bench.bin";
    b.type = "application/octet-stream";
    b.size = size;
    b.sha256.data = (uint8_t *)sha;
    b.sha256.len = 32;
    f.body_case = PARLEY__CLIENT_FRAME__BODY_FILE_BEGIN;
    f.file_begin = &b;
    Parley__ServerFrame *r = fb_call(c, &f, PARLEY__SERVER_FRAME__BODY_FILE_BEGIN_OK, "file_begin");
    if (!r)
        return -1;
    uint64_t id = r->file_begin_ok->upload_id, off = r->file_begin_ok->offset;
    uint32_t chunk = r->file_begin_ok->chunk_max ? r->file_begin_ok->chunk_max : 32768;
    parley__server_frame__free_unpacked(r, NULL);
    *chunk_out = chunk;
    unsigned inflight = 0;
    bool complete = off >= size;
    while (!complete) {
        while (inflight < FB_WINDOW && off < size) {
            Parley__FileChunk ch = PARLEY__FILE_CHUNK__INIT;
            size_t n = size - off < chunk ? (size_t)(size - off) : chunk;
            ch.upload_id = id;
            ch.offset = off;
            ch.data.data = (uint8_t *)data + off;
            ch.data.len = n;
            f.body_case = PARLEY__CLIENT_FRAME__BODY_FILE_CHUNK;
            f.file_chunk = &ch;
            if (!fb_send(c, &f))
                return -1;
            off += n;
            inflight++;
        }
        r = fb_reply(c);
        if (!r || r->body_case != PARLEY__SERVER_FRAME__BODY_FILE_CHUNK_OK) {
            fprintf(stderr, "parley-bench: file: chunk: %s\n",
                    r && r->error && r->error->text ? r->error->text : "refused or lost");
            if (r)
                parley__server_frame__free_unpacked(r, NULL);
            return -1;
        }
        complete = r->file_chunk_ok->complete;
        parley__server_frame__free_unpacked(r, NULL);
        inflight--;
    }
    return 0;
}

/* Downloads message msgid's file through c into out (size bytes). */
static int fb_download(fb_conn *c, uint64_t msgid, uint8_t *out, uint64_t size, uint32_t chunk)
{
    uint64_t off = 0, got = 0;
    unsigned inflight = 0;
    while (got < size) {
        while (inflight < FB_WINDOW && off < size) {
            Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
            Parley__FileGet g = PARLEY__FILE_GET__INIT;
            g.msgid = msgid;
            g.offset = off;
            g.limit = chunk;
            f.body_case = PARLEY__CLIENT_FRAME__BODY_FILE_GET;
            f.file_get = &g;
            if (!fb_send(c, &f))
                return -1;
            off += size - off < chunk ? size - off : chunk;
            inflight++;
        }
        Parley__ServerFrame *r = fb_reply(c);
        if (!r || r->body_case != PARLEY__SERVER_FRAME__BODY_FILE_DATA ||
            r->file_data->offset + r->file_data->data.len > size) {
            fprintf(stderr, "parley-bench: file: file_get: %s\n",
                    r && r->error && r->error->text ? r->error->text : "refused or lost");
            if (r)
                parley__server_frame__free_unpacked(r, NULL);
            return -1;
        }
        memcpy(out + r->file_data->offset, r->file_data->data.data, r->file_data->data.len);
        got += r->file_data->data.len;
        parley__server_frame__free_unpacked(r, NULL);
        inflight--;
    }
    return 0;
}

int filebench_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'h'},     {"port", required_argument, NULL, 'p'},
        {"json", required_argument, NULL, 'j'},     {"label", required_argument, NULL, 'l'},
        {"file-mib", required_argument, NULL, 'm'}, {NULL, 0, NULL, 0},
    };
    const char *host = "127.0.0.1", *json = NULL, *label = "";
    int port = 0;
    long mib = 25;
    opterr = 0; /* the common options of the other scenarios are ignored */
    optind = 2;
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (ch == 'h')
            host = optarg;
        else if (ch == 'p')
            port = atoi(optarg);
        else if (ch == 'j')
            json = optarg;
        else if (ch == 'l')
            label = optarg;
        else if (ch == 'm')
            mib = atol(optarg);
    }
    if (port <= 0 || mib <= 0 || mib > 1024) {
        fprintf(stderr, "usage: parley-bench file --port PORT [--file-mib N] [--json FILE]\n");
        return 2;
    }
    uint64_t size = (uint64_t)mib * 1024 * 1024;
    uint8_t *data = malloc(size), *back = malloc(size), sha[32], got[32];
    if (!data || !back)
        return 1;
    uint64_t x = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ULL | 1;
    for (uint64_t i = 0; i < size; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        data[i] = (uint8_t)x;
    }
    unsigned len = 0;
    EVP_Digest(data, size, sha, &len, EVP_sha256(), NULL);
    char a_name[32], b_name[32];
    snprintf(a_name, sizeof a_name, "fa%ld", (long)getpid());
    snprintf(b_name, sizeof b_name, "fb%ld", (long)getpid());
    fb_conn a = {0}, b = {0};
    const char *why = "";
    double up_s = 0, down_s = 0;
    uint32_t chunk = 0;
    int bid;
    if (fb_connect(&a, host, port) < 0 || fb_connect(&b, host, port) < 0) {
        why = "cannot connect";
        goto out;
    }
    if (fb_login(&a, a_name) < 0 || (bid = fb_login(&b, b_name)) < 0) {
        why = "cannot log in";
        goto out;
    }
    double t0 = fb_now();
    if (fb_upload(&a, data, size, sha, &chunk) < 0) {
        why = "the upload failed";
        goto out;
    }
    up_s = fb_now() - t0;
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    Parley__SendDirect sd = PARLEY__SEND_DIRECT__INIT;
    Parley__Attachment att = PARLEY__ATTACHMENT__INIT;
    att.sha256.data = sha;
    att.sha256.len = 32;
    sd.to = (uint64_t)bid;
    sd.body = "";
    sd.attachment = &att;
    f.body_case = PARLEY__CLIENT_FRAME__BODY_SEND_DIRECT;
    f.send_direct = &sd;
    Parley__ServerFrame *r = fb_call(&a, &f, PARLEY__SERVER_FRAME__BODY_SEND_OK, "send");
    if (!r) {
        why = "the send failed";
        goto out;
    }
    uint64_t msgid = r->send_ok->msgid;
    parley__server_frame__free_unpacked(r, NULL);
    t0 = fb_now();
    if (fb_download(&b, msgid, back, size, chunk) < 0) {
        why = "the download failed";
        goto out;
    }
    down_s = fb_now() - t0;
    EVP_Digest(back, size, got, &len, EVP_sha256(), NULL);
    if (memcmp(got, sha, 32) != 0)
        why = "the file downloaded differs from the one uploaded";
out:
    if (a.fd > 0)
        close(a.fd);
    if (b.fd > 0)
        close(b.fd);
    free(a.buf);
    free(b.buf);
    free(data);
    free(back);
    bool ok = why[0] == '\0';
    if (ok)
        fprintf(stderr,
                "[file] %ld MiB in %u-byte chunks, %d in flight: up %.1f MB/s (%.2f s), "
                "down %.1f MB/s (%.2f s), SHA-256 checked\n",
                mib, chunk, FB_WINDOW, size / up_s / 1e6, up_s, size / down_s / 1e6, down_s);
    else
        fprintf(stderr, "parley-bench: FAIL: file: %s\n", why);
    if (json)
        fb_json(json, label, host, port, ok, why, size, chunk, up_s, down_s);
    return ok ? 0 : 1;
}
