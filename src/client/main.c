/*
 * main: the parley terminal client. Parses the options, connects to parleyd
 * and runs one of two front ends over the same session (sess.h):
 *  - on a terminal, a libedit prompt with line editing, completion and a
 *    history kept across runs (without passwords: login:NAME asks for one
 *    with echo off); lines that arrive meanwhile are printed above the
 *    prompt, and the half-typed line is drawn again below them. Signals
 *    only set flags that the loop acts on;
 *  - otherwise a script reader: one command per line, each sent only after
 *    the reply to the previous one arrived; at the end of input it goes on
 *    printing what arrives for --wait-ms and exits 0, or 1 if a command
 *    failed. While the link is
 *    being restored it goes on reading: a send is queued (and its reply
 *    awaited), anything else waits for the link.
 * Both are single-threaded loops around poll().
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <langinfo.h>
#include <limits.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#include <editline/readline.h>

#include "client/cmd.h"
#include "client/histfile.h"
#include "client/out.h"
#include "client/sess.h"
#include "client/trust.h"

#ifndef PARLEY_VERSION
#define PARLEY_VERSION "unknown"
#endif

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
    long reconnect_for; /* seconds; 0: for ever; -1: not given */
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
    enum {
        APP_UI_NONE,     /* nothing of ours on the last row */
        APP_UI_EDIT,     /* the line editor's prompt and line */
        APP_UI_PASSWORD, /* the password prompt, echo off */
    } ui;
    char prompt[80];
    char histpath[4096]; /* "" when there is no history file */
    bool line_done;      /* the editor handed over a line */
    bool searching;      /* a Ctrl-R search may be under way */
    bool last_enter;     /* the last key read was Enter */
    bool draining;       /* reading only what the editor pushed back */
    bool ctrl_c_armed;   /* Ctrl-C on an empty line: a second one quits */
    bool tty_gone;       /* reading the terminal failed */
    sigset_t waitmask;   /* the signal mask to wait with (ours let through) */
    /* The password prompt: the command it completes, what was typed, the
     * terminal's modes to restore. */
    char *pw_cmd;
    char pw_buf[1024];
    size_t pw_len;
    struct termios pw_saved;
    const char *pw_prompt;
    bool pw_confirm;     /* register: the password is typed twice */
    char pw_first[1024]; /* the first time */
    size_t pw_first_len;
} app;

/* libedit's line callback takes no context argument. */
static app *app_tty;

