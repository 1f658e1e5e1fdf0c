/*
 * pyre.c -- Python's re.sub over PCRE2 (see pyre.h).
 *
 * A rule is the compiled pattern and the template cut into parts: literal
 * text or a group number.  The template is parsed as CPython's
 * sre_parse.parse_template parses it, so the same template is refused with
 * the same reason.  Matching follows pcre2demo's loop for global matching,
 * which gives Perl's and Python 3.7's result for empty matches: after an
 * empty match at i the next is tried at i as non-empty and anchored, then
 * from the next character.
 */
#define _GNU_SOURCE
#define PCRE2_CODE_UNIT_WIDTH 8
#include "pyre.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MATCH_LIMIT 1000000u /* backtracking steps per match attempt */

typedef struct {
    const char *text; /* NULL: group */
    size_t len;
    unsigned group;
} part_t;

struct ck_pyre {
    pcre2_code *code;
    pcre2_match_context *mctx;
    unsigned ngroups;
    part_t *parts;
    size_t nparts;
    char *lit;        /* the literal bytes the parts point into */
    int caseless;     /* (?i) somewhere: see python_only_fold */
};

void ck_pyre_free(ck_pyre_t *re)
{
    if (re == NULL)
        return;
    pcre2_code_free(re->code);
    pcre2_match_context_free(re->mctx);
    ck_free(re->parts);
    ck_free(re->lit);
    ck_free(re);
}

unsigned ck_pyre_groups(const ck_pyre_t *re)
{
    return re->ngroups;
}

/* Code point v (< 0x800) as UTF-8 at d: 1 or 2 bytes. */
static size_t utf8_put(char *d, unsigned v)
{
    if (v < 0x80) {
        d[0] = (char)v;
        return 1;
    }
    d[0] = (char)(0xc0 | v >> 6);
    d[1] = (char)(0x80 | (v & 0x3f));
    return 2;
}

static int add_part(ck_pyre_t *re, const char *text, size_t len,
                    unsigned group)
{
    part_t *np = ck_realloc(re->parts, (re->nparts + 1) * sizeof(*np));

    if (np == NULL)
        return CK_ENOMEM;
    re->parts = np;
    np[re->nparts].text = text;
    np[re->nparts].len = len;
    np[re->nparts].group = group;
    re->nparts++;
    return 0;
}

