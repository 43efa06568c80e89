/*
 * raft_int.h - the core's internal state and the functions its files share.
 * Not part of the API: only the .c files of internal/raft include it.
 *
 * Files by concern:
 *   raft.c        create/destroy, event entry points, message dispatch by term, raft_ready
 *   log.c         in-memory tail (mirrored entry ring + byte ring), storage reads, scratch
 *   election.c    roles, timers, pre-vote, votes, check-quorum
 *   replication.c leader sends, follower appends, append responses, commit rule
 *   progress.c    per-follower replication state and the in-flight window
 *   readindex.c   ReadIndex (leader and follower), heartbeat rounds, leases
 *   snapshot.c    sending, installing and reporting snapshots
 *   transfer.c    leadership transfer
 *   membership.c  conf encoding, conf changes, learners, conf rebuild after truncation
 */
#ifndef TRINE_RAFT_RAFT_INT_H
#define TRINE_RAFT_RAFT_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "base/rand.h"
#include "base/status.h"
#include "raft/raft.h"

/* ---- progress (leader's view of one member, itself included) ---------------------------- */

enum pr_state { PR_PROBE = 0, PR_REPLICATE, PR_SNAPSHOT };

struct progress {
    uint64_t id;
    uint64_t match;            /* highest index known to be durable there */
    uint64_t next;             /* next index to send */
    uint64_t commit_sent;      /* highest commit index sent to it */
    uint64_t pending_snapshot; /* SNAPSHOT: index of the snapshot sent */
    uint64_t snapshot_due_ms;  /* SNAPSHOT: give up waiting at this time */
    uint64_t ack_round;        /* highest heartbeat round it acknowledged */
    /* In-flight appends in REPLICATE: ring of the last index each carried. */
    uint64_t infl[RAFT_INFLIGHT_MAX];
    uint32_t infl_head;
    uint32_t infl_count;
    uint8_t state; /* enum pr_state */
    bool voter;
    bool probe_sent;    /* PROBE: one append is out, wait for an answer */
    bool recent_active; /* heard from since the last check-quorum round */
    bool resend_due;    /* heartbeat showed it behind: poke it with an append */
};

/* ---- log ------------------------------------------------------------------------------- */

struct raft_log {
    /* Tail: entries [tail_first, last] in memory. ents has 2*cap slots and every entry is
     * written at slot (index & mask) and slot (index & mask) + cap, so any run of up to cap
     * consecutive entries is one contiguous array (&ents[first & mask]). */
    struct raft_entry *ents;
    uint32_t *gap; /* bytes skipped before each entry's data (byte ring wrap), per slot */
    uint32_t cap;
    uint32_t mask;
    uint64_t tail_first;
    /* Byte ring holding the tail's data: allocations in index order, skipping to 0 when the
     * end is too short; bytes_used counts data and skipped gaps. */
    uint8_t *bytes;
    uint64_t bytes_cap;
    uint64_t wpos;
    uint64_t bytes_used;

    uint64_t last;                  /* last index of the whole log */
    uint64_t last_term;             /* its term */
    struct raft_snapshot_meta snap; /* latest snapshot the core knows of */
    uint64_t persisted;             /* log durable up to here (raft_persisted), <= last */
    uint64_t emit_from;             /* entries >= this not yet handed out for persistence */
    uint64_t commit;
    uint64_t delivered; /* committed entries handed out for apply */
    uint64_t applied;   /* raft_applied */

    /* Scratch for entries read from storage; reset at every entry point. */
    struct raft_entry *sc_ents;
    uint32_t sc_ents_cap;
    uint32_t sc_ents_used;
    uint8_t *sc_bytes;
    uint64_t sc_bytes_cap;
    uint64_t sc_bytes_used;
};

/* ---- reads ----------------------------------------------------------------------------- */

struct read_req {
    uint64_t context;
    uint64_t from;  /* requesting node (self or a follower) */
    uint64_t index; /* commit index when the round started; 0 = waiting for a term commit */
    uint64_t round; /* heartbeat round that must be acknowledged by a majority */
};

#define ROUND_TIMES 64 /* send times of the last heartbeat rounds, for leases */

/* ---- the instance ---------------------------------------------------------------------- */

struct raft {
    struct raft_config cfg;
    struct raft_storage st;
    struct rng rng;
    uint64_t id;
    uint64_t now_ms;

    /* durable */
    uint64_t term;
    uint64_t vote;

