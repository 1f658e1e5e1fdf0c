/*
 * test_numpy.c -- ck_np_check and ck_np_describe on the pickles of
 * numpy_cases.h: values real numpy 1.24 pickled (protocols 2, 3 and 5),
 * their numpy 2 spelling (numpy._core, made from the same bytes: numpy 2
 * is not installed), and hostile variants (object dtypes, flags marking
 * object items, byte counts off, malformed states, numpy names reduced to
 * something else).  Each accepted value must be described as expected;
 * each refused one refused with its code and the cause in the message,
 * and described as nothing.
 */
#include "numpy.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "numpy_cases.h"

typedef struct {
    ck_ckpt_t c;
    ck_py_t *v;
} fix_t;

static void load(fix_t *f, const char *pkl, size_t len, int allow)
{
    ck_err_t err = { 0 };

    memset(f, 0, sizeof(*f));
    f->c.fd = -1;
    ck_limits_default(&f->c.lim);
    f->c.allow_numpy = allow;
    assert_int_equal(ck_pickle_read((const uint8_t *)pkl, len, 1, &f->c.lim,
                                    &f->c.arena, &f->c.pk, &err), 0);
    f->v = ck_py_map_get(f->c.pk.root, "v", NULL);
    assert_non_null(f->v);
}

static void test_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(np_cases) / sizeof(np_cases[0]); i++) {
        const struct np_case *k = &np_cases[i];
        ck_err_t err = { 0 };
        char d[128] = "";
        fix_t f;
        int rc, described;

        load(&f, k->pkl, k->len, 1);
        rc = ck_np_check(&f.c, &err);
        described = ck_np_describe(f.v, d, sizeof(d));
        if (rc != k->rc || (k->rc < 0 && strstr(err.msg, k->text) == NULL) ||
            (k->rc == 0 && k->text[0] != '\0' && strcmp(d, k->text) != 0) ||
            (k->rc < 0 && described))
            fail_msg("%s: rc %d (want %d), message '%s', description '%s' "
                     "(want '%s')", k->name, rc, k->rc, err.msg, d, k->text);
        /* the same through the one validation inspect and run share */
        memset(&err, 0, sizeof(err));
        if (ck_ckpt_validate(&f.c, &err) != k->rc)
            fail_msg("%s: ck_ckpt_validate gave '%s'", k->name, err.msg);
        ck_ckpt_close(&f.c);
    }
}

/*
 * A compact persistent id (pickle.h) is walked at its tuple's depth: over
 * max_depth it is refused for its depth, as the same id with a tuple is
 * (a review's case: (id, [[[id']]]) at max_depth 4).
 */
static void test_compact_id_depth(void **state)
{
#define NP_PID0 "(X\x07\x00\x00\x00storageq\x02" "ctorch\nFloatStorage\nq\x03" \
    "X\x01\x00\x00\x00" "0q\x04" "X\x03\x00\x00\x00" "cpuq\x05" "K\x03tq\x01Q"
    static const char pkl[] = "\x80\x02" "cnumpy\ndtype\n0" NP_PID0
                              "]q\x07]q\x08]q\x09"
                              "(h\x02h\x03h\x04h\x05K\x03tq\x06Q"
                              "aaa\x86.";
    ck_ckpt_t c;
    ck_err_t err = { 0 };

    (void)state;
    memset(&c, 0, sizeof(c));
    c.fd = -1;
    ck_limits_default(&c.lim);
    c.lim.max_depth = 4;
    c.allow_numpy = 1;
    assert_int_equal(ck_pickle_read((const uint8_t *)pkl, sizeof(pkl) - 1, 1,
                                    &c.lim, &c.arena, &c.pk, &err), 0);
    assert_true(c.pk.root->u.seq.v[1]->u.seq.v[0]->u.seq.v[0]->u.seq.v[0]
                    ->flags & CK_PY_F_PIDC);
    assert_int_equal(ck_np_check(&c, &err), CK_ELIMIT);
    assert_string_equal(err.msg, "object nesting deeper than 4");
    ck_ckpt_close(&c);
#undef NP_PID0
}

