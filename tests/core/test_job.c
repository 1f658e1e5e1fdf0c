/*
 * test_job.c -- the job: the plugin API of plugin.h as core implements it
 * (errors named after the running plugin, typed change reports, the model
 * seen through functions) and ck_job_run end to end on the bundled sample
 * checkpoint (tests/data/sample.th, written by torch.save).
 */
#include "job.h"
#include "record.h"

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
#include <unistd.h>

#define SAMPLE "tests/data/sample.th"

typedef struct {
    char dir[64];
    char ini[128];
    char out[128];
    ck_conf_t c;
    ck_err_t err;
    ck_job_t job;
    ck_json_t changes;
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    strcpy(f->dir, "/tmp/ck_test_job.XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->ini, sizeof(f->ini), "%s/ckprep.ini", f->dir);
    snprintf(f->out, sizeof(f->out), "%s/out.th", f->dir);
    ck_ckpt_init_mem(&f->job.ck, "in-memory");
    f->job.err = &f->err;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;

    ck_ckpt_close(&f->job.ck);
    ck_json_release(&f->changes);
    ck_conf_release(&f->c);
    unlink(f->out);
    unlink(f->ini);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void load(fx_t *f, const char *text)
{
    FILE *fp = fopen(f->ini, "w");

    assert_non_null(fp);
    assert_true(fputs(text, fp) >= 0);
    assert_int_equal(fclose(fp), 0);
    ck_conf_release(&f->c);
    memset(&f->err, 0, sizeof(f->err));
    if (ck_conf_load(&f->c, f->ini, &f->err) != 0)
        fail_msg("config: %s", f->err.msg);
    f->job.conf = &f->c;
}

/* ---- errors name the running plugin ----------------------------------- */

static void test_fail_prefix(void **state)
{
    fx_t *f = *state;

    load(f, "[pipeline]\nchain = optimizer_strip key_remap:second\n"
            "[key_remap:second]\nrename = a. => b.\n");
    /* outside a stage: the message as given */
    assert_int_equal(ck_job_fail(&f->job, CK_EPLUGIN, "plain %d", 1),
                     CK_EPLUGIN);
    assert_string_equal(f->err.msg, "plain 1");
    /* the first error wins */
    ck_job_fail(&f->job, CK_EFORMAT, "second");
    assert_string_equal(f->err.msg, "plain 1");
    assert_int_equal(ck_job_error(&f->job), CK_EPLUGIN);

    memset(&f->err, 0, sizeof(f->err));
    f->job.stage = &f->c.chain[0];
    ck_job_fail(&f->job, CK_EPLUGIN, "no '%s'", "x");
    assert_string_equal(f->err.msg, "optimizer_strip: no 'x'");

    memset(&f->err, 0, sizeof(f->err));
    f->job.stage = &f->c.chain[1];
    ck_job_fail(&f->job, CK_EPLUGIN, "bad");
    assert_string_equal(f->err.msg, "key_remap:second: bad");

    /* out of memory is said the same way everywhere */
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(ck_job_nomem(&f->job), CK_ENOMEM);
    assert_string_equal(f->err.msg, "out of memory");
    f->job.stage = NULL;
}

/* ---- typed change reports --------------------------------------------- */

static void value_cb(ck_json_t *j, const void *arg)
{
    ck_json_str(j, arg);
}

static void test_report_fields(void **state)
{
    fx_t *f = *state;
    ck_arena_t *a = ck_job_arena(&f->job);
    ck_py_t *keys[5];
    const int64_t shape[] = { 3, -1, 0 };

    keys[0] = ck_py_str(a, "a\"b", 3);
    keys[1] = ck_py_int(a, -7);
    keys[2] = ck_py_new(a, CK_PY_NONE);
    keys[3] = ck_py_new(a, CK_PY_TUPLE);
    keys[4] = ck_py_float(a, 0.5);
    ck_json_arr(&f->changes);
    f->job.changes = &f->changes;
    ck_job_report(&f->job, "one", CK_F_STR("s", "x"), CK_F_STR("null", NULL),
                  CK_F_STRN("n", "abcdef", 3), CK_F_U64("u", UINT64_MAX),
                  CK_F_I64("i", INT64_MIN), CK_F_BOOL("b", 7),
                  CK_F_KEY("k", keys[1]), CK_F_KEYS("ks", keys, 5),
                  CK_F_I64S("shape", shape, 3),
                  CK_F_VALUE("v", value_cb, "cb"));
    ck_job_report(&f->job, "two", CK_F_KEY("key", keys[0]));
    f->job.changes = NULL;
    /* with no changes array (a plain model) a report goes nowhere */
    ck_job_report(&f->job, "three", CK_F_STR("s", "x"));
    ck_json_end(&f->changes);
    assert_string_equal(
        ck_json_text(&f->changes),
        "[{\"op\":\"one\",\"s\":\"x\",\"null\":null,\"n\":\"abc\","
        "\"u\":18446744073709551615,\"i\":-9223372036854775808,"
        "\"b\":true,\"k\":-7,\"ks\":[\"a\\\"b\",-7,null,\"<tuple>\",0.5],"
        "\"shape\":[3,-1,0],\"v\":\"cb\"},"
        "{\"op\":\"two\",\"key\":\"a\\\"b\"}]");
}

/* ---- the model through the job API ------------------------------------ */

static void test_model_api(void **state)
{
    fx_t *f = *state;
    ck_arena_t *a = ck_job_arena(&f->job);
    ck_py_t *root = ck_py_new(a, CK_PY_DICT), *sd = ck_py_new(a, CK_PY_DICT);
    const ck_dtype_t *dt = ck_dtype_by_name("float32");
    const int64_t shape[] = { 2, 3 };
    float data[6] = { 1, 2, 3, 4, 5, 6 }, back[6];
    const ck_tensor_t *t;
    ck_py_vec_t *items;
    ck_py_t *node, *w;

    assert_non_null(dt);
    ck_job_set_root(&f->job, root);
    assert_ptr_equal(ck_job_root(&f->job), root);
    assert_int_equal(ck_py_vec_push(a, &root->u.seq,
                                    ck_py_str(a, "model", 5)), 0);
    assert_int_equal(ck_py_vec_push(a, &root->u.seq, sd), 0);
    w = ck_job_new_tensor(&f->job, dt, shape, 2, (const uint8_t *)data);
    assert_non_null(w);
    assert_int_equal(ck_py_vec_push(a, &sd->u.seq, ck_py_str(a, "w", 1)), 0);
    assert_int_equal(ck_py_vec_push(a, &sd->u.seq, w), 0);

    assert_int_equal(ck_job_mapping(&f->job, "model", &node, &items), 0);
    assert_ptr_equal(node, sd);
    assert_int_equal(items->n, 2);
    assert_ptr_equal(ck_job_get(&f->job, "model/w"), w);
    /* a tensor added in this job is found (the job scans for it) */
    t = ck_job_tensor(&f->job, w);
    assert_non_null(t);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->numel, 6);
    assert_ptr_equal(t->dtype, dt);
    assert_int_equal(ck_job_bytes_under(&f->job, root), 24);
    assert_int_equal(ck_job_read_tensor(&f->job, t, (uint8_t *)back), 0);
    assert_memory_equal(back, data, sizeof(data));
    assert_null(ck_job_metadata(&f->job, sd));
    /* one node per global */
    assert_ptr_equal(ck_job_global(&f->job, "collections", "OrderedDict"),
                     ck_job_global(&f->job, "collections", "OrderedDict"));
    /* with tensors_later (ck_job_run's open) a scan that ties storages
     * only -- a byte count's -- records no tensor; asking for one does */
    f->job.ck.tensors_later = 1;
    f->job.ck.stale = 1;
    assert_int_equal(ck_job_bytes_under(&f->job, root), 24);
    assert_int_equal(f->job.ck.ntensors, 0);
    assert_int_equal(f->job.ck.unrecorded, 1);
    t = ck_job_tensor(&f->job, w);
    assert_non_null(t);
    assert_int_equal(t->numel, 6);
    assert_int_equal(f->job.ck.ntensors, 1);
    assert_int_equal(f->job.ck.want_tensors, 0);

    /* a missing path and a tensor are not mappings: the job fails */
    assert_int_equal(ck_job_mapping(&f->job, "nosuch", &node, &items),
                     CK_EPLUGIN);
    assert_non_null(strstr(f->err.msg, "no 'nosuch' in the checkpoint"));
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(ck_job_mapping(&f->job, "model/w", NULL, &items),
                     CK_EPLUGIN);
    assert_non_null(strstr(f->err.msg, "'model/w' is not a dict"));
}

/* ---- ck_job_run end to end --------------------------------------------- */

/* The output opens, and what optimizer_strip stripped is gone. */
static void check_stripped(fx_t *f)
{
    ck_ckpt_t back;
    ck_open_opts_t o = { 0 };

    ck_limits_default(&o.lim);
    assert_int_equal(ck_ckpt_open(&back, f->out, &o, &f->err), 0);
    assert_null(ck_ckpt_get(&back, "optimizer"));
    assert_non_null(ck_ckpt_get(&back, "best_state/model"));
    ck_ckpt_close(&back);
}

static void test_run_sample(void **state)
{
    fx_t *f = *state;
    ck_job_args_t args = { 0 };
    ck_json_t rec = { 0 };
    const char *text;

    load(f, "[pipeline]\nchain = optimizer_strip:lbl\n");
    args.in = SAMPLE;
    args.out = f->out;
    memset(&f->err, 0, sizeof(f->err));
    if (ck_job_run(&f->c, &args, &rec, &f->err) != 0)
        fail_msg("run: %s", f->err.msg);
    text = ck_json_text(&rec);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"status\":\"ok\""));
    assert_non_null(strstr(text, "\"name\":\"optimizer_strip\","
                                 "\"label\":\"lbl\""));
    assert_non_null(strstr(text, "{\"op\":\"removed\",\"path\":\"optimizer\","));
    ck_json_release(&rec);
    check_stripped(f);
}

