/*
 * fuzz_cmd: the terminal client's command parser (src/client/cmd.c) on
 * whatever a user or a script may type. Each line of the input is parsed
 * as the client parses a line of its standard input; the result must hold
 * together (arguments inside the parsed line, set when the command needs
 * them, an error text otherwise), else the target aborts.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/cmd.h"

static void fz_fail(const char *what, const char *line)
{
    fprintf(stderr, "fuzz_cmd: %s (line \"%s\")\n", what, line);
    abort();
}

/* p is NULL, or a string inside c's own copy of the line (n bytes long
 * before the parser cut it at its colons). */
static int fz_inside(const cmd *c, size_t n, const char *p)
{
    if (!p)
        return 1;
    return p >= c->line && p <= c->line + n && p + strlen(p) <= c->line + n;
}

static void fz_line(const char *line)
{
    cmd c;
    size_t n = strlen(line);
    if (cmd_parse(line, &c) < 0)
        return; /* out of memory */
    if (c.kind < CMD_NONE || c.kind >= CMD_COUNT_)
        fz_fail("kind out of range", line);
    if (!fz_inside(&c, n, c.word) || !fz_inside(&c, n, c.a) || !fz_inside(&c, n, c.ref_name))
        fz_fail("an argument points outside the line", line);
    /* A user or group named in an id's place: a name, never with the id. */
    if (c.ref_name && (c.id || !*c.ref_name || strchr(c.ref_name, ':')))
        fz_fail("a name in an id's place that is empty, has a colon or comes with an id", line);
    /* creategroup's empty description is a literal, not part of the line */
    if (!(c.kind == CMD_CREATEGROUP && c.b && *c.b == '\0') && !fz_inside(&c, n, c.b))
        fz_fail("an argument points outside the line", line);
    if (c.kind == CMD_UNKNOWN && !c.error)
        fz_fail("an unknown command without an error", line);
    if (c.error && strlen(c.error) >= sizeof(c.errbuf))
        fz_fail("error text longer than its buffer", line);
    if (!cmd_name(c.kind) || !cmd_reply_name(&c) || !cmd_usage(c.kind))
        fz_fail("a name or usage is NULL", line);
    if (!c.error) {
        switch (c.kind) {
        case CMD_CHAT:
        case CMD_GROUPCHAT:
            if ((!c.id && !c.ref_name) || !c.b || !*c.b)
                fz_fail("a message without a target or text", line);
            break;
        case CMD_REGISTER:
            if (!c.a || !*c.a || !c.b || !*c.b || strchr(c.a, ':'))
                fz_fail("register without name and password", line);
            break;
        case CMD_LOGIN:
            if ((!c.id && (!c.a || !*c.a)) || !c.b || !*c.b)
                fz_fail("login without account or password", line);
            break;
        case CMD_ADDGROUP:
        case CMD_RECALL:
            if (!c.id)
                fz_fail("an id of 0 accepted", line);
            break;
        case CMD_ADDFRIEND:
        case CMD_DELFRIEND:
        case CMD_QUITGROUP:
        case CMD_DELGROUP:
        case CMD_WHOIS:
            if (!c.id && !c.ref_name)
                fz_fail("an id of 0 accepted", line);
            break;
        case CMD_HISTORY:
        case CMD_GROUPHISTORY:
            if ((!c.id && !c.ref_name) || !c.count)
                fz_fail("history without id or count", line);
            break;
        case CMD_CREATEGROUP:
            if (!c.a || !*c.a || !c.b)
                fz_fail("creategroup without a name", line);
            break;
        case CMD_FIND:
            if (!c.a || !*c.a || !c.b || strchr(c.a, ':'))
                fz_fail("find without a prefix", line);
            break;
        case CMD_READ:
            if (!c.id || !c.seq)
                fz_fail("read of conversation or seq 0", line);
            break;
        case CMD_TYPING:
        case CMD_GROUPTYPING:
            if (!c.id && !c.ref_name)
                fz_fail("typing to nobody", line);
            break;
        default:
            break;
        }
    }
    cmd_free(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The client reads text lines: a NUL ends what it sees of a line. */
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        fz_line(line);
    }
    free(text);
    return 0;
}
