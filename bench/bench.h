/*
 * parley-bench: the pieces shared by the controller (parley_bench.c: options,
 * phases, progress, the report) and the engine (engine.c: the connections).
 *
 * The controller is the parent process. It forks one or more worker
 * processes, each running T event-loop threads over its slice of the
 * connections, and steers them through phases with one word in shared memory.
 * Every thread counts into its own `tstats` block in that shared memory, so
 * the controller sums them without locks; a worker writes what its final
 * check found into its `wresult` block before it exits.
 */
#ifndef PARLEY_BENCH_H
#define PARLEY_BENCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "hist.h"

enum { BENCH_MAX_PORTS = 16 };

typedef enum { SC_DIRECT, SC_GROUP, SC_IDLE, SC_LOGIN, SC_REGFLOOD } scenario;

/* The client_msg_id of each send (--client-ids): none; the terminal
 * client's (milliseconds since 1970 above 22 random bits drawn per
 * connection, always above the last); a random start per connection, then
 * counting; or one drawn at random for each message. */
typedef enum { IDS_NONE, IDS_TIME, IDS_COUNT, IDS_RANDOM } client_ids;

/* The phases, in order. A scenario skips the ones it has no use for. */
typedef enum {
    PH_INIT,
    PH_CONNECT,  /* TCP connect + Hello */
    PH_REGISTER, /* Register */
    PH_LOGIN,    /* Login */
    PH_GCREATE,  /* group: the first member of each group creates it */
    PH_GJOIN,    /* group: the others join */
    PH_RUN,      /* the measured traffic (warm-up, then the window) */
    PH_DRAIN,    /* no new traffic; wait for replies and stragglers */
    PH_STOP,     /* close everything, check, report */
    PH_N
} phase;

typedef struct {
    scenario sc;
    const char *host;
    int ports[BENCH_MAX_PORTS];
    int nports;
    bool cross;           /* partners / group members on different ports */
    int conns;            /* connections (= users) */
    int inflight;         /* messages in flight per sender */
    int size;             /* message body bytes */
    double rate;          /* offered messages/s in total; 0: as fast as possible */
    double duration;      /* seconds measured */
    double warmup;        /* seconds before the window */
    int threads;          /* event loops per worker process */
    int procs;            /* worker processes (0: decide) */
    int group_size;       /* members per group */
    int senders;          /* senders per group */
    const char *json;     /* write the result here */
    const char *label;    /* free text for the report */
    pid_t server_pid;     /* idle: whose RSS to measure */
    const char *pwhash;   /* the server's password-hash cost, for the report */
    const char *run_id;   /* users are b<run>_<n> */
    double ping_every;    /* seconds of silence before a Ping */
    double settle;        /* idle: seconds to wait before reading RSS */
    double pause;         /* seconds between the setup and the run */
    double straggle;      /* seconds to wait for late messages at the end */
    double setup_timeout; /* seconds a setup phase may take */
    int setup_window;     /* setup operations in flight (all threads, per process) */
    const char *src_base; /* first source address (127.0.0.1); worker w uses + w */
    int per_proc;         /* idle: connections per worker process at most */
    client_ids ids;       /* direct, group: the client_msg_id of each send */
    int users;            /* login: users registered before the run (>= conns) */
    bool reconnect;       /* login: each login on a new connection */
    bool tls;             /* TLS to the server (no verification) */
    bool mqtt;            /* speak MQTT 3.1.1 at QoS 1 to a broker (mqtt.h) */
    bool ws;              /* WebSocket: the ports are parleyd's --ws-port */
    int devices;          /* direct, group: sessions per user (the others only receive) */
    bool devices_senders; /* ... only the users who send have the others */
    /* regflood: the last flood_conns of --conns flood the server with
     * Register from flood_addrs addresses from flood_src on; the others
     * are the uninvolved pairs. */
    int flood_conns;
    int flood_addrs;
    const char *flood_src;
    int flood_inflight;  /* Register requests outstanding per flooder */
    double flood_warmup; /* seconds of flood before its window */
} bopts;

