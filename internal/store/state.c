/*
 * state.c - what store_apply() reads before it writes: the state of a key
 * ('D': its record header) or of a client ('C': its dedupe record), looked up
 * in three layers, newest first:
 *
 *   1. the overlay: what earlier ops of the batch being built wrote (leveldb
 *      does not see a WriteBatch before it is written);
 *   2. the caches (cache.c): committed state, bounded;
 *   3. leveldb itself.
 *
 * The overlay is an open-addressing table over an arena, emptied per batch by
 * bumping an epoch instead of clearing slots, so a small batch after a huge
 * one costs nothing extra. Nothing in it is evicted before the batch ends.
 */
#include "store/store_int.h"

#include <stdlib.h>
#include <string.h>

#include "base/assert.h"

void store_ov_free(struct store_overlay *ov)
{
    free(ov->ents);
    free(ov->slots);
    buf_free(&ov->arena);
    memset(ov, 0, sizeof(*ov));
}

void store_state_reset(struct store *s)
{
    struct store_overlay *ov = &s->ov;
    ov->n = 0;
    buf_reset(&ov->arena);
    if (++ov->epoch == 0) {
        /* 2^32 batches later: make sure no slot looks current. */
        if (ov->slots) memset(ov->slots, 0, ov->nslots * sizeof(*ov->slots));
        ov->epoch = 1;
    }
}

static inline bool slot_used(const struct store_overlay *ov, uint64_t sl)
{
    return (uint32_t)(sl >> 32) == ov->epoch;
}

static int ov_grow(struct store_overlay *ov)
{
    uint32_t nslots = ov->nslots ? ov->nslots * 2 : 256;
    uint64_t *slots = calloc(nslots, sizeof(*slots));
    if (slots == NULL) return -TRINE_ENOMEM;
    for (uint32_t i = 0; i < ov->n; i++) {
        uint32_t j = (uint32_t)ov->ents[i].hash & (nslots - 1);
        while (slots[j] != 0)
            j = (j + 1) & (nslots - 1);
        slots[j] = (uint64_t)ov->epoch << 32 | i;
    }
    free(ov->slots);
    ov->slots = slots;
    ov->nslots = nslots;
    return 0;
}

/* Index of the slot holding (kind, key), or of the empty slot ending its
 * probe sequence. Requires nslots > n. */
static uint32_t ov_find(const struct store_overlay *ov, uint64_t h, uint8_t kind,
                        const uint8_t *key, size_t klen)
{
    uint32_t mask = ov->nslots - 1, j = (uint32_t)h & mask;
    for (;; j = (j + 1) & mask) {
        uint64_t sl = ov->slots[j];
        if (!slot_used(ov, sl)) return j;
        const struct store_ov_ent *e = &ov->ents[(uint32_t)sl];
        if (e->hash == h && e->kind == kind && e->key_len == klen &&
            memcmp(ov->arena.data + e->key_off, key, klen) == 0)
            return j;
    }
}

static struct store_ov_ent *ov_get(const struct store_overlay *ov, uint64_t h, uint8_t kind,
                                   const uint8_t *key, size_t klen)
{
    if (ov->n == 0) return NULL;
    uint64_t sl = ov->slots[ov_find(ov, h, kind, key, klen)];
    return slot_used(ov, sl) ? &ov->ents[(uint32_t)sl] : NULL;
}

static struct store_cache *cache_of(struct store *s, uint8_t kind)
{
    return kind == STORE_TAG_DATA ? &s->meta_cache : &s->client_cache;
}

static int ldb_key(struct store *s, const struct store_part *p, uint8_t kind, const uint8_t *key,
                   size_t klen)
{
    int rc = store_key_gen(&s->kbuf, kind, p->id, p->gen);
    return rc ? rc : buf_append(&s->kbuf, key, klen);
}

