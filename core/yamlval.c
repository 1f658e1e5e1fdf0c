/*
 * yamlval.c -- the YAML value tree: parsing with libyaml's event API,
 * scalar typing (YAML 1.1 as OmegaConf's loader, or Hydra's override
 * grammar), conversion to Python values and JSON, and the emitter.
 *
 * The typing regexes are compiled once per process, on first use, under
 * pthread_once; compiled, they are only read (glibc's regexec locks
 * internally), so parallel jobs share them.  A lazily typed tree caches
 * each scalar's type in the node: one tree belongs to one thread.
 */
#include "yamlval.h"

#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

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

/* PyYAML's timestamp resolver (its dumper's, so OmegaConf.to_yaml's). */
#define Y_TS "^([0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}" \
    "([Tt]|[ \t]+)[0-9]{1,2}:[0-9]{2}:[0-9]{2}(\\.[0-9]*)?" \
    "([ \t]*(Z|[-+][0-9]{1,2}(:[0-9]{2})?))?)$"

enum { RX_H_INT, RX_H_FLOAT, RX_Y_NULL, RX_Y_BOOL, RX_Y_INT, RX_Y_FLOAT,
       RX_Y_TS, RX_N };

/* pattern, case-insensitive */
static const struct {
    const char *re;
    int icase;
} rx_src[RX_N] = {
    { H_INT, 0 },  { H_FLOAT, 1 }, { Y_NULL, 0 },
    { Y_BOOL, 0 }, { Y_INT, 0 },   { Y_FLOAT, 0 }, { Y_TS, 0 },
};

/* Written once under rx_once, read-only after. */
static pthread_once_t rx_once = PTHREAD_ONCE_INIT;
static regex_t rx[RX_N];
static int rx_ok[RX_N];

static void rx_init(void)
{
    for (int i = 0; i < RX_N; i++)
        rx_ok[i] = regcomp(&rx[i], rx_src[i].re,
                           REG_EXTENDED | REG_NOSUB |
                               (rx_src[i].icase ? REG_ICASE : 0)) == 0;
}

static int match(int which, const char *s)
{
    pthread_once(&rx_once, rx_init);
    return rx_ok[which] && regexec(&rx[which], s, 0, NULL, 0) == 0;
}

/* ---- the tree --------------------------------------------------------- */

int ck_yval_push(ck_arena_t *a, ck_yval_t *c, ck_yval_t *x)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        ck_yval_t **nv = ck_arena_alloc(a, cap * sizeof(*nv));

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

ck_yval_t *ck_yval_copy(ck_arena_t *a, const ck_yval_t *v)
{
    ck_yval_t *c = ck_arena_alloc(a, sizeof(*c));

    if (c == NULL)
        return NULL;
    *c = *v;
    c->v = NULL;
    c->n = c->cap = 0;
    if (v->kind == CK_YV_SCALAR) {
        c->text = ck_arena_strndup(a, v->text, v->len);
        return c->text != NULL ? c : NULL;
    }
    for (size_t i = 0; i < v->n; i++) {
        ck_yval_t *x = ck_yval_copy(a, v->v[i]);

        if (x == NULL || ck_yval_push(a, c, x) < 0)
            return NULL;
    }
    return c;
}

ck_yval_t *ck_yval_scalar(ck_arena_t *a, const char *s, size_t n, int plain)
{
    ck_yval_t *v = ck_arena_alloc(a, sizeof(*v));

    if (v == NULL)
        return NULL;
    v->text = ck_arena_strndup(a, s, n);
    if (v->text == NULL)
        return NULL;
    v->len = n;
    v->plain = plain;
    v->ty.s = v->text;
    v->ty.n = n;
    return v;
}

int ck_yval_find(const ck_yval_t *m, const char *k)
{
    for (size_t i = 0; i + 1 < m->n; i += 2)
        if (m->v[i]->kind == CK_YV_SCALAR && strcmp(m->v[i]->text, k) == 0)
            return (int)(i / 2);
    return -1;
}

