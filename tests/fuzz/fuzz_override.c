/*
 * fuzz_override.c -- libFuzzer target for config_override's value handling:
 * the Hydra override line (key=value, +key=value, ++key=value, ~key), the
 * YAML values libyaml reads for it, OmegaConf typing of scalars, the YAML
 * string configs it edits and emits again, and the graphs it builds for
 * DictConfig and plain-dict configs.
 *
 * The plugin's parsers are static, so the plugin's source is included here;
 * the library member that defines the same plugin is then not linked in.
 *
 * Input: the override line, then optionally '\n' and a YAML document taken
 * as the config.  Checks: what the emitter writes, libyaml reads back; a
 * config graph built from the YAML survives a pickle round trip unchanged.
 */
#include "../../plugins/config_override.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "fuzz_override: %s: %s\n", what, msg);
    abort();
}

/* Emit v as YAML; what was emitted must parse. */
static void emit_parse(ed_t *e, const val_t *v)
{
    ck_buf_t out = { 0 };
    ck_err_t err = { 0 };
    yctx_t y = { .a = e->a, .err = &err, .what = "emitted" };
    ed_t e2 = *e;

    e2.err = &err;
    if (yaml_dump(&e2, v, &out) == 0 && !out.oom &&
        yparse(&y, out.data ? (char *)out.data : "", out.len) == NULL)
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
        if (!ck_py_equal(cfg, pk.root, UINT32_MAX))
            die("config graph reads back different", "");
    }
    ck_buf_release(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ck_job_t job;
    ck_err_t err = { 0 };
    ck_json_t changes = { 0 };
    ed_t e = { &job, &job.ck.arena, &err, "cfg", 0 };
    yctx_t y = { .a = &job.ck.arena, .err = &err, .what = "" };
    char *text = malloc(size + 1), *line, *doc = NULL;
    size_t doclen = 0;
    val_t *root = NULL, *yroot = NULL;
    ovr_t o;
    int ok;

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
    memset(&job, 0, sizeof(job));
    job.err = &err;
    job.changes = &changes;
    ck_json_arr(&changes);

    /* as `ckprep check` reads the line, then as the job does */
    check_set(line, &err);
    memset(&err, 0, sizeof(err));
    ok = parse_override(&y, line, &o) == 0;
    if (ok && o.value != NULL) {
        json_val(&changes, e.a, o.value);
        emit_parse(&e, o.value);
    }
    if (doc != NULL) {
        /* as a file to merge, and as a YAML string config (typed lazily) */
        memset(&err, 0, sizeof(err));
        y.what = "config";
        root = yparse(&y, doc, doclen);
        memset(&err, 0, sizeof(err));
        y.lazy = 1;
        yroot = yparse(&y, doc, doclen);
        y.lazy = 0;
    }
    if (root != NULL && root->kind == V_MAP) {
        for (int om = 0; om < 2; om++) {
            ck_py_t *key = ck_py_str(e.a, "cfg", 3), *cfg;
            ovr_t m = { 0 };

            e.omegaconf = om;
            cfg = make_value(&e, root, key, NULL);
            if (cfg == NULL)
                continue;
            memset(&err, 0, sizeof(err));
            m.line = "file";
            merge(&e, cfg, NULL, root, &m);
            memset(&err, 0, sizeof(err));
            if (ok)
                apply_py(&e, cfg, &o);
            pickle_trip(e.a, cfg);
        }
    }
    if (yroot != NULL && yroot->kind == V_MAP) {
        e.omegaconf = 0;
        memset(&err, 0, sizeof(err));
        if (ok && apply_yaml(&e, yroot, &o) == 0)
            emit_parse(&e, yroot);
    }
    ck_json_end(&changes);
    ck_json_release(&changes);
    ck_arena_release(&job.ck.arena);
    free(text);
    return 0;
}
