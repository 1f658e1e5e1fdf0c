/*
 * plugin.h -- everything a plugin sees of ckprep, and the only project
 * header a plugin includes.
 *
 * A plugin is a const ck_plugin_t, listed once in plugins/plugins.def.  It
 * has three parts, as an nginx module has:
 *
 *  - directives: data.  Each names a setter, the offset of the field it
 *    sets in the plugin's conf struct and a default.  Setters run once per
 *    line, at load, with a ck_conf_ctx_t (the configuration's arena, the
 *    file and line, the error); a directive with structure of its own
 *    ('rename = FROM => TO', 'add = KEY DTYPE SHAPE INIT') has its own
 *    setter that parses the line there, once, into the conf.  What a conf
 *    owns outside the arena (a compiled regex) is released by a cleanup the
 *    setter registers with ck_conf_cleanup_add.
 *  - init_conf: runs after defaults, for checks across directives only.
 *  - run: changes the job's checkpoint model through the ck_job_* calls
 *    below and reports each change with ck_job_report.  It never touches
 *    files, the event loop or the audit log, and keeps no mutable statics:
 *    jobs run in parallel threads over one shared, read-only conf.
 *
 * `ckprep check`, `run` and `watch` load a configuration the same way, so a
 * configuration error is found by all three, at its FILE:LINE.
 */
#ifndef CK_PLUGIN_H
#define CK_PLUGIN_H

#include "ck.h"
#include "dtype.h"
#include "omegaconf.h"
#include "pickle.h"
#include "pyre.h"
#include "pyval.h"
#include "yamlval.h"

#include <stddef.h>
#include <stdint.h>

/* ---- configuration ---------------------------------------------------- */

typedef struct ck_directive ck_directive_t;
typedef struct ck_conf_ctx ck_conf_ctx_t;

/*
 * What a setter or init_conf is given.  Everything allocated from arena
 * lives as long as the configuration.  A setter reports an error with
 * ck_err_set(cx->err, CK_ECONFIG, ...) and no position: the loader puts
 * "FILE:LINE: " in front.
 */
struct ck_conf_ctx {
    ck_arena_t *arena;
    ck_err_t *err;
    const char *file;
    int line;            /* of the value, or of the section for defaults
                            and init_conf (which may set it to a
                            directive's, for its error) */
    const char *section; /* as written: "key_remap:second" */
    void *loader;        /* the configuration being loaded: core's own
                            (ck_conf_cleanup_add, ck_conf_reads_file,
                            ck_manifest_load) */
    /* init_conf only: the chain stage after this section's last one, as
     * written ("key_remap:x"), or NULL when it runs last */
    const char *next;
    /* a setter: the --set being read ("expect.manifest=x"), NULL for a
     * line of the file; init_conf may set it back, with line, so that its
     * error names where a directive came from */
    const char *set;
};

typedef int (*ck_conf_set_fn)(ck_conf_ctx_t *cx, const ck_directive_t *d,
                              void *conf, const char *value);

#define CK_DIR_MULTI 1u /* may be repeated; each value is appended */

struct ck_directive {
    const char *name;
    ck_conf_set_fn set;
    size_t offset;    /* of the field in the section's conf struct */
    const char *def;  /* default value text, NULL for none */
    unsigned flags;
    const char *help; /* one line for --help-plugins */
    const void *data; /* the setter's: a ck_conf_enum_t table, a range */
};

/* Register fn(data) to run when the configuration is released (in the
 * reverse order of registration).  0 or CK_ENOMEM. */
int ck_conf_cleanup_add(ck_conf_ctx_t *cx, void (*fn)(void *), void *data);

/*
 * Declares a file the plugin will open while a job runs (not at load), so
 * that the sandbox of `run`, `inspect` and the daemon leaves it readable;
 * any other file is out of reach once parsing starts.  Returns 0 or
 * CK_ENOMEM with cx->err set.  path must live as long as the conf.
 */
int ck_conf_reads_file(ck_conf_ctx_t *cx, const char *path);

typedef struct {
    char **v; /* NULL-ended */
    size_t n;
} ck_strlist_t;

/*
 * What a directive's own setter parses a line into is kept in a list of
 * items (rule_t *, add_t * ...), the directive's field; items and the
 * array come from cx->arena.  ck_conf_list_add appends one: 0 or
 * CK_ENOMEM.
 */
typedef struct {
    void **v;
    size_t n;
} ck_conf_list_t;

int ck_conf_list_add(ck_conf_ctx_t *cx, ck_conf_list_t *l, void *item);

