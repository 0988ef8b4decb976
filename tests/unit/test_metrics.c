/* The metrics module (common/metrics): counters summed over threads,
 * histograms, gauges, labels, the exposition text; and the admin port's
 * HTTP parsing and serving (net/http). */
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/metrics.h"
#include "net/http.h"
#include "services.pb-c.h"

/* The value of one series in a fresh exposition, or -1 if it is absent. */
static double value_of(const char *series)
{
    char *text;
    size_t len;
    assert_int_equal(metrics_render(&text, &len), 0);
    assert_int_equal(strlen(text), len);
    double v = -1;
    size_t n = strlen(series);
    for (char *line = text; line && *line;) {
        char *next = strchr(line, '\n');
        if (strncmp(line, series, n) == 0 && line[n] == ' ') {
            v = strtod(line + n + 1, NULL);
            break;
        }
        line = next ? next + 1 : NULL;
    }
    free(text);
    return v;
}

enum { THREADS = 4, PER_THREAD = 20000 };

static void *bump_many(void *arg)
{
    for (int i = 0; i < PER_THREAD; i++)
        metrics_inc(M_ACKS, 0);
    return NULL;
}

static void test_counters_sum_over_threads(void **state)
{
    double before = value_of("parley_acks_total");
    assert_true(before >= 0);
    pthread_t t[THREADS];
    /* Twice: the second round's threads adopt the shards of the first. */
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < THREADS; i++)
            assert_int_equal(pthread_create(&t[i], NULL, bump_many, NULL), 0);
        for (int i = 0; i < THREADS; i++)
            pthread_join(t[i], NULL);
    }
    assert_true(value_of("parley_acks_total") == before + 2.0 * THREADS * PER_THREAD);
}

static void test_labels_and_overflow(void **state)
{
    double ok = value_of("parley_logins_total{result=\"ok\"}");
    double failed = value_of("parley_logins_total{result=\"failed\"}");
    metrics_inc(M_LOGINS, 0);
    metrics_inc(M_LOGINS, 1);
    metrics_inc(M_LOGINS, 7); /* past the set: its last value */
    assert_true(value_of("parley_logins_total{result=\"ok\"}") == ok + 1);
    assert_true(value_of("parley_logins_total{result=\"failed\"}") == failed + 2);

    /* Two labels; a combination appears once it counts something. */
    const char *s = "parley_requests_total{type=\"send_direct\",result=\"busy\"}";
    assert_true(value_of(s) == -1);
    metrics_add(M_REQUESTS, PARLEY__CLIENT_FRAME__BODY_SEND_DIRECT, 11, 3);
    assert_true(value_of(s) == 3);
    metrics_add(M_REQUESTS, 1000, 1000, 1);
    assert_true(value_of("parley_requests_total{type=\"other\",result=\"other\"}") == 1);
    /* A gap in the type enum is never shown, even if counted into. */
    metrics_add(M_REQUESTS, 15, 0, 1);
    char *text;
    size_t len;
    assert_int_equal(metrics_render(&text, &len), 0);
    assert_null(strstr(text, "type=\"(null)\""));
    free(text);
}

static void test_histogram(void **state)
{
    metrics_observe(M_STORE_COMMIT_SECONDS, 0, 50);      /* 50 us */
    metrics_observe(M_STORE_COMMIT_SECONDS, 0, 1000);    /* 1 ms: in le=0.001 */
    metrics_observe(M_STORE_COMMIT_SECONDS, 0, 3000);    /* 3 ms */
    metrics_observe(M_STORE_COMMIT_SECONDS, 0, 9000000); /* 9 s: +Inf only */
    assert_true(value_of("parley_store_commit_duration_seconds_bucket{le=\"0.000100\"}") == 1);
    assert_true(value_of("parley_store_commit_duration_seconds_bucket{le=\"0.001000\"}") == 2);
    assert_true(value_of("parley_store_commit_duration_seconds_bucket{le=\"0.005000\"}") == 3);
    assert_true(value_of("parley_store_commit_duration_seconds_bucket{le=\"5.000000\"}") == 3);
    assert_true(value_of("parley_store_commit_duration_seconds_bucket{le=\"+Inf\"}") == 4);
    assert_true(value_of("parley_store_commit_duration_seconds_count") == 4);
    assert_true(value_of("parley_store_commit_duration_seconds_sum") == 9.00405);

    metrics_observe(M_STORE_APPEND_BATCH, 0, 3);
    assert_true(value_of("parley_store_append_batch_size_bucket{le=\"2\"}") == 0);
    assert_true(value_of("parley_store_append_batch_size_bucket{le=\"4\"}") == 1);
    assert_true(value_of("parley_store_append_batch_size_sum") == 3);
}

static int64_t seven(void *arg)
{
    return 7;
}

