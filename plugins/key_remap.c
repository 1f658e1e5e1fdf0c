/*
 * key_remap -- rename state-dict keys.  Each 'rename = FROM => TO' rule is
 * applied in order to every key: a plain FROM is a prefix; 're:FROM' is a
 * POSIX extended regex whose first match is replaced by TO, with \1..\9.
 * _metadata module names are renamed with the same rules.  Renaming onto a
 * key that stays fails the job unless on_conflict = replace; a rule that
 * matches nothing is reported (and fails the job with require_match).
 */
#include "job.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RULES 64
#define KEY_MAX 4096
#define RE_MAX_UNROLLED (1u << 18)

/* names[j] of a key that another key is renamed onto (on_conflict=replace) */
static char replaced[] = "";

typedef struct {
    char *from, *to;
    int is_re;
    regex_t re;
} rule_t;

typedef struct {
    ck_strlist_t state, rename;
    char *on_conflict;
    int require_match;
    rule_t rules[MAX_RULES];
    size_t nrules;
    int replace;
} remap_conf_t;

static int check_rename(const char *value, ck_err_t *err);

static const ck_directive_t remap_directives[] = {
    { "state", ck_conf_set_words, offsetof(remap_conf_t, state),
      "best_state/model", CK_DIR_MULTI, "state dicts to rename in" },
    { "rename", ck_conf_set_lines, offsetof(remap_conf_t, rename), NULL,
      CK_DIR_MULTI, "FROM => TO (prefix) or re:FROM => TO (regex, \\1..\\9)",
      check_rename },
    { "on_conflict", ck_conf_set_str, offsetof(remap_conf_t, on_conflict),
      "error", 0, "error or replace, when a new name is taken" },
    { "require_match", ck_conf_set_bool, offsetof(remap_conf_t, require_match),
      "no", 0, "fail when a rule matches no key" },
    { NULL, NULL, 0, NULL, 0, NULL },
};

static char *trim(char *s)
{
    char *e;

    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        *--e = '\0';
    return s;
}

/*
 * glibc's regcomp unrolls '+' and {n,m} by copying what they repeat, so
 * nested repetitions grow exponentially: "a+++...+" or "((a{99}){99}){99}"
 * take gigabytes.  A bound on the unrolled size: the pattern's length times
 * the product of every repetition's count.
 */
static int re_too_big(const char *re)
{
    uint64_t size = strlen(re) + 1;

    for (const char *s = re; *s != '\0'; s++) {
        uint64_t n = 0, times = 1;

        if (*s == '\\' && s[1] != '\0') {
            s++;
        } else if (*s == '+') {
            times = 2;
        } else if (*s == '{') {
            for (; s[1] != '\0' && s[1] != '}'; s++) {
                n = s[1] >= '0' && s[1] <= '9' && n < 100000
                        ? n * 10 + (uint64_t)(s[1] - '0') : 0;
                if (n + 1 > times)
                    times = n + 1;
            }
        }
        size *= times;
        if (size > RE_MAX_UNROLLED)
            return 1;
    }
    return 0;
}

