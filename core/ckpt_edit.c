/*
 * ckpt_edit.c -- what the job API (plugin.h) does to the model: mappings
 * at a path, a state dict's _metadata, the bytes under a node, globals,
 * new tensors in memory, and a tensor's elements read back.  The graph
 * these change is scanned again by the job after each plugin.
 */
#include "ckpt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


int ck_ckpt_mapping(ck_ckpt_t *c, const char *path, ck_py_t **node,
                    ck_py_vec_t **items, ck_err_t *err)
{
    ck_py_t *p = ck_ckpt_get(c, path);

    if (p == NULL)
        return ck_err_set(err, CK_EPLUGIN, "no '%s' in the checkpoint", path);
    *items = ck_py_mapping(p);
    /* a call is a mapping when it builds one (OrderedDict, defaultdict) or
     * is given items; a tensor rebuild, a torch.Size ... is not */
    if (*items != NULL && p->kind != CK_PY_DICT && (*items)->n == 0 &&
        !ck_py_global_is(p->u.o.fn, "collections", "OrderedDict") &&
        !ck_py_global_is(p->u.o.fn, "collections", "defaultdict"))
        *items = NULL;
    if (*items == NULL)
        return ck_err_set(err, CK_EPLUGIN, "'%s' is not a dict", path);
    if (p->kind != CK_PY_DICT) { /* a plugin may add items to it */
        int oom = 0;

        *items = ck_py_mapping_mut(&c->arena, p, &oom);
        if (oom)
            return ck_err_set(err, CK_ENOMEM, "out of memory");
    }
    if (node != NULL)
        *node = p;
    return 0;
}

ck_py_vec_t *ck_ckpt_metadata(ck_ckpt_t *c, ck_py_t *sd, int *oom)
{
    ck_py_t *state, *md;

    if (sd == NULL || sd->kind != CK_PY_REDUCE || ck_py_after(sd)->state == NULL)
        return NULL;
    state = ck_py_after(sd)->state;
    md = ck_py_map_get(state, "_metadata", NULL);
    return ck_py_mapping_mut(&c->arena, md, oom);
}

typedef struct {
    const ck_ckpt_t *c;
    uint32_t gen;
    uint64_t bytes;
    uint32_t depth;
    const ck_py_t *last_fn; /* and whether it rebuilds a tensor, as the */
    int last_version;       /* scan keeps it: one global serves them all */
} bytes_t;

static void bytes_walk(bytes_t *b, ck_py_t *p, uint32_t depth);

/*
 * The arguments of call p at depth: of a tensor (tensor set) only those
 * that may hold a storage -- its storage, hooks and metadata, not the
 * ints of its shape (ck_tensor_arg_plain: the walk of an optimizer's
 * 2 * 10^5 tensors met ten nodes each) --, their tuple marked and cut as
 * a walk into it would.
 */
static void bytes_args(bytes_t *b, ck_py_t *p, int tensor, uint32_t depth)
{
    ck_py_t *t = (p->flags & CK_PY_F_ARGC) ? NULL : p->u.o.args;
    ck_py_t **v;
    uint32_t n = 0;

    if (t != NULL && (!tensor || (v = ck_py_args(p, &n)) == NULL)) {
        bytes_walk(b, t, depth + 1);
        return;
    }
    if (t == NULL)
        v = ck_py_args(p, &n); /* no tuple: its items */
    else if (t->wgen == b->gen || depth + 1 > b->depth)
        return;
    else
        t->wgen = b->gen;
    for (uint32_t i = 0; i < n; i++)
        if (!tensor || !ck_tensor_arg_plain(v[i], i))
            bytes_walk(b, v[i], depth + 2);
}

static void bytes_walk(bytes_t *b, ck_py_t *p, uint32_t depth)
{
    if (p == NULL || p->wgen == b->gen || depth > b->depth)
        return;
    p->wgen = b->gen;
    switch ((ck_py_kind_t)p->kind) {
    case CK_PY_TUPLE:
    case CK_PY_LIST:
    case CK_PY_DICT:
    case CK_PY_SET:
    case CK_PY_FROZENSET:
        for (size_t i = 0; i < p->u.seq.n; i++)
            bytes_walk(b, p->u.seq.v[i], depth + 1);
        return;
    case CK_PY_REDUCE:
    case CK_PY_NEWOBJ:
        if (p->kind == CK_PY_REDUCE && p->u.o.fn != b->last_fn) {
            b->last_fn = p->u.o.fn;
            b->last_version = ck_ckpt_tensor_call(p);
        }
        bytes_args(b, p, p->kind == CK_PY_REDUCE && b->last_version > 0,
                   depth);
        for (size_t i = 0; i < ck_py_after(p)->list.n; i++)
            bytes_walk(b, ck_py_after(p)->list.v[i], depth + 1);
        for (size_t i = 0; i < ck_py_after(p)->dict.n; i++)
            bytes_walk(b, ck_py_after(p)->dict.v[i], depth + 1);
        bytes_walk(b, ck_py_after(p)->state, depth + 1);
        return;
    case CK_PY_PERSID: {
        ck_storage_t *st = ck_ckpt_pid_storage(b->c, p);

        /* a storage counts once */
        if (st != NULL && st->mark != b->gen) {
            st->mark = b->gen;
            b->bytes += ck_storage_nbytes(st);
        }
        return;
    }
    default:
        return;
    }
}

