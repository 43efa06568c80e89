/*
 * wl_wal.c - WAL workloads.
 *
 * wal: `appenders` threads each call wal_append() (blocking until the
 * covering fdatasync) with one record of record_bytes, in a loop; per-op
 * latency is the wal_append call. Partition = thread id, index increasing,
 * like Raft groups sharing the node's log.
 *
 * recovery: first writes a log of ~max(64 MiB, 2 s of appends) with 64
 * concurrent appenders and sync off, closes it, then times wal_open() over it:
 * an op is one record replayed through the replay callback.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "wal/wal.h"

struct wal_worker {
    struct wal *w;
    const struct bench_opts *o;
    uint32_t partition;
    uint64_t deadline_us;
    uint64_t ops;
    int rc;
    struct hist lat;
    struct trine_err err;
};

static void *wal_worker_main(void *arg)
{
    struct wal_worker *k = arg;
    char *payload = malloc(k->o->record_bytes ? k->o->record_bytes : 1);
    if (!payload) {
        k->rc = err_set(&k->err, -TRINE_ENOMEM, "payload");
        return NULL;
    }
    memset(payload, 'p', k->o->record_bytes);
    uint64_t now = bench_now_us();
    for (uint64_t index = 1; now < k->deadline_us; index++) {
        struct wal_record rec = {.partition = k->partition,
                                 .type = WAL_ENTRY,
                                 .term = 1,
                                 .index = index,
                                 .payload = payload,
                                 .len = k->o->record_bytes};
        int rc = wal_append(k->w, &rec, 1);
        uint64_t end = bench_now_us();
        if (rc) {
            k->rc = err_set(&k->err, rc, "wal_append: %s", status_message(rc));
            break;
        }
        hist_record(&k->lat, end - now);
        k->ops++;
        now = end;
    }
    free(payload);
    return NULL;
}

/* Runs `appenders` threads against a log in dir for `seconds`; fills r. */
static int wal_run(const struct bench_opts *o, const char *dir, int appenders, double seconds,
                   bool sync_off, struct bench_result *r, struct trine_err *err)
{
    struct wal_options wo = {.dir = dir, .sync_off = sync_off};
    struct wal *w;
    int rc = wal_open(&wo, &w, NULL, err);
    if (rc) return rc;
    struct wal_worker *k = calloc((size_t)appenders, sizeof(*k));
    pthread_t *t = calloc((size_t)appenders, sizeof(*t));
    if (!k || !t) {
        free(k);
        free(t);
        wal_close(w);
        return err_set(err, -TRINE_ENOMEM, "workers");
    }
    struct wal_stats before;
    wal_stats(w, &before);
    uint64_t t0 = bench_now_us(), deadline = t0 + (uint64_t)(seconds * 1e6);
    int started = 0;
    for (int i = 0; i < appenders; i++) {
        k[i] =
            (struct wal_worker){.w = w, .o = o, .partition = (uint32_t)i, .deadline_us = deadline};
        hist_init(&k[i].lat);
        if (pthread_create(&t[i], NULL, wal_worker_main, &k[i]) != 0) {
            rc = err_set(err, -TRINE_ENOMEM, "pthread_create failed after %d threads", i);
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(t[i], NULL);
        hist_merge(&r->lat_us, &k[i].lat);
        r->ops += k[i].ops;
        if (k[i].rc && !rc) rc = err_set(err, k[i].rc, "%s", k[i].err.msg);
    }
    r->seconds = (double)(bench_now_us() - t0) / 1e6;
    struct wal_stats after;
    wal_stats(w, &after);
    r->fsyncs = after.fsyncs - before.fsyncs;
    r->bytes = after.bytes - before.bytes;
    wal_close(w);
    free(k);
    free(t);
    return rc;
}

int bench_wl_wal(const struct bench_opts *o, struct bench_result *r, struct trine_err *err)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/wal", o->dir);
    return wal_run(o, dir, o->appenders, o->seconds, !o->fsync, r, err);
}

struct replay_count {
    uint64_t records;
    uint64_t bytes;
};

static int replay_count_fn(void *ctx, const struct wal_record *rec)
{
    struct replay_count *c = ctx;
    c->records++;
    c->bytes += rec->len;
    return 0;
}

int bench_wl_recovery(const struct bench_opts *o, struct bench_result *r, struct trine_err *err)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/wal", o->dir);
    /* Fill: 64 appenders, no fsync (we measure reading, not writing). */
    struct bench_result fill;
    memset(&fill, 0, sizeof(fill));
    hist_init(&fill.lat_us);
    int rc = wal_run(o, dir, 64, o->seconds, true, &fill, err);
    if (rc) return rc;

    struct replay_count c = {0, 0};
    struct wal_options wo = {
        .dir = dir, .replay = WAL_REPLAY_ALL, .replay_fn = replay_count_fn, .replay_ctx = &c};
    struct wal_recovery rep;
    struct wal *w;
    uint64_t t0 = bench_now_us();
    rc = wal_open(&wo, &w, &rep, err);
    uint64_t t1 = bench_now_us();
    if (rc) return rc;
    wal_close(w);
    r->ops = c.records;
    r->bytes = fill.bytes;
    r->seconds = (double)(t1 - t0) / 1e6;
    /* One latency sample: the whole open, so p50/p99 show the recovery time. */
    hist_record(&r->lat_us, t1 - t0);
    return 0;
}
