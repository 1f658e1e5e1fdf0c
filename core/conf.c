/*
 * conf.c -- loading the INI configuration and the generic directive setters.
 *
 * inih reads the file through a line-counting reader so every handler call
 * knows its line.  The first error is kept and reported as PATH:LINE.
 * Sections are created when first seen; after the file is read, the chain
 * is resolved (a plugin named in the chain without a section of its own runs
 * with its defaults), defaults are applied and each plugin's init_conf runs.
 */
#include "conf.h"

#include "ckpt.h"
#include "watchconf.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONF_MAX_BYTES (16u << 20)

#define FIELD(conf, d, type) ((type *)((char *)(conf) + (d)->offset))

struct ck_section {
    ck_section_t *next;
    char *name;                    /* as written: "key_remap:second" */
    const ck_directive_t *dirs;
    void *conf;
    const ck_plugin_t *plugin;     /* NULL for core sections */
    const char *label;
    unsigned char *given;          /* [i]: directive i was given */
    int line;
    int in_chain;                  /* a plugin section the chain runs */
    const char *after;             /* the stage after its last in the chain */
};

/* A cleanup registered by a setter, run by ck_conf_release. */
typedef struct cleanup {
    struct cleanup *next;
    void (*fn)(void *);
    void *data;
} cleanup_t;

int ck_conf_cleanup_add(ck_conf_ctx_t *cx, void (*fn)(void *), void *data)
{
    ck_conf_t *c = cx->loader;
    cleanup_t *k = ck_arena_alloc(cx->arena, sizeof(*k));

    if (k == NULL)
        return ck_err_set(cx->err, CK_ENOMEM, "out of memory");
    k->fn = fn;
    k->data = data;
    k->next = c->cleanups;
    c->cleanups = k;
    return 0;
}

int ck_conf_reads_file(ck_conf_ctx_t *cx, const char *path)
{
    ck_conf_t *c = cx->loader;
    ck_conf_file_t *f = ck_arena_alloc(cx->arena, sizeof(*f));

    if (f == NULL || (f->path = ck_arena_strdup(cx->arena, path)) == NULL)
        return ck_err_set(cx->err, CK_ENOMEM, "out of memory");
    f->next = c->reads;
    c->reads = f;
    return 0;
}

const ck_directive_t ck_pipeline_directives[] = {
    { "chain", ck_conf_set_words, offsetof(ck_pipeline_conf_t, chain), NULL,
      CK_DIR_MULTI, "plugins to run in order: NAME[:LABEL] ..." },
    { NULL, NULL, 0, NULL, 0, NULL },
};

static int set_globals(ck_conf_ctx_t *cx, const ck_directive_t *d,
                       void *conf, const char *v)
{
    for (const char *w = v; *w != '\0';) {
        size_t n;

        w += strspn(w, " \t,");
        n = strcspn(w, " \t,");
        if (n > 0 && memchr(w, '.', n) == NULL)
            return ck_err_set(cx->err, CK_ECONFIG,
                              "allow_globals: '%.*s' is not module.name",
                              (int)n, w);
        w += n;
    }
    return ck_conf_set_words(cx, d, conf, v);
}

const ck_directive_t ck_security_directives[] = {
    { "allow_globals", set_globals,
      offsetof(ck_security_conf_t, allow_globals), NULL, CK_DIR_MULTI,
      "extra globals a pickle may name: module.name ...", NULL },
    { "allow_numpy", ck_conf_set_bool,
      offsetof(ck_security_conf_t, allow_numpy), "no", 0,
      "accept numpy arrays, scalars and dtypes (never object dtypes)" },
    { "max_pickle_bytes", ck_conf_set_size,
      offsetof(ck_security_conf_t, max_pickle_bytes), "1G", 0,
      "largest data.pkl accepted" },
    { "max_depth", ck_conf_set_u64, offsetof(ck_security_conf_t, max_depth),
      "1000", 0, "deepest object nesting accepted" },
    { "max_memo", ck_conf_set_u64, offsetof(ck_security_conf_t, max_memo),
      "67108864", 0, "largest pickle memo index accepted" },
    { "max_string_bytes", ck_conf_set_size,
      offsetof(ck_security_conf_t, max_string_bytes), "256M", 0,
      "longest str, bytes or integer accepted" },
    { NULL, NULL, 0, NULL, 0, NULL },
};

