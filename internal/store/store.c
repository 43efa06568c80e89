/*
 * store.c - opening and closing the store, leveldb options, the single
 * conversion of leveldb's errptr convention to Trine status codes, partition
 * meta records ('M' p: fmt u8 | generation u32 | applied_index u64 |
 * applied_term u64, see store_int.h), store_sync() and store_drop().
 *
 * leveldb options and why:
 * - create_if_missing: a new node starts with an empty store.
 * - write buffer 16 MiB (configurable, trined --store-memtable): fewer
 *   level-0 files and compactions under the apply load than leveldb's 4 MiB
 *   (compaction was a third of a node's CPU under sustained writes, see
 *   docs/benchmarks.md); larger ones cost more in skiplist inserts and make
 *   each store_sync() flush bigger.
 * - LRU block cache 64 MiB and a 10 bits/key bloom filter: gets of keys that
 *   are not in a table skip its blocks, which matters because every apply of
 *   an uncached key reads it first.
 * - no compression unless asked (trined --store-snappy on): compressing and
 *   decompressing every block in flushes and compactions cost ~8 % of a
 *   node's CPU under writes of incompressible values, and the WAL holds
 *   values uncompressed anyway.
 * - paranoid_checks off: a torn
 *   leveldb log tail after a power loss must not stop the node; the WAL
 *   replays from the applied index anyway. Snapshot and hash scans verify
 *   block checksums so corruption is not shipped to other replicas.
 * - every write has sync off except generation flips and drops, which must
 *   not be undone after the caller moved on (e.g. deleted WAL it replaced).
 */
#include "store/store_int.h"

#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "base/log.h"

#define MIB ((size_t)1 << 20)

/* leveldb::Status::ToString() prefixes -> status; the first match wins. */
static const struct {
    const char *needle;
    int rc;
} ldb_errors[] = {
    {"No space left", -TRINE_ENOSPACE},
    {"Corruption: ", -TRINE_ECORRUPT},
    {"NotFound: ", -TRINE_EIO}, /* a missing file, not a missing key */
    {"Not implemented: ", -TRINE_EUNSUPPORTED},
    {"Invalid argument: ", -TRINE_EINVALID},
    {"IO error: ", -TRINE_EIO},
};

int store_ldb_status(struct trine_err *err, char **errptr, const char *what)
{
    if (*errptr == NULL) return 0;
    int rc = -TRINE_EIO;
    for (size_t i = 0; i < sizeof(ldb_errors) / sizeof(ldb_errors[0]); i++) {
        if (strstr(*errptr, ldb_errors[i].needle) != NULL) {
            rc = ldb_errors[i].rc;
            break;
        }
    }
    err_set(err, rc, "%s: %s", what, *errptr);
    leveldb_free(*errptr);
    *errptr = NULL;
    return rc;
}

const struct trine_err *store_err(const struct store *s)
{
    return &s->err;
}

void store_stats(const struct store *s, struct store_stats *out)
{
    *out = s->stats;
}

/* --- keys ------------------------------------------------------------------------ */

int store_key_part(struct buf *b, uint8_t tag, uint32_t part)
{
    buf_reset(b);
    int rc = buf_reserve(b, 5);
    if (rc) return rc;
    b->data[0] = tag;
    put_u32be(b->data + 1, part);
    b->len = 5;
    return 0;
}

int store_key_gen(struct buf *b, uint8_t tag, uint32_t part, uint32_t gen)
{
    buf_reset(b);
    int rc = buf_reserve(b, STORE_PFX_LEN);
    if (rc) return rc;
    b->data[0] = tag;
    put_u32be(b->data + 1, part);
    put_u32be(b->data + 5, gen);
    b->len = STORE_PFX_LEN;
    return 0;
}

int store_key_data(struct buf *b, uint32_t part, uint32_t gen, const uint8_t *key, size_t n)
{
    int rc = store_key_gen(b, STORE_TAG_DATA, part, gen);
    return rc ? rc : buf_append(b, key, n);
}

