/*
 * zipcheck.c -- libzip as a second, independent reader of ckprep's output.
 *
 *   zipcheck FILE...
 *
 * Opens each FILE with zip_open(ZIP_CHECKCONS | ZIP_RDONLY), so libzip
 * checks the central directory against the local headers, then reads every
 * record to its end with zip_fopen_index/zip_fread, so libzip checks each
 * record's CRC-32 and size.  For each record it prints one line:
 *
 *   SIZE CRC NAME
 *
 * SIZE in decimal, CRC as 8 hex digits, NAME the raw bytes of the name with
 * control characters, backslash, DEL and bytes above 0x7f written as \xNN,
 * so a name from the file never reaches a terminal raw.  On the first
 * problem it prints "zipcheck: FILE: MESSAGE" (libzip's message, and the
 * record when there is one) on stderr and exits 1; 2 on a usage error.
 *
 * This file is built against libzip only, never against core/ (whose zip.h
 * would shadow libzip's): the point is a reader that shares no code with
 * ckprep.
 */
#include <zip.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { BUF_SIZE = 1 << 16 };

static void put_name(FILE *f, const char *name)
{
    const unsigned char *p;

    for (p = (const unsigned char *)name; *p != '\0'; p++) {
        if (*p < 0x20 || *p == '\\' || *p >= 0x7f)
            fprintf(f, "\\x%02x", *p);
        else
            putc(*p, f);
    }
}

/* "zipcheck: PATH: NAME: " for a message about a record. */
static void record_prefix(const char *path, const zip_stat_t *st)
{
    fprintf(stderr, "zipcheck: %s: ", path);
    put_name(stderr, st->name);
    fputs(": ", stderr);
}

/* Reads record i of za to its end; 0, or -1 with the message printed. */
static int read_record(const char *path, zip_t *za, zip_uint64_t i,
                       unsigned char *buf)
{
    zip_stat_t st;
    zip_file_t *zf = NULL;
    zip_int64_t n;
    zip_uint64_t total = 0;
    int rc = -1;

    zip_stat_init(&st);
    if (zip_stat_index(za, i, ZIP_FL_ENC_RAW, &st) < 0) {
        fprintf(stderr, "zipcheck: %s: record %" PRIu64 ": %s\n", path, i,
                zip_strerror(za));
        goto out;
    }
    zf = zip_fopen_index(za, i, 0);
    if (zf == NULL) {
        record_prefix(path, &st);
        fprintf(stderr, "open: %s\n", zip_strerror(za));
        goto out;
    }
    for (;;) {
        n = zip_fread(zf, buf, BUF_SIZE);
        if (n < 0) {
            record_prefix(path, &st);
            fprintf(stderr, "read: %s\n", zip_file_strerror(zf));
            goto out;
        }
        if (n == 0)
            break;
        total += (zip_uint64_t)n;
    }
    if (total != st.size) {
        record_prefix(path, &st);
        fprintf(stderr,
                "read %" PRIu64 " bytes, central directory says %" PRIu64 "\n",
                total, st.size);
        goto out;
    }
    printf("%" PRIu64 " %08" PRIx32 " ", st.size, st.crc);
    put_name(stdout, st.name);
    putchar('\n');
    rc = 0;
out:
    if (zf != NULL && zip_fclose(zf) != 0 && rc == 0) {
        record_prefix(path, &st);
        fputs("close failed\n", stderr);
        rc = -1;
    }
    return rc;
}

static int check_file(const char *path, unsigned char *buf)
{
    zip_t *za;
    zip_error_t ze;
    zip_int64_t n, i;
    int err = 0, rc = -1;

    za = zip_open(path, ZIP_CHECKCONS | ZIP_RDONLY, &err);
    if (za == NULL) {
        zip_error_init_with_code(&ze, err);
        fprintf(stderr, "zipcheck: %s: open: %s\n", path,
                zip_error_strerror(&ze));
        zip_error_fini(&ze);
        goto out;
    }
    n = zip_get_num_entries(za, 0);
    if (n < 0) {
        fprintf(stderr, "zipcheck: %s: %s\n", path, zip_strerror(za));
        goto out;
    }
    for (i = 0; i < n; i++) {
        if (read_record(path, za, (zip_uint64_t)i, buf) < 0)
            goto out;
    }
    rc = 0;
out:
    if (za != NULL)
        zip_discard(za);
    return rc;
}

int main(int argc, char **argv)
{
    unsigned char *buf;
    int i, rc = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: zipcheck FILE...\n");
        return 2;
    }
    buf = malloc(BUF_SIZE);
    if (buf == NULL) {
        fprintf(stderr, "zipcheck: out of memory\n");
        return 1;
    }
    for (i = 1; i < argc && rc == 0; i++) {
        if (check_file(argv[i], buf) < 0)
            rc = 1;
    }
    free(buf);
    if (fflush(stdout) != 0)
        rc = 1;
    return rc;
}
