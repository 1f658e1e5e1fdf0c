/*
 * unit_filter.c -- run a command under a system call allow list, as
 * systemd runs ckprep.service with SystemCallFilter= and
 * SystemCallErrorNumber=EPERM.
 *
 *   unit_filter LIST CMD [ARG...]
 *
 * LIST holds one system call name per line (tests/tools/unit_syscalls.py
 * --list systemd/ckprep.service); every other call fails with EPERM.
 * Names this architecture does not know are skipped.  no_new_privs is set
 * first, as systemd does for a filtered unit.  Used by test_watch.py's
 * under_unit_filter.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    scmp_filter_ctx ctx;
    char line[128];
    FILE *f;
    int n = 0;

    if (argc < 3) {
        fputs("usage: unit_filter LIST CMD [ARG...]\n", stderr);
        return 2;
    }
    f = fopen(argv[1], "r");
    if (f == NULL) {
        perror(argv[1]);
        return 2;
    }
    ctx = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    if (ctx == NULL)
        return 2;
    while (fgets(line, sizeof(line), f) != NULL) {
        int nr;

        line[strcspn(line, "\n")] = '\0';
        nr = seccomp_syscall_resolve_name(line);
        if (line[0] == '\0' || nr == __NR_SCMP_ERROR)
            continue;
        if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0) < 0) {
            fprintf(stderr, "unit_filter: %s: cannot allow\n", line);
            return 2;
        }
        n++;
    }
    fclose(f);
    if (n == 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        seccomp_load(ctx) < 0) {
        fputs("unit_filter: could not load the filter\n", stderr);
        return 2;
    }
    seccomp_release(ctx);
    execv(argv[2], argv + 2);
    perror(argv[2]);
    return 2;
}
