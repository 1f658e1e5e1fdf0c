/*
 * head_init -- add new parameters (a new conditioning head, an extra
 * codebook) to a state dict, each as a new contiguous storage.
 *
 *   add = KEY DTYPE SHAPE INIT
 *
 * SHAPE is 1024x512, 2048, or like:OTHERKEY; INIT is zeros, ones, const(V),
 * normal(MEAN,STD), uniform(A,B), xavier_uniform, kaiming_uniform (bound
 * 1/sqrt(fan_in), nn.Linear's default) or copy(OTHERKEY).  OTHERKEY may be
 * a key an earlier line added; const(V) must fit an integer DTYPE.
 *
 * Random values come from our own documented generator, not torch's: each
 * key gets a xoshiro256** stream seeded by SplitMix64 from
 * seed ^ FNV-1a-64(key); uniform doubles are (x >> 11) * 2^-53 and normals
 * come from the Box-Muller transform; values are computed in double and
 * rounded to the dtype (round to nearest even).  The same seed and settings
 * give the same bytes on every machine, and adding a key does not change
 * the values of the others.
 */
#include "job.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ADDS 64
#define MAX_DIMS 8
#define PI 3.14159265358979323846

typedef enum { I_ZEROS, I_ONES, I_CONST, I_NORMAL, I_UNIFORM, I_XAVIER,
               I_KAIMING, I_COPY } init_kind_t;

typedef struct {
    char *key;
    const ck_dtype_t *dt;
    int64_t shape[MAX_DIMS];
    size_t ndim;
    char *like;          /* shape of this key instead */
    init_kind_t init;
    double a, b;
    char *src;           /* copy(src) */
    char text[256];      /* the line, for the record */
} add_t;

typedef struct {
    char *state;
    uint64_t seed;
    ck_strlist_t add;
    char *on_exists;
    add_t adds[MAX_ADDS];
    size_t nadds;
} head_conf_t;

static int check_add(const char *value, ck_err_t *err);

static const ck_directive_t head_directives[] = {
    { "state", ck_conf_set_str, offsetof(head_conf_t, state),
      "best_state/model", 0, "the state dict to add to" },
    { "seed", ck_conf_set_u64, offsetof(head_conf_t, seed), "0", 0,
      "seed of the random inits" },
    { "add", ck_conf_set_lines, offsetof(head_conf_t, add), NULL, CK_DIR_MULTI,
      "KEY DTYPE SHAPE INIT", check_add },
    { "on_exists", ck_conf_set_str, offsetof(head_conf_t, on_exists), "error",
      0, "error, skip or replace when KEY exists" },
    { NULL, NULL, 0, NULL, 0, NULL },
};

static int parse_args(const char *s, const char *name, double *a, double *b,
                      int n)
{
    size_t len = strlen(name);
    char *end;

    if (strncmp(s, name, len) != 0 || s[len] != '(')
        return -1;
    s += len + 1;
    *a = strtod(s, &end);
    if (end == s)
        return -1;
    s = end;
    if (n == 2) {
        if (*s++ != ',')
            return -1;
        *b = strtod(s, &end);
        if (end == s)
            return -1;
        s = end;
    }
    return strcmp(s, ")") == 0 ? 0 : -1;
}

