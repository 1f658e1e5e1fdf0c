/*
 * test_zip.c -- the zip reader and writer.
 *
 * Archives are written with ck_zipw_* into a temporary folder and read back
 * with ck_zip_open/ck_zip_read; Python's zipfile checks that others can read
 * them and makes the deflated archives.  Malformed archives are made by
 * patching bytes of a good one at offsets the reader itself reports.
 */
#define _GNU_SOURCE
#include "zip.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

typedef struct {
    char dir[64];
    char path[128];  /* the archive under test */
    char path2[128]; /* a second archive */
    int fd;
    ck_arena_t a;
    ck_zip_t z;
    ck_err_t err;
    int nrc;         /* ck_zip_open_numbered's code on the last open_zip */
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    strcpy(f->dir, "/tmp/ck_test_zip.XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/a.zip", f->dir);
    snprintf(f->path2, sizeof(f->path2), "%s/b.zip", f->dir);
    f->fd = -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    char cmd[160];

    ck_mem_fail_at(0);
    if (f->fd >= 0)
        close(f->fd);
    ck_arena_release(&f->a);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

typedef struct {
    const char *name;
    const uint8_t *data;
    size_t size;
} rec_t;

/* Bytes 0..n-1 of a fixed pattern. */
static uint8_t *pattern(size_t n, unsigned seed)
{
    uint8_t *p = malloc(n ? n : 1);
    uint32_t x = seed * 2654435761u + 1;

    assert_non_null(p);
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (uint8_t)(x >> 16);
    }
    return p;
}

static uint32_t crc_of(const void *p, size_t n)
{
    return (uint32_t)crc32(crc32(0, NULL, 0), p, (uInt)n);
}

/* Write the records into path with the writer; asserts success. */
static void write_zip(const char *path, const rec_t *r, size_t n)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    ck_zipw_t w;
    ck_err_t err = { 0 };

    assert_true(fd >= 0);
    ck_zipw_init(&w, fd);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ck_zipw_begin(&w, r[i].name, r[i].size, &err), 0);
        /* in two pieces, to use the running CRC */
        assert_int_equal(ck_zipw_data(&w, r[i].data, r[i].size / 2, &err), 0);
        assert_int_equal(ck_zipw_data(&w, r[i].data + r[i].size / 2,
                                      r[i].size - r[i].size / 2, &err),
                         0);
        assert_int_equal(ck_zipw_end(&w, &err), 0);
    }
    assert_int_equal(ck_zipw_finish(&w, &err), 0);
    assert_int_equal(err.code, 0);
    assert_int_equal((uint64_t)lseek(fd, 0, SEEK_END), w.off);
    ck_zipw_release(&w);
    assert_int_equal(close(fd), 0);
}

static uint64_t file_size(int fd)
{
    struct stat sb;

    assert_int_equal(fstat(fd, &sb), 0);
    return (uint64_t)sb.st_size;
}

/* N of a name ending in /N (digits), or SIZE_MAX. */
static size_t tail_number(const char *name)
{
    const char *d = strrchr(name, '/');
    size_t n = 0;

    if (d == NULL || d[1] == '\0')
        return SIZE_MAX;
    for (d++; *d; d++) {
        if (*d < '0' || *d > '9' || n > SIZE_MAX / 16)
            return SIZE_MAX;
        n = n * 10 + (size_t)(*d - '0');
    }
    return n;
}

/*
 * ck_zip_open_numbered on f's archive against ck_zip_open's answer rc
 * (f->z): it declines (1, nothing kept) whatever the plain open refuses,
 * and what it takes the plain open takes with the same entries -- each
 * either kept, equal, or in the table by its number, with its place, size
 * and CRC-32.  Every archive a test opens goes through it.  Its code.
 */
static int numbered_agrees(fx_t *f, int rc)
{
    ck_zip_rec_t *recs = NULL;
    size_t nrecs = 0, nset = 0, i, k = 0;
    ck_zip_t z;
    int top, nrc = ck_zip_open_numbered(f->fd, file_size(f->fd), &z, &recs,
                                        &nrecs);

    if (nrc != 0) {
        assert_int_equal(nrc, 1);
        assert_null(z.e);
        assert_int_equal(z.n, 0);
        return nrc;
    }
    if (rc != 0)
        fail_msg("taken by ck_zip_open_numbered, refused by ck_zip_open: %s",
                 f->err.msg);
    assert_null(z.arena);
    assert_int_equal(z.nrec, f->z.n);
    assert_int_equal(z.cd_off, f->z.cd_off);
    assert_int_equal(z.cd_size, f->z.cd_size);
    assert_true(z.n >= 1);
    assert_string_equal(z.e[0].name, f->z.e[0].name);
    for (i = 0; i < nrecs; i++)
        nset += recs[i].set;
    assert_int_equal(z.n + nset, f->z.n);
    {
        const char *slash = strchr(z.e[0].name, '/');

        assert_non_null(slash);
        top = (int)(slash - z.e[0].name);
    }
    for (i = 0; i < f->z.n; i++) {
        const ck_zip_entry_t *e = &f->z.e[i];
        size_t n;

        if (k < z.n && strcmp(z.e[k].name, e->name) == 0) {
            const ck_zip_entry_t *x = &z.e[k++]; /* in directory order */

            assert_int_equal(x->method, e->method);
            assert_int_equal(x->flags, e->flags);
            assert_int_equal(x->crc, e->crc);
            assert_int_equal(x->csize, e->csize);
            assert_int_equal(x->usize, e->usize);
            assert_int_equal(x->lho, e->lho);
            assert_int_equal(x->data_off, e->data_off);
            continue;
        }
        /* a numbered record: TOP/data/N, TOP the first entry's folder */
        assert_memory_equal(e->name, z.e[0].name, (size_t)top + 1);
        assert_memory_equal(e->name + top + 1, "data/", 5);
        n = tail_number(e->name);
        assert_true(n < nrecs);
        assert_int_equal(recs[n].set, 1);
        assert_int_equal(recs[n].off, e->data_off);
        assert_int_equal(recs[n].usize, e->usize);
        assert_int_equal(recs[n].crc, e->crc);
        assert_int_equal(e->method, 0);
    }
    assert_int_equal(k, z.n); /* every kept entry met */
    ck_free(z.e);
    ck_map_free(recs, nrecs * sizeof(*recs));
    return 0;
}

/* Open path for reading and parse it; returns ck_zip_open's code (and
 * checks ck_zip_open_numbered agrees). */
static int open_zip(fx_t *f, const char *path)
{
    int rc;

    if (f->fd >= 0)
        close(f->fd);
    ck_arena_release(&f->a);
    memset(&f->err, 0, sizeof(f->err));
    f->fd = open(path, O_RDWR);
    assert_true(f->fd >= 0);
    rc = ck_zip_open(f->fd, file_size(f->fd), &f->a, &f->z, &f->err);
    f->nrc = numbered_agrees(f, rc);
    return rc;
}

static void expect_open_fail(fx_t *f, int code, const char *what)
{
    int rc = open_zip(f, f->path);

    if (rc != code)
        fail_msg("expected %d, got %d (%s)", code, rc, f->err.msg);
    assert_int_equal(f->err.code, code);
    if (what != NULL && strstr(f->err.msg, what) == NULL)
        fail_msg("error '%s' does not mention '%s'", f->err.msg, what);
    assert_int_equal(f->z.n, 0);
}

static void patch(const char *path, uint64_t off, const void *p, size_t n)
{
    int fd = open(path, O_RDWR);

    assert_true(fd >= 0);
    assert_int_equal(ck_pwrite_full(fd, p, n, off), 0);
    close(fd);
}

static void patch16(const char *path, uint64_t off, uint16_t v)
{
    uint8_t b[2] = { (uint8_t)v, (uint8_t)(v >> 8) };

    patch(path, off, b, 2);
}

static void patch32(const char *path, uint64_t off, uint32_t v)
{
    uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
                     (uint8_t)(v >> 24) };

    patch(path, off, b, 4);
}

static void patch64(const char *path, uint64_t off, uint64_t v)
{
    patch32(path, off, (uint32_t)v);
    patch32(path, off + 4, (uint32_t)(v >> 32));
}

/* Offset of central directory entry i (entries have no extra fields). */
static uint64_t cd_entry(const ck_zip_t *z, size_t i)
{
    uint64_t off = z->cd_off;

    for (size_t k = 0; k < i; k++)
        off += 46 + strlen(z->e[k].name);
    return off;
}

