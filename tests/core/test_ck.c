/*
 * test_ck.c -- the base layer: error codes and messages (first error wins,
 * ck_err_replace and ck_err_clear where a caller overrides it), the allocation
 * hooks and their failure injection, growable buffers, the arena, and the
 * UTF-8 decoder every parser shares.
 */
#define _GNU_SOURCE /* MAP_FIXED_NOREPLACE */
#include "ck.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static int teardown(void **state)
{
    ck_mem_fail_at(0);
    (void)state;
    return 0;
}

static void test_error_names(void **state)
{
    ck_err_t e = { 0 };

    assert_string_equal(ck_errname(CK_EFORMAT), "format");
    assert_string_equal(ck_errname(CK_ECANCELED), "cancelled");
    assert_string_equal(ck_errname(CK_ENOMEM), "nomem");
    assert_non_null(ck_strerror(-ENOENT));
    assert_int_equal(ck_err_set(&e, CK_EUNSAFE, "global %s.%s", "posix", "system"),
                     CK_EUNSAFE);
    assert_int_equal(e.code, CK_EUNSAFE);
    assert_string_equal(e.msg, "global posix.system");
    /* the first error is kept: it is the cause */
    assert_int_equal(ck_err_set(&e, CK_ENOMEM, "later"), CK_ENOMEM);
    assert_int_equal(e.code, CK_EUNSAFE);
    assert_string_equal(e.msg, "global posix.system");
    /* a message longer than the buffer is cut, still terminated */
    ck_err_clear(&e);
    {
        char big[2 * sizeof(e.msg)];

        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        ck_err_set(&e, CK_EFORMAT, "%s", big);
        assert_int_equal(strlen(e.msg), sizeof(e.msg) - 1);
    }
    (void)state;
}

