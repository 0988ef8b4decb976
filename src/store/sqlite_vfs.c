/*
 * sqlite_vfs: the default VFS, with each WAL file's contiguous writes
 * gathered in a buffer (see sqlite_vfs.h). A database file is wrapped too:
 * SQLite publishes a commit through the database file's shared memory (the
 * header of the wal-index, behind xShmBarrier), so every shared-memory call
 * there first flushes its WAL's buffer. Other files (journals, temporary
 * files) are the default VFS's own, untouched.
 *
 * The VFS is registered once per process: SQLite's VFS list is global.
 */
#include "store/sqlite_vfs.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

/* The buffer starts small and doubles as commits need: the handles that
 * write a row now and then (logins, registrations) keep 64 KiB, the one
 * that stores messages grows to 1 MiB. */
enum { WAL_BUF_MIN = 1 << 16, WAL_BUF_SIZE = 1 << 20, WAL_WRITE_MAX = 1 << 16 };

typedef struct wal_file {
    sqlite3_file base;     /* first: what SQLite holds; wal_methods or db_methods */
    sqlite3_file *real;    /* the default VFS's file, in the memory after this */
    struct wal_file *peer; /* a database's open WAL, a WAL's database */
    unsigned char *buf;    /* a WAL's pending bytes, for [at, at + len) */
    sqlite3_int64 at;
    size_t len, cap;
} wal_file;

static sqlite3_vfs *vfs_base;

static int wal_flush(wal_file *f)
{
    if (!f || f->len == 0)
        return SQLITE_OK;
    /* The default VFS writes at most 128 KiB - 1 per call (and calls the
     * rest a full disk): hand it 64 KiB at a time. */
    int rc = SQLITE_OK;
    for (size_t done = 0; done < f->len && rc == SQLITE_OK; done += WAL_WRITE_MAX) {
        size_t n = f->len - done < WAL_WRITE_MAX ? f->len - done : WAL_WRITE_MAX;
        rc = f->real->pMethods->xWrite(f->real, f->buf + done, (int)n, f->at + (sqlite3_int64)done);
    }
    f->len = 0;
    return rc;
}

static int wal_write(sqlite3_file *file, const void *p, int n, sqlite3_int64 off)
{
    wal_file *f = (wal_file *)file;
    /* Only a WAL whose database can flush it may hold bytes back. */
    if (!f->peer)
        return f->real->pMethods->xWrite(f->real, p, n, off);
    if (f->len && off != f->at + (sqlite3_int64)f->len) {
        int rc = wal_flush(f);
        if (rc != SQLITE_OK)
            return rc;
    }
    if (f->len + (size_t)n > f->cap && f->cap < WAL_BUF_SIZE) {
        size_t cap = f->cap ? f->cap : WAL_BUF_MIN;
        while (cap < f->len + (size_t)n && cap < WAL_BUF_SIZE)
            cap *= 2;
        unsigned char *nb = realloc(f->buf, cap);
        if (nb) {
            f->buf = nb;
            f->cap = cap;
        }
    }
    if (f->len + (size_t)n > f->cap) {
        int rc = wal_flush(f);
        if (rc != SQLITE_OK)
            return rc;
    }
    if (!f->buf || (size_t)n > f->cap)
        return f->real->pMethods->xWrite(f->real, p, n, off);
    if (f->len == 0)
        f->at = off;
    memcpy(f->buf + f->len, p, (size_t)n);
    f->len += (size_t)n;
    return SQLITE_OK;
}

/* Every other call first hands the buffer over: a write error surfaces on
 * the next call, as a failed write of SQLite's own would. */
#define WAL_FLUSH_OR_FAIL(f)                                                                       \
    do {                                                                                           \
        int rc_ = wal_flush(f);                                                                    \
        if (rc_ != SQLITE_OK)                                                                      \
            return rc_;                                                                            \
    } while (0)

