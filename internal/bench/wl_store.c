/*
 * wl_store.c - state machine workloads.
 *
 * apply: PUTs of 16-byte keys and record_bytes values through store_apply()
 * in batches of `batch` (default 64), one partition, increasing indexes; the
 * same keys, values and batch size as the `leveldb` baseline, so the ratio is
 * the store's own overhead (metadata, applied index, dedupe, caches).
 *
 * snapshot: fills a partition with `seconds` worth of applies (at most 1 M
 * keys), then streams it out of one store and installs it into another; an op
 * is one key moved, latency is per 1 MiB chunk.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "store/store.h"

/* Applies batches of PUTs until the deadline or max_keys; counts into r. */
static int store_fill(struct store *s, const struct bench_opts *o, uint64_t deadline_us,
                      uint64_t max_keys, bool with_dedupe, struct bench_result *r,
                      struct trine_err *err)
{
    uint32_t batch = o->batch ? o->batch : 64;
    r->batch = batch;
    struct store_op *ops = calloc(batch, sizeof(*ops));
    struct store_result *res = calloc(batch, sizeof(*res));
    char(*keys)[16] = calloc(batch, 16);
    uint8_t *val = malloc(o->record_bytes ? o->record_bytes : 1);
    if (!ops || !res || !keys || !val) {
        free(ops);
        free(res);
        free(keys);
        free(val);
        return err_set(err, -TRINE_ENOMEM, "apply buffers");
    }
    memset(val, 'v', o->record_bytes);
    int rc = 0;
    uint64_t index = 1;
    for (uint64_t now = bench_now_us(); now < deadline_us && index <= max_keys;) {
        for (uint32_t k = 0; k < batch; k++, index++) {
            bench_key(index, keys[k]);
            ops[k] = (struct store_op){.index = index,
                                       .term = 1,
                                       .type = STORE_OP_PUT,
                                       .key = (const uint8_t *)keys[k],
                                       .key_len = 16,
                                       .value = val,
                                       .value_len = o->record_bytes,
                                       .client_id = with_dedupe ? 1 + k % 64 : 0,
                                       .seq = with_dedupe ? index : 0};
        }
        rc = store_apply(s, 0, ops, batch, res);
        if (rc) {
            err_set(err, rc, "store_apply: %s", store_err(s)->msg);
            break;
        }
        uint64_t end = bench_now_us();
        for (uint32_t k = 0; k < batch; k++)
            hist_record(&r->lat_us, end - now);
        r->ops += batch;
        r->bytes += (uint64_t)batch * (16 + o->record_bytes);
        now = end;
    }
    free(ops);
    free(res);
    free(keys);
    free(val);
    return rc;
}

static int open_store(const struct bench_opts *o, const char *name, struct store **s,
                      struct trine_err *err)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/%s", o->dir, name);
    return store_open(dir, NULL, s, err);
}

int bench_wl_apply(const struct bench_opts *o, struct bench_result *r, struct trine_err *err)
{
    struct store *s;
    int rc = open_store(o, "store", &s, err);
    if (rc) return rc;
    uint64_t t0 = bench_now_us();
    /* Writes without a client identity, like the baseline's raw puts. */
    rc = store_fill(s, o, t0 + (uint64_t)(o->seconds * 1e6), UINT64_MAX, false, r, err);
    r->seconds = (double)(bench_now_us() - t0) / 1e6;
    store_close(s);
    return rc;
}

int bench_wl_snapshot(const struct bench_opts *o, struct bench_result *r, struct trine_err *err)
{
    struct store *src, *dst;
    int rc = open_store(o, "src", &src, err);
    if (rc) return rc;
    rc = open_store(o, "dst", &dst, err);
    if (rc) {
        store_close(src);
        return rc;
    }
    struct bench_result fill;
    memset(&fill, 0, sizeof(fill));
    hist_init(&fill.lat_us);
    rc = store_fill(src, o, bench_now_us() + (uint64_t)(o->seconds * 1e6), 1000000, true, &fill,
                    err);

    struct store_snapshot *snap = NULL;
    struct store_install *in = NULL;
    struct buf chunk;
    buf_init(&chunk);
    uint64_t t0 = bench_now_us();
    if (!rc) rc = store_snapshot_open(src, 0, &snap);
    if (!rc) rc = store_install_begin(dst, 0, &in);
    for (bool last = false; !rc && !last;) {
        uint64_t c0 = bench_now_us();
        rc = store_snapshot_next(snap, &chunk, 1 << 20, &last);
        if (!rc && chunk.len) rc = store_install_chunk(in, chunk.data, chunk.len);
        hist_record(&r->lat_us, bench_now_us() - c0);
        r->bytes += chunk.len;
    }
    uint64_t idx = 0, term = 0;
    if (!rc) {
        rc = store_install_finish(in, &idx, &term);
        in = NULL;
    }
    r->seconds = (double)(bench_now_us() - t0) / 1e6;
    r->ops = fill.ops;
    if (rc && !err->code)
        err_set(err, rc, "snapshot stream/install failed: %s", status_message(rc));
    uint64_t h1 = 0, h2 = 0, a1 = 0, a2 = 0;
    if (!rc && (store_content_hash(src, 0, &h1, &a1) || store_content_hash(dst, 0, &h2, &a2) ||
                h1 != h2 || a1 != a2))
        rc = err_set(err, -TRINE_ECORRUPT, "installed snapshot differs from its source");
    if (in) store_install_abort(in);
    if (snap) store_snapshot_close(snap);
    buf_free(&chunk);
    store_close(src);
    store_close(dst);
    return rc;
}
