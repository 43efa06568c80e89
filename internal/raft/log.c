/*
 * log.c - the replicated log as the core sees it: a bounded in-memory tail of
 * the newest entries over the caller's read-only storage (durable entries and
 * the latest snapshot).
 *
 * Layout owned here:
 *   - Entry ring: 2*cap struct raft_entry; entry i lives at slot (i & mask) and
 *     again at (i & mask) + cap. Any run of <= cap consecutive tail entries is
 *     therefore one contiguous array, which is what updates and messages hand
 *     out without copying.
 *   - Byte ring: entry data, allocated in index order; an entry that does not
 *     fit before the end starts at offset 0 and the skipped bytes (gap[slot])
 *     count as used until that entry is evicted. Eviction is FIFO (oldest
 *     first), truncation LIFO (newest first), so bytes_used and wpos describe
 *     the ring exactly.
 *
 * Invariants:
 *   - tail_first <= persisted + 1: every undurable entry is in the tail, so
 *     storage is read only for durable entries.
 *   - Only durable entries are evicted, and only to make room.
 *   - snap.index <= commit; truncation never reaches commit.
 *   - Scratch (entries read from storage) lives until the next entry point.
 */
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "raft/raft_int.h"

int log_create(struct raft *r)
{
    struct raft_log *lg = &r->log;
    const struct raft_config *c = &r->cfg;
    lg->cap = c->tail_entries;
    lg->mask = c->tail_entries - 1;
    lg->ents = calloc(2 * (size_t)lg->cap, sizeof(*lg->ents));
    lg->gap = calloc(lg->cap, sizeof(*lg->gap));
    lg->bytes_cap = c->tail_bytes;
    lg->bytes = malloc(lg->bytes_cap);
    lg->sc_ents_cap = 2 * c->msg_entries_max + c->apply_batch_max;
    lg->sc_ents = calloc(lg->sc_ents_cap, sizeof(*lg->sc_ents));
    uint64_t b = c->msg_bytes_max > c->entry_bytes_max ? c->msg_bytes_max : c->entry_bytes_max;
    lg->sc_bytes_cap = 2 * b;
    lg->sc_bytes = malloc(lg->sc_bytes_cap);
    if (!lg->ents || !lg->gap || !lg->bytes || !lg->sc_ents || !lg->sc_bytes) return -TRINE_ENOMEM;
    return 0;
}

void log_destroy(struct raft *r)
{
    struct raft_log *lg = &r->log;
    free(lg->ents);
    free(lg->gap);
    free(lg->bytes);
    free(lg->sc_ents);
    free(lg->sc_bytes);
}

void log_scratch_reset(struct raft *r)
{
    r->log.sc_ents_used = 0;
    r->log.sc_bytes_used = 0;
}

static void tail_clear(struct raft_log *lg, uint64_t first)
{
    lg->tail_first = first;
    lg->wpos = 0;
    lg->bytes_used = 0;
}

int log_restore(struct raft *r)
{
    struct raft_log *lg = &r->log;
    memset(&lg->snap, 0, sizeof(lg->snap));
    int rc = r->st.snapshot(r->st.ctx, &lg->snap);
    if (rc < 0) return err_set(&r->err, rc, "raft: reading the snapshot metadata failed");
    uint64_t last = r->st.last_index(r->st.ctx);
    uint64_t first = r->st.first_index(r->st.ctx);
    if (last < lg->snap.index) last = lg->snap.index;
    if (first > last + 1 || (first > 0 && first - 1 > lg->snap.index && first <= last))
        return err_set(&r->err, -TRINE_ECORRUPT,
                       "raft: storage holds [%llu, %llu] but its snapshot ends at %llu",
                       (unsigned long long)first, (unsigned long long)last,
                       (unsigned long long)lg->snap.index);
    lg->last = last;
    if (last == lg->snap.index) {
        lg->last_term = lg->snap.term;
    } else {
        rc = r->st.term(r->st.ctx, last, &lg->last_term);
        if (rc < 0) return err_set(&r->err, rc, "raft: reading the last term failed");
    }
    tail_clear(lg, last + 1);
    lg->persisted = last;
    lg->emit_from = last + 1;
    return 0;
}

const struct raft_entry *log_tail_entry(struct raft *r, uint64_t i)
{
    struct raft_log *lg = &r->log;
    if (i < lg->tail_first || i > lg->last) return NULL;
    return &lg->ents[i & lg->mask];
}

