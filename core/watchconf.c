/*
 * watchconf.c -- the [watch] section.  See watchconf.h.
 *
 * The directive table checks each value as it is read (so its error has
 * the value's line); ck_watch_conf_check, run by ck_conf_load after the
 * defaults, checks the directives against each other.  Folders are
 * compared by their canonical form: absolute, '.', '..' and '//' folded,
 * symlinks resolved as far as the path exists.
 */
#define _XOPEN_SOURCE 700 /* realpath */
#include "watchconf.h"

#include "fsutil.h"

#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const ck_conf_enum_t after_names[] = {
    { "keep", CK_AFTER_KEEP },
    { "move", CK_AFTER_MOVE },
    { "delete", CK_AFTER_DELETE },
    { NULL, 0 },
};

static const ck_conf_enum_t exists_names[] = {
    { "replace", CK_EXISTS_REPLACE },
    { "keep", CK_EXISTS_KEEP },
    { "fail", CK_EXISTS_FAIL },
    { NULL, 0 },
};

static const ck_conf_enum_t ready_names[] = {
    { "settle", CK_READY_SETTLE },
    { "marker", CK_READY_MARKER },
    { NULL, 0 },
};

static const ck_conf_range_t workers_range = { 1, CK_WATCH_MAX_WORKERS };
static const ck_conf_range_t metrics_range = { 1, 86400 };

static int set_output_name(ck_conf_ctx_t *cx, const ck_directive_t *d,
                           void *conf, const char *v)
{
    char out[1024];

    ck_watch_name_vars_t vars = { 1, 0, 0, "0123456789abcdef" };

    if (ck_watch_output_name_v(v, "dir/model.th", &vars, out,
                               sizeof(out)) < 0 ||
        ck_watch_output_name_v(v, "model", &vars, out, sizeof(out)) < 0)
        return ck_err_set(cx->err, CK_ECONFIG,
                          "output_name: '%s' does not make a plain file name "
                          "(use {stem} {ext} {name} {dir} {seq} {mtime} "
                          "{date} {fingerprint8}; no '/', no leading dot)", v);
    return ck_conf_set_str(cx, d, conf, v);
}

static int set_marker(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                      const char *v)
{
    const char *brace = strchr(v, '{');

    if (*v == '\0' || strchr(v, '/') != NULL || strcmp(v, ".") == 0 ||
        strcmp(v, "..") == 0 || strcmp(v, "{name}") == 0 ||
        (brace != NULL && (strncmp(brace, "{name}", 6) != 0 ||
                           strchr(brace + 6, '{') != NULL)) ||
        (brace == NULL && strchr(v, '}') != NULL))
        return ck_err_set(cx->err, CK_ECONFIG,
                          "marker: '%s' is not a file name ({name}.done, or "
                          "one name for the folder such as _SUCCESS)", v);
    return ck_conf_set_str(cx, d, conf, v);
}

