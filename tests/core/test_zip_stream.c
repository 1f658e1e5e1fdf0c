/*
 * test_zip_stream.c -- reading a zip front to back (zip_stream.c) and the
 * writer's one-pass mode (ck_zipw_t.stream, ck_zipw_splice).
 *
 * Archives are written with ck_zipw_* (one pass: local sizes zero, data
 * descriptors) or in file mode (sizes and CRCs in the local headers), then
 * read with ck_zips_* from a descriptor, as they would come from a pipe;
 * the file reader (ck_zip_open) must read the one-pass archives too.
 */
#define _GNU_SOURCE
#include "zip.h"

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
#include <zlib.h>

typedef struct {
    char dir[64];
    char path[128];
    ck_arena_t a;
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    strcpy(f->dir, "/tmp/ck_test_zips.XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/a.zip", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;

    unlink(f->path);
    rmdir(f->dir);
    ck_arena_release(&f->a);
    free(f);
    return 0;
}

/* Three records: a pickle-like one, one holding a false descriptor
 * signature, an empty one. */
static const char *names[] = { "t/data.pkl", "t/data/0", "t/version" };
static uint8_t rec1[300], rec0[40];

static void fill_records(void)
{
    for (size_t i = 0; i < sizeof(rec1); i++)
        rec1[i] = (uint8_t)(i * 7);
    memcpy(rec1 + 100, "PK\x07\x08\x01\x02\x03\x04\x64\x00\x00\x00", 12);
    memcpy(rec0, "\x80\x02}q\x00.", 6);
}

static const uint8_t *rec_data(size_t i, size_t *n)
{
    *n = i == 0 ? 6 : i == 1 ? sizeof(rec1) : 0;
    return i == 0 ? rec0 : rec1;
}

static void write_archive(const char *path, int stream)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ck_zipw_t w;
    ck_err_t err = { 0 };

    assert_true(fd >= 0);
    fill_records();
    ck_zipw_init(&w, fd);
    w.stream = stream;
    for (size_t i = 0; i < 3; i++) {
        size_t n;
        const uint8_t *p = rec_data(i, &n);

        assert_int_equal(ck_zipw_begin(&w, names[i], n, &err), 0);
        assert_int_equal(ck_zipw_data(&w, p, n, &err), 0);
        assert_int_equal(ck_zipw_end(&w, &err), 0);
    }
    assert_int_equal(ck_zipw_finish(&w, &err), 0);
    assert_int_equal((uint64_t)lseek(fd, 0, SEEK_END), w.off);
    if (stream)
        assert_int_equal(w.cd.len, w.cd_size);
    ck_zipw_release(&w);
    close(fd);
}

static uint8_t *slurp(const char *path, size_t *n)
{
    int fd = open(path, O_RDONLY);
    struct stat sb;
    uint8_t *b;

    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &sb), 0);
    *n = (size_t)sb.st_size;
    b = malloc(*n + 1);
    assert_non_null(b);
    assert_int_equal(read(fd, b, *n), (ssize_t)*n);
    close(fd);
    return b;
}

static void spit(const char *path, const uint8_t *b, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, b, n), (ssize_t)n);
    close(fd);
}

/* Read the archive at path with ck_zips: record 0 whole (size from its
 * descriptor or header), 1 by size, 2 whole; then the directory. */
static int read_stream(fx_t *f, const char *path, ck_err_t *err)
{
    int fd = open(path, O_RDONLY);
    ck_zips_t s;
    const ck_zips_rec_t *r;
    ck_buf_t b = { 0 };
    uint8_t got[sizeof(rec1)];
    int rc;

    assert_true(fd >= 0);
    ck_zips_init(&s, fd);
    rc = ck_zips_next(&s, &r, err);
    if (rc == 1) {
        assert_string_equal(r->name, names[0]);
        rc = ck_zips_read_all(&s, 1000, &b, err);
    }
    if (rc == 0) {
        assert_int_equal(b.len, 6);
        assert_memory_equal(b.data, rec0, 6);
        rc = ck_zips_next(&s, &r, err);
    }
    if (rc == 1) {
        assert_string_equal(r->name, names[1]);
        rc = ck_zips_data(&s, got, 10, err);
        if (rc == 0)
            rc = ck_zips_data(&s, got + 10, sizeof(rec1) - 10, err);
        if (rc == 0)
            assert_memory_equal(got, rec1, sizeof(rec1));
        if (rc == 0)
            rc = ck_zips_end(&s, sizeof(rec1), err);
    }
    if (rc == 0)
        rc = ck_zips_next(&s, &r, err);
    if (rc == 1) {
        ck_buf_release(&b);
        rc = ck_zips_read_all(&s, 10, &b, err);
        if (rc == 0)
            assert_int_equal(b.len, 0);
    }
    if (rc == 0) {
        rc = ck_zips_next(&s, &r, err);
        assert_int_equal(rc, 0);
        assert_int_equal(ck_zips_next(&s, &r, err), 0); /* and again */
        rc = ck_zips_finish(&s, &f->a, err);
    }
    if (rc == 0) {
        assert_int_equal(s.zip.n, 3);
        assert_int_equal(s.zip.e[1].crc,
                         (uint32_t)crc32(0, rec1, sizeof(rec1)));
        assert_int_equal(s.zip.e[1].data_off % 64, 0);
        assert_int_equal(s.off, (uint64_t)lseek(fd, 0, SEEK_END));
    }
    ck_buf_release(&b);
    ck_zips_release(&s);
    close(fd);
    return rc;
}

