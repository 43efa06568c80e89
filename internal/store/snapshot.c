/*
 * snapshot.c - a partition as a consistent, chunked byte stream, and the
 * content hash computed over the same records.
 *
 * Stream layout (defined in store_int.h, installed by install.c):
 *   header 32 | records (tag u8 | key_len u32 | val_len u32 | key | val)* |
 *   trailer 'E' | record_count u64 | crc32c u32 over every earlier byte.
 * 'D' records carry the data record exactly as stored (metadata + value);
 * 'C' records the canonical dedupe record, live ones only. The expiry and
 * dedupe GC indexes are derived data: install.c rebuilds them.
 *
 * Consistency: everything, including the applied index and term in the
 * header, is read through one leveldb snapshot taken at open, so applies that
 * run meanwhile are not seen. A snapshot object touches only leveldb and its
 * own memory, so it may be consumed on another thread than the store's owner.
 * Reads verify leveldb block checksums and do not fill the block cache.
 */
#include "store/store_int.h"

#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "base/crc32c.h"

enum { PH_HEADER, PH_DATA, PH_CLIENT, PH_TRAILER, PH_DONE };

struct store_snapshot {
    leveldb_t *db;
    const leveldb_snapshot_t *snap;
    leveldb_readoptions_t *ro;
    leveldb_iterator_t *it;
    atomic_int *open_count;
    uint32_t part, gen;
    uint64_t applied_index, applied_term, window;
    int phase;
    uint8_t pfx[STORE_PFX_LEN]; /* of the phase being iterated */
    struct buf pend;            /* encoded, not yet handed out: pend.data[off..len) */
    size_t off;
    uint32_t crc;
    uint64_t count;
    struct trine_err err;
};

static int snap_open(struct store *s, uint32_t partition, struct store_snapshot **out)
{
    *out = NULL;
    int frc = store_flush(s); /* the snapshot must see every applied op */
    if (frc) return frc;
    if (partition >= STORE_PARTITIONS_MAX) {
        err_set(&s->err, -TRINE_EINVALID, "partition %u out of range", partition);
        return -TRINE_EINVALID;
    }
    struct store_snapshot *sn = calloc(1, sizeof(*sn));
    if (sn == NULL) {
        err_set(&s->err, -TRINE_ENOMEM, "snapshot");
        return -TRINE_ENOMEM;
    }
    sn->db = s->db;
    sn->part = partition;
    sn->window = s->opt.dedupe_window;
    buf_init(&sn->pend);
    sn->snap = leveldb_create_snapshot(s->db);
    sn->ro = leveldb_readoptions_create();
    leveldb_readoptions_set_snapshot(sn->ro, sn->snap);
    leveldb_readoptions_set_verify_checksums(sn->ro, 1);
    leveldb_readoptions_set_fill_cache(sn->ro, 0);
    sn->open_count = &s->snapshots_open;
    atomic_fetch_add(sn->open_count, 1);

    uint8_t mkey[5];
    mkey[0] = STORE_TAG_META;
    put_u32be(mkey + 1, partition);
    char *e = NULL;
    size_t vlen = 0;
    char *v = leveldb_get(s->db, sn->ro, (const char *)mkey, sizeof(mkey), &vlen, &e);
    int rc = store_ldb_status(&s->err, &e, "snapshot meta");
    if (rc == 0 && v != NULL &&
        store_meta_decode((const uint8_t *)v, vlen, &sn->gen, &sn->applied_index,
                          &sn->applied_term))
        rc = err_set(&s->err, -TRINE_ECORRUPT, "partition %u: malformed meta", partition);
    leveldb_free(v);
    if (rc) {
        store_snapshot_close(sn);
        return rc;
    }
    *out = sn;
    return 0;
}

int store_snapshot_open(struct store *s, uint32_t partition, struct store_snapshot **out)
{
    return snap_open(s, partition, out);
}

void store_snapshot_info(const struct store_snapshot *sn, uint64_t *applied_index,
                         uint64_t *applied_term)
{
    if (applied_index) *applied_index = sn->applied_index;
    if (applied_term) *applied_term = sn->applied_term;
}

const struct trine_err *store_snapshot_err(const struct store_snapshot *sn)
{
    return &sn->err;
}

