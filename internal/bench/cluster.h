/*
 * cluster.h - `trine-bench cluster`: load against a running cluster through
 * the client library.
 *
 *   workloads   write (100 % put), read (100 % get), mixed:R/W (R % gets,
 *               W % puts), ycsb-a (50/50, zipf), ycsb-b (95/5, zipf),
 *               ycsb-c (100 % get, zipf)
 *   keys        `keys` distinct keys "bench:<12 digits>", chosen uniformly or
 *               by a scrambled Zipf distribution (theta 0.99, as YCSB), so
 *               hot keys spread over partitions; read workloads preload them
 *   concurrency `clients` x `pipeline` closed-loop streams (each one call
 *               outstanding, the next sent when it completes). By default
 *               they run on the async API (trine_async_*): `threads` threads,
 *               each an engine with up to `conns` connections per node, the
 *               streams spread over them. With `sync`, the blocking API:
 *               `clients` handles, each with `pipeline` threads.
 *
 * Every op's latency goes into an HDR-style histogram; errors are counted by
 * status code. A progress line goes to stderr every second.
 */
#ifndef TRINE_BENCH_CLUSTER_H
#define TRINE_BENCH_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"

struct bench_cluster_opts {
    const char *endpoints;
    const char *ca_file, *cert_file, *key_file;
    const char *workload; /* see above */
    int consistency;      /* enum trine_consistency */
    uint32_t clients;
    uint32_t pipeline;
    bool sync;        /* blocking calls, a thread per stream */
    uint32_t threads; /* async: engine threads */
    uint32_t conns;   /* async: connections per node per engine */
    uint64_t keys;
    bool zipf;
    uint32_t value_bytes;
    double seconds;
    uint64_t seed;
    bool json;
    bool progress;
};

void bench_cluster_opts_default(struct bench_cluster_opts *o);
/* Runs the load and prints the report. Returns 0, or a status with detail in err
 * (bad options, cluster unreachable). */
int bench_cluster_run(const struct bench_cluster_opts *o, struct trine_err *err);

#endif
