/*
 * test_config_override.c -- the config_override plugin: its directives
 * through the real loader (defaults; set lines checked at their own line
 * against Hydra's grammar: key=value, +key=value, ++key=value, ~key), and
 * its run over the three kinds of config it edits: a plain dict and a YAML
 * string built in memory, and the pickled OmegaConf DictConfig of
 * tests/data/sample.th (written by torch.save), plus typed nodes built in
 * memory.  Override values are typed as Hydra's grammar types them (and
 * written back into a YAML string so that OmegaConf reads the same), file =
 * values as OmegaConf's YAML loader does; ints beyond int64 stay ints; typed
 * nodes convert as OmegaConf 2.2 does; ~key=value removes only a key that
 * holds value; the file = merge is deep; failures name the override and the
 * key.
 */
#include "plugin_test.h"

#include <math.h>

#define HEAD "[pipeline]\nchain = config_override\n\n[config_override]\n"
#define SAMPLE "tests/data/sample.th"

/* {"hp": {"lr": 0.001, "model": {"dim": 4, "vocab": 10}, "name": "lm",
 *         "betas": [0.9, 0.999], "flag": True}, "n": 3} */
static ck_py_t *plain_model(pt_fx_t *f)
{
    ck_py_t *root = pt_dict(f), *hp, *x, *l, *b;

    hp = pt_set(f, root, "hp", pt_dict(f));
    pt_set(f, hp, "lr", ck_py_float(PT_A(f), 0.001));
    x = pt_set(f, hp, "model", pt_dict(f));
    pt_set(f, x, "dim", pt_i(f, 4));
    pt_set(f, x, "vocab", pt_i(f, 10));
    pt_set(f, hp, "name", pt_s(f, "lm"));
    l = pt_set(f, hp, "betas", pt_new(f, CK_PY_LIST));
    pt_push(f, l, ck_py_float(PT_A(f), 0.9));
    pt_push(f, l, ck_py_float(PT_A(f), 0.999));
    b = pt_set(f, hp, "flag", pt_new(f, CK_PY_BOOL));
    b->b = 1;
    pt_set(f, root, "n", pt_i(f, 3));
    pt_set(f, root, "text", pt_s(f, "- a\n- b\n"));
    return root;
}

static ck_py_t *get(pt_fx_t *f, const char *path)
{
    return ck_ckpt_get(&f->job.ck, path);
}

static void run_plain(pt_fx_t *f, const char *text)
{
    char buf[4096];

    snprintf(buf, sizeof(buf), HEAD "config = hp\n%s", text);
    pt_job_reset(f);
    pt_load_ok(f, buf);
    pt_run_ok(f, plain_model(f));
}

static void plain_fails(pt_fx_t *f, const char *text, const char *w1,
                        const char *w2)
{
    char buf[4096];

    snprintf(buf, sizeof(buf), HEAD "config = hp\n%s", text);
    pt_job_reset(f);
    pt_load_ok(f, buf);
    pt_run_fails(f, plain_model(f), CK_EPLUGIN, w1, w2, NULL);
}

/* Write a YAML file into the fixture's folder; returns its path. */
static const char *yaml_file(pt_fx_t *f, const char *name, const char *text)
{
    static char path[192];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    fp = fopen(path, "w");
    assert_non_null(fp);
    assert_true(fputs(text, fp) >= 0);
    assert_int_equal(fclose(fp), 0);
    return path;
}

/* ---- directives ------------------------------------------------------- */

static void test_defaults(void **state)
{
    pt_fx_t *f = *state;

    /* named in the chain only: nothing to do, a configuration error */
    pt_bad(f, "[pipeline]\nchain = config_override\n", 2,
           "[config_override] nothing to do: give set");
    pt_load_ok(f, HEAD "set = a=1\n");
    assert_string_equal(pt_places(f, "config"), "xp.cfg");
    assert_int_equal(pt_count(f, "set"), 1);
    assert_null(pt_str(f, "file"));
    /* "file =" is no file */
    pt_load_ok(f, HEAD "file =\nset = a=1\n");
    assert_null(pt_str(f, "file"));
    pt_bad(f, HEAD "file =\n", 4, "nothing to do");
}

static void test_values(void **state)
{
    pt_fx_t *f = *state;

    yaml_file(f, "merge.yaml", "a: 1\n");
    pt_load_ok(f, HEAD "config = hyper_parameters\n"
                       "set = optim.lr=1e-5\n"
                       "set = +a.b.c=[1, 2]\n"
                       "set = ++d={e: f, g: [h]}\n"
                       "set = ~old.key\n"
                       "set = x=${optim.lr}\n"
                       "set = s='quoted: yes'\n"
                       "set = e=a=b\n"
                       "set = n=\n"
                       "file = merge.yaml\n");
    assert_string_equal(pt_places(f, "config"), "hyper_parameters");
    /* each set line parsed once, at load */
    assert_int_equal(pt_count(f, "set"), 8);
    /* the file too: relative to the configuration's folder */
    assert_string_equal(pt_str(f, "file"), yaml_file(f, "merge.yaml", ""));
}

static void test_bad_set_lines(void **state)
{
    static const struct {
        const char *line, *what;
    } bad[] = {
        { "optim.lr", "set: 'optim.lr' is not key=value" },
        { "+optim.lr", "is not key=value" },
        { "++optim.lr", "is not key=value" },
        { "=1", "set: empty key in '=1'" },
        { "+=1", "empty key" },
        { "~", "empty key" },
        { "optim..lr=1", "empty key in 'optim..lr=1'" },
        { ".optim=1", "empty key" },
        { "optim.=1", "empty key" },
        { "a=[1, 2", "a=[1, 2: YAML" },
        { "a={k: v", "YAML" },
        { "a=x: y: z", "YAML" },
        { "a=*anchor", "YAML aliases are not supported" },
        /* read differently by YAML and Hydra's grammar: refused */
        { "name=run #3", "a '#' (a comment in YAML" },
        { "name=foo: bar", "': ' outside {}" },
        { "name=foo:", "': ' outside {}" },
        { "name=- a", "a leading '- '" },
        { "name=a\\,b", "a backslash" },
        { "name=!!int 5", "a YAML tag, anchor or block indicator" },
        { "name=&x y", "a YAML tag, anchor or block indicator" },
        { "name=|x", "a YAML tag, anchor or block indicator" },
        { "name=str(5)", "a Hydra function call" },
        { "a=[1, *x]", "YAML aliases are not supported" },
        /* '~' is no value in Hydra's grammar (YAML's null) */
        { "a=~", "a=~: '~' is not a value in Hydra's grammar (null is)" },
        { "+a=[1, ~]", "'~' is not a value" },
        { "~a=~", "'~' is not a value" },
        { "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.A.B.C.D.E.F.G=1",
          "key too deep" },
        /* blanks around a key are trimmed; inside one they are an error */
        { "optim. lr = 1", "set: the key 'optim. lr' has a blank in it" },
        { "my key=1", "the key 'my key' has a blank" },
        { " = 1", "empty key" },
    };
    pt_fx_t *f = *state;
    char text[512];

    for (size_t i = 0; i < CK_ARRAY_SIZE(bad); i++) {
        snprintf(text, sizeof(text),
                 HEAD "set = a=1\nset = ~b\n\nset = %s\nset = c=2\n",
                 bad[i].line);
        pt_bad(f, text, 8, bad[i].what);
    }
    /* 32 levels are fine */
    pt_load_ok(f,
               HEAD "set = ++a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x."
                    "y.z.A.B.C.D.E.F=1\n");
}

