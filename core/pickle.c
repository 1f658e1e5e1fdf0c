/*
 * pickle.c -- the pickle reader.
 *
 * A stack machine over a bounded cursor.  It never recurses, never resolves
 * a global and never calls anything: REDUCE, NEWOBJ, INST and OBJ build call
 * nodes, BUILD stores state in them, APPEND and SETITEM on a call node record
 * the items pickle would have added.  Its temporary stack, mark stack and
 * memo are heap arrays freed before return; every node it makes lives in the
 * caller's arena.
 *
 * Operands are read through the cursor (pk_cur_t and pk_rd_* in
 * pickle_int.h): a read past the end returns 0 or NULL and sets a sticky
 * flag, which each opcode checks once (rd_check) before it acts on what it
 * read; the pickle is then truncated (-EAGAIN), and the message names the
 * size of the first read that failed.  Text lines (protocol 0) end at '\n'
 * and are read by rd_line, which fails at once.  Opcodes are handled by
 * family (op_*), dispatched through the op_family table.
 */
#include "pickle.h"
#include "pickle_int.h"
#include "pyval.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- reader state ------------------------------------------------------ */

#define RD_SMALL_MIN (-8)
#define RD_SMALL_INTS 1032 /* -8 .. 1023 */

/* Nodes by value, open addressing, at most half full (ck_map_grow: a
 * mapping of huge pages once big). */
typedef struct {
    ck_py_t **v;
    size_t cap, n;
} nodeset_t;

#define RD_FLOAT_BITS 6 /* 64 recent floats */
#define RD_FLOATS (1 << RD_FLOAT_BITS)
#define RD_PIDT 4 /* the shared parts of persistent ids, the last few */

/*
 * The memo, MEMO_GROUP entries a group.  torch.save puts eight objects a
 * tensor in it, most never fetched again: at 4 * 10^6 storages an array
 * of pointers was 256 MiB at the parse's peak.  A PUT follows the making
 * of what it puts, and the arena makes nodes one after the other, so a
 * group's nodes lie near where the arena was making nodes when the
 * group's first was put (base): each entry is 16 bits, its distance from
 * base in 8-byte steps (about MEMO_NEAR either way) with the tag bits
 * below (PID_TAG, ARGS_TAG, KEY_TAG) -- 2.5 bytes an entry.  0 is an
 * empty entry; MEMO_VALUE a value node (CK_PY_F_VALUE: a tensor's size
 * and stride, made once, far back), which a GET only refuses
 * (push_again), so whose address is not kept; 2 + i the i-th of a few
 * nodes put again and again from far back (memofar: the spare
 * OrderedDict(), put as each tensor's hooks until it is replaced).  A
 * group with an entry that is none of these is widened: base (its low
 * bit set) then points to MEMO_GROUP full entries on the heap -- a
 * hand-made pickle's PUTs of old nodes, and a group begun just before the
 * arena began a block.
 */
#define MEMO_GROUP 16
#define MEMO_VALUE 1u
#define MEMO_FAR 16
#define MEMO_NEAR 8192
typedef struct {
    uintptr_t base;
    uint16_t e[MEMO_GROUP];
} memo_group_t;

typedef struct {
    pk_cur_t c;
    pk_src_t *src;              /* the window, or NULL: a buffer */
    const ck_limits_t *lim;
    ck_arena_t *a;
    ck_err_t *err;
    ck_pickle_t *out;
    ck_py_t **stack;
    size_t sp, scap;
    size_t *marks;
    size_t mp, mcap;
    memo_group_t *memo;         /* memocap groups (see memo_group_t) */
    size_t memocap, memocount;
    size_t memolen;             /* past the highest index put (the memo
                                   is a mapping: all of it reads zero) */
    size_t memowide;            /* groups widened */
    ck_py_t *memofar[MEMO_FAR]; /* tagged */
    unsigned nfar;
    /* None, (), the bools and small ints, one node each per pickle: the
     * writer never memoizes them and nothing edits them in place (the
     * reader adds items to lists, dicts and sets only), so sharing is
     * invisible, and a tensor's offset, shape, stride, requires_grad and
     * hooks' () cost no node */
    ck_py_t *none, *empty_tuple, *bools[2], *ints[RD_SMALL_INTS];
    /* and every other int64 value one node too (a model's dimensions,
     * numels and strides repeat across its tensors): open addressing on
     * the value, on the heap, dropped with the reader */
    nodeset_t ints64;
    /* and tuples of such ints, one value node (CK_PY_F_VALUE) each; a GET
     * or DUP of one, which sharing would make a second copy, sets reread */
    int no_share, reread;
    nodeset_t tuples;
    /* floats one node too, those met lately (an optimizer's 10^5
     * per-parameter 'step's are one value): a slot per hash of the bits,
     * the last one kept */
    ck_py_t *floats[RD_FLOATS];
    /* A tensor's backward hooks, an empty OrderedDict() each, one value
     * node too.  Each OrderedDict() is made in 'spare' (one node, used
     * again while it ends where hooks do): when it becomes the sixth item
     * of a tuple whose first is a persistent id -- _rebuild_tensor_v2's
     * arguments -- unchanged, put in the memo at most once and never
     * pushed again (DUP, GET), the tuple gets 'hooks' instead and the memo entry
     * too.  Anything else done with it (items, state: a state dict) keeps
     * it, and the next OrderedDict() gets a new spare. */
    ck_py_t *od_fn, *spare, *hooks;
    /* torch._utils._rebuild_tensor_v2, once met (fused_call) */
    ck_py_t *tensor_fn;
    int spare_free, spare_puts, spare_twice;
    uint64_t spare_idx;
    /* torch.save's persistent ids held without their tuples (fused_pid):
     * the parts they share, the last RD_PIDT kinds met */
    ck_py_pidt_t *pidt[RD_PIDT];
    unsigned pidt_next;
    /* the last str made of at most 7 bytes, a compact id's key to be
     * (fused_pid), while nothing named it again: PUT at most once, at
     * kidx, and never pushed again (DUP, GET) */
    ck_py_t *kstr;
    int kstr_puts;
    uint64_t kidx;
} rd_t;

/* A memo entry naming a compact persistent id's tuple, which it has not
 * made (fused_pid): the id's pointer with its low bit set; a compact
 * call's arguments' tuple (fused_call): the call's with the next; the key
 * str of an id holding its text (CK_PY_F_PIDK): the id's with both. */
#define PID_TAG ((uintptr_t)1)
#define ARGS_TAG ((uintptr_t)2)
#define KEY_TAG (PID_TAG | ARGS_TAG)

/* Room in s for one more node (first: its first capacity, a power of
 * two), each node placed again by hash: 0, or -1 out of memory. */
static int nodeset_room(nodeset_t *s, size_t first,
                        size_t (*hash)(const ck_py_t *p))
{
    size_t cap, i;
    ck_py_t **nv;

    if (2 * (s->n + 1) <= s->cap)
        return 0;
    cap = s->cap ? 2 * s->cap : first;
    if (cap > SIZE_MAX / sizeof(*nv) ||
        (nv = ck_map_grow(NULL, 0, cap * sizeof(*nv))) == NULL)
        return -1;
    for (size_t k = 0; k < s->cap; k++) {
        if (s->v[k] == NULL)
            continue;
        for (i = hash(s->v[k]) & (cap - 1); nv[i] != NULL; i = (i + 1) & (cap - 1))
            ;
        nv[i] = s->v[k];
    }
    ck_map_free(s->v, s->cap * sizeof(*s->v));
    s->v = nv;
    s->cap = cap;
    return 0;
}

/* Records "pickle at byte N: ..." with N the offset of at, or "pickle
 * truncated: ..." for -EAGAIN; returns code. */
static int rd_vfail(rd_t *r, const uint8_t *at, int code, const char *fmt,
                    va_list ap)
{
    char what[512];

    vsnprintf(what, sizeof(what), fmt, ap);
    if (code == -EAGAIN)
        return ck_err_set(r->err, code, "pickle truncated: %s", what);
    return ck_err_set(r->err, code, "pickle at byte %llu: %s",
                      (unsigned long long)(r->c.base + (uint64_t)(at - r->c.start)),
                      what);
}

