#include "server/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum { OPT_STR, OPT_UINT, OPT_PORT, OPT_COST, OPT_LEVEL, OPT_BOOL } opt_kind;

typedef struct {
    const char *name;
    opt_kind kind;
    size_t offset;
    size_t size;
    unsigned min, max;
    const char *help;
} opt;

#define STR(f)  OPT_STR, offsetof(config, f), sizeof(((config *)0)->f), 0, 0
#define UINT(f) OPT_UINT, offsetof(config, f), 0
#define BOOL(f) OPT_BOOL, offsetof(config, f), 0, 0, 1

static const opt opts[] = {
    {"bind", STR(bind), "address to listen on (default 127.0.0.1)"},
    {"port", OPT_PORT, offsetof(config, port), 0, 0, 65535,
     "client port (default 7070; 0 picks one)"},
    {"data", STR(data), "data directory (default ./parley-data)"},
    {"role", STR(role),
     "what runs here: all (default), or a comma list of gateway, user, social, message"},
    {"threads", UINT(threads), 1, 256, "I/O threads (default: number of cores)"},
    {"store-workers", UINT(store_workers), 1, 64,
     "storage worker threads (default 1; see docs/architecture.md)"},
    {"auth-workers", UINT(auth_workers), 1, 64,
     "password hashing threads (default: number of cores)"},
    {"max-batch", UINT(max_batch), 1, 4096, "requests per store transaction (default 1024)"},
    {"batch-wait", UINT(batch_wait_us), 0, 100000,
     "microseconds a small batch waits for more (default 2000 on MariaDB, 500 on SQLite)"},
    {"idle-timeout", UINT(idle_timeout_s), 1, 86400,
     "seconds without a whole frame before a client is dropped (default 60)"},
    {"max-frame", UINT(max_frame), 1024, 16 * 1024 * 1024,
     "largest frame in bytes (default 65536)"},
    {"max-inflight", UINT(max_inflight), 1, 65535,
     "requests in flight per connection before reading pauses (default 64)"},
    {"recall-window", UINT(recall_window_s), 0, 86400 * 365,
     "seconds during which a sender may recall a message (default 120)"},
    {"file-dir", STR(file_dir),
     "where message nodes keep files (default DATA/files; in a cluster a directory all share)"},
    {"max-file-size", UINT(max_file_size), 1, 4294967295u,
     "largest file a message may carry, in bytes (default 26214400: 25 MiB)"},
    {"file-quota", UINT(file_quota), 1, 4294967295u,
     "bytes of files each user may have sent or be uploading (default 1073741824: 1 GiB)"},
    {"upload-ttl", UINT(upload_ttl_s), 1, 86400 * 365,
     "seconds an upload may wait, unfinished or not sent, before it is dropped (default 86400)"},
    {"max-conns-per-ip", UINT(max_conns_per_ip), 0, 1000000,
     "open client connections per source address (default 64; 0: no limit)"},
    {"hello-timeout", UINT(hello_timeout_s), 0, 3600,
     "seconds a new connection has to send hello (default 5)"},
    {"login-timeout", UINT(login_timeout_s), 0, 86400,
     "seconds a new connection has to log in (default 30)"},
    {"frame-timeout", UINT(frame_timeout_s), 0, 3600,
     "seconds a frame may take to arrive once begun (default 10)"},
    {"req-rate", UINT(req_rate), 0, 100000000,
     "requests per second per connection, bursts of twice that (default 100)"},
    {"msg-rate", UINT(msg_rate), 0, 100000000,
     "messages per second per user, bursts of twice that (default 30)"},
    {"history-rate", UINT(history_rate), 0, 100000000,
     "history pages per second per user, bursts of twice that (default 10)"},
    {"reg-rate", UINT(reg_rate), 0, 100000000,
     "registrations per minute per source address, bursts of twice that (default 10)"},
    {"login-fail-rate", UINT(login_fail_rate), 0, 100000000,
     "failed logins per minute per source address (default 30)"},
    {"login-fail-free", UINT(login_fail_free), 0, 1000000,
     "failed logins of an account from one address before each try waits (default 5)"},
    {"login-fail-max-delay", UINT(login_fail_max_delay_s), 1, 86400,
     "longest wait between such tries, in seconds; it doubles up to this (default 300)"},
    {"auth-queue-per-conn", UINT(auth_queue_per_conn), 0, 100000,
     "register/login requests queued per connection (default 2)"},
    {"auth-queue-per-ip", UINT(auth_queue_per_ip), 0, 1000000,
     "register/login requests queued per source address (default 8)"},
    {"auth-queue", UINT(auth_queue), 0, 10000000,
     "register/login requests queued in the whole server (default 256)"},
    {"max-friends", UINT(max_friends), 0, 10000000, "friends per user (default 1000)"},
    {"max-groups", UINT(max_groups), 0, 10000000, "groups a user may be in (default 500)"},
    {"max-members", UINT(max_members), 0, 10000000, "members per group (default 2000)"},
    {"session-ttl", UINT(session_ttl_days), 0, 36500,
     "days of disuse after which a session token expires (default 30; 0: never)"},
    {"sessions-per-user", UINT(sessions_per_user), 0, 100000,
     "session tokens kept per user, the least recently used dropped (default 32)"},
    {"tls", STR(tls),
     "auto: serve TLS on --port with a self-signed certificate made in the data directory"},
    {"tls-cert", STR(tls_cert), "serve TLS on --port with this PEM certificate (chain) file"},
    {"tls-key", STR(tls_key), "... and this PEM key file; SIGHUP reloads both"},
    {"plain-port", OPT_PORT, offsetof(config, plain_port), 0, 0, 65535,
     "with TLS, also serve plain TCP on this port (default: none)"},
    {"allow-plain", BOOL(allow_plain),
     "serve plain TCP on an address other than loopback (default: refuse)"},
    {"ws-port", OPT_PORT, offsetof(config, ws_port), 0, 0, 65535,
     "serve WebSocket and the web client on this port, TLS as --port (default 0: none)"},
    {"ws-origins", STR(ws_origins),
     "origins whose pages may open a WebSocket: a comma list, or * (default: same origin)"},
    {"web-root", STR(web_root),
     "the web client's files for --ws-port (default: the build's web output, if any)"},
    {"zk", STR(zk), "ZooKeeper hosts (h1:p1,h2:p2): run as part of a cluster"},
    {"redis", STR(redis), "Redis host:port for presence and cross-gateway delivery"},
    {"zk-auth", STR(zk_auth),
     "USER:PASS: authenticate to ZooKeeper, create Parley's znodes readable by it only"},
    {"zk-auth-file", STR(zk_auth_file), "... or read USER:PASS from this file (mode 0600)"},
    {"redis-auth", STR(redis_auth), "USER:PASS of the Redis ACL user every connection uses"},
    {"redis-auth-file", STR(redis_auth_file), "... or read USER:PASS from this file (mode 0600)"},
    {"cluster-key-file", STR(cluster_key_file),
     "file of 32 random bytes (mode 0600): MAC every bus message, drop what fails"},
    {"db", STR(db),
     "store: a SQLite path or mariadb://USER:PASS@HOST:PORT/DB (default DATA/parley.db)"},
    {"db-tls", STR(db_tls), "require: connect to MariaDB over TLS 1.2+ or not at all"},
    {"sync", STR(sync),
     "SQLite: normal (default; a power loss may lose the last seconds) or full (fsync each "
     "commit)"},
    {"db-ca", STR(db_ca),
     "... and the MariaDB server's certificate must chain to this CA and name its host"},
    {"db-password-file", STR(db_password_file),
     "MariaDB: the password is the first line of this file (mode 0600), not in --db"},
    {"rpc-port", OPT_PORT, offsetof(config, rpc_port), 0, 0, 65535,
     "service nodes: port for RPC from gateways (default 0: any)"},
    {"advertise", STR(advertise), "address other nodes reach this one at (default: --bind)"},
    {"gateway-id", UINT(gateway_id), 1, 2147483647, "this gateway's id (default: random)"},
    {"node-name", STR(node_name),
     "this node's name in the registry, unique (default ROLE-ADDR-PORT; letters, digits . _ -)"},
    {"zk-timeout", UINT(zk_timeout_ms), 500, 60000,
     "ZooKeeper session timeout in ms (default 4000)"},
    {"rpc-timeout", UINT(rpc_timeout_ms), 100, 600000,
     "deadline of a call to a service node in ms (default 5000)"},
    {"balance-user", STR(balance_user),
     "round-robin, least-outstanding (default) or ring, for the user service"},
    {"balance-social", STR(balance_social), "as above, for the social service (round-robin)"},
    {"balance-message", STR(balance_message), "as above, for the message service (ring)"},
    {"cluster-ca", STR(cluster_ca),
     "cluster nodes: RPC over mutual TLS, trusting only this CA certificate (PEM)"},
    {"node-cert", STR(node_cert),
     "... this node's certificate, signed by that CA (OU=gateway or OU=service)"},
    {"node-key", STR(node_key), "... and its key"},
    {"admin-port", OPT_PORT, offsetof(config, admin_port), 0, 0, 65535,
     "HTTP port for /metrics, /healthz and /readyz (default 0: none)"},
    {"admin-bind", STR(admin_bind), "address of the admin port (default 127.0.0.1)"},
    {"no-metrics", BOOL(no_metrics),
     "count nothing (gauges and /healthz stay): to measure what metrics cost"},
    {"pwhash-cost", OPT_COST, offsetof(config, cost), 0, 0, 0,
     "argon2id cost: interactive (default), moderate, or min (tests only)"},
    {"log-level", OPT_LEVEL, offsetof(config, level), 0, 0, 0,
     "debug, info (default), warn or error"},
    {"log-format", STR(log_format), "text (default) or json: one object per line"},
    {"log-file", STR(log_file), "write the log to FILE, not stderr; SIGHUP reopens it"},
};