/* ---- typing ----------------------------------------------------------- */

/* s without its '_', NUL-terminated, in the arena. */
static char *unscore(ck_arena_t *a, const char *s)
{
    size_t n = strlen(s);
    char *o = ck_arena_alloc(a, n + 1), *p = o;

    if (o == NULL)
        return NULL;
    for (size_t k = 0; k < n; k++)
        if (s[k] != '_')
            *p++ = s[k];
    *p = '\0';
    return o;
}

/* A float from text already matched: '_' ignored, YAML's .inf and 60s. */
static int float_text(ck_yaml_ctx_t *y, const char *s, ck_pyval_t *t)
{
    char *d = unscore(y->a, s), *p;
    double part[64], base = 1;
    int np = 0;

    if (d == NULL)
        return ck_err_set(y->err, CK_ENOMEM, "out of memory");
    p = d + (d[0] == '-' || d[0] == '+');
    t->t = CK_PV_FLOAT;
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

/* An int from text already matched by H_INT (hydra) or Y_INT. */
static int int_text(ck_yaml_ctx_t *y, int hydra, const char *s,
                    ck_pyval_t *t)
{
    char *d = unscore(y->a, s), *p;
    int neg, rc, base = 10;

    if (d == NULL)
        return ck_err_set(y->err, CK_ENOMEM, "out of memory");
    neg = d[0] == '-';
    p = d + (d[0] == '-' || d[0] == '+');
    if (!hydra && strchr(p, ':') != NULL) { /* 1:30 is 90, as PyYAML */
        int64_t v = 0;

        for (char *q = p;; q++) {
            if (__builtin_mul_overflow(v, 60, &v) ||
                __builtin_add_overflow(v, strtoll(q, &q, 10), &v))
                return 0; /* beyond int64: left a string */
            if (*q != ':')
                break;
        }
        memset(t, 0, sizeof(*t));
        t->t = CK_PV_INT;
        t->i = neg ? -v : v;
        t->dec = ck_arena_printf(y->a, "%lld", (long long)t->i);
        return t->dec ? 0 : ck_err_set(y->err, CK_ENOMEM, "out of memory");
    }
    if (!hydra && (!strncmp(p, "0b", 2) || !strncmp(p, "0x", 2))) {
        base = p[1] == 'b' ? 2 : 16;
        p += 2;
    } else if (!hydra && p[0] == '0' && p[1] != '\0') {
        base = 8;
    }
    rc = ck_pyint_digits(y->a, neg, p, base, t);
    if (rc == 1 && strlen(p) > CK_PYINT_MAX_DIGITS)
        return ck_err_set(y->err, CK_EPLUGIN,
                          "%.40s%s: an int of more than %d digits", y->what,
                          strlen(y->what) > 40 ? "..." : "",
                          CK_PYINT_MAX_DIGITS);
    if (rc == 1) { /* "0b_": PyYAML fails too; a string here */
        t->t = CK_PV_STR;
        return 0;
    }
    return rc < 0 ? ck_err_set(y->err, CK_ENOMEM, "out of memory") : 0;
}

/* Type a scalar: Hydra's grammar for override values, else YAML's. */
static int type_scalar(ck_yaml_ctx_t *y, ck_yval_t *v)
{
    ck_pyval_t *t = &v->ty;
    const char *s = v->text;

    memset(t, 0, sizeof(*t));
    t->t = CK_PV_STR;
    t->s = v->text;
    t->n = v->len;
    if (!v->plain)
        return 0;
    if (v->hydra) {
        if (strcmp(s, "~") == 0)
            return ck_err_set(y->err, CK_EPLUGIN,
                              "%s: '~' is not a value in Hydra's grammar "
                              "(null is)", y->what);
        if (strcasecmp(s, "null") == 0) {
            t->t = CK_PV_NULL;
        } else if (!strcasecmp(s, "true") || !strcasecmp(s, "false")) {
            t->t = CK_PV_BOOL;
            t->b = (s[0] | 0x20) == 't';
        } else if (match(RX_H_INT, s)) {
            return int_text(y, 1, s, t);
        } else if (match(RX_H_FLOAT, s)) {
            return float_text(y, s, t);
        }
        return 0;
    }
    if (match(RX_Y_NULL, s)) {
        t->t = CK_PV_NULL;
    } else if (match(RX_Y_BOOL, s)) {
        t->t = CK_PV_BOOL;
        t->b = strchr("yYtT", s[0]) != NULL || (s[1] | 0x20) == 'n';
    } else if (match(RX_Y_INT, s)) {
        return int_text(y, 0, s, t);
    } else if (match(RX_Y_FLOAT, s)) {
        return float_text(y, s, t);
    }
    return 0;
}

const ck_pyval_t *ck_yval_type(ck_arena_t *a, const ck_yval_t *cv)
{
    ck_yval_t *v = (ck_yval_t *)cv; /* the type is a cache */
    ck_err_t err = { 0 };
    ck_yaml_ctx_t y = { .a = a, .err = &err, .what = "" };

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

int ck_yaml_reads_str(const char *s)
{
    return !match(RX_Y_NULL, s) && !match(RX_Y_BOOL, s) &&
           !match(RX_Y_INT, s) && !match(RX_Y_FLOAT, s) &&
           strcmp(s, "<<") != 0 && strcmp(s, "=") != 0;
}

/* ---- parsing ---------------------------------------------------------- */

static ck_yval_t *parse_node(ck_yaml_ctx_t *y, yaml_parser_t *p,
                             yaml_event_t *ev, int depth)
{
    ck_yval_t *v = ck_arena_alloc(y->a, sizeof(*v));
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
    /* a tag (!!str 123) decides a type the re-emitted text would lose */
    if ((ev->type == YAML_SCALAR_EVENT && ev->data.scalar.tag != NULL) ||
        (ev->type == YAML_SEQUENCE_START_EVENT &&
         ev->data.sequence_start.tag != NULL) ||
        (ev->type == YAML_MAPPING_START_EVENT &&
         ev->data.mapping_start.tag != NULL)) {
        ck_err_set(y->err, CK_EPLUGIN, "%s: YAML tags (such as !!str) are "
                   "not supported", y->what);
        return NULL;
    }
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        v->kind = CK_YV_SCALAR;
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
        v->kind = ev->type == YAML_SEQUENCE_START_EVENT ? CK_YV_SEQ : CK_YV_MAP;
        v->flow =
            v->kind == CK_YV_SEQ
                ? ev->data.sequence_start.style == YAML_FLOW_SEQUENCE_STYLE
                : ev->data.mapping_start.style == YAML_FLOW_MAPPING_STYLE;
        end = v->kind == CK_YV_SEQ ? YAML_SEQUENCE_END_EVENT
                                   : YAML_MAPPING_END_EVENT;
        for (;;) {
            yaml_event_t e;
            ck_yval_t *c;

            if (!yaml_parser_parse(p, &e)) {
                ck_err_set(y->err, CK_EPLUGIN, "%s: YAML: %s", y->what,
                           p->problem ? p->problem : "syntax error");
                return NULL;
            }
            if ((int)e.type == end) {
                yaml_event_delete(&e);
                return v;
            }
            c = parse_node(y, p, &e, depth + 1);
            yaml_event_delete(&e);
            if (c != NULL && v->kind == CK_YV_MAP && v->n % 2 == 0 &&
                c->kind != CK_YV_SCALAR) {
                /* a config's keys are names: OmegaConf has no others */
                ck_err_set(y->err, CK_EPLUGIN,
                           "%s: a YAML mapping key that is not a scalar",
                           y->what);
                return NULL;
            }
            if (c == NULL)
                return NULL;
            if (ck_yval_push(y->a, v, c) < 0) {
                ck_err_set(y->err, CK_ENOMEM, "out of memory");
                return NULL;
            }
        }
    case YAML_ALIAS_EVENT:
        ck_err_set(y->err, CK_EUNSUPPORTED,
                   "%s: YAML aliases are not supported", y->what);
        return NULL;
    default:
        ck_err_set(y->err, CK_EPLUGIN, "%s: unexpected YAML", y->what);
        return NULL;
    }
}

ck_yval_t *ck_yaml_parse(ck_yaml_ctx_t *y, const char *text, size_t len)
{
    yaml_parser_t p;
    yaml_event_t ev;
    ck_yval_t *root = NULL;
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
                ck_err_set(y->err, CK_EPLUGIN,
                           "%s: more than one YAML document", y->what);
                done = 2;
                break;
            }
            root = parse_node(y, &p, &ev, 0);
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
        root = ck_yval_scalar(y->a, "", 0, 1);
        if (root == NULL) {
            ck_err_set(y->err, CK_ENOMEM, "out of memory");
            return NULL;
        }
        root->hydra = y->hydra;
        root->untyped = y->lazy;
        if (!y->lazy && type_scalar(y, root) < 0)
            return NULL;
    }
    return root;
}

