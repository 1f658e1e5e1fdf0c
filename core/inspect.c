/*
 * inspect.c -- summaries of a checkpoint model: top-level keys, the state
 * dicts in it (mappings whose values are all tensors), the configs and the
 * globals the pickle names.  The JSON and the text form are made from the
 * same summary.
 */
#include "inspect.h"

#include "numpy.h"

#include <string.h>

#define MAX_DTYPES 40
#define SD_DEPTH 6

typedef struct {
    char *path;
    size_t ntensors;
    uint64_t params, bytes;
    struct {
        const ck_dtype_t *dt;
        uint64_t bytes;
    } by[MAX_DTYPES];
    size_t nby;
} sd_t;

typedef struct {
    sd_t *v;
    size_t n, cap;
    ck_arena_t *a;
} sds_t;

const char *ck_inspect_kind(ck_ckpt_t *c, ck_py_t *p)
{
    switch ((ck_py_kind_t)p->kind) {
    case CK_PY_NONE: return "None";
    case CK_PY_BOOL: return "bool";
    case CK_PY_INT: return "int";
    case CK_PY_FLOAT: return "float";
    case CK_PY_STR: return "str";
    case CK_PY_BYTES: return "bytes";
    case CK_PY_BYTEARRAY: return "bytearray";
    case CK_PY_TUPLE: return "tuple";
    case CK_PY_LIST: return "list";
    case CK_PY_DICT: return "dict";
    case CK_PY_SET: return "set";
    case CK_PY_FROZENSET: return "frozenset";
    case CK_PY_GLOBAL: return "global";
    case CK_PY_PERSID: return "storage";
    case CK_PY_REDUCE:
    case CK_PY_NEWOBJ: {
        char np[128];
        const char *d;

        if (ck_np_describe(p, np, sizeof(np)) &&
            (d = ck_arena_strdup(&c->arena, np)) != NULL)
            return d; /* "ndarray float64 (3,)" */
        if (ck_ckpt_tensor(c, p) != NULL)
            return ck_py_global_is(p->u.o.fn, "torch._utils", "_rebuild_parameter")
                       ? "Parameter" : "tensor";
        if (p->u.o.fn->kind == CK_PY_GLOBAL)
            return p->u.o.fn->u.g.name;
        return "object";
    }
    }
    return "?";
}

static int all_tensors(ck_ckpt_t *c, ck_py_vec_t *m)
{
    if (m->n == 0)
        return 0;
    for (size_t i = 0; i + 1 < m->n; i += 2)
        if (ck_ckpt_tensor(c, m->v[i + 1]) == NULL)
            return 0;
    return 1;
}

static void sd_add(ck_ckpt_t *c, sds_t *s, const char *path, ck_py_vec_t *m)
{
    sd_t *d;

    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        sd_t *nv = ck_arena_alloc(s->a, cap * sizeof(*nv));

        if (nv == NULL)
            return;
        if (s->n)
            memcpy(nv, s->v, s->n * sizeof(*nv));
        s->v = nv;
        s->cap = cap;
    }
    d = &s->v[s->n++];
    memset(d, 0, sizeof(*d));
    d->path = ck_arena_strdup(s->a, path);
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        ck_tensor_t *t = ck_ckpt_tensor(c, m->v[i + 1]);
        uint64_t b = t->numel * t->dtype->itemsize;
        size_t k;

        d->ntensors++;
        d->params += t->numel;
        d->bytes += b;
        for (k = 0; k < d->nby && d->by[k].dt != t->dtype; k++)
            ;
        if (k == d->nby && d->nby < MAX_DTYPES)
            d->by[d->nby++].dt = t->dtype;
        if (k < d->nby)
            d->by[k].bytes += b;
    }
}

