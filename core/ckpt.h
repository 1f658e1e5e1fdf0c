/*
 * ckpt.h -- a PyTorch checkpoint as a model: the pickled object graph, the
 * storages its tensors live in, and where each storage's bytes are in the
 * input file.
 *
 * ck_ckpt_open reads only the pickle and the zip directory (or the legacy
 * stream's pickles and storage headers); storage bytes stay on disk until
 * ck_ckpt_write copies them, in bounded chunks, into a new
 * zip laid out the way torch.save lays it out.  Before anything is written
 * the whole file is validated: allowed globals, records present and of the
 * right size, every tensor view inside its storage.
 *
 * Plugins change the graph (through the job API of plugin.h, which calls
 * the helpers below) and the job calls ck_ckpt_scan again; storages no
 * longer referenced are not written.
 */
#ifndef CK_CKPT_H
#define CK_CKPT_H

#include "plugin.h"
#include "zip.h"

#include <sys/types.h>

/* CK_SRC_LEGACY: bytes at a file offset (a legacy file, a safetensors
 * file's data) */
/* CK_SRC_STREAM: the record data/<key> of a zip read from a pipe, whose
 * bytes pass once, in the file's order (ckpt_stream.c) */
typedef enum { CK_SRC_ZIP, CK_SRC_LEGACY, CK_SRC_MEM, CK_SRC_STREAM } ck_src_t;

#define CK_CONV_STEPS 8 /* dtypes in one storage's chain of casts */

/* A storage's casts (ck_ckpt_cast), made at its first: the input holds
 * src_nbytes bytes of step[0] elements, converted through
 * step[1..nconv) while written. */
typedef struct {
    const ck_dtype_t *step[CK_CONV_STEPS];
    uint64_t src_nbytes;
    uint32_t crc;               /* the storage's, whose place cast takes */
} ck_storage_cast_t;

struct ck_storage {
    const char *key;          /* key in the input */
    uint64_t numel;           /* elements of its dtype (bytes if untyped):
                                 ck_storage_nbytes bytes */
    union {                      /* by src: */
        uint64_t off;                /* CK_SRC_LEGACY, and CK_SRC_ZIP
                                        stored: file offset of the bytes */
        const ck_zip_entry_t *entry; /* CK_SRC_ZIP deflated (a hand-made
                                        zip's): its directory entry */
        const uint8_t *mem;          /* CK_SRC_MEM */
    };
    union {
        uint32_t crc;                /* CK_SRC_ZIP: the record's CRC-32
                                        (ck_storage_crc) */
        ck_storage_cast_t *cast;     /* with nconv > 0: most storages
                                        never are cast */
    };
    uint32_t refs;               /* persistent ids naming it at last scan */
    uint32_t mark;               /* generation of the last walk counting it */
    int32_t newkey;              /* assigned while writing, -1 before */
    uint8_t dt;                  /* its dtype (ck_storage_dtype): index in
                                    ck_dtype_at + 1, 0 for UntypedStorage
                                    (bytes) */
    uint8_t nconv;               /* steps in cast; 0: the bytes are copied
                                    as they are (src_nbytes == nbytes) */
    uint8_t src;                 /* ck_src_t */
    uint8_t deflated;            /* CK_SRC_ZIP: entry, not off */
    /* (48 bytes, holding what the job needs of the directory entry: a
     * checkpoint of 10^5 tensors has 4 * 10^5 of them) */
};

/* st's element type, NULL for an UntypedStorage (bytes). */
static inline const ck_dtype_t *ck_storage_dtype(const ck_storage_t *st)
{
    return st->dt != 0 ? ck_dtype_at(st->dt - 1u) : NULL;
}

static inline void ck_storage_set_dtype(ck_storage_t *st, const ck_dtype_t *dt)
{
    st->dt = dt != NULL ? (uint8_t)(ck_dtype_index(dt) + 1) : 0;
}

/* The bytes of one of st's numel units: its dtype's item size, 1 for an
 * UntypedStorage. */
static inline unsigned ck_storage_unit(const ck_storage_t *st)
{
    return st->dt != 0 ? ck_storage_dtype(st)->itemsize : 1;
}

/* The CRC-32 of st's record (CK_SRC_ZIP). */
static inline uint32_t ck_storage_crc(const ck_storage_t *st)
{
    return st->nconv ? st->cast->crc : st->crc;
}

