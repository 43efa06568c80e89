/*
 * test_metrics.c - registration rules (names, types, labels), concurrent
 * updates, collectors, and the exposition format: every render is also run
 * through check_exposition(), a small validator of the text format 0.0.4 rules
 * Prometheus applies (HELP/TYPE once per family before its samples, counter
 * names ending in _total, cumulative histogram buckets ending in +Inf equal
 * to _count).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/metrics.h"

static double answer(void *ctx)
{
    return *(double *)ctx;
}

static bool has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && strcmp(s + n - k, suf) == 0;
}

/* Validates text as Prometheus exposition format; returns the number of samples. Fails
 * the test (with the offending line) on any violation. */
static size_t check_exposition(const char *text)
{
    char fam[256] = "", type[32] = "";
    static char seen[256][256];
    size_t n_seen = 0, samples = 0;
    double last_le = -INFINITY, last_bucket = 0;
    bool in_buckets = false;
    char lines[8192];
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl); /* every line ends with a newline */
        size_t len = (size_t)(nl - p);
        assert_true(len < sizeof(lines));
        memcpy(lines, p, len);
        lines[len] = '\0';
        p = nl + 1;
        char name[256], kind[32];
        if (strncmp(lines, "# HELP ", 7) == 0) {
            assert_int_equal(sscanf(lines + 7, "%255s", name), 1);
            for (size_t i = 0; i < n_seen; i++)
                if (strcmp(seen[i], name) == 0) fail_msg("family %s twice: %s", name, lines);
            assert_true(n_seen < 256);
            snprintf(seen[n_seen++], sizeof(seen[0]), "%s", name);
            snprintf(fam, sizeof(fam), "%s", name);
            type[0] = '\0';
            continue;
        }
        if (strncmp(lines, "# TYPE ", 7) == 0) {
            assert_int_equal(sscanf(lines + 7, "%255s %31s", name, kind), 2);
            if (strcmp(name, fam) != 0) fail_msg("TYPE without its HELP: %s", lines);
            snprintf(type, sizeof(type), "%s", kind);
            if (strcmp(kind, "counter") == 0 && !has_suffix(name, "_total"))
                fail_msg("counter not ending in _total: %s", lines);
            if (strcmp(kind, "counter") != 0 && has_suffix(name, "_total"))
                fail_msg("%s ending in _total: %s", kind, lines);
            in_buckets = false;
            continue;
        }
        assert_true(lines[0] != '#' && lines[0] != '\0');
        if (!type[0]) fail_msg("sample before its TYPE: %s", lines);
        /* name{labels} value */
        size_t nlen = strcspn(lines, "{ ");
        assert_true(nlen > 0 && nlen < sizeof(name));
        memcpy(name, lines, nlen);
        name[nlen] = '\0';
        const char *rest = lines + nlen;
        char labels[4096] = "";
        if (*rest == '{') {
            const char *close = strrchr(rest, '}');
            if (!close) fail_msg("unclosed labels: %s", lines);
            memcpy(labels, rest + 1, (size_t)(close - rest - 1));
            labels[close - rest - 1] = '\0';
            rest = close + 1;
        }
        if (*rest != ' ') fail_msg("no space before the value: %s", lines);
        char *end = NULL;
        double v = strtod(rest + 1, &end);
        if (end == rest + 1 || *end != '\0') fail_msg("bad value: %s", lines);
        samples++;
        if (strcmp(type, "histogram") != 0) {
            if (strcmp(name, fam) != 0) fail_msg("sample outside its family %s: %s", fam, lines);
            continue;
        }
        char want[300];
        snprintf(want, sizeof(want), "%s_bucket", fam);
        if (strcmp(name, want) == 0) {
            const char *le = strstr(labels, "le=\"");
            if (!le) fail_msg("bucket without le: %s", lines);
            double bound = strncmp(le + 4, "+Inf", 4) == 0 ? INFINITY : strtod(le + 4, NULL);
            if (in_buckets && !(bound > last_le)) fail_msg("le not increasing: %s", lines);
            if (in_buckets && v < last_bucket) fail_msg("buckets not cumulative: %s", lines);
            in_buckets = !isinf(bound);
            last_le = in_buckets ? bound : -INFINITY;
            last_bucket = v; /* after +Inf: compared with _count below */
            continue;
        }
        snprintf(want, sizeof(want), "%s_count", fam);
        if (strcmp(name, want) == 0) {
            if (v != last_bucket) fail_msg("_count is not the +Inf bucket: %s", lines);
            continue;
        }
        snprintf(want, sizeof(want), "%s_sum", fam);
        if (strcmp(name, want) != 0) fail_msg("sample outside its family %s: %s", fam, lines);
    }
    return samples;
}

