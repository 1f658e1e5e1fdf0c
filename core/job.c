/*
 * job.c -- the job: input -> validated model -> chain -> atomic output, and
 * its record.  The model's arena is the job arena: everything a job and its
 * plugins allocate is freed at once when the job ends.
 */
#include "job.h"

#include "fsutil.h"
#include "manifest.h"
#include "record.h"
#include "safetensors.h"

#include <stdarg.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void rfc3339(char *buf, size_t n)
{
    struct timespec ts;
    struct tm tm;
    size_t len;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    len = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + len, n - len, ".%03ldZ", ts.tv_nsec / 1000000);
}

void ck_job_record_failed(const ck_conf_t *conf, const char *in,
                          uint64_t size, ck_json_t *rec, const ck_err_t *err)
{
    ck_record_t r = { 0 };
    char ts[40];

    rfc3339(ts, sizeof(ts));
    r.ts = ts;
    r.version = CK_VERSION;
    r.in.path = in;
    r.in.size = size;
    r.status = "failed";
    r.error_code = ck_errname(err->code);
    r.error_message = err->msg;
    r.config_path = conf->path;
    r.config_digest = conf->digest;
    r.plugins = "[]";
    r.plugins_len = 2;
    ck_record_build(rec, &r);
}

char *ck_job_default_out(const char *in, const char *ext)
{
    const char *dot = ck_path_ext(ck_path_base(in));
    size_t stem = (size_t)(dot - in);
    char *out;

    if (ext == NULL)
        ext = dot;
    out = ck_malloc(stem + strlen(ext) + sizeof(".prep"));
    if (out == NULL)
        return NULL;
    memcpy(out, in, stem);
    strcpy(out + stem, ".prep");
    strcat(out, ext);
    return out;
}

/* ---- the job API of plugin.h ------------------------------------------ */

ck_arena_t *ck_job_arena(ck_job_t *job)
{
    return &job->ck.arena;
}

ck_py_t *ck_job_root(ck_job_t *job)
{
    return job->ck.pk.root;
}

void ck_job_set_root(ck_job_t *job, ck_py_t *root)
{
    job->ck.pk.root = root;
}

int ck_job_dry_run(const ck_job_t *job)
{
    return job->dry_run;
}

ck_py_t *ck_job_get(ck_job_t *job, const char *path)
{
    return ck_ckpt_get(&job->ck, path);
}

int ck_job_mapping(ck_job_t *job, const char *path, ck_py_t **node,
                   ck_py_vec_t **items)
{
    ck_err_t e = { 0 };
    int rc = ck_ckpt_mapping(&job->ck, path, node, items, &e);

    if (rc < 0)
        return ck_job_fail(job, rc, "%s", e.msg);
    return 0;
}

/* The slot holding the value at path in its parent mapping, or NULL. */
static ck_py_t **slot_of(ck_job_t *job, const char *path)
{
    const char *slash = strrchr(path, '/');
    ck_py_t *parent = job->ck.pk.root;
    ck_py_vec_t *m;
    size_t at;

    if (slash != NULL) {
        char *up = ck_arena_strndup(&job->ck.arena, path,
                                    (size_t)(slash - path));

        parent = up != NULL ? ck_ckpt_get(&job->ck, up) : NULL;
        path = slash + 1;
    }
    if (parent == NULL || ck_py_map_get(parent, path, &at) == NULL)
        return NULL;
    m = ck_py_mapping(parent);
    return &m->v[2 * at + 1];
}

/* No alternative of p exists: 0 when p is optional, else the job fails
 * naming p, with a hint when a '.' was written for a '/'. */
static int place_absent(ck_job_t *job, const ck_path_t *p)
{
    char hint[300] = "";

    if (p->optional)
        return 0;
    /* 'best_state.model' for 'best_state/model': say how levels are
     * written, and name the place when it exists that way */
    for (size_t i = 0; i < p->nalt && hint[0] == '\0'; i++) {
        char *slashed;

        if (strchr(p->alt[i], '.') == NULL || strchr(p->alt[i], '/') != NULL)
            continue;
        slashed = ck_arena_strdup(&job->ck.arena, p->alt[i]);
        if (slashed == NULL)
            return ck_job_nomem(job);
        for (char *c = slashed; *c != '\0'; c++)
            *c = *c == '.' ? '/' : *c;
        if (ck_ckpt_get(&job->ck, slashed) != NULL)
            snprintf(hint, sizeof(hint), " (levels are separated by '/': "
                     "did you mean '%.200s'?)", slashed);
        else
            snprintf(hint, sizeof(hint), " (levels are separated by '/', "
                     "not '.')");
    }
    if (p->nalt > 1)
        return ck_job_fail(job, CK_EPLUGIN, "none of '%s' is in the "
                           "checkpoint%s", p->text, hint);
    return ck_job_fail(job, CK_EPLUGIN, "no '%s' in the checkpoint%s",
                       p->text, hint);
}