    /* soft */
    uint64_t leader;
    uint64_t election_due_ms;
    uint64_t heartbeat_due_ms;
    uint64_t cq_due_ms;     /* next check-quorum round (leader) */
    uint64_t last_heard_ms; /* last message from a leader (lease of followers) */
    uint64_t vote_guard_ms; /* refuse votes before this time (lease reads after restart) */
    uint32_t votes_granted; /* bit per progress slot */
    uint32_t votes_rejected;

    struct raft_log log;

    /* membership */
    struct raft_conf conf;
    uint64_t conf_index;
    struct progress prs[RAFT_SERVERS_MAX]; /* one per conf member, same order as conf */
    uint32_t n_prs;

    /* reads: FIFO ring */
    uint32_t reads_head;
    uint32_t reads_count;
    struct read_req *reads;
    uint64_t round; /* last heartbeat round sent */
    uint64_t round_time[ROUND_TIMES];

    /* leader */
    uint64_t term_start; /* index of this leader's first entry (its no-op) */
    uint64_t transfer_target;
    uint64_t transfer_due_ms;

    /* output */
    struct raft_msg *out;
    struct raft_read *reads_out;
    uint32_t n_out;
    uint32_t n_reads_out;
    uint32_t reads_out_cap;
    struct raft_snapshot_meta snap_send; /* meta carried by RAFT_MSG_SNAPSHOT this update */
    struct raft_snapshot_meta snap_install;
    uint64_t rollback_from;
    uint64_t rollback_to;
    uint64_t leader_durable; /* last value reported */
    uint64_t leader_durable_new;
    uint64_t soft_leader; /* last reported soft state */
    uint64_t soft_term;
    uint64_t soft_commit;

    struct trine_err err;

    /* flags, together to keep the struct dense */
    uint8_t role;
    uint8_t soft_role;
    bool hs_dirty;
    bool campaign_transfer; /* current campaign comes from RAFT_MSG_TIMEOUT_NOW */
    bool transfer_sent;
    bool lease_off;    /* a transfer was started this term: no lease reads */
    bool round_wanted; /* reads are waiting for a new round */
    bool snap_send_valid;
    bool snap_install_pending;
    bool rollback_exact;
};

/* ---- raft.c ---------------------------------------------------------------------------- */

/* Queues a message (dropped when the outbox is full: Raft tolerates loss). Returns the slot
 * or NULL. Fills type/from/to/term. */
struct raft_msg *raft_out(struct raft *r, uint8_t type, uint64_t to);
bool raft_out_full(const struct raft *r, uint32_t reserve);
void raft_read_out(struct raft *r, uint64_t context, uint64_t index, int status);

/* ---- log.c ----------------------------------------------------------------------------- */

int log_create(struct raft *r);
void log_destroy(struct raft *r);
int log_restore(struct raft *r);
void log_scratch_reset(struct raft *r);
/* Term of entry i: 0, -TRINE_ESTALE (compacted), -TRINE_EINVALID (beyond last), -TRINE_EIO. */
int log_term(struct raft *r, uint64_t i, uint64_t *term);
/* Term of i, or 0 when unknown (compacted or beyond last). */
uint64_t log_term_or0(struct raft *r, uint64_t i);
/* Appends at last + 1. -TRINE_EBUSY if the tail has no room (undurable entries fill it). */
int log_append(struct raft *r, uint64_t term, uint8_t type, uint8_t flags, const void *data,
               uint32_t len);
/* Drops entries >= from (from > commit). */
void log_truncate(struct raft *r, uint64_t from);
/* Entries [lo, hi) (hi <= last + 1), at most max_n entries and bytes_max bytes (at least one
 * if any): a borrowed array from the tail or the scratch. *n = 0 only if lo == hi or the
 * scratch is exhausted. -TRINE_ESTALE if lo is compacted. */
int log_slice(struct raft *r, uint64_t lo, uint64_t hi, uint32_t max_n, uint64_t bytes_max,
              const struct raft_entry **out, uint32_t *n);
/* Entry i if it is in the tail, else NULL. */
const struct raft_entry *log_tail_entry(struct raft *r, uint64_t i);
/* Largest j <= index with term(j) <= term (fast backtracking). */
uint64_t log_find_conflict_by_term(struct raft *r, uint64_t index, uint64_t term);
bool log_up_to_date(struct raft *r, uint64_t index, uint64_t term);
void log_install_snapshot(struct raft *r, const struct raft_snapshot_meta *meta);
/* Lowest index whose entry can be read (tail or storage); last + 1 if none. */
uint64_t log_first_entry(struct raft *r);
/* Lowest index whose term is known: a snapshot point (the core's, or storage's first - 1)
 * below the first readable entry, or that entry itself. */
