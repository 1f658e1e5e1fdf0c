/*
 * test_prefix_select.c -- the prefix_select plugin: its directives through
 * the real loader (defaults, values, errors with FILE:LINE, the cross-field
 * check of 'root' against 'state') and its run over small models built in
 * memory: keep / drop / strip semantics on keys and _metadata, storage
 * sharing, keys that are not a str (removed by keep, kept by drop, always
 * reported), the failures, and 'root', which makes a dict the whole
 * checkpoint (written and read back: only its storages are written).
 */
#include "plugin_test.h"

#define HEAD "[pipeline]\nchain = prefix_select\n\n[prefix_select]\n"

/* The model the run tests use:
 *
 *   { "best_state": { "model": SD, "step": 1 },
 *     "epoch": 3,
 *     "optimizer": { "state": { "exp_avg": E }, "param_groups": [] } }
 *
 * SD, an OrderedDict with _metadata for "", enc, enc.0, enc.1, dec,
 * decoder, head:
 *   enc.0.weight  float32 2x3   storage A
 *   enc.0.bias    float32 2     storage B
 *   enc.1.weight  view of A (tied)
 *   dec.weight    float32 3x2   storage C
 *   decoder.bias  float32 3     storage D
 *   head.weight   view of C, transposed
 */
typedef struct {
    ck_py_t *root, *sd, *a, *b, *a2, *c, *d, *ct, *e;
} model_t;

static void build(pt_fx_t *f, model_t *m)
{
    static const int64_t size[] = { 2, 3 }, stride[] = { 3, 1 };
    static const int64_t tsize[] = { 2, 3 }, tstride[] = { 1, 2 };
    ck_py_t *best, *opt, *st;

    m->root = pt_dict(f);
    best = pt_set(f, m->root, "best_state", pt_dict(f));
    m->sd = pt_set(f, best, "model", pt_odict(f, 1));
    pt_set(f, best, "step", pt_i(f, 1));
    pt_set(f, m->root, "epoch", pt_i(f, 3));
    opt = pt_set(f, m->root, "optimizer", pt_dict(f));
    st = pt_set(f, opt, "state", pt_dict(f));
    m->e = pt_set(f, st, "exp_avg", pt_tensor(f, "float32", "4x3", 0, 1));
    pt_set(f, opt, "param_groups", pt_new(f, CK_PY_LIST));

    m->a = pt_tensor(f, "float32", "2x3", 1, 1);
    m->b = pt_tensor(f, "float32", "2", 10, 1);
    m->a2 = pt_view(f, m->a, 0, 2, size, stride);
    m->c = pt_tensor(f, "float32", "3x2", 20, 1);
    m->d = pt_tensor(f, "float32", "3", 30, 1);
    m->ct = pt_view(f, m->c, 0, 2, tsize, tstride);
    pt_set(f, m->sd, "enc.0.weight", m->a);
    pt_set(f, m->sd, "enc.0.bias", m->b);
    pt_set(f, m->sd, "enc.1.weight", m->a2);
    pt_set(f, m->sd, "dec.weight", m->c);
    pt_set(f, m->sd, "decoder.bias", m->d);
    pt_set(f, m->sd, "head.weight", m->ct);
    pt_meta(f, m->sd, "", 1);
    pt_meta(f, m->sd, "enc", 1);
    pt_meta(f, m->sd, "enc.0", 2);
    pt_meta(f, m->sd, "enc.1", 2);
    pt_meta(f, m->sd, "dec", 1);
    pt_meta(f, m->sd, "decoder", 1);
    pt_meta(f, m->sd, "head", 1);
}

static ck_py_t *sd_of(pt_fx_t *f)
{
    ck_py_t *sd = ck_ckpt_get(&f->job.ck, "best_state/model");

    assert_non_null(sd);
    return sd;
}

/* ---- directives ------------------------------------------------------- */

