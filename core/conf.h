/*
 * conf.h -- the INI configuration: [pipeline], [security] and one section
 * per plugin ([NAME] or [NAME:LABEL]), read with inih.
 *
 * Directives are data (ck_directive_t tables, see plugin.h): a name, a
 * setter, the offset of the field it sets and a default.  A field is
 * "unset" until the file or its default sets it; each section instance
 * keeps a flag per directive for that, so defaults never overwrite what the
 * file said.  Setters parse a value once, at load, into the conf; what they
 * own outside the configuration's arena is released by the cleanups they
 * register.  Errors carry FILE:LINE.
 */
#ifndef CK_CONF_H
#define CK_CONF_H

#include "ckpt.h"
#include "plugin.h"

extern const ck_plugin_t *const ck_plugins[]; /* NULL-ended */
const ck_plugin_t *ck_plugin_find(const char *name, size_t len);

typedef struct {
    const ck_plugin_t *plugin;
    const char *label; /* NULL when the section has none */
    void *conf;
} ck_stage_t;

typedef struct {
    ck_strlist_t chain;
} ck_pipeline_conf_t;

typedef struct {
    ck_strlist_t allow_globals;
    int allow_numpy;
    uint64_t max_pickle_bytes, max_depth, max_memo, max_string_bytes;
} ck_security_conf_t;

/* [watch]: the daemon.  Paths are as written (relative to the daemon's
 * working folder); NULL when not given. */
/* The most jobs the daemon runs at once: [watch] workers is 1 to this. */
#define CK_WATCH_MAX_WORKERS 64

typedef enum { CK_AFTER_KEEP, CK_AFTER_MOVE, CK_AFTER_DELETE } ck_after_t;
typedef enum { CK_EXISTS_REPLACE, CK_EXISTS_KEEP, CK_EXISTS_FAIL } ck_exists_t;
typedef enum { CK_READY_SETTLE, CK_READY_MARKER } ck_ready_t;

typedef struct {
    char *incoming, *output, *failed, *done, *audit_log;
    char *output_name;
    const char *out_ext;       /* the output format's extension, or NULL */
    int after;                 /* ck_after_t */
    ck_strlist_t include, exclude;
    int recursive, allow_world_writable;
    uint64_t settle_ms, incomplete_s, workers, rescan_s;
    uint64_t stop_timeout_s, claim_stale_s;
    int on_output_exists;      /* ck_exists_t */
    int ready;                 /* ck_ready_t */
    char *marker;              /* ready = marker: {name}.done, or a file
                                  name of the folder (_SUCCESS) */
    char *metrics_file;        /* Prometheus text file, or NULL */
    uint64_t metrics_s;
} ck_watch_conf_t;

/* [output]: what ckprep writes (core/safetensors.c has the directives). */
enum { CK_OUT_TORCH, CK_OUT_SAFETENSORS };
enum { CK_TIED_REFUSE, CK_TIED_DEDUPE };

typedef struct {
    int format;   /* CK_OUT_* */
    char *state;  /* "a|b|c": the first that exists; "/" is the top */
    int tied;     /* CK_TIED_*: one tensor under two names */
    char *config; /* safetensors: a path whose OmegaConf config goes in
                     __metadata__ (see README); NULL: none */
} ck_output_conf_t;

typedef struct ck_section ck_section_t;

/* A file a plugin reads at run time (ck_conf_reads_file), in a list. */
typedef struct ck_conf_file {
    struct ck_conf_file *next;
    const char *path;
} ck_conf_file_t;

typedef struct {
    ck_arena_t arena;
    char *path;
    char digest[65];      /* SHA-256 of the file as loaded, "" if unknown */
    ck_pipeline_conf_t pipeline;
    ck_security_conf_t security;
    ck_watch_conf_t watch;
    ck_output_conf_t output;
    int watch_line;       /* of the [watch] header, 0 when absent */
    const char **allow;   /* security.allow_globals, NULL-ended */
    ck_stage_t *chain;
    size_t nchain;
    ck_section_t *sections;
    int chain_line;
    void *cleanups;       /* registered by setters, run by ck_conf_release */
    ck_conf_file_t *reads; /* files plugins open while a job runs */
} ck_conf_t;

/* Load path.  Errors: CK_ECONFIG with "PATH:LINE: message". */
int ck_conf_load(ck_conf_t *c, const char *path, ck_err_t *err);

/*
 * The same, path "-" read from stdin (named "<stdin>" in messages), and
 * then sets[0..nsets), "SECTION.DIRECTIVE=VALUE" each, read as lines added
 * at the file's end (errors: "--set 'SPEC': message").  The digest covers
 * them.
 */
int ck_conf_load_ex(ck_conf_t *c, const char *path, const char *const *sets,
                    size_t nsets, ck_err_t *err);
void ck_conf_release(ck_conf_t *c);
void ck_conf_limits(const ck_conf_t *c, ck_limits_t *lim);
/* How a checkpoint opens under c's [security]: its limits, allow_globals
 * and allow_numpy (c NULL: the defaults). */
void ck_conf_open_opts(const ck_conf_t *c, ck_open_opts_t *o);

/* Directive tables of the core sections, for --help. */
extern const ck_directive_t ck_pipeline_directives[];
extern const ck_directive_t ck_security_directives[];
extern const ck_directive_t ck_watch_directives[];
extern const ck_directive_t ck_output_directives[];

#endif
