/*
 * test_dtype.c -- ck_dtype_convert on the values whose bytes are easy to get
 * wrong: ties to even, the float16 subnormal and overflow edges, NaN as
 * torch makes it, float64 rounded twice through float32 (the expected bits
 * were printed by torch 1.13's .to(dtype); tests/plugins/test_cast.py
 * checks millions more against torch itself), and the pairs refused.
 */
#include "ck.h"
#include "dtype.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

static uint16_t f32_to(const char *to, uint32_t bits)
{
    float f;
    uint16_t h = 0;

    memcpy(&f, &bits, 4);
    assert_int_equal(ck_dtype_convert(ck_dtype_by_name(to), &h,
                                      ck_dtype_by_name("float32"), &f, 1), 0);
    return h;
}

static uint16_t f64_to(const char *to, double d)
{
    uint16_t h = 0;

    assert_int_equal(ck_dtype_convert(ck_dtype_by_name(to), &h,
                                      ck_dtype_by_name("float64"), &d, 1), 0);
    return h;
}

static void test_half_edges(void **state)
{
    (void)state;
    assert_int_equal(f32_to("float16", 0x3f800000u), 0x3c00);     /* 1 */
    assert_int_equal(f32_to("float16", 0x80000000u), 0x8000);     /* -0 */
    assert_int_equal(f32_to("float16", 0x477fe000u), 0x7bff);     /* 65504 */
    assert_int_equal(f32_to("float16", 0x477ff000u), 0x7c00);     /* tie: inf */
    assert_int_equal(f32_to("float16", 0x477fefffu), 0x7bff);
    assert_int_equal(f32_to("float16", 0x33800000u), 0x0001);     /* 2^-24 */
    assert_int_equal(f32_to("float16", 0x33000000u), 0x0000);     /* tie: 0 */
    assert_int_equal(f32_to("float16", 0x33000001u), 0x0001);
    assert_int_equal(f32_to("float16", 0x3f801000u), 0x3c00);     /* 1+2^-11 */
    assert_int_equal(f32_to("float16", 0x3f803000u), 0x3c02);     /* tie up */
    assert_int_equal(f32_to("float16", 0xff800000u), 0xfc00);     /* -inf */
    assert_int_equal(f32_to("float16", 0x7f800001u), 0x7e00);     /* NaN */
    assert_int_equal(f32_to("float16", 0xffc00123u), 0xfe00);
}

static void test_bf16_edges(void **state)
{
    (void)state;
    assert_int_equal(f32_to("bfloat16", 0x3f808000u), 0x3f80);    /* tie even */
    assert_int_equal(f32_to("bfloat16", 0x3f818000u), 0x3f82);    /* tie up */
    assert_int_equal(f32_to("bfloat16", 0x7f7f8000u), 0x7f80);    /* to inf */
    assert_int_equal(f32_to("bfloat16", 0x00000001u), 0x0000);
    assert_int_equal(f32_to("bfloat16", 0x7fc00000u), 0xffff);    /* NaN */
}

static void test_f64_twice(void **state)
{
    uint16_t h = 0x7e01, b = 0;

    (void)state;
    /* through float32: 1 + 2^-11 + 2^-40 is a tie there, even gives 1 */
    assert_int_equal(f64_to("float16", 1 + 0x1p-11 + 0x1p-40), 0x3c00);
    assert_int_equal(f64_to("bfloat16", 1 + 0x1p-8 + 0x1p-40), 0x3f80);
    assert_int_equal(f64_to("float16", 1e300), 0x7c00);
    /* float16 NaN to bfloat16: torch's 0x7fc0 */
    assert_int_equal(ck_dtype_convert(ck_dtype_by_name("bfloat16"), &b,
                                      ck_dtype_by_name("float16"), &h, 1), 0);
    assert_int_equal(b, 0x7fc0);
}

static void test_widen_and_refuse(void **state)
{
    uint16_t h[3] = { 0x0001, 0x7c01, 0xfe23 };
    uint32_t f[3];
    int32_t i = 0;

    (void)state;
    assert_int_equal(ck_dtype_convert(ck_dtype_by_name("float32"), f,
                                      ck_dtype_by_name("float16"), h, 3), 0);
    assert_int_equal(f[0], 0x33800000u);
    assert_int_equal(f[1], 0x7fc02000u);   /* quieted, payload kept */
    assert_int_equal(f[2], 0xffc46000u);
    assert_int_equal(ck_dtype_convert(ck_dtype_by_name("int32"), &i,
                                      ck_dtype_by_name("float32"), f, 1),
                     CK_EUNSUPPORTED);
    assert_false(ck_dtype_is_castable(ck_dtype_by_name("int8")));
    assert_true(ck_dtype_is_castable(ck_dtype_by_name("bfloat16")));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_edges),
        cmocka_unit_test(test_bf16_edges),
        cmocka_unit_test(test_f64_twice),
        cmocka_unit_test(test_widen_and_refuse),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