/* st's bytes: numel elements of its dtype (the scan checked the product,
 * a cast keeps numel). */
static inline uint64_t ck_storage_nbytes(const ck_storage_t *st)
{
    return st->numel * ck_storage_unit(st);
}

/* The bytes of st's record in the input, before any cast. */
static inline uint64_t ck_storage_src_bytes(const ck_storage_t *st)
{
    return st->nconv ? st->cast->src_nbytes : ck_storage_nbytes(st);
}

typedef enum { CK_FMT_ZIP, CK_FMT_LEGACY, CK_FMT_SAFETENSORS } ck_format_t;

/* Where ck_ckpt_storage_stream and ck_ckpt_stream_copy put bytes: 0 or an
 * error. */
typedef int (*ck_sink_fn)(void *arg, const void *p, size_t n, ck_err_t *err);

typedef struct {
    ck_limits_t lim;
    const char *const *allow; /* extra allowed globals "module.name", NULL-ended */
    int allow_numpy;          /* numpy values, checked (core/numpy.h) */
    int tensors_later;        /* the open checks every tensor but keeps no
                                 record of them (c->unrecorded is set), nor
                                 does a later scan unless c->want_tensors
                                 is set: for a job, whose chain drops most
                                 of them and whose zip output needs none */
    size_t pickle_window;     /* 0: CK_PICKLE_WINDOW; tests set less */
} ck_open_opts_t;

/* A stored data.pkl bigger than this is read through a window this big
 * (ck_pickle_read_fd), not whole. */
#define CK_PICKLE_WINDOW (1u << 20)

typedef struct {
    ck_arena_t arena;
    const char *path;
    int fd;
    struct {
        uint64_t size;
        dev_t dev;
        ino_t ino;
        int64_t mtime_ns;
    } st;
    ck_format_t format;
    char *top;                /* zip top folder */
    const char *byteorder;    /* as recorded, NULL when absent */
    ck_zip_t zip;
    ck_arena_t zarena;        /* zip's entries when read on a second
                                 thread (else they are in arena) */
    /* what the storages need of torch's records TOP/data/N, by N, when
     * the directory read beside kept only its other entries (zkept: they
     * and their names, heap) -- ck_zip_open_numbered */
    struct ck_zip_rec *recs;
    size_t nrecs;
    ck_zip_entry_t *zkept;
    ck_pickle_t pk;
    size_t pickle_bytes;
    ck_limits_t lim;
    ck_storage_t **stchunks;  /* every storage known, input order, in
                                 chunks of CK_STORAGE_CHUNK records (see
                                 ck_ckpt_storage) */
    size_t nstorages;
    size_t stchunks_cap;      /* chunk pointers allocated in stchunks */
    ck_strmap_t by_key;       /* key -> index in storages (the first wins),
                                 for the keys by_num does not hold */
    size_t by_num_ident;      /* storages 0 .. this - 1 have the keys
                                 "0", "1", ... (torch.save's order): no
                                 entry in by_num */
    size_t *by_num;           /* torch's keys "0", "1", ... past those:
                                 index + 1 in storages, 0 for none (heap,
                                 by_num_cap) */
    size_t by_num_cap;
    ck_tensor_t *tensors;     /* found by the last scan, graph order */
    size_t ntensors;
    size_t tensors_cap;       /* entries allocated; each scan reuses them */
    int64_t *dims;            /* the tensors' sizes and strides, in order */
    size_t dims_cap;
    size_t seen_tensors, seen_dims; /* what the last scan met, recorded or
                                 not: the next one reserves that much */
    char fingerprint[65];     /* see ck_fingerprint_* */
    struct ck_fp_job *fp;     /* a big pickle's fingerprint being made
                                 (ckpt.c), or NULL */
    ck_py_t *st_meta;         /* a safetensors input's __metadata__ (a dict
                                 of str), NULL otherwise */
    uint64_t st_hdr_len;      /* a safetensors input's header bytes (its
                                 fingerprint stays "" until
                                 ck_ckpt_fingerprint) ... */
    uint64_t *st_sizes;       /* ... and its tensors' byte counts, in the
                                 data's order (for its fingerprint) */
    size_t st_n;
    const int *cancel;        /* ck_ckpt_write stops with CK_ECANCELED once
                                 *cancel is nonzero (another thread sets it) */
    const ck_yield_t *yield;  /* optional: a zip output gives way to other
                                 jobs' syncs (see ck_yield_t) */
    uint64_t defer;           /* nonzero: for an output of at most this
                                 many bytes ck_ckpt_write stops short of
                                 publishing: the temporary, written, its
                                 write-back started, goes to the caller
                                 (info->tmp); a bigger one is published
                                 here */
    size_t pickle_window;     /* see CK_PICKLE_WINDOW */
    uint64_t pickle_later_max;/* 0, or (tests) the data.pkl size past
                                 which a write into a file starts over
                                 with the pickle made whole first */
    int allow_numpy;          /* from ck_open_opts_t: numpy names pass the
                                 allowlist, ck_ckpt_validate checks them */
    struct ck_ckpt_stream *stream; /* an input read from a pipe, else NULL */
    int stale;                /* the graph changed since the last scan */
    int tensors_later;        /* from ck_open_opts_t; then a scan records
                                 the tensors only with want_tensors set */
    int want_tensors;         /* (set by the job around a scan whose records
                                 someone reads: ck_job_tensor, a safetensors
                                 output) */
    int unrecorded;           /* the last scan checked the tensors and kept
                                 no record (tensors_later): ntensors is 0 */
    int write_safe;           /* the open's scan proved that writing the
                                 graph as read cannot go past max_depth:
                                 no set, no tuple or call reached through
                                 its own items or arguments, nesting 4 or
                                 more short of it */
} ck_ckpt_t;