/* ---- Python values and JSON ------------------------------------------- */

ck_py_t *ck_yval_py(ck_arena_t *a, const ck_yval_t *v, int typed_keys)
{
    ck_py_t *c;

    if (v->kind == CK_YV_SCALAR)
        return ck_pyval_py(a, ck_yval_type(a, v));
    c = ck_py_new(a, v->kind == CK_YV_SEQ ? CK_PY_LIST : CK_PY_DICT);
    for (size_t i = 0; c != NULL && i < v->n; i++) {
        ck_py_t *x = v->kind == CK_YV_MAP && i % 2 == 0 && !typed_keys
                         ? ck_py_str(a, v->v[i]->text, v->v[i]->len)
                         : ck_yval_py(a, v->v[i], typed_keys);

        if (x == NULL || ck_py_vec_push(a, &c->u.seq, x) < 0)
            return NULL;
    }
    return c;
}

void ck_yval_json(ck_json_t *j, ck_arena_t *a, const ck_yval_t *v)
{
    const ck_pyval_t *t;

    if (v == NULL) {
        ck_json_null(j);
        return;
    }
    if (v->kind == CK_YV_SEQ || v->kind == CK_YV_MAP) {
        if (v->kind == CK_YV_SEQ)
            ck_json_arr(j);
        else
            ck_json_obj(j);
        for (size_t i = 0; i < v->n; i++) {
            if (v->kind == CK_YV_MAP && i % 2 == 0) {
                ck_json_key(j, v->v[i]->text ? v->v[i]->text : "");
                continue;
            }
            ck_yval_json(j, a, v->v[i]);
        }
        ck_json_end(j);
        return;
    }
    t = ck_yval_type(a, v);
    switch (t->t) {
    case CK_PV_NULL: ck_json_null(j); break;
    case CK_PV_BOOL: ck_json_bool(j, t->b); break;
    case CK_PV_INT:
        /* past int64 as a string: JSON readers (jansson, the daemon's
         * own) refuse a bigger number */
        if (t->big == NULL)
            ck_json_int(j, t->i);
        else
            ck_json_str(j, t->dec);
        break;
    case CK_PV_FLOAT: ck_json_double(j, t->f); break;
    default: ck_json_strn(j, v->text, v->len);
    }
}

