/*
 * plugin_test.h -- what the per-plugin cmocka tests share (each
 * tests/plugins/test_NAME.c is one binary and includes this once).
 *
 * A fixture owns a temporary folder, the configuration loaded from an INI
 * text written there (through the real loader, ck_conf_load), and a job
 * whose checkpoint model is built in memory (ck_ckpt_init_mem): dicts,
 * OrderedDict state dicts with _metadata, and tensors made by
 * ck_ckpt_new_tensor, so their storages are CK_SRC_MEM and the model can be
 * written with ck_ckpt_write and read back with ck_ckpt_open.  pt_run runs
 * the plugin of the chain's first stage through ck_job_run_stage, as
 * ck_job_run does, and collects its changes.
 *
 * A plugin's conf struct is private to its file; tests reach its fields
 * through the plugin's directive table (pt_field), so they see exactly what
 * the loader set.  Everything here is static and unused-tolerant: a test
 * binary uses what it needs.
 */
#ifndef CK_PLUGIN_TEST_H
#define CK_PLUGIN_TEST_H

#include "job.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PT static __attribute__((unused))

typedef struct {
    char dir[64];
    char path[128];      /* the INI file */
    char out[128];       /* an output checkpoint */
    ck_conf_t c;
    ck_err_t err;        /* of the last load or run */
    ck_job_t job;
    ck_json_t changes;   /* of the last run */
    const char *json;    /* its text, after pt_run */
    ck_ckpt_t back;      /* the output, read back by pt_write_back */
} pt_fx_t;

/* ---- fixture ---------------------------------------------------------- */

PT void pt_job_reset(pt_fx_t *f)
{
    ck_ckpt_close(&f->job.ck);
    ck_json_release(&f->changes);
    memset(&f->job, 0, sizeof(f->job));
    memset(&f->changes, 0, sizeof(f->changes));
    ck_ckpt_init_mem(&f->job.ck, "in-memory");
    f->job.conf = &f->c;
    f->job.err = &f->err;
    f->json = NULL;
}

PT int pt_setup(void **state)
{
    pt_fx_t *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    strcpy(f->dir, "/tmp/ck_test_plugin.XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/ckprep.ini", f->dir);
    snprintf(f->out, sizeof(f->out), "%s/out.th", f->dir);
    f->job.ck.fd = -1;
    f->back.fd = -1;
    pt_job_reset(f);
    *state = f;
    return 0;
}

