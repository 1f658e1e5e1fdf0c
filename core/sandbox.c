/*
 * sandbox.c -- what a process that parses hostile bytes gives up first.
 *
 * Two layers, both irreversible and inherited by every thread and child
 * created afterwards (ck_sandbox_enter: the whole process, before it has
 * other threads; ck_sandbox_run: Landlock for one thread of the daemon):
 *  - seccomp (libseccomp): execve/execveat, sockets of any family but
 *    AF_UNIX, ptrace and process_vm_*, mount/umount/pivot_root/chroot,
 *    namespaces (unshare, setns), kernel modules, kexec, bpf,
 *    perf_event_open, keyrings, userfaultfd, personality, reboot, swap and
 *    clock setting fail with EPERM;
 *  - Landlock (raw syscalls, no library): the file system shrinks to the
 *    files given for reading and the folders given for writing; anything
 *    else is EACCES.  A kernel without Landlock gets one log line and the
 *    seccomp layer alone.
 * Both need no privilege: PR_SET_NO_NEW_PRIVS is set first.
 * Lazily loaded parts of libraries (OpenSSL's configuration and digest
 * providers) are loaded before the door closes.
 */
#define _GNU_SOURCE
#include "sandbox.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <linux/landlock.h>
#include <seccomp.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

/*
 * Under AddressSanitizer, LeakSanitizer stops the process at exit with
 * ptrace and reads /proc: a sanitized build (tests only) keeps both.
 */
#if defined(__SANITIZE_ADDRESS__)
#define CK_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CK_SANITIZED 1
#endif
#endif
#ifndef CK_SANITIZED
#define CK_SANITIZED 0
#endif

/* System calls a parser never needs; each fails with EPERM. */
static const char *const denied[] = {
    "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount",
    "open_tree", "fsopen", "fsmount", "fsconfig", "fspick", "unshare",
    "setns", "init_module", "finit_module", "delete_module", "kexec_load",
    "kexec_file_load", "bpf", "perf_event_open", "keyctl", "add_key",
    "request_key", "userfaultfd", "personality", "reboot", "swapon",
    "swapoff", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "acct", "quotactl", "lookup_dcookie", "iopl", "ioperm",
};

static int seccomp_layer(ck_err_t *err)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    int rc = 0;

    if (ctx == NULL)
        return ck_err_set(err, CK_ENOMEM, "sandbox: seccomp_init failed");
    for (size_t i = 0; i < CK_ARRAY_SIZE(denied) && rc == 0; i++) {
        int nr = seccomp_syscall_resolve_name(denied[i]);

        if (CK_SANITIZED && strcmp(denied[i], "ptrace") == 0)
            continue;
        if (nr != __NR_SCMP_ERROR)
            rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
    }
    /* sockets: AF_UNIX only (sd_notify); no network, no netlink */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(socket), 1,
                              SCMP_A0(SCMP_CMP_NE, AF_UNIX));
    if (rc == 0)
        rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc < 0)
        return ck_err_set(err, rc, "sandbox: seccomp: %s", strerror(-rc));
    return 0;
}

/* ---- Landlock ---------------------------------------------------------- */

#define LL_FILE                                                               \
    (LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE |             \
     LANDLOCK_ACCESS_FS_READ_FILE)
#define LL_V1                                                                 \
    (LL_FILE | LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_REMOVE_DIR |  \
     LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_CHAR |          \
     LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |              \
     LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO |            \
     LANDLOCK_ACCESS_FS_MAKE_BLOCK | LANDLOCK_ACCESS_FS_MAKE_SYM)
#define LL_REFER (1ULL << 13)    /* ABI 2 */
#define LL_TRUNCATE (1ULL << 14) /* ABI 3 */

