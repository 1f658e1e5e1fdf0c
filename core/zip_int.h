/*
 * zip_int.h -- what zip.c (the reader) and zip_write.c (the writer) share:
 * the record signatures, the limits and the inflating of one record into a
 * sink.  Private to the two.
 */
#ifndef CK_ZIP_INT_H
#define CK_ZIP_INT_H

#include "zip.h"

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_LOC64 0x07064b50u
#define MAX_ENTRIES (1u << 23)
#define MAX_CD_BYTES (1024u << 20)
#define COPY_CHUNK (1u << 20)
#define KICK_BYTES (8u << 20)

/* Where ck_zip_inflate_entry puts what it inflates, chunk by chunk. */
typedef int (*ck_zip_sink_fn)(void *ud, const uint8_t *p, size_t n,
                              ck_err_t *err);

/* Inflate the deflated record e of the file at fd into sink, checking its
 * size and CRC-32: 0 or the error. */
int ck_zip_inflate_entry(int fd, const ck_zip_entry_t *e, ck_zip_sink_fn sink,
                         void *ud, ck_err_t *err);

/* Where ck_zip_open_tail learns what it cannot read in the tail: given a
 * central directory entry, check it against the record's local header as
 * read (name, method, sizes, CRC) and set e->data_off.  0 or an error. */
typedef int (*ck_zip_local_fn)(void *ud, const ck_zip_t *z,
                               ck_zip_entry_t *e, ck_err_t *err);

/*
 * ck_zip_open over the last n bytes of an archive of base + n bytes, held
 * at tail (a stream's central directory and end records): the same checks
 * of the end records and the directory, local headers checked by local.
 */
int ck_zip_open_tail(const uint8_t *tail, uint64_t base, uint64_t n,
                     ck_arena_t *arena, ck_zip_t *z, ck_zip_local_fn local,
                     void *ud, ck_err_t *err);

#endif
