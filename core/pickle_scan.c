/*
 * pickle_scan.c -- the globals a pickle names, by a linear opcode scan.
 *
 * No stack, no graph, no limits on structure: each opcode's argument is
 * stepped over, GLOBAL and INST give their two text lines, and
 * STACK_GLOBAL takes the last two strings pushed (directly or fetched from
 * the memo, as the attack files do).  A STOP does not end the scan (legacy
 * files are several pickles; junk may follow), an opcode unknown or cut
 * short does.  Used only to name the danger in a refusal that the full
 * reader (pickle.c) gave for another cause; it decides nothing.
 */
#include "pickle.h"
#include "pickle_int.h"

#include <string.h>

#define MEMO_MAX 4096 /* memo slots remembered for STACK_GLOBAL */

typedef struct {
    const uint8_t *s;
    size_t n;
} str_t;

typedef struct {
    str_t last[2]; /* the last two strings pushed, last[1] newest */
    str_t memo[MEMO_MAX];
    uint64_t nmemo; /* MEMOIZE's next index */
} scan_t;

static void pushed(scan_t *s, const uint8_t *p, size_t n)
{
    s->last[0] = s->last[1];
    s->last[1] = (str_t){ p, n };
}

static void memo_put(scan_t *s, uint64_t i)
{
    if (i < MEMO_MAX)
        s->memo[i] = s->last[1];
}

/* A text line at c: its length without '\n', or -1. */
static int64_t line(pk_cur_t *c)
{
    const uint8_t *nl = memchr(c->p, '\n', (size_t)(c->end - c->p));
    int64_t n;

    if (nl == NULL)
        return -1;
    n = nl - c->p;
    c->p = nl + 1;
    return n;
}

/* Length-prefixed data of w bytes of length; pushes it as a string. */
static int data(scan_t *s, pk_cur_t *c, int w)
{
    uint64_t n = w == 1 ? pk_rd_u8(c) : w == 4 ? pk_rd_u32(c) : pk_rd_u64(c);
    const uint8_t *p = pk_rd_bytes(c, n);

    if (p == NULL)
        return -1;
    pushed(s, p, (size_t)n);
    return 0;
}

static int fixed(pk_cur_t *c, uint64_t n)
{
    return pk_rd_bytes(c, n) == NULL ? -1 : 0;
}

/* One opcode; 1 at a global (m, n filled), 0 to go on, -1 to stop. */
static int step(scan_t *s, pk_cur_t *c, str_t *m, str_t *n)
{
    int op = pk_rd_u8(c);
    int64_t a, b;

    if (c->bad)
        return -1;
    switch (op) {
    case OP_GLOBAL: case OP_INST:
        m->s = c->p;
        if ((a = line(c)) < 0)
            return -1;
        n->s = c->p;
        if ((b = line(c)) < 0)
            return -1;
        m->n = (size_t)a;
        n->n = (size_t)b;
        return 1;
    case OP_STACK_GLOBAL:
        *m = s->last[0];
        *n = s->last[1];
        return m->s != NULL && n->s != NULL ? 1 : 0;
    case OP_SHORT_BINSTRING: case OP_SHORT_BINBYTES:
    case OP_SHORT_BINUNICODE:
        return data(s, c, 1);
    case OP_BINSTRING: case OP_BINUNICODE: case OP_BINBYTES:
        return data(s, c, 4);
    case OP_BINUNICODE8: case OP_BINBYTES8: case OP_BYTEARRAY8:
        return data(s, c, 8);
    case OP_UNICODE: case OP_STRING: {
        const uint8_t *p = c->p;

        if ((a = line(c)) < 0)
            return -1;
        if (op == OP_STRING && a >= 2) /* 'text' or "text" */
            pushed(s, p + 1, (size_t)a - 2);
        else
            pushed(s, p, (size_t)a);
        return 0;
    }
    case OP_FLOAT: case OP_INT: case OP_LONG: case OP_PERSID:
        return line(c) < 0 ? -1 : 0;
    case OP_GET: case OP_PUT: {
        const uint8_t *p = c->p;
        uint64_t i = 0;

        if ((a = line(c)) < 0)
            return -1;
        for (int64_t k = 0; k < a && p[k] >= '0' && p[k] <= '9'; k++)
            i = i * 10 + (p[k] - '0');
        if (op == OP_PUT)
            memo_put(s, i);
        else if (i < MEMO_MAX)
            pushed(s, s->memo[i].s, s->memo[i].n);
        return 0;
    }
    case OP_BINGET: case OP_LONG_BINGET: {
        uint64_t i = op == OP_BINGET ? pk_rd_u8(c) : pk_rd_u32(c);

        if (c->bad)
            return -1;
        if (i < MEMO_MAX)
            pushed(s, s->memo[i].s, s->memo[i].n);
        return 0;
    }
    case OP_BINPUT: case OP_LONG_BINPUT: {
        uint64_t i = op == OP_BINPUT ? pk_rd_u8(c) : pk_rd_u32(c);

        if (c->bad)
            return -1;
        memo_put(s, i);
        return 0;
    }
    case OP_MEMOIZE:
        memo_put(s, s->nmemo++);
        return 0;
    case OP_BININT1: case OP_PROTO: case OP_EXT1:
        return fixed(c, 1);
    case OP_BININT2: case OP_EXT2:
        return fixed(c, 2);
    case OP_BININT: case OP_EXT4:
        return fixed(c, 4);
    case OP_BINFLOAT: case OP_FRAME:
        return fixed(c, 8);
    case OP_LONG1:
        return fixed(c, pk_rd_u8(c));
    case OP_LONG4:
        return fixed(c, pk_rd_u32(c));
    case OP_MARK: case OP_STOP: case OP_POP: case OP_POP_MARK: case OP_DUP:
    case OP_NONE: case OP_BINPERSID: case OP_REDUCE: case OP_APPEND:
    case OP_BUILD: case OP_DICT: case OP_EMPTY_DICT: case OP_APPENDS:
    case OP_LIST: case OP_EMPTY_LIST: case OP_OBJ: case OP_SETITEM:
    case OP_TUPLE: case OP_EMPTY_TUPLE: case OP_SETITEMS: case OP_NEWOBJ:
    case OP_TUPLE1: case OP_TUPLE2: case OP_TUPLE3: case OP_NEWTRUE:
    case OP_NEWFALSE: case OP_EMPTY_SET: case OP_ADDITEMS:
    case OP_FROZENSET: case OP_NEWOBJ_EX: case OP_NEXT_BUFFER:
    case OP_READONLY_BUFFER:
        return 0;
    default:
        return -1;
    }
}

int ck_pickle_scan_globals(const uint8_t *buf, size_t len,
                           ck_global_cb cb, void *ud)
{
    scan_t *s = ck_calloc(1, sizeof(*s));
    pk_cur_t c = { .start = buf, .p = buf, .end = buf + len };
    int rc = 0;

    if (s == NULL)
        return CK_ENOMEM;
    while (rc == 0 && c.p < c.end) {
        str_t m = { 0 }, n = { 0 };
        int r = step(s, &c, &m, &n);

        if (r < 0)
            break;
        if (r == 1)
            rc = cb(ud, (const char *)m.s, m.n, (const char *)n.s, n.n);
    }
    ck_free(s);
    return rc < 0 ? rc : 0;
}
