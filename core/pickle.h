/*
 * pickle.h -- Python pickles as an object graph, read and written without
 * executing anything.
 *
 * The reader accepts every opcode of protocols 0 to 5 and builds a graph of
 * ck_py_t nodes in a job arena.  Memo references become shared pointers, so
 * object identity and cycles (OmegaConf's _parent links) survive.  Callables
 * are names (CK_PY_GLOBAL); a call is a node holding what __reduce_ex__ gave:
 * the callable, its arguments, then list items, dict items and state, in the
 * order pickle applies them.
 *
 * The writer emits protocol 2 the way CPython's pickler does, so a data.pkl
 * from torch.save read and written back gives the same bytes: every str,
 * non-empty tuple, list, dict, global and call memoized in first-appearance
 * order, batches of 1000, TUPLE1..3, BININT1/2/BININT/LONG1, BINFLOAT,
 * BINUNICODE.
 *
 * The reader is core/pickle.c (protocol 0's text forms in pickle_text.c),
 * the writer core/pickle_write.c, the nodes, their helpers and ck_py_equal
 * core/pickle_graph.c; what they share privately is in pickle_int.h.
 */
#ifndef CK_PICKLE_H
#define CK_PICKLE_H

#include "ck.h"

typedef enum {
    CK_PY_NONE,
    CK_PY_BOOL,
    CK_PY_INT,
    CK_PY_FLOAT,
    CK_PY_STR,
    CK_PY_BYTES,
    CK_PY_BYTEARRAY,
    CK_PY_TUPLE,
    CK_PY_LIST,
    CK_PY_DICT,
    CK_PY_SET,
    CK_PY_FROZENSET,
    CK_PY_GLOBAL, /* module.name, never resolved */
    CK_PY_REDUCE, /* fn(*args), then items and state */
    CK_PY_NEWOBJ, /* cls.__new__(cls, *args), then items and state */
    CK_PY_PERSID, /* persistent id: torch's storage references */
} ck_py_kind_t;

typedef struct ck_py ck_py_t;

/* Items of a container; 32-bit counts keep a node small (a pickle is at
 * most 4 GiB, so no container holds more). */
typedef struct {
    ck_py_t **v;
    uint32_t n, cap;
} ck_py_vec_t;

/*
 * What pickle applies to a call once it is made: appended items, set items
 * (k0 v0 k1 v1) and BUILD's state.  Most calls get none of them -- a
 * tensor's, its hooks' OrderedDict() -- and hold NULL instead: 48 bytes a
 * call, not 80.  Read through ck_py_after(); made by ck_py_after_make().
 */
typedef struct {
    ck_py_vec_t list;
    ck_py_vec_t dict;
    ck_py_t *state;  /* or NULL */
} ck_py_after_t;

/*
 * A value node (flags): one node the reader gives every equal tuple of
 * int64s -- a model's shapes and strides repeat across its tensors -- and
 * every tensor's backward hooks (an empty OrderedDict()), as it shares
 * ints and ().  Pickle memoizes tuples and calls, so the writer writes
 * such a node anew at each place it is met, as the distinct objects it
 * stands for are written; and nothing may change it in place.  (The
 * reader shares only what no later GET names: a GET of one makes it read
 * the pickle again without sharing.)
 */
#define CK_PY_F_VALUE 0x01
/* Set by a walker on a node while it walks the node's items, and cleared
 * after (ckpt.c's scan: a node reached through its own items). */
#define CK_PY_F_WALKING 0x02
/* Set by ckpt.c's scan on a node it met as a value, or as a part of a
 * persistent id other than its storage key: renumbering the storages on
 * write must not change such a node in place (its id gets a copy). */
#define CK_PY_F_MET 0x04
/* A persistent id held without its tuple (u.pc, below). */
#define CK_PY_F_PIDC 0x08
/* A call held without its arguments' tuple (u.o, below). */
#define CK_PY_F_ARGC 0x10
/* A compact id holding its key's text, not a str node (u.pc, below). */
#define CK_PY_F_PIDK 0x20

/*
 * What the persistent ids torch.save writes share: the 'storage' str, the
 * storage class and the location of ('storage', class, key, location,
 * numel).  One per pickle for a model on one device.
 */
typedef struct {
    ck_py_t *tag, *cls, *loc;
} ck_py_pidt_t;

