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

#endif
