/*
 * cache.c - bounded, direct-mapped cache of committed per-key state, so an
 * apply of a recently touched key or client needs no leveldb read.
 *
 * One slot per hash bucket: a new entry overwrites whatever the slot held
 * (no eviction bookkeeping, O(1), memory fixed at open). An entry remembers
 * presence too, so "known absent" (after a delete) is a hit. It only ever
 * holds state that leveldb already has (store_state_commit() fills it after
 * the batch was written), so dropping any entry at any time is safe. Keys
 * longer than STORE_CACHE_KEY_MAX are not cached.
 *
 * Slot layout (slot_size bytes, 8-aligned): struct slot, then val_max bytes.
 */
#include "store/store_int.h"

#include <stdlib.h>
#include <string.h>

enum { SLOT_EMPTY = 0, SLOT_PRESENT = 1, SLOT_ABSENT = 2 };

struct slot {
    uint64_t hash;
    uint32_t part, gen;
    uint8_t kind, key_len, val_len, state;
    uint8_t key[STORE_CACHE_KEY_MAX];
};

int store_cache_init(struct store_cache *c, size_t entries, size_t val_max)
{
    memset(c, 0, sizeof(*c));
    if (entries == 0) return 0;
    if (val_max > UINT8_MAX) return -TRINE_EINVALID;
    size_t n = 1;
    while (n < entries && n < ((size_t)1 << 30))
        n <<= 1;
    c->slot_size = (sizeof(struct slot) + val_max + 7) & ~(size_t)7;
    c->mem = calloc(n, c->slot_size);
    if (c->mem == NULL) return -TRINE_ENOMEM;
    c->mask = n - 1;
    c->val_max = val_max;
    return 0;
}

void store_cache_free(struct store_cache *c)
{
    free(c->mem);
    memset(c, 0, sizeof(*c));
}

void store_cache_clear(struct store_cache *c)
{
    if (c->mem) memset(c->mem, 0, (c->mask + 1) * c->slot_size);
}

static inline struct slot *slot_at(const struct store_cache *c, uint64_t h)
{
    return (struct slot *)(c->mem + (size_t)(h & c->mask) * c->slot_size);
}

int store_cache_get(const struct store_cache *c, uint64_t h, uint32_t part, uint32_t gen,
                    uint8_t kind, const uint8_t *key, size_t klen, uint8_t *val, size_t *val_len)
{
    if (c->mem == NULL || klen > STORE_CACHE_KEY_MAX) return -1;
    const struct slot *sl = slot_at(c, h);
    if (sl->state == SLOT_EMPTY || sl->hash != h || sl->part != part || sl->gen != gen ||
        sl->kind != kind || sl->key_len != klen || memcmp(sl->key, key, klen) != 0)
        return -1;
    if (sl->state == SLOT_ABSENT) return 0;
    memcpy(val, (const uint8_t *)sl + sizeof(*sl), sl->val_len);
    *val_len = sl->val_len;
    return 1;
}

void store_cache_put(struct store_cache *c, uint64_t h, uint32_t part, uint32_t gen, uint8_t kind,
                     const uint8_t *key, size_t klen, const uint8_t *val, size_t val_len,
                     bool present)
{
    if (c->mem == NULL || klen > STORE_CACHE_KEY_MAX) return;
    struct slot *sl = slot_at(c, h);
    if (present && val_len > c->val_max) {
        /* Cannot hold it: make sure no stale entry for the key survives. */
        sl->state = SLOT_EMPTY;
        return;
    }
    sl->hash = h;
    sl->part = part;
    sl->gen = gen;
    sl->kind = kind;
    sl->key_len = (uint8_t)klen;
    memcpy(sl->key, key, klen);
    sl->state = present ? SLOT_PRESENT : SLOT_ABSENT;
    sl->val_len = present ? (uint8_t)val_len : 0;
    if (present) memcpy((uint8_t *)sl + sizeof(*sl), val, val_len);
}