/* Counters of one thread. One writer (that thread); anyone reads. */
typedef struct {
    _Atomic uint64_t done[PH_N];   /* connections through each phase */
    _Atomic uint64_t sent;         /* messages (or logins) sent */
    _Atomic uint64_t answered;     /* SendOk (or LoginOk) received */
    _Atomic uint64_t errors;       /* error replies during the run */
    _Atomic uint64_t expected;     /* deliveries due: answered * recipients */
    _Atomic uint64_t unique;       /* deliveries, first copy */
    _Atomic uint64_t dups;         /* deliveries, repeated copies (same msgid) */
    _Atomic uint64_t mismatch;     /* a second copy under a different msgid */
    _Atomic uint64_t ooo;          /* out of order within a conversation */
    _Atomic uint64_t bogus;        /* a push the bench cannot have caused */
    _Atomic uint64_t sent_win;     /* sent inside the window */
    _Atomic uint64_t recv_win;     /* first copies received inside the window */
    _Atomic uint64_t answered_win; /* answers (logins) inside the window */
    _Atomic uint64_t pings;
    _Atomic uint64_t first_dup;  /* when the first duplicate came (bench clock) */
    _Atomic uint64_t reconnects; /* login --reconnect: connections opened in the run */
    /* regflood: the second window (during the flood) and the flood itself */
    _Atomic uint64_t recv_win2;
    _Atomic uint64_t flood_sent, flood_ok, flood_busy, flood_err; /* Register sent, answered */
    _Atomic uint64_t flood_ok_win, flood_busy_win; /* ... answered in the second window */
    _Atomic uint64_t flood_connects, flood_closed; /* connections opened, lost */
    /* --devices: a user's other sessions. Own copies (of the user's own
     * sends) and their copies of what the user received, counted apart so
     * that the figures above stay those of the first session. */
    _Atomic uint64_t own_expected, own_unique, own_dups, own_win;
    _Atomic uint64_t dev_expected, dev_unique, dev_win;
    hist lat;     /* latency of what was received in the window, ns */
    hist lat2;    /* regflood: ... in the second window */
    hist lat_own; /* --devices: latency of own copies received in the window */
} tstats;

/* What a worker's final check found. */
typedef struct {
    _Atomic int finished;
    _Atomic uint64_t lost;              /* acknowledged by the server, never delivered */
    _Atomic uint64_t unanswered;        /* sent, no reply by the end */
    _Atomic uint64_t refused;           /* sends answered with an error */
    _Atomic uint64_t unacked_delivered; /* delivered though never acknowledged */
    _Atomic uint64_t lost_own;          /* ... of lost: own copies to the other sessions */
    _Atomic uint64_t lost_dev;          /* ... received messages to the other sessions */
    char example[256];                  /* one lost message, for the report */
} wresult;

typedef struct {
    _Atomic int phase;
    _Atomic uint64_t run_start; /* ns on the bench clock: the run phase began */
    _Atomic uint64_t win_start, win_end;
    /* regflood: the flood starts at flood_start (= win_end) and its window
     * is [win2_start, win2_end); 0 in the other scenarios. */
    _Atomic uint64_t flood_start, win2_start, win2_end;
    _Atomic int failed;
    char why[512]; /* the first fatal error */
    _Atomic int erred;
    char first_error[256]; /* the first error reply to a send */
    _Atomic int disordered;
    char first_ooo[320]; /* the first message out of order */
    _Atomic int flood_erred;
    char flood_error[256]; /* the first error reply to a flooder but BUSY */
    int nprocs, nthreads;
    /* then nprocs * nthreads tstats, then nprocs wresult */
} shared;

tstats *shared_tstats(shared *sh, int proc, int thread);
wresult *shared_wresult(shared *sh, int proc);
size_t shared_size(int nprocs, int nthreads);

/* The bench clock: CLOCK_MONOTONIC in ns, minus the start of the bench
 * (common to every worker, since they fork after it is read). */
uint64_t bench_now(void);
void bench_clock_start(void);

/* Records the first fatal error (any process) and marks the run failed. */
void bench_fail(shared *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Records the first error reply to a send (not fatal: counted, reported). */
void bench_note_error(shared *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Records the first error reply to a flooder other than BUSY. */
void bench_note_flood_error(shared *sh, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Runs worker `w` of `nw` (connections [lo, hi)) until the phase is
 * PH_STOP, then checks what arrived and exits the process. */
void engine_worker(const bopts *o, shared *sh, int w, int nw, int lo, int hi)
    __attribute__((noreturn));

/* Phases a scenario goes through, in order, ending with PH_STOP. */
int scenario_phases(const bopts *o, phase out[PH_N]);
/* parley-bench file ... (filebench.c): returns the exit status. */
int filebench_main(int argc, char **argv);
const char *phase_name(phase p);

/* How many deliveries one message makes: 1 (direct), group_size - 1. */
int bench_fanout(const bopts *o);
/* Whether users talk in pairs (direct, and regflood's uninvolved pairs). */
bool bench_pairs(const bopts *o);
/* Whether connection i is one of regflood's flooders. */
bool bench_is_flooder(const bopts *o, int i);
/* Whether connection i sends in the run. */
bool bench_is_sender(const bopts *o, int i);
/* Sockets the setup phases go through: --conns, times --devices. */
int bench_sockets(const bopts *o);

#endif
