/*
 * test_cast.c -- the cast plugin: its directives through the real loader
 * ('to' float16 by default, 'from' and 'to' only floating dtypes), and its
 * run over a model built in memory: storages marked for conversion (not
 * read), views kept, a storage shared with a tensor not cast split in two,
 * keys and from filters, the changes reported, and the bytes written equal
 * to ck_dtype_convert's (tests/plugins/test_cast.py checks them against torch).
 */
#include "plugin_test.h"

#define HEAD "[pipeline]\nchain = cast\n\n[cast]\nstate = m\n"

static void test_directives(void **state)
{
    pt_fx_t *f = *state;

    pt_load_ok(f, HEAD "to = bfloat16\n");
    assert_string_equal(pt_list(f, "keys"), "*");
    pt_load_ok(f, "[pipeline]\nchain = cast\n[cast]\nkeys = a*\n");
    assert_string_equal(pt_enum(f, "to"), "float16");
    pt_bad(f, HEAD "to = int8\n", 6, "int8");
    pt_bad(f, HEAD "to = float16\nfrom = float32 uint8\n", 7, "uint8");
}

static void test_run(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *root, *m, *w, *v, *keep;
    int64_t size[1] = { 2 }, stride[1] = { 2 };
    ck_tensor_t *tw, *tk;
    ck_write_info_t info;
    uint8_t *got;
    uint16_t want[4];
    float src[4] = { 1.0f, 2.0f, 3.0f, 4.0f };

    pt_load_ok(f, HEAD "to = float16\nkeys = w* x\n");
    root = pt_dict(f);
    m = pt_set(f, root, "m", pt_dict(f));
    w = pt_set(f, m, "w", pt_tensor(f, "float32", "4", 1, 1));
    v = pt_set(f, m, "wv", pt_view(f, w, 1, 1, size, stride));
    pt_set(f, m, "x", pt_tensor(f, "int64", "2", 0, 1));   /* not floating */
    pt_set(f, m, "y", pt_tensor(f, "float64", "2", 0, 1)); /* not in keys */
    keep = pt_set(f, root, "keep", pt_tensor(f, "float64", "3", 0, 1));
    pt_set(f, root, "keep2", pt_view(f, keep, 0, 1, size, stride));
    (void)keep;
    pt_run_ok(f, root);
    assert_int_equal(pt_nchanges(f), 2);
    pt_changed(f, "{\"op\":\"cast\",\"state\":\"m\",\"key\":\"w\",\"from\":"
                  "\"float32\",\"to\":\"float16\",\"bytes_before\":16,"
                  "\"bytes_after\":8,\"split\":false}");
    pt_changed(f, "\"key\":\"wv\",\"from\":\"float32\",\"to\":\"float16\","
                  "\"bytes_before\":8,\"bytes_after\":4,\"split\":false}");
    tw = pt_t(f, w);
    assert_string_equal(tw->dtype->name, "float16");
    assert_int_equal(tw->st->nconv, 2);
    assert_int_equal(ck_storage_nbytes(tw->st), 8);
    assert_ptr_equal(pt_t(f, v)->st, tw->st); /* one storage, cast once */
    assert_int_equal(pt_t(f, v)->offset, 1);
    assert_int_equal(pt_t(f, v)->stride[0], 2);
    tk = pt_t(f, keep);
    assert_string_equal(tk->dtype->name, "float64");
    assert_int_equal(tk->st->nconv, 0);
    pt_write_back(f, &info);
    got = pt_bytes(f, &f->back, ck_ckpt_get(&f->back, "m/w"));
    assert_int_equal(ck_dtype_convert(ck_dtype_by_name("float16"), want,
                                      ck_dtype_by_name("float32"), src, 4), 0);
    assert_memory_equal(got, want, 8);
}

static void test_split(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *root, *m, *w, *other;
    int64_t size[1] = { 2 }, stride[1] = { 1 };

    pt_load_ok(f, HEAD "to = bfloat16\n");
    root = pt_dict(f);
    m = pt_set(f, root, "m", pt_dict(f));
    w = pt_set(f, m, "w", pt_tensor(f, "float32", "4", 1, 1));
    other = pt_set(f, root, "other", pt_view(f, w, 2, 1, size, stride));
    pt_run_ok(f, root);
    pt_changed(f, "\"split\":true");
    assert_ptr_not_equal(pt_t(f, w)->st, pt_t(f, other)->st);
    assert_string_equal(pt_t(f, other)->dtype->name, "float32");
    assert_string_equal(pt_t(f, w)->dtype->name, "bfloat16");
    assert_int_equal(pt_live_storages(f), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_directives, pt_setup, pt_teardown),
        cmocka_unit_test_setup_teardown(test_run, pt_setup, pt_teardown),
        cmocka_unit_test_setup_teardown(test_split, pt_setup, pt_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