static void app_usage(FILE *fp)
{
    fputs("usage: parley [--host HOST] [--port PORT] [--tls [--ca FILE | --fingerprint SHA256]]\n"
          "              [--json] [--wait-ms N] [--no-reconnect | --reconnect-for SECONDS]\n"
          "       parley --help | --version\n"
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
          "  --reconnect-for SECONDS\n"
          "                   when the connection drops, try to reconnect for this long\n"
          "                   ('forever' or 0: until it works; the default on a terminal;\n"
          "                   otherwise 60)\n"
          "  --version        show the version and exit\n"
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
        OPT_RECONNECT_FOR,
        OPT_VERSION,
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
        {"reconnect-for", required_argument, NULL, OPT_RECONNECT_FOR},
        {"version", no_argument, NULL, OPT_VERSION},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    long v;

    o->host = "127.0.0.1";
    snprintf(o->port, sizeof(o->port), "7070");
    o->json = false;
    o->wait_ms = APP_WAIT_MS_DEFAULT;
    o->reconnect = true;
    o->reconnect_for = -1;
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
        case OPT_RECONNECT_FOR:
            if (strcmp(optarg, "forever") == 0) {
                o->reconnect_for = 0;
            } else if (!app_parse_int(optarg, 0, INT_MAX / 1000, &v)) {
                fprintf(stderr, "parley: bad --reconnect-for '%s': expected seconds or forever\n",
                        optarg);
                goto bad;
            } else {
                o->reconnect_for = v;
            }
            break;
        case OPT_VERSION:
            printf("parley %s\n", PARLEY_VERSION);
            return 0;
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
    if (!o->reconnect && o->reconnect_for >= 0) {
        fprintf(stderr, "parley: --no-reconnect and --reconnect-for exclude each other\n");
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

/* Turns the user or group c names into its id, from the names this client
 * has seen (friends, groups and their members, senders, whois answers).
 * -1 (and said why) if it has seen none or, for a group, two. */
static int app_resolve(app *a, cmd *c)
{
    bool group = c->kind == CMD_GROUPCHAT || c->kind == CMD_QUITGROUP || c->kind == CMD_DELGROUP ||
                 c->kind == CMD_GROUPHISTORY || c->kind == CMD_GROUPSENDFILE;
    char why[200];
    int r = group ? out_find_group(&a->out, c->ref_name, &c->id)
                  : out_find_user(&a->out, c->ref_name, &c->id);
    if (r > 0)
        return 0;
    if (r < 0)
        snprintf(why, sizeof(why), "two of your groups are named '%.64s': use its id", c->ref_name);
    else if (group)
        snprintf(why, sizeof(why), "you are in no group named '%.64s' (showfriendlist)",
                 c->ref_name);
    else
        snprintf(why, sizeof(why), "who is '%.64s'? ask with whois:%.64s first, or use the id",
                 c->ref_name, c->ref_name);
    out_reply_fail(&a->out, cmd_reply_name(c), "NOT_FOUND", why);
    return -1;
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
    if (c.ref_name && c.kind != CMD_WHOIS && app_resolve(a, &c) < 0)
        goto out;
    switch (c.kind) {
    case CMD_HELP:
        out_help(&a->out);
        break;
    case CMD_WHOAMI: {
        char server[300];
        snprintf(server, sizeof(server), "%s:%s", a->opt.host, a->opt.port);
        out_whoami(&a->out, a->sess.logged_in ? (a->sess.name ? a->sess.name : "") : NULL,
                   a->sess.me, server, a->opt.tls, sess_up(&a->sess));
        break;
    }
    case CMD_CLEAR:
        if (a->out.json) {
            Parley__ServerFrame none = PARLEY__SERVER_FRAME__INIT;
            out_reply_ok(&a->out, CMD_CLEAR, 0, 0, NULL, &none);
        } else if (app_tty == a) {
            fputs("\033[H\033[2J\033[3J", stdout);
            fflush(stdout);
        }
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
            return a->out.fails ? 1 : 0;
        if (a->sess.done)
            continue;

        bool have_line = app_has_line(a);
        bool idle = sess_busy(&a->sess) == 0;
        if (a->in_eof && !have_line && idle) {
            if (eof_deadline < 0)
                eof_deadline = sess_clock_ms() + a->opt.wait_ms;
            if (sess_clock_ms() >= eof_deadline)
                return a->out.fails ? 1 : 0; /* some command failed */
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

/* Signals only set these; the loop acts on them (a handler that printed or
 * touched libedit could deadlock on stdio's lock). */
static volatile sig_atomic_t app_sig_quit; /* SIGHUP or SIGTERM */
static volatile sig_atomic_t app_sig_int, app_sig_winch, app_sig_cont, app_sig_tstp;

static void app_on_signal(int sig)
{
    switch (sig) {
    case SIGHUP:
    case SIGTERM:
        app_sig_quit = sig;
        break;
    case SIGINT:
        app_sig_int = 1;
        break;
    case SIGWINCH:
        app_sig_winch = 1;
        break;
    case SIGCONT:
        app_sig_cont = 1;
        break;
    case SIGTSTP:
        app_sig_tstp = 1;
        break;
    default:
        break;
    }
}

/* The signals stay blocked except inside ppoll(), which returns EINTR when
 * one arrives: a signal between looking at the flags and waiting cannot be
 * missed. *waitmask is the mask to wait with. */
static void app_tty_signals(sigset_t *waitmask)
{
    static const int sigs[] = {SIGHUP, SIGTERM, SIGINT, SIGWINCH, SIGCONT, SIGTSTP};
    struct sigaction sa;
    sigset_t block;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = app_on_signal;
    sigemptyset(&sa.sa_mask);
    sigemptyset(&block);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        sigaction(sigs[i], &sa, NULL);
        sigaddset(&block, sigs[i]);
    }
    sigprocmask(SIG_BLOCK, &block, waitmask);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigdelset(waitmask, sigs[i]);
}

static bool app_locale_is_utf8(void)
{
    const char *cs = nl_langinfo(CODESET);
    return cs && (strcasecmp(cs, "UTF-8") == 0 || strcasecmp(cs, "utf8") == 0);
}

/* libedit decodes and encodes what is typed with the locale's character
 * set: under LANG=C it would drop every byte that is not ASCII. Messages are
 * UTF-8 whatever the locale, so the terminal client runs in a UTF-8 one. */
static void app_tty_locale(void)
{
    static const char *const utf8[] = {"C.UTF-8", "C.utf8", "en_US.UTF-8", "en_US.utf8"};
    if (setlocale(LC_CTYPE, "") && app_locale_is_utf8())
        return;
    for (size_t i = 0; i < sizeof(utf8) / sizeof(utf8[0]); i++)
        if (setlocale(LC_CTYPE, utf8[i]) && app_locale_is_utf8())
            return;
    setlocale(LC_CTYPE, "");
    fprintf(stderr, "parley: warning: no UTF-8 locale is installed (tried C.UTF-8): only ASCII "
                    "can be typed; messages are still shown as UTF-8\n");
}

/* Columns that s[0..n) takes on the terminal. */
static size_t app_width(const char *s, size_t n)
{
    size_t w = 0;
    mbstate_t st;
    memset(&st, 0, sizeof(st));
    for (size_t i = 0; i < n && s[i];) {
        wchar_t wc;
        size_t k = mbrtowc(&wc, s + i, n - i, &st);
        if (k == (size_t)-1 || k == (size_t)-2 || k == 0) {
            memset(&st, 0, sizeof(st));
            w++;
            i++;
            continue;
        }
        int cw = wcwidth(wc);
        w += cw > 0 ? (size_t)cw : 0;
        i += k;
    }
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
 * print, and draw them again below. */
static void app_tty_sink(void *ctx, const char *text, size_t len)
{
    app *a = ctx;
    if (a->ui == APP_UI_EDIT)
        app_tty_erase(a);
    else if (a->ui == APP_UI_PASSWORD)
        fputs("\r\033[K", stdout);
    if (fwrite(text, 1, len, stdout) != len || fflush(stdout) != 0)
        a->out.failed = true;
    if (a->ui == APP_UI_EDIT) {
        rl_forced_update_display();
    } else if (a->ui == APP_UI_PASSWORD) {
        fputs(a->pw_prompt, stdout);
        fflush(stdout);
    }
}

static void app_set_prompt(app *a)
{
    const char *name =
        a->sess.logged_in && a->sess.name && a->sess.name[0] ? a->sess.name : "parley";
    const char *tail = sess_up(&a->sess) ? "> " : " (offline)> ";
    size_t max = sizeof(a->prompt) - strlen(tail) - 1, n = 0;
    for (; name[n] && n < max; n++) {
        unsigned char ch = (unsigned char)name[n];
        a->prompt[n] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    /* Cut at a character boundary: never before a UTF-8 continuation byte. */
    while (n > 0 && name[n] && ((unsigned char)name[n] & 0xc0) == 0x80)
        n--;
    snprintf(a->prompt + n, sizeof(a->prompt) - n, "%s", tail);
}

static void app_identity_changed(void *ctx)
{
    app *a = ctx;
    if (a->ui == APP_UI_EDIT)
        app_tty_erase(a); /* with the old prompt's width */
    app_set_prompt(a);
    if (a->ui != APP_UI_EDIT)
        return; /* the new prompt shows when the editor comes back */
    rl_set_prompt(a->prompt);
    fflush(stdout);
    rl_forced_update_display();
}

static void app_tty_line(char *line);

/* Gives the terminal back to the line editor: a fresh, empty prompt. */
static void app_edit_begin(app *a)
{
    a->ui = APP_UI_EDIT;
    a->searching = false;
    rl_callback_handler_install(a->prompt, app_tty_line);
    /* libedit updates these only when it reads a key. */
    rl_point = rl_end = 0;
}

/* ---- terminal mode: passwords ---- */

/* login:NAME or register:NAME on its own: asks for the password with the
 * terminal's echo off, outside the line editor (so it never reaches the
 * history), and runs the command once it is typed (twice, the same, for
 * register). */
static void app_password_begin(app *a, const char *line, bool confirm)
{
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == ':'))
        n--;
    free(a->pw_cmd);
    a->pw_cmd = strndup(line, n);
    a->pw_len = 0;
    if (!a->pw_cmd || tcgetattr(STDIN_FILENO, &a->pw_saved) < 0) {
        out_reply_fail(&a->out, "login", "INTERNAL", "cannot read a password here");
        free(a->pw_cmd);
        a->pw_cmd = NULL;
        app_edit_begin(a);
        return;
    }
    struct termios t = a->pw_saved;
    t.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK);
    t.c_lflag |= ICANON | ISIG | ECHONL;
    tcsetattr(STDIN_FILENO, TCSANOW, &t);
    a->ui = APP_UI_PASSWORD;
    a->pw_confirm = confirm;
    a->pw_first_len = 0;
    a->pw_prompt = "password: ";
    fputs(a->pw_prompt, stdout);
    fflush(stdout);
}

typedef enum {
    APP_PW_RUN,      /* run the command with the password */
    APP_PW_CANCEL,   /* Ctrl-C or Ctrl-D: the cursor is still on the prompt's row */
    APP_PW_EMPTY,    /* Enter alone */
    APP_PW_MISMATCH, /* register: the two differ */
} app_pw_end;

/* Leaves the password prompt; runs the command, or says why not. */
static void app_password_end(app *a, app_pw_end how)
{
    tcsetattr(STDIN_FILENO, TCSANOW, &a->pw_saved);
    a->ui = APP_UI_NONE;
    const char *name = strncasecmp(a->pw_cmd + strspn(a->pw_cmd, " \t"), "register", 8) == 0
                           ? "register"
                           : "login";
    if (how == APP_PW_CANCEL) {
        fputs("\n", stdout);
        fflush(stdout);
    } else if (how == APP_PW_EMPTY) {
        out_reply_fail(&a->out, name, "USAGE", "no password typed: nothing was sent");
    } else if (how == APP_PW_MISMATCH) {
        out_reply_fail(&a->out, name, "USAGE", "the two passwords differ: nothing was sent");
    } else {
        size_t n = strlen(a->pw_cmd);
        char *line = malloc(n + 1 + a->pw_len + 1);
        if (line) {
            memcpy(line, a->pw_cmd, n);
            line[n] = ':';
            memcpy(line + n + 1, a->pw_buf, a->pw_len);
            line[n + 1 + a->pw_len] = '\0';
            app_command(a, line);
            explicit_bzero(line, n + 1 + a->pw_len);
            free(line);
        }
    }
    explicit_bzero(a->pw_buf, sizeof(a->pw_buf));
    explicit_bzero(a->pw_first, sizeof(a->pw_first));
    a->pw_len = a->pw_first_len = 0;
    free(a->pw_cmd);
    a->pw_cmd = NULL;
    if (!a->quit)
        app_edit_begin(a);
}

/* Reads what was typed at the password prompt (the terminal hands over
 * whole lines). */
static void app_password_read(app *a)
{
    char buf[256];
    ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        app_password_end(a, APP_PW_CANCEL); /* Ctrl-D, or the terminal is gone */
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == '\n' || buf[i] == '\r') {
            explicit_bzero(buf, sizeof(buf));
            if (a->pw_len == 0) {
                app_password_end(a, APP_PW_EMPTY);
            } else if (a->pw_confirm && a->pw_first_len == 0) {
                memcpy(a->pw_first, a->pw_buf, a->pw_len);
                a->pw_first_len = a->pw_len;
                explicit_bzero(a->pw_buf, sizeof(a->pw_buf));
                a->pw_len = 0;
                a->pw_prompt = "the same again: ";
                fputs(a->pw_prompt, stdout);
                fflush(stdout);
            } else if (a->pw_confirm && (a->pw_len != a->pw_first_len ||
                                         memcmp(a->pw_buf, a->pw_first, a->pw_len) != 0)) {
                app_password_end(a, APP_PW_MISMATCH);
            } else {
                app_password_end(a, APP_PW_RUN);
            }
            return;
        }
        if (a->pw_len < sizeof(a->pw_buf))
            a->pw_buf[a->pw_len++] = buf[i];
    }
    explicit_bzero(buf, sizeof(buf));
}

/* ---- terminal mode: the line editor ---- */

/* libedit's read function: one character, decoded from UTF-8 here so that
 * input does not depend on the locale's decoder. -1 gives libedit nothing
 * (it then returns to the loop). It also notes what the loop must know:
 * a key was pressed (a Ctrl-C no longer follows a Ctrl-C), Ctrl-R started
 * a search, the key was Enter. */
static int app_getc(FILE *fp)
{
    app *a = app_tty;
    unsigned char b[4];
    (void)fp;
    if (a->draining)
        return -1;
    for (size_t got = 0, need = 1; got < need;) {
        /* Inside a Ctrl-R search libedit reads key after key here: wait
         * with our signals let through, as the loop does. */
        struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
        if (ppoll(&p, 1, NULL, &a->waitmask) < 0 && errno == EINTR) {
            if (app_sig_quit)
                return -1;
            if (app_sig_int && a->searching && got == 0) {
                app_sig_int = 0; /* this Ctrl-C only ends the search */
                a->searching = false;
                return 0x07; /* Ctrl-G: back to the line as it was */
            }
            continue;
        }
        ssize_t n = read(STDIN_FILENO, b + got, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            a->tty_gone = true;
            return -1;
        }
        if (got == 0) {
            if (b[0] < 0x80)
                break;
            need = b[0] >= 0xf0 ? 4 : b[0] >= 0xe0 ? 3 : b[0] >= 0xc0 ? 2 : 1;
            if (need == 1)
                return 0xfffd; /* a stray continuation byte */
        } else if ((b[got] & 0xc0) != 0x80) {
            return 0xfffd;
        }
        got++;
    }
    a->ctrl_c_armed = false;
    a->last_enter = b[0] == '\r' || b[0] == '\n';
    if (b[0] == 0x12)
        a->searching = true;
    if (b[0] < 0x80)
        return b[0];
    uint32_t cp;
    if (b[0] >= 0xf0)
        cp = (uint32_t)(b[0] & 0x07) << 18 | (uint32_t)(b[1] & 0x3f) << 12 |
             (uint32_t)(b[2] & 0x3f) << 6 | (b[3] & 0x3f);
    else if (b[0] >= 0xe0)
        cp = (uint32_t)(b[0] & 0x0f) << 12 | (uint32_t)(b[1] & 0x3f) << 6 | (b[2] & 0x3f);
    else
        cp = (uint32_t)(b[0] & 0x1f) << 6 | (b[1] & 0x3f);
    bool overlong = (b[0] >= 0xf0 && cp < 0x10000) || (b[0] >= 0xe0 && cp < 0x800) || cp < 0x80;
    if (overlong || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || b[0] > 0xf4)
        return 0xfffd;
    return (int)cp;
}

/* Tab completion: the command word, then a known user or group. A name
 * in an id's place completes to the id (the commands take ids). */
static char *app_complete_dup(const char *s)
{
    char *p = strdup(s);
    if (!p)
        abort(); /* libedit cannot be told of a failed allocation here */
    return p;
}

static char **app_complete(const char *text, int start, int end)
{
    app *a = app_tty;
    (void)end;
    rl_attempted_completion_over = 1; /* never file names */
    rl_completion_append_character = '\0';
    const char *buf = rl_line_buffer ? rl_line_buffer : "";
    size_t tlen = strlen(text);

    /* Which field: the number of colons before start. */
    int field = 0;
    const char *first_colon = NULL;
    for (int i = 0; i < start && buf[i]; i++)
        if (buf[i] == ':') {
            if (!first_colon)
                first_colon = buf + i;
            field++;
        }
    if (field >= 2)
        return NULL;

    char **m = calloc(256, sizeof(*m));
    if (!m)
        return NULL;
    size_t n = 1; /* m[0]: the replacement, filled below */
    if (field == 0) {
        for (size_t i = 0; cmd_word(i) && n < 255; i++)
            if (strncasecmp(cmd_word(i), text, tlen) == 0)
                m[n++] = app_complete_dup(cmd_word(i));
        if (n == 2)
            rl_completion_append_character = cmd_word_takes_args(m[1]) ? ':' : ' ';
    } else {
        /* The command's word, to know which names fit. */
        char word[32];
        const char *w = buf;
        while (*w == ' ' || *w == '\t')
            w++;
        size_t wn = (size_t)(first_colon - w);
        if (wn >= sizeof(word)) {
            free(m);
            return NULL;
        }
        memcpy(word, w, wn);
        word[wn] = '\0';
        bool login = strcasecmp(word, "login") == 0;
        bool group = strcasecmp(word, "groupchat") == 0 || strcasecmp(word, "addgroup") == 0 ||
                     strcasecmp(word, "quitgroup") == 0 || strcasecmp(word, "delgroup") == 0 ||
                     strcasecmp(word, "grouphistory") == 0;
        bool user = login || strcasecmp(word, "chat") == 0 || strcasecmp(word, "addfriend") == 0 ||
                    strcasecmp(word, "delfriend") == 0 || strcasecmp(word, "history") == 0;
        const out_name *tab = group ? a->out.groups : a->out.names;
        size_t ntab = group ? a->out.ngroups : user ? a->out.nnames : 0;
        uint64_t only = 0;
        for (size_t i = 0; i < ntab && n < 255; i++) {
            if (strncmp(tab[i].name, text, tlen) != 0)
                continue;
            char show[160];
            if (login)
                snprintf(show, sizeof(show), "%s", tab[i].name);
            else
                snprintf(show, sizeof(show), "%s(%" PRIu64 ")", tab[i].name, tab[i].id);
            m[n++] = app_complete_dup(show);
            only = tab[i].id;
        }
        bool takes_more =
            !login && (strcasecmp(word, "chat") == 0 || strcasecmp(word, "groupchat") == 0 ||
                       strcasecmp(word, "history") == 0 || strcasecmp(word, "grouphistory") == 0);
        if (n == 2) {
            if (!login) {
                char id[24];
                snprintf(id, sizeof(id), "%" PRIu64, only);
                free(m[1]);
                m[1] = app_complete_dup(id);
            }
            rl_completion_append_character = login || takes_more ? ':' : ' ';
        }
    }
    if (n == 1) {
        free(m);
        return NULL;
    }
    if (n == 2) {
        m[0] = m[1];
        m[1] = NULL;
        return m;
    }
    /* Several: m[0] is what they share (the text itself for names shown
     * with their ids). */
    size_t common = strlen(m[1]);
    for (size_t i = 2; i < n; i++) {
        size_t k = 0;
        while (k < common && m[i][k] &&
               tolower((unsigned char)m[i][k]) == tolower((unsigned char)m[1][k]))
            k++;
        common = k;
    }
    if (field != 0 || common < tlen)
        m[0] = app_complete_dup(text);
    else
        m[0] = strndup(m[1], common);
    if (!m[0])
        abort();
    return m;
}

static void app_tty_line(char *line)
{
    app *a = app_tty;
    a->ui = APP_UI_NONE;
    a->line_done = true;
    a->searching = false;
    if (!line) {
        /* Ctrl-D */
        fputs("\n", stdout);
        fflush(stdout);
        app_quit(a);
        if (!a->quit)
            app_edit_begin(a);
        return;
    }
    const char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p) {
        /* Never a password: login:NAME:PASSWORD is kept as login:NAME,
         * which asks for it when run again. */
        size_t keep = cmd_history_len(line);
        char *h = strndup(line, keep);
        if (h) {
            add_history(h);
            if (a->histpath[0])
                histfile_append(a->histpath, h, keep);
            free(h);
        }
    }
    cmd c;
    bool ask = cmd_parse(line, &c) == 0 && c.needs_password;
    bool confirm = c.kind == CMD_REGISTER;
    cmd_free(&c);
    if (ask)
        app_password_begin(a, line, confirm);
    else
        app_command(a, line);
    explicit_bzero(line, strlen(line));
    free(line);
    /* libedit leaves its editor in line-buffered mode after a callback, so
     * the next read would block until Enter; installing the handler again
     * puts it back to a character at a time, empties the line and draws a
     * fresh prompt. */
    if (!a->quit && a->ui == APP_UI_NONE)
        app_edit_begin(a);
}

/* Ctrl-C: clears the line being typed; on an empty line, a second one in a
 * row quits. At the password prompt it gives up the login. */
static void app_tty_interrupt(app *a)
{
    if (a->ui == APP_UI_PASSWORD) {
        app_password_end(a, APP_PW_CANCEL);
        return;
    }
    if (a->ui != APP_UI_EDIT)
        return;
    if (rl_end > 0) {
        app_tty_erase(a);
        rl_callback_handler_remove();
        app_edit_begin(a);
        a->ctrl_c_armed = false;
        return;
    }
    if (a->ctrl_c_armed) {
        a->ctrl_c_armed = false;
        app_quit(a);
        return;
    }
    a->ctrl_c_armed = true;
    static const char hint[] = "(press Ctrl-C again to quit, or type quit)\n";
    app_tty_sink(a, hint, sizeof(hint) - 1);
}

/* Ctrl-Z: give the terminal back in its own mode, stop; on return, take it
 * again and redraw. */
static void app_tty_suspend(app *a)
{
    if (a->ui == APP_UI_EDIT) {
        app_tty_erase(a);
        rl_deprep_terminal();
    }
    fflush(stdout);
    kill(getpid(), SIGSTOP);
    /* Continued: SIGCONT, pending until the loop waits, says to redraw. */
}

static void app_tty_signals_act(app *a)
{
    if (app_sig_int) {
        app_sig_int = 0;
        app_tty_interrupt(a);
    }
    if (app_sig_tstp) {
        app_sig_tstp = 0;
        app_tty_suspend(a);
    }
    if (app_sig_cont) {
        app_sig_cont = 0;
        if (a->ui == APP_UI_EDIT) {
            /* The shell may have changed the terminal's modes meanwhile. */
            rl_deprep_terminal();
            rl_prep_terminal(0);
            fputs("\r\033[K", stdout);
            rl_forced_update_display();
        }
    }
    if (app_sig_winch) {
        app_sig_winch = 0;
        if (a->ui == APP_UI_EDIT) {
            rl_resize_terminal();
            app_tty_erase(a); /* where the terminal put the line at its new width */
            rl_forced_update_display();
        }
    }
}

static int app_run_tty(app *a)
{
    int rc = 0;

    app_tty_locale();
    app_tty = a;
    app_tty_signals(&a->waitmask);
    /* libedit's own handlers print from inside the handler (and deadlock
     * on stdout's lock when the main loop holds it); ours set flags. */
    rl_catch_signals = 0;
    rl_catch_sigwinch = 0;
    rl_getc_function = app_getc;
    rl_attempted_completion_function = app_complete;
    rl_basic_word_break_characters = " \t:";
    rl_readline_name = "parley";
    if (histfile_path(a->histpath, sizeof(a->histpath)) == 0)
        histfile_load(a->histpath, add_history);
    else
        a->histpath[0] = '\0';
    out_set_sink(&a->out, app_tty_sink, a);
    sess_set_identity_cb(&a->sess, app_identity_changed, a);
    if (!a->opt.json) {
        printf("connected to %s:%s%s; type help for the commands, quit or Ctrl-D to leave\n",
               a->opt.host, a->opt.port, a->opt.tls ? " with TLS" : "");
        fflush(stdout);
    }
    app_set_prompt(a);
    app_edit_begin(a);

    for (;;) {
        if (app_sig_quit || a->tty_gone)
            break; /* the terminal is gone, or we were told to end */
        app_tty_signals_act(a);
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
        int ms = app_timeout(sess_next_timer(&a->sess));
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
        int n = ppoll(p, 2, ms < 0 ? NULL : &ts, &a->waitmask);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("parley: poll");
            rc = 1;
            break;
        }
        if (p[0].revents & POLLIN) {
            if (a->ui == APP_UI_PASSWORD) {
                app_password_read(a);
            } else if (a->ui == APP_UI_EDIT) {
                a->line_done = false;
                rl_callback_read_char();
                /* A search ended by Enter pushes the Enter back for the
                 * editor to run, but the editor reads it only when called
                 * again: call it now, not at the next key. */
                if (a->searching && a->last_enter && !a->line_done && a->ui == APP_UI_EDIT) {
                    a->draining = true;
                    rl_callback_read_char();
                    a->draining = false;
                }
            }
        } else if (p[0].revents & (POLLHUP | POLLERR | POLLNVAL)) {
            break; /* the terminal went away */
        }
        if (p[1].fd >= 0)
            sess_poll_done(&a->sess, p[1].revents);
        sess_tick(&a->sess);
    }

    if (a->ui == APP_UI_PASSWORD)
        tcsetattr(STDIN_FILENO, TCSANOW, &a->pw_saved);
    if (a->ui != APP_UI_NONE && !a->tty_gone && !app_sig_quit) {
        fputs("\n", stdout); /* the shell's prompt below ours, not after it */
        fflush(stdout);
    }
    a->ui = APP_UI_NONE;
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

    bool tty = isatty(STDIN_FILENO);
    out_init(&a.out, a.opt.json);
    sess_init(&a.sess, a.opt.host, a.opt.port, a.opt.reconnect, &a.out);
    /* A person at a terminal decides when to give up; a script keeps its
     * bounded wait. */
    if (a.opt.reconnect_for >= 0)
        a.sess.give_up_ms = (int64_t)a.opt.reconnect_for * 1000;
    else if (tty)
        a.sess.give_up_ms = 0;
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
    if (tty)
        rc = app_run_tty(&a);
    else
        rc = app_run_script(&a);
    sess_finish(&a.sess, APP_FINISH_MS);

out:
    sess_free(&a.sess);
    trust_free(a.trust);
    out_free(&a.out);
    free(a.in);
    free(a.pw_cmd);
    return rc;
}
