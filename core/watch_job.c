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
#include <time.h>
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
    ck_free(j->rel);
    ck_free(j->in);
    ck_free(j->out);
    ck_free(j->claim);
    watch_cref_put(j->cref);
    ck_free(j);
}

/*
 * On the thread pool, once the input is open: the output's name (its
 * fingerprint may be in it), and what to do when the name is taken.
 */
static const char *name_cb(void *ud, const char *fingerprint, ck_err_t *err)
{
    job_t *j = ud;
    const ck_watch_conf_t *w = &j->cref->c.watch;
    ck_watch_name_vars_t v = { j->seq, j->id.mtime_ns, j->now_s, fingerprint };
    char *out = watch_out_path(w, j->rel, &v), *alt = NULL;
    struct stat st;

    if (out == NULL) {
        ck_err_set(err, CK_ENOMEM, "out of memory");
        return NULL;
    }
    if (w->on_output_exists == CK_EXISTS_REPLACE || lstat(out, &st) < 0)
        goto done;
    if (w->on_output_exists == CK_EXISTS_FAIL) {
        ck_err_set(err, -EEXIST, "output %s exists (on_output_exists = fail)",
                   out);
        ck_free(out);
        return NULL;
    }
    /* keep: NAME.1.EXT, NAME.2.EXT, ... the first not taken */
    alt = ck_malloc(strlen(out) + 24);
    for (unsigned n = 1; alt != NULL && n < 1000000; n++) {
        const char *ext = ck_path_ext(ck_path_base(out));

        sprintf(alt, "%.*s.%u%s", (int)(ext - out), out, n, ext);
        if (lstat(alt, &st) < 0 && errno == ENOENT) {
            ck_free(out);
            out = alt;
            alt = NULL;
            goto done;
        }
    }
    ck_free(alt);
    ck_free(out);
    ck_err_set(err, CK_ENOMEM, "no free output name");
    return NULL;
done:
    j->out = out;
    return out;
}

static void work_cb(uv_work_t *req)
{
    job_t *j = req->data;
    ck_job_args_t args = { .in = j->in, .out = NULL };

    /* queued -> running, for `ckprep status` */
    watch_claim_write(j->claim, &j->d->self, "running", 0);
    args.cancel = &j->d->cancel;
    args.expect_set = 1;    /* the file claimed, not what is there now */
    args.expect_ino = j->id.ino;
    args.expect_size = j->id.size;
    args.expect_mtime_ns = j->id.mtime_ns;
    args.name_out = name_cb;
    args.name_ud = j;
    j->rc = ck_job_run(&j->cref->c, &args, &j->rec, &j->err);
}

/*
 * ready = marker with a marker per file: it follows its input (rel) to the
 * folder root (failed/, done/), or is removed when root is NULL.  A
 * folder's one marker belongs to all its files and stays.
 */
static void marker_follow(daemon_t *d, const char *rel, const char *root)
{
    char m[4096], *src, *dst = NULL;

    if (d->w->ready != CK_READY_MARKER || strstr(d->w->marker, "{name}") ==
        NULL || ck_watch_marker_path(d->w->marker, rel, m, sizeof(m)) < 0)
        return;
    src = ck_path_join(d->w->incoming, m);
    if (src != NULL && root != NULL)
        dst = ck_path_join(root, m);
    if (src != NULL && root == NULL)
        unlink(src);
    else if (dst != NULL && ck_move(src, dst) < 0 && errno != ENOENT)
        ck_log(CK_LOG_WARNING, "%s: could not move to %s", src, dst);
    ck_free(src);
    ck_free(dst);
}

void watch_file_failed(daemon_t *d, const char *rel, const char *in,
                       const ident_t *id, const char *rec)
{
    char *dst = ck_path_join(d->w->failed, rel), *ej = NULL;
    struct stat st;
    ident_t now;
    size_t n;
    int rc;

    if (dst == NULL)
        goto out;
    /* only the file the job read (a folder swapped for a symlink would
     * otherwise move someone else's file) */
    if (lstat(in, &st) < 0 || (ident_of(&st, &now), !ident_eq(&now, id))) {
        ck_log(CK_LOG_WARNING, "%s: not the file that failed any more; left "
               "in place", in);
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

        ck_buf_printf(&b, "%s\n", rec);
        rc = b.oom ? -ENOMEM : ck_write_atomic(ej, b.data, b.len, 0640);

        if (rc < 0)
            ck_log(CK_LOG_ERR, "%s: %s", ej, strerror(-rc));
        ck_buf_release(&b);
    }
    rc = ck_move(in, dst);
    if (rc < 0)
        ck_log(CK_LOG_ERR, "%s: could not move to %s: %s", in, dst,
               strerror(-rc));
    else
        marker_follow(d, rel, d->w->failed);
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
        marker_follow(d, rel, NULL);
        return 1;
    }
    dst = ck_path_join(d->w->done, rel);
    if (dst != NULL) {
        int rc;

        ck_mkdirs_parent(dst, 0750);
        rc = ck_move(in, dst);
        if (rc < 0) {
            ck_log(CK_LOG_ERR, "%s: could not move to %s: %s", in, dst,
                   strerror(-rc));
        } else {
            marker_follow(d, rel, d->w->done);
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
        watch_metrics_job(d, rec);
        ck_log(CK_LOG_INFO, "%s -> %s", j->in, j->out ? j->out : "?");
        /* without its record, the input stays where it is */
        gone = logged && watch_file_after(d, f->rel, j->in, &j->id) > 0;
        f->state = F_DONE;
        if (gone)
            unlink(j->claim);
        else
            watch_claim_write(j->claim, &d->self, "done", 0);
        if (f->done.size != 0 && !ident_eq(&f->done, &j->id)) {
            /* the done claim of what this input replaced */
            char *old = watch_claim_path(d, f->rel, &f->done);

            if (old != NULL)
                unlink(old);
            ck_free(old);
        }
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
        watch_metrics_job(d, rec);
        ck_log(CK_LOG_WARNING, "%s: %s", j->in, j->err.msg);
        watch_file_failed(d, f->rel, j->in, &j->id, rec);
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
    char *odir;
    int made = 0;

    if (j == NULL)
        return NULL;
    j->d = d;
    j->f = f;
    j->id = f->id;
    j->cref = d->cref;
    d->cref->refs++;
    j->rel = ck_strdup(f->rel);
    j->in = ck_path_join(d->w->incoming, f->rel);
    j->claim = watch_claim_path(d, f->rel, &f->id);
    if (d->jobseq < d->audit.seq)
        d->jobseq = d->audit.seq;
    j->seq = ++d->jobseq;
    j->now_s = (int64_t)time(NULL);
    odir = watch_out_path(d->w, f->rel, NULL);
    if (odir != NULL) {
        *strrchr(odir, '/') = '\0';
        made = ck_mkdirs(odir, 0750) == 0;
    }
    ck_free(odir);
    if (j->rel == NULL || j->in == NULL || j->claim == NULL || !made) {
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
