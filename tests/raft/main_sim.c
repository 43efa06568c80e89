/*
 * main_sim.c - raft_sim: seeded randomized simulation of several Raft groups
 * with faults, checked after every step (check.c), then a liveness phase.
 *
 *   raft_sim --seeds N          N seeds from a base seed (rng_test_seed; $TRINE_SEED
 *                               replays a batch); exits 1 on the first violation,
 *                               printing its seed, the message and the last trace lines
 *   raft_sim --seed S [--trace] one seed; --trace prints the whole readable trace
 *   options: --run-ms T (fault phase length, default 3000)
 *
 * Each seed draws its own world: 3-5 nodes, 1-3 groups, 3 or 5 initial
 * voters, pre-vote/check-quorum mostly on (sometimes off), lease reads in some
 * seeds, message drop/duplication rates, delays (reordering), fsync delays.
 * During the fault phase it injects symmetric and one-way partitions, leader
 * isolation, crashes (losing unsynced writes) and restarts, compactions
 * (so followers need snapshots), membership changes (learners added,
 * promoted, voters and learners removed, including the leader and crashed
 * nodes) and leadership transfers, while clients write (with retries) and
 * read (ReadIndex on leaders and followers, lease reads when enabled).
 * Then the network heals and every node restarts: within LIVE_MS each group
 * must have a leader, every client request must be acknowledged and every
 * member must have applied the whole log.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim.h"

#define PENDING_MAX 4
#define RETRY_MS    150
#define LIVE_MS     4000

struct pend {
    uint64_t req;
    uint64_t last; /* time of the last attempt */
    uint64_t node; /* node that took it (0: refused) */
    uint64_t term; /* in this term */
};

struct wl {
    struct rng rng;
    struct sim *s;
    uint64_t run_ms;
    bool faults;
    bool conf_changes;
    bool transfers;
    uint64_t fault_gap; /* mean time between faults: 20 ms (chaos) to 240 ms */
    uint64_t next_write[8];
    uint64_t next_read[8];
    uint64_t next_fault;
    uint64_t next_compact;
    uint64_t next_conf;
    uint64_t next_transfer;
    uint64_t read_ctx[8];
    struct pend pend[8][PENDING_MAX];
    uint32_t n_pend[8];
};

struct totals {
    uint64_t seeds;
    uint64_t steps;
    uint64_t msgs;
    uint64_t applied;
    uint64_t elections;
    uint64_t reads;
    uint64_t snapshots;
    uint64_t rollbacks;
    uint64_t fast;
    uint64_t commits;
    uint64_t confs;
    uint64_t transfers;
    uint64_t crashes;
};

static uint64_t rnd(struct wl *w, uint64_t n)
{
    return rng_below(&w->rng, n);
}

static uint64_t up_node(struct wl *w)
{
    struct sim *s = w->s;
    for (int tries = 0; tries < 16; tries++) {
        uint64_t n = 1 + rnd(w, s->o.nodes);
        if (s->nodes[n].up) return n;
    }
    return 0;
}

static void attempt(struct wl *w, uint32_t g, struct pend *p)
{
    struct sim *s = w->s;
    uint64_t n = sim_leader(s, g);
    if (!n || rnd(w, 10) == 0) n = up_node(w);
    p->last = s->now;
    p->node = 0;
    if (n && sim_propose(s, g, n, p->req) == 0) {
        p->node = n;
        p->term = sim_rep(s, g, n)->term;
    }
}

/* A client retries when the leader that took its request is gone (or refused it); while
 * that leader still leads the same term the entry may yet commit, so it waits. */
static bool retry_due(struct wl *w, uint32_t g, const struct pend *p)
{
    struct sim *s = w->s;
    if (s->now < p->last + RETRY_MS) return false;
    if (!p->node) return true;
    struct sim_rep *rep = sim_rep(s, g, p->node);
    return !rep->r || rep->role != RAFT_LEADER || rep->term != p->term;
}

