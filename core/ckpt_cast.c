/*
 * ckpt_cast.c -- dtype casts of storages, done while writing.
 *
 * ck_ckpt_cast only changes the model: a storage gets a chain of dtypes
 * (step[0] is what the input holds, the storage's element type is the
 * last) and its persistent ids and v3 rebuild calls name the new type; no
 * byte is read.  ck_ckpt_storage_stream then gives the storage's bytes as
 * written, reading the input in bounded chunks and converting each through
 * ck_dtype_convert, so memory stays a few MiB whatever the storage's size.
 * Casting twice (fp16 -> fp32 -> bf16) keeps every step, as torch would
 * round at each.
 */
#include "ckpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK_ELEMS (256u * 1024u) /* elements converted per step */

/* The element type of st as written, and per stored unit (1, or the item
 * size for an untyped storage, which counts bytes). */
static const ck_dtype_t *final_dtype(const ck_storage_t *st)
{
    if (st->dt != 0)
        return ck_storage_dtype(st);
    return st->nconv ? st->cast->step[st->nconv - 1] : NULL;
}

int ck_ckpt_storage_stream(ck_ckpt_t *c, const ck_storage_t *st,
                           uint64_t first, uint64_t count,
                           ck_sink_fn sink, void *arg, ck_err_t *err)
{
    const ck_dtype_t *fin = final_dtype(st), *src;
    uint64_t per, done = 0;
    uint8_t *buf[2] = { NULL, NULL };
    int rc = 0;

    if (st->nconv == 0) {
        uint8_t *b = ck_malloc(1u << 20);
        uint64_t isz = ck_storage_unit(st);

        if (b == NULL)
            return ck_err_set(err, CK_ENOMEM, "out of memory");
        while (rc == 0 && done < count * isz) {
            uint64_t left = count * isz - done;
            size_t n = left > (1u << 20) ? (1u << 20) : (size_t)left;

            rc = ck_ckpt_storage_src(c, st, first * isz + done, n, b, err);
            if (rc == 0)
                rc = sink(arg, b, n, err);
            done += n;
        }
        ck_free(b);
        return rc;
    }
    src = st->cast->step[0];
    per = st->dt ? 1 : fin->itemsize;
    if (first % per || count % per)
        return ck_err_set(err, CK_EFORMAT, "storage %s read off its elements",
                          st->key);
    first /= per;
    count /= per;
    buf[0] = ck_malloc((size_t)CHUNK_ELEMS * 8);
    buf[1] = ck_malloc((size_t)CHUNK_ELEMS * 8);
    if (buf[0] == NULL || buf[1] == NULL) {
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        goto out;
    }
    while (rc == 0 && done < count) {
        size_t n = count - done > CHUNK_ELEMS ? CHUNK_ELEMS
                                              : (size_t)(count - done);
        unsigned cur = 0;

        rc = ck_ckpt_storage_src(c, st, (first + done) * src->itemsize,
                                 (uint64_t)n * src->itemsize, buf[0], err);
        for (unsigned i = 1; rc == 0 && i < st->nconv; i++, cur ^= 1u)
            if (ck_dtype_convert(st->cast->step[i], buf[cur ^ 1u],
                                 st->cast->step[i - 1],
                                 buf[cur], n) < 0)
                rc = ck_err_set(err, CK_EUNSUPPORTED, "cannot cast %s to %s",
                                st->cast->step[i - 1]->name,
                                st->cast->step[i]->name);
        if (rc == 0)
            rc = sink(arg, buf[cur], n * fin->itemsize, err);
        done += n;
    }
out:
    ck_free(buf[0]);
    ck_free(buf[1]);
    return rc;
}

typedef struct {
    uint8_t *p;
} mem_sink_t;

static int mem_cb(void *arg, const void *p, size_t n, ck_err_t *err)
{
    mem_sink_t *m = arg;

    (void)err;
    memcpy(m->p, p, n);
    m->p += n;
    return 0;
}

int ck_ckpt_storage_read(ck_ckpt_t *c, const ck_storage_t *st, uint64_t first,
                         uint64_t count, uint8_t *out, ck_err_t *err)
{
    mem_sink_t m = { out };

    if (st->nconv == 0) {
        uint64_t isz = ck_storage_unit(st);

        return ck_ckpt_storage_src(c, st, first * isz, count * isz, out, err);
    }
    return ck_ckpt_storage_stream(c, st, first, count, mem_cb, &m, err);
}

/* ---- casting tensors --------------------------------------------------- */

/* The items of t's call's arguments: a persistent id first, as the scan
 * found them (scan_tensor), a dtype seventh in a _v3 call. */
static ck_py_t **tensor_args(const ck_tensor_t *t)
{
    uint32_t n;

    return ck_py_args(t->node, &n);
}

/* The index in c->storages of t's storage: its persistent id's tie (the
 * scan's, or a split's), no lookup by key. */
