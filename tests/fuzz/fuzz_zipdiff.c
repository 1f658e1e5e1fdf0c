/*
 * fuzz_zipdiff.c -- differential libFuzzer target: ckprep's zip reader
 * (core/zip.c) against libzip, an independent one, on the same bytes.
 *
 * Where both accept the archive (libzip opened with ZIP_CHECKCONS, so it
 * checks local headers against the central directory), they must agree on
 * the number of entries and, entry by entry in central-directory order, on
 * the raw name, the sizes, the CRC-32 and -- for entries up to 1 MiB -- the
 * bytes read back.  Any disagreement aborts: it is a file two readers see
 * differently, the kind of hole a checkpoint scanner must not have.  Names
 * that differ only in case are also checked: ckprep must have refused them
 * (torch's miniz looks names up ignoring case).
 *
 * And ckprep's one-pass reader of torch's layout (ck_zip_open_numbered)
 * against its plain one: it declines whatever the plain one refuses, and
 * what it takes the plain one takes, each entry kept alike or in its table
 * by number with the same place, size and CRC-32.
 */
#define _GNU_SOURCE
#include "zip.h" /* ckprep's; <zip.h> is libzip's (-iquote core) */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zip.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_READ (1u << 20)

static void disagree(const char *what, size_t i)
{
    fprintf(stderr, "fuzz_zipdiff: readers disagree on %s of entry %zu\n",
            what, i);
    abort();
}

static int libzip_read(zip_t *za, zip_uint64_t i, uint8_t *buf, size_t n)
{
    zip_file_t *zf = zip_fopen_index(za, i, 0);
    zip_int64_t got;

    if (zf == NULL)
        return -1;
    got = zip_fread(zf, buf, n);
    zip_fclose(zf);
    return got == (zip_int64_t)n ? 0 : -1;
}

static void compare(int fd, ck_zip_t *z, zip_t *za)
{
    for (size_t i = 0; i < z->n; i++) {
        const ck_zip_entry_t *e = &z->e[i];
        zip_stat_t st;
        uint8_t *mine = NULL, *theirs;
        ck_err_t err = { 0 };

        zip_stat_init(&st);
        if (zip_stat_index(za, i, ZIP_FL_ENC_RAW, &st) < 0)
            disagree("stat", i);
        if (strcmp(st.name, e->name) != 0)
            disagree("name", i);
        if (st.size != e->usize || st.comp_size != e->csize)
            disagree("sizes", i);
        if (st.crc != e->crc)
            disagree("crc", i);
        for (size_t k = 0; k < i; k++)
            if (strcasecmp(z->e[k].name, e->name) == 0)
                disagree("case-folded name (ckprep accepted twins)", i);
        if (e->usize > MAX_READ)
            continue;
        if (ck_zip_read(fd, e, MAX_READ, &mine, &err) < 0)
            continue; /* a bad CRC or stream: ckprep refuses at read */
        theirs = malloc(e->usize + 1);
        if (theirs == NULL)
            abort();
        if (libzip_read(za, i, theirs, (size_t)e->usize) < 0 ||
            memcmp(mine, theirs, (size_t)e->usize) != 0)
            disagree("content", i);
        free(theirs);
        ck_free(mine);
    }
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

static void numbered_agrees(int fd, size_t size, int rc, const ck_zip_t *z)
{
    ck_zip_rec_t *recs = NULL;
    size_t nrecs = 0, nset = 0, k = 0;
    const char *top;
    ck_zip_t nz;

    if (ck_zip_open_numbered(fd, size, &nz, &recs, &nrecs) != 0) {
        if (nz.e != NULL || nz.n != 0)
            disagree("a declined open's entries", 0);
        return;
    }
    if (rc != 0)
        disagree("the one-pass open taking a refused archive", 0);
    for (size_t i = 0; i < nrecs; i++)
        nset += recs[i].set;
    if (nz.nrec != z->n || nz.n + nset != z->n || nz.n == 0)
        disagree("the one-pass open's count", 0);
    top = strchr(nz.e[0].name, '/');
    if (top == NULL)
        disagree("the one-pass open's first entry", 0);
    for (size_t i = 0; i < z->n; i++) {
        const ck_zip_entry_t *e = &z->e[i], *x;
        size_t n;

        if (k < nz.n && strcmp(nz.e[k].name, e->name) == 0) {
            x = &nz.e[k++];
            if (x->method != e->method || x->flags != e->flags ||
                x->crc != e->crc || x->csize != e->csize ||
                x->usize != e->usize || x->lho != e->lho ||
                x->data_off != e->data_off)
                disagree("a kept entry of the one-pass open", i);
            continue;
        }
        /* a numbered record: TOP/data/N, TOP the first entry's folder */
        if (strncmp(e->name, nz.e[0].name, (size_t)(top - nz.e[0].name) + 1) ||
            strncmp(e->name + (top - nz.e[0].name) + 1, "data/", 5))
            disagree("a numbered record's folder", i);
        n = tail_number(e->name);
        if (n >= nrecs || !recs[n].set || recs[n].off != e->data_off ||
            recs[n].usize != e->usize || recs[n].crc != e->crc ||
            e->method != 0)
            disagree("a numbered record of the one-pass open", i);
    }
    if (k != nz.n)
        disagree("the one-pass open's kept entries", 0);
    ck_free(nz.e);
    ck_map_free(recs, nrecs * sizeof(*recs));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("zipdiff", MFD_CLOEXEC);
    ck_arena_t arena = { 0 };
    ck_zip_t z;
    ck_err_t err = { 0 };
    zip_source_t *src;
    zip_error_t ze;
    zip_t *za = NULL;
    int rc;

    if (fd < 0)
        abort();
    if (size && write(fd, data, size) != (ssize_t)size)
        abort();
    memset(&z, 0, sizeof(z));
    rc = ck_zip_open(fd, size, &arena, &z, &err);
    numbered_agrees(fd, size, rc, &z);
    if (rc == 0) {
        zip_error_init(&ze);
        src = zip_source_buffer_create(data, size, 0, &ze);
        if (src != NULL) {
            za = zip_open_from_source(src, ZIP_RDONLY | ZIP_CHECKCONS, &ze);
            if (za == NULL)
                zip_source_free(src);
        }
        if (za != NULL) {
            if ((zip_uint64_t)zip_get_num_entries(za, 0) != z.n)
                disagree("entry count", 0);
            compare(fd, &z, za);
            zip_discard(za);
        }
        zip_error_fini(&ze);
    }
    ck_arena_release(&arena);
    close(fd);
    return 0;
}
