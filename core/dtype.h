/*
 * dtype.h -- torch's element types: the table (name, legacy storage class,
 * size, kind) and element codecs.  Every piece of ckprep that reads or
 * writes tensor elements goes through here, so a dtype's knowledge is in one
 * place: the checkpoint reader maps storage classes to dtypes, head_init
 * stores generated values, and a conversion reads one dtype and writes
 * another.
 *
 * Codecs work on little-endian bytes (torch.save's byte order, and the only
 * one ckprep accepts) through double: exact for every float16, bfloat16,
 * float32 and float64 value and for integers up to 2^53.  Stores round to
 * nearest even, keep NaN, infinities and signed zero, and overflow to
 * infinity, as torch's .to(dtype) does.
 */
#ifndef CK_DTYPE_H
#define CK_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    CK_DT_FLOAT64,
    CK_DT_FLOAT32,
    CK_DT_FLOAT16,
    CK_DT_BFLOAT16,
    CK_DT_INT64,
    CK_DT_INT32,
    CK_DT_INT16,
    CK_DT_INT8,
    CK_DT_UINT8,
    CK_DT_BOOL,
    CK_DT_OTHER /* known to the reader, but no codec: complex, quantized,
                   float8, bits ... */
} ck_dtype_id_t;

typedef struct {
    const char *name;    /* torch dtype name: "float16" */
    const char *storage; /* legacy storage class, NULL for v3-only dtypes */
    unsigned itemsize;
    unsigned is_float;   /* 1 floating point, 2 complex */
    ck_dtype_id_t id;    /* CK_DT_OTHER: elements cannot be converted */
} ck_dtype_t;

/* The dtypes known (ck_dtype_at's, inline: a storage's size asks it). */
extern const ck_dtype_t ck_dtype_table[];
extern const unsigned ck_dtype_count;

/* The i-th dtype known (NULL past the last), and the i of dt, which is
 * one of those this file gives (ck_dtype_by_name and the others): a
 * storage keeps a byte, not a pointer. */
static inline const ck_dtype_t *ck_dtype_at(unsigned i)
{
    return i < ck_dtype_count ? &ck_dtype_table[i] : NULL;
}
unsigned ck_dtype_index(const ck_dtype_t *dt);

/* The dtype named name ("float16"), or NULL. */
const ck_dtype_t *ck_dtype_by_name(const char *name);
/* The dtype named name or one of its aliases, as users write them: torch's
 * (half, float, double, long, int, short) and the short ones (fp16, bf16,
 * fp32, fp64, f16 ...); NULL when none. */
const ck_dtype_t *ck_dtype_lookup(const char *name);

/* The names ck_dtype_lookup takes, aliases in parentheses ("float64
 * (double fp64 f64), float32 (...), ..."), only dtypes with a codec when
 * codec_only: into out (size bytes, NUL-terminated); returns the length. */
size_t ck_dtype_names(char *out, size_t size, int codec_only);

/* The dtype of a legacy storage class ("HalfStorage"), or NULL. */
const ck_dtype_t *ck_dtype_by_storage(const char *storage_class);

/* 1 when elements of dt can be read and written as numbers (the codec). */
int ck_dtype_has_codec(const ck_dtype_t *dt);

/*
 * Element codecs, for dtypes with a codec only.  get: the element at p as
 * a double (int64 beyond 2^53 rounds).  put: v rounded to dt; for integer
 * dtypes NaN and out-of-range values give INT64_MIN truncated to the width
 * (as x86 and torch do), bool is v != 0.
 */
double ck_dtype_get(const ck_dtype_t *dt, const uint8_t *p);
void ck_dtype_put(const ck_dtype_t *dt, uint8_t *p, double v);

/* float16 and bfloat16 bit patterns from and to double, round to nearest
 * even. */
double ck_half_to_double(uint16_t h);
uint16_t ck_double_to_half(double v);
double ck_bf16_to_double(uint16_t h);
uint16_t ck_double_to_bf16(double v);

/*
 * Convert n elements of dtype from at src into dtype to at dst (both among
 * float16, bfloat16, float32 and float64; src and dst may not overlap),
 * byte for byte as torch's t.to(dtype) on the CPU: round to nearest even,
 * infinities and signed zeros kept, overflow to infinity, subnormals
 * exact.  float64 goes to 16 bits through float32 (torch rounds twice).
 * NaN as torch's vector loops make it: to float32/float64 quieted with its
 * payload; to float16 sign | 0x7e00; to bfloat16 0xffff from float32 or
 * float64 and 0x7fc0 from float16 (torch's scalar loop, which it uses for
 * the last n % 16 elements of a float64 tensor, gives 0x7fc0 too: still
 * a NaN).  Returns 0, or CK_EUNSUPPORTED for another pair of dtypes.
 */
int ck_dtype_convert(const ck_dtype_t *to, void *dst, const ck_dtype_t *from,
                     const void *src, size_t n);

/* 1 when ck_dtype_convert converts from and to dt. */
int ck_dtype_is_castable(const ck_dtype_t *dt);

#endif
