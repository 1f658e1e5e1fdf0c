/*
 * dtype.c -- the dtype table and the element codecs (see dtype.h).
 *
 * The table is in the order torch lists its legacy storage classes; the
 * dtypes after them exist only as UntypedStorage with _rebuild_tensor_v3.
 */
#include "dtype.h"

#include "ck.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

const ck_dtype_t ck_dtype_table[] = {
    /* name           storage class            size float codec */
    { "float64", "DoubleStorage", 8, 1, CK_DT_FLOAT64 },
    { "float32", "FloatStorage", 4, 1, CK_DT_FLOAT32 },
    { "float16", "HalfStorage", 2, 1, CK_DT_FLOAT16 },
    { "bfloat16", "BFloat16Storage", 2, 1, CK_DT_BFLOAT16 },
    { "int64", "LongStorage", 8, 0, CK_DT_INT64 },
    { "int32", "IntStorage", 4, 0, CK_DT_INT32 },
    { "int16", "ShortStorage", 2, 0, CK_DT_INT16 },
    { "int8", "CharStorage", 1, 0, CK_DT_INT8 },
    { "uint8", "ByteStorage", 1, 0, CK_DT_UINT8 },
    { "bool", "BoolStorage", 1, 0, CK_DT_BOOL },
    { "complex128", "ComplexDoubleStorage", 16, 2, CK_DT_OTHER },
    { "complex64", "ComplexFloatStorage", 8, 2, CK_DT_OTHER },
    { "qint8", "QInt8Storage", 1, 0, CK_DT_OTHER },
    { "qint32", "QInt32Storage", 4, 0, CK_DT_OTHER },
    { "quint8", "QUInt8Storage", 1, 0, CK_DT_OTHER },
    { "quint4x2", "QUInt4x2Storage", 1, 0, CK_DT_OTHER },
    { "quint2x4", "QUInt2x4Storage", 1, 0, CK_DT_OTHER },
    /* written as UntypedStorage with _rebuild_tensor_v3 */
    { "complex32", NULL, 4, 2, CK_DT_OTHER },
    { "float8_e5m2", NULL, 1, 1, CK_DT_OTHER },
    { "float8_e4m3fn", NULL, 1, 1, CK_DT_OTHER },
    { "float8_e5m2fnuz", NULL, 1, 1, CK_DT_OTHER },
    { "float8_e4m3fnuz", NULL, 1, 1, CK_DT_OTHER },
    { "float8_e8m0fnu", NULL, 1, 1, CK_DT_OTHER },
    { "float4_e2m1fn_x2", NULL, 1, 1, CK_DT_OTHER },
    { "uint16", NULL, 2, 0, CK_DT_OTHER },
    { "uint32", NULL, 4, 0, CK_DT_OTHER },
    { "uint64", NULL, 8, 0, CK_DT_OTHER },
    { "bits8", NULL, 1, 0, CK_DT_OTHER },
    { "bits16", NULL, 2, 0, CK_DT_OTHER },
    { "bits1x8", NULL, 1, 0, CK_DT_OTHER },
    { "bits2x4", NULL, 1, 0, CK_DT_OTHER },
    { "bits4x2", NULL, 1, 0, CK_DT_OTHER },
};

_Static_assert(CK_ARRAY_SIZE(ck_dtype_table) < 255,
               "a storage's dt is a byte");

const unsigned ck_dtype_count = CK_ARRAY_SIZE(ck_dtype_table);

unsigned ck_dtype_index(const ck_dtype_t *dt)
{
    return (unsigned)(dt - ck_dtype_table);
}

const ck_dtype_t *ck_dtype_by_name(const char *name)
{
    for (size_t i = 0; i < CK_ARRAY_SIZE(ck_dtype_table); i++)
        if (strcmp(ck_dtype_table[i].name, name) == 0)
            return &ck_dtype_table[i];
    return NULL;
}

/* torch's other names for a dtype (torch.half ...) and the usual short
 * ones (fp16 ...). */
