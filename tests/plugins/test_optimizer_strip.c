/*
 * test_optimizer_strip.c -- the optimizer_strip plugin: 'drop' and 'detect'
 * through the real loader (defaults, lists, errors with FILE:LINE, labelled
 * instances), and its run over a training checkpoint built in memory:
 * listed keys removed, optimizer state dicts ({state, param_groups}) found
 * in dicts, OrderedDicts and lists at any depth, lists left empty removed
 * with their key, byte counts, and the storages left unreferenced.
 */
#include "plugin_test.h"

#define HEAD "[pipeline]\nchain = optimizer_strip\n\n[optimizer_strip]\n"

/* An optimizer state dict holding one float32 tensor of n elements. */
static ck_py_t *optimizer(pt_fx_t *f, const char *n)
{
    ck_py_t *o = pt_dict(f), *st, *pg, *g;

    st = pt_set(f, o, "state", pt_dict(f));
    pt_set(f, st, "exp_avg", pt_tensor(f, "float32", n, 0, 1));
    pg = pt_set(f, o, "param_groups", pt_new(f, CK_PY_LIST));
    g = pt_push(f, pg, pt_dict(f));
    pt_set(f, g, "lr", pt_i(f, 1));
    return o;
}

/*
 * The training checkpoint the run tests use ("listed": in the default drop):
 *
 *   model             {"w": float32 4}                      kept
 *   optimizer         optimizer of 8 elements (32 bytes)    listed
 *   lr_scheduler      {"step_size": 5}                      listed
 *   scaler            {"scale": 1}                          listed
 *   ema               {"state": {"w": ...}, "count": 3}     listed; not an
 *                                                           optimizer
 *   optimizer_states  [optimizer 3]                         emptied: goes
 *   opts              [optimizer 5, "keep-me"]              keeps "keep-me"
 *   nested            {"deep": {"o": optimizer 6, "x": 1}}
 *   adv               OrderedDict {"d.weight": 1, "d.optimizer": optimizer 7}
 *   lists             [[optimizer 9], "x"]                  inner list goes
 *   only              [[optimizer 10]]                      all of it goes
 */
static ck_py_t *build(pt_fx_t *f, ck_py_t **model)
{
    ck_py_t *root = pt_dict(f), *x, *y, *ema;

    *model = pt_set(f, root, "model", pt_dict(f));
    pt_set(f, *model, "w", pt_tensor(f, "float32", "4", 1, 1));
    pt_set(f, root, "optimizer", optimizer(f, "8"));
    x = pt_set(f, root, "lr_scheduler", pt_dict(f));
    pt_set(f, x, "step_size", pt_i(f, 5));
    x = pt_set(f, root, "scaler", pt_dict(f));
    pt_set(f, x, "scale", pt_i(f, 1));
    ema = pt_set(f, root, "ema", pt_dict(f));
    x = pt_set(f, ema, "state", pt_dict(f));
    pt_set(f, x, "w", pt_tensor(f, "float32", "2", 0, 0));
    pt_set(f, ema, "count", pt_i(f, 3));
    x = pt_set(f, root, "optimizer_states", pt_new(f, CK_PY_LIST));
    pt_push(f, x, optimizer(f, "3"));
    x = pt_set(f, root, "opts", pt_new(f, CK_PY_LIST));
    pt_push(f, x, optimizer(f, "5"));
    pt_push(f, x, pt_s(f, "keep-me"));
    x = pt_set(f, root, "nested", pt_dict(f));
    x = pt_set(f, x, "deep", pt_dict(f));
    pt_set(f, x, "o", optimizer(f, "6"));
    pt_set(f, x, "x", pt_i(f, 1));
    x = pt_set(f, root, "adv", pt_odict(f, 1));
    pt_set(f, x, "d.weight", pt_i(f, 1));
    pt_set(f, x, "d.optimizer", optimizer(f, "7"));
    x = pt_set(f, root, "lists", pt_new(f, CK_PY_LIST));
    y = pt_push(f, x, pt_new(f, CK_PY_LIST));
    pt_push(f, y, optimizer(f, "9"));
    pt_push(f, x, pt_s(f, "x"));
    x = pt_set(f, root, "only", pt_new(f, CK_PY_LIST));
    y = pt_push(f, x, pt_new(f, CK_PY_LIST));
    pt_push(f, y, optimizer(f, "10"));
    return root;
}

/* ---- directives ------------------------------------------------------- */

static void test_defaults(void **state)
{
    pt_fx_t *f = *state;

    pt_load_ok(f, "[pipeline]\nchain = optimizer_strip\n");
    assert_string_equal(pt_list(f, "drop"),
                        "optimizer|lr_scheduler|scaler|ema");
    assert_int_equal(pt_bool(f, "detect"), 1);
    pt_load_ok(f, HEAD "detect = no\n");
    assert_int_equal(pt_bool(f, "detect"), 0);
    assert_string_equal(pt_list(f, "drop"),
                        "optimizer|lr_scheduler|scaler|ema");
}

