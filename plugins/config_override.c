/*
 * config_override -- change the experiment configuration saved in the
 * checkpoint, with Hydra's override grammar:
 *
 *   set = key=value      change an existing key (a typo fails the job)
 *   set = +key=value     add a key that must not exist (parents are created)
 *   set = ++key=value    add or change
 *   set = ~key           remove
 *   set = ~key=value     remove only if the key holds value, compared as
 *                        Python's == does (1 == 1.0 == True, lists in
 *                        order, dicts by their items, 2**64 exactly); else
 *                        the job fails naming the key and both values.  An
 *                        interpolation compares as its text, unresolved;
 *                        ~key=null needs None (Hydra's loader, which cannot
 *                        tell ~key=null from ~key, removes any value)
 *   file = PATH.yaml     deep-merged first (mappings merge, the rest replace)
 *
 * VALUE is read with libyaml ([a, b] and {k: v} are collections, quoted
 * scalars are strings) and its plain scalars are typed as Hydra's override
 * grammar types them (hydra/grammar/OverrideLexer.g4), not as YAML would:
 *  - null, case-insensitive (NULL, Null), is None;
 *  - true and false, case-insensitive (True, FALSE), are bools; yes, no, on,
 *    off, y, n are strings;
 *  - [+-]? (0 | [1-9] (_? [0-9])*) is an int: 1_000 is 1000, while 0x10,
 *    007 and 1__0 are strings; beyond int64 it stays an int (pickled as
 *    LONG1, as Python pickles it);
 *  - 1.5, 1., .5, 1e5, 1.5E-3, 1_0.5 and inf, nan (case-insensitive, with
 *    a sign) are floats; .inf and .nan (YAML's spellings) are strings;
 *  - an empty value (key=) is the empty string, as in Hydra; '~' is
 *    refused (not a value in Hydra's grammar: write null), and so is an int
 *    of more than 4300 digits (Python's int() refuses it);
 *  - everything else, ${...} included (kept verbatim), is a string.
 * In a YAML-string config a new value is written so that OmegaConf reads it
 * back as Hydra typed it ('yes', '0x10' and '' quoted, inf as .inf).
 * Scalars of the file = YAML and of a YAML-string config are YAML, typed as
 * OmegaConf's YAML loader types them (YAML 1.1: yes/no/on/off are bools,
 * 0x10 is 16, 1e5 is a float, big ints are ints).
 *
 * The config ('config = KEY', default xp.cfg) may be one of three things, and
 * each stays what it was:
 *  - a pickled OmegaConf DictConfig: values change inside their nodes; new
 *    keys get new nodes with OmegaConf's metadata and _parent links; typed
 *    nodes convert the value as OmegaConf 2.2 does (FloatNode: float(v) of an
 *    int or str; IntegerNode: int(v) of an int or str; BooleanNode: a bool,
 *    an int != 0, or a str that is an int or yes/y/on/true/no/n/off/false;
 *    StringNode: str(v), so 1e5 becomes '100000.0'), or fail the job; None,
 *    '???' and interpolations go in any node;
 *  - a YAML string (exported packages): parsed, changed and emitted again
 *    with key order kept (comments are not kept);
 *  - a plain dict (Lightning's hyper_parameters).
 */
#include "job.h"

#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#define MAX_PATH 32

typedef struct {
    char *config;
    ck_strlist_t set;
    char *file;
} override_conf_t;

static int set_set(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                   const char *value);

static const ck_directive_t override_directives[] = {
    { "config", ck_conf_set_str, offsetof(override_conf_t, config), "xp.cfg",
      0, "top-level key of the config" },
    { "set", set_set, offsetof(override_conf_t, set), NULL,
      CK_DIR_MULTI, "key=value, +key=value, ++key=value, ~key or ~key=value" },
    { "file", ck_conf_set_str, offsetof(override_conf_t, file), NULL, 0,
      "a YAML mapping deep-merged into the config first" },
    { NULL, NULL, 0, NULL, 0, NULL },
};

/* ---- typed scalars ---------------------------------------------------- */

/* T_STR first: a zeroed typed_t is a string. */
enum { T_STR, T_NULL, T_BOOL, T_INT, T_FLOAT };

/* Python's int() of a str refuses more (sys.int_info.default_max_str_digits) */
#define MAX_INT_DIGITS 4300

typedef struct {
    int t;
    int b;              /* T_BOOL */
    int64_t i;          /* T_INT within int64 */
    const uint8_t *big; /* T_INT beyond: two's complement LE, minimal, */
    size_t nbig;        /* as pickle's LONG1 holds it */
    const char *dec;    /* T_INT: canonical decimal (no '+', '_', 0s) */
    double f;           /* T_FLOAT */
    const char *s;      /* T_STR */
    size_t n;
} typed_t;

/* ---- YAML values ------------------------------------------------------ */

enum { V_SCALAR, V_SEQ, V_MAP };

typedef struct val val_t;
struct val {
    int kind;
    char *text;      /* scalar */
    size_t len;
    int plain;       /* scalar written without quotes */
    int style;       /* yaml_scalar_style_t as read, 0 when new */
    int flow;        /* collection in flow style */
    int hydra;       /* from a set line: typed by Hydra's grammar */
    int untyped;     /* ty not set yet (see tyof) */
    typed_t ty;      /* scalar: its type */
    val_t **v;       /* seq items; map k0 v0 k1 v1 */
    size_t n, cap;
};

typedef struct {
    ck_arena_t *a;
    ck_err_t *err;
    const char *what;
    int hydra;       /* scalars read now are override values */
    int lazy;        /* type scalars when first used (tyof), not now: a
                        config in the checkpoint may hold millions */
} yctx_t;

static int type_scalar(yctx_t *y, val_t *v);

static int vpush(ck_arena_t *a, val_t *c, val_t *x)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        val_t **nv = ck_arena_alloc(a, cap * sizeof(*nv));

        if (nv == NULL)
            return CK_ENOMEM;
        if (c->n)
            memcpy(nv, c->v, c->n * sizeof(*nv));
        c->v = nv;
        c->cap = cap;
    }
    c->v[c->n++] = x;
    return 0;
}

static val_t *yparse_node(yctx_t *y, yaml_parser_t *p, yaml_event_t *ev,
                          int depth)
{
    val_t *v = ck_arena_alloc(y->a, sizeof(*v));
    int end;

    if (v == NULL) {
        ck_err_set(y->err, CK_ENOMEM, "out of memory");
        return NULL;
    }
    if (depth > 64) {
        ck_err_set(y->err, CK_EPLUGIN, "%s: nested too deep", y->what);
        return NULL;
    }
    v->hydra = y->hydra;
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        v->kind = V_SCALAR;
        v->text = ck_arena_strndup(y->a, (char *)ev->data.scalar.value,
                                   ev->data.scalar.length);
        v->len = ev->data.scalar.length;
        v->style = ev->data.scalar.style;
        v->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        if (v->text == NULL) {
            ck_err_set(y->err, CK_ENOMEM, "out of memory");
            return NULL;
        }
        v->untyped = y->lazy;
        v->ty.s = v->text;
        v->ty.n = v->len;
        return y->lazy || type_scalar(y, v) == 0 ? v : NULL;
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        v->kind = ev->type == YAML_SEQUENCE_START_EVENT ? V_SEQ : V_MAP;
        v->flow = ev->type == YAML_SEQUENCE_START_EVENT
                      ? ev->data.sequence_start.style == YAML_FLOW_SEQUENCE_STYLE
                      : ev->data.mapping_start.style == YAML_FLOW_MAPPING_STYLE;
        end = v->kind == V_SEQ ? YAML_SEQUENCE_END_EVENT : YAML_MAPPING_END_EVENT;
        for (;;) {
            yaml_event_t e;
            val_t *c;

            if (!yaml_parser_parse(p, &e)) {
                ck_err_set(y->err, CK_EPLUGIN, "%s: YAML: %s", y->what,
                           p->problem ? p->problem : "syntax error");
                return NULL;
            }
            if ((int)e.type == end) {
                yaml_event_delete(&e);
                return v;
            }
            c = yparse_node(y, p, &e, depth + 1);
            yaml_event_delete(&e);
            if (c != NULL && v->kind == V_MAP && v->n % 2 == 0 &&
                c->kind != V_SCALAR) {
                /* a config's keys are names: OmegaConf has no others */
                ck_err_set(y->err, CK_EPLUGIN,
                           "%s: a YAML mapping key that is not a scalar", y->what);
                return NULL;
            }
            if (c == NULL)
                return NULL;
            if (vpush(y->a, v, c) < 0) {
                ck_err_set(y->err, CK_ENOMEM, "out of memory");
                return NULL;
            }
        }
    case YAML_ALIAS_EVENT:
        ck_err_set(y->err, CK_EUNSUPPORTED, "%s: YAML aliases are not supported",
                   y->what);
        return NULL;
    default:
        ck_err_set(y->err, CK_EPLUGIN, "%s: unexpected YAML", y->what);
        return NULL;
    }
}

