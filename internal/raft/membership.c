/*
 * membership.c - configurations and single-server membership changes
 * (dissertation 4.1-4.3), with learners (non-voting members that receive the
 * log and are promoted once caught up).
 *
 * Method: one server at a time. A RAFT_ENTRY_CONF carries the whole new
 * configuration and takes effect on every server as soon as it is appended
 * (committed or not); truncating it reverts to the previous one (conf_rebuild
 * scans back). Any majority of the old and of the new configuration
 * intersect, so no joint phase is needed. The leader accepts a change only
 * when (a) no earlier change is uncommitted and (b) an entry of its own term
 * has committed - (b) is the fix for the single-server bug Ongaro described
 * on raft-dev in 2015. A promotion is refused until the learner holds every
 * committed entry and is within catchup_lag_max of the leader's last index. A leader that removes
 * itself keeps leading (without counting itself) until the change commits,
 * then steps down.
 *
 * Conf entry data layout (big-endian):
 *   u32 n | n x { u64 id | u8 role (1 voter, 2 learner) }      = 4 + 9n bytes
 * ids are nonzero and distinct, n <= RAFT_SERVERS_MAX.
 */
#include <string.h>

#include "base/buf.h"
#include "raft/raft_int.h"

uint32_t raft_conf_encode(const struct raft_conf *conf, uint8_t *out)
{
    put_u32be(out, conf->n);
    uint8_t *p = out + 4;
    for (uint32_t i = 0; i < conf->n && i < RAFT_SERVERS_MAX; i++) {
        put_u64be(p, conf->servers[i].id);
        p[8] = conf->servers[i].role;
        p += 9;
    }
    return (uint32_t)(p - out);
}

int raft_conf_decode(const uint8_t *data, uint32_t len, struct raft_conf *out)
{
    if (len < 4 || !data) return -TRINE_ECORRUPT;
    uint32_t n = get_u32be(data);
    if (n > RAFT_SERVERS_MAX || len != 4 + 9 * n) return -TRINE_ECORRUPT;
    memset(out, 0, sizeof(*out));
    const uint8_t *p = data + 4;
    for (uint32_t i = 0; i < n; i++, p += 9) {
        uint64_t id = get_u64be(p);
        uint8_t role = p[8];
        if (id == 0 || (role != RAFT_VOTER && role != RAFT_LEARNER)) return -TRINE_ECORRUPT;
        for (uint32_t k = 0; k < i; k++)
            if (out->servers[k].id == id) return -TRINE_ECORRUPT;
        out->servers[i].id = id;
        out->servers[i].role = role;
    }
    out->n = n;
    return 0;
}

uint8_t raft_conf_role(const struct raft_conf *conf, uint64_t id)
{
    for (uint32_t i = 0; i < conf->n; i++)
        if (conf->servers[i].id == id) return conf->servers[i].role;
    return 0;
}

void conf_apply(struct raft *r, const struct raft_conf *conf, uint64_t index)
{
    r->conf = *conf;
    r->conf_index = index;
    progress_rebuild(r);
}

void conf_on_commit(struct raft *r)
{
    if (r->role == RAFT_LEADER && r->conf_index <= r->log.commit && !election_self_voter(r))
        election_become_follower(r, r->term, 0);
}

/* Scans entries [lo, hi] (lo <= hi) backwards, a batch at a time, for the newest conf entry.
 * Returns 1 and fills conf/at if found, 0 if none, -TRINE_ESTALE if the scan ran into
 * compacted entries (or storage failed). The scratch is given back after each slice. */
static int scan_back(struct raft *r, uint64_t lo, uint64_t hi, struct raft_conf *conf, uint64_t *at)
{
    const uint32_t batch = 64;
    for (;;) {
        uint64_t from = hi - lo + 1 > batch ? hi + 1 - batch : lo;
        bool found = false;
        for (uint64_t i = from; i <= hi;) {
            uint32_t used_e = r->log.sc_ents_used;
            uint64_t used_b = r->log.sc_bytes_used;
            const struct raft_entry *e;
            uint32_t n;
            int rc = log_slice(r, i, hi + 1, batch, UINT64_MAX, &e, &n);
            if (rc < 0) return -TRINE_ESTALE;
            if (n == 0) return -TRINE_ESTALE;
            for (uint32_t k = 0; k < n; k++) {
                struct raft_conf c;
                if (e[k].type != RAFT_ENTRY_CONF || raft_conf_decode(e[k].data, e[k].len, &c) < 0)
                    continue;
                *conf = c;
                *at = e[k].index;
                found = true;
            }
            i += n;
            r->log.sc_ents_used = used_e;
            r->log.sc_bytes_used = used_b;
        }
        if (found) return 1;
        if (from == lo) return 0;
        hi = from - 1;
    }
}

