/*
 * pickle.c -- the pickle reader and the protocol 2 writer.
 *
 * The reader is a stack machine over a bounded cursor.  It never recurses,
 * never resolves a global and never calls anything: REDUCE, NEWOBJ, INST and
 * OBJ build call nodes, BUILD stores state in them, APPEND and SETITEM on a
 * call node record the items pickle would have added.  Its temporary stack,
 * mark stack and memo are heap arrays freed before return; every node it
 * makes lives in the caller's arena.
 *
 * The writer mirrors CPython's Pickler.save() at protocol 2 (Lib/pickle.py):
 * memoization by node identity in first-appearance order, _BATCHSIZE 1000,
 * save_reduce's order (callable, args, REDUCE/NEWOBJ, memoize, list items,
 * dict items, state, BUILD).  It recurses, bounded by ck_limits_t.max_depth.
 */
#include "pickle.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ck_limits_default(ck_limits_t *l)
{
    l->max_pickle_bytes = 1ull << 30;
    l->max_depth = 1000;
    l->max_memo = 1u << 24;
    l->max_string_bytes = 256ull << 20;
}

uint32_t ck_py_next_gen(void)
{
    static uint32_t gen;
    uint32_t g;

    do
        g = __atomic_add_fetch(&gen, 1, __ATOMIC_RELAXED);
    while (g == 0);
    return g;
}

/* ---- nodes ------------------------------------------------------------ */

ck_py_t *ck_py_new(ck_arena_t *a, ck_py_kind_t kind)
{
    ck_py_t *p = ck_arena_alloc(a, sizeof(*p));

    if (p != NULL)
        p->kind = (uint8_t)kind;
    return p;
}

ck_py_t *ck_py_int(ck_arena_t *a, int64_t v)
{
    ck_py_t *p = ck_py_new(a, CK_PY_INT);

    if (p != NULL)
        p->u.i.v = v;
    return p;
}

ck_py_t *ck_py_float(ck_arena_t *a, double v)
{
    ck_py_t *p = ck_py_new(a, CK_PY_FLOAT);
    uint64_t bits;

    if (p == NULL)
        return NULL;
    memcpy(&bits, &v, 8);
    for (int i = 0; i < 8; i++)
        p->u.f[i] = (uint8_t)(bits >> (56 - 8 * i));
    return p;
}

double ck_py_float_value(const ck_py_t *p)
{
    uint64_t bits = 0;
    double v;

    for (int i = 0; i < 8; i++)
        bits = bits << 8 | p->u.f[i];
    memcpy(&v, &bits, 8);
    return v;
}

ck_py_t *ck_py_str(ck_arena_t *a, const char *s, size_t n)
{
    ck_py_t *p = ck_py_new(a, CK_PY_STR);

    if (p == NULL)
        return NULL;
    p->u.s.s = ck_arena_strndup(a, s, n);
    p->u.s.n = n;
    return p->u.s.s != NULL ? p : NULL;
}

ck_py_t *ck_py_global(ck_arena_t *a, const char *module, const char *name)
{
    ck_py_t *p = ck_py_new(a, CK_PY_GLOBAL);

    if (p == NULL)
        return NULL;
    p->u.g.module = ck_arena_strdup(a, module);
    p->u.g.name = ck_arena_strdup(a, name);
    return p->u.g.module != NULL && p->u.g.name != NULL ? p : NULL;
}

int ck_py_vec_push(ck_arena_t *a, ck_py_vec_t *v, ck_py_t *item)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        ck_py_t **nv;

        if (cap > SIZE_MAX / sizeof(*nv))
            return CK_ENOMEM;
        nv = ck_arena_alloc(a, cap * sizeof(*nv));
        if (nv == NULL)
            return CK_ENOMEM;
        if (v->n)
            memcpy(nv, v->v, v->n * sizeof(*nv));
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = item;
    return 0;
}

void ck_py_vec_remove(ck_py_vec_t *v, size_t i, size_t count)
{
    memmove(v->v + i, v->v + i + count, (v->n - i - count) * sizeof(*v->v));
    v->n -= count;
}

int ck_py_str_eq(const ck_py_t *p, const char *s)
{
    size_t n = strlen(s);

    return p != NULL && p->kind == CK_PY_STR && p->u.s.n == n &&
           memcmp(p->u.s.s, s, n) == 0;
}

const char *ck_py_module3(const char *m)
{
    if (strcmp(m, "__builtin__") == 0)
        return "builtins";
    if (strcmp(m, "copy_reg") == 0)
        return "copyreg";
    return m;
}

int ck_py_global_is(const ck_py_t *p, const char *module, const char *name)
{
    return p != NULL && p->kind == CK_PY_GLOBAL &&
           strcmp(ck_py_module3(p->u.g.module), module) == 0 &&
           strcmp(p->u.g.name, name) == 0;
}

ck_py_vec_t *ck_py_mapping(ck_py_t *p)
{
    if (p == NULL)
        return NULL;
    if (p->kind == CK_PY_DICT)
        return &p->u.seq;
    if (p->kind == CK_PY_REDUCE || p->kind == CK_PY_NEWOBJ)
        return &p->u.o.dict;
    return NULL;
}

ck_py_t *ck_py_map_get(ck_py_t *map, const char *key, size_t *index)
{
    ck_py_vec_t *v = ck_py_mapping(map);

    if (v == NULL)
        return NULL;
    for (size_t i = 0; i + 1 < v->n; i += 2) {
        if (ck_py_str_eq(v->v[i], key)) {
            if (index != NULL)
                *index = i / 2;
            return v->v[i + 1];
        }
    }
    return NULL;
}

/* ---- reader ----------------------------------------------------------- */

typedef struct {
    const uint8_t *start, *p, *end;
    const ck_limits_t *lim;
    ck_arena_t *a;
    ck_err_t *err;
    ck_pickle_t *out;
    ck_py_t **stack;
    size_t sp, scap;
    size_t *marks;
    size_t mp, mcap;
    ck_py_t **memo;
    size_t memocap, memocount;
} rd_t;

