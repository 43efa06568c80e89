/*
 * cluster.c - `trine-bench cluster` (see cluster.h).
 */
#include "bench/cluster.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/hist.h"
#include "base/rand.h"
#include "bench/bench.h"
#include "client/trine.h"

#define CODES_MAX       64
#define PRELOAD_THREADS 32

struct wl_mix {
    const char *name;
    uint32_t read_pct;
    bool zipf;
};

static const struct wl_mix mixes[] = {
    {"write", 0, false},  {"read", 100, false},  {"ycsb-a", 50, true},
    {"ycsb-b", 95, true}, {"ycsb-c", 100, true},
};

/* YCSB's Zipfian generator (Gray et al., "Quickly generating billion-record
 * synthetic databases"), ranks then scrambled with a hash. */
struct zipf {
    uint64_t n;
    double theta, alpha, zetan, eta, zeta2;
};

static void zipf_init(struct zipf *z, uint64_t n, double theta)
{
    z->n = n;
    z->theta = theta;
    double zetan = 0;
    for (uint64_t i = 1; i <= n; i++)
        zetan += 1.0 / pow((double)i, theta);
    z->zetan = zetan;
    z->zeta2 = 1.0 + 1.0 / pow(2.0, theta);
    z->alpha = 1.0 / (1.0 - theta);
    z->eta = (1.0 - pow(2.0 / (double)n, 1.0 - theta)) / (1.0 - z->zeta2 / zetan);
}

static uint64_t zipf_next(const struct zipf *z, struct rng *r)
{
    double u = (double)(rng_next(r) >> 11) / (double)(1ull << 53);
    double uz = u * z->zetan;
    uint64_t rank;
    if (uz < 1.0)
        rank = 0;
    else if (uz < z->zeta2)
        rank = 1;
    else
        rank = (uint64_t)((double)z->n * pow(z->eta * u - z->eta + 1.0, z->alpha));
    if (z->n == 0) return 0;
    if (rank >= z->n) rank = z->n - 1;
    uint64_t h = rank * 0x9e3779b97f4a7c15u; /* scramble: hot ranks land anywhere */
    h ^= h >> 31;
    return h % z->n;
}

struct shared {
    const struct bench_cluster_opts *o;
    uint32_t read_pct;
    bool zipf;
    struct zipf zf;
    uint8_t *value;
    atomic_uint_fast64_t preload_next;
    atomic_uint_fast64_t ops_done;
    atomic_int stop;
};

struct worker {
    struct shared *sh;
    trine_client_t *c;
    uint64_t seed;
    uint64_t ops, reads, writes;
    uint64_t errors[CODES_MAX];
    struct hist lat;
    int fatal;
};