static int rd_fail(rd_t *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int rd_fail_at(rd_t *r, const uint8_t *at, int code, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));

/* An error at the cursor. */
static int rd_fail(rd_t *r, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    code = rd_vfail(r, r->c.p, code, fmt, ap);
    va_end(ap);
    return code;
}

/* An error about the operand at 'at', already read. */
static int rd_fail_at(rd_t *r, const uint8_t *at, int code, const char *fmt,
                      ...)
{
    va_list ap;

    va_start(ap, fmt);
    code = rd_vfail(r, at, code, fmt, ap);
    va_end(ap);
    return code;
}

static int rd_nomem(rd_t *r)
{
    return rd_fail(r, CK_ENOMEM, "out of memory");
}

/* Once per opcode, after its operands are read: 0 or -EAGAIN. */
static int rd_check(rd_t *r)
{
    if (r->c.crossed)
        return rd_fail(r, CK_EFORMAT,
                       "an opcode crosses the end of its FRAME");
    if (r->c.bad)
        return rd_fail(r, -EAGAIN, "needs %llu more bytes",
                       (unsigned long long)r->c.need);
    return 0;
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

    if (n > UINT32_MAX)
        return rd_fail(r, CK_ELIMIT, "a container of more than 2^32 items");
    v->n = v->cap = (uint32_t)n;
    if (n) {
        v->v = ck_arena_alloc(r->a, n * sizeof(*v->v));
        if (v->v == NULL)
            return rd_nomem(r);
        memcpy(v->v, r->stack + base, n * sizeof(*v->v));
    }
    r->sp = base;
    return 0;
}

/*
 * A text line: *s and *n (without its '\n') point into the input.  Fails at
 * once, without touching the cursor: -EAGAIN when no '\n' follows, CK_ELIMIT
 * when the line is longer than a string may be.
 */
static int rd_line(rd_t *r, const char **s, size_t *n)
{
    pk_cur_t *c = &r->c;
    const uint8_t *nl;
    size_t avail = (size_t)(c->end - c->p);
    size_t cap = avail;

    if (c->frame_end == c->p)
        c->frame_end = NULL;
    if (c->frame_end != NULL) {
        /* pickle.py: a line begun in a frame must end in it */
        avail = (size_t)(c->frame_end - c->p);
        cap = avail;
    }
    if (cap > r->lim->max_string_bytes + 1)
        cap = r->lim->max_string_bytes + 1;
    nl = memchr(c->p, '\n', cap);
    if (nl == NULL) {
        if (cap < avail)
            return rd_fail(r, CK_ELIMIT, "text line longer than %llu bytes",
                           (unsigned long long)r->lim->max_string_bytes);
        if (c->frame_end != NULL)
            return rd_fail(r, CK_EFORMAT,
                           "a text line crosses the end of its FRAME");
        return rd_fail(r, -EAGAIN, "line without newline");
    }
    *s = (const char *)c->p;
    *n = (size_t)(nl - c->p);
    c->p = nl + 1;
    return 0;
}

/* Entry idx (under memocap groups): a node, tagged or not; MEMO_VALUE;
 * or NULL. */
static ck_py_t *memo_at(const rd_t *r, uint64_t idx)
{
    const memo_group_t *g = &r->memo[idx / MEMO_GROUP];
    unsigned e = g->e[idx % MEMO_GROUP];

    if (g->base & 1)
        return ((ck_py_t **)(g->base & ~(uintptr_t)1))[idx % MEMO_GROUP];
    if (e <= MEMO_VALUE)
        return (ck_py_t *)(uintptr_t)e;
    if (e < 2 + MEMO_FAR)
        return r->memofar[e - 2];
    e -= 2 + MEMO_FAR;
    return (ck_py_t *)(g->base + ((uintptr_t)(e >> 2) - MEMO_NEAR) * 8 +
                       (e & 3));
}

/* Group g's entries as full pointers: 0, or -1 out of memory. */
static int memo_widen(rd_t *r, memo_group_t *g)
{
    size_t first = (size_t)(g - r->memo) * MEMO_GROUP;
    ck_py_t **w = ck_malloc(MEMO_GROUP * sizeof(*w));

    if (w == NULL)
        return -1;
    for (size_t i = 0; i < MEMO_GROUP; i++) /* (entries never put: 0) */
        w[i] = memo_at(r, first + i);
    g->base = (uintptr_t)w | 1;
    r->memowide++;
    return 0;
}

/* Entry idx (under memocap groups) set to v, a node, tagged or not: 0,
 * or -1 out of memory. */
static int memo_set(rd_t *r, uint64_t idx, ck_py_t *v)
{
    memo_group_t *g = &r->memo[idx / MEMO_GROUP];
    uintptr_t a = (uintptr_t)v & ~(PID_TAG | ARGS_TAG);
    intptr_t d;

    if (!(g->base & 1)) {
        if (((const ck_py_t *)a)->flags & CK_PY_F_VALUE) {
            g->e[idx % MEMO_GROUP] = MEMO_VALUE;
            return 0;
        }
        if (g->base == 0) /* where the nodes are being made */
            g->base = ck_arena_next(r->a) & ~(uintptr_t)7;
        d = (intptr_t)(a - g->base) / 8;
        /* the largest entry, tag bits included, still 16 bits */
        if ((a & 7) == 0 && d >= -MEMO_NEAR &&
            d < MEMO_NEAR - (2 + MEMO_FAR + 3) / 4) {
            g->e[idx % MEMO_GROUP] = (uint16_t)(
                2 + MEMO_FAR +
                ((uintptr_t)(d + MEMO_NEAR) << 2 | ((uintptr_t)v & 3)));
            return 0;
        }
        for (unsigned i = 0; i < r->nfar; i++)
            if (r->memofar[i] == v) {
                g->e[idx % MEMO_GROUP] = (uint16_t)(2 + i);
                return 0;
            }
        d = (intptr_t)(a - ck_arena_next(r->a)) / 8;
        if (r->nfar < MEMO_FAR && (d < -MEMO_NEAR || d > 0)) {
            /* old: one put again and again, maybe (made just now: in a
             * block begun since base, widened) */
            g->e[idx % MEMO_GROUP] = (uint16_t)(2 + r->nfar);
            r->memofar[r->nfar++] = v;
            return 0;
        }
        if (memo_widen(r, g) < 0)
            return -1;
    }
    ((ck_py_t **)(g->base & ~(uintptr_t)1))[idx % MEMO_GROUP] = v;
    return 0;
}

static void memo_free(rd_t *r)
{
    for (size_t i = 0; r->memowide > 0 && i < r->memocap; i++)
        if (r->memo[i].base & 1) {
            ck_free((void *)(r->memo[i].base & ~(uintptr_t)1));
            r->memowide--;
        }
    ck_map_free(r->memo, r->memocap * sizeof(*r->memo));
}

static int memo_put(rd_t *r, uint64_t idx, ck_py_t *v)
{
    if (v == NULL)
        return CK_EFORMAT;
    if (idx >= r->lim->max_memo)
        return rd_fail(r, CK_ELIMIT, "memo index %llu over the limit %u",
                       (unsigned long long)idx, r->lim->max_memo);
    if (idx / MEMO_GROUP >= r->memocap) {
        size_t cap = r->memocap ? r->memocap : 16;
        memo_group_t *nm;

        while (cap <= idx / MEMO_GROUP)
            cap *= 2;
        /* a mapping, zero as made: room never reached is never touched */
        nm = ck_map_grow(r->memo, r->memocap * sizeof(*nm), cap * sizeof(*nm));
        if (nm == NULL)
            return rd_nomem(r);
        r->memo = nm;
        r->memocap = cap;
    }
    if (idx >= r->memolen)
        r->memolen = idx + 1;
    if ((r->memo[idx / MEMO_GROUP].base & 1)
            ? memo_at(r, idx) == NULL
            : r->memo[idx / MEMO_GROUP].e[idx % MEMO_GROUP] == 0)
        r->memocount++;
    if (v == r->spare) {
        r->spare_puts++;
        r->spare_idx = idx;
    }
    if (v == r->kstr) {
        r->kidx = idx;
        if (r->kstr_puts++ > 0)
            r->kstr = NULL;
    } else if (r->kstr_puts > 0 && idx == r->kidx) {
        r->kstr_puts = 0;   /* the key's entry is another's now */
    }
    return memo_set(r, idx, v) < 0 ? rd_nomem(r) : 0;
}

