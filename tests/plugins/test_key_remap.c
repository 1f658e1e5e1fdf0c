/*
 * test_key_remap.c -- the key_remap plugin: its directives through the real
 * loader (defaults, rename lines checked at their own line, on_conflict and
 * the rule count checked by init_conf at the section's line), and its run
 * over a state dict built in memory: prefix and regex rules applied in
 * order, each to the result of the ones before; \1..\9; _metadata module
 * names; swaps; conflicts with on_conflict = error and replace; rules that
 * match nothing; several state dicts.
 */
#include "plugin_test.h"

#define HEAD "[pipeline]\nchain = key_remap\n\n[key_remap]\n"

/*
 * {"best_state": {"model": SD}, "model": SD2}
 *
 * SD (OrderedDict, _metadata "", emb, emb.0, emb.1, enc, enc.layers,
 * enc.layers.0, out): emb.0.weight, emb.1.weight,
 * enc.layers.0.norm1.weight, enc.layers.0.norm2.bias,
 * enc.layers.0.self_attn.in_proj_weight, out.weight, out.bias, x.emb.w.
 * SD2: emb.0.weight, head.w.
 */
typedef struct {
    ck_py_t *root, *sd, *sd2;
    ck_py_t *v[8];
} model_t;

static const char *const keys[] = {
    "emb.0.weight", "emb.1.weight", "enc.layers.0.norm1.weight",
    "enc.layers.0.norm2.bias", "enc.layers.0.self_attn.in_proj_weight",
    "out.weight", "out.bias", "x.emb.w",
};

static void build(pt_fx_t *f, model_t *m)
{
    static const char *const modules[] = {
        "", "emb", "emb.0", "emb.1", "enc", "enc.layers", "enc.layers.0", "out",
    };
    ck_py_t *best;

    m->root = pt_dict(f);
    best = pt_set(f, m->root, "best_state", pt_dict(f));
    m->sd = pt_set(f, best, "model", pt_odict(f, 1));
    for (size_t i = 0; i < CK_ARRAY_SIZE(keys); i++)
        m->v[i] = pt_set(f, m->sd, keys[i],
                         pt_tensor(f, "float32", "2", (double)i, 0));
    for (size_t i = 0; i < CK_ARRAY_SIZE(modules); i++)
        pt_meta(f, m->sd, modules[i], 1);
    m->sd2 = pt_set(f, m->root, "model", pt_odict(f, 0));
    pt_set(f, m->sd2, "emb.0.weight", pt_i(f, 1));
    pt_set(f, m->sd2, "head.w", pt_i(f, 2));
}

static ck_py_t *sd_of(pt_fx_t *f)
{
    return ck_ckpt_get(&f->job.ck, "best_state/model");
}

/* Load HEAD + text, build the model, run; the run must succeed. */
static void run_ok(pt_fx_t *f, model_t *m, const char *text)
{
    char buf[2048];

    snprintf(buf, sizeof(buf), HEAD "%s", text);
    pt_job_reset(f);
    pt_load_ok(f, buf);
    build(f, m);
    pt_run_ok(f, m->root);
}

/* ---- directives ------------------------------------------------------- */

static void test_defaults(void **state)
{
    pt_fx_t *f = *state;

    /* named in the chain only: nothing to do, a configuration error */
    pt_bad(f, "[pipeline]\nchain = key_remap\n", 2,
           "[key_remap] nothing to do: give at least one rename");
    pt_load_ok(f, HEAD "rename = a. => b.\n");
    assert_string_equal(pt_places(f, "state"), "best_state/model");
    assert_int_equal(pt_count(f, "rename"), 1);
    assert_string_equal(pt_enum(f, "on_conflict"), "error");
    assert_int_equal(pt_bool(f, "require_match"), 0);
}

