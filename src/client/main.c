/*
 * main: the parley terminal client. Parses the options, connects to parleyd
 * and runs one of two front ends over the same session (sess.h):
 *  - on a terminal, a libedit prompt with line editing and history; lines
 *    that arrive meanwhile are printed above the prompt, and the half-typed
 *    line is drawn again below them;
 *  - otherwise a script reader: one command per line, each sent only after
 *    the reply to the previous one arrived; at the end of input it goes on
 *    printing what arrives for --wait-ms and exits 0. While the link is
 *    being restored it goes on reading: a send is queued (and its reply
 *    awaited), anything else waits for the link.
 * Both are single-threaded loops around poll().
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>

#include "client/cmd.h"
#include "client/out.h"
#include "client/sess.h"
#include "client/trust.h"

enum {
    APP_WAIT_MS_DEFAULT = 500,
    APP_FINISH_MS = 200, /* at exit, how long to try to deliver queued acks */
    APP_READ_CHUNK = 64 * 1024,
};

typedef struct app_opts {
    const char *host;
    char port[8];
    bool json;
    int wait_ms;
    bool reconnect;
    bool tls, insecure;
    const char *ca, *fingerprint;
} app_opts;

typedef struct app {
    app_opts opt;
    out_ctx out;
    sess sess;
    trust *trust; /* with --tls */
    bool quit;
    bool quit_warned; /* a quit was refused once: sends were unconfirmed */

    /* script mode: bytes read from stdin, lines not yet run are in[off..len) */
    char *in;
    size_t in_off, in_len, in_cap;
    bool in_eof;

    /* terminal mode */
    bool rl_active;  /* the libedit callback handler is installed */
    bool in_handler; /* inside the line callback: the prompt is not shown */
    char prompt[64];
} app;

/* libedit's line callback takes no context argument. */
static app *app_tty;

static void app_usage(FILE *fp)
{
    fputs("usage: parley [--host HOST] [--port PORT] [--tls [--ca FILE | --fingerprint SHA256]]\n"
          "              [--json] [--wait-ms N] [--no-reconnect]\n"
          "       parley --help\n"
          "\n"
          "The parley chat client. On a terminal it shows a prompt; otherwise it runs\n"
          "one command per line from standard input. Type 'help' for the commands.\n"
          "\n"
          "  --host HOST      parleyd's address (default 127.0.0.1)\n"
          "  --port PORT      parleyd's port (default 7070)\n"
          "  --tls            connect with TLS; the server's certificate must verify with\n"
          "                   the system's CAs, or is trusted on first use and must stay\n"
          "                   the same (remembered in ~/.parley/known_servers)\n"
          "  --ca FILE        with TLS, trust only the CA certificates in FILE\n"
          "  --fingerprint FP with TLS, trust only the certificate whose SHA-256 is FP\n"
          "                   (as parleyd logs it)\n"
          "  --insecure       with TLS, trust any certificate (tests only)\n"
          "  --json           print one JSON object per line\n"
          "  --wait-ms N      at the end of input, keep printing what arrives for N ms\n"
          "                   before exiting (default 500)\n"
          "  --no-reconnect   exit with status 1 when the connection drops\n"
          "  --help           show this help and exit\n",
          fp);
}

/* Parses a decimal integer in [lo, hi]. */
static bool app_parse_int(const char *s, long lo, long hi, long *val)
{
    if (!*s || !isdigit((unsigned char)*s))
        return false;
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *val = v;
    return true;
}