static int parse_add(char *line, add_t *ad, ck_err_t *err)
{
    char *w[5], *save = NULL, *tok;
    size_t n = 0;

    snprintf(ad->text, sizeof(ad->text), "%s", line);
    for (tok = strtok_r(line, " \t", &save); tok != NULL && n < 5;
         tok = strtok_r(NULL, " \t", &save))
        w[n++] = tok;
    if (n != 4)
        return ck_err_set(err, CK_ECONFIG, "add: '%s' is not KEY DTYPE SHAPE INIT",
                          ad->text);
    ad->key = w[0];
    ad->dt = ck_dtype_by_name(w[1]);
    if (ad->dt == NULL || ad->dt->storage == NULL || ad->dt->is_float == 2 ||
        !strncmp(w[1], "q", 1))
        return ck_err_set(err, CK_ECONFIG, "add: unsupported dtype '%s'", w[1]);
    if (strncmp(w[2], "like:", 5) == 0) {
        ad->like = w[2] + 5;
        if (*ad->like == '\0')
            return ck_err_set(err, CK_ECONFIG, "add: like: needs a KEY");
    } else {
        char *s = w[2];

        while (*s != '\0') {
            char *end;
            long long v = strtoll(s, &end, 10);

            if (end == s || v < 0 || ad->ndim == MAX_DIMS ||
                (*end != '\0' && (*end != 'x' || end[1] == '\0')))
                return ck_err_set(err, CK_ECONFIG, "add: bad shape '%s'", w[2]);
            ad->shape[ad->ndim++] = v;
            s = *end ? end + 1 : end;
        }
        if (ad->ndim == 0)
            return ck_err_set(err, CK_ECONFIG, "add: bad shape '%s'", w[2]);
    }
    if (!strcmp(w[3], "zeros"))
        ad->init = I_ZEROS;
    else if (!strcmp(w[3], "ones"))
        ad->init = I_ONES;
    else if (!strcmp(w[3], "xavier_uniform"))
        ad->init = I_XAVIER;
    else if (!strcmp(w[3], "kaiming_uniform"))
        ad->init = I_KAIMING;
    else if (parse_args(w[3], "const", &ad->a, &ad->b, 1) == 0)
        ad->init = I_CONST;
    else if (parse_args(w[3], "normal", &ad->a, &ad->b, 2) == 0)
        ad->init = I_NORMAL;
    else if (parse_args(w[3], "uniform", &ad->a, &ad->b, 2) == 0)
        ad->init = I_UNIFORM;
    else if (!strncmp(w[3], "copy(", 5) && w[3][strlen(w[3]) - 1] == ')') {
        ad->init = I_COPY;
        ad->src = w[3] + 5;
        ad->src[strlen(ad->src) - 1] = '\0';
        if (*ad->src == '\0')
            return ck_err_set(err, CK_ECONFIG, "add: copy() needs a KEY");
    } else
        return ck_err_set(err, CK_ECONFIG, "add: unknown init '%s'", w[3]);
    if (ad->init == I_NORMAL && ad->b < 0)
        return ck_err_set(err, CK_ECONFIG, "add: normal() with a negative std");
    if (!ad->dt->is_float && (ad->init == I_NORMAL || ad->init == I_UNIFORM ||
                              ad->init == I_XAVIER || ad->init == I_KAIMING))
        return ck_err_set(err, CK_ECONFIG,
                          "add: random init of an integer dtype %s", w[1]);
    if (ad->init == I_CONST && !ad->dt->is_float && strcmp(w[1], "bool") != 0) {
        /* as torch.full refuses it: the value must fit the integer type */
        int is_unsigned = strcmp(w[1], "uint8") == 0;
        double top = ldexp(1.0, 8 * (int)ad->dt->itemsize - !is_unsigned);
        double lo = is_unsigned ? 0 : -top;

        if (!(ad->a >= lo && ad->a < top))
            return ck_err_set(err, CK_ECONFIG, "add: const(%g) does not fit %s",
                              ad->a, w[1]);
    }
    return 0;
}

static int check_add(const char *value, ck_err_t *err)
{
    char line[1024];
    add_t ad;

    memset(&ad, 0, sizeof(ad));
    snprintf(line, sizeof(line), "%s", value);
    return parse_add(line, &ad, err);
}

static int head_init_conf(void *conf, ck_err_t *err)
{
    head_conf_t *cf = conf;

    if (strcmp(cf->on_exists, "error") && strcmp(cf->on_exists, "skip") &&
        strcmp(cf->on_exists, "replace"))
        return ck_err_set(err, CK_ECONFIG,
                          "on_exists: '%s' is not error, skip or replace",
                          cf->on_exists);
    if (cf->add.n > MAX_ADDS)
        return ck_err_set(err, CK_ECONFIG, "more than %d add lines", MAX_ADDS);
    for (size_t i = 0; i < cf->add.n; i++) {
        int rc = parse_add(cf->add.v[i], &cf->adds[i], err);

        if (rc < 0)
            return rc;
        cf->nadds++;
    }
    return 0;
}

