/*
 * raft.c - instance lifecycle, the event entry points, message dispatch by
 * term, and raft_ready (assembling the update of raft.h's contract).
 *
 * Invariants kept here:
 *   - Every entry point first moves now_ms forward and resets the scratch, so
 *     pointers handed out by the previous raft_ready die exactly at the next
 *     call, as raft.h promises.
 *   - Messages carrying entries are built only inside raft_ready (repl_flush),
 *     so nothing can evict an entry between building a message and the caller
 *     reading it.
 *   - Messages from the network are validated before they touch any state;
 *     bad ones are ignored with -TRINE_EBAD_REQUEST.
 */
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "raft/raft_int.h"

void raft_config_default(struct raft_config *cfg, uint64_t id)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->id = id;
    cfg->election_timeout_ms = 1000;
    cfg->heartbeat_ms = 100;
    cfg->seed = id;
    cfg->pre_vote = true;
    cfg->check_quorum = true;
    cfg->lease_reads = false;
    cfg->lease_drift_ms = 100;
    cfg->inflight_max = 16;
    cfg->msg_entries_max = 64;
    cfg->msg_bytes_max = (uint64_t)256 * 1024;
    cfg->tail_entries = 512;
    cfg->tail_bytes = (uint64_t)1024 * 1024;
    cfg->entry_bytes_max = cfg->tail_bytes / 4;
    cfg->apply_batch_max = 256;
    cfg->msgs_max = 128;
    cfg->reads_max = 256;
    cfg->catchup_lag_max = 64;
}

static int check_config(const struct raft_config *c, struct trine_err *err)
{
    struct {
        bool bad;
        const char *what;
    } rules[] = {
        {c->id == 0, "id must be nonzero"},
        {c->election_timeout_ms == 0, "election_timeout_ms must be > 0"},
        {c->election_ranks && c->election_rank >= c->election_ranks,
         "election_rank must be < election_ranks"},
        {c->election_ranks > 1 && !c->pre_vote,
         "election_ranks needs pre_vote (a low-ranked node with a stale log would otherwise "
         "keep bumping the term and resetting everyone's timer)"},
        {c->heartbeat_ms == 0 || c->heartbeat_ms >= c->election_timeout_ms,
         "heartbeat_ms must be in (0, election_timeout_ms)"},
        {c->lease_reads && c->lease_drift_ms >= c->election_timeout_ms,
         "lease_drift_ms must be < election_timeout_ms"},
        {c->inflight_max == 0 || c->inflight_max > RAFT_INFLIGHT_MAX,
         "inflight_max must be in [1, RAFT_INFLIGHT_MAX]"},
        {c->tail_entries < 16 || (c->tail_entries & (c->tail_entries - 1)) != 0,
         "tail_entries must be a power of two >= 16"},
        {c->msg_entries_max == 0 || c->msg_entries_max > c->tail_entries,
         "msg_entries_max must be in [1, tail_entries]"},
        {c->msg_bytes_max == 0, "msg_bytes_max must be > 0"},
        {c->entry_bytes_max == 0 || c->entry_bytes_max > c->tail_bytes / 2 ||
             c->entry_bytes_max > UINT32_MAX,
         "entry_bytes_max must be in [1, tail_bytes / 2]"},
        {c->apply_batch_max == 0, "apply_batch_max must be > 0"},
        {c->msgs_max < 8, "msgs_max must be >= 8"},
        {c->reads_max == 0, "reads_max must be > 0"},
    };
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
        if (rules[i].bad) return err_set(err, -TRINE_EINVALID, "raft config: %s", rules[i].what);
    return 0;
}

void raft_destroy(struct raft *r)
{
    if (!r) return;
    log_destroy(r);
    free(r->out);
    free(r->reads);
    free(r->reads_out);
    free(r);
}

