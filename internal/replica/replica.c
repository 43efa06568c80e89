/*
 * replica.c - opening and closing a node's replicas, start-up reconciliation,
 * status and metrics.
 *
 * Start-up:
 *   1. node.meta ("node_id=N\npartitions=P\n") is written on first start
 *      (temp file, fsync, rename) and compared on every later one: a data dir
 *      made for another node id or partition count is refused, since P fixes
 *      where every key lives.
 *   2. store_open, then wal_open with LIVE replay rebuilding each hosted
 *      partition's log view (plog.c): hard state, snapshot mark, term runs.
 *   3. Reconcile per partition: store applied index a (term t) against the
 *      WAL. a < mark -> refused (the store lost synced data). a beyond the
 *      log, or the log holding another term at a: a snapshot install reached
 *      the store but not the WAL (crash between the two steps, snap.c); a
 *      mark (a, t) + TRUNCATE(a + 1) is written synchronously so the log and
 *      the state machine agree before Raft starts.
 *   4. raft_create with the WAL's hard state and applied = a; a brand-new
 *      group bootstraps with the ring's replica set, and its preferred primary
 *      campaigns at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "metrics/metrics.h"
#include "replica/replica_int.h"
#include "wal/faultpoint.h"

/* ---- small helpers ------------------------------------------------------------------- */

uint64_t rep_now_ms(const struct replica *r)
{
    return r->cfg.clock.mono_ns(r->cfg.clock.ctx) / 1000000u;
}

uint64_t rep_real_ms(const struct replica *r)
{
    return r->cfg.clock.real_ms(r->cfg.clock.ctx);
}

struct group *rep_group(const struct replica *r, uint32_t partition)
{
    if (partition >= r->cfg.partitions) return NULL;
    return r->by_part[partition];
}

struct peer *group_peer(struct group *g, uint64_t id)
{
    for (uint32_t i = 0; i < g->n_peers; i++)
        if (g->peers[i].id == id) return &g->peers[i];
    return NULL;
}

bool rep_peer_down(const struct replica *r, uint64_t id)
{
    for (uint32_t i = 0; i < r->n_down; i++)
        if (r->down[i] == id) return true;
    return false;
}

bool group_peer_active(struct group *g, const struct peer *p, uint64_t now_ms)
{
    return !rep_peer_down(g->rep, p->id) && p->heard_ms > 0 &&
           now_ms < p->heard_ms + g->rep->cfg.election_timeout_ms;
}

/* ---- node.meta ------------------------------------------------------------------------ */

