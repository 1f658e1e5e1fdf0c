/*
 * test_head_init.c -- the head_init plugin: the 'add = KEY DTYPE SHAPE
 * INIT' line syntax (good and bad lines, each error at its own line), the
 * other directives and their defaults, init_conf's checks, and its run over
 * a state dict built in memory: every init, the rounding to float16 and
 * bfloat16, like: and copy() (also of views and of keys added by an
 * earlier line), on_exists, and the documented generator, bit for bit.
 *
 * The generator is checked two ways: known answers printed by an
 * independent Python implementation (xoshiro256** seeded by SplitMix64
 * from seed ^ FNV-1a-64(key), uniforms (x >> 11) * 2^-53), and a C copy of
 * the same documented algorithm below, itself checked against those
 * answers, for the longer streams and the Box-Muller normals.
 */
#include "plugin_test.h"

#include <math.h>

#define HEAD "[pipeline]\nchain = head_init\n\n[head_init]\n"

/* ---- the documented generator, for reference -------------------------- */

typedef struct {
    uint64_t s[4];
} ref_rng_t;

static uint64_t ref_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static void ref_seed(ref_rng_t *r, uint64_t seed, const char *key)
{
    uint64_t h = 0xcbf29ce484222325ull, x;

    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    x = seed ^ h;
    for (int i = 0; i < 4; i++) {
        uint64_t z = (x += 0x9e3779b97f4a7c15ull);

        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        r->s[i] = z ^ (z >> 31);
    }
}

static double ref_uniform(ref_rng_t *r)
{
    uint64_t *s = r->s, out = ref_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = ref_rotl(s[3], 45);
    return (double)(out >> 11) * 0x1.0p-53;
}

static double ref_normal(ref_rng_t *r, double mean, double std)
{
    double u1 = 1.0 - ref_uniform(r), u2 = ref_uniform(r);

    return mean + std * sqrt(-2.0 * log(u1)) *
                      cos(2 * 3.14159265358979323846 * u2);
}

static uint64_t bits64(double d)
{
    uint64_t x;

    memcpy(&x, &d, 8);
    return x;
}

/* ---- the model -------------------------------------------------------- */

/*
 * {"best_state": {"model": SD}, "other": {}}
 * SD (OrderedDict, _metadata ""): w float32 3x4 (1..12), wt its transpose
 * (a view, 4x3, strides 1x4), h float64 5 (0.1, 0.35, ...), i int64 6
 * (-2..3), n an int.
 */
typedef struct {
    ck_py_t *root, *sd, *w, *wt, *h, *i;
} model_t;

static void build(pt_fx_t *f, model_t *m)
{
    static const int64_t size[] = { 4, 3 }, stride[] = { 1, 4 };

    m->root = pt_dict(f);
    m->sd = pt_set(f, pt_set(f, m->root, "best_state", pt_dict(f)), "model",
                   pt_odict(f, 1));
    pt_meta(f, m->sd, "", 1);
    m->w = pt_set(f, m->sd, "w", pt_tensor(f, "float32", "3x4", 1, 1));
    m->wt = pt_set(f, m->sd, "wt", pt_view(f, m->w, 0, 2, size, stride));
    m->h = pt_set(f, m->sd, "h", pt_tensor(f, "float64", "5", 0.1, 0.25));
    m->i = pt_set(f, m->sd, "i", pt_tensor(f, "int64", "6", -2, 1));
    pt_set(f, m->sd, "n", pt_i(f, 5));
    pt_set(f, m->root, "other", pt_dict(f));
}

static ck_py_t *sd_of(pt_fx_t *f)
{
    return ck_ckpt_get(&f->job.ck, "best_state/model");
}

/* Run HEAD + text over a fresh model. */
static void run_ok(pt_fx_t *f, model_t *m, const char *text)
{
    char buf[8192];

    snprintf(buf, sizeof(buf), HEAD "%s", text);
    pt_job_reset(f);
    pt_load_ok(f, buf);
    build(f, m);
    pt_run_ok(f, m->root);
}

