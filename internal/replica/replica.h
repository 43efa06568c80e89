/*
 * replica.h - every partition replica (Raft group) one Trine node hosts:
 * one struct raft per partition over ONE shared WAL (one fdatasync covers many
 * groups) and ONE store (leveldb), plus the client operations that ride on
 * them (fast / strong / all writes, fast / strong reads, min_revision waits).
 *
 * Threads and driving. A struct replica belongs to one thread, the caller's
 * event loop (the server's). It does no socket I/O, reads no clock of its own
 * (cfg.clock) and sleeps only in replica_open/replica_close and the rare
 * maintenance steps named below. The network and the loop come in through the
 * callbacks of struct replica_config:
 *
 *   cfg.send(ctx, to, frame, len)   one encoded peer frame (raft_batch,
 *                                   snapshot_chunk or snapshot_ack, length
 *                                   prefix included) for node `to`
 *   cfg.wakeup(ctx)                 called from the WAL's sync thread when an
 *                                   fsync completed: must be thread-safe and
 *                                   only schedule a replica_process() call
 *
 *   loop:
 *     frames from peers      -> replica_recv_frame()
 *     client requests        -> replica_write() / replica_get() / replica_scan()
 *     timer at replica_next_deadline() -> replica_tick()
 *     wakeup / after any of the above  -> replica_process()
 *
 * replica_process() must be called after any batch of the calls above (it is
 * cheap when there is nothing to do): it collects every group's Raft output,
 * persists it with one wal_submit, sends messages once the covering fsync is
 * done, applies committed entries and completes waiting operations.
 *
 * Completion. Operations that cannot be answered at once complete later
 * through their replica_done_fn, exactly once, called from replica_process(),
 * replica_tick() or replica_close() - never from inside the call that started
 * them. Answers given at once are returned in *res (REPLICA_NOW).
 *
 * Ownership. Keys, values and config strings passed in are copied before the
 * call returns. A struct replica_result and everything it points to (value,
 * items, message) is borrowed: valid during the done callback, or, for an
 * answer returned in *res, until the next call on the same replica.
 * struct replica is freed by replica_close.
 *
 * Data directory (cfg.data_dir): wal/ (the WAL), store/ (leveldb),
 * node.meta (node id and partition count, written on first start and checked
 * on every later one), rollbacks.jsonl (fast-mode rollbacks, one JSON object a
 * line). docs/replica.md has the design, the crash points and the formats.
 */
#ifndef TRINE_REPLICA_REPLICA_H
#define TRINE_REPLICA_REPLICA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/clock.h"
#include "base/status.h"
#include "store/store.h"

struct metrics;

#define REPLICA_PEERS_MAX 16 /* members of one partition's replica set */

/* One partition's replica set; nodes[0] is the preferred primary. */
struct replica_set {
    uint32_t n;
    uint32_t nodes[REPLICA_PEERS_MAX];
};

/* Consistency levels: the numbers of proto's `consistency` enum. */
enum replica_consistency {
    REPLICA_FAST = 0,
    REPLICA_STRONG = 1,
    REPLICA_ALL = 2,
};

struct replica_config {
    uint32_t node_id;     /* this node, nonzero */
    const char *data_dir; /* created if missing (not its parents) */
    /* Placement: P and, for each partition p, sets[p] = its replica set, preferred primary
     * first (the server fills it from the ring: ring_replicas). partitions is checked against
     * node.meta. Copied at open (static membership). Partitions whose set does not contain
     * node_id are not hosted. */
    uint32_t partitions;
    const struct replica_set *sets;

    /* Callbacks (see the header comment). send returns 0 or an error (the frame is then
     * dropped; Raft and the snapshot stream retry). frame is borrowed for the call. */
    int (*send)(void *ctx, uint64_t to, const uint8_t *frame, size_t len);
    void (*wakeup)(void *ctx);
    void *cb_ctx;

    /* Time: mono_ns drives Raft timers and request timeouts; real_ms is the wall clock the
     * primary stamps into writes (TTL expiry, store now_ms). */
    struct trine_clock clock;
    struct metrics *metrics; /* may be NULL; series are registered at open */

    /* Tuning; 0 picks the default in brackets. */
    uint64_t election_timeout_ms;   /* [1000] */
    uint64_t heartbeat_ms;          /* [election_timeout_ms / 10] */
    uint32_t default_timeout_ms;    /* request timeout when the request says 0 [5000] */
    uint32_t pending_max;           /* operations waiting at once [65536] */
    uint64_t compact_entries;       /* compact a partition once applied - snapshot mark
                                       exceeds this [10000] */
    uint32_t snapshot_chunk_bytes;  /* snapshot stream chunk [1 MiB] */
    uint32_t snapshot_window_bytes; /* unacknowledged snapshot bytes per stream [4 MiB] */
    uint32_t expire_batch;          /* EXPIRE ops proposed per partition per tick [128] */
    uint32_t frame_bytes_max;       /* largest peer frame sent [codec default] */
    /* Largest key and value a write may carry [codec defaults: 4 KiB, 1 MiB]; Raft's entry
     * limit and in-memory tail are sized from them. */
    uint32_t key_bytes_max;
    uint32_t value_bytes_max;
    uint32_t raft_tail_entries; /* entries each group keeps in memory, power of two [512] */
    uint64_t seed;              /* randomness of election timeouts [node_id] */
    bool wal_sync_off;          /* no fdatasync: tests and benchmarks ONLY */
    bool wal_repair;            /* cut the WAL at mid-log corruption instead of refusing to open */
    const struct store_options *store; /* NULL: store defaults */
};

