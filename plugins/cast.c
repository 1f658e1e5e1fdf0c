/*
 * cast -- change the dtype of a state dict's floating tensors, as
 * {k: v.to(dtype)} would, without reading them: the core converts each
 * storage once, chunk by chunk, while the output is written (bounded
 * memory, bytes equal to torch's .to(dtype)).  'state' names the state
 * dicts, 'to' the dtype (float16 unless said: a release), 'from' the dtypes
 * converted (default every
 * floating one), 'keys' shell globs the keys must match (default all).
 * Each tensor cast is reported with its bytes before and after; a tensor
 * whose storage is shared with one not cast gets a storage of its own
 * ("split": true), as t.to(dtype) would give it.
 */
#include "plugin.h"

#include <fnmatch.h>
#include <string.h>

typedef struct {
    ck_conf_list_t state; /* ck_path_t * */
    int to;           /* index in dtypes[] + 1 */
    unsigned from;    /* bit i: dtypes[i] is converted */
    ck_strlist_t keys;
} cast_conf_t;

static const char *const dtypes[] = { "float16", "bfloat16", "float32",
                                      "float64" };

static const ck_conf_enum_t to_names[] = {
    { "float16", 1 }, { "bfloat16", 2 }, { "float32", 3 }, { "float64", 4 },
    { "half", 1 },    { "float", 3 },    { "double", 4 },  { NULL, 0 },
};

static int dtype_index(const char *w, size_t n)
{
    for (size_t i = 0; to_names[i].name != NULL; i++)
        if (strlen(to_names[i].name) == n && memcmp(to_names[i].name, w, n) == 0)
            return to_names[i].value - 1;
    return -1;
}

static int set_from(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                    const char *v)
{
    cast_conf_t *cf = conf;

    (void)d;
    for (const char *w = v; *w != '\0';) {
        size_t n;
        int i;

        w += strspn(w, " \t,");
        n = strcspn(w, " \t,");
        if (n == 0)
            break;
        i = dtype_index(w, n);
        if (i < 0)
            return ck_err_set(cx->err, CK_ECONFIG,
                              "from: '%.*s' is not float16, bfloat16, float32 "
                              "or float64", (int)n, w);
        cf->from |= 1u << i;
        w += n;
    }
    return 0;
}

static const ck_directive_t cast_directives[] = {
    { "state", ck_conf_set_paths, offsetof(cast_conf_t, state),
      "best_state/model", CK_DIR_MULTI,
      "state dicts to cast in: PATH, A|B (the first), PATH? (optional)" },
    { "to", ck_conf_set_enum, offsetof(cast_conf_t, to), "float16", 0,
      "the dtype: float16, bfloat16, float32 or float64", to_names },
    { "from", set_from, 0, "float16 bfloat16 float32 float64", CK_DIR_MULTI,
      "the dtypes converted (others are left as they are)" },
    { "keys", ck_conf_set_words, offsetof(cast_conf_t, keys), "*",
      CK_DIR_MULTI, "shell globs: only keys matching one are cast" },
    { NULL, NULL, 0, NULL, 0, NULL },
};

static int key_matches(const cast_conf_t *cf, const ck_py_t *k)
{
    if (!ck_py_str_plain(k))
        return 0;
    for (size_t i = 0; i < cf->keys.n; i++)
        if (fnmatch(cf->keys.v[i], k->u.s.s, 0) == 0)
            return 1;
    return 0;
}

typedef struct {
    const char *state;
    ck_py_t *key, *node;
    const ck_dtype_t *from;
    uint64_t numel;
} item_t;

/* The tensors to cast in the state dict at place p, appended to *items. */
static int collect(ck_job_t *job, const cast_conf_t *cf, const ck_path_t *p,
                   item_t **items, size_t *n, size_t *cap)
{
    const char *state;
    ck_py_vec_t *m;
    int rc = ck_job_place(job, p, &state, NULL, &m);

    if (rc <= 0)
        return rc; /* an optional one that is absent, or the error */
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        const ck_tensor_t *t = ck_job_tensor(job, m->v[i + 1]);
        const ck_py_t *v = m->v[i + 1], *fn;
        int d;

        if (!key_matches(cf, m->v[i]))
            continue;
        if (t == NULL) {
            /* a tensor of another kind (sparse, quantized, a subclass):
             * t.to() would cast it, ckprep cannot; never left as it was
             * without a word */
            fn = (v->kind == CK_PY_REDUCE || v->kind == CK_PY_NEWOBJ) ?
                 v->u.o.fn : NULL;
            if (fn != NULL && fn->kind == CK_PY_GLOBAL &&
                strncmp(fn->u.g.module, "torch", 5) == 0 &&
                (fn->u.g.module[5] == '\0' || fn->u.g.module[5] == '.'))
                return ck_job_fail(job, CK_EUNSUPPORTED, "%s: %s is built "
                                   "by %s.%s, a tensor cast cannot convert",
                                   state, m->v[i]->u.s.s, fn->u.g.module,
                                   fn->u.g.name);
            continue;
        }
        for (d = 0; d < 4; d++)
            if (strcmp(t->dtype->name, dtypes[d]) == 0)
                break;
        if (d == 4 || !(cf->from & (1u << d)) || d == cf->to - 1)
            continue;
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 64;
            item_t *ni = ck_arena_alloc(ck_job_arena(job), nc * sizeof(*ni));

            if (ni == NULL)
                return ck_job_nomem(job);
            if (*n)
                memcpy(ni, *items, *n * sizeof(*ni));
            *items = ni;
            *cap = nc;
        }
        (*items)[(*n)++] = (item_t){ state, m->v[i], m->v[i + 1], t->dtype,
                                     t->numel };
    }
    return 0;
}

static int cast_run(ck_job_t *job, void *conf)
{
    cast_conf_t *cf = conf;
    const ck_dtype_t *to = ck_dtype_by_name(dtypes[cf->to - 1]);
    ck_arena_t *a = ck_job_arena(job);
    item_t *items = NULL;
    size_t n = 0, cap = 0;
    ck_py_t **nodes;
    unsigned char *split;
    int rc = 0;

    for (size_t s = 0; s < cf->state.n && rc == 0; s++)
        rc = collect(job, cf, cf->state.v[s], &items, &n, &cap);
    if (rc < 0 || n == 0)
        return rc;
    nodes = ck_arena_alloc(a, n * sizeof(*nodes));
    split = ck_arena_alloc(a, n);
    if (nodes == NULL || split == NULL)
        return ck_job_nomem(job);
    for (size_t i = 0; i < n; i++)
        nodes[i] = items[i].node;
    rc = ck_job_cast(job, nodes, n, to, split);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        ck_job_report(job, "cast", CK_F_STR("state", items[i].state),
                      CK_F_KEY("key", items[i].key),
                      CK_F_STR("from", items[i].from->name),
                      CK_F_STR("to", to->name),
                      CK_F_U64("bytes_before",
                               items[i].numel * items[i].from->itemsize),
                      CK_F_U64("bytes_after", items[i].numel * to->itemsize),
                      CK_F_BOOL("split", split[i]));
    return 0;
}

const ck_plugin_t ck_plugin_cast = {
    .name = "cast",
    .summary = "change the dtype of floating tensors while streaming",
    .conf_size = sizeof(cast_conf_t),
    .directives = cast_directives,
    .init_conf = NULL,
    .run = cast_run,
};
