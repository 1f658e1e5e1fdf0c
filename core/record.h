/*
 * record.h -- the JSON record of a job: one object per job, written by
 * `ckprep run` to stdout and by the daemon to the audit log (which puts
 * "seq" and "host" first) and to failed/NAME.error.json.
 *
 * Its key names are defined once, below; the builder writes through them
 * and the parser reads through them, so a renamed key is renamed for both.
 * The builder writes with json.c (a byte of a name that is not UTF-8 is
 * written as the character of the same number); the parser reads with
 * jansson.
 */
#ifndef CK_RECORD_H
#define CK_RECORD_H

#include "json.h"

/* Keys, in the order the builder writes them.  (Nested objects reuse
 * PATH, SIZE, DIGEST and DIGEST_KIND.) */
#define CK_REC_SEQ "seq"                  /* audit log only: 1, 2, ... */
#define CK_REC_HOST "host"                /* audit log only */
#define CK_REC_TS "ts"                    /* RFC 3339, UTC, milliseconds */
#define CK_REC_VERSION "version"          /* of ckprep */
#define CK_REC_INPUT "input"              /* { path size digest ... } */
#define CK_REC_PATH "path"
#define CK_REC_SIZE "size"
#define CK_REC_DIGEST "digest"
#define CK_REC_DIGEST_KIND "digest_kind"
#define CK_REC_INODE "inode"              /* input, when it was opened */
#define CK_REC_MTIME_NS "mtime_ns"        /* input, when it was opened */
#define CK_REC_FORMAT "format"            /* input: "zip" or "legacy" */
#define CK_REC_OUTPUT "output"            /* { path size digest ... } */
#define CK_REC_STORAGES "storages"        /* output */
#define CK_REC_STORAGE_BYTES "storage_bytes" /* output */
#define CK_REC_REPLACED "replaced"        /* output: { path size mtime_ns }
                                             of a file it was written over */
#define CK_REC_STATUS "status"            /* "ok" or "failed" */
#define CK_REC_ERROR "error"              /* { code message }, when failed */
#define CK_REC_CODE "code"                /* ck_errname() */
#define CK_REC_MESSAGE "message"
#define CK_REC_DRY_RUN "dry_run"          /* true, when it was one */
#define CK_REC_DURATION_MS "duration_ms"
#define CK_REC_CONFIG "config"            /* { path digest } */
#define CK_REC_PLUGINS "plugins"          /* [ one object per stage ] */

#define CK_REC_DIGEST_FINGERPRINT "fingerprint-sha256"

/*
 * What a record says.  Strings may be NULL (the key is left out, or was
 * absent); a key of a group that is not there keeps its zero.
 */
typedef struct {
    uint64_t seq;              /* read back only */
    const char *host;          /* read back only */
    const char *ts, *version;
    struct {
        const char *path, *digest, *format;
        uint64_t size, inode;
        int64_t mtime_ns;
        int opened;            /* inode, mtime_ns and format are there */
    } in;
    struct {
        const char *path, *digest;
        uint64_t size, storages, storage_bytes;
        const char *replaced;     /* the path of what it replaced, or NULL */
        uint64_t replaced_size;
        int64_t replaced_mtime_ns;
    } out;
    int wrote;                 /* the output group is there */
    const char *status;        /* "ok" or "failed" */
    const char *error_code;    /* ck_errname(), when failed */
    const char *error_message;
    int dry_run;
    int64_t duration_ms;
    const char *config_path, *config_digest;
    const char *plugins;       /* JSON text of the plugins array */
    size_t plugins_len;
    void *doc;                 /* read back: what the strings point into */
} ck_record_t;

/*
 * Append the record r as one JSON object to rec.  Out of memory shows as
 * ck_json_text(rec) == NULL.
 */
void ck_record_build(ck_json_t *rec, const ck_record_t *r);

/*
 * Put in b (NUL-terminated) the short record of a job whose record could
 * not be built for want of memory: its input path, status failed, error
 * nomem.  b->oom tells when even that failed.
 */
void ck_record_fallback(ck_buf_t *b, const char *in_path);

/*
 * Read the record in the n bytes at text into r.  Returns 0, or CK_EFORMAT
 * when it is not a JSON object, or CK_ENOMEM.  r's strings live until
 * ck_record_release(r); plugins is compact JSON text.
 */
int ck_record_parse(const char *text, size_t n, ck_record_t *r);
void ck_record_release(ck_record_t *r);

/*
 * s as a record read back shows it: written by json.c and read by jansson,
 * so a byte that is not UTF-8 comes back as the character of the same
 * number ("\xff" as "\xc3\xbf"); a UTF-8 s comes back as itself.  A new
 * ck_malloc string, or NULL when out of memory.
 */
char *ck_record_reading(const char *s);

/*
 * The plan of a record (its text, n bytes): one line per change, for a
 * person ("  key_remap: best_state/model: renamed emb.0.w -> e.0.w"), in
 * the chain's order and each plugin's, appended to out.  0, CK_EFORMAT,
 * CK_ENOMEM.
 */
int ck_record_plan(const char *text, size_t n, ck_buf_t *out);

/*
 * The audit log line at text (n bytes) as the job wrote it: without the
 * log's seq and host (what NAME.error.json holds), compact JSON in a new
 * ck_malloc string; NULL when it is not an object or out of memory.
 */
char *ck_record_unlogged(const char *text, size_t n);

/*
 * Three fields of the record at text (n bytes), read without parsing the
 * rest: input.path, status and error.code, each pointing into text (NULL
 * when absent), unescaped.  For the audit log's read-back, which needs
 * only these of a million lines.  Returns 0, or CK_EFORMAT when the line
 * is not a plain JSON object or one of them holds an escape or bytes that
 * are not UTF-8: ck_record_parse is then the one to read it.  A line
 * ck_record_parse refuses may still skim (it checks only what it reads).
 */
typedef struct {
    const char *path, *status, *error_code;
    size_t path_len, status_len, error_code_len;
} ck_record_skim_t;

int ck_record_skim(const char *text, size_t n, ck_record_skim_t *r);

#endif
