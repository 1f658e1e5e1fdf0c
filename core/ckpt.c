/*
 * ckpt.c -- the torch layer: what torch.save's pickles mean, where their
 * storages live, and how to write them back the way torch.save does.
 *
 * Invariants after a successful ck_ckpt_open or ck_ckpt_scan:
 *  - every global the pickle names is on the allowlist;
 *  - every persistent id is ('storage', <storage class>, key, location,
 *    numel) and names a storage whose bytes exist in the input with exactly
 *    numel * itemsize bytes; one key has one element type;
 *  - every tensor view lies inside its storage.
 * Node->aux of a PERSID node points at its ck_storage_t.
 */
#define _GNU_SOURCE
#include "ckpt.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

/* ---- dtypes ----------------------------------------------------------- */

static const ck_dtype_t dtypes[] = {
    /* name           storage class            size  float */
    { "float64", "DoubleStorage", 8, 1 },
    { "float32", "FloatStorage", 4, 1 },
    { "float16", "HalfStorage", 2, 1 },
    { "bfloat16", "BFloat16Storage", 2, 1 },
    { "int64", "LongStorage", 8, 0 },
    { "int32", "IntStorage", 4, 0 },
    { "int16", "ShortStorage", 2, 0 },
    { "int8", "CharStorage", 1, 0 },
    { "uint8", "ByteStorage", 1, 0 },
    { "bool", "BoolStorage", 1, 0 },
    { "complex128", "ComplexDoubleStorage", 16, 2 },
    { "complex64", "ComplexFloatStorage", 8, 2 },
    { "qint8", "QInt8Storage", 1, 0 },
    { "qint32", "QInt32Storage", 4, 0 },
    { "quint8", "QUInt8Storage", 1, 0 },
    { "quint4x2", "QUInt4x2Storage", 1, 0 },
    { "quint2x4", "QUInt2x4Storage", 1, 0 },
    /* written as UntypedStorage with _rebuild_tensor_v3 */
    { "complex32", NULL, 4, 2 },
    { "float8_e5m2", NULL, 1, 1 },
    { "float8_e4m3fn", NULL, 1, 1 },
    { "float8_e5m2fnuz", NULL, 1, 1 },
    { "float8_e4m3fnuz", NULL, 1, 1 },
    { "float8_e8m0fnu", NULL, 1, 1 },
    { "float4_e2m1fn_x2", NULL, 1, 1 },
    { "uint16", NULL, 2, 0 },
    { "uint32", NULL, 4, 0 },
    { "uint64", NULL, 8, 0 },
    { "bits8", NULL, 1, 0 },
    { "bits16", NULL, 2, 0 },
    { "bits1x8", NULL, 1, 0 },
    { "bits2x4", NULL, 1, 0 },
    { "bits4x2", NULL, 1, 0 },
};

const ck_dtype_t *ck_dtype_by_name(const char *name)
{
    for (size_t i = 0; i < CK_ARRAY_SIZE(dtypes); i++)
        if (strcmp(dtypes[i].name, name) == 0)
            return &dtypes[i];
    return NULL;
}

const ck_dtype_t *ck_dtype_by_storage(const char *storage_class)
{
    for (size_t i = 0; i < CK_ARRAY_SIZE(dtypes); i++)
        if (dtypes[i].storage != NULL &&
            strcmp(dtypes[i].storage, storage_class) == 0)
            return &dtypes[i];
    return NULL;
}

/* ---- allowed globals -------------------------------------------------- */

/*
 * What torch's weights_only unpickler accepts, plus what OmegaConf configs
 * and common training checkpoints pickle.  None of these is ever called by
 * ckprep; the list bounds what a checkpoint may ask of torch.load later.
 * Modules are compared after Python 2 names are mapped (__builtin__ ->
 * builtins, copy_reg -> copyreg).
 */
static const char *const allowed[] = {
    "collections.OrderedDict",
    "collections.defaultdict",
    "collections.Counter",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor",
    "torch._utils._rebuild_meta_tensor_no_storage",
    "torch.per_tensor_affine",
    "torch.per_channel_affine",
    "torch.per_tensor_symmetric",
    "torch.per_channel_symmetric",
    "torch.per_channel_affine_float_qparams",
    "torch.sparse_coo",
    "torch.sparse_csr",
    "torch.strided",
    "torch._tensor._rebuild_from_type_v2",
    "torch.nn.parameter.Parameter",
    "torch.Tensor",
    "torch.Size",
    "torch.device",
    "torch.UntypedStorage",
    "torch.storage.TypedStorage",
    "torch.serialization._get_layout",
    "_codecs.encode",
    "builtins.set",
    "builtins.frozenset",
    "builtins.bytearray",
    "builtins.bytes",
    "builtins.complex",
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.int",
    "builtins.long",
    "builtins.float",
    "builtins.str",
    "builtins.unicode",
    "builtins.bool",
    "builtins.object",
    "copyreg._reconstructor",
    "typing.Any",
    "typing.Dict",
    "typing.List",
    "typing.Tuple",
    "typing.Optional",
    "typing.Union",
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.nodes.AnyNode",
    "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode",
    "omegaconf.nodes.BooleanNode",
    "omegaconf.nodes.EnumNode",
    "omegaconf.nodes.PathNode",
    "omegaconf.nodes.BytesNode",
    "omegaconf.nodes.InterpolationResultNode",
    "omegaconf.base.Metadata",
    "omegaconf.base.ContainerMetadata",
};

static int name_in(const char *module, const char *name,
                   const char *const *list, size_t n)
{
    size_t ml = strlen(module);

    for (size_t i = 0; n == SIZE_MAX ? list[i] != NULL : i < n; i++) {
        const char *e = list[i];

        if (strncmp(e, module, ml) == 0 && e[ml] == '.' &&
            strcmp(e + ml + 1, name) == 0)
            return 1;
    }
    return 0;
}

int ck_global_allowed(const char *module, const char *name,
                      const char *const *extra)
{
    const char *m = ck_py_module3(module);

    /* no built-in entry has a dotted name: "torch" + "_utils._rebuild_..."
     * would pass as the rebuild function yet escape its checks */
    if (strchr(name, '.') == NULL &&
        name_in(m, name, allowed, CK_ARRAY_SIZE(allowed)))
        return 1;
    if (strcmp(m, "torch") == 0 &&
        (ck_dtype_by_name(name) != NULL || ck_dtype_by_storage(name) != NULL))
        return 1;
    if (extra != NULL &&
        (name_in(m, name, extra, SIZE_MAX) || name_in(module, name, extra, SIZE_MAX)))
        return 1;
    return 0;
}

/* ---- digests ---------------------------------------------------------- */

static void hex(const unsigned char *md, char out[65])
{
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
}

