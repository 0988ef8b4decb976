/*
 * The registry on ZooKeeper, through the multi-threaded C client.
 *
 * Threads. The client library runs an I/O thread and a completion thread per
 * handle. Our watchers run on the completion thread; they only flip flags
 * under r->mu and wake the registry's own worker thread, which does the rest:
 * it replaces an expired session, re-creates registrations, re-reads watched
 * services and calls the watch callbacks. Public calls talk to ZooKeeper
 * synchronously on the caller's thread (allowed on any thread but the
 * completion thread, which must never wait for a reply).
 *
 * Locks, in the only order they are ever nested:
 *   w->run_mu   one watch's read + delivery, so its callbacks see lists in order
 *   r->reg_mu   creating registration nodes, so a node is never made twice
 *   r->zh_lock  read while using r->zh, write while the worker replaces it
 *   r->mu       flags and lists; held briefly and never across a ZooKeeper
 *               call, because the completion thread takes it
 * User callbacks run with only their own watch's run_mu held.
 *
 * Access. With digest credentials every new handle gets zoo_add_auth before
 * anything else is sent (the client re-sends it on reconnects of the same
 * session), and every create uses ZOO_CREATOR_ALL_ACL: the creator's
 * authenticated identity has all rights, nobody else has any. Every node of
 * the cluster uses the same credentials, so each may read and delete what
 * another made. Without credentials the ACLs are open, as they were.
 *
 * Watch callbacks: the first runs on the caller's thread inside
 * registry_watch, later ones on the worker thread, one at a time. They may
 * log, post work, and call registry_register, registry_watch and
 * registry_list_all (these block while they talk to ZooKeeper, delaying
 * other deliveries, and cannot succeed while the worker is needed to renew an
 * expired session); they must not call registry_free or wait for another
 * watch's delivery.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zookeeper/zookeeper.h>

#include "common/log.h"
#include "common/metrics.h"
#include "registry/registry.h"

#define ZK_SERVICES       "/parley/services"
#define ZK_PATH_MAX       512
#define ZK_BASE_MAX       192 /* "/parley/services/<service>" */
#define ZK_DATA_MAX       512 /* largest "host:port" we accept */
#define ZK_NAME_MAX       128 /* longest service name */
#define ZK_RETRY_MS       200 /* pause between attempts after a transient failure */
#define ZK_RENEW_RETRY_MS 1000

/* Test hook (not in registry.h): the server the handle talks to, so a test
 * can kill that one. 0, or -1 if none. */
int registry_zk_current_server(registry *r, char *buf, size_t len);

/* One zhandle's context: events from a replaced handle are told apart. */
typedef struct zk_sess {
    registry *r;
    unsigned gen;
    int state; /* last session state reported, under r->mu */
} zk_sess;

/* A sorted list of providers; every string is malloc'd. */
typedef struct zk_list {
    registry_node *nodes;
    size_t n;
} zk_list;

typedef struct zk_reg {
    struct zk_reg *next;
    char *service;
    char *addr;
    char *name;             /* the znode is NAME-SEQUENCE */
    char path[ZK_PATH_MAX]; /* the node, valid while gen is current */
    unsigned gen;           /* session generation the node lives in; 0: none */
    unsigned lost_gen;      /* a create in this generation may have succeeded unseen */
} zk_reg;

typedef struct zk_watch {
    struct zk_watch *next;
    registry *r;
    char *service;
    char *path;
    registry_watch_fn fn;
    void *arg;
    pthread_mutex_t run_mu;
    int dirty; /* under r->mu: the list must be read again */
    int dead;  /* under r->mu: registry_watch failed; kept only for ZooKeeper's sake */
    /* under run_mu */
    int delivered;
    int failing;
    zk_list last;
} zk_watch;

struct registry {
    char *hosts;
    char *auth; /* "user:pass" for the digest scheme; NULL: open ACLs */
    struct ACL_vector *acl;
    int session_timeout_ms;
    int connect_timeout_ms;

    pthread_rwlock_t zh_lock;
    zhandle_t *zh; /* NULL while a new one cannot be made */
    unsigned gen;  /* changes with zh; read under zh_lock or r->mu */

    pthread_mutex_t reg_mu;
    zk_reg *regs; /* under reg_mu */

