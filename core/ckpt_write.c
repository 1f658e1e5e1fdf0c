/*
 * ckpt_write.c -- writing the model as torch.save lays out a checkpoint:
 * storages renumbered in the pickle's order, data.pkl first, records
 * 64-byte aligned, bytes copied from the input in bounded chunks, and the
 * file made atomically (temporary file, fsync, rename, fsync of the
 * folder).  ck_ckpt_write has one exit; on any failure nothing is left.
 * ck_ckpt_write_fd writes in one pass to a pipe instead, and a stream
 * input's storages are written in the order they arrive (stream_storages).
 */
#define _GNU_SOURCE
#include "ckpt.h"

#include "fsutil.h"
#include "numpy.h"

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

#define COPY_BYTES (1u << 20) /* zip_write.c's copy buffer, w->buf */

typedef struct {
    ck_ckpt_t *c;
    ck_storage_t **order;
    size_t n;
    ck_py_t **keys; /* by new key: the str a copied id names it by */
    char rekey[32]; /* the new key (renumber_cb's) */
} renum_t;

/*
 * A persistent id whose key str or tuple the pickle also holds elsewhere
 * (CK_PY_F_MET: a hand-made memo; torch.save never shares them) gets a
 * tuple of its own naming the storage by a str of its own, one per
 * storage so that ids of one storage still share it as torch's do.
 */
