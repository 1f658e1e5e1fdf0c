/*
 * prefix_select -- keep part of a state dict: keys starting with one of
 * 'keep' (all when empty), minus keys starting with one of 'drop';
 * with 'strip', the matched keep prefix is removed from each kept key.  The
 * state dict's _metadata (module names, no trailing dot) is filtered and
 * stripped the same way.  A keep prefix that matches nothing fails the job:
 * a typo must not silently produce an empty model.
 */
#include "job.h"

#include <string.h>

typedef struct {
    char *state;
    ck_strlist_t keep, drop;
    int strip;
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
    { NULL, NULL, 0, NULL, 0, NULL },
};

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
        for (size_t i = 0; i < cf->keep.n; i++)
            if (cf->keep.v[i] == p)
                matched[i] = 1;
    }
    if (prefix_of(&cf->drop, key) != NULL)
        return 0;
    if (cf->strip && p != NULL)
        *cut = strlen(p);
    return 1;
}

static void report_key(ck_job_t *job, const char *op, const char *state,
                       const char *key, const char *to, ck_py_t *value)
{
    ck_json_obj(job->changes);
    ck_json_key(job->changes, "op");
    ck_json_str(job->changes, op);
    ck_json_key(job->changes, "state");
    ck_json_str(job->changes, state);
    ck_json_key(job->changes, "key");
    ck_json_str(job->changes, key);
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

    for (size_t i = m->n / 2; i-- > 0;) {
        ck_py_t *k = m->v[2 * i];
        const char *name;
        size_t cut;

        if (k->kind != CK_PY_STR) {
            ck_py_vec_remove(m, 2 * i, 2);
            continue;
        }
        name = k->u.s.s;
        if (metadata) {
            if (k->u.s.n + 2 > sizeof(buf))
                continue;
            memcpy(buf, k->u.s.s, k->u.s.n);
            buf[k->u.s.n] = k->u.s.n ? '.' : '\0';
            buf[k->u.s.n + 1] = '\0';
            name = buf;
        }
        if (!decide(cf, name, &cut, matched)) {
            if (!metadata)
                report_key(job, "removed", cf->state, k->u.s.s, NULL,
                           m->v[2 * i + 1]);
            ck_py_vec_remove(m, 2 * i, 2);
            continue;
        }
        if (cut > 0) {
            size_t n = strlen(name) - cut;
            ck_py_t *nk;

            if (metadata && n > 0 && name[cut + n - 1] == '.')
                n--; /* drop the trailing dot again */
            nk = ck_py_str(a, name + cut, n);
            if (nk == NULL)
                return ck_err_set(job->err, CK_ENOMEM, "out of memory");
            if (!metadata)
                report_key(job, "renamed", cf->state, k->u.s.s, nk->u.s.s,
                           NULL);
            m->v[2 * i] = nk;
        }
    }
    return 0;
}

static int select_run(ck_job_t *job, void *conf)
{
    select_conf_t *cf = conf;
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

const ck_plugin_t ck_plugin_prefix_select = {
    .name = "prefix_select",
    .summary = "keep part of a state dict, by key prefix",
    .conf_size = sizeof(select_conf_t),
    .directives = select_directives,
    .init_conf = NULL,
    .run = select_run,
};
