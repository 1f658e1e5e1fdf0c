/*
 * test_pyre.c -- Python's re.sub over PCRE2.  Every expected value here
 * was printed by CPython 3.11's re.sub (tests/plugins' oracle suite runs
 * Python itself over thousands of keys); the cases are the places where
 * engines differ: empty matches, groups that did not take part, template
 * escapes, UTF-8, \Z and the errors Python raises for a template.
 */
#include "pyre.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define S(x) x, sizeof(x) - 1

static const struct {
    const char *pattern, *repl, *subject, *want;
    size_t wlen;
    size_t count;
} cases[] = {
    { "x*", "-", "abxd", S("-a-b--d-"), 5 },
    { "", "-", "abc", S("-a-b-c-"), 4 },
    { "a|", "-", "baac", S("-b---c-"), 5 },
    { "e", "E", "emb.0.weight", S("Emb.0.wEight"), 2 },
    { "^module\\.", "", "module.layers.0.w", S("layers.0.w"), 1 },
    { "^module\\.(\\d+)\\.", "blocks.\\1.", "module.12.attn.w", S("blocks.12.attn.w"), 1 },
    { "(?P<n>\\d+)", "[\\g<n>]", "layers.3.sub.14.w", S("layers.[3].sub.[14].w"), 2 },
    { "(\\w+)\\.(\\w+)", "\\2.\\1", "a.b.c.d", S("b.a.d.c"), 2 },
    { "(a)?b", "<\\1>", "b ab", S("<> <a>"), 2 },
    { "\\d", "\\g<0>\\g<0>", "x1y22", S("x11y2222"), 3 },
    { "w(?=eight)", "W", "weight w wx", S("Weight w wx"), 1 },
    { "(?<!\\.)w", "W", "w.w.aw", S("W.w.aW"), 2 },
    { "a+?", "X", "aaa", S("XXX"), 3 },
    { "\\s+", "_", "a  b\011c", S("a_b_c"), 2 },
    { "\303\251", "e", "\303\251t\303\251.w", S("ete.w"), 2 },
    { ".", "?", "\303\2511", S("??"), 2 },
    { "\\Z", "!", "ab", S("ab!"), 1 },
    { "$", "!", "ab", S("ab!"), 1 },
    { "^", ">", "ab", S(">ab"), 1 },
    { "\\bw\\b", "W", "w ww w.w", S("W ww W.W"), 3 },
    { "(x)", "\\\\1", "axb", S("a\\1b"), 1 },
    { "(x)", "\\.\\1", "axb", S("a\\.xb"), 1 },
    { "(x)", "\\n", "axb", S("a\012b"), 1 },
    { "(x)(y)?", "[\\2]", "xyx", S("[y][]"), 2 },
    { "(?i)ATTN", "attn", "self_Attn.x", S("self_attn.x"), 1 },
    { "(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)", "\\11\\10\\1", "abcdefghijk", S("kja"), 1 },
    { "x", "\\101", "x", S("A"), 1 },
    { "x", "\\08", "x", S("\0008"), 1 },
    /* where PCRE2 reads Python's syntax otherwise */
    { "e", "\\351", "cafe_w", S("caf\303\251_w"), 1 },
    { "a{,2}", "X", "aaab", S("XXXbX"), 4 },
    { "\\v", "V", "a\013b\nc", S("aVb\nc"), 1 },
    { "\\u00e9", "e", "caf\303\251", S("cafe"), 1 },
    { "(?i)\\U000000E9", "E", "CAF\303\211", S("CAFE"), 1 },
    { "(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)\\10", "X", "abcdefghijj", S("X"), 1 },
    { "(a)\\1", "X", "aa a", S("X a"), 1 },
    { "\\101", "X", "BAB", S("BXB"), 1 },
    { "[\\1]", "X", "a\001", S("aX"), 1 },
    { "\\x41", "X", "BAB", S("BXB"), 1 },
    { "[]a]", "X", "]a", S("XX"), 2 },
    { "(?<=s|r)x", "X", "sxrxtx", S("sXrXtx"), 2 },
    { "(?<=ab|cd)x", "X", "abxcdxx", S("abXcdXx"), 2 },
    { "(?i)(?s)A.", "X", "a\nb", S("Xb"), 1 },
    { "(?i:A)a", "X", "AaAA", S("XAA"), 1 },
    { "(?P<n>a)(?P=n)", "X", "aab", S("Xb"), 1 },
    { "(a)?(?(1)b|c)", "X", "abc", S("XX"), 2 },
    { "(?#c(x[)a", "X", "ba", S("bX"), 1 },
    { "(?(1)a|b)(a)", "X", "bab", S("Xb"), 1 },
    /* \s is Python's: U+001C to U+001F and U+0085, not U+180E */
    { "\\s", "_", "a\034b\341\240\216c\302\205d", S("a_b\341\240\216c_d"), 2 },
    { "[\\s.]+", "_", "a\037.b \343\200\200c", S("a_b_c"), 2 },
    { "\\S+", "X", "a\034b\341\240\216", S("X\034X"), 2 },
    { "[^\\s]", "-", "\035\341\240\216\342\200\250x", S("\035-\342\200\250-"), 2 },
    { "a\\sb", "ab", "a\036b a\341\240\216b", S("ab a\341\240\216b"), 1 },
    { "(?i)LAYER", "L", "layer.Layer.x", S("L.L.x"), 2 },
    { "[\\s-]", "X", "a-b\343\200\200c", S("aXbXc"), 2 },
    { "[-\\s]", "X", "a-b\tc", S("aXbXc"), 2 },
    { "[a-b-c]", "X", "a-bdc", S("XXXdX"), 4 },
    { "(?i)[\\u0132-\\u017f]", "X", "fc_i.weight", S("fc_i.weight"), 0 },
    { "[\\u0100-\\u017f]", "X", "fc_i.w\304\261", S("fc_i.wX"), 1 },
    /* an escaped letter past ASCII at a range's end: U+0142 to U+0200 */
    { "(?i)[\\\305\202-\\u0200]", "X", "I\305\203", S("IX"), 1 },
};