/*
 * Parse one YAML document; an empty one is the empty plain scalar (the
 * empty string for Hydra, null for YAML).
 */
static val_t *yparse(yctx_t *y, const char *text, size_t len)
{
    yaml_parser_t p;
    yaml_event_t ev;
    val_t *root = NULL;
    int done = 0;

    if (!yaml_parser_initialize(&p)) {
        ck_err_set(y->err, CK_ENOMEM, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    while (!done) {
        if (!yaml_parser_parse(&p, &ev)) {
            ck_err_set(y->err, CK_EPLUGIN, "%s: YAML: %s", y->what,
                       p.problem ? p.problem : "syntax error");
            root = NULL;
            break;
        }
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_SCALAR_EVENT:
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
        case YAML_ALIAS_EVENT:
            if (root != NULL) {
                ck_err_set(y->err, CK_EPLUGIN, "%s: more than one YAML document",
                           y->what);
                done = 2;
                break;
            }
            root = yparse_node(y, &p, &ev, 0);
            if (root == NULL)
                done = 2;
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    if (done == 2)
        return NULL;
    if (root == NULL && y->err->code == 0) {
        root = ck_arena_alloc(y->a, sizeof(*root));
        if (root == NULL) {
            ck_err_set(y->err, CK_ENOMEM, "out of memory");
            return NULL;
        }
        root->text = "";
        root->plain = 1;
        root->hydra = y->hydra;
        root->untyped = y->lazy;
        root->ty.s = root->text;
        if (!y->lazy && type_scalar(y, root) < 0)
            return NULL;
    }
    return root;
}

/* ---- typing scalars: Hydra's grammar, OmegaConf's YAML loader ---------- */

static int match(const char *re, const char *s, int icase)
{
    regex_t r;
    int ok;

    if (regcomp(&r, re, REG_EXTENDED | REG_NOSUB | (icase ? REG_ICASE : 0)))
        return 0;
    ok = regexec(&r, s, 0, NULL, 0) == 0;
    regfree(&r);
    return ok;
}

/* Hydra's OverrideLexer.g4: INT, FLOAT (icase for inf/nan). */
#define H_UINT "(0|[1-9](_?[0-9])*)"
#define H_DIGITS "[0-9](_?[0-9])*"
#define H_POINT "(" H_UINT "\\.|" H_UINT "?\\." H_DIGITS ")"
#define H_INT "^[-+]?" H_UINT "$"
#define H_FLOAT "^[-+]?(" H_POINT "|(" H_UINT "|" H_POINT ")[eE][-+]?" \
    H_DIGITS "|inf|nan)$"

/* PyYAML's YAML 1.1 resolvers (case-sensitive) with OmegaConf's float. */
#define Y_NULL "^(~|null|Null|NULL)?$"
#define Y_BOOL "^(yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|" \
    "on|On|ON|off|Off|OFF)$"
#define Y_INT "^([-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(0|[1-9][0-9_]*)|" \
    "[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+)$"
#define Y_FLOAT "^([-+]?[0-9][0-9_]*\\.[0-9_]*([eE][-+]?[0-9]+)?|" \
    "[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+|\\.[0-9_]+([eE][-+][0-9]+)?|" \
    "[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\\.[0-9_]*|[-+]?\\.(inf|Inf|INF)|" \
    "\\.(nan|NaN|NAN))$"

/* Python's int() and float() of a str (after strip()). */
#define P_INT "^[-+]?[0-9](_?[0-9])*$"
#define P_FLOAT "^[-+]?(([0-9](_?[0-9])*)(\\.([0-9](_?[0-9])*)?)?|" \
    "\\.[0-9](_?[0-9])*)([eE][-+]?[0-9](_?[0-9])*)?$"
#define P_FLOAT_WORD "^[-+]?(inf|infinity|nan)$"

/* s[0..n) without its '_', NUL-terminated, in the arena. */
static char *unscore(ck_arena_t *a, const char *s, size_t n)
{
    char *o = ck_arena_alloc(a, n + 1), *p = o;

    if (o == NULL)
        return NULL;
    for (size_t k = 0; k < n; k++)
        if (s[k] != '_')
            *p++ = s[k];
    *p = '\0';
    return o;
}

/* LE two's complement b[0..n) cut to its minimal length. */
static size_t trim2(const uint8_t *b, size_t n)
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

/* A pickled big int (two's complement LE) in decimal; NULL past 2 KiB. */
static char *big_dec(ck_arena_t *a, const uint8_t *b, size_t n)
{
    uint8_t *mag;
    int neg = n > 0 && (b[n - 1] & 0x80);

    if (n == 0 || n > 2048 || (mag = ck_arena_alloc(a, n)) == NULL)
        return NULL;
    memcpy(mag, b, n);
    if (neg)
        ck_int_negate(mag, n);
    return mag_dec(a, mag, n, neg);
}

/*
 * Digits d (no sign, no '_') in base 2, 8, 10 or 16 as a T_INT, an int64
 * when it fits, else a big int.  0; 1 when there is no digit or more than
 * MAX_INT_DIGITS (Python raises ValueError); CK_ENOMEM.
 */
static int int_digits(ck_arena_t *a, int neg, const char *d, int base,
                      typed_t *t)
{
    size_t nd, len = 1;
    uint8_t *mag, *cp;
    uint64_t u = 0;

    while (d[0] == '0' && d[1] != '\0')
        d++;
    nd = strlen(d);
    if (nd == 0 || nd > MAX_INT_DIGITS)
        return 1;
    mag = ck_arena_alloc(a, nd / 2 + 3);
    if (mag == NULL)
        return CK_ENOMEM;
    for (size_t k = 0; k < nd; k++) {
        int c = (unsigned char)d[k];
        unsigned carry = (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);

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
    neg = neg && (len > 1 || mag[0] != 0); /* -0 is 0 */
    memset(t, 0, sizeof(*t));
    t->t = T_INT;
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
        if (neg) {
            unsigned c = 1;

            for (size_t k = 0; k <= len; k++) {
                unsigned v = (uint8_t)~cp[k] + c;

                cp[k] = (uint8_t)v;
                c = v >> 8;
            }
        }
        t->big = cp;
        t->nbig = trim2(cp, len + 1);
    }
    t->dec = mag_dec(a, mag, len, neg);
    return t->dec != NULL ? 0 : CK_ENOMEM;
}

/* Python's int(s) of a str: 0, 1 when Python raises ValueError, CK_ENOMEM. */
static int py_int_str(ck_arena_t *a, const char *s, size_t n, typed_t *t)
{
    char *w, *d;

    while (n > 0 && strchr(" \t\n\r\f\v", s[n - 1]) != NULL)
        n--;
    while (n > 0 && strchr(" \t\n\r\f\v", s[0]) != NULL)
        s++, n--;
    w = ck_arena_strndup(a, s, n);
    if (w == NULL)
        return CK_ENOMEM;
    if (n == 0 || strlen(w) != n || !match(P_INT, w, 0))
        return 1;
    d = unscore(a, w, n);
    if (d == NULL)
        return CK_ENOMEM;
    return int_digits(a, d[0] == '-', d + (d[0] == '-' || d[0] == '+'), 10, t);
}

/* Python's float(s) of a str: 0, or 1 when Python raises ValueError. */
static int py_float_str(ck_arena_t *a, const char *s, size_t n, double *f)
{
    char *d, *w;

    while (n > 0 && strchr(" \t\n\r\f\v", s[n - 1]) != NULL)
        n--;
    while (n > 0 && strchr(" \t\n\r\f\v", s[0]) != NULL)
        s++, n--;
    w = ck_arena_strndup(a, s, n);
    if (w == NULL || n == 0 || strlen(w) != n ||
        (!match(P_FLOAT, w, 0) && !match(P_FLOAT_WORD, w, 1)))
        return 1;
    d = unscore(a, w, n);
    if (d == NULL)
        return 1;
    *f = strtod(d, NULL);
    return 0;
}

/* Python's repr() of a float: the shortest digits that read back; out
 * holds at least 32 bytes. */
static void py_repr(double d, char *out, size_t cap)
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

/* A float from text already matched: '_' ignored, YAML's .inf and 60s. */
static int float_text(yctx_t *y, const char *s, typed_t *t)
{
    char *d = unscore(y->a, s, strlen(s)), *p;
    double part[64], base = 1;
    int np = 0;

    if (d == NULL)
        return ck_err_set(y->err, CK_ENOMEM, "out of memory");
    p = d + (d[0] == '-' || d[0] == '+');
    t->t = T_FLOAT;
    if (strcasecmp(p, ".inf") == 0) {
        t->f = INFINITY;
    } else if (strcasecmp(p, ".nan") == 0) {
        t->f = NAN;
    } else if (strchr(p, ':') != NULL) { /* 1:30.5 is 90.5, as PyYAML */
        for (char *q = p; np < 64; q++) {
            part[np++] = strtod(q, &q);
            if (*q != ':')
                break;
        }
        t->f = 0;
        while (np-- > 0) {
            t->f += part[np] * base;
            base *= 60;
        }
    } else {
        t->f = strtod(p, NULL);
    }
    if (d[0] == '-')
        t->f = -t->f;
    return 0;
}

/* An int from text already matched by H_INT or Y_INT. */
static int int_text(yctx_t *y, const char *s, typed_t *t)
{
    char *d = unscore(y->a, s, strlen(s)), *p;
    int neg, rc, base = 10;

    if (d == NULL)
        return ck_err_set(y->err, CK_ENOMEM, "out of memory");
    neg = d[0] == '-';
    p = d + (d[0] == '-' || d[0] == '+');
    if (!y->hydra && strchr(p, ':') != NULL) { /* 1:30 is 90, as PyYAML */
        int64_t v = 0;

        for (char *q = p;; q++) {
            if (__builtin_mul_overflow(v, 60, &v) ||
                __builtin_add_overflow(v, strtoll(q, &q, 10), &v))
                return 0; /* beyond int64: left a string */
            if (*q != ':')
                break;
        }
        memset(t, 0, sizeof(*t));
        t->t = T_INT;
        t->i = neg ? -v : v;
        t->dec = ck_arena_printf(y->a, "%lld", (long long)t->i);
        return t->dec ? 0 : ck_err_set(y->err, CK_ENOMEM, "out of memory");
    }
    if (!y->hydra && (!strncmp(p, "0b", 2) || !strncmp(p, "0x", 2))) {
        base = p[1] == 'b' ? 2 : 16;
        p += 2;
    } else if (!y->hydra && p[0] == '0' && p[1] != '\0') {
        base = 8;
    }
    rc = int_digits(y->a, neg, p, base, t);
    if (rc == 1 && strlen(p) > MAX_INT_DIGITS)
        return ck_err_set(y->err, CK_EPLUGIN,
                          "%.40s%s: an int of more than %d digits", y->what,
                          strlen(y->what) > 40 ? "..." : "", MAX_INT_DIGITS);
    if (rc == 1) { /* "0b_": PyYAML fails too; a string here */
        t->t = T_STR;
        return 0;
    }
    return rc < 0 ? ck_err_set(y->err, CK_ENOMEM, "out of memory") : 0;
}

/* Type a scalar: Hydra's grammar for override values, else YAML's. */
static int type_scalar(yctx_t *y, val_t *v)
{
    typed_t *t = &v->ty;
    const char *s = v->text;

    memset(t, 0, sizeof(*t));
    t->t = T_STR;
    t->s = v->text;
    t->n = v->len;
    if (!v->plain)
        return 0;
    if (v->hydra) {
        if (strcmp(s, "~") == 0)
            return ck_err_set(y->err, CK_EPLUGIN,
                              "%s: '~' is not a value in Hydra's grammar "
                              "(null is)", y->what);
        if (match("^null$", s, 1)) {
            t->t = T_NULL;
        } else if (match("^(true|false)$", s, 1)) {
            t->t = T_BOOL;
            t->b = (s[0] | 0x20) == 't';
        } else if (match(H_INT, s, 0)) {
            return int_text(y, s, t);
        } else if (match(H_FLOAT, s, 1)) {
            return float_text(y, s, t);
        }
        return 0;
    }
    if (match(Y_NULL, s, 0)) {
        t->t = T_NULL;
    } else if (match(Y_BOOL, s, 0)) {
        t->t = T_BOOL;
        t->b = strchr("yYtT", s[0]) != NULL || (s[1] | 0x20) == 'n';
    } else if (match(Y_INT, s, 0)) {
        return int_text(y, s, t);
    } else if (match(Y_FLOAT, s, 0)) {
        return float_text(y, s, t);
    }
    return 0;
}

/*
 * The type of a scalar read lazily, set on first use; what the YAML loader
 * would refuse (an int of more than 4300 digits) is a string here.
 */
static const typed_t *tyof(ck_arena_t *a, const val_t *cv)
{
    val_t *v = (val_t *)cv; /* the type is a cache */
    ck_err_t err = { 0 };
    yctx_t y = { .a = a, .err = &err, .what = "" };

    if (v->untyped) {
        v->untyped = 0;
        if (type_scalar(&y, v) < 0) {
            memset(&v->ty, 0, sizeof(v->ty));
            v->ty.s = v->text;
            v->ty.n = v->len;
        }
    }
    return &v->ty;
}

/* 1 when OmegaConf's YAML loader reads the plain scalar s as a str. */
static int yaml_reads_str(const char *s)
{
    return !match(Y_NULL, s, 0) && !match(Y_BOOL, s, 0) &&
           !match(Y_INT, s, 0) && !match(Y_FLOAT, s, 0) &&
           strcmp(s, "<<") != 0 && strcmp(s, "=") != 0;
}

/* ---- overrides -------------------------------------------------------- */

enum { OP_SET, OP_ADD, OP_FORCE, OP_DEL };

typedef struct {
    int op;
    char *path[MAX_PATH];
    size_t depth;
    val_t *value;    /* NULL for ~key */
    const char *line;
} ovr_t;

/* Keys and ${...} values become pickled str, which must be UTF-8. */
static int utf8_text(const char *s)
{
    size_t n = strlen(s);

    for (size_t i = 0; i < n;) {
        int k = ck_utf8_len((const uint8_t *)s + i, n - i, 0);

        if (k == 0)
            return 0;
        i += (size_t)k;
    }
    return 1;
}

static int parse_override(yctx_t *y, const char *line, ovr_t *o)
{
    const char *s = line, *eq;
    char *key, *save = NULL, *tok;

    memset(o, 0, sizeof(*o));
    o->line = line;
    if (!utf8_text(line))
        return ck_err_set(y->err, CK_ECONFIG, "set: '%s' is not UTF-8", line);
    if (!strncmp(s, "++", 2)) {
        o->op = OP_FORCE;
        s += 2;
    } else if (*s == '+') {
        o->op = OP_ADD;
        s++;
    } else if (*s == '~') {
        o->op = OP_DEL;
        s++;
    }
    eq = strchr(s, '=');
    if (eq == NULL && o->op != OP_DEL)
        return ck_err_set(y->err, CK_ECONFIG, "set: '%s' is not key=value", line);
    key = ck_arena_strndup(y->a, s, eq ? (size_t)(eq - s) : strlen(s));
    if (key == NULL)
        return ck_err_set(y->err, CK_ENOMEM, "out of memory");
    if (key[0] == '\0' || key[0] == '.' || key[strlen(key) - 1] == '.' ||
        strstr(key, "..") != NULL)
        return ck_err_set(y->err, CK_ECONFIG, "set: empty key in '%s'", line);
    for (tok = strtok_r(key, ".", &save); tok != NULL;
         tok = strtok_r(NULL, ".", &save)) {
        if (o->depth == MAX_PATH)
            return ck_err_set(y->err, CK_ECONFIG, "set: key too deep in '%s'", line);
        o->path[o->depth++] = tok;
    }
    if (eq == NULL)
        return 0; /* ~key: removed whatever it holds */
    eq++;
    if (!strncmp(eq, "${", 2) && eq[strlen(eq) - 1] == '}') {
        val_t *v = ck_arena_alloc(y->a, sizeof(*v));

        if (v == NULL || (v->text = ck_arena_strdup(y->a, eq)) == NULL)
            return ck_err_set(y->err, CK_ENOMEM, "out of memory");
        v->len = strlen(eq);
        v->hydra = 1;
        v->ty.s = v->text; /* an interpolation: a string, kept verbatim */
        v->ty.n = v->len;
        o->value = v;
        return 0;
    }
    y->what = line;
    y->hydra = 1;
    o->value = yparse(y, eq, strlen(eq));
    y->hydra = 0;
    return o->value ? 0 : y->err->code ? y->err->code : CK_ECONFIG;
}

static int check_set(const char *value, ck_err_t *err)
{
    ck_arena_t a = { 0 };
    yctx_t y = { .a = &a, .err = err, .what = "" };
    ovr_t o;
    int rc = parse_override(&y, value, &o);

    ck_arena_release(&a);
    if (rc < 0 && err->code != CK_ENOMEM)
        err->code = CK_ECONFIG;
    return rc < 0 ? err->code : 0;
}

static int set_set(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                   const char *value)
{
    int rc = check_set(value, cx->err);

    return rc < 0 ? rc : ck_conf_set_lines(cx, d, conf, value);
}

static int override_init(ck_conf_ctx_t *cx, void *conf)
{
    ck_err_t *err = cx->err;
    override_conf_t *cf = conf;
    ck_arena_t a = { 0 };
    yctx_t y = { .a = &a, .err = err, .what = "" };
    int rc = 0;

    if (cf->file != NULL && cf->file[0] == '\0')
        cf->file = NULL; /* "file =" is no file */
    for (size_t i = 0; i < cf->set.n && rc == 0; i++) {
        ovr_t o;

        rc = parse_override(&y, cf->set.v[i], &o);
        if (rc < 0 && err->code == CK_EPLUGIN)
            err->code = CK_ECONFIG;
    }
    ck_arena_release(&a);
    return rc < 0 ? CK_ECONFIG : 0;
}

/* ---- reporting -------------------------------------------------------- */

static void json_py(ck_json_t *j, ck_arena_t *a, ck_py_t *p);

static void json_val(ck_json_t *j, ck_arena_t *a, const val_t *v)
{
    const typed_t *t;

    if (v == NULL) {
        ck_json_null(j);
        return;
    }
    if (v->kind == V_SEQ || v->kind == V_MAP) {
        if (v->kind == V_SEQ)
            ck_json_arr(j);
        else
            ck_json_obj(j);
        for (size_t i = 0; i < v->n; i++) {
            if (v->kind == V_MAP && i % 2 == 0) {
                ck_json_key(j, v->v[i]->text ? v->v[i]->text : "");
                continue;
            }
            json_val(j, a, v->v[i]);
        }
        ck_json_end(j);
        return;
    }
    t = tyof(a, v);
    switch (t->t) {
    case T_NULL: ck_json_null(j); break;
    case T_BOOL: ck_json_bool(j, t->b); break;
    case T_INT: ck_json_raw(j, t->dec, strlen(t->dec)); break;
    case T_FLOAT: ck_json_double(j, t->f); break;
    default: ck_json_strn(j, v->text, v->len);
    }
}

/* The value an OmegaConf node or a plain value holds, as JSON. */
static void json_py(ck_json_t *j, ck_arena_t *a, ck_py_t *p)
{
    ck_py_t *val;
    const char *dec;

    if (p == NULL) {
        ck_json_null(j);
        return;
    }
    switch ((ck_py_kind_t)p->kind) {
    case CK_PY_NONE: ck_json_null(j); return;
    case CK_PY_BOOL: ck_json_bool(j, p->b); return;
    case CK_PY_INT:
        dec = p->u.i.nbig ? big_dec(a, p->u.i.big, p->u.i.nbig) : NULL;
        if (p->u.i.nbig && dec != NULL)
            ck_json_raw(j, dec, strlen(dec));
        else if (p->u.i.nbig)
            ck_json_str(j, "<big int>");
        else
            ck_json_int(j, p->u.i.v);
        return;
    case CK_PY_FLOAT: ck_json_double(j, ck_py_float_value(p)); return;
    case CK_PY_STR: ck_json_strn(j, p->u.s.s, p->u.s.n); return;
    case CK_PY_NEWOBJ:
        val = ck_py_map_get(p->u.o.state, "_val", NULL);
        if (val != NULL) {
            json_py(j, a, val);
            return;
        }
        /* fall through */
    default:
        ck_json_str(j, "<container>");
    }
}

/* The dotted key of an override. */
static void dotted(const ovr_t *o, char *key, size_t cap)
{
    key[0] = '\0';
    for (size_t i = 0; i < o->depth; i++)
        snprintf(key + strlen(key), cap - strlen(key), "%s%s", i ? "." : "",
                 o->path[i]);
}

static void report(ck_job_t *job, const char *config, const ovr_t *o,
                   const char *op, ck_py_t *old_py, const val_t *old_v,
                   int have_old)
{
    ck_json_t *j = job->changes;
    char key[1024];

    dotted(o, key, sizeof(key));
    ck_json_obj(j);
    ck_json_key(j, "op");
    ck_json_str(j, op);
    ck_json_key(j, "config");
    ck_json_str(j, config);
    ck_json_key(j, "key");
    ck_json_str(j, key);
    if (have_old) {
        ck_json_key(j, "old");
        if (old_v != NULL)
            json_val(j, &job->ck.arena, old_v);
        else
            json_py(j, &job->ck.arena, old_py);
    }
    if (o->op != OP_DEL) {
        ck_json_key(j, "new");
        json_val(j, &job->ck.arena, o->value);
    }
    ck_json_end(j);
}

/* ---- editing a pickled graph (DictConfig or plain dict) --------------- */

typedef struct {
    ck_job_t *job;
    ck_arena_t *a;
    ck_err_t *err;
    const char *config;
    int omegaconf;
} ed_t;

static ck_py_t *g(ed_t *e, const char *m, const char *n)
{
    return ck_ckpt_global(&e->job->ck, m, n);
}

static int dict_set(ed_t *e, ck_py_t *d, const char *k, ck_py_t *v)
{
    ck_py_t *key = ck_py_str(e->a, k, strlen(k));

    if (key == NULL || v == NULL || ck_py_vec_push(e->a, &d->u.seq, key) < 0 ||
        ck_py_vec_push(e->a, &d->u.seq, v) < 0)
        return ck_err_set(e->err, CK_ENOMEM, "out of memory");
    return 0;
}

static ck_py_t *newobj(ed_t *e, ck_py_t *cls, ck_py_t *state)
{
    ck_py_t *o = ck_py_new(e->a, CK_PY_NEWOBJ);

    if (o == NULL || cls == NULL)
        return NULL;
    o->u.o.fn = cls;
    o->u.o.args = ck_py_new(e->a, CK_PY_TUPLE);
    o->u.o.state = state;
    return o->u.o.args ? o : NULL;
}

/* OmegaConf's Metadata or ContainerMetadata for a new node. */
static ck_py_t *metadata(ed_t *e, ck_py_t *key, int container, int list)
{
    ck_py_t *st = ck_py_new(e->a, CK_PY_DICT), *rc, *args, *t, *f;
    ck_py_t *any = g(e, "typing", "Any");

    rc = ck_py_new(e->a, CK_PY_REDUCE);
    args = ck_py_new(e->a, CK_PY_TUPLE);
    t = ck_py_new(e->a, CK_PY_BOOL);
    f = ck_py_new(e->a, CK_PY_BOOL);
    if (st == NULL || rc == NULL || args == NULL || t == NULL || f == NULL ||
        any == NULL || ck_py_vec_push(e->a, &args->u.seq, g(e, "__builtin__", "dict")) < 0)
        return NULL;
    t->b = 1;
    rc->u.o.fn = g(e, "collections", "defaultdict");
    rc->u.o.args = args;
    if (dict_set(e, st, "ref_type", any) < 0 ||
        dict_set(e, st, "object_type",
                 container ? g(e, "__builtin__", list ? "list" : "dict")
                           : ck_py_new(e->a, CK_PY_NONE)) < 0 ||
        dict_set(e, st, "optional", t) < 0 || dict_set(e, st, "key", key) < 0 ||
        dict_set(e, st, "flags", ck_py_new(e->a, CK_PY_DICT)) < 0 ||
        dict_set(e, st, "flags_root", f) < 0 ||
        dict_set(e, st, "resolver_cache", rc) < 0)
        return NULL;
    if (container &&
        (dict_set(e, st, "key_type", list ? g(e, "__builtin__", "long") : any) < 0 ||
         dict_set(e, st, "element_type", any) < 0))
        return NULL;
    return newobj(e, g(e, "omegaconf.base", container ? "ContainerMetadata"
                                                      : "Metadata"),
                  st);
}

/* A Python value for a typed scalar. */
static ck_py_t *typed_py(ck_arena_t *a, const typed_t *t)
{
    ck_py_t *p;

    switch (t->t) {
    case T_NULL:
        return ck_py_new(a, CK_PY_NONE);
    case T_BOOL:
        p = ck_py_new(a, CK_PY_BOOL);
        if (p != NULL)
            p->b = (uint8_t)t->b;
        return p;
    case T_INT:
        if (t->nbig == 0)
            return ck_py_int(a, t->i);
        p = ck_py_new(a, CK_PY_INT); /* pickled as LONG1, as Python does */
        if (p != NULL) {
            p->u.i.big = (uint8_t *)t->big;
            p->u.i.nbig = t->nbig;
        }
        return p;
    case T_FLOAT:
        return ck_py_float(a, t->f);
    default:
        return ck_py_str(a, t->s, t->n);
    }
}

static ck_py_t *scalar_py(ed_t *e, const val_t *v)
{
    return typed_py(e->a, tyof(e->a, v));
}

/* A value for the config: plain Python values, or OmegaConf nodes. */
static ck_py_t *make_value(ed_t *e, const val_t *v, ck_py_t *key,
                           ck_py_t *parent)
{
    ck_py_t *node, *st, *content;

    if (!e->omegaconf) {
        if (v->kind == V_SCALAR)
            return scalar_py(e, v);
        content = ck_py_new(e->a, v->kind == V_SEQ ? CK_PY_LIST : CK_PY_DICT);
        for (size_t i = 0; content != NULL && i < v->n; i++) {
            ck_py_t *x = v->kind == V_MAP && i % 2 == 0
                             ? ck_py_str(e->a, v->v[i]->text, v->v[i]->len)
                             : make_value(e, v->v[i], NULL, NULL);

            if (x == NULL || ck_py_vec_push(e->a, &content->u.seq, x) < 0)
                return NULL;
        }
        return content;
    }
    st = ck_py_new(e->a, CK_PY_DICT);
    if (st == NULL)
        return NULL;
    if (v->kind == V_SCALAR) {
        node = newobj(e, g(e, "omegaconf.nodes", "AnyNode"), st);
        if (node == NULL || dict_set(e, st, "_metadata", metadata(e, key, 0, 0)) < 0 ||
            dict_set(e, st, "_parent", parent) < 0 ||
            dict_set(e, st, "_val", scalar_py(e, v)) < 0)
            return NULL;
        return node;
    }
    node = newobj(e, v->kind == V_SEQ ? g(e, "omegaconf.listconfig", "ListConfig")
                                      : g(e, "omegaconf.dictconfig", "DictConfig"),
                  st);
    content = ck_py_new(e->a, v->kind == V_SEQ ? CK_PY_LIST : CK_PY_DICT);
    if (node == NULL || content == NULL ||
        dict_set(e, st, "_metadata", metadata(e, key, 1, v->kind == V_SEQ)) < 0 ||
        dict_set(e, st, "_parent", parent) < 0 ||
        dict_set(e, st, "_content", content) < 0)
        return NULL;
    for (size_t i = 0; i < v->n; i++) {
        if (v->kind == V_MAP) {
            ck_py_t *k = ck_py_str(e->a, v->v[i]->text, v->v[i]->len);
            ck_py_t *x = make_value(e, v->v[i + 1], k, node);

            i++;
            if (k == NULL || x == NULL || ck_py_vec_push(e->a, &content->u.seq, k) < 0 ||
                ck_py_vec_push(e->a, &content->u.seq, x) < 0)
                return NULL;
        } else {
            ck_py_t *x = make_value(e, v->v[i], ck_py_int(e->a, (int64_t)i), node);

            if (x == NULL || ck_py_vec_push(e->a, &content->u.seq, x) < 0)
                return NULL;
        }
    }
    return node;
}

static int is_cfg(ck_py_t *p, const char *cls)
{
    return p != NULL && p->kind == CK_PY_NEWOBJ && p->u.o.fn->kind == CK_PY_GLOBAL &&
           strncmp(p->u.o.fn->u.g.module, "omegaconf.", 10) == 0 &&
           strcmp(p->u.o.fn->u.g.name, cls) == 0;
}

/* The children of a container: a dict's pairs, or a DictConfig's _content. */
static ck_py_vec_t *children(ed_t *e, ck_py_t *c)
{
    ck_py_t *content;

    if (!e->omegaconf)
        return c != NULL && c->kind == CK_PY_DICT ? &c->u.seq : NULL;
    if (!is_cfg(c, "DictConfig"))
        return NULL;
    content = ck_py_map_get(c->u.o.state, "_content", NULL);
    return content != NULL && content->kind == CK_PY_DICT ? &content->u.seq : NULL;
}

static const char *leaf_class(ck_py_t *n)
{
    if (n == NULL || n->kind != CK_PY_NEWOBJ || n->u.o.fn->kind != CK_PY_GLOBAL ||
        strcmp(n->u.o.fn->u.g.module, "omegaconf.nodes") != 0)
        return NULL;
    return n->u.o.fn->u.g.name;
}

/* '???' (missing) and interpolations go in any node, as OmegaConf has it. */
static int special_str(const typed_t *t)
{
    return t->t == T_STR && t->s != NULL &&
           ((t->n == 3 && memcmp(t->s, "???", 3) == 0) ||
            strstr(t->s, "${") != NULL);
}

/*
 * Set a typed node's _val, converted as OmegaConf 2.2's node classes
 * convert what Hydra gives them (_validate_and_convert_impl), or fail.
 */
static int set_leaf(ed_t *e, ck_py_t *node, const val_t *v, const ovr_t *o)
{
    const char *cls = leaf_class(node);
    ck_py_vec_t *st = ck_py_mapping(node->u.o.state);
    typed_t t = { 0 }, c = { 0 }, n;
    ck_py_t *nv = NULL;
    size_t at;
    char buf[40];
    int scalar = v->kind == V_SCALAR, rc;

    if (st == NULL || ck_py_map_get(node->u.o.state, "_val", &at) == NULL)
        return ck_err_set(e->err, CK_EPLUGIN, "config_override: %s: malformed node",
                          o->line);
    if (scalar)
        t = *tyof(e->a, v);
    if (scalar && (t.t == T_NULL || special_str(&t))) {
        /* as it is */
    } else if (!strcmp(cls, "AnyNode")) {
        if (!scalar)
            goto bad;
    } else if (!strcmp(cls, "FloatNode")) { /* float(v): float, int, str */
        c.t = T_FLOAT;
        if (!scalar || t.t == T_BOOL)
            goto bad;
        if (t.t == T_FLOAT)
            c.f = t.f;
        else if (t.t == T_INT) /* correctly rounded, as Python's float(int) */
            c.f = t.nbig ? strtod(t.dec, NULL) : (double)t.i;
        else if (py_float_str(e->a, t.s, t.n, &c.f) != 0)
            goto bad;
        if (t.t == T_INT && isinf(c.f))
            goto bad; /* OverflowError: int too large to convert to float */
        nv = typed_py(e->a, &c);
    } else if (!strcmp(cls, "IntegerNode")) { /* int(v): int, str */
        if (!scalar || (t.t != T_INT && t.t != T_STR))
            goto bad;
        if (t.t == T_STR) {
            rc = py_int_str(e->a, t.s, t.n, &c);
            if (rc > 0)
                goto bad;
            nv = rc == 0 ? typed_py(e->a, &c) : NULL;
            if (nv == NULL)
                return ck_err_set(e->err, CK_ENOMEM, "out of memory");
        }
    } else if (!strcmp(cls, "BooleanNode")) {
        /* bool; int != 0; str: int(str) != 0, yes/y/on/true, no/n/off/false */
        c.t = T_BOOL;
        if (!scalar || t.t == T_FLOAT)
            goto bad;
        if (t.t == T_BOOL) {
            c.b = t.b;
        } else if (t.t == T_INT) {
            c.b = t.nbig != 0 || t.i != 0;
        } else {
            rc = py_int_str(e->a, t.s, t.n, &n);
            if (rc < 0)
                return ck_err_set(e->err, CK_ENOMEM, "out of memory");
            if (rc == 0)
                c.b = n.nbig != 0 || n.i != 0;
            else if (!strcasecmp(t.s, "yes") || !strcasecmp(t.s, "y") ||
                     !strcasecmp(t.s, "on") || !strcasecmp(t.s, "true"))
                c.b = 1;
            else if (!strcasecmp(t.s, "no") || !strcasecmp(t.s, "n") ||
                     !strcasecmp(t.s, "off") || !strcasecmp(t.s, "false"))
                c.b = 0;
            else
                goto bad;
        }
        nv = typed_py(e->a, &c);
    } else if (!strcmp(cls, "StringNode")) { /* str(v) of a scalar */
        if (!scalar)
            goto bad;
        c.t = T_STR;
        c.s = t.s;
        c.n = t.n;
        if (t.t == T_INT) {
            c.s = t.dec;
        } else if (t.t == T_FLOAT) {
            py_repr(t.f, buf, sizeof(buf));
            c.s = buf;
        } else if (t.t == T_BOOL) {
            c.s = t.b ? "True" : "False";
        }
        if (t.t != T_STR)
            c.n = strlen(c.s);
        nv = typed_py(e->a, &c);
    } else {
        return ck_err_set(e->err, CK_EPLUGIN,
                          "config_override: %s: cannot change a %s", o->line, cls);
    }
    if (nv == NULL)
        nv = scalar_py(e, v);
    if (nv == NULL)
        return ck_err_set(e->err, CK_ENOMEM, "out of memory");
    st->v[2 * at + 1] = nv;
    return 0;
bad:
    return ck_err_set(e->err, CK_EPLUGIN,
                      "config_override: %s: '%s' is not a valid value for a %s",
                      o->line, scalar ? v->text : "collection", cls);
}

/* ---- ~key=value: Python's == ------------------------------------------ */

/* The Python value behind an OmegaConf node (a leaf's _val, a container's
 * _content); anything else as it is. */
static ck_py_t *unwrap(ck_py_t *p)
{
    ck_py_t *in;

    if (p == NULL || p->kind != CK_PY_NEWOBJ || p->u.o.fn == NULL ||
        p->u.o.fn->kind != CK_PY_GLOBAL ||
        strncmp(p->u.o.fn->u.g.module, "omegaconf.", 10) != 0)
        return p;
    in = ck_py_map_get(p->u.o.state, leaf_class(p) ? "_val" : "_content", NULL);
    return in != NULL ? in : p;
}

/* The items of a dict, an OrderedDict or a defaultdict; else NULL. */
static ck_py_vec_t *py_dict(ck_py_t *p)
{
    if (p->kind == CK_PY_DICT ||
        (p->kind == CK_PY_REDUCE &&
         (ck_py_global_is(p->u.o.fn, "collections", "OrderedDict") ||
          ck_py_global_is(p->u.o.fn, "collections", "defaultdict"))))
        return ck_py_mapping(p);
    return NULL;
}

/* A Python scalar as a typed_t; 0 when p is no scalar. */
static int py_typed(const ck_py_t *p, typed_t *t)
{
    memset(t, 0, sizeof(*t));
    switch ((ck_py_kind_t)p->kind) {
    case CK_PY_NONE: t->t = T_NULL; return 1;
    case CK_PY_BOOL: t->t = T_BOOL; t->b = p->b; return 1;
    case CK_PY_INT:
        t->t = T_INT;
        t->i = p->u.i.v;
        t->big = p->u.i.big;
        t->nbig = p->u.i.nbig;
        return 1;
    case CK_PY_FLOAT: t->t = T_FLOAT; t->f = ck_py_float_value(p); return 1;
    case CK_PY_STR: t->t = T_STR; t->s = p->u.s.s; t->n = p->u.s.n; return 1;
    default: return 0;
    }
}

/*
 * Python's a == b for scalars: a bool is an int, int and float compare
 * exactly (2**53 + 1 != 2.0**53), nan equals nothing, a str no number.
 */
static int typed_eq(ck_arena_t *ar, const typed_t *a, const typed_t *b)
{
    const typed_t *i, *f;
    const char *dec;
    char buf[400];

    if (a->t == T_STR || b->t == T_STR)
        return a->t == b->t && a->n == b->n &&
               (a->n == 0 || memcmp(a->s, b->s, a->n) == 0);
    if (a->t == T_NULL || b->t == T_NULL)
        return a->t == b->t;
    if (a->t == T_FLOAT && b->t == T_FLOAT)
        return a->f == b->f;
    if (a->t != T_FLOAT && b->t != T_FLOAT) {
        if (a->nbig || b->nbig) /* both minimal: equal bytes */
            return a->nbig == b->nbig && memcmp(a->big, b->big, a->nbig) == 0;
        return (a->t == T_BOOL ? a->b : a->i) == (b->t == T_BOOL ? b->b : b->i);
    }
    f = a->t == T_FLOAT ? a : b;
    i = a->t == T_FLOAT ? b : a;
    if (!isfinite(f->f) || f->f != floor(f->f))
        return 0;
    if (i->nbig == 0)
        return f->f >= -0x1p63 && f->f < 0x1p63 &&
               (int64_t)f->f == (i->t == T_BOOL ? i->b : i->i);
    dec = i->dec != NULL ? i->dec : big_dec(ar, i->big, i->nbig);
    snprintf(buf, sizeof(buf), "%.0f", f->f); /* exact, in glibc */
    return dec != NULL && strcmp(dec, buf) == 0;
}

/* want (an override value) == have (a value of a YAML-string config) */
static int eq_val(ed_t *e, const val_t *w, const val_t *h, int depth)
{
    if (w->kind != h->kind || depth > 64)
        return 0;
    if (w->kind == V_SCALAR)
        return typed_eq(e->a, tyof(e->a, w), tyof(e->a, h));
    if (w->n != h->n)
        return 0;
    if (w->kind == V_SEQ) {
        for (size_t i = 0; i < w->n; i++)
            if (!eq_val(e, w->v[i], h->v[i], depth + 1))
                return 0;
        return 1;
    }
    for (size_t i = 0; i < w->n; i += 2) { /* the same items, in any order */
        size_t k = 0;

        while (k < h->n &&
               !typed_eq(e->a, tyof(e->a, w->v[i]), tyof(e->a, h->v[k])))
            k += 2;
        if (k >= h->n || !eq_val(e, w->v[i + 1], h->v[k + 1], depth + 1))
            return 0;
    }
    return 1;
}

/* want (an override value) == have (a Python value or an OmegaConf node) */
static int eq_py(ed_t *e, const val_t *w, ck_py_t *h, int depth)
{
    ck_py_vec_t *m;
    typed_t t;

    h = unwrap(h);
    if (h == NULL || depth > 64)
        return 0;
    if (w->kind == V_SCALAR)
        return py_typed(h, &t) && typed_eq(e->a, tyof(e->a, w), &t);
    if (w->kind == V_SEQ) { /* a list; [1] != (1,) in Python */
        if (h->kind != CK_PY_LIST || h->u.seq.n != w->n)
            return 0;
        for (size_t i = 0; i < w->n; i++)
            if (!eq_py(e, w->v[i], h->u.seq.v[i], depth + 1))
                return 0;
        return 1;
    }
    m = py_dict(h);
    if (m == NULL || m->n != w->n)
        return 0;
    for (size_t i = 0; i < w->n; i += 2) {
        size_t k = 0;

        while (k < m->n && !(py_typed(m->v[k], &t) &&
                             typed_eq(e->a, tyof(e->a, w->v[i]), &t)))
            k += 2;
        if (k >= m->n || !eq_py(e, w->v[i + 1], m->v[k + 1], depth + 1))
            return 0;
    }
    return 1;
}

#define SHOW_MAX 240 /* bytes of a value shown in a message */

/* A scalar as Python's repr() shows it. */
static void show_typed(ck_buf_t *b, const typed_t *t)
{
    char f[40];

    switch (t->t) {
    case T_NULL: ck_buf_printf(b, "None"); break;
    case T_BOOL: ck_buf_printf(b, "%s", t->b ? "True" : "False"); break;
    case T_INT:
        if (t->nbig == 0)
            ck_buf_printf(b, "%lld", (long long)t->i);
        else
            ck_buf_printf(b, "%s", t->dec != NULL ? t->dec : "<big int>");
        break;
    case T_FLOAT:
        py_repr(t->f, f, sizeof(f));
        ck_buf_printf(b, "%s", f);
        break;
    default:
        ck_buf_printf(b, "'%.*s%s'", (int)(t->n < 100 ? t->n : 100), t->s,
                      t->n > 100 ? "..." : "");
    }
}

static void show_val(ck_buf_t *b, ck_arena_t *a, const val_t *v, int depth)
{
    if (b->len > SHOW_MAX || depth > 8) {
        ck_buf_printf(b, "...");
        return;
    }
    if (v->kind == V_SCALAR) {
        show_typed(b, tyof(a, v));
        return;
    }
    ck_buf_putc(b, v->kind == V_SEQ ? '[' : '{');
    for (size_t i = 0; i < v->n; i++) {
        if (i > 0)
            ck_buf_printf(b, "%s", v->kind == V_MAP && i % 2 ? ": " : ", ");
        show_val(b, a, v->v[i], depth + 1);
    }
    ck_buf_putc(b, v->kind == V_SEQ ? ']' : '}');
}

static void show_py(ck_buf_t *b, ck_arena_t *a, ck_py_t *p, int depth)
{
    ck_py_vec_t *m;
    typed_t t;

    p = unwrap(p);
    if (b->len > SHOW_MAX || depth > 8) {
        ck_buf_printf(b, "...");
        return;
    }
    if (p != NULL && py_typed(p, &t)) {
        if (t.nbig)
            t.dec = big_dec(a, t.big, t.nbig);
        show_typed(b, &t);
    } else if (p != NULL && (p->kind == CK_PY_LIST || p->kind == CK_PY_TUPLE)) {
        ck_buf_putc(b, p->kind == CK_PY_LIST ? '[' : '(');
        for (size_t i = 0; i < p->u.seq.n; i++) {
            if (i > 0)
                ck_buf_printf(b, ", ");
            show_py(b, a, p->u.seq.v[i], depth + 1);
        }
        ck_buf_putc(b, p->kind == CK_PY_LIST ? ']' : ')');
    } else if (p != NULL && (m = py_dict(p)) != NULL) {
        ck_buf_putc(b, '{');
        for (size_t i = 0; i < m->n; i++) {
            if (i > 0)
                ck_buf_printf(b, "%s", i % 2 ? ": " : ", ");
            show_py(b, a, m->v[i], depth + 1);
        }
        ck_buf_putc(b, '}');
    } else {
        ck_buf_printf(b, "<object>");
    }
}

/* ~key=value: fail unless the key holds value (have_v in a YAML string,
 * else have_py), naming the key and both values. */
static int check_del(ed_t *e, const ovr_t *o, ck_py_t *have_py,
                     const val_t *have_v)
{
    ck_buf_t want = { 0 }, have = { 0 };
    char key[1024];
    int rc;

    if (have_v != NULL ? eq_val(e, o->value, have_v, 0)
                       : eq_py(e, o->value, have_py, 0))
        return 0;
    dotted(o, key, sizeof(key));
    show_val(&want, e->a, o->value, 0);
    if (have_v != NULL)
        show_val(&have, e->a, have_v, 0);
    else
        show_py(&have, e->a, have_py, 0);
    ck_buf_putc(&want, '\0');
    ck_buf_putc(&have, '\0');
    rc = ck_err_set(e->err, CK_EPLUGIN,
                    "config_override: %s: the value of '%s' is %s, not %s",
                    o->line, key, have.oom ? "?" : (char *)have.data,
                    want.oom ? "?" : (char *)want.data);
    ck_buf_release(&want);
    ck_buf_release(&have);
    return rc;
}

static int key_of(ck_py_vec_t *m, const char *k)
{
    for (size_t i = 0; i + 1 < m->n; i += 2)
        if (ck_py_str_eq(m->v[i], k))
            return (int)(i / 2);
    return -1;
}

static int apply_py(ed_t *e, ck_py_t *root, const ovr_t *o)
{
    ck_py_t *cur = root, *parent = NULL;
    ck_py_vec_t *m = NULL;
    int idx = -1;

    for (size_t d = 0; d < o->depth; d++) {
        m = children(e, cur);
        if (m == NULL)
            return ck_err_set(e->err, CK_EPLUGIN,
                              "config_override: %s: '%s' is not a mapping",
                              o->line, d ? o->path[d - 1] : e->config);
        idx = key_of(m, o->path[d]);
        if (d + 1 == o->depth)
            break;
        if (idx < 0) {
            val_t empty = { .kind = V_MAP };
            ck_py_t *k, *x;

            if (o->op != OP_ADD && o->op != OP_FORCE)
                return ck_err_set(e->err, CK_EPLUGIN,
                                  "config_override: %s: no key '%s' in %s",
                                  o->line, o->path[d], e->config);
            k = ck_py_str(e->a, o->path[d], strlen(o->path[d]));
            x = make_value(e, &empty, k, cur);
            if (k == NULL || x == NULL || ck_py_vec_push(e->a, m, k) < 0 ||
                ck_py_vec_push(e->a, m, x) < 0)
                return ck_err_set(e->err, CK_ENOMEM, "out of memory");
            idx = (int)(m->n / 2 - 1);
        }
        parent = cur;
        cur = m->v[2 * idx + 1];
    }
    (void)parent;
    if (o->op == OP_DEL) {
        if (idx < 0)
            return ck_err_set(e->err, CK_EPLUGIN,
                              "config_override: %s: no key '%s' to remove",
                              o->line, o->path[o->depth - 1]);
        if (o->value != NULL && check_del(e, o, m->v[2 * idx + 1], NULL) < 0)
            return e->err->code;
        report(e->job, e->config, o, "removed", m->v[2 * idx + 1], NULL, 1);
        ck_py_vec_remove(m, 2 * (size_t)idx, 2);
        return 0;
    }
    if (idx < 0 && o->op == OP_SET)
        return ck_err_set(e->err, CK_EPLUGIN,
                          "config_override: %s: no key '%s' in %s (use +%s to add it)",
                          o->line, o->path[o->depth - 1], e->config,
                          o->line);
    if (idx >= 0 && o->op == OP_ADD)
        return ck_err_set(e->err, CK_EPLUGIN,
                          "config_override: %s: key '%s' already exists (use ++ to "
                          "change it)", o->line, o->path[o->depth - 1]);
    if (idx < 0) {
        ck_py_t *k = ck_py_str(e->a, o->path[o->depth - 1],
                               strlen(o->path[o->depth - 1]));
        ck_py_t *x = make_value(e, o->value, k, cur);

        if (k == NULL || x == NULL || ck_py_vec_push(e->a, m, k) < 0 ||
            ck_py_vec_push(e->a, m, x) < 0)
            return ck_err_set(e->err, CK_ENOMEM, "out of memory");
        report(e->job, e->config, o, "added", NULL, NULL, 0);
        return 0;
    }
    {
        ck_py_t *old = m->v[2 * idx + 1];
        const char *cls = e->omegaconf ? leaf_class(old) : NULL;
        int rc;

        report(e->job, e->config, o, "set", old, NULL, 1);
        /* a typed leaf converts or refuses; an AnyNode takes a collection
         * as a new container node */
        if (cls != NULL &&
            (o->value->kind == V_SCALAR || strcmp(cls, "AnyNode") != 0))
            return set_leaf(e, old, o->value, o);
        rc = 0;
        m->v[2 * idx + 1] = make_value(e, o->value, m->v[2 * idx], cur);
        if (m->v[2 * idx + 1] == NULL)
            rc = ck_err_set(e->err, CK_ENOMEM, "out of memory");
        return rc;
    }
}

/* ---- editing a YAML string -------------------------------------------- */

static int vkey_of(val_t *m, const char *k)
{
    for (size_t i = 0; i + 1 < m->n; i += 2)
        if (m->v[i]->kind == V_SCALAR && strcmp(m->v[i]->text, k) == 0)
            return (int)(i / 2);
    return -1;
}

static int apply_yaml(ed_t *e, val_t *root, const ovr_t *o)
{
    val_t *cur = root;
    int idx = -1;

    for (size_t d = 0; d < o->depth; d++) {
        if (cur->kind != V_MAP)
            return ck_err_set(e->err, CK_EPLUGIN,
                              "config_override: %s: '%s' is not a mapping",
                              o->line, d ? o->path[d - 1] : e->config);
        idx = vkey_of(cur, o->path[d]);
        if (d + 1 == o->depth)
            break;
        if (idx < 0) {
            val_t *k = ck_arena_alloc(e->a, sizeof(*k)), *x = ck_arena_alloc(e->a, sizeof(*x));

            if (o->op != OP_ADD && o->op != OP_FORCE)
                return ck_err_set(e->err, CK_EPLUGIN,
                                  "config_override: %s: no key '%s' in %s",
                                  o->line, o->path[d], e->config);
            if (k == NULL || x == NULL)
                return ck_err_set(e->err, CK_ENOMEM, "out of memory");
            k->text = o->path[d];
            k->len = strlen(k->text);
            k->plain = 1;
            k->ty.s = k->text;
            k->ty.n = k->len;
            x->kind = V_MAP;
            if (vpush(e->a, cur, k) < 0 || vpush(e->a, cur, x) < 0)
                return ck_err_set(e->err, CK_ENOMEM, "out of memory");
            idx = (int)(cur->n / 2 - 1);
        }
        cur = cur->v[2 * idx + 1];
    }
    if (o->op == OP_DEL) {
        if (idx < 0)
            return ck_err_set(e->err, CK_EPLUGIN,
                              "config_override: %s: no key '%s' to remove",
                              o->line, o->path[o->depth - 1]);
        if (o->value != NULL && check_del(e, o, NULL, cur->v[2 * idx + 1]) < 0)
            return e->err->code;
        report(e->job, e->config, o, "removed", NULL, cur->v[2 * idx + 1], 1);
        memmove(cur->v + 2 * idx, cur->v + 2 * idx + 2,
                (cur->n - 2 * (size_t)idx - 2) * sizeof(*cur->v));
        cur->n -= 2;
        return 0;
    }
    if (idx < 0 && o->op == OP_SET)
        return ck_err_set(e->err, CK_EPLUGIN,
                          "config_override: %s: no key '%s' in %s (use +%s to add it)",
                          o->line, o->path[o->depth - 1], e->config, o->line);
    if (idx >= 0 && o->op == OP_ADD)
        return ck_err_set(e->err, CK_EPLUGIN,
                          "config_override: %s: key '%s' already exists (use ++ to "
                          "change it)", o->line, o->path[o->depth - 1]);
    if (idx < 0) {
        val_t *k = ck_arena_alloc(e->a, sizeof(*k));

        if (k == NULL)
            return ck_err_set(e->err, CK_ENOMEM, "out of memory");
        k->text = o->path[o->depth - 1];
        k->len = strlen(k->text);
        k->plain = 1;
        k->ty.s = k->text;
        k->ty.n = k->len;
        if (vpush(e->a, cur, k) < 0 || vpush(e->a, cur, o->value) < 0)
            return ck_err_set(e->err, CK_ENOMEM, "out of memory");
        report(e->job, e->config, o, "added", NULL, NULL, 0);
        return 0;
    }
    report(e->job, e->config, o, "set", NULL, cur->v[2 * idx + 1], 1);
    cur->v[2 * idx + 1] = o->value;
    return 0;
}

typedef struct {
    ck_buf_t *b;
} ysink_t;

static int ywrite(void *data, unsigned char *buf, size_t size)
{
    return ck_buf_put(data, buf, size) == 0;
}

/*
 * The text and style a scalar is written with.  A value from a set line is
 * written so that OmegaConf's YAML loader reads back what Hydra typed: a
 * string YAML would read as another type is quoted ('yes', '0x10', ''), a
 * null, bool or int in its plain spelling, a float YAML would not read as
 * one (inf, +.5, .5e3) as Python's repr() with .inf and .nan.
 */
static const char *yscalar(const val_t *v, char *buf, size_t cap, int *plain)
{
    const typed_t *t = &v->ty;

    *plain = v->plain;
    if (!v->hydra || !v->plain)
        return v->text;
    switch (t->t) {
    case T_NULL: return "null";
    case T_BOOL: return t->b ? "true" : "false";
    case T_INT: return t->dec;
    case T_FLOAT:
        if (match(Y_FLOAT, v->text, 0))
            return v->text;
        if (isnan(t->f))
            return ".nan";
        if (isinf(t->f))
            return t->f < 0 ? "-.inf" : ".inf";
        py_repr(t->f, buf, cap);
        return buf;
    default:
        *plain = yaml_reads_str(v->text);
        return v->text;
    }
}

static int yemit(yaml_emitter_t *em, const val_t *v)
{
    yaml_event_t ev;
    int ok;

    if (v->kind == V_SCALAR) {
        yaml_scalar_style_t style = (yaml_scalar_style_t)v->style;
        char buf[40];
        int plain;
        const char *text = yscalar(v, buf, sizeof(buf), &plain);
        size_t len = text == v->text ? v->len : strlen(text);

        if (!plain && (v->plain || style == YAML_ANY_SCALAR_STYLE))
            style = YAML_SINGLE_QUOTED_SCALAR_STYLE;
        if (plain)
            style = YAML_PLAIN_SCALAR_STYLE;
        ok = yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)text,
                                          (int)len, plain, !plain, style);
        return ok && yaml_emitter_emit(em, &ev);
    }
    if (v->kind == V_SEQ)
        ok = yaml_sequence_start_event_initialize(
            &ev, NULL, NULL, 1, v->flow ? YAML_FLOW_SEQUENCE_STYLE
                                        : YAML_BLOCK_SEQUENCE_STYLE);
    else
        ok = yaml_mapping_start_event_initialize(
            &ev, NULL, NULL, 1, v->flow ? YAML_FLOW_MAPPING_STYLE
                                        : YAML_BLOCK_MAPPING_STYLE);
    if (!ok || !yaml_emitter_emit(em, &ev))
        return 0;
    for (size_t i = 0; i < v->n; i++)
        if (!yemit(em, v->v[i]))
            return 0;
    if (v->kind == V_SEQ)
        ok = yaml_sequence_end_event_initialize(&ev);
    else
        ok = yaml_mapping_end_event_initialize(&ev);
    return ok && yaml_emitter_emit(em, &ev);
}

static int yaml_dump(ed_t *e, const val_t *root, ck_buf_t *out)
{
    yaml_emitter_t em;
    yaml_event_t ev;
    int ok;

    if (!yaml_emitter_initialize(&em))
        return ck_err_set(e->err, CK_ENOMEM, "out of memory");
    yaml_emitter_set_output(&em, ywrite, out);
    yaml_emitter_set_unicode(&em, 1);
    yaml_emitter_set_width(&em, -1);
    ok = yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) &&
         yaml_emitter_emit(&em, &ev) &&
         yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) &&
         yaml_emitter_emit(&em, &ev) && yemit(&em, root) &&
         yaml_document_end_event_initialize(&ev, 1) &&
         yaml_emitter_emit(&em, &ev) && yaml_stream_end_event_initialize(&ev) &&
         yaml_emitter_emit(&em, &ev);
    if (!ok)
        ck_err_set(e->err, CK_EPLUGIN, "config_override: emitting YAML: %s",
                   em.problem ? em.problem : "failed");
    yaml_emitter_delete(&em);
    return ok ? 0 : CK_EPLUGIN;
}

