/*
 * json.h -- a streaming JSON writer for records and reports.
 *
 * Strings are escaped byte by byte: valid UTF-8 passes through, control
 * characters become \uXXXX, and bytes that are not UTF-8 become \u00XX of
 * their latin-1 reading, so hostile file names still give valid JSON.
 * Commas are placed by the writer; callers only open, write and close.
 */
#ifndef CK_JSON_H
#define CK_JSON_H

#include "ck.h"

#define CK_JSON_MAX_DEPTH 64 /* deeper nesting is fine: it allocates */

typedef struct ck_json {
    ck_buf_t b;
    ck_buf_t levels; /* per open level: '}' or ']', | 0x80 while empty */
    int depth;
    int after_key;   /* the next value follows a key */
} ck_json_t;

void ck_json_obj(ck_json_t *j);   /* { */
void ck_json_arr(ck_json_t *j);   /* [ */
void ck_json_end(ck_json_t *j);   /* } or ] */
void ck_json_key(ck_json_t *j, const char *k);
void ck_json_str(ck_json_t *j, const char *s);
void ck_json_strn(ck_json_t *j, const char *s, size_t n);
void ck_json_int(ck_json_t *j, int64_t v);
void ck_json_u64(ck_json_t *j, uint64_t v);
void ck_json_double(ck_json_t *j, double v);
void ck_json_bool(ck_json_t *j, int v);
void ck_json_null(ck_json_t *j);
/* A value already in JSON text (another writer's output). */
void ck_json_raw(ck_json_t *j, const char *text, size_t n);

/* Escape s into b as a quoted JSON string. */
void ck_json_quote(ck_buf_t *b, const char *s, size_t n);

/* The text so far, NUL-terminated (NULL when an allocation failed). */
const char *ck_json_text(ck_json_t *j);
void ck_json_release(ck_json_t *j);

#endif