static void test_defaults(void **state)
{
    pt_fx_t *f = *state;

    /* named in the chain only: nothing to do, a configuration error */
    pt_bad(f, "[pipeline]\nchain = prefix_select\n", 2,
           "[prefix_select] nothing to do: give keep, drop or root");
    /* one directive: the others get their defaults */
    pt_load_ok(f, HEAD "drop = x.\n");
    assert_string_equal(pt_places(f, "state"), "best_state/model");
    assert_string_equal(pt_list(f, "keep"), "");
    assert_int_equal(pt_bool(f, "strip"), 0);
    assert_null(pt_place(f, "root"));
    pt_load_ok(f, HEAD "strip = yes\nkeep = a.\n");
    assert_int_equal(pt_bool(f, "strip"), 1);
    assert_string_equal(pt_places(f, "state"), "best_state/model");
    assert_null(pt_place(f, "root"));
}

static void test_values(void **state)
{
    pt_fx_t *f = *state;

    pt_load_ok(f, HEAD "state = a.b/c a.b/d|a.b/e\n"
                       "keep = x. y.,z.\n"
                       "drop = x.1.\n"
                       "keep = w.\n"
                       "strip = on\n"
                       "state = a.b/f?\n"
                       "root = a.b\n");
    /* keys may hold dots; places are separated by blanks, alternatives
     * by '|'; '?' makes one optional */
    assert_string_equal(pt_places(f, "state"), "a.b/c a.b/d|a.b/e a.b/f?");
    assert_string_equal(pt_list(f, "keep"), "x.|y.|z.|w.");
    assert_string_equal(pt_list(f, "drop"), "x.1.");
    assert_int_equal(pt_bool(f, "strip"), 1);
    assert_string_equal(pt_place(f, "root"), "a.b");
    /* an empty keep or drop is an empty list, not the default */
    pt_load_ok(f, HEAD "keep =\ndrop =\nroot = x\n");
    assert_string_equal(pt_list(f, "keep"), "");
    assert_string_equal(pt_list(f, "drop"), "");
    /* trailing slashes of root go; an empty root is no root */
    pt_load_ok(f, HEAD "root = state_dict//\n");
    assert_string_equal(pt_place(f, "root"), "state_dict");
    pt_load_ok(f, HEAD "root =\ndrop = x.\n");
    assert_null(pt_place(f, "root"));
    pt_load_ok(f, HEAD "root = /\ndrop = x.\n");
    assert_null(pt_place(f, "root"));
}

static void test_bad_values(void **state)
{
    pt_fx_t *f = *state;

    pt_bad(f, HEAD "keep = a.\nstrip = maybe\n", 6,
           "strip: 'maybe' is not yes or no");
    pt_bad(f, HEAD "state = a\n\nstate = b//c\n", 7,
           "state: 'b//c' is not a place: an empty level");
    pt_bad(f, HEAD "root = a b\n", 5, "root: one place only");
    pt_bad(f, HEAD "root = a\nroot = b\n", 6, "'root' given twice");
    pt_bad(f, HEAD "roots = a\n", 5,
           "unknown directive 'roots' in [prefix_select]");
    /* a labelled section is checked the same way */
    pt_bad(f, "[pipeline]\nchain = prefix_select:x\n[prefix_select:x]\n"
              "strip = 2\n",
           4, "strip: '2' is not yes or no");
}

/* init_conf: a filtered state outside root would be dropped anyway. */
static void test_root_cross_field(void **state)
{
    pt_fx_t *f = *state;

    /* the default state is not inside root = state_dict */
    pt_bad(f, HEAD "keep = model.\nroot = state_dict\n", 4,
           "[prefix_select] state 'best_state/model' is not inside root "
           "'state_dict'");
    /* a key that only starts like root is not inside it */
    pt_bad(f, HEAD "state = state_dict_ema\ndrop = x.\nroot = state_dict\n", 4,
           "not inside root");
    pt_bad(f, HEAD "state = best_state/model\ndrop = x.\nroot = best_state/m\n",
           4, "not inside root");
    /* inside, or equal: fine */
    pt_load_ok(f,
               HEAD "state = state_dict\nkeep = model.\nroot = state_dict\n");
    pt_load_ok(f,
               HEAD "state = best_state/model\ndrop = x.\nroot = best_state\n");
    pt_load_ok(f, HEAD "state = a/b\ndrop = x.\nroot = a/b/\n");
    /* no filtering: state does not matter */
    pt_load_ok(f, HEAD "root = state_dict\n");
    pt_load_ok(f, HEAD "strip = yes\nroot = state_dict\n");
}

