/*
 * watch_status.c -- `ckprep status`: what the daemons of a configuration
 * are doing, read from the outside.  See watch.h.
 *
 * It reads, never writes nor locks: the audit log (every complete line;
 * the last N done and failed, and the identity each input was last done
 * at -- each line skimmed for its input and status as the daemon's start
 * does, and only the lines shown or asked about parsed in full), the
 * claims folder (each claim's holder and state, queued or
 * running) and incoming (wanted files neither done at their identity nor
 * claimed are waiting).  Names are printed escaped as JSON strings when
 * they hold control characters or bytes that are not UTF-8.
 */
#define _GNU_SOURCE
#include "watch.h"
#include "watch_int.h"

#include "audit.h"
#include "fsutil.h"
#include "record.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *path;             /* of the input, as the record has it */
    off_t off;              /* its latest record: the line at off */
    size_t len;
    int known;              /* id read from that line (1), unreadable (-1) */
    ident_t id;
} doneid_t;

typedef struct {
    uint64_t seq;
    char *ts, *in, *out, *code, *msg;
} last_t;

typedef struct {
    off_t *off;             /* a ring of the last n lines: where they are */
    size_t *len;
    last_t *v;              /* and, once read in full, what they say */
    size_t n, cap, total;
} ring_t;

typedef struct {
    char *rel, *host, *state;
    int pid;
} item_t;

typedef struct {
    item_t *v;
    size_t n;
} items_t;

typedef struct {
    const ck_watch_conf_t *w;
    char *incoming, *claims;
    doneid_t *done;         /* one per input path, at its latest record */
    size_t ndone, capdone;
    ck_strmap_t byname;     /* path -> index in done */
    ck_arena_t arena;       /* the paths and the map */
    ck_audit_t log;         /* read (ck_audit_read) */
    int fd;                 /* the audit log, for its lines read again */
    char *line;             /* one of them */
    ring_t ok, failed;
    items_t waiting, queued, running;
} status_t;

static char *dup0(const char *s)
{
    return ck_strdup(s != NULL ? s : "");
}

static void last_free(last_t *l)
{
    ck_free(l->ts);
    ck_free(l->in);
    ck_free(l->out);
    ck_free(l->code);
    ck_free(l->msg);
}

static void ring_put(ring_t *r, off_t off, size_t len)
{
    r->total++;
    if (r->cap == 0)
        return;
    r->off[r->n % r->cap] = off;
    r->len[r->n % r->cap] = len;
    r->n++;
}

/* The line at off (len bytes, without its newline) read again and parsed
 * in full into r: 0, or < 0 when it cannot be read or parsed. */
static int parse_at(status_t *s, off_t off, size_t len, ck_record_t *r)
{
    char *b = ck_realloc(s->line, len + 1);

    if (b == NULL)
        return CK_ENOMEM;
    s->line = b;
    if (pread(s->fd, b, len, off) != (ssize_t)len)
        return -EIO;
    b[len] = '\0';
    return ck_record_parse(b, len, r);
}

/* A complete line: its input's latest record, and the ring it counts in. */
static int line_cb(void *ud, const char *line, size_t len, uint64_t at)
{
    status_t *s = ud;
    off_t off = (off_t)at;
    ck_record_skim_t k;
    ck_record_t r;
    char *path = NULL;
    const char *st;
    size_t i, stlen;
    int parsed = 0;

    if (ck_record_skim(line, len, &k) == 0 && k.path != NULL &&
        k.status != NULL) {
        path = ck_arena_strndup(&s->arena, k.path, k.path_len);
        st = k.status;
        stlen = k.status_len;
    } else {
        /* escapes or another writer's layout: jansson reads it */
        if (ck_record_parse(line, len, &r) < 0)
            return 0;
        parsed = 1;
        if (r.status == NULL || r.in.path == NULL)
            goto out;
        path = ck_arena_strdup(&s->arena, r.in.path);
        st = r.status;
        stlen = strlen(st);
    }
    if (path == NULL)
        goto out;
    ring_put(stlen == 2 && memcmp(st, "ok", 2) == 0 ? &s->ok : &s->failed,
             off, len);
    i = ck_strmap_get(&s->byname, path);
    if (i == SIZE_MAX) {
        if (s->ndone == s->capdone) {
            size_t cap = s->capdone ? s->capdone * 2 : 256;
            doneid_t *v = ck_realloc(s->done, cap * sizeof(*v));

            if (v == NULL)
                goto out;
            s->done = v;
            s->capdone = cap;
        }
        i = s->ndone;
        s->done[i].path = path;
        if (ck_strmap_add(&s->byname, &s->arena, path, i) < 0)
            goto out;
        s->ndone++;
    }
    /* a later record of the same input replaces what an earlier said */
    s->done[i].off = off;
    s->done[i].len = len;
    s->done[i].known = 0;
out:
    if (parsed)
        ck_record_release(&r);
    return 0;
}