/* ---- values as PyYAML dumps them -------------------------------------- */

/* The text PyYAML's represent_float gives d. */
static void pyyaml_float(double d, char *out, size_t cap)
{
    char r[40];
    char *e;

    if (isnan(d)) {
        snprintf(out, cap, ".nan");
        return;
    }
    if (isinf(d)) {
        snprintf(out, cap, d < 0 ? "-.inf" : ".inf");
        return;
    }
    ck_pyfloat_repr(d, r, sizeof(r));
    e = strchr(r, 'e');
    if (strchr(r, '.') == NULL && e != NULL)
        snprintf(out, cap, "%.*s.0%s", (int)(e - r), r, e);
    else
        snprintf(out, cap, "%s", r);
}

/* OmegaConfDumper.str_representer quotes a str that is one of YAML 1.2's
 * bool words (and y/n), or that Python's int() or float() accepts. */
static int omc_quotes(ck_arena_t *a, const char *s, size_t n)
{
    static const char *const words[] = {
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
        "true", "True", "TRUE", "false", "False", "FALSE",
        "on", "On", "ON", "off", "Off", "OFF",
    };
    ck_pyval_t t;
    double f;

    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strlen(words[i]) == n && memcmp(words[i], s, n) == 0)
            return 1;
    /* PyYAML's dumper also resolves timestamps, '<<' and '=' */
    if (match(RX_Y_TS, s) || strcmp(s, "<<") == 0 || strcmp(s, "=") == 0)
        return 1;
    return ck_pyval_int_str(a, s, n, &t) == 0 ||
           ck_pyval_float_str(a, s, n, &f) == 0;
}

