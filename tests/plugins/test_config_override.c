/*
 * test_config_override.c -- the config_override plugin: its directives
 * through the real loader (defaults; set lines checked at their own line
 * against Hydra's grammar: key=value, +key=value, ++key=value, ~key), and
 * its run over the three kinds of config it edits: a plain dict and a YAML
 * string built in memory, and the pickled OmegaConf DictConfig of
 * tests/data/sample.th (written by torch.save), plus typed nodes built in
 * memory.  Values are typed as OmegaConf types YAML scalars; the file =
 * merge is deep; failures name the override and the key.
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

    pt_load_ok(f, "[pipeline]\nchain = config_override\n");
    assert_string_equal(pt_str(f, "config"), "xp.cfg");
    assert_string_equal(pt_list(f, "set"), "");
    assert_null(pt_str(f, "file"));
    /* "file =" is no file */
    pt_load_ok(f, HEAD "file =\n");
    assert_null(pt_str(f, "file"));
}

static void test_values(void **state)
{
    pt_fx_t *f = *state;

    pt_load_ok(f, HEAD "config = hyper_parameters\n"
                       "set = optim.lr=1e-5\n"
                       "set = +a.b.c=[1, 2]\n"
                       "set = ++d={e: f, g: [h]}\n"
                       "set = ~old.key\n"
                       "set = x=${optim.lr}\n"
                       "set = s='quoted: yes'\n"
                       "set = e=a=b\n"
                       "set = n=\n"
                       "file = /etc/ckprep/merge.yaml\n");
    assert_string_equal(pt_str(f, "config"), "hyper_parameters");
    assert_string_equal(pt_list(f, "set"),
                        "optim.lr=1e-5|+a.b.c=[1, 2]|++d={e: f, g: [h]}|"
                        "~old.key|x=${optim.lr}|s='quoted: yes'|e=a=b|n=");
    assert_string_equal(pt_str(f, "file"), "/etc/ckprep/merge.yaml");
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
        { "a=[1, *x]", "YAML aliases are not supported" },
        { "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.A.B.C.D.E.F.G=1",
          "key too deep" },
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

    pt_bad(f, HEAD "file = a.yaml\nfile = b.yaml\n", 6,
           "'file' given twice in [config_override]");
    pt_bad(f, HEAD "config = a\nconfig = b\n", 6, "'config' given twice");
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
               "\"old\":\"<container>\"},"
               "{\"op\":\"set\",\"config\":\"hp\",\"key\":\"model.dim\","
               "\"old\":4,\"new\":8},"
               "{\"op\":\"set\",\"config\":\"hp\",\"key\":\"name\","
               "\"old\":\"lm\",\"new\":\"007\"},"
               "{\"op\":\"added\",\"config\":\"hp\","
               "\"key\":\"new.deep.key\",\"new\":1}]");
    assert_int_equal(pt_nchanges(f), 6);
}

