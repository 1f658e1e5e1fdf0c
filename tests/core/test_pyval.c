/*
 * test_pyval.c -- core/pyval: float repr() against CPython 3's own output
 * (shortest round-trip digits, exponent form past 1e16 and below 1e-4,
 * inf, nan, -0.0), ints beyond int64 between decimal text and pickle's
 * two's complement bytes, int() and float() of a str (underscores, spaces,
 * what Python refuses), == across bool, int and float, and scalars as JSON.
 */
#include "pyval.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static void assert_repr(double d, const char *want)
{
    char buf[40];

    ck_pyfloat_repr(d, buf, sizeof(buf));
    assert_string_equal(buf, want);
}

/* The expected strings are CPython 3.11's repr() of the same doubles. */
static void test_float_repr(void **state)
{
    (void)state;
    assert_repr(1e16, "1e+16");
    assert_repr(0.1, "0.1");
    assert_repr(1e-05, "1e-05");
    assert_repr(INFINITY, "inf");
    assert_repr(-INFINITY, "-inf");
    assert_repr(NAN, "nan");
    assert_repr(-0.0, "-0.0");
    assert_repr(0.0, "0.0");
    assert_repr(1e-4, "0.0001");
    assert_repr(123456789012345678.0, "1.2345678901234568e+17");
    assert_repr(1.5, "1.5");
    assert_repr(100000.0, "100000.0");
    assert_repr(1e22, "1e+22");
    assert_repr(5e-324, "5e-324");
    assert_repr(1.7976931348623157e308, "1.7976931348623157e+308");
    assert_repr(0.1 + 0.2, "0.30000000000000004");
    assert_repr(9999999999999998.0, "9999999999999998.0");
    assert_repr(-1.5e-7, "-1.5e-07");
    assert_repr(9007199254740992.0, "9007199254740992.0");
}

static void test_big_ints(void **state)
{
    ck_arena_t a = { 0 };
    ck_pyval_t t;
    static const uint8_t two64[] = { 0, 0, 0, 0, 0, 0, 0, 0, 1 };
    static const uint8_t min1[] = { 0xff, 0xff, 0xff, 0xff, 0xff,
                                    0xff, 0xff, 0x7f, 0xff };

    (void)state;
    /* 2**64 and -2**63 - 1: beyond int64, minimal bytes as pickle has them */
    assert_int_equal(ck_pyint_digits(&a, 0, "18446744073709551616", 10, &t),
                     0);
    assert_int_equal(t.t, CK_PV_INT);
    assert_int_equal(t.nbig, sizeof(two64));
    assert_memory_equal(t.big, two64, sizeof(two64));
    assert_string_equal(t.dec, "18446744073709551616");
    assert_string_equal(ck_pyint_dec(&a, two64, sizeof(two64)),
                        "18446744073709551616");
    assert_int_equal(ck_pyint_digits(&a, 1, "9223372036854775809", 10, &t),
                     0);
    assert_int_equal(t.nbig, sizeof(min1));
    assert_memory_equal(t.big, min1, sizeof(min1));
    assert_string_equal(ck_pyint_dec(&a, t.big, t.nbig),
                        "-9223372036854775809");
    /* int64's ends stay small; -0 is 0; leading zeros go */
    assert_int_equal(ck_pyint_digits(&a, 1, "9223372036854775808", 10, &t),
                     0);
    assert_int_equal(t.nbig, 0);
    assert_true(t.i == INT64_MIN);
    assert_int_equal(ck_pyint_digits(&a, 1, "000", 10, &t), 0);
    assert_int_equal(t.i, 0);
    assert_string_equal(t.dec, "0");
    /* bases, 2**100 both ways */
    assert_int_equal(ck_pyint_digits(&a, 0, "ff", 16, &t), 0);
    assert_int_equal(t.i, 255);
    assert_int_equal(ck_pyint_digits(&a, 1, "1267650600228229401496703205376",
                                     10, &t),
                     0);
    assert_string_equal(t.dec, "-1267650600228229401496703205376");
    assert_string_equal(ck_pyint_dec(&a, t.big, t.nbig), t.dec);
    /* no digits, or more than Python's int() takes */
    assert_int_equal(ck_pyint_digits(&a, 0, "", 10, &t), 1);
    {
        char many[CK_PYINT_MAX_DIGITS + 2];

        memset(many, '7', sizeof(many) - 1);
        many[sizeof(many) - 1] = '\0';
        assert_int_equal(ck_pyint_digits(&a, 0, many, 10, &t), 1);
        many[sizeof(many) - 2] = '\0';
        assert_int_equal(ck_pyint_digits(&a, 0, many, 10, &t), 0);
        assert_int_equal(strlen(t.dec), CK_PYINT_MAX_DIGITS);
    }
    /* trim: sign bytes that add nothing */
    {
        static const uint8_t b[] = { 0x7f, 0x00, 0x00 }, c[] = { 0x80, 0xff };

        assert_int_equal(ck_pyint_trim(b, 3), 1);
        assert_int_equal(ck_pyint_trim(c, 2), 1);
    }
    ck_arena_release(&a);
}