static void test_err_replace_clear(void **state)
{
    ck_err_t e = { 0 };
    char big[2 * sizeof(e.msg)];

    /* replace records when nothing is recorded */
    assert_int_equal(ck_err_replace(&e, CK_ELIMIT, "limit %d", 8), CK_ELIMIT);
    assert_int_equal(e.code, CK_ELIMIT);
    assert_string_equal(e.msg, "limit 8");
    /* and replaces what is: code and message */
    ck_err_set(&e, CK_EFORMAT, "ignored");
    assert_int_equal(ck_err_replace(&e, -EAGAIN, "truncated"), -EAGAIN);
    assert_int_equal(e.code, -EAGAIN);
    assert_string_equal(e.msg, "truncated");
    /* the new message may quote the one it replaces */
    assert_int_equal(ck_err_replace(&e, CK_EFORMAT, "data.pkl: %s (%s)", e.msg,
                                    e.msg),
                     CK_EFORMAT);
    assert_int_equal(e.code, CK_EFORMAT);
    assert_string_equal(e.msg, "data.pkl: truncated (truncated)");
    /* first error wins again after it */
    ck_err_set(&e, CK_ENOMEM, "later");
    assert_int_equal(e.code, CK_EFORMAT);
    /* a long message is cut, still terminated */
    memset(big, 'y', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    ck_err_replace(&e, CK_EFORMAT, "%s", big);
    assert_int_equal(strlen(e.msg), sizeof(e.msg) - 1);
    /* clear forgets code and message; the next set records */
    ck_err_clear(&e);
    assert_int_equal(e.code, 0);
    assert_string_equal(e.msg, "");
    assert_int_equal(ck_err_set(&e, CK_EUNSAFE, "after clear"), CK_EUNSAFE);
    assert_int_equal(e.code, CK_EUNSAFE);
    assert_string_equal(e.msg, "after clear");
    /* a NULL record is ignored, the code still returned */
    assert_int_equal(ck_err_replace(NULL, CK_ELIMIT, "x"), CK_ELIMIT);
    ck_err_clear(NULL);
    (void)state;
}

static void test_mem_fail_at(void **state)
{
    void *p;

    ck_mem_fail_at(3);
    p = ck_malloc(8);
    assert_non_null(p);
    ck_free(p);
    p = ck_calloc(2, 8);
    assert_non_null(p);
    ck_free(p);
    assert_null(ck_malloc(8));       /* the third */
    assert_null(ck_strdup("x"));     /* and every one after */
    assert_int_equal(ck_mem_count(), 4);
    ck_mem_fail_at(0);
    p = ck_realloc(NULL, 16);
    assert_non_null(p);
    ck_free(p);
    ck_free(NULL);
    /* calloc guards n * size */
    assert_null(ck_calloc(SIZE_MAX / 2, 4));
    (void)state;
}

/* A drain that sums what it is given, and fails on demand. */
typedef struct {
    uint64_t n, sum;
    size_t most;
    int fail;
} drain_t;

static int drain_sum(void *ud, const uint8_t *p, size_t n)
{
    drain_t *d = ud;

    if (d->fail)
        return -EIO;
    for (size_t i = 0; i < n; i++)
        d->sum += p[i];
    d->n += n;
    d->most = n > d->most ? n : d->most;
    return 0;
}

/* A buffer with a drain streams: it never holds much, and every byte
 * reaches the drain once, in order of writing. */
static void test_buf_drain(void **state)
{
    drain_t d = { 0 };
    ck_buf_t b = { .drain = drain_sum, .drain_ud = &d };
    uint64_t sum = 0;
    uint8_t chunk[1000];

    for (int i = 0; i < 3000; i++) {
        for (size_t k = 0; k < sizeof(chunk); k++)
            chunk[k] = (uint8_t)(i + k);
        for (size_t k = 0; k < sizeof(chunk); k++)
            sum += chunk[k];
        assert_int_equal(ck_buf_put(&b, chunk, sizeof(chunk)), 0);
    }
    assert_int_equal(ck_buf_printf(&b, "%d", 7), 0);
    sum += '7';
    assert_true(b.cap <= 2 * CK_BUF_DRAIN_AT);
    assert_int_equal(ck_buf_drain(&b), 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(d.n, 3000 * sizeof(chunk) + 1);
    assert_int_equal(b.drained, d.n);
    assert_int_equal(d.sum, sum);
    assert_true(d.most <= CK_BUF_DRAIN_AT);
    /* a failing drain fails the buffer, stickily, with its code */
    d.fail = 1;
    assert_int_equal(ck_buf_put(&b, chunk, 10), 0);
    assert_int_equal(ck_buf_drain(&b), -EIO);
    assert_int_equal(ck_buf_put(&b, chunk, 10), CK_ENOMEM);
    assert_int_equal(b.oom, 1);
    assert_int_equal(b.drain_rc, -EIO);
    ck_buf_release(&b);
    (void)state;
}

static void test_buf(void **state)
{
    ck_buf_t b = { 0 };

    for (int i = 0; i < 1000; i++)
        assert_int_equal(ck_buf_printf(&b, "%d,", i), 0);
    assert_int_equal(ck_buf_put(&b, "end", 3), 0);
    assert_int_equal(ck_buf_putc(&b, '\0'), 0);
    assert_memory_equal(b.data, "0,1,2,", 6);
    assert_non_null(strstr((char *)b.data, "998,999,end"));
    ck_buf_release(&b);
    /* a failed append is sticky: later appends fail too */
    ck_mem_fail_at(1);
    assert_int_equal(ck_buf_put(&b, "abc", 3), CK_ENOMEM);
    ck_mem_fail_at(0);
    assert_int_equal(ck_buf_put(&b, "abc", 3), CK_ENOMEM);
    assert_true(b.oom);
    ck_buf_release(&b);
    assert_false(b.oom);
    assert_int_equal(ck_buf_put(&b, "abc", 3), 0);
    ck_buf_release(&b);
    (void)state;
}

static void test_arena(void **state)
{
    ck_arena_t a = { 0 };
    char *s, *big;

    s = ck_arena_printf(&a, "%s-%d", "x", 42);
    assert_string_equal(s, "x-42");
    assert_string_equal(ck_arena_strndup(&a, "abcdef", 3), "abc");
    /* a block larger than the arena's block size gets its own */
    big = ck_arena_alloc(&a, 1 << 20);
    assert_non_null(big);
    memset(big, 1, 1 << 20);
    assert_string_equal(s, "x-42");
    assert_true(a.used >= (1 << 20));
    /* arena memory is aligned for any object */
    for (int i = 1; i < 20; i++)
        assert_int_equal((uintptr_t)ck_arena_alloc(&a, (size_t)i) % 8, 0);
    ck_arena_release(&a);
    ck_mem_fail_at(1);
    assert_null(ck_arena_alloc(&a, 8));
    ck_mem_fail_at(0);
    ck_arena_release(&a);
    (void)state;
}

static void fill(char *p, size_t n, int seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (char)(i * 7 + (size_t)seed);
}

static void check_fill(const char *p, size_t n, int seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (char)(i * 7 + (size_t)seed))
            fail_msg("byte %zu of %zu differs", i, n);
}

/*
 * ck_arena_grow: the last request that got a block of its own is
 * reallocated, its old room given back (the arena counts only the
 * difference), small allocations between growths notwithstanding; any
 * other is copied and stays readable (ASan would see a use after free);
 * a failed grow leaves it as it was.
 */
static void test_arena_grow(void **state)
{
    ck_arena_t a = { 0 };
    char *p, *q, *r, *small;
    size_t used;

    p = ck_arena_alloc(&a, 20000);
    assert_non_null(p);
    fill(p, 20000, 1);
    used = a.used;
    q = ck_arena_grow(&a, p, 20000, 40000);
    assert_non_null(q);
    assert_int_equal(a.used - used, 20000);
    check_fill(q, 20000, 1);
    fill(q, 40000, 2);
    small = ck_arena_strdup(&a, "small");
    used = a.used;
    q = ck_arena_grow(&a, q, 40000, 80000);
    assert_int_equal(a.used - used, 40000);
    check_fill(q, 40000, 2);
    assert_string_equal(small, "small");
    /* another request too big for a shared block: q is no longer the
     * last, so it is copied */
    r = ck_arena_alloc(&a, 70000);
    fill(r, 70000, 3);
    used = a.used;
    p = ck_arena_grow(&a, q, 80000, 90000);
    assert_int_equal(a.used - used, 90000);
    check_fill(q, 40000, 2);
    check_fill(p, 40000, 2);
    check_fill(r, 70000, 3);
    /* the copy, p, is the last now: grown in place of itself, or not at
     * all */
    ck_mem_fail_at(1);
    assert_null(ck_arena_grow(&a, p, 90000, 180000));
    ck_mem_fail_at(0);
    check_fill(p, 40000, 2);
    used = a.used;
    q = ck_arena_grow(&a, p, 90000, 180000);
    assert_int_equal(a.used - used, 90000);
    check_fill(q, 40000, 2);
    check_fill(r, 70000, 3);
    /* small ones are copied */
    p = ck_arena_alloc(&a, 64);
    fill(p, 64, 4);
    q = ck_arena_grow(&a, p, 64, 128);
    check_fill(p, 64, 4);
    check_fill(q, 64, 4);
    ck_arena_release(&a);
    /* the first block may be a big one, and the head of the list */
    p = ck_arena_alloc(&a, 20000);
    small = ck_arena_strdup(&a, "after");
    q = ck_arena_grow(&a, p, 20000, 50000);
    fill(q, 50000, 5);
    assert_string_equal(small, "after");
    ck_arena_release(&a);
    (void)state;
}

static void test_strmap(void **state)
{
    ck_arena_t a = { 0 };
    ck_strmap_t m = { 0 };
    char key[32];

    assert_int_equal(ck_strmap_get(&m, "x"), SIZE_MAX);   /* empty */
    for (size_t i = 0; i < 5000; i++) {      /* keys are borrowed */
        snprintf(key, sizeof(key), "k%zu", i);
        assert_int_equal(ck_strmap_add(&m, &a, ck_arena_strdup(&a, key), i), 0);
    }
    for (size_t i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "k%zu", i);
        assert_int_equal(ck_strmap_get(&m, key), i);
    }
    assert_int_equal(ck_strmap_get(&m, "k5000"), SIZE_MAX);
    assert_int_equal(ck_strmap_get(&m, ""), SIZE_MAX);
    /* a key added twice: the first index wins, as find_storage needs */
    assert_int_equal(ck_strmap_add(&m, &a, "k7", 99), 0);
    assert_int_equal(ck_strmap_get(&m, "k7"), 7);
    assert_int_equal(ck_strmap_add(&m, &a, "", 42), 0);
    assert_int_equal(ck_strmap_get(&m, ""), 42);
    /* put: stored, or found with the value that stays */
    {
        size_t old = 0;

        assert_int_equal(ck_strmap_put(&m, &a, "k9", 5, &old), 1);
        assert_int_equal(old, 9);
        assert_int_equal(ck_strmap_put(&m, &a, "new", 5, &old), 0);
        assert_int_equal(ck_strmap_get(&m, "new"), 5);
        assert_int_equal(ck_strmap_put(&m, &a, "new", 6, NULL), 1);
        assert_int_equal(ck_strmap_get(&m, "new"), 5);
        assert_int_equal(m.n, 5002);
    }
    ck_arena_release(&a);
    /* growing fails cleanly when the arena cannot */
    memset(&m, 0, sizeof(m));
    ck_mem_fail_at(1);
    assert_int_equal(ck_strmap_add(&m, &a, "x", 1), CK_ENOMEM);
    ck_mem_fail_at(0);
    ck_arena_release(&a);
    (void)state;
}