int store_ldb_get(struct store *s, const uint8_t *key, size_t klen, char **val, size_t *vlen)
{
    char *e = NULL;
    s->stats.leveldb_reads++;
    *val = leveldb_get(s->db, s->ro, (const char *)key, klen, vlen, &e);
    int rc = store_ldb_status(&s->err, &e, "leveldb get");
    if (rc) return rc;
    return *val != NULL;
}

/* --- partition meta --------------------------------------------------------------- */

void store_meta_encode(uint8_t out[STORE_META_LEN], uint32_t gen, uint64_t applied_index,
                       uint64_t applied_term)
{
    out[0] = STORE_REC_FMT;
    put_u32be(out + 1, gen);
    put_u64be(out + 5, applied_index);
    put_u64be(out + 13, applied_term);
}

int store_meta_decode(const uint8_t *p, size_t n, uint32_t *gen, uint64_t *applied_index,
                      uint64_t *applied_term)
{
    if (n != STORE_META_LEN || p[0] != STORE_REC_FMT) return -TRINE_ECORRUPT;
    *gen = get_u32be(p + 1);
    *applied_index = get_u64be(p + 5);
    *applied_term = get_u64be(p + 13);
    return 0;
}

int store_part_get(struct store *s, uint32_t id, struct store_part **out)
{
    *out = NULL;
    /* Explicit codes (not `return err_set()`) where callers use *out: the
     * static analyzer cannot see that err_set() returns its rc. */
    if (id >= STORE_PARTITIONS_MAX) {
        err_set(&s->err, -TRINE_EINVALID, "partition %u out of range", id);
        return -TRINE_EINVALID;
    }
    if (id >= s->nparts) {
        uint32_t n = s->nparts ? s->nparts : 64;
        while (n <= id)
            n *= 2;
        size_t psize = sizeof(struct store_part *);
        struct store_part **np = realloc(s->parts, n * psize);
        if (np == NULL) {
            err_set(&s->err, -TRINE_ENOMEM, "partition table");
            return -TRINE_ENOMEM;
        }
        memset(np + s->nparts, 0, (n - s->nparts) * psize);
        s->parts = np;
        s->nparts = n;
    }
    if (s->parts[id] != NULL) {
        *out = s->parts[id];
        return 0;
    }
    struct store_part *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        err_set(&s->err, -TRINE_ENOMEM, "partition state");
        return -TRINE_ENOMEM;
    }
    p->id = id;
    buf_init(&p->filter.cursor);
    int rc = store_key_part(&s->kbuf, STORE_TAG_META, id);
    char *v = NULL;
    size_t vlen = 0;
    if (rc == 0) rc = store_ldb_get(s, s->kbuf.data, s->kbuf.len, &v, &vlen);
    if (rc == 1) {
        rc = store_meta_decode((const uint8_t *)v, vlen, &p->gen, &p->applied_index,
                               &p->applied_term);
        if (rc) err_set(&s->err, rc, "partition %u: malformed meta record", id);
    }
    leveldb_free(v);
    if (rc < 0) {
        free(p);
        return rc;
    }
    s->parts[id] = p;
    *out = p;
    return 0;
}

int store_part_read(struct store *s, uint32_t id, struct store_part **out)
{
    int rc = store_part_get(s, id, out);
    if (rc == 0 && store_in_batch(s, *out)) rc = store_flush(s);
    return rc;
}

void store_batch_reset(struct store *s)
{
    leveldb_writebatch_clear(s->wb);
    s->n_batch = 0;
    s->batch_epoch++;
}

void store_set_deferred(struct store *s, bool on)
{
    s->deferred = on;
}

