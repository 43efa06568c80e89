/*
 * round.c - replica_process: the ready loop of every hosted group, batched.
 *
 * One processing round:
 *   1. for each group, while raft_ready(): rollbacks (read back and record
 *      before the truncation is persisted), snapshot install, hard state,
 *      entries -> WAL records of the round; messages copied into the round's
 *      per-peer batches (update pointers are borrowed); committed entries
 *      applied to the store in one batch; ReadIndex answers noted;
 *      leader_durable_index acknowledges fast writes;
 *   2. ONE wal_submit for all the round's records; a leader's appends and
 *      heartbeats (hard state durable) are sent first, in parallel with the
 *      fsync (raft.h step 3's exception); the round (its other encoded
 *      frames, its raft_persisted reports, WAL releases, snapshot streams to
 *      start) waits in a FIFO for that submission's fsync;
 *   3. the WAL's sync thread completes submissions in order and only bumps
 *      durable_seq and calls cfg.wakeup; the next replica_process releases
 *      every round whose submission is durable: frames are sent, then
 *      raft_persisted is reported, which can commit and ack more.
 * A round without records waits for the submissions before it (its messages
 * may depend on their hard state), so messages never overtake the fsync of
 * anything they promise.
 *
 * Write completions are queued and delivered at the end of replica_process,
 * once no borrowed Raft pointer is alive; a done callback may therefore start
 * new operations (not process/tick/close).
 */
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "base/log.h"
#include "metrics/metrics.h"
#include "replica/replica_int.h"
#include "wal/faultpoint.h"

#define ARENA_BLOCK ((size_t)256 * 1024)
#define READY_MAX   64 /* updates handled per group per round */
#define ROUNDS_MAX  16 /* rounds per replica_process */

/* ---- arena -------------------------------------------------------------------------- */

void *arena_alloc(struct arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct arena_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
        struct arena_block *nb = malloc(sizeof(*nb) + cap);
        if (!nb) return NULL;
        nb->used = 0;
        nb->cap = cap;
        nb->next = b;
        a->head = nb;
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

void *arena_copy(struct arena *a, const void *p, size_t n)
{
    void *d = arena_alloc(a, n ? n : 1);
    if (d && n) memcpy(d, p, n);
    return d;
}

void arena_reset(struct arena *a)
{
    struct arena_block *b = a->head;
    if (!b) return;
    /* keep the oldest block (the last in the list) */
    while (b->next) {
        struct arena_block *n = b->next;
        free(b);
        b = n;
    }
    b->used = 0;
    a->head = b;
}

void arena_free(struct arena *a)
{
    struct arena_block *b = a->head;
    while (b) {
        struct arena_block *n = b->next;
        free(b);
        b = n;
    }
    a->head = NULL;
}

/* ---- building the round ------------------------------------------------------------- */

static int grow(void **p, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap) return 0;
    uint32_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *np = realloc(*p, (size_t)c * elem);
    if (!np) return -TRINE_ENOMEM;
    *p = np;
    *cap = c;
    return 0;
}

static struct round *cur_round(struct replica *r)
{
    if (!r->cur) {
        r->cur = calloc(1, sizeof(*r->cur));
        if (r->cur) buf_init(&r->cur->frames);
    }
    return r->cur;
}

int round_add_record(struct replica *r, uint32_t partition, uint8_t type, uint64_t term,
                     uint64_t index, const void *payload, uint32_t len)
{
    if (grow((void **)&r->recs, &r->cap_recs, r->n_recs + 1, sizeof(*r->recs)) < 0)
        return -TRINE_ENOMEM;
    struct wal_record *rec = &r->recs[r->n_recs];
    rec->partition = partition;
    rec->type = type;
    rec->term = term;
    rec->index = index;
    rec->len = len;
    rec->payload = payload;
    r->n_recs++;
    return 0;
}

int round_add_frame(struct replica *r, uint64_t to, const struct buf *frame)
{
    struct round *rd = cur_round(r);
    if (!rd) return -TRINE_ENOMEM;
    uint8_t hdr[12];
    put_u64be(hdr, to);
    put_u32be(hdr + 8, (uint32_t)frame->len);
    if (buf_append(&rd->frames, hdr, sizeof(hdr)) < 0 ||
        buf_append(&rd->frames, frame->data, frame->len) < 0)
        return -TRINE_ENOMEM;
    return 0;
}

