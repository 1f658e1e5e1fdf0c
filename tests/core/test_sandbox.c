/*
 * test_sandbox.c -- each restriction of ck_sandbox_enter fires: a child
 * that has entered the sandbox tries to exec, to open /etc/passwd, to make
 * a file outside its folder, to open an AF_INET socket and to ptrace, and
 * is refused each time, while what it was given (its input, its output
 * folder, an AF_UNIX socket) still works.  Landlock must be there: on a
 * kernel without it this test fails, saying so, rather than pass on half.
 * ck_sandbox_run (the daemon's probes and jobs) confines its thread alone:
 * the thread is refused the same files, the caller is not, and the next
 * thread gets the folders it is given; its threads run on one stack per
 * caller, 8 MiB deep, whose deep pages are handed back after each run.
 */
#define _GNU_SOURCE
#include "sandbox.h"

#include <stdarg.h>
#include <stdint.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int has_landlock(void)
{
    return syscall(SYS_landlock_create_ruleset, NULL, 0,
                   LANDLOCK_CREATE_RULESET_VERSION) >= 1;
}

enum {
    R_READ_IN = 1 << 0,      /* the input opens */
    R_WRITE_OUT = 1 << 1,    /* a file is made in the output folder */
    R_UNIX = 1 << 2,         /* an AF_UNIX socket opens */
    R_PASSWD = 1 << 3,       /* /etc/passwd: EACCES */
    R_OUTSIDE = 1 << 4,      /* a file beside the output folder: EACCES */
    R_INET = 1 << 5,         /* AF_INET socket: EPERM */
    R_INET6 = 1 << 6,        /* AF_INET6 socket: EPERM */
    R_EXEC = 1 << 7,         /* execve: EPERM */
    R_PTRACE = 1 << 8,       /* ptrace: EPERM */
    R_ALL = (1 << 9) - 1,
};

/* LeakSanitizer needs ptrace: a sanitized build keeps it (sandbox.c) */
#if defined(__SANITIZE_ADDRESS__)
#define EXPECT (R_ALL & ~R_PTRACE)
#else
#define EXPECT R_ALL
#endif

static int child(const char *in, const char *outdir, const char *top)
{
    ck_sandbox_t sb = { .read = { in }, .nread = 1,
                        .write_dirs = { outdir }, .nwrite = 1 };
    ck_err_t err = { 0 };
    char path[4400];
    char *const argv[] = { "/bin/true", NULL };
    int r = 0, fd;

    if (ck_sandbox_enter(&sb, &err) < 0) {
        fprintf(stderr, "enter: %s\n", err.msg);
        return 0;
    }
    fd = open(in, O_RDONLY);
    r |= fd >= 0 ? R_READ_IN : 0;
    close(fd);
    snprintf(path, sizeof(path), "%s/made", outdir);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    r |= fd >= 0 ? R_WRITE_OUT : 0;
    close(fd);
    fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    r |= fd >= 0 ? R_UNIX : 0;
    close(fd);
    r |= open("/etc/passwd", O_RDONLY) < 0 && errno == EACCES ? R_PASSWD : 0;
    snprintf(path, sizeof(path), "%s/outside", top);
    r |= open(path, O_WRONLY | O_CREAT, 0644) < 0 && errno == EACCES
             ? R_OUTSIDE : 0;
    r |= socket(AF_INET, SOCK_STREAM, 0) < 0 && errno == EPERM ? R_INET : 0;
    r |= socket(AF_INET6, SOCK_DGRAM, 0) < 0 && errno == EPERM ? R_INET6 : 0;
    r |= execve(argv[0], argv, environ) < 0 && errno == EPERM ? R_EXEC : 0;
    r |= ptrace(PTRACE_TRACEME, 0, NULL, NULL) < 0 && errno == EPERM
             ? R_PTRACE : 0;
    return r;
}

