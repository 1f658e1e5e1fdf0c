/*
 * test_pickle_scan.c -- ck_pickle_scan_globals names what a pickle names:
 * GLOBAL, INST, STACK_GLOBAL from pushed and memoized strings, past STOP,
 * and stops quietly at an unknown or cut opcode.
 */
#include "pickle.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

static int collect(void *ud, const char *m, size_t ml, const char *n,
                   size_t nl)
{
    char *out = ud;

    snprintf(out + strlen(out), 512 - strlen(out), "%.*s.%.*s;", (int)ml, m,
             (int)nl, n);
    return 0;
}

static void expect(const char *p, size_t n, const char *want)
{
    char got[512] = "";

    assert_int_equal(ck_pickle_scan_globals((const uint8_t *)p, n, collect,
                                            got), 0);
    assert_string_equal(got, want);
}
#define EXPECT(lit, want) expect(lit, sizeof(lit) - 1, want)

static void test_scan(void **state)
{
    (void)state;
    EXPECT("cposix\nsystem\n(S'id'\ntR.", "posix.system;");
    EXPECT("(ios\nsystem\nS'id'\no.", "os.system;");
    /* STACK_GLOBAL from BINUNICODE and SHORT_BINUNICODE */
    EXPECT("\x80\x04X\x05\x00\x00\x00posix\x8c\x06system\x93.",
           "posix.system;");
    /* ... from the memo: MEMOIZE then BINGET */
    EXPECT("\x80\x04\x8c\x05posix\x94\x8c\x01x\x94\x8c\x06system\x94"
           "h\x00h\x02\x93.", "posix.system;");
    /* structure errors do not hide it, nor does a STOP before it */
    EXPECT("K\x01.cbuiltins\neval\n", "builtins.eval;");
    /* argument bytes are stepped over, not read as opcodes */
    EXPECT("C\x0e" "cposix\nsystem\n.", "");
    /* an unknown opcode ends the scan */
    EXPECT("\xff" "cposix\nsystem\n", "");
    EXPECT("cposix\nsys", "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
