/*
 * watch_int.h -- what the daemon's files share (watch.c, watch_table.c,
 * watch_claim.c, watch_job.c, watch_scan.c); not for the rest of ckprep.
 *
 * All of it runs on the loop thread except ck_job_run, the readiness probe,
 * the audit log's read-back at start, the claims collection, the walk of a
 * rescan, the publishing and logging of a batch of ended jobs and the
 * writing of done claims, which run on libuv's thread pool and touch only
 * their own job_t, probe, loader, collection, scan or batch, a
 * configuration they hold a reference to (cref_t), the daemon's self (set
 * before the loop runs) and its stopping flag (atomic).
 */
#ifndef CK_WATCH_INT_H
#define CK_WATCH_INT_H

#include "audit.h"
#include "conf.h"
#include "json.h"
#include "watchconf.h"

#include <sys/stat.h>
#include <uv.h>

#define CLAIMS ".ckprep-claims"  /* the claims folder, in incoming */
#define MAX_DEPTH 32                /* of sub-folders scanned when recursive */

/* A file's state; see watch.c for how it moves. */
enum { F_PENDING, F_PROBING, F_QUEUED, F_RUNNING, F_DONE, F_FAILED, F_SKIPPED,
       F_OTHER, F_MOVING };

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
    int sbwarned;           /* a probe could not be sandboxed: said once */
    int moved;              /* renamed in (IN_MOVED_TO) since its last
                               change: complete, no settle_ms to wait */
    size_t hidx;            /* in the due heap: index + 1; 0 not there */
    uint64_t pumped;        /* d->pumpgen of the last pump that checked it */
    uint64_t born;          /* d->scangen when it was made */
    ident_t id;             /* last seen */
    ident_t done;           /* when it was done or failed */
    ident_t scanned;        /* by the last scan */
    uint64_t last_event, last_change, next_check;
    char *failrec;          /* read back: its failed record, to file it in
                               failed/ when the move did not happen */
};

typedef struct {
    ck_conf_t c;
    int refs;
} cref_t;

typedef struct daemon daemon_t;
typedef struct job job_t;

struct job {
    uv_work_t req;
    daemon_t *d;
    file_t *f;
    cref_t *cref;
    ident_t id;
    char *rel, *in, *out, *claim;
    char *odir;             /* its output's folder: the one it may write */
    uint64_t seq;           /* {seq} */
    int64_t now_s;          /* {date} */
    ck_json_t rec;
    ck_buf_t fallback;      /* a short record, when rec ran out of memory */
    const char *text;       /* the record to log: rec's or fallback's */
    ck_err_t err;
    int rc;
    job_t *fnext;           /* finished, its record not logged yet */
    char *tmp;              /* its output, written, to publish */
    char *base;             /* keep: the name output_name gives, whose
                               nth_name out is (NULL: out is it) */
    unsigned nth;
    int moved_name;         /* placed under another name than it was
                               written for: its record says so */
    int deferred;           /* it had one when it ended */
    int published;          /* renamed over its output (not yet synced) */
    int disposed;           /* its input's fate decided and carried out
                               (dispose: on the pool, after the log) */
    int disp;               /* DISP_*: what dispose found */
    int gone;               /* the input was moved or deleted */
    int retry;              /* failed for want of a resource, not for its
                               input: looked at again, not filed */
    int small;              /* its input is at most CK_JOB_DEFER_MAX bytes:
                               counted in nsmall from start to finish */
    ck_json_t failrec;      /* the record again, when publishing failed */
};

typedef struct {
    int wd;
    char *rel;
} wdir_t;

/* Who this process is, as its claims say it (see watch_claim.c). */
typedef struct {
    char host[256];
    char boot[40];          /* /proc/sys/kernel/random/boot_id */
    uint64_t pidns;         /* inode of /proc/self/ns/pid */
    uint64_t start;         /* of the process, in clock ticks after boot */
} self_t;

#define METRIC_BUCKETS 10   /* job duration histogram, with +Inf */
#define METRIC_CAUSES 16    /* failure causes counted apart */

