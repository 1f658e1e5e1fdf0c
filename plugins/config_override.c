/*
 * config_override -- change the experiment configuration saved in the
 * checkpoint, with Hydra's override grammar:
 *
 *   set = key=value      change an existing key (a typo fails the job)
 *   set = +key=value     add a key that must not exist (parents are created)
 *   set = ++key=value    add or change
 *   set = ~key           remove
 *   file = PATH.yaml     deep-merged first (mappings merge, the rest replace)
 *
 * VALUE is YAML read with libyaml and typed as OmegaConf types it: null, true
 * and false, ints, floats (1e-5 included), quoted strings stay strings,
 * [a, b] and {k: v} are collections, ${...} is kept verbatim.
 *
 * The config ('config = KEY', default xp.cfg) may be one of three things, and
 * each stays what it was:
 *  - a pickled OmegaConf DictConfig: values change inside their nodes; new
 *    keys get new nodes with OmegaConf's metadata and _parent links; typed
 *    nodes (FloatNode, IntegerNode, BooleanNode, StringNode) validate the
 *    value the way OmegaConf would;
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
#include <yaml.h>

#define MAX_PATH 32

typedef struct {
    char *config;
    ck_strlist_t set;
    char *file;
} override_conf_t;

static int check_set(const char *value, ck_err_t *err);

static const ck_directive_t override_directives[] = {
    { "config", ck_conf_set_str, offsetof(override_conf_t, config), "xp.cfg",
      0, "top-level key of the config" },
    { "set", ck_conf_set_lines, offsetof(override_conf_t, set), NULL,
      CK_DIR_MULTI, "key=value, +key=value, ++key=value or ~key", check_set },
    { "file", ck_conf_set_str, offsetof(override_conf_t, file), NULL, 0,
      "a YAML mapping deep-merged into the config first" },
    { NULL, NULL, 0, NULL, 0, NULL },
};

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
    val_t **v;       /* seq items; map k0 v0 k1 v1 */
    size_t n, cap;
};

typedef struct {
    ck_arena_t *a;
    ck_err_t *err;
    const char *what;
} yctx_t;

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
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        v->kind = V_SCALAR;
        v->text = ck_arena_strndup(y->a, (char *)ev->data.scalar.value,
                                   ev->data.scalar.length);
        v->len = ev->data.scalar.length;
        v->style = ev->data.scalar.style;
        v->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        return v->text ? v : NULL;
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
            if (c == NULL || vpush(y->a, v, c) < 0)
                return NULL;
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

/* Parse one YAML document; an empty one is the empty plain scalar. */
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
        if (root != NULL) {
            root->text = "";
            root->plain = 1;
        }
    }
    return root;
}

/* ---- typing scalars as OmegaConf does --------------------------------- */

enum { T_NULL, T_BOOL, T_INT, T_FLOAT, T_STR };

typedef struct {
    int t;
    int b;
    int64_t i;
    double f;
} typed_t;

static int match(const char *re, const char *s)
{
    regex_t r;
    int ok;

    if (regcomp(&r, re, REG_EXTENDED | REG_NOSUB | REG_ICASE) != 0)
        return 0;
    ok = regexec(&r, s, 0, NULL, 0) == 0;
    regfree(&r);
    return ok;
}

static typed_t type_of(const val_t *v)
{
    typed_t t = { T_STR, 0, 0, 0 };
    char buf[128], *o = buf;

    if (!v->plain)
        return t;
    if (!strcmp(v->text, "") || !strcmp(v->text, "~") ||
        match("^null$", v->text)) {
        t.t = T_NULL;
    } else if (match("^(true|false)$", v->text)) {
        t.t = T_BOOL;
        t.b = v->text[0] == 't' || v->text[0] == 'T';
    } else if (v->len < sizeof(buf) && match("^[-+]?[0-9][0-9_]*$", v->text)) {
        for (const char *s = v->text; *s; s++)
            if (*s != '_')
                *o++ = *s;
        *o = '\0';
        errno = 0;
        t.i = strtoll(buf, NULL, 10);
        t.t = errno == 0 ? T_INT : T_STR;
    } else if (v->len < sizeof(buf) &&
               (match("^[-+]?([0-9][0-9_]*)?\\.?[0-9]*([eE][-+]?[0-9]+)?$", v->text) &&
                /* a digit before any exponent: "e5" is a string */
                match("^[-+]?\\.?[0-9]", v->text) && match("[.eE]", v->text))) {
        for (const char *s = v->text; *s; s++)
            if (*s != '_')
                *o++ = *s;
        *o = '\0';
        t.f = strtod(buf, NULL);
        t.t = T_FLOAT;
    } else if (match("^[-+]?\\.?inf$", v->text)) {
        t.t = T_FLOAT;
        t.f = v->text[0] == '-' ? -INFINITY : INFINITY;
    } else if (match("^\\.?nan$", v->text)) {
        t.t = T_FLOAT;
        t.f = NAN;
    }
    return t;
}

