/*
 * job.h -- one checkpoint through the configured chain: open and validate
 * the input, run each plugin, write the output atomically, and describe all
 * of it in one JSON record.  `ckprep run` and the daemon share this code.
 */
#ifndef CK_JOB_H
#define CK_JOB_H

#include "ckpt.h"
#include "conf.h"
#include "json.h"

/* Core's view of a job; plugins see it through plugin.h's functions. */
struct ck_job {
    ck_ckpt_t ck;          /* the checkpoint model plugins change */
    const ck_conf_t *conf;
    const ck_stage_t *stage; /* the running one, named in its errors */
    ck_json_t *changes;    /* the running plugin's "changes" array */
    ck_json_t *warnings;   /* the running plugin's "warnings" (NULL: none
                              kept) */
    size_t nwarnings;      /* in warnings */
    ck_err_t *err;         /* where a plugin records why it failed */
    int dry_run;
    void (*warn)(void *ud, const char *msg); /* optional, as they come */
    void *warn_ud;
    int scan_later;        /* set: the stage leaves its scan to whoever
                              next looks at tensors or storages (ck.stale) */
};

/*
 * Run one stage of the chain over job's model as ck_job_run does: the
 * plugin's run, then a scan of the changed graph (with scan_later set,
 * the model is marked stale instead: ck_job_run scans after the last stage
 * only, and the plugin API scans a stale model before it answers about
 * tensors or storages).  Its changes go to changes (an open JSON array).
 * Returns 0 or the error recorded in job->err.
 */
int ck_job_run_stage(ck_job_t *job, const ck_stage_t *st, ck_json_t *changes);

typedef struct {
    const char *in;
    const char *out;       /* NULL: nothing is written (dry run) */
    int stream_in;         /* the input is read from in_fd (a pipe) in one
                              pass (ck_ckpt_open_stream); in names it */
    int stream_out;        /* the output is written to out_fd in one pass
                              (ck_ckpt_write_fd); out names it */
    int in_fd, out_fd;
    int dry_run;
    const int *cancel;     /* optional: nonzero abandons the write */
    const ck_yield_t *yield; /* optional: the output gives way to other
                              jobs' syncs (see ck_yield_t) */
    /* optional: called with each warning ("PLUGIN: message") as it comes */
    void (*warn)(void *ud, const char *msg);
    void *warn_ud;
    /* optional: the input must be this file (inode, size, mtime), or the
     * job fails with CK_ECHANGED before doing anything */
    int expect_set;
    uint64_t expect_ino, expect_size;
    int64_t expect_mtime_ns;
    /* optional, with out NULL: names the output once the input is open,
     * from its fingerprint (hex; waited for unless name_no_fp); returns
     * the path (the caller's, alive until ck_job_run returns), or NULL
     * with err set to fail the job */
    const char *(*name_out)(void *ud, const char *fingerprint, ck_err_t *err);
    void *name_ud;
    int name_no_fp; /* name_out does not read the fingerprint: passed ""
                       while a big pickle's is still being made */
    /* optional: an output of at most CK_JOB_DEFER_MAX bytes is written as
     * a temporary beside it and left there, its path in *defer_tmp
     * (ck_malloc), for the caller to sync and rename over the output (and
     * sync the folder), or unlink: the record already says the output is
     * written.  A bigger output is published here (*defer_tmp NULL). */
    char **defer_tmp;
    int defer_all;         /* with defer_tmp: whatever the output's size */
} ck_job_args_t;

#define CK_JOB_DEFER_MAX (16u << 20)

/*
 * Run one job and append its record (one JSON object) to rec.  Returns 0 or
 * the job's error code; err holds the one-line cause without the file name.
 */
int ck_job_run(const ck_conf_t *conf, const ck_job_args_t *args,
               ck_json_t *rec, ck_err_t *err);

/*
 * The record of a job that failed before it could start (its input was
 * replaced, or its sandbox could not be entered): nothing opened, the
 * input's size as claimed, status failed with err.
 */
void ck_job_record_failed(const ck_conf_t *conf, const char *in,
                          uint64_t size, ck_json_t *rec, const ck_err_t *err);

/* The default output path: <dir>/<stem>.prep<ext>, in a new ck_malloc
 * string; ext NULL keeps the input's (".safetensors" for that output). */
char *ck_job_default_out(const char *in, const char *ext);

#endif