static void run_fails(pt_fx_t *f, const char *text, const char *w1,
                      const char *w2)
{
    char buf[8192];
    model_t m;

    snprintf(buf, sizeof(buf), HEAD "%s", text);
    pt_job_reset(f);
    pt_load_ok(f, buf);
    build(f, &m);
    pt_run_fails(f, m.root, CK_EPLUGIN, w1, w2, NULL);
}

/* The added tensor at key: contiguous, offset 0, alone on a storage that
 * holds exactly its elements, of dtype and shape. */
static ck_tensor_t *added(pt_fx_t *f, const char *key, const char *dtype,
                          size_t ndim, const int64_t *shape)
{
    ck_tensor_t *t = pt_t(f, ck_py_map_get(sd_of(f), key, NULL));
    int64_t expect = 1;

    assert_string_equal(t->dtype->name, dtype);
    assert_int_equal(t->ndim, ndim);
    assert_int_equal(t->offset, 0);
    for (size_t d = ndim; d-- > 0;) {
        assert_int_equal(t->size[d], shape[d]);
        assert_int_equal(t->stride[d], expect);
        expect *= shape[d];
    }
    assert_int_equal(t->numel, (uint64_t)expect);
    assert_int_equal(ck_storage_nbytes(t->st), t->numel * t->dtype->itemsize);
    assert_int_equal(t->st->refs, 1);
    return t;
}

static uint8_t *data_of(pt_fx_t *f, const char *key)
{
    return pt_bytes(f, &f->job.ck, ck_py_map_get(sd_of(f), key, NULL));
}

static uint16_t u16_at(const uint8_t *p, size_t i)
{
    uint16_t v;

    memcpy(&v, p + 2 * i, 2);
    return v;
}

static double f64_at(const uint8_t *p, size_t i)
{
    double v;

    memcpy(&v, p + 8 * i, 8);
    return v;
}

static float f32_at(const uint8_t *p, size_t i)
{
    float v;

    memcpy(&v, p + 4 * i, 4);
    return v;
}

/* ---- directives ------------------------------------------------------- */

static void test_defaults(void **state)
{
    pt_fx_t *f = *state;

    /* named in the chain only: nothing to do, a configuration error */
    pt_bad(f, "[pipeline]\nchain = head_init\n", 2,
           "[head_init] nothing to do: give at least one add");
    pt_load_ok(f, HEAD "add = k float32 2 zeros\n");
    assert_string_equal(pt_places(f, "state"), "best_state/model");
    assert_int_equal(pt_u64(f, "seed"), 0);
    assert_int_equal(pt_count(f, "add"), 1);
    assert_string_equal(pt_enum(f, "on_exists"), "error");
}

static void test_values(void **state)
{
    pt_fx_t *f = *state;

    pt_load_ok(f, HEAD "state = sd\n"
                       "seed = 18446744073709551615\n"
                       "add = a float32 4x4 normal(0,1)\n"
                       "add = b float16 4 uniform(-1,1)\n"
                       "add = c bfloat16 like:a xavier_uniform\n"
                       "add = d float64 3x3x1 kaiming_uniform\n"
                       "add = e int64 2 const(3)\n"
                       "add = f float32 4x4 copy(a)\n"
                       "add = g bool 2 ones\n"
                       "add = h uint8 0x2 zeros\n"
                       "add = i\tfloat32   2   const(-1e-3)\n"
                       "on_exists = skip\n");
    assert_string_equal(pt_places(f, "state"), "sd");
    assert_int_equal(pt_u64(f, "seed"), UINT64_MAX);
    assert_int_equal(pt_count(f, "add"), 9);
    assert_string_equal(pt_enum(f, "on_exists"), "skip");
    pt_load_ok(f, HEAD "on_exists = replace\nseed = 0\nadd = k int8 1 ones\n");
    assert_string_equal(pt_enum(f, "on_exists"), "replace");
}

