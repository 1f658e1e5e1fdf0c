/*
 * diff.c -- `ckprep diff A B`.  Both files are opened and validated as for
 * inspect; their tensors are walked (ck_listing_walk) into one entry per
 * (group, key), and their configs flattened to dotted leaves.
 *
 * Content: two views are the same when their records have the same size
 * and CRC-32 (zip directories) and the views the same offset, shape and
 * stride; different when the CRCs differ and each view covers its whole
 * record; otherwise (legacy files have no CRC, a view of part of a record)
 * unknown, which --exact settles by comparing the views' bytes, streamed
 * in CHUNK-sized reads (a view that is not contiguous, or in a deflated
 * record, is compared whole when under EXACT_WHOLE_MAX, else stays
 * unknown).  A key only in A and one only in B in the same group whose
 * contents are the same are a rename.
 */
#include "diff.h"

#include "json.h"
#include "listing.h"

#include <math.h>
#include <string.h>

#define CHUNK (1u << 20)
#define EXACT_WHOLE_MAX (64u << 20)
#define RENAME_PAIRS_MAX 4000000u

enum { C_SAME, C_DIFF, C_UNKNOWN };

typedef struct {
    const char *group;
    char *key;
    const ck_tensor_t *t;
    int paired;  /* matched in the other file (same key, or a rename) */
    size_t next; /* the next entry of the group, SIZE_MAX at its end */
} ent_t;

typedef struct {
    ck_ckpt_t *c;
    ent_t *v;
    size_t n, cap;
    ck_strmap_t by;     /* "group\x01key" -> index */
    ck_strmap_t groups; /* group -> index in head/tail */
    size_t *head, *tail, *count;
    size_t ng, gcap;
} ents_t;

typedef struct {
    ck_ckpt_t a, b;
    ents_t ea, eb;
    const ck_diff_opts_t *o;
    uint8_t *buf;   /* 2 * CHUNK for --exact */
    int differs;
    int trouble;
    ck_err_t err;
} diff_t;

/* Link entry x (index e->n) at the end of its group's list. */
static int group_link(ents_t *e, ent_t *x)
{
    ck_arena_t *a = &e->c->arena;
    size_t gi = ck_strmap_get(&e->groups, x->group);

    if (gi != SIZE_MAX) {
        e->v[e->tail[gi]].next = e->n;
        e->tail[gi] = e->n;
        e->count[gi]++;
        return 0;
    }
    if (e->ng == e->gcap) {
        size_t nc = e->gcap ? e->gcap * 2 : 64;
        size_t *h = ck_arena_alloc(a, 3 * nc * sizeof(size_t));

        if (h == NULL)
            return CK_ENOMEM;
        if (e->ng) {
            memcpy(h, e->head, e->ng * sizeof(size_t));
            memcpy(h + nc, e->tail, e->ng * sizeof(size_t));
            memcpy(h + 2 * nc, e->count, e->ng * sizeof(size_t));
        }
        e->head = h;
        e->tail = h + nc;
        e->count = h + 2 * nc;
        e->gcap = nc;
    }
    e->head[e->ng] = e->tail[e->ng] = e->n;
    e->count[e->ng] = 1;
    return ck_strmap_add(&e->groups, a, x->group, e->ng++);
}

static int ent_cb(void *ud, const char *group, const char *k, size_t kn,
                  const ck_tensor_t *t, ck_py_t *node)
{
    ents_t *e = ud;
    ck_arena_t *a = &e->c->arena;
    ent_t *x;
    char *id;

    if (e->n == e->cap) {
        size_t nc = e->cap ? e->cap * 2 : 256;
        ent_t *nv = ck_arena_alloc(a, nc * sizeof(*nv));

        if (nv == NULL)
            return CK_ENOMEM;
        if (e->n)
            memcpy(nv, e->v, e->n * sizeof(*nv));
        e->v = nv;
        e->cap = nc;
    }
    x = &e->v[e->n];
    x->group = ck_arena_strdup(a, group);
    x->key = ck_arena_strndup(a, k, kn);
    x->t = t;
    x->paired = 0;
    x->next = SIZE_MAX;
    id = ck_arena_printf(a, "%s\x01%.*s", group, (int)kn, k);
    if (x->group == NULL || x->key == NULL || id == NULL ||
        ck_strmap_add(&e->by, a, id, e->n) < 0 || group_link(e, x) < 0)
        return CK_ENOMEM;
    e->n++;
    return 0;
}

