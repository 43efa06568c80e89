/*
 * plog.c - each hosted partition's log as Raft's storage sees it, kept over
 * the node's single WAL: the latest snapshot mark, [first, last] and the term
 * of every entry as runs of equal terms (a few per term change, so memory is
 * tiny); entry bytes are read back with wal_read on demand.
 *
 * Invariants:
 *   - snap.index < first; when the log is empty last = first - 1 = snap.index
 *     (or, during replay only, the position where the next entry goes).
 *   - The view is updated when records are SUBMITTED to the WAL; Raft asks
 *     storage only about durable entries, and every change it makes to the log
 *     (truncation, snapshot) reaches the WAL through the same submissions, so
 *     the view and the durable log agree on every index Raft may ask about.
 *   - Replay (WAL_REPLAY_LIVE) applies ENTRY / TRUNCATE / SNAPSHOT / HARDSTATE
 *     records in log order, so a compaction that re-appends an old mark after
 *     newer entries is handled: a mark never drops entries after its index
 *     unless the log holds a different term at the index (an installed
 *     snapshot that replaced a conflicting log).
 */
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "replica/replica_int.h"

/* ---- term runs ---------------------------------------------------------------------- */

static bool plog_empty(const struct plog *l)
{
    return l->last < l->first;
}

void plog_truncate(struct plog *l, uint64_t from)
{
    if (from > l->last) return;
    if (from <= l->first) {
        l->last = from > 0 ? from - 1 : 0;
        l->first = from;
        l->n_runs = 0;
        return;
    }
    l->last = from - 1;
    while (l->n_runs > 0 && l->runs[l->n_runs - 1].start >= from)
        l->n_runs--;
}

int plog_append(struct plog *l, uint64_t index, uint64_t term)
{
    if (!plog_empty(l) && index <= l->last) plog_truncate(l, index);
    if (plog_empty(l)) {
        l->first = index;
        l->n_runs = 0;
    } else if (index != l->last + 1) {
        return -TRINE_ECORRUPT;
    }
    if (l->n_runs == 0 || l->runs[l->n_runs - 1].term != term) {
        if (l->n_runs > 0 && l->runs[l->n_runs - 1].term > term) return -TRINE_ECORRUPT;
        if (l->n_runs == l->cap_runs) {
            uint32_t cap = l->cap_runs ? l->cap_runs * 2 : 8;
            struct term_run *nr = realloc(l->runs, cap * sizeof(*nr));
            if (!nr) return -TRINE_ENOMEM;
            l->runs = nr;
            l->cap_runs = cap;
        }
        l->runs[l->n_runs++] = (struct term_run){.start = index, .term = term};
    }
    l->last = index;
    return 0;
}

void plog_compact(struct plog *l, uint64_t upto)
{
    if (upto < l->first) return;
    if (upto >= l->last) {
        l->first = upto + 1;
        l->last = upto;
        l->n_runs = 0;
        return;
    }
    l->first = upto + 1;
    /* keep the run containing first and everything after it */
    uint32_t k = 0;
    while (k + 1 < l->n_runs && l->runs[k + 1].start <= l->first)
        k++;
    if (k > 0) {
        memmove(l->runs, l->runs + k, (l->n_runs - k) * sizeof(*l->runs));
        l->n_runs -= k;
    }
}

int plog_term(const struct plog *l, uint64_t index, uint64_t *term)
{
    if (index == l->snap.index) {
        *term = l->snap.term;
        return 0;
    }
    if (index < l->first) return -TRINE_ESTALE;
    if (index > l->last || l->n_runs == 0) return -TRINE_EIO;
    uint32_t lo = 0, hi = l->n_runs; /* last run with start <= index */
    while (hi - lo > 1) {
        uint32_t mid = (lo + hi) / 2;
        if (l->runs[mid].start <= index)
            lo = mid;
        else
            hi = mid;
    }
    *term = l->runs[lo].term;
    return 0;
}

void plog_mark(struct plog *l, const struct raft_snapshot_meta *m)
{
    uint64_t t;
    bool conflict = !plog_empty(l) && m->index >= l->first && m->index <= l->last &&
                    plog_term(l, m->index, &t) == 0 && t != m->term;
    l->snap = *m;
    if (conflict || plog_empty(l) || m->index >= l->last) {
        l->first = m->index + 1;
        l->last = m->index;
        l->n_runs = 0;
        return;
    }
    plog_compact(l, m->index);
}

void plog_free(struct plog *l)
{
    free(l->runs);
    l->runs = NULL;
    l->n_runs = l->cap_runs = 0;
}

/* ---- replay ------------------------------------------------------------------------- */