#define U(s) ((const uint8_t *)(s))

static void test_utf8_len(void **state)
{
    assert_int_equal(ck_utf8_len(U("a"), 1, 0), 1);
    assert_int_equal(ck_utf8_len(U("\xc3\xa9"), 2, 0), 2);
    assert_int_equal(ck_utf8_len(U("\xe2\x82\xac"), 3, 0), 3);
    assert_int_equal(ck_utf8_len(U("\xf0\x9f\x98\x80"), 4, 0), 4);
    assert_int_equal(ck_utf8_len(U("\xf4\x8f\xbf\xbf"), 4, 0), 4); /* U+10FFFF */
    /* truncated, bad continuation, stray continuation, nothing left */
    assert_int_equal(ck_utf8_len(U("\xe2\x82"), 2, 0), 0);
    assert_int_equal(ck_utf8_len(U("\xc3\x28"), 2, 0), 0);
    assert_int_equal(ck_utf8_len(U("\x80"), 1, 0), 0);
    assert_int_equal(ck_utf8_len(U(""), 0, 0), 0);
    /* overlong forms and past U+10FFFF */
    assert_int_equal(ck_utf8_len(U("\xc0\xaf"), 2, 0), 0);
    assert_int_equal(ck_utf8_len(U("\xe0\x80\xaf"), 3, 0), 0);
    assert_int_equal(ck_utf8_len(U("\xf0\x80\x80\xaf"), 4, 0), 0);
    assert_int_equal(ck_utf8_len(U("\xf4\x90\x80\x80"), 4, 0), 0);
    assert_int_equal(ck_utf8_len(U("\xff"), 1, 0), 0);
    /* surrogates only with surrogatepass */
    assert_int_equal(ck_utf8_len(U("\xed\xa0\x80"), 3, 0), 0);
    assert_int_equal(ck_utf8_len(U("\xed\xa0\x80"), 3, 1), 3);
    (void)state;
}

