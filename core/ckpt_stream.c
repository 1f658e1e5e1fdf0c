/*
 * ckpt_stream.c -- a checkpoint read from a pipe, in one pass, as
 * torch.save writes it: data.pkl, a few small records (.format_version,
 * .storage_alignment, byteorder), the storages data/<key>, then version,
 * .data/serialization_id and the central directory.  Or the legacy stream
 * of torch < 1.6: five pickles, then each storage (an int64 count and its
 * bytes) in the order of the key list, the last pickle.
 *
 * The pickle is read and validated whole before anything is written, as
 * for a file; a storage's bytes are read only when the writer asks for
 * them, once, in the order they come (ck_ckpt_stream_next), and the
 * central directory at the end must confirm every record read
 * (ck_zips_finish).  Anything that needs bytes another way -- a plugin
 * reading a tensor, a storage written twice -- fails saying to give the
 * input as a file.
 *
 * Invariant: s->cur is the storage whose record is open, or NULL.
 */
#define _GNU_SOURCE
#include "ckpt.h"

#include "safetensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SMALL_RECORD (64u << 10) /* byteorder, version and the like */

struct ck_ckpt_stream {
    ck_zips_t zs;
    ck_buf_t pkl;               /* data.pkl, for the fingerprint */
    int crcs;                   /* the writer computed CRCs (data.pkl's
                                   is not 0) */
    int version;                /* a valid version record was read */
    int pending;                /* ck_zips_next returned this, unused */
    const ck_zips_rec_t *rec;
    ck_storage_t *cur;
    uint8_t *came;              /* per storage index: its record was read */
    size_t ninput;              /* storages data.pkl names (the first ones) */
    ck_py_t *keys;              /* legacy: the storage key list */
    size_t nextkey;             /* legacy: the next storage in it */
};

static const char use_file[] = "give the input as a file";

void ck_ckpt_stream_close(ck_ckpt_t *c)
{
    if (c->stream == NULL)
        return;
    ck_zips_release(&c->stream->zs);
    ck_buf_release(&c->stream->pkl);
    ck_free(c->stream->came);
    ck_free(c->stream);
    c->stream = NULL;
}

/* The record name under the top folder, or NULL when it is outside. */
static const char *in_top(ck_ckpt_t *c, const char *name)
{
    size_t tl = strlen(c->top);

    if (strncmp(name, c->top, tl) != 0 || name[tl] != '/')
        return NULL;
    return name + tl + 1;
}

/* The next record, or the one ck_zips_next gave and nobody took:
 * 1 and s->rec, 0 at the central directory, or an error. */
static int next_rec(ck_ckpt_t *c, ck_err_t *err)
{
    struct ck_ckpt_stream *s = c->stream;
    int rc;

    if (s->pending) {
        s->pending = 0;
        return 1;
    }
    rc = ck_zips_next(&s->zs, &s->rec, err);
    if (rc == 1 && in_top(c, s->rec->name) == NULL)
        return ck_err_set(err, CK_EFORMAT, "zip: %s is outside the top "
                          "folder %s/", s->rec->name, c->top);
    return rc;
}

/* A record that is no storage: read whole and checked as open_zip checks
 * the file's. */
static int small_record(ck_ckpt_t *c, ck_err_t *err)
{
    struct ck_ckpt_stream *s = c->stream;
    const char *rel = in_top(c, s->rec->name);
    ck_buf_t b = { 0 };
    int rc;

    if (strcmp(rel, "constants.pkl") == 0)
        return ck_err_set(err, CK_EUNSUPPORTED,
                          "a TorchScript archive (constants.pkl), not a "
                          "torch.save checkpoint");
    if (strcmp(rel, "data.pkl") == 0)
        return ck_err_set(err, CK_EFORMAT, "zip: duplicate entry %s",
                          s->rec->name);
    rc = ck_zips_read_all(&s->zs, SMALL_RECORD, &b, err);
    if (rc < 0)
        return rc;
    if (strcmp(rel, "byteorder") == 0)
        rc = ck_ckpt_byteorder(c, b.data, b.len, err);
    else if (strcmp(rel, "version") == 0 || strcmp(rel, ".data/version") == 0) {
        rc = ck_ckpt_version_ok(b.data, b.len, err);
        s->version = rc == 0;
    }
    ck_buf_release(&b);
    return rc;
}