static void clients(struct wl *w, bool new_ops)
{
    struct sim *s = w->s;
    for (uint32_t g = 0; g < s->o.groups; g++) {
        struct chk *c = s->groups[g].chk;
        for (uint32_t k = 0; k < w->n_pend[g];) {
            struct pend *p = &w->pend[g][k];
            if (chk_req_acked(c, p->req)) {
                *p = w->pend[g][--w->n_pend[g]];
                continue;
            }
            if (retry_due(w, g, p))
                attempt(w, g, p);
            else if (s->now >= p->last + RETRY_MS)
                p->last = s->now; /* its leader still leads: look again later */
            k++;
        }
        if (new_ops && s->now >= w->next_write[g]) {
            w->next_write[g] = s->now + 2 + rnd(w, 15);
            if (w->n_pend[g] < PENDING_MAX) {
                struct pend *p = &w->pend[g][w->n_pend[g]++];
                p->req = s->groups[g].next_req++;
                attempt(w, g, p);
            }
        }
        if (new_ops && s->now >= w->next_read[g]) {
            w->next_read[g] = s->now + 5 + rnd(w, 30);
            uint64_t n = up_node(w);
            if (n) sim_read(s, g, n, ++w->read_ctx[g]);
        }
    }
}

static void fault(struct wl *w)
{
    struct sim *s = w->s;
    uint32_t nodes = s->o.nodes;
    uint32_t down = 0;
    for (uint64_t n = 1; n <= nodes; n++)
        down += !s->nodes[n].up;
    uint64_t pick = rnd(w, 100);
    if (pick < 25) { /* symmetric partition */
        uint64_t mask = 1 + rnd(w, (1u << nodes) - 2);
        sim_trace(s, "partition %#llx | rest", (unsigned long long)mask);
        for (uint64_t a = 1; a <= nodes; a++)
            for (uint64_t b = 1; b <= nodes; b++)
                if (((mask >> (a - 1)) & 1) != ((mask >> (b - 1)) & 1))
                    sim_set_link(s, a, b, false);
    } else if (pick < 35) { /* one-way */
        uint64_t a = 1 + rnd(w, nodes), b = 1 + rnd(w, nodes);
        if (a != b) {
            sim_trace(s, "cut n%llu -> n%llu", (unsigned long long)a, (unsigned long long)b);
            sim_set_link(s, a, b, false);
        }
    } else if (pick < 42) { /* isolate a leader */
        uint64_t l = sim_leader(s, (uint32_t)rnd(w, s->o.groups));
        if (l) {
            sim_trace(s, "isolate leader n%llu", (unsigned long long)l);
            for (uint64_t b = 1; b <= nodes; b++) {
                sim_set_link(s, l, b, false);
                sim_set_link(s, b, l, false);
            }
        }
    } else if (pick < 60) {
        sim_heal(s);
    } else if (pick < 80) {
        uint64_t n = 1 + rnd(w, nodes);
        if (s->nodes[n].up && down < 2) {
            sim_crash(s, n);
            s->nodes[n].restart_at = s->now + 50 + rnd(w, 500);
        }
    } else {
        for (uint64_t n = 1; n <= nodes; n++)
            if (!s->nodes[n].up) {
                sim_restart(s, n);
                break;
            }
    }
}

static void conf_change(struct wl *w)
{
    struct sim *s = w->s;
    uint32_t g = (uint32_t)rnd(w, s->o.groups);
    uint64_t l = sim_leader(s, g);
    if (!l) return;
    struct raft_status st;
    raft_status(sim_rep(s, g, l)->r, &st);
    uint32_t voters = 0;
    uint64_t learner = 0, voter_ids[RAFT_SERVERS_MAX];
    for (uint32_t k = 0; k < st.conf.n; k++) {
        if (st.conf.servers[k].role == RAFT_VOTER)
            voter_ids[voters++] = st.conf.servers[k].id;
        else
            learner = st.conf.servers[k].id;
    }
    if (learner) {
        sim_conf_change(s, g, l, rnd(w, 4) ? RAFT_CONF_PROMOTE : RAFT_CONF_REMOVE, learner);
        return;
    }
    bool can_add = st.conf.n < s->o.nodes;
    if (voters > 2 && (!can_add || rnd(w, 2))) {
        sim_conf_change(s, g, l, RAFT_CONF_REMOVE, voter_ids[rnd(w, voters)]);
        return;
    }
    if (!can_add) return;
    for (int tries = 0; tries < 16; tries++) {
        uint64_t n = 1 + rnd(w, s->o.nodes);
        if (!raft_conf_role(&st.conf, n)) {
            sim_conf_change(s, g, l, RAFT_CONF_ADD_LEARNER, n);
            return;
        }
    }
}

static void transfer(struct wl *w)
{
    struct sim *s = w->s;
    uint32_t g = (uint32_t)rnd(w, s->o.groups);
    uint64_t l = sim_leader(s, g);
    if (!l) return;
    struct raft_status st;
    raft_status(sim_rep(s, g, l)->r, &st);
    const struct raft_server *sv = &st.conf.servers[rnd(w, st.conf.n)];
    if (sv->role == RAFT_VOTER && sv->id != l) sim_transfer(s, g, l, sv->id);
}

