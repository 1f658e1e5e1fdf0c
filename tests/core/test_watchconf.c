/*
 * test_watchconf.c -- the [watch] section as ck_conf_load checks it: each
 * value's own check (with its line), the checks across directives (with
 * the [watch] header's line), folders compared through '..' and symlinks,
 * and the output_name template.
 *
 * Each test works in a fresh temporary folder holding the INI file; folder
 * paths in the files are absolute, under it.
 */
#include "conf.h"
#include "watchconf.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char dir[64];
    char path[128];
    ck_conf_t c;
    ck_err_t err;
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    strcpy(f->dir, "/tmp/ck_test_watchconf.XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/ckprep.ini", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    char cmd[128];

    ck_conf_release(&f->c);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/*
 * Write "[pipeline]\nchain =\n[watch]\n" (the header on line 3) and then
 * the lines of fmt, where each %s is the test's folder, then the required
 * places fmt does not give (in/, out/, failed/, audit.jsonl under the
 * test's folder), and load it.
 */
static int load(fx_t *f, const char *fmt)
{
    static const char *const need[][2] = {
        { "incoming", "in" }, { "output", "out" }, { "failed", "failed" },
        { "audit_log", "audit.jsonl" },
    };
    char text[2048], *o = text;
    FILE *fp;

    o += sprintf(o, "[pipeline]\nchain =\n[watch]\n");
    for (const char *s = fmt; *s != '\0'; s++) {
        if (s[0] == '%' && s[1] == 's') {
            o += sprintf(o, "%s", f->dir);
            s++;
        } else {
            *o++ = *s;
        }
    }
    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
        char key[32];

        snprintf(key, sizeof(key), "%s =", need[i][0]);
        if (strstr(fmt, key) == NULL)
            o += sprintf(o, "%s = %s/%s\n", need[i][0], f->dir, need[i][1]);
    }
    *o = '\0';
    fp = fopen(f->path, "w");
    assert_non_null(fp);
    assert_true(fputs(text, fp) >= 0);
    assert_int_equal(fclose(fp), 0);
    ck_conf_release(&f->c);
    memset(&f->err, 0, sizeof(f->err));
    return ck_conf_load(&f->c, f->path, &f->err);
}

/* The error is CK_ECONFIG, "PATH:LINE: " then the message, which contains
 * what. */
static void assert_conf_error(fx_t *f, int rc, int line, const char *what)
{
    char prefix[192];

    snprintf(prefix, sizeof(prefix), "%s:%d: ", f->path, line);
    assert_int_equal(rc, CK_ECONFIG);
    if (strncmp(f->err.msg, prefix, strlen(prefix)) != 0)
        fail_msg("error '%s' does not start with '%s'", f->err.msg, prefix);
    if (strstr(f->err.msg, what) == NULL)
        fail_msg("error '%s' does not mention '%s'", f->err.msg, what);
}

static void test_defaults(void **state)
{
    fx_t *f = *state;
    const ck_watch_conf_t *w = &f->c.watch;

    assert_int_equal(load(f, "incoming = %s/in\n"), 0);
    assert_int_equal(f->c.watch_line, 3);
    assert_int_equal(w->after, CK_AFTER_KEEP);
    assert_int_equal(w->workers, 2);
    assert_int_equal(w->settle_ms, 1000);
    assert_int_equal(w->recursive, 0);
    assert_string_equal(w->output_name, "{stem}{ext}");
    assert_int_equal(w->include.n, 4);
    assert_int_equal(load(f, "after = delete\n"), 0);
    assert_int_equal(w->after, CK_AFTER_DELETE);
    assert_int_equal(load(f, "after = move\ndone = %s/done\n"), 0);
    assert_int_equal(w->after, CK_AFTER_MOVE);
}