static void test_bad_values(void **state)
{
    pt_fx_t *f = *state;

    yaml_file(f, "a.yaml", "a: 1\n");
    pt_bad(f, HEAD "file = a.yaml\nfile = b.yaml\n", 6,
           "'file' given twice in [config_override]");
    /* read at load: a missing file, bad YAML, or not a mapping */
    pt_bad(f, HEAD "file = nosuch.yaml\n", 5, "nosuch.yaml: No such file");
    yaml_file(f, "bad.yaml", "a: [1\n");
    pt_bad(f, HEAD "file = bad.yaml\n", 5, "bad.yaml");
    yaml_file(f, "list.yaml", "- 1\n");
    pt_bad(f, HEAD "file = list.yaml\n", 5, "is not a YAML mapping");
    /* config takes places: several, alternatives, optional */
    pt_load_ok(f, HEAD "config = a\nconfig = b|c d?\nset = x=1\n");
    assert_string_equal(pt_places(f, "config"), "a b|c d?");
    pt_bad(f, HEAD "config = a//b\n", 5, "is not a place");
    pt_bad(f, HEAD "sets = a=1\n", 5, "unknown directive 'sets'");
}

/* ---- run: a plain dict ------------------------------------------------ */

static void test_plain_grammar(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *v;

    run_plain(f, "set = lr=1e-5\n"
                 "set = +optim.name=adam\n"
                 "set = ~betas\n"
                 "set = model.dim=8\n"
                 "set = ++name='007'\n"
                 "set = ++new.deep.key=1\n");
    assert_string_equal(pt_keys(get(f, "hp")), "lr model name flag optim new");
    v = get(f, "hp/lr");
    assert_int_equal(v->kind, CK_PY_FLOAT);
    assert_true(ck_py_float_value(v) == 1e-5);
    /* + makes the parents it needs, as plain dicts */
    v = get(f, "hp/optim");
    assert_int_equal(v->kind, CK_PY_DICT);
    assert_true(ck_py_str_eq(get(f, "hp/optim/name"), "adam"));
    assert_int_equal(get(f, "hp/model/dim")->u.i.v, 8);
    assert_int_equal(get(f, "hp/model/vocab")->u.i.v, 10);
    /* a quoted value stays a string */
    assert_true(ck_py_str_eq(get(f, "hp/name"), "007"));
    assert_int_equal(get(f, "hp/new/deep/key")->u.i.v, 1);
    /* (doubles are compared up to their first digits: the JSON writer
     * owns their format) */
    pt_changed(f, "[{\"op\":\"set\",\"config\":\"hp\",\"key\":\"lr\","
                  "\"old\":0.001,\"new\":1");
    pt_changed(f,
               "},{\"op\":\"added\",\"config\":\"hp\",\"key\":\"optim.name\","
               "\"new\":\"adam\"},"
               "{\"op\":\"removed\",\"config\":\"hp\",\"key\":\"betas\","
               "\"old\":[0.9,0.999]},"
               "{\"op\":\"set\",\"config\":\"hp\",\"key\":\"model.dim\","
               "\"old\":4,\"new\":8},"
               "{\"op\":\"set\",\"config\":\"hp\",\"key\":\"name\","
               "\"old\":\"lm\",\"new\":\"007\"},"
               "{\"op\":\"added\",\"config\":\"hp\","
               "\"key\":\"new.deep.key\",\"new\":1}]");
    assert_int_equal(pt_nchanges(f), 6);
}

/* Blanks around the key and the '=' are Hydra's to ignore, and INI files
 * invite them: 'lr = 1e-5' sets lr (it used to add a key 'lr '). */
static void test_blanks_around_equals(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *v;

    run_plain(f, "set = lr = 1e-5\n"
                 "set = ++model.dim\t=  8\n"
                 "set = ~ betas\n");
    assert_string_equal(pt_keys(get(f, "hp")), "lr model name flag");
    v = get(f, "hp/lr");
    assert_int_equal(v->kind, CK_PY_FLOAT);
    assert_true(ck_py_float_value(v) == 1e-5);
    assert_int_equal(get(f, "hp/model/dim")->u.i.v, 8);
}

/* Plain scalars of a set line are typed as Hydra's override grammar types
 * them (hydra/grammar/OverrideLexer.g4), not as YAML 1.1 would. */
static void test_plain_types(void **state)
{
    static const struct {
        const char *set, *key;
        int kind;
        double num;       /* int, float, bool */
        const char *str;  /* str */
    } cases[] = {
        { "++f=1e-5", "f", CK_PY_FLOAT, 1e-5, NULL },
        { "++g=2.5e3", "g", CK_PY_FLOAT, 2500, NULL },
        { "++h=.5", "h", CK_PY_FLOAT, 0.5, NULL },
        { "++h2=-3.", "h2", CK_PY_FLOAT, -3, NULL },
        { "++u=1_000.5", "u", CK_PY_FLOAT, 1000.5, NULL },
        { "++i=42", "i", CK_PY_INT, 42, NULL },
        { "++j=-3", "j", CK_PY_INT, -3, NULL },
        { "++k=+7", "k", CK_PY_INT, 7, NULL },
        { "++l=1_000", "l", CK_PY_INT, 1000, NULL },
        { "++l2=-0", "l2", CK_PY_INT, 0, NULL },
        { "++l3=0", "l3", CK_PY_INT, 0, NULL },
        { "++t=true", "t", CK_PY_BOOL, 1, NULL },
        { "++t2=False", "t2", CK_PY_BOOL, 0, NULL },
        { "++t3=TRUE", "t3", CK_PY_BOOL, 1, NULL },
        { "++t4=fAlSe", "t4", CK_PY_BOOL, 0, NULL },
        { "++n=null", "n", CK_PY_NONE, 0, NULL },
        { "++n2=NULL", "n2", CK_PY_NONE, 0, NULL },
        { "++n4=Null", "n4", CK_PY_NONE, 0, NULL },
        /* key= is the empty string in Hydra, not None */
        { "++n3=", "n3", CK_PY_STR, 0, "" },
        { "++f2=1e5", "f2", CK_PY_FLOAT, 1e5, NULL },
        { "++f3=1E5", "f3", CK_PY_FLOAT, 1e5, NULL },
        { "++f4=1.e5", "f4", CK_PY_FLOAT, 1e5, NULL },
        { "++f5=1.5_0", "f5", CK_PY_FLOAT, 1.5, NULL },
        { "++f6=-1.5e-3", "f6", CK_PY_FLOAT, -1.5e-3, NULL },
        { "++f7=1e1_0", "f7", CK_PY_FLOAT, 1e10, NULL },
        { "++inf=inf", "inf", CK_PY_FLOAT, INFINITY, NULL },
        { "++inf2=-inf", "inf2", CK_PY_FLOAT, -INFINITY, NULL },
        { "++inf3=+INF", "inf3", CK_PY_FLOAT, INFINITY, NULL },
        { "++nan=nan", "nan", CK_PY_FLOAT, NAN, NULL },
        { "++nan2=NaN", "nan2", CK_PY_FLOAT, NAN, NULL },
        /* YAML 1.1 bools, YAML's .inf and octal-looking ints are strings */
        { "++y=yes", "y", CK_PY_STR, 0, "yes" },
        { "++y2=no", "y2", CK_PY_STR, 0, "no" },
        { "++y3=on", "y3", CK_PY_STR, 0, "on" },
        { "++y4=off", "y4", CK_PY_STR, 0, "off" },
        { "++y5=Y", "y5", CK_PY_STR, 0, "Y" },
        { "++y6=.inf", "y6", CK_PY_STR, 0, ".inf" },
        { "++y7=.nan", "y7", CK_PY_STR, 0, ".nan" },
        { "++y8=007", "y8", CK_PY_STR, 0, "007" },
        { "++y9=1__0", "y9", CK_PY_STR, 0, "1__0" },
        { "++ya=1_", "ya", CK_PY_STR, 0, "1_" },
        { "++yb=1e5x", "yb", CK_PY_STR, 0, "1e5x" },
        { "++yc=true_x", "yc", CK_PY_STR, 0, "true_x" },
        { "++yd=infinity", "yd", CK_PY_STR, 0, "infinity" },
        { "++ye=1._5", "ye", CK_PY_STR, 0, "1._5" },
        { "++yf='null'", "yf", CK_PY_STR, 0, "null" },
        { "++s='123'", "s", CK_PY_STR, 0, "123" },
        { "++q=\"true\"", "q", CK_PY_STR, 0, "true" },
        { "++w=hello world", "w", CK_PY_STR, 0, "hello world" },
        { "++p=/a/b:c", "p", CK_PY_STR, 0, "/a/b:c" },
        { "++x=0x10", "x", CK_PY_STR, 0, "0x10" },
        { "++e=e5", "e", CK_PY_STR, 0, "e5" },
        { "++e2=.e5", "e2", CK_PY_STR, 0, ".e5" },
        { "++v=1.2.3", "v", CK_PY_STR, 0, "1.2.3" },
        { "++r=${lr}", "r", CK_PY_STR, 0, "${lr}" },
        { "++r2=${a}_${b}", "r2", CK_PY_STR, 0, "${a}_${b}" },
    };
    pt_fx_t *f = *state;
    char text[4096] = "";

    for (size_t i = 0; i < CK_ARRAY_SIZE(cases); i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text),
                 "set = %s\n", cases[i].set);
    run_plain(f, text);
    for (size_t i = 0; i < CK_ARRAY_SIZE(cases); i++) {
        ck_py_t *v = ck_py_map_get(get(f, "hp"), cases[i].key, NULL);

        if (v == NULL)
            fail_msg("%s: no key %s", cases[i].set, cases[i].key);
        if (v->kind != cases[i].kind)
            fail_msg("%s: kind %d, expected %d", cases[i].set, v->kind,
                     cases[i].kind);
        switch (cases[i].kind) {
        case CK_PY_FLOAT:
            if (isnan(cases[i].num) ? !isnan(ck_py_float_value(v))
                                    : ck_py_float_value(v) != cases[i].num)
                fail_msg("%s: %.17g, expected %.17g", cases[i].set,
                         ck_py_float_value(v), cases[i].num);
            break;
        case CK_PY_INT:
            assert_int_equal(v->u.i.v, (int64_t)cases[i].num);
            break;
        case CK_PY_BOOL:
            assert_int_equal(v->b, (int)cases[i].num);
            break;
        case CK_PY_STR:
            if (!ck_py_str_eq(v, cases[i].str))
                fail_msg("%s: '%s', expected '%s'", cases[i].set, v->u.s.s,
                         cases[i].str);
            break;
        }
    }
}

