/*
 * record.c -- the JSON record of a job.  See record.h.
 *
 * Building writes the keys in one fixed order (the audit log's readers and
 * the tests rely on it); parsing looks each key up by the same name.
 */
#define _GNU_SOURCE
#include "record.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* one key and its value: the record is mostly these */
static void put_str(ck_json_t *rec, const char *k, const char *v)
{
    ck_json_key(rec, k);
    ck_json_str(rec, v);
}

static void put_u64(ck_json_t *rec, const char *k, uint64_t v)
{
    ck_json_key(rec, k);
    ck_json_u64(rec, v);
}

static void put_int(ck_json_t *rec, const char *k, int64_t v)
{
    ck_json_key(rec, k);
    ck_json_int(rec, v);
}

void ck_record_build(ck_json_t *rec, const ck_record_t *r)
{
    ck_json_obj(rec);
    put_str(rec, CK_REC_TS, r->ts);
    put_str(rec, CK_REC_VERSION, r->version);
    ck_json_key(rec, CK_REC_INPUT);
    ck_json_obj(rec);
    put_str(rec, CK_REC_PATH, r->in.path);
    put_u64(rec, CK_REC_SIZE, r->in.size);
    if (r->in.digest != NULL && r->in.digest[0] != '\0') {
        put_str(rec, CK_REC_DIGEST, r->in.digest);
        put_str(rec, CK_REC_DIGEST_KIND, CK_REC_DIGEST_FINGERPRINT);
    }
    if (r->in.opened) {
        /* with path and size, what the daemon knows a done input by */
        put_u64(rec, CK_REC_INODE, r->in.inode);
        put_int(rec, CK_REC_MTIME_NS, r->in.mtime_ns);
        put_str(rec, CK_REC_FORMAT, r->in.format);
    }
    ck_json_end(rec);
    if (r->wrote) {
        ck_json_key(rec, CK_REC_OUTPUT);
        ck_json_obj(rec);
        put_str(rec, CK_REC_PATH, r->out.path);
        put_u64(rec, CK_REC_SIZE, r->out.size);
        put_str(rec, CK_REC_DIGEST, r->out.digest);
        put_str(rec, CK_REC_DIGEST_KIND, CK_REC_DIGEST_FINGERPRINT);
        put_u64(rec, CK_REC_STORAGES, r->out.storages);
        put_u64(rec, CK_REC_STORAGE_BYTES, r->out.storage_bytes);
        if (r->out.replaced != NULL) {
            ck_json_key(rec, CK_REC_REPLACED);
            ck_json_obj(rec);
            put_str(rec, CK_REC_PATH, r->out.replaced);
            put_u64(rec, CK_REC_SIZE, r->out.replaced_size);
            put_int(rec, CK_REC_MTIME_NS, r->out.replaced_mtime_ns);
            ck_json_end(rec);
        }
        ck_json_end(rec);
    }
    put_str(rec, CK_REC_STATUS, r->status);
    if (r->error_code != NULL) {
        ck_json_key(rec, CK_REC_ERROR);
        ck_json_obj(rec);
        put_str(rec, CK_REC_CODE, r->error_code);
        put_str(rec, CK_REC_MESSAGE, r->error_message);
        ck_json_end(rec);
    }
    if (r->dry_run) {
        ck_json_key(rec, CK_REC_DRY_RUN);
        ck_json_bool(rec, 1);
    }
    put_int(rec, CK_REC_DURATION_MS, r->duration_ms);
    ck_json_key(rec, CK_REC_CONFIG);
    ck_json_obj(rec);
    put_str(rec, CK_REC_PATH, r->config_path);
    if (r->config_digest != NULL && r->config_digest[0] != '\0') {
        put_str(rec, CK_REC_DIGEST, r->config_digest);
    }
    ck_json_end(rec);
    ck_json_key(rec, CK_REC_PLUGINS);
    if (r->plugins != NULL)
        ck_json_raw(rec, r->plugins, r->plugins_len);
    else
        ck_json_raw(rec, "[]", 2);
    ck_json_end(rec);
}

