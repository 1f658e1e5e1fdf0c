/*
 * config_override -- change the experiment configuration saved in the
 * checkpoint, with Hydra's override grammar:
 *
 *   set = key=value      change an existing key (a typo fails the job)
 *   set = +key=value     add a key that must not exist (parents are created)
 *   set = ++key=value    add or change
 *                        A mapping value onto a mapping merges into it, as
 *                        Hydra's OmegaConf.update(cfg, key, value,
 *                        merge=True) does: key by key, nested mappings
 *                        merging, the keys it does not name kept; a key
 *                        the node lacks is refused for key= (Hydra's
 *                        struct config) and added for + and ++ (which then
 *                        merge too, as Hydra's force_add); a mapping onto
 *                        a list or a list onto a mapping is refused, as
 *                        OmegaConf refuses it; anything else replaces.
 *   set = ~key           remove
 *   set = ~key=value     remove only if the key holds value, compared as
 *                        Python's == does (1 == 1.0 == True, lists in
 *                        order, dicts by their items, 2**64 exactly); else
 *                        the job fails naming the key and both values.  An
 *                        interpolation compares as its text, unresolved;
 *                        ~key=null needs None (Hydra's loader, which cannot
 *                        tell ~key=null from ~key, removes any value)
 *   file = PATH.yaml     deep-merged first (mappings merge, the rest replace;
 *                        a mapping and a list never merge)
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
 *    '???' and interpolations go in any node; a change under a read-only
 *    node (its flags or its parents') fails as OmegaConf's
 *    ReadonlyConfigError; a new key of a typed container (element_type
 *    int, float, bool or str), and each item of a list set onto a typed
 *    ListConfig (which keeps its metadata), gets the typed node OmegaConf
 *    makes (IntegerNode, ...; not optional), converted as above; a scalar
 *    onto a structured container (ref_type not Any: a dataclass schema's
 *    List[int] field) goes into it as OmegaConf's _set_value puts it (null
 *    when Optional, ???, an interpolation) or fails the job; any other node
 *    made here (an AnyNode, an untyped container) inside or in place of a
 *    typed container fails the job (OmegaConf would make typed nodes);
 *  - a YAML string (exported packages): parsed, changed and emitted again
 *    with key order kept (comments are not kept);
 *  - a plain dict (Lightning's hyper_parameters).
 *
 * This file owns the override-line grammar, one apply engine over the
 * three kinds (a small table of mapping operations per kind) and the
 * reports; YAML values and their typing are core/yamlval, OmegaConf's
 * nodes core/omegaconf, Python's ==, repr() and int()/float() core/pyval.
 */
#include "plugin.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PATH 32

typedef struct {
    ck_conf_list_t config; /* ck_path_t *: the configs to edit */
    ck_conf_list_t set;  /* ovr_t *, parsed at load, in the order given */
    char *file;          /* as resolved: relative to the config's folder */
    ck_yval_t *merge;    /* its YAML mapping, parsed at load */
} override_conf_t;

static int set_set(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                   const char *value);
static int set_file(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                    const char *value);

static const ck_directive_t override_directives[] = {
    { "config", ck_conf_set_paths, offsetof(override_conf_t, config),
      "xp.cfg", CK_DIR_MULTI,
      "the config(s) to edit: PATH, A|B (the first), PATH? (optional)" },
    { "set", set_set, offsetof(override_conf_t, set), NULL,
      CK_DIR_MULTI, "key=value, +key=value, ++key=value, ~key or ~key=value" },
    { "file", set_file, offsetof(override_conf_t, file), NULL, 0,
      "a YAML mapping deep-merged into the config first (relative to this "
      "file's folder)" },
    { NULL, NULL, 0, NULL, 0, NULL },
};

/* ---- override lines --------------------------------------------------- */

enum { OP_SET, OP_ADD, OP_FORCE, OP_DEL };

typedef struct {
    int op;
    char *path[MAX_PATH];
    size_t depth;
    ck_yval_t *value; /* NULL for ~key */
    const char *line;
} ovr_t;

/*
 * Refuses a VALUE that YAML (which reads it) and Hydra's override grammar
 * would read differently, rather than give a value nobody wrote: outside
 * quotes, '#' (a YAML comment: the rest was dropped), a backslash (an
 * escape in Hydra), ': ' outside {} (a YAML mapping, a string in Hydra),
 * a leading '- ' (a YAML list), a leading tag, anchor or block indicator
 * (! & | > % @ `; the parser refuses aliases), and NAME(...) (a Hydra
 * function: str(5) is '5' there).  Quoted, each is a string in both.
 */
