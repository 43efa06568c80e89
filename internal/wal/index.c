/*
 * index.c - the in-memory index over durable records, rebuilt by recovery and
 * extended by the sync thread after every fdatasync.
 *
 * Per segment and partition (struct wal_segpart): min/max ENTRY index, an
 * upper bound of the highest live entry (for compaction: a cut at c lowers it
 * to c - 1 in every segment), offsets of the first and last ENTRY and a sparse
 * mark (index, offset) every WAL_MARK_EVERY entries, so wal_read starts near
 * its range. Per partition
 * (struct wal_part): the highest live index, the release mark, the latest
 * HARDSTATE and SNAPSHOT (with a payload copy, to re-append them) and the
 * "cuts".
 *
 * A cut is where the log discarded a suffix of a partition: a TRUNCATE at i, or
 * an ENTRY at i <= the highest live index (a Raft overwrite). An ENTRY at
 * position P with index i is live iff no cut after P has index <= i. Cuts are
 * rare (leader changes), so they are kept as a list in log order with suffix
 * minimums: liveness is a binary search. Live entries of a partition appear in
 * the log in increasing index order (an out-of-order one would itself be a
 * cut), which is why wal_read can stream them.
 *
 * Callers hold w->idx_mu (or are alone, during wal_open).
 */
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "wal/wal_int.h"

/* ---- u32 -> u32 map (linear probing, never shrinks) ---- */

static uint32_t wal_hash32(uint32_t k)
{
    k ^= k >> 16;
    k *= 0x7feb352du;
    k ^= k >> 15;
    k *= 0x846ca68bu;
    return k ^ (k >> 16);
}

int wal_u32map_get(const struct wal_u32map *m, uint32_t key, uint32_t *val)
{
    if (m->cap == 0) return -TRINE_ENOT_FOUND;
    for (uint32_t i = wal_hash32(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->vals[i] == UINT32_MAX) return -TRINE_ENOT_FOUND;
        if (m->keys[i] == key) {
            *val = m->vals[i];
            return 0;
        }
    }
}

static void wal_u32map_insert(struct wal_u32map *m, uint32_t key, uint32_t val)
{
    uint32_t i = wal_hash32(key) & (m->cap - 1);
    while (m->vals[i] != UINT32_MAX && m->keys[i] != key)
        i = (i + 1) & (m->cap - 1);
    if (m->vals[i] == UINT32_MAX) m->n++;
    m->keys[i] = key;
    m->vals[i] = val;
}

int wal_u32map_put(struct wal_u32map *m, uint32_t key, uint32_t val)
{
    if ((m->n + 1) * 4 > m->cap * 3) { /* keep the load under 3/4 */
        uint32_t ncap = m->cap ? m->cap * 2 : 16;
        struct wal_u32map nm = {.keys = malloc(ncap * sizeof(uint32_t)),
                                .vals = malloc(ncap * sizeof(uint32_t)),
                                .cap = ncap};
        if (nm.keys == NULL || nm.vals == NULL) {
            free(nm.keys);
            free(nm.vals);
            return -TRINE_ENOMEM;
        }
        memset(nm.vals, 0xff, ncap * sizeof(uint32_t));
        for (uint32_t i = 0; i < m->cap; i++)
            if (m->vals[i] != UINT32_MAX) wal_u32map_insert(&nm, m->keys[i], m->vals[i]);
        wal_u32map_free(m);
        *m = nm;
    }
    wal_u32map_insert(m, key, val);
    return 0;
}