/* Returns -1 to go on, else the exit status. */
static int app_parse_opts(app_opts *o, int argc, char **argv)
{
    enum {
        OPT_HOST = 256,
        OPT_PORT,
        OPT_JSON,
        OPT_WAIT,
        OPT_NORECONNECT,
        OPT_HELP,
        OPT_TLS,
        OPT_CA,
        OPT_FINGERPRINT,
        OPT_INSECURE,
    };
    static const struct option longopts[] = {
        {"host", required_argument, NULL, OPT_HOST},
        {"port", required_argument, NULL, OPT_PORT},
        {"json", no_argument, NULL, OPT_JSON},
        {"wait-ms", required_argument, NULL, OPT_WAIT},
        {"no-reconnect", no_argument, NULL, OPT_NORECONNECT},
        {"tls", no_argument, NULL, OPT_TLS},
        {"ca", required_argument, NULL, OPT_CA},
        {"fingerprint", required_argument, NULL, OPT_FINGERPRINT},
        {"insecure", no_argument, NULL, OPT_INSECURE},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    long v;

    o->host = "127.0.0.1";
    snprintf(o->port, sizeof(o->port), "7070");
    o->json = false;
    o->wait_ms = APP_WAIT_MS_DEFAULT;
    o->reconnect = true;
    o->tls = o->insecure = false;
    o->ca = o->fingerprint = NULL;

    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_HOST:
            if (!*optarg) {
                fprintf(stderr, "parley: --host needs a host name or address\n");
                goto bad;
            }
            o->host = optarg;
            break;
        case OPT_PORT:
            if (!app_parse_int(optarg, 1, 65535, &v)) {
                fprintf(stderr, "parley: bad port '%s': expected 1 to 65535\n", optarg);
                goto bad;
            }
            snprintf(o->port, sizeof(o->port), "%ld", v);
            break;
        case OPT_JSON:
            o->json = true;
            break;
        case OPT_WAIT:
            if (!app_parse_int(optarg, 0, INT_MAX, &v)) {
                fprintf(stderr, "parley: bad --wait-ms '%s': expected milliseconds\n", optarg);
                goto bad;
            }
            o->wait_ms = (int)v;
            break;
        case OPT_NORECONNECT:
            o->reconnect = false;
            break;
        case OPT_TLS:
            o->tls = true;
            break;
        case OPT_CA:
            o->ca = optarg;
            break;
        case OPT_FINGERPRINT:
            o->fingerprint = optarg;
            break;
        case OPT_INSECURE:
            o->insecure = true;
            break;
        case 'h':
        case OPT_HELP:
            app_usage(stdout);
            return 0;
        default:
            goto bad; /* getopt said what was wrong */
        }
    }
    if (optind < argc) {
        fprintf(stderr, "parley: unexpected argument '%s'\n", argv[optind]);
        goto bad;
    }
    if ((o->ca != NULL) + (o->fingerprint != NULL) + o->insecure > 1) {
        fprintf(stderr, "parley: --ca, --fingerprint and --insecure exclude each other\n");
        goto bad;
    }
    /* Each of them only makes sense with TLS. */
    if (o->ca || o->fingerprint || o->insecure)
        o->tls = true;
    return -1;

bad:
    app_usage(stderr);
    return 2;
}

/* Quits, unless sends are unconfirmed and the user has not been told. */
static void app_quit(app *a)
{
    size_t n = sess_unconfirmed(&a->sess);
    if (n && !a->quit_warned) {
        out_unconfirmed(&a->out, n);
        a->quit_warned = true;
        return;
    }
    a->quit = true;
}

/* Runs one line: prints local replies, sends requests. */
static void app_command(app *a, const char *line)
{
    cmd c;
    if (cmd_parse(line, &c) < 0) {
        fprintf(stderr, "parley: out of memory\n");
        goto out;
    }
    if (c.kind == CMD_NONE)
        goto out;
    if (c.error) {
        out_reply_fail(&a->out, cmd_reply_name(&c), "USAGE", c.error);
        goto out;
    }
    if (c.kind != CMD_QUIT)
        a->quit_warned = false;
    switch (c.kind) {
    case CMD_HELP:
        out_help(&a->out);
        break;
    case CMD_QUIT:
        app_quit(a);
        break;
    default:
        (void)sess_submit(&a->sess, &c);
        break;
    }
out:
    cmd_free(&c);
}

/* A poll() timeout for an absolute sess_clock_ms() time. */
static int app_timeout(int64_t when)
{
    if (when == INT64_MAX)
        return -1;
    int64_t left = when - sess_clock_ms();
    if (left < 0)
        return 0;
    if (left > 60000)
        return 60000;
    return (int)left;
}

/* ---- script mode ---- */

/* Reads what stdin has. Sets in_eof at its end. */
static void app_read_stdin(app *a)
{
    if (a->in_off > 0) {
        memmove(a->in, a->in + a->in_off, a->in_len - a->in_off);
        a->in_len -= a->in_off;
        a->in_off = 0;
    }
    if (a->in_cap - a->in_len < APP_READ_CHUNK + 2) {
        size_t cap = a->in_cap ? a->in_cap * 2 : APP_READ_CHUNK * 2;
        char *p = realloc(a->in, cap);
        if (!p) {
            fprintf(stderr, "parley: out of memory reading input\n");
            a->in_eof = true;
            return;
        }
        a->in = p;
        a->in_cap = cap;
    }
    ssize_t n = read(STDIN_FILENO, a->in + a->in_len, APP_READ_CHUNK);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        a->in_eof = true;
        /* A last line without its newline still counts. */
        if (a->in_len > a->in_off && a->in[a->in_len - 1] != '\n')
            a->in[a->in_len++] = '\n';
        return;
    }
    a->in_len += (size_t)n;
}

