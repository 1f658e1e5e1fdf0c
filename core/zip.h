/*
 * zip.h -- the zip container of torch.save files, read and written.
 *
 * Reading parses the central directory (zip64 included) and each entry's
 * local header, so the caller knows where every record's bytes start in the
 * file and can copy them without holding them in memory.  It
 * refuses what a checkpoint never holds: encryption, unknown methods,
 * overlapping or out-of-bounds entries, unsafe or duplicate names.
 *
 * Writing lays records out the way torch.save does: stored, data on a
 * 64-byte boundary behind an "FB" padding extra field, zip64 where a size or
 * offset needs it, zip64 end records always.  Sizes are declared up front;
 * the CRC is patched into the local header when the record ends.
 */
#ifndef CK_ZIP_H
#define CK_ZIP_H

#include "ck.h"

typedef struct {
    char *name;
    uint16_t method; /* 0 stored, 8 deflated */
    uint16_t flags;
    uint32_t crc;
    uint64_t csize, usize;
    uint64_t lho;      /* local header offset */
    uint64_t data_off; /* first byte of the (compressed) data */
} ck_zip_entry_t;

typedef struct {
    ck_zip_entry_t *e; /* in central directory order */
    ck_strmap_t names; /* name -> index in e, for ck_zip_find */
    size_t n;
    uint64_t cd_off, cd_size;
    int zip64;
} ck_zip_t;

/* Parse the archive in fd (fsize bytes).  Entries live in arena. */
int ck_zip_open(int fd, uint64_t fsize, ck_arena_t *arena, ck_zip_t *z,
                ck_err_t *err);
ck_zip_entry_t *ck_zip_find(ck_zip_t *z, const char *name);

/*
 * Read a whole entry (inflating if needed) into a new ck_malloc buffer of
 * e->usize bytes; the entry must not exceed max bytes.  Caller frees *out.
 */
int ck_zip_read(int fd, const ck_zip_entry_t *e, uint64_t max, uint8_t **out,
                ck_err_t *err);

typedef struct {
    char *name;
    uint32_t crc;
    uint64_t size, lho;
} ck_zipw_entry_t;

typedef struct {
    int fd;
    uint64_t off;          /* end of what is written */
    ck_zipw_entry_t *e;
    size_t n, cap;
    uint64_t cur_written;  /* bytes of the open record so far */
    uint32_t cur_crc;
    int open;
    uint8_t *buf;          /* ck_zipw_copy's buffer, made on first use */
    uint64_t cd_off, cd_size; /* set by ck_zipw_finish */
    uint64_t started;      /* write-out to disk started below this offset */
    const int *cancel;     /* optional: copies stop with CK_ECANCELED once
                              *cancel is nonzero (set by another thread) */
} ck_zipw_t;

void ck_zipw_init(ck_zipw_t *w, int fd);
void ck_zipw_release(ck_zipw_t *w);

/* Start record 'name' of exactly 'size' bytes. */
int ck_zipw_begin(ck_zipw_t *w, const char *name, uint64_t size,
                  ck_err_t *err);
/* Append bytes to the open record. */
int ck_zipw_data(ck_zipw_t *w, const void *p, size_t n, ck_err_t *err);
/*
 * Append n bytes of fd from offset off, through a 1 MiB buffer.  With
 * crc_known crc is trusted; otherwise the CRC is computed.  Write-out to
 * disk is started as the output grows (sync_file_range), never waited for.
 */
int ck_zipw_copy(ck_zipw_t *w, int fd, uint64_t off, uint64_t n,
                 int crc_known, uint32_t crc, ck_err_t *err);
/* Append the inflated bytes of a deflated entry of another archive. */
int ck_zipw_inflate(ck_zipw_t *w, int fd, const ck_zip_entry_t *e,
                    ck_err_t *err);
/* Close the open record: checks its size and writes its CRC. */
int ck_zipw_end(ck_zipw_t *w, ck_err_t *err);
/* Central directory and end records. */
int ck_zipw_finish(ck_zipw_t *w, ck_err_t *err);

/* pread/pwrite that finish or fail: 0 or -errno (-EIO at end of file). */
int ck_pread_full(int fd, void *p, size_t n, uint64_t off);
int ck_pwrite_full(int fd, const void *p, size_t n, uint64_t off);

#endif