void wal_u32map_free(struct wal_u32map *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

/* Grows *arr (element size sz) to hold at least need elements. */
static int wal_grow(void **arr, uint32_t *cap, uint32_t need, size_t sz)
{
    if (need <= *cap) return 0;
    uint32_t ncap = *cap ? *cap * 2 : 4;
    while (ncap < need)
        ncap *= 2;
    void *p = realloc(*arr, (size_t)ncap * sz);
    if (p == NULL) return -TRINE_ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

/* ---- segments ---- */

struct wal_seg *wal_seg_new(uint64_t seq, int fd)
{
    struct wal_seg *s = calloc(1, sizeof(*s));
    if (s == NULL) return NULL;
    s->seq = seq;
    s->fd = fd;
    s->refs = 1;
    return s;
}

void wal_seg_unref(struct wal_seg *s, const struct wal_fs *fs)
{
    if (--s->refs > 0) return;
    if (s->fd >= 0) fs->close(fs->ctx, s->fd);
    for (uint32_t i = 0; i < s->nparts; i++)
        free(s->parts[i].marks);
    free(s->parts);
    wal_u32map_free(&s->map);
    free(s);
}

int wal_index_push_seg(struct wal_index *x, struct wal_seg *s)
{
    if (x->nsegs == x->cap_segs) {
        size_t ncap = x->cap_segs ? x->cap_segs * 2 : 8;
        void *p = realloc(x->segs, ncap * sizeof(struct wal_seg *));
        if (p == NULL) return -TRINE_ENOMEM;
        x->segs = p;
        x->cap_segs = ncap;
    }
    x->segs[x->nsegs++] = s;
    return 0;
}

struct wal_segpart *wal_segpart_find(struct wal_seg *s, uint32_t partition)
{
    uint32_t i;
    return wal_u32map_get(&s->map, partition, &i) == 0 ? &s->parts[i] : NULL;
}

static struct wal_segpart *wal_segpart_get(struct wal_seg *s, uint32_t partition)
{
    struct wal_segpart *sp = wal_segpart_find(s, partition);
    if (sp != NULL) return sp;
    if (wal_grow((void **)&s->parts, &s->cap_parts, s->nparts + 1, sizeof(*s->parts)) < 0 ||
        s->parts == NULL || wal_u32map_put(&s->map, partition, s->nparts) < 0)
        return NULL;
    sp = &s->parts[s->nparts++];
    memset(sp, 0, sizeof(*sp));
    sp->partition = partition;
    return sp;
}

/* ---- partitions ---- */

void wal_index_init(struct wal_index *x)
{
    memset(x, 0, sizeof(*x));
}

void wal_index_free(struct wal_index *x, const struct wal_fs *fs)
{
    for (size_t i = 0; i < x->nsegs; i++)
        wal_seg_unref(x->segs[i], fs);
    free(x->segs);
    for (uint32_t i = 0; i < x->nparts; i++) {
        struct wal_part *p = &x->parts[i];
        free(p->cuts);
        free(p->cut_min);
        buf_free(&p->keep[0].payload);
        buf_free(&p->keep[1].payload);
    }
    free(x->parts);
    wal_u32map_free(&x->pmap);
    memset(x, 0, sizeof(*x));
}

struct wal_part *wal_part_find(struct wal_index *x, uint32_t partition)
{
    uint32_t i;
    return wal_u32map_get(&x->pmap, partition, &i) == 0 ? &x->parts[i] : NULL;
}

struct wal_part *wal_part_get(struct wal_index *x, uint32_t partition)
{
    struct wal_part *p = wal_part_find(x, partition);
    if (p != NULL) return p;
    if (wal_grow((void **)&x->parts, &x->cap_parts, x->nparts + 1, sizeof(*x->parts)) < 0 ||
        x->parts == NULL || wal_u32map_put(&x->pmap, partition, x->nparts) < 0)
        return NULL;
    p = &x->parts[x->nparts++];
    memset(p, 0, sizeof(*p));
    p->partition = partition;
    buf_init(&p->keep[0].payload);
    buf_init(&p->keep[1].payload);
    return p;
}

static void wal_part_fix_min(struct wal_part *p)
{
    uint64_t m = UINT64_MAX;
    for (uint32_t i = p->ncuts; i-- > 0;) {
        if (p->cuts[i].index < m) m = p->cuts[i].index;
        p->cut_min[i] = m;
    }
}

static int wal_part_add_cut(struct wal_part *p, uint64_t seq, uint64_t off, uint64_t index)
{
    uint32_t cap = p->cap_cuts;
    if (wal_grow((void **)&p->cuts, &p->cap_cuts, p->ncuts + 1, sizeof(*p->cuts)) < 0)
        return -TRINE_ENOMEM;
    if (p->cap_cuts != cap) {
        uint64_t *m = realloc(p->cut_min, p->cap_cuts * sizeof(*m));
        if (m == NULL) return -TRINE_ENOMEM;
        p->cut_min = m;
    }
    p->cuts[p->ncuts++] = (struct wal_cut){.seq = seq, .off = off, .index = index};
    wal_part_fix_min(p);
    return 0;
}

uint64_t wal_part_cut_after(const struct wal_part *p, uint64_t seq, uint64_t off)
{
    /* First cut strictly after (seq, off). */
    uint32_t lo = 0, hi = p->ncuts;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const struct wal_cut *c = &p->cuts[mid];
        if (c->seq < seq || (c->seq == seq && c->off <= off))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < p->ncuts ? p->cut_min[lo] : UINT64_MAX;
}

/* A cut at index c kills the partition's entries >= c everywhere before it. */
static void wal_index_cut(struct wal_index *x, uint32_t partition, uint64_t c)
{
    for (size_t i = 0; i < x->nsegs; i++) {
        struct wal_segpart *sp = wal_segpart_find(x->segs[i], partition);
        if (sp == NULL || sp->entries == 0) continue;
        if (c <= sp->entry_min)
            sp->live_max = 0;
        else if (c - 1 < sp->live_max)
            sp->live_max = c - 1;
    }
}

int wal_index_note(struct wal_index *x, struct wal_seg *s, uint64_t off, const struct wal_rechdr *h,
                   const uint8_t *payload)
{
    struct wal_part *p = wal_part_get(x, h->partition);
    if (p == NULL) return -TRINE_ENOMEM;
    switch (h->type) {
    case WAL_ENTRY: {
        if (p->last_index != 0 && h->index <= p->last_index) {
            if (wal_part_add_cut(p, s->seq, off, h->index) < 0) return -TRINE_ENOMEM;
            wal_index_cut(x, h->partition, h->index);
        }
        p->last_index = h->index;
        struct wal_segpart *sp = wal_segpart_get(s, h->partition);
        if (sp == NULL) return -TRINE_ENOMEM;
        if (sp->entries == 0) {
            sp->entry_min = sp->entry_max = h->index;
            sp->first_off = off;
        }
        if (h->index < sp->entry_min) sp->entry_min = h->index;
        if (h->index > sp->entry_max) sp->entry_max = h->index;
        sp->last_off = off;
        sp->live_max = h->index; /* the newest entry is the highest live one */
        if (sp->entries % WAL_MARK_EVERY == 0) {
            if (wal_grow((void **)&sp->marks, &sp->cap_marks, sp->nmarks + 1, sizeof(*sp->marks)) <
                0)
                return -TRINE_ENOMEM;
            sp->marks[sp->nmarks++] = (struct wal_mark){.index = h->index, .off = off};
        }
        sp->entries++;
        return 0;
    }
    case WAL_TRUNCATE:
        if (wal_part_add_cut(p, s->seq, off, h->index) < 0) return -TRINE_ENOMEM;
        wal_index_cut(x, h->partition, h->index);
        if (h->index <= p->last_index) p->last_index = h->index ? h->index - 1 : 0;
        return 0;
    case WAL_HARDSTATE:
    case WAL_SNAPSHOT: {
        struct wal_keep *k = &p->keep[h->type == WAL_SNAPSHOT];
        buf_reset(&k->payload);
        if (buf_append(&k->payload, payload, h->len) < 0) return -TRINE_ENOMEM;
        k->present = true;
        k->seq = s->seq;
        k->term = h->term;
        k->index = h->index;
        return 0;
    }
    default:
        return -TRINE_ECORRUPT; /* wal_rec_decode lets only known types through */
    }
}

void wal_index_prune(struct wal_index *x, uint64_t upto)
{
    for (uint32_t i = 0; i < x->nparts; i++) {
        struct wal_part *p = &x->parts[i];
        uint32_t n = 0;
        while (n < p->ncuts && p->cuts[n].seq <= upto)
            n++;
        if (n > 0) {
            memmove(p->cuts, p->cuts + n, (p->ncuts - n) * sizeof(*p->cuts));
            p->ncuts -= n;
            wal_part_fix_min(p);
        }
    }
}
