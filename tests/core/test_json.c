/*
 * test_json.c -- the streaming JSON writer: comma placement, nesting,
 * string escaping (quotes, backslash, control bytes, bytes that are not
 * UTF-8) and number formatting.  Output is compared as text; one test also
 * has Python's json module parse it.
 */
#include "json.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int setup(void **state)
{
    ck_json_t *j = calloc(1, sizeof(*j));

    if (j == NULL)
        return -1;
    *state = j;
    return 0;
}

static int teardown(void **state)
{
    ck_json_t *j = *state;

    ck_json_release(j);
    free(j);
    ck_mem_fail_at(0);
    return 0;
}

/* The quoted form of s[0..n) on its own. */
static char *quote(const char *s, size_t n)
{
    ck_buf_t b = { 0 };
    char *out;

    ck_json_quote(&b, s, n);
    ck_buf_putc(&b, '\0');
    assert_false(b.oom);
    out = strdup((const char *)b.data);
    ck_buf_release(&b);
    assert_non_null(out);
    return out;
}

#define assert_quote(lit, expect)                                             \
    do {                                                                      \
        char *q_ = quote(lit, sizeof(lit) - 1);                               \
        assert_string_equal(q_, expect);                                      \
        free(q_);                                                             \
    } while (0)

static void test_empty_containers(void **state)
{
    ck_json_t *j = *state;

    ck_json_arr(j);
    ck_json_obj(j);
    ck_json_end(j);
    ck_json_arr(j);
    ck_json_end(j);
    ck_json_end(j);
    assert_string_equal(ck_json_text(j), "[{},[]]");
    assert_int_equal(j->depth, 0);
}

static void test_nesting_and_commas(void **state)
{
    ck_json_t *j = *state;

    ck_json_obj(j);
    ck_json_key(j, "a");
    ck_json_int(j, 1);
    ck_json_key(j, "b");
    ck_json_arr(j);
    ck_json_int(j, 1);
    ck_json_str(j, "x");
    ck_json_bool(j, 1);
    ck_json_bool(j, 0);
    ck_json_null(j);
    ck_json_obj(j);
    ck_json_end(j);
    ck_json_arr(j);
    ck_json_u64(j, 7);
    ck_json_end(j);
    ck_json_end(j);
    ck_json_key(j, "c");
    ck_json_obj(j);
    ck_json_key(j, "d");
    ck_json_int(j, -5);
    ck_json_key(j, "e");
    ck_json_obj(j);
    ck_json_end(j);
    ck_json_end(j);
    ck_json_key(j, "f");
    ck_json_str(j, "");
    ck_json_end(j);
    assert_string_equal(ck_json_text(j),
                        "{\"a\":1,\"b\":[1,\"x\",true,false,null,{},[7]],"
                        "\"c\":{\"d\":-5,\"e\":{}},\"f\":\"\"}");
}

static void test_text_is_repeatable(void **state)
{
    ck_json_t *j = *state;

    ck_json_arr(j);
    ck_json_int(j, 1);
    assert_string_equal(ck_json_text(j), "[1");
    /* asking for the text does not end the document */
    ck_json_int(j, 2);
    ck_json_end(j);
    assert_string_equal(ck_json_text(j), "[1,2]");
    assert_int_equal(j->b.len, 5);
}

static void test_integers(void **state)
{
    ck_json_t *j = *state;

    ck_json_arr(j);
    ck_json_int(j, INT64_MIN);
    ck_json_int(j, INT64_MAX);
    ck_json_int(j, 0);
    ck_json_u64(j, UINT64_MAX);
    ck_json_end(j);
    assert_string_equal(ck_json_text(j),
                        "[-9223372036854775808,9223372036854775807,0,"
                        "18446744073709551615]");
}

static void test_doubles(void **state)
{
    ck_json_t *j = *state;

    ck_json_arr(j);
    ck_json_double(j, 1.5);
    ck_json_double(j, 0.1);
    ck_json_double(j, -2.0);
    ck_json_double(j, 1e300);
    ck_json_double(j, NAN);
    ck_json_double(j, INFINITY);
    ck_json_double(j, -INFINITY);
    ck_json_end(j);
    /* Python's repr: shortest round trip, a float stays a float (-2.0);
     * non-finite values become strings */
    assert_string_equal(ck_json_text(j),
                        "[1.5,0.1,-2.0,1e+300,\"nan\",\"inf\",\"-inf\"]");
}

