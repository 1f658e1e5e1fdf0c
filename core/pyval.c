/*
 * pyval.c -- Python value knowledge: big ints between decimal text and the
 * two's complement little-endian bytes pickle holds, float repr() (the
 * shortest digits that read back), ==, int() and float() of a str as
 * CPython 3 does them, and scalars as JSON.  Nothing here keeps state: every
 * function works on its arguments and the caller's arena.
 */
#include "pyval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SHOW_MAX 240 /* bytes of a value shown by ck_pyval_show_py */

size_t ck_pyint_trim(const uint8_t *b, size_t n)
{
    while (n > 1 && ((b[n - 1] == 0x00 && !(b[n - 2] & 0x80)) ||
                     (b[n - 1] == 0xff && (b[n - 2] & 0x80))))
        n--;
    return n;
}

/* The LE magnitude mag[0..len) in decimal; mag is consumed. */
static char *mag_dec(ck_arena_t *a, uint8_t *mag, size_t len, int neg)
{
    size_t at = len * 3 + 3; /* 256^len < 10^(2.41 len + 1) */
    char *out = ck_arena_alloc(a, at + 1);

    if (out == NULL)
        return NULL;
    while (len > 0 && mag[len - 1] == 0)
        len--;
    do {
        unsigned rem = 0;

        for (size_t k = len; k-- > 0;) {
            unsigned cur = rem * 256 + mag[k];

            mag[k] = (uint8_t)(cur / 10);
            rem = cur % 10;
        }
        out[--at] = (char)('0' + rem);
        while (len > 0 && mag[len - 1] == 0)
            len--;
    } while (len > 0);
    if (neg)
        out[--at] = '-';
    return out + at;
}

char *ck_pyint_dec(ck_arena_t *a, const uint8_t *b, size_t n)
{
    uint8_t *mag;
    int neg = n > 0 && (b[n - 1] & 0x80);

    if (n == 0 || n > 2048)
        return NULL;
    mag = ck_arena_alloc(a, n);
    if (mag == NULL)
        return NULL;
    memcpy(mag, b, n);
    if (neg)
        ck_int_negate(mag, n);
    return mag_dec(a, mag, n, neg);
}

int ck_pyint_mag(ck_arena_t *a, const char *d, size_t nd, int base,
                 uint8_t **mag_out, size_t *len_out)
{
    uint8_t *mag = ck_arena_alloc(a, nd / 2 + 3);
    size_t len = 1;

    if (mag == NULL)
        return CK_ENOMEM;
    for (size_t k = 0; k < nd; k++) {
        int c = (unsigned char)d[k];
        unsigned carry;

        if (c >= '0' && c <= '9')
            carry = (unsigned)(c - '0');
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
            carry = (unsigned)((c | 0x20) - 'a' + 10);
        else
            return CK_EFORMAT;
        if (carry >= (unsigned)base)
            return CK_EFORMAT;
        for (size_t j = 0; j < len; j++) {
            unsigned v = mag[j] * (unsigned)base + carry;

            mag[j] = (uint8_t)v;
            carry = v >> 8;
        }
        if (carry)
            mag[len++] = (uint8_t)carry;
    }
    while (len > 1 && mag[len - 1] == 0)
        len--;
    *mag_out = mag;
    *len_out = len;
    return 0;
}