static int check_meta(struct replica *r, struct trine_err *err)
{
    char path[4096], tmp[4200];
    if (!r->dir) return err_set(err, -TRINE_EINVALID, "replica: no data dir");
    snprintf(path, sizeof(path), "%s/node.meta", r->dir);
    FILE *f = fopen(path, "r");
    if (f) {
        unsigned node = 0, parts = 0;
        int n = fscanf(f, "node_id=%u\npartitions=%u\n", &node, &parts);
        fclose(f);
        if (n != 2)
            return err_set(err, -TRINE_ECORRUPT, "replica: %s is unreadable; refusing to start",
                           path);
        if (node != r->cfg.node_id || parts != r->cfg.partitions)
            return err_set(err, -TRINE_EINVALID,
                           "replica: data dir %s belongs to node %u of a %u-partition cluster; "
                           "refusing to start as node %u with %u partitions (the partition "
                           "count is fixed at cluster creation)",
                           r->dir, node, parts, r->cfg.node_id, r->cfg.partitions);
        return 0;
    }
    if (errno != ENOENT)
        return err_set(err, status_from_errno(errno), "replica: %s: %s", path, strerror(errno));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return err_set(err, status_from_errno(errno), "replica: %s: %s", tmp, strerror(errno));
    char text[64];
    int len = snprintf(text, sizeof(text), "node_id=%u\npartitions=%u\n", r->cfg.node_id,
                       r->cfg.partitions);
    bool ok = write(fd, text, (size_t)len) == len && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path) < 0)
        return err_set(err, -TRINE_EIO, "replica: writing %s failed: %s", path, strerror(errno));
    int dfd = open(r->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

/* ---- metrics ---------------------------------------------------------------------------- */

static struct metric *counter(struct replica *r, const char *name, const char *help,
                              struct trine_err *err)
{
    return metrics_counter(r->cfg.metrics, name, help, NULL, err);
}

static int register_metrics(struct replica *r, struct trine_err *err)
{
    struct metrics *m = r->cfg.metrics;
    if (!m) return 0;
    struct {
        struct metric **slot;
        const char *name, *help;
    } cs[] = {
        {&r->m_proposals, "trine_replica_proposals_total", "Writes proposed to Raft."},
        {&r->m_applied, "trine_replica_applied_entries_total", "Log entries applied."},
        {&r->m_rollbacks, "trine_fast_rollbacks_total",
         "Fast-mode entries rolled back (rollbacks.jsonl)."},
        {&r->m_rollbacks_uncertain, "trine_fast_rollbacks_uncertain_total",
         "Own entries dropped by a snapshot install that may be committed."},
        {&r->m_snap_sent, "trine_snapshots_sent_total", "Snapshots streamed to followers."},
        {&r->m_snap_recv, "trine_snapshots_received_total", "Snapshots installed."},
        {&r->m_ignored, "trine_replica_ignored_messages_total",
         "Peer messages for partitions or nodes not hosted here."},
        {&r->m_bad, "trine_replica_bad_frames_total", "Malformed peer frames."},
        {&r->m_fsyncs, "trine_wal_fsyncs_total", "WAL fdatasync calls."},
        {&r->m_batches, "trine_wal_batches_total", "WAL write batches (group commits)."},
        {&r->m_records, "trine_wal_records_total", "WAL records written."},
        {&r->m_wal_bytes, "trine_wal_bytes_total", "WAL bytes written."},
        {&r->m_compactions, "trine_replica_compactions_total", "Log compactions."},
    };
    for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++) {
        *cs[i].slot = counter(r, cs[i].name, cs[i].help, err);
        if (!*cs[i].slot) return err->code ? err->code : -TRINE_EINVALID;
    }
    for (uint32_t i = 0; i < r->n_groups; i++) {
        struct group *g = &r->groups[i];
        char lab[32];
        snprintf(lab, sizeof(lab), "partition=\"%u\"", g->partition);
        struct {
            struct metric **slot;
            const char *name, *help;
        } gs[] = {
            {&g->m_role, "trine_raft_role", "Raft role: 0 follower, 1-2 candidate, 3 leader."},
            {&g->m_term, "trine_raft_term", "Raft term."},
            {&g->m_commit, "trine_raft_commit_index", "Raft commit index."},
            {&g->m_applied, "trine_raft_applied_index", "Applied index."},
            {&g->m_last, "trine_raft_last_index", "Last log index."},
        };
        for (size_t k = 0; k < sizeof(gs) / sizeof(gs[0]); k++) {
            *gs[k].slot = metrics_gauge(m, gs[k].name, gs[k].help, lab, err);
            if (!*gs[k].slot) return err->code ? err->code : -TRINE_EINVALID;
        }
    }
    return 0;
}

void rep_update_gauges(struct replica *r)
{
    for (uint32_t i = 0; i < r->n_groups && r->cfg.metrics; i++) {
        struct group *g = &r->groups[i];
        metric_set(g->m_role, g->role);
        metric_set(g->m_term, (double)g->term);
        metric_set(g->m_commit, (double)g->commit);
        metric_set(g->m_applied, (double)g->applied);
        metric_set(g->m_last, (double)g->log.last);
    }
}

/* ---- open ------------------------------------------------------------------------------- */

