/*
 * admin: parleyd's admin port (--admin-port): /metrics in the Prometheus
 * text format, /healthz (200 while the process runs) and /readyz (200 only
 * while what this node's role needs is reachable; 503 naming what is not).
 * Runs on the main thread's event base; the state it reports comes from
 * the metrics the other modules keep (common/metrics.h), so it holds no
 * pointer into them.
 */
#ifndef PARLEY_ADMIN_H
#define PARLEY_ADMIN_H

#include <stddef.h>

struct event_base;
typedef struct admin admin;

/* What /readyz requires of this node. */
typedef struct admin_needs {
    int registry;  /* a live ZooKeeper session */
    int bus_links; /* a gateway's two links to Redis */
    /* a service node's publishers: its last try to reach Redis worked
     * (they connect when there is something to publish) */
    int bus_publish;
    int store; /* the store's last commit did not lose its connection */
    /* services the gateway calls remotely: at least one node of each
     * ("user", "social", "message"); NULL ends the list */
    const char *services[4];
} admin_needs;

/* Listens on host:port. NULL on failure with the reason in err. */
admin *admin_new(struct event_base *base, const char *host, int port, const admin_needs *needs,
                 char *err, size_t errlen);
int admin_port(const admin *a);
void admin_free(admin *a);

#endif
