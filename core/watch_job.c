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
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- jobs --------------------------------------------------------------- */

/*
 * A small job's output, directory and record are synced as it is
 * published, and each sync waits for the disk to take everything written
 * before it: a big job beside it makes its output durable as it grows
 * while small ones are in flight, so they wait for 8 MiB of it, not for
 * gigabytes (p99 of a small file beside a 3 GiB job: see bench/RESULTS.md).
 * And for a second after the last: small files come in trickles, and the
 * gaps between them were enough for a big job to pile up 30 MiB.
 */
#define YIELD_LINGER_MS 1000

static void linger_cb(uv_timer_t *t)
{
    daemon_t *d = t->data;

    if (d->nsmall == 0)
        __atomic_store_n(&d->yield.sync, 0, __ATOMIC_RELAXED);
}

static void small_count(daemon_t *d, int delta)
{
    d->nsmall += (size_t)(ssize_t)delta;
    if (d->nsmall > 0) {
        uv_timer_stop(&d->linger);
        __atomic_store_n(&d->yield.sync, 1, __ATOMIC_RELAXED);
    } else if (!uv_is_closing((uv_handle_t *)&d->linger)) {
        uv_timer_start(&d->linger, linger_cb, YIELD_LINGER_MS, 0);
    }
}

void watch_cref_put(cref_t *r)
{
    if (r != NULL && --r->refs == 0) {
        ck_conf_release(&r->c);
        ck_free(r);
    }
}

static void job_free(job_t *j)
{
    if (j->tmp != NULL)
        unlink(j->tmp);     /* not published */
    ck_free(j->tmp);
    ck_free(j->base);
    ck_json_release(&j->rec);
    ck_json_release(&j->failrec);
    ck_buf_release(&j->fallback);
    ck_free(j->rel);
    ck_free(j->in);
    ck_free(j->out);
    ck_free(j->odir);
    ck_free(j->claim);
    watch_cref_put(j->cref);
    ck_free(j);
}

/* keep: the n-th name of base, NAME.N.EXT (n = 0: base itself), in a
 * new string. */
static char *nth_name(const char *base, unsigned n)
{
    const char *ext = ck_path_ext(ck_path_base(base));
    char *alt = ck_malloc(strlen(base) + 24);

    if (alt != NULL && n == 0)
        strcpy(alt, base);
    else if (alt != NULL)
        sprintf(alt, "%.*s.%u%s", (int)(ext - base), base, n, ext);
    return alt;
}

/*
 * On the thread pool, once the input is open: the output's name (its
 * fingerprint may be in it).  With keep or fail, a name taken now is
 * passed over (keep) or fails the job (fail); the output is placed there
 * with link(2) later (pub_work_cb), which fails rather than replace a
 * file that another job or daemon put there meanwhile.
 */
static const char *name_cb(void *ud, const char *fingerprint, ck_err_t *err)
{
    job_t *j = ud;
    const ck_watch_conf_t *w = &j->cref->c.watch;
    ck_watch_name_vars_t v = { j->seq, j->id.mtime_ns, j->now_s, fingerprint };
    char *out = watch_out_path(w, j->rel, &v);
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
    /* keep: NAME.1.EXT, NAME.2.EXT, ... the first not taken now */
    for (unsigned n = 1; n < 1000000; n++) {
        char *alt = nth_name(out, n);

        if (alt == NULL)
            break;
        if (lstat(alt, &st) < 0 && errno == ENOENT) {
            j->base = out;
            j->nth = n;
            out = alt;
            goto done;
        }
        ck_free(alt);
    }
    ck_free(out);
    ck_err_set(err, CK_ENOMEM, "no free output name");
    return NULL;
done:
    j->out = out;
    return out;
}

/*
 * Place the synced temporary of j at its output: rename over it (replace),
 * or link(2) it there, which fails when the name is taken: keep tries the
 * next name (j->out becomes it), fail fails the job.  0 or -errno.
 */
