/*
 * raft.h - Raft consensus as a pure, deterministic state machine (one instance
 * per partition; hundreds share a node).
 *
 * The core does no I/O, reads no clock, takes no locks, logs nothing and
 * allocates only in raft_init. Time arrives as now_ms on every call,
 * randomness as cfg.seed, old log entries through struct raft_storage (which
 * the caller backs with its WAL), and everything the core wants done leaves
 * through struct raft_update. Model: etcd-io/raft's RawNode (Ready/Advance)
 * and cowsql/raft's raft_step.
 *
 *   loop:
 *     feed one event        raft_tick / raft_recv / raft_propose / raft_persisted /
 *                           raft_applied / raft_read_index / raft_transfer /
 *                           raft_conf_change / raft_report_snapshot / raft_campaign
 *     while raft_ready(r, &u):   act on u, in the order of its fields (below)
 *
 * Features: leader election with randomized timeouts, pre-vote and
 * check-quorum; pipelined replication with a bounded window of in-flight
 * appends per follower and conflict-term backtracking; commitment of
 * current-term entries by counting (Raft dissertation Figure 3.7 / paper
 * Figure 8); ReadIndex on the leader and on followers; optional leader-lease
 * reads; snapshots; leadership transfer; single-server membership changes with
 * learners; fast-mode notifications (local durability while leader, rollback
 * of truncated own entries). docs/raft.md has the design.
 *
 * PERSISTENCE CONTRACT (what the caller must do with each struct raft_update)
 *
 *   1. Before anything else in the update: if u.rollback_from != 0, read the
 *      entries with index in [rollback_from, rollback_to] that this node
 *      wrote with flag RAFT_ENTRY_LOCAL and record them as rollbacks (they
 *      are about to be overwritten). If rollback_exact is false (the cause is
 *      a snapshot), some of them may in fact be committed and present in the
 *      snapshot: check against the installed state (Trine: the dedupe table)
 *      before counting them as lost.
 *   2. Write, in this order: the snapshot u.snapshot (its data came with the
 *      RAFT_MSG_SNAPSHOT message; it replaces the whole log and the state
 *      machine), the hard state u.hs when u.hs_changed, and the entries
 *      u.entries[0..n_entries) (first discard every stored entry with index
 *      >= entries[0].index: this is how the core truncates a conflicting
 *      suffix). Store each entry's flags with it: storage must return them.
 *   3. Make all of that durable (fsync), together with every earlier update
 *      of this group. Term, vote and log are durable BEFORE any message of
 *      this update leaves the node: a vote or an append acknowledgement is a
 *      promise that survives a crash. One exception is allowed: a LEADER's
 *      RAFT_MSG_APPEND and RAFT_MSG_HEARTBEAT may leave before its new
 *      entries are durable, once its hard state is (dissertation 10.2.1):
 *      they promise nothing about the leader's disk, the core counts the
 *      leader's own match only from raft_persisted(), and step 6 never hands
 *      out an entry above the durable index.
 *   4. Send u.msgs. Messages may be dropped, duplicated or reordered by the
 *      network; the core tolerates that. A RAFT_MSG_SNAPSHOT must carry the
 *      state-machine snapshot whose metadata is msg.snapshot.
 *   5. Tell the core what is durable: raft_persisted(r, now, last.index,
 *      last.term) with the last entry written (or the snapshot index/term).
 *      Steps 3-5 may be batched across many groups (one fsync for all).
 *   6. Apply u.committed in order (they are committed and durable locally),
 *      then report progress with raft_applied(). Serve u.reads once the state
 *      machine has applied at least read.index.
 *
 *   Every pointer inside an update (entries, data, messages, snapshot) is
 *   borrowed from the core and valid until the next call on the same
 *   struct raft. Copy or encode what you keep.
 *
 *   Restart: give raft_init the durable hard state and the state machine's
 *   applied index (>= the storage's snapshot index); the log comes from
 *   storage. The commit index is not persisted: it restarts at `applied`.
 *
 * STORAGE (read-only for the core; the caller writes it per the contract)
 *
 *   Holds the durable log [first_index, last_index] and the latest snapshot
 *   (at index first_index - 1). The core keeps a bounded in-memory tail and
 *   asks storage only for entries it was told are durable (index <= the last
 *   raft_persisted), so storage never needs unsynced data. Compaction is the
 *   caller's: it may drop a prefix covered by a snapshot at any time between
 *   calls; the core then sends snapshots to followers that need the dropped
 *   entries.
 *
 * FAST MODE (Trine's `fast` consistency)
 *
 *   u.leader_durable_index != 0: this node is leader of term u.term and every
 *   entry of that term with index <= leader_durable_index is durable locally
 *   (a fast write proposed at such an index may be acknowledged now).
 *   Entries a leader appends to its own log carry RAFT_ENTRY_LOCAL; when a
 *   later leader truncates them the update's rollback range says so (step 1).
 *
 * LEASE READS are off by default (cfg.lease_reads). When on, the leader
 * answers reads without a round of heartbeats while it holds a lease of
 * election_timeout_ms - lease_drift_ms from the send time of the last
 * heartbeat round a majority acknowledged. Clock assumption: every node's
 * now_ms advances at the same rate within lease_drift_ms per election
 * timeout (bounded drift, no pauses longer than that), and check_quorum is
 * on. A node refuses votes for one election timeout after raft_init so a
 * restarted voter cannot cut a lease short.
 */