/*
 * v pushed a second time (a GET, a DUP): one object in two places.  A
 * value node stands for one object per place, so the pickle is read again
 * without sharing (ck_pickle_read); the spare OrderedDict() is kept.
 */
static int value_again(rd_t *r)
{
    r->reread = 1;
    return rd_fail(r, CK_EFORMAT, "a shared value named again");
}

static int push_again(rd_t *r, ck_py_t *v)
{
    if (v->flags & CK_PY_F_VALUE)
        return value_again(r);
    if (v == r->spare)
        r->spare_twice = 1;
    if (v == r->kstr)
        r->kstr = NULL;
    return push(r, v);
}

static int memo_get(rd_t *r, uint64_t idx)
{
    ck_py_t *v;

    if (idx >= r->memolen || (v = memo_at(r, idx)) == NULL)
        return rd_fail(r, CK_EFORMAT, "memo index %llu never stored",
                       (unsigned long long)idx);
    if (v == (ck_py_t *)(uintptr_t)MEMO_VALUE)
        return value_again(r);
    if ((uintptr_t)v & KEY_TAG) {
        /* a compact id's or call's tuple, or an id's key, named again: it
         * gets it now */
        ck_py_t *o = (ck_py_t *)((uintptr_t)v & ~KEY_TAG);

        switch ((uintptr_t)v & KEY_TAG) {
        case PID_TAG:
            v = ck_py_pid_tuple(r->a, o);
            break;
        case ARGS_TAG:
            v = ck_py_args_tuple(r->a, o);
            break;
        default:
            v = ck_py_pid_key(r->a, o);
        }
        if (v == NULL || memo_set(r, idx, v) < 0)
            return rd_nomem(r);
    }
    return push_again(r, v);
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

static size_t int_hash(int64_t v)
{
    return (size_t)(((uint64_t)v * 0x9e3779b97f4a7c15u) >> 20);
}

static size_t int_node_hash(const ck_py_t *p)
{
    return int_hash(p->u.i.v);
}

/* The node of int v, made on first use; NULL when out of memory. */
static ck_py_t *int_node(rd_t *r, int64_t v)
{
    nodeset_t *s = &r->ints64;
    ck_py_t **slot;
    size_t i;

    if (v >= RD_SMALL_MIN && v < RD_SMALL_MIN + RD_SMALL_INTS) {
        slot = &r->ints[v - RD_SMALL_MIN];
        if (*slot == NULL)
            *slot = ck_py_int(r->a, v);
        return *slot;
    }
    if (nodeset_room(s, 1024, int_node_hash) < 0)
        return NULL;
    for (i = int_hash(v) & (s->cap - 1); s->v[i] != NULL; i = (i + 1) & (s->cap - 1))
        if (s->v[i]->u.i.v == v)
            return s->v[i];
    if ((s->v[i] = ck_py_int(r->a, v)) != NULL)
        s->n++;
    return s->v[i];
}

/* An int node from LE two's complement bytes (LONG1, LONG4, decimal text). */
static ck_py_t *int_from_le(rd_t *r, const uint8_t *b, size_t n)
{
    ck_py_t *p;
    size_t m;

    if (n == 0)
        return int_node(r, 0);
    m = ck_pyint_trim(b, n);
    if (m <= 8) {
        uint64_t v = 0;

        for (size_t i = m; i-- > 0;)
            v = v << 8 | b[i];
        if (m < 8 && (b[m - 1] & 0x80))
            v |= ~0ull << (8 * m);
        return int_node(r, (int64_t)v);
    }
    if ((p = ck_py_new(r->a, CK_PY_INT)) == NULL)
        return NULL;
    p->u.i.big = ck_arena_alloc(r->a, m);
    if (p->u.i.big == NULL)
        return NULL;
    memcpy(p->u.i.big, b, m);
    p->len = (uint32_t)m; /* (at most 2^31 bytes, or checked: push_decimal) */
    return p;
}

/* UTF-8 as Python decodes it with 'surrogatepass': surrogates allowed. */
static int utf8_valid(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint64_t w;
        int k;

        if (n - i >= 8) {   /* eight ASCII bytes at a time */
            memcpy(&w, s + i, 8);
            if ((w & 0x8080808080808080u) == 0) {
                i += 8;
                continue;
            }
        }
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        k = ck_utf8_len(s + i, n - i, 1);

        if (k == 0)
            return 0;
        i += (size_t)k;
    }
    return 1;
}

static int push_string(rd_t *r, ck_py_kind_t kind, const void *s, size_t n)
{
    ck_py_t *p;

    if (n > r->lim->max_string_bytes || n > UINT32_MAX) /* (ck_py_t.len) */
        return rd_fail(r, CK_ELIMIT, "string of %zu bytes over the limit", n);
    if (kind == CK_PY_STR && !utf8_valid(s, n))
        return rd_fail(r, CK_EFORMAT, "str that is not valid UTF-8");
    p = ck_py_new(r->a, kind);
    if (p == NULL)
        return rd_nomem(r);
    p->u.s.s = ck_arena_strndup(r->a, s, n);
    p->len = n;
    if (kind == CK_PY_STR && n < sizeof(p->u.pc.key.s)) {
        r->kstr = p;
        r->kstr_puts = 0;
    }
    return push(r, p->u.s.s != NULL ? p : NULL);
}

/* INT and LONG: decimal text, any size. */
static int push_decimal(rd_t *r, const char *s, size_t n)
{
    uint8_t *le = NULL;
    size_t len = 0;
    int rc = pk_decimal(r->a, s, n, &le, &len);

    if (rc == CK_ENOMEM)
        return rd_nomem(r);
    if (rc < 0)
        return rd_fail(r, CK_EFORMAT, "bad integer text");
    if (len > UINT32_MAX) /* (ck_py_t.len) */
        return rd_fail(r, CK_ELIMIT, "integer of %zu bytes over the limit",
                       len);
    return push(r, int_from_le(r, le, len));
}

/* STRING and UNICODE: a text line decoded into a str. */
static int push_text(rd_t *r, int op, const char *s, size_t n)
{
    const char *why = NULL;
    uint8_t *d = NULL;
    size_t len = 0;
    int rc = 0;

    if (op == OP_STRING) {
        rc = pk_unquote(s, n, &d, &len, &why);
    } else {
        d = pk_raw_unicode(s, n, &len);
        rc = d == NULL ? CK_ENOMEM : 0;
    }
    if (rc == CK_ENOMEM)
        rc = rd_nomem(r);
    else if (rc < 0)
        rc = rd_fail(r, rc, "%s", why);
    else
        rc = push_string(r, CK_PY_STR, d, len);
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
    if (kind == CK_PY_REDUCE && args == r->empty_tuple && !r->no_share &&
        (fn == r->od_fn ||
         (ck_py_global_is(fn, "collections", "OrderedDict") &&
          (r->od_fn = fn) != NULL))) {
        if (r->spare == NULL || !r->spare_free ||
            r->spare->u.o.fn != fn)
            r->spare = ck_py_new(r->a, kind);
        r->spare_free = 0;
        r->spare_puts = 0;
        r->spare_twice = 0;
        o = r->spare;
    } else {
        o = ck_py_new(r->a, kind);
    }
    if (o == NULL)
        return rd_nomem(r);
    o->u.o.fn = fn;
    o->u.o.args = args;
    return push(r, o);
}