static int remap_init(void *conf, ck_err_t *err)
{
    remap_conf_t *cf = conf;

    if (strcmp(cf->on_conflict, "error") != 0 &&
        strcmp(cf->on_conflict, "replace") != 0)
        return ck_err_set(err, CK_ECONFIG,
                          "on_conflict: '%s' is not error or replace",
                          cf->on_conflict);
    cf->replace = cf->on_conflict[0] == 'r';
    if (cf->rename.n > MAX_RULES)
        return ck_err_set(err, CK_ECONFIG, "more than %d rename rules", MAX_RULES);
    for (size_t i = 0; i < cf->rename.n; i++) {
        rule_t *r = &cf->rules[cf->nrules];
        char *line = cf->rename.v[i], *arrow = strstr(line, "=>");

        if (arrow == NULL)
            return ck_err_set(err, CK_ECONFIG, "rename: '%s' is not FROM => TO",
                              line);
        *arrow = '\0';
        r->from = trim(line);
        r->to = trim(arrow + 2);
        if (strncmp(r->from, "re:", 3) == 0) {
            int rc;

            r->from += 3;
            if (re_too_big(r->from))
                return ck_err_set(err, CK_ECONFIG, "rename: regex '%s' "
                                  "repeats too much", r->from);
            rc = regcomp(&r->re, r->from, REG_EXTENDED);
            if (rc != 0) {
                char msg[128];

                regerror(rc, &r->re, msg, sizeof(msg));
                return ck_err_set(err, CK_ECONFIG, "rename: regex '%s': %s",
                                  r->from, msg);
            }
            /* a conf is never released: each job compiles its own */
            regfree(&r->re);
            r->is_re = 1;
        } else if (*r->from == '\0') {
            return ck_err_set(err, CK_ECONFIG, "rename: empty FROM");
        }
        cf->nrules++;
    }
    return 0;
}

static int check_rename(const char *value, ck_err_t *err)
{
    char line[4096], *arrow, *from;
    regex_t re;
    int rc;

    snprintf(line, sizeof(line), "%s", value);
    arrow = strstr(line, "=>");
    if (arrow == NULL)
        return ck_err_set(err, CK_ECONFIG, "rename: '%s' is not FROM => TO", value);
    *arrow = '\0';
    from = trim(line);
    if (*from == '\0' || !strcmp(from, "re:"))
        return ck_err_set(err, CK_ECONFIG, "rename: empty FROM in '%s'", value);
    if (strncmp(from, "re:", 3) != 0)
        return 0;
    if (re_too_big(from + 3))
        return ck_err_set(err, CK_ECONFIG, "rename: regex '%s' repeats too much",
                          from + 3);
    rc = regcomp(&re, from + 3, REG_EXTENDED);
    if (rc != 0) {
        char msg[128];

        regerror(rc, &re, msg, sizeof(msg));
        return ck_err_set(err, CK_ECONFIG, "rename: regex '%s': %s", from + 3, msg);
    }
    regfree(&re);
    return 0;
}

/* Apply one rule to key into out; 1 when it matched. */
static int apply(const rule_t *r, const char *key, char *out, size_t cap)
{
    regmatch_t m[10];
    size_t o = 0;

    if (!r->is_re) {
        size_t n = strlen(r->from);

        if (strncmp(key, r->from, n) != 0)
            return 0;
        snprintf(out, cap, "%s%s", r->to, key + n);
        return 1;
    }
    if (regexec(&r->re, key, 10, m, 0) != 0)
        return 0;
    o = (size_t)snprintf(out, cap, "%.*s", (int)m[0].rm_so, key);
    for (const char *t = r->to; *t != '\0' && o + 1 < cap; t++) {
        if (t[0] == '\\' && t[1] >= '1' && t[1] <= '9') {
            int g = t[1] - '0';

            if (m[g].rm_so >= 0)
                o += (size_t)snprintf(out + o, cap - o, "%.*s",
                                      (int)(m[g].rm_eo - m[g].rm_so),
                                      key + m[g].rm_so);
            t++;
            continue;
        }
        out[o++] = *t;
        out[o] = '\0';
    }
    if (o < cap)
        snprintf(out + o, cap - o, "%s", key + m[0].rm_eo);
    return 1;
}

/* The final name of key under every rule; counts matches per rule. */
static void rename_key(const remap_conf_t *cf, const char *key, char *out,
                       size_t *hits)
{
    char a[KEY_MAX], b[KEY_MAX];

    snprintf(a, sizeof(a), "%s", key);
    for (size_t i = 0; i < cf->nrules; i++) {
        if (apply(&cf->rules[i], a, b, sizeof(b))) {
            if (hits != NULL)
                hits[i]++;
            memcpy(a, b, sizeof(a));
        }
    }
    memcpy(out, a, KEY_MAX);
}