static int own_id(renum_t *r, ck_py_t *node, ck_storage_t *st,
                  const char *key, ck_err_t *err)
{
    ck_arena_t *a = &r->c->arena;
    ck_py_t *pid = node->u.pid, *t;

    if (r->keys == NULL &&
        (r->keys = ck_calloc(r->c->nstorages + 1, sizeof(*r->keys))) == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    if (r->keys[st->newkey] == NULL &&
        (r->keys[st->newkey] = ck_py_str(a, key, strlen(key))) == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    if (node->flags & CK_PY_F_PIDC) {
        node->u.pc.key.p = r->keys[st->newkey]; /* its tuple is its own */
        return 0;
    }
    if ((t = ck_py_new(a, CK_PY_TUPLE)) == NULL ||
        ck_py_vec_reserve(a, &t->u.seq, pid->u.seq.n) < 0)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    memcpy(t->u.seq.v, pid->u.seq.v, pid->u.seq.n * sizeof(*t->u.seq.v));
    t->u.seq.n = pid->u.seq.n;
    t->u.seq.v[2] = r->keys[st->newkey];
    node->u.pid = t;
    return 0;
}

/*
 * Storage keys become 0..n-1 in order of first reference.  An id holding
 * its key's text (CK_PY_F_PIDK) keeps it -- the storage's record points
 * at it -- and the writer writes the new key in its place (*rekey); other
 * ids are renamed in place.  (So after a write the graph's keys are some
 * old, some new: nothing reads them then but another write, which gives
 * the same bytes.)
 */
static int renumber_cb(void *ud, ck_py_t *node, const char **rekey,
                       ck_err_t *err)
{
    renum_t *r = ud;
    ck_storage_t *st = ck_ckpt_pid_storage(r->c, node);
    ck_py_t *v[5], *key, text;
    size_t n;
    int met;
    char *buf = r->rekey; /* the new key, read by the writer for an id
                             holding its key's text */

    if (st == NULL || ck_py_pid_items(node, v, 5, &n, &text) < 0 || n != 5)
        return ck_err_set(err, CK_EFORMAT, "persistent id not scanned");
    met = !(node->flags & CK_PY_F_PIDC) && (node->u.pid->flags & CK_PY_F_MET);
    if (st->newkey < 0) {
        if (r->n >= INT32_MAX)
            return ck_err_set(err, CK_ELIMIT, "more than %d storages",
                              INT32_MAX);
        st->newkey = (int32_t)r->n;
        r->order[r->n++] = st;
    }
    ck_fmt_u64(buf, (uint64_t)st->newkey);
    key = v[2];
    if (ck_py_str_eq(key, buf))
        return 0;
    if (node->flags & CK_PY_F_PIDK) {
        *rekey = buf;
        return 0;
    }
    if (met || (key->flags & CK_PY_F_MET))
        return own_id(r, node, st, buf, err);
    key->u.s.s = ck_arena_strdup(&r->c->arena, buf);
    key->len = strlen(buf);
    if (key->u.s.s == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    return 0;
}

static int put_record(ck_zipw_t *w, const char *top, const char *name,
                      const void *p, size_t n, ck_err_t *err)
{
    char full[600];
    int rc;

    snprintf(full, sizeof(full), "%s/%s", top, name);
    if ((rc = ck_zipw_begin(w, full, n, err)) < 0 ||
        (rc = ck_zipw_data(w, p, n, err)) < 0)
        return rc;
    return ck_zipw_end(w, err);
}

static int zipw_cb(void *arg, const void *p, size_t n, ck_err_t *err)
{
    return ck_zipw_data(arg, p, n, err);
}

static int copy_storage(ck_ckpt_t *c, ck_zipw_t *w, ck_storage_t *st,
                        ck_err_t *err)
{
    uint64_t nbytes = ck_storage_nbytes(st);

    if (st->nconv > 0) /* cast: converted chunk by chunk */
        return ck_ckpt_storage_stream(c, st, 0, st->numel, zipw_cb, w, err);
    switch (st->src) {
    case CK_SRC_ZIP:
        if (st->deflated)
            return ck_zipw_inflate(w, c->fd, st->entry, err);
        /* a zero CRC may mean torch skipped it (set_crc32_options) */
        return ck_zipw_copy(w, c->fd, st->off, nbytes,
                            st->crc != 0 || nbytes == 0, st->crc, err);
    case CK_SRC_LEGACY:
        return ck_zipw_copy(w, c->fd, st->off, nbytes, 0, 0, err);
    case CK_SRC_MEM:
        return ck_zipw_data(w, st->mem, (size_t)nbytes, err);
    case CK_SRC_STREAM: /* read in order: see stream_storages */
        return ck_ckpt_storage_stream(c, st, 0, st->numel, zipw_cb, w, err);
    }
    return ck_err_set(err, CK_EFORMAT, "storage without a source");
}

static int begin_storage(ck_ckpt_t *c, ck_zipw_t *w, const char *top,
                         const ck_storage_t *st, ck_err_t *err)
{
    char name[640];
    size_t n = strlen(top);

    if (n + sizeof("/data/") + 20 > sizeof(name))
        return ck_err_set(err, CK_EFORMAT, "record name too long");
    memcpy(name, top, n);
    memcpy(name + n, "/data/", 6);
    ck_fmt_u64(name + n + 6, (uint64_t)st->newkey);
    if (c->cancel != NULL && __atomic_load_n(c->cancel, __ATOMIC_RELAXED))
        return ck_err_set(err, CK_ECANCELED, "abandoned: ckprep is stopping");
    return ck_zipw_begin(w, name, ck_storage_nbytes(st), err);
}

/*
 * A stream input's storages, in the order their records come, each
 * written as it arrives (the records' order is free in a zip; names and
 * the pickle are the file mode's); then the new ones (head_init).
 */
static int stream_storages(ck_ckpt_t *c, ck_zipw_t *w, const char *top,
                           const renum_t *r, ck_err_t *err)
{
    ck_storage_t *st;
    size_t done = 0;
    int rc, crc_given;

    while ((rc = ck_ckpt_stream_next(c, &st, &crc_given, err)) == 1) {
        /* the input's CRC-32 (in its descriptor) is the output's, when
         * its writer computed them and the bytes pass unchanged */
        int raw = st->nconv == 0 && crc_given;
        uint32_t crc = 0;

        rc = begin_storage(c, w, top, st, err);
        if (rc == 0 && raw && w->buf == NULL &&
            (w->buf = ck_malloc(COPY_BYTES)) == NULL)
            rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        if (rc == 0)
            rc = raw ? ck_ckpt_stream_copy(c, st, w, w->buf, err)
                     : copy_storage(c, w, st, err);
        if (rc == 0)
            rc = ck_ckpt_stream_end(c, st, &crc, err);
        if (rc == 0 && raw)
            ck_zipw_set_crc(w, crc);
        if (rc == 0)
            rc = ck_zipw_end(w, err);
        if (rc < 0)
            return rc;
        done++;
    }
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < r->n; i++) {
        st = r->order[i];
        if (st->src == CK_SRC_STREAM)
            continue;
        if ((rc = begin_storage(c, w, top, st, err)) < 0 ||
            (rc = copy_storage(c, w, st, err)) < 0 ||
            (rc = ck_zipw_end(w, err)) < 0)
            return rc;
        done++;
    }
    if (done != r->n)
        return ck_err_set(err, CK_EFORMAT, "the stream ended with %zu of the "
                          "%zu storages data.pkl needs", done, r->n);
    return 0;
}

/* The output pickle, drained into its record as it is made. */
typedef struct {
    ck_zipw_t *w;
    ck_err_t err;
} pkl_sink_t;

static int pkl_drain(void *ud, const uint8_t *p, size_t n)
{
    pkl_sink_t *k = ud;

    return ck_zipw_data(k->w, p, n, &k->err);
}

/*
 * data.pkl.  Into a file it goes to its record while the writer makes it,
 * its sizes written in the local header afterwards, so the pickle is never
 * whole in memory (tens of MiB for 10^5 tensors); streamed (no seeks) or
 * planned against a streamed input, it is made first, whole.
 */
static int pickle_later(ck_ckpt_t *c, ck_zipw_t *w, const char *top,
                        renum_t *r, ck_buf_t *pkl, uint64_t *pkl_off,
                        ck_err_t *err)
{
    char full[600];
    pkl_sink_t k = { .w = w };
    int rc;

    snprintf(full, sizeof(full), "%s/data.pkl", top);
    w->later_max = c->pickle_later_max;
    if ((rc = ck_zipw_begin(w, full, CK_ZIPW_LATER, err)) < 0)
        return rc;
    *pkl_off = w->off;
    pkl->drain = pkl_drain;
    pkl->drain_ud = &k;
    rc = ck_pickle_write(c->pk.root, &c->lim, &c->arena, renumber_cb, r, pkl,
                         err);
    if (rc == 0)
        rc = ck_buf_drain(pkl);
    if (rc < 0 && k.err.code < 0) /* the record's write failed first */
        return ck_err_set(err, k.err.code, "%s", k.err.msg);
    return rc < 0 ? rc : ck_zipw_end(w, err);
}

/*
 * A pickle of 4 GiB or more (max_pickle_bytes raised; protocol 2 can make
 * a pickle several times the one read) does not fit the local header
 * written before it: the output starts over, empty, and the pickle is made
 * whole first, its record then getting zip64 sizes.
 */
static int start_over(ck_ckpt_t *c, ck_zipw_t *w, renum_t *r, ck_buf_t *pkl,
                      ck_err_t *err)
{
    ck_buf_release(pkl);
    memset(pkl, 0, sizeof(*pkl));
    r->n = 0;
    for (size_t i = 0; i < c->nstorages; i++)
        ck_ckpt_storage(c, i)->newkey = -1;
    ck_err_clear(err);
    return ck_zipw_restart(w, err);
}

static int put_pickle(ck_ckpt_t *c, ck_zipw_t *w, const char *top, renum_t *r,
                      ck_buf_t *pkl, uint64_t *pkl_off, ck_err_t *err)
{
    int rc;

    if (!w->stream && c->stream == NULL) {
        rc = pickle_later(c, w, top, r, pkl, pkl_off, err);
        if (rc >= 0 || !w->later_over)
            return rc;
        if ((rc = start_over(c, w, r, pkl, err)) < 0)
            return rc;
    }
    rc = ck_pickle_write(c->pk.root, &c->lim, &c->arena, renumber_cb, r,
                         pkl, err);
    if (rc == 0 && c->stream != NULL)
        rc = ck_ckpt_stream_plan(c, r->order, r->n, err);
    return rc < 0 ? rc : put_record(w, top, "data.pkl", pkl->data,
                                    pkl->len, err);
}

/* Where a storage's bytes lie in the input: its records are copied in
 * that order, those of no input (made in memory) last. */
static uint64_t input_place(const ck_storage_t *st)
{
    if (st->src == CK_SRC_ZIP)
        return st->deflated ? st->entry->lho : st->off;
    return st->src == CK_SRC_LEGACY ? st->off : UINT64_MAX;
}

/*
 * The records in the order their bytes lie in the input, not in their
 * new keys' (a zip's records may come in any order; torch.save's own are
 * in the order of their keys as text).  torch.save lays out "0", "1",
 * "10", "100", "1000" ... one after the other, so the storages of one
 * state dict, numbered in a row, lie all over the input: copied by new
 * key, 87,500 of them read a 256 KiB window 631 times over (158 MiB read
 * for 0.7 MB, a tenth of the write), in the input's order 196 times.  A
 * stream input's records are written as they come (stream_storages): in
 * its order too.  Out of memory, the order stays as it is.
 */
static void order_by_place(renum_t *r)
{
    struct {
        uint64_t place;
        ck_storage_t *st;
    } *by;

    if (r->n < 2 || (by = ck_map_grow(NULL, 0, r->n * sizeof(*by))) == NULL)
        return;
    for (size_t i = 0; i < r->n; i++) {
        by[i].place = input_place(r->order[i]);
        by[i].st = r->order[i];
    }
    if (ck_sort_by_key(by, r->n, sizeof(*by)) == 0)
        for (size_t i = 0; i < r->n; i++)
            r->order[i] = by[i].st;
    ck_map_free(by, r->n * sizeof(*by));
}

static int write_zip(ck_ckpt_t *c, int fd, void *arg, ck_write_info_t *info,
                     ck_err_t *err)
{
    const char *top = arg;
    ck_buf_t pkl = { 0 };
    uint64_t pkl_off = 0;
    renum_t r = { 0 };
    ck_zipw_t w;
    int rc;

    ck_zipw_init(&w, fd);
    w.cancel = c->cancel;
    w.yield = c->yield;
    w.stream = info->stream;
    r.c = c;
    r.order = ck_calloc(c->nstorages + 1, sizeof(*r.order));
    if (r.order == NULL) {
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < c->nstorages; i++)
        ck_ckpt_storage(c, i)->newkey = -1;
    if ((rc = put_pickle(c, &w, top, &r, &pkl, &pkl_off, err)) < 0)
        goto out;
    if (ck_zipw_reserve(&w, r.n + 2) < 0) { /* byteorder, storages, version */
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = put_record(&w, top, "byteorder", "little", 6, err)) < 0)
        goto out;
    if (c->stream == NULL)
        order_by_place(&r);
    else if ((rc = stream_storages(c, &w, top, &r, err)) < 0)
        goto out;
    for (size_t i = 0; i < r.n; i++) {
        ck_storage_t *st = r.order[i];

        if (c->stream == NULL &&
            ((rc = begin_storage(c, &w, top, st, err)) < 0 ||
             (rc = copy_storage(c, &w, st, err)) < 0 ||
             (rc = ck_zipw_end(&w, err)) < 0))
            goto out;
        info->storage_bytes += ck_storage_nbytes(st);
    }
    info->nstorages = r.n;
    if ((rc = put_record(&w, top, "version", "3\n", 2, err)) < 0 ||
        (rc = ck_zipw_finish(&w, err)) < 0)
        goto out;
    info->size = w.off;
    if (w.stream)
        rc = ck_ckpt_fingerprint_mem(w.off, pkl.data, pkl.len, w.cd.data,
                                     w.cd.len, info->fingerprint,
                                     err);
    else if (pkl.drain != NULL) { /* see fp_later */
        info->fp_later = 1;
        info->fp_part[0][0] = pkl_off;
        info->fp_part[0][1] = w.e[0].size;
        info->fp_part[1][0] = w.cd_off;
        info->fp_part[1][1] = w.cd_size;
    } else
        rc = ck_ckpt_zip_fingerprint(fd, w.off, pkl.data, pkl.len, w.cd_off,
                                     w.cd_size, info->fingerprint, err);
out:
    ck_zipw_release(&w);
    ck_buf_release(&pkl);
    ck_free(r.order);
    ck_free(r.keys);
    return rc;
}

/* ---- no mapping with two equal keys ---------------------------------- */

/*
 * Whatever produced the graph (a plugin's rename, a strip of prefixes), a
 * dict or OrderedDict with two equal keys must not be written: torch.load
 * would keep one value and silently lose the other.  Str keys are compared
 * through a hash map per mapping; other keys (ints, tuples ...) with
 * ck_py_equal against each other.  The error names the mapping's path.
 */
typedef struct {
    ck_ckpt_t *c;
    uint32_t gen;
    ck_arena_t scratch;   /* one mapping's, released after it */
    /* the str keys met in the mapping: open addressing over (the key's
     * hash's high half << 32 | its pair's index + 1), at most half full:
     * 8 bytes a slot, where a string map's 24 made its probes a tenth of
     * a run over 10^5 tensors (cache misses) */
    uint64_t *seen;
    size_t seen_cap;      /* slots allocated (a power of two) */
    char path[1024];
    ck_err_t *err;
} uniq_t;

static int uniq_walk(uniq_t *u, ck_py_t *p, uint32_t depth);

static void key_text(const ck_py_t *k, char *out, size_t n)
{
    if (k->kind == CK_PY_STR)
        snprintf(out, n, "%.*s", (int)(k->len > 200 ? 200 : k->len),
                 k->u.s.s);
    else if (k->kind == CK_PY_INT && k->len == 0)
        snprintf(out, n, "%lld", (long long)k->u.i.v);
    else
        snprintf(out, n, "<a key of kind %d>", k->kind);
}

/* A key's hash and its place in the mapping, for sorting other keys (by
 * hash, stably: ck_sort_by_key). */
typedef struct {
    uint64_t h;
    size_t i;
} uniq_key_t;

/*
 * u->seen empty with room for n keys: *mask set, the slots in use below
 * it.  The last mapping's slots are kept and cleared when they are at
 * most sixteen times the room needed (a model's state dicts, each of 10^5
 * keys, made a map anew each: fresh pages each time), else made anew.
 * 0 or CK_ENOMEM.
 */
static int uniq_seen(uniq_t *u, size_t n, size_t *mask)
{
    size_t cap = 64;

    while (cap < 2 * n)
        cap *= 2;
    if (cap > u->seen_cap || u->seen_cap > 16 * cap) {
        ck_map_free(u->seen, u->seen_cap * sizeof(*u->seen));
        u->seen_cap = 0;
        if ((u->seen = ck_map_grow(NULL, 0, cap * sizeof(*u->seen))) == NULL)
            return CK_ENOMEM;
        u->seen_cap = cap;
    }
    memset(u->seen, 0, cap * sizeof(*u->seen));
    *mask = cap - 1;
    return 0;
}

/* The first key of m's pairs (by pair) equal to plain str k (item i,
 * hash h), or i itself once it is recorded. */
static size_t uniq_str(uniq_t *u, size_t mask, const ck_py_vec_t *m,
                       const ck_py_t *k, size_t i, uint64_t h)
{
    uint64_t tag = h >> 32 << 32;
    size_t at;

    for (at = (size_t)h & mask; u->seen[at] != 0; at = (at + 1) & mask) {
        const ck_py_t *o;

        if ((u->seen[at] & ~(uint64_t)UINT32_MAX) != tag)
            continue;
        o = m->v[2 * ((u->seen[at] & UINT32_MAX) - 1)];
        if (o->len == k->len && memcmp(o->u.s.s, k->u.s.s, k->len) == 0)
            return 2 * (size_t)((u->seen[at] & UINT32_MAX) - 1);
    }
    u->seen[at] = tag | (uint64_t)(i / 2 + 1);
    return i;
}

/*
 * The hash of the key of item i, a str, in ahead[], its slot asked of the
 * cache (its probe comes UNIQ_AHEAD keys later): a probe was a cache miss
 * each, most of the check's time.  Whether the str is plain is the
 * probe's to ask.
 */
#define UNIQ_AHEAD 8

static void uniq_ahead(uniq_t *u, size_t mask, const ck_py_vec_t *m,
                       size_t i, uint64_t *ahead)
{
    const ck_py_t *k;
    uint64_t h;

    if (i + 1 >= m->n || (k = m->v[i])->kind != CK_PY_STR)
        return;
    h = ck_hash_str(k->u.s.s, k->len);
    ahead[i / 2 % UNIQ_AHEAD] = h;
    __builtin_prefetch(&u->seen[(size_t)h & mask]);
}

/*
 * The first item (i, pair index times two) of m whose key equals an earlier
 * one (*j, the first such), or SIZE_MAX.  Plain str keys meet through
 * u->seen; the others are sorted by ck_py_hash and compared with
 * ck_py_equal inside a run of one hash, so 10^5 int keys cost a sort, not
 * 10^10 comparisons.
 */
static size_t uniq_first_dup(uniq_t *u, const ck_py_vec_t *m, size_t *j)
{
    uniq_key_t small[16], *other;
    size_t nother = 0, first = SIZE_MAX, mask = 0;
    uint64_t ahead[UNIQ_AHEAD], h = 0;

    other = m->n <= 32 ? small
                       : ck_arena_alloc(&u->scratch, (m->n / 2 + 1) * sizeof(*other));
    if (other == NULL || (m->n > 32 && uniq_seen(u, m->n / 2, &mask) < 0))
        return SIZE_MAX - 1;
    for (size_t i = 0; m->n > 32 && i < 2 * UNIQ_AHEAD; i += 2)
        uniq_ahead(u, mask, m, i, ahead);
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        ck_py_t *k = m->v[i];
        size_t at = SIZE_MAX;

        if (m->n > 32) { /* every pair's turn, whatever its key */
            h = ahead[i / 2 % UNIQ_AHEAD];
            uniq_ahead(u, mask, m, i + 2 * UNIQ_AHEAD, ahead);
        }
        if (!ck_py_str_plain(k)) {
            other[nother].h = ck_py_hash(k, 3);
            other[nother++].i = i;
            continue;
        }
        if (m->n <= 32) { /* a few keys: no map */
            for (size_t p = 0; p < i && at == SIZE_MAX; p += 2)
                if (ck_py_str_plain(m->v[p]) &&
                    strcmp(m->v[p]->u.s.s, k->u.s.s) == 0)
                    at = p;
            if (at == SIZE_MAX)
                continue;
            first = i;
            *j = at;
            break;
        }
        if ((at = uniq_str(u, mask, m, k, i, h)) != i) {
            first = i;
            *j = at;
            break;
        }
    }
    if (ck_sort_by_key(other, nother, sizeof(*other)) < 0)
        return SIZE_MAX - 1;
    for (size_t r = 0; r < nother;) {
        size_t end = r + 1;

        while (end < nother && other[end].h == other[r].h)
            end++;
        for (size_t a = r + 1; a < end && other[a].i < first; a++)
            for (size_t b = r; b < a; b++) {
                int same = ck_py_equal(m->v[other[a].i], m->v[other[b].i],
                                       u->c->lim.max_depth);

                if (same < 0)
                    return SIZE_MAX - 1;
                if (same) {
                    first = other[a].i;
                    *j = other[b].i;
                    break;
                }
            }
        r = end;
    }
    return first;
}

