/*
 * sim.c - the simulated cluster of sim.h: replicas with in-memory storage,
 * the write/fsync model, the fake network, crash and restart.
 *
 * The caller side of raft.h's persistence contract is implemented exactly
 * here (handle_update): rollbacks are read from the written log before it
 * changes, the snapshot/hard state/entries are written to `w`, messages wait
 * in `held` until the node's next fsync copies `w` to `d`, then
 * raft_persisted reports the durable end of the log.
 */
#include "sim.h"

#include <stdlib.h>
#include <string.h>

struct net_msg {
    uint64_t at;
    uint64_t seq;
    uint32_t group;
    struct raft_msg m;
    struct raft_snapshot_meta snap_meta;
    struct sim_snap image;
    struct raft_entry ents[];
};

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q && n) {
        fprintf(stderr, "sim: out of memory\n");
        abort();
    }
    return q;
}

/* ---- sim_log -------------------------------------------------------------------------- */

static struct sim_entry *slog_at(struct sim_log *l, uint64_t i)
{
    if (i <= l->base || i > l->base + l->n) return NULL;
    return &l->v[i - l->base - 1];
}

static uint64_t slog_last(const struct sim_log *l)
{
    return l->base + l->n;
}

static uint64_t slog_last_term(const struct sim_log *l)
{
    return l->n ? l->v[l->n - 1].term : l->base_term;
}

static uint64_t slog_last_chain(const struct sim_log *l)
{
    return l->n ? l->v[l->n - 1].chain : l->base_chain;
}

static void slog_truncate(struct sim_log *l, uint64_t from)
{
    if (from <= l->base) {
        l->n = 0;
        return;
    }
    if (from - l->base - 1 < l->n) l->n = (uint32_t)(from - l->base - 1);
}

static void slog_push(struct sim_log *l, const struct sim_entry *e)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = xrealloc(l->v, l->cap * sizeof(*l->v));
    }
    l->v[l->n++] = *e;
}

static void slog_copy(struct sim_log *dst, const struct sim_log *src)
{
    dst->base = src->base;
    dst->base_term = src->base_term;
    dst->base_chain = src->base_chain;
    dst->n = 0;
    for (uint32_t i = 0; i < src->n; i++)
        slog_push(dst, &src->v[i]);
}

/* Drops entries <= upto (upto in (base, last]). */
static void slog_compact(struct sim_log *l, uint64_t upto)
{
    if (upto <= l->base) return;
    if (upto > slog_last(l)) upto = slog_last(l);
    struct sim_entry *e = slog_at(l, upto);
    uint64_t drop = upto - l->base;
    l->base_term = e->term;
    l->base_chain = e->chain;
    memmove(l->v, l->v + drop, (l->n - drop) * sizeof(*l->v));
    l->n -= (uint32_t)drop;
    l->base = upto;
}

/* ---- storage callbacks (read the durable state) --------------------------------------- */

static int st_term(void *ctx, uint64_t i, uint64_t *term)
{
    struct sim_rep *rep = ctx;
    struct sim_state *d = &rep->d;
    if (i == d->snap.meta.index) {
        *term = d->snap.meta.term;
        return 0;
    }
    if (i == d->log.base) {
        *term = d->log.base_term;
        return 0;
    }
    if (i < d->log.base) return -TRINE_ESTALE;
    struct sim_entry *e = slog_at(&d->log, i);
    if (!e) {
        sim_fail(rep->s, "g%u n%llu: core asked storage for term %llu beyond durable %llu",
                 rep->g->gi, (unsigned long long)rep->id, (unsigned long long)i,
                 (unsigned long long)slog_last(&d->log));
        return -TRINE_EIO;
    }
    *term = e->term;
    return 0;
}

static int st_entries(void *ctx, uint64_t lo, uint64_t hi, uint64_t bytes_max,
                      struct raft_entry *out, uint32_t out_max, uint8_t *buf, uint64_t buf_len,
                      uint32_t *n)
{
    struct sim_rep *rep = ctx;
    struct sim_log *l = &rep->d.log;
    *n = 0;
    if (lo <= l->base) return -TRINE_ESTALE;
    if (hi > slog_last(l) + 1) {
        sim_fail(rep->s, "g%u n%llu: core asked storage for entries up to %llu beyond %llu",
                 rep->g->gi, (unsigned long long)rep->id, (unsigned long long)hi - 1,
                 (unsigned long long)slog_last(l));
        return -TRINE_EIO;
    }
    uint64_t total = 0;
    uint32_t k = 0;
    for (uint64_t i = lo; i < hi && k < out_max; i++, k++) {
        const struct sim_entry *e = slog_at(l, i);
        if (k > 0 && total + e->len > bytes_max) break;
        if (total + e->len > buf_len) break;
        memcpy(buf + total, e->data, e->len);
        out[k] = (struct raft_entry){.term = e->term,
                                     .index = e->index,
                                     .data = buf + total,
                                     .len = e->len,
                                     .type = e->type,
                                     .flags = e->flags};
        total += e->len;
    }
    *n = k;
    return 0;
}