static int rd_fail(rd_t *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int rd_fail(rd_t *r, int code, const char *fmt, ...)
{
    char what[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (code == -EAGAIN)
        ck_err_set(r->err, code, "pickle truncated: %s", what);
    else
        ck_err_set(r->err, code, "pickle at byte %zu: %s",
                   (size_t)(r->p - r->start), what);
    return code;
}

static int rd_nomem(rd_t *r)
{
    return rd_fail(r, CK_ENOMEM, "out of memory");
}

static int rd_need(rd_t *r, uint64_t n)
{
    if ((uint64_t)(r->end - r->p) < n)
        return rd_fail(r, -EAGAIN, "needs %llu more bytes",
                       (unsigned long long)n);
    return 0;
}

static uint64_t rd_le(const uint8_t *p, int n)
{
    uint64_t v = 0;

    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static int push(rd_t *r, ck_py_t *v)
{
    if (v == NULL)
        return rd_nomem(r);
    if (r->sp == r->scap) {
        size_t cap = r->scap ? r->scap * 2 : 64;
        ck_py_t **ns = ck_realloc(r->stack, cap * sizeof(*ns));

        if (ns == NULL)
            return rd_nomem(r);
        r->stack = ns;
        r->scap = cap;
    }
    r->stack[r->sp++] = v;
    return 0;
}

static size_t frame_base(rd_t *r)
{
    return r->mp ? r->marks[r->mp - 1] : 0;
}

static ck_py_t *pop(rd_t *r)
{
    if (r->sp <= frame_base(r)) {
        rd_fail(r, CK_EFORMAT, "stack underflow");
        return NULL;
    }
    return r->stack[--r->sp];
}

static ck_py_t *top(rd_t *r)
{
    if (r->sp <= frame_base(r)) {
        rd_fail(r, CK_EFORMAT, "stack underflow");
        return NULL;
    }
    return r->stack[r->sp - 1];
}

/* Pops to the last MARK; returns the base index or -1. */
static long pop_mark(rd_t *r)
{
    if (r->mp == 0) {
        rd_fail(r, CK_EFORMAT, "no MARK on the stack");
        return -1;
    }
    return (long)r->marks[--r->mp];
}

static int seq_from(rd_t *r, ck_py_vec_t *v, size_t base)
{
    size_t n = r->sp - base;

    v->n = v->cap = n;
    if (n) {
        v->v = ck_arena_alloc(r->a, n * sizeof(*v->v));
        if (v->v == NULL)
            return rd_nomem(r);
        memcpy(v->v, r->stack + base, n * sizeof(*v->v));
    }
    r->sp = base;
    return 0;
}

/* A line ending in '\n'; *n excludes it. */
static int rd_line(rd_t *r, const char **s, size_t *n)
{
    const uint8_t *nl;
    size_t avail = (size_t)(r->end - r->p);
    size_t cap = avail;

    if (cap > r->lim->max_string_bytes + 1)
        cap = r->lim->max_string_bytes + 1;
    nl = memchr(r->p, '\n', cap);
    if (nl == NULL) {
        if (cap < avail)
            return rd_fail(r, CK_ELIMIT, "text line longer than %llu bytes",
                           (unsigned long long)r->lim->max_string_bytes);
        return rd_fail(r, -EAGAIN, "line without newline");
    }
    *s = (const char *)r->p;
    *n = (size_t)(nl - r->p);
    r->p = nl + 1;
    return 0;
}

static int memo_put(rd_t *r, uint64_t idx, ck_py_t *v)
{
    if (v == NULL)
        return CK_EFORMAT;
    if (idx >= r->lim->max_memo)
        return rd_fail(r, CK_ELIMIT, "memo index %llu over the limit %u",
                       (unsigned long long)idx, r->lim->max_memo);
    if (idx >= r->memocap) {
        size_t cap = r->memocap ? r->memocap : 64;
        ck_py_t **nm;

        while (cap <= idx)
            cap *= 2;
        nm = ck_realloc(r->memo, cap * sizeof(*nm));
        if (nm == NULL)
            return rd_nomem(r);
        memset(nm + r->memocap, 0, (cap - r->memocap) * sizeof(*nm));
        r->memo = nm;
        r->memocap = cap;
    }
    if (r->memo[idx] == NULL)
        r->memocount++;
    r->memo[idx] = v;
    return 0;
}

static int memo_get(rd_t *r, uint64_t idx)
{
    if (idx >= r->memocap || r->memo[idx] == NULL)
        return rd_fail(r, CK_EFORMAT, "memo index %llu never stored",
                       (unsigned long long)idx);
    return push(r, r->memo[idx]);
}

static int parse_index(rd_t *r, uint64_t *idx)
{
    const char *s;
    size_t n;
    uint64_t v = 0;
    int rc = rd_line(r, &s, &n);

    if (rc < 0)
        return rc;
    if (n == 0 || n > 19)
        return rd_fail(r, CK_EFORMAT, "bad memo index");
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return rd_fail(r, CK_EFORMAT, "bad memo index");
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *idx = v;
    return 0;
}

/* Trim a LE two's complement integer to its minimal length. */
static size_t int_trim(const uint8_t *b, size_t n)
{
    while (n > 1 && ((b[n - 1] == 0x00 && !(b[n - 2] & 0x80)) ||
                     (b[n - 1] == 0xff && (b[n - 2] & 0x80))))
        n--;
    return n;
}

/* An int node from LE two's complement bytes (LONG1/LONG4). */
static ck_py_t *int_from_le(rd_t *r, const uint8_t *b, size_t n)
{
    ck_py_t *p = ck_py_new(r->a, CK_PY_INT);
    size_t m;

    if (p == NULL)
        return NULL;
    if (n == 0)
        return p;
    m = int_trim(b, n);
    if (m <= 8) {
        uint64_t v = rd_le(b, (int)m);

        if (m < 8 && (b[m - 1] & 0x80))
            v |= ~0ull << (8 * m);
        p->u.i.v = (int64_t)v;
        return p;
    }
    p->u.i.big = ck_arena_alloc(r->a, m);
    if (p->u.i.big == NULL)
        return NULL;
    memcpy(p->u.i.big, b, m);
    p->u.i.nbig = m;
    return p;
}

/* Decimal text (INT, LONG) to an int node; arbitrary size. */
static int push_decimal(rd_t *r, const char *s, size_t n)
{
    int neg = 0;
    uint8_t *mag;
    size_t cap, len = 1;

    if (n > 0 && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        s++;
        n--;
    }
    if (n == 0 || n > 100000)
        return rd_fail(r, CK_EFORMAT, "bad integer text");
    cap = n / 2 + 2;
    mag = ck_arena_alloc(r->a, cap);
    if (mag == NULL)
        return rd_nomem(r);
    for (size_t i = 0; i < n; i++) {
        unsigned carry;

        if (s[i] < '0' || s[i] > '9')
            return rd_fail(r, CK_EFORMAT, "bad integer text");
        carry = (unsigned)(s[i] - '0');
        for (size_t j = 0; j < len; j++) {
            unsigned v = mag[j] * 10u + carry;

            mag[j] = (uint8_t)v;
            carry = v >> 8;
        }
        if (carry)
            mag[len++] = (uint8_t)carry;
    }
    mag[len++] = 0; /* room for the sign */
    if (neg)
        ck_int_negate(mag, len);
    return push(r, int_from_le(r, mag, len));
}

void ck_int_negate(uint8_t *le, size_t n)
{
    unsigned carry = 1;

    for (size_t j = 0; j < n; j++) {
        unsigned v = (uint8_t)~le[j] + carry;

        le[j] = (uint8_t)v;
        carry = v >> 8;
    }
}

/* UTF-8 as Python decodes it with 'surrogatepass': surrogates allowed. */
static int utf8_valid(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        int k = ck_utf8_len(s + i, n - i, 1);

        if (k == 0)
            return 0;
        i += (size_t)k;
    }
    return 1;
}

static int push_string(rd_t *r, ck_py_kind_t kind, const void *s, size_t n)
{
    ck_py_t *p;

    if (n > r->lim->max_string_bytes)
        return rd_fail(r, CK_ELIMIT, "string of %zu bytes over the limit", n);
    if (kind == CK_PY_STR && !utf8_valid(s, n))
        return rd_fail(r, CK_EFORMAT, "str that is not valid UTF-8");
    p = ck_py_new(r->a, kind);
    if (p == NULL)
        return rd_nomem(r);
    p->u.s.s = ck_arena_strndup(r->a, s, n);
    p->u.s.n = n;
    return push(r, p->u.s.s != NULL ? p : NULL);
}

static int push_counted(rd_t *r, ck_py_kind_t kind, int width)
{
    uint64_t n;
    int rc = rd_need(r, (uint64_t)width);

    if (rc < 0)
        return rc;
    n = rd_le(r->p, width);
    r->p += width;
    if (n > r->lim->max_string_bytes)
        return rd_fail(r, CK_ELIMIT, "length %llu over the string limit",
                       (unsigned long long)n);
    rc = rd_need(r, n);
    if (rc < 0)
        return rc;
    r->p += n;
    return push_string(r, kind, r->p - n, (size_t)n);
}

static int utf8_put(uint8_t *d, uint32_t c)
{
    if (c < 0x80) {
        d[0] = (uint8_t)c;
        return 1;
    }
    if (c < 0x800) {
        d[0] = (uint8_t)(0xc0 | c >> 6);
        d[1] = (uint8_t)(0x80 | (c & 0x3f));
        return 2;
    }
    if (c < 0x10000) {
        d[0] = (uint8_t)(0xe0 | c >> 12);
        d[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3f));
        d[2] = (uint8_t)(0x80 | (c & 0x3f));
        return 3;
    }
    d[0] = (uint8_t)(0xf0 | c >> 18);
    d[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3f));
    d[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3f));
    d[3] = (uint8_t)(0x80 | (c & 0x3f));
    return 4;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* UNICODE: raw-unicode-escape, \uXXXX and \UXXXXXXXX; other bytes latin-1. */
