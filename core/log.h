/*
 * log.h -- the daemon's log lines and its systemd notifications.
 *
 * Lines go to stderr, one write(2) each.  Under systemd (stderr is the
 * journal stream named by $JOURNAL_STREAM) each line starts with the
 * syslog priority as "<N>", which journald reads; otherwise lines start
 * with "ckprep: " and, above notice, the level.
 *
 * ck_notify speaks the sd_notify datagram protocol to $NOTIFY_SOCKET
 * (a path, or an abstract name starting with '@') without libsystemd.
 */
#ifndef CK_LOG_H
#define CK_LOG_H

#include <stdint.h>

enum {
    CK_LOG_ERR = 3,
    CK_LOG_WARNING = 4,
    CK_LOG_NOTICE = 5,
    CK_LOG_INFO = 6,
    CK_LOG_DEBUG = 7,
};

/* Read the environment; call once before logging. */
void ck_log_init(void);
void ck_log(int prio, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Send one notification ("READY=1", "STATUS=...").  Returns 0 when sent,
 * 1 when there is no $NOTIFY_SOCKET, a negative errno on failure. */
int ck_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* $WATCHDOG_USEC when set for this process, else 0. */
uint64_t ck_notify_watchdog_usec(void);

#endif