static int place(job_t *j)
{
    int mode = j->cref->c.watch.on_output_exists;

    if (mode == CK_EXISTS_REPLACE)
        return rename(j->tmp, j->out) < 0 ? -errno : 0;
    for (;;) {
        char *alt;

        if (link(j->tmp, j->out) == 0) {
            unlink(j->tmp);
            return 0;
        }
        if (errno == EPERM || errno == ENOTSUP || errno == EOPNOTSUPP ||
            errno == ENOSYS) {
            /* no hard links here: look, then rename (not atomic) */
            struct stat st;

            if (lstat(j->out, &st) < 0 && errno == ENOENT)
                return rename(j->tmp, j->out) < 0 ? -errno : 0;
        } else if (errno != EEXIST) {
            return -errno;
        }
        if (mode == CK_EXISTS_FAIL)
            return -EEXIST;
        /* keep: taken meanwhile, the next name */
        if (j->base == NULL) {
            j->base = ck_strdup(j->out);
            j->nth = 0;
            if (j->base == NULL)
                return -ENOMEM;
        }
        if (++j->nth >= 1000000 || (alt = nth_name(j->base, j->nth)) == NULL)
            return -ENOMEM;
        ck_free(j->out);
        j->out = alt;
        j->moved_name = 1;
    }
}

/* On a thread of its own that can read only the input, the configuration
 * and the files its plugins declared, and write only in the output's
 * folder (work_cb). */
static void job_main(void *ud)
{
    job_t *j = ud;
    ck_job_args_t args = { .in = j->in, .out = NULL };

    args.cancel = &j->d->cancel;
    /* a small job is what the others give way to, never the one giving
     * way (counted itself, it slowed its own big output when alone) */
    args.yield = j->small ? NULL : &j->d->yield;
    args.expect_set = 1;    /* the file claimed, not what is there now */
    args.expect_ino = j->id.ino;
    args.expect_size = j->id.size;
    args.expect_mtime_ns = j->id.mtime_ns;
    args.name_out = name_cb;
    args.name_ud = j;
    args.name_no_fp =
        strstr(j->cref->c.watch.output_name, "{fingerprint8}") == NULL;
    /* a replaced output is published with the others that end with it
     * (one sync of the folder); keep and fail decide the name here */
    args.defer_tmp = &j->tmp;
    /* keep and fail: every output is placed by link(2) (see place) */
    args.defer_all = j->cref->c.watch.on_output_exists != CK_EXISTS_REPLACE;
    j->rc = ck_job_run(&j->cref->c, &args, &j->rec, &j->err);
}

/* Not the job's fault: the sandbox ran short of something for now. */
static int transient(int code)
{
    return code == -EAGAIN || code == -ENOMEM || code == -EMFILE ||
           code == -ENFILE || code == CK_ENOMEM;
}

static void work_cb(uv_work_t *req)
{
    job_t *j = req->data;
    const ck_conf_t *c = &j->cref->c;
    ck_sandbox_t sb = { .read_fd_name = j->in, .files = c->reads,
                        .write_dirs = { j->odir }, .nwrite = 1 };

    /* queued -> running, for `ckprep status` */
    watch_claim_write(j->claim, &j->d->self, "running", CLAIM_W_INPLACE);
    /* the rule holds the claimed inode: a folder on its path swapped for
     * a symlink meanwhile cannot lend the job another file */
    sb.read_fd = watch_open_claimed(j->in, &j->id);
    if (sb.read_fd < 0)
        ck_err_set(&j->err, CK_ECHANGED, "not the file that was claimed "
                   "(replaced meanwhile)");
    else if (ck_sandbox_run(&sb, job_main, j, &j->err) == 0)
        goto out;
    j->rc = j->err.code;
    j->retry = transient(j->rc);
    ck_job_record_failed(c, j->in, j->id.size, &j->rec, &j->err);
out:
    if (sb.read_fd >= 0)
        close(sb.read_fd);
}

/*
 * ready = marker with a marker per file: it follows its input (rel) to the
 * folder root (failed/, done/), or is removed when root is NULL.  A
 * folder's one marker belongs to all its files and stays.
 */
