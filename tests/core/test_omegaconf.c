/*
 * test_omegaconf.c -- core/omegaconf: nodes built from YAML values the way
 * OmegaConf 2.2 pickles them (classes, metadata, _parent links, keys) and
 * read back through the reading API; the conversions typed leaves make
 * (FloatNode, IntegerNode, BooleanNode, StringNode) and what they refuse;
 * unwrapping for Python's ==; a built graph surviving a pickle round trip.
 */
#include "omegaconf.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    ck_arena_t a;
    ck_err_t err;
    ck_omc_ctx_t c;
} fx_t;

static ck_py_t *global_cb(void *ud, const char *module, const char *name)
{
    return ck_py_global(ud, module, name);
}

static int setup(void **state)
{
    fx_t *f = test_calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    f->c.a = &f->a;
    f->c.global = global_cb;
    f->c.ud = &f->a;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;

    ck_arena_release(&f->a);
    test_free(f);
    return 0;
}

static ck_yval_t *yaml(fx_t *f, const char *text, int hydra)
{
    ck_yaml_ctx_t y = { .a = &f->a, .err = &f->err, .what = "t",
                        .hydra = hydra };
    ck_yval_t *v = ck_yaml_parse(&y, text, strlen(text));

    assert_non_null(v);
    return v;
}

static ck_py_t *build(fx_t *f, const char *text)
{
    ck_py_t *root = ck_omc_from_yval(&f->c, yaml(f, text, 0),
                                     ck_py_str(&f->a, "cfg", 3),
                                     ck_py_new(&f->a, CK_PY_NONE));

    assert_non_null(root);
    return root;
}

static void test_build_and_read(void **state)
{
    fx_t *f = *state;
    ck_py_t *root = build(f, "a: 1\nb: [x, 2.5]\n"), *b, *leaf;
    ck_py_vec_t *m, *l;
    int dict = 0;

    assert_true(ck_omc_is(root, "DictConfig"));
    assert_null(ck_omc_leaf_class(root));
    m = ck_omc_children(root, &dict);
    assert_non_null(m);
    assert_true(dict);
    assert_int_equal(m->n, 4);
    assert_true(ck_py_str_eq(m->v[0], "a"));
    leaf = m->v[1];
    assert_string_equal(ck_omc_leaf_class(leaf), "AnyNode");
    assert_true(ck_py_str_eq(ck_omc_key(leaf), "a"));
    assert_int_equal(ck_omc_unwrap(leaf)->u.i.v, 1);
    assert_ptr_equal(ck_py_map_get(ck_py_after(leaf)->state, "_parent", NULL), root);

    b = m->v[3];
    assert_true(ck_omc_is(b, "ListConfig"));
    l = ck_omc_children(b, &dict);
    assert_false(dict);
    assert_int_equal(l->n, 2);
    assert_int_equal(ck_omc_key(l->v[1])->u.i.v, 1); /* index as key */
    assert_true(ck_py_float_value(ck_omc_unwrap(l->v[1])) == 2.5);
    assert_int_equal(ck_omc_unwrap(b)->kind, CK_PY_LIST);
    /* a plain value is no node */
    assert_null(ck_omc_children(ck_omc_unwrap(leaf), NULL));
    assert_ptr_equal(ck_omc_unwrap(m->v[0]), m->v[0]);
    /* no parent, no node */
    assert_null(ck_omc_from_yval(&f->c, yaml(f, "1", 0), NULL, NULL));
}

/* The state of node's _metadata. */
static ck_py_t *md_of(ck_py_t *node)
{
    ck_py_t *md = ck_py_map_get(ck_py_after(node)->state, "_metadata", NULL);

    assert_non_null(md);
    return ck_py_after(md)->state;
}

static void set_item(fx_t *f, ck_py_t *dict, const char *k, ck_py_t *v)
{
    size_t at;

    assert_non_null(v);
    if (ck_py_map_get(dict, k, &at) != NULL) {
        dict->u.seq.v[2 * at + 1] = v;
        return;
    }
    assert_int_equal(ck_py_vec_push(&f->a, &dict->u.seq,
                                    ck_py_str(&f->a, k, strlen(k))), 0);
    assert_int_equal(ck_py_vec_push(&f->a, &dict->u.seq, v), 0);
}

static ck_py_t *mk_bool(fx_t *f, int b)
{
    ck_py_t *p = ck_py_new(&f->a, CK_PY_BOOL);

    assert_non_null(p);
    p->b = (uint8_t)b;
    return p;
}

