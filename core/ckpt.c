/*
 * ckpt.c -- the torch layer: what torch.save's pickles mean, where their
 * storages live, and how to write them back the way torch.save does.
 *
 * Invariants after a successful ck_ckpt_open or ck_ckpt_scan:
 *  - every global the pickle names is on the allowlist;
 *  - every persistent id is ('storage', <storage class>, key, location,
 *    numel) and names a storage whose bytes exist in the input with exactly
 *    numel * itemsize bytes; one key has one element type;
 *  - every tensor view lies inside its storage.
 * A PERSID node's len names its ck_storage_t (ck_ckpt_pid_storage), a
 * tensor call's len its ck_tensor_t (ck_ckpt_tensor).
 */
#define _GNU_SOURCE
#include "ckpt.h"

#include "fsutil.h"
#include "numpy.h"
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

/* ---- digests ---------------------------------------------------------- */

static void hex(const unsigned char *md, char out[65])
{
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
}

int ck_fingerprint_parts(uint64_t size, const void *p1, size_t n1,
                         const void *p2, size_t n2, char out[65])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md[32], sz[8];
    unsigned int len = 0;
    int ok;

    for (int i = 0; i < 8; i++)
        sz[i] = (unsigned char)(size >> (8 * i));
    ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
         EVP_DigestUpdate(ctx, sz, 8) && EVP_DigestUpdate(ctx, p1, n1) &&
         (n2 == 0 || EVP_DigestUpdate(ctx, p2, n2)) &&
         EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return CK_ENOMEM;
    hex(md, out);
    return 0;
}

enum { FP_CHUNK = 1 << 20 };

typedef struct {
    uint64_t off, n;
} fp_part_t;

/*
 * The buffer the parts are read through: FP_CHUNK, or the biggest part if
 * less (a small checkpoint's directory is a few hundred bytes, and a
 * buffer of 1 MiB made and given back per job cost the daemon a TLB flush
 * on every CPU when the heap was trimmed after it).
 */
static size_t fp_chunk(const fp_part_t *part, int np)
{
    uint64_t most = 1;

    for (int i = 0; i < np; i++)
        if (part[i].n > most)
            most = part[i].n;
    return most < FP_CHUNK ? (size_t)most : FP_CHUNK;
}

/*
 * The fingerprint of the size (8 bytes LE), then mem[0..n), then each of
 * the np parts of fd, read through buf (fp_chunk bytes): what
 * ck_fingerprint_parts gives for the same bytes.
 */
static int fp_digest(int fd, uint64_t size, const void *mem, size_t n,
                     const fp_part_t *part, int np, uint8_t *buf,
                     const int *stop, char out[65], ck_err_t *err)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md[32], sz[8];
    unsigned int len = 0;
    size_t chunk = fp_chunk(part, np);
    int ok, rc = 0;

    for (int i = 0; i < 8; i++)
        sz[i] = (unsigned char)(size >> (8 * i));
    ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
         EVP_DigestUpdate(ctx, sz, 8) && (n == 0 || EVP_DigestUpdate(ctx, mem, n));
    for (int i = 0; i < np && ok && rc == 0; i++) {
        for (uint64_t done = 0; done < part[i].n && ok && rc == 0;) {
            size_t k = part[i].n - done < chunk
                           ? (size_t)(part[i].n - done) : chunk;

            if (stop != NULL && __atomic_load_n(stop, __ATOMIC_RELAXED))
                rc = CK_ECANCELED;
            else
                rc = ck_pread_full(fd, buf, k, part[i].off + done);
            ok = rc < 0 || EVP_DigestUpdate(ctx, buf, k);
            done += k;
        }
    }
    ok = ok && rc == 0 && EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    if (rc == CK_ECANCELED)
        return ck_err_set(err, rc, "abandoned: ckprep is stopping");
    if (rc < 0)
        return ck_err_set(err, rc, "fingerprint: %s", strerror(-rc));
    if (!ok)
        return ck_err_set(err, CK_ENOMEM, "fingerprint: out of memory");
    hex(md, out);
    return 0;
}

/* fp_digest through a buffer of its own. */
static int fp_digest_alloc(int fd, uint64_t size, const void *mem, size_t n,
                           const fp_part_t *part, int np, char out[65],
                           ck_err_t *err)
{
    size_t chunk = fp_chunk(part, np);
    uint8_t *buf = ck_map_grow(NULL, 0, chunk);
    int rc;

    if (buf == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    rc = fp_digest(fd, size, mem, n, part, np, buf, NULL, out, err);
    ck_map_free(buf, chunk);
    return rc;
}

int ck_ckpt_zip_fingerprint(int fd, uint64_t size, const void *pkl, size_t n,
                            uint64_t cd_off, uint64_t cd_size, char out[65],
                            ck_err_t *err)
{
    const fp_part_t cd = { cd_off, cd_size };

    return fp_digest_alloc(fd, size, pkl, n, &cd, 1, out, err);
}

int ck_ckpt_zip_fingerprint_at(int fd, uint64_t size, uint64_t pkl_off,
                               uint64_t n, uint64_t cd_off, uint64_t cd_size,
                               char out[65], ck_err_t *err)
{
    const fp_part_t part[2] = { { pkl_off, n }, { cd_off, cd_size } };

    return fp_digest_alloc(fd, size, NULL, 0, part, 2, out, err);
}

int ck_sha256_buf(const void *p, size_t n, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;

    if (!EVP_Digest(p, n, md, &len, EVP_sha256(), NULL))
        return CK_ENOMEM;
    hex(md, out);
    return 0;
}

int ck_sha256_file(const char *path, char out[65], ck_err_t *err)
{
    FILE *f = fopen(path, "rb");
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md[32], buf[65536];
    unsigned int len = 0;
    size_t n;
    int ok = f != NULL && ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);

    while (ok && (n = fread(buf, 1, sizeof(buf), f)) > 0)
        ok = EVP_DigestUpdate(ctx, buf, n);
    ok = ok && !ferror(f) && EVP_DigestFinal_ex(ctx, md, &len);
    if (f != NULL)
        fclose(f);
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return ck_err_set(err, CK_ECONFIG, "%s: cannot digest", path);
    hex(md, out);
    return 0;
}

/* ---- opening ---------------------------------------------------------- */

char *ck_ckpt_stem(ck_arena_t *a, const char *path)
{
    const char *base = ck_path_base(path), *dot = ck_path_ext(base);

    if (dot == base)
        return ck_arena_strdup(a, "archive");
    return ck_arena_strndup(a, base, (size_t)(dot - base));
}

static int check_globals(ck_ckpt_t *c, const char *const *extra, ck_err_t *err)
{
    for (size_t i = 0; i < c->pk.globals.n; i++) {
        ck_py_t *g = c->pk.globals.v[i];

        if (c->allow_numpy && ck_np_global(g->u.g.module, g->u.g.name))
            continue; /* checked where it is used: ck_np_check */
        if (!ck_global_allowed(g->u.g.module, g->u.g.name, extra))
            return ck_err_set(err, CK_EUNSAFE,
                              "pickle names global '%s.%s'%s, which is not allowed",
                              ck_py_module3(g->u.g.module), g->u.g.name,
                              strchr(g->u.g.name, '.') ? " (a dotted name)" : "");
    }
    return 0;
}

int ck_ckpt_byteorder(ck_ckpt_t *c, const uint8_t *bo, size_t n,
                      ck_err_t *err)
{
    c->byteorder = (n == 6 && memcmp(bo, "little", 6) == 0) ? "little"
                   : (n == 3 && memcmp(bo, "big", 3) == 0) ? "big"
                                                           : "?";
    if (strcmp(c->byteorder, "little") != 0)
        return ck_err_set(err, CK_EUNSUPPORTED,
                          "byteorder record is not 'little'");
    return 0;
}

int ck_ckpt_version_ok(const uint8_t *v, size_t n, ck_err_t *err)
{
    unsigned long ver = 0;
    size_t i = 0;

    while (i < n && v[i] >= '0' && v[i] <= '9' && ver < 1000)
        ver = ver * 10 + (unsigned long)(v[i++] - '0');
    while (i < n && (v[i] == '\r' || v[i] == '\n'))
        i++;
    /* torch reads versions 1 to 10 */
    if (i != n || ver < 1 || ver > 10)
        return ck_err_set(err, CK_EUNSUPPORTED,
                          "zip: unsupported archive version record");
    return 0;
}

int ck_ckpt_fingerprint_mem(uint64_t size, const void *pkl, size_t n,
                            const void *cd, size_t cd_size, char out[65],
                            ck_err_t *err)
{
    int rc = ck_fingerprint_parts(size, pkl, n, cd, cd_size, out);

    if (rc < 0)
        return ck_err_set(err, rc, "fingerprint: %s", ck_strerror(rc));
    return 0;
}

