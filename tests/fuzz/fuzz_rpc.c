/*
 * fuzz_rpc: what a service node does with the bytes a peer sends to its RPC
 * port (rpc/server.c): cut them into frames, decode each RpcRequest and the
 * Call it carries (rpc_server_decode), and run the call on the real service
 * runtime over a temporary SQLite database. Nothing authenticates that
 * port's peers, so every field of a Call (the caller's user id included)
 * is the attacker's.
 *
 * Input: the byte stream of one RPC connection. Every call it makes has
 * finished before the next input starts. A result must pack into a frame
 * that unpacks again, and every push a method publishes must be one whole
 * ServerFrame, else the target aborts.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus.h"
#include "common/frame.h"
#include "common/log.h"
#include "common/pwhash.h"
#include "fz_common.h"
#include "rpc/server_decode.h"
#include "services/svc.h"

/* rpc/server.c's RPC_MAX_REQUEST: the largest frame a node reads. */
enum { FZ_RPC_MAX_REQUEST = 4 << 20 };

static const svc_def *const fz_defs[] = {&svc_user, &svc_social, &svc_message};
static char fz_db[4096];
static svc_config fz_cfg;
static bus *fz_bus;
static svc_runtime *fz_rt;
static pthread_mutex_t fz_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fz_cv = PTHREAD_COND_INITIALIZER;
static unsigned fz_pending; /* calls submitted, not yet done */

/* A push is framed bytes for clients: exactly one whole ServerFrame. */
static void fz_deliver(void *arg, const bus_push *pushes, size_t n)
{
    (void)arg;
    for (size_t k = 0; k < n; k++) {
        const bus_push *p = &pushes[k];
        const uint8_t *payload;
        size_t plen, used;
        if (!p->n || !p->users)
            fz_fail("a push for nobody");
        if (frame_next(p->frame->data, p->frame->len, SIZE_MAX, &payload, &plen, &used) !=
                FRAME_OK ||
            used != p->frame->len)
            fz_fail("a push that is not one whole frame");
        Parley__ServerFrame *f = parley__server_frame__unpack(NULL, plen, payload);
        if (!f)
            fz_fail("a push that is not a ServerFrame");
        parley__server_frame__free_unpacked(f, NULL);
    }
}

/* rpc_done's work: the result goes back as a packed RpcResponse payload. */
static void fz_done(void *arg, arena *a, Parley__Result *res, svc_outcome outcome)
{
    (void)arg;
    if (outcome == SVC_RAN) {
        size_t n = parley__result__get_packed_size(res);
        uint8_t *buf = malloc(n ? n : 1);
        if (!buf)
            abort();
        if (parley__result__pack(res, buf) != n)
            fz_fail("a result packs to another size than it announced");
        Parley__Result *back = parley__result__unpack(NULL, n, buf);
        if (!back)
            fz_fail("a packed result does not unpack");
        parley__result__free_unpacked(back, NULL);
        free(buf);
    }
    arena_free(a);
    pthread_mutex_lock(&fz_mu);
    if (--fz_pending == 0)
        pthread_cond_broadcast(&fz_cv);
    pthread_mutex_unlock(&fz_mu);
}

static void fz_teardown(void)
{
    svc_runtime_free(fz_rt); /* runs what is queued first */
    fz_rt = NULL;
    bus_free(fz_bus);
    fz_bus = NULL;
    fz_data_dir_remove();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[512];
    log_set_level(LOG_ERROR);
    if (pwhash_init() < 0)
        fz_fail("pwhash_init");
    snprintf(fz_db, sizeof(fz_db), "%s/parley.db", fz_data_dir());
    fz_svc_config(&fz_cfg, fz_db);
    fz_bus = bus_local_new();
    if (!fz_bus)
        fz_fail("bus_local_new");
    bus_handler h = {.deliver = fz_deliver};
    bus_subscribe(fz_bus, 1, &h);
    fz_rt = svc_runtime_new(&fz_cfg, fz_bus, err, sizeof(err));
    if (!fz_rt) {
        fprintf(stderr, "fuzz_rpc: %s\n", err);
        abort();
    }
    /* Registered after fz_data_dir's: runs first, while the files exist. */
    atexit(fz_teardown);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    for (;;) {
        const uint8_t *payload;
        size_t plen, used;
        frame_status st =
            frame_next(data + off, size - off, FZ_RPC_MAX_REQUEST, &payload, &plen, &used);
        if (st != FRAME_OK)
            break; /* a partial frame waits for more; a huge one closes */
        off += used;
        arena *a = arena_new();
        if (!a)
            abort();
        rpc_decoded d;
        rpc_server_decode(fz_defs, 3, a, payload, plen, &d);
        if (d.status != PARLEY__RPC_STATUS__RPC_OK) {
            if (!d.error)
                fz_fail("a refused request without an error text");
            arena_free(a);
            continue;
        }
        if (!d.def || !d.call || !d.req || d.method >= d.def->desc->n_methods)
            fz_fail("an accepted request without a method to run");
        int64_t deadline = d.req->timeout_ms ? svc_clock_ms() + d.req->timeout_ms : 0;
        pthread_mutex_lock(&fz_mu);
        fz_pending++;
        pthread_mutex_unlock(&fz_mu);
        svc_submit(fz_rt, d.def, d.method, a, d.call, deadline, NULL, NULL, fz_done, NULL);
    }
    pthread_mutex_lock(&fz_mu);
    while (fz_pending)
        pthread_cond_wait(&fz_cv, &fz_mu);
    pthread_mutex_unlock(&fz_mu);
    return 0;
}
