/*
 * install.c - replacing a partition with a snapshot stream, atomically.
 *
 * begin:  picks generation g' = (highest generation of p ever named) + 1 and
 *         durably writes the marker 'G' p g' = 1 (installing).
 * chunk:  parses the stream (any chunking; a record may span chunks, at most
 *         one record is buffered) and writes its records under ('D'|'X'|'C'|
 *         'L', p, g') with sync off. Nothing reads g' yet.
 * finish: checks the trailer (record count, CRC-32C of the whole stream), then
 *         ONE synced batch: 'M' p -> (g', applied index, term), delete marker
 *         g', marker g (the old generation) = 2 (garbage). Then deletes g.
 * A crash before the flip leaves 'M' naming g: the old state, and open
 * deletes g' (marker 1 not current). A crash after it leaves the new state,
 * and open finishes deleting g (marker 2). Never a mix.
 *
 * Every byte here came from another node: lengths, counts, records and the
 * CRC are checked and a bad stream is -TRINE_ECORRUPT, never an assert.
 */
#include "store/store_int.h"

#include <stdlib.h>
#include <string.h>

#include "base/crc32c.h"
#include "base/log.h"

#define FLUSH_BYTES ((size_t)4 << 20)

enum { IN_HEADER, IN_BODY, IN_DONE };

struct store_install {
    struct store *s;
    struct store_part *p;
    uint32_t gen;
    leveldb_writebatch_t *wb;
    size_t wb_bytes;
    struct buf pend; /* received, not yet parsed (at most one partial record) */
    struct buf key;
    int phase;
    int failed; /* 0, or the status that killed the install */
    uint32_t crc;
    uint64_t count, applied_index, applied_term;
};

static int fail(struct store_install *in, int rc, const char *what)
{
    if (what != NULL) err_set(&in->s->err, rc, "install partition %u: %s", in->p->id, what);
    in->failed = rc;
    return rc;
}

static int write_gen_marker(struct store *s, uint32_t part, uint32_t gen, uint8_t state)
{
    int rc = store_key_gen(&s->kbuf2, STORE_TAG_GEN, part, gen);
    if (rc) return err_set(&s->err, rc, "marker key");
    char *e = NULL;
    leveldb_put(s->db, s->wo_sync, (const char *)s->kbuf2.data, s->kbuf2.len, (const char *)&state,
                1, &e);
    return store_ldb_status(&s->err, &e, "generation marker");
}

int store_install_begin(struct store *s, uint32_t partition, struct store_install **out)
{
    *out = NULL;
    struct store_part *p;
    int rc = store_part_read(s, partition, &p);
    if (rc) return rc;
    if (p->install != NULL)
        return err_set(&s->err, -TRINE_EBUSY, "partition %u: install already running", p->id);
    uint32_t gmax;
    rc = store_gen_max(s, p, &gmax);
    if (rc) return rc;
    if (gmax == UINT32_MAX)
        return err_set(&s->err, -TRINE_EINVALID, "partition %u: generations exhausted", p->id);
    struct store_install *in = calloc(1, sizeof(*in));
    if (in == NULL) return err_set(&s->err, -TRINE_ENOMEM, "install");
    in->s = s;
    in->p = p;
    in->gen = gmax + 1;
    buf_init(&in->pend);
    buf_init(&in->key);
    in->wb = leveldb_writebatch_create();
    /* Synced, so the marker can never be lost while records written after it
     * survive (leveldb may skip a damaged log record and keep later ones). */
    rc = write_gen_marker(s, p->id, in->gen, STORE_GEN_INSTALLING);
    if (rc) {
        store_install_drop(in);
        return rc;
    }
    p->install = in;
    *out = in;
    return 0;
}

static int flush(struct store_install *in)
{
    if (in->wb_bytes == 0) return 0;
    char *e = NULL;
    leveldb_write(in->s->db, in->s->wo, in->wb, &e);
    leveldb_writebatch_clear(in->wb);
    in->wb_bytes = 0;
    return store_ldb_status(&in->s->err, &e, "install write");
}

static void put(struct store_install *in, const struct buf *k, const void *v, size_t vlen)
{
    leveldb_writebatch_put(in->wb, (const char *)k->data, k->len, v, vlen);
    in->wb_bytes += k->len + vlen;
}