static void sd_walk(ck_ckpt_t *c, sds_t *s, ck_py_t *p, char *path, size_t len,
                    int depth)
{
    ck_py_vec_t *m = ck_py_mapping(p);

    if (m == NULL || depth > SD_DEPTH)
        return;
    if (all_tensors(c, m)) {
        sd_add(c, s, len ? path : "/", m);
        return;
    }
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        ck_py_t *k = m->v[i];
        size_t n;

        if (k->kind != CK_PY_STR || ck_py_mapping(m->v[i + 1]) == NULL)
            continue;
        n = len + (len > 0) + k->len;
        if (n >= 1024)
            continue;
        if (len > 0)
            path[len] = '/';
        memcpy(path + len + (len > 0), k->u.s.s, k->len);
        path[n] = '\0';
        sd_walk(c, s, m->v[i + 1], path, n, depth + 1);
        path[len] = '\0';
    }
}

static const char *config_kind(ck_py_t *v)
{
    if ((v->kind == CK_PY_NEWOBJ || v->kind == CK_PY_REDUCE) &&
        ck_py_global_is(v->u.o.fn, "omegaconf.dictconfig", "DictConfig"))
        return "omegaconf.DictConfig";
    if (v->kind == CK_PY_STR)
        return "yaml";
    if (ck_py_mapping(v) != NULL)
        return "dict";
    return NULL;
}

static int is_config_key(const ck_py_t *k, ck_py_t *v)
{
    static const char *const names[] = { "xp.cfg", "cfg", "config",
                                         "hyper_parameters", "hparams" };

    if (k->kind != CK_PY_STR)
        return 0;
    if ((v->kind == CK_PY_NEWOBJ || v->kind == CK_PY_REDUCE) &&
        ck_py_global_is(v->u.o.fn, "omegaconf.dictconfig", "DictConfig"))
        return 1;
    for (size_t i = 0; i < CK_ARRAY_SIZE(names); i++)
        if (ck_py_str_eq(k, names[i]))
            return config_kind(v) != NULL;
    return 0;
}

ck_py_t *ck_inspect_config_value(ck_ckpt_t *c, const char **key)
{
    ck_py_vec_t *top = ck_py_mapping(c->pk.root);

    for (size_t i = 0; top != NULL && i + 1 < top->n; i += 2) {
        if (!is_config_key(top->v[i], top->v[i + 1]))
            continue;
        *key = top->v[i]->u.s.s;
        return top->v[i + 1];
    }
    return NULL;
}

static void key_text(ck_json_t *j, ck_py_t *k)
{
    if (k->kind == CK_PY_STR)
        ck_json_strn(j, k->u.s.s, k->len);
    else if (k->kind == CK_PY_INT && !k->len)
        ck_json_int(j, k->u.i.v);
    else
        ck_json_str(j, "<non-str key>");
}

