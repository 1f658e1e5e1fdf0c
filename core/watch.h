/*
 * watch.h -- `ckprep watch`: the daemon.  One libuv loop watches the
 * [watch] incoming folder with inotify (its own descriptor, driven by a
 * uv_poll_t), waits until each new file is complete, claims it, runs the
 * job on the thread pool (the same ck_job_run as `ckprep run`), and files
 * the result: output written atomically, one audit record, the input kept,
 * moved or deleted, or moved to failed/ with NAME.error.json.
 */
#ifndef CK_WATCH_H
#define CK_WATCH_H

#include "conf.h"

#include <stdio.h>

/*
 * Run the daemon with the configuration at conf_path until SIGTERM or
 * SIGINT.  Returns the process exit status: 0 after a clean stop, 1 when
 * it could not start (folders, audit log), 2 for a configuration error.
 */
int ck_watch_main(const char *conf_path);

/*
 * Check the [watch] folders of a loaded configuration: log a warning (via
 * report) for each folder pair on different file systems and each missing
 * folder.  Returns the number of warnings.
 */
int ck_watch_check(const ck_conf_t *c,
                   void (*report)(void *ud, const char *msg), void *ud);

/*
 * `ckprep status`: print to out what the daemons of c are doing (waiting,
 * queued and running files, the last `last` done and failed jobs), as
 * text for a person or one JSON object.  Reads the audit log, the claims
 * and incoming; writes and locks nothing.  Returns 0, or 1 when incoming
 * cannot be read (said on stderr).
 */
int ck_watch_status(const ck_conf_t *c, size_t last, int json, FILE *out);

#endif