/* ck_conf_set_enum's table (.data), ending with a NULL name. */
typedef struct {
    const char *name;
    int value;
} ck_conf_enum_t;

/* ck_conf_set_u64's optional range (.data), both ends included. */
typedef struct {
    uint64_t min, max;
} ck_conf_range_t;

/*
 * A place in the checkpoint, as every directive that names one writes it
 * (state, config, root ...):
 *
 *   best_state/model                 levels separated by '/' (keys may hold
 *                                    dots)
 *   best_state/model|fsdp_best_state/model
 *                                    alternatives: the first that exists
 *   ema/state/model?                 optional: skipped when absent
 *   /                                the top of the checkpoint itself
 *
 * A directive takes one or more, separated by blanks (ck_conf_set_paths,
 * or ck_conf_set_path for exactly one).  A required place that is absent
 * fails the job naming it.
 */
typedef struct {
    const char *text;  /* as written, without the '?' */
    char **alt;        /* the alternatives, in order */
    size_t nalt;
    int optional;
} ck_path_t;

/*
 * Generic setters; the field types they expect are in parentheses.
 *  bool   yes/no, true/false, on/off, 1/0                     (int)
 *  u64    a whole number, within .data's range when given     (uint64_t)
 *  size   a number with an optional K, M, G, T (or KiB ...)   (uint64_t)
 *  str    the text                                            (char *)
 *  enum   one of .data's names; the field gets its value      (int)
 *  words  words separated by blanks or commas, appended       (ck_strlist_t)
 *  lines  the whole value as one item, appended               (ck_strlist_t)
 *  paths  one or more places (ck_path_t above), appended     (ck_conf_list_t
 *                                                              of ck_path_t *)
 *  path   exactly one place; an empty value is none           (ck_path_t *)
 */
int ck_conf_set_bool(ck_conf_ctx_t *, const ck_directive_t *, void *, const char *);
int ck_conf_set_u64(ck_conf_ctx_t *, const ck_directive_t *, void *, const char *);
int ck_conf_set_size(ck_conf_ctx_t *, const ck_directive_t *, void *, const char *);
int ck_conf_set_str(ck_conf_ctx_t *, const ck_directive_t *, void *, const char *);
int ck_conf_set_enum(ck_conf_ctx_t *, const ck_directive_t *, void *, const char *);
int ck_conf_set_words(ck_conf_ctx_t *, const ck_directive_t *, void *, const char *);
int ck_conf_set_lines(ck_conf_ctx_t *, const ck_directive_t *, void *, const char *);
int ck_conf_set_paths(ck_conf_ctx_t *, const ck_directive_t *, void *, const char *);
int ck_conf_set_path(ck_conf_ctx_t *, const ck_directive_t *, void *, const char *);

/* ---- the plugin ------------------------------------------------------- */

typedef struct ck_job ck_job_t;

typedef struct {
    const char *name;
    const char *summary;
    size_t conf_size;
    const ck_directive_t *directives; /* ends with a NULL name */
    /* optional: after defaults; cross-directive checks */
    int (*init_conf)(ck_conf_ctx_t *cx, void *conf);
    int (*run)(ck_job_t *job, void *conf);
} ck_plugin_t;

/* ---- the job: the checkpoint model ------------------------------------ */

/*
 * A tensor found in the model: a view (dtype, offset, sizes, strides in
 * elements) of a storage.  Owned by the job; valid until the graph changes
 * and is scanned again.
 */
typedef struct ck_storage ck_storage_t;

typedef struct {
    ck_py_t *node;            /* the _rebuild_tensor* call */
    ck_storage_t *st;
    const ck_dtype_t *dtype;
    uint64_t offset;          /* in elements */
    int64_t *size, *stride;   /* ndim each */
    uint64_t numel;
    uint32_t ndim;            /* (a pickle's tuple has fewer than 2^32) */
    int requires_grad;
} ck_tensor_t;                /* (64 bytes: one per tensor) */

/* The job's arena: everything a plugin allocates for a job comes from it
 * and is freed when the job ends. */
ck_arena_t *ck_job_arena(ck_job_t *job);

/* The top of the object graph (what torch.load returns), and a new top:
 * what is no longer reachable from it is not written. */
ck_py_t *ck_job_root(ck_job_t *job);
void ck_job_set_root(ck_job_t *job, ck_py_t *root);

/* 1 when the job writes nothing (--dry-run). */
int ck_job_dry_run(const ck_job_t *job);

/* The value at a '/'-separated path of mapping keys ("best_state/model"),
 * or NULL; "/" is the top.  Keys may contain dots. */
