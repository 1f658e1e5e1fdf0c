/*
 * listing.h -- the detailed views of `ckprep inspect` (--tensors, --config,
 * --manifest) and the tensor walk `ckprep diff` shares.  See listing.c.
 */
#ifndef CK_LISTING_H
#define CK_LISTING_H

#include "inspect.h"

#include <stdio.h>

typedef struct {
    const char *glob; /* fnmatch pattern on tensor keys, NULL for all */
    int bytes;        /* exact byte counts instead of human sizes */
} ck_listing_opts_t;

/*
 * Called for each tensor reachable from the root through mappings, lists
 * and tuples (16 levels; past 2^22 containers, a container shared many
 * times over, CK_ELIMIT), in the pickle's order: group is the '/' path of
 * the container ("/" for the root), k[0..kn) the key in it (an int key or
 * a list index in decimal), node the rebuild call or Parameter.  A
 * nonzero return stops the walk and is returned.
 */
typedef int (*ck_listing_cb)(void *ud, const char *group, const char *k,
                             size_t kn, const ck_tensor_t *t, ck_py_t *node);

/* Walk the tensors under from (NULL: the root). */
int ck_listing_walk(ck_ckpt_t *c, ck_py_t *from, ck_listing_cb cb, void *ud);


/* The members "key", "dtype", "shape" of t, in the open object j. */
void ck_listing_brief(ck_json_t *j, const char *k, size_t kn,
                      const ck_tensor_t *t);

/* Text with control characters and '\' escaped. */
void ck_listing_put(FILE *out, const char *s, size_t n);

/*
 * --tensors: one line per tensor grouped by container (text to out), or,
 * with j not NULL, a "tensors" member (an array of objects: state, key,
 * dtype, shape, numel, bytes, storage, offset, stride (null when
 * contiguous), parameter, requires_grad, shared) in the open object j.
 */
int ck_listing_tensors(ck_ckpt_t *c, const ck_listing_opts_t *o, FILE *out,
                       ck_json_t *j);

/*
 * The checkpoint's config (the first top-level config inspect finds) as a
 * YAML tree in c's arena, typed as OmegaConf loads it; *key names the
 * top-level key.  NULL with err set when there is none.
 */
ck_yval_t *ck_listing_config(ck_ckpt_t *c, const char **key, ck_err_t *err);

/*
 * --config[=PATH]: the config (or its sub-tree at dotted PATH: "optim",
 * "model.layers[0]") as OmegaConf.to_yaml prints it, or with j not NULL the
 * members "config_key" and "config" (a JSON tree) in the open object j.
 */
int ck_listing_config_out(ck_ckpt_t *c, const char *path, FILE *out,
                          ck_json_t *j, ck_err_t *err);

/* Called for each leaf of a config tree (a scalar, a sequence, an empty
 * mapping) with its dotted path; nonzero stops. */
typedef int (*ck_leaf_cb)(void *ud, const char *path, const ck_yval_t *v);
int ck_listing_leaves(ck_arena_t *a, const ck_yval_t *v, ck_leaf_cb cb,
                      void *ud);

/* --manifest: the manifest of the state dict at state (alternatives
 * separated by '|') as one JSON object in j (README: "Manifests"). */
int ck_listing_manifest(ck_ckpt_t *c, const char *state, ck_json_t *j,
                        ck_err_t *err);

/* What `ckprep inspect` was asked for beyond its summary. */
typedef struct {
    int json;
    int tensors;              /* --tensors[=GLOB] (lo.glob) */
    ck_listing_opts_t lo;
    int config;               /* --config[=PATH] */
    const char *config_path;
    const char *manifest;     /* --manifest[=STATE]: the state alternatives */
} ck_listing_req_t;

/* Print the views r asks for to out: text, or one JSON document (the
 * manifest is always JSON).  0, or an error in err. */
int ck_listing_print(ck_ckpt_t *c, const ck_listing_req_t *r, FILE *out,
                     ck_err_t *err);

#endif
