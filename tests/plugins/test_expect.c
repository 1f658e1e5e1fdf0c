/*
 * test_expect.c -- the expect plugin: its directives through the real
 * loader (the manifest read once at load, relative to the configuration's
 * folder, from JSON or from a reference checkpoint; errors at their line),
 * and its run over a state dict built in memory: strict, subset and
 * superset; dtype any and exact; torch's 0-dim rule; a value that is no
 * tensor; the report's counts and its first 20 keys; report_only.  The
 * oracle test against load_state_dict is tests/sight/test_expect_oracle.py.
 */
#include "plugin_test.h"

#define HEAD "[pipeline]\nchain = expect\n\n[expect]\n"

static void write_file(pt_fx_t *f, const char *name, const char *text)
{
    char path[256];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    fp = fopen(path, "w");
    assert_non_null(fp);
    assert_true(fputs(text, fp) >= 0);
    assert_int_equal(fclose(fp), 0);
}

/* A manifest of a.weight [2, 3] float32, a.bias [3] float32, n [] int64. */
static const char manifest[] =
    "{\"format\": \"ckprep-manifest\", \"version\": 1, \"tensors\": ["
    "{\"key\": \"a.weight\", \"dtype\": \"float32\", \"shape\": [2, 3]},"
    "{\"key\": \"a.bias\", \"dtype\": \"float32\", \"shape\": [3]},"
    "{\"key\": \"n\", \"dtype\": \"int64\", \"shape\": []}]}";

static ck_py_t *model(pt_fx_t *f, ck_py_t **sd)
{
    ck_py_t *root = pt_dict(f);

    *sd = pt_set(f, root, "model", pt_odict(f, 0));
    return root;
}

static void load(pt_fx_t *f, const char *extra)
{
    char buf[1024];

    write_file(f, "m.json", manifest);
    snprintf(buf, sizeof(buf), HEAD "manifest = m.json\n%s", extra);
    pt_job_reset(f);
    pt_load_ok(f, buf);
}

static void test_defaults_and_errors(void **state)
{
    pt_fx_t *f = *state;

    load(f, "");
    assert_string_equal(pt_enum(f, "keys"), "strict");
    assert_string_equal(pt_enum(f, "dtype"), "any");
    assert_string_equal(pt_place(f, "state"), "best_state/model|model|state_dict|/");
    pt_bad(f, HEAD "keys = strict\n", 4, "manifest is required");
    pt_bad(f, HEAD "manifest = nope.json\n", 5, "nope.json");
    write_file(f, "bad.json", "{\"tensors\": [{\"key\": 1}]}");
    pt_bad(f, HEAD "manifest = bad.json\n", 5, "tensors[0]");
    write_file(f, "two.json", "{\"tensors\": [{\"key\": \"a\", \"shape\": []},"
                              "{\"key\": \"a\", \"shape\": [1]}]}");
    pt_bad(f, HEAD "manifest = two.json\n", 5, "'a' twice");
    write_file(f, "new.json", "{\"version\": 9, \"tensors\": []}");
    pt_bad(f, HEAD "manifest = new.json\n", 5, "newer");
    pt_bad(f, HEAD "manifest = m.json\nkeys = loose\n", 6, "loose");
}

static void test_strict_pass(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *sd, *root;

    load(f, "");
    root = model(f, &sd);
    pt_set(f, sd, "a.weight", pt_tensor(f, "float64", "2x3", 0, 1));
    pt_set(f, sd, "a.bias", pt_tensor(f, "float32", "3", 0, 1));
    pt_set(f, sd, "n", pt_tensor(f, "int64", "1", 0, 1)); /* [1] into [] */
    pt_run_ok(f, root);
    pt_changed(f, "\"verdict\":\"pass\"");
    pt_changed(f, "\"state\":\"model\"");
}

static void test_strict_fails(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *sd, *root;

    load(f, "");
    root = model(f, &sd);
    pt_set(f, sd, "a.weight", pt_tensor(f, "float32", "3x2", 0, 1));
    pt_set(f, sd, "extra", pt_tensor(f, "float32", "1", 0, 1));
    pt_set(f, sd, "n", pt_i(f, 3));
    pt_run_fails(f, root, CK_EPLUGIN, "expect", "1 missing (a.bias)",
                 "1 unexpected (extra)", "2 mismatched (a.weight: float32 [3, 2] for float32 [2, 3], "
                 "n: not a tensor)", NULL);
    pt_changed(f, "\"verdict\":\"fail\"");
    pt_changed(f, "\"missing_count\":1,\"missing\":[\"a.bias\"]");
    pt_changed(f, "\"unexpected_count\":1,\"unexpected\":[\"extra\"]");
    pt_changed(f, "\"mismatched_count\":2,\"mismatched\":[\"a.weight\",\"n\"]");
}