/* ---- overrides -------------------------------------------------------- */

enum { OP_SET, OP_ADD, OP_FORCE, OP_DEL };

typedef struct {
    int op;
    char *path[MAX_PATH];
    size_t depth;
    val_t *value;
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
    if (o->op == OP_DEL)
        return 0;
    eq++;
    if (!strncmp(eq, "${", 2) && eq[strlen(eq) - 1] == '}') {
        o->value = ck_arena_alloc(y->a, sizeof(*o->value));
        if (o->value == NULL)
            return ck_err_set(y->err, CK_ENOMEM, "out of memory");
        o->value->text = ck_arena_strdup(y->a, eq);
        o->value->len = strlen(eq);
        return 0; /* an interpolation: a string, kept verbatim */
    }
    y->what = line;
    o->value = yparse(y, eq, strlen(eq));
    return o->value ? 0 : y->err->code ? y->err->code : CK_ECONFIG;
}

static int check_set(const char *value, ck_err_t *err)
{
    ck_arena_t a = { 0 };
    yctx_t y = { &a, err, "" };
    ovr_t o;
    int rc = parse_override(&y, value, &o);

    ck_arena_release(&a);
    if (rc < 0 && err->code != CK_ENOMEM)
        err->code = CK_ECONFIG;
    return rc < 0 ? err->code : 0;
}

static int override_init(void *conf, ck_err_t *err)
{
    override_conf_t *cf = conf;
    ck_arena_t a = { 0 };
    yctx_t y = { &a, err, "" };
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

static void json_py(ck_json_t *j, ck_py_t *p);

static void json_val(ck_json_t *j, const val_t *v)
{
    typed_t t;

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
            json_val(j, v->v[i]);
        }
        ck_json_end(j);
        return;
    }
    t = type_of(v);
    switch (t.t) {
    case T_NULL: ck_json_null(j); break;
    case T_BOOL: ck_json_bool(j, t.b); break;
    case T_INT: ck_json_int(j, t.i); break;
    case T_FLOAT: ck_json_double(j, t.f); break;
    default: ck_json_strn(j, v->text, v->len);
    }
}

/* The value an OmegaConf node or a plain value holds, as JSON. */
static void json_py(ck_json_t *j, ck_py_t *p)
{
    ck_py_t *val;

    if (p == NULL) {
        ck_json_null(j);
        return;
    }
    switch ((ck_py_kind_t)p->kind) {
    case CK_PY_NONE: ck_json_null(j); return;
    case CK_PY_BOOL: ck_json_bool(j, p->b); return;
    case CK_PY_INT:
        if (p->u.i.nbig)
            ck_json_str(j, "<big int>");
        else
            ck_json_int(j, p->u.i.v);
        return;
    case CK_PY_FLOAT: ck_json_double(j, ck_py_float_value(p)); return;
    case CK_PY_STR: ck_json_strn(j, p->u.s.s, p->u.s.n); return;
    case CK_PY_NEWOBJ:
        val = ck_py_map_get(p->u.o.state, "_val", NULL);
        if (val != NULL) {
            json_py(j, val);
            return;
        }
        /* fall through */
    default:
        ck_json_str(j, "<container>");
    }
}