static size_t storage_index(const ck_ckpt_t *c, const ck_tensor_t *t)
{
    size_t i = ck_ckpt_pid_index(tensor_args(t)[0]);

    return i < c->nstorages && ck_ckpt_storage(c, i) == t->st ? i : SIZE_MAX;
}

static int push_conv(ck_ckpt_t *c, ck_storage_t *st, const ck_dtype_t *from,
                     const ck_dtype_t *to, ck_err_t *err)
{
    if (st->nconv == 0) { /* cast takes crc's place */
        ck_storage_cast_t *cast = ck_arena_alloc(&c->arena, sizeof(*cast));

        if (cast == NULL)
            return ck_err_set(err, CK_ENOMEM, "out of memory");
        cast->crc = st->crc;
        cast->src_nbytes = ck_storage_nbytes(st);
        cast->step[0] = from;
        st->cast = cast;
        st->nconv = 1;
    }
    if (st->nconv >= CK_CONV_STEPS)
        return ck_err_set(err, CK_EUNSUPPORTED,
                          "storage %s is cast more than %d times", st->key,
                          CK_CONV_STEPS - 1);
    st->cast->step[st->nconv++] = to;
    return 0;
}

/* The new element type in st's size and every naming of it: persistent ids
 * and v3 dtype arguments, of its tensors among the nt of idx (indices in
 * c->tensors). */
static int retype(ck_ckpt_t *c, ck_storage_t *st, const ck_dtype_t *from,
                  const ck_dtype_t *to, const size_t *idx, size_t nt,
                  ck_err_t *err)
{
    ck_py_t *cls;

    if (push_conv(c, st, from, to, err) < 0)
        return err->code;
    if (st->dt != 0)
        ck_storage_set_dtype(st, to);
    else
        st->numel = st->numel / from->itemsize * to->itemsize;
    cls = st->dt ? ck_ckpt_global(c, "torch", to->storage) : NULL;
    for (size_t j = 0; j < nt; j++) {
        ck_tensor_t *t = &c->tensors[idx[j]];
        ck_py_t **a = tensor_args(t);
        ck_py_t *pid;

        if (t->st != st)
            continue;
        /* the id's items change: a tuple of its own (pickle.h) */
        if ((pid = ck_py_pid_tuple(&c->arena, a[0])) == NULL)
            return ck_err_set(err, CK_ENOMEM, "out of memory");
        if (st->dt != 0) {
            if (cls == NULL)
                return ck_err_set(err, CK_ENOMEM, "out of memory");
            pid->u.seq.v[1] = cls;
        } else {
            pid->u.seq.v[4] = ck_py_int(&c->arena, (int64_t)st->numel);
            if (pid->u.seq.v[4] == NULL)
                return ck_err_set(err, CK_ENOMEM, "out of memory");
        }
        if (ck_py_global_is(t->node->u.o.fn, "torch._utils",
                            "_rebuild_tensor_v3")) {
            a[6] = ck_ckpt_global(c, "torch", to->name);
            if (a[6] == NULL)
                return ck_err_set(err, CK_ENOMEM, "out of memory");
        }
    }
    return 0;
}

/* A copy of st with its own key and persistent id, for the cast tensors of
 * a storage something else still uses as it is: the marked ones among the
 * nt of idx. */
static ck_storage_t *split(ck_ckpt_t *c, ck_storage_t *st,
                           const unsigned char *mark, const size_t *idx,
                           size_t nt, ck_err_t *err)
{
    ck_storage_t copy = *st, *ns;
    ck_py_t *pers = NULL, *pid = NULL;
    ck_py_t *old = NULL;
    size_t nsi;

    if (st->nconv > 0) {
        copy.cast = ck_arena_alloc(&c->arena, sizeof(*copy.cast));
        if (copy.cast == NULL)
            goto nomem;
        *copy.cast = *st->cast;
    }
    copy.key = ck_arena_printf(&c->arena, "cast:%zu", c->nstorages);
    copy.refs = 0;
    if (copy.key == NULL)
        goto nomem;
    if (ck_ckpt_add_storage(c, &copy, err) < 0)
        return NULL;
    nsi = c->nstorages - 1;
    ns = ck_ckpt_storage(c, nsi);
    for (size_t j = 0; j < nt; j++) {
        ck_tensor_t *t = &c->tensors[idx[j]];

        if (t->st != st || !mark[idx[j]])
            continue;
        old = tensor_args(t)[0];
        if (pers == NULL) {
            ck_py_t *v[5], key;
            size_t n;

            pers = ck_py_new(&c->arena, CK_PY_PERSID);
            pid = ck_py_new(&c->arena, CK_PY_TUPLE);
            if (pers == NULL || pid == NULL)
                goto nomem;
            if (ck_py_pid_items(old, v, 5, &n, &key) < 0 || n != 5) {
                ck_err_set(err, CK_EFORMAT, "persistent id not scanned");
                return NULL;
            }
            for (size_t k = 0; k < n; k++)
                if (ck_py_vec_push(&c->arena, &pid->u.seq, v[k]) < 0)
                    goto nomem;
            pid->u.seq.v[2] = ck_py_str(&c->arena, ns->key, strlen(ns->key));
            if (pid->u.seq.v[2] == NULL)
                goto nomem;
            pers->u.pid = pid;
            ck_ckpt_pid_tie(pers, nsi);
        }
        tensor_args(t)[0] = pers;
        t->st = ns;
    }
    return ns;
nomem:
    ck_err_set(err, CK_ENOMEM, "out of memory");
    return NULL;
}