    pthread_mutex_t mu;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    zk_sess *sess;       /* the current handle's context */
    zk_watch *watches;
    int stop;
    int expired;
    int regs_pending;

    pthread_t worker;
    int worker_started;
};

static pthread_once_t zk_once = PTHREAD_ONCE_INIT;

static void zk_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void zk_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int64_t zk_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits on r->cond (r->mu held) until at_ms at the latest. */
static void zk_wait_until(registry *r, int64_t at_ms)
{
    struct timespec ts = {.tv_sec = at_ms / 1000, .tv_nsec = (long)(at_ms % 1000) * 1000000};
    pthread_cond_timedwait(&r->cond, &r->mu, &ts);
}

/* A short pause before retrying; an event (say, a new session) ends it early. */
static void zk_pause(registry *r, int64_t deadline)
{
    int64_t at = zk_now_ms() + ZK_RETRY_MS;
    pthread_mutex_lock(&r->mu);
    zk_wait_until(r, at < deadline ? at : deadline);
    pthread_mutex_unlock(&r->mu);
}

/* Failures that a reconnect or a new session may cure. */
static int zk_transient(int rc)
{
    return rc == ZCONNECTIONLOSS || rc == ZOPERATIONTIMEOUT || rc == ZSESSIONEXPIRED ||
           rc == ZINVALIDSTATE || rc == ZSESSIONMOVED || rc == ZCLOSING || rc == ZTHROTTLEDOP;
}

/* The library's own lines go to our log at debug level: connection errors
 * during a fail-over are expected and we report state changes ourselves. */
static void zk_log_cb(const char *msg)
{
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        n--;
    log_debug("zookeeper: %.*s", (int)n, msg);
}

static void zk_init_library(void)
{
    /* Global in the library; lines below WARN are not even formatted. */
    zoo_set_debug_level(ZOO_LOG_LEVEL_WARN);
}

static int zk_valid_service(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > ZK_NAME_MAX || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '/' || c < 0x21 || c == 0x7f)
            return 0;
    }
    return 1;
}

static void zk_list_free(zk_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free((void *)l->nodes[i].name);
        free((void *)l->nodes[i].addr);
    }
    free(l->nodes);
    l->nodes = NULL;
    l->n = 0;
}

static int zk_list_equal(const zk_list *a, const zk_list *b)
{
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->nodes[i].name, b->nodes[i].name) != 0 ||
            strcmp(a->nodes[i].addr, b->nodes[i].addr) != 0)
            return 0;
    }
    return 1;
}

static int zk_node_cmp(const void *a, const void *b)
{
    return strcmp(((const registry_node *)a)->name, ((const registry_node *)b)->name);
}

static int zk_str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads the providers under path: its children (with a watch for w if given)
 * and each child's data. A child that vanishes meanwhile is left out. */
static int zk_fetch(zhandle_t *zh, const char *path, zk_watch *w, watcher_fn wfn, zk_list *out)
{
    struct String_vector kids = {0, NULL};
    zk_list l = {NULL, 0};
    int rc = w ? zoo_wget_children(zh, path, wfn, w, &kids) : zoo_get_children(zh, path, 0, &kids);
    if (rc != ZOK)
        return rc;
    l.nodes = calloc(kids.count > 0 ? (size_t)kids.count : 1, sizeof *l.nodes);
    if (!l.nodes) {
        rc = ZSYSTEMERROR;
        goto out;
    }
    for (int i = 0; i < kids.count; i++) {
        char child[ZK_PATH_MAX];
        char data[ZK_DATA_MAX];
        int len = (int)sizeof data - 1;
        struct Stat st;
        if ((size_t)snprintf(child, sizeof child, "%s/%s", path, kids.data[i]) >= sizeof child)
            continue; /* not a name we would have made */
        rc = zoo_get(zh, child, 0, data, &len, &st);
        if (rc == ZNONODE)
            continue;
        if (rc != ZOK)
            goto out;
        /* No data, or more than fits: not a node of ours. */
        if (len <= 0 || st.dataLength > len)
            continue;
        data[len] = '\0';
        char *name = strdup(kids.data[i]);
        char *addr = strdup(data);
        if (!name || !addr) {
            free(name);
            free(addr);
            rc = ZSYSTEMERROR;
            goto out;
        }
        l.nodes[l.n].name = name;
        l.nodes[l.n].addr = addr;
        l.n++;
    }
    qsort(l.nodes, l.n, sizeof *l.nodes, zk_node_cmp);
    rc = ZOK;
out:
    deallocate_String_vector(&kids);
    if (rc == ZOK)
        *out = l;
    else
        zk_list_free(&l);
    return rc;
}