static int uniq_map(uniq_t *u, const ck_py_vec_t *m)
{
    size_t i, j = 0;
    char a[256];

    i = uniq_first_dup(u, m, &j);
    ck_arena_release(&u->scratch);
    if (i == SIZE_MAX - 1)
        return ck_err_set(u->err, CK_ENOMEM, "out of memory");
    if (i == SIZE_MAX)
        return 0;
    key_text(m->v[i], a, sizeof(a));
    return ck_err_set(u->err, CK_EFORMAT,
                      "'%s' would hold the key '%s' twice (items %zu and "
                      "%zu): torch.load would keep one and lose the other",
                      u->path[0] ? u->path : "/", a, j / 2, i / 2);
}

/* Whether p holds anything the check looks at: a tensor's call (empty
 * items, no state) or a str does not, and costs no path. */
static int uniq_may_hold(const ck_py_t *p)
{
    switch (p == NULL ? CK_PY_NONE : (ck_py_kind_t)p->kind) {
    case CK_PY_DICT:
    case CK_PY_TUPLE:
    case CK_PY_LIST:
        return p->u.seq.n > 0;
    case CK_PY_REDUCE:
    case CK_PY_NEWOBJ:
        return ck_py_after(p) != &ck_py_after_none;
    default:
        return 0;
    }
}