void round_note_release(struct replica *r, struct group *g, uint64_t index)
{
    struct round *rd = cur_round(r);
    if (!rd) return;
    struct release_note *n = realloc(rd->release, (rd->n_release + 1) * sizeof(*n));
    if (!n) return; /* the segment is released at the next compaction */
    rd->release = n;
    rd->release[rd->n_release++] = (struct release_note){.g = g, .index = index};
}

static int note_snap(struct replica *r, struct group *g, uint64_t to)
{
    struct round *rd = cur_round(r);
    if (!rd) return -TRINE_ENOMEM;
    struct snap_note *n = realloc(rd->snaps, (rd->n_snaps + 1) * sizeof(*n));
    if (!n) return -TRINE_ENOMEM;
    rd->snaps = n;
    rd->snaps[rd->n_snaps++] = (struct snap_note){.g = g, .to = to};
    return 0;
}

static void note_persist(struct group *g, uint64_t index, uint64_t term)
{
    g->persisted_note = true;
    g->persisted_note_index = index;
    g->persisted_note_term = term;
}

/* ---- one update ---------------------------------------------------------------------- */

static int persist_entries(struct replica *r, struct group *g, const struct raft_update *u)
{
    for (uint32_t i = 0; i < u->n_entries; i++) {
        const struct raft_entry *e = &u->entries[i];
        uint8_t *p = arena_alloc(&r->arena, ENTRY_HDR_BYTES + (size_t)e->len);
        if (!p) return -TRINE_ENOMEM;
        p[0] = e->type;
        p[1] = e->flags;
        if (e->len) memcpy(p + ENTRY_HDR_BYTES, e->data, e->len);
        int rc = round_add_record(r, g->partition, WAL_ENTRY, e->term, e->index, p,
                                  ENTRY_HDR_BYTES + e->len);
        if (rc == 0) rc = plog_append(&g->log, e->index, e->term);
        if (rc < 0)
            return err_set(&r->err, rc, "replica: partition %u: appending entry %llu failed",
                           g->partition, (unsigned long long)e->index);
    }
    const struct raft_entry *last = &u->entries[u->n_entries - 1];
    note_persist(g, last->index, last->term);
    return 0;
}

static int apply_committed(struct replica *r, struct group *g, const struct raft_update *u)
{
    uint32_t n = u->n_committed;
    struct store_op *ops = arena_alloc(&r->arena, n * sizeof(*ops));
    struct store_result *res = arena_alloc(&r->arena, n * sizeof(*res));
    if (!ops || !res) return err_set(&r->err, -TRINE_ENOMEM, "replica: out of memory");
    for (uint32_t i = 0; i < n; i++)
        cmd_to_store_op(r, &u->committed[i], &ops[i]);
    int rc = store_apply(r->store, g->partition, ops, n, res);
    if (rc < 0)
        return err_set(&r->err, rc, "replica: partition %u: store_apply: %s", g->partition,
                       store_err(r->store)->msg);
    (void)TRINE_FAULT_POINT("replica.apply");
    uint64_t last = u->committed[n - 1].index;
    if (last > g->applied) g->applied = last;
    raft_applied(g->raft, rep_now_ms(r), last);
    r->stats.applied_entries += n;
    if (r->m_applied) metric_add(r->m_applied, n);
    for (uint32_t i = 0; i < n; i++)
        ops_on_applied(g, &u->committed[i], &res[i], &ops[i]);
    return 0;
}

/* Returns whether the leader or the term changed. */
static bool soft_state(struct replica *r, struct group *g, const struct raft_update *u)
{
    uint64_t now = rep_now_ms(r);
    bool changed = u->leader != g->leader || u->term != g->term;
    if (u->role != g->role || u->term != g->term) {
        if (g->role == RAFT_LEADER) snap_drop_group(r, g, true);
        if (u->role == RAFT_LEADER) {
            for (uint32_t i = 0; i < g->n_peers; i++)
                g->peers[i].match = 0;
            g->lead_since_ms = now;
            g->transfer_next_ms = now + r->cfg.election_timeout_ms;
            g->expire_wait = 0;
            log_part(LOG_LEVEL_INFO, "replica", g->partition, "leader in term %llu",
                     (unsigned long long)u->term);
        }
    }
    g->role = u->role;
    g->term = u->term;
    g->leader = u->leader;
    g->commit = u->commit;
    g->deadline_ms = u->deadline_ms;
    return changed;
}

