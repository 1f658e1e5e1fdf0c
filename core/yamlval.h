/*
 * yamlval.h -- a YAML document as a tree of values (ck_yval_t), read with
 * libyaml, its plain scalars typed as YAML 1.1 (PyYAML and OmegaConf's
 * loader) or as Hydra's override grammar types them, and written back with
 * key order and styles kept (comments are not).
 *
 * Typing, YAML 1.1: null/Null/NULL/~ and the empty scalar are None;
 * yes/no/on/off/true/false (three spellings each) bools; 0b, 0o-style 0NN,
 * 0x and 1:30 sexagesimal ints, ints beyond int64 stay ints; 1.5, .5,
 * .inf, .nan and, with OmegaConf's float resolver, 1e5 and 1e-5 floats;
 * everything else str.  Hydra (hydra/grammar/OverrideLexer.g4):
 * null, true, false in any case; [+-]?(0|[1-9](_?[0-9])*) ints (007 and
 * 0x10 are strs); 1.5, 1., .5, 1e5, inf, nan (any case) floats, .inf a str;
 * '~' refused; the rest str.  An int of more than 4300 digits is refused.
 *
 * Nodes live in the caller's arena.  Typing of a lazily read tree is cached
 * in the node on first use: a tree is not shared between threads.
 */
#ifndef CK_YAMLVAL_H
#define CK_YAMLVAL_H

#include "ck.h"
#include "json.h"
#include "pickle.h"
#include "pyval.h"

enum { CK_YV_SCALAR, CK_YV_SEQ, CK_YV_MAP };

typedef struct ck_yval ck_yval_t;
struct ck_yval {
    int kind;
    char *text;       /* scalar, NUL-terminated */
    size_t len;
    int plain;        /* scalar written without quotes */
    int style;        /* yaml_scalar_style_t as read, 0 when new */
    int flow;         /* collection in flow style */
    int hydra;        /* typed by Hydra's grammar, not YAML's */
    int untyped;      /* ty not set yet (see ck_yval_type) */
    ck_pyval_t ty;    /* scalar: its type */
    ck_yval_t **v;    /* seq items; map k0 v0 k1 v1 (keys are scalars) */
    size_t n, cap;
};

/* How to read a document. */
typedef struct {
    ck_arena_t *a;
    ck_err_t *err;
    const char *what; /* names the input in messages */
    int hydra;        /* type scalars by Hydra's grammar */
    int lazy;         /* type scalars when first used, not now: a config in
                         a checkpoint may hold millions */
} ck_yaml_ctx_t;

/*
 * Parse one YAML document text[0..len); an empty one is the empty plain
 * scalar (the empty string for Hydra, null for YAML).  Returns the root, or
 * NULL with y->err set: CK_EPLUGIN for bad YAML, more than one document,
 * nesting past 64, a key that is no scalar, a refused scalar;
 * CK_EUNSUPPORTED for aliases; CK_ENOMEM.
 */
ck_yval_t *ck_yaml_parse(ck_yaml_ctx_t *y, const char *text, size_t len);

/* A new scalar s[0..n) (copied), typed as a str; NULL on CK_ENOMEM. */
/* A deep copy of v in a (typing and style kept); NULL when out of
 * memory.  Jobs copy a value parsed at load before linking it into their
 * own tree. */
ck_yval_t *ck_yval_copy(ck_arena_t *a, const ck_yval_t *v);

ck_yval_t *ck_yval_scalar(ck_arena_t *a, const char *s, size_t n, int plain);
/* Append x to a sequence or a mapping: 0 or CK_ENOMEM. */
int ck_yval_push(ck_arena_t *a, ck_yval_t *c, ck_yval_t *x);
/* The pair index of key k in mapping m, or -1. */
int ck_yval_find(const ck_yval_t *m, const char *k);

/*
 * The type of a scalar, typed now if it was read lazily; what the YAML
 * loader would refuse (an int of more than 4300 digits) is a str then.
 * Allocates in a.
 */
const ck_pyval_t *ck_yval_type(ck_arena_t *a, const ck_yval_t *v);

/*
 * v as a new Python value in a: scalars typed, sequences lists, mappings
 * dicts whose keys are strs, or typed like values when typed_keys is set
 * (for ==).  NULL on CK_ENOMEM.
 */
ck_py_t *ck_yval_py(ck_arena_t *a, const ck_yval_t *v, int typed_keys);

/* v as JSON: typed scalars, arrays, objects keyed by the keys' text;
 * NULL is null. */
void ck_yval_json(ck_json_t *j, ck_arena_t *a, const ck_yval_t *v);

/*
 * A scalar holding t (its bytes copied), which ck_yaml_emit writes as
 * PyYAML's dumper writes the value (OmegaConf.to_yaml): None null, bools
 * true/false, ints in decimal, floats as repr() lowered with '.0' put
 * before a bare 'e' (1.0e-05), .inf, -.inf, .nan; a str plain unless YAML
 * would read it as another type or OmegaConf's dumper quotes it (y, n, the
 * YAML 1.2 bool words, what Python's int() or float() accepts).  NULL on
 * CK_ENOMEM.
 */
ck_yval_t *ck_yval_of(ck_arena_t *a, const ck_pyval_t *t);

/* Every scalar of v (typed as read) made as ck_yval_of makes it, in
 * place: a parsed YAML config written as OmegaConf.to_yaml writes it once
 * loaded.  0 or CK_ENOMEM. */
int ck_yval_retype(ck_arena_t *a, ck_yval_t *v);

/* 1 when OmegaConf's YAML loader reads the plain scalar s as a str. */
int ck_yaml_reads_str(const char *s);

/*
 * Write root as one YAML document appended to out, with the styles it was
 * read with.  A Hydra-typed scalar is written so that OmegaConf's YAML
 * loader reads back what Hydra typed: a str YAML would read as another type
 * is quoted ('yes', '0x10', ''), a null, bool or int in its plain
 * spelling, a float YAML would not read as one (inf, +.5) as repr() with
 * .inf and .nan.  0, or CK_EPLUGIN with "WHAT: emitting YAML: ..." in err.
 */
int ck_yaml_emit(const ck_yval_t *root, const char *what, ck_buf_t *out,
                 ck_err_t *err);

/* As ck_yaml_emit, with long scalars folded at 80 columns as PyYAML's
 * dumper folds them (OmegaConf.to_yaml). */
int ck_yaml_emit_pyyaml(const ck_yval_t *root, const char *what,
                        ck_buf_t *out, ck_err_t *err);

#endif