static int hydra_only(ck_yaml_ctx_t *y, const char *line, const char *v)
{
    const char *why = NULL;
    int depth = 0;      /* inside {} */
    char q = 0;

    if (strchr("!&|>%@`", v[0]) != NULL && v[0] != '\0')
        why = "a YAML tag, anchor or block indicator";
    else if (v[0] == '-' && (v[1] == ' ' || v[1] == '\t'))
        why = "a leading '- ' (a list in YAML, a string in Hydra)";
    else if ((isalpha((unsigned char)v[0]) || v[0] == '_') &&
             v[strcspn(v, "(")] == '(' && v[strlen(v) - 1] == ')' &&
             strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                       "0123456789_") == strcspn(v, "("))
        why = "a Hydra function call (not supported)";
    for (const char *p = v; why == NULL && *p != '\0'; p++) {
        if (q != 0) {
            if (*p == q)
                q = 0;
            else if (*p == '\\' && q == '"' && p[1] != '\0')
                p++;
        } else if (*p == '\'' || *p == '"') {
            q = *p;
        } else if (*p == '{') {
            depth++;
        } else if (*p == '}') {
            depth--;
        } else if (*p == '#') {
            why = "a '#' (a comment in YAML: the rest would be dropped)";
        } else if (*p == '\\') {
            why = "a backslash (an escape in Hydra's grammar)";
        } else if (*p == ':' && depth <= 0 &&
                   (p[1] == ' ' || p[1] == '\t' || p[1] == '\0')) {
            why = "': ' outside {} (a mapping in YAML, a string in Hydra)";
        }
    }
    if (why == NULL)
        return 0;
    return ck_err_set(y->err, CK_ECONFIG, "set: '%s': the value has %s; "
                      "quote it to mean the text", line, why);
}

static int parse_override(ck_yaml_ctx_t *y, const char *line, ovr_t *o)
{
    const char *s = line, *eq;
    char *key, *save = NULL, *tok;
    size_t n;

    memset(o, 0, sizeof(*o));
    o->line = line;
    /* keys and ${...} values become pickled str, which must be UTF-8 */
    if (!ck_utf8_valid(line, strlen(line)))
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
        return ck_err_set(y->err, CK_ECONFIG, "set: '%s' is not key=value",
                          line);
    /* blanks around the key and the '=' are not part of either, as in
     * Hydra: 'optim.lr = 1e-5' sets optim.lr */
    n = eq ? (size_t)(eq - s) : strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    while (n > 0 && (*s == ' ' || *s == '\t'))
        s++, n--;
    key = ck_arena_strndup(y->a, s, n);
    if (key == NULL)
        return ck_err_set(y->err, CK_ENOMEM, "out of memory");
    if (key[0] == '\0' || key[0] == '.' || key[strlen(key) - 1] == '.' ||
        strstr(key, "..") != NULL)
        return ck_err_set(y->err, CK_ECONFIG, "set: empty key in '%s'", line);
    if (strpbrk(key, " \t") != NULL)
        return ck_err_set(y->err, CK_ECONFIG,
                          "set: the key '%s' has a blank in it (in '%s')",
                          key, line);
    for (tok = strtok_r(key, ".", &save); tok != NULL;
         tok = strtok_r(NULL, ".", &save)) {
        if (o->depth == MAX_PATH)
            return ck_err_set(y->err, CK_ECONFIG, "set: key too deep in '%s'",
                              line);
        o->path[o->depth++] = tok;
    }
    if (eq == NULL)
        return 0; /* ~key: removed whatever it holds */
    eq++;
    while (*eq == ' ' || *eq == '\t')
        eq++;
    if (!strncmp(eq, "${", 2) && eq[strlen(eq) - 1] == '}') {
        /* an interpolation: a string, kept verbatim */
        o->value = ck_yval_scalar(y->a, eq, strlen(eq), 0);
        if (o->value == NULL)
            return ck_err_set(y->err, CK_ENOMEM, "out of memory");
        o->value->hydra = 1;
        return 0;
    }
    if (hydra_only(y, line, eq) < 0)
        return CK_ECONFIG;
    y->what = line;
    y->hydra = 1;
    o->value = ck_yaml_parse(y, eq, strlen(eq));
    y->hydra = 0;
    return o->value ? 0 : y->err->code ? y->err->code : CK_ECONFIG;
}

/* 'set = LINE': parsed once, here, into an ovr_t the jobs share (they
 * copy its value before changing anything). */
static int set_set(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                   const char *value)
{
    override_conf_t *cf = conf;
    ck_yaml_ctx_t y = { .a = cx->arena, .err = cx->err, .what = "" };
    ovr_t *o = ck_arena_alloc(cx->arena, sizeof(*o));
    int rc;

    if (o == NULL)
        return ck_err_set(cx->err, CK_ENOMEM, "out of memory");
    rc = parse_override(&y, ck_arena_strdup(cx->arena, value), o);
    if (rc < 0)
        return cx->err->code == CK_ENOMEM ? CK_ENOMEM
                                          : (cx->err->code = CK_ECONFIG);
    return ck_conf_list_add(cx, &cf->set, o);
}

/*
 * 'file = PATH': read and parsed here, once, so check finds a missing file
 * or bad YAML; a relative PATH is taken from the configuration's folder
 * (the daemon's working folder is not the user's).  Empty: no file.
 */