/* Run a Python script with arg; its exit status (0: it passed). */
static int run_python(fx_t *f, const char *script, const char *arg)
{
    char spath[160], cmd[512];
    FILE *fp;
    int rc;

    snprintf(spath, sizeof(spath), "%s/check.py", f->dir);
    fp = fopen(spath, "w");
    assert_non_null(fp);
    fputs(script, fp);
    assert_int_equal(fclose(fp), 0);
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %s", spath, arg);
    rc = system(cmd);
    unlink(spath);
    return rc;
}

static void write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);

    assert_true(fd >= 0);
    assert_int_equal(ck_pwrite_full(fd, p, n, 0), 0);
    close(fd);
}

/* Three records torch.save would write, plus an empty one. */
typedef struct {
    uint8_t *pkl, *big;
    rec_t r[5];
} sample_t;

static void sample_init(sample_t *s)
{
    s->pkl = pattern(150, 1);
    s->big = pattern(100000, 2);
    s->r[0] = (rec_t){ "archive/data.pkl", s->pkl, 150 };
    s->r[1] = (rec_t){ "archive/byteorder", (const uint8_t *)"little", 6 };
    s->r[2] = (rec_t){ "archive/data/0", s->big, 100000 };
    s->r[3] = (rec_t){ "archive/data/1", (const uint8_t *)"", 0 };
    s->r[4] = (rec_t){ "archive/version", (const uint8_t *)"3\n", 2 };
}

static void sample_release(sample_t *s)
{
    free(s->pkl);
    free(s->big);
}

/* ---- writer and reader together ------------------------------------- */

static void test_roundtrip(void **state)
{
    fx_t *f = *state;
    sample_t s;

    sample_init(&s);
    write_zip(f->path, s.r, 5);
    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(f->z.n, 5);
    assert_int_equal(f->z.zip64, 1);
    for (size_t i = 0; i < 5; i++) {
        ck_zip_entry_t *e = &f->z.e[i];
        uint8_t *data, lcrc[4];

        assert_string_equal(e->name, s.r[i].name);
        assert_ptr_equal(ck_zip_find(&f->z, s.r[i].name), e);
        assert_int_equal(e->method, 0);
        assert_int_equal(e->flags, 0);
        assert_int_equal(e->usize, s.r[i].size);
        assert_int_equal(e->csize, s.r[i].size);
        assert_int_equal(e->crc, crc_of(s.r[i].data, s.r[i].size));
        assert_int_equal(e->data_off % 64, 0);
        assert_true(e->data_off >= e->lho + 30 + strlen(e->name));
        /* the CRC was patched into the local header too */
        assert_int_equal(ck_pread_full(f->fd, lcrc, 4, e->lho + 14), 0);
        assert_int_equal(lcrc[0] | lcrc[1] << 8 | lcrc[2] << 16 |
                             (uint32_t)lcrc[3] << 24,
                         e->crc);
        assert_int_equal(ck_zip_read(f->fd, e, e->usize, &data, &f->err), 0);
        assert_non_null(data);
        assert_memory_equal(data, s.r[i].data, s.r[i].size);
        ck_free(data);
    }
    assert_null(ck_zip_find(&f->z, "archive/data/2"));
    assert_null(ck_zip_find(&f->z, "archive"));
    /* entries are laid out in order, without gaps beyond the padding */
    for (size_t i = 0; i + 1 < 5; i++) {
        assert_true(f->z.e[i].lho < f->z.e[i + 1].lho);
        assert_int_equal(f->z.e[i].data_off + f->z.e[i].usize,
                         f->z.e[i + 1].lho);
    }
    assert_int_equal(f->z.e[4].data_off + 2, f->z.cd_off);
    sample_release(&s);
}

static void test_end_records(void **state)
{
    fx_t *f = *state;
    sample_t s;
    uint8_t t[98];
    uint64_t size;

    sample_init(&s);
    write_zip(f->path, s.r, 5);
    assert_int_equal(open_zip(f, f->path), 0);
    size = file_size(f->fd);
    /* zip64 end record, zip64 locator, end record: always, in that order */
    assert_int_equal(ck_pread_full(f->fd, t, sizeof(t), size - sizeof(t)), 0);
    assert_memory_equal(t, "PK\x06\x06", 4);
    assert_memory_equal(t + 56, "PK\x06\x07", 4);
    assert_memory_equal(t + 76, "PK\x05\x06", 4);
    /* the locator points at the zip64 record; counts and sizes agree */
    assert_int_equal(t[64] | t[65] << 8 | t[66] << 16, size - sizeof(t));
    assert_int_equal(t[24], 5);
    assert_int_equal(t[32], 5);
    assert_int_equal(t[84], 5);
    assert_int_equal(t[86], 5);
    assert_int_equal(t[48] | t[49] << 8 | t[50] << 16, f->z.cd_off);
    assert_int_equal(t[92] | t[93] << 8 | t[94] << 16, f->z.cd_off);
    assert_int_equal(t[40] | t[41] << 8, f->z.cd_size);
    assert_int_equal(size - sizeof(t), f->z.cd_off + f->z.cd_size);
    /* no archive comment */
    assert_int_equal(t[96] | t[97] << 8, 0);
    sample_release(&s);
}

/* Every name length gives every padding; data always on 64 bytes. */
static void test_alignment(void **state)
{
    fx_t *f = *state;
    rec_t r[80];
    char names[80][96];
    uint8_t *data = pattern(200, 3);

    for (size_t i = 0; i < 80; i++) {
        size_t len = 3 + i;

        memset(names[i], 'n', len);
        names[i][0] = 't';
        names[i][1] = '/';
        snprintf(names[i] + 2, 8, "%03zu", i);
        names[i][5] = 'n';
        names[i][len] = '\0';
        r[i] = (rec_t){ names[i], data, i * 3 % 200 };
    }
    write_zip(f->path, r, 80);
    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(f->z.n, 80);
    for (size_t i = 0; i < 80; i++) {
        assert_string_equal(f->z.e[i].name, names[i]);
        assert_int_equal(f->z.e[i].data_off % 64, 0);
        assert_int_equal(f->z.e[i].crc, crc_of(data, r[i].size));
    }
    free(data);
}

static void test_python_reads_ours(void **state)
{
    fx_t *f = *state;
    sample_t s;

    sample_init(&s);
    write_zip(f->path, s.r, 5);
    assert_int_equal(
        run_python(f, "import zipfile, sys, zlib\n"
                   "z = zipfile.ZipFile(sys.argv[1])\n"
                   "assert z.testzip() is None\n"
                   "i = z.infolist()\n"
                   "assert [x.filename for x in i] == ['archive/data.pkl', "
                   "'archive/byteorder', 'archive/data/0', 'archive/data/1', "
                   "'archive/version'], i\n"
                   "assert [x.file_size for x in i] == [150, 6, 100000, 0, 2]\n"
                   "assert all(x.compress_type == 0 for x in i)\n"
                   "assert z.read('archive/byteorder') == b'little'\n"
                   "assert z.read('archive/version') == b'3\\n'\n"
                   "f = open(sys.argv[1], 'rb').read()\n"
                   "for x in i:\n"
                   "    n = len(x.filename)\n"
                   "    e = int.from_bytes(f[x.header_offset + 28:"
                   "x.header_offset + 30], 'little')\n"
                   "    assert (x.header_offset + 30 + n + e) % 64 == 0\n",
                   f->path),
        0);
    sample_release(&s);
}

/*
 * A record whose size is told by what is written (CK_ZIPW_LATER, how the
 * output pickle goes out as it is made) gives the same bytes as the same
 * record declared: a big one whose header left the write-behind buffer
 * before its sizes were known, and small ones patched inside it.  A
 * stream cannot go back to its header and refuses it.
 */
static void test_size_later(void **state)
{
    fx_t *f = *state;
    static const size_t sizes[] = { 3u << 20, 150, 0, 70000 };
    char later[600], name[32], cmd[1300];
    uint8_t *data[4];
    int fd;
    ck_zipw_t w;
    rec_t r[4];

    for (size_t i = 0; i < 4; i++) {
        data[i] = pattern(sizes[i], (unsigned)i + 7);
        snprintf(name, sizeof(name), "archive/r%zu", i);
        r[i].name = strdup(name);
        r[i].data = data[i];
        r[i].size = sizes[i];
    }
    write_zip(f->path, r, 4);
    snprintf(later, sizeof(later), "%s.later", f->path);
    fd = open(later, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    ck_zipw_init(&w, fd);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(ck_zipw_begin(&w, r[i].name, CK_ZIPW_LATER, &f->err),
                         0);
        for (size_t at = 0; at < sizes[i]; at += 65536)
            assert_int_equal(ck_zipw_data(&w, data[i] + at,
                                          sizes[i] - at < 65536 ? sizes[i] - at
                                                                : 65536,
                                          &f->err),
                             0);
        assert_int_equal(ck_zipw_end(&w, &f->err), 0);
    }
    assert_int_equal(ck_zipw_finish(&w, &f->err), 0);
    ck_zipw_release(&w);
    assert_int_equal(close(fd), 0);
    snprintf(cmd, sizeof(cmd), "cmp -s '%s' '%s'", f->path, later);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(open_zip(f, later), 0);
    assert_int_equal(f->z.e[0].usize, 3u << 20);
    assert_int_equal(f->z.e[0].crc, crc_of(data[0], sizes[0]));

    fd = open(later, O_RDWR | O_TRUNC);
    assert_true(fd >= 0);
    ck_zipw_init(&w, fd);
    w.stream = 1;
    assert_int_equal(ck_zipw_begin(&w, "a/b", CK_ZIPW_LATER, &f->err),
                     CK_EFORMAT);
    ck_zipw_release(&w);
    close(fd);
    for (size_t i = 0; i < 4; i++) {
        free((void *)r[i].name);
        free(data[i]);
    }
}

