/*
 * watch.c -- the daemon.  See watch.h.
 *
 * Everything here runs on the loop thread except ck_job_run, which runs on
 * libuv's thread pool with its own arena and reads only its job and a
 * configuration it holds a reference to.
 *
 * A file goes PENDING (an event or a scan saw it) -> QUEUED (quiet for
 * settle_ms, size and mtime stable, complete, claimed) -> RUNNING -> DONE
 * or FAILED.  A file is known by its path relative to incoming and its
 * identity (inode, size, mtime): a DONE file whose identity changes (a new
 * checkpoint renamed over the old name) is PENDING again.  Identities of
 * done inputs are read back from the audit log on start.
 *
 * Claims make several daemons (one host or many, sharing the folder over
 * NFS) process each input once: before a job starts, a claim file named by
 * the input's identity is created with O_EXCL in incoming/.ckprep-claims.
 * It says who holds it and whether the job is running or done; a running
 * claim is refreshed (mtime) while the job runs, and one whose holder is
 * dead (same host, no such pid) or silent for claim_stale_s (another host)
 * is taken back by renaming it away first, which only one taker can do.
 */
#define _GNU_SOURCE
#include "watch.h"

#include "audit.h"
#include "fsutil.h"
#include "job.h"
#include "json.h"
#include "log.h"
#include "zip.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define CLAIMS ".ckprep-claims"
#define MAX_DEPTH 32

enum { F_PENDING, F_PROBING, F_QUEUED, F_RUNNING, F_DONE, F_FAILED, F_SKIPPED,
       F_OTHER };

typedef struct {
    uint64_t ino, size;
    int64_t mtime_ns;
} ident_t;

typedef struct file file_t;
struct file {
    file_t *hnext;
    file_t *qnext;          /* run queue */
    char *rel;              /* path under incoming */
    int state;
    int dirty;              /* changed while queued or running */
    int seen;               /* by the current scan */
    ident_t id;             /* last seen */
    ident_t done;           /* when it was done or failed */
    ident_t scanned;        /* by the last scan */
    uint64_t last_event, last_change, next_check;
};

typedef struct {
    ck_conf_t c;
    int refs;
} cref_t;

typedef struct daemon daemon_t;

typedef struct {
    uv_work_t req;
    daemon_t *d;
    file_t *f;
    cref_t *cref;
    ident_t id;
    char *in, *out, *claim;
    ck_json_t rec;
    ck_err_t err;
    int rc;
} job_t;

typedef struct {
    int wd;
    char *rel;
} wdir_t;

struct daemon {
    uv_loop_t *loop;
    const char *conf_path;
    cref_t *cref;
    const ck_watch_conf_t *w;
    ck_audit_t audit;
    int ifd;
    uv_poll_t *poll;        /* of ifd; its own allocation: a reload closes
                               it and starts another before the close ends */
    wdir_t *dirs;
    size_t ndirs;
    uv_timer_t tick, rescan, watchdog, stop_timer, refresh;
    uv_signal_t sig[4];
    file_t **buckets;
    size_t nbuckets, nfiles, npending;
    file_t *qhead, *qtail;
    size_t nqueued;
    job_t **running;
    size_t nrunning;
    size_t nprobing;        /* readiness probes on the thread pool */
    uint64_t nok, nfailed;
    int stopping, cancel, exit_code;
    int remote_fs;
    int lost;               /* incoming is gone: look for it every second */
    char host[256];
    char *claims;           /* incoming/.ckprep-claims */
    char status[160];       /* the last STATUS= sent */
};

/* ---- small helpers ------------------------------------------------------ */