static int set_file(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                    const char *value)
{
    override_conf_t *cf = conf;
    ck_yaml_ctx_t y = { .a = cx->arena, .err = cx->err };
    const char *slash = strrchr(cx->file, '/');
    ck_buf_t b = { 0 };
    char chunk[4096];
    FILE *f;
    size_t n;

    if (*value == '\0') {
        cf->file = NULL, cf->merge = NULL; /* "file =" is no file */
        return 0;
    }
    if (value[0] == '/' || slash == NULL || strcmp(cx->file, "<stdin>") == 0)
        cf->file = ck_arena_strdup(cx->arena, value);
    else
        cf->file = ck_arena_printf(cx->arena, "%.*s/%s",
                                   (int)(slash - cx->file), cx->file, value);
    if (cf->file == NULL)
        return ck_err_set(cx->err, CK_ENOMEM, "out of memory");
    f = fopen(cf->file, "r");
    if (f == NULL)
        return ck_err_set(cx->err, CK_ECONFIG, "file: %s: %s", cf->file,
                          strerror(errno));
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && b.len <= (64u << 20))
        ck_buf_put(&b, chunk, n);
    fclose(f);
    if (b.oom || b.len > (64u << 20)) {
        ck_buf_release(&b);
        return b.oom ? ck_err_set(cx->err, CK_ENOMEM, "out of memory")
                     : ck_err_set(cx->err, CK_ECONFIG, "file: %s: larger "
                                  "than 64 MiB", cf->file);
    }
    y.what = cf->file;
    cf->merge = ck_yaml_parse(&y, b.data ? (char *)b.data : "", b.len);
    ck_buf_release(&b);
    if (cf->merge == NULL)
        return cx->err->code == CK_ENOMEM ? CK_ENOMEM
                                          : (cx->err->code = CK_ECONFIG);
    if (cf->merge->kind != CK_YV_MAP)
        return ck_err_set(cx->err, CK_ECONFIG, "file: %s is not a YAML "
                          "mapping", cf->file);
    (void)d;
    return 0;
}

static int override_init(ck_conf_ctx_t *cx, void *conf)
{
    override_conf_t *cf = conf;

    if (cf->set.n == 0 && cf->file == NULL)
        return ck_err_set(cx->err, CK_ECONFIG,
                          "nothing to do: give set = OVERRIDE or file = "
                          "PATH.yaml");
    return 0;
}

/* ---- the config as mappings ------------------------------------------- */

/*
 * The three kinds of config behind one interface: a node is a ck_py_t (a
 * plain value or an OmegaConf node) or a ck_yval_t (a YAML-string config).
 * A mapping's entries are addressed by pair index.
 */
typedef struct ed ed_t;

typedef struct {
    /* 1 when node c is a mapping whose keys can be looked up */
    int (*is_map)(ed_t *e, void *c);
    /* 1 when node c is a list */
    int (*is_seq)(ed_t *e, void *c);
    /* pair index of key k in mapping c, or -1 */
    int (*find)(ed_t *e, void *c, const char *k);
    /* the value at pair index idx */
    void *(*get)(ed_t *e, void *c, int idx);
    /* append k: v (NULL: an empty mapping): 0 or CK_ENOMEM */
    int (*add)(ed_t *e, void *c, const char *k, ck_yval_t *v);
    /* replace the value at idx by o's: 0 or a code, err set */
    int (*set)(ed_t *e, void *c, int idx, const ovr_t *o);
    void (*remove)(ed_t *e, void *c, int idx);
    /* a node as a Python value (OmegaConf nodes unwrap), for == and
     * messages; NULL on CK_ENOMEM */
    ck_py_t *(*value)(ed_t *e, void *node);
    /* a node as JSON, for reports: arg is a shown_t */
    void (*json)(ck_json_t *j, const void *arg);
} kind_t;

/* A node to show in a report, and the editor it belongs to. */
typedef struct {
    ed_t *e;
    const void *node;
} shown_t;

struct ed {
    const kind_t *k;
    ck_job_t *job;
    ck_arena_t *a;
    const char *config;
    int omegaconf;
    ck_omc_ctx_t omc;
};

/* ---- a pickled config: DictConfig or plain dict ---- */

static ck_py_t *global_cb(void *ud, const char *module, const char *name)
{
    return ck_job_global(ud, module, name);
}

static ck_py_vec_t *py_pairs(ed_t *e, ck_py_t *c)
{
    ck_py_vec_t *m;
    int dict;

    if (!e->omegaconf)
        return c != NULL && c->kind == CK_PY_DICT ? &c->u.seq : NULL;
    m = ck_omc_children(c, &dict);
    return dict ? m : NULL;
}

/* A value for the config: plain Python values, or OmegaConf nodes. */
static ck_py_t *make_value(ed_t *e, const ck_yval_t *v, ck_py_t *key,
                           ck_py_t *parent)
{
    return e->omegaconf ? ck_omc_from_yval(&e->omc, v, key, parent)
                        : ck_yval_py(e->a, v, 0);
}

static int py_is_map(ed_t *e, void *c)
{
    return py_pairs(e, c) != NULL;
}

static int py_is_seq(ed_t *e, void *c)
{
    ck_py_t *p = c;
    int dict = 1;

    if (e->omegaconf && ck_omc_children(p, &dict) != NULL)
        return !dict;
    return p != NULL && p->kind == CK_PY_LIST;
}

static int py_find(ed_t *e, void *c, const char *k)
{
    ck_py_vec_t *m = py_pairs(e, c);

    for (size_t i = 0; i + 1 < m->n; i += 2)
        if (ck_py_str_eq(m->v[i], k))
            return (int)(i / 2);
    return -1;
}

static void *py_get(ed_t *e, void *c, int idx)
{
    return py_pairs(e, c)->v[2 * idx + 1];
}