/* s (n bytes, up to a NUL) appended to the path at len, truncated as
 * snprintf truncates: the path's new length.  (Not snprintf: the path of
 * each of an optimizer's 10^5 per-parameter dicts is made on the way
 * down, a fifth of the check.) */
static size_t path_put(uniq_t *u, size_t len, const char *s, size_t n)
{
    const char *nul = memchr(s, '\0', n);
    size_t room = sizeof(u->path) - 1 - len;

    if (nul != NULL)
        n = (size_t)(nul - s);
    if (n > room)
        n = room;
    memcpy(u->path + len, s, n);
    u->path[len + n] = '\0';
    return len + n;
}

static int uniq_vec(uniq_t *u, const ck_py_vec_t *v, int pairs, uint32_t depth)
{
    size_t len = strlen(u->path);
    int rc = 0;

    for (size_t i = 0; i < v->n && rc == 0; i++) {
        ck_py_t *k = pairs && (i % 2) ? v->v[i - 1] : NULL;
        size_t at = len;

        if ((pairs && !(i % 2)) || !uniq_may_hold(v->v[i]))
            continue; /* keys hold no mapping worth naming */
        if (len > 0)
            at = path_put(u, at, "/", 1);
        if (k != NULL && k->kind == CK_PY_STR) {
            path_put(u, at, k->u.s.s, k->len);
        } else {
            char num[24];

            path_put(u, at, num, ck_fmt_u64(num, pairs ? i / 2 : i));
        }
        rc = uniq_walk(u, v->v[i], depth + 1);
        u->path[len] = '\0';
    }
    return rc;
}