/* OmegaConf's Node._get_flag("readonly") and a container's element_type. */
static void test_readonly_and_typed(void **state)
{
    fx_t *f = *state;
    ck_py_t *root = build(f, "a: {b: 1}\nc: 2\n"), *a, *b, *tup;
    ck_py_vec_t *m = ck_omc_children(root, NULL);

    a = m->v[1];
    b = ck_omc_children(a, NULL)->v[1];
    assert_false(ck_omc_readonly(b));
    set_item(f, ck_py_map_get(md_of(root), "flags", NULL), "readonly",
             mk_bool(f, 1));
    assert_true(ck_omc_readonly(root));
    assert_true(ck_omc_readonly(b));            /* from its parents */
    assert_true(ck_omc_readonly(m->v[3]));
    set_item(f, ck_py_map_get(md_of(a), "flags", NULL), "readonly",
             mk_bool(f, 0));
    assert_false(ck_omc_readonly(b));           /* a says otherwise */
    set_item(f, ck_py_map_get(md_of(a), "flags", NULL), "readonly",
             ck_py_new(&f->a, CK_PY_NONE));     /* None: not said */
    assert_true(ck_omc_readonly(b));
    set_item(f, md_of(a), "flags_root", mk_bool(f, 1));
    assert_false(ck_omc_readonly(b));           /* the search stops at a */
    assert_false(ck_omc_readonly(ck_omc_unwrap(b))); /* no node */

    assert_null(ck_omc_typed(a, "element_type"));   /* typing.Any */
    set_item(f, md_of(a), "element_type", ck_py_global(&f->a, "__builtin__",
                                                       "long"));
    assert_string_equal(ck_omc_typed(a, "element_type"), "int");
    set_item(f, md_of(a), "key_type", ck_py_global(&f->a, "__builtin__",
                                                   "unicode"));
    assert_string_equal(ck_omc_typed(a, "key_type"), "str");
    set_item(f, md_of(a), "element_type", ck_py_global(&f->a, "my", "Cls"));
    assert_string_equal(ck_omc_typed(a, "element_type"), "Cls");
    tup = ck_py_new(&f->a, CK_PY_REDUCE);       /* typing.Optional[int] */
    set_item(f, md_of(a), "element_type", tup);
    assert_string_equal(ck_omc_typed(a, "element_type"), "a typing construct");
    set_item(f, md_of(a), "element_type", ck_py_new(&f->a, CK_PY_NONE));
    assert_null(ck_omc_typed(a, "element_type"));
    assert_null(ck_omc_typed(b, "element_type"));  /* a leaf says none */
}

/* A new element of Dict[str, int]: an IntegerNode as _maybe_wrap makes it. */
static void test_typed_leaf(void **state)
{
    fx_t *f = *state;
    ck_py_t *root = build(f, "a: {b: 1}\n"), *a, *elem, *leaf, *st;
    ck_py_t *key = ck_py_str(&f->a, "k", 1);
    ck_pyval_t t = { .t = CK_PV_STR, .s = "12", .n = 2 };
    ck_pyval_t none = { .t = CK_PV_NULL };

    a = ck_omc_children(root, NULL)->v[1];
    assert_int_equal(ck_omc_typed_leaf(&f->c, a, &t, key, &leaf),
                     CK_EUNSUPPORTED);              /* typing.Any */
    elem = ck_py_global(&f->a, "__builtin__", "long");
    set_item(f, md_of(a), "element_type", elem);
    assert_int_equal(ck_omc_typed_leaf(&f->c, a, &t, key, &leaf), 0);
    assert_string_equal(ck_omc_leaf_class(leaf), "IntegerNode");
    assert_int_equal(ck_omc_unwrap(leaf)->u.i.v, 12);   /* int('12') */
    assert_ptr_equal(ck_omc_key(leaf), key);
    st = ck_py_after(leaf)->state;
    assert_ptr_equal(ck_py_map_get(st, "_parent", NULL), a);
    assert_ptr_equal(ck_py_map_get(md_of(leaf), "ref_type", NULL), elem);
    assert_ptr_equal(ck_py_map_get(md_of(leaf), "object_type", NULL), elem);
    assert_false(ck_py_map_get(md_of(leaf), "optional", NULL)->b);
    t.s = "x";
    t.n = 1;
    assert_int_equal(ck_omc_typed_leaf(&f->c, a, &t, key, &leaf), 1);
    assert_int_equal(ck_omc_typed_leaf(&f->c, a, &none, key, &leaf), 1);
    set_item(f, md_of(a), "element_type", ck_py_global(&f->a, "my", "Cls"));
    assert_int_equal(ck_omc_typed_leaf(&f->c, a, &t, key, &leaf),
                     CK_EUNSUPPORTED);
}

/* A scalar onto a structured container, as OmegaConf's _set_value. */
static void test_structured_content(void **state)
{
    fx_t *f = *state;
    ck_py_t *root = build(f, "a: {b: 1}\n"), *a, *st;
    ck_pyval_t miss = { .t = CK_PV_STR, .s = "???", .n = 3 };
    ck_pyval_t five = { .t = CK_PV_INT, .i = 5 };
    ck_pyval_t none = { .t = CK_PV_NULL };

    a = ck_omc_children(root, NULL)->v[1];
    assert_false(ck_omc_structured(a));            /* ref_type Any */
    set_item(f, md_of(a), "ref_type", ck_py_global(&f->a, "my", "Sub"));
    assert_true(ck_omc_structured(a));
    assert_false(ck_omc_structured(ck_omc_children(a, NULL)->v[1])); /* leaf */
    st = ck_py_after(a)->state;
    assert_int_equal(ck_omc_set_content(NULL, a, &five), 1);
    assert_int_equal(ck_omc_set_content(NULL, a, &miss), 0);
    assert_int_equal(ck_py_map_get(st, "_content", NULL)->kind, CK_PY_DICT);
    assert_int_equal(ck_omc_set_content(&f->a, a, &miss), 0);
    assert_true(ck_py_str_eq(ck_py_map_get(st, "_content", NULL), "???"));
    assert_int_equal(ck_py_map_get(md_of(a), "object_type", NULL)->kind,
                     CK_PY_NONE);
    assert_int_equal(ck_omc_set_content(&f->a, a, &none), 0); /* optional */
    assert_int_equal(ck_py_map_get(st, "_content", NULL)->kind, CK_PY_NONE);
    set_item(f, md_of(a), "optional", mk_bool(f, 0));
    assert_int_equal(ck_omc_set_content(&f->a, a, &none), 1);
}