/*
 * The input's fingerprint is made on a second thread (it only reads the
 * file) once pickle and directory are 4 MiB or more: SHA-256 over them
 * was 7% of a 400,000-tensor run, now off its path.  A pickle read whole
 * into memory is digested while it is parsed; one read from the file
 * through the window, from the end of its parse (fp_after_parse), and
 * collected by ck_ckpt_fingerprint (or the write, before it checks that
 * the input is unchanged): during the parse the second CPU reads the
 * directory and makes the arena's memory ready, and a run whose memory
 * the host must back afresh (a few seconds after a big process ended)
 * took 0.585 s against 0.525 with the digest there too.  The buffer is
 * allocated on the caller's thread (ck_mem_fail_at counts); with no
 * thread the digest is made in line.
 */
typedef struct ck_fp_job {
    int fd;
    uint64_t size;      /* the file's, digested first */
    const uint8_t *pkl; /* the pickle in memory (n bytes), or NULL */
    size_t n;
    fp_part_t part[2];  /* what is read from the file: the pickle unless */
    int np;             /* in memory, the directory */
    uint8_t *buf;
    char out[65];
    ck_err_t err;
    int rc, started, stop;
    pthread_t t;
} fp_job_t;

enum { FP_THREAD_MIN = 4 << 20 };

static void *fp_run(void *arg)
{
    fp_job_t *f = arg;

    f->rc = fp_digest(f->fd, f->size, f->pkl, f->n, f->part, f->np, f->buf,
                      &f->stop, f->out, &f->err);
    return NULL;
}

