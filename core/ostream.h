/*
 * ostream.h -- a file written front to back in large aligned blocks that
 * bypass the page cache (O_DIRECT) where the file system allows it.
 *
 * A buffered write copies every byte into page-cache pages the kernel must
 * first allocate (and, in a VM, the host must back), then writes them out
 * at the fsync; for an output made once and fsynced at once that copy is
 * all the writer's time (perf: copy_folio_from_iter_atomic).  A direct
 * write hands the disk the stream's own buffer: no copy, no new pages.
 * Blocks go out while the next buffer fills (CK_OSTREAM_NBUF buffers, all
 * but one in flight through Linux AIO, so the disk has a queue); the last
 * partial block, and everything on a file system that refuses O_DIRECT, is
 * written the ordinary way.
 *
 * Invariants: bytes [0, base) are written or in flight; buf[cur] holds
 * bytes [base, base + len); base is a multiple of CK_OSTREAM_ALIGN.
 */
#ifndef CK_OSTREAM_H
#define CK_OSTREAM_H

#include "ck.h"

#include <stdint.h>

#define CK_OSTREAM_ALIGN 4096u    /* offsets, sizes and buffers */
#define CK_OSTREAM_BUF (4u << 20) /* bytes per write */
#define CK_OSTREAM_NBUF 4u        /* buffers: one filled, the rest in flight */

typedef struct {
    int fd;
    int direct;                    /* O_DIRECT is set on fd */
    void *raw;                     /* the buffers, as allocated */
    uint8_t *buf[CK_OSTREAM_NBUF]; /* CK_OSTREAM_BUF bytes each, aligned */
    unsigned cur;                  /* the buffer being filled */
    size_t len;                    /* bytes in buf[cur] */
    uint64_t base;                 /* file offset of buf[cur][0] */
    unsigned long aio; /* the AIO context; 0: writes are synchronous */
    unsigned busy;     /* bit i: buf[i] is being written ... */
    uint64_t off[CK_OSTREAM_NBUF]; /* ... at off[i], CK_OSTREAM_BUF bytes */
    void *iocb; /* CK_OSTREAM_NBUF struct iocb, one per buffer */
} ck_ostream_t;

/*
 * Start writing fd (empty, open for writing) from offset 0; size, when
 * not 0, is the file's final size, reserved first (fallocate) so the
 * blocks are allocated in one piece and no write extends the file.
 * O_DIRECT is set when the file system takes it.  0 or an error (ENOMEM).
 */
int ck_ostream_init(ck_ostream_t *o, int fd, uint64_t size, ck_err_t *err);

/* Append p[0..n).  0 or an error ("write: ..."). */
int ck_ostream_write(ck_ostream_t *o, const void *p, size_t n, ck_err_t *err);

/* Bytes appended so far. */
uint64_t ck_ostream_size(const ck_ostream_t *o);

/* Write what is left and wait for it; the file is then ck_ostream_size
 * bytes long (not yet fsynced).  0 or an error. */
int ck_ostream_finish(ck_ostream_t *o, ck_err_t *err);

/* Free the buffers (waiting for a write still in flight); accepts a
 * stream never initialised if zeroed. */
void ck_ostream_release(ck_ostream_t *o);

#endif