static void test_bad_add_lines(void **state)
{
    static const struct {
        const char *line, *what;
    } bad[] = {
        { "a float16 16x12", "is not KEY DTYPE SHAPE INIT" },
        { "a float16 16x12 normal(0,0.02) extra",
          "is not KEY DTYPE SHAPE INIT" },
        { "a float16 16 normal(0, 1) x", "is not KEY DTYPE SHAPE INIT" },
        { "a float16 16 normal(0,, 1)", "unknown init 'normal(0,, 1)'" },
        { "a float16 16 gaussian(0)", "DEPTH 0 is not a whole number" },
        { "a float16 16 gaussian(1.5)", "DEPTH 1.5 is not a whole number" },
        { "a float16 16 trunc_normal(0,1,2,1)", "trunc_normal() needs A < B" },
        { "a float16 16 trunc_normal(0,-1,-2,2)", "negative std" },
        { "a int8 16 gaussian", "random init of an integer dtype" },
        { "a float17 16 zeros", "unsupported dtype 'float17'" },
        { "a complex64 16 zeros", "unsupported dtype 'complex64'" },
        { "a qint8 16 zeros", "unsupported dtype 'qint8'" },
        { "a float16 16xx12 zeros", "bad shape '16xx12'" },
        { "a float16 x16 zeros", "bad shape 'x16'" },
        { "a float16 16x zeros", "bad shape '16x'" },
        { "a float16 16x12x zeros", "bad shape '16x12x'" },
        { "a float16 -3 zeros", "bad shape '-3'" },
        { "a float16 2x3x4x5x6x7x8x9x10 zeros", "bad shape" },
        { "a float16 16 gaussian(0,1)", "unknown init 'gaussian(0,1)'" },
        { "a float16 16 normal(0)", "unknown init 'normal(0)'" },
        { "a float16 16 uniform(0,1", "unknown init 'uniform(0,1'" },
        { "a float16 16 const()", "unknown init 'const()'" },
        { "a float16 16 const(1,2)", "unknown init" },
        { "a float16 16 Zeros", "unknown init 'Zeros'" },
        { "a float16 16 normal(0,-1)", "normal() with a negative std" },
        { "a int64 16 normal(0,1)", "random init of an integer dtype int64" },
        { "a bool 4x4 kaiming_uniform",
          "random init of an integer dtype bool" },
        { "a float16 16 copy()", "copy() needs a KEY" },
        { "a float16 like: zeros", "like: needs a KEY" },
        { "a int8 2 const(128)", "const(128) does not fit int8" },
        { "a uint8 2 const(-1)", "does not fit uint8" },
        { "a int64 2 const(1e30)", "does not fit int64" },
        { "a int64 2 const(9223372036854775808)", "does not fit int64" },
        { "a int64 2 const(-9223372036854775809)", "does not fit int64" },
        { "a int32 2 const(nan)", "does not fit int32" },
        /* torch.full raises where a finite value would become inf */
        { "a float16 2 const(65519)", "const(65519) does not fit float16" },
        { "a float16 2 const(65520)", "does not fit float16" },
        { "a float16 2 const(-1e300)", "does not fit float16" },
        { "a bfloat16 2 const(1e300)", "does not fit bfloat16" },
        { "a float32 2 const(3.4028235e38)", "does not fit float32" },
        { "a float64 2 const(1180591620717411303424)", "does not fit float64" },
    };
    pt_fx_t *f = *state;
    char text[512];

    for (size_t i = 0; i < CK_ARRAY_SIZE(bad); i++) {
        snprintf(text, sizeof(text),
                 HEAD "add = ok float16 4 zeros\n\nadd = %s\nseed = 1\n",
                 bad[i].line);
        pt_bad(f, text, 7, bad[i].what);
    }
}