static void test_utf8_valid_and_hash(void **state)
{
    assert_int_equal(ck_utf8_valid("", 0), 1);
    assert_int_equal(ck_utf8_valid("caf\xc3\xa9 \xe2\x82\xac", 9), 1);
    assert_int_equal(ck_utf8_valid("caf\xc3", 4), 0);      /* cut short */
    assert_int_equal(ck_utf8_valid("a\xff" "b", 3), 0);
    assert_int_equal(ck_utf8_valid("\xed\xa0\x80", 3), 0); /* surrogate */
    /* FNV-1a 64 test vectors */
    assert_true(ck_hash_fnv1a("", 0) == 0xcbf29ce484222325ull);
    assert_true(ck_hash_fnv1a("a", 1) == 0xaf63dc4c8601ec8cull);
    assert_true(ck_hash_fnv1a("foobar", 6) == 0x85944171f73967e8ull);
    (void)state;
}

static void esc(const char *in, size_t n, const char *want)
{
    char got[256] = "", e[12];

    for (size_t i = 0; i < n;) {
        i += ck_esc_step((const uint8_t *)in + i, n - i, e);
        strcat(got, e);
    }
    assert_string_equal(got, want);
}

static void test_esc_step(void **state)
{
    (void)state;
    esc("plain é", 8, "plain é");
    esc("a\rb", 3, "a\\x0db");
    esc("\x1b[2K", 4, "\\x1b[2K");
    esc("a\0b", 3, "a\\x00b");
    esc("\x7f\\", 2, "\\x7f\\");
    esc("\xff\xc3", 2, "\\xff\\xc3");        /* not UTF-8 */
    esc("\xc0\xaf", 2, "\\xc0\\xaf");        /* overlong */
    esc("\xe2\x80\xae" "cba", 6, "\\u{202e}cba"); /* RLO */
    esc("\xe2\x81\xa6", 3, "\\u{2066}");      /* LRI */
    esc("\xc2\x9b" "2J", 4, "\\u{009b}2J");    /* C1 CSI */
    esc("\xef\xbb\xbf", 3, "\\u{feff}");
    esc("\xe2\x80\xa8", 3, "\\u{2028}");
}

/* The VmFlags of the mapping holding p (/proc/self/smaps), or "". */
static void vm_flags(const void *p, char out[512])
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0;

    assert_non_null(f);
    out[0] = '\0';
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long lo, hi;

        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2)
            in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
        else if (in && strncmp(line, "VmFlags:", 8) == 0) {
            memcpy(out, line, sizeof(line));
            break;
        }
    }
    fclose(f);
}

/*
 * An arena past 1 MiB takes blocks of one huge page each, advised
 * MADV_HUGEPAGE (VmFlags "hg"), zero, and what was written before stays;
 * an allocation failing at a huge block fails the request; released, the
 * arena is empty.
 */
static void test_arena_huge(void **state)
{
    ck_arena_t a = { 0 };
    char flags[512];
    uint8_t *first = NULL, *p = NULL;
    size_t n = 0;

    (void)state;
    while (a.used < (6u << 20)) {
        p = ck_arena_alloc(&a, 4096);
        assert_non_null(p);
        for (size_t i = 0; i < 4096; i++)
            assert_int_equal(p[i], 0);
        memset(p, 0xa5, 4096);
        if (first == NULL)
            first = p;
        n++;
    }
    /* the last request is in a huge block: its mapping is aligned */
    vm_flags(p, flags);
    assert_non_null(strstr(flags, " hg"));
    assert_int_equal(first[0], 0xa5);
    assert_true(n >= 1536);
    /* a request of exactly a block's size past 1 MiB that the huge block
     * cannot hold is a block of its own from the heap, which
     * ck_arena_grow reallocates in place */
    for (n = 0; n < 64; n++) {
        const void *big = a.big;

        p = ck_arena_alloc(&a, 64 * 1024);
        assert_non_null(p);
        if (a.big != big)
            break;
    }
    assert_true(n < 64);
    memset(p, 1, 64 * 1024);
    p = ck_arena_grow(&a, p, 64 * 1024, 3u << 20);
    assert_non_null(p);
    assert_int_equal(p[64 * 1024 - 1], 1);
    /* the next huge block fails: requests succeed until it is needed */
    ck_mem_fail_at(1);
    for (n = 0; n < 600 && ck_arena_alloc(&a, 8192) != NULL; n++)
        ;
    ck_mem_fail_at(0);
    assert_true(n < 300);
    ck_arena_release(&a);
    assert_int_equal(a.used, 0);
}

