/*
 * audit.h -- the audit log: JSON Lines, one record per job, appended with
 * one write(2) on an O_APPEND descriptor and fdatasync'd before the job is
 * considered done.  Each line starts with "seq" (one more than the last in
 * the file) and "host".  Opening reads the log back (jansson parses the
 * lines) so the daemon knows which inputs are done, and cuts away a torn
 * last line left by a power cut.
 */
#ifndef CK_AUDIT_H
#define CK_AUDIT_H

#include "ck.h"

typedef struct {
    char *path;
    int fd;
    uint64_t seq;        /* of the last record in the file */
    char host[256];
    uint64_t torn_bytes; /* cut away by the last open */
    uint64_t bad_lines;  /* complete lines the callback refused */
} ck_audit_t;

/* One complete line of the log (n bytes, without its newline, at offset
 * at), read back at open; returns < 0 when it does not parse (counted in
 * bad_lines), or CK_ECANCELED to stop the open (it then fails with
 * CK_ECANCELED). */
typedef int (*ck_audit_cb)(void *ud, const char *line, size_t n,
                           uint64_t at);

/*
 * Open or create (mode 0640) the log at path, cut a torn last line, and
 * call cb (may be NULL) for every record.  Returns 0 or an error with the
 * path in err.  Release with ck_audit_close.  The log is read without its
 * lock (other writers append whole lines); the lock is taken only for the
 * lines appended meanwhile and the torn-line cut, so a long log does not
 * hold other daemons' appends.  Thread-safe on its own ck_audit_t.
 */
int ck_audit_open(ck_audit_t *a, const char *path, ck_audit_cb cb, void *ud,
                  ck_err_t *err);
/*
 * The same, but a log of 8 MiB or more is read in two halves at once:
 * the lines of the second (from the first newline past the middle) go to
 * cb with ud2, on a second thread, while this one gives the first's to cb
 * with ud.  cb must take the two at once; the caller puts what ud2 got
 * after what ud got.  ud2 NULL: ck_audit_open.
 */
int ck_audit_open2(ck_audit_t *a, const char *path, ck_audit_cb cb, void *ud,
                   void *ud2, ck_err_t *err);

/*
 * Read the log at a->path (a otherwise zeroed) as ck_audit_open reads it
 * back, but only reading: no lock, no cut, nothing created.  0, or an
 * error with the path in err (a log that is not there is one).
 */
int ck_audit_read(ck_audit_t *a, ck_audit_cb cb, void *ud, ck_err_t *err);

/*
 * Append rec, one JSON object's text, with "seq" and "host" added as its
 * first keys, and sync it.  On failure nothing partial stays in the file
 * (as far as the file system lets us undo it).
 */
int ck_audit_append(ck_audit_t *a, const char *rec, ck_err_t *err);

/*
 * Append the n records of recs as ck_audit_append does each, numbered in
 * order, in one write(2) and one fdatasync: when it returns 0 every one of
 * them is durable; on failure none was added (as above).  Jobs that end
 * together pay for one sync.
 */
int ck_audit_append_many(ck_audit_t *a, const char *const *recs, size_t n,
                         ck_err_t *err);

/* Close and open again the same path (logrotate moved the old one). */
int ck_audit_reopen(ck_audit_t *a, ck_err_t *err);
void ck_audit_close(ck_audit_t *a);

#endif