/* Creates path and its parents as persistent nodes if missing. */
static int zk_ensure_path(zhandle_t *zh, const char *path, struct ACL_vector *acl)
{
    char buf[ZK_PATH_MAX];
    size_t len = strlen(path);
    if (len >= sizeof buf)
        return ZBADARGUMENTS;
    /* A read is cheaper than creates that fail on the leader. */
    struct Stat st;
    int rc = zoo_exists(zh, path, 0, &st);
    if (rc != ZNONODE)
        return rc;
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        rc = zoo_create(zh, buf, NULL, -1, acl, ZOO_PERSISTENT, NULL, 0);
        buf[i] = c;
        if (rc != ZOK && rc != ZNODEEXISTS)
            return rc;
    }
    return ZOK;
}

/* Gives a new handle the registry's credentials, before anything else can
 * use it: the library keeps them for the handle's reconnects and sends them
 * first on each. ZOK without credentials. */
static int zk_add_auth(registry *r, zhandle_t *zh)
{
    if (!r->auth)
        return ZOK;
    /* The library answers ZINVALIDSTATE while its state is 0, which it is
     * for a moment after each failed connection attempt (one server of the
     * ensemble down): that is not a refusal, so try again for a while. */
    int rc = ZINVALIDSTATE;
    for (int i = 0; i < 500; i++) {
        rc = zoo_add_auth(zh, "digest", r->auth, (int)strlen(r->auth), NULL, NULL);
        if (rc != ZINVALIDSTATE || is_unrecoverable(zh) != ZOK)
            break;
        usleep(10 * 1000);
    }
    return rc;
}

/* ---- watchers: run on the client's completion thread, so never block ---- */

static void zk_global_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    zk_sess *s = ctx;
    registry *r = s->r;
    if (type != ZOO_SESSION_EVENT)
        return;
    pthread_mutex_lock(&r->mu);
    int current = r->sess == s;
    int prev = s->state;
    unsigned gen = s->gen;
    s->state = state;
    if (current && state == ZOO_CONNECTED_STATE) {
        /* Same session or a new one: re-read everything, and publish what
         * the new session lacks. */
        for (zk_watch *w = r->watches; w; w = w->next)
            w->dirty = 1;
        r->regs_pending = 1;
    } else if (current && state == ZOO_EXPIRED_SESSION_STATE) {
        r->expired = 1;
    }
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->mu);

    if (!current)
        return;
    metrics_gauge_set(M_REGISTRY_UP, 0, state == ZOO_CONNECTED_STATE);
    if (state == ZOO_CONNECTING_STATE)
        log_warn(
            "registry: lost the connection to ZooKeeper; reconnecting, keeping the last lists");
    else if (state == ZOO_EXPIRED_SESSION_STATE)
        log_warn("registry: ZooKeeper session expired; opening a new one");
    else if (state == ZOO_AUTH_FAILED_STATE)
        log_error("registry: ZooKeeper refused our credentials (--zk-auth)");
    else if (state == ZOO_CONNECTED_STATE && prev == ZOO_CONNECTING_STATE)
        log_info("registry: reconnected to ZooKeeper");
    else if (state == ZOO_CONNECTED_STATE && gen > 1)
        log_info("registry: new ZooKeeper session established");
}

static void zk_child_watcher(zhandle_t *zh, int type, int state, const char *path, void *ctx)
{
    zk_watch *w = ctx;
    /* Session events reach every watcher; the global one handles them. */
    if (type == ZOO_SESSION_EVENT)
        return;
    registry *r = w->r;
    pthread_mutex_lock(&r->mu);
    w->dirty = 1;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->mu);
}

/* ---- registrations ---- */