static int fp_start(fp_job_t *f, ck_ckpt_t *c, const uint8_t *pkl, size_t n,
                    uint64_t pkl_off, ck_err_t *err)
{
    memset(f, 0, sizeof(*f));
    f->fd = c->fd;
    f->size = c->st.size;
    f->pkl = pkl;
    if (pkl != NULL)
        f->n = n;
    else
        f->part[f->np++] = (fp_part_t){ pkl_off, n };
    f->part[f->np++] = (fp_part_t){ c->zip.cd_off, c->zip.cd_size };
    f->buf = ck_map_grow(NULL, 0, fp_chunk(f->part, f->np));
    if (f->buf == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    /* a small file's digest costs less than a thread (the daemon's
     * thousands of tiny checkpoints a second) */
    f->started = n + c->zip.cd_size >= FP_THREAD_MIN &&
                 pthread_create(&f->t, NULL, fp_run, f) == 0;
    if (!f->started)
        fp_run(f);
    return 0;
}

/* After the parse (its result rc): the fingerprint in c, or the first
 * error. */
static int fp_finish(fp_job_t *f, ck_ckpt_t *c, int rc, ck_err_t *err)
{
    if (f->buf == NULL)     /* never started */
        return rc;
    if (f->started)
        pthread_join(f->t, NULL);
    ck_map_free(f->buf, fp_chunk(f->part, f->np));
    f->buf = NULL;
    if (rc < 0)
        return rc;
    if (f->rc < 0)
        return ck_err_set(err, f->rc, "%s", f->err.msg);
    memcpy(c->fingerprint, f->out, sizeof(f->out));
    return 0;
}

/* A big pickle's fingerprint, begun after its parse: c->fp until
 * ck_ckpt_fingerprint collects it. */
static int fp_after_parse(ck_ckpt_t *c, size_t n, uint64_t pkl_off,
                          ck_err_t *err)
{
    fp_job_t *f = ck_malloc(sizeof(*f));
    int rc;

    if (f == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    rc = fp_start(f, c, NULL, n, pkl_off, err);
    if (rc < 0 || !f->started) {
        rc = fp_finish(f, c, rc, err);
        ck_free(f);
        return rc;
    }
    c->fp = f;
    return 0;
}

/* c->fp joined and freed (its result rc, see fp_finish). */
static int fp_collect(ck_ckpt_t *c, int rc, ck_err_t *err)
{
    rc = fp_finish(c->fp, c, rc, err);
    ck_free(c->fp);
    c->fp = NULL;
    return rc;
}

/* The fingerprint being made, given up (ck_ckpt_close). */
static void fp_abandon(ck_ckpt_t *c)
{
    ck_err_t e;

    if (c->fp == NULL)
        return;
    __atomic_store_n(&c->fp->stop, 1, __ATOMIC_RELAXED);
    (void)fp_collect(c, CK_ECANCELED, &e);
}

int ck_ckpt_unchanged(const ck_ckpt_t *c, ck_err_t *err)
{
    struct stat sb;

    if (fstat(c->fd, &sb) < 0 || (uint64_t)sb.st_size != c->st.size ||
        (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec !=
            c->st.mtime_ns)
        return ck_err_set(err, CK_ECHANGED,
                          "the input changed while it was read");
    return 0;
}

int ck_ckpt_fingerprint(ck_ckpt_t *c, ck_err_t *err)
{
    int rc;

    if (c->fp != NULL) {
        /* read apart from the parse: they must have read the same file */
        if ((rc = fp_collect(c, 0, err)) == 0 &&
            (rc = ck_ckpt_unchanged(c, err)) < 0)
            c->fingerprint[0] = '\0';
        return rc;
    }
    if (c->fingerprint[0] != '\0' || c->format != CK_FMT_SAFETENSORS)
        return 0;
    return ck_st_fingerprint_input(c, err);
}

/*
 * The directory's records, checked in the order their errors are
 * reported: one top folder, no TorchScript archive, byteorder, version.
 * *pk gets data.pkl's entry.
 */
static int zip_records(ck_ckpt_t *c, ck_zip_entry_t **pk, ck_err_t *err)
{
    char name[600];
    const char *first, *slash;
    ck_zip_entry_t *e;
    int rc;

    first = c->zip.e[0].name;
    slash = strchr(first, '/');
    if (slash == NULL || slash == first)
        return ck_err_set(err, CK_EFORMAT, "zip: %s is not in a top folder", first);
    c->top = ck_arena_strndup(&c->arena, first, (size_t)(slash - first));
    if (c->top == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    for (size_t i = 0; i < c->zip.n; i++) {
        const char *n = c->zip.e[i].name;
        size_t tl = strlen(c->top);

        if (strncmp(n, c->top, tl) != 0 || n[tl] != '/')
            return ck_err_set(err, CK_EFORMAT,
                              "zip: %s is outside the top folder %s/", n, c->top);
        if (strcmp(n + tl + 1, "constants.pkl") == 0)
            return ck_err_set(err, CK_EUNSUPPORTED,
                              "a TorchScript archive (constants.pkl), not a "
                              "torch.save checkpoint");
    }
    snprintf(name, sizeof(name), "%s/byteorder", c->top);
    e = ck_zip_find(&c->zip, name);
    if (e != NULL) {
        uint8_t *bo;

        rc = ck_zip_read(c->fd, e, 16, &bo, err);
        if (rc < 0)
            return rc;
        rc = ck_ckpt_byteorder(c, bo, (size_t)e->usize, err);
        ck_free(bo);
        if (rc < 0)
            return rc;
    }
    snprintf(name, sizeof(name), "%s/version", c->top);
    e = ck_zip_find(&c->zip, name);
    if (e == NULL) {
        snprintf(name, sizeof(name), "%s/.data/version", c->top);
        e = ck_zip_find(&c->zip, name);
    }
    if (e == NULL)
        return ck_err_set(err, CK_EFORMAT, "zip: no version record");
    {
        uint8_t *v;

        rc = ck_zip_read(c->fd, e, 32, &v, err);
        if (rc < 0)
            return rc;
        rc = ck_ckpt_version_ok(v, (size_t)e->usize, err);
        ck_free(v);
        if (rc < 0)
            return rc;
    }
    snprintf(name, sizeof(name), "%s/data.pkl", c->top);
    *pk = ck_zip_find(&c->zip, name);
    if (*pk == NULL)
        return ck_err_set(err, CK_EFORMAT, "zip: no %s record", name);
    return 0;
}

/*
 * data.pkl read and parsed, the input's fingerprint made beside it or
 * begun after it (see fp_job_t).  A stored one of more than a window is
 * read through the window (a pickle of 47 MiB for 4 * 10^5 storages was
 * a sixth of the parse's peak), and the fingerprint reads it from the
 * file too.
 */
enum { AHEAD_MIN = 8 << 20 }; /* pickle bytes */

static int zip_pickle(ck_ckpt_t *c, const ck_zip_entry_t *e, ck_err_t *err)
{
    fp_job_t fp;
    uint8_t *pkl = NULL;
    int rc, later, window = e->method == 0 && e->usize > c->pickle_window;

    if (window && (rc = ck_zip_check_size(e, c->lim.max_pickle_bytes, err)) < 0)
        return rc;
    if (!window &&
        (rc = ck_zip_read(c->fd, e, c->lim.max_pickle_bytes, &pkl, err)) < 0)
        return rc;
    c->pickle_bytes = (size_t)e->usize;
    /* a big pickle's graph, about twice its size (many-100000: 96 MiB
     * for 47), in huge blocks made ready ahead */
    if (window && e->usize >= AHEAD_MIN)
        ck_arena_ahead(&c->arena, 2 * (size_t)e->usize);
    /* a pickle read from the file is digested after its parse */
    later = window && e->usize + c->zip.cd_size >= FP_THREAD_MIN;
    rc = later ? 0 : fp_start(&fp, c, pkl, (size_t)e->usize, e->data_off, err);
    if (rc == 0 && window)
        rc = ck_pickle_read_fd(c->fd, e->data_off, e->usize, c->pickle_window,
                               &c->lim, &c->arena, &c->pk, err);
    else if (rc == 0)
        rc = ck_pickle_read(pkl, (size_t)e->usize, 1, &c->lim, &c->arena, &c->pk,
                            err);
    if (rc == -EAGAIN) /* within data.pkl, running short is its end */
        rc = ck_err_replace(err, CK_EFORMAT, "data.pkl: %s", err->msg);
    ck_arena_ahead(&c->arena, 0); /* the rest of the job is smaller */
    if (later && rc == 0)
        rc = fp_after_parse(c, (size_t)e->usize, e->data_off, err);
    else if (!later)
        rc = fp_finish(&fp, c, rc, err);
    ck_free(pkl);
    return rc;
}

/*
 * A directory of many records -- 400,000 storages: a tenth of the run,
 * reading and checking every entry and local header -- is read on a
 * second thread, into an arena of its own, while data.pkl is parsed:
 * torch writes data.pkl first, and the first entry alone says where it
 * is.  The errors are then reported in the order a plain open finds
 * them: the directory's first, the pickle's last.
 */
typedef struct {
    ck_ckpt_t *c;
    ck_zip_t zip;
    ck_zip_rec_t *recs;     /* ck_zip_open_numbered's table, or NULL (then
                               zip.e is its heap block of the others) */
    size_t nrecs;
    ck_err_t err;
    int rc;
    pthread_t t;
} zd_job_t;

enum { ZD_THREAD_MIN = 1024 }; /* entries */

static size_t key_number(const char *key);

/* N of a record named PREFIX N (prefix: TOP/data/, plen bytes), or
 * SIZE_MAX when it is not one of those. */
static size_t rec_number(const char *name, const char *prefix, size_t plen)
{
    return strncmp(name, prefix, plen) == 0 ? key_number(name + plen)
                                            : SIZE_MAX;
}

/*
 * On the directory's thread.  Torch's records TOP/data/N come out as a
 * table by N -- all a storage needs of its record (rec_storages) -- and
 * the directory keeps only its other entries (data.pkl, version ..., the
 * first): the 4 * 10^5 entries and names of 88 bytes each (34 MiB) that
 * a plain open reads, memory fresh to the second CPU while the parse
 * faults in its own, are never made.  The open's checks of the directory
 * (zip_records) get the same answers: a numbered record is inside the top
 * folder and none of the names they look for.  Another layout (not
 * torch's) is read whole.
 */
static void *zd_run(void *arg)
{
    zd_job_t *z = arg;
    ck_ckpt_t *c = z->c;

    if (ck_zip_open_numbered(c->fd, c->st.size, &z->zip, &z->recs,
                             &z->nrecs) != 0)
        z->rc = ck_zip_open(c->fd, c->st.size, &c->zarena, &z->zip, &z->err);
    return NULL;
}

/* 1 when name is TOP/data.pkl. */
static int data_pkl(const char *name)
{
    const char *slash = strchr(name, '/');

    return slash != NULL && slash != name && strcmp(slash, "/data.pkl") == 0;
}

/* 1 when the directory read whole, or 0 when it was read in line. */
static int open_zip_beside(ck_ckpt_t *c, int *rc, ck_err_t *err)
{
    ck_zip_entry_t first, *e;
    ck_err_t scratch = { 0 }, perr = { 0 };
    uint64_t count;
    zd_job_t zd;
    int prc;

    if (c->st.size < FP_THREAD_MIN ||
        ck_zip_first(c->fd, c->st.size, &c->arena, &c->zip, &count, &first,
                     &scratch) < 0 ||
        count < ZD_THREAD_MIN || !data_pkl(first.name))
        return 0; /* the plain open finds what is wrong, if anything */
    memset(&zd, 0, sizeof(zd));
    zd.c = c;
    if (pthread_create(&zd.t, NULL, zd_run, &zd) != 0)
        return 0;
    prc = zip_pickle(c, &first, &perr);
    pthread_join(zd.t, NULL);
    c->zip = zd.zip;
    c->recs = zd.recs;
    c->nrecs = zd.nrecs;
    c->zkept = zd.recs != NULL ? zd.zip.e : NULL;
    if (zd.rc < 0)
        *rc = ck_err_set(err, zd.rc, "%s", zd.err.msg);
    else if ((*rc = zip_records(c, &e, err)) < 0)
        ;
    else if (e->lho != first.lho || e->data_off != first.data_off ||
             e->csize != first.csize || e->usize != first.usize ||
             e->crc != first.crc || e->method != first.method)
        *rc = ck_err_set(err, CK_ECHANGED,
                         "zip: %s changed while it was read", e->name);
    else if ((*rc = prc) < 0)
        *err = perr;
    if (*rc < 0 && prc == 0) {
        /* refused before its pickle, as a plain open refuses it: no graph
         * (inspect shows what a refused file's graph holds) */
        memset(&c->pk, 0, sizeof(c->pk));
        c->pickle_bytes = 0;
    }
    return 1;
}

static int open_zip(ck_ckpt_t *c, ck_err_t *err)
{
    ck_zip_entry_t *e;
    int rc;

    if (open_zip_beside(c, &rc, err))
        return rc;
    rc = ck_zip_open(c->fd, c->st.size, &c->arena, &c->zip, err);
    if (rc < 0)
        return rc;
    rc = zip_records(c, &e, err);
    return rc < 0 ? rc : zip_pickle(c, e, err);
}

/* The legacy stream: magic, protocol, sys_info, object, keys, storages. */
static const uint8_t legacy_magic[10] = { 0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                          0x20, 0x6a, 0xa8, 0x50, 0x19 };

int ck_ckpt_legacy_pickles(ck_ckpt_t *c, const uint8_t *buf, size_t len,
                           ck_py_t **keys, size_t *data_start, ck_err_t *err)
{
    ck_pickle_t p[5];
    size_t pos = 0;
    int rc;

    for (int i = 0; i < 5; i++) {
        rc = ck_pickle_read(buf + pos, len - pos, 0, &c->lim, &c->arena, &p[i],
                            err);
        if (rc < 0)
            return rc;
        pos += p[i].consumed;
        if (i == 0) {
            ck_py_t *m = p[0].root;

            if (m->kind != CK_PY_INT || m->len != 10 ||
                memcmp(m->u.i.big, legacy_magic, 10) != 0)
                return ck_err_set(err, CK_EFORMAT,
                                  "a raw pickle, not a torch checkpoint "
                                  "(neither a zip archive nor a legacy file: "
                                  "bad magic number)");
        } else if (i == 1) {
            if (p[1].root->kind != CK_PY_INT || p[1].root->u.i.v != 1001)
                return ck_err_set(err, CK_EUNSUPPORTED,
                                  "legacy torch file of an unknown protocol");
        } else if (i == 2) {
            ck_py_t *le = ck_py_map_get(p[2].root, "little_endian", NULL);

            if (le == NULL || le->kind != CK_PY_BOOL)
                return ck_err_set(err, CK_EFORMAT, "legacy sys_info malformed");
            if (!le->b)
                return ck_err_set(err, CK_EUNSUPPORTED,
                                  "big-endian legacy checkpoint");
        }
    }
    c->pk = p[3];
    c->pk.consumed = pos;
    c->pickle_bytes = p[3].consumed;
    for (int i = 0; i < 5; i++)
        for (size_t j = 0; i != 3 && j < p[i].globals.n; j++) {
            ck_py_t *g = p[i].globals.v[j];

            /* ck_np_check sees the data pickle only */
            if (c->allow_numpy && ck_np_global(g->u.g.module, g->u.g.name))
                return ck_err_set(err, CK_EUNSAFE, "legacy header pickle "
                                  "names %s.%s", g->u.g.module, g->u.g.name);
            if (ck_py_vec_push(&c->arena, &c->pk.globals, g) < 0)
                return ck_err_set(err, CK_ENOMEM, "out of memory");
        }
    *keys = p[4].root;
    *data_start = pos;
    if ((*keys)->kind != CK_PY_LIST)
        return ck_err_set(err, CK_EFORMAT, "legacy storage key list malformed");
    return 0;
}

static int open_legacy(ck_ckpt_t *c, ck_py_t **keys, size_t *data_start,
                       ck_err_t *err)
{
    size_t len = 1u << 20;
    uint8_t *buf = NULL;
    int rc;

    for (;;) {
        uint8_t *nb;

        if (len > c->st.size)
            len = (size_t)c->st.size;
        nb = ck_realloc(buf, len ? len : 1);
        if (nb == NULL) {
            rc = ck_err_set(err, CK_ENOMEM, "out of memory");
            break;
        }
        buf = nb;
        rc = ck_pread_full(c->fd, buf, len, 0);
        if (rc < 0) {
            rc = ck_err_set(err, rc, "read: %s", strerror(-rc));
            break;
        }
        ck_arena_release(&c->arena);
        memset(&c->pk, 0, sizeof(c->pk));
        rc = ck_ckpt_legacy_pickles(c, buf, len, keys, data_start, err);
        if (rc == 0 && ck_fingerprint_parts(c->st.size, buf, *data_start,
                                            NULL, 0, c->fingerprint) < 0)
            rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        if (rc != -EAGAIN)
            break;
        if (len == c->st.size || len >= c->lim.max_pickle_bytes) {
            rc = ck_err_replace(err, CK_EFORMAT,
                                "legacy file truncated in its pickles");
            break;
        }
        ck_err_clear(err); /* read more of the file and parse again */
        len = len * 4 > c->lim.max_pickle_bytes ? (size_t)c->lim.max_pickle_bytes
                                                : len * 4;
    }
    ck_free(buf);
    return rc;
}

/*
 * Storage keys as torch.save writes them, "0", "1", ... (no sign, no
 * leading zero), are found in an array, not hashed: at 10^5 tensors the
 * map was a sixth of a run.  A key whose number is far beyond the
 * storages' count goes to the map, so no key can make the array large.
 * And while storage i has key "i" -- torch.save numbers storages in the
 * order its pickle first names them, the order the scan adds them -- not
 * even the array holds them (by_num_ident): 8 bytes a storage, 32 MiB at
 * 4 * 10^6 storages, at the job's peak.
 */
static size_t key_number(const char *key)
{
    size_t k = 0;

    if (key[0] < '0' || key[0] > '9' || (key[0] == '0' && key[1] != '\0'))
        return SIZE_MAX;
    for (const char *p = key; *p; p++) {
        if (*p < '0' || *p > '9' || k > (SIZE_MAX >> 5))
            return SIZE_MAX;
        k = k * 10 + (size_t)(*p - '0');
    }
    return k;
}

/* key_number of storage i's key, known without reading it for those
 * by_num_ident holds (their keys lie all over the graph). */
static size_t storage_number(const ck_ckpt_t *c, size_t i)
{
    return i < c->by_num_ident ? i : key_number(ck_ckpt_storage(c, i)->key);
}

size_t ck_ckpt_key_index(const ck_ckpt_t *c, const char *key)
{
    size_t k = key_number(key);

    if (k < c->by_num_ident)
        return k;
    if (k < c->by_num_cap && c->by_num[k] != 0)
        return c->by_num[k] - 1;
    return c->by_key.n ? ck_strmap_get(&c->by_key, key) : SIZE_MAX;
}

static ck_storage_t *find_storage(ck_ckpt_t *c, const char *key)
{
    size_t i = ck_ckpt_key_index(c, key);

    return i < c->nstorages ? ck_ckpt_storage(c, i) : NULL;
}

/* Index storage i under its key, unless the key is there (the first
 * wins): 0 or CK_ENOMEM. */
static int index_key(ck_ckpt_t *c, const char *key, size_t i)
{
    size_t k = key_number(key);

    if (k != SIZE_MAX && k < 8 * (c->nstorages + 64)) {
        if (k < c->by_num_ident)
            return 0;
        if (k == i && i == c->by_num_ident &&
            (k >= c->by_num_cap || c->by_num[k] == 0) &&
            (c->by_key.n == 0 || ck_strmap_get(&c->by_key, key) == SIZE_MAX)) {
            c->by_num_ident++;
            return 0;
        }
        if (k >= c->by_num_cap) {
            size_t cap = c->by_num_cap ? c->by_num_cap : 256, *nb;

            while (cap <= k)
                cap *= 2;
            nb = ck_realloc(c->by_num, cap * sizeof(*nb));
            if (nb == NULL)
                return CK_ENOMEM;
            memset(nb + c->by_num_cap, 0, (cap - c->by_num_cap) * sizeof(*nb));
            c->by_num = nb;
            c->by_num_cap = cap;
        }
        if (c->by_num[k] == 0 &&
            (c->by_key.n == 0 || ck_strmap_get(&c->by_key, key) == SIZE_MAX))
            c->by_num[k] = i + 1;
        return 0;
    }
    if (ck_ckpt_key_index(c, key) != SIZE_MAX)
        return 0;
    return ck_strmap_add(&c->by_key, &c->arena, key, i);
}

/* A storage's record is allocated 4 * 10^5 times for 10^5 tensors. */
_Static_assert(sizeof(void *) != 8 || sizeof(ck_storage_t) == 48,
               "ck_storage_t grew");
/* and a tensor's as often */
_Static_assert(sizeof(void *) != 8 || sizeof(ck_tensor_t) == 64,
               "ck_tensor_t grew");

/* Append a copy of st to the storages (a new chunk when the last is full,
 * the chunks' pointers grown by doubling) and its key to the index. */
int ck_ckpt_add_storage(ck_ckpt_t *c, const ck_storage_t *st, ck_err_t *err)
{
    size_t k = c->nstorages / CK_STORAGE_CHUNK;

    if (c->nstorages >= UINT32_MAX - 1) /* a persistent id's len names it */
        return ck_err_set(err, CK_ELIMIT, "more than %u storages",
                          UINT32_MAX - 1);
    if (c->nstorages % CK_STORAGE_CHUNK == 0) {
        if (k == c->stchunks_cap) {
            size_t cap = k ? k * 2 : 16;
            ck_storage_t **nc = ck_arena_grow(&c->arena, c->stchunks,
                                              k * sizeof(*nc),
                                              cap * sizeof(*nc));

            if (nc == NULL)
                return ck_err_set(err, CK_ENOMEM, "out of memory");
            c->stchunks = nc;
            c->stchunks_cap = cap;
        }
        c->stchunks[k] = ck_arena_alloc(&c->arena, CK_STORAGE_CHUNK *
                                                       sizeof(ck_storage_t));
        if (c->stchunks[k] == NULL)
            return ck_err_set(err, CK_ENOMEM, "out of memory");
    }
    if (index_key(c, st->key, c->nstorages) < 0)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    *ck_ckpt_storage(c, c->nstorages++) = *st;
    return 0;
}

/* Storages of a legacy file: <int64 numel><bytes> per key, in key order. */
static int legacy_storages(ck_ckpt_t *c, ck_py_t *keys, uint64_t pos,
                            ck_err_t *err)
{
    for (size_t i = 0; i < keys->u.seq.n; i++) {
        ck_py_t *k = keys->u.seq.v[i];
        ck_storage_t *st;
        uint8_t nb[8];
        uint64_t numel = 0, end;

        if (k->kind != CK_PY_STR)
            return ck_err_set(err, CK_EFORMAT, "legacy storage key is not a str");
        st = find_storage(c, k->u.s.s);
        if (ck_pread_full(c->fd, nb, 8, pos) < 0)
            return ck_err_set(err, CK_EFORMAT,
                              "legacy file truncated at storage %s", k->u.s.s);
        for (int j = 7; j >= 0; j--)
            numel = numel << 8 | nb[j];
        if (st == NULL)
            return ck_err_set(err, CK_EFORMAT,
                              "legacy storage %s is not referenced by the pickle",
                              k->u.s.s);
        if (numel != st->numel)
            return ck_err_set(err, CK_EFORMAT,
                              "legacy storage %s holds %llu elements, its "
                              "persistent id says %llu",
                              k->u.s.s, (unsigned long long)numel,
                              (unsigned long long)st->numel);
        st->src = CK_SRC_LEGACY;
        st->off = pos + 8;
        if (ck_add_u64(st->off, ck_storage_nbytes(st), &end) < 0 ||
            end > c->st.size)
            return ck_err_set(err, CK_EFORMAT,
                              "legacy file truncated in storage %s", k->u.s.s);
        pos = end;
    }
    if (pos != c->st.size)
        return ck_err_set(err, CK_EFORMAT,
                          "legacy file has %llu bytes after its last storage",
                          (unsigned long long)(c->st.size - pos));
    for (size_t i = 0; i < c->nstorages; i++) {
        const ck_storage_t *st = ck_ckpt_storage(c, i);

        if (st->src != CK_SRC_LEGACY)
            return ck_err_set(err, CK_EFORMAT,
                              "legacy file has no data for storage %s",
                              st->key);
    }
    return 0;
}

/* ---- scanning the graph ----------------------------------------------- */

typedef struct {
    ck_ckpt_t *c;
    ck_err_t *err;
    uint32_t gen;
    ck_tensor_t *t;
    size_t nt, tcap;
    size_t nd;  /* entries of c->dims used */
    ck_py_t *last_fn;   /* the last call's callable, and its */
    int last_version;   /* ck_ckpt_tensor_call */
    const ck_py_t *last_cls;   /* the last storage class, and */
    const ck_dtype_t *last_dt; /* its dtype */
    int legacy;
    int first; /* first scan: storages are registered */
    int keep;  /* tensors are recorded (else only checked) */
    uint32_t maxd;  /* the deepest place a node was met at */
    int cycle;      /* a tuple, set or call met again inside its own items
                       or arguments */
    int sets;       /* a set or frozenset met */
    size_t seen_nt, seen_nd; /* tensors met, recorded or not, and dims */
} scan_t;

static int as_u64(const ck_py_t *p, uint64_t *v)
{
    if (p == NULL || p->kind != CK_PY_INT || p->len || p->u.i.v < 0)
        return -1;
    *v = (uint64_t)p->u.i.v;
    return 0;
}

/* The dtype a storage class names (NULL: UntypedStorage); one global node
 * serves every storage of a class, so the last is kept. */
static int storage_dtype(scan_t *s, const ck_py_t *cls, const ck_dtype_t **dt)
{
    if (cls == s->last_cls) {
        *dt = s->last_dt;
        return 0;
    }
    if (cls->kind != CK_PY_GLOBAL || strcmp(cls->u.g.module, "torch") != 0)
        return ck_err_set(s->err, CK_EFORMAT, "storage class is not a torch class");
    *dt = NULL;
    if (strcmp(cls->u.g.name, "UntypedStorage") != 0 &&
        (*dt = ck_dtype_by_storage(cls->u.g.name)) == NULL)
        return ck_err_set(s->err, CK_EUNSUPPORTED,
                          "unknown storage class torch.%s", cls->u.g.name);
    s->last_cls = cls;
    s->last_dt = *dt;
    return 0;
}

/* The storage a persistent id names, registered on the first scan. */
static int scan_persid(scan_t *s, ck_py_t *node)
{
    ck_ckpt_t *c = s->c;
    ck_py_t *pid, *v[6], key;
    const ck_dtype_t *dt = NULL;
    ck_storage_t *st;
    uint64_t numel, nbytes;
    size_t n, idx;
    int rc;

    if (!(node->flags & CK_PY_F_PIDC) && node->u.pid->kind != CK_PY_TUPLE)
        return ck_err_set(s->err, CK_EFORMAT, "persistent id is not a tuple");
    if (ck_py_pid_items(node, v, 6, &n, &key) < 0 || n < 5 ||
        (n == 6) != s->legacy || !ck_py_str_eq(v[0], "storage"))
        return ck_err_set(s->err, CK_EFORMAT,
                          "persistent id is not ('storage', class, key, "
                          "location, numel)");
    if ((rc = storage_dtype(s, v[1], &dt)) < 0)
        return rc;
    if (v[2]->kind != CK_PY_STR || v[3]->kind != CK_PY_STR ||
        as_u64(v[4], &numel) < 0)
        return ck_err_set(s->err, CK_EFORMAT, "malformed storage persistent id");
    /* the writer renames the key in place unless it is met elsewhere too
     * (a hand-made pickle's memo can make it the location, say) */
    for (size_t i = 0; i < n; i++)
        if (i != 2)
            v[i]->flags |= CK_PY_F_MET;
    if (n == 6) {
        if (v[5]->kind != CK_PY_NONE)
            return ck_err_set(s->err, CK_EUNSUPPORTED,
                              "legacy storage views are not supported");
        /* the zip format's persistent id: a copy of the first five, the
         * tuple itself may be a value too (a hand-made memo) */
        pid = ck_py_new(&c->arena, CK_PY_TUPLE);
        if (pid == NULL || ck_py_vec_reserve(&c->arena, &pid->u.seq, 5) < 0)
            return ck_err_set(s->err, CK_ENOMEM, "out of memory");
        memcpy(pid->u.seq.v, v, 5 * sizeof(*v));
        pid->u.seq.n = 5;
        node->u.pid = pid;
    }
    if (ck_mul_u64(numel, dt ? dt->itemsize : 1, &nbytes) < 0)
        return ck_err_set(s->err, CK_EFORMAT, "storage %s size overflows",
                          v[2]->u.s.s);
    /* a later scan finds the storage the last one tied to this node, when
     * the id still names it (a cast's split gives a new id and a new key) */
    idx = ck_ckpt_pid_index(node);
    st = ck_ckpt_pid_storage(c, node);
    if (s->first || st == NULL || st->key != v[2]->u.s.s) {
        idx = ck_ckpt_key_index(c, v[2]->u.s.s);
        st = idx < c->nstorages ? ck_ckpt_storage(c, idx) : NULL;
    }
    if (st == NULL) {
        if (!s->first)
            return ck_err_set(s->err, CK_EFORMAT, "unknown storage %s",
                              v[2]->u.s.s);
        ck_storage_t new = { .key = v[2]->u.s.s, .numel = numel,
                             .newkey = -1 };

        ck_storage_set_dtype(&new, dt);
        idx = c->nstorages;
        if ((rc = ck_ckpt_add_storage(c, &new, s->err)) < 0)
            return rc;
        st = ck_ckpt_storage(c, idx);
    } else if (ck_storage_dtype(st) != dt || st->numel != numel) {
        return ck_err_set(s->err, CK_EFORMAT,
                          "storage %s is used as %s of %llu and as %s of %llu",
                          st->key, st->dt ? ck_storage_dtype(st)->storage
                                          : "UntypedStorage",
                          (unsigned long long)st->numel,
                          dt ? dt->storage : "UntypedStorage",
                          (unsigned long long)numel);
    }
    st->refs++;
    ck_ckpt_pid_tie(node, idx);
    return 0;
}

/* An array's next room: doubled while small, then by half: realloc moves
 * a big one by remapping its pages, and the room a doubling leaves unused
 * (a quarter on average) would be at the job's peak. */
static size_t grown(size_t cap, size_t least)
{
    return cap < least ? least : cap < 65536 ? 2 * cap : cap + cap / 2;
}

/*
 * A tuple of small ints appended to c->dims (on the heap, reused by every
 * scan: the arena would keep each scan's copy): *out points at them until
 * the array grows again, do_scan points every tensor at its own once the
 * walk is over.  0, CK_EFORMAT or CK_ENOMEM.
 */
static int int_tuple(scan_t *s, ck_py_t *t, size_t *n, int64_t **out)
{
    ck_ckpt_t *c = s->c;

    if (t == NULL || t->kind != CK_PY_TUPLE)
        return CK_EFORMAT;
    *n = t->u.seq.n;
    if (c->dims == NULL || c->dims_cap - s->nd < *n) { /* no NULL + 0 */
        size_t cap = c->dims_cap;
        int64_t *nd;

        while (cap - s->nd < *n)
            cap = grown(cap, 256);
        nd = ck_realloc(c->dims, cap * sizeof(*nd));
        if (nd == NULL)
            return CK_ENOMEM;
        c->dims = nd;
        c->dims_cap = cap;
    }
    *out = c->dims + s->nd;
    for (size_t i = 0; i < *n; i++) {
        ck_py_t *x = t->u.seq.v[i];

        if (x->kind != CK_PY_INT || x->len)
            return CK_EFORMAT;
        (*out)[i] = x->u.i.v;
    }
    s->nd += *n;
    return 0;
}

/* _rebuild_tensor(storage, offset, size, stride), _v2 (.., requires_grad,
 * hooks[, metadata]) and _v3 (.., hooks, dtype[, metadata]). */
static int scan_tensor(scan_t *s, ck_py_t *node, int version)
{
    uint32_t na = 0;
    ck_py_t **a = ck_py_args(node, &na);
    size_t n = na, min = version == 1 ? 4 : version == 2 ? 6 : 7;
    ck_tensor_t t = { 0 };
    size_t ndim = 0;
    uint64_t extent = 0, storage_elems;
    int rc;

    if (a == NULL || n < min || n > min + 1 || a[0]->kind != CK_PY_PERSID ||
        (t.st = ck_ckpt_pid_storage(s->c, a[0])) == NULL)
        return ck_err_set(s->err, CK_EFORMAT, "malformed tensor arguments");
    t.node = node;
    t.dtype = ck_storage_dtype(t.st);
    if (version == 3) {
        if (a[6]->kind != CK_PY_GLOBAL || strcmp(a[6]->u.g.module, "torch") != 0 ||
            (t.dtype = ck_dtype_by_name(a[6]->u.g.name)) == NULL)
            return ck_err_set(s->err, CK_EUNSUPPORTED, "unknown tensor dtype");
    }
    if (t.dtype == NULL)
        return ck_err_set(s->err, CK_EFORMAT,
                          "tensor on an untyped storage without a dtype");
    rc = as_u64(a[1], &t.offset) < 0 ? CK_EFORMAT : 0;
    if (rc == 0)
        rc = int_tuple(s, a[2], &ndim, &t.size);
    t.ndim = (uint32_t)ndim; /* (a tuple's count: 32 bits) */
    if (rc == 0)
        rc = int_tuple(s, a[3], &n, &t.stride);
    if (rc == 0)
        t.size = t.stride - t.ndim; /* the array may have moved */
    if (rc == 0 && n != t.ndim)
        rc = CK_EFORMAT;
    if (rc == CK_ENOMEM)
        return ck_err_set(s->err, rc, "out of memory");
    if (rc < 0)
        return ck_err_set(s->err, CK_EFORMAT,
                          "tensor offset, size or stride malformed");
    if (version > 1 && a[4]->kind == CK_PY_BOOL)
        t.requires_grad = a[4]->b;
    t.numel = 1;
    for (size_t i = 0; i < t.ndim; i++) {
        uint64_t span;

        if (t.size[i] < 0 || t.stride[i] < 0)
            return ck_err_set(s->err, CK_EFORMAT,
                              "tensor with a negative size or stride");
        if (ck_mul_u64(t.numel, (uint64_t)t.size[i], &t.numel) < 0)
            return ck_err_set(s->err, CK_EFORMAT, "tensor element count overflows");
        if (t.size[i] > 0 &&
            (ck_mul_u64((uint64_t)(t.size[i] - 1), (uint64_t)t.stride[i], &span) < 0 ||
             ck_add_u64(extent, span, &extent) < 0))
            return ck_err_set(s->err, CK_EFORMAT, "tensor extent overflows");
    }
    storage_elems = t.st->dt ? t.st->numel : t.st->numel / t.dtype->itemsize;
    if (t.st->dt != 0 && ck_storage_dtype(t.st) != t.dtype)
        return ck_err_set(s->err, CK_EFORMAT, "tensor dtype differs from its storage");
    if (t.numel > 0 &&
        (ck_add_u64(extent, t.offset, &extent) < 0 || extent >= storage_elems))
        return ck_err_set(s->err, CK_EFORMAT,
                          "tensor view (offset %llu, last element %llu) lies "
                          "outside storage %s of %llu elements",
                          (unsigned long long)t.offset,
                          (unsigned long long)extent, t.st->key,
                          (unsigned long long)storage_elems);
    s->seen_nt++;
    s->seen_nd += 2 * (size_t)t.ndim;
    if (!s->keep) {
        s->nd -= 2 * (size_t)t.ndim;
        return 0;
    }
    if (s->nt == s->tcap) {
        size_t cap = grown(s->tcap, 64);
        /* on the heap: the arena would keep every outgrown copy */
        ck_tensor_t *nt = ck_realloc(s->t, cap * sizeof(*nt));

        if (nt == NULL)
            return ck_err_set(s->err, CK_ENOMEM, "out of memory");
        s->t = nt;
        s->tcap = cap;
    }
    s->t[s->nt++] = t;
    return 0;
}

static int walk(scan_t *s, ck_py_t *p, uint32_t depth);

static int too_deep(scan_t *s, uint32_t depth)
{
    if (depth > s->c->lim.max_depth)
        return ck_err_set(s->err, CK_ELIMIT, "object nesting deeper than %u",
                          s->c->lim.max_depth);
    return 0;
}

/* p met at depth (for write_safe): 1 when it was met before -- a cycle
 * when it is being walked -- else it is marked met and 0. */
static int met_before(scan_t *s, ck_py_t *p, uint32_t depth)
{
    if (depth > s->maxd)
        s->maxd = depth;
    p->flags |= CK_PY_F_MET;
    if (p->wgen != s->gen) {
        p->wgen = s->gen;
        return 0;
    }
    s->cycle |= (p->flags & CK_PY_F_WALKING) != 0;
    return 1;
}

static int walk_vec(scan_t *s, const ck_py_vec_t *v, uint32_t depth)
{
    for (size_t i = 0; i < v->n; i++) {
        int rc = walk(s, v->v[i], depth + 1);

        if (rc < 0)
            return rc;
    }
    return 0;
}

/*
 * A call's arguments.  Those of a tensor's call are walked but for its
 * offset, size, stride and requires_grad (ints, tuples of ints, a bool:
 * scan_tensor reads and checks them, and nothing under them is a
 * storage), four of the ten nodes a tensor has.
 */
static int walk_args(scan_t *s, ck_py_t *call, int version, uint32_t depth)
{
    ck_py_t *args = NULL, **v;
    uint32_t n;
    int rc = 0;

    if (call->flags & CK_PY_F_ARGC) {
        /* no tuple (pickle.h): met here alone, at its depth */
        if ((rc = too_deep(s, depth)) < 0)
            return rc;
        if (depth > s->maxd)
            s->maxd = depth;
    } else {
        args = call->u.o.args;
        if (version <= 0 || args == NULL || args->kind != CK_PY_TUPLE)
            return walk(s, args, depth);
        if (met_before(s, args, depth))
            return 0;
        args->flags |= CK_PY_F_WALKING;
    }
    v = ck_py_args(call, &n);
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        ck_py_t *a = v[i];

        /* size and stride: tuples scan_tensor checks are of ints */
        if (version > 0 && ck_tensor_arg_plain(a, i))
            continue;
        rc = walk(s, a, depth + 1);
    }
    if (args != NULL)
        args->flags &= (uint8_t)~CK_PY_F_WALKING;
    return rc;
}

/* The items of a tuple or set, marked as being walked: met again among
 * them, it is a cycle the writer would follow once more than the walk
 * (it memoizes these after their items). */
static int walk_cyclic(scan_t *s, ck_py_t *p, uint32_t depth)
{
    int rc;

    p->flags |= CK_PY_F_WALKING;
    rc = walk_vec(s, &p->u.seq, depth);
    p->flags &= (uint8_t)~CK_PY_F_WALKING;
    return rc;
}

static int walk(scan_t *s, ck_py_t *p, uint32_t depth)
{
    int rc, version;

    if (p == NULL)
        return 0;
    if ((rc = too_deep(s, depth)) < 0)
        return rc;
    if (met_before(s, p, depth))
        return 0;
    switch ((ck_py_kind_t)p->kind) {
    case CK_PY_SET:
    case CK_PY_FROZENSET:
        s->sets = 1;
        /* fall through */
    case CK_PY_TUPLE:
        return walk_cyclic(s, p, depth);
    case CK_PY_LIST:
    case CK_PY_DICT:
        return walk_vec(s, &p->u.seq, depth);
    case CK_PY_PERSID:
        return scan_persid(s, p);
    case CK_PY_REDUCE:
    case CK_PY_NEWOBJ:
        version = 0;
        if (p->kind == CK_PY_REDUCE) {
            /* one global node serves every tensor of a torch.save pickle:
             * its version is looked up once */
            if (p->u.o.fn != s->last_fn) {
                s->last_fn = p->u.o.fn;
                s->last_version = ck_ckpt_tensor_call(p);
            }
            version = s->last_version;
        }
        /* the writer memoizes a call after its callable and arguments */
        p->flags |= CK_PY_F_WALKING;
        if ((rc = walk(s, p->u.o.fn, depth + 1)) >= 0)
            rc = walk_args(s, p, version, depth + 1);
        p->flags &= (uint8_t)~CK_PY_F_WALKING;
        if (rc < 0 ||
            (rc = walk_vec(s, &ck_py_after(p)->list, depth)) < 0 ||
            (rc = walk_vec(s, &ck_py_after(p)->dict, depth)) < 0 ||
            (rc = walk(s, ck_py_after(p)->state, depth + 1)) < 0)
            return rc;
        return version > 0 ? scan_tensor(s, p, version) : 0;
    default:
        return 0;
    }
}

/* arr (*cap entries of size, used in use) reallocated to fit when more
 * than 4096 entries and an eighth of it are unused (an array doubled
 * while filled is a quarter empty on average); the array, moved or not. */
static void *shrink(void *arr, size_t *cap, size_t used, size_t least,
                    size_t size)
{
    size_t want = used > least ? used : least;
    void *p;

    if (*cap <= want || *cap - want <= 4096 || *cap - want <= *cap / 8 ||
        (p = ck_realloc(arr, want * size)) == NULL)
        return arr;
    *cap = want;
    return p;
}

/*
 * After a scan that found far fewer tensors than an earlier one (the chain
 * dropped an optimizer's state), the arrays give back the room they no
 * longer use: it would stay allocated through the write, the job's peak.
 * Nodes of dropped tensors keep their index (len), which ck_ckpt_tensor
 * checks against the array before reading it.
 */
static void shrink_scan(ck_ckpt_t *c, scan_t *s)
{
    c->tensors = s->t = shrink(s->t, &s->tcap, s->nt, 64, sizeof(*s->t));
    c->tensors_cap = s->tcap;
    c->dims = shrink(c->dims, &c->dims_cap, s->nd, 256, sizeof(*c->dims));
}

/*
 * Whether writing the graph as read can be refused, known from the walk
 * (ck_ckpt_validate then skips its scratch write: a sixth of a run over
 * 10^5 tensors).  The writer (pickle_write.c) walks the graph as the scan
 * does: the same root, the same items in the same order, each node
 * expanded where it is first met, so at the same depth; the scan checks
 * every place a node is met against max_depth, the writer fails only past
 * it.  Where they differ the writer goes deeper, at a leaf, by a bounded
 * step: bytes are written as a call (their text 2 deeper; a bytearray's
 * bytes, a call again, 4), a persistent id's tuple (its items, strs and
 * ints, 2 deeper), a value node is written anew wherever it is met (its
 * ints, or an OrderedDict()'s global and empty tuple, 1 deeper), a
 * tensor's size and stride tuples the scan does not
 * walk (ints, 3 below the call).  Unbounded only where the writer expands
 * a node twice: a tuple or set is memoized after its items, a call after
 * its callable and arguments, so one met again among them is expanded
 * again -- a cycle through one (a set that holds itself: the writer
 * recurses until the limit); and where a set is, as a call whose argument
 * holds a list of its items, 2 deeper at each set on the way down: sets
 * (rare in a checkpoint) leave it to the scratch write.  And a str of 4 GiB
 * or more it refuses -- bytes of 2 GiB are written as up to twice as much
 * UTF-8 text --, possible only with max_string_bytes raised so far.
 */
static int write_safe(const ck_ckpt_t *c, const scan_t *s)
{
    return !s->cycle && !s->sets && s->maxd + 4 <= c->lim.max_depth &&
           c->lim.max_string_bytes <= UINT32_MAX / 2;
}

/* Room for as many tensors as the last scan met (one that recorded
 * none, with tensors_later, counted them): a chain rarely adds any. */
static int reserve_scan(ck_ckpt_t *c)
{
    if (c->tensors_cap < c->seen_tensors) {
        ck_tensor_t *t = ck_realloc(c->tensors,
                                    c->seen_tensors * sizeof(*t));

        if (t == NULL)
            return CK_ENOMEM;
        c->tensors = t;
        c->tensors_cap = c->seen_tensors;
    }
    if (c->dims_cap < c->seen_dims) {
        int64_t *d = ck_realloc(c->dims, c->seen_dims * sizeof(*d));

        if (d == NULL)
            return CK_ENOMEM;
        c->dims = d;
        c->dims_cap = c->seen_dims;
    }
    return 0;
}

static int do_scan(ck_ckpt_t *c, int first, ck_err_t *err)
{
    scan_t s = { 0 };
    int rc;

    s.c = c;
    s.err = err;
    s.gen = ck_py_next_gen();
    s.legacy = c->format == CK_FMT_LEGACY && first;
    s.first = first;
    s.keep = !c->tensors_later || (!first && c->want_tensors);
    if (s.keep && reserve_scan(c) < 0)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    /* the last scan's array is refilled, not left in the arena */
    s.t = c->tensors;
    s.tcap = c->tensors_cap;
    c->ntensors = 0;
    for (size_t i = 0; i < c->nstorages; i++)
        ck_ckpt_storage(c, i)->refs = 0;
    rc = walk(&s, c->pk.root, 0);
    c->tensors = s.t;
    c->tensors_cap = s.tcap;
    if (rc < 0)
        return rc;
    c->ntensors = s.nt;
    c->seen_tensors = s.seen_nt;
    c->seen_dims = s.seen_nd;
    c->stale = 0;
    c->unrecorded = !s.keep;
    if (first)
        c->write_safe = write_safe(c, &s);
    shrink_scan(c, &s);
    for (size_t i = 0, d = 0; i < s.nt; i++) {
        s.t[i].node->len = (uint32_t)i; /* (ck_ckpt_tensor checks it) */
        s.t[i].size = c->dims + d;
        s.t[i].stride = c->dims + d + s.t[i].ndim;
        d += 2 * (size_t)s.t[i].ndim;
    }
    return 0;
}

int ck_ckpt_scan(ck_ckpt_t *c, ck_err_t *err)
{
    return do_scan(c, 0, err);
}

int ck_ckpt_scan_refused(ck_ckpt_t *c, ck_err_t *err)
{
    if (c->pk.root == NULL || c->ntensors > 0 || c->nstorages > 0)
        return 0;
    return do_scan(c, 1, err);
}

int ck_ckpt_bind(ck_ckpt_t *c, const char *const *allow, ck_err_t *err)
{
    int rc = check_globals(c, allow, err);

    return rc < 0 ? rc : do_scan(c, 1, err);
}

/* st's bytes are e's (NULL: no record data/KEY): where they are and
 * their CRC-32 kept, or the entry itself when deflated.  0 or CK_EFORMAT. */
static int take_record(ck_storage_t *st, const ck_zip_entry_t *e,
                       ck_err_t *err)
{
    if (e == NULL)
        return ck_err_set(err, CK_EFORMAT, "record data/%s is missing",
                          st->key);
    if (e->usize != ck_storage_nbytes(st))
        return ck_err_set(err, CK_EFORMAT,
                          "data/%s: record holds %llu bytes, storage needs %llu",
                          st->key, (unsigned long long)e->usize,
                          (unsigned long long)ck_storage_nbytes(st));
    st->src = CK_SRC_ZIP;
    st->crc = e->crc;
    st->deflated = e->method != 0;
    if (st->deflated)
        st->entry = e;
    else
        st->off = e->data_off;
    return 0;
}

/* zip_storages through the table ck_zip_open_numbered made: the same records,
 * the same errors. */
static int rec_storages(ck_ckpt_t *c, ck_err_t *err)
{
    for (size_t i = 0; i < c->nstorages; i++) {
        ck_storage_t *st = ck_ckpt_storage(c, i);
        size_t k = storage_number(c, i);
        const ck_zip_rec_t *r = k < c->nrecs ? &c->recs[k] : NULL;
        ck_zip_entry_t e = { .method = 0 };
        int rc;

        if (r != NULL && r->set) {
            e.usize = r->usize;
            e.crc = r->crc;
            e.data_off = r->off;
        }
        rc = take_record(st, r != NULL && r->set ? &e : NULL, err);
        if (rc < 0)
            return rc;
    }
    ck_map_free(c->recs, c->nrecs * sizeof(*c->recs));
    c->recs = NULL;
    return 0;
}

/*
 * Each storage's record.  Records named TOP/data/N (torch's) are found
 * through an array by N built in one pass over the directory, others by
 * name: at 10^5 storages a name lookup each was a tenth of a run.  A
 * storage keeps where its bytes are and their CRC-32; a deflated one (no
 * torch.save writes them) its entry.
 */
static int zip_storages(ck_ckpt_t *c, ck_err_t *err)
{
    char prefix[600];
    size_t plen, cap = 8 * (c->nstorages + 64);
    size_t *by_num;
    int deflated = 0;

    if (c->recs != NULL)
        return rec_storages(c, err);
    if ((by_num = ck_calloc(cap, sizeof(*by_num))) == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    plen = (size_t)snprintf(prefix, sizeof(prefix), "%s/data/", c->top);
    for (size_t i = 0; i < c->zip.n && plen < sizeof(prefix); i++) {
        const char *name = c->zip.e[i].name;
        size_t k;

        if ((k = rec_number(name, prefix, plen)) < cap && by_num[k] == 0)
            by_num[k] = i + 1;
    }
    for (size_t i = 0; i < c->nstorages; i++) {
        ck_storage_t *st = ck_ckpt_storage(c, i);
        size_t k = storage_number(c, i);
        const ck_zip_entry_t *e;
        char name[600];

        if (k < cap && by_num[k] != 0) {
            e = &c->zip.e[by_num[k] - 1];
        } else {
            snprintf(name, sizeof(name), "%s/data/%s", c->top, st->key);
            e = ck_zip_find(&c->zip, name);
        }
        if (take_record(st, e, err) < 0) {
            ck_free(by_num);
            return err->code;
        }
        deflated |= st->deflated;
    }
    ck_free(by_num);
    if (c->zip.arena == &c->zarena && !deflated) {
        /* the directory read on its own thread, 4 * 10^5 entries and
         * names of 88 bytes each, is needed no more */
        ck_arena_release(&c->zarena);
        ck_zip_forget(&c->zip);
    }
    return 0;
}

void ck_ckpt_init(ck_ckpt_t *c, const char *path, const ck_open_opts_t *o)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->path = path;
    c->lim = o->lim;
    c->allow_numpy = o->allow_numpy;
    c->tensors_later = o->tensors_later;
    c->pickle_window = o->pickle_window ? o->pickle_window : CK_PICKLE_WINDOW;
}

static int open_checked(ck_ckpt_t *c, const char *path, const ck_open_opts_t *o,
                        ck_err_t *err);

int ck_ckpt_open(ck_ckpt_t *c, const char *path, const ck_open_opts_t *o,
                 ck_err_t *err)
{
    int rc = open_checked(c, path, o, err);

    if (rc < 0 && rc != CK_EUNSAFE && rc != CK_ENOMEM && c->fd >= 0)
        rc = ck_ckpt_name_danger(c, o->allow, rc, err);
    return rc;
}

static int open_checked(ck_ckpt_t *c, const char *path, const ck_open_opts_t *o,
                        ck_err_t *err)
{
    struct stat sb;
    uint8_t magic[9] = { 0 };
    ck_py_t *keys = NULL;
    size_t data_start = 0;
    int rc;

    ck_ckpt_init(c, path, o);
    /* O_NONBLOCK: a FIFO put in the file's place must not hang the open */
    c->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (c->fd < 0)
        return ck_err_set(err, -errno, "%s", strerror(errno));
    if (fstat(c->fd, &sb) < 0)
        return ck_err_set(err, -errno, "%s", strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return ck_err_set(err, CK_EFORMAT, "not a regular file");
    if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK) < 0)
        return ck_err_set(err, -errno, "%s", strerror(errno));
    c->st.size = (uint64_t)sb.st_size;
    c->st.dev = sb.st_dev;
    c->st.ino = sb.st_ino;
    c->st.mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
    if (c->st.size == 0)
        return ck_err_set(err, CK_EFORMAT, "empty file");
    rc = ck_pread_full(c->fd, magic, c->st.size < 9 ? (size_t)c->st.size : 9, 0);
    if (rc < 0)
        return ck_err_set(err, rc, "read: %s", strerror(-rc));
    if (ck_st_sniff(magic, sizeof(magic), c->st.size)) {
        c->format = CK_FMT_SAFETENSORS;
        rc = ck_st_open(c, err);
        if (rc == 0)
            rc = do_scan(c, 1, err);
        return rc;
    }
    if (memcmp(magic, "PK\x03\x04", 4) == 0) {
        c->format = CK_FMT_ZIP;
        rc = open_zip(c, err);
        if (rc == CK_EFORMAT && strstr(err->msg, "no end of central") != NULL)
            return ck_err_replace(err, CK_EFORMAT, "truncated: a zip of %llu "
                                  "bytes without its end records (cut short, "
                                  "or still being written)",
                                  (unsigned long long)c->st.size);
    } else if (magic[0] != 0x80 && magic[0] != 'L' && magic[0] != 'I' &&
               !ck_ckpt_is_tar(c)) {
        /* a legacy stream starts with its magic number: PROTO at protocol
         * 2 and up, a LONG or INT before */
        uint8_t head[64];
        size_t n = c->st.size < sizeof(head) ? (size_t)c->st.size
                                             : sizeof(head);
        char what[96];

        rc = ck_pread_full(c->fd, head, n, 0);
        if (rc < 0)
            return ck_err_set(err, rc, "read: %s", strerror(-rc));
        ck_ckpt_looks_like(head, n, what, sizeof(what));
        return ck_err_set(err, CK_EFORMAT, "not a PyTorch checkpoint: neither "
                          "a zip nor a legacy torch stream; it is %s", what);
    } else {
        if (ck_ckpt_is_tar(c))
            return ck_err_set(err, CK_EUNSUPPORTED,
                              "reads as a tar archive (the checkpoint format "
                              "of torch < 0.4, which torch.load would "
                              "unpickle instead), not supported");
        c->format = CK_FMT_LEGACY;
        rc = open_legacy(c, &keys, &data_start, err);
    }
    if (rc < 0)
        return rc;
    rc = ck_ckpt_bind(c, o->allow, err);
    if (rc < 0)
        return rc;
    if (c->format == CK_FMT_ZIP)
        return zip_storages(c, err);
    return legacy_storages(c, keys, data_start, err);
}

const char *ck_ckpt_format_name(const ck_ckpt_t *c)
{
    switch (c->format) {
    case CK_FMT_ZIP: return "zip";
    case CK_FMT_LEGACY: return "legacy";
    case CK_FMT_SAFETENSORS: return "safetensors";
    }
    return "?";
}

void ck_ckpt_close(ck_ckpt_t *c)
{
    fp_abandon(c);
    ck_ckpt_stream_close(c);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    ck_free(c->tensors);
    ck_free(c->dims);
    ck_free(c->by_num);
    ck_map_free(c->recs, c->nrecs * sizeof(*c->recs));
    ck_free(c->zkept);
    c->tensors = NULL;
    c->dims = NULL;
    c->by_num = NULL;
    c->recs = NULL;
    c->zkept = NULL;
    memset(&c->zip, 0, sizeof(c->zip));
    c->by_num_cap = c->by_num_ident = 0;
    c->ntensors = c->tensors_cap = c->dims_cap = 0;
    ck_arena_release(&c->arena);
    ck_arena_release(&c->zarena);
}

/* ---- paths ------------------------------------------------------------ */

ck_py_t *ck_ckpt_get(ck_ckpt_t *c, const char *path)
{
    ck_py_t *cur = c->pk.root;
    char key[1024];

    if (strcmp(path, "/") == 0)
        return cur; /* the top itself */
    while (cur != NULL && *path != '\0') {
        const char *slash = strchr(path, '/');
        size_t n = slash ? (size_t)(slash - path) : strlen(path);

        if (n >= sizeof(key))
            return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        cur = ck_py_map_get(cur, key, NULL);
        path += n + (slash != NULL);
    }
    return cur;
}

int ck_ckpt_tensor_call(const ck_py_t *node)
{
    /* every call of a graph comes here, once per walk: the name's common
     * prefix first, the module once */
    static const struct {
        const char *rest;   /* after "_rebuild_" */
        int version;
    } rebuild[] = {
        { "tensor_v2", 2 }, { "tensor", 1 }, { "tensor_v3", 3 },
        { "parameter", -1 },
    };
    const ck_py_t *fn;

    if (node == NULL || node->kind != CK_PY_REDUCE)
        return 0;
    fn = node->u.o.fn;
    if (fn == NULL || fn->kind != CK_PY_GLOBAL ||
        strncmp(fn->u.g.name, "_rebuild_", 9) != 0 ||
        strcmp(ck_py_module3(fn->u.g.module), "torch._utils") != 0)
        return 0;
    for (size_t i = 0; i < CK_ARRAY_SIZE(rebuild); i++) {
        if (strcmp(fn->u.g.name + 9, rebuild[i].rest) == 0)
            return rebuild[i].version;
    }
    return 0;
}

ck_tensor_t *ck_ckpt_tensor(ck_ckpt_t *c, ck_py_t *node)
{
    ck_tensor_t *t;
    ck_py_t **v;
    uint32_t n;

    if (node != NULL && node->kind == CK_PY_REDUCE &&
        ck_py_global_is(node->u.o.fn, "torch._utils", "_rebuild_parameter") &&
        (v = ck_py_args(node, &n)) != NULL && n >= 1)
        node = v[0];
    if (node == NULL || node->kind != CK_PY_REDUCE ||
        node->len >= c->ntensors)
        return NULL;
    t = &c->tensors[node->len];
    return t->node == node ? t : NULL;
}

