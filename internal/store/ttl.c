/*
 * ttl.c - the expiry index and store_expired().
 *
 *   'X' p g expire_at_ms(u64 BE) key  ->  mod_revision u64 BE
 *
 * One entry per data record with expire_at_ms != 0, written and removed in the
 * same batch as the record, so listing what expired before `now` is a range
 * scan from the start of ('X', p, g), never a scan of the data. The value is
 * the record's mod_revision: the primary proposes EXPIRE(key, mod_revision)
 * and the op deletes the key only if nobody rewrote it since.
 *
 * Nothing here deletes anything on the local clock: expiry is a replicated op.
 */
#include "store/store_int.h"

int store_key_expiry(struct buf *b, uint32_t part, uint32_t gen, uint64_t expire_at_ms,
                     const uint8_t *key, size_t klen)
{
    int rc = store_key_gen(b, STORE_TAG_EXPIRY, part, gen);
    if (rc == 0) rc = buf_reserve(b, 8 + klen);
    if (rc) return rc;
    put_u64be(b->data + b->len, expire_at_ms);
    b->len += 8;
    return buf_append(b, key, klen);
}

int store_ttl_index_put(struct store *s, const struct store_part *p, const uint8_t *key,
                        size_t klen, uint64_t expire_at_ms, uint64_t mod_revision)
{
    int rc = store_key_expiry(&s->kbuf2, p->id, p->gen, expire_at_ms, key, klen);
    if (rc) return err_set(&s->err, rc, "expiry key");
    uint8_t v[8];
    put_u64be(v, mod_revision);
    leveldb_writebatch_put(s->wb, (const char *)s->kbuf2.data, s->kbuf2.len, (const char *)v,
                           sizeof(v));
    return 0;
}

int store_ttl_index_del(struct store *s, const struct store_part *p, const uint8_t *key,
                        size_t klen, uint64_t expire_at_ms)
{
    int rc = store_key_expiry(&s->kbuf2, p->id, p->gen, expire_at_ms, key, klen);
    if (rc) return err_set(&s->err, rc, "expiry key");
    leveldb_writebatch_delete(s->wb, (const char *)s->kbuf2.data, s->kbuf2.len);
    return 0;
}

int store_expired(struct store *s, uint32_t partition, uint64_t now_ms, size_t max,
                  store_expired_fn fn, void *arg)
{
    struct store_part *p;
    int rc = store_part_read(s, partition, &p);
    if (rc) return rc;
    rc = store_key_gen(&s->kbuf2, STORE_TAG_EXPIRY, p->id, p->gen);
    if (rc) return err_set(&s->err, rc, "expiry key");
    uint8_t pfx[STORE_PFX_LEN];
    memcpy(pfx, s->kbuf2.data, STORE_PFX_LEN);

    leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ro);
    size_t seen = 0;
    bool stop = false;
    for (leveldb_iter_seek(it, (const char *)pfx, sizeof(pfx));
         !stop && seen < max && leveldb_iter_valid(it); leveldb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = leveldb_iter_key(it, &klen);
        if (!store_has_prefix(k, klen, pfx, sizeof(pfx))) break;
        const uint8_t *v = (const uint8_t *)leveldb_iter_value(it, &vlen);
        if (klen <= STORE_PFX_LEN + 8 || vlen != 8) {
            rc = err_set(&s->err, -TRINE_ECORRUPT, "partition %u: malformed expiry entry", p->id);
            break;
        }
        uint64_t exp = get_u64be((const uint8_t *)k + STORE_PFX_LEN);
        if (exp > now_ms) break; /* index order: nothing later has expired */
        const uint8_t *key = (const uint8_t *)k + STORE_PFX_LEN + 8;
        rc = fn(arg, key, klen - STORE_PFX_LEN - 8, get_u64be(v), exp);
        stop = rc != 0;
        if (rc > 0) rc = 0;
        seen++;
    }
    char *e = NULL;
    leveldb_iter_get_error(it, &e);
    leveldb_iter_destroy(it);
    int lrc = store_ldb_status(&s->err, &e, "expiry scan");
    return rc ? rc : lrc;
}
