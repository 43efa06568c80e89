/*
 * replica_int.h - state shared by the replica's source files. Not an API.
 *
 * Files by concern:
 *   replica.c   open/close, node.meta, reconciliation at start, status, metrics
 *   plog.c      per-partition log view over the WAL (term runs, first/last, snapshot mark),
 *               the struct raft_storage callbacks, WAL replay
 *   round.c     replica_process: the ready loop, one wal_submit per round, release after fsync
 *   net.c       raft_msg <-> codec conversion, per-peer raft_batch coalescing, inbound frames
 *   ops.c       client writes and reads, waiters, completion
 *   snap.c      snapshot streaming (leader), installing (follower), compaction
 *   tick.c      timers: raft ticks, timeouts, TTL expiry, preferred-primary transfer, shutdown
 *   cmd.c       command payload encode/decode, rollback file
 *
 * WAL payloads owned here (records carry partition, type, term, index themselves):
 *   WAL_ENTRY      u8 raft entry type | u8 entry flags | entry data
 *   WAL_HARDSTATE  u64be vote                      (term in the record)
 *   WAL_SNAPSHOT   raft_conf_encode() bytes         (index, term in the record)
 *   WAL_TRUNCATE   empty                            (index in the record)
 */
#ifndef TRINE_REPLICA_REPLICA_INT_H
#define TRINE_REPLICA_REPLICA_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/status.h"
#include "codec/codec.h"
#include "raft/raft.h"
#include "replica/replica.h"
#include "store/store.h"
#include "wal/wal.h"

#define ENTRY_HDR_BYTES 2 /* WAL_ENTRY payload header: type, flags */

/* ---- arena: stable memory for one processing round -------------------------------------- */

struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    uint8_t data[];
};

struct arena {
    struct arena_block *head;
};

void *arena_alloc(struct arena *a, size_t n);
void *arena_copy(struct arena *a, const void *p, size_t n);
void arena_reset(struct arena *a); /* keeps one block */
void arena_free(struct arena *a);

/* ---- per-partition log view (plog.c) -------------------------------------------------- */

struct term_run {
    uint64_t start; /* first index of a run of entries with the same term */
    uint64_t term;
};

struct plog {
    struct raft_snapshot_meta snap; /* latest snapshot mark */
    uint64_t first;                 /* entries [first, last] held; empty if last < first */
    uint64_t last;
    struct term_run *runs; /* ascending start; runs[0].start <= first */
    uint32_t n_runs, cap_runs;
    struct raft_hard_state hs;
    bool seen; /* any record replayed */
};

int plog_append(struct plog *l, uint64_t index, uint64_t term); /* truncates >= index first */
void plog_truncate(struct plog *l, uint64_t from);              /* drops >= from */
void plog_compact(struct plog *l, uint64_t upto);               /* drops <= upto */
/* Applies a snapshot mark: drops <= index; drops everything when the log conflicts there. */
void plog_mark(struct plog *l, const struct raft_snapshot_meta *m);
int plog_term(const struct plog *l, uint64_t index, uint64_t *term);
void plog_free(struct plog *l);

/* ---- operations ------------------------------------------------------------------------ */

enum waiter_kind { W_WRITE = 1, W_GET, W_SCAN };

struct waiter;
struct wlist {
    struct waiter *head, *tail;
};

struct group;

struct waiter {
    uint64_t id;
    struct group *g;
    uint8_t kind;
    uint8_t want;          /* consistency requested (enum replica_consistency) */
    uint8_t served;        /* consistency achieved/served */
    uint8_t op;            /* writes: enum replica_op_type */
    uint64_t index;        /* write: proposal index; read: index to reach (0 = waiting ReadIndex) */
    uint64_t term;         /* write: proposal term */
    uint64_t min_revision; /* read */
    bool ready;            /* read: index known */
    bool min_wait;         /* read: waiting only for min_revision (timeout -> STALE) */
    bool applied;          /* `all` write: store result known */
    struct store_result sres;
    uint64_t expire_at_ms;
    uint64_t deadline_ms;
    replica_done_fn done;
    void *arg;
    /* reads: copies */
    uint8_t *key, *prefix, *start_after;
    uint32_t key_len, prefix_len, start_after_len, limit;
    /* lists: group list (writes, `all` waiters or reads) and the global list */
    struct wlist *list; /* the group list it is in, NULL if none */
    struct waiter *prev, *next;
    struct waiter *gprev, *gnext;
};