/* Refused cases name the place: the key path of the value. */
static void test_place(void **state)
{
    /* {'hp': {'m': np.array([1, 'x'], dtype=object)}}, by hand from the
     * obj_array case: a dict wrapped around it */
    const struct np_case *k = NULL;
    ck_err_t err = { 0 };
    fix_t f;

    (void)state;
    for (size_t i = 0; i < sizeof(np_cases) / sizeof(np_cases[0]); i++)
        if (strcmp(np_cases[i].name, "obj_array") == 0)
            k = &np_cases[i];
    assert_non_null(k);
    load(&f, k->pkl, k->len, 1);
    {
        ck_py_t *outer = ck_py_new(&f.c.arena, CK_PY_DICT);

        assert_non_null(outer);
        assert_int_equal(ck_py_vec_push(&f.c.arena, &outer->u.seq,
                                        ck_py_str(&f.c.arena, "hp", 2)), 0);
        assert_int_equal(ck_py_vec_push(&f.c.arena, &outer->u.seq,
                                        f.c.pk.root), 0);
        f.c.pk.root = outer;
    }
    assert_int_equal(ck_np_check(&f.c, &err), CK_EUNSAFE);
    assert_non_null(strstr(err.msg, "numpy array at hp/v: object dtype"));
    ck_ckpt_close(&f.c);
}

/* Without allow_numpy, validation does not look (the allowlist refused
 * the names already); a pickle without numpy names passes untouched. */
static void test_off_and_absent(void **state)
{
    static const char plain[] = "\x80\x02}X\x01\x00\x00\x00vK\x01s.";
    const struct np_case *k = &np_cases[0];
    ck_err_t err = { 0 };
    fix_t f;

    (void)state;
    load(&f, plain, sizeof(plain) - 1, 1);
    assert_int_equal(ck_np_check(&f.c, &err), 0);
    assert_int_equal(ck_np_describe(f.v, (char[32]){ 0 }, 32), 0);
    ck_ckpt_close(&f.c);
    for (size_t i = 0; i < sizeof(np_cases) / sizeof(np_cases[0]); i++)
        if (strcmp(np_cases[i].name, "obj_array") == 0)
            k = &np_cases[i];
    load(&f, k->pkl, k->len, 0);
    assert_int_equal(ck_ckpt_validate(&f.c, &err), 0);
    ck_ckpt_close(&f.c);
}

static void test_globals(void **state)
{
    (void)state;
    assert_true(ck_np_global("numpy.core.multiarray", "_reconstruct"));
    assert_true(ck_np_global("numpy._core.multiarray", "_reconstruct"));
    assert_true(ck_np_global("numpy.core.multiarray", "scalar"));
    assert_true(ck_np_global("numpy._core.multiarray", "scalar"));
    assert_true(ck_np_global("numpy.core.numeric", "_frombuffer"));
    assert_true(ck_np_global("numpy._core.numeric", "_frombuffer"));
    assert_true(ck_np_global("numpy", "ndarray"));
    assert_true(ck_np_global("numpy", "dtype"));
    assert_false(ck_np_global("numpy", "load"));
    assert_false(ck_np_global("numpy.core.multiarray", "frombuffer"));
    assert_false(ck_np_global("numpy.core", "multiarray._reconstruct"));
    assert_false(ck_np_global("numpy.core.multiarray", "_reconstructx"));
    assert_false(ck_np_global("numpy.core.multiarra", "_reconstruct"));
    assert_false(ck_np_global("numpy.ma.core", "MaskedArray"));
    assert_false(ck_np_global("", "numpy.dtype"));
}

/* A dtype shared 2^27 times over (fields naming one sub-dtype, nested)
 * is checked once per node, and described within a bounded budget. */