/* The group's first entry, or SIZE_MAX; *n its count. */
static size_t group_head(const ents_t *e, const char *g, size_t *n)
{
    size_t gi = ck_strmap_get(&e->groups, g);

    *n = gi == SIZE_MAX ? 0 : e->count[gi];
    return gi == SIZE_MAX ? SIZE_MAX : e->head[gi];
}

static size_t ent_find(ents_t *e, const ent_t *x)
{
    char *id = ck_arena_printf(&e->c->arena, "%s\x01%s", x->group, x->key);

    return id ? ck_strmap_get(&e->by, id) : SIZE_MAX;
}

static int same_dims(const int64_t *a, const int64_t *b, size_t n)
{
    return n == 0 || memcmp(a, b, n * sizeof(int64_t)) == 0;
}

static int same_layout(const ck_tensor_t *x, const ck_tensor_t *y)
{
    return x->dtype == y->dtype && x->ndim == y->ndim &&
           same_dims(x->size, y->size, x->ndim);
}

static int whole(const ck_tensor_t *t)
{
    return t->offset == 0 && ck_tensor_contiguous(t) &&
           t->numel * t->dtype->itemsize == ck_storage_nbytes(t->st);
}

/* Where a storage's bytes start in its file, or -1 when not plainly
 * readable there (a deflated record, a new in-memory one). */
static int64_t src_off(const ck_storage_t *st)
{
    if (st->src == CK_SRC_LEGACY || (st->src == CK_SRC_ZIP && !st->deflated))
        return (int64_t)st->off;
    return -1;
}

/* The views' bytes compared: C_SAME, C_DIFF, C_UNKNOWN, or < 0. */
static int exact(diff_t *d, const ck_tensor_t *x, const ck_tensor_t *y)
{
    uint64_t isz = x->dtype->itemsize, n = x->numel * isz, done = 0;
    int64_t ox = src_off(x->st), oy = src_off(y->st);
    int rc;

    if (d->buf == NULL && (d->buf = ck_malloc(2 * (size_t)CHUNK)) == NULL)
        return CK_ENOMEM;
    if (ox < 0 || oy < 0 || !ck_tensor_contiguous(x) ||
        !ck_tensor_contiguous(y)) {
        uint8_t *bx, *by;

        if (n > EXACT_WHOLE_MAX)
            return C_UNKNOWN;
        bx = ck_malloc(n ? n : 1);
        by = ck_malloc(n ? n : 1);
        rc = bx && by ? 0 : CK_ENOMEM;
        if (rc == 0)
            rc = ck_ckpt_read_tensor(&d->a, x, bx, &d->err);
        if (rc == 0)
            rc = ck_ckpt_read_tensor(&d->b, y, by, &d->err);
        if (rc == 0)
            rc = memcmp(bx, by, n) == 0 ? C_SAME : C_DIFF;
        ck_free(bx);
        ck_free(by);
        return rc;
    }
    ox += (int64_t)(x->offset * isz);
    oy += (int64_t)(y->offset * isz);
    while (done < n) {
        size_t k = n - done < CHUNK ? (size_t)(n - done) : CHUNK;

        rc = ck_pread_full(d->a.fd, d->buf, k, (uint64_t)ox + done);
        if (rc == 0)
            rc = ck_pread_full(d->b.fd, d->buf + CHUNK, k, (uint64_t)oy + done);
        if (rc < 0)
            return ck_err_set(&d->err, rc, "reading tensor bytes: %s",
                              strerror(-rc));
        if (memcmp(d->buf, d->buf + CHUNK, k) != 0)
            return C_DIFF;
        done += k;
    }
    return C_SAME;
}

/* Same shape and dtype assumed. */
static int content(diff_t *d, const ck_tensor_t *x, const ck_tensor_t *y)
{
    const ck_storage_t *sx = x->st, *sy = y->st;

    if (x->numel == 0)
        return C_SAME;
    if (sx->src == CK_SRC_ZIP && sy->src == CK_SRC_ZIP) {
        int rec_same = ck_storage_crc(sx) == ck_storage_crc(sy) &&
                       ck_storage_nbytes(sx) == ck_storage_nbytes(sy);

        if (rec_same && x->offset == y->offset &&
            same_dims(x->stride, y->stride, x->ndim))
            return C_SAME;
        if (!rec_same && whole(x) && whole(y))
            return C_DIFF;
    }
    return d->o->exact ? exact(d, x, y) : C_UNKNOWN;
}

