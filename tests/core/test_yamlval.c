/*
 * test_yamlval.c -- core/yamlval: the typing of plain scalars by Hydra's
 * override grammar and by YAML 1.1 as OmegaConf's loader reads it (the two
 * differ: yes, 0x10, 007, ~, .inf, inf), quoted scalars staying strs, the
 * tree's shape and styles, what the parser refuses, lazy typing, and the
 * emitter writing Hydra-typed values so that YAML reads the same type back.
 */
#include "yamlval.h"

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
} fx_t;

static int setup(void **state)
{
    fx_t *f = test_calloc(1, sizeof(*f));

    *state = f;
    return f != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    fx_t *f = *state;

    ck_arena_release(&f->a);
    test_free(f);
    return 0;
}

static ck_yval_t *parse(fx_t *f, const char *text, int hydra, int lazy)
{
    ck_yaml_ctx_t y = { .a = &f->a, .err = &f->err, .what = "t",
                        .hydra = hydra, .lazy = lazy };

    memset(&f->err, 0, sizeof(f->err));
    return ck_yaml_parse(&y, text, strlen(text));
}

/* The type of the one scalar text is. */
static const ck_pyval_t *ty(fx_t *f, const char *text, int hydra)
{
    ck_yval_t *v = parse(f, text, hydra, 0);

    assert_non_null(v);
    assert_int_equal(v->kind, CK_YV_SCALAR);
    return ck_yval_type(&f->a, v);
}

#define assert_type(f, text, hydra, want)                                     \
    assert_int_equal(ty(f, text, hydra)->t, want)

static void assert_int_text(fx_t *f, const char *text, int hydra, int64_t i)
{
    const ck_pyval_t *t = ty(f, text, hydra);

    assert_int_equal(t->t, CK_PV_INT);
    assert_true(t->i == i);
}

static void assert_float_text(fx_t *f, const char *text, int hydra, double d)
{
    const ck_pyval_t *t = ty(f, text, hydra);

    assert_int_equal(t->t, CK_PV_FLOAT);
    if (isnan(d))
        assert_true(isnan(t->f));
    else
        assert_true(t->f == d);
}

static void test_hydra_types(void **state)
{
    fx_t *f = *state;

    assert_type(f, "null", 1, CK_PV_NULL);
    assert_type(f, "NuLL", 1, CK_PV_NULL);
    assert_type(f, "True", 1, CK_PV_BOOL);
    assert_int_equal(ty(f, "FALSE", 1)->b, 0);
    assert_type(f, "yes", 1, CK_PV_STR);
    assert_type(f, "off", 1, CK_PV_STR);
    assert_int_text(f, "1_000", 1, 1000);
    assert_int_text(f, "-0", 1, 0);
    assert_type(f, "0x10", 1, CK_PV_STR);
    assert_type(f, "007", 1, CK_PV_STR);
    assert_type(f, "1__0", 1, CK_PV_STR);
    assert_float_text(f, "1.5", 1, 1.5);
    assert_float_text(f, "1.", 1, 1.0);
    assert_float_text(f, ".5", 1, 0.5);
    assert_float_text(f, "1e5", 1, 1e5);
    assert_float_text(f, "1e-5", 1, 1e-5);
    assert_float_text(f, "1_0.5", 1, 10.5);
    assert_float_text(f, "-INF", 1, -INFINITY);
    assert_float_text(f, "nan", 1, NAN);
    assert_type(f, ".inf", 1, CK_PV_STR);
    assert_type(f, "'1'", 1, CK_PV_STR);
    assert_type(f, "${a.b}", 1, CK_PV_STR);
    assert_type(f, "", 1, CK_PV_STR); /* key= is the empty string */
    /* beyond int64: an int, with its decimal */
    assert_string_equal(ty(f, "18446744073709551616", 1)->dec,
                        "18446744073709551616");
    /* '~' is no value in Hydra's grammar */
    assert_null(parse(f, "~", 1, 0));
    assert_int_equal(f->err.code, CK_EPLUGIN);
}

static void test_yaml_types(void **state)
{
    fx_t *f = *state;

    assert_type(f, "~", 0, CK_PV_NULL);
    assert_type(f, "", 0, CK_PV_NULL);
    assert_type(f, "Null", 0, CK_PV_NULL);
    assert_type(f, "nULL", 0, CK_PV_STR);
    assert_int_equal(ty(f, "yes", 0)->b, 1);
    assert_int_equal(ty(f, "Off", 0)->b, 0);
    assert_int_equal(ty(f, "ON", 0)->b, 1);
    assert_type(f, "oN", 0, CK_PV_STR);
    assert_type(f, "y", 0, CK_PV_STR);
    assert_int_text(f, "0x10", 0, 16);
    assert_int_text(f, "010", 0, 8);
    assert_int_text(f, "0b11", 0, 3);
    assert_int_text(f, "-1:30", 0, -90);
    assert_int_text(f, "1__0", 0, 10);
    assert_float_text(f, "1e5", 0, 1e5);
    assert_float_text(f, "1e-5", 0, 1e-5);
    assert_float_text(f, "1.5E-3", 0, 1.5e-3);
    assert_float_text(f, "1:30.5", 0, 90.5);
    assert_float_text(f, "-.Inf", 0, -INFINITY);
    assert_float_text(f, ".NaN", 0, NAN);
    assert_type(f, "inf", 0, CK_PV_STR);
    assert_type(f, "'yes'", 0, CK_PV_STR);
    assert_type(f, "\"1\"", 0, CK_PV_STR);
    assert_type(f, "0b", 0, CK_PV_STR);
}

