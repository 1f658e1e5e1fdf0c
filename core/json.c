/*
 * json.c -- the JSON writer.  Allocation failures are sticky in the buffer
 * (ck_buf_t.oom) and reported once by ck_json_text.
 */
#include "json.h"

#include "pyval.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static void sep(ck_json_t *j)
{
    uint8_t *top;

    if (j->after_key) {
        j->after_key = 0;
        return;
    }
    if (j->depth == 0 || j->b.oom)
        return;
    top = &j->levels.data[j->depth - 1];
    if (!(*top & 0x80))
        ck_buf_putc(&j->b, ',');
    *top &= 0x7f;
}

static void open_(ck_json_t *j, int c)
{
    sep(j);
    ck_buf_putc(&j->b, c);
    if (ck_buf_putc(&j->levels, (c == '{' ? '}' : ']') | 0x80) < 0) {
        j->b.oom = 1;
        return;
    }
    j->depth++;
}

void ck_json_obj(ck_json_t *j)
{
    open_(j, '{');
}

void ck_json_arr(ck_json_t *j)
{
    open_(j, '[');
}

void ck_json_end(ck_json_t *j)
{
    if (j->depth <= 0)
        return;
    j->depth--;
    j->levels.len--;
    ck_buf_putc(&j->b, j->levels.data[j->depth] & 0x7f);
}

void ck_json_key(ck_json_t *j, const char *k)
{
    sep(j);
    ck_json_quote(&j->b, k, strlen(k));
    ck_buf_putc(&j->b, ':');
    j->after_key = 1;
}

void ck_json_quote(ck_buf_t *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;

    ck_buf_putc(b, '"');
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t run = i;
        int len;

        /* printable ASCII but a quote and a backslash, as it is: the
         * keys of a report of 10^5 changes, a run each */
        while (run < n && u[run] >= 0x20 && u[run] < 0x7f && u[run] != '"' &&
               u[run] != '\\')
            run++;
        if (run > i) {
            ck_buf_put(b, u + i, run - i);
            i = run;
        } else if (c == '"' || c == '\\') {
            ck_buf_putc(b, '\\');
            ck_buf_putc(b, (int)c);
            i++;
        } else if (c == '\n') {
            ck_buf_put(b, "\\n", 2);
            i++;
        } else if (c == '\t') {
            ck_buf_put(b, "\\t", 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            ck_buf_printf(b, "\\u%04x", c);
            i++;
        } else if ((len = ck_utf8_len(u + i, n - i, 0)) > 0) {
            ck_buf_put(b, u + i, (size_t)len);
            i += (size_t)len;
        } else {
            ck_buf_printf(b, "\\u%04x", c); /* not UTF-8: its latin-1 reading */
            i++;
        }
    }
    ck_buf_putc(b, '"');
}

void ck_json_str(ck_json_t *j, const char *s)
{
    if (s == NULL) {
        ck_json_null(j);
        return;
    }
    ck_json_strn(j, s, strlen(s));
}

void ck_json_strn(ck_json_t *j, const char *s, size_t n)
{
    sep(j);
    ck_json_quote(&j->b, s, n);
}

/* (Not printf: a microsecond a call, and a report may hold 10^5 sizes.) */
void ck_json_int(ck_json_t *j, int64_t v)
{
    char num[24];

    sep(j);
    if (v < 0)
        ck_buf_putc(&j->b, '-');
    /* the magnitude of INT64_MIN too, in unsigned arithmetic */
    ck_buf_put(&j->b, num,
               ck_fmt_u64(num, v < 0 ? 0 - (uint64_t)v : (uint64_t)v));
}

void ck_json_u64(ck_json_t *j, uint64_t v)
{
    char num[24];

    sep(j);
    ck_buf_put(&j->b, num, ck_fmt_u64(num, v));
}

void ck_json_double(ck_json_t *j, double v)
{
    sep(j);
    if (isfinite(v)) {
        char r[40];

        /* Python's repr: the shortest text that reads back the same, and
         * a float stays one (2.0, not 2) */
        ck_pyfloat_repr(v, r, sizeof(r));
        ck_buf_printf(&j->b, "%s", r);
    } else
        ck_buf_printf(&j->b, "\"%s\"", isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
}

void ck_json_bool(ck_json_t *j, int v)
{
    sep(j);
    ck_buf_printf(&j->b, "%s", v ? "true" : "false");
}

void ck_json_null(ck_json_t *j)
{
    sep(j);
    ck_buf_put(&j->b, "null", 4);
}

void ck_json_raw(ck_json_t *j, const char *text, size_t n)
{
    sep(j);
    ck_buf_put(&j->b, text, n);
}

const char *ck_json_text(ck_json_t *j)
{
    if (ck_buf_putc(&j->b, '\0') < 0)
        return NULL;
    j->b.len--;
    return (const char *)j->b.data;
}

void ck_json_release(ck_json_t *j)
{
    ck_buf_release(&j->b);
    ck_buf_release(&j->levels);
    j->depth = 0;
}
