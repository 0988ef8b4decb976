/*
 * cmd: parses one line typed by the user (or read from a script) in the
 * seeds' colon form, e.g. "chat:2:hello: how are you", into a struct cmd.
 * Pure: no I/O. Text arguments (message bodies, passwords, descriptions)
 * are everything after the last fixed colon and may contain colons.
 */
#ifndef PARLEY_CLIENT_CMD_H
#define PARLEY_CLIENT_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    CMD_NONE = 0, /* blank line or comment: nothing to do */
    CMD_UNKNOWN,  /* a word that names no command; see cmd.word */
    CMD_HELP,
    CMD_REGISTER,
    CMD_LOGIN,
    CMD_CHAT,
    CMD_ADDFRIEND,
    CMD_DELFRIEND,
    CMD_SHOWFRIENDLIST,
    CMD_CREATEGROUP,
    CMD_ADDGROUP,
    CMD_QUITGROUP,
    CMD_DELGROUP,
    CMD_GROUPCHAT,
    CMD_HISTORY,
    CMD_GROUPHISTORY,
    CMD_RECALL,
    CMD_LOGOUT,
    CMD_WHOIS,
    CMD_WHO,
    CMD_WHOAMI,
    CMD_CLEAR,
    CMD_QUIT,
    CMD_SENDFILE,
    CMD_GROUPSENDFILE,
    CMD_GETFILE,
    CMD_COUNT_
} cmd_kind;

enum { CMD_HISTORY_DEFAULT = 20 };

typedef struct cmd {
    cmd_kind kind;
    /* Set when the line is not valid for kind (or kind is CMD_UNKNOWN): a
     * human-readable reason, e.g. "usage: chat:USERID:TEXT". */
    const char *error;
    char errbuf[160];
    /* The command word as typed (points into line). */
    const char *word;
    /* Arguments; which ones are set depends on kind.
     *  id:    USERID, GROUPID or MSGID; for login the user id (0 if by name)
     *  count: history length
     *  a, b:  NAME and PASSWORD (register, login by name: a = name),
     *         TEXT (chat, groupchat: b), NAME and DESC (creategroup),
     *         PATH (sendfile, groupsendfile, getfile: b) */
    uint64_t id;
    /* A user or group named where an id goes ("chat:bob:hi"): id is 0 and
     * this is the name (points into line), for the caller to resolve. */
    const char *ref_name;
    uint32_t count;
    const char *a;
    const char *b;
    char *line; /* owned copy of the input the pointers above point into */
    /* login:NAME or register:NAME without a password (c->error is set): a
     * terminal may ask for it without echo and run the command then. */
    bool needs_password;
} cmd;

/* Parses line (without its line ending). Returns 0, or -1 when out of memory.
 * A syntax error is not a failure: it is reported in c->error. Always call
 * cmd_free() afterwards. */
int cmd_parse(const char *line, cmd *c);
void cmd_free(cmd *c);

/* The canonical name of kind ("logout" for both loginout and logout). */
const char *cmd_name(cmd_kind kind);
/* The name to report for c: canonical, or the word typed if unknown. */
const char *cmd_reply_name(const cmd *c);
/* "usage: chat:USERID:TEXT" for kind. */
const char *cmd_usage(cmd_kind kind);
/* True when kind is handled without asking the server. */
bool cmd_is_local(cmd_kind kind);

/* The i-th command word as typed (for completion), or NULL past the last. */
const char *cmd_word(size_t i);
/* True when the command word w (case-insensitive) takes arguments. */
bool cmd_word_takes_args(const char *w);

/* The length of the part of line to keep in a history that must never hold
 * a password: up to the password of a login or register, else all of it. */
size_t cmd_history_len(const char *line);

/* The help text: n entries of a synopsis and a one-line description. */
typedef struct cmd_help_entry {
    const char *synopsis;
    const char *what;
} cmd_help_entry;
const cmd_help_entry *cmd_help(size_t *n);

#endif