static void test_one_pass_written_and_read(void **state)
{
    fx_t *f = *state;
    ck_err_t err = { 0 };
    ck_zip_t z;
    size_t n;
    uint8_t *b;
    int fd;

    write_archive(f->path, 1);
    /* local headers: flag bit 3, sizes and CRC zero; a descriptor after */
    b = slurp(f->path, &n);
    assert_memory_equal(b, "PK\x03\x04", 4);
    assert_int_equal(b[6] & 8, 8);
    assert_memory_equal(b + 14, "\0\0\0\0\0\0\0\0\0\0\0\0", 12);
    free(b);
    /* the file reader reads it */
    fd = open(f->path, O_RDONLY);
    assert_int_equal(ck_zip_open(fd, (uint64_t)lseek(fd, 0, SEEK_END), &f->a,
                                 &z, &err), 0);
    assert_int_equal(z.n, 3);
    assert_int_equal(z.e[1].usize, sizeof(rec1));
    assert_int_equal(z.e[1].flags & 8, 8);
    close(fd);
    /* and the stream reader: sizes from the caller and from descriptors
     * found past a false signature in the data */
    assert_int_equal(read_stream(f, f->path, &err), 0);
}

static void test_file_mode_read(void **state)
{
    fx_t *f = *state;
    ck_err_t err = { 0 };

    write_archive(f->path, 0); /* sizes and CRCs in the local headers */
    assert_int_equal(read_stream(f, f->path, &err), 0);
}

static void test_cut_short(void **state)
{
    fx_t *f = *state;
    size_t n;
    uint8_t *b;

    write_archive(f->path, 1);
    b = slurp(f->path, &n);
    /* every prefix fails, saying where the stream ended */
    for (size_t cut = 0; cut < n; cut += 37) {
        ck_err_t err = { 0 };

        spit(f->path, b, cut);
        assert_int_equal(read_stream(f, f->path, &err), CK_EFORMAT);
        assert_true(strstr(err.msg, "cut short") != NULL ||
                    strstr(err.msg, "no local header") != NULL);
    }
    free(b);
}

static void test_directory_disagrees(void **state)
{
    fx_t *f = *state;
    ck_err_t err = { 0 };
    size_t n;
    uint8_t *b, *cd;

    write_archive(f->path, 1);
    b = slurp(f->path, &n);
    cd = memmem(b, n, "PK\x01\x02", 4);
    assert_non_null(cd);
    cd = memmem(cd + 4, n - (size_t)(cd + 4 - b), "PK\x01\x02", 4);
    cd[16] ^= 1; /* data/0's CRC */
    spit(f->path, b, n);
    assert_int_equal(read_stream(f, f->path, &err), CK_EFORMAT);
    assert_non_null(strstr(err.msg, "the central directory says t/data/0"));
    /* trailing bytes after the end record */
    cd[16] ^= 1;
    b = realloc(b, n + 3);
    memcpy(b + n, "xyz", 3);
    spit(f->path, b, n + 3);
    memset(&err, 0, sizeof(err));
    assert_int_equal(read_stream(f, f->path, &err), CK_EFORMAT);
    free(b);
}

static void test_wrong_size(void **state)
{
    fx_t *f = *state;
    ck_err_t err = { 0 };
    int fd;
    ck_zips_t s;
    const ck_zips_rec_t *r;
    ck_buf_t b = { 0 };
    uint8_t got[sizeof(rec1)];

    write_archive(f->path, 1);
    fd = open(f->path, O_RDONLY);
    ck_zips_init(&s, fd);
    assert_int_equal(ck_zips_next(&s, &r, &err), 1);
    assert_int_equal(ck_zips_read_all(&s, 1000, &b, &err), 0);
    ck_buf_release(&b);
    assert_int_equal(ck_zips_next(&s, &r, &err), 1);
    /* a storage that needs fewer bytes than the record holds: what
     * follows is no descriptor of that size */
    assert_int_equal(ck_zips_data(&s, got, 150, &err), 0);
    assert_int_equal(ck_zips_end(&s, 150, &err), CK_EFORMAT);
    assert_non_null(strstr(err.msg, "no data descriptor after 150 bytes"));
    ck_zips_release(&s);
    close(fd);
}