static int is_octal(char c)
{
    return c >= '0' && c <= '7';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int group_ref(ck_pyre_t *re, unsigned g, ck_err_t *err)
{
    if (g > re->ngroups)
        return ck_err_set(err, CK_ECONFIG, "invalid group reference %u", g);
    return add_part(re, NULL, 0, g);
}

/* \g<...>: a number or a group name; s points after "\g". */
static int named_ref(ck_pyre_t *re, const char **s, ck_err_t *err)
{
    const char *p = *s, *end;
    char name[256];
    size_t n;
    int num;

    if (*p != '<')
        return ck_err_set(err, CK_ECONFIG, "missing < after \\g");
    end = strchr(p + 1, '>');
    if (end == NULL)
        return ck_err_set(err, CK_ECONFIG, "missing >, unterminated name");
    n = (size_t)(end - p - 1);
    if (n == 0)
        return ck_err_set(err, CK_ECONFIG, "missing group name");
    if (n >= sizeof(name))
        return ck_err_set(err, CK_ECONFIG, "bad character in group name");
    memcpy(name, p + 1, n);
    name[n] = '\0';
    *s = end + 1;
    if (strspn(name, "0123456789") == n) {
        unsigned long g = n > 9 ? 1000000000ul : strtoul(name, NULL, 10);

        if (g > re->ngroups)
            return ck_err_set(err, CK_ECONFIG, "invalid group reference %s",
                              name);
        return add_part(re, NULL, 0, (unsigned)g);
    }
    if (is_digit(name[0]) ||
        strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789_") != n)
        return ck_err_set(err, CK_ECONFIG, "bad character in group name '%s'",
                          name);
    num = pcre2_substring_number_from_name(re->code, (PCRE2_SPTR)name);
    if (num < 0)
        return ck_err_set(err, CK_ECONFIG, "unknown group name '%s'", name);
    return add_part(re, NULL, 0, (unsigned)num);
}

/* Cut repl into parts; escapes are decoded into re->lit. */
static int parse_template(ck_pyre_t *re, const char *repl, ck_err_t *err)
{
    size_t n = strlen(repl), o = 0, run = 0;
    const char *s = repl;
    int rc = 0;

    re->lit = ck_malloc(n + 1);
    if (re->lit == NULL)
        return CK_ENOMEM;
#define FLUSH()                                                               \
    do {                                                                      \
        if (o > run && (rc = add_part(re, re->lit + run, o - run, 0)) < 0)    \
            return rc;                                                        \
        run = o;                                                              \
    } while (0)
    while (*s != '\0') {
        char c = *s++, e;

        if (c != '\\') {
            re->lit[o++] = c;
            continue;
        }
        e = *s;
        if (e == '\0')
            return ck_err_set(err, CK_ECONFIG, "bad escape (end of pattern)");
        s++;
        if (e == 'g') {
            FLUSH();
            rc = named_ref(re, &s, err);
        } else if (e == '0') {
            unsigned v = 0;

            for (int k = 0; k < 2 && is_octal(*s); k++)
                v = v * 8 + (unsigned)(*s++ - '0');
            o += utf8_put(re->lit + o, v);
        } else if (is_digit(e)) {
            unsigned g = (unsigned)(e - '0');

            if (is_digit(*s)) {
                if (is_octal(e) && is_octal(*s) && is_octal(s[1])) {
                    unsigned v = g * 64 + (unsigned)(s[0] - '0') * 8 +
                                 (unsigned)(s[1] - '0');

                    if (v > 0377)
                        return ck_err_set(err, CK_ECONFIG,
                                          "octal escape value \\%c%c%c "
                                          "outside of range 0-0o377",
                                          e, s[0], s[1]);
                    s += 2;
                    o += utf8_put(re->lit + o, v); /* a character, in a str */
                    continue;
                }
                g = g * 10 + (unsigned)(*s++ - '0');
            }
            FLUSH();
            rc = group_ref(re, g, err);
        } else if (strchr("abfnrtv", e) != NULL) {
            static const char from[] = "abfnrtv", to[] = "\a\b\f\n\r\t\v";

            re->lit[o++] = to[strchr(from, e) - from];
        } else if (e == '\\') {
            re->lit[o++] = '\\';
        } else if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z')) {
            return ck_err_set(err, CK_ECONFIG, "bad escape \\%c", e);
        } else {
            re->lit[o++] = '\\'; /* kept: Python leaves \. as it is */
            re->lit[o++] = e;
        }
        if (rc < 0)
            return rc;
    }
    FLUSH();
#undef FLUSH
    return 0;
}

/* An open parenthesis: a capturing group, a lookbehind or anything else. */
typedef struct {
    char kind; /* 'g' group, 'b' lookbehind, 'o' other */
    unsigned group;
} open_t;

typedef struct {
    const char *s;
    size_t len;
    unsigned group;
} gname_t;

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
           (c >= 'A' && c <= 'F');
}

/* The group named s[0..len) defined so far, else 0. */
static unsigned find_name(const gname_t *nm, size_t nn, const char *s,
                          size_t len)
{
    for (size_t k = 0; k < nn; k++)
        if (nm[k].len == len && memcmp(nm[k].s, s, len) == 0)
            return nm[k].group;
    return 0;
}

/*
 * Under (?i) Python's re holds a few letters equal that PCRE2 does not
 * (every cased code point compared, CPython 3.11 against PCRE2 10.42):
 * I, i, U+0130 and U+0131 all one; U+0390 and U+1FD3; U+03B0 and U+1FE3;
 * U+FB05 and U+FB06.  PCRE2 never matches where Python does not.  Each
 * pair has one of these eight on one side, so a caseless pattern that
 * holds none, over a key that holds none, matches as in Python; otherwise
 * the rule is refused, or the key fails the job, rather than renamed
 * otherwise than Python would.
 */
static const struct {
    unsigned cp;
    const char *utf8;
} python_folds[] = {
    { 0x130, "\xc4\xb0" },      { 0x131, "\xc4\xb1" },
    { 0x390, "\xce\x90" },      { 0x3b0, "\xce\xb0" },
    { 0x1fd3, "\xe1\xbf\x93" }, { 0x1fe3, "\xe1\xbf\xa3" },
    { 0xfb05, "\xef\xac\x85" }, { 0xfb06, "\xef\xac\x86" },
};

