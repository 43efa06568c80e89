/*
 * storage.c - workload table, common helpers and result reporting for
 * `trine-bench storage`.
 */
#include "bench/bench.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int (*bench_wl_fn)(const struct bench_opts *, struct bench_result *, struct trine_err *);

static const struct {
    const char *name;
    bench_wl_fn run;
} bench_workloads[] = {
    {"fsync", bench_wl_fsync}, {"leveldb", bench_wl_leveldb},   {"wal", bench_wl_wal},
    {"apply", bench_wl_apply}, {"snapshot", bench_wl_snapshot}, {"recovery", bench_wl_recovery},
};

void bench_opts_default(struct bench_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->workload = "wal";
    o->appenders = 1;
    o->record_bytes = 256;
    o->batch = 0;
    o->seconds = 5;
    o->dir = NULL;
    o->json = false;
    o->fsync = true;
}

uint64_t bench_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void bench_key(uint64_t i, char out[16])
{
    /* A bijective scramble keeps keys unique but out of insertion order. */
    uint64_t x = i * 0x9e3779b97f4a7c15u;
    x ^= x >> 29;
    static const char hex[] = "0123456789abcdef";
    out[0] = 'k';
    for (int d = 1; d < 16; d++) {
        out[d] = hex[x & 15];
        x >>= 4;
    }
}

int bench_storage_run(const struct bench_opts *o, struct bench_result *r, struct trine_err *err)
{
    memset(r, 0, sizeof(*r));
    hist_init(&r->lat_us);
    r->workload = o->workload;
    for (size_t i = 0; i < sizeof(bench_workloads) / sizeof(bench_workloads[0]); i++) {
        if (strcmp(bench_workloads[i].name, o->workload) == 0)
            return bench_workloads[i].run(o, r, err);
    }
    return err_set(err, -TRINE_EINVALID,
                   "unknown workload '%s' (wal|apply|snapshot|recovery|fsync|leveldb)",
                   o->workload);
}

void bench_report(const struct bench_opts *o, const struct bench_result *r)
{
    double secs = r->seconds > 0 ? r->seconds : 1e-9;
    double ops_s = (double)r->ops / secs;
    double mb_s = (double)r->bytes / secs / 1e6;
    double fs_s = (double)r->fsyncs / secs;
    uint64_t p50 = hist_quantile(&r->lat_us, 0.50), p99 = hist_quantile(&r->lat_us, 0.99),
             p999 = hist_quantile(&r->lat_us, 0.999);
    uint32_t batch = r->batch;
    if (o->json) {
        printf("{\"workload\":\"%s\",\"appenders\":%d,\"record_bytes\":%u,\"batch\":%u,"
               "\"fsync\":%s,\"seconds\":%.3f,\"ops\":%" PRIu64 ",\"ops_per_s\":%.1f,"
               "\"mb_per_s\":%.2f,\"fsyncs_per_s\":%.1f,\"records_per_fsync\":%.2f,"
               "\"p50_us\":%" PRIu64 ",\"p99_us\":%" PRIu64 ",\"p999_us\":%" PRIu64
               ",\"max_us\":%" PRIu64 "}\n",
               r->workload, o->appenders, o->record_bytes, batch, o->fsync ? "true" : "false",
               r->seconds, r->ops, ops_s, mb_s, fs_s,
               r->fsyncs ? (double)r->ops / (double)r->fsyncs : 0.0, p50, p99, p999,
               r->lat_us.count ? r->lat_us.max : 0);
        return;
    }
    char bstr[16] = "-", rpf[16] = "-";
    if (batch) snprintf(bstr, sizeof(bstr), "%u", batch);
    if (r->fsyncs) snprintf(rpf, sizeof(rpf), "%.1f", (double)r->ops / (double)r->fsyncs);
    printf("%-9s %9s %6s %6s %12s %9s %10s %9s %9s %9s %9s\n", "workload", "appenders", "bytes",
           "batch", "ops/s", "MB/s", "fsyncs/s", "rec/fsync", "p50_us", "p99_us", "p999_us");
    printf("%-9s %9d %6u %6s %12.0f %9.2f %10.0f %9s %9" PRIu64 " %9" PRIu64 " %9" PRIu64 "\n",
           r->workload, o->appenders, o->record_bytes, bstr, ops_s, mb_s, fs_s, rpf, p50, p99,
           p999);
}
