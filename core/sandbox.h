/*
 * sandbox.h -- the restrictions `ckprep run` and `ckprep inspect` enter
 * before they parse a checkpoint (see sandbox.c for exactly what is kept).
 */
#ifndef CK_SANDBOX_H
#define CK_SANDBOX_H

#include "ck.h"
#include "conf.h"

#include <stddef.h>

typedef struct {
    const char *read[4];       /* files (or folders) left readable */
    size_t nread;
    const ck_conf_file_t *files; /* and these: what plugins declared */
    int read_fd;               /* and the file open on this (O_PATH), when
                                  > 0: the very inode a daemon's probe or
                                  job claimed, whatever its path names
                                  later */
    const char *read_fd_name;  /* that file's path, for messages */
    const char *write_dirs[2]; /* folders where files may be made, written,
                                  renamed and removed */
    size_t nwrite;
    int keep_fs;               /* ck_sandbox_enter: seccomp only (the
                                  daemon, whose folders a reload may
                                  change: ck_sandbox_run confines each
                                  probe and job instead) */
} ck_sandbox_t;

/*
 * Restricts the calling process for good: seccomp always, Landlock when
 * the kernel has it (one notice line when it has not).  A path that does
 * not exist gets no rule.  Returns 0, or a negative code with err set; on failure the
 * process may be partly restricted and should exit.
 */
int ck_sandbox_enter(const ck_sandbox_t *sb, ck_err_t *err);

/*
 * Runs fn(ud) on a thread of its own that first shrinks its file system,
 * and only its own, to sb's Landlock layer; waits for it.  The daemon's
 * probes and jobs run so: each gets the folders of the configuration it
 * runs under, while the process keeps what a reload may need.  The
 * seccomp layer entered at start is inherited, as by every thread.
 * Returns 0 once fn has run, or a negative code with err set when the
 * thread could not be made or restricted (fn has not run).  Without
 * Landlock in the kernel fn runs with the seccomp layer alone
 * (ck_sandbox_enter said so at start).
 */
int ck_sandbox_run(const ck_sandbox_t *sb, void (*fn)(void *), void *ud,
                   ck_err_t *err);

#endif
