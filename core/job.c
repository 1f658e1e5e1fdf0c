/*
 * job.c -- the job: input -> validated model -> chain -> atomic output, and
 * its record.  The model's arena is the job arena: everything a job and its
 * plugins allocate is freed at once when the job ends.
 */
#include "job.h"

#include "fsutil.h"
#include "record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void rfc3339(char *buf, size_t n)
{
    struct timespec ts;
    struct tm tm;
    size_t len;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    len = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + len, n - len, ".%03ldZ", ts.tv_nsec / 1000000);
}

char *ck_job_default_out(const char *in)
{
    const char *dot = ck_path_ext(ck_path_base(in));
    size_t stem = (size_t)(dot - in);
    char *out = ck_malloc(strlen(in) + sizeof(".prep"));

    if (out == NULL)
        return NULL;
    memcpy(out, in, stem);
    strcpy(out + stem, ".prep");
    strcat(out, dot);
    return out;
}

static int run_chain(ck_job_t *job, ck_json_t *plugins)
{
    const ck_conf_t *conf = job->conf;
    int rc = 0;

    for (size_t i = 0; i < conf->nchain && rc == 0; i++) {
        const ck_stage_t *st = &conf->chain[i];
        ck_json_t changes = { 0 };
        int64_t t0 = now_ms();

        ck_json_arr(&changes);
        job->changes = &changes;
        rc = st->plugin->run(job, st->conf);
        if (rc == 0)
            rc = ck_ckpt_scan(&job->ck, job->err);
        ck_json_end(&changes);
        ck_json_obj(plugins);
        ck_json_key(plugins, "name");
        ck_json_str(plugins, st->plugin->name);
        ck_json_key(plugins, "label");
        ck_json_str(plugins, st->label);
        ck_json_key(plugins, "duration_ms");
        ck_json_int(plugins, now_ms() - t0);
        ck_json_key(plugins, "changes");
        ck_json_raw(plugins, (const char *)changes.b.data, changes.b.len);
        if (rc < 0) {
            ck_json_key(plugins, "error");
            ck_json_str(plugins, job->err->msg);
        }
        ck_json_end(plugins);
        if (changes.b.oom)
            rc = ck_err_set(job->err, CK_ENOMEM, "out of memory");
        ck_json_release(&changes);
        job->changes = NULL;
    }
    return rc;
}

int ck_job_run(const ck_conf_t *conf, const ck_job_args_t *args,
               ck_json_t *rec, ck_err_t *err)
{
    ck_job_t job;
    ck_open_opts_t opts;
    ck_write_info_t info = { 0 };
    ck_json_t plugins = { 0 };
    int64_t t0 = now_ms();
    char ts[40];
    int rc, wrote = 0;

    memset(&job, 0, sizeof(job));
    job.conf = conf;
    job.err = err;
    job.dry_run = args->dry_run;
    rfc3339(ts, sizeof(ts));
    ck_conf_limits(conf, &opts.lim);
    opts.allow = conf->allow;
    ck_json_arr(&plugins);
    rc = ck_ckpt_open(&job.ck, args->in, &opts, err);
    job.ck.cancel = args->cancel;
    if (job.ck.fd >= 0 && args->expect_set &&
        ((uint64_t)job.ck.st.ino != args->expect_ino ||
         job.ck.st.size != args->expect_size ||
         job.ck.st.mtime_ns != args->expect_mtime_ns)) {
        memset(err, 0, sizeof(*err));
        rc = ck_err_set(err, CK_ECHANGED,
                        "not the file that was claimed (replaced meanwhile)");
    }
    if (rc == 0)
        rc = run_chain(&job, &plugins);
    if (rc == 0 && !args->dry_run && args->out != NULL) {
        /* room for the whole record first: once the output exists, writing
         * its record must not fail (strings escape to at most 6 bytes each) */
        size_t room = plugins.b.len + 1024 +
                      6 * (strlen(args->in) + strlen(args->out) +
                           strlen(conf->path) + sizeof(err->msg));

        if (ck_buf_reserve(&plugins.b, 1) < 0 ||
            ck_buf_reserve(&rec->b, room) < 0 ||
            ck_buf_reserve(&rec->levels, 8) < 0)
            rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        else
            rc = ck_ckpt_write(&job.ck, args->out, &info, err);
        wrote = rc == 0;
    }
    ck_json_end(&plugins);

    {
        ck_record_t r = { 0 };

        r.ts = ts;
        r.version = CK_VERSION;
        r.in.path = args->in;
        r.in.size = job.ck.st.size;
        r.in.digest = job.ck.fingerprint;
        r.in.opened = job.ck.fd >= 0;
        r.in.inode = (uint64_t)job.ck.st.ino;
        r.in.mtime_ns = job.ck.st.mtime_ns;
        r.in.format = job.ck.format == CK_FMT_ZIP ? "zip" : "legacy";
        r.wrote = wrote;
        r.out.path = args->out;
        r.out.size = info.size;
        r.out.digest = info.fingerprint;
        r.out.storages = info.nstorages;
        r.out.storage_bytes = info.storage_bytes;
        r.status = rc == 0 ? "ok" : "failed";
        r.error_code = rc < 0 ? ck_errname(rc) : NULL;
        r.error_message = err->msg;
        r.dry_run = args->dry_run;
        r.duration_ms = now_ms() - t0;
        r.config_path = conf->path;
        r.config_digest = conf->digest;
        r.plugins = (const char *)plugins.b.data;
        r.plugins_len = plugins.b.len;
        ck_record_build(rec, &r);
    }
    ck_json_release(&plugins);
    ck_ckpt_close(&job.ck);
    return rc;
}