static void test_value_errors(void **state)
{
    fx_t *f = *state;

    assert_conf_error(f, load(f, "settle_ms = 5\nafter = later\n"), 5,
                      "after: 'later' is not keep, move or delete");
    assert_conf_error(f, load(f, "workers = 0\n"), 4,
                      "workers: '0' is not a number from 1 to 64");
    assert_conf_error(f, load(f, "workers = 65\n"), 4,
                      "workers: '65' is not a number from 1 to 64");
    assert_int_equal(load(f, "workers = 64\n"), 0);
    assert_int_equal(f->c.watch.workers, CK_WATCH_MAX_WORKERS);
    assert_conf_error(f, load(f, "output_name = ../{name}\n"), 4,
                      "output_name: '../{name}' does not make a plain file");
    assert_conf_error(f, load(f, "output_name = .{name}\n"), 4,
                      "output_name");
    assert_conf_error(f, load(f, "output_name = {nam}\n"), 4, "output_name");
    assert_conf_error(f, load(f, "recursive = maybe\n"), 4,
                      "recursive: 'maybe' is not yes or no");
    assert_conf_error(f, load(f, "rescan_s = soon\n"), 4,
                      "rescan_s: 'soon' is not a whole number");
    assert_conf_error(f, load(f, "frobnicate = 1\n"), 4,
                      "unknown directive 'frobnicate' in [watch]");
}

/* A [watch] section is for the daemon: check refuses it without its four
 * places, as watch does. */
static void test_required(void **state)
{
    static const char *const texts[][2] = {
        { "incoming = \n", "incoming = DIR is required" },
        { "output = \n", "output = DIR is required" },
        { "failed = \n", "failed = DIR is required" },
        { "audit_log = \n", "audit_log = FILE is required" },
    };
    fx_t *f = *state;

    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        char fmt[64];

        /* "incoming =" given empty is not given: the default is skipped */
        snprintf(fmt, sizeof(fmt), "%s", texts[i][0]);
        assert_conf_error(f, load(f, fmt), 3, texts[i][1]);
    }
}

static void test_after_move_needs_done(void **state)
{
    fx_t *f = *state;

    assert_conf_error(f, load(f, "incoming = %s/in\n\nafter = move\n"), 3,
                      "[watch] after = move needs done = DIR");
}

static void test_apart(void **state)
{
    fx_t *f = *state;

    assert_conf_error(f, load(f, "incoming = %s/in\noutput = %s/in\n"), 3,
                      "[watch] output = ");
    assert_true(strstr(f->err.msg, "/in is incoming: its files would be "
                                   "taken for inputs") != NULL);
    /* through '..', './' and '//' */
    assert_conf_error(f, load(f, "incoming = %s/in\nfailed = %s//x/../in/.\n"),
                      3, "failed = ");
    /* inside it: only an error when recursive */
    assert_int_equal(load(f, "incoming = %s/in\noutput = %s/in/out\n"), 0);
    assert_conf_error(f, load(f, "recursive = yes\nincoming = %s/in\n"
                                 "output = %s/in/out\n"),
                      3, "/in/out is inside incoming");
    /* a sibling whose name starts the same is apart */
    assert_int_equal(load(f, "recursive = yes\nincoming = %s/in\n"
                             "output = %s/in2\n"), 0);
    /* done counts with after = move only */
    assert_int_equal(load(f, "incoming = %s/in\ndone = %s/in\n"), 0);
    assert_conf_error(f, load(f, "incoming = %s/in\nafter = move\n"
                                 "done = %s/in\n"), 3, "done = ");
}

static void test_apart_symlink(void **state)
{
    fx_t *f = *state;
    char in[128], link[128];

    snprintf(in, sizeof(in), "%s/in", f->dir);
    snprintf(link, sizeof(link), "%s/alias", f->dir);
    assert_int_equal(mkdir(in, 0750), 0);
    assert_int_equal(symlink("in", link), 0);
    /* the same folder by another name */
    assert_conf_error(f, load(f, "incoming = %s/in\noutput = %s/alias\n"), 3,
                      "output = ");
    /* inside it, through the link, the output not made yet */
    assert_conf_error(f, load(f, "recursive = yes\nincoming = %s/in\n"
                                 "output = %s/alias/new/out\n"),
                      3, "is inside incoming");
}