static const struct {
    const char *alias, *name;
} aliases[] = {
    { "half", "float16" },   { "fp16", "float16" },   { "f16", "float16" },
    { "bf16", "bfloat16" },  { "float", "float32" },  { "fp32", "float32" },
    { "f32", "float32" },    { "double", "float64" }, { "fp64", "float64" },
    { "f64", "float64" },    { "long", "int64" },     { "int", "int32" },
    { "short", "int16" },
};

const ck_dtype_t *ck_dtype_lookup(const char *name)
{
    const ck_dtype_t *dt = ck_dtype_by_name(name);

    for (size_t i = 0; dt == NULL && i < CK_ARRAY_SIZE(aliases); i++)
        if (strcmp(aliases[i].alias, name) == 0)
            dt = ck_dtype_by_name(aliases[i].name);
    return dt;
}

size_t ck_dtype_names(char *out, size_t size, int codec_only)
{
    size_t o = 0;

    if (size == 0)
        return 0;
    out[0] = '\0';
    for (size_t i = 0; i < CK_ARRAY_SIZE(ck_dtype_table) && o < size; i++) {
        int n = 0;

        if (codec_only && !ck_dtype_has_codec(&ck_dtype_table[i]))
            continue;
        o += (size_t)snprintf(out + o, size - o, "%s%s", o ? ", " : "",
                              ck_dtype_table[i].name);
        for (size_t k = 0; k < CK_ARRAY_SIZE(aliases) && o < size; k++)
            if (strcmp(aliases[k].name, ck_dtype_table[i].name) == 0)
                o += (size_t)snprintf(out + o, size - o, "%s%s",
                                      n++ ? " " : " (", aliases[k].alias);
        if (n > 0 && o < size)
            o += (size_t)snprintf(out + o, size - o, ")");
    }
    return o < size ? o : size - 1;
}

const ck_dtype_t *ck_dtype_by_storage(const char *storage_class)
{
    for (size_t i = 0; i < CK_ARRAY_SIZE(ck_dtype_table); i++)
        if (ck_dtype_table[i].storage != NULL &&
            strcmp(ck_dtype_table[i].storage, storage_class) == 0)
            return &ck_dtype_table[i];
    return NULL;
}

int ck_dtype_has_codec(const ck_dtype_t *dt)
{
    return dt != NULL && dt->id != CK_DT_OTHER;
}

/* ---- 16-bit floats ---------------------------------------------------- */

double ck_half_to_double(uint16_t h)
{
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ffu;
    double v;

    if (exp == 0)
        v = ldexp((double)mant, -24);
    else if (exp == 31)
        v = mant ? NAN : INFINITY;
    else
        v = ldexp((double)(mant | 0x400u), (int)exp - 25);
    return (h & 0x8000u) ? -v : v;
}

double ck_bf16_to_double(uint16_t h)
{
    uint32_t x = (uint32_t)h << 16;
    float f;

    memcpy(&f, &x, 4);
    return f;
}

/*
 * Round a double to a float with 'mbits' mantissa bits and exponent bias
 * 'bias' (ebits wide), to nearest even: float16 (10, 15, 5), bfloat16
 * (7, 127, 8).  Returns the bit pattern.
 */
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

uint16_t ck_double_to_half(double v)
{
    return round_small(v, 10, 15, 5);
}

uint16_t ck_double_to_bf16(double v)
{
    return round_small(v, 7, 127, 8);
}

/* ---- codecs ----------------------------------------------------------- */

double ck_dtype_get(const ck_dtype_t *dt, const uint8_t *p)
{
    union {
        float f;
        double d;
        uint16_t h;
        int16_t i16;
        int32_t i32;
        int64_t i64;
    } u;

    memcpy(&u, p, dt->itemsize <= sizeof(u) ? dt->itemsize : sizeof(u));
    switch (dt->id) {
    case CK_DT_FLOAT64: return u.d;
    case CK_DT_FLOAT32: return u.f;
    case CK_DT_FLOAT16: return ck_half_to_double(u.h);
    case CK_DT_BFLOAT16: return ck_bf16_to_double(u.h);
    case CK_DT_INT64: return (double)u.i64;
    case CK_DT_INT32: return u.i32;
    case CK_DT_INT16: return u.i16;
    case CK_DT_INT8: return (int8_t)*p;
    case CK_DT_UINT8:
    case CK_DT_BOOL: return *p;
    case CK_DT_OTHER: break;
    }
    return NAN;
}