/* ---- merging a YAML file ---------------------------------------------- */

static int read_file(ed_t *e, const char *path, char **text, size_t *len)
{
    FILE *f = fopen(path, "r");
    ck_buf_t b = { 0 };
    char chunk[4096];
    size_t n;

    if (f == NULL)
        return ck_err_set(e->err, CK_EPLUGIN, "config_override: %s: %s", path,
                          strerror(errno));
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        ck_buf_put(&b, chunk, n);
    fclose(f);
    if (b.oom || b.len > (64u << 20)) {
        ck_buf_release(&b);
        return ck_err_set(e->err, CK_EPLUGIN, "config_override: %s: too large", path);
    }
    *text = ck_arena_strndup(e->a, b.data ? (char *)b.data : "", b.len);
    *len = b.len;
    ck_buf_release(&b);
    return *text ? 0 : ck_err_set(e->err, CK_ENOMEM, "out of memory");
}

/* Is there a mapping at path?  (for deep merge) */
static int has_map(ed_t *e, ck_py_t *root, val_t *yroot, char **path, size_t n)
{
    ck_py_t *cur = root;
    val_t *vc = yroot;

    for (size_t d = 0; d < n; d++) {
        if (yroot != NULL) {
            int i = vc->kind == V_MAP ? vkey_of(vc, path[d]) : -1;

            if (i < 0)
                return 0;
            vc = vc->v[2 * i + 1];
        } else {
            ck_py_vec_t *m = children(e, cur);
            int i = m ? key_of(m, path[d]) : -1;

            if (i < 0)
                return 0;
            cur = m->v[2 * i + 1];
        }
    }
    return yroot != NULL ? vc->kind == V_MAP : children(e, cur) != NULL;
}