static int uniq_walk(uniq_t *u, ck_py_t *p, uint32_t depth)
{
    int rc;

    if (p == NULL || p->wgen == u->gen || depth > u->c->lim.max_depth)
        return 0;
    p->wgen = u->gen;
    switch ((ck_py_kind_t)p->kind) {
    case CK_PY_DICT:
        rc = uniq_map(u, &p->u.seq);
        return rc < 0 ? rc : uniq_vec(u, &p->u.seq, 1, depth);
    case CK_PY_TUPLE:
    case CK_PY_LIST:
        return uniq_vec(u, &p->u.seq, 0, depth);
    case CK_PY_REDUCE:
    case CK_PY_NEWOBJ:
        rc = uniq_map(u, &ck_py_after(p)->dict);
        if (rc == 0)
            rc = uniq_vec(u, &ck_py_after(p)->dict, 1, depth);
        if (rc == 0)
            rc = uniq_vec(u, &ck_py_after(p)->list, 0, depth);
        if (rc == 0)
            rc = uniq_walk(u, ck_py_after(p)->state, depth + 1);
        return rc;
    default:
        return 0;
    }
}

int ck_ckpt_check_keys(ck_ckpt_t *c, ck_err_t *err)
{
    uniq_t u;
    int rc;

    memset(&u, 0, sizeof(u));
    u.c = c;
    u.gen = ck_py_next_gen();
    u.err = err;
    rc = uniq_walk(&u, c->pk.root, 0);
    ck_arena_release(&u.scratch);
    ck_map_free(u.seen, u.seen_cap * sizeof(*u.seen));
    return rc;
}