ck_py_t *ck_job_get(ck_job_t *job, const char *path);

/*
 * The mapping at path whose items a plugin edits: a dict, an OrderedDict
 * or a defaultdict; *items are its pairs (k0 v0 k1 v1 ...), node (may be
 * NULL) the mapping itself.  Fails the job naming the path when it is
 * missing or not a mapping.
 */
int ck_job_mapping(ck_job_t *job, const char *path, ck_py_t **node,
                   ck_py_vec_t **items);

/*
 * The mapping at place p: the first of its alternatives that exists.
 * Returns 1 with *node (may be NULL), *items and *which (the alternative
 * found) set; 0 when p is optional and none exists; or fails the job
 * naming p (with a hint when a '.' was written where levels are separated
 * by '/') and returns the error.
 */
int ck_job_place(ck_job_t *job, const ck_path_t *p, const char **which,
                 ck_py_t **node, ck_py_vec_t **items);

/*
 * The value at place p whatever it is (a str, a DictConfig ...), as the
 * slot that holds it in its parent mapping, so a plugin can replace it:
 * the first alternative that exists.  Returns 1 with *slot and *which
 * set, 0 when p is optional and absent, or fails the job naming p.
 */
int ck_job_slot(ck_job_t *job, const ck_path_t *p, const char **which,
                ck_py_t ***slot);

/* The _metadata mapping nn.Module.state_dict() attaches to a state dict,
 * its items to change, or NULL (none; or out of memory, and the job has
 * failed). */
ck_py_vec_t *ck_job_metadata(ck_job_t *job, ck_py_t *state_dict);

/* Bytes of the distinct storages reachable from node. */
uint64_t ck_job_bytes_under(ck_job_t *job, ck_py_t *node);

/* The tensor node builds (a rebuild call or a Parameter wrapping one),
 * or NULL.  A tensor added earlier in the job is found too. */
const ck_tensor_t *ck_job_tensor(ck_job_t *job, ck_py_t *node);

/* Copy a tensor's elements, in row-major order, into out (numel *
 * itemsize bytes). */
int ck_job_read_tensor(ck_job_t *job, const ck_tensor_t *t, uint8_t *out);

/*
 * A new contiguous tensor of dtype dt (one dtype.h gives: ck_dtype_lookup,
 * ck_dtype_by_name) and the given shape whose storage holds data (numel *
 * itemsize bytes from the job arena, kept until the checkpoint is
 * written), built as torch.save builds one.  NULL when the job failed.
 */
ck_py_t *ck_job_new_tensor(ck_job_t *job, const ck_dtype_t *dt,
                           const int64_t *shape, size_t ndim,
                           const uint8_t *data);

/*
 * Cast the tensors nodes[0..n) build (rebuild calls or Parameters, as
 * ck_job_tensor takes) to dt, as t.to(dt) would: float16, bfloat16,
 * float32 or float64 from one of those.  Nothing is read now: a storage is
 * marked for conversion and converted once, chunk by chunk, while the
 * output is written; views keep shape, stride and offset in elements.  A
 * storage also used by a tensor not cast is split in two (the cast ones
 * get a new storage, as t.to(dt) gives), and split[i] (may be NULL) is
 * set for those.  Tensors of dt already, and repeats, are left alone.
 * 0, or the job fails.
 */
int ck_job_cast(ck_job_t *job, ck_py_t *const *nodes, size_t n,
                const ck_dtype_t *dt, unsigned char *split);

/* The global module.name, reusing the graph's node when it has one; NULL
 * when out of memory. */
ck_py_t *ck_job_global(ck_job_t *job, const char *module, const char *name);

/*
 * Fail the job: records "PLUGIN[:LABEL]: message" (the running plugin's
 * name, put there by the core) and returns code -- unless the job failed
 * already (a helper that returned NULL: out of memory scanning), whose
 * first error stands and whose code is returned.  ck_job_nomem is the
 * out-of-memory case.
 */