struct ck_py {
    uint8_t kind;
    uint8_t b;      /* CK_PY_BOOL */
    uint8_t flags;  /* CK_PY_F_* */
    uint32_t wgen;  /* writer and walker bookkeeping */
    uint32_t widx;  /* (the head is 16 bytes: a graph has millions) */
    uint32_t len;   /* str, bytes, bytearray: u.s.s's bytes; int: u.i.big's
                       (0: v holds the value); a call: see u.o; a
                       persistent id: see u.pid.  In the head's last four
                       bytes, which alignment leaves free: a str node is
                       24 bytes.  A pickle is at most 4 GiB, so no value
                       read is longer; made ones are refused past it. */
    union {
        struct {
            int64_t v;
            uint8_t *big; /* two's complement LE when it does not fit v */
        } i;
        uint8_t f[8];     /* IEEE 754 double, big-endian as pickled */
        struct {
            char *s;      /* str: UTF-8; bytes: raw; NUL-terminated */
        } s;
        ck_py_vec_t seq;  /* tuple, list, set: items; dict: k0 v0 k1 v1 */
        struct {
            char *module, *name;
        } g;
        /*
         * A call.  torch.save's tensor, _rebuild_tensor_v2 of six
         * arguments, its tuple put in the memo and named nowhere else,
         * is held compact (CK_PY_F_ARGC): the six items where args is and
         * on past the union, no tuple, nothing after it -- 72 bytes, not
         * the 120 of a call and its tuple, 10^5 tensors times four in a
         * checkpoint.  Read the items with ck_py_args, the rest with
         * ck_py_after; ck_py_args_tuple gives it its tuple.
         */
        struct {
            ck_py_t *fn;  /* REDUCE: callable; NEWOBJ: class */
            ck_py_t *args;/* a tuple (see ck_py_args) */
            ck_py_after_t *after; /* NULL: none (see ck_py_after) */
        } o;          /* (len is the torch layer's: a tensor call's index
                         in its tensors, see ck_ckpt_tensor) */
        ck_py_t *pid;     /* a persistent id: its tuple (len is the
                             torch layer's: the storage the id names,
                             see ck_ckpt_pid_storage) */
        /*
         * A persistent id whose tuple is ('storage', class, key,
         * location, numel), torch.save's, put in the memo and named
         * nowhere else (CK_PY_F_PIDC): the reader keeps the key, the
         * numel and the parts the ids share instead of 72 bytes of tuple
         * -- a checkpoint of 10^5 tensors has 4 * 10^5 of them.  Read its
         * items with ck_py_pid_items; ck_py_pid_tuple gives it its tuple.
         * The writer writes the same bytes for both (the node's
         * wgen/widx memoize the tuple).
         *
         * A key of at most 7 bytes that nothing else names (torch.save's
         * "0", "1", ...) is held as its text (CK_PY_F_PIDK), not as a
         * 32-byte str.  Those bytes never change once the reader is done
         * (a storage's record keeps a pointer to them): the id made a
         * tuple leaves them where they are, behind u.pid, and the writer
         * writes another key for it without changing it (ck_persid_cb).
         */
        struct {
            const ck_py_pidt_t *t;  /* (where pid is: ck_py_pid_tuple) */
            ck_py_t *numel;
            union {
                ck_py_t *p;
                char s[8];     /* CK_PY_F_PIDK: NUL-padded, no NUL in it */
            } key;
        } pc;
    } u;
};

typedef struct {
    uint64_t max_pickle_bytes; /* size of one pickle */
    uint32_t max_depth;        /* nesting accepted by walkers and writer */
    uint32_t max_memo;         /* highest memo index + 1 */
    uint64_t max_string_bytes; /* one str/bytes/long */
    const int *cancel;         /* optional: reading stops with CK_ECANCELED
                                  once *cancel is nonzero (another thread
                                  sets it; looked at every 64 Ki opcodes) */
} ck_limits_t;

void ck_limits_default(ck_limits_t *l);

/* A parsed pickle: the root and every global it names, in first order. */
typedef struct {
    ck_py_t *root;
    int protocol;           /* from PROTO, 0 or 1 when absent */
    ck_py_vec_t globals;
    ck_py_vec_t dropped;    /* values POP and POP_MARK discarded: not in
                               the graph, yet a torch.load builds them */
    size_t consumed;        /* bytes up to and including STOP */
} ck_pickle_t;

