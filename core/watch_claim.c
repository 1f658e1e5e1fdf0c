/*
 * watch_claim.c -- claims and readiness.  See watch_int.h and watch.c.
 *
 * Claims make several daemons (one host or many, sharing the folder over
 * NFS) process each input once: before a job starts, a claim file named by
 * the input's identity is created with O_EXCL in incoming/.ckprep-claims.
 * It says who holds it and whether the job is running or done; a running
 * claim is refreshed (mtime) while the job runs, and one whose holder is
 * dead (same host, no such pid) or silent for claim_stale_s (another host)
 * is taken back by renaming it away first, which only one taker can do.
 *
 * Readiness: a pending file quiet for settle_ms is probed on the thread
 * pool (complete: no writer holds it, its zip directory or legacy stream
 * parses), then claimed and queued.
 */
#define _GNU_SOURCE
#include "watch_int.h"

#include "ckpt.h"
#include "fsutil.h"
#include "log.h"
#include "sandbox.h"
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
#include <time.h>
#include <unistd.h>

/* ---- claims ------------------------------------------------------------- */

char *watch_claim_file(const char *claims, const char *rel, const ident_t *id)
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    char name[128];

    EVP_Digest(rel, strlen(rel), md, &mdlen, EVP_sha256(), NULL);
    snprintf(name, sizeof(name), "%llu-%llu-%lld-", (unsigned long long)id->ino,
             (unsigned long long)id->size, (long long)id->mtime_ns);
    for (int i = 0; i < 8; i++)
        sprintf(name + strlen(name), "%02x", md[i]);
    return ck_path_join(claims, name);
}

char *watch_claim_path(daemon_t *d, const char *rel, const ident_t *id)
{
    return watch_claim_file(d->claims, rel, id);
}

void watch_unclaim(daemon_t *d, const file_t *f)
{
    char *cp = watch_claim_path(d, f->rel, &f->id);

    if (cp != NULL)
        unlink(cp);
    ck_free(cp);
}

/* The start time of process pid (clock ticks after boot, field 22 of
 * /proc/PID/stat), or 0 when it is not there. */
static uint64_t proc_start(int pid)
{
    char path[64], buf[1024], *p;
    unsigned long long start = 0;
    int fd;
    ssize_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    p = strrchr(buf, ')');      /* the command name may hold anything */
    if (p == NULL)
        return 0;
    /* after ")": state is field 3, starttime field 22 */
    p++;
    for (int field = 3; field < 22 && p != NULL; field++)
        p = strchr(p + 1, ' ');
    if (p == NULL || sscanf(p, " %llu", &start) != 1)
        return 0;
    return start;
}

void watch_self(self_t *s)
{
    struct stat st;
    int fd;
    ssize_t n;

    memset(s, 0, sizeof(*s));
    if (gethostname(s->host, sizeof(s->host) - 1) < 0)
        strcpy(s->host, "unknown");
    fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    n = fd >= 0 ? read(fd, s->boot, sizeof(s->boot) - 1) : -1;
    if (fd >= 0)
        close(fd);
    s->boot[n > 0 ? n : 0] = '\0';
    s->boot[strcspn(s->boot, "\n ")] = '\0';
    if (stat("/proc/self/ns/pid", &st) == 0)
        s->pidns = (uint64_t)st.st_ino;
    s->start = proc_start((int)getpid());
}

int watch_claim_write(const char *path, const self_t *s, const char *state,
                      int how)
{
    char text[512];
    /* host, pid and state first, as claims always began */
    int n = snprintf(text, sizeof(text), "host=%s pid=%d state=%s boot=%s "
                     "pidns=%llu start=%llu\n", s->host, (int)getpid(), state,
                     s->boot[0] ? s->boot : "-",
                     (unsigned long long)s->pidns,
                     (unsigned long long)s->start);
    int fd;

    if (how == CLAIM_W_DURABLE)
        return ck_write_atomic(path, text, (size_t)n, 0640);
    fd = how == CLAIM_W_EXCL ?
        open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640) :
        open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    if (ck_pwrite_full(fd, text, (size_t)n, 0) < 0 ||
        (how == CLAIM_W_INPLACE && ftruncate(fd, n) < 0)) {
        int e = errno;

        close(fd);
        if (how == CLAIM_W_EXCL)
            unlink(path);
        return -e;
    }
    close(fd);
    return 0;
}

