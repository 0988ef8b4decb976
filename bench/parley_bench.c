/*
 * parley-bench: a load generator that speaks Parley's wire protocol.
 *
 *   parley-bench direct|group|idle|login|regflood [--port P]... [options]
 *
 * This file is the controller: it parses the options, forks the worker
 * processes (engine.c), moves them through the phases, shows progress once
 * a second on stderr, then prints a one-line summary on stdout, optionally
 * writes the result as JSON, and exits 1 if anything was lost, duplicated
 * under another msgid, out of order, or failed.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define NS 1000000000ull

/* ---- shared memory and the clock ---- */

static size_t hdr_size(void)
{
    return (sizeof(shared) + 63) & ~(size_t)63;
}

static size_t tstats_size(void)
{
    return (sizeof(tstats) + 63) & ~(size_t)63;
}

size_t shared_size(int nprocs, int nthreads)
{
    return hdr_size() + (size_t)nprocs * (size_t)nthreads * tstats_size() +
           (size_t)nprocs * sizeof(wresult);
}

tstats *shared_tstats(shared *sh, int proc, int thread)
{
    return (tstats *)((char *)sh + hdr_size() +
                      ((size_t)proc * (size_t)sh->nthreads + (size_t)thread) * tstats_size());
}

wresult *shared_wresult(shared *sh, int proc)
{
    char *base =
        (char *)sh + hdr_size() + (size_t)sh->nprocs * (size_t)sh->nthreads * tstats_size();
    return (wresult *)base + proc;
}

static uint64_t clock_base;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

void bench_clock_start(void)
{
    clock_base = mono_ns() - 1; /* so that bench_now() is never 0 */
}

uint64_t bench_now(void)
{
    return mono_ns() - clock_base;
}

void bench_fail(shared *sh, const char *fmt, ...)
{
    int expect = 0;
    if (!atomic_compare_exchange_strong(&sh->failed, &expect, 1))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sh->why, sizeof sh->why, fmt, ap);
    va_end(ap);
}

void bench_note_error(shared *sh, const char *fmt, ...)
{
    int expect = 0;
    if (!atomic_compare_exchange_strong(&sh->erred, &expect, 1))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sh->first_error, sizeof sh->first_error, fmt, ap);
    va_end(ap);
}

void bench_note_flood_error(shared *sh, const char *fmt, ...)
{
    int expect = 0;
    if (!atomic_compare_exchange_strong(&sh->flood_erred, &expect, 1))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sh->flood_error, sizeof sh->flood_error, fmt, ap);
    va_end(ap);
}

/* ---- scenarios ---- */

int scenario_phases(const bopts *o, phase out[PH_N])
{
    scenario sc = o->sc;
    int n = 0;
    out[n++] = PH_CONNECT;
    if (!o->mqtt)
        out[n++] = PH_REGISTER; /* a broker has no accounts */
    if (sc != SC_LOGIN)
        out[n++] = PH_LOGIN;
    if (sc == SC_GROUP) {
        out[n++] = PH_GCREATE;
        out[n++] = PH_GJOIN;
    }
    out[n++] = PH_RUN;
    if (sc != SC_IDLE)
        out[n++] = PH_DRAIN;
    out[n++] = PH_STOP;
    return n;
}

const char *phase_name(phase p)
{
    static const char *names[PH_N] = {"init",       "connect", "register", "login", "group create",
                                      "group join", "run",     "drain",    "stop"};
    return (unsigned)p < PH_N ? names[p] : "?";
}

bool bench_pairs(const bopts *o)
{
    return o->sc == SC_DIRECT || o->sc == SC_REGFLOOD;
}

bool bench_is_flooder(const bopts *o, int i)
{
    return o->sc == SC_REGFLOOD && i >= o->conns - o->flood_conns;
}

int bench_fanout(const bopts *o)
{
    switch (o->sc) {
    case SC_DIRECT:
    case SC_REGFLOOD:
        return 1;
    case SC_GROUP:
        return o->group_size - 1;
    default:
        return 0;
    }
}

bool bench_is_sender(const bopts *o, int i)
{
    switch (o->sc) {
    case SC_DIRECT:
        return true;
    case SC_REGFLOOD:
        return !bench_is_flooder(o, i);
    case SC_GROUP:
        return i % o->group_size < o->senders;
    default:
        return false;
    }
}

int bench_sockets(const bopts *o)
{
    if (o->devices <= 1)
        return o->conns;
    int users = o->conns;
    if (o->devices_senders) {
        users = 0;
        for (int i = 0; i < o->conns; i++)
            users += bench_is_sender(o, i);
    }
    return o->conns + users * (o->devices - 1);
}

static const char *scenario_name(scenario sc)
{
    static const char *names[] = {"direct", "group", "idle", "login", "regflood"};
    return names[sc];
}

/* ---- options ---- */

static void usage(FILE *f)
{
    fprintf(f, "usage: parley-bench direct|group|idle|login|regflood --port PORT [options]\n"
               "\n"
               "Registers and logs in --conns users (b<run>_<n>, password benchpass1), one\n"
               "connection each, then runs the scenario and checks that every message arrived\n"
               "exactly once and in order. Exits 1 if anything was lost or failed.\n"
               "\n"
               "  direct       users in pairs send each other direct messages\n"
               "  group        groups of --group-size members; --senders of each send\n"
               "  idle         connections that only ping; measures the server's memory\n"
               "  login        logins per second (login, logout, login, ...)\n"
               "  regflood     an uninvolved pair's latency without, then during, a flood of\n"
               "               Register requests from other addresses\n"
               "  file         one user uploads a file of --file-mib MiB (default 25) and sends\n"
               "               it, the other downloads it: MB/s up and down (8 chunks in flight)\n"
               "\n"
               "common options:\n"
               "  --host ADDR        server address (default 127.0.0.1)\n"
               "  --port PORT        server port; repeat (or give a comma list) to spread the\n"
               "                     connections over several gateways\n"
               "  --cross            put partners (group members) on different ports\n"
               "  --conns N          connections = users (default: direct/group 1000, idle\n"
               "                     1000, login 16, regflood 2: the pair)\n"
               "  --threads T        event loops per worker process (default: cores)\n"
               "  --procs P          worker processes (default 1; idle: one per --per-proc)\n"
               "  --duration S       measured seconds (default 10; idle 0: just --settle)\n"
               "  --warmup S         seconds before measuring (default 2)\n"
               "  --json FILE        write the result as JSON\n"
               "  --label TEXT       a note carried into the report\n"
               "  --run-id ID        user names are b<ID>_<n> (default: from time and pid)\n"
               "  --pause S          wait S seconds between the setup and the run (default 0)\n"
               "  --quiet            no progress lines\n"
               "  --tls              speak TLS to the server, as parleyd --tls serves it (its\n"
               "                     certificate is not verified: the bench is on loopback)\n"
               "  --ws               speak WebSocket (each --port a parleyd --ws-port; with\n"
               "                     --tls, wss): one binary message per frame, masked\n"
               "  --mqtt             speak MQTT 3.1.1 to a broker instead (direct and idle):\n"
               "                     connect, subscribe to the user's topic b<run>/<n> at\n"
               "                     QoS 1, publish at QoS 1 to the partner's; PUBACK stands\n"
               "                     for SendOk, and receivers PUBACK every message\n"
               "  --server-pid PID   the server process: its CPU time in the measured window\n"
               "                     (direct, group), per delivered message; idle: its VmRSS\n"
               "direct and group:\n"
               "  --inflight K       messages in flight per sender (default 1; 16 with --rate)\n"
               "  --size BYTES       message body size (default 32, at least 26)\n"
               "  --rate R           offered messages/s in total (default 0: as fast as possible)\n"
               "  --group-size M     members per group (default 10)\n"
               "  --senders S        senders per group (default 1)\n"
               "  --straggle S       at the end, wait up to S s for late messages (default 5)\n"
               "  --devices N        sessions per user (default 1): each user's N - 1 others\n"
               "                     log in once it has registered, only receive and ack,\n"
               "                     and must get every message the user sent (an own copy)\n"
               "                     and received, exactly once; reported apart (own copies/s,\n"
               "                     their latency), the delivered figure stays the first\n"
               "                     sessions'. Not with --mqtt\n"
               "  --devices-for WHO  all (default) or senders: only the users who send have\n"
               "                     the other sessions (group --senders 1: the only extra\n"
               "                     pushes are then own copies)\n"
               "  --client-ids HOW   each send's client_msg_id: time (the time in ms above\n"
               "                     random bits, as parley does; the default), count (a\n"
               "                     random start, then counting), random (drawn for each\n"
               "                     message) or none\n"
               "idle:\n"
               "  --settle S         seconds to wait before reading it (default 2)\n"
               "  --ping-every S     ping a connection quiet for S seconds (default 20)\n"
               "  --per-proc N       connections per worker process at most (default 15000)\n"
               "  --src-base ADDR    worker w connects from ADDR + w (default 127.0.0.1 when\n"
               "                     there are several workers)\n"
               "login:\n"
               "  --pwhash-cost NAME the server's --pwhash-cost, for the report only\n"
               "  --users U          register U users (at least --conns; default: one per\n"
               "                     connection); each connection logs in as its share in turn\n"
               "  --reconnect        each login on a new connection: connect, hello, login,\n"
               "                     logout, close (default: logout and login on one connection)\n"
               "regflood (also takes the direct options; --rate defaults to 20/s per user,\n"
               "below parleyd's default --msg-rate of 30):\n"
               "  --flood-conns F    flooding connections (default 40), on top of --conns\n"
               "  --flood-addrs A    source addresses they connect from, in turn (default F)\n"
               "  --flood-src ADDR   the first of them (default 127.0.0.2)\n"
               "  --flood-inflight K Register requests outstanding per flooder (default 2, as\n"
               "                     parleyd's default --auth-queue-per-conn); a BUSY reply\n"
               "                     makes it wait retry_after_ms\n"
               "  --flood-warmup S   seconds of flood before its window (default --warmup)\n"
               "  The pair is measured for --duration without the flood, then the flood\n"
               "  starts, and after --flood-warmup the pair is measured for --duration again.\n"
               "setup:\n"
               "  --setup-window N   connects/registers/logins in flight (default 256)\n"
               "  --setup-timeout S  longest a setup phase may take (default 300)\n");
}

