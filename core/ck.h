/*
 * ck.h -- what every part of ckprep shares: error codes, the error record
 * that carries a one-line message out of a job, allocation hooks, a growable
 * byte buffer and a job arena.
 *
 * Conventions (libuv's): functions return 0 on success or a negative code,
 * either -errno or one of CK_E* below.  The detail goes into a ck_err_t the
 * caller passes down; the first error set wins, so the innermost cause is the
 * one reported.
 */
#ifndef CK_H
#define CK_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define CK_VERSION "0.1.0"

enum {
    CK_EFORMAT = -1000, /* input is not a well-formed checkpoint */
    CK_ELIMIT,          /* input exceeds a configured limit */
    CK_EUNSAFE,         /* input names a global that is not allowed */
    CK_EUNSUPPORTED,    /* well-formed, but a feature we do not handle */
    CK_ECONFIG,         /* configuration error */
    CK_EPLUGIN,         /* a plugin refused the job */
    CK_ENOMEM,          /* allocation failed */
    CK_EUSAGE,          /* command line misuse */
    CK_ECANCELED,       /* the job was abandoned (daemon stopping) */
    CK_ECHANGED,        /* the input is not the file the job was given */
};

const char *ck_strerror(int code);
/* Short stable name of a code ("format", "unsafe", "io", ...) for records. */
const char *ck_errname(int code);

typedef struct {
    int code;
    char msg[1024];
} ck_err_t;

