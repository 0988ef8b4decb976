/*
 * limits: the bounds every request is checked against, in one place so that
 * the protocol document, the services and the tests agree.
 */
#ifndef PARLEY_LIMITS_H
#define PARLEY_LIMITS_H

enum {
    LIMIT_NAME_CHARS = 32,      /* user and group names */
    LIMIT_DESC_CHARS = 200,     /* group description */
    LIMIT_PASSWORD_MIN = 6,     /* characters */
    LIMIT_PASSWORD_MAX = 256,   /* characters; bounds the hashing work */
    LIMIT_BODY_CHARS = 4000,    /* message text */
    LIMIT_HISTORY_DEFAULT = 20, /* messages per history page */
    LIMIT_HISTORY_MAX = 100,
    LIMIT_SYNC_BATCH = 200,  /* pending messages per sync step */
    LIMIT_FIND_DEFAULT = 20, /* users per find page */
    LIMIT_FIND_MAX = 50,
    /* Read events go to every member of a group this small at most (and at
     * most one a second per member and group). */
    LIMIT_READ_EVENT_MEMBERS = 50,
    PROTOCOL_VERSION = 1,
    LIMIT_UPLOADS_PER_USER = 16,   /* uploads unfinished or not yet sent */
    LIMIT_FILE_CHUNK = 256 * 1024, /* bytes of one chunk, up and down */
};

/* An upload not finished and sent within a day is dropped (--upload-ttl). */
#define LIMIT_UPLOAD_TTL_MS (24LL * 3600 * 1000)

#endif