static uint64_t st_first(void *ctx)
{
    struct sim_rep *rep = ctx;
    return rep->d.log.base + 1;
}

static uint64_t st_last(void *ctx)
{
    struct sim_rep *rep = ctx;
    return slog_last(&rep->d.log);
}

static int st_snapshot(void *ctx, struct raft_snapshot_meta *meta)
{
    struct sim_rep *rep = ctx;
    *meta = rep->d.snap.meta;
    return 0;
}

/* ---- network -------------------------------------------------------------------------- */

static bool q_less(const struct net_msg *a, const struct net_msg *b)
{
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

static void q_push(struct sim *s, struct net_msg *nm)
{
    if (s->q_n >= 200000 && !s->failed)
        sim_fail(s, "network flooded: %u messages in flight", s->q_n);
    if (s->q_n == s->q_cap) {
        s->q_cap = s->q_cap ? s->q_cap * 2 : 256;
        s->q = xrealloc(s->q, s->q_cap * sizeof(*s->q));
    }
    uint32_t i = s->q_n++;
    s->q[i] = nm;
    if (s->o.manual) return; /* FIFO */
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!q_less(s->q[i], s->q[p])) break;
        struct net_msg *t = s->q[i];
        s->q[i] = s->q[p];
        s->q[p] = t;
        i = p;
    }
}

static struct net_msg *q_pop(struct sim *s)
{
    struct net_msg *top = s->q[0];
    s->q[0] = s->q[--s->q_n];
    uint32_t i = 0;
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < s->q_n && q_less(s->q[l], s->q[m])) m = l;
        if (r < s->q_n && q_less(s->q[r], s->q[m])) m = r;
        if (m == i) break;
        struct net_msg *t = s->q[i];
        s->q[i] = s->q[m];
        s->q[m] = t;
        i = m;
    }
    return top;
}

static struct net_msg *msg_copy(const struct raft_msg *m, uint32_t group)
{
    uint64_t bytes = 0;
    for (uint32_t k = 0; k < m->n_entries; k++)
        bytes += m->entries[k].len;
    struct net_msg *nm =
        xrealloc(NULL, sizeof(*nm) + m->n_entries * sizeof(struct raft_entry) + bytes);
    nm->group = group;
    nm->m = *m;
    uint8_t *data = (uint8_t *)(nm->ents + m->n_entries);
    for (uint32_t k = 0; k < m->n_entries; k++) {
        nm->ents[k] = m->entries[k];
        nm->ents[k].flags = 0; /* local metadata never crosses the wire */
        if (m->entries[k].len) memcpy(data, m->entries[k].data, m->entries[k].len);
        nm->ents[k].data = data;
        data += m->entries[k].len;
    }
    nm->m.entries = m->n_entries ? nm->ents : NULL;
    if (m->snapshot) {
        nm->snap_meta = *m->snapshot;
        nm->m.snapshot = &nm->snap_meta;
    }
    return nm;
}

static void net_send(struct sim *s, struct net_msg *nm)
{
    s->msgs_sent++;
    nm->seq = ++s->seq;
    if (s->o.manual) {
        nm->at = 0;
        q_push(s, nm);
        return;
    }
    if (s->o.drop_permille && rng_below(&s->rng, 1000) < s->o.drop_permille) {
        if (s->trace_mode) {
            char b[160];
            sim_trace(s, "g%u drop %s", nm->group, sim_msg_str(&nm->m, b, sizeof(b)));
        }
        free(nm);
        return;
    }
    uint32_t span = s->o.delay_max_ms - s->o.delay_min_ms + 1;
    nm->at = s->now + s->o.delay_min_ms + rng_below(&s->rng, span);
    if (s->o.dup_permille && rng_below(&s->rng, 1000) < s->o.dup_permille) {
        struct net_msg *d = msg_copy(&nm->m, nm->group);
        d->image = nm->image;
        d->seq = ++s->seq;
        d->at = s->now + s->o.delay_min_ms + rng_below(&s->rng, span);
        q_push(s, d);
    }
    q_push(s, nm);
}

/* ---- replicas ------------------------------------------------------------------------- */

struct sim_rep *sim_rep(struct sim *s, uint32_t group, uint64_t node)
{
    if (group >= s->o.groups || node < 1 || node > s->o.nodes) return NULL;
    return &s->groups[group].reps[node - 1];
}

static void schedule_fsync(struct sim *s, struct sim_node *n)
{
    if (n->fsync_at != UINT64_MAX) return;
    uint32_t d = s->o.manual || s->o.fsync_max_ms == 0
                     ? 0
                     : (uint32_t)rng_below(&s->rng, s->o.fsync_max_ms + 1);
    n->fsync_at = s->now + d;
}

static void attempt_drop(struct sim_rep *rep, uint32_t k)
{
    rep->att[k] = rep->att[--rep->n_att];
}

