/*
 * fz_common: what the fuzz targets that run real services share: a
 * throw-away data directory and a service configuration that hashes
 * passwords at the minimum cost.
 */
#ifndef PARLEY_FZ_COMMON_H
#define PARLEY_FZ_COMMON_H

#include <stddef.h>

#include "services/svc.h"

/* Prints "fuzz target: what" and aborts, so that libFuzzer keeps the input. */
void fz_fail(const char *what) __attribute__((noreturn));

/* A new empty directory under $TMPDIR (else /tmp), removed with everything
 * in it by fz_data_dir_remove (and at exit). Aborts on failure. */
const char *fz_data_dir(void);
void fz_data_dir_remove(void);

/* The services' configuration: the server's defaults (see server/config.c)
 * on a SQLite database in dir, one worker per pool, minimum password cost. */
void fz_svc_config(svc_config *cfg, const char *db_path);

/* Open file descriptors of this process (from /proc/self/fd). */
int fz_count_fds(void);

#endif
