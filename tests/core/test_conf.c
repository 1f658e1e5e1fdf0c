/*
 * test_conf.c -- the INI loader and the generic directive setters.
 *
 * Each test writes a small INI file into a fresh temporary folder, loads it
 * with ck_conf_load and checks the values or the error: its code and its
 * "PATH:LINE: message" text.  The plugin-independent parts use only the
 * core sections; one test walks whatever plugins are compiled in.
 */
#include "conf.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    strcpy(f->dir, "/tmp/ck_test_conf.XXXXXX");
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

    char m[160];

    ck_conf_release(&f->c);
    unlink(f->path);
    snprintf(m, sizeof(m), "%s/m.json", f->dir);
    unlink(m); /* written by required() */
    rmdir(f->dir);
    free(f);
    ck_mem_fail_at(0);
    return 0;
}

/* Write text as the INI file and load it. */
static int load(fx_t *f, const char *text)
{
    FILE *fp = fopen(f->path, "w");

    assert_non_null(fp);
    assert_int_equal(fputs(text, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
    ck_conf_release(&f->c);
    memset(&f->err, 0, sizeof(f->err));
    return ck_conf_load(&f->c, f->path, &f->err);
}

/* The error is CK_ECONFIG, starts "PATH:LINE: " and contains what. */
static void assert_conf_error(fx_t *f, int rc, int line, const char *what)
{
    char prefix[192];

    snprintf(prefix, sizeof(prefix), "%s:%d: ", f->path, line);
    assert_int_equal(rc, CK_ECONFIG);
    assert_int_equal(f->err.code, CK_ECONFIG);
    if (strncmp(f->err.msg, prefix, strlen(prefix)) != 0)
        fail_msg("error '%s' does not start with '%s'", f->err.msg, prefix);
    if (strstr(f->err.msg, what) == NULL)
        fail_msg("error '%s' does not mention '%s'", f->err.msg, what);
}

static void assert_default_security(const ck_conf_t *c)
{
    assert_int_equal(c->security.max_pickle_bytes, 1ull << 30);
    assert_int_equal(c->security.max_depth, 1000);
    assert_int_equal(c->security.max_memo, 67108864);
    assert_int_equal(c->security.max_string_bytes, 256ull << 20);
    assert_int_equal(c->security.allow_globals.n, 0);
    assert_int_equal(c->security.allow_numpy, 0);
}

static void test_security_defaults(void **state)
{
    fx_t *f = *state;
    ck_limits_t lim, def;

    assert_int_equal(load(f, "[pipeline]\nchain =\n"), 0);
    assert_int_equal(f->err.code, 0);
    assert_default_security(&f->c);
    assert_int_equal(f->c.nchain, 0);
    assert_non_null(f->c.chain);
    ck_conf_limits(&f->c, &lim);
    ck_limits_default(&def);
    assert_int_equal(lim.max_pickle_bytes, def.max_pickle_bytes);
    assert_int_equal(lim.max_depth, def.max_depth);
    assert_int_equal(lim.max_memo, def.max_memo);
    assert_int_equal(lim.max_string_bytes, def.max_string_bytes);
}

static void test_empty_file_defaults(void **state)
{
    fx_t *f = *state;

    assert_int_equal(load(f, ""), 0);
    assert_default_security(&f->c);
    assert_int_equal(f->c.nchain, 0);
    assert_int_equal(load(f, "; only a comment\n# and another\n\n"), 0);
    assert_default_security(&f->c);
    /* a given value is kept, the rest get their defaults */
    assert_int_equal(load(f, "[security]\nmax_depth = 7\n"), 0);
    assert_int_equal(f->c.security.max_depth, 7);
    assert_int_equal(f->c.security.max_memo, 67108864);
    assert_int_equal(f->c.security.max_pickle_bytes, 1ull << 30);
}

static void test_size_suffixes(void **state)
{
    fx_t *f = *state;

    assert_int_equal(load(f, "[security]\n"
                             "max_pickle_bytes = 10K\n"
                             "max_string_bytes = 3M\n"),
                     0);
    assert_int_equal(f->c.security.max_pickle_bytes, 10240);
    assert_int_equal(f->c.security.max_string_bytes, 3ull << 20);
    assert_int_equal(load(f, "[security]\n"
                             "max_pickle_bytes = 2G\n"
                             "max_string_bytes = 1T\n"),
                     0);
    assert_int_equal(f->c.security.max_pickle_bytes, 2ull << 30);
    assert_int_equal(f->c.security.max_string_bytes, 1ull << 40);
    assert_int_equal(load(f, "[security]\n"
                             "max_pickle_bytes = 5KiB\n"
                             "max_string_bytes = 4MiB\n"),
                     0);
    assert_int_equal(f->c.security.max_pickle_bytes, 5 * 1024);
    assert_int_equal(f->c.security.max_string_bytes, 4ull << 20);
    assert_int_equal(load(f, "[security]\n"
                             "max_pickle_bytes = 123\n"
                             "max_string_bytes = 3GiB\n"),
                     0);
    assert_int_equal(f->c.security.max_pickle_bytes, 123);
    assert_int_equal(f->c.security.max_string_bytes, 3ull << 30);
    /* the largest that fits, and zero */
    assert_int_equal(load(f, "[security]\n"
                             "max_pickle_bytes = 17179869183G\n"
                             "max_string_bytes = 0\n"),
                     0);
    assert_int_equal(f->c.security.max_pickle_bytes, 17179869183ull << 30);
    assert_int_equal(f->c.security.max_string_bytes, 0);
}

static void test_size_bad_values(void **state)
{
    static const char *const bad[] = {
        "1k", "1.5G", "G", "-1", "1 K", "1KB", "0x10", "1GG",
        "17179869184G", "18446744073709551616", "1 000",
    };
    fx_t *f = *state;
    char text[128];

    for (size_t i = 0; i < CK_ARRAY_SIZE(bad); i++) {
        snprintf(text, sizeof(text), "[security]\n\nmax_string_bytes = %s\n",
                 bad[i]);
        assert_conf_error(f, load(f, text), 3, "max_string_bytes");
        assert_non_null(strstr(f->err.msg, bad[i]));
    }
}

static void test_u64_values(void **state)
{
    static const char *const bad[] = {
        "abc", "12abc", "-5", "+5", "1K", "18446744073709551616", "1.0",
    };
    fx_t *f = *state;
    char text[128];

    assert_int_equal(load(f, "[security]\nmax_depth = 0\n"
                             "max_memo = 18446744073709551615\n"),
                     0);
    assert_int_equal(f->c.security.max_depth, 0);
    assert_int_equal(f->c.security.max_memo, UINT64_MAX);
    for (size_t i = 0; i < CK_ARRAY_SIZE(bad); i++) {
        snprintf(text, sizeof(text), "[security]\nmax_depth = %s\n", bad[i]);
        assert_conf_error(f, load(f, text), 2, "not a whole number");
    }
}

static void test_limits_clamped(void **state)
{
    fx_t *f = *state;
    ck_limits_t lim;

    assert_int_equal(load(f, "[security]\n"
                             "max_depth = 20000\n"
                             "max_memo = 5000000000\n"
                             "max_pickle_bytes = 64K\n"
                             "max_string_bytes = 1K\n"),
                     0);
    ck_conf_limits(&f->c, &lim);
    assert_int_equal(lim.max_depth, 10000);
    assert_int_equal(lim.max_memo, UINT32_MAX);
    assert_int_equal(lim.max_pickle_bytes, 65536);
    assert_int_equal(lim.max_string_bytes, 1024);
    ck_conf_limits(NULL, &lim);
    assert_int_equal(lim.max_depth, 1000);
}

typedef struct {
    int flag;
    uint64_t size;
} my_conf_t;

static void test_bool_setter(void **state)
{
    static const char *const yes[] = { "yes", "true", "on", "1" };
    static const char *const no[] = { "no", "false", "off", "0" };
    static const char *const bad[] = { "YES", "True", "2", "", "y", "maybe" };
    const ck_directive_t d = { .name = "flag",
                               .set = ck_conf_set_bool,
                               .offset = offsetof(my_conf_t, flag) };
    my_conf_t mc;
    ck_err_t err;
    ck_conf_ctx_t cx = { .err = &err };

    (void)state;
    for (size_t i = 0; i < CK_ARRAY_SIZE(yes); i++) {
        mc.flag = -1;
        memset(&err, 0, sizeof(err));
        assert_int_equal(ck_conf_set_bool(&cx, &d, &mc, yes[i]), 0);
        assert_int_equal(mc.flag, 1);
    }
    for (size_t i = 0; i < CK_ARRAY_SIZE(no); i++) {
        mc.flag = -1;
        memset(&err, 0, sizeof(err));
        assert_int_equal(ck_conf_set_bool(&cx, &d, &mc, no[i]), 0);
        assert_int_equal(mc.flag, 0);
    }
    for (size_t i = 0; i < CK_ARRAY_SIZE(bad); i++) {
        mc.flag = -1;
        memset(&err, 0, sizeof(err));
        assert_int_equal(ck_conf_set_bool(&cx, &d, &mc, bad[i]), CK_ECONFIG);
        assert_int_equal(err.code, CK_ECONFIG);
        assert_int_equal(mc.flag, -1);
        assert_non_null(strstr(err.msg, "flag"));
    }
}

static void test_size_setter_direct(void **state)
{
    const ck_directive_t d = { .name = "size",
                               .set = ck_conf_set_size,
                               .offset = offsetof(my_conf_t, size) };
    my_conf_t mc = { 0, 99 };
    ck_err_t err = { 0 };
    ck_conf_ctx_t cx = { .err = &err };

    (void)state;
    assert_int_equal(ck_conf_set_size(&cx, &d, &mc, "1K"), 0);
    assert_int_equal(mc.size, 1024);
    assert_int_equal(ck_conf_set_size(&cx, &d, &mc, "1M"), 0);
    assert_int_equal(mc.size, 1 << 20);
    assert_int_equal(ck_conf_set_size(&cx, &d, &mc, "1G"), 0);
    assert_int_equal(mc.size, 1 << 30);
    assert_int_equal(ck_conf_set_size(&cx, &d, &mc, "16777215T"), 0);
    assert_int_equal(mc.size, 16777215ull << 40);
    assert_int_equal(ck_conf_set_size(&cx, &d, &mc, "16777216T"), CK_ECONFIG);
    assert_int_equal(mc.size, 16777215ull << 40);
}

static void test_unknown_section(void **state)
{
    fx_t *f = *state;
    int rc = load(f, "[pipeline]\nchain =\n\n[bogus]\nx = 1\n");

    assert_int_equal(rc, CK_ECONFIG);
    assert_int_equal(strncmp(f->err.msg, f->path, strlen(f->path)), 0);
    assert_int_equal(f->err.msg[strlen(f->path)], ':');
    assert_non_null(strstr(f->err.msg, "unknown section [bogus]"));
    /* a label on a section that is not a plugin is no better */
    rc = load(f, "[security:x]\nmax_depth = 1\n");
    assert_int_equal(rc, CK_ECONFIG);
    assert_non_null(strstr(f->err.msg, "unknown section [security:x]"));
}

/*
 * Regression (fixed): an unknown section is reported at the line of its first directive,
 * not at its [header]; and an unknown section without directives is not
 * reported at all.  "[pipeline]\nchain =\n\n[bogus]\nx = 1\n" gives
 * "PATH:5: unknown section [bogus]" (expected PATH:4:), and
 * "[pipeline]\nchain =\n[bogus]\n" loads with rc 0 (expected CK_ECONFIG at
 * PATH:3:).  inih calls the handler only for name = value lines.
 */
static void test_unknown_section_line(void **state)
{
    fx_t *f = *state;

    assert_conf_error(f, load(f, "[pipeline]\nchain =\n\n[bogus]\nx = 1\n"), 4,
                      "unknown section [bogus]");
    assert_conf_error(f, load(f, "[pipeline]\nchain =\n[bogus]\n"), 3,
                      "unknown section [bogus]");
}

static void test_value_not_utf8(void **state)
{
    fx_t *f = *state;

    assert_conf_error(f, load(f, "[pipeline]\nchain =\n[key_remap]\n"
                                 "rename = a. => b\xff.\n"), 4,
                      "rename: the value is not valid UTF-8");
    assert_conf_error(f, load(f, "[watch]\nincoming = in\xc3\n"), 2,
                      "not valid UTF-8");
    assert_int_equal(load(f, "[watch]\nincoming = caf\xc3\xa9\n"
                             "output = o\nfailed = f\naudit_log = a\n"), 0);
}

static void test_unknown_directive(void **state)
{
    fx_t *f = *state;

    assert_conf_error(f, load(f, "; ckprep\n[security]\nmax_depht = 3\n"), 3,
                      "unknown directive 'max_depht' in [security]");
    assert_conf_error(f, load(f, "[pipeline]\nchains = x\n"), 2,
                      "unknown directive 'chains' in [pipeline]");
}

static void test_outside_section(void **state)
{
    fx_t *f = *state;

    assert_conf_error(f, load(f, "\nmax_depth = 1\n[security]\n"), 2,
                      "outside any [section]");
}

static void test_bad_value_line(void **state)
{
    fx_t *f = *state;

    assert_conf_error(f, load(f, "[pipeline]\nchain =\n"
                                 "[security]\n"
                                 "max_depth = 10\n"
                                 "\n"
                                 "; comment\n"
                                 "max_memo = lots\n"),
                      7, "max_memo: 'lots' is not a whole number");
}

static void test_first_error_wins(void **state)
{
    fx_t *f = *state;

    assert_conf_error(f, load(f, "[security]\n"
                                 "max_depth = x\n"
                                 "max_memo = y\n"
                                 "nonsense = 1\n"),
                      2, "max_depth");
    assert_null(strstr(f->err.msg, "max_memo"));
}

static void test_duplicate_directive(void **state)
{
    fx_t *f = *state;

    assert_conf_error(f, load(f, "[security]\nmax_depth = 1\nmax_depth = 2\n"), 3,
                      "'max_depth' given twice in [security]");
    /* also when the section is opened again further down */
    assert_conf_error(f, load(f, "[security]\n"
                                 "max_pickle_bytes = 1M\n"
                                 "[pipeline]\n"
                                 "chain =\n"
                                 "[security]\n"
                                 "max_pickle_bytes = 2M\n"),
                      6, "'max_pickle_bytes' given twice");
}

static void test_multi_directive_appends(void **state)
{
    fx_t *f = *state;
    const ck_strlist_t *l;

    assert_int_equal(load(f, "[security]\n"
                             "allow_globals = a.b c.d\n"
                             "  e.f\n"
                             "max_depth = 5\n"
                             "allow_globals = g.h,i.j ,\tk.l\n"),
                     0);
    l = &f->c.security.allow_globals;
    assert_int_equal(l->n, 6);
    assert_string_equal(l->v[0], "a.b");
    assert_string_equal(l->v[1], "c.d");
    assert_string_equal(l->v[2], "e.f");
    assert_string_equal(l->v[3], "g.h");
    assert_string_equal(l->v[4], "i.j");
    assert_string_equal(l->v[5], "k.l");
    assert_null(l->v[6]);
    /* the NULL-ended list ck_ckpt_open takes */
    assert_non_null(f->c.allow);
    assert_string_equal(f->c.allow[0], "a.b");
    assert_string_equal(f->c.allow[5], "k.l");
    assert_null(f->c.allow[6]);
    assert_int_equal(f->c.security.max_depth, 5);
}

static void test_allow_globals_needs_dot(void **state)
{
    fx_t *f = *state;
    int rc = load(f, "[security]\nallow_globals = ok.name nodot\n");

    assert_int_equal(rc, CK_ECONFIG);
    assert_int_equal(f->err.code, CK_ECONFIG);
    assert_int_equal(strncmp(f->err.msg, f->path, strlen(f->path)), 0);
    assert_non_null(strstr(f->err.msg, "'nodot'"));
    assert_null(strstr(f->err.msg, "'ok.name'"));
}

/*
 * Regression (fixed): conf.h promises "PATH:LINE: message" for every load error, but an
 * allow_globals word without a dot is reported without a line:
 * "[security]\nallow_globals = ok.name nodot\n" gives
 * "PATH: allow_globals: 'nodot' is not module.name" (expected "PATH:2: ...").
 */
static void test_allow_globals_line(void **state)
{
    fx_t *f = *state;

    assert_conf_error(f, load(f, "[security]\nallow_globals = ok.name nodot\n"),
                      2, "'nodot' is not module.name");
}

/* allow_numpy: a yes/no, no by default (numpy names refused as before). */
static void test_allow_numpy(void **state)
{
    fx_t *f = *state;

    assert_int_equal(load(f, "[security]\n"), 0);
    assert_int_equal(f->c.security.allow_numpy, 0);
    assert_int_equal(load(f, "[security]\nallow_numpy = yes\n"), 0);
    assert_int_equal(f->c.security.allow_numpy, 1);
    assert_int_equal(load(f, "[security]\nallow_numpy = no\n"), 0);
    assert_int_equal(f->c.security.allow_numpy, 0);
    assert_conf_error(f, load(f, "[security]\n\nallow_numpy = numpy\n"), 3,
                      "'numpy' is not yes or no");
}

static void test_empty_chain(void **state)
{
    fx_t *f = *state;

    assert_int_equal(load(f, "[pipeline]\nchain =\n"), 0);
    assert_int_equal(f->c.nchain, 0);
    assert_int_equal(f->c.pipeline.chain.n, 0);
    assert_int_equal(load(f, "[pipeline]\nchain = , ,\t,\n"), 0);
    assert_int_equal(f->c.nchain, 0);
    assert_int_equal(load(f, "[pipeline]\n"), 0);
    assert_int_equal(f->c.nchain, 0);
}

static void test_unknown_plugin_in_chain(void **state)
{
    fx_t *f = *state;

    assert_conf_error(f, load(f, "[security]\nmax_depth = 3\n\n"
                                 "[pipeline]\n"
                                 "; the chain\n"
                                 "chain = nosuchplugin\n"),
                      6, "unknown plugin 'nosuchplugin' in chain");
    /* with a label, the plugin part is named */
    assert_conf_error(f, load(f, "[pipeline]\nchain = nosuch:label\n"), 2,
                      "unknown plugin 'nosuch' in chain");
    /* a chain over several lines reports its first line */
    assert_conf_error(f, load(f, "[pipeline]\nchain =\n    nosuch\n"), 2,
                      "unknown plugin 'nosuch'");
    /* core sections are not plugins */
    assert_conf_error(f, load(f, "[security]\n[pipeline]\nchain = security\n"),
                      3, "'security' is not a plugin");
}

static void test_syntax_error(void **state)
{
    fx_t *f = *state;

    assert_conf_error(f, load(f, "[security]\nmax_depth = 3\n[pipeline\n"), 3,
                      "syntax error");
    assert_conf_error(f, load(f, "[security]\njust words\n"), 2, "syntax error");
}

static void test_missing_file(void **state)
{
    fx_t *f = *state;
    char missing[192];
    int rc;

    snprintf(missing, sizeof(missing), "%s/nope.ini", f->dir);
    rc = ck_conf_load(&f->c, missing, &f->err);
    assert_int_equal(rc, CK_ECONFIG);
    assert_non_null(strstr(f->err.msg, missing));
}

static void test_inline_comment_and_spaces(void **state)
{
    fx_t *f = *state;

    assert_int_equal(load(f, "  [security]  \n"
                             "max_depth=12   ; twelve\n"
                             "max_memo   =   99\t\n"),
                     0);
    assert_int_equal(f->c.security.max_depth, 12);
    assert_int_equal(f->c.security.max_memo, 99);
}

/*
 * The lines a plugin's section needs to load (a directive without a
 * default it requires), written after its section header; for expect, a
 * manifest file in the fixture's folder.
 */
static const char *required(fx_t *f, const ck_plugin_t *p)
{
    char m[160];
    FILE *fp;

    if (strcmp(p->name, "expect") != 0)
        return "";
    snprintf(m, sizeof(m), "%s/m.json", f->dir);
    fp = fopen(m, "w");
    assert_non_null(fp);
    fputs("{\"tensors\": [{\"key\": \"w\", \"shape\": [2]}]}", fp);
    assert_int_equal(fclose(fp), 0);
    return "manifest = m.json\n";
}

/* Every compiled-in plugin can be chained, with and without a label. */
/* A plugin's section the chain does not run is refused at its header: it
 * would silently do nothing. */
static void test_section_not_in_chain(void **state)
{
    fx_t *f = *state;

    assert_conf_error(f, load(f, "[pipeline]\nchain = optimizer_strip\n\n"
                                 "[config_override]\nset = optim.lr=1e-5\n"),
                      4, "[config_override] is not in the chain ([pipeline] "
                         "chain = optimizer_strip): its directives would do "
                         "nothing");
    /* a labelled one too, and the first in the file is named */
    assert_conf_error(f, load(f, "[pipeline]\nchain = key_remap\n"
                                 "[key_remap]\nrename = a. => b.\n"
                                 "[key_remap:two]\nrename = c. => d.\n"
                                 "[prefix_select]\nkeep = x.\n"),
                      5, "[key_remap:two] is not in the chain");
    assert_int_equal(load(f, "[pipeline]\nchain = key_remap key_remap:two\n"
                             "[key_remap]\nrename = a. => b.\n"
                             "[key_remap:two]\nrename = c. => d.\n"), 0);
}

/*
 * What a plugin needs to have something to do (a plugin with nothing to do
 * is a configuration error): one line for its section, or "".
 */
static const char *needs(fx_t *f, const ck_plugin_t *p)
{
    static const char *const lines[][2] = {
        { "key_remap", "rename = a. => b.\n" },
        { "head_init", "add = k float32 2 zeros\n" },
        { "prefix_select", "keep = a.\n" },
        { "config_override", "set = a=1\n" },
    };

    for (size_t i = 0; i < CK_ARRAY_SIZE(lines); i++)
        if (strcmp(lines[i][0], p->name) == 0)
            return lines[i][1];
    return required(f, p);
}

static void test_compiled_plugins_chain(void **state)
{
    fx_t *f = *state;

    assert_null(ck_plugin_find("nosuchplugin", 12));
    assert_null(ck_plugin_find("security", 8));
    for (size_t i = 0; ck_plugins[i] != NULL; i++) {
        const ck_plugin_t *p = ck_plugins[i];
        char text[512], what[160];

        assert_non_null(p->name);
        assert_ptr_equal(ck_plugin_find(p->name, strlen(p->name)), p);
        snprintf(text, sizeof(text),
                 "[pipeline]\nchain = %s %s:two\n[%s]\n%s[%s:two]\n%s",
                 p->name, p->name, p->name, needs(f, p), p->name, needs(f, p));
        assert_int_equal(load(f, text), 0);
        assert_int_equal(f->c.nchain, 2);
        assert_ptr_equal(f->c.chain[0].plugin, p);
        assert_ptr_equal(f->c.chain[1].plugin, p);
        assert_null(f->c.chain[0].label);
        assert_string_equal(f->c.chain[1].label, "two");
        assert_true(f->c.chain[0].conf != f->c.chain[1].conf ||
                    p->conf_size == 0);
        /* an unknown directive in its section names the section */
        snprintf(text, sizeof(text), "[pipeline]\nchain = %s\n[%s:x]\n"
                                     "no_such_directive = 1\n",
                 p->name, p->name);
        snprintf(what, sizeof(what), "in [%s:x]", p->name);
        assert_conf_error(f, load(f, text), 4, what);
    }
}

/* Bool directives of the compiled-in plugins go through the generic setter. */
static void test_plugin_bool_directives(void **state)
{
    fx_t *f = *state;
    int nbool = 0;

    for (size_t i = 0; ck_plugins[i] != NULL; i++) {
        const ck_plugin_t *p = ck_plugins[i];

        for (const ck_directive_t *d = p->directives; d->name != NULL; d++) {
            char text[512];

            if (d->set != ck_conf_set_bool)
                continue;
            nbool++;
            snprintf(text, sizeof(text),
                     "[pipeline]\nchain = %s\n[%s]\n%s = maybe\n%s", p->name,
                     p->name, d->name, needs(f, p));
            assert_conf_error(f, load(f, text), 4, "is not yes or no");
            snprintf(text, sizeof(text),
                     "[pipeline]\nchain = %s\n[%s]\n%s = off\n%s", p->name,
                     p->name, d->name, needs(f, p));
            assert_int_equal(load(f, text), 0);
            assert_int_equal(*(int *)((char *)f->c.chain[0].conf + d->offset), 0);
            snprintf(text, sizeof(text),
                     "[pipeline]\nchain = %s\n[%s]\n%s = on\n%s", p->name,
                     p->name, d->name, needs(f, p));
            if (load(f, text) == 0)
                assert_int_equal(
                    *(int *)((char *)f->c.chain[0].conf + d->offset), 1);
            else
                assert_null(strstr(f->err.msg, "is not yes or no"));
            /* the default, when the directive has one */
            if (d->def != NULL) {
                int want = strcmp(d->def, "yes") == 0 ||
                           strcmp(d->def, "on") == 0 ||
                           strcmp(d->def, "true") == 0 ||
                           strcmp(d->def, "1") == 0;

                snprintf(text, sizeof(text),
                         "[pipeline]\nchain = %s\n[%s]\n%s", p->name,
                         p->name, needs(f, p));
                assert_int_equal(load(f, text), 0);
                assert_int_equal(
                    *(int *)((char *)f->c.chain[0].conf + d->offset), want);
            }
        }
    }
    /* optimizer_strip, prefix_select and key_remap each have one */
    assert_true(nbool >= 1);
}


/* ---- the setters a plugin uses for structure -------------------------- */

typedef struct {
    int mode;
    uint64_t n;
    ck_strlist_t paths;
    ck_conf_list_t items;
} set_conf_t;

static const ck_conf_enum_t modes[] = {
    { "keep", 10 }, { "move", 20 }, { "delete", 30 }, { NULL, 0 },
};
static const ck_conf_range_t one_to_64 = { 1, 64 };

static void test_enum_setter(void **state)
{
    const ck_directive_t d = { .name = "after", .set = ck_conf_set_enum,
                               .offset = offsetof(set_conf_t, mode),
                               .data = modes };
    set_conf_t sc = { .mode = -1 };
    ck_err_t err = { 0 };
    ck_conf_ctx_t cx = { .err = &err };

    (void)state;
    assert_int_equal(ck_conf_set_enum(&cx, &d, &sc, "move"), 0);
    assert_int_equal(sc.mode, 20);
    assert_int_equal(ck_conf_set_enum(&cx, &d, &sc, "delete"), 0);
    assert_int_equal(sc.mode, 30);
    assert_int_equal(ck_conf_set_enum(&cx, &d, &sc, "Move"), CK_ECONFIG);
    assert_int_equal(sc.mode, 30);
    /* the message lists every name */
    assert_string_equal(err.msg,
                        "after: 'Move' is not keep, move or delete");
}

static void test_range_setter(void **state)
{
    const ck_directive_t d = { .name = "workers", .set = ck_conf_set_u64,
                               .offset = offsetof(set_conf_t, n),
                               .data = &one_to_64 };
    static const char *const bad[] = { "0", "65", "-1", "x", "", "1e3",
                                       "99999999999999999999999" };
    set_conf_t sc = { .n = 7 };
    ck_err_t err;
    ck_conf_ctx_t cx = { .err = &err };

    (void)state;
    assert_int_equal(ck_conf_set_u64(&cx, &d, &sc, "1"), 0);
    assert_int_equal(sc.n, 1);
    assert_int_equal(ck_conf_set_u64(&cx, &d, &sc, "64"), 0);
    assert_int_equal(sc.n, 64);
    for (size_t i = 0; i < CK_ARRAY_SIZE(bad); i++) {
        memset(&err, 0, sizeof(err));
        assert_int_equal(ck_conf_set_u64(&cx, &d, &sc, bad[i]), CK_ECONFIG);
        assert_non_null(strstr(err.msg, "is not a number from 1 to 64"));
        assert_int_equal(sc.n, 64);
    }
}

static void test_paths_setter(void **state)
{
    const ck_directive_t d = { .name = "state", .set = ck_conf_set_paths,
                               .offset = offsetof(set_conf_t, items) };
    static const char *const bad[] = { "/a", "a//b", "ok /x", "a||b",
                                       "|a", "a|", "?" };
    set_conf_t sc = { 0 };
    ck_arena_t a = { 0 };
    ck_err_t err = { 0 };
    ck_conf_ctx_t cx = { .arena = &a, .err = &err };
    const ck_path_t *p;

    (void)state;
    assert_int_equal(ck_conf_set_paths(&cx, &d, &sc,
                                       "model best_state/model|fsdp_best_state"
                                       "/model, ema/state/model?"), 0);
    assert_int_equal(sc.items.n, 3);
    p = sc.items.v[0];
    assert_string_equal(p->text, "model");
    assert_int_equal(p->nalt, 1);
    assert_int_equal(p->optional, 0);
    p = sc.items.v[1];
    assert_int_equal(p->nalt, 2);
    assert_string_equal(p->alt[0], "best_state/model");
    assert_string_equal(p->alt[1], "fsdp_best_state/model");
    p = sc.items.v[2];
    assert_string_equal(p->text, "ema/state/model");
    assert_int_equal(p->optional, 1);
    for (size_t i = 0; i < CK_ARRAY_SIZE(bad); i++) {
        memset(&err, 0, sizeof(err));
        assert_int_equal(ck_conf_set_paths(&cx, &d, &sc, bad[i]), CK_ECONFIG);
        assert_non_null(strstr(err.msg, "is not a place"));
    }
    assert_int_equal(sc.items.n, 4); /* "ok" of "ok /x" was added first */
    ck_arena_release(&a);
}

static void test_conf_list(void **state)
{
    set_conf_t sc = { 0 };
    ck_arena_t a = { 0 };
    ck_err_t err = { 0 };
    ck_conf_ctx_t cx = { .arena = &a, .err = &err };
    int items[300];

    (void)state;
    for (int i = 0; i < 300; i++) {
        items[i] = i;
        assert_int_equal(ck_conf_list_add(&cx, &sc.items, &items[i]), 0);
    }
    assert_int_equal(sc.items.n, 300);
    for (int i = 0; i < 300; i++)
        assert_ptr_equal(sc.items.v[i], &items[i]);
    ck_arena_release(&a);
}

static int cleaned[3], ncleaned;

/* Record when each cleanup ran: 1 for the first to run. */
static void clean_cb(void *p)
{
    *(int *)p = ++ncleaned;
}

/* Cleanups registered through a setter's context run at release, last
 * registered first; a configuration that failed to load runs them too. */
static void test_cleanups(void **state)
{
    ck_conf_t c;
    ck_err_t err = { 0 };
    ck_conf_ctx_t cx;

    (void)state;
    memset(&c, 0, sizeof(c));
    memset(cleaned, 0, sizeof(cleaned));
    ncleaned = 0;
    cx = (ck_conf_ctx_t){ &c.arena, &err, "x.ini", 1, "s", &c };
    for (int i = 0; i < 3; i++)
        assert_int_equal(ck_conf_cleanup_add(&cx, clean_cb, &cleaned[i]), 0);
    assert_int_equal(cleaned[0] + cleaned[1] + cleaned[2], 0);
    ck_conf_release(&c);
    assert_int_equal(cleaned[2], 1);
    assert_int_equal(cleaned[1], 2);
    assert_int_equal(cleaned[0], 3);
}

/* The key_remap regexes are compiled at load and freed at release: a
 * configuration loaded and released many times leaks nothing (LSan in the
 * sanitized build). */
static void test_load_release_compiled(void **state)
{
    fx_t *f = *state;

    for (int i = 0; i < 50; i++) {
        assert_int_equal(load(f, "[pipeline]\nchain = key_remap\n"
                                 "[key_remap]\n"
                                 "rename = re:^a\\.([0-9]+) => b.\\1\n"
                                 "rename = re:(x|y)+z => w\n"),
                         0);
        ck_conf_release(&f->c);
    }
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_security_defaults),
        T(test_empty_file_defaults),
        T(test_size_suffixes),
        T(test_size_bad_values),
        T(test_u64_values),
        T(test_limits_clamped),
        cmocka_unit_test(test_bool_setter),
        cmocka_unit_test(test_size_setter_direct),
        cmocka_unit_test(test_enum_setter),
        cmocka_unit_test(test_range_setter),
        cmocka_unit_test(test_paths_setter),
        cmocka_unit_test(test_conf_list),
        cmocka_unit_test(test_cleanups),
        T(test_load_release_compiled),
        T(test_unknown_section),
        T(test_unknown_section_line),
        T(test_value_not_utf8),
        T(test_unknown_directive),
        T(test_outside_section),
        T(test_bad_value_line),
        T(test_first_error_wins),
        T(test_duplicate_directive),
        T(test_multi_directive_appends),
        T(test_allow_globals_needs_dot),
        T(test_allow_globals_line),
        T(test_allow_numpy),
        T(test_empty_chain),
        T(test_unknown_plugin_in_chain),
        T(test_syntax_error),
        T(test_missing_file),
        T(test_inline_comment_and_spaces),
        T(test_compiled_plugins_chain),
        T(test_section_not_in_chain),
        T(test_plugin_bool_directives),
    };
#undef T

    return cmocka_run_group_tests(tests, NULL, NULL);
}