void ck_record_fallback(ck_buf_t *b, const char *in_path)
{
    ck_json_t j = { .b = *b };

    ck_json_obj(&j);
    ck_json_key(&j, CK_REC_INPUT);
    ck_json_obj(&j);
    ck_json_key(&j, CK_REC_PATH);
    ck_json_str(&j, in_path);
    ck_json_end(&j);
    ck_json_key(&j, CK_REC_STATUS);
    ck_json_str(&j, "failed");
    ck_json_key(&j, CK_REC_ERROR);
    ck_json_obj(&j);
    ck_json_key(&j, CK_REC_CODE);
    ck_json_str(&j, ck_errname(CK_ENOMEM));
    ck_json_key(&j, CK_REC_MESSAGE);
    ck_json_str(&j, ck_strerror(CK_ENOMEM));
    ck_json_end(&j);
    ck_json_end(&j);
    ck_buf_putc(&j.b, '\0');
    *b = j.b;
    ck_buf_release(&j.levels);
}

/* What a parsed record's strings point into. */
typedef struct {
    json_t *root;
    char *plugins;      /* json_dumps of the plugins array */
} doc_t;

static const char *str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static uint64_t u64(json_t *o, const char *key)
{
    return (uint64_t)json_integer_value(json_object_get(o, key));
}

int ck_record_parse(const char *text, size_t n, ck_record_t *r)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, n, 0, &jerr), *in, *out, *e, *c, *pl;
    doc_t *doc;

    memset(r, 0, sizeof(*r));
    if (!json_is_object(root)) {
        json_decref(root);
        return CK_EFORMAT;
    }
    doc = ck_calloc(1, sizeof(*doc));
    if (doc == NULL) {
        json_decref(root);
        return CK_ENOMEM;
    }
    doc->root = root;
    r->doc = doc;
    r->seq = u64(root, CK_REC_SEQ);
    r->host = str(root, CK_REC_HOST);
    r->ts = str(root, CK_REC_TS);
    r->version = str(root, CK_REC_VERSION);
    in = json_object_get(root, CK_REC_INPUT);
    r->in.path = str(in, CK_REC_PATH);
    r->in.size = u64(in, CK_REC_SIZE);
    r->in.digest = str(in, CK_REC_DIGEST);
    r->in.opened = json_object_get(in, CK_REC_INODE) != NULL;
    r->in.inode = u64(in, CK_REC_INODE);
    r->in.mtime_ns = json_integer_value(json_object_get(in, CK_REC_MTIME_NS));
    r->in.format = str(in, CK_REC_FORMAT);
    out = json_object_get(root, CK_REC_OUTPUT);
    r->wrote = json_is_object(out);
    r->out.path = str(out, CK_REC_PATH);
    r->out.size = u64(out, CK_REC_SIZE);
    r->out.digest = str(out, CK_REC_DIGEST);
    r->out.storages = u64(out, CK_REC_STORAGES);
    r->out.storage_bytes = u64(out, CK_REC_STORAGE_BYTES);
    r->out.replaced = str(json_object_get(out, CK_REC_REPLACED), CK_REC_PATH);
    r->status = str(root, CK_REC_STATUS);
    e = json_object_get(root, CK_REC_ERROR);
    r->error_code = str(e, CK_REC_CODE);
    r->error_message = str(e, CK_REC_MESSAGE);
    r->dry_run = json_is_true(json_object_get(root, CK_REC_DRY_RUN));
    r->duration_ms = json_integer_value(json_object_get(root,
                                                        CK_REC_DURATION_MS));
    c = json_object_get(root, CK_REC_CONFIG);
    r->config_path = str(c, CK_REC_PATH);
    r->config_digest = str(c, CK_REC_DIGEST);
    pl = json_object_get(root, CK_REC_PLUGINS);
    if (pl != NULL) {
        doc->plugins = json_dumps(pl, JSON_COMPACT | JSON_PRESERVE_ORDER |
                                          JSON_ENCODE_ANY);
        if (doc->plugins == NULL) {
            ck_record_release(r);
            return CK_ENOMEM;
        }
        r->plugins = doc->plugins;
        r->plugins_len = strlen(doc->plugins);
    }
    return 0;
}

void ck_record_release(ck_record_t *r)
{
    doc_t *doc = r->doc;

    if (doc != NULL) {
        free(doc->plugins);
        json_decref(doc->root);
        ck_free(doc);
    }
    memset(r, 0, sizeof(*r));
}

