/*
 * failat.c -- allocation-failure torture of a whole `ckprep run`.
 *
 *   failat [-v] [--leak-selftest] -c CONF -d WORKDIR IN
 *
 * Does what `ckprep run -c CONF -o WORKDIR/out/out.th IN` does (ck_conf_load,
 * then ck_job_run), first with no failure to learn the expected output, then
 * with ck_mem_fail_at(n) for n = 1, 2, ... until a run succeeds without
 * reaching allocation n.  Each run is a forked child, so a crash names its n
 * and, under the sanitized build, LeakSanitizer checks each run at the
 * child's exit.  For every n that failed an allocation it requires:
 *  - the child exits normally with status 0 (no crash, no sanitizer report,
 *    no leak: the sanitizers make it exit non-zero);
 *  - the configuration load or the job returned an error, and the error is
 *    CK_ENOMEM with a message;
 *  - WORKDIR/out/ is empty: no output, no temporary .out.th.tmp.* file.
 * The final, successful run must write the same bytes as the reference.
 *
 * --leak-selftest: a child that leaks one ck_malloc block; exit 0 only when
 * the harness sees that child fail (proves leaks are caught in this build).
 *
 * Prints each problem, then "failat: N runs, M problems"; exit 1 on any.
 */
#define _GNU_SOURCE
#include "conf.h"
#include "job.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "detect_leaks=1:exitcode=86:abort_on_error=0";
}

typedef struct {
    int conf_rc;         /* ck_conf_load's result */
    int rc;              /* ck_job_run's result (0 when not reached) */
    int hit;             /* allocation n was reached */
    unsigned long count; /* allocations made */
    char msg[sizeof(((ck_err_t *)0)->msg)];
} result_t;

static const char *conf_path, *in_path, *out_dir, *out_path;
static int verbose;
static unsigned long problems;

static void problem(unsigned long n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void problem(unsigned long n, const char *fmt, ...)
{
    va_list ap;

    printf("FAIL n=%lu: ", n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    problems++;
}

/* The child: one run with allocation n failing (0: none). */
static void child(unsigned long n, int wfd, int leak)
{
    result_t r;
    ck_conf_t conf;
    ck_job_args_t args = {0};
    ck_json_t rec = {0};
    ck_err_t err = {0};
    ssize_t w;

    memset(&r, 0, sizeof(r));
    if (leak && ck_malloc(100) == NULL)
        _exit(3);
    ck_mem_fail_at(n);
    r.conf_rc = ck_conf_load(&conf, conf_path, &err);
    if (r.conf_rc == 0) {
        args.in = in_path;
        args.out = out_path;
        r.rc = ck_job_run(&conf, &args, &rec, &err);
        ck_json_release(&rec);
    }
    ck_conf_release(&conf);
    r.count = ck_mem_count();
    r.hit = n != 0 && r.count >= n;
    ck_mem_fail_at(0);
    snprintf(r.msg, sizeof(r.msg), "%s", err.msg);
    w = write(wfd, &r, sizeof(r));
    close(wfd);
    /* exit, not _exit: the sanitizers' leak check runs at exit */
    exit(w == (ssize_t)sizeof(r) ? 0 : 4);
}

/* Run one child; 0 when it exited 0 and reported a result. */
static int run_one(unsigned long n, int leak, result_t *r)
{
    int pfd[2], status;
    pid_t pid;
    ssize_t got;

    fflush(stdout);
    if (pipe(pfd) < 0) {
        perror("pipe");
        exit(2);
    }
    pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(2);
    }
    if (pid == 0) {
        close(pfd[0]);
        child(n, pfd[1], leak);
    }
    close(pfd[1]);
    got = read(pfd[0], r, sizeof(*r));
    close(pfd[0]);
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            perror("waitpid");
            exit(2);
        }
    }
    if (WIFSIGNALED(status)) {
        if (!leak)
            problem(n, "child killed by signal %d", WTERMSIG(status));
        return -1;
    }
    if (WEXITSTATUS(status) != 0) {
        if (!leak)
            problem(n, "child exited %d (sanitizer report or leak above)",
                    WEXITSTATUS(status));
        return -1;
    }
    if (got != (ssize_t)sizeof(*r)) {
        if (!leak)
            problem(n, "child reported no result");
        return -1;
    }
    return 0;
}

/* Names in out_dir, one per line, into buf; the count. */
static int list_out(char *buf, size_t size)
{
    DIR *d = opendir(out_dir);
    struct dirent *de;
    int n = 0;
    size_t o = 0;

    buf[0] = '\0';
    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        n++;
        if (o < size)
            o += (size_t)snprintf(buf + o, size - o, "%s%s", o ? " " : "",
                                  de->d_name);
    }
    closedir(d);
    return n;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *p = NULL;
    long n;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 &&
        fseek(f, 0, SEEK_SET) == 0) {
        p = malloc((size_t)n + 1);
        if (p != NULL && fread(p, 1, (size_t)n, f) != (size_t)n) {
            free(p);
            p = NULL;
        }
        *len = (size_t)n;
    }
    fclose(f);
    return p;
}

