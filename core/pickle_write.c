/*
 * pickle_write.c -- the protocol 2 pickle writer.
 *
 * It mirrors CPython's Pickler.save() at protocol 2 (Lib/pickle.py):
 * memoization by node identity in first-appearance order, _BATCHSIZE 1000,
 * save_reduce's order (callable, args, REDUCE/NEWOBJ, memoize, list items,
 * dict items, state, BUILD).  It recurses, bounded by ck_limits_t.max_depth.
 * A node is memoized when its wgen is the writer's generation, at the index
 * in widx (a value node, CK_PY_F_VALUE, is written and memoized anew each
 * time, as the distinct objects it stands for: memoized()); output goes to
 * the caller's ck_buf_t, whose sticky oom flag is checked once per node.
 */
#include "pickle.h"
#include "pickle_int.h"
#include "pyval.h"

#include <string.h>

/* ---- writer ----------------------------------------------------------- */

typedef struct {
    ck_buf_t *out;
    const ck_limits_t *lim;
    ck_arena_t *a;
    ck_err_t *err;
    ck_persid_cb cb;
    void *ud;
    uint32_t gen, next;
    ck_py_t *g_encode, *g_bytes, *g_bytearray, *g_set, *g_frozenset;
    ck_py_t *s_latin1;
} wr_t;

static int save(wr_t *w, ck_py_t *p, uint32_t depth);

static void w_u32(wr_t *w, uint32_t v)
{
    uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
                     (uint8_t)(v >> 24) };

    ck_buf_put(w->out, b, 4);
}

static void w_op(wr_t *w, int op)
{
    ck_buf_putc(w->out, op);
}

/* The next memo index, put: returned. */
static uint32_t put(wr_t *w)
{
    uint32_t idx = w->next++;

    if (idx < 256) {
        w_op(w, OP_BINPUT);
        w_op(w, (int)idx);
    } else {
        w_op(w, OP_LONG_BINPUT);
        w_u32(w, idx);
    }
    return idx;
}

static void memoize(wr_t *w, ck_py_t *p)
{
    p->wgen = w->gen;
    p->widx = put(w);
}

/* p is in this write's memo: a value node never is, being a new object at
 * each place it is met (pickle.h). */
static int memoized(const wr_t *w, const ck_py_t *p)
{
    return p->wgen == w->gen && !(p->flags & CK_PY_F_VALUE);
}

static void get(wr_t *w, uint32_t idx)
{
    if (idx < 256) {
        w_op(w, OP_BINGET);
        w_op(w, (int)idx);
    } else {
        w_op(w, OP_LONG_BINGET);
        w_u32(w, idx);
    }
}

static void memo_ref(wr_t *w, ck_py_t *p)
{
    get(w, p->widx);
}

static void save_int_bytes(wr_t *w, const uint8_t *b, size_t n)
{
    n = ck_pyint_trim(b, n);
    if (n < 256) {
        w_op(w, OP_LONG1);
        w_op(w, (int)n);
    } else {
        w_op(w, OP_LONG4);
        w_u32(w, (uint32_t)n);
    }
    ck_buf_put(w->out, b, n);
}

static void save_int(wr_t *w, const ck_py_t *p)
{
    int64_t v = p->u.i.v;
    uint8_t b[8];

    if (p->len) {
        save_int_bytes(w, p->u.i.big, p->len);
        return;
    }
    if (v >= 0 && v <= 0xff) {
        w_op(w, OP_BININT1);
        w_op(w, (int)v);
    } else if (v >= 0 && v <= 0xffff) {
        w_op(w, OP_BININT2);
        w_op(w, (int)(v & 0xff));
        w_op(w, (int)(v >> 8));
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
        w_op(w, OP_BININT);
        w_u32(w, (uint32_t)(int32_t)v);
    } else {
        for (int i = 0; i < 8; i++)
            b[i] = (uint8_t)((uint64_t)v >> (8 * i));
        save_int_bytes(w, b, 8);
    }
}

static int w_nomem(wr_t *w)
{
    return ck_err_set(w->err, CK_ENOMEM, "out of memory writing the pickle");
}

static ck_py_t *lazy_global(wr_t *w, ck_py_t **slot, const char *m,
                            const char *n)
{
    if (*slot == NULL)
        *slot = ck_py_global(w->a, m, n);
    return *slot;
}