void ck_dtype_put(const ck_dtype_t *dt, uint8_t *p, double v)
{
    switch (dt->id) {
    case CK_DT_FLOAT64:
        memcpy(p, &v, 8);
        return;
    case CK_DT_FLOAT32: {
        float f = (float)v;

        memcpy(p, &f, 4);
        return;
    }
    case CK_DT_FLOAT16:
    case CK_DT_BFLOAT16: {
        uint16_t h = dt->id == CK_DT_FLOAT16 ? ck_double_to_half(v)
                                             : ck_double_to_bf16(v);

        memcpy(p, &h, 2);
        return;
    }
    case CK_DT_BOOL:
        *p = v != 0;
        return;
    case CK_DT_INT64:
    case CK_DT_INT32:
    case CK_DT_INT16:
    case CK_DT_INT8:
    case CK_DT_UINT8: {
        /* out of range and NaN give INT64_MIN, as x86 and torch do */
        int64_t i = v >= -0x1p63 && v < 0x1p63 ? (int64_t)v : INT64_MIN;

        memcpy(p, &i, dt->itemsize); /* little-endian truncation */
        return;
    }
    case CK_DT_OTHER:
        return;
    }
}

/* ---- conversions (torch's .to(dtype)) ---------------------------------- */

int ck_dtype_is_castable(const ck_dtype_t *dt)
{
    return dt != NULL &&
           (dt->id == CK_DT_FLOAT64 || dt->id == CK_DT_FLOAT32 ||
            dt->id == CK_DT_FLOAT16 || dt->id == CK_DT_BFLOAT16);
}

static float bits_f32(uint32_t x)
{
    float f;

    memcpy(&f, &x, 4);
    return f;
}

static uint32_t f32_bits(float f)
{
    uint32_t x;

    memcpy(&x, &f, 4);
    return x;
}

/* float16 to float32 exactly, by its bits; a NaN is quieted, its payload
 * kept (as the F16C instruction and torch do). */
static float half_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu,
             m = h & 0x3ffu;

    if (e == 0x1f)
        return bits_f32(sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0));
    if (e == 0)
        return bits_f32(sign | f32_bits((float)m * 0x1p-24f));
    return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

/* float32 to float16, round to nearest even, NaN sign | 0x7e00: c10's
 * fp16_ieee_from_fp32_value (the FP16 library's), which torch uses. */
static uint16_t f32_half(float f)
{
    uint32_t w = f32_bits(f), shl1 = w + w, sign = w & 0x80000000u;
    uint32_t bias = shl1 & 0xff000000u, bits;
    float base = (fabsf(f) * 0x1p+112f) * 0x1p-110f;

    if (bias < 0x71000000u)
        bias = 0x71000000u;
    base = bits_f32((bias >> 1) + 0x07800000u) + base;
    bits = f32_bits(base);
    if (shl1 > 0xff000000u)
        return (uint16_t)((sign >> 16) | 0x7e00u);
    return (uint16_t)((sign >> 16) |
                      (((bits >> 13) & 0x7c00u) + (bits & 0x0fffu)));
}

/* float32 to bfloat16, round to nearest even; NaN gives nan (0xffff from
 * torch's vector loop, 0x7fc0 from its scalar one). */
static uint16_t f32_bf16(float f, uint16_t nan)
{
    uint32_t x = f32_bits(f);

    if (f != f)
        return nan;
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>

/* float16 to float32 with the F16C instruction (what torch's vector loop
 * uses): the same values as half_f32, NaN payloads included, 8 at a time. */
__attribute__((target("avx,f16c"))) static void half_f32_f16c(
    const uint8_t *s, float *out, size_t n)
{
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(s + 2 * i));

        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; i++) {
        uint16_t h;

        memcpy(&h, s + 2 * i, 2);
        out[i] = half_f32(h);
    }
}