#ifndef TRINE_RAFT_RAFT_H
#define TRINE_RAFT_RAFT_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"

#define RAFT_SERVERS_MAX  16 /* members (voters + learners) of one group */
#define RAFT_INFLIGHT_MAX 64 /* upper bound for cfg.inflight_max */

/* ---- log entries ---------------------------------------------------------------------- */

enum raft_entry_type {
    RAFT_ENTRY_NORMAL = 0, /* a command for the state machine */
    RAFT_ENTRY_NOOP = 1,   /* appended by each new leader; the state machine skips it */
    RAFT_ENTRY_CONF = 2,   /* a whole configuration, see raft_conf_decode() */
};

/* Entry flags. Local metadata: never sent on the wire, but storage keeps it. */
#define RAFT_ENTRY_LOCAL 0x01 /* appended by this node while it was leader */

struct raft_entry {
    uint64_t term;
    uint64_t index;
    const uint8_t *data; /* borrowed; see the owner of the struct holding it */
    uint32_t len;
    uint8_t type;  /* enum raft_entry_type */
    uint8_t flags; /* RAFT_ENTRY_* */
};

/* ---- membership ----------------------------------------------------------------------- */

enum raft_server_role { RAFT_VOTER = 1, RAFT_LEARNER = 2 };

struct raft_server {
    uint64_t id; /* nonzero */
    uint8_t role;
};

struct raft_conf {
    uint32_t n;
    struct raft_server servers[RAFT_SERVERS_MAX];
};

/* Encoded size of a conf entry's data: 4 + 9 * n bytes. */
#define RAFT_CONF_BYTES_MAX (4 + 9 * RAFT_SERVERS_MAX)

/* Decodes the data of a RAFT_ENTRY_CONF entry. 0 or -TRINE_ECORRUPT. */
int raft_conf_decode(const uint8_t *data, uint32_t len, struct raft_conf *out);
/* Encodes conf into out (RAFT_CONF_BYTES_MAX bytes); returns the length. */
uint32_t raft_conf_encode(const struct raft_conf *conf, uint8_t *out);
/* Role of id in conf, or 0 if absent. */
uint8_t raft_conf_role(const struct raft_conf *conf, uint64_t id);

enum raft_conf_op {
    RAFT_CONF_ADD_LEARNER = 1, /* add a non-voting member that receives the log */
    RAFT_CONF_PROMOTE = 2,     /* learner -> voter; refused until it has caught up */
    RAFT_CONF_REMOVE = 3,      /* remove a voter or learner (the leader may remove itself) */
};

struct raft_snapshot_meta {
    uint64_t index; /* last entry the snapshot covers */
    uint64_t term;  /* term of that entry */
    struct raft_conf conf;
};

