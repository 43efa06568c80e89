/*
 * election.c - roles, election timers, pre-vote, votes (dissertation 3.4,
 * 4.2.3, 9.6).
 *
 * Invariants:
 *   - A vote is granted at most once per term (vote is durable state and goes
 *     out in the same update as the grant, so it is fsynced first).
 *   - A pre-vote changes no state on either side; a node only increments its
 *     term after a majority said it could win (no disruption by a node
 *     rejoining after a partition).
 *   - Only voters of the node's own latest configuration campaign.
 *   - Election timeouts are uniform in [election_timeout_ms, 2x), drawn from
 *     the instance's seeded rng (no rand(), no clock); with election_ranks,
 *     uniform within this node's rank slot of that interval.
 */
#include <stddef.h>

#include "raft/raft_int.h"

void election_reset_timer(struct raft *r)
{
    uint64_t t = r->cfg.election_timeout_ms;
    uint32_t ranks = r->cfg.election_ranks;
    if (ranks > 1) {
        uint64_t slot = t / ranks ? t / ranks : 1;
        r->election_due_ms = r->now_ms + t + r->cfg.election_rank * slot + rng_below(&r->rng, slot);
        return;
    }
    r->election_due_ms = r->now_ms + t + rng_below(&r->rng, t);
}

bool election_self_voter(const struct raft *r)
{
    return raft_conf_role(&r->conf, r->id) == RAFT_VOTER;
}

uint32_t election_quorum(const struct raft *r)
{
    uint32_t voters = 0;
    for (uint32_t i = 0; i < r->n_prs; i++)
        voters += r->prs[i].voter;
    return voters / 2 + 1;
}

bool election_in_lease(const struct raft *r)
{
    if (r->now_ms < r->vote_guard_ms) return true;
    if (!r->cfg.check_quorum) return false;
    if (r->role == RAFT_LEADER) return true; /* check-quorum steps it down when cut off */
    return r->leader != 0 && r->now_ms - r->last_heard_ms < r->cfg.election_timeout_ms;
}

static void leave_leadership(struct raft *r)
{
    if (r->role != RAFT_LEADER) return;
    read_fail_all(r);
    transfer_abort(r);
}

void election_become_follower(struct raft *r, uint64_t term, uint64_t leader)
{
    if (term > r->term) {
        r->term = term;
        r->vote = 0;
        r->hs_dirty = true;
    }
    leave_leadership(r);
    r->role = RAFT_FOLLOWER;
    r->leader = leader;
    r->votes_granted = r->votes_rejected = 0;
    r->campaign_transfer = false;
    election_reset_timer(r);
}

static uint32_t popcount32(uint32_t x)
{
    return (uint32_t)__builtin_popcount(x);
}

static void tally(struct raft *r)
{
    uint32_t q = election_quorum(r);
    if (popcount32(r->votes_granted) >= q) {
        if (r->role == RAFT_PRE_CANDIDATE)
            election_campaign(r, false, r->campaign_transfer);
        else if (r->role == RAFT_CANDIDATE)
            election_become_leader(r);
        return;
    }
    uint32_t voters = 0;
    for (uint32_t i = 0; i < r->n_prs; i++)
        voters += r->prs[i].voter;
    if (popcount32(r->votes_rejected) > voters - q) election_become_follower(r, r->term, 0);
}

void election_campaign(struct raft *r, bool pre_vote, bool transfer)
{
    int self = progress_slot(r, r->id);
    if (self < 0 || !r->prs[self].voter) return;
    leave_leadership(r);
    if (pre_vote) {
        r->role = RAFT_PRE_CANDIDATE;
    } else {
        r->term++;
        r->vote = r->id;
        r->hs_dirty = true;
        r->role = RAFT_CANDIDATE;
    }
    r->leader = 0;
    r->campaign_transfer = transfer;
    r->votes_granted = 1u << self;
    r->votes_rejected = 0;
    election_reset_timer(r);
    for (uint32_t i = 0; i < r->n_prs; i++) {
        const struct progress *pr = &r->prs[i];
        if (!pr->voter || pr->id == r->id) continue;
        struct raft_msg *m = raft_out(r, pre_vote ? RAFT_MSG_PREVOTE : RAFT_MSG_VOTE, pr->id);
        if (!m) break;
        m->term = pre_vote ? r->term + 1 : r->term;
        m->index = r->log.last;
        m->log_term = r->log.last_term;
        m->context = transfer ? RAFT_CTX_TRANSFER : 0;
    }
    tally(r); /* a single voter wins at once */
}

void election_become_leader(struct raft *r)
{
    r->role = RAFT_LEADER;
    r->leader = r->id;
    r->votes_granted = r->votes_rejected = 0;
    r->transfer_target = 0;
    r->lease_off = false;
    r->leader_durable = r->leader_durable_new = 0;
    for (uint32_t i = 0; i < r->n_prs; i++)
        progress_reset(r, &r->prs[i]);
    /* The no-op commits the entries of earlier terms (Figure 3.7 / 8 rule) and lets reads
     * and membership changes start. */
    if (log_append(r, r->term, RAFT_ENTRY_NOOP, RAFT_ENTRY_LOCAL, NULL, 0) < 0) {
        /* The tail is full of undurable entries: give the election up, a later one will do. */
        election_become_follower(r, r->term, 0);
        return;
    }
    r->term_start = r->log.last;
    struct progress *self = progress_get(r, r->id);
    if (self) {
        self->match = r->log.persisted;
        self->next = r->log.last + 1;
        self->state = PR_REPLICATE;
    }
    r->heartbeat_due_ms = r->now_ms + r->cfg.heartbeat_ms;
    r->cq_due_ms = r->now_ms + r->cfg.election_timeout_ms;
    repl_maybe_commit(r); /* single voter */
}

void election_tick(struct raft *r)
{
    if (r->now_ms < r->election_due_ms) return;
    if (!election_self_voter(r)) {
        election_reset_timer(r);
        return;
    }
    election_campaign(r, r->cfg.pre_vote, false);
}

void election_recv_vote(struct raft *r, const struct raft_msg *m)
{
    bool pre = m->type == RAFT_MSG_PREVOTE;
    bool can = r->vote == m->from || (r->vote == 0 && r->leader == 0) || (pre && m->term > r->term);
    bool grant = can && log_up_to_date(r, m->index, m->log_term);
    struct raft_msg *o = raft_out(r, pre ? RAFT_MSG_PREVOTE_RESP : RAFT_MSG_VOTE_RESP, m->from);
    if (!o) return;
    if (!grant) {
        o->reject = true;
        return;
    }
    if (pre) {
        o->term = m->term;
        return;
    }
    r->vote = m->from;
    r->hs_dirty = true;
    election_reset_timer(r);
}

void election_recv_vote_resp(struct raft *r, const struct raft_msg *m)
{
    bool pre = m->type == RAFT_MSG_PREVOTE_RESP;
    if ((pre && r->role != RAFT_PRE_CANDIDATE) || (!pre && r->role != RAFT_CANDIDATE)) return;
    if (pre && !m->reject && m->term != r->term + 1) return; /* answer to an older campaign */
    int slot = progress_slot(r, m->from);
    if (slot < 0 || !r->prs[slot].voter) return;
    if (m->reject)
        r->votes_rejected |= 1u << slot;
    else
        r->votes_granted |= 1u << slot;
    tally(r);
}
