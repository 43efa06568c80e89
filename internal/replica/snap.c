/*
 * snap.c - partition snapshots: streaming (leader), installing (follower),
 * and compaction.
 *
 * Leader. When Raft emits RAFT_MSG_SNAPSHOT for a follower (its entries are
 * compacted away), the replica opens a store snapshot of the partition and
 * streams it in snapshot_chunk frames, at most snapshot_window_bytes ahead of
 * the follower's acks. The metadata sent is the STORE snapshot's own applied
 * index/term (>= the compaction mark Raft named, <= commit), so it always
 * describes the bytes streamed. A done ack -> raft_report_snapshot(ok); a
 * reject, a lost leadership or ack silence of 4 election timeouts ->
 * report(false) and Raft probes again later.
 *
 * Follower. Chunks must arrive in order from offset 0 (offset 0 restarts);
 * they feed store_install_chunk, building the new state invisibly. After the
 * last chunk (CRC-32C of the stream checked) the replica steps Raft with a
 * RAFT_MSG_SNAPSHOT carrying that metadata. Only if Raft accepts it
 * (u.snapshot in the next update) is the install made current:
 *   1. store_install_finish: generation flip + applied index, synced;
 *   2. WAL: SNAPSHOT mark (index, term, conf) + TRUNCATE(index + 1), in the
 *      round's submission; then the done ack and Raft's reply leave.
 * Crash between 1 and 2: the store is ahead of (or conflicts with) the WAL
 * log; replica_open sees store_applied > the log's last index, or a term
 * mismatch at the applied index, and writes the missing mark before Raft
 * starts (replica.c). If Raft does not take the snapshot (it already has
 * those entries), the install is aborted and a done ack sent.
 *
 * Compaction (tick): once applied - mark > compact_entries for some
 * partitions: store_sync() once (leveldb durable past every applied entry),
 * then a SNAPSHOT mark at each one's applied index in the next round, and
 * wal_release(partition, index) only after that mark is durable, so a crash
 * never finds segments deleted without the mark that explains it.
 */
#include <stdlib.h>
#include <string.h>

#include "base/crc32c.h"
#include "base/log.h"
#include "metrics/metrics.h"
#include "replica/replica_int.h"
#include "wal/faultpoint.h"

/* ---- metadata conversion -------------------------------------------------------------- */

void meta_to_codec(const struct raft_snapshot_meta *m, struct codec_snapshot_meta *c, uint64_t *ids)
{
    memset(c, 0, sizeof(*c));
    c->index = m->index;
    c->term = m->term;
    c->voters = ids;
    c->learners = ids + RAFT_SERVERS_MAX;
    for (uint32_t i = 0; i < m->conf.n && i < RAFT_SERVERS_MAX; i++) {
        if (m->conf.servers[i].role == RAFT_VOTER)
            c->voters[c->n_voters++] = m->conf.servers[i].id;
        else
            c->learners[c->n_learners++] = m->conf.servers[i].id;
    }
    if (!c->n_voters) c->voters = NULL;
    if (!c->n_learners) c->learners = NULL;
}

int meta_from_codec(const struct codec_snapshot_meta *c, struct raft_snapshot_meta *m)
{
    memset(m, 0, sizeof(*m));
    if (c->n_voters + c->n_learners > RAFT_SERVERS_MAX || c->index == 0 || c->term == 0)
        return -TRINE_EBAD_REQUEST;
    m->index = c->index;
    m->term = c->term;
    for (uint32_t i = 0; i < c->n_voters; i++)
        m->conf.servers[m->conf.n++] = (struct raft_server){c->voters[i], RAFT_VOTER};
    for (uint32_t i = 0; i < c->n_learners; i++)
        m->conf.servers[m->conf.n++] = (struct raft_server){c->learners[i], RAFT_LEARNER};
    for (uint32_t i = 0; i < m->conf.n; i++)
        if (m->conf.servers[i].id == 0) return -TRINE_EBAD_REQUEST;
    return 0;
}

/* ---- leader: streams ------------------------------------------------------------------ */

static void out_free(struct replica *r, struct snap_out *s, bool report, bool ok)
{
    struct snap_out **pp = &r->snaps_out;
    while (*pp && *pp != s)
        pp = &(*pp)->next;
    if (*pp) *pp = s->next;
    if (report && s->g->role == RAFT_LEADER)
        raft_report_snapshot(s->g->raft, rep_now_ms(r), s->to, ok);
    if (s->ss) store_snapshot_close(s->ss);
    free(s);
    r->dirty = true;
}

