/*
 * test_safetensors.c -- safetensors files written here byte by byte:
 * opened as a model (tensors, shapes, bytes, metadata, names with escapes),
 * written back through ck_st_plan/ck_st_write and opened again, the
 * header rules each refused with its cause, and the fingerprint covering
 * every tensor byte.
 */
#include "safetensors.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char dir[64], in[128], out[128];
    ck_open_opts_t o;
    ck_ckpt_t c, c2;
    ck_err_t err;
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof(*f));

    strcpy(f->dir, "/tmp/ck_test_st.XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->in, sizeof(f->in), "%s/in.safetensors", f->dir);
    snprintf(f->out, sizeof(f->out), "%s/out.safetensors", f->dir);
    ck_limits_default(&f->o.lim);
    f->c.fd = f->c2.fd = -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;

    ck_ckpt_close(&f->c);
    ck_ckpt_close(&f->c2);
    unlink(f->in);
    unlink(f->out);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* A file of header hdr (padded with spaces to 8) and n data bytes. */
static void put(fx_t *f, const char *hdr, const void *data, size_t n)
{
    FILE *fp = fopen(f->in, "wb");
    size_t len = strlen(hdr), pad = (8 - len % 8) % 8;
    uint8_t lb[8];

    for (int i = 0; i < 8; i++)
        lb[i] = (uint8_t)((len + pad) >> (8 * i));
    fwrite(lb, 1, 8, fp);
    fwrite(hdr, 1, len, fp);
    for (size_t i = 0; i < pad; i++)
        fputc(' ', fp);
    fwrite(data, 1, n, fp);
    fclose(fp);
}

static int open_in(fx_t *f)
{
    ck_ckpt_close(&f->c);
    memset(&f->err, 0, sizeof(f->err));
    return ck_ckpt_open(&f->c, f->in, &f->o, &f->err);
}

static const float w[4] = { 1.0f, -2.5f, 3.25f, 0.0f };

static void test_open_and_back(void **state)
{
    fx_t *f = *state;
    uint8_t data[16 + 2];
    ck_output_conf_t oc = { CK_OUT_SAFETENSORS, "/", CK_TIED_REFUSE, NULL };
    ck_st_plan_t plan;
    ck_write_info_t info;
    ck_py_vec_t *m;
    float back[4];

    memcpy(data, w, 16);
    data[16] = 7;
    data[17] = 0xff;
    put(f, "{\"__metadata__\":{\"who\":\"t\"},"
           "\"w\\u00e9\\ud83d\\ude00\":{\"dtype\":\"F32\",\"shape\":[2,2],"
           "\"data_offsets\":[0,16]},"
           "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[16,18]},"
           "\"e\":{\"dtype\":\"F16\",\"shape\":[0,3],\"data_offsets\":[18,18]}}",
        data, sizeof(data));
    assert_int_equal(open_in(f), 0);
    assert_int_equal(f->c.format, CK_FMT_SAFETENSORS);
    m = ck_py_mapping(f->c.pk.root);
    assert_non_null(m);
    assert_int_equal(m->n, 6);
    assert_true(ck_py_str_eq(m->v[0], "w\xc3\xa9\xf0\x9f\x98\x80"));
    assert_int_equal(f->c.ntensors, 3);
    assert_int_equal(ck_ckpt_read_tensor(&f->c, ck_ckpt_tensor(&f->c, m->v[1]),
                                         (uint8_t *)back, &f->err), 0);
    assert_memory_equal(back, w, 16);
    assert_non_null(f->c.st_meta);
    assert_int_equal(ck_st_plan(&f->c, &oc, &plan, &f->err), 0);
    assert_int_equal(plan.n, 3);
    assert_int_equal(plan.header.len % 8, 0);
    assert_int_equal(ck_st_write(&f->c, &plan, f->out, &info, &f->err), 0);
    assert_int_equal(info.size, plan.header.len + 18);
    assert_non_null(strstr((const char *)plan.header.data + 8, "\"who\":\"t\""));
    ck_st_plan_release(&plan);
    assert_int_equal(ck_ckpt_open(&f->c2, f->out, &f->o, &f->err), 0);
    assert_int_equal(f->c2.ntensors, 3);
    /* the fingerprint of what was written is the one an open gives */
    assert_int_equal(ck_ckpt_fingerprint(&f->c2, &f->err), 0);
    assert_string_equal(info.fingerprint, f->c2.fingerprint);
}

static void refused(fx_t *f, const char *hdr, size_t n, const char *cause)
{
    uint8_t data[64] = { 0 };

    put(f, hdr, data, n);
    assert_true(open_in(f) < 0);
    if (strstr(f->err.msg, cause) == NULL)
        fail_msg("'%s' does not mention '%s' (header %s)", f->err.msg, cause,
                 hdr);
}

#define T(name, dt, shape, b, e)                                              \
    "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape                     \
    ",\"data_offsets\":[" #b "," #e "]}"

static void test_refused(void **state)
{
    fx_t *f = *state;

    refused(f, "{" T("a", "F32", "[2]", 0, 8) "," T("b", "F32", "[2]", 12, 20) "}",
            20, "gap");
    refused(f, "{" T("a", "F32", "[2]", 0, 8) "," T("b", "F32", "[2]", 4, 12) "}",
            12, "overlap");
    refused(f, "{" T("a", "F32", "[3]", 0, 8) "}", 8, "bytes");
    refused(f, "{" T("a", "X9", "[2]", 0, 8) "}", 8, "unknown dtype");
    refused(f, "{" T("a", "F32", "[2]", 0, 8) "," T("a", "F32", "[2]", 8, 16) "}",
            16, "twice");
    refused(f, "{" T("a", "F32", "[2]", 0, 8) "}", 16, "cover");
    refused(f, "{" T("a", "F32", "[2.0]", 0, 8) "}", 8, "whole number");
    refused(f, "{" T("a", "F32", "[-2]", 0, 8) "}", 8, "whole number");
    refused(f, "{" T("a", "F32", "[2]", 0, 8) "} x", 8, "after the object");
    refused(f, "{\"\\ud800\":{}}", 0, "surrogate");
    refused(f, "{\"a\\u0000\":{}}", 0, "NUL");
    refused(f, "{\"__metadata__\":{\"k\":[1]}}", 0, "strings");
    refused(f, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 0, "data_offsets");
    refused(f, "{" T("a", "U16", "[2]", 0, 4) "}", 4, "storage class");
}

static void test_tied(void **state)
{
    fx_t *f = *state;
    ck_output_conf_t oc = { CK_OUT_SAFETENSORS, "/", CK_TIED_REFUSE, NULL };
    ck_st_plan_t plan;
    ck_py_vec_t *m;

    put(f, "{" T("z", "F32", "[4]", 0, 16) "}", w, 16);
    assert_int_equal(open_in(f), 0);
    m = ck_py_mapping(f->c.pk.root);
    /* a second name for the same tensor node: tied */
    assert_int_equal(
        ck_py_vec_push(&f->c.arena, m, ck_py_str(&f->c.arena, "a", 1)), 0);
    assert_int_equal(ck_py_vec_push(&f->c.arena, m, m->v[1]), 0);
    assert_int_equal(ck_ckpt_scan(&f->c, &f->err), 0);
    assert_true(ck_st_plan(&f->c, &oc, &plan, &f->err) < 0);
    assert_non_null(strstr(f->err.msg, "tied"));
    ck_st_plan_release(&plan);
    oc.tied = CK_TIED_DEDUPE;
    memset(&f->err, 0, sizeof(f->err));
    assert_int_equal(ck_st_plan(&f->c, &oc, &plan, &f->err), 0);
    assert_int_equal(plan.n, 1);
    assert_int_equal(plan.nalias, 1);
    assert_string_equal(plan.alias[0], "z");
    assert_string_equal(plan.kept[0], "a");
    assert_non_null(strstr((const char *)plan.header.data + 8, "\"z\":\"a\""));
    ck_st_plan_release(&plan);
}

/* The fingerprint of f->in (opened, then completed). */
static void fp_of(fx_t *f, char out[65])
{
    assert_int_equal(open_in(f), 0);
    assert_string_equal(f->c.fingerprint, ""); /* the open reads no data */
    assert_int_equal(ck_ckpt_fingerprint(&f->c, &f->err), 0);
    assert_int_equal(strlen(f->c.fingerprint), 64);
    memcpy(out, f->c.fingerprint, 65);
}

static void test_fingerprint(void **state)
{
    fx_t *f = *state;
    const char *hdr = "{\"__metadata__\":{\"k\":\"v\"},"
                      T("w", "F32", "[4]", 0, 16) "," T("e", "F16", "[0]", 16, 16)
                      "," T("b", "U8", "[2]", 16, 18) "}";
    char base[65], again[65], seen[19][65];
    size_t big = (5u << 20) + 3;
    uint8_t data[18], *blob = calloc(1, big);

    memcpy(data, w, 16);
    data[16] = 7;
    data[17] = 9;
    put(f, hdr, data, sizeof(data));
    fp_of(f, base);
    fp_of(f, again);
    assert_string_equal(base, again);
    /* the same header, one data byte changed: each a fingerprint of its own */
    for (size_t i = 0; i < sizeof(data); i++) {
        data[i] ^= 0x10;
        put(f, hdr, data, sizeof(data));
        fp_of(f, seen[i]);
        data[i] ^= 0x10;
        assert_string_not_equal(seen[i], base);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(seen[i], seen[j]);
    }
    /* a tensor read in several pieces: its last byte still counts */
    assert_non_null(blob);
    {
        char h2[256];

        snprintf(h2, sizeof(h2), "{\"x\":{\"dtype\":\"U8\",\"shape\":[%zu],"
                 "\"data_offsets\":[0,%zu]}}", big, big);
        put(f, h2, blob, big);
        fp_of(f, base);
        blob[big - 1] = 1;
        put(f, h2, blob, big);
        fp_of(f, again);
        assert_string_not_equal(base, again);
    }
    free(blob);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_and_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fingerprint, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