static int handle_update(struct replica *r, struct group *g, const struct raft_update *u)
{
    int rc = 0;
    if (u->rollback_from) {
        rc = rollback_record(r, g, u->rollback_from, u->rollback_to, u->rollback_exact);
        if (rc < 0) return rc;
        if (u->rollback_exact)
            ops_fail_range(g, u->rollback_from, u->rollback_to, -TRINE_ENOT_LEADER,
                           "leadership lost before commit; the write was not applied");
    }
    if (u->snapshot) {
        rc = snap_install(r, g, u->snapshot);
        if (rc < 0) return rc;
        note_persist(g, u->snapshot->index, u->snapshot->term);
    }
    if (u->hs_changed) {
        uint8_t *p = arena_alloc(&r->arena, 8);
        if (!p) return -TRINE_ENOMEM;
        put_u64be(p, u->hs.vote);
        rc = round_add_record(r, g->partition, WAL_HARDSTATE, u->hs.term, 0, p, 8);
        if (rc < 0) return rc;
        g->log.hs = u->hs;
        g->hs_seq = r->submitted_seq + 1; /* the submission this round becomes */
    }
    if (u->n_entries) {
        rc = persist_entries(r, g, u);
        if (rc < 0) return rc;
    }
    /* A leader's appends and heartbeats leave now, in parallel with its own
     * fsync (Raft dissertation 10.2.1): they promise nothing about our disk,
     * and the core counts our own match only from raft_persisted(). Not
     * before our hard state is durable, though: a term we could forget in a
     * crash must not lead anyone. Acknowledgements and votes wait for the
     * fsync (raft.h step 3). */
    bool hs_durable = atomic_load(&r->durable_seq) >= g->hs_seq;
    for (uint32_t i = 0; i < u->n_msgs; i++) {
        const struct raft_msg *m = &u->msgs[i];
        bool now = hs_durable && u->role == RAFT_LEADER &&
                   (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT);
        rc = m->type == RAFT_MSG_SNAPSHOT ? note_snap(r, g, m->to) : net_queue_msg(r, g, m, now);
        if (rc < 0) return rc;
    }
    bool leader_changed = soft_state(r, g, u);
    rep_lag_note(g, u);
    if (u->leader_durable_index) ops_on_leader_durable(g, u->leader_durable_index, u->term);
    if (u->n_committed) {
        rc = apply_committed(r, g, u);
        if (rc < 0) return rc;
    }
    for (uint32_t i = 0; i < u->n_reads; i++)
        ops_on_read_index(g, &u->reads[i]);
    /* A ReadIndex request forwarded to the old leader will never be answered
     * (it may be dead): fail it now so the client retries at the new one,
     * instead of waiting for its deadline. */
    if (leader_changed)
        ops_fail_unready_reads(g, -TRINE_ENOT_LEADER,
                               "the leader changed during ReadIndex; retry at the new leader");
    return 0;
}

static int drain_group(struct replica *r, struct group *g, bool *did)
{
    struct raft_update u;
    for (int it = 0; it < READY_MAX && raft_ready(g->raft, &u); it++) {
        *did = true;
        int rc = handle_update(r, g, &u);
        if (rc < 0) return rc;
    }
    snap_after_ready(r, g);
    ops_check_alls(g);
    ops_serve_reads(g);
    return 0;
}

/* ---- WAL submission and release ------------------------------------------------------- */

static void wal_done(void *ctx, int status)
{
    struct replica *r = ctx;
    if (status < 0) atomic_store(&r->wal_failed, status);
    atomic_fetch_add(&r->durable_seq, 1);
    if (r->cfg.wakeup) r->cfg.wakeup(r->cfg.cb_ctx);
}

