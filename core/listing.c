/*
 * listing.c -- the detailed views of `ckprep inspect`: one entry per
 * tensor (--tensors), the config as OmegaConf.to_yaml prints it
 * (--config) and the manifest (--manifest), as text or as one JSON
 * document.  The tensor walk (ck_listing_walk) is shared with `ckprep
 * diff` and the manifest reader.
 *
 * A tensor's place is its group (the '/' path of the mapping or sequence
 * holding it, "/" for the root) and its key there; groups come in the
 * pickle's order.  Nothing here reads a tensor byte.
 */
#include "listing.h"

#include "manifest.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#define WALK_DEPTH 16
#define PATH_MAX_LEN 1024
/* Containers one walk enters at most: memo can share one many times over */
#define WALK_BUDGET (1u << 22)

typedef struct {
    ck_ckpt_t *c;
    ck_listing_cb cb;
    void *ud;
    int rc;
    size_t left; /* of WALK_BUDGET */
} walk_t;

/* A key as text: a str as it is, an int in decimal, else "<TYPE>". */
static const char *key_text(ck_arena_t *a, const ck_py_t *k, size_t *n)
{
    const char *s;

    if (k->kind == CK_PY_STR) {
        *n = k->len;
        return k->u.s.s;
    }
    if (k->kind == CK_PY_INT && !k->len)
        s = ck_arena_printf(a, "%lld", (long long)k->u.i.v);
    else
        s = "<non-str key>";
    *n = s ? strlen(s) : 0;
    return s;
}

static void walk(walk_t *w, ck_py_t *p, char *path, size_t len, int depth)
{
    ck_py_vec_t *m = ck_py_mapping(p);
    int seq = p->kind == CK_PY_LIST || p->kind == CK_PY_TUPLE;
    size_t step = m != NULL ? 2 : 1;

    if (w->rc != 0 || depth > WALK_DEPTH || (m == NULL && !seq))
        return;
    if (ck_ckpt_tensor(w->c, p) != NULL)
        return;
    if (w->left-- == 0) {
        w->rc = CK_ELIMIT;
        return;
    }
    if (seq)
        m = &p->u.seq;
    for (size_t i = 0; i + step - 1 < m->n && w->rc == 0; i += step) {
        ck_py_t *v = m->v[i + step - 1];
        ck_tensor_t *t = ck_ckpt_tensor(w->c, v);
        char ibuf[24];
        const char *k;
        size_t kn, n;

        if (step == 2) {
            k = key_text(&w->c->arena, m->v[i], &kn);
        } else {
            kn = (size_t)snprintf(ibuf, sizeof(ibuf), "%zu", i);
            k = ibuf;
        }
        if (k == NULL) {
            w->rc = CK_ENOMEM;
            return;
        }
        if (t != NULL) {
            w->rc = w->cb(w->ud, len ? path : "/", k, kn, t, v);
            continue;
        }
        n = len + (len > 0) + kn;
        if (n >= PATH_MAX_LEN || memchr(k, '\0', kn) != NULL)
            continue;
        if (len > 0)
            path[len] = '/';
        memcpy(path + len + (len > 0), k, kn);
        path[n] = '\0';
        walk(w, v, path, n, depth + 1);
        path[len] = '\0';
    }
}

int ck_listing_walk(ck_ckpt_t *c, ck_py_t *from, ck_listing_cb cb, void *ud)
{
    char path[PATH_MAX_LEN] = "";
    walk_t w = { c, cb, ud, 0, WALK_BUDGET };

    if (from == NULL)
        from = c->pk.root;
    walk(&w, from, path, 0, 0);
    return w.rc;
}

/* ---- --tensors ------------------------------------------------------- */

typedef struct {
    ck_ckpt_t *c;
    const ck_listing_opts_t *o;
    FILE *out;
    ck_json_t *j;
    const char *group; /* the last group printed (text) */
    size_t count;
    ck_strmap_t users; /* storage key -> index in nusers */
    size_t *nusers;    /* tensors listed on each storage */
    size_t nst, capst;
} tl_t;

