/*
 * sim.h - deterministic simulated cluster for the Raft core (tests only).
 *
 * A sim holds n nodes (ids 1..n) and g Raft groups; every node hosts one
 * replica of every group (a replica outside a group's configuration stays
 * passive until it is added). Time is a global logical clock in ms. Nodes
 * share nothing but the fake network, which can drop, duplicate, delay
 * (hence reorder) messages and cut links one way or both. A crash destroys a
 * node's cores and everything not yet fsynced; restart rebuilds them from the
 * durable state. The checker (check.c) looks at every update.
 *
 * Persistence model per replica: `w` is what the caller has written (hard
 * state, snapshot, log) and `d` what is durable; an fsync (per node, after a
 * seeded delay) copies w to d, releases the messages held back by the
 * persistence contract and reports raft_persisted. Storage callbacks read d.
 *
 * Two driving modes: auto (messages in a time-ordered heap, used by the
 * seeded runs and the bench) and manual (messages wait in a FIFO until a
 * scenario delivers or drops them).
 */
#ifndef TRINE_TESTS_RAFT_SIM_H
#define TRINE_TESTS_RAFT_SIM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base/rand.h"
#include "raft/raft.h"

#define SIM_NODES_MAX 7
#define SIM_DATA_MAX  72 /* conf of 7 servers = 67 bytes; workload data is smaller */

struct sim_entry {
    uint64_t term;
    uint64_t index;
    uint64_t chain; /* hash of this entry and all before it */
    uint32_t len;
    uint8_t type;
    uint8_t flags;
    uint8_t data[SIM_DATA_MAX];
};

/* Entries base+1 .. base+n; the snapshot sits at base. */
struct sim_log {
    uint64_t base;
    uint64_t base_term;
    uint64_t base_chain;
    struct sim_entry *v;
    uint32_t n;
    uint32_t cap;
};

/* A snapshot: metadata plus the (hashed) state-machine image. */
struct sim_snap {
    struct raft_snapshot_meta meta;
    uint64_t chain; /* chain hash at meta.index: the state machine's whole content */
};

struct sim_state {
    struct raft_hard_state hs;
    struct sim_snap snap;
    struct sim_log log;
};

struct net_msg;

/* A client write attempt waiting for its ack on the node that took it. */
struct sim_attempt {
    uint64_t req; /* request id (the entry's data) */
    uint64_t index;
    uint64_t term;
    bool fast; /* reported durable on the leader (fast ack given) */
};

struct sim_group;
struct sim;

struct sim_rep {
    struct sim *s;
    struct sim_group *g;
    uint64_t id;
    struct raft *r; /* NULL while the node is down */
    uint64_t deadline;
    struct sim_state w;  /* written */
    struct sim_state d;  /* durable */
    uint64_t dirty_from; /* lowest log index written since the last fsync (UINT64_MAX: none) */
    bool dirty_snap;
    bool dirty;
    struct net_msg **held; /* messages waiting for the next fsync */
    uint32_t n_held;
    uint32_t cap_held;
    /* state machine (volatile: rebuilt from d.snap on restart) */
    uint64_t applied;
    uint64_t chain;
    struct raft_conf conf;
    /* last snapshot image received, for the update that installs it */
    struct sim_snap rx_snap;
    bool rx_snap_valid;
    /* soft state seen */
    uint8_t role;
    uint64_t term;
    uint64_t commit;
    struct sim_attempt *att;
    uint32_t n_att;
    uint32_t cap_att;
    uint64_t rollbacks;     /* rollback records made (fast mode) */
    uint64_t durable_index; /* last leader_durable_index reported */
    uint64_t conf_index;    /* configuration last traced */
};

struct chk; /* check.c */

struct sim_group {
    uint32_t gi;
    struct sim_rep reps[SIM_NODES_MAX];
    struct chk *chk;
    /* workload (main_sim / scenarios) */
    uint64_t next_req;
};

struct sim_node {
    uint64_t id;
    bool up;
    uint64_t fsync_at; /* UINT64_MAX: none scheduled */
    uint64_t restart_at;
};

struct sim_opts {
    uint32_t nodes;
    uint32_t groups;
    uint32_t voters; /* initial voters per group: nodes 1..voters (rotated per group) */
    bool manual;
    bool checks;
    struct raft_config cfg; /* template; id and seed are set per replica */
    /* faults (auto mode) */
    uint32_t drop_permille;
    uint32_t dup_permille;
    uint32_t delay_min_ms;
    uint32_t delay_max_ms;
    uint32_t fsync_max_ms; /* fsync delay uniform in [0, fsync_max_ms] */
    /* Leader appends and heartbeats leave before the leader's own fsync (Raft
     * dissertation 10.2.1), as Trine's replica sends them, when the leader's
     * hard state is already durable. */
    bool early_append;
};

enum sim_trace_mode { SIM_TRACE_OFF = 0, SIM_TRACE_PRINT, SIM_TRACE_RING };