struct done_item {
    replica_done_fn done;
    void *arg;
    struct replica_result res;
};

/* ---- snapshot streams (snap.c) ---------------------------------------------------------- */

struct snap_out {
    struct snap_out *next;
    struct group *g;
    uint64_t to;
    uint64_t term;
    struct store_snapshot *ss;
    struct raft_snapshot_meta meta;
    uint64_t sent, acked;
    uint32_t crc;
    bool finished;
    uint64_t last_ack_ms;
};

struct snap_in {
    uint64_t from;
    uint64_t term;
    struct raft_snapshot_meta meta;
    struct store_install *in;
    uint64_t next;
    uint32_t crc;
    bool offered; /* complete and handed to raft as RAFT_MSG_SNAPSHOT */
    uint64_t last_ms;
};

/* ---- one hosted partition ---------------------------------------------------------------- */

struct peer {
    uint64_t id;
    bool voter;
    uint64_t match;    /* leader: highest index known durable there (APPEND_RESP) */
    uint64_t heard_ms; /* last message of this group from it */
};

struct metric;

/* Leader: at time ms, just before an append, the log ended at index (lag.c in replica.c). */
struct lag_sample {
    uint64_t index;
    uint64_t ms;
};
#define LAG_SAMPLES 32

struct group {
    struct replica *rep;
    uint32_t partition;
    struct raft *raft;
    struct plog log;
    struct raft_conf conf; /* static membership: the ring's replica set */
    uint64_t preferred;
    uint32_t n_peers; /* others, self excluded */
    struct peer peers[REPLICA_PEERS_MAX];

    /* soft state from the last update */
    uint8_t role;
    uint64_t term;
    uint64_t leader;
    uint64_t commit;
    uint64_t deadline_ms;
    uint64_t lead_since_ms;

    uint64_t applied;                                   /* store's applied index */
    uint64_t persisted_note_index, persisted_note_term; /* this round's raft_persisted */
    bool persisted_note;
    uint64_t
        hs_seq; /* WAL submission holding the last hard-state change (durable_seq >= it: durable) */

    struct wlist writes; /* proposals, ascending index */
    struct wlist alls;   /* `all` writes applied, waiting for every replica */
    struct wlist reads;

    struct snap_in *inst;
    uint64_t compact_index, compact_term; /* mark to write in the next round (0 = none) */
    uint64_t expire_wait;                 /* EXPIRE proposals pending up to this index */
    uint64_t transfer_next_ms;

    /* Leader: append times for the followers' lag in seconds, ascending; lag[0] is the
     * latest sample every follower has passed (rep_lag_note, rep_follower_lag). */
    struct lag_sample lag[LAG_SAMPLES];
    uint32_t n_lag;
    uint64_t lag_term; /* term the samples belong to */
    uint64_t lag_base; /* the log's last index when this term's first entry was appended */
};

/* ---- a processing round ------------------------------------------------------------------ */

struct peer_out {
    uint64_t to;
    struct codec_raft_msg *msgs; /* in the arena */
    uint32_t n, cap;
    uint64_t bytes;
};

struct peer_outs {
    struct peer_out *v;
    uint32_t n, cap;
};
enum { OUT_HELD, OUT_NOW };

struct persist_note {
    struct group *g;
    uint64_t index, term;
};

struct release_note {
    struct group *g;
    uint64_t index;
};

