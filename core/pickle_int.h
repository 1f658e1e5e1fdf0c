/*
 * pickle_int.h -- what the pickle reader (pickle.c), its text decoders
 * (pickle_text.c) and the writer (pickle_write.c) share and nothing else may
 * use: the opcode values, the input cursor, two byte-level helpers and the
 * decoders of protocol 0's text forms.  Not included outside core/pickle*.c and their
 * tests.
 */
#ifndef CK_PICKLE_INT_H
#define CK_PICKLE_INT_H

#include "ck.h"
#include "pickle.h"

#include <stddef.h>
#include <stdint.h>

/* Opcodes of protocols 0 to 5, named as in CPython's Lib/pickle.py. */
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

/*
 * A bounded little-endian cursor with a sticky error flag (the shape of
 * zip.c's and libzip's _zip_buffer): a read past the end returns 0 or NULL,
 * consumes nothing and sets 'bad', after which every read fails the same
 * way, so a caller checks once per record.  'need' keeps the size of the
 * first read that failed.
 */
typedef struct {
    const uint8_t *start, *p, *end;
    int bad;
    uint64_t need;
    const uint8_t *frame_end; /* end of the current FRAME, or NULL */
    int crossed;              /* a read crossed frame_end */
    uint64_t base;            /* offset in the pickle of start: a window's
                                 (pk_src_t), else 0 */
} pk_cur_t;

/*
 * A pickle read from a file through a window (pickle_window.c), never
 * whole in memory: before each opcode pk_src_fill makes the opcode whole
 * in the window -- its operand, its text lines, a FRAME's bytes --, moving
 * what is left to the window's start and reading on, so an opcode's
 * pointers into the window stay valid while it runs.  An opcode that the
 * pickle's end cuts short is run as it is, and fails as in a buffer.
 */
typedef struct {
    int fd;
    uint64_t off, len;  /* the pickle: len bytes of fd at off */
    uint64_t next;      /* bytes of it read into the window */
    uint8_t *buf;       /* the window: cap bytes (ck_map_grow) */
    size_t cap;
} pk_src_t;

/* The opcode at c->p whole in the window (or the pickle's end reached):
 * 0, CK_ENOMEM, or -errno from a read.  max_line: a text line longer than
 * this is not waited for (the reader refuses it). */
int pk_src_fill(pk_src_t *s, pk_cur_t *c, uint64_t max_line);
/* The next n bytes from the cursor in the window, or as many as the
 * pickle has left: 0, CK_ENOMEM, or -errno from a read.  A look ahead
 * (pickle.c's fused_pid); the window may move, as pk_src_fill moves it. */
int pk_src_peek(pk_src_t *s, pk_cur_t *c, size_t n);
/* Each opcode's operand: 0 for none or a fixed one of at most 8 bytes,
 * else the kind of variable one (pickle_window.c). */
extern const uint8_t pk_op_var[256];

/* The opcode at the cursor is whole in the window without looking
 * further: a fixed operand and 9 bytes there. */
static inline int pk_src_whole(const pk_cur_t *c)
{
    return c->end - c->p >= 9 && pk_op_var[*c->p] == 0;
}

/* Bytes of the pickle after the cursor, in the window or not. */
static inline uint64_t pk_src_left(const pk_src_t *s, const pk_cur_t *c)
{
    return (uint64_t)(c->end - c->p) + (s->len - s->next);
}

/*
 * The next n bytes in place, or NULL past the end.  Inside a FRAME, as
 * CPython's pickle.py (_Unframer.read): a read that starts at the frame's
 * end leaves the frame and reads on; one that starts inside it must end
 * inside it, or the cursor goes bad with 'crossed' set.
 */
static inline const uint8_t *pk_rd_bytes(pk_cur_t *c, uint64_t n)
{
    const uint8_t *p = c->p;

    if (!c->bad && c->frame_end != NULL && n != 0) {
        if (p == c->frame_end) {
            c->frame_end = NULL;
        } else if ((uint64_t)(c->frame_end - p) < n) {
            c->crossed = 1;
            c->bad = 1;
            return NULL;
        }
    }
    if (c->bad || (uint64_t)(c->end - p) < n) {
        if (!c->bad)
            c->need = n;
        c->bad = 1;
        return NULL;
    }
    c->p = p + n;
    return p;
}

/* Sets 'bad' unless n more bytes are there; consumes nothing. */
static inline void pk_rd_has(pk_cur_t *c, uint64_t n)
{
    if (pk_rd_bytes(c, n) != NULL)
        c->p -= n;
}

static inline uint32_t pk_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

/* Little-endian integers of 1, 2, 4 and 8 bytes, or 0 past the end. */
static inline uint8_t pk_rd_u8(pk_cur_t *c)
{
    const uint8_t *p = pk_rd_bytes(c, 1);

    return p != NULL ? p[0] : 0;
}

static inline uint16_t pk_rd_u16(pk_cur_t *c)
{
    const uint8_t *p = pk_rd_bytes(c, 2);

    return p != NULL ? (uint16_t)(p[0] | p[1] << 8) : 0;
}

static inline uint32_t pk_rd_u32(pk_cur_t *c)
{
    const uint8_t *p = pk_rd_bytes(c, 4);

    return p != NULL ? pk_le32(p) : 0;
}

static inline uint64_t pk_rd_u64(pk_cur_t *c)
{
    const uint8_t *p = pk_rd_bytes(c, 8);

    return p != NULL ? pk_le32(p) | (uint64_t)pk_le32(p + 4) << 32 : 0;
}

/* Code point c (at most U+10FFFF) as UTF-8 at d; returns 1 to 4 bytes. */
static inline int pk_utf8_put(uint8_t *d, uint32_t c)
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

/*
 * INT and LONG text (an optional sign, then 1 to 100000 decimal digits) as
 * little-endian two's complement in *le (from the arena), *len bytes with
 * room for the sign.  Returns 0, CK_EFORMAT or CK_ENOMEM.
 */
int pk_decimal(ck_arena_t *a, const char *s, size_t n, uint8_t **le,
               size_t *len);

/* FLOAT text as Python's float() takes it (no spaces, hex or nan(...)):
 * 0 with *v set, or CK_EFORMAT. */
int pk_float_text(const char *s, size_t n, double *v);

/*
 * STRING text: a Python 2 repr in quotes, its escapes decoded, into *out
 * (ck_malloc'd, the caller frees it) and *len.  Returns 0, CK_ENOMEM, or
 * CK_EFORMAT with *why naming the fault.
 */
int pk_unquote(const char *s, size_t n, uint8_t **out, size_t *len,
               const char **why);

/*
 * UNICODE text, raw-unicode-escape (\uXXXX and \UXXXXXXXX; other bytes
 * latin-1), as UTF-8: ck_malloc'd (the caller frees it), *len bytes, or NULL
 * when out of memory.  Never fails otherwise, as CPython's decoder.
 */
uint8_t *pk_raw_unicode(const char *s, size_t n, size_t *len);

/* A compact call (CK_PY_F_ARGC, pickle.h) of fn with the CK_PY_ARGC items
 * at v (pickle_graph.c); NULL when out of memory. */
ck_py_t *ck_py_argc_new(ck_arena_t *a, ck_py_t *fn, ck_py_t *const *v);

/* Compact id p's key str, made in a first when p holds its text
 * (CK_PY_F_PIDK: a GET of the key names it again), p then holding the
 * node; NULL when out of memory.  For the reader: once the torch layer
 * has scanned p, a storage's record may point at the text. */
ck_py_t *ck_py_pid_key(ck_arena_t *a, ck_py_t *p);

#endif
