/*
 * expect -- check, before anything is written, that the state dict will
 * load into the target model: the check load_state_dict(strict=True) makes,
 * against a manifest (README: "Manifests") instead of the model.  Put it
 * last in the chain.
 *
 *   manifest = FILE [STATE]  a manifest, or a checkpoint whose state dict
 *                            (at STATE, default best_state/model|model|
 *                            state_dict|/) is the reference; read once at
 *                            load, relative to the configuration's folder,
 *                            under the configuration's [security]
 *   state = PATH             the job's state dict ('|' alternatives)
 *   keys = strict            no key missing, none unexpected (strict=True)
 *        | subset            no key unexpected (strict=False's report)
 *        | superset          no key missing
 *   dtype = any | exact      any: torch casts on load (its behaviour);
 *                            exact: a different dtype is a mismatch
 *   shape = exact            a different shape is a mismatch, as in torch
 *                            (which also loads a 1-element [1] tensor, or
 *                            any [N>0] one, into a 0-dim parameter)
 *   report_only = no         yes: record the verdict, never fail the job
 *
 * The job fails listing the first 20 missing, unexpected and mismatched
 * keys and their counts; the record's "expect" change holds the verdict
 * either way.  Missing keys come in the manifest's order, unexpected ones
 * in the checkpoint's.
 */
#include "plugin.h"

#include <stdio.h>
#include <string.h>

#define SHOW 20

enum { KEYS_STRICT, KEYS_SUBSET, KEYS_SUPERSET };
enum { DT_ANY, DT_EXACT };

typedef struct {
    const char *file, *file_state; /* manifest = FILE [STATE], as given */
    int file_line;                 /* where, for init_conf's errors: */
    const char *file_set;          /* the line, or the --set */
    ck_manifest_t *manifest;       /* read from them in expect_init */
    ck_path_t *state;
    int keys;
    int dtype;
    int shape;
    int report_only;
} expect_conf_t;

static const ck_conf_enum_t keys_names[] = {
    { "strict", KEYS_STRICT },
    { "subset", KEYS_SUBSET },
    { "superset", KEYS_SUPERSET },
    { NULL, 0 },
};

static const ck_conf_enum_t dtype_names[] = {
    { "any", DT_ANY },
    { "exact", DT_EXACT },
    { NULL, 0 },
};

static const ck_conf_enum_t shape_names[] = {
    { "exact", 0 },
    { NULL, 0 },
};

#define DEF_STATE "best_state/model|model|state_dict|/"

/* manifest = FILE [STATE]: kept here, read once in expect_init (a
 * reference checkpoint opens under [security], which may come later in
 * the file). */
static int set_manifest(ck_conf_ctx_t *cx, const ck_directive_t *d,
                        void *conf, const char *value)
{
    expect_conf_t *c = conf;
    const char *sp = strpbrk(value, " \t");
    const char *state = DEF_STATE;
    char *file;

    file = ck_arena_strndup(cx->arena, value,
                            sp ? (size_t)(sp - value) : strlen(value));
    if (file == NULL)
        return ck_err_set(cx->err, CK_ENOMEM, "out of memory");
    if (*file == '\0')
        return ck_err_set(cx->err, CK_ECONFIG, "manifest: a file is needed");
    if (sp != NULL) {
        state = sp + strspn(sp, " \t");
        if (*state == '\0')
            state = DEF_STATE;
    }
    (void)d;
    c->file = file;
    c->file_state = ck_arena_strdup(cx->arena, state);
    c->file_line = cx->line;
    c->file_set = cx->set ? ck_arena_strdup(cx->arena, cx->set) : NULL;
    if (cx->set != NULL && c->file_set == NULL)
        return ck_err_set(cx->err, CK_ENOMEM, "out of memory");
    return c->file_state ? 0 : ck_err_set(cx->err, CK_ENOMEM, "out of memory");
}

