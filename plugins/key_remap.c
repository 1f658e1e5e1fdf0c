/*
 * key_remap -- rename state-dict keys.  Each 'rename = FROM => TO' rule is
 * applied in order to every key:
 *
 *   PREFIX => NEW      a key starting with PREFIX gets NEW in its place.
 *                      Text, not levels: 'layers.1' is also the start of
 *                      'layers.10'; write 'layers.1.' to mean the module.
 *   =KEY => NEW        exactly the key KEY becomes NEW.
 *   re:PATTERN => TO   the key becomes re.sub(PATTERN, TO, key), with
 *                      Python's syntax and semantics (core/pyre.h): \d,
 *                      (?P<name>...), \1 and \g<name> in TO, every match
 *                      replaced.
 *
 * Rules are parsed and compiled once, at load; a template naming a group
 * the pattern does not have is refused there, as Python's re refuses it.
 * _metadata module names are renamed with the same rules.  Renaming onto a
 * key that stays fails the job unless on_conflict = replace; a rule that
 * matches nothing is reported, warned about on stderr by `ckprep run`, and
 * fails the job with require_match.
 */
#include "plugin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* names[j] of a key that another key is renamed onto (on_conflict=replace) */
static char replaced[] = "";

typedef enum { R_PREFIX, R_EXACT, R_RE } rule_kind_t;

/* One 'rename' line, parsed and (for re:) compiled at load. */
typedef struct {
    char *from, *to;
    rule_kind_t kind;
    ck_pyre_t *re;
} rule_t;

typedef struct {
    ck_conf_list_t state; /* ck_path_t * */
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
      "best_state/model", CK_DIR_MULTI,
      "state dicts to rename in: PATH, A|B (the first), PATH? (optional)" },
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

static void rule_free(void *p)
{
    ck_pyre_free(((rule_t *)p)->re);
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
    if (*r->from == '\0' || !strcmp(r->from, "re:") || !strcmp(r->from, "="))
        return ck_err_set(cx->err, CK_ECONFIG, "rename: empty FROM in '%s'",
                          value);
    if (r->from[0] == '=') {
        r->from++;
        r->kind = R_EXACT;
    } else if (strncmp(r->from, "re:", 3) == 0) {
        ck_err_t e = { 0 };

        r->from += 3;
        r->kind = R_RE;
        rc = ck_pyre_compile(r->from, r->to, &r->re, &e);
        if (rc < 0)
            return ck_err_set(cx->err, rc, "rename: regex '%s' => '%s': %s",
                              r->from, r->to, e.msg);
        if (ck_conf_cleanup_add(cx, rule_free, r) < 0) {
            ck_pyre_free(r->re);
            return CK_ENOMEM;
        }
    }
    return ck_conf_list_add(cx, &cf->rules, r);
}

/* Apply rule r to the key in in; the result goes to out: 1 when it
 * matched, 0 when not, or an error. */
static int apply(ck_job_t *job, const rule_t *r, const ck_buf_t *in,
                 ck_buf_t *out)
{
    const char *key = in->data != NULL ? (const char *)in->data : "";
    size_t n = strlen(r->from), count;
    ck_err_t e = { 0 };
    int rc;

    out->len = 0;
    switch (r->kind) {
    case R_PREFIX:
    case R_EXACT:
        if (in->len < n || memcmp(key, r->from, n) != 0 ||
            (r->kind == R_EXACT && in->len != n))
            return 0;
        ck_buf_put(out, r->to, strlen(r->to));
        ck_buf_put(out, key + n, in->len - n);
        break;
    case R_RE:
        rc = ck_pyre_sub(r->re, key, in->len, out, &count, &e);
        if (rc < 0)
            return ck_job_fail(job, rc, "rule 're:%s': %s", r->from, e.msg);
        if (count == 0)
            return 0;
        break;
    }
    return out->oom ? ck_job_nomem(job) : 1;
}

/* The final name of key (n bytes) under every rule, in *res (a or b);
 * counts matches per rule. */