static char *render(struct metrics *m, struct buf *out)
{
    buf_reset(out);
    assert_int_equal(metrics_render(m, out), 0);
    assert_int_equal(buf_append(out, "", 1), 0);
    check_exposition((const char *)out->data);
    return (char *)out->data;
}

static void test_render_format(void **state)
{
    (void)state;
    struct metrics *m = metrics_create();
    struct trine_err err = {0};
    struct metric *put = metrics_counter(m, "trine_requests_total", "Requests served.",
                                         "op=\"put\",consistency=\"strong\"", &err);
    struct metric *get = metrics_counter(m, "trine_requests_total", "Requests served.",
                                         "op=\"get\",consistency=\"fast\"", &err);
    struct metric *g =
        metrics_gauge(m, "trine_raft_term", "Current term.", "partition=\"3\"", &err);
    double v = 42.5;
    assert_non_null(metrics_gauge_fn(m, "trine_answer", "Computed.", NULL, answer, &v, &err));
    const double b[] = {0.001, 0.01, 0.1};
    struct metric *h =
        metrics_histogram(m, "trine_fsync_seconds", "Fsync latency.", NULL, b, 3, &err);
    assert_non_null(put);
    assert_non_null(get);
    assert_non_null(g);
    assert_non_null(h);
    metric_add(put, 3);
    metric_inc(get);
    metric_set(g, 7);
    metric_observe(h, 0.0005);
    metric_observe(h, 0.05);
    metric_observe(h, 5);

    struct buf out;
    buf_init(&out);
    const char *t = render(m, &out);
    assert_non_null(strstr(t, "# HELP trine_requests_total Requests served.\n"
                              "# TYPE trine_requests_total counter\n"
                              "trine_requests_total{op=\"put\",consistency=\"strong\"} 3\n"
                              "trine_requests_total{op=\"get\",consistency=\"fast\"} 1\n"));
    assert_non_null(
        strstr(t, "# TYPE trine_raft_term gauge\ntrine_raft_term{partition=\"3\"} 7\n"));
    assert_non_null(strstr(t, "trine_answer 42.5\n"));
    assert_non_null(strstr(t, "# TYPE trine_fsync_seconds histogram\n"
                              "trine_fsync_seconds_bucket{le=\"0.001\"} 1\n"
                              "trine_fsync_seconds_bucket{le=\"0.01\"} 1\n"
                              "trine_fsync_seconds_bucket{le=\"0.1\"} 2\n"
                              "trine_fsync_seconds_bucket{le=\"+Inf\"} 3\n"
                              "trine_fsync_seconds_sum 5.0505\n"
                              "trine_fsync_seconds_count 3\n"));
    /* The HELP/TYPE header appears once per family. */
    assert_null(
        strstr(strstr(t, "# TYPE trine_requests_total") + 1, "# TYPE trine_requests_total"));
    buf_free(&out);
    metrics_destroy(m);
}

