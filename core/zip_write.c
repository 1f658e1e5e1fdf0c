/*
 * zip_write.c -- writing the zip container the way torch.save lays it out:
 * stored records with 64-byte aligned data (FB extra-field padding), a
 * central directory, zip64 end records when needed.  Data is copied from
 * the input in bounded chunks, written out early so the disk works while
 * the next chunk is read.
 */
#define _GNU_SOURCE
#include "zip.h"
#include "zip_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* ---- writer ----------------------------------------------------------- */

static void put16(uint8_t *p, uint64_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint64_t v)
{
    put16(p, v);
    put16(p + 2, v >> 16);
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, v);
    put32(p + 4, v >> 32);
}

#define RWIN_BYTES (256u << 10) /* the input window of small records */
#define RWIN_SMALL (16u << 10)  /* records up to this size go through it */

void ck_zipw_init(ck_zipw_t *w, int fd)
{
    memset(w, 0, sizeof(*w));
    w->fd = fd;
    w->rwin.cap = RWIN_SMALL;   /* growing to RWIN_BYTES */
    w->rwin.max = RWIN_BYTES;
}

void ck_zipw_release(ck_zipw_t *w)
{
    ck_arena_release(&w->names);
    ck_map_free(w->e, w->cap * sizeof(*w->e));
    ck_free(w->buf);
    ck_rwin_release(&w->rwin);
    ck_buf_release(&w->cd);
    ck_buf_release(&w->wb);
    memset(w, 0, sizeof(*w));
}

int ck_zipw_restart(ck_zipw_t *w, ck_err_t *err)
{
    int fd = w->fd, sync_rc = w->sync_rc;
    const int *cancel = w->cancel;
    const ck_yield_t *yield = w->yield;

    ck_zipw_release(w);
    ck_zipw_init(w, fd);
    w->cancel = cancel;
    w->yield = yield;
    w->sync_rc = sync_rc;   /* reported once: kept for ck_zipw_finish */
    if (ftruncate(fd, 0) < 0)
        return ck_err_set(err, -errno, "write: %s", strerror(errno));
    return 0;
}

static int canceled(const ck_zipw_t *w)
{
    return w->cancel != NULL && __atomic_load_n(w->cancel, __ATOMIC_RELAXED);
}

static int w_io(ck_err_t *err, int rc)
{
    if (rc == CK_ENOMEM) /* the write-behind buffer could not grow */
        return ck_err_set(err, rc, "out of memory");
    return ck_err_set(err, rc, "write: %s", strerror(-rc));
}

#define WBUF_BYTES (1u << 20)  /* the write-behind buffer's size */
#define WBUF_SMALL (64u << 10) /* writes up to this size are gathered */

static int w_out(ck_zipw_t *w, const void *p, size_t n, uint64_t at)
{
    return w->stream ? ck_write_full(w->fd, p, n)
                     : ck_pwrite_full(w->fd, p, n, at);
}

/* Write out what the buffer holds: 0 or -errno. */
static int w_flush(ck_zipw_t *w)
{
    int rc = 0;

    if (w->wb.len > 0)
        rc = w_out(w, w->wb.data, w->wb.len, w->wb_off);
    w->wb_off += w->wb.len;
    w->wb.len = 0;
    return rc;
}

/* n bytes at the end of what is written (w->off is not moved): gathered
 * when small, else written at once after what is gathered. */
static int w_put(ck_zipw_t *w, const void *p, size_t n)
{
    int rc;

    if (w->wb.len == 0)
        w->wb_off = w->off;
    if (n <= WBUF_SMALL) {
        if (w->wb.len + n > WBUF_BYTES && (rc = w_flush(w)) < 0)
            return rc;
        if (w->wb.len == 0)
            w->wb_off = w->off;
        return ck_buf_put(&w->wb, p, n) < 0 ? CK_ENOMEM : 0;
    }
    if ((rc = w_flush(w)) < 0)
        return rc;
    w->wb_off = w->off + n;
    return w_out(w, p, n, w->off);
}