/*
 * The spare OrderedDict() as a tensor's hooks in the tuple of the items
 * from base up (see rd_t): replaced by the value node, and the spare free
 * again.  0, or CK_ENOMEM.
 */
static int share_hooks(rd_t *r, size_t base)
{
    ck_py_t *h = r->spare;

    if (r->sp - base < 6 || r->stack[base + 5] != h || r->spare_free ||
        r->stack[base]->kind != CK_PY_PERSID || h->u.o.after != NULL ||
        r->spare_puts > 1 || r->spare_twice)
        return 0;
    if (r->hooks == NULL || r->hooks->u.o.fn != h->u.o.fn) {
        if (r->hooks != NULL)
            return 0;   /* a second OrderedDict global: not shared */
        if ((r->hooks = ck_py_new(r->a, CK_PY_REDUCE)) == NULL)
            return CK_ENOMEM;
        r->hooks->u.o.fn = h->u.o.fn;
        r->hooks->u.o.args = h->u.o.args;
        r->hooks->flags = CK_PY_F_VALUE;
    }
    r->stack[base + 5] = r->hooks;
    if (r->spare_puts == 1)
        memo_set(r, r->spare_idx, r->hooks); /* a value: no room needed */
    r->spare_free = 1;
    return 0;
}

/* 1 when an item from base up the stack, every step-th, is of a type
 * Python cannot hash (a dict key, a set member): torch.load would fail
 * there, and a writer would write what no reader reads. */
static int unhashable(const rd_t *r, size_t base, size_t step)
{
    for (size_t i = base; i < r->sp; i += step) {
        int k = r->stack[i]->kind;

        if (k == CK_PY_LIST || k == CK_PY_DICT || k == CK_PY_SET ||
            k == CK_PY_BYTEARRAY)
            return 1;
    }
    return 0;
}

/* A call's room for items and state, made on first use: 1, or 0 when out
 * of memory. */
static int after_of(rd_t *r, ck_py_t *call)
{
    return ck_py_after_make(r->a, call) != NULL;
}

static int add_items(rd_t *r, ck_py_t *target, size_t base, int pairs)
{
    ck_py_vec_t *v;
    size_t n = r->sp - base;

    if (pairs) {
        if (target->kind == CK_PY_DICT)
            v = &target->u.seq;
        else if (target->kind == CK_PY_REDUCE || target->kind == CK_PY_NEWOBJ)
            v = after_of(r, target) ? &target->u.o.after->dict : NULL;
        else
            return rd_fail(r, CK_EFORMAT,
                           "SETITEM on a value that is not a dict");
        if (n % 2)
            return rd_fail(r, CK_EFORMAT, "SETITEMS with an odd item count");
        if (unhashable(r, base, 2))
            return rd_fail(r, CK_EFORMAT, "dict key of an unhashable type");
    } else {
        if (target->kind == CK_PY_LIST)
            v = &target->u.seq;
        else if (target->kind == CK_PY_REDUCE || target->kind == CK_PY_NEWOBJ)
            v = after_of(r, target) ? &target->u.o.after->list : NULL;
        else
            return rd_fail(r, CK_EFORMAT,
                           "APPEND on a value that is not a list");
    }
    /* room for the whole batch at once: an optimizer's per-parameter
     * dicts get exactly their items, and fewer old arrays stay behind */
    if (v == NULL || ck_py_vec_reserve(r->a, v, n) < 0)
        return rd_nomem(r);
    if (n > 0) { /* v->v may be NULL: no NULL + 0 */
        memcpy(v->v + v->n, r->stack + base, n * sizeof(*v->v));
        v->n += (uint32_t)n;
    }
    r->sp = base;
    return 0;
}

#define RD_VALUE_MAX 8 /* items of a tuple shared as a value */

static size_t value_hash(ck_py_t *const *v, size_t n)
{
    uint64_t h = n;

    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint64_t)(uintptr_t)v[i]) * 0x9e3779b97f4a7c15u;
    return (size_t)(h ^ h >> 29);
}

static size_t tuple_node_hash(const ck_py_t *p)
{
    return value_hash(p->u.seq.v, p->u.seq.n);
}

/*
 * The shared node of the tuple of the items from base up when they are all
 * int64s (one node per value, so equal tuples have equal item pointers):
 * found, or made and kept.  NULL when they are not, or out of memory
 * (*oom set).
 */
static ck_py_t *value_tuple(rd_t *r, size_t base, int *oom)
{
    nodeset_t *s = &r->tuples;
    size_t n = r->sp - base, i;
    ck_py_t *const *v;
    ck_py_t *t;

    if (r->no_share || n == 0 || n > RD_VALUE_MAX)
        return NULL;
    v = r->stack + base;    /* (r->stack may be NULL when n is 0) */
    for (i = 0; i < n; i++)
        if (v[i]->kind != CK_PY_INT || v[i]->len != 0)
            return NULL;
    if (nodeset_room(s, 256, tuple_node_hash) < 0) {
        *oom = 1;
        return NULL;
    }
    for (i = value_hash(v, n) & (s->cap - 1); (t = s->v[i]) != NULL;
         i = (i + 1) & (s->cap - 1))
        if (t->u.seq.n == n && memcmp(t->u.seq.v, v, n * sizeof(*v)) == 0)
            return t;
    t = ck_py_new(r->a, CK_PY_TUPLE);
    if (t == NULL || (t->u.seq.v = ck_arena_alloc(r->a, n * sizeof(*v))) == NULL) {
        *oom = 1;
        return NULL;
    }
    memcpy(t->u.seq.v, v, n * sizeof(*v));
    t->u.seq.n = t->u.seq.cap = (uint32_t)n;
    t->flags = CK_PY_F_VALUE;
    s->v[i] = t;
    s->n++;
    return t;
}

static int tuple_of(rd_t *r, size_t base)
{
    int oom = r->spare != NULL && share_hooks(r, base) < 0;
    ck_py_t *t = oom ? NULL : value_tuple(r, base, &oom);

    if (t != NULL) {
        r->sp = base;
        return push(r, t);
    }
    if (oom || (t = ck_py_new(r->a, CK_PY_TUPLE)) == NULL)
        return rd_nomem(r);
    if (seq_from(r, &t->u.seq, base) < 0)
        return CK_ENOMEM;
    return push(r, t);
}

/* The shared parts of an id (tag, class, location), found or made; NULL
 * when out of memory. */
static const ck_py_pidt_t *pid_parts(rd_t *r, ck_py_t *const *v)
{
    ck_py_pidt_t *t;

    for (unsigned i = 0; i < RD_PIDT; i++) {
        t = r->pidt[i];
        if (t != NULL && t->tag == v[0] && t->cls == v[1] && t->loc == v[3])
            return t;
    }
    if ((t = ck_arena_alloc(r->a, sizeof(*t))) == NULL)
        return NULL;
    t->tag = v[0];
    t->cls = v[1];
    t->loc = v[3];
    r->pidt[r->pidt_next++ % RD_PIDT] = t;
    return t;
}

/*
 * 1 when the next opcodes are a PUT (BINPUT, LONG_BINPUT or MEMOIZE) and
 * then 'then', all in the pickle's bytes at hand and in one FRAME, the
 * PUT's index under the limit: *idx gets the index, *need the bytes of
 * both.  0 otherwise: the opcodes one by one meet what they meet.
 */
static int put_then(rd_t *r, int then, uint64_t *idx, size_t *need)
{
    const uint8_t *p;
    size_t avail;

    if (r->src != NULL && pk_src_peek(r->src, &r->c, 6) < 0)
        return 0;
    p = r->c.p;
    avail = (size_t)(r->c.end - p);
    if (avail >= 2 && p[0] == OP_MEMOIZE) { /* protocol 4 and 5 */
        *idx = r->memocount;
        *need = 2;
    } else if (avail >= 3 && p[0] == OP_BINPUT) {
        *idx = p[1];
        *need = 3;
    } else if (avail >= 6 && p[0] == OP_LONG_BINPUT) {
        *idx = pk_le32(p + 1);
        *need = 6;
    } else {
        return 0;
    }
    return p[*need - 1] == then && *idx < r->lim->max_memo &&
           (r->c.frame_end == NULL ||
            (size_t)(r->c.frame_end - p) >= *need);
}

