/*
 * numpy.c -- numpy values in a pickle, checked as data.
 *
 * numpy pickles an array, a scalar and a dtype as calls (numpy 1.24's
 * __reduce__, checked against real numpy; numpy 2 names its module
 * numpy._core instead of numpy.core):
 *
 *   array   _reconstruct(ndarray, (0,), b'b'), then BUILD
 *           (1, shape, dtype, is_fortran, rawdata)
 *   array   _frombuffer(buffer, dtype, shape, order)   (protocol 5)
 *   scalar  scalar(dtype, rawdata)
 *   dtype   dtype(typestr, False, True), then BUILD (3, byteorder,
 *           subarray, names, fields, elsize, alignment, flags) -- version
 *           4 adds a ninth item, ({}, (unit, num, 1, 1)) for datetimes
 *
 * Each is accepted only in exactly that shape, with a non-object dtype
 * (no 'O', no field or sub-array of one, no flag that marks object items)
 * and exactly shape * itemsize bytes of data; a numpy name anywhere else
 * (a bare numpy.ndarray, a numpy call through NEWOBJ, a dtype slot holding
 * another call) is refused.  Values the pickle drops (POP, POP_MARK)
 * are checked too: the graph loses them, torch.load does not.  Nothing
 * here marks nodes: visited nodes and
 * the dtypes checked are kept in two pointer tables of this file's own.
 * Bytes come as BYTES, protocol 2's _codecs.encode(text, 'latin1'),
 * bytes() when empty, or bytearray (protocol 5's in-band buffers, and
 * ckprep's own protocol 2 form of them, bytearray(bytes)).
 */
#include "numpy.h"

#include "pyval.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define NP_DEPTH 64        /* dtypes nested in fields or sub-arrays */
#define NP_MAX_DIMS 64     /* numpy 2's NPY_MAXDIMS */
#define NP_MAX_FIELDS 1024 /* fields of one structured dtype */
#define NP_ITEM_MAX 0x7fffffffu /* numpy 1's elsize is an int */

/* dtype flags numpy sets for dtypes without object items: NPY_NEEDS_INIT,
 * NPY_NEEDS_PYAPI, NPY_ALIGNED_STRUCT.  The others (NPY_ITEM_REFCOUNT,
 * NPY_LIST_PICKLE, NPY_ITEM_IS_POINTER, NPY_USE_GETITEM/SETITEM) mark
 * object items, and numpy trusts a pickled dtype's flags. */
#define NP_SAFE_FLAGS 0x98

static const char *const np_names[] = {
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.core.numeric._frombuffer",
    "numpy._core.numeric._frombuffer",
    "numpy.ndarray",
    "numpy.dtype",
};

static const char *const dt_units[] = {
    "Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as",
    "generic",
};

typedef struct {
    char kind;          /* b i u f c S U V M m */
    char order;         /* '<', '>' or '|' */
    uint8_t sub;        /* a sub-array dtype: ('<i8', (2,)) */
    uint8_t fields;     /* a structured dtype */
    uint64_t itemsize;
    char unit[8];       /* datetimes */
    uint64_t num;
} np_dt_t;

/* Open addressing over node pointers; a dtype table keeps each result. */
typedef struct {
    const ck_py_t **k;
    np_dt_t *v;         /* NULL for a set */
    size_t n, cap;
} tab_t;

typedef enum { NP_ARRAY, NP_SCALAR, NP_DTYPE } np_kind_t;

typedef struct {
    ck_err_t *err;      /* NULL: describing, no message, no tables */
    const char *what;   /* "array", "scalar", "dtype" for messages */
    tab_t seen, dts;
    size_t budget;      /* dtype parts left (describing) */
    uint32_t max_depth;
    char path[256];
    size_t plen;
} np_t;

typedef struct {
    np_kind_t kind;
    np_dt_t dt;
    int64_t shape[8];   /* the first dims, for descriptions */
    size_t ndim;
    const ck_py_t *raw; /* scalar data */
} np_val_t;

/* ---- tables ----------------------------------------------------------- */