/*
 * 1 when the first 512 of the n bytes at blk would open as a tar archive in
 * Python's tarfile (checksum rule, no magic needed; see tarhdr.c), else 0.
 * torch 1.13 unpickles such a file's tar members instead of its stream.
 */
int ck_tar_header(const uint8_t *blk, size_t n);

/*
 * Open and validate path.  On success c owns an open descriptor and an
 * arena, and may own a thread still making its fingerprint (c->fp): it is
 * neither copied nor made anew, but released with ck_ckpt_close (also
 * after a failure).
 */
int ck_ckpt_open(ck_ckpt_t *c, const char *path, const ck_open_opts_t *o,
                 ck_err_t *err);

/* c empty, no file open, with the open options o: where every open
 * starts, so that each takes every option (for the opens, and tests). */
void ck_ckpt_init(ck_ckpt_t *c, const char *path, const ck_open_opts_t *o);
void ck_ckpt_close(ck_ckpt_t *c);

/*
 * Open the zip that arrives on fd (a pipe: stdin) as torch.save writes it:
 * data.pkl first, read and validated as ck_ckpt_open validates a file's,
 * then the small records before the storages.  The storages' bytes are
 * read by the writer as they arrive (ck_ckpt_write_fd, ck_ckpt_write),
 * each once, in the file's order; the central directory at the end must
 * confirm every record.  name is what messages and records call the
 * input.  A legacy or safetensors stream, a zip whose first record is not
 * data.pkl, a compressed record: CK_EUNSUPPORTED, saying to give a file.
 * Release with ck_ckpt_close.
 */
int ck_ckpt_open_stream(ck_ckpt_t *c, int fd, const char *name,
                        const ck_open_opts_t *o, ck_err_t *err);

/*
 * For the writer, on a stream input, before a byte is written: the
 * storages to write (order, n) can be read in one pass -- none needs the
 * bytes of another's record (a cast's split).  0 or CK_EUNSUPPORTED.
 */
int ck_ckpt_stream_plan(ck_ckpt_t *c, ck_storage_t *const *order, size_t n,
                        ck_err_t *err);

/*
 * For the writer, on a stream input: the next storage whose bytes come
 * (1, *st; its bytes are then read by ck_ckpt_storage_src in order, or
 * by ck_ckpt_stream_copy, and the record closed with ck_ckpt_stream_end;
 * *crc_given 0 when the input's writer left CRC-32s out), or 0 once the
 * input is over and its central directory confirmed what was read
 * (c->fingerprint and c->st.size are set then).  Records of storages the
 * output does not hold are read past.
 */
int ck_ckpt_stream_next(ck_ckpt_t *c, ck_storage_t **st, int *crc_given,
                        ck_err_t *err);
