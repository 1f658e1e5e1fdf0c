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
#include "pickle_int.h"

#include <stddef.h>
#include <errno.h>
#include <string.h>

void ck_limits_default(ck_limits_t *l)
{
    l->max_pickle_bytes = 1ull << 30;
    l->max_depth = 1000;
    l->max_memo = 1u << 26;
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

/*
 * A node takes the bytes its kind uses, not the whole union: a graph of
 * 10^5 tensors holds millions of nodes, most of them strs, ints and tuples.
 * Nothing copies a node whole, and a node's kind never changes.
 */
_Static_assert(offsetof(ck_py_t, u) == 16, "len fills the head's padding");

static size_t node_size(ck_py_kind_t kind)
{
    size_t head = offsetof(ck_py_t, u);

    switch (kind) {
    case CK_PY_NONE:
    case CK_PY_BOOL:
        return head;
    case CK_PY_INT:
        return head + sizeof(((ck_py_t *)0)->u.i);
    case CK_PY_FLOAT:
        return head + sizeof(((ck_py_t *)0)->u.f);
    case CK_PY_STR:
    case CK_PY_BYTES:
    case CK_PY_BYTEARRAY:
        return head + sizeof(((ck_py_t *)0)->u.s);
    case CK_PY_TUPLE:
    case CK_PY_LIST:
    case CK_PY_DICT:
    case CK_PY_SET:
    case CK_PY_FROZENSET:
        return head + sizeof(((ck_py_t *)0)->u.seq);
    case CK_PY_GLOBAL:
        return head + sizeof(((ck_py_t *)0)->u.g);
    case CK_PY_PERSID:
        return head + sizeof(((ck_py_t *)0)->u.pid);
    case CK_PY_REDUCE:
    case CK_PY_NEWOBJ:
        return head + sizeof(((ck_py_t *)0)->u.o);
    }
    return sizeof(ck_py_t);
}

/* A compact call's items: from where u.o.args is, past the union (72
 * bytes a node, pickle.h). */
#define ARGC_OFF offsetof(ck_py_t, u.o.args)
#define ARGC_SIZE (ARGC_OFF + CK_PY_ARGC * sizeof(ck_py_t *))

static ck_py_t **argc_items(const ck_py_t *p)
{
    return (ck_py_t **)((uintptr_t)p + ARGC_OFF);
}

ck_py_t *ck_py_argc_new(ck_arena_t *a, ck_py_t *fn, ck_py_t *const *v)
{
    ck_py_t *p = ck_arena_alloc(a, ARGC_SIZE);

    if (p == NULL)
        return NULL;
    p->kind = CK_PY_REDUCE;
    p->flags = CK_PY_F_ARGC;
    p->u.o.fn = fn;
    memcpy(argc_items(p), v, CK_PY_ARGC * sizeof(*v));
    return p;
}

ck_py_t **ck_py_args(const ck_py_t *p, uint32_t *n)
{
    static ck_py_t *none[1]; /* the items of () */
    const ck_py_t *t = p->u.o.args;

    if (p->flags & CK_PY_F_ARGC) {
        *n = CK_PY_ARGC;
        return argc_items(p);
    }
    if (t == NULL || t->kind != CK_PY_TUPLE)
        return NULL;
    *n = t->u.seq.n;
    return t->u.seq.n > 0 ? t->u.seq.v : none;
}

ck_py_t *ck_py_args_tuple(ck_arena_t *a, ck_py_t *p)
{
    ck_py_t *t;

    if (!(p->flags & CK_PY_F_ARGC))
        return p->u.o.args;
    t = ck_py_new(a, CK_PY_TUPLE);
    if (t == NULL || ck_py_vec_reserve(a, &t->u.seq, CK_PY_ARGC) < 0)
        return NULL;
    memcpy(t->u.seq.v, argc_items(p), CK_PY_ARGC * sizeof(*t->u.seq.v));
    t->u.seq.n = CK_PY_ARGC;
    /* a call as ck_py_new makes it, in the node's first bytes; len, the
     * tensor, stays */
    p->u.o.args = t;
    p->u.o.after = NULL;
    p->flags &= (uint8_t)~CK_PY_F_ARGC;
    return t;
}

ck_py_t *ck_py_new(ck_arena_t *a, ck_py_kind_t kind)
{
    ck_py_t *p = ck_arena_alloc(a, node_size(kind));

    if (p != NULL)
        p->kind = (uint8_t)kind;
    return p;
}

int ck_py_pid_items(const ck_py_t *p, ck_py_t **out, size_t max, size_t *n,
                    ck_py_t *key)
{
    const ck_py_t *t = p->u.pid;

    if (p->flags & CK_PY_F_PIDC) {
        if (max < 5)
            return -1;
        out[0] = p->u.pc.t->tag;
        out[1] = p->u.pc.t->cls;
        out[2] = p->u.pc.key.p;
        out[3] = p->u.pc.t->loc;
        out[4] = p->u.pc.numel;
        *n = 5;
        if (p->flags & CK_PY_F_PIDK) {
            memset(key, 0, sizeof(*key));
            key->kind = CK_PY_STR;
            key->u.s.s = (char *)p->u.pc.key.s;
            key->len = (uint32_t)strnlen(key->u.s.s, sizeof(p->u.pc.key.s));
            out[2] = key;
        }
        return 0;
    }
    if (t->kind != CK_PY_TUPLE || t->u.seq.n > max)
        return -1;
    if (t->u.seq.n > 0) /* no NULL + 0 */
        memcpy(out, t->u.seq.v, t->u.seq.n * sizeof(*out));
    *n = t->u.seq.n;
    return 0;
}

ck_py_t *ck_py_pid_key(ck_arena_t *a, ck_py_t *p)
{
    ck_py_t *s;

    if (!(p->flags & CK_PY_F_PIDC))
        return p->u.pid->u.seq.v[2];
    if (!(p->flags & CK_PY_F_PIDK))
        return p->u.pc.key.p;
    s = ck_py_str(a, p->u.pc.key.s,
                  strnlen(p->u.pc.key.s, sizeof(p->u.pc.key.s)));
    if (s != NULL) {
        p->u.pc.key.p = s;
        p->flags &= (uint8_t)~CK_PY_F_PIDK;
    }
    return s;
}

ck_py_t *ck_py_pid_tuple(ck_arena_t *a, ck_py_t *p)
{
    ck_py_t *t, key;
    size_t n;

    if (!(p->flags & CK_PY_F_PIDC))
        return p->u.pid;
    t = ck_py_new(a, CK_PY_TUPLE);
    if (t == NULL || ck_py_vec_reserve(a, &t->u.seq, 5) < 0)
        return NULL;
    (void)ck_py_pid_items(p, t->u.seq.v, 5, &n, &key);
    if ((p->flags & CK_PY_F_PIDK) &&
        (t->u.seq.v[2] = ck_py_str(a, key.u.s.s, key.len)) == NULL)
        return NULL;
    t->u.seq.n = (uint32_t)n;
    /* the node as ck_py_new makes it: len, the storage, stays, and a key's
     * text too (u.pid is over the parts' pointer) */
    p->u.pid = t;
    p->flags &= (uint8_t)~(CK_PY_F_PIDC | CK_PY_F_PIDK);
    return t;
}

ck_py_t *ck_py_int(ck_arena_t *a, int64_t v)
{
    ck_py_t *p = ck_py_new(a, CK_PY_INT);

    if (p != NULL)
        p->u.i.v = v;
    return p;
}

void ck_py_float_be(double v, uint8_t be[8])
{
    uint64_t bits;

    memcpy(&bits, &v, 8);
    for (int i = 0; i < 8; i++)
        be[i] = (uint8_t)(bits >> (56 - 8 * i));
}

ck_py_t *ck_py_float(ck_arena_t *a, double v)
{
    ck_py_t *p = ck_py_new(a, CK_PY_FLOAT);

    if (p != NULL)
        ck_py_float_be(v, p->u.f);
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
    ck_py_t *p = n <= UINT32_MAX ? ck_py_new(a, CK_PY_STR) : NULL;

    if (p == NULL)
        return NULL;
    p->u.s.s = ck_arena_strndup(a, s, n);
    p->len = (uint32_t)n;
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

const ck_py_after_t ck_py_after_none;

int ck_py_vec_reserve(ck_arena_t *a, ck_py_vec_t *v, size_t n)
{
    size_t cap;
    ck_py_t **nv;

    if (v == &ck_py_after_none.list || v == &ck_py_after_none.dict)
        return -EINVAL; /* ck_py_mapping's of a call with no items: the
                             caller wanted ck_py_mapping_mut */
    if (n <= (size_t)(v->cap - v->n))
        return 0;
    if (n > UINT32_MAX - v->n)
        return CK_ENOMEM;
    cap = (size_t)v->n + n;
    if (cap < 2 * (size_t)v->cap)
        cap = 2 * (size_t)v->cap;
    if (cap < 4 && v->cap != 0)
        cap = 4; /* (a first room is what is asked: a module's
                    {'version': 1} in _metadata, 10^5 of them, gets 2) */
    if (cap > UINT32_MAX)
        cap = UINT32_MAX;
    /* the arena gives a big array's old room back (a state dict's) */
    nv = ck_arena_grow(a, v->v, (size_t)v->cap * sizeof(*nv),
                       cap * sizeof(*nv));
    if (nv == NULL)
        return CK_ENOMEM;
    v->v = nv;
    v->cap = (uint32_t)cap;
    return 0;
}

int ck_py_vec_push(ck_arena_t *a, ck_py_vec_t *v, ck_py_t *item)
{
    int rc = ck_py_vec_reserve(a, v, 1);

    if (rc < 0)
        return rc;
    v->v[v->n++] = item;
    return 0;
}

void ck_py_vec_remove(ck_py_vec_t *v, size_t i, size_t count)
{
    if (count == 0) /* nothing: not even a store (ck_py_after_none's) */
        return;
    memmove(v->v + i, v->v + i + count, (v->n - i - count) * sizeof(*v->v));
    v->n -= count;
}

int ck_py_str_eq(const ck_py_t *p, const char *s)
{
    size_t n = strlen(s);

    return p != NULL && p->kind == CK_PY_STR && p->len == n &&
           memcmp(p->u.s.s, s, n) == 0;
}

int ck_py_str_plain(const ck_py_t *p)
{
    return p->kind == CK_PY_STR && strlen(p->u.s.s) == p->len;
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

ck_py_after_t *ck_py_after_make(ck_arena_t *a, ck_py_t *p)
{
    if (p->flags & CK_PY_F_VALUE)
        return NULL;    /* shared by many places: never changed */
    if ((p->flags & CK_PY_F_ARGC) && ck_py_args_tuple(a, p) == NULL)
        return NULL;    /* its items are where after is */
    if (p->u.o.after == NULL)
        p->u.o.after = ck_arena_alloc(a, sizeof(*p->u.o.after));
    return p->u.o.after;
}

ck_py_vec_t *ck_py_mapping(ck_py_t *p)
{
    if (p == NULL)
        return NULL;
    if (p->kind == CK_PY_DICT)
        return &p->u.seq;
    if (p->kind == CK_PY_REDUCE || p->kind == CK_PY_NEWOBJ)
        return (ck_py_vec_t *)&ck_py_after(p)->dict; /* see pickle.h */
    return NULL;
}

ck_py_vec_t *ck_py_mapping_mut(ck_arena_t *a, ck_py_t *p, int *oom)
{
    ck_py_after_t *x;

    if (p == NULL || (p->kind != CK_PY_REDUCE && p->kind != CK_PY_NEWOBJ))
        return ck_py_mapping(p);
    if ((x = ck_py_after_make(a, p)) == NULL)
        *oom = 1;
    return x != NULL ? &x->dict : NULL;
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

/*
 * The walk of ck_py_equal: a node met on the left gets wgen == gen, one on
 * the right gen + 1, and both widx, the index of the pair in 'pairs', so
 * each side finds its partner.
 */
typedef struct {
    uint32_t gen, max;
    struct eq_pair {
        ck_py_t *a, *b;
    } *pairs;
    size_t n, cap;
    int oom;
    ck_py_t nowhere; /* the pair of a tuple a compact call holds on the
                        other side (args_equal) */
} eq_t;

static int vec_equal(eq_t *e, const ck_py_vec_t *a, const ck_py_vec_t *b,
                     uint32_t depth);
static int pid_equal(eq_t *e, ck_py_t *a, ck_py_t *b, uint32_t depth);
static int key_equal(eq_t *e, ck_py_t *a, ck_py_t *ka, ck_py_t *b,
                     ck_py_t *kb);
static int args_equal(eq_t *e, ck_py_t *a, ck_py_t *b, uint32_t depth);

/*
 * Pickle memoizes str, non-empty tuples, containers, globals and calls;
 * None, bools, numbers, () and persistent ids are written anew each time,
 * so no reader or writer keeps their identity; nor of a value node, which
 * stands for many equal tuples (pickle.h).
 */
static int has_identity(const ck_py_t *p)
{
    return p->kind >= CK_PY_STR && p->kind != CK_PY_PERSID &&
           !(p->kind == CK_PY_TUPLE && p->u.seq.n == 0) &&
           !(p->flags & CK_PY_F_VALUE);
}

static int eq_pair(eq_t *e, ck_py_t *a, ck_py_t *b)
{
    if (e->n == e->cap || e->n > UINT32_MAX) {
        size_t cap = e->cap ? 2 * e->cap : 256;
        struct eq_pair *np;

        if (e->n > UINT32_MAX ||
            (np = ck_realloc(e->pairs, cap * sizeof(*np))) == NULL) {
            e->oom = 1;
            return -1;
        }
        e->pairs = np;
        e->cap = cap;
    }
    e->pairs[e->n].a = a;
    e->pairs[e->n].b = b;
    a->wgen = e->gen;
    a->widx = (uint32_t)e->n;
    b->wgen = e->gen + 1;
    b->widx = (uint32_t)e->n;
    e->n++;
    return 0;
}

static int eq(eq_t *e, ck_py_t *a, ck_py_t *b, uint32_t depth)
{
    uint32_t gen = e->gen;

    if (a == NULL || b == NULL)
        return a == b;
    if (depth > e->max)
        return 0;
    if (a->kind != b->kind)
        return 0;
    if (a == b) {
        /* one node on both sides (graphs that share parts) */
        if (a->wgen == gen + 1 && e->pairs[a->widx].a == a)
            return 1;
    } else if (has_identity(a) && has_identity(b) &&
               (a->wgen == gen || b->wgen == gen + 1)) {
        /* identity must map one to one: a was met with b, and b with a */
        return a->wgen == gen && b->wgen == gen + 1 && a->widx == b->widx;
    }
    if (eq_pair(e, a, b) < 0)
        return 0;
    switch ((ck_py_kind_t)a->kind) {
    case CK_PY_NONE:
        return 1;
    case CK_PY_BOOL:
        return a->b == b->b;
    case CK_PY_INT:
        return a->u.i.v == b->u.i.v && a->len == b->len &&
               (a->len == 0 ||
                memcmp(a->u.i.big, b->u.i.big, a->len) == 0);
    case CK_PY_FLOAT:
        return memcmp(a->u.f, b->u.f, 8) == 0;
    case CK_PY_STR:
    case CK_PY_BYTES:
    case CK_PY_BYTEARRAY:
        return a->len == b->len && memcmp(a->u.s.s, b->u.s.s, a->len) == 0;
    case CK_PY_TUPLE:
    case CK_PY_LIST:
    case CK_PY_DICT:
    case CK_PY_SET:
    case CK_PY_FROZENSET:
        return vec_equal(e, &a->u.seq, &b->u.seq, depth);
    case CK_PY_GLOBAL:
        return strcmp(a->u.g.module, b->u.g.module) == 0 &&
               strcmp(a->u.g.name, b->u.g.name) == 0;
    case CK_PY_REDUCE:
    case CK_PY_NEWOBJ:
        return eq(e, a->u.o.fn, b->u.o.fn, depth + 1) &&
               args_equal(e, a, b, depth) &&
               vec_equal(e, &ck_py_after(a)->list, &ck_py_after(b)->list,
                         depth) &&
               vec_equal(e, &ck_py_after(a)->dict, &ck_py_after(b)->dict,
                         depth) &&
               eq(e, ck_py_after(a)->state, ck_py_after(b)->state, depth + 1);
    case CK_PY_PERSID:
        if (!((a->flags | b->flags) & CK_PY_F_PIDC))
            return eq(e, a->u.pid, b->u.pid, depth + 1);
        return pid_equal(e, a, b, depth);
    }
    return 0;
}

/*
 * Ids of which one at least holds no tuple (CK_PY_F_PIDC): item by item.
 * A compact id's tuple is named by the id alone (a GET would have given the
 * id one), though the id may be named twice (a DUP).  So when the other
 * side holds a tuple, the tuple is paired with the compact id itself -- a
 * pair no two nodes of one kind make -- and may be met again only with
 * that id: met elsewhere, it maps to nothing, and the graphs differ, as
 * they do.
 */
static int pid_equal(eq_t *e, ck_py_t *a, ck_py_t *b, uint32_t depth)
{
    ck_py_t *va[5], *vb[5], ka, kb;
    size_t na, nb;

    if (!(a->flags & CK_PY_F_PIDC) || !(b->flags & CK_PY_F_PIDC)) {
        int left = a->flags & CK_PY_F_PIDC; /* the compact one is a */
        ck_py_t *id = left ? a : b, *t = left ? b->u.pid : a->u.pid;

        if (has_identity(t) && t->wgen == (left ? e->gen + 1 : e->gen)) {
            const struct eq_pair *q = &e->pairs[t->widx];

            if ((left ? q->a : q->b) != id)
                return 0; /* met before, not as this id's tuple */
        } else if (has_identity(t)) {
            if (eq_pair(e, left ? id : t, left ? t : id) < 0)
                return 0;
        }
    }
    if (ck_py_pid_items(a, va, 5, &na, &ka) < 0 ||
        ck_py_pid_items(b, vb, 5, &nb, &kb) < 0 || na != nb)
        return 0;
    for (size_t i = 0; i < na; i++)
        if (!(i == 2 && ((a->flags | b->flags) & CK_PY_F_PIDK)
                  ? key_equal(e, a, va[2], b, vb[2])
                  : eq(e, va[i], vb[i], depth + 2)))
            return 0;
    return 1;
}

/*
 * The keys ka and kb of compact ids a and b, one of which at least holds
 * its key's text (CK_PY_F_PIDK): a str the id alone names, the caller's
 * node standing for it (ck_py_pid_items).  So when the other side's key is
 * a str node, it is paired with that id, as a tuple is in pid_equal, and
 * may be met again only with it; two held as text are equal by their
 * text.
 */
static int key_equal(eq_t *e, ck_py_t *a, ck_py_t *ka, ck_py_t *b,
                     ck_py_t *kb)
{
    if (ka->kind != CK_PY_STR || kb->kind != CK_PY_STR ||
        ka->len != kb->len || memcmp(ka->u.s.s, kb->u.s.s, ka->len) != 0)
        return 0;
    if (!(a->flags & CK_PY_F_PIDK) || !(b->flags & CK_PY_F_PIDK)) {
        int left = a->flags & CK_PY_F_PIDK; /* the one held as text is a */
        ck_py_t *id = left ? a : b, *s = left ? kb : ka;

        if (s->wgen == (left ? e->gen + 1 : e->gen)) {
            const struct eq_pair *q = &e->pairs[s->widx];

            return (left ? q->a : q->b) == id;
        }
        if (eq_pair(e, left ? id : s, left ? s : id) < 0)
            return 0;
    }
    return 1;
}

/*
 * The arguments of calls a and b, of which one at least may hold no tuple
 * (CK_PY_F_ARGC): item by item.  A compact call's tuple is named by the
 * call alone, and a call is met once (met again, its pair ends the walk in
 * eq), so the other side's tuple, if it has one, must be met for the first
 * time here, and is paired with a node no graph holds: met elsewhere after
 * this, it maps to nothing, and the graphs differ, as they do.
 */
static int args_equal(eq_t *e, ck_py_t *a, ck_py_t *b, uint32_t depth)
{
    ck_py_t **va, **vb;
    uint32_t na, nb;

    if (!((a->flags | b->flags) & CK_PY_F_ARGC))
        return eq(e, a->u.o.args, b->u.o.args, depth + 1);
    if (!(a->flags & CK_PY_F_ARGC) || !(b->flags & CK_PY_F_ARGC)) {
        int left = a->flags & CK_PY_F_ARGC; /* the compact one is a */
        ck_py_t *t = left ? b->u.o.args : a->u.o.args;

        if (t == NULL || t->wgen == (left ? e->gen + 1 : e->gen) ||
            eq_pair(e, left ? &e->nowhere : t, left ? t : &e->nowhere) < 0)
            return 0;
    }
    if ((va = ck_py_args(a, &na)) == NULL ||
        (vb = ck_py_args(b, &nb)) == NULL || na != nb)
        return 0;
    for (uint32_t i = 0; i < na; i++)
        if (!eq(e, va[i], vb[i], depth + 2))
            return 0;
    return 1;
}

static int vec_equal(eq_t *e, const ck_py_vec_t *a, const ck_py_vec_t *b,
                     uint32_t depth)
{
    if (a->n != b->n)
        return 0;
    for (size_t i = 0; i < a->n; i++)
        if (!eq(e, a->v[i], b->v[i], depth + 1))
            return 0;
    return 1;
}

static uint64_t hash_mix(uint64_t h, uint64_t v)
{
    return (h ^ v) * 0x100000001b3ULL;
}

static uint64_t hash_items(uint64_t h, ck_py_t *const *v, size_t n,
                           uint32_t depth)
{
    h = hash_mix(h, n);
    for (size_t i = 0; depth > 0 && i < n && i < 16; i++)
        h = hash_mix(h, ck_py_hash(v[i], depth - 1));
    return h;
}

static uint64_t hash_vec(uint64_t h, const ck_py_vec_t *v, uint32_t depth)
{
    return hash_items(h, v->v, v->n, depth);
}

/* Where a node's hash starts: its kind's. */
static uint64_t hash_kind(int kind)
{
    return hash_mix(0xcbf29ce484222325ULL, (uint64_t)kind);
}

/* A compact id's hash is its tuple's, and a compact call's arguments'
 * hash their tuple's. */
static uint64_t hash_pidc(const ck_py_t *p, uint32_t depth)
{
    ck_py_t *v[5], key;
    size_t n;

    (void)ck_py_pid_items(p, v, 5, &n, &key);
    return hash_items(hash_kind(CK_PY_TUPLE), v, n, depth);
}

uint64_t ck_py_hash(const ck_py_t *p, uint32_t depth)
{
    uint64_t h;

    if (p == NULL)
        return 0xcbf29ce484222325ULL;
    h = hash_kind(p->kind);
    switch ((ck_py_kind_t)p->kind) {
    case CK_PY_NONE:
        return h;
    case CK_PY_BOOL:
        return hash_mix(h, p->b);
    case CK_PY_INT:
        h = hash_mix(h, (uint64_t)p->u.i.v);
        return p->len ? hash_mix(h, ck_hash_fnv1a(p->u.i.big, p->len))
                           : h;
    case CK_PY_FLOAT:
        return hash_mix(h, ck_hash_fnv1a(p->u.f, 8));
    case CK_PY_STR:
    case CK_PY_BYTES:
    case CK_PY_BYTEARRAY:
        return hash_mix(h, ck_hash_fnv1a(p->u.s.s, p->len));
    case CK_PY_TUPLE:
    case CK_PY_LIST:
    case CK_PY_DICT:
    case CK_PY_SET:
    case CK_PY_FROZENSET:
        return hash_vec(h, &p->u.seq, depth);
    case CK_PY_GLOBAL:
        h = hash_mix(h, ck_hash_fnv1a(p->u.g.module, strlen(p->u.g.module)));
        return hash_mix(h, ck_hash_fnv1a(p->u.g.name, strlen(p->u.g.name)));
    case CK_PY_REDUCE:
    case CK_PY_NEWOBJ:
        if (depth == 0)
            return h;
        h = hash_mix(h, ck_py_hash(p->u.o.fn, depth - 1));
        h = hash_mix(h, p->flags & CK_PY_F_ARGC
                            ? hash_items(hash_kind(CK_PY_TUPLE),
                                         argc_items(p), CK_PY_ARGC,
                                         depth - 1)
                            : ck_py_hash(p->u.o.args, depth - 1));
        h = hash_vec(h, &ck_py_after(p)->list, depth - 1);
        return hash_vec(h, &ck_py_after(p)->dict, depth - 1);
    case CK_PY_PERSID:
        if (depth == 0)
            return h;
        return hash_mix(h, p->flags & CK_PY_F_PIDC
                               ? hash_pidc(p, depth - 1)
                               : ck_py_hash(p->u.pid, depth - 1));
    }
    return h;
}

int ck_py_equal(ck_py_t *a, ck_py_t *b, uint32_t max_depth)
{
    eq_t e = { 0 };
    int rc;

    do
        e.gen = ck_py_next_gen();
    while (e.gen + 1 == 0 || ck_py_next_gen() != e.gen + 1);
    e.max = max_depth;
    rc = eq(&e, a, b, 0);
    ck_free(e.pairs);
    return e.oom ? CK_ENOMEM : rc;
}
