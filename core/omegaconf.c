/*
 * omegaconf.c -- OmegaConf's pickled node model: recognising DictConfig,
 * ListConfig and leaf nodes, reading their children, keys and values, and
 * building new nodes (with OmegaConf 2.2's Metadata / ContainerMetadata and
 * _parent links) and leaf values converted as OmegaConf's node classes
 * convert them.  Globals for new nodes come from the caller's callback, so
 * nothing here depends on a job or a checkpoint.
 */
#include "omegaconf.h"

#include "numpy.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- reading ---------------------------------------------------------- */

static int is_omc(const ck_py_t *p)
{
    return p != NULL && p->kind == CK_PY_NEWOBJ && p->u.o.fn != NULL &&
           p->u.o.fn->kind == CK_PY_GLOBAL &&
           strncmp(p->u.o.fn->u.g.module, "omegaconf.", 10) == 0;
}

int ck_omc_is(const ck_py_t *p, const char *cls)
{
    return is_omc(p) && strcmp(p->u.o.fn->u.g.name, cls) == 0;
}

const char *ck_omc_leaf_class(const ck_py_t *n)
{
    if (!is_omc(n) || strcmp(n->u.o.fn->u.g.module, "omegaconf.nodes") != 0)
        return NULL;
    return n->u.o.fn->u.g.name;
}

ck_py_vec_t *ck_omc_children(ck_py_t *c, int *is_dict)
{
    ck_py_t *content;
    int dict = ck_omc_is(c, "DictConfig");

    if (is_dict != NULL)
        *is_dict = dict;
    if (!dict && !ck_omc_is(c, "ListConfig"))
        return NULL;
    content = ck_py_map_get(ck_py_after(c)->state, "_content", NULL);
    if (content == NULL || content->kind != (dict ? CK_PY_DICT : CK_PY_LIST))
        return NULL;
    return &content->u.seq;
}

ck_py_t *ck_omc_key(ck_py_t *node)
{
    ck_py_t *md;

    if (!is_omc(node))
        return NULL;
    md = ck_py_map_get(ck_py_after(node)->state, "_metadata", NULL);
    if (md == NULL || md->kind != CK_PY_NEWOBJ)
        return NULL;
    return ck_py_map_get(ck_py_after(md)->state, "key", NULL);
}

/* The state of node's _metadata (a Metadata or ContainerMetadata). */
static ck_py_t *md_state(ck_py_t *node)
{
    ck_py_t *md;

    if (!is_omc(node))
        return NULL;
    md = ck_py_map_get(ck_py_after(node)->state, "_metadata", NULL);
    if (md == NULL || (md->kind != CK_PY_NEWOBJ && md->kind != CK_PY_REDUCE))
        return NULL;
    return ck_py_after(md)->state;
}

int ck_omc_readonly(ck_py_t *node)
{
    /* OmegaConf's Node._get_flag: its own flag, else its parent's */
    for (int depth = 0; node != NULL && depth < 256; depth++) {
        ck_py_t *st = md_state(node), *flags, *f, *root;

        if (st == NULL)
            return 0;
        flags = ck_py_map_get(st, "flags", NULL);
        f = flags != NULL ? ck_py_map_get(flags, "readonly", NULL) : NULL;
        if (f != NULL && f->kind == CK_PY_BOOL)
            return f->b;
        root = ck_py_map_get(st, "flags_root", NULL);
        if (root != NULL && root->kind == CK_PY_BOOL && root->b)
            return 0;
        node = ck_py_map_get(ck_py_after(node)->state, "_parent", NULL);
    }
    return 0;
}

const char *ck_omc_typed(ck_py_t *c, const char *which)
{
    ck_py_t *st = md_state(c), *t;

    t = st != NULL ? ck_py_map_get(st, which, NULL) : NULL;
    if (t == NULL || t->kind == CK_PY_NONE ||
        ck_py_global_is(t, "typing", "Any"))
        return NULL;
    if (t->kind != CK_PY_GLOBAL)
        return "a typing construct";
    /* protocol 2 names int and str as Python 2 did */
    if (ck_py_global_is(t, "builtins", "long"))
        return "int";
    if (ck_py_global_is(t, "builtins", "unicode"))
        return "str";
    return t->u.g.name;
}