struct replica;

/* Opens (creating on first start) the data directory, replays the WAL, reconciles it
 * with the store and creates one Raft group per hosted partition. Errors (detail in err):
 * -TRINE_EINVALID (bad config; a data dir created with another node id or partition
 * count), -TRINE_ECORRUPT (WAL or store inconsistent), -TRINE_EIO, -TRINE_ENOMEM. */
int replica_open(const struct replica_config *cfg, struct replica **out, struct trine_err *err);

/* Completes every pending operation (-TRINE_EUNAVAILABLE, "node closing; outcome unknown"
 * for writes not yet answered), flushes the WAL and frees everything. */
void replica_close(struct replica *r);

/* ---- driving ------------------------------------------------------------------------ */

/* One processing round (see the header comment). Returns 0, or -TRINE_EFSYNC / -TRINE_EIO
 * when the WAL or the store failed (the node must stop). */
int replica_process(struct replica *r);

/* Timers: ticks the groups whose deadline passed, times out operations, proposes TTL
 * deletes on led partitions, compacts (may block for a store_sync), moves leadership to
 * preferred primaries, streams snapshots. Call replica_process() afterwards. */
int replica_tick(struct replica *r);

/* Absolute time (cfg.clock mono_ns / 1e6, in ms) at which replica_tick is next due;
 * "now" if replica_process has work pending. */
uint64_t replica_next_deadline(const struct replica *r);

/* One peer frame body (after the 4-byte length) from node from_node: raft_batch,
 * raft_msg, snapshot_chunk or snapshot_ack. Messages for partitions this node does not
 * host are ignored (counted). Returns 0, or -TRINE_EBAD_REQUEST / -TRINE_ETOO_LARGE /
 * -TRINE_EUNSUPPORTED for a malformed or foreign frame (the server should close that peer
 * connection); never crashes on bad bytes. Call replica_process() afterwards. */
int replica_recv_frame(struct replica *r, uint64_t from_node, const uint8_t *body, size_t len);

/* The transport's view of a peer: a peer marked unreachable makes `all` writes of its
 * partitions fail at once with -TRINE_EUNAVAILABLE. Peers start reachable; silence longer
 * than the election timeout counts as unreachable too. */
void replica_peer_reachable(struct replica *r, uint64_t peer, bool reachable);

/* ---- operations --------------------------------------------------------------------- */

enum replica_op_type {
    REPLICA_PUT = 1,
    REPLICA_DELETE = 2,
    REPLICA_CAS = 3,
};

struct replica_write {
    uint32_t partition;
    uint8_t op;          /* enum replica_op_type */
    uint8_t consistency; /* enum replica_consistency */
    const uint8_t *key;  /* non-empty */
    uint32_t key_len;
    const uint8_t *value; /* PUT, CAS */
    uint32_t value_len;
    uint64_t expected_version; /* CAS: 0 = must not exist */
    uint64_t ttl_ms;           /* PUT, CAS: 0 = never expires */
    uint64_t client_id;        /* dedupe identity; 0 = none */
    uint64_t seq;
    uint32_t timeout_ms; /* 0 = cfg.default_timeout_ms */
};

struct replica_read {
    uint32_t partition;
    uint8_t consistency;   /* fast: local applied state; strong/all: ReadIndex */
    uint64_t min_revision; /* serve only once applied >= this (0 = any) */
    uint32_t timeout_ms;   /* 0 = cfg.default_timeout_ms */
    /* get */
    const uint8_t *key;
    uint32_t key_len;
    /* scan (keys of this partition only, in key order) */
    const uint8_t *prefix;
    uint32_t prefix_len;
    const uint8_t *start_after; /* exclusive cursor; NULL/0 = from the start */
    uint32_t start_after_len;
    uint32_t limit; /* scan: items wanted, 0 = 1000; at most 10000 */
};

struct replica_kv {
    const uint8_t *key; /* borrowed, see Ownership */
    uint32_t key_len;
    const uint8_t *value;
    uint32_t value_len;
    uint64_t version;
    uint64_t create_revision;
    uint64_t mod_revision;
    uint64_t expire_at_ms;
};