/* ---- keep, drop, strip ------------------------------------------------ */

static void test_keep(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    pt_load_ok(f, HEAD "keep = enc.\n");
    build(f, &m);
    pt_run_ok(f, m.root);
    assert_string_equal(pt_keys(sd_of(f)),
                        "enc.0.weight enc.0.bias enc.1.weight");
    /* module m is kept when "m." starts with a keep prefix: not the root */
    assert_string_equal(pt_md_keys(f, sd_of(f)), "enc enc.0 enc.1");
    /* values are the same nodes; the tied pair still shares its storage */
    assert_ptr_equal(ck_py_map_get(sd_of(f), "enc.0.weight", NULL), m.a);
    assert_ptr_equal(pt_t(f, m.a)->st, pt_t(f, m.a2)->st);
    /* removed keys are reported with the bytes under them */
    pt_changed(f, "{\"op\":\"removed\",\"state\":\"best_state/model\","
                  "\"key\":\"dec.weight\",\"bytes\":24}");
    pt_changed(f, "\"key\":\"decoder.bias\",\"bytes\":12}");
    pt_changed(f, "\"key\":\"head.weight\",\"bytes\":24}");
    assert_int_equal(pt_nchanges(f), 3);
    /* dec's storages are no longer referenced; the rest of the model is */
    assert_int_equal(pt_live_storages(f), 3); /* A, B and exp_avg's */
    assert_string_equal(pt_keys(m.root), "best_state epoch optimizer");
}

static void test_keep_strip(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    pt_load_ok(f, HEAD "keep = enc.\nstrip = yes\n");
    build(f, &m);
    pt_run_ok(f, m.root);
    assert_string_equal(pt_keys(sd_of(f)), "0.weight 0.bias 1.weight");
    /* enc becomes the root module "", enc.0 becomes 0 */
    assert_string_equal(pt_md_keys(f, sd_of(f)), " 0 1");
    assert_ptr_equal(ck_py_map_get(sd_of(f), "1.weight", NULL), m.a2);
    pt_changed(f, "{\"op\":\"renamed\",\"state\":\"best_state/model\","
                  "\"key\":\"enc.0.weight\",\"to\":\"0.weight\"}");
    pt_changed(f, "\"key\":\"enc.1.weight\",\"to\":\"1.weight\"}");
    assert_int_equal(pt_nchanges(f), 6); /* 3 removed, 3 renamed */
    /* the metadata values follow their modules */
    {
        ck_py_t *md = ck_py_map_get(ck_py_after(sd_of(f))->state, "_metadata", NULL);
        ck_py_t *v = ck_py_map_get(md, "0", NULL);

        assert_non_null(v);
        assert_int_equal(ck_py_map_get(v, "version", NULL)->u.i.v, 2);
    }
}

/* The first keep prefix that matches is the one stripped. */
static void test_keep_order(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    pt_load_ok(f, HEAD "keep = enc. enc.0.\nstrip = yes\n");
    build(f, &m);
    pt_run_ok(f, m.root);
    assert_string_equal(pt_keys(sd_of(f)), "0.weight 0.bias 1.weight");
    pt_job_reset(f);
    pt_load_ok(f, HEAD "keep = enc.0. enc.\nstrip = yes\n");
    build(f, &m);
    pt_run_ok(f, m.root);
    assert_string_equal(pt_keys(sd_of(f)), "weight bias 1.weight");
    /* enc and enc.0 both become the root module: it is there once (the
     * output had it twice before the writer refused duplicate keys) */
    assert_string_equal(pt_md_keys(f, sd_of(f)), " 1");
}