PT int pt_teardown(void **state)
{
    pt_fx_t *f = *state;
    char cmd[160];

    ck_mem_fail_at(0);
    ck_ckpt_close(&f->job.ck);
    ck_ckpt_close(&f->back);
    ck_json_release(&f->changes);
    ck_conf_release(&f->c);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* ---- configuration ---------------------------------------------------- */

/* Write text as the INI file and load it. */
PT int pt_load(pt_fx_t *f, const char *text)
{
    FILE *fp = fopen(f->path, "w");

    assert_non_null(fp);
    assert_true(fputs(text, fp) >= 0);
    assert_int_equal(fclose(fp), 0);
    ck_conf_release(&f->c);
    memset(&f->err, 0, sizeof(f->err));
    return ck_conf_load(&f->c, f->path, &f->err);
}

PT void pt_load_ok(pt_fx_t *f, const char *text)
{
    int rc = pt_load(f, text);

    if (rc != 0)
        fail_msg("config rejected (%d): %s\n--- config:\n%s", rc, f->err.msg,
                 text);
}

/* The load failed with CK_ECONFIG and "PATH:LINE: ..." mentioning what. */
PT void pt_conf_error(pt_fx_t *f, int rc, int line, const char *what)
{
    char prefix[192];

    snprintf(prefix, sizeof(prefix), "%s:%d: ", f->path, line);
    if (rc != CK_ECONFIG)
        fail_msg("expected CK_ECONFIG at line %d (%s), got %d: %s", line,
                 what, rc, f->err.msg);
    assert_int_equal(f->err.code, CK_ECONFIG);
    if (strncmp(f->err.msg, prefix, strlen(prefix)) != 0)
        fail_msg("error '%s' does not start with '%s'", f->err.msg, prefix);
    if (strstr(f->err.msg, what) == NULL)
        fail_msg("error '%s' does not mention '%s'", f->err.msg, what);
}

/* Load text and expect the error. */
PT void pt_bad(pt_fx_t *f, const char *text, int line, const char *what)
{
    pt_conf_error(f, pt_load(f, text), line, what);
}

/* The conf of chain stage i (loaded). */
PT void *pt_stage(pt_fx_t *f, size_t i)
{
    assert_true(f->c.nchain > i);
    assert_non_null(f->c.chain[i].conf);
    return f->c.chain[i].conf;
}

/* The field a directive of stage 0's plugin sets. */
PT void *pt_field_of(pt_fx_t *f, size_t stage, const char *name,
                     ck_conf_set_fn set)
{
    const ck_plugin_t *p;
    void *conf = pt_stage(f, stage);

    p = f->c.chain[stage].plugin;
    for (const ck_directive_t *d = p->directives; d->name != NULL; d++) {
        if (strcmp(d->name, name) != 0)
            continue;
        if (set != NULL && d->set != set)
            fail_msg("[%s] %s is not set by the expected setter", p->name,
                     name);
        return (char *)conf + d->offset;
    }
    fail_msg("[%s] has no directive '%s'", p->name, name);
    return NULL;
}

/* A string directive (ck_conf_set_str or a plugin's own path setter). */
PT const char *pt_str(pt_fx_t *f, const char *name)
{
    return *(char **)pt_field_of(f, 0, name, NULL);
}

/* An enum directive, as the name its value has in the directive's table. */
PT const char *pt_enum(pt_fx_t *f, const char *name)
{
    const ck_plugin_t *p = f->c.chain[0].plugin;
    int v = *(int *)pt_field_of(f, 0, name, ck_conf_set_enum);

    for (const ck_directive_t *d = p->directives; d->name != NULL; d++) {
        const ck_conf_enum_t *e = d->data;

        if (strcmp(d->name, name) != 0)
            continue;
        for (size_t i = 0; e[i].name != NULL; i++)
            if (e[i].value == v)
                return e[i].name;
    }
    fail_msg("[%s] %s = %d is not in its table", p->name, name, v);
    return NULL;
}

/* A places directive (ck_conf_set_paths) as its places joined by ' ',
 * each as written ('?' kept). */
PT const char *pt_places(pt_fx_t *f, const char *name)
{
    static char buf[4096];
    const ck_conf_list_t *l = pt_field_of(f, 0, name, ck_conf_set_paths);

    buf[0] = '\0';
    for (size_t i = 0; i < l->n; i++) {
        const ck_path_t *p = l->v[i];

        snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%s%s",
                 i ? " " : "", p->text, p->optional ? "?" : "");
    }
    return buf;
}

/* A one-place directive (ck_conf_set_path) as written, or NULL. */
PT const char *pt_place(pt_fx_t *f, const char *name)
{
    const ck_path_t *p = *(ck_path_t **)pt_field_of(f, 0, name,
                                                     ck_conf_set_path);

    return p != NULL ? p->text : NULL;
}

/* How many items a directive with a setter of its own parsed (rename, add
 * ...): its field is a ck_conf_list_t. */
PT size_t pt_count(pt_fx_t *f, const char *name)
{
    return ((ck_conf_list_t *)pt_field_of(f, 0, name, NULL))->n;
}

PT uint64_t pt_u64(pt_fx_t *f, const char *name)
{
    return *(uint64_t *)pt_field_of(f, 0, name, ck_conf_set_u64);
}

PT int pt_bool(pt_fx_t *f, const char *name)
{
    return *(int *)pt_field_of(f, 0, name, ck_conf_set_bool);
}

