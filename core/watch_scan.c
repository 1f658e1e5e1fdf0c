/*
 * watch_scan.c -- what exists in incoming: inotify (its own descriptor,
 * driven by a uv_poll_t), full scans (at start, on overflow, every
 * rescan_s), and the claims folder kept tidy after each scan.  See
 * watch_int.h.
 */
#define _GNU_SOURCE
#include "watch_int.h"

#include "fsutil.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

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

static int root_watched(const daemon_t *d)
{
    for (size_t i = 0; i < d->ndirs; i++)
        if (d->dirs[i].rel[0] == '\0')
            return 1;
    return 0;
}

/*
 * An input done or failed earlier but still in incoming: the daemon
 * stopped between its record and the move.  Finished now, on the thread
 * pool (a move to done/ or failed/ on another file system copies the whole
 * checkpoint), under the configuration of the scan that found it; the file
 * is held meanwhile (F_MOVING) and goes back to what it was.
 */
typedef struct {
    uv_work_t req;
    daemon_t *d;
    file_t *f;
    cref_t *cref;
    char *rel, *in;
    char *failrec;      /* its failed record; NULL: done, after = move or
                           delete */
    ident_t id;
    uint64_t seq;
    int was;            /* F_DONE or F_FAILED */
} again_t;

static void again_work_cb(uv_work_t *req)
{
    again_t *a = req->data;
    const ck_watch_conf_t *w = &a->cref->c.watch;

    if (a->failrec != NULL) {
        ck_log(CK_LOG_NOTICE, "%s: failed earlier (audit log); moving it to "
               "%s now", a->in, w->failed);
        watch_file_failed(w, a->seq, a->rel, a->in, &a->id, a->failrec);
    } else if (watch_file_after(w, a->rel, a->in, &a->id) > 0) {
        ck_log(CK_LOG_NOTICE, "%s: done earlier (audit log); %s it now",
               a->in, w->after == CK_AFTER_MOVE ? "moved" : "deleted");
    }
}

static void again_free(again_t *a)
{
    watch_cref_put(a->cref);
    ck_free(a->rel);
    ck_free(a->in);
    ck_free(a->failrec);
    ck_free(a);
}

static void again_done_cb(uv_work_t *req, int uvst)
{
    again_t *a = req->data;
    daemon_t *d = a->d;
    file_t *f = a->f;

    (void)uvst;
    d->nmoving--;
    f->state = a->was;
    if (strcmp(a->cref->c.watch.incoming, d->w->incoming) != 0)
        f->dirty = 1;   /* a reload moved incoming: the name is another's */
    if (f->dirty && !d->stopping) {     /* changed meanwhile: look again */
        f->dirty = 0;
        watch_set_pending(d, f, uv_now(d->loop));
    }
    again_free(a);
    if (d->stopping)
        watch_maybe_exit(d);
    else
        watch_pump(d);
}

static void again(daemon_t *d, file_t *f)
{
    again_t *a = ck_calloc(1, sizeof(*a));

    if (a == NULL)
        return;     /* the next scan finds it again */
    a->d = d;
    a->f = f;
    a->cref = d->cref;
    d->cref->refs++;
    a->rel = ck_strdup(f->rel);
    a->in = ck_path_join(d->w->incoming, f->rel);
    a->was = f->state;
    a->seq = d->audit.seq;
    a->id = f->done;                /* what the scan found: see scan_file */
    if (f->state == F_FAILED) {
        a->failrec = f->failrec;    /* taken: moved once */
        f->failrec = NULL;
    }
    a->req.data = a;
    if (a->rel == NULL || a->in == NULL ||
        uv_queue_work(d->loop, &a->req, again_work_cb, again_done_cb) < 0) {
        if (a->failrec != NULL) {   /* given back: the next scan retries */
            f->failrec = a->failrec;
            a->failrec = NULL;
        }
        again_free(a);
        return;
    }
    d->nmoving++;
    f->state = F_MOVING;
    f->dirty = 0;
}