/* The counters behind metrics_file (watch_metrics.c). */
typedef struct {
    uint64_t bytes_in, bytes_out, rescans, overflows;
    uint64_t hist[METRIC_BUCKETS];  /* not cumulative; the last is +Inf */
    uint64_t dur_count;
    double dur_sum;
    double last_ok;                 /* unix time of the last good job */
    struct {
        char name[24];
        uint64_t n;
    } causes[METRIC_CAUSES];
} metrics_t;

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
    uv_timer_t tick, rescan, watchdog, stop_timer, refresh, metrics, gc;
    uv_timer_t linger;      /* yield kept a while after the last small job */
    uv_signal_t sig[4];
    file_t **buckets;
    file_t **heap;          /* pending files, by next_check (a min-heap) */
    size_t nheap, heapcap;
    uint64_t pumpgen;       /* watch_pump calls */
    uint64_t armed_at;      /* the tick timer fires then; 0 not armed */
    size_t nbuckets, nfiles, npending;
    file_t *qhead, *qtail;
    size_t nqueued;
    job_t *running[CK_WATCH_MAX_WORKERS];
    job_t *fin_head, *fin_tail;  /* finished jobs whose records are logged
                                    together (one fdatasync) */
    uv_check_t flush;       /* logs them, after the loop's poll phase */
    int publishing;         /* batches of outputs being synced and
                               renamed on the thread pool (at most 2) */
    char **todo;            /* claims to mark done (records logged) */
    size_t ntodo, todocap;
    int claiming;           /* a batch of them is being written */
    size_t nrunning;
    size_t nfinishing;      /* ended, being published and logged */
    size_t nsmall;          /* small jobs running or finishing: while there
                               are, and YIELD_LINGER_MS after, big outputs
                               are made durable as they grow (yield.sync,
                               read by the job threads) */
    ck_yield_t yield;       /* .hold: batches of small outputs syncing */
    size_t nprobing;        /* readiness probes on the thread pool */
    size_t nmoving;         /* inputs done or failed earlier being moved
                               on the thread pool (see watch_scan.c) */
    uint64_t nok, nfailed;
    int stopping, cancel, exit_code;
    int collecting;         /* a claims collection on the thread pool */
    int scanning;           /* a rescan walking incoming on the pool */
    int rescan_again;       /* one more when it is done (a reload came) */
    uint64_t scangen;       /* rescans on the pool begun */
    int hup_pending;        /* SIGHUP while loading: reload after */
    int loading;            /* the audit log is being read back: nothing is
                               checked, claimed or collected until it is */
    int remote_fs;
    int lost;               /* incoming is gone: look for it every second */
    self_t self;
    uint64_t jobseq;        /* the last {seq} given */
    struct logidx *logidx;  /* the audit log read back, while it is applied
                               (see watch.c) */
    metrics_t m;
    char *claims;           /* incoming/.ckprep-claims */
    char status[160];       /* the last STATUS= sent */
};

enum { CLAIM_OK, CLAIM_BUSY, CLAIM_DONE, CLAIM_ERROR };