/* ---- setters ---------------------------------------------------------- */

int ck_conf_set_bool(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                     const char *v)
{
    int *f = FIELD(conf, d, int);

    if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "on") ||
        !strcmp(v, "1"))
        *f = 1;
    else if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "off") ||
             !strcmp(v, "0"))
        *f = 0;
    else
        return ck_err_set(cx->err, CK_ECONFIG, "%s: '%s' is not yes or no",
                          d->name, v);
    return 0;
}

static int parse_u64(const char *v, uint64_t *out, const char **end)
{
    char *e;
    unsigned long long n;

    if (!isdigit((unsigned char)*v))
        return -1;
    errno = 0;
    n = strtoull(v, &e, 10);
    if (errno != 0)
        return -1;
    *out = n;
    *end = e;
    return 0;
}

int ck_conf_set_u64(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                    const char *v)
{
    const ck_conf_range_t *r = d->data;
    const char *end;
    uint64_t n;

    if (r != NULL && (parse_u64(v, &n, &end) < 0 || *end != '\0' ||
                      n < r->min || n > r->max))
        return ck_err_set(cx->err, CK_ECONFIG,
                          "%s: '%s' is not a number from %llu to %llu",
                          d->name, v, (unsigned long long)r->min,
                          (unsigned long long)r->max);
    if (parse_u64(v, &n, &end) < 0 || *end != '\0')
        return ck_err_set(cx->err, CK_ECONFIG, "%s: '%s' is not a whole number",
                          d->name, v);
    *FIELD(conf, d, uint64_t) = n;
    return 0;
}

int ck_conf_set_size(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                     const char *v)
{
    static const struct {
        const char *suffix;
        unsigned shift;
    } units[] = { { "", 0 },    { "K", 10 },   { "KiB", 10 }, { "M", 20 },
                  { "MiB", 20 }, { "G", 30 },  { "GiB", 30 }, { "T", 40 },
                  { "TiB", 40 } };
    const char *end;
    uint64_t n;

    if (parse_u64(v, &n, &end) == 0) {
        for (size_t i = 0; i < CK_ARRAY_SIZE(units); i++) {
            if (strcmp(end, units[i].suffix) == 0) {
                if (units[i].shift && n > (UINT64_MAX >> units[i].shift))
                    break;
                *FIELD(conf, d, uint64_t) = n << units[i].shift;
                return 0;
            }
        }
    }
    return ck_err_set(cx->err, CK_ECONFIG,
                      "%s: '%s' is not a size (a number, optionally K, M, G or T)",
                      d->name, v);
}

int ck_conf_set_str(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                    const char *v)
{
    char *s = ck_arena_strdup(cx->arena, v);

    if (s == NULL)
        return ck_err_set(cx->err, CK_ENOMEM, "out of memory");
    *FIELD(conf, d, char *) = s;
    return 0;
}

int ck_conf_set_enum(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                     const char *v)
{
    const ck_conf_enum_t *e = d->data;
    char names[256];
    size_t o = 0;

    for (size_t i = 0; e[i].name != NULL; i++) {
        if (strcmp(e[i].name, v) == 0) {
            *FIELD(conf, d, int) = e[i].value;
            return 0;
        }
    }
    names[0] = '\0';
    for (size_t i = 0; e[i].name != NULL && o < sizeof(names); i++)
        o += (size_t)snprintf(names + o, sizeof(names) - o, "%s%s",
                              i == 0 ? "" : e[i + 1].name ? ", " : " or ",
                              e[i].name);
    return ck_err_set(cx->err, CK_ECONFIG, "%s: '%s' is not %s", d->name, v,
                      names);
}

static int list_add(ck_conf_ctx_t *cx, ck_strlist_t *l, const char *s,
                    size_t n)
{
    char **nv = ck_arena_alloc(cx->arena, (l->n + 2) * sizeof(*nv));

    if (nv == NULL)
        return ck_err_set(cx->err, CK_ENOMEM, "out of memory");
    if (l->n)
        memcpy(nv, l->v, l->n * sizeof(*nv));
    nv[l->n] = ck_arena_strndup(cx->arena, s, n);
    if (nv[l->n] == NULL)
        return ck_err_set(cx->err, CK_ENOMEM, "out of memory");
    nv[++l->n] = NULL;
    l->v = nv;
    return 0;
}