struct raft_hard_state {
    uint64_t term;
    uint64_t vote; /* 0 = none */
};

/* ---- messages (the codec converts these to and from proto/ frames) ------------------- */

enum raft_msg_type {
    RAFT_MSG_APPEND = 1,      /* leader -> follower: entries after (index, log_term) */
    RAFT_MSG_APPEND_RESP,     /* index = last matching index, or reject with hints */
    RAFT_MSG_VOTE,            /* candidate: index/log_term = its last entry */
    RAFT_MSG_VOTE_RESP,       /* reject = vote refused */
    RAFT_MSG_PREVOTE,         /* term = candidate's term + 1; changes no state */
    RAFT_MSG_PREVOTE_RESP,    /* term = the request's term when granted */
    RAFT_MSG_HEARTBEAT,       /* commit, context = heartbeat round */
    RAFT_MSG_HEARTBEAT_RESP,  /* context echoed */
    RAFT_MSG_SNAPSHOT,        /* snapshot meta; the caller attaches the data */
    RAFT_MSG_TIMEOUT_NOW,     /* leadership transfer: campaign now */
    RAFT_MSG_READ_INDEX,      /* follower -> leader: context = request id */
    RAFT_MSG_READ_INDEX_RESP, /* index = read index, context echoed; reject = failed */
};
#define RAFT_MSG_TYPE_MAX RAFT_MSG_READ_INDEX_RESP

/* Vote context that marks a campaign started by leadership transfer. */
#define RAFT_CTX_TRANSFER 1

struct raft_msg {
    uint8_t type; /* enum raft_msg_type */
    bool reject;
    uint64_t from;
    uint64_t to;
    uint64_t term;
    uint64_t log_term; /* term of entry `index` */
    uint64_t index;
    uint64_t commit;
    uint64_t reject_hint;   /* APPEND_RESP reject: probe from here */
    uint64_t conflict_term; /* APPEND_RESP reject: term at reject_hint */
    uint64_t context;
    const struct raft_entry *entries; /* APPEND; data borrowed; flags not sent */
    uint32_t n_entries;
    const struct raft_snapshot_meta *snapshot; /* SNAPSHOT only, else NULL */
};

/* ---- storage (implemented by the caller) ---------------------------------------------- */

struct raft_storage {
    void *ctx;
    /* Term of entry `index`, for index in [first_index - 1, last_index] (first - 1 is the
     * snapshot's index). -TRINE_ESTALE if compacted away, -TRINE_EIO on failure. */
    int (*term)(void *ctx, uint64_t index, uint64_t *term);
    /* Copies entries [lo, hi) into out[] (at most out_max) with their data copied into buf
     * (buf_len bytes), stopping before the total data would exceed bytes_max or buf_len;
     * at least one entry is returned if it fits in buf. Sets *n. -TRINE_ESTALE if lo was
     * compacted, -TRINE_EIO on failure. */
    int (*entries)(void *ctx, uint64_t lo, uint64_t hi, uint64_t bytes_max, struct raft_entry *out,
                   uint32_t out_max, uint8_t *buf, uint64_t buf_len, uint32_t *n);
    uint64_t (*first_index)(void *ctx);
    uint64_t (*last_index)(void *ctx);
    /* Metadata of the latest snapshot (index 0 if none). */
    int (*snapshot)(void *ctx, struct raft_snapshot_meta *meta);
};

/* ---- configuration -------------------------------------------------------------------- */

