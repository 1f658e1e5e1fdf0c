/*
 * fsutil.h -- small file-system helpers shared by the command line, the job
 * and the daemon: splitting a path into folder, stem and extension, joining
 * paths, making folders, syncing a folder, and writing a small file
 * atomically.  Nothing here knows checkpoints or configurations.
 *
 * Functions that fail return a negative errno (-ENOMEM included); strings
 * they return come from ck_malloc and are the caller's to ck_free.
 */
#ifndef CK_FSUTIL_H
#define CK_FSUTIL_H

#include "ck.h"

#include <sys/types.h>

/* The file name in path: what follows its last '/', or path itself. */
const char *ck_path_base(const char *path);

/*
 * The extension of the file name base: from its last '.' to the end, or
 * the end of base (an empty string) when it has none.  A leading dot is not
 * an extension: ".bashrc" has none, "model.th" has ".th".  The stem is what
 * comes before: base up to the returned pointer.
 */
const char *ck_path_ext(const char *base);

/* "a/b"; a alone when b is empty, b alone when a is.  NULL when out of
 * memory. */
char *ck_path_join(const char *a, const char *b);

/* mkdir -p path (each missing folder made with mode): 0 or -errno. */
int ck_mkdirs(const char *path, mode_t mode);

/* ck_mkdirs of the folder path is in ("." when it has no '/'). */
int ck_mkdirs_parent(const char *path, mode_t mode);

/* fsync the folder dir itself (allocates nothing): 0 or -errno; a file
 * system that cannot sync folders (EINVAL) counts as done. */
int ck_fsync_dir(const char *dir);

/* fsync the folder path is in, so a rename or create there is durable. */
int ck_fsync_dir_of(const char *path);

/*
 * fsync each of the n files at paths (never through a symlink), several at
 * once: concurrent fsyncs share the file system's journal commits and the
 * disk's cache flushes, where one after the other each waits for its own.
 * rc[i] gets 0 or -errno.  Each file is synced as fsync(2) promises; only
 * the waiting is shared.
 */
void ck_fsync_many(const char *const *paths, int *rc, size_t n);

/*
 * Write n bytes at p to path atomically: a temporary PATH.tmp.PID beside it
 * (mode, never through a symlink), fsync, rename over path, fsync the
 * folder.  On failure the temporary is removed and path is as it was.
 */
int ck_write_atomic(const char *path, const void *p, size_t n, mode_t mode);

/* What ck_write_replace syncs. */
enum { CK_SYNC_DATA = 1, CK_SYNC_DIR = 2 };

/* ck_write_atomic syncing only what sync says (CK_SYNC_DATA: the file
 * before the rename; CK_SYNC_DIR: the folder after it): the rename is
 * atomic either way, its durability is the caller's choice. */
int ck_write_replace(const char *path, const void *p, size_t n, mode_t mode,
                     int sync);

/*
 * Move the regular file src to dst (replacing dst), durably: rename and
 * fsync both folders; across file systems (EXDEV) copy to a temporary
 * DST.tmp.PID beside dst, fsync it, rename it over dst, fsync dst's
 * folder, then unlink src and fsync its folder.  Either dst is the whole
 * file or it is as it was; src goes only once dst is durable.  0 or -errno.
 */
int ck_move(const char *src, const char *dst);

#endif