/* First pass: how many listed tensors use each storage (tied weights). */
static int count_cb(void *ud, const char *group, const char *k, size_t kn,
                    const ck_tensor_t *t, ck_py_t *node)
{
    tl_t *l = ud;
    size_t at = ck_strmap_get(&l->users, t->st->key);

    if (at != SIZE_MAX) {
        l->nusers[at]++;
        return 0;
    }
    if (l->nst == l->capst) {
        size_t nc = l->capst ? l->capst * 2 : 64;
        size_t *nv = ck_arena_alloc(&l->c->arena, nc * sizeof(*nv));

        if (nv == NULL)
            return CK_ENOMEM;
        if (l->nst)
            memcpy(nv, l->nusers, l->nst * sizeof(*nv));
        l->nusers = nv;
        l->capst = nc;
    }
    l->nusers[l->nst] = 1;
    return ck_strmap_add(&l->users, &l->c->arena, t->st->key, l->nst++);
}

static size_t users_of(const tl_t *l, const ck_tensor_t *t)
{
    size_t at = ck_strmap_get(&l->users, t->st->key);

    return at == SIZE_MAX ? 0 : l->nusers[at];
}

void ck_listing_put(FILE *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (ch < 0x20 || ch == 0x7f || ch == '\\')
            fprintf(out, ch == '\\' ? "\\\\" : "\\x%02x", ch);
        else
            fputc(ch, out);
    }
}

static void dims_text(FILE *out, const int64_t *d, size_t n)
{
    fputc('[', out);
    for (size_t i = 0; i < n; i++)
        fprintf(out, "%s%lld", i ? ", " : "", (long long)d[i]);
    fputc(']', out);
}

static void dims_json(ck_json_t *j, const int64_t *d, size_t n)
{
    ck_json_arr(j);
    for (size_t i = 0; i < n; i++)
        ck_json_int(j, d[i]);
    ck_json_end(j);
}

void ck_listing_brief(ck_json_t *j, const char *k, size_t kn,
                      const ck_tensor_t *t)
{
    ck_json_key(j, "key");
    ck_json_strn(j, k, kn);
    ck_json_key(j, "dtype");
    ck_json_str(j, t->dtype->name);
    ck_json_key(j, "shape");
    dims_json(j, t->size, t->ndim);
}

static int is_parameter(ck_py_t *node)
{
    return (node->kind == CK_PY_REDUCE || node->kind == CK_PY_NEWOBJ) &&
           ck_py_global_is(node->u.o.fn, "torch._utils", "_rebuild_parameter");
}

/* A Parameter's requires_grad (_rebuild_parameter(data, requires_grad,
 * hooks)), else the tensor's. */
static int requires_grad(const ck_tensor_t *t, ck_py_t *node)
{
    uint32_t n = 0;
    ck_py_t **v = is_parameter(node) ? ck_py_args(node, &n) : NULL;

    if (v != NULL && n >= 2 && v[1]->kind == CK_PY_BOOL)
        return v[1]->b;
    return t->requires_grad;
}

static void tensor_json(ck_json_t *j, const char *group, const char *k,
                        size_t kn, const ck_tensor_t *t, ck_py_t *node,
                        size_t users)
{
    ck_json_obj(j);
    ck_json_key(j, "state");
    ck_json_str(j, group);
    ck_listing_brief(j, k, kn, t);
    ck_json_key(j, "numel");
    ck_json_u64(j, t->numel);
    ck_json_key(j, "bytes");
    ck_json_u64(j, t->numel * t->dtype->itemsize);
    ck_json_key(j, "storage");
    ck_json_str(j, t->st->key);
    ck_json_key(j, "offset");
    ck_json_u64(j, t->offset);
    ck_json_key(j, "stride");
    if (ck_tensor_contiguous(t))
        ck_json_null(j);
    else
        dims_json(j, t->stride, t->ndim);
    ck_json_key(j, "parameter");
    ck_json_bool(j, is_parameter(node));
    ck_json_key(j, "requires_grad");
    ck_json_bool(j, requires_grad(t, node));
    ck_json_key(j, "shared");
    ck_json_u64(j, users > 1 ? users : 0);
    ck_json_end(j);
}

