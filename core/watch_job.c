/*
 * watch_job.c -- the daemon's jobs.  See watch_int.h.
 *
 * A queued file becomes a job_t: ck_job_run runs on the thread pool with
 * its own reference to the configuration; back on the loop the record goes
 * to the audit log and the input is kept, moved or deleted (a good job) or
 * moved to failed/ with NAME.error.json.  An input that changed, vanished
 * or was abandoned is looked at again, never filed as failed.
 */
#define _GNU_SOURCE
#include "watch_int.h"

#include "fsutil.h"
#include "job.h"
#include "log.h"
#include "record.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- jobs --------------------------------------------------------------- */

void watch_cref_put(cref_t *r)
{
    if (r != NULL && --r->refs == 0) {
        ck_conf_release(&r->c);
        ck_free(r);
    }
}

static void job_free(job_t *j)
{
    ck_json_release(&j->rec);
    ck_free(j->in);
    ck_free(j->out);
    ck_free(j->claim);
    watch_cref_put(j->cref);
    ck_free(j);
}

static void work_cb(uv_work_t *req)
{
    job_t *j = req->data;
    ck_job_args_t args = { .in = j->in, .out = j->out };

    args.cancel = &j->d->cancel;
    args.expect_set = 1;    /* the file claimed, not what is there now */
    args.expect_ino = j->id.ino;
    args.expect_size = j->id.size;
    args.expect_mtime_ns = j->id.mtime_ns;
    j->rc = ck_job_run(&j->cref->c, &args, &j->rec, &j->err);
}

/* Move the input of a failed job to failed/ with NAME.error.json. */
static void file_failed(daemon_t *d, job_t *j, const char *rec)
{
    char *dst = ck_path_join(d->w->failed, j->f->rel), *ej = NULL;
    struct stat st;
    ident_t now;
    size_t n;

    if (dst == NULL)
        goto out;
    /* only the file the job read (a folder swapped for a symlink would
     * otherwise move someone else's file) */
    if (lstat(j->in, &st) < 0 || (ident_of(&st, &now), !ident_eq(&now, &j->id))) {
        ck_log(CK_LOG_WARNING, "%s: not the file that failed any more; left "
               "in place", j->in);
        goto out;
    }
    n = strlen(dst);
    if (lstat(dst, &st) == 0) {     /* never overwrite an earlier failure */
        char *alt = ck_malloc(n + 32);

        if (alt == NULL)
            goto out;
        sprintf(alt, "%s.%llu", dst, (unsigned long long)d->audit.seq);
        ck_free(dst);
        dst = alt;
        n = strlen(dst);
    }
    ej = ck_malloc(n + sizeof(".error.json"));
    if (ej == NULL)
        goto out;
    sprintf(ej, "%s.error.json", dst);
    ck_mkdirs_parent(dst, 0750);
    {
        ck_buf_t b = { 0 };
        int rc;

        ck_buf_printf(&b, "%s\n", rec);
        rc = b.oom ? -ENOMEM : ck_write_atomic(ej, b.data, b.len, 0640);

        if (rc < 0)
            ck_log(CK_LOG_ERR, "%s: %s", ej, strerror(-rc));
        ck_buf_release(&b);
    }
    if (rename(j->in, dst) < 0)
        ck_log(CK_LOG_ERR, "%s: could not move to %s: %s", j->in, dst,
               strerror(errno));
    else
        ck_fsync_dir_of(dst);
out:
    ck_free(dst);
    ck_free(ej);
}

/* After a good job: keep, move or delete the input (in, rel under
 * incoming), if it is still the file the job read.  1 when it went. */
int watch_file_after(daemon_t *d, const char *rel, const char *in,
                      const ident_t *id)
{
    struct stat st;
    ident_t now;
    char *dst;
    int gone = 0;

    if (d->w->after == CK_AFTER_KEEP)
        return 0;
    if (lstat(in, &st) < 0)
        return -1;
    ident_of(&st, &now);
    if (!ident_eq(&now, id)) {
        ck_log(CK_LOG_WARNING, "%s changed while it was processed; left in "
               "place", in);
        return 0;
    }
    if (d->w->after == CK_AFTER_DELETE) {
        if (unlink(in) < 0) {
            ck_log(CK_LOG_ERR, "%s: %s", in, strerror(errno));
            return 0;
        }
        return 1;
    }
    dst = ck_path_join(d->w->done, rel);
    if (dst != NULL) {
        ck_mkdirs_parent(dst, 0750);
        if (rename(in, dst) < 0) {
            ck_log(CK_LOG_ERR, "%s: could not move to %s: %s", in, dst,
                   strerror(errno));
        } else {
            ck_fsync_dir_of(dst);
            gone = 1;
        }
    }
    ck_free(dst);
    return gone;
}

/* Did the input of a failed job go away (moved, deleted)?  Then there is
 * nothing to move to failed/. */
static int vanished(const job_t *j)
{
    struct stat st;

    return lstat(j->in, &st) < 0 && errno == ENOENT;
}

/* Is the input of j another file, or changed, since the job began? */
static int changed(const job_t *j)
{
    struct stat st;
    ident_t now;

    if (lstat(j->in, &st) < 0 || !S_ISREG(st.st_mode))
        return 0;
    ident_of(&st, &now);
    return !ident_eq(&now, &j->id);
}

