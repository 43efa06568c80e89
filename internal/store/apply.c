/*
 * apply.c - store_apply(): committed entries -> one leveldb WriteBatch.
 *
 * Per batch: ops with index <= the applied index are skipped (WAL replay is
 * idempotent); each other op goes through the dedupe check, its handler from
 * the op table, and the dedupe record; then the dedupe GC, the dirty dedupe
 * records and the partition meta (applied index + term) join the same batch,
 * which is written with sync off. Only after the write succeeded do the
 * in-memory applied index and the caches change, so a failed write leaves
 * the store exactly as before the call. Deferred (store_set_deferred): the
 * batch stays in wb for store_flush() and the in-memory state changes at
 * once; a failure then fails the store (store.h).
 *
 * Semantics (everything is a function of the op and the replicated state, so
 * replicas agree; time comes from op->now_ms, stamped by the primary):
 * - a key is "live" if stored and not (expire_at_ms != 0 && <= op->now_ms);
 * - PUT: version = live ? version + 1 : 1, create_revision kept if live else
 *   the op's index, mod_revision = index, expire_at_ms = the op's;
 * - CAS / PUT_IF_ABSENT: PUT if the live version (0 if not live) equals
 *   expected_version (0), else -TRINE_ECAS_FAILED with the current version;
 * - DELETE: removes the stored record if any; -TRINE_ENOT_FOUND if not live;
 * - EXPIRE: removes the record if its mod_revision == expected_mod_revision
 *   (the primary saw it expired and nobody rewrote it since), whatever now_ms;
 *   -TRINE_ENOT_FOUND if not stored, -TRINE_ECAS_FAILED if rewritten;
 * - NOOP: only advances the applied index.
 */
#include "store/store_int.h"

#include <string.h>

#include "base/assert.h"

/* What the batch knows about a key before the op. */
struct cur {
    struct store_meta m;
    bool stored; /* a record exists (maybe expired) */
    bool live;
};

/* h: the key's state hash, computed (and its cache slots prefetched) for the
 * whole batch up front. */
typedef int (*op_fn)(struct store *s, struct store_part *p, const struct store_op *op, uint64_t h,
                     struct store_result *r);

static int load_cur(struct store *s, struct store_part *p, const struct store_op *op, uint64_t h,
                    struct cur *c)
{
    memset(c, 0, sizeof(*c));
    uint8_t hdr[STORE_REC_HDR];
    size_t n = 0;
    int rc = store_state_get(s, p, STORE_TAG_DATA, op->key, op->key_len, h, hdr, sizeof(hdr), &n);
    if (rc < 0) return rc;
    c->stored = rc == 1;
    if (c->stored && (n != STORE_REC_HDR || store_rec_decode(hdr, n, &c->m, NULL, NULL)))
        return err_set(&s->err, -TRINE_ECORRUPT, "partition %u: malformed data record", p->id);
    c->live = c->stored &&
              !(c->m.expire_at_ms != 0 && op->now_ms != 0 && c->m.expire_at_ms <= op->now_ms);
    return 0;
}

static int write_value(struct store *s, struct store_part *p, const struct store_op *op, uint64_t h,
                       const struct cur *c, struct store_result *r)
{
    struct store_meta m = {
        .version = c->live ? c->m.version + 1 : 1,
        .create_revision = c->live ? c->m.create_revision : op->index,
        .mod_revision = op->index,
        .expire_at_ms = op->expire_at_ms,
    };
    uint8_t hdr[STORE_REC_HDR];
    store_rec_encode_hdr(hdr, &m);
    int rc = store_key_data(&s->kbuf, p->id, p->gen, op->key, op->key_len);
    if (rc == 0) {
        buf_reset(&s->vbuf);
        rc = buf_reserve(&s->vbuf, STORE_REC_HDR + op->value_len);
    }
    if (rc) return err_set(&s->err, rc, "apply buffers");
    memcpy(s->vbuf.data, hdr, STORE_REC_HDR);
    if (op->value_len) memcpy(s->vbuf.data + STORE_REC_HDR, op->value, op->value_len);
    s->vbuf.len = STORE_REC_HDR + op->value_len;
    leveldb_writebatch_put(s->wb, (const char *)s->kbuf.data, s->kbuf.len,
                           (const char *)s->vbuf.data, s->vbuf.len);
    /* The expiry index follows the record: old entry out, new one in. */
    if (c->stored && c->m.expire_at_ms != 0)
        rc = store_ttl_index_del(s, p, op->key, op->key_len, c->m.expire_at_ms);
    if (rc == 0 && m.expire_at_ms != 0)
        rc = store_ttl_index_put(s, p, op->key, op->key_len, m.expire_at_ms, m.mod_revision);
    if (rc == 0)
        rc = store_state_set(s, p, STORE_TAG_DATA, op->key, op->key_len, hdr, sizeof(hdr), true,
                             false);
    if (rc == 0 && !c->stored) store_filter_add(s, p, h);
    r->version = m.version;
    return rc;
}