static const ck_directive_t expect_directives[] = {
    { "manifest", set_manifest, offsetof(expect_conf_t, file), NULL, 0,
      "FILE [STATE]: a manifest, or a reference checkpoint (its state dict)" },
    { "state", ck_conf_set_path, offsetof(expect_conf_t, state), DEF_STATE, 0,
      "the state dict to check: a place (A|B the first, / the top)" },
    { "keys", ck_conf_set_enum, offsetof(expect_conf_t, keys), "strict", 0,
      "strict, subset or superset", keys_names },
    { "dtype", ck_conf_set_enum, offsetof(expect_conf_t, dtype), "any", 0,
      "any (torch casts) or exact", dtype_names },
    { "shape", ck_conf_set_enum, offsetof(expect_conf_t, shape), "exact", 0,
      "exact", shape_names },
    { "report_only", ck_conf_set_bool, offsetof(expect_conf_t, report_only),
      "no", 0, "record the verdict without failing the job" },
    { NULL },
};

static int expect_init(ck_conf_ctx_t *cx, void *conf)
{
    expect_conf_t *c = conf;

    if (c->file == NULL)
        return ck_err_set(cx->err, CK_ECONFIG, "manifest is required");
    cx->line = c->file_line;    /* an error is the directive's */
    cx->set = c->file_set;
    return ck_manifest_load(cx, c->file, c->file_state, &c->manifest);
}

/* Keys found, the first SHOW kept as Python strs for the report. */
typedef struct {
    ck_py_t *show[SHOW];
    const char *why[SHOW]; /* mismatched: what the checkpoint holds */
    size_t n;
} keyset_t;

static int keep(ck_arena_t *a, keyset_t *s, ck_py_t *k, const char *text)
{
    if (s->n < SHOW) {
        if (k == NULL && text != NULL)
            k = ck_py_str(a, text, strlen(text));
        if (k == NULL)
            return CK_ENOMEM;
        s->show[s->n] = k;
    }
    s->n++;
    return 0;
}

/* 1 when a tensor of shape have loads where shape want is expected. */
static int shape_fits(const ck_tensor_t *t, const ck_mf_tensor_t *m)
{
    if (m->ndim == 0 && t->ndim == 1 && t->size[0] > 0)
        return 1; /* torch: input_param[0] for a 0-dim parameter */
    if (m->ndim != t->ndim)
        return 0;
    for (size_t i = 0; i < t->ndim; i++)
        if (t->size[i] != m->shape[i])
            return 0;
    return 1;
}

static void show(char *buf, size_t cap, const char *what, const keyset_t *s)
{
    size_t len = strlen(buf);

    if (s->n == 0 || len + 1 >= cap)
        return;
    len += (size_t)snprintf(buf + len, cap - len, "%s%zu %s (", len ? "; " : "",
                            s->n, what);
    for (size_t i = 0; i < s->n && i < SHOW && len + 1 < cap; i++) {
        const ck_py_t *k = s->show[i];

        if (k->kind == CK_PY_STR)
            len += (size_t)snprintf(buf + len, cap - len, "%s%.*s%s%s",
                                    i ? ", " : "", (int)k->len, k->u.s.s,
                                    s->why[i] ? ": " : "",
                                    s->why[i] ? s->why[i] : "");
        else
            len += (size_t)snprintf(buf + len, cap - len, "%s<%s key>",
                                    i ? ", " : "", ck_py_type_name(k));
    }
    if (len + 1 < cap)
        snprintf(buf + len, cap - len, "%s)", s->n > SHOW ? ", ..." : "");
}

/* "float32 [4] for float32 [2, 2]" (NULL when out of memory). */
static const char *why(ck_arena_t *a, const ck_tensor_t *t,
                       const ck_mf_tensor_t *m)
{
    char buf[256];
    size_t len = 0;

    if (t == NULL)
        return "not a tensor";
    for (int side = 0; side < 2 && len + 1 < sizeof(buf); side++) {
        size_t nd = side ? m->ndim : t->ndim;
        const int64_t *d = side ? m->shape : t->size;
        const char *dt = side ? (m->dtype ? m->dtype : "any") : t->dtype->name;

        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%s [",
                                side ? " for " : "", dt);
        for (size_t i = 0; i < nd && len + 1 < sizeof(buf); i++)
            len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%lld",
                                    i ? ", " : "", (long long)d[i]);
        if (len + 1 < sizeof(buf))
            len += (size_t)snprintf(buf + len, sizeof(buf) - len, "]");
    }
    return ck_arena_strdup(a, buf);
}

