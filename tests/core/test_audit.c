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
#include <pthread.h>
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
static int line_cb(void *ud, const char *line, size_t n, uint64_t at)
{
    fx_t *f = ud;

    (void)at;

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

/* Another daemon cutting the torn last line (its open) while this one
 * reads the log without the lock: the cut comes at the first line. */
typedef struct {
    const char *path;
    off_t cut_to;
    int lines;
} cut_fx_t;

static int cut_cb(void *ud, const char *line, size_t n, uint64_t at)
{
    cut_fx_t *c = ud;

    (void)line, (void)n, (void)at;
    if (c->lines++ == 0)
        assert_int_equal(truncate(c->path, c->cut_to), 0);
    return 0;
}

/*
 * A torn last line of 20 KB (pages of it past the last newline) cut by
 * another daemon while the log is read: the read maps the log only up to
 * its last newline, so it finds the complete lines and no SIGBUS (which a
 * mapping of the whole file gets, reading pages now past its end).
 */
static void test_torn_tail_cut_while_read(void **state)
{
    fx_t *f = *state;
    static const char *const lines[] = { "{\"seq\":1,\"status\":\"ok\"}\n",
                                         "{\"seq\":2,\"status\":\"ok\"}\n",
                                         "{\"seq\":3,\"status\":\"ok\"}\n" };
    cut_fx_t c = { f->path, 0, 0 };
    ck_audit_t a;
    ck_err_t e = { 0 };
    struct stat sb;
    FILE *out = fopen(f->path, "w");

    assert_non_null(out);
    for (size_t i = 0; i < CK_ARRAY_SIZE(lines); i++) {
        fputs(lines[i], out);
        c.cut_to += (off_t)strlen(lines[i]);
    }
    fputs("{\"seq\":4,\"status\":\"", out);
    for (int i = 0; i < 20000; i++)
        fputc('x', out);
    assert_int_equal(fclose(out), 0);

    assert_int_equal(ck_audit_open(&a, f->path, cut_cb, &c, &e), 0);
    assert_int_equal(c.lines, 3);
    assert_true(a.seq == 3);
    assert_true(a.torn_bytes == 0);     /* cut already */
    assert_int_equal(stat(f->path, &sb), 0);
    assert_int_equal(sb.st_size, c.cut_to);
    ck_audit_close(&a);
}

/* What one half of a log read in two got: each line's seq, in order, the
 * thread it came on, and lines whose offset did not name them. */
typedef struct {
    int fd;                 /* the log, to check offsets against */
    uint64_t *seq;
    size_t n, cap, misplaced;
    pthread_t thread;
    int threads;            /* 1, or 2 when lines came on two threads */
} half_fx_t;

static int half_cb(void *ud, const char *line, size_t n, uint64_t at)
{
    half_fx_t *h = ud;
    char head[32], text[200];
    unsigned long long seq;

    if (h->n == 0)
        h->thread = pthread_self();
    else if (!pthread_equal(h->thread, pthread_self()))
        h->threads = 2;
    if (pread(h->fd, head, sizeof(head), (off_t)at) != (ssize_t)sizeof(head) ||
        memcmp(head, line, n < sizeof(head) ? n : sizeof(head)) != 0)
        h->misplaced++;
    if (n >= sizeof(text))
        return CK_EFORMAT;
    memcpy(text, line, n);      /* (the line is not NUL-terminated) */
    text[n] = '\0';
    if (sscanf(text, "{\"seq\":%llu,", &seq) != 1)
        return CK_EFORMAT;
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 1024;
        h->seq = realloc(h->seq, h->cap * sizeof(*h->seq));
        assert_non_null(h->seq);
    }
    h->seq[h->n++] = seq;
    return strstr(text, "\"status\"") ? 0 : CK_EFORMAT;
}

/*
 * A log of 8 MiB and more is read in two halves at once (ck_audit_open2):
 * every line once, the first half's to the first callback and the rest to
 * the second, on two threads, each in order and at its offset; seq the
 * last line's, lines refused in either half counted, a torn last line cut.
 * A small log goes to the first alone.
 */
static void test_read_in_halves(void **state)
{
    fx_t *f = *state;
    half_fx_t one = { 0 }, two = { 0 };
    ck_audit_t a;
    ck_err_t e = { 0 };
    const size_t nlines = 100000;
    size_t refused = 0;
    char line[160];
    FILE *out = fopen(f->path, "w");

    assert_non_null(out);
    for (size_t i = 1; i <= nlines; i++) {
        /* a line in a thousand without "status": refused by half_cb */
        refused += i % 1000 == 7;
        fprintf(out, "{\"seq\":%zu,\"host\":\"h\",\"%s\":\"ok\",\"pad\":"
                "\"%0*d\"}\n", i, i % 1000 == 7 ? "other" : "status",
                (int)(i % 101), 0);
    }
    fputs("{\"seq\":100001,\"host\":\"h\",\"sta", out);  /* torn */
    assert_int_equal(fclose(out), 0);
    {
        struct stat sb;

        assert_int_equal(stat(f->path, &sb), 0);
        assert_true(sb.st_size >= 8 << 20);
    }
    one.fd = two.fd = open(f->path, O_RDONLY);
    assert_true(one.fd >= 0);

    assert_int_equal(ck_audit_open2(&a, f->path, half_cb, &one, &two, &e), 0);
    assert_true(one.n > 0 && two.n > 0);
    assert_int_equal(one.n + two.n, nlines);
    for (size_t i = 0; i < one.n; i++)
        assert_true(one.seq[i] == i + 1);
    for (size_t i = 0; i < two.n; i++)
        assert_true(two.seq[i] == one.n + i + 1);
    assert_true(one.n > nlines / 3 && two.n > nlines / 3); /* about halves */
    assert_false(pthread_equal(one.thread, two.thread));
    assert_true(one.threads != 2 && two.threads != 2);
    assert_true(one.misplaced == 0 && two.misplaced == 0);
    assert_true(a.seq == nlines);
    assert_true(a.bad_lines == refused);
    assert_true(a.torn_bytes == strlen("{\"seq\":100001,\"host\":\"h\",\"sta"));
    ck_audit_close(&a);
    close(one.fd);

    /* a small log: no second half */
    free(one.seq);
    free(two.seq);
    memset(&one, 0, sizeof(one));
    memset(&two, 0, sizeof(two));
    out = fopen(f->path, "w");
    assert_non_null(out);
    for (int i = 1; i <= 1000; i++) {
        snprintf(line, sizeof(line), "{\"seq\":%d,\"status\":\"ok\"}\n", i);
        fputs(line, out);
    }
    assert_int_equal(fclose(out), 0);
    one.fd = two.fd = open(f->path, O_RDONLY);
    assert_int_equal(ck_audit_open2(&a, f->path, half_cb, &one, &two, &e), 0);
    assert_true(one.n == 1000 && two.n == 0);
    assert_true(a.seq == 1000);
    ck_audit_close(&a);
    close(one.fd);
    free(one.seq);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_append_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_line_cut, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seq_from_other_writer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_read_in_halves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_cut_while_read, setup,
                                        teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