/* Replace the n bytes at file offset at (inside what is written): in the
 * buffer when they are all still there. */
static int w_patch(ck_zipw_t *w, const uint8_t *b, size_t n, uint64_t at)
{
    if (w->wb.len > 0 && at >= w->wb_off && at + n <= w->wb_off + w->wb.len) {
        memcpy(w->wb.data + (at - w->wb_off), b, n);
        return 0;
    }
    if (at < w->wb_off + w->wb.len && at + n > w->wb_off) {
        int rc = w_flush(w); /* half in the buffer: out with it first */

        if (rc < 0)
            return rc;
    }
    return ck_pwrite_full(w->fd, b, n, at);
}

int ck_zipw_flush(ck_zipw_t *w, ck_err_t *err)
{
    int rc = w_flush(w);

    return rc < 0 ? w_io(err, rc) : 0;
}

int ck_zipw_reserve(ck_zipw_t *w, size_t n)
{
    ck_zipw_entry_t *ne;

    if (w->cap - w->n >= n)
        return 0;
    if (n > SIZE_MAX / sizeof(*ne) - w->n)
        return CK_ENOMEM;
    ne = ck_map_grow(w->e, w->cap * sizeof(*ne), (w->n + n) * sizeof(*ne));
    if (ne == NULL)
        return CK_ENOMEM;
    w->e = ne;
    w->cap = w->n + n;
    return 0;
}

size_t ck_zipw_name(const ck_zipw_entry_t *e, char *out)
{
    size_t n = strlen(e->name); /* at most CK_ZIPW_NAME_MAX */

    memcpy(out, e->name, n);
    out[n] = '\0';
    if (e->num != CK_ZIPW_WHOLE) {
        out[n++] = '/';
        n += ck_fmt_u64(out + n, e->num);
    }
    return n;
}

/* e's name kept: a number in canonical form after the last '/' as a
 * number, its folder shared with the last record's when the same. */
static int keep_name(ck_zipw_t *w, ck_zipw_entry_t *e, const char *name,
                     size_t nlen)
{
    const char *slash = memrchr(name, '/', nlen), *d;
    size_t flen = slash != NULL ? (size_t)(slash - name) : 0;
    uint64_t num = 0;

    e->num = CK_ZIPW_WHOLE;
    d = slash != NULL ? slash + 1 : NULL;
    if (d != NULL && d < name + nlen && (*d != '0' || d + 1 == name + nlen)) {
        for (; d < name + nlen && *d >= '0' && *d <= '9' &&
               num < CK_ZIPW_WHOLE; d++)
            num = num * 10 + (uint64_t)(*d - '0');
        if (d == name + nlen && num < CK_ZIPW_WHOLE)
            e->num = (uint32_t)num;
    }
    if (e->num == CK_ZIPW_WHOLE) {
        e->name = ck_arena_strndup(&w->names, name, nlen);
        return e->name != NULL ? 0 : CK_ENOMEM;
    }
    if (w->folder == NULL || w->folder_len != flen ||
        memcmp(w->folder, name, flen) != 0) {
        w->folder = ck_arena_strndup(&w->names, name, flen);
        w->folder_len = flen;
        if (w->folder == NULL)
            return CK_ENOMEM;
    }
    e->name = w->folder;
    return 0;
}

