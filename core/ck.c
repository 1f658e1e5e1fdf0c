/*
 * ck.c -- error strings, allocation hooks, byte buffers and the job arena.
 *
 * The allocation counter is process-wide and not thread-safe by design: it
 * exists for single-threaded fault-injection tests, and costs one increment
 * otherwise.
 */
#define _GNU_SOURCE
#include "ck.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Counted atomically: the daemon allocates from several threads. */
static unsigned long mem_count;
static unsigned long mem_fail_at;

void ck_mem_fail_at(unsigned long n)
{
    __atomic_store_n(&mem_fail_at, n, __ATOMIC_RELAXED);
    __atomic_store_n(&mem_count, 0, __ATOMIC_RELAXED);
}

unsigned long ck_mem_count(void)
{
    return __atomic_load_n(&mem_count, __ATOMIC_RELAXED);
}

static int mem_should_fail(void)
{
    unsigned long n = __atomic_add_fetch(&mem_count, 1, __ATOMIC_RELAXED);
    unsigned long at = __atomic_load_n(&mem_fail_at, __ATOMIC_RELAXED);

    return at != 0 && n >= at;
}

#define HUGE_PAGE (2u << 20)
#define HUGE_MIN (4u << 20)

/*
 * A big allocation (a memo, a directory's entries, an array of 10^5
 * tensors) asks for transparent huge pages over the 2 MiB pages it spans
 * whole: a page fault of 4 KiB each was a third of a run over 10^5
 * tensors, in the kernel's fault path.  A hint: where huge pages are
 * off, or the range is not ours to advise, nothing changes.
 */
static void *huge_hint(void *p, size_t n)
{
    uintptr_t a, b;

    if (p == NULL || n < HUGE_MIN)
        return p;
    a = ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    b = ((uintptr_t)p + n) & ~(uintptr_t)(HUGE_PAGE - 1);
    if (b > a)
        (void)madvise((void *)a, b - a, MADV_HUGEPAGE);
    return p;
}

/*
 * An array of MAP_MIN (1 MiB) and more is a mapping of its own: whole
 * huge pages (2 MiB) -- at most twice the bytes asked for, as a vector's
 * doubling may leave --, beginning on one, all advised huge
 * (MADV_HUGEPAGE).  A page fault costs the same for 4 KiB as for 2 MiB --
 * 11 us on the virtual machines we measure on, 2.8 ms a MiB of 4 KiB
 * pages against 0.06 to 1.2 of huge ones --, and a graph's big arrays are
 * tens of MiB.  Rounding arrays from 256 KiB up to 2 MiB let a pickle of
 * lists of 33,000 Nones (264 KiB of items each) take 2 MiB a list, 8
 * times its items.  The advice is for all of the mapping: advice on a
 * part splits it in kernel areas of their own, and mremap refuses
 * (EFAULT) a range of more than one -- the memo's next growth failed as
 * out of memory whenever the mapping had moved to an address not 2 MiB
 * aligned (1 run in 7 on a checkpoint of 10^5 storages).  Grown where it
 * is when the room after it is free, else moved by mremap into a new
 * aligned range: pages move, bytes are not copied.  Where huge pages are
 * off the same calls give 4 KiB pages.
 *
 * Below MAP_MIN the array is heap memory, which a process running job
 * after job (the daemon) takes again without a page fault or a system
 * call: as mappings of 4 KiB pages, the windows and buffers of 256 KiB
 * of a 533 KiB checkpoint made the daemon's jobs 40% slower (769 -> 471
 * files/s), and unmapping a page once touched makes every CPU running
 * the process flush its TLB.  The size decides which, here and in
 * ck_map_free.
 */
#define MAP_MIN (1u << 20)

static size_t huge_round(size_t n)
{
    return (n + HUGE_PAGE - 1) & ~(size_t)(HUGE_PAGE - 1);
}

size_t ck_map_len(size_t n)
{
    return n < MAP_MIN ? n : huge_round(n);
}

/* n bytes (whole huge pages) of zero mapped at a huge page's start, huge
 * pages asked for; NULL when out of memory.  Kernels since 6.7 place a
 * mapping of whole huge pages so; older ones get a larger one trimmed. */
