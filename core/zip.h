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
 * the CRC is patched into the local header when the record ends, or, in
 * one pass to a pipe, written in a data descriptor after the data.
 *
 * zip_stream.c reads a zip front to back, from a pipe (ck_zips_*).
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
    ck_strmap_t names; /* name -> index in e, for ck_zip_find: made at
                          its 17th call (a torch file's few named records
                          are found by a scan; its storages by ckpt.c) */
    ck_arena_t *arena; /* where the entries and the map live */
    unsigned nfind;
    size_t n;          /* entries held in e */
    size_t nrec;       /* records in the directory (n, or more once the
                          caller kept fewer: ck_zip_forget, ckpt.c) */
    uint64_t cd_off, cd_size;
    int zip64;
} ck_zip_t;

/* Parse the archive in fd (fsize bytes).  Entries live in arena. */
int ck_zip_open(int fd, uint64_t fsize, ck_arena_t *arena, ck_zip_t *z,
                ck_err_t *err);
ck_zip_entry_t *ck_zip_find(ck_zip_t *z, const char *name);
/* The entries' arena released by the caller: z keeps no entry (n 0),
 * its record count and directory span (nrec, cd_off, cd_size, zip64);
 * ck_zip_find finds none. */
void ck_zip_forget(ck_zip_t *z);
/* A stored record TOP/data/N, found by N (ck_zip_open_numbered). */
typedef struct ck_zip_rec {
    uint64_t off, usize; /* where its bytes start, how many */
    uint32_t crc;
    uint32_t set;        /* 1: the directory holds TOP/data/N */
} ck_zip_rec_t;

/*
 * ck_zip_open for a torch archive of many storages, without an entry and
 * a name held for each.  When the directory lists its entries in the
 * order of their data and every entry in TOP/data/ (TOP the first entry's
 * folder, the first not one of them) is a stored record named by a number
 * as torch writes it (no leading zero), below eight times the entries'
 * count: those come out as a table by number (*recs, a ck_map_grow array
 * of *nrecs, set where one is), z holds the other entries (z->e one
 * ck_malloc block with their names, z->arena NULL; z->nrec counts all),
 * and it returns 0.  Otherwise -- another layout, or anything wrong -- 1,
 * z empty: ck_zip_open reads the file as it is, and says what is wrong.
 * Whatever it accepts ck_zip_open accepts, with the same entries.
 */
int ck_zip_open_numbered(int fd, uint64_t fsize, ck_zip_t *z,
                         ck_zip_rec_t **recs, size_t *nrecs);
/*
 * The first entry alone, checked as ck_zip_open checks it, from the end
 * record, the directory's first entry and its local header: where a torch
 * file's data.pkl is, to read while ck_zip_open reads the rest on another
 * thread.  z gets the directory's place (cd_off, cd_size, zip64) and
 * *count its entries; the name lives in arena.
 */
int ck_zip_first(int fd, uint64_t fsize, ck_arena_t *arena, ck_zip_t *z,
                 uint64_t *count, ck_zip_entry_t *e, ck_err_t *err);

/* 0 when entry e holds at most max bytes, else CK_ELIMIT with its name
 * and size in err (the refusal of ck_zip_read, for a caller that reads
 * the entry otherwise). */
int ck_zip_check_size(const ck_zip_entry_t *e, uint64_t max, ck_err_t *err);

/*
 * Read a whole entry (inflating if needed) into a new ck_malloc buffer of
 * e->usize bytes; the entry must not exceed max bytes.  Caller frees *out.
 */
int ck_zip_read(int fd, const ck_zip_entry_t *e, uint64_t max, uint8_t **out,
                ck_err_t *err);

/*
 * Reading a zip front to back from a pipe (zip_stream.c), as torch.save
 * writes one: each record's local header, its data, its data descriptor,
 * in file order; then the central directory and end records, which must
 * confirm every record read.  Only stored records; a record's size comes
 * from its local header, from the caller (a storage's size is known from
 * the pickle) or, for a record of unknown size, from its data descriptor,
 * found by its signature, sizes and CRC.
 */
typedef struct {
    char *name;
    uint16_t flags, method;
    uint32_t crc;
    uint64_t size;       /* data bytes, once known */
    uint64_t lho, data_off;
    int sized;           /* the local header gives the size */
    int zip64;           /* a zip64 extra: 8-byte sizes in the descriptor */
} ck_zips_rec_t;

typedef struct {
    int fd;
    uint64_t off;        /* stream offset of buf[pos] */
    uint8_t *buf;        /* read-ahead */
    size_t pos, len, bcap; /* bcap: bytes allocated at buf */
    ck_zips_rec_t *rec;  /* records met, in file order */
    size_t n, cap;
    int open;            /* rec[n - 1] is being read */
    uint64_t got;        /* data bytes of the open record read so far */
    int ended;           /* ck_zips_next found the central directory */
    ck_zip_t zip;        /* the central directory, after ck_zips_finish */
    uint8_t *tail;       /* the stream from the directory on (finish) */
    size_t tail_len;
} ck_zips_t;