/*
 * torch.save's persistent id: MARK 'storage' class key location numel
 * TUPLE, then BINPUT, LONG_BINPUT or MEMOIZE, then BINPERSID.  At that
 * TUPLE (the items from base up), when the next two opcodes are the PUT
 * and the BINPERSID, the three run as one and the id holds no tuple
 * (pickle.h, CK_PY_F_PIDC): the memo entry names the id, tagged, and a
 * GET of it gives the id its tuple then (memo_get).  What runs is what
 * the three would do, errors included: anything else -- a memo index over
 * the limit, a FRAME's end between them -- runs them one by one.  The
 * key, torch.save's "0", "1", ..., is made and put before the id is known:
 * when nothing else names it and nothing was made after it, its room is
 * given back and the id holds its text (CK_PY_F_PIDK), its memo entry
 * naming the id, tagged, for a GET to make it again.  0 when done, 1 to
 * run the TUPLE as it is, or an error.
 */
static int fused_pid(rd_t *r, size_t base)
{
    const size_t strsz = offsetof(ck_py_t, u) + sizeof(((ck_py_t *)0)->u.s);
    ck_py_t *const *v, *id, *key;
    char text[sizeof(id->u.pc.key.s)];
    size_t need;
    uint64_t idx;
    int inl;

    if (r->sp - base != 5)
        return 1;
    v = r->stack + base;    /* (r->stack may be NULL when nothing is on it) */
    if (v[0]->kind != CK_PY_STR ||
        v[1]->kind != CK_PY_GLOBAL || v[2]->kind != CK_PY_STR ||
        v[3]->kind != CK_PY_STR || v[4]->kind != CK_PY_INT ||
        !ck_py_str_eq(v[0], "storage") ||
        !put_then(r, OP_BINPERSID, &idx, &need))
        return 1;
    /* a key named nowhere else, made last (its numel an int met before):
     * its text is kept in the id, and its room is the id's */
    key = v[2];
    inl = key == r->kstr && key != v[3] &&
          memchr(key->u.s.s, 0, key->len) == NULL &&
          key->u.s.s == (char *)key + strsz &&
          (uintptr_t)key->u.s.s + sizeof(text) == ck_arena_next(r->a);
    if (inl) {
        memcpy(text, key->u.s.s, sizeof(text)); /* (NUL-padded, as made) */
        (void)ck_arena_unalloc(r->a, key->u.s.s, key->len + 1);
        (void)ck_arena_unalloc(r->a, key, strsz);
        r->kstr = NULL;
    }
    id = ck_arena_alloc(r->a, offsetof(ck_py_t, u) + sizeof(id->u.pc));
    if (id == NULL || (id->u.pc.t = pid_parts(r, v)) == NULL)
        return rd_nomem(r);
    id->kind = CK_PY_PERSID;
    id->flags = CK_PY_F_PIDC;
    if (inl) {
        id->flags |= CK_PY_F_PIDK;
        memcpy(id->u.pc.key.s, text, sizeof(text));
    } else {
        id->u.pc.key.p = key;
    }
    id->u.pc.numel = v[4];
    r->sp = base;
    if (inl && r->kstr_puts > 0 &&
        memo_set(r, r->kidx, (ck_py_t *)((uintptr_t)id | KEY_TAG)) < 0)
        return rd_nomem(r);
    if (memo_put(r, idx, (ck_py_t *)((uintptr_t)id | PID_TAG)) < 0)
        return CK_ENOMEM;
    (void)pk_rd_bytes(&r->c, need);
    return push(r, id);
}

/*
 * torch.save's tensor: the callable _rebuild_tensor_v2, MARK, its six
 * arguments -- a persistent id first -- TUPLE, a PUT, REDUCE.  At that
 * TUPLE, the three run as one and the call holds no tuple (pickle.h,
 * CK_PY_F_ARGC): the memo entry names the call, tagged, and a GET of it
 * gives the call its tuple then (memo_get).  As fused_pid: what runs is
 * what the three would do, anything else runs them one by one.  0 when
 * done, 1 to run the TUPLE as it is, or an error.
 */
static int fused_call(rd_t *r, size_t base)
{
    ck_py_t *const *v, *fn, *call;
    size_t need;
    uint64_t idx;

    if (r->sp - base != CK_PY_ARGC || base <= frame_base(r))
        return 1;
    v = r->stack + base;
    fn = r->stack[base - 1];
    if (v[0]->kind != CK_PY_PERSID || fn->kind != CK_PY_GLOBAL ||
        (fn != r->tensor_fn &&
         !ck_py_global_is(fn, "torch._utils", "_rebuild_tensor_v2")) ||
        !put_then(r, OP_REDUCE, &idx, &need))
        return 1;
    r->tensor_fn = fn;
    if ((r->spare != NULL && share_hooks(r, base) < 0) ||
        (call = ck_py_argc_new(r->a, fn, v)) == NULL)
        return rd_nomem(r);
    r->sp = base - 1;
    if (memo_put(r, idx, (ck_py_t *)((uintptr_t)call | ARGS_TAG)) < 0)
        return CK_ENOMEM;
    (void)pk_rd_bytes(&r->c, need);
    return push(r, call);
}

/* ---- opcodes, by family ------------------------------------------------ */

static int push_bool(rd_t *r, int b)
{
    ck_py_t *v = r->bools[b];

    if (v == NULL && (v = ck_py_new(r->a, CK_PY_BOOL)) != NULL) {
        v->b = (uint8_t)b;
        r->bools[b] = v;
    }
    return push(r, v);
}

static int push_none(rd_t *r)
{
    if (r->none == NULL)
        r->none = ck_py_new(r->a, CK_PY_NONE);
    return push(r, r->none);
}

static int push_int(rd_t *r, int64_t v)
{
    return push(r, int_node(r, v));
}

/* PROTO, FRAME, STOP, and what is refused: EXT1/2/4 and protocol 5's
 * out-of-band buffers.  Returns 1 at STOP. */
static int op_protocol(rd_t *r, int op)
{
    pk_cur_t *c = &r->c;
    ck_py_t *root;
    uint64_t v;
    int rc;

    switch (op) {
    case OP_PROTO:
        v = pk_rd_u8(c);
        if ((rc = rd_check(r)) < 0)
            return rc;
        if (v > 5)
            return rd_fail_at(r, c->p - 1, CK_EUNSUPPORTED,
                              "pickle protocol %d", (int)v);
        if (r->out->protocol < 0)
            r->out->protocol = (int)v;
        return 0;
    case OP_FRAME:
        /* as pickle.py's _Unframer.load_frame: no frame inside another,
         * and a frame's bytes must all be there */
        v = pk_rd_u64(c);
        if ((rc = rd_check(r)) < 0)
            return rc;
        if (c->frame_end != NULL && c->p < c->frame_end)
            return rd_fail_at(r, c->p - 9, CK_EFORMAT,
                              "a FRAME begins inside another FRAME");
        c->frame_end = NULL;
        pk_rd_has(c, v);
        if ((rc = rd_check(r)) < 0)
            return rc;
        c->frame_end = c->p + v;
        return 0;
    case OP_STOP:
        root = pop(r);
        if (root == NULL)
            return CK_EFORMAT;
        if (r->sp != 0 || r->mp != 0)
            return rd_fail(r, CK_EFORMAT,
                           "STOP with %zu values and %zu marks left", r->sp,
                           r->mp);
        r->out->root = root;
        return 1;
    case OP_NEXT_BUFFER:
    case OP_READONLY_BUFFER:
        return rd_fail(r, CK_EUNSUPPORTED, "out-of-band buffers (protocol 5)");
    default: /* EXT1, EXT2, EXT4 */
        return rd_fail(r, CK_EUNSUPPORTED, "extension registry codes (EXT)");
    }
}

