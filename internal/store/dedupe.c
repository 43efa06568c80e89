/*
 * dedupe.c - exactly-once application of client writes (DESIGN.md section 6).
 *
 * A client write carries (client_id, seq). The check runs when the entry is
 * APPLIED, on every replica, against a table that is itself replicated state
 * (written in the same batch), so every replica decides the same way.
 *
 * Rule, per partition and client:
 * - The record keeps the results of the client's STORE_DEDUPE_PER_CLIENT
 *   highest applied seqs (so a client may pipeline that many writes).
 * - seq found in the record          -> not applied again; the first result
 *                                       (status, revision, version) is returned.
 * - record full and seq < its lowest -> -TRINE_ESTALE, not applied: it may
 *                                       have been applied, its result is gone.
 * - otherwise                        -> applied; its result is recorded,
 *                                       evicting the lowest seq if full.
 * - A record is forgotten once no write of the client was applied for
 *   dedupe_window revisions: it is live while last_index + window > index.
 *   Liveness is what decisions use; physical deletion ('L' index GC below) is
 *   lazy and bounded per batch, and invisible to decisions, hashes and
 *   snapshots.
 *
 * Cost: a client's record is written once per batch however many of its ops
 * the batch holds (overlay entries marked dirty, written at the end), read from
 * the client cache, and its 'L' entry moves only every window/2 revisions.
 */
#include "store/store_int.h"

#include <string.h>

int store_key_client(struct buf *b, uint32_t part, uint32_t gen, uint64_t client_id)
{
    int rc = store_key_gen(b, STORE_TAG_CLIENT, part, gen);
    if (rc == 0) rc = buf_reserve(b, 8);
    if (rc) return rc;
    put_u64be(b->data + b->len, client_id);
    b->len += 8;
    return 0;
}

int store_key_lru(struct buf *b, uint32_t part, uint32_t gen, uint64_t lru_index,
                  uint64_t client_id)
{
    int rc = store_key_gen(b, STORE_TAG_LRU, part, gen);
    if (rc == 0) rc = buf_reserve(b, 16);
    if (rc) return rc;
    put_u64be(b->data + b->len, lru_index);
    put_u64be(b->data + b->len + 8, client_id);
    b->len += 16;
    return 0;
}

static int load(struct store *s, struct store_part *p, uint64_t client_id, struct store_dd_rec *rec,
                bool *present)
{
    uint8_t id[8], v[STORE_DD_REC_MAX];
    size_t vlen = 0;
    put_u64be(id, client_id);
    uint64_t h = store_state_hash(p->id, p->gen, STORE_TAG_CLIENT, id, sizeof(id));
    int rc = store_state_get(s, p, STORE_TAG_CLIENT, id, sizeof(id), h, v, sizeof(v), &vlen);
    if (rc < 0) return rc;
    *present = rc == 1;
    if (rc == 1 && store_dd_decode(v, vlen, rec))
        return err_set(&s->err, -TRINE_ECORRUPT, "partition %u: malformed dedupe record", p->id);
    return 0;
}

static int save(struct store *s, struct store_part *p, uint64_t client_id,
                const struct store_dd_rec *rec, bool present)
{
    uint8_t id[8], v[STORE_DD_REC_MAX];
    put_u64be(id, client_id);
    size_t n = present ? store_dd_encode(v, rec) : 0;
    return store_state_set(s, p, STORE_TAG_CLIENT, id, sizeof(id), v, n, present, true);
}

static int lru_write(struct store *s, struct store_part *p, bool put, uint64_t lru_index,
                     uint64_t client_id)
{
    int rc = store_key_lru(&s->kbuf2, p->id, p->gen, lru_index, client_id);
    if (rc) return err_set(&s->err, rc, "dedupe key");
    if (put)
        leveldb_writebatch_put(s->wb, (const char *)s->kbuf2.data, s->kbuf2.len, "", 0);
    else
        leveldb_writebatch_delete(s->wb, (const char *)s->kbuf2.data, s->kbuf2.len);
    return 0;
}

int store_dedupe_check(struct store *s, struct store_part *p, const struct store_op *op,
                       struct store_result *r, struct store_dd_ctx *ctx)
{
    ctx->active = op->client_id != 0 && op->seq != 0;
    if (!ctx->active) return 0;
    int rc = load(s, p, op->client_id, &ctx->rec, &ctx->phys);
    if (rc) return rc;
    bool live = ctx->phys && ctx->rec.last_index + s->opt.dedupe_window > op->index;
    if (!live) {
        /* Forgotten: start afresh (the stored record, if any, is replaced and
         * its 'L' entry moved in store_dedupe_record()). */
        uint64_t lru = ctx->rec.lru_index;
        memset(&ctx->rec, 0, sizeof(ctx->rec));
        ctx->rec.lru_index = ctx->phys ? lru : 0;
        return 0;
    }
    uint64_t lowest = UINT64_MAX;
    for (unsigned i = 0; i < ctx->rec.n; i++) {
        const struct store_dd_entry *e = &ctx->rec.e[i];
        if (e->seq == op->seq) {
            r->status = -(int)e->status;
            r->revision = e->revision;
            r->version = e->version;
            r->flags |= STORE_RESULT_DUPLICATE;
            s->stats.duplicates++;
            return 1;
        }
        if (e->seq < lowest) lowest = e->seq;
    }
    if (ctx->rec.n == STORE_DEDUPE_PER_CLIENT && op->seq < lowest) {
        r->status = -TRINE_ESTALE;
        r->version = 0;
        return 1;
    }
    return 0;
}