static void test_plain_collections(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *v;

    run_plain(f, "set = ++l=[1, two, 3.5, [x]]\n"
                 "set = ++d={k: v, n: 2, sub: {z: null}}\n"
                 "set = model={dim: 8}\n"
                 "set = betas=[0.5]\n");
    v = get(f, "hp/l");
    assert_int_equal(v->kind, CK_PY_LIST);
    assert_int_equal(v->u.seq.n, 4);
    assert_int_equal(v->u.seq.v[0]->u.i.v, 1);
    assert_true(ck_py_str_eq(v->u.seq.v[1], "two"));
    assert_int_equal(v->u.seq.v[2]->kind, CK_PY_FLOAT);
    assert_int_equal(v->u.seq.v[3]->kind, CK_PY_LIST);
    v = get(f, "hp/d");
    assert_int_equal(v->kind, CK_PY_DICT);
    assert_string_equal(pt_keys(v), "k n sub");
    assert_int_equal(get(f, "hp/d/sub/z")->kind, CK_PY_NONE);
    /* key={...} merges into a mapping, as Hydra's OmegaConf.update(...,
     * merge=True): vocab stays; a list replaces a list */
    assert_string_equal(pt_keys(get(f, "hp/model")), "dim vocab");
    assert_int_equal(get(f, "hp/model/dim")->u.i.v, 8);
    assert_int_equal(get(f, "hp/betas")->u.seq.n, 1);
}

/* Overrides apply in order, each to the result of the ones before. */
static void test_plain_order(void **state)
{
    pt_fx_t *f = *state;

    run_plain(f, "set = +a=1\nset = a=2\nset = ~name\nset = +name=x\n"
                 "set = ++a=3\n");
    assert_int_equal(get(f, "hp/a")->u.i.v, 3);
    assert_true(ck_py_str_eq(get(f, "hp/name"), "x"));
    assert_string_equal(pt_keys(get(f, "hp")), "lr model betas flag a name");
}

static void test_plain_failures(void **state)
{
    pt_fx_t *f = *state;

    plain_fails(f, "set = lrr=1\n",
                "config_override: lrr=1: no key 'lrr' in hp (use +lrr=1 to "
                "add it)", NULL);
    plain_fails(f, "set = modell.dim=1\n", "no key 'modell' in hp", NULL);
    plain_fails(f, "set = ~modell.dim\n", "no key 'modell' in hp", NULL);
    plain_fails(f, "set = +lr=1\n",
                "+lr=1: key 'lr' already exists (use ++ to change it)", NULL);
    plain_fails(f, "set = ~nosuch\n", "~nosuch: no key 'nosuch' to remove",
                NULL);
    plain_fails(f, "set = lr.sub=1\n", "lr.sub=1: 'lr' is not a mapping", NULL);
    plain_fails(f, "set = +betas.x=1\n", "'betas' is not a mapping", NULL);
    /* an earlier override applied, a later one fails: the job fails */
    plain_fails(f, "set = lr=1\nset = +lr=2\n", "already exists", NULL);
    /* the config itself */
    pt_job_reset(f);
    pt_load_ok(f, HEAD "config = nosuch\nset = a=1\n");
    pt_run_fails(f, plain_model(f), CK_EPLUGIN,
                 "config_override: no 'nosuch' in the checkpoint", NULL);
    pt_job_reset(f);
    pt_load_ok(f, HEAD "config = n\nset = a=1\n");
    pt_run_fails(f, plain_model(f), CK_EPLUGIN,
                 "'n' is neither a DictConfig, a YAML string nor a dict", NULL);
    pt_job_reset(f);
    pt_load_ok(f, HEAD "config = text\nset = a=1\n");
    pt_run_fails(f, plain_model(f), CK_EPLUGIN, "'text' is not a YAML mapping",
                 NULL);
}