/*
 * ck_map_grow: a mapping grown from 512 bytes to 64 MiB keeps what it
 * held, reads zero beyond, is advised huge once big; a failed grow
 * leaves it as it was.
 */
static void test_map_grow(void **state)
{
    uint64_t *m = ck_map_grow(NULL, 0, 512), *q;
    size_t cap = 64;
    char flags[512];

    (void)state;
    assert_non_null(m);
    for (size_t i = 0; i < cap; i++)
        assert_int_equal(m[i], 0);
    m[0] = 1;
    m[cap - 1] = 2;
    while (cap < (8u << 20)) {
        q = ck_map_grow(m, cap * 8, cap * 16);
        assert_non_null(q);
        m = q;
        assert_int_equal(m[0], 1);
        assert_int_equal(m[cap - 1], 2);
        assert_int_equal(m[cap], 0);
        assert_int_equal(m[2 * cap - 1], 0);
        m[cap - 1] = 0;
        m[2 * cap - 1] = 2;
        cap *= 2;
    }
    vm_flags(m + cap / 2, flags);
    assert_non_null(strstr(flags, " hg"));
    assert_int_equal((uintptr_t)m & ((2u << 20) - 1), 0);
    ck_mem_fail_at(1);
    assert_null(ck_map_grow(m, cap * 8, cap * 16));
    ck_mem_fail_at(0);
    assert_int_equal(m[cap - 1], 2);
    ck_map_free(m, cap * 8);
    ck_map_free(NULL, 0);
}

/*
 * A mapping at an address not 2 MiB aligned grows, and grows again: the
 * huge-page advice covers the whole mapping.  (Advice on its aligned
 * middle alone split it in three kernel areas, and the next mremap failed
 * with EFAULT: the memo's growth read as out of memory, now and then.)
 * The first growth is in place: the room after the mapping is free.
 */
static void test_map_grow_unaligned(void **state)
{
    size_t huge = 2u << 20, n1 = 4u << 20, n2 = 8u << 20, n3 = 16u << 20;
    uint8_t *r = mmap(NULL, 64u << 20, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t *base, *p, *q;
    char flags[512];

    (void)state;
    assert_true(r != MAP_FAILED);
    assert_int_equal(munmap(r, 64u << 20), 0);
    base = (uint8_t *)(((uintptr_t)r + huge - 1) & ~(uintptr_t)(huge - 1));
    p = mmap(base + 4096, n1, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    assert_true(p == base + 4096);
    memset(p, 1, n1);
    q = ck_map_grow(p, n1, n2);
    assert_true(q == p); /* in place, so still unaligned */
    q[n2 - 1] = 2;
    q = ck_map_grow(q, n2, n3);
    assert_non_null(q);
    assert_int_equal(q[0], 1);
    assert_int_equal(q[n1 - 1], 1);
    assert_int_equal(q[n2 - 1], 2);
    assert_int_equal(q[n3 - 1], 0);
    vm_flags(q, flags); /* the first page too: one area */
    assert_non_null(strstr(flags, " hg"));
    ck_map_free(q, n3);
}

/* Is p the first byte of a mapping of its own? */
static int map_start(const void *p)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;

    assert_non_null(f);
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        unsigned long lo;

        found = sscanf(line, "%lx-", &lo) == 1 && lo == (uintptr_t)p;
    }
    fclose(f);
    return found;
}

/*
 * Every big array is whole huge pages at a huge page's start, advised
 * huge (a 4 KiB page fault costs what a 2 MiB one does, 11 us where we
 * measure): ck_map_grow's from MAP_MIN (1 MiB) on, an arena's request
 * of that size in a block of its own and as ck_arena_grow makes it
 * bigger, and a ck_buf's bytes.  What they held stays.
 */
static void test_big_arrays_huge(void **state)
{
    uintptr_t huge = 2u << 20;
    ck_arena_t a = { 0 };
    ck_buf_t b = { 0 };
    char flags[512];
    uint8_t *p, *q;

    (void)state;
    p = ck_map_grow(NULL, 0, 1100u << 10);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p & (huge - 1), 0);
    assert_true(map_start(p));
    vm_flags(p, flags);
    assert_non_null(strstr(flags, " hg"));
    ck_map_free(p, 1100u << 10);

    p = ck_arena_alloc(&a, 1100u << 10);
    assert_non_null(p);
    vm_flags(p, flags);
    assert_non_null(strstr(flags, " hg"));
    memset(p, 7, 1100u << 10);
    q = ck_arena_grow(&a, p, 1100u << 10, 5u << 20);
    assert_non_null(q);
    assert_int_equal(q[0], 7);
    assert_int_equal(q[(1100u << 10) - 1], 7);
    vm_flags(q + (4u << 20), flags);
    assert_non_null(strstr(flags, " hg"));
    assert_true(((uintptr_t)q & (huge - 1)) < 64); /* after the header */
    ck_arena_release(&a);

    assert_int_equal(ck_buf_reserve(&b, 100), 0);
    memcpy(b.data, "kept", 4);
    b.len = 4;
    assert_int_equal(ck_buf_reserve(&b, 1u << 20), 0);
    assert_memory_equal(b.data, "kept", 4);
    assert_int_equal((uintptr_t)b.data & (huge - 1), 0);
    vm_flags(b.data + (1u << 20), flags);
    assert_non_null(strstr(flags, " hg"));
    ck_buf_release(&b);
}