/* The validation's pickle is written and dropped as it goes. */
static int drop_bytes(void *ud, const uint8_t *p, size_t n)
{
    (void)ud, (void)p, (void)n;
    return 0;
}

int ck_ckpt_validate(ck_ckpt_t *c, ck_err_t *err)
{
    ck_buf_t pkl = { .drain = drop_bytes };
    int rc = c->allow_numpy ? ck_np_check(c, err) : 0;

    if (rc == 0)
        rc = ck_ckpt_check_keys(c, err);
    if (rc == 0 && !c->write_safe)
        rc = ck_pickle_write(c->pk.root, &c->lim, &c->arena, NULL, NULL, &pkl,
                             err);
    ck_buf_release(&pkl);
    return rc;
}

/* The fingerprint a body left to the write (info->fp_later). */
static int fingerprint_later(int fd, ck_write_info_t *info, ck_err_t *err)
{
    if (!info->fp_later)
        return 0;
    info->fp_later = 0;
    return ck_ckpt_zip_fingerprint_at(fd, info->size, info->fp_part[0][0],
                                      info->fp_part[0][1],
                                      info->fp_part[1][0],
                                      info->fp_part[1][1],
                                      info->fingerprint, err);
}

/*
 * The fsync of a written file with the fingerprint a body left to the
 * write made beside it, on a second thread: SHA-256 over the pickle and
 * the directory read back (an output of 87,500 storages: 15 ms) while the
 * disk takes the file (36 ms with the rename and the folder's sync).  0,
 * or the first error (err).
 */