static void test_null_string_and_raw(void **state)
{
    ck_json_t *j = *state;

    ck_json_obj(j);
    ck_json_key(j, "s");
    ck_json_str(j, NULL);
    ck_json_key(j, "r");
    ck_json_raw(j, "{\"x\":[1,2]}", 11);
    ck_json_key(j, "n");
    ck_json_strn(j, "ab\0c", 4);
    ck_json_end(j);
    assert_string_equal(ck_json_text(j),
                        "{\"s\":null,\"r\":{\"x\":[1,2]},\"n\":\"ab\\u0000c\"}");
}

static void test_escape_quotes_backslash(void **state)
{
    (void)state;
    assert_quote("", "\"\"");
    assert_quote("plain", "\"plain\"");
    assert_quote("say \"hi\"", "\"say \\\"hi\\\"\"");
    assert_quote("C:\\dir\\", "\"C:\\\\dir\\\\\"");
    assert_quote("/", "\"/\"");
}

static void test_escape_control(void **state)
{
    (void)state;
    assert_quote("a\nb\tc", "\"a\\nb\\tc\"");
    assert_quote("\r", "\"\\u000d\"");
    assert_quote("\x01", "\"\\u0001\"");
    assert_quote("\x1f", "\"\\u001f\"");
    assert_quote("\x7f", "\"\\u007f\"");
    assert_quote("\b\f", "\"\\u0008\\u000c\"");
    assert_quote(" ~", "\" ~\"");
}

static void test_valid_utf8_passes(void **state)
{
    (void)state;
    assert_quote("caf\xc3\xa9", "\"caf\xc3\xa9\"");              /* U+00E9 */
    assert_quote("\xc2\x80", "\"\xc2\x80\"");                    /* U+0080 */
    assert_quote("\xdf\xbf", "\"\xdf\xbf\"");                    /* U+07FF */
    assert_quote("\xe0\xa0\x80", "\"\xe0\xa0\x80\"");            /* U+0800 */
    assert_quote("\xe2\x82\xac", "\"\xe2\x82\xac\"");            /* U+20AC */
    assert_quote("\xef\xbf\xbf", "\"\xef\xbf\xbf\"");            /* U+FFFF */
    assert_quote("\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\"");    /* U+1F600 */
    assert_quote("\xf4\x8f\xbf\xbf", "\"\xf4\x8f\xbf\xbf\"");    /* U+10FFFF */
}

static void test_invalid_utf8_escaped(void **state)
{
    (void)state;
    /* a lone byte that is not UTF-8 becomes its latin-1 code point */
    assert_quote("\xff", "\"\\u00ff\"");
    assert_quote("\x80", "\"\\u0080\"");
    assert_quote("a\xe9z", "\"a\\u00e9z\"");
    /* truncated sequences, at the end and before an ASCII byte */
    assert_quote("\xc3", "\"\\u00c3\"");
    assert_quote("\xe2\x82", "\"\\u00e2\\u0082\"");
    assert_quote("\xc3(", "\"\\u00c3(\"");
    /* overlong forms */
    assert_quote("\xc0\xaf", "\"\\u00c0\\u00af\"");
    assert_quote("\xe0\x80\xaf", "\"\\u00e0\\u0080\\u00af\"");
    assert_quote("\xf0\x80\x80\xaf", "\"\\u00f0\\u0080\\u0080\\u00af\"");
    /* surrogates and code points past U+10FFFF */
    assert_quote("\xed\xa0\x80", "\"\\u00ed\\u00a0\\u0080\"");
    assert_quote("\xf4\x90\x80\x80", "\"\\u00f4\\u0090\\u0080\\u0080\"");
    assert_quote("\xf5\x80\x80\x80", "\"\\u00f5\\u0080\\u0080\\u0080\"");
    /* valid text resumes after a bad byte */
    assert_quote("\xff\xc3\xa9", "\"\\u00ff\xc3\xa9\"");
}

static void test_key_escaped(void **state)
{
    ck_json_t *j = *state;

    ck_json_obj(j);
    ck_json_key(j, "a\"b\\c\x01\xff");
    ck_json_int(j, 1);
    ck_json_end(j);
    assert_string_equal(ck_json_text(j),
                        "{\"a\\\"b\\\\c\\u0001\\u00ff\":1}");
}

static void test_depth_limit_ok(void **state)
{
    ck_json_t *j = *state;
    char expect[4 * CK_JSON_MAX_DEPTH + 8];
    size_t o = 0;

    /* exactly CK_JSON_MAX_DEPTH levels, two values in the innermost */
    for (int i = 0; i < CK_JSON_MAX_DEPTH; i++) {
        ck_json_arr(j);
        expect[o++] = '[';
    }
    ck_json_int(j, 1);
    ck_json_int(j, 2);
    memcpy(expect + o, "1,2", 3);
    o += 3;
    for (int i = 0; i < CK_JSON_MAX_DEPTH; i++) {
        ck_json_end(j);
        expect[o++] = ']';
    }
    expect[o] = '\0';
    assert_string_equal(ck_json_text(j), expect);
    /* an extra end is ignored */
    ck_json_end(j);
    assert_string_equal(ck_json_text(j), expect);
}