void snap_start(struct replica *r, struct group *g, uint64_t to)
{
    if (g->role != RAFT_LEADER) return;
    for (struct snap_out *s = r->snaps_out; s; s = s->next)
        if (s->g == g && s->to == to) return; /* one stream per follower */
    struct snap_out *s = calloc(1, sizeof(*s));
    if (!s) return;
    int rc = store_snapshot_open(r->store, g->partition, &s->ss);
    uint64_t idx = 0, term = 0;
    if (rc == 0) store_snapshot_info(s->ss, &idx, &term);
    if (rc < 0 || idx == 0 || term == 0) {
        log_part(LOG_LEVEL_WARN, "replica", g->partition, "cannot open a snapshot for node %llu",
                 (unsigned long long)to);
        if (s->ss) store_snapshot_close(s->ss);
        free(s);
        raft_report_snapshot(g->raft, rep_now_ms(r), to, false);
        return;
    }
    s->g = g;
    s->to = to;
    s->term = g->term;
    s->meta.index = idx;
    s->meta.term = term;
    s->meta.conf = g->conf;
    s->last_ack_ms = rep_now_ms(r);
    s->next = r->snaps_out;
    r->snaps_out = s;
    log_part(LOG_LEVEL_INFO, "replica", g->partition, "streaming snapshot at %llu to node %llu",
             (unsigned long long)idx, (unsigned long long)to);
}

static int pump_one(struct replica *r, struct snap_out *s)
{
    while (!s->finished && s->sent - s->acked < r->cfg.snapshot_window_bytes) {
        bool last = false;
        int rc = store_snapshot_next(s->ss, &r->chunk, r->cfg.snapshot_chunk_bytes, &last);
        if (rc < 0) return rc;
        s->crc = crc32c(s->crc, r->chunk.data, r->chunk.len);
        uint64_t ids[2 * RAFT_SERVERS_MAX];
        struct codec_msg m = {.type = CODEC_MSG_SNAPSHOT_CHUNK};
        struct codec_snapshot_chunk *c = &m.snapshot_chunk;
        c->partition = s->g->partition;
        c->from = r->cfg.node_id;
        c->to = s->to;
        c->term = s->term;
        meta_to_codec(&s->meta, &c->meta, ids);
        c->offset = s->sent;
        c->data = (struct codec_bytes){.data = r->chunk.data, .len = (uint32_t)r->chunk.len};
        c->last = last;
        c->crc32c = last ? s->crc : 0;
        net_send_frame(r, s->to, &m); /* a lost chunk shows as a reject or ack silence */
        s->sent += r->chunk.len;
        s->finished = last;
    }
    return 0;
}

void snap_pump(struct replica *r)
{
    struct snap_out *s = r->snaps_out;
    while (s) {
        struct snap_out *next = s->next;
        if (pump_one(r, s) < 0) {
            log_part(LOG_LEVEL_WARN, "replica", s->g->partition, "snapshot stream failed: %s",
                     store_snapshot_err(s->ss)->msg);
            out_free(r, s, true, false);
        }
        s = next;
    }
}

void snap_on_ack(struct replica *r, struct group *g, const struct codec_snapshot_ack *a)
{
    for (struct snap_out *s = r->snaps_out; s; s = s->next) {
        if (s->g != g || s->to != a->from || s->meta.index != a->snap_index) continue;
        s->last_ack_ms = rep_now_ms(r);
        if (a->reject) {
            out_free(r, s, true, false);
        } else if (a->done) {
            r->stats.snapshots_sent++;
            if (r->m_snap_sent) metric_inc(r->m_snap_sent);
            out_free(r, s, true, true);
        } else if (a->next_offset > s->acked && a->next_offset <= s->sent) {
            s->acked = a->next_offset;
        }
        return;
    }
}

/* ---- follower: install ----------------------------------------------------------------- */

static void in_free(struct group *g)
{
    if (!g->inst) return;
    if (g->inst->in) store_install_abort(g->inst->in);
    free(g->inst);
    g->inst = NULL;
}

