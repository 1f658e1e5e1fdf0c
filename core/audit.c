/*
 * audit.c -- the audit log.  See audit.h.  Used from one thread at a time
 * (ck_audit_open2 reads a big log's second half on one of its own).
 *
 * Several daemons may share one log: opening (read back, cut a torn line)
 * and each append hold flock(LOCK_EX) on it, and an append numbers its
 * record from the last line in the file, not from what this process wrote.
 */
#define _GNU_SOURCE
#include "audit.h"

#include "json.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The seq a line starts with ({"seq":N, spaces allowed around the
 * punctuation, as other JSON writers put them), or 0 when it has none. */
static uint64_t line_seq(const char *line, size_t n)
{
    static const char *const parts[] = { "{", "\"seq\"", ":" };
    size_t i = 0;
    uint64_t seq = 0;

    for (size_t k = 0; k < CK_ARRAY_SIZE(parts); k++) {
        size_t len = strlen(parts[k]);

        while (i < n && (line[i] == ' ' || line[i] == '\t'))
            i++;
        if (n - i < len || memcmp(line + i, parts[k], len) != 0)
            return 0;
        i += len;
    }
    while (i < n && (line[i] == ' ' || line[i] == '\t'))
        i++;
    for (; i < n && line[i] >= '0' && line[i] <= '9'; i++) {
        if (seq > (UINT64_MAX - 9) / 10)
            return 0;
        seq = seq * 10 + (uint64_t)(line[i] - '0');
    }
    return seq;
}

/* What one reader of the log met: the highest seq, the lines its
 * callback refused. */
typedef struct {
    uint64_t seq, bad_lines;
} tally_t;

/* The complete lines of [p, p + n), at file offset off, to cb; returns
 * the bytes they took, or CK_ECANCELED (in *rc) when cb stops. */
static size_t lines(tally_t *t, ck_audit_cb cb, void *ud, const char *p,
                    size_t n, off_t off, int *rc)
{
    size_t at = 0;

    while (*rc == 0) {
        const char *nl = memchr(p + at, '\n', n - at);
        size_t len;

        if (nl == NULL)
            break;
        len = (size_t)(nl - (p + at));
        if (len > 0) {
            uint64_t seq = line_seq(p + at, len);

            if (seq > t->seq)
                t->seq = seq;
            *rc = cb != NULL ? cb(ud, p + at, len, (uint64_t)off + at) : 0;
            if (*rc < 0 && *rc != CK_ECANCELED)
                t->bad_lines++, *rc = 0;
        }
        at += len + 1;
    }
    return at;
}

/*
 * The same, through windows of 16 MiB mapped one after the other: the log
 * is read where the page cache holds it, never copied, and a window is
 * unmapped before the next (a million-line log is GiBs; a mapped window
 * counts in the daemon's RSS, two at once when the log is read in halves:
 * 32 MiB windows read a 1.8 GB log 5% faster in 33 MiB more).  Up to
 * offset to.  0, or 1 when a window cannot be mapped (read_range then
 * reads what is left).
 */
static int map_back(tally_t *t, int fd, ck_audit_cb cb, void *ud,
                    off_t *off, off_t to, int *rc)
{
    const size_t win = 16 << 20;
    long pg = sysconf(_SC_PAGESIZE);

    while (*rc == 0 && *off < to) {
        off_t base = *off - *off % pg;
        size_t len = to - base < (off_t)win ? (size_t)(to - base) : win;
        size_t skip = (size_t)(*off - base), took;
        char *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd,
                       base);

        if (m == MAP_FAILED)
            return 1;
        took = lines(t, cb, ud, m + skip, len - skip, *off, rc);
        munmap(m, len);
        if (took == 0 && base + (off_t)len < to)
            return 1;       /* a line longer than a window */
        *off += (off_t)took;
        if (base + (off_t)len >= to)
            break;
    }
    return 0;
}

/*
 * Just past the last newline in [from, to) of fd, or from when there is
 * none: only that much of the log is mapped.  What follows it, a line
 * being appended or a torn one, another daemon may cut (ck_audit_open,
 * an append undone) while this one reads without the lock, and a mapped
 * page wholly past the end of the file is a SIGBUS when read.
 */