static uint64_t actions_due(struct wl *w, bool live)
{
    struct sim *s = w->s;
    uint64_t t = UINT64_MAX;
    for (uint32_t g = 0; g < s->o.groups; g++) {
        if (!live) {
            if (w->next_write[g] < t) t = w->next_write[g];
            if (w->next_read[g] < t) t = w->next_read[g];
        }
        for (uint32_t k = 0; k < w->n_pend[g]; k++)
            if (w->pend[g][k].last + RETRY_MS < t) t = w->pend[g][k].last + RETRY_MS;
    }
    if (!live) {
        if (w->faults && w->next_fault < t) t = w->next_fault;
        if (w->next_compact < t) t = w->next_compact;
        if (w->conf_changes && w->next_conf < t) t = w->next_conf;
        if (w->transfers && w->next_transfer < t) t = w->next_transfer;
        for (uint64_t n = 1; n <= s->o.nodes; n++)
            if (!s->nodes[n].up && s->nodes[n].restart_at < t) t = s->nodes[n].restart_at;
    }
    return t;
}

static void run_actions(struct wl *w, bool live)
{
    struct sim *s = w->s;
    clients(w, !live);
    if (live) return;
    for (uint64_t n = 1; n <= s->o.nodes; n++)
        if (!s->nodes[n].up && s->nodes[n].restart_at <= s->now) sim_restart(s, n);
    if (w->faults && s->now >= w->next_fault) {
        w->next_fault = s->now + w->fault_gap / 2 + rnd(w, w->fault_gap);
        fault(w);
    }
    if (s->now >= w->next_compact) {
        w->next_compact = s->now + 20 + rnd(w, 80);
        sim_compact(s, (uint32_t)rnd(w, s->o.groups), 1 + rnd(w, s->o.nodes), (uint32_t)rnd(w, 6));
    }
    if (w->conf_changes && s->now >= w->next_conf) {
        w->next_conf = s->now + 60 + rnd(w, 250);
        conf_change(w);
    }
    if (w->transfers && s->now >= w->next_transfer) {
        w->next_transfer = s->now + 150 + rnd(w, 400);
        transfer(w);
    }
}

/* Done when every group has a leader that committed its whole log, every request is acked and
 * every member applied everything. */
static bool settled(struct wl *w, char *why, size_t n)
{
    struct sim *s = w->s;
    for (uint32_t g = 0; g < s->o.groups; g++) {
        uint64_t l = sim_leader(s, g);
        if (!l) {
            snprintf(why, n, "g%u has no leader", g);
            return false;
        }
        struct raft_status st;
        raft_status(sim_rep(s, g, l)->r, &st);
        if (st.commit < st.last_index) {
            snprintf(why, n, "g%u leader n%llu committed %llu of %llu", g, (unsigned long long)l,
                     (unsigned long long)st.commit, (unsigned long long)st.last_index);
            return false;
        }
        if (w->n_pend[g] > 0) {
            snprintf(why, n, "g%u has %u unacknowledged requests (first req %llu)", g, w->n_pend[g],
                     (unsigned long long)w->pend[g][0].req);
            return false;
        }
        for (uint32_t k = 0; k < st.conf.n; k++) {
            struct sim_rep *rep = sim_rep(s, g, st.conf.servers[k].id);
            if (rep->applied < st.commit) {
                snprintf(why, n, "g%u member n%llu applied %llu of %llu", g,
                         (unsigned long long)rep->id, (unsigned long long)rep->applied,
                         (unsigned long long)st.commit);
                return false;
            }
        }
    }
    return true;
}