/* Prefixes are text: "dec" keeps dec.* and decoder.*. */
static void test_textual_prefix(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    pt_load_ok(f, HEAD "keep = dec\n");
    build(f, &m);
    pt_run_ok(f, m.root);
    assert_string_equal(pt_keys(sd_of(f)), "dec.weight decoder.bias");
    assert_string_equal(pt_md_keys(f, sd_of(f)), "dec decoder");
}

static void test_drop(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    pt_load_ok(f, HEAD "drop = enc.1. head.\n");
    build(f, &m);
    pt_run_ok(f, m.root);
    assert_string_equal(pt_keys(sd_of(f)),
                        "enc.0.weight enc.0.bias dec.weight decoder.bias");
    /* without keep, the root module stays */
    assert_string_equal(pt_md_keys(f, sd_of(f)), " enc enc.0 dec decoder");
    /* enc.1.weight was tied to enc.0.weight: its bytes are still written */
    pt_changed(f, "\"key\":\"enc.1.weight\",\"bytes\":24}");
    assert_int_equal(pt_nchanges(f), 2);
    assert_int_equal(pt_live_storages(f), 5);
}

static void test_keep_then_drop(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    pt_load_ok(f, HEAD "keep = enc.\ndrop = enc.0.b\nstrip = yes\n");
    build(f, &m);
    pt_run_ok(f, m.root);
    assert_string_equal(pt_keys(sd_of(f)), "0.weight 1.weight");
    /* "enc.0." does not start with the drop prefix "enc.0.b" */
    assert_string_equal(pt_md_keys(f, sd_of(f)), " 0 1");
}

/* A filter that filters nothing is refused by check; root must end the
 * chain (the plugins after it would look for what it made the top). */
static void test_nothing_to_do(void **state)
{
    pt_fx_t *f = *state;

    pt_bad(f, HEAD "strip = yes\n", 4, "nothing to do");
    pt_bad(f, "[pipeline]\nchain = prefix_select key_remap\n"
              "[prefix_select]\nroot = state_dict\n"
              "[key_remap]\nrename = a. => b.\n", 3,
           "root makes 'state_dict' the whole checkpoint, so 'key_remap' "
           "after it in the chain would not find what it looks for");
    pt_load_ok(f, "[pipeline]\nchain = key_remap prefix_select\n"
                  "[prefix_select]\nroot = state_dict\n"
                  "[key_remap]\nrename = a. => b.\n");
}

static void test_failures(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    /* a keep prefix that matches nothing fails, though another matched */
    pt_load_ok(f, HEAD "keep = enc. enx.\n");
    build(f, &m);
    pt_run_fails(f, m.root, CK_EPLUGIN, "keep prefix 'enx.' matches no key",
                 "best_state/model", NULL);
    /* state missing, or not a dict */
    pt_job_reset(f);
    pt_load_ok(f, HEAD "state = best_state/nosuch\ndrop = x\n");
    build(f, &m);
    pt_run_fails(f, m.root, CK_EPLUGIN, "best_state/nosuch", NULL);
    pt_job_reset(f);
    pt_load_ok(f, HEAD "state = epoch\ndrop = x\n");
    build(f, &m);
    pt_run_fails(f, m.root, CK_EPLUGIN, "'epoch' is not a dict", NULL);
    /* a tensor is not a dict either */
    pt_job_reset(f);
    pt_load_ok(f, HEAD "state = optimizer/state/exp_avg\nkeep = x\n");
    build(f, &m);
    pt_run_fails(f, m.root, CK_EPLUGIN,
                 "'optimizer/state/exp_avg' is not a dict", NULL);
}

/* ---- keys that are not a str ---------------------------------------- */

/* map[key] = v with any key node. */
static void set_any(pt_fx_t *f, ck_py_t *map, ck_py_t *key, ck_py_t *v)
{
    int oom = 0;
    ck_py_vec_t *m = ck_py_mapping_mut(PT_A(f), map, &oom);

    assert_non_null(m);
    assert_int_equal(ck_py_vec_push(PT_A(f), m, key), 0);
    assert_int_equal(ck_py_vec_push(PT_A(f), m, v), 0);
}