char *ck_record_reading(const char *s)
{
    ck_buf_t b = { 0 };
    json_error_t jerr;
    json_t *v;
    char *out = NULL;

    ck_json_quote(&b, s, strlen(s));
    if (b.oom)
        goto out;
    v = json_loadb((const char *)b.data, b.len, JSON_DECODE_ANY |
                   JSON_ALLOW_NUL, &jerr);
    if (json_is_string(v))
        out = ck_strdup(json_string_value(v));
    json_decref(v);
out:
    ck_buf_release(&b);
    return out;
}

/* ---- the plan: a record's changes for a person ------------------------ */

/* A JSON value as a short text: a str as itself, the rest compact JSON,
 * cut at 200 bytes. */
static void plan_value(ck_buf_t *b, json_t *v)
{
    char *t;

    if (json_is_string(v)) {
        ck_buf_printf(b, "%s", json_string_value(v));
        return;
    }
    t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
    if (t == NULL)
        return;
    if (strlen(t) > 200)
        ck_buf_printf(b, "%.200s...", t);
    else
        ck_buf_printf(b, "%s", t);
    free(t);
}

/* One change: "WHERE: OP KEY -> TO / OLD -> NEW (N bytes) k=v ...". */
static void plan_change(ck_buf_t *b, const char *who, json_t *c)
{
    static const char *const place[] = { "state", "config", "path" };
    const char *k;
    json_t *v;

    ck_buf_printf(b, "  %s: ", who);
    for (size_t i = 0; i < 3; i++) {
        v = json_object_get(c, place[i]);
        if (json_is_string(v) && strcmp(place[i], "path") != 0) {
            plan_value(b, v);
            ck_buf_printf(b, ": ");
        }
    }
    plan_value(b, json_object_get(c, "op"));
    if ((v = json_object_get(c, "path")) != NULL) {
        ck_buf_putc(b, ' ');
        plan_value(b, v);
    }
    if ((v = json_object_get(c, "key")) != NULL ||
        (v = json_object_get(c, "from")) != NULL) {
        ck_buf_putc(b, ' ');
        plan_value(b, v);
    }
    if ((v = json_object_get(c, "to")) != NULL) {
        ck_buf_printf(b, " -> ");
        plan_value(b, v);
    }
    if ((v = json_object_get(c, "old")) != NULL) {
        ck_buf_printf(b, json_object_get(c, "new") ? ": " : " (was ");
        plan_value(b, v);
        ck_buf_printf(b, json_object_get(c, "new") ? "" : ")");
    }
    if ((v = json_object_get(c, "new")) != NULL) {
        ck_buf_printf(b, json_object_get(c, "old") ? " -> " : " = ");
        plan_value(b, v);
    }
    if (json_is_integer(v = json_object_get(c, "bytes")))
        ck_buf_printf(b, " (%lld bytes)", (long long)json_integer_value(v));
    json_object_foreach(c, k, v) {
        if (strcmp(k, "op") && strcmp(k, "state") && strcmp(k, "config") &&
            strcmp(k, "path") && strcmp(k, "key") && strcmp(k, "to") &&
            strcmp(k, "from") &&
            strcmp(k, "old") && strcmp(k, "new") && strcmp(k, "bytes")) {
            ck_buf_printf(b, " %s=", k);
            plan_value(b, v);
        }
    }
    ck_buf_putc(b, '\n');
}

int ck_record_plan(const char *text, size_t n, ck_buf_t *out)
{
    json_t *root = json_loadb(text, n, 0, NULL), *plugins, *p;
    size_t i, nchanges = 0;
    int rc = 0;

    plugins = json_object_get(root, CK_REC_PLUGINS);
    if (!json_is_array(plugins)) {
        json_decref(root);
        return CK_EFORMAT;
    }
    json_array_foreach(plugins, i, p) {
        const char *name = json_string_value(json_object_get(p, "name"));
        const char *label = json_string_value(json_object_get(p, "label"));
        json_t *changes = json_object_get(p, "changes"), *c;
        char who[160];
        size_t k;

        snprintf(who, sizeof(who), "%s%s%s", name ? name : "?",
                 label ? ":" : "", label ? label : "");
        json_array_foreach(changes, k, c) {
            plan_change(out, who, c);
            nchanges++;
        }
    }
    if (nchanges == 0)
        ck_buf_printf(out, "  (no change)\n");
    if (out->oom)
        rc = CK_ENOMEM;
    json_decref(root);
    return rc;
}