/* A pickled str must be UTF-8: a byte-wise regex can split a character. */
static int utf8_ok(const char *s)
{
    size_t n = strlen(s);

    for (size_t i = 0, len; i < n; i += len)
        if ((len = (size_t)ck_utf8_len((const uint8_t *)s + i, n - i, 0)) == 0)
            return 0;
    return 1;
}

/* Each str key of m -> its first pair index, for ck_py_str_eq lookups. */
static int key_index(ck_arena_t *a, ck_py_vec_t *m, ck_strmap_t *ix)
{
    for (size_t i = 0; i + 1 < m->n; i += 2) {
        ck_py_t *k = m->v[i];

        if (k->kind == CK_PY_STR && strlen(k->u.s.s) == k->u.s.n &&
            ck_strmap_add(ix, a, k->u.s.s, i / 2) < 0)
            return CK_ENOMEM;
    }
    return 0;
}

static int remap_one(ck_job_t *job, remap_conf_t *cf, const char *state,
                     ck_py_vec_t *m, int metadata, size_t *hits)
{
    ck_arena_t *a = &job->ck.arena;
    size_t n = m->n / 2;
    char **names = ck_arena_alloc(a, (n + 1) * sizeof(*names));
    size_t *dup = ck_arena_alloc(a, (n + 1) * sizeof(*dup));
    ck_strmap_t keys = { 0 }, renamed = { 0 };
    char buf[KEY_MAX + 2], out[KEY_MAX];

    if (names == NULL || dup == NULL || key_index(a, m, &keys) < 0)
        return ck_err_set(job->err, CK_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        ck_py_t *k = m->v[2 * i];

        names[i] = NULL;
        if (k->kind != CK_PY_STR || k->u.s.n >= KEY_MAX)
            continue;
        if (metadata) {
            /* module m owns the keys under "m." (the root: "") */
            snprintf(buf, sizeof(buf), "%s%s", k->u.s.s, k->u.s.n ? "." : "");
            rename_key(cf, buf, out, NULL);
            if (strlen(out) > 0 && out[strlen(out) - 1] == '.')
                out[strlen(out) - 1] = '\0';
        } else {
            rename_key(cf, k->u.s.s, out, hits);
        }
        if (strcmp(out, k->u.s.s) == 0)
            continue;
        if (!utf8_ok(out))
            return ck_err_set(job->err, CK_EPLUGIN,
                              "key_remap: %s: '%s' would be renamed to a name "
                              "that is not UTF-8 (a rule splits a character)",
                              state, k->u.s.s);
        names[i] = ck_arena_strdup(a, out);
        if (names[i] == NULL)
            return ck_err_set(job->err, CK_ENOMEM, "out of memory");
    }
    /* dup[i]: the first later key renamed to the same new name, else n */
    for (size_t i = 0; i < n; i++) {
        size_t f;

        dup[i] = n;
        if (names[i] == NULL)
            continue;
        f = ck_strmap_get(&renamed, names[i]);
        if (f != SIZE_MAX && dup[f] == n)
            dup[f] = i;
        if (ck_strmap_add(&renamed, a, names[i], i) < 0)
            return ck_err_set(job->err, CK_ENOMEM, "out of memory");
    }
    /* conflicts: a new name equal to a key that stays, or to another new name */
    for (size_t i = 0; i < n; i++) {
        size_t j;

        if (names[i] == NULL || names[i] == replaced)
            continue;
        j = ck_strmap_get(&keys, names[i]);
        if (j != SIZE_MAX && names[j] == NULL) {
            if (!cf->replace && !metadata)
                return ck_err_set(job->err, CK_EPLUGIN,
                                  "key_remap: %s: '%s' would be renamed onto "
                                  "'%s', which exists",
                                  state, m->v[2 * i]->u.s.s, names[i]);
            names[j] = replaced;
        }
        if (dup[i] < n)
            return ck_err_set(job->err, CK_EPLUGIN,
                              "key_remap: %s: '%s' and '%s' would both be "
                              "renamed to '%s'",
                              state, m->v[2 * i]->u.s.s,
                              m->v[2 * dup[i]]->u.s.s, names[i]);
    }
    for (size_t i = n; i-- > 0;) {
        ck_py_t *nk;

        if (names[i] == NULL)
            continue;
        if (names[i] == replaced) {
            if (!metadata) {
                ck_json_obj(job->changes);
                ck_json_key(job->changes, "op");
                ck_json_str(job->changes, "replaced");
                ck_json_key(job->changes, "state");
                ck_json_str(job->changes, state);
                ck_json_key(job->changes, "key");
                ck_json_str(job->changes, m->v[2 * i]->u.s.s);
                ck_json_end(job->changes);
            }
            ck_py_vec_remove(m, 2 * i, 2);
            continue;
        }
        nk = ck_py_str(a, names[i], strlen(names[i]));
        if (nk == NULL)
            return ck_err_set(job->err, CK_ENOMEM, "out of memory");
        if (!metadata) {
            ck_json_obj(job->changes);
            ck_json_key(job->changes, "op");
            ck_json_str(job->changes, "renamed");
            ck_json_key(job->changes, "state");
            ck_json_str(job->changes, state);
            ck_json_key(job->changes, "key");
            ck_json_str(job->changes, m->v[2 * i]->u.s.s);
            ck_json_key(job->changes, "to");
            ck_json_str(job->changes, names[i]);
            ck_json_end(job->changes);
        }
        m->v[2 * i] = nk;
    }
    return 0;
}