static void key_of(uint64_t i, char *out, size_t *len)
{
    *len = (size_t)snprintf(out, 32, "bench:%012" PRIu64, i);
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void count_error(struct worker *w, int rc)
{
    int code = rc < 0 ? -rc : rc;
    w->errors[code < CODES_MAX ? code : 0]++;
}

static void *preload_main(void *arg)
{
    struct worker *w = arg;
    const struct bench_cluster_opts *o = w->sh->o;
    struct trine_opts topts = {.consistency = TRINE_CONSISTENCY_STRONG};
    for (;;) {
        uint64_t i = atomic_fetch_add(&w->sh->preload_next, 1);
        if (i >= o->keys) break;
        char key[32];
        size_t klen;
        key_of(i, key, &klen);
        struct trine_result res;
        int rc = trine_kv_put(w->c, key, klen, w->sh->value, o->value_bytes, &topts, &res);
        if (rc) {
            count_error(w, rc);
            if (rc == -TRINE_EUNAVAILABLE || rc == -TRINE_EUNAUTHENTICATED) {
                w->fatal = rc;
                break;
            }
        }
    }
    return NULL;
}

/* The next op of a stream: its key (into key[32]) and whether it reads. */
static bool next_op(const struct shared *sh, struct rng *r, char *key, size_t *klen)
{
    uint64_t k = sh->zipf ? zipf_next(&sh->zf, r) : rng_below(r, sh->o->keys);
    key_of(k, key, klen);
    return rng_below(r, 100) < sh->read_pct;
}

/* Accounts one completed op. */
static void op_done(struct worker *w, bool read, uint64_t t0_us, int rc)
{
    if (read && rc == -TRINE_ENOT_FOUND) rc = 0; /* an absent key is an answer */
    hist_record(&w->lat, now_us() - t0_us);
    w->ops++;
    if (read)
        w->reads++;
    else
        w->writes++;
    atomic_fetch_add(&w->sh->ops_done, 1);
    if (rc) count_error(w, rc);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct shared *sh = w->sh;
    const struct bench_cluster_opts *o = sh->o;
    struct rng r;
    rng_seed(&r, w->seed);
    struct trine_opts topts = {.consistency = (enum trine_consistency)o->consistency};
    while (!atomic_load(&sh->stop)) {
        char key[32];
        size_t klen;
        bool read = next_op(sh, &r, key, &klen);
        struct trine_result res;
        uint64_t t0 = now_us();
        int rc;
        if (read) {
            void *v = NULL;
            size_t vl = 0;
            rc = trine_kv_get(w->c, key, klen, &topts, &v, &vl, &res);
            trine_free(v);
        } else {
            rc = trine_kv_put(w->c, key, klen, sh->value, o->value_bytes, &topts, &res);
        }
        op_done(w, read, t0, rc);
    }
    return NULL;
}

/* ---- the async engine (default): logical clients as call slots ---- */

struct aslot;

/* One engine thread; its counts go to its worker (w). */
struct aworker {
    struct worker *w;
    trine_async_t *eng;
    struct rng r;
    struct aslot *slots;
    uint32_t n_slots;
};

/* One closed-loop stream: a new call as soon as its last one completed. */
struct aslot {
    struct aworker *aw;
    uint64_t t0;
    bool read;
};

static void aslot_start(struct aslot *sl);

static void aslot_done(void *arg, int rc, const struct trine_result *res, const void *value,
                       size_t value_len)
{
    (void)res;
    (void)value;
    (void)value_len;
    struct aslot *sl = arg;
    op_done(sl->aw->w, sl->read, sl->t0, rc);
    if (!atomic_load(&sl->aw->w->sh->stop)) aslot_start(sl);
}

static void aslot_start(struct aslot *sl)
{
    struct aworker *aw = sl->aw;
    struct shared *sh = aw->w->sh;
    const struct bench_cluster_opts *o = sh->o;
    char key[32];
    size_t klen;
    sl->read = next_op(sh, &aw->r, key, &klen);
    struct trine_opts topts = {.consistency = (enum trine_consistency)o->consistency};
    sl->t0 = now_us();
    int rc = sl->read ? trine_async_get(aw->eng, key, klen, &topts, aslot_done, sl)
                      : trine_async_put(aw->eng, key, klen, sh->value, o->value_bytes, &topts,
                                        aslot_done, sl);
    if (rc) {
        count_error(aw->w, rc);
        aw->w->fatal = rc; /* a call that cannot even be queued will not start later */
    }
}

static void *aworker_main(void *arg)
{
    struct aworker *aw = arg;
    rng_seed(&aw->r, aw->w->seed);
    for (uint32_t i = 0; i < aw->n_slots && !aw->w->fatal; i++)
        aslot_start(&aw->slots[i]);
    while (trine_async_inflight(aw->eng) > 0)
        (void)trine_async_run(aw->eng, 100);
    return NULL;
}

void bench_cluster_opts_default(struct bench_cluster_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->workload = "write";
    o->consistency = TRINE_CONSISTENCY_STRONG;
    o->clients = 16;
    o->pipeline = 1;
    o->threads = 1;
    o->conns = 2;
    o->keys = 100000;
    o->value_bytes = 256;
    o->seconds = 10;
    o->seed = 1;
    o->progress = true;
}

static int parse_mix(const char *name, uint32_t *read_pct, bool *zipf)
{
    for (size_t i = 0; i < sizeof(mixes) / sizeof(mixes[0]); i++) {
        if (strcmp(name, mixes[i].name) == 0) {
            *read_pct = mixes[i].read_pct;
            *zipf = mixes[i].zipf;
            return 0;
        }
    }
    unsigned rp, wp;
    if (sscanf(name, "mixed:%u/%u", &rp, &wp) == 2 && rp + wp == 100) {
        *read_pct = rp;
        return 0;
    }
    return -1;
}

static void report(const struct bench_cluster_opts *o, struct worker *w, uint32_t n, double secs)
{
    struct hist all;
    hist_init(&all);
    uint64_t ops = 0, reads = 0, writes = 0, errors[CODES_MAX] = {0}, nerr = 0;
    for (uint32_t i = 0; i < n; i++) {
        hist_merge(&all, &w[i].lat);
        ops += w[i].ops;
        reads += w[i].reads;
        writes += w[i].writes;
        for (int c = 0; c < CODES_MAX; c++) {
            errors[c] += w[i].errors[c];
            nerr += w[i].errors[c];
        }
    }
    double ops_s = secs > 0 ? (double)ops / secs : 0;
    uint64_t p50 = hist_quantile(&all, 0.5), p99 = hist_quantile(&all, 0.99),
             p999 = hist_quantile(&all, 0.999);
    const char *level = trine_consistency_name((enum trine_consistency)o->consistency);
    if (o->json) {
        printf("{\"workload\":\"%s\",\"consistency\":\"%s\",\"clients\":%u,\"pipeline\":%u,"
               "\"engine\":\"%s\",\"threads\":%u,\"conns_per_node\":%u,"
               "\"keys\":%" PRIu64 ",\"key_dist\":\"%s\",\"value_bytes\":%u,\"seconds\":%.3f,"
               "\"ops\":%" PRIu64 ",\"reads\":%" PRIu64 ",\"writes\":%" PRIu64
               ",\"ops_per_s\":%.1f,\"p50_us\":%" PRIu64 ",\"p99_us\":%" PRIu64
               ",\"p999_us\":%" PRIu64 ",\"max_us\":%" PRIu64 ",\"errors\":{",
               o->workload, level, o->clients, o->pipeline, o->sync ? "sync" : "async",
               o->sync ? o->clients * o->pipeline : o->threads, o->sync ? 0 : o->conns, o->keys,
               o->zipf ? "zipf" : "uniform", o->value_bytes, secs, ops, reads, writes, ops_s, p50,
               p99, p999, all.count ? all.max : 0);
        bool first = true;
        for (int c = 0; c < CODES_MAX; c++) {
            if (!errors[c]) continue;
            printf("%s\"%s\":%" PRIu64, first ? "" : ",", trine_status_name(-c), errors[c]);
            first = false;
        }
        printf("}}\n");
        return;
    }
    printf("%-12s %-7s %7s %8s %12s %9s %9s %9s %9s %8s\n", "workload", "level", "clients",
           "pipeline", "ops/s", "p50_us", "p99_us", "p999_us", "max_us", "errors");
    printf("%-12s %-7s %7u %8u %12.0f %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %8" PRIu64
           "\n",
           o->workload, level, o->clients, o->pipeline, ops_s, p50, p99, p999,
           all.count ? all.max : 0, nerr);
    for (int c = 0; c < CODES_MAX; c++)
        if (errors[c]) printf("  errors %-12s %" PRIu64 "\n", trine_status_name(-c), errors[c]);
}

int bench_cluster_run(const struct bench_cluster_opts *o, struct trine_err *err)
{
    struct shared sh;
    memset(&sh, 0, sizeof(sh));
    sh.o = o;
    if (parse_mix(o->workload, &sh.read_pct, &sh.zipf))
        return err_set(err, -TRINE_EINVALID,
                       "unknown workload '%s' (write|read|mixed:R/W|ycsb-a|ycsb-b|ycsb-c)",
                       o->workload);
    if (o->zipf) sh.zipf = true;
    if (o->keys == 0 || o->clients == 0 || o->pipeline == 0 || o->clients * o->pipeline > 4096)
        return err_set(err, -TRINE_EINVALID,
                       "--keys, --clients and --pipeline must be > 0 "
                       "(clients x pipeline <= 4096)");
    if (sh.zipf) zipf_init(&sh.zf, o->keys, 0.99);
    sh.value = malloc(o->value_bytes ? o->value_bytes : 1);
    uint32_t nthreads = o->clients * o->pipeline;
    /* The preload is not measured: at least PRELOAD_THREADS threads share the
     * (thread-safe) handles, so a 1-client read run does not preload serially. */
    uint32_t npre = nthreads > PRELOAD_THREADS ? nthreads : PRELOAD_THREADS;
    struct worker *w = calloc(npre, sizeof(*w));
    pthread_t *t = calloc(npre, sizeof(*t));
    /* The blocking API: a handle per client. The async engines share one
     * (so do the preload threads: a handle is thread-safe). */
    uint32_t nhandles = o->sync ? o->clients : 1;
    trine_client_t **handles = calloc(nhandles, sizeof(trine_client_t *));
    if (!sh.value || !w || !t || !handles) {
        free(sh.value);
        free(w);
        free(t);
        free(handles);
        return err_set(err, -TRINE_ENOMEM, "out of memory");
    }
    int rc = 0;
    struct rng vr;
    rng_seed(&vr, o->seed);
    rng_fill(&vr, sh.value, o->value_bytes);
    struct trine_tls tls = {o->ca_file, o->cert_file, o->key_file};
    for (uint32_t i = 0; !rc && i < nhandles; i++) {
        char msg[256];
        if (trine_client_open(o->endpoints, &tls, &handles[i], msg, sizeof(msg)) != 0)
            rc = err_set(err, -TRINE_EUNAVAILABLE, "cannot open a client: %s", msg);
    }
    for (uint32_t i = 0; !rc && i < npre; i++) {
        w[i].sh = &sh;
        w[i].c = handles[i % nhandles];
        w[i].seed = o->seed * 1000003u + i;
        hist_init(&w[i].lat);
    }

    /* Preload for anything that reads. */
    if (!rc && sh.read_pct > 0) {
        if (o->progress) fprintf(stderr, "preloading %" PRIu64 " keys...\n", o->keys);
        uint32_t started = 0;
        for (; started < npre; started++)
            if (pthread_create(&t[started], NULL, preload_main, &w[started]) != 0) break;
        for (uint32_t i = 0; i < started; i++)
            pthread_join(t[i], NULL);
        for (uint32_t i = 0; i < npre; i++) {
            if (w[i].fatal && !rc)
                rc = err_set(err, w[i].fatal, "preload failed: %s", trine_strerror(w[i].fatal));
            memset(w[i].errors, 0, sizeof(w[i].errors));
        }
    }

    /* The async engine: o->threads threads, each one engine (its own
     * connections) running its share of the clients x pipeline streams. */
    uint32_t nstreams = o->clients * o->pipeline;
    uint32_t nengines = o->sync ? 0 : (o->threads < nstreams ? o->threads : nstreams);
    struct aworker *aw = nengines ? calloc(nengines, sizeof(*aw)) : NULL;
    struct aslot *slots = nengines ? calloc(nstreams, sizeof(*slots)) : NULL;
    if (!rc && nengines && (!aw || !slots)) rc = err_set(err, -TRINE_ENOMEM, "out of memory");
    for (uint32_t e = 0, first = 0; !rc && aw && slots && e < nengines; e++) {
        uint32_t n = nstreams / nengines + (e < nstreams % nengines ? 1 : 0);
        aw[e].w = &w[e]; /* set up above like every worker */
        aw[e].slots = &slots[first];
        aw[e].n_slots = n;
        for (uint32_t i = 0; i < n; i++)
            slots[first + i].aw = &aw[e];
        first += n;
        if (trine_async_open(handles[0], o->conns, &aw[e].eng) != 0)
            rc = err_set(err, -TRINE_ENOMEM, "cannot open an async engine");
    }

    if (!rc) {
        uint32_t started = 0;
        uint64_t t0 = now_us(), deadline = t0 + (uint64_t)(o->seconds * 1e6);
        for (; nengines && started < nengines; started++)
            if (pthread_create(&t[started], NULL, aworker_main, &aw[started]) != 0) break;
        for (; !nengines && started < nthreads; started++)
            if (pthread_create(&t[started], NULL, worker_main, &w[started]) != 0) break;
        uint64_t last_ops = 0, last = t0;
        while (now_us() < deadline) {
            uint64_t left = deadline - now_us();
            usleep(left > 1000000 ? 1000000 : (useconds_t)left);
            uint64_t now = now_us(), done = atomic_load(&sh.ops_done);
            if (o->progress && now > last)
                fprintf(stderr, "  %5.1fs  %10.0f ops/s  (%" PRIu64 " ops)\n",
                        (double)(now - t0) / 1e6,
                        (double)(done - last_ops) * 1e6 / (double)(now - last), done);
            last_ops = done;
            last = now;
        }
        atomic_store(&sh.stop, 1);
        for (uint32_t i = 0; i < started; i++)
            pthread_join(t[i], NULL);
        report(o, w, started, (double)(now_us() - t0) / 1e6);
    }
    for (uint32_t e = 0; aw && e < nengines; e++)
        trine_async_close(aw[e].eng);
    free(aw);
    free(slots);
    for (uint32_t i = 0; i < nhandles; i++)
        if (handles[i]) trine_client_close(handles[i]);
    free(handles);
    free(t);
    free(w);
    free(sh.value);
    return rc;
}
