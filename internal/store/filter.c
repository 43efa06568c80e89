/*
 * filter.c - per-partition key-presence filter, so applying a write to a NEW
 * key needs no leveldb read (a miss in leveldb costs about as much as the
 * write itself: memtable probe plus a bloom check per table level).
 *
 * A set of 32-bit fingerprints, one per key stored in the partition's current
 * generation: fp = bits 32..63 of the key's state hash (0 mapped to 1), slot =
 * fp & mask, linear probing, grown (rehashed from the fingerprints alone) at
 * 3/4 load. "Not in the set" proves the key is absent; "in the set" may be a
 * fingerprint collision (about n / 2^32) or a deleted key, and falls back to
 * the cache and leveldb. Keys are never removed, so no false negative ever.
 *
 * Built without a pause: each store_apply() scans at most FILTER_STEP_KEYS
 * more keys of the generation from a cursor; until the scan reaches the end
 * the filter answers "maybe" for everything. Keys applied meanwhile are added
 * as they are written, so those the scan already passed are covered too.
 * Memory is capped store-wide (store_options.key_filter_bytes); a partition
 * whose filter would exceed it gives its filter up until the next install,
 * drop or restart. Reset whenever the generation changes.
 */
#include "store/store_int.h"

#include <stdlib.h>
#include <string.h>

#define FILTER_STEP_KEYS 8192u
#define FILTER_MIN_SLOTS 1024u

static inline uint32_t fingerprint(uint64_t h)
{
    uint32_t fp = (uint32_t)(h >> 32);
    return fp ? fp : 1;
}

void store_filter_reset(struct store *s, struct store_part *p)
{
    struct store_filter *f = &p->filter;
    s->filter_bytes -= (size_t)(f->slots ? f->mask + 1 : 0) * sizeof(uint32_t);
    free(f->slots);
    buf_free(&f->cursor);
    memset(f, 0, sizeof(*f));
    buf_init(&f->cursor);
}

static void give_up(struct store *s, struct store_part *p)
{
    store_filter_reset(s, p);
    p->filter.disabled = true;
}

static bool insert(struct store_filter *f, uint32_t fp)
{
    for (uint32_t j = fp & f->mask;; j = (j + 1) & f->mask) {
        if (f->slots[j] == fp) return false;
        if (f->slots[j] == 0) {
            f->slots[j] = fp;
            return true;
        }
    }
}

static int grow(struct store *s, struct store_part *p)
{
    struct store_filter *f = &p->filter;
    size_t old = f->slots ? (size_t)f->mask + 1 : 0;
    size_t n = old ? old * 2 : FILTER_MIN_SLOTS;
    size_t bytes = n * sizeof(uint32_t);
    if (n > ((size_t)1 << 31) ||
        s->filter_bytes - old * sizeof(uint32_t) + bytes > s->opt.key_filter_bytes) {
        give_up(s, p);
        return 0;
    }
    uint32_t *slots = calloc(n, sizeof(uint32_t));
    if (slots == NULL) {
        give_up(s, p);
        return 0;
    }
    uint32_t *prev = f->slots;
    f->slots = slots;
    f->mask = (uint32_t)(n - 1);
    for (size_t i = 0; i < old; i++)
        if (prev[i]) insert(f, prev[i]);
    free(prev);
    s->filter_bytes += bytes - old * sizeof(uint32_t);
    return 0;
}

void store_filter_add(struct store *s, struct store_part *p, uint64_t h)
{
    struct store_filter *f = &p->filter;
    if (f->disabled) return;
    if (f->slots == NULL || (size_t)(f->n + 1) * 4 > ((size_t)f->mask + 1) * 3) {
        grow(s, p);
        if (f->disabled) return;
    }
    if (insert(f, fingerprint(h))) f->n++;
}

bool store_filter_absent(const struct store_part *p, uint64_t h)
{
    const struct store_filter *f = &p->filter;
    if (!f->complete) return false;
    uint32_t fp = fingerprint(h);
    for (uint32_t j = fp & f->mask;; j = (j + 1) & f->mask) {
        if (f->slots[j] == fp) return false;
        if (f->slots[j] == 0) return true;
    }
}

void store_filter_prefetch(const struct store_part *p, uint64_t h)
{
    const struct store_filter *f = &p->filter;
    if (f->complete) __builtin_prefetch(&f->slots[fingerprint(h) & f->mask]);
}

int store_filter_step(struct store *s, struct store_part *p)
{
    struct store_filter *f = &p->filter;
    if (f->complete || f->disabled || s->opt.key_filter_bytes == 0) return 0;
    if (f->slots == NULL) {
        grow(s, p); /* complete implies slots, even for an empty partition */
        if (f->disabled) return 0;
    }
    int rc = store_key_gen(&s->kbuf2, STORE_TAG_DATA, p->id, p->gen);
    if (rc == 0 && f->cursor.len) rc = buf_append(&s->kbuf2, f->cursor.data, f->cursor.len);
    if (rc) return err_set(&s->err, rc, "filter cursor");
    uint8_t pfx[STORE_PFX_LEN];
    memcpy(pfx, s->kbuf2.data, sizeof(pfx));

    leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ro_scan);
    leveldb_iter_seek(it, (const char *)s->kbuf2.data, s->kbuf2.len);
    unsigned n = 0;
    bool end = true;
    for (; leveldb_iter_valid(it); leveldb_iter_next(it)) {
        size_t klen;
        const char *k = leveldb_iter_key(it, &klen);
        if (!store_has_prefix(k, klen, pfx, sizeof(pfx))) break;
        if (n++ == FILTER_STEP_KEYS) {
            /* Resume here next time (this key not yet added). */
            buf_reset(&f->cursor);
            rc = buf_append(&f->cursor, k + STORE_PFX_LEN, klen - STORE_PFX_LEN);
            if (rc) rc = err_set(&s->err, rc, "filter cursor");
            end = false;
            break;
        }
        const uint8_t *key = (const uint8_t *)k + STORE_PFX_LEN;
        store_filter_add(
            s, p, store_state_hash(p->id, p->gen, STORE_TAG_DATA, key, klen - STORE_PFX_LEN));
        if (f->disabled) {
            end = false;
            break;
        }
    }
    char *e = NULL;
    leveldb_iter_get_error(it, &e);
    leveldb_iter_destroy(it);
    int lrc = store_ldb_status(&s->err, &e, "filter scan");
    if (rc == 0) rc = lrc;
    if (rc == 0 && end) {
        f->complete = true;
        buf_free(&f->cursor);
    }
    return rc;
}