static void defaults(struct replica_config *c)
{
    if (!c->election_timeout_ms) c->election_timeout_ms = 1000;
    if (!c->heartbeat_ms) c->heartbeat_ms = c->election_timeout_ms / 10;
    if (!c->heartbeat_ms) c->heartbeat_ms = 1;
    if (!c->default_timeout_ms) c->default_timeout_ms = 5000;
    if (!c->pending_max) c->pending_max = 65536;
    if (!c->compact_entries) c->compact_entries = 10000;
    TRINE_FAULT_TUNE(c->compact_entries, "COMPACT_ENTRIES");
    if (!c->snapshot_chunk_bytes) c->snapshot_chunk_bytes = 1u << 20;
    if (!c->snapshot_window_bytes) c->snapshot_window_bytes = 4u << 20;
    if (!c->expire_batch) c->expire_batch = 128;
    if (!c->seed) c->seed = c->node_id;
    if (!c->clock.mono_ns) c->clock = clock_system;
}

static bool set_holds(const struct replica_set *s, uint32_t id)
{
    for (uint32_t i = 0; i < s->n && i < REPLICA_PEERS_MAX; i++)
        if (s->nodes[i] == id) return true;
    return false;
}

static int check_sets(const struct replica_config *c, struct trine_err *err)
{
    for (uint32_t p = 0; p < c->partitions; p++) {
        const struct replica_set *s = &c->sets[p];
        if (s->n == 0 || s->n > REPLICA_PEERS_MAX) /* == RAFT_SERVERS_MAX */
            return err_set(err, -TRINE_EINVALID, "replica: partition %u has %u replicas", p, s->n);
        for (uint32_t i = 0; i < s->n; i++) {
            if (s->nodes[i] == 0)
                return err_set(err, -TRINE_EINVALID, "replica: partition %u: node id 0", p);
            for (uint32_t k = 0; k < i; k++)
                if (s->nodes[k] == s->nodes[i])
                    return err_set(err, -TRINE_EINVALID,
                                   "replica: partition %u lists node %u twice", p, s->nodes[i]);
        }
    }
    return 0;
}

static int setup_groups(struct replica *r, struct trine_err *err)
{
    const struct replica_config *c = &r->cfg;
    r->by_part = calloc(c->partitions, sizeof(struct group *));
    if (!r->by_part) return err_set(err, -TRINE_ENOMEM, "replica: out of memory");
    uint32_t n = 0;
    for (uint32_t p = 0; p < c->partitions; p++)
        n += set_holds(&c->sets[p], c->node_id) ? 1 : 0;
    r->groups = calloc(n ? n : 1, sizeof(*r->groups));
    if (!r->groups) return err_set(err, -TRINE_ENOMEM, "replica: out of memory");
    for (uint32_t p = 0; p < c->partitions; p++) {
        if (!set_holds(&c->sets[p], c->node_id)) continue;
        struct group *g = &r->groups[r->n_groups++];
        size_t ns = c->sets[p].n;
        const uint32_t *set = c->sets[p].nodes;
        g->rep = r;
        g->partition = p;
        g->preferred = set[0];
        for (size_t i = 0; i < ns; i++) {
            g->conf.servers[g->conf.n++] = (struct raft_server){set[i], RAFT_VOTER};
            if (set[i] != c->node_id)
                g->peers[g->n_peers++] = (struct peer){.id = set[i], .voter = true};
        }
        g->log.first = 1;
        r->by_part[p] = g;
    }
    return 0;
}