int ck_omc_structured(ck_py_t *c)
{
    ck_py_t *st, *ref;

    if (!ck_omc_is(c, "DictConfig") && !ck_omc_is(c, "ListConfig"))
        return 0;
    st = md_state(c);
    ref = st != NULL ? ck_py_map_get(st, "ref_type", NULL) : NULL;
    return ref != NULL && ref->kind != CK_PY_NONE &&
           !ck_py_global_is(ref, "typing", "Any");
}

ck_py_t *ck_omc_unwrap(ck_py_t *p)
{
    ck_py_t *in;

    if (!is_omc(p))
        return p;
    in = ck_py_map_get(ck_py_after(p)->state, ck_omc_leaf_class(p) ? "_val" : "_content",
                       NULL);
    return in != NULL ? in : p;
}

static ck_yval_t *yv_str(ck_arena_t *a, const char *s)
{
    ck_pyval_t t = { .t = CK_PV_STR, .s = s, .n = strlen(s) };

    return ck_yval_of(a, &t);
}

/* Nodes one conversion visits at most: a pickle may share one container
 * many times over (memo), so a tree of a few nodes can stand for 2^64. */
#define YVAL_BUDGET (1u << 20)

static ck_yval_t *to_yval(ck_arena_t *a, ck_py_t *p, int depth, size_t *left)
{
    ck_py_vec_t *items;
    ck_pyval_t t;
    ck_yval_t *c;
    int is_dict = 0, seq;
    char np[128] = "<";

    if (depth > 64 || *left == 0)
        return yv_str(a, "<...>");
    --*left;
    p = ck_omc_unwrap(p);
    if (ck_pyval_of(p, &t))
        return ck_yval_of(a, &t);
    if (ck_np_describe(p, np + 1, sizeof(np) - 2)) {
        strcat(np, ">"); /* <ndarray float64 (3,)> */
        return yv_str(a, np);
    }
    items = ck_py_mapping(p);
    is_dict = items != NULL;
    seq = p->kind == CK_PY_LIST || p->kind == CK_PY_TUPLE;
    if (!is_dict && !seq)
        return yv_str(a, "<object>");
    if (seq)
        items = &p->u.seq;
    c = ck_arena_alloc(a, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->kind = is_dict ? CK_YV_MAP : CK_YV_SEQ;
    for (size_t i = 0; i < items->n; i++) {
        ck_yval_t *x = to_yval(a, items->v[i], depth + 1, left);

        if (x == NULL || ck_yval_push(a, c, x) < 0)
            return NULL;
    }
    return c;
}

ck_yval_t *ck_omc_yval(ck_arena_t *a, ck_py_t *p)
{
    size_t left = YVAL_BUDGET;

    return to_yval(a, p, 0, &left);
}

/* ---- building --------------------------------------------------------- */

static ck_py_t *g(const ck_omc_ctx_t *c, const char *m, const char *n)
{
    return c->global(c->ud, m, n);
}

static int dict_set(ck_arena_t *a, ck_py_t *d, const char *k, ck_py_t *v)
{
    ck_py_t *key = ck_py_str(a, k, strlen(k));

    if (key == NULL || v == NULL || ck_py_vec_push(a, &d->u.seq, key) < 0 ||
        ck_py_vec_push(a, &d->u.seq, v) < 0)
        return CK_ENOMEM;
    return 0;
}

static ck_py_t *newobj(ck_arena_t *a, ck_py_t *cls, ck_py_t *state)
{
    ck_py_t *o = ck_py_new(a, CK_PY_NEWOBJ);

    if (o == NULL || cls == NULL || ck_py_after_make(a, o) == NULL)
        return NULL;
    o->u.o.fn = cls;
    o->u.o.args = ck_py_new(a, CK_PY_TUPLE);
    o->u.o.after->state = state;
    return o->u.o.args ? o : NULL;
}

/* OmegaConf's Metadata or ContainerMetadata for a new node; elem (a
 * leaf's only) the element type of its typed container: ref_type and
 * object_type, not optional, as _maybe_wrap makes an element's node. */
static ck_py_t *metadata(const ck_omc_ctx_t *c, ck_py_t *key, int container,
                         int list, ck_py_t *elem)
{
    ck_arena_t *a = c->a;
    ck_py_t *st = ck_py_new(a, CK_PY_DICT), *rc, *args, *t, *f;
    ck_py_t *any = g(c, "typing", "Any");

    rc = ck_py_new(a, CK_PY_REDUCE);
    args = ck_py_new(a, CK_PY_TUPLE);
    t = ck_py_new(a, CK_PY_BOOL);
    f = ck_py_new(a, CK_PY_BOOL);
    if (st == NULL || rc == NULL || args == NULL || t == NULL || f == NULL ||
        any == NULL ||
        ck_py_vec_push(a, &args->u.seq, g(c, "__builtin__", "dict")) < 0)
        return NULL;
    t->b = elem == NULL;
    rc->u.o.fn = g(c, "collections", "defaultdict");
    rc->u.o.args = args;
    if (dict_set(a, st, "ref_type", elem != NULL ? elem : any) < 0 ||
        dict_set(a, st, "object_type",
                 elem != NULL ? elem
                 : container ? g(c, "__builtin__", list ? "list" : "dict")
                             : ck_py_new(a, CK_PY_NONE)) < 0 ||
        dict_set(a, st, "optional", t) < 0 || dict_set(a, st, "key", key) < 0 ||
        dict_set(a, st, "flags", ck_py_new(a, CK_PY_DICT)) < 0 ||
        dict_set(a, st, "flags_root", f) < 0 ||
        dict_set(a, st, "resolver_cache", rc) < 0)
        return NULL;
    if (container &&
        (dict_set(a, st, "key_type",
                  list ? g(c, "__builtin__", "long") : any) < 0 ||
         dict_set(a, st, "element_type", any) < 0))
        return NULL;
    return newobj(a,
                  g(c, "omegaconf.base",
                    container ? "ContainerMetadata" : "Metadata"),
                  st);
}

/* '???' (missing) and interpolations go in any node, as OmegaConf has it. */
static int special_str(const ck_pyval_t *t)
{
    return t->t == CK_PV_STR && t->s != NULL &&
           ((t->n == 3 && memcmp(t->s, "???", 3) == 0) ||
            strstr(t->s, "${") != NULL);
}

int ck_omc_set_content(ck_arena_t *a, ck_py_t *c, const ck_pyval_t *t)
{
    ck_py_t *st = ck_py_after(c)->state, *opt, *v;
    size_t at;

    if (t->t == CK_PV_NULL) {
        opt = ck_py_map_get(md_state(c), "optional", NULL);
        if (opt == NULL || opt->kind != CK_PY_BOOL || !opt->b)
            return 1;   /* not Optional[...] */
    } else if (!special_str(t)) {
        return 1;
    }
    if (ck_py_map_get(st, "_content", &at) == NULL)
        return 1;       /* not a container as OmegaConf pickles one */
    if (a == NULL)
        return 0;       /* asked only */
    if ((v = ck_pyval_py(a, t)) == NULL)
        return CK_ENOMEM;
    ck_py_mapping(st)->v[2 * at + 1] = v;
    /* and its object_type None, as _set_value leaves it */
    if (ck_py_map_get(md_state(c), "object_type", &at) != NULL) {
        if ((v = ck_py_new(a, CK_PY_NONE)) == NULL)
            return CK_ENOMEM;
        ck_py_mapping(md_state(c))->v[2 * at + 1] = v;
    }
    return 0;
}

int ck_omc_typed_leaf(const ck_omc_ctx_t *c, ck_py_t *container,
                      const ck_pyval_t *t, ck_py_t *key, ck_py_t **out)
{
    static const char *const cls[][2] = {
        { "int", "IntegerNode" }, { "float", "FloatNode" },
        { "bool", "BooleanNode" }, { "str", "StringNode" },
    };
    const char *type = ck_omc_typed(container, "element_type");
    ck_py_t *st, *val, *node, *elem;
    size_t i;
    int rc;

    for (i = 0; type != NULL && i < CK_ARRAY_SIZE(cls); i++)
        if (strcmp(type, cls[i][0]) == 0)
            break;
    if (type == NULL || i == CK_ARRAY_SIZE(cls))
        return CK_EUNSUPPORTED;
    if (t->t == CK_PV_NULL)
        return 1;   /* an element of Dict[str, int] is not Optional */
    if ((rc = ck_omc_leaf_value(c->a, cls[i][1], t, &val)) != 0 ||
        out == NULL)
        return rc;
    elem = ck_py_map_get(md_state(container), "element_type", NULL);
    st = ck_py_new(c->a, CK_PY_DICT);
    node = st != NULL ? newobj(c->a, g(c, "omegaconf.nodes", cls[i][1]), st)
                      : NULL;
    if (node == NULL ||
        dict_set(c->a, st, "_metadata", metadata(c, key, 0, 0, elem)) < 0 ||
        dict_set(c->a, st, "_parent", container) < 0 ||
        dict_set(c->a, st, "_val", val) < 0)
        return CK_ENOMEM;
    *out = node;
    return 0;
}

ck_py_t *ck_omc_from_yval(const ck_omc_ctx_t *c, const ck_yval_t *v,
                          ck_py_t *key, ck_py_t *parent)
{
    ck_arena_t *a = c->a;
    ck_py_t *node, *st, *content;
    int seq = v->kind == CK_YV_SEQ;

    st = ck_py_new(a, CK_PY_DICT);
    if (st == NULL)
        return NULL;
    if (v->kind == CK_YV_SCALAR) {
        node = newobj(a, g(c, "omegaconf.nodes", "AnyNode"), st);
        if (node == NULL ||
            dict_set(a, st, "_metadata", metadata(c, key, 0, 0, NULL)) < 0 ||
            dict_set(a, st, "_parent", parent) < 0 ||
            dict_set(a, st, "_val",
                     ck_pyval_py(a, ck_yval_type(a, v))) < 0)
            return NULL;
        return node;
    }
    node = newobj(a,
                  seq ? g(c, "omegaconf.listconfig", "ListConfig")
                      : g(c, "omegaconf.dictconfig", "DictConfig"),
                  st);
    content = ck_py_new(a, seq ? CK_PY_LIST : CK_PY_DICT);
    if (node == NULL || content == NULL ||
        dict_set(a, st, "_metadata", metadata(c, key, 1, seq, NULL)) < 0 ||
        dict_set(a, st, "_parent", parent) < 0 ||
        dict_set(a, st, "_content", content) < 0)
        return NULL;
    for (size_t i = 0; i < v->n; i++) {
        ck_py_t *k, *x;

        if (seq) {
            x = ck_omc_from_yval(c, v->v[i], ck_py_int(a, (int64_t)i), node);
            if (x == NULL || ck_py_vec_push(a, &content->u.seq, x) < 0)
                return NULL;
            continue;
        }
        k = ck_py_str(a, v->v[i]->text, v->v[i]->len);
        x = ck_omc_from_yval(c, v->v[i + 1], k, node);
        i++;
        if (k == NULL || x == NULL ||
            ck_py_vec_push(a, &content->u.seq, k) < 0 ||
            ck_py_vec_push(a, &content->u.seq, x) < 0)
            return NULL;
    }
    return node;
}

/* BooleanNode's reading of a str: 1 or 0, or -1 when it is none. */
static int bool_word(const char *s)
{
    static const char *const yes[] = { "yes", "y", "on", "true" };
    static const char *const no[] = { "no", "n", "off", "false" };

    for (size_t k = 0; k < CK_ARRAY_SIZE(yes); k++) {
        if (strcasecmp(s, yes[k]) == 0)
            return 1;
        if (strcasecmp(s, no[k]) == 0)
            return 0;
    }
    return -1;
}

int ck_omc_leaf_value(ck_arena_t *a, const char *cls, const ck_pyval_t *t,
                      ck_py_t **out)
{
    ck_pyval_t c = { 0 }, n;
    char buf[40];
    int rc;

    *out = NULL;
    if (t != NULL && (t->t == CK_PV_NULL || special_str(t))) {
        c = *t;
    } else if (!strcmp(cls, "AnyNode")) {
        if (t == NULL)
            return 1;
        c = *t;
    } else if (!strcmp(cls, "FloatNode")) { /* float(v): float, int, str */
        if (t == NULL || t->t == CK_PV_BOOL)
            return 1;
        c.t = CK_PV_FLOAT;
        if (t->t == CK_PV_FLOAT)
            c.f = t->f;
        else if (t->t == CK_PV_INT) /* correctly rounded, as float(int) */
            c.f = t->nbig ? strtod(t->dec, NULL) : (double)t->i;
        else if (ck_pyval_float_str(a, t->s, t->n, &c.f) != 0)
            return 1;
        if (t->t == CK_PV_INT && isinf(c.f))
            return 1; /* OverflowError: int too large to convert to float */
    } else if (!strcmp(cls, "IntegerNode")) { /* int(v): int, str */
        if (t == NULL || (t->t != CK_PV_INT && t->t != CK_PV_STR))
            return 1;
        c = *t;
        if (t->t == CK_PV_STR) {
            rc = ck_pyval_int_str(a, t->s, t->n, &c);
            if (rc != 0)
                return rc;
        }
    } else if (!strcmp(cls, "BooleanNode")) {
        /* bool; int != 0; str: int(str) != 0, yes/y/on/true, no/... */
        if (t == NULL || t->t == CK_PV_FLOAT)
            return 1;
        c.t = CK_PV_BOOL;
        if (t->t == CK_PV_BOOL) {
            c.b = t->b;
        } else if (t->t == CK_PV_INT) {
            c.b = t->nbig != 0 || t->i != 0;
        } else {
            rc = ck_pyval_int_str(a, t->s, t->n, &n);
            if (rc < 0)
                return rc;
            c.b = rc == 0 ? n.nbig != 0 || n.i != 0 : bool_word(t->s);
            if (c.b < 0)
                return 1;
        }
    } else if (!strcmp(cls, "StringNode")) { /* str(v) of a scalar */
        if (t == NULL)
            return 1;
        c.t = CK_PV_STR;
        c.s = t->s;
        c.n = t->n;
        if (t->t == CK_PV_INT) {
            c.s = t->dec;
        } else if (t->t == CK_PV_FLOAT) {
            ck_pyfloat_repr(t->f, buf, sizeof(buf));
            c.s = buf;
        } else if (t->t == CK_PV_BOOL) {
            c.s = t->b ? "True" : "False";
        }
        if (t->t != CK_PV_STR)
            c.n = strlen(c.s);
    } else {
        return CK_EUNSUPPORTED;
    }
    *out = ck_pyval_py(a, &c);
    return *out != NULL ? 0 : CK_ENOMEM;
}

/* A key of a mapping as a JSON object key: a str as itself, anything
 * else as its JSON text. */
static void json_key_of(ck_json_t *j, const ck_py_t *k)
{
    char buf[64];

    if (k != NULL && k->kind == CK_PY_STR) {
        ck_json_key(j, k->u.s.s);
    } else if (k != NULL && k->kind == CK_PY_INT && k->len == 0) {
        snprintf(buf, sizeof(buf), "%lld", (long long)k->u.i.v);
        ck_json_key(j, buf);
    } else {
        ck_json_key(j, "?");
    }
}

static void omc_json(ck_json_t *j, ck_py_t *p, int depth)
{
    ck_py_t *val = NULL;
    ck_py_vec_t *items;
    int dict = 0;

    if (p != NULL && p->kind == CK_PY_NEWOBJ)
        val = ck_py_map_get(ck_py_after(p)->state, "_val", NULL);
    if (val != NULL) {
        omc_json(j, val, depth);
        return;
    }
    if (p == NULL) {
        ck_json_null(j);
        return;
    }
    if (ck_pyval_json(j, p) == 0)
        return;
    /* a container: a DictConfig or ListConfig, or a plain dict or list */
    items = ck_omc_is(p, "DictConfig") || ck_omc_is(p, "ListConfig")
                ? ck_omc_children(p, &dict) : NULL;
    if (items == NULL && (p->kind == CK_PY_DICT || p->kind == CK_PY_LIST ||
                          p->kind == CK_PY_TUPLE)) {
        items = &p->u.seq;
        dict = p->kind == CK_PY_DICT;
    }
    if (items == NULL || depth >= 32) {
        ck_json_str(j, "<container>");
        return;
    }
    if (dict)
        ck_json_obj(j);
    else
        ck_json_arr(j);
    for (size_t i = 0; i < items->n; i++) {
        if (dict && i % 2 == 0) {
            json_key_of(j, items->v[i]);
            continue;
        }
        omc_json(j, items->v[i], depth + 1);
    }
    ck_json_end(j);
}

void ck_omc_json(ck_json_t *j, const ck_py_t *p)
{
    omc_json(j, (ck_py_t *)p, 0);
}