int ck_inspect_json_as(ck_ckpt_t *c, const char *refused, ck_json_t *j)
{
    ck_py_vec_t *top = ck_py_mapping(c->pk.root);
    sds_t sds = { 0 };
    char path[1024] = "";
    uint64_t sbytes = 0;

    sds.a = &c->arena;
    sd_walk(c, &sds, c->pk.root, path, 0, 0);
    ck_json_obj(j);
    ck_json_key(j, "path");
    ck_json_str(j, c->path);
    ck_json_key(j, "size");
    ck_json_u64(j, c->st.size);
    ck_json_key(j, "format");
    ck_json_str(j, ck_ckpt_format_name(c));
    if (c->format == CK_FMT_ZIP) {
        ck_json_key(j, "top_folder");
        ck_json_str(j, c->top);
        ck_json_key(j, "records");
        ck_json_u64(j, c->zip.nrec);
        ck_json_key(j, "byteorder");
        ck_json_str(j, c->byteorder);
    }
    ck_json_key(j, "pickle");
    ck_json_obj(j);
    ck_json_key(j, "protocol");
    ck_json_int(j, c->pk.protocol);
    ck_json_key(j, "bytes");
    ck_json_u64(j, c->pickle_bytes);
    ck_json_end(j);
    ck_json_key(j, "root");
    ck_json_str(j, ck_inspect_kind(c, c->pk.root));
    ck_json_key(j, "keys");
    ck_json_arr(j);
    for (size_t i = 0; top != NULL && i + 1 < top->n; i += 2) {
        ck_json_obj(j);
        ck_json_key(j, "key");
        key_text(j, top->v[i]);
        ck_json_key(j, "kind");
        ck_json_str(j, ck_inspect_kind(c, top->v[i + 1]));
        ck_json_end(j);
    }
    ck_json_end(j);
    ck_json_key(j, "state_dicts");
    ck_json_arr(j);
    for (size_t i = 0; i < sds.n; i++) {
        sd_t *d = &sds.v[i];

        ck_json_obj(j);
        ck_json_key(j, "path");
        ck_json_str(j, d->path);
        ck_json_key(j, "tensors");
        ck_json_u64(j, d->ntensors);
        ck_json_key(j, "parameters");
        ck_json_u64(j, d->params);
        ck_json_key(j, "bytes");
        ck_json_u64(j, d->bytes);
        ck_json_key(j, "bytes_by_dtype");
        ck_json_obj(j);
        for (size_t k = 0; k < d->nby; k++) {
            ck_json_key(j, d->by[k].dt->name);
            ck_json_u64(j, d->by[k].bytes);
        }
        ck_json_end(j);
        ck_json_end(j);
    }
    ck_json_end(j);
    ck_json_key(j, "configs");
    ck_json_arr(j);
    for (size_t i = 0; top != NULL && i + 1 < top->n; i += 2) {
        if (!is_config_key(top->v[i], top->v[i + 1]))
            continue;
        ck_json_obj(j);
        ck_json_key(j, "key");
        key_text(j, top->v[i]);
        ck_json_key(j, "kind");
        ck_json_str(j, config_kind(top->v[i + 1]));
        ck_json_end(j);
    }
    ck_json_end(j);
    for (size_t i = 0; i < c->nstorages; i++)
        sbytes += ck_storage_nbytes(ck_ckpt_storage(c, i));
    ck_json_key(j, "tensors");
    ck_json_u64(j, c->ntensors);
    ck_json_key(j, "storages");
    ck_json_u64(j, c->nstorages);
    ck_json_key(j, "storage_bytes");
    ck_json_u64(j, sbytes);
    ck_json_key(j, "globals");
    ck_json_arr(j);
    for (size_t i = 0; i < c->pk.globals.n; i++) {
        ck_py_t *g = c->pk.globals.v[i];
        char name[512];

        snprintf(name, sizeof(name), "%s.%s", g->u.g.module, g->u.g.name);
        ck_json_str(j, name);
    }
    ck_json_end(j);
    ck_json_key(j, "validation");
    ck_json_str(j, refused ? "refused" : "ok");
    if (refused != NULL) {
        ck_json_key(j, "refused");
        ck_json_str(j, refused);
    }
    ck_json_end(j);
    return j->b.oom ? CK_ENOMEM : 0;
}