static int reconcile(struct replica *r, struct group *g, struct trine_err *err)
{
    struct plog *l = &g->log;
    uint64_t a = 0, at = 0, t = 0;
    int rc = store_applied(r->store, g->partition, &a, &at);
    if (rc < 0)
        return err_set(err, rc, "replica: store_applied(%u): %s", g->partition,
                       store_err(r->store)->msg);
    if (a < l->snap.index)
        return err_set(err, -TRINE_ECORRUPT,
                       "replica: partition %u: store applied %llu is behind the WAL's snapshot "
                       "mark %llu (store data lost?); refusing to start",
                       g->partition, (unsigned long long)a, (unsigned long long)l->snap.index);
    if (a == 0 || a == l->snap.index) return 0;
    bool in_log = a >= l->first && a <= l->last && plog_term(l, a, &t) == 0 && t == at;
    if (in_log) return 0;
    struct raft_snapshot_meta m = {.index = a, .term = at, .conf = g->conf};
    uint8_t conf[RAFT_CONF_BYTES_MAX];
    uint32_t n = raft_conf_encode(&m.conf, conf);
    struct wal_record recs[2] = {
        {.partition = g->partition,
         .type = WAL_SNAPSHOT,
         .term = at,
         .index = a,
         .payload = conf,
         .len = n},
        {.partition = g->partition, .type = WAL_TRUNCATE, .term = at, .index = a + 1},
    };
    rc = wal_append(r->wal, recs, 2);
    if (rc < 0)
        return err_set(err, rc, "replica: partition %u: writing the snapshot mark failed",
                       g->partition);
    l->snap = m;
    l->first = a + 1;
    l->last = a;
    l->n_runs = 0;
    log_part(LOG_LEVEL_WARN, "replica", g->partition,
             "store applied %llu is ahead of the WAL (interrupted snapshot install): "
             "wrote the missing snapshot mark",
             (unsigned long long)a);
    return 0;
}

static int start_group(struct replica *r, struct group *g, struct trine_err *err)
{
    int rc = reconcile(r, g, err);
    if (rc < 0) return rc;
    struct raft_config rc_cfg;
    raft_config_default(&rc_cfg, r->cfg.node_id);
    rc_cfg.election_timeout_ms = r->cfg.election_timeout_ms;
    rc_cfg.heartbeat_ms = r->cfg.heartbeat_ms;
    rc_cfg.lease_drift_ms = r->cfg.election_timeout_ms / 10;
    /* Mixed, not summed: raft_create xors the id in, and (id * G + p) ^ (id * G) would be
     * the same on every node for small p: identical timeouts, endless split votes. */
    uint64_t x =
        r->cfg.seed * 0x9e3779b97f4a7c15u ^ ((uint64_t)g->partition << 32 | r->cfg.node_id);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    rc_cfg.seed = x ^ (x >> 31);
    /* Rank by ring order, so the next preferred replica replaces a lost primary in one
     * election round instead of racing the others into split votes. */
    for (uint32_t i = 0; i < g->conf.n; i++)
        if (g->conf.servers[i].id == r->cfg.node_id) rc_cfg.election_rank = i;
    rc_cfg.election_ranks = g->conf.n;
    /* Room for the largest command; the tail holds at least four of them (its buffer is
     * allocated once but only touched pages become resident). */
    rc_cfg.entry_bytes_max = r->lim.entry_bytes_max;
    if (rc_cfg.tail_bytes < 4 * rc_cfg.entry_bytes_max)
        rc_cfg.tail_bytes = 4 * rc_cfg.entry_bytes_max;
    if (r->cfg.raft_tail_entries) {
        rc_cfg.tail_entries = r->cfg.raft_tail_entries;
        if (rc_cfg.msg_entries_max > rc_cfg.tail_entries / 2)
            rc_cfg.msg_entries_max = rc_cfg.tail_entries / 2;
        rc_cfg.catchup_lag_max = rc_cfg.msg_entries_max;
    }
    struct raft_storage st;
    plog_storage(g, &st);
    uint64_t applied = 0, at = 0;
    store_applied(r->store, g->partition, &applied, &at);
    struct raft_init_state init = {.hs = g->log.hs, .applied = applied, .bootstrap = &g->conf};
    uint64_t now = rep_now_ms(r);
    struct trine_err rerr = {0};
    rc = raft_create(&g->raft, &rc_cfg, &st, &init, now, &rerr);
    if (rc < 0) return err_set(err, rc, "replica: partition %u: %s", g->partition, rerr.msg);
    g->applied = applied;
    g->term = g->log.hs.term;
    g->deadline_ms = raft_deadline(g->raft);
    if (g->log.last == 0 && g->preferred == r->cfg.node_id) raft_campaign(g->raft, now);
    return 0;
}

