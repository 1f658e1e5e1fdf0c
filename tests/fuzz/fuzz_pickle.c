/*
 * fuzz_pickle.c -- libFuzzer target for the pickle reader and writer.
 *
 * Input: one pickle.  What it checks, once the first read succeeds:
 *  - the protocol 2 writer accepts the graph (or refuses it with a limit or
 *    an unsupported-feature error, never a format error);
 *  - the reader reads what the writer wrote;
 *  - the second graph equals the first (ck_py_equal), unless the first holds
 *    values protocol 2 spells as calls (bytes, bytearray, set, frozenset);
 *  - writing the second graph gives the same bytes as the first write: the
 *    writer is a fixed point of read + write;
 * and on every input, that the read through a window (ck_pickle_read_fd)
 * agrees with the read from memory, with the default limits and with
 * limits of a few bytes chosen by the input's last bytes.
 * Any violation aborts, which libFuzzer reports as a crash.
 */
#define _GNU_SOURCE
#include "numpy.h"
#include "pickle.h"
#include "zip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what, const ck_err_t *err)
{
    fprintf(stderr, "fuzz_pickle: %s: %s\n", what, err ? err->msg : "");
    abort();
}

static int has_calls(ck_py_t *p, uint32_t gen, uint32_t depth);

static int vec_has_calls(const ck_py_vec_t *v, uint32_t gen, uint32_t depth)
{
    for (size_t i = 0; i < v->n; i++)
        if (has_calls(v->v[i], gen, depth + 1))
            return 1;
    return 0;
}

/*
 * 1 when a node protocol 2 writes as a call is reachable from p, or a call
 * from its own callable or arguments: pickle makes such a call twice (the
 * writer, as CPython's, fetches the arguments met among themselves and
 * calls again), so the graph read back has one more node.  Walks in the
 * writer's order, so its depth stays within what the writer accepted.
 */
static int has_calls(ck_py_t *p, uint32_t gen, uint32_t depth)
{
    if (p != NULL && (p->flags & CK_PY_F_WALKING))
        return 1; /* a call met inside its own callable or arguments */
    if (p == NULL || p->wgen == gen)
        return 0;
    if (depth > 100000)
        return 1;
    p->wgen = gen;
    switch ((ck_py_kind_t)p->kind) {
    case CK_PY_BYTES:
    case CK_PY_BYTEARRAY:
    case CK_PY_SET:
    case CK_PY_FROZENSET:
        return 1;
    case CK_PY_TUPLE:
    case CK_PY_LIST:
    case CK_PY_DICT:
        return vec_has_calls(&p->u.seq, gen, depth);
    case CK_PY_REDUCE:
    case CK_PY_NEWOBJ: {
        uint32_t n = 0;
        ck_py_t **v = p->flags & CK_PY_F_ARGC ? ck_py_args(p, &n) : NULL;
        int found;

        p->flags |= CK_PY_F_WALKING;
        found = has_calls(p->u.o.fn, gen, depth + 1) ||
                (v == NULL && has_calls(p->u.o.args, gen, depth + 1));
        for (uint32_t i = 0; i < n && !found; i++) /* a compact call's */
            found = has_calls(v[i], gen, depth + 2);
        p->flags &= (uint8_t)~CK_PY_F_WALKING;
        return found ||
               vec_has_calls(&ck_py_after(p)->list, gen, depth) ||
               vec_has_calls(&ck_py_after(p)->dict, gen, depth) ||
               has_calls(ck_py_after(p)->state, gen, depth + 1);
    }
    case CK_PY_PERSID: /* a compact id's items are never calls */
        return !(p->flags & CK_PY_F_PIDC) &&
               has_calls(p->u.pid, gen, depth + 1);
    default:
        return 0;
    }
}

/*
 * numpy values (core/numpy.c) in a graph: 1 when ck_np_check accepts it;
 * each mapping value is described too (bounded, whatever the graph).
 */
static int numpy_ok(ck_pickle_t *p, const ck_limits_t *lim)
{
    static ck_ckpt_t c; /* large: not on the stack; one thread */
    ck_py_vec_t *items = ck_py_mapping(p->root);
    ck_err_t err = { 0 };
    char d[128];

    memset(&c, 0, sizeof(c));
    c.lim = *lim;
    c.pk = *p;
    c.allow_numpy = 1;
    ck_np_describe(p->root, d, sizeof(d));
    for (size_t i = 1; items != NULL && i < items->n; i += 2)
        ck_np_describe(items->v[i], d, sizeof(d));
    return ck_np_check(&c, &err) == 0;
}

/*
 * The input read from a file through a window of 1 to 64 bytes (as a
 * checkpoint's big data.pkl is) agrees with its read from memory: the
 * same code and message, or the same graph, written alike.
 */
