/*
 * parleyctl: a small admin tool for a running Parley cluster.
 *
 *   parleyctl --zk HOSTS nodes
 *       every registered node of every service
 *   parleyctl --zk HOSTS ring list [--service S] [--vnodes N] [--add NAME]... [--del NAME]...
 *       the consistent-hash ring of service S (default message): every virtual node
 *   parleyctl --zk HOSTS ring get KEY [--service S] [--vnodes N] [--add NAME]... [--del NAME]...
 *       the node KEY maps to; KEY is direct:USER:USER, group:GROUP or a number
 *
 * --zk-auth USER:PASS (or --zk-auth-file FILE) gives the credentials of a
 * cluster whose znodes are closed (parleyd --zk-auth): without them such a
 * cluster's nodes cannot be read.
 *
 * --add and --del change the ring before answering, without touching the
 * cluster: "what if a node joined or left?" (the seeds' add / del on a ring).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/keys.h"
#include "common/secret.h"
#include "registry/registry.h"
#include "rpc/ring.h"

typedef struct {
    const char *service;
    ring *r;
    char **names;
    size_t n;
} ctl_ring;

static void ctl_print_nodes(void *arg, const char *service, const registry_node *nodes, size_t n)
{
    int *count = arg;
    for (size_t i = 0; i < n; i++) {
        printf("%-10s %-20s %s\n", service, nodes[i].name, nodes[i].addr);
        (*count)++;
    }
    if (n == 0)
        printf("%-10s (no nodes)\n", service);
}

static void ctl_fill_ring(void *arg, const char *service, const registry_node *nodes, size_t n)
{
    ctl_ring *cr = arg;
    if (strcmp(service, cr->service) != 0)
        return;
    for (size_t i = 0; i < n; i++)
        ring_add(cr->r, nodes[i].name);
}

static void ctl_print_point(void *arg, uint64_t point, const char *name)
{
    printf("%016" PRIx64 "  %s\n", point, name);
}

static int ctl_parse_key(const char *s, uint64_t *key)
{
    unsigned long long a, b;
    char tail;
    if (sscanf(s, "direct:%llu:%llu%c", &a, &b, &tail) == 2) {
        *key = key_direct(a, b);
        return 0;
    }
    if (sscanf(s, "group:%llu%c", &a, &tail) == 1) {
        *key = key_group(a);
        return 0;
    }
    if (sscanf(s, "%llu%c", &a, &tail) == 1) {
        *key = a;
        return 0;
    }
    return -1;
}

static void ctl_usage(FILE *f)
{
    fprintf(f, "usage: parleyctl --zk HOSTS nodes\n"
               "       parleyctl --zk HOSTS ring list [--service S] [--vnodes N] [--add NAME]... "
               "[--del NAME]...\n"
               "       parleyctl --zk HOSTS ring get KEY [same options]\n"
               "KEY is direct:USER:USER, group:GROUP or a number.\n"
               "--zk-auth USER:PASS or --zk-auth-file FILE: ZooKeeper credentials.\n");
}

int main(int argc, char **argv)
{
    const char *zk = NULL, *zk_auth = NULL, *zk_auth_file = NULL, *service = "message", *cmd = NULL,
               *sub = NULL, *keyarg = NULL;
    unsigned vnodes = 100;
    const char *adds[64], *dels[64];
    size_t nadd = 0, ndel = 0;
    char err[512];
    int rc = 1;
    registry *reg = NULL;
    ctl_ring cr = {0};

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            ctl_usage(stdout);
            return 0;
        } else if (strcmp(a, "--zk") == 0 && v) {
            zk = v, i++;
        } else if (strcmp(a, "--zk-auth") == 0 && v) {
            zk_auth = v, i++;
        } else if (strcmp(a, "--zk-auth-file") == 0 && v) {
            zk_auth_file = v, i++;
        } else if (strcmp(a, "--service") == 0 && v) {
            service = v, i++;
        } else if (strcmp(a, "--vnodes") == 0 && v) {
            vnodes = (unsigned)strtoul(v, NULL, 10), i++;
        } else if (strcmp(a, "--add") == 0 && v && nadd < 64) {
            adds[nadd++] = v, i++;
        } else if (strcmp(a, "--del") == 0 && v && ndel < 64) {
            dels[ndel++] = v, i++;
        } else if (!cmd) {
            cmd = a;
        } else if (!sub) {
            sub = a;
        } else if (!keyarg) {
            keyarg = a;
        } else {
            ctl_usage(stderr);
            return 2;
        }
    }
    if (!zk || !cmd || vnodes == 0) {
        ctl_usage(stderr);
        return 2;
    }
    char auth[256] = "";
    if (zk_auth_file && secret_read_line(zk_auth_file, auth, sizeof(auth), err, sizeof(err)) < 0) {
        fprintf(stderr, "parleyctl: --zk-auth-file: %s\n", err);
        return 1;
    }
    if (zk_auth)
        snprintf(auth, sizeof(auth), "%s", zk_auth);
    reg = registry_zk_new_auth(zk, 4000, 5000, auth, err, sizeof(err));
    explicit_bzero(auth, sizeof(auth));
    if (!reg) {
        fprintf(stderr, "parleyctl: %s\n", err);
        return 1;
    }
    if (strcmp(cmd, "nodes") == 0) {
        int count = 0;
        if (registry_list_all(reg, ctl_print_nodes, &count, err, sizeof(err)) < 0) {
            fprintf(stderr, "parleyctl: %s\n", err);
            goto out;
        }
        rc = 0;
        goto out;
    }
    if (strcmp(cmd, "ring") != 0 || !sub) {
        ctl_usage(stderr);
        rc = 2;
        goto out;
    }
    cr.service = service;
    cr.r = ring_new(vnodes);
    if (!cr.r || registry_list_all(reg, ctl_fill_ring, &cr, err, sizeof(err)) < 0) {
        fprintf(stderr, "parleyctl: %s\n", cr.r ? err : "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nadd; i++)
        ring_add(cr.r, adds[i]);
    for (size_t i = 0; i < ndel; i++)
        if (ring_del(cr.r, dels[i]) < 0)
            fprintf(stderr, "parleyctl: %s is not on the ring\n", dels[i]);
    if (strcmp(sub, "list") == 0) {
        printf("# %s ring: %zu nodes x %u virtual nodes\n", service, ring_nodes(cr.r), vnodes);
        ring_foreach(cr.r, ctl_print_point, NULL);
        rc = 0;
    } else if (strcmp(sub, "get") == 0 && keyarg) {
        uint64_t key;
        if (ctl_parse_key(keyarg, &key) < 0) {
            fprintf(stderr, "parleyctl: bad key '%s'\n", keyarg);
            rc = 2;
            goto out;
        }
        const char *node = ring_get(cr.r, key);
        if (!node) {
            fprintf(stderr, "parleyctl: no %s nodes registered\n", service);
            goto out;
        }
        printf("%s -> %s\n", keyarg, node);
        rc = 0;
    } else {
        ctl_usage(stderr);
        rc = 2;
    }
out:
    ring_free(cr.r);
    registry_free(reg);
    return rc;
}