static off_t lines_end(int fd, off_t from, off_t to)
{
    char buf[4096];

    while (to > from) {
        off_t at = to - from > (off_t)sizeof(buf) ? to - (off_t)sizeof(buf)
                                                  : from;
        ssize_t n = pread(fd, buf, (size_t)(to - at), at);

        if (n != to - at)
            return from;    /* the fallback's reads find what is there */
        for (ssize_t i = n; i-- > 0;)
            if (buf[i] == '\n')
                return at + i + 1;
        to = at;
    }
    return from;
}

/* Read every complete line from offset from up to offset to (-1: the
 * end); *end: the offset just past the last one.  Mapped (map_back), or
 * cut in a buffer of 4 MiB (read(2), so the log stays out of this
 * process's memory) that a longer line grows. */
static int read_range(const ck_audit_t *a, tally_t *t, ck_audit_cb cb,
                      void *ud, off_t from, off_t to, off_t *end,
                      ck_err_t *err)
{
    int fd = open(a->path, O_RDONLY | O_CLOEXEC), rc = 0;
    size_t cap = 4 << 20, have = 0;
    char *buf;
    off_t off = from;      /* of buf[0] */
    struct stat st;

    if (fd < 0)
        return ck_err_set(err, -errno, "%s: %s", a->path, strerror(errno));
    if (fstat(fd, &st) == 0) {
        if (to < 0 || to > st.st_size)
            to = st.st_size;
        if (map_back(t, fd, cb, ud, &off, lines_end(fd, from, to), &rc) == 0) {
            close(fd);
            *end = off;
            if (rc == CK_ECANCELED)
                return ck_err_set(err, rc, "%s: reading stopped", a->path);
            return rc;
        }
    }
    buf = ck_malloc(cap);
    if (buf == NULL) {
        close(fd);
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    }
    for (;;) {
        ssize_t n;
        size_t at = 0, want;

        if (have == cap) {      /* one line fills the buffer */
            char *b = ck_realloc(buf, cap * 2);

            if (b == NULL) {
                rc = ck_err_set(err, CK_ENOMEM, "out of memory");
                break;
            }
            buf = b;
            cap *= 2;
        }
        want = cap - have;
        if (to >= 0 && (off_t)want > to - (off + (off_t)have))
            want = (size_t)(to - (off + (off_t)have));
        if (want == 0)
            break;
        n = pread(fd, buf + have, want, off + (off_t)have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = ck_err_set(err, -errno, "%s: %s", a->path, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        have += (size_t)n;
        at = lines(t, cb, ud, buf, have, off, &rc);
        if (rc < 0)
            break;
        memmove(buf, buf + at, have - at);
        have -= at;
        off += (off_t)at;
    }
    ck_free(buf);
    close(fd);
    *end = off;
    if (rc == CK_ECANCELED)
        return ck_err_set(err, rc, "%s: reading stopped", a->path);
    return rc;
}

static void tally_add(ck_audit_t *a, const tally_t *t)
{
    if (t->seq > a->seq)
        a->seq = t->seq;
    a->bad_lines += t->bad_lines;
}

static int read_back(ck_audit_t *a, ck_audit_cb cb, void *ud, off_t from,
                     off_t *end, ck_err_t *err)
{
    tally_t t = { 0, 0 };
    int rc = read_range(a, &t, cb, ud, from, -1, end, err);

    tally_add(a, &t);
    return rc;
}

/*
 * A log of many records is read in two halves, each on a thread of its
 * own: finding the lines (memchr) and skimming each for its input and
 * status were nine tenths of the daemon's start-up with a log of 10^6
 * records.  The halves meet just after a newline past the middle.
 */
#define SPLIT_MIN ((off_t)8 << 20)

typedef struct {
    const ck_audit_t *a;
    ck_audit_cb cb;
    void *ud;
    off_t from, end;
    tally_t t;
    ck_err_t err;
    int rc;
} half_t;

static void *half_run(void *arg)
{
    half_t *h = arg;

    h->rc = read_range(h->a, &h->t, h->cb, h->ud, h->from, -1, &h->end,
                       &h->err);
    return NULL;
}

/* Where the log's second half starts: just past the first newline at or
 * after its middle, or 0 for none (a small log, or no newline there). */
static off_t split_at(const ck_audit_t *a)
{
    char buf[4096];
    struct stat st;
    off_t pos;
    int fd = open(a->path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return 0;
    if (fstat(fd, &st) < 0 || st.st_size < SPLIT_MIN) {
        close(fd);
        return 0;
    }
    for (pos = st.st_size / 2; pos < st.st_size;) {
        ssize_t n = pread(fd, buf, sizeof(buf), pos);
        const char *nl = n > 0 ? memchr(buf, '\n', (size_t)n) : NULL;

        if (n <= 0)
            break;
        if (nl != NULL) {
            close(fd);
            pos += nl - buf + 1;
            return pos < st.st_size ? pos : 0;
        }
        pos += n;
    }
    close(fd);
    return 0;
}

/* read_back from 0, the second half to ud2 on a second thread when there
 * is one (see ck_audit_open2); *last: the ud that got the last lines. */
static int read_halves(ck_audit_t *a, ck_audit_cb cb, void *ud, void *ud2,
                       void **last, off_t *end, ck_err_t *err)
{
    off_t split = ud2 != NULL ? split_at(a) : 0;
    tally_t t = { 0, 0 };
    half_t h;
    pthread_t th;
    int rc;

    *last = ud;
    if (split == 0)
        return read_back(a, cb, ud, 0, end, err);
    memset(&h, 0, sizeof(h));
    h.a = a;
    h.cb = cb;
    h.ud = ud2;
    h.from = split;
    if (pthread_create(&th, NULL, half_run, &h) != 0)
        return read_back(a, cb, ud, 0, end, err);
    rc = read_range(a, &t, cb, ud, 0, split, end, err);
    pthread_join(th, NULL);
    tally_add(a, &t);
    tally_add(a, &h.t);
    if (rc < 0)
        return rc;
    if (h.rc < 0) {
        *err = h.err;
        return h.rc;
    }
    if (*end != split)  /* (the halves meet at a newline) */
        return ck_err_set(err, CK_EFORMAT, "%s: changed while read back",
                          a->path);
    *end = h.end;
    *last = ud2;
    return 0;
}

int ck_audit_read(ck_audit_t *a, ck_audit_cb cb, void *ud, ck_err_t *err)
{
    off_t end;

    return read_back(a, cb, ud, 0, &end, err);
}

static int open_fd(ck_audit_t *a, ck_err_t *err)
{
    a->fd = open(a->path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW,
                 0640);
    if (a->fd < 0)
        return ck_err_set(err, -errno, "%s: %s", a->path, strerror(errno));
    return 0;
}

int ck_audit_open(ck_audit_t *a, const char *path, ck_audit_cb cb, void *ud,
                  ck_err_t *err)
{
    return ck_audit_open2(a, path, cb, ud, NULL, err);
}

int ck_audit_open2(ck_audit_t *a, const char *path, ck_audit_cb cb, void *ud,
                   void *ud2, ck_err_t *err)
{
    struct stat st;
    off_t end = 0;
    void *last = ud;
    int rc;

    memset(a, 0, sizeof(*a));
    a->fd = -1;
    if (gethostname(a->host, sizeof(a->host) - 1) < 0)
        strcpy(a->host, "unknown");
    a->path = ck_strdup(path);
    if (a->path == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    if ((rc = open_fd(a, err)) < 0)
        return rc;
    /* the bulk without the lock: appends add whole lines after it */
    if ((rc = read_halves(a, cb, ud, ud2, &last, &end, err)) < 0)
        return rc;
    /* another daemon's append in progress is not a torn line */
    if (flock(a->fd, LOCK_EX) < 0)
        return ck_err_set(err, -errno, "%s: lock: %s", path, strerror(errno));
    if ((rc = read_back(a, cb, last, end, &end, err)) < 0)
        goto out;
    if (fstat(a->fd, &st) < 0) {
        rc = ck_err_set(err, -errno, "%s: %s", path, strerror(errno));
        goto out;
    }
    if (st.st_size > end) {
        if (ftruncate(a->fd, end) < 0 || fsync(a->fd) < 0) {
            rc = ck_err_set(err, -errno, "%s: cutting a torn last line: %s",
                            path, strerror(errno));
            goto out;
        }
        a->torn_bytes = (uint64_t)(st.st_size - end);
    }
out:
    flock(a->fd, LOCK_UN);
    return rc;
}

/*
 * The seq of the last line of the file (size bytes, ending with '\n'), or
 * 0 when it has none: read backwards to the line's start, then its first
 * bytes, {"seq":N.
 */
static uint64_t last_seq(int fd, off_t size)
{
    char buf[4096], head[40];
    off_t end = size - 1, start = 0;    /* the last line's '\n' is at end */
    ssize_t n;

    while (end > 0 && start == 0) {
        off_t from = end > (off_t)sizeof(buf) ? end - (off_t)sizeof(buf) : 0;

        n = pread(fd, buf, (size_t)(end - from), from);
        if (n != end - from)
            return 0;
        for (ssize_t i = n - 1; i >= 0 && start == 0; i--)
            if (buf[i] == '\n')
                start = from + i + 1;
        end = from;
    }
    n = pread(fd, head, sizeof(head) - 1, start);
    if (n <= 0)
        return 0;
    return line_seq(head, (size_t)n);
}

int ck_audit_append(ck_audit_t *a, const char *rec, ck_err_t *err)
{
    return ck_audit_append_many(a, &rec, 1, err);
}

int ck_audit_append_many(ck_audit_t *a, const char *const *recs, size_t n,
                         ck_err_t *err)
{
    ck_buf_t b = { 0 };
    struct stat st;
    ssize_t w = -1;
    uint64_t seq;
    int rc = 0, locked;

    for (size_t i = 0; i < n; i++)
        if (recs[i][0] != '{')
            return ck_err_set(err, CK_EFORMAT, "audit record is not an object");
    locked = flock(a->fd, LOCK_EX) == 0;
    if (fstat(a->fd, &st) < 0)
        st.st_size = -1;
    seq = a->seq;
    if (locked && st.st_size > 0) {     /* another daemon may have written */
        uint64_t last = last_seq(a->fd, st.st_size);

        if (last > seq)
            seq = last;
    }
    if (locked && st.st_size > 0) {
        char last = '\n';

        /* a line another writer left torn would swallow this record */
        if (pread(a->fd, &last, 1, st.st_size - 1) == 1 && last != '\n')
            ck_buf_putc(&b, '\n');
    }
    for (size_t i = 0; i < n; i++) {
        const char *rec = recs[i];

        ck_buf_printf(&b, "{\"seq\":%llu,\"host\":",
                      (unsigned long long)(seq + 1 + i));
        ck_json_quote(&b, a->host, strlen(a->host));
        if (rec[1] != '}')
            ck_buf_putc(&b, ',');
        ck_buf_put(&b, rec + 1, strlen(rec + 1));
        ck_buf_putc(&b, '\n');
    }
    if (b.oom) {
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        goto out;
    }
    do
        w = write(a->fd, b.data, b.len);
    while (w < 0 && errno == EINTR);
    if (w != (ssize_t)b.len) {
        int e = w < 0 ? errno : ENOSPC;

        /* take back a partial line so the next record starts a line */
        if (w > 0 && st.st_size >= 0 && ftruncate(a->fd, st.st_size) < 0)
            (void)0;
        rc = ck_err_set(err, -e, "%s: %s", a->path, strerror(e));
        goto out;
    }
    if (fdatasync(a->fd) < 0) {
        rc = ck_err_set(err, -errno, "%s: fdatasync: %s", a->path,
                        strerror(errno));
        goto out;
    }
    a->seq = seq + n;
out:
    if (locked)
        flock(a->fd, LOCK_UN);
    ck_buf_release(&b);
    return rc;
}

int ck_audit_reopen(ck_audit_t *a, ck_err_t *err)
{
    int old = a->fd;
    int rc = open_fd(a, err);

    if (rc < 0) {
        a->fd = old;  /* keep writing where we were */
        return rc;
    }
    close(old);
    return 0;
}

void ck_audit_close(ck_audit_t *a)
{
    if (a->fd >= 0)
        close(a->fd);
    ck_free(a->path);
    memset(a, 0, sizeof(*a));
    a->fd = -1;
}
