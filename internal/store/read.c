/*
 * read.c - store_get() and store_scan(): reads of committed state.
 *
 * A key whose expire_at_ms <= now_ms (the caller's clock) is hidden but not
 * touched: only a replicated EXPIRE op removes it, so replicas never diverge
 * because their clocks do. store_get() hands out leveldb's own malloc'ed copy
 * of the record (no second copy), kept until the next store_get().
 */
#include "store/store_int.h"

#include <string.h>

static bool expired(const struct store_meta *m, uint64_t now_ms)
{
    return m->expire_at_ms != 0 && m->expire_at_ms <= now_ms;
}

/* Bytewise order, as leveldb's default comparator. */
static int bytes_cmp(const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
    int c = memcmp(a, b, na < nb ? na : nb);
    return c ? c : (na > nb) - (na < nb);
}

static void fill_kv(struct store_kv *out, const struct store_meta *m, const uint8_t *key,
                    size_t key_len, const uint8_t *value, size_t value_len)
{
    out->key = key;
    out->key_len = key_len;
    out->value = value;
    out->value_len = value_len;
    out->version = m->version;
    out->create_revision = m->create_revision;
    out->mod_revision = m->mod_revision;
    out->expire_at_ms = m->expire_at_ms;
}

int store_get(struct store *s, uint32_t partition, const uint8_t *key, size_t key_len,
              uint64_t now_ms, struct store_kv *out)
{
    memset(out, 0, sizeof(*out));
    leveldb_free(s->get_val);
    s->get_val = NULL;
    if (key_len == 0 || key_len > STORE_KEY_MAX)
        return err_set(&s->err, -TRINE_EINVALID, "key length %zu", key_len);
    struct store_part *p;
    int rc = store_part_read(s, partition, &p);
    if (rc) return rc;
    rc = store_key_data(&s->kbuf, p->id, p->gen, key, key_len);
    if (rc) return err_set(&s->err, rc, "get");
    size_t vlen = 0;
    rc = store_ldb_get(s, s->kbuf.data, s->kbuf.len, &s->get_val, &vlen);
    if (rc <= 0) return rc < 0 ? rc : -TRINE_ENOT_FOUND;
    struct store_meta m;
    const uint8_t *value;
    size_t value_len;
    if (store_rec_decode((const uint8_t *)s->get_val, vlen, &m, &value, &value_len))
        return err_set(&s->err, -TRINE_ECORRUPT, "partition %u: malformed data record", p->id);
    if (expired(&m, now_ms)) return -TRINE_ENOT_FOUND;
    /* The key is the caller's: it outlives this call's result anyway. */
    fill_kv(out, &m, key, key_len, value, value_len);
    return 0;
}

int store_scan(struct store *s, uint32_t partition, const uint8_t *prefix, size_t prefix_len,
               const uint8_t *start_after, size_t start_after_len, size_t limit, uint64_t now_ms,
               store_scan_fn fn, void *arg)
{
    if (limit == 0) return err_set(&s->err, -TRINE_EINVALID, "scan limit 0");
    if (prefix_len > STORE_KEY_MAX || start_after_len > STORE_KEY_MAX)
        return err_set(&s->err, -TRINE_EINVALID, "scan key too long");
    struct store_part *p;
    int rc = store_part_read(s, partition, &p);
    if (rc) return rc;
    /* pfx = data prefix of the partition + the user's prefix, in a buffer of
     * its own: the callback may call into the store (scratch buffers). */
    struct buf pbuf;
    buf_init(&pbuf);
    rc = store_key_data(&pbuf, p->id, p->gen, prefix, prefix_len);
    if (rc == 0) rc = store_key_data(&s->kbuf, p->id, p->gen, start_after, start_after_len);
    if (rc) {
        buf_free(&pbuf);
        return err_set(&s->err, rc, "scan");
    }
    const uint8_t *pfx = pbuf.data;
    size_t pfx_len = pbuf.len;

    leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ro);
    /* Start at the later of the prefix and start_after. */
    if (start_after != NULL && bytes_cmp(s->kbuf.data, s->kbuf.len, pfx, pfx_len) >= 0) {
        leveldb_iter_seek(it, (const char *)s->kbuf.data, s->kbuf.len);
        size_t klen;
        if (leveldb_iter_valid(it)) {
            const char *k = leveldb_iter_key(it, &klen);
            if (klen == s->kbuf.len && memcmp(k, s->kbuf.data, klen) == 0) leveldb_iter_next(it);
        }
    } else {
        leveldb_iter_seek(it, (const char *)pfx, pfx_len);
    }
    size_t sent = 0;
    bool stop = false;
    for (; !stop && sent < limit && leveldb_iter_valid(it); leveldb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = leveldb_iter_key(it, &klen);
        if (!store_has_prefix(k, klen, pfx, pfx_len)) break;
        const uint8_t *v = (const uint8_t *)leveldb_iter_value(it, &vlen);
        struct store_meta m;
        const uint8_t *value;
        size_t value_len;
        if (store_rec_decode(v, vlen, &m, &value, &value_len)) {
            rc = err_set(&s->err, -TRINE_ECORRUPT, "partition %u: malformed data record", p->id);
            break;
        }
        if (expired(&m, now_ms)) continue;
        struct store_kv kv;
        fill_kv(&kv, &m, (const uint8_t *)k + STORE_PFX_LEN, klen - STORE_PFX_LEN, value,
                value_len);
        rc = fn(arg, &kv);
        stop = rc != 0;
        if (rc > 0) rc = 0;
        sent++;
    }
    char *e = NULL;
    leveldb_iter_get_error(it, &e);
    leveldb_iter_destroy(it);
    int lrc = store_ldb_status(&s->err, &e, "scan");
    buf_free(&pbuf);
    return rc ? rc : lrc;
}
