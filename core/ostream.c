/*
 * ostream.c -- see ostream.h.  Direct writes go through Linux native AIO
 * (raw system calls: io_setup, io_submit, io_getevents), up to
 * CK_OSTREAM_NBUF - 1 in flight, so the disk has a queue while the caller
 * fills the next buffer.  Whatever
 * refuses (no O_DIRECT, no AIO context, EINVAL from a device with larger
 * blocks, a short write) falls back, for the rest of the file, to the next
 * simpler way: synchronous direct writes, then ordinary ones; the bytes are
 * the same either way.
 */
#define _GNU_SOURCE
#include "ostream.h"

#include "zip.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define HUGE (2u << 20) /* buffers start on a (huge) page of this size */

static int io_err(ck_err_t *err, int rc)
{
    return ck_err_set(err, rc, "write: %s", strerror(-rc));
}

/* From here on, ordinary writes through the page cache. */
static void buffered(ck_ostream_t *o)
{
    int fl = o->direct ? fcntl(o->fd, F_GETFL) : -1;

    if (fl >= 0)
        fcntl(o->fd, F_SETFL, fl & ~O_DIRECT);
    o->direct = 0;
}

/* n bytes of p at off, synchronously: directly while that works (n and off
 * aligned), else through the page cache. */
static int put(ck_ostream_t *o, const uint8_t *p, size_t n, uint64_t off)
{
    int rc;

    if (o->direct && (n % CK_OSTREAM_ALIGN || off % CK_OSTREAM_ALIGN))
        buffered(o);
    rc = ck_pwrite_full(o->fd, p, n, off);
    if (rc == -EINVAL && o->direct) {
        buffered(o);
        rc = ck_pwrite_full(o->fd, p, n, off);
    }
    return rc;
}

/* Wait until no buffer in mask is being written.  A write that fell short
 * or was refused as a direct one is finished synchronously.  0 or the
 * first error. */
static int reap(ck_ostream_t *o, unsigned mask)
{
    struct io_event ev[CK_OSTREAM_NBUF];
    int rc = 0;

    while (o->busy & mask) {
        long r = syscall(SYS_io_getevents, (aio_context_t)o->aio, 1L,
                         (long)CK_OSTREAM_NBUF, ev, NULL);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) { /* the context is broken: nothing more will come */
            o->busy = 0;
            return r < 0 ? -errno : -EIO;
        }
        for (long k = 0; k < r; k++) {
            unsigned i = (unsigned)ev[k].data;
            int64_t res = ev[k].res;
            int e = 0;

            if (i >= CK_OSTREAM_NBUF || !(o->busy & (1u << i)))
                continue;
            o->busy &= ~(1u << i);
            if (res < 0 && res != -EINVAL)
                e = (int)res;
            else if (res < (int64_t)CK_OSTREAM_BUF) {
                res = res < 0 ? 0 : res;
                buffered(o);
                e = ck_pwrite_full(o->fd, o->buf[i] + res,
                                   CK_OSTREAM_BUF - (size_t)res,
                                   o->off[i] + (uint64_t)res);
            }
            if (rc == 0)
                rc = e;
        }
    }
    return rc;
}

/* Write buf[cur] (len bytes at base) and start filling the next buffer,
 * once it is free. */
static int submit(ck_ostream_t *o)
{
    struct iocb *cb = (struct iocb *)o->iocb + o->cur;
    int rc = 0;

    if (o->direct && o->aio != 0) {
        memset(cb, 0, sizeof(*cb));
        cb->aio_data = o->cur;
        cb->aio_fildes = (uint32_t)o->fd;
        cb->aio_lio_opcode = IOCB_CMD_PWRITE;
        cb->aio_buf = (uint64_t)(uintptr_t)o->buf[o->cur];
        cb->aio_nbytes = o->len;
        cb->aio_offset = (int64_t)o->base;
        if (syscall(SYS_io_submit, (aio_context_t)o->aio, 1L, &cb) == 1) {
            o->busy |= 1u << o->cur;
            o->off[o->cur] = o->base;
        }
    }
    if (!(o->busy & (1u << o->cur)))
        rc = put(o, o->buf[o->cur], o->len, o->base);
    if (rc < 0)
        return rc;
    o->base += o->len;
    o->len = 0;
    o->cur = (o->cur + 1) % CK_OSTREAM_NBUF;
    return reap(o, 1u << o->cur);
}