/* The process's resident set, in bytes. */
static size_t rss_now(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;

    assert_non_null(f);
    assert_int_equal(fscanf(f, "%lu %lu", &size, &res), 2);
    fclose(f);
    return res * 4096;
}

/*
 * A big array is whole huge pages from 1 MiB on, heap memory below: 300
 * KiB and 1000 KiB take themselves, 1 MiB 2 MiB, 3 MiB 4 MiB; grown past
 * 1 MiB it is copied to whole huge pages.  And a hundred arena requests
 * of 264 KiB, written whole, cost about their size, not a huge page each
 * (rounded up, they took 200 MiB: a pickle of lists of 33,000 Nones took
 * 8 times its lists' items).
 */
static void test_map_len_bounded(void **state)
{
    static const size_t sizes[][2] = {
        { 300u << 10, 300u << 10 },
        { 1000u << 10, 1000u << 10 },
        { 1u << 20, 2u << 20 },
        { 3u << 20, 4u << 20 },
        { (16u << 20) + 4096, 18u << 20 },
    };
    ck_arena_t a = { 0 };
    size_t before;

    (void)state;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint8_t *p = ck_map_grow(NULL, 0, sizes[i][0]);

        assert_non_null(p);
        if (sizes[i][0] >= (1u << 20)) /* a mapping */
            assert_int_equal((uintptr_t)p & ((2u << 20) - 1), 0);
        assert_int_equal(ck_map_len(sizes[i][0]), sizes[i][1]);
        ck_map_free(p, sizes[i][0]);
    }
    /* grown past 1 MiB: a new mapping of whole huge pages, what it held
     * copied there */
    {
        uint8_t *p = ck_map_grow(NULL, 0, 600u << 10), *q;

        assert_non_null(p);
        memset(p, 9, 600u << 10);
        q = ck_map_grow(p, 600u << 10, 1500u << 10);
        assert_non_null(q);
        assert_true(q != p); /* a new mapping, at a huge page */
        assert_int_equal((uintptr_t)q & ((2u << 20) - 1), 0);
        assert_int_equal(q[0], 9);
        assert_int_equal(q[(600u << 10) - 1], 9);
        assert_int_equal(q[600u << 10], 0);
        ck_map_free(q, 1500u << 10);
    }
    before = rss_now();
    for (int i = 0; i < 100; i++) {
        uint8_t *p = ck_arena_alloc(&a, 264u << 10);

        assert_non_null(p);
        memset(p, 1, 264u << 10);
    }
    assert_true(rss_now() - before < 40u << 20);
    ck_arena_release(&a);
}

/* Are all of the n bytes at p (page aligned) in memory? */
static int resident(const void *p, size_t n)
{
    unsigned char v[512];

    assert_true(n / 4096 <= sizeof(v));
    assert_int_equal(mincore((void *)p, n, v), 0);
    for (size_t i = 0; i < n / 4096; i++)
        if (!(v[i] & 1))
            return 0;
    return 1;
}

/* Is the page at p in memory? */
static int page_in(const void *p)
{
    unsigned char v[1] = { 0 };

    assert_int_equal(mincore((void *)p, 4096, v), 0);
    return v[0] & 1;
}

/* a's first MiB taken in heap blocks: its next blocks are huge ones */
static void heap_blocks_first(ck_arena_t *a)
{
    while (a->used < (1u << 20))
        assert_non_null(ck_arena_alloc(a, 8192));
}

/*
 * ck_arena_ahead: the arena's huge blocks come one after the other from
 * the range made ready, zero; the block after the one taken is faulted in
 * by the thread before anyone touches it; ended (n of 0), the blocks
 * never taken are given back and the next block is an ordinary one; a
 * failed allocation at a take fails the request.
 */
