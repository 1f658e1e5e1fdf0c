/*
 * manifest.c -- manifests: the state dict a model expects, read from JSON
 * (jansson) or taken from a reference checkpoint, and the state-dict path
 * alternatives ("best_state/model|model|state_dict") shared by inspect
 * --manifest, diff and the expect plugin.
 *
 * JSON form (version 1):
 *   {"format": "ckprep-manifest", "version": 1, "source": "...",
 *    "state": "model", "tensors": [{"key": K, "dtype": D, "shape": [..]}],
 *    "config_key": "xp.cfg" or null, "config_keys": ["optim.lr", ...]}
 * Only "tensors" is required (with "key" and "shape" in each; "dtype" may
 * be left out, matching any), so a manifest written from
 * model.state_dict() by two lines of Python is one.
 */
#include "manifest.h"

#include "conf.h"

#include "listing.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#define MAX_NDIM 64

ck_py_t *ck_state_find(ck_ckpt_t *c, const char *alts, const char **chosen)
{
    const char *p = alts;

    while (p != NULL) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        char *one = ck_arena_strndup(&c->arena, p, n);
        ck_py_t *v;

        if (one == NULL)
            return NULL;
        v = (n == 0 || strcmp(one, "/") == 0) ? c->pk.root
                                              : ck_ckpt_get(c, one);
        if (v != NULL && ck_py_mapping(v) != NULL &&
            ck_ckpt_tensor(c, v) == NULL) {
            *chosen = n == 0 ? "/" : one;
            return v;
        }
        p = bar ? bar + 1 : NULL;
    }
    return NULL;
}

static int add_tensor(ck_arena_t *a, ck_manifest_t *m, size_t *cap,
                      const char *key, const char *dtype, const int64_t *shape,
                      size_t ndim)
{
    ck_mf_tensor_t *t;

    if (m->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        ck_mf_tensor_t *nv = ck_arena_alloc(a, nc * sizeof(*nv));

        if (nv == NULL)
            return CK_ENOMEM;
        if (m->n)
            memcpy(nv, m->t, m->n * sizeof(*nv));
        m->t = nv;
        *cap = nc;
    }
    t = &m->t[m->n];
    t->key = ck_arena_strdup(a, key);
    t->dtype = dtype ? ck_arena_strdup(a, dtype) : NULL;
    t->ndim = ndim;
    t->shape = ck_arena_alloc(a, (ndim ? ndim : 1) * sizeof(int64_t));
    if (t->key == NULL || t->shape == NULL || (dtype && t->dtype == NULL))
        return CK_ENOMEM;
    if (ndim)
        memcpy(t->shape, shape, ndim * sizeof(int64_t));
    if (ck_strmap_get(&m->by_key, t->key) != SIZE_MAX)
        return 1; /* a key twice */
    if (ck_strmap_add(&m->by_key, a, t->key, m->n) < 0)
        return CK_ENOMEM;
    m->n++;
    return 0;
}