/* The model, plus sd[7] (float32 5, a storage of its own) and sd[None],
 * sd[(1, 2)], sd[2**64] (ints), and _metadata[3]. */
static ck_py_t *odd_keys(pt_fx_t *f, model_t *m)
{
    ck_py_t *t = pt_new(f, CK_PY_TUPLE), *big = pt_new(f, CK_PY_INT), *seven;
    static uint8_t b[9] = { 0, 0, 0, 0, 0, 0, 0, 0, 1 };

    build(f, m);
    seven = pt_tensor(f, "float32", "5", 0, 1);
    set_any(f, m->sd, pt_i(f, 7), seven);
    set_any(f, m->sd, pt_new(f, CK_PY_NONE), pt_i(f, 1));
    pt_push(f, t, pt_i(f, 1));
    pt_push(f, t, pt_i(f, 2));
    set_any(f, m->sd, t, pt_i(f, 2));
    big->u.i.big = b;
    big->len = sizeof(b);
    set_any(f, m->sd, big, pt_i(f, 3));
    set_any(f, ck_py_map_get(ck_py_after(m->sd)->state, "_metadata", NULL), pt_i(f, 3),
            pt_dict(f));
    return seven;
}

static void test_non_str_keys_keep(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    /* keep: a key that is not a str starts with no keep prefix: removed,
     * and reported with its type and its bytes */
    pt_load_ok(f, HEAD "keep = enc.\nstrip = yes\n");
    odd_keys(f, &m);
    pt_run_ok(f, m.root);
    assert_string_equal(pt_keys(sd_of(f)), "0.weight 0.bias 1.weight");
    assert_string_equal(pt_md_keys(f, sd_of(f)), " 0 1");
    pt_changed(f, "{\"op\":\"removed\",\"state\":\"best_state/model\","
                  "\"key\":7,\"key_type\":\"int\",\"reason\":\"not a str: "
                  "starts with no prefix\",\"bytes\":20}");
    pt_changed(f, "{\"op\":\"removed\",\"state\":\"best_state/model\","
                  "\"key\":null,\"key_type\":\"NoneType\"");
    pt_changed(f, "\"key\":\"<tuple>\",\"key_type\":\"tuple\"");
    pt_changed(f, "\"key\":\"<int>\",\"key_type\":\"int\"");
    /* 3 str keys and 4 others removed, 3 renamed */
    assert_int_equal(pt_nchanges(f), 10);
    assert_int_equal(pt_live_storages(f), 3);
}

static void test_non_str_keys_drop(void **state)
{
    pt_fx_t *f = *state;
    ck_write_info_t info;
    ck_py_t *seven, *sd;
    model_t m;

    /* drop alone: it starts with no drop prefix either: it stays as it
     * was, and the record says so */
    pt_load_ok(f, HEAD "drop = dec head.\n");
    seven = odd_keys(f, &m);
    pt_run_ok(f, m.root);
    assert_string_equal(pt_keys(sd_of(f)),
                        "enc.0.weight enc.0.bias enc.1.weight ? ? ? ?");
    assert_string_equal(pt_md_keys(f, sd_of(f)), " enc enc.0 enc.1 ?");
    pt_changed(f, "{\"op\":\"kept\",\"state\":\"best_state/model\","
                  "\"key\":7,\"key_type\":\"int\",\"reason\":\"not a str: "
                  "starts with no prefix\"}");
    pt_changed(f, "{\"op\":\"kept\",\"state\":\"best_state/model\","
                  "\"key\":null,");
    assert_int_equal(pt_nchanges(f), 3 + 4);
    /* written and read back: the int key and its tensor are there */
    pt_write_back(f, &info);
    sd = ck_py_map_get(f->back.pk.root, "best_state", NULL);
    sd = ck_py_map_get(sd, "model", NULL);
    assert_string_equal(pt_keys(sd),
                        "enc.0.weight enc.0.bias enc.1.weight ? ? ? ?");
    assert_int_equal(ck_py_mapping(sd)->v[6]->kind, CK_PY_INT);
    assert_int_equal(ck_py_mapping(sd)->v[6]->u.i.v, 7);
    assert_memory_equal(pt_bytes(f, &f->back, ck_py_mapping(sd)->v[7]),
                        pt_bytes(f, &f->job.ck, seven), 20);
    /* a drop that matches nothing: kept and reported too */
    pt_job_reset(f);
    pt_load_ok(f, HEAD "strip = yes\ndrop = nothing.\n");
    odd_keys(f, &m);
    pt_run_ok(f, m.root);
    assert_int_equal(pt_nchanges(f), 4);
    pt_changed(f, "{\"op\":\"kept\",\"state\":\"best_state/model\","
                  "\"key\":7,");
}