/* F16C and AVX usable (cpuid, and the OS saving the YMM registers), asked
 * once: 0 not yet known, 1 no, 2 yes (a race only asks twice). */
static int have_f16c(void)
{
    static int known;
    int k = __atomic_load_n(&known, __ATOMIC_RELAXED);
    unsigned a, b, c, d, lo = 0, hi = 0;

    if (k == 0) {
        k = 1;
        if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) &&
            (c & bit_AVX) && (c & bit_OSXSAVE)) {
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            k = (lo & 6u) == 6u ? 2 : 1;
        }
        (void)hi;
        __atomic_store_n(&known, k, __ATOMIC_RELAXED);
    }
    return k == 2;
}
#else
static void half_f32_f16c(const uint8_t *s, float *out, size_t n)
{
    (void)s, (void)out, (void)n;
}

static int have_f16c(void)
{
    return 0;
}
#endif

/* n elements of from at s into float32 at out, as torch reads them on the
 * way to another type.  One loop per case, so each is a tight one. */
static void load_f32(ck_dtype_id_t from, const uint8_t *s, float *out,
                     size_t n)
{
    uint16_t h;
    uint32_t x;
    double d;

    switch (from) {
    case CK_DT_FLOAT64:
        for (size_t i = 0; i < n; i++) {
            memcpy(&d, s + 8 * i, 8);
            out[i] = (float)d;
        }
        return;
    case CK_DT_FLOAT32:
        memcpy(out, s, 4 * n);
        return;
    case CK_DT_FLOAT16:
        if (have_f16c()) {
            half_f32_f16c(s, out, n);
            return;
        }
        for (size_t i = 0; i < n; i++) {
            memcpy(&h, s + 2 * i, 2);
            out[i] = half_f32(h);
        }
        return;
    default:
        for (size_t i = 0; i < n; i++) {
            memcpy(&h, s + 2 * i, 2);
            x = (uint32_t)h << 16;
            memcpy(&out[i], &x, 4);
        }
        return;
    }
}

/* n float32 values into dtype to at d. */
static void store_f32(ck_dtype_id_t to, const float *v, uint8_t *d, size_t n,
                      uint16_t nan)
{
    uint16_t h;
    double x;

    switch (to) {
    case CK_DT_FLOAT64:
        for (size_t i = 0; i < n; i++) {
            x = (double)v[i];
            memcpy(d + 8 * i, &x, 8);
        }
        return;
    case CK_DT_FLOAT32:
        memcpy(d, v, 4 * n);
        return;
    case CK_DT_FLOAT16:
        for (size_t i = 0; i < n; i++) {
            h = f32_half(v[i]);
            memcpy(d + 2 * i, &h, 2);
        }
        return;
    default:
        for (size_t i = 0; i < n; i++) {
            h = f32_bf16(v[i], nan);
            memcpy(d + 2 * i, &h, 2);
        }
        return;
    }
}

int ck_dtype_convert(const ck_dtype_t *to, void *dst, const ck_dtype_t *from,
                     const void *src, size_t n)
{
    const uint8_t *s = src;
    uint8_t *d = dst;
    float tmp[1024];
    uint16_t nan;

    if (!ck_dtype_is_castable(to) || !ck_dtype_is_castable(from))
        return CK_EUNSUPPORTED;
    if (to == from) {
        memcpy(dst, src, n * to->itemsize);
        return 0;
    }
    if (to->id == CK_DT_FLOAT32 && (uintptr_t)dst % _Alignof(float) == 0) {
        /* widening to float32: what the loop below does, without the copy
         * out of tmp (F16C writes the output in place) */
        load_f32(from->id, s, dst, n);
        return 0;
    }
    nan = from->id == CK_DT_FLOAT16 ? 0x7fc0u : 0xffffu;
    /* through float32, a block at a time: each loop has one case */
    for (size_t i = 0; i < n; i += 1024) {
        size_t k = n - i < 1024 ? n - i : 1024;

        load_f32(from->id, s + i * from->itemsize, tmp, k);
        store_f32(to->id, tmp, d + i * to->itemsize, k, nan);
    }
    return 0;
}