static int expect_run(ck_job_t *job, void *conf)
{
    expect_conf_t *c = conf;
    const ck_manifest_t *m = c->manifest;
    ck_arena_t *a = ck_job_arena(job);
    ck_strmap_t have = { 0 };
    keyset_t miss = { 0 }, extra = { 0 }, bad = { 0 };
    const char *chosen = NULL;
    ck_py_vec_t *items;
    ck_py_t *sd;
    char msg[3072] = "";
    int fail, rc;

    rc = ck_job_place(job, c->state, &chosen, &sd, &items);
    if (rc <= 0)
        return rc; /* an optional state dict that is absent: nothing to
                      check */
    for (size_t i = 0; i + 1 < items->n; i += 2) {
        ck_py_t *k = items->v[i];
        const ck_tensor_t *t = ck_job_tensor(job, items->v[i + 1]);
        size_t at;

        if (k->kind != CK_PY_STR) {
            rc = keep(a, &extra, k, NULL);
        } else if ((at = ck_strmap_get(&m->by_key, k->u.s.s)) == SIZE_MAX) {
            rc = keep(a, &extra, k, NULL);
        } else {
            const ck_mf_tensor_t *mt = &m->t[at];

            rc = ck_strmap_add(&have, a, k->u.s.s, i);
            if (rc == 0 &&
                (t == NULL || !shape_fits(t, mt) ||
                 (c->dtype == DT_EXACT && mt->dtype != NULL &&
                  strcmp(mt->dtype, t->dtype->name) != 0))) {
                if (bad.n < SHOW)
                    bad.why[bad.n] = why(a, t, mt);
                rc = keep(a, &bad, k, NULL);
            }
        }
        if (rc < 0)
            return ck_job_nomem(job);
    }
    for (size_t i = 0; i < m->n; i++)
        if (ck_strmap_get(&have, m->t[i].key) == SIZE_MAX &&
            keep(a, &miss, NULL, m->t[i].key) < 0)
            return ck_job_nomem(job);
    fail = bad.n > 0 || (c->keys != KEYS_SUBSET && miss.n > 0) ||
           (c->keys != KEYS_SUPERSET && extra.n > 0);
    ck_job_report(job, "expect", CK_F_STR("state", chosen),
                  CK_F_STR("manifest", m->source),
                  CK_F_STR("keys", keys_names[c->keys].name),
                  CK_F_STR("verdict", fail ? "fail" : "pass"),
                  CK_F_U64("missing_count", miss.n),
                  CK_F_KEYS("missing", miss.show, miss.n < SHOW ? miss.n : SHOW),
                  CK_F_U64("unexpected_count", extra.n),
                  CK_F_KEYS("unexpected", extra.show,
                            extra.n < SHOW ? extra.n : SHOW),
                  CK_F_U64("mismatched_count", bad.n),
                  CK_F_KEYS("mismatched", bad.show, bad.n < SHOW ? bad.n : SHOW));
    if (!fail || c->report_only)
        return 0;
    show(msg, sizeof(msg), "missing", c->keys != KEYS_SUBSET ? &miss : &(keyset_t){ 0 });
    show(msg, sizeof(msg), "unexpected",
         c->keys != KEYS_SUPERSET ? &extra : &(keyset_t){ 0 });
    show(msg, sizeof(msg), "mismatched", &bad);
    return ck_job_fail(job, CK_EPLUGIN, "%s does not match %s: %s", chosen,
                       m->source, msg);
}

const ck_plugin_t ck_plugin_expect = {
    .name = "expect",
    .summary = "fail the job unless the state dict loads into the target "
               "model (a manifest) as load_state_dict(strict=True) would",
    .conf_size = sizeof(expect_conf_t),
    .directives = expect_directives,
    .init_conf = expect_init,
    .run = expect_run,
};