static void test_arena_ahead(void **state)
{
    size_t huge = 2u << 20;
    ck_arena_t a = { 0 };
    uint8_t *first, *p, *next = NULL;
    struct timespec nap = { 0, 10 * 1000 * 1000 };
    int ready = 0;

    (void)state;
    heap_blocks_first(&a);
    ck_arena_ahead(&a, 16u << 20);
    assert_non_null(a.ahead);
    first = ck_arena_alloc(&a, 8192);
    assert_non_null(first);
    for (size_t i = 0; i < 8192; i++)
        assert_int_equal(first[i], 0);
    /* the next block lies right after this one's: made ready while
     * nothing touches it */
    next = (uint8_t *)(((uintptr_t)first & ~(uintptr_t)(huge - 1)) + huge);
    for (int i = 0; i < 200 && !ready; i++) {
        ready = resident(next, huge);
        if (!ready)
            nanosleep(&nap, NULL);
    }
    assert_true(ready);
    /* take blocks until the next one is a new block: it is there */
    do {
        p = ck_arena_alloc(&a, 8192);
        assert_non_null(p);
    } while ((uintptr_t)p < (uintptr_t)next);
    assert_true(p >= next && p < next + huge);
    assert_int_equal(p[0], 0);
    ck_mem_fail_at(1); /* a take is an allocation */
    for (size_t i = 0; i < 300 && p != NULL; i++)
        p = ck_arena_alloc(&a, 8192);
    assert_null(p);
    ck_mem_fail_at(0);
    ck_arena_ahead(&a, 0);
    assert_null(a.ahead);
    /* the third block was never taken: no longer mapped */
    assert_int_equal(mincore(next + huge, 4096, (unsigned char[1]){ 0 }), -1);
    assert_int_equal(errno, ENOMEM);
    p = ck_arena_alloc(&a, 64 * 1024 / 4);
    assert_non_null(p);
    ck_arena_release(&a);
    assert_null(a.ahead);
    assert_int_equal(a.used, 0);
}

/*
 * A block taken while the thread faults it in: the taker waits for the
 * end, and nothing the thread writes lands in what it was given.  The
 * taker here races the thread (a memset of each request, eight rounds of
 * 15 blocks), so it takes blocks being faulted in again and again: a
 * build without the wait fails at once.
 */
static void test_arena_ahead_take_filling(void **state)
{
    (void)state;
    for (int round = 0; round < 8; round++) {
        ck_arena_t a = { 0 };
        uint8_t *p[4096];
        size_t n = 0;

        heap_blocks_first(&a);
        ck_arena_ahead(&a, 32u << 20);
        assert_non_null(a.ahead);
        for (n = 0; n < CK_ARRAY_SIZE(p) - 512; n++) {
            assert_non_null(p[n] = ck_arena_alloc(&a, 8192));
            for (size_t i = 0; i < 8192; i += 512)
                assert_int_equal(p[n][i], 0);
            memset(p[n], 0xab, 8192);
        }
        ck_arena_ahead(&a, 0);
        for (size_t k = 0; k < n; k++)
            for (size_t i = 0; i < 8192; i++)
                if (p[k][i] != 0xab)
                    fail_msg("request %zu byte %zu: %#x", k, i, p[k][i]);
        ck_arena_release(&a);
    }
}

/*
 * ck_arena_ahead_progress: told after each take that the work is done (so
 * nothing more is to come), the thread makes ready at most a block past
 * the last taken -- not the four it runs ahead otherwise --, and the blocks
 * taken are all there, zero.
 */
static void test_arena_ahead_progress(void **state)
{
    size_t huge = 2u << 20;
    ck_arena_t a = { 0 };
    uint8_t *first, *base, *p;
    struct timespec nap = { 0, 100 * 1000 * 1000 };
    int ready = 0;

    (void)state;
    heap_blocks_first(&a);
    ck_arena_ahead(&a, 64u << 20);
    assert_non_null(a.ahead);
    ck_arena_ahead_progress(&a, 1, 1); /* nothing left: none past one */
    first = ck_arena_alloc(&a, 8192);
    assert_non_null(first);
    base = (uint8_t *)((uintptr_t)first & ~(uintptr_t)(huge - 1));
    do { /* blocks 0 to 7 taken */
        p = ck_arena_alloc(&a, 8192);
        assert_non_null(p);
        assert_int_equal(p[0], 0);
        ck_arena_ahead_progress(&a, 1, 1);
    } while (p < base + 7 * huge);
    nanosleep(&nap, NULL);
    /* four ahead would have made blocks 8 to 11 ready: 9 and on are not */
    for (size_t b = 9; b < 12; b++)
        assert_false(page_in(base + b * huge));
    /* less than an eighth of the work done: too early to tell, nothing
     * changes */
    ck_arena_ahead_progress(&a, 1, 9);
    nanosleep(&nap, NULL);
    for (size_t b = 9; b < 12; b++)
        assert_false(page_in(base + b * huge));
    /* half of the work done: the rate says as many blocks again, and the
     * thread runs four ahead (up to block 11) */
    ck_arena_ahead_progress(&a, 1, 2);
    for (int i = 0; i < 100 && !(ready = page_in(base + 11 * huge)); i++)
        nanosleep(&nap, NULL);
    assert_true(ready);
    assert_false(page_in(base + 12 * huge));
    ck_arena_ahead(&a, 0);
    assert_null(a.ahead);
    ck_arena_release(&a);
}

/*
 * ck_sort_by_key orders by the leading uint64_t as a stable sort does:
 * keys that differ in one byte only (low, middle, high), keys all equal
 * (every pass skipped), repeated keys (their items keep their order), an
 * item of three words moved whole; n of 0 and 1 leave the items alone.
 */