/* A wanted file a scan found at rel, of identity id. */
static void scan_file(daemon_t *d, const char *rel, const ident_t *id,
                      uint64_t now)
{
    file_t *f = watch_file_get(d, rel);

    if (f == NULL)
        return;
    f->seen = 1;
    f->scanned = *id;
    if (f->state == F_OTHER && f->done.size == 0 && d->logidx != NULL)
        watch_log_lookup(d, f);
    if (f->state == F_OTHER && f->done.size == 0)
        watch_adopt(d, f, id);
    if (f->state == F_OTHER ||
        ((f->state == F_DONE || f->state == F_FAILED ||
          f->state == F_SKIPPED) && !ident_eq(id, &f->done)))
        watch_set_pending(d, f, now);
    else if ((f->state == F_DONE && d->w->after != CK_AFTER_KEEP) ||
             (f->state == F_FAILED && f->failrec != NULL))
        again(d, f);
    else if (f->state == F_MOVING && !ident_eq(id, &f->done))
        f->dirty = 1;   /* looked at again once moved */
}

/* incoming itself was opened by a scan: watch it, and say so when it was
 * lost. */
static void root_found(daemon_t *d)
{
    if (d->w->recursive || !root_watched(d))
        add_watch(d, "");
    if (d->lost && root_watched(d)) {
        d->lost = 0;
        ck_mkdirs(d->claims, 0750);
        ck_log(CK_LOG_NOTICE, "watching %s again", d->w->incoming);
        watch_timers(d);
    }
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
    if (depth == 0)
        root_found(d);
    else if (d->w->recursive)
        add_watch(d, rel);
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
            } else if (watch_name_wanted(d->w, e->d_name)) {
                ident_t id;

                ident_of(&st, &id);
                scan_file(d, r, &id, now);
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

/* A collection of the claims folder, on the thread pool: what it reads of
 * the daemon is copied, or held (the configuration). */
typedef struct {
    uv_work_t req;
    daemon_t *d;
    cref_t *cref;
    char *claims;
    char **keep;            /* claim paths of known files, sorted */
    size_t n;
} gc_t;

static void gc_work_cb(uv_work_t *req)
{
    gc_t *g = req->data;
    uint64_t stale_s = g->cref->c.watch.claim_stale_s;
    DIR *dir;
    struct dirent *e;
    struct timespec now;
    int dfd;

    clock_gettime(CLOCK_REALTIME, &now);
    /* the folder itself, never a symlink put in its place: what is removed
     * is removed from it (unlinkat), wherever the path points meanwhile */
    dfd = open(g->claims, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    dir = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (dir == NULL && dfd >= 0)
        close(dfd);
    while (dir != NULL && (e = readdir(dir)) != NULL) {
        char *path;
        struct stat st;
        int done, holder;

        if (e->d_name[0] == '.')
            continue;
        path = ck_path_join(g->claims, e->d_name);
        if (path == NULL)
            break;
        if (bsearch(&path, g->keep, g->n, sizeof(*g->keep), cmp_str) == NULL &&
            fstatat(dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISREG(st.st_mode) &&
            now.tv_sec - st.st_mtime >= (time_t)stale_s &&
            (strstr(e->d_name, ".stale.") != NULL ||
             strstr(e->d_name, ".tmp.") != NULL ||
             !watch_claim_alive(&g->d->self, stale_s, path, &done, &holder,
                                NULL) || done))
            unlinkat(dirfd(dir), e->d_name, 0);
        ck_free(path);
    }
    if (dir != NULL)
        closedir(dir);
}

static void gc_free(gc_t *g)
{
    for (size_t i = 0; i < g->n; i++)
        ck_free(g->keep[i]);
    ck_free(g->keep);
    ck_free(g->claims);
    watch_cref_put(g->cref);
    ck_free(g);
}

static void gc_done_cb(uv_work_t *req, int uvst)
{
    gc_t *g = req->data;
    daemon_t *d = g->d;

    d->collecting = 0;
    gc_free(g);
    if (d->stopping)
        watch_maybe_exit(d);
    (void)uvst;
}

/*
 * Remove claims no file in incoming has any more (its input was moved,
 * deleted or replaced), once they are older than claim_stale_s and nobody
 * alive holds them; also the leftovers of a claim taken back.  The list of
 * claims to keep is made here; the folder is read (slow on NFS) on the
 * thread pool, one collection at a time.
 */
void watch_claims_gc(daemon_t *d)
{
    gc_t *g;

    if (d->collecting || d->claims == NULL)
        return;
    g = ck_calloc(1, sizeof(*g));
    if (g == NULL)
        return;
    g->req.data = g;
    g->d = d;
    g->cref = d->cref;
    d->cref->refs++;
    g->claims = ck_strdup(d->claims);
    g->keep = ck_calloc(3 * d->nfiles + 1, sizeof(*g->keep));
    if (g->claims == NULL || g->keep == NULL)
        goto fail;
    for (size_t i = 0; i < d->nbuckets; i++) {
        for (file_t *f = d->buckets[i]; f != NULL; f = f->hnext) {
            const ident_t *ids[] = { &f->id, &f->done, &f->scanned };

            for (size_t k = 0; k < CK_ARRAY_SIZE(ids); k++) {
                if (ids[k]->size == 0 && ids[k]->ino == 0)
                    continue;   /* never set */
                g->keep[g->n] = watch_claim_path(d, f->rel, ids[k]);
                g->n += g->keep[g->n] != NULL;
            }
        }
    }
    qsort(g->keep, g->n, sizeof(*g->keep), cmp_str);
    if (uv_queue_work(d->loop, &g->req, gc_work_cb, gc_done_cb) < 0)
        goto fail;
    d->collecting = 1;
    return;
fail:
    gc_free(g);
}

void watch_rescan(daemon_t *d)
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
            if (!f->seen && !watch_busy(f))
                watch_file_drop(d, f);
        }
    }
    if (!d->lost && !d->loading)
        watch_claims_gc(d);
    d->m.rescans++;
    watch_status(d);
}