int store_flush(struct store *s)
{
    if (s->failed) return err_set(&s->err, s->failed, "store failed earlier: %s", s->err.msg);
    if (s->n_batch == 0) return 0;
    char *e = NULL;
    leveldb_write(s->db, s->wo, s->wb, &e);
    store_batch_reset(s);
    int rc = store_ldb_status(&s->err, &e, "apply");
    /* Deferred applies already changed the in-memory state: losing them
     * fails the store for good. */
    if (rc && s->deferred) s->failed = rc;
    s->stats.writes++;
    return rc;
}

int store_applied(struct store *s, uint32_t partition, uint64_t *index, uint64_t *term)
{
    struct store_part *p;
    int rc = store_part_get(s, partition, &p);
    if (rc) return rc;
    *index = p->applied_index;
    if (term) *term = p->applied_term;
    return 0;
}

int store_partitions(struct store *s, uint32_t *ids, size_t max, size_t *n)
{
    *n = 0;
    int frc = store_flush(s);
    if (frc) return frc;
    leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ro);
    const char pfx = STORE_TAG_META;
    for (leveldb_iter_seek(it, &pfx, 1); leveldb_iter_valid(it) && *n < max;
         leveldb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = leveldb_iter_key(it, &klen);
        if (klen < 1 || k[0] != STORE_TAG_META) break;
        const uint8_t *v = (const uint8_t *)leveldb_iter_value(it, &vlen);
        uint32_t gen;
        uint64_t idx, term;
        if (klen != 5 || store_meta_decode(v, vlen, &gen, &idx, &term)) {
            leveldb_iter_destroy(it);
            return err_set(&s->err, -TRINE_ECORRUPT, "malformed meta record");
        }
        if (idx > 0) ids[(*n)++] = get_u32be((const uint8_t *)k + 1);
    }
    char *e = NULL;
    leveldb_iter_get_error(it, &e);
    leveldb_iter_destroy(it);
    return store_ldb_status(&s->err, &e, "list partitions");
}

/* --- durability ---------------------------------------------------------------------- */

int store_sync(struct store *s)
{
    int frc = store_flush(s);
    if (frc) return frc;
    /* leveldb syncs only its current log on a synced write; a log retired by a
     * memtable switch was closed unsynced and is durable only once that
     * memtable reached a table file. CompactRange() first flushes the memtable
     * and waits for it (table and MANIFEST synced); over a key range no table
     * holds (tag 0xFF is never written) it compacts nothing else. */
    static const char never[] = {(char)0xFF, 's', 'y', 'n', 'c'};
    leveldb_compact_range(s->db, never, sizeof(never), never, sizeof(never));
    /* A synced rewrite of the format record then checks that leveldb is still
     * healthy (after a background error, e.g. a failed flush, writes fail). */
    static const char fkey = STORE_TAG_FORMAT;
    uint8_t f[4];
    put_u32be(f, STORE_FORMAT);
    char *e = NULL;
    leveldb_put(s->db, s->wo_sync, &fkey, 1, (const char *)f, sizeof(f), &e);
    return store_ldb_status(&s->err, &e, "store sync");
}