static void test_values(void **state)
{
    pt_fx_t *f = *state;

    /* drop appends, words split on spaces, tabs and commas */
    pt_load_ok(f, HEAD "drop = a, b\tc\ndetect = false\ndrop = d\n");
    assert_string_equal(pt_list(f, "drop"), "a|b|c|d");
    assert_int_equal(pt_bool(f, "detect"), 0);
    /* given empty: nothing to drop, and the default does not come back */
    pt_load_ok(f, HEAD "drop =\n");
    assert_string_equal(pt_list(f, "drop"), "");
    assert_int_equal(pt_bool(f, "detect"), 1);
    /* two labelled instances have their own settings */
    pt_load_ok(f, "[pipeline]\nchain = optimizer_strip optimizer_strip:b\n"
                  "[optimizer_strip:b]\ndetect = off\ndrop = x\n");
    assert_int_equal(*(int *)pt_field_of(f, 0, "detect", ck_conf_set_bool), 1);
    assert_int_equal(*(int *)pt_field_of(f, 1, "detect", ck_conf_set_bool), 0);
    assert_string_equal(pt_list(f, "drop"),
                        "optimizer|lr_scheduler|scaler|ema");
}

static void test_bad_values(void **state)
{
    pt_fx_t *f = *state;

    pt_bad(f, HEAD "drop = x\ndetect = 2\n", 6, "detect: '2' is not yes or no");
    pt_bad(f, HEAD "detect = yes\n; again\ndetect = no\n", 7,
           "'detect' given twice in [optimizer_strip]");
    pt_bad(f, HEAD "dorp = optimizer\n", 5,
           "unknown directive 'dorp' in [optimizer_strip]");
}

/* ---- run -------------------------------------------------------------- */

static void test_drop_only(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *root, *model;

    pt_load_ok(f, HEAD "detect = no\ndrop = optimizer scaler ema nothere\n");
    root = build(f, &model);
    pt_run_ok(f, root);
    assert_string_equal(pt_keys(root), "model lr_scheduler optimizer_states "
                                       "opts nested adv lists only");
    assert_string_equal(
        f->json, "[{\"op\":\"removed\",\"path\":\"optimizer\",\"bytes\":32},"
                 "{\"op\":\"removed\",\"path\":\"scaler\",\"bytes\":0},"
                 "{\"op\":\"removed\",\"path\":\"ema\",\"bytes\":8}]");
    assert_ptr_equal(ck_py_map_get(root, "model", NULL), model);
}

static void test_detect(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *root, *model, *x;
    size_t before;

    pt_load_ok(f, "[pipeline]\nchain = optimizer_strip\n");
    root = build(f, &model);
    f->job.ck.pk.root = root;
    pt_scan(f);
    before = pt_live_storages(f);
    assert_int_equal(before, 9);
    pt_run_ok(f, root);
    assert_string_equal(pt_keys(root), "model opts nested adv lists");
    /* a list keeps what is not an optimizer */
    x = ck_py_map_get(root, "opts", NULL);
    assert_int_equal(x->u.seq.n, 1);
    assert_true(ck_py_str_eq(x->u.seq.v[0], "keep-me"));
    /* a list emptied inside a list goes too */
    x = ck_py_map_get(root, "lists", NULL);
    assert_int_equal(x->u.seq.n, 1);
    assert_true(ck_py_str_eq(x->u.seq.v[0], "x"));
    assert_string_equal(pt_keys(ck_ckpt_get(&f->job.ck, "nested/deep")), "x");
    /* inside an OrderedDict (a state dict holding an optimizer) */
    assert_string_equal(pt_keys(ck_ckpt_get(&f->job.ck, "adv")), "d.weight");
    pt_changed(f, "{\"op\":\"removed\",\"path\":\"optimizer\",\"bytes\":32}");
    pt_changed(f, "{\"op\":\"removed\",\"path\":\"lr_scheduler\",\"bytes\":0}");
    pt_changed(
        f, "{\"op\":\"removed\",\"path\":\"optimizer_states/0\",\"bytes\":12}");
    pt_changed(
        f, "{\"op\":\"removed\",\"path\":\"optimizer_states\",\"bytes\":0}");
    pt_changed(f, "{\"op\":\"removed\",\"path\":\"opts/0\",\"bytes\":20}");
    pt_changed(f,
               "{\"op\":\"removed\",\"path\":\"nested/deep/o\",\"bytes\":24}");
    pt_changed(
        f, "{\"op\":\"removed\",\"path\":\"adv/d.optimizer\",\"bytes\":28}");
    pt_changed(f, "{\"op\":\"removed\",\"path\":\"lists/0/0\",\"bytes\":36}");
    pt_changed(f, "{\"op\":\"removed\",\"path\":\"lists/0\",\"bytes\":0}");
    pt_changed(f, "{\"op\":\"removed\",\"path\":\"only/0/0\",\"bytes\":40}");
    pt_changed(f, "{\"op\":\"removed\",\"path\":\"only/0\",\"bytes\":0}");
    pt_changed(f, "{\"op\":\"removed\",\"path\":\"only\",\"bytes\":0}");
    assert_int_equal(pt_nchanges(f), 4 + 10);
    /* only the model's storage is still referenced, and written */
    assert_int_equal(pt_live_storages(f), 1);
    {
        ck_write_info_t info;

        pt_write_back(f, &info);
        assert_int_equal(info.nstorages, 1);
        assert_int_equal(info.storage_bytes, 16);
        assert_string_equal(pt_keys(f->back.pk.root),
                            "model opts nested adv lists");
    }
}

