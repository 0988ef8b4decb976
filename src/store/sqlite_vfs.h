/*
 * sqlite_vfs: an SQLite VFS that gathers the writes of a commit to the WAL
 * into one buffer and hands them to the kernel in a few large pwrites.
 *
 * SQLite writes each WAL frame with two pwrite calls (its 24-byte header,
 * then the page), so a commit of 500 pages cost 1,000 system calls. The
 * buffer is written out before any other call on the file (read, sync, size,
 * lock, and the shared-memory barrier that publishes a commit to other
 * connections), so nobody, in this process or another, can see a frame the
 * kernel has not been given. What reaches the disk, and when, is unchanged.
 */
#ifndef PARLEY_SQLITE_VFS_H
#define PARLEY_SQLITE_VFS_H

/* The name to open databases with (sqlite3_open_v2's zVfs). */
#define SQLITE_VFS_NAME "parley"

/* Registers the VFS over the default one; once per process, before use.
 * SQLITE_OK or an SQLite error code. */
int sqlite_vfs_register(void);

#endif