int ck_conf_set_words(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                      const char *v)
{
    ck_strlist_t *l = FIELD(conf, d, ck_strlist_t);

    while (*v != '\0') {
        size_t n;
        int rc;

        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        n = strcspn(v, " \t,");
        if (n == 0)
            break;
        rc = list_add(cx, l, v, n);
        if (rc < 0)
            return rc;
        v += n;
    }
    return 0;
}

int ck_conf_set_lines(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                      const char *v)
{
    if (*v == '\0')
        return 0;
    return list_add(cx, FIELD(conf, d, ck_strlist_t), v, strlen(v));
}

int ck_conf_list_add(ck_conf_ctx_t *cx, ck_conf_list_t *l, void *item)
{
    void **nv = ck_arena_alloc(cx->arena, (l->n + 1) * sizeof(*nv));

    if (nv == NULL)
        return ck_err_set(cx->err, CK_ENOMEM, "out of memory");
    if (l->n > 0)
        memcpy(nv, l->v, l->n * sizeof(*nv));
    nv[l->n++] = item;
    l->v = nv;
    return 0;
}

/* One place: "a/b|c/d?" into p. */
static int parse_place(ck_conf_ctx_t *cx, const ck_directive_t *d,
                       const char *w, size_t n, ck_path_t *p)
{
    char *text = ck_arena_strndup(cx->arena, w, n);
    size_t k = 0;

    if (text == NULL)
        return ck_err_set(cx->err, CK_ENOMEM, "out of memory");
    if (n > 0 && text[n - 1] == '?') {
        p->optional = 1;
        text[--n] = '\0';
    }
    p->text = text;
    p->nalt = 1;
    for (size_t i = 0; i < n; i++)
        p->nalt += text[i] == '|';
    p->alt = ck_arena_alloc(cx->arena, p->nalt * sizeof(*p->alt));
    text = ck_arena_strdup(cx->arena, text);
    if (p->alt == NULL || text == NULL)
        return ck_err_set(cx->err, CK_ENOMEM, "out of memory");
    for (char *alt = text;; alt++) {
        char *bar = strchr(alt, '|');
        size_t len = bar ? (size_t)(bar - alt) : strlen(alt);
        int empty;

        /* 'state_dict/' is the dict itself; "/" alone is the top */
        while (len > 1 && alt[len - 1] == '/')
            alt[--len] = '\0';
        empty = len == 0 || (alt[0] == '/' && len != 1);
        for (size_t i = 1; i < len; i++)
            empty |= alt[i] == '/' && alt[i - 1] == '/';
        if (empty)
            return ck_err_set(cx->err, CK_ECONFIG,
                              "%s: '%s' is not a place: an empty level or "
                              "alternative (levels are separated by '/', "
                              "alternatives by '|')", d->name, p->text);
        if (bar != NULL)
            *bar = '\0';
        p->alt[k++] = alt;
        if (bar == NULL)
            break;
        alt = bar;
    }
    if (p->nalt == 1)
        p->text = p->alt[0]; /* without the trailing '/' */
    return 0;
}

int ck_conf_set_paths(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                      const char *v)
{
    ck_conf_list_t *l = FIELD(conf, d, ck_conf_list_t);

    for (const char *w = v; *w != '\0';) {
        ck_path_t *p;
        size_t n;
        int rc;

        w += strspn(w, " \t,");
        n = strcspn(w, " \t,");
        if (n == 0)
            break;
        p = ck_arena_alloc(cx->arena, sizeof(*p));
        if (p == NULL)
            return ck_err_set(cx->err, CK_ENOMEM, "out of memory");
        rc = parse_place(cx, d, w, n, p);
        if (rc == 0)
            rc = ck_conf_list_add(cx, l, p);
        if (rc < 0)
            return rc;
        w += n;
    }
    return 0;
}

int ck_conf_set_path(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                     const char *v)
{
    ck_path_t **f = FIELD(conf, d, ck_path_t *);
    size_t n = strlen(v);

    if (strspn(v, "/ \t") == n) {
        *f = NULL; /* 'root =' (or '/') is none */
        return 0;
    }
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (strcspn(v, " \t,") < n)
        return ck_err_set(cx->err, CK_ECONFIG,
                          "%s: one place only, not '%s'", d->name, v);
    *f = ck_arena_alloc(cx->arena, sizeof(**f));
    if (*f == NULL)
        return ck_err_set(cx->err, CK_ENOMEM, "out of memory");
    return parse_place(cx, d, v, n, *f);
}