/* root: a top-level key that is not a str is named as itself. */
static void test_non_str_keys_root(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    pt_load_ok(f, HEAD "root = best_state/model\n");
    build(f, &m);
    set_any(f, m.root, pt_i(f, 5), pt_i(f, 1));
    pt_run_ok(f, m.root);
    assert_string_equal(f->json,
                        "[{\"op\":\"root\",\"path\":\"best_state/model\","
                        "\"removed\":[\"epoch\",\"optimizer\",5],"
                        "\"bytes\":48}]");
}

/* ---- root ------------------------------------------------------------- */

static void test_root_only(void **state)
{
    pt_fx_t *f = *state;
    model_t m;
    ck_write_info_t info;

    /* the default state (best_state/model) is not needed without filters */
    pt_load_ok(f, HEAD "root = best_state/model\n");
    build(f, &m);
    pt_run_ok(f, m.root);
    assert_ptr_equal(f->job.ck.pk.root, m.sd);
    {
        int oom = 0;

        assert_non_null(ck_ckpt_metadata(&f->job.ck, f->job.ck.pk.root, &oom));
    }
    /* the optimizer's 48 bytes are dropped; 'best_state' is where root was */
    assert_string_equal(f->json,
                        "[{\"op\":\"root\",\"path\":\"best_state/model\","
                        "\"removed\":[\"epoch\",\"optimizer\"],"
                        "\"bytes\":48}]");
    assert_int_equal(pt_live_storages(f), 4);
    pt_write_back(f, &info);
    assert_int_equal(info.nstorages, 4);
    assert_int_equal(info.storage_bytes, 24 + 8 + 24 + 12);
    assert_string_equal(pt_keys(f->back.pk.root),
                        "enc.0.weight enc.0.bias enc.1.weight dec.weight "
                        "decoder.bias head.weight");
}