/* Columns: name, setter, field, default, flags, help, the setter's data. */
const ck_directive_t ck_watch_directives[] = {
    { "incoming", ck_conf_set_str, offsetof(ck_watch_conf_t, incoming), NULL,
      0, "folder watched for new checkpoints" },
    { "output", ck_conf_set_str, offsetof(ck_watch_conf_t, output), NULL, 0,
      "folder prepared checkpoints are written to" },
    { "failed", ck_conf_set_str, offsetof(ck_watch_conf_t, failed), NULL, 0,
      "folder failed inputs are moved to, each with NAME.error.json" },
    { "audit_log", ck_conf_set_str, offsetof(ck_watch_conf_t, audit_log), NULL,
      0, "JSON Lines file, one record per job" },
    { "include", ck_conf_set_words, offsetof(ck_watch_conf_t, include),
      "*.th *.pt *.pth *.ckpt", CK_DIR_MULTI, "file name globs to process" },
    { "exclude", ck_conf_set_words, offsetof(ck_watch_conf_t, exclude),
      "*.tmp *.tmp.* .*", CK_DIR_MULTI, "file name globs never processed" },
    { "recursive", ck_conf_set_bool, offsetof(ck_watch_conf_t, recursive),
      "no", 0, "watch sub-folders too; outputs keep their relative path" },
    { "after", ck_conf_set_enum, offsetof(ck_watch_conf_t, after), "keep",
      0, "what becomes of a processed input: keep, move or delete",
      after_names },
    { "done", ck_conf_set_str, offsetof(ck_watch_conf_t, done), NULL, 0,
      "folder processed inputs are moved to (after = move)" },
    { "output_name", set_output_name, offsetof(ck_watch_conf_t, output_name),
      "{stem}{ext}", 0, "output file name: {stem} {ext} {name} {dir}", NULL },
    { "settle_ms", ck_conf_set_u64, offsetof(ck_watch_conf_t, settle_ms),
      "1000", 0, "quiet time after a file's last change before it is read" },
    { "incomplete_s", ck_conf_set_u64, offsetof(ck_watch_conf_t, incomplete_s),
      "60", 0, "a file unreadable this long after its last change fails" },
    { "workers", ck_conf_set_u64, offsetof(ck_watch_conf_t, workers), "2", 0,
      "jobs run at once (1 to 64)", &workers_range },
    { "rescan_s", ck_conf_set_u64, offsetof(ck_watch_conf_t, rescan_s), "60",
      0, "full rescan of incoming every so often (0: never)" },
    { "stop_timeout_s", ck_conf_set_u64,
      offsetof(ck_watch_conf_t, stop_timeout_s), "30", 0,
      "on SIGTERM, running jobs past this are abandoned (no output)" },
    { "claim_stale_s", ck_conf_set_u64, offsetof(ck_watch_conf_t, claim_stale_s),
      "60", 0, "another host's claim not refreshed this long is taken back" },
    { "on_output_exists", ck_conf_set_enum,
      offsetof(ck_watch_conf_t, on_output_exists), "replace", 0,
      "an output name already taken: replace it, keep it (the new one gets "
      ".1, .2, ... before its extension) or fail the job", exists_names },
    { "ready", ck_conf_set_enum, offsetof(ck_watch_conf_t, ready), "settle",
      0, "when a file is taken: settle (quiet for settle_ms) or marker (its "
      "marker file appeared)", ready_names },
    { "marker", set_marker, offsetof(ck_watch_conf_t, marker), "{name}.done",
      0, "ready = marker: {name}.done beside each file, or one name such as "
      "_SUCCESS for its whole folder", NULL },
    { "metrics_file", ck_conf_set_str, offsetof(ck_watch_conf_t, metrics_file),
      NULL, 0, "Prometheus text file (node_exporter's textfile collector), "
      "written every metrics_s and at exit" },
    { "metrics_s", ck_conf_set_u64, offsetof(ck_watch_conf_t, metrics_s), "15",
      0, "how often metrics_file is written", &metrics_range },
    { "allow_world_writable", ck_conf_set_bool,
      offsetof(ck_watch_conf_t, allow_world_writable), "no", 0,
      "start even when output or the audit log's folder is world-writable" },
    { NULL, NULL, 0, NULL, 0, NULL },
};

/* {mtime} or {date} of t (seconds, UTC) in buf. */
static size_t utc(char *buf, size_t size, int64_t t, const char *fmt)
{
    time_t s = (time_t)t;
    struct tm tm;

    if (gmtime_r(&s, &tm) == NULL)
        return 0;
    return strftime(buf, size, fmt, &tm);
}

int ck_watch_output_name_dynamic(const char *tmpl)
{
    return strstr(tmpl, "{seq}") != NULL || strstr(tmpl, "{mtime}") != NULL ||
           strstr(tmpl, "{date}") != NULL ||
           strstr(tmpl, "{fingerprint8}") != NULL;
}

int ck_watch_output_name(const char *tmpl, const char *rel, char *out,
                         size_t size)
{
    return ck_watch_output_name_v(tmpl, rel, NULL, out, size);
}