/* ---- plugins ---------------------------------------------------------- */

const ck_plugin_t *ck_plugin_find(const char *name, size_t len)
{
    for (size_t i = 0; ck_plugins[i] != NULL; i++)
        if (strlen(ck_plugins[i]->name) == len &&
            memcmp(ck_plugins[i]->name, name, len) == 0)
            return ck_plugins[i];
    return NULL;
}

/* ---- loading ---------------------------------------------------------- */

typedef struct {
    ck_conf_t *c;
    FILE *f;
    int line;
    int err_line;
    int mid_line;  /* the last read ended without a newline */
    const char *where; /* a --set being read: errors name it, not a line */
    ck_err_t *err;
} load_t;

static void section_header(load_t *l, const char *s);

static char *reader(char *str, int num, void *stream)
{
    load_t *l = stream;
    char *s = fgets(str, num, l->f);
    size_t n;

    if (s == NULL)
        return NULL;
    if (!l->mid_line) {
        l->line++;
        section_header(l, s);
    }
    n = strlen(s);
    l->mid_line = n > 0 && s[n - 1] != '\n';
    return s;
}

static ck_section_t *section_new(ck_conf_t *c, const char *name, int line,
                                 ck_err_t *err)
{
    const char *colon = strchr(name, ':');
    size_t base = colon ? (size_t)(colon - name) : strlen(name);
    ck_section_t *s;

    s = ck_arena_alloc(&c->arena, sizeof(*s));
    if (s == NULL) {
        ck_err_set(err, CK_ENOMEM, "out of memory");
        return NULL;
    }
    s->name = ck_arena_strdup(&c->arena, name);
    s->line = line;
    if (strcmp(name, "pipeline") == 0) {
        s->dirs = ck_pipeline_directives;
        s->conf = &c->pipeline;
    } else if (strcmp(name, "security") == 0) {
        s->dirs = ck_security_directives;
        s->conf = &c->security;
    } else if (strcmp(name, "output") == 0) {
        s->dirs = ck_output_directives;
        s->conf = &c->output;
    } else if (strcmp(name, "watch") == 0) {
        s->dirs = ck_watch_directives;
        s->conf = &c->watch;
        c->watch_line = line;
    } else {
        s->plugin = ck_plugin_find(name, base);
        if (s->plugin == NULL || (colon != NULL && colon[1] == '\0')) {
            ck_err_set(err, CK_ECONFIG, "unknown section [%s]", name);
            return NULL;
        }
        s->dirs = s->plugin->directives;
        s->label = colon ? s->name + base + 1 : NULL;
        s->conf = ck_arena_alloc(&c->arena, s->plugin->conf_size);
        if (s->conf == NULL) {
            ck_err_set(err, CK_ENOMEM, "out of memory");
            return NULL;
        }
    }
    {
        size_t n = 0;

        while (s->dirs[n].name != NULL)
            n++;
        s->given = ck_arena_alloc(&c->arena, n + 1);
    }
    if (s->name == NULL || s->given == NULL) {
        ck_err_set(err, CK_ENOMEM, "out of memory");
        return NULL;
    }
    s->next = c->sections;
    c->sections = s;
    return s;
}

static ck_section_t *section_find(ck_conf_t *c, const char *name)
{
    for (ck_section_t *s = c->sections; s != NULL; s = s->next)
        if (strcmp(s->name, name) == 0)
            return s;
    return NULL;
}

static void load_fail(load_t *l, const ck_err_t *e)
{
    l->err_line = l->line ? l->line : -1;
    if (l->where != NULL)
        ck_err_set(l->err, e->code, "--set '%s': %s", l->where, e->msg);
    else
        ck_err_set(l->err, e->code, "%s:%d: %s", l->c->path, l->line, e->msg);
}

/*
 * inih calls the handler only for name = value lines, so sections are made
 * here, as their [header] is read: an unknown one is reported at its own
 * line even when it has no directives.  An indented [header] is left to the
 * handler (inih may read it as a continued value).
 */