/* ---- output ------------------------------------------------------------ */

static void dims(FILE *out, const ck_tensor_t *t)
{
    fputc('[', out);
    for (size_t i = 0; i < t->ndim; i++)
        fprintf(out, "%s%lld", i ? ", " : "", (long long)t->size[i]);
    fputc(']', out);
}

static void dims_json(ck_json_t *j, const ck_tensor_t *t)
{
    ck_json_arr(j);
    for (size_t i = 0; i < t->ndim; i++)
        ck_json_int(j, t->size[i]);
    ck_json_end(j);
}

typedef struct {
    size_t only_a, only_b, changed, renamed, same, unknown;
} sd_stat_t;

/* One group's comparison under way. */
typedef struct {
    diff_t *d;
    const char *g;
    FILE *out;
    ck_json_t *j; /* JSON; else text, or --stat when d->o->stat */
    int text;
    int shown;    /* the text header is printed */
    sd_stat_t s;
} grp_t;

/* The group's header line, before its first difference. */
static void header(grp_t *q)
{
    if (q->shown)
        return;
    q->shown = 1;
    fputs("state dict ", q->out);
    ck_listing_put(q->out, q->g, strlen(q->g));
    fputs(":\n", q->out);
}

static void side_json(ck_json_t *j, const char *name, const ck_tensor_t *t)
{
    ck_json_key(j, name);
    ck_json_obj(j);
    ck_json_key(j, "dtype");
    ck_json_str(j, t->dtype->name);
    ck_json_key(j, "shape");
    dims_json(j, t);
    ck_json_end(j);
}

static void show_changed(grp_t *q, const ent_t *x, const ent_t *y, int c)
{
    if (q->j != NULL) {
        ck_json_obj(q->j);
        ck_json_key(q->j, "key");
        ck_json_str(q->j, x->key);
        side_json(q->j, "a", x->t);
        side_json(q->j, "b", y->t);
        ck_json_key(q->j, "content");
        ck_json_str(q->j, c == C_UNKNOWN ? "unknown" : "different");
        ck_json_end(q->j);
        return;
    }
    if (!q->text)
        return;
    header(q);
    fputs(c == C_UNKNOWN ? "  ? " : "  ~ ", q->out);
    ck_listing_put(q->out, x->key, strlen(x->key));
    if (!same_layout(x->t, y->t)) {
        fprintf(q->out, "  %s ", x->t->dtype->name);
        dims(q->out, x->t);
        fprintf(q->out, " -> %s ", y->t->dtype->name);
        dims(q->out, y->t);
        fputc('\n', q->out);
    } else {
        fputs(c == C_UNKNOWN ? "  content not compared (no CRC to decide; "
                               "--exact compares)\n"
                             : "  content differs\n", q->out);
    }
}

/* Keys in both files. */
static int common(grp_t *q)
{
    diff_t *d = q->d;
    size_t n;

    for (size_t i = group_head(&d->ea, q->g, &n); i != SIZE_MAX;
         i = d->ea.v[i].next) {
        ent_t *x = &d->ea.v[i], *y;
        size_t at = ent_find(&d->eb, x);
        int c = C_DIFF;

        if (at == SIZE_MAX)
            continue;
        y = &d->eb.v[at];
        x->paired = y->paired = 1;
        if (same_layout(x->t, y->t)) {
            c = content(d, x->t, y->t);
            if (c < 0)
                return c;
            if (c == C_SAME) {
                q->s.same++;
                continue;
            }
        }
        if (c == C_UNKNOWN)
            q->s.unknown++;
        else
            q->s.changed++;
        show_changed(q, x, y, c);
    }
    return 0;
}

