/*
 * main_bench.c - raft_bench: the core's own speed, not a test (make test
 * skips it). Three nodes host G groups each (G = 1, 64, 1024 by default);
 * the simulator's I/O costs nothing (fsync and delivery are immediate, no
 * faults, no invariant checks). Each round every group's leader takes a batch
 * of proposals, then the cluster runs until quiet: every proposal is
 * committed on a majority and applied on every replica. Logs are compacted
 * every few rounds so memory stays flat.
 *
 *   raft_bench [--seconds S] [--batch B] [--groups G,...]
 *
 * Prints one line per group count: committed proposals per second, wall time,
 * messages delivered per second.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct result {
    uint32_t groups;
    uint64_t committed;
    uint64_t msgs;
    uint64_t rounds;
    double secs;
};

static void settle(struct sim *s)
{
    for (int i = 0; i < 100000; i++) {
        uint64_t t = sim_next_time(s);
        if (t > s->now) return;
        sim_step(s);
    }
}

static int bench(uint32_t groups, double seconds, uint32_t batch, struct result *res)
{
    struct sim_opts o;
    sim_opts_default(&o);
    o.nodes = 3;
    o.voters = 3;
    o.groups = groups;
    o.checks = false;
    o.delay_min_ms = o.delay_max_ms = 0;
    o.fsync_max_ms = 0;
    o.drop_permille = o.dup_permille = 0;
    o.cfg.election_timeout_ms = 1000;
    o.cfg.heartbeat_ms = 100;
    o.cfg.tail_entries = 256;
    o.cfg.tail_bytes = 32 * 1024;
    o.cfg.entry_bytes_max = 1024;
    o.cfg.msg_entries_max = 64;
    o.cfg.msg_bytes_max = 64 * 1024;
    o.cfg.inflight_max = 8;
    o.cfg.apply_batch_max = 256;
    struct sim *s = sim_new(&o, 42);
    /* Elect a leader everywhere (campaigns are spread by the randomized timeouts). */
    for (int i = 0; i < 100000; i++) {
        uint32_t with = 0;
        for (uint32_t g = 0; g < groups; g++)
            with += sim_leader(s, g) != 0;
        if (with == groups) break;
        uint64_t t = sim_next_time(s);
        if (t == UINT64_MAX) break;
        sim_advance(s, t);
        sim_step(s);
    }
    uint64_t *leader = calloc(groups, sizeof(*leader));
    for (uint32_t g = 0; g < groups; g++)
        leader[g] = sim_leader(s, g);
    uint64_t applied0 = 0;
    for (uint32_t g = 0; g < groups; g++)
        applied0 += sim_rep(s, g, leader[g])->applied;
    uint64_t msgs0 = s->msgs_delivered;
    uint8_t data[16];
    memset(data, 0xab, sizeof(data));
    double t0 = now_s(), t1 = t0;
    uint64_t rounds = 0, failed = 0;
    while (t1 - t0 < seconds) {
        for (uint32_t g = 0; g < groups; g++) {
            struct sim_rep *rep = sim_rep(s, g, leader[g]);
            for (uint32_t k = 0; k < batch; k++) {
                uint64_t req = s->groups[g].next_req++;
                memcpy(data, &req, 8);
                if (raft_propose(rep->r, s->now, data, sizeof(data), NULL, NULL) < 0) failed++;
            }
            sim_drain(rep);
        }
        settle(s);
        rounds++;
        if (rounds % 16 == 0) {
            for (uint32_t g = 0; g < groups; g++)
                for (uint64_t n = 1; n <= o.nodes; n++)
                    sim_compact(s, g, n, 0);
            t1 = now_s();
        }
        if (s->failed) break;
    }
    t1 = now_s();
    uint64_t applied = 0;
    for (uint32_t g = 0; g < groups; g++)
        applied += sim_rep(s, g, leader[g])->applied;
    res->groups = groups;
    res->committed = applied - applied0;
    res->msgs = s->msgs_delivered - msgs0;
    res->rounds = rounds;
    res->secs = t1 - t0;
    int rc = s->failed ? -1 : 0;
    if (s->failed) fprintf(stderr, "raft_bench: %s\n", s->fail_msg);
    if (failed) fprintf(stderr, "raft_bench: %llu proposals refused\n", (unsigned long long)failed);
    free(leader);
    sim_free(s);
    return rc;
}

int main(int argc, char **argv)
{
    double seconds = 2.0;
    uint32_t batch = 16;
    uint32_t list[16] = {1, 64, 1024};
    uint32_t n_list = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
            batch = (uint32_t)strtoul(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--groups") && i + 1 < argc) {
            n_list = 0;
            for (char *p = strtok(argv[++i], ","); p && n_list < 16; p = strtok(NULL, ","))
                list[n_list++] = (uint32_t)strtoul(p, NULL, 10);
        } else {
            fprintf(stderr, "usage: raft_bench [--seconds S] [--batch B] [--groups G,...]\n");
            return 2;
        }
    }
    printf("raft_bench: 3 nodes, 3 voters per group, zero-cost I/O, %u proposals of 16 bytes "
           "per group per round\n",
           batch);
    printf("%8s %14s %10s %16s %14s\n", "groups", "committed", "seconds", "commits/s",
           "messages/s");
    for (uint32_t i = 0; i < n_list; i++) {
        struct result r;
        if (bench(list[i], seconds, batch, &r) < 0) return 1;
        printf("%8u %14llu %10.2f %16.0f %14.0f\n", r.groups, (unsigned long long)r.committed,
               r.secs, (double)r.committed / r.secs, (double)r.msgs / r.secs);
    }
    return 0;
}
