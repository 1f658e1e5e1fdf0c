/*
 * manifest.h -- what a state dict must hold: each key's dtype and shape,
 * plus the config's dotted keys.  Read from a manifest (JSON written by
 * `ckprep inspect --manifest` or by two lines of Python from
 * model.state_dict(); README: "Manifests") or from a checkpoint whose state
 * dict is the reference.  The expect plugin checks a job against one
 * (plugin.h declares ck_manifest_t and ck_manifest_load).
 */
#ifndef CK_MANIFEST_H
#define CK_MANIFEST_H

#include "ckpt.h"

#define CK_MANIFEST_FORMAT "ckprep-manifest"
#define CK_MANIFEST_VERSION 1

/*
 * The state dict at alts: '|'-separated '/' paths tried in order
 * ("best_state/model|model|state_dict"); "/" or "" is the root.  *chosen
 * gets the path that matched.  NULL when none holds a mapping.
 */
ck_py_t *ck_state_find(ck_ckpt_t *c, const char *alts, const char **chosen);

/*
 * Read the manifest at path (a JSON manifest, or a checkpoint whose state
 * dict at state is the reference, opened with opts)
 * into a, everything in a.  0, or an error in err naming path and the
 * cause.
 */
int ck_manifest_read(ck_arena_t *a, const char *path, const char *state,
                     const ck_open_opts_t *opts, ck_manifest_t **out,
                     ck_err_t *err);

#endif
