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
#include "base/rand.h"
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

/* Records per group commit; bytes per group commit. */
static const double batch_records_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 16384};
static const double batch_bytes_buckets[] = {512,    4096,    16384,   65536,
                                             262144, 1048576, 4194304, 16777216};

/* Counters and histograms updated in place. Registered before wal_open: the WAL's
 * sync thread updates the WAL series (rep_wal_batch) from its first batch on. */
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
        {&r->m_compactions, "trine_replica_compactions_total", "Log compactions."},
    };
    for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++) {
        *cs[i].slot = metrics_counter(m, cs[i].name, cs[i].help, NULL, err);
        if (!*cs[i].slot) return err->code ? err->code : -TRINE_EINVALID;
    }
    struct {
        struct metric **slot;
        const char *name, *help;
        const double *b;
        size_t n;
    } hs[] = {
        {&r->m_fsync_seconds, "trine_wal_fsync_duration_seconds", "WAL fdatasync latency.",
         metrics_latency_buckets, metrics_latency_buckets_n},
        {&r->m_batch_records, "trine_wal_batch_records", "Records per WAL group commit.",
         batch_records_buckets, sizeof(batch_records_buckets) / sizeof(double)},
        {&r->m_batch_bytes, "trine_wal_batch_bytes", "Bytes per WAL group commit.",
         batch_bytes_buckets, sizeof(batch_bytes_buckets) / sizeof(double)},
    };
    for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++) {
        *hs[i].slot = metrics_histogram(m, hs[i].name, hs[i].help, NULL, hs[i].b, hs[i].n, err);
        if (!*hs[i].slot) return err->code ? err->code : -TRINE_EINVALID;
    }
    return 0;
}

/* The WAL's sync thread, after each group commit: lock-free histogram updates
 * only (the WAL counts batches, records, bytes and fsyncs itself: collect_wal). */
static void rep_wal_batch(void *ctx, const struct wal_batch_info *b)
{
    struct replica *r = ctx;
    metric_observe(r->m_batch_records, (double)b->records);
    metric_observe(r->m_batch_bytes, (double)b->bytes);
    if (b->synced) metric_observe(r->m_fsync_seconds, (double)b->fsync_ns / 1e9);
}

/* ---- replication lag ---------------------------------------------------------------------
 * A leader notes, at each append, the time and the index its log ended at just before it
 * (entries appended in the same millisecond share a sample). A follower whose match index
 * is m holds every entry up to the latest sample with index <= m; the entry after m was
 * appended at that sample's time, so now minus it is the age of the oldest entry the
 * follower has not made durable. Samples every follower has passed are dropped; a full
 * ring is thinned (every other sample), which can only make a lag look older, by at most
 * the gap between two kept samples. Entries from before this node's leadership have no
 * sample, and a new leader does not know what a follower holds until it answers: such a
 * follower shows the entries appended and the time passed since the leadership began, both
 * lower bounds. */

void rep_lag_note(struct group *g, const struct raft_update *u)
{
    if (u->role != RAFT_LEADER || u->n_entries == 0) return;
    uint64_t before = u->entries[0].index - 1;
    uint64_t now = rep_now_ms(g->rep);
    if (g->lag_term != u->term) {
        g->n_lag = 0;
        g->lag_term = u->term;
        g->lag_base = before;
    }
    if (g->n_lag && (g->lag[g->n_lag - 1].ms == now || g->lag[g->n_lag - 1].index >= before))
        return;
    uint64_t min_match = UINT64_MAX;
    for (uint32_t i = 0; i < g->n_peers; i++)
        if (g->peers[i].match < min_match) min_match = g->peers[i].match;
    uint32_t drop = 0;
    while (drop + 1 < g->n_lag && g->lag[drop + 1].index <= min_match)
        drop++;
    if (drop) {
        memmove(g->lag, g->lag + drop, (g->n_lag - drop) * sizeof(g->lag[0]));
        g->n_lag -= drop;
    }
    if (g->n_lag == LAG_SAMPLES) {
        uint32_t k = 1;
        for (uint32_t i = 2; i < g->n_lag - 1; i += 2)
            g->lag[k++] = g->lag[i];
        g->lag[k++] = g->lag[g->n_lag - 1];
        g->n_lag = k;
    }
    g->lag[g->n_lag++] = (struct lag_sample){.index = before, .ms = now};
}

