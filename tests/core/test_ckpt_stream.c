/*
 * test_ckpt_stream.c -- a checkpoint read in one pass (ckpt_stream.c) and
 * written in one pass (ck_ckpt_write_fd).
 *
 * tests/data/sample.th (torch.save's) is read through a descriptor as it
 * would come from a pipe, written in one pass to a file, and the result
 * opened again as a file; torch's own checks of the output are the oracle
 * suite's (tests/oracle/test_stream.py).
 */
#define _GNU_SOURCE
#include "ckpt.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SAMPLE "tests/data/sample.th"
#define LEGACY "../shared/corpus/third-party/gopickle/tensor_float32_proto2.pt"

typedef struct {
    char dir[64];
    char out[128];
    char cut[128];
    ck_open_opts_t opts;
    ck_ckpt_t c, c2;
    ck_err_t err;
    int in, outfd;
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    strcpy(f->dir, "/tmp/ck_test_ckst.XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->out, sizeof(f->out), "%s/out.pt", f->dir);
    snprintf(f->cut, sizeof(f->cut), "%s/cut.pt", f->dir);
    ck_limits_default(&f->opts.lim);
    f->c.fd = f->c2.fd = -1;
    f->in = f->outfd = -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    char cmd[160];

    ck_ckpt_close(&f->c);
    ck_ckpt_close(&f->c2);
    if (f->in >= 0)
        close(f->in);
    if (f->outfd >= 0)
        close(f->outfd);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static void open_in(fx_t *f, const char *path)
{
    f->in = open(path, O_RDONLY);
    assert_true(f->in >= 0);
    f->outfd = open(f->out, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(f->outfd >= 0);
}

static void test_stream_roundtrip(void **state)
{
    fx_t *f = *state;
    ck_write_info_t info;
    char want[65];

    open_in(f, SAMPLE);
    assert_int_equal(ck_ckpt_open_stream(&f->c, f->in, "stdin", &f->opts,
                                         &f->err), 0);
    assert_string_equal(ck_ckpt_format_name(&f->c), "zip");
    assert_true(f->c.nstorages > 0);
    assert_int_equal(ck_ckpt_storage(&f->c, 0)->src, CK_SRC_STREAM);
    /* known only at the end */
    assert_string_equal(f->c.fingerprint, "");
    assert_int_equal(ck_ckpt_write_fd(&f->c, f->outfd, &info, &f->err), 0);
    assert_int_equal(info.size, (uint64_t)lseek(f->outfd, 0, SEEK_END));
    assert_int_equal(info.nstorages, f->c.nstorages);
    /* the input's fingerprint and size are the file's */
    assert_int_equal(ck_ckpt_open(&f->c2, SAMPLE, &f->opts, &f->err), 0);
    assert_string_equal(f->c.fingerprint, f->c2.fingerprint);
    assert_int_equal(f->c.st.size, f->c2.st.size);
    strcpy(want, info.fingerprint);
    ck_ckpt_close(&f->c2);
    /* the output opens as a file, top folder "archive", same storages,
     * and its fingerprint is the one the writer reported */
    assert_int_equal(ck_ckpt_open(&f->c2, f->out, &f->opts, &f->err), 0);
    assert_string_equal(f->c2.top, "archive");
    assert_int_equal(f->c2.nstorages, f->c.nstorages);
    assert_string_equal(f->c2.fingerprint, want);
    for (size_t i = 0; i < f->c2.zip.n; i++)
        assert_int_equal(f->c2.zip.e[i].flags & 8, 8);
}

static void test_bytes_before_they_arrive(void **state)
{
    fx_t *f = *state;
    uint8_t b[8];

    open_in(f, SAMPLE);
    assert_int_equal(ck_ckpt_open_stream(&f->c, f->in, "stdin", &f->opts,
                                         &f->err), 0);
    assert_int_equal(ck_ckpt_storage_read(&f->c, ck_ckpt_storage(&f->c, 0),
                                          0, 1, b, &f->err), CK_EUNSUPPORTED);
    assert_non_null(strstr(f->err.msg, "before they arrive"));
    assert_non_null(strstr(f->err.msg, "give the input as a file"));
}

static void test_cut_input(void **state)
{
    fx_t *f = *state;
    ck_write_info_t info;
    uint8_t buf[1 << 16], *tail;
    ssize_t n;
    int cfd;
    struct stat sb;
    ck_zip_t z;
    ck_arena_t a = { 0 };

    /* the sample up to the middle of its storages */
    f->in = open(SAMPLE, O_RDONLY);
    assert_true(f->in >= 0);
    assert_int_equal(fstat(f->in, &sb), 0);
    n = read(f->in, buf, sizeof(buf) < (size_t)sb.st_size * 3 / 4
                             ? sizeof(buf) : (size_t)sb.st_size * 3 / 4);
    assert_true(n > 0);
    cfd = open(f->cut, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_int_equal(write(cfd, buf, (size_t)n), n);
    close(cfd);
    close(f->in);
    open_in(f, f->cut);
    assert_int_equal(ck_ckpt_open_stream(&f->c, f->in, "stdin", &f->opts,
                                         &f->err), 0);
    assert_int_equal(ck_ckpt_write_fd(&f->c, f->outfd, &info, &f->err),
                     CK_EFORMAT);
    assert_non_null(strstr(f->err.msg, "cut short"));
    /* what was written ends in zeros where an end record would be */
    assert_int_equal(fstat(f->outfd, &sb), 0);
    assert_true(sb.st_size > 65536 + 22);
    tail = malloc(65536 + 22);
    assert_non_null(tail);
    assert_int_equal(pread(f->outfd, tail, 65536 + 22,
                           sb.st_size - (65536 + 22)), 65536 + 22);
    for (size_t i = 0; i < 65536 + 22; i++)
        assert_int_equal(tail[i], 0);
    free(tail);
    close(f->outfd);
    f->outfd = open(f->out, O_RDONLY);
    assert_int_equal(ck_zip_open(f->outfd, (uint64_t)sb.st_size, &a, &z,
                                 &f->err), CK_EFORMAT);
    ck_arena_release(&a);
}

/* The legacy stream: five pickles, then the storages in key order. */
static void test_legacy(void **state)
{
    fx_t *f = *state;
    ck_write_info_t info;

    open_in(f, LEGACY);
    assert_int_equal(ck_ckpt_open_stream(&f->c, f->in, "stdin", &f->opts,
                                         &f->err), 0);
    assert_string_equal(ck_ckpt_format_name(&f->c), "legacy");
    assert_int_equal(ck_ckpt_write_fd(&f->c, f->outfd, &info, &f->err), 0);
    assert_int_equal(ck_ckpt_open(&f->c2, LEGACY, &f->opts, &f->err), 0);
    assert_string_equal(f->c.fingerprint, f->c2.fingerprint);
    ck_ckpt_close(&f->c2);
    assert_int_equal(ck_ckpt_open(&f->c2, f->out, &f->opts, &f->err), 0);
    assert_string_equal(ck_ckpt_format_name(&f->c2), "zip");
    assert_int_equal(f->c2.nstorages, f->c.nstorages);
    /* the zip records hold CRC-32s computed as they passed */
    assert_true(f->c2.zip.e[2].crc != 0);
}

static void test_refusals(void **state)
{
    fx_t *f = *state;
    int fd;

    fd = open(f->cut, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_int_equal(write(fd, "hello there\n", 12), 12);
    close(fd);
    open_in(f, f->cut);
    assert_int_equal(ck_ckpt_open_stream(&f->c, f->in, "stdin", &f->opts,
                                         &f->err), CK_EFORMAT);
    assert_non_null(strstr(f->err.msg, "not a PyTorch checkpoint"));
    close(f->in);
    ck_ckpt_close(&f->c);
    f->in = open("/dev/null", O_RDONLY);
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(ck_ckpt_open_stream(&f->c, f->in, "stdin", &f->opts,
                                         &f->err), CK_EFORMAT);
    assert_string_equal(f->err.msg, "empty input");
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_stream_roundtrip),
        T(test_bytes_before_they_arrive),
        T(test_cut_input),
        T(test_legacy),
        T(test_refusals),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