static void test_gauges(void **state)
{
    metrics_gauge_add(M_CONNECTIONS, 1, 5);
    metrics_gauge_add(M_CONNECTIONS, 1, -2);
    assert_int_equal(metrics_gauge_get(M_CONNECTIONS, 1), 3);
    assert_true(value_of("parley_connections{transport=\"tls\"}") == 3);
    metrics_gauge_set(M_REGISTRY_NODES, metrics_service_label("message"), 2);
    assert_true(value_of("parley_registry_nodes{service=\"message\"}") == 2);
    assert_int_equal(metrics_service_label("nonsense"), metrics_service_label("other"));

    int a, b;
    double base = value_of("parley_pool_queue_depth{pool=\"auth\"}");
    assert_int_equal(metrics_gauge_fn(M_POOL_QUEUE, metrics_pool_label("auth"), seven, &a), 0);
    assert_int_equal(metrics_gauge_fn(M_POOL_QUEUE, metrics_pool_label("auth"), seven, &b), 0);
    assert_true(value_of("parley_pool_queue_depth{pool=\"auth\"}") == base + 14);
    metrics_gauge_fn_remove(&a);
    assert_true(value_of("parley_pool_queue_depth{pool=\"auth\"}") == base + 7);
    metrics_gauge_fn_remove(&b);
    assert_true(value_of("parley_pool_queue_depth{pool=\"auth\"}") == base);
}

/* Every method of every service has its own series, named as in the
 * .proto: the table in metrics.c keeps up with services.proto. */
static void test_rpc_methods_match_the_proto(void **state)
{
    const ProtobufCServiceDescriptor *descs[] = {&parley__user_service__descriptor,
                                                 &parley__social_service__descriptor,
                                                 &parley__message_service__descriptor};
    const char *short_names[] = {"user", "social", "message"};
    for (int k = 0; k < 3; k++) {
        for (unsigned m = 0; m < descs[k]->n_methods; m++) {
            unsigned label = metrics_rpc_method(descs[k]->name, m);
            metrics_rpc_done(0, label, METRICS_RPC_TIMEOUT, metrics_now_us());
            char series[256];
            snprintf(
                series, sizeof(series),
                "parley_rpc_client_calls_total{service=\"%s\",method=\"%s\",status=\"timeout\"}",
                short_names[k], descs[k]->methods[m].name);
            assert_true(value_of(series) >= 1);
        }
    }
    assert_int_equal(metrics_rpc_method("parley.Nope", 0), metrics_rpc_method("x", 99));
}

/* Lines are comments or `name{labels} value`, and every name has a TYPE
 * before its samples (promtool checks the rest in test_metrics.py). */
static void test_exposition_shape(void **state)
{
    char *text;
    size_t len;
    assert_int_equal(metrics_render(&text, &len), 0);
    assert_true(len > 0 && text[len - 1] == '\n');
    char typed[128] = "";
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        if (strncmp(line, "# TYPE ", 7) == 0) {
            sscanf(line + 7, "%127s", typed);
        } else if (line[0] != '#') {
            assert_true(strncmp(line, typed, strlen(typed)) == 0);
            char *sp = strrchr(line, ' ');
            assert_non_null(sp);
            char *end;
            strtod(sp + 1, &end);
            assert_true(*end == '\0');
        }
        line = nl + 1;
    }
    free(text);
}

/* ---- HTTP ---- */

static int parse(const char *s, http_request *req)
{
    return http_parse_request(s, strlen(s), req);
}