/* What --help shows after an option's name: what its value is. Options
 * not listed get one from their kind. */
static const char *config_placeholder(const opt *o)
{
    static const struct {
        const char *name, *arg;
    } args[] = {
        {"bind", "ADDR"},
        {"data", "DIR"},
        {"file-dir", "DIR"},
        {"role", "ROLES"},
        {"tls", "MODE"},
        {"tls-cert", "FILE"},
        {"tls-key", "FILE"},
        {"ws-origins", "LIST"},
        {"web-root", "DIR"},
        {"zk", "HOSTS"},
        {"redis", "HOST:PORT"},
        {"zk-auth", "USER:PASS"},
        {"zk-auth-file", "FILE"},
        {"redis-auth", "USER:PASS"},
        {"redis-auth-file", "FILE"},
        {"cluster-key-file", "FILE"},
        {"db", "URI"},
        {"advertise", "ADDR"},
        {"node-name", "NAME"},
        {"balance-user", "POLICY"},
        {"balance-social", "POLICY"},
        {"balance-message", "POLICY"},
        {"cluster-ca", "FILE"},
        {"node-cert", "FILE"},
        {"node-key", "FILE"},
        {"log-format", "FORMAT"},
        {"log-file", "FILE"},
        {"admin-bind", "ADDR"},
        {"db-tls", "MODE"},
        {"sync", "MODE"},
        {"db-ca", "FILE"},
        {"db-password-file", "FILE"},
        {"idle-timeout", "SECONDS"},
        {"hello-timeout", "SECONDS"},
        {"login-timeout", "SECONDS"},
        {"frame-timeout", "SECONDS"},
        {"recall-window", "SECONDS"},
        {"login-fail-max-delay", "SECONDS"},
        {"session-ttl", "DAYS"},
        {"max-frame", "BYTES"},
        {"batch-wait", "USEC"},
        {"zk-timeout", "MS"},
        {"rpc-timeout", "MS"},
    };
    for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++)
        if (strcmp(args[i].name, o->name) == 0)
            return args[i].arg;
    switch (o->kind) {
    case OPT_UINT:
        return "N";
    case OPT_PORT:
        return "PORT";
    case OPT_COST:
        return "COST";
    case OPT_LEVEL:
        return "LEVEL";
    case OPT_BOOL:
        return "[yes|no]";
    case OPT_STR:
        break;
    }
    return "VALUE";
}