static ck_py_t *lazy_str(wr_t *w, ck_py_t **slot, const char *s)
{
    if (*slot == NULL)
        *slot = ck_py_str(w->a, s, strlen(s));
    return *slot;
}

static int save_str(wr_t *w, ck_py_t *p)
{
    w_op(w, OP_BINUNICODE); /* (no str is longer than 4 GiB: pickle.h) */
    w_u32(w, p->len);
    ck_buf_put(w->out, p->u.s.s, p->len);
    memoize(w, p);
    return 0;
}

/* save_reduce(fn, args) + memoize(obj), for values protocol 2 lacks. */
static int save_as_call(wr_t *w, ck_py_t *obj, ck_py_t *fn, ck_py_t *args,
                        uint32_t depth)
{
    int rc;

    if (fn == NULL || args == NULL)
        return w_nomem(w);
    if ((rc = save(w, fn, depth + 1)) < 0 || (rc = save(w, args, depth + 1)) < 0)
        return rc;
    w_op(w, OP_REDUCE);
    memoize(w, obj);
    return 0;
}

/*
 * Bytes as Python 2 pickles them: _codecs.encode(latin-1 text, 'latin1'),
 * or bytes() when empty.  A bytearray is CPython 3's bytearray(b'...'),
 * with the bytes saved that way, or bytearray() when empty.
 */
static int save_bytes(wr_t *w, ck_py_t *p, uint32_t depth)
{
    ck_py_t *args = ck_py_new(w->a, CK_PY_TUPLE), *text, *enc, *b;
    uint8_t *u;
    size_t o = 0;

    if (args == NULL)
        return w_nomem(w);
    if (p->kind == CK_PY_BYTEARRAY) {
        if (p->len > 0) {
            b = ck_py_new(w->a, CK_PY_BYTES);
            if (b == NULL || ck_py_vec_push(w->a, &args->u.seq, b) < 0)
                return w_nomem(w);
            b->u.s = p->u.s;
            b->len = p->len;
        }
        return save_as_call(w, p, lazy_global(w, &w->g_bytearray, "__builtin__",
                                              "bytearray"), args, depth);
    }
    if (p->len == 0)
        return save_as_call(w, p, lazy_global(w, &w->g_bytes, "__builtin__",
                                              "bytes"), args, depth);
    u = ck_arena_alloc(w->a, (size_t)p->len * 2 + 1);
    text = ck_py_new(w->a, CK_PY_STR);
    enc = lazy_str(w, &w->s_latin1, "latin1");
    if (u == NULL || text == NULL || enc == NULL)
        return w_nomem(w);
    for (size_t i = 0; i < p->len; i++)
        o += (size_t)pk_utf8_put(u + o, (uint8_t)p->u.s.s[i]);
    if (o > UINT32_MAX)
        return ck_err_set(w->err, CK_EUNSUPPORTED,
                          "bytes of %u bytes do not fit protocol 2", p->len);
    text->u.s.s = (char *)u;
    text->len = (uint32_t)o;
    if (ck_py_vec_push(w->a, &args->u.seq, text) < 0 ||
        ck_py_vec_push(w->a, &args->u.seq, enc) < 0)
        return w_nomem(w);
    return save_as_call(w, p, lazy_global(w, &w->g_encode, "_codecs", "encode"),
                        args, depth);
}

static int save_set(wr_t *w, ck_py_t *p, uint32_t depth)
{
    ck_py_t *list = ck_py_new(w->a, CK_PY_LIST);
    ck_py_t *args = ck_py_new(w->a, CK_PY_TUPLE);
    ck_py_t *fn = p->kind == CK_PY_SET
                      ? lazy_global(w, &w->g_set, "__builtin__", "set")
                      : lazy_global(w, &w->g_frozenset, "__builtin__",
                                    "frozenset");

    if (list == NULL || args == NULL ||
        ck_py_vec_push(w->a, &args->u.seq, list) < 0)
        return w_nomem(w);
    list->u.seq = p->u.seq;
    return save_as_call(w, p, fn, args, depth);
}

/*
 * Batches of 1000 as the C pickler (_pickle.c) writes them.  A list or dict
 * itself (batch_list_exact, batch_dict_exact): one item alone is APPEND or
 * SETITEM, otherwise every batch, even a last one of one item, is MARK ...
 * APPENDS/SETITEMS, and a dict whose last batch was full gets one more,
 * empty, batch.  Items of a reduced object come from an iterator
 * (batch_list, batch_dict): there a batch of one item is APPEND/SETITEM.
 */
