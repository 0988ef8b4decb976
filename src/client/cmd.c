/*
 * cmd: see cmd.h.
 */
#include "client/cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct cmd_def {
    const char *word; /* as typed (case-insensitive) */
    cmd_kind kind;
} cmd_def;

static const cmd_def cmd_words[] = {
    {"help", CMD_HELP},
    {"register", CMD_REGISTER},
    {"login", CMD_LOGIN},
    {"chat", CMD_CHAT},
    {"addfriend", CMD_ADDFRIEND},
    {"delfriend", CMD_DELFRIEND},
    {"showfriendlist", CMD_SHOWFRIENDLIST},
    {"creategroup", CMD_CREATEGROUP},
    {"addgroup", CMD_ADDGROUP},
    {"quitgroup", CMD_QUITGROUP},
    {"delgroup", CMD_DELGROUP},
    {"groupchat", CMD_GROUPCHAT},
    {"history", CMD_HISTORY},
    {"grouphistory", CMD_GROUPHISTORY},
    {"recall", CMD_RECALL},
    {"loginout", CMD_LOGOUT},
    {"logout", CMD_LOGOUT},
    {"whois", CMD_WHOIS},
    {"who", CMD_WHO},
    {"whoami", CMD_WHOAMI},
    {"clear", CMD_CLEAR},
    {"quit", CMD_QUIT},
    {"sendfile", CMD_SENDFILE},
    {"groupsendfile", CMD_GROUPSENDFILE},
    {"getfile", CMD_GETFILE},
};

/* Indexed by cmd_kind. */
static const cmd_help_entry cmd_helps[CMD_COUNT_] = {
    [CMD_HELP] = {"help", "show this list"},
    [CMD_REGISTER] = {"register:NAME:PASSWORD",
                      "create an account; prints your user id (on a terminal, register:NAME "
                      "asks for the password)"},
    [CMD_LOGIN] = {"login:ID_OR_NAME:PASSWORD",
                   "log in by user id or name (on a terminal, login:NAME asks for the password)"},
    [CMD_CHAT] = {"chat:USER:TEXT", "send TEXT to a user (USER: a name or an id)"},
    [CMD_ADDFRIEND] = {"addfriend:USER", "add a friend"},
    [CMD_DELFRIEND] = {"delfriend:USER", "remove a friend"},
    [CMD_SHOWFRIENDLIST] = {"showfriendlist", "list your friends and groups"},
    [CMD_CREATEGROUP] = {"creategroup:NAME:DESC", "create a group; prints its id"},
    [CMD_ADDGROUP] = {"addgroup:GROUPID", "join a group"},
    [CMD_QUITGROUP] = {"quitgroup:GROUP", "leave a group (GROUP: a name or an id)"},
    [CMD_DELGROUP] = {"delgroup:GROUP", "delete a group you created"},
    [CMD_GROUPCHAT] = {"groupchat:GROUP:TEXT", "send TEXT to a group"},
    [CMD_HISTORY] = {"history:USER[:N]", "the last N (default 20) messages with a user"},
    [CMD_GROUPHISTORY] = {"grouphistory:GROUP[:N]", "the last N (default 20) messages of a group"},
    [CMD_RECALL] = {"recall:MSGID", "take back a message you sent"},
    [CMD_LOGOUT] = {"logout[:all]", "log out (also: loginout); all: on every device"},
    [CMD_WHOIS] = {"whois:USER", "a user's id and name (and presence, for a friend)"},
    [CMD_WHO] = {"who", "your friends who are online"},
    [CMD_WHOAMI] = {"whoami", "who you are logged in as, and where"},
    [CMD_CLEAR] = {"clear", "clear the screen"},
    [CMD_QUIT] = {"quit", "leave parley (also Ctrl-D)"},
    [CMD_SENDFILE] = {"sendfile:USER:PATH", "send a file (up to the server's limit) to a user"},
    [CMD_GROUPSENDFILE] = {"groupsendfile:GROUP:PATH", "send a file to a group"},
    [CMD_GETFILE] = {"getfile:MSGID:PATH", "save the file of message MSGID to PATH"},
};