int raft_create(struct raft **out, const struct raft_config *cfg, const struct raft_storage *st,
                const struct raft_init_state *init, uint64_t now_ms, struct trine_err *err)
{
    *out = NULL;
    int rc = check_config(cfg, err);
    if (rc < 0) return rc;
    if (!st || !st->term || !st->entries || !st->first_index || !st->last_index || !st->snapshot)
        return err_set(err, -TRINE_EINVALID, "raft: storage callbacks missing");
    struct raft *r = calloc(1, sizeof(*r));
    if (!r) return err_set(err, -TRINE_ENOMEM, "raft: out of memory");
    r->cfg = *cfg;
    r->st = *st;
    r->id = cfg->id;
    r->now_ms = now_ms;
    rng_seed(&r->rng, cfg->seed ^ (cfg->id * 0x9e3779b97f4a7c15u));
    rc = log_create(r);
    r->out = calloc(cfg->msgs_max, sizeof(*r->out));
    r->reads = calloc(cfg->reads_max, sizeof(*r->reads));
    r->reads_out_cap = cfg->reads_max;
    r->reads_out = calloc(r->reads_out_cap, sizeof(*r->reads_out));
    if (rc < 0 || !r->out || !r->reads || !r->reads_out) {
        raft_destroy(r);
        return err_set(err, -TRINE_ENOMEM, "raft: out of memory");
    }
    r->term = init->hs.term;
    r->vote = init->hs.vote;
    rc = log_restore(r);
    if (rc == 0 && (init->applied < r->log.snap.index || init->applied > r->log.last))
        rc = err_set(&r->err, -TRINE_EINVALID,
                     "raft: applied index %llu outside [snapshot %llu, last %llu]",
                     (unsigned long long)init->applied, (unsigned long long)r->log.snap.index,
                     (unsigned long long)r->log.last);
    if (rc < 0) {
        *err = r->err;
        raft_destroy(r);
        return rc;
    }
    r->log.commit = r->log.delivered = r->log.applied = init->applied;

    conf_apply(r, &r->log.snap.conf, r->log.snap.index);
    if (r->log.last > r->log.snap.index) conf_rebuild(r);
    if (r->log.last == 0 && init->bootstrap && init->bootstrap->n > 0) {
        uint8_t buf[RAFT_CONF_BYTES_MAX];
        struct raft_conf c;
        uint32_t n = raft_conf_encode(init->bootstrap, buf);
        if (raft_conf_decode(buf, n, &c) < 0) {
            raft_destroy(r);
            return err_set(err, -TRINE_EINVALID, "raft: invalid bootstrap configuration");
        }
        if (r->term < 1) {
            r->term = 1;
            r->hs_dirty = true;
        }
        rc = log_append(r, 1, RAFT_ENTRY_CONF, 0, buf, n);
        TRINE_ASSERT(rc == 0);
        conf_apply(r, &c, 1);
    }
    r->role = RAFT_FOLLOWER;
    r->vote_guard_ms = cfg->lease_reads ? now_ms + cfg->election_timeout_ms : 0;
    election_reset_timer(r);
    r->soft_role = 0xff; /* report the soft state in the first update */
    *out = r;
    return 0;
}

/* ---- output ---------------------------------------------------------------------------- */

bool raft_out_full(const struct raft *r, uint32_t reserve)
{
    return r->n_out + reserve > r->cfg.msgs_max;
}

struct raft_msg *raft_out(struct raft *r, uint8_t type, uint64_t to)
{
    if (r->n_out >= r->cfg.msgs_max) return NULL;
    struct raft_msg *m = &r->out[r->n_out++];
    memset(m, 0, sizeof(*m));
    m->type = type;
    m->from = r->id;
    m->to = to;
    m->term = r->term;
    return m;
}

void raft_read_out(struct raft *r, uint64_t context, uint64_t index, int status)
{
    if (r->n_reads_out >= r->reads_out_cap) return; /* bounded; the caller times out */
    struct raft_read *rd = &r->reads_out[r->n_reads_out++];
    rd->context = context;
    rd->index = index;
    rd->status = status;
}

/* ---- entry points ---------------------------------------------------------------------- */

