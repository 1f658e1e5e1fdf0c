/*
 * main.c -- the command line: parses arguments and wires the subsystems
 * together.  Exit status: 0 success, 1 the file could not be processed,
 * 2 usage or configuration error.
 */
#include "conf.h"
#include "diff.h"
#include "fsutil.h"
#include "inspect.h"
#include "job.h"
#include "listing.h"
#include "record.h"
#include "sandbox.h"
#include "watch.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXIT_FILE 1
#define EXIT_USAGE 2

static const char usage_main[] =
    "usage: ckprep COMMAND [OPTIONS] [FILE]\n"
    "\n"
    "Prepare PyTorch checkpoints for fine-tuning, without executing them.\n"
    "\n"
    "commands:\n"
    "  run      run a checkpoint through the configured plugin chain\n"
    "  inspect  describe what a checkpoint holds\n"
    "  diff     what changed between two checkpoints\n"
    "  check    validate a configuration file\n"
    "  watch    run as a daemon: prepare every checkpoint dropped in a folder\n"
    "  status   what the daemons of a configuration are doing\n"
    "\n"
    "options:\n"
    "  -h, --help       this text; 'ckprep COMMAND --help' (or 'ckprep help\n"
    "                   COMMAND') for a command\n"
    "  --version        print the version\n"
    "  --help-plugins   list the compiled-in plugins and their directives\n"
    "\n"
    "Exit status: 0 success, 1 a file could not be processed, 2 usage or\n"
    "configuration error.\n";

static const char usage_run[] =
    "usage: ckprep run -c CONF [--set S.D=V ...] [-o OUT] [--dry-run] IN\n"
    "\n"
    "Read checkpoint IN, validate it, run the [pipeline] chain of CONF over it\n"
    "and write the result atomically to OUT (default: IN's folder, named\n"
    "<stem>.prep<ext>).  Prints one JSON record of what was done on stdout\n"
    "(on stderr with -o -), also when the job fails (status \"failed\" and\n"
    "the error).\n"
    "\n"
    "IN '-' reads the checkpoint from stdin in one pass, as torch.save wrote\n"
    "it (a zip: data.pkl first, then the storages; or the legacy stream);\n"
    "'-o -' writes the output to stdout in one pass.  A stream that fails\n"
    "midway ends with bytes that are no zip, and the exit status is 1.\n"
    "Safetensors inputs, zips in another order, and plugins that read tensor\n"
    "bytes need a file.\n"
    "\n"
    "  -c, --config CONF   the INI configuration (see conf/ckprep.ini); '-'\n"
    "                      reads it from stdin\n"
    "  --set SECTION.DIRECTIVE=VALUE\n"
    "                      one more directive line, as if at the end of CONF\n"
    "                      and checked the same way; repeatable\n"
    "                      (--set config_override.set=optim.lr=1e-5)\n"
    "  -o, --output OUT    where to write the prepared checkpoint; an\n"
    "                      existing folder (or OUT ending in '/') gets\n"
    "                      OUT/<IN's name>; OUT's folder must exist; '-' is\n"
    "                      stdout; with IN '-', a file or '-'\n"
    "  -n, --dry-run       write nothing: the record says what would change,\n"
    "                      and a plan, one line per change, goes to stderr\n"
    "\n"
    "Warnings (a rename rule that matches no key) go to stderr.\n"
    "\n"
    "Exit status: 0 done; 1 IN could not be processed (one line on stderr\n"
    "naming the file and the cause, nothing written); 2 usage or\n"
    "configuration error.\n";

