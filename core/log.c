/*
 * log.c -- log lines on stderr and sd_notify datagrams.  sd_notify is used
 * from the loop thread only; ck_log from any thread (a line is one
 * write(2), whole).
 *
 * A line is one line of UTF-8 text whatever a file name holds: control
 * characters, bytes that are not UTF-8 and bidi or invisible code points
 * are escaped by ck_esc_step, so a hostile name cannot start a line, move
 * the cursor of a terminal, reorder the text or fake another entry.
 */
#include "log.h"

#include "ck.h"

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
#include <time.h>
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
    char text[2048], line[2048 + 32];
    const uint8_t *u = (const uint8_t *)text;
    size_t n, len;
    va_list ap;
    int r;

    va_start(ap, fmt);
    r = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    len = r < 0 ? 0 : (size_t)r < sizeof(text) ? (size_t)r : sizeof(text) - 1;
    if (journal)
        n = (size_t)snprintf(line, sizeof(line), "<%d>", prio & 7);
    else
        n = (size_t)snprintf(line, sizeof(line), "ckprep: %s", level[prio & 7]);
    for (size_t i = 0; i < len;) {
        char e[12];
        size_t k = ck_esc_step(u + i, len - i, e), el = strlen(e);

        if (n + el >= sizeof(line) - 1)
            break;
        memcpy(line + n, e, el);
        n += el;
        i += k;
    }
    line[n++] = '\n';
    while (write(STDERR_FILENO, line, n) < 0 && errno == EINTR)
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
    /* never block the loop for long: a full queue loses a STATUS= or
     * WATCHDOG=1 at once; a state change (READY, RELOADING, STOPPING) is
     * retried for up to 200 ms */
    for (int tries = 0;; tries++) {
        if (sendto(notify_fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT,
                   (struct sockaddr *)&sa, len) >= 0)
            return 0;
        if ((errno != EAGAIN && errno != EWOULDBLOCK) || tries == 20 ||
            strncmp(msg, "STATUS=", 7) == 0 || strncmp(msg, "WATCHDOG=", 9) == 0)
            return -errno;
        nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
    }
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