int ck_watch_output_name_v(const char *tmpl, const char *rel,
                           const ck_watch_name_vars_t *vars, char *out,
                           size_t size)
{
    const char *base = ck_path_base(rel), *dot = ck_path_ext(base);
    size_t o = 0, dirlen = base > rel ? (size_t)(base - rel - 1) : 0;

    while (*tmpl != '\0') {
        const char *v = NULL;
        size_t n = 0, skip = 1;
        int is_dir = 0;
        char num[32];

        if (*tmpl == '{' && (strncmp(tmpl, "{seq}", 5) == 0 ||
                             strncmp(tmpl, "{mtime}", 7) == 0 ||
                             strncmp(tmpl, "{date}", 6) == 0 ||
                             strncmp(tmpl, "{fingerprint8}", 14) == 0)) {
            skip = strchr(tmpl, '}') - tmpl + 1;
            v = num;
            if (vars == NULL)
                n = (size_t)snprintf(num, sizeof(num), "*");
            else if (tmpl[1] == 's')
                n = (size_t)snprintf(num, sizeof(num), "%llu",
                                     (unsigned long long)vars->seq);
            else if (tmpl[1] == 'm')
                n = utc(num, sizeof(num), vars->mtime_ns / 1000000000,
                        "%Y%m%dT%H%M%S");
            else if (tmpl[1] == 'd')
                n = utc(num, sizeof(num), vars->now_s, "%Y%m%d");
            else
                n = (size_t)snprintf(num, sizeof(num), "%.8s",
                                     vars->fingerprint ? vars->fingerprint
                                                       : "");
            if (n == 0)
                return CK_ECONFIG;
            goto put;
        }

        if (strncmp(tmpl, "{stem}", 6) == 0)
            v = base, n = (size_t)(dot - base), skip = 6;
        else if (strncmp(tmpl, "{ext}", 5) == 0)
            v = dot, n = strlen(dot), skip = 5;
        else if (strncmp(tmpl, "{name}", 6) == 0)
            v = base, n = strlen(base), skip = 6;
        else if (strncmp(tmpl, "{dir}", 5) == 0)
            v = rel, n = dirlen, skip = 5, is_dir = 1;
        else if (*tmpl == '{' || *tmpl == '}')
            return CK_ECONFIG;
        else
            v = tmpl, n = 1;
put:
        if (o + n >= size)
            return CK_ECONFIG;
        for (size_t i = 0; i < n; i++)  /* {dir}'s '/' become '_' */
            out[o++] = is_dir && v[i] == '/' ? '_' : v[i];
        tmpl += skip;
    }
    out[o] = '\0';
    if (o == 0 || out[0] == '.' || strchr(out, '/') != NULL)
        return CK_ECONFIG;
    return 0;
}

int ck_watch_marker_path(const char *tmpl, const char *rel, char *out,
                         size_t size)
{
    const char *base = ck_path_base(rel), *brace = strstr(tmpl, "{name}");
    int n;

    if (brace == NULL)
        n = snprintf(out, size, "%.*s%s", (int)(base - rel), rel, tmpl);
    else
        n = snprintf(out, size, "%.*s%.*s%s%s", (int)(base - rel), rel,
                     (int)(brace - tmpl), tmpl, base, brace + 6);
    return n < 0 || (size_t)n >= size ? CK_ECONFIG : 0;
}

/* Fold '.', '..' and repeated '/' of the absolute path p, in place. */
static void fold(char *p)
{
    char *o = p;    /* p[0] is '/' */

    for (char *s = p; *s != '\0';) {
        size_t n;

        while (*s == '/')
            s++;
        n = strcspn(s, "/");
        if (n == 0)
            break;
        if (n == 1 && s[0] == '.') {
            /* nothing */
        } else if (n == 2 && s[0] == '.' && s[1] == '.') {
            while (o > p && *--o != '/')
                ;
        } else {
            *o++ = '/';
            memmove(o, s, n);
            o += n;
        }
        s += n;
    }
    if (o == p)
        *o++ = '/';
    *o = '\0';
}

/*
 * The canonical form of path (ck_malloc), or NULL when out of memory: made
 * absolute, folded, and its longest existing prefix resolved by realpath,
 * so a folder reached through a symlink compares equal to itself.
 */