/* SHA-256 of size, then each (p, n) part in turn. */
static int fingerprint(uint64_t size, const void *p1, size_t n1, const void *p2,
                       size_t n2, char out[65])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md[32], sz[8];
    unsigned int len = 0;
    int ok;

    for (int i = 0; i < 8; i++)
        sz[i] = (unsigned char)(size >> (8 * i));
    ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
         EVP_DigestUpdate(ctx, sz, 8) && EVP_DigestUpdate(ctx, p1, n1) &&
         (n2 == 0 || EVP_DigestUpdate(ctx, p2, n2)) &&
         EVP_DigestFinal_ex(ctx, md, &len);
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return CK_ENOMEM;
    hex(md, out);
    return 0;
}

static int zip_fingerprint(int fd, uint64_t size, const void *pkl, size_t n,
                           uint64_t cd_off, uint64_t cd_size, char out[65],
                           ck_err_t *err)
{
    uint8_t *cd = ck_malloc((size_t)cd_size + 1);
    int rc;

    if (cd == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    rc = ck_pread_full(fd, cd, (size_t)cd_size, cd_off);
    if (rc == 0)
        rc = fingerprint(size, pkl, n, cd, (size_t)cd_size, out);
    ck_free(cd);
    if (rc < 0)
        return ck_err_set(err, rc, "fingerprint: %s", ck_strerror(rc));
    return 0;
}

int ck_sha256_file(const char *path, char out[65], ck_err_t *err)
{
    FILE *f = fopen(path, "rb");
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md[32], buf[65536];
    unsigned int len = 0;
    size_t n;
    int ok = f != NULL && ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);

    while (ok && (n = fread(buf, 1, sizeof(buf), f)) > 0)
        ok = EVP_DigestUpdate(ctx, buf, n);
    ok = ok && !ferror(f) && EVP_DigestFinal_ex(ctx, md, &len);
    if (f != NULL)
        fclose(f);
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return ck_err_set(err, CK_ECONFIG, "%s: cannot digest", path);
    hex(md, out);
    return 0;
}

/* ---- opening ---------------------------------------------------------- */

char *ck_ckpt_stem(ck_arena_t *a, const char *path)
{
    const char *base = strrchr(path, '/');
    const char *dot;

    base = base ? base + 1 : path;
    dot = strrchr(base, '.');
    if (dot == NULL || dot == base)
        dot = base + strlen(base);
    if (dot == base)
        return ck_arena_strdup(a, "archive");
    return ck_arena_strndup(a, base, (size_t)(dot - base));
}

static int check_globals(ck_ckpt_t *c, const char *const *extra, ck_err_t *err)
{
    for (size_t i = 0; i < c->pk.globals.n; i++) {
        ck_py_t *g = c->pk.globals.v[i];

        if (!ck_global_allowed(g->u.g.module, g->u.g.name, extra))
            return ck_err_set(err, CK_EUNSAFE,
                              "pickle names global '%s.%s'%s, which is not allowed",
                              ck_py_module3(g->u.g.module), g->u.g.name,
                              strchr(g->u.g.name, '.') ? " (a dotted name)" : "");
    }
    return 0;
}

static int open_zip(ck_ckpt_t *c, ck_err_t *err)
{
    char name[600];
    const char *first, *slash;
    ck_zip_entry_t *e;
    uint8_t *pkl = NULL;
    int rc;

    rc = ck_zip_open(c->fd, c->st.size, &c->arena, &c->zip, err);
    if (rc < 0)
        return rc;
    first = c->zip.e[0].name;
    slash = strchr(first, '/');
    if (slash == NULL || slash == first)
        return ck_err_set(err, CK_EFORMAT, "zip: %s is not in a top folder", first);
    c->top = ck_arena_strndup(&c->arena, first, (size_t)(slash - first));
    if (c->top == NULL)
        return ck_err_set(err, CK_ENOMEM, "out of memory");
    for (size_t i = 0; i < c->zip.n; i++) {
        const char *n = c->zip.e[i].name;
        size_t tl = strlen(c->top);

        if (strncmp(n, c->top, tl) != 0 || n[tl] != '/')
            return ck_err_set(err, CK_EFORMAT,
                              "zip: %s is outside the top folder %s/", n, c->top);
        if (strcmp(n + tl + 1, "constants.pkl") == 0)
            return ck_err_set(err, CK_EUNSUPPORTED,
                              "a TorchScript archive (constants.pkl), not a "
                              "torch.save checkpoint");
    }
    snprintf(name, sizeof(name), "%s/byteorder", c->top);
    e = ck_zip_find(&c->zip, name);
    if (e != NULL) {
        uint8_t *bo;

        rc = ck_zip_read(c->fd, e, 16, &bo, err);
        if (rc < 0)
            return rc;
        c->byteorder = (e->usize == 6 && memcmp(bo, "little", 6) == 0) ? "little"
                       : (e->usize == 3 && memcmp(bo, "big", 3) == 0) ? "big"
                                                                       : "?";
        ck_free(bo);
        if (strcmp(c->byteorder, "little") != 0)
            return ck_err_set(err, CK_EUNSUPPORTED,
                              "byteorder record is not 'little'");
    }
    snprintf(name, sizeof(name), "%s/version", c->top);
    e = ck_zip_find(&c->zip, name);
    if (e == NULL) {
        snprintf(name, sizeof(name), "%s/.data/version", c->top);
        e = ck_zip_find(&c->zip, name);
    }
    if (e == NULL)
        return ck_err_set(err, CK_EFORMAT, "zip: no version record");
    {
        uint8_t *v;
        unsigned long ver = 0;
        size_t i = 0;

        rc = ck_zip_read(c->fd, e, 32, &v, err);
        if (rc < 0)
            return rc;
        while (i < e->usize && v[i] >= '0' && v[i] <= '9' && ver < 1000)
            ver = ver * 10 + (unsigned long)(v[i++] - '0');
        while (i < e->usize && (v[i] == '\r' || v[i] == '\n'))
            i++;
        ck_free(v);
        /* torch reads versions 1 to 10 */
        if (i != e->usize || ver < 1 || ver > 10)
            return ck_err_set(err, CK_EUNSUPPORTED,
                              "zip: unsupported archive version record");
    }
    snprintf(name, sizeof(name), "%s/data.pkl", c->top);
    e = ck_zip_find(&c->zip, name);
    if (e == NULL)
        return ck_err_set(err, CK_EFORMAT, "zip: no %s record", name);
    rc = ck_zip_read(c->fd, e, c->lim.max_pickle_bytes, &pkl, err);
    if (rc < 0)
        return rc;
    c->pickle_bytes = (size_t)e->usize;
    rc = zip_fingerprint(c->fd, c->st.size, pkl, (size_t)e->usize, c->zip.cd_off,
                         c->zip.cd_size, c->fingerprint, err);
    if (rc == 0)
        rc = ck_pickle_read(pkl, (size_t)e->usize, 1, &c->lim, &c->arena, &c->pk,
                            err);
    if (rc == -EAGAIN) {
        char m[sizeof(err->msg)];

        /* not err->msg itself: vsnprintf's source and target may not
         * overlap */
        snprintf(m, sizeof(m), "%s", err->msg);
        err->code = 0;
        rc = ck_err_set(err, CK_EFORMAT, "data.pkl: %s", m);
    }
    ck_free(pkl);
    return rc;
}