void store_snapshot_close(struct store_snapshot *sn)
{
    if (sn == NULL) return;
    if (sn->it) leveldb_iter_destroy(sn->it);
    leveldb_readoptions_destroy(sn->ro);
    leveldb_release_snapshot(sn->db, sn->snap);
    atomic_fetch_sub(sn->open_count, 1);
    buf_free(&sn->pend);
    free(sn);
}

static void seek_phase(struct store_snapshot *sn, uint8_t tag)
{
    sn->pfx[0] = tag;
    put_u32be(sn->pfx + 1, sn->part);
    put_u32be(sn->pfx + 5, sn->gen);
    if (sn->it == NULL) sn->it = leveldb_create_iterator(sn->db, sn->ro);
    leveldb_iter_seek(sn->it, (const char *)sn->pfx, sizeof(sn->pfx));
}

static int append_record(struct buf *out, uint8_t tag, const void *key, size_t klen,
                         const void *val, size_t vlen)
{
    int rc = buf_reserve(out, STORE_SNAP_REC_HDR + klen + vlen);
    if (rc) return rc;
    uint8_t *q = out->data + out->len;
    q[0] = tag;
    put_u32be(q + 1, (uint32_t)klen);
    put_u32be(q + 5, (uint32_t)vlen);
    memcpy(q + STORE_SNAP_REC_HDR, key, klen);
    if (vlen) memcpy(q + STORE_SNAP_REC_HDR + klen, val, vlen);
    out->len += STORE_SNAP_REC_HDR + klen + vlen;
    return 0;
}

/* Appends the next body record to out; *have = false once the body is done. */
static int next_record(struct store_snapshot *sn, struct buf *out, bool *have)
{
    *have = false;
    if (sn->phase == PH_HEADER) {
        sn->phase = PH_DATA;
        seek_phase(sn, STORE_TAG_DATA);
    }
    while (sn->phase == PH_DATA || sn->phase == PH_CLIENT) {
        size_t klen, vlen;
        const char *k = leveldb_iter_valid(sn->it) ? leveldb_iter_key(sn->it, &klen) : NULL;
        if (k == NULL || !store_has_prefix(k, klen, sn->pfx, sizeof(sn->pfx))) {
            char *e = NULL;
            leveldb_iter_get_error(sn->it, &e);
            int rc = store_ldb_status(&sn->err, &e, "snapshot scan");
            if (rc) return rc;
            if (sn->phase == PH_DATA) {
                sn->phase = PH_CLIENT;
                seek_phase(sn, STORE_TAG_CLIENT);
            } else {
                sn->phase = PH_TRAILER;
            }
            continue;
        }
        const uint8_t *v = (const uint8_t *)leveldb_iter_value(sn->it, &vlen);
        const uint8_t *key = (const uint8_t *)k + STORE_PFX_LEN;
        klen -= STORE_PFX_LEN;
        int rc;
        if (sn->phase == PH_DATA) {
            struct store_meta m;
            if (klen == 0 || klen > STORE_KEY_MAX || store_rec_decode(v, vlen, &m, NULL, NULL))
                return err_set(&sn->err, -TRINE_ECORRUPT, "partition %u: malformed data record",
                               sn->part);
            rc = append_record(out, STORE_TAG_DATA, key, klen, v, vlen);
        } else {
            struct store_dd_rec rec;
            if (klen != 8 || store_dd_decode(v, vlen, &rec))
                return err_set(&sn->err, -TRINE_ECORRUPT, "partition %u: malformed dedupe record",
                               sn->part);
            uint8_t id[8];
            memcpy(id, key, sizeof(id)); /* the iterator's key dies at next() */
            leveldb_iter_next(sn->it);
            /* Forgotten records may linger until the GC reaches them. */
            if (rec.last_index + sn->window <= sn->applied_index || rec.n == 0) continue;
            uint8_t canon[STORE_DD_REC_MAX];
            size_t n = store_dd_encode_canon(canon, &rec);
            rc = append_record(out, STORE_TAG_CLIENT, id, sizeof(id), canon, n);
            if (rc) return err_set(&sn->err, rc, "snapshot buffer");
            sn->count++;
            *have = true;
            return 0;
        }
        if (rc) return err_set(&sn->err, rc, "snapshot buffer");
        leveldb_iter_next(sn->it);
        sn->count++;
        *have = true;
        return 0;
    }
    return 0;
}