int ck_job_place(ck_job_t *job, const ck_path_t *p, const char **which,
                 ck_py_t **node, ck_py_vec_t **items)
{
    int rc;

    for (size_t i = 0; i < p->nalt; i++) {
        if (ck_ckpt_get(&job->ck, p->alt[i]) == NULL)
            continue;
        rc = ck_job_mapping(job, p->alt[i], node, items);
        if (rc < 0)
            return rc;
        if (which != NULL)
            *which = p->alt[i];
        return 1;
    }
    return place_absent(job, p);
}

int ck_job_slot(ck_job_t *job, const ck_path_t *p, const char **which,
                ck_py_t ***slot)
{
    for (size_t i = 0; i < p->nalt; i++) {
        *slot = slot_of(job, p->alt[i]);
        if (*slot == NULL)
            continue;
        if (which != NULL)
            *which = p->alt[i];
        return 1;
    }
    return place_absent(job, p);
}

ck_py_vec_t *ck_job_metadata(ck_job_t *job, ck_py_t *state_dict)
{
    int oom = 0;
    ck_py_vec_t *md = ck_ckpt_metadata(&job->ck, state_dict, &oom);

    if (oom)
        ck_job_nomem(job);
    return md;
}

/* A scan of the model that records its tensors when records is set or
 * the job's output reads them (a safetensors file's), else checks them
 * only (the open's tensors_later): 400,000 tensors' records were 32 MiB
 * that a zip output never reads. */
static int scan(ck_job_t *job, int records, ck_err_t *err)
{
    int was = job->ck.want_tensors, rc;

    job->ck.want_tensors = was || records;
    rc = ck_ckpt_scan(&job->ck, err);
    job->ck.want_tensors = was;
    return rc;
}

/* The model scanned again when an earlier stage left it stale, or (with
 * records set) when its tensors are not recorded yet: 0, or the job
 * fails. */
static int fresh(ck_job_t *job, int records)
{
    ck_err_t e = { 0 };
    int rc;

    if (!job->ck.stale && !(records && job->ck.unrecorded))
        return 0;
    rc = scan(job, records, &e);
    return rc < 0 ? ck_job_fail(job, rc, "%s", e.msg) : 0;
}

uint64_t ck_job_bytes_under(ck_job_t *job, ck_py_t *node)
{
    /* storages are tied to their persistent ids by any scan */
    return fresh(job, 0) < 0 ? 0 : ck_ckpt_bytes_under(&job->ck, node);
}

const ck_tensor_t *ck_job_tensor(ck_job_t *job, ck_py_t *node)
{
    ck_tensor_t *t;
    ck_err_t e = { 0 };

    if (fresh(job, 1) < 0)
        return NULL;
    t = ck_ckpt_tensor(&job->ck, node);

    /* a tensor added earlier in the job is known once the graph is scanned;
     * other nodes are no tensor whatever a scan finds (a plugin asks for
     * every value of a state dict: no scan per non-tensor value) */
    if (t == NULL && ck_ckpt_tensor_call(node) != 0 &&
        scan(job, 1, &e) == 0)
        t = ck_ckpt_tensor(&job->ck, node);
    return t;
}

int ck_job_read_tensor(ck_job_t *job, const ck_tensor_t *t, uint8_t *out)
{
    ck_err_t e = { 0 };
    int rc = ck_ckpt_read_tensor(&job->ck, t, out, &e);

    if (rc < 0)
        return ck_job_fail(job, rc, "%s", e.msg);
    return 0;
}

