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
 * The daemon is split by concern, sharing watch_int.h: watch_table.c (the
 * file table, names), watch_claim.c (claims, readiness), watch_job.c (jobs),
 * watch_scan.c (inotify, scans).  This file holds what is left: the
 * configuration as the daemon loads it (folders made and made absolute,
 * the audit log read back), reload, stopping and ck_watch_main.
 */
#define _GNU_SOURCE
#include "watch.h"
#include "watch_int.h"

#include "fsutil.h"
#include "log.h"
#include "record.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- configuration, folders and the audit log --------------------------- */

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

/*
 * The audit log read back: on the thread pool at start (the loop serves
 * signals and inotify meanwhile; no file is checked, rescanned or claimed
 * until it is applied), on the loop at a reload that opens another log.
 * The reader keeps, for each record of an input of incoming, only where it
 * is (a 16-byte slot: the hash of its path, the line's offset and length),
 * reading three fields of each line (ck_record_skim)
 * and jansson only for a line the skim cannot read: a log of a million
 * records is read in a fraction of a second, in tens of MiB.  The loop
 * then reads back, with jansson, the records of the files it finds in
 * incoming, and forgets the index.
 */
static void stop(daemon_t *d);
static void reload(daemon_t *d);

typedef struct {
    uint64_t h;             /* of the path under incoming */
    uint64_t at;            /* offset << 24 | length (0: longer) */
} logslot_t;

/* Appended in the log's order as it is read (no random access into a big
 * table per line), then sorted by hash, stably: the last slot of a run of
 * one hash is the input's last record. */
struct logidx {
    logslot_t *v;
    size_t n, cap;
};

typedef struct {
    uv_work_t req;
    daemon_t *d;
    char *in;               /* incoming as records spell it */
    size_t inlen;
    struct logidx idx;
    uint64_t lines;
    ck_audit_t audit;
    ck_err_t err;
    int rc;
} loader_t;

static uint64_t path_hash(const char *p, size_t n)
{
    return ck_hash_fnv1a(p, n);
}

static int idx_put(struct logidx *x, uint64_t h, uint64_t off, size_t len)
{
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 4096;
        logslot_t *v = ck_realloc(x->v, cap * sizeof(*v));

        if (v == NULL)
            return CK_ENOMEM;
        x->v = v;
        x->cap = cap;
    }
    x->v[x->n].h = h;
    x->v[x->n].at = off << 24 | (len < (1u << 24) ? len : 0);
    x->n++;
    return 0;
}

/* Sort by hash, stably (LSD radix, 16 bits a pass). */
static int idx_sort(struct logidx *x)
{
    logslot_t *tmp = ck_malloc((x->n ? x->n : 1) * sizeof(*tmp)), *a = x->v;
    size_t *count = ck_calloc(65536, sizeof(*count));

    if (tmp == NULL || count == NULL) {
        ck_free(tmp);
        ck_free(count);
        return CK_ENOMEM;
    }
    for (int shift = 0; shift < 64; shift += 16) {
        size_t sum = 0;

        memset(count, 0, 65536 * sizeof(*count));
        for (size_t i = 0; i < x->n; i++)
            count[(a[i].h >> shift) & 0xffff]++;
        for (size_t k = 0; k < 65536; k++) {
            size_t c = count[k];

            count[k] = sum;
            sum += c;
        }
        for (size_t i = 0; i < x->n; i++)
            tmp[count[(a[i].h >> shift) & 0xffff]++] = a[i];
        {
            logslot_t *t = a;

            a = tmp;
            tmp = t;
        }
    }
    x->v = a;               /* four passes: back in the first buffer */
    ck_free(tmp);
    ck_free(count);
    return 0;
}