static inline void ident_of(const struct stat *st, ident_t *id)
{
    id->ino = (uint64_t)st->st_ino;
    id->size = (uint64_t)st->st_size;
    id->mtime_ns =
        (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* An O_PATH descriptor of the file at path if it is still the regular file
 * of identity id (a symlink is not followed), for a sandbox rule that
 * holds that inode whatever the path names later; -1 otherwise. */
int watch_open_claimed(const char *path, const ident_t *id);

static inline int ident_eq(const ident_t *a, const ident_t *b)
{
    return a->ino == b->ino && a->size == b->size && a->mtime_ns == b->mtime_ns;
}

/* ---- watch_table.c: the file table and names -------------------------- */

/* The entry of rel, or NULL. */
file_t *watch_file_find(daemon_t *d, const char *rel);
/* The entry of rel, made (F_OTHER) when missing; NULL when out of memory. */
file_t *watch_file_get(daemon_t *d, const char *rel);
/* Forget f (not busy) and free it. */
void watch_file_drop(daemon_t *d, file_t *f);
/* Held by a probe or a job: the entry must stay. */
int watch_busy(const file_t *f);
/* f changed at now: wait settle_ms, or mark it dirty when busy. */
void watch_set_pending(daemon_t *d, file_t *f, uint64_t now);
/* Move f out of F_PENDING (or any state) to state. */
void watch_leave_pending(daemon_t *d, file_t *f, int state);
/* A pending f is to be looked at when (uv_now time): its place in the due
 * heap, and the tick timer armed for the earliest. */
void watch_due(daemon_t *d, file_t *f, uint64_t when);
/* Take the earliest pending file out of the due heap (nheap > 0); it stays
 * pending: watch_due puts it back. */
file_t *watch_due_pop(daemon_t *d);
/* Arm the tick timer for the earliest pending file (or stop it). */
void watch_arm(daemon_t *d);
/* Does the file name match include and none of exclude? */
int watch_name_wanted(const ck_watch_conf_t *w, const char *name);
/* The output path of the input at rel (ck_malloc), or NULL; with v NULL,
 * its dynamic fields are '*' (a glob).  Thread-safe. */
char *watch_out_path(const ck_watch_conf_t *w, const char *rel,
                     const ck_watch_name_vars_t *v);
/* A new, non-UTF-8 f takes the done state its log reading has. */
void watch_adopt(daemon_t *d, file_t *f, const ident_t *id);
/* Send STATUS= when it changed. */
void watch_status(daemon_t *d);

/* ---- watch_claim.c: claims and readiness ------------------------------ */

/* The claim file of rel at identity id (ck_malloc), or NULL. */
char *watch_claim_path(daemon_t *d, const char *rel, const ident_t *id);
/* Give back f's claim (at f->id): a queued file not started. */
void watch_unclaim(daemon_t *d, const file_t *f);
/* The same in the claims folder claims. */
char *watch_claim_file(const char *claims, const char *rel, const ident_t *id);
/* Fill s with this process's host, boot id, pid namespace, start time. */
void watch_self(self_t *s);
/* How a claim is written: created (O_EXCL); replaced durably (a temporary
 * synced, renamed, the folder synced); or rewritten in place, not synced
 * (the claim exists: no new inode, no rename; the caller syncs it when it
 * must be durable).  A reader that meets a claim half rewritten judges it
 * by its holder's refreshes, as one it cannot read. */
enum { CLAIM_W_EXCL, CLAIM_W_DURABLE, CLAIM_W_INPLACE };
/* Write a claim (who, state), how as above.  0 or -errno. */
int watch_claim_write(const char *path, const self_t *s, const char *state,
                      int how);
/* Is the claim at path held by someone alive (me: this process, stale_s:
 * claim_stale_s)?  *done: its state is done.  Thread-safe. */
int watch_claim_alive(const self_t *me, uint64_t stale_s, const char *path,
                      int *done, int *holder, ino_t *ino);
/* Claim rel at path: CLAIM_OK, CLAIM_BUSY, CLAIM_DONE or CLAIM_ERROR. */
int watch_claim(daemon_t *d, const char *rel, const char *path);
/* Timer: touch the claims of running and queued files. */
void watch_refresh_cb(uv_timer_t *t);
/* Timer: check the pending files that are due, start jobs. */
void watch_tick_cb(uv_timer_t *t);
/* Check the pending files that are due (as many as probes may start),
 * start jobs, arm the timer for the next. */
void watch_pump(daemon_t *d);

/* ---- watch_job.c: jobs ------------------------------------------------ */

/* Drop a reference to a loaded configuration (NULL is fine). */
void watch_cref_put(cref_t *r);
/* Keep, move or delete a done input if unchanged, as w says; 1 when it
 * went.  Touches no daemon state: runs on the thread pool too. */
int watch_file_after(const ck_watch_conf_t *w, const char *rel,
                     const char *in, const ident_t *id);
/* Move the input in (rel under incoming, identity id) of a failed job to
 * w's failed/ with NAME.error.json holding rec (NAME.seq when an earlier
 * failure holds the name); 1 when it went.  Touches no daemon state. */
int watch_file_failed(const ck_watch_conf_t *w, uint64_t seq,
                       const char *rel, const char *in, const ident_t *id,
                       const char *rec);
/* Start queued jobs while workers are free. */
void watch_start_jobs(daemon_t *d);
/* Queue f (claimed) for a job. */
void watch_enqueue(daemon_t *d, file_t *f);

/* ---- watch_scan.c: inotify and scans ---------------------------------- */

/* Scan incoming again, forget what is gone, tidy claims. */
void watch_rescan(daemon_t *d);
/* watch_rescan with the walk on the thread pool (one at a time). */
void watch_rescan_async(daemon_t *d);
/* Timer: watch_rescan_async unless stopping. */
void watch_rescan_cb(uv_timer_t *t);
/* Start inotify on incoming (rescans alone when it fails). */
int watch_start(daemon_t *d);
/* Stop inotify and forget every watched folder. */
void watch_stop(daemon_t *d);

/* ---- watch.c: configuration, stopping --------------------------------- */

/* (Re)start the tick, rescan and refresh timers for the configuration. */
void watch_timers(daemon_t *d);
/* When stopping and nothing runs, close every handle. */
void watch_maybe_exit(daemon_t *d);
/* While the audit log read back is applied: what its last record of f's
 * input says (done identity, done or failed). */
void watch_log_lookup(daemon_t *d, file_t *f);
/* Free the index of the audit log read back at start (held by the daemon
 * until the first scan, on the pool, is applied). */
void watch_logidx_drop(daemon_t *d);

/* ---- watch_metrics.c: metrics_file ------------------------------------ */

/* Count a finished job from its record text (ok or failed). */
void watch_metrics_job(daemon_t *d, const char *rec);
/* Write metrics_file now (when set). */
void watch_metrics_write(daemon_t *d);
/* Timer: watch_metrics_write. */
void watch_metrics_cb(uv_timer_t *t);

/* ---- watch_scan.c, again ---------------------------------------------- */

/* Remove claims nobody holds any more (see watch_scan.c). */
void watch_claims_gc(daemon_t *d);
/* Timer: watch_claims_gc unless stopping. */
void watch_gc_cb(uv_timer_t *t);

#endif
