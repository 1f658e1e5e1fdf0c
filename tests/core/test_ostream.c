/*
 * test_ostream.c -- files written through ck_ostream: pieces of odd sizes
 * crossing the buffers, whole buffers, a tail with and without a whole
 * block, nothing at all; read back byte for byte with their exact size,
 * also when the size reserved first was larger.  A descriptor that cannot
 * write fails with "write: ..."; a stream dropped mid-way is released.
 */
#define _GNU_SOURCE /* O_DIRECT */
#include "ostream.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char dir[64], path[128];
    int fd;
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));

    strcpy(f->dir, "/tmp/ck_test_os.XXXXXX");
    if (f == NULL || mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/out", f->dir);
    f->fd = open(f->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    *state = f;
    return f->fd < 0 ? -1 : 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;

    close(f->fd);
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Byte i of the test pattern: not periodic in any block size. */
static uint8_t pat(uint64_t i)
{
    return (uint8_t)((i * 2654435761u) >> 13);
}

/* Write total bytes of the pattern in pieces of step (reserving hint),
 * then check the file holds exactly them. */
static void round_trip(fx_t *f, uint64_t total, size_t step, uint64_t hint)
{
    ck_ostream_t o;
    ck_err_t err = { 0 };
    uint8_t *piece = malloc(step), *back = malloc(total + 1);
    struct stat sb;
    uint64_t done = 0;

    assert_non_null(piece);
    assert_non_null(back);
    assert_int_equal(ck_ostream_init(&o, f->fd, hint, &err), 0);
    while (done < total) {
        size_t n = total - done < step ? (size_t)(total - done) : step;

        for (size_t i = 0; i < n; i++)
            piece[i] = pat(done + i);
        assert_int_equal(ck_ostream_write(&o, piece, n, &err), 0);
        done += n;
        assert_int_equal(ck_ostream_size(&o), done);
    }
    assert_int_equal(ck_ostream_finish(&o, &err), 0);
    ck_ostream_release(&o);
    assert_int_equal(fstat(f->fd, &sb), 0);
    assert_int_equal((uint64_t)sb.st_size, total);
    assert_int_equal(pread(f->fd, back, total + 1, 0), (ssize_t)total);
    for (uint64_t i = 0; i < total; i++)
        if (back[i] != pat(i))
            fail_msg("byte %llu of %llu is %u, wrote %u", (unsigned long long)i,
                     (unsigned long long)total, back[i], pat(i));
    /* the descriptor is an ordinary one again */
    assert_int_equal(fcntl(f->fd, F_GETFL) & O_DIRECT, 0);
    free(piece);
    free(back);
}

static void test_odd_pieces(void **state)
{
    fx_t *f = *state;

    /* round the ring of buffers twice and more, a tail of whole blocks
     * and a part */
    uint64_t n = (2ull * CK_OSTREAM_NBUF + 1) * CK_OSTREAM_BUF +
                 3 * CK_OSTREAM_ALIGN + 77;

    round_trip(f, n, 12345, n);
}

static void test_whole_buffers(void **state)
{
    fx_t *f = *state;

    round_trip(f, 3ull * CK_OSTREAM_BUF, CK_OSTREAM_BUF, 0);
}

static void test_small_and_empty(void **state)
{
    fx_t *f = *state;

    round_trip(f, 0, 1, 0);
    round_trip(f, 5, 1, 0);
    round_trip(f, CK_OSTREAM_ALIGN, 1000, 0);
}

static void test_reserved_more(void **state)
{
    fx_t *f = *state;

    /* a larger reservation is cut back to what was written */
    round_trip(f, CK_OSTREAM_BUF + 1, 1u << 20, 3ull * CK_OSTREAM_BUF);
}

static void test_write_error(void **state)
{
    fx_t *f = *state;
    int ro = open(f->path, O_RDONLY | O_CLOEXEC);
    uint8_t *b = calloc(1, CK_OSTREAM_BUF);
    ck_ostream_t o;
    ck_err_t err = { 0 };
    int rc;

    assert_true(ro >= 0);
    assert_non_null(b);
    assert_int_equal(ck_ostream_init(&o, ro, 0, &err), 0);
    rc = ck_ostream_write(&o, b, CK_OSTREAM_BUF, &err);
    if (rc == 0) /* a write in flight fails when waited for */
        rc = ck_ostream_finish(&o, &err);
    assert_int_equal(rc, -EBADF);
    assert_int_equal(strncmp(err.msg, "write: ", 7), 0);
    ck_ostream_release(&o);
    close(ro);
    free(b);
}

static void test_dropped(void **state)
{
    fx_t *f = *state;
    uint8_t *b = calloc(1, CK_OSTREAM_BUF + 10);
    ck_ostream_t o;
    ck_err_t err = { 0 };

    assert_non_null(b);
    assert_int_equal(ck_ostream_init(&o, f->fd, 0, &err), 0);
    assert_int_equal(ck_ostream_write(&o, b, CK_OSTREAM_BUF + 10, &err), 0);
    ck_ostream_release(&o); /* no finish: waits, frees, no leak */
    assert_int_equal(o.busy, 0);
    assert_null(o.raw);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_odd_pieces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_whole_buffers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_small_and_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserved_more, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dropped, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