/* ck_ckpt_storage_src of a stream's storage: only the next n bytes of
 * the open record (off is where it is); else CK_EUNSUPPORTED saying the
 * bytes are needed out of order. */
int ck_ckpt_stream_src(ck_ckpt_t *c, const ck_storage_t *st, uint64_t off,
                       uint64_t n, uint8_t *out, ck_err_t *err);
/*
 * The rest of st's bytes as they are, appended to w's open record without
 * their CRC (the input's is given after: ck_ckpt_stream_end): with
 * splice(2) when w writes a pipe or a file, else through buf (1 MiB, the
 * caller's).
 */
int ck_ckpt_stream_copy(ck_ckpt_t *c, ck_storage_t *st, ck_zipw_t *w,
                        uint8_t *buf, ck_err_t *err);
/* Close st's record (its data descriptor read): *crc is its CRC-32 as the
 * input gives it. */
int ck_ckpt_stream_end(ck_ckpt_t *c, ck_storage_t *st, uint32_t *crc,
                       ck_err_t *err);
/* Frees a stream input's state (ck_ckpt_close calls it). */
void ck_ckpt_stream_close(ck_ckpt_t *c);

/*
 * The five pickles that start a legacy file (magic, protocol, sys_info,
 * the object, the storage keys), in buf[0..len): c->pk the object's,
 * *keys the key list, *data_start where the storages begin.  -EAGAIN when
 * len ends inside them (read more and call again, the arena released).
 */
int ck_ckpt_legacy_pickles(ck_ckpt_t *c, const uint8_t *buf, size_t len,
                           ck_py_t **keys, size_t *data_start, ck_err_t *err);

/* Checks shared by a file's and a stream's records: the byteorder record
 * (sets c->byteorder; only "little"), the version record (1 to 10). */
int ck_ckpt_byteorder(ck_ckpt_t *c, const uint8_t *bo, size_t n,
                      ck_err_t *err);
int ck_ckpt_version_ok(const uint8_t *v, size_t n, ck_err_t *err);
/* The globals checked against the allowlist, then the first scan, which
 * registers every storage the pickle names (unbound to any bytes). */
int ck_ckpt_bind(ck_ckpt_t *c, const char *const *allow, ck_err_t *err);

/* "zip", "legacy" or "safetensors": c's input format, for records. */
const char *ck_ckpt_format_name(const ck_ckpt_t *c);

/* ckpt_refuse.c: 1 when Python's tarfile takes the file for a tar; what
 * the first n bytes of a file that is no checkpoint look like, into out;
 * and rc's refusal in err, given again with the forbidden globals the
 * file's pickle names when it names some (returns rc). */
int ck_ckpt_is_tar(ck_ckpt_t *c);
void ck_ckpt_looks_like(const uint8_t *b, size_t n, char *out, size_t size);
int ck_ckpt_name_danger(ck_ckpt_t *c, const char *const *allow, int rc,
                        ck_err_t *err);

/*
 * Storage i of c (i < c->nstorages): the records lie in chunks, found by
 * index without a pointer each -- 4 * 10^6 storages in a checkpoint of
 * 10^6 tensors -- and never move, so a pointer to one stays good.
 */
#define CK_STORAGE_CHUNK 256
static inline ck_storage_t *ck_ckpt_storage(const ck_ckpt_t *c, size_t i)
{
    return &c->stchunks[i / CK_STORAGE_CHUNK][i % CK_STORAGE_CHUNK];
}

/* The index of the storage with key (ck_ckpt_storage), or SIZE_MAX. */
size_t ck_ckpt_key_index(const ck_ckpt_t *c, const char *key);

/*
 * The index (ck_ckpt_storage) of the storage persistent id pid names, as
 * the last scan tied them -- SIZE_MAX-ish when untied; pid->len holds it
 * plus one (storages are only ever appended, so an index stays theirs)
 * -- and that storage, or NULL.
 */
static inline size_t ck_ckpt_pid_index(const ck_py_t *pid)
{
    return pid->len - 1u;
}

static inline ck_storage_t *ck_ckpt_pid_storage(const ck_ckpt_t *c,
                                                const ck_py_t *pid)
{
    size_t i = ck_ckpt_pid_index(pid);

    return i < c->nstorages ? ck_ckpt_storage(c, i) : NULL;
}