static int push_raw_unicode(rd_t *r, const char *s, size_t n)
{
    uint8_t *d = ck_malloc(n * 4 + 1);
    size_t o = 0;
    int rc;

    if (d == NULL)
        return rd_nomem(r);
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        int w = 0;

        if (c == '\\' && i + 1 < n && (s[i + 1] == 'u' || s[i + 1] == 'U'))
            w = s[i + 1] == 'u' ? 4 : 8;
        if (w && i + 2 + (size_t)w <= n) {
            uint32_t cp = 0;
            int ok = 1;

            for (int k = 0; k < w; k++) {
                int h = hexval(s[i + 2 + (size_t)k]);

                if (h < 0)
                    ok = 0;
                cp = cp << 4 | (uint32_t)(h < 0 ? 0 : h);
            }
            if (ok && cp <= 0x10ffff) {
                o += (size_t)utf8_put(d + o, cp);
                i += 1 + (size_t)w;
                continue;
            }
        }
        o += (size_t)utf8_put(d + o, c);
    }
    rc = push_string(r, CK_PY_STR, d, o);
    ck_free(d);
    return rc;
}

/* STRING: a Python 2 repr in quotes, escapes decoded; the bytes are UTF-8. */
static int push_quoted(rd_t *r, const char *s, size_t n)
{
    uint8_t *d;
    size_t o = 0;
    int rc;

    if (n < 2 || (s[0] != '\'' && s[0] != '"') || s[n - 1] != s[0])
        return rd_fail(r, CK_EFORMAT, "STRING not quoted");
    s++;
    n -= 2;
    d = ck_malloc(n + 1);
    if (d == NULL)
        return rd_nomem(r);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];

        if (c != '\\' || i + 1 == n) {
            d[o++] = (uint8_t)c;
            continue;
        }
        c = s[++i];
        switch (c) {
        case 'n': d[o++] = '\n'; break;
        case 't': d[o++] = '\t'; break;
        case 'r': d[o++] = '\r'; break;
        case 'a': d[o++] = '\a'; break;
        case 'b': d[o++] = '\b'; break;
        case 'f': d[o++] = '\f'; break;
        case 'v': d[o++] = '\v'; break;
        case '\\':
        case '\'':
        case '"': d[o++] = (uint8_t)c; break;
        case '\n': break;
        case 'x':
            if (i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
                d[o++] = (uint8_t)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
                i += 2;
            } else {
                ck_free(d);
                return rd_fail(r, CK_EFORMAT, "bad \\x escape in STRING");
            }
            break;
        default:
            if (c >= '0' && c <= '7') {
                unsigned v = 0;
                int k = 0;

                while (k < 3 && i < n && s[i] >= '0' && s[i] <= '7') {
                    v = v * 8 + (unsigned)(s[i] - '0');
                    i++;
                    k++;
                }
                i--;
                d[o++] = (uint8_t)v;
            } else {
                d[o++] = '\\';
                d[o++] = (uint8_t)c;
            }
        }
    }
    rc = push_string(r, CK_PY_STR, d, o);
    ck_free(d);
    return rc;
}

