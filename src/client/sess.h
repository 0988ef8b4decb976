/*
 * sess: the client's side of the protocol on top of one conn. It sends
 * Hello (and Resume after a reconnect), turns commands into requests,
 * matches replies to requests by id, prints replies and pushes through out,
 * drops duplicate pushes, acknowledges what it printed, pings when the link
 * is quiet, and reconnects with backoff when the link drops.
 *
 * sendfile and groupsendfile upload the file in chunks (several in flight;
 * after a reconnect the upload resumes where the server stands), then send
 * it as a message like chat; getfile downloads a message's file in chunks
 * and checks its SHA-256 before it writes PATH.
 *
 * Sends (chat, groupchat) carry a client_msg_id and are kept until the
 * server confirms them with send_ok: after a reconnect and resume, a reply
 * timeout or a transient error (BUSY, UNAVAILABLE, INTERNAL) they go again
 * with the same id, which the server stores once (after CONFLICT, an id
 * taken by another message, with a new one). A send typed while the link is
 * down is queued and goes after the resume.
 *
 * It is driven from outside: the caller polls the descriptor described by
 * sess_poll_prepare(), hands the result to sess_poll_done(), and calls
 * sess_tick() when sess_next_timer() is due. Nothing here blocks for long,
 * except the connect and handshake of one (re)connection attempt.
 */
#ifndef PARLEY_CLIENT_SESS_H
#define PARLEY_CLIENT_SESS_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/cmd.h"
#include "client/conn.h"
#include "client/out.h"
#include "client/seen.h"

enum {
    SESS_CONNECT_TIMEOUT_MS = 3000,   /* per address */
    SESS_HANDSHAKE_TIMEOUT_MS = 5000, /* for hello_ok, and for the reply to Resume */
    SESS_REQUEST_TIMEOUT_MS = 30000,  /* a request with no reply by then fails */
    SESS_PING_AFTER_MS = 20000,       /* ping after this long without sending */
    SESS_DEAD_AFTER_MS = 60000,       /* drop the link after this long without a byte */
    SESS_BACKOFF_START_MS = 100,
    SESS_BACKOFF_MAX_MS = 3000,
    SESS_GIVE_UP_MS = 60000, /* by default, stop reconnecting after this long */
    /* A send is given up after this many timeouts or UNAVAILABLE/INTERNAL
     * answers, or this many BUSY answers (each names when to try again). */
    SESS_SEND_TRIES = 5,
    SESS_SEND_BUSY_TRIES = 100,
    SESS_RESEND_BASE_MS = 250, /* after a transient error; doubles each time */
};

/* The file a send carries (sendfile, groupsendfile). */
typedef struct sess_file {
    uint8_t sha256[32];
    uint64_t size;
    char *name, *type; /* owned */
} sess_file;

/* A file upload or download in progress (one at a time; sess.c). */
typedef struct sess_xfer sess_xfer;

enum {
    SESS_XFER_WINDOW = 8,               /* chunks in flight, up or down */
    SESS_FILE_MAX = 1024 * 1024 * 1024, /* the largest file read into memory */
};

typedef struct sess_pending {
    uint64_t id; /* request id; a send keeps it over all its attempts */
    cmd_kind kind;
    uint64_t arg;     /* the command's id argument (a send's user or group) */
    int64_t deadline; /* while on the wire: when the reply is overdue */
    /* Sends only. */
    uint64_t cmid;     /* client_msg_id; 0 for any other request */
    uint64_t sender;   /* who was logged in when it was typed */
    char *body;        /* owned */
    bool on_wire;      /* written on the current connection, reply awaited */
    bool was_sent;     /* written at least once: it may be stored */
    uint8_t tries;     /* timeouts and UNAVAILABLE/INTERNAL answers so far */
    uint8_t busy;      /* BUSY answers so far */
    int64_t resend_at; /* not on the wire: goes once up and this is reached */
    sess_file *file;   /* owned; the file a send carries, NULL if none */
} sess_pending;

/* Per conversation: the highest seq printed and the highest acknowledged.
 * An ack is due when shown > acked; acks never go backwards. */
typedef struct sess_ack {
    uint64_t conv, shown, acked;
} sess_ack;

typedef void (*sess_identity_fn)(void *ctx);

typedef struct sess {
    const char *host, *port; /* not owned */
    bool reconnect;
    out_ctx *out; /* not owned */
    conn conn;
    bool up; /* connected and through the handshake */

    uint64_t next_id;
    uint64_t cmid_salt; /* client_msg_ids: the random low bits of the first */
    uint64_t last_cmid; /* the last one handed out */
    bool logged_in;
    uint64_t me;
    char *name;  /* owned; the logged-in user's name */
    char *token; /* owned; resumes the session after a reconnect */

    sess_pending *pend; /* requests waiting for their reply, oldest first */
    size_t npend, pend_cap;
    uint64_t ping_id;
    int64_t last_tx, last_rx;

    seen seen;      /* msgids of pushed messages already printed */
    sess_ack *acks; /* one entry per conversation seen */
    size_t nacks, acks_cap;
    bool acks_due; /* some entry has shown > acked */

    bool got_bye;
    char bye_reason[160];

    int64_t down_since, next_attempt; /* while reconnecting */
    int backoff_ms;
    int64_t give_up_ms;  /* stop reconnecting after this long down; 0: never */
    int64_t told_at;     /* when "reconnecting" was last printed */
    int64_t told_wait_s; /* and the wait it named */

    sess_xfer *xfer; /* owned; the file transfer in progress, NULL if none */

    bool done; /* the client must exit with exit_code */
    int exit_code;

    sess_identity_fn on_identity; /* called after login, logout, lost session,
                                     and when the link goes down or comes up */
    void *identity_ctx;
} sess;

/* A monotonic clock in milliseconds. */
int64_t sess_clock_ms(void);

void sess_init(sess *s, const char *host, const char *port, bool reconnect, out_ctx *o);
void sess_free(sess *s);
void sess_set_identity_cb(sess *s, sess_identity_fn fn, void *ctx);

/* The first connection. On failure prints why on stderr and returns -1. */
int sess_start(sess *s);
/* Best effort, for up to timeout_ms: writes what is still queued (acks). */
void sess_finish(sess *s, int timeout_ms);

/* Sends the request for c, a valid command that needs the server. When it
 * cannot be sent, prints a failed reply and returns -1. A send (chat,
 * groupchat) while the link is down and being restored is queued (and
 * printed as such) and returns 0. */
int sess_submit(sess *s, const cmd *c);
/* True if a send submitted now would be queued rather than fail: the link
 * is down, the client reconnects, and there is a session to resume. */
bool sess_can_queue(const sess *s);

/* Fills p for poll(); p->fd is -1 while there is no connection. */
void sess_poll_prepare(const sess *s, struct pollfd *p);
void sess_poll_done(sess *s, short revents);
/* When sess_tick() is next due (sess_clock_ms time), or INT64_MAX. */
int64_t sess_next_timer(const sess *s);
/* Timeouts, pings, reconnection attempts. */
void sess_tick(sess *s);

bool sess_up(const sess *s);
/* The number of requests waiting for their reply, queued sends included. */
size_t sess_busy(const sess *s);
/* The number of sends the server has not confirmed yet. */
size_t sess_unconfirmed(const sess *s);

#endif