static void test_bad_values(void **state)
{
    static const char *const seeds[] = { "abc", "-1", "1.5", "0x10",
                                         "18446744073709551616", "" };
    pt_fx_t *f = *state;
    char text[8192];

    for (size_t i = 0; i < CK_ARRAY_SIZE(seeds); i++) {
        snprintf(text, sizeof(text), HEAD "state = sd\nseed = %s\n", seeds[i]);
        pt_bad(f, text, 6, "is not a whole number");
    }
    pt_bad(f, HEAD "seed = 1\nseed = 2\n", 6,
           "'seed' given twice in [head_init]");
    /* an enum: at the value's line */
    pt_bad(f, HEAD "add = a float32 2 ones\non_exists = overwrite\n", 6,
           "on_exists: 'overwrite' is not error, skip or replace");
    /* no fixed cap on add lines */
    strcpy(text, HEAD);
    for (int i = 0; i < 100; i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text),
                 "add = k%d float32 2 zeros\n", i);
    pt_load_ok(f, text);
    assert_int_equal(pt_count(f, "add"), 100);
}

/* ---- run: values ------------------------------------------------------ */

static void test_constants(void **state)
{
    static const int64_t s22[] = { 2, 2 }, s3[] = { 3 }, s2[] = { 2 };
    pt_fx_t *f = *state;
    model_t m;
    uint8_t *p;

    run_ok(f, &m, "add = z float32 2x2 zeros\n"
                  "add = o bfloat16 3 ones\n"
                  "add = c float16 3 const(2.5)\n"
                  "add = l int64 2 const(7)\n"
                  "add = u uint8 3 const(255)\n"
                  "add = s int8 2 const(-3)\n"
                  "add = t int64 2 const(-2.7)\n"
                  "add = b bool 2 ones\n"
                  "add = d float64 2 const(-1e-3)\n");
    /* appended in order, after the existing keys; _metadata untouched */
    assert_string_equal(pt_keys(sd_of(f)), "w wt h i n z o c l u s t b d");
    assert_string_equal(pt_md_keys(f, sd_of(f)), "");
    added(f, "z", "float32", 2, s22);
    p = data_of(f, "z");
    for (int i = 0; i < 16; i++)
        assert_int_equal(p[i], 0);
    added(f, "o", "bfloat16", 1, s3);
    p = data_of(f, "o");
    assert_int_equal(u16_at(p, 0), 0x3f80);
    assert_int_equal(u16_at(p, 2), 0x3f80);
    p = data_of(f, "c");
    assert_int_equal(u16_at(p, 1), 0x4100);
    added(f, "l", "int64", 1, s2);
    p = data_of(f, "l");
    assert_memory_equal(p, "\x07\0\0\0\0\0\0\0\x07\0\0\0\0\0\0\0", 16);
    assert_memory_equal(data_of(f, "u"), "\xff\xff\xff", 3);
    assert_memory_equal(data_of(f, "s"), "\xfd\xfd", 2);
    /* toward zero, as torch.full(.., -2.7, dtype=int64) */
    assert_memory_equal(data_of(f, "t"), "\xfe\xff\xff\xff\xff\xff\xff\xff", 8);
    assert_memory_equal(data_of(f, "b"), "\x01\x01", 2);
    assert_true(f64_at(data_of(f, "d"), 1) == -1e-3);
    pt_changed(f,
               "{\"op\":\"added\",\"state\":\"best_state/model\",\"key\":\"z\","
               "\"dtype\":\"float32\",\"shape\":[2,2],"
               "\"init\":\"z float32 2x2 zeros\",\"bytes\":16}");
    pt_changed(f, "\"key\":\"o\",\"dtype\":\"bfloat16\",\"shape\":[3],"
                  "\"init\":\"o bfloat16 3 ones\",\"bytes\":6}");
    assert_int_equal(pt_nchanges(f), 9);
}

/* const(V) into float16 / bfloat16 as torch.full: V to float32, then to
 * the dtype, each to nearest even; no16 for a V float16 refuses (past
 * 65504: test_bad_add_lines). */