static void test_file_merge(void **state)
{
    pt_fx_t *f = *state;
    char text[512];
    const char *p;

    p = yaml_file(f, "merge.yaml",
                  "# a comment\n"
                  "model:\n  dim: 16\n  extra: {x: 1}\n"
                  "newtop: hi\nlr: 2.0e-4\nbetas: [0.1]\n");
    snprintf(text, sizeof(text), "file = %s\nset = lr=1e-5\n", p);
    run_plain(f, text);
    /* mappings merge: vocab stays; the rest replaces; then set applies */
    assert_string_equal(pt_keys(get(f, "hp/model")), "dim vocab extra");
    assert_int_equal(get(f, "hp/model/dim")->u.i.v, 16);
    assert_int_equal(get(f, "hp/model/vocab")->u.i.v, 10);
    assert_int_equal(get(f, "hp/model/extra/x")->u.i.v, 1);
    assert_true(ck_py_str_eq(get(f, "hp/newtop"), "hi"));
    assert_true(ck_py_float_value(get(f, "hp/lr")) == 1e-5);
    assert_int_equal(get(f, "hp/betas")->kind, CK_PY_LIST);
    assert_int_equal(get(f, "hp/betas")->u.seq.n, 1);
    pt_changed(f, "{\"op\":\"set\",\"config\":\"hp\",\"key\":\"lr\","
                  "\"old\":0.001,\"new\":0.0002");
    pt_changed(f, "{\"op\":\"set\",\"config\":\"hp\",\"key\":\"lr\","
                  "\"old\":0.0002");
    pt_changed(f, "{\"op\":\"added\",\"config\":\"hp\",\"key\":\"model.extra\","
                  "\"new\":{\"x\":1}}");

    /* a mapping and a list never merge (OmegaConf.merge refuses it) */
    p = yaml_file(f, "cross.yaml", "betas: {a: 1}\n");
    snprintf(text, sizeof(text), "file = %s\n", p);
    plain_fails(f, text, "a mapping cannot be merged into the list at 'betas'",
                "cross.yaml");

    /* a missing file, one that is not a mapping, bad YAML: refused at
     * load, at the file line */
    snprintf(text, sizeof(text), HEAD "config = hp\nfile = %s/missing.yaml\n",
             f->dir);
    pt_bad(f, text, 6, "missing.yaml: No such file");
    p = yaml_file(f, "list.yaml", "- a\n- b\n");
    snprintf(text, sizeof(text), HEAD "config = hp\nfile = %s\n", p);
    pt_bad(f, text, 6, "list.yaml is not a YAML mapping");
    p = yaml_file(f, "bad.yaml", "a: [1, 2\n");
    snprintf(text, sizeof(text), HEAD "config = hp\nfile = %s\n", p);
    pt_bad(f, text, 6, "bad.yaml: YAML");
}

/* ---- run: a YAML string ----------------------------------------------- */

static void test_yaml_string(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *root;
    const char *p;
    char text[512];

    p = yaml_file(f, "m.yaml", "optim:\n  adam: {eps: 1.0e-8}\n");
    snprintf(text, sizeof(text),
             HEAD "config = y\nfile = %s\n"
                  "set = optim.lr=1e-5\nset = +optim.warmup=100\nset = ~name\n"
                  "set = ++label2='007'\nset = ++z=\nset = ++i=${optim.lr}\n"
                  "set = lst=[3, 4]\n",
             p);
    pt_load_ok(f, text);
    root = pt_dict(f);
    pt_set(f, root, "y", pt_s(f, "optim:\n  lr: 0.0001\n"
                                 "  adam: {betas: [0.9, 0.95]}\n"
                                 "label: '0123'\nname: x\nref: ${optim.lr}\n"
                                 "lst:\n- 1\n- two\n"));
    pt_run_ok(f, root);
    /* still a str: key order, flow style and quoting kept */
    p = ck_py_map_get(root, "y", NULL)->u.s.s;
    assert_string_equal(p, "optim:\n"
                           "  lr: 1e-5\n"
                           "  adam: {betas: [0.9, 0.95], eps: 1.0e-8}\n"
                           "  warmup: 100\n"
                           "label: '0123'\n"
                           "ref: ${optim.lr}\n"
                           "lst: [3, 4]\n"
                           "label2: '007'\n"
                           "z: ''\n"
                           "i: '${optim.lr}'\n");
    pt_changed(f, "{\"op\":\"removed\",\"config\":\"y\",\"key\":\"name\","
                  "\"old\":\"x\"}");
    pt_changed(
        f, "{\"op\":\"added\",\"config\":\"y\",\"key\":\"z\",\"new\":\"\"}");
    pt_changed(f, "{\"op\":\"set\",\"config\":\"y\",\"key\":\"optim.lr\","
                  "\"old\":0.0001,\"new\":1");
    /* the same failures as for a dict */
    pt_job_reset(f);
    pt_load_ok(f, HEAD "config = y\nset = optim.lrr=1\n");
    root = pt_dict(f);
    pt_set(f, root, "y", pt_s(f, "optim:\n  lr: 0.0001\n"));
    pt_run_fails(f, root, CK_EPLUGIN, "no key 'lrr' in y", NULL);
    pt_job_reset(f);
    pt_load_ok(f, HEAD "config = y\nset = optim.lr.x=1\n");
    root = pt_dict(f);
    pt_set(f, root, "y", pt_s(f, "optim:\n  lr: 0.0001\n"));
    pt_run_fails(f, root, CK_EPLUGIN, "'lr' is not a mapping", NULL);
    pt_job_reset(f);
    pt_load_ok(f, HEAD "config = y\nset = a=1\n");
    root = pt_dict(f);
    pt_set(f, root, "y", pt_s(f, "a: [1, 2\n"));
    pt_run_fails(f, root, CK_EPLUGIN, "y: YAML", NULL);
}

/* ---- run: OmegaConf ----------------------------------------------------- */

static void open_sample(pt_fx_t *f, const char *conf)
{
    ck_open_opts_t o = { 0 };
    char buf[1024];
    int rc;

    snprintf(buf, sizeof(buf), HEAD "%s", conf);
    pt_job_reset(f);
    pt_load_ok(f, buf);
    ck_limits_default(&o.lim);
    ck_ckpt_close(&f->job.ck);
    rc = ck_ckpt_open(&f->job.ck, SAMPLE, &o, &f->err);
    if (rc != 0)
        fail_msg("%s: %s (tests run from the repository root)", SAMPLE,
                 f->err.msg);
}

/* The child node of a DictConfig (its _content[key]). */
static ck_py_t *child(ck_py_t *cfg, const char *key)
{
    ck_py_t *content;

    assert_non_null(cfg);
    assert_int_equal(cfg->kind, CK_PY_NEWOBJ);
    content = ck_py_map_get(ck_py_after(cfg)->state, "_content", NULL);
    assert_non_null(content);
    return ck_py_map_get(content, key, NULL);
}

static ck_py_t *state_of(ck_py_t *node, const char *key)
{
    assert_non_null(node);
    return ck_py_map_get(ck_py_after(node)->state, key, NULL);
}