ck_yval_t *ck_yval_of(ck_arena_t *a, const ck_pyval_t *t)
{
    char buf[48];
    const char *s = buf;
    size_t n;
    ck_yval_t *v;

    switch (t->t) {
    case CK_PV_NULL: s = "null"; break;
    case CK_PV_BOOL: s = t->b ? "true" : "false"; break;
    case CK_PV_INT:
        if (t->dec != NULL)
            s = t->dec;
        else if (t->big != NULL)
            s = ck_pyint_dec(a, t->big, t->nbig);
        else
            snprintf(buf, sizeof(buf), "%lld", (long long)t->i);
        if (s == NULL)
            return NULL;
        break;
    case CK_PV_FLOAT: pyyaml_float(t->f, buf, sizeof(buf)); break;
    default: s = t->s ? t->s : "";
    }
    n = t->t == CK_PV_STR ? t->n : strlen(s);
    v = ck_yval_scalar(a, s, n, 1);
    if (v == NULL)
        return NULL;
    v->hydra = 1;
    v->ty = *t;
    if (t->t == CK_PV_STR) {
        v->ty.s = v->text;
        v->hydra = 0;
        v->plain = memchr(v->text, '\0', n) == NULL &&
                   ck_yaml_reads_str(v->text) && !omc_quotes(a, v->text, n);
    } else if (t->t == CK_PV_INT) {
        v->ty.dec = v->text;
    }
    return v;
}

int ck_yval_retype(ck_arena_t *a, ck_yval_t *v)
{
    if (v->kind != CK_YV_SCALAR) {
        for (size_t i = 0; i < v->n; i++)
            if (ck_yval_retype(a, v->v[i]) < 0)
                return CK_ENOMEM;
        return 0;
    }
    {
        const ck_pyval_t *t = ck_yval_type(a, v);
        ck_yval_t *x;

        if (t == NULL)
            return CK_ENOMEM;
        x = ck_yval_of(a, t);
        if (x == NULL)
            return CK_ENOMEM;
        *v = *x;
    }
    return 0;
}

/* ---- emitting --------------------------------------------------------- */

static int ywrite(void *data, unsigned char *buf, size_t size)
{
    return ck_buf_put(data, buf, size) == 0;
}