void rep_follower_lag(struct group *g, uint64_t last_index, uint64_t match, uint64_t now_ms,
                      uint64_t *entries, uint64_t *ms)
{
    bool sampled = g->lag_term == g->term && g->n_lag;
    /* Nothing acknowledged to this leader yet (Raft's match starts at 0): what it holds is
     * unknown; count from the leadership's first entry (a lower bound, like the time). */
    if (sampled && match == 0) match = g->lag_base;
    *entries = last_index > match ? last_index - match : 0;
    *ms = 0;
    if (*entries == 0) return;
    uint64_t t = g->lead_since_ms;
    if (sampled) {
        t = g->lag[0].ms;
        for (uint32_t i = g->n_lag; i-- > 0;) {
            if (g->lag[i].index <= match) {
                t = g->lag[i].ms;
                break;
            }
        }
    }
    *ms = now_ms > t ? now_ms - t : 0;
}

/* ---- scrape-time series ------------------------------------------------------------------ */

static void emit_u64(struct metrics_sink *k, const char *labels, uint64_t v)
{
    metrics_emit(k, labels, (double)v);
}

static void part_label(char *lab, size_t n, uint32_t partition)
{
    snprintf(lab, n, "partition=\"%u\"", partition);
}

enum part_field { PF_ROLE, PF_TERM, PF_COMMIT, PF_APPLIED, PF_LAST };

static void collect_partitions(struct replica *r, struct metrics_sink *k)
{
    static const struct {
        const char *name, *help;
    } fams[] = {
        [PF_ROLE] = {"trine_raft_role",
                     "Raft role: 0 follower, 1 pre-candidate, 2 candidate, 3 leader."},
        [PF_TERM] = {"trine_raft_term", "Raft term."},
        [PF_COMMIT] = {"trine_raft_commit_index", "Raft commit index."},
        [PF_APPLIED] = {"trine_raft_applied_index", "Index applied to the store."},
        [PF_LAST] = {"trine_raft_last_index", "Last index in this node's log."},
    };
    uint32_t led = 0;
    for (uint32_t i = 0; i < r->n_groups; i++)
        led += r->groups[i].role == RAFT_LEADER ? 1 : 0;
    metrics_emit_family(k, "trine_partitions_hosted", METRICS_GAUGE,
                        "Partitions this node holds a replica of.");
    emit_u64(k, NULL, r->n_groups);
    metrics_emit_family(k, "trine_partitions_led", METRICS_GAUGE,
                        "Partitions this node is the primary (Raft leader) of.");
    emit_u64(k, NULL, led);
    for (size_t f = 0; f < sizeof(fams) / sizeof(fams[0]); f++) {
        metrics_emit_family(k, fams[f].name, METRICS_GAUGE, fams[f].help);
        for (uint32_t i = 0; i < r->n_groups; i++) {
            const struct group *g = &r->groups[i];
            uint64_t v = f == PF_ROLE      ? g->role
                         : f == PF_TERM    ? g->term
                         : f == PF_COMMIT  ? g->commit
                         : f == PF_APPLIED ? g->applied
                                           : g->log.last;
            char lab[32];
            part_label(lab, sizeof(lab), g->partition);
            emit_u64(k, lab, v);
        }
    }
    uint64_t now = rep_now_ms(r);
    for (int secs = 0; secs < 2; secs++) {
        if (secs)
            metrics_emit_family(k, "trine_raft_follower_lag_seconds", METRICS_GAUGE,
                                "Leader only: age of the oldest entry a follower has not made "
                                "durable (0 when caught up).");
        else
            metrics_emit_family(k, "trine_raft_follower_lag_entries", METRICS_GAUGE,
                                "Leader only: entries a follower lacks (last index - match).");
        for (uint32_t i = 0; i < r->n_groups; i++) {
            struct group *g = &r->groups[i];
            if (g->role != RAFT_LEADER) continue;
            for (uint32_t j = 0; j < g->n_peers; j++) {
                struct raft_progress pr;
                if (raft_progress(g->raft, g->peers[j].id, &pr) < 0) continue;
                uint64_t entries, ms;
                rep_follower_lag(g, g->log.last, pr.match, now, &entries, &ms);
                char lab[64];
                snprintf(lab, sizeof(lab), "partition=\"%u\",follower=\"%llu\"", g->partition,
                         (unsigned long long)g->peers[j].id);
                if (secs)
                    metrics_emit(k, lab, (double)ms / 1000.0);
                else
                    emit_u64(k, lab, entries);
            }
        }
    }
}