ck_py_t *ck_job_new_tensor(ck_job_t *job, const ck_dtype_t *dt,
                           const int64_t *shape, size_t ndim,
                           const uint8_t *data)
{
    ck_err_t e = { 0 };
    ck_py_t *t = ck_ckpt_new_tensor(&job->ck, dt, shape, ndim, data, &e);

    if (t == NULL)
        ck_job_fail(job, e.code ? e.code : CK_ENOMEM, "%s",
                    e.code ? e.msg : "out of memory");
    return t;
}

int ck_job_cast(ck_job_t *job, ck_py_t *const *nodes, size_t n,
                const ck_dtype_t *dt, unsigned char *split)
{
    ck_err_t e = { 0 };
    int rc;

    if (fresh(job, 1) < 0)
        return job->err->code;
    for (size_t i = 0; i < n; i++)
        (void)ck_job_tensor(job, nodes[i]); /* scanned, new ones too */
    rc = ck_ckpt_cast(&job->ck, nodes, n, dt, split, &e);
    if (rc < 0)
        return ck_job_fail(job, rc, "%s", e.msg);
    return 0;
}

ck_py_t *ck_job_global(ck_job_t *job, const char *module, const char *name)
{
    return ck_ckpt_global(&job->ck, module, name);
}

int ck_job_fail(ck_job_t *job, int code, const char *fmt, ...)
{
    char msg[sizeof(job->err->msg)];
    va_list ap;

    if (job->err->code != 0) /* the first failure is the cause */
        return job->err->code;
    if (code == CK_ENOMEM)
        return ck_err_set(job->err, code, "out of memory");
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (job->stage == NULL)
        return ck_err_set(job->err, code, "%s", msg);
    return ck_err_set(job->err, code, "%s%s%s: %s", job->stage->plugin->name,
                      job->stage->label ? ":" : "",
                      job->stage->label ? job->stage->label : "", msg);
}

void ck_job_warn(ck_job_t *job, const char *fmt, ...)
{
    char msg[512], line[640];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (job->stage != NULL)
        snprintf(line, sizeof(line), "%s%s%s: %s", job->stage->plugin->name,
                 job->stage->label ? ":" : "",
                 job->stage->label ? job->stage->label : "", msg);
    else
        snprintf(line, sizeof(line), "%s", msg);
    if (job->warnings != NULL) {
        ck_json_str(job->warnings, line);
        job->nwarnings++;
    }
    if (job->warn != NULL)
        job->warn(job->warn_ud, line);
}

int ck_job_nomem(ck_job_t *job)
{
    return ck_err_set(job->err, CK_ENOMEM, "out of memory");
}

int ck_job_error(const ck_job_t *job)
{
    return job->err->code;
}

int ck_job_canceled(ck_job_t *job)
{
    if (job->ck.cancel == NULL ||
        !__atomic_load_n(job->ck.cancel, __ATOMIC_RELAXED))
        return 0;
    return ck_job_fail(job, CK_ECANCELED, "abandoned inside the stage: "
                       "ckprep is stopping");
}

const char *ck_py_type_name(const ck_py_t *k)
{
    switch ((ck_py_kind_t)k->kind) {
    case CK_PY_NONE: return "NoneType";
    case CK_PY_BOOL: return "bool";
    case CK_PY_INT: return "int";
    case CK_PY_FLOAT: return "float";
    case CK_PY_STR: return "str";
    case CK_PY_BYTES: return "bytes";
    case CK_PY_TUPLE: return "tuple";
    case CK_PY_FROZENSET: return "frozenset";
    default: return "object";
    }
}

/* A key as JSON: a str, an int within int64, a float, a bool or None as
 * itself; anything else as "<TYPE>". */
static void json_key(ck_json_t *j, const ck_py_t *k)
{
    char t[32];

    /* a scalar as pyval writes it, but for a big int: a key is named, not
     * spelled out */
    if (!(k->kind == CK_PY_INT && k->len != 0) && ck_pyval_json(j, k) == 0)
        return;
    snprintf(t, sizeof(t), "<%s>", ck_py_type_name(k));
    ck_json_str(j, t);
}