/*
 * Every global the bytes at buf name (GLOBAL, INST, STACK_GLOBAL), found by
 * stepping over opcodes without building anything (pickle_scan.c): cb gets
 * module and name (not NUL-terminated) in order; a negative return from cb
 * stops the scan and is returned.  For naming the danger in a refusal; it
 * validates nothing.  Returns 0, CK_ENOMEM or cb's code.
 */
typedef int (*ck_global_cb)(void *ud, const char *module, size_t ml,
                            const char *name, size_t nl);
int ck_pickle_scan_globals(const uint8_t *buf, size_t len, ck_global_cb cb,
                           void *ud);

/*
 * Read one pickle from buf[0..len).  Stops at STOP; with 'exact' set, bytes
 * after STOP are an error, otherwise *consumed tells where the next one
 * starts.  Nodes live in arena.  Returns 0, CK_EFORMAT, CK_ELIMIT,
 * CK_EUNSUPPORTED or CK_ENOMEM with the detail in err.  -EAGAIN means the
 * pickle ran past len: more input may complete it.
 */
int ck_pickle_read(const uint8_t *buf, size_t len, int exact,
                   const ck_limits_t *lim, ck_arena_t *arena, ck_pickle_t *out,
                   ck_err_t *err);

/*
 * ck_pickle_read of the len bytes of fd at off (exact), read through a
 * window of 'window' bytes that grows only for an opcode larger than it
 * (pickle_window.c): a big pickle is never whole in memory.  The same
 * graph, and the same errors at the same offsets, as ck_pickle_read of
 * those bytes; a read's failure is -errno.
 */
int ck_pickle_read_fd(int fd, uint64_t off, uint64_t len, size_t window,
                      const ck_limits_t *lim, ck_arena_t *arena,
                      ck_pickle_t *out, ck_err_t *err);

/*
 * Called by the writer for each PERSID node before its id is written; lets
 * the torch layer renumber storage keys in order of first reference.  For
 * an id holding its key's text (CK_PY_F_PIDK), which it must not change,
 * it may set *key to the key to write instead (*key is NULL on entry; the
 * text is the callback's, read before its next call).
 */
typedef int (*ck_persid_cb)(void *ud, ck_py_t *node, const char **key,
                            ck_err_t *err);

/*
 * Write root as a protocol 2 pickle appended to out.  Nodes made for the
 * output (bytes at protocol 2) are taken from arena.
 */
int ck_pickle_write(ck_py_t *root, const ck_limits_t *lim, ck_arena_t *arena,
                    ck_persid_cb cb, void *ud, ck_buf_t *out, ck_err_t *err);

/*
 * The items of persistent id p's tuple, whether held as a tuple or not
 * (CK_PY_F_PIDC): 0 with *n of them in out (room for max), or -1 when
 * its id is not a tuple of at most max items.  An id holding its key's
 * text (CK_PY_F_PIDK) gets the str in *key, out[2] pointing at it: a
 * node of the caller's, its text the id's, to read and to drop -- nothing
 * may keep it, nor change it to change the id.
 */
int ck_py_pid_items(const ck_py_t *p, ck_py_t **out, size_t max, size_t *n,
                    ck_py_t *key);
/* Persistent id p's id, made a tuple in a first when p holds none (an
 * edit that changes its items); NULL when out of memory. */
ck_py_t *ck_py_pid_tuple(ck_arena_t *a, ck_py_t *p);

/* Items of a compact call's arguments (CK_PY_F_ARGC). */
#define CK_PY_ARGC 6

/*
 * The items of call p's arguments, whether held as a tuple or not
 * (CK_PY_F_ARGC), *n of them: to read, or to replace one in place.  NULL
 * when the call has no tuple of arguments (a node made without).
 */
ck_py_t **ck_py_args(const ck_py_t *p, uint32_t *n);
/* Call p's arguments' tuple, made in a first when p holds none (a GET of
 * it, items or state added to the call); NULL when out of memory. */
ck_py_t *ck_py_args_tuple(ck_arena_t *a, ck_py_t *p);