struct snap_note {
    struct group *g;
    uint64_t to;
};

struct round {
    struct round *next;
    uint64_t seq;      /* WAL submission that must be durable first */
    struct buf frames; /* concatenated frames: u64 to | u32 len | frame */
    struct persist_note *persist;
    uint32_t n_persist;
    struct release_note *release;
    uint32_t n_release;
    struct snap_note *snaps;
    uint32_t n_snaps;
};

/* ---- the replica -------------------------------------------------------------------------- */

struct replica {
    struct replica_config cfg;
    char *dir;
    struct codec_limits lim;
    struct wal *wal;
    struct store *store;
    struct trine_err err;

    uint32_t n_groups;
    struct group *groups;   /* ascending partition */
    struct group **by_part; /* partitions entries, NULL if not hosted */

    /* the round being built */
    struct arena arena;
    struct wal_record *recs;
    uint32_t n_recs, cap_recs;
    /* Per-peer batches: OUT_HELD wait for the round's fsync; OUT_NOW (a leader's
     * appends and heartbeats) are sent at the end of the round. */
    struct peer_outs outs[2];
    struct round *cur;
    struct round *rounds_head, *rounds_tail; /* waiting for their fsync */
    uint64_t submitted_seq;
    _Atomic uint64_t durable_seq;
    _Atomic int wal_failed;
    bool dirty; /* work for replica_process */

    /* inbound */
    struct codec_scratch *scratch;
    struct raft_entry *in_ents;
    uint32_t cap_in_ents;

    /* operations */
    uint64_t next_waiter_id;
    uint32_t n_waiters;
    struct waiter *all_head; /* global list (timeouts) */
    struct buf scan_buf;
    struct replica_kv *scan_items;
    size_t *scan_offs; /* key, value offsets in scan_buf per item */
    uint32_t cap_scan_items;
    struct buf cmd_buf;
    struct done_item *done_q;
    uint32_t n_done, cap_done;

    struct snap_out *snaps_out;
    struct buf chunk;

    /* peers marked unreachable by the transport */
    uint64_t down[64];
    uint32_t n_down;

    bool shutting_down;
    uint64_t shutdown_deadline_ms;

    int rollback_fd;
    struct replica_stats stats;
    struct metric *m_proposals, *m_applied, *m_rollbacks, *m_rollbacks_uncertain, *m_snap_sent,
        *m_snap_recv, *m_ignored, *m_bad, *m_compactions;
    /* updated on the WAL's sync thread (rep_wal_batch); registered before wal_open */
    struct metric *m_fsync_seconds, *m_batch_records, *m_batch_bytes;
    bool collector; /* rep_collect registered with cfg.metrics */
};

/* ---- shared functions ------------------------------------------------------------------- */

/* replica.c */
uint64_t rep_now_ms(const struct replica *r);
uint64_t rep_real_ms(const struct replica *r);
struct group *rep_group(const struct replica *r, uint32_t partition);
struct peer *group_peer(struct group *g, uint64_t id);
bool rep_peer_down(const struct replica *r, uint64_t id);
/* Leader lag bookkeeping: notes the append times of u's entries (called for every
 * update; cheap unless this node leads and u appends). */
void rep_lag_note(struct group *g, const struct raft_update *u);
/* Leader: follower lag in entries (last index - match) and in ms (age of its oldest
 * entry not durable there; 0 if none). */
void rep_follower_lag(struct group *g, uint64_t last_index, uint64_t match, uint64_t now_ms,
                      uint64_t *entries, uint64_t *ms);
/* Voter `id` heard from recently and not marked down. */
bool group_peer_active(struct group *g, const struct peer *p, uint64_t now_ms);

