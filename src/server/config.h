/*
 * config: parleyd's settings, from an optional config file and then the
 * command line (flags win). The file holds `key = value` lines whose keys
 * are the long flag names; '#' starts a comment.
 */
#ifndef PARLEY_CONFIG_H
#define PARLEY_CONFIG_H

/* A numeric setting left to a default that depends on other settings. */
#define CONFIG_UNSET 0xFFFFFFFFu

#include <stddef.h>

#include "common/log.h"
#include "common/pwhash.h"

typedef struct config {
    char bind[256];
    int port;
    char data[1024];
    char role[64];
    unsigned threads;       /* I/O loops */
    unsigned store_workers; /* storage worker threads */
    unsigned auth_workers;  /* password hashing threads */
    unsigned max_batch;
    unsigned batch_wait_us; /* CONFIG_UNSET: chosen by the store backend */
    unsigned idle_timeout_s;
    unsigned max_frame;
    unsigned max_inflight;
    unsigned recall_window_s;
    /* abuse limits (0 disables one); docs/security.md says what each defends */
    unsigned max_conns_per_ip;
    unsigned hello_timeout_s, login_timeout_s, frame_timeout_s;
    unsigned req_rate;        /* requests per second per connection */
    unsigned msg_rate;        /* messages per second per user */
    unsigned history_rate;    /* history pages per second per user */
    unsigned reg_rate;        /* registrations per minute per address */
    unsigned login_fail_rate; /* failed logins per minute per address */
    unsigned login_fail_free; /* failures of one account from one address before a delay */
    unsigned login_fail_max_delay_s;
    unsigned auth_queue_per_conn, auth_queue_per_ip, auth_queue;
    unsigned max_friends, max_groups, max_members;
    unsigned session_ttl_days, sessions_per_user;
    /* the client port's transport (docs/security.md, "Encryption") */
    char tls[16];                       /* "auto": a self-signed pair in data; else "" */
    char tls_cert[1024], tls_key[1024]; /* PEM files */
    int plain_port;                     /* with TLS, a plain port too; -1: none */
    unsigned allow_plain;               /* plain text on a non-loopback address */
    /* cluster */
    char zk[512];    /* ZooKeeper hosts; empty: no registry */
    char redis[256]; /* host:port; empty: in-process bus */
    /* the cluster's secrets (docs/security.md, "Cluster trust") */
    char zk_auth[256];           /* USER:PASS for ZooKeeper's digest ACLs; empty: open */
    char zk_auth_file[1024];     /* ... or read from this file (mode 0600) */
    char redis_auth[256];        /* USER:PASS of Redis's ACL user; empty: none */
    char redis_auth_file[1024];  /* ... or read from this file (mode 0600) */
    char cluster_key_file[1024]; /* 32 bytes that MAC every bus message; empty: none */
    char db[1024];               /* store URI; empty: SQLite under data */
    char db_tls[16];             /* "require": TLS to MariaDB or no start; else "" / "off" */
    char db_ca[1024];            /* ... and verify MariaDB's certificate with this CA */
    char db_password_file[1024]; /* MariaDB's password from this file (mode 0600) */
    char sync[16];               /* SQLite: "full" fsyncs every commit; "" / "normal" */
    int rpc_port;                /* service nodes: RPC port (0 picks one) */
    char advertise[256];         /* address other nodes use to reach this one */
    unsigned gateway_id;         /* 0: chosen at random */
    char node_name[64];          /* in the registry (parleyctl nodes); empty: ROLE-HOST-PORT */
    unsigned zk_timeout_ms;      /* ZooKeeper session timeout */
    unsigned rpc_timeout_ms;
    char balance_user[32], balance_social[32], balance_message[32];
    /* node-to-node mutual TLS (docs/security.md, "The cluster's trust") */
    char cluster_ca[1024];                /* the cluster CA's certificate */
    char node_cert[1024], node_key[1024]; /* this node's, signed by it */
    /* the admin port (/metrics, /healthz, /readyz); 0: none */
    int admin_port;
    unsigned no_metrics; /* --no-metrics */
    char admin_bind[256];
    pwhash_cost cost;
    log_level level;
    char log_format[8];  /* "text" or "json" */
    char log_file[1024]; /* empty: stderr */
} config;

/* Defaults, then the file named by --config (if any), then the flags.
 * Returns 0 to run, 1 if --help/--version was answered (exit 0), -1 on a
 * bad setting (the message is in err). */
int config_load(config *cfg, int argc, char **argv, char *err, size_t errlen);
void config_usage(const char *prog);

#endif