static const char usage_inspect[] =
    "usage: ckprep inspect [--json] [--tensors[=GLOB]] [--bytes]\n"
    "                      [--config[=PATH]] [--manifest[=STATE]] FILE\n"
    "\n"
    "Describe checkpoint FILE: its format, top-level keys, state dicts (tensor\n"
    "count, parameters, bytes per dtype), configs, the globals its pickle\n"
    "names, and whether it passes validation.  Nothing is executed and no\n"
    "tensor byte is read.\n"
    "\n"
    "  --json             one JSON document instead of text\n"
    "  --tensors[=GLOB]   one line per tensor: key, dtype, shape, numel, size,\n"
    "                     storage[+offset], stride when not contiguous,\n"
    "                     Parameter/requires_grad, shared(N) for tied storage;\n"
    "                     GLOB filters keys ('*.self_attn.*')\n"
    "  --bytes            exact byte counts instead of KiB/MiB/GiB\n"
    "  --config[=PATH]    the config as OmegaConf.to_yaml prints it; PATH a\n"
    "                     dotted sub-tree ('optim', 'model.layers[0]')\n"
    "  --manifest[=STATE] the manifest (JSON) of the state dict at STATE\n"
    "                     (default best_state/model|model|state_dict|/) for\n"
    "                     the expect plugin\n"
    "  -c, --conf CONF    take [security] limits and allow_globals from CONF\n";

static const char usage_diff[] =
    "usage: ckprep diff [--json | --stat] [--exact] [-c CONF] A B\n"
    "\n"
    "What changed from checkpoint A to B, without loading either: top-level\n"
    "keys added, removed or of another kind; per state dict, keys only in A,\n"
    "only in B, dtype or shape changed, content changed (decided from the\n"
    "zip directories' sizes and CRC-32s and the views' offsets, shapes and\n"
    "strides), tensors renamed (a removed and an added key of identical\n"
    "content); config keys added, removed, changed (old -> new).\n"
    "\n"
    "  --json    one JSON document\n"
    "  --stat    one line per state dict, as git diff --stat\n"
    "  --exact   compare the bytes where the directories cannot decide\n"
    "            (streamed, in bounded memory)\n"
    "  -c, --conf CONF\n"
    "            open A and B under CONF's [security] (its limits too)\n"
    "            (allow_globals, allow_numpy, sizes), as run would\n"
    "\n"
    "Nothing is executed: A and B are parsed as run parses them, in the\n"
    "same sandbox (no exec, no network; only A, B and CONF readable).\n"
    "Exit status, as diff(1): 0 same, 1 different, 2 trouble.\n";

static const char usage_check[] =
    "usage: ckprep check -c CONF [--set SECTION.DIRECTIVE=VALUE ...]\n"
    "\n"
    "Validate configuration CONF without touching any checkpoint: sections,\n"
    "directives, values and the plugin chain.  Errors are printed as\n"
    "FILE:LINE: message; exit 0 when valid, 2 otherwise.\n";

static const char usage_watch[] =
    "usage: ckprep watch -c CONF\n"
    "\n"
    "Run in the foreground as a daemon (systemd runs it this way): watch the\n"
    "[watch] incoming folder of CONF, and run every complete checkpoint that\n"
    "appears there through the [pipeline] chain, once per content.  Outputs\n"
    "appear atomically in the output folder; each job appends one JSON line\n"
    "to the audit log; inputs that fail move to the failed folder with\n"
    "NAME.error.json.  Several daemons may share one incoming folder.\n"
    "\n"
    "  -c, --config CONF   the INI configuration (see conf/ckprep.ini)\n"
    "\n"
    "Signals: SIGTERM or SIGINT stop (running jobs finish, or are abandoned\n"
    "after stop_timeout_s leaving no output); SIGHUP reloads CONF (refused,\n"
    "keeping the old one, if it has errors); SIGUSR1 reopens the audit log.\n"
    "Under systemd (Type=notify) it reports READY=1, STATUS=, RELOADING=1 and\n"
    "STOPPING=1, and WATCHDOG=1 when WatchdogSec is set.\n"
    "\n"
    "Exit status: 0 stopped cleanly; 1 could not start (folders, audit log);\n"
    "2 usage or configuration error.\n";

static int arg_is(const char *a, const char *s, const char *l)
{
    return (s != NULL && strcmp(a, s) == 0) || (l != NULL && strcmp(a, l) == 0);
}