static void test_rounding(void **state)
{
    static const struct {
        const char *v;
        uint16_t f16, bf16;
        int no16;
    } cases[] = {
        { "0.1", 0x2e66, 0x3dcd },
        { "-0.0", 0x8000, 0x8000 },
        { "-0", 0x0000, 0x0000 },                   /* a Python int: 0 */
        { "1.00048828125", 0x3c00, 0x3f80 },        /* 1 + 2^-11: f16 tie */
        { "1.00146484375", 0x3c02, 0x3f80 },        /* 1 + 3 * 2^-11 */
        /* just above a tie: torch.full rounds to float32 first (to the
         * tie), then to even */
        { "1.0004882812509095", 0x3c00, 0x3f80 },   /* 1 + 2^-11 + 2^-40 */
        { "1.0039062500009095", 0x3c04, 0x3f80 },   /* 1 + 2^-8 + 2^-40 */
        { "1.00390625", 0x3c04, 0x3f80 },           /* 1 + 2^-8: bf16 tie */
        { "1.01171875", 0x3c0c, 0x3f82 },           /* 1 + 3 * 2^-8 */
        { "65504", 0x7bff, 0x4780 },
        { "65519", 0, 0x4780, 1 },
        { "65520", 0, 0x4780, 1 },
        { "5.9604644775390625e-08", 0x0001, 0x3380 }, /* 2^-24 */
        { "2.98023223876953125e-08", 0x0000, 0x3300 },/* 2^-25: tie to 0 */
        { "8.94069671630859375e-08", 0x0002, 0x33c0 },/* 1.5 * 2^-24 */
        { "6.103515625e-05", 0x0400, 0x3880 },      /* smallest normal */
        { "inf", 0x7c00, 0x7f80 },
        { "-inf", 0xfc00, 0xff80 },
        { "nan", 0x7e00, 0x7fc0 },
    };
    pt_fx_t *f = *state;
    char text[4096] = "";
    model_t m;

    for (size_t i = 0; i < CK_ARRAY_SIZE(cases); i++) {
        if (!cases[i].no16)
            snprintf(text + strlen(text), sizeof(text) - strlen(text),
                     "add = h%zu float16 1 const(%s)\n", i, cases[i].v);
        snprintf(text + strlen(text), sizeof(text) - strlen(text),
                 "add = b%zu bfloat16 1 const(%s)\n", i, cases[i].v);
    }
    run_ok(f, &m, text);
    for (size_t i = 0; i < CK_ARRAY_SIZE(cases); i++) {
        char k[16];
        uint16_t got;

        snprintf(k, sizeof(k), "h%zu", i);
        got = cases[i].no16 ? 0 : u16_at(data_of(f, k), 0);
        if (got != cases[i].f16)
            fail_msg("float16 of %s: 0x%04x, expected 0x%04x", cases[i].v,
                     got, cases[i].f16);
        snprintf(k, sizeof(k), "b%zu", i);
        got = u16_at(data_of(f, k), 0);
        if (got != cases[i].bf16)
            fail_msg("bfloat16 of %s: 0x%04x, expected 0x%04x", cases[i].v,
                     got, cases[i].bf16);
    }
}

/* ---- run: the generator ----------------------------------------------- */