struct replica_result {
    /* 0, or: NOT_LEADER (leader_hint says where; a write that lost leadership before
     * commit says "not applied"), UNAVAILABLE (`all` with a replica down, or closing),
     * TIMEOUT (outcome unknown), NOT_FOUND, CAS_FAILED, STALE (min_revision not reached in
     * time), BUSY, TOO_LARGE, BAD_REQUEST, STALE from dedupe (a retry too old to know). */
    int status;
    uint32_t value_len;  /* get */
    const char *message; /* human-readable detail, "" if none */
    uint64_t revision;   /* write: log index of the entry; read: applied index served */
    /* write: key's version after the op (0 for a fast ack: not known before apply; 0 after
     * a delete); read: the key's version */
    uint64_t version;
    uint64_t create_revision;       /* reads; writes that created the key */
    uint64_t mod_revision;          /* reads; successful writes (= revision) */
    uint64_t expire_at_ms;          /* absolute expiry (writes: as stamped), 0 = never */
    uint64_t applied_index;         /* this replica's applied index when it answered */
    uint64_t served_by;             /* this node */
    uint64_t leader_hint;           /* current leader of the partition (0 = unknown) */
    const uint8_t *value;           /* get */
    const struct replica_kv *items; /* scan */
    uint32_t n_items;               /* scan */
    uint8_t consistency; /* level actually achieved/served (a fast CAS is served strong) */
    uint8_t acks;        /* replicas known to have the entry durable at the ack */
    bool duplicate;      /* a retry of an applied (client_id, seq): first result */
    bool more;           /* scan: more keys match after the last item */
};

typedef void (*replica_done_fn)(void *arg, const struct replica_result *res);

#define REPLICA_LATER 0 /* pending: done(arg, res) runs later, exactly once */
#define REPLICA_NOW   1 /* answered in *res (status may be an error); done never runs */

/* Proposes a write on this node (it must lead the partition: else REPLICA_NOW with
 * NOT_LEADER and the leader hint). Returns REPLICA_LATER or REPLICA_NOW. */
int replica_write(struct replica *r, const struct replica_write *w, replica_done_fn done, void *arg,
                  struct replica_result *res);
/* Reads one key (replica_read.key). */
int replica_get(struct replica *r, const struct replica_read *rd, replica_done_fn done, void *arg,
                struct replica_result *res);
/* Scans one partition (replica_read.prefix/start_after/limit). */
int replica_scan(struct replica *r, const struct replica_read *rd, replica_done_fn done, void *arg,
                 struct replica_result *res);

/* ---- leadership, shutdown ------------------------------------------------------------ */

/* Starts handing leadership of every led partition to a caught-up voter (preferred
 * primary first) and refuses new writes with NOT_LEADER. Keep the loop running (process,
 * tick, frames) until replica_shutdown_done() or timeout_ms passed, then replica_close(),
 * which flushes the WAL. */
void replica_shutdown(struct replica *r, uint64_t timeout_ms);
/* True when no partition is led any more or the shutdown timeout passed. */
bool replica_shutdown_done(const struct replica *r);

/* ---- inspection --------------------------------------------------------------------- */

struct replica_peer_status {
    uint64_t id;
    bool voter;
    bool active;     /* heard from within the election timeout and reachable */
    uint64_t match;  /* leader only: highest index known durable there (Raft's progress) */
    uint64_t lag;    /* leader only: last_index - match, entries */
    uint64_t lag_ms; /* leader only: age of the oldest entry not durable there (0 if none;
                        docs/operations.md, "Replication lag") */
};

struct replica_part_status {
    uint32_t partition;
    uint8_t role; /* enum raft_role */
    uint64_t term;
    uint64_t leader; /* 0 = unknown */
    uint64_t preferred;
    uint64_t commit;
    uint64_t applied;
    uint64_t last_index;
    uint64_t snapshot_index;
    uint32_t n_peers; /* replica set, this node included */
    struct replica_peer_status peers[REPLICA_PEERS_MAX];
};

/* Hosted partitions, ascending; returns how many (writes at most max ids). */
size_t replica_partitions(const struct replica *r, uint32_t *ids, size_t max);
bool replica_hosts(const struct replica *r, uint32_t partition);
/* -TRINE_ENOT_FOUND if the partition is not hosted here. */
int replica_status(struct replica *r, uint32_t partition, struct replica_part_status *st);
/* Leader of a hosted partition as this node knows it (0 = unknown or not hosted). */
uint64_t replica_leader(const struct replica *r, uint32_t partition);
/* store_content_hash of a hosted partition (convergence checks). */
int replica_content_hash(struct replica *r, uint32_t partition, uint64_t *hash,
                         uint64_t *applied_index);

struct replica_stats {
    uint64_t proposals;
    uint64_t applied_entries;
    uint64_t fast_rollbacks;           /* exact: written to rollbacks.jsonl */
    uint64_t fast_rollbacks_uncertain; /* snapshot-caused, possibly committed */
    uint64_t snapshots_sent;
    uint64_t snapshots_received;
    uint64_t compactions;
    uint64_t ignored_msgs; /* for partitions not hosted here */
    uint64_t bad_frames;
    uint64_t rounds; /* processing rounds that submitted to the WAL */
};
void replica_stats(const struct replica *r, struct replica_stats *out);

/* Detail of the last failure of replica_open/process/tick. */
const struct trine_err *replica_error(const struct replica *r);

#endif