static int save_batches(wr_t *w, const ck_py_vec_t *v, int pairs, int exact,
                        uint32_t depth)
{
    size_t step = pairs ? 2 : 1;
    size_t total = v->n / step;
    size_t done = 0, n;
    int rc;

    if (total == 0)
        return 0;
    do {
        int single;

        n = total - done < 1000 ? total - done : 1000;
        single = exact ? total == 1 : n == 1;
        if (!exact && n == 0)
            break;
        if (!single)
            w_op(w, OP_MARK);
        for (size_t i = 0; i < n * step; i++)
            if ((rc = save(w, v->v[done * step + i], depth + 1)) < 0)
                return rc;
        if (!single)
            w_op(w, pairs ? OP_SETITEMS : OP_APPENDS);
        else
            w_op(w, pairs ? OP_SETITEM : OP_APPEND);
        done += n;
    } while (exact && pairs ? n == 1000 : done < total);
    return 0;
}

static int save_tuple(wr_t *w, ck_py_t *p, uint32_t depth)
{
    size_t n = p->u.seq.n;
    int rc;

    if (n == 0) {
        w_op(w, OP_EMPTY_TUPLE);
        return 0;
    }
    if (n > 3)
        w_op(w, OP_MARK);
    for (size_t i = 0; i < n; i++)
        if ((rc = save(w, p->u.seq.v[i], depth + 1)) < 0)
            return rc;
    if (memoized(w, p)) {
        /* the tuple was reached through its own items: Pickler.save_tuple */
        if (n > 3)
            w_op(w, OP_POP_MARK);
        else
            for (size_t i = 0; i < n; i++)
                w_op(w, OP_POP);
        memo_ref(w, p);
        return 0;
    }
    w_op(w, n > 3 ? OP_TUPLE : OP_TUPLE1 + (int)n - 1);
    memoize(w, p);
    return 0;
}

/*
 * A compact id's tuple (pickle.h), as save_tuple writes a tuple of five:
 * memoized by the id's node, which pickle never memoizes itself; its items
 * (strs, a global, an int) cannot hold it.  A key held as text is written
 * as the str it stands for, named once -- or as 'rekey', when the
 * callback gave one (ck_persid_cb).
 */
static int save_pidc(wr_t *w, ck_py_t *p, const char *rekey, uint32_t depth)
{
    ck_py_t *v[5], key;
    size_t n;
    int rc;

    if (memoized(w, p)) {
        memo_ref(w, p);
        return 0;
    }
    (void)ck_py_pid_items(p, v, 5, &n, &key);
    if ((p->flags & CK_PY_F_PIDK) && rekey != NULL) {
        key.u.s.s = (char *)rekey;
        key.len = (uint32_t)strlen(rekey);
    }
    w_op(w, OP_MARK);
    for (size_t i = 0; i < n; i++)
        if ((rc = save(w, v[i], depth + 1)) < 0)
            return rc;
    w_op(w, OP_TUPLE);
    memoize(w, p);
    return 0;
}

/*
 * A compact call's arguments (pickle.h), as save_tuple writes a tuple of
 * six: memoized under an index of its own, which nothing else names (a
 * GET would have given the call its tuple).  Its items cannot hold the
 * tuple, but they may hold the call (a list of hooks it was appended to):
 * then the call, and its tuple just before it, were written among them,
 * and the tuple is fetched as save_tuple fetches one reached through its
 * own items.
 */
static int save_argc(wr_t *w, ck_py_t *p, uint32_t depth)
{
    uint32_t n;
    ck_py_t **v = ck_py_args(p, &n);
    int rc;

    w_op(w, OP_MARK);
    for (uint32_t i = 0; i < n; i++)
        if ((rc = save(w, v[i], depth + 1)) < 0)
            return rc;
    if (memoized(w, p)) {
        w_op(w, OP_POP_MARK);
        get(w, p->widx - 1);
        return 0;
    }
    w_op(w, OP_TUPLE);
    (void)put(w);
    return 0;
}