static const char *const cmd_names[CMD_COUNT_] = {
    [CMD_NONE] = "",
    [CMD_UNKNOWN] = "unknown",
    [CMD_HELP] = "help",
    [CMD_REGISTER] = "register",
    [CMD_LOGIN] = "login",
    [CMD_CHAT] = "chat",
    [CMD_ADDFRIEND] = "addfriend",
    [CMD_DELFRIEND] = "delfriend",
    [CMD_SHOWFRIENDLIST] = "showfriendlist",
    [CMD_CREATEGROUP] = "creategroup",
    [CMD_ADDGROUP] = "addgroup",
    [CMD_QUITGROUP] = "quitgroup",
    [CMD_DELGROUP] = "delgroup",
    [CMD_GROUPCHAT] = "groupchat",
    [CMD_HISTORY] = "history",
    [CMD_GROUPHISTORY] = "grouphistory",
    [CMD_RECALL] = "recall",
    [CMD_LOGOUT] = "logout",
    [CMD_WHOIS] = "whois",
    [CMD_WHO] = "who",
    [CMD_WHOAMI] = "whoami",
    [CMD_CLEAR] = "clear",
    [CMD_QUIT] = "quit",
    [CMD_SENDFILE] = "sendfile",
    [CMD_GROUPSENDFILE] = "groupsendfile",
    [CMD_GETFILE] = "getfile",
};

static const char *const cmd_usages[CMD_COUNT_] = {
    [CMD_HELP] = "usage: help",
    [CMD_REGISTER] = "usage: register:NAME:PASSWORD",
    [CMD_LOGIN] = "usage: login:ID_OR_NAME:PASSWORD",
    [CMD_CHAT] = "usage: chat:USER:TEXT",
    [CMD_ADDFRIEND] = "usage: addfriend:USER",
    [CMD_DELFRIEND] = "usage: delfriend:USER",
    [CMD_SHOWFRIENDLIST] = "usage: showfriendlist",
    [CMD_CREATEGROUP] = "usage: creategroup:NAME:DESC",
    [CMD_ADDGROUP] = "usage: addgroup:GROUPID",
    [CMD_QUITGROUP] = "usage: quitgroup:GROUP",
    [CMD_DELGROUP] = "usage: delgroup:GROUP",
    [CMD_GROUPCHAT] = "usage: groupchat:GROUP:TEXT",
    [CMD_HISTORY] = "usage: history:USER[:N]",
    [CMD_GROUPHISTORY] = "usage: grouphistory:GROUP[:N]",
    [CMD_RECALL] = "usage: recall:MSGID",
    [CMD_LOGOUT] = "usage: logout[:all]",
    [CMD_WHOIS] = "usage: whois:USER",
    [CMD_WHO] = "usage: who",
    [CMD_WHOAMI] = "usage: whoami",
    [CMD_CLEAR] = "usage: clear",
    [CMD_QUIT] = "usage: quit",
    [CMD_SENDFILE] = "usage: sendfile:USER:PATH",
    [CMD_GROUPSENDFILE] = "usage: groupsendfile:GROUP:PATH",
    [CMD_GETFILE] = "usage: getfile:MSGID:PATH",
};

const char *cmd_name(cmd_kind kind)
{
    if (kind < 0 || kind >= CMD_COUNT_)
        return "";
    return cmd_names[kind];
}

const char *cmd_reply_name(const cmd *c)
{
    if (c->kind == CMD_UNKNOWN)
        return c->word ? c->word : "";
    return cmd_name(c->kind);
}

const char *cmd_usage(cmd_kind kind)
{
    if (kind < 0 || kind >= CMD_COUNT_ || !cmd_usages[kind])
        return "usage: help";
    return cmd_usages[kind];
}

bool cmd_is_local(cmd_kind kind)
{
    return kind == CMD_NONE || kind == CMD_UNKNOWN || kind == CMD_HELP || kind == CMD_QUIT ||
           kind == CMD_WHOAMI || kind == CMD_CLEAR;
}

const char *cmd_word(size_t i)
{
    return i < sizeof(cmd_words) / sizeof(cmd_words[0]) ? cmd_words[i].word : NULL;
}

bool cmd_word_takes_args(const char *w)
{
    for (size_t i = 0; i < sizeof(cmd_words) / sizeof(cmd_words[0]); i++) {
        if (strcasecmp(w, cmd_words[i].word) != 0)
            continue;
        switch (cmd_words[i].kind) {
        case CMD_HELP:
        case CMD_SHOWFRIENDLIST:
        case CMD_LOGOUT:
        case CMD_WHO:
        case CMD_WHOAMI:
        case CMD_CLEAR:
        case CMD_QUIT:
            return false;
        default:
            return true;
        }
    }
    return false;
}

