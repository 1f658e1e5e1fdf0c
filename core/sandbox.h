/*
 * sandbox.h -- the restrictions `ckprep run` and `ckprep inspect` enter
 * before they parse a checkpoint (see sandbox.c for exactly what is kept).
 */
#ifndef CK_SANDBOX_H
#define CK_SANDBOX_H

#include "ck.h"

#include <stddef.h>

typedef struct {
    const char *read[16];      /* files (or folders) left readable */
    size_t nread;
    const char *write_dirs[2]; /* folders where files may be made, written,
                                  renamed and removed */
    size_t nwrite;
    int keep_fs;               /* seccomp only, no Landlock (the daemon,
                                  whose folders a reload may change) */
} ck_sandbox_t;

/*
 * Restricts the calling process for good: seccomp always, Landlock when
 * the kernel has it (one notice line when it has not).  A path that does
 * not exist gets no rule.  Returns 0, or a negative code with err set; on failure the
 * process may be partly restricted and should exit.
 */
int ck_sandbox_enter(const ck_sandbox_t *sb, ck_err_t *err);

#endif