int store_drop(struct store *s, uint32_t partition)
{
    struct store_part *p;
    int rc = store_part_read(s, partition, &p);
    if (rc) return rc;
    if (p->install != NULL) store_install_abort(p->install);
    uint32_t gen_max;
    rc = store_gen_max(s, p, &gen_max);
    if (rc) return rc;
    if (gen_max == UINT32_MAX)
        return err_set(&s->err, -TRINE_EINVALID, "partition %u: generations exhausted", p->id);
    /* Keep a meta record with the next generation and applied index 0 rather
     * than deleting it, so generation numbers never repeat. */
    uint8_t meta[STORE_META_LEN], mark = STORE_GEN_GARBAGE;
    store_meta_encode(meta, gen_max + 1, 0, 0);
    leveldb_writebatch_t *wb = leveldb_writebatch_create();
    rc = store_key_part(&s->kbuf, STORE_TAG_META, p->id);
    if (rc == 0) {
        leveldb_writebatch_put(wb, (const char *)s->kbuf.data, s->kbuf.len, (const char *)meta,
                               sizeof(meta));
        rc = store_key_gen(&s->kbuf, STORE_TAG_GEN, p->id, p->gen);
    }
    if (rc == 0) {
        leveldb_writebatch_put(wb, (const char *)s->kbuf.data, s->kbuf.len, (const char *)&mark, 1);
        char *e = NULL;
        leveldb_write(s->db, s->wo_sync, wb, &e);
        rc = store_ldb_status(&s->err, &e, "drop partition");
    }
    leveldb_writebatch_destroy(wb);
    if (rc) return rc;
    uint32_t old = p->gen;
    p->gen = gen_max + 1;
    p->applied_index = 0;
    p->applied_term = 0;
    p->dedupe_gc_due = 0;
    store_filter_reset(s, p);
    store_caches_clear(s);
    return store_gen_delete(s, p->id, old);
}

/* --- open / close ---------------------------------------------------------------------- */

static int check_format(struct store *s)
{
    static const char fkey = STORE_TAG_FORMAT;
    char *v = NULL;
    size_t vlen = 0;
    int rc = store_ldb_get(s, (const uint8_t *)&fkey, 1, &v, &vlen);
    if (rc < 0) return rc;
    if (rc == 1) {
        uint32_t f = vlen == 4 ? get_u32be((const uint8_t *)v) : 0;
        leveldb_free(v);
        if (vlen != 4) return err_set(&s->err, -TRINE_ECORRUPT, "malformed format record");
        if (f != STORE_FORMAT)
            return err_set(&s->err, -TRINE_EUNSUPPORTED, "store format %u, expected %u", f,
                           STORE_FORMAT);
        return 0;
    }
    /* No format record: only an empty database may become a store. */
    leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ro);
    leveldb_iter_seek_to_first(it);
    bool empty = !leveldb_iter_valid(it);
    char *e = NULL;
    leveldb_iter_get_error(it, &e);
    leveldb_iter_destroy(it);
    rc = store_ldb_status(&s->err, &e, "open");
    if (rc) return rc;
    if (!empty)
        return err_set(&s->err, -TRINE_ECORRUPT, "database has data but no store format record");
    uint8_t f[4];
    put_u32be(f, STORE_FORMAT);
    leveldb_put(s->db, s->wo_sync, &fkey, 1, (const char *)f, sizeof(f), &e);
    return store_ldb_status(&s->err, &e, "write format record");
}

static void apply_defaults(struct store_options *o)
{
    if (o->write_buffer_bytes == 0) o->write_buffer_bytes = 16 * MIB;
    if (o->block_cache_bytes == 0) o->block_cache_bytes = 64 * MIB;
    if (o->bloom_bits_per_key == 0) o->bloom_bits_per_key = 10;
    if (o->max_open_files == 0) o->max_open_files = 1000;
    if (o->meta_cache_entries == 0) o->meta_cache_entries = 524288;
    if (o->client_cache_entries == 0) o->client_cache_entries = 16384;
    if (o->dedupe_window == 0) o->dedupe_window = 1048576;
    if (o->key_filter_bytes == 0) o->key_filter_bytes = 64 * MIB;
    if (o->key_filter_bytes == SIZE_MAX) o->key_filter_bytes = 0; /* disabled */
}

int store_open(const char *dir, const struct store_options *opt, struct store **out,
               struct trine_err *err)
{
    *out = NULL;
    struct store *s = calloc(1, sizeof(*s));
    if (s == NULL) return err_set(err, -TRINE_ENOMEM, "store_open");
    if (opt) s->opt = *opt;
    apply_defaults(&s->opt);
    buf_init(&s->kbuf);
    buf_init(&s->kbuf2);
    buf_init(&s->vbuf);
    buf_init(&s->hashes);
    buf_init(&s->ov.arena);
    s->ov.epoch = 1;    /* slot words are zeroed: epoch 0 would look used */
    s->batch_epoch = 1; /* a partition's 0 never matches */
    atomic_init(&s->snapshots_open, 0);