void ck_job_report_fields(ck_job_t *job, const char *op, const ck_field_t *f,
                          size_t n)
{
    ck_json_t *j = job->changes;

    if (j == NULL)
        return;
    ck_json_obj(j);
    ck_json_key(j, "op");
    ck_json_str(j, op);
    for (size_t i = 0; i < n; i++) {
        ck_json_key(j, f[i].name);
        switch (f[i].type) {
        case CK_FT_STR: ck_json_str(j, f[i].s); break;
        case CK_FT_STRN: ck_json_strn(j, f[i].s, f[i].n); break;
        case CK_FT_U64: ck_json_u64(j, f[i].u); break;
        case CK_FT_I64: ck_json_int(j, f[i].i); break;
        case CK_FT_BOOL: ck_json_bool(j, f[i].i != 0); break;
        case CK_FT_KEY: json_key(j, f[i].p); break;
        case CK_FT_KEYS:
            ck_json_arr(j);
            for (size_t k = 0; k < f[i].n; k++)
                json_key(j, ((ck_py_t *const *)f[i].p)[k]);
            ck_json_end(j);
            break;
        case CK_FT_I64S:
            ck_json_arr(j);
            for (size_t k = 0; k < f[i].n; k++)
                ck_json_int(j, ((const int64_t *)f[i].p)[k]);
            ck_json_end(j);
            break;
        case CK_FT_VALUE: f[i].fn(j, f[i].p); break;
        }
    }
    ck_json_end(j);
}

/* ---- running ---------------------------------------------------------- */

int ck_job_run_stage(ck_job_t *job, const ck_stage_t *st, ck_json_t *changes)
{
    int rc;

    job->stage = st;
    job->changes = changes;
    rc = st->plugin->run(job, st->conf);
    if (rc == 0 && job->err->code != 0)
        rc = job->err->code; /* a failure the plugin did not return */
    job->stage = NULL;
    if (rc == 0 && job->scan_later)
        job->ck.stale = 1;
    else if (rc == 0)
        rc = ck_ckpt_scan(&job->ck, job->err);
    if (changes->b.oom)
        rc = ck_err_set(job->err, CK_ENOMEM, "out of memory");
    job->changes = NULL;
    return rc;
}

static int canceled(const int *cancel)
{
    return cancel != NULL && __atomic_load_n(cancel, __ATOMIC_RELAXED);
}

/* A safetensors output's plan, reported in the plugins array as the
 * pseudo-stage "output": what was written and the tied names dropped. */
static int plan_output(ck_job_t *job, ck_st_plan_t *plan, ck_json_t *plugins)
{
    int rc = ck_st_plan(&job->ck, &job->conf->output, plan, job->err);

    if (rc < 0)
        return rc;
    ck_json_obj(plugins);
    ck_json_key(plugins, "name");
    ck_json_str(plugins, "output");
    ck_json_key(plugins, "label");
    ck_json_str(plugins, "safetensors");
    ck_json_key(plugins, "changes");
    ck_json_arr(plugins);
    ck_json_obj(plugins);
    ck_json_key(plugins, "op");
    ck_json_str(plugins, "safetensors");
    ck_json_key(plugins, "state");
    ck_json_str(plugins, plan->state);
    ck_json_key(plugins, "tensors");
    ck_json_u64(plugins, plan->n);
    ck_json_key(plugins, "bytes");
    ck_json_u64(plugins, plan->data_bytes);
    ck_json_end(plugins);
    for (size_t i = 0; i < plan->nalias; i++) {
        ck_json_obj(plugins);
        ck_json_key(plugins, "op");
        ck_json_str(plugins, "alias_dropped");
        ck_json_key(plugins, "key");
        ck_json_str(plugins, plan->alias[i]);
        ck_json_key(plugins, "kept");
        ck_json_str(plugins, plan->kept[i]);
        ck_json_end(plugins);
    }
    ck_json_end(plugins);
    ck_json_end(plugins);
    return 0;
}

/*
 * Each stage's entry in the record's plugins array: name, label, changes,
 * duration_ms, then warnings and error when there are.  The changes go
 * straight into the array as the stage reports them: 10^5 of them are
 * megabytes, which a buffer of the stage's own held twice while copied.
 */
