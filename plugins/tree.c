/*
 * tree -- copy, move and delete whole sub-trees of the checkpoint, in the
 * order the lines are given:
 *
 *   copy   = SRC => DST    pkg[DST] = pkg[SRC]: the same objects, so no
 *                          tensor byte is duplicated and torch.load shows
 *                          both paths as the same tensors
 *   move   = SRC => DST    the same, then SRC is removed
 *   delete = PATH          del pkg[PATH]
 *
 * Paths are '/'-separated mapping keys.  A SRC (or PATH) ending in '?' is
 * optional: when missing the line is skipped (and reported so); otherwise
 * a missing one fails the job.  An existing DST fails unless on_exists =
 * replace, which puts the new value in the old one's place; the levels
 * above DST are made as plain dicts when missing.  Each line is reported
 * with the bytes of the storages under what it copied, moved or deleted.
 */
#include "plugin.h"

#include <stdio.h>
#include <string.h>

enum { OP_COPY, OP_MOVE, OP_DELETE };
enum { EXISTS_FAIL, EXISTS_REPLACE };

typedef struct {
    int op;
    int optional;
    char *src, *dst; /* dst NULL for delete */
} op_t;

typedef struct {
    ck_conf_list_t ops;
    int on_exists;
} tree_conf_t;

static const char *const op_names[] = { "copied", "moved", "deleted" };

static int check_path(ck_conf_ctx_t *cx, const char *what, const char *p)
{
    size_t n = strlen(p);
    int bad = n == 0 || p[0] == '/' || p[n - 1] == '/' || strstr(p, "//");

    if (bad)
        return ck_err_set(cx->err, CK_ECONFIG,
                          "%s: '%s' is not a path of keys separated by '/'",
                          what, p);
    return 0;
}

