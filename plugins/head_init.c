/*
 * head_init -- add new parameters (a new conditioning head, an extra
 * codebook) to a state dict, each as a new contiguous storage.
 *
 *   add = KEY DTYPE SHAPE INIT
 *
 * DTYPE is a torch dtype name or alias (float16, half, fp16, bfloat16,
 * bf16, float32, float, ...).  SHAPE is 1024x512, 2048, or like:OTHERKEY.
 * INIT is one of
 *   zeros, ones, const(V)          V must fit DTYPE as torch.full
 *                                  wants: an integer's range; a float's
 *                                  largest (a finite V never becomes inf)
 *   normal(MEAN,STD)
 *   trunc_normal(MEAN,STD,A,B)     as torch.nn.init.trunc_normal_: the
 *                                  inverse CDF of the normal over [A, B]
 *   uniform(A,B)
 *   xavier_uniform, kaiming_uniform   (kaiming: bound 1/sqrt(fan_in),
 *                                  nn.Linear's default)
 *   gaussian, gaussian(DEPTH)      AudioCraft's LM init: std =
 *                                  1/sqrt(input dim) (/sqrt(2*DEPTH)),
 *                                  truncated at 3 std
 *   uniform, uniform(DEPTH)        AudioCraft's: bound sqrt(3) * that std
 *   copy(OTHERKEY)
 * The input dim is SHAPE's second (nn.Linear's in_features, nn.Embedding's
 * embedding_dim).  OTHERKEY may be a key an earlier line added.  Blanks are
 * allowed inside the parentheses: normal(0, 0.02).
 *
 * Random values come from our own documented generator, not torch's: each
 * key gets a xoshiro256** stream seeded by SplitMix64 from
 * seed ^ FNV-1a-64(key); uniform doubles are (x >> 11) * 2^-53 and normals
 * come from the Box-Muller transform.  Random values are computed in
 * double and rounded to float32, then, for float16 and bfloat16, from
 * float32 to the dtype (round to nearest even): the same line gives the
 * same weights in every dtype, a float16 head being exactly the float32
 * one .half(), as if made in float32 and converted.  float64 keeps the
 * double.  const(V) is what torch.full(shape, V, dtype=DTYPE) gives: a
 * decimal integer V is read as an integer (exact up to int64) and converted
 * as torch converts an int64, other V as a double, rounded to float32 and,
 * for float16 and bfloat16, from float32 to the dtype (torch rounds twice).
 * copy() converts each element as torch's .to(DTYPE) does (floats through
 * ck_dtype_convert, integers read as integers).  The same seed and settings
 * give the same bytes on every machine, and adding a key does not change the
 * values of the others.
 */
#include "plugin.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIMS 8
#define PI 3.14159265358979323846

typedef enum { I_ZEROS, I_ONES, I_CONST, I_NORMAL, I_UNIFORM, I_XAVIER,
               I_KAIMING, I_COPY, I_TRUNC, I_GAUSSIAN, I_LM_UNIFORM
} init_kind_t;

typedef struct {
    char *key;
    const ck_dtype_t *dt;
    int64_t shape[MAX_DIMS];
    size_t ndim;
    char *like;          /* shape of this key instead */
    init_kind_t init;
    double a, b, c, d;   /* the init's numbers, in order */
    int is_int;          /* const(V) with V a decimal integer, in iv */
    int64_t iv;
    char *src;           /* copy(src) */
    char text[256];      /* the line, for the record */
} add_t;

typedef enum { EXISTS_ERROR, EXISTS_SKIP, EXISTS_REPLACE } on_exists_t;

typedef struct {
    ck_conf_list_t state; /* ck_path_t * */
    uint64_t seed;
    ck_conf_list_t adds; /* add_t *, parsed at load, in the order given */
    int on_exists;       /* on_exists_t */
} head_conf_t;

static int set_add(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                   const char *value);

static const ck_conf_enum_t exists_names[] = {
    { "error", EXISTS_ERROR },
    { "skip", EXISTS_SKIP },
    { "replace", EXISTS_REPLACE },
    { NULL, 0 },
};

