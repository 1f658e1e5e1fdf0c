/*
 * test_fsutil.c -- the small file-system helpers: stem and extension,
 * join, mkdirs and the atomic write, in a fresh temporary folder.
 */
#include "fsutil.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_base_ext(void **state)
{
    static const struct {
        const char *path, *base, *ext;
    } cases[] = {
        { "a/b/model.th", "model.th", ".th" },
        { "model.tar.gz", "model.tar.gz", ".gz" },
        { "dir.d/model", "model", "" },
        { ".hidden", ".hidden", "" },
        { "x/.hidden.th", ".hidden.th", ".th" },
        { "dir/", "", "" },
        { "plain", "plain", "" },
    };

    for (size_t i = 0; i < CK_ARRAY_SIZE(cases); i++) {
        const char *base = ck_path_base(cases[i].path);

        assert_string_equal(base, cases[i].base);
        assert_string_equal(ck_path_ext(base), cases[i].ext);
    }
    (void)state;
}

static void test_join(void **state)
{
    char *s = ck_path_join("a/b", "c");

    assert_string_equal(s, "a/b/c");
    ck_free(s);
    s = ck_path_join("", "c");
    assert_string_equal(s, "c");
    ck_free(s);
    s = ck_path_join("a", "");
    assert_string_equal(s, "a");
    ck_free(s);
    (void)state;
}

static void test_mkdirs_write_atomic(void **state)
{
    char dir[64] = "/tmp/ck_test_fsutil.XXXXXX", path[256], buf[16];
    struct stat st;
    FILE *f;
    size_t n;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/x/y/z/file.txt", dir);
    assert_int_equal(ck_mkdirs_parent(path, 0750), 0);
    assert_int_equal(ck_mkdirs_parent(path, 0750), 0);    /* again: fine */
    assert_int_equal(ck_write_atomic(path, "hello", 5, 0640), 0);
    assert_int_equal(ck_write_atomic(path, "bye", 3, 0640), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640 & ~umask(umask(0)));
    f = fopen(path, "r");
    assert_non_null(f);
    n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    assert_int_equal(n, 3);
    assert_memory_equal(buf, "bye", 3);
    assert_int_equal(ck_fsync_dir_of(path), 0);
    /* no temporary is left behind */
    snprintf(path, sizeof(path), "%s/x/y/z", dir);
    {
        char cmd[300];

        snprintf(cmd, sizeof(cmd), "test $(ls -A %s | wc -l) -eq 1", path);
        assert_int_equal(system(cmd), 0);
    }
    /* a folder in the way fails with -errno, leaving nothing */
    snprintf(path, sizeof(path), "%s/x", dir);
    assert_true(ck_write_atomic(path, "a", 1, 0640) < 0);
    snprintf(path, sizeof(path), "rm -rf %s", dir);
    assert_int_equal(system(path), 0);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_ext),
        cmocka_unit_test(test_join),
        cmocka_unit_test(test_mkdirs_write_atomic),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