/* The next whole line, NUL-terminated in place without its line ending, or
 * NULL. */
static char *app_next_line(app *a)
{
    if (a->in_len == a->in_off)
        return NULL;
    char *start = a->in + a->in_off;
    char *nl = memchr(start, '\n', a->in_len - a->in_off);
    if (!nl)
        return NULL;
    a->in_off = (size_t)(nl - a->in) + 1;
    *nl = '\0';
    if (nl > start && nl[-1] == '\r')
        nl[-1] = '\0';
    return start;
}

static bool app_has_line(const app *a)
{
    return a->in_len > a->in_off && memchr(a->in + a->in_off, '\n', a->in_len - a->in_off);
}

/* True if the next whole line is a send that the session would queue now,
 * the link being down. */
static bool app_next_queues(const app *a)
{
    if (!sess_can_queue(&a->sess) || !app_has_line(a))
        return false;
    const char *start = a->in + a->in_off;
    const char *nl = memchr(start, '\n', a->in_len - a->in_off);
    size_t n = (size_t)(nl - start);
    if (n > 0 && start[n - 1] == '\r')
        n--;
    char *line = strndup(start, n);
    if (!line)
        return false;
    cmd c;
    bool send =
        cmd_parse(line, &c) == 0 && !c.error && (c.kind == CMD_CHAT || c.kind == CMD_GROUPCHAT);
    cmd_free(&c);
    free(line);
    return send;
}

static int app_run_script(app *a)
{
    int64_t eof_deadline = -1;

    for (;;) {
        if (a->sess.done)
            return a->sess.exit_code;
        if (a->out.failed)
            return 1;
        /* Run lines while nothing is in flight and the link is up (or
         * the line is a send, which waits in the queue). */
        char *line;
        while (!a->quit && !a->sess.done && sess_busy(&a->sess) == 0 &&
               (sess_up(&a->sess) || app_next_queues(a)) && (line = app_next_line(a)) != NULL)
            app_command(a, line);
        if (a->quit)
            return 0;
        if (a->sess.done)
            continue;

        bool have_line = app_has_line(a);
        bool idle = sess_busy(&a->sess) == 0;
        if (a->in_eof && !have_line && idle) {
            if (eof_deadline < 0)
                eof_deadline = sess_clock_ms() + a->opt.wait_ms;
            if (sess_clock_ms() >= eof_deadline)
                return 0;
        }

        struct pollfd p[2];
        p[0].fd =
            (!a->in_eof && !have_line && idle && (sess_up(&a->sess) || sess_can_queue(&a->sess)))
                ? STDIN_FILENO
                : -1;
        p[0].events = POLLIN;
        p[0].revents = 0;
        sess_poll_prepare(&a->sess, &p[1]);
        int64_t when = sess_next_timer(&a->sess);
        if (eof_deadline >= 0 && eof_deadline < when)
            when = eof_deadline;
        int n = poll(p, 2, app_timeout(when));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("parley: poll");
            return 1;
        }
        if (p[0].fd >= 0 && p[0].revents)
            app_read_stdin(a);
        if (p[1].fd >= 0)
            sess_poll_done(&a->sess, p[1].revents);
        sess_tick(&a->sess);
    }
}

/* ---- terminal mode ---- */

/* Columns that s takes, counting each UTF-8 sequence as one. */
static size_t app_width(const char *s, size_t n)
{
    size_t w = 0;
    for (size_t i = 0; i < n && s[i]; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80)
            w++;
    return w;
}

/* Erases the prompt and the line being edited, which may span several
 * screen rows, leaving the cursor at the start of the prompt's row. */
static void app_tty_erase(const app *a)
{
    int rows = 0, cols = 0;
    rl_get_screen_size(&rows, &cols);
    size_t point = rl_line_buffer && rl_point > 0 ? app_width(rl_line_buffer, (size_t)rl_point) : 0;
    size_t col = app_width(a->prompt, sizeof(a->prompt)) + point;
    size_t up = cols > 0 ? col / (size_t)cols : 0;
    if (up > 0)
        printf("\033[%zuA", up);
    fputs("\r\033[J", stdout);
}

/* Prints text above the prompt: erase the prompt and the line being edited,
 * print, and let libedit draw them again below. */
static void app_tty_sink(void *ctx, const char *text, size_t len)
{
    app *a = ctx;
    bool redraw = a->rl_active && !a->in_handler;
    if (redraw)
        app_tty_erase(a);
    if (fwrite(text, 1, len, stdout) != len || fflush(stdout) != 0)
        a->out.failed = true;
    if (redraw)
        rl_forced_update_display();
}