static int fill(struct store_snapshot *sn, size_t want)
{
    /* Compact first: what is left over is less than one chunk. */
    if (sn->off) {
        buf_consume(&sn->pend, sn->off);
        sn->off = 0;
    }
    while (sn->pend.len < want && sn->phase != PH_DONE) {
        size_t before = sn->pend.len;
        int rc = 0;
        if (sn->phase == PH_HEADER) {
            rc = buf_reserve(&sn->pend, STORE_SNAP_HDR_LEN);
            if (rc) return err_set(&sn->err, rc, "snapshot buffer");
            uint8_t *q = sn->pend.data + sn->pend.len;
            memcpy(q, STORE_SNAP_MAGIC, 8); /* NOLINT(bugprone-not-null-terminated-result) */
            put_u32be(q + 8, STORE_SNAP_FORMAT);
            put_u32be(q + 12, sn->part);
            put_u64be(q + 16, sn->applied_index);
            put_u64be(q + 24, sn->applied_term);
            sn->pend.len += STORE_SNAP_HDR_LEN;
            sn->phase = PH_DATA;
            seek_phase(sn, STORE_TAG_DATA);
        } else if (sn->phase == PH_TRAILER) {
            rc = buf_reserve(&sn->pend, STORE_SNAP_TRAILER);
            if (rc) return err_set(&sn->err, rc, "snapshot buffer");
            uint8_t *q = sn->pend.data + sn->pend.len;
            q[0] = STORE_SNAP_TAG_END;
            put_u64be(q + 1, sn->count);
            sn->crc = crc32c(sn->crc, q, 9);
            put_u32be(q + 9, sn->crc);
            sn->pend.len += STORE_SNAP_TRAILER;
            sn->phase = PH_DONE;
            continue;
        } else {
            bool have;
            rc = next_record(sn, &sn->pend, &have);
            if (rc) return rc;
        }
        sn->crc = crc32c(sn->crc, sn->pend.data + before, sn->pend.len - before);
    }
    return 0;
}

int store_snapshot_next(struct store_snapshot *sn, struct buf *chunk, size_t bytes_max, bool *last)
{
    buf_reset(chunk);
    *last = false;
    if (bytes_max == 0) return err_set(&sn->err, -TRINE_EINVALID, "snapshot chunk of 0 bytes");
    if (sn->pend.len - sn->off < bytes_max) {
        int rc = fill(sn, bytes_max);
        if (rc) return rc;
    }
    size_t avail = sn->pend.len - sn->off;
    size_t take = avail < bytes_max ? avail : bytes_max;
    if (take && buf_append(chunk, sn->pend.data + sn->off, take))
        return err_set(&sn->err, -TRINE_ENOMEM, "snapshot chunk");
    sn->off += take;
    *last = sn->phase == PH_DONE && sn->off == sn->pend.len;
    return 0;
}

/* --- content hash ------------------------------------------------------------------ */

int store_content_hash(struct store *s, uint32_t partition, uint64_t *hash, uint64_t *applied_index)
{
    struct store_snapshot *sn;
    int rc = snap_open(s, partition, &sn);
    if (rc) return rc;
    /* Chain the records: h = H(h, record), then the count. Same records in
     * the same order <=> same hash (up to 64-bit collisions). */
    uint64_t h = 0x7472696e65ull; /* "trine" */
    struct buf rec;
    buf_init(&rec);
    for (;;) {
        bool have;
        buf_reset(&rec);
        rc = next_record(sn, &rec, &have);
        if (rc) {
            s->err = sn->err;
            break;
        }
        if (!have) break;
        h = store_hash64(h, rec.data, rec.len);
    }
    if (rc == 0) {
        uint8_t cnt[8];
        put_u64be(cnt, sn->count);
        *hash = store_hash64(h, cnt, sizeof(cnt));
        *applied_index = sn->applied_index;
    }
    buf_free(&rec);
    store_snapshot_close(sn);
    return rc;
}