/* A list directive as its items joined by '|' (words or lines). */
PT const char *pt_list(pt_fx_t *f, const char *name)
{
    static char buf[4096];
    const ck_plugin_t *p = f->c.chain[0].plugin;
    const ck_strlist_t *l = NULL;

    for (const ck_directive_t *d = p->directives; d->name != NULL; d++)
        if (strcmp(d->name, name) == 0)
            l = (const ck_strlist_t *)((char *)pt_stage(f, 0) + d->offset);
    if (l == NULL)
        fail_msg("[%s] has no list directive '%s'", p->name, name);
    buf[0] = '\0';
    for (size_t i = 0; i < l->n; i++)
        snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%s",
                 i ? "|" : "", l->v[i]);
    if (l->n > 0)
        assert_null(l->v[l->n]);
    return buf;
}

/* ---- building a model in memory --------------------------------------- */

#define PT_A(f) (&(f)->job.ck.arena)

PT ck_py_t *pt_s(pt_fx_t *f, const char *s)
{
    ck_py_t *p = ck_py_str(PT_A(f), s, strlen(s));

    assert_non_null(p);
    return p;
}

PT ck_py_t *pt_i(pt_fx_t *f, int64_t v)
{
    ck_py_t *p = ck_py_int(PT_A(f), v);

    assert_non_null(p);
    return p;
}

PT ck_py_t *pt_new(pt_fx_t *f, ck_py_kind_t kind)
{
    ck_py_t *p = ck_py_new(PT_A(f), kind);

    assert_non_null(p);
    return p;
}

PT ck_py_t *pt_dict(pt_fx_t *f)
{
    return pt_new(f, CK_PY_DICT);
}

/* Append item to a list or tuple. */
PT ck_py_t *pt_push(pt_fx_t *f, ck_py_t *seq, ck_py_t *item)
{
    assert_int_equal(ck_py_vec_push(PT_A(f), &seq->u.seq, item), 0);
    return item;
}

/* map[key] = v for a dict or an OrderedDict; returns v. */
PT ck_py_t *pt_set(pt_fx_t *f, ck_py_t *map, const char *key, ck_py_t *v)
{
    int oom = 0;
    ck_py_vec_t *m = ck_py_mapping_mut(PT_A(f), map, &oom);

    assert_non_null(m);
    assert_non_null(v);
    assert_int_equal(ck_py_vec_push(PT_A(f), m, pt_s(f, key)), 0);
    assert_int_equal(ck_py_vec_push(PT_A(f), m, v), 0);
    return v;
}

/* collections.OrderedDict(), as torch pickles a state dict; with a
 * _metadata OrderedDict in its state when metadata is set. */
PT ck_py_t *pt_odict(pt_fx_t *f, int metadata)
{
    ck_py_t *od = pt_new(f, CK_PY_REDUCE);

    od->u.o.fn = ck_job_global(&f->job, "collections", "OrderedDict");
    od->u.o.args = pt_new(f, CK_PY_TUPLE);
    assert_non_null(od->u.o.fn);
    if (metadata) {
        ck_py_after_make(PT_A(f), od)->state = pt_dict(f);
        pt_set(f, od->u.o.after->state, "_metadata", pt_odict(f, 0));
    }
    return od;
}

/* sd._metadata[module] = {'version': version} */
PT void pt_meta(pt_fx_t *f, ck_py_t *sd, const char *module, int version)
{
    ck_py_t *md = ck_py_map_get(ck_py_after(sd)->state, "_metadata", NULL), *v;

    assert_non_null(md);
    v = pt_dict(f);
    pt_set(f, v, "version", pt_i(f, version));
    pt_set(f, md, module, v);
}

/* The keys of a mapping (or a _metadata vector) joined by ' '. */
PT const char *pt_keys_vec(const ck_py_vec_t *m)
{
    static char buf[4096];

    buf[0] = '\0';
    if (m == NULL)
        return "<not a mapping>";
    for (size_t i = 0; i + 1 < m->n; i += 2)
        snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%s",
                 i ? " " : "",
                 m->v[i]->kind == CK_PY_STR ? m->v[i]->u.s.s : "?");
    return buf;
}

PT const char *pt_keys(ck_py_t *map)
{
    return pt_keys_vec(ck_py_mapping(map));
}

PT const char *pt_md_keys(pt_fx_t *f, ck_py_t *sd)
{
    return pt_keys_vec(ck_job_metadata(&f->job, sd));
}

