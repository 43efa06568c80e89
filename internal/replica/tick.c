/*
 * tick.c - everything driven by time: Raft ticks (each group at its own
 * deadline), request timeouts, `all` writes whose replica went silent, TTL
 * expiry proposals on led partitions, compaction, snapshot stream timeouts,
 * leadership moves to preferred primaries, and graceful shutdown.
 *
 * TTL: the primary asks the store for keys whose expiry passed (by its wall
 * clock) and proposes EXPIRE(key, mod_revision) through Raft; a replica never
 * deletes on its own clock. One batch per partition is in flight at a time
 * (until applied), so a slow apply is not flooded with duplicates.
 *
 * Preferred primary: a leader that is not its partition's preferred node
 * hands over (raft_transfer) once the preferred node is active and caught up
 * (match within transfer_lag of the last index), at most once per two
 * election timeouts, and not in its first election timeout as leader.
 */
#include <string.h>

#include "base/log.h"
#include "replica/replica_int.h"

#define TRANSFER_LAG 64

struct expire_ctx {
    struct replica *r;
    struct group *g;
    uint64_t now_real;
    uint64_t last_index;
};

static int propose_expire(void *arg, const uint8_t *key, size_t key_len, uint64_t mod_revision,
                          uint64_t expire_at_ms)
{
    (void)expire_at_ms;
    struct expire_ctx *c = arg;
    struct cmd cmd = {.op = CODEC_CMD_OP_EXPIRE,
                      .key = key,
                      .key_len = (uint32_t)key_len,
                      .expect_mod_revision = mod_revision,
                      .now_ms = c->now_real};
    if (cmd_encode(c->r, &cmd, &c->r->cmd_buf) < 0) return 0;
    uint64_t index, term;
    if (raft_propose(c->g->raft, rep_now_ms(c->r), c->r->cmd_buf.data, (uint32_t)c->r->cmd_buf.len,
                     &index, &term) < 0)
        return 1; /* not leader any more, or busy: stop, try next tick */
    c->last_index = index;
    return 0;
}

static void expire(struct replica *r, struct group *g)
{
    if (g->role != RAFT_LEADER || r->shutting_down || g->applied < g->expire_wait) return;
    struct expire_ctx c = {.r = r, .g = g, .now_real = rep_real_ms(r)};
    store_expired(r->store, g->partition, c.now_real, r->cfg.expire_batch, propose_expire, &c);
    if (c.last_index) {
        g->expire_wait = c.last_index;
        r->dirty = true;
    }
}

static uint64_t transfer_target(struct group *g, uint64_t now, bool any)
{
    struct raft_status st;
    raft_status(g->raft, &st);
    uint64_t best = 0, best_match = 0;
    for (uint32_t i = 0; i < g->n_peers; i++) {
        struct peer *p = &g->peers[i];
        if (!p->voter || !group_peer_active(g, p, now)) continue;
        if (p->match + TRANSFER_LAG < st.last_index) continue;
        if (p->id == g->preferred) return p->id;
        if (any && p->match >= best_match) {
            best = p->id;
            best_match = p->match;
        }
    }
    return best;
}

static void move_leadership(struct replica *r, struct group *g, uint64_t now)
{
    if (g->role != RAFT_LEADER || now < g->transfer_next_ms) return;
    uint64_t to = 0;
    if (r->shutting_down)
        to = transfer_target(g, now, true);
    else if (g->preferred != r->cfg.node_id)
        to = transfer_target(g, now, false);
    if (!to) return;
    g->transfer_next_ms = now + 2 * r->cfg.election_timeout_ms;
    if (raft_transfer(g->raft, now, to) == 0) {
        log_part(LOG_LEVEL_INFO, "replica", g->partition, "moving leadership to node %llu",
                 (unsigned long long)to);
        r->dirty = true;
    }
}

int replica_tick(struct replica *r)
{
    uint64_t now = rep_now_ms(r);
    for (uint32_t i = 0; i < r->n_groups; i++) {
        struct group *g = &r->groups[i];
        if (now >= g->deadline_ms) {
            raft_tick(g->raft, now);
            g->deadline_ms = raft_deadline(g->raft);
            r->dirty = true;
        }
        if (g->alls.head || g->writes.head) ops_unavailable_alls(g, now);
        expire(r, g);
        move_leadership(r, g, now);
    }
    ops_timeouts(r, now);
    snap_tick(r, now);
    int rc = snap_compact(r, now);
    ops_flush_done(r);
    return rc;
}

uint64_t replica_next_deadline(const struct replica *r)
{
    uint64_t now = rep_now_ms(r);
    if (r->dirty || r->n_recs) return now;
    uint64_t d = UINT64_MAX;
    for (uint32_t i = 0; i < r->n_groups; i++) {
        const struct group *g = &r->groups[i];
        if (g->deadline_ms < d) d = g->deadline_ms;
    }
    for (const struct waiter *w = r->all_head; w; w = w->gnext)
        if (w->deadline_ms < d) d = w->deadline_ms;
    /* Periodic work (TTL, transfers, compaction, stream timeouts, shutdown): 100 ms. */
    uint64_t periodic = now + 100;
    return d < periodic ? d : periodic;
}

void replica_shutdown(struct replica *r, uint64_t timeout_ms)
{
    uint64_t now = rep_now_ms(r);
    r->shutting_down = true;
    r->shutdown_deadline_ms = now + timeout_ms;
    for (uint32_t i = 0; i < r->n_groups; i++)
        r->groups[i].transfer_next_ms = 0;
    r->dirty = true;
}

bool replica_shutdown_done(const struct replica *r)
{
    if (!r->shutting_down) return false;
    if (rep_now_ms(r) >= r->shutdown_deadline_ms) return true;
    for (uint32_t i = 0; i < r->n_groups; i++)
        if (r->groups[i].role == RAFT_LEADER) return false;
    return true;
}

void replica_peer_reachable(struct replica *r, uint64_t peer, bool reachable)
{
    uint32_t k = 0;
    while (k < r->n_down && r->down[k] != peer)
        k++;
    if (reachable && k < r->n_down) {
        r->down[k] = r->down[--r->n_down];
    } else if (!reachable && k == r->n_down && r->n_down < 64) {
        r->down[r->n_down++] = peer;
    }
}
