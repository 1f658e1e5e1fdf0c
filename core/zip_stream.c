/*
 * zip_stream.c -- reading a zip front to back, from a pipe: local headers
 * and data in file order, then the central directory, which must confirm
 * every record read.  What a file's reader checks (zip.c) is checked here
 * too, in the order the bytes come: the end records and the directory by
 * ck_zip_open_tail over the stream's tail, each local header against its
 * directory entry by match_local below.
 *
 * Invariants: s->off is the stream offset of buf[pos]; a record is "open"
 * from ck_zips_next to ck_zips_end, and s->got counts its data bytes read.
 */
#define _GNU_SOURCE
#include "zip.h"
#include "zip_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define RA_BYTES (256u << 10)   /* read-ahead for headers and small records */
#define SIG_DESC 0x08074b50u
#define MAX_TAIL ((size_t)MAX_CD_BYTES + 65536 + 56 + 20 + 22)

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;

    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

void ck_zips_init(ck_zips_t *s, int fd)
{
    memset(s, 0, sizeof(*s));
    s->fd = fd;
}

void ck_zips_release(ck_zips_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        ck_free(s->rec[i].name);
    ck_free(s->rec);
    ck_free(s->buf);
    ck_free(s->tail);
    memset(s, 0, sizeof(*s));
    s->fd = -1;
}

static int cut_short(ck_zips_t *s, ck_err_t *err)
{
    return ck_err_set(err, CK_EFORMAT,
                      "the stream ended at byte %llu, before the "
                      "checkpoint's end (cut short?)", (unsigned long long)(s->off + s->len - s->pos));
}