static void apply_committed(struct sim_rep *rep, const struct raft_entry *e)
{
    struct sim *s = rep->s;
    if (e->index != rep->applied + 1) {
        sim_fail(s, "g%u n%llu: applied %llu after %llu", rep->g->gi, (unsigned long long)rep->id,
                 (unsigned long long)e->index, (unsigned long long)rep->applied);
        return;
    }
    if (s->o.checks) { /* the bench skips hashing: it measures the core */
        rep->chain = chain_next(rep->chain, e->term, e->index, e->type, e->data, e->len);
        chk_on_apply(rep, e, rep->chain);
    }
    rep->applied = e->index;
    s->applied_total++;
    if (e->type == RAFT_ENTRY_CONF) raft_conf_decode(e->data, e->len, &rep->conf);
    for (uint32_t k = 0; k < rep->n_att;) {
        if (rep->att[k].index <= e->index) {
            attempt_drop(rep, k); /* acked (if it was this entry) by chk_on_apply */
            continue;
        }
        k++;
    }
}

/* The caller's side of the persistence contract (raft.h), in its order. */
static void handle_update(struct sim_rep *rep, const struct raft_update *u)
{
    struct sim *s = rep->s;
    struct sim_state *w = &rep->w;
    char b[200];
    if (u->rollback_from) {
        for (uint64_t i = u->rollback_from; i <= u->rollback_to; i++) {
            const struct sim_entry *e = slog_at(&w->log, i);
            if (e && (e->flags & RAFT_ENTRY_LOCAL)) {
                if (s->o.checks) chk_on_rollback(rep, e, u->rollback_exact);
                s->rollbacks++;
                rep->rollbacks++;
            }
        }
        if (s->trace_mode)
            sim_trace(s, "g%u n%llu rollback [%llu, %llu]%s", rep->g->gi,
                      (unsigned long long)rep->id, (unsigned long long)u->rollback_from,
                      (unsigned long long)u->rollback_to, u->rollback_exact ? "" : " (inexact)");
    }
    if (u->snapshot) {
        if (!rep->rx_snap_valid || rep->rx_snap.meta.index != u->snapshot->index) {
            sim_fail(s, "g%u n%llu: installing snapshot %llu without its image", rep->g->gi,
                     (unsigned long long)rep->id, (unsigned long long)u->snapshot->index);
            return;
        }
        w->snap = rep->rx_snap;
        w->snap.meta = *u->snapshot;
        w->log.base = u->snapshot->index;
        w->log.base_term = u->snapshot->term;
        w->log.base_chain = rep->rx_snap.chain;
        w->log.n = 0;
        rep->dirty_snap = rep->dirty = true;
        rep->applied = u->snapshot->index;
        rep->chain = rep->rx_snap.chain;
        rep->conf = u->snapshot->conf;
        s->snapshots_installed++;
        if (s->o.checks) chk_on_install(rep, &w->snap);
        if (s->trace_mode)
            sim_trace(s, "g%u n%llu install snapshot %llu/%llu", rep->g->gi,
                      (unsigned long long)rep->id, (unsigned long long)u->snapshot->index,
                      (unsigned long long)u->snapshot->term);
    }
    if (u->hs_changed) {
        w->hs = u->hs;
        rep->dirty = true;
    }
    if (u->n_entries) {
        uint64_t first = u->entries[0].index;
        if (first <= w->log.base || first > slog_last(&w->log) + 1) {
            sim_fail(s, "g%u n%llu: entries start at %llu, log is (%llu, %llu]", rep->g->gi,
                     (unsigned long long)rep->id, (unsigned long long)first,
                     (unsigned long long)w->log.base, (unsigned long long)slog_last(&w->log));
            return;
        }
        slog_truncate(&w->log, first);
        if (first < rep->dirty_from) rep->dirty_from = first;
        for (uint32_t k = 0; k < u->n_entries; k++) {
            const struct raft_entry *re = &u->entries[k];
            if (re->len > SIM_DATA_MAX) {
                sim_fail(s, "sim: entry of %u bytes", re->len);
                return;
            }
            if (re->term < slog_last_term(&w->log)) {
                sim_fail(s, "g%u n%llu: entry %llu has term %llu below its predecessor's %llu",
                         rep->g->gi, (unsigned long long)rep->id, (unsigned long long)re->index,
                         (unsigned long long)re->term, (unsigned long long)slog_last_term(&w->log));
                return;
            }
            struct sim_entry e = {.term = re->term,
                                  .index = re->index,
                                  .len = re->len,
                                  .type = re->type,
                                  .flags = re->flags};
            memcpy(e.data, re->data, re->len);
            if (s->o.checks)
                e.chain =
                    chain_next(slog_last_chain(&w->log), e.term, e.index, e.type, e.data, e.len);
            slog_push(&w->log, &e);
            if (s->o.checks) chk_on_append(rep, &e);
        }
        rep->dirty = true;
    }
    for (uint32_t k = 0; k < u->n_msgs; k++) {
        const struct raft_msg *m = &u->msgs[k];
        struct net_msg *nm = msg_copy(m, rep->g->gi);
        if (m->type == RAFT_MSG_SNAPSHOT) {
            if (rep->d.snap.meta.index != m->snapshot->index) {
                sim_fail(s, "g%u n%llu: snapshot message for %llu but storage has %llu", rep->g->gi,
                         (unsigned long long)rep->id, (unsigned long long)m->snapshot->index,
                         (unsigned long long)rep->d.snap.meta.index);
                free(nm);
                continue;
            }
            nm->image = rep->d.snap;
        }
        bool early = s->o.early_append && u->role == RAFT_LEADER &&
                     (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT) &&
                     rep->d.hs.term == w->hs.term && rep->d.hs.vote == w->hs.vote;
        if (rep->dirty && !early) {
            if (rep->n_held == rep->cap_held) {
                rep->cap_held = rep->cap_held ? rep->cap_held * 2 : 16;
                rep->held = xrealloc(rep->held, rep->cap_held * sizeof(*rep->held));
            }
            rep->held[rep->n_held++] = nm;
        } else {
            net_send(s, nm);
        }
    }
    if (u->role != rep->role || u->term != rep->term) {
        if (s->trace_mode)
            sim_trace(s, "g%u n%llu is %s in term %llu (leader %llu)", rep->g->gi,
                      (unsigned long long)rep->id, raft_role_name(u->role),
                      (unsigned long long)u->term, (unsigned long long)u->leader);
        rep->role = u->role;
        rep->term = u->term;
    }
    if (s->trace_mode) {
        struct raft_status st;
        raft_status(rep->r, &st);
        if (st.conf_index != rep->conf_index) {
            char b2[160] = "";
            size_t k = 0;
            for (uint32_t i = 0; i < st.conf.n && k < sizeof(b2) - 24; i++)
                k += (size_t)snprintf(b2 + k, sizeof(b2) - k, " %s%llu",
                                      st.conf.servers[i].role == RAFT_VOTER ? "" : "learner:",
                                      (unsigned long long)st.conf.servers[i].id);
            sim_trace(s, "g%u n%llu configuration of index %llu:%s", rep->g->gi,
                      (unsigned long long)rep->id, (unsigned long long)st.conf_index, b2);
            rep->conf_index = st.conf_index;
        }
    }
    if (u->commit != rep->commit && s->trace_mode)
        sim_trace(s, "g%u n%llu commit %llu", rep->g->gi, (unsigned long long)rep->id,
                  (unsigned long long)u->commit);
    rep->commit = u->commit;
    if (s->o.checks) chk_on_soft(rep, u->role, u->term, u->commit);
    if (u->leader_durable_index) {
        rep->durable_index = u->leader_durable_index;
        if (s->o.checks) chk_on_fast(rep, u->term, u->leader_durable_index);
        s->fast_acks++;
    }
    for (uint32_t k = 0; k < u->n_committed && !s->failed; k++)
        apply_committed(rep, &u->committed[k]);
    if (s->o.checks)
        for (uint32_t k = 0; k < u->n_reads; k++)
            chk_on_read_ready(rep, &u->reads[k]);
    rep->deadline = u->deadline_ms;
    if (rep->dirty) schedule_fsync(s, &s->nodes[rep->id]);
    (void)b;
}