static void test_dictconfig(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *cfg, *cond, *style, *model, *v, *md;
    ck_write_info_t info;

    open_sample(f, "set = optim.lr=1e-5\n"
                   "set = dataset.train.path=/new/path\n"
                   "set = +conditioners.style.model=chroma\n"
                   "set = ~solver\n"
                   "set = ++optim.adam.betas=[0.8, 0.9]\n");
    cfg = ck_ckpt_get(&f->job.ck, "xp.cfg");
    pt_run_ok(f, NULL);
    /* the config is the same DictConfig node, edited in place */
    assert_ptr_equal(ck_ckpt_get(&f->job.ck, "xp.cfg"), cfg);
    v = state_of(child(child(cfg, "optim"), "lr"), "_val");
    assert_int_equal(v->kind, CK_PY_FLOAT);
    assert_true(ck_py_float_value(v) == 1e-5);
    assert_true(ck_py_str_eq(
        state_of(child(child(child(cfg, "dataset"), "train"), "path"), "_val"),
        "/new/path"));
    assert_null(child(cfg, "solver"));
    /* a new DictConfig node, linked to its parent, with its key */
    cond = child(cfg, "conditioners");
    style = child(cond, "style");
    assert_non_null(style);
    assert_true(ck_py_global_is(style->u.o.fn, "omegaconf.dictconfig",
                                "DictConfig"));
    assert_ptr_equal(state_of(style, "_parent"), cond);
    md = state_of(style, "_metadata");
    assert_true(ck_py_global_is(md->u.o.fn, "omegaconf.base",
                                "ContainerMetadata"));
    assert_true(
        ck_py_str_eq(ck_py_map_get(ck_py_after(md)->state, "key", NULL), "style"));
    model = child(style, "model");
    assert_true(ck_py_global_is(model->u.o.fn, "omegaconf.nodes", "AnyNode"));
    assert_ptr_equal(state_of(model, "_parent"), style);
    assert_true(ck_py_str_eq(state_of(model, "_val"), "chroma"));
    /* a list value becomes a ListConfig */
    v = child(child(child(cfg, "optim"), "adam"), "betas");
    assert_true(
        ck_py_global_is(v->u.o.fn, "omegaconf.listconfig", "ListConfig"));
    assert_int_equal(state_of(v, "_content")->u.seq.n, 2);
    pt_changed(f, "{\"op\":\"set\",\"config\":\"xp.cfg\",\"key\":\"optim.lr\","
                  "\"old\":0.0001,\"new\":1");
    pt_changed(f,
               "{\"op\":\"removed\",\"config\":\"xp.cfg\",\"key\":\"solver\","
               "\"old\":\"musicgen\"}");
    /* the result is a checkpoint ckprep reads back (globals allowed) */
    pt_write_back(f, &info);
    assert_int_equal(info.nstorages, f->job.ck.nstorages);
    cfg = ck_py_map_get(f->back.pk.root, "xp.cfg", NULL);
    assert_true(ck_py_str_eq(
        state_of(child(child(child(cfg, "conditioners"), "style"), "model"),
                 "_val"),
        "chroma"));
}

static void test_dictconfig_failures(void **state)
{
    pt_fx_t *f = *state;

    open_sample(f, "set = optim.lrr=1\n");
    pt_run_fails(f, NULL, CK_EPLUGIN, "no key 'lrr' in xp.cfg", NULL);
    open_sample(f, "set = +optim.lr=1\n");
    pt_run_fails(f, NULL, CK_EPLUGIN, "key 'lr' already exists", NULL);
    open_sample(f, "set = optim.lr.x=1\n");
    pt_run_fails(f, NULL, CK_EPLUGIN, "'lr' is not a mapping", NULL);
    open_sample(f, "set = ~optim.nosuch\n");
    pt_run_fails(f, NULL, CK_EPLUGIN, "no key 'nosuch' to remove", NULL);
}

/* A DictConfig of typed nodes, built in memory. */
static ck_py_t *typed_model(pt_fx_t *f)
{
    static const struct {
        const char *key, *cls;
    } nodes[] = { { "x", "FloatNode" },   { "i", "IntegerNode" },
                  { "b", "BooleanNode" }, { "s", "StringNode" },
                  { "a", "AnyNode" },     { "en", "EnumNode" } };
    ck_py_t *root = pt_dict(f), *cfg, *st, *content;

    cfg = pt_set(f, root, "cfg", pt_new(f, CK_PY_NEWOBJ));
    cfg->u.o.fn =
        ck_ckpt_global(&f->job.ck, "omegaconf.dictconfig", "DictConfig");
    cfg->u.o.args = pt_new(f, CK_PY_TUPLE);
    ck_py_after_make(PT_A(f), cfg)->state = st = pt_dict(f);
    content = pt_set(f, st, "_content", pt_dict(f));
    for (size_t i = 0; i < CK_ARRAY_SIZE(nodes); i++) {
        ck_py_t *n = pt_set(f, content, nodes[i].key, pt_new(f, CK_PY_NEWOBJ));

        n->u.o.fn = ck_ckpt_global(&f->job.ck, "omegaconf.nodes", nodes[i].cls);
        n->u.o.args = pt_new(f, CK_PY_TUPLE);
        ck_py_after_make(PT_A(f), n)->state = pt_dict(f);
        pt_set(f, ck_py_after(n)->state, "_parent", cfg);
        pt_set(f, ck_py_after(n)->state, "_val", pt_i(f, 1));
    }
    return root;
}

static ck_py_t *typed_val(pt_fx_t *f, const char *key)
{
    return state_of(child(ck_ckpt_get(&f->job.ck, "cfg"), key), "_val");
}

static void typed_run(pt_fx_t *f, const char *sets)
{
    char buf[1024];

    snprintf(buf, sizeof(buf), HEAD "config = cfg\n%s", sets);
    pt_job_reset(f);
    pt_load_ok(f, buf);
    pt_run_ok(f, typed_model(f));
}

static void typed_fails(pt_fx_t *f, const char *sets, const char *what)
{
    char buf[1024];

    snprintf(buf, sizeof(buf), HEAD "config = cfg\n%s", sets);
    pt_job_reset(f);
    pt_load_ok(f, buf);
    pt_run_fails(f, typed_model(f), CK_EPLUGIN, what, NULL);
}

static void test_typed_nodes(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *v;

    /* converted as OmegaConf converts them */
    typed_run(f, "set = x=3\nset = i=-4\nset = b=0\nset = s=12\nset = a=[1]\n");
    v = typed_val(f, "x");
    assert_int_equal(v->kind, CK_PY_FLOAT);
    assert_true(ck_py_float_value(v) == 3.0);
    assert_int_equal(typed_val(f, "i")->u.i.v, -4);
    v = typed_val(f, "b");
    assert_int_equal(v->kind, CK_PY_BOOL);
    assert_int_equal(v->b, 0);
    assert_true(ck_py_str_eq(typed_val(f, "s"), "12"));
    /* the node keeps its class */
    assert_true(
        ck_py_global_is(child(ck_ckpt_get(&f->job.ck, "cfg"), "x")->u.o.fn,
                        "omegaconf.nodes", "FloatNode"));
    typed_run(f, "set = x=2.5e-3\nset = b=TRUE\nset = s=null\nset = x=${i}\n"
                 "set = i=${x}\n");
    assert_true(ck_py_str_eq(typed_val(f, "x"), "${i}"));
    assert_true(ck_py_str_eq(typed_val(f, "i"), "${x}"));
    assert_int_equal(typed_val(f, "b")->b, 1);
    assert_int_equal(typed_val(f, "s")->kind, CK_PY_NONE);
    /* values a typed node refuses */
    typed_fails(f, "set = x=abc\n",
                "config_override: x=abc: 'abc' is not a valid value for a "
                "FloatNode");
    typed_fails(f, "set = x=true\n", "not a valid value for a FloatNode");
    typed_fails(f, "set = i=2.5\n",
                "'2.5' is not a valid value for a IntegerNode");
    typed_fails(f, "set = i='2.5'\n", "not a valid value for a IntegerNode");
    typed_fails(f, "set = i=true\n", "not a valid value for a IntegerNode");
    typed_fails(f, "set = i=0x10\n", "'0x10' is not a valid value");
    typed_fails(f, "set = x=yes\n", "'yes' is not a valid value for a FloatNode");
    typed_fails(f, "set = x=.inf\n", "not a valid value for a FloatNode");
    typed_fails(f, "set = b=2.5\n", "'2.5' is not a valid value for a BooleanNode");
    typed_fails(f, "set = b=1.0\n", "not a valid value for a BooleanNode");
    /* a collection does not replace a typed node */
    typed_fails(f, "set = i=[1]\n", "'collection' is not a valid value for a "
                                    "IntegerNode");
    typed_fails(f, "set = s={k: v}\n", "not a valid value for a StringNode");
    typed_fails(f, "set = b=[]\n", "not a valid value for a BooleanNode");
    typed_fails(f, "set = b=maybe\n", "not a valid value for a BooleanNode");
    typed_fails(f, "set = en=RED\n", "en=RED: cannot change a EnumNode");
}

