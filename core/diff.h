/*
 * diff.h -- `ckprep diff A B`: what changed between two checkpoints,
 * decided from their pickles and zip directories (record sizes and
 * CRC-32s), reading tensor bytes only with --exact and only where the
 * directories cannot decide.
 */
#ifndef CK_DIFF_H
#define CK_DIFF_H

#include "ckpt.h"

#include <stdio.h>

typedef struct {
    int json;  /* one JSON document */
    int stat;  /* one line per state dict */
    int exact; /* compare bytes where the CRCs cannot decide */
    const ck_open_opts_t *open; /* limits and allowed globals
                                   (ck_conf_open_opts) */
} ck_diff_opts_t;

/*
 * Open a and b, compare them and print the difference to out.  Returns the
 * exit status diff(1) gives: 0 same, 1 different (or content that could
 * not be compared without --exact), 2 trouble (a message on stderr).
 */
int ck_diff_main(const char *a, const char *b, const ck_diff_opts_t *o,
                 FILE *out);

#endif