static void test_values(void **state)
{
    pt_fx_t *f = *state;

    pt_load_ok(f, HEAD "state = a b/c\n"
                       "rename = emb. => embeddings.\n"
                       "state = d\n"
                       "rename = re:^x\\.([0-9]+)\\. => y.\\1.\n"
                       "rename = model. =>\n"
                       "on_conflict = replace\n"
                       "require_match = yes\n");
    assert_string_equal(pt_places(f, "state"), "a b/c d");
    /* each rename line is one rule, parsed at load */
    assert_int_equal(pt_count(f, "rename"), 3);
    assert_string_equal(pt_enum(f, "on_conflict"), "replace");
    assert_int_equal(pt_bool(f, "require_match"), 1);
}

static void test_bad_rename_lines(void **state)
{
    static const struct {
        const char *line, *what;
    } bad[] = {
        { "a. -> b.", "rename: 'a. -> b.' is not FROM => TO" },
        { "a. b.", "is not FROM => TO" },
        { "=> x.", "empty FROM" },
        { "re: => x.", "empty FROM" },
        { "re:([a- => x", "rename: regex '([a-'" },
        { "re:a{2,1} => x", "regex 'a{2,1}'" },
        /* refused at load as Python's re refuses them */
        { "re:^x\\.(w)$ => y.\\2", "invalid group reference 2" },
        { "re:^x\\.(w)$ => y.\\g<3>", "invalid group reference 3" },
        { "re:^x\\.(?P<w>w)$ => \\g<v>", "unknown group name 'v'" },
        { "re:x => \\q", "bad escape \\q" },
        { "re:x => y\\", "bad escape (end of pattern)" },
        { "re:x => \\g<1", "missing >, unterminated name" },
        { "= => x", "empty FROM" },
    };
    pt_fx_t *f = *state;
    char text[512];

    for (size_t i = 0; i < CK_ARRAY_SIZE(bad); i++) {
        /* the error is at the bad line, not at the section or a good line */
        snprintf(text, sizeof(text),
                 HEAD "rename = a. => b.\n; comment\nrename = %s\n"
                      "rename = c. => d.\n",
                 bad[i].line);
        pt_bad(f, text, 7, bad[i].what);
    }
}

static void test_bad_values(void **state)
{
    pt_fx_t *f = *state;
    char text[8192];

    pt_bad(f, HEAD "require_match = sometimes\n", 5,
           "require_match: 'sometimes' is not yes or no");
    pt_bad(f, HEAD "on_conflict = error\non_conflict = replace\n", 6,
           "'on_conflict' given twice in [key_remap]");
    /* an enum: reported at the value's line */
    pt_bad(f, HEAD "rename = a. => b.\non_conflict = overwrite\n", 6,
           "on_conflict: 'overwrite' is not error or replace");
    pt_bad(f, "[pipeline]\nchain = key_remap:x\n[key_remap:x]\n"
              "on_conflict = Replace\n",
           4, "on_conflict: 'Replace'");
    /* no fixed cap on rules */
    strcpy(text, HEAD);
    for (int i = 0; i < 100; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text),
                 "rename = k%d. => j%d.\n", i, i);
    pt_load_ok(f, text);
    assert_int_equal(pt_count(f, "rename"), 100);
}

/* ---- run -------------------------------------------------------------- */

static void test_prefix(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    run_ok(f, &m, "rename = emb. => embeddings.\n");
    /* a prefix, not a substring: x.emb.w stays; order and values kept */
    assert_string_equal(pt_keys(sd_of(f)),
                        "embeddings.0.weight embeddings.1.weight "
                        "enc.layers.0.norm1.weight enc.layers.0.norm2.bias "
                        "enc.layers.0.self_attn.in_proj_weight out.weight "
                        "out.bias x.emb.w");
    assert_ptr_equal(ck_py_map_get(sd_of(f), "embeddings.1.weight", NULL),
                     m.v[1]);
    /* module m owns the keys under "m.": emb and emb.0 follow */
    assert_string_equal(pt_md_keys(f, sd_of(f)),
                        " embeddings embeddings.0 embeddings.1 enc enc.layers "
                        "enc.layers.0 out");
    pt_changed(f, "{\"op\":\"renamed\",\"state\":\"best_state/model\","
                  "\"key\":\"emb.0.weight\",\"to\":\"embeddings.0.weight\"}");
    assert_int_equal(pt_nchanges(f), 2);
    /* the other state dict is not touched */
    assert_string_equal(pt_keys(m.sd2), "emb.0.weight head.w");
}

