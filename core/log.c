/*
 * log.c -- log lines on stderr and sd_notify datagrams.  Both are used from
 * the loop thread only.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int journal;     /* stderr is the journal: "<N>" prefixes */
static int notify_fd = -1;

void ck_log_init(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    journal = js != NULL && sscanf(js, "%llu:%llu", &dev, &ino) == 2 &&
              fstat(STDERR_FILENO, &st) == 0 &&
              (unsigned long long)st.st_dev == dev &&
              (unsigned long long)st.st_ino == ino;
}

void ck_log(int prio, const char *fmt, ...)
{
    static const char *const level[] = { "emergency: ", "alert: ",
                                         "critical: ", "error: ", "warning: ",
                                         "", "", "" };
    char line[2048];
    va_list ap;
    int n;

    if (journal)
        n = snprintf(line, sizeof(line), "<%d>", prio & 7);
    else
        n = snprintf(line, sizeof(line), "ckprep: %s", level[prio & 7]);
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    /* a line is one line: a hostile name cannot start another */
    for (int i = 0; i < n; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[n++] = '\n';
    while (write(STDERR_FILENO, line, (size_t)n) < 0 && errno == EINTR)
        ;
}

int ck_notify(const char *fmt, ...)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    socklen_t len;
    char msg[1024];
    va_list ap;
    int n;

    if (path == NULL || path[0] == '\0')
        return 1;
    if ((path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(sa.sun_path))
        return -EINVAL;
    memcpy(sa.sun_path, path, strlen(path));
    if (path[0] == '@')
        sa.sun_path[0] = '\0';
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0 || n >= (int)sizeof(msg))
        return -EINVAL;
    if (notify_fd < 0)
        notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (notify_fd < 0)
        return -errno;
    if (sendto(notify_fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sa,
               len) < 0)
        return -errno;
    return 0;
}

uint64_t ck_notify_watchdog_usec(void)
{
    const char *us = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");

    if (us == NULL)
        return 0;
    if (pid != NULL && strtol(pid, NULL, 10) != (long)getpid())
        return 0;
    return strtoull(us, NULL, 10);
}