/* Renames: a key only in A and one only in B of the same content. */
static int renames(grp_t *q, size_t na, size_t nb)
{
    diff_t *d = q->d;
    size_t n;

    if ((uint64_t)na * nb > RENAME_PAIRS_MAX)
        return 0;
    for (size_t i = group_head(&d->ea, q->g, &n); i != SIZE_MAX;
         i = d->ea.v[i].next) {
        ent_t *x = &d->ea.v[i];

        for (size_t k = group_head(&d->eb, q->g, &n); !x->paired && k != SIZE_MAX;
             k = d->eb.v[k].next) {
            ent_t *y = &d->eb.v[k];
            int c;

            if (y->paired || !same_layout(x->t, y->t))
                continue;
            c = content(d, x->t, y->t);
            if (c < 0)
                return c;
            if (c != C_SAME)
                continue;
            x->paired = y->paired = 2;
            q->s.renamed++;
            if (q->j != NULL) {
                ck_json_obj(q->j);
                ck_json_key(q->j, "from");
                ck_json_str(q->j, x->key);
                ck_json_key(q->j, "to");
                ck_json_str(q->j, y->key);
                ck_json_end(q->j);
            } else if (q->text) {
                header(q);
                fputs("  > renamed ", q->out);
                ck_listing_put(q->out, x->key, strlen(x->key));
                fputs(" -> ", q->out);
                ck_listing_put(q->out, y->key, strlen(y->key));
                fputc('\n', q->out);
            }
        }
    }
    return 0;
}

/* Keys of one side left unpaired. */
static void lone(grp_t *q, int side)
{
    ents_t *e = side ? &q->d->eb : &q->d->ea;
    size_t n;

    for (size_t i = group_head(e, q->g, &n); i != SIZE_MAX; i = e->v[i].next) {
        ent_t *x = &e->v[i];

        if (x->paired)
            continue;
        if (side)
            q->s.only_b++;
        else
            q->s.only_a++;
        if (q->j != NULL) {
            ck_json_obj(q->j);
            ck_listing_brief(q->j, x->key, strlen(x->key), x->t);
            ck_json_end(q->j);
        } else if (q->text) {
            header(q);
            fputs(side ? "  + " : "  - ", q->out);
            ck_listing_put(q->out, x->key, strlen(x->key));
            fprintf(q->out, "  %s ", x->t->dtype->name);
            dims(q->out, x->t);
            fputc('\n', q->out);
        }
    }
}

/* One group's comparison; text lines to out, or members to the open
 * array j. */
static int group(diff_t *d, const char *g, FILE *out, ck_json_t *j)
{
    grp_t q = { d, g, out, j, j == NULL && !d->o->stat, 0, { 0 } };
    size_t na, nb;
    sd_stat_t *s = &q.s;
    int rc;

    group_head(&d->ea, g, &na);
    group_head(&d->eb, g, &nb);
    if (q.text && (na == 0 || nb == 0)) {
        /* a state dict only one side has: one line, not one per key */
        fprintf(out, "%c state dict ", na ? '-' : '+');
        ck_listing_put(out, g, strlen(g));
        fprintf(out, "  (%zu tensors)\n", na + nb);
        d->differs = 1;
        return 0;
    }
    if (j != NULL) {
        ck_json_obj(j);
        ck_json_key(j, "path");
        ck_json_str(j, g);
        ck_json_key(j, "changed");
        ck_json_arr(j);
    }
    rc = common(&q);
    if (j != NULL) {
        ck_json_end(j);
        ck_json_key(j, "renamed");
        ck_json_arr(j);
    }
    if (rc == 0)
        rc = renames(&q, na, nb);
    if (rc < 0)
        return rc;
    for (int side = 0; side < 2; side++) {
        if (j != NULL) {
            ck_json_end(j);
            ck_json_key(j, side ? "only_b" : "only_a");
            ck_json_arr(j);
        }
        lone(&q, side);
    }
    if (j != NULL) {
        ck_json_end(j);
        ck_json_key(j, "same");
        ck_json_u64(j, s->same);
        ck_json_key(j, "unknown");
        ck_json_u64(j, s->unknown);
        ck_json_end(j);
    } else if (q.text) {
        if (q.shown)
            fprintf(out, "  (%zu same)\n", s->same);
    } else {
        fputc(' ', out);
        ck_listing_put(out, g, strlen(g));
        fprintf(out, " | %zu only in A, %zu only in B, %zu renamed, %zu "
                "changed, %zu unknown, %zu same\n", s->only_a, s->only_b,
                s->renamed, s->changed, s->unknown, s->same);
    }
    if (s->only_a || s->only_b || s->renamed || s->changed || s->unknown)
        d->differs = 1;
    return 0;
}

static const char *kind_at(ck_ckpt_t *c, ck_py_vec_t *m, const ck_py_t *k);

/* 1 when group g lies under a top-level key of one file only (the
 * top-level line says it; text and --stat leave its state dicts out). */