void ck_zips_init(ck_zips_t *s, int fd);
void ck_zips_release(ck_zips_t *s);

/* The first bytes to come, up to k, without taking them: *p and *n (fewer
 * at the end of the stream); the read-ahead grows to k.  0 or a read
 * error. */
int ck_zips_peek(ck_zips_t *s, size_t k, const uint8_t **p, size_t *n,
                 ck_err_t *err);
/* Take n peeked bytes (n <= what ck_zips_peek gave). */
void ck_zips_skip(ck_zips_t *s, size_t n);
/* Open the next size bytes as a record without header or descriptor (a
 * legacy stream's storage, its element count), named name: then
 * ck_zips_data and ck_zips_end as for a record.  0 or CK_ENOMEM. */
int ck_zips_open_raw(ck_zips_t *s, const char *name, uint64_t size,
                     ck_err_t *err);

/*
 * The next record's local header: 1 with *r set (valid until the next
 * call), 0 when the central directory comes next (and at every call
 * after), or an error.  The previous record must be ended.
 */
int ck_zips_next(ck_zips_t *s, const ck_zips_rec_t **r, ck_err_t *err);
/* Exactly n more data bytes of the open record into p: 0 or an error (the
 * stream ended: "cut short at byte N"). */
int ck_zips_data(ck_zips_t *s, void *p, size_t n, ck_err_t *err);
/*
 * End the open record after size data bytes (all read): its data
 * descriptor, when it has one, read and checked (sizes; the CRC kept for
 * the central directory).  A size that disagrees with the local header or
 * the descriptor is CK_EFORMAT naming the record.
 */
int ck_zips_end(ck_zips_t *s, uint64_t size, ck_err_t *err);
/* How many of the open record's next data bytes are read ahead already
 * (ck_zips_data hands them out without a read). */
size_t ck_zips_buffered(const ck_zips_t *s);
/* The caller took n data bytes of the open record straight from s->fd
 * (splice), with nothing read ahead: counted as read. */
void ck_zips_taken(ck_zips_t *s, uint64_t n);
/* The whole open record, at most max bytes, into *out (a buffer the
 * caller releases with ck_buf_release; untouched on failure), and ended. */
int ck_zips_read_all(ck_zips_t *s, uint64_t max, ck_buf_t *out,
                     ck_err_t *err);
/*
 * After ck_zips_next returned 0: the rest of the stream to its end is the
 * central directory and the end records, checked as ck_zip_open checks a
 * file's, and each entry must be a record read, with the same name,
 * method, size and CRC, and every record read an entry.  s->zip holds the
 * directory (entries in arena).  0 or an error.
 */
int ck_zips_finish(ck_zips_t *s, ck_arena_t *arena, ck_err_t *err);

/*
 * A record written.  Its name is kept whole, or -- torch's TOP/data/N, one
 * per storage, 10^5 of them and more -- as its folder, kept once for all
 * the records in it, and the number N (num; CK_ZIPW_WHOLE for a whole
 * name).  Names live in the writer's arena: no allocation each.
 */
#define CK_ZIPW_WHOLE UINT32_MAX
typedef struct {
    const char *name;   /* the name, or the folder up to its '/' */
    uint32_t crc;
    uint32_t num;
    uint64_t size, lho;
} ck_zipw_entry_t;

/*
 * How a big writer gives way to small jobs' syncs, set by another thread
 * (the daemon's loop): each sync waits for the disk to take everything
 * written before it, the big output's backlog too (see kick in
 * zip_write.c).
 */
typedef struct {
    int sync;   /* nonzero: the output made durable every 8 MiB, as its
                   write-back is started */
    int hold;   /* nonzero: others are syncing now: no more is written
                   until it is zero again (CK_YIELD_HOLD_MS at most, once
                   per 8 MiB written: a stream of small jobs slows a big
                   one, never stops it) */
} ck_yield_t;
#define CK_YIELD_HOLD_MS 50

/*
 * A window of a file, read ahead: the local headers the reader checks and
 * the small records the writer copies lie one after the other, and one
 * read brings in hundreds of them.
 */
typedef struct {
    uint8_t *buf;       /* cap bytes, allocated on first use (ck_map_grow) */
    size_t cap, len;
    int fd;
    uint64_t off;       /* of buf[0] in fd */
    size_t step;        /* the last read's size (0: none yet) */
    size_t max;         /* what buf may grow to (ck_map_grow); 0: cap */
} ck_rwin_t;

/*
 * The n bytes at off of fd, from the window, or from a read at off that
 * stops at limit: of 16 KiB, or twice the last one's up to max bytes when
 * off is less than that past the window's end (small records one after
 * the other: fewer reads; records far apart: no more copied than a
 * header needs), never less than n.  buf grows with the reads (a small
 * file's window stays small); where it cannot, the reads stay smaller.
 * NULL with *rc = CK_ENOMEM, -errno, or -EIO when they are not all before
 * limit and the file's end (or n is more than max).
 */
const uint8_t *ck_rwin_get(ck_rwin_t *w, int fd, uint64_t off, size_t n,
                           uint64_t limit, int *rc);