static int add_ports(bopts *o, const char *arg)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", arg);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        char *end;
        long p = strtol(tok, &end, 10);
        if (*end || p <= 0 || p > 65535 || o->nports == BENCH_MAX_PORTS)
            return -1;
        o->ports[o->nports++] = (int)p;
    }
    return 0;
}

static double num(const char *opt, const char *arg, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (errno || *end || end == arg || !(v >= lo && v <= hi)) {
        fprintf(stderr, "parley-bench: %s %s: give a number from %g to %g\n", opt, arg, lo, hi);
        exit(2);
    }
    return v;
}

enum {
    O_HOST = 256,
    O_PORT,
    O_CROSS,
    O_CONNS,
    O_INFLIGHT,
    O_SIZE,
    O_RATE,
    O_DURATION,
    O_WARMUP,
    O_THREADS,
    O_PROCS,
    O_GROUP_SIZE,
    O_SENDERS,
    O_JSON,
    O_LABEL,
    O_SERVER_PID,
    O_PWHASH,
    O_RUN_ID,
    O_PING,
    O_SETTLE,
    O_STRAGGLE,
    O_SETUP_TIMEOUT,
    O_SETUP_WINDOW,
    O_SRC_BASE,
    O_PER_PROC,
    O_QUIET,
    O_PAUSE,
    O_CLIENT_IDS,
    O_USERS,
    O_RECONNECT,
    O_TLS,
    O_MQTT,
    O_WS,
    O_DEVICES,
    O_DEVICES_FOR,
    O_FLOOD_CONNS,
    O_FLOOD_ADDRS,
    O_FLOOD_SRC,
    O_FLOOD_INFLIGHT,
    O_FLOOD_WARMUP,
    O_HELP,
};

static bool quiet;