int ck_pyint_digits(ck_arena_t *a, int neg, const char *d, int base,
                    ck_pyval_t *t)
{
    size_t nd, len;
    uint8_t *mag, *cp;
    uint64_t u = 0;
    int rc;

    while (d[0] == '0' && d[1] != '\0')
        d++;
    nd = strlen(d);
    if (nd == 0 || nd > CK_PYINT_MAX_DIGITS)
        return 1;
    rc = ck_pyint_mag(a, d, nd, base, &mag, &len);
    if (rc < 0)
        return rc == CK_ENOMEM ? rc : 1;
    neg = neg && (len > 1 || mag[0] != 0); /* -0 is 0 */
    memset(t, 0, sizeof(*t));
    t->t = CK_PV_INT;
    for (size_t j = len; len <= 8 && j-- > 0;)
        u = u << 8 | mag[j];
    if (len <= 8 && !neg && u <= (uint64_t)INT64_MAX) {
        t->i = (int64_t)u;
    } else if (len <= 8 && neg && u <= (uint64_t)INT64_MAX + 1) {
        t->i = u == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)u;
    } else {
        cp = ck_arena_alloc(a, len + 1); /* one more byte: the sign */
        if (cp == NULL)
            return CK_ENOMEM;
        memcpy(cp, mag, len);
        if (neg)
            ck_int_negate(cp, len + 1);
        t->big = cp;
        t->nbig = ck_pyint_trim(cp, len + 1);
    }
    t->dec = mag_dec(a, mag, len, neg);
    return t->dec != NULL ? 0 : CK_ENOMEM;
}

/* ---- int() and float() of a str -------------------------------------- */

/* Length of [0-9](_?[0-9])* at s, 0 when there is none. */
static size_t digit_run(const char *s)
{
    size_t k = 0;

    if (s[0] < '0' || s[0] > '9')
        return 0;
    for (k = 1;; k++) {
        if (s[k] == '_' && s[k + 1] >= '0' && s[k + 1] <= '9')
            k++;
        else if (s[k] < '0' || s[k] > '9')
            return k;
    }
}

/* 1 when s is [-+]?[0-9](_?[0-9])* */
static int is_py_int(const char *s)
{
    size_t k;

    s += s[0] == '-' || s[0] == '+';
    k = digit_run(s);
    return k > 0 && s[k] == '\0';
}

/* 1 when s is what Python's float() reads: digit runs with '.', an exponent,
 * inf, infinity or nan (any case), after an optional sign. */
static int is_py_float(const char *s)
{
    size_t k;

    s += s[0] == '-' || s[0] == '+';
    if (!strcasecmp(s, "inf") || !strcasecmp(s, "infinity") ||
        !strcasecmp(s, "nan"))
        return 1;
    if (s[0] == '.') {
        k = digit_run(s + 1);
        if (k == 0)
            return 0;
        s += 1 + k;
    } else {
        k = digit_run(s);
        if (k == 0)
            return 0;
        s += k;
        if (s[0] == '.')
            s += 1 + digit_run(s + 1);
    }
    if (s[0] == 'e' || s[0] == 'E') {
        s += 1 + (s[1] == '-' || s[1] == '+');
        k = digit_run(s);
        if (k == 0)
            return 0;
        s += k;
    }
    return s[0] == '\0';
}

/* s[0..n) stripped as str.strip() does, without '_', in the arena; NULL
 * when empty, holding a NUL, or on CK_ENOMEM (*oom set). */
static char *py_text(ck_arena_t *a, const char *s, size_t n, int *oom)
{
    char *o;

    *oom = 0;
    while (n > 0 && strchr(" \t\n\r\f\v", s[n - 1]) != NULL)
        n--;
    while (n > 0 && strchr(" \t\n\r\f\v", s[0]) != NULL)
        s++, n--;
    if (n == 0 || memchr(s, '\0', n) != NULL)
        return NULL;
    o = ck_arena_strndup(a, s, n);
    *oom = o == NULL;
    return o;
}

static void unscore(char *s)
{
    char *p = s;

    for (; *s != '\0'; s++)
        if (*s != '_')
            *p++ = *s;
    *p = '\0';
}

int ck_pyval_int_str(ck_arena_t *a, const char *s, size_t n, ck_pyval_t *t)
{
    int oom;
    char *w = py_text(a, s, n, &oom);

    if (w == NULL)
        return oom ? CK_ENOMEM : 1;
    if (!is_py_int(w))
        return 1;
    unscore(w);
    return ck_pyint_digits(a, w[0] == '-', w + (w[0] == '-' || w[0] == '+'),
                           10, t);
}