static int under_lone_top(diff_t *d, const char *g)
{
    size_t n = strcspn(g, "/");
    ck_py_t k = { .kind = CK_PY_STR };
    int in_a, in_b;

    if (strcmp(g, "/") == 0)
        return 0;
    k.u.s.s = (char *)g;
    k.len = n;
    in_a = kind_at(&d->a, ck_py_mapping(d->a.pk.root), &k) != NULL;
    in_b = kind_at(&d->b, ck_py_mapping(d->b.pk.root), &k) != NULL;
    return in_a != in_b;
}

/* The groups of both files, A's first, each once. */
static int groups(diff_t *d, FILE *out, ck_json_t *j)
{
    ck_strmap_t seen = { 0 };
    int rc = 0;

    for (int side = 0; side < 2 && rc == 0; side++) {
        ents_t *e = side ? &d->eb : &d->ea;

        for (size_t i = 0; i < e->n && rc == 0; i++) {
            const char *g = e->v[i].group;

            if (ck_strmap_get(&seen, g) != SIZE_MAX)
                continue;
            if (ck_strmap_add(&seen, &d->a.arena, g, 1) < 0)
                return CK_ENOMEM;
            if (j == NULL && under_lone_top(d, g))
                continue;
            rc = group(d, g, out, j);
        }
    }
    return rc;
}

/* ---- top-level keys ------------------------------------------------------ */

static const char *kind_at(ck_ckpt_t *c, ck_py_vec_t *m, const ck_py_t *k)
{
    for (size_t i = 0; m != NULL && i + 1 < m->n; i += 2)
        if (m->v[i]->kind == k->kind &&
            (k->kind == CK_PY_STR
                 ? m->v[i]->len == k->len &&
                       memcmp(m->v[i]->u.s.s, k->u.s.s, k->len) == 0
                 : k->kind == CK_PY_INT && m->v[i]->u.i.v == k->u.i.v))
            return ck_inspect_kind(c, m->v[i + 1]);
    return NULL;
}

static void top_key(FILE *out, ck_json_t *j, const char *name, const ck_py_t *k)
{
    if (k->kind == CK_PY_STR) {
        if (j)
            ck_json_strn(j, k->u.s.s, k->len);
        else
            ck_listing_put(out, k->u.s.s, k->len);
    } else if (j) {
        ck_json_int(j, k->u.i.v);
    } else {
        fprintf(out, "%lld", (long long)k->u.i.v);
    }
    (void)name;
}

static void top(diff_t *d, FILE *out, ck_json_t *j)
{
    ck_py_vec_t *ma = ck_py_mapping(d->a.pk.root), *mb = ck_py_mapping(d->b.pk.root);
    static const char *const names[] = { "removed", "added", "changed_kind" };

    if (j != NULL) {
        ck_json_key(j, "top_level");
        ck_json_obj(j);
    }
    for (int pass = 0; pass < 3; pass++) {
        ck_ckpt_t *cx = pass == 1 ? &d->b : &d->a;
        ck_py_vec_t *m = pass == 1 ? mb : ma, *other = pass == 1 ? ma : mb;

        if (j != NULL) {
            ck_json_key(j, names[pass]);
            ck_json_arr(j);
        }
        for (size_t i = 0; m != NULL && i + 1 < m->n; i += 2) {
            const ck_py_t *k = m->v[i];
            const char *mine = ck_inspect_kind(cx, m->v[i + 1]);
            const char *theirs;

            if (k->kind != CK_PY_STR && k->kind != CK_PY_INT)
                continue;
            theirs = kind_at(pass == 1 ? &d->a : &d->b, other, k);
            if (pass < 2 ? theirs != NULL
                         : theirs == NULL || strcmp(theirs, mine) == 0)
                continue;
            d->differs = 1;
            if (j != NULL) {
                ck_json_obj(j);
                ck_json_key(j, "key");
                top_key(out, j, NULL, k);
                ck_json_key(j, pass == 2 ? "a" : "kind");
                ck_json_str(j, mine);
                if (pass == 2) {
                    ck_json_key(j, "b");
                    ck_json_str(j, theirs);
                }
                ck_json_end(j);
            } else if (!d->o->stat) {
                fputs(pass == 0 ? "- top-level " : pass == 1 ? "+ top-level "
                                                             : "~ top-level ", out);
                top_key(out, NULL, NULL, k);
                if (pass == 2)
                    fprintf(out, "  %s -> %s\n", mine, theirs);
                else
                    fprintf(out, "  (%s)\n", mine);
            }
        }
        if (j != NULL)
            ck_json_end(j);
    }
    if (j != NULL)
        ck_json_end(j);
}