int ck_zipw_begin(ck_zipw_t *w, const char *name, uint64_t size, ck_err_t *err)
{
    uint8_t hdr[30 + 512 + 20 + 4 + 64];
    int later = size == CK_ZIPW_LATER;
    size_t nlen = strlen(name), x, pad;
    size_t z64 = !later && size >= 0xffffffffu ? 20 : 0;
    uint64_t start, lsize;
    ck_zipw_entry_t *e;
    int rc;

    if (w->open || nlen > CK_ZIPW_NAME_MAX || (later && w->stream))
        return ck_err_set(err, CK_EFORMAT, "zip writer misuse");
    if ((w->n == w->cap && ck_zipw_reserve(w, w->cap ? w->cap : 16) < 0) ||
        keep_name(w, &w->e[w->n], name, nlen) < 0)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    e = &w->e[w->n++];
    e->size = size;
    e->lho = w->off;
    e->crc = 0;
    start = w->off + 30 + nlen + z64 + 4;
    pad = (size_t)((64 - start % 64) % 64);
    memset(hdr, 0, sizeof(hdr));
    put32(hdr, SIG_LOCAL);
    put16(hdr + 4, z64 ? 45 : 20);
    put16(hdr + 6, w->stream ? 8 : 0);
    /* streaming, the sizes are in the descriptor and zeros here, as
     * torch.save writes them (libzip wants zeros or the CRC too) */
    lsize = w->stream || later ? 0 : size;
    put32(hdr + 18, z64 ? 0xffffffffu : lsize);
    put32(hdr + 22, z64 ? 0xffffffffu : lsize);
    put16(hdr + 26, nlen);
    put16(hdr + 28, z64 + 4 + pad);
    memcpy(hdr + 30, name, nlen);
    x = 30 + nlen;
    if (z64) {
        put16(hdr + x, 0x0001);
        put16(hdr + x + 2, 16);
        put64(hdr + x + 4, lsize);
        put64(hdr + x + 12, lsize);
        x += 20;
    }
    hdr[x] = 'F';
    hdr[x + 1] = 'B';
    put16(hdr + x + 2, pad);
    memset(hdr + x + 4, 'Z', pad);
    x += 4 + pad;
    rc = w_put(w, hdr, x);
    if (rc < 0)
        return w_io(err, rc);
    w->off += x;
    w->open = 1;
    w->cur_later = later;
    w->cur_written = 0;
    w->cur_crc = (uint32_t)crc32(0, NULL, 0);
    return 0;
}

/* err set to code, "NAME: what" naming the open record. */
static int rec_fail(ck_zipw_t *w, ck_err_t *err, int code, const char *what)
{
    char name[CK_ZIPW_NAME_MAX + 1];

    ck_zipw_name(&w->e[w->n - 1], name);
    return ck_err_set(err, code, "%s: %s", name, what);
}

static int w_room(ck_zipw_t *w, uint64_t n, ck_err_t *err)
{
    ck_zipw_entry_t *e;

    if (!w->open)
        return ck_err_set(err, CK_EFORMAT, "zip writer: no record begun");
    e = &w->e[w->n - 1];
    if (n > e->size - w->cur_written)
        return rec_fail(w, err, CK_EFORMAT, "more bytes than declared");
    if (w->cur_later &&
        n > (w->later_max ? w->later_max : 0xfffffffeu) - w->cur_written) {
        w->later_over = 1;
        return rec_fail(w, err, CK_ELIMIT, "4 GiB or more");
    }
    return 0;
}

static void kick(ck_zipw_t *w);

int ck_zipw_raw(ck_zipw_t *w, const void *p, size_t n, ck_err_t *err)
{
    int rc = w_room(w, n, err);

    if (rc < 0)
        return rc;
    rc = w_put(w, p, n);
    if (rc < 0)
        return w_io(err, rc);
    w->off += n;
    w->cur_written += n;
    kick(w);
    return 0;
}

void ck_zipw_set_crc(ck_zipw_t *w, uint32_t crc)
{
    w->cur_crc = crc;
}

int ck_zipw_data(ck_zipw_t *w, const void *p, size_t n, ck_err_t *err)
{
    int rc = ck_zipw_raw(w, p, n, err);

    if (rc < 0)
        return rc;
    for (size_t done = 0; done < n;) {
        uInt part = n - done > 0x40000000u ? 0x40000000u : (uInt)(n - done);

        w->cur_crc = (uint32_t)crc32(w->cur_crc, (const Bytef *)p + done, part);
        done += part;
    }
    return 0;
}