/* =KEY renames exactly that key; a prefix rule is text, not levels. */
static void test_exact(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    run_ok(f, &m, "rename = =out.weight => head.weight\n");
    assert_non_null(ck_py_map_get(sd_of(f), "head.weight", NULL));
    assert_non_null(ck_py_map_get(sd_of(f), "out.bias", NULL));
    assert_int_equal(pt_nchanges(f), 1);
    /* the prefix 'emb.0' is also the start of 'emb.0x': '=' is not */
    run_ok(f, &m, "rename = =emb.0 => nothing\n");
    pt_changed(f, "{\"op\":\"unmatched\",\"from\":\"emb.0\"");
}

static void test_regex(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    run_ok(f, &m,
           "rename = re:^enc\\.layers\\.([0-9]+)\\.norm([12])\\. => "
           "blocks.\\1.ln_\\2.\n"
           "rename = re:self_attn => attn\n");
    assert_non_null(ck_py_map_get(sd_of(f), "blocks.0.ln_1.weight", NULL));
    assert_non_null(ck_py_map_get(sd_of(f), "blocks.0.ln_2.bias", NULL));
    /* unanchored: the match is replaced where it is */
    assert_ptr_equal(ck_py_map_get(sd_of(f), "enc.layers.0.attn.in_proj_weight",
                                   NULL),
                     m.v[4]);
    assert_int_equal(pt_nchanges(f), 3);

    /* every match is replaced, as re.sub does */
    run_ok(f, &m, "rename = re:e => E\n");
    assert_non_null(ck_py_map_get(sd_of(f), "Emb.0.wEight", NULL));
    assert_non_null(ck_py_map_get(sd_of(f), "Enc.layErs.0.norm1.wEight",
                                  NULL));
    assert_non_null(ck_py_map_get(sd_of(f), "out.wEight", NULL));
    assert_non_null(ck_py_map_get(sd_of(f), "x.Emb.w", NULL));

    /* a group that did not take part gives nothing; \g<1> is \1 */
    run_ok(f, &m, "rename = re:^(z)?out\\. => o\\g<1>\\\\_\n");
    assert_non_null(ck_py_map_get(sd_of(f), "o\\_weight", NULL));
    assert_non_null(ck_py_map_get(sd_of(f), "o\\_bias", NULL));
}

/* A byte-wise regex must not leave half a character in a key. */
static void test_regex_splits_utf8(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *root, *sd;

    pt_job_reset(f);
    pt_load_ok(f, HEAD "rename = re:^. => x\n");
    root = pt_dict(f);
    sd = pt_set(f, pt_set(f, root, "best_state", pt_dict(f)), "model",
                pt_odict(f, 0));
    pt_set(f, sd, "\xc3\xa9t\xc3\xa9.w", pt_tensor(f, "float32", "2", 1, 0));
    /* '.' is one character, as in Python: the rule cannot split one */
    pt_run_ok(f, root);
    assert_non_null(ck_py_map_get(sd_of(f), "xt\xc3\xa9.w", NULL));
    /* the same rule on ASCII keys is fine */
    pt_job_reset(f);
    pt_load_ok(f, HEAD "rename = re:^. => x\n");
    root = pt_dict(f);
    sd = pt_set(f, pt_set(f, root, "best_state", pt_dict(f)), "model",
                pt_odict(f, 0));
    pt_set(f, sd, "a.w", pt_tensor(f, "float32", "2", 1, 0));
    pt_run_ok(f, root);
    assert_non_null(ck_py_map_get(sd_of(f), "x.w", NULL));
}