static int rename_key(ck_job_t *job, const remap_conf_t *cf, const char *key,
                      size_t n, ck_buf_t *a, ck_buf_t *b, ck_buf_t **res,
                      size_t *hits)
{
    ck_buf_t *cur = a, *next = b, *t;

    cur->len = 0;
    if (ck_buf_put(cur, key, n) < 0)
        return ck_job_nomem(job);
    for (size_t i = 0; i < cf->rules.n; i++) {
        int rc = apply(job, cf->rules.v[i], cur, next);

        if (rc < 0)
            return rc;
        if (rc == 0)
            continue;
        if (hits != NULL)
            hits[i]++;
        t = cur, cur = next, next = t;
    }
    if (ck_buf_putc(cur, '\0') < 0)
        return ck_job_nomem(job);
    cur->len--;
    *res = cur;
    return 0;
}

/* Each new name -> the first key renamed to it (names[i], NULL for a key
 * that keeps its name); dup[i]: the first later key renamed to the same
 * name, else n.  0 or CK_ENOMEM. */
static int renamed_index(ck_arena_t *a, char **names, size_t n,
                         size_t nrenamed, ck_strmap_t *ix, size_t *dup)
{
    if (ck_strmap_reserve(ix, a, nrenamed) < 0)
        return CK_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        size_t f;

        if (dup != NULL)
            dup[i] = n;
        if (names[i] == NULL)
            continue;
        switch (ck_strmap_put(ix, a, names[i], i, &f)) {
        case 0:
            break;
        case 1:
            if (dup != NULL && dup[f] == n)
                dup[f] = i;
            break;
        default:
            return CK_ENOMEM;
        }
    }
    return 0;
}

/*
 * _metadata with its new names: as the entries are put one by one into a
 * new OrderedDict, an entry whose new name an earlier one already took
 * gives that earlier place its value, whatever on_conflict says (it is
 * about tensors): torch's consume_prefix_in_state_dict_if_present does the
 * same when the module 'module' of a DDP checkpoint becomes the root ''.
 */
static int remap_metadata(ck_job_t *job, ck_py_vec_t *m, char **names,
                          size_t nrenamed, ck_arena_t *tmp)
{
    ck_arena_t *a = ck_job_arena(job);
    size_t n = m->n / 2, kept = 0;
    /* only a name some entry is renamed to can be met twice: entries that
     * keep a name no other takes go through without a look in seen */
    ck_strmap_t taken = { 0 }; /* a new name -> the first entry given it */
    ck_strmap_t seen = { 0 };  /* such a name -> its place in the output */
    int rc;

    if (renamed_index(tmp, names, n, nrenamed, &taken, NULL) < 0 ||
        ck_strmap_reserve(&seen, tmp, nrenamed) < 0)
        return ck_job_nomem(job);
    for (size_t i = 0; i < n; i++) {
        ck_py_t *k = m->v[2 * i];
        const char *name;
        size_t f;

        /* a key that keeps a name no entry is renamed to is kept as is */
        if (k->kind != CK_PY_STR ||
            (names[i] == NULL &&
             (!ck_py_str_plain(k) ||
              ck_strmap_get(&taken, k->u.s.s) == SIZE_MAX))) {
            m->v[2 * kept] = k;
            m->v[2 * kept++ + 1] = m->v[2 * i + 1];
            continue;
        }
        name = names[i] != NULL ? names[i] : k->u.s.s;
        rc = ck_strmap_put(&seen, tmp, name, kept, &f);
        if (rc < 0)
            return ck_job_nomem(job);
        if (rc == 1) {
            m->v[2 * f + 1] = m->v[2 * i + 1];
            continue;
        }
        if (names[i] != NULL) {
            k = ck_py_str(a, names[i], strlen(names[i]));
            if (k == NULL)
                return ck_job_nomem(job);
        }
        m->v[2 * kept] = k;
        m->v[2 * kept++ + 1] = m->v[2 * i + 1];
    }
    if (m->n % 2)
        m->v[2 * kept] = m->v[m->n - 1];
    m->n = 2 * kept + m->n % 2;
    return 0;
}