static void report(ck_job_t *job, const char *config, const ovr_t *o,
                   const char *op, ck_py_t *old_py, const val_t *old_v,
                   int have_old)
{
    ck_json_t *j = job->changes;
    char key[1024] = "";

    for (size_t i = 0; i < o->depth; i++)
        snprintf(key + strlen(key), sizeof(key) - strlen(key), "%s%s",
                 i ? "." : "", o->path[i]);
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
            json_val(j, old_v);
        else
            json_py(j, old_py);
    }
    if (o->op != OP_DEL) {
        ck_json_key(j, "new");
        json_val(j, o->value);
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

static ck_py_t *scalar_py(ed_t *e, const val_t *v)
{
    typed_t t = type_of(v);
    ck_py_t *p;

    switch (t.t) {
    case T_NULL:
        return ck_py_new(e->a, CK_PY_NONE);
    case T_BOOL:
        p = ck_py_new(e->a, CK_PY_BOOL);
        if (p != NULL)
            p->b = t.b;
        return p;
    case T_INT:
        return ck_py_int(e->a, t.i);
    case T_FLOAT:
        return ck_py_float(e->a, t.f);
    default:
        return ck_py_str(e->a, v->text, v->len);
    }
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

/* Set a typed node's _val the way OmegaConf validates it. */
static int set_leaf(ed_t *e, ck_py_t *node, const val_t *v, const ovr_t *o)
{
    const char *cls = leaf_class(node);
    ck_py_vec_t *st = ck_py_mapping(node->u.o.state);
    typed_t t = type_of(v);
    ck_py_t *nv = NULL;
    size_t at;

    if (st == NULL || ck_py_map_get(node->u.o.state, "_val", &at) == NULL)
        return ck_err_set(e->err, CK_EPLUGIN, "config_override: %s: malformed node",
                          o->line);
    if (v->kind == V_SCALAR && !strncmp(v->text, "${", 2))
        t.t = T_STR; /* interpolations go in any node */
    else if (!strcmp(cls, "FloatNode")) {
        if (t.t == T_INT)
            nv = ck_py_float(e->a, (double)t.i);
        else if (t.t == T_FLOAT || t.t == T_NULL)
            nv = scalar_py(e, v);
        else
            goto bad;
    } else if (!strcmp(cls, "IntegerNode")) {
        if (t.t != T_INT && t.t != T_NULL)
            goto bad;
    } else if (!strcmp(cls, "BooleanNode")) {
        if (t.t == T_INT && (t.i == 0 || t.i == 1)) {
            nv = ck_py_new(e->a, CK_PY_BOOL);
            if (nv != NULL)
                nv->b = t.i == 1;
        } else if (t.t != T_BOOL && t.t != T_NULL)
            goto bad;
    } else if (!strcmp(cls, "StringNode")) {
        if (v->kind != V_SCALAR)
            goto bad;
        if (t.t != T_NULL)
            nv = ck_py_str(e->a, v->text, v->len);
    } else if (strcmp(cls, "AnyNode") != 0) {
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
                      o->line, v->text ? v->text : "collection", cls);
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
            val_t empty = { V_MAP, NULL, 0, 0, 0, 0, NULL, 0, 0 };
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
        int rc;

        report(e->job, e->config, o, "set", old, NULL, 1);
        if (e->omegaconf && o->value->kind == V_SCALAR && leaf_class(old) != NULL)
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

static int yemit(yaml_emitter_t *em, const val_t *v)
{
    yaml_event_t ev;
    int ok;

    if (v->kind == V_SCALAR) {
        yaml_scalar_style_t style = (yaml_scalar_style_t)v->style;
        typed_t t = type_of(v);

        if (!v->plain && style == YAML_ANY_SCALAR_STYLE)
            style = YAML_SINGLE_QUOTED_SCALAR_STYLE;
        if (v->plain)
            style = YAML_PLAIN_SCALAR_STYLE;
        (void)t;
        ok = yaml_scalar_event_initialize(&ev, NULL, NULL,
                                          (yaml_char_t *)v->text, (int)v->len,
                                          v->plain, !v->plain, style);
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
    yctx_t y = { &job->ck.arena, job->err, cf->config };
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
        yroot = yparse(&y, cfg->u.s.s, cfg->u.s.n);
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