static int add_global(rd_t *r, const char *m, size_t mn, const char *nm,
                      size_t nn)
{
    ck_py_t *g = ck_py_new(r->a, CK_PY_GLOBAL);
    ck_py_vec_t *gl = &r->out->globals;

    if (g == NULL)
        return rd_nomem(r);
    /* STACK_GLOBAL's names may hold anything; GLOBAL, which the writer
     * uses, ends each at '\n' */
    if (mn == 0 || nn == 0 || memchr(m, '\0', mn) || memchr(nm, '\0', nn) ||
        memchr(m, '\n', mn) || memchr(nm, '\n', nn))
        return rd_fail(r, CK_EFORMAT, "empty or binary global name");
    g->u.g.module = ck_arena_strndup(r->a, m, mn);
    g->u.g.name = ck_arena_strndup(r->a, nm, nn);
    if (g->u.g.module == NULL || g->u.g.name == NULL)
        return rd_nomem(r);
    for (size_t i = 0; i < gl->n; i++) {
        if (strcmp(gl->v[i]->u.g.module, g->u.g.module) == 0 &&
            strcmp(gl->v[i]->u.g.name, g->u.g.name) == 0)
            return push(r, g);
    }
    if (ck_py_vec_push(r->a, gl, g) < 0)
        return rd_nomem(r);
    return push(r, g);
}

static int push_call(rd_t *r, ck_py_kind_t kind, ck_py_t *fn, ck_py_t *args)
{
    ck_py_t *o;

    if (args->kind != CK_PY_TUPLE)
        return rd_fail(r, CK_EFORMAT, "call arguments are not a tuple");
    if (fn->kind != CK_PY_GLOBAL && fn->kind != CK_PY_REDUCE &&
        fn->kind != CK_PY_NEWOBJ)
        return rd_fail(r, CK_EFORMAT, "call of a value that is not callable");
    o = ck_py_new(r->a, kind);
    if (o == NULL)
        return rd_nomem(r);
    o->u.o.fn = fn;
    o->u.o.args = args;
    return push(r, o);
}

static int add_items(rd_t *r, ck_py_t *target, size_t base, int pairs)
{
    ck_py_vec_t *v;
    size_t n = r->sp - base;

    if (pairs) {
        if (target->kind == CK_PY_DICT)
            v = &target->u.seq;
        else if (target->kind == CK_PY_REDUCE || target->kind == CK_PY_NEWOBJ)
            v = &target->u.o.dict;
        else
            return rd_fail(r, CK_EFORMAT, "SETITEM on a value that is not a dict");
        if (n % 2)
            return rd_fail(r, CK_EFORMAT, "SETITEMS with an odd item count");
        for (size_t i = base; i < r->sp; i += 2) {
            int k = r->stack[i]->kind;

            if (k == CK_PY_LIST || k == CK_PY_DICT || k == CK_PY_SET ||
                k == CK_PY_BYTEARRAY)
                return rd_fail(r, CK_EFORMAT, "dict key of an unhashable type");
        }
    } else {
        if (target->kind == CK_PY_LIST)
            v = &target->u.seq;
        else if (target->kind == CK_PY_REDUCE || target->kind == CK_PY_NEWOBJ)
            v = &target->u.o.list;
        else
            return rd_fail(r, CK_EFORMAT, "APPEND on a value that is not a list");
    }
    for (size_t i = base; i < r->sp; i++)
        if (ck_py_vec_push(r->a, v, r->stack[i]) < 0)
            return rd_nomem(r);
    r->sp = base;
    return 0;
}

enum {
    OP_MARK = '(', OP_STOP = '.', OP_POP = '0', OP_POP_MARK = '1',
    OP_DUP = '2', OP_FLOAT = 'F', OP_INT = 'I', OP_BININT = 'J',
    OP_BININT1 = 'K', OP_LONG = 'L', OP_BININT2 = 'M', OP_NONE = 'N',
    OP_PERSID = 'P', OP_BINPERSID = 'Q', OP_REDUCE = 'R', OP_STRING = 'S',
    OP_BINSTRING = 'T', OP_SHORT_BINSTRING = 'U', OP_UNICODE = 'V',
    OP_BINUNICODE = 'X', OP_APPEND = 'a', OP_BUILD = 'b', OP_GLOBAL = 'c',
    OP_DICT = 'd', OP_EMPTY_DICT = '}', OP_APPENDS = 'e', OP_GET = 'g',
    OP_BINGET = 'h', OP_INST = 'i', OP_LONG_BINGET = 'j', OP_LIST = 'l',
    OP_EMPTY_LIST = ']', OP_OBJ = 'o', OP_PUT = 'p', OP_BINPUT = 'q',
    OP_LONG_BINPUT = 'r', OP_SETITEM = 's', OP_TUPLE = 't',
    OP_EMPTY_TUPLE = ')', OP_SETITEMS = 'u', OP_BINFLOAT = 'G',
    OP_PROTO = 0x80, OP_NEWOBJ = 0x81, OP_EXT1 = 0x82, OP_EXT2 = 0x83,
    OP_EXT4 = 0x84, OP_TUPLE1 = 0x85, OP_TUPLE2 = 0x86, OP_TUPLE3 = 0x87,
    OP_NEWTRUE = 0x88, OP_NEWFALSE = 0x89, OP_LONG1 = 0x8a, OP_LONG4 = 0x8b,
    OP_BINBYTES = 'B', OP_SHORT_BINBYTES = 'C', OP_SHORT_BINUNICODE = 0x8c,
    OP_BINUNICODE8 = 0x8d, OP_BINBYTES8 = 0x8e, OP_EMPTY_SET = 0x8f,
    OP_ADDITEMS = 0x90, OP_FROZENSET = 0x91, OP_NEWOBJ_EX = 0x92,
    OP_STACK_GLOBAL = 0x93, OP_MEMOIZE = 0x94, OP_FRAME = 0x95,
    OP_BYTEARRAY8 = 0x96, OP_NEXT_BUFFER = 0x97, OP_READONLY_BUFFER = 0x98,
};