static char *trimmed(ck_conf_ctx_t *cx, const char *s, size_t n)
{
    while (n > 0 && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    return ck_arena_strndup(cx->arena, s, n);
}

/* One line: copy, move (SRC => DST) or delete (PATH), each with '?'. */
static int set_op(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                  const char *v)
{
    tree_conf_t *cf = conf;
    op_t *o = ck_arena_alloc(cx->arena, sizeof(*o));
    const char *arrow = strstr(v, "=>");
    size_t n;

    if (o == NULL)
        return ck_err_set(cx->err, CK_ENOMEM, "out of memory");
    o->op = strcmp(d->name, "copy") == 0   ? OP_COPY
            : strcmp(d->name, "move") == 0 ? OP_MOVE
                                           : OP_DELETE;
    if ((o->op == OP_DELETE) != (arrow == NULL))
        return ck_err_set(cx->err, CK_ECONFIG,
                          o->op == OP_DELETE ? "delete: '%s' is not one path"
                                             : "%s: '%s' is not SRC => DST",
                          o->op == OP_DELETE ? v : d->name, v);
    o->src = trimmed(cx, v, arrow ? (size_t)(arrow - v) : strlen(v));
    o->dst = arrow ? trimmed(cx, arrow + 2, strlen(arrow + 2)) : NULL;
    if (o->src == NULL || (arrow && o->dst == NULL))
        return ck_err_set(cx->err, CK_ENOMEM, "out of memory");
    n = strlen(o->src);
    if (n > 0 && o->src[n - 1] == '?') {
        o->optional = 1;
        o->src[n - 1] = '\0';
    }
    if (check_path(cx, d->name, o->src) < 0 ||
        (o->dst && check_path(cx, d->name, o->dst) < 0))
        return CK_ECONFIG;
    if (o->dst != NULL && o->op == OP_MOVE &&
        strncmp(o->dst, o->src, strlen(o->src)) == 0 &&
        o->dst[strlen(o->src)] == '/')
        return ck_err_set(cx->err, CK_ECONFIG,
                          "move: '%s' is inside '%s', which it moves", o->dst,
                          o->src);
    return ck_conf_list_add(cx, &cf->ops, o);
}

static const ck_conf_enum_t exists_names[] = {
    { "fail", EXISTS_FAIL }, { "replace", EXISTS_REPLACE }, { NULL, 0 },
};

static const ck_directive_t tree_directives[] = {
    { "copy", set_op, offsetof(tree_conf_t, ops), NULL, CK_DIR_MULTI,
      "SRC => DST: DST becomes the same objects as SRC ('SRC?': optional)" },
    { "move", set_op, offsetof(tree_conf_t, ops), NULL, CK_DIR_MULTI,
      "SRC => DST: as copy, then SRC is removed" },
    { "delete", set_op, offsetof(tree_conf_t, ops), NULL, CK_DIR_MULTI,
      "PATH: removed ('PATH?': optional)" },
    { "on_exists", ck_conf_set_enum, offsetof(tree_conf_t, on_exists), "fail",
      0, "an existing DST: fail or replace", exists_names },
    { NULL, NULL, 0, NULL, 0, NULL },
};

/* Split path into its parent ("" for the top) and last key. */
static void split_path(const char *path, char *parent, size_t n,
                       const char **last)
{
    const char *slash = strrchr(path, '/');

    if (slash == NULL) {
        parent[0] = '\0';
        *last = path;
        return;
    }
    snprintf(parent, n, "%.*s", (int)(slash - path), path);
    *last = slash + 1;
}

/* The pair index of key in mapping items m, or SIZE_MAX. */
static size_t find_key(ck_py_vec_t *m, const char *key)
{
    for (size_t i = 0; i + 1 < m->n; i += 2)
        if (ck_py_str_eq(m->v[i], key))
            return i;
    return SIZE_MAX;
}

/* The mapping at path, made (as plain dicts, level by level) if missing. */
static int parent_items(ck_job_t *job, const char *path, ck_py_vec_t **items)
{
    char up[1024];
    const char *last;
    ck_py_vec_t *pm;
    ck_py_t *d, *k;
    int rc;

    if (path[0] == '\0' || ck_job_get(job, path) != NULL)
        return ck_job_mapping(job, path, NULL, items);
    split_path(path, up, sizeof(up), &last);
    rc = parent_items(job, up, &pm);
    if (rc < 0)
        return rc;
    d = ck_py_new(ck_job_arena(job), CK_PY_DICT);
    k = ck_py_str(ck_job_arena(job), last, strlen(last));
    if (d == NULL || k == NULL || ck_py_vec_push(ck_job_arena(job), pm, k) < 0 ||
        ck_py_vec_push(ck_job_arena(job), pm, d) < 0)
        return ck_job_nomem(job);
    *items = &d->u.seq;
    return 0;
}

static int remove_path(ck_job_t *job, const char *path)
{
    char up[1024];
    const char *last;
    ck_py_vec_t *m;
    size_t i;
    int rc;

    split_path(path, up, sizeof(up), &last);
    rc = ck_job_mapping(job, up, NULL, &m);
    if (rc < 0)
        return rc;
    i = find_key(m, last);
    if (i != SIZE_MAX)
        ck_py_vec_remove(m, i, 2);
    return 0;
}

static int put_path(ck_job_t *job, const tree_conf_t *cf, const char *path,
                    ck_py_t *v, int *replaced)
{
    char up[1024];
    const char *last;
    ck_py_vec_t *m;
    ck_py_t *k;
    size_t i;
    int rc;

    split_path(path, up, sizeof(up), &last);
    rc = parent_items(job, up, &m);
    if (rc < 0)
        return rc;
    i = find_key(m, last);
    *replaced = i != SIZE_MAX;
    if (i != SIZE_MAX) {
        if (cf->on_exists != EXISTS_REPLACE)
            return ck_job_fail(job, CK_EPLUGIN,
                               "'%s' exists (on_exists = replace to replace "
                               "it)", path);
        m->v[i + 1] = v;
        return 0;
    }
    k = ck_py_str(ck_job_arena(job), last, strlen(last));
    if (k == NULL || ck_py_vec_push(ck_job_arena(job), m, k) < 0 ||
        ck_py_vec_push(ck_job_arena(job), m, v) < 0)
        return ck_job_nomem(job);
    return 0;
}

static int tree_run(ck_job_t *job, void *conf)
{
    tree_conf_t *cf = conf;

    for (size_t i = 0; i < cf->ops.n; i++) {
        const op_t *o = cf->ops.v[i];
        ck_py_t *v = ck_job_get(job, o->src);
        uint64_t bytes;
        int rc, replaced = 0;

        if (v == NULL && o->optional) {
            ck_job_report(job, "skipped", CK_F_STR("path", o->src),
                          CK_F_STR("to", o->dst),
                          CK_F_STR("reason", "missing"));
            continue;
        }
        if (v == NULL)
            return ck_job_fail(job, CK_EPLUGIN, "no '%s' in the checkpoint "
                               "(write '%s?' to skip it when missing)",
                               o->src, o->src);
        if (o->dst != NULL && strcmp(o->src, o->dst) == 0)
            continue;
        bytes = ck_job_bytes_under(job, v);
        if (o->dst != NULL) {
            rc = put_path(job, cf, o->dst, v, &replaced);
            if (rc < 0)
                return rc;
        }
        if (o->op != OP_COPY) {
            rc = remove_path(job, o->src);
            if (rc < 0)
                return rc;
        }
        ck_job_report(job, op_names[o->op], CK_F_STR("path", o->src),
                      CK_F_STR("to", o->dst), CK_F_U64("bytes", bytes),
                      CK_F_BOOL("replaced", replaced));
    }
    return 0;
}

const ck_plugin_t ck_plugin_tree = {
    .name = "tree",
    .summary = "copy, move and delete whole sub-trees",
    .conf_size = sizeof(tree_conf_t),
    .directives = tree_directives,
    .init_conf = NULL,
    .run = tree_run,
};