/*
 * A new contiguous tensor of dtype whose elements are float32 / int64 /
 * etc. given as doubles (stored by the dtype's own width; only float32,
 * float64, int64 and uint8 are needed here).  shape "4x3" or "5".
 */
PT ck_py_t *pt_tensor(pt_fx_t *f, const char *dtype, const char *shape,
                      double first, double step)
{
    const ck_dtype_t *dt = ck_dtype_by_name(dtype);
    int64_t dims[8];
    size_t nd = 0;
    uint64_t numel = 1;
    uint8_t *data;
    const char *s = shape;
    ck_py_t *t;

    assert_non_null(dt);
    while (*s) {
        char *end;

        dims[nd] = strtoll(s, &end, 10);
        numel *= (uint64_t)dims[nd++];
        s = *end ? end + 1 : end;
    }
    data = ck_arena_alloc(PT_A(f), numel * dt->itemsize + 1);
    assert_non_null(data);
    for (uint64_t i = 0; i < numel; i++) {
        double v = first + step * (double)i;
        uint8_t *p = data + i * dt->itemsize;

        if (!strcmp(dtype, "float32")) {
            float x = (float)v;

            memcpy(p, &x, 4);
        } else if (!strcmp(dtype, "float64")) {
            memcpy(p, &v, 8);
        } else if (!strcmp(dtype, "int64")) {
            int64_t x = (int64_t)v;

            memcpy(p, &x, 8);
        } else if (!strcmp(dtype, "uint8")) {
            *p = (uint8_t)v;
        } else {
            fail_msg("pt_tensor: dtype %s not supported", dtype);
        }
    }
    memset(&f->err, 0, sizeof(f->err));
    t = ck_job_new_tensor(&f->job, dt, dims, nd, data);
    if (t == NULL)
        fail_msg("ck_job_new_tensor: %s", f->err.msg);
    return t;
}

/* {'state_dict': OrderedDict(model.w=tensor)} whose _metadata is an empty
 * OrderedDict; *sd gets the state dict. */
PT ck_py_t *pt_empty_md_model(pt_fx_t *f, ck_py_t **sd)
{
    ck_py_t *root = pt_dict(f);

    *sd = pt_set(f, root, "state_dict", pt_odict(f, 1));
    pt_set(f, *sd, "model.w", pt_tensor(f, "float32", "2", 0, 0));
    return root;
}

PT ck_py_t *pt_int_tuple(pt_fx_t *f, const int64_t *v, size_t n)
{
    ck_py_t *t = pt_new(f, CK_PY_TUPLE);

    for (size_t i = 0; i < n; i++)
        pt_push(f, t, pt_i(f, v[i]));
    return t;
}

/* Another tensor on t's storage: offset, sizes and strides (ndim of each). */
PT ck_py_t *pt_view(pt_fx_t *f, ck_py_t *t, int64_t offset, size_t ndim,
                    const int64_t *size, const int64_t *stride)
{
    ck_py_t *v = pt_new(f, CK_PY_REDUCE), *args = pt_new(f, CK_PY_TUPLE);
    uint32_t n = 0;
    ck_py_t **a = ck_py_args(t, &n); /* read, or made: either form */

    v->u.o.fn = t->u.o.fn;
    v->u.o.args = args;
    pt_push(f, args, a[0]); /* the persistent id: the same storage */
    pt_push(f, args, pt_i(f, offset));
    pt_push(f, args, pt_int_tuple(f, size, ndim));
    pt_push(f, args, pt_int_tuple(f, stride, ndim));
    for (size_t i = 4; i < n; i++)
        pt_push(f, args, a[i]);
    return v;
}

/* The scanned tensor of a node (after pt_scan or pt_run). */
PT ck_tensor_t *pt_t(pt_fx_t *f, ck_py_t *node)
{
    ck_tensor_t *t = ck_ckpt_tensor(&f->job.ck, node);

    assert_non_null(t);
    return t;
}