typedef struct {
    int fd, rc;
    ck_write_info_t *info;
    ck_err_t err;
} fp_sync_t;

enum { FP_SYNC_MIN = 4 << 20 }; /* bytes to digest: below, in line */

static void *fp_sync_run(void *arg)
{
    fp_sync_t *f = arg;

    f->rc = fingerprint_later(f->fd, f->info, &f->err);
    return NULL;
}

static int sync_with_fp(int fd, const char *out_path, ck_write_info_t *info,
                        ck_err_t *err)
{
    fp_sync_t f = { fd, 0, info, { 0 } };
    pthread_t t;
    /* a small file's digest costs less than a thread */
    int started = info->fp_later &&
                  info->fp_part[0][1] + info->fp_part[1][1] >= FP_SYNC_MIN &&
                  pthread_create(&t, NULL, fp_sync_run, &f) == 0;
    int rc = 0;

    if (fsync(fd) < 0)
        rc = ck_err_set(err, -errno, "fsync %s: %s", out_path,
                        strerror(errno));
    if (started)
        pthread_join(t, NULL);
    else
        f.rc = fingerprint_later(fd, info, &f.err);
    if (rc == 0 && f.rc < 0)
        rc = ck_err_set(err, f.rc, "%s", f.err.msg);
    return rc;
}

int ck_ckpt_write_fd(ck_ckpt_t *c, int fd, ck_write_info_t *info,
                     ck_err_t *err)
{
    static const uint8_t zeros[4096];
    char top[] = "archive";
    int rc;

    memset(info, 0, sizeof(*info));
    info->stream = 1;
    ck_pipe_widen(fd);
    rc = ck_ckpt_check_keys(c, err);
    if (rc == 0)
        rc = write_zip(c, fd, top, info, err);
    if (rc == 0 && c->fp != NULL) /* its failure breaks the output too */
        rc = ck_ckpt_fingerprint(c, err);
    if (rc < 0 && err->code != -EPIPE) {
        /* what was written cannot be taken back: make sure it is no zip.
         * Readers look for the end record in the last 64 KiB + 22 bytes;
         * zeros there hold none. */
        for (size_t n = 0; n < 65536 + 22 + sizeof(zeros); n += sizeof(zeros))
            if (ck_write_full(fd, zeros, sizeof(zeros)) < 0)
                break;
    }
    if (rc < 0 && strncmp(err->msg, "write: ", 7) == 0)
        ck_err_replace(err, rc, "write to the output: %s", err->msg + 7);
    return rc;
}

