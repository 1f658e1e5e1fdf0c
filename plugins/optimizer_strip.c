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

/*
 * The walk for 'detect' visits each list and mapping once (a graph may
 * share one under many parents: a list holding the same list twice, 32
 * deep, would be 2^32 visits) and removes as it goes; what it removed is
 * reported afterwards, in the order found, because sizing a removed value
 * (ck_job_bytes_under) marks nodes with a walk of its own.
 */
typedef struct {
    char *path;
    ck_py_t *node;      /* the optimizer removed; NULL: an emptied list */
} found_t;

typedef struct {
    ck_job_t *job;
    uint32_t gen;       /* of this walk: node->wgen == gen once visited */
    found_t *v;
    size_t n, cap;
    int oom;
    char *stuck;        /* an optimizer in a tuple, or a container deeper
                           than the walk goes: found and not removed */
    const char *why;
} walk_t;

/* What detect cannot remove fails the job: never kept without a word. */
static void stuck(walk_t *w, const char *path, const char *why)
{
    if (w->stuck == NULL) {
        w->stuck = ck_strdup(*path ? path : "/");
        w->why = why;
        if (w->stuck == NULL)
            w->oom = 1;
    }
}

static int container(const ck_py_t *p)
{
    return p->kind == CK_PY_LIST || p->kind == CK_PY_TUPLE ||
           ck_py_mapping((ck_py_t *)p) != NULL;
}

static void found(walk_t *w, const char *path, ck_py_t *node)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        found_t *v = ck_realloc(w->v, cap * sizeof(*v));

        if (v == NULL) {
            w->oom = 1;
            return;
        }
        w->v = v;
        w->cap = cap;
    }
    w->v[w->n].path = ck_strdup(path);
    w->v[w->n].node = node;
    if (w->v[w->n].path == NULL)
        w->oom = 1;
    else
        w->n++;
}

/* 1 the first time node is reached in this walk. */
static int first_visit(walk_t *w, ck_py_t *node)
{
    if (node->wgen == w->gen)
        return 0;
    node->wgen = w->gen;
    return 1;
}

static void detect(walk_t *w, ck_py_t *node, const char *path, int depth);

/* Returns 1 when the list ended up empty after removals. */
static int detect_list(walk_t *w, ck_py_t *list, const char *path, int depth)
{
    ck_py_vec_t *v = &list->u.seq;
    size_t before = v->n;
    char sub[1024];

    if (depth > 32) {
        stuck(w, path, "nested deeper than 32 levels: not looked into");
        return 0;
    }
    if (!first_visit(w, list))
        return 0;
    for (size_t j = v->n; j-- > 0;) {
        snprintf(sub, sizeof(sub), "%s/%zu", path, j);
        if (is_optimizer(v->v[j])) {
            found(w, sub, v->v[j]);
            ck_py_vec_remove(v, j, 1);
        } else if (v->v[j]->kind == CK_PY_LIST) {
            if (detect_list(w, v->v[j], sub, depth + 1)) {
                found(w, sub, NULL);
                ck_py_vec_remove(v, j, 1);
            }
        } else {
            detect(w, v->v[j], sub, depth + 1);
        }
    }
    return before > 0 && v->n == 0;
}

static void detect(walk_t *w, ck_py_t *node, const char *path, int depth)
{
    ck_py_vec_t *m = ck_py_mapping(node);
    char sub[1024];

    if (depth > 32) {
        if (container(node))
            stuck(w, path, "nested deeper than 32 levels: not looked into");
        return;
    }
    if (node->kind == CK_PY_LIST) {
        detect_list(w, node, path, depth);
        return;
    }
    if (node->kind == CK_PY_TUPLE) {
        /* a tuple cannot lose an item in place (Python's edit rebuilds
         * it): an optimizer in one is named, not removed */
        if (!first_visit(w, node))
            return;
        for (size_t j = 0; j < node->u.seq.n; j++) {
            snprintf(sub, sizeof(sub), "%s/%zu", path, j);
            if (is_optimizer(node->u.seq.v[j]))
                stuck(w, sub, "an optimizer state dict inside a tuple: "
                              "drop the tuple with drop =");
            else
                detect(w, node->u.seq.v[j], sub, depth + 1);
        }
        return;
    }
    if (m == NULL || !first_visit(w, node))
        return;
    for (size_t i = m->n / 2; i-- > 0;) {
        ck_py_t *k = m->v[2 * i], *v = m->v[2 * i + 1];

        if (k->kind == CK_PY_STR)
            join(sub, sizeof(sub), path, k->u.s.s, k->len);
        else
            join(sub, sizeof(sub), path, "?", 1);
        if (is_optimizer(v)) {
            found(w, sub, v);
            ck_py_vec_remove(m, 2 * i, 2);
        } else if (v->kind == CK_PY_LIST) {
            if (detect_list(w, v, sub, depth + 1)) {
                found(w, sub, NULL);
                ck_py_vec_remove(m, 2 * i, 2);
            }
        } else {
            detect(w, v, sub, depth + 1);
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
    if (cf->detect) {
        walk_t w = { job, ck_py_next_gen(), NULL, 0, 0, 0, NULL, NULL };

        detect(&w, root, "", 0);
        for (size_t i = 0; i < w.n; i++) {
            report(job, w.v[i].path,
                   w.v[i].node ? ck_job_bytes_under(job, w.v[i].node) : 0);
            ck_free(w.v[i].path);
        }
        ck_free(w.v);
        if (w.oom) {
            ck_free(w.stuck);
            return ck_job_fail(job, CK_ENOMEM, "out of memory");
        }
        if (w.stuck != NULL) {
            int rc = ck_job_fail(job, CK_EPLUGIN, "detect: %s: %s", w.stuck,
                                 w.why);

            ck_free(w.stuck);
            return rc;
        }
    }
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
