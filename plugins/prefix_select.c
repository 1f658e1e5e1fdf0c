/*
 * prefix_select -- keep part of a state dict: keys starting with one of
 * 'keep' (all when empty), minus keys starting with one of 'drop';
 * with 'strip', the matched keep prefix is removed from each kept key.  The
 * state dict's _metadata (module names, no trailing dot) is filtered and
 * stripped the same way.  A keep prefix that matches nothing fails the job:
 * a typo must not silently produce an empty model.
 *
 * A key that is not a str (an int, say: not what nn.Module.state_dict()
 * makes) starts with no prefix: with keep it is removed, with drop alone it
 * stays, untouched.  Either way the changes say so, with the key as JSON
 * (an int as a number) and its Python type: {"op": "removed" or "kept",
 * "key": 7, "key_type": "int", "reason": ...}.
 *
 * With 'root', the mapping at that path then becomes the whole checkpoint
 * and everything else is dropped, so torch.load of the output gives, say, a
 * Lightning checkpoint's state_dict itself.  Only the graph's top changes:
 * the promoted node keeps its identity, its _metadata and the tensors'
 * shared storages; storages reachable only from what was dropped are no
 * longer referenced and so are not written.  With root but neither keep nor
 * drop, nothing is filtered and 'state' is not looked at.
 */
#include "plugin.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    ck_conf_list_t state; /* ck_path_t * */
    ck_strlist_t keep, drop;
    int strip;
    ck_path_t *root;
    int replace;          /* on_conflict */
} select_conf_t;

static const ck_conf_enum_t conflict_names[] = {
    { "error", 0 },
    { "replace", 1 },
    { NULL, 0 },
};

static const ck_directive_t select_directives[] = {
    { "state", ck_conf_set_paths, offsetof(select_conf_t, state),
      "best_state/model", CK_DIR_MULTI,
      "state dicts to filter: PATH, A|B (the first), PATH? (optional)" },
    { "keep", ck_conf_set_words, offsetof(select_conf_t, keep), NULL,
      CK_DIR_MULTI, "keep only keys starting with one of these" },
    { "drop", ck_conf_set_words, offsetof(select_conf_t, drop), NULL,
      CK_DIR_MULTI, "then remove keys starting with one of these" },
    { "strip", ck_conf_set_bool, offsetof(select_conf_t, strip), "no", 0,
      "remove the matched keep prefix from kept keys" },
    { "root", ck_conf_set_path, offsetof(select_conf_t, root), NULL, 0,
      "then make the dict at this place the whole checkpoint" },
    { "on_conflict", ck_conf_set_enum, offsetof(select_conf_t, replace),
      "error", 0, "error or replace, when a stripped name is taken",
      conflict_names },
    { NULL, NULL, 0, NULL, 0, NULL },
};

/* 1 when the state dict at state lies inside (or is) root. */
static int inside(const char *state, const char *root)
{
    size_t n = strlen(root);

    return strncmp(state, root, n) == 0 &&
           (state[n] == '\0' || state[n] == '/');
}

/*
 * A state dict filtered outside the new root would be dropped with the
 * rest: a mistake, refused here when the places have one alternative each
 * (else when the job finds them).
 */
static int select_init(ck_conf_ctx_t *cx, void *conf)
{
    select_conf_t *cf = conf;

    if (cf->root == NULL && cf->keep.n == 0 && cf->drop.n == 0)
        return ck_err_set(cx->err, CK_ECONFIG,
                          "nothing to do: give keep, drop or root");
    if (cf->root != NULL && cx->next != NULL)
        return ck_err_set(cx->err, CK_ECONFIG,
                          "root makes '%s' the whole checkpoint, so '%s' "
                          "after it in the chain would not find what it "
                          "looks for: put this stage last", cf->root->text,
                          cx->next);
    if (cf->root == NULL || cf->root->nalt != 1 ||
        (cf->keep.n == 0 && cf->drop.n == 0))
        return 0;
    for (size_t i = 0; i < cf->state.n; i++) {
        const ck_path_t *p = cf->state.v[i];

        if (p->nalt == 1 && !inside(p->alt[0], cf->root->alt[0]))
            return ck_err_set(cx->err, CK_ECONFIG,
                              "state '%s' is not inside root '%s': its keys "
                              "would be dropped with the rest",
                              p->alt[0], cf->root->alt[0]);
    }
    return 0;
}

static const char *prefix_of(const ck_strlist_t *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strncmp(s, l->v[i], strlen(l->v[i])) == 0)
            return l->v[i];
    return NULL;
}

/*
 * Decide one key: returns 0 to drop it, 1 to keep it with *cut bytes
 * removed from its front.  Module names (metadata) are tested with a
 * trailing dot so "lm" is inside "lm.".
 */