static void test_http_parse(void **state)
{
    http_request r;
    assert_int_equal(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &r), 1);
    assert_string_equal(r.path, "/metrics");
    assert_int_equal(r.head, 0);
    assert_int_equal(parse("HEAD /readyz?verbose=1 HTTP/1.0\n\n", &r), 1);
    assert_string_equal(r.path, "/readyz");
    assert_int_equal(r.head, 1);
    /* Not whole yet. */
    assert_int_equal(parse("", &r), 0);
    assert_int_equal(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n", &r), 0);
    assert_int_equal(parse("GET /metrics HTTP/1.1\r\n\r", &r), 0);
    /* Refused. */
    assert_int_equal(parse("POST /metrics HTTP/1.1\r\n\r\n", &r), 405);
    assert_int_equal(parse("get /metrics HTTP/1.1\r\n\r\n", &r), 405);
    assert_int_equal(parse("GET /metrics HTTP/2.0\r\n\r\n", &r), 505);
    assert_int_equal(parse("GET /metrics FTP/1.1\r\n\r\n", &r), 400);
    assert_int_equal(parse("GET metrics HTTP/1.1\r\n\r\n", &r), 400);
    assert_int_equal(parse("GET http://x/metrics HTTP/1.1\r\n\r\n", &r), 400);
    assert_int_equal(parse("GET  /metrics HTTP/1.1\r\n\r\n", &r), 400);
    assert_int_equal(parse("GET /metrics\r\n\r\n", &r), 400);
    assert_int_equal(parse("GET /met\x01rics HTTP/1.1\r\n\r\n", &r), 400);
    assert_int_equal(parse("GET /metrics HTTP/1.1 extra\r\n\r\n", &r), 400);
    assert_int_equal(parse("\r\n\r\n", &r), 400);
    /* A NUL in the line (strlen would stop there; the parser must not). */
    const char nul[] = "GET /a\0b HTTP/1.1\r\n\r\n";
    assert_int_equal(http_parse_request(nul, sizeof(nul) - 1, &r), 400);
    /* Sizes: a long path, a head that never ends. */
    char big[HTTP_MAX_REQUEST + 64];
    int n = snprintf(big, sizeof(big), "GET /");
    memset(big + n, 'a', HTTP_MAX_PATH);
    snprintf(big + n + HTTP_MAX_PATH, sizeof(big) - n - HTTP_MAX_PATH, " HTTP/1.1\r\n\r\n");
    assert_int_equal(parse(big, &r), 414);
    memset(big, 'x', sizeof(big));
    memcpy(big, "GET / HTTP/1.1\r\n", 16);
    assert_int_equal(http_parse_request(big, HTTP_MAX_REQUEST - 1, &r), 0);
    assert_int_equal(http_parse_request(big, HTTP_MAX_REQUEST, &r), 431);
    /* The longest path that fits. */
    n = snprintf(big, sizeof(big), "GET /");
    memset(big + n, 'b', HTTP_MAX_PATH - 1);
    snprintf(big + n + HTTP_MAX_PATH - 1, 32, " HTTP/1.1\r\n\r\n");
    assert_int_equal(parse(big, &r), 1);
    assert_int_equal(strlen(r.path), HTTP_MAX_PATH);
}

static void handler(void *arg, const http_request *req, http_response *res)
{
    (*(int *)arg)++;
    res->status = strcmp(req->path, "/hello") == 0 ? 200 : 404;
    res->body = strdup("hi\n");
    res->body_len = 3;
}

/* Sends raw, runs the server's base until the server closes, and returns
 * what came back (malloc'd). */
static char *exchange(struct event_base *base, int port, const char *raw, size_t rawlen)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    if (rawlen)
        assert_int_equal(send(fd, raw, rawlen, MSG_NOSIGNAL), (ssize_t)rawlen);
    size_t cap = 1 << 16, len = 0;
    char *out = calloc(1, cap);
    for (int i = 0; i < 2000; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        ssize_t n = recv(fd, out + len, cap - len - 1, MSG_DONTWAIT);
        if (n == 0)
            break;
        if (n > 0)
            len += (size_t)n;
        else
            usleep(1000);
    }
    close(fd);
    return out;
}

static void test_http_server(void **state)
{
    struct event_base *base = event_base_new();
    int calls = 0;
    char err[256];
    http_server *s = http_server_new(base, "127.0.0.1", 0, handler, &calls, err, sizeof(err));
    assert_non_null(s);
    int port = http_server_port(s);
    assert_true(port > 0);

    const char *get = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
    char *out = exchange(base, port, get, strlen(get));
    assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(out, "Content-Length: 3\r\n"));
    assert_non_null(strstr(out, "\r\n\r\nhi\n"));
    free(out);

    const char *head = "HEAD /nope HTTP/1.1\r\n\r\n";
    out = exchange(base, port, head, strlen(head));
    assert_non_null(strstr(out, "HTTP/1.1 404 "));
    assert_null(strstr(out, "hi\n"));
    free(out);
    assert_int_equal(calls, 2);

    /* Refused before the handler. */
    const char *post = "POST /hello HTTP/1.1\r\n\r\n";
    out = exchange(base, port, post, strlen(post));
    assert_non_null(strstr(out, "HTTP/1.1 405 "));
    assert_non_null(strstr(out, "Allow: GET, HEAD\r\n"));
    free(out);
    /* Exactly the limit: bytes left unread would make the close a reset. */
    char flood[HTTP_MAX_REQUEST];
    memset(flood, 'A', sizeof(flood));
    out = exchange(base, port, flood, sizeof(flood));
    assert_non_null(strstr(out, "HTTP/1.1 4"));
    free(out);
    assert_int_equal(calls, 2);

    http_server_free(s);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counters_sum_over_threads),
        cmocka_unit_test(test_labels_and_overflow),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_gauges),
        cmocka_unit_test(test_rpc_methods_match_the_proto),
        cmocka_unit_test(test_exposition_shape),
        cmocka_unit_test(test_http_parse),
        cmocka_unit_test(test_http_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