/* The last lines of each ring read in full, once the log is read. */
static void ring_read(status_t *s, ring_t *r)
{
    size_t first = r->n > r->cap ? r->n - r->cap : 0;

    for (size_t i = first; i < r->n; i++) {
        last_t *l = &r->v[i % r->cap];
        ck_record_t rec;

        if (parse_at(s, r->off[i % r->cap], r->len[i % r->cap], &rec) < 0) {
            memset(l, 0, sizeof(*l));
            l->in = dup0("(the line could not be read again)");
            continue;
        }
        l->seq = rec.seq;
        l->ts = dup0(rec.ts);
        l->in = dup0(rec.in.path);
        l->out = dup0(rec.out.path);
        l->code = dup0(rec.error_code);
        l->msg = dup0(rec.error_message);
        ck_record_release(&rec);
    }
}

/* Was path last done or failed at identity id?  Its latest record is
 * read in full the first time it is asked about. */
static int done_at(status_t *s, const char *path, const ident_t *id)
{
    size_t i = ck_strmap_get(&s->byname, path);
    doneid_t *d;

    if (i == SIZE_MAX)
        return 0;
    d = &s->done[i];
    if (d->known == 0) {
        ck_record_t r;

        d->known = -1;
        if (parse_at(s, d->off, d->len, &r) == 0) {
            d->id.ino = r.in.inode;
            d->id.size = r.in.size;
            d->id.mtime_ns = r.in.mtime_ns;
            d->known = 1;
            ck_record_release(&r);
        }
    }
    return d->known == 1 && ident_eq(&d->id, id);
}

static void item_add(items_t *it, const char *rel, const char *host,
                     const char *state, int pid)
{
    item_t *v = ck_realloc(it->v, (it->n + 1) * sizeof(*v));

    if (v == NULL)
        return;
    it->v = v;
    v[it->n].rel = ck_strdup(rel);
    v[it->n].host = ck_strdup(host);
    v[it->n].state = ck_strdup(state);
    v[it->n].pid = pid;
    if (v[it->n].rel != NULL)
        it->n++;
}

/* A wanted file in incoming: claimed (queued, running), done or waiting. */
static void classify(status_t *s, const char *rel, const struct stat *st)
{
    char *path = ck_path_join(s->incoming, rel);
    char *cp, text[512], host[300] = "", state[32] = "";
    int pid = 0, fd;
    ssize_t n;
    ident_t id;

    ident_of(st, &id);
    cp = watch_claim_file(s->claims, rel, &id);
    fd = cp ? open(cp, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) : -1;
    if (fd >= 0) {
        n = read(fd, text, sizeof(text) - 1);
        close(fd);
        text[n > 0 ? n : 0] = '\0';
        sscanf(text, "host=%299s pid=%d state=%31s", host, &pid, state);
    }
    if (strcmp(state, "running") == 0)
        item_add(&s->running, rel, host, state, pid);
    else if (strcmp(state, "queued") == 0)
        item_add(&s->queued, rel, host, state, pid);
    else if (strcmp(state, "done") != 0 && path != NULL &&
             !done_at(s, path, &id))
        item_add(&s->waiting, rel, "", "", 0);
    ck_free(cp);
    ck_free(path);
}