/* One option of --help: the help on the same line if the name is short. */
static void config_usage_line(const char *name, const char *arg, const char *help)
{
    char left[96];
    snprintf(left, sizeof(left), "--%s%s%s", name, arg ? " " : "", arg ? arg : "");
    if (strlen(left) <= 27)
        printf("  %-27s %s\n", left, help);
    else
        printf("  %s\n  %-27s %s\n", left, "", help);
}

void config_usage(const char *prog)
{
    printf("usage: %s [--config FILE] [--OPTION VALUE]...\n\n"
           "parleyd, the Parley chat server. With no options it runs every service in\n"
           "this one process, stores data with SQLite under ./parley-data and listens\n"
           "on 127.0.0.1:7070.\n\noptions:\n",
           prog);
    config_usage_line("config", "FILE", "read settings (key = value lines) from FILE first");
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
        config_usage_line(opts[i].name, config_placeholder(&opts[i]), opts[i].help);
    config_usage_line("help", NULL, "show this help");
    config_usage_line("version", NULL, "show the version");
    printf("\nIn a config file each option is a `key = value` line, the key being the option's\n"
           "name without the dashes (idle-timeout = 60); see parley.conf.example.\n");
}

/* 1, 0, or -1 if val is not a yes or a no. */
static int config_bool(const char *val)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcmp(val, yes[i]) == 0)
            return 1;
        if (strcmp(val, no[i]) == 0)
            return 0;
    }
    return -1;
}