static int sink_data(void *ud, const uint8_t *p, size_t n, ck_err_t *err)
{
    return ck_zipw_data(ud, p, n, err);
}

/*
 * Start writing what is written so far to disk (whole pages), without
 * waiting, once KICK_BYTES have piled up: the disk works while the next
 * records are copied and the final fsync waits for less.  Advisory: an
 * error shows again at the fsync.
 *
 * Giving way (w->yield, the daemon's small jobs), at each kick: a sync
 * flushes the
 * disk's write cache, and with it whatever this job wrote before it.  A
 * small job's fsync beside a 3 GiB write took 50 to 500 ms, the big one's
 * backlog; 10 to 45 ms when the big one synced every 16 MiB.  The daemon's
 * small jobs (three syncs each) beside a 3 GiB job: p99 100-160 ms when it
 * synced every 16 MiB, 15-50 ms every 8 MiB, which costs the big job a
 * quarter to a third of its speed: only while small jobs are about.
 * While they sync (hold), this one writes no more, or each of their three
 * syncs would carry what it wrote during the last.  A sync's error is this
 * file description's to report once: kept for ck_zipw_finish, the final
 * fsync would not see it.
 */
static void give_way(ck_zipw_t *w)
{
    const ck_yield_t *y = w->yield;

    if (__atomic_load_n(&y->sync, __ATOMIC_RELAXED) &&
        fdatasync(w->fd) < 0 && w->sync_rc == 0)
        w->sync_rc = -errno;
    for (int ms = 0; ms < CK_YIELD_HOLD_MS && !canceled(w) &&
                     __atomic_load_n(&y->hold, __ATOMIC_RELAXED); ms++)
        usleep(1000);
}

static void kick(ck_zipw_t *w)
{
    uint64_t end = (w->wb.len ? w->wb_off : w->off) & ~(uint64_t)4095;

    if (w->stream || end - w->started < KICK_BYTES)
        return;
    sync_file_range(w->fd, (off_t)w->started, (off_t)(end - w->started),
                    SYNC_FILE_RANGE_WRITE);
    w->started = end;
    if (w->yield != NULL)
        give_way(w);
}

/*
 * Through a 1 MiB buffer rather than copy_file_range: on Linux 6.x ext4 the
 * kernel's copy splices 64 KiB at a time, which at the offsets of torch's
 * records (64-byte aligned) leaves the output in small page-cache folios
 * that take about 40% longer to write back; pread/pwrite does not.
 */
int ck_zipw_copy(ck_zipw_t *w, int fd, uint64_t off, uint64_t n,
                 int crc_known, uint32_t crc, ck_err_t *err)
{
    int rc = w_room(w, n, err);
    uint64_t left = n;

    if (rc < 0)
        return rc;
    if (left > 0 && w->buf == NULL) {
        w->buf = ck_malloc(COPY_CHUNK);
        if (w->buf == NULL)
            return ck_err_set(err, CK_ENOMEM, "out of memory");
    }
    if (left > 0 && left <= RWIN_SMALL) {
        const uint8_t *p = ck_rwin_get(&w->rwin, fd, off, (size_t)left,
                                       UINT64_MAX, &rc);

        if (p == NULL && rc == CK_ENOMEM)
            return ck_err_set(err, rc, "out of memory");
        if (p == NULL)
            return ck_err_set(err, rc == -EIO ? CK_EFORMAT : rc,
                              "read: %s", rc == -EIO ? "input shrank while copying"
                                                     : strerror(-rc));
        rc = crc_known ? ck_zipw_raw(w, p, (size_t)left, err)
                       : ck_zipw_data(w, p, (size_t)left, err);
        if (rc < 0)
            return rc;
        left = 0;
    }
    while (left > 0) {
        size_t part = left < COPY_CHUNK ? (size_t)left : COPY_CHUNK;

        if (canceled(w))
            return ck_err_set(err, CK_ECANCELED, "abandoned: ckprep is stopping");
        rc = ck_pread_full(fd, w->buf, part, off);
        if (rc < 0)
            return ck_err_set(err, rc == -EIO ? CK_EFORMAT : rc,
                              "read: %s", rc == -EIO ? "input shrank while copying"
                                                     : strerror(-rc));
        rc = crc_known ? ck_zipw_raw(w, w->buf, part, err)
                       : ck_zipw_data(w, w->buf, part, err);
        if (rc < 0)
            return rc;
        off += part;
        left -= part;
    }
    if (crc_known)
        w->cur_crc = crc;
    return 0;
}