void sim_drain(struct sim_rep *rep)
{
    struct sim *s = rep->s;
    struct raft_update u;
    for (int i = 0; i < 10000 && rep->r && !s->failed; i++) {
        uint64_t applied = rep->applied;
        if (!raft_ready(rep->r, &u)) {
            rep->deadline = raft_deadline(rep->r);
            return;
        }
        handle_update(rep, &u);
        if (rep->applied > applied && rep->r) raft_applied(rep->r, s->now, rep->applied);
    }
    if (!s->failed)
        sim_fail(s, "g%u n%llu: raft_ready never quiet", rep->g->gi, (unsigned long long)rep->id);
}

static void sync_rep(struct sim_rep *rep)
{
    struct sim *s = rep->s;
    struct sim_state *w = &rep->w, *d = &rep->d;
    if (!rep->dirty) return;
    d->hs = w->hs;
    if (rep->dirty_snap) {
        d->snap = w->snap;
        slog_copy(&d->log, &w->log);
    } else if (rep->dirty_from != UINT64_MAX) {
        slog_truncate(&d->log, rep->dirty_from);
        for (uint64_t i = slog_last(&d->log) + 1; i <= slog_last(&w->log); i++)
            slog_push(&d->log, slog_at(&w->log, i));
    }
    rep->dirty = rep->dirty_snap = false;
    rep->dirty_from = UINT64_MAX;
    for (uint32_t k = 0; k < rep->n_held; k++)
        net_send(s, rep->held[k]);
    rep->n_held = 0;
    if (rep->r) {
        raft_persisted(rep->r, s->now, slog_last(&w->log), slog_last_term(&w->log));
        sim_drain(rep);
    }
}

