/*
 * fsutil.c -- small file-system helpers.  See fsutil.h.
 *
 * Stateless and thread-safe: the daemon calls these from the loop thread
 * and jobs from the thread pool.
 */
#include "fsutil.h"

#include "zip.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *ck_path_base(const char *path)
{
    const char *slash = strrchr(path, '/');

    return slash != NULL ? slash + 1 : path;
}

const char *ck_path_ext(const char *base)
{
    const char *dot = strrchr(base, '.');

    return dot == NULL || dot == base ? base + strlen(base) : dot;
}

char *ck_path_join(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *s;

    if (nb == 0)
        return ck_strdup(a);
    if (na == 0)
        return ck_strdup(b);
    s = ck_malloc(na + nb + 2);
    if (s == NULL)
        return NULL;
    memcpy(s, a, na);
    s[na] = '/';
    memcpy(s + na + 1, b, nb + 1);
    return s;
}

int ck_mkdirs(const char *path, mode_t mode)
{
    char *p = ck_strdup(path);
    int rc = 0;

    if (p == NULL)
        return -ENOMEM;
    for (char *s = p + 1; rc == 0; s++) {
        char c = *s;

        if (c != '/' && c != '\0')
            continue;
        *s = '\0';
        if (mkdir(p, mode) < 0 && errno != EEXIST)
            rc = -errno;
        *s = c;
        if (c == '\0')
            break;
    }
    ck_free(p);
    return rc;
}

/* The folder path is in, in a new string: "." or "/" for the odd cases. */
static char *dir_of(const char *path)
{
    char *d = ck_malloc(strlen(path) + 2), *slash;

    if (d == NULL)
        return NULL;
    strcpy(d, path);
    slash = strrchr(d, '/');
    if (slash == NULL)
        strcpy(d, ".");
    else if (slash == d)
        d[1] = '\0';
    else
        *slash = '\0';
    return d;
}

int ck_mkdirs_parent(const char *path, mode_t mode)
{
    char *dir = dir_of(path);
    int rc;

    if (dir == NULL)
        return -ENOMEM;
    rc = ck_mkdirs(dir, mode);
    ck_free(dir);
    return rc;
}

int ck_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

    /* EINVAL: the file system cannot sync a folder, nothing to wait for */
    if (fd < 0 || (fsync(fd) < 0 && errno != EINVAL))
        rc = -errno;
    if (fd >= 0)
        close(fd);
    return rc;
}

int ck_fsync_dir_of(const char *path)
{
    char *d = dir_of(path);
    int rc;

    if (d == NULL)
        return -ENOMEM;
    rc = ck_fsync_dir(d);
    ck_free(d);
    return rc;
}

typedef struct {
    const char *const *paths;
    int *rc;
    size_t n, from, step;
} fsync_part_t;

static int fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), rc = 0;

    if (fd < 0)
        return -errno;
    if (fsync(fd) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

static void *fsync_part(void *arg)
{
    fsync_part_t *p = arg;

    for (size_t i = p->from; i < p->n; i += p->step)
        p->rc[i] = fsync_path(p->paths[i]);
    return NULL;
}

void ck_fsync_many(const char *const *paths, int *rc, size_t n)
{
    enum { MAXT = 16 };
    pthread_t t[MAXT];
    fsync_part_t part[MAXT];
    size_t nt = n < MAXT ? n : MAXT, started = 0;

    for (size_t k = 0; k < nt; k++) {
        part[k] = (fsync_part_t){ paths, rc, n, k, nt };
        /* this thread takes the first part, and any that cannot start */
        if (k > 0 && pthread_create(&t[k], NULL, fsync_part, &part[k]) == 0)
            started |= (size_t)1 << k;
    }
    for (size_t k = 0; k < nt; k++)
        if (k == 0 || !(started & ((size_t)1 << k)))
            fsync_part(&part[k]);
    for (size_t k = 1; k < nt; k++)
        if (started & ((size_t)1 << k))
            pthread_join(t[k], NULL);
}

int ck_write_atomic(const char *path, const void *p, size_t n, mode_t mode)
{
    return ck_write_replace(path, p, n, mode, CK_SYNC_DATA | CK_SYNC_DIR);
}

int ck_write_replace(const char *path, const void *p, size_t n, mode_t mode,
                     int sync)
{
    char *tmp = ck_malloc(strlen(path) + 32);
    int fd, rc = 0;

    if (tmp == NULL)
        return -ENOMEM;
    sprintf(tmp, "%s.tmp.%d", path, (int)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    rc = ck_pwrite_full(fd, p, n, 0);
    if (rc == 0 && (sync & CK_SYNC_DATA) && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0)
        unlink(tmp);
    else if (sync & CK_SYNC_DIR)
        rc = ck_fsync_dir_of(path);
out:
    ck_free(tmp);
    return rc;
}

/* Copy the open file in to a new tmp (mode of in), fsynced.  0 or -errno. */
static int copy_to(int in, const char *tmp)
{
    char buf[64 * 1024];
    struct stat st;
    uint64_t off = 0;
    int out, rc = 0;

    if (fstat(in, &st) < 0)
        return -errno;
    out = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
               st.st_mode & 07777);
    if (out < 0)
        return -errno;
    for (;;) {
        ssize_t n = pread(in, buf, sizeof(buf), (off_t)off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            break;
        }
        if (n == 0)
            break;
        rc = ck_pwrite_full(out, buf, (size_t)n, off);
        if (rc < 0)
            break;
        off += (uint64_t)n;
    }
    if (rc == 0 && fsync(out) < 0)
        rc = -errno;
    if (close(out) < 0 && rc == 0)
        rc = -errno;
    return rc;
}

int ck_move(const char *src, const char *dst)
{
    char *tmp;
    int in, rc;

    if (rename(src, dst) == 0) {
        rc = ck_fsync_dir_of(dst);
        return rc < 0 ? rc : ck_fsync_dir_of(src);
    }
    if (errno != EXDEV)
        return -errno;
    tmp = ck_malloc(strlen(dst) + 32);
    if (tmp == NULL)
        return -ENOMEM;
    sprintf(tmp, "%s.tmp.%d", dst, (int)getpid());
    in = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    rc = in < 0 ? -errno : copy_to(in, tmp);
    if (in >= 0)
        close(in);
    if (rc == 0 && rename(tmp, dst) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        goto out;
    }
    rc = ck_fsync_dir_of(dst);
    if (rc == 0 && unlink(src) < 0)
        rc = -errno;
    if (rc == 0)
        rc = ck_fsync_dir_of(src);
out:
    ck_free(tmp);
    return rc;
}