int ck_zipw_splice(ck_zipw_t *w, int fd, uint64_t n, ck_err_t *err)
{
    int rc = w_room(w, n, err);
    uint64_t left = n;

    if (rc < 0)
        return rc;
    if (!w->stream)
        return 1;
    if (left > 0 && (rc = w_flush(w)) < 0)
        return w_io(err, rc);
    while (left > 0) {
        size_t part = left < COPY_CHUNK ? (size_t)left : COPY_CHUNK;
        ssize_t r = splice(fd, NULL, w->fd, NULL, part, SPLICE_F_MOVE |
                           SPLICE_F_MORE);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && left == n && (errno == EINVAL || errno == ENOSYS))
            return 1; /* not two descriptors splice joins */
        if (r < 0)
            return ck_err_set(err, -errno, "splice to the output: %s",
                              strerror(errno));
        if (r == 0)
            return rec_fail(w, err, CK_EFORMAT, "the input ended inside it");
        if (canceled(w))
            return ck_err_set(err, CK_ECANCELED, "abandoned: ckprep is stopping");
        left -= (uint64_t)r;
        w->off += (uint64_t)r;
        w->wb_off = w->off;
        w->cur_written += (uint64_t)r;
    }
    return 0;
}

int ck_zipw_inflate(ck_zipw_t *w, int fd, const ck_zip_entry_t *e,
                    ck_err_t *err)
{
    int rc = w_room(w, e->usize, err);

    if (rc < 0)
        return rc;
    return ck_zip_inflate_entry(fd, e, sink_data, w, err);
}

int ck_zipw_end(ck_zipw_t *w, ck_err_t *err)
{
    ck_zipw_entry_t *e;
    uint8_t b[24];
    int rc;

    if (!w->open)
        return ck_err_set(err, CK_EFORMAT, "zip writer: no record begun");
    e = &w->e[w->n - 1];
    if (w->cur_later)
        e->size = w->cur_written;
    if (w->cur_written != e->size) {
        char what[64];

        snprintf(what, sizeof(what), "%llu bytes written, %llu declared",
                 (unsigned long long)w->cur_written,
                 (unsigned long long)e->size);
        return rec_fail(w, err, CK_EFORMAT, what);
    }
    e->crc = w->cur_crc;
    if (w->stream) {
        /* the data descriptor: 8-byte sizes when the local header has a
         * zip64 extra (APPNOTE 4.3.9.2) */
        int big = e->size >= 0xffffffffu;
        size_t n = big ? 24 : 16;

        put32(b, 0x08074b50u);
        put32(b + 4, e->crc);
        if (big) {
            put64(b + 8, e->size);
            put64(b + 16, e->size);
        } else {
            put32(b + 8, e->size);
            put32(b + 12, e->size);
        }
        rc = w_put(w, b, n);
        w->off += n;
    } else {
        /* the CRC, and when told only now the sizes */
        put32(b, e->crc);
        put32(b + 4, e->size);
        put32(b + 8, e->size);
        rc = w_patch(w, b, w->cur_later ? 12 : 4, e->lho + 14);
    }
    if (rc < 0)
        return w_io(err, rc);
    w->open = 0;
    kick(w);
    return 0;
}

/* n bytes of the central directory: to the file through the write-behind
 * buffer, and streaming kept whole too, for the fingerprint (a pipe
 * cannot be read back). */
