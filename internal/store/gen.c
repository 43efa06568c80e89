/*
 * gen.c - partition generations: finding the highest one, deleting one, and
 * cleaning up at open what an interrupted install or drop left behind.
 *
 *   'G' p g -> 1 (install in progress) | 2 (garbage)
 *
 * A generation other than the one 'M' p names is never read. Deleting one
 * walks its four key ranges ('D', 'X', 'C', 'L') in bounded batches, then
 * removes its marker with a synced write, so a crash midway leaves the marker
 * and the next open resumes. The current generation is never deleted, whatever
 * a marker says.
 */
#include "store/store_int.h"

#include <stdlib.h>
#include <string.h>

#include "base/log.h"

#define DELETE_BATCH_KEYS 4096

void store_caches_clear(struct store *s)
{
    store_cache_clear(&s->meta_cache);
    store_cache_clear(&s->client_cache);
}

static int delete_range(struct store *s, leveldb_writebatch_t *wb, const uint8_t *pfx,
                        size_t pfx_len)
{
    leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ro_scan);
    int rc = 0;
    size_t n = 0;
    char *e = NULL;
    for (leveldb_iter_seek(it, (const char *)pfx, pfx_len); leveldb_iter_valid(it);
         leveldb_iter_next(it)) {
        size_t klen;
        const char *k = leveldb_iter_key(it, &klen);
        if (!store_has_prefix(k, klen, pfx, pfx_len)) break;
        leveldb_writebatch_delete(wb, k, klen);
        if (++n % DELETE_BATCH_KEYS == 0) {
            leveldb_write(s->db, s->wo, wb, &e);
            leveldb_writebatch_clear(wb);
            if ((rc = store_ldb_status(&s->err, &e, "delete generation")) != 0) break;
        }
    }
    if (rc == 0) {
        leveldb_iter_get_error(it, &e);
        rc = store_ldb_status(&s->err, &e, "delete generation scan");
    }
    if (rc == 0) {
        leveldb_write(s->db, s->wo, wb, &e);
        rc = store_ldb_status(&s->err, &e, "delete generation");
    }
    leveldb_writebatch_clear(wb);
    leveldb_iter_destroy(it);
    return rc;
}

int store_gen_delete(struct store *s, uint32_t part, uint32_t gen)
{
    static const uint8_t tags[] = {STORE_TAG_DATA, STORE_TAG_EXPIRY, STORE_TAG_CLIENT,
                                   STORE_TAG_LRU};
    uint8_t pfx[STORE_PFX_LEN];
    put_u32be(pfx + 1, part);
    put_u32be(pfx + 5, gen);
    leveldb_writebatch_t *wb = leveldb_writebatch_create();
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof(tags); i++) {
        pfx[0] = tags[i];
        rc = delete_range(s, wb, pfx, sizeof(pfx));
    }
    leveldb_writebatch_destroy(wb);
    if (rc) return rc;
    pfx[0] = STORE_TAG_GEN;
    char *e = NULL;
    leveldb_delete(s->db, s->wo_sync, (const char *)pfx, sizeof(pfx), &e);
    return store_ldb_status(&s->err, &e, "delete generation marker");
}

int store_gen_max(struct store *s, const struct store_part *p, uint32_t *out)
{
    *out = p->gen;
    uint8_t pfx[5];
    pfx[0] = STORE_TAG_GEN;
    put_u32be(pfx + 1, p->id);
    leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ro);
    /* Markers sort by generation: the last one with the prefix is the highest. */
    for (leveldb_iter_seek(it, (const char *)pfx, sizeof(pfx)); leveldb_iter_valid(it);
         leveldb_iter_next(it)) {
        size_t klen;
        const char *k = leveldb_iter_key(it, &klen);
        if (!store_has_prefix(k, klen, pfx, sizeof(pfx))) break;
        if (klen != STORE_PFX_LEN) {
            leveldb_iter_destroy(it);
            return err_set(&s->err, -TRINE_ECORRUPT, "malformed generation marker");
        }
        uint32_t g = get_u32be((const uint8_t *)k + 5);
        if (g > *out) *out = g;
    }
    char *e = NULL;
    leveldb_iter_get_error(it, &e);
    leveldb_iter_destroy(it);
    return store_ldb_status(&s->err, &e, "generation markers");
}

struct marker {
    uint32_t part, gen;
    uint8_t state;
};

int store_gen_recover(struct store *s)
{
    /* Collect first: deleting generations rewrites what the scan walks. */
    struct marker *ms = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    const char pfx = STORE_TAG_GEN;
    leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ro);
    for (leveldb_iter_seek(it, &pfx, 1); leveldb_iter_valid(it); leveldb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = leveldb_iter_key(it, &klen);
        if (klen < 1 || k[0] != STORE_TAG_GEN) break;
        const char *v = leveldb_iter_value(it, &vlen);
        if (klen != STORE_PFX_LEN || vlen != 1) {
            rc = err_set(&s->err, -TRINE_ECORRUPT, "malformed generation marker");
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            struct marker *nm = realloc(ms, cap * sizeof(*nm));
            if (nm == NULL) {
                rc = err_set(&s->err, -TRINE_ENOMEM, "generation markers");
                break;
            }
            ms = nm;
        }
        ms[n++] = (struct marker){get_u32be((const uint8_t *)k + 1),
                                  get_u32be((const uint8_t *)k + 5), (uint8_t)v[0]};
    }
    char *e = NULL;
    leveldb_iter_get_error(it, &e);
    leveldb_iter_destroy(it);
    int lrc = store_ldb_status(&s->err, &e, "generation markers");
    if (rc == 0) rc = lrc;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct store_part *p;
        rc = store_part_get(s, ms[i].part, &p);
        if (rc) break;
        if (ms[i].gen == p->gen) {
            /* Cannot happen (the flip removes the marker in the same batch);
             * whatever it says, keep the data 'M' points to. */
            log_part(LOG_LEVEL_WARN, "store", p->id, "marker on current generation %u ignored",
                     p->gen);
            char *e2 = NULL;
            uint8_t key[STORE_PFX_LEN] = {STORE_TAG_GEN};
            put_u32be(key + 1, p->id);
            put_u32be(key + 5, p->gen);
            leveldb_delete(s->db, s->wo_sync, (const char *)key, sizeof(key), &e2);
            rc = store_ldb_status(&s->err, &e2, "delete marker");
            continue;
        }
        log_part(LOG_LEVEL_INFO, "store", p->id, "deleting %s generation %u",
                 ms[i].state == STORE_GEN_INSTALLING ? "unfinished install" : "garbage", ms[i].gen);
        rc = store_gen_delete(s, p->id, ms[i].gen);
    }
    free(ms);
    return rc;
}