int replica_open(const struct replica_config *cfg, struct replica **out, struct trine_err *err)
{
    *out = NULL;
    if (!cfg->node_id || !cfg->data_dir || !cfg->partitions || !cfg->sets)
        return err_set(err, -TRINE_EINVALID,
                       "replica: node_id, data_dir, partitions and sets "
                       "are required");
    int crc = check_sets(cfg, err);
    if (crc < 0) return crc;
    struct replica *r = calloc(1, sizeof(*r));
    if (!r) return err_set(err, -TRINE_ENOMEM, "replica: out of memory");
    r->cfg = *cfg;
    defaults(&r->cfg);
    r->rollback_fd = -1;
    r->dir = strdup(cfg->data_dir);
    r->lim = codec_limits_default();
    if (cfg->frame_bytes_max) r->lim.frame_bytes_max = cfg->frame_bytes_max;
    if (cfg->key_bytes_max > r->lim.key_bytes_max) r->lim.key_bytes_max = cfg->key_bytes_max;
    if (cfg->value_bytes_max > r->lim.value_bytes_max)
        r->lim.value_bytes_max = cfg->value_bytes_max;
    /* A command is its key and value plus at most a few hundred bytes of fields. */
    uint64_t entry = (uint64_t)r->lim.key_bytes_max + r->lim.value_bytes_max + 4096;
    if (entry > r->lim.entry_bytes_max) r->lim.entry_bytes_max = (uint32_t)entry;
    r->scratch = codec_scratch_new();
    buf_init(&r->scan_buf);
    buf_init(&r->cmd_buf);
    buf_init(&r->chunk);
    int rc = 0;
    if (!r->dir || !r->scratch)
        rc = err_set(err, -TRINE_ENOMEM, "replica: out of memory");
    else if (mkdir(r->dir, 0755) < 0 && errno != EEXIST)
        rc = err_set(err, status_from_errno(errno), "replica: mkdir %s: %s", r->dir,
                     strerror(errno));
    if (rc == 0) rc = check_meta(r, err);
    if (rc == 0) rc = setup_groups(r, err);
    r->cfg.sets = NULL; /* copied into the groups; the caller's array may go */
    char path[4096];
    if (rc == 0) {
        snprintf(path, sizeof(path), "%s/store", r->dir);
        rc = store_open(path, cfg->store, &r->store, err);
    }
    if (rc == 0) {
        snprintf(path, sizeof(path), "%s/wal", r->dir);
        struct wal_options wo = {.dir = path,
                                 .sync_off = cfg->wal_sync_off,
                                 .repair = cfg->wal_repair,
                                 .replay = WAL_REPLAY_LIVE,
                                 .replay_fn = plog_replay,
                                 .replay_ctx = r};
        TRINE_FAULT_TUNE(wo.segment_bytes, "SEGMENT_BYTES");
        struct wal_recovery rep;
        rc = wal_open(&wo, &r->wal, &rep, err);
        if (rc == 0 && rep.cut_bytes)
            log_warn("replica",
                     "--repair cut the WAL at %s+%llu: %llu bytes (%llu records) removed; the "
                     "partitions they held catch up from their peers",
                     rep.bad_file, (unsigned long long)rep.bad_offset,
                     (unsigned long long)rep.cut_bytes, (unsigned long long)rep.cut_records);
    }
    for (uint32_t i = 0; rc == 0 && i < r->n_groups; i++)
        rc = start_group(r, &r->groups[i], err);
    if (rc == 0) rc = register_metrics(r, err);
    if (rc < 0) {
        replica_close(r);
        return rc;
    }
    r->dirty = true;
    *out = r;
    return 0;
}

