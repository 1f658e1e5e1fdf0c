/*
 * test_audit.c -- the audit log as lines: appended with seq and host first,
 * read back line by line at open, a torn last line cut away, seq going on
 * from the file's last line (also one another writer appended).
 */
#include "audit.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char dir[64], path[128];
    char lines[8][400];
    int n;
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    strcpy(f->dir, "/tmp/ck_test_audit.XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/log/audit.jsonl", f->dir);
    snprintf(f->lines[0], sizeof(f->lines[0]), "%s/log", f->dir);
    if (mkdir(f->lines[0], 0750) < 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* Keeps each line read back; the ones without "status" do not parse. */
static int line_cb(void *ud, const char *line, size_t n)
{
    fx_t *f = ud;

    assert_true(n < sizeof(f->lines[0]));
    assert_true(f->n < 8);
    memcpy(f->lines[f->n], line, n);
    f->lines[f->n++][n] = '\0';
    return strstr(f->lines[f->n - 1], "\"status\"") ? 0 : CK_EFORMAT;
}

static int open_log(fx_t *f, ck_audit_t *a)
{
    ck_err_t e = { 0 };

    f->n = 0;
    return ck_audit_open(a, f->path, line_cb, f, &e);
}

static void append_raw(fx_t *f, const char *text)
{
    int fd = open(f->path, O_WRONLY | O_APPEND);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static void test_append_reopen(void **state)
{
    fx_t *f = *state;
    ck_audit_t a;
    ck_err_t e = { 0 };
    char want[400];

    assert_int_equal(open_log(f, &a), 0);
    assert_int_equal(f->n, 0);
    assert_int_equal(ck_audit_append(&a, "{\"status\":\"ok\"}", &e), 0);
    assert_int_equal(ck_audit_append(&a, "{}", &e), 0);
    assert_int_equal(ck_audit_append(&a, "[]", &e), CK_EFORMAT);
    assert_true(a.seq == 2);
    ck_audit_close(&a);

    assert_int_equal(open_log(f, &a), 0);
    assert_int_equal(f->n, 2);
    snprintf(want, sizeof(want), "{\"seq\":1,\"host\":\"%s\",\"status\":"
             "\"ok\"}", a.host);
    assert_string_equal(f->lines[0], want);
    snprintf(want, sizeof(want), "{\"seq\":2,\"host\":\"%s\"}", a.host);
    assert_string_equal(f->lines[1], want);
    assert_true(a.bad_lines == 1);     /* the second, by line_cb's rule */
    assert_true(a.torn_bytes == 0);
    assert_true(a.seq == 2);
    assert_int_equal(ck_audit_append(&a, "{\"status\":\"x\"}", &e), 0);
    assert_true(a.seq == 3);
    assert_int_equal(ck_audit_reopen(&a, &e), 0);
    assert_int_equal(ck_audit_append(&a, "{\"status\":\"y\"}", &e), 0);
    assert_true(a.seq == 4);
    ck_audit_close(&a);
}

static void test_torn_line_cut(void **state)
{
    fx_t *f = *state;
    ck_audit_t a;
    ck_err_t e = { 0 };

    assert_int_equal(open_log(f, &a), 0);
    assert_int_equal(ck_audit_append(&a, "{\"status\":\"ok\"}", &e), 0);
    ck_audit_close(&a);
    append_raw(f, "{\"seq\":2,\"host\":\"x\",\"sta");     /* power cut */
    assert_int_equal(open_log(f, &a), 0);
    assert_int_equal(f->n, 1);
    assert_true(a.torn_bytes == strlen("{\"seq\":2,\"host\":\"x\",\"sta"));
    assert_true(a.seq == 1);
    assert_int_equal(ck_audit_append(&a, "{\"status\":\"ok\"}", &e), 0);
    assert_true(a.seq == 2);
    ck_audit_close(&a);
    assert_int_equal(open_log(f, &a), 0);
    assert_int_equal(f->n, 2);
    assert_true(a.torn_bytes == 0);
    assert_non_null(strstr(f->lines[1], "{\"seq\":2,"));
    ck_audit_close(&a);
}

static void test_seq_from_other_writer(void **state)
{
    fx_t *f = *state;
    ck_audit_t a;
    ck_err_t e = { 0 };

    assert_int_equal(open_log(f, &a), 0);
    assert_int_equal(ck_audit_append(&a, "{\"status\":\"ok\"}", &e), 0);
    /* another daemon appends seq 7, and leaves a torn line after it */
    append_raw(f, "{ \"seq\": 7, \"host\": \"other\", \"status\": \"ok\"}\n"
                  "{\"seq\":8");
    assert_int_equal(ck_audit_append(&a, "{\"status\":\"ok\"}", &e), 0);
    assert_true(a.seq == 9);    /* after the torn line's 8 too */
    ck_audit_close(&a);
    assert_int_equal(open_log(f, &a), 0);
    assert_int_equal(f->n, 4);  /* the torn one was ended by a newline */
    assert_string_equal(f->lines[2], "{\"seq\":8");
    assert_non_null(strstr(f->lines[3], "{\"seq\":9,"));
    assert_true(a.bad_lines == 1);
    assert_true(a.seq == 9);
    ck_audit_close(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_append_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_line_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seq_from_other_writer, setup,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