static int from_json(ck_arena_t *a, ck_manifest_t *m, json_t *root,
                     ck_err_t *err)
{
    json_t *ts = json_object_get(root, "tensors"), *e, *ck;
    size_t i, cap = 0;
    const char *f = json_string_value(json_object_get(root, "format"));

    if (f != NULL && strcmp(f, CK_MANIFEST_FORMAT) != 0)
        return ck_err_set(err, CK_EFORMAT, "format is '%s', not '%s'", f,
                          CK_MANIFEST_FORMAT);
    if (json_integer_value(json_object_get(root, "version")) >
        CK_MANIFEST_VERSION)
        return ck_err_set(err, CK_EFORMAT, "manifest version %lld is newer "
                          "than %d", json_integer_value(json_object_get(
                              root, "version")), CK_MANIFEST_VERSION);
    if (!json_is_array(ts))
        return ck_err_set(err, CK_EFORMAT, "no \"tensors\" array");
    json_array_foreach(ts, i, e) {
        json_t *k = json_object_get(e, "key"), *sh = json_object_get(e, "shape");
        const char *dt = json_string_value(json_object_get(e, "dtype"));
        int64_t dims[MAX_NDIM];
        size_t d;
        json_t *x;
        int rc;

        if (!json_is_string(k) || !json_is_array(sh) ||
            json_array_size(sh) > MAX_NDIM)
            return ck_err_set(err, CK_EFORMAT, "tensors[%zu]: needs \"key\" "
                              "(a string) and \"shape\" (a list of ints)", i);
        json_array_foreach(sh, d, x) {
            if (!json_is_integer(x) || json_integer_value(x) < 0)
                return ck_err_set(err, CK_EFORMAT, "tensors[%zu]: shape "
                                  "holds no non-negative int", i);
            dims[d] = json_integer_value(x);
        }
        rc = add_tensor(a, m, &cap, json_string_value(k), dt, dims,
                        json_array_size(sh));
        if (rc == 1)
            return ck_err_set(err, CK_EFORMAT, "key '%s' twice",
                              json_string_value(k));
        if (rc < 0)
            return ck_err_set(err, rc, "out of memory");
    }
    ck = json_object_get(root, "config_keys");
    m->nconfig = json_is_array(ck) ? json_array_size(ck) : 0;
    m->config_keys = ck_arena_alloc(a, (m->nconfig + 1) * sizeof(char *));
    if (m->config_keys == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    for (i = 0; i < m->nconfig; i++) {
        const char *s = json_string_value(json_array_get(ck, i));

        m->config_keys[i] = ck_arena_strdup(a, s ? s : "");
        if (m->config_keys[i] == NULL)
            return ck_err_set(err, CK_ENOMEM, "out of memory");
    }
    f = json_string_value(json_object_get(root, "state"));
    m->state = ck_arena_strdup(a, f ? f : "");
    return m->state ? 0 : ck_err_set(err, CK_ENOMEM, "out of memory");
}

typedef struct {
    ck_arena_t *a;
    char **v;
    size_t n, cap;
} keys_t;

static int ckey_cb(void *ud, const char *path, const ck_yval_t *v)
{
    keys_t *k = ud;

    if (k->n == k->cap) {
        size_t nc = k->cap ? k->cap * 2 : 32;
        char **nv = ck_arena_alloc(k->a, (nc + 1) * sizeof(*nv));

        if (nv == NULL)
            return CK_ENOMEM;
        if (k->n)
            memcpy(nv, k->v, k->n * sizeof(*nv));
        k->v = nv;
        k->cap = nc;
    }
    k->v[k->n] = ck_arena_strdup(k->a, path);
    return k->v[k->n++] ? 0 : CK_ENOMEM;
}

static int from_ckpt(ck_arena_t *a, ck_manifest_t *m, const char *path,
                     const char *state, const ck_open_opts_t *opts,
                     ck_err_t *err)
{
    ck_ckpt_t c;
    const char *chosen = NULL, *ckey = NULL;
    ck_py_vec_t *items;
    ck_py_t *sd;
    ck_err_t cerr = { 0 };
    ck_yval_t *cfg;
    keys_t keys = { a, NULL, 0, 0 };
    size_t cap = 0;
    int rc;

    rc = ck_ckpt_open(&c, path, opts, err);
    if (rc < 0)
        goto out;
    sd = ck_state_find(&c, state, &chosen);
    items = sd ? ck_py_mapping(sd) : NULL;
    if (items == NULL) {
        rc = ck_err_set(err, CK_EFORMAT, "no state dict at %s", state);
        goto out;
    }
    for (size_t i = 0; i + 1 < items->n && rc == 0; i += 2) {
        ck_tensor_t *t = ck_ckpt_tensor(&c, items->v[i + 1]);

        if (t == NULL || items->v[i]->kind != CK_PY_STR)
            continue;
        rc = add_tensor(a, m, &cap, items->v[i]->u.s.s, t->dtype->name,
                        t->size, t->ndim);
        if (rc == 1)
            rc = 0;
    }
    m->state = ck_arena_strdup(a, chosen);
    cfg = ck_listing_config(&c, &ckey, &cerr);
    if (rc == 0 && cfg != NULL)
        rc = ck_listing_leaves(&c.arena, cfg, ckey_cb, &keys);
    m->config_keys = keys.v;
    m->nconfig = keys.n;
    if (rc == 0 && m->state == NULL)
        rc = CK_ENOMEM;
    if (rc < 0)
        ck_err_set(err, rc, "out of memory");
out:
    ck_ckpt_close(&c);
    return rc;
}

int ck_manifest_read(ck_arena_t *a, const char *path, const char *state,
                     const ck_open_opts_t *opts, ck_manifest_t **out,
                     ck_err_t *err)
{
    ck_manifest_t *m = ck_arena_alloc(a, sizeof(*m));
    FILE *f = fopen(path, "rb");
    ck_err_t e = { 0 };
    int ch = EOF, rc;

    if (m == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    memset(m, 0, sizeof(*m));
    m->source = ck_arena_strdup(a, path);
    if (f == NULL)
        return ck_err_set(err, -errno, "%s: %s", path, strerror(errno));
    do
        ch = fgetc(f);
    while (ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r');
    if (ch == '{') {
        json_error_t jerr;
        json_t *root;

        rewind(f);
        root = json_loadf(f, 0, &jerr);
        fclose(f);
        if (root == NULL)
            return ck_err_set(err, CK_EFORMAT, "%s:%d: %s", path, jerr.line,
                              jerr.text);
        rc = from_json(a, m, root, &e);
        json_decref(root);
    } else {
        fclose(f);
        rc = from_ckpt(a, m, path, state, opts, &e);
    }
    if (rc < 0)
        return ck_err_set(err, rc, "%s: %s", path, e.msg);
    *out = m;
    return 0;
}

int ck_manifest_load(ck_conf_ctx_t *cx, const char *path, const char *state,
                     ck_manifest_t **out)
{
    const char *slash = cx->file ? strrchr(cx->file, '/') : NULL;
    char *full = (char *)path;
    int rc;

    if (path[0] != '/' && slash != NULL) {
        full = ck_arena_printf(cx->arena, "%.*s/%s",
                               (int)(slash - cx->file), cx->file, path);
        if (full == NULL)
            return ck_err_set(cx->err, CK_ENOMEM, "out of memory");
    }
    {
        ck_open_opts_t o;

        ck_conf_open_opts(cx->loader, &o);
        rc = ck_manifest_read(cx->arena, full, state, &o, out, cx->err);
    }
    if (rc < 0)
        cx->err->code = CK_ECONFIG;
    return rc < 0 ? CK_ECONFIG : 0;
}