/* First values of uniform(0,1) streams, from the Python reference. */
static void test_known_answers(void **state)
{
    static const struct {
        const char *conf, *key;
        uint64_t seed;
        uint64_t bits[4];
    } kat[] = {
        { "seed = 0\nadd = k float64 4 uniform(0,1)\n", "k", 0,
          { 0x3f4871326ff2a400ull, 0x3fce4695184b30c8ull,
            0x3fea55b543c5e133ull, 0x3fe9a47737c7b25eull } },
        { "seed = 7\nadd = head.weight float64 2x2 uniform(0,1)\n",
          "head.weight", 7,
          { 0x3fe11ae4fe2f016full, 0x3fd238bc68cd9b3aull,
            0x3fa64839443b0dd0ull, 0x3fd4f9edf62d3d7eull } },
        { "seed = 18446744073709551615\nadd = b float64 4 uniform(0,1)\n", "b",
          UINT64_MAX,
          { 0x3fe2048fc2d56c8cull, 0x3fec626b15ab31fbull,
            0x3fd1a06044e96902ull, 0x3fd71c97bc901c26ull } },
        /* -2 + 5u */
        { "seed = 5\nadd = u float64 4 uniform(-2,3)\n", "u", 5,
          { 0x3fe8e88e93bc23b8ull, 0xbfe8a199f5135818ull,
            0x3ff1f5272d24ba0cull, 0 } },
    };
    pt_fx_t *f = *state;
    model_t m;

    for (size_t k = 0; k < CK_ARRAY_SIZE(kat); k++) {
        uint8_t *p;
        ref_rng_t r;

        run_ok(f, &m, kat[k].conf);
        p = data_of(f, kat[k].key);
        ref_seed(&r, kat[k].seed, kat[k].key);
        for (size_t i = 0; i < 4; i++) {
            double want = k == 3 ? -2 + 5 * ref_uniform(&r) : ref_uniform(&r);

            /* the reference agrees with Python ... */
            if (kat[k].bits[i] != 0)
                assert_int_equal(bits64(want), kat[k].bits[i]);
            /* ... and the plugin with both */
            assert_int_equal(bits64(f64_at(p, i)), bits64(want));
        }
    }
}

/* Longer streams, the normals, and the fan-based bounds, exactly. */
static void test_generator_exact(void **state)
{
    pt_fx_t *f = *state;
    model_t m;
    ref_rng_t r;
    uint8_t *p;
    double bound;

    run_ok(f, &m, "seed = 1234567890\n"
                  "add = nrm float64 1000 normal(0.5,2)\n"
                  "add = n32 float32 40x25 normal(0,0.02)\n"
                  "add = k float32 16x32 kaiming_uniform\n"
                  "add = kc float64 8x4x3x3 kaiming_uniform\n"
                  "add = x float64 16x32 xavier_uniform\n");
    p = data_of(f, "nrm");
    ref_seed(&r, 1234567890, "nrm");
    for (int i = 0; i < 1000; i++)
        assert_int_equal(bits64(f64_at(p, i)), bits64(ref_normal(&r, 0.5, 2)));
    p = data_of(f, "n32");
    ref_seed(&r, 1234567890, "n32");
    for (int i = 0; i < 1000; i++) {
        float want = (float)ref_normal(&r, 0, 0.02);

        assert_memory_equal(p + 4 * i, &want, 4);
    }
    /* kaiming_uniform: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
    p = data_of(f, "k");
    ref_seed(&r, 1234567890, "k");
    bound = 1.0 / sqrt(32);
    for (int i = 0; i < 512; i++) {
        float want = (float)(-bound + 2 * bound * ref_uniform(&r));

        assert_memory_equal(p + 4 * i, &want, 4);
        assert_true(fabsf(f32_at(p, i)) <= (float)bound);
    }
    /* a conv weight: fan_in = 4 * 3 * 3 */
    p = data_of(f, "kc");
    ref_seed(&r, 1234567890, "kc");
    bound = 1.0 / 6.0;
    for (int i = 0; i < 288; i++)
        assert_int_equal(bits64(f64_at(p, i)),
                         bits64(-bound + 2 * bound * ref_uniform(&r)));
    /* xavier_uniform: sqrt(6 / (fan_in + fan_out)) */
    p = data_of(f, "x");
    ref_seed(&r, 1234567890, "x");
    bound = sqrt(6.0 / (32 + 16));
    for (int i = 0; i < 512; i++)
        assert_int_equal(bits64(f64_at(p, i)),
                         bits64(-bound + 2 * bound * ref_uniform(&r)));
}

/* Same seed and key, same bytes; another key or seed, other bytes; other
 * keys added before do not change a key's values. */