static int tuple_of(rd_t *r, size_t base)
{
    ck_py_t *t = ck_py_new(r->a, CK_PY_TUPLE);

    if (t == NULL)
        return rd_nomem(r);
    if (seq_from(r, &t->u.seq, base) < 0)
        return CK_ENOMEM;
    return push(r, t);
}

/* One opcode.  Returns 0, 1 at STOP, or an error. */
static int rd_op(rd_t *r)
{
    const char *s, *s2;
    size_t n, n2;
    uint64_t idx;
    long base;
    ck_py_t *a, *b, *c;
    int op, rc;

    rc = rd_need(r, 1);
    if (rc < 0)
        return rc;
    op = *r->p++;
    switch (op) {
    case OP_PROTO:
        if ((rc = rd_need(r, 1)) < 0)
            return rc;
        if (*r->p > 5)
            return rd_fail(r, CK_EUNSUPPORTED, "pickle protocol %d", *r->p);
        if (r->out->protocol < 0)
            r->out->protocol = *r->p;
        r->p++;
        return 0;
    case OP_FRAME: {
        uint64_t len = 0;

        if ((rc = rd_need(r, 8)) < 0)
            return rc;
        for (int i = 7; i >= 0; i--)
            len = len << 8 | r->p[i];
        r->p += 8;
        /* as CPython's unpickler: a frame's bytes must all be there */
        return rd_need(r, len);
    }
    case OP_STOP:
        a = pop(r);
        if (a == NULL)
            return CK_EFORMAT;
        if (r->sp != 0 || r->mp != 0)
            return rd_fail(r, CK_EFORMAT, "STOP with %zu values and %zu marks left",
                           r->sp, r->mp);
        r->out->root = a;
        return 1;
    case OP_NONE:
        return push(r, ck_py_new(r->a, CK_PY_NONE));
    case OP_NEWTRUE:
    case OP_NEWFALSE:
        a = ck_py_new(r->a, CK_PY_BOOL);
        if (a != NULL)
            a->b = op == OP_NEWTRUE;
        return push(r, a);
    case OP_INT:
        if ((rc = rd_line(r, &s, &n)) < 0)
            return rc;
        if (n == 2 && (memcmp(s, "00", 2) == 0 || memcmp(s, "01", 2) == 0)) {
            a = ck_py_new(r->a, CK_PY_BOOL);
            if (a != NULL)
                a->b = s[1] == '1';
            return push(r, a);
        }
        return push_decimal(r, s, n);
    case OP_LONG:
        if ((rc = rd_line(r, &s, &n)) < 0)
            return rc;
        if (n > 0 && s[n - 1] == 'L')
            n--;
        return push_decimal(r, s, n);
    case OP_BININT:
        if ((rc = rd_need(r, 4)) < 0)
            return rc;
        a = ck_py_int(r->a, (int32_t)(uint32_t)rd_le(r->p, 4));
        r->p += 4;
        return push(r, a);
    case OP_BININT1:
        if ((rc = rd_need(r, 1)) < 0)
            return rc;
        return push(r, ck_py_int(r->a, *r->p++));
    case OP_BININT2:
        if ((rc = rd_need(r, 2)) < 0)
            return rc;
        a = ck_py_int(r->a, (int64_t)rd_le(r->p, 2));
        r->p += 2;
        return push(r, a);
    case OP_LONG1:
    case OP_LONG4:
        n2 = op == OP_LONG1 ? 1 : 4;
        if ((rc = rd_need(r, n2)) < 0)
            return rc;
        idx = rd_le(r->p, (int)n2);
        if (op == OP_LONG4 && (idx & 0x80000000u))
            return rd_fail(r, CK_EFORMAT, "LONG4 with a negative length");
        if (idx > r->lim->max_string_bytes)
            return rd_fail(r, CK_ELIMIT, "integer of %llu bytes over the limit",
                           (unsigned long long)idx);
        r->p += n2;
        if ((rc = rd_need(r, idx)) < 0)
            return rc;
        a = int_from_le(r, r->p, (size_t)idx);
        r->p += idx;
        return push(r, a);
    case OP_FLOAT: {
        char tmp[128], *end;
        double v;

        if ((rc = rd_line(r, &s, &n)) < 0)
            return rc;
        if (n == 0 || n >= sizeof(tmp))
            return rd_fail(r, CK_EFORMAT, "bad FLOAT text");
        memcpy(tmp, s, n);
        tmp[n] = '\0';
        v = strtod(tmp, &end);
        /* strtod also takes what Python's float() refuses: spaces, hex,
         * nan(...) */
        if (*end != '\0' || strpbrk(tmp, " \t\n\v\f\rxX(") != NULL)
            return rd_fail(r, CK_EFORMAT, "bad FLOAT text");
        return push(r, ck_py_float(r->a, v));
    }
    case OP_BINFLOAT:
        if ((rc = rd_need(r, 8)) < 0)
            return rc;
        a = ck_py_new(r->a, CK_PY_FLOAT);
        if (a != NULL)
            memcpy(a->u.f, r->p, 8);
        r->p += 8;
        return push(r, a);
    case OP_STRING:
        if ((rc = rd_line(r, &s, &n)) < 0)
            return rc;
        return push_quoted(r, s, n);
    case OP_UNICODE:
        if ((rc = rd_line(r, &s, &n)) < 0)
            return rc;
        return push_raw_unicode(r, s, n);
    case OP_BINSTRING:
        if ((rc = rd_need(r, 4)) < 0)
            return rc;
        if (r->p[3] & 0x80)
            return rd_fail(r, CK_EFORMAT, "BINSTRING with a negative length");
        return push_counted(r, CK_PY_STR, 4);
    case OP_SHORT_BINSTRING:
    case OP_SHORT_BINUNICODE:
        return push_counted(r, CK_PY_STR, 1);
    case OP_BINUNICODE:
        return push_counted(r, CK_PY_STR, 4);
    case OP_BINUNICODE8:
        return push_counted(r, CK_PY_STR, 8);
    case OP_SHORT_BINBYTES:
        return push_counted(r, CK_PY_BYTES, 1);
    case OP_BINBYTES:
        return push_counted(r, CK_PY_BYTES, 4);
    case OP_BINBYTES8:
        return push_counted(r, CK_PY_BYTES, 8);
    case OP_BYTEARRAY8:
        return push_counted(r, CK_PY_BYTEARRAY, 8);
    case OP_NEXT_BUFFER:
    case OP_READONLY_BUFFER:
        return rd_fail(r, CK_EUNSUPPORTED, "out-of-band buffers (protocol 5)");
    case OP_EXT1:
    case OP_EXT2:
    case OP_EXT4:
        return rd_fail(r, CK_EUNSUPPORTED, "extension registry codes (EXT)");
    case OP_EMPTY_TUPLE:
        return push(r, ck_py_new(r->a, CK_PY_TUPLE));
    case OP_TUPLE1:
    case OP_TUPLE2:
    case OP_TUPLE3:
        n = (size_t)(op - OP_TUPLE1 + 1);
        if (r->sp < frame_base(r) + n)
            return rd_fail(r, CK_EFORMAT, "stack underflow");
        return tuple_of(r, r->sp - n);
    case OP_MARK:
        if (r->mp == r->mcap) {
            size_t cap = r->mcap ? r->mcap * 2 : 16;
            size_t *nm = ck_realloc(r->marks, cap * sizeof(*nm));

            if (nm == NULL)
                return rd_nomem(r);
            r->marks = nm;
            r->mcap = cap;
        }
        r->marks[r->mp++] = r->sp;
        return 0;
    case OP_POP_MARK:
        if ((base = pop_mark(r)) < 0)
            return CK_EFORMAT;
        r->sp = (size_t)base;
        return 0;
    case OP_POP:
        if (r->sp > frame_base(r)) {
            r->sp--;
            return 0;
        }
        if ((base = pop_mark(r)) < 0)
            return CK_EFORMAT;
        return 0;
    case OP_DUP:
        a = top(r);
        return a == NULL ? CK_EFORMAT : push(r, a);
    case OP_TUPLE:
        if ((base = pop_mark(r)) < 0)
            return CK_EFORMAT;
        return tuple_of(r, (size_t)base);
    case OP_EMPTY_LIST:
        return push(r, ck_py_new(r->a, CK_PY_LIST));
    case OP_EMPTY_DICT:
        return push(r, ck_py_new(r->a, CK_PY_DICT));
    case OP_EMPTY_SET:
        return push(r, ck_py_new(r->a, CK_PY_SET));
    case OP_LIST:
    case OP_FROZENSET:
    case OP_DICT:
        if ((base = pop_mark(r)) < 0)
            return CK_EFORMAT;
        if (op == OP_DICT && (r->sp - (size_t)base) % 2)
            return rd_fail(r, CK_EFORMAT, "DICT with an odd item count");
        a = ck_py_new(r->a, op == OP_LIST ? CK_PY_LIST
                            : op == OP_DICT ? CK_PY_DICT : CK_PY_FROZENSET);
        if (a == NULL)
            return rd_nomem(r);
        if (seq_from(r, &a->u.seq, (size_t)base) < 0)
            return CK_ENOMEM;
        return push(r, a);
    case OP_APPEND:
    case OP_SETITEM:
        n = op == OP_APPEND ? 1 : 2;
        if (r->sp < frame_base(r) + n + 1)
            return rd_fail(r, CK_EFORMAT, "stack underflow");
        return add_items(r, r->stack[r->sp - n - 1], r->sp - n,
                         op == OP_SETITEM);
    case OP_APPENDS:
    case OP_SETITEMS:
    case OP_ADDITEMS:
        if ((base = pop_mark(r)) < 0)
            return CK_EFORMAT;
        if ((size_t)base <= frame_base(r))
            return rd_fail(r, CK_EFORMAT, "stack underflow");
        a = r->stack[base - 1];
        if (op == OP_ADDITEMS) {
            if (a->kind != CK_PY_SET)
                return rd_fail(r, CK_EFORMAT, "ADDITEMS on a value that is not a set");
            for (size_t i = (size_t)base; i < r->sp; i++)
                if (ck_py_vec_push(r->a, &a->u.seq, r->stack[i]) < 0)
                    return rd_nomem(r);
            r->sp = (size_t)base;
            return 0;
        }
        return add_items(r, a, (size_t)base, op == OP_SETITEMS);
    case OP_GET:
        if ((rc = parse_index(r, &idx)) < 0)
            return rc;
        return memo_get(r, idx);
    case OP_BINGET:
        if ((rc = rd_need(r, 1)) < 0)
            return rc;
        return memo_get(r, *r->p++);
    case OP_LONG_BINGET:
        if ((rc = rd_need(r, 4)) < 0)
            return rc;
        idx = rd_le(r->p, 4);
        r->p += 4;
        return memo_get(r, idx);
    case OP_PUT:
        if ((rc = parse_index(r, &idx)) < 0)
            return rc;
        return memo_put(r, idx, top(r));
    case OP_BINPUT:
        if ((rc = rd_need(r, 1)) < 0)
            return rc;
        return memo_put(r, *r->p++, top(r));
    case OP_LONG_BINPUT:
        if ((rc = rd_need(r, 4)) < 0)
            return rc;
        idx = rd_le(r->p, 4);
        r->p += 4;
        return memo_put(r, idx, top(r));
    case OP_MEMOIZE:
        return memo_put(r, r->memocount, top(r));
    case OP_GLOBAL:
    case OP_INST:
        if ((rc = rd_line(r, &s, &n)) < 0 || (rc = rd_line(r, &s2, &n2)) < 0)
            return rc;
        if (op == OP_GLOBAL)
            return add_global(r, s, n, s2, n2);
        if ((base = pop_mark(r)) < 0)
            return CK_EFORMAT;
        if ((rc = tuple_of(r, (size_t)base)) < 0)
            return rc;
        if ((rc = add_global(r, s, n, s2, n2)) < 0)
            return rc;
        b = r->stack[--r->sp];
        a = r->stack[--r->sp];
        return push_call(r, CK_PY_REDUCE, b, a);
    case OP_STACK_GLOBAL:
        b = pop(r);
        a = b ? pop(r) : NULL;
        if (a == NULL)
            return CK_EFORMAT;
        if (a->kind != CK_PY_STR || b->kind != CK_PY_STR)
            return rd_fail(r, CK_EFORMAT, "STACK_GLOBAL of values that are not str");
        return add_global(r, a->u.s.s, a->u.s.n, b->u.s.s, b->u.s.n);
    case OP_OBJ:
        if ((base = pop_mark(r)) < 0)
            return CK_EFORMAT;
        if (r->sp == (size_t)base)
            return rd_fail(r, CK_EFORMAT, "OBJ without a class");
        c = r->stack[base];
        if ((rc = tuple_of(r, (size_t)base + 1)) < 0)
            return rc;
        a = r->stack[--r->sp];
        r->sp--;
        return push_call(r, CK_PY_REDUCE, c, a);
    case OP_REDUCE:
    case OP_NEWOBJ:
        b = pop(r);
        a = b ? pop(r) : NULL;
        if (a == NULL)
            return CK_EFORMAT;
        return push_call(r, op == OP_REDUCE ? CK_PY_REDUCE : CK_PY_NEWOBJ, a, b);
    case OP_NEWOBJ_EX:
        c = pop(r);
        b = c ? pop(r) : NULL;
        a = b ? pop(r) : NULL;
        if (a == NULL)
            return CK_EFORMAT;
        if (c->kind != CK_PY_DICT || c->u.seq.n != 0)
            return rd_fail(r, CK_EUNSUPPORTED, "NEWOBJ_EX with keyword arguments");
        return push_call(r, CK_PY_NEWOBJ, a, b);
    case OP_BUILD:
        b = pop(r);
        a = b ? top(r) : NULL;
        if (a == NULL)
            return CK_EFORMAT;
        if (a->kind != CK_PY_REDUCE && a->kind != CK_PY_NEWOBJ)
            return rd_fail(r, CK_EFORMAT, "BUILD on a value that is not an object");
        if (a->u.o.state != NULL)
            return rd_fail(r, CK_EUNSUPPORTED, "BUILD twice on one object");
        a->u.o.state = b;
        return 0;
    case OP_PERSID:
        if ((rc = rd_line(r, &s, &n)) < 0)
            return rc;
        if ((rc = push_string(r, CK_PY_STR, s, n)) < 0)
            return rc;
        /* fall through */
    case OP_BINPERSID:
        b = pop(r);
        if (b == NULL)
            return CK_EFORMAT;
        a = ck_py_new(r->a, CK_PY_PERSID);
        if (a != NULL)
            a->u.pid = b;
        return push(r, a);
    default:
        r->p--;
        return rd_fail(r, CK_EFORMAT, "unknown opcode 0x%02x", op);
    }
}

