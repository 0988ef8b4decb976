#include "fz_common.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fz_dir[PATH_MAX];

void fz_fail(const char *what)
{
    fprintf(stderr, "fuzz target: %s\n", what);
    abort();
}

void fz_data_dir_remove(void)
{
    if (!fz_dir[0])
        return;
    DIR *d = opendir(fz_dir);
    if (d) {
        char path[PATH_MAX + 256];
        for (struct dirent *e; (e = readdir(d));) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof(path), "%s/%s", fz_dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(fz_dir);
    fz_dir[0] = '\0';
}

const char *fz_data_dir(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(fz_dir, sizeof(fz_dir), "%s/parley-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(fz_dir))
        fz_fail("cannot create a data directory");
    atexit(fz_data_dir_remove);
    return fz_dir;
}

void fz_svc_config(svc_config *cfg, const char *db_path)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->db_path = db_path;
    cfg->cost = PWHASH_MIN;
    cfg->store_workers = 1;
    cfg->auth_workers = 1;
    cfg->max_batch = 1024;
    cfg->recall_window_ms = 120 * 1000;
    cfg->max_friends = 1000;
    cfg->max_groups = 500;
    cfg->max_members = 2000;
    cfg->session_ttl_ms = (int64_t)30 * 86400000;
    cfg->sessions_per_user = 32;
    /* Files: small limits, so that a few inputs reach them (file_dir is
     * the target's to set). */
    cfg->max_file_size = 1024 * 1024;
    cfg->file_quota = 4 * 1024 * 1024;
    cfg->file_chunk_max = 60 * 1024;
}

int fz_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}
