/*
 * main.c -- the command line: parses arguments and wires the subsystems
 * together.  Exit status: 0 success, 1 the file could not be processed,
 * 2 usage or configuration error.
 */
#include "conf.h"
#include "inspect.h"
#include "job.h"
#include "sandbox.h"
#include "watch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    "  check    validate a configuration file\n"
    "  watch    run as a daemon: prepare every checkpoint dropped in a folder\n"
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
    "usage: ckprep run -c CONF [-o OUT] [--dry-run] IN\n"
    "\n"
    "Read checkpoint IN, validate it, run the [pipeline] chain of CONF over it\n"
    "and write the result atomically to OUT (default: IN's folder, named\n"
    "<stem>.prep<ext>).  Prints one JSON record of what was done on stdout.\n"
    "\n"
    "  -c, --config CONF   the INI configuration (see conf/ckprep.ini)\n"
    "  -o, --output OUT    where to write the prepared checkpoint\n"
    "  -n, --dry-run       report what the chain would change; write nothing\n"
    "\n"
    "Exit status: 0 done; 1 IN could not be processed (one line on stderr\n"
    "naming the file and the cause, nothing written); 2 usage or\n"
    "configuration error.\n";

static const char usage_inspect[] =
    "usage: ckprep inspect [--json] FILE\n"
    "\n"
    "Describe checkpoint FILE: its format, top-level keys, state dicts (tensor\n"
    "count, parameters, bytes per dtype), configs, the globals its pickle\n"
    "names, and whether it passes validation.  Nothing is executed.\n"
    "\n"
    "  --json             one JSON document instead of text\n"
    "  -c, --config CONF  take [security] limits and allow_globals from CONF\n";

static const char usage_check[] =
    "usage: ckprep check -c CONF\n"
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
    ck_sandbox_t sb = { .read = { in }, .nread = 1 };
    ck_err_t err = { 0 };
    char dir[4096];
    const char *slash = out ? strrchr(out, '/') : NULL;

    if (cpath != NULL)
        sb.read[sb.nread++] = cpath;
    for (const ck_conf_file_t *f = conf->reads; f != NULL; f = f->next) {
        if (sb.nread == CK_ARRAY_SIZE(sb.read)) {
            say(in, NULL, "sandbox: too many files to read");
            return -1;
        }
        sb.read[sb.nread++] = f->path;
    }
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
        say(in, NULL, err.msg);
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
        /* the daemon and its workers: the seccomp layer (no exec, no
         * network, no ptrace...); its folders may change on reload, so
         * no Landlock (the systemd unit confines its file system) */
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
    ck_conf_t conf;

    for (int i = 0; i < argc; i++) {
        if (arg_is(argv[i], "-h", "--help")) {
            fputs(usage_check, stdout);
            return 0;
        } else if (arg_is(argv[i], "-c", "--config") && i + 1 < argc) {
            cpath = argv[++i];
        } else {
            fprintf(stderr, "ckprep check: unexpected argument '%s'\n%s", argv[i],
                    usage_check);
            return EXIT_USAGE;
        }
    }
    if (cpath == NULL) {
        fprintf(stderr, "ckprep check: -c CONF is required\n%s", usage_check);
        return EXIT_USAGE;
    }
    if (load_conf(cpath, &conf) < 0)
        return EXIT_USAGE;
    ck_watch_check(&conf, check_warn, (void *)cpath);
    printf("%s: ok, chain of %zu plugin%s\n", cpath, conf.nchain,
           conf.nchain == 1 ? "" : "s");
    ck_conf_release(&conf);
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    const char *cpath = NULL, *out = NULL, *in = NULL;
    char *def_out = NULL;
    ck_job_args_t args = { 0 };
    ck_json_t rec = { 0 };
    ck_err_t err = { 0 };
    ck_conf_t conf;
    int rc;

    for (int i = 0; i < argc; i++) {
        if (arg_is(argv[i], "-h", "--help")) {
            fputs(usage_run, stdout);
            return 0;
        } else if (arg_is(argv[i], "-c", "--config") && i + 1 < argc) {
            cpath = argv[++i];
        } else if (arg_is(argv[i], "-o", "--output") && i + 1 < argc) {
            out = argv[++i];
        } else if (arg_is(argv[i], "-n", "--dry-run")) {
            args.dry_run = 1;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "ckprep run: unknown option '%s'\n%s", argv[i],
                    usage_run);
            return EXIT_USAGE;
        } else if (in == NULL) {
            in = argv[i];
        } else {
            fprintf(stderr, "ckprep run: one input file at a time\n");
            return EXIT_USAGE;
        }
    }
    if (cpath == NULL || in == NULL) {
        fprintf(stderr, "ckprep run: %s is required\n%s",
                cpath == NULL ? "-c CONF" : "an input file", usage_run);
        return EXIT_USAGE;
    }
    if (load_conf(cpath, &conf) < 0)
        return EXIT_USAGE;
    if (out == NULL) {
        def_out = ck_job_default_out(in);
        if (def_out == NULL) {
            fprintf(stderr, "ckprep: out of memory\n");
            ck_conf_release(&conf);
            return EXIT_FILE;
        }
        out = def_out;
    }
    args.in = in;
    args.out = out;
    if (enter_sandbox(in, cpath, &conf, out) < 0) {
        ck_conf_release(&conf);
        ck_free(def_out);
        return EXIT_FILE;
    }
    rc = ck_job_run(&conf, &args, &rec, &err);
    if (rc < 0)
        say(in, NULL, err.msg);
    else if (ck_json_text(&rec) != NULL)
        printf("%s\n", ck_json_text(&rec));
    ck_json_release(&rec);
    ck_conf_release(&conf);
    ck_free(def_out);
    return rc < 0 ? EXIT_FILE : 0;
}