static const ck_directive_t head_directives[] = {
    { "state", ck_conf_set_paths, offsetof(head_conf_t, state),
      "best_state/model", CK_DIR_MULTI,
      "state dicts to add to: PATH, A|B (the first), PATH? (optional)" },
    { "seed", ck_conf_set_u64, offsetof(head_conf_t, seed), "0", 0,
      "seed of the random inits" },
    { "add", set_add, offsetof(head_conf_t, adds), NULL, CK_DIR_MULTI, "KEY DTYPE SHAPE INIT" },
    { "on_exists", ck_conf_set_enum, offsetof(head_conf_t, on_exists), "error",
      0, "error, skip or replace when KEY exists", exists_names },
    { NULL, NULL, 0, NULL, 0, NULL },
};

/*
 * name(N1,N2,...) with exactly n numbers into v (blanks allowed around
 * them): 0, or -1 when s is not that call.
 */
static int parse_call(const char *s, const char *name, double *v, int n)
{
    size_t len = strlen(name);
    char *end;

    if (strncmp(s, name, len) != 0 || s[len] != '(')
        return -1;
    s += len + 1;
    for (int i = 0; i < n; i++) {
        v[i] = strtod(s, &end); /* skips leading blanks */
        if (end == s)
            return -1;
        s = end + strspn(end, " \t");
        if (*s != (i + 1 < n ? ',' : ')'))
            return -1;
        s++;
    }
    return *s == '\0' ? 0 : -1;
}

/* Cut line into at most max words at blanks outside parentheses. */
static size_t words(char *line, char **w, size_t max)
{
    size_t n = 0;
    int depth = 0;

    for (char *p = line; *p != '\0';) {
        p += strspn(p, " \t");
        if (*p == '\0')
            break;
        if (n == max)
            return max + 1;
        w[n++] = p;
        for (; *p != '\0' && (depth > 0 || (*p != ' ' && *p != '\t')); p++)
            depth += *p == '(' ? 1 : *p == ')' ? -1 : 0;
        if (*p != '\0')
            *p++ = '\0';
    }
    return n;
}

static int isdigit_c(char c)
{
    return c >= '0' && c <= '9';
}

/* The init part of an add line into ad: 0 or -1 when unknown. */
static int parse_init(const char *w, add_t *ad)
{
    double v[4];
    static const struct {
        const char *name;
        init_kind_t kind;
    } bare[] = {
        { "zeros", I_ZEROS },          { "ones", I_ONES },
        { "xavier_uniform", I_XAVIER }, { "kaiming_uniform", I_KAIMING },
        { "gaussian", I_GAUSSIAN },    { "uniform", I_LM_UNIFORM },
    };

    for (size_t i = 0; i < CK_ARRAY_SIZE(bare); i++) {
        if (strcmp(w, bare[i].name) == 0) {
            ad->init = bare[i].kind;
            return 0;
        }
    }
    ad->init = I_CONST;
    if (parse_call(w, "const", v, 1) == 0) {
        /* a Python int literal: read as an integer, not through double */
        const char *s = w + 6 + strspn(w + 6, " \t"), *e = s;
        char *end;

        e += *e == '+' || *e == '-';
        e += strspn(e, "0123456789");
        if (e > s && isdigit_c(e[-1]) && e[strspn(e, " \t")] == ')') {
            errno = 0;
            ad->iv = strtoll(s, &end, 10);
            ad->is_int = errno == 0 && end == e ? 1 : -1; /* -1: too large */
        }
        goto set;
    }
    ad->init = I_NORMAL;
    if (parse_call(w, "normal", v, 2) == 0)
        goto set;
    ad->init = I_UNIFORM;
    if (parse_call(w, "uniform", v, 2) == 0)
        goto set;
    ad->init = I_TRUNC;
    if (parse_call(w, "trunc_normal", v, 4) == 0)
        goto set;
    ad->init = I_GAUSSIAN;
    if (parse_call(w, "gaussian", v, 1) == 0)
        goto set;
    ad->init = I_LM_UNIFORM;
    if (parse_call(w, "uniform", v, 1) == 0)
        goto set;
    return -1;
set:
    ad->a = v[0], ad->b = v[1], ad->c = v[2], ad->d = v[3];
    return 0;
}