/* LONG1, LONG4: a length, then as many bytes of two's complement. */
static int push_long(rd_t *r, int op)
{
    pk_cur_t *c = &r->c;
    int w = op == OP_LONG1 ? 1 : 4;
    uint64_t n = w == 1 ? pk_rd_u8(c) : pk_rd_u32(c);
    const uint8_t *b;
    int rc;

    if (op == OP_LONG4 && (n & 0x80000000u))
        return rd_fail_at(r, c->p - w, CK_EFORMAT,
                          "LONG4 with a negative length");
    if (n > r->lim->max_string_bytes)
        return rd_fail_at(r, c->p - w, CK_ELIMIT,
                          "integer of %llu bytes over the limit",
                          (unsigned long long)n);
    b = pk_rd_bytes(c, n);
    if ((rc = rd_check(r)) < 0)
        return rc;
    return push(r, int_from_le(r, b, (size_t)n));
}

/* None, bools and ints: NONE, NEWTRUE, NEWFALSE, INT, LONG, BININT,
 * BININT1, BININT2, LONG1, LONG4. */
static int op_int(rd_t *r, int op)
{
    pk_cur_t *c = &r->c;
    const char *s;
    size_t n;
    int64_t v;
    int rc;

    switch (op) {
    case OP_NONE:
        return push_none(r);
    case OP_NEWTRUE:
    case OP_NEWFALSE:
        return push_bool(r, op == OP_NEWTRUE);
    case OP_INT:
        if ((rc = rd_line(r, &s, &n)) < 0)
            return rc;
        if (n == 2 && (memcmp(s, "00", 2) == 0 || memcmp(s, "01", 2) == 0))
            return push_bool(r, s[1] == '1');
        return push_decimal(r, s, n);
    case OP_LONG:
        if ((rc = rd_line(r, &s, &n)) < 0)
            return rc;
        if (n > 0 && s[n - 1] == 'L')
            n--;
        return push_decimal(r, s, n);
    case OP_BININT:
        v = (int32_t)pk_rd_u32(c);
        break;
    case OP_BININT1:
        v = (int64_t)pk_rd_u8(c);
        break;
    case OP_BININT2:
        v = (int64_t)pk_rd_u16(c);
        break;
    default: /* LONG1, LONG4 */
        return push_long(r, op);
    }
    if ((rc = rd_check(r)) < 0)
        return rc;
    return push_int(r, v);
}

/* The float node of the big-endian IEEE 754 bits be: a recent one of the
 * same bits (see rd_t), or a new one; NULL when out of memory. */
static ck_py_t *float_node(rd_t *r, const uint8_t *be)
{
    uint64_t bits;
    ck_py_t **slot;

    memcpy(&bits, be, 8); /* (any order hashes) */
    slot = &r->floats[(bits * 0x9e3779b97f4a7c15u) >> (64 - RD_FLOAT_BITS)];

    if (*slot == NULL || memcmp((*slot)->u.f, be, 8) != 0) {
        ck_py_t *f = ck_py_new(r->a, CK_PY_FLOAT);

        if (f == NULL)
            return NULL;
        memcpy(f->u.f, be, 8);
        *slot = f;
    }
    return *slot;
}

/* FLOAT (text as repr() gives it) and BINFLOAT (big-endian IEEE 754). */
static int op_float(rd_t *r, int op)
{
    const uint8_t *b;
    const char *s;
    uint8_t be[8];
    size_t n;
    double v;
    int rc;

    if (op == OP_BINFLOAT) {
        b = pk_rd_bytes(&r->c, 8);
        if ((rc = rd_check(r)) < 0)
            return rc;
        return push(r, float_node(r, b));
    }
    if ((rc = rd_line(r, &s, &n)) < 0)
        return rc;
    if (pk_float_text(s, n, &v) < 0)
        return rd_fail(r, CK_EFORMAT, "bad FLOAT text");
    ck_py_float_be(v, be);
    return push(r, float_node(r, be));
}

/* str, bytes and bytearray: STRING and UNICODE (text lines), then the
 * counted forms, a 1, 4 or 8-byte length and the bytes. */
static int op_string(rd_t *r, int op)
{
    pk_cur_t *c = &r->c;
    ck_py_kind_t kind = CK_PY_STR;
    const uint8_t *b;
    const char *s;
    size_t n;
    uint64_t len;
    int rc;

    switch (op) {
    case OP_STRING:
    case OP_UNICODE:
        if ((rc = rd_line(r, &s, &n)) < 0)
            return rc;
        return push_text(r, op, s, n);
    case OP_SHORT_BINSTRING:
    case OP_SHORT_BINUNICODE:
        len = pk_rd_u8(c);
        break;
    case OP_BINSTRING:
    case OP_BINUNICODE:
        len = pk_rd_u32(c);
        break;
    case OP_BINUNICODE8:
        len = pk_rd_u64(c);
        break;
    case OP_SHORT_BINBYTES:
        kind = CK_PY_BYTES;
        len = pk_rd_u8(c);
        break;
    case OP_BINBYTES:
        kind = CK_PY_BYTES;
        len = pk_rd_u32(c);
        break;
    case OP_BINBYTES8:
        kind = CK_PY_BYTES;
        len = pk_rd_u64(c);
        break;
    default: /* BYTEARRAY8 */
        kind = CK_PY_BYTEARRAY;
        len = pk_rd_u64(c);
    }
    if (op == OP_BINSTRING && (len & 0x80000000u))
        return rd_fail_at(r, c->p - 4, CK_EFORMAT,
                          "BINSTRING with a negative length");
    if (len > r->lim->max_string_bytes)
        return rd_fail(r, CK_ELIMIT, "length %llu over the string limit",
                       (unsigned long long)len);
    b = pk_rd_bytes(c, len);
    if ((rc = rd_check(r)) < 0)
        return rc;
    return push_string(r, kind, b, (size_t)len);
}

/* The stack and its marks: MARK, POP, POP_MARK, DUP. */
static int op_stack(rd_t *r, int op)
{
    ck_py_t *v;
    long base;

    switch (op) {
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
        while (r->sp > (size_t)base)
            if (ck_py_vec_push(r->a, &r->out->dropped, r->stack[--r->sp]) < 0)
                return rd_nomem(r);
        return 0;
    case OP_POP:
        if (r->sp > frame_base(r)) {
            if (ck_py_vec_push(r->a, &r->out->dropped, r->stack[--r->sp]) < 0)
                return rd_nomem(r);
            return 0;
        }
        return pop_mark(r) < 0 ? CK_EFORMAT : 0;
    default: /* DUP */
        v = top(r);
        return v == NULL ? CK_EFORMAT : push_again(r, v);
    }
}

/* Tuples, lists, dicts and sets, empty or from the stack, and the items
 * added to them: APPEND(S), SETITEM(S), ADDITEMS. */