static void test_int_float_str(void **state)
{
    ck_arena_t a = { 0 };
    ck_pyval_t t;
    double f;
    static const char *const bad_int[] = { "1__0", "_1", "1_", "0x1", "12a",
                                           "", " ", "1.0" };
    static const char *const bad_float[] = { "1__0", "_1", "1_", "0x10", "",
                                             " ", ".", "e5", "1e", "1.5e",
                                             ".inf" };

    (void)state;
    assert_int_equal(ck_pyval_int_str(&a, " 1_000 ", 7, &t), 0);
    assert_int_equal(t.i, 1000);
    assert_int_equal(ck_pyval_int_str(&a, "007", 3, &t), 0);
    assert_int_equal(t.i, 7);
    assert_int_equal(ck_pyval_int_str(&a, "-0", 2, &t), 0);
    assert_int_equal(t.i, 0);
    assert_int_equal(ck_pyval_int_str(&a, "+12", 3, &t), 0);
    assert_int_equal(t.i, 12);
    for (size_t k = 0; k < CK_ARRAY_SIZE(bad_int); k++)
        assert_int_equal(ck_pyval_int_str(&a, bad_int[k], strlen(bad_int[k]),
                                          &t),
                         1);

    assert_int_equal(ck_pyval_float_str(&a, "1_0.5", 5, &f), 0);
    assert_true(f == 10.5);
    assert_int_equal(ck_pyval_float_str(&a, " .5e1_0 ", 8, &f), 0);
    assert_true(f == 5e9);
    assert_int_equal(ck_pyval_float_str(&a, "1.", 2, &f), 0);
    assert_true(f == 1.0);
    assert_int_equal(ck_pyval_float_str(&a, "+.5", 3, &f), 0);
    assert_true(f == 0.5);
    assert_int_equal(ck_pyval_float_str(&a, "infinity", 8, &f), 0);
    assert_true(isinf(f));
    assert_int_equal(ck_pyval_float_str(&a, "-NaN", 4, &f), 0);
    assert_true(isnan(f));
    for (size_t k = 0; k < CK_ARRAY_SIZE(bad_float); k++)
        assert_int_equal(ck_pyval_float_str(&a, bad_float[k],
                                            strlen(bad_float[k]), &f),
                         1);
    ck_arena_release(&a);
}

static void test_eq(void **state)
{
    ck_arena_t a = { 0 };
    ck_pyval_t one = { .t = CK_PV_INT, .i = 1 };
    ck_pyval_t onef = { .t = CK_PV_FLOAT, .f = 1.0 };
    ck_pyval_t yes = { .t = CK_PV_BOOL, .b = 1 };
    ck_pyval_t s1 = { .t = CK_PV_STR, .s = "1", .n = 1 };
    ck_pyval_t nan = { .t = CK_PV_FLOAT, .f = NAN };
    ck_pyval_t none = { .t = CK_PV_NULL };
    ck_pyval_t big, p53, f53 = { .t = CK_PV_FLOAT, .f = 0x1p64 };

    (void)state;
    assert_true(ck_pyval_eq(&a, &one, &onef));
    assert_true(ck_pyval_eq(&a, &one, &yes));
    assert_true(ck_pyval_eq(&a, &yes, &onef));
    assert_false(ck_pyval_eq(&a, &one, &s1));
    assert_false(ck_pyval_eq(&a, &nan, &nan));
    assert_false(ck_pyval_eq(&a, &none, &one));
    assert_true(ck_pyval_eq(&a, &none, &none));
    /* 2**64 == 2.0**64 exactly; 2**53 + 1 != 2.0**53 */
    assert_int_equal(ck_pyint_digits(&a, 0, "18446744073709551616", 10, &big),
                     0);
    big.dec = NULL; /* as read from a pickle */
    assert_true(ck_pyval_eq(&a, &big, &f53));
    assert_int_equal(ck_pyint_digits(&a, 0, "9007199254740993", 10, &p53), 0);
    f53.f = 0x1p53;
    assert_false(ck_pyval_eq(&a, &p53, &f53));
    ck_arena_release(&a);
}

static void test_json_show(void **state)
{
    ck_arena_t a = { 0 };
    ck_json_t j = { 0 };
    ck_buf_t b = { 0 };
    ck_pyval_t t;
    ck_py_t *l = ck_py_new(&a, CK_PY_LIST);

    (void)state;
    assert_int_equal(ck_pyint_digits(&a, 1, "18446744073709551616", 10, &t),
                     0);
    ck_json_arr(&j);
    assert_int_equal(ck_pyval_json(&j, ck_pyval_py(&a, &t)), 0);
    assert_int_equal(ck_pyval_json(&j, ck_py_float(&a, 0.5)), 0);
    assert_int_equal(ck_pyval_json(&j, ck_py_str(&a, "x", 1)), 0);
    assert_int_equal(ck_pyval_json(&j, ck_py_new(&a, CK_PY_NONE)), 0);
    assert_int_equal(ck_pyval_json(&j, l), 1);
    ck_json_end(&j);
    assert_string_equal(ck_json_text(&j),
                        "[\"-18446744073709551616\",0.5,\"x\",null]");

    ck_py_vec_push(&a, &l->u.seq, ck_py_float(&a, 1e16));
    ck_py_vec_push(&a, &l->u.seq, ck_py_str(&a, "a", 1));
    ck_py_vec_push(&a, &l->u.seq, ck_pyval_py(&a, &t));
    ck_pyval_show_py(&b, &a, l, NULL);
    ck_buf_putc(&b, '\0');
    assert_string_equal((char *)b.data, "[1e+16, 'a', -18446744073709551616]");
    ck_buf_release(&b);
    ck_json_release(&j);
    ck_arena_release(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_float_repr),
        cmocka_unit_test(test_big_ints),
        cmocka_unit_test(test_int_float_str),
        cmocka_unit_test(test_eq),
        cmocka_unit_test(test_json_show),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