static void window_agrees(const uint8_t *data, size_t size,
                          const ck_limits_t *lim, int rc, const ck_err_t *err,
                          const ck_pickle_t *p)
{
    static int fd = -1;
    ck_arena_t a = { 0 };
    ck_pickle_t q;
    ck_err_t e2 = { 0 };
    ck_buf_t b1 = { 0 }, b2 = { 0 };
    size_t window = 1 + (size > 0 ? data[size / 2] % 64 : 0);
    int r2, w1, w2;

    if (fd < 0 && (fd = memfd_create("fuzz_pickle", 0)) < 0)
        die("memfd_create", NULL);
    if (ftruncate(fd, 0) < 0 || ck_pwrite_full(fd, "xyz", 3, 0) < 0 ||
        ck_pwrite_full(fd, data, size, 3) < 0 ||
        ck_pwrite_full(fd, "\n.\n", 3, 3 + size) < 0)
        die("writing the input to its file", NULL);
    r2 = ck_pickle_read_fd(fd, 3, size, window, lim, &a, &q, &e2);
    if (r2 != rc || strcmp(e2.msg, err->msg) != 0) {
        fprintf(stderr, "window %zu: %d (%s); in memory: %d (%s)\n", window,
                r2, e2.msg, rc, err->msg);
        die("the read through a window differs", NULL);
    }
    if (rc == 0) {
        ck_err_t we = { 0 };

        w1 = ck_pickle_write(p->root, lim, &a, NULL, NULL, &b1, &we);
        w2 = ck_pickle_write(q.root, lim, &a, NULL, NULL, &b2, &we);
        if (w1 != w2 || b1.len != b2.len ||
            (b1.len > 0 && memcmp(b1.data, b2.data, b1.len) != 0) ||
            p->consumed != q.consumed || p->protocol != q.protocol)
            die("the graph read through a window differs", NULL);
    }
    ck_buf_release(&b1);
    ck_buf_release(&b2);
    ck_arena_release(&a);
}

/* The agreement again under limits as small as a few bytes, chosen by
 * the input's last bytes: limit errors and max_pickle_bytes' clipping
 * on both paths (the checks below keep the default limits). */
static void window_agrees_tight(const uint8_t *data, size_t size)
{
    ck_limits_t lim;
    ck_arena_t a = { 0 };
    ck_pickle_t p;
    ck_err_t err = { 0 };
    int rc;

    if (size < 3)
        return;
    ck_limits_default(&lim);
    if (data[size - 1] & 1)
        lim.max_string_bytes = data[size - 1] >> 1 & 0x1f;
    if (data[size - 2] & 1)
        lim.max_pickle_bytes = data[size - 2] >> 1;
    if (data[size - 3] & 1)
        lim.max_memo = data[size - 3] >> 1 & 0xf;
    if (data[size - 3] & 0x80)
        lim.max_depth = 3;
    rc = ck_pickle_read(data, size, 1, &lim, &a, &p, &err);
    window_agrees(data, size, &lim, rc, &err, &p);
    ck_arena_release(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ck_limits_t lim;
    ck_arena_t a = { 0 };
    ck_pickle_t p1, p2;
    ck_buf_t w1 = { 0 }, w2 = { 0 };
    ck_err_t err = { 0 };
    int rc;

    ck_limits_default(&lim);
    rc = ck_pickle_read(data, size, 1, &lim, &a, &p1, &err);
    window_agrees(data, size, &lim, rc, &err, &p1);
    window_agrees_tight(data, size);
    if (rc < 0)
        goto out;
    rc = ck_pickle_write(p1.root, &lim, &a, NULL, NULL, &w1, &err);
    if (rc == CK_ELIMIT || rc == CK_EUNSUPPORTED)
        goto out;
    if (rc < 0)
        die("writing what was read", &err);
    if (ck_pickle_read(w1.data, w1.len, 1, &lim, &a, &p2, &err) < 0)
        die("reading what was written", &err);
    /* an accepted numpy value, written at protocol 2, is accepted again */
    if (numpy_ok(&p1, &lim) && !numpy_ok(&p2, &lim))
        die("numpy values accepted, written back, then refused", NULL);
    if (!has_calls(p1.root, ck_py_next_gen(), 0) &&
        1 != ck_py_equal(p1.root, p2.root, UINT32_MAX))
        die("the graph read back differs", NULL);
    if (ck_pickle_write(p2.root, &lim, &a, NULL, NULL, &w2, &err) < 0)
        die("writing the graph read back", &err);
    if (w1.len != w2.len || memcmp(w1.data, w2.data, w1.len) != 0)
        die("the second write differs from the first", NULL);
out:
    ck_buf_release(&w1);
    ck_buf_release(&w2);
    ck_arena_release(&a);
    return 0;
}