/* Constructors for plugins and tests; NULL when the arena is exhausted. */
ck_py_t *ck_py_new(ck_arena_t *a, ck_py_kind_t kind);
ck_py_t *ck_py_int(ck_arena_t *a, int64_t v);
ck_py_t *ck_py_float(ck_arena_t *a, double v);
ck_py_t *ck_py_str(ck_arena_t *a, const char *s, size_t n);
ck_py_t *ck_py_global(ck_arena_t *a, const char *module, const char *name);
/* Append item: 0, CK_ENOMEM, or -EINVAL into the items ck_py_mapping
 * gives a call that has none (ck_py_mapping_mut gives room). */
int ck_py_vec_push(ck_arena_t *a, ck_py_vec_t *v, ck_py_t *item);
/* Room for n more items at once (at least double the old room, or
 * exactly n for the first): 0, CK_ENOMEM, -EINVAL as above.  The arena
 * keeps the old array. */
int ck_py_vec_reserve(ck_arena_t *a, ck_py_vec_t *v, size_t n);
void ck_py_vec_remove(ck_py_vec_t *v, size_t i, size_t count);

double ck_py_float_value(const ck_py_t *p);
/* v as pickle holds a float: IEEE 754, big-endian (a float node's u.f). */
void ck_py_float_be(double v, uint8_t be[8]);
/* 1 when p is a str equal to s. */
int ck_py_str_eq(const ck_py_t *p, const char *s);
/* 1 when p is a str without a NUL: its C string is all of it (a map by
 * C string, a name, a pattern may take it). */
int ck_py_str_plain(const ck_py_t *p);
/* A module name as Python 3 spells it (__builtin__ -> builtins, copy_reg -> copyreg). */
const char *ck_py_module3(const char *module);
/* 1 when p is a global module.name (module compared after py2 mapping). */
int ck_py_global_is(const ck_py_t *p, const char *module, const char *name);

/* A call's list items, set items and state (empty when it got none). */
extern const ck_py_after_t ck_py_after_none;

static inline const ck_py_after_t *ck_py_after(const ck_py_t *p)
{
    return !(p->flags & CK_PY_F_ARGC) && p->u.o.after != NULL
               ? p->u.o.after : &ck_py_after_none;
}

/* The same to change, made in a on first use (a compact call gets its
 * tuple first); NULL when out of memory, or for a value node
 * (CK_PY_F_VALUE), which nothing may change. */
ck_py_after_t *ck_py_after_make(ck_arena_t *a, ck_py_t *p);

/*
 * Items of a mapping: a dict's pairs or a call's set items (OrderedDict,
 * defaultdict).  NULL when p is neither.  A call that got no items has
 * ck_py_after_none's, to read only (they are in read-only memory): whoever
 * may add items or store a count takes them from ck_py_mapping_mut.
 */
ck_py_vec_t *ck_py_mapping(ck_py_t *p);

/*
 * The same to change (a call that had none gets room for them from a):
 * NULL when p is no mapping, or with *oom set when out of memory.
 */
ck_py_vec_t *ck_py_mapping_mut(ck_arena_t *a, ck_py_t *p, int *oom);
/* Value for a str key in a mapping, or NULL; *index gets the pair index. */
ck_py_t *ck_py_map_get(ck_py_t *map, const char *key, size_t *index);

/* Two's complement negation in place of an n-byte little-endian integer
 * (LONG1/LONG4 bytes). */
void ck_int_negate(uint8_t *le, size_t n);

/*
 * Structural equality, identity preserving (for tests and the fuzzer): 1
 * when the graphs match and their shared objects correspond one to one, so
 * a writer that merges two equal objects into one is caught; 0 when they
 * do not; CK_ENOMEM.  Not thread safe for one graph: it marks the nodes it
 * visits (wgen and widx).
 */
int ck_py_equal(ck_py_t *a, ck_py_t *b, uint32_t max_depth);

/*
 * A structural hash that agrees with ck_py_equal: equal graphs hash alike.
 * Containers contribute their length and, down to 'depth' levels, their
 * items (at most 16 per level), so the cost is bounded whatever the graph;
 * cycles end at the depth.  For bucketing keys before ck_py_equal.
 */
uint64_t ck_py_hash(const ck_py_t *p, uint32_t depth);

/* A fresh generation number for walkers that mark visited nodes. */
uint32_t ck_py_next_gen(void);

#endif