static int py_add(ed_t *e, void *c, const char *k, ck_yval_t *v)
{
    ck_yval_t empty = { .kind = CK_YV_MAP };
    ck_py_vec_t *m = py_pairs(e, c);
    ck_py_t *key = ck_py_str(e->a, k, strlen(k));
    ck_py_t *x = NULL;

    /* a scalar into a typed container: its typed node (omc_guard has
     * checked that OmegaConf takes the value) */
    if (e->omegaconf && v != NULL && v->kind == CK_YV_SCALAR &&
        ck_omc_typed(c, "element_type") != NULL) {
        const ck_pyval_t *t = ck_yval_type(e->a, v);

        if (t == NULL || key == NULL ||
            ck_omc_typed_leaf(&e->omc, c, t, key, &x) != 0)
            return CK_ENOMEM;
    } else {
        x = make_value(e, v != NULL ? v : &empty, key, c);
    }

    if (key == NULL || x == NULL || ck_py_vec_push(e->a, m, key) < 0 ||
        ck_py_vec_push(e->a, m, x) < 0)
        return CK_ENOMEM;
    return 0;
}

/* A node whose _metadata says optional=False refuses None (OmegaConf's
 * ValidationError); 1 when optional or not said. */
static int optional(ck_py_t *node)
{
    ck_py_t *md = ck_py_map_get(ck_py_after(node)->state, "_metadata", NULL), *v;

    if (md == NULL || (md->kind != CK_PY_REDUCE && md->kind != CK_PY_NEWOBJ))
        return 1;
    v = ck_py_map_get(ck_py_after(md)->state, "optional", NULL);
    return v == NULL || v->kind != CK_PY_BOOL || v->b;
}

/*
 * A typed leaf converts the value as OmegaConf does or refuses it; an
 * AnyNode takes a collection as a new container node, as does a plain dict.
 */
/* 1 when v, a list of scalars, goes onto old, a typed ListConfig
 * (List[int]): OmegaConf keeps the node and makes its elements typed. */
static int typed_list(ed_t *e, ck_py_t *old, const ck_yval_t *v)
{
    if (!e->omegaconf || v->kind != CK_YV_SEQ || !ck_omc_is(old, "ListConfig") ||
        ck_omc_typed(old, "element_type") == NULL)
        return 0;
    for (size_t i = 0; i < v->n; i++)
        if (v->v[i]->kind != CK_YV_SCALAR)
            return 0;
    return 1;
}

/*
 * The typed ListConfig old given the items of v (typed_list), as
 * OmegaConf.update merges a list into it: its metadata kept, its content
 * new typed nodes.  0; 1 when OmegaConf refuses an item (the typed leaf's
 * refusal), CK_EUNSUPPORTED for an element type with no leaf class,
 * CK_ENOMEM.  With list NULL the items are only checked.
 */
static int typed_items(ed_t *e, ck_py_t *old, const ck_yval_t *v,
                       ck_py_t **list)
{
    ck_py_t *l = NULL, *x;
    int rc;

    if (list != NULL && ((l = ck_py_new(e->a, CK_PY_LIST)) == NULL ||
                         ck_py_vec_reserve(e->a, &l->u.seq, v->n) < 0))
        return CK_ENOMEM;
    for (size_t i = 0; i < v->n; i++) {
        const ck_pyval_t *t = ck_yval_type(e->a, v->v[i]);

        if (t == NULL)
            return CK_ENOMEM;
        rc = ck_omc_typed_leaf(&e->omc, old, t,
                               l != NULL ? ck_py_int(e->a, (int64_t)i) : NULL,
                               l != NULL ? &x : NULL);
        if (rc != 0)
            return rc;
        if (l != NULL)
            l->u.seq.v[l->u.seq.n++] = x;
    }
    if (list != NULL)
        *list = l;
    return 0;
}

static int set_typed_list(ed_t *e, ck_py_t *old, const ck_yval_t *v)
{
    ck_py_t *l = NULL, *st = ck_py_after(old)->state;
    size_t at;
    int rc = typed_items(e, old, v, &l);

    if (rc != 0)    /* omc_guard checked the items */
        return CK_ENOMEM;
    if (ck_py_map_get(st, "_content", &at) == NULL)
        return CK_ENOMEM;
    ck_py_mapping(st)->v[2 * at + 1] = l;
    return 0;
}

static int py_set(ed_t *e, void *c, int idx, const ovr_t *o)
{
    ck_py_vec_t *m = py_pairs(e, c), *st;
    ck_py_t *old = m->v[2 * idx + 1], *nv;
    const char *cls = e->omegaconf ? ck_omc_leaf_class(old) : NULL;
    int scalar = o->value->kind == CK_YV_SCALAR, rc;
    const ck_pyval_t *t;
    size_t at;

    if (typed_list(e, old, o->value))
        return set_typed_list(e, old, o->value);
    if (e->omegaconf && scalar && ck_omc_structured(old)) {
        /* into the node, as OmegaConf's _set_value (omc_guard checked) */
        t = ck_yval_type(e->a, o->value);
        return t != NULL && ck_omc_set_content(e->a, old, t) == 0 ? 0
                                                                  : CK_ENOMEM;
    }
    if (cls == NULL || (!scalar && strcmp(cls, "AnyNode") == 0)) {
        m->v[2 * idx + 1] = make_value(e, o->value, m->v[2 * idx], c);
        return m->v[2 * idx + 1] != NULL ? 0 : CK_ENOMEM;
    }
    st = ck_py_mapping(ck_py_after(old)->state);
    if (st == NULL || ck_py_map_get(ck_py_after(old)->state, "_val", &at) == NULL)
        return ck_job_fail(e->job, CK_EPLUGIN, "%s: malformed node", o->line);
    t = scalar ? ck_yval_type(e->a, o->value) : NULL;
    if (t != NULL && t->t == CK_PV_NULL && !optional(old))
        return ck_job_fail(e->job, CK_EPLUGIN, "%s: the %s is not optional: "
                           "OmegaConf refuses null (ValidationError)", o->line,
                           cls);
    rc = ck_omc_leaf_value(e->a, cls, t, &nv);
    if (rc == 1)
        return ck_job_fail(e->job, CK_EPLUGIN, "%s: '%s' is not a valid value "
                          "for a %s", o->line,
                          scalar ? o->value->text : "collection", cls);
    if (rc == CK_EUNSUPPORTED)
        return ck_job_fail(e->job, CK_EPLUGIN, "%s: cannot change a %s", o->line,
                          cls);
    if (rc < 0)
        return rc;
    st->v[2 * at + 1] = nv;
    return 0;
}