static void enter(struct raft *r, uint64_t now_ms)
{
    if (now_ms > r->now_ms) r->now_ms = now_ms;
    log_scratch_reset(r);
    err_clear(&r->err);
}

int raft_tick(struct raft *r, uint64_t now_ms)
{
    enter(r, now_ms);
    if (r->role == RAFT_LEADER) {
        if (r->now_ms >= r->heartbeat_due_ms) {
            r->heartbeat_due_ms = r->now_ms + r->cfg.heartbeat_ms;
            r->transfer_sent = false; /* resend TIMEOUT_NOW if it was lost */
            repl_send_heartbeats(r, read_new_round(r));
        }
        if (r->cfg.check_quorum && r->now_ms >= r->cq_due_ms) {
            uint32_t active = 0;
            for (uint32_t i = 0; i < r->n_prs; i++) {
                struct progress *pr = &r->prs[i];
                if (pr->voter && (pr->id == r->id || pr->recent_active)) active++;
                if (pr->id != r->id) pr->recent_active = false;
            }
            r->cq_due_ms = r->now_ms + r->cfg.election_timeout_ms;
            if (active < election_quorum(r)) {
                election_become_follower(r, r->term, 0);
                return 0;
            }
        }
        transfer_tick(r);
        snapshot_tick(r);
        return 0;
    }
    election_tick(r);
    return 0;
}

static int check_msg(const struct raft *r, const struct raft_msg *m)
{
    if (m->type < RAFT_MSG_APPEND || m->type > RAFT_MSG_TYPE_MAX) return -1;
    if (m->to != r->id || m->from == 0 || m->from == r->id) return -1;
    if (m->n_entries > 0) {
        if (m->type != RAFT_MSG_APPEND || !m->entries) return -1;
        uint64_t prev_term = m->log_term;
        for (uint32_t k = 0; k < m->n_entries; k++) {
            const struct raft_entry *e = &m->entries[k];
            if (e->index != m->index + 1 + k || e->term < prev_term || e->term > m->term) return -1;
            if (e->type > RAFT_ENTRY_CONF || e->len > r->cfg.entry_bytes_max) return -1;
            if (e->len > 0 && !e->data) return -1;
            struct raft_conf c;
            if (e->type == RAFT_ENTRY_CONF && raft_conf_decode(e->data, e->len, &c) < 0) return -1;
            prev_term = e->term;
        }
    }
    if (m->type == RAFT_MSG_SNAPSHOT) {
        const struct raft_snapshot_meta *s = m->snapshot;
        if (!s || s->index == 0 || s->term == 0 || s->term > m->term ||
            s->conf.n > RAFT_SERVERS_MAX)
            return -1;
        for (uint32_t i = 0; i < s->conf.n; i++)
            if (s->conf.servers[i].id == 0 ||
                (s->conf.servers[i].role != RAFT_VOTER && s->conf.servers[i].role != RAFT_LEARNER))
                return -1;
    }
    return 0;
}

static bool from_leader_type(uint8_t t)
{
    return t == RAFT_MSG_APPEND || t == RAFT_MSG_HEARTBEAT || t == RAFT_MSG_SNAPSHOT;
}

/* Dissertation 3.3 / etcd's Step: compare terms before anything else. Returns false if the
 * message is done with (ignored or answered). */