static void parse(int argc, char **argv, bopts *o)
{
    static const struct option longopts[] = {
        {"host", required_argument, NULL, O_HOST},
        {"port", required_argument, NULL, O_PORT},
        {"cross", no_argument, NULL, O_CROSS},
        {"conns", required_argument, NULL, O_CONNS},
        {"inflight", required_argument, NULL, O_INFLIGHT},
        {"size", required_argument, NULL, O_SIZE},
        {"rate", required_argument, NULL, O_RATE},
        {"duration", required_argument, NULL, O_DURATION},
        {"warmup", required_argument, NULL, O_WARMUP},
        {"threads", required_argument, NULL, O_THREADS},
        {"procs", required_argument, NULL, O_PROCS},
        {"group-size", required_argument, NULL, O_GROUP_SIZE},
        {"senders", required_argument, NULL, O_SENDERS},
        {"json", required_argument, NULL, O_JSON},
        {"label", required_argument, NULL, O_LABEL},
        {"server-pid", required_argument, NULL, O_SERVER_PID},
        {"pwhash-cost", required_argument, NULL, O_PWHASH},
        {"run-id", required_argument, NULL, O_RUN_ID},
        {"ping-every", required_argument, NULL, O_PING},
        {"settle", required_argument, NULL, O_SETTLE},
        {"straggle", required_argument, NULL, O_STRAGGLE},
        {"setup-timeout", required_argument, NULL, O_SETUP_TIMEOUT},
        {"setup-window", required_argument, NULL, O_SETUP_WINDOW},
        {"src-base", required_argument, NULL, O_SRC_BASE},
        {"per-proc", required_argument, NULL, O_PER_PROC},
        {"quiet", no_argument, NULL, O_QUIET},
        {"pause", required_argument, NULL, O_PAUSE},
        {"client-ids", required_argument, NULL, O_CLIENT_IDS},
        {"users", required_argument, NULL, O_USERS},
        {"reconnect", no_argument, NULL, O_RECONNECT},
        {"tls", no_argument, NULL, O_TLS},
        {"mqtt", no_argument, NULL, O_MQTT},
        {"ws", no_argument, NULL, O_WS},
        {"devices", required_argument, NULL, O_DEVICES},
        {"devices-for", required_argument, NULL, O_DEVICES_FOR},
        {"flood-conns", required_argument, NULL, O_FLOOD_CONNS},
        {"flood-addrs", required_argument, NULL, O_FLOOD_ADDRS},
        {"flood-src", required_argument, NULL, O_FLOOD_SRC},
        {"flood-inflight", required_argument, NULL, O_FLOOD_INFLIGHT},
        {"flood-warmup", required_argument, NULL, O_FLOOD_WARMUP},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        exit(0);
    }
    if (argc < 2 || argv[1][0] == '-') {
        usage(stderr);
        exit(2);
    }
    const char *sc = argv[1];
    if (!strcmp(sc, "direct"))
        o->sc = SC_DIRECT;
    else if (!strcmp(sc, "group"))
        o->sc = SC_GROUP;
    else if (!strcmp(sc, "idle"))
        o->sc = SC_IDLE;
    else if (!strcmp(sc, "login"))
        o->sc = SC_LOGIN;
    else if (!strcmp(sc, "regflood"))
        o->sc = SC_REGFLOOD;
    else {
        fprintf(stderr,
                "parley-bench: unknown scenario '%s' (direct, group, idle, login, regflood)\n", sc);
        exit(2);
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    o->host = "127.0.0.1";
    o->conns = -1;
    o->inflight = -1;
    o->size = 32;
    o->duration = -1;
    o->warmup = 2;
    o->threads = cores > 0 ? (int)cores : 1;
    o->group_size = 10;
    o->senders = 1;
    o->pwhash = "unknown";
    o->ping_every = 20;
    o->settle = 2;
    o->straggle = 5;
    o->setup_timeout = 300;
    o->setup_window = 256;
    o->per_proc = 15000;
    o->ids = IDS_TIME;
    o->flood_conns = 40;
    o->flood_src = "127.0.0.2";
    o->flood_inflight = 2;
    o->flood_warmup = -1;
    o->devices = 1;
    optind = 2;
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case O_HOST:
            o->host = optarg;
            break;
        case O_PORT:
            if (add_ports(o, optarg) < 0) {
                fprintf(stderr, "parley-bench: --port %s: give ports 1-65535 (at most %d)\n",
                        optarg, BENCH_MAX_PORTS);
                exit(2);
            }
            break;
        case O_CROSS:
            o->cross = true;
            break;
        case O_CONNS:
            o->conns = (int)num("--conns", optarg, 1, 1e7);
            break;
        case O_INFLIGHT:
            o->inflight = (int)num("--inflight", optarg, 1, 1e6);
            break;
        case O_SIZE:
            o->size = (int)num("--size", optarg, 26, 4000);
            break;
        case O_RATE:
            o->rate = num("--rate", optarg, 0, 1e9);
            break;
        case O_DURATION:
            o->duration = num("--duration", optarg, 0, 1e6);
            break;
        case O_WARMUP:
            o->warmup = num("--warmup", optarg, 0, 1e6);
            break;
        case O_THREADS:
            o->threads = (int)num("--threads", optarg, 1, 256);
            break;
        case O_PROCS:
            o->procs = (int)num("--procs", optarg, 1, 200);
            break;
        case O_GROUP_SIZE:
            o->group_size = (int)num("--group-size", optarg, 2, 1e6);
            break;
        case O_SENDERS:
            o->senders = (int)num("--senders", optarg, 1, 1e6);
            break;
        case O_JSON:
            o->json = optarg;
            break;
        case O_LABEL:
            o->label = optarg;
            break;
        case O_SERVER_PID:
            o->server_pid = (pid_t)num("--server-pid", optarg, 1, 1e9);
            break;
        case O_PWHASH:
            o->pwhash = optarg;
            break;
        case O_RUN_ID:
            o->run_id = optarg;
            break;
        case O_PING:
            o->ping_every = num("--ping-every", optarg, 0.1, 1e6);
            break;
        case O_SETTLE:
            o->settle = num("--settle", optarg, 0, 1e6);
            break;
        case O_STRAGGLE:
            o->straggle = num("--straggle", optarg, 0, 1e6);
            break;
        case O_SETUP_TIMEOUT:
            o->setup_timeout = num("--setup-timeout", optarg, 1, 1e6);
            break;
        case O_SETUP_WINDOW:
            o->setup_window = (int)num("--setup-window", optarg, 1, 1e6);
            break;
        case O_SRC_BASE:
            o->src_base = optarg;
            break;
        case O_PER_PROC:
            o->per_proc = (int)num("--per-proc", optarg, 1, 1e7);
            break;
        case O_QUIET:
            quiet = true;
            break;
        case O_PAUSE:
            o->pause = num("--pause", optarg, 0, 1e6);
            break;
        case O_CLIENT_IDS:
            if (!strcmp(optarg, "none"))
                o->ids = IDS_NONE;
            else if (!strcmp(optarg, "time"))
                o->ids = IDS_TIME;
            else if (!strcmp(optarg, "count"))
                o->ids = IDS_COUNT;
            else if (!strcmp(optarg, "random"))
                o->ids = IDS_RANDOM;
            else {
                fprintf(stderr, "parley-bench: --client-ids %s: give time, count, random or none\n",
                        optarg);
                exit(2);
            }
            break;
        case O_USERS:
            o->users = (int)num("--users", optarg, 1, 1e7);
            break;
        case O_TLS:
            o->tls = true;
            break;
        case O_MQTT:
            o->mqtt = true;
            break;
        case O_WS:
            o->ws = true;
            break;
        case O_DEVICES:
            o->devices = (int)num("--devices", optarg, 1, 8);
            break;
        case O_DEVICES_FOR:
            if (!strcmp(optarg, "senders") || !strcmp(optarg, "all")) {
                o->devices_senders = !strcmp(optarg, "senders");
                break;
            }
            fprintf(stderr, "parley-bench: --devices-for %s: give all or senders\n", optarg);
            exit(2);
        case O_RECONNECT:
            o->reconnect = true;
            break;
        case O_FLOOD_CONNS:
            o->flood_conns = (int)num("--flood-conns", optarg, 0, 1e5);
            break;
        case O_FLOOD_ADDRS:
            o->flood_addrs = (int)num("--flood-addrs", optarg, 1, 1e6);
            break;
        case O_FLOOD_SRC:
            o->flood_src = optarg;
            break;
        case O_FLOOD_INFLIGHT:
            o->flood_inflight = (int)num("--flood-inflight", optarg, 1, 1e6);
            break;
        case O_FLOOD_WARMUP:
            o->flood_warmup = num("--flood-warmup", optarg, 0, 1e6);
            break;
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "parley-bench: unexpected argument '%s'\n", argv[optind]);
        exit(2);
    }
    if (o->nports == 0) {
        fprintf(stderr, "parley-bench: give the server's --port\n");
        exit(2);
    }
    if (o->conns < 0)
        o->conns = o->sc == SC_LOGIN ? 16 : o->sc == SC_REGFLOOD ? 2 : 1000;
    if (o->mqtt && ((o->sc != SC_DIRECT && o->sc != SC_IDLE) || o->tls || o->cross)) {
        fprintf(stderr, "parley-bench: --mqtt runs direct and idle, without --tls or --cross\n");
        exit(2);
    }
    if (o->devices > 1 && ((o->sc != SC_DIRECT && o->sc != SC_GROUP) || o->mqtt)) {
        fprintf(stderr, "parley-bench: --devices is for direct and group, without --mqtt\n");
        exit(2);
    }
    if (o->ws && o->mqtt) {
        fprintf(stderr, "parley-bench: --ws and --mqtt: one protocol at a time\n");
        exit(2);
    }
    if (o->sc == SC_LOGIN) {
        if (o->users == 0)
            o->users = o->conns;
        if (o->users < o->conns) {
            fprintf(stderr, "parley-bench: --users must be at least --conns\n");
            exit(2);
        }
    } else if (o->users || o->reconnect) {
        fprintf(stderr, "parley-bench: --users and --reconnect are for login\n");
        exit(2);
    }
    if (o->sc == SC_REGFLOOD) {
        if (o->conns % 2) {
            fprintf(stderr, "parley-bench: regflood needs an even --conns (users talk in pairs)\n");
            exit(2);
        }
        /* A pair's users stay below parleyd's default --msg-rate (30/s). */
        if (o->rate <= 0)
            o->rate = 20.0 * o->conns;
        if (o->flood_addrs == 0)
            o->flood_addrs = o->flood_conns > 0 ? o->flood_conns : 1;
        if (o->flood_warmup < 0)
            o->flood_warmup = o->warmup;
        o->conns += o->flood_conns; /* from here on: every connection */
    } else {
        o->flood_conns = 0;
    }
    if (o->inflight < 0)
        o->inflight = o->rate > 0 ? 16 : 1;
    if (o->duration < 0)
        o->duration = o->sc == SC_IDLE ? 0 : 10;
    if (o->sc == SC_IDLE)
        o->warmup = 0;
    if (o->sc == SC_DIRECT && o->conns % 2) {
        fprintf(stderr, "parley-bench: direct needs an even --conns (users talk in pairs)\n");
        exit(2);
    }
    if (o->sc == SC_GROUP) {
        if (o->conns < o->group_size)
            o->conns = o->group_size;
        if (o->conns % o->group_size) {
            fprintf(stderr, "parley-bench: --conns %d is not a multiple of --group-size %d\n",
                    o->conns, o->group_size);
            exit(2);
        }
        if (o->senders >= o->group_size) {
            fprintf(stderr, "parley-bench: --senders must be below --group-size\n");
            exit(2);
        }
    }
    if (o->procs == 0)
        o->procs = o->sc == SC_IDLE ? (o->conns + o->per_proc - 1) / o->per_proc : 1;
    if (o->procs > 1 && (bench_pairs(o) || o->sc == SC_GROUP)) {
        fprintf(stderr, "parley-bench: direct, group and regflood run in one process (--procs "
                        "1): every message is checked where it arrives\n");
        exit(2);
    }
    if (o->procs > o->conns)
        o->procs = o->conns;
    if (o->procs > 1 && !o->src_base)
        o->src_base = "127.0.0.1";
    if (!o->run_id) {
        static char id[32];
        /* Short and unique enough: seconds in base 36, then the pid. */
        unsigned long t = (unsigned long)time(NULL) % (36ul * 36 * 36 * 36 * 36 * 36);
        char b36[8];
        int n = 0;
        do {
            b36[n++] = "0123456789abcdefghijklmnopqrstuvwxyz"[t % 36];
            t /= 36;
        } while (t);
        char rev[8];
        for (int i = 0; i < n; i++)
            rev[i] = b36[n - 1 - i];
        rev[n] = '\0';
        snprintf(id, sizeof id, "%s%d", rev, (int)getpid() % 10000);
        o->run_id = id;
    }
}