int ck_ckpt_write(ck_ckpt_t *c, const char *out_path, ck_write_info_t *info,
                  ck_err_t *err)
{
    char *top = ck_ckpt_stem(&c->arena, ck_path_base(out_path));

    if (top == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    return ck_ckpt_write_with(c, out_path, write_zip, top, info, err);
}

int ck_ckpt_write_with(ck_ckpt_t *c, const char *out_path, ck_write_body_fn body,
                       void *arg, ck_write_info_t *info, ck_err_t *err)
{
    char *dir_copy = NULL, *base_copy = NULL, *tmp = NULL;
    const char *dir, *base;
    int fd = -1, rc;
    struct timespec ts;
    struct sigaction sa;
    struct stat sb;
    ck_err_t we = { 0 };

    memset(info, 0, sizeof(*info));
    /* inputs are never modified: not even by an output of the same name
     * (-o . in the input's folder), nor through a link to it */
    if (c->fd >= 0 && stat(out_path, &sb) == 0 && sb.st_dev == c->st.dev &&
        sb.st_ino == c->st.ino)
        return ck_err_set(err, CK_EUSAGE, "the output %s is the input: "
                          "choose another name or folder", out_path);
    rc = ck_ckpt_check_keys(c, err);
    if (rc < 0)
        return rc;
    /* past RLIMIT_FSIZE a write must fail with EFBIG, not kill the process
     * and leave the temporary behind */
    if (sigaction(SIGXFSZ, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        sa.sa_handler = SIG_IGN;
        sigaction(SIGXFSZ, &sa, NULL);
    }
    dir_copy = ck_strdup(out_path);
    base_copy = ck_strdup(out_path);
    if (dir_copy == NULL || base_copy == NULL) {
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        goto out;
    }
    dir = dirname(dir_copy);
    base = basename(base_copy);
    tmp = ck_malloc(strlen(dir) + strlen(base) + 64);
    if (tmp == NULL) {
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        goto out;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    for (unsigned i = 0; fd < 0; i++) {
        sprintf(tmp, "%s/.%s.tmp.%d.%lx%u", dir, base, (int)getpid(),
                (unsigned long)ts.tv_nsec, i);
        fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && (errno != EEXIST || i > 100)) {
            rc = ck_err_set(err, -errno, "create %s: %s", tmp, strerror(errno));
            tmp[0] = '\0';
            goto out;
        }
    }
    rc = body(c, fd, arg, info, &we);
    if (rc < 0) {
        /* a write error names the output it was writing */
        if (strncmp(we.msg, "write: ", 7) == 0)
            ck_err_set(err, rc, "write %s: %s", out_path, we.msg + 7);
        else
            ck_err_set(err, rc, "%s", we.msg);
        goto out;
    }
    /* every input byte is read by now (the fingerprint's too): the input
     * must be the file opened, unchanged, or the output may mix two files */
    if (c->fp != NULL && (rc = ck_ckpt_fingerprint(c, err)) < 0)
        goto out;
    if (c->fd >= 0 && (rc = ck_ckpt_unchanged(c, err)) < 0)
        goto out;
    if (c->defer != 0 && info->size <= c->defer) {
        /* the caller syncs and renames it, with others: start the
         * write-back now so that sync finds little left to do */
        sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
        if ((rc = fingerprint_later(fd, info, err)) < 0)
            goto out;
        if (close(fd) < 0) {
            fd = -1;
            rc = ck_err_set(err, -errno, "close %s: %s", out_path,
                            strerror(errno));
            goto out;
        }
        fd = -1;
        info->tmp = tmp;
        tmp = NULL;
        goto out;
    }
    if ((rc = sync_with_fp(fd, out_path, info, err)) < 0)
        goto out;
    if (close(fd) < 0) {
        fd = -1;
        rc = ck_err_set(err, -errno, "close %s: %s", out_path, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(tmp, out_path) < 0) {
        rc = ck_err_set(err, -errno, "rename to %s: %s", out_path, strerror(errno));
        goto out;
    }
    tmp[0] = '\0';
    rc = ck_fsync_dir(dir);
    if (rc < 0)
        rc = ck_err_set(err, rc, "fsync %s: %s", dir, strerror(-rc));
    if (rc < 0)
        unlink(out_path);   /* not known to be durable: not written */
out:
    if (fd >= 0)
        close(fd);
    if (tmp != NULL && tmp[0] != '\0')
        unlink(tmp);
    ck_free(tmp);
    ck_free(dir_copy);
    ck_free(base_copy);
    return rc;
}

