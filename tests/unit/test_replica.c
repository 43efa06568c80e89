/*
 * test_replica.c - three replica nodes in one process over a fake network:
 * elections and preferred primaries, strong/fast/all writes, follower
 * ReadIndex, dedupe of retries, min_revision waits, restart and catch-up,
 * fast-mode rollback into the rollback file, compaction + snapshot catch-up,
 * malformed frames, node.meta checks; content hashes converge at the end of
 * each scenario.
 *
 * The network is a FIFO of frames pumped by the test (cut nodes drop
 * everything to and from them); time is a fake clock advanced in steps; each
 * node's WAL (sync off) completes on its own thread and the wakeup hook
 * counts completions, so the pump waits for them before going on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "base/rand.h"
#include "codec/codec.h"
#include "metrics/metrics.h"
#include "replica/replica.h"
#include "testutil.h"

#define NODES       3
#define PARTS       4
#define STEP_MS     5
#define ELECTION_MS 200ull

static uint64_t fake_ns = 1000000000000ull;

static uint64_t fake_mono(void *ctx)
{
    (void)ctx;
    return fake_ns;
}

static uint64_t fake_real(void *ctx)
{
    (void)ctx;
    return 1700000000000ull + fake_ns / 1000000u;
}

struct frame {
    struct frame *next;
    uint64_t from, to;
    size_t len;
    uint8_t data[];
};

struct node {
    uint64_t id;
    char dir[256];
    struct replica *rep;
    struct metrics *metrics;
    _Atomic uint64_t wakeups;
    uint64_t rounds_seen;
    bool cut;
};

static struct node nodes[NODES];
static struct frame *q_head, *q_tail;
static struct replica_set sets[2 * PARTS];
static uint64_t compact_entries;
static uint32_t tail_entries;
static struct rng rng;

static struct node *node_of(uint64_t id)
{
    return id >= 1 && id <= NODES ? &nodes[id - 1] : NULL;
}

static int net_send(void *ctx, uint64_t to, const uint8_t *frame, size_t len)
{
    struct node *from = ctx;
    struct frame *f = malloc(sizeof(*f) + len);
    assert_non_null(f);
    f->next = NULL;
    f->from = from->id;
    f->to = to;
    f->len = len;
    memcpy(f->data, frame, len);
    if (q_tail)
        q_tail->next = f;
    else
        q_head = f;
    q_tail = f;
    return 0;
}

static void wakeup(void *ctx)
{
    struct node *n = ctx;
    atomic_fetch_add(&n->wakeups, 1);
}

static void open_node(struct node *n)
{
    struct replica_config c = {
        .node_id = (uint32_t)n->id,
        .data_dir = n->dir,
        .partitions = PARTS,
        .sets = sets,
        .send = net_send,
        .wakeup = wakeup,
        .cb_ctx = n,
        .clock = {.mono_ns = fake_mono, .real_ms = fake_real},
        .election_timeout_ms = ELECTION_MS,
        .default_timeout_ms = 3000,
        .compact_entries = compact_entries,
        .raft_tail_entries = tail_entries,
        .snapshot_chunk_bytes = 512,
        .snapshot_window_bytes = 2048,
        .wal_sync_off = true,
        .seed = rng_next(&rng) | 1,
        .metrics = n->metrics,
    };
    struct trine_err err = {0};
    int rc = replica_open(&c, &n->rep, &err);
    if (rc != 0) fprintf(stderr, "replica_open: %s\n", err.msg);
    assert_int_equal(rc, 0);
    atomic_store(&n->wakeups, 0);
    n->rounds_seen = 0;
}

static void close_node(struct node *n)
{
    replica_close(n->rep);
    n->rep = NULL;
    metrics_destroy(n->metrics); /* series are registered again at the next open */
    n->metrics = metrics_create();
}

/* Waits (real time, bounded) for every WAL submission of n to complete. */
static void wait_wal(struct node *n)
{
    struct replica_stats st;
    replica_stats(n->rep, &st);
    for (int i = 0; i < 20000 && atomic_load(&n->wakeups) < st.rounds; i++)
        usleep(50);
    assert_true(atomic_load(&n->wakeups) >= st.rounds);
}