/*
 * Rename the keys of m.  The new names, their index and maps live in tmp,
 * which remap_one releases after: 10^5 keys' worth would otherwise stay
 * in the job's arena through the write (the new keys put in the graph
 * are copies in the job's).  Only the renamed keys are indexed: a key that
 * stays is looked up among them, not the other way round (a state dict of
 * 10^5 keys of which a few are renamed).  That relies on m's keys being
 * distinct, as the job checks them before the chain (ck_ckpt_validate)
 * and no stage makes two equal: two equal keys that stay are not looked
 * at, and the last of them is the one a renamed key would replace.
 */
static int remap_in(ck_job_t *job, remap_conf_t *cf, const char *state,
                    ck_py_vec_t *m, int metadata, size_t *hits,
                    ck_arena_t *tmp)
{
    ck_arena_t *a = ck_job_arena(job);
    size_t n = m->n / 2, nrenamed = 0;
    char **names = ck_arena_alloc(tmp, (n + 1) * sizeof(*names));
    size_t *dup, *onto, kept = 0;
    ck_strmap_t renamed = { 0 };
    ck_buf_t ba = { 0 }, bb = { 0 }, dotted = { 0 }, *out;
    int rc = 0;

    if (names == NULL)
        return ck_job_nomem(job);
    for (size_t i = 0; i < n && rc == 0; i++) {
        ck_py_t *k = m->v[2 * i];
        char *o;

        names[i] = NULL;
        if (k->kind != CK_PY_STR)
            continue;
        if (metadata) {
            /* module m owns the keys under "m." (the root: "") */
            dotted.len = 0;
            if (ck_buf_put(&dotted, k->u.s.s, k->len) < 0 ||
                (k->len > 0 && ck_buf_putc(&dotted, '.') < 0) ||
                ck_buf_putc(&dotted, '\0') < 0) {
                rc = ck_job_nomem(job);
                break;
            }
            rc = rename_key(job, cf, (const char *)dotted.data,
                            strlen((const char *)dotted.data), &ba, &bb,
                            &out, NULL);
            if (rc == 0 && out->len > 0 && out->data[out->len - 1] == '.')
                out->data[--out->len] = '\0';
        } else {
            rc = rename_key(job, cf, k->u.s.s, k->len, &ba, &bb, &out, hits);
        }
        if (rc < 0)
            break;
        o = (char *)out->data;
        if (out->len == k->len && memcmp(o, k->u.s.s, out->len) == 0)
            continue;
        if (memchr(o, '\0', out->len) != NULL) {
            rc = ck_job_fail(job, CK_EPLUGIN,
                             "%s: '%s' would be renamed to a name holding a "
                             "NUL character", state, k->u.s.s);
            break;
        }
        /* a pickled str must be UTF-8: a prefix rule works on bytes */
        if (!ck_utf8_valid(o, out->len)) {
            rc = ck_job_fail(job, CK_EPLUGIN,
                             "%s: '%s' would be renamed to a name "
                             "that is not UTF-8 (a rule splits a character)",
                             state, k->u.s.s);
            break;
        }
        names[i] = ck_arena_strndup(tmp, o, out->len);
        if (names[i] == NULL)
            rc = ck_job_nomem(job);
        nrenamed++;
    }
    ck_buf_release(&ba);
    ck_buf_release(&bb);
    ck_buf_release(&dotted);
    if (rc < 0 || nrenamed == 0)
        return rc;
    if (metadata)
        return remap_metadata(job, m, names, nrenamed, tmp);
    dup = ck_arena_alloc(tmp, (n + 1) * sizeof(*dup));
    onto = ck_arena_alloc(tmp, (n + 1) * sizeof(*onto));
    if (dup == NULL || onto == NULL ||
        renamed_index(tmp, names, n, nrenamed, &renamed, dup) < 0)
        return ck_job_nomem(job);
    /* onto[i]: the key that stays and is named as key i's new name, else n */
    for (size_t j = 0; j < n; j++)
        onto[j] = n;
    for (size_t j = 0; j < n; j++) {
        ck_py_t *k = m->v[2 * j];
        size_t i;

        if (names[j] == NULL && ck_py_str_plain(k) &&
            (i = ck_strmap_get(&renamed, k->u.s.s)) != SIZE_MAX)
            onto[i] = j;
    }
    /* conflicts: a new name equal to a key that stays or to another one */
    for (size_t i = 0; i < n; i++) {
        size_t j = onto[i];

        if (names[i] == NULL || names[i] == replaced)
            continue;
        if (j < n) {
            if (!cf->replace)
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
    /* in key order; a replaced pair is marked (NULL key) and squeezed out
     * after the loop, one pass however many there are */
    for (size_t i = 0; i < n; i++) {
        ck_py_t *nk;

        if (names[i] == NULL)
            continue;
        if (names[i] == replaced) {
            ck_job_report(job, "replaced", CK_F_STR("state", state),
                          CK_F_KEY("key", m->v[2 * i]));
            m->v[2 * i] = NULL;
            continue;
        }
        nk = ck_py_str(a, names[i], strlen(names[i]));
        if (nk == NULL)
            return ck_job_nomem(job);
        ck_job_report(job, "renamed", CK_F_STR("state", state),
                      CK_F_KEY("key", m->v[2 * i]),
                      CK_F_STR("to", names[i]));
        m->v[2 * i] = nk;
    }
    for (size_t i = 0; i < n; i++) {
        if (m->v[2 * i] != NULL) {
            m->v[kept++] = m->v[2 * i];
            m->v[kept++] = m->v[2 * i + 1];
        }
    }
    if (m->n % 2)
        m->v[kept++] = m->v[m->n - 1];
    m->n = kept;
    return 0;
}

static int remap_init(ck_conf_ctx_t *cx, void *conf)
{
    const remap_conf_t *cf = conf;

    if (cf->rules.n == 0)
        return ck_err_set(cx->err, CK_ECONFIG,
                          "nothing to do: give at least one rename = FROM => "
                          "TO");
    return 0;
}

static int remap_one(ck_job_t *job, remap_conf_t *cf, const char *state,
                     ck_py_vec_t *m, int metadata, size_t *hits)
{
    ck_arena_t tmp = { 0 };
    int rc = remap_in(job, cf, state, m, metadata, hits, &tmp);

    ck_arena_release(&tmp);
    return rc;
}

static int remap_run(ck_job_t *job, void *conf)
{
    remap_conf_t *cf = conf;
    size_t *hits = ck_arena_alloc(ck_job_arena(job),
                                  (cf->rules.n + 1) * sizeof(*hits));
    ck_py_t **seen = ck_arena_alloc(ck_job_arena(job),
                                    (cf->state.n + 1) * sizeof(*seen));
    int rc;

    if (hits == NULL || seen == NULL)
        return ck_job_nomem(job);
    for (size_t s = 0; s < cf->state.n; s++) {
        const char *state;
        ck_py_t *sd;
        ck_py_vec_t *m, *md;

        rc = ck_job_place(job, cf->state.v[s], &state, &sd, &m);
        if (rc <= 0) {
            if (rc < 0)
                return rc;
            continue; /* optional, absent */
        }
        /* one dict at two places: renamed once, as in Python */
        seen[s] = sd;
        for (size_t e = 0; e < s && sd != NULL; e++)
            if (seen[e] == sd)
                sd = NULL;
        if (sd == NULL && seen[s] != NULL)
            continue;
        rc = remap_one(job, cf, state, m, 0, hits);
        if (rc < 0)
            return rc;
        md = ck_job_metadata(job, sd);
        if (md != NULL) {
            rc = remap_one(job, cf, state, md, 1, NULL);
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
                               r->kind == R_RE ? "re:" : r->kind == R_EXACT
                                   ? "=" : "", r->from, r->to);
        ck_job_report(job, "unmatched", CK_F_STR("from", r->from),
                      CK_F_STR("to", r->to));
        ck_job_warn(job, "rule '%s%s => %s' matches no key",
                    r->kind == R_RE ? "re:" : r->kind == R_EXACT ? "=" : "",
                    r->from, r->to);
    }
    return 0;
}

const ck_plugin_t ck_plugin_key_remap = {
    .name = "key_remap",
    .summary = "rename state-dict keys by prefix or regex",
    .conf_size = sizeof(remap_conf_t),
    .directives = remap_directives,
    .init_conf = remap_init,
    .run = remap_run,
};