static void print_directives(const ck_directive_t *d)
{
    for (; d->name != NULL; d++)
        printf("    %-18s %s%s%s%s\n", d->name, d->help ? d->help : "",
               d->def ? " (default: " : "", d->def ? d->def : "",
               d->def ? ")" : "");
}

static int help_plugins(void)
{
    printf("[pipeline]\n");
    print_directives(ck_pipeline_directives);
    printf("[security]\n");
    print_directives(ck_security_directives);
    printf("[watch]\n");
    print_directives(ck_watch_directives);
    printf("[output]\n");
    print_directives(ck_output_directives);
    for (size_t i = 0; ck_plugins[i] != NULL; i++) {
        printf("[%s] %s\n", ck_plugins[i]->name, ck_plugins[i]->summary);
        print_directives(ck_plugins[i]->directives);
    }
    if (ck_plugins[0] == NULL)
        printf("(no plugins are compiled in)\n");
    return 0;
}

/* One message line on stderr: "ckprep: [PATH: ][WHAT: ]MSG", the path and
 * message escaped (ck_esc_step): they may hold bytes of the input. */
static void say(const char *path, const char *what, const char *msg)
{
    fputs("ckprep: ", stderr);
    if (path != NULL) {
        ck_esc_fputs(path, stderr);
        fputs(": ", stderr);
    }
    if (what != NULL)
        fprintf(stderr, "%s: ", what);
    ck_esc_fputs(msg, stderr);
    fputc('\n', stderr);
}

/* The sandbox of run and inspect: read in, the configuration and the
 * files its plugins declared; write in out's folder (none when out is
 * NULL). */
static int enter_sandbox(const char *in, const char *cpath,
                         const ck_conf_t *conf, const char *out)
{
    ck_sandbox_t sb = { .read = { in }, .nread = in != NULL };
    ck_err_t err = { 0 };
    char dir[4096];
    const char *slash = out ? strrchr(out, '/') : NULL;

    if (cpath != NULL)
        sb.read[sb.nread++] = cpath;
    sb.files = conf->reads;
    if (out != NULL) {
        if (slash == NULL)
            snprintf(dir, sizeof(dir), ".");
        else if (slash == out)
            snprintf(dir, sizeof(dir), "/");
        else
            snprintf(dir, sizeof(dir), "%.*s", (int)(slash - out), out);
        sb.write_dirs[sb.nwrite++] = dir;
    }
    if (ck_sandbox_enter(&sb, &err) < 0) {
        say(in ? in : "stdin", NULL, err.msg);
        return -1;
    }
    return 0;
}

/* The --set lines of a command, collected as its options are read. */
typedef struct {
    const char **v;
    size_t n;
} sets_t;

static int sets_add(sets_t *s, const char *spec)
{
    const char **nv = ck_realloc(s->v, (s->n + 1) * sizeof(*nv));

    if (nv == NULL)
        return -1;
    nv[s->n++] = spec;
    s->v = nv;
    return 0;
}

static int load_conf_sets(const char *path, const sets_t *sets,
                          ck_conf_t *conf)
{
    ck_err_t err = { 0 };

    if (ck_conf_load_ex(conf, path, sets ? sets->v : NULL,
                        sets ? sets->n : 0, &err) < 0) {
        say(NULL, NULL, err.msg);
        ck_conf_release(conf);
        return -1;
    }
    return 0;
}

static int load_conf(const char *path, ck_conf_t *conf)
{
    ck_err_t err = { 0 };

    if (ck_conf_load(conf, path, &err) < 0) {
        say(NULL, NULL, err.msg);
        ck_conf_release(conf);
        return -1;
    }
    return 0;
}

/* inspect's and diff's -c: how checkpoints are opened, from CONF's
 * [security], limits included (the defaults without one).  conf is zeroed or
 * loaded, for ck_conf_release either way. */
static int open_opts(const char *cpath, ck_conf_t *conf, ck_open_opts_t *opts)
{
    memset(conf, 0, sizeof(*conf));
    if (cpath != NULL && load_conf(cpath, conf) < 0)
        return -1;
    ck_conf_open_opts(cpath ? conf : NULL, opts);
    return 0;
}