static void fsync_node(struct sim *s, struct sim_node *n)
{
    n->fsync_at = UINT64_MAX;
    for (uint32_t g = 0; g < s->o.groups; g++)
        sync_rep(sim_rep(s, g, n->id));
}

void sim_sync_all(struct sim *s)
{
    for (int pass = 0; pass < 100; pass++) {
        bool any = false;
        for (uint64_t n = 1; n <= s->o.nodes; n++)
            if (s->nodes[n].up && s->nodes[n].fsync_at != UINT64_MAX) {
                fsync_node(s, &s->nodes[n]);
                any = true;
            }
        if (!any) return;
    }
}

static uint64_t rep_seed(struct sim *s, struct sim_rep *rep)
{
    return s->seed * 1000003u + rep->g->gi * 131u + rep->id * 7u + (++s->starts) * 0x9e37u;
}

static void rep_start(struct sim_rep *rep, const struct raft_conf *boot)
{
    struct sim *s = rep->s;
    slog_copy(&rep->w.log, &rep->d.log);
    rep->w.hs = rep->d.hs;
    rep->w.snap = rep->d.snap;
    rep->dirty = rep->dirty_snap = false;
    rep->dirty_from = UINT64_MAX;
    rep->applied = rep->d.snap.meta.index;
    rep->chain = rep->d.snap.chain;
    rep->conf = rep->d.snap.meta.conf;
    rep->rx_snap_valid = false;
    rep->role = RAFT_FOLLOWER;
    rep->term = rep->d.hs.term;
    rep->commit = rep->applied;
    rep->n_att = 0;
    struct raft_config cfg = s->o.cfg;
    cfg.id = rep->id;
    cfg.seed = rep_seed(s, rep);
    if (cfg.election_ranks) { /* ranked timeouts: rank by node id */
        cfg.election_ranks = (uint32_t)s->o.nodes;
        cfg.election_rank = (uint32_t)((rep->id - 1) % s->o.nodes);
    }
    struct raft_storage st = {.ctx = rep,
                              .term = st_term,
                              .entries = st_entries,
                              .first_index = st_first,
                              .last_index = st_last,
                              .snapshot = st_snapshot};
    bool empty = slog_last(&rep->d.log) == 0;
    struct raft_init_state init = {
        .hs = rep->d.hs, .applied = rep->applied, .bootstrap = empty ? boot : NULL};
    struct trine_err err = {0};
    int rc = raft_create(&rep->r, &cfg, &st, &init, s->now, &err);
    if (rc < 0) {
        sim_fail(s, "g%u n%llu: raft_create: %s", rep->g->gi, (unsigned long long)rep->id, err.msg);
        return;
    }
    sim_drain(rep);
}

static void boot_conf(struct sim *s, uint32_t g, struct raft_conf *c)
{
    memset(c, 0, sizeof(*c));
    for (uint32_t k = 0; k < s->o.voters; k++) {
        c->servers[c->n].id = (g + k) % s->o.nodes + 1;
        c->servers[c->n].role = RAFT_VOTER;
        c->n++;
    }
}

void sim_opts_default(struct sim_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->nodes = 3;
    o->groups = 1;
    o->voters = 3;
    o->checks = true;
    raft_config_default(&o->cfg, 1);
    o->cfg.election_timeout_ms = 100;
    o->cfg.heartbeat_ms = 20;
    o->cfg.lease_drift_ms = 10;
    o->cfg.tail_entries = 64; /* small: exercise eviction and storage reads */
    o->cfg.tail_bytes = 2048;
    o->cfg.entry_bytes_max = 256;
    o->cfg.msg_entries_max = 8;
    o->cfg.msg_bytes_max = 512;
    o->cfg.inflight_max = 4;
    o->cfg.apply_batch_max = 16;
    o->cfg.msgs_max = 64;
    o->cfg.reads_max = 32;
    o->cfg.catchup_lag_max = 8;
    o->delay_min_ms = 1;
    o->delay_max_ms = 10;
    o->fsync_max_ms = 3;
}