static int cmd_inspect(int argc, char **argv)
{
    const char *path = NULL, *cpath = NULL;
    ck_conf_t conf;
    ck_open_opts_t opts = { 0 };
    ck_ckpt_t c;
    ck_err_t err = { 0 };
    int json = 0, rc;

    for (int i = 0; i < argc; i++) {
        if (arg_is(argv[i], "-h", "--help")) {
            fputs(usage_inspect, stdout);
            return 0;
        } else if (arg_is(argv[i], NULL, "--json")) {
            json = 1;
        } else if (arg_is(argv[i], "-c", "--config") && i + 1 < argc) {
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
    memset(&conf, 0, sizeof(conf));
    if (cpath != NULL && load_conf(cpath, &conf) < 0)
        return EXIT_USAGE;
    ck_conf_limits(cpath ? &conf : NULL, &opts.lim);
    opts.allow = cpath ? conf.allow : NULL;
    if (enter_sandbox(path, cpath, &conf, NULL) < 0) {
        ck_conf_release(&conf);
        return EXIT_FILE;
    }
    rc = ck_ckpt_open(&c, path, &opts, &err);
    if (rc == 0)
        rc = ck_ckpt_validate(&c, &err); /* as run validates */
    if (rc < 0) {
        say(path, NULL, err.msg);
    } else if (json) {
        ck_json_t j = { 0 };

        rc = ck_inspect_json(&c, &j);
        if (rc == 0 && ck_json_text(&j) != NULL)
            printf("%s\n", ck_json_text(&j));
        else
            fprintf(stderr, "ckprep: %s: out of memory\n", path);
        ck_json_release(&j);
    } else {
        rc = ck_inspect_text(&c, stdout);
    }
    ck_ckpt_close(&c);
    ck_conf_release(&conf);
    return rc < 0 ? EXIT_FILE : 0;
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
    { "check", cmd_check, usage_check },
    { "watch", cmd_watch, usage_watch },
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
