/*
 * cache.c - bounded, 4-way set-associative cache of committed per-key state,
 * so an apply of a recently touched key or client needs no leveldb read.
 *
 * A key's set is h & set_mask; a compact tag array (4 x u32 per set, so one
 * cache line holds the tags of 4 sets) says which way may hold it, and only
 * that way's slot is touched: about two memory accesses per lookup, whatever
 * the associativity. A full set replaces a way chosen by hash bits (no LRU
 * bookkeeping). Memory is fixed at open. An entry remembers presence too, so
 * "known absent" (after a delete) is a hit. The cache only ever holds state
 * leveldb already has (store_state_commit() fills it after the batch was
 * written), so dropping any entry at any time is safe. Keys longer than
 * STORE_CACHE_KEY_MAX are not cached.
 *
 * Slot layout (slot_size bytes, 8-aligned): struct slot, then val_max bytes.
 */
#include "store/store_int.h"

#include <stdlib.h>
#include <string.h>

#define WAYS 4

enum { SLOT_EMPTY = 0, SLOT_PRESENT = 1, SLOT_ABSENT = 2 };

struct slot {
    uint64_t hash;
    uint32_t part, gen;
    uint8_t kind, key_len, val_len, state;
    uint8_t key[STORE_CACHE_KEY_MAX];
};

static inline uint32_t tag_of(uint64_t h)
{
    uint32_t t = (uint32_t)(h >> 32);
    return t ? t : 1;
}

int store_cache_init(struct store_cache *c, size_t entries, size_t val_max)
{
    memset(c, 0, sizeof(*c));
    if (entries == 0) return 0;
    if (val_max > UINT8_MAX) return -TRINE_EINVALID;
    size_t sets = 1;
    while (sets * WAYS < entries && sets < ((size_t)1 << 28))
        sets <<= 1;
    c->slot_size = (sizeof(struct slot) + val_max + 7) & ~(size_t)7;
    c->mem = calloc(sets * WAYS, c->slot_size);
    c->tags = calloc(sets * WAYS, sizeof(uint32_t));
    if (c->mem == NULL || c->tags == NULL) {
        store_cache_free(c);
        return -TRINE_ENOMEM;
    }
    c->mask = sets - 1;
    c->val_max = val_max;
    return 0;
}

void store_cache_free(struct store_cache *c)
{
    free(c->mem);
    free(c->tags);
    memset(c, 0, sizeof(*c));
}

void store_cache_clear(struct store_cache *c)
{
    if (c->mem == NULL) return;
    memset(c->tags, 0, (c->mask + 1) * WAYS * sizeof(uint32_t));
    memset(c->mem, 0, (c->mask + 1) * WAYS * c->slot_size);
}

static inline struct slot *slot_at(const struct store_cache *c, size_t i)
{
    return (struct slot *)(c->mem + i * c->slot_size);
}

void store_cache_prefetch(const struct store_cache *c, uint64_t h)
{
    if (c->mem) __builtin_prefetch(&c->tags[(h & c->mask) * WAYS]);
}

void store_cache_prefetch_slot(const struct store_cache *c, uint64_t h)
{
    if (c->mem == NULL) return;
    size_t base = (h & c->mask) * WAYS;
    uint32_t tag = tag_of(h);
    for (size_t w = 0; w < WAYS; w++)
        if (c->tags[base + w] == tag) __builtin_prefetch(slot_at(c, base + w));
}

static inline bool same(const struct slot *sl, uint64_t h, uint32_t part, uint32_t gen,
                        uint8_t kind, const uint8_t *key, size_t klen)
{
    return sl->state != SLOT_EMPTY && sl->hash == h && sl->part == part && sl->gen == gen &&
           sl->kind == kind && sl->key_len == klen && memcmp(sl->key, key, klen) == 0;
}

/* Index of the slot holding the key, or SIZE_MAX. */
static size_t find(const struct store_cache *c, uint64_t h, uint32_t part, uint32_t gen,
                   uint8_t kind, const uint8_t *key, size_t klen)
{
    size_t base = (h & c->mask) * WAYS;
    uint32_t tag = tag_of(h);
    for (size_t w = 0; w < WAYS; w++)
        if (c->tags[base + w] == tag && same(slot_at(c, base + w), h, part, gen, kind, key, klen))
            return base + w;
    return SIZE_MAX;
}

int store_cache_get(const struct store_cache *c, uint64_t h, uint32_t part, uint32_t gen,
                    uint8_t kind, const uint8_t *key, size_t klen, uint8_t *val, size_t *val_len)
{
    if (c->mem == NULL || klen > STORE_CACHE_KEY_MAX) return -1;
    size_t i = find(c, h, part, gen, kind, key, klen);
    if (i == SIZE_MAX) return -1;
    const struct slot *sl = slot_at(c, i);
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
    size_t i = find(c, h, part, gen, kind, key, klen);
    if (present && val_len > c->val_max) {
        /* Cannot hold it: make sure no stale entry for the key survives. */
        if (i != SIZE_MAX) {
            c->tags[i] = 0;
            slot_at(c, i)->state = SLOT_EMPTY;
        }
        return;
    }
    if (i == SIZE_MAX) {
        size_t base = (h & c->mask) * WAYS;
        i = base + (size_t)(h >> 62); /* victim when the set is full */
        for (size_t w = 0; w < WAYS; w++) {
            if (c->tags[base + w] == 0) {
                i = base + w;
                break;
            }
        }
    }
    struct slot *sl = slot_at(c, i);
    c->tags[i] = tag_of(h);
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