static const struct {
    const char *pattern, *repl, *msg;
} bad[] = {
    { "[\\S.]", "x", "\\S inside a set" },
    /* python: bad character range \t-\s at position 1, ... */
    { "[\\t-\\s]", "x", "bad character range at position 4" },
    { "[\\x00-\\s]", "x", "bad character range" },
    { "[\\s-\\u3000]", "x", "bad character range at position 1" },
    { "[\\s-z]", "x", "bad character range" },
    { "[a-\\s]", "x", "bad character range" },
    /* python: matches i and I to U+0131 in the range */
    { "(?i)[\\u0100-\\u017f]", "x", "a range over U+0130 or U+0131" },
    { "(?i)[a-\\u0130]", "x", "a range over U+0130 or U+0131" },
    { "(?i)x[\304\200-\305\277]", "x", "a range over U+0130" },
    { "(?i)[\\\304\254-\\\305\260]", "x", "a range over U+0130" },
    { "(?i)\304\261", "x", "U+0131 at position 4" }, /* python: matches i, I, U+0130 */
    { "(?i:x\\u0130)", "x", "U+0130 at position 5" },
    { "(?i)\\U00001fd3", "x", "U+1FD3" },
    { "(?i)x\357\254\206", "x", "U+FB06 at position 5" },
    { "\\h", "x", "bad escape \\h" },
    { "\\K", "x", "bad escape \\K" },
    { "\\Q", "x", "bad escape \\Q" },
    { "\\R", "x", "bad escape \\R" },
    { "\\g<1>", "x", "bad escape \\g" },
    { "\\x{41}", "x", "bad escape \\x{" },
    { "(?|a)", "x", "unknown extension ?|" },
    /* PCRE2 takes these, Python's re refuses them or reads them otherwise */
    { "layers\\.[[:digit:]]", "x", "POSIX class syntax [[:" },
    { "[a[.b.]]", "x", "POSIX class syntax [[." },
    { "(?U)a+", "x", "unknown extension ?U" },
    { "(?n)(a)", "x", "unknown extension ?n" },
    { "(?<=s|rs)x", "x", "not fixed length" },
    { "(?<=a(?:b|cd))x", "x", "not fixed length" },
    { "(?<=\\d+)x", "x", "not fixed length" },
    { "(*CR)a", "x", "(*VERB)" },
    { "(*UTF)a", "x", "(*VERB)" },
    { "a(*SKIP)b", "x", "(*VERB)" },
    { "\\x4", "x", "incomplete escape \\x" },
    { "\\x4g", "x", "incomplete escape \\x" },
    { "(?P<a>a)(?P>a)", "x", "unknown extension ?P" },
    { "(?<n>a)", "x", "(?<name>...)" },
    { "\\10", "x", "invalid group reference 10" },
    { "(a)\\2(b)", "x", "invalid group reference 2" },
    { "(a\\1)", "x", "cannot refer to an open group" },
    { "(?P=n)(?P<n>a)", "x", "unknown group name 'n'" },
    { "(?P<n>a(?P=n))", "x", "cannot refer to an open group" },
    { "(?(0)a|b)", "x", "bad group number" },
    { "(?(R)a|b)", "x", "unknown group name 'R'" },
    { "(?R)", "x", "unknown extension ?R" },
    { "(a)(?1)", "x", "unknown extension ?1" },
    { "(?-1)", "x", "unknown extension ?1" },
    { "(?&n)", "x", "unknown extension ?&" },
    { "(?J)a", "x", "unknown extension ?J" },
    { "(?^)a", "x", "unknown extension ?^" },
    { "a(?i)b", "x", "global flags not at the start" },
    { "(?i-i:a)", "x", "flag turned on and off" },
    { "(?-i)a", "x", "missing :" },
    { "(?x)a b", "x", "inline flag 'x'" },
    { "[\\8]", "x", "bad escape \\8" },
    { "\\477", "x", "octal escape value" },
{ "(w)", "\\2", "invalid group reference 2" }, /* python: invalid group reference 2 at position 1 */
    { "(w)", "\\g<2>", "invalid group reference 2" }, /* python: invalid group reference 2 at position 3 */
    { "(?P<w>w)", "\\g<v>", "unknown group name 'v'" }, /* python: unknown group name 'v' */
    { "x", "\\q", "bad escape \\q" }, /* python: bad escape \q at position 0 */
    { "x", "y\\", "bad escape (end of pattern)" }, /* python: bad escape (end of pattern) at position 1 */
    { "x", "\\g<1", "missing >, unterminated name" }, /* python: missing >, unterminated name at position 3 */
    { "x", "\\g1", "missing <" }, /* python: missing < at position 2 */
    { "x", "\\477", "octal escape value" }, /* python: octal escape value \477 outside of range 0-0o377 at position 0 */
    { "(", "x", "missing closing parenthesis" },
};