#define NFOLDS (sizeof(python_folds) / sizeof(python_folds[0]))

/* The first of them in s[0..n) (its index; its offset in *at), or -1. */
static int python_only_fold(const char *s, size_t n, size_t *at)
{
    int first = -1;

    for (size_t k = 0; k < NFOLDS; k++) {
        const char *hit = memmem(s, n, python_folds[k].utf8,
                                 strlen(python_folds[k].utf8));

        if (hit != NULL && (first < 0 || (size_t)(hit - s) < *at)) {
            first = (int)k;
            *at = (size_t)(hit - s);
        }
    }
    return first;
}

/* The index of code point v among them, or -1. */
static int python_fold_cp(unsigned long v)
{
    for (size_t k = 0; k < NFOLDS; k++)
        if (python_folds[k].cp == v)
            return (int)k;
    return -1;
}

static const char *fold_note(int k)
{
    return k < 2   ? "it holds I, i, U+0130 and U+0131 one letter"
           : k < 6 ? "it holds U+0390 and U+1FD3, U+03B0 and U+1FE3 one "
                     "letter each"
                   : "it holds U+FB05 and U+FB06 one letter";
}

/*
 * What \s matches in a Python str pattern (str.isspace()), spelled out:
 * PCRE2's Unicode \s lacks U+001C to U+001F, which Python's holds, and
 * holds U+180E, which Python's does not.  (\d and \w are the same sets in
 * both: every code point compared, CPython 3.11 against PCRE2 10.42.)
 */
#define PY_SPACE                                                            \
    "\\x{9}-\\x{d}\\x{1c}-\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}"          \
    "\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"

/*
 * Inside a set: the last single character met (a code point, or -1 after
 * a class escape or a range), and a range's start once a '-' follows one.
 * For what PCRE2 would read otherwise than Python: \s, spelled out, at an
 * end of a range; a caseless range over U+0130 or U+0131 (python_folds).
 */
typedef struct {
    long prev, lo;
    int folds;        /* a range holds U+0130 or U+0131 */
} cls_t;

static void cls_atom(cls_t *k, long v)
{
    if (k->lo >= 0 && v >= 0) {
        if (k->lo <= 0x131 && v >= 0x130)
            k->folds = 1;
        k->lo = k->prev = -1; /* a range is no start of another */
        return;
    }
    k->lo = -1;
    k->prev = v;
}

/* The code point of the UTF-8 character at s (len bytes in *len). */
static long utf8_at(const char *s, size_t *len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = u[0] < 0x80 ? 1 : u[0] < 0xe0 ? 2 : u[0] < 0xf0 ? 3 : 4;
    long v = n == 1 ? u[0] : u[0] & (0x7f >> n);

    for (size_t i = 1; i < n; i++) {
        if ((u[i] & 0xc0) != 0x80) { /* not UTF-8: a byte at a time */
            *len = 1;
            return u[0];
        }
        v = v << 6 | (u[i] & 0x3f);
    }
    *len = n;
    return v;
}

/*
 * Python's pattern syntax where PCRE2 reads it otherwise: \Z is PCRE2's
 * \z, \v the character VT (PCRE2: vertical space), \uXXXX and \UXXXXXXXX
 * are \x{...}, {,n} is {0,n}, octal escapes become \x{...} and group
 * references \g{N}, a lookbehind's body is one group (so that PCRE2, like
 * Python, wants one width for all its alternatives).  Whatever Python
 * refuses or reads otherwise than PCRE2 is refused here, so a pattern
 * never means something else than in Python: escapes Python refuses (\h,
 * \K, \Q, \R, \g, \x{...}, \x4 ...: "bad escape"), PCRE2's extensions
 * ((?|, (?U), (?n), (?R), (?1), (?P>, (?<name>, (*VERB) ...), POSIX
 * classes [[:digit:]] (a set in Python), flags other than i m s, global
 * flags after the start, references to groups not yet defined or still
 * open.  A new ck_malloc string into *out, or CK_ECONFIG / CK_ENOMEM.
 */