/* What OmegaConf 2.2 makes of each Hydra-typed value in each typed node
 * (its nodes' _validate_and_convert_impl; tests/plugins/test_config_override.py
 * checks the same table against OmegaConf itself). */
static void test_typed_conversions(void **state)
{
    static const struct {
        const char *set, *key;
        int kind;
        double num;      /* int, float, bool */
        const char *str; /* str */
    } cases[] = {
        /* BooleanNode: bool, int != 0, str: int(str) != 0 or a word */
        { "b=2", "b", CK_PY_BOOL, 1, NULL },
        { "b=-1", "b", CK_PY_BOOL, 1, NULL },
        { "b=0", "b", CK_PY_BOOL, 0, NULL },
        { "b=yes", "b", CK_PY_BOOL, 1, NULL },
        { "b=Y", "b", CK_PY_BOOL, 1, NULL },
        { "b=On", "b", CK_PY_BOOL, 1, NULL },
        { "b=off", "b", CK_PY_BOOL, 0, NULL },
        { "b=N", "b", CK_PY_BOOL, 0, NULL },
        { "b='1'", "b", CK_PY_BOOL, 1, NULL },
        { "b=' 0 '", "b", CK_PY_BOOL, 0, NULL },
        { "b=18446744073709551616", "b", CK_PY_BOOL, 1, NULL },
        /* IntegerNode: int, int(str) */
        { "i='3'", "i", CK_PY_INT, 3, NULL },
        { "i=' -1_000 '", "i", CK_PY_INT, -1000, NULL },
        { "i='007'", "i", CK_PY_INT, 7, NULL },
        { "i=+7", "i", CK_PY_INT, 7, NULL },
        /* FloatNode: float, int, float(str) */
        { "x=7", "x", CK_PY_FLOAT, 7, NULL },
        { "x='1.5'", "x", CK_PY_FLOAT, 1.5, NULL },
        { "x=inf", "x", CK_PY_FLOAT, INFINITY, NULL },
        { "x='-Infinity'", "x", CK_PY_FLOAT, -INFINITY, NULL },
        { "x=' 1_0.5 '", "x", CK_PY_FLOAT, 10.5, NULL },
        { "x='1e5'", "x", CK_PY_FLOAT, 1e5, NULL },
        { "x=18446744073709551617", "x", CK_PY_FLOAT, 18446744073709551616.0,
          NULL },
        /* StringNode: str() of what Hydra gave, Python's float repr */
        { "s=1e5", "s", CK_PY_STR, 0, "100000.0" },
        { "s=1e-5", "s", CK_PY_STR, 0, "1e-05" },
        { "s=0.0001", "s", CK_PY_STR, 0, "0.0001" },
        { "s=1e16", "s", CK_PY_STR, 0, "1e+16" },
        { "s=1e15", "s", CK_PY_STR, 0, "1000000000000000.0" },
        { "s=123.456", "s", CK_PY_STR, 0, "123.456" },
        { "s=0.1", "s", CK_PY_STR, 0, "0.1" },
        { "s=-0.0", "s", CK_PY_STR, 0, "-0.0" },
        { "s=1.5e300", "s", CK_PY_STR, 0, "1.5e+300" },
        { "s=5e-324", "s", CK_PY_STR, 0, "5e-324" },
        { "s=.5", "s", CK_PY_STR, 0, "0.5" },
        { "s=-inf", "s", CK_PY_STR, 0, "-inf" },
        { "s=nan", "s", CK_PY_STR, 0, "nan" },
        { "s=true", "s", CK_PY_STR, 0, "True" },
        { "s=+7", "s", CK_PY_STR, 0, "7" },
        { "s=1_000", "s", CK_PY_STR, 0, "1000" },
        { "s=yes", "s", CK_PY_STR, 0, "yes" },
        { "s=", "s", CK_PY_STR, 0, "" },
        { "s=-18446744073709551616", "s", CK_PY_STR, 0,
          "-18446744073709551616" },
        /* None, '???' and interpolations go in any node */
        { "i=null", "i", CK_PY_NONE, 0, NULL },
        { "b='?\?\?'", "b", CK_PY_STR, 0, "?\?\?" },
        { "x='a${i}'", "x", CK_PY_STR, 0, "a${i}" },
    };
    pt_fx_t *f = *state;
    char text[512];

    for (size_t k = 0; k < CK_ARRAY_SIZE(cases); k++) {
        ck_py_t *v;

        snprintf(text, sizeof(text), "set = %s\n", cases[k].set);
        typed_run(f, text);
        v = typed_val(f, cases[k].key);
        if (v->kind != cases[k].kind)
            fail_msg("%s: kind %d, expected %d", cases[k].set, v->kind,
                     cases[k].kind);
        if ((v->kind == CK_PY_BOOL && v->b != (int)cases[k].num) ||
            (v->kind == CK_PY_INT && v->u.i.v != (int64_t)cases[k].num) ||
            (v->kind == CK_PY_FLOAT &&
             ck_py_float_value(v) != cases[k].num) ||
            (v->kind == CK_PY_STR && !ck_py_str_eq(v, cases[k].str)))
            fail_msg("%s: wrong value (%s)", cases[k].set,
                     v->kind == CK_PY_STR ? v->u.s.s : "not a str");
        /* the node keeps its class */
        assert_true(ck_py_global_is(
            child(ck_ckpt_get(&f->job.ck, "cfg"), cases[k].key)->u.o.fn,
            "omegaconf.nodes",
            !strcmp(cases[k].key, "b")   ? "BooleanNode"
            : !strcmp(cases[k].key, "i") ? "IntegerNode"
            : !strcmp(cases[k].key, "x") ? "FloatNode"
                                         : "StringNode"));
    }
    /* an int beyond int64 stays one in an IntegerNode; beyond a double's
     * range it is no float (Python's OverflowError) */
    typed_run(f, "set = i=-18446744073709551616\n");
    assert_int_equal(typed_val(f, "i")->len, 9);
    snprintf(text, sizeof(text), "set = x=1%0400d\n", 0);
    typed_fails(f, text, "not a valid value for a FloatNode");
}

/* ---- ints beyond int64 ------------------------------------------------ */

static void assert_big(ck_py_t *v, const char *hex)
{
    char got[256] = "";

    assert_non_null(v);
    assert_int_equal(v->kind, CK_PY_INT);
    for (size_t k = 0; k < v->len; k++)
        snprintf(got + strlen(got), sizeof(got) - strlen(got), "%02x",
                 v->u.i.big[k]);
    if (strcmp(got, hex) != 0)
        fail_msg("big int bytes %s, expected %s", got, hex);
}