/* Runs processing and delivery at the current time until nothing moves. */
static void settle(void)
{
    for (int it = 0; it < 500; it++) {
        bool any = false;
        for (int i = 0; i < NODES; i++) {
            if (!nodes[i].rep) continue;
            wait_wal(&nodes[i]);
            assert_int_equal(replica_process(nodes[i].rep), 0);
            struct replica_stats st;
            replica_stats(nodes[i].rep, &st);
            if (st.rounds != nodes[i].rounds_seen) {
                nodes[i].rounds_seen = st.rounds;
                any = true;
            }
        }
        while (q_head) {
            struct frame *f = q_head;
            q_head = f->next;
            if (!q_head) q_tail = NULL;
            struct node *src = node_of(f->from), *dst = node_of(f->to);
            if (dst && dst->rep && !dst->cut && !src->cut) {
                int rc = replica_recv_frame(dst->rep, f->from, f->data + 4, f->len - 4);
                assert_int_equal(rc, 0);
                any = true;
            }
            free(f);
        }
        if (!any) return;
    }
}

static void advance(uint64_t ms)
{
    for (uint64_t t = 0; t < ms; t += STEP_MS) {
        fake_ns += STEP_MS * 1000000ull;
        for (int i = 0; i < NODES; i++) {
            if (!nodes[i].rep) continue;
            if (replica_next_deadline(nodes[i].rep) <= fake_ns / 1000000u)
                assert_int_equal(replica_tick(nodes[i].rep), 0);
        }
        settle();
    }
}

static void cluster_up(void)
{
    rng_seed(&rng, rng_test_seed("test_replica"));
    /* partition p: preferred primary p % 3 + 1, then the others (as the ring would give) */
    for (uint32_t p = 0; p < 2 * PARTS; p++) {
        sets[p].n = NODES;
        for (uint32_t k = 0; k < NODES; k++)
            sets[p].nodes[k] = (p + k) % NODES + 1;
    }
    for (int i = 0; i < NODES; i++) {
        nodes[i].id = (uint64_t)i + 1;
        nodes[i].cut = false;
        snprintf(nodes[i].dir, sizeof(nodes[i].dir), "%s", tu_mkdtemp("replica"));
        nodes[i].metrics = metrics_create();
        open_node(&nodes[i]);
    }
}

static void cluster_down(void)
{
    for (int i = 0; i < NODES; i++) {
        if (nodes[i].rep) close_node(&nodes[i]);
        metrics_destroy(nodes[i].metrics);
        nodes[i].metrics = NULL;
        tu_rm_rf(nodes[i].dir);
    }
    while (q_head) {
        struct frame *f = q_head;
        q_head = f->next;
        free(f);
    }
    q_tail = NULL;
    compact_entries = 0;
    tail_entries = 0;
}

static uint64_t preferred(uint32_t p)
{
    return sets[p].nodes[0];
}

static uint64_t leader_of(uint32_t p)
{
    for (int i = 0; i < NODES; i++) {
        if (!nodes[i].rep || nodes[i].cut) continue;
        struct replica_part_status st;
        assert_int_equal(replica_status(nodes[i].rep, p, &st), 0);
        if (st.role == 3) return nodes[i].id;
    }
    return 0;
}

/* Advances until every partition has a leader on its preferred node. */
static void wait_preferred(void)
{
    for (int i = 0; i < 400; i++) {
        bool ok = true;
        for (uint32_t p = 0; p < PARTS; p++)
            ok = ok && leader_of(p) == preferred(p);
        if (ok) return;
        advance(50);
    }
    fail_msg("primaries did not settle on their preferred nodes");
}

/* ---- operations ------------------------------------------------------------------------ */

struct op {
    bool done;
    struct replica_result res;
    char value[64];
};

static void on_done(void *arg, const struct replica_result *res)
{
    struct op *o = arg;
    assert_false(o->done);
    o->done = true;
    o->res = *res;
    o->res.message = "";
    o->res.value = NULL;
    o->res.items = NULL;
    if (res->value_len && res->value_len < sizeof(o->value))
        memcpy(o->value, res->value, res->value_len);
}