static void collect_wal(struct replica *r, struct metrics_sink *k)
{
    struct wal_stats *w = malloc(sizeof(*w)); /* three histograms: too big for the stack */
    if (!w) return;
    wal_stats(r->wal, w);
    const struct metrics_scalar fs[] = {
        {"trine_wal_appends_total", "WAL submissions (one per replica round with records).",
         METRICS_COUNTER, w->appends},
        {"trine_wal_batches_total",
         "WAL group commits (one pwritev, and one fdatasync unless --fsync off).", METRICS_COUNTER,
         w->batches},
        {"trine_wal_records_total", "WAL records written.", METRICS_COUNTER, w->records},
        {"trine_wal_bytes_total", "WAL bytes written, headers included.", METRICS_COUNTER,
         w->bytes},
        {"trine_wal_fsyncs_total", "WAL fdatasync calls.", METRICS_COUNTER, w->fsyncs},
        {"trine_wal_segments", "WAL segment files now.", METRICS_GAUGE, w->segments},
        {"trine_wal_segments_created_total", "WAL segment files created.", METRICS_COUNTER,
         w->segments_created},
        {"trine_wal_segments_deleted_total",
         "WAL segment files deleted after the store synced past them.", METRICS_COUNTER,
         w->segments_deleted},
        {"trine_wal_queue_bytes", "Bytes submitted to the WAL and not yet taken by a group commit.",
         METRICS_GAUGE, w->queue_bytes},
    };
    metrics_emit_scalars(k, fs, sizeof(fs) / sizeof(fs[0]));
    free(w);
}