static void ident_of(const struct stat *st, ident_t *id)
{
    id->ino = (uint64_t)st->st_ino;
    id->size = (uint64_t)st->st_size;
    id->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

static int ident_eq(const ident_t *a, const ident_t *b)
{
    return a->ino == b->ino && a->size == b->size && a->mtime_ns == b->mtime_ns;
}

/* ---- the file table ----------------------------------------------------- */

static uint64_t hash_str(const char *s)
{
    return ck_hash_fnv1a(s, strlen(s));
}

static file_t *file_find(daemon_t *d, const char *rel)
{
    if (d->nbuckets == 0)
        return NULL;
    for (file_t *f = d->buckets[hash_str(rel) & (d->nbuckets - 1)]; f != NULL;
         f = f->hnext)
        if (strcmp(f->rel, rel) == 0)
            return f;
    return NULL;
}

static int table_grow(daemon_t *d)
{
    size_t n = d->nbuckets ? d->nbuckets * 2 : 256;
    file_t **b = ck_calloc(n, sizeof(*b));

    if (b == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < d->nbuckets; i++) {
        for (file_t *f = d->buckets[i], *next; f != NULL; f = next) {
            size_t k = hash_str(f->rel) & (n - 1);

            next = f->hnext;
            f->hnext = b[k];
            b[k] = f;
        }
    }
    ck_free(d->buckets);
    d->buckets = b;
    d->nbuckets = n;
    return 0;
}

static file_t *file_get(daemon_t *d, const char *rel)
{
    file_t *f = file_find(d, rel);
    size_t k;

    if (f != NULL)
        return f;
    if (d->nfiles >= d->nbuckets && table_grow(d) < 0)
        return NULL;
    f = ck_calloc(1, sizeof(*f));
    if (f == NULL || (f->rel = ck_strdup(rel)) == NULL) {
        ck_free(f);
        return NULL;
    }
    f->state = F_OTHER;
    k = hash_str(rel) & (d->nbuckets - 1);
    f->hnext = d->buckets[k];
    d->buckets[k] = f;
    d->nfiles++;
    return f;
}

static void file_drop(daemon_t *d, file_t *f)
{
    file_t **p = &d->buckets[hash_str(f->rel) & (d->nbuckets - 1)];

    while (*p != f)
        p = &(*p)->hnext;
    *p = f->hnext;
    if (f->state == F_PENDING)
        d->npending--;
    d->nfiles--;
    ck_free(f->rel);
    ck_free(f);
}

/* Held by a probe or a job: the file table entry must stay. */
static int busy(const file_t *f)
{
    return f->state == F_PROBING || f->state == F_QUEUED ||
           f->state == F_RUNNING;
}

static void set_pending(daemon_t *d, file_t *f, uint64_t now)
{
    if (busy(f)) {
        f->dirty = 1;
        return;
    }
    if (f->state != F_PENDING) {
        d->npending++;
        f->last_change = now;
    }
    f->state = F_PENDING;
    f->last_event = now;
    f->next_check = now + d->w->settle_ms;
}

static void leave_pending(daemon_t *d, file_t *f, int state)
{
    if (f->state == F_PENDING)
        d->npending--;
    f->state = state;
}

/* ---- names ------------------------------------------------------------- */

static int name_wanted(const ck_watch_conf_t *w, const char *name)
{
    int in = 0;

    for (size_t i = 0; i < w->exclude.n; i++)
        if (fnmatch(w->exclude.v[i], name, 0) == 0)
            return 0;
    for (size_t i = 0; i < w->include.n && !in; i++)
        in = fnmatch(w->include.v[i], name, 0) == 0;
    return in;
}

/* The output of the input at rel: its folder under output, its name from
 * output_name. */
static char *out_path(daemon_t *d, const char *rel)
{
    char name[1024], *reldir, *odir = NULL, *out = NULL;

    if (ck_watch_output_name(d->w->output_name, rel, name, sizeof(name)) < 0) {
        /* too long, or a dot first for this input: its own name, never one
         * shared with other inputs */
        const char *base = ck_path_base(rel);

        snprintf(name, sizeof(name), "%s%s", base[0] == '.' ? "_" : "", base);
        ck_log(CK_LOG_WARNING, "%s: output_name gives no plain file name for "
               "it; writing %s", rel, name);
    }
    reldir = ck_strdup(rel);
    if (reldir != NULL) {
        char *slash = strrchr(reldir, '/');

        if (slash != NULL) {
            *slash = '\0';
            odir = ck_path_join(d->w->output, reldir);
        } else {
            odir = ck_strdup(d->w->output);
        }
    }
    if (odir != NULL)
        out = ck_path_join(odir, name);
    ck_free(reldir);
    ck_free(odir);
    return out;
}

/*
 * A name as the audit log reads back: ck_json_quote writes each byte that
 * is not UTF-8 as the character of the same number, so "\xff" comes back
 * as "\xc3\xbf".  NULL when name is UTF-8 (it reads back as itself).
 */
static char *json_reading(const char *name)
{
    const uint8_t *u = (const uint8_t *)name;
    size_t n = strlen(name), o = 0;
    char *s = ck_malloc(2 * n + 1);
    int changed = 0;

    if (s == NULL)
        return NULL;
    for (size_t i = 0; i < n;) {
        int k = ck_utf8_len(u + i, n - i, 0);

        if (k > 0) {
            memcpy(s + o, u + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        } else {
            s[o++] = (char)(0xc0 | u[i] >> 6);
            s[o++] = (char)(0x80 | (u[i] & 0x3f));
            i++;
            changed = 1;
        }
    }
    s[o] = '\0';
    if (!changed) {
        ck_free(s);
        return NULL;
    }
    return s;
}

/*
 * f, not known yet, has a name that is not UTF-8: take what the audit log
 * says of its reading, when the identity (inode, size, mtime) is the same.
 */
static void adopt(daemon_t *d, file_t *f, const ident_t *id)
{
    char *alias = json_reading(f->rel);
    file_t *a = alias ? file_find(d, alias) : NULL;

    if (a != NULL && (a->state == F_DONE || a->state == F_FAILED) &&
        ident_eq(&a->done, id)) {
        f->state = a->state;
        f->done = a->done;
    }
    ck_free(alias);
}

/* STATUS=, when it says something new (the tick calls it 20 times a
 * second while a file is waiting). */
static void status(daemon_t *d)
{
    char s[sizeof(d->status)];

    snprintf(s, sizeof(s), "%s: %zu waiting, %zu queued, %zu running, %llu "
             "done, %llu failed", d->stopping ? "stopping" : "watching",
             d->npending, d->nqueued, d->nrunning,
             (unsigned long long)d->nok, (unsigned long long)d->nfailed);
    if (strcmp(s, d->status) == 0)
        return;
    strcpy(d->status, s);
    ck_notify("STATUS=%s", s);
}

/* ---- claims ------------------------------------------------------------ */

static char *claim_path(daemon_t *d, const char *rel, const ident_t *id)
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    char name[128];

    EVP_Digest(rel, strlen(rel), md, &mdlen, EVP_sha256(), NULL);
    snprintf(name, sizeof(name), "%llu-%llu-%lld-", (unsigned long long)id->ino,
             (unsigned long long)id->size, (long long)id->mtime_ns);
    for (int i = 0; i < 8; i++)
        sprintf(name + strlen(name), "%02x", md[i]);
    return ck_path_join(d->claims, name);
}

enum { CLAIM_OK, CLAIM_BUSY, CLAIM_DONE, CLAIM_ERROR };

static int claim_write(const char *path, const char *host, const char *state,
                       int excl)
{
    char text[512];
    int n = snprintf(text, sizeof(text), "host=%s pid=%d state=%s\n", host,
                     (int)getpid(), state);
    int fd;

    if (!excl)
        return ck_write_atomic(path, text, (size_t)n, 0640);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0)
        return -errno;
    if (ck_pwrite_full(fd, text, (size_t)n, 0) < 0) {
        int e = errno;

        close(fd);
        unlink(path);
        return -e;
    }
    close(fd);
    return 0;
}

/* Is the claim at path held by someone alive?  Its state goes to *done,
 * its holder's pid to *holder. */
static int claim_alive(daemon_t *d, const char *path, int *done, int *holder,
                       ino_t *ino)
{
    char text[512], host[300] = "", state[32] = "";
    int pid = 0, fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    ssize_t n;
    struct stat st;
    struct timespec now;

    *done = 0;
    if (fd < 0)
        return 0;
    n = read(fd, text, sizeof(text) - 1);
    if (fstat(fd, &st) < 0) {
        st.st_mtime = 0;
        st.st_ino = 0;
    }
    if (ino != NULL)
        *ino = st.st_ino;
    close(fd);
    text[n > 0 ? n : 0] = '\0';
    sscanf(text, "host=%299s pid=%d state=%31s", host, &pid, state);
    *holder = pid;
    if (strcmp(state, "done") == 0) {
        *done = 1;
        return 1;
    }
    if (strcmp(host, d->host) == 0)
        return pid > 0 && pid != (int)getpid() &&
               (kill(pid, 0) == 0 || errno == EPERM);
    clock_gettime(CLOCK_REALTIME, &now);
    return now.tv_sec - st.st_mtime < (time_t)d->w->claim_stale_s;
}

/*
 * Remove the temporaries a dead holder of rel's claim left in the output
 * folder: ck_ckpt_write names them .NAME.tmp.PID.*, in the output's folder.
 */
static void drop_temps(daemon_t *d, const char *rel, int pid)
{
    char *opath = out_path(d, rel), *slash, prefix[1100];
    DIR *dir = NULL;
    struct dirent *e;

    if (opath == NULL || pid <= 0)
        goto out;
    slash = strrchr(opath, '/');
    *slash = '\0';
    snprintf(prefix, sizeof(prefix), ".%s.tmp.%d.", slash + 1, pid);
    dir = opendir(opath);
    while (dir != NULL && (e = readdir(dir)) != NULL) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0)
            continue;
        if (unlinkat(dirfd(dir), e->d_name, 0) == 0)
            ck_log(CK_LOG_NOTICE, "%s/%s: removed, left by a job that did "
                   "not finish", opath, e->d_name);
    }
out:
    if (dir != NULL)
        closedir(dir);
    ck_free(opath);
}