static void finish_now(struct op *o, int rc, const struct replica_result *res)
{
    if (rc == REPLICA_NOW) on_done(o, res);
}

static void put(struct op *o, uint64_t node, uint32_t p, const char *key, const char *val,
                uint8_t cons, uint64_t client, uint64_t seq)
{
    memset(o, 0, sizeof(*o));
    struct replica_write w = {.partition = p,
                              .op = REPLICA_PUT,
                              .consistency = cons,
                              .key = (const uint8_t *)key,
                              .key_len = (uint32_t)strlen(key),
                              .value = (const uint8_t *)val,
                              .value_len = (uint32_t)strlen(val),
                              .client_id = client,
                              .seq = seq};
    struct replica_result res;
    finish_now(o, replica_write(node_of(node)->rep, &w, on_done, o, &res), &res);
}

static void get(struct op *o, uint64_t node, uint32_t p, const char *key, uint8_t cons,
                uint64_t min_rev, uint32_t timeout_ms)
{
    memset(o, 0, sizeof(*o));
    struct replica_read rd = {.partition = p,
                              .consistency = cons,
                              .min_revision = min_rev,
                              .timeout_ms = timeout_ms,
                              .key = (const uint8_t *)key,
                              .key_len = (uint32_t)strlen(key)};
    struct replica_result res;
    finish_now(o, replica_get(node_of(node)->rep, &rd, on_done, o, &res), &res);
}

static void wait_op(struct op *o, uint64_t max_ms)
{
    for (uint64_t t = 0; !o->done && t < max_ms; t += STEP_MS)
        advance(STEP_MS);
    assert_true(o->done);
}

static void strong_put(uint32_t p, const char *key, const char *val, struct op *o)
{
    put(o, leader_of(p), p, key, val, REPLICA_STRONG, 0, 0);
    wait_op(o, 2000);
    assert_int_equal(o->res.status, 0);
}

