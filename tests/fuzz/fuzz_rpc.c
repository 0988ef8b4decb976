/*
 * fuzz_rpc: what a service node does with the bytes a peer sends to its RPC
 * port (rpc/server.c): cut them into frames, decode each RpcRequest and the
 * Call it carries (rpc_server_decode), and run the call on the real service
 * runtime over a temporary SQLite database. Nothing authenticates that
 * port's peers, so every field of a Call (the caller's user id included)
 * is the attacker's.
 *
 * Input: the byte stream of one RPC connection. Every call it makes has
 * finished before the next input starts. The database lives for the whole
 * run; fz_setup makes the users, friends, group and messages the seeds
 * count on. A result must pack into a frame
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
static int fz_verbose;      /* FUZZ_RPC_VERBOSE=1: print each result */

/* A push is framed bytes for clients: exactly one whole ServerFrame. */
static void fz_deliver(void *arg, const bus_push *pushes, size_t n)
{
    (void)arg;
    for (size_t k = 0; k < n; k++) {
        const bus_push *p = &pushes[k];
        const uint8_t *payload, *data = p->frame->data;
        size_t plen, used, len = p->frame->len;
        if (!p->n || !p->users)
            fz_fail("a push for nobody");
        /* An own copy: the sending session first, then the frame, for one
         * user (bus.h). */
        if (p->msgid != BUS_KICK && p->msgid != BUS_DRAIN && (p->msgid & BUS_OWN)) {
            if (p->n != 1 || len < BUS_OWN_PREFIX)
                fz_fail("an own copy for several users or without its prefix");
            data += BUS_OWN_PREFIX;
            len -= BUS_OWN_PREFIX;
        }
        if (frame_next(data, len, SIZE_MAX, &payload, &plen, &used) != FRAME_OK || used != len)
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
        if (fz_verbose && back->frame)
            fprintf(stderr, "  <- body %d%s%s, %zu messages\n", (int)back->frame->body_case,
                    back->frame->error ? " error: " : "",
                    back->frame->error ? back->frame->error->text : "", back->n_messages);
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

static void fz_run(const uint8_t *data, size_t size);

/* Sends one call as a gateway would: user (0: none) calling method of
 * service with the client frame f. */
static void fz_call(const char *service, const char *method, uint64_t user, Parley__ClientFrame *f)
{
    Parley__Caller caller = PARLEY__CALLER__INIT;
    caller.user_id = user;
    caller.session_id = 1;
    caller.gateway_id = 1;
    caller.addr = "127.0.0.1";
    Parley__Call call = PARLEY__CALL__INIT;
    call.caller = &caller;
    call.frame = f;
    uint8_t payload[1024], buf[2048];
    size_t n = parley__call__get_packed_size(&call);
    if (n > sizeof(payload))
        fz_fail("a set-up call does not fit");
    parley__call__pack(&call, payload);
    Parley__RpcRequest req = PARLEY__RPC_REQUEST__INIT;
    req.call_id = 1;
    req.service = (char *)service;
    req.method = (char *)method;
    req.payload.data = payload;
    req.payload.len = n;
    n = parley__rpc_request__get_packed_size(&req);
    if (n > sizeof(buf) - FRAME_HDR)
        fz_fail("a set-up call does not fit");
    frame_put_header(buf, (uint32_t)n);
    parley__rpc_request__pack(&req, buf + FRAME_HDR);
    fz_run(buf, FRAME_HDR + n);
}

/* What the seeds count on: users 1-4 (alice, bob, carol, dave, password
 * secret123), alice and bob friends, group 1 of alice's with bob in it, and
 * a message in each conversation. Mutated inputs that register these names
 * or make these objects first cannot change them then. */
static void fz_setup(void)
{
    static const char *const names[] = {"alice", "bob", "carol", "dave"};
    const char *user = "parley.UserService", *social = "parley.SocialService",
               *message = "parley.MessageService";
    Parley__ClientFrame f = PARLEY__CLIENT_FRAME__INIT;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        Parley__Register reg = PARLEY__REGISTER__INIT;
        reg.name = (char *)names[i];
        reg.password = "secret123";
        f.body_case = PARLEY__CLIENT_FRAME__BODY_REG;
        f.reg = &reg;
        fz_call(user, "CreateAccount", 0, &f);
    }
    Parley__FriendAdd fa = PARLEY__FRIEND_ADD__INIT;
    fa.user_id = 2;
    f.body_case = PARLEY__CLIENT_FRAME__BODY_FRIEND_ADD;
    f.friend_add = &fa;
    fz_call(social, "FriendAdd", 1, &f);
    Parley__GroupCreate gc = PARLEY__GROUP_CREATE__INIT;
    gc.name = "lobby";
    gc.desc = "";
    f.body_case = PARLEY__CLIENT_FRAME__BODY_GROUP_CREATE;
    f.group_create = &gc;
    fz_call(social, "GroupCreate", 1, &f);
    Parley__GroupJoin gj = PARLEY__GROUP_JOIN__INIT;
    gj.group_id = 1;
    f.body_case = PARLEY__CLIENT_FRAME__BODY_GROUP_JOIN;
    f.group_join = &gj;
    fz_call(social, "GroupJoin", 2, &f);
    Parley__SendDirect sd = PARLEY__SEND_DIRECT__INIT;
    sd.to = 2;
    sd.body = "hello bob";
    f.body_case = PARLEY__CLIENT_FRAME__BODY_SEND_DIRECT;
    f.send_direct = &sd;
    fz_call(message, "SendDirect", 1, &f);
    Parley__SendGroup sg = PARLEY__SEND_GROUP__INIT;
    sg.group_id = 1;
    sg.body = "hello lobby";
    f.body_case = PARLEY__CLIENT_FRAME__BODY_SEND_GROUP;
    f.send_group = &sg;
    fz_call(message, "SendGroup", 2, &f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[512];
    fz_verbose = getenv("FUZZ_RPC_VERBOSE") != NULL;
    log_set_level(fz_verbose ? LOG_INFO : LOG_ERROR);
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
    fz_setup();
    return 0;
}

/* Serves one connection's byte stream and waits for every call it made. */
static void fz_run(const uint8_t *data, size_t size)
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
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_run(data, size);
    return 0;
}