static void test_shared_dtype_bomb(void **state)
{
    ck_arena_t *a;
    ck_err_t err = { 0 };
    ck_py_t *g, *cur;
    fix_t f;
    char d[128];

    (void)state;
    load(&f, np_cases[0].pkl, np_cases[0].len, 1); /* an f8 array */
    a = &f.c.arena;
    g = ck_py_global(a, "numpy", "dtype");
    /* the array's own dtype node (float64) is the leaf */
    cur = ck_py_after(f.v)->state->u.seq.v[2];
    for (int lvl = 0; lvl < 27; lvl++) {
        ck_py_t *dt = ck_py_new(a, CK_PY_REDUCE), *args = ck_py_new(a, CK_PY_TUPLE);
        ck_py_t *st = ck_py_new(a, CK_PY_TUPLE), *names = ck_py_new(a, CK_PY_TUPLE);
        ck_py_t *fields = ck_py_new(a, CK_PY_DICT), *none = ck_py_new(a, CK_PY_NONE);
        ck_py_t *f0 = ck_py_new(a, CK_PY_TUPLE), *f1 = ck_py_new(a, CK_PY_TUPLE);
        ck_py_t *t = ck_py_new(a, CK_PY_BOOL), *fa = ck_py_new(a, CK_PY_BOOL);
        uint64_t size = 16ull << lvl;
        char ts[32];

        t->b = 1;
        snprintf(ts, sizeof(ts), "V%llu", (unsigned long long)size);
        ck_py_vec_push(a, &args->u.seq, ck_py_str(a, ts, strlen(ts)));
        ck_py_vec_push(a, &args->u.seq, fa);
        ck_py_vec_push(a, &args->u.seq, t);
        ck_py_vec_push(a, &names->u.seq, ck_py_str(a, "a", 1));
        ck_py_vec_push(a, &names->u.seq, ck_py_str(a, "b", 1));
        ck_py_vec_push(a, &f0->u.seq, cur);
        ck_py_vec_push(a, &f0->u.seq, ck_py_int(a, 0));
        ck_py_vec_push(a, &f1->u.seq, cur);
        ck_py_vec_push(a, &f1->u.seq, ck_py_int(a, (int64_t)size / 2));
        ck_py_vec_push(a, &fields->u.seq, ck_py_str(a, "a", 1));
        ck_py_vec_push(a, &fields->u.seq, f0);
        ck_py_vec_push(a, &fields->u.seq, ck_py_str(a, "b", 1));
        ck_py_vec_push(a, &fields->u.seq, f1);
        ck_py_vec_push(a, &st->u.seq, ck_py_int(a, 3));
        ck_py_vec_push(a, &st->u.seq, ck_py_str(a, "|", 1));
        ck_py_vec_push(a, &st->u.seq, none);
        ck_py_vec_push(a, &st->u.seq, names);
        ck_py_vec_push(a, &st->u.seq, fields);
        ck_py_vec_push(a, &st->u.seq, ck_py_int(a, (int64_t)size));
        ck_py_vec_push(a, &st->u.seq, ck_py_int(a, 8));
        ck_py_vec_push(a, &st->u.seq, ck_py_int(a, 16));
        dt->u.o.fn = g;
        dt->u.o.args = args;
        ck_py_after_make(&f.c.arena, dt)->state = st;
        cur = dt; /* twice the size of the level below */
    }
    ck_py_after(f.v)->state->u.seq.v[2] = cur;
    /* the array's 24 bytes no longer match: refused for that, in time */
    assert_int_equal(ck_np_check(&f.c, &err), CK_EFORMAT);
    assert_non_null(strstr(err.msg, "its data holds 24 bytes"));
    assert_int_equal(ck_np_describe(f.v, d, sizeof(d)), 0);
    ck_ckpt_close(&f.c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_place),
        cmocka_unit_test(test_compact_id_depth),
        cmocka_unit_test(test_off_and_absent),
        cmocka_unit_test(test_globals),
        cmocka_unit_test(test_shared_dtype_bomb),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