static void scan(status_t *s, const char *rel, int depth)
{
    char *path = ck_path_join(s->incoming, rel);
    DIR *dir = path ? opendir(path) : NULL;
    struct dirent *e;

    while (dir != NULL && (e = readdir(dir)) != NULL) {
        struct stat st;
        char *r;

        if (e->d_name[0] == '.')
            continue;
        r = ck_path_join(rel, e->d_name);
        if (r != NULL &&
            fstatat(dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            if (S_ISDIR(st.st_mode) && s->w->recursive && depth < MAX_DEPTH)
                scan(s, r, depth + 1);
            else if (S_ISREG(st.st_mode) && watch_name_wanted(s->w, e->d_name))
                classify(s, r, &st);
        }
        ck_free(r);
    }
    if (dir != NULL)
        closedir(dir);
    ck_free(path);
}

/* A name for a terminal: as it is, or as a JSON string when it needs
 * escaping. */
static void put_name(FILE *out, const char *s)
{
    ck_buf_t b = { 0 };

    ck_json_quote(&b, s, strlen(s));
    if (!b.oom && b.len == strlen(s) + 2 && memcmp(b.data + 1, s, b.len - 2) == 0)
        fputs(s, out);
    else if (!b.oom)
        fwrite(b.data, 1, b.len, out);
    ck_buf_release(&b);
}

static void json_items(ck_json_t *j, const char *key, const items_t *it)
{
    ck_json_key(j, key);
    ck_json_arr(j);
    for (size_t i = 0; i < it->n; i++) {
        ck_json_obj(j);
        ck_json_key(j, "path");
        ck_json_str(j, it->v[i].rel);
        if (it->v[i].host[0] != '\0') {
            ck_json_key(j, "host");
            ck_json_str(j, it->v[i].host);
            ck_json_key(j, "pid");
            ck_json_int(j, it->v[i].pid);
        }
        ck_json_end(j);
    }
    ck_json_end(j);
}

static void json_ring(ck_json_t *j, const char *key, const ring_t *r, int ok)
{
    size_t first = r->n > r->cap ? r->n - r->cap : 0;

    ck_json_key(j, key);
    ck_json_obj(j);
    ck_json_key(j, "total");
    ck_json_u64(j, r->total);
    ck_json_key(j, "last");
    ck_json_arr(j);
    for (size_t i = first; i < r->n; i++) {
        const last_t *l = &r->v[i % r->cap];

        ck_json_obj(j);
        ck_json_key(j, CK_REC_SEQ);
        ck_json_u64(j, l->seq);
        ck_json_key(j, CK_REC_TS);
        ck_json_str(j, l->ts);
        ck_json_key(j, CK_REC_INPUT);
        ck_json_str(j, l->in);
        ck_json_key(j, ok ? CK_REC_OUTPUT : CK_REC_ERROR);
        if (ok) {
            ck_json_str(j, l->out);
        } else {
            ck_json_obj(j);
            ck_json_key(j, CK_REC_CODE);
            ck_json_str(j, l->code);
            ck_json_key(j, CK_REC_MESSAGE);
            ck_json_str(j, l->msg);
            ck_json_end(j);
        }
        ck_json_end(j);
    }
    ck_json_end(j);
    ck_json_end(j);
}

static void text_items(FILE *out, const char *what, const items_t *it)
{
    fprintf(out, "%s: %zu\n", what, it->n);
    for (size_t i = 0; i < it->n; i++) {
        fputs("  ", out);
        put_name(out, it->v[i].rel);
        if (it->v[i].host[0] != '\0') {
            fputs(" (", out);
            put_name(out, it->v[i].host);
            fprintf(out, " pid %d)", it->v[i].pid);
        }
        fputc('\n', out);
    }
}

static void text_ring(FILE *out, const char *what, const ring_t *r, int ok)
{
    size_t first = r->n > r->cap ? r->n - r->cap : 0;

    fprintf(out, "%s: %zu (the last %zu)\n", what, r->total, r->n - first);
    for (size_t i = first; i < r->n; i++) {
        const last_t *l = &r->v[i % r->cap];

        fprintf(out, "  #%llu %s ", (unsigned long long)l->seq, l->ts);
        put_name(out, l->in);
        fputs(ok ? " -> " : ": ", out);
        if (ok) {
            put_name(out, l->out);
        } else {
            put_name(out, l->code);
            fputs(": ", out);
            put_name(out, l->msg);
        }
        fputc('\n', out);
    }
}

static void items_free(items_t *it)
{
    for (size_t i = 0; i < it->n; i++) {
        ck_free(it->v[i].rel);
        ck_free(it->v[i].host);
        ck_free(it->v[i].state);
    }
    ck_free(it->v);
}

static void ring_free(ring_t *r)
{
    for (size_t i = 0; r->v != NULL && i < r->n && i < r->cap; i++)
        last_free(&r->v[i]);
    ck_free(r->v);
    ck_free(r->off);
    ck_free(r->len);
}

int ck_watch_status(const ck_conf_t *c, size_t last, int json, FILE *out)
{
    status_t s;
    ck_err_t err = { 0 };
    int rc = 0;

    memset(&s, 0, sizeof(s));
    s.w = &c->watch;
    s.incoming = realpath(s.w->incoming, NULL);
    if (s.incoming == NULL) {
        fprintf(stderr, "ckprep status: %s: %s\n", s.w->incoming,
                strerror(errno));
        return 1;
    }
    s.claims = ck_path_join(s.incoming, CLAIMS);
    s.ok.cap = s.failed.cap = last;
    s.fd = -1;
    s.ok.v = ck_calloc(last + 1, sizeof(last_t));
    s.failed.v = ck_calloc(last + 1, sizeof(last_t));
    s.ok.off = ck_calloc(last + 1, sizeof(off_t));
    s.failed.off = ck_calloc(last + 1, sizeof(off_t));
    s.ok.len = ck_calloc(last + 1, sizeof(size_t));
    s.failed.len = ck_calloc(last + 1, sizeof(size_t));
    if (s.claims == NULL || s.ok.v == NULL || s.failed.v == NULL ||
        s.ok.off == NULL || s.failed.off == NULL || s.ok.len == NULL ||
        s.failed.len == NULL) {
        rc = 1;
        goto out;
    }
    /* a log not there yet: nothing done */
    s.log.path = (char *)s.w->audit_log;  /* read only */
    s.fd = open(s.w->audit_log, O_RDONLY | O_CLOEXEC);
    if (s.fd >= 0)
        ck_audit_read(&s.log, line_cb, &s, &err);
    ring_read(&s, &s.ok);
    ring_read(&s, &s.failed);
    scan(&s, "", 0);
    if (json) {
        ck_json_t j = { 0 };

        ck_json_obj(&j);
        ck_json_key(&j, "incoming");
        ck_json_str(&j, s.incoming);
        json_items(&j, "waiting", &s.waiting);
        json_items(&j, "queued", &s.queued);
        json_items(&j, "running", &s.running);
        json_ring(&j, "done", &s.ok, 1);
        json_ring(&j, "failed", &s.failed, 0);
        ck_json_end(&j);
        if (ck_json_text(&j) != NULL)
            fprintf(out, "%s\n", ck_json_text(&j));
        else
            rc = 1;
        ck_json_release(&j);
    } else {
        fputs("incoming: ", out);
        put_name(out, s.incoming);
        fputc('\n', out);
        text_items(out, "waiting", &s.waiting);
        text_items(out, "queued", &s.queued);
        text_items(out, "running", &s.running);
        text_ring(out, "done", &s.ok, 1);
        text_ring(out, "failed", &s.failed, 0);
    }
out:
    if (s.fd >= 0)
        close(s.fd);
    ck_free(s.line);
    ck_free(s.done);
    ck_arena_release(&s.arena);
    ring_free(&s.ok);
    ring_free(&s.failed);
    items_free(&s.waiting);
    items_free(&s.queued);
    items_free(&s.running);
    ck_free(s.claims);
    free(s.incoming);
    return rc;
}