static int tensor_cb(void *ud, const char *group, const char *k, size_t kn,
                     const ck_tensor_t *t, ck_py_t *node)
{
    tl_t *l = ud;
    char h[32];

    if (l->o->glob != NULL) {
        char *key = ck_arena_strndup(&l->c->arena, k, kn);

        if (key == NULL)
            return CK_ENOMEM;
        if (fnmatch(l->o->glob, key, 0) != 0)
            return 0;
    }
    l->count++;
    if (l->j != NULL) {
        tensor_json(l->j, group, k, kn, t, node, users_of(l, t));
        return 0;
    }
    if (l->group == NULL || strcmp(l->group, group) != 0) {
        l->group = ck_arena_strdup(&l->c->arena, group);
        if (l->group == NULL)
            return CK_ENOMEM;
        ck_listing_put(l->out, group, strlen(group));
        fputs(":\n", l->out);
    }
    fputs("  ", l->out);
    ck_listing_put(l->out, k, kn);
    fprintf(l->out, "  %s ", t->dtype->name);
    dims_text(l->out, t->size, t->ndim);
    if (l->o->bytes)
        fprintf(l->out, " %llu %llu B", (unsigned long long)t->numel,
                (unsigned long long)(t->numel * t->dtype->itemsize));
    else {
        ck_inspect_human(h, sizeof(h), t->numel * t->dtype->itemsize);
        fprintf(l->out, " %llu %s", (unsigned long long)t->numel, h);
    }
    fputs("  storage ", l->out);
    ck_listing_put(l->out, t->st->key, strlen(t->st->key));
    if (t->offset)
        fprintf(l->out, "+%llu", (unsigned long long)t->offset);
    if (!ck_tensor_contiguous(t)) {
        fputs(" stride ", l->out);
        dims_text(l->out, t->stride, t->ndim);
    }
    if (is_parameter(node))
        fputs(requires_grad(t, node) ? " Parameter"
                                     : " Parameter(requires_grad=False)",
              l->out);
    else if (t->requires_grad)
        fputs(" requires_grad", l->out);
    if (users_of(l, t) > 1)
        fprintf(l->out, " shared(%zu)", users_of(l, t));
    fputc('\n', l->out);
    return 0;
}

int ck_listing_tensors(ck_ckpt_t *c, const ck_listing_opts_t *o, FILE *out,
                       ck_json_t *j)
{
    tl_t l = { c, o, out, j, NULL, 0 };
    int rc = ck_listing_walk(c, NULL, count_cb, &l);

    if (j != NULL) {
        ck_json_key(j, "tensors");
        ck_json_arr(j);
    }
    if (rc == 0)
        rc = ck_listing_walk(c, NULL, tensor_cb, &l);
    if (j != NULL)
        ck_json_end(j);
    else if (rc == 0 && l.count == 0)
        fprintf(out, "(no tensor%s%s)\n", o->glob ? " matches " : "",
                o->glob ? o->glob : "");
    return rc;
}

/* ---- --config ---------------------------------------------------------- */

