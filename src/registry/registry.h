/*
 * registry: who provides which service, kept in ZooKeeper. Every service
 * node registers an ephemeral sequential znode under
 * /parley/services/<service>/ whose data is its "host:port"; callers watch
 * the children of that path and keep their view current. A node whose
 * ZooKeeper session expires registers again as soon as it has a new one.
 *
 * Thread-safety: every function may be called from any thread. The first
 * watch callback runs on the caller's thread inside registry_watch; later
 * ones on the registry's own worker thread, one at a time. Callbacks must not
 * block: they should hand the list over to whoever uses it. They may log,
 * post work and call registry_register/registry_watch/registry_list_all,
 * but not registry_free.
 */
#ifndef PARLEY_REGISTRY_H
#define PARLEY_REGISTRY_H

#include <stddef.h>

typedef struct registry registry;

/* One provider of a service. */
typedef struct registry_node {
    /* the znode's name, NAME-SEQUENCE: "user1-0000000003" for a node
     * registered as user1 (registry_register_named), "node-0000000003"
     * otherwise. Unique (ZooKeeper's sequence), so the ring's keys are too;
     * registry_node_name gives NAME. */
    const char *name;
    const char *addr; /* "host:port" */
} registry_node;

/* The current providers of `service` (possibly none), sorted by name. The
 * array and its strings are valid during the call only. */
typedef void (*registry_watch_fn)(void *arg, const char *service, const registry_node *nodes,
                                  size_t n);

/* Connects to the ZooKeeper ensemble `hosts` ("h1:p1,h2:p2,...") with the
 * given session timeout. Waits up to connect_timeout_ms for a session and
 * fails (NULL, reason in err) if none comes: a clear error at start beats a
 * server that silently serves nobody. The caller owns the registry. */
registry *registry_zk_new(const char *hosts, int session_timeout_ms, int connect_timeout_ms,
                          char *err, size_t errlen);
/* The same with ZooKeeper digest authentication: auth is "USER:PASS", added
 * to every session the registry opens, and every znode the registry creates
 * (the /parley tree and the registrations) gets an ACL that gives that
 * identity all rights and everyone else none, not even read. auth NULL or
 * "": open ACLs, as registry_zk_new. */
registry *registry_zk_new_auth(const char *hosts, int session_timeout_ms, int connect_timeout_ms,
                               const char *auth, char *err, size_t errlen);
/* Closes the session (its ephemeral nodes vanish at once) and frees. */
void registry_free(registry *r);

/* Publishes addr as a provider of service (creating the parent path) and
 * keeps it published across session expiry. 0, or -1 with the reason in err. */
int registry_register(registry *r, const char *service, const char *addr, char *err, size_t errlen);
/* registry_register under the node's name (1..REGISTRY_NAME_MAX of
 * letters, digits, '.', '_', '-'): the znode is NAME-SEQUENCE. */
enum { REGISTRY_NAME_MAX = 48 };
int registry_register_named(registry *r, const char *service, const char *name, const char *addr,
                            char *err, size_t errlen);
/* 1 if name is a valid node name (above). */
int registry_name_ok(const char *name);
/* The node name in a znode's name (what precedes "-SEQUENCE"), into out
 * (outlen bytes). */
void registry_node_name(const char *znode, char *out, size_t outlen);
/* Calls fn with the current providers of service now (from the calling
 * thread, before returning) and again after every change, until
 * registry_free. 0, or -1 with the reason in err. */
int registry_watch(registry *r, const char *service, registry_watch_fn fn, void *arg, char *err,
                   size_t errlen);
/* Every service name under /parley/services and each one's providers, for
 * admin tools: calls fn once per service. Synchronous. 0 or -1. */
int registry_list_all(registry *r, registry_watch_fn fn, void *arg, char *err, size_t errlen);

#endif
