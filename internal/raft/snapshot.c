/*
 * snapshot.c - snapshots between leader and follower (dissertation 5.1-5.3).
 *
 * The core handles only metadata (index, term, conf). The caller owns the
 * state-machine image: it attaches the image of its latest snapshot to every
 * RAFT_MSG_SNAPSHOT it sends, and on the receiving side keeps the image that
 * came with the message until the update that installs it (u.snapshot).
 *
 * Invariants:
 *   - A leader sends a snapshot only when the entries a follower needs are
 *     compacted, then waits (progress SNAPSHOT) for the acknowledgement, a
 *     report, or a timeout of two election timeouts.
 *   - A follower installs a snapshot only beyond its commit index. If its log
 *     already holds the snapshot's last entry it just advances commit;
 *     otherwise the whole log is replaced and everything above the old commit
 *     index is reported as a possible (inexact) rollback.
 */
#include "raft/raft_int.h"

bool snapshot_send(struct raft *r, struct progress *pr)
{
    if (!r->snap_send_valid) {
        int rc = r->st.snapshot(r->st.ctx, &r->snap_send);
        if (rc < 0) {
            err_set(&r->err, rc, "raft: reading the snapshot metadata failed");
            return false;
        }
        r->snap_send_valid = true;
    }
    if (r->snap_send.index == 0 || r->snap_send.index < pr->next - 1) return false;
    struct raft_msg *m = raft_out(r, RAFT_MSG_SNAPSHOT, pr->id);
    if (!m) return false;
    m->index = r->snap_send.index;
    m->log_term = r->snap_send.term;
    m->commit = r->log.commit;
    m->snapshot = &r->snap_send;
    progress_become_snapshot(r, pr, r->snap_send.index);
    return true;
}

static void reply(struct raft *r, const struct raft_msg *m, uint64_t index)
{
    struct raft_msg *o = raft_out(r, RAFT_MSG_APPEND_RESP, m->from);
    if (o) o->index = index;
}

void snapshot_recv(struct raft *r, const struct raft_msg *m)
{
    const struct raft_snapshot_meta *s = m->snapshot;
    struct raft_log *lg = &r->log;
    if (s->index <= lg->commit) {
        reply(r, m, lg->commit);
        return;
    }
    if (s->index <= lg->last && log_term_or0(r, s->index) == s->term) {
        repl_commit_to(r, s->index);
        reply(r, m, s->index);
        return;
    }
    if (lg->last > lg->commit) repl_note_rollback(r, lg->commit + 1, false);
    log_install_snapshot(r, s);
    conf_apply(r, &s->conf, s->index);
    r->snap_install = *s;
    r->snap_install_pending = true;
    reply(r, m, s->index);
}

void snapshot_tick(struct raft *r)
{
    for (uint32_t i = 0; i < r->n_prs; i++) {
        struct progress *pr = &r->prs[i];
        if (pr->state == PR_SNAPSHOT && r->now_ms >= pr->snapshot_due_ms) {
            pr->pending_snapshot = 0; /* assume lost: probe from match again */
            progress_become_probe(pr);
        }
    }
}

int snapshot_report(struct raft *r, uint64_t to, bool ok)
{
    if (r->role != RAFT_LEADER) return 0;
    struct progress *pr = progress_get(r, to);
    if (!pr || pr->state != PR_SNAPSHOT) return 0;
    if (!ok) pr->pending_snapshot = 0;
    /* On success, probe from after the snapshot and wait for the follower's answer. On
     * failure wait for a heartbeat response before trying again (as etcd does): resending at
     * once lets a dead link or duplicated reports turn into a storm of snapshots. */
    progress_become_probe(pr);
    if (!ok) pr->probe_sent = true;
    return 0;
}