/* Every open replica of every partition has the same applied index and content hash. */
static void check_converged(void)
{
    for (int round = 0; round < 200; round++) {
        bool same = true;
        for (uint32_t p = 0; p < PARTS && same; p++) {
            uint64_t h0 = 0, a0 = 0;
            bool first = true;
            for (int i = 0; i < NODES; i++) {
                if (!nodes[i].rep) continue;
                uint64_t h, a;
                assert_int_equal(replica_content_hash(nodes[i].rep, p, &h, &a), 0);
                if (first) {
                    h0 = h;
                    a0 = a;
                    first = false;
                } else if (h != h0 || a != a0) {
                    same = false;
                }
            }
        }
        if (same) return;
        advance(50);
    }
    fail_msg("replicas did not converge");
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_elect_and_preferred(void **state)
{
    (void)state;
    cluster_up();
    wait_preferred();
    for (uint32_t p = 0; p < PARTS; p++) {
        struct replica_part_status st;
        assert_int_equal(replica_status(node_of(preferred(p))->rep, p, &st), 0);
        assert_int_equal(st.n_peers, 3);
        assert_true(st.commit >= 2); /* bootstrap conf + the leader's no-op */
        for (int i = 0; i < NODES; i++)
            assert_int_equal(replica_leader(nodes[i].rep, p), preferred(p));
    }
    check_converged();
    cluster_down();
}

static void test_strong_put_get(void **state)
{
    (void)state;
    cluster_up();
    wait_preferred();
    struct op w;
    strong_put(1, "alpha", "one", &w);
    assert_int_equal(w.res.consistency, REPLICA_STRONG);
    assert_int_equal(w.res.version, 1);
    assert_true(w.res.revision > 0);
    assert_true(w.res.acks >= 2);
    for (uint64_t n = 1; n <= NODES; n++) {
        struct op r;
        get(&r, n, 1, "alpha", REPLICA_STRONG, 0, 0);
        wait_op(&r, 2000);
        assert_int_equal(r.res.status, 0);
        assert_string_equal(r.value, "one");
        assert_int_equal(r.res.version, 1);
        assert_int_equal(r.res.mod_revision, w.res.revision);
        assert_int_equal(r.res.served_by, n);
        assert_true(r.res.applied_index >= w.res.revision);
    }
    /* a fast CAS is served strong and says so */
    struct op c;
    memset(&c, 0, sizeof(c));
    struct replica_write cw = {.partition = 1,
                               .op = REPLICA_CAS,
                               .consistency = REPLICA_FAST,
                               .key = (const uint8_t *)"alpha",
                               .key_len = 5,
                               .value = (const uint8_t *)"two",
                               .value_len = 3,
                               .expected_version = 7};
    struct replica_result res;
    finish_now(&c, replica_write(node_of(leader_of(1))->rep, &cw, on_done, &c, &res), &res);
    wait_op(&c, 2000);
    assert_int_equal(c.res.status, -TRINE_ECAS_FAILED);
    assert_int_equal(c.res.consistency, REPLICA_STRONG);
    assert_int_equal(c.res.version, 1);
    /* not the leader: hint */
    uint64_t other = leader_of(1) % NODES + 1;
    struct op nl;
    put(&nl, other, 1, "beta", "x", REPLICA_STRONG, 0, 0);
    assert_true(nl.done);
    assert_int_equal(nl.res.status, -TRINE_ENOT_LEADER);
    assert_int_equal(nl.res.leader_hint, leader_of(1));
    check_converged();
    cluster_down();
}

static void test_all_and_unavailable(void **state)
{
    (void)state;
    cluster_up();
    wait_preferred();
    uint32_t p = 2;
    uint64_t l = leader_of(p);
    struct op a;
    put(&a, l, p, "k", "v", REPLICA_ALL, 0, 0);
    wait_op(&a, 2000);
    assert_int_equal(a.res.status, 0);
    assert_int_equal(a.res.acks, 3);
    assert_int_equal(a.res.consistency, REPLICA_ALL);
    /* cut one follower: all -> UNAVAILABLE, strong still works */
    uint64_t f = l % NODES + 1;
    node_of(f)->cut = true;
    advance(ELECTION_MS + 50);
    put(&a, l, p, "k2", "v", REPLICA_ALL, 0, 0);
    assert_true(a.done);
    assert_int_equal(a.res.status, -TRINE_EUNAVAILABLE);
    struct op s;
    put(&s, l, p, "k3", "v", REPLICA_STRONG, 0, 0);
    wait_op(&s, 2000);
    assert_int_equal(s.res.status, 0);
    assert_int_equal(s.res.acks, 2);
    /* the transport's view counts too */
    node_of(f)->cut = false;
    advance(300);
    replica_peer_reachable(node_of(l)->rep, f, false);
    put(&a, l, p, "k4", "v", REPLICA_ALL, 0, 0);
    assert_true(a.done);
    assert_int_equal(a.res.status, -TRINE_EUNAVAILABLE);
    replica_peer_reachable(node_of(l)->rep, f, true);
    check_converged();
    cluster_down();
}

static void test_dedupe_retry(void **state)
{
    (void)state;
    cluster_up();
    wait_preferred();
    uint32_t p = 0;
    struct op w1, w2;
    put(&w1, leader_of(p), p, "once", "a", REPLICA_STRONG, 77, 1);
    wait_op(&w1, 2000);
    assert_int_equal(w1.res.status, 0);
    assert_false(w1.res.duplicate);
    put(&w2, leader_of(p), p, "once", "a", REPLICA_STRONG, 77, 1);
    wait_op(&w2, 2000);
    assert_int_equal(w2.res.status, 0);
    assert_true(w2.res.duplicate);
    assert_int_equal(w2.res.revision, w1.res.revision);
    struct op r;
    get(&r, leader_of(p), p, "once", REPLICA_STRONG, 0, 0);
    wait_op(&r, 2000);
    assert_int_equal(r.res.version, 1);
    check_converged();
    cluster_down();
}

static void test_min_revision_wait(void **state)
{
    (void)state;
    cluster_up();
    wait_preferred();
    uint32_t p = 3;
    uint64_t l = leader_of(p), f = l % NODES + 1;
    node_of(f)->cut = true;
    struct op w;
    strong_put(p, "sess", "v1", &w);
    /* too old for the deadline: STALE */
    struct op r;
    get(&r, f, p, "sess", REPLICA_FAST, w.res.revision, 100);
    assert_false(r.done);
    wait_op(&r, 500);
    assert_int_equal(r.res.status, -TRINE_ESTALE);
    assert_true(r.res.applied_index < w.res.revision);
    /* waits, then serves once the follower catches up */
    get(&r, f, p, "sess", REPLICA_FAST, w.res.revision, 3000);
    advance(100);
    assert_false(r.done);
    node_of(f)->cut = false;
    wait_op(&r, 3000);
    assert_int_equal(r.res.status, 0);
    assert_string_equal(r.value, "v1");
    assert_int_equal(r.res.served_by, f);
    assert_int_equal(r.res.consistency, REPLICA_FAST);
    check_converged();
    cluster_down();
}

static void test_restart_catch_up(void **state)
{
    (void)state;
    cluster_up();
    wait_preferred();
    struct op w;
    strong_put(0, "before", "1", &w);
    close_node(&nodes[2]);
    advance(ELECTION_MS * 3);
    for (uint32_t p = 0; p < PARTS; p++) {
        char k[16];
        snprintf(k, sizeof(k), "during%u", p);
        for (int i = 0; i < 200 && !leader_of(p); i++)
            advance(50);
        strong_put(p, k, "2", &w);
    }
    open_node(&nodes[2]);
    check_converged();
    struct op r;
    get(&r, 3, 1, "during1", REPLICA_STRONG, 0, 0);
    wait_op(&r, 3000);
    assert_int_equal(r.res.status, 0);
    assert_string_equal(r.value, "2");
    wait_preferred();
    cluster_down();
}

static void test_fast_rollback(void **state)
{
    (void)state;
    cluster_up();
    wait_preferred();
    uint32_t p = 1;
    uint64_t old = leader_of(p);
    struct op w;
    strong_put(p, "base", "0", &w);
    /* the leader is cut off right before a fast write: acked at its own fsync */
    node_of(old)->cut = true;
    struct op f;
    put(&f, old, p, "lost", "x", REPLICA_FAST, 9, 1);
    wait_op(&f, 500);
    assert_int_equal(f.res.status, 0);
    assert_int_equal(f.res.consistency, REPLICA_FAST);
    assert_int_equal(f.res.acks, 1);
    struct replica_part_status st;
    assert_int_equal(replica_status(node_of(old)->rep, p, &st), 0);
    assert_true(st.commit < f.res.revision); /* acked before commit */
    /* the others elect a new leader, which writes */
    uint64_t nl = 0;
    for (int i = 0; i < 200 && !nl; i++) {
        advance(50);
        nl = leader_of(p);
    }
    assert_true(nl != 0 && nl != old);
    struct op s;
    put(&s, nl, p, "kept", "y", REPLICA_STRONG, 0, 0);
    wait_op(&s, 2000);
    assert_int_equal(s.res.status, 0);
    /* the old leader rejoins: its fast entry is overwritten and recorded */
    node_of(old)->cut = false;
    check_converged();
    struct replica_stats rs;
    replica_stats(node_of(old)->rep, &rs);
    assert_int_equal(rs.fast_rollbacks, 1);
    struct buf text;
    buf_init(&text);
    assert_int_equal(metrics_render(node_of(old)->metrics, &text), 0);
    assert_int_equal(buf_append(&text, "", 1), 0);
    assert_non_null(strstr((const char *)text.data, "trine_fast_rollbacks_total 1"));
    assert_non_null(strstr((const char *)text.data, "trine_raft_role{partition=\"1\"}"));
    buf_free(&text);
    char path[512];
    FILE *fp = fopen(tu_path(path, sizeof(path), node_of(old)->dir, "rollbacks.jsonl"), "r");
    assert_non_null(fp);
    char line[1024];
    assert_non_null(fgets(line, sizeof(line), fp));
    fclose(fp);
    assert_non_null(strstr(line, "\"key\":\"lost\""));
    assert_non_null(strstr(line, "\"op\":\"put\""));
    assert_non_null(strstr(line, "\"client_id\":9"));
    struct op r;
    get(&r, nl, p, "lost", REPLICA_STRONG, 0, 0);
    wait_op(&r, 2000);
    assert_int_equal(r.res.status, -TRINE_ENOT_FOUND);
    cluster_down();
}

/* Renders n's metrics into text (NUL-terminated). */
static const char *render_metrics(struct node *n, struct buf *text)
{
    buf_reset(text);
    assert_int_equal(metrics_render(n->metrics, text), 0);
    assert_int_equal(buf_append(text, "", 1), 0);
    return (const char *)text->data;
}

/* A sample's value in rendered text, or -1 if absent. */
static double sample(const char *text, const char *series)
{
    char want[160];
    snprintf(want, sizeof(want), "\n%s ", series);
    const char *at = strstr(text, want);
    return at ? strtod(at + strlen(want), NULL) : -1;
}

/* Follower lag on the leader, in entries and in seconds (the age of the oldest entry the
 * follower lacks), from /status's data and the scrape-time metrics alike. */
static void test_follower_lag(void **state)
{
    (void)state;
    cluster_up();
    wait_preferred();
    const uint32_t p = 0;
    uint64_t l = preferred(p), f = sets[p].nodes[2], o = sets[p].nodes[1];
    struct op w;
    strong_put(p, "warm", "0", &w);
    advance(50);
    struct buf text;
    buf_init(&text);
    char ent[96], sec[96];
    snprintf(ent, sizeof(ent),
             "trine_raft_follower_lag_entries{partition=\"%u\",follower=\"%llu\"}", p,
             (unsigned long long)f);
    snprintf(sec, sizeof(sec),
             "trine_raft_follower_lag_seconds{partition=\"%u\",follower=\"%llu\"}", p,
             (unsigned long long)f);
    const char *t = render_metrics(node_of(l), &text);
    assert_true(sample(t, ent) == 0);
    assert_true(sample(t, sec) == 0);

    node_of(f)->cut = true;
    uint64_t t0 = fake_ns / 1000000u;
    strong_put(p, "lag1", "1", &w); /* the other follower makes the majority */
    advance(1000);
    strong_put(p, "lag2", "2", &w);
    advance(500);
    uint64_t now = fake_ns / 1000000u;
    struct replica_part_status st;
    assert_int_equal(replica_status(node_of(l)->rep, p, &st), 0);
    for (uint32_t i = 0; i < st.n_peers; i++) {
        if (st.peers[i].id == o) {
            assert_int_equal(st.peers[i].lag, 0);
            assert_int_equal(st.peers[i].lag_ms, 0);
        }
        if (st.peers[i].id != f) continue;
        assert_int_equal(st.peers[i].lag, 2);
        /* lag1 was appended one step after it was proposed at t0 */
        assert_in_range(st.peers[i].lag_ms, now - t0 - 2 * STEP_MS, now - t0);
    }
    t = render_metrics(node_of(l), &text);
    assert_true(sample(t, ent) == 2);
    double secs = sample(t, sec);
    assert_true(secs >= (double)(now - t0 - 2 * STEP_MS) / 1000 &&
                secs <= (double)(now - t0) / 1000);
    char com[64];
    snprintf(com, sizeof(com), "trine_raft_commit_index{partition=\"%u\"}", p);
    assert_true(sample(t, com) == (double)st.commit);
    /* only the leader reports follower lag for the partition */
    char none[64];
    snprintf(none, sizeof(none), "follower_lag_entries{partition=\"%u\",", p);
    assert_null(strstr(render_metrics(node_of(o), &text), none));

    node_of(f)->cut = false;
    check_converged();
    advance(100);
    t = render_metrics(node_of(l), &text);
    assert_true(sample(t, ent) == 0);
    assert_true(sample(t, sec) == 0);
    buf_free(&text);
    cluster_down();
}

static void test_snapshot_catch_up(void **state)
{
    (void)state;
    compact_entries = 16;
    tail_entries = 16;
    cluster_up();
    wait_preferred();
    close_node(&nodes[2]);
    advance(ELECTION_MS * 3);
    uint32_t p = 0;
    for (int i = 0; i < 200 && !leader_of(p); i++)
        advance(50);
    for (int i = 0; i < 60; i++) {
        char k[16], v[16];
        snprintf(k, sizeof(k), "k%02d", i);
        snprintf(v, sizeof(v), "v%d", i);
        struct op w;
        strong_put(p, k, v, &w);
    }
    advance(300); /* ticks compact the leaders' logs */
    struct replica_part_status st;
    assert_int_equal(replica_status(node_of(leader_of(p))->rep, p, &st), 0);
    assert_true(st.snapshot_index > 16);
    open_node(&nodes[2]);
    check_converged();
    struct replica_stats rs;
    replica_stats(nodes[2].rep, &rs);
    assert_true(rs.snapshots_received >= 1);
    struct op r;
    get(&r, 3, p, "k42", REPLICA_FAST, 0, 0);
    assert_true(r.done);
    assert_int_equal(r.res.status, 0);
    assert_string_equal(r.value, "v42");
    /* scan of the installed partition, in key order */
    struct replica_read sc = {.partition = p,
                              .consistency = REPLICA_FAST,
                              .prefix = (const uint8_t *)"k",
                              .prefix_len = 1,
                              .limit = 10};
    struct replica_result res;
    assert_int_equal(replica_scan(nodes[2].rep, &sc, NULL, NULL, &res), REPLICA_NOW);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.n_items, 10);
    assert_true(res.more);
    assert_memory_equal(res.items[0].key, "k00", 3);
    assert_memory_equal(res.items[9].key, "k09", 3);
    /* restart after compaction: replay from the mark */
    close_node(&nodes[0]);
    open_node(&nodes[0]);
    check_converged();
    cluster_down();
}

