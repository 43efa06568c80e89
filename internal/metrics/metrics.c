/*
 * metrics.c - the registry and the Prometheus text renderer.
 *
 * Values: counters are _Atomic uint64; gauges store the bit pattern of a
 * double in an _Atomic uint64; histograms keep one _Atomic uint64 count per
 * bucket (non-cumulative; cumulated at render) and the sum as double bits
 * updated with a CAS loop. Every update is lock-free with relaxed ordering, so
 * the WAL's sync thread can observe into a histogram that the loop renders; a
 * render may see a histogram mid-update (a bucket counted, the sum not yet),
 * which Prometheus tolerates, but its _count always equals its +Inf bucket.
 *
 * Collectors run inside metrics_render with the mutex held and write through
 * a sink that checks each family's name and type as registration would.
 */
#include "metrics/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"

#define NAME_MAX_LEN 128 /* longest family name */

static const char *const metric_type_names[] = {"counter", "gauge", "histogram"};

struct metric {
    struct metric *next; /* next series of the same family */
    enum metrics_type type;
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
    enum metrics_type type;
    char *name;
    char *help;
    struct metric *head, *tail;
};

struct collector {
    struct collector *next; /* registration order */
    metrics_collect_fn fn;
    void *ctx;
};

struct metrics {
    pthread_mutex_t mu;
    struct metric_family *head, *tail;
    struct collector *collectors;
};