static bool step_term(struct raft *r, const struct raft_msg *m)
{
    if (m->term > r->term) {
        if (m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE) {
            /* Dissertation 4.2.3: while a leader is alive, ignore campaigns (a node back from a
             * partition cannot depose it), unless leadership is being transferred to it. */
            if (m->context != RAFT_CTX_TRANSFER && election_in_lease(r)) return false;
        }
        if (m->type == RAFT_MSG_PREVOTE) return true; /* a pre-vote changes nothing */
        if (m->type == RAFT_MSG_PREVOTE_RESP && !m->reject) return true;
        election_become_follower(r, m->term, from_leader_type(m->type) ? m->from : 0);
        return true;
    }
    if (m->term < r->term) {
        if ((r->cfg.check_quorum || r->cfg.pre_vote) &&
            (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT)) {
            /* A stale leader (e.g. cut off while we moved on): tell it our term so it steps
             * down; with pre-vote it would otherwise never learn it. */
            raft_out(r, RAFT_MSG_APPEND_RESP, m->from);
        } else if (m->type == RAFT_MSG_PREVOTE || m->type == RAFT_MSG_VOTE) {
            /* Refuse with our term (Figure 3.1): a candidate stuck in a lower term, e.g. one
             * that we do not count as a voter, learns it and can campaign above us. */
            struct raft_msg *o = raft_out(
                r, m->type == RAFT_MSG_VOTE ? RAFT_MSG_VOTE_RESP : RAFT_MSG_PREVOTE_RESP, m->from);
            if (o) o->reject = true;
        }
        return false;
    }
    return true;
}

static void heard_from_leader(struct raft *r, const struct raft_msg *m)
{
    if (r->role != RAFT_FOLLOWER) election_become_follower(r, r->term, m->from);
    r->leader = m->from;
    r->last_heard_ms = r->now_ms;
    election_reset_timer(r);
}

int raft_recv(struct raft *r, uint64_t now_ms, const struct raft_msg *m)
{
    enter(r, now_ms);
    if (check_msg(r, m) < 0)
        return err_set(&r->err, -TRINE_EBAD_REQUEST, "raft: malformed %s from %llu",
                       raft_msg_type_name(m->type), (unsigned long long)m->from);
    if (!step_term(r, m)) return 0;
    switch (m->type) {
    case RAFT_MSG_APPEND:
    case RAFT_MSG_HEARTBEAT:
    case RAFT_MSG_SNAPSHOT:
        if (r->role == RAFT_LEADER) return 0; /* cannot happen: one leader per term */
        heard_from_leader(r, m);
        if (m->type == RAFT_MSG_APPEND)
            repl_recv_append(r, m);
        else if (m->type == RAFT_MSG_HEARTBEAT)
            repl_recv_heartbeat(r, m);
        else
            snapshot_recv(r, m);
        break;
    case RAFT_MSG_APPEND_RESP:
        if (r->role == RAFT_LEADER) repl_recv_append_resp(r, m);
        break;
    case RAFT_MSG_HEARTBEAT_RESP:
        if (r->role == RAFT_LEADER) repl_recv_heartbeat_resp(r, m);
        break;
    case RAFT_MSG_VOTE:
    case RAFT_MSG_PREVOTE:
        election_recv_vote(r, m);
        break;
    case RAFT_MSG_VOTE_RESP:
    case RAFT_MSG_PREVOTE_RESP:
        election_recv_vote_resp(r, m);
        break;
    case RAFT_MSG_TIMEOUT_NOW:
        transfer_recv_timeout_now(r, m);
        break;
    case RAFT_MSG_READ_INDEX:
        read_recv_read_index(r, m);
        break;
    case RAFT_MSG_READ_INDEX_RESP:
        read_recv_read_index_resp(r, m);
        break;
    default:
        break;
    }
    return r->err.code;
}

int raft_propose(struct raft *r, uint64_t now_ms, const void *data, uint32_t len, uint64_t *index,
                 uint64_t *term)
{
    enter(r, now_ms);
    if (r->role != RAFT_LEADER)
        return err_set(&r->err, -TRINE_ENOT_LEADER, "raft: not the leader (leader %llu)",
                       (unsigned long long)r->leader);
    if (r->transfer_target)
        return err_set(&r->err, -TRINE_EBUSY, "raft: leadership transfer in progress");
    if (len > r->cfg.entry_bytes_max)
        return err_set(&r->err, -TRINE_ETOO_LARGE, "raft: entry of %u bytes over %llu", len,
                       (unsigned long long)r->cfg.entry_bytes_max);
    int rc = log_append(r, r->term, RAFT_ENTRY_NORMAL, RAFT_ENTRY_LOCAL, data, len);
    if (rc < 0) return err_set(&r->err, rc, "raft: in-memory tail full of undurable entries");
    if (index) *index = r->log.last;
    if (term) *term = r->term;
    struct progress *self = progress_get(r, r->id);
    if (self) self->next = r->log.last + 1;
    return 0;
}