static int translate(const char *p, char **out, int *caseless,
                     size_t *esc_at, int *esc_k, int *fold_range,
                     ck_err_t *err)
{
    static const char ok[] = "abfnrtvxuUNAZbBdDsSwW";
    size_t n = strlen(p), o = 0, depth = 0, nn = 0, class_first = 0;
    char *t = ck_malloc(3 * n + 16 + (n / 2) * sizeof(PY_SPACE));
    open_t *st = ck_malloc((n + 1) * sizeof(*st));
    unsigned char *isopen = ck_calloc(n + 2, 1);
    gname_t *nm = ck_malloc((n + 1) * sizeof(*nm));
    unsigned groups = 0;
    int in_class = 0, at_start = 1, rc = 0;
    cls_t cls = { -1, -1, 0 };

#define BAD(...)                                                              \
    do {                                                                      \
        rc = ck_err_set(err, CK_ECONFIG, __VA_ARGS__);                        \
        goto done;                                                            \
    } while (0)
    *out = NULL;
    if (t == NULL || st == NULL || isopen == NULL || nm == NULL) {
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        int was_start = at_start;

        at_start = 0;
        if (c == '\\' && i + 1 < n) {
            size_t at = i;
            char e = p[++i];
            int letter = (e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z');

            if (letter && strchr(ok, e) == NULL)
                BAD("bad escape \\%c at position %zu", e, at);
            if (e == 'x' && p[i + 1] == '{')
                BAD("bad escape \\x{ at position %zu (Python writes \\xHH "
                    "or \\uHHHH)", at);
            if (e == 'x' && !(is_hex(p[i + 1]) && is_hex(p[i + 2])))
                BAD("incomplete escape \\x at position %zu (Python wants "
                    "exactly two hex digits)", at);
            if (e == 'N')
                BAD("\\N{...} is not supported: write the character");
            if (e == 'u' || e == 'U') {
                size_t len = e == 'u' ? 4 : 8;

                char hex[9] = { 0 };
                unsigned long v;
                int k;

                if (strspn(p + i + 1, "0123456789abcdefABCDEF") < len)
                    BAD("incomplete escape \\%c at position %zu", e, at);
                memcpy(hex, p + i + 1, len);
                v = strtoul(hex, NULL, 16);
                if ((k = python_fold_cp(v)) >= 0 && *esc_at == SIZE_MAX) {
                    *esc_at = at;
                    *esc_k = k;
                }
                o += (size_t)sprintf(t + o, "\\x{%s}", hex);
                if (in_class)
                    cls_atom(&cls, (long)v);
                i += len;
                continue;
            }
            if (e == 'x') { /* two hex digits, checked above */
                char hex[3] = { p[i + 1], p[i + 2], '\0' };

                o += (size_t)sprintf(t + o, "\\x%s", hex);
                if (in_class)
                    cls_atom(&cls, (long)strtoul(hex, NULL, 16));
                i += 2;
                continue;
            }
            if (is_digit(e)) {
                unsigned v = (unsigned)(e - '0');
                size_t k = 1;

                if (in_class || e == '0') {
                    /* octal: up to 3 digits (\0: 2 more) */
                    if (e == '8' || e == '9')
                        BAD("bad escape \\%c at position %zu", e, at);
                    while (k < 3 && is_octal(p[i + 1])) {
                        v = v * 8 + (unsigned)(p[++i] - '0');
                        k++;
                    }
                } else if (is_digit(p[i + 1]) && is_octal(e) &&
                           is_octal(p[i + 1]) && is_octal(p[i + 2])) {
                    v = v * 64 + (unsigned)(p[i + 1] - '0') * 8 +
                        (unsigned)(p[i + 2] - '0');
                    i += 2;
                } else {
                    if (is_digit(p[i + 1]))
                        v = v * 10 + (unsigned)(p[++i] - '0');
                    if (v > groups)
                        BAD("invalid group reference %u at position %zu", v,
                            at + 1);
                    if (isopen[v])
                        BAD("cannot refer to an open group at position %zu",
                            at);
                    o += (size_t)sprintf(t + o, "\\g{%u}", v);
                    continue;
                }
                if (v > 0377)
                    BAD("octal escape value \\%.*s outside of range 0-0o377 "
                        "at position %zu", (int)(i - at), p + at + 1, at);
                o += (size_t)sprintf(t + o, "\\x{%x}", v);
                if (in_class)
                    cls_atom(&cls, (long)v);
                continue;
            }
            if (e == 's' || e == 'S') {
                if (in_class && e == 'S')
                    BAD("\\S inside a set at position %zu is not supported "
                        "(PCRE2's holds U+001C to U+001F, Python's does "
                        "not): write (?:[...]|\\S)", at);
                if (in_class && (cls.lo >= 0 ||
                                 (p[i + 1] == '-' && p[i + 2] != ']' &&
                                  p[i + 2] != '\0')))
                    BAD("bad character range at position %zu: \\s at an "
                        "end of a range", at);
                if (in_class)
                    cls_atom(&cls, -1);
                o += (size_t)sprintf(t + o, in_class ? "%s" : e == 's' ?
                                     "[%s]" : "[^%s]", PY_SPACE);
                continue;
            }
            if ((unsigned char)e >= 0x80) { /* an escaped character */
                size_t len;
                long v = utf8_at(p + i, &len);

                t[o++] = '\\';
                memcpy(t + o, p + i, len);
                o += len;
                i += len - 1;
                if (in_class)
                    cls_atom(&cls, v);
                continue;
            }
            t[o++] = '\\';
            t[o++] = !in_class && e == 'Z' ? 'z'
                     : e == 'v' ? 'x' : e;
            if (e == 'v') {
                t[o++] = '0';
                t[o++] = 'b';
            }
            if (in_class) /* a class escape, or one character */
                cls_atom(&cls, strchr("dDwW", e) != NULL ? -1
                               : e == 'a' ? 7 : e == 'b' ? 8 : e == 'f' ? 12
                               : e == 'n' ? 10 : e == 'r' ? 13 : e == 't' ? 9
                               : e == 'v' ? 11 : (unsigned char)e);
            continue;
        }
        if (in_class) {
            if (c == '[' && (p[i + 1] == ':' || p[i + 1] == '.' ||
                             p[i + 1] == '='))
                BAD("POSIX class syntax [[%c...%c]] at position %zu means "
                    "something else in Python (a set holding '[' and "
                    "'%c'): write the set out", p[i + 1], p[i + 1], i,
                    p[i + 1]);
            if (c == ']' && i != class_first) {
                in_class = 0;
            } else if (c == '-' && i != class_first && p[i + 1] != ']' &&
                       cls.prev >= 0) {
                cls.lo = cls.prev; /* a range */
            } else {
                size_t len;
                long v = utf8_at(p + i, &len);

                cls_atom(&cls, v);
                memcpy(t + o, p + i, len);
                o += len;
                i += len - 1;
                continue;
            }
            t[o++] = c;
            continue;
        }
        if (c == '[') {
            in_class = 1;
            class_first = p[i + 1] == '^' ? i + 2 : i + 1;
            cls.prev = cls.lo = -1;
        } else if (c == '(' && p[i + 1] == '*') {
            BAD("(* at position %zu: PCRE2's (*VERB) options are not Python "
                "syntax", i);
        } else if (c == '(' && p[i + 1] == '?') {
            char x = p[i + 2];

            if (x == ':' || x == '=' || x == '!' || x == '>') {
                st[depth++] = (open_t){ 'o', 0 };
            } else if (x == '<' && (p[i + 3] == '=' || p[i + 3] == '!')) {
                st[depth++] = (open_t){ 'b', 0 };
                o += (size_t)sprintf(t + o, "(?<%c(?:", p[i + 3]);
                i += 3;
                continue;
            } else if (x == '#') {
                const char *end = strchr(p + i, ')');
                size_t len = end != NULL ? (size_t)(end - p - i) + 1 : n - i;

                memcpy(t + o, p + i, len);
                o += len;
                i += len - 1;
                at_start = was_start;
                continue;
            } else if (x == 'P' && (p[i + 3] == '<' || p[i + 3] == '=')) {
                const char *s = p + i + 4;
                size_t len = strcspn(s, p[i + 3] == '<' ? ">" : ")");
                unsigned g = find_name(nm, nn, s, len);

                if (p[i + 3] == '<') {
                    groups++;
                    isopen[groups] = 1;
                    nm[nn++] = (gname_t){ s, len, groups };
                    st[depth++] = (open_t){ 'g', groups };
                } else if (g == 0) {
                    BAD("unknown group name '%.*s' at position %zu",
                        (int)len, s, i + 4);
                } else if (isopen[g]) {
                    BAD("cannot refer to an open group at position %zu", i);
                }
            } else if (x == '(') {
                const char *s = p + i + 3;
                size_t len = strcspn(s, ")");
                unsigned long g;

                if (len > 0 && strspn(s, "0123456789") == len) {
                    g = len > 9 ? ~0ul : strtoul(s, NULL, 10);
                    if (g == 0) /* a later group is fine, PCRE2 checks */
                        BAD("bad group number at position %zu", i + 3);
                } else if (find_name(nm, nn, s, len) == 0 ||
                           s[0] == 'R' || (len == 6 &&
                                           memcmp(s, "DEFINE", 6) == 0)) {
                    BAD("unknown group name '%.*s' at position %zu",
                        (int)len, s, i + 3);
                }
                st[depth++] = (open_t){ 'o', 0 };
            } else {
                /* flags: (?ims) at the start, or (?ims-ims:...) */
                size_t j = i + 2;
                int on = 0, off = 0, minus = 0;

                for (;; j++) {
                    char f = p[j];

                    if (f == '-' && !minus) {
                        minus = 1;
                    } else if (f != '\0' && strchr("ims", f) != NULL) {
                        int bit = f == 'i' ? 1 : f == 'm' ? 2 : 4;

                        if (minus && (on & bit))
                            BAD("bad inline flags: flag turned on and off at "
                                "position %zu", j);
                        *(minus ? &off : &on) |= bit;
                    } else if (f != '\0' && strchr("aLux", f) != NULL) {
                        BAD("the inline flag '%c' at position %zu is not "
                            "supported", f, j);
                    } else {
                        break;
                    }
                }
                if (x == '<')
                    BAD("(?<name>...) at position %zu is not Python syntax "
                        "(write (?P<name>...))", i);
                if (j == i + 2 || (p[j] != ')' && p[j] != ':'))
                    BAD("unknown extension ?%c at position %zu: not Python "
                        "syntax", p[j] ? p[j] : ' ', i + 1);
                if (minus && off == 0)
                    BAD("missing flag at position %zu", j);
                if (on & 1)
                    *caseless = 1;
                if (p[j] == ')') {
                    if (minus)
                        BAD("missing : at position %zu", j);
                    if (!was_start)
                        BAD("global flags not at the start of the "
                            "expression at position %zu", i + 1);
                    memcpy(t + o, p + i, j - i + 1);
                    o += j - i + 1;
                    i = j;
                    at_start = 1;
                    continue;
                }
                st[depth++] = (open_t){ 'o', 0 };
            }
        } else if (c == '(') {
            groups++;
            isopen[groups] = 1;
            st[depth++] = (open_t){ 'g', groups };
        } else if (c == ')' && depth > 0) {
            open_t *q = &st[--depth];

            if (q->kind == 'g')
                isopen[q->group] = 0;
            else if (q->kind == 'b')
                t[o++] = ')';
        } else if (c == '{' && p[i + 1] == ',') {
            t[o++] = '{';
            t[o++] = '0';
            continue;
        }
        t[o++] = c;
    }
    t[o] = '\0';
    *out = t;
    *fold_range = cls.folds;
    t = NULL;
done:
#undef BAD
    ck_free(t);
    ck_free(st);
    ck_free(isopen);
    ck_free(nm);
    return rc;
}

int ck_pyre_compile(const char *pattern, const char *repl, ck_pyre_t **out,
                    ck_err_t *err)
{
    ck_pyre_t *re = ck_calloc(1, sizeof(*re));
    char *pat = NULL;
    int code = 0, rc, esc_k = -1, fold_range = 0;
    size_t esc_at = SIZE_MAX;
    PCRE2_SIZE off = 0;
    uint32_t ng = 0;

    *out = NULL;
    if (re == NULL) {
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        goto out;
    }
    rc = translate(pattern, &pat, &re->caseless, &esc_at, &esc_k,
                   &fold_range, err);
    if (rc < 0)
        goto out;
    if (re->caseless && fold_range) {
        rc = ck_err_set(err, CK_ECONFIG, "a range over U+0130 or U+0131 in "
                        "a case-insensitive pattern: Python's re matches I "
                        "and i to it, PCRE2 does not: not supported");
        goto out;
    }
    if (re->caseless) {
        size_t at = esc_at;
        int k = python_only_fold(pattern, strlen(pattern), &at);

        if (k < 0 && esc_at != SIZE_MAX)
            k = esc_k;
        if (k >= 0) {
            rc = ck_err_set(err, CK_ECONFIG, "U+%04X at position %zu of a "
                            "case-insensitive pattern: Python's re matches "
                            "it otherwise than PCRE2 (%s): not supported",
                            python_folds[k].cp, at, fold_note(k));
            goto out;
        }
    }
    re->code = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                             PCRE2_UTF | PCRE2_UCP, &code, &off, NULL);
    if (re->code == NULL) {
        PCRE2_UCHAR msg[160];

        pcre2_get_error_message(code, msg, sizeof(msg));
        rc = ck_err_set(err, CK_ECONFIG, "%s at position %zu", (char *)msg,
                        (size_t)off);
        goto out;
    }
    pcre2_pattern_info(re->code, PCRE2_INFO_CAPTURECOUNT, &ng);
    re->ngroups = ng;
    re->mctx = pcre2_match_context_create(NULL);
    if (re->mctx == NULL) {
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        goto out;
    }
    pcre2_set_match_limit(re->mctx, MATCH_LIMIT);
    rc = parse_template(re, repl, err);
    if (rc == CK_ENOMEM)
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
out:
    ck_free(pat);
    if (rc < 0) {
        ck_pyre_free(re);
        return rc;
    }
    *out = re;
    return 0;
}