size_t cmd_history_len(const char *line)
{
    size_t n = strlen(line);
    const char *s = line;
    while (*s == ' ' || *s == '\t')
        s++;
    const char *colon = strchr(s, ':');
    if (!colon)
        return n;
    char word[16];
    size_t wn = (size_t)(colon - s);
    while (wn > 0 && (s[wn - 1] == ' ' || s[wn - 1] == '\t'))
        wn--;
    if (wn >= sizeof(word))
        return n;
    memcpy(word, s, wn);
    word[wn] = '\0';
    if (strcasecmp(word, "login") != 0 && strcasecmp(word, "register") != 0)
        return n;
    /* The password is everything after the second colon. */
    const char *second = strchr(colon + 1, ':');
    return second ? (size_t)(second - line) : n;
}

const cmd_help_entry *cmd_help(size_t *n)
{
    /* Entries CMD_HELP .. CMD_QUIT are contiguous in cmd_helps. */
    *n = (size_t)(CMD_QUIT - CMD_HELP + 1);
    return &cmd_helps[CMD_HELP];
}

static bool cmd_is_space(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Removes spaces and tabs at both ends of s, in place. */
static char *cmd_trim(char *s)
{
    while (cmd_is_space(*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && cmd_is_space(s[n - 1]))
        s[--n] = '\0';
    return s;
}

static bool cmd_all_digits(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* Parses a positive decimal integer that fits in max; s is trimmed first. */
static bool cmd_number(char *s, uint64_t max, uint64_t *out)
{
    s = cmd_trim(s);
    if (!cmd_all_digits(s))
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (max - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (v == 0)
        return false;
    *out = v;
    return true;
}

/* A user or group given by id (all digits) or by name: c->id, or
 * c->ref_name (trimmed, in s). false if neither. */
static bool cmd_ref(cmd *c, char *s)
{
    s = cmd_trim(s);
    if (cmd_all_digits(s))
        return cmd_number(s, UINT64_MAX, &c->id);
    if (*s == '\0')
        return false;
    c->ref_name = s;
    return true;
}

/* Splits s at its first colon: returns what follows it, or NULL. */
static char *cmd_split(char *s)
{
    char *colon = strchr(s, ':');
    if (!colon)
        return NULL;
    *colon = '\0';
    return colon + 1;
}

static void cmd_fail(cmd *c, const char *why)
{
    if (why)
        snprintf(c->errbuf, sizeof(c->errbuf), "%s (%s)", cmd_usage(c->kind), why);
    else
        snprintf(c->errbuf, sizeof(c->errbuf), "%s", cmd_usage(c->kind));
    c->error = c->errbuf;
}

static bool cmd_blank(const char *s)
{
    for (; *s; s++)
        if (!cmd_is_space(*s))
            return false;
    return true;
}

/* rest: everything after the command word's colon, or NULL if none. */
static void cmd_args(cmd *c, char *rest)
{
    char *tail;
    uint64_t v;

    switch (c->kind) {
    case CMD_LOGOUT:
        /* logout:all ends the sessions of every device. */
        if (rest && strcasecmp(cmd_trim(rest), "all") == 0) {
            c->count = 1;
            return;
        }
        if (rest && !cmd_blank(rest))
            cmd_fail(c, "takes no arguments, or 'all'");
        return;
    case CMD_HELP:
    case CMD_SHOWFRIENDLIST:
    case CMD_WHO:
    case CMD_WHOAMI:
    case CMD_CLEAR:
    case CMD_QUIT:
        if (rest && !cmd_blank(rest))
            cmd_fail(c, "takes no arguments");
        return;

    case CMD_ADDGROUP:
    case CMD_RECALL:
        if (!rest || strchr(rest, ':') || !cmd_number(rest, UINT64_MAX, &c->id))
            cmd_fail(c, "the id must be a positive integer");
        return;

    case CMD_ADDFRIEND:
    case CMD_DELFRIEND:
    case CMD_QUITGROUP:
    case CMD_DELGROUP:
    case CMD_WHOIS:
        if (!rest || strchr(rest, ':') || !cmd_ref(c, rest))
            cmd_fail(c, "give a name or a positive id");
        return;

    case CMD_CHAT:
    case CMD_GROUPCHAT:
        tail = rest ? cmd_split(rest) : NULL;
        if (!rest || !cmd_ref(c, rest)) {
            cmd_fail(c, "give a name or a positive id");
            return;
        }
        if (!tail || *tail == '\0') {
            cmd_fail(c, "the message is empty");
            return;
        }
        c->b = tail;
        return;

    case CMD_SENDFILE:
    case CMD_GROUPSENDFILE:
    case CMD_GETFILE:
        /* PATH is everything after the second colon: it may hold colons. */
        tail = rest ? cmd_split(rest) : NULL;
        if (c->kind == CMD_GETFILE ? !rest || !cmd_number(rest, UINT64_MAX, &c->id)
                                   : !rest || !cmd_ref(c, rest)) {
            cmd_fail(c, c->kind == CMD_GETFILE ? "the message id must be a positive integer"
                                               : "give a name or a positive id");
            return;
        }
        if (!tail || *tail == '\0') {
            cmd_fail(c, "the path is empty");
            return;
        }
        c->b = tail;
        return;

    case CMD_HISTORY:
    case CMD_GROUPHISTORY:
        tail = rest ? cmd_split(rest) : NULL;
        if (!rest || !cmd_ref(c, rest)) {
            cmd_fail(c, "give a name or a positive id");
            return;
        }
        c->count = CMD_HISTORY_DEFAULT;
        if (tail) {
            if (strchr(tail, ':') || !cmd_number(tail, UINT32_MAX, &v)) {
                cmd_fail(c, "N must be a positive integer");
                return;
            }
            c->count = (uint32_t)v;
        }
        return;

    case CMD_REGISTER:
        tail = rest ? cmd_split(rest) : NULL;
        if (!rest || *rest == '\0') {
            cmd_fail(c, "the name is empty");
            return;
        }
        if (!tail || *tail == '\0') {
            cmd_fail(c, "the password is empty");
            c->needs_password = true;
            c->a = rest;
            return;
        }
        c->a = rest;
        c->b = tail;
        return;

    case CMD_LOGIN:
        tail = rest ? cmd_split(rest) : NULL;
        if (!rest || *rest == '\0') {
            cmd_fail(c, "the user id or name is empty");
            return;
        }
        if (!tail || *tail == '\0') {
            cmd_fail(c, "the password is empty");
            c->needs_password = true;
            return;
        }
        if (cmd_all_digits(rest)) {
            if (!cmd_number(rest, UINT64_MAX, &c->id)) {
                cmd_fail(c, "the user id must be a positive integer");
                return;
            }
        } else {
            c->a = rest;
        }
        c->b = tail;
        return;

    case CMD_CREATEGROUP:
        tail = rest ? cmd_split(rest) : NULL;
        if (!rest || *rest == '\0') {
            cmd_fail(c, "the group name is empty");
            return;
        }
        c->a = rest;
        c->b = tail ? tail : "";
        return;

    default:
        return;
    }
}

int cmd_parse(const char *line, cmd *c)
{
    memset(c, 0, sizeof(*c));
    c->line = strdup(line);
    if (!c->line)
        return -1;

    char *s = c->line;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    while (cmd_is_space(*s))
        s++;
    if (*s == '\0' || *s == '#') {
        c->kind = CMD_NONE;
        return 0;
    }

    char *rest = cmd_split(s);
    char *word = cmd_trim(s);
    c->word = word;
    c->kind = CMD_UNKNOWN;
    for (size_t i = 0; i < sizeof(cmd_words) / sizeof(cmd_words[0]); i++) {
        if (strcasecmp(word, cmd_words[i].word) == 0) {
            c->kind = cmd_words[i].kind;
            break;
        }
    }
    if (c->kind == CMD_UNKNOWN) {
        snprintf(c->errbuf, sizeof(c->errbuf), "unknown command '%.100s' (type help for a list)",
                 word);
        c->error = c->errbuf;
        return 0;
    }
    cmd_args(c, rest);
    return 0;
}

void cmd_free(cmd *c)
{
    free(c->line);
    memset(c, 0, sizeof(*c));
}