static void test_refused(void **state)
{
    fx_t *f = *state;
    ck_err_t err = { 0 };
    uint8_t *b;
    size_t n;
    int fd;
    ck_zips_t s;
    const ck_zips_rec_t *r;

    write_archive(f->path, 0);
    b = slurp(f->path, &n);
    b[8] = 8; /* deflated */
    spit(f->path, b, n);
    fd = open(f->path, O_RDONLY);
    ck_zips_init(&s, fd);
    assert_int_equal(ck_zips_next(&s, &r, &err), CK_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "give the input as a file"));
    ck_zips_release(&s);
    close(fd);
    /* no local header where one must be */
    spit(f->path, (const uint8_t *)"PK\x05\x07xxxx", 8);
    fd = open(f->path, O_RDONLY);
    ck_zips_init(&s, fd);
    memset(&err, 0, sizeof(err));
    assert_int_equal(ck_zips_next(&s, &r, &err), CK_EFORMAT);
    assert_non_null(strstr(err.msg, "no local header at byte 0"));
    ck_zips_release(&s);
    close(fd);
    free(b);
}

static void test_peek(void **state)
{
    fx_t *f = *state;
    ck_err_t err = { 0 };
    const uint8_t *p;
    size_t n;
    ck_zips_t s;
    int fd;

    spit(f->path, (const uint8_t *)"hello", 5);
    fd = open(f->path, O_RDONLY);
    ck_zips_init(&s, fd);
    assert_int_equal(ck_zips_peek(&s, 64, &p, &n, &err), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(p, "hello", 5);
    ck_zips_release(&s);
    close(fd);
}

static void test_splice(void **state)
{
    fx_t *f = *state;
    ck_err_t err = { 0 };
    ck_zipw_t w;
    ck_zip_t z;
    int pfd[2], fd;

    fill_records();
    fd = open(f->path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    ck_zipw_init(&w, fd);
    /* a file-mode writer cannot splice: nothing moved */
    assert_int_equal(ck_zipw_begin(&w, "t/data/0", sizeof(rec1), &err), 0);
    assert_int_equal(pipe(pfd), 0);
    assert_int_equal(ck_zipw_splice(&w, pfd[0], 10, &err), 1);
    ck_zipw_release(&w);
    assert_int_equal(ftruncate(fd, 0), 0);
    ck_zipw_init(&w, fd);
    w.stream = 1;
    assert_int_equal(write(pfd[1], rec1, sizeof(rec1)), (ssize_t)sizeof(rec1));
    assert_int_equal(ck_zipw_begin(&w, "t/data/0", sizeof(rec1), &err), 0);
    assert_int_equal(ck_zipw_splice(&w, pfd[0], sizeof(rec1), &err), 0);
    ck_zipw_set_crc(&w, (uint32_t)crc32(0, rec1, sizeof(rec1)));
    assert_int_equal(ck_zipw_end(&w, &err), 0);
    /* the pipe ends before the record does */
    assert_int_equal(write(pfd[1], rec1, 5), 5);
    close(pfd[1]);
    assert_int_equal(ck_zipw_begin(&w, "t/data/1", 10, &err), 0);
    assert_int_equal(ck_zipw_splice(&w, pfd[0], 10, &err), CK_EFORMAT);
    assert_non_null(strstr(err.msg, "t/data/1: the input ended inside it"));
    close(pfd[0]);
    ck_zipw_release(&w);
    close(fd);
    /* what was spliced reads back with its CRC */
    fd = open(f->path, O_RDWR);
    assert_int_equal(ftruncate(fd, 0), 0);
    assert_int_equal(pipe(pfd), 0);
    assert_int_equal(write(pfd[1], rec1, sizeof(rec1)), (ssize_t)sizeof(rec1));
    ck_zipw_init(&w, fd);
    w.stream = 1;
    assert_int_equal(ck_zipw_begin(&w, "t/data/0", sizeof(rec1), &err), 0);
    assert_int_equal(ck_zipw_splice(&w, pfd[0], sizeof(rec1), &err), 0);
    ck_zipw_set_crc(&w, (uint32_t)crc32(0, rec1, sizeof(rec1)));
    assert_int_equal(ck_zipw_end(&w, &err), 0);
    assert_int_equal(ck_zipw_finish(&w, &err), 0);
    ck_zipw_release(&w);
    assert_int_equal(ck_zip_open(fd, (uint64_t)lseek(fd, 0, SEEK_END), &f->a,
                                 &z, &err), 0);
    assert_int_equal(z.e[0].crc, (uint32_t)crc32(0, rec1, sizeof(rec1)));
    close(pfd[0]);
    close(pfd[1]);
    close(fd);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_one_pass_written_and_read),
        T(test_file_mode_read),
        T(test_cut_short),
        T(test_directory_disagrees),
        T(test_wrong_size),
        T(test_refused),
        T(test_peek),
        T(test_splice),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