static void app_set_prompt(app *a)
{
    const char *name =
        a->sess.logged_in && a->sess.name && a->sess.name[0] ? a->sess.name : "parley";
    size_t max = sizeof(a->prompt) - 3, n = 0;
    for (; name[n] && n < max; n++) {
        unsigned char ch = (unsigned char)name[n];
        a->prompt[n] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    /* Cut at a character boundary: never before a UTF-8 continuation byte. */
    while (n > 0 && ((unsigned char)name[n] & 0xc0) == 0x80)
        n--;
    a->prompt[n++] = '>';
    a->prompt[n++] = ' ';
    a->prompt[n] = '\0';
}

static void app_identity_changed(void *ctx)
{
    app *a = ctx;
    if (!a->rl_active)
        return;
    if (!a->in_handler)
        app_tty_erase(a); /* with the old prompt's width */
    app_set_prompt(a);
    rl_set_prompt(a->prompt);
    if (!a->in_handler) {
        fflush(stdout);
        rl_forced_update_display();
    }
}

static void app_tty_line(char *line)
{
    app *a = app_tty;
    if (!line) {
        /* Ctrl-D */
        fputs("\n", stdout);
        fflush(stdout);
        app_quit(a);
        if (!a->quit)
            rl_callback_handler_install(a->prompt, app_tty_line);
        return;
    }
    a->in_handler = true;
    const char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p)
        add_history(line);
    app_command(a, line);
    a->in_handler = false;
    free(line);
    /* libedit leaves its editor in line-buffered mode after a callback, so
     * the next read would block until Enter; installing the handler again
     * puts it back to a character at a time, empties the line and draws a
     * fresh prompt. */
    if (!a->quit)
        rl_callback_handler_install(a->prompt, app_tty_line);
}

static int app_run_tty(app *a)
{
    int rc = 0;

    setlocale(LC_CTYPE, "");
    app_tty = a;
    out_set_sink(&a->out, app_tty_sink, a);
    sess_set_identity_cb(&a->sess, app_identity_changed, a);
    rl_readline_name = "parley";
    if (!a->opt.json) {
        printf("connected to %s:%s%s; type help for the commands, quit or Ctrl-D to leave\n",
               a->opt.host, a->opt.port, a->opt.tls ? " with TLS" : "");
        fflush(stdout);
    }
    app_set_prompt(a);
    rl_callback_handler_install(a->prompt, app_tty_line);
    a->rl_active = true;

    for (;;) {
        if (a->quit)
            break;
        if (a->sess.done) {
            rc = a->sess.exit_code;
            break;
        }
        if (a->out.failed) {
            rc = 1;
            break;
        }
        struct pollfd p[2];
        p[0].fd = STDIN_FILENO;
        p[0].events = POLLIN;
        p[0].revents = 0;
        sess_poll_prepare(&a->sess, &p[1]);
        int n = poll(p, 2, app_timeout(sess_next_timer(&a->sess)));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("parley: poll");
            rc = 1;
            break;
        }
        if (p[0].revents & POLLIN)
            rl_callback_read_char();
        else if (p[0].revents & (POLLHUP | POLLERR | POLLNVAL))
            a->quit = true; /* the terminal went away */
        if (p[1].fd >= 0)
            sess_poll_done(&a->sess, p[1].revents);
        sess_tick(&a->sess);
    }

    a->rl_active = false;
    rl_callback_handler_remove();
    out_set_sink(&a->out, NULL, NULL);
    return rc;
}

int main(int argc, char **argv)
{
    static app a;
    int rc = app_parse_opts(&a.opt, argc, argv);
    if (rc >= 0)
        return rc;

    signal(SIGPIPE, SIG_IGN);
    /* Every line must reach a reader on a pipe at once. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    out_init(&a.out, a.opt.json);
    sess_init(&a.sess, a.opt.host, a.opt.port, a.opt.reconnect, &a.out);
    if (a.opt.tls) {
        char err[512];
        a.trust = trust_new(a.opt.ca, a.opt.fingerprint, a.opt.insecure, err, sizeof(err));
        if (!a.trust) {
            fprintf(stderr, "parley: %s\n", err);
            rc = 2;
            goto out;
        }
        conn_set_tls(&a.sess.conn, a.trust);
    }
    if (sess_start(&a.sess) < 0) {
        rc = 1;
        goto out;
    }
    if (isatty(STDIN_FILENO))
        rc = app_run_tty(&a);
    else
        rc = app_run_script(&a);
    if (rc == 0)
        sess_finish(&a.sess, APP_FINISH_MS);

out:
    sess_free(&a.sess);
    trust_free(a.trust);
    out_free(&a.out);
    free(a.in);
    return rc;
}