/* What the first bytes of a stream that is no zip are. */
static int not_zip(ck_ckpt_t *c, const uint8_t *b, size_t n, ck_err_t *err)
{
    char what[96];

    if (n == 0)
        return ck_err_set(err, CK_EFORMAT, "empty input");
    if (n >= 9 && ck_st_sniff(b, n, UINT64_MAX))
        return ck_err_set(err, CK_EUNSUPPORTED, "a safetensors file: read "
                          "from a file only (its tensors are laid out in "
                          "header order, not the output's); %s", use_file);
    ck_ckpt_looks_like(b, n, what, sizeof(what));
    return ck_err_set(err, CK_EFORMAT, "not a PyTorch checkpoint: neither a "
                      "zip nor a legacy torch stream; it is %s", what);
}

/*
 * A legacy stream's pickles: read ahead until they parse (as open_legacy
 * reads a file's), kept for the fingerprint, taken off the stream.
 */
static int open_legacy(ck_ckpt_t *c, const ck_open_opts_t *o, ck_err_t *err)
{
    struct ck_ckpt_stream *s = c->stream;
    size_t want = 1u << 20, n, start = 0;
    const uint8_t *b;
    int rc;

    c->format = CK_FMT_LEGACY;
    rc = ck_zips_peek(&s->zs, 512, &b, &n, err);
    if (rc == 0 && n == 512 && ck_tar_header(b, n))
        return ck_err_set(err, CK_EUNSUPPORTED,
                          "reads as a tar archive (the checkpoint format "
                          "of torch < 0.4, which torch.load would unpickle "
                          "instead), not supported");
    for (;;) {
        if (rc == 0)
            rc = ck_zips_peek(&s->zs, want, &b, &n, err);
        if (rc < 0)
            return rc;
        ck_arena_release(&c->arena);
        memset(&c->pk, 0, sizeof(c->pk));
        rc = ck_ckpt_legacy_pickles(c, b, n, &s->keys, &start, err);
        if (rc != -EAGAIN)
            break;
        if (n < want || want >= c->lim.max_pickle_bytes)
            return ck_err_replace(err, CK_EFORMAT, "legacy stream truncated "
                                  "in its pickles (cut short?)");
        ck_err_clear(err);
        rc = 0;
        want = want * 4 > c->lim.max_pickle_bytes
                   ? (size_t)c->lim.max_pickle_bytes : want * 4;
    }
    if (rc < 0)
        return rc;
    if (ck_buf_put(&s->pkl, b, start) < 0)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    ck_zips_skip(&s->zs, start);
    return ck_ckpt_bind(c, o->allow, err);
}