/* SHAPE: 1024x512 or like:KEY. */
static int parse_shape(char *w, add_t *ad, ck_err_t *err)
{
    if (strncmp(w, "like:", 5) == 0) {
        ad->like = w + 5;
        if (*ad->like == '\0')
            return ck_err_set(err, CK_ECONFIG, "add: SHAPE like: needs a KEY "
                              "(in '%s')", ad->text);
        return 0;
    }
    for (char *s = w; *s != '\0';) {
        char *end;
        long long v = strtoll(s, &end, 10);

        if (end == s || v < 0 || ad->ndim == MAX_DIMS || *s == '-' ||
            *s == '+' || (*end != '\0' && (*end != 'x' || end[1] == '\0')))
            return ck_err_set(err, CK_ECONFIG, "add: bad shape '%s': SHAPE is "
                              "1024x512, 2048 or like:KEY (in '%s')", w,
                              ad->text);
        ad->shape[ad->ndim++] = v;
        s = *end ? end + 1 : end;
    }
    if (ad->ndim == 0)
        return ck_err_set(err, CK_ECONFIG, "add: bad shape '%s'", w);
    return 0;
}

/* The largest finite value of a floating dtype. */
static double float_max(ck_dtype_id_t id)
{
    switch (id) {
    case CK_DT_FLOAT16:
        return 65504.0;
    case CK_DT_BFLOAT16:
        return 0x1.fep127;
    case CK_DT_FLOAT32:
        return FLT_MAX;
    default:
        return DBL_MAX;
    }
}

static int parse_add(char *line, add_t *ad, ck_err_t *err)
{
    char *w[5], names[512];
    size_t n;

    snprintf(ad->text, sizeof(ad->text), "%s", line);
    n = words(line, w, 4);
    if (n != 4)
        return ck_err_set(err, CK_ECONFIG,
                          "add: '%s' is not KEY DTYPE SHAPE INIT (%zu parts)",
                          ad->text, n > 4 ? (size_t)5 : n);
    ad->key = w[0];
    ad->dt = ck_dtype_lookup(w[1]);
    if (!ck_dtype_has_codec(ad->dt)) {
        ck_dtype_names(names, sizeof(names), 1);
        return ck_err_set(err, CK_ECONFIG, "add: unsupported dtype '%s' (in "
                          "'%s'); DTYPE is one of %s", w[1], ad->text, names);
    }
    if (parse_shape(w[2], ad, err) < 0)
        return err->code;
    if (!strncmp(w[3], "copy(", 5) && w[3][strlen(w[3]) - 1] == ')') {
        ad->init = I_COPY;
        ad->src = w[3] + 5;
        ad->src[strlen(ad->src) - 1] = '\0';
        if (*ad->src == '\0')
            return ck_err_set(err, CK_ECONFIG, "add: copy() needs a KEY");
    } else if (parse_init(w[3], ad) < 0) {
        return ck_err_set(err, CK_ECONFIG, "add: unknown init '%s' (in '%s'); "
                          "INIT is zeros, ones, const(V), normal(MEAN,STD), "
                          "trunc_normal(MEAN,STD,A,B), uniform(A,B), "
                          "xavier_uniform, kaiming_uniform, gaussian[(DEPTH)], "
                          "uniform[(DEPTH)] or copy(KEY)", w[3], ad->text);
    }
    if ((ad->init == I_NORMAL || ad->init == I_TRUNC) && ad->b < 0)
        return ck_err_set(err, CK_ECONFIG, "add: %s() with a negative std",
                          ad->init == I_NORMAL ? "normal" : "trunc_normal");
    if (ad->init == I_TRUNC && !(ad->c < ad->d))
        return ck_err_set(err, CK_ECONFIG, "add: trunc_normal() needs A < B");
    if ((ad->init == I_GAUSSIAN || ad->init == I_LM_UNIFORM) &&
        w[3][strlen(w[3]) - 1] == ')' && !(ad->a >= 1 && ad->a == floor(ad->a)))
        return ck_err_set(err, CK_ECONFIG, "add: DEPTH %g is not a whole "
                          "number from 1", ad->a);
    if (!ad->dt->is_float && ad->init != I_ZEROS && ad->init != I_ONES &&
        ad->init != I_CONST && ad->init != I_COPY)
        return ck_err_set(err, CK_ECONFIG,
                          "add: random init of an integer dtype %s", w[1]);
    if (ad->init == I_CONST && !ad->dt->is_float && ad->dt->id != CK_DT_BOOL) {
        /* as torch.full refuses it: the value must fit the integer type */
        int is_unsigned = ad->dt->id == CK_DT_UINT8;
        double top = ldexp(1.0, 8 * (int)ad->dt->itemsize - !is_unsigned);
        double lo = is_unsigned ? 0 : -top;

        double v = ad->is_int == 1 ? (double)ad->iv : ad->a;

        /* an int64 literal always fits int64; narrower ones are exact */
        if (ad->is_int < 0 || (!(ad->is_int == 1 && ad->dt->itemsize == 8) &&
                               !(v >= lo && v < top)))
            return ck_err_set(err, CK_ECONFIG, "add: const(%g) does not fit %s",
                              ad->a, w[1]);
    }
    if (ad->init == I_CONST && ad->dt->is_float) {
        /* as torch.full refuses it: a finite value past the dtype's largest
         * (an int past int64 fits no dtype: "Overflow when unpacking long") */
        double v = ad->is_int == 1 ? (double)ad->iv : ad->a;

        if (ad->is_int < 0 || (isfinite(v) && fabs(v) > float_max(ad->dt->id)))
            return ck_err_set(err, CK_ECONFIG,
                              "add: %s does not fit %s (torch.full refuses "
                              "it)", w[3], w[1]);
    }
    return 0;
}