/* What a collector writes through (one per render). */
struct metrics_sink {
    struct metrics *m;
    struct buf *out;
    int rc;    /* first failure */
    bool open; /* a family was started and accepted */
    char name[NAME_MAX_LEN + 1];
    char (*seen)[NAME_MAX_LEN + 1]; /* families emitted in this render */
    size_t n_seen, cap_seen;
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
    for (struct collector *c = m->collectors, *cnext; c; c = cnext) {
        cnext = c->next;
        free(c);
    }
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
static struct metric_family *metrics_family(struct metrics *m, enum metrics_type type,
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

static bool ends_with(const char *s, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len >= n && memcmp(s + len - n, suffix, n) == 0;
}

/* The Prometheus naming rules the registry can check (metrics.h). */
static int check_name(const char *n, enum metrics_type type, struct trine_err *err)
{
    const char *p = n;
    bool ok = n && *n && !(*n >= '0' && *n <= '9');
    for (; ok && *p; p++) {
        char c = *p;
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || c == ':';
    }
    size_t len = ok ? (size_t)(p - n) : 0;
    if (!ok || len > NAME_MAX_LEN)
        return err_set(err, -TRINE_EINVALID, "metric name '%.*s' is not a Prometheus name",
                       NAME_MAX_LEN, n ? n : "");
    if (ends_with(n, len, "_bucket") || ends_with(n, len, "_count") || ends_with(n, len, "_sum"))
        return err_set(err, -TRINE_EINVALID, "metric %s ends in a histogram series suffix", n);
    bool total = ends_with(n, len, "_total");
    if (type == METRICS_COUNTER && !total)
        return err_set(err, -TRINE_EINVALID, "counter %s must end in _total", n);
    if (type != METRICS_COUNTER && total)
        return err_set(err, -TRINE_EINVALID, "%s %s must not end in _total",
                       metric_type_names[type], n);
    return 0;
}

static int check_labels(const char *name, const char *labels, struct trine_err *err)
{
    if (strchr(labels, '}') || strchr(labels, '\n'))
        return err_set(err, -TRINE_EINVALID, "labels of %s contain '}' or a newline", name);
    return 0;
}

static struct metric *metrics_register(struct metrics *m, enum metrics_type type, const char *name,
                                       const char *help, const char *labels, struct trine_err *err)
{
    if (labels == NULL) labels = "";
    if (check_name(name, type, err) < 0 || check_labels(name, labels, err) < 0) return NULL;
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
    return metrics_register(m, METRICS_COUNTER, name, help, labels, err);
}

struct metric *metrics_gauge(struct metrics *m, const char *name, const char *help,
                             const char *labels, struct trine_err *err)
{
    return metrics_register(m, METRICS_GAUGE, name, help, labels, err);
}

struct metric *metrics_gauge_fn(struct metrics *m, const char *name, const char *help,
                                const char *labels, double (*fn)(void *ctx), void *ctx,
                                struct trine_err *err)
{
    struct metric *s = metrics_register(m, METRICS_GAUGE, name, help, labels, err);
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
    struct metric *s = metrics_register(m, METRICS_HISTOGRAM, name, help, labels, err);
    if (s) {
        memcpy(s->bounds, bounds, n * sizeof(*bounds));
        s->nbounds = n;
    }
    return s;
}

void metric_add(struct metric *c, uint64_t n)
{
    TRINE_ASSERT(c->type == METRICS_COUNTER);
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

void metric_set(struct metric *g, double v)
{
    TRINE_ASSERT(g->type == METRICS_GAUGE);
    atomic_store_explicit(&g->value, d2u(v), memory_order_relaxed);
}

void metric_observe(struct metric *h, double v)
{
    TRINE_ASSERT(h->type == METRICS_HISTOGRAM);
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
    if (s->type == METRICS_COUNTER) return (double)v;
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

/* Prometheus number formatting: integers without exponent, +Inf/NaN spelled
 * out, other values in the shortest form that reads back as the same double. */
static void fmt_num(char *out, size_t n, double v)
{
    if (isnan(v)) {
        snprintf(out, n, "NaN");
    } else if (isinf(v)) {
        snprintf(out, n, v > 0 ? "+Inf" : "-Inf");
    } else if (v == (double)(int64_t)v && fabs(v) < 9007199254740992.0) { /* 2^53 */
        snprintf(out, n, "%lld", (long long)v);
    } else {
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(out, n, "%.*g", prec, v);
            if (strtod(out, NULL) == v) break;
        }
    }
}

static int render_line(struct buf *out, const char *name, const char *suffix, const char *labels,
                       const char *extra, const char *num)
{
    char line[1024];
    int has = labels && *labels, hasx = extra && *extra;
    int w = snprintf(line, sizeof(line), "%s%s%s%s%s%s%s %s\n", name, suffix,
                     has || hasx ? "{" : "", has ? labels : "", has && hasx ? "," : "",
                     hasx ? extra : "", has || hasx ? "}" : "", num);
    if (w < 0 || (size_t)w >= sizeof(line)) return -TRINE_EINVALID;
    return buf_append(out, line, (size_t)w);
}

static int render_value(struct buf *out, const char *name, const char *suffix, const char *labels,
                        const char *extra, double v)
{
    char num[64];
    fmt_num(num, sizeof(num), v);
    return render_line(out, name, suffix, labels, extra, num);
}

static int render_series(struct buf *out, struct metric *s)
{
    if (s->type == METRICS_COUNTER) { /* exact, whatever its size */
        char num[32];
        snprintf(num, sizeof(num), "%llu",
                 (unsigned long long)atomic_load_explicit(&s->value, memory_order_relaxed));
        return render_line(out, s->name, "", s->labels, NULL, num);
    }
    if (s->type == METRICS_GAUGE)
        return render_value(out, s->name, "", s->labels, NULL, metric_value(s));
    uint64_t cum = 0;
    int rc = 0;
    for (size_t i = 0; i <= s->nbounds && !rc; i++) {
        cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
        char le[80], num[64];
        fmt_num(num, sizeof(num), i < s->nbounds ? s->bounds[i] : INFINITY);
        snprintf(le, sizeof(le), "le=\"%s\"", num);
        rc = render_value(out, s->name, "_bucket", s->labels, le, (double)cum);
    }
    if (!rc)
        rc = render_value(out, s->name, "_sum", s->labels, NULL,
                          u2d(atomic_load_explicit(&s->sum_bits, memory_order_relaxed)));
    /* _count equals the +Inf bucket by construction (read once above). */
    if (!rc) rc = render_value(out, s->name, "_count", s->labels, NULL, (double)cum);
    return rc;
}

/* "# HELP name text\n# TYPE name type\n", the text escaped (\\ and \n). */
static int render_head(struct buf *out, const char *name, const char *help, enum metrics_type type)
{
    char head[1536];
    size_t n = (size_t)snprintf(head, sizeof(head), "# HELP %s ", name);
    for (const char *h = help ? help : ""; *h && n + 4 < sizeof(head) - NAME_MAX_LEN - 32; h++) {
        if (*h == '\\' || *h == '\n') head[n++] = '\\';
        head[n++] = *h == '\n' ? 'n' : *h;
    }
    int w = snprintf(head + n, sizeof(head) - n, "\n# TYPE %s %s\n", name, metric_type_names[type]);
    if (w < 0 || (size_t)w >= sizeof(head) - n) return -TRINE_EINVALID;
    return buf_append(out, head, n + (size_t)w);
}

/* ---- collectors ---------------------------------------------------------------------- */

int metrics_collector(struct metrics *m, metrics_collect_fn fn, void *ctx, struct trine_err *err)
{
    struct collector *c = calloc(1, sizeof(*c));
    if (!c) return err_set(err, -TRINE_ENOMEM, "metrics: out of memory");
    c->fn = fn;
    c->ctx = ctx;
    pthread_mutex_lock(&m->mu);
    struct collector **tail = &m->collectors;
    while (*tail)
        tail = &(*tail)->next;
    *tail = c;
    pthread_mutex_unlock(&m->mu);
    return 0;
}

void metrics_collector_remove(struct metrics *m, metrics_collect_fn fn, void *ctx)
{
    if (m == NULL) return;
    pthread_mutex_lock(&m->mu);
    for (struct collector **p = &m->collectors; *p; p = &(*p)->next) {
        if ((*p)->fn == fn && (*p)->ctx == ctx) {
            struct collector *c = *p;
            *p = c->next;
            free(c);
            break;
        }
    }
    pthread_mutex_unlock(&m->mu);
}

static void sink_fail(struct metrics_sink *s, int rc)
{
    if (!s->rc) s->rc = rc;
    s->open = false;
}

void metrics_emit_family(struct metrics_sink *s, const char *name, enum metrics_type type,
                         const char *help)
{
    struct trine_err err = {0};
    s->open = false;
    if (type == METRICS_HISTOGRAM || check_name(name, type, &err) < 0) {
        sink_fail(s, err.code ? err.code : -TRINE_EINVALID);
        return;
    }
    for (const struct metric_family *f = s->m->head; f; f = f->next) {
        if (strcmp(f->name, name) == 0) {
            sink_fail(s, -TRINE_EEXISTS);
            return;
        }
    }
    for (size_t i = 0; i < s->n_seen; i++) {
        if (strcmp(s->seen[i], name) == 0) {
            sink_fail(s, -TRINE_EEXISTS);
            return;
        }
    }
    if (s->n_seen == s->cap_seen) {
        size_t cap = s->cap_seen ? 2 * s->cap_seen : 32;
        void *p = realloc(s->seen, cap * sizeof(*s->seen));
        if (!p) {
            sink_fail(s, -TRINE_ENOMEM);
            return;
        }
        s->seen = p;
        s->cap_seen = cap;
    }
    snprintf(s->seen[s->n_seen++], sizeof(s->seen[0]), "%s", name);
    int rc = render_head(s->out, name, help, type);
    if (rc < 0) {
        sink_fail(s, rc);
        return;
    }
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->open = true;
}

void metrics_emit(struct metrics_sink *s, const char *labels, double value)
{
    if (!s->open) return; /* the family was refused: its samples go with it */
    struct trine_err err = {0};
    int rc = check_labels(s->name, labels ? labels : "", &err);
    if (rc == 0) rc = render_value(s->out, s->name, "", labels, NULL, value);
    if (rc < 0) sink_fail(s, rc);
}

void metrics_emit_scalars(struct metrics_sink *s, const struct metrics_scalar *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        metrics_emit_family(s, rows[i].name, rows[i].type, rows[i].help);
        metrics_emit(s, NULL, (double)rows[i].value);
    }
}

int metrics_render(struct metrics *m, struct buf *out)
{
    int rc = 0;
    pthread_mutex_lock(&m->mu);
    for (struct metric_family *f = m->head; f && !rc; f = f->next) {
        rc = render_head(out, f->name, f->help, f->type);
        for (struct metric *s = f->head; s && !rc; s = s->next)
            rc = render_series(out, s);
    }
    struct metrics_sink sink = {.m = m, .out = out};
    for (struct collector *c = m->collectors; c && !rc; c = c->next) {
        c->fn(c->ctx, &sink);
        sink.open = false;
        rc = sink.rc;
    }
    free(sink.seen);
    pthread_mutex_unlock(&m->mu);
    return rc;
}