/* A stream in (a descriptor read in one pass) and out (written in one
 * pass): the record names both '-' and gives the input's size. */
static void test_run_stream(void **state)
{
    fx_t *f = *state;
    ck_job_args_t args = { 0 };
    ck_json_t rec = { 0 };
    const char *text;
    char want[64];
    FILE *in;

    load(f, "[pipeline]\nchain = optimizer_strip\n");
    in = fopen(SAMPLE, "rb");
    assert_non_null(in);
    args.in = "-";
    args.out = "-";
    args.stream_in = args.stream_out = 1;
    args.in_fd = fileno(in);
    args.out_fd = open(f->out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(args.out_fd >= 0);
    memset(&f->err, 0, sizeof(f->err));
    if (ck_job_run(&f->c, &args, &rec, &f->err) != 0)
        fail_msg("run: %s", f->err.msg);
    close(args.out_fd);
    fseek(in, 0, SEEK_END);
    snprintf(want, sizeof(want), "\"input\":{\"path\":\"-\",\"size\":%ld,",
             ftell(in));
    fclose(in);
    text = ck_json_text(&rec);
    assert_non_null(strstr(text, want));
    assert_non_null(strstr(text, "\"output\":{\"path\":\"-\","));
    assert_non_null(strstr(text, "\"status\":\"ok\""));
    ck_json_release(&rec);
    check_stripped(f);
}

static void test_run_failure_named(void **state)
{
    fx_t *f = *state;
    ck_job_args_t args = { 0 };
    ck_json_t rec = { 0 };
    const char *text;

    load(f, "[pipeline]\nchain = prefix_select:x\n"
            "[prefix_select:x]\nstate = nosuch/model\nkeep = a.\n");
    args.in = SAMPLE;
    args.out = f->out;
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(ck_job_run(&f->c, &args, &rec, &f->err), CK_EPLUGIN);
    assert_string_equal(f->err.msg,
                        "prefix_select:x: no 'nosuch/model' in the checkpoint");
    text = ck_json_text(&rec);
    assert_non_null(strstr(text, "\"status\":\"failed\""));
    assert_non_null(strstr(text, "\"code\":\"plugin\""));
    /* nothing is written */
    assert_int_equal(access(f->out, F_OK), -1);
    ck_json_release(&rec);
}

/* ---- a job that could not start still has its record ------------------ */
static void test_record_failed(void **state)
{
    fx_t *f = *state;
    ck_json_t rec = { 0 };
    ck_record_t r = { 0 };
    ck_err_t e = { 0 };
    const char *text;

    load(f, "[pipeline]\nchain = optimizer_strip\n");
    ck_err_set(&e, -ELOOP, "sandbox: landlock: %s", "Too many links");
    ck_job_record_failed(&f->c, "in/a.th", 1234, &rec, &e);
    text = ck_json_text(&rec);
    assert_non_null(text);
    assert_int_equal(ck_record_parse(text, strlen(text), &r), 0);
    assert_string_equal(r.status, "failed");
    assert_string_equal(r.error_code, ck_errname(-ELOOP));
    assert_string_equal(r.error_message, "sandbox: landlock: Too many links");
    assert_string_equal(r.in.path, "in/a.th");
    assert_int_equal(r.in.size, 1234);
    assert_false(r.in.opened);
    assert_false(r.wrote);
    assert_string_equal(r.config_path, f->c.path);
    assert_string_equal(r.config_digest, f->c.digest);
    assert_non_null(r.ts);
    ck_record_release(&r);
    ck_json_release(&rec);
}

/* ---- the writer refuses two equal keys --------------------------------- */

/* A plugin that renamed two keys onto one: whatever made the graph, the
 * writer refuses it, naming the mapping, and leaves no file. */
/* A dict of n str keys "k0".. under name in root, the last key made
 * "k<dup>" when dup is not -1. */
static void add_dict(ck_arena_t *a, ck_py_t *root, const char *name, int n,
                     int dup)
{
    ck_py_t *d = ck_py_new(a, CK_PY_DICT);
    char k[32];

    ck_py_vec_push(a, &root->u.seq, ck_py_str(a, name, strlen(name)));
    ck_py_vec_push(a, &root->u.seq, d);
    for (int i = 0; i < n; i++) {
        snprintf(k, sizeof(k), "k%d", i == n - 1 && dup >= 0 ? dup : i);
        ck_py_vec_push(a, &d->u.seq, ck_py_str(a, k, strlen(k)));
        ck_py_vec_push(a, &d->u.seq, ck_py_int(a, i));
    }
}

/* {"a\0b": [{5: {K1: {K2: {"k": 1, "k": 2}}}}]}, K1 and K2 of n bytes
 * each (none: the dict with the twice-held key right under the int). */
static ck_py_t *path_graph(ck_arena_t *a, size_t n)
{
    ck_py_t *root = ck_py_new(a, CK_PY_DICT), *l = ck_py_new(a, CK_PY_LIST);
    ck_py_t *d = ck_py_new(a, CK_PY_DICT), *dup = ck_py_new(a, CK_PY_DICT);
    char *k = ck_arena_alloc(a, n + 1);

    ck_py_vec_push(a, &dup->u.seq, ck_py_str(a, "k", 1));
    ck_py_vec_push(a, &dup->u.seq, ck_py_int(a, 1));
    ck_py_vec_push(a, &dup->u.seq, ck_py_str(a, "k", 1));
    ck_py_vec_push(a, &dup->u.seq, ck_py_int(a, 2));
    for (int level = 0; n > 0 && level < 2; level++) {
        ck_py_t *up = ck_py_new(a, CK_PY_DICT);

        memset(k, level ? 'x' : 'y', n);
        ck_py_vec_push(a, &up->u.seq, ck_py_str(a, k, n));
        ck_py_vec_push(a, &up->u.seq, dup);
        dup = up;
    }
    ck_py_vec_push(a, &d->u.seq, ck_py_int(a, 5));
    ck_py_vec_push(a, &d->u.seq, dup);
    ck_py_vec_push(a, &l->u.seq, d);
    ck_py_vec_push(a, &root->u.seq, ck_py_str(a, "a\0b", 3));
    ck_py_vec_push(a, &root->u.seq, l);
    return root;
}

/* The path in the message: a str key up to a NUL, a list's item and a
 * non-str key's pair by index, cut at 1023 bytes as snprintf cuts. */
static void test_check_keys_path(void **state)
{
    fx_t *f = *state;
    ck_arena_t *a = ck_job_arena(&f->job);
    char want[sizeof(f->err.msg)];

    ck_job_set_root(&f->job, path_graph(a, 0));
    assert_int_equal(ck_ckpt_check_keys(&f->job.ck, &f->err), CK_EFORMAT);
    assert_string_equal(f->err.msg, "'a/0/0' would hold the key 'k' twice "
                        "(items 0 and 1): torch.load would keep one and "
                        "lose the other");
    memset(&f->err, 0, sizeof(f->err));
    ck_job_set_root(&f->job, path_graph(a, 600));
    assert_int_equal(ck_ckpt_check_keys(&f->job.ck, &f->err), CK_EFORMAT);
    memcpy(want, "'a/0/0/", 7);
    memset(want + 7, 'x', 600);
    want[607] = '/';
    /* the path is cut at 1023 bytes, the message after 1023 in all */
    memset(want + 608, 'y', sizeof(want) - 1 - 608);
    want[sizeof(want) - 1] = '\0';
    assert_string_equal(f->err.msg, want);
}

/*
 * The check's map of str keys is kept from mapping to mapping (cleared),
 * or made anew when far too big: a duplicate is found either way, in the
 * mapping that holds it and only there.
 */
static void test_check_keys_map_kept(void **state)
{
    static const struct {
        int n[3];   /* keys in dicts a, b, c */
        int dup;    /* which dict repeats a key (-1: none) */
    } cases[] = {
        { { 1000, 900, 40 }, -1 },
        { { 1000, 900, 40 }, 1 },   /* b reuses a's map */
        { { 1000, 900, 40 }, 2 },   /* c: a map of its own */
        { { 40, 1000, 40 }, 0 },
        { { 40, 1000, 1000 }, 2 },
        { { 40, 1000, 1000 }, -1 },
    };
    fx_t *f = *state;
    ck_arena_t *a = ck_job_arena(&f->job);
    static const char *const names[] = { "a", "b", "c" };

    for (size_t t = 0; t < CK_ARRAY_SIZE(cases); t++) {
        ck_py_t *root = ck_py_new(a, CK_PY_DICT);
        char want[64];

        for (int d = 0; d < 3; d++)
            add_dict(a, root, names[d], cases[t].n[d],
                     cases[t].dup == d ? 3 : -1);
        ck_job_set_root(&f->job, root);
        memset(&f->err, 0, sizeof(f->err));
        if (cases[t].dup < 0) {
            assert_int_equal(ck_ckpt_check_keys(&f->job.ck, &f->err), 0);
            continue;
        }
        assert_int_equal(ck_ckpt_check_keys(&f->job.ck, &f->err), CK_EFORMAT);
        snprintf(want, sizeof(want), "'%s' would hold the key 'k3' twice",
                 names[cases[t].dup]);
        if (strstr(f->err.msg, want) == NULL)
            fail_msg("case %zu: %s", t, f->err.msg);
    }
    /* int keys between the str keys (the str keys' hashes are taken
     * ahead of their probes): a repeated str key is still found */
    for (int dup = 0; dup < 2; dup++) {
        ck_py_t *root = ck_py_new(a, CK_PY_DICT), *d = ck_py_new(a, CK_PY_DICT);
        char k[32];

        ck_py_vec_push(a, &root->u.seq, ck_py_str(a, "m", 1));
        ck_py_vec_push(a, &root->u.seq, d);
        for (int i = 0; i < 100; i++) {
            snprintf(k, sizeof(k), "k%d", dup && i == 99 ? 41 : i);
            ck_py_vec_push(a, &d->u.seq, i % 3 == 1 ? ck_py_int(a, i)
                                                    : ck_py_str(a, k,
                                                                strlen(k)));
            ck_py_vec_push(a, &d->u.seq, ck_py_int(a, i));
        }
        ck_job_set_root(&f->job, root);
        memset(&f->err, 0, sizeof(f->err));
        assert_int_equal(ck_ckpt_check_keys(&f->job.ck, &f->err),
                         dup ? CK_EFORMAT : 0);
        if (dup)
            assert_non_null(strstr(f->err.msg, "key 'k41' twice (items 41 "
                                               "and 99)"));
    }
}

static void test_write_refuses_duplicate_keys(void **state)
{
    fx_t *f = *state;
    ck_arena_t *a = ck_job_arena(&f->job);
    ck_py_t *root = ck_py_new(a, CK_PY_DICT), *best = ck_py_new(a, CK_PY_DICT);
    ck_py_t *sd = ck_py_new(a, CK_PY_REDUCE), *ints = ck_py_new(a, CK_PY_DICT);
    const ck_dtype_t *dt = ck_dtype_by_name("float32");
    const int64_t shape[] = { 2 };
    float d0[2] = { 0, 0 }, d1[2] = { 1, 1 };
    ck_write_info_t info;

    sd->u.o.fn = ck_job_global(&f->job, "collections", "OrderedDict");
    sd->u.o.args = ck_py_new(a, CK_PY_TUPLE);
    ck_job_set_root(&f->job, root);
    ck_py_vec_push(a, &root->u.seq, ck_py_str(a, "best_state", 10));
    ck_py_vec_push(a, &root->u.seq, best);
    ck_py_vec_push(a, &best->u.seq, ck_py_str(a, "model", 5));
    ck_py_vec_push(a, &best->u.seq, sd);
    ck_py_vec_push(a, &ck_py_after_make(a, sd)->dict, ck_py_str(a, "w", 1));
    ck_py_vec_push(a, &ck_py_after_make(a, sd)->dict,
                   ck_job_new_tensor(&f->job, dt, shape, 1, (uint8_t *)d0));
    ck_py_vec_push(a, &ck_py_after_make(a, sd)->dict, ck_py_str(a, "x", 1));
    ck_py_vec_push(a, &ck_py_after_make(a, sd)->dict, ck_py_int(a, 1));
    ck_py_vec_push(a, &ck_py_after_make(a, sd)->dict, ck_py_str(a, "w", 1));
    ck_py_vec_push(a, &ck_py_after_make(a, sd)->dict,
                   ck_job_new_tensor(&f->job, dt, shape, 1, (uint8_t *)d1));
    assert_int_equal(ck_ckpt_scan(&f->job.ck, &f->err), 0);
    assert_int_equal(ck_ckpt_write(&f->job.ck, f->out, &info, &f->err),
                     CK_EFORMAT);
    assert_string_equal(f->err.msg,
                        "'best_state/model' would hold the key 'w' twice "
                        "(items 0 and 2): torch.load would keep one and lose "
                        "the other");
    assert_int_equal(access(f->out, F_OK), -1);

    /* without the duplicate it writes; int keys are compared too */
    ck_py_vec_remove(&ck_py_after_make(a, sd)->dict, 4, 2);
    ck_py_vec_push(a, &root->u.seq, ck_py_str(a, "ints", 4));
    ck_py_vec_push(a, &root->u.seq, ints);
    ck_py_vec_push(a, &ints->u.seq, ck_py_int(a, 7));
    ck_py_vec_push(a, &ints->u.seq, ck_py_int(a, 1));
    ck_py_vec_push(a, &ints->u.seq, ck_py_int(a, 7));
    ck_py_vec_push(a, &ints->u.seq, ck_py_int(a, 2));
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(ck_ckpt_write(&f->job.ck, f->out, &info, &f->err),
                     CK_EFORMAT);
    assert_non_null(strstr(f->err.msg, "'ints' would hold the key '7'"));
    ck_py_vec_remove(&ints->u.seq, 2, 2);
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(ck_ckpt_write(&f->job.ck, f->out, &info, &f->err), 0);
    assert_int_equal(access(f->out, F_OK), 0);

    /* many other keys (found by hash, not pair by pair): two equal tuples
     * after 5000 ints, and the first duplicate is the one named */
    for (int64_t k = 100; k < 5100; k++) {
        ck_py_vec_push(a, &ints->u.seq, ck_py_int(a, k));
        ck_py_vec_push(a, &ints->u.seq, ck_py_int(a, k));
    }
    for (int r = 0; r < 3; r++) {
        ck_py_t *t = ck_py_new(a, CK_PY_TUPLE);

        ck_py_vec_push(a, &t->u.seq, ck_py_int(a, 3));
        ck_py_vec_push(a, &t->u.seq, ck_py_str(a, "a", 1));
        ck_py_vec_push(a, &ints->u.seq, t);
        ck_py_vec_push(a, &ints->u.seq, ck_py_int(a, r));
    }
    ck_py_vec_push(a, &ints->u.seq, ck_py_int(a, 100));
    ck_py_vec_push(a, &ints->u.seq, ck_py_int(a, 0));
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(ck_ckpt_write(&f->job.ck, f->out, &info, &f->err),
                     CK_EFORMAT);
    assert_non_null(strstr(f->err.msg, "(items 5001 and 5002)"));
    ck_py_vec_remove(&ints->u.seq, 2 * 5002, 4); /* the two equal tuples */
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(ck_ckpt_write(&f->job.ck, f->out, &info, &f->err),
                     CK_EFORMAT);
    assert_non_null(strstr(f->err.msg, "the key '100' twice (items 1 and "
                                       "5002)"));
    ck_py_vec_remove(&ints->u.seq, ints->u.seq.n - 2, 2);
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(ck_ckpt_write(&f->job.ck, f->out, &info, &f->err), 0);

    /* more str keys than the small mappings' pairwise check takes */
    for (int k = 0; k < 40; k++) {
        char name[16];

        snprintf(name, sizeof(name), "k%d", k % 39);
        ck_py_vec_push(a, &ck_py_after_make(a, sd)->dict, ck_py_str(a, name, strlen(name)));
        ck_py_vec_push(a, &ck_py_after_make(a, sd)->dict, ck_py_int(a, k));
    }
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(ck_ckpt_write(&f->job.ck, f->out, &info, &f->err),
                     CK_EFORMAT);
    assert_string_equal(f->err.msg,
                        "'best_state/model' would hold the key 'k0' twice "
                        "(items 2 and 41): torch.load would keep one and "
                        "lose the other");
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_fail_prefix),
        T(test_report_fields),
        T(test_model_api),
        T(test_run_sample),
        T(test_run_stream),
        T(test_run_failure_named),
        T(test_record_failed),
        T(test_check_keys_map_kept),
        T(test_check_keys_path),
        T(test_write_refuses_duplicate_keys),
    };
#undef T

    return cmocka_run_group_tests(tests, NULL, NULL);
}