static int data_record(struct store_install *in, const uint8_t *key, size_t klen,
                       const uint8_t *val, size_t vlen)
{
    struct store_meta m;
    if (klen == 0 || klen > STORE_KEY_MAX || store_rec_decode(val, vlen, &m, NULL, NULL))
        return fail(in, -TRINE_ECORRUPT, "malformed data record");
    int rc = store_key_data(&in->key, in->p->id, in->gen, key, klen);
    if (rc) return fail(in, rc, "out of memory");
    put(in, &in->key, val, vlen);
    if (m.expire_at_ms != 0) {
        rc = store_key_expiry(&in->key, in->p->id, in->gen, m.expire_at_ms, key, klen);
        if (rc) return fail(in, rc, "out of memory");
        uint8_t mod[8];
        put_u64be(mod, m.mod_revision);
        put(in, &in->key, mod, sizeof(mod));
    }
    return 0;
}

static int client_record(struct store_install *in, const uint8_t *key, size_t klen,
                         const uint8_t *val, size_t vlen)
{
    struct store_dd_rec rec;
    if (klen != 8 || store_dd_decode_canon(val, vlen, &rec) || rec.n == 0)
        return fail(in, -TRINE_ECORRUPT, "malformed dedupe record");
    uint64_t client = get_u64be(key);
    uint8_t stored[STORE_DD_REC_MAX];
    size_t n = store_dd_encode(stored, &rec); /* lru_index = last_index */
    int rc = store_key_client(&in->key, in->p->id, in->gen, client);
    if (rc) return fail(in, rc, "out of memory");
    put(in, &in->key, stored, n);
    rc = store_key_lru(&in->key, in->p->id, in->gen, rec.last_index, client);
    if (rc) return fail(in, rc, "out of memory");
    put(in, &in->key, "", 0);
    return 0;
}

/* Parses what is buffered; returns the number of bytes consumed or < 0. */
static long parse(struct store_install *in)
{
    const uint8_t *base = in->pend.data;
    size_t off = 0, len = in->pend.len;
    while (off < len) {
        const uint8_t *q = base + off;
        size_t avail = len - off;
        if (in->phase == IN_DONE) return fail(in, -TRINE_ECORRUPT, "bytes after the trailer");
        if (in->phase == IN_HEADER) {
            if (avail < STORE_SNAP_HDR_LEN) break;
            if (memcmp(q, STORE_SNAP_MAGIC, 8) != 0) return fail(in, -TRINE_ECORRUPT, "bad magic");
            if (get_u32be(q + 8) != STORE_SNAP_FORMAT)
                return fail(in, -TRINE_ECORRUPT, "unknown snapshot format");
            if (get_u32be(q + 12) != in->p->id)
                return fail(in, -TRINE_ECORRUPT, "snapshot of another partition");
            in->applied_index = get_u64be(q + 16);
            in->applied_term = get_u64be(q + 24);
            in->crc = crc32c(in->crc, q, STORE_SNAP_HDR_LEN);
            off += STORE_SNAP_HDR_LEN;
            in->phase = IN_BODY;
            continue;
        }
        if (q[0] == STORE_SNAP_TAG_END) {
            if (avail < STORE_SNAP_TRAILER) break;
            uint32_t crc = crc32c(in->crc, q, 9);
            if (get_u64be(q + 1) != in->count) return fail(in, -TRINE_ECORRUPT, "record count");
            if (get_u32be(q + 9) != crc) return fail(in, -TRINE_ECORRUPT, "checksum mismatch");
            off += STORE_SNAP_TRAILER;
            in->phase = IN_DONE;
            continue;
        }
        if (q[0] != STORE_TAG_DATA && q[0] != STORE_TAG_CLIENT)
            return fail(in, -TRINE_ECORRUPT, "unknown record tag");
        if (avail < STORE_SNAP_REC_HDR) break;
        size_t klen = get_u32be(q + 1), vlen = get_u32be(q + 5);
        if (klen > STORE_KEY_MAX || vlen > STORE_REC_HDR + STORE_VALUE_MAX)
            return fail(in, -TRINE_ECORRUPT, "record too large");
        size_t rlen = STORE_SNAP_REC_HDR + klen + vlen;
        if (avail < rlen) break;
        const uint8_t *k = q + STORE_SNAP_REC_HDR, *v = k + klen;
        int rc = q[0] == STORE_TAG_DATA ? data_record(in, k, klen, v, vlen)
                                        : client_record(in, k, klen, v, vlen);
        if (rc) return rc;
        in->crc = crc32c(in->crc, q, rlen);
        in->count++;
        off += rlen;
        if (in->wb_bytes >= FLUSH_BYTES && (rc = flush(in)) != 0) return fail(in, rc, NULL);
    }
    return (long)off;
}