static int remove_record(struct store *s, struct store_part *p, const struct store_op *op,
                         const struct cur *c)
{
    int rc = store_key_data(&s->kbuf, p->id, p->gen, op->key, op->key_len);
    if (rc) return err_set(&s->err, rc, "apply buffers");
    leveldb_writebatch_delete(s->wb, (const char *)s->kbuf.data, s->kbuf.len);
    if (c->m.expire_at_ms != 0)
        rc = store_ttl_index_del(s, p, op->key, op->key_len, c->m.expire_at_ms);
    if (rc == 0)
        rc = store_state_set(s, p, STORE_TAG_DATA, op->key, op->key_len, NULL, 0, false, false);
    return rc;
}

static int op_noop(struct store *s, struct store_part *p, const struct store_op *op, uint64_t h,
                   struct store_result *r)
{
    (void)s, (void)p, (void)op, (void)h, (void)r;
    return 0;
}

static int op_put(struct store *s, struct store_part *p, const struct store_op *op, uint64_t h,
                  struct store_result *r)
{
    struct cur c;
    int rc = load_cur(s, p, op, h, &c);
    return rc ? rc : write_value(s, p, op, h, &c, r);
}

static int cas(struct store *s, struct store_part *p, const struct store_op *op, uint64_t h,
               struct store_result *r, uint64_t expected)
{
    struct cur c;
    int rc = load_cur(s, p, op, h, &c);
    if (rc) return rc;
    uint64_t version = c.live ? c.m.version : 0;
    if (version != expected) {
        r->status = -TRINE_ECAS_FAILED;
        r->version = version;
        return 0;
    }
    return write_value(s, p, op, h, &c, r);
}

static int op_cas(struct store *s, struct store_part *p, const struct store_op *op, uint64_t h,
                  struct store_result *r)
{
    return cas(s, p, op, h, r, op->expected_version);
}

static int op_put_if_absent(struct store *s, struct store_part *p, const struct store_op *op,
                            uint64_t h, struct store_result *r)
{
    return cas(s, p, op, h, r, 0);
}

static int op_delete(struct store *s, struct store_part *p, const struct store_op *op, uint64_t h,
                     struct store_result *r)
{
    struct cur c;
    int rc = load_cur(s, p, op, h, &c);
    if (rc) return rc;
    if (!c.live) r->status = -TRINE_ENOT_FOUND;
    r->version = 0;
    /* An expired record is removed too: the op is replicated, so this is
     * deterministic, and it saves the primary an EXPIRE. */
    return c.stored ? remove_record(s, p, op, &c) : 0;
}

static int op_expire(struct store *s, struct store_part *p, const struct store_op *op, uint64_t h,
                     struct store_result *r)
{
    struct cur c;
    int rc = load_cur(s, p, op, h, &c);
    if (rc) return rc;
    if (!c.stored) {
        r->status = -TRINE_ENOT_FOUND;
        return 0;
    }
    if (c.m.mod_revision != op->expected_mod_revision) {
        r->status = -TRINE_ECAS_FAILED;
        r->version = c.live ? c.m.version : 0;
        return 0;
    }
    r->version = 0;
    return remove_record(s, p, op, &c);
}

static const struct {
    const char *name;
    op_fn fn;
    bool has_key;
    bool has_value;
} op_table[STORE_OP__COUNT] = {
    [STORE_OP_NOOP] = {"noop", op_noop, false, false},
    [STORE_OP_PUT] = {"put", op_put, true, true},
    [STORE_OP_DELETE] = {"delete", op_delete, true, false},
    [STORE_OP_CAS] = {"cas", op_cas, true, true},
    [STORE_OP_PUT_IF_ABSENT] = {"put_if_absent", op_put_if_absent, true, true},
    [STORE_OP_EXPIRE] = {"expire", op_expire, true, false},
};