/* The legacy stream: magic, protocol, sys_info, object, keys, storages. */
static const uint8_t legacy_magic[10] = { 0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                          0x20, 0x6a, 0xa8, 0x50, 0x19 };

static int legacy_pickles(ck_ckpt_t *c, const uint8_t *buf, size_t len,
                          ck_py_t **keys, size_t *data_start, ck_err_t *err)
{
    ck_pickle_t p[5];
    size_t pos = 0;
    int rc;

    for (int i = 0; i < 5; i++) {
        rc = ck_pickle_read(buf + pos, len - pos, 0, &c->lim, &c->arena, &p[i],
                            err);
        if (rc < 0)
            return rc;
        pos += p[i].consumed;
        if (i == 0) {
            ck_py_t *m = p[0].root;

            if (m->kind != CK_PY_INT || m->u.i.nbig != 10 ||
                memcmp(m->u.i.big, legacy_magic, 10) != 0)
                return ck_err_set(err, CK_EFORMAT,
                                  "neither a zip archive nor a legacy torch file "
                                  "(bad magic number)");
        } else if (i == 1) {
            if (p[1].root->kind != CK_PY_INT || p[1].root->u.i.v != 1001)
                return ck_err_set(err, CK_EUNSUPPORTED,
                                  "legacy torch file of an unknown protocol");
        } else if (i == 2) {
            ck_py_t *le = ck_py_map_get(p[2].root, "little_endian", NULL);

            if (le == NULL || le->kind != CK_PY_BOOL)
                return ck_err_set(err, CK_EFORMAT, "legacy sys_info malformed");
            if (!le->b)
                return ck_err_set(err, CK_EUNSUPPORTED,
                                  "big-endian legacy checkpoint");
        }
    }
    c->pk = p[3];
    c->pk.consumed = pos;
    c->pickle_bytes = p[3].consumed;
    for (int i = 0; i < 5; i++)
        for (size_t j = 0; i != 3 && j < p[i].globals.n; j++)
            if (ck_py_vec_push(&c->arena, &c->pk.globals, p[i].globals.v[j]) < 0)
                return ck_err_set(err, CK_ENOMEM, "out of memory");
    *keys = p[4].root;
    *data_start = pos;
    if ((*keys)->kind != CK_PY_LIST)
        return ck_err_set(err, CK_EFORMAT, "legacy storage key list malformed");
    return 0;
}

static int open_legacy(ck_ckpt_t *c, ck_py_t **keys, size_t *data_start,
                       ck_err_t *err)
{
    size_t len = 1u << 20;
    uint8_t *buf = NULL;
    int rc;

    for (;;) {
        uint8_t *nb;

        if (len > c->st.size)
            len = (size_t)c->st.size;
        nb = ck_realloc(buf, len ? len : 1);
        if (nb == NULL) {
            rc = ck_err_set(err, CK_ENOMEM, "out of memory");
            break;
        }
        buf = nb;
        rc = ck_pread_full(c->fd, buf, len, 0);
        if (rc < 0) {
            rc = ck_err_set(err, rc, "read: %s", strerror(-rc));
            break;
        }
        ck_arena_release(&c->arena);
        memset(&c->pk, 0, sizeof(c->pk));
        rc = legacy_pickles(c, buf, len, keys, data_start, err);
        if (rc == 0 && fingerprint(c->st.size, buf, *data_start, NULL, 0,
                                   c->fingerprint) < 0)
            rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        if (rc != -EAGAIN)
            break;
        if (len == c->st.size || len >= c->lim.max_pickle_bytes) {
            err->code = 0;
            rc = ck_err_set(err, CK_EFORMAT, "legacy file truncated in its pickles");
            break;
        }
        err->code = 0;
        len = len * 4 > c->lim.max_pickle_bytes ? (size_t)c->lim.max_pickle_bytes
                                                : len * 4;
    }
    ck_free(buf);
    return rc;
}

static ck_storage_t *find_storage(ck_ckpt_t *c, const char *key)
{
    size_t i = ck_strmap_get(&c->by_key, key);

    return i < c->nstorages ? c->storages[i] : NULL;
}

/* Append st to c->storages (grown by doubling) and to the key index. */
static int add_storage(ck_ckpt_t *c, ck_storage_t *st)
{
    if (c->nstorages == c->storages_cap) {
        size_t cap = c->storages_cap ? c->storages_cap * 2 : 64;
        ck_storage_t **ns = ck_arena_alloc(&c->arena, cap * sizeof(*ns));

        if (ns == NULL)
            return CK_ENOMEM;
        if (c->nstorages)
            memcpy(ns, c->storages, c->nstorages * sizeof(*ns));
        c->storages = ns;
        c->storages_cap = cap;
    }
    if (ck_strmap_add(&c->by_key, &c->arena, st->key, c->nstorages) < 0)
        return CK_ENOMEM;
    c->storages[c->nstorages++] = st;
    return 0;
}

/* Storages of a legacy file: <int64 numel><bytes> per key, in key order. */
static int legacy_storages(ck_ckpt_t *c, ck_py_t *keys, uint64_t pos,
                           ck_err_t *err)
{
    for (size_t i = 0; i < keys->u.seq.n; i++) {
        ck_py_t *k = keys->u.seq.v[i];
        ck_storage_t *st;
        uint8_t nb[8];
        uint64_t numel = 0, end;

        if (k->kind != CK_PY_STR)
            return ck_err_set(err, CK_EFORMAT, "legacy storage key is not a str");
        st = find_storage(c, k->u.s.s);
        if (ck_pread_full(c->fd, nb, 8, pos) < 0)
            return ck_err_set(err, CK_EFORMAT,
                              "legacy file truncated at storage %s", k->u.s.s);
        for (int j = 7; j >= 0; j--)
            numel = numel << 8 | nb[j];
        if (st == NULL)
            return ck_err_set(err, CK_EFORMAT,
                              "legacy storage %s is not referenced by the pickle",
                              k->u.s.s);
        if (numel != st->numel)
            return ck_err_set(err, CK_EFORMAT,
                              "legacy storage %s holds %llu elements, its "
                              "persistent id says %llu",
                              k->u.s.s, (unsigned long long)numel,
                              (unsigned long long)st->numel);
        st->src = CK_SRC_LEGACY;
        st->off = pos + 8;
        if (ck_add_u64(st->off, st->nbytes, &end) < 0 || end > c->st.size)
            return ck_err_set(err, CK_EFORMAT,
                              "legacy file truncated in storage %s", k->u.s.s);
        pos = end;
    }
    for (size_t i = 0; i < c->nstorages; i++)
        if (c->storages[i]->src != CK_SRC_LEGACY)
            return ck_err_set(err, CK_EFORMAT,
                              "legacy file has no data for storage %s",
                              c->storages[i]->key);
    return 0;
}

/* ---- scanning the graph ----------------------------------------------- */