static void test_modes(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *sd, *root;

    /* missing a.bias only: subset passes, superset and strict fail */
    load(f, "keys = subset\n");
    root = model(f, &sd);
    pt_set(f, sd, "a.weight", pt_tensor(f, "float32", "2x3", 0, 1));
    pt_set(f, sd, "n", pt_tensor(f, "int64", "", 0, 1));
    pt_run_ok(f, root);
    load(f, "keys = superset\n");
    root = model(f, &sd);
    pt_set(f, sd, "a.weight", pt_tensor(f, "float32", "2x3", 0, 1));
    pt_set(f, sd, "n", pt_tensor(f, "int64", "", 0, 1));
    pt_run_fails(f, root, CK_EPLUGIN, "1 missing", NULL);
    /* an extra key only: superset passes */
    load(f, "keys = superset\n");
    root = model(f, &sd);
    pt_set(f, sd, "a.weight", pt_tensor(f, "float32", "2x3", 0, 1));
    pt_set(f, sd, "a.bias", pt_tensor(f, "float32", "3", 0, 1));
    pt_set(f, sd, "n", pt_tensor(f, "int64", "", 0, 1));
    pt_set(f, sd, "more", pt_tensor(f, "float32", "3", 0, 1));
    pt_run_ok(f, root);
    /* dtype = exact */
    load(f, "dtype = exact\n");
    root = model(f, &sd);
    pt_set(f, sd, "a.weight", pt_tensor(f, "float64", "2x3", 0, 1));
    pt_set(f, sd, "a.bias", pt_tensor(f, "float32", "3", 0, 1));
    pt_set(f, sd, "n", pt_tensor(f, "int64", "", 0, 1));
    pt_run_fails(f, root, CK_EPLUGIN, "1 mismatched", "a.weight", NULL);
    /* report_only records the failure without failing */
    load(f, "dtype = exact\nreport_only = yes\n");
    root = model(f, &sd);
    pt_set(f, sd, "a.weight", pt_tensor(f, "float64", "2x3", 0, 1));
    pt_run_ok(f, root);
    pt_changed(f, "\"verdict\":\"fail\"");
    /* no state dict */
    load(f, "state = nothere\n");
    root = model(f, &sd);
    pt_run_fails(f, root, CK_EPLUGIN, "no 'nothere' in the checkpoint", NULL);
}

static void test_many_keys_shown(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *sd, *root;
    char k[32];

    load(f, "");
    root = model(f, &sd);
    for (int i = 0; i < 30; i++) {
        snprintf(k, sizeof(k), "x%d", i);
        pt_set(f, sd, k, pt_tensor(f, "float32", "1", 0, 1));
    }
    pt_run_fails(f, root, CK_EPLUGIN, "30 unexpected (x0, x1", "x19, ...)",
                 "3 missing", NULL);
    pt_changed(f, "\"unexpected_count\":30");
    assert_null(strstr(f->json, "\"x20\""));
}

static void test_reference_checkpoint(void **state)
{
    pt_fx_t *f = *state;
    ck_write_info_t info;
    ck_py_t *sd, *root;
    char buf[512];

    /* write a reference checkpoint, then use it as the manifest */
    load(f, "");
    root = model(f, &sd);
    pt_set(f, sd, "w", pt_tensor(f, "float32", "2x2", 0, 1));
    f->job.ck.pk.root = root;
    pt_scan(f);
    pt_write_back(f, &info);
    snprintf(buf, sizeof(buf), HEAD "manifest = out.th model\n");
    pt_job_reset(f);
    pt_load_ok(f, buf);
    root = model(f, &sd);
    pt_set(f, sd, "w", pt_tensor(f, "float32", "2x2", 0, 1));
    pt_run_ok(f, root);
    pt_job_reset(f);
    pt_load_ok(f, buf);
    root = model(f, &sd);
    pt_set(f, sd, "w", pt_tensor(f, "float32", "4", 0, 1));
    pt_run_fails(f, root, CK_EPLUGIN, "1 mismatched (w: float32 [4] for float32 [2, 2])", NULL);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, pt_setup, pt_teardown)
    const struct CMUnitTest tests[] = {
        T(test_defaults_and_errors), T(test_strict_pass),
        T(test_strict_fails),        T(test_modes),
        T(test_many_keys_shown),     T(test_reference_checkpoint),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