int store_dedupe_record(struct store *s, struct store_part *p, const struct store_op *op,
                        const struct store_result *r, struct store_dd_ctx *ctx)
{
    if (!ctx->active) return 0;
    struct store_dd_rec *rec = &ctx->rec;
    unsigned slot = rec->n;
    if (rec->n == STORE_DEDUPE_PER_CLIENT) {
        slot = 0;
        for (unsigned i = 1; i < rec->n; i++)
            if (rec->e[i].seq < rec->e[slot].seq) slot = i;
    } else {
        rec->n++;
    }
    rec->e[slot] = (struct store_dd_entry){.seq = op->seq,
                                           .status = (uint8_t)-r->status,
                                           .revision = r->revision,
                                           .version = r->version};
    rec->last_index = op->index;
    /* Move the 'L' entry only when it lags by half a window: the GC re-files
     * a record it finds still live, so a lagging entry is never lost. */
    if (!ctx->phys || rec->lru_index + s->opt.dedupe_window / 2 <= op->index) {
        int rc = ctx->phys ? lru_write(s, p, false, rec->lru_index, op->client_id) : 0;
        if (rc == 0) rc = lru_write(s, p, true, op->index, op->client_id);
        if (rc) return rc;
        rec->lru_index = op->index;
        if (op->index + s->opt.dedupe_window < p->dedupe_gc_new)
            p->dedupe_gc_new = op->index + s->opt.dedupe_window;
    }
    ctx->phys = true;
    return save(s, p, op->client_id, rec, true);
}

int store_dedupe_gc(struct store *s, struct store_part *p, uint64_t index, uint64_t *due_out)
{
    *due_out = p->dedupe_gc_due;
    if (index < p->dedupe_gc_due) return 0;
    uint64_t window = s->opt.dedupe_window;
    int rc = store_key_gen(&s->kbuf2, STORE_TAG_LRU, p->id, p->gen);
    if (rc) return err_set(&s->err, rc, "dedupe key");
    uint8_t pfx[STORE_PFX_LEN];
    memcpy(pfx, s->kbuf2.data, sizeof(pfx));

    leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ro);
    uint64_t due = UINT64_MAX; /* nothing left to collect */
    unsigned steps = 0;
    for (leveldb_iter_seek(it, (const char *)pfx, sizeof(pfx)); rc == 0 && leveldb_iter_valid(it);
         leveldb_iter_next(it)) {
        size_t klen;
        const char *k = leveldb_iter_key(it, &klen);
        if (!store_has_prefix(k, klen, pfx, sizeof(pfx))) break;
        if (klen != STORE_PFX_LEN + 16) {
            rc = err_set(&s->err, -TRINE_ECORRUPT, "partition %u: malformed dedupe index", p->id);
            break;
        }
        uint64_t lru = get_u64be((const uint8_t *)k + STORE_PFX_LEN);
        uint64_t client = get_u64be((const uint8_t *)k + STORE_PFX_LEN + 8);
        if (lru + window > index) {
            if (lru + window < due) due = lru + window;
            break;
        }
        if (steps++ == STORE_DD_GC_STEPS) {
            due = index; /* more to do: continue with the next batch */
            break;
        }
        struct store_dd_rec rec;
        bool present;
        rc = load(s, p, client, &rec, &present);
        if (rc) break;
        leveldb_writebatch_delete(s->wb, k, klen);
        if (!present || rec.lru_index != lru) continue; /* stale entry: already re-filed */
        if (rec.last_index + window > index) {
            /* Still live (it lagged): re-file it at its last write. */
            rc = lru_write(s, p, true, rec.last_index, client);
            rec.lru_index = rec.last_index;
            if (rc == 0) rc = save(s, p, client, &rec, true);
            if (rc == 0 && rec.last_index + window < due) due = rec.last_index + window;
        } else {
            rc = save(s, p, client, &rec, false);
        }
    }
    char *e = NULL;
    leveldb_iter_get_error(it, &e);
    leveldb_iter_destroy(it);
    int lrc = store_ldb_status(&s->err, &e, "dedupe gc");
    *due_out = due;
    return rc ? rc : lrc;
}
