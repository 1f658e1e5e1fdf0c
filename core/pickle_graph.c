/*
 * pickle_graph.c -- the object graph that pickle.c reads and pickle_write.c
 * writes: limits, node constructors, accessors for plugins, two's complement
 * helpers and the identity-preserving equality used by tests and fuzzers.
 *
 * Every node lives in a job arena and is freed with it; nothing here frees.
 * The walkers mark nodes with a generation number (ck_py_next_gen), so two
 * walks over one graph must not run at once.
 */
#include "pickle.h"

#include <string.h>

void ck_limits_default(ck_limits_t *l)
{
    l->max_pickle_bytes = 1ull << 30;
    l->max_depth = 1000;
    l->max_memo = 1u << 24;
    l->max_string_bytes = 256ull << 20;
    l->cancel = NULL;
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

void ck_int_negate(uint8_t *le, size_t n)
{
    unsigned carry = 1;

    for (size_t j = 0; j < n; j++) {
        unsigned v = (uint8_t)~le[j] + carry;

        le[j] = (uint8_t)v;
        carry = v >> 8;
    }
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