static void check_warn(void *ud, const char *msg)
{
    say((const char *)ud, "warning", msg);
}

static int cmd_watch(int argc, char **argv)
{
    const char *cpath = NULL;

    for (int i = 0; i < argc; i++) {
        if (arg_is(argv[i], "-h", "--help")) {
            fputs(usage_watch, stdout);
            return 0;
        } else if (arg_is(argv[i], "-c", "--config") && i + 1 < argc) {
            cpath = argv[++i];
        } else {
            fprintf(stderr, "ckprep watch: unexpected argument '%s'\n%s",
                    argv[i], usage_watch);
            return EXIT_USAGE;
        }
    }
    if (cpath == NULL) {
        fprintf(stderr, "ckprep watch: -c CONF is required\n%s", usage_watch);
        return EXIT_USAGE;
    }
    {
        /* the daemon: the seccomp layer (no exec, no network, no
         * ptrace...); its folders may change on reload, so Landlock
         * confines each probe and job to its own (ck_sandbox_run) */
        ck_sandbox_t sb = { .keep_fs = 1 };
        ck_err_t err = { 0 };

        if (ck_sandbox_enter(&sb, &err) < 0) {
            say(NULL, NULL, err.msg);
            return EXIT_FILE;
        }
    }
    return ck_watch_main(cpath);
}

static int cmd_check(int argc, char **argv)
{
    const char *cpath = NULL;
    sets_t sets = { 0 };
    ck_conf_t conf;
    int rc;

    for (int i = 0; i < argc; i++) {
        if (arg_is(argv[i], "-h", "--help")) {
            fputs(usage_check, stdout);
            ck_free(sets.v);
            return 0;
        } else if (arg_is(argv[i], "-c", "--config") && i + 1 < argc) {
            cpath = argv[++i];
        } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            if (sets_add(&sets, argv[++i]) < 0) {
                fprintf(stderr, "ckprep: out of memory\n");
                return EXIT_USAGE;
            }
        } else {
            ck_free(sets.v);
            fprintf(stderr, "ckprep check: unexpected argument '%s'\n%s", argv[i],
                    usage_check);
            return EXIT_USAGE;
        }
    }
    if (cpath == NULL) {
        fprintf(stderr, "ckprep check: -c CONF is required\n%s", usage_check);
        ck_free(sets.v);
        return EXIT_USAGE;
    }
    rc = load_conf_sets(cpath, &sets, &conf);
    ck_free(sets.v);
    if (rc < 0)
        return EXIT_USAGE;
    ck_watch_check(&conf, check_warn, (void *)cpath);
    printf("%s: ok, chain of %zu plugin%s\n", cpath, conf.nchain,
           conf.nchain == 1 ? "" : "s");
    ck_conf_release(&conf);
    return 0;
}

/* A job's warning, on stderr as it comes. */
static void run_warn(void *ud, const char *msg)
{
    say((const char *)ud, "warning", msg);
}

/* OUT names a folder: it ends in '/' or is one. */
static int is_folder(const char *out)
{
    struct stat st;
    size_t n = strlen(out);

    return n > 0 && (out[n - 1] == '/' ||
                     (stat(out, &st) == 0 && S_ISDIR(st.st_mode)));
}

/*
 * Where run writes: OUT, OUT/<IN's name> when OUT is a folder or ends in
 * '/' (its extension ext when the output format needs one), or IN's
 * default name; its folder must exist.  A new ck_malloc
 * string, or NULL with a message printed.
 */