/* The last slot of hash h, or NULL. */
static const logslot_t *idx_find(const struct logidx *x, uint64_t h)
{
    size_t lo = 0, hi = x->n;

    while (lo < hi) {       /* the first slot past h */
        size_t mid = lo + (hi - lo) / 2;

        if (x->v[mid].h <= h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo > 0 && x->v[lo - 1].h == h ? &x->v[lo - 1] : NULL;
}

/* A line of the audit log: where the last record of its input is, unless
 * the job is to be redone.  Stops when the daemon is stopping. */
static int audit_cb(void *ud, const char *line, size_t len, uint64_t at)
{
    loader_t *l = ud;
    ck_record_skim_t k;
    ck_record_t r = { 0 };
    const char *path, *status, *code;
    size_t plen, clen;
    int rc = 0, parsed = 0;

    if ((++l->lines & 4095) == 0 &&
        __atomic_load_n(&l->d->stopping, __ATOMIC_RELAXED))
        return CK_ECANCELED;
    if (ck_record_skim(line, len, &k) == 0) {
        path = k.path;
        plen = k.path_len;
        status = k.status;
        code = k.error_code;
        clen = k.error_code_len;
    } else {
        rc = ck_record_parse(line, len, &r);
        if (rc < 0)
            return rc;
        parsed = 1;
        path = r.in.path;
        plen = path ? strlen(path) : 0;
        status = r.status;
        code = r.error_code;
        clen = code ? strlen(code) : 0;
    }
    /* abandoned, or not the file claimed: to be redone */
    if (path == NULL || status == NULL || (code != NULL &&
        ((clen == strlen(ck_errname(CK_ECANCELED)) &&
          memcmp(code, ck_errname(CK_ECANCELED), clen) == 0) ||
         (clen == strlen(ck_errname(CK_ECHANGED)) &&
          memcmp(code, ck_errname(CK_ECHANGED), clen) == 0))))
        goto out;
    /* the record's path is incoming's reading, then the file's */
    if (plen <= l->inlen + 1 || memcmp(path, l->in, l->inlen) != 0 ||
        path[l->inlen] != '/')
        goto out;
    rc = idx_put(&l->idx, path_hash(path + l->inlen + 1, plen - l->inlen - 1),
                 at, len);
out:
    if (parsed)
        ck_record_release(&r);
    return rc == CK_ENOMEM ? CK_ECANCELED : 0;
}

static void loader_free(loader_t *l)
{
    ck_free(l->idx.v);
    ck_free(l->in);
    l->idx.v = NULL;
    l->idx.n = l->idx.cap = 0;
    l->in = NULL;
}

/* The line at slot s of the log (fd): a new string, or NULL. */
static char *read_line(int fd, const logslot_t *s, size_t *n)
{
    uint64_t off = s->at >> 24;
    size_t len = (size_t)(s->at & ((1u << 24) - 1)), cap = len ? len : 1 << 16;
    char *buf = ck_malloc(cap + 1);
    size_t have = 0;

    while (buf != NULL) {
        ssize_t r = pread(fd, buf + have, cap - have, (off_t)(off + have));
        char *nl;

        if (r <= 0)
            break;
        have += (size_t)r;
        if (len != 0 && have == len) {
            *n = len;
            buf[len] = '\0';
            return buf;
        }
        nl = len == 0 ? memchr(buf, '\n', have) : NULL;
        if (nl != NULL) {
            *n = (size_t)(nl - buf);
            *nl = '\0';
            return buf;
        }
        if (have == cap) {
            char *b = ck_realloc(buf, cap * 2 + 1);

            if (b == NULL)
                break;
            buf = b;
            cap *= 2;
        }
    }
    ck_free(buf);
    return NULL;
}

/*
 * While the index is there (start, or a reload that opened another log):
 * what the log says of f, as the last record of its input says it: f's
 * done identity, and done or failed (with that record, to file it in
 * failed/ if the input is still here).
 */
void watch_log_lookup(daemon_t *d, file_t *f)
{
    const struct logidx *x = d->logidx;
    char *key = NULL, *line = NULL, *want = NULL;
    const char *name = f->rel;
    const logslot_t *s;
    ck_record_t r = { 0 };
    size_t n = 0;
    int ok, parsed = 0;

    if (x == NULL || x->n == 0)
        return;
    if (!ck_utf8_valid(f->rel, strlen(f->rel))) {
        key = ck_record_reading(f->rel);    /* as its records spell it */
        if (key == NULL)
            return;
        name = key;
    }
    s = idx_find(x, path_hash(name, strlen(name)));
    if (s == NULL)
        goto out;
    line = read_line(d->audit.fd, s, &n);
    want = ck_record_reading(d->w->incoming);
    if (line == NULL || want == NULL || ck_record_parse(line, n, &r) < 0)
        goto out;
    parsed = 1;
    /* the same path, not another of the same hash */
    if (r.in.path == NULL || r.status == NULL ||
        strncmp(r.in.path, want, strlen(want)) != 0 ||
        r.in.path[strlen(want)] != '/' ||
        strcmp(r.in.path + strlen(want) + 1, name) != 0)
        goto out;
    ok = strcmp(r.status, "ok") == 0;
    /* (on a reload that opens another log, a file may be on its way) */
    if (f->state == F_OTHER || f->state == F_DONE || f->state == F_FAILED ||
        f->state == F_SKIPPED)
        f->state = ok ? F_DONE : F_FAILED;
    f->done.ino = r.in.inode;
    f->done.size = r.in.size;
    f->done.mtime_ns = r.in.mtime_ns;
    ck_free(f->failrec);
    f->failrec = f->state == F_FAILED ? ck_record_unlogged(line, n) : NULL;
out:
    if (parsed)
        ck_record_release(&r);
    ck_free(want);
    ck_free(line);
    ck_free(key);
}

/* The index read becomes the files' done identities: those known now, and
 * those the rescan that follows finds. */
static void apply(daemon_t *d, loader_t *l)
{
    d->logidx = &l->idx;
    for (size_t i = 0; i < d->nbuckets; i++)
        for (file_t *f = d->buckets[i]; f != NULL; f = f->hnext)
            watch_log_lookup(d, f);
    if (d->audit.torn_bytes)
        ck_log(CK_LOG_WARNING, "audit log %s: cut a torn last record (%llu "
               "bytes, from an interrupted write)", d->w->audit_log,
               (unsigned long long)d->audit.torn_bytes);
    if (d->audit.bad_lines)
        ck_log(CK_LOG_WARNING, "audit log %s: %llu lines do not parse; skipped",
               d->w->audit_log, (unsigned long long)d->audit.bad_lines);
}

static int loader_init(daemon_t *d, loader_t *l)
{
    memset(l, 0, sizeof(*l));
    l->d = d;
    l->req.data = l;
    l->in = ck_record_reading(d->w->incoming);
    if (l->in == NULL)
        return -1;
    l->inlen = strlen(l->in);
    return 0;
}

void watch_logidx_drop(daemon_t *d)
{
    if (d->logidx != NULL)
        ck_free(d->logidx->v);
    ck_free(d->logidx);
    d->logidx = NULL;
}

/*
 * The log read into l's index, sorted: a big log in two halves at once
 * (ck_audit_open2), the second's slots put after the first's.  0 or the
 * error (in l->err).
 */
static int load_log(loader_t *l, ck_audit_t *a)
{
    loader_t second;
    int rc;

    memset(&second, 0, sizeof(second));
    second.d = l->d;
    second.in = l->in;
    second.inlen = l->inlen;
    rc = ck_audit_open2(a, l->d->w->audit_log, audit_cb, l, &second, &l->err);
    l->lines += second.lines;
    if (rc == 0 && second.idx.n > 0) {
        struct logidx *x = &l->idx;

        if (x->cap - x->n < second.idx.n) {
            logslot_t *v = ck_realloc(x->v, (x->n + second.idx.n) * sizeof(*v));

            if (v == NULL)
                rc = CK_ENOMEM;
            else
                x->v = v, x->cap = x->n + second.idx.n;
        }
        if (rc == 0) {
            memcpy(x->v + x->n, second.idx.v, second.idx.n * sizeof(*x->v));
            x->n += second.idx.n;
        }
    }
    ck_free(second.idx.v);
    if (rc == 0)
        rc = idx_sort(&l->idx);
    if (rc == CK_ENOMEM)
        ck_err_set(&l->err, rc, "out of memory");
    return rc;
}

/* At a reload: read the log on the loop. */
static int audit_open(daemon_t *d)
{
    loader_t l;

    watch_logidx_drop(d);       /* the first scan's: this one's instead */
    if (loader_init(d, &l) < 0)
        goto fail;
    if (load_log(&l, &d->audit) < 0)
        goto fail;
    apply(d, &l);
    watch_rescan(d);
    d->logidx = NULL;
    loader_free(&l);
    return 0;
fail:
    ck_log(CK_LOG_ERR, "audit log: %s", l.in ? l.err.msg : "out of memory");
    loader_free(&l);
    return -1;
}

static void load_work_cb(uv_work_t *req)
{
    loader_t *l = req->data;

    l->rc = load_log(l, &l->audit);
}

static void load_done_cb(uv_work_t *req, int uvst)
{
    loader_t *l = req->data;
    daemon_t *d = l->d;

    d->loading = 0;
    if (l->rc == 0 && uvst == 0 && !d->stopping) {
        d->audit = l->audit;
        apply(d, l);
        ck_log(CK_LOG_NOTICE, "audit log read back: %llu records",
               (unsigned long long)l->lines);
        /* the first scan walks on the pool too: the index stays the
         * daemon's until that scan is applied */
        d->logidx = ck_malloc(sizeof(*d->logidx));
        if (d->logidx != NULL) {
            *d->logidx = l->idx;
            l->idx.v = NULL;
            watch_rescan_async(d);
            if (!d->scanning)
                watch_logidx_drop(d);
        } else {
            d->logidx = &l->idx;
            watch_rescan(d);
            d->logidx = NULL;
        }
        watch_pump(d);
        if (d->hup_pending)
            reload(d);
    } else {
        if (l->rc < 0 && l->rc != CK_ECANCELED) {
            ck_log(CK_LOG_ERR, "audit log: %s", l->err.msg);
            d->exit_code = 1;
        }
        ck_audit_close(&l->audit);
        if (!d->stopping)
            stop(d);
    }
    loader_free(l);
    ck_free(l);
    if (d->stopping)
        watch_maybe_exit(d);
}

/* At start: read the log on the thread pool. */
static int audit_load(daemon_t *d)
{
    loader_t *l = ck_calloc(1, sizeof(*l));

    if (l == NULL || loader_init(d, l) < 0 ||
        uv_queue_work(d->loop, &l->req, load_work_cb, load_done_cb) < 0) {
        if (l != NULL)
            loader_free(l);
        ck_free(l);
        return -1;
    }
    d->loading = 1;
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
    if (folders(&r->c.watch, &e) < 0 || absolute(&r->c, &e) < 0) {
        ck_log(CK_LOG_ERR, "%s: %s", path, e.msg);
        ck_conf_release(&r->c);
        ck_free(r);
        return NULL;
    }
    r->refs = 1;
    return r;
}

void watch_timers(daemon_t *d)
{
    uint64_t rescan = d->w->rescan_s ? d->w->rescan_s * 1000
                                     : d->remote_fs ? 10000 : 0;
    uint64_t stale = d->w->claim_stale_s * 1000 / 3;

    d->armed_at = 0;
    watch_arm(d);
    if (rescan)
        uv_timer_start(&d->rescan, watch_rescan_cb, rescan, rescan);
    else
        uv_timer_stop(&d->rescan);
    stale = stale < 1000 ? 1000 : stale;
    uv_timer_start(&d->refresh, watch_refresh_cb, stale, stale);
    /* claims are collected even when nothing rescans */
    uv_timer_start(&d->gc, watch_gc_cb, stale * 3, stale * 3);
    if (d->w->metrics_file != NULL)
        uv_timer_start(&d->metrics, watch_metrics_cb, d->w->metrics_s * 1000,
                       d->w->metrics_s * 1000);
    else
        uv_timer_stop(&d->metrics);
}

/* Queued files give their claims back (stopping, or a new incoming). */
static void release_queued(daemon_t *d)
{
    for (file_t *f = d->qhead; f != NULL; f = f->qnext) {
        watch_unclaim(d, f);
        f->state = F_OTHER;
    }
    d->qhead = d->qtail = NULL;
    d->nqueued = 0;
}

/* Forget every file no probe or job holds. */
static void forget(daemon_t *d)
{
    for (size_t i = 0; i < d->nbuckets; i++) {
        for (file_t *f = d->buckets[i], *next; f != NULL; f = next) {
            next = f->hnext;
            if (!watch_busy(f))
                watch_file_drop(d, f);
        }
    }
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
        watch_status(d);
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
            watch_cref_put(r);
            ck_notify("READY=1");
            watch_status(d);
            return;
        }
        close(fd);
    }
    if (rewatch)
        watch_stop(d);
    if (strcmp(old_in, r->c.watch.incoming) != 0) {
        /* the table and the queue are of the old incoming: its queued files
         * give their claims back there, the rest is forgotten, and the log
         * is read again for what is done in the new one */
        release_queued(d);
        forget(d);
        relog = 1;
    }
    if (relog)
        ck_audit_close(&d->audit);
    watch_cref_put(d->cref);      /* running jobs keep their own reference */
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
    watch_timers(d);
    /* the walk of incoming runs on the pool, as the timer's: a slow (NFS)
     * folder does not hold the loop; one in flight is followed by another */
    if (d->scanning)
        d->rescan_again = 1;
    else
        watch_rescan_async(d);
    ck_log(CK_LOG_NOTICE, "reloaded: chain of %zu plugin%s", r->c.nchain,
           r->c.nchain == 1 ? "" : "s");
    ck_notify("READY=1");
    watch_status(d);
}

