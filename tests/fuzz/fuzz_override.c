/*
 * fuzz_override.c -- libFuzzer target for config_override and the core
 * value code under it: the Hydra override line (key=value, +key=value,
 * ++key=value, ~key), the YAML values libyaml reads for it (core/yamlval),
 * Hydra and YAML 1.1 typing of scalars, the YAML string configs the plugin
 * edits and emits again, and the graphs it builds for DictConfig
 * (core/omegaconf) and plain-dict configs.
 *
 * The plugin is reached as the daemon reaches it, through its descriptor:
 * its directives' setters and check, init_conf and run.
 *
 * Input: the override line, then optionally '\n' and a YAML document taken
 * as the config (a YAML string, a plain dict and a DictConfig made from it)
 * and as a file = to merge.  Checks: what the emitter writes, libyaml reads
 * back; a config graph survives a pickle round trip unchanged.
 */
#include "job.h"
#include "omegaconf.h"
#include "yamlval.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern const ck_plugin_t ck_plugin_config_override;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "fuzz_override: %s: %s\n", what, msg);
    abort();
}

/* Emit v as YAML; what was emitted must parse. */
static void emit_parse(ck_arena_t *a, const ck_yval_t *v)
{
    ck_buf_t out = { 0 };
    ck_err_t err = { 0 };
    ck_yaml_ctx_t y = { .a = a, .err = &err, .what = "emitted" };

    if (ck_yaml_emit(v, "fuzz", &out, &err) == 0 && !out.oom &&
        ck_yaml_parse(&y, out.data ? (char *)out.data : "", out.len) == NULL)
        die("emitted YAML does not parse", err.msg);
    ck_buf_release(&out);
}

/* A config graph must pickle and read back equal. */
static void pickle_trip(ck_arena_t *a, ck_py_t *cfg)
{
    ck_limits_t lim;
    ck_buf_t out = { 0 };
    ck_err_t err = { 0 };
    ck_pickle_t pk;

    ck_limits_default(&lim);
    if (ck_pickle_write(cfg, &lim, a, NULL, NULL, &out, &err) == 0) {
        if (ck_pickle_read(out.data, out.len, 1, &lim, a, &pk, &err) < 0)
            die("config graph does not read back", err.msg);
        if (1 != ck_py_equal(cfg, pk.root, UINT32_MAX))
            die("config graph reads back different", "");
    }
    ck_buf_release(&out);
}

static ck_py_t *global_cb(void *ud, const char *module, const char *name)
{
    return ck_job_global(ud, module, name);
}

/* Give directive name the value, through its setter, as the loader does. */
static int set(ck_conf_ctx_t *cx, void *conf, const char *name,
               const char *value)
{
    const ck_directive_t *d = ck_plugin_config_override.directives;

    while (strcmp(d->name, name) != 0)
        d++;
    return d->set(cx, d, conf, value);
}

/*
 * Run the plugin over cfg (kind: 0 YAML string, 1 plain dict, 2
 * DictConfig, made from doc), with the set line and, when file is not
 * NULL, the file merged first.
 */