static int zk_reg_create(registry *r, zhandle_t *zh, zk_reg *g)
{
    char base[ZK_BASE_MAX], prefix[ZK_PATH_MAX], made[ZK_PATH_MAX];
    snprintf(base, sizeof base, ZK_SERVICES "/%s", g->service);
    int rc = zk_ensure_path(zh, base, r->acl);
    if (rc != ZOK)
        return rc;
    snprintf(prefix, sizeof prefix, "%s/%s-", base, g->name);
    rc = zoo_create(zh, prefix, g->addr, (int)strlen(g->addr), r->acl, ZOO_EPHEMERAL_SEQUENTIAL,
                    made, (int)sizeof made);
    if (rc == ZOK)
        snprintf(g->path, sizeof g->path, "%s", made);
    return rc;
}

/* After a lost reply to a create, the node may exist: look for one of this
 * session's with our address that no other registration owns. ZOK if
 * adopted, ZNONODE if there is none. reg_mu held. */
static int zk_reg_adopt(registry *r, zhandle_t *zh, zk_reg *g, unsigned gen)
{
    char base[ZK_BASE_MAX];
    struct String_vector kids = {0, NULL};
    const clientid_t *id = zoo_client_id(zh);
    snprintf(base, sizeof base, ZK_SERVICES "/%s", g->service);
    int rc = zoo_get_children(zh, base, 0, &kids);
    if (rc != ZOK)
        return rc;
    rc = ZNONODE;
    for (int i = 0; i < kids.count; i++) {
        char child[ZK_PATH_MAX];
        char data[ZK_DATA_MAX];
        int len = (int)sizeof data;
        struct Stat st;
        if ((size_t)snprintf(child, sizeof child, "%s/%s", base, kids.data[i]) >= sizeof child)
            continue;
        int grc = zoo_get(zh, child, 0, data, &len, &st);
        if (grc == ZNONODE)
            continue;
        if (grc != ZOK) {
            rc = grc;
            break;
        }
        if (st.ephemeralOwner != id->client_id || len != (int)strlen(g->addr) ||
            memcmp(data, g->addr, (size_t)len) != 0)
            continue;
        int owned = 0;
        for (zk_reg *o = r->regs; o && !owned; o = o->next)
            owned = o != g && o->gen == gen && strcmp(o->path, child) == 0;
        if (owned)
            continue;
        snprintf(g->path, sizeof g->path, "%s", child);
        rc = ZOK;
        break;
    }
    deallocate_String_vector(&kids);
    return rc;
}

/* One attempt to give g a node in the current session. reg_mu held. */
static int zk_reg_publish(registry *r, zk_reg *g)
{
    pthread_rwlock_rdlock(&r->zh_lock);
    zhandle_t *zh = r->zh;
    unsigned gen = r->gen;
    int rc = ZINVALIDSTATE;
    if (zh) {
        rc = ZNONODE;
        if (g->lost_gen == gen)
            rc = zk_reg_adopt(r, zh, g, gen);
        if (rc == ZNONODE)
            rc = zk_reg_create(r, zh, g);
        if (rc == ZOK) {
            g->gen = gen;
            g->lost_gen = 0;
        } else if (rc == ZCONNECTIONLOSS || rc == ZOPERATIONTIMEOUT) {
            g->lost_gen = gen;
        }
    }
    pthread_rwlock_unlock(&r->zh_lock);
    return rc;
}

/* Worker: publishes every registration the current session lacks. */
static int zk_reregister(registry *r)
{
    int ok = 1;
    pthread_mutex_lock(&r->reg_mu);
    for (zk_reg *g = r->regs; g; g = g->next) {
        pthread_mutex_lock(&r->mu);
        unsigned gen = r->gen;
        pthread_mutex_unlock(&r->mu);
        if (g->gen == gen)
            continue;
        int rc = zk_reg_publish(r, g);
        if (rc != ZOK) {
            log_warn("registry: cannot re-register %s at %s yet: %s", g->service, g->addr,
                     zerror(rc));
            ok = 0;
            break;
        }
        log_info("registry: re-registered %s at %s as %s", g->service, g->addr, g->path);
    }
    pthread_mutex_unlock(&r->reg_mu);
    return ok;
}

/* ---- watches ---- */

/* Reads w's service with a watch, creating its path if missing. */
static int zk_watch_read(registry *r, zk_watch *w, zk_list *out)
{
    pthread_rwlock_rdlock(&r->zh_lock);
    zhandle_t *zh = r->zh;
    int rc = ZINVALIDSTATE;
    if (zh) {
        rc = zk_fetch(zh, w->path, w, zk_child_watcher, out);
        if (rc == ZNONODE) {
            rc = zk_ensure_path(zh, w->path, r->acl);
            if (rc == ZOK)
                rc = zk_fetch(zh, w->path, w, zk_child_watcher, out);
        }
    }
    pthread_rwlock_unlock(&r->zh_lock);
    return rc;
}