static int wal_close(sqlite3_file *file)
{
    wal_file *f = (wal_file *)file;
    int rc = wal_flush(f);
    int rc2 = f->real->pMethods->xClose(f->real);
    if (f->peer)
        f->peer->peer = NULL;
    free(f->buf);
    f->buf = NULL;
    f->cap = 0;
    return rc != SQLITE_OK ? rc : rc2;
}

static int wal_read(sqlite3_file *file, void *p, int n, sqlite3_int64 off)
{
    wal_file *f = (wal_file *)file;
    WAL_FLUSH_OR_FAIL(f);
    return f->real->pMethods->xRead(f->real, p, n, off);
}

static int wal_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    wal_file *f = (wal_file *)file;
    WAL_FLUSH_OR_FAIL(f);
    return f->real->pMethods->xTruncate(f->real, size);
}

static int wal_sync(sqlite3_file *file, int flags)
{
    wal_file *f = (wal_file *)file;
    WAL_FLUSH_OR_FAIL(f);
    return f->real->pMethods->xSync(f->real, flags);
}

static int wal_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    wal_file *f = (wal_file *)file;
    WAL_FLUSH_OR_FAIL(f);
    return f->real->pMethods->xFileSize(f->real, size);
}

static int wal_lock(sqlite3_file *file, int level)
{
    wal_file *f = (wal_file *)file;
    WAL_FLUSH_OR_FAIL(f);
    return f->real->pMethods->xLock(f->real, level);
}

static int wal_unlock(sqlite3_file *file, int level)
{
    wal_file *f = (wal_file *)file;
    WAL_FLUSH_OR_FAIL(f);
    return f->real->pMethods->xUnlock(f->real, level);
}

static int wal_check_reserved(sqlite3_file *file, int *out)
{
    wal_file *f = (wal_file *)file;
    WAL_FLUSH_OR_FAIL(f);
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int wal_file_control(sqlite3_file *file, int op, void *arg)
{
    wal_file *f = (wal_file *)file;
    WAL_FLUSH_OR_FAIL(f);
    return f->real->pMethods->xFileControl(f->real, op, arg);
}

static int wal_sector_size(sqlite3_file *file)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xSectorSize(f->real);
}

static int wal_device_characteristics(sqlite3_file *file)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xDeviceCharacteristics(f->real);
}

/* A WAL file has no shared memory or mapping of its own (the database file
 * does); these are here for completeness and flush like the rest. */
static int wal_shm_map(sqlite3_file *file, int page, int size, int extend, void volatile **p)
{
    wal_file *f = (wal_file *)file;
    WAL_FLUSH_OR_FAIL(f);
    return f->real->pMethods->xShmMap(f->real, page, size, extend, p);
}

static int wal_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
    wal_file *f = (wal_file *)file;
    WAL_FLUSH_OR_FAIL(f);
    return f->real->pMethods->xShmLock(f->real, offset, n, flags);
}

static void wal_shm_barrier(sqlite3_file *file)
{
    wal_file *f = (wal_file *)file;
    wal_flush(f);
    f->real->pMethods->xShmBarrier(f->real);
}

static int wal_shm_unmap(sqlite3_file *file, int del)
{
    wal_file *f = (wal_file *)file;
    WAL_FLUSH_OR_FAIL(f);
    return f->real->pMethods->xShmUnmap(f->real, del);
}

static int wal_fetch(sqlite3_file *file, sqlite3_int64 off, int n, void **p)
{
    wal_file *f = (wal_file *)file;
    WAL_FLUSH_OR_FAIL(f);
    return f->real->pMethods->xFetch(f->real, off, n, p);
}

static int wal_unfetch(sqlite3_file *file, sqlite3_int64 off, void *p)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xUnfetch(f->real, off, p);
}

static const sqlite3_io_methods wal_methods = {
    .iVersion = 3,
    .xClose = wal_close,
    .xRead = wal_read,
    .xWrite = wal_write,
    .xTruncate = wal_truncate,
    .xSync = wal_sync,
    .xFileSize = wal_file_size,
    .xLock = wal_lock,
    .xUnlock = wal_unlock,
    .xCheckReservedLock = wal_check_reserved,
    .xFileControl = wal_file_control,
    .xSectorSize = wal_sector_size,
    .xDeviceCharacteristics = wal_device_characteristics,
    .xShmMap = wal_shm_map,
    .xShmLock = wal_shm_lock,
    .xShmBarrier = wal_shm_barrier,
    .xShmUnmap = wal_shm_unmap,
    .xFetch = wal_fetch,
    .xUnfetch = wal_unfetch,
};