char *ck_record_unlogged(const char *text, size_t n)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, n, 0, &jerr);
    char *s, *out = NULL;

    if (!json_is_object(root))
        goto out;
    json_object_del(root, CK_REC_SEQ);
    json_object_del(root, CK_REC_HOST);
    s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (s != NULL)
        out = ck_strdup(s);
    free(s);
out:
    json_decref(root);
    return out;
}

/* ---- skimming: three fields of a line, without building it --------------- */

typedef struct {
    const char *p, *end;
    int bad;
} skim_t;

static void sk_ws(skim_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\r' ||
                             *s->p == '\n'))
        s->p++;
}

static int sk_is(skim_t *s, char c)
{
    sk_ws(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return 1;
    }
    return 0;
}

/* A string (at its opening quote): its raw bytes [*a, *b), and whether it
 * holds an escape. */
static int sk_str(skim_t *s, const char **a, const char **b, int *esc)
{
    sk_ws(s);
    if (s->p >= s->end || *s->p != '"')
        return s->bad = 1, 0;
    *a = ++s->p;
    *esc = 0;
    for (;;) {
        const char *q = s->p;

        while (q < s->end && *q != '"' && *q != '\\')
            q++;
        if (q >= s->end)
            return s->bad = 1, 0;
        if (*q == '"') {
            *b = q;
            s->p = q + 1;
            return 1;
        }
        *esc = 1;
        s->p = q + 2;       /* the escape and the character after it */
        if (s->p > s->end)
            return s->bad = 1, 0;
    }
}

/* Any value: skipped. */
static void sk_value(skim_t *s)
{
    int depth = 0;

    do {
        const char *a, *b;
        int esc;

        sk_ws(s);
        if (s->p >= s->end) {
            s->bad = 1;
            return;
        }
        switch (*s->p) {
        case '"':
            sk_str(s, &a, &b, &esc);
            break;
        case '{':
        case '[':
            depth++;
            s->p++;
            break;
        case '}':
        case ']':
            depth--;
            s->p++;
            break;
        default:            /* numbers, literals, ',' and ':' inside */
            s->p++;
            while (s->p < s->end && !strchr("\"{}[],: \t\r\n", *s->p))
                s->p++;
            if (depth > 0)
                while (s->p < s->end && strchr(",: \t\r\n", *s->p))
                    s->p++;
            break;
        }
    } while (depth > 0 && !s->bad);
}

static int key_is(const char *a, const char *b, const char *k)
{
    return (size_t)(b - a) == strlen(k) && memcmp(a, k, (size_t)(b - a)) == 0;
}

/* The members of an object: for the one named k, its string value (raw,
 * without escapes) into [*va, *vb); the others skipped.  Stops after k
 * when stop. */
static void sk_find(skim_t *s, const char *k, const char **va,
                    const char **vb, int *vesc)
{
    if (!sk_is(s, '{')) {
        s->bad = 1;
        return;
    }
    if (sk_is(s, '}'))
        return;
    do {
        const char *a, *b;
        int esc;

        if (!sk_str(s, &a, &b, &esc) || !sk_is(s, ':'))
            return;
        if (!esc && key_is(a, b, k)) {
            sk_ws(s);
            if (s->p < s->end && *s->p == '"')
                sk_str(s, va, vb, vesc);
            else
                sk_value(s);
        } else {
            sk_value(s);
        }
    } while (!s->bad && sk_is(s, ','));
    if (!s->bad && !sk_is(s, '}'))
        s->bad = 1;
}

/* The string value after the first needle (which ends with its opening
 * quote) in [p, end), without escapes: its end, or NULL. */
static const char *after(const char *p, const char *end, const char *needle,
                         const char **val)
{
    size_t k = strlen(needle);
    const char *q = memmem(p, (size_t)(end - p), needle, k), *e;

    if (q == NULL)
        return NULL;
    *val = q + k;
    e = memchr(*val, '"', (size_t)(end - *val));
    if (e == NULL || memchr(*val, '\\', (size_t)(e - *val)) != NULL)
        return NULL;
    return e;
}

