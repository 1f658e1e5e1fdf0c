/*
 * watchconf.h -- the [watch] section: its directives (ck_watch_directives,
 * declared in conf.h beside the other core tables), the output_name
 * template, and every check of it that needs only the configuration.
 * ck_conf_load runs those checks, so `ckprep check` refuses what `ckprep
 * watch` refuses.  Checks that need the folders themselves (they exist,
 * can be made, are not world-writable) stay in the daemon, as does the
 * need for incoming, output, failed and audit_log: a configuration for
 * `ckprep run` alone has no [watch].
 */
#ifndef CK_WATCHCONF_H
#define CK_WATCHCONF_H

#include "conf.h"

/*
 * Check the loaded [watch] of c (defaults applied) and fill in what is
 * derived from it.  Errors: CK_ECONFIG with
 * "PATH:LINE: [watch] message", LINE the [watch] header's.  Reads no
 * folder but to resolve symlinks in the ones that exist.
 */
int ck_watch_conf_check(ck_conf_t *c, ck_err_t *err);

/*
 * Expand a [watch] output_name template ({stem}, {ext}, {name}, {dir}) for
 * the input at rel (relative to incoming) into out.  Returns 0, or
 * CK_ECONFIG when the result is not a plain file name (empty, '.', '..',
 * a leading dot, a '/') or does not fit.
 */
int ck_watch_output_name(const char *tmpl, const char *rel, char *out,
                         size_t size);

/* What a job's output name may use beyond the input's path. */
typedef struct {
    uint64_t seq;              /* {seq} */
    int64_t mtime_ns;          /* {mtime}: the input's, UTC */
    int64_t now_s;             /* {date}: when the job ran, UTC */
    const char *fingerprint;   /* {fingerprint8}: the input's, hex */
} ck_watch_name_vars_t;

/*
 * ck_watch_output_name with {seq} {mtime} {date} {fingerprint8} too: from
 * v, or as '*' when v is NULL (a glob of every name the template makes).
 */
int ck_watch_output_name_v(const char *tmpl, const char *rel,
                           const ck_watch_name_vars_t *v, char *out,
                           size_t size);

/* Does the template use a field known only when the job runs? */
int ck_watch_output_name_dynamic(const char *tmpl);

/*
 * The marker of the input at rel (relative to its folder's parts): with a
 * {name} in tmpl, tmpl with the input's file name put in; without, tmpl
 * itself (one marker for the whole folder).  In out, beside the input:
 * "dir/NAME.done".  CK_ECONFIG when it does not fit.
 */
int ck_watch_marker_path(const char *tmpl, const char *rel, char *out,
                         size_t size);

#endif