/* ---- the generator ---------------------------------------------------- */

typedef struct {
    uint64_t s[4];
} rng_t;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rng_seed(rng_t *r, uint64_t seed, const char *key)
{
    uint64_t h = 0xcbf29ce484222325ull, x;

    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    x = seed ^ h;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(rng_t *r)
{
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

static double rng_uniform(rng_t *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

/* ---- dtype conversion ------------------------------------------------- */

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f,
             mant = h & 0x3ffu, x;
    float f;

    if (exp == 0) {
        f = ldexpf((float)mant, -24);
        return sign ? -f : f;
    }
    if (exp == 31)
        x = sign | 0x7f800000u | (mant << 13);
    else
        x = sign | ((exp + 112) << 23) | (mant << 13);
    memcpy(&f, &x, 4);
    return f;
}

/* Round a double to a float with 'mbits' mantissa bits and exponent bias
 * 'bias' (ebits wide), to nearest even: float16 (10, 15, 5), bfloat16
 * (7, 127, 8).  Returns the bit pattern. */
static uint16_t round_small(double v, int mbits, int bias, int ebits)
{
    uint64_t x, mant, rest, half, r;
    int exp, e, maxe = (1 << ebits) - 1;
    uint16_t sign;

    memcpy(&x, &v, 8);
    sign = (uint16_t)((x >> 63) << 15);
    exp = (int)((x >> 52) & 0x7ff);
    mant = x & ((1ull << 52) - 1);
    if (exp == 0x7ff)
        return (uint16_t)(sign | (maxe << mbits) |
                          (mant ? 1u << (mbits - 1) : 0));
    e = exp - 1023 + bias;
    if (e >= maxe)
        return (uint16_t)(sign | (maxe << mbits));
    if (e <= 0) {
        int shift = 52 - mbits + 1 - e;

        if (shift > 62 || exp == 0)
            return sign;
        mant |= 1ull << 52;
        r = mant >> shift;
        rest = mant & ((1ull << shift) - 1);
        half = 1ull << (shift - 1);
    } else {
        r = ((uint64_t)e << mbits) | (mant >> (52 - mbits));
        rest = mant & ((1ull << (52 - mbits)) - 1);
        half = 1ull << (52 - mbits - 1);
    }
    if (rest > half || (rest == half && (r & 1)))
        r++; /* a carry into the exponent is right, up to infinity */
    return (uint16_t)(sign | r);
}

static void store(const ck_dtype_t *dt, uint8_t *p, double v)
{
    const char *n = dt->name;

    if (!strcmp(n, "float32")) {
        float f = (float)v;

        memcpy(p, &f, 4);
    } else if (!strcmp(n, "float64")) {
        memcpy(p, &v, 8);
    } else if (!strcmp(n, "float16")) {
        uint16_t h = round_small(v, 10, 15, 5);

        memcpy(p, &h, 2);
    } else if (!strcmp(n, "bfloat16")) {
        uint16_t h = round_small(v, 7, 127, 8);

        memcpy(p, &h, 2);
    } else if (!strcmp(n, "bool")) {
        *p = v != 0;
    } else {
        /* out of range and NaN give INT64_MIN, as x86 and torch do */
        int64_t i = v >= -0x1p63 && v < 0x1p63 ? (int64_t)v : INT64_MIN;

        memcpy(p, &i, dt->itemsize); /* little-endian truncation */
    }
}

static double load(const ck_dtype_t *dt, const uint8_t *p)
{
    const char *n = dt->name;
    float f;
    double d;
    uint16_t h;

    if (!strcmp(n, "float32")) {
        memcpy(&f, p, 4);
        return f;
    }
    if (!strcmp(n, "float64")) {
        memcpy(&d, p, 8);
        return d;
    }
    if (!strcmp(n, "float16") || !strcmp(n, "bfloat16")) {
        memcpy(&h, p, 2);
        if (n[0] == 'b') {
            uint32_t x = (uint32_t)h << 16;

            memcpy(&f, &x, 4);
            return f;
        }
        return f16_to_f32(h);
    }
    if (!strcmp(n, "bool") || !strcmp(n, "uint8"))
        return *p;
    if (!strcmp(n, "int8"))
        return (int8_t)*p;
    if (!strcmp(n, "int16")) {
        int16_t v;

        memcpy(&v, p, 2);
        return v;
    }
    if (!strcmp(n, "int32")) {
        int32_t v;

        memcpy(&v, p, 4);
        return v;
    }
    {
        int64_t v;

        memcpy(&v, p, 8);
        return (double)v;
    }
}

/* ---- running ---------------------------------------------------------- */

static ck_tensor_t *tensor_at(ck_job_t *job, ck_py_t *sd, const char *key)
{
    ck_py_t *node = ck_py_map_get(sd, key, NULL);
    ck_tensor_t *t = ck_ckpt_tensor(&job->ck, node);
    ck_err_t e = { 0 };

    /* a tensor an earlier line added is known once the graph is scanned */
    if (t == NULL && node != NULL && ck_ckpt_scan(&job->ck, &e) == 0)
        t = ck_ckpt_tensor(&job->ck, node);
    return t;
}

static int fill(ck_job_t *job, head_conf_t *cf, add_t *ad, ck_py_t *sd,
                const int64_t *shape, size_t ndim, uint64_t numel,
                uint8_t *data)
{
    size_t isz = ad->dt->itemsize;
    rng_t r;
    double lo = ad->a, hi = ad->b;

    rng_seed(&r, cf->seed, ad->key);
    if (ad->init == I_XAVIER || ad->init == I_KAIMING) {
        uint64_t recept = 1;
        double fan_in, fan_out, bound;

        if (ndim < 2)
            return ck_err_set(job->err, CK_EPLUGIN,
                              "head_init: %s: %s needs at least 2 dimensions",
                              ad->key, ad->init == I_XAVIER ? "xavier_uniform"
                                                            : "kaiming_uniform");
        for (size_t i = 2; i < ndim; i++)
            recept *= (uint64_t)shape[i];
        fan_in = (double)((uint64_t)shape[1] * recept);
        fan_out = (double)((uint64_t)shape[0] * recept);
        bound = ad->init == I_XAVIER ? sqrt(6.0 / (fan_in + fan_out))
                                     : 1.0 / sqrt(fan_in);
        lo = -bound;
        hi = bound;
    }
    if (ad->init == I_COPY) {
        ck_tensor_t *src = tensor_at(job, sd, ad->src);
        uint8_t *tmp;
        int rc;

        if (src == NULL)
            return ck_err_set(job->err, CK_EPLUGIN,
                              "head_init: copy(%s): no such tensor in %s",
                              ad->src, cf->state);
        if (src->numel != numel)
            return ck_err_set(job->err, CK_EPLUGIN,
                              "head_init: copy(%s): %llu elements, %s needs %llu",
                              ad->src, (unsigned long long)src->numel, ad->key,
                              (unsigned long long)numel);
        tmp = ck_arena_alloc(&job->ck.arena, numel * src->dtype->itemsize + 1);
        if (tmp == NULL)
            return ck_err_set(job->err, CK_ENOMEM, "out of memory");
        rc = ck_ckpt_read_tensor(&job->ck, src, tmp, job->err);
        if (rc < 0)
            return rc;
        for (uint64_t i = 0; i < numel; i++) {
            if (src->dtype == ad->dt)
                memcpy(data + i * isz, tmp + i * isz, isz);
            else
                store(ad->dt, data + i * isz,
                      load(src->dtype, tmp + i * src->dtype->itemsize));
        }
        return 0;
    }
    for (uint64_t i = 0; i < numel; i++) {
        double v;

        switch (ad->init) {
        case I_ZEROS: v = 0; break;
        case I_ONES: v = 1; break;
        case I_CONST: v = ad->a; break;
        case I_NORMAL: {
            double u1 = 1.0 - rng_uniform(&r), u2 = rng_uniform(&r);

            v = ad->a + ad->b * sqrt(-2.0 * log(u1)) * cos(2 * PI * u2);
            break;
        }
        default:
            v = lo + (hi - lo) * rng_uniform(&r);
        }
        store(ad->dt, data + i * isz, v);
    }
    return 0;
}

static void report(ck_job_t *job, head_conf_t *cf, add_t *ad, const char *op,
                   const int64_t *shape, size_t ndim, uint64_t bytes)
{
    ck_json_t *j = job->changes;

    ck_json_obj(j);
    ck_json_key(j, "op");
    ck_json_str(j, op);
    ck_json_key(j, "state");
    ck_json_str(j, cf->state);
    ck_json_key(j, "key");
    ck_json_str(j, ad->key);
    ck_json_key(j, "dtype");
    ck_json_str(j, ad->dt->name);
    ck_json_key(j, "shape");
    ck_json_arr(j);
    for (size_t i = 0; i < ndim; i++)
        ck_json_int(j, shape[i]);
    ck_json_end(j);
    ck_json_key(j, "init");
    ck_json_str(j, ad->text);
    ck_json_key(j, "bytes");
    ck_json_u64(j, bytes);
    ck_json_end(j);
}

static int head_run(ck_job_t *job, void *conf)
{
    head_conf_t *cf = conf;
    ck_arena_t *a = &job->ck.arena;
    ck_py_t *sd;
    ck_py_vec_t *m;
    int rc;

    rc = ck_ckpt_mapping(&job->ck, cf->state, &sd, &m, job->err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < cf->nadds; i++) {
        add_t *ad = &cf->adds[i];
        const int64_t *shape = ad->shape;
        size_t ndim = ad->ndim, at;
        uint64_t numel = 1, bytes;
        uint8_t *data;
        ck_py_t *t, *old = ck_py_map_get(sd, ad->key, &at), *k;

        if (old != NULL && !strcmp(cf->on_exists, "error"))
            return ck_err_set(job->err, CK_EPLUGIN,
                              "head_init: %s already has '%s'", cf->state, ad->key);
        if (ad->like != NULL) {
            ck_tensor_t *like = tensor_at(job, sd, ad->like);

            if (like == NULL)
                return ck_err_set(job->err, CK_EPLUGIN,
                                  "head_init: like:%s: no such tensor in %s",
                                  ad->like, cf->state);
            shape = like->size;
            ndim = like->ndim;
        }
        for (size_t d = 0; d < ndim; d++)
            if (ck_mul_u64(numel, (uint64_t)shape[d], &numel) < 0)
                return ck_err_set(job->err, CK_EPLUGIN, "head_init: shape overflows");
        if (old != NULL && !strcmp(cf->on_exists, "skip")) {
            report(job, cf, ad, "skipped", shape, ndim, 0);
            continue;
        }
        if (ck_mul_u64(numel, ad->dt->itemsize, &bytes) < 0 || bytes > (1ull << 34))
            return ck_err_set(job->err, CK_EPLUGIN, "head_init: %s is too large",
                              ad->key);
        data = ck_arena_alloc(a, (size_t)bytes + 1);
        if (data == NULL)
            return ck_err_set(job->err, CK_ENOMEM, "out of memory");
        rc = fill(job, cf, ad, sd, shape, ndim, numel, data);
        if (rc < 0)
            return rc;
        t = ck_ckpt_new_tensor(&job->ck, ad->dt, shape, ndim, data, job->err);
        if (t == NULL)
            return job->err->code;
        if (old != NULL) {
            m->v[2 * at + 1] = t;
        } else {
            k = ck_py_str(a, ad->key, strlen(ad->key));
            if (k == NULL || ck_py_vec_push(a, m, k) < 0 || ck_py_vec_push(a, m, t) < 0)
                return ck_err_set(job->err, CK_ENOMEM, "out of memory");
        }
        report(job, cf, ad, old != NULL ? "replaced" : "added", shape, ndim, bytes);
    }
    return 0;
}

const ck_plugin_t ck_plugin_head_init = {
    .name = "head_init",
    .summary = "add new, reproducibly initialised parameters",
    .conf_size = sizeof(head_conf_t),
    .directives = head_directives,
    .init_conf = head_init_conf,
    .run = head_run,
};