static int submit(struct replica *r)
{
    if (r->n_recs == 0) return 0;
    int rc = -TRINE_EBUSY;
    for (int tries = 0; tries < 4 && rc == -TRINE_EBUSY; tries++) {
        rc = wal_submit(r->wal, r->recs, r->n_recs, wal_done, r);
        if (rc == -TRINE_EBUSY) wal_flush(r->wal); /* queue full: let the sync thread drain */
    }
    if (rc < 0) return err_set(&r->err, rc, "replica: wal_submit failed (%s)", status_name(rc));
    r->submitted_seq++;
    r->stats.rounds++;
    r->n_recs = 0;
    return 0;
}

static int end_round(struct replica *r)
{
    int rc = net_flush_outs(r);
    if (rc < 0) return rc;
    for (uint32_t i = 0; i < r->n_groups; i++) {
        struct group *g = &r->groups[i];
        if (!g->persisted_note) continue;
        g->persisted_note = false;
        struct round *rd = cur_round(r);
        if (!rd) return -TRINE_ENOMEM;
        struct persist_note *pn = realloc(rd->persist, (rd->n_persist + 1) * sizeof(*pn));
        if (!pn) return -TRINE_ENOMEM;
        rd->persist = pn;
        rd->persist[rd->n_persist++] = (struct persist_note){
            .g = g, .index = g->persisted_note_index, .term = g->persisted_note_term};
    }
    rc = submit(r);
    arena_reset(&r->arena);
    if (rc < 0) return rc;
    struct round *rd = r->cur;
    r->cur = NULL;
    if (!rd) return 0;
    rd->seq = r->submitted_seq;
    if (r->rounds_tail)
        r->rounds_tail->next = rd;
    else
        r->rounds_head = rd;
    r->rounds_tail = rd;
    return 0;
}

static void round_free(struct round *rd)
{
    buf_free(&rd->frames);
    free(rd->persist);
    free(rd->release);
    free(rd->snaps);
    free(rd);
}

static bool release_rounds(struct replica *r)
{
    bool did = false;
    uint64_t durable = atomic_load(&r->durable_seq);
    uint64_t now = rep_now_ms(r);
    while (r->rounds_head && r->rounds_head->seq <= durable) {
        struct round *rd = r->rounds_head;
        r->rounds_head = rd->next;
        if (!r->rounds_head) r->rounds_tail = NULL;
        for (size_t off = 0; off + 12 <= rd->frames.len;) {
            uint64_t to = get_u64be(rd->frames.data + off);
            uint32_t len = get_u32be(rd->frames.data + off + 8);
            if (r->cfg.send) r->cfg.send(r->cfg.cb_ctx, to, rd->frames.data + off + 12, len);
            off += 12 + (size_t)len;
        }
        for (uint32_t i = 0; i < rd->n_persist; i++)
            raft_persisted(rd->persist[i].g->raft, now, rd->persist[i].index, rd->persist[i].term);
        for (uint32_t i = 0; i < rd->n_release; i++)
            wal_release(r->wal, rd->release[i].g->partition, rd->release[i].index);
        for (uint32_t i = 0; i < rd->n_snaps; i++)
            snap_start(r, rd->snaps[i].g, rd->snaps[i].to);
        round_free(rd);
        did = true;
    }
    return did;
}

void round_free_all(struct replica *r)
{
    while (r->rounds_head) {
        struct round *rd = r->rounds_head;
        r->rounds_head = rd->next;
        round_free(rd);
    }
    r->rounds_tail = NULL;
    if (r->cur) round_free(r->cur);
    r->cur = NULL;
}

int replica_process(struct replica *r)
{
    int failed = atomic_load(&r->wal_failed);
    if (failed < 0) return err_set(&r->err, failed, "replica: the WAL failed; the node must stop");
    int rc = 0;
    for (int it = 0; it < ROUNDS_MAX; it++) {
        bool did = release_rounds(r);
        for (uint32_t i = 0; i < r->n_groups && rc == 0; i++)
            rc = drain_group(r, &r->groups[i], &did);
        if (rc == 0) rc = end_round(r);
        if (rc < 0 || !did) break;
    }
    /* The rounds' applies, all partitions, as one leveldb write. */
    if (rc == 0 && (rc = store_flush(r->store)) < 0)
        err_set(&r->err, rc, "replica: store write failed: %s", store_err(r->store)->msg);
    r->dirty = false;
    if (rc == 0 && release_rounds(r)) r->dirty = true; /* persisted reports: more to do */
    snap_pump(r);
    ops_flush_done(r);
    return rc;
}