/* ---- config ---------------------------------------------------------------- */

typedef struct {
    ck_arena_t *a;
    ck_strmap_t by;
    char **path;
    char **val; /* the leaf as JSON text */
    size_t n, cap;
} leaves_t;

static int leaf_cb(void *ud, const char *path, const ck_yval_t *v)
{
    leaves_t *l = ud;
    ck_json_t j = { 0 };

    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        char **np = ck_arena_alloc(l->a, nc * sizeof(char *));
        char **nv = ck_arena_alloc(l->a, nc * sizeof(char *));

        if (np == NULL || nv == NULL)
            return CK_ENOMEM;
        if (l->n) {
            memcpy(np, l->path, l->n * sizeof(char *));
            memcpy(nv, l->val, l->n * sizeof(char *));
        }
        l->path = np;
        l->val = nv;
        l->cap = nc;
    }
    if (v->kind == CK_YV_SCALAR && ck_yval_type(l->a, v)->t == CK_PV_FLOAT &&
        isfinite(ck_yval_type(l->a, v)->f)) {
        char r[40];

        ck_pyfloat_repr(ck_yval_type(l->a, v)->f, r, sizeof(r));
        ck_json_raw(&j, r, strlen(r)); /* repr(): 1e-05, not 1.0000...e-05 */
    } else {
        ck_yval_json(&j, l->a, v);
    }
    l->path[l->n] = ck_arena_strdup(l->a, path);
    l->val[l->n] = ck_json_text(&j) ? ck_arena_strdup(l->a, ck_json_text(&j))
                                    : NULL;
    ck_json_release(&j);
    if (l->path[l->n] == NULL || l->val[l->n] == NULL ||
        ck_strmap_add(&l->by, l->a, l->path[l->n], l->n) < 0)
        return CK_ENOMEM;
    l->n++;
    return 0;
}

static void cfg_line(FILE *out, ck_json_t *j, char sign, const char *path,
                     const char *va, const char *vb, const char *ckey,
                     int *hdr)
{
    if (j != NULL) {
        ck_json_obj(j);
        ck_json_key(j, "key");
        ck_json_str(j, path);
        ck_json_key(j, vb ? "a" : "value");
        ck_json_raw(j, va, strlen(va));
        if (vb) {
            ck_json_key(j, "b");
            ck_json_raw(j, vb, strlen(vb));
        }
        ck_json_end(j);
        return;
    }
    if (!*hdr) {
        *hdr = 1;
        fputs("config ", out);
        ck_listing_put(out, ckey, strlen(ckey));
        fputs(":\n", out);
    }
    fprintf(out, "  %c ", sign);
    ck_listing_put(out, path, strlen(path));
    fputs(": ", out);
    ck_listing_put(out, va, strlen(va));
    if (vb) {
        fputs(" -> ", out);
        ck_listing_put(out, vb, strlen(vb));
    }
    fputc('\n', out);
}

