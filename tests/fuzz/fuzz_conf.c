/*
 * fuzz_conf.c -- libFuzzer target for the INI configuration loader: inih,
 * the section and chain resolution, every directive setter and check of
 * [pipeline], [security] and each plugin section, defaults and init_conf.
 *
 * Input: the text of a configuration file, written to conf.ini in a private
 * folder under $TMPDIR (or /tmp) because ck_conf_load takes a path; the
 * folder is removed at exit.
 */
#define _GNU_SOURCE
#include "conf.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[4096];
static char path[4200];

static void cleanup(void)
{
    unlink(path);
    rmdir(dir);
}

static void setup(void)
{
    const char *tmp = getenv("TMPDIR");

    snprintf(dir, sizeof(dir), "%s/ckprep-fuzz.XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror(dir);
        abort();
    }
    snprintf(path, sizeof(path), "%s/conf.ini", dir);
    atexit(cleanup);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ck_conf_t conf;
    ck_limits_t lim;
    ck_err_t err = { 0 };
    int fd;

    if (dir[0] == '\0')
        setup();
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (size > 0 && write(fd, data, size) != (ssize_t)size)) {
        perror(path);
        abort();
    }
    close(fd);
    if (ck_conf_load(&conf, path, &err) == 0) {
        ck_conf_limits(&conf, &lim);
        if (err.code != 0)
            abort(); /* success with an error recorded */
    } else if (err.code == 0 || err.msg[0] == '\0') {
        abort(); /* a failure must say why */
    }
    ck_conf_release(&conf);
    unlink(path);
    return 0;
}