int plog_replay(void *ctx, const struct wal_record *rec)
{
    struct replica *r = ctx;
    struct group *g = rep_group(r, rec->partition);
    if (!g) return 0; /* not hosted (any more): its records are released later */
    struct plog *l = &g->log;
    l->seen = true;
    switch (rec->type) {
    case WAL_ENTRY:
        if (rec->len < ENTRY_HDR_BYTES) return -TRINE_ECORRUPT;
        if (rec->index <= l->snap.index) return 0; /* covered by the snapshot */
        return plog_append(l, rec->index, rec->term);
    case WAL_TRUNCATE:
        plog_truncate(l, rec->index);
        return 0;
    case WAL_HARDSTATE:
        if (rec->len != 8) return -TRINE_ECORRUPT;
        l->hs.term = rec->term;
        l->hs.vote = get_u64be(rec->payload);
        return 0;
    case WAL_SNAPSHOT: {
        struct raft_snapshot_meta m = {.index = rec->index, .term = rec->term};
        if (raft_conf_decode(rec->payload, rec->len, &m.conf) < 0) return -TRINE_ECORRUPT;
        if (m.index < l->snap.index) return 0;
        plog_mark(l, &m);
        return 0;
    }
    default:
        return 0;
    }
}

/* ---- reading entries back ----------------------------------------------------------- */

struct read_ctx {
    uint64_t next;
    plog_read_fn fn;
    void *ctx;
    uint64_t count;
    int rc;
};

static int read_one(void *arg, const struct wal_record *rec)
{
    struct read_ctx *c = arg;
    if (rec->index != c->next) return 1; /* a hole: stop, the caller sees a short read */
    if (rec->len < ENTRY_HDR_BYTES) {
        c->rc = -TRINE_ECORRUPT;
        return 1;
    }
    const uint8_t *p = rec->payload;
    struct raft_entry e = {.term = rec->term,
                           .index = rec->index,
                           .type = p[0],
                           .flags = p[1],
                           .data = p + ENTRY_HDR_BYTES,
                           .len = rec->len - ENTRY_HDR_BYTES};
    c->next++;
    c->count++;
    int stop = c->fn(c->ctx, &e);
    if (stop < 0) c->rc = stop;
    return stop != 0;
}

int plog_read(struct group *g, uint64_t lo, uint64_t hi, plog_read_fn fn, void *ctx,
              uint64_t *count)
{
    struct read_ctx c = {.next = lo, .fn = fn, .ctx = ctx};
    struct trine_err err = {0};
    *count = 0;
    int rc = wal_read(g->rep->wal, g->partition, lo, hi, read_one, &c, &err);
    *count = c.count;
    if (rc < 0) {
        err_set(&g->rep->err, rc, "replica: partition %u: %s", g->partition, err.msg);
        return rc;
    }
    return c.rc;
}

/* ---- struct raft_storage -------------------------------------------------------------- */

static int st_term(void *ctx, uint64_t index, uint64_t *term)
{
    struct group *g = ctx;
    return plog_term(&g->log, index, term);
}

struct entries_ctx {
    struct raft_entry *out;
    uint32_t out_max;
    uint8_t *buf;
    uint64_t buf_len, used, bytes_max;
    uint32_t n;
};

static int copy_entry(void *arg, const struct raft_entry *e)
{
    struct entries_ctx *c = arg;
    if (c->n > 0 && (c->used + e->len > c->bytes_max)) return 1;
    if (c->used + e->len > c->buf_len) return 1;
    struct raft_entry *o = &c->out[c->n++];
    *o = *e;
    o->data = c->buf + c->used;
    if (e->len) memcpy(c->buf + c->used, e->data, e->len);
    c->used += e->len;
    return c->n >= c->out_max;
}

static int st_entries(void *ctx, uint64_t lo, uint64_t hi, uint64_t bytes_max,
                      struct raft_entry *out, uint32_t out_max, uint8_t *buf, uint64_t buf_len,
                      uint32_t *n)
{
    struct group *g = ctx;
    *n = 0;
    if (lo < g->log.first) return -TRINE_ESTALE;
    if (hi > g->log.last + 1) hi = g->log.last + 1;
    if (lo >= hi || out_max == 0) return 0;
    struct entries_ctx c = {
        .out = out, .out_max = out_max, .buf = buf, .buf_len = buf_len, .bytes_max = bytes_max};
    uint64_t count;
    int rc = plog_read(g, lo, hi - 1, copy_entry, &c, &count);
    if (rc < 0) return rc == -TRINE_ECORRUPT ? -TRINE_EIO : rc;
    if (c.n == 0 && count == 0) return -TRINE_ESTALE; /* segments already deleted */
    *n = c.n;
    return 0;
}

static uint64_t st_first(void *ctx)
{
    struct group *g = ctx;
    return g->log.first;
}

static uint64_t st_last(void *ctx)
{
    struct group *g = ctx;
    return g->log.last;
}

static int st_snapshot(void *ctx, struct raft_snapshot_meta *meta)
{
    struct group *g = ctx;
    *meta = g->log.snap;
    return 0;
}

void plog_storage(struct group *g, struct raft_storage *st)
{
    st->ctx = g;
    st->term = st_term;
    st->entries = st_entries;
    st->first_index = st_first;
    st->last_index = st_last;
    st->snapshot = st_snapshot;
}