static void send_ack(struct replica *r, struct group *g, uint64_t to, uint64_t snap_index,
                     uint64_t next, bool done, bool reject, bool in_round)
{
    struct codec_msg m = {.type = CODEC_MSG_SNAPSHOT_ACK};
    struct codec_snapshot_ack *a = &m.snapshot_ack;
    a->partition = g->partition;
    a->from = r->cfg.node_id;
    a->to = to;
    a->term = g->term;
    a->snap_index = snap_index;
    a->next_offset = next;
    a->done = done;
    a->reject = reject;
    if (!in_round) {
        net_send_frame(r, to, &m);
        return;
    }
    struct buf frame;
    buf_init(&frame);
    if (codec_encode(&frame, &m, &r->lim, NULL) == 0) round_add_frame(r, to, &frame);
    buf_free(&frame);
}

int snap_on_chunk(struct replica *r, struct group *g, const struct codec_snapshot_chunk *c)
{
    uint64_t now = rep_now_ms(r);
    struct peer *p = group_peer(g, c->from);
    if (p) p->heard_ms = now;
    if (c->term < g->term || g->role == RAFT_LEADER) {
        send_ack(r, g, c->from, c->meta.index, 0, false, true, false);
        return 0;
    }
    struct snap_in *in = g->inst;
    if (c->offset == 0) {
        in_free(g);
        in = calloc(1, sizeof(*in));
        if (!in) return -TRINE_ENOMEM;
        if (meta_from_codec(&c->meta, &in->meta) < 0) {
            free(in);
            return -TRINE_EBAD_REQUEST;
        }
        if (store_install_begin(r->store, g->partition, &in->in) < 0) {
            free(in);
            send_ack(r, g, c->from, c->meta.index, 0, false, true, false);
            return 0;
        }
        in->from = c->from;
        in->term = c->term;
        g->inst = in;
    } else if (!in || in->offered || in->from != c->from || in->meta.index != c->meta.index ||
               c->offset != in->next) {
        send_ack(r, g, c->from, c->meta.index, in ? in->next : 0, false, true, false);
        return 0;
    }
    in->last_ms = now;
    if (store_install_chunk(in->in, c->data.data, c->data.len) < 0) {
        in_free(g);
        send_ack(r, g, c->from, c->meta.index, 0, false, true, false);
        return 0;
    }
    in->crc = crc32c(in->crc, c->data.data, c->data.len);
    in->next += c->data.len;
    if (!c->last) {
        send_ack(r, g, c->from, c->meta.index, in->next, false, false, false);
        return 0;
    }
    if (in->crc != c->crc32c) {
        in_free(g);
        send_ack(r, g, c->from, c->meta.index, 0, false, true, false);
        return 0;
    }
    in->offered = true;
    struct raft_msg m = {.type = RAFT_MSG_SNAPSHOT,
                         .from = c->from,
                         .to = r->cfg.node_id,
                         .term = c->term,
                         .index = in->meta.index,
                         .log_term = in->meta.term,
                         .commit = in->meta.index,
                         .snapshot = &in->meta};
    if (raft_recv(g->raft, now, &m) == -TRINE_EBAD_REQUEST) {
        in_free(g);
        return -TRINE_EBAD_REQUEST;
    }
    r->dirty = true;
    return 0;
}