static char *canonical(const char *path)
{
    char cwd[PATH_MAX], *abs, *real = NULL, *out = NULL;
    size_t n;

    if (path[0] == '/')
        abs = ck_strdup(path);
    else
        abs = getcwd(cwd, sizeof(cwd)) ? ck_path_join(cwd, path) : NULL;
    if (abs == NULL)
        return NULL;
    fold(abs);
    for (n = strlen(abs); n > 0; n--) {
        char c = abs[n];

        if (c != '\0' && c != '/')
            continue;
        abs[n] = '\0';
        real = realpath(n == 0 ? "/" : abs, NULL);
        abs[n] = c;
        if (real != NULL)
            break;
    }
    if (real == NULL)
        return abs;
    out = ck_malloc(strlen(real) + strlen(abs + n) + 1);
    if (out != NULL) {
        strcpy(out, strcmp(real, "/") == 0 && abs[n] == '/' ? "" : real);
        strcat(out, abs + n);
    }
    free(real);
    ck_free(abs);
    return out;
}

/*
 * output, failed and done (after = move) may not be incoming (outputs would
 * be taken for inputs and written over them), nor inside it when
 * recursive.
 */
static int apart(const ck_watch_conf_t *w, ck_err_t *err)
{
    const char *names[] = { "output", "failed", "done" };
    const char *paths[] = { w->output, w->failed,
                            w->after == CK_AFTER_MOVE ? w->done : NULL };
    char *in = canonical(w->incoming);
    size_t n = in ? strlen(in) : 0;
    int rc = 0;

    if (in == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    for (size_t i = 0; i < CK_ARRAY_SIZE(paths) && rc == 0; i++) {
        char *p = paths[i] ? canonical(paths[i]) : NULL;

        if (paths[i] != NULL && p == NULL)
            rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        else if (p != NULL &&
                 (strcmp(p, in) == 0 ||
                  (w->recursive && strncmp(p, in, n) == 0 &&
                   (p[n] == '/' || strcmp(in, "/") == 0))))
            rc = ck_err_set(err, CK_ECONFIG, "%s = %s is %sincoming: its "
                            "files would be taken for inputs", names[i],
                            paths[i], p[n] == '\0' ? "" : "inside ");
        ck_free(p);
    }
    ck_free(in);
    return rc;
}

/* Would a marker be taken for an input (of model.th, or itself)? */
static int marker_wanted(const ck_watch_conf_t *w)
{
    char m[256];

    if (ck_watch_marker_path(w->marker, "model.th", m, sizeof(m)) < 0)
        return 1;
    for (size_t i = 0; i < w->exclude.n; i++)
        if (fnmatch(w->exclude.v[i], m, 0) == 0)
            return 0;
    for (size_t i = 0; i < w->include.n; i++)
        if (fnmatch(w->include.v[i], m, 0) == 0)
            return 1;
    return 0;
}

static int empty(const char *v)
{
    return v == NULL || *v == '\0';
}

int ck_watch_conf_check(ck_conf_t *c, ck_err_t *err)
{
    ck_watch_conf_t *w = &c->watch;
    ck_err_t e = { 0 };
    int rc = 0;

    /* a [watch] section is for the daemon: it needs its four places (a
     * configuration for `ckprep run` alone has no [watch]) */
    if (c->watch_line != 0 && empty(w->incoming))
        rc = ck_err_set(&e, CK_ECONFIG, "incoming = DIR is required");
    else if (c->watch_line != 0 && empty(w->output))
        rc = ck_err_set(&e, CK_ECONFIG, "output = DIR is required");
    else if (c->watch_line != 0 && empty(w->failed))
        rc = ck_err_set(&e, CK_ECONFIG, "failed = DIR is required");
    else if (c->watch_line != 0 && empty(w->audit_log))
        rc = ck_err_set(&e, CK_ECONFIG, "audit_log = FILE is required");
    else if (w->after == CK_AFTER_MOVE && w->done == NULL)
        rc = ck_err_set(&e, CK_ECONFIG, "after = move needs done = DIR");
    else if (w->ready == CK_READY_MARKER && marker_wanted(w))
        rc = ck_err_set(&e, CK_ECONFIG, "marker = %s names files include "
                        "takes for inputs: exclude them", w->marker);
    else if (w->incoming != NULL)
        rc = apart(w, &e);
    if (rc < 0)
        ck_err_set(err, rc, "%s:%d: [watch] %s", c->path, c->watch_line,
                   e.msg);
    return rc;
}