static int run_chain(ck_job_t *job, ck_json_t *plugins)
{
    const ck_conf_t *conf = job->conf;
    int rc = 0;

    for (size_t i = 0; i < conf->nchain && rc == 0; i++) {
        const ck_stage_t *st = &conf->chain[i];
        ck_json_t warnings = { 0 };
        int64_t t0 = now_ms();

        if (canceled(job->ck.cancel))   /* between stages too */
            return ck_err_set(job->err, CK_ECANCELED, "abandoned: ckprep is stopping");

        ck_json_obj(plugins);
        ck_json_key(plugins, "name");
        ck_json_str(plugins, st->plugin->name);
        ck_json_key(plugins, "label");
        ck_json_str(plugins, st->label);
        ck_json_key(plugins, "changes");
        ck_json_arr(plugins);
        ck_json_arr(&warnings);
        job->warnings = &warnings;
        job->nwarnings = 0;
        /* a scan after each stage was a tenth of a run over 10^5 tensors:
         * the last one scans, the others mark the model stale */
        job->scan_later = i + 1 < conf->nchain;
        rc = ck_job_run_stage(job, st, plugins);
        job->scan_later = 0;
        job->warnings = NULL;
        ck_json_end(plugins);
        ck_json_end(&warnings);
        ck_json_key(plugins, "duration_ms");
        ck_json_int(plugins, now_ms() - t0);
        if (job->nwarnings > 0) {
            ck_json_key(plugins, "warnings");
            ck_json_raw(plugins, (const char *)warnings.b.data,
                        warnings.b.len);
        }
        if (rc < 0) {
            ck_json_key(plugins, "error");
            ck_json_str(plugins, job->err->msg);
        }
        ck_json_end(plugins);
        if (plugins->b.oom || warnings.b.oom)
            rc = ck_err_set(job->err, CK_ENOMEM, "out of memory");
        ck_json_release(&warnings);
    }
    return rc;
}