static void test_sort_by_key(void **state)
{
    typedef struct {
        uint64_t key, idx, check;
    } item_t;
    static const uint64_t shapes[] = { 0xff, 0xff0000, 0xff00000000000000u,
                                       0xffffffffffffffffu, 0 };
    enum { N = 3000 };
    item_t *a = ck_malloc(N * sizeof(*a)), one = { 7, 1, 2 };
    uint64_t seed = 42;

    (void)state;
    assert_non_null(a);
    assert_int_equal(ck_sort_by_key(a, 0, sizeof(*a)), 0);
    assert_int_equal(ck_sort_by_key(&one, 1, sizeof(one)), 0);
    assert_true(one.key == 7 && one.idx == 1 && one.check == 2);
    for (size_t s = 0; s < CK_ARRAY_SIZE(shapes); s++) {
        for (size_t i = 0; i < N; i++) {
            seed = seed * 6364136223846793005u + 1442695040888963407u;
            /* few distinct values: many equal keys */
            a[i].key = (seed >> 33) % 97 * 0x0101010101010101u & shapes[s];
            a[i].idx = i;
            a[i].check = a[i].key ^ i;
        }
        assert_int_equal(ck_sort_by_key(a, N, sizeof(*a)), 0);
        for (size_t i = 0; i < N; i++) {
            assert_int_equal(a[i].check, a[i].key ^ a[i].idx);
            if (i > 0) {
                assert_true(a[i - 1].key <= a[i].key);
                if (a[i - 1].key == a[i].key)
                    assert_true(a[i - 1].idx < a[i].idx);
            }
        }
    }
    ck_free(a);
}

/*
 * Under 1 MiB a ck_map_grow array is heap memory, no mapping of its own
 * (the daemon's tiny checkpoints unmapped a touched memo page per job, a
 * TLB flush on every CPU); from 1 MiB on it is one.  What it held stays
 * across each step, the rest reads zero.
 */
static void test_map_grow_small_heap(void **state)
{
    size_t steps[] = { 64, 4096, 200u << 10, (1u << 20) - 8, 1u << 20,
                       3u << 20 };
    uint8_t *m = NULL;
    size_t old = 0;

    (void)state;
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        uint8_t *q = ck_map_grow(m, old, steps[i]);

        assert_non_null(q);
        for (size_t k = 0; k < old; k++)
            assert_int_equal(q[k], (uint8_t)(k * 7 + 1));
        for (size_t k = old; k < steps[i]; k++) {
            assert_int_equal(q[k], 0);
            q[k] = (uint8_t)(k * 7 + 1);
        }
        assert_int_equal(map_start(q), steps[i] >= (1u << 20));
        m = q;
        old = steps[i];
    }
    assert_null(ck_map_grow(m, old, 64));   /* no shrinking */
    ck_map_free(m, old);
    m = ck_map_grow(NULL, 0, 100);
    assert_non_null(m);
    ck_map_free(m, 100);
}

/* ck_fmt_u64 writes what printf's %llu writes, at every length. */
static void test_fmt_u64(void **state)
{
    char got[24], want[24];
    uint64_t v = 1;

    (void)state;
    assert_int_equal(ck_fmt_u64(got, 0), 1);
    assert_string_equal(got, "0");
    for (int i = 0; i < 64; i++, v = v * 3 + 7) {
        uint64_t x[3] = { v, v - 1, UINT64_MAX - v };

        for (int j = 0; j < 3; j++) {
            int n = snprintf(want, sizeof(want), "%llu",
                             (unsigned long long)x[j]);

            assert_int_equal(ck_fmt_u64(got, x[j]), n);
            assert_string_equal(got, want);
        }
    }
    assert_int_equal(ck_fmt_u64(got, UINT64_MAX), 20);
    assert_string_equal(got, "18446744073709551615");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_error_names, teardown),
        cmocka_unit_test_teardown(test_err_replace_clear, teardown),
        cmocka_unit_test_teardown(test_mem_fail_at, teardown),
        cmocka_unit_test_teardown(test_buf, teardown),
        cmocka_unit_test_teardown(test_buf_drain, teardown),
        cmocka_unit_test_teardown(test_arena, teardown),
        cmocka_unit_test_teardown(test_arena_grow, teardown),
        cmocka_unit_test_teardown(test_arena_huge, teardown),
        cmocka_unit_test_teardown(test_map_grow, teardown),
        cmocka_unit_test_teardown(test_map_grow_unaligned, teardown),
        cmocka_unit_test_teardown(test_map_grow_small_heap, teardown),
        cmocka_unit_test_teardown(test_big_arrays_huge, teardown),
        cmocka_unit_test_teardown(test_arena_ahead, teardown),
        cmocka_unit_test_teardown(test_arena_ahead_take_filling, teardown),
        cmocka_unit_test_teardown(test_arena_ahead_progress, teardown),
        cmocka_unit_test_teardown(test_map_len_bounded, teardown),
        cmocka_unit_test(test_sort_by_key),
        cmocka_unit_test_teardown(test_strmap, teardown),
        cmocka_unit_test_teardown(test_utf8_len, teardown),
        cmocka_unit_test_teardown(test_utf8_valid_and_hash, teardown),
        cmocka_unit_test_teardown(test_esc_step, teardown),
        cmocka_unit_test_teardown(test_fmt_u64, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
