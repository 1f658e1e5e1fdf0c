/*
 * test_fsutil.c -- the small file-system helpers: stem and extension,
 * join, mkdirs and the atomic write, in a fresh temporary folder.
 */
#include "fsutil.h"

#include <errno.h>

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

/* Read the whole small file at path into buf (NUL-ended); its length. */
static size_t slurp(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    size_t n;

    assert_non_null(f);
    n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n;
}

static void test_move(void **state)
{
    char dir[64] = "/tmp/ck_test_move.XXXXXX", shm[64] = "/dev/shm/ckm.XXXXXX";
    char src[128], dst[128], buf[64];
    struct stat a, b;

    assert_non_null(mkdtemp(dir));
    snprintf(src, sizeof(src), "%s/in", dir);
    snprintf(dst, sizeof(dst), "%s/out", dir);
    assert_int_equal(ck_write_atomic(src, "one", 3, 0600), 0);
    assert_int_equal(ck_move(src, dst), 0);                /* a rename */
    assert_int_equal(slurp(dst, buf, sizeof(buf)), 3);
    assert_string_equal(buf, "one");
    assert_int_equal(access(src, F_OK), -1);
    /* no such folder: fails, the source stays */
    snprintf(src, sizeof(src), "%s/nowhere/x", dir);
    assert_int_equal(ck_move(dst, src), -ENOENT);
    assert_int_equal(access(dst, F_OK), 0);
    /* across file systems (EXDEV): copied, then the source goes */
    if (mkdtemp(shm) != NULL && stat(shm, &a) == 0 && stat(dir, &b) == 0 &&
        a.st_dev != b.st_dev) {
        snprintf(src, sizeof(src), "%s/moved", shm);
        assert_int_equal(ck_move(dst, src), 0);
        assert_int_equal(slurp(src, buf, sizeof(buf)), 3);
        assert_string_equal(buf, "one");
        assert_int_equal(access(dst, F_OK), -1);
        assert_int_equal(stat(src, &a), 0);
        assert_int_equal(a.st_mode & 0777, 0600);
        snprintf(buf, sizeof(buf), "rm -rf %s", shm);
        assert_int_equal(system(buf), 0);
    } else {
        print_message("ck_move across file systems not tested here: /dev/shm "
                      "is missing or on /tmp's file system (the daemon tests "
                      "mount a tmpfs for it)\n");
    }
    snprintf(buf, sizeof(buf), "rm -rf %s", dir);
    assert_int_equal(system(buf), 0);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_ext),
        cmocka_unit_test(test_join),
        cmocka_unit_test(test_mkdirs_write_atomic),
        cmocka_unit_test(test_move),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