int raft_persisted(struct raft *r, uint64_t now_ms, uint64_t index, uint64_t term)
{
    enter(r, now_ms);
    struct raft_log *lg = &r->log;
    if (index <= lg->persisted || index > lg->last || index >= lg->emit_from) return 0;
    uint64_t t;
    if (log_term(r, index, &t) < 0 || t != term) return 0; /* overwritten since: stale */
    lg->persisted = index;
    if (r->role == RAFT_LEADER) {
        struct progress *self = progress_get(r, r->id);
        if (self && index > self->match) self->match = index;
        if (term == r->term && index >= r->term_start) r->leader_durable_new = index;
        repl_maybe_commit(r);
    }
    return 0;
}

int raft_applied(struct raft *r, uint64_t now_ms, uint64_t index)
{
    enter(r, now_ms);
    if (index > r->log.delivered)
        return err_set(&r->err, -TRINE_EINVALID, "raft: applied %llu beyond delivered %llu",
                       (unsigned long long)index, (unsigned long long)r->log.delivered);
    if (index > r->log.applied) r->log.applied = index;
    return 0;
}

int raft_read_index(struct raft *r, uint64_t now_ms, uint64_t context)
{
    enter(r, now_ms);
    return read_request(r, context, r->id);
}

int raft_transfer(struct raft *r, uint64_t now_ms, uint64_t to)
{
    enter(r, now_ms);
    return transfer_start(r, to);
}

int raft_conf_change(struct raft *r, uint64_t now_ms, enum raft_conf_op op, uint64_t id,
                     uint64_t *index)
{
    enter(r, now_ms);
    return conf_change(r, op, id, index);
}

int raft_report_snapshot(struct raft *r, uint64_t now_ms, uint64_t to, bool ok)
{
    enter(r, now_ms);
    return snapshot_report(r, to, ok);
}

int raft_campaign(struct raft *r, uint64_t now_ms)
{
    enter(r, now_ms);
    if (r->role == RAFT_LEADER || !election_self_voter(r)) return 0;
    election_campaign(r, r->cfg.pre_vote, false);
    return 0;
}

/* ---- ready ----------------------------------------------------------------------------- */

static uint64_t deadline(const struct raft *r)
{
    uint64_t d = UINT64_MAX;
    if (r->role == RAFT_LEADER) {
        d = r->heartbeat_due_ms;
        if (r->cfg.check_quorum && r->cq_due_ms < d) d = r->cq_due_ms;
        if (r->transfer_target && r->transfer_due_ms < d) d = r->transfer_due_ms;
        for (uint32_t i = 0; i < r->n_prs; i++)
            if (r->prs[i].state == PR_SNAPSHOT && r->prs[i].snapshot_due_ms < d)
                d = r->prs[i].snapshot_due_ms;
    } else if (election_self_voter(r)) {
        d = r->election_due_ms;
    }
    return d;
}