/*
 * fdatasync, counted and made to fail on demand: this binary's definition
 * is the one the writer (linked in statically) calls.
 */
static int fds_calls, fds_fail;

int fdatasync(int fd)
{
    fds_calls++;
    if (fds_fail) {
        errno = EIO;
        return -1;
    }
    return (int)syscall(SYS_fdatasync, fd);
}

static double now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* One record of n bytes of the pattern, 1 MiB a call, with yield y (and
 * the archive read back when good): ck_zipw_finish's result. */
static int write_yielding(fx_t *f, const ck_yield_t *y, size_t n)
{
    uint8_t *data = pattern(n, 3);
    int fd = open(f->path, O_RDWR | O_CREAT | O_TRUNC, 0644), rc;
    ck_zipw_t w;

    assert_true(fd >= 0);
    ck_zipw_init(&w, fd);
    w.yield = y;
    assert_int_equal(ck_zipw_begin(&w, "archive/data/0", n, &f->err), 0);
    for (size_t at = 0; at < n; at += 1u << 20)
        assert_int_equal(ck_zipw_data(&w, data + at, n - at < (1u << 20) ?
                                      n - at : 1u << 20, &f->err), 0);
    assert_int_equal(ck_zipw_end(&w, &f->err), 0);
    rc = ck_zipw_finish(&w, &f->err);
    ck_zipw_release(&w);
    assert_int_equal(close(fd), 0);
    if (rc == 0) {
        assert_int_equal(open_zip(f, f->path), 0);
        assert_int_equal(f->z.e[0].usize, n);
        assert_int_equal(f->z.e[0].crc, crc_of(data, n));
    }
    free(data);
    return rc;
}

/*
 * A writer giving way to other jobs' syncs (ck_yield_t): with sync set it
 * makes the output durable every 8 MiB as it grows (none without it); a
 * failed sync fails the finish (the final fsync would not see the error
 * again); with hold set it writes no more until hold is cleared or
 * CK_YIELD_HOLD_MS passed.  The archive is whole each time.
 */
static void test_writer_gives_way(void **state)
{
    fx_t *f = *state;
    ck_yield_t y = { 0, 0 };
    double t;

    fds_calls = 0;
    assert_int_equal(write_yielding(f, &y, 40u << 20), 0);
    assert_int_equal(fds_calls, 0);
    assert_int_equal(write_yielding(f, NULL, 40u << 20), 0);
    assert_int_equal(fds_calls, 0);
    y.sync = 1;
    assert_int_equal(write_yielding(f, &y, 40u << 20), 0);
    assert_in_range(fds_calls, 4, 5);   /* at 8, 16, 24, 32 (40) MiB */
    fds_calls = 0;
    fds_fail = 1;
    assert_int_equal(write_yielding(f, &y, 20u << 20), -EIO);
    fds_fail = 0;
    assert_in_range(fds_calls, 1, 2);
    assert_non_null(strstr(f->err.msg, "fdatasync"));
    y.sync = 0;
    y.hold = 1;
    t = now_ms();
    assert_int_equal(write_yielding(f, &y, 10u << 20), 0);  /* one kick */
    assert_true(now_ms() - t >= CK_YIELD_HOLD_MS * 0.9);
}

/* More than 65535 entries: the classic end record says "see zip64". */
static void test_many_entries(void **state)
{
    fx_t *f = *state;
    enum { N = 70000 };
    int fd = open(f->path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    ck_zipw_t w;
    uint8_t t[22];
    char name[32];

    assert_true(fd >= 0);
    ck_zipw_init(&w, fd);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "m/%d", i);
        assert_int_equal(ck_zipw_begin(&w, name, 1, &f->err), 0);
        assert_int_equal(ck_zipw_data(&w, name + 2, 1, &f->err), 0);
        assert_int_equal(ck_zipw_end(&w, &f->err), 0);
    }
    assert_int_equal(ck_zipw_finish(&w, &f->err), 0);
    ck_zipw_release(&w);
    close(fd);
    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(f->z.n, N);
    /* the directory (3 MiB) is read through a window of 1 MiB */
    assert_true(f->z.cd_size > (3u << 20));
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "m/%d", i);
        assert_string_equal(f->z.e[i].name, name);
        assert_int_equal(f->z.e[i].crc, crc_of(name + 2, 1));
    }
    assert_int_equal(ck_pread_full(f->fd, t, 22, file_size(f->fd) - 22), 0);
    assert_int_equal(t[8] | t[9] << 8, 0xffff);
    assert_int_equal(t[10] | t[11] << 8, 0xffff);
    assert_int_equal(run_python(f, "import zipfile, sys\n"
                                "z = zipfile.ZipFile(sys.argv[1])\n"
                                "assert len(z.infolist()) == 70000\n"
                                "assert z.read('m/69999') == b'6'\n",
                                f->path),
                     0);
}

/*
 * Names the writer keeps as a folder and a number (TOP/data/N) and those it
 * keeps whole come back as given (read by Python's zipfile: ours refuses
 * some of these names, '/9', as unsafe; test_many_entries reads numbered
 * ones with it): numbers at the edges
 * of 32 bits, ones not in canonical form (a leading zero, empty, signed),
 * a folder that changes and comes back, no folder, the longest name.
 */
static void test_writer_names(void **state)
{
    fx_t *f = *state;
    static char longest[CK_ZIPW_NAME_MAX + 1];
    const char *names[] = {
        "a/data/0", "a/data/7", "a/data/4294967294", "a/data/4294967295",
        "a/data/4294967296", "a/data/00", "a/data/012", "a/data/",
        "a/data/+5", "a/data/5x", "b/data/7", "a/data/8", "/9", "10",
        "a/data.pkl", "a//11", longest,
    };
    enum { N = sizeof(names) / sizeof(names[0]) };
    int fd = open(f->path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    char py[2048], buf[CK_ZIPW_NAME_MAX + 1];
    size_t k;
    ck_zipw_t w;

    memset(longest, 'x', CK_ZIPW_NAME_MAX);
    memcpy(longest + CK_ZIPW_NAME_MAX - 11, "/4000000001", 11);
    assert_true(fd >= 0);
    ck_zipw_init(&w, fd);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(ck_zipw_begin(&w, names[i], 1, &f->err), 0);
        assert_int_equal(ck_zipw_data(&w, "z", 1, &f->err), 0);
        assert_int_equal(ck_zipw_end(&w, &f->err), 0);
        assert_int_equal(ck_zipw_name(&w.e[i], buf), strlen(names[i]));
        assert_string_equal(buf, names[i]);
    }
    /* numbered: one folder string for a/data/0, 7 and 4294967294 */
    assert_int_equal(w.e[0].num, 0);
    assert_int_equal(w.e[2].num, 4294967294u);
    assert_ptr_equal(w.e[0].name, w.e[2].name);
    for (size_t i = 3; i <= 9; i++)
        assert_int_equal(w.e[i].num, CK_ZIPW_WHOLE);
    assert_int_equal(w.e[11].num, 8);
    assert_int_equal(w.e[16].num, 4000000001u);
    assert_int_equal(ck_zipw_finish(&w, &f->err), 0);
    ck_zipw_release(&w);
    close(fd);
    k = (size_t)snprintf(py, sizeof(py), "import zipfile, sys\n"
                         "z = zipfile.ZipFile(sys.argv[1])\n"
                         "assert z.testzip() is None\n"
                         "n = [x.filename for x in z.infolist()]\n"
                         "assert n[:-1] == [");
    for (size_t i = 0; i < N; i++) {
        if (i + 1 < N)
            k += (size_t)snprintf(py + k, sizeof(py) - k, "'%s', ", names[i]);
    }
    snprintf(py + k, sizeof(py) - k, "], n\nassert n[-1] == 'x' * 501 + "
             "'/4000000001', n[-1]\n");
    assert_int_equal(run_python(f, py, f->path), 0);
}