static void after_work_cb(uv_work_t *req, int uvst)
{
    job_t *j = req->data;
    daemon_t *d = j->d;
    file_t *f = j->f;
    const char *rec = ck_json_text(&j->rec);
    ck_buf_t fallback = { 0 };
    ck_err_t e = { 0 };
    int gone = 0, logged = 1;

    if (rec == NULL) {      /* out of memory building it: a short one */
        ck_record_fallback(&fallback, j->in);
        rec = fallback.oom ? "{\"status\":\"failed\"}"
                           : (const char *)fallback.data;
        if (j->rc == 0)
            j->rc = CK_ENOMEM;
    }
    if (ck_audit_append(&d->audit, rec, &e) < 0) {
        ck_log(CK_LOG_ERR, "audit log: %s", e.msg);
        logged = 0;
    }
    if (j->rc == 0) {
        d->nok++;
        ck_log(CK_LOG_INFO, "%s -> %s", j->in, j->out);
        /* without its record, the input stays where it is */
        gone = logged && watch_file_after(d, f->rel, j->in, &j->id) > 0;
        f->state = F_DONE;
        if (gone)
            unlink(j->claim);
        else
            watch_claim_write(j->claim, d->host, "done", 0);
    } else if (j->rc == CK_ECANCELED) {
        ck_log(CK_LOG_WARNING, "%s: abandoned; it will be redone", j->in);
        f->state = F_OTHER;
        unlink(j->claim);
    } else if (vanished(j)) {
        ck_log(CK_LOG_NOTICE, "%s: gone before it could be processed", j->in);
        f->state = F_OTHER;
        unlink(j->claim);
    } else if (j->rc == CK_ECHANGED || changed(j)) {
        /* rewritten in place while read: the new content is not failed */
        ck_log(CK_LOG_WARNING, "%s: %s; it changed meanwhile: looking again",
               j->in, j->err.msg);
        f->state = F_OTHER;
        f->dirty = 1;
        unlink(j->claim);
    } else {
        d->nfailed++;
        ck_log(CK_LOG_WARNING, "%s: %s", j->in, j->err.msg);
        file_failed(d, j, rec);
        f->state = F_FAILED;
        unlink(j->claim);
    }
    f->done = j->id;
    for (size_t i = 0; i < d->nrunning; i++) {
        if (d->running[i] == j) {
            d->running[i] = d->running[--d->nrunning];
            break;
        }
    }
    if (f->dirty && !d->stopping) {
        f->dirty = 0;
        watch_set_pending(d, f, uv_now(d->loop));
    }
    ck_buf_release(&fallback);
    job_free(j);
    (void)uvst;
    watch_status(d);
    if (d->stopping)
        watch_maybe_exit(d);
    else
        watch_start_jobs(d);
}

static job_t *job_new(daemon_t *d, file_t *f)
{
    job_t *j = ck_calloc(1, sizeof(*j));

    if (j == NULL)
        return NULL;
    j->d = d;
    j->f = f;
    j->id = f->id;
    j->cref = d->cref;
    d->cref->refs++;
    j->in = ck_path_join(d->w->incoming, f->rel);
    j->claim = watch_claim_path(d, f->rel, &f->id);
    j->out = watch_out_path(d, f->rel);
    if (j->out != NULL) {
        char *slash = strrchr(j->out, '/');

        *slash = '\0';
        if (ck_mkdirs(j->out, 0750) < 0) {
            ck_free(j->out);
            j->out = NULL;
        } else {
            *slash = '/';
        }
    }
    if (j->in == NULL || j->claim == NULL || j->out == NULL) {
        job_free(j);
        return NULL;
    }
    j->req.data = j;
    return j;
}

void watch_start_jobs(daemon_t *d)
{
    while (!d->stopping && d->qhead != NULL && d->nrunning < d->w->workers) {
        file_t *f = d->qhead;
        job_t *j;

        d->qhead = f->qnext;
        if (d->qhead == NULL)
            d->qtail = NULL;
        d->nqueued--;
        if (f->dirty) {     /* changed while queued: its claim is stale */
            char *cp = watch_claim_path(d, f->rel, &f->id);

            if (cp != NULL)
                unlink(cp);
            ck_free(cp);
            f->dirty = 0;
            f->state = F_OTHER;
            watch_set_pending(d, f, uv_now(d->loop));
            continue;
        }
        j = job_new(d, f);
        if (j == NULL) {
            ck_log(CK_LOG_ERR, "%s: out of memory; will retry", f->rel);
            f->state = F_OTHER;
            watch_set_pending(d, f, uv_now(d->loop));
            break;
        }
        if (uv_queue_work(d->loop, &j->req, work_cb, after_work_cb) < 0) {
            unlink(j->claim);
            job_free(j);
            f->state = F_OTHER;
            watch_set_pending(d, f, uv_now(d->loop));
            break;
        }
        f->state = F_RUNNING;
        d->running[d->nrunning++] = j;
    }
    watch_status(d);
}

void watch_enqueue(daemon_t *d, file_t *f)
{
    watch_leave_pending(d, f, F_QUEUED);
    f->qnext = NULL;
    if (d->qtail != NULL)
        d->qtail->qnext = f;
    else
        d->qhead = f;
    d->qtail = f;
    d->nqueued++;
}