static void test_relative(void **state)
{
    fx_t *f = *state;
    char cwd[512];

    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(f->dir), 0);
    assert_conf_error(f, load(f, "incoming = in\noutput = ./in/\n"), 3,
                      "output = ./in/ is incoming");
    assert_conf_error(f, load(f, "incoming = in\noutput = %s/in\n"), 3,
                      "is incoming");
    assert_int_equal(chdir(cwd), 0);
}

static void test_output_name(void **state)
{
    static const struct {
        const char *tmpl, *rel, *out;
    } ok[] = {
        { "{stem}{ext}", "a/b/model.th", "model.th" },
        { "{dir}-{stem}.ft{ext}", "x/y/m.th", "x_y-m.ft.th" },
        { "{dir}-{stem}.ft{ext}", "top.pt", "-top.ft.pt" },
        { "{name}.out", "n.th", "n.th.out" },
        { "{stem}.prep{ext}", "model", "model.prep" },
        { "{stem}{ext}", ".hidden.th", NULL },    /* leading dot */
        { "../{name}", "n.th", NULL },
        { "{bad}", "n.th", NULL },
        { "", "n.th", NULL },
    };
    char out[64];

    for (size_t i = 0; i < CK_ARRAY_SIZE(ok); i++) {
        int rc = ck_watch_output_name(ok[i].tmpl, ok[i].rel, out, sizeof(out));

        if (ok[i].out == NULL) {
            assert_int_equal(rc, CK_ECONFIG);
        } else {
            assert_int_equal(rc, 0);
            assert_string_equal(out, ok[i].out);
        }
    }
    /* too long for out */
    assert_int_equal(ck_watch_output_name("{name}{name}{name}{name}",
                                          "abcdefghijklmnopq", out, 64),
                     CK_ECONFIG);
    (void)state;
}

static void test_output_name_fields(void **state)
{
    ck_watch_name_vars_t v = { 42, 1796292410038155803LL, 1796256000LL,
                               "8f56f82e4f604c99" };
    char out[128];

    assert_int_equal(ck_watch_output_name_v("{stem}-{seq}-{mtime}-{date}-"
                                            "{fingerprint8}{ext}", "a/m.th",
                                            &v, out, sizeof(out)), 0);
    assert_string_equal(out, "m-42-20261203T100650-20261203-8f56f82e.th");
    assert_int_equal(ck_watch_output_name_v("{stem}-{seq}{ext}", "m.th", NULL,
                                            out, sizeof(out)), 0);
    assert_string_equal(out, "m-*.th");
    assert_int_equal(ck_watch_output_name_v("{seq", "m.th", &v, out,
                                            sizeof(out)), CK_ECONFIG);
    assert_true(ck_watch_output_name_dynamic("{stem}{date}"));
    assert_false(ck_watch_output_name_dynamic("{stem}{ext}"));
    assert_int_equal(ck_watch_marker_path("{name}.done", "x/y/m.th", out,
                                          sizeof(out)), 0);
    assert_string_equal(out, "x/y/m.th.done");
    assert_int_equal(ck_watch_marker_path("_SUCCESS", "x/m.th", out,
                                          sizeof(out)), 0);
    assert_string_equal(out, "x/_SUCCESS");
    assert_int_equal(ck_watch_marker_path("{name}.done", "m.th", out, 8),
                     CK_ECONFIG);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test(test_output_name_fields),
        cmocka_unit_test_setup_teardown(test_value_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_required, setup, teardown),
        cmocka_unit_test_setup_teardown(test_after_move_needs_done, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_apart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apart_symlink, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relative, setup, teardown),
        cmocka_unit_test_setup_teardown(test_output_name, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