/*
 * A line as this daemon's audit log writes it ({"seq":N,"host":"...", then
 * the record's keys in the builder's order, compact): input.path is the
 * first "path" after "input", status the first "status" key (no key before
 * it in the record holds one, and a quote inside a string is escaped, so
 * the bytes cannot occur there).  1 when read, 0 to skim it in full.
 */
static int skim_own(const char *text, size_t n, ck_record_skim_t *r)
{
    const char *end = text + n, *p = text + 7, *pe, *se, *ce;
    const char *path, *status, *code;

    if (n < 7 || memcmp(text, "{\"seq\":", 7) != 0)
        return 0;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    if ((size_t)(end - p) < 9 || memcmp(p, ",\"host\":\"", 9) != 0)
        return 0;
    pe = after(p, end, "\"" CK_REC_INPUT "\":{\"" CK_REC_PATH "\":\"", &path);
    se = pe ? after(pe, end, "\"" CK_REC_STATUS "\":\"", &status) : NULL;
    if (se == NULL || !ck_utf8_valid(path, (size_t)(pe - path)))
        return 0;
    r->path = path;
    r->path_len = (size_t)(pe - path);
    r->status = status;
    r->status_len = (size_t)(se - status);
    if (r->status_len == 2 && memcmp(status, "ok", 2) == 0)
        return 1;
    /* a failed record: its error follows its status */
    if ((size_t)(end - se) > 11 && memcmp(se + 1, ",\"" CK_REC_ERROR "\":{",
                                          10) == 0) {
        ce = after(se, se + 32 < end ? se + 32 : end,
                   "{\"" CK_REC_CODE "\":\"", &code);
        if (ce == NULL)
            return 0;
        r->error_code = code;
        r->error_code_len = (size_t)(ce - code);
    }
    return 1;
}

int ck_record_skim(const char *text, size_t n, ck_record_skim_t *r)
{
    skim_t s = { text, text + n, 0 };
    const char *pa = NULL, *pb = NULL, *sa = NULL, *sb = NULL;
    const char *ca = NULL, *cb = NULL;
    int pesc = 0, sesc = 0, cesc = 0;

    memset(r, 0, sizeof(*r));
    if (skim_own(text, n, r))
        return 0;
    memset(r, 0, sizeof(*r));
    if (!sk_is(&s, '{'))
        return CK_EFORMAT;
    if (!sk_is(&s, '}')) {
        do {
            const char *a, *b;
            int esc;

            if (!sk_str(&s, &a, &b, &esc) || !sk_is(&s, ':'))
                break;
            sk_ws(&s);
            if (esc)
                sk_value(&s);
            else if (key_is(a, b, CK_REC_INPUT) && s.p < s.end && *s.p == '{')
                sk_find(&s, CK_REC_PATH, &pa, &pb, &pesc);
            else if (key_is(a, b, CK_REC_STATUS) && s.p < s.end &&
                     *s.p == '"')
                sk_str(&s, &sa, &sb, &sesc);
            else if (key_is(a, b, CK_REC_ERROR) && s.p < s.end && *s.p == '{')
                sk_find(&s, CK_REC_CODE, &ca, &cb, &cesc);
            else
                sk_value(&s);
            /* what follows (config, plugins) says nothing more of these:
             * done once input and status are known, and error, if failed */
            if (pa != NULL && sa != NULL && (ca != NULL ||
                (sb - sa == 2 && memcmp(sa, "ok", 2) == 0)))
                goto found;
        } while (!s.bad && sk_is(&s, ','));
        if (s.bad || !sk_is(&s, '}'))
            return CK_EFORMAT;
        sk_ws(&s);
        if (s.p != s.end)
            return CK_EFORMAT;
    }
found:
    /* escapes, and bytes jansson would refuse, are jansson's to read */
    if (s.bad || pesc || sesc || cesc ||
        (pa != NULL && !ck_utf8_valid(pa, (size_t)(pb - pa))))
        return CK_EFORMAT;
    r->path = pa;
    r->path_len = pa ? (size_t)(pb - pa) : 0;
    r->status = sa;
    r->status_len = sa ? (size_t)(sb - sa) : 0;
    r->error_code = ca;
    r->error_code_len = ca ? (size_t)(cb - ca) : 0;
    return 0;
}