static void test_rules_in_order(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    /* each rule sees the result of the ones before */
    run_ok(f, &m, "rename = emb. => a.\nrename = a. => b.\n"
                  "rename = re:\\.bias$ => .b\n");
    assert_string_equal(pt_keys(sd_of(f)),
                        "b.0.weight b.1.weight enc.layers.0.norm1.weight "
                        "enc.layers.0.norm2.b "
                        "enc.layers.0.self_attn.in_proj_weight out.weight "
                        "out.b x.emb.w");
    assert_string_equal(pt_md_keys(f, sd_of(f)),
                        " b b.0 b.1 enc enc.layers enc.layers.0 out");
    /* one record per key, from the original name to the final one */
    pt_changed(f, "\"key\":\"emb.0.weight\",\"to\":\"b.0.weight\"}");
    assert_int_equal(pt_nchanges(f), 4);
    /* the reverse order renames differently: a. matches nothing first */
    run_ok(f, &m, "rename = a. => b.\nrename = emb. => a.\n");
    assert_non_null(ck_py_map_get(sd_of(f), "a.0.weight", NULL));
    pt_changed(f, "{\"op\":\"unmatched\",\"from\":\"a.\",\"to\":\"b.\"}");
}

static void test_prefix_all_and_strip(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    /* re:^ adds a prefix to every key; the root module becomes "model" */
    run_ok(f, &m, "rename = re:^ => model.\n");
    assert_non_null(ck_py_map_get(sd_of(f), "model.x.emb.w", NULL));
    assert_string_equal(pt_md_keys(f, sd_of(f)),
                        "model model.emb model.emb.0 model.emb.1 model.enc "
                        "model.enc.layers model.enc.layers.0 model.out");
    assert_int_equal(pt_nchanges(f), 8);
    /* an empty TO strips a prefix; the module enc.layers.0 becomes the
     * root: its _metadata entry's value goes in the root's place (as
     * torch's consume_prefix_in_state_dict_if_present does for DDP's
     * 'module'), whatever on_conflict says */
    run_ok(f, &m, "rename = enc.layers.0. =>\n");
    assert_non_null(ck_py_map_get(sd_of(f), "norm1.weight", NULL));
    assert_non_null(ck_py_map_get(sd_of(f), "self_attn.in_proj_weight", NULL));
    assert_string_equal(pt_md_keys(f, sd_of(f)),
                        " emb emb.0 emb.1 enc enc.layers out");
}

static void test_metadata_modules(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    /* "enc." does not start with "enc.layers.": module enc stays */
    run_ok(f, &m, "rename = enc.layers. => blocks.\n");
    assert_string_equal(pt_md_keys(f, sd_of(f)),
                        " emb emb.0 emb.1 enc blocks blocks.0 out");
}

static void test_swap(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    /* emb.1 takes emb.0's name while emb.0 moves away: no conflict */
    run_ok(f, &m, "rename = emb.0. => emb.X.\nrename = emb.1. => emb.0.\n");
    assert_ptr_equal(ck_py_map_get(sd_of(f), "emb.X.weight", NULL), m.v[0]);
    assert_ptr_equal(ck_py_map_get(sd_of(f), "emb.0.weight", NULL), m.v[1]);
    assert_null(ck_py_map_get(sd_of(f), "emb.1.weight", NULL));
    /* a true swap through a temporary name, in one instance */
    run_ok(f, &m,
           "rename = out.weight => tmp\nrename = out.bias => out.weight\n"
           "rename = tmp => out.bias\n");
    assert_ptr_equal(ck_py_map_get(sd_of(f), "out.bias", NULL), m.v[5]);
    assert_ptr_equal(ck_py_map_get(sd_of(f), "out.weight", NULL), m.v[6]);
}