static int op_container(rd_t *r, int op)
{
    ck_py_t *v;
    long base;
    size_t n;
    int rc;

    switch (op) {
    case OP_EMPTY_TUPLE:
        if (r->empty_tuple == NULL)
            r->empty_tuple = ck_py_new(r->a, CK_PY_TUPLE);
        return push(r, r->empty_tuple);
    case OP_EMPTY_LIST:
        return push(r, ck_py_new(r->a, CK_PY_LIST));
    case OP_EMPTY_DICT:
        return push(r, ck_py_new(r->a, CK_PY_DICT));
    case OP_EMPTY_SET:
        return push(r, ck_py_new(r->a, CK_PY_SET));
    case OP_TUPLE1:
    case OP_TUPLE2:
    case OP_TUPLE3:
        n = (size_t)(op - OP_TUPLE1 + 1);
        if (r->sp < frame_base(r) + n)
            return rd_fail(r, CK_EFORMAT, "stack underflow");
        return tuple_of(r, r->sp - n);
    case OP_APPEND:
    case OP_SETITEM:
        n = op == OP_APPEND ? 1 : 2;
        if (r->sp < frame_base(r) + n + 1)
            return rd_fail(r, CK_EFORMAT, "stack underflow");
        return add_items(r, r->stack[r->sp - n - 1], r->sp - n,
                         op == OP_SETITEM);
    }
    /* the rest take the items above the last MARK */
    if ((base = pop_mark(r)) < 0)
        return CK_EFORMAT;
    switch (op) {
    case OP_TUPLE:
        if ((rc = fused_pid(r, (size_t)base)) <= 0 ||
            (rc = fused_call(r, (size_t)base)) <= 0)
            return rc;
        return tuple_of(r, (size_t)base);
    case OP_LIST:
    case OP_FROZENSET:
    case OP_DICT:
        if (op == OP_DICT && (r->sp - (size_t)base) % 2)
            return rd_fail(r, CK_EFORMAT, "DICT with an odd item count");
        if (op == OP_DICT && unhashable(r, (size_t)base, 2))
            return rd_fail(r, CK_EFORMAT, "dict key of an unhashable type");
        if (op == OP_FROZENSET && unhashable(r, (size_t)base, 1))
            return rd_fail(r, CK_EFORMAT, "set member of an unhashable type");
        v = ck_py_new(r->a, op == OP_LIST   ? CK_PY_LIST
                            : op == OP_DICT ? CK_PY_DICT
                                            : CK_PY_FROZENSET);
        if (v == NULL)
            return rd_nomem(r);
        if (seq_from(r, &v->u.seq, (size_t)base) < 0)
            return CK_ENOMEM;
        return push(r, v);
    }
    /* APPENDS, SETITEMS, ADDITEMS: onto the value below the MARK */
    if ((size_t)base <= frame_base(r))
        return rd_fail(r, CK_EFORMAT, "stack underflow");
    v = r->stack[base - 1];
    if (op != OP_ADDITEMS)
        return add_items(r, v, (size_t)base, op == OP_SETITEMS);
    if (v->kind != CK_PY_SET)
        return rd_fail(r, CK_EFORMAT, "ADDITEMS on a value that is not a set");
    if (unhashable(r, (size_t)base, 1))
        return rd_fail(r, CK_EFORMAT, "set member of an unhashable type");
    for (size_t i = (size_t)base; i < r->sp; i++)
        if (ck_py_vec_push(r->a, &v->u.seq, r->stack[i]) < 0)
            return rd_nomem(r);
    r->sp = (size_t)base;
    return 0;
}

/* GET, BINGET, LONG_BINGET, PUT, BINPUT, LONG_BINPUT, MEMOIZE. */
static int op_memo(rd_t *r, int op)
{
    pk_cur_t *c = &r->c;
    uint64_t idx = 0;
    int rc = 0;

    switch (op) {
    case OP_GET:
    case OP_PUT:
        rc = parse_index(r, &idx);
        break;
    case OP_BINGET:
    case OP_BINPUT:
        idx = pk_rd_u8(c);
        break;
    case OP_LONG_BINGET:
    case OP_LONG_BINPUT:
        idx = pk_rd_u32(c);
        break;
    default: /* MEMOIZE */
        idx = r->memocount;
    }
    if (rc < 0 || (rc = rd_check(r)) < 0)
        return rc;
    if (op == OP_GET || op == OP_BINGET || op == OP_LONG_BINGET)
        return memo_get(r, idx);
    return memo_put(r, idx, top(r));
}

/* Names: GLOBAL, STACK_GLOBAL; persistent ids: PERSID, BINPERSID. */
static int op_global(rd_t *r, int op)
{
    const char *s, *s2;
    size_t n, n2;
    ck_py_t *a, *b;
    int rc;

    switch (op) {
    case OP_GLOBAL:
        if ((rc = rd_line(r, &s, &n)) < 0 || (rc = rd_line(r, &s2, &n2)) < 0)
            return rc;
        return add_global(r, s, n, s2, n2);
    case OP_STACK_GLOBAL:
        b = pop(r);
        a = b ? pop(r) : NULL;
        if (a == NULL)
            return CK_EFORMAT;
        if (a->kind != CK_PY_STR || b->kind != CK_PY_STR)
            return rd_fail(r, CK_EFORMAT,
                           "STACK_GLOBAL of values that are not str");
        return add_global(r, a->u.s.s, a->len, b->u.s.s, b->len);
    case OP_PERSID:
        if ((rc = rd_line(r, &s, &n)) < 0)
            return rc;
        if ((rc = push_string(r, CK_PY_STR, s, n)) < 0)
            return rc;
        /* fall through */
    default: /* BINPERSID */
        b = pop(r);
        if (b == NULL)
            return CK_EFORMAT;
        a = ck_py_new(r->a, CK_PY_PERSID);
        if (a != NULL)
            a->u.pid = b;
        return push(r, a);
    }
}

/* Calls and their state: INST, OBJ, REDUCE, NEWOBJ, NEWOBJ_EX, BUILD. */
static int op_call(rd_t *r, int op)
{
    const char *s, *s2;
    size_t n, n2;
    ck_py_t *a, *b, *c;
    long base;
    int rc;

    switch (op) {
    case OP_INST:
        if ((rc = rd_line(r, &s, &n)) < 0 || (rc = rd_line(r, &s2, &n2)) < 0)
            return rc;
        if ((base = pop_mark(r)) < 0)
            return CK_EFORMAT;
        if ((rc = tuple_of(r, (size_t)base)) < 0)
            return rc;
        if ((rc = add_global(r, s, n, s2, n2)) < 0)
            return rc;
        b = r->stack[--r->sp];
        a = r->stack[--r->sp];
        return push_call(r, CK_PY_REDUCE, b, a);
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
        return push_call(r, op == OP_REDUCE ? CK_PY_REDUCE : CK_PY_NEWOBJ, a,
                         b);
    case OP_NEWOBJ_EX:
        c = pop(r);
        b = c ? pop(r) : NULL;
        a = b ? pop(r) : NULL;
        if (a == NULL)
            return CK_EFORMAT;
        if (c->kind != CK_PY_DICT || c->u.seq.n != 0)
            return rd_fail(r, CK_EUNSUPPORTED,
                           "NEWOBJ_EX with keyword arguments");
        return push_call(r, CK_PY_NEWOBJ, a, b);
    default: /* BUILD */
        b = pop(r);
        a = b ? top(r) : NULL;
        if (a == NULL)
            return CK_EFORMAT;
        if (a->kind != CK_PY_REDUCE && a->kind != CK_PY_NEWOBJ)
            return rd_fail(r, CK_EFORMAT,
                           "BUILD on a value that is not an object");
        if (ck_py_after(a)->state != NULL)
            return rd_fail(r, CK_EUNSUPPORTED, "BUILD twice on one object");
        if (!after_of(r, a))
            return rd_nomem(r);
        a->u.o.after->state = b;
        return 0;
    }
}

/* Each opcode's family; F_NONE for bytes that are no opcode. */
/* clang-format off */
enum {
    F_NONE, F_PROTOCOL, F_INT, F_FLOAT, F_STRING, F_STACK, F_CONTAINER,
    F_MEMO, F_GLOBAL, F_CALL,
};