static char *output_path(const char *in, const char *out, const char *ext)
{
    struct stat st, in_st;
    char *path, *dir;

    if (out == NULL) {
        path = ck_job_default_out(in, ext);
    } else if (is_folder(out)) {
        const char *base = ck_path_base(in);
        char *name = ck_malloc(strlen(base) + (ext ? strlen(ext) : 0) + 1);

        path = NULL;
        if (name != NULL) {
            size_t stem = ext ? (size_t)(ck_path_ext(base) - base)
                              : strlen(base);

            memcpy(name, base, stem);
            strcpy(name + stem, ext ? ext : "");
            path = ck_path_join(out, name);
            ck_free(name);
        }
    } else {
        path = ck_strdup(out);
    }
    if (path == NULL) {
        fprintf(stderr, "ckprep: out of memory\n");
        return NULL;
    }
    dir = ck_strdup(path);
    if (dir != NULL) {
        char *slash = strrchr(dir, '/');

        if (slash == NULL)
            strcpy(dir, ".");
        else
            slash[slash == dir] = '\0';
    }
    if (stat(path, &st) == 0 && stat(in, &in_st) == 0 &&
        st.st_dev == in_st.st_dev && st.st_ino == in_st.st_ino) {
        fprintf(stderr, "ckprep run: %s is the input: it is never "
                "overwritten (choose another name or folder)\n", path);
        ck_free(dir);
        ck_free(path);
        return NULL;
    }
    if (dir == NULL || stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "ckprep run: %s: %s\n", path,
                dir == NULL ? "out of memory"
                            : "its folder does not exist (nothing was done)");
        ck_free(dir);
        ck_free(path);
        return NULL;
    }
    ck_free(dir);
    return path;
}

/* The dry run's plan, on stderr. */
static void print_plan(const char *in, const char *rec)
{
    ck_buf_t plan = { 0 };

    if (rec != NULL && ck_record_plan(rec, strlen(rec), &plan) == 0 &&
        ck_buf_putc(&plan, '\0') == 0) {
        char *line = (char *)plan.data, *nl;

        say(in, NULL, "plan (dry run, nothing written):");
        /* keys and values come from the input: escaped, line by line */
        for (; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
            *nl = '\0';
            ck_esc_fputs(line, stderr);
            fputc('\n', stderr);
        }
    }
    ck_buf_release(&plan);
}

static const char usage_status[] =
    "usage: ckprep status -c CONF [-n N] [--json]\n"
    "\n"
    "Print what the daemons watching CONF's [watch] incoming folder are doing:\n"
    "files waiting to be complete, claimed (queued) and running (with the\n"
    "host and pid holding them), and the last N done and failed jobs of the\n"
    "audit log with their totals.  Reads the audit log, the claims and\n"
    "incoming; changes nothing.\n"
    "\n"
    "  -c, --config CONF   the INI configuration with a [watch] section\n"
    "  -n, --last N        how many done and failed jobs to list (default 10)\n"
    "  --json              one JSON object, for scripts\n"
    "\n"
    "Exit status: 0 printed; 1 incoming cannot be read; 2 usage or\n"
    "configuration error.\n";

