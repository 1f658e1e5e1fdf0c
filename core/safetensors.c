/*
 * safetensors.c -- reading a safetensors file as a model, and writing a
 * state dict as one (see safetensors.h).
 *
 * The reader validates the header as strictly as zip.c validates a zip:
 * its length capped, UTF-8, one JSON object parsed by a small reader that
 * takes only what the format uses (objects, strings, arrays of whole
 * numbers), no duplicate keys, known dtypes, shapes whose byte counts
 * match their ranges, and ranges inside the data covering it with no gap
 * or overlap.  No tensor byte is read by the open: storages point into the
 * file; the fingerprint, which must cover the tensor bytes, reads them
 * when asked (ck_st_fingerprint_input).
 */
#define _GNU_SOURCE
#include "safetensors.h"

#include "json.h"
#include "omegaconf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

/* safetensors dtype names: the spec's, and torch's */
static const struct {
    const char *st, *torch;
} names[] = {
    { "F64", "float64" },       { "F32", "float32" },
    { "F16", "float16" },       { "BF16", "bfloat16" },
    { "I64", "int64" },         { "I32", "int32" },
    { "I16", "int16" },         { "I8", "int8" },
    { "U8", "uint8" },          { "BOOL", "bool" },
    { "C64", "complex64" },     { "F8_E5M2", "float8_e5m2" },
    { "F8_E4M3", "float8_e4m3fn" }, { "U16", "uint16" },
    { "U32", "uint32" },        { "U64", "uint64" },
};

const char *ck_st_dtype_name(const ck_dtype_t *dt)
{
    for (size_t i = 0; i < CK_ARRAY_SIZE(names); i++)
        if (strcmp(names[i].torch, dt->name) == 0)
            return names[i].st;
    return NULL;
}

static const ck_dtype_t *st_dtype(const char *s)
{
    for (size_t i = 0; i < CK_ARRAY_SIZE(names); i++)
        if (strcmp(names[i].st, s) == 0)
            return ck_dtype_by_name(names[i].torch);
    return NULL;
}

/* ---- [output] ---------------------------------------------------------- */

static const ck_conf_enum_t format_names[] = {
    { "torch", CK_OUT_TORCH }, { "safetensors", CK_OUT_SAFETENSORS },
    { NULL, 0 },
};

static const ck_conf_enum_t tied_names[] = {
    { "refuse", CK_TIED_REFUSE }, { "dedupe", CK_TIED_DEDUPE }, { NULL, 0 },
};

static int set_state(ck_conf_ctx_t *cx, const ck_directive_t *d, void *conf,
                     const char *v)
{
    for (const char *p = v; *p != '\0';) {
        size_t n = strcspn(p, "|");
        int bad = n == 0 || (n > 1 && (p[0] == '/' || p[n - 1] == '/'));

        for (size_t i = 1; i < n; i++)
            bad |= p[i] == '/' && p[i - 1] == '/';
        for (size_t i = 0; i < n; i++)
            bad |= p[i] == ' ' || p[i] == '\t';
        if (bad)
            return ck_err_set(cx->err, CK_ECONFIG,
                              "state: '%.*s' is not a path of keys separated "
                              "by '/' (alternatives by '|', '/' the top)",
                              (int)n, p);
        p += n + (p[n] == '|');
    }
    return ck_conf_set_str(cx, d, conf, v);
}

const ck_directive_t ck_output_directives[] = {
    { "format", ck_conf_set_enum, offsetof(ck_output_conf_t, format), "torch",
      0, "torch (a torch.save zip) or safetensors", format_names },
    { "state", set_state, offsetof(ck_output_conf_t, state),
      "best_state/model|model|state_dict|/", 0,
      "safetensors: the state dict written; the first of a|b|c that "
      "exists, / the top" },
    { "tied", ck_conf_set_enum, offsetof(ck_output_conf_t, tied), "refuse", 0,
      "safetensors: tensors that are one tensor under two names: refuse, or "
      "dedupe (keep the first name in sorted order, list the others in "
      "__metadata__)", tied_names },
    { "config", ck_conf_set_str, offsetof(ck_output_conf_t, config), NULL, 0,
      "safetensors: the path of an OmegaConf config (xp.cfg) put in "
      "__metadata__ as ckprep.config" },
    { NULL, NULL, 0, NULL, 0, NULL },
};

