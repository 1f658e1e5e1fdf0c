/*
 * watch_metrics.c -- metrics_file: the daemon's counters in the Prometheus
 * text exposition format, for node_exporter's textfile collector.  See
 * watch_int.h.
 *
 * The file is written whole and renamed into place (ck_write_atomic)
 * every metrics_s and at exit, so the collector never reads half of it.
 * Counters count since the daemon started (Prometheus takes a restart's
 * reset in its stride); each family has its # HELP and # TYPE line; label
 * values are escaped (backslash, double quote, newline); the duration
 * histogram's buckets are cumulative and end with le="+Inf".  Loop thread
 * only.
 */
#define _GNU_SOURCE
#include "watch_int.h"

#include "fsutil.h"
#include "log.h"
#include "record.h"

#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* Upper bounds of the duration buckets, in seconds (+Inf after). */
static const double bounds[METRIC_BUCKETS - 1] = { 0.1, 0.5, 1, 5, 10, 30,
                                                   60, 300, 900 };

void watch_metrics_job(daemon_t *d, const char *rec)
{
    metrics_t *m = &d->m;
    ck_record_t r;
    double secs;
    size_t b = 0;

    if (ck_record_parse(rec, strlen(rec), &r) < 0)
        return;
    m->bytes_in += r.in.size;
    if (r.wrote)
        m->bytes_out += r.out.size;
    secs = (double)r.duration_ms / 1000.0;
    while (b < METRIC_BUCKETS - 1 && secs > bounds[b])
        b++;
    m->hist[b]++;
    m->dur_count++;
    m->dur_sum += secs;
    if (r.status != NULL && strcmp(r.status, "ok") == 0) {
        struct timespec now;

        clock_gettime(CLOCK_REALTIME, &now);
        m->last_ok = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
    } else {
        const char *cause = r.error_code ? r.error_code : "unknown";
        size_t i = 0;

        /* the first METRIC_CAUSES causes apart, the rest as "other" */
        while (i < METRIC_CAUSES && m->causes[i].name[0] != '\0' &&
               strcmp(m->causes[i].name, cause) != 0)
            i++;
        if (i == METRIC_CAUSES)
            cause = "other", i = METRIC_CAUSES - 1;
        if (m->causes[i].name[0] == '\0')
            snprintf(m->causes[i].name, sizeof(m->causes[i].name), "%s",
                     cause);
        m->causes[i].n++;
    }
    ck_record_release(&r);
}

/* "# HELP" and "# TYPE" of a family. */
static void family(ck_buf_t *b, const char *name, const char *type,
                   const char *help)
{
    ck_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void gauge(ck_buf_t *b, const char *name, const char *type,
                  const char *help, double v)
{
    family(b, name, type, help);
    ck_buf_printf(b, "%s %.17g\n", name, v);
}

/* A label value, escaped as the format says: \\ \" \n. */
static void label(ck_buf_t *b, const char *v)
{
    ck_buf_putc(b, '"');
    for (; *v != '\0'; v++) {
        if (*v == '\\' || *v == '"')
            ck_buf_printf(b, "\\%c", *v);
        else if (*v == '\n')
            ck_buf_put(b, "\\n", 2);
        else
            ck_buf_putc(b, *v);
    }
    ck_buf_putc(b, '"');
}

static void render(daemon_t *d, ck_buf_t *b)
{
    const metrics_t *m = &d->m;
    uint64_t cum = 0;

    gauge(b, "ckprep_jobs_done_total", "counter",
          "Jobs that wrote their output.", (double)d->nok);
    family(b, "ckprep_jobs_failed_total", "counter",
           "Jobs that failed, by cause (the record's error code).");
    for (size_t i = 0; i < METRIC_CAUSES && m->causes[i].name[0]; i++) {
        ck_buf_printf(b, "ckprep_jobs_failed_total{cause=");
        label(b, m->causes[i].name);
        ck_buf_printf(b, "} %llu\n", (unsigned long long)m->causes[i].n);
    }
    gauge(b, "ckprep_input_bytes_total", "counter",
          "Bytes of the inputs of finished jobs.", (double)m->bytes_in);
    gauge(b, "ckprep_output_bytes_total", "counter",
          "Bytes of the outputs written.", (double)m->bytes_out);
    gauge(b, "ckprep_files_waiting", "gauge",
          "Files seen in incoming, waiting to be complete.",
          (double)d->npending);
    gauge(b, "ckprep_queue_length", "gauge",
          "Files claimed, waiting for a worker.", (double)d->nqueued);
    gauge(b, "ckprep_jobs_running", "gauge", "Jobs running now.",
          (double)d->nrunning);
    gauge(b, "ckprep_claims_held", "gauge",
          "Claims this daemon holds (queued and running files).",
          (double)(d->nqueued + d->nrunning));
    gauge(b, "ckprep_last_success_timestamp_seconds", "gauge",
          "Unix time of the last job that wrote its output (0: none yet).",
          m->last_ok);
    gauge(b, "ckprep_rescans_total", "counter", "Full scans of incoming.",
          (double)m->rescans);
    gauge(b, "ckprep_inotify_overflows_total", "counter",
          "Times the inotify queue overflowed (each followed by a rescan).",
          (double)m->overflows);
    family(b, "ckprep_job_duration_seconds", "histogram",
           "Time a finished job took.");
    for (size_t i = 0; i < METRIC_BUCKETS; i++) {
        cum += m->hist[i];
        if (i < METRIC_BUCKETS - 1)
            ck_buf_printf(b, "ckprep_job_duration_seconds_bucket{le=\"%g\"} "
                          "%llu\n", bounds[i], (unsigned long long)cum);
        else
            ck_buf_printf(b, "ckprep_job_duration_seconds_bucket{le=\"+Inf\"}"
                          " %llu\n", (unsigned long long)cum);
    }
    ck_buf_printf(b, "ckprep_job_duration_seconds_sum %.17g\n", m->dur_sum);
    ck_buf_printf(b, "ckprep_job_duration_seconds_count %llu\n",
                  (unsigned long long)m->dur_count);
}

void watch_metrics_write(daemon_t *d)
{
    ck_buf_t b = { 0 };
    int rc;

    if (d->w->metrics_file == NULL)
        return;
    render(d, &b);
    rc = b.oom ? -ENOMEM : ck_write_atomic(d->w->metrics_file, b.data, b.len,
                                           0644);
    /* the collector runs as another user: readable whatever the umask */
    if (rc == 0)
        chmod(d->w->metrics_file, 0644);
    else
        ck_log(CK_LOG_WARNING, "metrics_file %s: %s", d->w->metrics_file,
               strerror(-rc));
    ck_buf_release(&b);
}

void watch_metrics_cb(uv_timer_t *t)
{
    watch_metrics_write(t->data);
}
