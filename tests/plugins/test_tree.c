/*
 * test_tree.c -- the tree plugin: copy/move/delete lines parsed at load
 * (SRC => DST, optional '?', a move into itself refused), and its run over a
 * model built in memory: lines in order, a copy sharing the very objects,
 * levels made for a new DST, an existing DST refused or replaced, missing
 * sources failing or skipped, and the changes with their bytes.
 */
#include "plugin_test.h"

#define HEAD "[pipeline]\nchain = tree\n\n[tree]\n"

static void test_directives(void **state)
{
    pt_fx_t *f = *state;

    pt_load_ok(f, HEAD "copy = a => b/c\nmove = x? => y\ndelete = z\n");
    assert_int_equal(pt_count(f, "copy"), 3); /* one list, in order */
    pt_bad(f, HEAD "copy = a\n", 5, "SRC => DST");
    pt_bad(f, HEAD "delete = a => b\n", 5, "one path");
    pt_bad(f, HEAD "move = a => a/b\n", 5, "inside");
    pt_bad(f, HEAD "copy = a => /b\n", 5, "'/b'");
}

static ck_py_t *model(pt_fx_t *f, ck_py_t **ema_model)
{
    ck_py_t *root = pt_dict(f), *x;

    x = pt_set(f, root, "best_state", pt_dict(f));
    x = pt_set(f, x, "model", pt_dict(f));
    pt_set(f, x, "w", pt_tensor(f, "float32", "2", 0, 1));
    x = pt_set(f, root, "ema", pt_dict(f));
    x = pt_set(f, x, "state", pt_dict(f));
    *ema_model = pt_set(f, x, "model", pt_dict(f));
    pt_set(f, *ema_model, "w", pt_tensor(f, "float32", "4", 0, 1));
    pt_set(f, root, "optimizer", pt_dict(f));
    return root;
}

static void test_run(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *root, *ema;

    pt_load_ok(f, HEAD "move = ema/state/model => best_state/model\n"
                       "copy = best_state => release/v1/best\n"
                       "delete = optimizer\ndelete = nothing?\n"
                       "on_exists = replace\n");
    root = model(f, &ema);
    pt_run_ok(f, root);
    assert_ptr_equal(ck_job_get(&f->job, "best_state/model"), ema);
    assert_ptr_equal(ck_job_get(&f->job, "release/v1/best/model"), ema);
    assert_null(ck_job_get(&f->job, "ema/state/model"));
    assert_null(ck_job_get(&f->job, "optimizer"));
    assert_string_equal(pt_keys(root), "best_state ema release");
    pt_changed(f, "{\"op\":\"moved\",\"path\":\"ema/state/model\",\"to\":"
                  "\"best_state/model\",\"bytes\":16,\"replaced\":true}");
    pt_changed(f, "{\"op\":\"copied\",\"path\":\"best_state\",\"to\":"
                  "\"release/v1/best\",\"bytes\":16,\"replaced\":false}");
    pt_changed(f, "{\"op\":\"skipped\",\"path\":\"nothing\"");
    assert_int_equal(pt_live_storages(f), 1);
}

static void test_fails(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *ema;

    pt_load_ok(f, HEAD "copy = ema/state/model => best_state/model\n");
    pt_run_fails(f, model(f, &ema), CK_EPLUGIN, "tree: ", "exists", NULL);
    pt_job_reset(f);
    pt_load_ok(f, HEAD "delete = nope\n");
    pt_run_fails(f, model(f, &ema), CK_EPLUGIN, "'nope'", "nope?", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_directives, pt_setup, pt_teardown),
        cmocka_unit_test_setup_teardown(test_run, pt_setup, pt_teardown),
        cmocka_unit_test_setup_teardown(test_fails, pt_setup, pt_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