int store_state_get(struct store *s, const struct store_part *p, uint8_t kind, const uint8_t *key,
                    size_t klen, uint64_t h, uint8_t *val, size_t val_max, size_t *val_len)
{
    const struct store_ov_ent *e = ov_get(&s->ov, h, kind, key, klen);
    if (e != NULL) {
        if (!e->present) return 0;
        TRINE_ASSERT(e->val_len <= val_max);
        memcpy(val, s->ov.arena.data + e->val_off, e->val_len);
        *val_len = e->val_len;
        return 1;
    }
    if (kind == STORE_TAG_DATA && store_filter_absent(p, h)) {
        s->stats.filter_skips++;
        return 0;
    }
    int rc = store_cache_get(cache_of(s, kind), h, p->id, p->gen, kind, key, klen, val, val_len);
    if (rc >= 0) {
        s->stats.cache_hits++;
        return rc;
    }
    rc = ldb_key(s, p, kind, key, klen);
    if (rc) return err_set(&s->err, rc, "state key");
    char *v = NULL;
    size_t vlen = 0;
    rc = store_ldb_get(s, s->kbuf.data, s->kbuf.len, &v, &vlen);
    if (rc == 1) {
        /* A data record is read for its header only; a dedupe record whole. */
        size_t n = kind == STORE_TAG_DATA ? STORE_REC_HDR : vlen;
        if (vlen < n || n > val_max) {
            rc = err_set(&s->err, -TRINE_ECORRUPT, "partition %u: malformed '%c' record", p->id,
                         kind);
        } else {
            memcpy(val, v, n);
            *val_len = n;
        }
    }
    leveldb_free(v);
    return rc;
}

int store_state_set(struct store *s, const struct store_part *p, uint8_t kind, const uint8_t *key,
                    size_t klen, const uint8_t *val, size_t vlen, bool present, bool dirty)
{
    struct store_overlay *ov = &s->ov;
    if ((ov->n + 1) * 2 > ov->nslots && ov_grow(ov)) goto nomem;
    if (ov->n == ov->cap) {
        uint32_t cap = ov->cap ? ov->cap * 2 : 128;
        struct store_ov_ent *ents = realloc(ov->ents, cap * sizeof(*ents));
        if (ents == NULL) goto nomem;
        ov->ents = ents;
        ov->cap = cap;
    }
    uint64_t h = store_state_hash(p->id, p->gen, kind, key, klen);
    uint32_t j = ov_find(ov, h, kind, key, klen);
    struct store_ov_ent *e;
    if (slot_used(ov, ov->slots[j])) {
        e = &ov->ents[(uint32_t)ov->slots[j]];
    } else {
        e = &ov->ents[ov->n];
        e->hash = h;
        e->kind = kind;
        e->key_len = (uint32_t)klen;
        e->key_off = (uint32_t)ov->arena.len;
        e->dirty = 0;
        if (buf_append(&ov->arena, key, klen)) goto nomem;
        ov->slots[j] = (uint64_t)ov->epoch << 32 | ov->n;
        ov->n++;
    }
    e->present = present;
    e->dirty |= dirty;
    e->val_len = present ? (uint32_t)vlen : 0;
    e->val_off = (uint32_t)ov->arena.len;
    if (present && buf_append(&ov->arena, val, vlen)) goto nomem;
    return 0;
nomem:
    return err_set(&s->err, -TRINE_ENOMEM, "apply overlay");
}

int store_state_flush(struct store *s, const struct store_part *p)
{
    const struct store_overlay *ov = &s->ov;
    for (uint32_t i = 0; i < ov->n; i++) {
        const struct store_ov_ent *e = &ov->ents[i];
        if (!e->dirty) continue;
        int rc = ldb_key(s, p, e->kind, ov->arena.data + e->key_off, e->key_len);
        if (rc) return err_set(&s->err, rc, "state key");
        if (e->present)
            leveldb_writebatch_put(s->wb, (const char *)s->kbuf.data, s->kbuf.len,
                                   (const char *)ov->arena.data + e->val_off, e->val_len);
        else
            leveldb_writebatch_delete(s->wb, (const char *)s->kbuf.data, s->kbuf.len);
    }
    return 0;
}

void store_state_commit(struct store *s, const struct store_part *p)
{
    const struct store_overlay *ov = &s->ov;
    for (uint32_t i = 0; i < ov->n; i++) {
        const struct store_ov_ent *e = &ov->ents[i];
        store_cache_put(cache_of(s, e->kind), e->hash, p->id, p->gen, e->kind,
                        ov->arena.data + e->key_off, e->key_len, ov->arena.data + e->val_off,
                        e->val_len, e->present);
    }
    store_state_reset(s);
}
