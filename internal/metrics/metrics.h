/*
 * metrics.h - counters, gauges and histograms rendered in the Prometheus text
 * exposition format (version 0.0.4).
 *
 * A series is a (name, labels) pair registered once at start-up; the returned
 * handle is updated on hot paths with relaxed atomics, so any thread may
 * update any series while another thread renders. Registration and rendering
 * take a mutex; registration is not meant for hot paths.
 *
 * Labels are passed pre-formatted as the text between the braces, e.g.
 * `op="put",consistency="strong"` (NULL or "" for none); values must already
 * be escaped (metrics_label_escape helps). Series with the same name form one
 * family and must share its type and help text.
 *
 * Ownership: the registry owns every series; handles stay valid until
 * metrics_destroy.
 */
#ifndef TRINE_METRICS_METRICS_H
#define TRINE_METRICS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/status.h"

struct metrics;
struct metric;

#define METRICS_BUCKETS_MAX 32

/* Default latency buckets in seconds: 50 us .. 10 s. */
extern const double metrics_latency_buckets[];
extern const size_t metrics_latency_buckets_n;

struct metrics *metrics_create(void);
void metrics_destroy(struct metrics *m);

/* Each returns the series handle, or NULL with err set (bad name or labels, a
 * name already registered with another type, a duplicate series, no memory). */
struct metric *metrics_counter(struct metrics *m, const char *name, const char *help,
                               const char *labels, struct trine_err *err);
struct metric *metrics_gauge(struct metrics *m, const char *name, const char *help,
                             const char *labels, struct trine_err *err);
/* A gauge whose value is computed at render time by fn(ctx) (called under
 * the registry's mutex, from the rendering thread). */
struct metric *metrics_gauge_fn(struct metrics *m, const char *name, const char *help,
                                const char *labels, double (*fn)(void *ctx), void *ctx,
                                struct trine_err *err);
/* bounds: strictly increasing upper bounds (the +Inf bucket is implicit). */
struct metric *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                 const char *labels, const double *bounds, size_t n,
                                 struct trine_err *err);

void metric_add(struct metric *c, uint64_t n); /* counters */
static inline void metric_inc(struct metric *c)
{
    metric_add(c, 1);
}
void metric_set(struct metric *g, double v);     /* gauges */
void metric_observe(struct metric *h, double v); /* histograms */

/* Current value of a counter or gauge (tests, status pages). */
double metric_value(const struct metric *s);

/* Appends the whole registry in exposition format. */
int metrics_render(struct metrics *m, struct buf *out);

/* Escapes a label value (\\, \", \n) into out (size n); returns out. */
char *metrics_label_escape(const char *value, char *out, size_t n);

#endif