/*
 * A directory of entries with long names, extra fields and comments, which
 * lie across the edges of the 1 MiB window the directory is read through:
 * every entry read whole, its name and bytes right.
 */
static void test_cd_window(void **state)
{
    fx_t *f = *state;
    char want[600];

    assert_int_equal(run_python(f, "import zipfile, sys\n"
                                "z = zipfile.ZipFile(sys.argv[1], 'w')\n"
                                "for i in range(120):\n"
                                "    n = 'w/' + str(i) + 'x' * (i * 7 % 400)\n"
                                "    zi = zipfile.ZipInfo(n)\n"
                                "    zi.comment = b'c' * (i * 4099 % 65535)\n"
                                "    zi.extra = b'\\xfe\\xca' + (i * 311 % 8000).to_bytes(2, 'little')\n"
                                "    zi.extra += b'e' * (i * 311 % 8000)\n"
                                "    z.writestr(zi, str(i) * 3)\n"
                                "z.close()\n",
                                f->path),
                     0);
    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(f->z.n, 120);
    assert_true(f->z.cd_size > (3u << 20));
    for (int i = 0; i < 120; i++) {
        int n = snprintf(want, sizeof(want), "w/%d", i);
        uint8_t *got;
        char data[16];

        memset(want + n, 'x', (size_t)(i * 7 % 400));
        want[n + i * 7 % 400] = '\0';
        assert_string_equal(f->z.e[i].name, want);
        assert_int_equal(ck_zip_read(f->fd, &f->z.e[i], 64, &got, &f->err), 0);
        snprintf(data, sizeof(data), "%d%d%d", i, i, i);
        assert_int_equal(f->z.e[i].usize, strlen(data));
        assert_memory_equal(got, data, strlen(data));
        free(got);
    }
}

/* A zip from Python's zipfile, stored: no padding, other fields set. */
static void test_reads_python_stored(void **state)
{
    fx_t *f = *state;
    uint8_t *data;
    ck_zip_entry_t *e;

    assert_int_equal(run_python(f, "import zipfile, sys\n"
                                "z = zipfile.ZipFile(sys.argv[1], 'w')\n"
                                "z.writestr('p/a', b'hello')\n"
                                "z.writestr('p/b', b'')\n"
                                "z.comment = b'a comment'\n"
                                "z.close()\n",
                                f->path),
                     0);
    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(f->z.n, 2);
    assert_int_equal(f->z.zip64, 0);
    e = ck_zip_find(&f->z, "p/a");
    assert_non_null(e);
    assert_int_equal(e->crc, crc_of("hello", 5));
    assert_int_equal(ck_zip_read(f->fd, e, 5, &data, &f->err), 0);
    assert_memory_equal(data, "hello", 5);
    ck_free(data);
    assert_int_equal(ck_zip_find(&f->z, "p/b")->usize, 0);
}

/* ---- deflated entries ------------------------------------------------ */

#define DEFLATED_N (256u * 12345u)

static void make_deflated(fx_t *f)
{
    assert_int_equal(run_python(f, "import zipfile, sys\n"
                                "z = zipfile.ZipFile(sys.argv[1], 'w', "
                                "zipfile.ZIP_DEFLATED)\n"
                                "z.writestr('d/small', b'hello hello hello')\n"
                                "z.writestr('d/big', bytes(range(256)) * 12345)\n"
                                "z.close()\n",
                                f->path),
                     0);
}

static void check_big(const uint8_t *p)
{
    for (size_t i = 0; i < DEFLATED_N; i++)
        if (p[i] != (uint8_t)i)
            fail_msg("byte %zu is %u", i, p[i]);
}

static void test_deflated_read(void **state)
{
    fx_t *f = *state;
    ck_zip_entry_t *e;
    uint8_t *data, *want;

    make_deflated(f);
    assert_int_equal(open_zip(f, f->path), 0);
    e = ck_zip_find(&f->z, "d/small");
    assert_non_null(e);
    assert_int_equal(e->method, 8);
    assert_int_equal(e->usize, 17);
    assert_int_equal(ck_zip_read(f->fd, e, 17, &data, &f->err), 0);
    assert_memory_equal(data, "hello hello hello", 17);
    assert_int_equal(e->crc, crc_of(data, 17));
    ck_free(data);
    /* more than one inflate chunk */
    e = ck_zip_find(&f->z, "d/big");
    assert_int_equal(e->method, 8);
    assert_int_equal(e->usize, DEFLATED_N);
    assert_true(e->csize < e->usize / 10);
    assert_int_equal(ck_zip_read(f->fd, e, DEFLATED_N, &data, &f->err), 0);
    check_big(data);
    want = malloc(DEFLATED_N);
    assert_non_null(want);
    for (size_t i = 0; i < DEFLATED_N; i++)
        want[i] = (uint8_t)i;
    assert_int_equal(e->crc, crc_of(want, DEFLATED_N));
    free(want);
    ck_free(data);
    /* the limit is on the inflated size */
    assert_int_equal(ck_zip_read(f->fd, e, DEFLATED_N - 1, &data, &f->err),
                     CK_ELIMIT);
    assert_null(data);
}

