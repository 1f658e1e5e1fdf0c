/*
 * fuzz_ckpt.c -- libFuzzer target for the checkpoint opener (zip format);
 * fuzz_legacy.c includes it with FUZZ_LEGACY for the legacy stream, and
 * fuzz_tar.c with FUZZ_TAR for legacy files that are also tar archives.
 *
 * Input: a whole checkpoint file.  It is written to a file in a private
 * temporary folder (ck_ckpt_open takes a path and refuses symlinks, so a
 * memfd's /proc path will not do) and goes the way `ckprep inspect` and
 * `ckprep run` take it:
 *  - ck_ckpt_open with the default limits: the full validation;
 *  - when it opens: both inspect reports, ck_ckpt_write, and the written
 *    file must open again (what ckprep writes, ckprep reads);
 *  - two jobs as `ckprep run` runs them, with every plugin in the chain:
 *    one writes (the output must open again), one is a dry run with a YAML
 *    string config.
 * The folder is $TMPDIR (or /tmp) /ckprep-fuzz.XXXXXX, emptied after each
 * input and removed at exit; `make fuzz` also runs each target inside a
 * folder of its own that it removes.
 */
#define _GNU_SOURCE
#include "conf.h"
#include "inspect.h"
#include "job.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every plugin, on the shape of an AudioCraft checkpoint. */
static const char conf_write[] =
    "[security]\n"
    "allow_numpy = yes\n"
    "[pipeline]\n"
    "chain = optimizer_strip prefix_select key_remap head_init "
    "config_override tree cast\n"
    "[optimizer_strip]\n"
    "drop = optimizer lr_scheduler\n"
    "[prefix_select]\n"
    "state = model\n"
    "drop = linears.\n"
    "[key_remap]\n"
    "state = model best_state/model\n"
    "rename = emb. => embeddings.\n"
    "rename = re:^(.*)\\.bias$ => \\1.b\n"
    "on_conflict = replace\n"
    "[head_init]\n"
    "state = model\n"
    "seed = 7\n"
    "add = head.weight float16 4x3 normal(0,0.02)\n"
    "add = head.bias float32 4 zeros\n"
    "add = head.copy float32 like:embeddings.0.weight "
    "copy(embeddings.0.weight)\n"
    "on_exists = replace\n"
    "[config_override]\n"
    "set = ++optim.lr=1e-5\n"
    "set = ++dataset.train.path=/new/path\n"
    "set = ++new.list=[1, 2.5, {a: b}]\n"
    "set = ~sample_rate\n"
    "[tree]\n"
    "copy = model => copied/model\n"
    "move = ema? => old/ema\n"
    "delete = lr_scheduler?\n"
    "[cast]\n"
    "state = model\n"
    "to = float16\n";

/* A config that is a YAML string, and Lightning's layout. */
static const char conf_dry[] =
    "[security]\n"
    "allow_numpy = yes\n"
    "[pipeline]\n"
    "chain = config_override optimizer_strip prefix_select\n"
    "[config_override]\n"
    "config = cfg\n"
    "set = ++optim.lr=1e-5\n"
    "set = +added.key=${optim.lr}\n"
    "[optimizer_strip]\n"
    "drop = optimizer_states lr_schedulers\n"
    "[prefix_select]\n"
    "state = state_dict\n"
    "keep = model.\n"
    "strip = yes\n";

static char dir[4096];
static char in_path[4200], out_path[4200], out2_path[4200];
static ck_conf_t confs[2];
static FILE *devnull;

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "fuzz_ckpt: %s: %s\n", what, msg);
    abort();
}

static int put_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ssize_t w = -1;

    if (fd < 0)
        return -1;
    if (n == 0 || (w = write(fd, p, n)) == (ssize_t)n)
        w = 0;
    close(fd);
    return w == 0 ? 0 : -1;
}

static void cleanup(void)
{
    char p[4200];

    ck_conf_release(&confs[0]);
    ck_conf_release(&confs[1]);
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof(p), "%s/conf%d.ini", dir, i);
        unlink(p);
    }
    unlink(in_path);
    unlink(out_path);
    unlink(out2_path);
    rmdir(dir);
    if (devnull != NULL)
        fclose(devnull);
}