static void test_pickle_round_trip(void **state)
{
    fx_t *f = *state;
    ck_py_t *root = build(f, "a: {b: [1, {c: null}]}\nd: yes\n");
    ck_limits_t lim;
    ck_buf_t out = { 0 };
    ck_pickle_t pk;

    ck_limits_default(&lim);
    assert_int_equal(ck_pickle_write(root, &lim, &f->a, NULL, NULL, &out,
                                     &f->err),
                     0);
    assert_int_equal(ck_pickle_read(out.data, out.len, 1, &lim, &f->a, &pk,
                                    &f->err),
                     0);
    assert_true(1 == ck_py_equal(root, pk.root, UINT32_MAX));
    ck_buf_release(&out);
}

/* The value a leaf of class cls takes for the Hydra value text, or NULL
 * when it is refused (rc kept in *rc). */
static ck_py_t *leaf(fx_t *f, const char *cls, const char *text, int *rc)
{
    ck_yval_t *v = yaml(f, text, 1);
    ck_py_t *out;

    *rc = ck_omc_leaf_value(&f->a, cls,
                            v->kind == CK_YV_SCALAR
                                ? ck_yval_type(&f->a, v)
                                : NULL,
                            &out);
    return *rc == 0 ? out : NULL;
}

static void test_leaf_values(void **state)
{
    fx_t *f = *state;
    ck_py_t *p;
    int rc;

    p = leaf(f, "FloatNode", "3", &rc);
    assert_true(ck_py_float_value(p) == 3.0);
    p = leaf(f, "FloatNode", "' 1_0.5 '", &rc);
    assert_true(ck_py_float_value(p) == 10.5);
    assert_null(leaf(f, "FloatNode", "true", &rc));
    assert_int_equal(rc, 1);
    assert_null(leaf(f, "FloatNode", "abc", &rc));
    p = leaf(f, "IntegerNode", "'12'", &rc);
    assert_int_equal(p->u.i.v, 12);
    assert_null(leaf(f, "IntegerNode", "1.5", &rc));
    p = leaf(f, "BooleanNode", "'Off'", &rc);
    assert_int_equal(p->kind, CK_PY_BOOL);
    assert_int_equal(p->b, 0);
    p = leaf(f, "BooleanNode", "'2'", &rc);
    assert_int_equal(p->b, 1);
    assert_null(leaf(f, "BooleanNode", "maybe", &rc));
    p = leaf(f, "StringNode", "1e5", &rc);
    assert_string_equal(p->u.s.s, "100000.0");
    p = leaf(f, "StringNode", "true", &rc);
    assert_string_equal(p->u.s.s, "True");
    assert_null(leaf(f, "StringNode", "[1]", &rc));
    assert_int_equal(rc, 1);
    /* None, '???' and interpolations go in any node */
    p = leaf(f, "IntegerNode", "null", &rc);
    assert_int_equal(p->kind, CK_PY_NONE);
    p = leaf(f, "FloatNode", "???", &rc);
    assert_string_equal(p->u.s.s, "???");
    assert_null(leaf(f, "EnumNode", "x", &rc));
    assert_int_equal(rc, CK_EUNSUPPORTED);
}

static void test_eq_unwraps(void **state)
{
    fx_t *f = *state;
    ck_py_t *root = build(f, "a: 1\nb: [x, 2.5]\n");
    ck_py_t *want = ck_yval_py(&f->a, yaml(f, "{b: [x, 2.5], a: 1.0}", 1), 1);
    ck_buf_t b = { 0 };

    assert_true(ck_pyval_eq_py(&f->a, want, root, ck_omc_unwrap));
    assert_false(ck_pyval_eq_py(&f->a, want, root, NULL));
    ck_pyval_show_py(&b, &f->a, root, ck_omc_unwrap);
    ck_buf_putc(&b, '\0');
    assert_string_equal((char *)b.data, "{'a': 1, 'b': ['x', 2.5]}");
    ck_buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_readonly_and_typed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_typed_leaf, setup, teardown),
        cmocka_unit_test_setup_teardown(test_structured_content, setup, teardown),
        cmocka_unit_test_setup_teardown(test_build_and_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pickle_round_trip, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_leaf_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eq_unwraps, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