static void test_deterministic(void **state)
{
    pt_fx_t *f = *state;
    model_t m;
    uint8_t a[2048], b[2048];

    run_ok(f, &m, "seed = 7\nadd = head.weight float16 16x32 normal(0,0.02)\n");
    memcpy(a, data_of(f, "head.weight"), 1024);
    run_ok(f, &m, "seed = 7\nadd = other float32 1000 normal(0,1)\n"
                  "add = b float16 3x7 uniform(-1,1)\n"
                  "add = head.weight float16 16x32 normal(0,0.02)\n");
    memcpy(b, data_of(f, "head.weight"), 1024);
    assert_memory_equal(a, b, 1024);
    /* another key: another stream */
    run_ok(f, &m, "seed = 7\nadd = head.weighs float16 16x32 normal(0,0.02)\n");
    assert_memory_not_equal(a, data_of(f, "head.weighs"), 1024);
    /* another seed */
    run_ok(f, &m, "seed = 8\nadd = head.weight float16 16x32 normal(0,0.02)\n");
    assert_memory_not_equal(a, data_of(f, "head.weight"), 1024);
    /* normal(0,0.02): plausible statistics */
    run_ok(f, &m,
           "seed = 7\nadd = head.weight float64 100x100 normal(0,0.02)\n");
    {
        uint8_t *p = data_of(f, "head.weight");
        double s = 0, s2 = 0;

        for (int i = 0; i < 10000; i++) {
            s += f64_at(p, i);
            s2 += f64_at(p, i) * f64_at(p, i);
        }
        assert_true(fabs(s / 10000) < 0.001);
        assert_true(fabs(sqrt(s2 / 10000) - 0.02) < 0.001);
    }
}

/* ---- run: like:, copy(), on_exists ------------------------------------ */

static void test_like_and_copy(void **state)
{
    static const int64_t s34[] = { 3, 4 }, s43[] = { 4, 3 }, s5[] = { 5 };
    pt_fx_t *f = *state;
    model_t m;
    uint8_t *p;

    run_ok(f, &m, "add = a float32 like:w ones\n"
                  "add = at float64 like:wt zeros\n"
                  "add = cw float32 like:w copy(w)\n"
                  "add = ct float32 4x3 copy(wt)\n"
                  "add = c64 float64 2x6 copy(w)\n"
                  "add = ch float16 like:h copy(h)\n"
                  "add = ci float32 6 copy(i)\n"
                  "add = iw int64 12 copy(w)\n");
    added(f, "a", "float32", 2, s34);
    /* like: a view gives its shape; the new tensor is contiguous */
    added(f, "at", "float64", 2, s43);
    added(f, "cw", "float32", 2, s34);
    assert_memory_equal(data_of(f, "cw"), pt_bytes(f, &f->job.ck, m.w), 48);
    /* copy of a transposed view: its elements in row-major order */
    p = data_of(f, "ct");
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 3; c++)
            assert_true(f32_at(p, (size_t)(r * 3 + c)) ==
                        (float)(1 + c * 4 + r));
    /* with conversion */
    p = data_of(f, "c64");
    for (int i = 0; i < 12; i++)
        assert_true(f64_at(p, (size_t)i) == 1 + i);
    added(f, "ch", "float16", 1, s5);
    p = data_of(f, "ch");
    assert_int_equal(u16_at(p, 0), 0x2e66); /* 0.1 */
    assert_int_equal(u16_at(p, 1), 0x359a); /* 0.35 */
    p = data_of(f, "ci");
    assert_true(f32_at(p, 0) == -2 && f32_at(p, 5) == 3);
    p = data_of(f, "iw");
    assert_memory_equal(p + 8 * 11, "\x0c\0\0\0\0\0\0\0", 8);
    /* the sources are untouched and still share their storage */
    assert_ptr_equal(pt_t(f, m.w)->st, pt_t(f, m.wt)->st);
}

/* A line may use like: and copy() of a key an earlier line added. */
static void test_refer_to_earlier_add(void **state)
{
    static const int64_t s23[] = { 2, 3 };
    pt_fx_t *f = *state;
    model_t m;

    run_ok(f, &m,
           "seed = 3\n"
           "add = new.weight float32 2x3 normal(0,1)\n"
           "add = new.bias float64 like:new.weight zeros\n"
           "add = ema.new.weight float32 like:new.weight copy(new.weight)\n");
    added(f, "new.bias", "float64", 2, s23);
    added(f, "ema.new.weight", "float32", 2, s23);
    assert_memory_equal(data_of(f, "ema.new.weight"), data_of(f, "new.weight"),
                        24);
}