static size_t slot(const tab_t *t, const ck_py_t *p)
{
    uint64_t h = (uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ull;
    size_t i = (size_t)(h >> 32) & (t->cap - 1);

    while (t->k[i] != NULL && t->k[i] != p)
        i = (i + 1) & (t->cap - 1);
    return i;
}

/* The slot holding p, or -1. */
static long tab_find(const tab_t *t, const ck_py_t *p)
{
    size_t i;

    if (t->cap == 0)
        return -1;
    i = slot(t, p);
    return t->k[i] != NULL ? (long)i : -1;
}

static int tab_put(tab_t *t, const ck_py_t *p, const np_dt_t *v, int map)
{
    size_t i;

    if (2 * (t->n + 1) > t->cap) {
        tab_t nt = { 0 };

        nt.cap = t->cap ? t->cap * 2 : 256;
        nt.k = ck_calloc(nt.cap, sizeof(*nt.k));
        nt.v = map ? ck_calloc(nt.cap, sizeof(*nt.v)) : NULL;
        if (nt.k == NULL || (map && nt.v == NULL)) {
            ck_free(nt.k);
            ck_free(nt.v);
            return CK_ENOMEM;
        }
        for (size_t j = 0; j < t->cap; j++) {
            if (t->k[j] == NULL)
                continue;
            i = slot(&nt, t->k[j]);
            nt.k[i] = t->k[j];
            if (map)
                nt.v[i] = t->v[j];
        }
        nt.n = t->n;
        ck_free(t->k);
        ck_free(t->v);
        *t = nt;
    }
    i = slot(t, p);
    t->k[i] = p;
    if (map)
        t->v[i] = *v;
    t->n++;
    return 0;
}

static void tab_release(tab_t *t)
{
    ck_free(t->k);
    ck_free(t->v);
    memset(t, 0, sizeof(*t));
}

/* ---- small readers ---------------------------------------------------- */

int ck_np_global(const char *module, const char *name)
{
    size_t ml = strlen(module);

    if (strchr(name, '.') != NULL) /* "numpy.core" + "multiarray.scalar" */
        return 0;
    for (size_t i = 0; i < CK_ARRAY_SIZE(np_names); i++) {
        const char *e = np_names[i];

        if (strncmp(e, module, ml) == 0 && e[ml] == '.' &&
            strcmp(e + ml + 1, name) == 0)
            return 1;
    }
    return 0;
}

static int np_name(const ck_py_t *g)
{
    return g != NULL && g->kind == CK_PY_GLOBAL &&
           ck_np_global(g->u.g.module, g->u.g.name);
}

/* One of numpy's names for a function of numpy 1 or numpy 2. */
static int np_fn(const ck_py_t *g, const char *sub, const char *name)
{
    char m1[64], m2[64];

    snprintf(m1, sizeof(m1), "numpy.core.%s", sub);
    snprintf(m2, sizeof(m2), "numpy._core.%s", sub);
    return ck_py_global_is(g, m1, name) || ck_py_global_is(g, m2, name);
}

/* A REDUCE of module.name with nargs arguments and nothing else. */
static int call_is(const ck_py_t *p, const char *module, const char *name,
                   size_t nargs)
{
    uint32_t n;

    return p != NULL && p->kind == CK_PY_REDUCE &&
           ck_py_global_is(p->u.o.fn, module, name) &&
           ck_py_args(p, &n) != NULL && n == nargs &&
           ck_py_after(p)->list.n == 0 &&
           ck_py_after(p)->dict.n == 0 && ck_py_after(p)->state == NULL;
}

static int tuple_n(const ck_py_t *p, size_t n)
{
    return p != NULL && p->kind == CK_PY_TUPLE && p->u.seq.n == n;
}

static int int_of(const ck_py_t *p, int64_t *v)
{
    if (p == NULL || p->kind != CK_PY_INT || p->len)
        return 0;
    *v = p->u.i.v;
    return 1;
}

static int int_is(const ck_py_t *p, int64_t want)
{
    int64_t v;

    return int_of(p, &v) && v == want;
}

/*
 * The length of a pickled bytes value into *n, and its first cap bytes
 * into out (may be NULL): 1, or 0 when p is no bytes value.  The latin-1
 * text of _codecs.encode must hold only code points below 256, as
 * encode() would otherwise fail.
 */
static int bytes_of(const ck_py_t *p, uint64_t *n, uint8_t *out, size_t cap)
{
    const ck_py_t *t;
    ck_py_t **a;
    uint32_t na = 0;

    if (p == NULL)
        return 0;
    if (p->kind == CK_PY_BYTES || p->kind == CK_PY_BYTEARRAY) {
        *n = p->len;
        if (out != NULL)
            memcpy(out, p->u.s.s, p->len < cap ? p->len : cap);
        return 1;
    }
    if (call_is(p, "builtins", "bytes", 0) ||
        call_is(p, "builtins", "bytearray", 0)) {
        *n = 0;
        return 1;
    }
    if (call_is(p, "builtins", "bytearray", 1)) {
        t = ck_py_args(p, &na)[0];
        return t->kind != CK_PY_REDUCE || call_is(t, "_codecs", "encode", 2)
                   ? bytes_of(t, n, out, cap) : 0;
    }
    if (!call_is(p, "_codecs", "encode", 2) ||
        !ck_py_str_eq((a = ck_py_args(p, &na))[1], "latin1"))
        return 0;
    t = a[0];
    if (t->kind != CK_PY_STR)
        return 0;
    *n = 0;
    for (size_t i = 0; i < t->len; i++) {
        uint8_t c = (uint8_t)t->u.s.s[i], b = c;

        if (c >= 0x80) {
            uint8_t d = i + 1 < t->len ? (uint8_t)t->u.s.s[i + 1] : 0;

            if ((c != 0xc2 && c != 0xc3) || (d & 0xc0) != 0x80)
                return 0; /* past U+00FF */
            b = (uint8_t)((c & 0x03) << 6 | (d & 0x3f));
            i++;
        }
        if (out != NULL && *n < cap)
            out[*n] = b;
        ++*n;
    }
    return 1;
}

static int bad(np_t *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad(np_t *s, int code, const char *fmt, ...)
{
    char detail[512];
    va_list ap;

    if (s->err == NULL)
        return code;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    return ck_err_set(s->err, code, "numpy %s at %s: %s", s->what,
                      s->plen ? s->path : "the top level", detail);
}

/* A tuple of non-negative ints: its product into *numel; 0 or an error. */
static int shape_of(np_t *s, const ck_py_t *t, np_val_t *v, uint64_t *numel)
{
    if (t == NULL || t->kind != CK_PY_TUPLE || t->u.seq.n > NP_MAX_DIMS)
        return bad(s, CK_EFORMAT, "shape is not a tuple of at most %d ints",
                   NP_MAX_DIMS);
    *numel = 1;
    if (v != NULL)
        v->ndim = t->u.seq.n;
    for (size_t i = 0; i < t->u.seq.n; i++) {
        int64_t d;

        if (!int_of(t->u.seq.v[i], &d) || d < 0)
            return bad(s, CK_EFORMAT, "shape holds something other than a "
                       "non-negative int");
        if (ck_mul_u64(*numel, (uint64_t)d, numel) < 0)
            return bad(s, CK_EFORMAT, "element count overflows");
        if (v != NULL && i < CK_ARRAY_SIZE(v->shape))
            v->shape[i] = d;
    }
    return 0;
}

/* ---- dtypes ----------------------------------------------------------- */

/* The type string dtype.__reduce__ gives: 0, 1 for an object dtype, -1. */
static int typestr(const ck_py_t *p, np_dt_t *d)
{
    const char *s = p->u.s.s;
    size_t n = p->len;
    uint64_t v = 0;

    memset(d, 0, sizeof(*d));
    d->kind = s[0];
    if (n == 0 || strlen(s) != n)
        return -1;
    if (s[0] == 'O')
        return 1;
    if (strcmp(s, "b1") == 0) {
        d->itemsize = 1;
        return 0;
    }
    if (strcmp(s, "M8") == 0 || strcmp(s, "m8") == 0) {
        d->itemsize = 8;
        return 0;
    }
    if (n < 2 || n > 11 || (s[1] == '0' && n > 2))
        return -1;
    for (size_t i = 1; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    switch (s[0]) {
    case 'i':
    case 'u':
        if (v != 1 && v != 2 && v != 4 && v != 8)
            return -1;
        break;
    case 'f':
        if (v != 2 && v != 4 && v != 8 && v != 16)
            return -1;
        break;
    case 'c':
        if (v != 8 && v != 16 && v != 32)
            return -1;
        break;
    case 'S':
    case 'V':
        break;
    case 'U':
        v *= 4;
        break;
    default:
        return -1;
    }
    if (v > NP_ITEM_MAX)
        return -1;
    d->itemsize = v;
    return 0;
}

static int dtype(np_t *s, const ck_py_t *p, int depth, np_dt_t *out);

/* state[2]: (base dtype, shape); its bytes must be the dtype's. */
static int subarray(np_t *s, const ck_py_t *sa, int depth, np_dt_t *d)
{
    np_dt_t base;
    uint64_t numel, bytes;
    int rc;

    if (!tuple_n(sa, 2))
        return bad(s, CK_EFORMAT, "dtype sub-array is not (dtype, shape)");
    if ((rc = dtype(s, sa->u.seq.v[0], depth + 1, &base)) < 0 ||
        (rc = shape_of(s, sa->u.seq.v[1], NULL, &numel)) < 0)
        return rc;
    if (ck_mul_u64(base.itemsize, numel, &bytes) < 0 || bytes != d->itemsize)
        return bad(s, CK_EFORMAT, "dtype sub-array of %llu bytes in a dtype "
                   "of %llu", (unsigned long long)bytes,
                   (unsigned long long)d->itemsize);
    d->sub = 1;
    return 0;
}

/* One value of the fields dict: (dtype, offset[, title]) inside elsize. */
static int field(np_t *s, const ck_py_t *f, int depth, const np_dt_t *d)
{
    np_dt_t fd;
    int64_t off = -1;
    int rc;

    if (f == NULL || f->kind != CK_PY_TUPLE ||
        (f->u.seq.n != 2 && f->u.seq.n != 3) ||
        (f->u.seq.n == 3 && f->u.seq.v[2]->kind != CK_PY_STR &&
         f->u.seq.v[2]->kind != CK_PY_NONE))
        return bad(s, CK_EFORMAT, "dtype field is not (dtype, offset[, "
                   "title])");
    if ((rc = dtype(s, f->u.seq.v[0], depth + 1, &fd)) < 0)
        return rc;
    if (!int_of(f->u.seq.v[1], &off) || off < 0 ||
        (uint64_t)off > d->itemsize || fd.itemsize > d->itemsize - (uint64_t)off)
        return bad(s, CK_EFORMAT, "dtype field of %llu bytes at offset %lld "
                   "outside its %llu-byte record",
                   (unsigned long long)fd.itemsize, (long long)off,
                   (unsigned long long)d->itemsize);
    return 0;
}

/* state[3] and [4]: names, a tuple of str, each a key of the fields dict. */
static int fields(np_t *s, const ck_py_t *names, const ck_py_t *fd, int depth,
                  np_dt_t *d)
{
    int rc;

    if (names->kind != CK_PY_TUPLE || fd->kind != CK_PY_DICT)
        return bad(s, CK_EFORMAT, "dtype names and fields are not a tuple "
                   "and a dict");
    if (names->u.seq.n > NP_MAX_FIELDS)
        return bad(s, CK_EUNSUPPORTED, "dtype with more than %d fields",
                   NP_MAX_FIELDS);
    if (fd->u.seq.n / 2 < names->u.seq.n ||
        fd->u.seq.n / 2 > 2 * names->u.seq.n)
        return bad(s, CK_EFORMAT, "dtype fields do not match its names");
    for (size_t i = 0; i + 1 < fd->u.seq.n; i += 2) {
        if (fd->u.seq.v[i]->kind != CK_PY_STR)
            return bad(s, CK_EFORMAT, "dtype field name is not a str");
        if ((rc = field(s, fd->u.seq.v[i + 1], depth, d)) < 0)
            return rc;
    }
    for (size_t i = 0; i < names->u.seq.n; i++) {
        const ck_py_t *nm = names->u.seq.v[i];

        if (nm->kind != CK_PY_STR ||
            ck_py_map_get((ck_py_t *)fd, nm->u.s.s, NULL) == NULL)
            return bad(s, CK_EFORMAT, "dtype name without a field");
    }
    d->fields = 1;
    return 0;
}

/* state[8] of a datetime: ({}, (unit, num, 1, 1)). */
static int dt_meta(np_t *s, const ck_py_t *m, np_dt_t *d)
{
    const ck_py_t *t;
    uint8_t u[8];
    uint64_t n = 0;
    int64_t num = 0;

    if (!tuple_n(m, 2) || m->u.seq.v[0]->kind != CK_PY_DICT ||
        m->u.seq.v[0]->u.seq.n != 0 || !tuple_n(m->u.seq.v[1], 4))
        return bad(s, CK_EFORMAT, "datetime metadata is not ({}, (unit, "
                   "num, 1, 1))");
    t = m->u.seq.v[1];
    if (!bytes_of(t->u.seq.v[0], &n, u, sizeof(u)) || n >= sizeof(u) ||
        !int_of(t->u.seq.v[1], &num) || num < 1 || num > INT32_MAX ||
        !int_is(t->u.seq.v[2], 1) || !int_is(t->u.seq.v[3], 1))
        return bad(s, CK_EFORMAT, "datetime metadata is not ({}, (unit, "
                   "num, 1, 1))");
    memcpy(d->unit, u, (size_t)n);
    d->unit[n] = '\0';
    for (size_t i = 0; i < CK_ARRAY_SIZE(dt_units); i++)
        if (strlen(d->unit) == n && strcmp(d->unit, dt_units[i]) == 0) {
            d->num = (uint64_t)num;
            return 0;
        }
    return bad(s, CK_EFORMAT, "unknown datetime unit");
}

static int dtype_state(np_t *s, const ck_py_t *st, int depth, np_dt_t *d)
{
    const ck_py_t *const *v;
    int64_t ver = 0, elsize = 0, align = 0, flags = 0;
    int rc;
    int fixed = strchr("SUV", d->kind) == NULL;
    int one = d->kind == 'b' || d->kind == 'S' || d->kind == 'V' ||
              d->itemsize == 1;
    char bo;

    if (st == NULL || st->kind != CK_PY_TUPLE ||
        (st->u.seq.n != 8 && st->u.seq.n != 9))
        return bad(s, CK_EFORMAT, "dtype state is not numpy's tuple of 8 "
                   "or 9 items");
    v = (const ck_py_t *const *)st->u.seq.v;
    if (!int_of(v[0], &ver) || ver != (st->u.seq.n == 8 ? 3 : 4) ||
        !int_of(v[5], &elsize) || !int_of(v[6], &align) ||
        !int_of(v[7], &flags))
        return bad(s, CK_EFORMAT, "dtype state is not (version, byteorder, "
                   "subarray, names, fields, elsize, alignment, flags)");
    bo = v[1]->kind == CK_PY_STR && v[1]->len == 1 ? v[1]->u.s.s[0] : 0;
    if (one ? bo != '|' : bo != '<' && bo != '>')
        return bad(s, CK_EFORMAT, "dtype byteorder is not what numpy writes "
                   "for '%c%llu'", d->kind, (unsigned long long)d->itemsize);
    d->order = bo;
    if (fixed && (elsize != -1 || align != -1 || v[2]->kind != CK_PY_NONE ||
                  v[3]->kind != CK_PY_NONE || v[4]->kind != CK_PY_NONE))
        return bad(s, CK_EFORMAT, "dtype state of a fixed-size type with a "
                   "size, alignment, sub-array or fields");
    if (!fixed && (elsize < 0 || (uint64_t)elsize != d->itemsize ||
                   align < 1 || align > 16 || (align & (align - 1)) != 0 ||
                   (d->kind == 'S' && align != 1) ||
                   (d->kind == 'U' && align != 4)))
        return bad(s, CK_EFORMAT, "dtype size %lld or alignment %lld does "
                   "not fit its type", (long long)elsize, (long long)align);
    if (d->kind != 'V' && (v[2]->kind != CK_PY_NONE ||
                           v[3]->kind != CK_PY_NONE || v[4]->kind != CK_PY_NONE))
        return bad(s, CK_EFORMAT, "sub-array or fields in a dtype that is "
                   "no void type");
    if (v[2]->kind != CK_PY_NONE &&
        (v[3]->kind != CK_PY_NONE || v[4]->kind != CK_PY_NONE))
        return bad(s, CK_EFORMAT, "dtype with both a sub-array and fields");
    if ((v[3]->kind == CK_PY_NONE) != (v[4]->kind == CK_PY_NONE))
        return bad(s, CK_EFORMAT, "dtype names without fields, or fields "
                   "without names");
    if (d->kind == 'M' || d->kind == 'm') {
        if (ver != 4)
            return bad(s, CK_EFORMAT, "datetime dtype without its unit");
        if ((rc = dt_meta(s, v[8], d)) < 0)
            return rc;
    } else if (ver == 4) {
        return bad(s, CK_EUNSUPPORTED, "dtype metadata (a version 4 state) "
                   "outside a datetime");
    }
    if (v[2]->kind != CK_PY_NONE && (rc = subarray(s, v[2], depth, d)) < 0)
        return rc;
    if (v[3]->kind != CK_PY_NONE &&
        (rc = fields(s, v[3], v[4], depth, d)) < 0)
        return rc;
    /* after the fields: an object field is named as such first */
    if (((uint64_t)flags & 0xff & ~(uint64_t)NP_SAFE_FLAGS) != 0 ||
        flags < -128 || flags > 255)
        return bad(s, CK_EUNSAFE, "dtype flags 0x%02llx mark Python object "
                   "items", (unsigned long long)flags & 0xff);
    return 0;
}

static int dtype(np_t *s, const ck_py_t *p, int depth, np_dt_t *out)
{
    const ck_py_t *const *a;
    uint32_t na = 0;
    long memo = s->err ? tab_find(&s->dts, p) : -1;
    np_dt_t d;
    int rc;

    if (memo >= 0) {
        *out = s->dts.v[memo];
        return 0;
    }
    if (depth > NP_DEPTH)
        return bad(s, CK_EFORMAT, "dtypes nested deeper than %d", NP_DEPTH);
    if (s->err == NULL && s->budget-- == 0)
        return CK_ELIMIT;
    if (p == NULL || p->kind != CK_PY_REDUCE ||
        !ck_py_global_is(p->u.o.fn, "numpy", "dtype")) {
        if (p != NULL && (p->kind == CK_PY_REDUCE || p->kind == CK_PY_NEWOBJ) &&
            p->u.o.fn->kind == CK_PY_GLOBAL)
            return bad(s, CK_EUNSAFE, "its dtype is a call of %s.%s, not "
                       "numpy.dtype", ck_py_module3(p->u.o.fn->u.g.module),
                       p->u.o.fn->u.g.name);
        return bad(s, CK_EFORMAT, "its dtype is not a numpy.dtype call");
    }
    if ((a = (const ck_py_t *const *)ck_py_args(p, &na)) == NULL)
        return bad(s, CK_EFORMAT, "dtype arguments are not a tuple");
    if (na != 3 || a[0]->kind != CK_PY_STR ||
        a[1]->kind != CK_PY_BOOL || a[1]->b || a[2]->kind != CK_PY_BOOL ||
        !a[2]->b || ck_py_after(p)->list.n || ck_py_after(p)->dict.n)
        return bad(s, CK_EFORMAT, "dtype arguments are not (str, False, "
                   "True)");
    rc = typestr(a[0], &d);
    if (rc > 0)
        return bad(s, CK_EUNSAFE, "object dtype '%.16s': its items are "
                   "Python objects, which torch.load would unpickle",
                   a[0]->u.s.s);
    if (rc < 0)
        return bad(s, CK_EUNSUPPORTED, "dtype '%.16s' is not a numpy type "
                   "string", a[0]->u.s.s);
    if ((rc = dtype_state(s, ck_py_after(p)->state, depth, &d)) < 0)
        return rc;
    if (s->err != NULL && tab_put(&s->dts, p, &d, 1) < 0)
        return ck_err_set(s->err, CK_ENOMEM, "out of memory");
    *out = d;
    return 0;
}

/* ---- arrays and scalars ----------------------------------------------- */

/* The dtype of an array or scalar: no sub-array (numpy never pickles one
 * there: it makes the sub-array's dims the array's). */
static int item_dtype(np_t *s, const ck_py_t *p, np_dt_t *d)
{
    int rc = dtype(s, p, 0, d);

    if (rc == 0 && d->sub)
        return bad(s, CK_EFORMAT, "its dtype has a sub-array shape, which "
                   "numpy never pickles there");
    return rc;
}

/* rawdata against shape * itemsize. */
static int data(np_t *s, const ck_py_t *raw, uint64_t numel, const np_dt_t *d)
{
    uint64_t n, need;

    if (!bytes_of(raw, &n, NULL, 0))
        return bad(s, raw != NULL && raw->kind == CK_PY_LIST ? CK_EUNSAFE
                                                              : CK_EFORMAT,
                   "its data is %s, not bytes",
                   raw != NULL && raw->kind == CK_PY_LIST
                       ? "a list of Python objects" : "something else");
    if (ck_mul_u64(numel, d->itemsize, &need) < 0 || n != need)
        return bad(s, CK_EFORMAT, "its data holds %llu bytes, %llu items of "
                   "%llu bytes need %llu", (unsigned long long)n,
                   (unsigned long long)numel, (unsigned long long)d->itemsize,
                   (unsigned long long)need);
    return 0;
}

/* _reconstruct(ndarray, (0,), b'b') with (1, shape, dtype, fortran, raw). */
static int array(np_t *s, const ck_py_t *p, np_val_t *v)
{
    uint32_t na = 0;
    const ck_py_t *const *a = (const ck_py_t *const *)ck_py_args(p, &na);
    const ck_py_t *st = ck_py_after(p)->state;
    uint64_t numel, n = 0;
    uint8_t b = 0;
    int rc;

    if (na == 3 && a[0]->kind == CK_PY_GLOBAL &&
        !ck_py_global_is(a[0], "numpy", "ndarray"))
        return bad(s, CK_EUNSAFE, "_reconstruct of %s.%s, not numpy.ndarray",
                   ck_py_module3(a[0]->u.g.module), a[0]->u.g.name);
    if (na != 3 || a[0]->kind != CK_PY_GLOBAL ||
        !tuple_n(a[1], 1) || !int_is(a[1]->u.seq.v[0], 0) ||
        !bytes_of(a[2], &n, &b, 1) || n != 1 || b != 'b' ||
        ck_py_after(p)->list.n || ck_py_after(p)->dict.n)
        return bad(s, CK_EFORMAT, "_reconstruct arguments are not "
                   "(numpy.ndarray, (0,), b'b')");
    if (!tuple_n(st, 5) || !int_is(st->u.seq.v[0], 1) ||
        st->u.seq.v[3]->kind != CK_PY_BOOL)
        return bad(s, CK_EFORMAT, "its state is not (1, shape, dtype, "
                   "is_fortran, rawdata)");
    if ((rc = shape_of(s, st->u.seq.v[1], v, &numel)) < 0 ||
        (rc = item_dtype(s, st->u.seq.v[2], &v->dt)) < 0)
        return rc;
    return data(s, st->u.seq.v[4], numel, &v->dt);
}

/* _frombuffer(buffer, dtype, shape, order): protocol 5's arrays. */
static int frombuffer(np_t *s, const ck_py_t *p, np_val_t *v)
{
    uint32_t na = 0;
    const ck_py_t *const *a = (const ck_py_t *const *)ck_py_args(p, &na);
    uint64_t numel;
    int rc;

    if (na != 4 || ck_py_after(p)->state != NULL || ck_py_after(p)->list.n ||
        ck_py_after(p)->dict.n || (!ck_py_str_eq(a[3], "C") && !ck_py_str_eq(a[3], "F")))
        return bad(s, CK_EFORMAT, "_frombuffer arguments are not (buffer, "
                   "dtype, shape, order)");
    if ((rc = item_dtype(s, a[1], &v->dt)) < 0 ||
        (rc = shape_of(s, a[2], v, &numel)) < 0)
        return rc;
    return data(s, a[0], numel, &v->dt);
}

/* scalar(dtype, rawdata) */
static int scalar(np_t *s, const ck_py_t *p, np_val_t *v)
{
    uint32_t na = 0;
    const ck_py_t *const *a = (const ck_py_t *const *)ck_py_args(p, &na);
    int rc;

    if (na != 2 || ck_py_after(p)->state != NULL || ck_py_after(p)->list.n ||
        ck_py_after(p)->dict.n)
        return bad(s, CK_EFORMAT, "scalar arguments are not (dtype, bytes)");
    if ((rc = item_dtype(s, a[0], &v->dt)) < 0)
        return rc;
    v->raw = a[1];
    return data(s, a[1], 1, &v->dt);
}

/* A call of a numpy name: the value it makes, checked. */
static int value(np_t *s, const ck_py_t *p, np_val_t *v)
{
    const ck_py_t *fn = p->u.o.fn;
    uint32_t na = 0;

    memset(v, 0, sizeof(*v));
    s->what = "value";
    if (ck_py_args(p, &na) == NULL)
        return bad(s, CK_EFORMAT, "%s.%s called without an argument tuple",
                   fn->u.g.module, fn->u.g.name);
    if (p->kind != CK_PY_REDUCE)
        return bad(s, CK_EUNSAFE, "%s.%s called through NEWOBJ",
                   fn->u.g.module, fn->u.g.name);
    if (np_fn(fn, "multiarray", "_reconstruct")) {
        s->what = "array";
        v->kind = NP_ARRAY;
        return array(s, p, v);
    }
    if (np_fn(fn, "numeric", "_frombuffer")) {
        s->what = "array";
        v->kind = NP_ARRAY;
        return frombuffer(s, p, v);
    }
    if (np_fn(fn, "multiarray", "scalar")) {
        s->what = "scalar";
        v->kind = NP_SCALAR;
        return scalar(s, p, v);
    }
    if (ck_py_global_is(fn, "numpy", "dtype")) {
        s->what = "dtype";
        v->kind = NP_DTYPE;
        return dtype(s, p, 0, &v->dt);
    }
    return bad(s, CK_EUNSAFE, "%s.%s called, which numpy's pickles never do",
               fn->u.g.module, fn->u.g.name);
}

/* ---- the graph -------------------------------------------------------- */

typedef struct {
    np_t np;
    ck_ckpt_t *c;
} walk_t;

static int walk(walk_t *w, const ck_py_t *p, uint32_t depth);

static int walk_items(walk_t *w, const ck_py_vec_t *v, int pairs,
                      uint32_t depth)
{
    np_t *s = &w->np;
    size_t keep = s->plen;
    int rc;

    for (size_t i = 0; i < v->n; i++) {
        const ck_py_t *k = pairs && i % 2 == 1 ? v->v[i - 1] : NULL;

        if (k != NULL && k->kind == CK_PY_STR && keep < sizeof(s->path) - 2) {
            int m = snprintf(s->path + keep, sizeof(s->path) - keep, "%s%s",
                             keep ? "/" : "", k->u.s.s);

            s->plen = keep + (size_t)m < sizeof(s->path)
                          ? keep + (size_t)m : sizeof(s->path) - 1;
        }
        rc = walk(w, v->v[i], depth + 1);
        s->plen = keep;
        s->path[keep] = '\0';
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int too_deep(np_t *s)
{
    return ck_err_set(s->err, CK_ELIMIT, "object nesting deeper than %u",
                      s->max_depth);
}

/* A call's arguments: its tuple, or a compact call's items (pickle.h)
 * as they would be met in it. */
static int walk_args(walk_t *w, const ck_py_t *p, uint32_t depth)
{
    ck_py_t **v;
    uint32_t n;
    int rc;

    if (!(p->flags & CK_PY_F_ARGC))
        return walk(w, p->u.o.args, depth + 1);
    if (depth + 1 > w->np.max_depth) /* as at the tuple */
        return too_deep(&w->np);
    v = ck_py_args(p, &n);
    for (uint32_t i = 0; i < n; i++)
        if ((rc = walk(w, v[i], depth + 2)) < 0)
            return rc;
    return 0;
}

static int walk(walk_t *w, const ck_py_t *p, uint32_t depth)
{
    np_t *s = &w->np;
    const ck_py_t *fn;
    np_val_t v;
    int rc;

    if (p == NULL || tab_find(&s->seen, p) >= 0)
        return 0;
    if (depth > s->max_depth)
        return too_deep(s);
    if (tab_put(&s->seen, p, NULL, 0) < 0)
        return ck_err_set(s->err, CK_ENOMEM, "out of memory");
    switch ((ck_py_kind_t)p->kind) {
    case CK_PY_GLOBAL:
        if (!np_name(p))
            return 0;
        s->what = "name";
        return bad(s, CK_EUNSAFE, "%s.%s outside the pickle of a numpy "
                   "array, scalar or dtype", p->u.g.module, p->u.g.name);
    case CK_PY_TUPLE:
    case CK_PY_LIST:
    case CK_PY_SET:
    case CK_PY_FROZENSET:
        return walk_items(w, &p->u.seq, 0, depth);
    case CK_PY_DICT:
        return walk_items(w, &p->u.seq, 1, depth);
    case CK_PY_PERSID:
        if (p->flags & CK_PY_F_PIDC) { /* its tuple's items */
            ck_py_t *item[5], key;
            size_t n;

            if (depth + 1 > s->max_depth) /* as at the tuple */
                return too_deep(s);
            (void)ck_py_pid_items(p, item, 5, &n, &key);
            for (size_t i = 0; i < n; i++)
                if (item[i] != &key && /* a str: nothing to walk */
                    (rc = walk(w, item[i], depth + 2)) < 0)
                    return rc;
            return 0;
        }
        return walk(w, p->u.pid, depth + 1);
    case CK_PY_REDUCE:
    case CK_PY_NEWOBJ:
        fn = p->u.o.fn;
        if (np_name(fn))
            return value(s, p, &v); /* every part checked, nothing left */
        if ((fn->kind == CK_PY_REDUCE || fn->kind == CK_PY_NEWOBJ) &&
            np_name(fn->u.o.fn)) {
            s->what = "value";
            return bad(s, CK_EUNSAFE, "the result of %s.%s is called",
                       fn->u.o.fn->u.g.module, fn->u.o.fn->u.g.name);
        }
        if ((rc = walk(w, fn, depth + 1)) < 0 ||
            (rc = walk_args(w, p, depth)) < 0 ||
            (rc = walk_items(w, &ck_py_after(p)->list, 0, depth)) < 0 ||
            (rc = walk_items(w, &ck_py_after(p)->dict, 1, depth)) < 0)
            return rc;
        return walk(w, ck_py_after(p)->state, depth + 1);
    default:
        return 0;
    }
}

int ck_np_check(ck_ckpt_t *c, ck_err_t *err)
{
    walk_t w;
    int rc, any = 0;

    for (size_t i = 0; i < c->pk.globals.n && !any; i++)
        any = np_name(c->pk.globals.v[i]);
    if (!any || c->pk.root == NULL)
        return 0;
    memset(&w, 0, sizeof(w));
    w.c = c;
    w.np.err = err;
    w.np.max_depth = c->lim.max_depth;
    rc = walk(&w, c->pk.root, 0);
    for (size_t i = 0; rc == 0 && i < c->pk.dropped.n; i++) {
        snprintf(w.np.path, sizeof(w.np.path), "a value POP drops");
        w.np.plen = strlen(w.np.path);
        rc = walk(&w, c->pk.dropped.v[i], 0);
    }
    tab_release(&w.np.seen);
    tab_release(&w.np.dts);
    return rc;
}

/* ---- descriptions ----------------------------------------------------- */

static void dt_name(const np_dt_t *d, char *out, size_t n)
{
    const char *bo = d->order == '>' ? ">" : "";
    unsigned long long bits = (unsigned long long)d->itemsize * 8;

    switch (d->kind) {
    case 'b': snprintf(out, n, "bool"); break;
    case 'i': snprintf(out, n, "%sint%llu", bo, bits); break;
    case 'u': snprintf(out, n, "%suint%llu", bo, bits); break;
    case 'f': snprintf(out, n, "%sfloat%llu", bo, bits); break;
    case 'c': snprintf(out, n, "%scomplex%llu", bo, bits); break;
    case 'U':
        snprintf(out, n, "%cU%llu", d->order,
                 (unsigned long long)d->itemsize / 4);
        break;
    case 'M':
    case 'm':
        if (d->num > 1)
            snprintf(out, n, "%s%s[%llu%s]", bo,
                     d->kind == 'M' ? "datetime64" : "timedelta64",
                     (unsigned long long)d->num, d->unit);
        else
            snprintf(out, n, "%s%s[%s]", bo,
                     d->kind == 'M' ? "datetime64" : "timedelta64", d->unit);
        break;
    default:
        snprintf(out, n, "%s%c%llu", d->fields ? "struct " : "", d->kind,
                 (unsigned long long)d->itemsize);
    }
}

/* A little-endian bool, int or float64 scalar's value, as Python shows
 * it, after a blank; "" for the others. */
static void scalar_text(const np_val_t *v, char *out, size_t n)
{
    uint8_t b[8] = { 0 };
    uint64_t len = 0, u = 0;
    const np_dt_t *d = &v->dt;

    out[0] = '\0';
    if (d->order == '>' || d->itemsize > 8 ||
        !bytes_of(v->raw, &len, b, sizeof(b)) || len != d->itemsize)
        return;
    for (size_t i = 0; i < len; i++)
        u |= (uint64_t)b[i] << (8 * i);
    if (d->kind == 'b') {
        snprintf(out, n, " %s", u ? "True" : "False");
    } else if (d->kind == 'u') {
        snprintf(out, n, " %llu", (unsigned long long)u);
    } else if (d->kind == 'i') {
        int sh = 64 - 8 * (int)len;
        int64_t x = (int64_t)(u << sh) >> sh;

        snprintf(out, n, " %lld", (long long)x);
    } else if (d->kind == 'f' && len == 8) {
        double x;

        memcpy(&x, &u, 8);
        out[0] = ' ';
        ck_pyfloat_repr(x, out + 1, n - 1);
    }
}

int ck_np_describe(const ck_py_t *p, char *buf, size_t n)
{
    np_t s = { 0 };
    np_val_t v;
    char dn[64], val[48];
    size_t o;

    if (p == NULL || (p->kind != CK_PY_REDUCE && p->kind != CK_PY_NEWOBJ) ||
        !np_name(p->u.o.fn) || n < 16)
        return 0;
    s.budget = 4096;
    if (value(&s, p, &v) < 0)
        return 0;
    dt_name(&v.dt, dn, sizeof(dn));
    switch (v.kind) {
    case NP_DTYPE:
        snprintf(buf, n, "dtype %s", dn);
        break;
    case NP_SCALAR:
        scalar_text(&v, val, sizeof(val));
        snprintf(buf, n, "%s scalar%s", dn, val);
        break;
    case NP_ARRAY:
        o = (size_t)snprintf(buf, n, "ndarray %s (", dn);
        for (size_t i = 0; i < v.ndim && o < n; i++) {
            if (i == CK_ARRAY_SIZE(v.shape)) {
                o += (size_t)snprintf(buf + o, n - o, ", ...");
                break;
            }
            o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "",
                                  (long long)v.shape[i]);
        }
        if (o < n)
            snprintf(buf + o, n - o, "%s)", v.ndim == 1 ? "," : "");
        break;
    }
    return 1;
}