int ck_pickle_read(const uint8_t *buf, size_t len, int exact,
                   const ck_limits_t *lim, ck_arena_t *arena, ck_pickle_t *out,
                   ck_err_t *err)
{
    rd_t r = { 0 };
    int rc = 0;

    memset(out, 0, sizeof(*out));
    out->protocol = -1;
    if (len > lim->max_pickle_bytes) {
        len = (size_t)lim->max_pickle_bytes;
        exact = 0;
    }
    r.start = r.p = buf;
    r.end = buf + len;
    r.lim = lim;
    r.a = arena;
    r.err = err;
    r.out = out;
    while (rc == 0)
        rc = rd_op(&r);
    if (rc == 1) {
        rc = 0;
        out->consumed = (size_t)(r.p - buf);
        if (out->protocol < 0)
            out->protocol = 1;
        if (exact && r.p != r.end)
            rc = ck_err_set(err, CK_EFORMAT,
                            "pickle has %zu bytes after STOP",
                            (size_t)(r.end - r.p));
    } else if (rc == -EAGAIN && len == lim->max_pickle_bytes) {
        err->code = 0;
        rc = ck_err_set(err, CK_ELIMIT, "pickle larger than %llu bytes",
                        (unsigned long long)lim->max_pickle_bytes);
    }
    ck_free(r.stack);
    ck_free(r.marks);
    ck_free(r.memo);
    return rc;
}

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