void conf_rebuild(struct raft *r)
{
    struct raft_conf c;
    uint64_t at = 0;
    uint64_t lo = log_first_entry(r);
    int rc = lo <= r->log.last ? scan_back(r, lo, r->log.last, &c, &at) : 0;
    if (rc == 1) {
        conf_apply(r, &c, at);
        return;
    }
    /* No conf entry in the readable log: the configuration is the latest snapshot's. */
    struct raft_snapshot_meta meta = r->log.snap;
    if (rc < 0 || lo - 1 > meta.index) {
        struct raft_snapshot_meta sm;
        if (r->st.snapshot(r->st.ctx, &sm) == 0 && sm.index >= meta.index) meta = sm;
    }
    conf_apply(r, &meta.conf, meta.index);
}

int conf_change(struct raft *r, enum raft_conf_op op, uint64_t id, uint64_t *index)
{
    if (r->role != RAFT_LEADER)
        return err_set(&r->err, -TRINE_ENOT_LEADER, "raft: membership change needs the leader");
    if (r->transfer_target)
        return err_set(&r->err, -TRINE_EBUSY, "raft: leadership transfer in progress");
    if (r->log.commit < r->term_start)
        return err_set(&r->err, -TRINE_EAGAIN, "raft: new leader has not committed yet");
    if (r->conf_index > r->log.commit)
        return err_set(&r->err, -TRINE_EBUSY, "raft: change at %llu not committed yet",
                       (unsigned long long)r->conf_index);
    if (id == 0) return err_set(&r->err, -TRINE_EINVALID, "raft: server id 0");
    struct raft_conf c = r->conf;
    int at = -1;
    for (uint32_t i = 0; i < c.n; i++)
        if (c.servers[i].id == id) at = (int)i;
    switch (op) {
    case RAFT_CONF_ADD_LEARNER:
        if (at >= 0)
            return err_set(&r->err, -TRINE_EEXISTS, "raft: %llu already a member",
                           (unsigned long long)id);
        if (c.n == RAFT_SERVERS_MAX)
            return err_set(&r->err, -TRINE_EINVALID, "raft: group is full");
        c.servers[c.n].id = id;
        c.servers[c.n].role = RAFT_LEARNER;
        c.n++;
        break;
    case RAFT_CONF_PROMOTE: {
        if (at < 0)
            return err_set(&r->err, -TRINE_ENOT_FOUND, "raft: %llu not a member",
                           (unsigned long long)id);
        if (c.servers[at].role == RAFT_VOTER)
            return err_set(&r->err, -TRINE_EEXISTS, "raft: %llu already votes",
                           (unsigned long long)id);
        const struct progress *pr = progress_get(r, id);
        if (!pr || pr->match < r->log.commit || pr->match + r->cfg.catchup_lag_max < r->log.last)
            return err_set(&r->err, -TRINE_EAGAIN, "raft: learner %llu has not caught up",
                           (unsigned long long)id);
        c.servers[at].role = RAFT_VOTER;
        break;
    }
    case RAFT_CONF_REMOVE: {
        if (at < 0)
            return err_set(&r->err, -TRINE_ENOT_FOUND, "raft: %llu not a member",
                           (unsigned long long)id);
        uint32_t voters = 0;
        for (uint32_t i = 0; i < c.n; i++)
            voters += c.servers[i].role == RAFT_VOTER;
        if (c.servers[at].role == RAFT_VOTER && voters == 1)
            return err_set(&r->err, -TRINE_EINVALID, "raft: cannot remove the last voter");
        c.servers[at] = c.servers[c.n - 1];
        c.n--;
        break;
    }
    default:
        return err_set(&r->err, -TRINE_EINVALID, "raft: unknown membership operation %d", op);
    }
    uint8_t buf[RAFT_CONF_BYTES_MAX];
    uint32_t n = raft_conf_encode(&c, buf);
    int rc = log_append(r, r->term, RAFT_ENTRY_CONF, RAFT_ENTRY_LOCAL, buf, n);
    if (rc < 0) return err_set(&r->err, rc, "raft: in-memory tail full of undurable entries");
    conf_apply(r, &c, r->log.last);
    if (index) *index = r->log.last;
    return 0;
}
