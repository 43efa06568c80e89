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
 * Names are checked against the Prometheus conventions the registry can see:
 * a counter's name ends in `_total`, a gauge's or histogram's does not, and no
 * name ends in `_bucket`, `_count` or `_sum` (the histogram suffixes). Units
 * are the caller's part: base units in the name (`_seconds`, `_bytes`).
 *
 * Collectors: values that are cheaper to compute when scraped than to keep up
 * to date (per-partition Raft state, another module's stats struct) come from
 * a collector, a function metrics_render calls after the registered series.
 * It emits whole families (metrics_emit_family, then metrics_emit per sample)
 * on the rendering thread with the registry's mutex held, so it may read state
 * owned by that thread (Trine renders on the event-loop thread) but must not
 * call back into the registry.
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
struct metrics_sink;

enum metrics_type { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM };

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

/* Collectors (see above). fn(ctx, sink) runs at every metrics_render, in
 * registration order after the registered series. metrics_collector_remove
 * drops the collector registered with exactly (fn, ctx), if any: call it before
 * ctx goes away. */
typedef void (*metrics_collect_fn)(void *ctx, struct metrics_sink *sink);
int metrics_collector(struct metrics *m, metrics_collect_fn fn, void *ctx, struct trine_err *err);
void metrics_collector_remove(struct metrics *m, metrics_collect_fn fn, void *ctx);
/* Starts a family (METRICS_COUNTER or METRICS_GAUGE; the naming rules above
 * apply, and the name must not be a registered family or one emitted earlier
 * in this render). A family without samples still gets its HELP and TYPE. */
void metrics_emit_family(struct metrics_sink *s, const char *name, enum metrics_type type,
                         const char *help);
/* One sample of the family started last; labels as for registration. */
void metrics_emit(struct metrics_sink *s, const char *labels, double value);
/* A plain scalar: a family of its own with one unlabeled sample. */
struct metrics_scalar {
    const char *name, *help;
    enum metrics_type type;
    uint64_t value;
};
/* metrics_emit_family + metrics_emit for each of rows[0..n). */
void metrics_emit_scalars(struct metrics_sink *s, const struct metrics_scalar *rows, size_t n);

/* Appends the whole registry in exposition format. Returns 0, -TRINE_ENOMEM, or
 * -TRINE_EINVALID / -TRINE_EEXISTS when a collector broke the rules above (the
 * text rendered so far is in out; the offending family is left out). */
int metrics_render(struct metrics *m, struct buf *out);

/* Escapes a label value (\\, \", \n) into out (size n); returns out. */
char *metrics_label_escape(const char *value, char *out, size_t n);

#endif