/* plog.c */
void plog_storage(struct group *g, struct raft_storage *st);
int plog_replay(void *ctx, const struct wal_record *rec);
/* Reads entries [lo, hi] of g from the WAL into fn (payload decoded). */
typedef int (*plog_read_fn)(void *ctx, const struct raft_entry *e);
int plog_read(struct group *g, uint64_t lo, uint64_t hi, plog_read_fn fn, void *ctx,
              uint64_t *count);

/* round.c */
int round_add_record(struct replica *r, uint32_t partition, uint8_t type, uint64_t term,
                     uint64_t index, const void *payload, uint32_t len);
int round_add_frame(struct replica *r, uint64_t to, const struct buf *frame);
void round_note_release(struct replica *r, struct group *g, uint64_t index);
void round_free_all(struct replica *r);

/* net.c */
int net_queue_msg(struct replica *r, struct group *g, const struct raft_msg *m, bool now);
int net_flush_outs(struct replica *r); /* encodes this round's batches into round frames */
int net_send_frame(struct replica *r, uint64_t to, const struct codec_msg *m);

/* ops.c */
void ops_on_leader_durable(struct group *g, uint64_t index, uint64_t term);
void ops_on_applied(struct group *g, const struct raft_entry *e, const struct store_result *res,
                    const struct store_op *op);
void ops_on_read_index(struct group *g, const struct raft_read *rd);
/* Fails the reads still waiting for a ReadIndex answer (leader change). */
void ops_fail_unready_reads(struct group *g, int status, const char *why);
void ops_serve_reads(struct group *g);
void ops_check_alls(struct group *g);
void ops_fail_range(struct group *g, uint64_t from, uint64_t to, int status, const char *why);
void ops_fail_below(struct group *g, uint64_t upto, int status, const char *why);
void ops_timeouts(struct replica *r, uint64_t now_ms);
/* Delivers queued write completions (outside any Raft iteration). */
void ops_flush_done(struct replica *r);
void ops_fail_all(struct replica *r, int status, const char *why);
void ops_unavailable_alls(struct group *g, uint64_t now_ms);

/* snap.c */
void snap_start(struct replica *r, struct group *g, uint64_t to);
void snap_pump(struct replica *r);
void snap_on_ack(struct replica *r, struct group *g, const struct codec_snapshot_ack *a);
int snap_on_chunk(struct replica *r, struct group *g, const struct codec_snapshot_chunk *c);
/* u.snapshot of g: finish the install; adds the WAL records. */
int snap_install(struct replica *r, struct group *g, const struct raft_snapshot_meta *m);
void snap_after_ready(struct replica *r, struct group *g);
void snap_drop_group(struct replica *r, struct group *g, bool leader_only);
void snap_tick(struct replica *r, uint64_t now_ms);
int snap_compact(struct replica *r, uint64_t now_ms);
void snap_free(struct replica *r);
void meta_to_codec(const struct raft_snapshot_meta *m, struct codec_snapshot_meta *c,
                   uint64_t *ids /* 2 * RAFT_SERVERS_MAX */);
int meta_from_codec(const struct codec_snapshot_meta *c, struct raft_snapshot_meta *m);

/* cmd.c */
struct cmd {
    uint8_t op; /* enum codec_cmd_op */
    const uint8_t *key;
    uint32_t key_len;
    const uint8_t *value;
    uint32_t value_len;
    uint64_t expected_version, expire_at_ms, client_id, seq, expect_mod_revision, now_ms;
    bool fast; /* may be acknowledged before commit: a rollback of it is recorded */
};
int cmd_encode(struct replica *r, const struct cmd *c, struct buf *out);
int cmd_decode(struct replica *r, const uint8_t *data, uint32_t len, struct cmd *c);
/* Fills op for a committed entry (NOOP for no-op/conf entries); stops the process
 * (trine_fatal) on data it cannot decode: skipping would diverge the replicas. */
void cmd_to_store_op(struct replica *r, const struct raft_entry *e, struct store_op *op);
int rollback_record(struct replica *r, struct group *g, uint64_t from, uint64_t to, bool exact);

#endif