/* Hands l (consumed) to the callback unless it repeats the last list.
 * run_mu held. */
static void zk_watch_deliver(zk_watch *w, zk_list *l)
{
    if (w->delivered && zk_list_equal(&w->last, l)) {
        zk_list_free(l);
        return;
    }
    zk_list_free(&w->last);
    w->last = *l;
    w->delivered = 1;
    metrics_gauge_set(M_REGISTRY_NODES, metrics_service_label(w->service), (int64_t)w->last.n);
    w->fn(w->arg, w->service, w->last.nodes, w->last.n);
}

/* Worker: re-reads one watch. 0 if it must be tried again later. */
static int zk_watch_refresh(registry *r, zk_watch *w)
{
    zk_list l = {NULL, 0};
    int ok = 1;
    pthread_mutex_lock(&w->run_mu);
    pthread_mutex_lock(&r->mu);
    int dead = w->dead;
    pthread_mutex_unlock(&r->mu);
    if (dead)
        goto out;
    int rc = zk_watch_read(r, w, &l);
    if (rc != ZOK) {
        if (!w->failing)
            log_warn("registry: cannot read the providers of %s: %s; will retry", w->service,
                     zerror(rc));
        w->failing = 1;
        ok = 0;
        goto out;
    }
    w->failing = 0;
    zk_watch_deliver(w, &l);
out:
    pthread_mutex_unlock(&w->run_mu);
    return ok;
}

/* ---- sessions ---- */

/* Worker: replaces the dead handle with a new one. Its CONNECTED event then
 * triggers re-registration and re-reads. 0 if no handle could be made. */
static int zk_renew(registry *r)
{
    zk_sess *s = calloc(1, sizeof *s);
    if (!s)
        return 0;
    s->r = r;
    pthread_rwlock_wrlock(&r->zh_lock);
    if (r->zh) {
        /* Waits for the library's threads; none waits for a lock we hold. */
        zookeeper_close(r->zh);
        r->zh = NULL;
    }
    pthread_mutex_lock(&r->mu);
    zk_sess *old = r->sess;
    r->sess = s;
    s->gen = ++r->gen;
    pthread_mutex_unlock(&r->mu);
    free(old); /* its handle is closed: no callback can see it any more */
    r->zh =
        zookeeper_init2(r->hosts, zk_global_watcher, r->session_timeout_ms, NULL, s, 0, zk_log_cb);
    int e = errno;
    int ok = r->zh != NULL;
    if (ok && zk_add_auth(r, r->zh) != ZOK) {
        /* Without its credentials the handle could not touch our nodes. */
        zookeeper_close(r->zh);
        r->zh = NULL;
        ok = 0;
        e = EACCES;
    }
    pthread_rwlock_unlock(&r->zh_lock);
    if (!ok)
        log_error("registry: cannot open a new ZooKeeper session at %s: %s", r->hosts, strerror(e));
    else
        log_info("registry: opening a new ZooKeeper session at %s", r->hosts);
    return ok;
}

