/*
 * zip.c -- reading the zip container (APPNOTE 6.3, the subset torch.save
 * and common tools produce); zip_write.c writes it.
 *
 * Every field read from the file goes through the rd_* helpers over a
 * bounded cursor with a sticky 'bad' flag; every count and size is capped
 * before it sizes an allocation.  zlib provides crc32 and raw inflate.
 */
#define _GNU_SOURCE
#include "zip.h"
#include "zip_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* The longest entry name read: a local header's (torch's are short). */
#define CK_ZIP_NAME_MAX 512

int ck_pread_full(int fd, void *p, size_t n, uint64_t off)
{
    uint8_t *b = p;

    while (n > 0) {
        ssize_t r = pread(fd, b, n, (off_t)off);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            return -EIO;
        b += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

/* off: where to pwrite, or UINT64_MAX to write at the descriptor's
 * position (a pipe). */
static int write_at(int fd, const void *p, size_t n, uint64_t off)
{
    const uint8_t *b = p;

    while (n > 0) {
        ssize_t r = off == UINT64_MAX ? write(fd, b, n)
                                      : pwrite(fd, b, n, (off_t)off);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        b += r;
        n -= (size_t)r;
        if (off != UINT64_MAX)
            off += (uint64_t)r;
    }
    return 0;
}

int ck_pwrite_full(int fd, const void *p, size_t n, uint64_t off)
{
    return write_at(fd, p, n, off);
}

void ck_pipe_widen(int fd)
{
    struct stat sb;

    if (fstat(fd, &sb) == 0 && S_ISFIFO(sb.st_mode) &&
        fcntl(fd, F_GETPIPE_SZ) < (1 << 20))
        (void)fcntl(fd, F_SETPIPE_SZ, 1 << 20);
}

int ck_write_full(int fd, const void *p, size_t n)
{
    return write_at(fd, p, n, UINT64_MAX);
}

/* ---- bounded little-endian cursor ------------------------------------- */

typedef struct {
    const uint8_t *p, *end;
    int bad;
} cur_t;

static uint64_t rd(cur_t *c, int n)
{
    uint64_t v = 0;

    if (c->bad || c->end - c->p < n) {
        c->bad = 1;
        return 0;
    }
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | c->p[i];
    c->p += n;
    return v;
}

static const uint8_t *rd_bytes(cur_t *c, size_t n)
{
    const uint8_t *p = c->p;

    if (c->bad || (size_t)(c->end - c->p) < n) {
        c->bad = 1;
        return NULL;
    }
    c->p += n;
    return p;
}

/* ---- reader ----------------------------------------------------------- */

/* Where the end records and the central directory are read from: the file
 * at fd, or (a stream's tail, ck_zip_open_tail) bytes [base, base + n) of
 * it held in memory. */
typedef struct {
    int fd;
    const uint8_t *mem;
    uint64_t base, n;
} src_t;

static int src_read(const src_t *s, void *p, size_t n, uint64_t off)
{
    if (s->mem == NULL)
        return ck_pread_full(s->fd, p, n, off);
    if (off < s->base || off - s->base > s->n || n > s->n - (off - s->base))
        return -EIO;
    memcpy(p, s->mem + (off - s->base), n);
    return 0;
}

static int name_ok(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;

    if (n == 0 || s[0] == '/' || memchr(s, '\\', n) != NULL)
        return 0;
    /* no "." or ".." path component */
    for (size_t start = 0; start <= n;) {
        const char *slash = memchr(s + start, '/', n - start);
        size_t end = slash ? (size_t)(slash - s) : n;
        size_t len = end - start;

        if ((len == 1 && s[start] == '.') ||
            (len == 2 && s[start] == '.' && s[start + 1] == '.'))
            return 0;
        start = end + 1;
    }
    /* printable UTF-8, no control bytes */
    while (i < n) {
        int k;

        if (u[i] >= 0x20 && u[i] < 0x7f) {  /* printable ASCII */
            i++;
            continue;
        }
        k = ck_utf8_len(u + i, n - i, 0);
        if (k == 0 || u[i] < 0x20 || u[i] == 0x7f)
            return 0;
        i += (size_t)k;
    }
    return 1;
}

static int cmp_lho(const void *a, const void *b)
{
    const ck_zip_entry_t *x = *(ck_zip_entry_t *const *)a;
    const ck_zip_entry_t *y = *(ck_zip_entry_t *const *)b;

    return x->lho < y->lho ? -1 : x->lho > y->lho;
}

/* Names as miniz's mz_zip_reader_locate_file compares them when torch
 * looks a record up (flags 0): ASCII letters folded to lower case. */
static int fold_cmp(const char *x, const char *y)
{
    for (;; x++, y++) {
        int a = (*x >= 'A' && *x <= 'Z') ? *x - 'A' + 'a' : *x;
        int b = (*y >= 'A' && *y <= 'Z') ? *y - 'A' + 'a' : *y;

        if (a != b || a == 0)
            return (unsigned char)a - (unsigned char)b;
    }
}

/* fold_cmp of the first n bytes: 0 when they match ignoring case. */
static int fold_ncmp(const char *x, const char *y, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int a = (x[i] >= 'A' && x[i] <= 'Z') ? x[i] - 'A' + 'a' : x[i];
        int b = (y[i] >= 'A' && y[i] <= 'Z') ? y[i] - 'A' + 'a' : y[i];

        if (a != b || a == 0)
            return 1;
    }
    return 0;
}

/* Zip64 extended information: the fields whose 32-bit value is saturated. */
static int zip64_extra(cur_t *x, ck_zip_entry_t *e, int usize64, int csize64,
                       int lho64)
{
    while (x->end - x->p >= 4) {
        uint16_t id = (uint16_t)rd(x, 2), len = (uint16_t)rd(x, 2);
        cur_t f;

        if (x->end - x->p < len)
            return -1;
        f.p = x->p;
        f.end = x->p + len;
        f.bad = 0;
        x->p += len;
        if (id != 0x0001)
            continue;
        if (usize64)
            e->usize = rd(&f, 8);
        if (csize64)
            e->csize = rd(&f, 8);
        if (lho64)
            e->lho = rd(&f, 8);
        return f.bad ? -1 : 0;
    }
    return usize64 || csize64 || lho64 ? -1 : 0;
}

/* The zip64 end record the locator before the classic one points at, if
 * any: it replaces what the classic record saturated. */
static int end_zip64(const src_t *src, const uint8_t *loc, uint64_t eocd, ck_zip_t *z,
                     uint64_t *count, uint64_t *end_of_data, ck_err_t *err)
{
    cur_t l = { loc, loc + 20, 0 };
    uint8_t e64[56];
    uint64_t off64, n64, n64disk, size64, off64cd;

    if (rd(&l, 4) != SIG_LOC64)
        return 0;
    if (rd(&l, 4) != 0) /* the disk holding the zip64 end record */
        return ck_err_set(err, CK_EFORMAT, "zip: multi-disk archive");
    off64 = rd(&l, 8);
    if (rd(&l, 4) > 1) /* disks in all */
        return ck_err_set(err, CK_EFORMAT, "zip: multi-disk archive");
    if (off64 > eocd - 20 - 56 ||
        src_read(src, e64, sizeof(e64), off64) < 0)
        return ck_err_set(err, CK_EFORMAT, "zip: bad zip64 locator");
    l.p = e64;
    l.end = e64 + sizeof(e64);
    if (rd(&l, 4) != SIG_EOCD64)
        return ck_err_set(err, CK_EFORMAT, "zip: bad zip64 end record");
    rd(&l, 8);
    rd(&l, 2);
    rd(&l, 2);
    if (rd(&l, 4) != 0 || rd(&l, 4) != 0)
        return ck_err_set(err, CK_EFORMAT, "zip: multi-disk archive");
    /* entries on this disk, as miniz reads them, must be all entries */
    n64disk = rd(&l, 8);
    n64 = rd(&l, 8);
    if (n64disk != n64)
        return ck_err_set(err, CK_EFORMAT, "zip: multi-disk archive");
    size64 = rd(&l, 8);
    off64cd = rd(&l, 8);
    /* the classic record agrees, or says "see zip64" */
    if ((*count != 0xffff && *count != n64) ||
        (z->cd_size != 0xffffffffu && z->cd_size != size64) ||
        (z->cd_off != 0xffffffffu && z->cd_off != off64cd))
        return ck_err_set(err, CK_EFORMAT, "zip: end records disagree");
    *count = n64;
    z->cd_size = size64;
    z->cd_off = off64cd;
    z->zip64 = 1;
    *end_of_data = off64;
    return 0;
}

/* Find the end records and from them the central directory: z->cd_off,
 * z->cd_size, z->zip64 and the entry count. */
static int find_end(const src_t *src, uint64_t fsize, ck_zip_t *z,
                    uint64_t *count, ck_err_t *err)
{
    uint8_t tail[65536 + 22 + 20];
    uint64_t avail = src->mem ? src->n : fsize;
    size_t tlen = avail < sizeof(tail) ? (size_t)avail : sizeof(tail);
    uint64_t tstart = fsize - tlen, eocd = UINT64_MAX, end_of_data, cnt_disk;
    cur_t c;
    int rc;

    if (fsize < 22)
        return ck_err_set(err, CK_EFORMAT, "zip: file too short");
    rc = src_read(src, tail, tlen, tstart);
    if (rc < 0)
        return ck_err_set(err, rc, "read: %s", strerror(-rc));
    if (tlen < 22)
        return ck_err_set(err, CK_EFORMAT, "zip: no end of central directory");
    for (size_t i = tlen - 22 + 1; i-- > 0;) {
        c.p = tail + i;
        c.end = tail + tlen;
        c.bad = 0;
        if (rd(&c, 4) != SIG_EOCD)
            continue;
        c.p += 16;
        if (i + 22 + rd(&c, 2) == tlen) {
            eocd = tstart + i;
            break;
        }
    }
    if (eocd == UINT64_MAX)
        return ck_err_set(err, CK_EFORMAT, "zip: no end of central directory");
    c.p = tail + (eocd - tstart) + 4;
    c.end = tail + tlen;
    c.bad = 0;
    if (rd(&c, 2) != 0 || rd(&c, 2) != 0)
        return ck_err_set(err, CK_EFORMAT, "zip: multi-disk archive");
    cnt_disk = rd(&c, 2);
    *count = rd(&c, 2);
    if (cnt_disk != *count)
        return ck_err_set(err, CK_EFORMAT, "zip: multi-disk archive");
    z->cd_size = rd(&c, 4);
    z->cd_off = rd(&c, 4);
    end_of_data = eocd;
    if (eocd - tstart >= 20) {
        rc = end_zip64(src, tail + (eocd - tstart) - 20, eocd, z, count,
                       &end_of_data, err);
        if (rc < 0)
            return rc;
    }
    if (z->cd_off > end_of_data || z->cd_size > end_of_data - z->cd_off)
        return ck_err_set(err, CK_EFORMAT,
                          "zip: central directory out of bounds");
    /* nothing between them: a second end record there could tell another
     * reader of another central directory */
    if (z->cd_off + z->cd_size != end_of_data)
        return ck_err_set(err, CK_EFORMAT,
                          "zip: %llu bytes between the central directory and "
                          "the end record",
                          (unsigned long long)(end_of_data - z->cd_off -
                                               z->cd_size));
    if (*count > MAX_ENTRIES || z->cd_size > MAX_CD_BYTES ||
        *count * 46 > z->cd_size)
        return ck_err_set(err, CK_EFORMAT,
                          "zip: central directory of %llu entries in %llu bytes",
                          (unsigned long long)*count,
                          (unsigned long long)z->cd_size);
    if (*count == 0)
        return ck_err_set(err, CK_EFORMAT, "zip: empty archive");
    return 0;
}

/*
 * A file's local headers are read through a window (ck_rwin_t): they are
 * checked in offset order (torch writes them so), and one pread brings in
 * the headers of thousands of small records (the window grows while the
 * reads go on through the file: 3,100 reads of 16 KiB over 4 * 10^5
 * records, 300 now); for large records a read is a header and 16 KiB.
 * Never past the central directory.
 */
#define WIN_BYTES (256u << 10) /* a window's most */
#define RWIN_STEP (16u << 10)  /* and its first read's */

void ck_rwin_release(ck_rwin_t *w)
{
    ck_map_free(w->buf, w->cap);
    w->buf = NULL;
    w->len = 0;
}

const uint8_t *ck_rwin_get(ck_rwin_t *w, int fd, uint64_t off, size_t n,
                           uint64_t limit, int *rc)
{
    size_t want, got = 0, most = w->max > w->cap ? w->max : w->cap;

    if (w->buf != NULL && fd == w->fd && off >= w->off &&
        off - w->off <= w->len && w->len - (off - w->off) >= n &&
        off <= limit && limit - off >= n)
        return w->buf + (off - w->off);
    /* on from inside the window or less than a read past it: a scan over
     * small things, read in bigger steps; back or far on: the least */
    if (w->step == 0 || w->fd != fd || off < w->off ||
        (off > w->off + w->len && off - (w->off + w->len) >= w->step))
        w->step = RWIN_STEP;
    else if (w->step < most)
        w->step *= 2;
    if (w->step > most)
        w->step = most;
    w->len = 0;
    if (n > most || off > limit || limit - off < n) {
        *rc = -EIO;
        return NULL;
    }
    if (w->buf == NULL && (w->buf = ck_map_grow(NULL, 0, w->cap)) == NULL) {
        *rc = CK_ENOMEM;
        return NULL;
    }
    want = n > w->step ? n : w->step;
    if (w->cap < want) {
        uint8_t *b = ck_map_grow(w->buf, w->cap, want);

        if (b != NULL) {
            w->buf = b;
            w->cap = want;
        } else if (n > w->cap) {
            *rc = CK_ENOMEM;
            return NULL;
        } else { /* out of memory: the reads stay the size they are */
            w->step = want = w->cap;
        }
    }
    if (limit - off < want)
        want = (size_t)(limit - off);
    while (got < want) {
        ssize_t r = pread(fd, w->buf + got, want - got, (off_t)(off + got));

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            *rc = -errno;
            return NULL;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    if (got < n) {
        *rc = -EIO;
        return NULL;
    }
    w->fd = fd;
    w->off = off;
    w->len = got;
    return w->buf;
}

/* The entry's local header agrees with its central one (method, name) and
 * its data lies before the central directory: sets e->data_off. */
static int check_local(void *ud, const ck_zip_t *z, ck_zip_entry_t *e,
                       ck_err_t *err)
{
    ck_rwin_t *w = ud;
    const char *name = e->name;
    uint64_t nlen = strlen(name);
    const uint8_t *lh, *lname;
    uint64_t ln, lx;
    cur_t l;
    int rc;

    if (e->lho > z->cd_off || z->cd_off - e->lho < 30 ||
        (lh = ck_rwin_get(w, w->fd, e->lho, 30, z->cd_off, &rc)) == NULL)
        return ck_err_set(err, CK_EFORMAT,
                          "zip: %s: local header out of bounds", e->name);
    l.p = lh;
    l.end = lh + 30;
    l.bad = 0;
    if (rd(&l, 4) != SIG_LOCAL)
        return ck_err_set(err, CK_EFORMAT, "zip: %s: bad local header",
                          e->name);
    rd(&l, 2);
    rd(&l, 2);
    if (rd(&l, 2) != e->method)
        return ck_err_set(err, CK_EFORMAT,
                          "zip: %s: local and central headers disagree",
                          e->name);
    rd_bytes(&l, 16);
    ln = rd(&l, 2);
    lx = rd(&l, 2);
    e->data_off = e->lho + 30 + ln + lx;
    if (ln != nlen || ln > CK_ZIP_NAME_MAX || e->data_off > z->cd_off ||
        (lname = ck_rwin_get(w, w->fd, e->lho + 30, (size_t)ln, z->cd_off,
                             &rc)) == NULL ||
        memcmp(lname, name, (size_t)ln) != 0)
        return ck_err_set(err, CK_EFORMAT,
                          "zip: %s: local and central headers disagree",
                          e->name);
    if (e->csize > z->cd_off - e->data_off)
        return ck_err_set(err, CK_EFORMAT,
                          "zip: %s: %llu bytes declared past the end of data",
                          e->name, (unsigned long long)e->csize);
    return 0;
}

/* Read central directory entry i at c into e, and check it.  Its name is
 * copied into arena, or without one into buf (CK_ZIP_NAME_MAX + 1 bytes):
 * a longer one is refused then, as the local header's check refuses it. */
static int read_entry(cur_t *c, size_t i, ck_zip_entry_t *e,
                      ck_arena_t *arena, char *buf, ck_err_t *err)
{
    uint64_t nlen, xlen, clen, disk;
    const uint8_t *name, *extra;
    cur_t x;

    if (rd(c, 4) != SIG_CENTRAL)
        return ck_err_set(err, CK_EFORMAT,
                          "zip: bad central directory entry %zu", i);
    rd(c, 2);
    rd(c, 2);
    e->flags = (uint16_t)rd(c, 2);
    e->method = (uint16_t)rd(c, 2);
    rd(c, 4);
    e->crc = (uint32_t)rd(c, 4);
    e->csize = rd(c, 4);
    e->usize = rd(c, 4);
    nlen = rd(c, 2);
    xlen = rd(c, 2);
    clen = rd(c, 2);
    disk = rd(c, 2); /* the disk the entry starts on */
    rd(c, 6);
    e->lho = rd(c, 4);
    name = rd_bytes(c, (size_t)nlen);
    extra = rd_bytes(c, (size_t)xlen);
    rd_bytes(c, (size_t)clen);
    if (c->bad)
        return ck_err_set(err, CK_EFORMAT, "zip: central directory truncated");
    if (disk != 0)
        return ck_err_set(err, CK_EFORMAT, "zip: multi-disk archive (entry %zu)",
                          i);
    x.p = extra;
    x.end = extra + xlen;
    x.bad = 0;
    if (zip64_extra(&x, e, e->usize == 0xffffffffu, e->csize == 0xffffffffu,
                    e->lho == 0xffffffffu) < 0)
        return ck_err_set(err, CK_EFORMAT, "zip: bad zip64 extra field");
    if (!name_ok((const char *)name, (size_t)nlen)) {
        char shown[64 * 4 + 1] = "";
        size_t o = 0;

        /* the name may hold anything: keep the message one line */
        for (size_t k = 0; k < nlen && k < 64; k++)
            o += (size_t)snprintf(shown + o, sizeof(shown) - o,
                                  name[k] >= 0x20 && name[k] < 0x7f &&
                                          name[k] != '\\'
                                      ? "%c" : "\\x%02x",
                                  name[k]);
        return ck_err_set(err, CK_EFORMAT, "zip: unsafe entry name '%s'",
                          shown);
    }
    if (arena == NULL && nlen > CK_ZIP_NAME_MAX)
        return ck_err_set(err, CK_EFORMAT, "zip: entry %zu: name of %llu "
                          "bytes", i, (unsigned long long)nlen);
    if (arena == NULL) {
        memcpy(buf, name, (size_t)nlen);
        buf[nlen] = '\0';
        e->name = buf;
    } else {
        e->name = ck_arena_strndup(arena, (const char *)name, (size_t)nlen);
    }
    if (e->name == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    if (e->flags & 0x41)
        return ck_err_set(err, CK_EUNSUPPORTED, "zip: %s: encrypted entry",
                          e->name);
    if (e->method != 0 && e->method != 8)
        return ck_err_set(err, CK_EUNSUPPORTED,
                          "zip: %s: compression method %u", e->name,
                          e->method);
    if (e->method == 0 && e->csize != e->usize)
        return ck_err_set(err, CK_EFORMAT,
                          "zip: %s: stored entry with two sizes", e->name);
    return 0;
}

/* A name's hash with ASCII letters folded as fold_cmp folds them. */
static uint64_t fold_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325u;

    for (; *s; s++)
        h = (h ^ (uint64_t)(unsigned char)((*s >= 'A' && *s <= 'Z') ? *s - 'A' + 'a'
                                                                      : *s)) *
            0x100000001b3u;
    return h;
}

/*
 * Names of the form P + a number (P the folder of the first such record:
 * torch's "<top>/data/"), the number without leading zeros and below
 * limit (torch numbers from 0: below the records' count): the number + 1,
 * else 0.  fold: compare P ignoring case.
 */
static size_t numbered(const char *name, const char *p, size_t plen,
                       size_t limit, int fold)
{
    size_t n = 0;
    const char *d;

    if (plen == 0 || (fold ? fold_ncmp(name, p, plen) : strncmp(name, p, plen)))
        return 0;
    d = name + plen;
    if (*d == '\0' || (d[0] == '0' && d[1] != '\0'))
        return 0;
    for (; *d >= '0' && *d <= '9'; d++)
        if ((n = n * 10 + (size_t)(*d - '0')) >= limit)
            return 0;
    return *d == '\0' ? n + 1 : 0;
}

static int twins(const char *x, const char *y, ck_err_t *err)
{
    if (strcmp(x, y) == 0)
        return ck_err_set(err, CK_EFORMAT, "zip: duplicate entry %s", x);
    return ck_err_set(err, CK_EFORMAT,
                      "zip: entries %s and %s differ only in case (torch "
                      "would read either)", strcmp(x, y) < 0 ? x : y,
                      strcmp(x, y) < 0 ? y : x);
}

/*
 * No name twice, nor twice ignoring case.  The numbered records (all but
 * a few of a checkpoint of many tensors) meet by their number in an
 * array; the other names go into an open-addressing table by their folded
 * hash, meet there those of the same hash, and are looked for among the
 * numbered ones folded (a sort of 4 * 10^5 names by hash was a twentieth
 * of an open, a table of them a twentieth still, its misses).
 */
static int check_names(ck_zip_entry_t **order, size_t n, ck_err_t *err)
{
    size_t cap = 16, mask, plen = 0, limit = n + 16, k, others = 0;
    const ck_zip_entry_t **slot, **byn;
    const char *p = "";
    uint64_t *hash;
    int rc = 0;

    for (size_t i = 0; i < n && plen == 0; i++) {
        const char *s = strrchr(order[i]->name, '/');

        if (s != NULL && numbered(order[i]->name, order[i]->name,
                                  (size_t)(s + 1 - order[i]->name), limit, 0)) {
            p = order[i]->name;
            plen = (size_t)(s + 1 - p);
        }
    }
    slot = NULL;
    hash = NULL;
    if ((byn = ck_map_grow(NULL, 0, limit * sizeof(*byn))) == NULL) {
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        if ((k = numbered(order[i]->name, p, plen, limit, 0)) == 0) {
            others++;
            continue;
        }
        if (byn[k - 1] != NULL)
            rc = twins(order[i]->name, byn[k - 1]->name, err);
        byn[k - 1] = order[i];
    }
    while (cap < 2 * others)
        cap *= 2;
    mask = cap - 1;
    slot = ck_map_grow(NULL, 0, cap * sizeof(*slot));
    hash = ck_map_grow(NULL, 0, cap * sizeof(*hash));
    if (rc == 0 && (slot == NULL || hash == NULL)) {
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        const char *x = order[i]->name;
        uint64_t h;

        if (numbered(x, p, plen, limit, 0))
            continue;
        if ((k = numbered(x, p, plen, limit, 1)) != 0 && byn[k - 1] != NULL) {
            rc = twins(x, byn[k - 1]->name, err);
            break;
        }
        h = fold_hash(x);
        for (k = (size_t)(h ^ h >> 29) & mask; slot[k] != NULL && rc == 0;
             k = (k + 1) & mask)
            if (hash[k] == h && fold_cmp(x, slot[k]->name) == 0)
                rc = twins(x, slot[k]->name, err);
        slot[k] = order[i];
        hash[k] = h;
    }
out:
    ck_map_free(slot, cap * sizeof(*slot));
    ck_map_free(hash, cap * sizeof(*hash));
    ck_map_free(byn, limit * sizeof(*byn));
    return rc;
}

/* Every local header agrees with the central directory (local, called in
 * offset order), no two entries overlap and no name is there twice, nor
 * twice ignoring case (torch's miniz finds records ignoring case: of
 * 'archive/Data.pkl' and 'archive/data.pkl' it may load either). */
static int check_layout(const ck_zip_t *z, ck_zip_entry_t **order, size_t n,
                        ck_zip_local_fn local, void *ud, ck_err_t *err)
{
    size_t i;
    int rc;

    for (i = 0; i + 1 < n && order[i]->lho <= order[i + 1]->lho; i++)
        ;
    if (i + 1 < n) /* torch writes in order; sort only what is not */
        qsort(order, n, sizeof(*order), cmp_lho);
    for (i = 0; i < n; i++)
        if ((rc = local(ud, z, order[i], err)) < 0)
            return rc;
    for (i = 0; i + 1 < n; i++)
        if (order[i]->data_off + order[i]->csize > order[i + 1]->lho)
            return ck_err_set(err, CK_EFORMAT, "zip: entries %s and %s overlap",
                              order[i]->name, order[i + 1]->name);
    return check_names(order, n, err);
}

/*
 * The central directory is read through a window that holds any one entry
 * (46 bytes and three 16-bit lengths), not whole: 400,000 entries are
 * 34 MB, and a big one is read while the pickle is parsed beside it.
 */
#define CD_WIN (1u << 20)
#define CD_ENTRY_MAX (46 + 3 * 65535)

typedef struct {
    const src_t *src;
    uint8_t *buf;      /* cap bytes, at least CD_ENTRY_MAX or the whole */
    size_t cap;
    uint64_t off, end; /* buf holds directory bytes [off, off + len) */
    size_t len, pos;   /* pos: where the next entry starts in buf */
} cdwin_t;

/* A window of at most max bytes over z's directory: 0 or CK_ENOMEM. */
static int cd_window(cdwin_t *w, const src_t *src, const ck_zip_t *z,
                     size_t max)
{
    memset(w, 0, sizeof(*w));
    w->src = src;
    w->off = z->cd_off;
    w->end = z->cd_off + z->cd_size;
    w->cap = z->cd_size < max ? (size_t)z->cd_size : max;
    w->buf = ck_map_grow(NULL, 0, w->cap);
    return w->buf == NULL ? CK_ENOMEM : 0;
}

/* c over the next entry, all of its bytes in the window when the
 * directory holds them: 0 or -errno. */
static int cd_next(cdwin_t *w, cur_t *c)
{
    size_t need = 46;

    for (int pass = 0; pass < 2; pass++) {
        if (w->len - w->pos < need && w->off + w->len < w->end) {
            size_t keep = w->len - w->pos, more;
            int rc;

            memmove(w->buf, w->buf + w->pos, keep);
            w->off += w->pos;
            w->pos = 0;
            w->len = keep;
            more = w->cap - keep;
            if (more > w->end - (w->off + keep))
                more = (size_t)(w->end - (w->off + keep));
            if ((rc = src_read(w->src, w->buf + keep, more, w->off + keep)) < 0)
                return rc;
            w->len += more;
        }
        if (pass > 0 || w->len - w->pos < 46)
            break;
        need = 46 + (w->buf[w->pos + 28] | (size_t)w->buf[w->pos + 29] << 8) +
               (w->buf[w->pos + 30] | (size_t)w->buf[w->pos + 31] << 8) +
               (w->buf[w->pos + 32] | (size_t)w->buf[w->pos + 33] << 8);
    }
    c->p = w->buf + w->pos;
    c->end = w->buf + w->len;
    c->bad = 0;
    return 0;
}

static int open_src(const src_t *src, uint64_t fsize, ck_arena_t *arena,
                    ck_zip_t *z, ck_zip_local_fn local, void *ud,
                    ck_err_t *err)
{
    cdwin_t w = { 0 };
    uint64_t count;
    ck_zip_entry_t **order = NULL;
    cur_t c;
    int rc;

    memset(z, 0, sizeof(*z));
    rc = find_end(src, fsize, z, &count, err);
    if (rc < 0)
        return rc;
    rc = cd_window(&w, src, z, CD_WIN);
    z->e = ck_arena_alloc(arena, (size_t)count * sizeof(*z->e));
    order = ck_map_grow(NULL, 0, (size_t)(count ? count : 1) * sizeof(*order));
    if (rc < 0 || z->e == NULL || order == NULL) {
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < count; i++) {
        if ((rc = cd_next(&w, &c)) < 0) {
            rc = ck_err_set(err, rc, "read: %s", strerror(-rc));
            goto out;
        }
        rc = read_entry(&c, i, &z->e[i], arena, NULL, err);
        if (rc < 0)
            goto out;
        w.pos = (size_t)(c.p - w.buf);
        order[i] = &z->e[i];
    }
    z->n = z->nrec = (size_t)count;
    rc = check_layout(z, order, z->n, local, ud, err);
    z->arena = arena;
out:
    if (rc < 0)
        z->n = z->nrec = 0;
    ck_map_free(order, (size_t)(count ? count : 1) * sizeof(*order));
    ck_map_free(w.buf, w.cap);
    return rc;
}

int ck_zip_open(int fd, uint64_t fsize, ck_arena_t *arena, ck_zip_t *z,
                ck_err_t *err)
{
    src_t src = { fd, NULL, 0, 0 };
    ck_rwin_t w = { .buf = ck_map_grow(NULL, 0, RWIN_STEP), .cap = RWIN_STEP,
                    .max = WIN_BYTES,
                    .fd = fd };
    int rc;

    if (w.buf == NULL) {
        memset(z, 0, sizeof(*z));
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    }
    rc = open_src(&src, fsize, arena, z, check_local, &w, err);
    ck_rwin_release(&w);
    return rc;
}

int ck_zip_first(int fd, uint64_t fsize, ck_arena_t *arena, ck_zip_t *z,
                 uint64_t *count, ck_zip_entry_t *e, ck_err_t *err)
{
    src_t src = { fd, NULL, 0, 0 };
    uint8_t head[30 + CK_ZIP_NAME_MAX];
    ck_rwin_t lw = { .buf = head, .cap = sizeof(head), .fd = fd };
    cdwin_t w;
    cur_t c;
    int rc;

    memset(z, 0, sizeof(*z));
    memset(e, 0, sizeof(*e));
    if ((rc = find_end(&src, fsize, z, count, err)) < 0)
        return rc;
    if (*count == 0)
        return ck_err_set(err, CK_EFORMAT, "zip: no entries");
    if (cd_window(&w, &src, z, CD_ENTRY_MAX) < 0)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    if ((rc = cd_next(&w, &c)) < 0)
        rc = ck_err_set(err, rc, "read: %s", strerror(-rc));
    else
        rc = read_entry(&c, 0, e, arena, NULL, err);
    ck_map_free(w.buf, w.cap);
    return rc < 0 ? rc : check_local(&lw, z, e, err);
}

/* ---- a torch archive's numbered records ------------------------------ */

/* ck_zip_open_numbered's state: the records table, the entries kept (their
 * names on the heap, one each) and the folder numbered names are in. */
typedef struct {
    ck_zip_rec_t *recs;
    size_t cap, limit;
    ck_zip_entry_t *keep;
    size_t nkeep, keepcap;
    char prefix[CK_ZIP_NAME_MAX + 8];
    size_t plen;
} numbered_t;

/* Record N of e into the table, grown by doubling up to t->limit: 0, or -1
 * when out of memory or N is there already (twice: a plain open says so). */
static int put_rec(numbered_t *t, size_t n, const ck_zip_entry_t *e)
{
    if (n >= t->cap) {
        size_t cap = t->cap;
        ck_zip_rec_t *r;

        while (cap <= n)
            cap *= 2;
        if (cap > t->limit)
            cap = t->limit;
        if ((r = ck_map_grow(t->recs, t->cap * sizeof(*r),
                             cap * sizeof(*r))) == NULL)
            return -1;
        t->recs = r;
        t->cap = cap;
    }
    if (t->recs[n].set)
        return -1;
    t->recs[n] = (ck_zip_rec_t){ e->data_off, e->usize, e->crc, 1 };
    return 0;
}

/* e kept, its name copied: 0 or -1 when out of memory. */
static int keep_entry(numbered_t *t, const ck_zip_entry_t *e)
{
    if (t->nkeep == t->keepcap) {
        size_t cap = t->keepcap ? 2 * t->keepcap : 8;
        ck_zip_entry_t *k = ck_realloc(t->keep, cap * sizeof(*k));

        if (k == NULL)
            return -1;
        t->keep = k;
        t->keepcap = cap;
    }
    t->keep[t->nkeep] = *e;
    if ((t->keep[t->nkeep].name = ck_strdup(e->name)) == NULL)
        return -1;
    t->nkeep++;
    return 0;
}

/* No name kept is twice among them, nor a numbered one ignoring case:
 * the numbered ones are each other's twins only by their number, which
 * put_rec finds (digits fold to themselves, the folder is the same). */
static int kept_names_ok(numbered_t *t)
{
    ck_zip_entry_t **order = ck_malloc(t->nkeep * sizeof(*order));
    ck_err_t scratch = { 0 };
    int ok = order != NULL;

    for (size_t i = 0; ok && i < t->nkeep; i++) {
        size_t n = numbered(t->keep[i].name, t->prefix, t->plen, t->limit, 1);

        order[i] = &t->keep[i];
        ok = n == 0 || n - 1 >= t->cap || !t->recs[n - 1].set;
    }
    ok = ok && check_names(order, t->nkeep, &scratch) == 0;
    ck_free(order);
    return ok;
}

/* The kept entries and their names in one heap block, as ck_zip_open_numbered
 * hands them over: NULL when out of memory. */
static ck_zip_entry_t *kept_block(const numbered_t *t)
{
    size_t bytes = t->nkeep * sizeof(ck_zip_entry_t);
    ck_zip_entry_t *b;
    char *names;

    for (size_t i = 0; i < t->nkeep; i++)
        bytes += strlen(t->keep[i].name) + 1;
    if ((b = ck_malloc(bytes)) == NULL)
        return NULL;
    names = (char *)(b + t->nkeep);
    for (size_t i = 0; i < t->nkeep; i++) {
        size_t n = strlen(t->keep[i].name) + 1;

        b[i] = t->keep[i];
        b[i].name = memcpy(names, t->keep[i].name, n);
        names += n;
    }
    return b;
}

/*
 * The directory read in one pass, as torch.save lays it out: each entry
 * read and its local header checked as it comes, in the order of their
 * data, none overlapping the one before.  The checks are ck_zip_open's,
 * the answer the same: the entries are in order, so sorting them by their
 * data is keeping them as they are, and overlaps are met between
 * neighbours.  The names met here are the numbered ones by their number
 * and the few others by check_names.
 */
int ck_zip_open_numbered(int fd, uint64_t fsize, ck_zip_t *z,
                         ck_zip_rec_t **recs, size_t *nrecs)
{
    src_t src = { fd, NULL, 0, 0 };
    ck_rwin_t lw = { .cap = RWIN_STEP, .max = WIN_BYTES, .fd = fd };
    ck_err_t scratch = { 0 };
    numbered_t t = { 0 };
    char name[CK_ZIP_NAME_MAX + 1];
    const char *slash;
    ck_zip_entry_t e;
    uint64_t count, end = 0;
    cdwin_t w = { 0 };
    int ok = 0;
    cur_t c;

    memset(z, 0, sizeof(*z));
    if (find_end(&src, fsize, z, &count, &scratch) < 0 ||
        cd_window(&w, &src, z, CD_WIN) < 0)
        goto out;
    t.limit = 8 * ((size_t)count + 64);
    t.cap = (size_t)count;
    if ((t.recs = ck_map_grow(NULL, 0, t.cap * sizeof(*t.recs))) == NULL)
        goto out;
    for (size_t i = 0; i < count; i++) {
        size_t n;

        memset(&e, 0, sizeof(e));
        if (cd_next(&w, &c) < 0 ||
            read_entry(&c, i, &e, NULL, name, &scratch) < 0 ||
            (i > 0 && e.lho < end) || check_local(&lw, z, &e, &scratch) < 0)
            goto out;
        w.pos = (size_t)(c.p - w.buf);
        end = e.data_off + e.csize; /* check_local: not past cd_off */
        if (i == 0) {
            /* TOP/data/: TOP the first entry's folder, which is not
             * one of them (ckpt.c finds TOP from it) */
            if ((slash = strchr(name, '/')) == NULL)
                goto out;
            t.plen = (size_t)(slash - name) + 6;
            memcpy(t.prefix, name, t.plen - 6);
            memcpy(t.prefix + t.plen - 6, "/data/", 7);
            if (strncmp(name, t.prefix, t.plen) == 0)
                goto out;
        }
        if (i == 0 || strncmp(name, t.prefix, t.plen) != 0) {
            if (keep_entry(&t, &e) < 0)
                goto out;
            continue;
        }
        n = numbered(name, t.prefix, t.plen, t.limit, 0);
        if (n == 0 || e.method != 0 || put_rec(&t, n - 1, &e) < 0)
            goto out;
    }
    if (!kept_names_ok(&t) || (z->e = kept_block(&t)) == NULL)
        goto out;
    z->n = t.nkeep;
    z->nrec = (size_t)count;
    *recs = t.recs;
    *nrecs = t.cap;
    t.recs = NULL;
    ok = 1;
out:
    for (size_t i = 0; i < t.nkeep; i++)
        ck_free(t.keep[i].name);
    ck_free(t.keep);
    ck_map_free(t.recs, t.cap * sizeof(*t.recs));
    ck_map_free(w.buf, w.cap);
    ck_rwin_release(&lw);
    if (!ok)
        memset(z, 0, sizeof(*z));
    return ok ? 0 : 1;
}

int ck_zip_open_tail(const uint8_t *tail, uint64_t base, uint64_t n,
                     ck_arena_t *arena, ck_zip_t *z, ck_zip_local_fn local,
                     void *ud, ck_err_t *err)
{
    src_t src = { -1, tail, base, n };

    return open_src(&src, base + n, arena, z, local, ud, err);
}

ck_zip_entry_t *ck_zip_find(ck_zip_t *z, const char *name)
{
    size_t i;

    if (z->names.cap == 0 && z->arena != NULL && ++z->nfind > 16) {
        ck_strmap_t m = { 0 };
        int rc = ck_strmap_reserve(&m, z->arena, z->n);

        for (i = 0; i < z->n && rc == 0; i++)
            rc = ck_strmap_add(&m, z->arena, z->e[i].name, i);
        if (rc == 0)
            z->names = m; /* else scan on: it finds the same */
    }
    if (z->names.cap == 0) {
        for (i = 0; i < z->n; i++)
            if (strcmp(z->e[i].name, name) == 0)
                return &z->e[i];
        return NULL;
    }
    i = ck_strmap_get(&z->names, name);
    return i < z->n ? &z->e[i] : NULL;
}

void ck_zip_forget(ck_zip_t *z)
{
    z->e = NULL;
    z->n = 0;
    memset(&z->names, 0, sizeof(z->names));
    z->arena = NULL;
}

/* Inflate e, handing each chunk of output to sink. */

int ck_zip_inflate_entry(int fd, const ck_zip_entry_t *e, ck_zip_sink_fn sink,
                         void *ud, ck_err_t *err)
{
    z_stream zs;
    uint8_t *in = ck_malloc(COPY_CHUNK), *out = ck_malloc(COPY_CHUNK);
    uint64_t off = e->data_off, left = e->csize, total = 0;
    int rc = 0, zr = Z_OK;

    memset(&zs, 0, sizeof(zs));
    if (in == NULL || out == NULL || inflateInit2(&zs, -MAX_WBITS) != Z_OK) {
        ck_free(in);
        ck_free(out);
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    }
    while (zr != Z_STREAM_END) {
        if (zs.avail_in == 0) {
            size_t n = left < COPY_CHUNK ? (size_t)left : COPY_CHUNK;

            if (n == 0) {
                rc = ck_err_set(err, CK_EFORMAT, "zip: %s: deflate stream truncated",
                                e->name);
                break;
            }
            rc = ck_pread_full(fd, in, n, off);
            if (rc < 0) {
                ck_err_set(err, rc, "read: %s", strerror(-rc));
                break;
            }
            off += n;
            left -= n;
            zs.next_in = in;
            zs.avail_in = (uInt)n;
        }
        zs.next_out = out;
        zs.avail_out = COPY_CHUNK;
        zr = inflate(&zs, Z_NO_FLUSH);
        if (zr != Z_OK && zr != Z_STREAM_END) {
            rc = ck_err_set(err, CK_EFORMAT, "zip: %s: bad deflate data", e->name);
            break;
        }
        total += COPY_CHUNK - zs.avail_out;
        if (total > e->usize) {
            rc = ck_err_set(err, CK_EFORMAT, "zip: %s: inflates past its size",
                            e->name);
            break;
        }
        rc = sink(ud, out, COPY_CHUNK - zs.avail_out, err);
        if (rc < 0)
            break;
    }
    if (rc == 0 && total != e->usize)
        rc = ck_err_set(err, CK_EFORMAT, "zip: %s: inflates to %llu bytes, not %llu",
                        e->name, (unsigned long long)total,
                        (unsigned long long)e->usize);
    inflateEnd(&zs);
    ck_free(in);
    ck_free(out);
    return rc;
}

typedef struct {
    uint8_t *p;
    size_t n;
} mem_sink_t;

static int mem_sink(void *ud, const uint8_t *p, size_t n, ck_err_t *err)
{
    mem_sink_t *m = ud;

    (void)err;
    memcpy(m->p + m->n, p, n);
    m->n += n;
    return 0;
}

int ck_zip_check_size(const ck_zip_entry_t *e, uint64_t max, ck_err_t *err)
{
    if (e->usize > max)
        return ck_err_set(err, CK_ELIMIT, "%s: %llu bytes over the limit of %llu",
                          e->name, (unsigned long long)e->usize,
                          (unsigned long long)max);
    return 0;
}

int ck_zip_read(int fd, const ck_zip_entry_t *e, uint64_t max, uint8_t **out,
                ck_err_t *err)
{
    mem_sink_t m;
    int rc;

    *out = NULL;
    if ((rc = ck_zip_check_size(e, max, err)) < 0)
        return rc;
    m.p = ck_malloc((size_t)e->usize + 1);
    m.n = 0;
    if (m.p == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    if (e->method == 0) {
        rc = ck_pread_full(fd, m.p, (size_t)e->usize, e->data_off);
        if (rc < 0)
            ck_err_set(err, rc, "read %s: %s", e->name, strerror(-rc));
    } else {
        rc = ck_zip_inflate_entry(fd, e, mem_sink, &m, err);
    }
    if (rc < 0) {
        ck_free(m.p);
        return rc;
    }
    *out = m.p;
    return 0;
}