/* Scalars are typed as OmegaConf types them. */
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
        { "++t=true", "t", CK_PY_BOOL, 1, NULL },
        { "++t2=False", "t2", CK_PY_BOOL, 0, NULL },
        { "++n=null", "n", CK_PY_NONE, 0, NULL },
        { "++n2=~", "n2", CK_PY_NONE, 0, NULL },
        { "++n3=", "n3", CK_PY_NONE, 0, NULL },
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
            assert_true(ck_py_float_value(v) == cases[i].num);
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
    /* key=value replaces a whole collection: vocab is gone */
    assert_string_equal(pt_keys(get(f, "hp/model")), "dim");
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
                  "newtop: hi\nlr: 2.0e-4\nbetas: {a: 1}\n");
    snprintf(text, sizeof(text), "file = %s\nset = lr=1e-5\n", p);
    run_plain(f, text);
    /* mappings merge: vocab stays; the rest replaces; then set applies */
    assert_string_equal(pt_keys(get(f, "hp/model")), "dim vocab extra");
    assert_int_equal(get(f, "hp/model/dim")->u.i.v, 16);
    assert_int_equal(get(f, "hp/model/vocab")->u.i.v, 10);
    assert_int_equal(get(f, "hp/model/extra/x")->u.i.v, 1);
    assert_true(ck_py_str_eq(get(f, "hp/newtop"), "hi"));
    assert_true(ck_py_float_value(get(f, "hp/lr")) == 1e-5);
    assert_int_equal(get(f, "hp/betas")->kind, CK_PY_DICT);
    pt_changed(f, "{\"op\":\"set\",\"config\":\"hp\",\"key\":\"lr\","
                  "\"old\":0.001,\"new\":0.0002");
    pt_changed(f, "{\"op\":\"set\",\"config\":\"hp\",\"key\":\"lr\","
                  "\"old\":0.0002");
    pt_changed(f, "{\"op\":\"added\",\"config\":\"hp\",\"key\":\"model.extra\","
                  "\"new\":{\"x\":1}}");

    /* a missing file, and one that is not a mapping */
    pt_job_reset(f);
    snprintf(text, sizeof(text), HEAD "config = hp\nfile = %s/missing.yaml\n",
             f->dir);
    pt_load_ok(f, text);
    pt_run_fails(f, plain_model(f), CK_EPLUGIN, "missing.yaml",
                 "No such file", NULL);
    pt_job_reset(f);
    p = yaml_file(f, "list.yaml", "- a\n- b\n");
    snprintf(text, sizeof(text), HEAD "config = hp\nfile = %s\n", p);
    pt_load_ok(f, text);
    pt_run_fails(f, plain_model(f), CK_EPLUGIN,
                 "list.yaml is not a YAML mapping", NULL);
    pt_job_reset(f);
    p = yaml_file(f, "bad.yaml", "a: [1, 2\n");
    snprintf(text, sizeof(text), HEAD "config = hp\nfile = %s\n", p);
    pt_load_ok(f, text);
    pt_run_fails(f, plain_model(f), CK_EPLUGIN, "bad.yaml: YAML", NULL);
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
                           "z:\n"
                           "i: '${optim.lr}'\n");
    pt_changed(f, "{\"op\":\"removed\",\"config\":\"y\",\"key\":\"name\","
                  "\"old\":\"x\"}");
    pt_changed(
        f, "{\"op\":\"added\",\"config\":\"y\",\"key\":\"z\",\"new\":null}");
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
    content = ck_py_map_get(cfg->u.o.state, "_content", NULL);
    assert_non_null(content);
    return ck_py_map_get(content, key, NULL);
}

static ck_py_t *state_of(ck_py_t *node, const char *key)
{
    assert_non_null(node);
    return ck_py_map_get(node->u.o.state, key, NULL);
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
        ck_py_str_eq(ck_py_map_get(md->u.o.state, "key", NULL), "style"));
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
    cfg->u.o.state = st = pt_dict(f);
    content = pt_set(f, st, "_content", pt_dict(f));
    for (size_t i = 0; i < CK_ARRAY_SIZE(nodes); i++) {
        ck_py_t *n = pt_set(f, content, nodes[i].key, pt_new(f, CK_PY_NEWOBJ));

        n->u.o.fn = ck_ckpt_global(&f->job.ck, "omegaconf.nodes", nodes[i].cls);
        n->u.o.args = pt_new(f, CK_PY_TUPLE);
        n->u.o.state = pt_dict(f);
        pt_set(f, n->u.o.state, "_parent", cfg);
        pt_set(f, n->u.o.state, "_val", pt_i(f, 1));
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
    typed_fails(f, "set = i='3'\n", "not a valid value for a IntegerNode");
    typed_fails(f, "set = b=2\n", "'2' is not a valid value for a BooleanNode");
    typed_fails(f, "set = b=maybe\n", "not a valid value for a BooleanNode");
    typed_fails(f, "set = en=RED\n", "en=RED: cannot change a EnumNode");
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, pt_setup, pt_teardown)
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_values),
        T(test_bad_set_lines),
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
    };
#undef T

    return cmocka_run_group_tests(tests, NULL, NULL);
}