static int claim(daemon_t *d, const char *rel, const char *path)
{
    struct stat st;

    /* claims go in a real folder: a symlink in its place would have them
     * written, and taken back, wherever it points */
    if (lstat(d->claims, &st) < 0 || !S_ISDIR(st.st_mode)) {
        ck_log(CK_LOG_ERR, "%s is not a folder (a symlink?): claiming nothing",
               d->claims);
        return CLAIM_ERROR;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        int rc = claim_write(path, d->host, "running", 1), done, holder = 0;
        char tomb[4096];
        ino_t stale = 0;

        if (rc == 0)
            return CLAIM_OK;
        if (rc != -EEXIST) {
            ck_log(CK_LOG_ERR, "claim %s: %s", path, strerror(-rc));
            return CLAIM_ERROR;
        }
        if (claim_alive(d, path, &done, &holder, &stale))
            return done ? CLAIM_DONE : CLAIM_BUSY;
        /* stale: only one taker can rename it away */
        snprintf(tomb, sizeof(tomb), "%s.stale.%s.%d", path, d->host,
                 (int)getpid());
        if (rename(path, tomb) < 0)
            return CLAIM_BUSY;
        if (lstat(tomb, &st) == 0 && st.st_ino != stale) {
            /* another taker got there first and this rename took its fresh
             * claim: give it back */
            if (link(tomb, path) < 0)
                ck_log(CK_LOG_WARNING, "claim %s: could not give back: %s",
                       path, strerror(errno));
            unlink(tomb);
            return CLAIM_BUSY;
        }
        unlink(tomb);
        ck_log(CK_LOG_NOTICE, "took back a stale claim %s", path);
        drop_temps(d, rel, holder);
    }
    return CLAIM_BUSY;
}

static void refresh_cb(uv_timer_t *t)
{
    daemon_t *d = t->data;

    for (size_t i = 0; i < d->nrunning; i++)
        utimensat(AT_FDCWD, d->running[i]->claim, NULL, AT_SYMLINK_NOFOLLOW);
    /* queued files hold claims too: a backlog must not make them stale */
    for (file_t *f = d->qhead; f != NULL; f = f->qnext) {
        char *cp = claim_path(d, f->rel, &f->id);

        if (cp != NULL)
            utimensat(AT_FDCWD, cp, NULL, AT_SYMLINK_NOFOLLOW);
        ck_free(cp);
    }
}

/* ---- jobs --------------------------------------------------------------- */

static void cref_put(cref_t *r)
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
    cref_put(j->cref);
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

static void start_jobs(daemon_t *d);
static void maybe_exit(daemon_t *d);

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
static int file_after(daemon_t *d, const char *rel, const char *in,
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
        ck_buf_printf(&fallback, "{\"input\":{\"path\":");
        ck_json_quote(&fallback, j->in, strlen(j->in));
        ck_buf_printf(&fallback, "},\"status\":\"failed\",\"error\":{\"code\":"
                      "\"nomem\",\"message\":\"out of memory\"}}");
        ck_buf_putc(&fallback, '\0');
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
        gone = logged && file_after(d, f->rel, j->in, &j->id) > 0;
        f->state = F_DONE;
        if (gone)
            unlink(j->claim);
        else
            claim_write(j->claim, d->host, "done", 0);
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
        set_pending(d, f, uv_now(d->loop));
    }
    ck_buf_release(&fallback);
    job_free(j);
    (void)uvst;
    status(d);
    if (d->stopping)
        maybe_exit(d);
    else
        start_jobs(d);
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
    j->claim = claim_path(d, f->rel, &f->id);
    j->out = out_path(d, f->rel);
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

static void start_jobs(daemon_t *d)
{
    while (!d->stopping && d->qhead != NULL && d->nrunning < d->w->workers) {
        file_t *f = d->qhead;
        job_t *j;

        d->qhead = f->qnext;
        if (d->qhead == NULL)
            d->qtail = NULL;
        d->nqueued--;
        if (f->dirty) {     /* changed while queued: its claim is stale */
            char *cp = claim_path(d, f->rel, &f->id);

            if (cp != NULL)
                unlink(cp);
            ck_free(cp);
            f->dirty = 0;
            f->state = F_OTHER;
            set_pending(d, f, uv_now(d->loop));
            continue;
        }
        j = job_new(d, f);
        if (j == NULL) {
            ck_log(CK_LOG_ERR, "%s: out of memory; will retry", f->rel);
            f->state = F_OTHER;
            set_pending(d, f, uv_now(d->loop));
            break;
        }
        if (uv_queue_work(d->loop, &j->req, work_cb, after_work_cb) < 0) {
            unlink(j->claim);
            job_free(j);
            f->state = F_OTHER;
            set_pending(d, f, uv_now(d->loop));
            break;
        }
        f->state = F_RUNNING;
        d->running[d->nrunning++] = j;
    }
    status(d);
}

static void enqueue(daemon_t *d, file_t *f)
{
    leave_pending(d, f, F_QUEUED);
    f->qnext = NULL;
    if (d->qtail != NULL)
        d->qtail->qnext = f;
    else
        d->qhead = f;
    d->qtail = f;
    d->nqueued++;
}

/* ---- readiness ------------------------------------------------------------ */

/*
 * Complete means: nobody has it open for writing (where a lease tells), and
 * a zip's end records and central directory parse, or a legacy stream
 * opens.  1 complete, 0 not yet.
 */
static int complete(const ck_conf_t *conf, const char *path, const ident_t *id)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    ident_t now;
    uint8_t magic[2] = { 0, 0 };
    int ok = 0;

    if (fd < 0)
        return 0;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        goto out;
    ident_of(&st, &now);
    if (!ident_eq(&now, id) || st.st_size == 0)
        goto out;
    if (fcntl(fd, F_SETLEASE, F_RDLCK) < 0) {
        if (errno == EAGAIN)
            goto out;    /* open for writing somewhere */
    } else {
        fcntl(fd, F_SETLEASE, F_UNLCK);
    }
    if (ck_pread_full(fd, magic, 2, 0) < 0)
        goto out;
    if (magic[0] == 'P' && magic[1] == 'K') {
        ck_arena_t a = { 0 };
        ck_zip_t z;
        ck_err_t e = { 0 };

        ok = ck_zip_open(fd, (uint64_t)st.st_size, &a, &z, &e) == 0;
        ck_arena_release(&a);
    } else {
        ck_ckpt_t c;
        ck_open_opts_t o = { 0 };
        ck_err_t e = { 0 };

        ck_conf_limits(conf, &o.lim);
        o.allow = conf->allow;
        ok = ck_ckpt_open(&c, path, &o, &e) == 0;
        ck_ckpt_close(&c);
    }
out:
    close(fd);
    return ok;
}

/* Claim f (complete, or incomplete for too long) and queue its job. */
static void try_claim(daemon_t *d, file_t *f, const ident_t *id, uint64_t now)
{
    char *cp = claim_path(d, f->rel, id);

    if (cp == NULL) {
        f->next_check = now + 1000;
        return;
    }
    switch (claim(d, f->rel, cp)) {
    case CLAIM_OK:
        enqueue(d, f);
        break;
    case CLAIM_DONE:
        f->done = *id;
        leave_pending(d, f, F_DONE);
        break;
    case CLAIM_BUSY:     /* another daemon has it; look again later */
        f->next_check = now + d->w->claim_stale_s * 1000 / 2 + 1000;
        break;
    default:
        f->next_check = now + 5000;
        break;
    }
    ck_free(cp);
}