/* A Lightning-shaped checkpoint: state_dict becomes the file. */
static void test_root_lightning(void **state)
{
    static const int64_t size[] = { 4, 3 }, stride[] = { 3, 1 };
    pt_fx_t *f = *state;
    ck_py_t *root, *sd, *a, *a2, *b, *c, *opts, *opt, *st, *pg;
    ck_tensor_t *ta, *ta2, *tb;
    ck_write_info_t info;
    uint8_t *want;

    pt_load_ok(f, HEAD "state = state_dict\nkeep = model.lm.\nstrip = yes\n"
                       "root = state_dict\n");
    root = pt_dict(f);
    pt_set(f, root, "epoch", pt_i(f, 3));
    pt_set(f, root, "global_step", pt_i(f, 120));
    sd = pt_set(f, root, "state_dict", pt_odict(f, 1));
    a = pt_tensor(f, "float32", "4x3", 0.5, 0.25);
    a2 = pt_view(f, a, 0, 2, size, stride);
    b = pt_tensor(f, "float64", "3", -1, 0.5);
    c = pt_tensor(f, "float32", "2x3", 7, 1);
    pt_set(f, sd, "model.lm.emb.weight", a);
    pt_set(f, sd, "model.lm.head.weight", a2);
    pt_set(f, sd, "model.lm.norm.bias", b);
    pt_set(f, sd, "model.other.weight", c);
    pt_meta(f, sd, "", 1);
    pt_meta(f, sd, "model", 1);
    pt_meta(f, sd, "model.lm", 1);
    pt_meta(f, sd, "model.lm.emb", 1);
    pt_meta(f, sd, "model.lm.head", 1);
    pt_meta(f, sd, "model.lm.norm", 1);
    pt_meta(f, sd, "model.other", 1);
    opts = pt_set(f, root, "optimizer_states", pt_new(f, CK_PY_LIST));
    opt = pt_push(f, opts, pt_dict(f));
    st = pt_set(f, opt, "state", pt_dict(f));
    pt_set(f, st, "exp_avg", pt_tensor(f, "float32", "4x3", 0, 0));
    pg = pt_set(f, opt, "param_groups", pt_new(f, CK_PY_LIST));
    pt_push(f, pg, pt_dict(f));
    pt_set(f, root, "hyper_parameters", pt_dict(f));

    pt_run_ok(f, root);
    assert_ptr_equal(f->job.ck.pk.root, sd);
    pt_changed(f, "{\"op\":\"root\",\"path\":\"state_dict\",\"removed\":"
                  "[\"epoch\",\"global_step\",\"optimizer_states\","
                  "\"hyper_parameters\"],\"bytes\":48}");
    pt_changed(f, "\"key\":\"model.other.weight\",\"bytes\":24}");

    pt_write_back(f, &info);
    /* only the state dict's storages are written: A (tied) and B */
    assert_int_equal(info.nstorages, 2);
    assert_int_equal(info.storage_bytes, 48 + 24);
    assert_int_equal(f->back.nstorages, 2);
    sd = f->back.pk.root;
    assert_int_equal(sd->kind, CK_PY_REDUCE);
    assert_true(ck_py_global_is(sd->u.o.fn, "collections", "OrderedDict"));
    assert_string_equal(pt_keys(sd), "emb.weight head.weight norm.bias");
    assert_string_equal(pt_md_keys(f, sd), " emb head norm");
    ta = ck_ckpt_tensor(&f->back, ck_py_map_get(sd, "emb.weight", NULL));
    ta2 = ck_ckpt_tensor(&f->back, ck_py_map_get(sd, "head.weight", NULL));
    tb = ck_ckpt_tensor(&f->back, ck_py_map_get(sd, "norm.bias", NULL));
    assert_non_null(ta);
    assert_non_null(ta2);
    assert_non_null(tb);
    assert_ptr_equal(ta->st, ta2->st);
    assert_true(ta->st != tb->st);
    assert_string_equal(tb->dtype->name, "float64");
    /* bit for bit */
    want = pt_bytes(f, &f->job.ck, a);
    assert_memory_equal(pt_bytes(f, &f->back, ta->node), want, 48);
    want = pt_bytes(f, &f->job.ck, b);
    assert_memory_equal(pt_bytes(f, &f->back, tb->node), want, 24);
}

static void test_root_failures(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    pt_load_ok(f, HEAD "root = best_state/nosuch\n");
    build(f, &m);
    pt_run_fails(f, m.root, CK_EPLUGIN, "best_state/nosuch", NULL);
    assert_ptr_equal(f->job.ck.pk.root, m.root);
    pt_job_reset(f);
    pt_load_ok(f, HEAD "root = epoch\n");
    build(f, &m);
    pt_run_fails(f, m.root, CK_EPLUGIN, "'epoch' is not a dict", NULL);
    assert_ptr_equal(f->job.ck.pk.root, m.root);
    /* torch.load of the output must give a dict, never a tensor */
    pt_job_reset(f);
    pt_load_ok(f, HEAD "root = optimizer/state/exp_avg\n");
    build(f, &m);
    pt_run_fails(f, m.root, CK_EPLUGIN, "is not a dict", NULL);
    assert_ptr_equal(f->job.ck.pk.root, m.root);
    /* a keep failure stops the job before the root changes */
    pt_job_reset(f);
    pt_load_ok(f, HEAD "keep = nosuch.\nroot = best_state\n");
    build(f, &m);
    pt_run_fails(f, m.root, CK_EPLUGIN, "nosuch.", NULL);
    assert_ptr_equal(f->job.ck.pk.root, m.root);
}