static void test_big_ints(void **state)
{
    pt_fx_t *f = *state;
    ck_write_info_t info;
    char text[8192];
    ck_py_t *hp;

    run_plain(f, "set = ++big=18446744073709551616\n"
                 "set = ++nbig=-9223372036854775809\n"
                 "set = ++max=9223372036854775807\n"
                 "set = ++min=-9223372036854775808\n"
                 "set = ++m127=-170141183460469231731687303715884105728\n"
                 "set = ++p127=170141183460469231731687303715884105728\n"
                 "set = ++u=1_000_000_000_000_000_000_000\n"
                 "set = ++l=[18446744073709551616]\n");
    /* two's complement, little-endian, minimal: what LONG1 holds */
    assert_big(get(f, "hp/big"), "000000000000000001");
    assert_big(get(f, "hp/nbig"), "ffffffffffffff7fff");
    assert_big(get(f, "hp/m127"), "00000000000000000000000000000080");
    assert_big(get(f, "hp/p127"), "0000000000000000000000000000008000");
    assert_big(get(f, "hp/u"), "0000a0dec5adc93536");
    assert_big(get(f, "hp/l")->u.seq.v[0], "000000000000000001");
    /* the int64 edges stay small */
    assert_int_equal(get(f, "hp/max")->len, 0);
    assert_true(get(f, "hp/max")->u.i.v == INT64_MAX);
    assert_int_equal(get(f, "hp/min")->len, 0);
    assert_true(get(f, "hp/min")->u.i.v == INT64_MIN);
    /* reported as their digits in a JSON string: JSON readers refuse a
     * number past int64, and the daemon reads its audit log back */
    pt_changed(f, "\"key\":\"big\",\"new\":\"18446744073709551616\"}");
    pt_changed(f, "\"key\":\"nbig\",\"new\":\"-9223372036854775809\"}");
    pt_changed(f, "\"key\":\"u\",\"new\":\"1000000000000000000000\"}");
    pt_changed(f, "\"key\":\"max\",\"new\":9223372036854775807}");
    /* written as LONG1 and read back the same */
    pt_write_back(f, &info);
    hp = ck_py_map_get(f->back.pk.root, "hp", NULL);
    assert_big(ck_py_map_get(hp, "big", NULL), "000000000000000001");
    assert_big(ck_py_map_get(hp, "m127", NULL),
               "00000000000000000000000000000080");
    /* the old value of a big int likewise */
    run_plain(f, "set = +b=18446744073709551616\nset = b=1\n");
    pt_changed(f, "\"key\":\"b\",\"old\":\"18446744073709551616\",\"new\":1}");
    /* a YAML string gets the digits; a YAML file's big ints are ints */
    pt_job_reset(f);
    snprintf(text, sizeof(text),
             HEAD "config = y\nfile = %s\nset = ++b=-18_446_744_073_709_551_616\n",
             yaml_file(f, "big.yaml", "c: 0x10000000000000000\n"));
    pt_load_ok(f, text);
    hp = pt_dict(f);
    pt_set(f, hp, "y", pt_s(f, "a: 1\n"));
    pt_run_ok(f, hp);
    assert_string_equal(ck_py_map_get(hp, "y", NULL)->u.s.s,
                        "a: 1\nc: 0x10000000000000000\n"
                        "b: -18446744073709551616\n");
    pt_changed(f, "\"key\":\"c\",\"new\":\"18446744073709551616\"}");
    /* Python refuses int() of more than 4300 digits: so does the check */
    snprintf(text, sizeof(text), HEAD "set = a=1%04300d\n", 0);
    pt_bad(f, text, 5, "an int of more than 4300 digits");
    snprintf(text, sizeof(text), HEAD "config = hp\nset = ++a=1%04299d\n", 0);
    pt_job_reset(f);
    pt_load_ok(f, text);
    pt_run_ok(f, plain_model(f));
    assert_int_equal(get(f, "hp/a")->len, 1786);
}

/* ---- ~key=value ------------------------------------------------------- */

static void test_delete_value_plain(void **state)
{
    pt_fx_t *f = *state;

    /* Python's ==: 1e-3 == 0.001, 4.0 == 4, 1 == True, lists in order */
    run_plain(f, "set = ~lr=1e-3\nset = ~model.dim=4.0\nset = ~flag=1\n"
                 "set = ~name=lm\nset = ~betas=[0.9, 0.999]\n");
    assert_string_equal(pt_keys(get(f, "hp")), "model");
    assert_string_equal(pt_keys(get(f, "hp/model")), "vocab");
    pt_changed(f, "{\"op\":\"removed\",\"config\":\"hp\",\"key\":\"flag\","
                  "\"old\":true}");
    assert_int_equal(pt_nchanges(f), 5);
    /* dicts by their items, in any order; ~key still removes anything */
    run_plain(f, "set = ~model={vocab: 10, dim: 4}\nset = ~betas\n");
    assert_string_equal(pt_keys(get(f, "hp")), "lr name flag");
    /* big ints, and an int against the float of the same value */
    run_plain(f, "set = +a=18446744073709551616\nset = ~a=18446744073709551616\n"
                 "set = +b=18446744073709551616\nset = ~b=1.8446744073709552e19\n"
                 "set = +c=-3\nset = ~c=-3.0\n");
    assert_string_equal(pt_keys(get(f, "hp")), "lr model name betas flag");

    /* otherwise the job fails naming the key, the value and the expected */
    plain_fails(f, "set = ~lr=0.01\n",
                "config_override: ~lr=0.01: the value of 'lr' is 0.001, not "
                "0.01", NULL);
    plain_fails(f, "set = ~name=lm2\n", "the value of 'name' is 'lm', not "
                                        "'lm2'", NULL);
    plain_fails(f, "set = ~model.dim='4'\n",
                "the value of 'model.dim' is 4, not '4'", NULL);
    plain_fails(f, "set = ~model.dim=true\n", "is 4, not True", NULL);
    plain_fails(f, "set = ~betas=[0.999, 0.9]\n",
                "the value of 'betas' is [0.9, 0.999], not [0.999, 0.9]", NULL);
    plain_fails(f, "set = ~model={dim: 4}\n",
                "the value of 'model' is {'dim': 4, 'vocab': 10}, not "
                "{'dim': 4}", NULL);
    plain_fails(f, "set = ~flag=\n", "the value of 'flag' is True, not ''",
                NULL);
    /* null is a value to compare like any other */
    plain_fails(f, "set = ~name=null\n", "is 'lm', not None", NULL);
    plain_fails(f, "set = +a=9007199254740993\nset = ~a=9007199254740992.0\n",
                "is 9007199254740993, not 9007199254740992.0", NULL);
    plain_fails(f, "set = +a=18446744073709551616\n"
                   "set = ~a=18446744073709551617\n",
                "is 18446744073709551616, not 18446744073709551617", NULL);
    plain_fails(f, "set = +a=nan\nset = ~a=nan\n", "is nan, not nan", NULL);
    plain_fails(f, "set = ~nosuch=1\n", "~nosuch=1: no key 'nosuch' to remove",
                NULL);
    /* the set line is checked like any other */
    pt_bad(f, HEAD "set = ~a=[1, 2\n", 5, "~a=[1, 2: YAML");
}

static void test_delete_value_yaml(void **state)
{
    static const char *const y =
        "optim:\n  lr: 0.0001\nlabel: '0123'\nflag: yes\nref: ${optim.lr}\n"
        "lst:\n- 1\n- two\nm: {a: 1, b: [x]}\n";
    pt_fx_t *f = *state;
    ck_py_t *root;
    static const struct {
        const char *set, *what;
    } bad[] = {
        { "~label=123", "the value of 'label' is '0123', not 123" },
        /* the YAML string says yes, a YAML 1.1 bool; Hydra's yes is a str */
        { "~flag=yes", "the value of 'flag' is True, not 'yes'" },
        { "~lst=[1]", "the value of 'lst' is [1, 'two'], not [1]" },
        { "~optim.lr=1e-3", "the value of 'optim.lr' is 0.0001, not 0.001" },
    };

    pt_load_ok(f, HEAD "config = y\nset = ~optim.lr=1e-4\nset = ~label='0123'\n"
                       "set = ~flag=true\nset = ~ref=${optim.lr}\n"
                       "set = ~lst=[1, two]\nset = ~m={b: [x], a: 1.0}\n");
    root = pt_dict(f);
    pt_set(f, root, "y", pt_s(f, y));
    pt_run_ok(f, root);
    assert_string_equal(ck_py_map_get(root, "y", NULL)->u.s.s, "optim: {}\n");
    assert_int_equal(pt_nchanges(f), 6);
    for (size_t i = 0; i < CK_ARRAY_SIZE(bad); i++) {
        char text[256];

        pt_job_reset(f);
        snprintf(text, sizeof(text), HEAD "config = y\nset = %s\n", bad[i].set);
        pt_load_ok(f, text);
        root = pt_dict(f);
        pt_set(f, root, "y", pt_s(f, y));
        pt_run_fails(f, root, CK_EPLUGIN, bad[i].what, NULL);
        /* nothing changed */
        assert_string_equal(ck_py_map_get(root, "y", NULL)->u.s.s, y);
    }
}

