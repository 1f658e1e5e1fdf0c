/*
 * ckpt_refuse.c -- saying what a refused file is: what a file that is no
 * checkpoint looks like, whether tarfile (and so torch 1.13's legacy
 * loader) would take it for a tar, and the forbidden globals a pickle
 * names, found by an opcode scan that builds nothing, so that a refusal
 * for a structural fault still names the danger.
 */
#include "ckpt.h"
#include "numpy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 1 when tarfile would take the file for a tar (torch 1.13 tries tarfile
 * first: whatever it takes for a tar is one, whatever the stream in it
 * says); see core/tarhdr.c. */
int ck_ckpt_is_tar(ck_ckpt_t *c)
{
    uint8_t blk[512];

    return c->st.size >= 512 && ck_pread_full(c->fd, blk, 512, 0) == 0 &&
           ck_tar_header(blk, 512);
}

/* What a file that is not a checkpoint looks like, from its first bytes,
 * for the message that says so: "text ('hello world')", "gzip data" ... */
void ck_ckpt_looks_like(const uint8_t *b, size_t n, char *out, size_t size)
{
    static const struct {
        const char *magic;
        size_t len;
        const char *what;
    } kinds[] = {
        { "\x1f\x8b", 2, "gzip data" },
        { "\x93NUMPY", 6, "a numpy .npy file" },
        { "\x89HDF", 4, "an HDF5 file" },
        { "BZh", 3, "bzip2 data" },
        { "\xfd" "7zXZ", 5, "xz data" },
        { "\x28\xb5\x2f\xfd", 4, "zstd data" },
        { "PK\x05\x06", 4, "an empty zip archive" },
    };
    size_t printable = 0, k = 0;
    char shown[48];

    for (size_t i = 0; i < CK_ARRAY_SIZE(kinds); i++) {
        if (n >= kinds[i].len && memcmp(b, kinds[i].magic, kinds[i].len) == 0) {
            snprintf(out, size, "%s", kinds[i].what);
            return;
        }
    }
    if (n >= 9 && b[8] == '{' && b[6] == 0 && b[7] == 0) {
        snprintf(out, size, "a safetensors file, perhaps");
        return;
    }
    for (size_t i = 0; i < n; i++)
        printable += (b[i] >= 0x20 && b[i] < 0x7f) || b[i] == '\n' ||
                     b[i] == '\r' || b[i] == '\t';
    if (n > 0 && printable == n) {
        for (size_t i = 0; i < n && k + 1 < sizeof(shown) && b[i] != '\n'; i++)
            shown[k++] = b[i] == '\r' || b[i] == '\t' ? ' ' : (char)b[i];
        shown[k] = '\0';
        snprintf(out, size, "text ('%s')", shown);
        return;
    }
    snprintf(out, size, "binary data starting %02x %02x %02x %02x", b[0],
             n > 1 ? b[1] : 0, n > 2 ? b[2] : 0, n > 3 ? b[3] : 0);
}

/* ---- naming the danger in a refusal ------------------------------------ */

typedef struct {
    const char *const *allow;
    int numpy;          /* numpy names are allowed (allow_numpy) */
    char names[256];
    size_t n;
} danger_t;

static int danger_cb(void *ud, const char *m, size_t ml, const char *nm,
                     size_t nl)
{
    danger_t *d = ud;
    char mod[128], name[128], both[260];

    if (ml >= sizeof(mod) || nl >= sizeof(name))
        return 0;
    memcpy(mod, m, ml);
    mod[ml] = '\0';
    memcpy(name, nm, nl);
    name[nl] = '\0';
    if (ck_global_allowed(mod, name, d->allow) ||
        (d->numpy && ck_np_global(mod, name)))
        return 0;
    snprintf(both, sizeof(both), "%s.%s", ck_py_module3(mod), name);
    if (strstr(d->names, both) != NULL || d->n >= 4)
        return 0;
    snprintf(d->names + strlen(d->names), sizeof(d->names) - strlen(d->names),
             "%s%s", d->n ? ", " : "", both);
    d->n++;
    return 0;
}

/*
 * A refusal for some other cause (bad magic, "STOP with 1 values left",
 * junk after STOP) also names the forbidden globals the pickle holds,
 * found by an opcode scan: that is what an attacker's file is about.
 */
int ck_ckpt_name_danger(ck_ckpt_t *c, const char *const *allow, int rc,
                        ck_err_t *err)
{
    danger_t d = { .allow = allow, .numpy = c->allow_numpy };
    uint8_t *buf = NULL;
    size_t len = 0;
    char name[600];
    ck_zip_entry_t *e;
    ck_err_t e2 = { 0 };

    if (c->format == CK_FMT_ZIP && c->zip.n > 0) {
        e = NULL;
        if (c->top != NULL) {
            snprintf(name, sizeof(name), "%s/data.pkl", c->top);
            e = ck_zip_find(&c->zip, name);
        }
        for (size_t i = 0; e == NULL && i < c->zip.n; i++) {
            size_t nl = strlen(c->zip.e[i].name);

            if (nl >= 4 && strcmp(c->zip.e[i].name + nl - 4, ".pkl") == 0)
                e = &c->zip.e[i]; /* no top folder: the first pickle */
        }
        if (e == NULL || ck_zip_read(c->fd, e, c->lim.max_pickle_bytes, &buf,
                                     &e2) < 0)
            return rc;
        len = (size_t)e->usize;
    } else if (c->format == CK_FMT_LEGACY) {
        uint64_t cap = c->lim.max_pickle_bytes < (64u << 20)
                           ? c->lim.max_pickle_bytes : (64u << 20);

        len = c->st.size < cap ? (size_t)c->st.size : (size_t)cap;
        buf = ck_malloc(len ? len : 1);
        if (buf == NULL || ck_pread_full(c->fd, buf, len, 0) < 0) {
            ck_free(buf);
            return rc;
        }
    } else {
        return rc;
    }
    ck_pickle_scan_globals(buf, len, danger_cb, &d);
    ck_free(buf);
    if (d.n == 0)
        return rc;
    return ck_err_replace(err, CK_EUNSAFE, "refused: pickle names %s (and: %s)",
                          d.names, err->msg);
}