int ck_job_run(const ck_conf_t *conf, const ck_job_args_t *args,
               ck_json_t *rec, ck_err_t *err)
{
    ck_job_t job;
    ck_open_opts_t opts;
    ck_write_info_t info = { 0 };
    ck_json_t plugins = { 0 };
    ck_st_plan_t plan = { 0 };
    int st_out = conf->output.format == CK_OUT_SAFETENSORS;
    int64_t t0 = now_ms();
    const char *out = args->out;
    char ts[40];
    struct stat old;
    int rc, wrote = 0, replaced = 0;

    memset(&job, 0, sizeof(job));
    job.conf = conf;
    job.err = err;
    job.dry_run = args->dry_run;
    job.warn = args->warn;
    job.warn_ud = args->warn_ud;
    rfc3339(ts, sizeof(ts));
    ck_conf_open_opts(conf, &opts);
    opts.lim.cancel = args->cancel;     /* the parse stops too */
    /* the tensors are recorded by the first scan a stage asks them of,
     * and by the chain's last when the output reads them: the input's
     * every tensor (a dropped optimizer's 300,000) held through
     * validation and chain was the run's peak */
    opts.tensors_later = 1;
    ck_json_arr(&plugins);
    rc = args->stream_in
             ? ck_ckpt_open_stream(&job.ck, args->in_fd, args->in, &opts, err)
             : ck_ckpt_open(&job.ck, args->in, &opts, err);
    job.ck.cancel = args->cancel;
    job.ck.yield = args->yield;
    job.ck.want_tensors = st_out;
    /* a big output is published by the write itself: its sync is long
     * and would hold the small ones published with it */
    job.ck.defer = args->defer_tmp == NULL ? 0 : args->defer_all ?
                   UINT64_MAX : CK_JOB_DEFER_MAX;
    if (job.ck.fd >= 0 && args->expect_set &&
        ((uint64_t)job.ck.st.ino != args->expect_ino ||
         job.ck.st.size != args->expect_size ||
         job.ck.st.mtime_ns != args->expect_mtime_ns)) {
        /* this says more than an error the open may have found */
        rc = ck_err_replace(err, CK_ECHANGED,
                            "not the file that was claimed (replaced "
                            "meanwhile)");
    }
    if (rc == 0 && canceled(args->cancel))     /* stopping during the parse */
        rc = ck_err_set(err, CK_ECANCELED, "abandoned: ckprep is stopping");
    /* a safetensors input's reads its tensor bytes; a big pickle's is
     * made on another thread meanwhile, and waited for when named by it
     * or, at the latest, for the record */
    if (rc == 0 && (job.ck.fp == NULL || (out == NULL &&
                                           args->name_out != NULL &&
                                           !args->name_no_fp)))
        rc = ck_ckpt_fingerprint(&job.ck, err);
    if (rc == 0 && out == NULL && args->name_out != NULL) {
        out = args->name_out(args->name_ud, job.ck.fingerprint, err);
        if (out == NULL)
            rc = err->code < 0 ? err->code : CK_ENOMEM;
    }
    if (rc == 0)
        rc = ck_ckpt_validate(&job.ck, err); /* as inspect validates */
    if (rc == 0)
        rc = run_chain(&job, &plugins);
    if (rc == 0)    /* after a chain of no stage too: checked, and
                       recorded for a safetensors output */
        rc = fresh(&job, st_out);
    if (rc == 0 && canceled(args->cancel))
        rc = ck_err_set(err, CK_ECANCELED, "abandoned: ckprep is stopping");
    if (rc == 0 && st_out)
        rc = plan_output(&job, &plan, &plugins);
    if (rc == 0 && !args->dry_run && out != NULL) {
        /* room for the whole record first: once the output exists, writing
         * its record must not fail (strings escape to at most 6 bytes each) */
        size_t room = plugins.b.len + 1024 +
                      6 * (strlen(args->in) + 2 * strlen(out) +
                           strlen(conf->path) + sizeof(err->msg));

        if (ck_buf_reserve(&plugins.b, 1) < 0 ||
            ck_buf_reserve(&rec->b, room) < 0 ||
            ck_buf_reserve(&rec->levels, 8) < 0)
            rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        else {
            /* what the write replaces, for the record */
            replaced = !args->stream_out && lstat(out, &old) == 0 &&
                       S_ISREG(old.st_mode);
            rc = st_out ? ck_st_write(&job.ck, &plan, out, &info, err)
                 : args->stream_out
                     ? ck_ckpt_write_fd(&job.ck, args->out_fd, &info, err)
                     : ck_ckpt_write(&job.ck, out, &info, err);
        }
        wrote = rc == 0;
        if (args->defer_tmp != NULL)
            *args->defer_tmp = info.tmp;
    } else if (rc == 0) {
        rc = ck_ckpt_check_keys(&job.ck, err); /* what the write would refuse */
    }
    ck_json_end(&plugins);
    ck_st_plan_release(&plan);
    if (rc == 0) {
        rc = ck_ckpt_fingerprint(&job.ck, err);
    } else if (job.ck.fp != NULL && rc != CK_ECANCELED) {
        ck_err_t e2;    /* the record names the input all the same */

        (void)ck_ckpt_fingerprint(&job.ck, &e2);
    }   /* (stopping: the close gives it up) */

    {
        ck_record_t r = { 0 };
        char digest[sizeof(job.ck.fingerprint)];

        r.ts = ts;
        r.version = CK_VERSION;
        r.in.path = args->in;
        r.in.size = job.ck.st.size;
        memcpy(digest, job.ck.fingerprint, sizeof(digest));
        r.in.digest = digest;
        r.in.opened = job.ck.fd >= 0;
        r.in.inode = (uint64_t)job.ck.st.ino;
        r.in.mtime_ns = job.ck.st.mtime_ns;
        r.in.format = ck_ckpt_format_name(&job.ck);
        r.wrote = wrote;
        r.out.path = out;
        if (replaced) {
            r.out.replaced = out;
            r.out.replaced_size = (uint64_t)old.st_size;
            r.out.replaced_mtime_ns = (int64_t)old.st_mtim.tv_sec *
                                          1000000000 + old.st_mtim.tv_nsec;
        }
        r.out.size = info.size;
        r.out.digest = info.fingerprint;
        r.out.storages = info.nstorages;
        r.out.storage_bytes = info.storage_bytes;
        r.status = rc == 0 ? "ok" : "failed";
        r.error_code = rc < 0 ? ck_errname(rc) : NULL;
        r.error_message = err->msg;
        r.dry_run = args->dry_run;
        r.duration_ms = now_ms() - t0;
        r.config_path = conf->path;
        r.config_digest = conf->digest;
        r.plugins = (const char *)plugins.b.data;
        r.plugins_len = plugins.b.len;
        /* the graph goes before the record is made: a chain's changes
         * (10^5 renames) are megabytes, twice while it is copied */
        ck_ckpt_close(&job.ck);
        ck_record_build(rec, &r);
    }
    ck_json_release(&plugins);
    return rc;
}