static int cmd_status(int argc, char **argv)
{
    const char *cpath = NULL;
    unsigned long last = 10;
    int json = 0, rc;
    ck_conf_t conf;

    for (int i = 0; i < argc; i++) {
        char *end;

        if (arg_is(argv[i], "-h", "--help")) {
            fputs(usage_status, stdout);
            return 0;
        } else if (arg_is(argv[i], "-c", "--config") && i + 1 < argc) {
            cpath = argv[++i];
        } else if (arg_is(argv[i], "-n", "--last") && i + 1 < argc) {
            errno = 0;
            last = strtoul(argv[++i], &end, 10);
            if (errno != 0 || *end != '\0' || argv[i][0] == '-' ||
                last > 100000) {
                fprintf(stderr, "ckprep status: -n %s: not a number from 0 "
                        "to 100000\n", argv[i]);
                return EXIT_USAGE;
            }
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else {
            fprintf(stderr, "ckprep status: unexpected argument '%s'\n%s",
                    argv[i], usage_status);
            return EXIT_USAGE;
        }
    }
    if (cpath == NULL) {
        fprintf(stderr, "ckprep status: -c CONF is required\n%s",
                usage_status);
        return EXIT_USAGE;
    }
    if (load_conf(cpath, &conf) < 0)
        return EXIT_USAGE;
    if (conf.watch_line == 0) {
        fprintf(stderr, "ckprep status: %s has no [watch] section\n", cpath);
        ck_conf_release(&conf);
        return EXIT_USAGE;
    }
    rc = ck_watch_status(&conf, last, json, stdout);
    ck_conf_release(&conf);
    return rc;
}

static int cmd_run(int argc, char **argv)
{
    const char *cpath = NULL, *out = NULL, *in = NULL, *name;
    FILE *recf = stdout;
    char *path = NULL;
    sets_t sets = { 0 };
    ck_job_args_t args = { 0 };
    ck_json_t rec = { 0 };
    ck_err_t err = { 0 };
    ck_conf_t conf;
    int rc = EXIT_USAGE;

    for (int i = 0; i < argc; i++) {
        if (arg_is(argv[i], "-h", "--help")) {
            fputs(usage_run, stdout);
            rc = 0;
            goto out;
        } else if (arg_is(argv[i], "-c", "--config") && i + 1 < argc) {
            cpath = argv[++i];
        } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            if (sets_add(&sets, argv[++i]) < 0)
                goto out;
        } else if (arg_is(argv[i], "-o", "--output") && i + 1 < argc) {
            out = argv[++i];
        } else if (arg_is(argv[i], "-n", "--dry-run")) {
            args.dry_run = 1;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "ckprep run: unknown option '%s'\n%s", argv[i],
                    usage_run);
            goto out;
        } else if (in == NULL) {
            in = argv[i];
        } else {
            fprintf(stderr, "ckprep run: one input file at a time\n");
            goto out;
        }
    }
    if (cpath == NULL || in == NULL) {
        fprintf(stderr, "ckprep run: %s is required\n%s",
                cpath == NULL ? "-c CONF" : "an input file", usage_run);
        goto out;
    }
    args.stream_in = strcmp(in, "-") == 0;
    args.stream_out = out != NULL && strcmp(out, "-") == 0;
    if (args.stream_in && strcmp(cpath, "-") == 0) {
        fprintf(stderr, "ckprep run: -c - and the input - would both read "
                "stdin\n");
        goto out;
    }
    if (args.stream_in && (out == NULL ? !args.dry_run
                                       : !args.stream_out && is_folder(out))) {
        fprintf(stderr, "ckprep run: an input from stdin has no name to "
                "derive the output's from: give -o FILE (or -o - for "
                "stdout)\n");
        goto out;
    }
    if (load_conf_sets(cpath, &sets, &conf) < 0)
        goto out;
    if ((args.stream_in || args.stream_out) &&
        conf.output.format == CK_OUT_SAFETENSORS) {
        fprintf(stderr, "ckprep run: [output] format = safetensors is "
                "written from a file to a file only (not with '-' or "
                "'-o -')\n");
        ck_conf_release(&conf);
        goto out;
    }
    path = args.stream_out || (args.stream_in && out == NULL) /* -n */
               ? ck_strdup("-")
               : output_path(args.stream_in ? "stdin" : in, out,
                             conf.output.format == CK_OUT_SAFETENSORS
                                 ? ".safetensors" : NULL);
    if (path == NULL) {
        ck_conf_release(&conf);
        goto out;
    }
    name = args.stream_in ? "stdin" : in;
    args.in = in;
    args.out = path;
    args.in_fd = STDIN_FILENO;
    args.out_fd = STDOUT_FILENO;
    args.warn = run_warn;
    args.warn_ud = (void *)name;
    if (args.stream_out) {
        /* a reader that goes away is a write error (EPIPE) with its line
         * on stderr, not a silent death */
        signal(SIGPIPE, SIG_IGN);
        recf = stderr;
    }
    if (enter_sandbox(args.stream_in ? NULL : in,
                      strcmp(cpath, "-") ? cpath : NULL, &conf,
                      args.dry_run || args.stream_out ? NULL : path) < 0) {
        ck_conf_release(&conf);
        rc = EXIT_FILE;
        goto out;
    }
    rc = ck_job_run(&conf, &args, &rec, &err);
    if (rc < 0)
        say(name, NULL, err.msg);
    else if (args.dry_run)
        print_plan(name, ck_json_text(&rec));
    /* the record, failed or not: scripts read what happened from it;
     * with -o - stdout is the checkpoint, so it goes to stderr */
    if (ck_json_text(&rec) != NULL)
        fprintf(recf, "%s\n", ck_json_text(&rec));
    ck_json_release(&rec);
    ck_conf_release(&conf);
    rc = rc < 0 ? EXIT_FILE : 0;