/* The step of a dotted path at s: a key up to the next '.', or [N]. */
static ck_yval_t *select_yv(ck_yval_t *v, const char *path)
{
    char key[256];

    while (v != NULL && *path != '\0') {
        size_t n = strcspn(path, ".[");
        int idx = -1;

        if (*path == '[') {
            idx = atoi(path + 1);
            n = strcspn(path, "]") + 1;
        } else if (n >= sizeof(key)) {
            return NULL;
        }
        if (idx < 0 && v->kind == CK_YV_SEQ) {
            memcpy(key, path, n);
            key[n] = '\0';
            idx = atoi(key);
        }
        if (idx >= 0) {
            if (v->kind != CK_YV_SEQ || (size_t)idx >= v->n)
                return NULL;
            v = v->v[idx];
        } else {
            int i;

            if (v->kind != CK_YV_MAP)
                return NULL;
            memcpy(key, path, n);
            key[n] = '\0';
            i = ck_yval_find(v, key);
            v = i < 0 ? NULL : v->v[2 * i + 1];
        }
        path += n;
        if (*path == '.')
            path++;
    }
    return v;
}

ck_yval_t *ck_listing_config(ck_ckpt_t *c, const char **key, ck_err_t *err)
{
    ck_py_t *v = ck_inspect_config_value(c, key);
    ck_yaml_ctx_t y = { &c->arena, err, "config", 0, 0 };
    ck_yval_t *t;

    if (v == NULL) {
        ck_err_set(err, CK_EFORMAT, "no config (xp.cfg, cfg, config, "
                                    "hyper_parameters, hparams, a DictConfig)");
        return NULL;
    }
    if (v->kind == CK_PY_STR) {
        t = ck_yaml_parse(&y, v->u.s.s, v->len);
        if (t != NULL && ck_yval_retype(&c->arena, t) < 0)
            t = NULL;
    } else {
        t = ck_omc_yval(&c->arena, v);
    }
    if (t == NULL && err->code == 0)
        ck_err_set(err, CK_ENOMEM, "out of memory");
    return t;
}

int ck_listing_config_out(ck_ckpt_t *c, const char *path, FILE *out,
                          ck_json_t *j, ck_err_t *err)
{
    const char *key = NULL;
    ck_yval_t *t = ck_listing_config(c, &key, err);
    ck_buf_t b = { 0 };
    int rc;

    if (t == NULL)
        return err->code;
    if (path != NULL && (t = select_yv(t, path)) == NULL)
        return ck_err_set(err, CK_EFORMAT, "config %s has no key '%s'", key,
                          path);
    if (j != NULL) {
        ck_json_key(j, "config_key");
        ck_json_str(j, key);
        ck_json_key(j, "config");
        ck_yval_json(j, &c->arena, t);
        return 0;
    }
    if (t->kind == CK_YV_SCALAR) {
        ck_listing_put(out, t->text, t->len);
        fputc('\n', out);
        return 0;
    }
    rc = ck_yaml_emit_pyyaml(t, "config", &b, err);
    if (rc == 0 && b.len > 0)
        fwrite(b.data, 1, b.len, out);
    ck_buf_release(&b);
    return rc;
}

/* ---- config leaves ----------------------------------------------------- */

static int leaves(ck_arena_t *a, const ck_yval_t *v, char *path, size_t len,
                  ck_leaf_cb cb, void *ud, int depth)
{
    if (v->kind != CK_YV_MAP || depth > 64 || (v->n == 0 && len > 0))
        return len > 0 ? cb(ud, path, v) : 0;
    for (size_t i = 0; i + 1 < v->n; i += 2) {
        const ck_yval_t *k = v->v[i];
        size_t n = len + (len > 0) + k->len;
        int rc;

        if (n >= PATH_MAX_LEN)
            continue;
        if (len > 0)
            path[len] = '.';
        memcpy(path + len + (len > 0), k->text, k->len);
        path[n] = '\0';
        rc = leaves(a, v->v[i + 1], path, n, cb, ud, depth + 1);
        path[len] = '\0';
        if (rc != 0)
            return rc;
    }
    return 0;
}

int ck_listing_leaves(ck_arena_t *a, const ck_yval_t *v, ck_leaf_cb cb,
                      void *ud)
{
    char path[PATH_MAX_LEN] = "";

    return leaves(a, v, path, 0, cb, ud, 0);
}