static int save(wr_t *w, ck_py_t *p, uint32_t depth)
{
    int rc;

    if (depth > w->lim->max_depth)
        return ck_err_set(w->err, CK_ELIMIT, "object nesting deeper than %u",
                          w->lim->max_depth);
    if (w->out->oom)
        return w_nomem(w);
    if (memoized(w, p) && p->kind != CK_PY_TUPLE && p->kind != CK_PY_PERSID) {
        memo_ref(w, p);
        return 0;
    }
    switch ((ck_py_kind_t)p->kind) {
    case CK_PY_NONE:
        w_op(w, OP_NONE);
        return 0;
    case CK_PY_BOOL:
        w_op(w, p->b ? OP_NEWTRUE : OP_NEWFALSE);
        return 0;
    case CK_PY_INT:
        save_int(w, p);
        return 0;
    case CK_PY_FLOAT:
        w_op(w, OP_BINFLOAT);
        ck_buf_put(w->out, p->u.f, 8);
        return 0;
    case CK_PY_STR:
        return save_str(w, p);
    case CK_PY_BYTES:
    case CK_PY_BYTEARRAY:
        return save_bytes(w, p, depth);
    case CK_PY_TUPLE:
        if (memoized(w, p) && p->u.seq.n != 0) {
            memo_ref(w, p);
            return 0;
        }
        return save_tuple(w, p, depth);
    case CK_PY_LIST:
        w_op(w, OP_EMPTY_LIST);
        memoize(w, p);
        return save_batches(w, &p->u.seq, 0, 1, depth);
    case CK_PY_DICT:
        w_op(w, OP_EMPTY_DICT);
        memoize(w, p);
        return save_batches(w, &p->u.seq, 1, 1, depth);
    case CK_PY_SET:
    case CK_PY_FROZENSET:
        return save_set(w, p, depth);
    case CK_PY_GLOBAL:
        w_op(w, OP_GLOBAL);
        ck_buf_put(w->out, p->u.g.module, strlen(p->u.g.module));
        w_op(w, '\n');
        ck_buf_put(w->out, p->u.g.name, strlen(p->u.g.name));
        w_op(w, '\n');
        memoize(w, p);
        return 0;
    case CK_PY_REDUCE:
    case CK_PY_NEWOBJ:
        if ((rc = save(w, p->u.o.fn, depth + 1)) < 0 ||
            (rc = p->flags & CK_PY_F_ARGC ? save_argc(w, p, depth + 1)
                                          : save(w, p->u.o.args, depth + 1)) < 0)
            return rc;
        w_op(w, p->kind == CK_PY_REDUCE ? OP_REDUCE : OP_NEWOBJ);
        memoize(w, p);
        if (ck_py_after(p) == &ck_py_after_none) /* most calls */
            return 0;
        if ((rc = save_batches(w, &p->u.o.after->list, 0, 0, depth)) < 0 ||
            (rc = save_batches(w, &p->u.o.after->dict, 1, 0, depth)) < 0)
            return rc;
        if (p->u.o.after->state != NULL) {
            if ((rc = save(w, p->u.o.after->state, depth + 1)) < 0)
                return rc;
            w_op(w, OP_BUILD);
        }
        return 0;
    case CK_PY_PERSID: {
        const char *rekey = NULL;

        if (w->cb != NULL && (rc = w->cb(w->ud, p, &rekey, w->err)) < 0)
            return rc;
        if ((rc = p->flags & CK_PY_F_PIDC
                      ? save_pidc(w, p, rekey, depth + 1)
                      : save(w, p->u.pid, depth + 1)) < 0)
            return rc;
        w_op(w, OP_BINPERSID);
        return 0;
    }
    }
    return ck_err_set(w->err, CK_EFORMAT, "unknown node kind %d", p->kind);
}

int ck_pickle_write(ck_py_t *root, const ck_limits_t *lim, ck_arena_t *arena,
                    ck_persid_cb cb, void *ud, ck_buf_t *out, ck_err_t *err)
{
    wr_t w = { 0 };
    int rc;

    w.out = out;
    w.lim = lim;
    w.a = arena;
    w.err = err;
    w.cb = cb;
    w.ud = ud;
    w.gen = ck_py_next_gen();
    w_op(&w, OP_PROTO);
    w_op(&w, 2);
    rc = save(&w, root, 0);
    if (rc < 0)
        return rc;
    w_op(&w, OP_STOP);
    if (out->oom)
        return w_nomem(&w);
    return 0;
}