static const opt *config_find(const char *key)
{
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
        if (strcmp(opts[i].name, key) == 0)
            return &opts[i];
    return NULL;
}

static int config_set(config *cfg, const char *key, const char *val, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        const opt *o = &opts[i];
        if (strcmp(o->name, key) != 0)
            continue;
        char *base = (char *)cfg + o->offset;
        switch (o->kind) {
        case OPT_STR:
            if (strlen(val) >= o->size) {
                snprintf(err, errlen, "--%s: value too long", key);
                return -1;
            }
            memcpy(base, val, strlen(val) + 1);
            return 0;
        case OPT_UINT:
        case OPT_PORT: {
            char *end;
            errno = 0;
            unsigned long v = strtoul(val, &end, 10);
            if (errno || end == val || *end || v < o->min || v > o->max) {
                snprintf(err, errlen, "--%s: expected a number from %u to %u, got '%s'", key,
                         o->min, o->max, val);
                return -1;
            }
            if (o->kind == OPT_PORT)
                *(int *)base = (int)v;
            else
                *(unsigned *)base = (unsigned)v;
            return 0;
        }
        case OPT_COST:
            if (pwhash_cost_parse(val, (pwhash_cost *)base) < 0) {
                snprintf(err, errlen, "--%s: expected interactive, moderate or min", key);
                return -1;
            }
            return 0;
        case OPT_LEVEL:
            if (log_level_parse(val, (log_level *)base) < 0) {
                snprintf(err, errlen, "--%s: expected debug, info, warn or error", key);
                return -1;
            }
            return 0;
        case OPT_BOOL: {
            int v = config_bool(val);
            if (v < 0) {
                snprintf(err, errlen, "--%s: expected yes or no, got '%s'", key, val);
                return -1;
            }
            *(unsigned *)base = (unsigned)v;
            return 0;
        }
        }
    }
    snprintf(err, errlen, "unknown option '%s' (see --help)", key);
    return -1;
}