/* ---- --manifest ---------------------------------------------------------- */

static int leaf_key_cb(void *ud, const char *path, const ck_yval_t *v)
{
    ck_json_str(ud, path);
    return 0;
}

int ck_listing_manifest(ck_ckpt_t *c, const char *state, ck_json_t *j,
                        ck_err_t *err)
{
    const char *chosen = NULL;
    ck_py_t *sd = ck_state_find(c, state, &chosen);
    ck_py_vec_t *m = sd ? ck_py_mapping(sd) : NULL;
    const char *key = NULL;
    ck_err_t cerr = { 0 };
    ck_yval_t *cfg;

    if (m == NULL)
        return ck_err_set(err, CK_EFORMAT, "no state dict at %s", state);
    ck_json_obj(j);
    ck_json_key(j, "format");
    ck_json_str(j, CK_MANIFEST_FORMAT);
    ck_json_key(j, "version");
    ck_json_int(j, CK_MANIFEST_VERSION);
    ck_json_key(j, "source");
    ck_json_str(j, c->path);
    ck_json_key(j, "state");
    ck_json_str(j, chosen);
    ck_json_key(j, "tensors");
    ck_json_arr(j);
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        ck_tensor_t *t = ck_ckpt_tensor(c, m->v[i + 1]);
        size_t kn;
        const char *k = key_text(&c->arena, m->v[i], &kn);

        if (t == NULL || k == NULL)
            continue;
        ck_json_obj(j);
        ck_listing_brief(j, k, kn, t);
        ck_json_end(j);
    }
    ck_json_end(j);
    cfg = ck_listing_config(c, &key, &cerr);
    ck_json_key(j, "config_key");
    if (cfg != NULL)
        ck_json_str(j, key);
    else
        ck_json_null(j);
    ck_json_key(j, "config_keys");
    ck_json_arr(j);
    if (cfg != NULL)
        ck_listing_leaves(&c->arena, cfg, leaf_key_cb, j);
    ck_json_end(j);
    ck_json_end(j);
    return j->b.oom ? CK_ENOMEM : 0;
}

/* ---- the views together -------------------------------------------------- */

int ck_listing_print(ck_ckpt_t *c, const ck_listing_req_t *r, FILE *out,
                     ck_err_t *err)
{
    ck_json_t j = { 0 };
    int rc = 0;

    if (r->manifest != NULL) {
        rc = ck_listing_manifest(c, r->manifest, &j, err);
    } else if (!r->json) {
        if (r->tensors)
            rc = ck_listing_tensors(c, &r->lo, out, NULL);
        if (rc == 0 && r->config)
            rc = ck_listing_config_out(c, r->config_path, out, NULL, err);
        if (rc == CK_ELIMIT)
            ck_err_set(err, rc, "more than %u containers to walk (one "
                       "shared many times over)", WALK_BUDGET);
        if (rc < 0 && err->code == 0)
            ck_err_set(err, rc, "%s", ck_strerror(rc));
        return rc;
    } else {
        ck_json_obj(&j);
        ck_json_key(&j, "path");
        ck_json_str(&j, c->path);
        if (r->tensors)
            rc = ck_listing_tensors(c, &r->lo, out, &j);
        if (rc == 0 && r->config)
            rc = ck_listing_config_out(c, r->config_path, out, &j, err);
        ck_json_end(&j);
    }
    if (rc == 0 && j.b.oom)
        rc = CK_ENOMEM;
    if (rc == CK_ELIMIT)
        ck_err_set(err, rc, "more than %u containers to walk (one shared "
                   "many times over)", WALK_BUDGET);
    if (rc == 0)
        fprintf(out, "%s\n", ck_json_text(&j));
    else if (err->code == 0)
        ck_err_set(err, rc, "%s", ck_strerror(rc));
    ck_json_release(&j);
    return rc;
}
