#include "server/admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/metrics.h"
#include "net/http.h"

struct admin {
    http_server *http;
    admin_needs needs;
};

static void admin_text(http_response *res, int status, const char *text)
{
    res->status = status;
    res->body = strdup(text);
    res->body_len = res->body ? strlen(text) : 0;
}

/* What keeps this node from serving, one line each, into buf ("" if
 * nothing does). */
static void admin_not_ready(const admin *a, char *buf, size_t len)
{
    const admin_needs *n = &a->needs;
    size_t at = 0;
    buf[0] = '\0';
#define NOTE(...)                                                                                  \
    do {                                                                                           \
        if (at < len)                                                                              \
            at += (size_t)snprintf(buf + at, len - at, __VA_ARGS__);                               \
    } while (0)
    if (n->registry && metrics_gauge_get(M_REGISTRY_UP, 0) != 1)
        NOTE("registry: not connected to ZooKeeper\n");
    if (n->bus_links && metrics_gauge_get(M_BUS_UP, 0) != 1)
        NOTE("bus: the command link to Redis is down\n");
    if (n->bus_links && metrics_gauge_get(M_BUS_UP, 1) != 1)
        NOTE("bus: the subscriber link to Redis is down\n");
    if (n->bus_publish && metrics_gauge_get(M_BUS_UP, 2) != 1)
        NOTE("bus: the last attempt to reach Redis failed\n");
    if (n->store && metrics_gauge_get(M_STORE_LOST, 0) != 0)
        NOTE("store: the database connection was lost\n");
    for (int i = 0; i < 4 && n->services[i]; i++)
        if (metrics_gauge_get(M_REGISTRY_NODES, metrics_service_label(n->services[i])) < 1)
            NOTE("services: no %s service node in the registry\n", n->services[i]);
#undef NOTE
}

static void admin_handle(void *arg, const http_request *req, http_response *res)
{
    admin *a = arg;
    if (strcmp(req->path, "/metrics") == 0) {
        if (metrics_render(&res->body, &res->body_len) < 0) {
            admin_text(res, 500, "out of memory\n");
            return;
        }
        res->status = 200;
        res->content_type = "text/plain; version=0.0.4; charset=utf-8";
    } else if (strcmp(req->path, "/healthz") == 0) {
        admin_text(res, 200, "ok\n");
    } else if (strcmp(req->path, "/readyz") == 0) {
        char why[512];
        admin_not_ready(a, why, sizeof(why));
        admin_text(res, why[0] ? 503 : 200, why[0] ? why : "ready\n");
    } else {
        admin_text(res, 404, "not found: try /metrics, /healthz or /readyz\n");
    }
}

admin *admin_new(struct event_base *base, const char *host, int port, const admin_needs *needs,
                 char *err, size_t errlen)
{
    admin *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->needs = *needs;
    char why[400];
    a->http = http_server_new(base, host, port, admin_handle, a, why, sizeof(why));
    if (!a->http) {
        snprintf(err, errlen, "admin port: %s", why);
        free(a);
        return NULL;
    }
    return a;
}

int admin_port(const admin *a)
{
    return http_server_port(a->http);
}

void admin_free(admin *a)
{
    if (!a)
        return;
    http_server_free(a->http);
    free(a);
}
