/*
 * replication.c - log replication (dissertation 3.5, 3.6, 10.2.1): the
 * leader's appends and heartbeats, the follower's append handling, and the
 * commit rule.
 *
 * Invariants:
 *   - Commit rule (dissertation Figure 3.7, paper Figure 8): the leader
 *     advances commit only to an index replicated on a majority of voters
 *     whose entry is of the leader's current term; earlier-term entries are
 *     committed indirectly, never by counting.
 *   - A follower never truncates at or below its commit index, and answers
 *     an append only with indexes it holds (the answer leaves after the fsync).
 *   - A follower's commit never exceeds the last entry it verified against the
 *     leader: min(leader commit, last new entry) for appends, min(commit,
 *     match) as sent by the leader for heartbeats.
 *   - Appends carry at most msg_entries_max entries / msg_bytes_max bytes.
 */
#include <stddef.h>

#include "raft/raft_int.h"

void repl_commit_to(struct raft *r, uint64_t commit)
{
    if (commit <= r->log.commit) return;
    r->log.commit = commit;
    if (r->role == RAFT_LEADER) {
        read_on_term_commit(r);
        conf_on_commit(r);
    }
}

void repl_maybe_commit(struct raft *r)
{
    uint64_t m[RAFT_SERVERS_MAX];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->n_prs; i++) {
        const struct progress *pr = &r->prs[i];
        if (!pr->voter) continue;
        uint64_t v = pr->id == r->id ? r->log.persisted : pr->match;
        uint32_t k = n++;
        while (k > 0 && m[k - 1] < v) { /* insertion sort, descending */
            m[k] = m[k - 1];
            k--;
        }
        m[k] = v;
    }
    if (n == 0) return;
    uint64_t idx = m[n / 2]; /* the (n/2+1)-th largest: held by a majority */
    if (idx > r->log.commit && log_term_or0(r, idx) == r->term) repl_commit_to(r, idx);
}

/* One append to pr from pr->next; false if nothing could be sent. */
static bool send_append(struct raft *r, struct progress *pr)
{
    uint64_t prev = pr->next - 1, prev_term = 0;
    int rc = log_term(r, prev, &prev_term);
    if (rc == -TRINE_ESTALE) return snapshot_send(r, pr);
    if (rc < 0) {
        err_set(&r->err, rc, "raft: reading term %llu failed", (unsigned long long)prev);
        return false;
    }
    const struct raft_entry *e = NULL;
    uint32_t n = 0;
    if (pr->next <= r->log.last) {
        rc = log_slice(r, pr->next, pr->next + r->cfg.msg_entries_max, r->cfg.msg_entries_max,
                       r->cfg.msg_bytes_max, &e, &n);
        if (rc == -TRINE_ESTALE) return snapshot_send(r, pr);
        if (rc < 0) err_set(&r->err, rc, "raft: reading entries from storage failed");
        if (rc < 0 || n == 0) return false;
    }
    struct raft_msg *m = raft_out(r, RAFT_MSG_APPEND, pr->id);
    if (!m) return false;
    m->index = prev;
    m->log_term = prev_term;
    m->commit = r->log.commit;
    m->entries = e;
    m->n_entries = n;
    progress_sent(r, pr, prev + n, n);
    if (r->log.commit > pr->commit_sent) pr->commit_sent = r->log.commit;
    pr->resend_due = false;
    return true;
}

static void send_to(struct raft *r, struct progress *pr)
{
    for (uint32_t k = 0; k <= r->cfg.inflight_max; k++) {
        if (raft_out_full(r, 1) || progress_paused(r, pr)) return;
        if (pr->next > r->log.last) {
            /* Nothing new: an empty append still carries the commit index, and after a
             * heartbeat showed the follower behind it makes a lost append get rejected. */
            if (pr->commit_sent < r->log.commit || pr->resend_due) send_append(r, pr);
            return;
        }
        if (!send_append(r, pr)) return;
    }
}

void repl_flush(struct raft *r)
{
    for (uint32_t i = 0; i < r->n_prs; i++)
        if (r->prs[i].id != r->id) send_to(r, &r->prs[i]);
    if (r->transfer_target) {
        struct progress *pr = progress_get(r, r->transfer_target);
        if (pr) transfer_maybe_send(r, pr);
    }
    if (r->round_wanted) {
        r->round_wanted = false;
        repl_send_heartbeats(r, read_new_round(r));
    }
}

void repl_send_heartbeats(struct raft *r, uint64_t round)
{
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct progress *pr = &r->prs[i];
        if (pr->id == r->id) continue;
        struct raft_msg *m = raft_out(r, RAFT_MSG_HEARTBEAT, pr->id);
        if (!m) return;
        m->commit = pr->match < r->log.commit ? pr->match : r->log.commit;
        m->context = round;
        if (m->commit > pr->commit_sent) pr->commit_sent = m->commit;
    }
}