static void test_registration_errors(void **state)
{
    (void)state;
    struct metrics *m = metrics_create();
    struct trine_err err = {0};
    assert_null(metrics_counter(m, "9bad", "", NULL, &err));
    assert_int_equal(err.code, -TRINE_EINVALID);
    assert_null(metrics_counter(m, "bad-name", "", NULL, &err));
    assert_non_null(metrics_counter(m, "trine_x_total", "", "a=\"1\"", &err));
    assert_null(metrics_counter(m, "trine_x_total", "", "a=\"1\"", &err));
    assert_int_equal(err.code, -TRINE_EEXISTS);
    assert_null(metrics_gauge(m, "trine_x_total", "", "a=\"2\"", &err));
    assert_int_equal(err.code, -TRINE_EINVALID);
    assert_null(metrics_counter(m, "trine_y", "", "a=\"}\"", &err));
    const double desc[] = {1, 0.5};
    assert_null(metrics_histogram(m, "trine_h", "", NULL, desc, 2, &err));
    char esc[32];
    assert_string_equal(metrics_label_escape("a\"b\\c\nd", esc, sizeof(esc)), "a\\\"b\\\\c\\nd");
    metrics_destroy(m);
}

static void test_naming_rules(void **state)
{
    (void)state;
    struct metrics *m = metrics_create();
    struct trine_err err = {0};
    /* counters end in _total, nothing else does */
    assert_null(metrics_counter(m, "trine_requests", "", NULL, &err));
    assert_int_equal(err.code, -TRINE_EINVALID);
    assert_non_null(strstr(err.msg, "_total"));
    assert_null(metrics_gauge(m, "trine_things_total", "", NULL, &err));
    const double b[] = {1, 2};
    assert_null(metrics_histogram(m, "trine_x_seconds_total", "", NULL, b, 2, &err));
    /* the histogram series suffixes are reserved */
    assert_null(metrics_gauge(m, "trine_x_bucket", "", NULL, &err));
    assert_null(metrics_gauge(m, "trine_x_count", "", NULL, &err));
    assert_null(metrics_histogram(m, "trine_x_sum", "", NULL, b, 2, &err));
    char longname[200];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_null(metrics_gauge(m, longname, "", NULL, &err));
    assert_non_null(metrics_counter(m, "trine_ok_bytes_total", "", NULL, &err));
    assert_non_null(metrics_gauge(m, "trine_ok_bytes", "", NULL, &err));
    assert_non_null(metrics_histogram(m, "trine_ok_seconds", "", NULL, b, 2, &err));
    metrics_destroy(m);
}

static void test_histogram_buckets(void **state)
{
    (void)state;
    /* the default latency buckets: increasing, 50 us to 10 s */
    assert_true(metrics_latency_buckets_n >= 10 &&
                metrics_latency_buckets_n <= METRICS_BUCKETS_MAX);
    assert_true(metrics_latency_buckets[0] == 0.00005);
    assert_true(metrics_latency_buckets[metrics_latency_buckets_n - 1] == 10);
    for (size_t i = 1; i < metrics_latency_buckets_n; i++)
        assert_true(metrics_latency_buckets[i] > metrics_latency_buckets[i - 1]);

    struct metrics *m = metrics_create();
    struct trine_err err = {0};
    const double b[] = {1, 4, 16};
    struct metric *h =
        metrics_histogram(m, "trine_wal_batch_records", "Records per batch.", NULL, b, 3, &err);
    assert_non_null(h);
    /* le is inclusive: a value on a bound counts in that bucket */
    const double vals[] = {1, 1, 2, 4, 5, 16, 17, 1000};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
        metric_observe(h, vals[i]);
    struct buf out;
    buf_init(&out);
    const char *t = render(m, &out);
    assert_non_null(strstr(t, "# TYPE trine_wal_batch_records histogram\n"
                              "trine_wal_batch_records_bucket{le=\"1\"} 2\n"
                              "trine_wal_batch_records_bucket{le=\"4\"} 4\n"
                              "trine_wal_batch_records_bucket{le=\"16\"} 6\n"
                              "trine_wal_batch_records_bucket{le=\"+Inf\"} 8\n"
                              "trine_wal_batch_records_sum 1046\n"
                              "trine_wal_batch_records_count 8\n"));
    /* a labelled histogram puts le after the series' own labels */
    struct metric *hl = metrics_histogram(m, "trine_request_duration_seconds", "Latency.",
                                          "op=\"put\",consistency=\"all\"", metrics_latency_buckets,
                                          metrics_latency_buckets_n, &err);
    assert_non_null(hl);
    metric_observe(hl, 0.003);
    t = render(m, &out);
    assert_non_null(strstr(t, "trine_request_duration_seconds_bucket{op=\"put\",consistency="
                              "\"all\",le=\"0.0025\"} 0\n"
                              "trine_request_duration_seconds_bucket{op=\"put\",consistency="
                              "\"all\",le=\"0.005\"} 1\n"));
    assert_non_null(strstr(t, "trine_request_duration_seconds_bucket{op=\"put\",consistency="
                              "\"all\",le=\"5e-05\"} 0\n"));
    assert_non_null(strstr(t, "trine_request_duration_seconds_count{op=\"put\",consistency="
                              "\"all\"} 1\n"));
    buf_free(&out);
    metrics_destroy(m);
}