static void test_bad_frames_and_meta(void **state)
{
    (void)state;
    cluster_up();
    struct replica *r = nodes[0].rep;
    const uint8_t junk[] = {0x93, 0x01, 0x02};
    assert_true(replica_recv_frame(r, 2, junk, sizeof(junk)) < 0);
    const uint8_t garbage[] = {0xc1, 0xff, 0x00, 0x13};
    assert_true(replica_recv_frame(r, 2, garbage, sizeof(garbage)) < 0);
    for (int i = 0; i < 200; i++) {
        uint8_t buf[64];
        size_t n = 1 + rng_below(&rng, sizeof(buf) - 1);
        rng_fill(&rng, buf, n);
        replica_recv_frame(r, 2, buf, n); /* must not crash */
    }
    struct replica_stats st;
    replica_stats(r, &st);
    assert_true(st.bad_frames >= 2);
    /* a data dir made for another partition count is refused */
    close_node(&nodes[0]);
    struct replica_config c = {.node_id = 1,
                               .data_dir = nodes[0].dir,
                               .partitions = PARTS * 2,
                               .sets = sets,
                               .clock = {.mono_ns = fake_mono, .real_ms = fake_real},
                               .wal_sync_off = true};
    struct trine_err err = {0};
    struct replica *bad = NULL;
    assert_int_equal(replica_open(&c, &bad, &err), -TRINE_EINVALID);
    assert_non_null(strstr(err.msg, "partition"));
    open_node(&nodes[0]);
    cluster_down();
}

