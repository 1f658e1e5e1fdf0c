/*
 * pickle_window.c -- a pickle read from a file through a window.
 *
 * A checkpoint of 10^5 tensors has a pickle of tens of MiB, which a read
 * whole keeps in memory beside the graph it becomes, at the parse's end,
 * the job's peak.  Through a window only the opcode being read need be
 * there: pk_src_fill, called before each opcode, finds how many bytes the
 * opcode at the cursor spans (op_need) and reads until they are all in
 * the window.  Most opcodes are a byte and a fixed operand; strings and
 * bytes carry their length; text lines (protocol 0) end at '\n'; a FRAME
 * is made whole with its bytes, as the reader checks it (pickle.py's
 * _Unframer).  The window grows for an opcode larger than it (a big
 * bytes value: no more than a read whole would hold) and stays grown.
 *
 * What the window does not change: the reader sees each opcode whole, as
 * in a buffer, or -- the pickle ending first -- cut where the pickle ends,
 * as in a buffer; so it reads the same graph and fails with the same
 * message at the same offset (the cursor's base).  test_pickle's
 * test_window compares both on every pickle it has, at windows from one
 * byte up.
 */
#include "pickle.h"
#include "pickle_int.h"

#include <errno.h>
#include <string.h>

#include "zip.h" /* ck_pread_full */

/* Operand sizes: a fixed size, or one of these. */
enum {
    V_FIXED,   /* op_fixed[op] bytes after the opcode */
    V_LEN1,    /* a 1-byte length, then that many bytes */
    V_LEN4,    /* a 4-byte length, then that many */
    V_LEN8,    /* an 8-byte length, then that many */
    V_LINE,    /* a text line */
    V_LINES2,  /* two text lines */
    V_FRAME,   /* an 8-byte length, then the frame's bytes */
};

/* clang-format off */
const uint8_t pk_op_var[256] = {
    [OP_SHORT_BINSTRING] = V_LEN1, [OP_SHORT_BINBYTES] = V_LEN1,
    [OP_SHORT_BINUNICODE] = V_LEN1, [OP_LONG1] = V_LEN1,
    [OP_BINSTRING] = V_LEN4, [OP_BINUNICODE] = V_LEN4,
    [OP_BINBYTES] = V_LEN4, [OP_LONG4] = V_LEN4,
    [OP_BINUNICODE8] = V_LEN8, [OP_BINBYTES8] = V_LEN8,
    [OP_BYTEARRAY8] = V_LEN8,
    [OP_FLOAT] = V_LINE, [OP_INT] = V_LINE, [OP_LONG] = V_LINE,
    [OP_PERSID] = V_LINE, [OP_STRING] = V_LINE, [OP_UNICODE] = V_LINE,
    [OP_GET] = V_LINE, [OP_PUT] = V_LINE,
    [OP_GLOBAL] = V_LINES2, [OP_INST] = V_LINES2,
    [OP_FRAME] = V_FRAME,
};

static const uint8_t op_fixed[256] = {
    [OP_PROTO] = 1, [OP_BININT1] = 1, [OP_BINGET] = 1, [OP_BINPUT] = 1,
    [OP_EXT1] = 1,
    [OP_BININT2] = 2, [OP_EXT2] = 2,
    [OP_BININT] = 4, [OP_LONG_BINGET] = 4, [OP_LONG_BINPUT] = 4,
    [OP_EXT4] = 4,
    [OP_BINFLOAT] = 8,
};
/* clang-format on */

static uint64_t le(const uint8_t *p, int w)
{
    uint64_t v = 0;

    for (int i = w - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/*
 * Bytes from p (avail of them in the window) that the opcode at p spans
 * -- more than avail when it is not whole --, or at most avail when it is
 * to be run as it is: a text line with no '\n' within max_line + 1 bytes,
 * which the reader refuses.
 */
static uint64_t op_need(const uint8_t *p, size_t avail, uint64_t max_line)
{
    static const int width[] = { [V_LEN1] = 1, [V_LEN4] = 4, [V_LEN8] = 8,
                                 [V_FRAME] = 8 };
    uint64_t n;
    size_t at = 1;
    int lines = 1, var;

    if (avail == 0)
        return 1;
    var = pk_op_var[p[0]];
    switch (var) {
    case V_FIXED:
        return 1 + (uint64_t)op_fixed[p[0]];
    case V_LEN1:
    case V_LEN4:
    case V_LEN8:
    case V_FRAME:
        if (avail < 1 + (size_t)width[var])
            return 1 + (uint64_t)width[var];
        n = le(p + 1, width[var]);
        return n > UINT64_MAX - 9 ? UINT64_MAX : 1 + (uint64_t)width[var] + n;
    case V_LINES2:
        lines = 2;
        /* fall through */
    default:
        for (; lines > 0; lines--) {
            const uint8_t *nl = memchr(p + at, '\n', avail - at);

            if (nl == NULL)
                return avail - at > max_line + 1 ? avail : avail + 1;
            at = (size_t)(nl - p) + 1;
        }
        return at;
    }
}

/* The opcode at the cursor whole (fixed 0), or fixed bytes from it. */
static int fill(pk_src_t *s, pk_cur_t *c, uint64_t max_line, size_t fixed)
{
    for (;;) {
        size_t avail = (size_t)(c->end - c->p), shift, room;
        uint64_t need = fixed ? fixed : op_need(c->p, avail, max_line);
        uint64_t left = s->len - s->next;
        int rc;

        if (fixed && need > avail && need - avail > left)
            need = avail + left; /* a look ahead: what there is */
        if (need <= avail || left == 0 || need - avail > left)
            return 0; /* whole, or never whole: run as it is */
        /* what is left to the window's start */
        shift = (size_t)(c->p - s->buf);
        if (shift > 0) {
            memmove(s->buf, c->p, avail);
            c->base += shift;
            if (c->frame_end != NULL)
                c->frame_end -= shift;
        }
        if (need > s->cap) {
            size_t cap = s->cap * 2 > need ? s->cap * 2 : (size_t)need;
            uint8_t *nb = ck_map_grow(s->buf, s->cap, cap);

            if (nb == NULL)
                return CK_ENOMEM;
            if (c->frame_end != NULL)
                c->frame_end = nb + (c->frame_end - s->buf);
            s->buf = nb;
            s->cap = cap;
        }
        c->start = c->p = s->buf;
        c->end = s->buf + avail;
        room = s->cap - avail;
        if (room > left)
            room = (size_t)left;
        rc = ck_pread_full(s->fd, s->buf + avail, room, s->off + s->next);
        if (rc < 0)
            return rc;
        s->next += room;
        c->end += room;
    }
}

int pk_src_fill(pk_src_t *s, pk_cur_t *c, uint64_t max_line)
{
    return fill(s, c, max_line, 0);
}

int pk_src_peek(pk_src_t *s, pk_cur_t *c, size_t n)
{
    return fill(s, c, 0, n);
}