int log_term(struct raft *r, uint64_t i, uint64_t *term)
{
    struct raft_log *lg = &r->log;
    if (i > lg->last) return -TRINE_EINVALID;
    if (i >= lg->tail_first) {
        *term = lg->ents[i & lg->mask].term;
        return 0;
    }
    if (i == lg->snap.index) {
        *term = lg->snap.term;
        return 0;
    }
    if (i < lg->snap.index) return -TRINE_ESTALE;
    /* i < tail_first <= persisted + 1: durable, so storage has it (or compacted it). */
    return r->st.term(r->st.ctx, i, term);
}

uint64_t log_term_or0(struct raft *r, uint64_t i)
{
    uint64_t t = 0;
    if (log_term(r, i, &t) < 0) return 0;
    return t;
}

uint64_t log_first_entry(struct raft *r)
{
    struct raft_log *lg = &r->log;
    uint64_t first = r->st.first_index(r->st.ctx);
    if (lg->tail_first <= lg->last && lg->tail_first < first) first = lg->tail_first;
    if (first <= lg->snap.index) first = lg->snap.index + 1;
    if (first > lg->last + 1) first = lg->last + 1;
    return first;
}

uint64_t log_first_known(struct raft *r)
{
    struct raft_log *lg = &r->log;
    uint64_t first = log_first_entry(r);
    /* Below the first readable entry only a snapshot point has a known term: the core's, or
     * storage's first - 1. A tail entry that starts below storage has no known predecessor. */
    if (first == lg->snap.index + 1) return lg->snap.index;
    if (first < lg->tail_first || lg->tail_first > lg->last) return first - 1;
    return first == r->st.first_index(r->st.ctx) ? first - 1 : first;
}

/* ---- byte ring ------------------------------------------------------------------------- */

static bool bytes_fit(const struct raft_log *lg, uint64_t len, uint64_t *off, uint64_t *gap)
{
    uint64_t cap = lg->bytes_cap;
    *gap = 0;
    if (lg->bytes_used == 0) {
        *off = 0;
        return len <= cap;
    }
    if (lg->bytes_used == cap) {
        *off = lg->wpos;
        return len == 0;
    }
    uint64_t w = lg->wpos;
    uint64_t rpos = (w + cap - lg->bytes_used) % cap;
    if (w > rpos) {
        if (len <= cap - w) {
            *off = w;
            return true;
        }
        if (len <= rpos) {
            *off = 0;
            *gap = cap - w;
            return true;
        }
        return false;
    }
    *off = w;
    return len <= rpos - w;
}

/* Drops the oldest tail entry (which must be durable). */
static void evict_one(struct raft_log *lg)
{
    TRINE_ASSERT(lg->tail_first <= lg->last && lg->tail_first <= lg->persisted);
    uint32_t s = (uint32_t)(lg->tail_first & lg->mask);
    lg->bytes_used -= lg->gap[s] + lg->ents[s].len;
    lg->tail_first++;
    if (lg->tail_first > lg->last) tail_clear(lg, lg->tail_first);
}

static bool can_evict(const struct raft_log *lg)
{
    return lg->tail_first <= lg->last && lg->tail_first <= lg->persisted;
}

int log_append(struct raft *r, uint64_t term, uint8_t type, uint8_t flags, const void *data,
               uint32_t len)
{
    struct raft_log *lg = &r->log;
    if (len > r->cfg.entry_bytes_max) return -TRINE_ETOO_LARGE;
    uint64_t index = lg->last + 1;
    while (index - lg->tail_first >= lg->cap) {
        if (!can_evict(lg)) return -TRINE_EBUSY;
        evict_one(lg);
    }
    uint64_t off, gap;
    while (!bytes_fit(lg, len, &off, &gap)) {
        if (!can_evict(lg)) return -TRINE_EBUSY;
        evict_one(lg);
    }
    if (lg->bytes_used == 0) lg->wpos = 0;
    uint32_t s = (uint32_t)(index & lg->mask);
    if (len > 0) memcpy(lg->bytes + off, data, len);
    struct raft_entry e = {.term = term,
                           .index = index,
                           .data = lg->bytes + off,
                           .len = len,
                           .type = type,
                           .flags = flags};
    lg->ents[s] = e;
    lg->ents[s + lg->cap] = e;
    lg->gap[s] = (uint32_t)gap;
    lg->bytes_used += gap + len;
    lg->wpos = (off + len) % lg->bytes_cap;
    lg->last = index;
    lg->last_term = term;
    return 0;
}

