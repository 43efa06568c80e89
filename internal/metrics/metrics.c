/*
 * metrics.c - the registry and the Prometheus text renderer.
 *
 * Values: counters are _Atomic uint64; gauges store the bit pattern of a
 * double in an _Atomic uint64; histograms keep one _Atomic uint64 count per
 * bucket (non-cumulative; cumulated at render) and the sum as double bits
 * updated with a CAS loop.
 */
#include "metrics/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

static const char *const metric_type_names[] = {"counter", "gauge", "histogram"};

struct metric {
    struct metric *next; /* next series of the same family */
    enum metric_type type;
    const char *name; /* the family's */
    char *labels;
    _Atomic uint64_t value; /* counter value, or gauge double bits */
    double (*fn)(void *ctx);
    void *fn_ctx;
    size_t nbounds;
    double bounds[METRICS_BUCKETS_MAX];
    _Atomic uint64_t buckets[METRICS_BUCKETS_MAX + 1];
    _Atomic uint64_t count;
    _Atomic uint64_t sum_bits;
};

struct metric_family {
    struct metric_family *next; /* registration order */
    enum metric_type type;
    char *name;
    char *help;
    struct metric *head, *tail;
};

struct metrics {
    pthread_mutex_t mu;
    struct metric_family *head, *tail;
};

const double metrics_latency_buckets[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                          0.005,   0.01,   0.025,   0.05,   0.1,   0.25,
                                          0.5,     1,      2.5,     5,      10};
const size_t metrics_latency_buckets_n =
    sizeof(metrics_latency_buckets) / sizeof(metrics_latency_buckets[0]);

