/*
 * progress.c - the leader's replication state per member (etcd's Progress):
 *
 *   PROBE      next is a guess; at most one append is out until an answer or a
 *              heartbeat response comes back; rejections walk next back using
 *              the follower's conflict hints.
 *   REPLICATE  next runs ahead of match; appends are pipelined, at most
 *              cfg.inflight_max in flight (a ring of the last index each one
 *              carried, freed by acknowledgements).
 *   SNAPSHOT   a snapshot was sent; nothing else goes out until it is
 *              acknowledged, reported, or snapshot_due_ms passes.
 *
 * Invariants: match < next; match only grows within a term; in REPLICATE the
 * in-flight ring holds increasing indexes, all >= match.
 */
#include <string.h>

#include "raft/raft_int.h"

int progress_slot(const struct raft *r, uint64_t id)
{
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id == id) return (int)i;
    return -1;
}

struct progress *progress_get(struct raft *r, uint64_t id)
{
    int s = progress_slot(r, id);
    return s < 0 ? NULL : &r->prs[s];
}

void progress_reset(struct raft *r, struct progress *pr)
{
    pr->state = PR_PROBE;
    pr->probe_sent = false;
    pr->recent_active = false;
    pr->match = 0;
    pr->next = r->log.last + 1;
    pr->commit_sent = 0;
    pr->pending_snapshot = 0;
    pr->snapshot_due_ms = 0;
    pr->ack_round = 0;
    pr->infl_head = pr->infl_count = 0;
}

void progress_become_probe(struct progress *pr)
{
    if (pr->state == PR_SNAPSHOT) {
        uint64_t n = pr->pending_snapshot + 1;
        pr->next = pr->match + 1 > n ? pr->match + 1 : n;
    } else {
        pr->next = pr->match + 1;
    }
    pr->state = PR_PROBE;
    pr->probe_sent = false;
    pr->pending_snapshot = 0;
    pr->infl_head = pr->infl_count = 0;
}

void progress_become_replicate(struct progress *pr)
{
    pr->state = PR_REPLICATE;
    pr->next = pr->match + 1;
    pr->probe_sent = false;
    pr->infl_head = pr->infl_count = 0;
}

void progress_become_snapshot(struct raft *r, struct progress *pr, uint64_t index)
{
    pr->state = PR_SNAPSHOT;
    pr->pending_snapshot = index;
    pr->snapshot_due_ms = r->now_ms + 2 * r->cfg.election_timeout_ms;
    pr->probe_sent = false;
    pr->infl_head = pr->infl_count = 0;
}

bool progress_paused(const struct raft *r, const struct progress *pr)
{
    switch (pr->state) {
    case PR_PROBE:
        return pr->probe_sent;
    case PR_REPLICATE:
        return pr->infl_count >= r->cfg.inflight_max;
    default:
        return true;
    }
}

void progress_sent(struct raft *r, struct progress *pr, uint64_t last_index, uint32_t n)
{
    if (pr->state == PR_REPLICATE) {
        if (n == 0) return;
        pr->next = last_index + 1;
        uint32_t slot = (pr->infl_head + pr->infl_count) % r->cfg.inflight_max;
        pr->infl[slot] = last_index;
        pr->infl_count++;
    } else if (pr->state == PR_PROBE) {
        pr->probe_sent = true;
    }
}

static void free_le(struct raft *r, struct progress *pr, uint64_t index)
{
    while (pr->infl_count > 0 && pr->infl[pr->infl_head] <= index) {
        pr->infl_head = (pr->infl_head + 1) % r->cfg.inflight_max;
        pr->infl_count--;
    }
}

void progress_free_first(struct raft *r, struct progress *pr)
{
    if (pr->infl_count == 0) return;
    pr->infl_head = (pr->infl_head + 1) % r->cfg.inflight_max;
    pr->infl_count--;
}

bool progress_ack(struct raft *r, struct progress *pr, uint64_t index)
{
    bool grew = false;
    if (index > pr->match) {
        pr->match = index;
        grew = true;
    }
    if (pr->next < index + 1) pr->next = index + 1;
    pr->probe_sent = false;
    switch (pr->state) {
    case PR_PROBE:
        progress_become_replicate(pr);
        break;
    case PR_SNAPSHOT:
        if (pr->match >= pr->pending_snapshot) {
            progress_become_probe(pr);
            progress_become_replicate(pr);
        }
        break;
    default:
        free_le(r, pr, index);
        break;
    }
    return grew;
}

bool progress_reject(struct progress *pr, uint64_t rejected, uint64_t match_hint)
{
    if (pr->state == PR_REPLICATE) {
        if (rejected <= pr->match) return false; /* stale */
        progress_become_probe(pr);
        return true;
    }
    if (pr->state != PR_PROBE) return false;
    if (pr->next - 1 != rejected) return false; /* stale */
    uint64_t n = rejected < match_hint + 1 ? rejected : match_hint + 1;
    pr->next = n > pr->match + 1 ? n : pr->match + 1;
    pr->probe_sent = false;
    return true;
}

void progress_rebuild(struct raft *r)
{
    struct progress old[RAFT_SERVERS_MAX];
    uint32_t n_old = r->n_prs;
    memcpy(old, r->prs, sizeof(old[0]) * n_old);
    r->n_prs = r->conf.n;
    for (uint32_t i = 0; i < r->conf.n; i++) {
        struct progress *pr = &r->prs[i];
        uint64_t id = r->conf.servers[i].id;
        uint32_t k = 0;
        while (k < n_old && old[k].id != id)
            k++;
        if (k < n_old) {
            *pr = old[k];
        } else {
            memset(pr, 0, sizeof(*pr));
            pr->id = id;
            progress_reset(r, pr);
            if (id == r->id && r->role == RAFT_LEADER) {
                pr->match = r->log.persisted;
                pr->state = PR_REPLICATE;
            }
        }
        pr->voter = r->conf.servers[i].role == RAFT_VOTER;
    }
}