static void section_header(load_t *l, const char *s)
{
    ck_err_t e = { 0 };
    const char *end;
    char name[64];

    end = strchr(s, ']');
    if (*s != '[' || end == NULL || l->err_line)
        return;
    if ((size_t)(end - s) > sizeof(name)) {
        ck_err_set(&e, CK_ECONFIG, "section name too long");
        load_fail(l, &e);
        return;
    }
    memcpy(name, s + 1, (size_t)(end - s - 1));
    name[end - s - 1] = '\0';
    if (section_find(l->c, name) == NULL &&
        section_new(l->c, name, l->line, &e) == NULL)
        load_fail(l, &e);
}

static int handler(void *user, const char *section, const char *name,
                   const char *value)
{
    load_t *l = user;
    ck_err_t e = { 0 };
    ck_conf_ctx_t cx;
    ck_section_t *s;
    size_t i;

    if (l->err_line)
        return 1; /* report the first error only */
    if (section[0] == '\0') {
        ck_err_set(&e, CK_ECONFIG, "'%s' is outside any [section]", name);
        goto fail;
    }
    s = section_find(l->c, section);
    if (s == NULL)
        s = section_new(l->c, section, l->line, &e);
    if (s == NULL)
        goto fail;
    for (i = 0; s->dirs[i].name != NULL; i++)
        if (strcmp(s->dirs[i].name, name) == 0)
            break;
    if (s->dirs[i].name == NULL) {
        ck_err_set(&e, CK_ECONFIG, "unknown directive '%s' in [%s]", name, section);
        goto fail;
    }
    if (s->given[i] && !(s->dirs[i].flags & CK_DIR_MULTI)) {
        ck_err_set(&e, CK_ECONFIG, "'%s' given twice in [%s]", name, section);
        goto fail;
    }
    /* keys, names and paths reach JSON records and pickled str */
    if (!ck_utf8_valid(value, strlen(value))) {
        ck_err_set(&e, CK_ECONFIG, "%s: the value is not valid UTF-8", name);
        goto fail;
    }
    cx = (ck_conf_ctx_t){ &l->c->arena, &e, l->c->path, l->line, s->name,
                          l->c, NULL, l->where };
    if (s->dirs[i].set(&cx, &s->dirs[i], s->conf, value) < 0)
        goto fail;
    s->given[i] = 1;
    if (s->conf == &l->c->pipeline && l->c->chain_line == 0)
        l->c->chain_line = l->line;
    return 1;
fail:
    if (e.code != CK_ENOMEM)
        e.code = CK_ECONFIG;
    load_fail(l, &e);
    return 0;
}

static int apply_defaults(ck_conf_t *c, ck_section_t *s, ck_err_t *err)
{
    ck_err_t e = { 0 };
    ck_conf_ctx_t cx = { &c->arena, &e, c->path, s->line, s->name, c,
                         s->after };

    for (size_t i = 0; s->dirs[i].name != NULL; i++) {
        if (s->given[i] || s->dirs[i].def == NULL)
            continue;
        if (s->dirs[i].set(&cx, &s->dirs[i], s->conf, s->dirs[i].def) < 0)
            return ck_err_set(err, e.code == CK_ENOMEM ? CK_ENOMEM : CK_ECONFIG,
                              "%s: [%s] default of %s: %s",
                              c->path, s->name, s->dirs[i].name, e.msg);
    }
    if (s->plugin != NULL && s->plugin->init_conf != NULL) {
        int code;

        if (s->plugin->init_conf(&cx, s->conf) == 0)
            return 0;
        code = e.code == CK_ENOMEM ? CK_ENOMEM : CK_ECONFIG;
        if (cx.set != NULL)
            return ck_err_set(err, code, "--set '%s': %s", cx.set, e.msg);
        return ck_err_set(err, code, "%s:%d: [%s] %s", c->path, cx.line,
                          s->name, e.msg);
    }
    return 0;
}

/*
 * A plugin's section the chain does not run would silently do nothing (a
 * [config_override] with chain = optimizer_strip): refused at its header,
 * the first in the file first.
 */
