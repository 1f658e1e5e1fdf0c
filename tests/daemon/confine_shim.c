/*
 * confine_shim.c -- LD_PRELOAD'ed into `ckprep watch` by test_watch.py's
 * confined_jobs, to see from inside what a probe or a job may touch.
 *
 *   CK_SHIM_LOG=PATH      where lines go (opened at load, append)
 *   CK_SHIM_TRIGGER=NAME  a path ending in /NAME is the trap
 *   CK_SHIM_TRY=SPEC;...  what to try: r:PATH (open to read) or
 *                         w:PATH (open to write, made if missing)
 *
 *   CK_SHIM_SLOW=TEXT     rename(2) to a path holding TEXT sleeps first
 *   CK_SHIM_SLOW_MS=N     that long (test_watch.py's move_off_the_loop:
 *                         a slow move to done/ must not hold the loop)
 *
 * At load, on the main thread and before ckprep's main runs, each try is
 * made once: "start r:/etc/passwd ok" (a file made is removed again).
 * Then whenever the daemon opens the trap (O_PATH aside: that names it, it
 * does not read it), the thread that opens it makes each try first:
 * "TID r:/etc/passwd EACCES".  The opens are the daemon's
 * own calls through open(2)/openat(2); the shim adds nothing to them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int log_fd = -1;
static const char *trigger;
static char tries[8192];
static __thread int inside;

static void try_all(const char *who)
{
    char spec[8192], line[4400];
    char *save = NULL;

    snprintf(spec, sizeof(spec), "%s", tries);
    for (char *t = strtok_r(spec, ";", &save); t != NULL;
         t = strtok_r(NULL, ";", &save)) {
        int w = t[0] == 'w', fd, e;
        int n;

        if (strlen(t) < 3 || t[1] != ':')
            continue;
        fd = (int)syscall(SYS_openat, AT_FDCWD, t + 2,
                          w ? O_WRONLY | O_CREAT | O_CLOEXEC
                            : O_RDONLY | O_CLOEXEC, 0600);
        e = errno;
        if (fd >= 0) {
            close(fd);
            if (w && strcmp(who, "start") == 0)
                unlink(t + 2);
        }
        n = snprintf(line, sizeof(line), "%s %s %s\n", who, t,
                     fd >= 0 ? "ok" : e == EACCES ? "EACCES" : strerror(e));
        if (n > 0 && write(log_fd, line, (size_t)n) < 0)
            abort();
    }
}

static void trap(const char *path, int flags)
{
    size_t pl, tl;
    char who[32];

    /* O_PATH: the sandbox naming the file in a rule, before it restricts
     * the thread; not a read */
    if (log_fd < 0 || inside || path == NULL || (flags & O_PATH))
        return;
    pl = strlen(path);
    tl = strlen(trigger);
    if (pl <= tl || path[pl - tl - 1] != '/' ||
        strcmp(path + pl - tl, trigger) != 0)
        return;
    inside = 1;
    snprintf(who, sizeof(who), "%ld", (long)syscall(SYS_gettid));
    try_all(who);
    inside = 0;
}

__attribute__((constructor)) static void shim_init(void)
{
    const char *logp = getenv("CK_SHIM_LOG"), *t = getenv("CK_SHIM_TRY");

    trigger = getenv("CK_SHIM_TRIGGER");
    if (logp == NULL || t == NULL || trigger == NULL)
        return;
    snprintf(tries, sizeof(tries), "%s", t);
    log_fd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd >= 0)
        try_all("start");
}

static int real_openat(int dirfd, const char *path, int flags, mode_t mode)
{
    return (int)syscall(SYS_openat, dirfd, path, flags, mode);
}

/* The mode, which open and openat pass only with these flags. */
#define TAKE_MODE(mode, flags)                                                \
    do {                                                                      \
        va_list ap_;                                                          \
                                                                              \
        va_start(ap_, flags);                                                 \
        mode = ((flags) & O_CREAT) || ((flags) & O_TMPFILE) == O_TMPFILE    \
                   ? va_arg(ap_, mode_t) : 0;                                 \
        va_end(ap_);                                                          \
    } while (0)

int open(const char *path, int flags, ...)
{
    mode_t mode;

    TAKE_MODE(mode, flags);
    trap(path, flags);
    return real_openat(AT_FDCWD, path, flags, mode);
}

int open64(const char *path, int flags, ...)
    __attribute__((alias("open")));

int openat(int dirfd, const char *path, int flags, ...)
{
    mode_t mode;

    TAKE_MODE(mode, flags);
    trap(path, flags);
    return real_openat(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
    __attribute__((alias("openat")));

int rename(const char *from, const char *to)
{
    const char *slow = getenv("CK_SHIM_SLOW"), *ms = getenv("CK_SHIM_SLOW_MS");

    if (slow != NULL && *slow != '\0' && to != NULL && strstr(to, slow)) {
        struct timespec ts;
        long n = ms != NULL ? atol(ms) : 1000;

        ts.tv_sec = n / 1000;
        ts.tv_nsec = (n % 1000) * 1000000L;
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
    }
    return (int)syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, 0);
}