int snap_install(struct replica *r, struct group *g, const struct raft_snapshot_meta *m)
{
    struct snap_in *in = g->inst;
    if (!in || !in->offered || in->meta.index != m->index || in->meta.term != m->term)
        return err_set(&r->err, -TRINE_EINTERNAL,
                       "replica: partition %u: raft installed snapshot %llu that was not received",
                       g->partition, (unsigned long long)m->index);
    uint64_t ai = 0, at = 0;
    int rc = store_install_finish(in->in, &ai, &at);
    in->in = NULL;
    if (rc < 0 || ai != m->index || at != m->term) {
        in_free(g);
        return err_set(&r->err, rc < 0 ? rc : -TRINE_ECORRUPT,
                       "replica: partition %u: installing snapshot %llu failed (%s); the node "
                       "must stop",
                       g->partition, (unsigned long long)m->index, store_err(r->store)->msg);
    }
    (void)TRINE_FAULT_POINT("replica.snap_install");
    uint8_t *conf = arena_alloc(&r->arena, RAFT_CONF_BYTES_MAX);
    if (!conf) return -TRINE_ENOMEM;
    uint32_t n = raft_conf_encode(&m->conf, conf);
    rc = round_add_record(r, g->partition, WAL_SNAPSHOT, m->term, m->index, conf, n);
    if (rc == 0)
        rc = round_add_record(r, g->partition, WAL_TRUNCATE, m->term, m->index + 1, NULL, 0);
    if (rc < 0) return rc;
    g->log.snap = *m;
    g->log.first = m->index + 1;
    g->log.last = m->index;
    g->log.n_runs = 0;
    g->applied = m->index;
    round_note_release(r, g, m->index);
    ops_fail_below(g, m->index, -TRINE_ETIMEOUT, "replaced by a snapshot; outcome unknown");
    r->stats.snapshots_received++;
    if (r->m_snap_recv) metric_inc(r->m_snap_recv);
    send_ack(r, g, in->from, m->index, in->next, true, false, true);
    log_part(LOG_LEVEL_INFO, "replica", g->partition, "installed snapshot at %llu",
             (unsigned long long)m->index);
    free(in);
    g->inst = NULL;
    return 0;
}

void snap_after_ready(struct replica *r, struct group *g)
{
    struct snap_in *in = g->inst;
    if (!in || !in->offered) return;
    /* Raft did not take it: it already holds those entries. Nothing to install. */
    uint64_t from = in->from, idx = in->meta.index, next = in->next;
    in_free(g);
    send_ack(r, g, from, idx, next, true, false, false);
}

void snap_drop_group(struct replica *r, struct group *g, bool leader_only)
{
    struct snap_out *s = r->snaps_out;
    while (s) {
        struct snap_out *next = s->next;
        if (s->g == g) out_free(r, s, false, false);
        s = next;
    }
    if (!leader_only) in_free(g);
}

void snap_tick(struct replica *r, uint64_t now_ms)
{
    uint64_t limit = 4 * r->cfg.election_timeout_ms;
    struct snap_out *s = r->snaps_out;
    while (s) {
        struct snap_out *next = s->next;
        if (now_ms > s->last_ack_ms + limit) out_free(r, s, true, false);
        s = next;
    }
    for (uint32_t i = 0; i < r->n_groups; i++) {
        struct group *g = &r->groups[i];
        if (g->inst && !g->inst->offered && now_ms > g->inst->last_ms + limit) in_free(g);
    }
}

void snap_free(struct replica *r)
{
    while (r->snaps_out)
        out_free(r, r->snaps_out, false, false);
    for (uint32_t i = 0; i < r->n_groups; i++)
        in_free(&r->groups[i]);
}

/* ---- compaction ------------------------------------------------------------------------- */

int snap_compact(struct replica *r, uint64_t now_ms)
{
    (void)now_ms;
    bool any = false;
    for (uint32_t i = 0; i < r->n_groups && !any; i++) {
        struct group *g = &r->groups[i];
        any = g->applied > g->log.snap.index + r->cfg.compact_entries;
    }
    if (!any) return 0;
    int rc = store_sync(r->store);
    if (rc < 0) return err_set(&r->err, rc, "replica: store_sync: %s", store_err(r->store)->msg);
    (void)TRINE_FAULT_POINT("replica.snap_build");
    for (uint32_t i = 0; i < r->n_groups; i++) {
        struct group *g = &r->groups[i];
        if (g->applied <= g->log.snap.index + r->cfg.compact_entries) continue;
        struct raft_snapshot_meta m = {.conf = g->conf};
        rc = store_applied(r->store, g->partition, &m.index, &m.term);
        if (rc < 0 || m.index <= g->log.snap.index || m.index > g->log.last) continue;
        uint8_t *conf = arena_alloc(&r->arena, RAFT_CONF_BYTES_MAX);
        if (!conf) return -TRINE_ENOMEM;
        uint32_t n = raft_conf_encode(&m.conf, conf);
        rc = round_add_record(r, g->partition, WAL_SNAPSHOT, m.term, m.index, conf, n);
        if (rc < 0) return rc;
        plog_mark(&g->log, &m);
        round_note_release(r, g, m.index);
        r->stats.compactions++;
        if (r->m_compactions) metric_inc(r->m_compactions);
        r->dirty = true;
    }
    return 0;
}