/* A rule for the file or folder fd is open on (O_PATH will do). */
static int ll_rule_fd(int rs, int fd, const char *path, uint64_t access,
                      uint64_t handled, ck_err_t *err)
{
    struct landlock_path_beneath_attr pb = { 0 };

    pb.parent_fd = fd;
    pb.allowed_access = access & handled;
    if (syscall(SYS_landlock_add_rule, rs, LANDLOCK_RULE_PATH_BENEATH, &pb,
                0) < 0)
        return ck_err_set(err, -errno, "sandbox: landlock rule for %s: %s",
                          path, strerror(errno));
    return 0;
}

static int ll_rule(int rs, const char *path, uint64_t access, uint64_t handled,
                   ck_err_t *err)
{
    int fd = open(path, O_PATH | O_CLOEXEC), rc;

    if (fd < 0 && errno == ENOENT)
        return 0; /* nothing to allow: its open fails as it would have */
    if (fd < 0)
        return ck_err_set(err, -errno, "sandbox: %s: %s", path,
                          strerror(errno));
    rc = ll_rule_fd(rs, fd, path, access, handled, err);
    close(fd);
    return rc;
}

/* The kernel's Landlock ABI, asked once: < 1 when it has none. */
static long landlock_abi(void)
{
    static long abi;    /* 0: not asked yet */
    long v = __atomic_load_n(&abi, __ATOMIC_RELAXED);

    if (v == 0) {
        v = syscall(SYS_landlock_create_ruleset, NULL, 0,
                    LANDLOCK_CREATE_RULESET_VERSION);
        if (v < 1)
            v = -(long)errno;
        __atomic_store_n(&abi, v, __ATOMIC_RELAXED);
    }
    return v;
}

static void no_landlock_notice(const char *what)
{
    int e = (int)-landlock_abi();

    /* EPERM: a system call filter (systemd's SystemCallFilter=) refused
     * it; ENOSYS, EOPNOTSUPP: not built or not enabled at boot */
    ck_log(CK_LOG_NOTICE, "sandbox: Landlock is not available (%s%s): "
                          "%s is not restricted", strerror(e),
           e == EPERM ? ", refused by a system call filter: allow "
                        "landlock_create_ruleset, landlock_add_rule and "
                        "landlock_restrict_self" : "",
           what);
}

/* Restricts the calling thread (and the threads it makes afterwards). */
static int landlock_layer(const ck_sandbox_t *sb, ck_err_t *err)
{
    struct landlock_ruleset_attr ra = { 0 };
    long abi = landlock_abi();
    uint64_t dir_rw;
    int rs, rc = 0;

    if (abi < 1)
        return 0;
    ra.handled_access_fs = LL_V1 | (abi >= 2 ? LL_REFER : 0) |
                           (abi >= 3 ? LL_TRUNCATE : 0);
    dir_rw = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE |
             LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
             LANDLOCK_ACCESS_FS_MAKE_REG | LL_TRUNCATE;
    rs = (int)syscall(SYS_landlock_create_ruleset, &ra, sizeof(ra), 0);
    if (rs < 0)
        return ck_err_set(err, -errno, "sandbox: landlock: %s",
                          strerror(errno));
    for (size_t i = 0; i < sb->nread && rc == 0; i++)
        rc = ll_rule(rs, sb->read[i], LANDLOCK_ACCESS_FS_READ_FILE,
                     ra.handled_access_fs, err);
    if (sb->read_fd > 0 && rc == 0)
        rc = ll_rule_fd(rs, sb->read_fd,
                        sb->read_fd_name ? sb->read_fd_name : "input",
                        LANDLOCK_ACCESS_FS_READ_FILE, ra.handled_access_fs,
                        err);
    for (const ck_conf_file_t *f = sb->files; f != NULL && rc == 0;
         f = f->next)
        rc = ll_rule(rs, f->path, LANDLOCK_ACCESS_FS_READ_FILE,
                     ra.handled_access_fs, err);
    for (size_t i = 0; i < sb->nwrite && rc == 0; i++)
        rc = ll_rule(rs, sb->write_dirs[i], dir_rw, ra.handled_access_fs, err);
    if (CK_SANITIZED && rc == 0)
        rc = ll_rule(rs, "/proc",
                     LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR,
                     ra.handled_access_fs, err);
    if (rc == 0 && syscall(SYS_landlock_restrict_self, rs, 0) < 0)
        rc = ck_err_set(err, -errno, "sandbox: landlock: %s", strerror(errno));
    close(rs);
    return rc;
}