struct sim {
    struct sim_opts o;
    struct rng rng;
    uint64_t seed;
    uint64_t now;
    struct sim_node nodes[SIM_NODES_MAX + 1]; /* by id; [0] unused */
    struct sim_group *groups;
    /* network */
    struct net_msg **q;
    uint32_t q_n;
    uint32_t q_cap;
    uint64_t seq;
    bool link[SIM_NODES_MAX + 1][SIM_NODES_MAX + 1]; /* link[a][b]: a -> b works */
    /* failure */
    bool failed;
    char fail_msg[1024];
    /* trace */
    int trace_mode;
    FILE *trace_out;
    char (*ring)[256];
    uint32_t ring_cap;
    uint64_t ring_n;
    /* statistics */
    uint64_t steps;
    uint64_t msgs_sent;
    uint64_t msgs_delivered;
    uint64_t applied_total;
    uint64_t fast_acks;
    uint64_t rollbacks;
    uint64_t reads_served;
    uint64_t snapshots_installed;
    uint64_t elections;
    uint64_t conf_changes; /* accepted by a leader */
    uint64_t transfers;    /* started */
    uint64_t crashes;
    uint64_t starts; /* replica starts, for per-start rng seeds */
};

/* ---- sim.c ---------------------------------------------------------------------------- */

void sim_opts_default(struct sim_opts *o);
struct sim *sim_new(const struct sim_opts *o, uint64_t seed);
void sim_free(struct sim *s);
struct sim_rep *sim_rep(struct sim *s, uint32_t group, uint64_t node);

/* Auto mode: time of the next event (UINT64_MAX if none) and running one event at it. */
uint64_t sim_next_time(struct sim *s);
void sim_advance(struct sim *s, uint64_t t);
/* Runs everything due at s->now: deliveries, fsyncs, ticks. Returns events run. */
uint32_t sim_step(struct sim *s);

/* Manual mode: deliver (or drop) queued messages matching from/to/type (0 = any). Only those
 * queued at the call are considered. Returns the number delivered. */
uint32_t sim_deliver(struct sim *s, uint64_t from, uint64_t to, uint8_t type, bool drop);
uint32_t sim_pending(struct sim *s, uint64_t from, uint64_t to, uint8_t type);
/* Ticks every replica whose deadline passed at s->now. */
void sim_tick_due(struct sim *s);
/* fsyncs every node with pending writes now. */
void sim_sync_all(struct sim *s);

void sim_crash(struct sim *s, uint64_t node);
void sim_restart(struct sim *s, uint64_t node);
void sim_set_link(struct sim *s, uint64_t a, uint64_t b, bool up);
void sim_heal(struct sim *s);

/* Client operations on group g at node n; return the core's status. */
int sim_propose(struct sim *s, uint32_t g, uint64_t n, uint64_t req);
int sim_read(struct sim *s, uint32_t g, uint64_t n, uint64_t ctx);
int sim_conf_change(struct sim *s, uint32_t g, uint64_t n, enum raft_conf_op op, uint64_t id);
int sim_transfer(struct sim *s, uint32_t g, uint64_t n, uint64_t to);
int sim_campaign(struct sim *s, uint32_t g, uint64_t n);
/* Takes a snapshot at the state machine's applied index and compacts the log up to it minus
 * keep entries. */
void sim_compact(struct sim *s, uint32_t g, uint64_t n, uint32_t keep);

/* After any direct call on a replica's core: drain its updates. */
void sim_drain(struct sim_rep *rep);

/* Leader of group g as seen by an up replica in the highest term, or 0. */
uint64_t sim_leader(struct sim *s, uint32_t g);

/* ---- trace.c -------------------------------------------------------------------------- */

void sim_trace(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sim_fail(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sim_trace_ring(struct sim *s, uint32_t cap);
void sim_trace_dump(struct sim *s, FILE *f);
const char *sim_msg_str(const struct raft_msg *m, char *buf, size_t n);

/* ---- check.c -------------------------------------------------------------------------- */

struct chk *chk_new(void);
void chk_free(struct chk *c);
/* Hooks called by sim.c */
void chk_on_append(struct sim_rep *rep, const struct sim_entry *e);
void chk_on_soft(struct sim_rep *rep, uint8_t role, uint64_t term, uint64_t commit);
void chk_on_apply(struct sim_rep *rep, const struct raft_entry *e, uint64_t chain);
void chk_on_read_ready(struct sim_rep *rep, const struct raft_read *rd);
void chk_on_install(struct sim_rep *rep, const struct sim_snap *snap);
void chk_on_rollback(struct sim_rep *rep, const struct sim_entry *e, bool exact);
void chk_on_fast(struct sim_rep *rep, uint64_t term, uint64_t durable_index);
void chk_on_crash(struct sim_rep *rep);
void chk_on_write(struct sim_rep *rep, uint64_t req, uint64_t index, uint64_t term);
void chk_on_read(struct sim_rep *rep, uint64_t ctx);
/* Per step: durable-commit check and reads that became servable. */
void chk_step(struct sim *s);
/* End of run: fast acks resolved, every pending request acked. */
void chk_final(struct sim *s);
uint64_t chk_commit(const struct chk *c);
uint64_t chk_pending_writes(const struct chk *c);
bool chk_req_acked(const struct chk *c, uint64_t req);
uint64_t chk_pending_reads(const struct chk *c);
/* Read result for a scenario: 0 pending, 1 served (index set), -1 failed. */
int chk_read_result(const struct chk *c, uint64_t ctx, uint64_t *index);
uint64_t chain_next(uint64_t prev, uint64_t term, uint64_t index, uint8_t type, const uint8_t *data,
                    uint32_t len);

#endif
