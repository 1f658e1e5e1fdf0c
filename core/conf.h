/*
 * conf.h -- the INI configuration: [pipeline], [security] and one section
 * per plugin ([NAME] or [NAME:LABEL]), read with inih.
 *
 * Directives are data (ck_directive_t tables): a name, a generic setter, the
 * offset of the field it sets and a default.  A field is "unset" until the
 * file or its default sets it; each section instance keeps a bit per
 * directive for that, so defaults never overwrite what the file said.
 * Errors carry FILE:LINE.
 */
#ifndef CK_CONF_H
#define CK_CONF_H

#include "ck.h"
#include "pickle.h"

typedef struct ck_directive ck_directive_t;
typedef int (*ck_conf_set_fn)(const ck_directive_t *d, void *conf,
                              const char *value, ck_err_t *err);

#define CK_DIR_MULTI 1u /* may be repeated; each value is appended */

struct ck_directive {
    const char *name;
    ck_conf_set_fn set;
    size_t offset;    /* of the field in the section's conf struct */
    const char *def;  /* default value text, NULL for none */
    unsigned flags;
    const char *help; /* one line for --help-plugins */
    /* optional: checks one value as it is read, so errors get its line */
    int (*check)(const char *value, ck_err_t *err);
};

typedef struct {
    char **v;
    size_t n;
} ck_strlist_t;

/* Generic setters; the field types they expect are in parentheses. */
int ck_conf_set_bool(const ck_directive_t *, void *, const char *, ck_err_t *);  /* int */
int ck_conf_set_u64(const ck_directive_t *, void *, const char *, ck_err_t *);   /* uint64_t */
int ck_conf_set_size(const ck_directive_t *, void *, const char *, ck_err_t *);  /* uint64_t, K/M/G */
int ck_conf_set_str(const ck_directive_t *, void *, const char *, ck_err_t *);   /* char * */
int ck_conf_set_words(const ck_directive_t *, void *, const char *, ck_err_t *); /* ck_strlist_t */
int ck_conf_set_lines(const ck_directive_t *, void *, const char *, ck_err_t *); /* ck_strlist_t */

typedef struct ck_job ck_job_t;

/*
 * A plugin: compiled in, listed once in plugins/plugins.def.  run() changes
 * the job's checkpoint model and writes its changes to job->changes; it
 * never touches files, the event loop or the audit log.
 */
typedef struct {
    const char *name;
    const char *summary;
    size_t conf_size;
    const ck_directive_t *directives; /* ends with a NULL name */
    int (*init_conf)(void *conf, ck_err_t *err); /* after defaults */
    int (*run)(ck_job_t *job, void *conf);
} ck_plugin_t;

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
    uint64_t max_pickle_bytes, max_depth, max_memo, max_string_bytes;
} ck_security_conf_t;

/* [watch]: the daemon.  Paths are as written (relative to the daemon's
 * working folder); NULL when not given. */
/* The most jobs the daemon runs at once: [watch] workers is 1 to this. */
#define CK_WATCH_MAX_WORKERS 64

typedef enum { CK_AFTER_KEEP, CK_AFTER_MOVE, CK_AFTER_DELETE } ck_after_t;

typedef struct {
    char *incoming, *output, *failed, *done, *audit_log;
    char *output_name, *after_text;
    ck_after_t after;
    ck_strlist_t include, exclude;
    int recursive, allow_world_writable;
    uint64_t settle_ms, incomplete_s, workers, rescan_s;
    uint64_t stop_timeout_s, claim_stale_s;
} ck_watch_conf_t;

typedef struct ck_section ck_section_t;

typedef struct {
    ck_arena_t arena;
    char *path;
    char digest[65];      /* SHA-256 of the file as loaded, "" if unknown */
    ck_pipeline_conf_t pipeline;
    ck_security_conf_t security;
    ck_watch_conf_t watch;
    int watch_line;       /* of the [watch] header, 0 when absent */
    const char **allow;   /* security.allow_globals, NULL-ended */
    ck_stage_t *chain;
    size_t nchain;
    ck_section_t *sections;
    int chain_line;
} ck_conf_t;

/* Load path.  Errors: CK_ECONFIG with "PATH:LINE: message". */
int ck_conf_load(ck_conf_t *c, const char *path, ck_err_t *err);
void ck_conf_release(ck_conf_t *c);
void ck_conf_limits(const ck_conf_t *c, ck_limits_t *lim);

/* Directive tables of the core sections, for --help. */
extern const ck_directive_t ck_pipeline_directives[];
extern const ck_directive_t ck_security_directives[];
extern const ck_directive_t ck_watch_directives[];

#endif