/* Tie pid to ck_ckpt_storage(c, i) (ck_ckpt_pid_storage). */
static inline void ck_ckpt_pid_tie(ck_py_t *pid, size_t i)
{
    pid->len = (uint32_t)(i + 1);
}

/* Add a copy of st to the storages known (by key: the first of a key
 * wins): the new record is ck_ckpt_storage(c, c->nstorages - 1).  0,
 * CK_ENOMEM, or CK_ELIMIT at the 2^32 - 1st (ck_ckpt_pid_tie's index),
 * with err saying which. */
int ck_ckpt_add_storage(ck_ckpt_t *c, const ck_storage_t *st, ck_err_t *err);

/* Re-find tensors and storage references after the graph changed. */
int ck_ckpt_scan(ck_ckpt_t *c, ck_err_t *err);

/*
 * For `inspect` on a file ck_ckpt_open refused after reading its pickle
 * (a global not allowed): find its tensors and storages as the open would
 * have, nothing executed; storages stay unbound to records.  A model
 * scanned already is left as it is.
 */
int ck_ckpt_scan_refused(ck_ckpt_t *c, ck_err_t *err);

typedef struct {
    char fingerprint[65];     /* of the written file, as for inputs */
    uint64_t size;            /* bytes written */
    size_t nstorages;
    uint64_t storage_bytes;
    char *tmp;                /* with c->defer: the written temporary beside
                                 the output (ck_malloc), neither synced nor
                                 renamed: the caller syncs and renames it
                                 or unlink; NULL otherwise */
    int stream;               /* written in one pass (ck_ckpt_write_fd) */
    /* A body may leave the fingerprint to ck_ckpt_write_with (fp_later):
     * the pickle's and the directory's bytes in the file (offset, bytes),
     * read back while the file is synced. */
    int fp_later;
    uint64_t fp_part[2][2];
} ck_write_info_t;

/*
 * Refuse a graph holding a dict or OrderedDict with two equal keys (a
 * plugin renamed two keys onto one): CK_EFORMAT naming its path.
 * ck_ckpt_write runs it first; the job runs it for a dry run.
 */
int ck_ckpt_check_keys(ck_ckpt_t *c, ck_err_t *err);

/*
 * The one validation `inspect` and `run` (and the daemon) share, after
 * ck_ckpt_open: with allow_numpy, ck_np_check (every numpy value well
 * formed, no object dtype); ck_ckpt_check_keys, then whatever the writer
 * would refuse (a set that holds itself, nesting past the limit) is
 * refused here too: by the pickle written to a scratch buffer and dropped,
 * unless the open's scan proved the writer cannot refuse it
 * (c->write_safe).  0 or an error in err.
 */
int ck_ckpt_validate(ck_ckpt_t *c, ck_err_t *err);

/*
 * Write the checkpoint to out_path atomically: a temporary file in the same
 * folder, fsync, rename, fsync of the folder.  On failure nothing is left.
 */
int ck_ckpt_write(ck_ckpt_t *c, const char *out_path, ck_write_info_t *info,
                  ck_err_t *err);

/*
 * Write the checkpoint to fd in one pass, never seeking (stdout, a pipe):
 * top folder "archive" (torch.save's name for a file object), each
 * record's CRC-32 in a data descriptor after its data.  A stream input's
 * storages are written as they arrive.  What is written cannot be taken
 * back: on failure the output gets 68 KiB of zeros after what was written,
 * so no zip reader finds an end record in it (unless the failure was
 * writing, EPIPE) -- a failure to complete the input's fingerprint too,
 * which is waited for after the last byte.  0 or an error.
 */
int ck_ckpt_write_fd(ck_ckpt_t *c, int fd, ck_write_info_t *info,
                     ck_err_t *err);

/*
 * Fingerprints: hex SHA-256 over the file's size, its pickle(s) and, for a
 * zip, its central directory, which holds every record's size and CRC-32.
 * Cheap (no tensor byte is read) and changes with any record's content.
 * A safetensors file keeps no checksums: its fingerprint covers the size,
 * the header and an XXH3-64 of each tensor's bytes (ck_st_fingerprint),
 * which costs one read of the data; ck_ckpt_open leaves it empty and
 * ck_ckpt_fingerprint computes it for whoever needs it.  So it does a zip
 * whose pickle is read from the file (over the pickle window and, with
 * the directory, 4 MiB): its digest is made on a second thread from the
 * end of the parse, and c->fingerprint is complete after
 * ck_ckpt_fingerprint (or a write, which waits for it before it checks
 * that the input is unchanged).
 */