static void py_remove(ed_t *e, void *c, int idx)
{
    ck_py_vec_remove(py_pairs(e, c), 2 * (size_t)idx, 2);
}

static ck_py_t *py_value(ed_t *e, void *node)
{
    return node;
}

static void py_json(ck_json_t *j, const void *arg)
{
    ck_omc_json(j, ((const shown_t *)arg)->node);
}

static const kind_t py_kind = {
    py_is_map, py_is_seq, py_find, py_get, py_add, py_set, py_remove, py_value, py_json,
};

/* ---- a YAML-string config ---- */

static int y_is_map(ed_t *e, void *c)
{
    return ((ck_yval_t *)c)->kind == CK_YV_MAP;
}

static int y_is_seq(ed_t *e, void *c)
{
    return ((ck_yval_t *)c)->kind == CK_YV_SEQ;
}

static int y_find(ed_t *e, void *c, const char *k)
{
    return ck_yval_find(c, k);
}

static void *y_get(ed_t *e, void *c, int idx)
{
    return ((ck_yval_t *)c)->v[2 * idx + 1];
}

static int y_add(ed_t *e, void *c, const char *k, ck_yval_t *v)
{
    ck_yval_t *key = ck_yval_scalar(e->a, k, strlen(k), 1);

    if (v == NULL) {
        v = ck_arena_alloc(e->a, sizeof(*v));
        if (v != NULL)
            v->kind = CK_YV_MAP;
    }
    if (key == NULL || v == NULL || ck_yval_push(e->a, c, key) < 0 ||
        ck_yval_push(e->a, c, v) < 0)
        return CK_ENOMEM;
    return 0;
}

static int y_set(ed_t *e, void *c, int idx, const ovr_t *o)
{
    ((ck_yval_t *)c)->v[2 * idx + 1] = o->value;
    return 0;
}

static void y_remove(ed_t *e, void *c, int idx)
{
    ck_yval_t *m = c;

    memmove(m->v + 2 * idx, m->v + 2 * idx + 2,
            (m->n - 2 * (size_t)idx - 2) * sizeof(*m->v));
    m->n -= 2;
}

static ck_py_t *y_value(ed_t *e, void *node)
{
    return ck_yval_py(e->a, node, 1);
}

static void y_json(ck_json_t *j, const void *arg)
{
    const shown_t *s = arg;

    ck_yval_json(j, s->e->a, s->node);
}

static const kind_t yaml_kind = {
    y_is_map, y_is_seq, y_find, y_get, y_add, y_set, y_remove, y_value, y_json,
};

/* ---- reporting -------------------------------------------------------- */

/* The dotted key of an override. */
static void dotted(const ovr_t *o, char *key, size_t cap)
{
    key[0] = '\0';
    for (size_t i = 0; i < o->depth; i++)
        snprintf(key + strlen(key), cap - strlen(key), "%s%s", i ? "." : "",
                 o->path[i]);
}

/* One change; old is the node replaced or removed (have_old set). */
static void report(ed_t *e, const ovr_t *o, const char *op, void *old,
                   int have_old)
{
    shown_t was = { e, old }, now = { e, o->value };
    ck_field_t f[4];
    size_t n = 0;
    char key[1024];

    dotted(o, key, sizeof(key));
    f[n++] = CK_F_STR("config", e->config);
    f[n++] = CK_F_STR("key", key);
    if (have_old)
        f[n++] = CK_F_VALUE("old", e->k->json, &was);
    if (o->op != OP_DEL)
        f[n++] = CK_F_VALUE("new", y_json, &now);
    ck_job_report_fields(e->job, op, f, n);
}

/* ~key=value: fail unless node have holds value (Python's ==), naming the
 * key and both values. */
static int check_del(ed_t *e, const ovr_t *o, void *have)
{
    ck_buf_t want = { 0 }, shown = { 0 };
    ck_py_t *w = ck_yval_py(e->a, o->value, 1), *h = e->k->value(e, have);
    char key[1024];
    int rc;

    if (w == NULL || h == NULL)
        return ck_job_nomem(e->job);
    if (ck_pyval_eq_py(e->a, w, h, ck_omc_unwrap))
        return 0;
    dotted(o, key, sizeof(key));
    ck_pyval_show_py(&want, e->a, w, NULL);
    ck_pyval_show_py(&shown, e->a, h, ck_omc_unwrap);
    ck_buf_putc(&want, '\0');
    ck_buf_putc(&shown, '\0');
    rc = ck_job_fail(e->job, CK_EPLUGIN, "%s: the value of '%s' is %s, not %s",
                    o->line, key, shown.oom ? "?" : (char *)shown.data,
                    want.oom ? "?" : (char *)want.data);
    ck_buf_release(&want);
    ck_buf_release(&shown);
    return rc;
}