bool raft_ready(struct raft *r, struct raft_update *u)
{
    log_scratch_reset(r);
    r->snap_send_valid = false;
    memset(u, 0, sizeof(*u));
    struct raft_log *lg = &r->log;
    if (r->role == RAFT_LEADER) repl_flush(r);

    if (r->rollback_from) {
        u->rollback_from = r->rollback_from;
        u->rollback_to = r->rollback_to;
        u->rollback_exact = r->rollback_exact;
        r->rollback_from = 0;
    }
    if (r->snap_install_pending) {
        u->snapshot = &r->snap_install;
        r->snap_install_pending = false;
    }
    if (r->hs_dirty) {
        u->hs_changed = true;
        u->hs.term = r->term;
        u->hs.vote = r->vote;
        r->hs_dirty = false;
    }
    if (lg->emit_from <= lg->last) {
        TRINE_ASSERT(lg->emit_from >= lg->tail_first);
        u->entries = &lg->ents[lg->emit_from & lg->mask];
        u->n_entries = (uint32_t)(lg->last + 1 - lg->emit_from);
        lg->emit_from = lg->last + 1;
    }
    u->msgs = r->out;
    u->n_msgs = r->n_out;
    r->n_out = 0;

    uint64_t hi = lg->commit < lg->persisted ? lg->commit : lg->persisted;
    if (lg->delivered < hi) {
        const struct raft_entry *e;
        uint32_t n = 0;
        int rc =
            log_slice(r, lg->delivered + 1, hi + 1, r->cfg.apply_batch_max, UINT64_MAX, &e, &n);
        if (rc == 0 && n > 0) {
            u->committed = e;
            u->n_committed = n;
            lg->delivered += n;
        } else if (rc < 0) {
            err_set(&r->err, rc, "raft: reading committed entries from storage failed");
        }
    }
    u->reads = r->reads_out;
    u->n_reads = r->n_reads_out;
    r->n_reads_out = 0;
    if (r->leader_durable_new > r->leader_durable && r->role == RAFT_LEADER) {
        u->leader_durable_index = r->leader_durable_new;
        r->leader_durable = r->leader_durable_new;
    }
    u->role = r->role;
    u->term = r->term;
    u->leader = r->leader;
    u->commit = lg->commit;
    u->deadline_ms = deadline(r);
    bool soft = u->role != r->soft_role || u->term != r->soft_term || u->leader != r->soft_leader ||
                u->commit != r->soft_commit;
    r->soft_role = u->role;
    r->soft_term = u->term;
    r->soft_leader = u->leader;
    r->soft_commit = u->commit;
    return soft || u->rollback_from || u->snapshot || u->hs_changed || u->n_entries || u->n_msgs ||
           u->n_committed || u->n_reads || u->leader_durable_index;
}

/* ---- inspection ------------------------------------------------------------------------ */

void raft_status(const struct raft *r, struct raft_status *st)
{
    memset(st, 0, sizeof(*st));
    st->id = r->id;
    st->role = r->role;
    st->term = r->term;
    st->vote = r->vote;
    st->leader = r->leader;
    st->commit = r->log.commit;
    st->applied = r->log.applied;
    st->persisted = r->log.persisted;
    st->last_index = r->log.last;
    st->last_term = r->log.last_term;
    st->snapshot_index = r->log.snap.index;
    st->conf_index = r->conf_index;
    st->conf = r->conf;
    st->transfer_target = r->transfer_target;
}

int raft_progress(const struct raft *r, uint64_t id, struct raft_progress *out)
{
    memset(out, 0, sizeof(*out));
    if (r->role != RAFT_LEADER) return -TRINE_ENOT_LEADER;
    int slot = progress_slot(r, id);
    if (slot < 0) return -TRINE_ENOT_FOUND;
    const struct progress *pr = &r->prs[slot];
    out->match = pr->id == r->id ? r->log.persisted : pr->match;
    out->next = pr->next;
    out->state = pr->state;
    out->voter = pr->voter;
    out->recent_active = pr->recent_active;
    return 0;
}

uint64_t raft_leader(const struct raft *r)
{
    return r->leader;
}

uint64_t raft_deadline(const struct raft *r)
{
    return deadline(r);
}

const struct trine_err *raft_error(const struct raft *r)
{
    return &r->err;
}

const char *raft_role_name(uint8_t role)
{
    static const char *const names[] = {"follower", "pre-candidate", "candidate", "leader"};
    return role < 4 ? names[role] : "?";
}

const char *raft_msg_type_name(uint8_t type)
{
    static const char *const names[] = {
        "?",           "append",       "append-resp",     "vote",           "vote-resp",
        "prevote",     "prevote-resp", "heartbeat",       "heartbeat-resp", "snapshot",
        "timeout-now", "read-index",   "read-index-resp",
    };
    return type <= RAFT_MSG_TYPE_MAX ? names[type] : "?";
}