int ck_pyval_float_str(ck_arena_t *a, const char *s, size_t n, double *f)
{
    int oom;
    char *w = py_text(a, s, n, &oom);

    if (w == NULL || !is_py_float(w))
        return 1;
    unscore(w);
    *f = strtod(w, NULL);
    return 0;
}

/* ---- floats ----------------------------------------------------------- */

void ck_pyfloat_repr(double d, char *out, size_t cap)
{
    char tmp[40], dig[24];
    const char *p;
    int nd = 0, e, decpt, neg;
    size_t o = 0;

    if (isnan(d) || isinf(d)) {
        snprintf(out, cap, "%s", isnan(d) ? "nan" : d < 0 ? "-inf" : "inf");
        return;
    }
    for (int prec = 0; prec < 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*e", prec, d);
        if (strtod(tmp, NULL) == d)
            break;
    }
    neg = tmp[0] == '-';
    for (p = tmp + neg; *p != 'e'; p++)
        if (*p != '.')
            dig[nd++] = *p;
    e = atoi(p + 1);
    while (nd > 1 && dig[nd - 1] == '0')
        nd--;
    dig[nd] = '\0';
    decpt = e + 1;
    if (neg)
        out[o++] = '-';
    if (decpt <= -4 || decpt > 16) { /* 1e-05, 1.5e+16 */
        out[o++] = dig[0];
        if (nd > 1)
            o += (size_t)snprintf(out + o, cap - o, ".%s", dig + 1);
        snprintf(out + o, cap - o, "e%c%02d", e < 0 ? '-' : '+', abs(e));
        return;
    }
    if (decpt <= 0) { /* 0.0001 */
        out[o++] = '0';
        out[o++] = '.';
        for (int k = 0; k < -decpt; k++)
            out[o++] = '0';
        snprintf(out + o, cap - o, "%s", dig);
    } else if (decpt >= nd) { /* 100000.0 */
        o += (size_t)snprintf(out + o, cap - o, "%s", dig);
        for (int k = nd; k < decpt; k++)
            out[o++] = '0';
        snprintf(out + o, cap - o, ".0");
    } else {
        snprintf(out + o, cap - o, "%.*s.%s", decpt, dig, dig + decpt);
    }
}

int ck_pyval_eq(ck_arena_t *ar, const ck_pyval_t *a, const ck_pyval_t *b)
{
    const ck_pyval_t *i, *f;
    const char *dec;
    char buf[400];

    if (a->t == CK_PV_STR || b->t == CK_PV_STR)
        return a->t == b->t && a->n == b->n &&
               (a->n == 0 || memcmp(a->s, b->s, a->n) == 0);
    if (a->t == CK_PV_NULL || b->t == CK_PV_NULL)
        return a->t == b->t;
    if (a->t == CK_PV_FLOAT && b->t == CK_PV_FLOAT)
        return a->f == b->f;
    if (a->t != CK_PV_FLOAT && b->t != CK_PV_FLOAT) {
        if (a->nbig || b->nbig) /* both minimal: equal bytes */
            return a->nbig == b->nbig && memcmp(a->big, b->big, a->nbig) == 0;
        return (a->t == CK_PV_BOOL ? a->b : a->i) ==
               (b->t == CK_PV_BOOL ? b->b : b->i);
    }
    f = a->t == CK_PV_FLOAT ? a : b;
    i = a->t == CK_PV_FLOAT ? b : a;
    if (!isfinite(f->f) || f->f != floor(f->f))
        return 0;
    if (i->nbig == 0)
        return f->f >= -0x1p63 && f->f < 0x1p63 &&
               (int64_t)f->f == (i->t == CK_PV_BOOL ? i->b : i->i);
    dec = i->dec != NULL ? i->dec : ck_pyint_dec(ar, i->big, i->nbig);
    snprintf(buf, sizeof(buf), "%.0f", f->f); /* exact, in glibc */
    return dec != NULL && strcmp(dec, buf) == 0;
}

/* ---- Python values ---------------------------------------------------- */