/* read(2) that retries EINTR: bytes read, 0 at the end, or -errno. */
static ssize_t rd_some(int fd, void *p, size_t n)
{
    ssize_t r;

    do
        r = read(fd, p, n);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

/* At least k bytes in buf[pos..len) (the buffer grows past RA_BYTES only
 * for a peek): 0, or cut short. */
static int fill(ck_zips_t *s, size_t k, ck_err_t *err)
{
    if (s->len - s->pos >= k && s->buf != NULL)
        return 0;
    if (s->buf == NULL || k > s->bcap) {
        size_t cap = k > RA_BYTES ? k : RA_BYTES;
        uint8_t *nb = ck_realloc(s->buf, cap);

        if (nb == NULL)
            return ck_err_set(err, CK_ENOMEM, "out of memory");
        s->buf = nb;
        s->bcap = cap;
    }
    memmove(s->buf, s->buf + s->pos, s->len - s->pos);
    s->len -= s->pos;
    s->pos = 0;
    while (s->len < k) {
        ssize_t r = rd_some(s->fd, s->buf + s->len, s->bcap - s->len);

        if (r < 0)
            return ck_err_set(err, (int)r, "read: %s", strerror((int)-r));
        if (r == 0)
            return cut_short(s, err);
        s->len += (size_t)r;
    }
    return 0;
}

/* n bytes into p (NULL: dropped): the read-ahead first, then straight from
 * the descriptor, so big records pass through one copy. */
static int take(ck_zips_t *s, void *p, size_t n, ck_err_t *err)
{
    uint8_t *b = p;
    size_t have = s->len - s->pos < n ? s->len - s->pos : n;

    if (have > 0) {
        if (b != NULL)
            memcpy(b, s->buf + s->pos, have);
        s->pos += have;
        s->off += have;
        n -= have;
        if (b != NULL)
            b += have;
    }
    while (n > 0) {
        ssize_t r;

        if (b == NULL || n < RA_BYTES / 4) {
            size_t k = n < RA_BYTES ? n : RA_BYTES;
            int rc = fill(s, k, err);

            if (rc < 0)
                return rc;
            if (b != NULL)
                memcpy(b, s->buf + s->pos, k);
            s->pos += k;
            s->off += k;
            n -= k;
            if (b != NULL)
                b += k;
            continue;
        }
        r = rd_some(s->fd, b, n);
        if (r < 0)
            return ck_err_set(err, (int)r, "read: %s", strerror((int)-r));
        if (r == 0)
            return cut_short(s, err);
        s->off += (uint64_t)r;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

int ck_zips_peek(ck_zips_t *s, size_t k, const uint8_t **p, size_t *n,
                 ck_err_t *err)
{
    ck_err_t short_err = { 0 };
    int rc = fill(s, k, &short_err);

    if (rc < 0 && short_err.code != CK_EFORMAT)
        return ck_err_set(err, rc, "%s", short_err.msg);
    *p = s->buf + s->pos;
    *n = s->len - s->pos < k ? s->len - s->pos : k;
    return 0;
}

void ck_zips_skip(ck_zips_t *s, size_t n)
{
    s->pos += n;
    s->off += n;
    if (s->bcap > RA_BYTES && s->len - s->pos <= RA_BYTES) {
        /* back to the read-ahead's size once a big peek is taken */
        uint8_t *nb;

        memmove(s->buf, s->buf + s->pos, s->len - s->pos);
        s->len -= s->pos;
        s->pos = 0;
        nb = ck_realloc(s->buf, RA_BYTES);
        if (nb != NULL) {
            s->buf = nb;
            s->bcap = RA_BYTES;
        }
    }
}

static int add_rec(ck_zips_t *s, ck_err_t *err)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        ck_zips_rec_t *nr;

        if (s->n >= MAX_ENTRIES)
            return ck_err_set(err, CK_EFORMAT, "zip: more than %u records",
                              MAX_ENTRIES);
        nr = ck_realloc(s->rec, cap * sizeof(*nr));
        if (nr == NULL)
            return ck_err_set(err, CK_ENOMEM, "out of memory");
        s->rec = nr;
        s->cap = cap;
    }
    memset(&s->rec[s->n], 0, sizeof(s->rec[s->n]));
    s->n++;
    return 0;
}

int ck_zips_open_raw(ck_zips_t *s, const char *name, uint64_t size,
                     ck_err_t *err)
{
    ck_zips_rec_t *e;
    int rc;

    if (s->open)
        return ck_err_set(err, CK_EFORMAT, "zip stream reader misuse");
    rc = add_rec(s, err);
    if (rc < 0)
        return rc;
    e = &s->rec[s->n - 1];
    e->name = ck_strdup(name);
    if (e->name == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    e->lho = e->data_off = s->off;
    e->size = size;
    e->sized = 1;
    s->open = 1;
    s->got = 0;
    return 0;
}

int ck_zips_next(ck_zips_t *s, const ck_zips_rec_t **r, ck_err_t *err)
{
    ck_zips_rec_t *e;
    uint8_t *h, *x;
    uint64_t nlen, xlen, csize, usize;
    uint32_t sig;
    int rc;

    if (s->open)
        return ck_err_set(err, CK_EFORMAT, "zip stream reader misuse");
    if (s->ended)
        return 0;
    rc = fill(s, 4, err);
    if (rc < 0)
        return rc;
    sig = (uint32_t)le(s->buf + s->pos, 4);
    if (sig == SIG_CENTRAL || sig == SIG_EOCD64 || sig == SIG_EOCD) {
        s->ended = 1;
        return 0;
    }
    if (sig != SIG_LOCAL)
        return ck_err_set(err, CK_EFORMAT,
                          "zip: no local header at byte %llu, where the "
                          "previous record ends", (unsigned long long)s->off);
    rc = fill(s, 30, err);
    if (rc < 0)
        return rc;
    h = s->buf + s->pos;
    nlen = le(h + 26, 2);
    xlen = le(h + 28, 2);
    if (nlen == 0 || nlen > 512)
        return ck_err_set(err, CK_EFORMAT, "zip: local header at byte %llu: "
                          "name of %llu bytes", (unsigned long long)s->off,
                          (unsigned long long)nlen);
    rc = fill(s, 30 + nlen + xlen, err);
    if (rc == 0)
        rc = add_rec(s, err);
    if (rc < 0)
        return rc;
    h = s->buf + s->pos;
    e = &s->rec[s->n - 1];
    e->name = ck_malloc(nlen + 1);
    if (e->name == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    memcpy(e->name, h + 30, nlen);
    e->name[nlen] = '\0';
    e->flags = (uint16_t)le(h + 6, 2);
    e->method = (uint16_t)le(h + 8, 2);
    e->crc = (uint32_t)le(h + 14, 4);
    csize = le(h + 18, 4);
    usize = le(h + 22, 4);
    for (x = h + 30 + nlen; x + 4 <= h + 30 + nlen + xlen;) {
        uint64_t id = le(x, 2), len = le(x + 2, 2);

        if (x + 4 + len > h + 30 + nlen + xlen)
            break;
        if (id == 0x0001) {
            e->zip64 = 1;
            if (usize == 0xffffffffu && len >= 8)
                usize = le(x + 4, 8);
            if (csize == 0xffffffffu && len >= 16)
                csize = le(x + 12, 8);
        }
        x += 4 + len;
    }
    e->lho = s->off;
    e->data_off = s->off + 30 + nlen + xlen;
    /* with a data descriptor the local sizes may be zeros (torch's are) */
    e->sized = !(e->flags & 8) || usize != 0;
    e->size = e->sized ? usize : 0;
    if (strlen(e->name) != nlen)
        return ck_err_set(err, CK_EFORMAT, "zip: a record name holds NUL");
    if (e->flags & 0x41)
        return ck_err_set(err, CK_EUNSUPPORTED, "zip: %s: encrypted entry",
                          e->name);
    if (e->method != 0)
        return ck_err_set(err, CK_EUNSUPPORTED,
                          "zip: %s: compressed (method %u): a stream is read "
                          "only when its records are stored, as torch.save "
                          "stores them; give the input as a file", e->name,
                          e->method);
    if (e->sized && csize != usize)
        return ck_err_set(err, CK_EFORMAT, "zip: %s: stored entry with two "
                          "sizes", e->name);
    s->pos += 30 + nlen + xlen;
    s->off += 30 + nlen + xlen;
    s->open = 1;
    s->got = 0;
    *r = e;
    return 1;
}

int ck_zips_data(ck_zips_t *s, void *p, size_t n, ck_err_t *err)
{
    ck_zips_rec_t *e = &s->rec[s->n - 1];
    int rc;

    if (!s->open)
        return ck_err_set(err, CK_EFORMAT, "zip stream reader misuse");
    if (e->sized && n > e->size - s->got)
        return ck_err_set(err, CK_EFORMAT, "%s: record holds %llu bytes, "
                          "more are needed", e->name,
                          (unsigned long long)e->size);
    rc = take(s, p, n, err);
    if (rc == 0)
        s->got += n;
    return rc;
}

size_t ck_zips_buffered(const ck_zips_t *s)
{
    const ck_zips_rec_t *e = &s->rec[s->n - 1];
    size_t have = s->len - s->pos;

    if (!s->open)
        return 0;
    return e->sized && e->size - s->got < have ? (size_t)(e->size - s->got)
                                               : have;
}

void ck_zips_taken(ck_zips_t *s, uint64_t n)
{
    s->off += n;
    s->got += n;
}

/* The descriptor after the data, when the record has one: crc and size.
 * Its signature is optional (APPNOTE 4.3.9.3); sizes are 8 bytes when the
 * local header had a zip64 extra. */
static int descriptor(ck_zips_t *s, ck_zips_rec_t *e, uint64_t *size,
                      ck_err_t *err)
{
    int w = e->zip64 ? 8 : 4, rc = fill(s, 4 + 4 + 2 * (size_t)w, err);
    const uint8_t *d;
    uint64_t cs, us;

    if (rc < 0)
        return rc;
    d = s->buf + s->pos;
    if (le(d, 4) == SIG_DESC)
        d += 4;
    e->crc = (uint32_t)le(d, 4);
    cs = le(d + 4, w);
    us = le(d + 4 + w, w);
    if (cs != us)
        return ck_err_set(err, CK_EFORMAT, "%s: no data descriptor after "
                          "%llu bytes, the size the storage needs", e->name,
                          (unsigned long long)s->got);
    *size = us;
    return take(s, NULL, (size_t)(d + 4 + 2 * w - (s->buf + s->pos)), err);
}

int ck_zips_end(ck_zips_t *s, uint64_t size, ck_err_t *err)
{
    ck_zips_rec_t *e = &s->rec[s->n - 1];
    uint64_t dsize = size;
    int rc;

    if (!s->open)
        return ck_err_set(err, CK_EFORMAT, "zip stream reader misuse");
    if ((e->sized && e->size != size) || s->got != size)
        return ck_err_set(err, CK_EFORMAT, "%s: record holds %llu bytes, %llu "
                          "were read", e->name,
                          (unsigned long long)(e->sized ? e->size : s->got),
                          (unsigned long long)size);
    if (e->flags & 8) {
        rc = descriptor(s, e, &dsize, err);
        if (rc < 0)
            return rc;
    }
    if (dsize != size)
        return ck_err_set(err, CK_EFORMAT, "%s: record holds %llu bytes, "
                          "storage needs %llu", e->name,
                          (unsigned long long)dsize, (unsigned long long)size);
    e->size = size;
    e->sized = 1;
    s->open = 0;
    return 0;
}

/*
 * At buf[pos], after n data bytes in out: a data descriptor of this record
 * (signature, sizes equal to n, and the CRC of out, or 0 from a writer
 * that skipped CRCs)?  Needs 24 bytes of read-ahead; near the end of the
 * stream fewer may remain, and then it is none.
 */
static int is_descriptor(ck_zips_t *s, const ck_buf_t *out, ck_err_t *err)
{
    const uint8_t *d;
    uint32_t crc;
    uint64_t n = out->len;
    ck_err_t ignore = { 0 };

    (void)err;
    if (fill(s, 24, &ignore) < 0)
        return 0;
    d = s->buf + s->pos;
    if (le(d, 4) != SIG_DESC)
        return 0;
    if (!((le(d + 8, 4) == n && le(d + 12, 4) == n) ||
          (le(d + 8, 8) == n && le(d + 16, 8) == n)))
        return 0;
    crc = (uint32_t)le(d + 4, 4);
    return crc == 0 || crc == (uint32_t)crc32(0, out->data ? out->data
                                                           : (const Bytef *)"",
                                              (uInt)n);
}

/* A record of unknown size: its data runs to its descriptor. */
static int read_to_descriptor(ck_zips_t *s, uint64_t max, ck_buf_t *out,
                              ck_err_t *err)
{
    for (;;) {
        const uint8_t *p, *hit;
        size_t avail, n;
        int rc = fill(s, 4, err);

        if (rc < 0)
            return rc;
        p = s->buf + s->pos;
        avail = s->len - s->pos;
        hit = memmem(p, avail, "PK\x07\x08", 4);
        /* up to the candidate, or all but 3 bytes (a signature may begin
         * there) */
        n = hit != NULL ? (size_t)(hit - p) : avail - 3;
        if (out->len + n > max)
            return ck_err_set(err, CK_ELIMIT, "%s: over the limit of %llu "
                              "bytes", s->rec[s->n - 1].name,
                              (unsigned long long)max);
        if (ck_buf_put(out, p, n) < 0)
            return ck_err_set(err, CK_ENOMEM, "out of memory");
        s->pos += n;
        s->off += n;
        if (hit == NULL)
            continue;
        if (out->len <= max && out->len < 0xffffffffu &&
            is_descriptor(s, out, err))
            return 0;
        if (ck_buf_put(out, s->buf + s->pos, 1) < 0)
            return ck_err_set(err, CK_ENOMEM, "out of memory");
        s->pos++;
        s->off++;
    }
}

int ck_zips_read_all(ck_zips_t *s, uint64_t max, ck_buf_t *out,
                     ck_err_t *err)
{
    ck_zips_rec_t *e = &s->rec[s->n - 1];
    ck_buf_t b = { 0 };
    int rc;

    if (!s->open)
        return ck_err_set(err, CK_EFORMAT, "zip stream reader misuse");
    if (e->sized) {
        if (e->size > max)
            return ck_err_set(err, CK_ELIMIT, "%s: %llu bytes over the limit "
                              "of %llu", e->name, (unsigned long long)e->size,
                              (unsigned long long)max);
        rc = ck_buf_reserve(&b, (size_t)e->size + 1) < 0
                 ? ck_err_set(err, CK_ENOMEM, "out of memory")
                 : ck_zips_data(s, b.data, (size_t)e->size, err);
        b.len = (size_t)e->size;
    } else {
        rc = read_to_descriptor(s, max, &b, err);
        s->got = b.len;
    }
    if (rc == 0)
        rc = ck_zips_end(s, b.len, err);
    if (rc == 0 && b.data == NULL && ck_buf_reserve(&b, 1) < 0)
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
    if (rc < 0) {
        ck_buf_release(&b);
        return rc;
    }
    *out = b;
    return 0;
}

/* A directory entry against the record read at its offset. */
static int match_local(void *ud, const ck_zip_t *z, ck_zip_entry_t *e,
                       ck_err_t *err)
{
    ck_zips_t *s = ud;
    size_t lo = 0, hi = s->n;

    (void)z;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (s->rec[mid].lho == e->lho) {
            const ck_zips_rec_t *r = &s->rec[mid];

            if (strcmp(r->name, e->name) != 0 || r->method != e->method ||
                r->size != e->usize || r->size != e->csize ||
                r->crc != e->crc)
                return ck_err_set(err, CK_EFORMAT,
                                  "zip: %s: the central directory says %s of "
                                  "%llu bytes, CRC %08x; the stream held %s "
                                  "of %llu bytes, CRC %08x", e->name, e->name,
                                  (unsigned long long)e->usize, e->crc,
                                  r->name, (unsigned long long)r->size,
                                  r->crc);
            e->data_off = r->data_off;
            return 0;
        }
        if (s->rec[mid].lho < e->lho)
            lo = mid + 1;
        else
            hi = mid;
    }
    return ck_err_set(err, CK_EFORMAT, "zip: %s: the central directory puts "
                      "it at byte %llu, where the stream held no record",
                      e->name, (unsigned long long)e->lho);
}

int ck_zips_finish(ck_zips_t *s, ck_arena_t *arena, ck_err_t *err)
{
    uint64_t base = s->off;
    size_t cap = RA_BYTES;
    int rc;

    if (!s->ended || s->open)
        return ck_err_set(err, CK_EFORMAT, "zip stream reader misuse");
    s->tail = ck_malloc(cap);
    if (s->tail == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    s->tail_len = s->len - s->pos;
    memcpy(s->tail, s->buf + s->pos, s->tail_len);
    s->pos = s->len;
    for (;;) {
        ssize_t r;

        if (s->tail_len == cap) {
            uint8_t *nt;

            if (cap >= MAX_TAIL)
                return ck_err_set(err, CK_EFORMAT, "zip: more than %zu bytes "
                                  "after the last record", MAX_TAIL);
            cap = cap * 2 < MAX_TAIL ? cap * 2 : MAX_TAIL;
            nt = ck_realloc(s->tail, cap);
            if (nt == NULL)
                return ck_err_set(err, CK_ENOMEM, "out of memory");
            s->tail = nt;
        }
        r = rd_some(s->fd, s->tail + s->tail_len, cap - s->tail_len);
        if (r < 0)
            return ck_err_set(err, (int)r, "read: %s", strerror((int)-r));
        if (r == 0)
            break;
        s->tail_len += (size_t)r;
    }
    s->off += s->tail_len;
    rc = ck_zip_open_tail(s->tail, base, s->tail_len, arena, &s->zip,
                          match_local, s, err);
    if (rc == CK_EFORMAT && strstr(err->msg, "no end of central") != NULL)
        return ck_err_replace(err, CK_EFORMAT, "the stream ended at byte "
                              "%llu without the zip's end records (cut "
                              "short?)", (unsigned long long)s->off);
    if (rc < 0)
        return rc;
    if (s->zip.cd_off != base)
        return ck_err_set(err, CK_EFORMAT, "zip: the central directory is "
                          "said to start at byte %llu; the records end at "
                          "byte %llu", (unsigned long long)s->zip.cd_off,
                          (unsigned long long)base);
    /* one entry per record read: entries at one offset overlap, which
     * ck_zip_open_tail refuses, so equal counts mean each matched once */
    if (s->zip.n != s->n)
        return ck_err_set(err, CK_EFORMAT, "zip: the stream held %zu records, "
                          "the central directory lists %zu", s->n, s->zip.n);
    return 0;
}
