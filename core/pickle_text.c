/*
 * pickle_text.c -- the text forms of protocol 0 as CPython's unpickler
 * decodes them: decimal integers (INT, LONG), repr() floats (FLOAT), quoted
 * Python 2 strings (STRING) and raw-unicode-escape (UNICODE).
 *
 * Pure functions of the bytes of one line (without its '\n'): they know
 * nothing of the reader's stack or cursor, and say what is wrong with a code
 * the reader turns into its message.
 */
#include "pickle.h"
#include "pickle_int.h"
#include "pyval.h"

#include <stdlib.h>
#include <string.h>

int pk_decimal(ck_arena_t *a, const char *s, size_t n, uint8_t **le,
               size_t *len)
{
    int neg = 0, rc;
    uint8_t *mag, *out;
    size_t m;

    if (n > 0 && (s[0] == '-' || s[0] == '+')) {
        neg = s[0] == '-';
        s++;
        n--;
    }
    if (n == 0 || n > 100000)
        return CK_EFORMAT;
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return CK_EFORMAT;
    rc = ck_pyint_mag(a, s, n, 10, &mag, &m);
    if (rc < 0)
        return rc;
    out = ck_arena_alloc(a, m + 1); /* one more byte: the sign */
    if (out == NULL)
        return CK_ENOMEM;
    memcpy(out, mag, m);
    out[m++] = 0;
    if (neg)
        ck_int_negate(out, m);
    *le = out;
    *len = m;
    return 0;
}

int pk_float_text(const char *s, size_t n, double *v)
{
    char tmp[128], *end;

    if (n == 0 || n >= sizeof(tmp))
        return CK_EFORMAT;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    *v = strtod(tmp, &end);
    /* strtod also takes what Python's float() refuses: spaces, hex,
     * nan(...) */
    if (*end != '\0' || strpbrk(tmp, " \t\n\v\f\rxX(") != NULL)
        return CK_EFORMAT;
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

uint8_t *pk_raw_unicode(const char *s, size_t n, size_t *len)
{
    uint8_t *d = ck_malloc(n * 4 + 1);
    size_t o = 0;

    if (d == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)s[i];
        int w = 0;

        if (c == '\\' && i + 1 < n && (s[i + 1] == 'u' || s[i + 1] == 'U'))
            w = s[i + 1] == 'u' ? 4 : 8;
        if (w && i + 2 + (size_t)w <= n) {
            uint32_t cp = 0;
            int ok = 1;

            for (int k = 0; k < w; k++) {
                int h = hexval(s[i + 2 + (size_t)k]);

                if (h < 0)
                    ok = 0;
                cp = cp << 4 | (uint32_t)(h < 0 ? 0 : h);
            }
            if (ok && cp <= 0x10ffff) {
                o += (size_t)pk_utf8_put(d + o, cp);
                i += 1 + (size_t)w;
                continue;
            }
        }
        o += (size_t)pk_utf8_put(d + o, c);
    }
    *len = o;
    return d;
}

/* The escape after a backslash at s[*i] (n bytes in all) into d[*o]. */
static int unescape(const char *s, size_t n, size_t *i, uint8_t *d, size_t *o)
{
    char c = s[*i];
    static const char from[] = "ntrabfv\\'\"", to[] = "\n\t\r\a\b\f\v\\'\"";
    const char *e = c != '\0' ? strchr(from, c) : NULL;

    if (e != NULL) {
        d[(*o)++] = (uint8_t)to[e - from];
    } else if (c == '\n') {
        /* a line continuation */
    } else if (c == 'x') {
        if (*i + 2 >= n || hexval(s[*i + 1]) < 0 || hexval(s[*i + 2]) < 0)
            return CK_EFORMAT;
        d[(*o)++] = (uint8_t)(hexval(s[*i + 1]) * 16 + hexval(s[*i + 2]));
        *i += 2;
    } else if (c >= '0' && c <= '7') {
        unsigned v = 0;
        int k = 0;

        while (k < 3 && *i < n && s[*i] >= '0' && s[*i] <= '7') {
            v = v * 8 + (unsigned)(s[*i] - '0');
            (*i)++;
            k++;
        }
        (*i)--;
        d[(*o)++] = (uint8_t)v;
    } else {
        d[(*o)++] = '\\';
        d[(*o)++] = (uint8_t)c;
    }
    return 0;
}

int pk_unquote(const char *s, size_t n, uint8_t **out, size_t *len,
               const char **why)
{
    uint8_t *d;
    size_t o = 0;

    if (n < 2 || (s[0] != '\'' && s[0] != '"') || s[n - 1] != s[0]) {
        *why = "STRING not quoted";
        return CK_EFORMAT;
    }
    s++;
    n -= 2;
    d = ck_malloc(n + 1);
    if (d == NULL)
        return CK_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 == n) {
            d[o++] = (uint8_t)s[i];
            continue;
        }
        i++;
        if (unescape(s, n, &i, d, &o) < 0) {
            ck_free(d);
            *why = "bad \\x escape in STRING";
            return CK_EFORMAT;
        }
    }
    *out = d;
    *len = o;
    return 0;
}