int ck_pyval_of(const ck_py_t *p, ck_pyval_t *t)
{
    memset(t, 0, sizeof(*t));
    switch ((ck_py_kind_t)p->kind) {
    case CK_PY_NONE: t->t = CK_PV_NULL; return 1;
    case CK_PY_BOOL: t->t = CK_PV_BOOL; t->b = p->b; return 1;
    case CK_PY_INT:
        t->t = CK_PV_INT;
        t->i = p->u.i.v;
        t->big = p->u.i.big;
        t->nbig = p->len;
        return 1;
    case CK_PY_FLOAT:
        t->t = CK_PV_FLOAT;
        t->f = ck_py_float_value(p);
        return 1;
    case CK_PY_STR:
        t->t = CK_PV_STR;
        t->s = p->u.s.s;
        t->n = p->len;
        return 1;
    default: return 0;
    }
}

ck_py_t *ck_pyval_py(ck_arena_t *a, const ck_pyval_t *t)
{
    ck_py_t *p;

    switch (t->t) {
    case CK_PV_NULL:
        return ck_py_new(a, CK_PY_NONE);
    case CK_PV_BOOL:
        p = ck_py_new(a, CK_PY_BOOL);
        if (p != NULL)
            p->b = (uint8_t)t->b;
        return p;
    case CK_PV_INT:
        if (t->nbig == 0)
            return ck_py_int(a, t->i);
        p = ck_py_new(a, CK_PY_INT); /* pickled as LONG1, as Python does */
        if (p != NULL) {
            p->u.i.big = (uint8_t *)t->big;
            p->len = (uint32_t)t->nbig; /* (a --set value: short) */
        }
        return p;
    case CK_PV_FLOAT:
        return ck_py_float(a, t->f);
    default:
        return ck_py_str(a, t->s, t->n);
    }
}

void ck_pyval_show(ck_buf_t *b, const ck_pyval_t *t)
{
    char f[40];

    switch (t->t) {
    case CK_PV_NULL: ck_buf_printf(b, "None"); break;
    case CK_PV_BOOL: ck_buf_printf(b, "%s", t->b ? "True" : "False"); break;
    case CK_PV_INT:
        if (t->nbig == 0)
            ck_buf_printf(b, "%lld", (long long)t->i);
        else
            ck_buf_printf(b, "%s", t->dec != NULL ? t->dec : "<big int>");
        break;
    case CK_PV_FLOAT:
        ck_pyfloat_repr(t->f, f, sizeof(f));
        ck_buf_printf(b, "%s", f);
        break;
    default:
        ck_buf_printf(b, "'%.*s%s'", (int)(t->n < 100 ? t->n : 100), t->s,
                      t->n > 100 ? "..." : "");
    }
}

ck_py_vec_t *ck_pyval_dict(ck_py_t *p)
{
    if (p->kind == CK_PY_DICT ||
        (p->kind == CK_PY_REDUCE &&
         (ck_py_global_is(p->u.o.fn, "collections", "OrderedDict") ||
          ck_py_global_is(p->u.o.fn, "collections", "defaultdict"))))
        return ck_py_mapping(p);
    return NULL;
}

static int eq_py(ck_arena_t *ar, ck_py_t *w, ck_py_t *h,
                 ck_pyval_unwrap_cb unwrap, int depth)
{
    ck_py_vec_t *mw, *mh;
    ck_pyval_t tw, th;

    if (unwrap != NULL) {
        w = w != NULL ? unwrap(w) : NULL;
        h = h != NULL ? unwrap(h) : NULL;
    }
    if (w == NULL || h == NULL || depth > 64)
        return 0;
    if (ck_pyval_of(w, &tw))
        return ck_pyval_of(h, &th) && ck_pyval_eq(ar, &tw, &th);
    if (w->kind == CK_PY_LIST || w->kind == CK_PY_TUPLE) {
        if (h->kind != w->kind || h->u.seq.n != w->u.seq.n)
            return 0;
        for (size_t i = 0; i < w->u.seq.n; i++)
            if (!eq_py(ar, w->u.seq.v[i], h->u.seq.v[i], unwrap, depth + 1))
                return 0;
        return 1;
    }
    mw = ck_pyval_dict(w);
    mh = ck_pyval_dict(h);
    if (mw == NULL || mh == NULL || mw->n != mh->n)
        return 0;
    for (size_t i = 0; i + 1 < mw->n; i += 2) { /* items in any order */
        size_t k = 0;

        if (!ck_pyval_of(mw->v[i], &tw))
            return 0;
        while (k < mh->n && !(ck_pyval_of(mh->v[k], &th) &&
                              ck_pyval_eq(ar, &tw, &th)))
            k += 2;
        if (k >= mh->n ||
            !eq_py(ar, mw->v[i + 1], mh->v[k + 1], unwrap, depth + 1))
            return 0;
    }
    return 1;
}