void replica_close(struct replica *r)
{
    if (!r) return;
    ops_fail_all(r, -TRINE_EUNAVAILABLE, "node closing; outcome unknown");
    snap_free(r);
    round_free_all(r);
    if (r->wal) wal_close(r->wal);
    for (uint32_t i = 0; i < r->n_groups; i++) {
        raft_destroy(r->groups[i].raft);
        plog_free(&r->groups[i].log);
    }
    if (r->store) store_close(r->store);
    if (r->rollback_fd >= 0) close(r->rollback_fd);
    for (uint32_t i = 0; i < r->n_outs; i++)
        free(r->outs[i].msgs);
    free(r->outs);
    free(r->recs);
    arena_free(&r->arena);
    codec_scratch_free(r->scratch);
    free(r->in_ents);
    free(r->scan_items);
    free(r->scan_offs);
    free(r->done_q);
    buf_free(&r->scan_buf);
    buf_free(&r->cmd_buf);
    buf_free(&r->chunk);
    free(r->groups);
    free(r->by_part);
    free(r->dir);
    free(r);
}

/* ---- inspection --------------------------------------------------------------------------- */

size_t replica_partitions(const struct replica *r, uint32_t *ids, size_t max)
{
    for (uint32_t i = 0; i < r->n_groups && i < max; i++)
        ids[i] = r->groups[i].partition;
    return r->n_groups;
}

bool replica_hosts(const struct replica *r, uint32_t partition)
{
    return rep_group(r, partition) != NULL;
}

uint64_t replica_leader(const struct replica *r, uint32_t partition)
{
    struct group *g = rep_group(r, partition);
    return g ? raft_leader(g->raft) : 0;
}

int replica_status(struct replica *r, uint32_t partition, struct replica_part_status *out)
{
    struct group *g = rep_group(r, partition);
    if (!g) return -TRINE_ENOT_FOUND;
    struct raft_status st;
    raft_status(g->raft, &st);
    memset(out, 0, sizeof(*out));
    out->partition = partition;
    out->role = st.role;
    out->term = st.term;
    out->leader = st.leader;
    out->preferred = g->preferred;
    out->commit = st.commit;
    out->applied = g->applied;
    out->last_index = st.last_index;
    out->snapshot_index = g->log.snap.index;
    uint64_t now = rep_now_ms(r);
    out->peers[out->n_peers++] = (struct replica_peer_status){.id = r->cfg.node_id,
                                                              .voter = true,
                                                              .active = true,
                                                              .match = st.persisted,
                                                              .lag = st.last_index - st.persisted};
    for (uint32_t i = 0; i < g->n_peers && out->n_peers < REPLICA_PEERS_MAX; i++) {
        const struct peer *p = &g->peers[i];
        struct replica_peer_status *ps = &out->peers[out->n_peers++];
        ps->id = p->id;
        ps->voter = p->voter;
        ps->active =
            st.role == RAFT_LEADER ? group_peer_active(g, p, now) : !rep_peer_down(r, p->id);
        if (st.role == RAFT_LEADER) {
            ps->match = p->match;
            ps->lag = st.last_index > p->match ? st.last_index - p->match : 0;
        }
    }
    return 0;
}

int replica_content_hash(struct replica *r, uint32_t partition, uint64_t *hash,
                         uint64_t *applied_index)
{
    if (!rep_group(r, partition)) return -TRINE_ENOT_FOUND;
    return store_content_hash(r->store, partition, hash, applied_index);
}

void replica_stats(const struct replica *r, struct replica_stats *out)
{
    *out = r->stats;
}

const struct trine_err *replica_error(const struct replica *r)
{
    return &r->err;
}