static void world(struct wl *w, struct sim_opts *o, uint64_t seed)
{
    rng_seed(&w->rng, seed ^ 0x5eed5eed5eedull);
    sim_opts_default(o);
    o->nodes = 3 + (uint32_t)rnd(w, 3);
    o->groups = 1 + (uint32_t)rnd(w, 3);
    o->voters = o->nodes == 5 && rnd(w, 2) ? 5 : 3;
    uint64_t knobs = rnd(w, 100);
    o->cfg.pre_vote = knobs >= 10;
    o->cfg.check_quorum = knobs < 10 ? rnd(w, 2) : knobs >= 15;
    o->cfg.lease_reads = o->cfg.check_quorum && rnd(w, 5) == 0;
    /* Ranked timeouts (they need pre-vote) in a third of the pre-vote seeds. */
    o->cfg.election_ranks = o->cfg.pre_vote && rnd(w, 3) == 0;
    o->cfg.inflight_max = 1 + (uint32_t)rnd(w, 6);
    o->cfg.msg_entries_max = 1 + (uint32_t)rnd(w, 8);
    o->cfg.tail_entries = 16u << rnd(w, 4);
    o->cfg.election_timeout_ms = 60 + rnd(w, 90);
    o->cfg.heartbeat_ms = o->cfg.election_timeout_ms / (3 + rnd(w, 5));
    o->drop_permille = rnd(w, 5) == 0 ? 0 : (uint32_t)rnd(w, 120);
    o->dup_permille = (uint32_t)rnd(w, 60);
    o->delay_min_ms = 1;
    o->delay_max_ms = 2 + (uint32_t)rnd(w, rnd(w, 4) ? 15 : 40);
    o->fsync_max_ms = (uint32_t)rnd(w, 6);
    w->faults = rnd(w, 10) != 0;
    w->fault_gap = 20 + rnd(w, 220);
    /* Membership changes need pre-vote for liveness (not safety): without it a removed server
     * that missed its removal disrupts the group (dissertation 4.2.3), and servers left on
     * different configurations can keep stealing each other's terms. */
    w->conf_changes = rnd(w, 10) < 7 && o->cfg.pre_vote;
    w->transfers = rnd(w, 10) < 6;
    o->early_append = rnd(w, 10) < 7;
}