static void test_deflated_copy(void **state)
{
    fx_t *f = *state;
    ck_zip_entry_t *e;
    ck_zipw_t w;
    ck_zip_t z2;
    ck_arena_t a2 = { 0 };
    int out;
    uint8_t *data;
    uint32_t crc;

    make_deflated(f);
    assert_int_equal(open_zip(f, f->path), 0);
    out = open(f->path2, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(out >= 0);
    ck_zipw_init(&w, out);
    for (size_t i = 0; i < f->z.n; i++) {
        e = &f->z.e[i];
        assert_int_equal(ck_zipw_begin(&w, e->name, e->usize, &f->err), 0);
        assert_int_equal(ck_zipw_inflate(&w, f->fd, e, &f->err), 0);
        assert_int_equal(ck_zipw_end(&w, &f->err), 0);
    }
    assert_int_equal(ck_zipw_finish(&w, &f->err), 0);
    ck_zipw_release(&w);
    assert_int_equal(ck_zip_open(out, file_size(out), &a2, &z2, &f->err), 0);
    assert_int_equal(z2.n, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(z2.e[i].name, f->z.e[i].name);
        assert_int_equal(z2.e[i].method, 0);
        assert_int_equal(z2.e[i].usize, f->z.e[i].usize);
        assert_int_equal(z2.e[i].crc, f->z.e[i].crc);
        assert_int_equal(z2.e[i].data_off % 64, 0);
    }
    assert_int_equal(ck_zip_read(out, &z2.e[1], DEFLATED_N, &data, &f->err), 0);
    check_big(data);
    crc = crc_of(data, DEFLATED_N);
    assert_int_equal(z2.e[1].crc, crc);
    ck_free(data);
    close(out);
    ck_arena_release(&a2);
    /* inflating into a record of the wrong size fails */
    out = open(f->path2, O_RDWR | O_CREAT | O_TRUNC, 0644);
    ck_zipw_init(&w, out);
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(ck_zipw_begin(&w, "x/y", 16, &f->err), 0);
    assert_int_equal(ck_zipw_inflate(&w, f->fd, &f->z.e[0], &f->err), CK_EFORMAT);
    ck_zipw_release(&w);
    close(out);
}

static void test_deflated_corrupt(void **state)
{
    fx_t *f = *state;
    ck_zip_entry_t e;
    uint8_t *data, junk[64];
    uint64_t cd;

    make_deflated(f);
    assert_int_equal(open_zip(f, f->path), 0);
    e = f->z.e[0];
    cd = cd_entry(&f->z, 0);
    /* declared larger than it inflates to */
    patch32(f->path, cd + 24, 18);
    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(ck_zip_read(f->fd, &f->z.e[0], 100, &data, &f->err),
                     CK_EFORMAT);
    assert_non_null(strstr(f->err.msg, "inflates to 17 bytes, not 18"));
    /* declared smaller */
    patch32(f->path, cd + 24, 16);
    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(ck_zip_read(f->fd, &f->z.e[0], 100, &data, &f->err),
                     CK_EFORMAT);
    assert_non_null(strstr(f->err.msg, "past its size"));
    patch32(f->path, cd + 24, 17);
    /* compressed size cut short */
    patch32(f->path, cd + 20, (uint32_t)e.csize - 3);
    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(ck_zip_read(f->fd, &f->z.e[0], 100, &data, &f->err),
                     CK_EFORMAT);
    patch32(f->path, cd + 20, (uint32_t)e.csize);
    /* garbage in place of the stream */
    memset(junk, 0xff, sizeof(junk));
    patch(f->path, e.data_off, junk, e.csize < 64 ? e.csize : 64);
    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(ck_zip_read(f->fd, &f->z.e[0], 100, &data, &f->err),
                     CK_EFORMAT);
    assert_null(data);
}

/* ---- copying --------------------------------------------------------- */

static void test_copy_computes_crc(void **state)
{
    fx_t *f = *state;
    uint8_t *src = pattern(3000000, 4), *data;
    char srcpath[160];
    int in, out;
    ck_zipw_t w;

    snprintf(srcpath, sizeof(srcpath), "%s/src.bin", f->dir);
    in = open(srcpath, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(in >= 0);
    assert_int_equal(ck_pwrite_full(in, src, 3000000, 0), 0);
    out = open(f->path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(out >= 0);
    ck_zipw_init(&w, out);
    /* crc_known = 0: through memory, CRC computed (more than one chunk) */
    assert_int_equal(ck_zipw_begin(&w, "c/computed", 2500000, &f->err), 0);
    assert_int_equal(ck_zipw_copy(&w, in, 100, 2500000, 0, 0, &f->err), 0);
    assert_int_equal(ck_zipw_end(&w, &f->err), 0);
    assert_int_equal(w.e[0].crc, crc_of(src + 100, 2500000));
    /* crc_known = 1: copied as is, the known CRC trusted */
    assert_int_equal(ck_zipw_begin(&w, "c/known", 1000, &f->err), 0);
    assert_int_equal(ck_zipw_copy(&w, in, 7, 1000, 1, crc_of(src + 7, 1000),
                                  &f->err),
                     0);
    assert_int_equal(ck_zipw_end(&w, &f->err), 0);
    /* zero bytes */
    assert_int_equal(ck_zipw_begin(&w, "c/empty", 0, &f->err), 0);
    assert_int_equal(ck_zipw_copy(&w, in, 0, 0, 0, 0, &f->err), 0);
    assert_int_equal(ck_zipw_end(&w, &f->err), 0);
    assert_int_equal(ck_zipw_finish(&w, &f->err), 0);
    ck_zipw_release(&w);
    close(out);

    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(f->z.n, 3);
    assert_int_equal(f->z.e[0].crc, crc_of(src + 100, 2500000));
    assert_int_equal(f->z.e[1].crc, crc_of(src + 7, 1000));
    assert_int_equal(f->z.e[2].crc, 0);
    assert_int_equal(ck_zip_read(f->fd, &f->z.e[0], 2500000, &data, &f->err), 0);
    assert_memory_equal(data, src + 100, 2500000);
    ck_free(data);
    assert_int_equal(ck_zip_read(f->fd, &f->z.e[1], 1000, &data, &f->err), 0);
    assert_memory_equal(data, src + 7, 1000);
    ck_free(data);
    assert_int_equal(run_python(f, "import zipfile, sys\n"
                                "assert zipfile.ZipFile(sys.argv[1]).testzip() "
                                "is None\n",
                                f->path),
                     0);

    /* the input ends before the bytes asked for */
    out = open(f->path2, O_RDWR | O_CREAT | O_TRUNC, 0644);
    ck_zipw_init(&w, out);
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(ck_zipw_begin(&w, "c/short", 100, &f->err), 0);
    assert_int_equal(ck_zipw_copy(&w, in, 2999950, 100, 0, 0, &f->err),
                     CK_EFORMAT);
    ck_zipw_release(&w);
    ck_zipw_init(&w, out);
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(ck_zipw_begin(&w, "c/short", 100, &f->err), 0);
    assert_int_equal(ck_zipw_copy(&w, in, 2999950, 100, 1, 0, &f->err),
                     CK_EFORMAT);
    ck_zipw_release(&w);
    close(out);
    close(in);
    free(src);
}

/* ---- writer misuse --------------------------------------------------- */

static void test_writer_misuse(void **state)
{
    fx_t *f = *state;
    int fd = open(f->path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    char longname[600];
    ck_zipw_t w;

    assert_true(fd >= 0);
    ck_zipw_init(&w, fd);
    /* more bytes than declared */
    assert_int_equal(ck_zipw_begin(&w, "w/a", 3, &f->err), 0);
    assert_int_equal(ck_zipw_data(&w, "abcd", 4, &f->err), CK_EFORMAT);
    memset(&f->err, 0, sizeof(f->err));
    /* a record while one is open */
    assert_int_equal(ck_zipw_begin(&w, "w/b", 1, &f->err), CK_EFORMAT);
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(ck_zipw_finish(&w, &f->err), CK_EFORMAT);
    memset(&f->err, 0, sizeof(f->err));
    /* fewer bytes than declared */
    assert_int_equal(ck_zipw_data(&w, "ab", 2, &f->err), 0);
    assert_int_equal(ck_zipw_end(&w, &f->err), CK_EFORMAT);
    assert_non_null(strstr(f->err.msg, "2 bytes written, 3 declared"));
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(ck_zipw_data(&w, "c", 1, &f->err), 0);
    assert_int_equal(ck_zipw_end(&w, &f->err), 0);
    /* after the end, no more data and no second end */
    assert_int_equal(ck_zipw_data(&w, "d", 1, &f->err), CK_EFORMAT);
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(ck_zipw_end(&w, &f->err), CK_EFORMAT);
    memset(&f->err, 0, sizeof(f->err));
    /* names longer than 512 bytes */
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(ck_zipw_begin(&w, longname, 1, &f->err), CK_EFORMAT);
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(ck_zipw_finish(&w, &f->err), 0);
    ck_zipw_release(&w);
    close(fd);
    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(f->z.n, 1);
    assert_int_equal(f->z.e[0].crc, crc_of("abc", 3));
}

/*
 * Regression (fixed): ck_zipw_data, ck_zipw_copy, ck_zipw_inflate and ck_zipw_end on a
 * writer that has no record yet read w->e[-1] (w_room and ck_zipw_end take
 * &w->e[w->n - 1] before checking w->open) and crash dereferencing its name
 * for the message: ck_zipw_init(&w, fd); ck_zipw_data(&w, "a", 1, &err)
 * segfaults instead of returning CK_EFORMAT.
 */
static void test_writer_misuse_no_record(void **state)
{
    fx_t *f = *state;
    ck_zipw_t w;

    ck_zipw_init(&w, -1);
    assert_int_equal(ck_zipw_data(&w, "a", 1, &f->err), CK_EFORMAT);
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(ck_zipw_end(&w, &f->err), CK_EFORMAT);
    ck_zipw_release(&w);
}

static void test_writer_oom(void **state)
{
    fx_t *f = *state;
    sample_t s;
    int done = 0;

    sample_init(&s);
    for (unsigned long n = 1; !done && n < 200; n++) {
        int fd = open(f->path, O_RDWR | O_CREAT | O_TRUNC, 0644);
        ck_zipw_t w;
        int rc = 0;

        assert_true(fd >= 0);
        memset(&f->err, 0, sizeof(f->err));
        ck_zipw_init(&w, fd);
        ck_mem_fail_at(n);
        for (size_t i = 0; rc == 0 && i < 5; i++) {
            rc = ck_zipw_begin(&w, s.r[i].name, s.r[i].size, &f->err);
            if (rc == 0)
                rc = ck_zipw_data(&w, s.r[i].data, s.r[i].size, &f->err);
            if (rc == 0)
                rc = ck_zipw_end(&w, &f->err);
        }
        if (rc == 0)
            rc = ck_zipw_finish(&w, &f->err);
        ck_mem_fail_at(0);
        ck_zipw_release(&w);
        close(fd);
        if (rc == 0)
            done = 1;
        else
            assert_int_equal(rc, CK_ENOMEM);
    }
    assert_true(done);
    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(f->z.n, 5);
    sample_release(&s);
}

static void test_reader_oom(void **state)
{
    fx_t *f = *state;
    sample_t s;
    int done = 0;

    sample_init(&s);
    write_zip(f->path, s.r, 5);
    assert_int_equal(open_zip(f, f->path), 0);
    for (unsigned long n = 1; !done && n < 200; n++) {
        ck_arena_t a = { 0 };
        ck_zip_t z;
        uint8_t *data = NULL;
        int rc;

        memset(&f->err, 0, sizeof(f->err));
        ck_mem_fail_at(n);
        rc = ck_zip_open(f->fd, file_size(f->fd), &a, &z, &f->err);
        if (rc == 0)
            rc = ck_zip_read(f->fd, &z.e[2], 100000, &data, &f->err);
        ck_mem_fail_at(0);
        if (rc == 0) {
            assert_memory_equal(data, s.big, 100000);
            done = 1;
        } else {
            assert_int_equal(rc, CK_ENOMEM);
            assert_null(data);
        }
        ck_free(data);
        ck_arena_release(&a);
    }
    assert_true(done);
    sample_release(&s);
}

/* ---- malformed archives ---------------------------------------------- */

/* A good archive of three small records. */
static void write_abc(fx_t *f)
{
    static const rec_t r[] = {
        { "z/a1", (const uint8_t *)"first record", 12 },
        { "z/a2", (const uint8_t *)"second record", 13 },
        { "z/a3", (const uint8_t *)"third", 5 },
    };

    write_zip(f->path, r, 3);
    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(f->z.n, 3);
}

static void test_bad_truncated(void **state)
{
    fx_t *f = *state;
    uint8_t *whole;
    uint64_t size;

    write_abc(f);
    size = file_size(f->fd);
    whole = malloc(size);
    assert_non_null(whole);
    assert_int_equal(ck_pread_full(f->fd, whole, size, 0), 0);
    /* reading past the end is an error of its own */
    assert_int_equal(ck_pread_full(f->fd, whole, 2, size - 1), -EIO);
    for (uint64_t n = 0; n < size; n++) {
        int fd = open(f->path2, O_RDWR | O_CREAT | O_TRUNC, 0644);
        ck_arena_t a = { 0 };
        ck_zip_t z;
        ck_err_t err = { 0 };
        int rc;

        assert_int_equal(ck_pwrite_full(fd, whole, n, 0), 0);
        rc = ck_zip_open(fd, n, &a, &z, &err);
        if (rc >= 0)
            fail_msg("archive cut to %llu of %llu bytes opened",
                     (unsigned long long)n, (unsigned long long)size);
        assert_int_equal(rc, CK_EFORMAT);
        assert_int_equal(err.code, rc);
        ck_arena_release(&a);
        close(fd);
    }
    /* the file is shorter than the size the caller gives */
    {
        int fd = open(f->path2, O_RDWR | O_CREAT | O_TRUNC, 0644);
        ck_arena_t a = { 0 };
        ck_zip_t z;
        ck_err_t err = { 0 };

        assert_int_equal(ck_pwrite_full(fd, whole, size - 10, 0), 0);
        assert_true(ck_zip_open(fd, size, &a, &z, &err) < 0);
        ck_arena_release(&a);
        close(fd);
    }
    free(whole);
}

static void test_bad_no_eocd(void **state)
{
    fx_t *f = *state;
    uint8_t junk[4096];
    uint64_t size;

    memset(junk, 'P', sizeof(junk));
    write_file(f->path, junk, 21);
    expect_open_fail(f, CK_EFORMAT, "too short");
    write_file(f->path, junk, sizeof(junk));
    expect_open_fail(f, CK_EFORMAT, "no end of central directory");
    /* an end record whose comment length does not reach the end of file */
    write_abc(f);
    size = file_size(f->fd);
    patch16(f->path, size - 2, 5);
    expect_open_fail(f, CK_EFORMAT, "no end of central directory");
    /* ... and one that does: a comment is fine */
    patch(f->path, size, "hello", 5);
    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(f->z.n, 3);
}

static void test_bad_cd_bounds(void **state)
{
    fx_t *f = *state;
    uint64_t size, eocd64, eocd;

    write_abc(f);
    size = file_size(f->fd);
    eocd64 = size - 98;
    eocd = size - 22;
    /* the directory starts past the zip64 end record */
    patch64(f->path, eocd64 + 48, eocd64 + 1);
    patch32(f->path, eocd + 16, 0xffffffffu);
    expect_open_fail(f, CK_EFORMAT, "central directory out of bounds");
    /* the directory runs past it */
    write_abc(f);
    patch64(f->path, eocd64 + 40, f->z.cd_size + 1);
    patch32(f->path, eocd + 12, 0xffffffffu);
    expect_open_fail(f, CK_EFORMAT, "central directory out of bounds");
    /* classic and zip64 records disagree */
    write_abc(f);
    patch32(f->path, eocd + 16, (uint32_t)f->z.cd_off + 1);
    expect_open_fail(f, CK_EFORMAT, "disagree");
    write_abc(f);
    patch16(f->path, eocd + 10, 2);
    patch16(f->path, eocd + 8, 2);
    expect_open_fail(f, CK_EFORMAT, "disagree");
    /* more entries than the directory can hold */
    write_abc(f);
    patch64(f->path, eocd64 + 32, 1000);
    patch64(f->path, eocd64 + 24, 1000);
    patch16(f->path, eocd + 10, 0xffff);
    patch16(f->path, eocd + 8, 0xffff);
    expect_open_fail(f, CK_EFORMAT, "entries in");
    /* the zip64 locator points nowhere */
    write_abc(f);
    patch64(f->path, size - 22 - 20 + 8, size);
    expect_open_fail(f, CK_EFORMAT, "zip64");
    write_abc(f);
    patch64(f->path, size - 22 - 20 + 8, 0);
    expect_open_fail(f, CK_EFORMAT, "zip64 end record");
    /* multi-disk */
    write_abc(f);
    patch16(f->path, eocd + 4, 1);
    expect_open_fail(f, CK_EFORMAT, "multi-disk");
    write_abc(f);
    patch16(f->path, eocd + 8, 2);
    expect_open_fail(f, CK_EFORMAT, "multi-disk");
    /* a bad central entry signature */
    write_abc(f);
    patch32(f->path, cd_entry(&f->z, 1), 0x12345678u);
    expect_open_fail(f, CK_EFORMAT, "bad central directory entry 1");
    /* an empty archive */
    write_zip(f->path, NULL, 0);
    expect_open_fail(f, CK_EFORMAT, "empty archive");
}

static void test_bad_names(void **state)
{
    fx_t *f = *state;
    static const char *const bad[] = {
        "../evil", "z/../../evil", "/etc/passwd", "z/..", "..", ".", "z/./a",
        "a\\b", "z/\x01" "a", "z/\x7f", "z/\xff", "z/\xc3", "z/\xc3(", "",
    };
    static const char *const good[] = {
        "z/a..b", "z/.hidden", "z/..a", "z/caf\xc3\xa9", "z/dir/",
    };

    for (size_t i = 0; i < CK_ARRAY_SIZE(bad); i++) {
        rec_t r[2] = { { "z/ok", (const uint8_t *)"x", 1 },
                       { bad[i], (const uint8_t *)"y", 1 } };

        write_zip(f->path, r, 2);
        expect_open_fail(f, CK_EFORMAT, "unsafe entry name");
    }
    for (size_t i = 0; i < CK_ARRAY_SIZE(good); i++) {
        rec_t r[1] = { { good[i], (const uint8_t *)"y", 1 } };

        write_zip(f->path, r, 1);
        assert_int_equal(open_zip(f, f->path), 0);
        assert_string_equal(f->z.e[0].name, good[i]);
    }
}

static void test_bad_duplicate(void **state)
{
    fx_t *f = *state;

    write_abc(f);
    /* the third record renamed z/a1, in both headers */
    patch(f->path, f->z.e[2].lho + 30, "z/a1", 4);
    patch(f->path, cd_entry(&f->z, 2) + 46, "z/a1", 4);
    expect_open_fail(f, CK_EFORMAT, "duplicate entry z/a1");
}

/* miniz refuses an entry on another disk ("unsupported multidisk"): so
 * does ckprep, found by tests/hostile/diff_harness.py */
static void test_bad_entry_disk(void **state)
{
    fx_t *f = *state;

    write_abc(f);
    patch16(f->path, cd_entry(&f->z, 1) + 34, 0x0100);
    expect_open_fail(f, CK_EFORMAT, "multi-disk archive (entry 1)");
}

/* Records named by number, as torch names storages, with extra names. */
static void write_numbered(fx_t *f, const char *const *extra, size_t nextra)
{
    int fd = open(f->path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    ck_zipw_t w;
    char name[32];

    assert_true(fd >= 0);
    ck_zipw_init(&w, fd);
    for (size_t i = 0; i < 300 + nextra; i++) {
        if (i < 300)
            snprintf(name, sizeof(name), "t/data/%zu", i);
        assert_int_equal(ck_zipw_begin(&w, i < 300 ? name : extra[i - 300], 1,
                                       &f->err),
                         0);
        assert_int_equal(ck_zipw_data(&w, "x", 1, &f->err), 0);
        assert_int_equal(ck_zipw_end(&w, &f->err), 0);
    }
    assert_int_equal(ck_zipw_finish(&w, &f->err), 0);
    ck_zipw_release(&w);
    close(fd);
}

/*
 * The records named by number meet their twins through the number: an
 * exact one, one in another case (before them or after), one folding to
 * the same folder; a leading zero or a number past the records' count is
 * another name, met by hash.
 */
static void test_numbered_twins(void **state)
{
    static const char *const fine[] = { "t/data/05", "t/data/999999",
                                        "t/data.pkl", "t/data/5x", "u/data/5" };
    static const struct {
        const char *extra, *what;
    } bad[] = {
        { "t/data/5", "duplicate entry t/data/5" },
        { "t/DATA/5", "entries t/DATA/5 and t/data/5 differ only in case" },
        { "T/data/299", "differ only in case" },
        { "t/data/999999", "duplicate entry t/data/999999" },
    };
    fx_t *f = *state;

    write_numbered(f, fine, CK_ARRAY_SIZE(fine));
    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(f->z.n, 300 + CK_ARRAY_SIZE(fine));
    for (size_t i = 0; i < CK_ARRAY_SIZE(bad); i++) {
        const char *two[2] = { "t/data/999999", bad[i].extra };

        write_numbered(f, two + (i < 3), i < 3 ? 1 : 2);
        expect_open_fail(f, CK_EFORMAT, bad[i].what);
    }
}

/*
 * A torch archive's records TOP/data/N come out of ck_zip_open_numbered as
 * a table, its other entries kept (open_zip checks both against the plain
 * open); another layout is declined and the plain open reads it as it is:
 * a name in data/ not a number as torch writes it, the first entry in
 * data/, a number past the table's limit, a deflated record, a directory
 * not in the order of the data.  Twins it declines, the plain open names.
 */
static void test_numbered_open(void **state)
{
    static const struct {
        const char *name; /* in place of archive/data/1 */
        int taken;
    } alt[] = {
        { "archive/data/1", 1 },      { "archive/data/7", 1 },
        { "archive/data/x", 0 },      { "archive/data/01", 0 },
        { "archive/data/", 0 },       { "archive/data/551", 1 },
        { "archive/data/552", 0 },    { "archive/data/1/2", 0 },
        { "archive/Data/1", 1 },      { "other/data/1", 1 },
    };
    static const struct {
        const char *name, *what; /* a sixth entry, and the plain open's */
    } twin[] = {
        { "archive/data/1", "duplicate entry archive/data/1" },
        { "ARCHIVE/data/0", "differ only in case" },
        { "archive/DATA.pkl", "differ only in case" },
        { "archive/version", "duplicate entry archive/version" },
    };
    fx_t *f = *state;
    sample_t s;
    rec_t r[6];
    uint8_t a[60], b[60];
    uint64_t off2, off3;

    sample_init(&s);
    memcpy(r, s.r, sizeof(s.r));
    write_zip(f->path, r, 5);
    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(f->nrc, 0);
    for (size_t i = 0; i < CK_ARRAY_SIZE(alt); i++) {
        r[3].name = alt[i].name;
        write_zip(f->path, r, 5);
        assert_int_equal(open_zip(f, f->path), 0);
        if (f->nrc != !alt[i].taken)
            fail_msg("%s: ck_zip_open_numbered gave %d", alt[i].name, f->nrc);
    }
    /* the first entry in data/ (ckpt.c finds the top folder from it) */
    r[0] = s.r[2];
    r[2] = s.r[0];
    r[3] = s.r[3];
    write_zip(f->path, r, 5);
    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(f->nrc, 1);
    /* twins: declined, and named by the plain open */
    memcpy(r, s.r, sizeof(s.r));
    r[5] = (rec_t){ NULL, (const uint8_t *)"", 0 };
    for (size_t i = 0; i < CK_ARRAY_SIZE(twin); i++) {
        r[5].name = twin[i].name;
        write_zip(f->path, r, 6);
        expect_open_fail(f, CK_EFORMAT, twin[i].what);
        assert_int_equal(f->nrc, 1);
    }
    /* the kept twin before the record it folds to */
    r[5] = r[4];
    r[4] = r[3];
    r[3] = r[2];
    r[2] = (rec_t){ "Archive/data/1", (const uint8_t *)"", 0 };
    write_zip(f->path, r, 6);
    expect_open_fail(f, CK_EFORMAT, "differ only in case");
    assert_int_equal(f->nrc, 1);
    /* data/0 and data/1 listed the other way round (names of one length):
     * the plain open sorts them by their data */
    write_zip(f->path, s.r, 5);
    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(f->nrc, 0);
    off2 = cd_entry(&f->z, 2);
    off3 = cd_entry(&f->z, 3);
    assert_int_equal(off3 - off2, 46 + 14);
    assert_int_equal(ck_pread_full(f->fd, a, 60, off2), 0);
    assert_int_equal(ck_pread_full(f->fd, b, 60, off3), 0);
    patch(f->path, off2, b, 60);
    patch(f->path, off3, a, 60);
    assert_int_equal(open_zip(f, f->path), 0);
    assert_string_equal(f->z.e[2].name, "archive/data/1");
    assert_int_equal(f->nrc, 1);
    /* a deflated record (Python's zipfile; torch stores them) */
    assert_int_equal(run_python(f, "import zipfile, sys\n"
                                "z = zipfile.ZipFile(sys.argv[1], 'w')\n"
                                "z.writestr('archive/data.pkl', b'p')\n"
                                "z.writestr('archive/data/0', b'0' * 999)\n"
                                "z.writestr('archive/data/1', b'1' * 999,\n"
                                "           zipfile.ZIP_DEFLATED)\n"
                                "z.close()\n", f->path),
                     0);
    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(f->nrc, 1);
    sample_release(&s);
}

/*
 * The read window grows while requests go on through the file (16 KiB,
 * twice that at each read up to its most, its buffer with it), goes back
 * to 16 KiB after a jump back or past a read's length, and always hands
 * out the file's bytes; a buffer of a fixed size (max 0) never grows.
 */
static void test_rwin_steps(void **state)
{
    fx_t *f = *state;
    enum { SIZE = 4 << 20 };
    uint8_t *data = pattern(SIZE, 9);
    ck_rwin_t w = { .cap = 16 << 10, .max = 256 << 10 };
    const uint8_t *p;
    size_t steps[8], nsteps = 0, last = 0;
    uint64_t off;
    int fd, rc = 0;

    write_file(f->path, data, SIZE);
    fd = open(f->path, O_RDONLY);
    assert_true(fd >= 0);
    /* 100 bytes every 1000: a scan */
    for (off = 0; off + 100 <= (1u << 20); off += 1000) {
        p = ck_rwin_get(&w, fd, off, 100, SIZE, &rc);
        assert_non_null(p);
        assert_memory_equal(p, data + off, 100);
        assert_true(w.len <= w.cap);
        if (w.step != last && nsteps < 8)
            steps[nsteps++] = last = w.step;
    }
    assert_int_equal(nsteps, 5);
    assert_int_equal(steps[0], 16 << 10);
    assert_int_equal(steps[4], 256 << 10);
    assert_int_equal(w.len, 256 << 10);
    assert_int_equal(w.cap, 256 << 10); /* the buffer grew with them */
    /* far on: the least again; then back: the least */
    p = ck_rwin_get(&w, fd, 3u << 20, 10, SIZE, &rc);
    assert_non_null(p);
    assert_memory_equal(p, data + (3u << 20), 10);
    assert_int_equal(w.len, 16 << 10);
    p = ck_rwin_get(&w, fd, (3u << 20) + (16 << 10), 10, SIZE, &rc);
    assert_non_null(p);
    assert_int_equal(w.len, 32 << 10);
    p = ck_rwin_get(&w, fd, 5, 10, SIZE, &rc);
    assert_non_null(p);
    assert_memory_equal(p, data + 5, 10);
    assert_int_equal(w.len, 16 << 10);
    /* a request of more than a step is read whole; the limit stops it */
    p = ck_rwin_get(&w, fd, 1u << 20, 100000, SIZE, &rc);
    assert_non_null(p);
    assert_memory_equal(p, data + (1u << 20), 100000);
    p = ck_rwin_get(&w, fd, SIZE - 50, 10, SIZE - 20, &rc);
    assert_non_null(p);
    assert_int_equal(w.len, 30);
    assert_null(ck_rwin_get(&w, fd, SIZE - 5, 10, SIZE, &rc));
    assert_int_equal(rc, -EIO);
    /* no limit but the file's end: a short read that holds the request,
     * and one that does not */
    p = ck_rwin_get(&w, fd, SIZE - 100, 50, UINT64_MAX, &rc);
    assert_non_null(p);
    assert_memory_equal(p, data + SIZE - 100, 50);
    assert_int_equal(w.len, 100);
    assert_null(ck_rwin_get(&w, fd, SIZE - 10, 20, UINT64_MAX, &rc));
    assert_int_equal(rc, -EIO);
    /* grown, then another descriptor: the least again */
    for (off = 0; off < (200u << 10); off += 1000)
        assert_non_null(ck_rwin_get(&w, fd, off, 100, SIZE, &rc));
    assert_true(w.step > (16u << 10));
    {
        int fd2 = open(f->path, O_RDONLY);

        assert_true(fd2 >= 0);
        p = ck_rwin_get(&w, fd2, 300000, 10, SIZE, &rc);
        assert_non_null(p);
        assert_memory_equal(p, data + 300000, 10);
        assert_int_equal(w.len, 16 << 10);
        close(fd2);
    }
    ck_rwin_release(&w);
    {
        /* a window smaller than a step (ck_zip_first's, on the stack):
         * never more read than it holds, a request of all of it served */
        uint8_t head[542];
        ck_rwin_t sw = { .buf = head, .cap = sizeof(head), .fd = fd };

        for (off = 0; off < 20000; off += 100) {
            p = ck_rwin_get(&sw, fd, off, 30, SIZE, &rc);
            assert_non_null(p);
            assert_memory_equal(p, data + off, 30);
            assert_true(sw.len <= sizeof(head));
        }
        p = ck_rwin_get(&sw, fd, 7, sizeof(head), SIZE, &rc);
        assert_non_null(p);
        assert_memory_equal(p, data + 7, sizeof(head));
        assert_null(ck_rwin_get(&sw, fd, 7, sizeof(head) + 1, SIZE, &rc));
        assert_int_equal(rc, -EIO);
    }
    close(fd);
    free(data);
}

/* miniz, torch's reader, finds names ignoring case: twins are refused */
static void test_bad_case_twin(void **state)
{
    fx_t *f = *state;

    write_abc(f);
    patch(f->path, f->z.e[2].lho + 30, "Z/A1", 4);
    patch(f->path, cd_entry(&f->z, 2) + 46, "Z/A1", 4);
    expect_open_fail(f, CK_EFORMAT, "differ only in case");
    write_abc(f);
    patch(f->path, f->z.e[2].lho + 30, "z/A1", 4);
    patch(f->path, cd_entry(&f->z, 2) + 46, "z/A1", 4);
    expect_open_fail(f, CK_EFORMAT, "differ only in case");
}

static void test_bad_flags_and_method(void **state)
{
    fx_t *f = *state;

    write_abc(f);
    patch16(f->path, cd_entry(&f->z, 1) + 8, 0x0001);
    expect_open_fail(f, CK_EUNSUPPORTED, "z/a2: encrypted");
    write_abc(f);
    patch16(f->path, cd_entry(&f->z, 1) + 8, 0x0040);
    expect_open_fail(f, CK_EUNSUPPORTED, "encrypted");
    /* other flags (data descriptor, UTF-8 names) are fine */
    write_abc(f);
    patch16(f->path, cd_entry(&f->z, 1) + 8, 0x0808);
    assert_int_equal(open_zip(f, f->path), 0);
    assert_int_equal(f->z.e[1].flags, 0x0808);
    write_abc(f);
    patch16(f->path, cd_entry(&f->z, 0) + 10, 12);
    expect_open_fail(f, CK_EUNSUPPORTED, "compression method 12");
    write_abc(f);
    patch16(f->path, cd_entry(&f->z, 0) + 10, 14);
    expect_open_fail(f, CK_EUNSUPPORTED, "compression method 14");
    /* a stored entry whose two sizes differ */
    write_abc(f);
    patch32(f->path, cd_entry(&f->z, 0) + 20, 11);
    expect_open_fail(f, CK_EFORMAT, "two sizes");
}

static void test_bad_overlap(void **state)
{
    fx_t *f = *state;
    uint64_t cd;

    write_abc(f);
    /* the first record claims bytes of the second */
    cd = cd_entry(&f->z, 0);
    patch32(f->path, cd + 20, 100);
    patch32(f->path, cd + 24, 100);
    expect_open_fail(f, CK_EFORMAT, "overlap");
    /* two directory entries naming one local header */
    write_abc(f);
    cd = cd_entry(&f->z, 2);
    patch32(f->path, cd + 42, (uint32_t)f->z.e[1].lho);
    patch(f->path, cd + 46, "z/a2", 4);
    patch32(f->path, cd + 20, 13);
    patch32(f->path, cd + 24, 13);
    expect_open_fail(f, CK_EFORMAT, NULL);
    /* data declared past the central directory */
    write_abc(f);
    cd = cd_entry(&f->z, 2);
    patch32(f->path, cd + 20, 500);
    patch32(f->path, cd + 24, 500);
    expect_open_fail(f, CK_EFORMAT, "past the end of data");
}

static void test_bad_local_header(void **state)
{
    fx_t *f = *state;

    /* name differs between local and central header */
    write_abc(f);
    patch(f->path, f->z.e[1].lho + 30 + 3, "9", 1);
    expect_open_fail(f, CK_EFORMAT, "z/a2: local and central headers disagree");
    /* name length differs */
    write_abc(f);
    patch16(f->path, f->z.e[1].lho + 26, 3);
    expect_open_fail(f, CK_EFORMAT, "disagree");
    /* method differs */
    write_abc(f);
    patch16(f->path, f->z.e[1].lho + 8, 8);
    expect_open_fail(f, CK_EFORMAT, "disagree");
    /* not a local header */
    write_abc(f);
    patch32(f->path, f->z.e[1].lho, 0x04034b51u);
    expect_open_fail(f, CK_EFORMAT, "bad local header");
    /* local header offset into the central directory */
    write_abc(f);
    patch32(f->path, cd_entry(&f->z, 1) + 42, (uint32_t)f->z.cd_off);
    expect_open_fail(f, CK_EFORMAT, "local header out of bounds");
    write_abc(f);
    patch32(f->path, cd_entry(&f->z, 1) + 42, 0x7fffffffu);
    expect_open_fail(f, CK_EFORMAT, "local header out of bounds");
    /* an extra field running into the central directory */
    write_abc(f);
    patch16(f->path, f->z.e[2].lho + 28, 0xfff0);
    expect_open_fail(f, CK_EFORMAT, "disagree");
}

static void test_bad_zip64_extra(void **state)
{
    fx_t *f = *state;
    uint64_t cd;

    /* sizes saturated in the central directory without a zip64 extra */
    write_abc(f);
    cd = cd_entry(&f->z, 0);
    patch32(f->path, cd + 20, 0xffffffffu);
    patch32(f->path, cd + 24, 0xffffffffu);
    expect_open_fail(f, CK_EFORMAT, "zip64 extra");
    write_abc(f);
    patch32(f->path, cd_entry(&f->z, 2) + 42, 0xffffffffu);
    expect_open_fail(f, CK_EFORMAT, "zip64 extra");
}

/* A pipe is widened to 1 MiB; anything else is left alone. */
static void test_pipe_widen(void **state)
{
    fx_t *f = *state;
    int p[2], fd;

    assert_int_equal(pipe(p), 0);
    assert_int_equal(fcntl(p[1], F_SETPIPE_SZ, 65536), 65536);
    ck_pipe_widen(p[1]);
    assert_int_equal(fcntl(p[0], F_GETPIPE_SZ), 1 << 20);
    close(p[0]);
    close(p[1]);
    fd = open(f->path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    ck_pipe_widen(fd);
    assert_int_equal(file_size(fd), 0);
    close(fd);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_roundtrip),
        T(test_end_records),
        T(test_alignment),
        T(test_python_reads_ours),
        T(test_many_entries),
        T(test_writer_names),
        T(test_cd_window),
        T(test_size_later),
        T(test_writer_gives_way),
        T(test_reads_python_stored),
        T(test_deflated_read),
        T(test_deflated_copy),
        T(test_deflated_corrupt),
        T(test_copy_computes_crc),
        T(test_writer_misuse),
        T(test_writer_misuse_no_record),
        T(test_writer_oom),
        T(test_reader_oom),
        T(test_bad_truncated),
        T(test_bad_no_eocd),
        T(test_bad_cd_bounds),
        T(test_bad_names),
        T(test_bad_duplicate),
        T(test_bad_case_twin),
        T(test_numbered_twins),
        T(test_numbered_open),
        T(test_rwin_steps),
        T(test_bad_entry_disk),
        T(test_bad_flags_and_method),
        T(test_bad_overlap),
        T(test_bad_local_header),
        T(test_bad_zip64_extra),
        T(test_pipe_widen),
    };
#undef T

    return cmocka_run_group_tests(tests, NULL, NULL);
}