/* ---- a database file: the default's, but shared memory flushes its WAL ---- */

static int db_close(sqlite3_file *file)
{
    wal_file *f = (wal_file *)file;
    if (f->peer)
        f->peer->peer = NULL;
    return f->real->pMethods->xClose(f->real);
}

static int db_read(sqlite3_file *file, void *p, int n, sqlite3_int64 off)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xRead(f->real, p, n, off);
}

static int db_write(sqlite3_file *file, const void *p, int n, sqlite3_int64 off)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xWrite(f->real, p, n, off);
}

static int db_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xTruncate(f->real, size);
}

static int db_sync(sqlite3_file *file, int flags)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xSync(f->real, flags);
}

static int db_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xFileSize(f->real, size);
}

static int db_lock(sqlite3_file *file, int level)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xLock(f->real, level);
}

static int db_unlock(sqlite3_file *file, int level)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xUnlock(f->real, level);
}

static int db_check_reserved(sqlite3_file *file, int *out)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int db_file_control(sqlite3_file *file, int op, void *arg)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xFileControl(f->real, op, arg);
}

static int db_shm_map(sqlite3_file *file, int page, int size, int extend, void volatile **p)
{
    wal_file *f = (wal_file *)file;
    WAL_FLUSH_OR_FAIL(f->peer);
    return f->real->pMethods->xShmMap(f->real, page, size, extend, p);
}

static int db_shm_lock(sqlite3_file *file, int offset, int n, int flags)
{
    wal_file *f = (wal_file *)file;
    WAL_FLUSH_OR_FAIL(f->peer);
    return f->real->pMethods->xShmLock(f->real, offset, n, flags);
}

/* SQLite calls this between the two copies of the wal-index header it
 * writes at each commit: the frames must be in the file before readers can
 * find them. */
static void db_shm_barrier(sqlite3_file *file)
{
    wal_file *f = (wal_file *)file;
    wal_flush(f->peer);
    f->real->pMethods->xShmBarrier(f->real);
}

static int db_shm_unmap(sqlite3_file *file, int del)
{
    wal_file *f = (wal_file *)file;
    wal_flush(f->peer);
    return f->real->pMethods->xShmUnmap(f->real, del);
}

static int db_fetch(sqlite3_file *file, sqlite3_int64 off, int n, void **p)
{
    wal_file *f = (wal_file *)file;
    return f->real->pMethods->xFetch(f->real, off, n, p);
}

static const sqlite3_io_methods db_methods = {
    .iVersion = 3,
    .xClose = db_close,
    .xRead = db_read,
    .xWrite = db_write,
    .xTruncate = db_truncate,
    .xSync = db_sync,
    .xFileSize = db_file_size,
    .xLock = db_lock,
    .xUnlock = db_unlock,
    .xCheckReservedLock = db_check_reserved,
    .xFileControl = db_file_control,
    .xSectorSize = wal_sector_size,
    .xDeviceCharacteristics = wal_device_characteristics,
    .xShmMap = db_shm_map,
    .xShmLock = db_shm_lock,
    .xShmBarrier = db_shm_barrier,
    .xShmUnmap = db_shm_unmap,
    .xFetch = db_fetch,
    .xUnfetch = wal_unfetch,
};