/* ---- the header reader ------------------------------------------------- */

typedef struct {
    const char *p, *end, *start;
    ck_arena_t *a;
    ck_err_t *err;
} rd_t;

static int bad(rd_t *r, const char *what)
{
    return ck_err_set(r->err, CK_EFORMAT, "safetensors header: %s at byte %zu",
                      what, (size_t)(r->p - r->start) + 8);
}

static void ws(rd_t *r)
{
    while (r->p < r->end &&
           (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static int expect(rd_t *r, char c)
{
    ws(r);
    if (r->p >= r->end || *r->p != c)
        return -1;
    r->p++;
    return 0;
}

static int hex4(const char *p, unsigned *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                                            : 16u;
        if (d == 16)
            return -1;
        *v = *v << 4 | d;
    }
    return 0;
}

/* A JSON string into an arena copy (*len bytes, NUL after). */
static int str(rd_t *r, char **out, size_t *len)
{
    ck_buf_t b = { 0 };
    int rc = 0;

    ws(r);
    if (r->p >= r->end || *r->p != '"')
        return bad(r, "a string expected");
    r->p++;
    while (rc == 0) {
        unsigned u, lo;
        char c;

        if (r->p >= r->end) {
            rc = bad(r, "unterminated string");
            break;
        }
        c = *r->p++;
        if (c == '"')
            break;
        if ((unsigned char)c < 0x20) {
            rc = bad(r, "a control character in a string");
            break;
        }
        if (c != '\\') {
            rc = ck_buf_putc(&b, c);
            continue;
        }
        if (r->p >= r->end) {
            rc = bad(r, "unterminated string");
            break;
        }
        c = *r->p++;
        switch (c) {
        case '"': case '\\': case '/': rc = ck_buf_putc(&b, c); continue;
        case 'b': rc = ck_buf_putc(&b, '\b'); continue;
        case 'f': rc = ck_buf_putc(&b, '\f'); continue;
        case 'n': rc = ck_buf_putc(&b, '\n'); continue;
        case 'r': rc = ck_buf_putc(&b, '\r'); continue;
        case 't': rc = ck_buf_putc(&b, '\t'); continue;
        case 'u': break;
        default: rc = bad(r, "a bad escape in a string"); continue;
        }
        if (r->end - r->p < 4 || hex4(r->p, &u) < 0) {
            rc = bad(r, "a bad \\u escape");
            break;
        }
        r->p += 4;
        if (u >= 0xd800 && u < 0xdc00) {
            if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u' ||
                hex4(r->p + 2, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff) {
                rc = bad(r, "a lone surrogate");
                break;
            }
            r->p += 6;
            u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
        } else if (u >= 0xdc00 && u < 0xe000) {
            rc = bad(r, "a lone surrogate");
            break;
        }
        if (u == 0) {
            rc = bad(r, "a NUL in a string");
            break;
        }
        if (u < 0x80) {
            rc = ck_buf_putc(&b, (int)u);
        } else if (u < 0x800) {
            rc = ck_buf_printf(&b, "%c%c", 0xc0 | (u >> 6), 0x80 | (u & 0x3f));
        } else if (u < 0x10000) {
            rc = ck_buf_printf(&b, "%c%c%c", 0xe0 | (u >> 12),
                               0x80 | ((u >> 6) & 0x3f), 0x80 | (u & 0x3f));
        } else {
            rc = ck_buf_printf(&b, "%c%c%c%c", 0xf0 | (u >> 18),
                               0x80 | ((u >> 12) & 0x3f),
                               0x80 | ((u >> 6) & 0x3f), 0x80 | (u & 0x3f));
        }
    }
    if (rc == CK_ENOMEM || (rc >= 0 && b.oom))
        rc = ck_err_set(r->err, CK_ENOMEM, "out of memory");
    if (rc >= 0) {
        *len = b.len;
        *out = ck_arena_strndup(r->a, b.len ? (const char *)b.data : "", b.len);
        if (*out == NULL)
            rc = ck_err_set(r->err, CK_ENOMEM, "out of memory");
    }
    ck_buf_release(&b);
    return rc < 0 ? rc : 0;
}

/* A whole number 0 .. 2^53 (JSON: no sign, fraction, exponent or leading
 * zero). */
static int num(rd_t *r, uint64_t *v)
{
    const char *s;

    ws(r);
    s = r->p;
    *v = 0;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
        *v = *v * 10 + (uint64_t)(*r->p - '0');
        if (*v > (1ull << 53))
            return bad(r, "a number too large");
        r->p++;
    }
    if (r->p == s || (r->p - s > 1 && *s == '0') ||
        (r->p < r->end && (*r->p == '.' || *r->p == 'e' || *r->p == 'E')))
        return bad(r, "a whole number expected");
    return 0;
}

/* An array of whole numbers into an arena array. */
static int nums(rd_t *r, int64_t **out, size_t *n)
{
    size_t cap = 8;
    uint64_t v;

    *n = 0;
    *out = ck_arena_alloc(r->a, cap * sizeof(**out));
    if (*out == NULL)
        return ck_err_set(r->err, CK_ENOMEM, "out of memory");
    if (expect(r, '[') < 0)
        return bad(r, "an array expected");
    if (expect(r, ']') == 0)
        return 0;
    do {
        if (num(r, &v) < 0)
            return r->err->code;
        if (*n == cap) {
            int64_t *nv = ck_arena_alloc(r->a, 2 * cap * sizeof(*nv));

            if (nv == NULL)
                return ck_err_set(r->err, CK_ENOMEM, "out of memory");
            memcpy(nv, *out, cap * sizeof(*nv));
            *out = nv;
            cap *= 2;
        }
        if (*n >= 64)
            return bad(r, "a shape of more than 64 dimensions");
        (*out)[(*n)++] = (int64_t)v;
    } while (expect(r, ',') == 0);
    if (expect(r, ']') < 0)
        return bad(r, "',' or ']' expected");
    return 0;
}

typedef struct {
    char *name;
    size_t nlen;
    const ck_dtype_t *dt;
    int64_t *shape;
    size_t ndim;
    uint64_t begin, end;
} hdr_t;

/* One tensor's object: dtype, shape and data_offsets, each once. */
static int tensor_obj(rd_t *r, hdr_t *h)
{
    int seen[3] = { 0, 0, 0 };
    int64_t *off = NULL;
    size_t noff = 0;

    if (expect(r, '{') < 0)
        return bad(r, "a tensor's object expected");
    do {
        char *k, *v;
        size_t kn, vn;
        int which;

        if (str(r, &k, &kn) < 0)
            return r->err->code;
        which = !strcmp(k, "dtype") ? 0 : !strcmp(k, "shape") ? 1
                : !strcmp(k, "data_offsets") ? 2 : -1;
        if (which < 0 || seen[which]++)
            return ck_err_set(r->err, CK_EFORMAT,
                              "safetensors header: tensor '%s': %s key '%s'",
                              h->name, which < 0 ? "unknown" : "a repeated", k);
        if (expect(r, ':') < 0)
            return bad(r, "':' expected");
        if (which == 0) {
            if (str(r, &v, &vn) < 0)
                return r->err->code;
            h->dt = st_dtype(v);
            if (h->dt == NULL)
                return ck_err_set(r->err, CK_EFORMAT,
                                  "safetensors header: tensor '%s': unknown "
                                  "dtype '%s'", h->name, v);
        } else if (which == 1) {
            if (nums(r, &h->shape, &h->ndim) < 0)
                return r->err->code;
        } else if (nums(r, &off, &noff) < 0) {
            return r->err->code;
        }
    } while (expect(r, ',') == 0);
    if (expect(r, '}') < 0)
        return bad(r, "',' or '}' expected");
    if (!seen[0] || !seen[1] || !seen[2] || noff != 2)
        return ck_err_set(r->err, CK_EFORMAT,
                          "safetensors header: tensor '%s' needs dtype, shape "
                          "and data_offsets [begin, end]", h->name);
    h->begin = (uint64_t)off[0];
    h->end = (uint64_t)off[1];
    return 0;
}

/* __metadata__: an object of strings, as a dict of str. */
static int meta_obj(rd_t *r, ck_py_t **out)
{
    ck_py_t *d = ck_py_new(r->a, CK_PY_DICT);
    ck_strmap_t seen = { 0 };

    if (d == NULL)
        return ck_err_set(r->err, CK_ENOMEM, "out of memory");
    if (expect(r, '{') < 0)
        return bad(r, "__metadata__ is not an object");
    if (expect(r, '}') == 0) {
        *out = d;
        return 0;
    }
    do {
        char *k, *v;
        size_t kn, vn;
        ck_py_t *pk, *pv;

        if (str(r, &k, &kn) < 0)
            return r->err->code;
        if (ck_strmap_get(&seen, k) != SIZE_MAX)
            return ck_err_set(r->err, CK_EFORMAT,
                              "safetensors header: __metadata__ has '%s' twice",
                              k);
        if (expect(r, ':') < 0)
            return bad(r, "':' expected");
        ws(r);
        if (r->p >= r->end || *r->p != '"')
            return bad(r, "__metadata__ values must be strings");
        if (str(r, &v, &vn) < 0)
            return r->err->code;
        pk = ck_py_str(r->a, k, kn);
        pv = ck_py_str(r->a, v, vn);
        if (pk == NULL || pv == NULL || ck_strmap_add(&seen, r->a, k, 0) < 0 ||
            ck_py_vec_push(r->a, &d->u.seq, pk) < 0 ||
            ck_py_vec_push(r->a, &d->u.seq, pv) < 0)
            return ck_err_set(r->err, CK_ENOMEM, "out of memory");
    } while (expect(r, ',') == 0);
    if (expect(r, '}') < 0)
        return bad(r, "',' or '}' expected");
    *out = d;
    return 0;
}

static int cmp_begin(const void *a, const void *b)
{
    const hdr_t *x = a, *y = b;

    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* The header's tensors, each validated, in data order. */
static int parse_header(ck_ckpt_t *c, rd_t *r, uint64_t data, hdr_t **out,
                        size_t *n)
{
    ck_strmap_t seen = { 0 };
    size_t cap = 0;
    hdr_t *h = NULL;
    uint64_t pos = 0;

    *n = 0;
    if (expect(r, '{') < 0)
        return bad(r, "not a JSON object");
    if (expect(r, '}') < 0) {
        do {
            hdr_t t = { 0 };

            if (str(r, &t.name, &t.nlen) < 0)
                return r->err->code;
            if (ck_strmap_get(&seen, t.name) != SIZE_MAX)
                return ck_err_set(r->err, CK_EFORMAT,
                                  "safetensors header: '%s' is there twice",
                                  t.name);
            if (ck_strmap_add(&seen, r->a, t.name, 0) < 0)
                return ck_err_set(r->err, CK_ENOMEM, "out of memory");
            if (expect(r, ':') < 0)
                return bad(r, "':' expected");
            if (strcmp(t.name, "__metadata__") == 0) {
                if (meta_obj(r, &c->st_meta) < 0)
                    return r->err->code;
                continue;
            }
            if (tensor_obj(r, &t) < 0)
                return r->err->code;
            if (*n == cap) {
                hdr_t *nh;

                cap = cap ? cap * 2 : 64;
                nh = ck_arena_alloc(r->a, cap * sizeof(*nh));
                if (nh == NULL)
                    return ck_err_set(r->err, CK_ENOMEM, "out of memory");
                if (*n)
                    memcpy(nh, h, *n * sizeof(*nh));
                h = nh;
            }
            h[(*n)++] = t;
        } while (expect(r, ',') == 0);
        if (expect(r, '}') < 0)
            return bad(r, "',' or '}' expected");
    }
    ws(r);
    if (r->p != r->end)
        return bad(r, "bytes after the object");
    if (*n)
        qsort(h, *n, sizeof(*h), cmp_begin);
    for (size_t i = 0; i < *n; i++) {
        uint64_t numel = 1, bytes;

        for (size_t d = 0; d < h[i].ndim; d++)
            if (ck_mul_u64(numel, (uint64_t)h[i].shape[d], &numel) < 0)
                numel = UINT64_MAX;
        if (ck_mul_u64(numel, h[i].dt->itemsize, &bytes) < 0 ||
            h[i].end < h[i].begin || h[i].end - h[i].begin != bytes)
            return ck_err_set(r->err, CK_EFORMAT,
                              "safetensors header: tensor '%s': its shape "
                              "needs other than its %llu bytes", h[i].name,
                              (unsigned long long)(h[i].end - h[i].begin));
        if (h[i].begin != pos)
            return ck_err_set(r->err, CK_EFORMAT,
                              "safetensors header: tensor '%s' starts at %llu, "
                              "not at %llu: a %s in the data", h[i].name,
                              (unsigned long long)h[i].begin,
                              (unsigned long long)pos,
                              h[i].begin > pos ? "gap" : "overlap");
        pos = h[i].end;
    }
    if (pos != data)
        return ck_err_set(r->err, CK_EFORMAT,
                          "safetensors header: tensors cover %llu of the "
                          "data's %llu bytes", (unsigned long long)pos,
                          (unsigned long long)data);
    *out = h;
    return 0;
}

int ck_st_sniff(const uint8_t *p, size_t n, uint64_t size)
{
    uint64_t len = 0;

    if (n < 9 || size < 10)
        return 0;
    for (int i = 7; i >= 0; i--)
        len = len << 8 | p[i];
    return len >= 2 && len <= size - 8 && p[8] == '{';
}

int ck_st_open(ck_ckpt_t *c, ck_err_t *err)
{
    uint8_t lenb[8];
    uint64_t len = 0, data;
    char *text = NULL;
    hdr_t *h = NULL;
    size_t n = 0;
    ck_py_t *root;
    rd_t r;
    int rc;

    rc = ck_pread_full(c->fd, lenb, 8, 0);
    if (rc < 0)
        return ck_err_set(err, rc, "read: %s", strerror(-rc));
    for (int i = 7; i >= 0; i--)
        len = len << 8 | lenb[i];
    if (len > CK_ST_MAX_HEADER || len > c->lim.max_pickle_bytes)
        return ck_err_set(err, CK_ELIMIT,
                          "safetensors header of %llu bytes (the most is %u)",
                          (unsigned long long)len, CK_ST_MAX_HEADER);
    if (len > c->st.size - 8)
        return ck_err_set(err, CK_EFORMAT,
                          "safetensors header of %llu bytes in a file of %llu",
                          (unsigned long long)len,
                          (unsigned long long)c->st.size);
    text = ck_malloc((size_t)len + 1);
    if (text == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    rc = ck_pread_full(c->fd, text, (size_t)len, 8);
    if (rc < 0) {
        rc = ck_err_set(err, rc, "read: %s", strerror(-rc));
        goto out;
    }
    if (!ck_utf8_valid(text, (size_t)len)) {
        rc = ck_err_set(err, CK_EFORMAT, "safetensors header is not UTF-8");
        goto out;
    }
    r = (rd_t){ text, text + len, text, &c->arena, err };
    data = c->st.size - 8 - len;
    rc = parse_header(c, &r, data, &h, &n);
    if (rc < 0)
        goto out;
    c->pickle_bytes = (size_t)len;
    c->st_hdr_len = len;
    c->st_n = n;
    c->st_sizes = ck_arena_alloc(&c->arena, (n + 1) * sizeof(*c->st_sizes));
    root = ck_py_new(&c->arena, CK_PY_DICT);
    if (root == NULL || c->st_sizes == NULL) {
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        ck_storage_t new = { 0 }, *st = &new; /* ck_ckpt_add_storage
                                                  copies it */
        ck_py_t *k, *t;

        if (h[i].dt->storage == NULL) {
            rc = ck_err_set(err, CK_EUNSUPPORTED,
                            "tensor '%s': %s has no storage class for "
                            "torch.save's format", h[i].name, h[i].dt->name);
            break;
        }
        c->st_sizes[i] = h[i].end - h[i].begin;
        st->key = ck_arena_printf(&c->arena, "%zu", i);
        ck_storage_set_dtype(st, h[i].dt);
        st->numel = (h[i].end - h[i].begin) / h[i].dt->itemsize;
        st->src = CK_SRC_LEGACY;
        st->off = 8 + len + h[i].begin;
        st->newkey = -1;
        t = st->key ? ck_ckpt_tensor_node(c, st, h[i].shape, h[i].ndim, err)
                    : NULL;
        k = ck_py_str(&c->arena, h[i].name, h[i].nlen);
        if (t == NULL || k == NULL || ck_ckpt_add_storage(c, st, err) < 0 ||
            ck_py_vec_push(&c->arena, &root->u.seq, k) < 0 ||
            ck_py_vec_push(&c->arena, &root->u.seq, t) < 0)
            rc = err->code ? err->code
                           : ck_err_set(err, CK_ENOMEM, "out of memory");
    }
    c->pk.root = root;
out:
    ck_free(text);
    return rc;
}

/* ---- fingerprint ------------------------------------------------------- */

int ck_st_fingerprint(uint64_t size, const void *hdr, size_t n,
                      const uint64_t *sums, size_t count, char out[65],
                      ck_err_t *err)
{
    uint8_t *b = ck_malloc(count * 8 + 1);
    int rc;

    if (b == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    for (size_t i = 0; i < count; i++)
        for (int k = 0; k < 8; k++)
            b[8 * i + k] = (uint8_t)(sums[i] >> (8 * k));
    rc = ck_fingerprint_parts(size, hdr, n, b, count * 8, out);
    ck_free(b);
    if (rc < 0)
        return ck_err_set(err, rc, "fingerprint: %s", ck_strerror(rc));
    return 0;
}

int ck_st_fingerprint_input(ck_ckpt_t *c, ck_err_t *err)
{
    uint64_t off = 8 + c->st_hdr_len, left = 0, k;
    uint64_t *sums = ck_malloc((c->st_n + 1) * sizeof(*sums));
    uint8_t *buf = ck_malloc(CK_ST_SUM_CHUNK);
    char *text = ck_malloc((size_t)c->st_hdr_len + 1);
    XXH3_state_t hs;
    size_t i = 0;
    int rc = 0;

    XXH3_INITSTATE(&hs);
    if (sums == NULL || buf == NULL || text == NULL) {
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        goto out;
    }
    rc = ck_pread_full(c->fd, text, (size_t)c->st_hdr_len, 8);
    if (rc < 0) {
        rc = ck_err_set(err, rc, "read: %s", strerror(-rc));
        goto out;
    }
    /* the data is the tensors end to end (ck_st_open checked): a sum ends
     * where the next tensor begins, whichever piece read holds it */
    XXH3_64bits_reset(&hs);
    for (;;) {
        while (left == 0 && i < c->st_n) {
            left = c->st_sizes[i];
            if (left > 0)
                break;
            sums[i++] = XXH3_64bits_digest(&hs);
        }
        if (i == c->st_n)
            break;
        k = left < CK_ST_SUM_CHUNK ? left : CK_ST_SUM_CHUNK;
        if (c->cancel != NULL && __atomic_load_n(c->cancel, __ATOMIC_RELAXED)) {
            rc = ck_err_set(err, CK_ECANCELED, "abandoned: ckprep is stopping");
            goto out;
        }
        rc = ck_pread_full(c->fd, buf, (size_t)k, off);
        if (rc < 0) {
            rc = ck_err_set(err, rc == -EIO ? CK_EFORMAT : rc, "read: %s",
                            rc == -EIO ? "input shrank while read"
                                       : strerror(-rc));
            goto out;
        }
        XXH3_64bits_update(&hs, buf, (size_t)k);
        off += k;
        left -= k;
        if (left == 0) {
            sums[i++] = XXH3_64bits_digest(&hs);
            XXH3_64bits_reset(&hs);
        }
    }
    rc = ck_st_fingerprint(c->st.size, text, (size_t)c->st_hdr_len, sums,
                           c->st_n, c->fingerprint, err);
out:
    ck_free(text);
    ck_free(buf);
    ck_free(sums);
    return rc;
}