static int remap_run(ck_job_t *job, void *conf)
{
    remap_conf_t *cf = conf, run = *cf;
    size_t hits[MAX_RULES] = { 0 }, ncomp;
    int rc = 0;

    for (ncomp = 0; ncomp < run.nrules; ncomp++) {
        rule_t *r = &run.rules[ncomp];

        if (r->is_re && regcomp(&r->re, r->from, REG_EXTENDED) != 0) {
            rc = ck_err_set(job->err, CK_ENOMEM, "key_remap: regex '%s': "
                            "cannot compile", r->from);
            goto out;
        }
    }
    for (size_t s = 0; s < cf->state.n; s++) {
        ck_py_t *sd;
        ck_py_vec_t *m, *md;

        rc = ck_ckpt_mapping(&job->ck, cf->state.v[s], &sd, &m, job->err);
        if (rc < 0)
            goto out;
        rc = remap_one(job, &run, cf->state.v[s], m, 0, hits);
        if (rc < 0)
            goto out;
        md = ck_ckpt_metadata(sd);
        if (md != NULL && (rc = remap_one(job, &run, cf->state.v[s], md, 1,
                                          NULL)) < 0)
            goto out;
    }
    for (size_t i = 0; i < cf->nrules; i++) {
        if (hits[i] > 0)
            continue;
        if (cf->require_match) {
            rc = ck_err_set(job->err, CK_EPLUGIN,
                            "key_remap: rule '%s%s => %s' matches no key",
                            cf->rules[i].is_re ? "re:" : "", cf->rules[i].from,
                            cf->rules[i].to);
            goto out;
        }
        ck_json_obj(job->changes);
        ck_json_key(job->changes, "op");
        ck_json_str(job->changes, "unmatched");
        ck_json_key(job->changes, "from");
        ck_json_str(job->changes, cf->rules[i].from);
        ck_json_key(job->changes, "to");
        ck_json_str(job->changes, cf->rules[i].to);
        ck_json_end(job->changes);
    }
out:
    while (ncomp-- > 0)
        if (run.rules[ncomp].is_re)
            regfree(&run.rules[ncomp].re);
    return rc;
}

const ck_plugin_t ck_plugin_key_remap = {
    .name = "key_remap",
    .summary = "rename state-dict keys by prefix or regex",
    .conf_size = sizeof(remap_conf_t),
    .directives = remap_directives,
    .init_conf = remap_init,
    .run = remap_run,
};
