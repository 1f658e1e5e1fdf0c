/*
 * optimizer_strip -- drop training-only state: the top-level keys named in
 * 'drop', and (with 'detect') every optimizer state dict found anywhere in
 * the graph, recognised by its shape: a dict with 'state' and
 * 'param_groups' (Lightning's optimizer_states entries, optimizers nested
 * in AudioCraft's adv_losses).  A list emptied by the removal goes too.
 * Storages no longer referenced are not written, so the output shrinks.
 */
#include "plugin.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    ck_strlist_t drop;
    int detect;
} strip_conf_t;

static const ck_directive_t strip_directives[] = {
    { "drop", ck_conf_set_words, offsetof(strip_conf_t, drop),
      "optimizer lr_scheduler scaler ema", CK_DIR_MULTI,
      "top-level keys to remove; absent keys are skipped" },
    { "detect", ck_conf_set_bool, offsetof(strip_conf_t, detect), "yes", 0,
      "also remove optimizer state dicts found anywhere" },
    { NULL, NULL, 0, NULL, 0, NULL },
};

static void report(ck_job_t *job, const char *path, uint64_t bytes)
{
    ck_job_report(job, "removed", CK_F_STR("path", path),
                  CK_F_U64("bytes", bytes));
}

static int is_optimizer(ck_py_t *v)
{
    return ck_py_mapping(v) != NULL && ck_py_map_get(v, "state", NULL) != NULL &&
           ck_py_map_get(v, "param_groups", NULL) != NULL;
}

static void join(char *out, size_t n, const char *path, const char *key,
                 size_t klen)
{
    snprintf(out, n, "%s%s%.*s", path, *path ? "/" : "", (int)klen, key);
}

static void detect(ck_job_t *job, ck_py_t *node, const char *path, int depth);

/* Returns 1 when the list ended up empty after removals. */
static int detect_list(ck_job_t *job, ck_py_t *list, const char *path,
                       int depth)
{
    ck_py_vec_t *v = &list->u.seq;
    size_t before = v->n;
    char sub[1024];

    if (depth > 32)
        return 0;
    for (size_t j = v->n; j-- > 0;) {
        snprintf(sub, sizeof(sub), "%s/%zu", path, j);
        if (is_optimizer(v->v[j])) {
            report(job, sub, ck_job_bytes_under(job, v->v[j]));
            ck_py_vec_remove(v, j, 1);
        } else if (v->v[j]->kind == CK_PY_LIST) {
            if (detect_list(job, v->v[j], sub, depth + 1)) {
                report(job, sub, 0);
                ck_py_vec_remove(v, j, 1);
            }
        } else {
            detect(job, v->v[j], sub, depth + 1);
        }
    }
    return before > 0 && v->n == 0;
}

static void detect(ck_job_t *job, ck_py_t *node, const char *path, int depth)
{
    ck_py_vec_t *m = ck_py_mapping(node);
    char sub[1024];

    if (depth > 32)
        return;
    if (node->kind == CK_PY_LIST) {
        detect_list(job, node, path, depth);
        return;
    }
    if (m == NULL)
        return;
    for (size_t i = m->n / 2; i-- > 0;) {
        ck_py_t *k = m->v[2 * i], *v = m->v[2 * i + 1];

        if (k->kind == CK_PY_STR)
            join(sub, sizeof(sub), path, k->u.s.s, k->u.s.n);
        else
            join(sub, sizeof(sub), path, "?", 1);
        if (is_optimizer(v)) {
            report(job, sub, ck_job_bytes_under(job, v));
            ck_py_vec_remove(m, 2 * i, 2);
        } else if (v->kind == CK_PY_LIST) {
            if (detect_list(job, v, sub, depth + 1)) {
                report(job, sub, 0);
                ck_py_vec_remove(m, 2 * i, 2);
            }
        } else {
            detect(job, v, sub, depth + 1);
        }
    }
}

static int strip_run(ck_job_t *job, void *conf)
{
    strip_conf_t *cf = conf;
    ck_py_t *root = ck_job_root(job);
    ck_py_vec_t *m = ck_py_mapping(root);

    if (m == NULL)
        return ck_job_fail(job, CK_EPLUGIN, "the checkpoint is not a dict");
    for (size_t d = 0; d < cf->drop.n; d++) {
        size_t i;
        ck_py_t *v = ck_py_map_get(root, cf->drop.v[d], &i);

        if (v == NULL)
            continue;
        report(job, cf->drop.v[d], ck_job_bytes_under(job, v));
        ck_py_vec_remove(m, 2 * i, 2);
    }
    if (cf->detect)
        detect(job, root, "", 0);
    return 0;
}

const ck_plugin_t ck_plugin_optimizer_strip = {
    .name = "optimizer_strip",
    .summary = "drop optimizer, scheduler, scaler and EMA state",
    .conf_size = sizeof(strip_conf_t),
    .directives = strip_directives,
    .init_conf = NULL,
    .run = strip_run,
};
