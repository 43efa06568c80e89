/*
 * test_metrics.c - registration rules, concurrent updates, exposition format.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "metrics/metrics.h"

static double answer(void *ctx)
{
    return *(double *)ctx;
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
    assert_int_equal(metrics_render(m, &out), 0);
    assert_int_equal(buf_append(&out, "", 1), 0);
    const char *t = (const char *)out.data;
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
        cmocka_unit_test(test_render_format),
        cmocka_unit_test(test_registration_errors),
        cmocka_unit_test(test_concurrent_updates),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
