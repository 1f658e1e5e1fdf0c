/*
 * safetensors.h -- the safetensors format, both ways, and the [output]
 * section that picks it.
 *
 * A file is an 8-byte little-endian header length N, N bytes of UTF-8
 * JSON (an object: "__metadata__" -> {str: str}, and per tensor
 * {"dtype", "shape", "data_offsets": [begin, end]} relative to the data),
 * padded with spaces, then the data: every tensor contiguous, row-major,
 * little-endian, the ranges covering the data with no gap or overlap.
 *
 * Reading (ck_st_open, called by ck_ckpt_open when a file looks like one)
 * gives a model whose root is a dict of the tensors, in the order of their
 * data, each on a storage of its own read from the file in place; the
 * header's __metadata__ is kept in c->st_meta and written back when the
 * output is safetensors too.  Writing (ck_st_plan, then ck_st_write)
 * takes the state dict [output] state names and streams each tensor's
 * elements (converted when cast, gathered when a view is not contiguous).
 */
#ifndef CK_SAFETENSORS_H
#define CK_SAFETENSORS_H

#include "ckpt.h"
#include "conf.h"

/* The safetensors name of dt ("F16"), or NULL when it has none. */
const char *ck_st_dtype_name(const ck_dtype_t *dt);

/* Largest header accepted, as the safetensors library's limit. */
#define CK_ST_MAX_HEADER 100000000u

/* 1 when the file's first bytes (n of them, at least 9) look like a
 * safetensors header of a file of size bytes. */
int ck_st_sniff(const uint8_t *p, size_t n, uint64_t size);

/* Read c->fd as safetensors into c (the graph, storages), validating the
 * whole header first; the fingerprint is left to ck_ckpt_fingerprint. */
int ck_st_open(ck_ckpt_t *c, ck_err_t *err);

/*
 * A safetensors file's fingerprint (hex, into out): SHA-256 over its size,
 * its header (hdr, n bytes: the JSON and its padding) and sums[0..count),
 * each 8 bytes little-endian: the XXH3-64 of each tensor's bytes, in the
 * order of the data.  This is the zip's central directory and its CRC-32s
 * made for a format that stores none.  0 or an error.
 */
int ck_st_fingerprint(uint64_t size, const void *hdr, size_t n,
                      const uint64_t *sums, size_t count, char out[65],
                      ck_err_t *err);

/* c->fingerprint of the safetensors input c, reading its data once in
 * CK_ST_SUM_CHUNK pieces.  0 or an error. */
int ck_st_fingerprint_input(ck_ckpt_t *c, ck_err_t *err);
#define CK_ST_SUM_CHUNK (4u << 20)

typedef struct {
    const char *name;  /* UTF-8, no NUL */
    const ck_tensor_t *t;
    uint64_t begin, end;
} ck_st_entry_t;

typedef struct {
    const char *state;     /* the path written ("/" for the top) */
    ck_st_entry_t *e;      /* in the order of the data */
    size_t n;
    const char **alias;    /* dropped names (tied = dedupe) ... */
    const char **kept;     /* ... and the name each kept instead */
    size_t nalias;
    ck_buf_t header;       /* length, JSON and padding: the file's start */
    uint64_t data_bytes;
} ck_st_plan_t;

/*
 * Decide what a safetensors output of c holds: the state dict, its
 * tensors and their ranges, the aliases dropped, the header.  Refuses
 * (CK_EFORMAT/CK_EUNSUPPORTED naming the key) a value that is not a tensor,
 * a key that is not a str, a dtype safetensors cannot name, tied tensors
 * unless o->tied is dedupe.  Release with ck_st_plan_release.
 */
int ck_st_plan(ck_ckpt_t *c, const ck_output_conf_t *o, ck_st_plan_t *p,
               ck_err_t *err);
void ck_st_plan_release(ck_st_plan_t *p);

/* Write the plan to out_path atomically (as ck_ckpt_write does). */
int ck_st_write(ck_ckpt_t *c, ck_st_plan_t *p, const char *out_path,
                ck_write_info_t *info, ck_err_t *err);

#endif