struct sim *sim_new(const struct sim_opts *o, uint64_t seed)
{
    struct sim *s = xrealloc(NULL, sizeof(*s));
    memset(s, 0, sizeof(*s));
    s->o = *o;
    s->seed = seed;
    rng_seed(&s->rng, seed);
    s->groups = xrealloc(NULL, o->groups * sizeof(*s->groups));
    memset(s->groups, 0, o->groups * sizeof(*s->groups));
    for (uint64_t a = 0; a <= SIM_NODES_MAX; a++)
        for (uint64_t b = 0; b <= SIM_NODES_MAX; b++)
            s->link[a][b] = true;
    for (uint64_t n = 1; n <= o->nodes; n++) {
        s->nodes[n].id = n;
        s->nodes[n].up = true;
        s->nodes[n].fsync_at = UINT64_MAX;
    }
    for (uint32_t g = 0; g < o->groups; g++) {
        struct sim_group *grp = &s->groups[g];
        grp->gi = g;
        grp->chk = o->checks ? chk_new() : NULL;
        grp->next_req = 1;
        for (uint64_t n = 1; n <= o->nodes; n++) {
            struct sim_rep *rep = &grp->reps[n - 1];
            rep->s = s;
            rep->g = grp;
            rep->id = n;
            rep->dirty_from = UINT64_MAX;
        }
    }
    for (uint32_t g = 0; g < o->groups; g++) {
        struct raft_conf c;
        boot_conf(s, g, &c);
        for (uint64_t n = 1; n <= o->nodes; n++) {
            struct sim_rep *rep = sim_rep(s, g, n);
            rep_start(rep, raft_conf_role(&c, n) ? &c : NULL);
        }
    }
    return s;
}

static void rep_free(struct sim_rep *rep)
{
    raft_destroy(rep->r);
    rep->r = NULL;
    for (uint32_t k = 0; k < rep->n_held; k++)
        free(rep->held[k]);
    free(rep->held);
    free(rep->w.log.v);
    free(rep->d.log.v);
    free(rep->att);
}

void sim_free(struct sim *s)
{
    if (!s) return;
    for (uint32_t g = 0; g < s->o.groups; g++) {
        for (uint64_t n = 1; n <= s->o.nodes; n++)
            rep_free(sim_rep(s, g, n));
        chk_free(s->groups[g].chk);
    }
    for (uint32_t i = 0; i < s->q_n; i++)
        free(s->q[i]);
    free(s->q);
    free(s->groups);
    free(s->ring);
    free(s);
}

/* ---- driving -------------------------------------------------------------------------- */

uint64_t sim_next_time(struct sim *s)
{
    uint64_t t = UINT64_MAX;
    if (!s->o.manual && s->q_n > 0) t = s->q[0]->at;
    for (uint64_t n = 1; n <= s->o.nodes; n++) {
        if (!s->nodes[n].up) continue;
        if (s->nodes[n].fsync_at < t) t = s->nodes[n].fsync_at;
        for (uint32_t g = 0; g < s->o.groups; g++) {
            struct sim_rep *rep = sim_rep(s, g, n);
            if (rep->r && rep->deadline < t) t = rep->deadline;
        }
    }
    return t;
}

void sim_advance(struct sim *s, uint64_t t)
{
    if (t > s->now) s->now = t;
}

/* The transport tells the sender how a snapshot transfer ended (raft_report_snapshot). */
static void report_snapshot(struct sim *s, const struct net_msg *nm, bool ok)
{
    if (nm->m.type != RAFT_MSG_SNAPSHOT) return;
    struct sim_rep *sender = sim_rep(s, nm->group, nm->m.from);
    if (!sender || !sender->r) return;
    raft_report_snapshot(sender->r, s->now, nm->m.to, ok);
    sim_drain(sender);
}

static void deliver(struct sim *s, struct net_msg *nm)
{
    struct sim_rep *rep = sim_rep(s, nm->group, nm->m.to);
    uint64_t from = nm->m.from;
    if (!rep || !s->nodes[nm->m.to].up || !rep->r || !s->link[from][nm->m.to]) {
        report_snapshot(s, nm, false);
        if (s->trace_mode) {
            char b[160];
            sim_trace(s, "g%u lost %s", nm->group, sim_msg_str(&nm->m, b, sizeof(b)));
        }
        free(nm);
        return;
    }
    s->msgs_delivered++;
    if (s->trace_mode) {
        char b[160];
        sim_trace(s, "g%u %s", nm->group, sim_msg_str(&nm->m, b, sizeof(b)));
    }
    if (nm->m.type == RAFT_MSG_SNAPSHOT) {
        rep->rx_snap = nm->image;
        rep->rx_snap_valid = true;
    }
    int rc = raft_recv(rep->r, s->now, &nm->m);
    if (rc < 0 && rc != -TRINE_EBAD_REQUEST)
        sim_fail(s, "g%u n%llu: raft_recv: %s", nm->group, (unsigned long long)rep->id,
                 raft_error(rep->r)->msg);
    sim_drain(rep);
    report_snapshot(s, nm, true);
    free(nm);
}

void sim_tick_due(struct sim *s)
{
    for (uint64_t n = 1; n <= s->o.nodes; n++) {
        if (!s->nodes[n].up) continue;
        for (uint32_t g = 0; g < s->o.groups; g++) {
            struct sim_rep *rep = sim_rep(s, g, n);
            if (!rep->r || rep->deadline > s->now) continue;
            raft_tick(rep->r, s->now);
            sim_drain(rep);
        }
    }
}

