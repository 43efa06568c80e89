/*
 * transfer.c - leadership transfer (dissertation 3.10), used by Trine to keep
 * each partition's primary on its preferred node.
 *
 * The leader stops accepting proposals, brings the target's log up to its own
 * last index, then sends RAFT_MSG_TIMEOUT_NOW; the target campaigns at once,
 * without pre-vote and with RAFT_CTX_TRANSFER so voters ignore their leader
 * lease. The attempt is abandoned after one election timeout (proposals are
 * accepted again). TIMEOUT_NOW is re-sent with each heartbeat in case it was
 * lost. A leader that started a transfer never serves lease reads again in
 * that term, since the target's forced election ignores leases.
 */
#include "raft/raft_int.h"

int transfer_start(struct raft *r, uint64_t to)
{
    if (r->role != RAFT_LEADER)
        return err_set(&r->err, -TRINE_ENOT_LEADER, "raft: transfer needs the leader");
    if (to == r->id) return 0;
    struct progress *pr = progress_get(r, to);
    if (!pr || !pr->voter)
        return err_set(&r->err, -TRINE_EINVALID, "raft: transfer target %llu is not a voter",
                       (unsigned long long)to);
    if (r->transfer_target == to) return 0;
    r->transfer_target = to;
    r->transfer_due_ms = r->now_ms + r->cfg.election_timeout_ms;
    r->transfer_sent = false;
    r->lease_off = true;
    return 0;
}

void transfer_maybe_send(struct raft *r, struct progress *pr)
{
    if (r->transfer_target != pr->id || r->transfer_sent || pr->match != r->log.last) return;
    if (raft_out(r, RAFT_MSG_TIMEOUT_NOW, pr->id)) r->transfer_sent = true;
}

void transfer_tick(struct raft *r)
{
    if (r->transfer_target && r->now_ms >= r->transfer_due_ms) transfer_abort(r);
}

void transfer_abort(struct raft *r)
{
    r->transfer_target = 0;
    r->transfer_sent = false;
}

void transfer_recv_timeout_now(struct raft *r, const struct raft_msg *m)
{
    if (r->role == RAFT_LEADER || m->from != r->leader) return;
    if (!election_self_voter(r)) return;
    election_campaign(r, false, true);
}