static void *zk_worker(void *arg)
{
    registry *r = arg;
    int64_t retry_at = 0;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        int connected = r->sess && r->sess->state == ZOO_CONNECTED_STATE;
        zk_watch *w = NULL;
        /* Reads while disconnected would only fail; CONNECTED marks all dirty. */
        for (w = connected ? r->watches : NULL; w; w = w->next)
            if (w->dirty && !w->dead)
                break;
        if (!r->expired && !(connected && r->regs_pending) && !w) {
            pthread_cond_wait(&r->cond, &r->mu);
            continue;
        }
        if (zk_now_ms() < retry_at) {
            zk_wait_until(r, retry_at);
            continue;
        }
        int ok, delay = ZK_RETRY_MS;
        if (r->expired) {
            r->expired = 0;
            pthread_mutex_unlock(&r->mu);
            ok = zk_renew(r);
            pthread_mutex_lock(&r->mu);
            if (!ok)
                r->expired = 1;
            delay = ZK_RENEW_RETRY_MS;
        } else if (connected && r->regs_pending) {
            /* Before the re-reads, so watchers see our own nodes back. */
            r->regs_pending = 0;
            pthread_mutex_unlock(&r->mu);
            ok = zk_reregister(r);
            pthread_mutex_lock(&r->mu);
            if (!ok)
                r->regs_pending = 1;
        } else {
            w->dirty = 0;
            pthread_mutex_unlock(&r->mu);
            ok = zk_watch_refresh(r, w);
            pthread_mutex_lock(&r->mu);
            if (!ok)
                w->dirty = 1;
        }
        if (!ok)
            retry_at = zk_now_ms() + delay;
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ---- public ---- */

static void zk_destroy(registry *r)
{
    if (!r)
        return;
    if (r->worker_started) {
        pthread_mutex_lock(&r->mu);
        r->stop = 1;
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->worker, NULL);
    }
    /* After this no watcher runs, so contexts can go. */
    if (r->zh)
        zookeeper_close(r->zh);
    free(r->sess);
    while (r->regs) {
        zk_reg *g = r->regs;
        r->regs = g->next;
        free(g->service);
        free(g->addr);
        free(g->name);
        free(g);
    }
    while (r->watches) {
        zk_watch *w = r->watches;
        r->watches = w->next;
        zk_list_free(&w->last);
        pthread_mutex_destroy(&w->run_mu);
        free(w->service);
        free(w->path);
        free(w);
    }
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->reg_mu);
    pthread_rwlock_destroy(&r->zh_lock);
    if (r->auth) {
        explicit_bzero(r->auth, strlen(r->auth));
        free(r->auth);
    }
    free(r->hosts);
    free(r);
}

registry *registry_zk_new(const char *hosts, int session_timeout_ms, int connect_timeout_ms,
                          char *err, size_t errlen)
{
    return registry_zk_new_auth(hosts, session_timeout_ms, connect_timeout_ms, NULL, err, errlen);
}

registry *registry_zk_new_auth(const char *hosts, int session_timeout_ms, int connect_timeout_ms,
                               const char *auth, char *err, size_t errlen)
{
    if (!hosts || !*hosts || session_timeout_ms <= 0 || connect_timeout_ms <= 0) {
        zk_err(err, errlen, "registry: need ZooKeeper hosts and positive timeouts");
        return NULL;
    }
    pthread_once(&zk_once, zk_init_library);
    registry *r = calloc(1, sizeof *r);
    if (!r) {
        zk_err(err, errlen, "out of memory");
        return NULL;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->reg_mu, NULL);
    pthread_rwlock_init(&r->zh_lock, NULL);
    r->session_timeout_ms = session_timeout_ms;
    r->connect_timeout_ms = connect_timeout_ms;
    r->hosts = strdup(hosts);
    r->acl = &ZOO_OPEN_ACL_UNSAFE;
    if (auth && *auth) {
        const char *colon = strchr(auth, ':');
        if (!colon || colon == auth || !colon[1]) {
            zk_err(err, errlen, "registry: ZooKeeper credentials must be USER:PASS");
            goto fail;
        }
        r->auth = strdup(auth);
        r->acl = &ZOO_CREATOR_ALL_ACL;
        if (!r->auth) {
            zk_err(err, errlen, "out of memory");
            goto fail;
        }
    }
    zk_sess *s = calloc(1, sizeof *s);
    if (!r->hosts || !s) {
        free(s);
        zk_err(err, errlen, "out of memory");
        goto fail;
    }
    s->r = r;
    s->gen = r->gen = 1;
    r->sess = s; /* before init: its first event may come at once */
    r->zh = zookeeper_init2(hosts, zk_global_watcher, session_timeout_ms, NULL, s, 0, zk_log_cb);
    if (!r->zh) {
        zk_err(err, errlen, "cannot reach ZooKeeper at %s: %s", hosts, strerror(errno));
        goto fail;
    }
    if (zk_add_auth(r, r->zh) != ZOK) {
        zk_err(err, errlen, "cannot add the credentials for ZooKeeper at %s", hosts);
        goto fail;
    }
    int64_t deadline = zk_now_ms() + connect_timeout_ms;
    pthread_mutex_lock(&r->mu);
    while (s->state != ZOO_CONNECTED_STATE && zk_now_ms() < deadline)
        zk_wait_until(r, deadline);
    int connected = s->state == ZOO_CONNECTED_STATE;
    pthread_mutex_unlock(&r->mu);
    if (!connected) {
        zk_err(err, errlen, "cannot reach ZooKeeper at %s: no session within %d ms", hosts,
               connect_timeout_ms);
        goto fail;
    }
    int rc = pthread_create(&r->worker, NULL, zk_worker, r);
    if (rc != 0) {
        zk_err(err, errlen, "registry: cannot start a thread: %s", strerror(rc));
        goto fail;
    }
    r->worker_started = 1;
    log_debug("registry: connected to ZooKeeper at %s", hosts);
    return r;
fail:
    zk_destroy(r);
    return NULL;
}