static int decide(const select_conf_t *cf, const char *key, size_t *cut,
                  int *matched)
{
    const char *p = NULL;

    *cut = 0;
    if (cf->keep.n) {
        p = prefix_of(&cf->keep, key);
        if (p == NULL)
            return 0;
        for (size_t i = 0; i < cf->keep.n; i++) /* every one that matches */
            if (strncmp(key, cf->keep.v[i], strlen(cf->keep.v[i])) == 0)
                matched[i] = 1;
    }
    if (prefix_of(&cf->drop, key) != NULL)
        return 0;
    if (cf->strip && p != NULL)
        *cut = strlen(p);
    return 1;
}

/* A key not a str is reported with its Python type and why. */
static void report_key(ck_job_t *job, const char *op, const char *state,
                       const ck_py_t *key, const char *to, ck_py_t *value)
{
    ck_field_t f[6];
    size_t n = 0;

    f[n++] = CK_F_STR("state", state);
    f[n++] = CK_F_KEY("key", key);
    if (key->kind != CK_PY_STR) {
        f[n++] = CK_F_STR("key_type", ck_py_type_name(key));
        f[n++] = CK_F_STR("reason", "not a str: starts with no prefix");
    }
    if (to != NULL)
        f[n++] = CK_F_STR("to", to);
    if (value != NULL)
        f[n++] = CK_F_U64("bytes", ck_job_bytes_under(job, value));
    ck_job_report_fields(job, op, f, n);
}

/*
 * Two keys that are the same after strip fail the job, naming both: one
 * tensor would be lost.  With on_conflict = replace the later value wins,
 * in the place of the first, as in Python's {k[len(p):]: v for k, v in
 * sd.items()}, and the earlier is reported replaced.  In _metadata
 * (module versions only) the later stays likewise.  old[i] is pair i's key
 * before renaming, or NULL.
 */
static int collisions(ck_job_t *job, select_conf_t *cf, const char *state,
                      ck_py_vec_t *m, ck_py_t **old, int metadata,
                      ck_arena_t *tmp)
{
    ck_strmap_t seen = { 0 };
    size_t *holder = ck_arena_alloc(tmp, (m->n / 2 + 1) * sizeof(*holder));

    /* seen: name -> the pair that first had it; holder[that]: the pair
     * that has it now (both in tmp, released by the caller) */
    if (holder == NULL || ck_strmap_reserve(&seen, tmp, m->n / 2) < 0)
        return ck_job_nomem(job);
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        ck_py_t *k = m->v[i];
        size_t first, j;

        if (k == NULL || !ck_py_str_plain(k))
            continue;
        first = ck_strmap_get(&seen, k->u.s.s);
        if (first == SIZE_MAX) {
            if (ck_strmap_add(&seen, tmp, k->u.s.s, i / 2) < 0)
                return ck_job_nomem(job);
            holder[i / 2] = i / 2;
            continue;
        }
        j = holder[first];
        if (!metadata && !cf->replace)
            return ck_job_fail(job, CK_EPLUGIN,
                               "%s: '%s' and '%s' would both be renamed to "
                               "'%s' (on_conflict = replace keeps the later)",
                               state,
                               old[j] ? old[j]->u.s.s : k->u.s.s,
                               old[i / 2] ? old[i / 2]->u.s.s : k->u.s.s,
                               k->u.s.s);
        /* as the dict comprehension: the name keeps its first place and
         * takes the later value */
        if (!metadata)
            report_key(job, "replaced", state,
                       old[j] ? old[j] : m->v[2 * j], NULL, m->v[2 * j + 1]);
        m->v[2 * j + 1] = m->v[i + 1];
        m->v[i] = NULL;
    }
    return 0;
}

static int filter(ck_job_t *job, select_conf_t *cf, const char *state,
                  ck_py_vec_t *m, int metadata, int *matched)
{
    ck_arena_t *a = ck_job_arena(job);
    ck_py_t **old = ck_arena_alloc(a, (m->n / 2 + 1) * sizeof(*old));
    char buf[4096];
    size_t o = 0;
    int rc = 0, renamed = 0;

    if (old == NULL)
        return ck_job_nomem(job);

    /* a removed pair is marked (NULL key) and squeezed out after the loop:
     * one pass over a state dict of 10^5 keys, not a memmove per key */
    for (size_t i = 0; i < m->n / 2; i++) {
        ck_py_t *k = m->v[2 * i];
        const char *name;
        size_t cut;

        if (k->kind != CK_PY_STR) { /* it matches no prefix */
            if (!metadata)
                report_key(job, cf->keep.n ? "removed" : "kept", state,
                           k, NULL, cf->keep.n ? m->v[2 * i + 1] : NULL);
            if (cf->keep.n)
                m->v[2 * i] = NULL;
            continue;
        }
        name = k->u.s.s;
        if (metadata) {
            char *nb = (size_t)k->len + 2 > sizeof(buf)
                           ? ck_arena_alloc(a, (size_t)k->len + 2) : buf;

            if (nb == NULL) {
                rc = ck_job_nomem(job);
                break;
            }
            memcpy(nb, k->u.s.s, k->len);
            nb[k->len] = k->len ? '.' : '\0';
            nb[(size_t)k->len + 1] = '\0';
            name = nb;
        }
        if (!decide(cf, name, &cut, matched)) {
            if (!metadata)
                report_key(job, "removed", state, k, NULL,
                           m->v[2 * i + 1]);
            m->v[2 * i] = NULL;
            continue;
        }
        if (cut > 0) {
            size_t n = strlen(name) - cut;
            ck_py_t *nk;

            if (metadata && n > 0 && name[cut + n - 1] == '.')
                n--; /* drop the trailing dot again */
            nk = ck_py_str(a, name + cut, n);
            if (nk == NULL) {
                rc = ck_job_nomem(job);
                break;
            }
            if (!metadata)
                report_key(job, "renamed", state, k, nk->u.s.s, NULL);
            m->v[2 * i] = nk;
            old[i] = k;
            renamed = 1;
        }
    }
    if (rc == 0 && renamed) {
        ck_arena_t tmp = { 0 };

        rc = collisions(job, cf, state, m, old, metadata, &tmp);
        ck_arena_release(&tmp);
    }
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        if (m->v[i] != NULL) {
            m->v[o++] = m->v[i];
            m->v[o++] = m->v[i + 1];
        }
    }
    if (m->n % 2)
        m->v[o++] = m->v[m->n - 1];
    m->n = o;
    return rc;
}