/* ---- the run ---- */

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

typedef struct {
    uint64_t done[PH_N], sent, answered, errors, expected, unique, dups, mismatch, ooo, bogus,
        sent_win, recv_win, answered_win, pings, first_dup, reconnects, recv_win2, flood_sent,
        flood_ok, flood_busy, flood_err, flood_ok_win, flood_busy_win, flood_connects, flood_closed,
        own_expected, own_unique, own_dups, own_win, dev_expected, dev_unique, dev_win;
    hist_snap lat, lat2, lat_own;
} totals;

static void sum_up(shared *sh, totals *t)
{
    memset(t, 0, sizeof *t);
    for (int p = 0; p < sh->nprocs; p++)
        for (int i = 0; i < sh->nthreads; i++) {
            tstats *s = shared_tstats(sh, p, i);
            for (int k = 0; k < PH_N; k++)
                t->done[k] += atomic_load(&s->done[k]);
            t->sent += atomic_load(&s->sent);
            t->answered += atomic_load(&s->answered);
            t->errors += atomic_load(&s->errors);
            t->expected += atomic_load(&s->expected);
            t->unique += atomic_load(&s->unique);
            t->dups += atomic_load(&s->dups);
            t->mismatch += atomic_load(&s->mismatch);
            t->ooo += atomic_load(&s->ooo);
            t->bogus += atomic_load(&s->bogus);
            t->sent_win += atomic_load(&s->sent_win);
            t->recv_win += atomic_load(&s->recv_win);
            t->answered_win += atomic_load(&s->answered_win);
            t->pings += atomic_load(&s->pings);
            t->reconnects += atomic_load(&s->reconnects);
            t->recv_win2 += atomic_load(&s->recv_win2);
            t->flood_sent += atomic_load(&s->flood_sent);
            t->flood_ok += atomic_load(&s->flood_ok);
            t->flood_busy += atomic_load(&s->flood_busy);
            t->flood_err += atomic_load(&s->flood_err);
            t->flood_ok_win += atomic_load(&s->flood_ok_win);
            t->flood_busy_win += atomic_load(&s->flood_busy_win);
            t->flood_connects += atomic_load(&s->flood_connects);
            t->flood_closed += atomic_load(&s->flood_closed);
            t->own_expected += atomic_load(&s->own_expected);
            t->own_unique += atomic_load(&s->own_unique);
            t->own_dups += atomic_load(&s->own_dups);
            t->own_win += atomic_load(&s->own_win);
            t->dev_expected += atomic_load(&s->dev_expected);
            t->dev_unique += atomic_load(&s->dev_unique);
            t->dev_win += atomic_load(&s->dev_win);
            uint64_t fd = atomic_load(&s->first_dup);
            if (fd && (!t->first_dup || fd < t->first_dup))
                t->first_dup = fd;
            hist_add(&t->lat, &s->lat);
            hist_add(&t->lat2, &s->lat2);
            hist_add(&t->lat_own, &s->lat_own);
        }
}

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* The CPU time (user + system, every thread) process pid has used so far,
 * in seconds; < 0 if unknown. */
static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The name in parentheses may hold anything: the fields follow the
     * last ')'. After it: state, then ppid ... cmajflt (10), utime, stime. */
    char *p = strrchr(buf, ')');
    unsigned long long ut, st;
    if (!p ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (double)(ut + st) / (double)(hz > 0 ? hz : 100);
}

/* How long the threads of process pid have waited, runnable, for a CPU
 * (the run_delay of /proc/PID/task/TID/schedstat, summed), in seconds; < 0
 * if unknown. On a shared machine this is what the server lost to others. */
static double proc_wait_s(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    unsigned long long sum = 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[400];
        unsigned long long run, wait;
        if (e->d_name[0] == '.')
            continue;
        if (snprintf(p, sizeof p, "%s/%.32s/schedstat", path, e->d_name) >= (int)sizeof p)
            continue;
        FILE *f = fopen(p, "r");
        if (!f)
            continue; /* the thread has just exited */
        if (fscanf(f, "%llu %llu", &run, &wait) == 2) {
            sum += wait;
            n++;
        }
        fclose(f);
    }
    closedir(d);
    return n ? (double)sum / 1e9 : -1;
}