/* ---- applying an override --------------------------------------------- */

static int merge(ed_t *e, void *root, ck_yval_t *map, ovr_t *o, int op);

/*
 * A mapping or list onto an existing node, as Hydra applies it
 * (OmegaConf.update(cfg, key, value, merge=True), force_add for + and
 * ++): a mapping into a mapping merges, key by key (a key the node lacks
 * is refused for key=, as Hydra's struct config refuses it; + and ++ add
 * it); a mapping into a list or a list into a mapping is refused
 * (OmegaConf: "Cannot merge DictConfig with ListConfig"); the rest
 * replaces.  1: not a merge, the caller sets; else 0 or a code.
 */
static int apply_onto(ed_t *e, void *root, const ovr_t *o, void *have)
{
    const kind_t *k = e->k;
    int vmap = o->value->kind == CK_YV_MAP;
    ovr_t sub = *o;
    char key[1024];

    if (vmap && k->is_map(e, have))
        return merge(e, root, o->value, &sub, o->op == OP_SET ? OP_SET
                                                               : OP_FORCE);
    if ((vmap && k->is_seq(e, have)) || (!vmap && k->is_map(e, have))) {
        dotted(o, key, sizeof(key));
        return ck_job_fail(e->job, CK_EPLUGIN, "%s: a %s cannot be merged "
                           "into the %s at '%s' (Hydra refuses it: Cannot "
                           "merge DictConfig with ListConfig)", o->line,
                           vmap ? "mapping" : "list",
                           vmap ? "list" : "mapping", key);
    }
    return 1;
}

/* What setting o's value at old does (py_set's rule): 3 when a scalar
 * goes into old, a structured container; 1 when a new node replaces old
 * (no typed leaf, or an AnyNode given a collection); 0 when old, a typed
 * leaf, converts it. */
static int makes_node(ed_t *e, ck_py_t *old, const ovr_t *o)
{
    const char *cls = e->omegaconf ? ck_omc_leaf_class(old) : NULL;

    if (e->omegaconf && o->value->kind == CK_YV_SCALAR &&
        ck_omc_structured(old))
        return 3;   /* set into the node (py_set) */

    return cls == NULL ||
           (o->value->kind != CK_YV_SCALAR && strcmp(cls, "AnyNode") == 0);
}

/*
 * What OmegaConf refuses, or does otherwise, that a change here would do
 * silently (a DictConfig's nodes only): any change under a read-only
 * container or to a read-only node (ReadonlyConfigError), and a node made
 * here -- an AnyNode, an untyped DictConfig or ListConfig -- in a typed
 * container (Dict[str, int], List[float]: OmegaConf makes a typed node and
 * converts the value, or refuses it) or in place of one -- but for a
 * scalar as a new key of a container of int, float, bool or str, which
 * gets its typed node (py_add); and a scalar onto a structured container
 * is what OmegaConf's _set_value takes.  The container c, the node old at
 * the key (NULL when new), makes: makes_node's, or for a new key 2 when
 * it is o's scalar, 1 for a mapping.  0, or the job failed.
 */
static int omc_guard(ed_t *e, const ovr_t *o, ck_py_t *c, ck_py_t *old,
                     int makes)
{
    const char *elem, *kt;
    char key[1024];
    int rc;

    if (!e->omegaconf)
        return 0;
    dotted(o, key, sizeof(key));
    /* OmegaConf asks the container changed, and a leaf set in place; a
     * read-only container replaced or removed in a writable one is not */
    if (ck_omc_readonly(c) ||
        (old != NULL && ck_omc_leaf_class(old) != NULL && ck_omc_readonly(old)))
        return ck_job_fail(e->job, CK_EPLUGIN, "%s: '%s' is in a read-only "
                           "config (OmegaConf refuses the change: "
                           "ReadonlyConfigError)", o->line, key);
    if (makes == 3) {
        /* a scalar onto a structured container: null when Optional, ???,
         * an interpolation, else OmegaConf's ValidationError */
        const ck_pyval_t *t = ck_yval_type(e->a, o->value);

        if (t == NULL)
            return ck_job_nomem(e->job);
        if (ck_omc_readonly(old))
            return ck_job_fail(e->job, CK_EPLUGIN, "%s: '%s' is a read-only "
                               "config (OmegaConf refuses the change: "
                               "ReadonlyConfigError)", o->line, key);
        rc = ck_omc_set_content(NULL, old, t);  /* asked only */
        if (rc == 1)
            return ck_job_fail(e->job, CK_EPLUGIN, "%s: '%s' is a structured "
                               "container (a typed field): OmegaConf takes "
                               "only null (when Optional), ??? or an "
                               "interpolation there (ValidationError)",
                               o->line, key);
        return rc < 0 ? ck_job_nomem(e->job) : 0;
    }
    if (!makes)
        return 0;
    elem = ck_omc_typed(c, "element_type");
    kt = old == NULL ? ck_omc_typed(c, "key_type") : NULL;
    if (kt != NULL && strcmp(kt, "str") == 0)
        kt = NULL;
    if (elem != NULL && kt == NULL && old == NULL && makes == 2) {
        /* a scalar as a new key of Dict[str, int]: its typed node, or
         * OmegaConf's refusal */
        const ck_pyval_t *t = ck_yval_type(e->a, o->value);

        if (t == NULL)
            return ck_job_nomem(e->job);
        rc = ck_omc_typed_leaf(&e->omc, c, t, NULL, NULL); /* a check */
        if (rc == 1)
            return ck_job_fail(e->job, CK_EPLUGIN, "%s: '%s' is not a valid "
                               "value for an element of the typed container "
                               "at '%s' (element_type %s: OmegaConf raises "
                               "ValidationError)", o->line, o->value->text,
                               key, elem);
        if (rc == CK_ENOMEM)
            return ck_job_nomem(e->job);
        if (rc == 0)
            return 0;
    }
    if (elem == NULL && kt == NULL && old != NULL && typed_list(e, old, o->value)) {
        /* a list onto a List[int]: its items typed, or OmegaConf's refusal */
        rc = typed_items(e, old, o->value, NULL);    /* a check */
        if (rc == 1)
            return ck_job_fail(e->job, CK_EPLUGIN, "%s: an item is not a "
                               "valid value for the typed list at '%s' "
                               "(element_type %s: OmegaConf raises "
                               "ValidationError)", o->line, key,
                               ck_omc_typed(old, "element_type"));
        if (rc == CK_ENOMEM)
            return ck_job_nomem(e->job);
        if (rc == 0)
            return 0;
    }
    if (elem == NULL && kt == NULL && old != NULL && o->value != NULL &&
        o->value->kind != CK_YV_SCALAR)
        elem = ck_omc_typed(old, "element_type"); /* a new container */
    if (elem == NULL && kt == NULL)
        return 0;
    return ck_job_fail(e->job, CK_EPLUGIN, "%s: '%s' is in or replaces a "
                       "typed container (%s %s): OmegaConf would make typed "
                       "nodes, which ckprep does not; change its existing "
                       "keys one by one", o->line, key,
                       kt != NULL ? "key_type" : "element_type",
                       kt != NULL ? kt : elem);
}