int ck_ckpt_cast(ck_ckpt_t *c, ck_py_t *const *nodes, size_t n,
                 const ck_dtype_t *dt, unsigned char *splitp, ck_err_t *err)
{
    size_t ns = c->nstorages;
    uint32_t *all = ck_calloc(ns + 1, sizeof(*all));
    uint32_t *sel = ck_calloc(ns + 1, sizeof(*sel));
    uint32_t *pids = ck_calloc(ns + 1, sizeof(*pids));
    unsigned char *mark = ck_calloc(c->ntensors + 1, 1); /* tensor cast */
    /* the tensors of storage k: by_st[first[k] .. first[k + 1]) -- each
     * storage's own, not every tensor once per storage (10^5 storages
     * cast were 10^10 steps) */
    size_t *first = ck_calloc(ns + 2, sizeof(*first));
    size_t *by_st = ck_malloc((c->ntensors + 1) * sizeof(*by_st));
    uint32_t gen = ck_py_next_gen();
    int rc = 0;

    if (all == NULL || sel == NULL || pids == NULL || mark == NULL ||
        first == NULL || by_st == NULL) {
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        goto out;
    }
    /* who uses each storage: tensors, their distinct persistent ids */
    for (size_t i = 0; i < c->ntensors; i++) {
        ck_tensor_t *t = &c->tensors[i];
        ck_py_t *pers = tensor_args(t)[0];
        size_t k = storage_index(c, t);

        if (k == SIZE_MAX)
            continue;
        all[k]++;
        if (pers->wgen != gen) {
            pers->wgen = gen;
            pids[k]++;
        }
    }
    for (size_t k = 0; k < ns; k++)
        first[k + 1] = first[k] + all[k];
    for (size_t i = 0, k; i < c->ntensors; i++)
        if ((k = storage_index(c, &c->tensors[i])) != SIZE_MAX)
            by_st[first[k + 1] - all[k]--] = i; /* (all[k] counts down) */
    for (size_t k = 0; k < ns; k++)
        all[k] = (uint32_t)(first[k + 1] - first[k]);
    for (size_t i = 0; i < n; i++) {
        ck_tensor_t *t = ck_ckpt_tensor(c, nodes[i]);
        size_t k = t ? storage_index(c, t) : SIZE_MAX;

        if (splitp != NULL)
            splitp[i] = 0;
        if (t == NULL || k == SIZE_MAX || t->dtype == dt ||
            mark[t - c->tensors])
            continue;
        if (!ck_dtype_is_castable(t->dtype) || !ck_dtype_is_castable(dt)) {
            rc = ck_err_set(err, CK_EUNSUPPORTED, "cannot cast %s to %s",
                            t->dtype->name, dt->name);
            goto out;
        }
        mark[t - c->tensors] = 1;
        sel[k]++;
    }
    for (size_t k = 0; k < ns && rc == 0; k++) {
        ck_storage_t *st = ck_ckpt_storage(c, k);
        const ck_dtype_t *from = NULL;
        const size_t *idx = by_st + first[k];
        size_t nt = first[k + 1] - first[k];

        if (sel[k] == 0)
            continue;
        for (size_t j = 0; j < nt && rc == 0; j++) {
            size_t i = idx[j];

            if (!mark[i])
                continue;
            if (from != NULL && from != c->tensors[i].dtype)
                rc = ck_err_set(err, CK_EUNSUPPORTED,
                                "storage %s holds %s and %s tensors: cast "
                                "them in two steps", st->key, from->name,
                                c->tensors[i].dtype->name);
            from = c->tensors[i].dtype;
        }
        if (rc < 0)
            break;
        if (sel[k] < all[k] || pids[k] < st->refs) {
            st = split(c, st, mark, idx, nt, err);
            if (st == NULL) {
                rc = err->code;
                break;
            }
        }
        rc = retype(c, st, from, dt, idx, nt, err);
    }
    /* a node's tensor now in a storage a split made (those past ns) */
    for (size_t i = 0; i < n && splitp != NULL && rc == 0; i++) {
        ck_tensor_t *t = ck_ckpt_tensor(c, nodes[i]);
        size_t k = t ? storage_index(c, t) : SIZE_MAX;

        splitp[i] = k != SIZE_MAX && k >= ns;
    }
    if (rc == 0)
        rc = ck_ckpt_scan(c, err);
out:
    ck_free(all);
    ck_free(sel);
    ck_free(pids);
    ck_free(mark);
    ck_free(first);
    ck_free(by_st);
    return rc;
}
