/*
 * watch_table.c -- the daemon's file table and names.  See watch_int.h.
 *
 * The table holds every wanted file seen in incoming, by its path under
 * incoming, in a hash table of chained buckets (grown by doubling, always a
 * power of two).  An entry stays while a probe or a job holds it (busy).
 * Names: which files are wanted (include/exclude), where an input's output
 * goes (output_name), and the STATUS= line.
 */
#define _GNU_SOURCE
#include "watch_int.h"

#include "fsutil.h"
#include "log.h"
#include "record.h"
#include "watchconf.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the file table ----------------------------------------------------- */

static uint64_t hash_str(const char *s)
{
    return ck_hash_fnv1a(s, strlen(s));
}

file_t *watch_file_find(daemon_t *d, const char *rel)
{
    if (d->nbuckets == 0)
        return NULL;
    for (file_t *f = d->buckets[hash_str(rel) & (d->nbuckets - 1)]; f != NULL;
         f = f->hnext)
        if (strcmp(f->rel, rel) == 0)
            return f;
    return NULL;
}

static int table_grow(daemon_t *d)
{
    size_t n = d->nbuckets ? d->nbuckets * 2 : 256;
    file_t **b = ck_calloc(n, sizeof(*b));

    if (b == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < d->nbuckets; i++) {
        for (file_t *f = d->buckets[i], *next; f != NULL; f = next) {
            size_t k = hash_str(f->rel) & (n - 1);

            next = f->hnext;
            f->hnext = b[k];
            b[k] = f;
        }
    }
    ck_free(d->buckets);
    d->buckets = b;
    d->nbuckets = n;
    return 0;
}

/* Room in the due heap for every file of the table (made before the file
 * is): putting a file in it never fails. */
static int heap_grow(daemon_t *d)
{
    size_t cap = d->heapcap ? d->heapcap * 2 : 256;
    file_t **h = ck_realloc(d->heap, cap * sizeof(*h));

    if (h == NULL)
        return -ENOMEM;
    d->heap = h;
    d->heapcap = cap;
    return 0;
}

file_t *watch_file_get(daemon_t *d, const char *rel)
{
    file_t *f = watch_file_find(d, rel);
    size_t k;

    if (f != NULL)
        return f;
    if (d->nfiles >= d->nbuckets && table_grow(d) < 0)
        return NULL;
    if (d->nfiles >= d->heapcap && heap_grow(d) < 0)
        return NULL;
    f = ck_calloc(1, sizeof(*f));
    if (f == NULL || (f->rel = ck_strdup(rel)) == NULL) {
        ck_free(f);
        return NULL;
    }
    f->state = F_OTHER;
    f->born = d->scangen;
    k = hash_str(rel) & (d->nbuckets - 1);
    f->hnext = d->buckets[k];
    d->buckets[k] = f;
    d->nfiles++;
    return f;
}

/* ---- the due heap: pending files by next_check ------------------------ */

static void heap_set(daemon_t *d, size_t i, file_t *f)
{
    d->heap[i] = f;
    f->hidx = i + 1;
}

static void heap_up(daemon_t *d, size_t i)
{
    file_t *f = d->heap[i];

    while (i > 0 && d->heap[(i - 1) / 2]->next_check > f->next_check) {
        heap_set(d, i, d->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(d, i, f);
}

static void heap_down(daemon_t *d, size_t i)
{
    file_t *f = d->heap[i];

    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= d->nheap)
            break;
        if (c + 1 < d->nheap &&
            d->heap[c + 1]->next_check < d->heap[c]->next_check)
            c++;
        if (d->heap[c]->next_check >= f->next_check)
            break;
        heap_set(d, i, d->heap[c]);
        i = c;
    }
    heap_set(d, i, f);
}

static void heap_remove(daemon_t *d, file_t *f)
{
    size_t i;
    file_t *last;

    if (f->hidx == 0)
        return;
    i = f->hidx - 1;
    f->hidx = 0;
    last = d->heap[--d->nheap];
    if (i == d->nheap)
        return;
    heap_set(d, i, last);
    heap_up(d, i);
    heap_down(d, last->hidx - 1);
}

void watch_due(daemon_t *d, file_t *f, uint64_t when)
{
    f->next_check = when;
    if (f->hidx == 0)   /* room made with the file (watch_file_get) */
        heap_set(d, d->nheap++, f);
    heap_up(d, f->hidx - 1);
    heap_down(d, f->hidx - 1);
    if (d->armed_at == 0 || when < d->armed_at)
        watch_arm(d);
}

file_t *watch_due_pop(daemon_t *d)
{
    file_t *f = d->heap[0];

    heap_remove(d, f);
    return f;
}