static void memoize(wr_t *w, ck_py_t *p)
{
    uint32_t idx = w->next++;

    p->wgen = w->gen;
    p->widx = idx;
    if (idx < 256) {
        w_op(w, OP_BINPUT);
        w_op(w, (int)idx);
    } else {
        w_op(w, OP_LONG_BINPUT);
        w_u32(w, idx);
    }
}

static void memo_ref(wr_t *w, ck_py_t *p)
{
    if (p->widx < 256) {
        w_op(w, OP_BINGET);
        w_op(w, (int)p->widx);
    } else {
        w_op(w, OP_LONG_BINGET);
        w_u32(w, p->widx);
    }
}

static void save_int_bytes(wr_t *w, const uint8_t *b, size_t n)
{
    n = int_trim(b, n);
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

    if (p->u.i.nbig) {
        save_int_bytes(w, p->u.i.big, p->u.i.nbig);
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
    if (p->u.s.n > UINT32_MAX)
        return ck_err_set(w->err, CK_EUNSUPPORTED,
                          "str of %zu bytes does not fit protocol 2", p->u.s.n);
    w_op(w, OP_BINUNICODE);
    w_u32(w, (uint32_t)p->u.s.n);
    ck_buf_put(w->out, p->u.s.s, p->u.s.n);
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
        if (p->u.s.n > 0) {
            b = ck_py_new(w->a, CK_PY_BYTES);
            if (b == NULL || ck_py_vec_push(w->a, &args->u.seq, b) < 0)
                return w_nomem(w);
            b->u.s = p->u.s;
        }
        return save_as_call(w, p, lazy_global(w, &w->g_bytearray, "__builtin__",
                                              "bytearray"), args, depth);
    }
    if (p->u.s.n == 0)
        return save_as_call(w, p, lazy_global(w, &w->g_bytes, "__builtin__",
                                              "bytes"), args, depth);
    u = ck_arena_alloc(w->a, p->u.s.n * 2 + 1);
    text = ck_py_new(w->a, CK_PY_STR);
    enc = lazy_str(w, &w->s_latin1, "latin1");
    if (u == NULL || text == NULL || enc == NULL)
        return w_nomem(w);
    for (size_t i = 0; i < p->u.s.n; i++)
        o += (size_t)utf8_put(u + o, (uint8_t)p->u.s.s[i]);
    text->u.s.s = (char *)u;
    text->u.s.n = o;
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
static int save_batches(wr_t *w, ck_py_vec_t *v, int pairs, int exact,
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
    if (p->wgen == w->gen) {
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

static int save(wr_t *w, ck_py_t *p, uint32_t depth)
{
    int rc;

    if (depth > w->lim->max_depth)
        return ck_err_set(w->err, CK_ELIMIT, "object nesting deeper than %u",
                          w->lim->max_depth);
    if (w->out->oom)
        return w_nomem(w);
    if (p->wgen == w->gen && p->kind != CK_PY_TUPLE) {
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
        if (p->wgen == w->gen && p->u.seq.n != 0) {
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
            (rc = save(w, p->u.o.args, depth + 1)) < 0)
            return rc;
        w_op(w, p->kind == CK_PY_REDUCE ? OP_REDUCE : OP_NEWOBJ);
        memoize(w, p);
        if ((rc = save_batches(w, &p->u.o.list, 0, 0, depth)) < 0 ||
            (rc = save_batches(w, &p->u.o.dict, 1, 0, depth)) < 0)
            return rc;
        if (p->u.o.state != NULL) {
            if ((rc = save(w, p->u.o.state, depth + 1)) < 0)
                return rc;
            w_op(w, OP_BUILD);
        }
        return 0;
    case CK_PY_PERSID:
        if (w->cb != NULL && (rc = w->cb(w->ud, p, w->err)) < 0)
            return rc;
        if ((rc = save(w, p->u.pid, depth + 1)) < 0)
            return rc;
        w_op(w, OP_BINPERSID);
        return 0;
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

/* ---- equality --------------------------------------------------------- */

static int vec_equal(ck_py_vec_t *a, ck_py_vec_t *b, uint32_t gen,
                     uint32_t depth, uint32_t max);

/*
 * Pickle memoizes str, non-empty tuples, containers, globals and calls;
 * None, bools, numbers, () and persistent ids are written anew each time,
 * so no reader or writer keeps their identity.
 */
static int has_identity(const ck_py_t *p)
{
    return p->kind >= CK_PY_STR && p->kind != CK_PY_PERSID &&
           !(p->kind == CK_PY_TUPLE && p->u.seq.n == 0);
}

static int eq(ck_py_t *a, ck_py_t *b, uint32_t gen, uint32_t depth,
              uint32_t max)
{
    if (a == NULL || b == NULL)
        return a == b;
    if (depth > max)
        return 0;
    if (a->kind != b->kind)
        return 0;
    if (a == b) {
        /* one node on both sides (graphs that share parts) */
        if (a->wgen == gen + 1 && a->wref == a)
            return 1;
    } else if (has_identity(a) && (a->wgen == gen || b->wgen == gen + 1)) {
        /* identity must map one to one: a was met with b, and b with a */
        return a->wgen == gen && b->wgen == gen + 1 && a->wref == b &&
               b->wref == a;
    }
    a->wgen = gen;
    a->wref = b;
    b->wgen = gen + 1;
    b->wref = a;
    switch ((ck_py_kind_t)a->kind) {
    case CK_PY_NONE:
        return 1;
    case CK_PY_BOOL:
        return a->b == b->b;
    case CK_PY_INT:
        return a->u.i.v == b->u.i.v && a->u.i.nbig == b->u.i.nbig &&
               (a->u.i.nbig == 0 ||
                memcmp(a->u.i.big, b->u.i.big, a->u.i.nbig) == 0);
    case CK_PY_FLOAT:
        return memcmp(a->u.f, b->u.f, 8) == 0;
    case CK_PY_STR:
    case CK_PY_BYTES:
    case CK_PY_BYTEARRAY:
        return a->u.s.n == b->u.s.n && memcmp(a->u.s.s, b->u.s.s, a->u.s.n) == 0;
    case CK_PY_TUPLE:
    case CK_PY_LIST:
    case CK_PY_DICT:
    case CK_PY_SET:
    case CK_PY_FROZENSET:
        return vec_equal(&a->u.seq, &b->u.seq, gen, depth, max);
    case CK_PY_GLOBAL:
        return strcmp(a->u.g.module, b->u.g.module) == 0 &&
               strcmp(a->u.g.name, b->u.g.name) == 0;
    case CK_PY_REDUCE:
    case CK_PY_NEWOBJ:
        return eq(a->u.o.fn, b->u.o.fn, gen, depth + 1, max) &&
               eq(a->u.o.args, b->u.o.args, gen, depth + 1, max) &&
               vec_equal(&a->u.o.list, &b->u.o.list, gen, depth, max) &&
               vec_equal(&a->u.o.dict, &b->u.o.dict, gen, depth, max) &&
               eq(a->u.o.state, b->u.o.state, gen, depth + 1, max);
    case CK_PY_PERSID:
        return eq(a->u.pid, b->u.pid, gen, depth + 1, max);
    }
    return 0;
}

static int vec_equal(ck_py_vec_t *a, ck_py_vec_t *b, uint32_t gen,
                     uint32_t depth, uint32_t max)
{
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++)
        if (!eq(a->v[i], b->v[i], gen, depth + 1, max))
            return 0;
    return 1;
}

int ck_py_equal(ck_py_t *a, ck_py_t *b, uint32_t max_depth)
{
    uint32_t gen;

    do
        gen = ck_py_next_gen();
    while (gen + 1 == 0 || ck_py_next_gen() != gen + 1);
    return eq(a, b, gen, 0, max_depth);
}