uint64_t log_first_known(struct raft *r);

/* ---- election.c ------------------------------------------------------------------------ */

void election_reset_timer(struct raft *r);
void election_become_follower(struct raft *r, uint64_t term, uint64_t leader);
void election_become_leader(struct raft *r);
void election_campaign(struct raft *r, bool pre_vote, bool transfer);
void election_tick(struct raft *r);
void election_recv_vote(struct raft *r, const struct raft_msg *m);
void election_recv_vote_resp(struct raft *r, const struct raft_msg *m);
bool election_in_lease(const struct raft *r);
bool election_self_voter(const struct raft *r);
/* Number of votes that make a majority of the current voters. */
uint32_t election_quorum(const struct raft *r);

/* ---- progress.c ------------------------------------------------------------------------ */

struct progress *progress_get(struct raft *r, uint64_t id);
int progress_slot(const struct raft *r, uint64_t id);
void progress_reset(struct raft *r, struct progress *pr);
void progress_become_probe(struct progress *pr);
void progress_become_replicate(struct progress *pr);
void progress_become_snapshot(struct raft *r, struct progress *pr, uint64_t index);
bool progress_paused(const struct raft *r, const struct progress *pr);
void progress_sent(struct raft *r, struct progress *pr, uint64_t last_index, uint32_t n);
/* Success ack up to index; returns true if match grew. */
bool progress_ack(struct raft *r, struct progress *pr, uint64_t index);
/* Rejection of the append after `rejected`; returns true if next moved (resend). */
bool progress_reject(struct progress *pr, uint64_t rejected, uint64_t match_hint);
void progress_free_first(struct raft *r, struct progress *pr);
/* Rebuilds prs[] for r->conf, keeping the state of members that stay. */
void progress_rebuild(struct raft *r);

/* ---- replication.c --------------------------------------------------------------------- */

void repl_flush(struct raft *r);
void repl_send_heartbeats(struct raft *r, uint64_t round);
void repl_recv_append(struct raft *r, const struct raft_msg *m);
void repl_recv_append_resp(struct raft *r, const struct raft_msg *m);
void repl_recv_heartbeat(struct raft *r, const struct raft_msg *m);
void repl_recv_heartbeat_resp(struct raft *r, const struct raft_msg *m);
void repl_maybe_commit(struct raft *r);
void repl_commit_to(struct raft *r, uint64_t commit);
/* Entries [from, last] are about to be dropped: records the rollback range if any of them
 * may carry RAFT_ENTRY_LOCAL. exact = false when the cause is a snapshot. */
void repl_note_rollback(struct raft *r, uint64_t from, bool exact);

/* ---- readindex.c ----------------------------------------------------------------------- */

int read_request(struct raft *r, uint64_t context, uint64_t from);
void read_recv_read_index(struct raft *r, const struct raft_msg *m);
void read_recv_read_index_resp(struct raft *r, const struct raft_msg *m);
void read_on_ack(struct raft *r);
void read_on_term_commit(struct raft *r);
void read_fail_all(struct raft *r);
uint64_t read_new_round(struct raft *r);
bool read_lease_valid(struct raft *r);

/* ---- snapshot.c ------------------------------------------------------------------------ */

/* Sends the latest snapshot to pr (compacted entries); false if none available. */
bool snapshot_send(struct raft *r, struct progress *pr);
void snapshot_recv(struct raft *r, const struct raft_msg *m);
void snapshot_tick(struct raft *r);
int snapshot_report(struct raft *r, uint64_t to, bool ok);

/* ---- transfer.c ------------------------------------------------------------------------ */

int transfer_start(struct raft *r, uint64_t to);
void transfer_maybe_send(struct raft *r, struct progress *pr);
void transfer_tick(struct raft *r);
void transfer_abort(struct raft *r);
void transfer_recv_timeout_now(struct raft *r, const struct raft_msg *m);

/* ---- membership.c ---------------------------------------------------------------------- */

int conf_change(struct raft *r, enum raft_conf_op op, uint64_t id, uint64_t *index);
/* A conf entry was appended (by leader or follower) at index: it takes effect now. */
void conf_apply(struct raft *r, const struct raft_conf *conf, uint64_t index);
/* After truncation below conf_index: find the latest conf entry <= last again. */
void conf_rebuild(struct raft *r);
/* Commit advanced: a leader that removed itself steps down once the change commits. */
void conf_on_commit(struct raft *r);

#endif