/* detect alone finds the top-level optimizer by its shape; what has only
 * one of 'state' and 'param_groups' stays. */
static void test_detect_shapes(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *root = NULL, *x, *od;

    pt_load_ok(f, HEAD "drop =\n");
    root = pt_dict(f);
    pt_set(f, root, "opt", optimizer(f, "2"));
    x = pt_set(f, root, "state_only", pt_dict(f));
    pt_set(f, x, "state", pt_dict(f));
    x = pt_set(f, root, "groups_only", pt_dict(f));
    pt_set(f, x, "param_groups", pt_new(f, CK_PY_LIST));
    /* an OrderedDict with both is an optimizer too */
    od = pt_set(f, root, "od", pt_odict(f, 0));
    pt_set(f, od, "state", pt_dict(f));
    pt_set(f, od, "param_groups", pt_new(f, CK_PY_LIST));
    /* a list that was empty before is not "left empty" */
    pt_set(f, root, "empty", pt_new(f, CK_PY_LIST));
    pt_set(f, root, "t", pt_tensor(f, "float32", "2", 0, 0));
    pt_run_ok(f, root);
    assert_string_equal(pt_keys(root), "state_only groups_only empty t");
    assert_string_equal(f->json,
                        "[{\"op\":\"removed\",\"path\":\"od\",\"bytes\":0},"
                        "{\"op\":\"removed\",\"path\":\"opt\",\"bytes\":8}]");
}

static void test_detect_no(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *root, *model;

    pt_load_ok(f, HEAD "detect = no\n");
    root = build(f, &model);
    pt_run_ok(f, root);
    assert_string_equal(pt_keys(root), "model optimizer_states opts nested "
                                       "adv lists only");
    assert_int_equal(pt_nchanges(f), 4);
    assert_int_equal(pt_live_storages(f), 1 + 6);
}

static void test_nothing_to_do(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *root;

    pt_load_ok(f, HEAD "drop = a b\n");
    root = pt_dict(f);
    pt_set(f, root, "w", pt_tensor(f, "float32", "2", 0, 0));
    pt_run_ok(f, root);
    assert_string_equal(pt_keys(root), "w");
    assert_string_equal(f->json, "[]");
}

static void test_not_a_dict(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *root;

    pt_load_ok(f, "[pipeline]\nchain = optimizer_strip\n");
    root = pt_new(f, CK_PY_LIST);
    pt_push(f, root, optimizer(f, "2"));
    pt_run_fails(f, root, CK_EPLUGIN,
                 "optimizer_strip: the checkpoint is not a dict", NULL);
    assert_int_equal(root->u.seq.n, 1);
}

/* Lists nested deeper than the walk goes fail the job (an optimizer may
 * be down there), without overflowing the stack; shallow ones are done. */
static void test_deep_lists(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *root, *x;

    pt_load_ok(f, HEAD "drop =\n");
    root = pt_dict(f);
    x = pt_set(f, root, "deep", pt_new(f, CK_PY_LIST));
    for (int i = 0; i < 200; i++)
        x = pt_push(f, x, pt_new(f, CK_PY_LIST));
    pt_push(f, x, optimizer(f, "2"));
    x = pt_set(f, root, "shallow", pt_new(f, CK_PY_LIST));
    x = pt_push(f, x, pt_new(f, CK_PY_LIST));
    pt_push(f, x, optimizer(f, "2"));
    pt_run_fails(f, root, CK_EPLUGIN, "nested deeper than 32 levels", NULL);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, pt_setup, pt_teardown)
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_values),
        T(test_bad_values),
        T(test_drop_only),
        T(test_detect),
        T(test_detect_shapes),
        T(test_detect_no),
        T(test_nothing_to_do),
        T(test_not_a_dict),
        T(test_deep_lists),
    };
#undef T

    return cmocka_run_group_tests(tests, NULL, NULL);
}