/* Record an error unless one is already recorded; returns code. */
int ck_err_set(ck_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int ck_err_vset(ck_err_t *err, int code, const char *fmt, va_list ap);

/*
 * Record an error whatever is recorded already: for a caller that knows
 * better than the callee what went wrong (a truncated pickle inside a file
 * that is all there is, a limit that caused the truncation).  The arguments
 * may quote err->msg itself: the message is formatted before it is stored.
 * Returns code.  A NULL err is ignored.
 */
int ck_err_replace(ck_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Forget the recorded error, so the next ck_err_set records again (a caller
 * retrying after -EAGAIN).  A NULL err is ignored. */
void ck_err_clear(ck_err_t *err);

/*
 * Allocation hooks.  Every allocation in ckprep goes through these so a test
 * can make the Nth one fail (ck_mem_fail_at).  ck_free(NULL) is a no-op.
 */
void *ck_malloc(size_t n);
void *ck_calloc(size_t n, size_t size);
void *ck_realloc(void *p, size_t n);
void ck_free(void *p);
char *ck_strdup(const char *s);
/* v in decimal at out (room for 21 bytes), NUL-terminated: its length.
 * (printf's machinery costs a microsecond a call: 10^5 record names.) */
size_t ck_fmt_u64(char *out, uint64_t v);
/* Fail allocation number n (1-based) and every one after; 0 disables. */
void ck_mem_fail_at(unsigned long n);
/*
 * An array that grows big (the reader's memo): a mapping of its own, zero
 * when made and where it grows, grown by mremap -- pages move, bytes are
 * not copied --, in whole huge pages asked for; heap memory while under
 * 1 MiB.  ck_map_grow(NULL, 0, n) makes one; NULL when out of memory (p
 * stays) or asked to shrink.  ck_map_free takes the size it was last
 * grown to.  Counted as an allocation (ck_mem_fail_at).
 */
void *ck_map_grow(void *p, size_t old, size_t n);
void ck_map_free(void *p, size_t n);
/* The bytes such an array of n bytes takes: n on the heap below 1 MiB,
 * whole huge pages (2 MiB) from there. */
size_t ck_map_len(size_t n);
unsigned long ck_mem_count(void);

/*
 * Growable byte buffer.  Owns its data (ck_map_grow's: a mapping of huge
 * pages once big); ck_buf_release frees it.  With drain set, the buffer
 * stays small: once holding CK_BUF_DRAIN_AT bytes it hands them to drain
 * and starts again (drained counts them), so a writer can stream a pickle
 * of any size; a negative return from drain makes the buffer fail as on
 * oom, with the code in drain_rc.
 */
#define CK_BUF_DRAIN_AT (256 * 1024)

typedef struct {
    uint8_t *data;
    size_t len, cap;
    int oom; /* sticky: set once an append failed */
    int (*drain)(void *ud, const uint8_t *p, size_t n);
    void *drain_ud;
    uint64_t drained;
    int drain_rc;
} ck_buf_t;

/* Hand what b holds to its drain (a no-op without one): 0 or the code. */
int ck_buf_drain(ck_buf_t *b);

int ck_buf_reserve(ck_buf_t *b, size_t extra);
int ck_buf_put_slow(ck_buf_t *b, const void *p, size_t n);

/* Append n bytes (one byte): 0 or CK_ENOMEM.  Inline while they fit, the
 * common case: the pickle writer appends a few bytes at a time, millions
 * of times per checkpoint of many tensors. */
static inline int ck_buf_put(ck_buf_t *b, const void *p, size_t n)
{
    if (n > 0 && n <= b->cap - b->len && !b->oom &&
        (b->drain == NULL || b->len + n <= CK_BUF_DRAIN_AT)) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
        return 0;
    }
    return ck_buf_put_slow(b, p, n);
}

static inline int ck_buf_putc(ck_buf_t *b, int c)
{
    uint8_t ch = (uint8_t)c;

    if (b->len < b->cap && !b->oom &&
        (b->drain == NULL || b->len < CK_BUF_DRAIN_AT)) {
        b->data[b->len++] = ch;
        return 0;
    }
    return ck_buf_put_slow(b, &ch, 1);
}
int ck_buf_printf(ck_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void ck_buf_release(ck_buf_t *b);

/*
 * Job arena: many small allocations freed at once.  Blocks come from
 * ck_malloc.  ck_arena_alloc returns 8-byte-aligned zeroed memory or NULL.
 */
typedef struct ck_arena_block ck_arena_block_t;
typedef struct ck_arena_ahead ck_arena_ahead_t;
typedef struct {
    ck_arena_block_t *head;
    size_t used; /* total bytes handed out, for limits and reports */
    ck_arena_block_t *big;        /* the last block made for one request */
    ck_arena_block_t **big_link;  /* and the pointer that holds it */
    ck_arena_ahead_t *ahead;      /* ck_arena_ahead's, or NULL */
} ck_arena_t;

void *ck_arena_alloc(ck_arena_t *a, size_t n);
/*
 * p (old bytes from a) made n bytes long, its first old bytes kept, the
 * rest not zeroed; NULL when out of memory (p stays).  When p is the last
 * request that got a block of its own (a vector filled batch by batch),
 * the block is reallocated and the old room given back; otherwise p stays
 * in the arena and a copy is made.
 */
void *ck_arena_grow(ck_arena_t *a, void *p, size_t old, size_t n);
char *ck_arena_strndup(ck_arena_t *a, const char *s, size_t n);
char *ck_arena_strdup(ck_arena_t *a, const char *s);
char *ck_arena_printf(ck_arena_t *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void ck_arena_release(ck_arena_t *a);
/*
 * a's next n bytes of huge blocks (a graph about to be read) made ready on
 * a thread of its own, a few blocks ahead of their use: the kernel's
 * zeroing, and on a virtual machine the host's backing of fresh memory,
 * leave the reading thread's path.  A hint: nothing changes when it
 * cannot be had (no memory for the mapping, no thread).  n of 0 ends it;
 * what was never used is given back then, or with the arena.
 */
void ck_arena_ahead(ck_arena_t *a, size_t n);
/* Of the work that fills a's blocks made ready ahead (a pickle read),
 * done of total is done: from an eighth of it on, blocks are made ready
 * up to the end the rate so far foresees and a block more, not a few
 * past it. */
void ck_arena_ahead_progress(ck_arena_t *a, uint64_t done, uint64_t total);
/* Where a's next small request would go (0 before the first): the nodes
 * made last lie just below it. */
uintptr_t ck_arena_next(const ck_arena_t *a);
/* The n bytes at p given back when they are a's last small request (what
 * a reader made and then kept another way): 1, zeroed for the next, or 0
 * when anything came after them. */
int ck_arena_unalloc(ck_arena_t *a, void *p, size_t n);

/*
 * String map: NUL-terminated key -> size_t, for lookups by key in checkpoints
 * of 10^5 tensors.  Open addressing (linear probing) kept at most half
 * full, grown by doubling in the caller's arena.  Keys are borrowed and
 * must outlive the map.  A zeroed map is empty.
 */
typedef struct {
    const char *key;
    uint64_t hash;  /* the key's: a probe compares it before the key's
                       bytes, which are elsewhere in memory */
    size_t val;
} ck_strmap_slot_t; /* one cache line's third: a probe reads one line */

typedef struct {
    ck_strmap_slot_t *slot;
    size_t n, cap;  /* cap: 0 or a power of two */
} ck_strmap_t;

/* The value stored under key, or SIZE_MAX when there is none. */
size_t ck_strmap_get(const ck_strmap_t *m, const char *key);
/* Store key -> val unless key is there (the first value stays): 0 or
 * CK_ENOMEM. */
int ck_strmap_add(ck_strmap_t *m, ck_arena_t *a, const char *key, size_t val);
/* The same in one look: 0 when stored, 1 when key was there (*old gets its
 * value), CK_ENOMEM. */
int ck_strmap_put(ck_strmap_t *m, ck_arena_t *a, const char *key, size_t val,
                  size_t *old);
/* Room for n more keys without growing (and leaving the outgrown arrays in
 * the arena): 0 or CK_ENOMEM. */
int ck_strmap_reserve(ck_strmap_t *m, ck_arena_t *a, size_t n);

/* Checked arithmetic on sizes from untrusted input: 0 ok, -1 overflow. */
static inline int ck_mul_u64(uint64_t a, uint64_t b, uint64_t *r)
{
    return __builtin_mul_overflow(a, b, r) ? -1 : 0;
}
static inline int ck_add_u64(uint64_t a, uint64_t b, uint64_t *r)
{
    return __builtin_add_overflow(a, b, r) ? -1 : 0;
}

/*
 * Length (1 to 4) of the well-formed UTF-8 sequence at s (n bytes left), or
 * 0 when there is none: no overlong forms, nothing past U+10FFFF, and
 * surrogates only when surrogates is set (Python's 'surrogatepass').
 */
int ck_utf8_len(const uint8_t *s, size_t n, int surrogates);

/* 1 when the n bytes at s are all well-formed UTF-8 (ck_utf8_len with no
 * surrogates), else 0.  NUL bytes are valid: callers that need a C string
 * pass strlen. */
int ck_utf8_valid(const char *s, size_t n);

/*
 * The one escaping rule for text a terminal shows (messages, log lines,
 * inspect's text): takes the next character of the n > 0 bytes at s, writes
 * its shown form to out (NUL-terminated, at most 10 bytes) and returns how
 * many input bytes it took.  A control byte (C0, DEL) or a byte that is
 * not well-formed UTF-8 becomes \xNN, and a code point
 * that can disguise text -- C1 controls, bidi embeddings, overrides and
 * isolates, zero-width and line/paragraph separators, BOM -- \u{XXXX};
 * anything else, a backslash too (regexes in messages stay exact), is
 * copied.  So no input can end a line, move a cursor or reorder what
 * follows it; a literal "\x41" in a name reads like an escape, which
 * misleads no terminal.
 */
size_t ck_esc_step(const uint8_t *s, size_t n, char out[12]);

/* s (a C string) through ck_esc_step to f. */
void ck_esc_fputs(const char *s, FILE *f);

/* The 64-bit FNV-1a hash of the n bytes at p: cheap, well spread, for hash
 * tables and seeds.  Not for anything an attacker must not collide. */
uint64_t ck_hash_fnv1a(const void *p, size_t n);
/* The string map's hash of the n bytes at p: eight bytes a step. */
uint64_t ck_hash_str(const void *p, size_t n);

/*
 * Sort the n items of size bytes at a (size a multiple of 8, at least 8)
 * by the uint64_t each begins with, stably: an LSD radix sort, a byte a
 * pass, the passes where every key has the same byte skipped (offsets in
 * a file of 128 MiB take four).  glibc's qsort calls its comparison
 * through a pointer, 10^5 times 17 for 10^5 keys.  0, or CK_ENOMEM with a
 * as it was.
 */
int ck_sort_by_key(void *a, size_t n, size_t size);

#define CK_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