static uint64_t d2u(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static double u2d(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

struct metrics *metrics_create(void)
{
    struct metrics *m = calloc(1, sizeof(*m));
    if (m) pthread_mutex_init(&m->mu, NULL);
    return m;
}

void metrics_destroy(struct metrics *m)
{
    if (m == NULL) return;
    for (struct metric_family *f = m->head, *fnext; f; f = fnext) {
        fnext = f->next;
        for (struct metric *s = f->head, *next; s; s = next) {
            next = s->next;
            free(s->labels);
            free(s);
        }
        free(f->name);
        free(f->help);
        free(f);
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* Finds or creates the family `name` (called with m->mu held). */
static struct metric_family *metrics_family(struct metrics *m, enum metric_type type,
                                            const char *name, const char *help,
                                            struct trine_err *err)
{
    for (struct metric_family *f = m->head; f; f = f->next) {
        if (strcmp(f->name, name) != 0) continue;
        if (f->type != type) {
            err_set(err, -TRINE_EINVALID, "metric %s is already a %s", name,
                    metric_type_names[f->type]);
            return NULL;
        }
        return f;
    }
    struct metric_family *f = calloc(1, sizeof(*f));
    if (f) {
        f->type = type;
        f->name = strdup(name);
        f->help = strdup(help ? help : "");
    }
    if (!f || !f->name || !f->help) {
        if (f) {
            free(f->name);
            free(f->help);
            free(f);
        }
        err_set(err, -TRINE_ENOMEM, "metrics: out of memory");
        return NULL;
    }
    if (m->tail)
        m->tail->next = f;
    else
        m->head = f;
    m->tail = f;
    return f;
}

static int metric_name_ok(const char *n)
{
    if (!n || !*n || (*n >= '0' && *n <= '9')) return 0;
    for (; *n; n++) {
        char c = *n;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == ':'))
            return 0;
    }
    return 1;
}

static struct metric *metrics_register(struct metrics *m, enum metric_type type, const char *name,
                                       const char *help, const char *labels, struct trine_err *err)
{
    if (!metric_name_ok(name)) {
        err_set(err, -TRINE_EINVALID, "metric name '%s' is not a Prometheus name",
                name ? name : "");
        return NULL;
    }
    if (labels == NULL) labels = "";
    if (strchr(labels, '}') || strchr(labels, '\n')) {
        err_set(err, -TRINE_EINVALID, "labels of %s contain '}' or a newline", name);
        return NULL;
    }
    pthread_mutex_lock(&m->mu);
    struct metric_family *f = metrics_family(m, type, name, help, err);
    if (f == NULL) {
        pthread_mutex_unlock(&m->mu);
        return NULL;
    }
    for (struct metric *s = f->head; s; s = s->next) {
        if (strcmp(s->labels, labels) == 0) {
            pthread_mutex_unlock(&m->mu);
            err_set(err, -TRINE_EEXISTS, "metric %s{%s} registered twice", name, labels);
            return NULL;
        }
    }
    struct metric *s = calloc(1, sizeof(*s));
    if (s) s->labels = strdup(labels);
    if (!s || !s->labels) {
        pthread_mutex_unlock(&m->mu);
        free(s);
        err_set(err, -TRINE_ENOMEM, "metrics: out of memory");
        return NULL;
    }
    s->type = type;
    s->name = f->name;
    if (f->tail)
        f->tail->next = s;
    else
        f->head = s;
    f->tail = s;
    pthread_mutex_unlock(&m->mu);
    return s;
}

struct metric *metrics_counter(struct metrics *m, const char *name, const char *help,
                               const char *labels, struct trine_err *err)
{
    return metrics_register(m, METRIC_COUNTER, name, help, labels, err);
}

struct metric *metrics_gauge(struct metrics *m, const char *name, const char *help,
                             const char *labels, struct trine_err *err)
{
    return metrics_register(m, METRIC_GAUGE, name, help, labels, err);
}

struct metric *metrics_gauge_fn(struct metrics *m, const char *name, const char *help,
                                const char *labels, double (*fn)(void *ctx), void *ctx,
                                struct trine_err *err)
{
    struct metric *s = metrics_register(m, METRIC_GAUGE, name, help, labels, err);
    if (s) {
        pthread_mutex_lock(&m->mu);
        s->fn = fn;
        s->fn_ctx = ctx;
        pthread_mutex_unlock(&m->mu);
    }
    return s;
}

struct metric *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                 const char *labels, const double *bounds, size_t n,
                                 struct trine_err *err)
{
    if (n == 0 || n > METRICS_BUCKETS_MAX) {
        err_set(err, -TRINE_EINVALID, "histogram %s needs 1 to %d buckets", name,
                METRICS_BUCKETS_MAX);
        return NULL;
    }
    for (size_t i = 1; i < n; i++) {
        if (!(bounds[i] > bounds[i - 1])) {
            err_set(err, -TRINE_EINVALID, "histogram %s: bucket bounds must increase", name);
            return NULL;
        }
    }
    struct metric *s = metrics_register(m, METRIC_HISTOGRAM, name, help, labels, err);
    if (s) {
        memcpy(s->bounds, bounds, n * sizeof(*bounds));
        s->nbounds = n;
    }
    return s;
}

void metric_add(struct metric *c, uint64_t n)
{
    TRINE_ASSERT(c->type == METRIC_COUNTER);
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

void metric_set(struct metric *g, double v)
{
    TRINE_ASSERT(g->type == METRIC_GAUGE);
    atomic_store_explicit(&g->value, d2u(v), memory_order_relaxed);
}

void metric_observe(struct metric *h, double v)
{
    TRINE_ASSERT(h->type == METRIC_HISTOGRAM);
    size_t i = 0;
    while (i < h->nbounds && v > h->bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    uint64_t old = atomic_load_explicit(&h->sum_bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&h->sum_bits, &old, d2u(u2d(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

double metric_value(const struct metric *s)
{
    uint64_t v = atomic_load_explicit(&s->value, memory_order_relaxed);
    if (s->type == METRIC_COUNTER) return (double)v;
    if (s->fn) return s->fn(s->fn_ctx);
    return u2d(v);
}

char *metrics_label_escape(const char *value, char *out, size_t n)
{
    size_t j = 0;
    for (; *value && j + 3 < n; value++) {
        if (*value == '\\' || *value == '"') {
            out[j++] = '\\';
            out[j++] = *value;
        } else if (*value == '\n') {
            out[j++] = '\\';
            out[j++] = 'n';
        } else {
            out[j++] = *value;
        }
    }
    if (n) out[j] = '\0';
    return out;
}

/* Prometheus number formatting: integers without exponent, +Inf/NaN spelled out. */
static void fmt_num(char *out, size_t n, double v)
{
    if (isnan(v))
        snprintf(out, n, "NaN");
    else if (isinf(v))
        snprintf(out, n, v > 0 ? "+Inf" : "-Inf");
    else if (v == (double)(int64_t)v && fabs(v) < 1e15)
        snprintf(out, n, "%lld", (long long)v);
    else
        snprintf(out, n, "%.9g", v);
}

static int render_line(struct buf *out, const char *name, const char *suffix, const char *labels,
                       const char *extra, double v)
{
    char num[64], line[1024];
    fmt_num(num, sizeof(num), v);
    int has = labels && *labels, hasx = extra && *extra;
    int w = snprintf(line, sizeof(line), "%s%s%s%s%s%s%s %s\n", name, suffix,
                     has || hasx ? "{" : "", has ? labels : "", has && hasx ? "," : "",
                     hasx ? extra : "", has || hasx ? "}" : "", num);
    if (w < 0 || (size_t)w >= sizeof(line)) return -TRINE_EINVALID;
    return buf_append(out, line, (size_t)w);
}

static int render_series(struct buf *out, struct metric *s)
{
    if (s->type != METRIC_HISTOGRAM)
        return render_line(out, s->name, "", s->labels, NULL, metric_value(s));
    uint64_t cum = 0;
    int rc = 0;
    for (size_t i = 0; i <= s->nbounds && !rc; i++) {
        cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
        char le[80], num[64];
        fmt_num(num, sizeof(num), i < s->nbounds ? s->bounds[i] : INFINITY);
        snprintf(le, sizeof(le), "le=\"%s\"", num);
        rc = render_line(out, s->name, "_bucket", s->labels, le, (double)cum);
    }
    if (!rc)
        rc = render_line(out, s->name, "_sum", s->labels, NULL,
                         u2d(atomic_load_explicit(&s->sum_bits, memory_order_relaxed)));
    /* _count equals the +Inf bucket by construction (read once above). */
    if (!rc) rc = render_line(out, s->name, "_count", s->labels, NULL, (double)cum);
    return rc;
}

int metrics_render(struct metrics *m, struct buf *out)
{
    int rc = 0;
    pthread_mutex_lock(&m->mu);
    for (struct metric_family *f = m->head; f && !rc; f = f->next) {
        char head[1024];
        int w = snprintf(head, sizeof(head), "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help,
                         f->name, metric_type_names[f->type]);
        rc = buf_append(out, head, w > 0 && (size_t)w < sizeof(head) ? (size_t)w : 0);
        for (struct metric *s = f->head; s && !rc; s = s->next)
            rc = render_series(out, s);
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}