static void setup(void)
{
    const char *texts[2] = { conf_write, conf_dry };
    const char *tmp = getenv("TMPDIR");
    char p[4200];

    snprintf(dir, sizeof(dir), "%s/ckprep-fuzz.XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL)
        die("mkdtemp", dir);
    snprintf(in_path, sizeof(in_path), "%s/in.pt", dir);
    snprintf(out_path, sizeof(out_path), "%s/out.pt", dir);
    snprintf(out2_path, sizeof(out2_path), "%s/out2.pt", dir);
    for (int i = 0; i < 2; i++) {
        ck_err_t err = { 0 };

        snprintf(p, sizeof(p), "%s/conf%d.ini", dir, i);
        if (put_file(p, texts[i], strlen(texts[i])) < 0)
            die("writing a config", p);
        if (ck_conf_load(&confs[i], p, &err) < 0)
            die("loading a config", err.msg);
    }
    devnull = fopen("/dev/null", "w");
    if (devnull == NULL)
        die("open", "/dev/null");
    atexit(cleanup);
}

/* What ckprep wrote must open again. */
static void reopen(const char *path, const char *what)
{
    ck_open_opts_t o = { 0 };
    ck_err_t err = { 0 };
    ck_ckpt_t c;

    ck_conf_limits(NULL, &o.lim);
    o.allow_numpy = 1;
    if (ck_ckpt_open(&c, path, &o, &err) < 0 || ck_ckpt_validate(&c, &err) < 0)
        die(what, err.msg);
    ck_ckpt_close(&c);
    unlink(path);
}

static int drop(void *ud, const uint8_t *p, size_t n)
{
    (void)ud, (void)p, (void)n;
    return 0;
}

/* The open's proof that the writer cannot refuse the graph as read
 * (c->write_safe, for which ck_ckpt_validate skips its scratch write)
 * holds: the writer does not refuse it. */
static void write_safe_holds(ck_ckpt_t *c)
{
    ck_buf_t b = { .drain = drop };
    ck_err_t err = { 0 };

    if (ck_pickle_write(c->pk.root, &c->lim, &c->arena, NULL, NULL, &b,
                        &err) < 0 && err.code != CK_ENOMEM)
        die("the writer refused a graph the scan proved it could write",
            err.msg);
    ck_buf_release(&b);
}

static void job(int which, const char *out)
{
    ck_job_args_t args = { .in = in_path, .out = out, .dry_run = out == NULL };
    ck_json_t rec = { 0 };
    ck_err_t err = { 0 };

    if (ck_job_run(&confs[which], &args, &rec, &err) == 0 && out != NULL)
        reopen(out, "reopening the job's output");
    ck_json_release(&rec);
    unlink(out2_path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ck_open_opts_t o = { 0 };
    ck_write_info_t info;
    ck_err_t err = { 0 };
    ck_json_t j = { 0 };
    ck_ckpt_t c;
    int rc;

#if defined(FUZZ_LEGACY) || defined(FUZZ_TAR)
    if (size >= 4 && memcmp(data, "PK\x03\x04", 4) == 0)
        return 0; /* the zip format is fuzz_ckpt's */
#endif
    if (dir[0] == '\0')
        setup();
    if (put_file(in_path, data, size) < 0)
        die("writing the input", in_path);
    ck_conf_limits(NULL, &o.lim);
    o.allow_numpy = 1; /* numpy values checked too (core/numpy.c) */
    rc = ck_ckpt_open(&c, in_path, &o, &err);
    if (rc == 0 && c.write_safe)
        write_safe_holds(&c);
    if (rc == 0)
        rc = ck_ckpt_validate(&c, &err); /* as inspect and run */
#ifdef FUZZ_TAR
    /* what Python's tarfile takes for a tar, torch 1.13 unpickles as one */
    if (rc == 0 && ck_tar_header(data, size))
        die("accepted a file that reads as a tar archive", in_path);
#endif
    if (rc == 0) {
        ck_inspect_json(&c, &j);
        ck_inspect_text(&c, devnull);
        memset(&err, 0, sizeof(err));
        if (ck_ckpt_write(&c, out_path, &info, &err) == 0)
            reopen(out_path, "reopening what was written");
    }
    ck_json_release(&j);
    ck_ckpt_close(&c);
    if (rc == 0) {
        job(0, out2_path);
        job(1, NULL);
    }
    unlink(in_path);
    return 0;
}