static void test_conflicts(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    /* onto a key that stays */
    pt_load_ok(f, HEAD "rename = re:^out\\.bias$ => out.weight\n");
    build(f, &m);
    pt_run_fails(f, m.root, CK_EPLUGIN,
                 "key_remap: best_state/model: 'out.bias' would be renamed "
                 "onto 'out.weight', which exists",
                 NULL);
    /* two keys onto one name */
    pt_job_reset(f);
    pt_load_ok(f, HEAD "rename = re:^emb\\.[01]\\. => emb.\n");
    build(f, &m);
    pt_run_fails(f, m.root, CK_EPLUGIN, "'emb.0.weight' and 'emb.1.weight' "
                 "would both be renamed to 'emb.weight'", NULL);
    /* also with on_conflict = replace: which one would win is not clear */
    pt_job_reset(f);
    pt_load_ok(f, HEAD
               "rename = re:^emb\\.[01]\\. => emb.\non_conflict = replace\n");
    build(f, &m);
    pt_run_fails(f, m.root, CK_EPLUGIN, "would both be renamed", NULL);
}

/* Only keys that stay are in the way: a new name equal to a key renamed
 * itself is no conflict, and of several conflicts the first renamed key in
 * the dict's order is the one reported, the key it lands on before or
 * after it. */
static void test_conflict_order(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    /* enc...norm1 -> x.emb.w, renamed itself; x.emb.w -> emb.1.weight,
     * which stays */
    pt_load_ok(f, HEAD "rename = =x.emb.w => emb.1.weight\n"
                       "rename = =enc.layers.0.norm1.weight => x.emb.w\n");
    build(f, &m);
    pt_run_fails(f, m.root, CK_EPLUGIN,
                 "key_remap: best_state/model: 'x.emb.w' would be renamed "
                 "onto 'emb.1.weight', which exists", NULL);
    /* emb.0.weight lands on a key after it, out.weight on one before it */
    pt_job_reset(f);
    pt_load_ok(f, HEAD "rename = =emb.0.weight => x.emb.w\n"
                       "rename = =out.weight => emb.1.weight\n");
    build(f, &m);
    pt_run_fails(f, m.root, CK_EPLUGIN,
                 "key_remap: best_state/model: 'emb.0.weight' would be "
                 "renamed onto 'x.emb.w', which exists", NULL);
    /* with replace, both keys in the way are gone, each renamed key in
     * its own place */
    pt_job_reset(f);
    run_ok(f, &m, "rename = =emb.0.weight => x.emb.w\n"
                  "rename = =out.weight => emb.1.weight\n"
                  "on_conflict = replace\n");
    assert_string_equal(pt_keys(sd_of(f)),
                        "x.emb.w enc.layers.0.norm1.weight "
                        "enc.layers.0.norm2.bias "
                        "enc.layers.0.self_attn.in_proj_weight emb.1.weight "
                        "out.bias");
    assert_ptr_equal(ck_py_map_get(sd_of(f), "x.emb.w", NULL), m.v[0]);
    assert_ptr_equal(ck_py_map_get(sd_of(f), "emb.1.weight", NULL), m.v[5]);
    /* reported in the dict's order */
    pt_changed(f, "\"key\":\"emb.0.weight\",\"to\":\"x.emb.w\"},"
                  "{\"op\":\"replaced\",\"state\":\"best_state/model\","
                  "\"key\":\"emb.1.weight\"},{\"op\":\"renamed\","
                  "\"state\":\"best_state/model\",\"key\":\"out.weight\","
                  "\"to\":\"emb.1.weight\"},{\"op\":\"replaced\","
                  "\"state\":\"best_state/model\",\"key\":\"x.emb.w\"}");
}

static void test_conflict_replace(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    run_ok(f, &m, "rename = re:^out\\.bias$ => out.weight\n"
                  "on_conflict = replace\n");
    /* the renamed key takes its own place; the old out.weight is gone */
    assert_string_equal(pt_keys(sd_of(f)),
                        "emb.0.weight emb.1.weight enc.layers.0.norm1.weight "
                        "enc.layers.0.norm2.bias "
                        "enc.layers.0.self_attn.in_proj_weight out.weight "
                        "x.emb.w");
    assert_ptr_equal(ck_py_map_get(sd_of(f), "out.weight", NULL), m.v[6]);
    pt_changed(f, "{\"op\":\"replaced\",\"state\":\"best_state/model\","
                  "\"key\":\"out.weight\"}");
    pt_changed(f, "\"key\":\"out.bias\",\"to\":\"out.weight\"}");
    assert_int_equal(pt_nchanges(f), 2);
    /* the replaced tensor's storage is no longer referenced */
    assert_int_equal(pt_live_storages(f), 7);
}