static int merge(ed_t *e, ck_py_t *root, val_t *yroot, val_t *map, ovr_t *o)
{
    for (size_t i = 0; i + 1 < map->n; i += 2) {
        val_t *k = map->v[i], *v = map->v[i + 1];
        int rc;

        if (k->kind != V_SCALAR || o->depth == MAX_PATH)
            return ck_err_set(e->err, CK_EPLUGIN, "config_override: bad key in file");
        o->path[o->depth++] = k->text;
        if (v->kind == V_MAP && has_map(e, root, yroot, o->path, o->depth)) {
            rc = merge(e, root, yroot, v, o);
        } else {
            o->op = OP_FORCE;
            o->value = v;
            rc = yroot ? apply_yaml(e, yroot, o) : apply_py(e, root, o);
        }
        o->depth--;
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- running ---------------------------------------------------------- */

static int override_run(ck_job_t *job, void *conf)
{
    override_conf_t *cf = conf;
    ed_t e = { job, &job->ck.arena, job->err, cf->config, 0 };
    yctx_t y = { .a = &job->ck.arena, .err = job->err, .what = cf->config };
    ck_py_t *root = job->ck.pk.root, *cfg;
    val_t *yroot = NULL;
    size_t at;
    int rc;

    cfg = ck_py_map_get(root, cf->config, &at);
    if (cfg == NULL)
        return ck_err_set(job->err, CK_EPLUGIN, "config_override: no '%s' in the "
                          "checkpoint", cf->config);
    if (is_cfg(cfg, "DictConfig")) {
        e.omegaconf = 1;
    } else if (cfg->kind == CK_PY_STR) {
        y.lazy = 1; /* untrusted and maybe large: typed where used */
        yroot = yparse(&y, cfg->u.s.s, cfg->u.s.n);
        y.lazy = 0;
        if (yroot == NULL)
            return job->err->code;
        if (yroot->kind != V_MAP)
            return ck_err_set(job->err, CK_EPLUGIN,
                              "config_override: '%s' is not a YAML mapping",
                              cf->config);
    } else if (cfg->kind != CK_PY_DICT) {
        return ck_err_set(job->err, CK_EPLUGIN,
                          "config_override: '%s' is neither a DictConfig, a YAML "
                          "string nor a dict", cf->config);
    }
    if (cf->file != NULL) {
        char *text = NULL;
        size_t len = 0;
        val_t *m;
        ovr_t o;

        rc = read_file(&e, cf->file, &text, &len);
        if (rc < 0)
            return rc;
        y.what = cf->file;
        m = yparse(&y, text, len);
        if (m == NULL)
            return job->err->code;
        if (m->kind != V_MAP)
            return ck_err_set(job->err, CK_EPLUGIN,
                              "config_override: %s is not a YAML mapping", cf->file);
        memset(&o, 0, sizeof(o));
        o.line = cf->file;
        rc = merge(&e, cfg, yroot, m, &o);
        if (rc < 0)
            return rc;
    }
    for (size_t i = 0; i < cf->set.n; i++) {
        ovr_t o;

        rc = parse_override(&y, cf->set.v[i], &o);
        if (rc < 0)
            return rc;
        rc = yroot ? apply_yaml(&e, yroot, &o) : apply_py(&e, cfg, &o);
        if (rc < 0)
            return rc;
    }
    if (yroot != NULL) {
        ck_buf_t out = { 0 };
        ck_py_t *s;

        rc = yaml_dump(&e, yroot, &out);
        if (rc == 0) {
            s = ck_py_str(e.a, out.data ? (char *)out.data : "", out.len);
            if (s == NULL)
                rc = ck_err_set(job->err, CK_ENOMEM, "out of memory");
            else
                ck_py_mapping(root)->v[2 * at + 1] = s;
        }
        ck_buf_release(&out);
        return rc;
    }
    return 0;
}

const ck_plugin_t ck_plugin_config_override = {
    .name = "config_override",
    .summary = "change the saved experiment config (Hydra override grammar)",
    .conf_size = sizeof(override_conf_t),
    .directives = override_directives,
    .init_conf = override_init,
    .run = override_run,
};