int ck_job_fail(ck_job_t *job, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int ck_job_nomem(ck_job_t *job);

/*
 * A warning: the job goes on.  Kept in the record (the stage's "warnings",
 * "PLUGIN[:LABEL]: message"), shown by `ckprep run` on stderr and logged by
 * the daemon.  For what is legal but likely a mistake (a rename rule that
 * matches nothing).
 */
void ck_job_warn(ck_job_t *job, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The job's error code so far (0 when none): for a call that returned NULL. */
int ck_job_error(const ck_job_t *job);

/*
 * Is the job being abandoned (the daemon stopping past stop_timeout_s)?
 * Then it records why and returns CK_ECANCELED, for the plugin to return;
 * else 0.  Cheap (one atomic load): a loop over millions of values asks
 * every few thousand, so that no stage holds a stopping daemon.
 */
int ck_job_canceled(ck_job_t *job);


/* ---- manifests -------------------------------------------------------- */

/* One tensor a manifest expects; dtype is a torch name ("float32"). */
typedef struct {
    char *key;
    char *dtype;
    int64_t *shape;
    size_t ndim;
} ck_mf_tensor_t;

/* What a state dict must hold (README: "Manifests").  Read-only once
 * loaded: jobs share it. */
typedef struct {
    char *source;          /* the file it was read from */
    char *state;           /* the state dict it describes */
    ck_mf_tensor_t *t;     /* in the reference's order */
    size_t n;
    ck_strmap_t by_key;    /* key -> index in t */
    char **config_keys;    /* dotted config keys, may be empty */
    size_t nconfig;
} ck_manifest_t;

/*
 * Read a manifest at load, in init_conf: path (relative to the folder of
 * cx->file) is a JSON manifest or a checkpoint whose state dict at state
 * ('|' alternatives) is the reference, opened as a job's input would be
 * under the configuration's [security] (allow_globals, allow_numpy,
 * limits; init_conf runs once the whole file is read).  0, or CK_ECONFIG
 * with the cause in cx->err.
 */
int ck_manifest_load(ck_conf_ctx_t *cx, const char *path, const char *state,
                     ck_manifest_t **out);

/* ---- reporting changes ------------------------------------------------ */

/*
 * A change is an op and named fields, typed: the record's "changes" array
 * gets {"op": OP, NAME: VALUE, ...} in the order given.
 *
 *   ck_job_report(job, "renamed", CK_F_STR("state", state),
 *                 CK_F_KEY("key", k), CK_F_STR("to", name));
 */
typedef enum {
    CK_FT_STR,   /* s (NULL: null) */
    CK_FT_STRN,  /* s, n bytes */
    CK_FT_U64,
    CK_FT_I64,
    CK_FT_BOOL,
    CK_FT_KEY,   /* a Python key as JSON: str, int, float, bool, None as
                    themselves, anything else "<TYPE>" */
    CK_FT_KEYS,  /* an array of n keys (ck_py_t *const *) */
    CK_FT_I64S,  /* an array of n int64_t */
    CK_FT_VALUE, /* a value written by fn(json, arg): core's formatters */
} ck_field_type_t;

typedef struct ck_json ck_json_t;

typedef struct {
    const char *name;
    ck_field_type_t type;
    const char *s;
    uint64_t u;
    int64_t i;
    size_t n;
    const void *p;
    void (*fn)(ck_json_t *j, const void *arg);
} ck_field_t;

#define CK_F_STR(k, v) ((ck_field_t){ .name = (k), .type = CK_FT_STR, .s = (v) })
#define CK_F_STRN(k, v, len) \
    ((ck_field_t){ .name = (k), .type = CK_FT_STRN, .s = (v), .n = (len) })
#define CK_F_U64(k, v) ((ck_field_t){ .name = (k), .type = CK_FT_U64, .u = (v) })
#define CK_F_I64(k, v) ((ck_field_t){ .name = (k), .type = CK_FT_I64, .i = (v) })
#define CK_F_BOOL(k, v) ((ck_field_t){ .name = (k), .type = CK_FT_BOOL, .i = (v) })
#define CK_F_KEY(k, v) ((ck_field_t){ .name = (k), .type = CK_FT_KEY, .p = (v) })
#define CK_F_KEYS(k, v, len) \
    ((ck_field_t){ .name = (k), .type = CK_FT_KEYS, .p = (v), .n = (len) })
#define CK_F_I64S(k, v, len) \
    ((ck_field_t){ .name = (k), .type = CK_FT_I64S, .p = (v), .n = (len) })
#define CK_F_VALUE(k, f, arg) \
    ((ck_field_t){ .name = (k), .type = CK_FT_VALUE, .fn = (f), .p = (arg) })

void ck_job_report_fields(ck_job_t *job, const char *op, const ck_field_t *f,
                          size_t n);

#define ck_job_report(job, op, ...)                                          \
    ck_job_report_fields((job), (op), (const ck_field_t[]){ __VA_ARGS__ },   \
                         sizeof((const ck_field_t[]){ __VA_ARGS__ }) /       \
                             sizeof(ck_field_t))

/* The Python type name of a key ("int", "tuple", ...), for reports. */
const char *ck_py_type_name(const ck_py_t *p);

#endif