static void marker_follow(const ck_watch_conf_t *w, const char *rel,
                          const char *root)
{
    char m[4096], *src, *dst = NULL;

    if (w->ready != CK_READY_MARKER || strstr(w->marker, "{name}") == NULL ||
        ck_watch_marker_path(w->marker, rel, m, sizeof(m)) < 0)
        return;
    src = ck_path_join(w->incoming, m);
    if (src != NULL && root != NULL)
        dst = ck_path_join(root, m);
    if (src != NULL && root == NULL)
        unlink(src);
    else if (dst != NULL && ck_move(src, dst) < 0 && errno != ENOENT)
        ck_log(CK_LOG_WARNING, "%s: could not move to %s", src, dst);
    ck_free(src);
    ck_free(dst);
}

int watch_file_failed(const ck_watch_conf_t *w, uint64_t seq,
                       const char *rel, const char *in, const ident_t *id,
                       const char *rec)
{
    char *dst = ck_path_join(w->failed, rel), *ej = NULL;
    struct stat st;
    ident_t now;
    size_t n;
    int rc, gone = 0;

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
        sprintf(alt, "%s.%llu", dst, (unsigned long long)seq);
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
    else {
        marker_follow(w, rel, w->failed);
        gone = 1;
    }
out:
    ck_free(dst);
    ck_free(ej);
    return gone;
}

/* After a good job: keep, move or delete the input (in, rel under
 * incoming), if it is still the file the job read.  1 when it went. */