typedef struct {
    ck_ckpt_t *c;
    ck_err_t *err;
    uint32_t gen;
    ck_tensor_t *t;
    size_t nt, tcap;
    int legacy;
    int first; /* first scan: storages are registered */
} scan_t;

static int as_u64(const ck_py_t *p, uint64_t *v)
{
    if (p == NULL || p->kind != CK_PY_INT || p->u.i.nbig || p->u.i.v < 0)
        return -1;
    *v = (uint64_t)p->u.i.v;
    return 0;
}

/* The storage a persistent id names, registered on the first scan. */
static int scan_persid(scan_t *s, ck_py_t *node)
{
    ck_ckpt_t *c = s->c;
    ck_py_t *pid = node->u.pid, **v;
    const ck_dtype_t *dt = NULL;
    ck_storage_t *st;
    uint64_t numel, nbytes;
    const char *cls;
    size_t n;

    if (pid->kind != CK_PY_TUPLE)
        return ck_err_set(s->err, CK_EFORMAT, "persistent id is not a tuple");
    v = pid->u.seq.v;
    n = pid->u.seq.n;
    if (n < 5 || n > 6 || (n == 6) != s->legacy || !ck_py_str_eq(v[0], "storage"))
        return ck_err_set(s->err, CK_EFORMAT,
                          "persistent id is not ('storage', class, key, "
                          "location, numel)");
    if (v[1]->kind != CK_PY_GLOBAL || strcmp(v[1]->u.g.module, "torch") != 0)
        return ck_err_set(s->err, CK_EFORMAT, "storage class is not a torch class");
    cls = v[1]->u.g.name;
    if (strcmp(cls, "UntypedStorage") != 0) {
        dt = ck_dtype_by_storage(cls);
        if (dt == NULL)
            return ck_err_set(s->err, CK_EUNSUPPORTED,
                              "unknown storage class torch.%s", cls);
    }
    if (v[2]->kind != CK_PY_STR || v[3]->kind != CK_PY_STR ||
        as_u64(v[4], &numel) < 0)
        return ck_err_set(s->err, CK_EFORMAT, "malformed storage persistent id");
    if (n == 6) {
        if (v[5]->kind != CK_PY_NONE)
            return ck_err_set(s->err, CK_EUNSUPPORTED,
                              "legacy storage views are not supported");
        pid->u.seq.n = 5; /* the zip format's persistent id */
    }
    if (ck_mul_u64(numel, dt ? dt->itemsize : 1, &nbytes) < 0)
        return ck_err_set(s->err, CK_EFORMAT, "storage %s size overflows",
                          v[2]->u.s.s);
    st = find_storage(c, v[2]->u.s.s);
    if (st == NULL) {
        if (!s->first)
            return ck_err_set(s->err, CK_EFORMAT, "unknown storage %s",
                              v[2]->u.s.s);
        st = ck_arena_alloc(&c->arena, sizeof(*st));
        if (st == NULL)
            return ck_err_set(s->err, CK_ENOMEM, "out of memory");
        st->key = v[2]->u.s.s;
        st->dtype = dt;
        st->numel = numel;
        st->nbytes = nbytes;
        st->location = v[3]->u.s.s;
        st->newkey = -1;
        if (add_storage(c, st) < 0)
            return ck_err_set(s->err, CK_ENOMEM, "out of memory");
    } else if (st->dtype != dt || st->numel != numel) {
        return ck_err_set(s->err, CK_EFORMAT,
                          "storage %s is used as %s of %llu and as %s of %llu",
                          st->key, st->dtype ? st->dtype->storage : "UntypedStorage",
                          (unsigned long long)st->numel,
                          dt ? dt->storage : "UntypedStorage",
                          (unsigned long long)numel);
    }
    st->refs++;
    node->aux = st;
    return 0;
}

/* A tuple of small ints into an arena array: 0, CK_EFORMAT or CK_ENOMEM. */
static int int_tuple(ck_arena_t *a, ck_py_t *t, size_t *n, int64_t **out)
{
    if (t == NULL || t->kind != CK_PY_TUPLE)
        return CK_EFORMAT;
    *n = t->u.seq.n;
    *out = ck_arena_alloc(a, (*n ? *n : 1) * sizeof(**out));
    if (*out == NULL)
        return CK_ENOMEM;
    for (size_t i = 0; i < *n; i++) {
        ck_py_t *x = t->u.seq.v[i];

        if (x->kind != CK_PY_INT || x->u.i.nbig)
            return CK_EFORMAT;
        (*out)[i] = x->u.i.v;
    }
    return 0;
}

/* _rebuild_tensor(storage, offset, size, stride), _v2 (.., requires_grad,
 * hooks[, metadata]) and _v3 (.., hooks, dtype[, metadata]). */
static int scan_tensor(scan_t *s, ck_py_t *node, int version)
{
    ck_ckpt_t *c = s->c;
    ck_py_t **a = node->u.o.args->u.seq.v;
    size_t n = node->u.o.args->u.seq.n;
    size_t min = version == 1 ? 4 : version == 2 ? 6 : 7;
    ck_tensor_t t = { 0 };
    uint64_t extent = 0, storage_elems;
    int rc;

    if (n < min || n > min + 1 || a[0]->kind != CK_PY_PERSID || a[0]->aux == NULL)
        return ck_err_set(s->err, CK_EFORMAT, "malformed tensor arguments");
    t.node = node;
    t.st = a[0]->aux;
    t.dtype = t.st->dtype;
    if (version == 3) {
        if (a[6]->kind != CK_PY_GLOBAL || strcmp(a[6]->u.g.module, "torch") != 0 ||
            (t.dtype = ck_dtype_by_name(a[6]->u.g.name)) == NULL)
            return ck_err_set(s->err, CK_EUNSUPPORTED, "unknown tensor dtype");
    }
    if (t.dtype == NULL)
        return ck_err_set(s->err, CK_EFORMAT,
                          "tensor on an untyped storage without a dtype");
    rc = as_u64(a[1], &t.offset) < 0 ? CK_EFORMAT : 0;
    if (rc == 0)
        rc = int_tuple(&c->arena, a[2], &t.ndim, &t.size);
    if (rc == 0)
        rc = int_tuple(&c->arena, a[3], &n, &t.stride);
    if (rc == 0 && n != t.ndim)
        rc = CK_EFORMAT;
    if (rc == CK_ENOMEM)
        return ck_err_set(s->err, rc, "out of memory");
    if (rc < 0)
        return ck_err_set(s->err, CK_EFORMAT,
                          "tensor offset, size or stride malformed");
    if (version > 1 && a[4]->kind == CK_PY_BOOL)
        t.requires_grad = a[4]->b;
    t.numel = 1;
    for (size_t i = 0; i < t.ndim; i++) {
        uint64_t span;

        if (t.size[i] < 0 || t.stride[i] < 0)
            return ck_err_set(s->err, CK_EFORMAT,
                              "tensor with a negative size or stride");
        if (ck_mul_u64(t.numel, (uint64_t)t.size[i], &t.numel) < 0)
            return ck_err_set(s->err, CK_EFORMAT, "tensor element count overflows");
        if (t.size[i] > 0 &&
            (ck_mul_u64((uint64_t)(t.size[i] - 1), (uint64_t)t.stride[i], &span) < 0 ||
             ck_add_u64(extent, span, &extent) < 0))
            return ck_err_set(s->err, CK_EFORMAT, "tensor extent overflows");
    }
    storage_elems = t.st->dtype ? t.st->numel : t.st->numel / t.dtype->itemsize;
    if (t.st->dtype != NULL && t.st->dtype != t.dtype)
        return ck_err_set(s->err, CK_EFORMAT, "tensor dtype differs from its storage");
    if (t.numel > 0 &&
        (ck_add_u64(extent, t.offset, &extent) < 0 || extent >= storage_elems))
        return ck_err_set(s->err, CK_EFORMAT,
                          "tensor view (offset %llu, last element %llu) lies "
                          "outside storage %s of %llu elements",
                          (unsigned long long)t.offset,
                          (unsigned long long)extent, t.st->key,
                          (unsigned long long)storage_elems);
    if (s->nt == s->tcap) {
        size_t cap = s->tcap ? s->tcap * 2 : 64;
        ck_tensor_t *nt = ck_arena_alloc(&c->arena, cap * sizeof(*nt));

        if (nt == NULL)
            return ck_err_set(s->err, CK_ENOMEM, "out of memory");
        if (s->nt)
            memcpy(nt, s->t, s->nt * sizeof(*nt));
        s->t = nt;
        s->tcap = cap;
    }
    s->t[s->nt++] = t;
    return 0;
}