static int apply(ed_t *e, void *root, const ovr_t *o)
{
    const kind_t *k = e->k;
    const char *last = o->path[o->depth - 1];
    void *cur = root;
    int idx = -1, rc;

    for (size_t d = 0; d < o->depth; d++) {
        if (!k->is_map(e, cur))
            return ck_job_fail(e->job, CK_EPLUGIN, "%s: '%s' is not a mapping",
                              o->line, d ? o->path[d - 1] : e->config);
        idx = k->find(e, cur, o->path[d]);
        if (d + 1 == o->depth)
            break;
        if (idx < 0 && o->op != OP_ADD && o->op != OP_FORCE)
            return ck_job_fail(e->job, CK_EPLUGIN, "%s: no key '%s' in %s",
                              o->line, o->path[d], e->config);
        if (idx < 0) {
            if (omc_guard(e, o, cur, NULL, 1) < 0)
                return ck_job_error(e->job);
            if (k->add(e, cur, o->path[d], NULL) < 0)
                return ck_job_nomem(e->job);
            idx = k->find(e, cur, o->path[d]);
        }
        cur = k->get(e, cur, idx);
    }
    if (o->op == OP_DEL) {
        if (idx < 0)
            return ck_job_fail(e->job, CK_EPLUGIN, "%s: no key '%s' to remove",
                              o->line, last);
        if (omc_guard(e, o, cur, k->get(e, cur, idx), 0) < 0)
            return ck_job_error(e->job);
        if (o->value != NULL && check_del(e, o, k->get(e, cur, idx)) < 0)
            return ck_job_error(e->job);
        report(e, o, "removed", k->get(e, cur, idx), 1);
        k->remove(e, cur, idx);
        return 0;
    }
    if (idx < 0 && o->op == OP_SET)
        return ck_job_fail(e->job, CK_EPLUGIN, "%s: no key '%s' in %s (use +%s "
                          "to add it)", o->line, last, e->config, o->line);
    /* (a merge into a mapping guards each key it sets) */
    if (omc_guard(e, o, cur, idx >= 0 ? k->get(e, cur, idx) : NULL, 0) < 0)
        return ck_job_error(e->job);
    if (idx >= 0 && o->value->kind != CK_YV_SCALAR &&
        (rc = apply_onto(e, root, o, k->get(e, cur, idx))) <= 0)
        return rc;
    if (omc_guard(e, o, cur, idx >= 0 ? k->get(e, cur, idx) : NULL,
                  idx < 0 ? (o->value->kind == CK_YV_SCALAR ? 2 : 1)
                          : makes_node(e, k->get(e, cur, idx), o)) < 0)
        return ck_job_error(e->job);
    if (idx >= 0 && o->op == OP_ADD && o->value->kind == CK_YV_SCALAR)
        return ck_job_fail(e->job, CK_EPLUGIN, "%s: key '%s' already exists (use "
                          "++ to change it)", o->line, last);
    if (idx < 0) {
        if (k->add(e, cur, last, o->value) < 0)
            return ck_job_nomem(e->job);
        report(e, o, "added", NULL, 0);
        return 0;
    }
    report(e, o, "set", k->get(e, cur, idx), 1);
    rc = k->set(e, cur, idx, o);
    return rc == CK_ENOMEM ? ck_job_nomem(e->job) : rc;
}

/* ---- merging a YAML file ---------------------------------------------- */