static void test_ttl_expiry(void **state)
{
    (void)state;
    cluster_up();
    wait_preferred();
    uint32_t p = 2;
    struct op w;
    memset(&w, 0, sizeof(w));
    struct replica_write wr = {.partition = p,
                               .op = REPLICA_PUT,
                               .consistency = REPLICA_STRONG,
                               .key = (const uint8_t *)"temp",
                               .key_len = 4,
                               .value = (const uint8_t *)"t",
                               .value_len = 1,
                               .ttl_ms = 300};
    struct replica_result res;
    finish_now(&w, replica_write(node_of(leader_of(p))->rep, &wr, on_done, &w, &res), &res);
    wait_op(&w, 2000);
    assert_int_equal(w.res.status, 0);
    assert_true(w.res.expire_at_ms > fake_real(NULL));
    struct op r;
    get(&r, 1, p, "temp", REPLICA_STRONG, 0, 0);
    wait_op(&r, 2000);
    assert_int_equal(r.res.status, 0);
    assert_int_equal(r.res.expire_at_ms, w.res.expire_at_ms);
    advance(600); /* the primary proposes the EXPIRE; every replica applies it */
    check_converged();
    for (uint64_t n = 1; n <= NODES; n++) {
        get(&r, n, p, "temp", REPLICA_FAST, 0, 0);
        assert_true(r.done);
        assert_int_equal(r.res.status, -TRINE_ENOT_FOUND);
        assert_true(r.res.applied_index > w.res.revision); /* the EXPIRE entry was applied */
    }
    cluster_down();
}