static int walk(scan_t *s, ck_py_t *p, uint32_t depth);

static int walk_vec(scan_t *s, ck_py_vec_t *v, uint32_t depth)
{
    for (size_t i = 0; i < v->n; i++) {
        int rc = walk(s, v->v[i], depth + 1);

        if (rc < 0)
            return rc;
    }
    return 0;
}

static int walk(scan_t *s, ck_py_t *p, uint32_t depth)
{
    int rc;

    if (p == NULL)
        return 0;
    if (depth > s->c->lim.max_depth)
        return ck_err_set(s->err, CK_ELIMIT, "object nesting deeper than %u",
                          s->c->lim.max_depth);
    if (p->wgen == s->gen)
        return 0;
    p->wgen = s->gen;
    switch ((ck_py_kind_t)p->kind) {
    case CK_PY_TUPLE:
    case CK_PY_LIST:
    case CK_PY_DICT:
    case CK_PY_SET:
    case CK_PY_FROZENSET:
        return walk_vec(s, &p->u.seq, depth);
    case CK_PY_PERSID:
        return scan_persid(s, p);
    case CK_PY_REDUCE:
    case CK_PY_NEWOBJ:
        if ((rc = walk(s, p->u.o.fn, depth + 1)) < 0 ||
            (rc = walk(s, p->u.o.args, depth + 1)) < 0 ||
            (rc = walk_vec(s, &p->u.o.list, depth)) < 0 ||
            (rc = walk_vec(s, &p->u.o.dict, depth)) < 0 ||
            (rc = walk(s, p->u.o.state, depth + 1)) < 0)
            return rc;
        if (p->kind == CK_PY_REDUCE) {
            ck_py_t *fn = p->u.o.fn;

            if (ck_py_global_is(fn, "torch._utils", "_rebuild_tensor"))
                return scan_tensor(s, p, 1);
            if (ck_py_global_is(fn, "torch._utils", "_rebuild_tensor_v2"))
                return scan_tensor(s, p, 2);
            if (ck_py_global_is(fn, "torch._utils", "_rebuild_tensor_v3"))
                return scan_tensor(s, p, 3);
        }
        return 0;
    default:
        return 0;
    }
}

static int do_scan(ck_ckpt_t *c, int first, ck_err_t *err)
{
    scan_t s = { 0 };
    int rc;

    s.c = c;
    s.err = err;
    s.gen = ck_py_next_gen();
    s.legacy = c->format == CK_FMT_LEGACY && first;
    s.first = first;
    /* the last scan's array is refilled, not left in the arena */
    s.t = c->tensors;
    s.tcap = c->tensors_cap;
    c->ntensors = 0;
    for (size_t i = 0; i < c->nstorages; i++)
        c->storages[i]->refs = 0;
    rc = walk(&s, c->pk.root, 0);
    c->tensors = s.t;
    c->tensors_cap = s.tcap;
    if (rc < 0)
        return rc;
    c->ntensors = s.nt;
    for (size_t i = 0; i < s.nt; i++)
        s.t[i].node->aux = &s.t[i];
    return 0;
}

int ck_ckpt_scan(ck_ckpt_t *c, ck_err_t *err)
{
    return do_scan(c, 0, err);
}

static int zip_storages(ck_ckpt_t *c, ck_err_t *err)
{
    for (size_t i = 0; i < c->nstorages; i++) {
        ck_storage_t *st = c->storages[i];
        char name[600];

        snprintf(name, sizeof(name), "%s/data/%s", c->top, st->key);
        st->entry = ck_zip_find(&c->zip, name);
        if (st->entry == NULL)
            return ck_err_set(err, CK_EFORMAT, "record data/%s is missing",
                              st->key);
        if (st->entry->usize != st->nbytes)
            return ck_err_set(err, CK_EFORMAT,
                              "data/%s: record holds %llu bytes, storage needs %llu",
                              st->key, (unsigned long long)st->entry->usize,
                              (unsigned long long)st->nbytes);
        st->src = CK_SRC_ZIP;
    }
    return 0;
}

int ck_ckpt_open(ck_ckpt_t *c, const char *path, const ck_open_opts_t *o,
                 ck_err_t *err)
{
    struct stat sb;
    uint8_t magic[4] = { 0 };
    ck_py_t *keys = NULL;
    size_t data_start = 0;
    int rc;

    memset(c, 0, sizeof(*c));
    c->fd = -1;
    c->path = path;
    c->lim = o->lim;
    /* O_NONBLOCK: a FIFO put in the file's place must not hang the open */
    c->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (c->fd < 0)
        return ck_err_set(err, -errno, "%s", strerror(errno));
    if (fstat(c->fd, &sb) < 0)
        return ck_err_set(err, -errno, "%s", strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return ck_err_set(err, CK_EFORMAT, "not a regular file");
    if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK) < 0)
        return ck_err_set(err, -errno, "%s", strerror(errno));
    c->st.size = (uint64_t)sb.st_size;
    c->st.dev = sb.st_dev;
    c->st.ino = sb.st_ino;
    c->st.mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
    if (c->st.size == 0)
        return ck_err_set(err, CK_EFORMAT, "empty file");
    rc = ck_pread_full(c->fd, magic, c->st.size < 4 ? (size_t)c->st.size : 4, 0);
    if (rc < 0)
        return ck_err_set(err, rc, "read: %s", strerror(-rc));
    if (memcmp(magic, "PK\x03\x04", 4) == 0) {
        c->format = CK_FMT_ZIP;
        rc = open_zip(c, err);
    } else {
        uint8_t ustar[5] = { 0 };

        if (c->st.size > 262 && ck_pread_full(c->fd, ustar, 5, 257) == 0 &&
            memcmp(ustar, "ustar", 5) == 0)
            return ck_err_set(err, CK_EUNSUPPORTED,
                              "tar checkpoint of torch < 0.4 is not supported");
        c->format = CK_FMT_LEGACY;
        rc = open_legacy(c, &keys, &data_start, err);
    }
    if (rc < 0)
        return rc;
    rc = check_globals(c, o->allow, err);
    if (rc < 0)
        return rc;
    rc = do_scan(c, 1, err);
    if (rc < 0)
        return rc;
    if (c->format == CK_FMT_ZIP)
        return zip_storages(c, err);
    return legacy_storages(c, keys, data_start, err);
}