static int sections_in_chain(ck_conf_t *c, ck_err_t *err)
{
    const ck_section_t *first = NULL;
    char chain[256] = "";

    for (const ck_section_t *s = c->sections; s != NULL; s = s->next)
        if (s->plugin != NULL && !s->in_chain &&
            (first == NULL || s->line < first->line))
            first = s;
    if (first == NULL)
        return 0;
    for (size_t i = 0; i < c->nchain; i++)
        snprintf(chain + strlen(chain), sizeof(chain) - strlen(chain), "%s%s",
                 i ? " " : "", c->pipeline.chain.v[i]);
    return ck_err_set(err, CK_ECONFIG,
                      "%s:%d: [%s] is not in the chain ([pipeline] chain = "
                      "%s): its directives would do nothing", c->path,
                      first->line, first->name, chain);
}

/*
 * The --set lines, "SECTION.DIRECTIVE=VALUE", read after the file as if
 * they ended it: through the same handler, so they are checked the same
 * way; an error names the --set.
 */
static int load_sets(load_t *l, const char *const *sets, size_t nsets)
{
    for (size_t i = 0; i < nsets && l->err_line == 0; i++) {
        const char *dot = strchr(sets[i], '.'), *eq = strchr(sets[i], '=');
        char section[64], name[64];
        ck_err_t e = { 0 };

        l->where = sets[i];
        if (dot == NULL || eq == NULL || eq < dot || dot == sets[i] ||
            eq == dot + 1 || (size_t)(dot - sets[i]) >= sizeof(section) ||
            (size_t)(eq - dot - 1) >= sizeof(name)) {
            ck_err_set(&e, CK_ECONFIG, "not SECTION.DIRECTIVE=VALUE");
            load_fail(l, &e);
            break;
        }
        snprintf(section, sizeof(section), "%.*s", (int)(dot - sets[i]),
                 sets[i]);
        snprintf(name, sizeof(name), "%.*s", (int)(eq - dot - 1), dot + 1);
        handler(l, section, name, eq + 1);
    }
    l->where = NULL;
    return l->err_line ? l->err->code : 0;
}