static void test_delete_value_dictconfig(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *cfg;

    open_sample(f, "set = ~solver=musicgen\n"
                   "set = ~optim.adam.betas=[0.9, 0.95]\n"
                   "set = ~dataset.valid={path: /data/valid}\n"
                   "set = ~sampling_rate_ref=${sample_rate}\n"
                   "set = ~transformer_lm.dim=6.0\n");
    pt_run_ok(f, NULL);
    cfg = ck_ckpt_get(&f->job.ck, "xp.cfg");
    assert_null(child(cfg, "solver"));
    assert_null(child(cfg, "sampling_rate_ref"));
    assert_null(child(child(child(cfg, "optim"), "adam"), "betas"));
    assert_null(child(child(cfg, "dataset"), "valid"));
    assert_null(child(child(cfg, "transformer_lm"), "dim"));
    assert_non_null(child(child(cfg, "dataset"), "train"));
    assert_int_equal(pt_nchanges(f), 5);
    open_sample(f, "set = ~optim.lr=1e-3\n");
    pt_run_fails(f, NULL, CK_EPLUGIN,
                 "~optim.lr=1e-3: the value of 'optim.lr' is 0.0001, not 0.001",
                 NULL);
    open_sample(f, "set = ~dataset.train={path: /data/train}\n");
    pt_run_fails(f, NULL, CK_EPLUGIN,
                 "the value of 'dataset.train' is {'path': '/data/train', "
                 "'num_samples': 1000}, not {'path': '/data/train'}",
                 NULL);
    open_sample(f, "set = ~optim.adam.betas=[0.9]\n");
    pt_run_fails(f, NULL, CK_EPLUGIN, "is [0.9, 0.95], not [0.9]", NULL);
    /* typed nodes compare their value: FloatNode 1 == 1.0, BooleanNode 1 */
    typed_run(f, "set = ~x=1.0\nset = ~b=true\nset = ~s=1\n");
    assert_string_equal(pt_keys(state_of(ck_ckpt_get(&f->job.ck, "cfg"),
                                         "_content")),
                        "i a en");
    typed_fails(f, "set = ~i='1'\n", "the value of 'i' is 1, not '1'");
}

/* In a YAML-string config a new value reads back, with OmegaConf's YAML
 * loader, as Hydra typed it. */
static void test_yaml_string_hydra_values(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *root;

    pt_load_ok(f, HEAD "config = y\n"
                       "set = ++s1=yes\nset = ++s2=0x10\nset = ++s3=\n"
                       "set = ++s4=NULL\nset = ++s5=TRUE\nset = ++s6=+7\n"
                       "set = ++s7=1_000\nset = ++s8=inf\nset = ++s9=-inf\n"
                       "set = ++sa=nan\nset = ++sb=+.5\nset = ++sc=.5e3\n"
                       "set = ++sd=1e5\nset = ++se=1.5_0\nset = ++sf=off\n"
                       "set = ++sg=[yes, 1, 0x1, '2']\nset = ++sh=1:30\n"
                       "set = ++si=hello world\nset = ++sj=007\n"
                       "set = ++sk={on: No}\n");
    root = pt_dict(f);
    pt_set(f, root, "y", pt_s(f, "a: 1\n"));
    pt_run_ok(f, root);
    assert_string_equal(ck_py_map_get(root, "y", NULL)->u.s.s,
                        "a: 1\n"
                        "s1: 'yes'\n"
                        "s2: '0x10'\n"
                        "s3: ''\n"
                        "s4: null\n"
                        "s5: true\n"
                        "s6: 7\n"
                        "s7: 1000\n"
                        "s8: .inf\n"
                        "s9: -.inf\n"
                        "sa: .nan\n"
                        "sb: 0.5\n"
                        "sc: 500.0\n"
                        "sd: 1e5\n"
                        "se: 1.5_0\n"
                        "sf: 'off'\n"
                        "sg: ['yes', 1, '0x1', '2']\n"
                        "sh: '1:30'\n"
                        "si: hello world\n"
                        "sj: '007'\n"
                        "sk: {'on': 'No'}\n");
}

/* The file = YAML is typed as OmegaConf's YAML loader types it (YAML 1.1),
 * unlike set lines. */
static void test_file_yaml_types(void **state)
{
    pt_fx_t *f = *state;
    char text[512];

    snprintf(text, sizeof(text), "file = %s\n",
             yaml_file(f, "t.yaml",
                       "y: yes\nn: Off\nh: 0x1F\no: 017\nb: 0b101\n"
                       "s60: 1:30\nf: 1e5\ninf: .inf\nninf: -.Inf\n"
                       "nan: .NaN\nsinf: inf\nnul: ~\nnul2: Null\n"
                       "u: 1_000\nstr: 09\ntr: tRUE\n"));
    run_plain(f, text);
    assert_int_equal(get(f, "hp/y")->kind, CK_PY_BOOL);
    assert_int_equal(get(f, "hp/y")->b, 1);
    assert_int_equal(get(f, "hp/n")->b, 0);
    assert_int_equal(get(f, "hp/h")->u.i.v, 31);
    assert_int_equal(get(f, "hp/o")->u.i.v, 15);
    assert_int_equal(get(f, "hp/b")->u.i.v, 5);
    assert_int_equal(get(f, "hp/s60")->u.i.v, 90);
    assert_true(ck_py_float_value(get(f, "hp/f")) == 1e5);
    assert_true(ck_py_float_value(get(f, "hp/inf")) == INFINITY);
    assert_true(ck_py_float_value(get(f, "hp/ninf")) == -INFINITY);
    assert_true(isnan(ck_py_float_value(get(f, "hp/nan"))));
    assert_true(ck_py_str_eq(get(f, "hp/sinf"), "inf"));
    assert_int_equal(get(f, "hp/nul")->kind, CK_PY_NONE);
    assert_int_equal(get(f, "hp/nul2")->kind, CK_PY_NONE);
    assert_int_equal(get(f, "hp/u")->u.i.v, 1000);
    assert_true(ck_py_str_eq(get(f, "hp/str"), "09"));
    assert_true(ck_py_str_eq(get(f, "hp/tr"), "tRUE"));
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, pt_setup, pt_teardown)
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_values),
        T(test_bad_set_lines),
        T(test_blanks_around_equals),
        T(test_bad_values),
        T(test_plain_grammar),
        T(test_plain_types),
        T(test_plain_collections),
        T(test_plain_order),
        T(test_plain_failures),
        T(test_file_merge),
        T(test_yaml_string),
        T(test_dictconfig),
        T(test_dictconfig_failures),
        T(test_typed_nodes),
        T(test_typed_conversions),
        T(test_big_ints),
        T(test_delete_value_plain),
        T(test_delete_value_yaml),
        T(test_delete_value_dictconfig),
        T(test_yaml_string_hydra_values),
        T(test_file_yaml_types),
    };
#undef T

    return cmocka_run_group_tests(tests, NULL, NULL);
}