int watch_file_after(const ck_watch_conf_t *w, const char *rel,
                     const char *in, const ident_t *id)
{
    struct stat st;
    ident_t now;
    char *dst;
    int gone = 0;

    if (w->after == CK_AFTER_KEEP)
        return 0;
    if (lstat(in, &st) < 0)
        return -1;
    ident_of(&st, &now);
    if (!ident_eq(&now, id)) {
        ck_log(CK_LOG_WARNING, "%s changed while it was processed; left in "
               "place", in);
        return 0;
    }
    if (w->after == CK_AFTER_DELETE) {
        if (unlink(in) < 0) {
            ck_log(CK_LOG_ERR, "%s: %s", in, strerror(errno));
            return 0;
        }
        marker_follow(w, rel, NULL);
        return 1;
    }
    dst = ck_path_join(w->done, rel);
    if (dst != NULL) {
        int rc;

        ck_mkdirs_parent(dst, 0750);
        rc = ck_move(in, dst);
        if (rc < 0) {
            ck_log(CK_LOG_ERR, "%s: could not move to %s: %s", in, dst,
                   strerror(-rc));
        } else {
            marker_follow(w, rel, w->done);
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

/* What became of a job, for its input (dispose, then finish). */
enum { DISP_UNPUBLISHED, DISP_OK, DISP_CANCELED, DISP_VANISHED,
       DISP_CHANGED, DISP_RETRY, DISP_FAILED, DISP_UNLOGGED };

/*
 * The input of an ended job kept, moved or deleted (a good job whose
 * record is logged), or moved to failed/ (a failed one), as the
 * configuration it ran under says; seq names a failed/ file whose name is
 * taken.  File system work only, no daemon state: publishing runs it on
 * the thread pool once the batch's records are durable, so a big input
 * copied to done/ on another file system never holds the loop.
 */
static void dispose(job_t *j, uint64_t seq, int logged)
{
    const ck_watch_conf_t *w = &j->cref->c.watch;

    if (j->rc == 0 && j->tmp != NULL) {
        j->disp = DISP_UNPUBLISHED;
    } else if (j->rc == 0) {
        /* without its record, the input stays where it is, not done */
        j->disp = logged ? DISP_OK : DISP_UNLOGGED;
        j->gone = logged && watch_file_after(w, j->rel, j->in, &j->id) > 0;
    } else if (j->rc == CK_ECANCELED) {
        j->disp = DISP_CANCELED;
    } else if (vanished(j)) {
        j->disp = DISP_VANISHED;
    } else if (j->rc == CK_ECHANGED || changed(j)) {
        j->disp = DISP_CHANGED;
    } else if (j->retry) {
        j->disp = DISP_RETRY;
    } else if (!logged) {
        j->disp = DISP_UNLOGGED;    /* a failure not recorded: not filed */
    } else {
        j->disp = DISP_FAILED;
        j->gone = watch_file_failed(w, seq, j->rel, j->in, &j->id, j->text);
    }
    j->disposed = 1;
}

static void claims_start(daemon_t *d);

/* Mark claim done later, with others (see claims_work_cb), or here when
 * it cannot be queued. */
static void todo_add(daemon_t *d, const char *claim)
{
    char *c;

    if (d->ntodo == d->todocap) {
        size_t cap = d->todocap ? d->todocap * 2 : 64;
        char **v = ck_realloc(d->todo, cap * sizeof(*v));

        if (v == NULL)
            goto now;
        d->todo = v;
        d->todocap = cap;
    }
    c = ck_strdup(claim);
    if (c == NULL)
        goto now;
    d->todo[d->ntodo++] = c;
    return;
now:
    watch_claim_write(claim, &d->self, "done", CLAIM_W_DURABLE);
}

/*
 * A job whose record is durable in the log (logged), or could not be
 * written: the input kept, moved or deleted, or moved to failed/; with
 * after = keep, its done claim queued.
 */
static void finish(daemon_t *d, job_t *j, int logged)
{
    file_t *f = j->f;
    const char *rec = j->text;
    int gone;

    if (!j->disposed)   /* not published on the pool: here */
        dispose(j, d->audit.seq, logged);
    gone = j->gone;
    if (j->disp == DISP_UNPUBLISHED) {
        /* its output was never published (nor its record written) */
        ck_log(CK_LOG_WARNING, "%s: output not published; it will be redone",
               j->in);
        f->state = F_OTHER;
        f->dirty = 1;
        unlink(j->claim);
    } else if (j->disp == DISP_OK) {
        d->nok++;
        watch_metrics_job(d, rec);
        ck_log(CK_LOG_INFO, "%s -> %s", j->in, j->out ? j->out : "?");
        f->state = F_DONE;
        if (gone)
            unlink(j->claim);
        else
            todo_add(d, j->claim);
        if (f->done.size != 0 && !ident_eq(&f->done, &j->id)) {
            /* the done claim of what this input replaced */
            char *old = watch_claim_path(d, f->rel, &f->done);

            if (old != NULL)
                unlink(old);
            ck_free(old);
        }
    } else if (j->disp == DISP_CANCELED) {
        ck_log(CK_LOG_WARNING, "%s: abandoned; it will be redone", j->in);
        f->state = F_OTHER;
        unlink(j->claim);
    } else if (j->disp == DISP_VANISHED) {
        ck_log(CK_LOG_NOTICE, "%s: gone before it could be processed", j->in);
        f->state = F_OTHER;
        unlink(j->claim);
    } else if (j->disp == DISP_CHANGED) {
        /* rewritten in place while read: the new content is not failed */
        ck_log(CK_LOG_WARNING, "%s: %s; it changed meanwhile: looking again",
               j->in, j->err.msg);
        f->state = F_OTHER;
        f->dirty = 1;
        unlink(j->claim);
    } else if (j->disp == DISP_RETRY) {
        ck_log(CK_LOG_WARNING, "%s: %s; will try again", j->in, j->err.msg);
        f->state = F_OTHER;
        f->dirty = 1;
        unlink(j->claim);
    } else if (j->disp == DISP_UNLOGGED) {
        /* not done: its claim goes, so the next start (or rescan) redoes
         * it; not at once, against a log that cannot be written */
        ck_log(CK_LOG_ERR, "%s: its record could not be written to the "
               "audit log; it will be redone at the next start or rescan",
               j->in);
        f->state = F_OTHER;
        unlink(j->claim);
    } else {
        d->nfailed++;
        watch_metrics_job(d, rec);
        ck_log(CK_LOG_WARNING, "%s: %s", j->in, j->err.msg);
        f->state = F_FAILED;
        unlink(j->claim);
    }
    /* only a recorded end makes this identity done: any other is looked
     * at again when it is seen at the same identity */
    if (j->disp == DISP_OK || j->disp == DISP_FAILED)
        f->done = j->id;
    d->nfinishing--;
    if (j->small)
        small_count(d, -1);
    if (f->dirty && !d->stopping) {
        f->dirty = 0;
        watch_set_pending(d, f, uv_now(d->loop));
    } else if (gone && !d->stopping) {
        /* moved or deleted while it was busy: its IN_MOVED_FROM or
         * IN_DELETE left the entry alone */
        watch_file_drop(d, f);
    }
}

/* A batch whose records are logged (or could not be): each job finished
 * (outputs reported, inputs moved), then its done claims written. */
static void finish_batch(daemon_t *d, job_t *batch, int logged)
{
    for (job_t *j = batch, *next; j != NULL; j = next) {
        next = j->fnext;
        finish(d, j, logged);
        job_free(j);
    }
    claims_start(d);
}

/*
 * A batch of jobs whose outputs are written temporaries: on the thread
 * pool, each is synced and renamed over its output, then each folder that
 * got one is synced once; an output whose sync failed is removed (it is
 * not known to be durable).  Only then are their records logged.
 */
typedef struct {
    uv_work_t req;
    daemon_t *d;
    job_t *batch;
    ck_audit_t audit;       /* the daemon's, on a descriptor of its own */
    int keep;               /* after = keep: done claims written here */
    int logged;
    ck_err_t err;
} pub_t;

static void flush_cb(uv_check_t *c);

static void unpublished(job_t *j);
static void renamed(job_t *j);

/*
 * Done claims, once their records are durable: each rewritten in place,
 * all synced at once, their folder synced once (the entries of claims
 * made since its last sync); on the thread pool, one batch at a time,
 * while the next outputs are published (a done claim is what tells other daemons that an input
 * kept in incoming is done: it comes after the record, never before).
 */
typedef struct {
    uv_work_t req;
    daemon_t *d;
    char **claims;
    size_t n;
} claims_t;

static void claims_work_cb(uv_work_t *req)
{
    claims_t *c = req->data;
    const char **w = ck_calloc(c->n ? c->n : 1, sizeof(*w));
    int *rc = ck_calloc(c->n ? c->n : 1, sizeof(*rc));
    size_t k = 0;

    if (w == NULL || rc == NULL) {      /* one by one */
        for (size_t i = 0; i < c->n; i++)
            watch_claim_write(c->claims[i], &c->d->self, "done",
                              CLAIM_W_DURABLE);
        goto out;
    }
    for (size_t i = 0; i < c->n; i++)
        if (watch_claim_write(c->claims[i], &c->d->self, "done",
                              CLAIM_W_INPLACE) == 0)
            w[k++] = c->claims[i];
    ck_fsync_many(w, rc, k);
    if (k > 0)
        ck_fsync_dir_of(w[0]);
out:
    ck_free(w);
    ck_free(rc);
}

static void claims_done_cb(uv_work_t *req, int uvst)
{
    claims_t *c = req->data;
    daemon_t *d = c->d;

    for (size_t i = 0; i < c->n; i++)
        ck_free(c->claims[i]);
    ck_free(c->claims);
    ck_free(c);
    d->claiming = 0;
    (void)uvst;
    claims_start(d);
    if (d->stopping)
        watch_maybe_exit(d);
}

/* Write the queued done claims, unless a batch is being written. */
static void claims_start(daemon_t *d)
{
    claims_t *c;

    if (d->claiming || d->ntodo == 0)
        return;
    c = ck_calloc(1, sizeof(*c));
    if (c == NULL)
        return;     /* the next batch takes them */
    c->d = d;
    c->req.data = c;
    c->claims = d->todo;
    c->n = d->ntodo;
    d->todo = NULL;
    d->ntodo = d->todocap = 0;
    if (uv_queue_work(d->loop, &c->req, claims_work_cb, claims_done_cb) == 0) {
        d->claiming = 1;
        return;
    }
    claims_work_cb(&c->req);
    claims_done_cb(&c->req, 0);
}

/* The batch's records in one write and one fdatasync; then, with after =
 * keep, the done claims of its good jobs (each synced, their folder once:
 * a done claim is what tells other daemons the input is done). */
static void log_work(pub_t *p)
{
    const char **recs;
    size_t n = 0;

    for (job_t *j = p->batch; j != NULL; j = j->fnext) {
        if (j->deferred && j->rc < 0)
            unpublished(j);
        else if (j->moved_name)
            renamed(j);
        n++;
    }
    recs = ck_calloc(n ? n : 1, sizeof(*recs));
    if (recs == NULL) {
        ck_err_set(&p->err, CK_ENOMEM, "out of memory");
        return;
    }
    n = 0;
    for (job_t *j = p->batch; j != NULL; j = j->fnext)
        recs[n++] = j->text;
    p->logged = ck_audit_append_many(&p->audit, recs, n, &p->err) == 0;
    ck_free(recs);
}

/* Is the folder of a (up to its last '/') the folder of b? */
static int same_dir(const char *a, const char *b)
{
    size_t n = (size_t)(strrchr(a, '/') - a);

    return (size_t)(strrchr(b, '/') - b) == n && strncmp(a, b, n) == 0;
}

static void pub_work_cb(uv_work_t *req)
{
    pub_t *p = req->data;
    const char **tmps;
    int *rc;
    size_t n = 0, k = 0;
    int hold = 0;

    for (job_t *j = p->batch; j != NULL; j = j->fnext) {
        n += j->tmp != NULL;
        hold |= j->small;
    }
    /* big writers wait while these sync (see ck_yield_t) */
    if (hold)
        __atomic_add_fetch(&p->d->yield.hold, 1, __ATOMIC_RELAXED);
    tmps = ck_calloc(n ? n : 1, sizeof(*tmps));
    rc = ck_calloc(n ? n : 1, sizeof(*rc));
    for (job_t *j = p->batch; j != NULL && tmps != NULL && rc != NULL;
         j = j->fnext)
        if (j->tmp != NULL)
            tmps[k++] = j->tmp;
    if (tmps != NULL && rc != NULL)
        ck_fsync_many(tmps, rc, n);
    k = 0;
    for (job_t *j = p->batch; j != NULL; j = j->fnext) {
        int r;

        if (j->tmp == NULL)
            continue;
        r = tmps == NULL || rc == NULL ? CK_ENOMEM : rc[k++];
        if (r == 0)
            r = place(j);
        if (r == -EEXIST) {
            j->rc = r;
            ck_err_set(&j->err, r, "output %s exists (on_output_exists = "
                       "fail)", j->out);
            continue;
        }
        if (r < 0) {
            j->rc = r;
            ck_err_set(&j->err, r, "publish %s: %s", j->out,
                       r == CK_ENOMEM ? "out of memory" : strerror(-r));
            continue;
        }
        ck_free(j->tmp);
        j->tmp = NULL;
        j->published = 1;
    }
    ck_free(tmps);
    ck_free(rc);
    /* each folder once: the jobs of one folder share its sync */
    for (job_t *j = p->batch; j != NULL; j = j->fnext) {
        int r, seen = 0;

        if (!j->published)
            continue;
        for (job_t *q = p->batch; q != j && !seen; q = q->fnext)
            seen = q->published && same_dir(q->out, j->out);
        if (seen || (r = ck_fsync_dir_of(j->out)) == 0)
            continue;
        for (job_t *q = j; q != NULL; q = q->fnext) {
            if (!q->published || !same_dir(q->out, j->out))
                continue;
            unlink(q->out);     /* not known to be durable: not written */
            q->published = 0;
            q->rc = r;
            ck_err_set(&q->err, r, "fsync of the folder of %s: %s", q->out,
                       strerror(-r));
        }
    }
    log_work(p);
    if (hold)
        __atomic_sub_fetch(&p->d->yield.hold, 1, __ATOMIC_RELAXED);
    /* the records are durable (or could not be written): the inputs
     * follow, off the loop */
    for (job_t *j = p->batch; j != NULL; j = j->fnext)
        dispose(j, p->audit.seq, p->logged);
}

/* The record of a job whose output could not be published: the job's
 * own, now failed, with no output. */
static void unpublished(job_t *j)
{
    ck_record_t r;

    if (ck_record_parse(j->text, strlen(j->text), &r) == 0) {
        r.status = "failed";
        r.error_code = ck_errname(j->rc);
        r.error_message = j->err.msg;
        r.wrote = 0;
        r.out.replaced = NULL;
        ck_record_build(&j->failrec, &r);
        ck_record_release(&r);
        if (ck_json_text(&j->failrec) != NULL) {
            j->text = ck_json_text(&j->failrec);
            return;
        }
    }
    ck_buf_release(&j->fallback);
    ck_record_fallback(&j->fallback, j->in);
    j->text = j->fallback.oom ? "{\"status\":\"failed\"}"
                              : (const char *)j->fallback.data;
}

/* The record of a job whose output took another name than the one it was
 * written for (keep, the name taken meanwhile): the same, naming it. */
static void renamed(job_t *j)
{
    ck_record_t r;

    if (ck_record_parse(j->text, strlen(j->text), &r) < 0)
        return;
    r.out.path = j->out;
    ck_record_build(&j->failrec, &r);
    ck_record_release(&r);
    if (ck_json_text(&j->failrec) != NULL)
        j->text = ck_json_text(&j->failrec);
}

static void pub_free(pub_t *p)
{
    if (p->audit.fd >= 0)
        close(p->audit.fd);
    ck_free(p->audit.path);
    ck_free(p);
}

static void pub_done_cb(uv_work_t *req, int uvst)
{
    pub_t *p = req->data;
    daemon_t *d = p->d;

    d->publishing--;
    if (p->audit.seq > d->audit.seq)
        d->audit.seq = p->audit.seq;
    if (!p->logged)
        ck_log(CK_LOG_ERR, "audit log: %s", p->err.msg);
    finish_batch(d, p->batch, p->logged);
    pub_free(p);
    (void)uvst;
    if (d->fin_head != NULL)
        flush_cb(&d->flush);
    watch_status(d);
    if (d->stopping)
        watch_maybe_exit(d);
    else
        watch_pump(d);
}

/*
 * After the loop's poll phase, which ran the after-work callbacks of every
 * job that had ended: the batch is published and logged on the thread pool
 * (outputs synced and renamed, their folders synced, the records written
 * with one fdatasync), two batches at a time at most: the jobs that end
 * meanwhile make the next.  The loop waits for no sync of theirs; then it
 * finishes each job (reports it, moves its input).
 */
static void flush_cb(uv_check_t *c)
{
    daemon_t *d = c->data;
    job_t *batch = d->fin_head;
    pub_t *p;

    uv_check_stop(c);
    if (d->publishing >= 2 || batch == NULL)
        return;     /* pub_done_cb comes back */
    d->fin_head = d->fin_tail = NULL;
    p = ck_calloc(1, sizeof(*p));
    if (p == NULL) {
        ck_log(CK_LOG_ERR, "audit log: out of memory; %s and the jobs that "
               "ended with it are not logged", batch->in);
        finish_batch(d, batch, 0);
        return;
    }
    p->d = d;
    p->batch = batch;
    p->req.data = p;
    p->keep = d->w->after == CK_AFTER_KEEP;
    p->audit = d->audit;
    p->audit.path = ck_strdup(d->audit.path ? d->audit.path : "audit log");
    /* a description of its own: two batches in flight take turns at the
     * log's lock (a dup would share the lock) */
    p->audit.fd = d->audit.path != NULL ?
        open(d->audit.path, O_RDWR | O_APPEND | O_CLOEXEC | O_NOFOLLOW) : -1;
    if (p->audit.fd < 0 && d->audit.fd >= 0)
        p->audit.fd = fcntl(d->audit.fd, F_DUPFD_CLOEXEC, 0);
    if (p->audit.fd < 0 || p->audit.path == NULL) {
        ck_log(CK_LOG_ERR, "audit log %s: not open; the jobs that ended are "
               "not logged", d->w->audit_log);
        finish_batch(d, batch, 0);
        pub_free(p);
        return;
    }
    if (uv_queue_work(d->loop, &p->req, pub_work_cb, pub_done_cb) == 0) {
        d->publishing++;
        return;
    }
    d->publishing++;
    pub_work_cb(&p->req);       /* no pool: here */
    pub_done_cb(&p->req, 0);
}

static void after_work_cb(uv_work_t *req, int uvst)
{
    job_t *j = req->data;
    daemon_t *d = j->d;

    j->text = ck_json_text(&j->rec);
    if (j->text == NULL) {      /* out of memory building it: a short one */
        ck_record_fallback(&j->fallback, j->in);
        j->text = j->fallback.oom ? "{\"status\":\"failed\"}"
                                  : (const char *)j->fallback.data;
        if (j->rc == 0)
            j->rc = CK_ENOMEM;
    }
    if (j->rc != 0 && j->tmp != NULL) {     /* not to be published */
        unlink(j->tmp);
        ck_free(j->tmp);
        j->tmp = NULL;
    }
    j->deferred = j->tmp != NULL;
    /* its worker is free: what is left is publishing and logging */
    for (size_t i = 0; i < d->nrunning; i++) {
        if (d->running[i] == j) {
            d->running[i] = d->running[--d->nrunning];
            break;
        }
    }
    d->nfinishing++;
    j->fnext = NULL;
    if (d->fin_tail != NULL)
        d->fin_tail->fnext = j;
    else
        d->fin_head = j;
    d->fin_tail = j;
    uv_check_start(&d->flush, flush_cb);
    (void)uvst;
    watch_start_jobs(d);
}

/* A job for f, or NULL with err set (out of memory, or its output's
 * folder could not be made). */
static job_t *job_new(daemon_t *d, file_t *f, ck_err_t *err)
{
    job_t *j = ck_calloc(1, sizeof(*j));
    char *odir;
    int made;

    if (j == NULL) {
        ck_err_set(err, CK_ENOMEM, "out of memory");
        return NULL;
    }
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
    j->small = f->id.size <= CK_JOB_DEFER_MAX;
    odir = watch_out_path(d->w, f->rel, NULL);
    j->odir = odir;
    if (odir == NULL || j->rel == NULL || j->in == NULL || j->claim == NULL) {
        ck_err_set(err, CK_ENOMEM, "out of memory");
        job_free(j);
        return NULL;
    }
    *strrchr(odir, '/') = '\0';
    if ((made = ck_mkdirs(odir, 0750)) < 0) {
        ck_err_set(err, made, "output folder %s: %s", odir, strerror(-made));
        job_free(j);
        return NULL;
    }
    j->req.data = j;
    return j;
}

/* A job that could not be made is tried again after this long. */
#define JOB_NEW_RETRY_MS 5000

void watch_start_jobs(daemon_t *d)
{
    ck_err_t err = { 0 };

    while (!d->stopping && d->qhead != NULL && d->nrunning < d->w->workers) {
        file_t *f = d->qhead;
        job_t *j;

        d->qhead = f->qnext;
        if (d->qhead == NULL)
            d->qtail = NULL;
        d->nqueued--;
        if (f->dirty) {     /* changed while queued: its claim is stale */
            watch_unclaim(d, f);
            f->dirty = 0;
            f->state = F_OTHER;
            watch_set_pending(d, f, uv_now(d->loop));
            continue;
        }
        j = job_new(d, f, &err);
        if (j == NULL) {
            /* not started: its claim goes with it (kept, it would be this
             * daemon's own live claim, and block every later try) */
            watch_unclaim(d, f);
            ck_log(CK_LOG_ERR, "%s: %s; will try again in %d s", f->rel,
                   err.msg, JOB_NEW_RETRY_MS / 1000);
            f->state = F_OTHER;
            watch_set_pending(d, f, uv_now(d->loop));
            watch_due(d, f, uv_now(d->loop) + JOB_NEW_RETRY_MS);
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
        if (j->small)
            small_count(d, 1);
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