static int config(diff_t *d, FILE *out, ck_json_t *j)
{
    leaves_t la = { &d->a.arena }, lb = { &d->b.arena };
    const char *ka = NULL, *kb = NULL;
    ck_err_t ea = { 0 }, eb = { 0 };
    ck_yval_t *ca = ck_listing_config(&d->a, &ka, &ea);
    ck_yval_t *cb = ck_listing_config(&d->b, &kb, &eb);
    size_t nadd = 0, nrm = 0, nch = 0;
    int rc = 0, hdr = 0;
    const char *ck;

    if (ca == NULL && cb == NULL)
        return 0;
    ck = ka ? ka : kb;
    if (ca != NULL)
        rc = ck_listing_leaves(la.a, ca, leaf_cb, &la);
    if (rc == 0 && cb != NULL)
        rc = ck_listing_leaves(lb.a, cb, leaf_cb, &lb);
    if (rc < 0)
        return rc;
    if (j != NULL) {
        ck_json_key(j, "config");
        ck_json_obj(j);
        ck_json_key(j, "removed");
        ck_json_arr(j);
    }
    for (size_t i = 0; i < la.n; i++)
        if (ck_strmap_get(&lb.by, la.path[i]) == SIZE_MAX) {
            nrm++;
            if (j || !d->o->stat)
                cfg_line(out, j, '-', la.path[i], la.val[i], NULL, ck, &hdr);
        }
    if (j != NULL) {
        ck_json_end(j);
        ck_json_key(j, "added");
        ck_json_arr(j);
    }
    for (size_t i = 0; i < lb.n; i++)
        if (ck_strmap_get(&la.by, lb.path[i]) == SIZE_MAX) {
            nadd++;
            if (j || !d->o->stat)
                cfg_line(out, j, '+', lb.path[i], lb.val[i], NULL, ck, &hdr);
        }
    if (j != NULL) {
        ck_json_end(j);
        ck_json_key(j, "changed");
        ck_json_arr(j);
    }
    for (size_t i = 0; i < la.n; i++) {
        size_t k = ck_strmap_get(&lb.by, la.path[i]);

        if (k == SIZE_MAX || strcmp(la.val[i], lb.val[k]) == 0)
            continue;
        nch++;
        if (j || !d->o->stat)
            cfg_line(out, j, '~', la.path[i], la.val[i], lb.val[k], ck,
                     &hdr);
    }
    if (j != NULL) {
        ck_json_end(j);
        ck_json_end(j);
    } else if (d->o->stat) {
        fprintf(out, " config %s | %zu removed, %zu added, %zu changed\n",
                ka ? ka : kb, nrm, nadd, nch);
    }
    if (nrm + nadd + nch)
        d->differs = 1;
    return 0;
}

/* ---- the command ------------------------------------------------------------ */

static int compare(diff_t *d, FILE *out, ck_json_t *j)
{
    int rc;

    d->ea.c = &d->a;
    d->eb.c = &d->b;
    rc = ck_listing_walk(&d->a, NULL, ent_cb, &d->ea);
    if (rc == 0)
        rc = ck_listing_walk(&d->b, NULL, ent_cb, &d->eb);
    if (rc < 0)
        return rc;
    if (j != NULL) {
        ck_json_obj(j);
        ck_json_key(j, "a");
        ck_json_str(j, d->a.path);
        ck_json_key(j, "b");
        ck_json_str(j, d->b.path);
    } else if (!d->o->stat) {
        fprintf(out, "--- %s\n+++ %s\n", d->a.path, d->b.path);
    }
    top(d, out, j);
    if (j != NULL) {
        ck_json_key(j, "state_dicts");
        ck_json_arr(j);
    }
    rc = groups(d, out, j);
    if (j != NULL)
        ck_json_end(j);
    if (rc == 0)
        rc = config(d, out, j);
    if (j != NULL) {
        ck_json_key(j, "same");
        ck_json_bool(j, !d->differs);
        ck_json_end(j);
    }
    return rc;
}

int ck_diff_main(const char *a, const char *b, const ck_diff_opts_t *o,
                 FILE *out)
{
    ck_json_t j = { 0 };
    diff_t *d = ck_calloc(1, sizeof(*d));
    int rc, status;

    if (d == NULL) {
        fprintf(stderr, "ckprep: out of memory\n");
        return 2;
    }
    d->o = o;
    rc = ck_ckpt_open(&d->a, a, o->open, &d->err);
    if (rc < 0) {
        fprintf(stderr, "ckprep: %s: %s\n", a, d->err.msg);
        ck_ckpt_close(&d->a);
        ck_free(d);
        return 2;
    }
    rc = ck_ckpt_open(&d->b, b, o->open, &d->err);
    if (rc < 0) {
        fprintf(stderr, "ckprep: %s: %s\n", b, d->err.msg);
        status = 2;
        goto out;
    }
    rc = compare(d, out, o->json ? &j : NULL);
    if (rc == 0 && j.b.oom)
        rc = CK_ENOMEM;
    if (rc < 0) {
        fprintf(stderr, "ckprep: diff %s %s: %s\n", a, b,
                d->err.code ? d->err.msg : ck_strerror(rc));
        status = 2;
        goto out;
    }
    if (o->json)
        fprintf(out, "%s\n", ck_json_text(&j));
    else if (!d->differs && !o->stat)
        fputs("same\n", out);
    status = d->differs ? 1 : 0;
out:
    ck_json_release(&j);
    ck_ckpt_close(&d->b);
    ck_ckpt_close(&d->a);
    ck_free(d->buf);
    ck_free(d);
    return status;
}
