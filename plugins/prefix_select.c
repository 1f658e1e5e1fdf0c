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
#include "job.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    char *state;
    ck_strlist_t keep, drop;
    int strip;
    char *root;
} select_conf_t;

static const ck_directive_t select_directives[] = {
    { "state", ck_conf_set_str, offsetof(select_conf_t, state),
      "best_state/model", 0, "the state dict to filter (a / path)" },
    { "keep", ck_conf_set_words, offsetof(select_conf_t, keep), NULL,
      CK_DIR_MULTI, "keep only keys starting with one of these" },
    { "drop", ck_conf_set_words, offsetof(select_conf_t, drop), NULL,
      CK_DIR_MULTI, "then remove keys starting with one of these" },
    { "strip", ck_conf_set_bool, offsetof(select_conf_t, strip), "no", 0,
      "remove the matched keep prefix from kept keys" },
    { "root", ck_conf_set_str, offsetof(select_conf_t, root), NULL, 0,
      "then make the dict at this / path the whole checkpoint" },
    { NULL, NULL, 0, NULL, 0, NULL },
};

/*
 * An empty root is no root.  A state dict filtered outside the new root
 * would be dropped with the rest: a mistake, refused here.
 */
static int select_init(void *conf, ck_err_t *err)
{
    select_conf_t *cf = conf;
    size_t n;

    if (cf->root == NULL)
        return 0;
    n = strlen(cf->root);
    while (n > 0 && cf->root[n - 1] == '/')
        cf->root[--n] = '\0';
    if (n == 0) {
        cf->root = NULL;
        return 0;
    }
    if ((cf->keep.n > 0 || cf->drop.n > 0) &&
        (strncmp(cf->state, cf->root, n) != 0 ||
         (cf->state[n] != '\0' && cf->state[n] != '/')))
        return ck_err_set(err, CK_ECONFIG,
                          "state '%s' is not inside root '%s': its keys "
                          "would be dropped with the rest",
                          cf->state, cf->root);
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

/* The Python type of a key, for keys that are not a str. */
static const char *key_type(const ck_py_t *k)
{
    switch ((ck_py_kind_t)k->kind) {
    case CK_PY_NONE: return "NoneType";
    case CK_PY_BOOL: return "bool";
    case CK_PY_INT: return "int";
    case CK_PY_FLOAT: return "float";
    case CK_PY_STR: return "str";
    case CK_PY_BYTES: return "bytes";
    case CK_PY_TUPLE: return "tuple";
    case CK_PY_FROZENSET: return "frozenset";
    default: return "object";
    }
}

/* A key as JSON: a str, an int within int64, a float, a bool or None as
 * itself; anything else as "<TYPE>". */
static void json_key(ck_json_t *j, const ck_py_t *k)
{
    char t[32];

    switch ((ck_py_kind_t)k->kind) {
    case CK_PY_STR: ck_json_strn(j, k->u.s.s, k->u.s.n); return;
    case CK_PY_NONE: ck_json_null(j); return;
    case CK_PY_BOOL: ck_json_bool(j, k->b); return;
    case CK_PY_FLOAT: ck_json_double(j, ck_py_float_value(k)); return;
    case CK_PY_INT:
        if (k->u.i.nbig == 0) {
            ck_json_int(j, k->u.i.v);
            return;
        }
        /* fall through */
    default:
        snprintf(t, sizeof(t), "<%s>", key_type(k));
        ck_json_str(j, t);
    }
}

static void report_key(ck_job_t *job, const char *op, const char *state,
                       const ck_py_t *key, const char *to, ck_py_t *value)
{
    ck_json_obj(job->changes);
    ck_json_key(job->changes, "op");
    ck_json_str(job->changes, op);
    ck_json_key(job->changes, "state");
    ck_json_str(job->changes, state);
    ck_json_key(job->changes, "key");
    json_key(job->changes, key);
    if (key->kind != CK_PY_STR) {
        ck_json_key(job->changes, "key_type");
        ck_json_str(job->changes, key_type(key));
        ck_json_key(job->changes, "reason");
        ck_json_str(job->changes, "not a str: starts with no prefix");
    }
    if (to != NULL) {
        ck_json_key(job->changes, "to");
        ck_json_str(job->changes, to);
    }
    if (value != NULL) {
        ck_json_key(job->changes, "bytes");
        ck_json_u64(job->changes, ck_ckpt_bytes_under(&job->ck, value));
    }
    ck_json_end(job->changes);
}

static int filter(ck_job_t *job, select_conf_t *cf, ck_py_vec_t *m,
                  int metadata, int *matched)
{
    ck_arena_t *a = &job->ck.arena;
    char buf[4096];
    size_t o = 0;
    int rc = 0;

    /* a removed pair is marked (NULL key) and squeezed out after the loop:
     * one pass over a state dict of 10^5 keys, not a memmove per key */
    for (size_t i = m->n / 2; i-- > 0;) {
        ck_py_t *k = m->v[2 * i];
        const char *name;
        size_t cut;

        if (k->kind != CK_PY_STR) { /* it matches no prefix */
            if (!metadata)
                report_key(job, cf->keep.n ? "removed" : "kept", cf->state,
                           k, NULL, cf->keep.n ? m->v[2 * i + 1] : NULL);
            if (cf->keep.n)
                m->v[2 * i] = NULL;
            continue;
        }
        name = k->u.s.s;
        if (metadata) {
            char *nb = k->u.s.n + 2 > sizeof(buf)
                           ? ck_arena_alloc(a, k->u.s.n + 2) : buf;

            if (nb == NULL) {
                rc = ck_err_set(job->err, CK_ENOMEM, "out of memory");
                break;
            }
            memcpy(nb, k->u.s.s, k->u.s.n);
            nb[k->u.s.n] = k->u.s.n ? '.' : '\0';
            nb[k->u.s.n + 1] = '\0';
            name = nb;
        }
        if (!decide(cf, name, &cut, matched)) {
            if (!metadata)
                report_key(job, "removed", cf->state, k, NULL,
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
                rc = ck_err_set(job->err, CK_ENOMEM, "out of memory");
                break;
            }
            if (!metadata)
                report_key(job, "renamed", cf->state, k, nk->u.s.s, NULL);
            m->v[2 * i] = nk;
        }
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

static int select_state(ck_job_t *job, select_conf_t *cf)
{
    ck_py_t *sd;
    ck_py_vec_t *m, *md;
    int matched[256] = { 0 };
    int rc;

    if (cf->keep.n > CK_ARRAY_SIZE(matched))
        return ck_err_set(job->err, CK_EPLUGIN, "prefix_select: too many keep prefixes");
    rc = ck_ckpt_mapping(&job->ck, cf->state, &sd, &m, job->err);
    if (rc < 0)
        return rc;
    rc = filter(job, cf, m, 0, matched);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < cf->keep.n; i++)
        if (!matched[i])
            return ck_err_set(job->err, CK_EPLUGIN,
                              "prefix_select: keep prefix '%s' matches no key of %s",
                              cf->keep.v[i], cf->state);
    md = ck_ckpt_metadata(sd);
    if (md != NULL)
        rc = filter(job, cf, md, 1, matched);
    return rc;
}

/* The mapping at path becomes the top of the graph; reported with the
 * top-level keys dropped and the storage bytes no longer referenced. */
static int reroot(ck_job_t *job, const char *path)
{
    ck_ckpt_t *ck = &job->ck;
    ck_py_t *node, *top = ck->pk.root;
    ck_py_vec_t *m, *tm = ck_py_mapping(top);
    size_t first = strcspn(path, "/");
    uint64_t before, after;
    int rc;

    rc = ck_ckpt_mapping(ck, path, &node, &m, job->err);
    if (rc < 0)
        return rc;
    before = ck_ckpt_bytes_under(ck, top);
    after = ck_ckpt_bytes_under(ck, node);
    ck_json_obj(job->changes);
    ck_json_key(job->changes, "op");
    ck_json_str(job->changes, "root");
    ck_json_key(job->changes, "path");
    ck_json_str(job->changes, path);
    ck_json_key(job->changes, "removed");
    ck_json_arr(job->changes);
    for (size_t i = 0; tm != NULL && i + 1 < tm->n; i += 2) {
        ck_py_t *k = tm->v[i];

        if (k->kind != CK_PY_STR)
            json_key(job->changes, k);
        else if (k->u.s.n != first || memcmp(k->u.s.s, path, first) != 0)
            ck_json_strn(job->changes, k->u.s.s, k->u.s.n);
    }
    ck_json_end(job->changes);
    ck_json_key(job->changes, "bytes");
    ck_json_u64(job->changes, before - after);
    ck_json_end(job->changes);
    ck->pk.root = node;
    return 0;
}

static int select_run(ck_job_t *job, void *conf)
{
    select_conf_t *cf = conf;
    int rc = 0;

    if (cf->root == NULL || cf->keep.n > 0 || cf->drop.n > 0)
        rc = select_state(job, cf);
    if (rc == 0 && cf->root != NULL)
        rc = reroot(job, cf->root);
    return rc;
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