/*
 * The completeness probe reads the zip directory, or parses a whole legacy
 * stream: on the thread pool, so a big file cannot stall the loop.
 */
typedef struct {
    uv_work_t req;
    daemon_t *d;
    file_t *f;
    cref_t *cref;
    char *path;
    ident_t id;
    int ok;
} probe_t;

static void probe_work_cb(uv_work_t *req)
{
    probe_t *p = req->data;

    p->ok = complete(&p->cref->c, p->path, &p->id);
}

static void probe_done_cb(uv_work_t *req, int uvst)
{
    probe_t *p = req->data;
    daemon_t *d = p->d;
    file_t *f = p->f;
    uint64_t now = uv_now(d->loop);

    d->nprobing--;
    f->state = F_OTHER;
    if (d->stopping) {
        /* nothing more starts */
    } else if (f->dirty || uvst < 0) {
        f->dirty = 0;
        set_pending(d, f, now);        /* changed meanwhile: wait again */
    } else {
        uint64_t changed = f->last_change;   /* the probe changed nothing */

        set_pending(d, f, now);
        f->last_change = changed;
        if (!p->ok && now < f->last_change + d->w->incomplete_s * 1000)
            f->next_check = now + (d->w->settle_ms > 200 ? d->w->settle_ms
                                                         : 200);
        else
            try_claim(d, f, &p->id, now);
    }
    cref_put(p->cref);
    ck_free(p->path);
    ck_free(p);
    if (d->stopping)
        maybe_exit(d);
    else
        start_jobs(d);
}

static void probe(daemon_t *d, file_t *f, const char *path, const ident_t *id)
{
    uint64_t now = uv_now(d->loop);
    probe_t *p;

    if (d->nprobing >= d->w->workers) {     /* the pool is busy enough */
        f->next_check = now + 100;
        return;
    }
    p = ck_calloc(1, sizeof(*p));
    if (p == NULL || (p->path = ck_strdup(path)) == NULL) {
        ck_free(p);
        f->next_check = now + 1000;
        return;
    }
    p->d = d;
    p->f = f;
    p->id = *id;
    p->cref = d->cref;
    d->cref->refs++;
    p->req.data = p;
    if (uv_queue_work(d->loop, &p->req, probe_work_cb, probe_done_cb) < 0) {
        cref_put(p->cref);
        ck_free(p->path);
        ck_free(p);
        f->next_check = now + 1000;
        return;
    }
    d->nprobing++;
    leave_pending(d, f, F_PROBING);
    f->dirty = 0;
}

static void check_file(daemon_t *d, file_t *f, uint64_t now)
{
    char *path = ck_path_join(d->w->incoming, f->rel);
    struct stat st;
    ident_t id;

    if (path == NULL)
        return;
    if (lstat(path, &st) < 0) {
        ck_free(path);
        file_drop(d, f);
        return;
    }
    ident_of(&st, &id);
    if (!S_ISREG(st.st_mode)) {
        ck_log(CK_LOG_WARNING, "%s: skipped: not a regular file", path);
        f->done = id;
        leave_pending(d, f, F_SKIPPED);
        goto out;
    }
    if (!ident_eq(&id, &f->id)) {
        f->id = id;
        f->last_change = f->last_event = now;
        f->next_check = now + d->w->settle_ms;
        goto out;
    }
    if (now < f->last_event + d->w->settle_ms) {
        f->next_check = f->last_event + d->w->settle_ms;
        goto out;
    }
    if (f->done.size != 0 && ident_eq(&id, &f->done)) {
        leave_pending(d, f, F_DONE);   /* seen before, unchanged */
        goto out;
    }
    probe(d, f, path, &id);
out:
    ck_free(path);
}

static void tick_cb(uv_timer_t *t)
{
    daemon_t *d = t->data;
    uint64_t now = uv_now(d->loop);

    if (d->stopping || d->npending == 0)
        return;
    for (size_t i = 0; i < d->nbuckets; i++) {
        for (file_t *f = d->buckets[i], *next; f != NULL; f = next) {
            next = f->hnext;
            if (f->state == F_PENDING && now >= f->next_check)
                check_file(d, f, now);
        }
    }
    start_jobs(d);
}

/* ---- inotify and scans -------------------------------------------------- */

static const uint32_t WATCH_MASK =
    IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE |
    IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR |
    IN_DONT_FOLLOW | IN_EXCL_UNLINK;

static void add_watch(daemon_t *d, const char *rel)
{
    char *path = ck_path_join(d->w->incoming, rel);
    wdir_t *nd;
    int wd;

    if (path == NULL || d->ifd < 0)
        goto out;
    wd = inotify_add_watch(d->ifd, path, WATCH_MASK);
    if (wd < 0) {
        ck_log(CK_LOG_ERR, "inotify: %s: %s", path, strerror(errno));
        goto out;
    }
    for (size_t i = 0; i < d->ndirs; i++) {
        if (d->dirs[i].wd == wd) {   /* the same folder, maybe renamed */
            char *r = ck_strdup(rel);

            if (r != NULL) {
                ck_free(d->dirs[i].rel);
                d->dirs[i].rel = r;
            }
            goto out;
        }
    }
    nd = ck_realloc(d->dirs, (d->ndirs + 1) * sizeof(*nd));
    if (nd == NULL)
        goto out;
    d->dirs = nd;
    nd[d->ndirs].wd = wd;
    nd[d->ndirs].rel = ck_strdup(rel);
    if (nd[d->ndirs].rel != NULL)
        d->ndirs++;
out:
    ck_free(path);
}

static void timers(daemon_t *d);

static int root_watched(const daemon_t *d)
{
    for (size_t i = 0; i < d->ndirs; i++)
        if (d->dirs[i].rel[0] == '\0')
            return 1;
    return 0;
}

/*
 * A done input still in incoming with after = move or delete: the daemon
 * stopped between the record and the move.  Finish it now.
 */
static void after_again(daemon_t *d, file_t *f, const ident_t *id)
{
    char *in = ck_path_join(d->w->incoming, f->rel);

    if (in != NULL && file_after(d, f->rel, in, id) > 0)
        ck_log(CK_LOG_NOTICE, "%s: done earlier (audit log); %s it now", in,
               d->w->after == CK_AFTER_MOVE ? "moved" : "deleted");
    ck_free(in);
}

