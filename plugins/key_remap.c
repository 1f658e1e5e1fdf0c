/*
 * key_remap -- rename state-dict keys.  Each 'rename = FROM => TO' rule is
 * applied in order to every key: a plain FROM is a prefix; 're:FROM' is a
 * POSIX extended regex whose first match is replaced by TO, with \1..\9.
 * _metadata module names are renamed with the same rules.  Renaming onto a
 * key that stays fails the job unless on_conflict = replace; a rule that
 * matches nothing is reported (and fails the job with require_match).
 */
#include "plugin.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 4096
#define RE_MAX_UNROLLED (1u << 18)

/* names[j] of a key that another key is renamed onto (on_conflict=replace) */
static char replaced[] = "";

/* One 'rename' line, parsed and (for re:) compiled at load. */
typedef struct {
    char *from, *to;
    int is_re;
    regex_t re;
} rule_t;

typedef struct {
    ck_strlist_t state;
    ck_conf_list_t rules; /* rule_t *, in the order given */
    int replace;      /* on_conflict */
    int require_match;
} remap_conf_t;

static int set_rename(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                      const char *value);

static const ck_conf_enum_t conflict_names[] = {
    { "error", 0 },
    { "replace", 1 },
    { NULL, 0 },
};

static const ck_directive_t remap_directives[] = {
    { "state", ck_conf_set_paths, offsetof(remap_conf_t, state),
      "best_state/model", CK_DIR_MULTI, "state dicts to rename in" },
    { "rename", set_rename, offsetof(remap_conf_t, rules), NULL, CK_DIR_MULTI,
      "FROM => TO (prefix) or re:FROM => TO (regex, \\1..\\9)" },
    { "on_conflict", ck_conf_set_enum, offsetof(remap_conf_t, replace),
      "error", 0, "error or replace, when a new name is taken",
      conflict_names },
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

static void rule_free(void *p)
{
    regfree(&((rule_t *)p)->re);
}

/* 'rename = FROM => TO': parsed, and a regex compiled, once, here; the
 * compiled regex is shared by every job (regexec does not change it). */
static int set_rename(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                      const char *value)
{
    remap_conf_t *cf = conf;
    char *line = ck_arena_strdup(cx->arena, value), *arrow;
    rule_t *r = ck_arena_alloc(cx->arena, sizeof(*r));
    int rc;

    if (line == NULL || r == NULL)
        return ck_err_set(cx->err, CK_ENOMEM, "out of memory");
    arrow = strstr(line, "=>");
    if (arrow == NULL)
        return ck_err_set(cx->err, CK_ECONFIG,
                          "rename: '%s' is not FROM => TO", value);
    *arrow = '\0';
    r->from = trim(line);
    r->to = trim(arrow + 2);
    if (*r->from == '\0' || !strcmp(r->from, "re:"))
        return ck_err_set(cx->err, CK_ECONFIG, "rename: empty FROM in '%s'",
                          value);
    if (strncmp(r->from, "re:", 3) == 0) {
        r->from += 3;
        if (re_too_big(r->from))
            return ck_err_set(cx->err, CK_ECONFIG,
                              "rename: regex '%s' repeats too much", r->from);
        rc = regcomp(&r->re, r->from, REG_EXTENDED);
        if (rc != 0) {
            char msg[128];

            regerror(rc, &r->re, msg, sizeof(msg));
            return ck_err_set(cx->err, CK_ECONFIG, "rename: regex '%s': %s",
                              r->from, msg);
        }
        r->is_re = 1;
        if (ck_conf_cleanup_add(cx, rule_free, r) < 0) {
            regfree(&r->re);
            return CK_ENOMEM;
        }
    }
    return ck_conf_list_add(cx, &cf->rules, r);
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
    for (size_t i = 0; i < cf->rules.n; i++) {
        if (apply(cf->rules.v[i], a, b, sizeof(b))) {
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
    ck_arena_t *a = ck_job_arena(job);
    size_t n = m->n / 2;
    char **names = ck_arena_alloc(a, (n + 1) * sizeof(*names));
    size_t *dup = ck_arena_alloc(a, (n + 1) * sizeof(*dup));
    ck_strmap_t keys = { 0 }, renamed = { 0 };
    char buf[KEY_MAX + 2], out[KEY_MAX];

    if (names == NULL || dup == NULL || key_index(a, m, &keys) < 0)
        return ck_job_nomem(job);
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
            return ck_job_fail(job, CK_EPLUGIN,
                               "%s: '%s' would be renamed to a name "
                               "that is not UTF-8 (a rule splits a character)",
                              state, k->u.s.s);
        names[i] = ck_arena_strdup(a, out);
        if (names[i] == NULL)
            return ck_job_nomem(job);
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
            return ck_job_nomem(job);
    }
    /* conflicts: a new name equal to a key that stays, or to another new name */
    for (size_t i = 0; i < n; i++) {
        size_t j;

        if (names[i] == NULL || names[i] == replaced)
            continue;
        j = ck_strmap_get(&keys, names[i]);
        if (j != SIZE_MAX && names[j] == NULL) {
            if (!cf->replace && !metadata)
                return ck_job_fail(job, CK_EPLUGIN,
                                   "%s: '%s' would be renamed onto "
                                   "'%s', which exists",
                                  state, m->v[2 * i]->u.s.s, names[i]);
            names[j] = replaced;
        }
        if (dup[i] < n)
            return ck_job_fail(job, CK_EPLUGIN,
                               "%s: '%s' and '%s' would both be "
                               "renamed to '%s'",
                              state, m->v[2 * i]->u.s.s,
                              m->v[2 * dup[i]]->u.s.s, names[i]);
    }
    for (size_t i = n; i-- > 0;) {
        ck_py_t *nk;

        if (names[i] == NULL)
            continue;
        if (names[i] == replaced) {
            if (!metadata)
                ck_job_report(job, "replaced", CK_F_STR("state", state),
                              CK_F_KEY("key", m->v[2 * i]));
            ck_py_vec_remove(m, 2 * i, 2);
            continue;
        }
        nk = ck_py_str(a, names[i], strlen(names[i]));
        if (nk == NULL)
            return ck_job_nomem(job);
        if (!metadata)
            ck_job_report(job, "renamed", CK_F_STR("state", state),
                          CK_F_KEY("key", m->v[2 * i]),
                          CK_F_STR("to", names[i]));
        m->v[2 * i] = nk;
    }
    return 0;
}

static int remap_run(ck_job_t *job, void *conf)
{
    remap_conf_t *cf = conf;
    size_t *hits = ck_arena_alloc(ck_job_arena(job),
                                  (cf->rules.n + 1) * sizeof(*hits));
    int rc;

    if (hits == NULL)
        return ck_job_nomem(job);
    for (size_t s = 0; s < cf->state.n; s++) {
        ck_py_t *sd;
        ck_py_vec_t *m, *md;

        rc = ck_job_mapping(job, cf->state.v[s], &sd, &m);
        if (rc < 0)
            return rc;
        rc = remap_one(job, cf, cf->state.v[s], m, 0, hits);
        if (rc < 0)
            return rc;
        md = ck_job_metadata(sd);
        if (md != NULL) {
            rc = remap_one(job, cf, cf->state.v[s], md, 1, NULL);
            if (rc < 0)
                return rc;
        }
    }
    for (size_t i = 0; i < cf->rules.n; i++) {
        const rule_t *r = cf->rules.v[i];

        if (hits[i] > 0)
            continue;
        if (cf->require_match)
            return ck_job_fail(job, CK_EPLUGIN,
                               "rule '%s%s => %s' matches no key",
                               r->is_re ? "re:" : "", r->from, r->to);
        ck_job_report(job, "unmatched", CK_F_STR("from", r->from),
                      CK_F_STR("to", r->to));
    }
    return 0;
}

const ck_plugin_t ck_plugin_key_remap = {
    .name = "key_remap",
    .summary = "rename state-dict keys by prefix or regex",
    .conf_size = sizeof(remap_conf_t),
    .directives = remap_directives,
    .init_conf = NULL,
    .run = remap_run,
};