void ck_ckpt_close(ck_ckpt_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    ck_arena_release(&c->arena);
}

/* ---- paths ------------------------------------------------------------ */

ck_py_t *ck_ckpt_get(ck_ckpt_t *c, const char *path)
{
    ck_py_t *cur = c->pk.root;
    char key[1024];

    while (cur != NULL && *path != '\0') {
        const char *slash = strchr(path, '/');
        size_t n = slash ? (size_t)(slash - path) : strlen(path);

        if (n >= sizeof(key))
            return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        cur = ck_py_map_get(cur, key, NULL);
        path += n + (slash != NULL);
    }
    return cur;
}

ck_tensor_t *ck_ckpt_tensor(ck_ckpt_t *c, ck_py_t *node)
{
    ck_tensor_t *t;

    if (node != NULL && node->kind == CK_PY_REDUCE &&
        ck_py_global_is(node->u.o.fn, "torch._utils", "_rebuild_parameter") &&
        node->u.o.args->u.seq.n >= 1)
        node = node->u.o.args->u.seq.v[0];
    if (node == NULL || node->kind != CK_PY_REDUCE || c->ntensors == 0)
        return NULL;
    t = node->aux;
    if (t < c->tensors || t >= c->tensors + c->ntensors || t->node != node)
        return NULL;
    return t;
}

/* ---- writing ---------------------------------------------------------- */

typedef struct {
    ck_ckpt_t *c;
    ck_storage_t **order;
    size_t n;
} renum_t;

/* Storage keys become 0..n-1 in order of first reference. */
static int renumber_cb(void *ud, ck_py_t *node, ck_err_t *err)
{
    renum_t *r = ud;
    ck_storage_t *st = node->aux;
    ck_py_t *pid = node->u.pid, *key;
    char buf[32];

    if (st == NULL || pid->kind != CK_PY_TUPLE || pid->u.seq.n != 5)
        return ck_err_set(err, CK_EFORMAT, "persistent id not scanned");
    if (st->newkey < 0) {
        st->newkey = (int64_t)r->n;
        r->order[r->n++] = st;
    }
    snprintf(buf, sizeof(buf), "%lld", (long long)st->newkey);
    key = pid->u.seq.v[2];
    if (!ck_py_str_eq(key, buf)) {
        key->u.s.s = ck_arena_strdup(&r->c->arena, buf);
        key->u.s.n = strlen(buf);
        if (key->u.s.s == NULL)
            return ck_err_set(err, CK_ENOMEM, "out of memory");
    }
    return 0;
}

static int put_record(ck_zipw_t *w, const char *top, const char *name,
                      const void *p, size_t n, ck_err_t *err)
{
    char full[600];
    int rc;

    snprintf(full, sizeof(full), "%s/%s", top, name);
    if ((rc = ck_zipw_begin(w, full, n, err)) < 0 ||
        (rc = ck_zipw_data(w, p, n, err)) < 0)
        return rc;
    return ck_zipw_end(w, err);
}

static int copy_storage(ck_ckpt_t *c, ck_zipw_t *w, ck_storage_t *st,
                        ck_err_t *err)
{
    const ck_zip_entry_t *e = st->entry;

    switch (st->src) {
    case CK_SRC_ZIP:
        if (e->method == 8)
            return ck_zipw_inflate(w, c->fd, e, err);
        /* a zero CRC may mean torch skipped it (set_crc32_options) */
        return ck_zipw_copy(w, c->fd, e->data_off, e->usize,
                            e->crc != 0 || e->usize == 0, e->crc, err);
    case CK_SRC_LEGACY:
        return ck_zipw_copy(w, c->fd, st->off, st->nbytes, 0, 0, err);
    case CK_SRC_MEM:
        return ck_zipw_data(w, st->mem, (size_t)st->nbytes, err);
    }
    return ck_err_set(err, CK_EFORMAT, "storage without a source");
}

static int write_zip(ck_ckpt_t *c, int fd, const char *top,
                     ck_write_info_t *info, ck_err_t *err)
{
    ck_buf_t pkl = { 0 };
    renum_t r = { 0 };
    ck_zipw_t w;
    int rc;

    ck_zipw_init(&w, fd);
    w.cancel = c->cancel;
    r.c = c;
    r.order = ck_calloc(c->nstorages + 1, sizeof(*r.order));
    if (r.order == NULL) {
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < c->nstorages; i++)
        c->storages[i]->newkey = -1;
    rc = ck_pickle_write(c->pk.root, &c->lim, &c->arena, renumber_cb, &r, &pkl,
                         err);
    if (rc < 0)
        goto out;
    if ((rc = put_record(&w, top, "data.pkl", pkl.data, pkl.len, err)) < 0 ||
        (rc = put_record(&w, top, "byteorder", "little", 6, err)) < 0)
        goto out;
    for (size_t i = 0; i < r.n; i++) {
        ck_storage_t *st = r.order[i];
        char name[640];

        snprintf(name, sizeof(name), "%s/data/%zu", top, i);
        if (c->cancel != NULL && __atomic_load_n(c->cancel, __ATOMIC_RELAXED)) {
            rc = ck_err_set(err, CK_ECANCELED, "abandoned: ckprep is stopping");
            goto out;
        }
        if ((rc = ck_zipw_begin(&w, name, st->nbytes, err)) < 0 ||
            (rc = copy_storage(c, &w, st, err)) < 0 ||
            (rc = ck_zipw_end(&w, err)) < 0)
            goto out;
        info->storage_bytes += st->nbytes;
    }
    info->nstorages = r.n;
    if ((rc = put_record(&w, top, "version", "3\n", 2, err)) < 0 ||
        (rc = ck_zipw_finish(&w, err)) < 0)
        goto out;
    info->size = w.off;
    rc = zip_fingerprint(fd, w.off, pkl.data, pkl.len, w.cd_off, w.cd_size,
                         info->fingerprint, err);
out:
    ck_zipw_release(&w);
    ck_buf_release(&pkl);
    ck_free(r.order);
    return rc;
}