static const uint8_t op_family[256] = {
    [OP_PROTO] = F_PROTOCOL, [OP_FRAME] = F_PROTOCOL,
    [OP_STOP] = F_PROTOCOL, [OP_EXT1] = F_PROTOCOL,
    [OP_EXT2] = F_PROTOCOL, [OP_EXT4] = F_PROTOCOL,
    [OP_NEXT_BUFFER] = F_PROTOCOL, [OP_READONLY_BUFFER] = F_PROTOCOL,

    [OP_NONE] = F_INT, [OP_NEWTRUE] = F_INT, [OP_NEWFALSE] = F_INT,
    [OP_INT] = F_INT, [OP_LONG] = F_INT, [OP_BININT] = F_INT,
    [OP_BININT1] = F_INT, [OP_BININT2] = F_INT, [OP_LONG1] = F_INT,
    [OP_LONG4] = F_INT,

    [OP_FLOAT] = F_FLOAT, [OP_BINFLOAT] = F_FLOAT,

    [OP_STRING] = F_STRING, [OP_UNICODE] = F_STRING,
    [OP_BINSTRING] = F_STRING, [OP_SHORT_BINSTRING] = F_STRING,
    [OP_SHORT_BINUNICODE] = F_STRING, [OP_BINUNICODE] = F_STRING,
    [OP_BINUNICODE8] = F_STRING, [OP_SHORT_BINBYTES] = F_STRING,
    [OP_BINBYTES] = F_STRING, [OP_BINBYTES8] = F_STRING,
    [OP_BYTEARRAY8] = F_STRING,

    [OP_MARK] = F_STACK, [OP_POP] = F_STACK, [OP_POP_MARK] = F_STACK,
    [OP_DUP] = F_STACK,

    [OP_EMPTY_TUPLE] = F_CONTAINER, [OP_TUPLE1] = F_CONTAINER,
    [OP_TUPLE2] = F_CONTAINER, [OP_TUPLE3] = F_CONTAINER,
    [OP_TUPLE] = F_CONTAINER, [OP_EMPTY_LIST] = F_CONTAINER,
    [OP_LIST] = F_CONTAINER, [OP_EMPTY_DICT] = F_CONTAINER,
    [OP_DICT] = F_CONTAINER, [OP_EMPTY_SET] = F_CONTAINER,
    [OP_FROZENSET] = F_CONTAINER, [OP_APPEND] = F_CONTAINER,
    [OP_APPENDS] = F_CONTAINER, [OP_SETITEM] = F_CONTAINER,
    [OP_SETITEMS] = F_CONTAINER, [OP_ADDITEMS] = F_CONTAINER,

    [OP_GET] = F_MEMO, [OP_BINGET] = F_MEMO, [OP_LONG_BINGET] = F_MEMO,
    [OP_PUT] = F_MEMO, [OP_BINPUT] = F_MEMO, [OP_LONG_BINPUT] = F_MEMO,
    [OP_MEMOIZE] = F_MEMO,

    [OP_GLOBAL] = F_GLOBAL, [OP_STACK_GLOBAL] = F_GLOBAL,
    [OP_PERSID] = F_GLOBAL, [OP_BINPERSID] = F_GLOBAL,

    [OP_INST] = F_CALL, [OP_OBJ] = F_CALL, [OP_REDUCE] = F_CALL,
    [OP_NEWOBJ] = F_CALL, [OP_NEWOBJ_EX] = F_CALL, [OP_BUILD] = F_CALL,
};
/* clang-format on */

/* One opcode.  Returns 0, 1 at STOP, or an error. */
static int rd_op(rd_t *r)
{
    int op = (int)pk_rd_u8(&r->c);
    int rc = rd_check(r);

    if (rc < 0)
        return rc;
    switch (op_family[op]) {
    case F_PROTOCOL:
        return op_protocol(r, op);
    case F_INT:
        return op_int(r, op);
    case F_FLOAT:
        return op_float(r, op);
    case F_STRING:
        return op_string(r, op);
    case F_STACK:
        return op_stack(r, op);
    case F_CONTAINER:
        return op_container(r, op);
    case F_MEMO:
        return op_memo(r, op);
    case F_GLOBAL:
        return op_global(r, op);
    case F_CALL:
        return op_call(r, op);
    default:
        return rd_fail_at(r, r->c.p - 1, CK_EFORMAT, "unknown opcode 0x%02x",
                          op);
    }
}

/* Read from buf[0..len), or through src's window when src is set. */
static int read_once(const uint8_t *buf, size_t len, pk_src_t *src, int exact,
                     const ck_limits_t *lim, ck_arena_t *arena,
                     ck_pickle_t *out, ck_err_t *err, int *reread)
{
    rd_t r = { 0 };
    uint64_t total = src != NULL ? src->len : len;
    int rc = 0;

    r.no_share = *reread;

    memset(out, 0, sizeof(*out));
    out->protocol = -1;
    if (total > lim->max_pickle_bytes) {
        total = lim->max_pickle_bytes;
        exact = 0;
    }
    if (src != NULL) {
        src->len = total;
        src->next = 0;
        buf = src->buf;
        len = 0;
    } else {
        len = (size_t)total;
    }
    r.c.start = r.c.p = buf;
    r.c.end = buf + len;
    r.src = src;
    r.lim = lim;
    r.a = arena;
    r.err = err;
    r.out = out;
    for (uint32_t n = 1; rc == 0; n++) {
        if (src != NULL && !pk_src_whole(&r.c)) {
            uint64_t before = src->next;

            if ((rc = pk_src_fill(src, &r.c, lim->max_string_bytes)) < 0) {
                rc = rc == CK_ENOMEM ? rd_nomem(&r)
                                     : ck_err_set(err, rc, "read the pickle: %s",
                                                  strerror(-rc));
                break;
            }
            /* read on: where the parse is (a window behind the read) */
            if (src->next != before)
                ck_arena_ahead_progress(arena,
                                        src->len - pk_src_left(src, &r.c),
                                        src->len);
        }
        rc = rd_op(&r);
        if ((n & 0xffff) == 0 && rc == 0 && lim->cancel != NULL &&
            __atomic_load_n(lim->cancel, __ATOMIC_RELAXED))
            rc = ck_err_set(err, CK_ECANCELED, "abandoned while reading "
                            "the pickle: ckprep is stopping");
    }
    if (rc == 1) {
        uint64_t after = src != NULL ? pk_src_left(src, &r.c)
                                     : (uint64_t)(r.c.end - r.c.p);

        rc = 0;
        out->consumed = (size_t)(r.c.base + (uint64_t)(r.c.p - r.c.start));
        if (out->protocol < 0)
            out->protocol = 1;
        if (exact && after != 0)
            rc = ck_err_set(err, CK_EFORMAT,
                            "pickle has %llu bytes after STOP",
                            (unsigned long long)after);
    } else if (rc == -EAGAIN && total == lim->max_pickle_bytes) {
        rc = ck_err_replace(err, CK_ELIMIT, "pickle larger than %llu bytes",
                            (unsigned long long)lim->max_pickle_bytes);
    }
    ck_free(r.stack);
    ck_free(r.marks);
    memo_free(&r);
    ck_map_free(r.ints64.v, r.ints64.cap * sizeof(*r.ints64.v));
    ck_map_free(r.tuples.v, r.tuples.cap * sizeof(*r.tuples.v));
    *reread = r.reread;
    return rc;
}

/*
 * Tuples of ints are shared as values (CK_PY_F_VALUE) unless the pickle
 * names one again with a GET -- never in what torch.save writes, whose
 * shapes and strides are new tuples each -- and then it is read again
 * without sharing (the first read's nodes stay in the arena).
 */
int ck_pickle_read(const uint8_t *buf, size_t len, int exact,
                   const ck_limits_t *lim, ck_arena_t *arena, ck_pickle_t *out,
                   ck_err_t *err)
{
    int reread = 0;
    int rc = read_once(buf, len, NULL, exact, lim, arena, out, err, &reread);

    if (rc < 0 && reread) {
        ck_err_clear(err);
        rc = read_once(buf, len, NULL, exact, lim, arena, out, err, &reread);
    }
    return rc;
}

int ck_pickle_read_fd(int fd, uint64_t off, uint64_t len, size_t window,
                      const ck_limits_t *lim, ck_arena_t *arena,
                      ck_pickle_t *out, ck_err_t *err)
{
    pk_src_t src = { .fd = fd, .off = off, .len = len,
                     .cap = window > 0 ? window : 1 };
    int reread = 0, rc;

    if ((src.buf = ck_map_grow(NULL, 0, src.cap)) == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    rc = read_once(NULL, 0, &src, 1, lim, arena, out, err, &reread);
    if (rc < 0 && reread) {
        ck_err_clear(err);
        src.len = len;
        rc = read_once(NULL, 0, &src, 1, lim, arena, out, err, &reread);
    }
    ck_map_free(src.buf, src.cap);
    return rc;
}