/*
 * Regression (fixed): nesting deeper than CK_JSON_MAX_DEPTH silently gives invalid JSON:
 * no commas between values below level 64, and every container closed
 * below level 64 is closed with '}' even when it is an array.  65 nested
 * arrays around 1, 2 give "[[...[1 2}]...]" instead of "[[...[1,2]]...]".
 * No caller nests that deep today (inspect stops at a small depth).
 */
static void test_depth_over_limit(void **state)
{
    ck_json_t *j = *state;
    char expect[4 * CK_JSON_MAX_DEPTH + 16];
    size_t o = 0;

    for (int i = 0; i < CK_JSON_MAX_DEPTH + 1; i++) {
        ck_json_arr(j);
        expect[o++] = '[';
    }
    ck_json_int(j, 1);
    ck_json_int(j, 2);
    memcpy(expect + o, "1,2", 3);
    o += 3;
    for (int i = 0; i < CK_JSON_MAX_DEPTH + 1; i++) {
        ck_json_end(j);
        expect[o++] = ']';
    }
    expect[o] = '\0';
    assert_string_equal(ck_json_text(j), expect);
}

static void test_oom_is_sticky(void **state)
{
    ck_json_t *j = *state;

    ck_mem_fail_at(1);
    ck_json_obj(j);
    ck_json_key(j, "k");
    ck_json_str(j, "v");
    ck_json_end(j);
    assert_null(ck_json_text(j));
    assert_true(j->b.oom);
    ck_mem_fail_at(0);
    /* still failed: the error is reported, never a partial document */
    ck_json_int(j, 1);
    assert_null(ck_json_text(j));
}

/* Python's json module parses what we write, to the values we meant. */
static void test_python_parses(void **state)
{
    ck_json_t *j = *state;
    char dir[] = "/tmp/ck_test_json.XXXXXX";
    char jpath[256], ppath[256], cmd[768];
    FILE *f;
    const char *text;
    int rc;

    assert_non_null(mkdtemp(dir));
    snprintf(jpath, sizeof(jpath), "%s/out.json", dir);
    snprintf(ppath, sizeof(ppath), "%s/check.py", dir);

    ck_json_obj(j);
    ck_json_key(j, "quote\"back\\slash");
    ck_json_str(j, "tab\tnl\ncr\rbell\x07" "del\x7f");
    ck_json_key(j, "utf8");
    ck_json_str(j, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    ck_json_key(j, "bad");
    ck_json_str(j, "\xff\xfe\xed\xa0\x80\xc3");
    ck_json_key(j, "list");
    ck_json_arr(j);
    ck_json_int(j, -1);
    ck_json_double(j, 0.5);
    ck_json_bool(j, 1);
    ck_json_null(j);
    ck_json_obj(j);
    ck_json_end(j);
    ck_json_end(j);
    ck_json_end(j);
    text = ck_json_text(j);
    assert_non_null(text);

    f = fopen(jpath, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    f = fopen(ppath, "w");
    assert_non_null(f);
    fputs("import json, sys\n"
          "d = json.load(open(sys.argv[1], encoding='utf-8'))\n"
          "want = {'quote\"back\\\\slash': 'tab\\tnl\\ncr\\rbell\\x07del\\x7f',\n"
          "        'utf8': 'caf\\u00e9 \\u20ac \\U0001f600',\n"
          "        'bad': '\\u00ff\\u00fe\\u00ed\\u00a0\\u0080\\u00c3',\n"
          "        'list': [-1, 0.5, True, None, {}]}\n"
          "sys.exit(0 if d == want else 1)\n",
          f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %s", ppath, jpath);
    rc = system(cmd);
    unlink(jpath);
    unlink(ppath);
    rmdir(dir);
    assert_int_equal(rc, 0);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_empty_containers),
        T(test_nesting_and_commas),
        T(test_text_is_repeatable),
        T(test_integers),
        T(test_doubles),
        T(test_null_string_and_raw),
        cmocka_unit_test(test_escape_quotes_backslash),
        cmocka_unit_test(test_escape_control),
        cmocka_unit_test(test_valid_utf8_passes),
        cmocka_unit_test(test_invalid_utf8_escaped),
        T(test_key_escaped),
        T(test_depth_limit_ok),
        T(test_depth_over_limit),
        T(test_oom_is_sticky),
        T(test_python_parses),
    };

#undef T

    return cmocka_run_group_tests(tests, NULL, NULL);
}