/* SHA-256 of size (8 bytes, little-endian), then p1[0..n1) and
 * p2[0..n2) (n2 may be 0), in hex: 0 or CK_ENOMEM. */
int ck_fingerprint_parts(uint64_t size, const void *p1, size_t n1,
                         const void *p2, size_t n2, char out[65]);

/* 0 when c's file has the size and modification time it had when opened,
 * else CK_ECHANGED ("the input changed while it was read"). */
int ck_ckpt_unchanged(const ck_ckpt_t *c, ck_err_t *err);

/* Complete c->fingerprint: nothing to do for a legacy file or a zip of a
 * small pickle (open made it); a big pickle's digest is waited for, and
 * the file checked unchanged since the open; a safetensors input's tensor
 * bytes are read once, the first call.  0 or an error: a read's,
 * CK_ENOMEM, CK_ECHANGED (the file changed since the open; the
 * fingerprint stays ""), CK_ECANCELED. */
int ck_ckpt_fingerprint(ck_ckpt_t *c, ck_err_t *err);

int ck_sha256_file(const char *path, char out[65], ck_err_t *err);
/* The same from the central directory in memory. */
int ck_ckpt_fingerprint_mem(uint64_t size, const void *pkl, size_t n,
                            const void *cd, size_t cd_size, char out[65],
                            ck_err_t *err);
/* Hex SHA-256 of p[0..n): 0 or CK_ENOMEM. */
int ck_sha256_buf(const void *p, size_t n, char out[65]);

/* The fingerprint of the zip open at fd: its size, its pickle (pkl, n
 * bytes) and its central directory (cd_size bytes at cd_off). */
int ck_ckpt_zip_fingerprint(int fd, uint64_t size, const void *pkl, size_t n,
                            uint64_t cd_off, uint64_t cd_size, char out[65],
                            ck_err_t *err);

/* The same with the pickle read from fd too (n bytes at pkl_off). */
int ck_ckpt_zip_fingerprint_at(int fd, uint64_t size, uint64_t pkl_off,
                               uint64_t n, uint64_t cd_off, uint64_t cd_size,
                               char out[65], ck_err_t *err);

/* The top folder torch.save gives a file: its name without the extension. */
char *ck_ckpt_stem(ck_arena_t *a, const char *path);

/*
 * The value at a '/'-separated path of mapping keys ("best_state/model"),
 * or NULL.  Keys may contain dots.
 */
ck_py_t *ck_ckpt_get(ck_ckpt_t *c, const char *path);

/* What node is: 1, 2 or 3 for a call of torch._utils._rebuild_tensor,
 * _v2 or _v3; -1 for _rebuild_parameter; 0 for anything else. */
int ck_ckpt_tensor_call(const ck_py_t *node);

/* Whether argument i (a) of such a call is one the scan reads and checks
 * itself, nothing under it a storage: the offset, the size and stride (a
 * tuple of ints) or requires_grad.  Walks looking for storages skip it. */
static inline int ck_tensor_arg_plain(const ck_py_t *a, uint32_t i)
{
    return i >= 1 && i <= 4 && a != NULL &&
           (a->kind == CK_PY_INT || a->kind == CK_PY_BOOL ||
            (a->kind == CK_PY_TUPLE && (i == 2 || i == 3)));
}

/* The tensor whose rebuild call is node (or a Parameter wrapping one). */
ck_tensor_t *ck_ckpt_tensor(ck_ckpt_t *c, ck_py_t *node);

/* 1 when module.name may appear in a pickle (extra: more allowed names). */
int ck_global_allowed(const char *module, const char *name,
                      const char *const *extra);

/* ---- editing the model (the job API of plugin.h is built on these) ---- */

/*
 * An empty in-memory model (no input file: fd -1, zip format, default
 * limits) whose graph a caller builds; tensors come from
 * ck_ckpt_new_tensor.  Release with ck_ckpt_close.
 */
void ck_ckpt_init_mem(ck_ckpt_t *c, const char *name);

