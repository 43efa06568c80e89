/*
 * readindex.c - linearizable reads without log writes (dissertation 6.4):
 * ReadIndex on the leader, on followers (forwarded to the leader), and
 * optional leader-lease reads (6.4.1).
 *
 * ReadIndex: the leader records its commit index as the read index, then
 * starts a heartbeat round; once a majority of voters acknowledged that round
 * (or a later one) it was still the leader when the read arrived, so any
 * state at or after the read index is linearizable. A new leader first waits
 * until an entry of its own term commits (its commit index is only then
 * known to be current); reads that arrive earlier wait in the queue.
 * Requests from followers are answered with RAFT_MSG_READ_INDEX_RESP and
 * surface in the follower's u.reads; the caller serves once applied >= index.
 *
 * Heartbeat rounds are numbered; round_time keeps the send time of the last
 * ROUND_TIMES rounds for leases. The queue is a FIFO of cfg.reads_max
 * requests; all reads queued between two flushes share one round.
 */
#include "raft/raft_int.h"

static struct read_req *req_at(struct raft *r, uint32_t k)
{
    return &r->reads[(r->reads_head + k) % r->cfg.reads_max];
}

static void deliver(struct raft *r, uint64_t context, uint64_t from, uint64_t index)
{
    if (from == r->id) {
        raft_read_out(r, context, index, 0);
        return;
    }
    struct raft_msg *m = raft_out(r, RAFT_MSG_READ_INDEX_RESP, from);
    if (!m) return;
    m->context = context;
    m->index = index;
}

static void refuse(struct raft *r, uint64_t context, uint64_t from)
{
    if (from == r->id) {
        raft_read_out(r, context, 0, -TRINE_ENOT_LEADER);
        return;
    }
    struct raft_msg *m = raft_out(r, RAFT_MSG_READ_INDEX_RESP, from);
    if (!m) return;
    m->context = context;
    m->reject = true;
}

uint64_t read_new_round(struct raft *r)
{
    r->round++;
    r->round_time[r->round % ROUND_TIMES] = r->now_ms;
    return r->round;
}

bool read_lease_valid(struct raft *r)
{
    if (!r->cfg.lease_reads || r->role != RAFT_LEADER || r->lease_off ||
        r->log.commit < r->term_start)
        return false;
    uint64_t a[RAFT_SERVERS_MAX];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        const struct progress *pr = &r->prs[i];
        if (!pr->voter) continue;
        uint64_t v = pr->id == r->id ? r->round : pr->ack_round;
        uint32_t k = n++;
        while (k > 0 && a[k - 1] < v) {
            a[k] = a[k - 1];
            k--;
        }
        a[k] = v;
    }
    if (n == 0) return false;
    uint64_t rnd = a[n / 2];
    if (rnd == 0 || r->round - rnd >= ROUND_TIMES) return false;
    uint64_t sent = r->round_time[rnd % ROUND_TIMES];
    return r->now_ms < sent + r->cfg.election_timeout_ms - r->cfg.lease_drift_ms;
}

void read_on_ack(struct raft *r)
{
    uint32_t q = election_quorum(r);
    while (r->reads_count > 0) {
        struct read_req *req = req_at(r, 0);
        if (req->index == 0) return;
        uint32_t acks = 0;
        for (uint32_t i = 0; i < r->n_prs; i++) {
            const struct progress *pr = &r->prs[i];
            if (pr->voter && (pr->id == r->id || pr->ack_round >= req->round)) acks++;
        }
        if (acks < q) return;
        deliver(r, req->context, req->from, req->index);
        r->reads_head = (r->reads_head + 1) % r->cfg.reads_max;
        r->reads_count--;
    }
}

void read_on_term_commit(struct raft *r)
{
    if (r->log.commit < r->term_start) return;
    bool any = false;
    for (uint32_t k = 0; k < r->reads_count; k++) {
        struct read_req *req = req_at(r, k);
        if (req->index != 0) continue;
        req->index = r->log.commit;
        req->round = r->round + 1;
        any = true;
    }
    if (!any) return;
    r->round_wanted = true;
    read_on_ack(r);
}

int read_request(struct raft *r, uint64_t context, uint64_t from)
{
    if (r->role != RAFT_LEADER) {
        if (from != r->id) {
            refuse(r, context, from);
            return 0;
        }
        if (r->leader == 0)
            return err_set(&r->err, -TRINE_ENOT_LEADER, "raft: no leader known for a read");
        struct raft_msg *m = raft_out(r, RAFT_MSG_READ_INDEX, r->leader);
        if (!m) return err_set(&r->err, -TRINE_EBUSY, "raft: outbox full");
        m->context = context;
        return 0;
    }
    bool committed = r->log.commit >= r->term_start;
    if (committed && read_lease_valid(r)) {
        deliver(r, context, from, r->log.commit);
        return 0;
    }
    if (r->reads_count == r->cfg.reads_max) {
        if (from != r->id) {
            refuse(r, context, from);
            return 0;
        }
        return err_set(&r->err, -TRINE_EBUSY, "raft: %u reads pending", r->reads_count);
    }
    struct read_req *req = req_at(r, r->reads_count++);
    req->context = context;
    req->from = from;
    req->index = committed ? r->log.commit : 0;
    req->round = committed ? r->round + 1 : 0;
    if (committed) {
        r->round_wanted = true;
        read_on_ack(r); /* a single voter needs no round */
    }
    return 0;
}

void read_fail_all(struct raft *r)
{
    while (r->reads_count > 0) {
        struct read_req *req = req_at(r, 0);
        refuse(r, req->context, req->from);
        r->reads_head = (r->reads_head + 1) % r->cfg.reads_max;
        r->reads_count--;
    }
    r->round_wanted = false;
}

void read_recv_read_index(struct raft *r, const struct raft_msg *m)
{
    read_request(r, m->context, m->from);
}

void read_recv_read_index_resp(struct raft *r, const struct raft_msg *m)
{
    raft_read_out(r, m->context, m->index, m->reject ? -TRINE_ENOT_LEADER : 0);
}