/* The 1-minute load average: other work on the machine skews the figures. */
static double loadavg1(void)
{
    double v = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

static double load_at_start;

static pid_t *workers;
static int nworkers;
static int *worker_done; /* reaped */

/* Reaps workers that exited; returns how many exited before they were
 * told to (a crash), naming the first in *why. */
static int reap(shared *sh, bool stopping)
{
    int early = 0;
    for (int i = 0; i < nworkers; i++) {
        if (worker_done[i])
            continue;
        int st;
        pid_t r = waitpid(workers[i], &st, WNOHANG);
        if (r != workers[i])
            continue;
        worker_done[i] = 1;
        bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (!stopping || !ok) {
            early++;
            if (WIFSIGNALED(st))
                bench_fail(sh, "worker %d died of signal %d", i, WTERMSIG(st));
            else
                bench_fail(sh, "worker %d exited with status %d", i, WEXITSTATUS(st));
        }
    }
    return early;
}

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

/* What the last progress line showed, to report each second on its own. */
typedef struct {
    uint64_t count, t;
    int which; /* which window pg->lat follows: 1, or 2 (regflood's flood) */
    hist_snap lat;
} progress;

static void show_progress(const bopts *o, shared *sh, phase ph, uint64_t phase_t0, uint64_t now,
                          progress *pg)
{
    uint64_t *prev_count = &pg->count, *prev_t = &pg->t;
    if (quiet)
        return;
    totals t;
    sum_up(sh, &t);
    double dt = (double)(now - *prev_t) / 1e9;
    const char *sc = scenario_name(o->sc);
    if (ph < PH_RUN) {
        uint64_t d = t.done[ph];
        fprintf(stderr, "[%s] %s: %llu/%d connections (%.0f/s)\n", sc, phase_name(ph),
                (unsigned long long)d, bench_sockets(o),
                dt > 0 ? (double)(d - *prev_count) / dt : 0.0);
        *prev_count = d;
    } else if (o->sc == SC_IDLE) {
        fprintf(stderr, "[idle] holding %d connections, %llu pings sent\n", o->conns,
                (unsigned long long)t.pings);
    } else {
        uint64_t got = o->sc == SC_LOGIN ? t.answered : t.unique;
        uint64_t ws = atomic_load(&sh->win_start);
        uint64_t fs = atomic_load(&sh->flood_start), w2 = atomic_load(&sh->win2_start);
        bool flood = fs && now >= fs;
        /* The window's p99 so far, and the last second's alone: a stall
         * shows in the second it happened. */
        const hist_snap *cur = flood ? &t.lat2 : &t.lat;
        char p99[80] = "-";
        if (pg->which != (flood ? 2 : 1) || cur->count < pg->lat.count) {
            memset(&pg->lat, 0, sizeof(pg->lat)); /* a new window */
            pg->which = flood ? 2 : 1;
        }
        if (cur->count) {
            hist_snap *d = &pg->lat;
            for (int i = 0; i < HIST_N; i++)
                d->n[i] = cur->n[i] - d->n[i];
            d->count = cur->count - d->count;
            d->max = cur->max;
            int len = snprintf(p99, sizeof p99, "%.2f ms", ms(hist_quantile(cur, 0.99)));
            if (d->count)
                snprintf(p99 + len, sizeof p99 - (size_t)len, " (last second %.2f ms)",
                         ms(hist_quantile(d, 0.99)));
            pg->lat = *cur;
        }
        char fl[160] = "";
        if (flood)
            snprintf(fl, sizeof fl, "; flood: %llu registered, %llu busy, %llu errors, %llu closed",
                     (unsigned long long)t.flood_ok, (unsigned long long)t.flood_busy,
                     (unsigned long long)t.flood_err, (unsigned long long)t.flood_closed);
        fprintf(stderr, "[%s] %.1fs%s sent %llu, %s %llu, %.0f/s, p99 %s%s\n", sc,
                (double)(now - phase_t0) / 1e9,
                ph == PH_DRAIN      ? " (draining)"
                : flood && now < w2 ? " (flood warm-up)"
                : flood             ? " (flood)"
                : now < ws          ? " (warm-up)"
                                    : "",
                (unsigned long long)t.sent, o->sc == SC_LOGIN ? "logged in" : "delivered",
                (unsigned long long)got, dt > 0 ? (double)(got - *prev_count) / dt : 0.0, p99, fl);
        *prev_count = got;
    }
    *prev_t = now;
}

static void sleep_ms(int n)
{
    struct timespec ts = {n / 1000, (long)(n % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

typedef struct {
    double phase_s[PH_N];
    long rss_before, rss_after;
    /* --server-pid: its CPU seconds within the measured window, and how
     * long the window was between the two readings; cpu_s < 0: unknown */
    double cpu_s, cpu_wall_s;
    double wait_s; /* ... and how long its threads waited for a CPU; < 0: unknown */
    bool drained;
    double drain_s;
} runinfo;

/* Sets phase ph and waits until every connection is through it. */
static bool setup_phase(const bopts *o, shared *sh, phase ph, runinfo *ri, progress *pg)
{
    uint64_t t0 = bench_now();
    pg->count = 0;
    pg->t = t0;
    atomic_store(&sh->phase, ph);
    for (;;) {
        sleep_ms(5);
        reap(sh, false);
        if (interrupted)
            bench_fail(sh, "interrupted");
        if (atomic_load(&sh->failed))
            return false;
        totals t;
        sum_up(sh, &t);
        uint64_t now = bench_now();
        if (t.done[ph] >= (uint64_t)bench_sockets(o)) {
            ri->phase_s[ph] = (double)(now - t0) / 1e9;
            return true;
        }
        if ((double)(now - t0) / 1e9 > o->setup_timeout) {
            bench_fail(sh, "%s: only %llu of %d connections through after %.0f s", phase_name(ph),
                       (unsigned long long)t.done[ph], bench_sockets(o), o->setup_timeout);
            return false;
        }
        if (now - pg->t >= NS)
            show_progress(o, sh, ph, t0, now, pg);
    }
}

/* Sleeps until `until` on the bench clock, with progress; false on failure. */
static bool run_until(const bopts *o, shared *sh, phase ph, uint64_t phase_t0, uint64_t until,
                      progress *pg, bool (*done)(const bopts *, shared *))
{
    for (;;) {
        uint64_t now = bench_now();
        if (now >= until)
            return true;
        sleep_ms(5);
        reap(sh, false);
        if (interrupted)
            bench_fail(sh, "interrupted");
        if (atomic_load(&sh->failed))
            return false;
        if (done && done(o, sh))
            return true;
        now = bench_now();
        if (now - pg->t >= NS)
            show_progress(o, sh, ph, phase_t0, now, pg);
    }
}

static bool drained(const bopts *o, shared *sh)
{
    totals t;
    sum_up(sh, &t);
    /* After a failure (a connection gone) some sends will never be
     * answered: wait only for what was acknowledged to arrive. */
    if (t.answered + t.errors < t.sent && !atomic_load(&sh->failed))
        return false;
    return o->sc == SC_LOGIN || (t.unique >= t.expected && t.own_unique >= t.own_expected &&
                                 t.dev_unique >= t.dev_expected);
}

/* No new traffic; waits up to --straggle seconds for replies and late
 * messages, even after a failure, so that a loss is never counted for a
 * message that was merely slow. */
static void drain(const bopts *o, shared *sh, runinfo *ri, progress *pg)
{
    uint64_t t0 = bench_now(), until = t0 + (uint64_t)(o->straggle * 1e9);
    atomic_store(&sh->phase, PH_DRAIN);
    while (bench_now() < until && !interrupted && !drained(o, sh)) {
        sleep_ms(5);
        reap(sh, false);
        uint64_t now = bench_now();
        if (now - pg->t >= NS)
            show_progress(o, sh, PH_DRAIN, t0, now, pg);
    }
    ri->drained = drained(o, sh);
    ri->drain_s = (double)(bench_now() - t0) / 1e9;
}

static void run_phases(const bopts *o, shared *sh, runinfo *ri, progress *pg)
{
    phase ph[PH_N];
    int n = scenario_phases(o, ph);
    pg->t = bench_now();
    for (int i = 0; i < n && ph[i] != PH_STOP; i++) {
        if (ph[i] < PH_RUN) {
            if (!setup_phase(o, sh, ph[i], ri, pg))
                return;
            continue;
        }
        if (ph[i] == PH_RUN && o->pause > 0) {
            uint64_t p0 = bench_now();
            if (!run_until(o, sh, ph[i - 1], p0, p0 + (uint64_t)(o->pause * 1e9), pg, NULL))
                return;
        }
        uint64_t t0 = bench_now();
        if (ph[i] == PH_RUN) {
            atomic_store(&sh->run_start, t0);
            uint64_t ws = t0 + (uint64_t)(o->warmup * 1e9);
            uint64_t end = ws + (uint64_t)(o->duration * 1e9);
            atomic_store(&sh->win_start, ws);
            atomic_store(&sh->win_end, end);
            if (o->sc == SC_REGFLOOD) {
                /* The flood starts where the quiet window ends. */
                uint64_t w2 = end + (uint64_t)(o->flood_warmup * 1e9);
                atomic_store(&sh->flood_start, end);
                atomic_store(&sh->win2_start, w2);
                atomic_store(&sh->win2_end, w2 + (uint64_t)(o->duration * 1e9));
                end = w2 + (uint64_t)(o->duration * 1e9);
            }
            atomic_store(&sh->phase, PH_RUN);
            pg->count = 0;
            if (o->sc == SC_IDLE) {
                if (!run_until(o, sh, PH_RUN, t0, t0 + (uint64_t)(o->settle * 1e9), pg, NULL))
                    return;
                if (o->server_pid)
                    ri->rss_after = rss_kb(o->server_pid);
                if (!run_until(o, sh, PH_RUN, t0, bench_now() + (uint64_t)(o->duration * 1e9), pg,
                               NULL))
                    return;
            } else {
                /* The server's CPU time, read where the window starts and
                 * where it ends (within the 5 ms of run_until's sleep). */
                uint64_t we = atomic_load(&sh->win_end);
                bool ok = run_until(o, sh, PH_RUN, t0, ws, pg, NULL);
                double c0 = ok && o->server_pid ? proc_cpu_s(o->server_pid) : -1;
                double w0 = ok && o->server_pid ? proc_wait_s(o->server_pid) : -1;
                uint64_t c0_t = bench_now();
                ok = ok && run_until(o, sh, PH_RUN, t0, we, pg, NULL);
                if (ok && c0 >= 0) {
                    double c1 = proc_cpu_s(o->server_pid);
                    double w1 = w0 >= 0 ? proc_wait_s(o->server_pid) : -1;
                    if (c1 >= c0) {
                        ri->cpu_s = c1 - c0;
                        ri->cpu_wall_s = (double)(bench_now() - c0_t) / 1e9;
                    }
                    if (w1 >= w0 && w0 >= 0)
                        ri->wait_s = w1 - w0;
                }
                if (!ok || !run_until(o, sh, PH_RUN, t0, end, pg, NULL)) {
                    drain(o, sh, ri, pg);
                    return;
                }
            }
            ri->phase_s[PH_RUN] = (double)(bench_now() - t0) / 1e9;
        } else if (ph[i] == PH_DRAIN) {
            drain(o, sh, ri, pg);
        }
    }
}

/* Runs the scenario's phases, showing progress. */
static void run(const bopts *o, shared *sh, runinfo *ri)
{
    /* A histogram is 15 KiB: off the stack. */
    progress *pg = calloc(1, sizeof(*pg));
    if (!pg) {
        bench_fail(sh, "out of memory");
        return;
    }
    run_phases(o, sh, ri, pg);
    free(pg);
}

static void stop_workers(shared *sh)
{
    atomic_store(&sh->phase, PH_STOP);
    uint64_t t0 = bench_now();
    for (;;) {
        reap(sh, true);
        int left = 0;
        for (int i = 0; i < nworkers; i++)
            left += !worker_done[i];
        if (!left)
            return;
        if (bench_now() - t0 > 60 * NS) {
            for (int i = 0; i < nworkers; i++)
                if (!worker_done[i]) {
                    kill(workers[i], SIGKILL);
                    waitpid(workers[i], NULL, 0);
                    worker_done[i] = 1;
                    bench_fail(sh, "worker %d did not finish its check in 60 s", i);
                }
            return;
        }
        sleep_ms(10);
    }
}

/* ---- the report ---- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

typedef struct {
    totals t;
    uint64_t lost, unanswered, unacked, refused, lost_own, lost_dev;
    char example[256];
    double first_dup_s; /* into the run phase; < 0: none */
    char first_error[256];
    char flood_error[256];
    bool ok;
    char why[1024];
} outcome;

static void add_why(outcome *oc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_why(outcome *oc, const char *fmt, ...)
{
    size_t len = strlen(oc->why);
    if (len && len + 2 < sizeof oc->why) {
        strcat(oc->why, "; ");
        len += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(oc->why + len, sizeof oc->why - len, fmt, ap);
    va_end(ap);
    oc->ok = false;
}

static void judge(const bopts *o, shared *sh, const runinfo *ri, outcome *oc)
{
    sum_up(sh, &oc->t);
    oc->ok = true;
    uint64_t rs = atomic_load(&sh->run_start);
    oc->first_dup_s = oc->t.first_dup && rs ? ((double)oc->t.first_dup - (double)rs) / 1e9 : -1;
    for (int p = 0; p < sh->nprocs; p++) {
        wresult *r = shared_wresult(sh, p);
        oc->lost += atomic_load(&r->lost);
        oc->unanswered += atomic_load(&r->unanswered);
        oc->unacked += atomic_load(&r->unacked_delivered);
        oc->refused += atomic_load(&r->refused);
        oc->lost_own += atomic_load(&r->lost_own);
        oc->lost_dev += atomic_load(&r->lost_dev);
        if (!oc->example[0] && r->example[0])
            snprintf(oc->example, sizeof oc->example, "%s", r->example);
    }
    if (atomic_load(&sh->failed))
        add_why(oc, "%s", sh->why);
    if (atomic_load(&sh->erred))
        snprintf(oc->first_error, sizeof oc->first_error, "%s", sh->first_error);
    if (atomic_load(&sh->flood_erred))
        snprintf(oc->flood_error, sizeof oc->flood_error, "%s", sh->flood_error);
    const totals *t = &oc->t;
    if (bench_pairs(o) || o->sc == SC_GROUP) {
        if (oc->lost)
            add_why(oc, "%llu messages LOST (acknowledged by the server, never delivered; e.g. %s)",
                    (unsigned long long)oc->lost, oc->example);
        if (t->mismatch)
            add_why(oc, "%llu messages delivered twice under different msgids",
                    (unsigned long long)t->mismatch);
        if (t->ooo)
            add_why(oc, "%llu messages OUT OF ORDER (seq went backwards; e.g. %s)",
                    (unsigned long long)t->ooo, sh->first_ooo);
        if (t->bogus)
            add_why(oc, "%llu pushes or replies the bench never asked for",
                    (unsigned long long)t->bogus);
        if (oc->unanswered)
            add_why(oc, "%llu sends never answered", (unsigned long long)oc->unanswered);

        if (!atomic_load(&sh->failed) && t->recv_win == 0)
            add_why(oc, "nothing was delivered in the measured window");
        if (o->devices > 1 && !atomic_load(&sh->failed) && t->own_win == 0)
            add_why(oc, "no own copy reached a sender's other session in the measured window");
        if (o->sc == SC_REGFLOOD && !atomic_load(&sh->failed) && t->recv_win2 == 0)
            add_why(oc, "nothing was delivered to the pair during the flood");
    }
    if (o->sc == SC_LOGIN && !atomic_load(&sh->failed) && t->answered_win == 0)
        add_why(oc, "no login completed in the measured window");
    (void)ri;
}

static void summary(const bopts *o, const runinfo *ri, const outcome *oc)
{
    const totals *t = &oc->t;
    const hist_snap *h = &t->lat;
    double d = o->duration > 0 ? o->duration : 1;
    char lat[200] = "";
    if (h->count)
        snprintf(lat, sizeof lat, ", latency p50 %.2f ms p99 %.2f ms p99.9 %.2f ms max %.2f ms",
                 ms(hist_quantile(h, 0.5)), ms(hist_quantile(h, 0.99)), ms(hist_quantile(h, 0.999)),
                 ms(h->max));
    char settings[256];
    char rate[32];
    char dups[80];
    char cpu[160] = "";
    if (ri->cpu_s >= 0 && ri->cpu_wall_s > 0 && t->recv_win) {
        int len = snprintf(cpu, sizeof cpu, "; server CPU %.1f us/msg (%.0f%% of a core)",
                           ri->cpu_s * 1e6 / (double)t->recv_win, 100 * ri->cpu_s / ri->cpu_wall_s);
        if (ri->wait_s >= 0 && len > 0 && (size_t)len < sizeof cpu)
            snprintf(cpu + len, sizeof cpu - (size_t)len, ", waited for a CPU %.0f%% of the time",
                     100 * ri->wait_s / ri->cpu_wall_s);
    }
    if (t->dups && oc->first_dup_s >= 0)
        snprintf(dups, sizeof dups, "%llu duplicates (the first %.2f s into the run)",
                 (unsigned long long)t->dups, oc->first_dup_s);
    else
        snprintf(dups, sizeof dups, "%llu duplicates", (unsigned long long)t->dups);
    if (oc->refused) {
        size_t len = strlen(dups);
        snprintf(dups + len, sizeof dups - len, ", %llu refused", (unsigned long long)oc->refused);
    }
    if (o->rate > 0)
        snprintf(rate, sizeof rate, "%.0f/s", o->rate);
    else
        snprintf(rate, sizeof rate, "max");
    /* --devices: the other sessions' figures, apart from the first's. */
    char devs[320] = "";
    if (o->devices > 1) {
        const hist_snap *ho = &t->lat_own;
        snprintf(devs, sizeof devs,
                 "; %d sessions per user: own copies %.0f/s to the senders' other sessions "
                 "(latency p50 %.2f ms p99 %.2f ms), %.0f/s to the receivers' other sessions, "
                 "%llu own copies and %llu other copies lost, %llu own duplicates",
                 o->devices, (double)t->own_win / d, ms(hist_quantile(ho, 0.5)),
                 ms(hist_quantile(ho, 0.99)), (double)t->dev_win / d,
                 (unsigned long long)oc->lost_own, (unsigned long long)oc->lost_dev,
                 (unsigned long long)t->own_dups);
    }
    switch (o->sc) {
    case SC_DIRECT:
        snprintf(settings, sizeof settings, "conns=%d inflight=%d size=%d rate=%s%s%s%s", o->conns,
                 o->inflight, o->size, rate, o->cross ? " cross" : "", o->tls ? " tls" : "",
                 o->mqtt ? " mqtt"
                 : o->ws ? " ws"
                         : "");
        printf("direct %s: %.0f msg/s delivered%s%s%s; %llu sent, %llu lost, %s, %llu out "
               "of order: %s\n",
               settings, (double)t->recv_win / d, lat, cpu, devs, (unsigned long long)t->sent,
               (unsigned long long)oc->lost, dups, (unsigned long long)t->ooo,
               oc->ok ? "OK" : "FAIL");
        break;
    case SC_GROUP:
        snprintf(settings, sizeof settings,
                 "conns=%d group-size=%d senders=%d inflight=%d size=%d rate=%s%s", o->conns,
                 o->group_size, o->senders, o->inflight, o->size, rate, o->cross ? " cross" : "");
        printf("group %s: %.0f deliveries/s (%.0f msg/s sent)%s%s%s; %llu lost, %s, %llu "
               "out of order: %s\n",
               settings, (double)t->recv_win / d, (double)t->sent_win / d, lat, cpu, devs,
               (unsigned long long)oc->lost, dups, (unsigned long long)t->ooo,
               oc->ok ? "OK" : "FAIL");
        break;
    case SC_IDLE: {
        char mem[128] = "server memory not measured (no --server-pid)";
        if (ri->rss_before > 0 && ri->rss_after > 0)
            snprintf(mem, sizeof mem, "server RSS %.1f -> %.1f MiB, %.0f bytes/connection",
                     ri->rss_before / 1024.0, ri->rss_after / 1024.0,
                     (double)(ri->rss_after - ri->rss_before) * 1024.0 / o->conns);
        if (o->mqtt) /* no registration; "logins" are subscriptions */
            printf("idle conns=%d procs=%d mqtt: %s; %.0f connects/s, %.0f subscribes/s: %s\n",
                   o->conns, o->procs, mem,
                   ri->phase_s[PH_CONNECT] > 0 ? o->conns / ri->phase_s[PH_CONNECT] : 0,
                   ri->phase_s[PH_LOGIN] > 0 ? o->conns / ri->phase_s[PH_LOGIN] : 0,
                   oc->ok ? "OK" : "FAIL");
        else
            printf("idle conns=%d procs=%d%s: %s; %.0f connects/s, %.0f registers/s, %.0f "
                   "logins/s: %s\n",
                   o->conns, o->procs, o->tls ? " tls" : "", mem,
                   ri->phase_s[PH_CONNECT] > 0 ? o->conns / ri->phase_s[PH_CONNECT] : 0,
                   ri->phase_s[PH_REGISTER] > 0 ? o->conns / ri->phase_s[PH_REGISTER] : 0,
                   ri->phase_s[PH_LOGIN] > 0 ? o->conns / ri->phase_s[PH_LOGIN] : 0,
                   oc->ok ? "OK" : "FAIL");
        break;
    }
    case SC_LOGIN:
        printf("login conns=%d users=%d%s pwhash-cost=%s: %.0f logins/s%s: %s\n", o->conns,
               o->users, o->reconnect ? " reconnect" : "", o->pwhash, (double)t->answered_win / d,
               lat, oc->ok ? "OK" : "FAIL");
        break;
    case SC_REGFLOOD: {
        const hist_snap *h2 = &t->lat2;
        double q1 = ms(hist_quantile(h, 0.99)), q2 = ms(hist_quantile(h2, 0.99));
        char ratio[32] = "-";
        if (h->count && h2->count && q1 > 0)
            snprintf(ratio, sizeof ratio, "x%.2f", q2 / q1);
        printf("regflood pair-conns=%d rate=%.0f/s flood-conns=%d flood-addrs=%d "
               "pwhash-cost=%s: pair p99 %.2f ms without the flood, %.2f ms during it (%s; "
               "p50 %.2f -> %.2f ms, max %.2f -> %.2f ms); flood: %.1f registered/s, %.1f "
               "busy/s, %llu errors, %llu connections closed; pair: %llu sent, %llu lost, %s, "
               "%llu out of order: %s\n",
               o->conns - o->flood_conns, o->rate, o->flood_conns, o->flood_addrs, o->pwhash, q1,
               q2, ratio, ms(hist_quantile(h, 0.5)), ms(hist_quantile(h2, 0.5)), ms(h->max),
               ms(h2->max), (double)t->flood_ok_win / d, (double)t->flood_busy_win / d,
               (unsigned long long)t->flood_err, (unsigned long long)t->flood_closed,
               (unsigned long long)t->sent, (unsigned long long)oc->lost, dups,
               (unsigned long long)t->ooo, oc->ok ? "OK" : "FAIL");
        break;
    }
    }
    fflush(stdout);
}

static void write_json(const bopts *o, const runinfo *ri, const outcome *oc)
{
    FILE *f = fopen(o->json, "w");
    if (!f) {
        fprintf(stderr, "parley-bench: cannot write %s: %s\n", o->json, strerror(errno));
        return;
    }
    const totals *t = &oc->t;
    const hist_snap *h = &t->lat;
    double d = o->duration > 0 ? o->duration : 1;
    fprintf(f, "{\"scenario\":\"%s\",\"label\":", scenario_name(o->sc));
    json_str(f, o->label ? o->label : "");
    fprintf(f, ",\"ok\":%s,\"failure\":", oc->ok ? "true" : "false");
    json_str(f, oc->why);
    fprintf(f, ",\n\"settings\":{\"host\":");
    json_str(f, o->host);
    fprintf(f, ",\"ports\":[");
    for (int i = 0; i < o->nports; i++)
        fprintf(f, "%s%d", i ? "," : "", o->ports[i]);
    fprintf(f,
            "],\"cross\":%s,\"conns\":%d,\"inflight\":%d,\"size\":%d,\"rate\":%.0f,"
            "\"duration\":%g,\"warmup\":%g,\"threads\":%d,\"procs\":%d,\"group_size\":%d,"
            "\"senders\":%d,\"users\":%d,\"reconnect\":%s,\"tls\":%s,\"flood_conns\":%d,"
            "\"flood_addrs\":%d,\"flood_inflight\":%d,\"flood_warmup\":%g,\"pwhash_cost\":",
            o->cross ? "true" : "false", o->conns, o->inflight, o->size, o->rate, o->duration,
            o->warmup, o->threads, o->procs, o->sc == SC_GROUP ? o->group_size : 0,
            o->sc == SC_GROUP ? o->senders : 0, o->sc == SC_LOGIN ? o->users : 0,
            o->reconnect ? "true" : "false", o->tls ? "true" : "false", o->flood_conns,
            o->sc == SC_REGFLOOD ? o->flood_addrs : 0, o->sc == SC_REGFLOOD ? o->flood_inflight : 0,
            o->sc == SC_REGFLOOD ? o->flood_warmup : 0);
    json_str(f, o->pwhash);
    static const char *const ids_name[] = {"none", "time", "count", "random"};
    fprintf(f, ",\"client_ids\":\"%s\",\"run_id\":", ids_name[o->ids]);
    json_str(f, o->run_id);
    fprintf(f, ",\"devices\":%d,\"devices_for\":\"%s\"", o->devices,
            o->devices_senders ? "senders" : "all");
    fprintf(f, ",\"protocol\":\"%s\",\"server_pid\":%d",
            o->mqtt ? "mqtt"
            : o->ws ? "parley-ws"
                    : "parley",
            (int)o->server_pid);
    fprintf(f, ",\"loadavg_at_start\":%.2f},\n\"results\":{", load_at_start);
    fprintf(f,
            "\"sent\":%llu,\"answered\":%llu,\"errors\":%llu,\"delivered\":%llu,"
            "\"duplicates\":%llu,\"mismatched\":%llu,\"out_of_order\":%llu,\"unexpected\":%llu,"
            "\"lost\":%llu,\"unanswered\":%llu,\"delivered_unacknowledged\":%llu,"
            "\"drained\":%s,\"drain_s\":%.3f,",
            (unsigned long long)t->sent, (unsigned long long)t->answered,
            (unsigned long long)t->errors, (unsigned long long)t->unique,
            (unsigned long long)t->dups, (unsigned long long)t->mismatch,
            (unsigned long long)t->ooo, (unsigned long long)t->bogus, (unsigned long long)oc->lost,
            (unsigned long long)oc->unanswered, (unsigned long long)oc->unacked,
            ri->drained ? "true" : "false", ri->drain_s);
    fprintf(f, "\"first_duplicate_s\":%.3f,\"refused\":%llu,\"first_error\":", oc->first_dup_s,
            (unsigned long long)oc->refused);
    json_str(f, oc->first_error);
    fputc(',', f);
    fprintf(f, "\"pings\":%llu,", (unsigned long long)t->pings);
    fprintf(f, "\"sent_per_s\":%.1f,\"delivered_per_s\":%.1f,\"logins_per_s\":%.1f,",
            (double)t->sent_win / d, (double)t->recv_win / d, (double)t->answered_win / d);
    fprintf(f,
            "\"setup_s\":{\"connect\":%.3f,\"register\":%.3f,\"login\":%.3f,\"group_create\":%.3f,"
            "\"group_join\":%.3f},",
            ri->phase_s[PH_CONNECT], ri->phase_s[PH_REGISTER], ri->phase_s[PH_LOGIN],
            ri->phase_s[PH_GCREATE], ri->phase_s[PH_GJOIN]);
    if (o->sc == SC_LOGIN)
        fprintf(f, "\"reconnects\":%llu,", (unsigned long long)t->reconnects);
    /* --devices: own copies (the senders' other sessions), and the copies
     * the receivers' other sessions got; "delivered" is the first's alone. */
    if (o->devices > 1) {
        const hist_snap *ho = &t->lat_own;
        fprintf(f,
                "\"own_expected\":%llu,\"own_delivered\":%llu,\"own_duplicates\":%llu,"
                "\"own_lost\":%llu,\"own_delivered_per_s\":%.1f,\"device_expected\":%llu,"
                "\"device_delivered\":%llu,\"device_lost\":%llu,\"device_delivered_per_s\":%.1f,"
                "\"own_latency_ms\":{\"count\":%llu,\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,"
                "\"p999\":%.4f,\"max\":%.4f,\"mean\":%.4f},",
                (unsigned long long)t->own_expected, (unsigned long long)t->own_unique,
                (unsigned long long)t->own_dups, (unsigned long long)oc->lost_own,
                (double)t->own_win / d, (unsigned long long)t->dev_expected,
                (unsigned long long)t->dev_unique, (unsigned long long)oc->lost_dev,
                (double)t->dev_win / d, (unsigned long long)ho->count, ms(hist_quantile(ho, 0.5)),
                ms(hist_quantile(ho, 0.9)), ms(hist_quantile(ho, 0.99)),
                ms(hist_quantile(ho, 0.999)), ms(ho->max), hist_mean(ho) / 1e6);
    }
    /* The server's CPU time in the window, per message delivered in it. */
    if (ri->cpu_s >= 0 && ri->cpu_wall_s > 0) {
        fprintf(f, "\"server_cpu_s\":%.3f,\"server_cpu_share\":%.4f,\"server_cpu_us_per_msg\":",
                ri->cpu_s, ri->cpu_s / ri->cpu_wall_s);
        if (t->recv_win)
            fprintf(f, "%.3f,", ri->cpu_s * 1e6 / (double)t->recv_win);
        else
            fprintf(f, "null,");
        /* Runnable but not running: the CPU others took from the server
         * (its threads summed, so it can pass 1). */
        if (ri->wait_s >= 0)
            fprintf(f, "\"server_wait_s\":%.3f,\"server_wait_share\":%.4f,", ri->wait_s,
                    ri->wait_s / ri->cpu_wall_s);
    }
    if (o->sc == SC_REGFLOOD) {
        /* latency_ms is the pair without the flood, flood_latency_ms during it. */
        const hist_snap *h2 = &t->lat2;
        double q1 = hist_quantile(h, 0.99), q2 = hist_quantile(h2, 0.99);
        fprintf(f,
                "\"pair_conns\":%d,\"flood_delivered_per_s\":%.1f,\"flood_latency_ms\":{"
                "\"count\":%llu,\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,\"p999\":%.4f,"
                "\"max\":%.4f,\"mean\":%.4f},\"p99_ratio\":",
                o->conns - o->flood_conns, (double)t->recv_win2 / d, (unsigned long long)h2->count,
                ms(hist_quantile(h2, 0.5)), ms(hist_quantile(h2, 0.9)), ms(q2),
                ms(hist_quantile(h2, 0.999)), ms(h2->max), hist_mean(h2) / 1e6);
        if (h->count && h2->count && q1 > 0)
            fprintf(f, "%.4f", q2 / q1);
        else
            fprintf(f, "null");
        fprintf(f,
                ",\n\"flood\":{\"sent\":%llu,\"registered\":%llu,\"busy\":%llu,"
                "\"errors\":%llu,\"connects\":%llu,\"closed\":%llu,\"registered_per_s\":%.2f,"
                "\"busy_per_s\":%.2f,\"first_error\":",
                (unsigned long long)t->flood_sent, (unsigned long long)t->flood_ok,
                (unsigned long long)t->flood_busy, (unsigned long long)t->flood_err,
                (unsigned long long)t->flood_connects, (unsigned long long)t->flood_closed,
                (double)t->flood_ok_win / d, (double)t->flood_busy_win / d);
        json_str(f, oc->flood_error);
        fprintf(f, "},\n\"flood_latency_hist_ns\":");
        hist_write_json(f, h2);
        fputc(',', f);
    }
    if (o->sc == SC_IDLE) {
        fprintf(f, "\"rss_before_kb\":%ld,\"rss_after_kb\":%ld,", ri->rss_before, ri->rss_after);
        if (ri->rss_before > 0 && ri->rss_after > 0)
            fprintf(f, "\"bytes_per_conn\":%.1f,",
                    (double)(ri->rss_after - ri->rss_before) * 1024.0 / o->conns);
        /* A phase that did not run (--mqtt registers nobody): null. */
        static const char *const key[] = {"connects_per_s", "registers_per_s", "idle_logins_per_s"};
        static const phase ph[] = {PH_CONNECT, PH_REGISTER, PH_LOGIN};
        for (int i = 0; i < 3; i++) {
            if (ri->phase_s[ph[i]] > 0)
                fprintf(f, "\"%s\":%.1f,", key[i], o->conns / ri->phase_s[ph[i]]);
            else
                fprintf(f, "\"%s\":null,", key[i]);
        }
    }
    fprintf(f,
            "\"latency_ms\":{\"count\":%llu,\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,\"p999\":%.4f,"
            "\"max\":%.4f,\"mean\":%.4f},\n\"latency_hist_ns\":",
            (unsigned long long)h->count, ms(hist_quantile(h, 0.5)), ms(hist_quantile(h, 0.9)),
            ms(hist_quantile(h, 0.99)), ms(hist_quantile(h, 0.999)), ms(h->max),
            hist_mean(h) / 1e6);
    hist_write_json(f, h);
    fprintf(f, "}}\n");
    if (fclose(f) != 0)
        fprintf(stderr, "parley-bench: writing %s: %s\n", o->json, strerror(errno));
}

int main(int argc, char **argv)
{
    /* The file scenario drives two connections of its own (filebench.c). */
    if (argc >= 2 && !strcmp(argv[1], "file"))
        return filebench_main(argc, argv);
    bopts o = {0};
    parse(argc, argv, &o);

    /* Each connection is a descriptor: take all the system allows. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int per = (bench_sockets(&o) + o.procs - 1) / o.procs;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (rlim_t)per + 64 > rl.rlim_cur) {
        fprintf(stderr,
                "parley-bench: %d connections per process, but a process may open only %llu "
                "files: use more --procs (or a lower --per-proc)\n",
                per, (unsigned long long)rl.rlim_cur);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    load_at_start = loadavg1();
    bench_clock_start();
    size_t sz = shared_size(o.procs, o.threads);
    shared *sh = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        perror("parley-bench: mmap");
        return 1;
    }
    sh->nprocs = o.procs;
    sh->nthreads = o.threads;
    atomic_store(&sh->phase, PH_INIT);

    runinfo ri = {0};
    ri.cpu_s = -1;
    ri.wait_s = -1;
    if (o.sc == SC_IDLE && o.server_pid) {
        ri.rss_before = rss_kb(o.server_pid);
        if (ri.rss_before < 0)
            fprintf(stderr, "parley-bench: cannot read /proc/%d/status; memory not measured\n",
                    (int)o.server_pid);
    }
    if (!quiet)
        fprintf(stderr, "[%s] %d connections to %s:%d%s%s, %d process(es) x %d thread(s), run %s\n",
                scenario_name(o.sc), o.conns, o.host, o.ports[0], o.tls ? " (TLS)" : "",
                o.nports > 1 ? " (and more ports)" : "", o.procs, o.threads, o.run_id);

    workers = calloc((size_t)o.procs, sizeof(*workers));
    worker_done = calloc((size_t)o.procs, sizeof(*worker_done));
    if (!workers || !worker_done)
        return 1;
    fflush(stdout);
    fflush(stderr);
    for (int w = 0; w < o.procs; w++) {
        int lo = (int)((long)o.conns * w / o.procs), hi = (int)((long)o.conns * (w + 1) / o.procs);
        pid_t pid = fork();
        if (pid < 0) {
            perror("parley-bench: fork");
            bench_fail(sh, "fork failed");
            break;
        }
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            signal(SIGINT, SIG_IGN);
            signal(SIGTERM, SIG_DFL);
            engine_worker(&o, sh, w, o.procs, lo, hi);
        }
        workers[nworkers++] = pid;
    }
    if (!atomic_load(&sh->failed))
        run(&o, sh, &ri);
    stop_workers(sh);

    outcome oc;
    memset(&oc, 0, sizeof oc);
    judge(&o, sh, &ri, &oc);
    summary(&o, &ri, &oc);
    if (o.json)
        write_json(&o, &ri, &oc);
    if (oc.t.errors)
        fprintf(stderr,
                "parley-bench: WARNING: the server refused %llu sends (the first: %s); not a loss, "
                "since the sender was told, but the offered load was not served\n",
                (unsigned long long)oc.t.errors, oc.first_error);
    if (!oc.ok) {
        fprintf(stderr, "parley-bench: FAIL: %s\n", oc.why);
        return 1;
    }
    return 0;
}