/*
 * Is the claim at path held by someone alive?  Its state goes to *done,
 * its holder's pid to *holder.  A holder on this host (same host name and
 * boot id) in this pid namespace is alive when a process of its pid with
 * its start time runs; a claim from before the last boot is dead; a holder
 * in another pid namespace (a container sharing the host name) or on
 * another host is alive while it refreshes its claim (claim_stale_s).
 */
int watch_claim_alive(const self_t *me, uint64_t stale_s, const char *path,
                      int *done, int *holder, ino_t *ino)
{
    char text[512], host[300] = "", state[32] = "", boot[48] = "";
    unsigned long long pidns = 0, start = 0;
    int pid = 0, fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), nf;
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
    nf = sscanf(text, "host=%299s pid=%d state=%31s boot=%47s pidns=%llu "
                "start=%llu", host, &pid, state, boot, &pidns, &start);
    *holder = pid;
    if (strcmp(state, "done") == 0) {
        *done = 1;
        return 1;
    }
    if (strcmp(host, me->host) == 0 && nf == 6 && me->boot[0] != '\0' &&
        strcmp(boot, me->boot) != 0)
        return 0;                   /* written before this host rebooted */
    if (strcmp(host, me->host) == 0 && nf == 6 && pidns == me->pidns)
        return pid > 0 && start != 0 && proc_start(pid) == start;
    if (strcmp(host, me->host) == 0 && nf < 6)  /* a claim of before */
        return pid > 0 && pid != (int)getpid() &&
               (kill(pid, 0) == 0 || errno == EPERM);
    clock_gettime(CLOCK_REALTIME, &now);
    return now.tv_sec - st.st_mtime < (time_t)stale_s;
}

/*
 * Remove the temporaries a dead holder of rel's claim left in the output
 * folder: ck_ckpt_write names them .NAME.tmp.PID.*, in the output's folder.
 */