void log_truncate(struct raft *r, uint64_t from)
{
    struct raft_log *lg = &r->log;
    if (from > lg->last) return;
    TRINE_ASSERT(from > lg->commit);
    if (from >= lg->tail_first) {
        while (lg->last >= from) {
            uint32_t s = (uint32_t)(lg->last & lg->mask);
            const struct raft_entry *e = &lg->ents[s];
            lg->bytes_used -= lg->gap[s] + e->len;
            lg->wpos =
                lg->gap[s] > 0 ? lg->bytes_cap - lg->gap[s] : (uint64_t)(e->data - lg->bytes);
            lg->last--;
        }
        if (lg->tail_first > lg->last) tail_clear(lg, lg->last + 1);
    } else {
        lg->last = from - 1;
        tail_clear(lg, from);
    }
    if (lg->persisted > lg->last) lg->persisted = lg->last;
    if (lg->emit_from > from) lg->emit_from = from;
    uint64_t t = 0;
    if (log_term(r, lg->last, &t) < 0) t = 0; /* storage failure: 0 is never up to date */
    lg->last_term = t;
}

int log_slice(struct raft *r, uint64_t lo, uint64_t hi, uint32_t max_n, uint64_t bytes_max,
              const struct raft_entry **out, uint32_t *n)
{
    struct raft_log *lg = &r->log;
    *n = 0;
    *out = NULL;
    if (hi > lg->last + 1) hi = lg->last + 1;
    if (lo >= hi || max_n == 0) return 0;
    if (lo >= lg->tail_first) {
        const struct raft_entry *e = &lg->ents[lo & lg->mask];
        uint64_t cnt = hi - lo < max_n ? hi - lo : max_n;
        uint64_t bytes = 0;
        uint32_t k = 0;
        while (k < cnt) {
            bytes += e[k].len;
            if (k > 0 && bytes > bytes_max) break;
            k++;
        }
        *out = e;
        *n = k;
        return 0;
    }
    if (lo <= lg->snap.index) return -TRINE_ESTALE;
    if (hi > lg->tail_first) hi = lg->tail_first;
    uint32_t room = lg->sc_ents_cap - lg->sc_ents_used;
    if (room < max_n) max_n = room;
    uint64_t broom = lg->sc_bytes_cap - lg->sc_bytes_used;
    if (max_n == 0) return 0;
    struct raft_entry *dst = lg->sc_ents + lg->sc_ents_used;
    uint32_t got = 0;
    int rc = r->st.entries(r->st.ctx, lo, hi, bytes_max, dst, max_n,
                           lg->sc_bytes + lg->sc_bytes_used, broom, &got);
    if (rc < 0) return rc;
    if (got > max_n) return -TRINE_EIO;
    uint64_t used = 0;
    for (uint32_t k = 0; k < got; k++) {
        if (dst[k].index != lo + k) return -TRINE_EIO;
        used += dst[k].len;
    }
    if (used > broom) return -TRINE_EIO;
    lg->sc_ents_used += got;
    lg->sc_bytes_used += used;
    *out = dst;
    *n = got;
    return 0;
}

uint64_t log_find_conflict_by_term(struct raft *r, uint64_t index, uint64_t term)
{
    if (index > r->log.last) index = r->log.last;
    uint64_t t;
    if (log_term(r, index, &t) < 0 || t <= term) return index;
    /* Terms never decrease along the log: binary search for the last j with term(j) <= term.
     * Invariant: term(hi) > term; lo is the lowest index with a known term. */
    uint64_t lo = log_first_known(r), hi = index;
    if (log_term(r, lo, &t) < 0 || t > term) return lo;
    while (hi - lo > 1) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (log_term(r, mid, &t) < 0) return lo;
        if (t <= term)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

bool log_up_to_date(struct raft *r, uint64_t index, uint64_t term)
{
    return term > r->log.last_term || (term == r->log.last_term && index >= r->log.last);
}

void log_install_snapshot(struct raft *r, const struct raft_snapshot_meta *meta)
{
    struct raft_log *lg = &r->log;
    tail_clear(lg, meta->index + 1);
    lg->last = meta->index;
    lg->last_term = meta->term;
    lg->snap = *meta;
    /* The caller installs it before anything of this update leaves (contract step 2). */
    lg->persisted = meta->index;
    lg->emit_from = meta->index + 1;
    lg->commit = meta->index;
    lg->delivered = meta->index;
    lg->applied = meta->index;
}