static int cd_put(ck_zipw_t *w, ck_buf_t *cd, const void *p, size_t n)
{
    int rc = w_put(w, p, n);

    w->off += n;
    if (rc == 0 && w->stream && ck_buf_put(cd, p, n) < 0)
        rc = CK_ENOMEM;
    return rc;
}

/*
 * The central directory is made entry by entry as it is written, never
 * whole in memory (70 bytes a record: 28 MiB for 4 * 10^5 storages, at
 * the end of the job when the graph is largest).
 */
int ck_zipw_finish(ck_zipw_t *w, ck_err_t *err)
{
    ck_buf_t cd = { 0 };
    uint64_t cd_off = w->off, cd_len, eocd64;
    uint8_t h[46 + 28], t[56 + 20 + 22];
    char name[CK_ZIPW_NAME_MAX + 1];
    int rc = 0;

    if (w->open)
        return ck_err_set(err, CK_EFORMAT, "zip writer misuse");
    if (w->sync_rc < 0)
        return ck_err_set(err, w->sync_rc, "fdatasync: %s",
                          strerror(-w->sync_rc));
    for (size_t i = 0; i < w->n && rc == 0; i++) {
        ck_zipw_entry_t *e = &w->e[i];
        size_t nlen = ck_zipw_name(e, name), x = 0;
        int big = e->size >= 0xffffffffu, far = e->lho >= 0xffffffffu;

        memset(h, 0, sizeof(h));
        put32(h, SIG_CENTRAL);
        put16(h + 4, 0x031e);
        put16(h + 6, big || far ? 45 : 20);
        put16(h + 8, w->stream ? 8 : 0);
        put32(h + 16, e->crc);
        put32(h + 20, big ? 0xffffffffu : e->size);
        put32(h + 24, big ? 0xffffffffu : e->size);
        put16(h + 28, nlen);
        put32(h + 38, 0644u << 16);
        put32(h + 42, far ? 0xffffffffu : e->lho);
        if (big || far) {
            uint8_t *p = h + 46;

            put16(p, 0x0001);
            x = 4;
            if (big) {
                put64(p + x, e->size);
                put64(p + x + 8, e->size);
                x += 16;
            }
            if (far) {
                put64(p + x, e->lho);
                x += 8;
            }
            put16(p + 2, x - 4);
        }
        put16(h + 30, x);
        if ((rc = cd_put(w, &cd, h, 46)) == 0 &&
            (rc = cd_put(w, &cd, name, nlen)) == 0)
            rc = cd_put(w, &cd, h + 46, x);
    }
    if (rc < 0) {
        ck_buf_release(&cd);
        return w_io(err, rc);
    }
    eocd64 = w->off;
    cd_len = eocd64 - cd_off;
    memset(t, 0, sizeof(t));
    put32(t, SIG_EOCD64);
    put64(t + 4, 44);
    put16(t + 12, 0x031e);
    put16(t + 14, 45);
    put64(t + 24, w->n);
    put64(t + 32, w->n);
    put64(t + 40, cd_len);
    put64(t + 48, cd_off);
    put32(t + 56, SIG_LOC64);
    put64(t + 64, eocd64);
    put32(t + 72, 1);
    put32(t + 76, SIG_EOCD);
    put16(t + 84, w->n >= 0xffff ? 0xffff : w->n);
    put16(t + 86, w->n >= 0xffff ? 0xffff : w->n);
    put32(t + 88, cd_len >= 0xffffffffu ? 0xffffffffu : cd_len);
    put32(t + 92, cd_off >= 0xffffffffu ? 0xffffffffu : cd_off);
    w->off = eocd64;
    if (rc == 0)
        rc = w_put(w, t, sizeof(t));
    if (w->stream)
        w->cd = cd; /* for the fingerprint: a pipe cannot be read back */
    else
        ck_buf_release(&cd);
    if (rc < 0)
        return w_io(err, rc);
    w->cd_off = cd_off;
    w->cd_size = eocd64 - cd_off;
    w->off = eocd64 + sizeof(t);
    return ck_zipw_flush(w, err);
}