uint64_t ck_ckpt_bytes_under(ck_ckpt_t *c, ck_py_t *node)
{
    bytes_t b = { c, ck_py_next_gen(), 0, c->lim.max_depth };

    bytes_walk(&b, node, 0);
    return b.bytes;
}

ck_py_t *ck_ckpt_global(ck_ckpt_t *c, const char *module, const char *name)
{
    ck_py_t *g;

    for (size_t i = 0; i < c->pk.globals.n; i++) {
        g = c->pk.globals.v[i];
        if (strcmp(g->u.g.module, module) == 0 && strcmp(g->u.g.name, name) == 0)
            return g;
    }
    g = ck_py_global(&c->arena, module, name);
    if (g != NULL && ck_py_vec_push(&c->arena, &c->pk.globals, g) < 0)
        return NULL;
    return g;
}

static ck_py_t *int_tuple_node(ck_arena_t *a, const int64_t *v, size_t n)
{
    ck_py_t *t = ck_py_new(a, CK_PY_TUPLE);

    if (t == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        ck_py_t *x = ck_py_int(a, v[i]);

        if (x == NULL || ck_py_vec_push(a, &t->u.seq, x) < 0)
            return NULL;
    }
    return t;
}

static int tuple_push(ck_arena_t *a, ck_py_t *t, ck_py_t *x)
{
    return x == NULL ? -1 : ck_py_vec_push(a, &t->u.seq, x);
}

ck_py_t *ck_ckpt_tensor_node(ck_ckpt_t *c, ck_storage_t *st,
                             const int64_t *shape, size_t ndim, ck_err_t *err)
{
    ck_arena_t *a = &c->arena;
    const ck_dtype_t *dt = ck_storage_dtype(st);
    ck_py_t *pid, *pers, *args, *hooks, *call;
    int64_t stride[64];
    uint64_t numel = 1;

    if (dt == NULL || dt->storage == NULL || ndim > 64) {
        ck_err_set(err, CK_EUNSUPPORTED, "cannot create a %s tensor of %zu dims",
                   dt ? dt->name : "untyped", ndim);
        return NULL;
    }
    for (size_t i = ndim; i-- > 0;) {
        stride[i] = (int64_t)numel;
        if (shape[i] < 0 || ck_mul_u64(numel, (uint64_t)shape[i], &numel) < 0 ||
            numel > INT64_MAX) {
            ck_err_set(err, CK_EFORMAT, "bad tensor shape");
            return NULL;
        }
    }
    pid = ck_py_new(a, CK_PY_TUPLE);
    pers = ck_py_new(a, CK_PY_PERSID);
    args = ck_py_new(a, CK_PY_TUPLE);
    hooks = ck_py_new(a, CK_PY_REDUCE);
    call = ck_py_new(a, CK_PY_REDUCE);
    if (pid == NULL || pers == NULL || args == NULL || hooks == NULL ||
        call == NULL)
        goto nomem;
    if (tuple_push(a, pid, ck_py_str(a, "storage", 7)) < 0 ||
        tuple_push(a, pid, ck_ckpt_global(c, "torch", dt->storage)) < 0 ||
        tuple_push(a, pid, ck_py_str(a, st->key, strlen(st->key))) < 0 ||
        tuple_push(a, pid, ck_py_str(a, "cpu", 3)) < 0 ||
        tuple_push(a, pid, ck_py_int(a, (int64_t)st->numel)) < 0)
        goto nomem;
    pers->u.pid = pid;
    hooks->u.o.fn = ck_ckpt_global(c, "collections", "OrderedDict");
    hooks->u.o.args = ck_py_new(a, CK_PY_TUPLE);
    call->u.o.fn = ck_ckpt_global(c, "torch._utils", "_rebuild_tensor_v2");
    if (hooks->u.o.fn == NULL || hooks->u.o.args == NULL || call->u.o.fn == NULL)
        goto nomem;
    if (tuple_push(a, args, pers) < 0 || tuple_push(a, args, ck_py_int(a, 0)) < 0 ||
        tuple_push(a, args, int_tuple_node(a, shape, ndim)) < 0 ||
        tuple_push(a, args, int_tuple_node(a, stride, ndim)) < 0 ||
        tuple_push(a, args, ck_py_new(a, CK_PY_BOOL)) < 0 ||
        tuple_push(a, args, hooks) < 0)
        goto nomem;
    call->u.o.args = args;
    return call;
nomem:
    ck_err_set(err, CK_ENOMEM, "out of memory");
    return NULL;
}