/* 'add = KEY DTYPE SHAPE INIT', parsed once, here, into the conf. */
static int set_add(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                   const char *value)
{
    head_conf_t *cf = conf;
    add_t *ad = ck_arena_alloc(cx->arena, sizeof(*ad));
    char *line = ck_arena_strdup(cx->arena, value);
    int rc;

    if (ad == NULL || line == NULL)
        return ck_err_set(cx->err, CK_ENOMEM, "out of memory");
    rc = parse_add(line, ad, cx->err);
    if (rc < 0)
        return rc;
    return ck_conf_list_add(cx, &cf->adds, ad);
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
    uint64_t x = seed ^ ck_hash_fnv1a(key, strlen(key));

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

/* The inverse of erf on (-1, 1): Giles' approximation ("Approximating the
 * erfinv function", GPU Computing Gems, 2011), then two Newton steps on
 * erf for double precision. */
static double erfinv(double y)
{
    double w = -log((1.0 - y) * (1.0 + y)), p, x;

    if (w < 5.0) {
        w -= 2.5;
        p = 2.81022636e-08;
        p = 3.43273939e-07 + p * w;
        p = -3.5233877e-06 + p * w;
        p = -4.39150654e-06 + p * w;
        p = 0.00021858087 + p * w;
        p = -0.00125372503 + p * w;
        p = -0.00417768164 + p * w;
        p = 0.246640727 + p * w;
        p = 1.50140941 + p * w;
    } else {
        w = sqrt(w) - 3.0;
        p = -0.000200214257;
        p = 0.000100950558 + p * w;
        p = 0.00134934322 + p * w;
        p = -0.00367342844 + p * w;
        p = 0.00573950773 + p * w;
        p = -0.0076224613 + p * w;
        p = 0.00943887047 + p * w;
        p = 1.00167406 + p * w;
        p = 2.83297682 + p * w;
    }
    x = p * y;
    for (int i = 0; i < 2 && isfinite(x); i++)
        x -= (erf(x) - y) / (2.0 / sqrt(PI) * exp(-x * x));
    return x;
}

/* The normal's CDF. */
static double phi(double x)
{
    return 0.5 * (1.0 + erf(x / sqrt(2.0)));
}

/* ---- running ---------------------------------------------------------- */

static const ck_tensor_t *tensor_at(ck_job_t *job, ck_py_t *sd,
                                    const char *key)
{
    return ck_job_tensor(job, ck_py_map_get(sd, key, NULL));
}

/* The integer v into dtype dt at p, as torch converts an int64: integers
 * wrap (keep the low bytes), bool is v != 0, float32 and float64 round v
 * once, float16 and bfloat16 go through float32. */
static void put_int(const ck_dtype_t *dt, uint8_t *p, int64_t v)
{
    float f = (float)v;
    double x = (double)v;

    switch (dt->id) {
    case CK_DT_FLOAT64:
        memcpy(p, &x, 8);
        return;
    case CK_DT_FLOAT32:
    case CK_DT_FLOAT16:
    case CK_DT_BFLOAT16: /* f is exact in double: one rounding from f */
        ck_dtype_put(dt, p, (double)f);
        return;
    case CK_DT_BOOL:
        *p = v != 0;
        return;
    default:
        memcpy(p, &v, dt->itemsize); /* little-endian truncation */
        return;
    }
}

/* The integer (or bool) element of dt at p, exactly. */
static int64_t get_int(const ck_dtype_t *dt, const uint8_t *p)
{
    int64_t v;
    int32_t i32;
    int16_t i16;

    switch (dt->id) {
    case CK_DT_INT64: memcpy(&v, p, 8); return v;
    case CK_DT_INT32: memcpy(&i32, p, 4); return i32;
    case CK_DT_INT16: memcpy(&i16, p, 2); return i16;
    case CK_DT_INT8: return (int8_t)*p;
    default: return *p; /* uint8, bool */
    }
}

/* copy(SRC): the source's elements, converted to the dtype. */
static int fill_copy(ck_job_t *job, add_t *ad, const char *state,
                     ck_py_t *sd, uint64_t numel, uint8_t *data)
{
    const ck_tensor_t *src = tensor_at(job, sd, ad->src);
    size_t isz = ad->dt->itemsize;
    uint8_t *tmp;
    int rc;

    if (src == NULL)
        return ck_job_fail(job, CK_EPLUGIN, "copy(%s): no such tensor in %s",
                           ad->src, state);
    if (src->numel != numel)
        return ck_job_fail(job, CK_EPLUGIN,
                           "copy(%s): %llu elements, %s needs %llu", ad->src,
                           (unsigned long long)src->numel, ad->key,
                           (unsigned long long)numel);
    tmp = ck_arena_alloc(ck_job_arena(job), numel * src->dtype->itemsize + 1);
    if (tmp == NULL)
        return ck_job_nomem(job);
    rc = ck_job_read_tensor(job, src, tmp);
    if (rc < 0)
        return rc;
    if (src->dtype == ad->dt) {
        memcpy(data, tmp, numel * isz);
        return 0;
    }
    /* float to float as torch's .to() (and the cast plugin) converts */
    if (ck_dtype_is_castable(src->dtype) && ck_dtype_is_castable(ad->dt))
        return ck_dtype_convert(ad->dt, data, src->dtype, tmp, numel) < 0
                   ? ck_job_fail(job, CK_EPLUGIN, "copy(%s): cannot convert "
                                 "%s to %s", ad->src, src->dtype->name,
                                 ad->dt->name)
                   : 0;
    for (uint64_t i = 0; i < numel; i++) {
        const uint8_t *s = tmp + i * src->dtype->itemsize;

        if (src->dtype->is_float) /* to an integer dtype */
            ck_dtype_put(ad->dt, data + i * isz, ck_dtype_get(src->dtype, s));
        else
            put_int(ad->dt, data + i * isz, get_int(src->dtype, s));
    }
    return 0;
}

/*
 * The distribution of a random init over this shape: uniform on [*lo, *hi]
 * (*trunc 0), or the normal (*mean, *std) truncated to [*lo, *hi] (*trunc
 * 1, the inverse-CDF method of torch's trunc_normal_) or not (*trunc 2).
 */
static int distribution(ck_job_t *job, const add_t *ad, const int64_t *shape,
                        size_t ndim, double *lo, double *hi, double *mean,
                        double *std, int *trunc)
{
    uint64_t recept = 1;
    double fan_in, fan_out, s;

    *lo = ad->a, *hi = ad->b, *mean = ad->a, *std = ad->b, *trunc = 0;
    switch (ad->init) {
    case I_NORMAL:
        *trunc = 2;
        return 0;
    case I_TRUNC:
        *lo = ad->c, *hi = ad->d, *trunc = 1;
        return 0;
    case I_XAVIER:
    case I_KAIMING:
    case I_GAUSSIAN:
    case I_LM_UNIFORM:
        break;
    default:
        return 0;
    }
    if (ndim < 2)
        return ck_job_fail(job, CK_EPLUGIN, "%s: %s needs at least 2 "
                           "dimensions",
                           ad->key, ad->init == I_XAVIER ? "xavier_uniform"
                                    : ad->init == I_KAIMING ? "kaiming_uniform"
                                    : ad->init == I_GAUSSIAN ? "gaussian"
                                                             : "uniform");
    for (size_t i = 2; i < ndim; i++)
        recept *= (uint64_t)shape[i];
    fan_in = (double)((uint64_t)shape[1] * recept);
    fan_out = (double)((uint64_t)shape[0] * recept);
    if (ad->init == I_XAVIER || ad->init == I_KAIMING) {
        s = ad->init == I_XAVIER ? sqrt(6.0 / (fan_in + fan_out))
                                 : 1.0 / sqrt(fan_in);
        *lo = -s, *hi = s;
        return 0;
    }
    /* AudioCraft's get_init_fn: std from the input dim, and the depth */
    s = 1.0 / sqrt((double)shape[1]);
    if (ad->a >= 1)
        s /= sqrt(2.0 * ad->a);
    if (ad->init == I_GAUSSIAN) {
        *mean = 0, *std = s, *lo = -3 * s, *hi = 3 * s, *trunc = 1;
    } else {
        *lo = -sqrt(3.0) * s, *hi = sqrt(3.0) * s;
    }
    return 0;
}

static int fill(ck_job_t *job, head_conf_t *cf, add_t *ad, const char *state,
                ck_py_t *sd, const int64_t *shape, size_t ndim,
                uint64_t numel, uint8_t *data)
{
    size_t isz = ad->dt->itemsize;
    int narrow = ad->dt->id == CK_DT_FLOAT16 || ad->dt->id == CK_DT_BFLOAT16;
    double lo, hi, mean, std, pl = 0, pu = 0;
    int trunc, rc;
    rng_t r;

    if (ad->init == I_COPY)
        return fill_copy(job, ad, state, sd, numel, data);
    rc = distribution(job, ad, shape, ndim, &lo, &hi, &mean, &std, &trunc);
    if (rc < 0)
        return rc;
    if (trunc == 1 && std > 0) {
        pl = 2 * phi((lo - mean) / std) - 1;
        pu = 2 * phi((hi - mean) / std) - 1;
    }
    rng_seed(&r, cf->seed, ad->key);
    for (uint64_t i = 0; i < numel; i++) {
        double v;

        if ((i & 0xffff) == 0xffff && ck_job_canceled(job))
            return CK_ECANCELED;

        switch (ad->init) {
        case I_ZEROS: v = 0; break;
        case I_ONES: v = 1; break;
        case I_CONST:
            if (ad->is_int == 1) {
                put_int(ad->dt, data + i * isz, ad->iv);
                continue;
            }
            v = ad->a;
            break;
        default:
            if (trunc == 2) {
                double u1 = 1.0 - rng_uniform(&r), u2 = rng_uniform(&r);

                v = mean + std * sqrt(-2.0 * log(u1)) * cos(2 * PI * u2);
            } else if (trunc == 1) {
                v = std > 0 ? mean + std * sqrt(2.0) *
                                  erfinv(pl + (pu - pl) * rng_uniform(&r))
                            : mean;
                v = v < lo ? lo : v > hi ? hi : v;
            } else {
                v = lo + (hi - lo) * rng_uniform(&r);
            }
        }
        /* a random value as made in float32 and converted: the same
         * weights in every dtype; torch.full rounds a float constant to
         * float16 and bfloat16 through float32 too */
        if (narrow)
            v = (float)v;
        ck_dtype_put(ad->dt, data + i * isz, v);
    }
    return 0;
}

static void report(ck_job_t *job, const char *state, add_t *ad,
                   const char *op, const int64_t *shape, size_t ndim,
                   uint64_t bytes)
{
    ck_job_report(job, op, CK_F_STR("state", state),
                  CK_F_STR("key", ad->key), CK_F_STR("dtype", ad->dt->name),
                  CK_F_I64S("shape", shape, ndim), CK_F_STR("init", ad->text),
                  CK_F_U64("bytes", bytes));
}

/* Every add line into the state dict sd (its pairs m), named state. */
static int add_to(ck_job_t *job, head_conf_t *cf, const char *state,
                  ck_py_t *sd, ck_py_vec_t *m)
{
    ck_arena_t *a = ck_job_arena(job);
    int rc;

    for (size_t i = 0; i < cf->adds.n; i++) {
        add_t *ad = cf->adds.v[i];
        const int64_t *shape = ad->shape;
        size_t ndim = ad->ndim, at;
        uint64_t numel = 1, bytes;
        uint8_t *data;
        ck_py_t *t, *old = ck_py_map_get(sd, ad->key, &at), *k;

        if (old != NULL && cf->on_exists == EXISTS_ERROR)
            return ck_job_fail(job, CK_EPLUGIN, "%s already has '%s'",
                               state, ad->key);
        if (ad->like != NULL) {
            const ck_tensor_t *like = tensor_at(job, sd, ad->like);

            if (like == NULL)
                return ck_job_fail(job, CK_EPLUGIN,
                                   "like:%s: no such tensor in %s", ad->like,
                                   state);
            shape = like->size;
            ndim = like->ndim;
        }
        for (size_t d = 0; d < ndim; d++)
            if (ck_mul_u64(numel, (uint64_t)shape[d], &numel) < 0)
                return ck_job_fail(job, CK_EPLUGIN, "shape overflows");
        if (old != NULL && cf->on_exists == EXISTS_SKIP) {
            report(job, state, ad, "skipped", shape, ndim, 0);
            continue;
        }
        if (ck_mul_u64(numel, ad->dt->itemsize, &bytes) < 0 ||
            bytes > (1ull << 34))
            return ck_job_fail(job, CK_EPLUGIN, "%s is too large", ad->key);
        data = ck_arena_alloc(a, (size_t)bytes + 1);
        if (data == NULL)
            return ck_job_nomem(job);
        rc = fill(job, cf, ad, state, sd, shape, ndim, numel, data);
        if (rc < 0)
            return rc;
        t = ck_job_new_tensor(job, ad->dt, shape, ndim, data);
        if (t == NULL)
            return ck_job_error(job);
        if (old != NULL) {
            m->v[2 * at + 1] = t;
        } else {
            k = ck_py_str(a, ad->key, strlen(ad->key));
            if (k == NULL || ck_py_vec_push(a, m, k) < 0 ||
                ck_py_vec_push(a, m, t) < 0)
                return ck_job_nomem(job);
        }
        report(job, state, ad, old != NULL ? "replaced" : "added", shape,
               ndim, bytes);
    }
    return 0;
}

static int head_init_conf(ck_conf_ctx_t *cx, void *conf)
{
    const head_conf_t *cf = conf;

    if (cf->adds.n == 0)
        return ck_err_set(cx->err, CK_ECONFIG,
                          "nothing to do: give at least one add = KEY DTYPE "
                          "SHAPE INIT");
    return 0;
}

static int head_run(ck_job_t *job, void *conf)
{
    head_conf_t *cf = conf;

    for (size_t i = 0; i < cf->state.n; i++) {
        const char *state;
        ck_py_t *sd;
        ck_py_vec_t *m;
        int rc = ck_job_place(job, cf->state.v[i], &state, &sd, &m);

        if (rc == 1)
            rc = add_to(job, cf, state, sd, m);
        if (rc < 0)
            return rc;
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