/* Runs one seed; returns 0 or -1 (s->fail_msg explains). */
static int run_seed(uint64_t seed, uint64_t run_ms, int trace_mode, struct totals *t)
{
    struct wl w;
    memset(&w, 0, sizeof(w));
    struct sim_opts o;
    world(&w, &o, seed);
    w.run_ms = run_ms;
    struct sim *s = sim_new(&o, seed);
    w.s = s;
    if (trace_mode == SIM_TRACE_PRINT) {
        s->trace_mode = SIM_TRACE_PRINT;
        s->trace_out = stdout;
    } else if (trace_mode == SIM_TRACE_RING) {
        sim_trace_ring(s, 400);
    }
    sim_trace(s,
              "seed %llu: %u nodes, %u groups, %u voters, pre-vote %d, check-quorum %d, lease %d, "
              "inflight %u, drop %u/1000, dup %u/1000, delay 1-%u ms, fsync 0-%u ms, faults %d "
              "(every ~%llu ms), conf %d, transfers %d, early appends %d",
              (unsigned long long)seed, o.nodes, o.groups, o.voters, o.cfg.pre_vote,
              o.cfg.check_quorum, o.cfg.lease_reads, o.cfg.inflight_max, o.drop_permille,
              o.dup_permille, o.delay_max_ms, o.fsync_max_ms, w.faults,
              (unsigned long long)w.fault_gap, w.conf_changes, w.transfers, o.early_append);
    bool live = false, done = false;
    uint64_t live_end = 0;
    for (uint64_t guard = 0; guard < 5000000 && !s->failed && !done; guard++) {
        if (!live && s->now >= run_ms) {
            live = true;
            live_end = s->now + LIVE_MS;
            sim_trace(s, "---- heal: network repaired, every node restarted ----");
            sim_heal(s);
            s->o.drop_permille = 0;
            for (uint64_t n = 1; n <= s->o.nodes; n++)
                sim_restart(s, n);
            for (uint32_t g = 0; g < s->o.groups; g++)
                for (int k = 0; k < 2 && w.n_pend[g] < PENDING_MAX; k++) {
                    struct pend *p = &w.pend[g][w.n_pend[g]++];
                    p->req = s->groups[g].next_req++;
                    p->last = 0;
                    p->node = 0;
                }
            clients(&w, false);
        }
        char why[200];
        if (live && settled(&w, why, sizeof(why))) {
            done = true;
            break;
        }
        uint64_t next = sim_next_time(s);
        uint64_t a = actions_due(&w, live);
        if (a < next) next = a;
        if (!live && next > run_ms) next = run_ms;
        if (live && next > live_end) {
            settled(&w, why, sizeof(why));
            sim_fail(s, "liveness: not settled %d ms after healing: %s", LIVE_MS, why);
            done = true;
            break;
        }
        if (next == UINT64_MAX) next = s->now + 1;
        sim_advance(s, next);
        sim_step(s);
        if (!s->failed) run_actions(&w, live);
        if (!s->failed) chk_step(s);
    }
    if (!done && !s->failed)
        sim_fail(s, "harness: the run made no progress (at %llu ms)", (unsigned long long)s->now);
    if (!s->failed) chk_final(s);
    sim_trace(s,
              "end: %llu steps, %llu messages, %llu elections, %llu applied, %llu reads, "
              "%llu snapshots installed, %llu rollbacks, %llu fast acks",
              (unsigned long long)s->steps, (unsigned long long)s->msgs_delivered,
              (unsigned long long)s->elections, (unsigned long long)s->applied_total,
              (unsigned long long)s->reads_served, (unsigned long long)s->snapshots_installed,
              (unsigned long long)s->rollbacks, (unsigned long long)s->fast_acks);
    int rc = s->failed ? -1 : 0;
    if (t) {
        t->seeds++;
        t->steps += s->steps;
        t->msgs += s->msgs_delivered;
        t->applied += s->applied_total;
        t->elections += s->elections;
        t->reads += s->reads_served;
        t->snapshots += s->snapshots_installed;
        t->rollbacks += s->rollbacks;
        t->fast += s->fast_acks;
        t->confs += s->conf_changes;
        t->transfers += s->transfers;
        t->crashes += s->crashes;
        for (uint32_t g = 0; g < s->o.groups; g++)
            t->commits += chk_commit(s->groups[g].chk);
    }
    if (s->failed && trace_mode == SIM_TRACE_RING) {
        printf("---- last trace lines of seed %" PRIu64 " ----\n", seed);
        sim_trace_dump(s, stdout);
        printf("----\n");
    }
    if (s->failed) printf("VIOLATION seed=%" PRIu64 ": %s\n", seed, s->fail_msg);
    sim_free(s);
    return rc;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(void)
{
    fprintf(stderr, "usage: raft_sim --seeds N | --seed S [--trace]  [--run-ms T]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    uint64_t seeds = 0, seed = 0, run_ms = 3000;
    bool one = false, trace = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seeds") && i + 1 < argc)
            seeds = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 0);
            one = true;
        } else if (!strcmp(argv[i], "--trace"))
            trace = true;
        else if (!strcmp(argv[i], "--run-ms") && i + 1 < argc)
            run_ms = strtoull(argv[++i], NULL, 0);
        else
            usage();
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (one) {
        int rc = run_seed(seed, run_ms, trace ? SIM_TRACE_PRINT : SIM_TRACE_RING, NULL);
        printf("seed %" PRIu64 ": %s\n", seed, rc == 0 ? "ok" : "VIOLATION");
        return rc == 0 ? 0 : 1;
    }
    if (seeds == 0) usage();
    uint64_t base = rng_test_seed("raft_sim");
    struct totals t;
    memset(&t, 0, sizeof(t));
    double t0 = now_s();
    for (uint64_t i = 0; i < seeds; i++) {
        uint64_t sd = base + i;
        if (run_seed(sd, run_ms, SIM_TRACE_OFF, &t) < 0) {
            /* Deterministic: replay it with the trace ring to show what happened. */
            run_seed(sd, run_ms, SIM_TRACE_RING, NULL);
            printf("FAILED: seed %" PRIu64 " (replay: raft_sim --seed %" PRIu64
                   " --trace, or make sim SEED=%" PRIu64 ")\n",
                   sd, sd, sd);
            return 1;
        }
    }
    double dt = now_s() - t0;
    printf("raft_sim: %" PRIu64 " seeds (base %" PRIu64 ") in %.1f s, 0 violations\n", t.seeds,
           base, dt);
    printf("  steps %" PRIu64 ", messages %" PRIu64 ", elections %" PRIu64 ", committed %" PRIu64
           ", applied %" PRIu64 "\n",
           t.steps, t.msgs, t.elections, t.commits, t.applied);
    printf("  reads served %" PRIu64 ", snapshots installed %" PRIu64 ", rollbacks %" PRIu64
           ", fast acks %" PRIu64 "\n",
           t.reads, t.snapshots, t.rollbacks, t.fast);
    printf("  crashes %" PRIu64 ", membership changes %" PRIu64 ", leadership transfers %" PRIu64
           "\n",
           t.crashes, t.confs, t.transfers);
    printf("  invariants after every step: election safety, log matching, leader completeness, "
           "state machine safety, durability of commits, linearizable reads/writes; at the end: "
           "fast acks committed or rolled back, liveness after heal\n");
    return 0;
}
