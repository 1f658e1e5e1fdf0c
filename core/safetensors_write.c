/*
 * safetensors_write.c -- a state dict written as a safetensors file (see
 * safetensors.h): the plan (which tensors, their ranges, tied names, the
 * header) is made first, so a dry run refuses what a write would; then the
 * header and each tensor's elements are streamed to a temporary file in
 * bounded chunks, converted when cast and gathered when a view is not
 * contiguous, and the file is renamed into place as ck_ckpt_write does.
 */
#define _GNU_SOURCE
#include "safetensors.h"

#include "json.h"
#include "omegaconf.h"
#include "ostream.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#define SPAN_MAX (256ull << 20) /* a strided view read whole up to this */

/* The first of "a|b|c" that exists ("/" is the top). */
static ck_py_t *pick_state(ck_ckpt_t *c, const char *alts, const char **chosen)
{
    for (const char *p = alts; *p != '\0';) {
        size_t n = strcspn(p, "|");
        char *path = ck_arena_strndup(&c->arena, p, n);
        ck_py_t *v = NULL;

        if (path == NULL)
            return NULL;
        v = strcmp(path, "/") == 0 ? c->pk.root : ck_ckpt_get(c, path);
        if (v != NULL) {
            *chosen = path;
            return v;
        }
        p += n + (p[n] == '|');
    }
    return NULL;
}

/* Where t's storage is among the input's storages: its persistent id's
 * tie (the scan's), not where its record lies in memory -- the aliases
 * are listed in this order. */
static size_t storage_order(const ck_tensor_t *t)
{
    uint32_t n;

    return ck_ckpt_pid_index(ck_py_args(t->node, &n)[0]);
}

/* Order for finding tied tensors: same storage and view next to each
 * other, storages in the input's order, then by name. */
static int cmp_view(const void *pa, const void *pb)
{
    const ck_st_entry_t *a = pa, *b = pb;
    const ck_tensor_t *x = a->t, *y = b->t;

    if (x->st != y->st)
        return storage_order(x) < storage_order(y) ? -1 : 1;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    if (x->dtype != y->dtype)
        return (uintptr_t)x->dtype < (uintptr_t)y->dtype ? -1 : 1;
    if (x->ndim != y->ndim)
        return x->ndim < y->ndim ? -1 : 1;
    for (size_t i = 0; i < x->ndim; i++) {
        if (x->size[i] != y->size[i])
            return x->size[i] < y->size[i] ? -1 : 1;
        if (x->stride[i] != y->stride[i])
            return x->stride[i] < y->stride[i] ? -1 : 1;
    }
    return strcmp(a->name, b->name);
}

static int same_view(const ck_tensor_t *x, const ck_tensor_t *y)
{
    if (x->st != y->st || x->offset != y->offset || x->dtype != y->dtype ||
        x->ndim != y->ndim)
        return 0;
    for (size_t i = 0; i < x->ndim; i++)
        if (x->size[i] != y->size[i] || x->stride[i] != y->stride[i])
            return 0;
    return 1;
}

/* Find tied names; keep the first of each group (sorted by name), and drop
 * the others from p->e (marking them with t = NULL first). */