static void *map_huge(size_t n)
{
    uint8_t *p, *q;
    size_t head;

    p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
             -1, 0);
    if (p != MAP_FAILED && ((uintptr_t)p & (HUGE_PAGE - 1)) != 0) {
        munmap(p, n);
        p = MAP_FAILED;
    }
    if (p == MAP_FAILED) {
        p = mmap(NULL, n + HUGE_PAGE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return NULL;
        q = (uint8_t *)(((uintptr_t)p + HUGE_PAGE - 1) &
                        ~(uintptr_t)(HUGE_PAGE - 1));
        head = (size_t)(q - p);
        if (head > 0)
            munmap(p, head);
        munmap(q + n, HUGE_PAGE - head);
        p = q;
    }
    (void)madvise(p, n, MADV_HUGEPAGE); /* a hint */
    return p;
}

/* Mapping p of old bytes made n (both whole huge pages): the mapping, or
 * NULL when out of memory (p stays). */
static void *map_move(void *p, size_t old, size_t n)
{
    void *q = mremap(p, old, n, 0);

    if (q != MAP_FAILED)
        return q;
    if ((q = map_huge(n)) == NULL)
        return NULL;
    /* p's pages into the new range, which they replace, and p unmapped */
    if (mremap(p, old, n, MREMAP_MAYMOVE | MREMAP_FIXED, q) == MAP_FAILED) {
        munmap(q, n);
        return NULL;
    }
    return q;
}

static void *map_heap_grow(void *p, size_t old, size_t n)
{
    uint8_t *q;

    if (n >= MAP_MIN) {     /* the heap array moves to a mapping */
        if (huge_round(n) < n || (q = map_huge(huge_round(n))) == NULL)
            return NULL;
        if (old > 0)
            memcpy(q, p, old);
        free(p);
        return q;
    }
    if ((q = realloc(p, n)) != NULL && n > old)
        memset(q + old, 0, n - old);
    return q;
}

void *ck_map_grow(void *p, size_t old, size_t n)
{
    void *q;

    if (mem_should_fail() || n == 0 || huge_round(n) < n || n < old)
        return NULL;
    if (old < MAP_MIN)
        return map_heap_grow(p, old, n);
    if (huge_round(n) == huge_round(old))
        return p; /* the room is there, zero */
    if ((q = map_move(p, huge_round(old), huge_round(n))) != NULL)
        (void)madvise(q, huge_round(n), MADV_HUGEPAGE); /* and its new room */
    return q;
}

void ck_map_free(void *p, size_t n)
{
    if (p != NULL && n < MAP_MIN)
        free(p);
    else if (p != NULL)
        munmap(p, huge_round(n));
}

void *ck_malloc(size_t n)
{
    if (mem_should_fail())
        return NULL;
    return huge_hint(malloc(n ? n : 1), n);
}

void *ck_calloc(size_t n, size_t size)
{
    if (mem_should_fail() || (size != 0 && n > SIZE_MAX / size))
        return NULL;
    return huge_hint(calloc(n ? n : 1, size ? size : 1), n * size);
}

void *ck_realloc(void *p, size_t n)
{
    if (mem_should_fail())
        return NULL;
    return huge_hint(realloc(p, n ? n : 1), n);
}

void ck_free(void *p)
{
    free(p);
}

char *ck_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = ck_malloc(n);

    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