int ck_ostream_init(ck_ostream_t *o, int fd, uint64_t size, ck_err_t *err)
{
    aio_context_t ctx = 0;
    int fl;

    memset(o, 0, sizeof(*o));
    o->fd = fd;
    o->raw = ck_malloc((size_t)CK_OSTREAM_NBUF * CK_OSTREAM_BUF + HUGE);
    o->iocb = ck_malloc(CK_OSTREAM_NBUF * sizeof(struct iocb));
    if (o->raw == NULL || o->iocb == NULL) {
        ck_ostream_release(o);
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    }
    o->buf[0] =
        (uint8_t *)(((uintptr_t)o->raw + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
    for (unsigned i = 1; i < CK_OSTREAM_NBUF; i++)
        o->buf[i] = o->buf[0] + (size_t)i * CK_OSTREAM_BUF;
    /* huge pages: each direct write pins its buffer (get_user_pages), a
     * few folios rather than a thousand pages; advisory */
    (void)madvise(o->buf[0], (size_t)CK_OSTREAM_NBUF * CK_OSTREAM_BUF,
                  MADV_HUGEPAGE);
    if (size > 0 && size <= INT64_MAX)
        (void)fallocate(fd, 0, 0, (off_t)size); /* advisory; never emulated */
    fl = fcntl(fd, F_GETFL);
    o->direct = fl >= 0 && fcntl(fd, F_SETFL, fl | O_DIRECT) == 0;
    if (o->direct && syscall(SYS_io_setup, (long)CK_OSTREAM_NBUF, &ctx) == 0)
        o->aio = (unsigned long)ctx;
    return 0;
}

int ck_ostream_write(ck_ostream_t *o, const void *p, size_t n, ck_err_t *err)
{
    const uint8_t *s = p;

    while (n > 0) {
        size_t k = CK_OSTREAM_BUF - o->len < n ? CK_OSTREAM_BUF - o->len : n;
        int rc;

        memcpy(o->buf[o->cur] + o->len, s, k);
        o->len += k;
        s += k;
        n -= k;
        if (o->len == CK_OSTREAM_BUF && (rc = submit(o)) < 0)
            return io_err(err, rc);
    }
    return 0;
}

uint64_t ck_ostream_size(const ck_ostream_t *o)
{
    return o->base + o->len;
}

int ck_ostream_finish(ck_ostream_t *o, ck_err_t *err)
{
    size_t whole = o->len - o->len % CK_OSTREAM_ALIGN;
    uint64_t size = ck_ostream_size(o);
    int rc = reap(o, ~0u);

    if (rc == 0 && whole > 0)
        rc = put(o, o->buf[o->cur], whole, o->base);
    if (rc == 0 && o->len > whole)
        rc = put(o, o->buf[o->cur] + whole, o->len - whole, o->base + whole);
    buffered(o);
    if (rc == 0 && ftruncate(o->fd, (off_t)size) < 0)
        rc = -errno;
    if (rc < 0)
        return io_err(err, rc);
    o->base = size;
    o->len = 0;
    return 0;
}

void ck_ostream_release(ck_ostream_t *o)
{
    (void)reap(o, ~0u);
    if (o->aio != 0)
        syscall(SYS_io_destroy, (aio_context_t)o->aio);
    buffered(o);
    ck_free(o->iocb);
    ck_free(o->raw);
    memset(o, 0, sizeof(*o));
    o->fd = -1;
}