static void test_number_format(void **state)
{
    (void)state;
    struct metrics *m = metrics_create();
    struct trine_err err = {0};
    struct metric *big = metrics_counter(m, "trine_big_bytes_total", "Big.", NULL, &err);
    struct metric *g1 = metrics_gauge(m, "trine_g", "Tenth.", "k=\"a\"", &err);
    struct metric *g2 = metrics_gauge(m, "trine_g", "Tenth.", "k=\"b\"", &err);
    struct metric *g3 = metrics_gauge(m, "trine_g", "Tenth.", "k=\"c\"", &err);
    struct metric *g4 = metrics_gauge(m, "trine_g", "Tenth.", "k=\"d\"", &err);
    assert_non_null(metrics_gauge(m, "trine_escaped", "back\\slash and\nnewline", NULL, &err));
    metric_add(big, (1ull << 60) + 1); /* not representable as a double */
    metric_set(g1, 0.1);
    metric_set(g2, 1e20);
    metric_set(g3, -INFINITY);
    metric_set(g4, 1.0 / 3.0);
    struct buf out;
    buf_init(&out);
    const char *t = render(m, &out);
    assert_non_null(strstr(t, "trine_big_bytes_total 1152921504606846977\n"));
    assert_non_null(strstr(t, "trine_g{k=\"a\"} 0.1\n"));
    assert_non_null(strstr(t, "trine_g{k=\"b\"} 1e+20\n"));
    assert_non_null(strstr(t, "trine_g{k=\"c\"} -Inf\n"));
    assert_non_null(strstr(t, "trine_g{k=\"d\"} 0.3333333333333333\n"));
    assert_non_null(strstr(t, "# HELP trine_escaped back\\\\slash and\\nnewline\n"));
    buf_free(&out);
    metrics_destroy(m);
}

struct coll {
    int mode; /* 0 good, 1 registered name, 2 twice, 3 bad counter name */
    double v;
};

static void collect(void *ctx, struct metrics_sink *k)
{
    struct coll *c = ctx;
    metrics_emit_family(k, "trine_raft_term", METRICS_GAUGE, "Raft term.");
    metrics_emit(k, "partition=\"0\"", 3);
    metrics_emit(k, "partition=\"1\"", c->v);
    metrics_emit_family(k, "trine_snapshots_sent_total", METRICS_COUNTER, "Snapshots.");
    metrics_emit(k, NULL, 2);
    metrics_emit_family(k, "trine_empty", METRICS_GAUGE, "No samples.");
    if (c->mode == 1) metrics_emit_family(k, "trine_requests_total", METRICS_COUNTER, "Dup.");
    if (c->mode == 2) metrics_emit_family(k, "trine_raft_term", METRICS_GAUGE, "Again.");
    if (c->mode == 3) metrics_emit_family(k, "trine_snapshots", METRICS_COUNTER, "Bad.");
    if (c->mode) metrics_emit(k, NULL, 99); /* dropped with the refused family */
}