struct raft_config {
    uint64_t id;                  /* this node, nonzero */
    uint64_t election_timeout_ms; /* randomized in [t, 2t) per election; default 1000 */
    uint64_t heartbeat_ms;        /* default election_timeout_ms / 10 */
    uint64_t seed;                /* randomness for election timeouts */
    bool pre_vote;                /* default true (raft_config_default) */
    bool check_quorum;            /* default true */
    bool lease_reads;             /* default false; see LEASE READS above */
    uint64_t lease_drift_ms;      /* default election_timeout_ms / 10 */
    uint32_t inflight_max;        /* appends in flight per follower; default 16 */
    uint32_t msg_entries_max;     /* entries per append; default 64 */
    uint64_t msg_bytes_max;       /* entry bytes per append (>= 1 entry); default 256 KiB */
    uint32_t tail_entries;        /* in-memory tail, power of two; default 512 */
    uint64_t tail_bytes;          /* bytes of entry data in the tail; default 1 MiB */
    uint64_t entry_bytes_max;     /* largest entry; default tail_bytes / 4 */
    uint32_t apply_batch_max;     /* committed entries per update; default 256 */
    uint32_t msgs_max;            /* outgoing messages buffered per update; default 128 */
    uint32_t reads_max;           /* pending ReadIndex requests; default 256 */
    uint64_t catchup_lag_max;     /* a learner this close to the leader may be promoted;
                                     default msg_entries_max */
    /* Ranked election timeouts (0 ranks = off, the default): the timeout interval
     * [t, 2t) is cut into election_ranks slots and this node draws only from slot
     * election_rank, so members with distinct ranks never time out together and a
     * lost leader is replaced in one round (Trine ranks by ring order: the next
     * preferred replica first). A node that cannot win (its log is behind) only
     * delays the next rank by one slot. Requires pre_vote: without it such a node
     * would bump the term on every try and reset the others' timers (livelock). */
    uint32_t election_rank;
    uint32_t election_ranks;
};

/* Fills cfg with the defaults above for node id. */
void raft_config_default(struct raft_config *cfg, uint64_t id);

/* ---- the update -------------------------------------------------------------------- */

enum raft_role { RAFT_FOLLOWER = 0, RAFT_PRE_CANDIDATE, RAFT_CANDIDATE, RAFT_LEADER };

struct raft_read {
    uint64_t context; /* the caller's request id */
    uint64_t index;   /* serve once applied >= index */
    int status;       /* 0, or -TRINE_ENOT_LEADER when leadership was lost first */
};

/* Fields follow the contract's order, not size (one update per call: padding is moot). */
struct raft_update { // NOLINT(clang-analyzer-optin.performance.Padding)
    /* step 1: rollbacks (see the contract) */
    uint64_t rollback_from; /* 0 = none */
    uint64_t rollback_to;
    bool rollback_exact;
    /* step 2: persist */
    const struct raft_snapshot_meta *snapshot; /* install, or NULL */
    bool hs_changed;
    struct raft_hard_state hs;
    const struct raft_entry *entries;
    uint32_t n_entries;
    /* step 4: send */
    const struct raft_msg *msgs;
    uint32_t n_msgs;
    /* step 6: apply, serve */
    const struct raft_entry *committed;
    uint32_t n_committed;
    const struct raft_read *reads;
    uint32_t n_reads;
    /* fast mode */
    uint64_t leader_durable_index; /* 0 = nothing new */
    /* soft state, always filled */
    uint8_t role;
    uint64_t term;
    uint64_t leader; /* 0 = unknown */
    uint64_t commit;
    uint64_t deadline_ms; /* call raft_tick at or after this time */
};

/* ---- the instance ------------------------------------------------------------------- */

struct raft; /* opaque */

struct raft_init_state {
    struct raft_hard_state hs; /* durable term/vote ({0,0} for a new replica) */
    uint64_t applied;          /* state machine's applied index (>= snapshot index) */
    /* A new group's first configuration, or NULL. Used only when storage is empty: the core
     * then appends it as entry 1 of term 1 (identical on every initial member). A replica
     * added later by membership change passes NULL and learns the log from the leader. */
    const struct raft_conf *bootstrap;
};

/* Creates an instance. cfg and *st are copied; st->ctx must outlive the instance.
 * Returns 0, -TRINE_EINVALID (bad config, detail in err) or -TRINE_ENOMEM. */
int raft_create(struct raft **out, const struct raft_config *cfg, const struct raft_storage *st,
                const struct raft_init_state *init, uint64_t now_ms, struct trine_err *err);