static void run(const char *line, const char *doc, size_t doclen, int kind,
                const char *file)
{
    const ck_plugin_t *p = &ck_plugin_config_override;
    ck_err_t err = { 0 };
    ck_json_t changes = { 0 };
    ck_conf_t cc;
    ck_conf_ctx_t cx;
    ck_stage_t stage = { p, NULL, NULL };
    ck_job_t job;
    void *conf = calloc(1, p->conf_size);
    ck_yaml_ctx_t y = { .err = &err, .what = "config" };
    ck_omc_ctx_t omc = { .global = global_cb };
    ck_py_t *cfg = NULL, *root;
    ck_yval_t *v;
    int have_set;

    memset(&cc, 0, sizeof(cc));
    cx = (ck_conf_ctx_t){ &cc.arena, &err, "fuzz.ini", 1, "config_override",
                          &cc };
    memset(&job, 0, sizeof(job));
    ck_ckpt_init_mem(&job.ck, "fuzz");
    job.err = &err;
    y.a = omc.a = &job.ck.arena;
    omc.ud = &job;
    ck_json_arr(&changes);
    if (conf == NULL)
        goto out;
    /* as the loader reads the lines: the set line is parsed here, once */
    have_set = line[0] != '\0' && set(&cx, conf, "set", line) == 0;
    memset(&err, 0, sizeof(err));
    if (set(&cx, conf, "config", "cfg") < 0 ||
        (file != NULL && set(&cx, conf, "file", file) < 0))
        goto out;
    if (!have_set && file == NULL)
        goto out;
    if (p->init_conf(&cx, conf) < 0)
        goto out;
    stage.conf = conf;
    if (kind == 0) {
        cfg = ck_py_str(y.a, doc, doclen);
    } else {
        v = ck_yaml_parse(&y, doc, doclen);
        if (v == NULL || v->kind != CK_YV_MAP)
            goto out;
        cfg = kind == 1 ? ck_yval_py(y.a, v, 0)
                        : ck_omc_from_yval(&omc, v, ck_py_str(y.a, "cfg", 3),
                                           ck_py_new(y.a, CK_PY_NONE));
    }
    root = ck_py_new(y.a, CK_PY_DICT);
    if (cfg == NULL || root == NULL ||
        ck_py_vec_push(y.a, &root->u.seq, ck_py_str(y.a, "cfg", 3)) < 0 ||
        ck_py_vec_push(y.a, &root->u.seq, cfg) < 0)
        goto out;
    ck_job_set_root(&job, root);
    memset(&err, 0, sizeof(err));
    if (ck_job_run_stage(&job, &stage, &changes) == 0 && kind == 0) {
        /* the emitted config must read back */
        cfg = ck_py_map_get(root, "cfg", NULL);
        y.lazy = 1;
        if (ck_yaml_parse(&y, cfg->u.s.s, cfg->len) == NULL)
            die("emitted config does not parse", err.msg);
    } else if (kind > 0) {
        pickle_trip(y.a, cfg);
    }
out:
    ck_json_end(&changes);
    ck_json_release(&changes);
    ck_ckpt_close(&job.ck);
    ck_conf_release(&cc);
    free(conf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ck_arena_t a = { 0 };
    ck_err_t err = { 0 };
    ck_json_t js = { 0 };
    ck_yaml_ctx_t y = { .a = &a, .err = &err, .what = "", .hydra = 1 };
    char *text = malloc(size + 1), *line, *doc = NULL, *eq, path[64] = "";
    size_t doclen = 0;
    ck_yval_t *v;

    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    line = text;
    doc = memchr(text, '\n', size);
    if (doc != NULL) {
        *doc++ = '\0';
        doclen = size - (size_t)(doc - text);
    }
    /* the value alone, as Hydra types it, to JSON and back through YAML */
    eq = strchr(line, '=');
    v = eq != NULL ? ck_yaml_parse(&y, eq + 1, strlen(eq + 1)) : NULL;
    if (v != NULL) {
        ck_yval_json(&js, &a, v);
        emit_parse(&a, v);
    }
    if (doc != NULL) {
        const char *tmp = getenv("TMPDIR");
        FILE *f;

        for (int kind = 0; kind < 3; kind++)
            run(line, doc, doclen, kind, NULL);
        snprintf(path, sizeof(path), "%s/fuzz_override.%ld.yaml",
                 tmp != NULL && strlen(tmp) < 30 ? tmp : "/tmp",
                 (long)getpid());
        f = fopen(path, "w");
        if (f != NULL && fwrite(doc, 1, doclen, f) == doclen &&
            fclose(f) == 0) {
            for (int kind = 1; kind < 3; kind++)
                run(line, doc, doclen, kind, path);
        } else if (f != NULL) {
            fclose(f);
        }
        unlink(path);
    }
    ck_json_release(&js);
    ck_arena_release(&a);
    free(text);
    return 0;
}