out:
    ck_free(path);
    ck_free(sets.v);
    return rc;
}

/* --name or --name=VALUE: 1 (and *v the value or NULL), else 0. */
static int opt_eq(const char *a, const char *name, const char **v)
{
    size_t n = strlen(name);

    if (strncmp(a, name, n) != 0 || (a[n] != '\0' && a[n] != '='))
        return 0;
    *v = a[n] == '=' ? a + n + 1 : NULL;
    return 1;
}

static int cmd_inspect(int argc, char **argv)
{
    const char *path = NULL, *cpath = NULL, *v, *refused = NULL;
    ck_listing_req_t r = { 0 };
    ck_conf_t conf;
    ck_open_opts_t opts = { 0 };
    ck_ckpt_t c;
    ck_err_t err = { 0 };
    int rc;

    for (int i = 0; i < argc; i++) {
        if (arg_is(argv[i], "-h", "--help")) {
            fputs(usage_inspect, stdout);
            return 0;
        } else if (arg_is(argv[i], NULL, "--json")) {
            r.json = 1;
        } else if (arg_is(argv[i], NULL, "--bytes")) {
            r.lo.bytes = 1;
        } else if (opt_eq(argv[i], "--tensors", &v)) {
            r.tensors = 1;
            r.lo.glob = v;
        } else if (opt_eq(argv[i], "--config", &v)) {
            r.config = 1;
            r.config_path = v;
        } else if (opt_eq(argv[i], "--manifest", &v)) {
            r.manifest = v ? v : "best_state/model|model|state_dict|/";
        } else if (arg_is(argv[i], "-c", "--conf") && i + 1 < argc) {
            cpath = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "ckprep inspect: unknown option '%s'\n%s", argv[i],
                    usage_inspect);
            return EXIT_USAGE;
        } else if (path == NULL) {
            path = argv[i];
        } else {
            fprintf(stderr, "ckprep inspect: one file at a time\n");
            return EXIT_USAGE;
        }
    }
    if (path == NULL) {
        fprintf(stderr, "ckprep inspect: a file is required\n%s", usage_inspect);
        return EXIT_USAGE;
    }
    if (open_opts(cpath, &conf, &opts) < 0)
        return EXIT_USAGE;
    if (enter_sandbox(path, cpath, &conf, NULL) < 0) {
        ck_conf_release(&conf);
        return EXIT_FILE;
    }
    rc = ck_ckpt_open(&c, path, &opts, &err);
    if (rc == 0)
        rc = ck_ckpt_validate(&c, &err); /* as run validates */
    if (rc < 0 && c.pk.root != NULL) {
        /* refused after the pickle was read: show what validation got to
         * (nothing is executed either way), then the refusal */
        ck_err_t scan = { 0 };

        refused = ck_arena_strdup(&c.arena, err.msg);
        ck_ckpt_scan_refused(&c, &scan);
    }
    if (rc < 0 && refused == NULL) {
        say(path, NULL, err.msg);
    } else if (r.tensors || r.config || r.manifest) {
        ck_err_t verr = { 0 };
        int vrc = ck_listing_print(&c, &r, stdout, &verr);

        if (vrc < 0)
            say(path, NULL, verr.msg);
        if (rc == 0)
            rc = vrc;
    } else if (r.json) {
        ck_json_t j = { 0 };

        if (ck_inspect_json_as(&c, refused, &j) == 0 && ck_json_text(&j))
            printf("%s\n", ck_json_text(&j));
        else
            rc = ck_err_set(&err, CK_ENOMEM, "out of memory");
        ck_json_release(&j);
    } else {
        ck_inspect_text_as(&c, refused, stdout);
    }
    if (refused != NULL)
        say(path, NULL, refused);
    else if (rc == CK_ENOMEM)
        say(path, NULL, "out of memory");
    ck_ckpt_close(&c);
    ck_conf_release(&conf);
    return rc < 0 ? EXIT_FILE : 0;
}