static void test_collectors(void **state)
{
    (void)state;
    struct metrics *m = metrics_create();
    struct trine_err err = {0};
    struct metric *c = metrics_counter(m, "trine_requests_total", "Requests.", NULL, &err);
    metric_inc(c);
    struct coll a = {0, 7};
    assert_int_equal(metrics_collector(m, collect, &a, &err), 0);
    struct buf out;
    buf_init(&out);
    const char *t = render(m, &out);
    /* registered series first, then the collector's families, each with its header */
    const char *req = strstr(t, "trine_requests_total 1\n");
    const char *term = strstr(t, "# HELP trine_raft_term Raft term.\n# TYPE trine_raft_term gauge\n"
                                 "trine_raft_term{partition=\"0\"} 3\n"
                                 "trine_raft_term{partition=\"1\"} 7\n");
    assert_non_null(req);
    assert_non_null(term);
    assert_true(req < term);
    assert_non_null(strstr(t, "# TYPE trine_snapshots_sent_total counter\n"
                              "trine_snapshots_sent_total 2\n"));
    assert_non_null(strstr(t, "# TYPE trine_empty gauge\n"));
    /* values are read at every render */
    a.v = 8;
    t = render(m, &out);
    assert_non_null(strstr(t, "trine_raft_term{partition=\"1\"} 8\n"));
    /* a collector that breaks the rules fails the render */
    const int want[] = {0, -TRINE_EEXISTS, -TRINE_EEXISTS, -TRINE_EINVALID};
    for (int mode = 1; mode <= 3; mode++) {
        a.mode = mode;
        buf_reset(&out);
        assert_int_equal(metrics_render(m, &out), want[mode]);
        assert_int_equal(buf_append(&out, "", 1), 0);
        assert_null(strstr((const char *)out.data, " 99\n"));
    }
    a.mode = 0;
    /* removed: its families are gone */
    metrics_collector_remove(m, collect, &a);
    metrics_collector_remove(m, collect, &a); /* twice is harmless */
    t = render(m, &out);
    assert_null(strstr(t, "trine_raft_term"));
    assert_non_null(strstr(t, "trine_requests_total 1\n"));
    buf_free(&out);
    metrics_destroy(m);
}

struct worker {
    struct metric *c, *h;
};

static void *hammer(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 100000; i++) {
        metric_inc(w->c);
        metric_observe(w->h, 1.0);
    }
    return NULL;
}

static void test_concurrent_updates(void **state)
{
    (void)state;
    struct metrics *m = metrics_create();
    struct trine_err err = {0};
    struct worker w = {metrics_counter(m, "trine_c_total", "", NULL, &err),
                       metrics_histogram(m, "trine_h_seconds", "", NULL, metrics_latency_buckets,
                                         metrics_latency_buckets_n, &err)};
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, hammer, &w);
    struct buf out;
    buf_init(&out);
    for (int i = 0; i < 50; i++) { /* render while they write */
        buf_reset(&out);
        assert_int_equal(metrics_render(m, &out), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_true(metric_value(w.c) == 400000.0);
    buf_reset(&out);
    metrics_render(m, &out);
    buf_append(&out, "", 1);
    assert_non_null(strstr((char *)out.data, "trine_h_seconds_sum 400000\n"));
    assert_non_null(strstr((char *)out.data, "trine_h_seconds_count 400000\n"));
    buf_free(&out);
    metrics_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_format),      cmocka_unit_test(test_registration_errors),
        cmocka_unit_test(test_concurrent_updates), cmocka_unit_test(test_naming_rules),
        cmocka_unit_test(test_histogram_buckets),  cmocka_unit_test(test_number_format),
        cmocka_unit_test(test_collectors),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