uint32_t sim_step(struct sim *s)
{
    uint32_t events = 0;
    for (int pass = 0; pass < 1000 && !s->failed; pass++) {
        bool any = false;
        while (!s->o.manual && s->q_n > 0 && s->q[0]->at <= s->now && !s->failed) {
            deliver(s, q_pop(s));
            if (s->o.checks) chk_step(s);
            events++;
            any = true;
        }
        for (uint64_t n = 1; n <= s->o.nodes && !s->failed; n++) {
            if (s->nodes[n].up && s->nodes[n].fsync_at <= s->now) {
                fsync_node(s, &s->nodes[n]);
                if (s->o.checks) chk_step(s);
                events++;
                any = true;
            }
        }
        for (uint64_t n = 1; n <= s->o.nodes && !s->failed; n++) {
            if (!s->nodes[n].up) continue;
            for (uint32_t g = 0; g < s->o.groups; g++) {
                struct sim_rep *rep = sim_rep(s, g, n);
                if (!rep->r || rep->deadline > s->now) continue;
                raft_tick(rep->r, s->now);
                sim_drain(rep);
                if (s->o.checks) chk_step(s);
                events++;
                any = true;
            }
        }
        if (!any) break;
    }
    s->steps += events;
    return events;
}

static bool msg_match(const struct net_msg *nm, uint64_t from, uint64_t to, uint8_t type)
{
    return (!from || nm->m.from == from) && (!to || nm->m.to == to) &&
           (!type || nm->m.type == type);
}

uint32_t sim_pending(struct sim *s, uint64_t from, uint64_t to, uint8_t type)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->q_n; i++)
        n += msg_match(s->q[i], from, to, type);
    return n;
}

uint32_t sim_deliver(struct sim *s, uint64_t from, uint64_t to, uint8_t type, bool drop)
{
    /* Take the matching messages out first: delivering may queue new ones. */
    uint32_t n = 0, keep = 0, cnt = s->q_n;
    struct net_msg **take = xrealloc(NULL, (cnt + 1) * sizeof(*take));
    for (uint32_t i = 0; i < cnt; i++) {
        if (msg_match(s->q[i], from, to, type))
            take[n++] = s->q[i];
        else
            s->q[keep++] = s->q[i];
    }
    s->q_n = keep;
    for (uint32_t i = 0; i < n; i++) {
        if (drop || s->failed) {
            if (s->trace_mode && !s->failed) {
                char b[160];
                sim_trace(s, "g%u drop %s", take[i]->group, sim_msg_str(&take[i]->m, b, sizeof(b)));
            }
            free(take[i]);
            continue;
        }
        deliver(s, take[i]);
        if (s->o.checks) chk_step(s);
        sim_sync_all(s);
    }
    free(take);
    return drop ? 0 : n;
}

/* ---- faults --------------------------------------------------------------------------- */

void sim_crash(struct sim *s, uint64_t node)
{
    struct sim_node *n = &s->nodes[node];
    if (!n->up) return;
    n->up = false;
    n->fsync_at = UINT64_MAX;
    s->crashes++;
    sim_trace(s, "crash n%llu (unsynced writes lost)", (unsigned long long)node);
    for (uint32_t g = 0; g < s->o.groups; g++) {
        struct sim_rep *rep = sim_rep(s, g, node);
        raft_destroy(rep->r);
        rep->r = NULL;
        for (uint32_t k = 0; k < rep->n_held; k++)
            free(rep->held[k]);
        rep->n_held = 0;
        rep->n_att = 0;
        if (s->o.checks) chk_on_crash(rep);
    }
}

void sim_restart(struct sim *s, uint64_t node)
{
    struct sim_node *n = &s->nodes[node];
    if (n->up) return;
    n->up = true;
    sim_trace(s, "restart n%llu", (unsigned long long)node);
    for (uint32_t g = 0; g < s->o.groups && !s->failed; g++)
        rep_start(sim_rep(s, g, node), NULL);
}

void sim_set_link(struct sim *s, uint64_t a, uint64_t b, bool up)
{
    s->link[a][b] = up;
}

void sim_heal(struct sim *s)
{
    for (uint64_t a = 0; a <= SIM_NODES_MAX; a++)
        for (uint64_t b = 0; b <= SIM_NODES_MAX; b++)
            s->link[a][b] = true;
    sim_trace(s, "heal all links");
}

/* ---- client operations ---------------------------------------------------------------- */

static struct sim_rep *live_rep(struct sim *s, uint32_t g, uint64_t n)
{
    struct sim_rep *rep = sim_rep(s, g, n);
    return rep && rep->r ? rep : NULL;
}