static void clear_out(void)
{
    char names[4096];

    unlink(out_path);
    if (list_out(names, sizeof(names)) != 0) {
        /* leftovers were already reported; remove them for the next run */
        DIR *d = opendir(out_dir);
        struct dirent *de;

        while (d != NULL && (de = readdir(d)) != NULL) {
            char p[4096];

            if (de->d_name[0] == '.' &&
                (de->d_name[1] == '\0' || strcmp(de->d_name, "..") == 0))
                continue;
            snprintf(p, sizeof(p), "%s/%s", out_dir, de->d_name);
            unlink(p);
        }
        if (d != NULL)
            closedir(d);
    }
}

static int usage(void)
{
    fprintf(stderr,
            "usage: failat [-v] [--leak-selftest] -c CONF -d WORKDIR IN\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *work = NULL;
    char *od, *op;
    int leak_selftest = 0;
    uint8_t *ref = NULL;
    size_t ref_len = 0;
    unsigned long n, total, runs = 0;
    result_t r;
    char names[4096];

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
            conf_path = argv[++i];
        else if (strcmp(argv[i], "-d") == 0 && i + 1 < argc)
            work = argv[++i];
        else if (strcmp(argv[i], "-v") == 0)
            verbose = 1;
        else if (strcmp(argv[i], "--leak-selftest") == 0)
            leak_selftest = 1;
        else if (argv[i][0] != '-' && in_path == NULL)
            in_path = argv[i];
        else
            return usage();
    }
    if (conf_path == NULL || work == NULL || in_path == NULL)
        return usage();
    od = malloc(strlen(work) + 16);
    op = malloc(strlen(work) + 32);
    if (od == NULL || op == NULL)
        return 2;
    sprintf(od, "%s/out", work);
    sprintf(op, "%s/out/out.th", work);
    out_dir = od;
    out_path = op;
    if (mkdir(out_dir, 0755) < 0 && errno != EEXIST) {
        perror(out_dir);
        return 2;
    }
    clear_out();

    if (leak_selftest) {
        int rc = run_one(0, 1, &r);

        printf("failat: leak self-test: %s\n",
               rc < 0 ? "leaking child detected" : "LEAK NOT DETECTED");
        free(od);
        free(op);
        return rc < 0 ? 0 : 1;
    }

    /* reference: no failure */
    if (run_one(0, 0, &r) < 0 || r.conf_rc < 0 || r.rc < 0) {
        printf("failat: the reference run failed: %s\n", r.msg);
        return 1;
    }
    total = r.count;
    ref = slurp(out_path, &ref_len);
    if (ref == NULL || ref_len == 0) {
        printf("failat: the reference run wrote no %s\n", out_path);
        return 1;
    }
    clear_out();
    if (verbose)
        printf("failat: reference run: %lu allocations, %zu bytes written\n",
               total, ref_len);

    for (n = 1;; n++) {
        int rc = run_one(n, 0, &r), left;

        runs++;
        left = list_out(names, sizeof(names));
        if (rc < 0) {
            if (left != 0)
                problem(n, "after the crash, the output folder holds: %s",
                        names);
            clear_out();
            if (n > total + 1)
                break;
            continue;
        }
        if (!r.hit) {
            /* allocation n was never reached: the run must succeed */
            size_t len = 0;
            uint8_t *got = NULL;

            if (r.conf_rc < 0 || r.rc < 0)
                problem(n, "failed without an allocation failing: %s", r.msg);
            else if ((got = slurp(out_path, &len)) == NULL)
                problem(n, "succeeded but wrote no output");
            else if (len != ref_len || memcmp(got, ref, len) != 0)
                problem(n, "output differs from the reference run");
            else if (left != 1)
                problem(n, "the output folder holds: %s", names);
            free(got);
            clear_out();
            break;
        }
        if (r.conf_rc == 0 && r.rc == 0)
            problem(n, "allocation %lu failed, yet the run succeeded", n);
        else if ((r.conf_rc < 0 ? r.conf_rc : r.rc) != CK_ENOMEM)
            problem(n, "error %s (%d), want nomem: %s",
                    ck_errname(r.conf_rc < 0 ? r.conf_rc : r.rc),
                    r.conf_rc < 0 ? r.conf_rc : r.rc, r.msg);
        else if (r.msg[0] == '\0')
            problem(n, "error without a message");
        if (left != 0)
            problem(n, "the output folder holds: %s", names);
        else if (verbose)
            printf("ok n=%lu: %s%s\n", n, r.conf_rc < 0 ? "config: " : "",
                   r.msg);
        clear_out();
        if (n > 2 * total + 100) {
            problem(n, "runs never stop failing");
            break;
        }
    }
    if (n <= total)
        problem(n, "the loop ended before the reference's %lu allocations",
                total);
    printf("failat: %s: %lu allocations, %lu runs, %lu problems\n", in_path,
           total, runs, problems);
    free(ref);
    free(od);
    free(op);
    return problems ? 1 : 0;
}