/* Is there a mapping at path?  (for deep merge) */
static int has_map(ed_t *e, void *root, char **path, size_t n)
{
    void *cur = root;

    for (size_t d = 0; d < n; d++) {
        int i = e->k->is_map(e, cur) ? e->k->find(e, cur, path[d]) : -1;

        if (i < 0)
            return 0;
        cur = e->k->get(e, cur, i);
    }
    return e->k->is_map(e, cur);
}

/* The items of map into the mapping at o's path, each applied with op
 * (OP_SET: keys the config lacks are refused). */
static int merge(ed_t *e, void *root, ck_yval_t *map, ovr_t *o, int op)
{
    for (size_t i = 0; i + 1 < map->n; i += 2) {
        ck_yval_t *k = map->v[i], *v = map->v[i + 1];
        int rc;

        if (k->kind != CK_YV_SCALAR || o->depth == MAX_PATH)
            return ck_job_fail(e->job, CK_EPLUGIN, "bad key in file");
        o->path[o->depth++] = k->text;
        if (v->kind == CK_YV_MAP && has_map(e, root, o->path, o->depth)) {
            rc = merge(e, root, v, o, op);
        } else {
            o->op = op;
            o->value = v;
            rc = apply(e, root, o);
        }
        o->depth--;
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- running ---------------------------------------------------------- */

/* The YAML text of what (the config's key, quoted in messages, or the
 * file) as a mapping, or NULL with the job failed. */
static ck_yval_t *yaml_map(ed_t *e, ck_yaml_ctx_t *y, const char *what,
                           int quote, const char *text, size_t len)
{
    ck_err_t err = { 0 };
    ck_yval_t *m;

    y->err = &err;
    y->what = what;
    m = ck_yaml_parse(y, text, len);
    if (m == NULL)
        ck_job_fail(e->job, err.code ? err.code : CK_EPLUGIN, "%s", err.msg);
    else if (m->kind != CK_YV_MAP)
        ck_job_fail(e->job, CK_EPLUGIN, "%s%s%s is not a YAML mapping",
                    quote ? "'" : "", what, quote ? "'" : "");
    return m != NULL && m->kind == CK_YV_MAP ? m : NULL;
}

/* Write the YAML tree back into the checkpoint's str in slot. */
static int yaml_back(ed_t *e, ck_py_t **slot, ck_yval_t *yroot)
{
    ck_buf_t out = { 0 };
    ck_err_t err = { 0 };
    ck_py_t *s;
    int rc;

    rc = ck_yaml_emit(yroot, e->config, &out, &err);
    if (rc < 0 || out.oom) {
        int nomem = rc == CK_ENOMEM || out.oom;

        ck_buf_release(&out);
        return nomem ? ck_job_nomem(e->job) : ck_job_fail(e->job, rc, "%s",
                                                           err.msg);
    }
    s = ck_py_str(e->a, out.data ? (char *)out.data : "", out.len);
    ck_buf_release(&out);
    if (s == NULL)
        return ck_job_nomem(e->job);
    *slot = s;
    return 0;
}

/* Apply the file and every set line to the config named config in slot. */
static int override_one(ck_job_t *job, override_conf_t *cf, const char *config,
                        ck_py_t **slot)
{
    ck_arena_t *a = ck_job_arena(job);
    ed_t e = { &py_kind, job, a, config, 0, { a, global_cb, job } };
    ck_yaml_ctx_t y = { .a = a, .what = config };
    ck_py_t *cfg = *slot;
    ck_yval_t *yroot = NULL;
    void *top = cfg;
    int rc;

    if (ck_omc_is(cfg, "DictConfig")) {
        e.omegaconf = 1;
    } else if (cfg->kind == CK_PY_STR) {
        y.lazy = 1; /* untrusted and maybe large: typed where used */
        yroot = yaml_map(&e, &y, config, 1, cfg->u.s.s, cfg->len);
        y.lazy = 0;
        if (yroot == NULL)
            return ck_job_error(job);
        e.k = &yaml_kind;
        top = yroot;
    } else if (cfg->kind != CK_PY_DICT) {
        return ck_job_fail(job, CK_EPLUGIN, "'%s' is neither a DictConfig, a "
                           "YAML string nor a dict", config);
    }
    if (cf->merge != NULL) {
        /* the job's own copy of the file's mapping, parsed at load */
        ck_yval_t *m = ck_yval_copy(a, cf->merge);
        ovr_t o;

        if (m == NULL)
            return ck_job_nomem(job);
        memset(&o, 0, sizeof(o));
        o.line = cf->file;
        rc = merge(&e, top, m, &o, OP_FORCE);
        if (rc < 0)
            return rc;
    }
    for (size_t i = 0; i < cf->set.n; i++) {
        ovr_t o = *(const ovr_t *)cf->set.v[i];

        /* the job's own copy: apply links it into the job's graph */
        if (o.value != NULL) {
            o.value = ck_yval_copy(a, o.value);
            if (o.value == NULL)
                return ck_job_nomem(job);
        }
        rc = apply(&e, top, &o);
        if (rc < 0)
            return rc;
    }
    return yroot != NULL ? yaml_back(&e, slot, yroot) : 0;
}

static int override_run(ck_job_t *job, void *conf)
{
    override_conf_t *cf = conf;

    for (size_t i = 0; i < cf->config.n; i++) {
        const char *config;
        ck_py_t **slot;
        int rc = ck_job_slot(job, cf->config.v[i], &config, &slot);

        if (rc == 1)
            rc = override_one(job, cf, config, slot);
        if (rc < 0)
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