/* ---- stopping ----------------------------------------------------------- */

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

void watch_maybe_exit(daemon_t *d)
{
    if (d->nrunning > 0 || d->nfinishing > 0 || d->nprobing > 0 ||
        d->nmoving > 0 ||
        d->loading || d->collecting || d->publishing || d->claiming ||
        d->scanning)
        return;
    /* closing a signal handle gives its signal back its default: another
     * SIGTERM or SIGINT now (a supervisor repeating itself, the notify
     * test as soon as it sees STOPPING=1) would kill a daemon that has
     * stopped cleanly and is only exiting.  Their handles are closed
     * first and the two ignored at once, before the log line, the metrics
     * file and the other handles (which left a window of their length). */
    for (size_t i = 0; i < CK_ARRAY_SIZE(d->sig); i++) {
        int signum = d->sig[i].signum;

        if ((signum == SIGTERM || signum == SIGINT) &&
            !uv_is_closing((uv_handle_t *)&d->sig[i])) {
            uv_close((uv_handle_t *)&d->sig[i], close_cb);
            signal(signum, SIG_IGN);
        }
    }
    ck_log(CK_LOG_NOTICE, "stopped: %llu done, %llu failed",
           (unsigned long long)d->nok, (unsigned long long)d->nfailed);
    watch_metrics_write(d);
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
    __atomic_store_n(&d->stopping, 1, __ATOMIC_RELAXED);  /* the loader reads it */
    ck_notify("STOPPING=1");
    ck_log(CK_LOG_NOTICE, "stopping: %zu job%s running, %zu queued released",
           d->nrunning, d->nrunning == 1 ? "" : "s", d->nqueued);
    /* queued files give their claims back: they were not started */
    release_queued(d);
    uv_timer_stop(&d->tick);
    d->armed_at = 0;
    uv_timer_stop(&d->rescan);
    if (d->poll != NULL)
        uv_poll_stop(d->poll);
    watch_status(d);
    if (d->nrunning > 0)
        uv_timer_start(&d->stop_timer, stop_timer_cb,
                       d->w->stop_timeout_s * 1000, 0);
    watch_maybe_exit(d);
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
        if (d->loading)
            d->hup_pending = 1;     /* once the log is read */
        else if (!d->stopping)
            reload(d);
        break;
    case SIGUSR1:
        if (d->loading)
            ck_log(CK_LOG_NOTICE, "audit log still being read; not reopened");
        else if (ck_audit_reopen(&d->audit, &e) < 0)
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

/* ---- main --------------------------------------------------------------- */

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
    d.audit.fd = -1;
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
    watch_self(&d.self);
    d.claims = ck_path_join(d.w->incoming, CLAIMS);
    if (d.claims == NULL) {
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
    {
        /* a log that cannot open stops the start; reading it comes later */
        int fd = open(d.w->audit_log, O_WRONLY | O_CREAT | O_APPEND |
                      O_NOFOLLOW | O_CLOEXEC, 0640);

        if (fd < 0) {
            ck_log(CK_LOG_ERR, "audit log: %s: %s", d.w->audit_log,
                   strerror(errno));
            rc = 1;
            goto out;
        }
        close(fd);
    }
    /* the pool holds every worker, and room beside them for readiness
     * probes, two batches being published and the done claims (a reload
     * may raise workers: keep a margin) */
    snprintf(env, sizeof(env), "%d",
             d.w->workers + 4 > 6 ? (int)d.w->workers + 4 : 6);
    setenv("UV_THREADPOOL_SIZE", env, 0);
    uv_loop_init(&loop);
    d.loop = &loop;
    uv_timer_init(&loop, &d.tick);
    uv_timer_init(&loop, &d.rescan);
    uv_timer_init(&loop, &d.refresh);
    uv_timer_init(&loop, &d.stop_timer);
    uv_timer_init(&loop, &d.watchdog);
    uv_timer_init(&loop, &d.metrics);
    uv_timer_init(&loop, &d.gc);
    uv_timer_init(&loop, &d.linger);
    uv_check_init(&loop, &d.flush);
    d.flush.data = &d;
    d.tick.data = d.rescan.data = d.refresh.data = d.stop_timer.data =
        d.watchdog.data = d.metrics.data = d.gc.data = d.linger.data = &d;
    for (size_t i = 0; i < CK_ARRAY_SIZE(signums); i++) {
        uv_signal_init(&loop, &d.sig[i]);
        d.sig[i].data = &d;
        uv_signal_start(&d.sig[i], signal_cb, signums[i]);
    }
    watch_start(&d);
    watch_timers(&d);
    if (audit_load(&d) < 0) {
        ck_log(CK_LOG_ERR, "out of memory");
        d.exit_code = 1;
        stop(&d);
    }
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
    watch_status(&d);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    rc = d.exit_code;
out:
    for (size_t i = 0; i < d.nbuckets; i++)
        for (file_t *f = d.buckets[i], *next; f != NULL; f = next) {
            next = f->hnext;
            ck_free(f->failrec);
            ck_free(f->rel);
            ck_free(f);
        }
    ck_free(d.buckets);
    ck_free(d.heap);
    watch_logidx_drop(&d);
    for (size_t i = 0; i < d.ntodo; i++)
        ck_free(d.todo[i]);
    ck_free(d.todo);
    ck_free(d.claims);
    ck_audit_close(&d.audit);
    watch_cref_put(d.cref);
    free(abs_conf);
    return rc;
}