static void test_sub_as_python(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ck_pyre_t *re;
        ck_buf_t out = { 0 };
        ck_err_t err = { 0 };
        size_t count = 99;

        if (ck_pyre_compile(cases[i].pattern, cases[i].repl, &re, &err) != 0)
            fail_msg("case %zu: compile: %s", i, err.msg);
        assert_int_equal(ck_pyre_sub(re, cases[i].subject,
                                     strlen(cases[i].subject), &out, &count,
                                     &err), 0);
        if (out.len != cases[i].wlen ||
            memcmp(out.data, cases[i].want, out.len) != 0)
            fail_msg("case %zu: re.sub(%s, %s, %s) gave '%.*s'", i,
                     cases[i].pattern, cases[i].repl, cases[i].subject,
                     (int)out.len, (const char *)out.data);
        assert_int_equal(count, cases[i].count);
        ck_buf_release(&out);
        ck_pyre_free(re);
    }
}

static void test_refused_as_python(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_pyre_t *re = (ck_pyre_t *)&re;
        ck_err_t err = { 0 };

        assert_int_equal(ck_pyre_compile(bad[i].pattern, bad[i].repl, &re,
                                         &err), CK_ECONFIG);
        assert_null(re);
        if (strstr(err.msg, bad[i].msg) == NULL)
            fail_msg("case %zu: '%s' does not say '%s'", i, err.msg,
                     bad[i].msg);
    }
}

/*
 * A key holding a letter Python's re folds otherwise than PCRE2 fails under
 * a case-insensitive pattern, naming it; other keys, and every key under a
 * pattern that is not case-insensitive, are renamed.
 */
static void test_caseless_python_only(void **state)
{
    ck_pyre_t *re, *cs;
    ck_buf_t out = { 0 };
    ck_err_t err = { 0 };
    size_t count;
    static const char key[] = "la\304\261er.w"; /* U+0131, dotless i */

    (void)state;
    assert_int_equal(ck_pyre_compile("(?i)LAIER", "L", &re, &err), 0);
    assert_int_equal(ck_pyre_compile("LAIER", "L", &cs, &err), 0);
    assert_int_equal(ck_pyre_sub(re, key, strlen(key), &out, &count, &err),
                     CK_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "U+0131 (byte 2)"));
    assert_non_null(strstr(err.msg, key));
    memset(&err, 0, sizeof(err));
    assert_int_equal(ck_pyre_sub(cs, key, strlen(key), &out, &count, &err), 0);
    assert_int_equal(count, 0);
    ck_buf_release(&out);
    assert_int_equal(ck_pyre_sub(re, "laier.w", 7, &out, &count, &err), 0);
    assert_int_equal(count, 1);
    assert_memory_equal(out.data, "L.w", 3);
    ck_buf_release(&out);
    ck_pyre_free(re);
    ck_pyre_free(cs);
}

/* A pattern that backtracks without end fails the key, it does not hang. */
static void test_match_limit(void **state)
{
    ck_pyre_t *re;
    ck_buf_t out = { 0 };
    ck_err_t err = { 0 };
    char subject[64];
    size_t count;

    (void)state;
    memset(subject, 'a', sizeof(subject) - 2);
    subject[sizeof(subject) - 2] = 'b';
    subject[sizeof(subject) - 1] = '\0';
    assert_int_equal(ck_pyre_compile("^(a+)+$", "x", &re, &err), 0);
    assert_int_equal(ck_pyre_sub(re, subject, strlen(subject), &out, &count,
                                 &err), CK_ELIMIT);
    assert_non_null(strstr(err.msg, "limit"));
    ck_buf_release(&out);
    ck_pyre_free(re);
}

static void test_groups(void **state)
{
    ck_pyre_t *re;
    ck_err_t err = { 0 };

    (void)state;
    assert_int_equal(ck_pyre_compile("(a)(?:b)(?P<c>c)", "", &re, &err), 0);
    assert_int_equal(ck_pyre_groups(re), 2);
    ck_pyre_free(re);
    ck_pyre_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sub_as_python),
        cmocka_unit_test(test_refused_as_python),
        cmocka_unit_test(test_match_limit),
        cmocka_unit_test(test_caseless_python_only),
        cmocka_unit_test(test_groups),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