static void test_tree(void **state)
{
    fx_t *f = *state;
    ck_yval_t *v = parse(f, "{a: [1, b], c: {d: e}}", 0, 0), *s;
    ck_json_t j = { 0 };

    assert_non_null(v);
    assert_int_equal(v->kind, CK_YV_MAP);
    assert_true(v->flow);
    assert_int_equal(v->n, 4);
    assert_int_equal(ck_yval_find(v, "c"), 1);
    assert_int_equal(ck_yval_find(v, "x"), -1);
    assert_int_equal(v->v[1]->kind, CK_YV_SEQ);
    ck_yval_json(&j, &f->a, v);
    assert_string_equal(ck_json_text(&j),
                        "{\"a\":[1,\"b\"],\"c\":{\"d\":\"e\"}}");
    ck_json_release(&j);
    s = ck_yval_scalar(&f->a, "k", 1, 1);
    assert_int_equal(ck_yval_push(&f->a, v, s), 0);
    assert_int_equal(v->n, 5);

    assert_null(parse(f, "a: &x 1\nb: *x\n", 0, 0));
    assert_int_equal(f->err.code, CK_EUNSUPPORTED);
    assert_null(parse(f, "a\n---\nb\n", 0, 0));
    assert_int_equal(f->err.code, CK_EPLUGIN);
    assert_null(parse(f, "{[a]: 1}", 0, 0));
    assert_null(parse(f, "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                         "[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
                         "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
                      0, 0));
    assert_string_equal(f->err.msg, "t: nested too deep");
    assert_null(parse(f, "a: [", 0, 0));
}

static void test_lazy_and_python(void **state)
{
    fx_t *f = *state;
    char big[4400];
    ck_yval_t *v;
    ck_py_t *p;

    memset(big, '9', 4301);
    big[4301] = '\0';
    /* an int Python refuses: an error read now, a str read lazily */
    assert_null(parse(f, big, 0, 0));
    assert_int_equal(f->err.code, CK_EPLUGIN);
    v = parse(f, big, 0, 1);
    assert_non_null(v);
    assert_int_equal(ck_yval_type(&f->a, v)->t, CK_PV_STR);

    v = parse(f, "{1: yes, b: [0x10, .5]}", 0, 1);
    p = ck_yval_py(&f->a, v, 0);
    assert_int_equal(p->kind, CK_PY_DICT);
    assert_int_equal(p->u.seq.v[0]->kind, CK_PY_STR); /* keys are strs */
    assert_int_equal(p->u.seq.v[1]->kind, CK_PY_BOOL);
    assert_int_equal(p->u.seq.v[3]->kind, CK_PY_LIST);
    assert_int_equal(p->u.seq.v[3]->u.seq.v[0]->u.i.v, 16);
    p = ck_yval_py(&f->a, v, 1);
    assert_int_equal(p->u.seq.v[0]->kind, CK_PY_INT); /* typed for == */
}

/* What the emitter writes for the Hydra-typed value text. */
static const char *emit_hydra(fx_t *f, const char *text)
{
    ck_yval_t *v = parse(f, text, 1, 0);
    ck_buf_t out = { 0 };
    char *s;

    assert_non_null(v);
    assert_int_equal(ck_yaml_emit(v, "t", &out, &f->err), 0);
    s = ck_arena_strndup(&f->a, (char *)out.data, out.len);
    ck_buf_release(&out);
    return s;
}

static void test_emit(void **state)
{
    fx_t *f = *state;
    ck_yval_t *v;
    ck_buf_t out = { 0 };

    assert_string_equal(emit_hydra(f, "yes"), "'yes'\n");
    assert_string_equal(emit_hydra(f, "0x10"), "'0x10'\n");
    assert_string_equal(emit_hydra(f, ""), "''\n");
    assert_string_equal(emit_hydra(f, "1_000"), "1000\n");
    assert_string_equal(emit_hydra(f, "inf"), ".inf\n");
    assert_string_equal(emit_hydra(f, "+.5"), "0.5\n");
    assert_string_equal(emit_hydra(f, "NULL"), "null\n");
    assert_string_equal(emit_hydra(f, "TRUE"), "true\n");
    assert_string_equal(emit_hydra(f, "abc"), "abc\n");
    assert_int_equal(ck_yaml_reads_str("abc"), 1);
    assert_int_equal(ck_yaml_reads_str("on"), 0);

    /* order and styles as read */
    v = parse(f, "b: 1\na: [x, 'y']\nc:\n  - 2\n", 0, 1);
    assert_int_equal(ck_yaml_emit(v, "t", &out, &f->err), 0);
    ck_buf_putc(&out, '\0');
    assert_string_equal((char *)out.data, "b: 1\na: [x, 'y']\nc:\n- 2\n");
    ck_buf_release(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hydra_types, setup, teardown),
        cmocka_unit_test_setup_teardown(test_yaml_types, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lazy_and_python, setup, teardown),
        cmocka_unit_test_setup_teardown(test_emit, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