static void test_each_restriction_fires(void **state)
{
    char top[] = "/tmp/ck_test_sandbox.XXXXXX", in[4200], out[4200];
    int pipefd[2], got = 0, status;
    pid_t pid;

    (void)state;
    if (!has_landlock())
        fail_msg("this kernel has no Landlock (%s): the file-system half "
                 "of the sandbox cannot be tested here", strerror(errno));
    assert_non_null(mkdtemp(top));
    snprintf(in, sizeof(in), "%s/in.pt", top);
    snprintf(out, sizeof(out), "%s/out", top);
    assert_int_equal(mkdir(out, 0755), 0);
    close(open(in, O_WRONLY | O_CREAT, 0644));
    assert_int_equal(pipe(pipefd), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int r = child(in, out, top);

        if (write(pipefd[1], &r, sizeof(r)) != sizeof(r))
            _exit(2);
        _exit(0);
    }
    close(pipefd[1]);
    assert_int_equal(read(pipefd[0], &got, sizeof(got)), sizeof(got));
    close(pipefd[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if ((got & EXPECT) != EXPECT)
        fail_msg("restrictions that did not hold (bits): 0x%x",
                 (unsigned)(~got & EXPECT));
    /* nothing was made outside */
    snprintf(in, sizeof(in), "%s/outside", top);
    assert_int_not_equal(access(in, F_OK), 0);
    snprintf(in, sizeof(in), "rm -rf '%s'", top);
    assert_int_equal(system(in), 0);
}

typedef struct {
    const char *in, *out, *other, *top;
    int r, ran;
} thread_try_t;

enum {
    T_READ_IN = 1 << 0, T_WRITE_OUT = 1 << 1, T_PASSWD = 1 << 2,
    T_OTHER = 1 << 3, T_OUTSIDE = 1 << 4,
    T_ALL = (1 << 5) - 1,
};

static void thread_tries(void *ud)
{
    thread_try_t *t = ud;
    char path[4400];
    int fd;

    t->ran = 1;
    fd = open(t->in, O_RDONLY);
    t->r |= fd >= 0 ? T_READ_IN : 0;
    close(fd);
    snprintf(path, sizeof(path), "%s/made", t->out);
    fd = open(path, O_WRONLY | O_CREAT, 0644);
    t->r |= fd >= 0 ? T_WRITE_OUT : 0;
    close(fd);
    t->r |= open("/etc/passwd", O_RDONLY) < 0 && errno == EACCES ? T_PASSWD
                                                                 : 0;
    snprintf(path, sizeof(path), "%s/made", t->other);
    t->r |= open(path, O_WRONLY | O_CREAT, 0644) < 0 && errno == EACCES
                ? T_OTHER : 0;
    snprintf(path, sizeof(path), "%s/outside", t->top);
    t->r |= open(path, O_WRONLY | O_CREAT, 0644) < 0 && errno == EACCES
                ? T_OUTSIDE : 0;
}

static void test_run_confines_its_thread(void **state)
{
    char top[] = "/tmp/ck_test_sandbox_run.XXXXXX", in[4200], a[4200],
         b[4200], loop[4200], made[4400];
    thread_try_t t = { 0 };
    ck_sandbox_t sb = { .nread = 1, .nwrite = 1 };
    ck_err_t err = { 0 };
    int fd;

    (void)state;
    if (!has_landlock())
        fail_msg("this kernel has no Landlock: ck_sandbox_run cannot be "
                 "tested here");
    assert_non_null(mkdtemp(top));
    snprintf(in, sizeof(in), "%s/in.pt", top);
    snprintf(a, sizeof(a), "%s/a", top);
    snprintf(b, sizeof(b), "%s/b", top);
    assert_int_equal(mkdir(a, 0755), 0);
    assert_int_equal(mkdir(b, 0755), 0);
    close(open(in, O_WRONLY | O_CREAT, 0644));

    /* a confined thread writes in a, not in b */
    sb.read[0] = in;
    sb.write_dirs[0] = a;
    t = (thread_try_t){ .in = in, .out = a, .other = b, .top = top };
    assert_int_equal(ck_sandbox_run(&sb, thread_tries, &t, &err), 0);
    assert_true(t.ran);
    if (t.r != T_ALL)
        fail_msg("first thread: restrictions that did not hold (bits): 0x%x",
                 (unsigned)(~t.r & T_ALL));
    /* the caller is not restricted */
    fd = open("/etc/passwd", O_RDONLY);
    assert_true(fd >= 0);
    close(fd);
    snprintf(made, sizeof(made), "%s/outside", top);
    assert_int_not_equal(access(made, F_OK), 0);
    /* the next thread gets b and not a */
    sb.write_dirs[0] = b;
    t = (thread_try_t){ .in = in, .out = b, .other = a, .top = top };
    assert_int_equal(ck_sandbox_run(&sb, thread_tries, &t, &err), 0);
    if (t.r != T_ALL)
        fail_msg("second thread: restrictions that did not hold (bits): 0x%x",
                 (unsigned)(~t.r & T_ALL));
    snprintf(made, sizeof(made), "%s/made", a);
    assert_int_equal(access(made, F_OK), 0);
    snprintf(made, sizeof(made), "%s/made", b);
    assert_int_equal(access(made, F_OK), 0);

    /* a rule that cannot be made: an error, and fn does not run */
    snprintf(loop, sizeof(loop), "%s/loop", top);
    assert_int_equal(symlink(loop, loop), 0);
    sb.read[0] = loop;
    t = (thread_try_t){ 0 };
    assert_true(ck_sandbox_run(&sb, thread_tries, &t, &err) < 0);
    assert_false(t.ran);
    assert_non_null(strstr(err.msg, "sandbox"));

    snprintf(made, sizeof(made), "rm -rf '%s'", top);
    assert_int_equal(system(made), 0);
}

/* fn of test_rule_holds_the_inode: can the path be opened? */
static void open_in(void *ud)
{
    thread_try_t *t = ud;
    int fd = open(t->in, O_RDONLY);

    t->ran = 1;
    t->r = fd >= 0 ? 1 : errno == EACCES ? -1 : -2;
    if (fd >= 0)
        close(fd);
}

/* read_fd: the rule is the inode's, not the path's: once another file is
 * renamed over the path, the confined thread may not open it. */
static void test_rule_holds_the_inode(void **state)
{
    char top[] = "/tmp/ck_test_sandbox_fd.XXXXXX", in[4200], other[4200];
    ck_sandbox_t sb = { 0 };
    thread_try_t t = { 0 };
    ck_err_t err = { 0 };

    (void)state;
    if (!has_landlock())
        fail_msg("this kernel has no Landlock: cannot be tested here");
    assert_non_null(mkdtemp(top));
    snprintf(in, sizeof(in), "%s/in.pt", top);
    snprintf(other, sizeof(other), "%s/other.pt", top);
    close(open(in, O_WRONLY | O_CREAT, 0644));
    close(open(other, O_WRONLY | O_CREAT, 0644));
    sb.read_fd = open(in, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    sb.read_fd_name = in;
    assert_true(sb.read_fd > 0);
    t.in = in;
    assert_int_equal(ck_sandbox_run(&sb, open_in, &t, &err), 0);
    assert_int_equal(t.r, 1);               /* the claimed file: readable */
    assert_int_equal(rename(other, in), 0); /* another file at its path */
    t = (thread_try_t){ .in = in };
    assert_int_equal(ck_sandbox_run(&sb, open_in, &t, &err), 0);
    assert_int_equal(t.r, -1);              /* EACCES */
    close(sb.read_fd);
    snprintf(other, sizeof(other), "rm -rf '%s'", top);
    assert_int_equal(system(other), 0);
}

/* fns of test_run_stack: where their frames are, one 6 MiB deep */
typedef struct {
    uintptr_t top, deep;
} frame_t;

static void shallow(void *ud)
{
    volatile char here = 0;

    ((frame_t *)ud)->top = (uintptr_t)&here;
}

static void deep(void *ud)
{
    volatile char big[6u << 20];

    for (size_t i = 0; i < sizeof(big); i += 4096)
        big[i] = 1;
    ((frame_t *)ud)->deep = (uintptr_t)&big[0];
    ((frame_t *)ud)->top = (uintptr_t)&big[sizeof(big) - 1];
}

/* A confined thread may go 6 MiB deep (the parser's limits are sized for
 * a pool thread's 8 MiB); the caller's next thread runs on the same stack,
 * and what the deep run touched far down is no longer resident after. */
static void test_run_stack(void **state)
{
    ck_sandbox_t sb = { 0 };
    ck_err_t err = { 0 };
    frame_t a = { 0 }, b = { 0 }, c = { 0 };
    long page = sysconf(_SC_PAGESIZE);
    unsigned char vec = 1;

    (void)state;
    assert_int_equal(ck_sandbox_run(&sb, shallow, &a, &err), 0);
    assert_int_equal(ck_sandbox_run(&sb, deep, &b, &err), 0);
    assert_int_equal(ck_sandbox_run(&sb, shallow, &c, &err), 0);
    assert_true(a.top != 0 && a.top == c.top);      /* the same stack */
    assert_true(b.deep < a.top && a.top - b.deep > (6u << 20));
    assert_true(a.top - b.deep < (8u << 20));
    assert_int_equal(mincore((void *)(b.deep & ~(uintptr_t)(page - 1)),
                             (size_t)page, &vec), 0);
    assert_int_equal(vec & 1, 0);                   /* handed back */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_restriction_fires),
        cmocka_unit_test(test_run_confines_its_thread),
        cmocka_unit_test(test_rule_holds_the_inode),
        cmocka_unit_test(test_run_stack),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
