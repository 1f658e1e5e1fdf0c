/*
 * pyval.h -- Python value knowledge that needs no interpreter: ints of any
 * size (decimal text <-> the two's complement bytes pickle's LONG1 holds),
 * float repr() and ==, int() and float() of a str, and a scalar as JSON.
 *
 * A ck_pyval_t is one Python scalar (None, bool, int, float, str) with its
 * bytes borrowed from an arena or a ck_py_t; a zeroed one is the empty str.
 */
#ifndef CK_PYVAL_H
#define CK_PYVAL_H

#include "ck.h"
#include "json.h"
#include "pickle.h"

/* Python's int() of a str refuses more (sys.int_info.default_max_str_digits) */
#define CK_PYINT_MAX_DIGITS 4300

/* CK_PV_STR first: a zeroed ck_pyval_t is a string. */
enum { CK_PV_STR, CK_PV_NULL, CK_PV_BOOL, CK_PV_INT, CK_PV_FLOAT };

typedef struct {
    int t;
    int b;              /* CK_PV_BOOL */
    int64_t i;          /* CK_PV_INT within int64 */
    const uint8_t *big; /* CK_PV_INT beyond: two's complement LE, minimal, */
    size_t nbig;        /* as pickle's LONG1 holds it */
    const char *dec;    /* CK_PV_INT: canonical decimal (no '+', '_', 0s);
                           may be NULL for one read from a pickle */
    double f;           /* CK_PV_FLOAT */
    const char *s;      /* CK_PV_STR */
    size_t n;
} ck_pyval_t;

/* LE two's complement b[0..n) cut to its minimal length (at least 1). */
size_t ck_pyint_trim(const uint8_t *b, size_t n);

/*
 * A big int (two's complement LE b[0..n), as pickled) in decimal, in the
 * arena; NULL when n is 0 or over 2 KiB, or on CK_ENOMEM.
 */
char *ck_pyint_dec(ck_arena_t *a, const uint8_t *b, size_t n);

/*
 * The magnitude of digits d[0..nd) in base 2 to 36, little-endian, at
 * least one byte and no high zero bytes, in the arena: 0, CK_EFORMAT for a
 * character that is no digit of base, CK_ENOMEM.  The caller caps nd.
 */
int ck_pyint_mag(ck_arena_t *a, const char *d, size_t nd, int base,
                 uint8_t **mag, size_t *len);

/*
 * Digits d (no sign, no '_', NUL-terminated) in base 2, 8, 10 or 16 as a
 * CK_PV_INT in *t: an int64 when it fits, else a big int; dec always set.
 * Returns 0; 1 when there is no digit or more than CK_PYINT_MAX_DIGITS
 * (Python raises ValueError); CK_ENOMEM.  Everything lives in the arena.
 */
int ck_pyint_digits(ck_arena_t *a, int neg, const char *d, int base,
                    ck_pyval_t *t);

/* Python's int(s) of a str s[0..n): 0, 1 when Python raises ValueError,
 * CK_ENOMEM. */
int ck_pyval_int_str(ck_arena_t *a, const char *s, size_t n, ck_pyval_t *t);

/* Python's float(s) of a str s[0..n): 0 with *f set, or 1 when Python
 * raises ValueError (or the arena is exhausted). */
int ck_pyval_float_str(ck_arena_t *a, const char *s, size_t n, double *f);

/* Python's repr() of a float (1e+16, 0.1, 1e-05, inf, nan, -0.0) into out;
 * cap should be at least 32. */
void ck_pyfloat_repr(double d, char *out, size_t cap);

/*
 * Python's a == b for scalars: a bool is an int, int and float compare
 * exactly (2**53 + 1 != 2.0**53), nan equals nothing, a str no number.
 * The arena takes the decimal of a big int compared with a float.
 */
int ck_pyval_eq(ck_arena_t *ar, const ck_pyval_t *a, const ck_pyval_t *b);

/* A Python scalar p as a ck_pyval_t (borrowing p's bytes): 1, or 0 when p
 * is no scalar. */
int ck_pyval_of(const ck_py_t *p, ck_pyval_t *t);

/* A new Python value (in the arena) for t; NULL on CK_ENOMEM. */
ck_py_t *ck_pyval_py(ck_arena_t *a, const ck_pyval_t *t);

/* The scalar as Python's repr() shows it ('str' cut at 100 bytes). */
void ck_pyval_show(ck_buf_t *b, const ck_pyval_t *t);

/* The items of a dict, an OrderedDict or a defaultdict; else NULL. */
ck_py_vec_t *ck_pyval_dict(ck_py_t *p);

/* Maps a wrapper (an OmegaConf node) to the value it holds; may be NULL. */
typedef ck_py_t *(*ck_pyval_unwrap_cb)(ck_py_t *p);

/*
 * Python's a == b for two values (scalars, lists, dicts; dict items in any
 * order; [1] != (1,)), each unwrapped first by unwrap when it is not NULL.
 * Nesting past 64 compares unequal.
 */
int ck_pyval_eq_py(ck_arena_t *ar, ck_py_t *a, ck_py_t *b,
                   ck_pyval_unwrap_cb unwrap);

/*
 * Python's repr() of p (unwrapped as above), appended to b; past about 240
 * bytes or 8 levels it shows '...', and what is no value '<object>'.
 */
void ck_pyval_show_py(ck_buf_t *b, ck_arena_t *ar, ck_py_t *p,
                      ck_pyval_unwrap_cb unwrap);

/*
 * A Python scalar as a JSON value: None null, bools, ints (past int64 as
 * a string of their digits, which every JSON reader takes; "<big int>"
 * past 2 KiB), floats, str.  Returns 0,
 * or 1 with nothing written when v is NULL or no scalar (the caller says
 * what it is).
 */
int ck_pyval_json(ck_json_t *j, const ck_py_t *v);

#endif