/* What OpenSSL would otherwise open on first use, opened now. */
static void preload(void)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n;

    OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL);
    EVP_Digest("", 0, md, &n, EVP_sha256(), NULL);
}

int ck_sandbox_enter(const ck_sandbox_t *sb, ck_err_t *err)
{
    int rc;

    preload();
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return ck_err_set(err, -errno, "sandbox: no_new_privs: %s",
                          strerror(errno));
    if (landlock_abi() < 1)
        no_landlock_notice(sb->keep_fs ? "the file system of jobs"
                                       : "file system access");
    rc = sb->keep_fs ? 0 : landlock_layer(sb, err);
    if (rc == 0)
        rc = seccomp_layer(err);
    return rc;
}

/* ---- one confined thread ----------------------------------------------- */

/* The stack of a libuv pool thread (8 MiB): the parser's nesting limits
 * are sized for it. */
#define RUN_STACK (8u << 20)
/* What of it stays mapped between runs: a small job's whole depth. */
#define RUN_KEEP (256u << 10)

/*
 * Each caller keeps the stack its confined threads run on (it waits for
 * each, so one is enough).  A stack glibc allocates is handed back with
 * madvise when its thread ends, and that makes every CPU running the
 * process flush its TLB: at a thousand jobs a second (a probe and a job
 * thread each) a tenth of the daemon's time.  Here only what lies deeper
 * than RUN_KEEP is handed back, which costs nothing when no run went
 * there.  A guard page below, as glibc would; never unmapped: the daemon's
 * pool threads live as long as the process.
 */
static __thread char *run_stack;

static char *run_stack_get(void)
{
    long page = sysconf(_SC_PAGESIZE);
    char *base;

    if (run_stack != NULL)
        return run_stack;
    base = mmap(NULL, RUN_STACK + (size_t)page, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1,
                0);
    if (base == MAP_FAILED)
        return NULL;
    if (mprotect(base, (size_t)page, PROT_NONE) < 0) {
        munmap(base, RUN_STACK + (size_t)page);
        return NULL;
    }
    run_stack = base + page;
    return run_stack;
}

typedef struct {
    const ck_sandbox_t *sb;
    void (*fn)(void *);
    void *ud;
    ck_err_t *err;
    int rc;
} run_t;

static void *run_main(void *arg)
{
    run_t *r = arg;

    /* per thread, as Landlock wants it; ck_sandbox_enter set it already */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        r->rc = ck_err_set(r->err, -errno, "sandbox: no_new_privs: %s",
                           strerror(errno));
    else
        r->rc = landlock_layer(r->sb, r->err);
    if (r->rc == 0)
        r->fn(r->ud);
    return NULL;
}

int ck_sandbox_run(const ck_sandbox_t *sb, void (*fn)(void *), void *ud,
                   ck_err_t *err)
{
    run_t r = { sb, fn, ud, err, 0 };
    char *stack = run_stack_get();
    pthread_attr_t attr;
    pthread_t t;
    int e;

    if (stack == NULL)
        return ck_err_set(err, -errno, "sandbox: thread stack: %s",
                          strerror(errno));
    if ((e = pthread_attr_init(&attr)) != 0)
        return ck_err_set(err, -e, "sandbox: thread: %s", strerror(e));
    e = pthread_attr_setstack(&attr, stack, RUN_STACK);
    if (e == 0)
        e = pthread_create(&t, &attr, run_main, &r);
    pthread_attr_destroy(&attr);
    if (e != 0)
        return ck_err_set(err, -e, "sandbox: thread: %s", strerror(e));
    pthread_join(t, NULL);
    /* the thread is gone (joined): its stack below RUN_KEEP goes back */
    madvise(stack, RUN_STACK - RUN_KEEP, MADV_DONTNEED);
    return r.rc;
}