static void expand(const ck_pyre_t *re, const char *s, const PCRE2_SIZE *ov,
                   ck_buf_t *out)
{
    for (size_t i = 0; i < re->nparts; i++) {
        const part_t *p = &re->parts[i];

        if (p->text != NULL)
            ck_buf_put(out, p->text, p->len);
        else if (ov[2 * p->group] != PCRE2_UNSET)
            ck_buf_put(out, s + ov[2 * p->group],
                       ov[2 * p->group + 1] - ov[2 * p->group]);
    }
}

int ck_pyre_sub(const ck_pyre_t *re, const char *s, size_t n, ck_buf_t *out,
                size_t *count, ck_err_t *err)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re->code,
                                                                NULL);
    PCRE2_SIZE pos = 0, done = 0, *ov;
    uint32_t opts = 0;
    int rc = 0;

    *count = 0;
    if (s == NULL)
        s = ""; /* an empty buffer */
    if (re->caseless) {
        size_t at;
        int k = python_only_fold(s, n, &at);

        if (k >= 0) {
            rc = ck_err_set(err, CK_EUNSUPPORTED,
                            "key '%.*s' holds U+%04X (byte %zu), which a "
                            "case-insensitive pattern matches otherwise in "
                            "Python's re than in PCRE2 (%s)",
                            (int)(n < 200 ? n : 200), s, python_folds[k].cp,
                            at, fold_note(k));
            goto out;
        }
    }
    if (md == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    ov = pcre2_get_ovector_pointer(md);
    while (pos <= n) {
        int m = pcre2_match(re->code, (PCRE2_SPTR)s, n, pos, opts, md,
                            re->mctx);

        if (m == PCRE2_ERROR_NOMATCH) {
            if (opts == 0 || pos >= n)
                break;
            /* no non-empty match here: step over one character */
            opts = 0;
            pos++;
            while (pos < n && ((unsigned char)s[pos] & 0xc0) == 0x80)
                pos++;
            continue;
        }
        if (m < 0) {
            PCRE2_UCHAR msg[160];

            pcre2_get_error_message(m, msg, sizeof(msg));
            rc = ck_err_set(err, m == PCRE2_ERROR_MATCHLIMIT ? CK_ELIMIT
                                                             : CK_EFORMAT,
                            "regex: %s", (char *)msg);
            goto out;
        }
        ck_buf_put(out, s + done, ov[0] - done);
        expand(re, s, ov, out);
        (*count)++;
        done = ov[1];
        pos = ov[1];
        opts = ov[0] == ov[1] ? PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED : 0;
    }
    ck_buf_put(out, s + done, n - done);
    if (out->oom)
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
out:
    pcre2_match_data_free(md);
    return rc;
}