int sim_propose(struct sim *s, uint32_t g, uint64_t n, uint64_t req)
{
    struct sim_rep *rep = live_rep(s, g, n);
    if (!rep) return -TRINE_EUNAVAILABLE;
    uint8_t data[24];
    uint32_t len = 8 + (uint32_t)(req % 13);
    memset(data, (int)(req & 0xff), sizeof(data));
    memcpy(data, &req, 8);
    uint64_t index, term;
    int rc = raft_propose(rep->r, s->now, data, len, &index, &term);
    if (rc == 0) {
        if (rep->n_att == rep->cap_att) {
            rep->cap_att = rep->cap_att ? rep->cap_att * 2 : 8;
            rep->att = xrealloc(rep->att, rep->cap_att * sizeof(*rep->att));
        }
        rep->att[rep->n_att++] = (struct sim_attempt){.req = req, .index = index, .term = term};
        if (s->o.checks) chk_on_write(rep, req, index, term);
        sim_trace(s, "g%u n%llu propose req %llu -> %llu/%llu", g, (unsigned long long)n,
                  (unsigned long long)req, (unsigned long long)index, (unsigned long long)term);
    }
    sim_drain(rep);
    return rc;
}

int sim_read(struct sim *s, uint32_t g, uint64_t n, uint64_t ctx)
{
    struct sim_rep *rep = live_rep(s, g, n);
    if (!rep) return -TRINE_EUNAVAILABLE;
    if (s->o.checks) chk_on_read(rep, ctx);
    int rc = raft_read_index(rep->r, s->now, ctx);
    sim_trace(s, "g%u n%llu read ctx %llu -> %s", g, (unsigned long long)n, (unsigned long long)ctx,
              status_name(rc));
    if (rc < 0 && s->o.checks) {
        struct raft_read rd = {.context = ctx, .status = rc};
        chk_on_read_ready(rep, &rd);
    }
    sim_drain(rep);
    return rc;
}

int sim_conf_change(struct sim *s, uint32_t g, uint64_t n, enum raft_conf_op op, uint64_t id)
{
    struct sim_rep *rep = live_rep(s, g, n);
    if (!rep) return -TRINE_EUNAVAILABLE;
    static const char *const names[] = {"?", "add-learner", "promote", "remove"};
    uint64_t index = 0;
    int rc = raft_conf_change(rep->r, s->now, op, id, &index);
    if (rc == 0) s->conf_changes++;
    sim_trace(s, "g%u n%llu conf %s n%llu -> %s %llu", g, (unsigned long long)n, names[op],
              (unsigned long long)id, status_name(rc), (unsigned long long)index);
    sim_drain(rep);
    return rc;
}

int sim_transfer(struct sim *s, uint32_t g, uint64_t n, uint64_t to)
{
    struct sim_rep *rep = live_rep(s, g, n);
    if (!rep) return -TRINE_EUNAVAILABLE;
    int rc = raft_transfer(rep->r, s->now, to);
    if (rc == 0) s->transfers++;
    sim_trace(s, "g%u n%llu transfer to n%llu -> %s", g, (unsigned long long)n,
              (unsigned long long)to, status_name(rc));
    sim_drain(rep);
    return rc;
}

int sim_campaign(struct sim *s, uint32_t g, uint64_t n)
{
    struct sim_rep *rep = live_rep(s, g, n);
    if (!rep) return -TRINE_EUNAVAILABLE;
    sim_trace(s, "g%u n%llu campaign", g, (unsigned long long)n);
    int rc = raft_campaign(rep->r, s->now);
    sim_drain(rep);
    return rc;
}

void sim_compact(struct sim *s, uint32_t g, uint64_t n, uint32_t keep)
{
    struct sim_rep *rep = live_rep(s, g, n);
    if (!rep || rep->applied <= rep->d.snap.meta.index || rep->dirty_snap) return;
    uint64_t at = rep->applied; /* applied <= persisted: durable, unless a snapshot is pending */
    struct sim_entry *e = slog_at(&rep->d.log, at);
    if (!e) {
        sim_fail(s, "g%u n%llu: applied %llu is not durable", g, (unsigned long long)n,
                 (unsigned long long)at);
        return;
    }
    struct sim_snap snap = {.meta = {.index = at, .term = e->term, .conf = rep->conf},
                            .chain = rep->chain};
    if (s->o.checks && e->chain != rep->chain) {
        sim_fail(s, "g%u n%llu: state machine chain differs from its log at %llu", g,
                 (unsigned long long)n, (unsigned long long)at);
        return;
    }
    uint64_t upto = at > keep ? at - keep : 0;
    rep->d.snap = snap;
    rep->w.snap = snap;
    slog_compact(&rep->d.log, upto);
    slog_compact(&rep->w.log, upto);
    if (rep->d.log.base > rep->d.snap.meta.index || rep->w.log.base > rep->w.snap.meta.index)
        sim_fail(s, "sim: compaction past the snapshot");
    sim_trace(s, "g%u n%llu snapshot at %llu, log from %llu", g, (unsigned long long)n,
              (unsigned long long)at, (unsigned long long)rep->d.log.base + 1);
}

uint64_t sim_leader(struct sim *s, uint32_t g)
{
    uint64_t best = 0, term = 0;
    for (uint64_t n = 1; n <= s->o.nodes; n++) {
        struct sim_rep *rep = live_rep(s, g, n);
        if (rep && rep->role == RAFT_LEADER && rep->term >= term) {
            best = n;
            term = rep->term;
        }
    }
    return best;
}