static void test_unmatched(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    run_ok(f, &m, "rename = nosuch. => x.\nrename = re:^zz => y\n");
    assert_string_equal(
        f->json, "[{\"op\":\"unmatched\",\"from\":\"nosuch.\",\"to\":\"x.\"},"
                 "{\"op\":\"unmatched\",\"from\":\"^zz\",\"to\":\"y\"}]");
    assert_string_equal(pt_keys(sd_of(f)),
                        "emb.0.weight emb.1.weight enc.layers.0.norm1.weight "
                        "enc.layers.0.norm2.bias "
                        "enc.layers.0.self_attn.in_proj_weight out.weight "
                        "out.bias x.emb.w");
    /* require_match fails on the first rule matching nothing */
    pt_job_reset(f);
    pt_load_ok(f, HEAD "rename = emb. => e.\nrename = re:^zz => y\n"
                       "require_match = yes\n");
    build(f, &m);
    pt_run_fails(f, m.root, CK_EPLUGIN, "key_remap: rule 're:^zz => y' matches "
                 "no key", NULL);
}

static void test_several_states(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    /* a rule matching in the second state only is not unmatched */
    run_ok(f, &m, "state = best_state/model model\nrename = emb.0. => e0.\n"
                  "rename = head. => h.\nrequire_match = yes\n");
    assert_non_null(ck_py_map_get(sd_of(f), "e0.weight", NULL));
    assert_string_equal(pt_keys(m.sd2), "e0.weight h.w");
    pt_changed(f, "{\"op\":\"renamed\",\"state\":\"model\",\"key\":\"head.w\","
                  "\"to\":\"h.w\"}");
    /* a missing state fails, naming it */
    pt_job_reset(f);
    pt_load_ok(f,
               HEAD "state = best_state/model nosuch\nrename = emb. => e.\n");
    build(f, &m);
    pt_run_fails(f, m.root, CK_EPLUGIN, "nosuch", NULL);
    /* and so does one that is not a dict */
    pt_job_reset(f);
    pt_load_ok(f, HEAD "state = best_state/model/out.bias\nrename = a => b\n");
    build(f, &m);
    pt_run_fails(f, m.root, CK_EPLUGIN, "is not a dict", NULL);
}

/*
 * A state dict whose _metadata is an empty OrderedDict (its call got no
 * items in the pickle, so it holds no room for them): the metadata is
 * edited where it can be (a build that kept no room wrote into the shared
 * empty items and crashed).
 */
static void test_empty_metadata(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *root, *sd;

    pt_load_ok(f, HEAD "state = state_dict\nrename = model. => net.\n");
    root = pt_empty_md_model(f, &sd);
    assert_string_equal(pt_md_keys(f, sd), "");
    pt_run_ok(f, root);
    assert_string_equal(pt_keys(sd), "net.w");
    assert_string_equal(pt_md_keys(f, sd), "");
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, pt_setup, pt_teardown)
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_values),
        T(test_bad_rename_lines),
        T(test_bad_values),
        T(test_prefix),
        T(test_exact),
        T(test_regex),
        T(test_regex_splits_utf8),
        T(test_rules_in_order),
        T(test_prefix_all_and_strip),
        T(test_metadata_modules),
        T(test_swap),
        T(test_conflicts),
        T(test_conflict_order),
        T(test_conflict_replace),
        T(test_unmatched),
        T(test_several_states),
        T(test_empty_metadata),
    };
#undef T

    return cmocka_run_group_tests(tests, NULL, NULL);
}