/* The text and style a scalar is written with (see ck_yaml_emit). */
static const char *yscalar(const ck_yval_t *v, char *buf, size_t cap,
                           int *plain)
{
    const ck_pyval_t *t = &v->ty;

    *plain = v->plain;
    if (!v->hydra || !v->plain)
        return v->text;
    switch (t->t) {
    case CK_PV_NULL: return "null";
    case CK_PV_BOOL: return t->b ? "true" : "false";
    case CK_PV_INT: return t->dec;
    case CK_PV_FLOAT:
        if (match(RX_Y_FLOAT, v->text))
            return v->text;
        if (isnan(t->f))
            return ".nan";
        if (isinf(t->f))
            return t->f < 0 ? "-.inf" : ".inf";
        ck_pyfloat_repr(t->f, buf, cap);
        return buf;
    default:
        *plain = ck_yaml_reads_str(v->text);
        return v->text;
    }
}

static int yemit(yaml_emitter_t *em, const ck_yval_t *v)
{
    yaml_event_t ev;
    int ok;

    if (v->kind == CK_YV_SCALAR) {
        yaml_scalar_style_t style = (yaml_scalar_style_t)v->style;
        char buf[40];
        int plain;
        const char *text = yscalar(v, buf, sizeof(buf), &plain);
        size_t len = text == v->text ? v->len : strlen(text);

        if (!plain && (v->plain || style == YAML_ANY_SCALAR_STYLE))
            style = YAML_SINGLE_QUOTED_SCALAR_STYLE;
        if (plain)
            style = YAML_PLAIN_SCALAR_STYLE;
        /* a quoted scalar reads as a str: no tag needed when libyaml
         * quotes one meant to be plain ('a: b') */
        ok = yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)text,
                                          (int)len, plain, 1, style);
        return ok && yaml_emitter_emit(em, &ev);
    }
    if (v->kind == CK_YV_SEQ)
        ok = yaml_sequence_start_event_initialize(
            &ev, NULL, NULL, 1,
            v->flow ? YAML_FLOW_SEQUENCE_STYLE : YAML_BLOCK_SEQUENCE_STYLE);
    else
        ok = yaml_mapping_start_event_initialize(
            &ev, NULL, NULL, 1,
            v->flow ? YAML_FLOW_MAPPING_STYLE : YAML_BLOCK_MAPPING_STYLE);
    if (!ok || !yaml_emitter_emit(em, &ev))
        return 0;
    for (size_t i = 0; i < v->n; i++)
        if (!yemit(em, v->v[i]))
            return 0;
    if (v->kind == CK_YV_SEQ)
        ok = yaml_sequence_end_event_initialize(&ev);
    else
        ok = yaml_mapping_end_event_initialize(&ev);
    return ok && yaml_emitter_emit(em, &ev);
}

static int emit(const ck_yval_t *root, const char *what, ck_buf_t *out,
                ck_err_t *err, int width)
{
    yaml_emitter_t em;
    yaml_event_t ev;
    int ok;

    if (!yaml_emitter_initialize(&em))
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    yaml_emitter_set_output(&em, ywrite, out);
    yaml_emitter_set_unicode(&em, 1);
    yaml_emitter_set_width(&em, width);
    ok = yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) &&
         yaml_emitter_emit(&em, &ev) &&
         yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) &&
         yaml_emitter_emit(&em, &ev) && yemit(&em, root) &&
         yaml_document_end_event_initialize(&ev, 1) &&
         yaml_emitter_emit(&em, &ev) &&
         yaml_stream_end_event_initialize(&ev) && yaml_emitter_emit(&em, &ev);
    if (!ok)
        ck_err_set(err, CK_EPLUGIN, "%s: emitting YAML: %s", what,
                   em.problem ? em.problem : "failed");
    yaml_emitter_delete(&em);
    return ok ? 0 : CK_EPLUGIN;
}

int ck_yaml_emit(const ck_yval_t *root, const char *what, ck_buf_t *out,
                 ck_err_t *err)
{
    return emit(root, what, out, err, -1);
}

int ck_yaml_emit_pyyaml(const ck_yval_t *root, const char *what,
                        ck_buf_t *out, ck_err_t *err)
{
    return emit(root, what, out, err, 80);
}