static int vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags,
                    int *out_flags)
{
    (void)vfs;
    int wal = (flags & SQLITE_OPEN_WAL) != 0;
    if (!wal && !(flags & SQLITE_OPEN_MAIN_DB))
        return vfs_base->xOpen(vfs_base, name, file, flags, out_flags);
    wal_file *f = (wal_file *)file;
    memset(f, 0, sizeof(*f));
    f->real = (sqlite3_file *)(f + 1);
    int rc = vfs_base->xOpen(vfs_base, name, f->real, flags, out_flags);
    /* On failure pMethods stays NULL and SQLite does not call xClose. */
    if (rc != SQLITE_OK || !f->real->pMethods)
        return rc;
    f->base.pMethods = wal ? &wal_methods : &db_methods;
    if (wal) {
        /* The database this WAL belongs to, opened through this VFS. */
        sqlite3_file *db = sqlite3_database_file_object(name);
        if (db && db->pMethods == &db_methods) {
            f->peer = (wal_file *)db;
            f->peer->peer = f;
        }
    }
    return rc;
}

/* The rest is the default VFS's, called with its own handle. */
static int vfs_delete(sqlite3_vfs *v, const char *name, int sync_dir)
{
    (void)v;
    return vfs_base->xDelete(vfs_base, name, sync_dir);
}

static int vfs_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    (void)v;
    return vfs_base->xAccess(vfs_base, name, flags, out);
}

static int vfs_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out)
{
    (void)v;
    return vfs_base->xFullPathname(vfs_base, name, n, out);
}

static void *vfs_dl_open(sqlite3_vfs *v, const char *name)
{
    (void)v;
    return vfs_base->xDlOpen(vfs_base, name);
}

static void vfs_dl_error(sqlite3_vfs *v, int n, char *msg)
{
    (void)v;
    vfs_base->xDlError(vfs_base, n, msg);
}

static void (*vfs_dl_sym(sqlite3_vfs *v, void *h, const char *sym))(void)
{
    (void)v;
    return vfs_base->xDlSym(vfs_base, h, sym);
}

static void vfs_dl_close(sqlite3_vfs *v, void *h)
{
    (void)v;
    vfs_base->xDlClose(vfs_base, h);
}

static int vfs_randomness(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return vfs_base->xRandomness(vfs_base, n, out);
}

static int vfs_sleep(sqlite3_vfs *v, int us)
{
    (void)v;
    return vfs_base->xSleep(vfs_base, us);
}

static int vfs_current_time(sqlite3_vfs *v, double *t)
{
    (void)v;
    return vfs_base->xCurrentTime(vfs_base, t);
}

static int vfs_last_error(sqlite3_vfs *v, int n, char *msg)
{
    (void)v;
    return vfs_base->xGetLastError ? vfs_base->xGetLastError(vfs_base, n, msg) : 0;
}

static int vfs_current_time64(sqlite3_vfs *v, sqlite3_int64 *t)
{
    (void)v;
    if (vfs_base->iVersion >= 2 && vfs_base->xCurrentTimeInt64)
        return vfs_base->xCurrentTimeInt64(vfs_base, t);
    double d;
    int rc = vfs_base->xCurrentTime(vfs_base, &d);
    *t = (sqlite3_int64)(d * 86400000.0);
    return rc;
}

static sqlite3_vfs vfs_parley = {
    .iVersion = 2,
    .zName = SQLITE_VFS_NAME,
    .xOpen = vfs_open,
    .xDelete = vfs_delete,
    .xAccess = vfs_access,
    .xFullPathname = vfs_full_pathname,
    .xDlOpen = vfs_dl_open,
    .xDlError = vfs_dl_error,
    .xDlSym = vfs_dl_sym,
    .xDlClose = vfs_dl_close,
    .xRandomness = vfs_randomness,
    .xSleep = vfs_sleep,
    .xCurrentTime = vfs_current_time,
    .xGetLastError = vfs_last_error,
    .xCurrentTimeInt64 = vfs_current_time64,
};

int sqlite_vfs_register(void)
{
    if (sqlite3_vfs_find(SQLITE_VFS_NAME))
        return SQLITE_OK;
    vfs_base = sqlite3_vfs_find(NULL);
    if (!vfs_base)
        return SQLITE_ERROR;
    vfs_parley.szOsFile = (int)sizeof(wal_file) + vfs_base->szOsFile;
    vfs_parley.mxPathname = vfs_base->mxPathname;
    return sqlite3_vfs_register(&vfs_parley, 0);
}