static int fsync_dir(const char *dir, ck_err_t *err)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;

    if (dfd < 0)
        return ck_err_set(err, -errno, "open %s: %s", dir, strerror(errno));
    if (fsync(dfd) < 0 && errno != EINVAL)
        rc = ck_err_set(err, -errno, "fsync %s: %s", dir, strerror(errno));
    close(dfd);
    return rc;
}

int ck_ckpt_write(ck_ckpt_t *c, const char *out_path, ck_write_info_t *info,
                  ck_err_t *err)
{
    char *dir_copy = NULL, *base_copy = NULL, *tmp = NULL;
    const char *dir, *base;
    char *top;
    int fd = -1, rc;
    struct timespec ts;
    struct sigaction sa;
    struct stat sb;
    ck_err_t we = { 0 };

    memset(info, 0, sizeof(*info));
    /* past RLIMIT_FSIZE a write must fail with EFBIG, not kill the process
     * and leave the temporary behind */
    if (sigaction(SIGXFSZ, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        sa.sa_handler = SIG_IGN;
        sigaction(SIGXFSZ, &sa, NULL);
    }
    dir_copy = ck_strdup(out_path);
    base_copy = ck_strdup(out_path);
    if (dir_copy == NULL || base_copy == NULL) {
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        goto out;
    }
    dir = dirname(dir_copy);
    base = basename(base_copy);
    top = ck_ckpt_stem(&c->arena, base);
    tmp = ck_malloc(strlen(dir) + strlen(base) + 64);
    if (top == NULL || tmp == NULL) {
        rc = ck_err_set(err, CK_ENOMEM, "out of memory");
        goto out;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    for (unsigned i = 0; fd < 0; i++) {
        sprintf(tmp, "%s/.%s.tmp.%d.%lx%u", dir, base, (int)getpid(),
                (unsigned long)ts.tv_nsec, i);
        fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && (errno != EEXIST || i > 100)) {
            rc = ck_err_set(err, -errno, "create %s: %s", tmp, strerror(errno));
            tmp[0] = '\0';
            goto out;
        }
    }
    rc = write_zip(c, fd, top, info, &we);
    if (rc < 0) {
        /* a write error names the output it was writing */
        if (strncmp(we.msg, "write: ", 7) == 0)
            ck_err_set(err, rc, "write %s: %s", out_path, we.msg + 7);
        else
            ck_err_set(err, rc, "%s", we.msg);
        goto out;
    }
    /* every input byte is read by now: the input must be the file opened,
     * unchanged, or the output may mix two files */
    if (c->fd >= 0 &&
        (fstat(c->fd, &sb) < 0 || (uint64_t)sb.st_size != c->st.size ||
         (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec !=
             c->st.mtime_ns)) {
        rc = ck_err_set(err, CK_EFORMAT, "the input changed while it was read");
        goto out;
    }
    if (fsync(fd) < 0) {
        rc = ck_err_set(err, -errno, "fsync %s: %s", out_path, strerror(errno));
        goto out;
    }
    if (close(fd) < 0) {
        fd = -1;
        rc = ck_err_set(err, -errno, "close %s: %s", out_path, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(tmp, out_path) < 0) {
        rc = ck_err_set(err, -errno, "rename to %s: %s", out_path, strerror(errno));
        goto out;
    }
    tmp[0] = '\0';
    rc = fsync_dir(dir, err);
    if (rc < 0)
        unlink(out_path);   /* not known to be durable: not written */
out:
    if (fd >= 0)
        close(fd);
    if (tmp != NULL && tmp[0] != '\0')
        unlink(tmp);
    ck_free(tmp);
    ck_free(dir_copy);
    ck_free(base_copy);
    return rc;
}

/* ---- for plugins ------------------------------------------------------ */

int ck_ckpt_mapping(ck_ckpt_t *c, const char *path, ck_py_t **node,
                    ck_py_vec_t **items, ck_err_t *err)
{
    ck_py_t *p = ck_ckpt_get(c, path);

    if (p == NULL)
        return ck_err_set(err, CK_EPLUGIN, "no '%s' in the checkpoint", path);
    *items = ck_py_mapping(p);
    /* a call is a mapping when it builds one (OrderedDict, defaultdict) or
     * is given items; a tensor rebuild, a torch.Size ... is not */
    if (*items != NULL && p->kind != CK_PY_DICT && (*items)->n == 0 &&
        !ck_py_global_is(p->u.o.fn, "collections", "OrderedDict") &&
        !ck_py_global_is(p->u.o.fn, "collections", "defaultdict"))
        *items = NULL;
    if (*items == NULL)
        return ck_err_set(err, CK_EPLUGIN, "'%s' is not a dict", path);
    if (node != NULL)
        *node = p;
    return 0;
}

ck_py_vec_t *ck_ckpt_metadata(ck_py_t *sd)
{
    ck_py_t *state, *md;

    if (sd == NULL || sd->kind != CK_PY_REDUCE || sd->u.o.state == NULL)
        return NULL;
    state = sd->u.o.state;
    md = ck_py_map_get(state, "_metadata", NULL);
    return ck_py_mapping(md);
}

typedef struct {
    uint32_t gen;
    uint64_t bytes;
    uint32_t depth;
} bytes_t;

static void bytes_walk(bytes_t *b, ck_py_t *p, uint32_t depth)
{
    if (p == NULL || p->wgen == b->gen || depth > b->depth)
        return;
    p->wgen = b->gen;
    switch ((ck_py_kind_t)p->kind) {
    case CK_PY_TUPLE:
    case CK_PY_LIST:
    case CK_PY_DICT:
    case CK_PY_SET:
    case CK_PY_FROZENSET:
        for (size_t i = 0; i < p->u.seq.n; i++)
            bytes_walk(b, p->u.seq.v[i], depth + 1);
        return;
    case CK_PY_REDUCE:
    case CK_PY_NEWOBJ:
        bytes_walk(b, p->u.o.args, depth + 1);
        for (size_t i = 0; i < p->u.o.list.n; i++)
            bytes_walk(b, p->u.o.list.v[i], depth + 1);
        for (size_t i = 0; i < p->u.o.dict.n; i++)
            bytes_walk(b, p->u.o.dict.v[i], depth + 1);
        bytes_walk(b, p->u.o.state, depth + 1);
        return;
    case CK_PY_PERSID: {
        ck_storage_t *st = p->aux;

        /* a storage counts once */
        if (st != NULL && st->mark != b->gen) {
            st->mark = b->gen;
            b->bytes += st->nbytes;
        }
        return;
    }
    default:
        return;
    }
}

uint64_t ck_ckpt_bytes_under(ck_ckpt_t *c, ck_py_t *node)
{
    bytes_t b = { ck_py_next_gen(), 0, c->lim.max_depth };

    bytes_walk(&b, node, 0);
    return b.bytes;
}

ck_py_t *ck_ckpt_global(ck_ckpt_t *c, const char *module, const char *name)
{
    ck_py_t *g;

    for (size_t i = 0; i < c->pk.globals.n; i++) {
        g = c->pk.globals.v[i];
        if (strcmp(g->u.g.module, module) == 0 && strcmp(g->u.g.name, name) == 0)
            return g;
    }
    g = ck_py_global(&c->arena, module, name);
    if (g != NULL && ck_py_vec_push(&c->arena, &c->pk.globals, g) < 0)
        return NULL;
    return g;
}

static ck_py_t *int_tuple_node(ck_arena_t *a, const int64_t *v, size_t n)
{
    ck_py_t *t = ck_py_new(a, CK_PY_TUPLE);

    if (t == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        ck_py_t *x = ck_py_int(a, v[i]);

        if (x == NULL || ck_py_vec_push(a, &t->u.seq, x) < 0)
            return NULL;
    }
    return t;
}

static int tuple_push(ck_arena_t *a, ck_py_t *t, ck_py_t *x)
{
    return x == NULL ? -1 : ck_py_vec_push(a, &t->u.seq, x);
}

ck_py_t *ck_ckpt_new_tensor(ck_ckpt_t *c, const ck_dtype_t *dt,
                            const int64_t *shape, size_t ndim,
                            const uint8_t *data, ck_err_t *err)
{
    ck_arena_t *a = &c->arena;
    ck_storage_t *st;
    ck_py_t *pid, *pers, *args, *hooks, *call;
    int64_t stride[16];
    uint64_t numel = 1;

    if (dt->storage == NULL || ndim > 16) {
        ck_err_set(err, CK_EPLUGIN, "cannot create a %s tensor of %zu dims",
                   dt->name, ndim);
        return NULL;
    }
    for (size_t i = ndim; i-- > 0;) {
        stride[i] = (int64_t)numel;
        if (shape[i] < 0 || ck_mul_u64(numel, (uint64_t)shape[i], &numel) < 0) {
            ck_err_set(err, CK_EPLUGIN, "bad tensor shape");
            return NULL;
        }
    }
    st = ck_arena_alloc(a, sizeof(*st));
    pid = ck_py_new(a, CK_PY_TUPLE);
    pers = ck_py_new(a, CK_PY_PERSID);
    args = ck_py_new(a, CK_PY_TUPLE);
    hooks = ck_py_new(a, CK_PY_REDUCE);
    call = ck_py_new(a, CK_PY_REDUCE);
    if (st == NULL || pid == NULL || pers == NULL || args == NULL ||
        hooks == NULL || call == NULL)
        goto nomem;
    st->key = ck_arena_printf(a, "new:%zu", c->nstorages);
    st->dtype = dt;
    st->numel = numel;
    st->nbytes = numel * dt->itemsize;
    st->location = "cpu";
    st->src = CK_SRC_MEM;
    st->mem = data;
    st->newkey = -1;
    if (st->key == NULL)
        goto nomem;
    if (tuple_push(a, pid, ck_py_str(a, "storage", 7)) < 0 ||
        tuple_push(a, pid, ck_ckpt_global(c, "torch", dt->storage)) < 0 ||
        tuple_push(a, pid, ck_py_str(a, st->key, strlen(st->key))) < 0 ||
        tuple_push(a, pid, ck_py_str(a, "cpu", 3)) < 0 ||
        tuple_push(a, pid, ck_py_int(a, (int64_t)numel)) < 0)
        goto nomem;
    pers->u.pid = pid;
    hooks->u.o.fn = ck_ckpt_global(c, "collections", "OrderedDict");
    hooks->u.o.args = ck_py_new(a, CK_PY_TUPLE);
    call->u.o.fn = ck_ckpt_global(c, "torch._utils", "_rebuild_tensor_v2");
    if (hooks->u.o.fn == NULL || hooks->u.o.args == NULL || call->u.o.fn == NULL)
        goto nomem;
    if (tuple_push(a, args, pers) < 0 || tuple_push(a, args, ck_py_int(a, 0)) < 0 ||
        tuple_push(a, args, int_tuple_node(a, shape, ndim)) < 0 ||
        tuple_push(a, args, int_tuple_node(a, stride, ndim)) < 0 ||
        tuple_push(a, args, ck_py_new(a, CK_PY_BOOL)) < 0 ||
        tuple_push(a, args, hooks) < 0)
        goto nomem;
    call->u.o.args = args;
    if (add_storage(c, st) < 0)
        goto nomem;
    return call;
nomem:
    ck_err_set(err, CK_ENOMEM, "out of memory");
    return NULL;
}

static int storage_bytes(ck_ckpt_t *c, const ck_storage_t *st, uint64_t off,
                         uint64_t n, uint8_t *out, ck_err_t *err)
{
    uint8_t *all;
    int rc;

    if (off > st->nbytes || n > st->nbytes - off)
        return ck_err_set(err, CK_EFORMAT, "read past storage %s", st->key);
    switch (st->src) {
    case CK_SRC_MEM:
        memcpy(out, st->mem + off, (size_t)n);
        return 0;
    case CK_SRC_LEGACY:
        rc = ck_pread_full(c->fd, out, (size_t)n, st->off + off);
        break;
    case CK_SRC_ZIP:
        if (st->entry->method == 0) {
            rc = ck_pread_full(c->fd, out, (size_t)n, st->entry->data_off + off);
            break;
        }
        rc = ck_zip_read(c->fd, st->entry, st->nbytes, &all, err);
        if (rc < 0)
            return rc;
        memcpy(out, all + off, (size_t)n);
        ck_free(all);
        return 0;
    default:
        rc = -EIO;
    }
    if (rc < 0)
        return ck_err_set(err, rc, "read storage %s: %s", st->key, strerror(-rc));
    return 0;
}

int ck_ckpt_read_tensor(ck_ckpt_t *c, const ck_tensor_t *t, uint8_t *out,
                        ck_err_t *err)
{
    size_t isz = t->dtype->itemsize;
    uint64_t idx[16] = { 0 };
    int contiguous = 1;
    int64_t expect = 1;

    if (t->numel == 0)
        return 0;
    if (t->ndim > 16)
        return ck_err_set(err, CK_EUNSUPPORTED, "tensor of %zu dims", t->ndim);
    for (size_t i = t->ndim; i-- > 0;) {
        if (t->size[i] != 1 && t->stride[i] != expect)
            contiguous = 0;
        expect *= t->size[i];
    }
    if (contiguous)
        return storage_bytes(c, t->st, t->offset * isz, t->numel * isz, out, err);
    for (uint64_t k = 0; k < t->numel; k++) {
        uint64_t e = t->offset;
        int rc;

        for (size_t i = 0; i < t->ndim; i++)
            e += idx[i] * (uint64_t)t->stride[i];
        rc = storage_bytes(c, t->st, e * isz, isz, out + k * isz, err);
        if (rc < 0)
            return rc;
        for (size_t i = t->ndim; i-- > 0;) {
            if (++idx[i] < (uint64_t)t->size[i])
                break;
            idx[i] = 0;
        }
    }
    return 0;
}