static int load(ck_conf_t *c, const char *path, const ck_buf_t *text,
                const char *const *sets, size_t nsets, ck_err_t *err)
{
    load_t l = { 0 };
    ck_section_t *core[4];
    int rc;

    memset(c, 0, sizeof(*c));
    c->path = ck_arena_strdup(&c->arena, path);
    if (c->path == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    l.c = c;
    l.err = err;
    l.f = fmemopen(text->data, text->len, "r");
    if (l.f == NULL)
        return ck_err_set(err, CK_ECONFIG, "%s: %s", path, strerror(errno));
    ini_use_stack = 0;
    ini_allow_realloc = 1;
    ini_max_line = 64 * 1024;
    rc = ini_parse_stream(reader, &l, handler, &l);
    fclose(l.f);
    if (rc == 0 && !l.err_line)
        rc = load_sets(&l, sets, nsets);
    if (rc != 0 || l.err_line) {
        if (err->code == 0)
            ck_err_set(err, CK_ECONFIG, "%s:%d: syntax error", path, rc);
        return err->code;
    }
    /* the core sections exist even when the file omits them */
    core[0] = section_find(c, "pipeline");
    core[1] = section_find(c, "security");
    core[2] = section_find(c, "watch");
    core[3] = section_find(c, "output");
    if ((core[0] == NULL && section_new(c, "pipeline", 0, err) == NULL) ||
        (core[1] == NULL && section_new(c, "security", 0, err) == NULL) ||
        (core[2] == NULL && section_new(c, "watch", 0, err) == NULL) ||
        (core[3] == NULL && section_new(c, "output", 0, err) == NULL))
        return err->code;
    c->nchain = c->pipeline.chain.n;
    c->chain = ck_arena_alloc(&c->arena, (c->nchain + 1) * sizeof(*c->chain));
    if (c->chain == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    for (size_t i = 0; i < c->nchain; i++) {
        const char *word = c->pipeline.chain.v[i];
        size_t base = strcspn(word, ":");
        ck_section_t *s = section_find(c, word);

        if (s == NULL) {
            if (ck_plugin_find(word, base) == NULL)
                return ck_err_set(err, CK_ECONFIG,
                                  "%s:%d: unknown plugin '%.*s' in chain", path,
                                  c->chain_line, (int)base, word);
            s = section_new(c, word, c->chain_line, err);
            if (s == NULL)
                return err->code;
        }
        if (s->plugin == NULL)
            return ck_err_set(err, CK_ECONFIG, "%s:%d: '%s' is not a plugin",
                              path, c->chain_line, word);
        c->chain[i].plugin = s->plugin;
        c->chain[i].label = s->label;
        c->chain[i].conf = s->conf;
        s->in_chain = 1;
        s->after = i + 1 < c->nchain ? c->pipeline.chain.v[i + 1] : NULL;
    }
    rc = sections_in_chain(c, err);
    if (rc < 0)
        return rc;
    /* core's sections first: a plugin's init_conf may open a file under
     * [security] (expect's reference checkpoint) */
    for (int plugins = 0; plugins < 2; plugins++) {
        for (ck_section_t *s = c->sections; s != NULL; s = s->next) {
            if ((s->plugin != NULL) != plugins)
                continue;
            rc = apply_defaults(c, s, err);
            if (rc < 0)
                return rc;
        }
        if (!plugins)
            c->allow = (const char **)c->security.allow_globals.v;
    }
    rc = ck_watch_conf_check(c, err);
    if (rc < 0)
        return rc;
    c->watch.out_ext = c->output.format == CK_OUT_SAFETENSORS
                           ? ".safetensors" : NULL;
    return 0;
}

int ck_conf_load_ex(ck_conf_t *c, const char *path, const char *const *sets,
                    size_t nsets, ck_err_t *err)
{
    int is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "r");
    ck_buf_t text = { 0 };
    char chunk[8192];
    size_t n;
    int rc;

    memset(c, 0, sizeof(*c));
    if (f == NULL)
        return ck_err_set(err, CK_ECONFIG, "%s: %s", path, strerror(errno));
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 &&
           text.len <= CONF_MAX_BYTES)
        ck_buf_put(&text, chunk, n);
    rc = ferror(f) ? -EIO : 0;
    if (!is_stdin)
        fclose(f);
    if (rc < 0 || text.len > CONF_MAX_BYTES) {
        ck_buf_release(&text);
        return ck_err_set(err, CK_ECONFIG, "%s: %s", path,
                          rc < 0 ? "read error" : "larger than 16 MiB");
    }
    n = text.len;
    ck_buf_putc(&text, '\n'); /* fmemopen wants a buffer; ini a last line */
    if (text.oom) {
        ck_buf_release(&text);
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    }
    rc = load(c, is_stdin ? "<stdin>" : path, &text, sets, nsets, err);
    /* taken now: records of jobs run with this configuration name it, even
     * after the file is edited: the SHA-256 of the file's bytes, then of
     * each --set line when there are some */
    text.len = n;
    for (size_t i = 0; rc == 0 && i < nsets; i++)
        ck_buf_printf(&text, "\n--set %s", sets[i]);
    if (rc == 0 && (text.oom ||
                    ck_sha256_buf(text.data ? text.data : (uint8_t *)"",
                                  text.len, c->digest) < 0))
        c->digest[0] = '\0';
    ck_buf_release(&text);
    return rc;
}

int ck_conf_load(ck_conf_t *c, const char *path, ck_err_t *err)
{
    return ck_conf_load_ex(c, path, NULL, 0, err);
}

void ck_conf_release(ck_conf_t *c)
{
    for (cleanup_t *k = c->cleanups; k != NULL; k = k->next)
        k->fn(k->data);
    ck_arena_release(&c->arena);
    memset(c, 0, sizeof(*c));
}

void ck_conf_limits(const ck_conf_t *c, ck_limits_t *lim)
{
    ck_limits_default(lim);
    if (c == NULL)
        return;
    lim->max_pickle_bytes = c->security.max_pickle_bytes;
    /* the writer recurses: keep well inside a thread's stack */
    lim->max_depth = c->security.max_depth > 10000
                         ? 10000 : (uint32_t)c->security.max_depth;
    lim->max_memo = c->security.max_memo > UINT32_MAX
                        ? UINT32_MAX : (uint32_t)c->security.max_memo;
    lim->max_string_bytes = c->security.max_string_bytes;
}

void ck_conf_open_opts(const ck_conf_t *c, ck_open_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    ck_conf_limits(c, &o->lim);
    o->allow = c ? c->allow : NULL;
    o->allow_numpy = c ? c->security.allow_numpy : 0;
}