static int dedupe(ck_ckpt_t *c, const ck_output_conf_t *o, ck_st_plan_t *p,
                  ck_err_t *err)
{
    ck_st_entry_t *s = ck_arena_alloc(&c->arena, (p->n + 1) * sizeof(*s));
    size_t k = 0;

    if (s == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    if (p->n)
        memcpy(s, p->e, p->n * sizeof(*s));
    qsort(s, p->n, sizeof(*s), cmp_view);
    p->alias = ck_arena_alloc(&c->arena, (p->n + 1) * sizeof(*p->alias));
    p->kept = ck_arena_alloc(&c->arena, (p->n + 1) * sizeof(*p->kept));
    if (p->alias == NULL || p->kept == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    for (size_t i = 1, g = 0; i < p->n; i++) {
        if (!same_view(s[g].t, s[i].t) || s[i].t->numel == 0) {
            g = i;
            continue;
        }
        if (o->tied != CK_TIED_DEDUPE)
            return ck_err_set(err, CK_EFORMAT,
                              "'%s' and '%s' are one tensor (tied weights): "
                              "safetensors cannot share it; [output] tied = "
                              "dedupe keeps '%s' and lists the other in "
                              "__metadata__", s[g].name, s[i].name, s[g].name);
        p->alias[p->nalias] = s[i].name;
        p->kept[p->nalias++] = s[g].name;
    }
    for (size_t i = 0; i < p->n; i++) {
        int dropped = 0;

        for (size_t a = 0; a < p->nalias && !dropped; a++)
            dropped = p->alias[a] == p->e[i].name;
        if (!dropped)
            p->e[k++] = p->e[i];
    }
    p->n = k;
    return 0;
}

/* 1 when the input's __metadata__ has key k. */
static int in_meta(const ck_ckpt_t *c, const char *k)
{
    return c->st_meta != NULL && ck_py_map_get(c->st_meta, k, NULL) != NULL;
}

/* A config as JSON: OmegaConf containers and plain dicts/lists by their
 * items, leaves by their values (ck_omc_json). */
static void config_json(ck_json_t *j, ck_py_t *n, int depth)
{
    int is_dict = 0;
    ck_py_vec_t *ch = ck_omc_children(n, &is_dict);

    if (ch == NULL && n != NULL &&
        (n->kind == CK_PY_DICT || n->kind == CK_PY_LIST ||
         n->kind == CK_PY_TUPLE)) {
        ch = &n->u.seq;
        is_dict = n->kind == CK_PY_DICT;
    }
    if (ch == NULL || depth > 64) {
        ck_omc_json(j, n);
        return;
    }
    if (is_dict)
        ck_json_obj(j);
    else
        ck_json_arr(j);
    for (size_t i = 0; i < ch->n; i += is_dict ? 2 : 1) {
        if (is_dict) {
            ck_py_t *k = ch->v[i];
            char num[32];

            if (i + 1 >= ch->n)
                break;
            if (ck_py_str_plain(k)) {
                ck_json_key(j, k->u.s.s);
            } else {
                snprintf(num, sizeof(num), "%lld",
                         k->kind == CK_PY_INT ? (long long)k->u.i.v : 0LL);
                ck_json_key(j, num);
            }
        }
        config_json(j, ch->v[i + (is_dict ? 1 : 0)], depth + 1);
    }
    ck_json_end(j);
}

static int header(ck_ckpt_t *c, const ck_output_conf_t *o, ck_st_plan_t *p,
                  ck_err_t *err)
{
    ck_json_t j = { 0 };
    size_t pad;
    int rc = 0;

    ck_buf_put(&j.b, "\0\0\0\0\0\0\0\0", 8);
    ck_json_obj(&j);
    ck_json_key(&j, "__metadata__");
    ck_json_obj(&j);
    if (c->st_meta != NULL)
        for (size_t i = 0; i + 1 < c->st_meta->u.seq.n; i += 2) {
            ck_py_t *k = c->st_meta->u.seq.v[i], *v = c->st_meta->u.seq.v[i + 1];

            if (ck_py_str_eq(k, "format"))
                continue;
            ck_json_key(&j, k->u.s.s);
            ck_json_strn(&j, v->u.s.s, v->len);
        }
    ck_json_key(&j, "format");
    ck_json_str(&j, "pt");
    if (o->config != NULL && ck_ckpt_get(c, o->config) != NULL &&
        !in_meta(c, "ckprep.config")) {
        ck_json_t cj = { 0 };

        config_json(&cj, ck_ckpt_get(c, o->config), 0);
        ck_json_key(&j, "ckprep.config");
        ck_json_strn(&j, cj.b.data ? (const char *)cj.b.data : "", cj.b.len);
        if (cj.b.oom)
            j.b.oom = 1;
        ck_json_release(&cj);
    }
    /* as safetensors' save_model: dropped name -> kept name, unless the
     * metadata says something of that name already */
    for (size_t i = 0; i < p->nalias; i++) {
        if (in_meta(c, p->alias[i]) || strcmp(p->alias[i], "format") == 0)
            continue;
        ck_json_key(&j, p->alias[i]);
        ck_json_str(&j, p->kept[i]);
    }
    ck_json_end(&j);
    for (size_t i = 0; i < p->n; i++) {
        const ck_tensor_t *t = p->e[i].t;

        ck_json_key(&j, p->e[i].name);
        ck_json_obj(&j);
        ck_json_key(&j, "dtype");
        ck_json_str(&j, ck_st_dtype_name(t->dtype));
        ck_json_key(&j, "shape");
        ck_json_arr(&j);
        for (size_t d = 0; d < t->ndim; d++)
            ck_json_int(&j, t->size[d]);
        ck_json_end(&j);
        ck_json_key(&j, "data_offsets");
        ck_json_arr(&j);
        ck_json_u64(&j, p->e[i].begin);
        ck_json_u64(&j, p->e[i].end);
        ck_json_end(&j);
        ck_json_end(&j);
    }
    ck_json_end(&j);
    pad = (8 - j.b.len % 8) % 8;
    for (size_t i = 0; i < pad; i++)
        ck_buf_putc(&j.b, ' ');
    if (j.b.oom) {
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
    } else {
        uint64_t n = j.b.len - 8;

        for (int i = 0; i < 8; i++)
            j.b.data[i] = (uint8_t)(n >> (8 * i));
        p->header = j.b;
        j.b = (ck_buf_t){ 0 };
    }
    ck_json_release(&j);
    return rc;
}

int ck_st_plan(ck_ckpt_t *c, const ck_output_conf_t *o, ck_st_plan_t *p,
               ck_err_t *err)
{
    ck_py_t *sd;
    ck_py_vec_t *m;
    uint64_t pos = 0;
    int rc;

    memset(p, 0, sizeof(*p));
    sd = pick_state(c, o->state, &p->state);
    if (sd == NULL)
        return ck_err_set(err, CK_EFORMAT,
                          "no state dict for safetensors: none of '%s' is in "
                          "the checkpoint", o->state);
    m = ck_py_mapping(sd);
    if (m == NULL)
        return ck_err_set(err, CK_EFORMAT, "'%s' is not a dict", p->state);
    p->e = ck_arena_alloc(&c->arena, (m->n / 2 + 1) * sizeof(*p->e));
    if (p->e == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        ck_py_t *k = m->v[i];
        const ck_tensor_t *t = ck_ckpt_tensor(c, m->v[i + 1]);

        if (!ck_py_str_plain(k) || !ck_utf8_valid(k->u.s.s, k->len))
            return ck_err_set(err, CK_EFORMAT,
                              "%s: item %zu: safetensors names are UTF-8 str, "
                              "this key is a %s", p->state, i / 2,
                              ck_py_type_name(k));
        if (t == NULL)
            return ck_err_set(err, CK_EFORMAT,
                              "%s: '%s' is not a tensor (safetensors holds "
                              "only tensors)", p->state, k->u.s.s);
        if (ck_st_dtype_name(t->dtype) == NULL)
            return ck_err_set(err, CK_EUNSUPPORTED,
                              "%s: '%s' is %s, which safetensors cannot name",
                              p->state, k->u.s.s, t->dtype->name);
        if (strcmp(k->u.s.s, "__metadata__") == 0)
            return ck_err_set(err, CK_EFORMAT,
                              "%s: a tensor named __metadata__", p->state);
        p->e[p->n++] = (ck_st_entry_t){ k->u.s.s, t, 0, 0 };
    }
    rc = dedupe(c, o, p, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < p->n; i++) {
        p->e[i].begin = pos;
        pos += p->e[i].t->numel * p->e[i].t->dtype->itemsize;
        p->e[i].end = pos;
    }
    p->data_bytes = pos;
    return header(c, o, p, err);
}

void ck_st_plan_release(ck_st_plan_t *p)
{
    ck_buf_release(&p->header);
}

/* ---- writing ----------------------------------------------------------- */

typedef struct {
    ck_ckpt_t *c;
    ck_st_plan_t *p;
    ck_ostream_t os;
    XXH3_state_t *sum;  /* the tensor being written, NULL for the header */
} out_t;

static int sink_cb(void *arg, const void *p, size_t n, ck_err_t *err)
{
    out_t *w = arg;

    if (w->c->cancel != NULL && __atomic_load_n(w->c->cancel, __ATOMIC_RELAXED))
        return ck_err_set(err, CK_ECANCELED, "abandoned: ckprep is stopping");
    if (w->sum != NULL)
        XXH3_64bits_update(w->sum, p, n);
    return ck_ostream_write(&w->os, p, n, err);
}

/*
 * A view that is not contiguous, in row-major order: its span read whole
 * when small enough; else a row at a time (streamed) when its last
 * dimension is contiguous, else an element at a time (correct, slow).
 */
static int gather(out_t *w, const ck_tensor_t *t, ck_err_t *err)
{
    size_t isz = t->dtype->itemsize, nd = t->ndim;
    uint64_t per = t->st->dt ? 1 : isz, span = 1, idx[64] = { 0 };
    int rows = nd > 0 && t->stride[nd - 1] == 1;
    uint64_t step = rows ? (uint64_t)t->size[nd - 1] : 1;
    size_t top = rows ? nd - 1 : nd; /* dimensions walked */
    uint8_t *all = NULL, one[16];
    int rc = 0;

    for (size_t i = 0; i < nd; i++)
        span += (uint64_t)(t->size[i] - 1) * (uint64_t)t->stride[i];
    if (span * isz <= SPAN_MAX) {
        all = ck_malloc((size_t)(span * isz));
        if (all == NULL)
            return ck_err_set(err, CK_ENOMEM, "out of memory");
        rc = ck_ckpt_storage_read(w->c, t->st, t->offset * per, span * per, all,
                                  err);
    }
    for (uint64_t k = 0; k < t->numel && rc == 0; k += step) {
        uint64_t e = 0, at;

        for (size_t i = 0; i < top; i++)
            e += idx[i] * (uint64_t)t->stride[i];
        at = (t->offset + e) * per;
        if (all != NULL) {
            rc = sink_cb(w, all + e * isz, step * isz, err);
        } else if (rows) {
            rc = ck_ckpt_storage_stream(w->c, t->st, at, step * per, sink_cb, w,
                                        err);
        } else {
            rc = ck_ckpt_storage_read(w->c, t->st, at, per, one, err);
            if (rc == 0)
                rc = sink_cb(w, one, isz, err);
        }
        for (size_t i = top; i-- > 0;) {
            if (++idx[i] < (uint64_t)t->size[i])
                break;
            idx[i] = 0;
        }
    }
    ck_free(all);
    return rc;
}

static int body(ck_ckpt_t *c, int fd, void *arg, ck_write_info_t *info,
                ck_err_t *err)
{
    ck_st_plan_t *p = arg;
    out_t w = { c, p, { 0 }, NULL };
    uint64_t *sums = ck_malloc((p->n + 1) * sizeof(*sums));
    XXH3_state_t hs;
    int rc;

    XXH3_INITSTATE(&hs);
    if (sums == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    rc = ck_ostream_init(&w.os, fd, p->header.len + p->data_bytes, err);
    if (rc < 0)
        goto out;
    rc = sink_cb(&w, p->header.data, p->header.len, err);
    w.sum = &hs;
    for (size_t i = 0; i < p->n && rc == 0; i++) {
        const ck_tensor_t *t = p->e[i].t;
        uint64_t per = t->st->dt ? 1 : t->dtype->itemsize;

        XXH3_64bits_reset(&hs);
        if (t->numel == 0)
            rc = 0;
        else if (ck_tensor_contiguous(t))
            rc = ck_ckpt_storage_stream(c, t->st, t->offset * per,
                                        t->numel * per, sink_cb, &w, err);
        else
            rc = gather(&w, t, err);
        sums[i] = XXH3_64bits_digest(&hs);
    }
    if (rc == 0)
        rc = ck_ostream_finish(&w.os, err);
    info->size = ck_ostream_size(&w.os);
    info->nstorages = p->n;
    info->storage_bytes = p->data_bytes;
    /* as an open of the file would compute it (ck_st_fingerprint_input) */
    if (rc == 0)
        rc = ck_st_fingerprint(info->size, p->header.data + 8,
                               p->header.len - 8, sums, p->n,
                               info->fingerprint, err);
out:
    ck_ostream_release(&w.os);
    ck_free(sums);
    return rc;
}

int ck_st_write(ck_ckpt_t *c, ck_st_plan_t *p, const char *out_path,
                ck_write_info_t *info, ck_err_t *err)
{
    return ck_ckpt_write_with(c, out_path, body, p, info, err);
}