void ck_inspect_human(char *buf, size_t n, uint64_t b)
{
    static const char *const u[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    double v = (double)b;
    size_t i = 0;

    while (v >= 1024 && i + 1 < CK_ARRAY_SIZE(u)) {
        v /= 1024;
        i++;
    }
    if (i == 0)
        snprintf(buf, n, "%llu B", (unsigned long long)b);
    else
        snprintf(buf, n, "%.1f %s", v, u[i]);
}

/* Text from the input, escaped as every message is (ck_esc_step). */
static void put_str(FILE *out, const char *s, size_t n)
{
    char e[12];

    for (size_t i = 0; i < n;) {
        i += ck_esc_step((const uint8_t *)s + i, n - i, e);
        fputs(e, out);
    }
}

static void put_cstr(FILE *out, const char *s)
{
    put_str(out, s, strlen(s));
}

int ck_inspect_text_as(ck_ckpt_t *c, const char *refused, FILE *out)
{
    ck_py_vec_t *top = ck_py_mapping(c->pk.root);
    sds_t sds = { 0 };
    char path[1024] = "", h[32];
    uint64_t sbytes = 0;

    sds.a = &c->arena;
    sd_walk(c, &sds, c->pk.root, path, 0, 0);
    ck_inspect_human(h, sizeof(h), c->st.size);
    put_cstr(out, c->path);
    fprintf(out, ": %s\n", h);
    if (c->format == CK_FMT_ZIP) {
        fputs("  format     zip, top folder '", out);
        put_cstr(out, c->top);
        fprintf(out, "', %zu records, byteorder ", c->zip.nrec);
        put_cstr(out, c->byteorder ? c->byteorder : "(none)");
        fputc('\n', out);
    } else if (c->format == CK_FMT_LEGACY)
        fprintf(out, "  format     legacy stream (torch < 1.6)\n");
    else
        fprintf(out, "  format     safetensors, %zu-byte header, %zu metadata "
                "entries\n", c->pickle_bytes,
                c->st_meta ? c->st_meta->u.seq.n / 2 : (size_t)0);
    if (c->format != CK_FMT_SAFETENSORS)
        fprintf(out, "  pickle     protocol %d, %zu bytes, root %s\n",
                c->pk.protocol, c->pickle_bytes, ck_inspect_kind(c, c->pk.root));
    if (top != NULL) {
        fprintf(out, "  keys       %zu:", (size_t)top->n / 2);
        for (size_t i = 0; i + 1 < top->n; i += 2) {
            ck_py_t *k = top->v[i];

            fputs(i ? ", " : " ", out);
            if (k->kind == CK_PY_STR)
                put_str(out, k->u.s.s, k->len);
            else
                fputs("<non-str>", out);
            fprintf(out, " (%s)", ck_inspect_kind(c, top->v[i + 1]));
        }
        fputc('\n', out);
    }
    for (size_t i = 0; i < sds.n; i++) {
        sd_t *d = &sds.v[i];

        ck_inspect_human(h, sizeof(h), d->bytes);
        fputs("  state dict ", out);
        put_cstr(out, d->path);
        fprintf(out, ": %zu tensors, %llu parameters, %s (", d->ntensors,
                (unsigned long long)d->params, h);
        for (size_t k = 0; k < d->nby; k++) {
            ck_inspect_human(h, sizeof(h), d->by[k].bytes);
            fprintf(out, "%s%s %s", k ? ", " : "", d->by[k].dt->name, h);
        }
        fputs(")\n", out);
    }
    for (size_t i = 0; top != NULL && i + 1 < top->n; i += 2) {
        if (!is_config_key(top->v[i], top->v[i + 1]))
            continue;
        fputs("  config     ", out);
        put_str(out, top->v[i]->u.s.s, top->v[i]->len);
        fprintf(out, ": %s\n", config_kind(top->v[i + 1]));
    }
    for (size_t i = 0; i < c->nstorages; i++)
        sbytes += ck_storage_nbytes(ck_ckpt_storage(c, i));
    ck_inspect_human(h, sizeof(h), sbytes);
    fprintf(out, "  tensors    %zu in %zu storages, %s\n", c->ntensors,
            c->nstorages, h);
    fprintf(out, "  globals    %zu:", (size_t)c->pk.globals.n);
    for (size_t i = 0; i < c->pk.globals.n; i++) {
        fputs(i ? ", " : " ", out);
        put_cstr(out, c->pk.globals.v[i]->u.g.module);
        fputc('.', out);
        put_cstr(out, c->pk.globals.v[i]->u.g.name);
    }
    if (refused == NULL) {
        fputs("\n  validation ok\n", out);
    } else {
        fputs("\n  validation refused: ", out);
        put_str(out, refused, strlen(refused));
        fputc('\n', out);
    }
    return 0;
}

int ck_inspect_json(ck_ckpt_t *c, ck_json_t *j)
{
    return ck_inspect_json_as(c, NULL, j);
}

int ck_inspect_text(ck_ckpt_t *c, FILE *out)
{
    return ck_inspect_text_as(c, NULL, out);
}