/* Filter the state dict at place p; its name goes to *which. */
static int select_state(ck_job_t *job, select_conf_t *cf, const ck_path_t *p,
                        const char **which)
{
    ck_py_t *sd;
    ck_py_vec_t *m, *md;
    int *matched = ck_arena_alloc(ck_job_arena(job),
                                  (cf->keep.n + 1) * sizeof(*matched));
    int rc;

    if (matched == NULL)
        return ck_job_nomem(job);
    rc = ck_job_place(job, p, which, &sd, &m);
    if (rc <= 0)
        return rc;
    rc = filter(job, cf, *which, m, 0, matched);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < cf->keep.n; i++)
        if (!matched[i])
            return ck_job_fail(job, CK_EPLUGIN,
                               "keep prefix '%s' matches no key of %s",
                               cf->keep.v[i], *which);
    md = ck_job_metadata(job, sd);
    if (md != NULL)
        rc = filter(job, cf, *which, md, 1, matched);
    return rc < 0 ? rc : 1;
}

/* The mapping at place p becomes the top of the graph; reported with the
 * top-level keys dropped and the storage bytes no longer referenced.
 * done[0..ndone) are the state dicts filtered, which must lie inside. */
static int reroot(ck_job_t *job, const ck_path_t *p, const char **done,
                  size_t ndone)
{
    ck_py_t *node, *top = ck_job_root(job), **gone;
    ck_py_vec_t *m, *tm = ck_py_mapping(top);
    const char *path;
    size_t first, n = 0;
    uint64_t before, after;
    int rc;

    rc = ck_job_place(job, p, &path, &node, &m);
    if (rc <= 0)
        return rc;
    for (size_t i = 0; i < ndone; i++)
        if (!inside(done[i], path))
            return ck_job_fail(job, CK_EPLUGIN,
                               "state '%s' is not inside root '%s': its keys "
                               "would be dropped with the rest", done[i],
                               path);
    first = strcspn(path, "/");
    before = ck_job_bytes_under(job, top);
    after = ck_job_bytes_under(job, node);
    gone = ck_arena_alloc(ck_job_arena(job),
                          (tm != NULL ? tm->n / 2 + 1 : 1) * sizeof(*gone));
    if (gone == NULL)
        return ck_job_nomem(job);
    for (size_t i = 0; tm != NULL && i + 1 < tm->n; i += 2) {
        ck_py_t *k = tm->v[i];

        if (k->kind != CK_PY_STR || k->len != first ||
            memcmp(k->u.s.s, path, first) != 0)
            gone[n++] = k;
    }
    ck_job_report(job, "root", CK_F_STR("path", path),
                  CK_F_KEYS("removed", gone, n),
                  CK_F_U64("bytes", before - after));
    ck_job_set_root(job, node);
    return 0;
}

static int select_run(ck_job_t *job, void *conf)
{
    select_conf_t *cf = conf;
    const char **done = ck_arena_alloc(ck_job_arena(job),
                                       (cf->state.n + 1) * sizeof(*done));
    size_t ndone = 0;
    int rc = 0;

    if (done == NULL)
        return ck_job_nomem(job);
    if (cf->root == NULL || cf->keep.n > 0 || cf->drop.n > 0) {
        for (size_t i = 0; i < cf->state.n && rc >= 0; i++) {
            rc = select_state(job, cf, cf->state.v[i], &done[ndone]);
            ndone += rc == 1;
        }
    }
    if (rc >= 0 && cf->root != NULL)
        rc = reroot(job, cf->root, done, ndone);
    return rc < 0 ? rc : 0;
}

const ck_plugin_t ck_plugin_prefix_select = {
    .name = "prefix_select",
    .summary = "keep part of a state dict, by key prefix, or make a dict "
               "the top level",
    .conf_size = sizeof(select_conf_t),
    .directives = select_directives,
    .init_conf = select_init,
    .run = select_run,
};