void watch_file_drop(daemon_t *d, file_t *f)
{
    file_t **p = &d->buckets[hash_str(f->rel) & (d->nbuckets - 1)];

    heap_remove(d, f);
    while (*p != f)
        p = &(*p)->hnext;
    *p = f->hnext;
    if (f->state == F_PENDING)
        d->npending--;
    d->nfiles--;
    ck_free(f->failrec);
    ck_free(f->rel);
    ck_free(f);
}

/* Held by a probe, a job or a move: the file table entry must stay. */
int watch_busy(const file_t *f)
{
    return f->state == F_PROBING || f->state == F_QUEUED ||
           f->state == F_RUNNING || f->state == F_MOVING;
}

void watch_set_pending(daemon_t *d, file_t *f, uint64_t now)
{
    if (watch_busy(f)) {
        f->dirty = 1;
        return;
    }
    if (f->state != F_PENDING) {
        d->npending++;
        f->last_change = now;
    }
    f->state = F_PENDING;
    f->last_event = now;
    f->moved = 0;
    watch_due(d, f, now + d->w->settle_ms);
}

void watch_leave_pending(daemon_t *d, file_t *f, int state)
{
    if (f->state == F_PENDING)
        d->npending--;
    heap_remove(d, f);
    f->state = state;
}

/* ---- names -------------------------------------------------------------- */

int watch_name_wanted(const ck_watch_conf_t *w, const char *name)
{
    int in = 0;

    for (size_t i = 0; i < w->exclude.n; i++)
        if (fnmatch(w->exclude.v[i], name, 0) == 0)
            return 0;
    for (size_t i = 0; i < w->include.n && !in; i++)
        in = fnmatch(w->include.v[i], name, 0) == 0;
    return in;
}

/* The output of the input at rel: its folder under output, its name from
 * output_name. */
char *watch_out_path(const ck_watch_conf_t *w, const char *rel,
                     const ck_watch_name_vars_t *v)
{
    char name[1024], *reldir, *odir = NULL, *out = NULL;

    if (ck_watch_output_name_v(w->output_name, rel, v, name,
                               sizeof(name)) < 0) {
        /* too long, or a dot first for this input: its own name, never one
         * shared with other inputs */
        const char *base = ck_path_base(rel);

        snprintf(name, sizeof(name), "%s%s", base[0] == '.' ? "_" : "", base);
        if (v != NULL)
            ck_log(CK_LOG_WARNING, "%s: output_name gives no plain file name "
                   "for it; writing %s", rel, name);
    }
    if (w->out_ext != NULL) {
        /* the extension follows the format: model.th -> model.safetensors */
        char *dot = (char *)ck_path_ext(name);

        if (strcmp(dot, w->out_ext) != 0 &&
            (size_t)(dot - name) + strlen(w->out_ext) < sizeof(name))
            strcpy(dot, w->out_ext);
    }
    reldir = ck_strdup(rel);
    if (reldir != NULL) {
        char *slash = strrchr(reldir, '/');

        if (slash != NULL) {
            *slash = '\0';
            odir = ck_path_join(w->output, reldir);
        } else {
            odir = ck_strdup(w->output);
        }
    }
    if (odir != NULL)
        out = ck_path_join(odir, name);
    ck_free(reldir);
    ck_free(odir);
    return out;
}

/*
 * f, not known yet, has a name that is not UTF-8: take what the audit log
 * says of its reading, when the identity (inode, size, mtime) is the same.
 */
void watch_adopt(daemon_t *d, file_t *f, const ident_t *id)
{
    char *alias;
    file_t *a;

    if (ck_utf8_valid(f->rel, strlen(f->rel)))
        return;     /* its reading is itself */
    alias = ck_record_reading(f->rel);
    a = alias != NULL ? watch_file_find(d, alias) : NULL;

    if (a != NULL && (a->state == F_DONE || a->state == F_FAILED) &&
        ident_eq(&a->done, id)) {
        f->state = a->state;
        f->done = a->done;
    }
    ck_free(alias);
}

/* STATUS=, when it says something new (the tick calls it 20 times a
 * second while a file is waiting). */
void watch_status(daemon_t *d)
{
    char s[sizeof(d->status)];

    snprintf(s, sizeof(s), "%s: %zu waiting, %zu queued, %zu running, %llu "
             "done, %llu failed", d->stopping ? "stopping" : "watching",
             d->npending, d->nqueued, d->nrunning,
             (unsigned long long)d->nok, (unsigned long long)d->nfailed);
    if (strcmp(s, d->status) == 0)
        return;
    strcpy(d->status, s);
    ck_notify("STATUS=%s", s);
}

int watch_open_claimed(const char *path, const ident_t *id)
{
    int fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    ident_t now;

    if (fd < 0)
        return -1;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
        (ident_of(&st, &now), !ident_eq(&now, id))) {
        close(fd);
        return -1;
    }
    return fd;
}