void registry_free(registry *r)
{
    zk_destroy(r);
}

int registry_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > REGISTRY_NAME_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

void registry_node_name(const char *znode, char *out, size_t outlen)
{
    size_t n = strlen(znode);
    const char *dash = strrchr(znode, '-');
    /* ZooKeeper's sequence: ten digits after the last dash. */
    if (dash && n - (size_t)(dash - znode) == 11 && strspn(dash + 1, "0123456789") == 10)
        n = (size_t)(dash - znode);
    snprintf(out, outlen, "%.*s", (int)n, znode);
}

int registry_register(registry *r, const char *service, const char *addr, char *err, size_t errlen)
{
    return registry_register_named(r, service, "node", addr, err, errlen);
}

int registry_register_named(registry *r, const char *service, const char *name, const char *addr,
                            char *err, size_t errlen)
{
    if (!r || !zk_valid_service(service) || !addr || !*addr || strlen(addr) >= ZK_DATA_MAX ||
        !registry_name_ok(name)) {
        zk_err(err, errlen, "registry: bad service name, node name or address");
        return -1;
    }
    zk_reg *g = calloc(1, sizeof *g);
    if (g) {
        g->service = strdup(service);
        g->addr = strdup(addr);
        g->name = strdup(name);
    }
    if (!g || !g->service || !g->addr || !g->name) {
        zk_err(err, errlen, "out of memory");
        goto fail;
    }
    int64_t deadline = zk_now_ms() + r->connect_timeout_ms;
    int rc;
    for (;;) {
        pthread_mutex_lock(&r->reg_mu);
        rc = zk_reg_publish(r, g);
        if (rc == ZOK) {
            /* Listed only once it has a node, so the worker never doubles it. */
            zk_reg **tail = &r->regs;
            while (*tail)
                tail = &(*tail)->next;
            *tail = g;
        }
        pthread_mutex_unlock(&r->reg_mu);
        if (rc == ZOK || !zk_transient(rc) || zk_now_ms() >= deadline)
            break;
        zk_pause(r, deadline);
    }
    if (rc != ZOK) {
        zk_err(err, errlen, "cannot register %s at %s in ZooKeeper: %s", service, addr, zerror(rc));
        goto fail;
    }
    log_debug("registry: registered %s at %s as %s", service, addr, g->path);
    return 0;
fail:
    if (g) {
        free(g->service);
        free(g->addr);
        free(g->name);
        free(g);
    }
    return -1;
}

int registry_watch(registry *r, const char *service, registry_watch_fn fn, void *arg, char *err,
                   size_t errlen)
{
    if (!r || !zk_valid_service(service) || !fn) {
        zk_err(err, errlen, "registry: bad service name or callback");
        return -1;
    }
    zk_watch *w = calloc(1, sizeof *w);
    char path[ZK_PATH_MAX];
    snprintf(path, sizeof path, ZK_SERVICES "/%s", service);
    if (w) {
        w->service = strdup(service);
        w->path = strdup(path);
    }
    if (!w || !w->service || !w->path) {
        if (w) {
            free(w->service);
            free(w->path);
            free(w);
        }
        zk_err(err, errlen, "out of memory");
        return -1;
    }
    w->r = r;
    w->fn = fn;
    w->arg = arg;
    pthread_mutex_init(&w->run_mu, NULL);

    /* Held until the first delivery, so the worker's cannot overtake it. */
    pthread_mutex_lock(&w->run_mu);
    pthread_mutex_lock(&r->mu);
    zk_watch **tail = &r->watches;
    while (*tail)
        tail = &(*tail)->next;
    *tail = w;
    pthread_mutex_unlock(&r->mu);

    int64_t deadline = zk_now_ms() + r->connect_timeout_ms;
    zk_list l = {NULL, 0};
    int rc;
    for (;;) {
        rc = zk_watch_read(r, w, &l);
        if (rc == ZOK || !zk_transient(rc) || zk_now_ms() >= deadline)
            break;
        zk_pause(r, deadline);
    }
    if (rc != ZOK) {
        /* ZooKeeper may still hold w as a watcher context: keep it till free. */
        pthread_mutex_lock(&r->mu);
        w->dead = 1;
        pthread_mutex_unlock(&r->mu);
        pthread_mutex_unlock(&w->run_mu);
        zk_err(err, errlen, "cannot watch %s in ZooKeeper: %s", service, zerror(rc));
        return -1;
    }
    zk_watch_deliver(w, &l);
    pthread_mutex_unlock(&w->run_mu);
    return 0;
}