/* Filtering and promoting a nested state dict's parent keeps the rest of
 * that parent. */
static void test_root_parent_of_state(void **state)
{
    pt_fx_t *f = *state;
    model_t m;
    ck_py_t *sd;

    pt_load_ok(f, HEAD "drop = dec head.\nroot = best_state\n");
    build(f, &m);
    pt_run_ok(f, m.root);
    assert_string_equal(pt_keys(f->job.ck.pk.root), "model step");
    sd = ck_py_map_get(f->job.ck.pk.root, "model", NULL);
    assert_ptr_equal(sd, m.sd);
    assert_string_equal(pt_keys(sd), "enc.0.weight enc.0.bias enc.1.weight");
    pt_changed(f, "{\"op\":\"root\",\"path\":\"best_state\","
                  "\"removed\":[\"epoch\",\"optimizer\"],\"bytes\":48}");
}

/* Two keys stripped to one name: the job fails naming both, or with
 * on_conflict = replace the later wins (as a Python dict comprehension). */
static void test_strip_collision(void **state)
{
    pt_fx_t *f = *state;
    model_t m;

    pt_load_ok(f, HEAD "keep = enc.0. dec.\nstrip = yes\n");
    build(f, &m);
    pt_run_fails(f, m.root, CK_EPLUGIN, "prefix_select: best_state/model:",
                 "'enc.0.weight' and 'dec.weight' would both be renamed to "
                 "'weight'", NULL);

    pt_job_reset(f);
    pt_load_ok(f, HEAD "keep = enc.0. dec.\nstrip = yes\n"
                       "on_conflict = replace\n");
    build(f, &m);
    pt_run_ok(f, m.root);
    /* as {k[len(p):]: v ...}: 'weight' keeps its first place */
    assert_string_equal(pt_keys(sd_of(f)), "weight bias");
    assert_ptr_equal(ck_py_map_get(sd_of(f), "weight", NULL), m.c);
    pt_changed(f, "{\"op\":\"replaced\",\"state\":\"best_state/model\","
                  "\"key\":\"enc.0.weight\",\"bytes\":24}");
    /* module names collide too ("enc.0" and "dec" both become ""): one
     * stays, so the output has no duplicate key */
    assert_string_equal(pt_md_keys(f, sd_of(f)), "");
}

/*
 * A state dict whose _metadata is an empty OrderedDict (its call got no
 * items in the pickle, so it holds no room for them): the metadata is
 * edited where it can be (a build that kept no room wrote into the shared
 * empty items and crashed).
 */
static void test_empty_metadata(void **state)
{
    pt_fx_t *f = *state;
    ck_py_t *root, *sd;

    pt_load_ok(f, HEAD "state = state_dict\nkeep = model.\nstrip = yes\n");
    root = pt_empty_md_model(f, &sd);
    assert_string_equal(pt_md_keys(f, sd), "");
    pt_run_ok(f, root);
    assert_string_equal(pt_keys(sd), "w");
    assert_string_equal(pt_md_keys(f, sd), "");
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, pt_setup, pt_teardown)
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_values),
        T(test_bad_values),
        T(test_root_cross_field),
        T(test_keep),
        T(test_keep_strip),
        T(test_strip_collision),
        T(test_keep_order),
        T(test_textual_prefix),
        T(test_drop),
        T(test_keep_then_drop),
        T(test_nothing_to_do),
        T(test_failures),
        T(test_non_str_keys_keep),
        T(test_non_str_keys_drop),
        T(test_non_str_keys_root),
        T(test_root_only),
        T(test_root_lightning),
        T(test_root_failures),
        T(test_root_parent_of_state),
        T(test_empty_metadata),
    };
#undef T

    return cmocka_run_group_tests(tests, NULL, NULL);
}