static void test_shutdown_hands_over(void **state)
{
    (void)state;
    cluster_up();
    wait_preferred();
    struct replica *r1 = nodes[0].rep;
    replica_shutdown(r1, 3000);
    assert_false(replica_shutdown_done(r1));
    struct op w;
    put(&w, 1, 0, "x", "y", REPLICA_STRONG, 0, 0); /* partition 0 prefers node 1 */
    assert_true(w.done);
    assert_int_equal(w.res.status, -TRINE_ENOT_LEADER);
    for (int i = 0; i < 100 && !replica_shutdown_done(r1); i++)
        advance(20);
    assert_true(replica_shutdown_done(r1));
    for (uint32_t p = 0; p < PARTS; p++) {
        struct replica_part_status st;
        assert_int_equal(replica_status(r1, p, &st), 0);
        assert_int_not_equal(st.role, 3);
    }
    close_node(&nodes[0]);
    for (uint32_t p = 0; p < PARTS; p++) {
        for (int i = 0; i < 100 && !leader_of(p); i++)
            advance(20);
        assert_int_not_equal(leader_of(p), 0);
    }
    check_converged();
    cluster_down();
}

static void test_foreign_partition_ignored(void **state)
{
    (void)state;
    cluster_up();
    struct codec_raft_msg m = {.partition = PARTS + 1, /* not hosted */
                               .type = CODEC_RAFT_MSG_TYPE_HEARTBEAT,
                               .from = 2,
                               .to = 1,
                               .term = 5};
    struct codec_msg cm = {.type = CODEC_MSG_RAFT_BATCH};
    cm.raft_batch.msgs = &m;
    cm.raft_batch.n_msgs = 1;
    struct buf f;
    buf_init(&f);
    assert_int_equal(codec_encode(&f, &cm, NULL, NULL), 0);
    assert_int_equal(replica_recv_frame(nodes[0].rep, 2, f.data + 4, f.len - 4), 0);
    struct replica_stats st;
    replica_stats(nodes[0].rep, &st);
    assert_int_equal(st.ignored_msgs, 1);
    /* a message claiming another sender than the connection's peer is malformed */
    m.partition = 0;
    buf_reset(&f);
    assert_int_equal(codec_encode(&f, &cm, NULL, NULL), 0);
    assert_int_equal(replica_recv_frame(nodes[0].rep, 3, f.data + 4, f.len - 4),
                     -TRINE_EBAD_REQUEST);
    buf_free(&f);
    cluster_down();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elect_and_preferred),
        cmocka_unit_test(test_strong_put_get),
        cmocka_unit_test(test_all_and_unavailable),
        cmocka_unit_test(test_dedupe_retry),
        cmocka_unit_test(test_min_revision_wait),
        cmocka_unit_test(test_restart_catch_up),
        cmocka_unit_test(test_fast_rollback),
        cmocka_unit_test(test_snapshot_catch_up),
        cmocka_unit_test(test_bad_frames_and_meta),
        cmocka_unit_test(test_ttl_expiry),
        cmocka_unit_test(test_shutdown_hands_over),
        cmocka_unit_test(test_foreign_partition_ignored),
        cmocka_unit_test(test_follower_lag),
    };
    log_set_level(LOG_LEVEL_WARN);
    return cmocka_run_group_tests_name("replica", tests, NULL, NULL);
}