/*
 * The mapping at path whose items a plugin edits: a dict, an OrderedDict or
 * a defaultdict.  *items are its pairs (k0 v0 k1 v1 ...).  Error naming the
 * path when it is missing or not a mapping.
 */
int ck_ckpt_mapping(ck_ckpt_t *c, const char *path, ck_py_t **node,
                    ck_py_vec_t **items, ck_err_t *err);

/* The _metadata mapping nn.Module.state_dict() attaches, its items to
 * change (room made in c's arena), or NULL: none, or *oom set. */
ck_py_vec_t *ck_ckpt_metadata(ck_ckpt_t *c, ck_py_t *state_dict, int *oom);

/* Bytes of the distinct storages reachable from node. */
uint64_t ck_ckpt_bytes_under(ck_ckpt_t *c, ck_py_t *node);

/* The global module.name, reusing the graph's node when it has one. */
ck_py_t *ck_ckpt_global(ck_ckpt_t *c, const char *module, const char *name);

/*
 * A new contiguous tensor of dtype dt and the given shape whose storage holds
 * data (numel * itemsize bytes, owned by the caller's arena and kept until
 * the checkpoint is written), built as torch.save builds one.
 */
ck_py_t *ck_ckpt_new_tensor(ck_ckpt_t *c, const ck_dtype_t *dt,
                            const int64_t *shape, size_t ndim,
                            const uint8_t *data, ck_err_t *err);

/*
 * Cast the tensors whose rebuild calls are nodes[0..n) to dt, as t.to(dt)
 * would, without reading a byte: a storage whose every user is cast is
 * converted once, while written (its views keep shape, stride and offset
 * in elements); a storage also used by something not cast is split: the
 * cast tensors get a new storage, the input's bytes converted, and
 * split[i] is set (may be NULL).  Tensors of dt already are left alone.
 * Each dtype must be ck_dtype_is_castable.  0 or an error.
 */
int ck_ckpt_cast(ck_ckpt_t *c, ck_py_t *const *nodes, size_t n,
                 const ck_dtype_t *dt, unsigned char *split, ck_err_t *err);

/*
 * Elements [first, first + count) of st as written: its input bytes,
 * converted when st is cast.  out holds count * itemsize bytes of the
 * storage's (final) element type; an untyped storage counts bytes.
 */
int ck_ckpt_storage_read(ck_ckpt_t *c, const ck_storage_t *st, uint64_t first,
                         uint64_t count, uint8_t *out, ck_err_t *err);


/*
 * Elements [first, first + count) of st as written (an untyped storage
 * counts bytes), given to sink in chunks of at most a few MiB: the input's
 * bytes read in bounded pieces and, for a cast storage, converted.
 */
int ck_ckpt_storage_stream(ck_ckpt_t *c, const ck_storage_t *st,
                           uint64_t first, uint64_t count,
                           ck_sink_fn sink, void *arg, ck_err_t *err);

/* Input bytes [off, off + n) of st, before any cast: 0 or an error. */
int ck_ckpt_storage_src(ck_ckpt_t *c, const ck_storage_t *st, uint64_t off,
                        uint64_t n, uint8_t *out, ck_err_t *err);

/* Write out_path atomically as ck_ckpt_write does, its bytes made by
 * body(c, fd, arg, info, err). */
typedef int (*ck_write_body_fn)(ck_ckpt_t *c, int fd, void *arg,
                                ck_write_info_t *info, ck_err_t *err);
int ck_ckpt_write_with(ck_ckpt_t *c, const char *out_path, ck_write_body_fn body,
                       void *arg, ck_write_info_t *info, ck_err_t *err);

/*
 * The rebuild call of a new contiguous tensor of the given shape over st
 * (set up by the caller, with a dtype that has a storage class; not added
 * here: see ck_ckpt_add_storage), as torch.save builds one.
 */
ck_py_t *ck_ckpt_tensor_node(ck_ckpt_t *c, ck_storage_t *st,
                             const int64_t *shape, size_t ndim, ck_err_t *err);

/* 1 when t's strides are the contiguous (row-major) ones. */
int ck_tensor_contiguous(const ck_tensor_t *t);

/* Copy a tensor's elements, in row-major order, into out (numel * itemsize). */
int ck_ckpt_read_tensor(ck_ckpt_t *c, const ck_tensor_t *t, uint8_t *out,
                        ck_err_t *err);

#endif
