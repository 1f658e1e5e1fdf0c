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
#include "plugin.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    if (!ck_dtype_has_codec(ad->dt))
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
    if (ad->init == I_CONST && !ad->dt->is_float && ad->dt->id != CK_DT_BOOL) {
        /* as torch.full refuses it: the value must fit the integer type */
        int is_unsigned = ad->dt->id == CK_DT_UINT8;
        double top = ldexp(1.0, 8 * (int)ad->dt->itemsize - !is_unsigned);
        double lo = is_unsigned ? 0 : -top;

        if (!(ad->a >= lo && ad->a < top))
            return ck_err_set(err, CK_ECONFIG, "add: const(%g) does not fit %s",
                              ad->a, w[1]);
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

/* ---- running ---------------------------------------------------------- */

static const ck_tensor_t *tensor_at(ck_job_t *job, ck_py_t *sd,
                                    const char *key)
{
    return ck_job_tensor(job, ck_py_map_get(sd, key, NULL));
}

static int fill(ck_job_t *job, head_conf_t *cf, add_t *ad, const char *state,
                ck_py_t *sd, const int64_t *shape, size_t ndim,
                uint64_t numel, uint8_t *data)
{
    size_t isz = ad->dt->itemsize;
    rng_t r;
    double lo = ad->a, hi = ad->b;

    rng_seed(&r, cf->seed, ad->key);
    if (ad->init == I_XAVIER || ad->init == I_KAIMING) {
        uint64_t recept = 1;
        double fan_in, fan_out, bound;

        if (ndim < 2)
            return ck_job_fail(job, CK_EPLUGIN,
                               "%s: %s needs at least 2 dimensions",
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
        const ck_tensor_t *src = tensor_at(job, sd, ad->src);
        uint8_t *tmp;
        int rc;

        if (src == NULL)
            return ck_job_fail(job, CK_EPLUGIN,
                               "copy(%s): no such tensor in %s",
                              ad->src, state);
        if (src->numel != numel)
            return ck_job_fail(job, CK_EPLUGIN,
                               "copy(%s): %llu elements, %s needs %llu",
                              ad->src, (unsigned long long)src->numel, ad->key,
                              (unsigned long long)numel);
        tmp = ck_arena_alloc(ck_job_arena(job),
                             numel * src->dtype->itemsize + 1);
        if (tmp == NULL)
            return ck_job_nomem(job);
        rc = ck_job_read_tensor(job, src, tmp);
        if (rc < 0)
            return rc;
        for (uint64_t i = 0; i < numel; i++) {
            if (src->dtype == ad->dt)
                memcpy(data + i * isz, tmp + i * isz, isz);
            else
                ck_dtype_put(ad->dt, data + i * isz,
                             ck_dtype_get(src->dtype,
                                          tmp + i * src->dtype->itemsize));
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
