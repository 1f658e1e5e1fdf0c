/*
 * inspect.h -- `ckprep inspect`: what a checkpoint holds, for a person or
 * (as one JSON document) for a program.
 */
#ifndef CK_INSPECT_H
#define CK_INSPECT_H

#include "ckpt.h"
#include "json.h"

#include <stdio.h>

/* Describe an opened and validated checkpoint. */
int ck_inspect_json(ck_ckpt_t *c, ck_json_t *j);
int ck_inspect_text(ck_ckpt_t *c, FILE *out);

/* The same for a checkpoint refused (refused: why) after its pickle was
 * read: what validation got to, with "validation refused: WHY". */
int ck_inspect_json_as(ck_ckpt_t *c, const char *refused, ck_json_t *j);
int ck_inspect_text_as(ck_ckpt_t *c, const char *refused, FILE *out);

/* The value of the first top-level config key (xp.cfg, cfg, config,
 * hyper_parameters, hparams, or any DictConfig) and its name, or NULL. */
ck_py_t *ck_inspect_config_value(ck_ckpt_t *c, const char **key);

/* b bytes as "512 B", "1.5 KiB", "3.0 GiB" into buf. */
void ck_inspect_human(char *buf, size_t n, uint64_t b);

/* A short name for what a value is: "dict", "OrderedDict", "tensor", ... */
const char *ck_inspect_kind(ck_ckpt_t *c, ck_py_t *p);

#endif