/* The window's buffer given back (a ck_map_grow array). */
void ck_rwin_release(ck_rwin_t *w);

typedef struct {
    int fd;
    uint64_t off;          /* end of what is written */
    ck_zipw_entry_t *e;
    size_t n, cap;
    uint64_t cur_written;  /* bytes of the open record so far */
    uint32_t cur_crc;
    int open;
    int cur_later;         /* the open record's size is CK_ZIPW_LATER */
    uint64_t later_max;    /* such a record's most bytes: 0 for 4 GiB - 2,
                              the most its local header can say (tests
                              set less) */
    int later_over;        /* a LATER record was refused for passing it */
    uint8_t *buf;          /* ck_zipw_copy's buffer, made on first use */
    uint64_t cd_off, cd_size; /* set by ck_zipw_finish */
    uint64_t started;      /* write-out to disk started below this offset */
    const int *cancel;     /* optional: copies stop with CK_ECANCELED once
                              *cancel is nonzero (set by another thread) */
    const ck_yield_t *yield; /* optional: giving way to other jobs'
                              syncs (see ck_yield_t) */
    int sync_rc;           /* such a sync's error: ck_zipw_finish fails */
    ck_arena_t names;      /* of the entries */
    const char *folder;    /* the last folder of a numbered name */
    size_t folder_len;
    int stream;            /* write(2) in one pass, never a seek (a pipe):
                              each record's CRC follows its data in a data
                              descriptor (flag bit 3), as torch.save's do */
    ck_buf_t cd;           /* stream: the central directory written */
    /* small writes gather here and go out in one write per WBUF_BYTES
     * (10^5 records of a few bytes each are not 3 * 10^5 syscalls); the
     * buffer starts at file offset wb_off */
    ck_buf_t wb;
    uint64_t wb_off;
    /* and small records are read through a window of the input */
    ck_rwin_t rwin;
} ck_zipw_t;

/* Start a writer on fd; with stream set afterwards, one pass (see above). */
void ck_zipw_init(ck_zipw_t *w, int fd);
void ck_zipw_release(ck_zipw_t *w);
/* Start the output over, empty: what was written is cut away and the
 * records forgotten; fd, cancel, yield and a sync's error stay. */
int ck_zipw_restart(ck_zipw_t *w, ck_err_t *err);

/* Room for n more records without growing (a writer that knows how many
 * it will write; the array otherwise doubles): 0 or CK_ENOMEM. */
int ck_zipw_reserve(ck_zipw_t *w, size_t n);
/* Entry e's name into out (CK_ZIPW_NAME_MAX + 1 bytes); its length. */
#define CK_ZIPW_NAME_MAX 512
size_t ck_zipw_name(const ck_zipw_entry_t *e, char *out);

/* Write out the small writes gathered so far (ck_zipw_finish does). */
int ck_zipw_flush(ck_zipw_t *w, ck_err_t *err);

/*
 * Start record 'name' of exactly 'size' bytes; or of a size told by what
 * is written when size is CK_ZIPW_LATER: not streaming, the local header's
 * CRC and sizes are written over at ck_zipw_end, and the record must stay
 * under 4 GiB (no zip64 extra was made room for): data past it (or past
 * later_max) is refused with CK_ELIMIT and later_over set.
 */
#define CK_ZIPW_LATER UINT64_MAX
int ck_zipw_begin(ck_zipw_t *w, const char *name, uint64_t size,
                  ck_err_t *err);
/* Append bytes to the open record. */
int ck_zipw_data(ck_zipw_t *w, const void *p, size_t n, ck_err_t *err);
/* Append bytes without computing their CRC: the caller gives it with
 * ck_zipw_set_crc before ck_zipw_end. */
int ck_zipw_raw(ck_zipw_t *w, const void *p, size_t n, ck_err_t *err);
void ck_zipw_set_crc(ck_zipw_t *w, uint32_t crc);
/*
 * Append n bytes of fd from offset off, through a 1 MiB buffer.  With
 * crc_known crc is trusted; otherwise the CRC is computed.  Write-out to
 * disk is started as the output grows (sync_file_range), never waited for.
 */
int ck_zipw_copy(ck_zipw_t *w, int fd, uint64_t off, uint64_t n,
                 int crc_known, uint32_t crc, ck_err_t *err);
/*
 * Stream mode: move n bytes from fd (the input pipe) to the output with
 * splice(2), in the kernel, without a copy through user space; their CRC
 * is the caller's (ck_zipw_set_crc).  1 when splice cannot join the two
 * (nothing moved: copy instead), 0 when done, or an error (fd ending
 * before n bytes: CK_EFORMAT).
 */
int ck_zipw_splice(ck_zipw_t *w, int fd, uint64_t n, ck_err_t *err);
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
/* When fd is a pipe, make its buffer 1 MiB (the unprivileged maximum by
 * default) rather than 64 KiB: a pipeline of several processes then wakes
 * each one 16 times less often.  Best effort, nothing else changes. */
void ck_pipe_widen(int fd);
/* write(2) until done: 0 or -errno. */
int ck_write_full(int fd, const void *p, size_t n);

#endif
