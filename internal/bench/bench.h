/*
 * bench.h - trine-bench's storage workloads (the cluster workloads come with
 * the client library). Each workload runs for opts->seconds, timing every
 * operation into a histogram, and fills a struct bench_result that
 * bench_report() prints as a table or as one JSON object.
 *
 * Workloads and what one "op" is:
 *   fsync     one record appended to a plain file; every `batch` records share
 *             one write + fdatasync (the bare disk, batched like the WAL)
 *   leveldb   one put in a raw leveldb WriteBatch of `batch` puts, sync off
 *             (the baseline for `apply`)
 *   wal       one record through wal_append() from `appenders` threads
 *   apply     one PUT applied through store_apply() in batches of `batch`
 *   snapshot  one key streamed out of a partition snapshot and installed
 *             into a second store
 *   recovery  one record replayed by wal_open() over a log written first
 *
 * Internal module exception: wl_leveldb.c includes <leveldb/c.h> itself,
 * because a baseline must bypass the store it measures (documented in
 * docs/architecture.md).
 */
#ifndef TRINE_BENCH_BENCH_H
#define TRINE_BENCH_BENCH_H

#include <stdbool.h>
#include <stdint.h>

#include "base/hist.h"
#include "base/status.h"

struct bench_opts {
    const char *workload;
    int appenders;         /* concurrent threads (wal) */
    uint32_t record_bytes; /* payload / value size */
    uint32_t batch;        /* records per fsync (fsync), ops per batch (leveldb, apply) */
    double seconds;        /* measured time, after warm-up */
    const char *dir;       /* scratch directory; removed afterwards */
    bool json;
    bool fsync; /* false: no fdatasync (wal, fsync) for comparisons only */
};

struct bench_result {
    const char *workload;
    uint64_t ops;
    uint64_t bytes;
    uint64_t fsyncs;
    double seconds;
    uint32_t batch;     /* effective batch (set by the workload; 0 = not batched) */
    struct hist lat_us; /* per-op latency in microseconds */
};

/* Fills defaults: appenders 1, record 256 B, batch = appenders (0 = auto),
 * 5 s, dir under $TMPDIR, table output, fsync on. */
void bench_opts_default(struct bench_opts *o);

/* Runs one storage workload. Returns 0 or a status with detail in err. */
int bench_storage_run(const struct bench_opts *o, struct bench_result *r, struct trine_err *err);

/* Prints r as a human-readable table row (with a header) or one JSON object. */
void bench_report(const struct bench_opts *o, const struct bench_result *r);

/* Workloads, one file each. Each creates what it needs under o->dir. */
int bench_wl_fsync(const struct bench_opts *o, struct bench_result *r, struct trine_err *err);
int bench_wl_leveldb(const struct bench_opts *o, struct bench_result *r, struct trine_err *err);
int bench_wl_wal(const struct bench_opts *o, struct bench_result *r, struct trine_err *err);
int bench_wl_apply(const struct bench_opts *o, struct bench_result *r, struct trine_err *err);
int bench_wl_snapshot(const struct bench_opts *o, struct bench_result *r, struct trine_err *err);
int bench_wl_recovery(const struct bench_opts *o, struct bench_result *r, struct trine_err *err);

/* Helpers shared by the workloads. */
uint64_t bench_now_us(void);
/* Deterministic key for op i: 16 bytes, "k" + 15 hex digits of a scrambled i. */
void bench_key(uint64_t i, char out[16]);

#endif