static char *config_trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

static int config_file(config *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char line[2048];
    int lineno = 0, rc = 0;
    if (!f) {
        snprintf(err, errlen, "cannot read config file %s: %s", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = config_trim(line);
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected key = value", path, lineno);
            rc = -1;
            break;
        }
        *eq = '\0';
        char msg[256];
        if (config_set(cfg, config_trim(s), config_trim(eq + 1), msg, sizeof(msg)) < 0) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, msg);
            rc = -1;
            break;
        }
    }
    fclose(f);
    return rc;
}

/* Settings that make sense only together. */
static int config_check(const config *cfg, char *err, size_t errlen)
{
    int tls_auto = strcmp(cfg->tls, "auto") == 0;
    log_format lf;
    if (log_format_parse(cfg->log_format, &lf) < 0) {
        snprintf(err, errlen, "--log-format: expected text or json, got '%s'", cfg->log_format);
        return -1;
    }
    if (cfg->tls[0] && !tls_auto && strcmp(cfg->tls, "off") != 0) {
        snprintf(err, errlen, "--tls: expected auto (or off), got '%s'", cfg->tls);
        return -1;
    }
    if (!cfg->tls_cert[0] != !cfg->tls_key[0]) {
        snprintf(err, errlen, "--tls-cert and --tls-key go together");
        return -1;
    }
    if (tls_auto && cfg->tls_cert[0]) {
        snprintf(err, errlen, "--tls auto makes its own certificate: drop it or --tls-cert");
        return -1;
    }
    if (cfg->plain_port >= 0 && !tls_auto && !cfg->tls_cert[0]) {
        snprintf(err, errlen,
                 "--plain-port is for a server with TLS on --port; without TLS, --port is "
                 "plain already");
        return -1;
    }
    if (cfg->plain_port > 0 && cfg->plain_port == cfg->port) {
        snprintf(err, errlen, "--plain-port and --port must differ");
        return -1;
    }
    if (cfg->ws_port && (cfg->ws_port == cfg->port || cfg->ws_port == cfg->plain_port)) {
        snprintf(err, errlen, "--ws-port must differ from --port and --plain-port");
        return -1;
    }
    if (cfg->db_tls[0] && strcmp(cfg->db_tls, "require") != 0 && strcmp(cfg->db_tls, "off") != 0) {
        snprintf(err, errlen, "--db-tls: expected require (or off), got '%s'", cfg->db_tls);
        return -1;
    }
    if (cfg->sync[0] && strcmp(cfg->sync, "normal") != 0 && strcmp(cfg->sync, "full") != 0) {
        snprintf(err, errlen, "--sync: expected normal or full, got '%s'", cfg->sync);
        return -1;
    }
    if (strcmp(cfg->sync, "full") == 0 && strncmp(cfg->db, "mariadb://", 10) == 0) {
        snprintf(err, errlen,
                 "--sync is SQLite's: MariaDB syncs each commit by its own setting "
                 "(innodb_flush_log_at_trx_commit=1, its default)");
        return -1;
    }
    if (cfg->db_ca[0] && strcmp(cfg->db_tls, "off") == 0) {
        snprintf(err, errlen,
                 "--db-ca verifies MariaDB's TLS certificate: drop it or --db-tls off");
        return -1;
    }
    if ((strcmp(cfg->db_tls, "require") == 0 || cfg->db_ca[0] || cfg->db_password_file[0]) &&
        strncmp(cfg->db, "mariadb://", 10) != 0) {
        snprintf(err, errlen,
                 "--db-tls, --db-ca and --db-password-file are for --db mariadb://...");
        return -1;
    }
    if (!cfg->cluster_ca[0] != !cfg->node_cert[0] || !cfg->node_cert[0] != !cfg->node_key[0]) {
        snprintf(err, errlen, "--cluster-ca, --node-cert and --node-key go together");
        return -1;
    }
    return 0;
}