int ck_ckpt_open_stream(ck_ckpt_t *c, int fd, const char *name,
                        const ck_open_opts_t *o, ck_err_t *err)
{
    struct ck_ckpt_stream *s;
    const uint8_t *head;
    const char *slash;
    size_t n;
    int rc;

    ck_ckpt_init(c, name, o);
    c->format = CK_FMT_ZIP;
    s = ck_calloc(1, sizeof(*s));
    if (s == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    c->stream = s;
    ck_zips_init(&s->zs, fd);
    ck_pipe_widen(fd);
    rc = ck_zips_peek(&s->zs, 64, &head, &n, err);
    if (rc < 0)
        return rc;
    if (n > 0 && (head[0] == 0x80 || head[0] == 'L' || head[0] == 'I')) {
        /* a legacy stream starts with its magic number */
        rc = open_legacy(c, o, err);
        for (size_t i = 0; rc == 0 && i < c->nstorages; i++)
            ck_ckpt_storage(c, i)->src = CK_SRC_STREAM;
        s->ninput = c->nstorages;
        return rc;
    }
    if (n < 4 || memcmp(head, "PK\x03\x04", 4) != 0)
        return not_zip(c, head, n, err);
    rc = ck_zips_next(&s->zs, &s->rec, err);
    if (rc < 0)
        return rc;
    slash = strchr(s->rec->name, '/');
    if (slash == NULL || slash == s->rec->name)
        return ck_err_set(err, CK_EFORMAT, "zip: %s is not in a top folder",
                          s->rec->name);
    c->top = ck_arena_strndup(&c->arena, s->rec->name,
                              (size_t)(slash - s->rec->name));
    if (c->top == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    s->pending = 1;
    /* small records may come first (torch 1.6 to 1.8 wrote version
     * first); a storage before the pickle cannot be placed */
    while ((rc = next_rec(c, err)) == 1 &&
           strcmp(in_top(c, s->rec->name), "data.pkl") != 0) {
        if (strncmp(in_top(c, s->rec->name), "data/", 5) == 0)
            return ck_err_set(err, CK_EUNSUPPORTED,
                              "%s comes before data.pkl: not laid out as "
                              "torch.save writes (the pickle first, then the "
                              "storages), so it cannot be read in one pass; "
                              "%s", s->rec->name, use_file);
        rc = small_record(c, err);
        if (rc < 0)
            return rc;
    }
    if (rc == 0)
        return ck_err_set(err, CK_EFORMAT, "zip: no %s/data.pkl record",
                          c->top);
    if (rc < 0)
        return rc;
    rc = ck_zips_read_all(&s->zs, c->lim.max_pickle_bytes, &s->pkl, err);
    if (rc < 0)
        return rc;
    s->crcs = s->zs.rec[s->zs.n - 1].crc != 0 || s->pkl.len == 0;
    c->pickle_bytes = s->pkl.len;
    rc = ck_pickle_read(s->pkl.data, s->pkl.len, 1, &c->lim, &c->arena, &c->pk,
                        err);
    if (rc == -EAGAIN) /* within data.pkl, running short is its end */
        rc = ck_err_replace(err, CK_EFORMAT, "data.pkl: %s", err->msg);
    if (rc == 0)
        rc = ck_ckpt_bind(c, o->allow, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < c->nstorages; i++)
        ck_ckpt_storage(c, i)->src = CK_SRC_STREAM;
    s->ninput = c->nstorages;
    /* the small records before the first storage */
    while ((rc = next_rec(c, err)) == 1) {
        if (strncmp(in_top(c, s->rec->name), "data/", 5) == 0) {
            s->pending = 1;
            break;
        }
        rc = small_record(c, err);
        if (rc < 0)
            return rc;
    }
    if (rc == 0)
        s->pending = 0; /* the directory is next: no storage at all */
    return rc < 0 ? rc : 0;
}

int ck_ckpt_stream_plan(ck_ckpt_t *c, ck_storage_t *const *order, size_t n,
                        ck_err_t *err)
{
    for (size_t i = 0; i < n; i++) {
        const ck_storage_t *st = order[i];
        size_t k = ck_ckpt_key_index(c, st->key);

        /* a copy made by a cast's split reads another storage's record */
        if (st->src == CK_SRC_STREAM && k >= c->stream->ninput)
            return ck_err_set(err, CK_EUNSUPPORTED,
                              "a cast split storage %s, which tensors that "
                              "are cast and tensors that are not share, so "
                              "its bytes are needed twice (a stream's bytes "
                              "pass once); %s", st->key, use_file);
    }
    return 0;
}

/* The input is over: the directory checked, the fingerprint taken. */
static int finish(ck_ckpt_t *c, ck_err_t *err)
{
    struct ck_ckpt_stream *s = c->stream;
    int legacy = c->format == CK_FMT_LEGACY;
    int rc = legacy ? 0 : ck_zips_finish(&s->zs, &c->arena, err);

    if (rc < 0)
        return rc;
    if (!s->version && !legacy)
        return ck_err_set(err, CK_EFORMAT, "zip: no version record");
    /* as a file's open checks: every storage data.pkl names has its record
     * (those the output drops included) */
    for (size_t i = 0; i < s->ninput; i++)
        if (s->came == NULL || !s->came[i])
            return ck_err_set(err, CK_EFORMAT, legacy
                              ? "legacy file has no data for storage %s"
                              : "record data/%s is missing",
                              ck_ckpt_storage(c, i)->key);
    c->st.size = s->zs.off;
    if (legacy) /* as open_legacy's: the size and the pickles */
        return ck_ckpt_fingerprint_mem(c->st.size, s->pkl.data, s->pkl.len, NULL, 0,
                                       c->fingerprint, err);
    c->zip = s->zs.zip;
    /* the directory starts the tail (ck_zips_finish checked) */
    return ck_ckpt_fingerprint_mem(c->st.size, s->pkl.data, s->pkl.len, s->zs.tail,
                                   (size_t)c->zip.cd_size, c->fingerprint,
                                   err);
}

/* A legacy stream's next storage (1), its record opened; 0 after the
 * last, the stream ended; or an error. */
static int next_legacy(ck_ckpt_t *c, ck_err_t *err)
{
    struct ck_ckpt_stream *s = c->stream;
    const ck_py_t *k;
    const ck_storage_t *st;
    const uint8_t *b;
    uint8_t nb[8];
    uint64_t numel = 0;
    size_t i, n;
    int rc;

    if (s->nextkey == s->keys->u.seq.n) {
        rc = ck_zips_peek(&s->zs, 1, &b, &n, err);
        if (rc == 0 && n > 0)
            rc = ck_err_set(err, CK_EFORMAT, "legacy stream has bytes after "
                            "its last storage");
        return rc;
    }
    k = s->keys->u.seq.v[s->nextkey++];
    if (k->kind != CK_PY_STR)
        return ck_err_set(err, CK_EFORMAT, "legacy storage key is not a str");
    i = ck_ckpt_key_index(c, k->u.s.s);
    if (i >= s->ninput)
        return ck_err_set(err, CK_EFORMAT, "legacy storage %s is not "
                          "referenced by the pickle", k->u.s.s);
    rc = ck_zips_open_raw(&s->zs, k->u.s.s, 8, err);
    if (rc == 0)
        rc = ck_zips_data(&s->zs, nb, 8, err);
    if (rc == 0)
        rc = ck_zips_end(&s->zs, 8, err);
    if (rc < 0)
        return rc;
    for (int j = 7; j >= 0; j--)
        numel = numel << 8 | nb[j];
    st = ck_ckpt_storage(c, i);
    if (numel != st->numel)
        return ck_err_set(err, CK_EFORMAT, "legacy storage %s holds %llu "
                          "elements, its persistent id says %llu", k->u.s.s,
                          (unsigned long long)numel,
                          (unsigned long long)st->numel);
    rc = ck_zips_open_raw(&s->zs, k->u.s.s, ck_storage_src_bytes(st), err);
    return rc < 0 ? rc : 1;
}

int ck_ckpt_stream_next(ck_ckpt_t *c, ck_storage_t **st, int *crc_given,
                        ck_err_t *err)
{
    struct ck_ckpt_stream *s = c->stream;
    int rc;

    *st = NULL;
    *crc_given = s->crcs;
    if (s->cur != NULL)
        return ck_err_set(err, CK_EFORMAT, "storage %s: record not closed",
                          s->cur->key);
    while ((rc = c->format == CK_FMT_LEGACY ? next_legacy(c, err)
                                            : next_rec(c, err)) == 1) {
        const char *rel = c->format == CK_FMT_LEGACY ? NULL
                                                     : in_top(c, s->rec->name);
        size_t i;
        ck_storage_t *x;
        uint64_t size;

        if (c->format == CK_FMT_LEGACY)
            s->rec = &s->zs.rec[s->zs.n - 1];
        else if (strncmp(rel, "data/", 5) != 0) {
            rc = small_record(c, err);
            if (rc < 0)
                return rc;
            continue;
        }
        i = ck_ckpt_key_index(c, rel ? rel + 5 : s->rec->name);
        if (i == SIZE_MAX)
            return ck_err_set(err, CK_EFORMAT, "record %s is no storage "
                              "data.pkl names (it is read only from a "
                              "file); %s", s->rec->name, use_file);
        x = ck_ckpt_storage(c, i);
        size = ck_storage_src_bytes(x);
        if (s->rec->sized && s->rec->size != size)
            return ck_err_set(err, CK_EFORMAT,
                              "data/%s: record holds %llu bytes, storage "
                              "needs %llu", x->key,
                              (unsigned long long)s->rec->size,
                              (unsigned long long)size);
        if (s->came == NULL)
            s->came = ck_calloc(c->nstorages + 1, 1);
        if (s->came == NULL)
            return ck_err_set(err, CK_ENOMEM, "out of memory");
        if (i >= s->ninput)
            return ck_err_set(err, CK_EFORMAT, "record %s is no storage "
                              "data.pkl names; %s", s->rec->name, use_file);
        if (s->came[i])
            return ck_err_set(err, CK_EFORMAT, "zip: duplicate entry %s",
                              s->rec->name);
        s->came[i] = 1;
        if (x->newkey < 0) { /* not in the output: read past */
            rc = ck_zips_data(&s->zs, NULL, (size_t)size, err);
            if (rc == 0)
                rc = ck_zips_end(&s->zs, size, err);
            if (rc < 0)
                return rc;
            continue;
        }
        s->cur = x;
        *st = x;
        return 1;
    }
    return rc < 0 ? rc : finish(c, err);
}

/* The storage's input bytes [off, off + n): only the next ones of the
 * open record. */
int ck_ckpt_stream_src(ck_ckpt_t *c, const ck_storage_t *st, uint64_t off,
                       uint64_t n, uint8_t *out, ck_err_t *err)
{
    struct ck_ckpt_stream *s = c->stream;

    if (s == NULL || s->cur != st || off != s->zs.got)
        return ck_err_set(err, CK_EUNSUPPORTED,
                          "storage %s: its bytes are needed before they "
                          "arrive, or twice (a stream's bytes pass once, in "
                          "the file's order); %s", st->key, use_file);
    return ck_zips_data(&s->zs, out, (size_t)n, err);
}

int ck_ckpt_stream_copy(ck_ckpt_t *c, ck_storage_t *st, ck_zipw_t *w,
                        uint8_t *buf, ck_err_t *err)
{
    struct ck_ckpt_stream *s = c->stream;
    uint64_t size = ck_storage_src_bytes(st);
    size_t ahead = ck_zips_buffered(&s->zs);
    int rc = 0, moved = 0;

    if (s->cur != st)
        return ck_ckpt_stream_src(c, st, 0, size, buf, err);
    /* what was read ahead, then the rest in the kernel */
    if (ahead > size)
        ahead = (size_t)size;
    if (ahead > 0 && (rc = ck_zips_data(&s->zs, buf, ahead, err)) == 0)
        rc = ck_zipw_raw(w, buf, ahead, err);
    if (rc == 0 && s->zs.got < size) {
        rc = ck_zipw_splice(w, s->zs.fd, size - s->zs.got, err);
        if (rc == 0)
            ck_zips_taken(&s->zs, size - s->zs.got);
        moved = rc == 0;
        if (rc == CK_EFORMAT)
            return ck_err_replace(err, CK_EFORMAT, "the stream ended inside "
                                  "record data/%s (cut short?)", st->key);
        rc = rc == 1 ? 0 : rc;
    }
    while (rc == 0 && !moved && s->zs.got < size) {
        uint64_t left = size - s->zs.got;
        size_t part = left < (1u << 20) ? (size_t)left : (1u << 20);

        if (c->cancel != NULL && __atomic_load_n(c->cancel, __ATOMIC_RELAXED))
            return ck_err_set(err, CK_ECANCELED, "abandoned: ckprep is stopping");
        rc = ck_zips_data(&s->zs, buf, part, err);
        if (rc == 0)
            rc = ck_zipw_raw(w, buf, part, err);
    }
    return rc;
}

int ck_ckpt_stream_end(ck_ckpt_t *c, ck_storage_t *st, uint32_t *crc,
                       ck_err_t *err)
{
    struct ck_ckpt_stream *s = c->stream;
    uint64_t size = ck_storage_src_bytes(st);
    int rc;

    if (s->cur != st)
        return ck_err_set(err, CK_EFORMAT, "storage %s: record not open",
                          st->key);
    rc = ck_zips_end(&s->zs, size, err);
    if (rc < 0)
        return rc;
    s->cur = NULL;
    *crc = s->zs.rec[s->zs.n - 1].crc;
    return 0;
}