/*
 * A rescan on the thread pool (the timer's, an overflow's): the walk of
 * incoming (readdir and a stat per entry, slow on NFS) collects names and
 * identities; the loop then applies them as watch_rescan does.  A file
 * the loop learnt of after the walk began is not forgotten for being
 * missing from it.
 */
typedef struct {
    char *rel;
    int dir;
    ident_t id;
} scanent_t;

typedef struct {
    uv_work_t req;
    daemon_t *d;
    cref_t *cref;
    uint64_t gen;           /* files born before it are the walk's */
    scanent_t *v;
    size_t n, cap;
    int root_errno;         /* incoming could not be opened */
    int oom;
} scan_t;

static void scan_push(scan_t *sc, const char *rel, int dir, const ident_t *id)
{
    if (sc->n == sc->cap) {
        size_t cap = sc->cap ? sc->cap * 2 : 256;
        scanent_t *v = ck_realloc(sc->v, cap * sizeof(*v));

        if (v == NULL) {
            sc->oom = 1;
            return;
        }
        sc->v = v;
        sc->cap = cap;
    }
    sc->v[sc->n].rel = ck_strdup(rel);
    sc->v[sc->n].dir = dir;
    sc->v[sc->n].id = *id;
    if (sc->v[sc->n].rel == NULL)
        sc->oom = 1;
    else
        sc->n++;
}