static int cmd_diff(int argc, char **argv)
{
    ck_diff_opts_t o = { 0 };
    ck_open_opts_t opts = { 0 };
    ck_conf_t conf;
    const char *f[2] = { NULL, NULL }, *cpath = NULL;
    size_t nf = 0;
    int rc;

    for (int i = 0; i < argc; i++) {
        if (arg_is(argv[i], "-h", "--help")) {
            fputs(usage_diff, stdout);
            return 0;
        } else if (arg_is(argv[i], NULL, "--json")) {
            o.json = 1;
        } else if (arg_is(argv[i], NULL, "--stat")) {
            o.stat = 1;
        } else if (arg_is(argv[i], NULL, "--exact")) {
            o.exact = 1;
        } else if (arg_is(argv[i], "-c", "--conf") && i + 1 < argc) {
            cpath = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "ckprep diff: unknown option '%s'\n%s", argv[i],
                    usage_diff);
            return EXIT_USAGE;
        } else if (nf < 2) {
            f[nf++] = argv[i];
        } else {
            fprintf(stderr, "ckprep diff: two files\n%s", usage_diff);
            return EXIT_USAGE;
        }
    }
    if (nf != 2) {
        fprintf(stderr, "ckprep diff: two files are required\n%s", usage_diff);
        return EXIT_USAGE;
    }
    if (open_opts(cpath, &conf, &opts) < 0)
        return EXIT_USAGE;
    o.open = &opts;
    {
        /* as run's: read A, B and CONF, write nothing but stdout */
        ck_sandbox_t sb = { .read = { f[0], f[1], cpath },
                            .nread = cpath ? 3 : 2 };
        ck_err_t err = { 0 };

        if (ck_sandbox_enter(&sb, &err) < 0) {
            say(NULL, NULL, err.msg);
            ck_conf_release(&conf);
            return 2;
        }
    }
    rc = ck_diff_main(f[0], f[1], &o, stdout);
    ck_conf_release(&conf);
    return rc;
}

/*
 * The commands, as git's builtin table: `ckprep NAME ARGS...` calls fn with
 * the arguments after NAME; usage is what `ckprep NAME --help` and
 * `ckprep help NAME` print.  fn returns the exit status.
 */
static const struct cmd {
    const char *name;                 /* argv[1] */
    int (*fn)(int argc, char **argv); /* argv after the name; exit status */
    const char *usage;                /* the command's --help text */
} cmds[] = {
    { "run", cmd_run, usage_run },
    { "inspect", cmd_inspect, usage_inspect },
    { "diff", cmd_diff, usage_diff },
    { "check", cmd_check, usage_check },
    { "watch", cmd_watch, usage_watch },
    { "status", cmd_status, usage_status },
};

static const struct cmd *find_cmd(const char *name)
{
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        if (strcmp(cmds[i].name, name) == 0)
            return &cmds[i];
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *name = argc > 1 ? argv[1] : NULL;
    const struct cmd *c;

    if (name == NULL) {
        fputs(usage_main, stderr);
        return EXIT_USAGE;
    }
    if (arg_is(name, "-h", "--help") || strcmp(name, "help") == 0) {
        c = argc > 2 ? find_cmd(argv[2]) : NULL;
        fputs(c != NULL ? c->usage : usage_main, stdout);
        return 0;
    }
    if (arg_is(name, "-V", "--version")) {
        printf("ckprep %s\n", CK_VERSION);
        return 0;
    }
    if (strcmp(name, "--help-plugins") == 0)
        return help_plugins();
    c = find_cmd(name);
    if (c == NULL) {
        fprintf(stderr, "ckprep: unknown command '%s'\n%s", name, usage_main);
        return EXIT_USAGE;
    }
    return c->fn(argc - 2, argv + 2);
}