/* Reads every service and its providers; names sorted. */
static int zk_read_all(registry *r, struct String_vector *svcs, zk_list **lists)
{
    pthread_rwlock_rdlock(&r->zh_lock);
    zhandle_t *zh = r->zh;
    int rc = ZINVALIDSTATE;
    zk_list *ls = NULL;
    svcs->count = 0;
    svcs->data = NULL;
    if (!zh)
        goto out;
    rc = zoo_get_children(zh, ZK_SERVICES, 0, svcs);
    if (rc == ZNONODE) {
        rc = ZOK; /* nobody has registered anything yet */
        goto out;
    }
    if (rc != ZOK)
        goto out;
    qsort(svcs->data, (size_t)svcs->count, sizeof *svcs->data, zk_str_cmp);
    ls = calloc(svcs->count > 0 ? (size_t)svcs->count : 1, sizeof *ls);
    if (!ls) {
        rc = ZSYSTEMERROR;
        goto out;
    }
    for (int i = 0; i < svcs->count; i++) {
        char path[ZK_PATH_MAX];
        snprintf(path, sizeof path, ZK_SERVICES "/%s", svcs->data[i]);
        rc = zk_fetch(zh, path, NULL, NULL, &ls[i]);
        if (rc == ZNONODE)
            rc = ZOK; /* deleted meanwhile: no providers */
        if (rc != ZOK)
            goto out;
    }
out:
    pthread_rwlock_unlock(&r->zh_lock);
    if (rc != ZOK && ls) {
        for (int i = 0; i < svcs->count; i++)
            zk_list_free(&ls[i]);
        free(ls);
        ls = NULL;
    }
    if (rc != ZOK)
        deallocate_String_vector(svcs);
    *lists = ls;
    return rc;
}

int registry_list_all(registry *r, registry_watch_fn fn, void *arg, char *err, size_t errlen)
{
    if (!r || !fn) {
        zk_err(err, errlen, "registry: bad arguments");
        return -1;
    }
    struct String_vector svcs;
    zk_list *lists = NULL;
    int64_t deadline = zk_now_ms() + r->connect_timeout_ms;
    int rc;
    for (;;) {
        rc = zk_read_all(r, &svcs, &lists);
        if (rc == ZOK || !zk_transient(rc) || zk_now_ms() >= deadline)
            break;
        zk_pause(r, deadline);
    }
    if (rc != ZOK) {
        zk_err(err, errlen, "cannot list services in ZooKeeper: %s", zerror(rc));
        return -1;
    }
    /* No lock held: fn may do as it likes. */
    for (int i = 0; i < svcs.count; i++)
        fn(arg, svcs.data[i], lists[i].nodes, lists[i].n);
    for (int i = 0; i < svcs.count; i++)
        zk_list_free(&lists[i]);
    free(lists);
    deallocate_String_vector(&svcs);
    return 0;
}

int registry_zk_current_server(registry *r, char *buf, size_t len)
{
    int rc = -1;
    pthread_rwlock_rdlock(&r->zh_lock);
    const char *s = r->zh ? zoo_get_current_server(r->zh) : NULL;
    if (s) {
        snprintf(buf, len, "%s", s);
        rc = 0;
    }
    pthread_rwlock_unlock(&r->zh_lock);
    return rc;
}