static void reply_append(struct raft *r, const struct raft_msg *m, uint64_t index)
{
    struct raft_msg *o = raft_out(r, RAFT_MSG_APPEND_RESP, m->from);
    if (o) o->index = index;
}

/* Entries [from, last] are about to be dropped: tell the caller if some may be its own. */
static void note_rollback(struct raft *r, uint64_t from, bool exact)
{
    struct raft_log *lg = &r->log;
    bool local = from < lg->tail_first; /* evicted entries: unknown, let the caller look */
    for (uint64_t i = from > lg->tail_first ? from : lg->tail_first; !local && i <= lg->last; i++)
        local = (lg->ents[i & lg->mask].flags & RAFT_ENTRY_LOCAL) != 0;
    if (!local || from > lg->last) return;
    if (r->rollback_from == 0) {
        r->rollback_from = from;
        r->rollback_to = lg->last;
        r->rollback_exact = exact;
        return;
    }
    if (from < r->rollback_from) r->rollback_from = from;
    if (lg->last > r->rollback_to) r->rollback_to = lg->last;
    r->rollback_exact = r->rollback_exact && exact;
}

void repl_note_rollback(struct raft *r, uint64_t from, bool exact)
{
    note_rollback(r, from, exact);
}

void repl_recv_append(struct raft *r, const struct raft_msg *m)
{
    struct raft_log *lg = &r->log;
    if (m->index < lg->commit) {
        reply_append(r, m, lg->commit);
        return;
    }
    uint64_t t = 0;
    if (m->index > lg->last || log_term(r, m->index, &t) < 0 || t != m->log_term) {
        uint64_t hint = m->index < lg->last ? m->index : lg->last;
        hint = log_find_conflict_by_term(r, hint, m->log_term);
        struct raft_msg *o = raft_out(r, RAFT_MSG_APPEND_RESP, m->from);
        if (!o) return;
        o->reject = true;
        o->index = m->index;
        o->reject_hint = hint;
        o->conflict_term = log_term_or0(r, hint);
        return;
    }
    uint32_t k = 0;
    for (; k < m->n_entries; k++) {
        const struct raft_entry *e = &m->entries[k];
        if (e->index > lg->last) break;
        uint64_t et;
        int rc = log_term(r, e->index, &et);
        if (rc < 0) {
            err_set(&r->err, rc, "raft: reading term %llu failed", (unsigned long long)e->index);
            return;
        }
        if (et == e->term) continue;
        if (e->index <= lg->commit) {
            err_set(&r->err, -TRINE_ECORRUPT,
                    "raft: leader %llu conflicts with committed entry %llu",
                    (unsigned long long)m->from, (unsigned long long)e->index);
            return;
        }
        note_rollback(r, e->index, true);
        bool conf_hit = r->conf_index >= e->index;
        log_truncate(r, e->index);
        if (conf_hit) conf_rebuild(r);
        break;
    }
    for (; k < m->n_entries; k++) {
        const struct raft_entry *e = &m->entries[k];
        if (log_append(r, e->term, e->type, 0, e->data, e->len) < 0) break; /* tail full */
        if (e->type == RAFT_ENTRY_CONF) {
            struct raft_conf c;
            if (raft_conf_decode(e->data, e->len, &c) == 0) conf_apply(r, &c, e->index);
        }
    }
    uint64_t last_new = m->index + k;
    repl_commit_to(r, m->commit < last_new ? m->commit : last_new);
    reply_append(r, m, last_new);
}

void repl_recv_append_resp(struct raft *r, const struct raft_msg *m)
{
    struct progress *pr = progress_get(r, m->from);
    if (!pr) return;
    pr->recent_active = true;
    if (m->reject) {
        uint64_t hint = m->reject_hint;
        if (m->conflict_term > 0) hint = log_find_conflict_by_term(r, hint, m->conflict_term);
        progress_reject(pr, m->index, hint);
        return;
    }
    if (m->index > r->log.last) return;
    if (progress_ack(r, pr, m->index)) repl_maybe_commit(r);
}

void repl_recv_heartbeat(struct raft *r, const struct raft_msg *m)
{
    repl_commit_to(r, m->commit < r->log.last ? m->commit : r->log.last);
    struct raft_msg *o = raft_out(r, RAFT_MSG_HEARTBEAT_RESP, m->from);
    if (o) o->context = m->context;
}

void repl_recv_heartbeat_resp(struct raft *r, const struct raft_msg *m)
{
    struct progress *pr = progress_get(r, m->from);
    if (!pr) return;
    pr->recent_active = true;
    if (m->context > pr->ack_round) pr->ack_round = m->context;
    pr->probe_sent = false;
    if (pr->state == PR_REPLICATE && pr->infl_count >= r->cfg.inflight_max)
        progress_free_first(r, pr);
    if (pr->match < r->log.last) pr->resend_due = true;
    read_on_ack(r);
}