static void walk(scan_t *sc, const char *rel, int depth)
{
    const ck_watch_conf_t *w = &sc->cref->c.watch;
    char *path = ck_path_join(w->incoming, rel);
    DIR *dir = path ? opendir(path) : NULL;
    struct dirent *e;

    if (dir == NULL) {
        if (depth == 0)
            sc->root_errno = path ? errno : ENOMEM;
        ck_free(path);
        return;
    }
    while (!sc->oom && (e = readdir(dir)) != NULL) {
        struct stat st;
        ident_t id;
        char *r;

        if (e->d_name[0] == '.')   /* also ., .. and the claims folder */
            continue;
        if (fstatat(dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        r = ck_path_join(rel, e->d_name);
        if (r == NULL) {
            sc->oom = 1;
            break;
        }
        ident_of(&st, &id);
        if (S_ISDIR(st.st_mode)) {
            if (w->recursive && depth < MAX_DEPTH) {
                scan_push(sc, r, 1, &id);
                walk(sc, r, depth + 1);
            }
        } else if (watch_name_wanted(w, e->d_name)) {
            scan_push(sc, r, 0, &id);
        }
        ck_free(r);
    }
    closedir(dir);
    ck_free(path);
}

static void scan_work_cb(uv_work_t *req)
{
    walk(req->data, "", 0);
}

static void scan_free(scan_t *sc)
{
    for (size_t i = 0; i < sc->n; i++)
        ck_free(sc->v[i].rel);
    ck_free(sc->v);
    watch_cref_put(sc->cref);
    ck_free(sc);
}

static void scan_done_cb(uv_work_t *req, int uvst)
{
    scan_t *sc = req->data;
    daemon_t *d = sc->d;
    uint64_t now = uv_now(d->loop);
    int applied = 0;

    d->scanning = 0;
    /* stopping, or another incoming since (a reload scans it itself) */
    if (d->stopping || d->loading || uvst < 0 || sc->oom ||
        strcmp(sc->cref->c.watch.incoming, d->w->incoming) != 0)
        goto out;
    for (size_t i = 0; i < d->nbuckets; i++)
        for (file_t *f = d->buckets[i]; f != NULL; f = f->hnext)
            f->seen = 0;
    if (sc->root_errno != 0) {
        if (!d->lost)
            ck_log(CK_LOG_ERR, "scan %s: %s", d->w->incoming,
                   strerror(sc->root_errno));
    } else {
        root_found(d);
        for (size_t i = 0; i < sc->n; i++) {
            if (sc->v[i].dir)
                add_watch(d, sc->v[i].rel);
            else
                scan_file(d, sc->v[i].rel, &sc->v[i].id, now);
        }
    }
    for (size_t i = 0; i < d->nbuckets; i++) {
        for (file_t *f = d->buckets[i], *next; f != NULL; f = next) {
            next = f->hnext;
            if (!f->seen && f->born < sc->gen && !watch_busy(f))
                watch_file_drop(d, f);
        }
    }
    if (!d->lost && !d->loading)
        watch_claims_gc(d);
    d->m.rescans++;
    watch_status(d);
    applied = 1;
out:
    /* the start's index: applied, or applied here by a scan on the loop */
    if (!applied && d->logidx != NULL && !d->loading && !d->stopping)
        watch_rescan(d);
    if (!d->loading)
        watch_logidx_drop(d);
    scan_free(sc);
    if (d->stopping) {
        watch_maybe_exit(d);
    } else if (d->rescan_again) {
        /* a reload came while this one walked, maybe another folder or
         * other names: walk again with what it loaded */
        d->rescan_again = 0;
        watch_rescan_async(d);
    }
}

void watch_rescan_async(daemon_t *d)
{
    scan_t *sc;

    if (d->scanning)
        return;     /* the one walking sees it */
    d->rescan_again = 0;
    sc = ck_calloc(1, sizeof(*sc));
    if (sc == NULL) {
        watch_rescan(d);
        return;
    }
    sc->req.data = sc;
    sc->d = d;
    sc->cref = d->cref;
    d->cref->refs++;
    sc->gen = ++d->scangen;
    if (uv_queue_work(d->loop, &sc->req, scan_work_cb, scan_done_cb) < 0) {
        scan_free(sc);
        watch_rescan(d);
        return;
    }
    d->scanning = 1;
}

void watch_gc_cb(uv_timer_t *t)
{
    daemon_t *d = t->data;

    if (!d->stopping && !d->lost && !d->loading)
        watch_claims_gc(d);
}

void watch_rescan_cb(uv_timer_t *t)
{
    daemon_t *d = t->data;

    if (!d->stopping && !d->loading)
        watch_rescan_async(d);
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
        d->m.overflows++;
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
            uv_timer_start(&d->rescan, watch_rescan_cb, 1000, 1000);
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
    } else if (watch_name_wanted(d->w, ev->name)) {
        file_t *f = watch_file_find(d, rel);

        if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
            if (f != NULL && !watch_busy(f))
                watch_file_drop(d, f);
        } else {
            if (f == NULL) {
                f = watch_file_get(d, rel);
                /* the start's scan not applied yet: what the log says */
                if (f != NULL && d->logidx != NULL)
                    watch_log_lookup(d, f);
            }
            if (f != NULL) {
                /* done files wait for the identity check in check_file */
                if (f->state == F_PENDING) {
                    f->last_event = now;
                    f->moved = 0;
                    watch_due(d, f, now + d->w->settle_ms);
                } else {
                    watch_set_pending(d, f, now);
                }
                /* renamed in: whole already, looked at once (a change
                 * after it, or while it is busy, waits settle_ms again) */
                if ((ev->mask & IN_MOVED_TO) && f->state == F_PENDING) {
                    f->moved = 1;
                    watch_due(d, f, now);
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
        watch_rescan_async(d);
    (void)st;
    (void)events;
}

int watch_start(daemon_t *d)
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

void watch_stop(daemon_t *d)
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