static void scan_dir(daemon_t *d, const char *rel, int depth, uint64_t now)
{
    char *path = ck_path_join(d->w->incoming, rel);
    DIR *dir = path ? opendir(path) : NULL;
    struct dirent *e;

    if (dir == NULL) {
        if (path != NULL && depth == 0 && !d->lost)
            ck_log(CK_LOG_ERR, "scan %s: %s", path, strerror(errno));
        ck_free(path);
        return;
    }
    if (d->w->recursive || (depth == 0 && !root_watched(d)))
        add_watch(d, rel);
    if (depth == 0 && d->lost && root_watched(d)) {
        d->lost = 0;
        ck_mkdirs(d->claims, 0750);
        ck_log(CK_LOG_NOTICE, "watching %s again", d->w->incoming);
        timers(d);
    }
    while ((e = readdir(dir)) != NULL) {
        char *r;
        struct stat st;

        if (e->d_name[0] == '.')   /* also ., .. and the claims folder */
            continue;
        r = ck_path_join(rel, e->d_name);
        if (r == NULL)
            break;
        if (fstatat(dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            if (S_ISDIR(st.st_mode)) {
                if (d->w->recursive && depth < MAX_DEPTH)
                    scan_dir(d, r, depth + 1, now);
            } else if (name_wanted(d->w, e->d_name)) {
                file_t *f = file_get(d, r);
                ident_t id;

                ident_of(&st, &id);
                if (f != NULL) {
                    f->seen = 1;
                    f->scanned = id;
                    if (f->state == F_OTHER && f->done.size == 0)
                        adopt(d, f, &id);
                    if (f->state == F_OTHER ||
                        ((f->state == F_DONE || f->state == F_FAILED ||
                          f->state == F_SKIPPED) && !ident_eq(&id, &f->done)))
                        set_pending(d, f, now);
                    else if (f->state == F_DONE && d->w->after != CK_AFTER_KEEP)
                        after_again(d, f, &id);
                }
            }
        }
        ck_free(r);
    }
    closedir(dir);
    ck_free(path);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Remove claims no file in incoming has any more (its input was moved,
 * deleted or replaced), once they are older than claim_stale_s and nobody
 * alive holds them; also the leftovers of a claim taken back.  Without this
 * a kept input's done claim would outlive the input forever.
 */
static void claims_gc(daemon_t *d)
{
    char **keep = ck_calloc(3 * d->nfiles + 1, sizeof(*keep));
    size_t n = 0;
    DIR *dir;
    struct dirent *e;
    struct timespec now;
    int dfd;

    if (keep == NULL)
        return;
    for (size_t i = 0; i < d->nbuckets; i++) {
        for (file_t *f = d->buckets[i]; f != NULL; f = f->hnext) {
            const ident_t *ids[] = { &f->id, &f->done, &f->scanned };

            for (size_t k = 0; k < CK_ARRAY_SIZE(ids); k++) {
                if (ids[k]->size == 0 && ids[k]->ino == 0)
                    continue;   /* never set */
                keep[n] = claim_path(d, f->rel, ids[k]);
                n += keep[n] != NULL;
            }
        }
    }
    qsort(keep, n, sizeof(*keep), cmp_str);
    clock_gettime(CLOCK_REALTIME, &now);
    /* the folder itself, never a symlink put in its place: what is removed
     * is removed from it (unlinkat), wherever the path points meanwhile */
    dfd = open(d->claims, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    dir = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (dir == NULL && dfd >= 0)
        close(dfd);
    while (dir != NULL && (e = readdir(dir)) != NULL) {
        char *path;
        struct stat st;
        int done, holder;

        if (e->d_name[0] == '.')
            continue;
        path = ck_path_join(d->claims, e->d_name);
        if (path == NULL)
            break;
        if (bsearch(&path, keep, n, sizeof(*keep), cmp_str) == NULL &&
            fstatat(dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISREG(st.st_mode) &&
            now.tv_sec - st.st_mtime >= (time_t)d->w->claim_stale_s &&
            (strstr(e->d_name, ".stale.") != NULL ||
             strstr(e->d_name, ".tmp.") != NULL ||
             !claim_alive(d, path, &done, &holder, NULL) || done))
            unlinkat(dirfd(dir), e->d_name, 0);
        ck_free(path);
    }
    if (dir != NULL)
        closedir(dir);
    for (size_t i = 0; i < n; i++)
        ck_free(keep[i]);
    ck_free(keep);
}

static void rescan(daemon_t *d)
{
    uint64_t now = uv_now(d->loop);

    for (size_t i = 0; i < d->nbuckets; i++)
        for (file_t *f = d->buckets[i]; f != NULL; f = f->hnext)
            f->seen = 0;
    scan_dir(d, "", 0, now);
    /* forget what is gone, unless a job holds it */
    for (size_t i = 0; i < d->nbuckets; i++) {
        for (file_t *f = d->buckets[i], *next; f != NULL; f = next) {
            next = f->hnext;
            if (!f->seen && !busy(f))
                file_drop(d, f);
        }
    }
    if (!d->lost)
        claims_gc(d);
    status(d);
}

static void rescan_cb(uv_timer_t *t)
{
    daemon_t *d = t->data;

    if (!d->stopping)
        rescan(d);
}

static const char *dir_of_wd(daemon_t *d, int wd)
{
    for (size_t i = 0; i < d->ndirs; i++)
        if (d->dirs[i].wd == wd)
            return d->dirs[i].rel;
    return NULL;
}

static void forget_wd(daemon_t *d, int wd)
{
    for (size_t i = 0; i < d->ndirs; i++) {
        if (d->dirs[i].wd == wd) {
            ck_free(d->dirs[i].rel);
            d->dirs[i] = d->dirs[--d->ndirs];
            return;
        }
    }
}

static void event(daemon_t *d, const struct inotify_event *ev, uint64_t now,
                  int *need_rescan)
{
    const char *drel;
    char *rel;

    if (ev->mask & IN_Q_OVERFLOW) {
        ck_log(CK_LOG_WARNING, "inotify queue overflowed; rescanning");
        *need_rescan = 1;
        return;
    }
    drel = dir_of_wd(d, ev->wd);
    if (drel == NULL)
        return;
    if (ev->mask & IN_IGNORED) {
        if (drel[0] == '\0') {
            ck_log(CK_LOG_ERR, "%s is gone; looking for it every second",
                   d->w->incoming);
            d->lost = 1;
            uv_timer_start(&d->rescan, rescan_cb, 1000, 1000);
        }
        forget_wd(d, ev->wd);
        return;
    }
    if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
        /* a moved incoming is not incoming any more: drop its watch */
        if (drel[0] == '\0' && (ev->mask & IN_MOVE_SELF))
            inotify_rm_watch(d->ifd, ev->wd);
        *need_rescan = 1;
        return;
    }
    if (ev->len == 0 || ev->name[0] == '.')
        return;
    rel = ck_path_join(drel, ev->name);
    if (rel == NULL)
        return;
    if (ev->mask & IN_ISDIR) {
        if (d->w->recursive && (ev->mask & (IN_CREATE | IN_MOVED_TO)))
            scan_dir(d, rel, 1, now);   /* files may be there already */
        else if (ev->mask & IN_MOVED_FROM)
            *need_rescan = 1;
    } else if (name_wanted(d->w, ev->name)) {
        file_t *f = file_find(d, rel);

        if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
            if (f != NULL && !busy(f))
                file_drop(d, f);
        } else {
            if (f == NULL)
                f = file_get(d, rel);
            if (f != NULL) {
                /* done files wait for the identity check in check_file */
                if (f->state == F_PENDING) {
                    f->last_event = now;
                    f->next_check = now + d->w->settle_ms;
                } else {
                    set_pending(d, f, now);
                }
            }
        }
    }
    ck_free(rel);
}

static void poll_cb(uv_poll_t *p, int st, int events)
{
    daemon_t *d = p->data;
    char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
    uint64_t now = uv_now(d->loop);
    int need_rescan = 0;

    for (;;) {
        ssize_t n = read(d->ifd, buf, sizeof(buf));

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        for (char *q = buf; q < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)q;

            if (!d->stopping)
                event(d, ev, now, &need_rescan);
            q += sizeof(*ev) + ev->len;
        }
    }
    if (need_rescan && !d->stopping)
        rescan(d);
    (void)st;
    (void)events;
}

static int watch_start(daemon_t *d)
{
    struct statfs sf;

    d->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (d->ifd < 0) {
        ck_log(CK_LOG_ERR, "inotify: %s; relying on rescans", strerror(errno));
        return 0;
    }
    d->poll = ck_calloc(1, sizeof(*d->poll));
    if (d->poll == NULL || uv_poll_init(d->loop, d->poll, d->ifd) < 0) {
        ck_log(CK_LOG_ERR, "inotify: out of memory; relying on rescans");
        ck_free(d->poll);
        d->poll = NULL;
        close(d->ifd);
        d->ifd = -1;
        return 0;
    }
    d->poll->data = d;
    uv_poll_start(d->poll, UV_READABLE, poll_cb);
    add_watch(d, "");
    d->remote_fs = 0;
    if (statfs(d->w->incoming, &sf) == 0) {
        switch ((unsigned long)sf.f_type) {
        case 0x6969:        /* NFS */
        case 0x517b:        /* SMB */
        case 0xff534d42:    /* CIFS */
        case 0xfe534d42:    /* SMB2 */
        case 0x65735546:    /* FUSE */
        case 0x47504653:    /* GPFS */
        case 0x0bd00bd0:    /* Lustre */
            d->remote_fs = 1;
            ck_log(CK_LOG_NOTICE, "%s is a network file system: inotify does "
                   "not see other hosts' writes there; relying on a rescan "
                   "every %llu s", d->w->incoming,
                   (unsigned long long)(d->w->rescan_s ? d->w->rescan_s : 10));
            break;
        }
    }
    return 0;
}

static void free_cb(uv_handle_t *h)
{
    ck_free(h);
}

static void watch_stop(daemon_t *d)
{
    if (d->poll != NULL) {
        uv_poll_stop(d->poll);
        uv_close((uv_handle_t *)d->poll, free_cb);
        d->poll = NULL;
    }
    if (d->ifd >= 0)
        close(d->ifd);
    d->ifd = -1;
    for (size_t i = 0; i < d->ndirs; i++)
        ck_free(d->dirs[i].rel);
    ck_free(d->dirs);
    d->dirs = NULL;
    d->ndirs = 0;
}

/* ---- configuration, folders and the audit log ----------------------------- */

static int check_dir(const char *what, const char *path, int create,
                     ck_err_t *err)
{
    struct stat st;

    if (path == NULL)
        return ck_err_set(err, CK_ECONFIG, "[watch] %s = DIR is required", what);
    if (create && ck_mkdirs(path, 0750) < 0)
        return ck_err_set(err, CK_ECONFIG, "[watch] %s = %s: %s", what, path,
                          strerror(errno));
    if (stat(path, &st) < 0)
        return ck_err_set(err, CK_ECONFIG, "[watch] %s = %s: %s", what, path,
                          strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return ck_err_set(err, CK_ECONFIG, "[watch] %s = %s: not a folder",
                          what, path);
    return 0;
}

static int world_writable(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && (st.st_mode & S_IWOTH);
}

static int folders(const ck_watch_conf_t *w, ck_err_t *err)
{
    char *logdir;
    int rc;

    if ((rc = check_dir("incoming", w->incoming, 0, err)) < 0 ||
        (rc = check_dir("output", w->output, 1, err)) < 0 ||
        (rc = check_dir("failed", w->failed, 1, err)) < 0 ||
        (w->after == CK_AFTER_MOVE &&
         (rc = check_dir("done", w->done, 1, err)) < 0))
        return rc;
    if (w->audit_log == NULL)
        return ck_err_set(err, CK_ECONFIG, "[watch] audit_log = FILE is required");
    logdir = ck_strdup(w->audit_log);
    if (logdir == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    if (strrchr(logdir, '/') != NULL)
        *strrchr(logdir, '/') = '\0';
    else
        strcpy(logdir, ".");
    rc = ck_mkdirs(logdir, 0750);
    if (rc == 0 && !w->allow_world_writable &&
        (world_writable(w->output) || world_writable(logdir)))
        rc = ck_err_set(err, CK_ECONFIG,
                        "%s is world-writable: refusing to start (set "
                        "allow_world_writable = yes in [watch] to override)",
                        world_writable(w->output) ? w->output : logdir);
    else if (rc < 0)
        rc = ck_err_set(err, CK_ECONFIG, "audit_log folder %s: %s", logdir,
                        strerror(-rc));
    ck_free(logdir);
    return rc;
}

int ck_watch_check(const ck_conf_t *c,
                   void (*report)(void *ud, const char *msg), void *ud)
{
    const ck_watch_conf_t *w = &c->watch;
    const char *names[] = { "output", "failed", "done" };
    const char *paths[] = { w->output, w->failed,
                            w->after == CK_AFTER_MOVE ? w->done : NULL };
    struct stat in, st;
    char msg[1024];
    int n = 0;

    if (w->incoming == NULL)
        return 0;
    if (stat(w->incoming, &in) < 0) {
        snprintf(msg, sizeof(msg), "[watch] incoming = %s: %s", w->incoming,
                 strerror(errno));
        report(ud, msg);
        return 1;
    }
    for (size_t i = 0; i < CK_ARRAY_SIZE(paths); i++) {
        if (paths[i] == NULL || stat(paths[i], &st) < 0)
            continue;
        if (st.st_dev != in.st_dev) {
            snprintf(msg, sizeof(msg),
                     "[watch] %s = %s is not on incoming's file system: moving "
                     "inputs there copies them instead of renaming", names[i],
                     paths[i]);
            report(ud, msg);
            n++;
        }
    }
    return n;
}

static void warn_cb(void *ud, const char *msg)
{
    ck_log(CK_LOG_WARNING, "%s", msg);
    (void)ud;
}

static void audit_cb(void *ud, const ck_audit_entry_t *e)
{
    daemon_t *d = ud;
    char *in = json_reading(d->w->incoming);
    const char *prefix = in ? in : d->w->incoming;
    size_t n = strlen(prefix);
    file_t *f = NULL;

    if (strncmp(e->path, prefix, n) == 0 && e->path[n] == '/')
        f = file_get(d, e->path + n + 1);
    ck_free(in);
    if (f == NULL)
        return;
    /* (on a reload that opens another log, a file may be on its way) */
    if (f->state == F_OTHER || f->state == F_DONE || f->state == F_FAILED ||
        f->state == F_SKIPPED)
        f->state = strcmp(e->status, "ok") == 0 ? F_DONE : F_FAILED;
    f->done.ino = e->inode;
    f->done.size = e->size;
    f->done.mtime_ns = e->mtime_ns;
}

static int audit_open(daemon_t *d)
{
    ck_err_t e = { 0 };

    if (ck_audit_open(&d->audit, d->w->audit_log, audit_cb, d, &e) < 0) {
        ck_log(CK_LOG_ERR, "audit log: %s", e.msg);
        return -1;
    }
    if (d->audit.torn_bytes)
        ck_log(CK_LOG_WARNING, "audit log %s: cut a torn last record (%llu "
               "bytes, from an interrupted write)", d->w->audit_log,
               (unsigned long long)d->audit.torn_bytes);
    if (d->audit.bad_lines)
        ck_log(CK_LOG_WARNING, "audit log %s: %llu lines do not parse; skipped",
               d->w->audit_log, (unsigned long long)d->audit.bad_lines);
    return 0;
}

/* Folders as absolute paths, so records name files wherever read from. */
static int absolute(ck_conf_t *c, ck_err_t *err)
{
    ck_watch_conf_t *w = &c->watch;
    char **dirs[] = { &w->incoming, &w->output, &w->failed, &w->done };
    char *real, *slash, *base;

    for (size_t i = 0; i < CK_ARRAY_SIZE(dirs); i++) {
        if (*dirs[i] == NULL || (i == 3 && w->after != CK_AFTER_MOVE))
            continue;
        real = realpath(*dirs[i], NULL);
        if (real == NULL)
            return ck_err_set(err, CK_ECONFIG, "%s: %s", *dirs[i],
                              strerror(errno));
        *dirs[i] = ck_arena_strdup(&c->arena, real);
        free(real);
        if (*dirs[i] == NULL)
            return ck_err_set(err, CK_ENOMEM, "out of memory");
    }
    slash = strrchr(w->audit_log, '/');
    base = slash ? slash + 1 : w->audit_log;
    if (slash != NULL)
        *slash = '\0';
    real = realpath(slash ? (w->audit_log[0] ? w->audit_log : "/") : ".", NULL);
    if (slash != NULL)
        *slash = '/';
    if (real == NULL)
        return ck_err_set(err, CK_ECONFIG, "%s: %s", w->audit_log,
                          strerror(errno));
    w->audit_log = ck_arena_printf(&c->arena, "%s/%s",
                                   strcmp(real, "/") ? real : "", base);
    free(real);
    if (w->audit_log == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    return 0;
}

/*
 * output, failed and done may not be incoming (outputs would be taken for
 * inputs and written over them), nor under it when recursive.  Takes the
 * absolute folders.
 */
static int apart(const ck_watch_conf_t *w, ck_err_t *err)
{
    const char *names[] = { "output", "failed", "done" };
    const char *paths[] = { w->output, w->failed,
                            w->after == CK_AFTER_MOVE ? w->done : NULL };
    size_t n = strlen(w->incoming);

    for (size_t i = 0; i < CK_ARRAY_SIZE(paths); i++) {
        if (paths[i] == NULL)
            continue;
        if (strcmp(paths[i], w->incoming) == 0 ||
            (w->recursive && strncmp(paths[i], w->incoming, n) == 0 &&
             paths[i][n] == '/'))
            return ck_err_set(err, CK_ECONFIG, "[watch] %s = %s is %s"
                              "incoming: its files would be taken for inputs",
                              names[i], paths[i],
                              paths[i][n] == '\0' ? "" : "inside ");
    }
    return 0;
}

static cref_t *load(const char *path)
{
    cref_t *r = ck_calloc(1, sizeof(*r));
    ck_err_t e = { 0 };

    if (r == NULL)
        return NULL;
    if (ck_conf_load(&r->c, path, &e) < 0) {
        ck_log(CK_LOG_ERR, "%s", e.msg);
        ck_conf_release(&r->c);
        ck_free(r);
        return NULL;
    }
    if (folders(&r->c.watch, &e) < 0 || absolute(&r->c, &e) < 0 ||
        apart(&r->c.watch, &e) < 0) {
        ck_log(CK_LOG_ERR, "%s: %s", path, e.msg);
        ck_conf_release(&r->c);
        ck_free(r);
        return NULL;
    }
    r->refs = 1;
    return r;
}

static void timers(daemon_t *d)
{
    uint64_t rescan = d->w->rescan_s ? d->w->rescan_s * 1000
                                     : d->remote_fs ? 10000 : 0;
    uint64_t tick = d->w->settle_ms / 4;
    uint64_t stale = d->w->claim_stale_s * 1000 / 3;

    tick = tick < 50 ? 50 : tick > 250 ? 250 : tick;
    uv_timer_start(&d->tick, tick_cb, tick, tick);
    if (rescan)
        uv_timer_start(&d->rescan, rescan_cb, rescan, rescan);
    else
        uv_timer_stop(&d->rescan);
    stale = stale < 1000 ? 1000 : stale;
    uv_timer_start(&d->refresh, refresh_cb, stale, stale);
}

static void reload(daemon_t *d)
{
    cref_t *r;
    const char *old_in, *old_log;
    int rewatch, relog;
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ck_notify("RELOADING=1\nMONOTONIC_USEC=%llu",
              (unsigned long long)ts.tv_sec * 1000000 +
                  (unsigned long long)ts.tv_nsec / 1000);
    ck_log(CK_LOG_NOTICE, "reloading %s", d->conf_path);
    r = load(d->conf_path);
    if (r == NULL) {
        ck_log(CK_LOG_ERR, "reload refused: the configuration above has errors;"
               " keeping the running one");
        ck_notify("READY=1");
        status(d);
        return;
    }
    old_in = d->w->incoming;
    old_log = d->w->audit_log;
    rewatch = strcmp(old_in, r->c.watch.incoming) != 0 ||
              d->w->recursive != r->c.watch.recursive;
    relog = strcmp(old_log, r->c.watch.audit_log) != 0;
    if (relog) {
        /* a log that cannot open refuses the reload: no record is lost */
        int fd = open(r->c.watch.audit_log, O_WRONLY | O_CREAT | O_APPEND |
                      O_NOFOLLOW | O_CLOEXEC, 0640);

        if (fd < 0) {
            ck_log(CK_LOG_ERR, "reload refused: audit log %s: %s; keeping the "
                   "running configuration", r->c.watch.audit_log,
                   strerror(errno));
            cref_put(r);
            ck_notify("READY=1");
            status(d);
            return;
        }
        close(fd);
    }
    if (rewatch)
        watch_stop(d);
    if (relog)
        ck_audit_close(&d->audit);
    cref_put(d->cref);      /* running jobs keep their own reference */
    d->cref = r;
    d->w = &r->c.watch;
    ck_free(d->claims);
    d->claims = ck_path_join(d->w->incoming, CLAIMS);
    if (d->claims != NULL)
        ck_mkdirs(d->claims, 0750);
    if (relog && audit_open(d) < 0)
        ck_log(CK_LOG_ERR, "no audit log: records are lost until it opens");
    if (rewatch)
        watch_start(d);
    timers(d);
    rescan(d);
    ck_log(CK_LOG_NOTICE, "reloaded: chain of %zu plugin%s", r->c.nchain,
           r->c.nchain == 1 ? "" : "s");
    ck_notify("READY=1");
    status(d);
}

/* ---- stopping ------------------------------------------------------------- */

static void close_cb(uv_handle_t *h)
{
    (void)h;
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, close_cb);
    (void)arg;
}

static void maybe_exit(daemon_t *d)
{
    if (d->nrunning > 0 || d->nprobing > 0)
        return;
    ck_log(CK_LOG_NOTICE, "stopped: %llu done, %llu failed",
           (unsigned long long)d->nok, (unsigned long long)d->nfailed);
    watch_stop(d);
    uv_walk(d->loop, close_walk_cb, NULL);
}

static void stop_timer_cb(uv_timer_t *t)
{
    daemon_t *d = t->data;

    ck_log(CK_LOG_WARNING, "%zu job%s still running after %llu s: abandoning "
           "(no output is left; they are redone at the next start)",
           d->nrunning, d->nrunning == 1 ? "" : "s",
           (unsigned long long)d->w->stop_timeout_s);
    __atomic_store_n(&d->cancel, 1, __ATOMIC_RELAXED);
}

static void stop(daemon_t *d)
{
    if (d->stopping) {
        if (!d->cancel && d->nrunning > 0)
            stop_timer_cb(&d->stop_timer);
        return;
    }
    d->stopping = 1;
    ck_notify("STOPPING=1");
    ck_log(CK_LOG_NOTICE, "stopping: %zu job%s running, %zu queued released",
           d->nrunning, d->nrunning == 1 ? "" : "s", d->nqueued);
    /* queued files give their claims back: they were not started */
    for (file_t *f = d->qhead; f != NULL; f = f->qnext) {
        char *cp = claim_path(d, f->rel, &f->id);

        if (cp != NULL)
            unlink(cp);
        ck_free(cp);
        f->state = F_OTHER;
    }
    d->qhead = d->qtail = NULL;
    d->nqueued = 0;
    uv_timer_stop(&d->tick);
    uv_timer_stop(&d->rescan);
    if (d->poll != NULL)
        uv_poll_stop(d->poll);
    status(d);
    if (d->nrunning > 0)
        uv_timer_start(&d->stop_timer, stop_timer_cb,
                       d->w->stop_timeout_s * 1000, 0);
    maybe_exit(d);
}

static void signal_cb(uv_signal_t *s, int signum)
{
    daemon_t *d = s->data;
    ck_err_t e = { 0 };

    switch (signum) {
    case SIGTERM:
    case SIGINT:
        stop(d);
        break;
    case SIGHUP:
        if (!d->stopping)
            reload(d);
        break;
    case SIGUSR1:
        if (ck_audit_reopen(&d->audit, &e) < 0)
            ck_log(CK_LOG_ERR, "audit log: reopen: %s", e.msg);
        else
            ck_log(CK_LOG_NOTICE, "audit log %s reopened", d->audit.path);
        break;
    }
}

static void watchdog_cb(uv_timer_t *t)
{
    ck_notify("WATCHDOG=1");
    (void)t;
}

/* ---- main ------------------------------------------------------------------ */

int ck_watch_main(const char *conf_path)
{
    static const int signums[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1 };
    daemon_t d;
    uv_loop_t loop;
    uint64_t wd_usec;
    char env[32], *abs_conf;
    int rc;

    memset(&d, 0, sizeof(d));
    d.ifd = -1;
    ck_log_init();
    /* absolute, so a reload finds it and records name it wherever read */
    abs_conf = realpath(conf_path, NULL);
    d.conf_path = abs_conf ? abs_conf : conf_path;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGXFSZ, SIG_IGN);    /* EFBIG fails the job, not the daemon */
    umask(umask(027) | 027);
    d.cref = load(d.conf_path);
    if (d.cref == NULL) {
        free(abs_conf);
        return 2;
    }
    d.w = &d.cref->c.watch;
    if (gethostname(d.host, sizeof(d.host) - 1) < 0)
        strcpy(d.host, "unknown");
    d.running = ck_calloc(64, sizeof(*d.running));
    d.claims = ck_path_join(d.w->incoming, CLAIMS);
    if (d.running == NULL || d.claims == NULL) {
        ck_log(CK_LOG_ERR, "out of memory");
        rc = 1;
        goto out;
    }
    if (ck_mkdirs(d.claims, 0750) < 0) {
        ck_log(CK_LOG_ERR, "%s: %s", d.claims, strerror(errno));
        rc = 1;
        goto out;
    }
    ck_watch_check(&d.cref->c, warn_cb, NULL);
    if (audit_open(&d) < 0) {
        rc = 1;
        goto out;
    }
    /* the pool holds every worker, and room for readiness probes beside
     * them (a reload may raise workers: keep a margin) */
    snprintf(env, sizeof(env), "%d",
             d.w->workers + 2 > 4 ? (int)d.w->workers + 2 : 4);
    setenv("UV_THREADPOOL_SIZE", env, 0);
    uv_loop_init(&loop);
    d.loop = &loop;
    uv_timer_init(&loop, &d.tick);
    uv_timer_init(&loop, &d.rescan);
    uv_timer_init(&loop, &d.refresh);
    uv_timer_init(&loop, &d.stop_timer);
    uv_timer_init(&loop, &d.watchdog);
    d.tick.data = d.rescan.data = d.refresh.data = d.stop_timer.data =
        d.watchdog.data = &d;
    for (size_t i = 0; i < CK_ARRAY_SIZE(signums); i++) {
        uv_signal_init(&loop, &d.sig[i]);
        d.sig[i].data = &d;
        uv_signal_start(&d.sig[i], signal_cb, signums[i]);
    }
    watch_start(&d);
    timers(&d);
    rescan(&d);
    wd_usec = ck_notify_watchdog_usec();
    if (wd_usec > 0)
        uv_timer_start(&d.watchdog, watchdog_cb, wd_usec / 2000,
                       wd_usec / 2000 ? wd_usec / 2000 : 1);
    ck_log(CK_LOG_NOTICE, "watching %s (%s, %llu worker%s, chain of %zu "
           "plugin%s); audit log %s", d.w->incoming,
           d.w->recursive ? "recursive" : "top folder only",
           (unsigned long long)d.w->workers, d.w->workers == 1 ? "" : "s",
           d.cref->c.nchain, d.cref->c.nchain == 1 ? "" : "s", d.w->audit_log);
    ck_notify("READY=1");
    status(&d);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    rc = 0;
out:
    for (size_t i = 0; i < d.nbuckets; i++)
        for (file_t *f = d.buckets[i], *next; f != NULL; f = next) {
            next = f->hnext;
            ck_free(f->rel);
            ck_free(f);
        }
    ck_free(d.buckets);
    ck_free(d.running);
    ck_free(d.claims);
    ck_audit_close(&d.audit);
    cref_put(d.cref);
    free(abs_conf);
    return rc;
}