size_t ck_fmt_u64(char *out, uint64_t v)
{
    char digits[20];
    size_t k = 0, n = 0;

    do
        digits[k++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (k > 0)
        out[n++] = digits[--k];
    out[n] = '\0';
    return n;
}

static const struct {
    int code;
    const char *name;
    const char *text;
} errors[] = {
    { CK_EFORMAT, "format", "not a well-formed checkpoint" },
    { CK_ELIMIT, "limit", "exceeds a configured limit" },
    { CK_EUNSAFE, "unsafe", "names a global that is not allowed" },
    { CK_EUNSUPPORTED, "unsupported", "uses a feature ckprep does not handle" },
    { CK_ECONFIG, "config", "configuration error" },
    { CK_EPLUGIN, "plugin", "a plugin refused the job" },
    { CK_ENOMEM, "nomem", "out of memory" },
    { CK_EUSAGE, "usage", "usage error" },
    { CK_ECANCELED, "cancelled", "job abandoned" },
    { CK_ECHANGED, "changed", "input changed" },
};

const char *ck_strerror(int code)
{
    for (size_t i = 0; i < CK_ARRAY_SIZE(errors); i++)
        if (errors[i].code == code)
            return errors[i].text;
    if (code < 0 && code > -4096)
        return strerror(-code);
    return "unknown error";
}

const char *ck_errname(int code)
{
    for (size_t i = 0; i < CK_ARRAY_SIZE(errors); i++)
        if (errors[i].code == code)
            return errors[i].name;
    return "io";
}

int ck_err_vset(ck_err_t *err, int code, const char *fmt, va_list ap)
{
    if (err == NULL || err->code != 0)
        return code;
    err->code = code;
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    return code;
}

int ck_err_set(ck_err_t *err, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    ck_err_vset(err, code, fmt, ap);
    va_end(ap);
    return code;
}

int ck_err_replace(ck_err_t *err, int code, const char *fmt, ...)
{
    char msg[sizeof(err->msg)];
    va_list ap;

    if (err == NULL)
        return code;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    err->code = code;
    memcpy(err->msg, msg, sizeof(msg));
    return code;
}

void ck_err_clear(ck_err_t *err)
{
    if (err == NULL)
        return;
    err->code = 0;
    err->msg[0] = '\0';
}

int ck_buf_drain(ck_buf_t *b)
{
    int rc;

    if (b->drain == NULL || b->len == 0 || b->oom)
        return b->oom ? (b->drain_rc ? b->drain_rc : CK_ENOMEM) : 0;
    rc = b->drain(b->drain_ud, b->data, b->len);
    if (rc < 0) {
        b->oom = 1;
        b->drain_rc = rc;
        return rc;
    }
    b->drained += b->len;
    b->len = 0;
    return 0;
}

int ck_buf_reserve(ck_buf_t *b, size_t extra)
{
    size_t need, cap;
    uint8_t *p;

    if (b->oom)
        return CK_ENOMEM;
    if (b->drain != NULL && b->len > 0 && b->len + extra > CK_BUF_DRAIN_AT &&
        ck_buf_drain(b) < 0)
        return CK_ENOMEM;
    if (__builtin_add_overflow(b->len, extra, &need))
        goto oom;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (__builtin_mul_overflow(cap, 2, &cap))
            goto oom;
    }
    p = ck_map_grow(b->data, b->cap, cap);
    if (p == NULL)
        goto oom;
    b->data = p;
    b->cap = cap;
    return 0;
oom:
    b->oom = 1;
    return CK_ENOMEM;
}

