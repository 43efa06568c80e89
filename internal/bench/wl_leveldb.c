/*
 * wl_leveldb.c - the raw leveldb baseline for `apply`: puts of 16-byte keys
 * and record_bytes values in WriteBatches of `batch`, sync off, the same
 * options the store uses. This file is the documented exception to "store is
 * the only user of leveldb/c.h": a baseline must bypass what it measures.
 */
#include <leveldb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"

int bench_wl_leveldb(const struct bench_opts *o, struct bench_result *r, struct trine_err *err)
{
    uint32_t batch = o->batch ? o->batch : 64;
    r->batch = batch;
    char path[4096];
    snprintf(path, sizeof(path), "%s/leveldb", o->dir);
    /* The store's defaults (store.h): 32 MiB memtable, 64 MiB block cache, 10-bit bloom. */
    leveldb_options_t *opt = leveldb_options_create();
    leveldb_options_set_create_if_missing(opt, 1);
    leveldb_options_set_write_buffer_size(opt, 32u << 20);
    leveldb_cache_t *cache = leveldb_cache_create_lru(64u << 20);
    leveldb_filterpolicy_t *bloom = leveldb_filterpolicy_create_bloom(10);
    leveldb_options_set_cache(opt, cache);
    leveldb_options_set_filter_policy(opt, bloom);
    char *lerr = NULL;
    leveldb_t *db = leveldb_open(opt, path, &lerr);
    if (lerr) {
        int rc = err_set(err, -TRINE_EIO, "leveldb open %s: %s", path, lerr);
        leveldb_free(lerr);
        leveldb_options_destroy(opt);
        leveldb_cache_destroy(cache);
        leveldb_filterpolicy_destroy(bloom);
        return rc;
    }
    leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(wo, 0);
    leveldb_writebatch_t *wb = leveldb_writebatch_create();
    char *val = malloc(o->record_bytes ? o->record_bytes : 1);
    memset(val, 'v', o->record_bytes);

    int rc = 0;
    uint64_t i = 0, t0 = bench_now_us(), deadline = t0 + (uint64_t)(o->seconds * 1e6);
    for (uint64_t now = t0; now < deadline;) {
        leveldb_writebatch_clear(wb);
        for (uint32_t k = 0; k < batch; k++, i++) {
            char key[16];
            bench_key(i, key);
            leveldb_writebatch_put(wb, key, sizeof(key), val, o->record_bytes);
        }
        leveldb_write(db, wo, wb, &lerr);
        if (lerr) {
            rc = err_set(err, -TRINE_EIO, "leveldb write: %s", lerr);
            leveldb_free(lerr);
            break;
        }
        uint64_t end = bench_now_us();
        for (uint32_t k = 0; k < batch; k++)
            hist_record(&r->lat_us, end - now);
        r->ops += batch;
        r->bytes += (uint64_t)batch * (16 + o->record_bytes);
        now = end;
    }
    r->seconds = (double)(bench_now_us() - t0) / 1e6;
    free(val);
    leveldb_writebatch_destroy(wb);
    leveldb_writeoptions_destroy(wo);
    leveldb_close(db);
    leveldb_destroy_db(opt, path, &lerr);
    if (lerr) leveldb_free(lerr);
    leveldb_options_destroy(opt);
    leveldb_cache_destroy(cache);
    leveldb_filterpolicy_destroy(bloom);
    return rc;
}