void raft_destroy(struct raft *r);

/* Events. Each returns 0 or a negative status; output accumulates until raft_ready. now_ms
 * never goes backwards. */
int raft_tick(struct raft *r, uint64_t now_ms);
/* A message from the network. -TRINE_EBAD_REQUEST if malformed (it is then ignored). */
int raft_recv(struct raft *r, uint64_t now_ms, const struct raft_msg *m);
/* Appends a command (leader only). Sets *index and *term of the new entry. Errors:
 * NOT_LEADER (see raft_leader for a hint), BUSY (leadership transfer in progress, or the
 * tail holds too many undurable entries), TOO_LARGE. */
int raft_propose(struct raft *r, uint64_t now_ms, const void *data, uint32_t len, uint64_t *index,
                 uint64_t *term);
/* The log up to (index, term) is durable (contract step 5). Stale reports are ignored. */
int raft_persisted(struct raft *r, uint64_t now_ms, uint64_t index, uint64_t term);
/* The state machine has applied everything up to index. */
int raft_applied(struct raft *r, uint64_t now_ms, uint64_t index);
/* Linearizable read: the answer comes in u.reads with the same context. On a follower the
 * request goes to the leader. NOT_LEADER if no leader is known, BUSY if too many pending. */
int raft_read_index(struct raft *r, uint64_t now_ms, uint64_t context);
/* Leader: hand leadership to voter `to` (catch it up, then RAFT_MSG_TIMEOUT_NOW). Proposals
 * get BUSY until it completes or an election timeout passes. */
int raft_transfer(struct raft *r, uint64_t now_ms, uint64_t to);
/* Leader: propose a single-server membership change. BUSY if one is uncommitted,
 * AGAIN if the leader has not committed an entry of its term yet or a promoted learner
 * has not caught up, EXISTS / NOT_FOUND / INVALID for impossible changes. Sets *index. */
int raft_conf_change(struct raft *r, uint64_t now_ms, enum raft_conf_op op, uint64_t id,
                     uint64_t *index);
/* Leader: the snapshot sent to `to` was delivered (ok) or failed. */
int raft_report_snapshot(struct raft *r, uint64_t now_ms, uint64_t to, bool ok);
/* Start an election now (tests, bootstrap). NOT_LEADER-free no-op for non-voters. */
int raft_campaign(struct raft *r, uint64_t now_ms);

/* Collects the pending output into *u (contract above). Returns true if there was
 * anything to do; call until it returns false. */
bool raft_ready(struct raft *r, struct raft_update *u);

/* ---- inspection --------------------------------------------------------------------- */

struct raft_status {
    uint64_t id;
    uint8_t role;
    uint64_t term;
    uint64_t vote;
    uint64_t leader;
    uint64_t commit;
    uint64_t applied;
    uint64_t persisted;
    uint64_t last_index;
    uint64_t last_term;
    uint64_t snapshot_index;
    uint64_t conf_index; /* index of the conf entry in force (0 = bootstrap/snapshot) */
    struct raft_conf conf;
    uint64_t transfer_target; /* 0 = none */
};

void raft_status(const struct raft *r, struct raft_status *st);

/* A leader's view of one member's replication (read-only; metrics, status). */
struct raft_progress {
    uint64_t match; /* highest index known durable there (the leader's own: persisted) */
    uint64_t next;  /* next index to send */
    uint8_t state;  /* 0 probe, 1 replicate, 2 snapshot */
    bool voter;
    bool recent_active; /* heard from since the last check-quorum round */
};
/* 0, -TRINE_ENOT_LEADER (only a leader tracks progress) or -TRINE_ENOT_FOUND (id is not
 * in the configuration). */
int raft_progress(const struct raft *r, uint64_t id, struct raft_progress *out);
uint64_t raft_leader(const struct raft *r);
uint64_t raft_deadline(const struct raft *r);
/* Detail of the last error returned by an event function. */
const struct trine_err *raft_error(const struct raft *r);

const char *raft_role_name(uint8_t role);
const char *raft_msg_type_name(uint8_t type);

#endif