ck_py_t *ck_ckpt_new_tensor(ck_ckpt_t *c, const ck_dtype_t *dt,
                            const int64_t *shape, size_t ndim,
                            const uint8_t *data, ck_err_t *err)
{
    ck_storage_t new = { 0 }, *st = &new; /* ck_ckpt_add_storage copies */
    uint64_t numel = 1;
    ck_py_t *call;

    if (dt->storage == NULL || ndim > 16) {
        ck_err_set(err, CK_EPLUGIN, "cannot create a %s tensor of %zu dims",
                   dt->name, ndim);
        return NULL;
    }
    for (size_t i = 0; i < ndim; i++)
        if (shape[i] < 0 || ck_mul_u64(numel, (uint64_t)shape[i], &numel) < 0) {
            ck_err_set(err, CK_EPLUGIN, "bad tensor shape");
            return NULL;
        }
    st->key = ck_arena_printf(&c->arena, "new:%zu", c->nstorages);
    ck_storage_set_dtype(st, dt);
    st->numel = numel;
    st->src = CK_SRC_MEM;
    st->mem = data;
    st->newkey = -1;
    if (st->key == NULL)
        goto nomem;
    call = ck_ckpt_tensor_node(c, st, shape, ndim, err);
    if (call == NULL)
        return NULL;
    if (ck_ckpt_add_storage(c, st, err) < 0)
        return NULL;
    return call;
nomem:
    ck_err_set(err, CK_ENOMEM, "out of memory");
    return NULL;
}

/* Input bytes [off, off + n) of st (before any cast). */
int ck_ckpt_storage_src(ck_ckpt_t *c, const ck_storage_t *st, uint64_t off,
                        uint64_t n, uint8_t *out, ck_err_t *err)
{
    uint64_t size = ck_storage_src_bytes(st);
    uint8_t *all;
    int rc;

    if (off > size || n > size - off)
        return ck_err_set(err, CK_EFORMAT, "read past storage %s", st->key);
    switch (st->src) {
    case CK_SRC_MEM:
        memcpy(out, st->mem + off, (size_t)n);
        return 0;
    case CK_SRC_LEGACY:
        rc = ck_pread_full(c->fd, out, (size_t)n, st->off + off);
        break;
    case CK_SRC_STREAM:
        return ck_ckpt_stream_src(c, st, off, n, out, err);
    case CK_SRC_ZIP:
        if (!st->deflated) {
            rc = ck_pread_full(c->fd, out, (size_t)n, st->off + off);
            break;
        }
        rc = ck_zip_read(c->fd, st->entry, size, &all, err);
        if (rc < 0)
            return rc;
        memcpy(out, all + off, (size_t)n);
        ck_free(all);
        return 0;
    default:
        rc = -EIO;
    }
    if (rc < 0)
        return ck_err_set(err, rc, "read storage %s: %s", st->key, strerror(-rc));
    return 0;
}

int ck_ckpt_read_tensor(ck_ckpt_t *c, const ck_tensor_t *t, uint8_t *out,
                        ck_err_t *err)
{
    size_t isz = t->dtype->itemsize;
    uint64_t idx[16] = { 0 };
    uint64_t per = t->st->dt ? 1 : isz; /* storage units per element */
    int contiguous = 1;
    int64_t expect = 1;

    if (t->numel == 0)
        return 0;
    if (t->ndim > 16)
        return ck_err_set(err, CK_EUNSUPPORTED, "tensor of %u dims", t->ndim);
    for (size_t i = t->ndim; i-- > 0;) {
        if (t->size[i] != 1 && t->stride[i] != expect)
            contiguous = 0;
        expect *= t->size[i];
    }
    if (contiguous)
        return ck_ckpt_storage_read(c, t->st, t->offset * per, t->numel * per,
                                    out, err);
    for (uint64_t k = 0; k < t->numel; k++) {
        uint64_t e = t->offset;
        int rc;

        for (size_t i = 0; i < t->ndim; i++)
            e += idx[i] * (uint64_t)t->stride[i];
        rc = ck_ckpt_storage_read(c, t->st, e * per, per, out + k * isz, err);
        if (rc < 0)
            return rc;
        for (size_t i = t->ndim; i-- > 0;) {
            if (++idx[i] < (uint64_t)t->size[i])
                break;
            idx[i] = 0;
        }
    }
    return 0;
}

void ck_ckpt_init_mem(ck_ckpt_t *c, const char *name)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->format = CK_FMT_ZIP;
    c->path = name;
    ck_limits_default(&c->lim);
}

int ck_tensor_contiguous(const ck_tensor_t *t)
{
    int64_t expect = 1;

    for (size_t i = t->ndim; i-- > 0;) {
        if (t->size[i] != 1 && t->stride[i] != expect)
            return 0;
        expect *= t->size[i];
    }
    return 1;
}