static void drop_temps(daemon_t *d, const char *rel, int pid)
{
    char *opath = watch_out_path(d->w, rel, NULL), *slash, glob[1100];
    DIR *dir = NULL;
    struct dirent *e;

    if (opath == NULL || pid <= 0)
        goto out;
    slash = strrchr(opath, '/');
    *slash = '\0';
    /* the output's name may hold fields known only to the job: a glob */
    snprintf(glob, sizeof(glob), ".%s.tmp.%d.*", slash + 1, pid);
    dir = opendir(opath);
    while (dir != NULL && (e = readdir(dir)) != NULL) {
        if (fnmatch(glob, e->d_name, FNM_PERIOD) != 0)
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

int watch_claim(daemon_t *d, const char *rel, const char *path)
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
        int rc = watch_claim_write(path, &d->self, "queued", CLAIM_W_EXCL);
        int done, holder = 0;
        char tomb[4096];
        ino_t stale = 0;

        if (rc == 0)
            return CLAIM_OK;
        if (rc != -EEXIST) {
            ck_log(CK_LOG_ERR, "claim %s: %s", path, strerror(-rc));
            return CLAIM_ERROR;
        }
        if (watch_claim_alive(&d->self, d->w->claim_stale_s, path, &done,
                              &holder, &stale))
            return done ? CLAIM_DONE : CLAIM_BUSY;
        /* stale: only one taker can rename it away */
        snprintf(tomb, sizeof(tomb), "%s.stale.%s.%d", path, d->self.host,
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

void watch_refresh_cb(uv_timer_t *t)
{
    daemon_t *d = t->data;

    for (size_t i = 0; i < d->nrunning; i++)
        utimensat(AT_FDCWD, d->running[i]->claim, NULL, AT_SYMLINK_NOFOLLOW);
    /* queued files hold claims too: a backlog must not make them stale */
    for (file_t *f = d->qhead; f != NULL; f = f->qnext) {
        char *cp = watch_claim_path(d, f->rel, &f->id);

        if (cp != NULL)
            utimensat(AT_FDCWD, cp, NULL, AT_SYMLINK_NOFOLLOW);
        ck_free(cp);
    }
}

/* ---- readiness ---------------------------------------------------------- */

/*
 * Complete means: nobody has it open for writing (where a lease tells), and
 * a zip's end records and central directory parse, or a legacy stream
 * opens.  1 complete, 0 not yet (or the daemon is stopping: *stopping
 * stops a long legacy parse).
 */
static int complete(const ck_conf_t *conf, const char *path, const ident_t *id,
                    const int *stopping)
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
        ck_open_opts_t o;
        ck_err_t e = { 0 };

        ck_conf_open_opts(conf, &o);
        o.lim.cancel = stopping;    /* its result is not wanted then */
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
    char *cp = watch_claim_path(d, f->rel, id);

    if (cp == NULL) {
        watch_due(d, f, now + 1000);
        return;
    }
    switch (watch_claim(d, f->rel, cp)) {
    case CLAIM_OK:
        watch_enqueue(d, f);
        break;
    case CLAIM_DONE:
        f->done = *id;
        watch_leave_pending(d, f, F_DONE);
        break;
    case CLAIM_BUSY:     /* another daemon has it; look again later */
        watch_due(d, f, now + d->w->claim_stale_s * 1000 / 2 + 1000);
        break;
    default:
        watch_due(d, f, now + 5000);
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
    ck_err_t sberr;     /* the sandbox could not be entered: why */
} probe_t;

/* On a thread of its own that can read the file and nothing else. */
static void probe_main(void *ud)
{
    probe_t *p = ud;

    p->ok = complete(&p->cref->c, p->path, &p->id, &p->d->stopping);
}

static void probe_work_cb(uv_work_t *req)
{
    probe_t *p = req->data;
    ck_sandbox_t sb = { .read_fd_name = p->path };

    /* a probe still queued when the daemon stops does nothing; nor does
     * one whose file is another now (p->ok stays 0: looked at again) */
    if (__atomic_load_n(&p->d->stopping, __ATOMIC_RELAXED) ||
        (sb.read_fd = watch_open_claimed(p->path, &p->id)) < 0)
        return;
    ck_sandbox_run(&sb, probe_main, p, &p->sberr);
    close(sb.read_fd);
}

static void probe_done_cb(uv_work_t *req, int uvst)
{
    probe_t *p = req->data;
    daemon_t *d = p->d;
    file_t *f = p->f;
    uint64_t now = uv_now(d->loop);

    d->nprobing--;
    f->state = F_OTHER;
    if (p->sberr.code != 0 && !f->sbwarned) {   /* once a file, not each try */
        ck_log(CK_LOG_ERR, "%s: %s; looking again until incomplete_s, then "
               "its job fails", p->path, p->sberr.msg);
        f->sbwarned = 1;
    }
    if (d->stopping) {
        /* nothing more starts */
    } else if (strcmp(p->cref->c.watch.incoming, d->w->incoming) != 0) {
        /* a reload moved incoming meanwhile: what was probed is not
         * there; the name is looked at again where it is now */
        f->dirty = 0;
        watch_set_pending(d, f, now);
    } else if (f->dirty || uvst < 0) {
        f->dirty = 0;
        watch_set_pending(d, f, now);        /* changed meanwhile: wait again */
    } else {
        uint64_t changed = f->last_change;   /* the probe changed nothing */
        int moved = f->moved;

        watch_set_pending(d, f, now);
        f->last_change = changed;
        f->moved = moved;
        if (!p->ok && now < f->last_change + d->w->incomplete_s * 1000)
            watch_due(d, f, now + (d->w->settle_ms > 200 ? d->w->settle_ms
                                                         : 200));
        else
            try_claim(d, f, &p->id, now);
    }
    watch_cref_put(p->cref);
    ck_free(p->path);
    ck_free(p);
    if (d->stopping)
        watch_maybe_exit(d);
    else
        watch_pump(d);
}

static void probe(daemon_t *d, file_t *f, const char *path, const ident_t *id)
{
    uint64_t now = uv_now(d->loop);
    probe_t *p;

    p = ck_calloc(1, sizeof(*p));
    if (p == NULL || (p->path = ck_strdup(path)) == NULL) {
        ck_free(p);
        watch_due(d, f, now + 1000);
        return;
    }
    p->d = d;
    p->f = f;
    p->id = *id;
    p->cref = d->cref;
    d->cref->refs++;
    p->req.data = p;
    if (uv_queue_work(d->loop, &p->req, probe_work_cb, probe_done_cb) < 0) {
        watch_cref_put(p->cref);
        ck_free(p->path);
        ck_free(p);
        watch_due(d, f, now + 1000);
        return;
    }
    d->nprobing++;
    watch_leave_pending(d, f, F_PROBING);
    f->dirty = 0;
}

/* ready = marker: is the marker of rel there, and no older than the file
 * (st)?  A marker left from an earlier round does not count. */
static int marked(daemon_t *d, const char *rel, const struct stat *st)
{
    char m[4096], *path;
    struct stat ms;
    int ok;

    if (ck_watch_marker_path(d->w->marker, rel, m, sizeof(m)) < 0)
        return 0;
    path = ck_path_join(d->w->incoming, m);
    ok = path != NULL && lstat(path, &ms) == 0 && S_ISREG(ms.st_mode) &&
         (ms.st_mtim.tv_sec > st->st_mtim.tv_sec ||
          (ms.st_mtim.tv_sec == st->st_mtim.tv_sec &&
           ms.st_mtim.tv_nsec >= st->st_mtim.tv_nsec));
    ck_free(path);
    return ok;
}

static void check_file(daemon_t *d, file_t *f, uint64_t now)
{
    char *path = ck_path_join(d->w->incoming, f->rel);
    struct stat st;
    ident_t id;

    if (path == NULL) {
        watch_due(d, f, now + 1000);    /* out of memory: later */
        return;
    }
    if (lstat(path, &st) < 0) {
        ck_free(path);
        watch_file_drop(d, f);
        return;
    }
    ident_of(&st, &id);
    if (!S_ISREG(st.st_mode)) {
        ck_log(CK_LOG_WARNING, "%s: skipped: not a regular file", path);
        f->done = id;
        watch_leave_pending(d, f, F_SKIPPED);
        goto out;
    }
    if (!ident_eq(&id, &f->id)) {
        f->id = id;
        f->last_change = f->last_event = now;
        if (!f->moved) {
            watch_due(d, f, now + d->w->settle_ms);
            goto out;
        }
    }
    /* renamed in: the writer finished it before the rename (the probe
     * still checks it is complete and nobody writes it) */
    if (!f->moved && now < f->last_event + d->w->settle_ms) {
        watch_due(d, f, f->last_event + d->w->settle_ms);
        goto out;
    }
    if (f->done.size != 0 && ident_eq(&id, &f->done)) {
        watch_leave_pending(d, f, F_DONE);   /* seen before, unchanged */
        goto out;
    }
    if (d->w->ready == CK_READY_MARKER && !marked(d, f->rel, &st)) {
        watch_due(d, f, now + 500);          /* look for it again */
        goto out;
    }
    probe(d, f, path, &id);
out:
    ck_free(path);
}

/* Probes on the pool at once: as many as workers. */
static int probes_full(const daemon_t *d)
{
    return d->nprobing >= d->w->workers;
}

void watch_arm(daemon_t *d)
{
    uint64_t now = uv_now(d->loop), top;

    if (d->stopping || d->loading || d->nheap == 0) {
        uv_timer_stop(&d->tick);
        d->armed_at = 0;
        return;
    }
    top = d->heap[0]->next_check;
    if (top <= now && probes_full(d)) {
        /* a probe's end pumps again */
        uv_timer_stop(&d->tick);
        d->armed_at = 0;
        return;
    }
    d->armed_at = top > now ? top : now;
    uv_timer_start(&d->tick, watch_tick_cb, d->armed_at - now, 0);
}

/*
 * The pending files that are due, earliest first, each looked at once per
 * call (its check may make it due again at once: settle_ms = 0, and then
 * it and the files due with it wait for the tick watch_arm sets at once),
 * while a probe may start (a probe's end pumps again); then jobs start.
 * Only what is looked at leaves the heap: with thousands due and two
 * probes at a time, popping them all on every pump was a twentieth of the
 * daemon.
 */
void watch_pump(daemon_t *d)
{
    uint64_t now;

    if (d->stopping || d->loading)
        return;
    uv_update_time(d->loop);
    now = uv_now(d->loop);
    d->pumpgen++;
    while (d->nheap > 0 && d->heap[0]->next_check <= now && !probes_full(d) &&
           d->heap[0]->pumped != d->pumpgen) {
        file_t *f = watch_due_pop(d);

        f->pumped = d->pumpgen;
        check_file(d, f, now);
    }
    watch_start_jobs(d);
    watch_arm(d);
}

void watch_tick_cb(uv_timer_t *t)
{
    daemon_t *d = t->data;

    d->armed_at = 0;
    watch_pump(d);
}