static void test_run_failures(void **state)
{
    pt_fx_t *f = *state;

    run_fails(f, "add = w float32 2 ones\n",
              "head_init: best_state/model already has 'w'", NULL);
    run_fails(f, "add = q float32 like:nosuch zeros\n",
              "like:nosuch: no such tensor in best_state/model", NULL);
    run_fails(f, "add = q float32 like:n zeros\n", "like:n: no such tensor",
              NULL);
    run_fails(f, "add = q float32 4 copy(nosuch)\n",
              "copy(nosuch): no such tensor in best_state/model", NULL);
    run_fails(f, "add = q float32 5 copy(w)\n",
              "copy(w): 12 elements, q needs 5", NULL);
    run_fails(f, "add = q float32 16 kaiming_uniform\n", "q",
              "kaiming_uniform needs at least 2 dimensions");
    run_fails(f, "add = q float32 16 xavier_uniform\n",
              "xavier_uniform needs at least 2 dimensions", NULL);
    run_fails(f, "add = q float32 4294967296x4294967296 zeros\n",
              "shape overflows", NULL);
    run_fails(f, "add = q float32 131072x65536 zeros\n", "q is too large",
              NULL);
    run_fails(f, "state = best_state/nosuch\nadd = q float32 2 zeros\n",
              "best_state/nosuch", NULL);
    run_fails(f, "state = best_state/model/w\nadd = q float32 2 zeros\n",
              "is not a dict", NULL);
}

static void test_on_exists(void **state)
{
    static const int64_t s2[] = { 2 };
    pt_fx_t *f = *state;
    model_t m;
    size_t before;

    /* skip: unchanged, reported */
    run_ok(f, &m, "on_exists = skip\nadd = w float32 2 ones\n"
                  "add = new float32 2 ones\n");
    assert_ptr_equal(ck_py_map_get(sd_of(f), "w", NULL), m.w);
    assert_string_equal(pt_keys(sd_of(f)), "w wt h i n new");
    pt_changed(f, "{\"op\":\"skipped\",\"state\":\"best_state/model\","
                  "\"key\":\"w\",\"dtype\":\"float32\",\"shape\":[2],"
                  "\"init\":\"w float32 2 ones\",\"bytes\":0}");
    pt_changed(
        f, "\"op\":\"added\",\"state\":\"best_state/model\",\"key\":\"new\"");
    /* replace: a new tensor in the same place; h's storage is dropped */
    run_ok(f, &m, "on_exists = replace\nadd = h float32 2 ones\n");
    f->job.ck.pk.root = m.root;
    before = pt_live_storages(f);
    assert_string_equal(pt_keys(sd_of(f)), "w wt h i n");
    assert_true(ck_py_map_get(sd_of(f), "h", NULL) != m.h);
    added(f, "h", "float32", 1, s2);
    assert_int_equal(before, 3); /* w (and wt), i, the new h */
    pt_changed(
        f, "\"op\":\"replaced\",\"state\":\"best_state/model\",\"key\":\"h\"");
    /* a replaced key that a view shares: the view keeps the old storage */
    run_ok(f, &m, "on_exists = replace\nadd = w float32 like:w copy(wt)\n");
    assert_ptr_equal(ck_py_map_get(sd_of(f), "wt", NULL), m.wt);
    assert_int_equal(pt_live_storages(f), 4);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, pt_setup, pt_teardown)
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_values),
        T(test_bad_add_lines),
        T(test_bad_values),
        T(test_constants),
        T(test_rounding),
        T(test_known_answers),
        T(test_generator_exact),
        T(test_deterministic),
        T(test_like_and_copy),
        T(test_refer_to_earlier_add),
        T(test_run_failures),
        T(test_on_exists),
    };
#undef T

    return cmocka_run_group_tests(tests, NULL, NULL);
}