/* Its elements, row-major, in an arena buffer. */
PT uint8_t *pt_bytes(pt_fx_t *f, ck_ckpt_t *c, ck_py_t *node)
{
    ck_tensor_t *t = ck_ckpt_tensor(c, node);
    uint8_t *p;

    assert_non_null(t);
    p = ck_arena_alloc(PT_A(f), t->numel * t->dtype->itemsize + 1);
    assert_non_null(p);
    assert_int_equal(ck_ckpt_read_tensor(c, t, p, &f->err), 0);
    return p;
}

PT void pt_scan(pt_fx_t *f)
{
    memset(&f->err, 0, sizeof(f->err));
    if (ck_ckpt_scan(&f->job.ck, &f->err) != 0)
        fail_msg("scan: %s", f->err.msg);
}

/* Storages referenced by the model at the last scan. */
PT size_t pt_live_storages(pt_fx_t *f)
{
    size_t n = 0;

    for (size_t i = 0; i < f->job.ck.nstorages; i++)
        n += ck_ckpt_storage(&f->job.ck, i)->refs > 0;
    return n;
}

/* ---- running ---------------------------------------------------------- */

/*
 * Run stage 0 of the loaded chain over the model with root as its top
 * level, as ck_job_run does: scan, run, scan again.  f->json is the changes
 * array.  Returns the plugin's code; on failure f->err has the message.
 */
PT int pt_run_stage(pt_fx_t *f, size_t stage, ck_py_t *root)
{
    const ck_stage_t *st = &f->c.chain[stage];
    int rc;

    assert_true(f->c.nchain > stage);
    if (root != NULL)
        f->job.ck.pk.root = root;
    pt_scan(f);
    ck_json_release(&f->changes);
    memset(&f->changes, 0, sizeof(f->changes));
    ck_json_arr(&f->changes);
    memset(&f->err, 0, sizeof(f->err));
    rc = ck_job_run_stage(&f->job, st, &f->changes);
    ck_json_end(&f->changes);
    f->json = ck_json_text(&f->changes);
    assert_non_null(f->json);
    return rc;
}

PT int pt_run(pt_fx_t *f, ck_py_t *root)
{
    return pt_run_stage(f, 0, root);
}

PT void pt_run_ok(pt_fx_t *f, ck_py_t *root)
{
    int rc = pt_run(f, root);

    if (rc != 0)
        fail_msg("run failed (%d): %s", rc, f->err.msg);
}

/* The run failed with CK_EPLUGIN (or code) and a message mentioning each
 * of the NULL-ended words. */
PT void pt_run_fails(pt_fx_t *f, ck_py_t *root, int code, ...)
{
    int rc = pt_run(f, root);
    va_list ap;
    const char *w;

    if (rc != code)
        fail_msg("run: expected %d, got %d (%s)", code, rc, f->err.msg);
    assert_int_equal(f->err.code, code);
    va_start(ap, code);
    while ((w = va_arg(ap, const char *)) != NULL)
        if (strstr(f->err.msg, w) == NULL) {
            va_end(ap);
            fail_msg("error '%s' does not mention '%s'", f->err.msg, w);
        }
    va_end(ap);
}

/* The changes array contains s (compact JSON, as the plugin wrote it). */
PT void pt_changed(pt_fx_t *f, const char *s)
{
    assert_non_null(f->json);
    if (strstr(f->json, s) == NULL)
        fail_msg("changes %s do not contain %s", f->json, s);
}

/* Number of change records (objects) in the changes array. */
PT size_t pt_nchanges(pt_fx_t *f)
{
    size_t n = 0;

    for (const char *p = f->json; (p = strstr(p, "{\"op\":")) != NULL; p++)
        n++;
    return n;
}

/* Write the model to f->out and open it again into f->back. */
PT void pt_write_back(pt_fx_t *f, ck_write_info_t *info)
{
    ck_open_opts_t o = { 0 };
    int rc;

    memset(&f->err, 0, sizeof(f->err));
    rc = ck_ckpt_write(&f->job.ck, f->out, info, &f->err);
    if (rc != 0)
        fail_msg("write: %s", f->err.msg);
    ck_ckpt_close(&f->back);
    ck_limits_default(&o.lim);
    rc = ck_ckpt_open(&f->back, f->out, &o, &f->err);
    if (rc != 0)
        fail_msg("open the output again: %s", f->err.msg);
}

#endif