int store_install_chunk(struct store_install *in, const uint8_t *data, size_t len)
{
    if (in->failed) return in->failed;
    if (len == 0) return 0;
    if (buf_append(&in->pend, data, len)) return fail(in, -TRINE_ENOMEM, "out of memory");
    long used = parse(in);
    if (used < 0) return (int)used;
    buf_consume(&in->pend, (size_t)used);
    return 0;
}

/* Frees in; the caller has dealt with its generation. */
void store_install_drop(struct store_install *in)
{
    if (in == NULL) return;
    if (in->p->install == in) in->p->install = NULL;
    leveldb_writebatch_destroy(in->wb);
    buf_free(&in->pend);
    buf_free(&in->key);
    free(in);
}

void store_install_abort(struct store_install *in)
{
    struct store *s = in->s;
    uint32_t part = in->p->id, gen = in->gen;
    store_install_drop(in);
    /* Nothing names gen: delete it now, or at the next open if this fails. */
    if (store_gen_delete(s, part, gen))
        log_part(LOG_LEVEL_WARN, "store", part, "install cleanup deferred to next open: %s",
                 s->err.msg);
}

int store_install_finish(struct store_install *in, uint64_t *applied_index, uint64_t *applied_term)
{
    struct store *s = in->s;
    struct store_part *p = in->p;
    int rc = in->failed;
    if (rc == 0 && in->phase != IN_DONE) rc = fail(in, -TRINE_ECORRUPT, "stream truncated");
    if (rc == 0) rc = flush(in);
    if (rc) {
        store_install_abort(in);
        return rc;
    }
    /* The flip: one synced batch names the new generation. */
    uint8_t meta[STORE_META_LEN], garbage = STORE_GEN_GARBAGE;
    store_meta_encode(meta, in->gen, in->applied_index, in->applied_term);
    leveldb_writebatch_t *wb = in->wb;
    rc = store_key_part(&in->key, STORE_TAG_META, p->id);
    if (rc == 0) {
        put(in, &in->key, meta, sizeof(meta));
        rc = store_key_gen(&in->key, STORE_TAG_GEN, p->id, in->gen);
    }
    if (rc == 0) {
        leveldb_writebatch_delete(wb, (const char *)in->key.data, in->key.len);
        rc = store_key_gen(&in->key, STORE_TAG_GEN, p->id, p->gen);
    }
    if (rc == 0) {
        put(in, &in->key, &garbage, 1);
        char *e = NULL;
        leveldb_write(s->db, s->wo_sync, wb, &e);
        rc = store_ldb_status(&s->err, &e, "install flip");
    } else {
        err_set(&s->err, rc, "install flip");
    }
    if (rc) {
        store_install_abort(in);
        return rc;
    }
    uint32_t old = p->gen;
    p->gen = in->gen;
    p->applied_index = in->applied_index;
    p->applied_term = in->applied_term;
    p->dedupe_gc_due = 0;
    store_filter_reset(s, p);
    store_caches_clear(s);
    if (applied_index) *applied_index = in->applied_index;
    if (applied_term) *applied_term = in->applied_term;
    store_install_drop(in);
    log_part(LOG_LEVEL_INFO, "store", p->id, "installed snapshot at index %llu (generation %u)",
             (unsigned long long)p->applied_index, p->gen);
    /* The new state is durable; a failure here only delays reclaiming space. */
    if (store_gen_delete(s, p->id, old))
        log_part(LOG_LEVEL_WARN, "store", p->id, "old generation %u left for next open: %s", old,
                 s->err.msg);
    return 0;
}