int ck_pyval_eq_py(ck_arena_t *ar, ck_py_t *a, ck_py_t *b,
                   ck_pyval_unwrap_cb unwrap)
{
    return eq_py(ar, a, b, unwrap, 0);
}

static void show_py(ck_buf_t *b, ck_arena_t *a, ck_py_t *p,
                    ck_pyval_unwrap_cb unwrap, int depth)
{
    ck_py_vec_t *m;
    ck_pyval_t t;

    if (p != NULL && unwrap != NULL)
        p = unwrap(p);
    if (b->len > SHOW_MAX || depth > 8) {
        ck_buf_printf(b, "...");
        return;
    }
    if (p != NULL && ck_pyval_of(p, &t)) {
        if (t.nbig)
            t.dec = ck_pyint_dec(a, t.big, t.nbig);
        ck_pyval_show(b, &t);
    } else if (p != NULL && (p->kind == CK_PY_LIST || p->kind == CK_PY_TUPLE)) {
        ck_buf_putc(b, p->kind == CK_PY_LIST ? '[' : '(');
        for (size_t i = 0; i < p->u.seq.n; i++) {
            if (i > 0)
                ck_buf_printf(b, ", ");
            show_py(b, a, p->u.seq.v[i], unwrap, depth + 1);
        }
        ck_buf_putc(b, p->kind == CK_PY_LIST ? ']' : ')');
    } else if (p != NULL && (m = ck_pyval_dict(p)) != NULL) {
        ck_buf_putc(b, '{');
        for (size_t i = 0; i < m->n; i++) {
            if (i > 0)
                ck_buf_printf(b, "%s", i % 2 ? ": " : ", ");
            show_py(b, a, m->v[i], unwrap, depth + 1);
        }
        ck_buf_putc(b, '}');
    } else {
        ck_buf_printf(b, "<object>");
    }
}

void ck_pyval_show_py(ck_buf_t *b, ck_arena_t *ar, ck_py_t *p,
                      ck_pyval_unwrap_cb unwrap)
{
    show_py(b, ar, p, unwrap, 0);
}

int ck_pyval_json(ck_json_t *j, const ck_py_t *v)
{
    ck_arena_t tmp = { 0 };
    const char *dec;

    if (v == NULL)
        return 1;
    switch ((ck_py_kind_t)v->kind) {
    case CK_PY_NONE: ck_json_null(j); return 0;
    case CK_PY_BOOL: ck_json_bool(j, v->b); return 0;
    case CK_PY_INT:
        if (v->len == 0) {
            ck_json_int(j, v->u.i.v);
            return 0;
        }
        /* past int64 as a string: JSON readers (jansson, the daemon's
         * own) refuse a bigger number */
        dec = ck_pyint_dec(&tmp, v->u.i.big, v->len);
        ck_json_str(j, dec != NULL ? dec : "<big int>");
        ck_arena_release(&tmp);
        return 0;
    case CK_PY_FLOAT: ck_json_double(j, ck_py_float_value(v)); return 0;
    case CK_PY_STR: ck_json_strn(j, v->u.s.s, v->len); return 0;
    default: return 1;
    }
}