int config_load(config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    memset(cfg, 0, sizeof(*cfg));
    strcpy(cfg->bind, "127.0.0.1");
    strcpy(cfg->admin_bind, "127.0.0.1");
    cfg->port = 7070;
    strcpy(cfg->data, "./parley-data");
    strcpy(cfg->role, "all");
    cfg->threads = cores > 0 ? (unsigned)cores : 1;
    cfg->store_workers = 0; /* chosen by the store backend */
    cfg->auth_workers = cores > 0 ? (unsigned)cores : 1;
    cfg->max_batch = 1024;
    cfg->batch_wait_us = CONFIG_UNSET; /* chosen by the store backend */
    cfg->idle_timeout_s = 60;
    cfg->max_frame = 64 * 1024;
    cfg->max_inflight = 64;
    cfg->recall_window_s = 120;
    cfg->max_file_size = 25u * 1024 * 1024;
    cfg->file_quota = 1024u * 1024 * 1024;
    cfg->upload_ttl_s = 86400;
    cfg->max_conns_per_ip = 64;
    cfg->hello_timeout_s = 5;
    cfg->login_timeout_s = 30;
    cfg->frame_timeout_s = 10;
    cfg->req_rate = 100;
    cfg->msg_rate = 30;
    cfg->history_rate = 10;
    cfg->reg_rate = 10;
    cfg->login_fail_rate = 30;
    cfg->login_fail_free = 5;
    cfg->login_fail_max_delay_s = 300;
    cfg->auth_queue_per_conn = 2;
    cfg->auth_queue_per_ip = 8;
    cfg->auth_queue = 256;
    cfg->max_friends = 1000;
    cfg->max_groups = 500;
    cfg->max_members = 2000;
    cfg->session_ttl_days = 30;
    cfg->sessions_per_user = 32;
    cfg->plain_port = -1;
    cfg->zk_timeout_ms = 4000;
    cfg->rpc_timeout_ms = 5000;
    strcpy(cfg->balance_user, "least-outstanding");
    strcpy(cfg->balance_social, "round-robin");
    strcpy(cfg->balance_message, "ring");
    cfg->cost = PWHASH_INTERACTIVE;
    cfg->level = LOG_INFO;
    strcpy(cfg->log_format, "text");

    /* The file first, so that flags override it wherever they stand. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "--config needs a file name");
                return -1;
            }
            if (config_file(cfg, argv[i + 1], err, errlen) < 0)
                return -1;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            config_usage(argv[0]);
            return 1;
        }
        if (strcmp(a, "--version") == 0) {
            printf("parleyd 0.1\n");
            return 1;
        }
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s' (see --help)", a);
            return -1;
        }
        const char *key = a + 2, *val;
        char keybuf[64];
        const char *eq = strchr(key, '=');
        if (eq) {
            snprintf(keybuf, sizeof(keybuf), "%.*s", (int)(eq - key), key);
            key = keybuf;
        }
        /* Named as unknown before its value is looked for. */
        if (strcmp(key, "config") != 0 && !config_find(key)) {
            snprintf(err, errlen, "unknown option '--%s' (see --help)", key);
            return -1;
        }
        if (eq) {
            val = eq + 1;
        } else if (config_find(key) && config_find(key)->kind == OPT_BOOL) {
            /* A switch: `--allow-plain`, or `--allow-plain no`. */
            val = "yes";
            if (i + 1 < argc && config_bool(argv[i + 1]) >= 0)
                val = argv[++i];
        } else {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "--%s needs a value", key);
                return -1;
            }
            val = argv[++i];
        }
        if (strcmp(key, "config") == 0)
            continue;
        if (config_set(cfg, key, val, err, errlen) < 0)
            return -1;
    }
    return config_check(cfg, err, errlen);
}