    s->ldb_opts = leveldb_options_create();
    leveldb_options_set_create_if_missing(s->ldb_opts, 1);
    leveldb_options_set_write_buffer_size(s->ldb_opts, s->opt.write_buffer_bytes);
    leveldb_options_set_max_open_files(s->ldb_opts, s->opt.max_open_files);
    leveldb_options_set_compression(s->ldb_opts, s->opt.snappy ? leveldb_snappy_compression
                                                               : leveldb_no_compression);
    s->ldb_cache = leveldb_cache_create_lru(s->opt.block_cache_bytes);
    leveldb_options_set_cache(s->ldb_opts, s->ldb_cache);
    if (s->opt.bloom_bits_per_key > 0) {
        s->ldb_bloom = leveldb_filterpolicy_create_bloom(s->opt.bloom_bits_per_key);
        leveldb_options_set_filter_policy(s->ldb_opts, s->ldb_bloom);
    }
    s->ro = leveldb_readoptions_create();
    s->ro_scan = leveldb_readoptions_create();
    leveldb_readoptions_set_fill_cache(s->ro_scan, 0);
    s->wo = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(s->wo, 0);
    s->wo_sync = leveldb_writeoptions_create();
    leveldb_writeoptions_set_sync(s->wo_sync, 1);
    s->wb = leveldb_writebatch_create();

    char *e = NULL;
    s->db = leveldb_open(s->ldb_opts, dir, &e);
    int rc = store_ldb_status(&s->err, &e, dir);
    if (rc == 0) rc = check_format(s);
    if (rc == 0) {
        size_t m = s->opt.meta_cache_entries == SIZE_MAX ? 0 : s->opt.meta_cache_entries;
        size_t c = s->opt.client_cache_entries == SIZE_MAX ? 0 : s->opt.client_cache_entries;
        rc = store_cache_init(&s->meta_cache, m, STORE_REC_HDR);
        if (rc == 0) rc = store_cache_init(&s->client_cache, c, STORE_DD_REC_MAX);
        if (rc) err_set(&s->err, rc, "store caches");
    }
    if (rc == 0) rc = store_gen_recover(s);
    if (rc) {
        if (err) *err = s->err;
        store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void store_close(struct store *s)
{
    if (s == NULL) return;
    TRINE_ASSERT(atomic_load(&s->snapshots_open) == 0);
    if (s->n_batch && !s->failed && store_flush(s))
        log_error("store", "close: the deferred batch was not written: %s", s->err.msg);
    for (uint32_t i = 0; i < s->nparts; i++) {
        if (s->parts[i] == NULL) continue;
        if (s->parts[i]->install) store_install_drop(s->parts[i]->install);
        store_filter_reset(s, s->parts[i]);
        free(s->parts[i]);
    }
    free(s->parts);
    leveldb_free(s->get_val);
    if (s->db) leveldb_close(s->db);
    leveldb_writebatch_destroy(s->wb);
    leveldb_writeoptions_destroy(s->wo);
    leveldb_writeoptions_destroy(s->wo_sync);
    leveldb_readoptions_destroy(s->ro);
    leveldb_readoptions_destroy(s->ro_scan);
    leveldb_options_destroy(s->ldb_opts);
    leveldb_cache_destroy(s->ldb_cache);
    if (s->ldb_bloom) leveldb_filterpolicy_destroy(s->ldb_bloom);
    store_cache_free(&s->meta_cache);
    store_cache_free(&s->client_cache);
    store_ov_free(&s->ov);
    buf_free(&s->kbuf);
    buf_free(&s->kbuf2);
    buf_free(&s->vbuf);
    buf_free(&s->hashes);
    free(s);
}