static void collect_store(struct replica *r, struct metrics_sink *k)
{
    struct store_stats st;
    store_stats(r->store, &st);
    const struct metrics_scalar cs[] = {
        {"trine_store_applied_ops_total", "Operations applied to the store.", METRICS_COUNTER,
         st.applied_ops},
        {"trine_store_apply_batches_total", "Partition batches applied (store_apply calls).",
         METRICS_COUNTER, st.batches},
        {"trine_store_leveldb_writes_total",
         "leveldb writes for them (one per replica round: partitions share it).", METRICS_COUNTER,
         st.writes},
        {"trine_store_duplicates_total", "Writes recognised as retries at apply (dedupe).",
         METRICS_COUNTER, st.duplicates},
        {"trine_store_cache_hits_total", "Key metadata and dedupe lookups served from memory.",
         METRICS_COUNTER, st.cache_hits},
        {"trine_store_filter_skips_total", "New keys proven absent by the key filter.",
         METRICS_COUNTER, st.filter_skips},
        {"trine_store_leveldb_reads_total", "Point reads that went to leveldb.", METRICS_COUNTER,
         st.leveldb_reads},
    };
    metrics_emit_scalars(k, cs, sizeof(cs) / sizeof(cs[0]));
    struct store_ldb_stats l;
    store_ldb_stats(r->store, &l);
    enum { LF_FILES, LF_BYTES, LF_SECS, LF_READ, LF_WRITTEN };
    static const struct {
        const char *name, *help;
        enum metrics_type type;
    } ls[] = {
        [LF_FILES] = {"trine_leveldb_files", "leveldb table files per level.", METRICS_GAUGE},
        [LF_BYTES] = {"trine_leveldb_level_bytes", "leveldb bytes per level (1 MiB resolution).",
                      METRICS_GAUGE},
        [LF_SECS] = {"trine_leveldb_compaction_seconds_total",
                     "Time spent compacting into the level (1 s resolution).", METRICS_COUNTER},
        [LF_READ] = {"trine_leveldb_compaction_read_bytes_total",
                     "Bytes read by compactions into the level (1 MiB resolution).",
                     METRICS_COUNTER},
        [LF_WRITTEN] = {"trine_leveldb_compaction_written_bytes_total",
                        "Bytes written by compactions into the level (1 MiB resolution).",
                        METRICS_COUNTER},
    };
    for (int f = LF_FILES; f <= LF_WRITTEN; f++) {
        metrics_emit_family(k, ls[f].name, ls[f].type, ls[f].help);
        for (int lv = 0; lv < STORE_LDB_LEVELS; lv++) {
            char lab[16];
            snprintf(lab, sizeof(lab), "level=\"%d\"", lv);
            double v = f == LF_FILES   ? (double)l.files[lv]
                       : f == LF_BYTES ? (double)l.level_bytes[lv]
                       : f == LF_SECS  ? l.compaction_seconds[lv]
                       : f == LF_READ  ? (double)l.compaction_read[lv]
                                       : (double)l.compaction_written[lv];
            metrics_emit(k, lab, v);
        }
    }
    metrics_emit_family(k, "trine_leveldb_approximate_memory_bytes", METRICS_GAUGE,
                        "leveldb memory in use: memtables and block cache.");
    emit_u64(k, NULL, l.memory_bytes);
}

/* Runs inside metrics_render on the loop thread (server/admin.c): reads loop state. */
static void rep_collect(void *ctx, struct metrics_sink *k)
{
    struct replica *r = ctx;
    collect_partitions(r, k);
    collect_wal(r, k);
    collect_store(r, k);
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
    rc_cfg.seed = rng_mix64(r->cfg.seed * 0x9e3779b97f4a7c15u ^
                            ((uint64_t)g->partition << 32 | r->cfg.node_id));
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
    if (rc == 0) rc = register_metrics(r, err);
    r->cfg.sets = NULL; /* copied into the groups; the caller's array may go */
    char path[4096];
    if (rc == 0) {
        snprintf(path, sizeof(path), "%s/store", r->dir);
        rc = store_open(path, cfg->store, &r->store, err);
        /* replica_process() writes each round's applies as one batch */
        if (rc == 0) store_set_deferred(r->store, true);
    }
    if (rc == 0) {
        snprintf(path, sizeof(path), "%s/wal", r->dir);
        struct wal_options wo = {.dir = path,
                                 .sync_off = cfg->wal_sync_off,
                                 .repair = cfg->wal_repair,
                                 .replay = WAL_REPLAY_LIVE,
                                 .replay_fn = plog_replay,
                                 .replay_ctx = r,
                                 .on_batch = r->cfg.metrics ? rep_wal_batch : NULL,
                                 .on_batch_ctx = r};
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
    if (rc == 0 && r->cfg.metrics) {
        rc = metrics_collector(r->cfg.metrics, rep_collect, r, err);
        r->collector = rc == 0;
    }
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
    if (r->collector) metrics_collector_remove(r->cfg.metrics, rep_collect, r);
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
    for (int k = OUT_HELD; k <= OUT_NOW; k++) {
        for (uint32_t i = 0; i < r->outs[k].n; i++)
            free(r->outs[k].v[i].msgs);
        free(r->outs[k].v);
    }
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
        struct raft_progress pr;
        if (st.role == RAFT_LEADER && raft_progress(g->raft, p->id, &pr) == 0) {
            ps->match = pr.match;
            rep_follower_lag(g, g->log.last, pr.match, now, &ps->lag, &ps->lag_ms);
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