int ck_buf_put_slow(ck_buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return b->oom ? CK_ENOMEM : 0;
    if (ck_buf_reserve(b, n) < 0)
        return CK_ENOMEM;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int ck_buf_printf(ck_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || ck_buf_reserve(b, (size_t)n + 1) < 0)
        return CK_ENOMEM;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void ck_buf_release(ck_buf_t *b)
{
    ck_map_free(b->data, b->cap);
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}

/*
 * Arena blocks: a header followed by payload.  Requests larger than a
 * quarter block get a block of their own, so waste stays bounded.  A block
 * is zeroed once, by calloc, which leaves fresh pages from the kernel
 * alone: room a big vector reserved and never filled is never touched.
 */
struct ck_arena_block {
    ck_arena_block_t *next;
    size_t size, used;
    max_align_t data[];
};

/* A block's ck_map_grow size: heap memory below MAP_MIN, a mapping from
 * there (block_new and ck_arena_grow keep it so). */
static size_t block_bytes(const ck_arena_block_t *b)
{
    return sizeof(*b) + b->size;
}

#define ARENA_BLOCK (64 * 1024)

/*
 * Once an arena holds a big graph, its blocks are one transparent huge
 * page each (2 MiB, aligned, MADV_HUGEPAGE): a graph of 10^5 tensors
 * touches 200 MiB, 50,000 faults of 4 KiB pages that were a third of a
 * run -- the kernel's fault path, not the zeroing --, and 100 of huge
 * ones.  A request of MAP_MIN or more (the items of a dict of 10^5 keys)
 * gets a mapping of huge pages of its own too.  A small job (the daemon's
 * thousands of tiny files) never gets there.  Where huge pages are off,
 * the block is an ordinary mapping.
 */
/* Under LeakSanitizer, which scans the heap and not mappings, a mapped
 * block is a root: the heap blocks chained after it are reached through
 * it. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define LSAN_ROOT(p, n) __lsan_register_root_region(p, n)
#define LSAN_UNROOT(p, n) __lsan_unregister_root_region(p, n)
#else
#define LSAN_ROOT(p, n) ((void)0)
#define LSAN_UNROOT(p, n) ((void)0)
#endif

#define ARENA_HUGE HUGE_PAGE
#define ARENA_HUGE_AFTER (1u << 20) /* bytes an arena holds first */

/*
 * Huge blocks made ready ahead (ck_arena_ahead): one mapping, its blocks
 * taken from its start in order; its thread faults them in at most
 * AHEAD_BLOCKS past the last one taken and not past the limit
 * ck_arena_ahead_progress sets, then waits for a take or a new limit.  A
 * block taken is its arena's like any other, freed with it -- after the
 * thread has ended, so it never touches a range no longer the arena's.
 * A fresh huge page costs its first toucher 0.06 ms a MiB when its
 * memory was freed a moment before, 1.2 to 1.7 where a virtual machine's
 * host had taken it back (free page reporting): a third of a cold run
 * over 10^5 tensors, in the reading thread.
 *
 * The thread writes a zero to each page of a block nobody has taken (the
 * kernel gives it zero: it stays so), and a taker of that block waits for
 * the end of it (ahead_take).  Not MADV_POPULATE_WRITE, which holds the
 * process's mmap lock through a block's zeroing (4 ms on a cold host):
 * every mmap, munmap, brk and madvise of the reading thread -- 40 in a
 * parse of 10^5 tensors -- waited behind it.  A page fault takes only its
 * mapping's lock where the kernel has per-mapping locks (Linux 6.4 on;
 * before, the mmap lock as MADV_POPULATE_WRITE did, for a page: the
 * stall stays a block's at most), and a call of the reading thread that
 * changes this mapping still waits for the fault under way.  On 6.18
 * the reading thread's time off CPU during a cold parse went from 73 to
 * 33 ms, the parse from 336 to 274 (6 runs each).
 */
#define AHEAD_BLOCKS 4
#define AHEAD_PAGE 4096 /* the smallest page: each of any size is met */

struct ck_arena_ahead {
    uint8_t *base;
    size_t len;         /* whole huge blocks */
    size_t taken;       /* bytes of them taken (under mu) */
    size_t limit;       /* none begun from here (under mu): the end
                           ck_arena_ahead_progress foresees */
    size_t filling;     /* 1 + the offset of the block being faulted in,
                           0 when none (under mu) */
    int stop;           /* (under mu) */
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* the thread waits: a take, progress, stop */
    pthread_cond_t filled;  /* a taker waits: the block it takes is done */
    pthread_t t;
};

static void *ahead_run(void *arg)
{
    ck_arena_ahead_t *h = arg;

    for (size_t at = 0; at < h->len; at += ARENA_HUGE) {
        volatile uint8_t *b = h->base + at;

        pthread_mutex_lock(&h->mu);
        while (!h->stop && (at >= h->taken + AHEAD_BLOCKS * (size_t)ARENA_HUGE ||
                            at >= h->limit))
            pthread_cond_wait(&h->cv, &h->mu);
        if (h->stop) {
            pthread_mutex_unlock(&h->mu);
            break;
        }
        if (at < h->taken) { /* its taker touches it anyway */
            pthread_mutex_unlock(&h->mu);
            continue;
        }
        h->filling = at + 1;
        pthread_mutex_unlock(&h->mu);
        for (size_t o = 0; o < ARENA_HUGE; o += AHEAD_PAGE)
            b[o] = 0;
        pthread_mutex_lock(&h->mu);
        h->filling = 0;
        pthread_cond_broadcast(&h->filled);
        pthread_mutex_unlock(&h->mu);
    }
    return NULL;
}

/* The thread ended, and the blocks never taken given back. */
static void ahead_end(ck_arena_ahead_t *h)
{
    pthread_mutex_lock(&h->mu);
    h->stop = 1;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->t, NULL);
    if (h->taken < h->len)
        munmap(h->base + h->taken, h->len - h->taken);
    pthread_cond_destroy(&h->filled);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

void ck_arena_ahead(ck_arena_t *a, size_t n)
{
    size_t len = huge_round(n);
    ck_arena_ahead_t *h;

    if (n == 0 && a->ahead != NULL) {
        ahead_end(a->ahead);
        a->ahead = NULL;
    }
    /* a hint, its memory not counted (ck_mem_fail_at): nothing fails */
    if (a->ahead != NULL || len < n || len == 0 ||
        (h = calloc(1, sizeof(*h))) == NULL)
        return;
    if ((h->base = map_huge(len)) == NULL) {
        free(h);
        return;
    }
    h->len = h->limit = len;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    pthread_cond_init(&h->filled, NULL);
    if (pthread_create(&h->t, NULL, ahead_run, h) != 0) {
        munmap(h->base, len);
        pthread_cond_destroy(&h->filled);
        pthread_cond_destroy(&h->cv);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return;
    }
    a->ahead = h;
}

/*
 * Blocks the thread ran ahead to make ready past the last one taken were
 * up to four of 2 MiB, 8 MiB that a cold run's host backed for nothing
 * (many-100000: 76 MiB made ready, 68 taken).  The blocks taken so far,
 * times total / done, foresee the end; a block of margin.  Before an
 * eighth of the work the rate says little: nothing changes.
 */
void ck_arena_ahead_progress(ck_arena_t *a, uint64_t done, uint64_t total)
{
    ck_arena_ahead_t *h = a->ahead;
    size_t limit;
    double want;

    if (h == NULL || done == 0 || done > total ||
        (double)done * 8 < (double)total)
        return;
    pthread_mutex_lock(&h->mu);
    want = (double)h->taken * ((double)total / (double)done);
    /* (len is whole blocks, one at least) */
    limit = want <= (double)(h->len - ARENA_HUGE)
                ? huge_round((size_t)want) + ARENA_HUGE
                : h->len;
    if (limit > h->limit)
        pthread_cond_signal(&h->cv);
    h->limit = limit;
    pthread_mutex_unlock(&h->mu);
}

/* The next huge block made ready, or NULL when none is left. */
static ck_arena_block_t *ahead_take(ck_arena_ahead_t *h)
{
    ck_arena_block_t *b = NULL;

    pthread_mutex_lock(&h->mu);
    if (h->taken < h->len) {
        while (h->filling == h->taken + 1) /* being faulted in */
            pthread_cond_wait(&h->filled, &h->mu);
        b = (ck_arena_block_t *)(h->base + h->taken);
        h->taken += ARENA_HUGE;
        pthread_cond_signal(&h->cv);
    }
    pthread_mutex_unlock(&h->mu);
    return b;
}

/* A zero block of room for size bytes (heap memory below MAP_MIN in all,
 * a mapping from there, a huge one made ready ahead when a has them);
 * NULL when out of memory. */
static ck_arena_block_t *block_new(ck_arena_t *a, size_t size)
{
    size_t total = sizeof(ck_arena_block_t) + size;
    ck_arena_block_t *b;

    if (total < size)
        return NULL;
    if (total < MAP_MIN) {
        if ((b = ck_calloc(1, total)) != NULL)
            b->size = size;
        return b;
    }
    b = NULL;
    /* (taken changes on this thread only: read without the lock) */
    if (total == ARENA_HUGE && a->ahead != NULL &&
        a->ahead->taken < a->ahead->len) {
        if (mem_should_fail()) /* a take counts as an allocation */
            return NULL;
        b = ahead_take(a->ahead);
    }
    if (b == NULL && (b = ck_map_grow(NULL, 0, total)) == NULL)
        return NULL;
    b->size = size;
    LSAN_ROOT(b, total);
    return b;
}

static void block_free(ck_arena_block_t *b)
{
    if (block_bytes(b) >= MAP_MIN)
        LSAN_UNROOT(b, block_bytes(b));
    ck_map_free(b, block_bytes(b));
}

uintptr_t ck_arena_next(const ck_arena_t *a)
{
    const ck_arena_block_t *b = a->head;

    return b == NULL ? 0 : (uintptr_t)b->data + b->used;
}

int ck_arena_unalloc(ck_arena_t *a, void *p, size_t n)
{
    ck_arena_block_t *b = a->head;
    size_t want = (n + 7) & ~(size_t)7;

    if (b == NULL || want > b->used || want < n ||
        (char *)p != (char *)b->data + b->used - want)
        return 0;
    memset(p, 0, want);
    b->used -= want;
    a->used -= want;
    return 1;
}

void *ck_arena_alloc(ck_arena_t *a, size_t n)
{
    ck_arena_block_t *b = a->head;
    size_t want = (n + 7) & ~(size_t)7;
    void *p;

    if (want < n)
        return NULL;
    if (b == NULL || want > ARENA_BLOCK / 4 || b->size - b->used < want) {
        size_t size = want > ARENA_BLOCK / 4 ? want : ARENA_BLOCK;

        if (size > SIZE_MAX - sizeof(*b))
            return NULL;
        if (want <= ARENA_BLOCK / 4 && a->used >= ARENA_HUGE_AFTER)
            size = ARENA_HUGE - sizeof(*b);
        if ((b = block_new(a, size)) == NULL)
            return NULL;
        b->used = 0;
        if (want > ARENA_BLOCK / 4 && a->head != NULL) {
            /* keep the partly used head block current */
            b->next = a->head->next;
            a->head->next = b;
            a->big = b;
            a->big_link = &a->head->next;
        } else {
            b->next = a->head;
            a->head = b;
            if (want > ARENA_BLOCK / 4) {
                a->big = b;
                a->big_link = &a->head;
            } else if (a->big_link == &a->head) {
                a->big_link = &b->next;
            }
        }
    }
    p = (char *)b->data + b->used;
    b->used += want;
    a->used += want;
    return p;
}

void *ck_arena_grow(ck_arena_t *a, void *p, size_t old, size_t n)
{
    ck_arena_block_t *b = a->big, *nb;
    size_t want = (n + 7) & ~(size_t)7;
    void *q;

    /* b is the last block of one request's own: past a quarter block */
    if (p != NULL && b != NULL && p == (void *)b->data &&
        b->used == ((old + 7) & ~(size_t)7) && want > b->size &&
        want < SIZE_MAX - sizeof(*b)) {
        size_t total = sizeof(*b) + want, had = block_bytes(b);

        if (had >= MAP_MIN)
            LSAN_UNROOT(b, had);
        /* on the heap, realloc: room reserved and never filled is never
         * touched (ck_map_grow zeroes it) */
        nb = had >= MAP_MIN || total >= MAP_MIN ? ck_map_grow(b, had, total)
                                                : ck_realloc(b, total);
        if (nb == NULL) {
            if (had >= MAP_MIN)
                LSAN_ROOT(b, had);
            return NULL;
        }
        if (total >= MAP_MIN)
            LSAN_ROOT(nb, total);
        *a->big_link = nb;
        a->big = nb;
        a->used += want - nb->used;
        nb->size = nb->used = want;
        return nb->data;
    }
    q = ck_arena_alloc(a, n);
    if (q != NULL && old > 0)
        memcpy(q, p, old < n ? old : n);
    return q;
}

char *ck_arena_strndup(ck_arena_t *a, const char *s, size_t n)
{
    char *d = ck_arena_alloc(a, n + 1);

    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

char *ck_arena_strdup(ck_arena_t *a, const char *s)
{
    return ck_arena_strndup(a, s, strlen(s));
}

char *ck_arena_printf(ck_arena_t *a, const char *fmt, ...)
{
    va_list ap;
    int n;
    char *d;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    d = ck_arena_alloc(a, (size_t)n + 1);
    if (d == NULL)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(d, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return d;
}

void ck_arena_release(ck_arena_t *a)
{
    ck_arena_block_t *b = a->head, *next;

    if (a->ahead != NULL)
        ahead_end(a->ahead);
    a->ahead = NULL;
    for (; b != NULL; b = next) {
        next = b->next;
        block_free(b);
    }
    a->head = NULL;
    a->used = 0;
    a->big = NULL;
    a->big_link = NULL;
}

uint64_t ck_hash_fnv1a(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325u;

    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3u;
    return h;
}

int ck_sort_by_key(void *a, size_t n, size_t size)
{
    size_t (*count)[256];
    uint8_t *from = a, *to, *tmp;
    uint64_t k0;
    size_t bytes;

    if (n < 2)
        return 0;
    if (__builtin_mul_overflow(n, size, &bytes) ||
        (tmp = ck_map_grow(NULL, 0, bytes)) == NULL)
        return CK_ENOMEM;
    if ((count = ck_calloc(8, sizeof(*count))) == NULL) {
        ck_map_free(tmp, bytes);
        return CK_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t k;

        memcpy(&k, from + i * size, 8);
        for (int d = 0; d < 8; d++)
            count[d][(k >> (8 * d)) & 0xff]++;
    }
    memcpy(&k0, from, 8);
    to = tmp;
    for (int d = 0; d < 8; d++) {
        size_t at = 0;
        uint8_t *t;

        if (count[d][(k0 >> (8 * d)) & 0xff] == n)
            continue; /* every key has this byte */
        for (int b = 0; b < 256; b++) {
            size_t c = count[d][b];

            count[d][b] = at;
            at += c;
        }
        for (size_t i = 0; i < n; i++) {
            uint64_t k;

            memcpy(&k, from + i * size, 8);
            memcpy(to + count[d][(k >> (8 * d)) & 0xff]++ * size,
                   from + i * size, size);
        }
        t = from, from = to, to = t;
    }
    if (from != a)
        memcpy(a, from, n * size);
    ck_map_free(tmp, bytes);
    ck_free(count);
    return 0;
}

/* ---- string map ------------------------------------------------------- */

/* The map's hash: eight bytes a step (FNV-1a's byte steps were a tenth of
 * the time of a run over 10^5 tensors), mixed down at the end.  Not
 * ck_hash_fnv1a, whose values seed things and must not change. */
uint64_t ck_hash_str(const void *p, size_t n)
{
    const char *key = p;
    size_t i = 0;
    uint64_t h = 0x9e3779b97f4a7c15u ^ n, w;

    for (; n - i >= 8; i += 8) {
        memcpy(&w, key + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdu;
        h ^= h >> 32;
    }
    w = 0;
    memcpy(&w, key + i, n - i);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53u;
    return h ^ (h >> 29);
}

static uint64_t strmap_hash(const char *key)
{
    return ck_hash_str(key, strlen(key));
}

/* The slot holding key (of hash h), or the empty slot where it would go. */
static size_t strmap_slot(const ck_strmap_t *m, const char *key, uint64_t h)
{
    size_t i, mask = m->cap - 1;

    for (i = (size_t)h & mask; m->slot[i].key != NULL; i = (i + 1) & mask)
        if (m->slot[i].hash == h && strcmp(m->slot[i].key, key) == 0)
            break;
    return i;
}

size_t ck_strmap_get(const ck_strmap_t *m, const char *key)
{
    size_t i;

    if (m->cap == 0)
        return SIZE_MAX;
    i = strmap_slot(m, key, strmap_hash(key));
    return m->slot[i].key != NULL ? m->slot[i].val : SIZE_MAX;
}

static int strmap_grow(ck_strmap_t *m, ck_arena_t *a, size_t cap)
{
    ck_strmap_t g = { .cap = cap, .n = m->n };

    if (cap > SIZE_MAX / 32 ||
        (g.slot = ck_arena_alloc(a, cap * sizeof(*g.slot))) == NULL)
        return CK_ENOMEM;
    for (size_t j = 0; j < m->cap; j++)
        if (m->slot[j].key != NULL)
            g.slot[strmap_slot(&g, m->slot[j].key, m->slot[j].hash)] =
                m->slot[j];
    *m = g;
    return 0;
}

int ck_strmap_reserve(ck_strmap_t *m, ck_arena_t *a, size_t n)
{
    size_t cap = m->cap ? m->cap : 64;

    if (n > SIZE_MAX / 4 - m->n)
        return CK_ENOMEM;
    while (2 * (m->n + n) > cap)
        cap *= 2;
    return cap > m->cap ? strmap_grow(m, a, cap) : 0;
}

int ck_strmap_put(ck_strmap_t *m, ck_arena_t *a, const char *key, size_t val,
                  size_t *old)
{
    uint64_t h = strmap_hash(key);
    size_t i;

    if (2 * (m->n + 1) > m->cap &&
        strmap_grow(m, a, m->cap ? m->cap * 2 : 64) < 0)
        return CK_ENOMEM;
    i = strmap_slot(m, key, h);
    if (m->slot[i].key != NULL) {
        if (old != NULL)
            *old = m->slot[i].val;
        return 1;
    }
    m->slot[i] = (ck_strmap_slot_t){ .key = key, .hash = h, .val = val };
    m->n++;
    return 0;
}

int ck_strmap_add(ck_strmap_t *m, ck_arena_t *a, const char *key, size_t val)
{
    int rc = ck_strmap_put(m, a, key, val, NULL);

    return rc < 0 ? rc : 0;
}

int ck_utf8_len(const uint8_t *s, size_t n, int surrogates)
{
    unsigned c = n ? s[0] : 0x80;
    uint32_t cp;
    int k;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c < 0xe0)
        k = 1;
    else if (c >= 0xe0 && c < 0xf0)
        k = 2;
    else if (c >= 0xf0 && c < 0xf5)
        k = 3;
    else
        return 0;
    if ((size_t)k >= n)
        return 0;
    cp = c & (0x3fu >> k);
    for (int i = 1; i <= k; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (!surrogates && cp >= 0xd800 && cp < 0xe000))
        return 0;
    return k + 1;
}

/* ASCII without a call a byte: the daemon's start checks the input path of
 * each of a million records (a tenth of its reading of the log). */
int ck_utf8_valid(const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;

    for (size_t k = 0, len; k < n; k += len) {
        if (u[k] < 0x80)
            len = 1;
        else if ((len = (size_t)ck_utf8_len(u + k, n - k, 0)) == 0)
            return 0;
    }
    return 1;
}

/* Code points shown as \u{XXXX}: they are valid text that changes how the
 * text around them renders. */
static int disguises(uint32_t cp)
{
    return (cp >= 0x80 && cp <= 0x9f) || cp == 0x61c ||
           (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) ||
           (cp >= 0x2060 && cp <= 0x2069) || cp == 0xfeff ||
           (cp >= 0xfff9 && cp <= 0xfffb);
}

size_t ck_esc_step(const uint8_t *s, size_t n, char out[12])
{
    int k = ck_utf8_len(s, n, 0);
    uint32_t cp;

    if (k <= 0 || s[0] < 0x20 || s[0] == 0x7f) {
        snprintf(out, 12, "\\x%02x", s[0]);
        return 1;
    }
    cp = k == 1 ? s[0] : (uint32_t)(s[0] & (0x7f >> k));
    for (int i = 1; i < k; i++)
        cp = cp << 6 | (s[i] & 0x3f);
    if (disguises(cp)) {
        snprintf(out, 12, "\\u{%04x}", (unsigned)cp);
        return (size_t)k;
    }
    memcpy(out, s, (size_t)k);
    out[k] = '\0';
    return (size_t)k;
}

void ck_esc_fputs(const char *s, FILE *f)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t n = strlen(s);
    char e[12];

    for (size_t i = 0; i < n;) {
        i += ck_esc_step(u + i, n - i, e);
        fputs(e, f);
    }
}