/* Deterministic validation: an invalid op consumes its index, changes nothing. */
static int validate(const struct store_op *op)
{
    if ((unsigned)op->type >= STORE_OP__COUNT) return -TRINE_EBAD_REQUEST;
    if (op_table[op->type].has_key) {
        if (op->key_len == 0) return -TRINE_EBAD_REQUEST;
        if (op->key_len > STORE_KEY_MAX) return -TRINE_ETOO_LARGE;
    }
    if (op_table[op->type].has_value && op->value_len > STORE_VALUE_MAX) return -TRINE_ETOO_LARGE;
    return 0;
}

static int apply_one(struct store *s, struct store_part *p, const struct store_op *op, uint64_t h,
                     struct store_result *r)
{
    struct store_dd_ctx dd;
    int rc = store_dedupe_check(s, p, op, r, &dd);
    if (rc) return rc < 0 ? rc : 0;
    r->status = validate(op);
    if (r->status == 0) {
        rc = op_table[op->type].fn(s, p, op, h, r);
        if (rc) return rc;
    }
    return store_dedupe_record(s, p, op, r, &dd);
}

/* Hashes every op's key once and prefetches its cache and filter slots, so
 * the batch's memory misses overlap instead of costing one each in turn. */
static int hash_batch(struct store *s, const struct store_part *p, const struct store_op *ops,
                      size_t n)
{
    buf_reset(&s->hashes);
    if (buf_reserve(&s->hashes, n * sizeof(uint64_t)))
        return err_set(&s->err, -TRINE_ENOMEM, "apply hashes");
    uint64_t *h = (uint64_t *)s->hashes.data;
    for (size_t i = 0; i < n; i++) {
        const struct store_op *op = &ops[i];
        h[i] = 0;
        if (op->index <= p->applied_index || validate(op) != 0 || !op_table[op->type].has_key)
            continue;
        h[i] = store_state_hash(p->id, p->gen, STORE_TAG_DATA, op->key, op->key_len);
        store_filter_prefetch(p, h[i]);
        store_cache_prefetch(&s->meta_cache, h[i]);
    }
    for (size_t i = 0; i < n; i++)
        if (h[i]) store_cache_prefetch_slot(&s->meta_cache, h[i]);
    return 0;
}

int store_apply(struct store *s, uint32_t partition, const struct store_op *ops, size_t n,
                struct store_result *results)
{
    TRINE_ASSERT(n == 0 || (ops != NULL && results != NULL));
    struct store_part *p;
    int rc = store_part_get(s, partition, &p);
    if (rc == 0 && (store_in_batch(s, p) || s->failed))
        rc = store_flush(s); /* reads its own state */
    if (rc) return rc;
    rc = store_filter_step(s, p);
    if (rc == 0) rc = hash_batch(s, p, ops, n);
    if (rc) return rc;
    const uint64_t *hashes = (const uint64_t *)s->hashes.data;
    store_state_reset(s);
    p->dedupe_gc_new = UINT64_MAX;
    uint64_t applied = p->applied_index, term = p->applied_term, due = p->dedupe_gc_due;
    size_t done = 0;
    for (size_t i = 0; i < n; i++) {
        const struct store_op *op = &ops[i];
        struct store_result *r = &results[i];
        memset(r, 0, sizeof(*r));
        if (op->index <= applied) {
            r->flags = STORE_RESULT_SKIPPED;
            continue;
        }
        r->revision = op->index;
        rc = apply_one(s, p, op, hashes[i], r);
        if (rc) goto fail;
        applied = op->index;
        term = op->term;
        done++;
    }
    if (done == 0) return 0;
    rc = store_dedupe_gc(s, p, applied, &due);
    if (rc == 0) rc = store_state_flush(s, p);
    if (rc == 0) rc = store_key_part(&s->kbuf, STORE_TAG_META, p->id);
    if (rc) goto fail;
    uint8_t meta[STORE_META_LEN];
    store_meta_encode(meta, p->gen, applied, term);
    leveldb_writebatch_put(s->wb, (const char *)s->kbuf.data, s->kbuf.len, (const char *)meta,
                           sizeof(meta));
    s->n_batch++;
    p->batch_epoch = s->batch_epoch;
    if (!s->deferred && (rc = store_flush(s)) != 0) goto fail; /* else written at store_flush */
    p->applied_index = applied;
    p->applied_term = term;
    p->dedupe_gc_due = due < p->dedupe_gc_new ? due : p->dedupe_gc_new;
    store_state_commit(s, p);
    s->stats.applied_ops += done;
    s->stats.batches++;
    return 0;
fail:
    store_state_reset(s);
    if (s->n_batch) s->failed = rc; /* deferred applies of other partitions go with it */
    store_batch_reset(s);
    return rc;
}
