/*
 * test_raft.c - focused tests of the Raft core with handcrafted messages:
 * configuration encoding and validation, the update contract on a single
 * voter, the follower's commit bound and conflict hints, rejection of
 * malformed messages, and the in-memory tail wrapping over storage. The
 * protocol as a whole is tested by tests/raft (simulator and scenarios).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "base/rand.h"
#include "raft/raft.h"

/* ---- a minimal in-memory storage ------------------------------------------------------ */

#define ST_MAX 512

struct mem {
    struct raft_snapshot_meta snap;
    struct raft_hard_state hs;
    uint64_t n; /* entries snap.index+1 .. snap.index+n */
    struct raft_entry e[ST_MAX];
    uint8_t data[ST_MAX][64];
};

static struct raft_entry *mem_at(struct mem *m, uint64_t i)
{
    if (i <= m->snap.index || i > m->snap.index + m->n) return NULL;
    return &m->e[i - m->snap.index - 1];
}

static int mem_term(void *ctx, uint64_t i, uint64_t *t)
{
    struct mem *m = ctx;
    if (i == m->snap.index) {
        *t = m->snap.term;
        return 0;
    }
    struct raft_entry *e = mem_at(m, i);
    if (!e) return i < m->snap.index ? -TRINE_ESTALE : -TRINE_EIO;
    *t = e->term;
    return 0;
}

static uint64_t g_storage_reads;

static int mem_entries(void *ctx, uint64_t lo, uint64_t hi, uint64_t bytes_max,
                       struct raft_entry *out, uint32_t out_max, uint8_t *buf, uint64_t buf_len,
                       uint32_t *n)
{
    struct mem *m = ctx;
    g_storage_reads++;
    (void)bytes_max;
    *n = 0;
    if (lo <= m->snap.index) return -TRINE_ESTALE;
    uint64_t used = 0;
    for (uint64_t i = lo; i < hi && *n < out_max; i++) {
        struct raft_entry *e = mem_at(m, i);
        if (!e) return -TRINE_EIO;
        if (used + e->len > buf_len) break;
        out[*n] = *e;
        memcpy(buf + used, e->data, e->len);
        out[*n].data = buf + used;
        used += e->len;
        (*n)++;
    }
    return 0;
}

static uint64_t mem_first(void *ctx)
{
    return ((struct mem *)ctx)->snap.index + 1;
}

static uint64_t mem_last(void *ctx)
{
    struct mem *m = ctx;
    return m->snap.index + m->n;
}

static int mem_snapshot(void *ctx, struct raft_snapshot_meta *meta)
{
    *meta = ((struct mem *)ctx)->snap;
    return 0;
}

static void mem_append(struct mem *m, const struct raft_entry *e)
{
    uint64_t slot = e->index - m->snap.index - 1;
    assert_true(slot <= m->n && slot < ST_MAX && e->len <= 64);
    m->n = slot + 1;
    m->e[slot] = *e;
    memcpy(m->data[slot], e->data, e->len);
    m->e[slot].data = m->data[slot];
}

static struct raft_storage mem_storage(struct mem *m)
{
    return (struct raft_storage){.ctx = m,
                                 .term = mem_term,
                                 .entries = mem_entries,
                                 .first_index = mem_first,
                                 .last_index = mem_last,
                                 .snapshot = mem_snapshot};
}

/* ---- driving -------------------------------------------------------------------------- */

struct node {
    struct raft *r;
    struct mem *m;
    uint64_t now;
    struct raft_msg out[64]; /* messages of the last drain (entries not kept) */
    uint32_t n_out;
    uint8_t applied[ST_MAX][64];
    uint32_t applied_len[ST_MAX];
    uint64_t n_applied;
};

static void node_new(struct node *nd, uint64_t id, const struct raft_conf *boot,
                     void (*tweak)(struct raft_config *))
{
    memset(nd, 0, sizeof(*nd));
    nd->m = calloc(1, sizeof(*nd->m));
    struct raft_config cfg;
    raft_config_default(&cfg, id);
    cfg.election_timeout_ms = 100;
    cfg.heartbeat_ms = 10;
    if (tweak) tweak(&cfg);
    struct raft_storage st = mem_storage(nd->m);
    struct raft_init_state init = {.bootstrap = boot};
    struct trine_err err = {0};
    assert_int_equal(raft_create(&nd->r, &cfg, &st, &init, 0, &err), 0);
}

static void node_free(struct node *nd)
{
    raft_destroy(nd->r);
    free(nd->m);
}

/* Acts on updates as raft.h's contract says, persisting at once; at most max_updates. */
static void drain_n(struct node *nd, int max_updates)
{
    struct raft_update u;
    nd->n_out = 0;
    for (int guard = 0; guard < max_updates && raft_ready(nd->r, &u); guard++) {
        if (u.hs_changed) nd->m->hs = u.hs;
        for (uint32_t k = 0; k < u.n_entries; k++)
            mem_append(nd->m, &u.entries[k]);
        for (uint32_t k = 0; k < u.n_msgs && nd->n_out < 64; k++)
            nd->out[nd->n_out++] = u.msgs[k];
        uint64_t applied = 0;
        for (uint32_t k = 0; k < u.n_committed; k++) {
            const struct raft_entry *e = &u.committed[k];
            assert_int_equal(e->index, nd->n_applied + 1);
            memcpy(nd->applied[nd->n_applied], e->data, e->len);
            nd->applied_len[nd->n_applied] = e->len;
            nd->n_applied = applied = e->index;
        }
        if (u.n_entries) {
            const struct raft_entry *last = &u.entries[u.n_entries - 1];
            assert_int_equal(raft_persisted(nd->r, nd->now, last->index, last->term), 0);
        }
        if (applied) assert_int_equal(raft_applied(nd->r, nd->now, applied), 0);
    }
}

static void drain(struct node *nd)
{
    drain_n(nd, 100);
}

static struct raft_conf conf_of(uint32_t n)
{
    struct raft_conf c = {.n = n};
    for (uint32_t i = 0; i < n; i++)
        c.servers[i] = (struct raft_server){i + 1, RAFT_VOTER};
    return c;
}

static struct raft_status status(struct node *nd)
{
    struct raft_status st;
    raft_status(nd->r, &st);
    return st;
}

/* ---- tests ---------------------------------------------------------------------------- */

static void test_conf_codec(void **state)
{
    (void)state;
    struct raft_conf c = conf_of(3), d;
    c.servers[2].role = RAFT_LEARNER;
    uint8_t buf[RAFT_CONF_BYTES_MAX];
    uint32_t n = raft_conf_encode(&c, buf);
    assert_int_equal(n, 4 + 27);
    assert_int_equal(raft_conf_decode(buf, n, &d), 0);
    assert_int_equal(d.n, 3);
    assert_int_equal(raft_conf_role(&d, 3), RAFT_LEARNER);
    assert_int_equal(raft_conf_role(&d, 1), RAFT_VOTER);
    assert_int_equal(raft_conf_role(&d, 9), 0);
    assert_int_equal(raft_conf_decode(buf, n - 1, &d), -TRINE_ECORRUPT);
    buf[4 + 9 + 7] = 1; /* second id becomes 1: a duplicate */
    assert_int_equal(raft_conf_decode(buf, n, &d), -TRINE_ECORRUPT);
    n = raft_conf_encode(&c, buf);
    buf[4 + 8] = 7; /* bad role */
    assert_int_equal(raft_conf_decode(buf, n, &d), -TRINE_ECORRUPT);
    assert_int_equal(raft_conf_decode(NULL, 0, &d), -TRINE_ECORRUPT);
}

static void test_config_validation(void **state)
{
    (void)state;
    struct mem *m = calloc(1, sizeof(*m));
    struct raft_storage st = mem_storage(m);
    struct raft_init_state init = {0};
    struct trine_err err = {0};
    struct raft *r;
    struct raft_config cfg;
    raft_config_default(&cfg, 0);
    assert_int_equal(raft_create(&r, &cfg, &st, &init, 0, &err), -TRINE_EINVALID);
    assert_non_null(strstr(err.msg, "id"));
    raft_config_default(&cfg, 1);
    cfg.tail_entries = 100; /* not a power of two */
    assert_int_equal(raft_create(&r, &cfg, &st, &init, 0, &err), -TRINE_EINVALID);
    raft_config_default(&cfg, 1);
    cfg.heartbeat_ms = cfg.election_timeout_ms;
    assert_int_equal(raft_create(&r, &cfg, &st, &init, 0, &err), -TRINE_EINVALID);
    raft_config_default(&cfg, 1);
    st.term = NULL;
    assert_int_equal(raft_create(&r, &cfg, &st, &init, 0, &err), -TRINE_EINVALID);
    st = mem_storage(m);
    init.applied = 5; /* beyond the (empty) log */
    assert_int_equal(raft_create(&r, &cfg, &st, &init, 0, &err), -TRINE_EINVALID);
    free(m);
}

/* One voter: the update carries the hard state and entries to persist; commit follows
 * raft_persisted, committed entries come only once durable; fast-mode durability too. */
static void test_single_voter_contract(void **state)
{
    (void)state;
    struct raft_conf c = conf_of(1);
    struct node nd;
    node_new(&nd, 1, &c, NULL);
    struct raft_update u;
    assert_true(raft_ready(nd.r, &u));
    assert_true(u.hs_changed); /* bootstrap: term 1 */
    assert_int_equal(u.hs.term, 1);
    assert_int_equal(u.n_entries, 1);
    assert_int_equal(u.entries[0].type, RAFT_ENTRY_CONF);
    mem_append(nd.m, &u.entries[0]);
    nd.m->hs = u.hs;
    assert_int_equal(raft_persisted(nd.r, 0, 1, 1), 0);
    assert_int_equal(raft_campaign(nd.r, 0), 0);
    assert_true(raft_ready(nd.r, &u));
    assert_int_equal(u.role, RAFT_LEADER);
    assert_int_equal(u.term, 2);
    assert_true(u.hs_changed);
    assert_int_equal(u.hs.vote, 1);
    assert_int_equal(u.n_entries, 1); /* the no-op */
    assert_int_equal(u.entries[0].flags & RAFT_ENTRY_LOCAL, RAFT_ENTRY_LOCAL);
    assert_int_equal(u.commit, 0); /* nothing durable yet */
    mem_append(nd.m, &u.entries[0]);
    assert_int_equal(raft_persisted(nd.r, 0, 2, 2), 0);
    assert_true(raft_ready(nd.r, &u));
    assert_int_equal(u.commit, 2);
    assert_int_equal(u.n_committed, 2);
    assert_int_equal(u.leader_durable_index, 2);
    nd.n_applied = 2;
    assert_int_equal(raft_applied(nd.r, 0, 2), 0);
    assert_int_equal(raft_applied(nd.r, 0, 3), -TRINE_EINVALID); /* not delivered yet */

    uint64_t idx, term;
    assert_int_equal(raft_propose(nd.r, 0, "abc", 3, &idx, &term), 0);
    assert_int_equal(idx, 3);
    assert_int_equal(term, 2);
    drain(&nd);
    assert_int_equal(nd.n_applied, 3);
    assert_memory_equal(nd.applied[2], "abc", 3);
    assert_int_equal(status(&nd).commit, 3);
    node_free(&nd);
}

static void small_tail(struct raft_config *cfg)
{
    cfg->tail_entries = 16;
    cfg->msg_entries_max = 8;
    cfg->tail_bytes = 256;
    cfg->entry_bytes_max = 64;
    cfg->msg_bytes_max = 64;
    cfg->apply_batch_max = 1; /* deliveries lag: older entries come back from storage */
}

/* The tail wraps (entries and bytes) and evicts durable entries; committed entries read back
 * from storage are identical to what was proposed. */
static void test_tail_wraps_over_storage(void **state)
{
    (void)state;
    struct raft_conf c = conf_of(1);
    struct node nd;
    node_new(&nd, 1, &c, small_tail);
    drain(&nd);
    raft_campaign(nd.r, 0);
    drain(&nd);
    struct rng rng;
    rng_seed(&rng, rng_test_seed("test_raft"));
    uint8_t want[300][64];
    uint32_t want_len[300];
    uint64_t first = status(&nd).last_index + 1;
    g_storage_reads = 0;
    for (int k = 0; k < 300; k++) {
        want_len[k] = (uint32_t)rng_below(&rng, 61);
        rng_fill(&rng, want[k], want_len[k]);
        uint64_t idx;
        assert_int_equal(raft_propose(nd.r, 0, want[k], want_len[k], &idx, NULL), 0);
        assert_int_equal(idx, first + (uint64_t)k);
        /* One update per two proposals: one entry applied each time, so applying lags ever
         * further behind and the entries it needs leave the 16-entry tail. */
        if (k % 2) drain_n(&nd, 1);
    }
    for (int guard = 0; guard < 400 && nd.n_applied < first + 299; guard++)
        drain(&nd);
    assert_int_equal(nd.n_applied, first + 299);
    assert_true(g_storage_reads > 0);
    for (int k = 0; k < 300; k++) {
        assert_int_equal(nd.applied_len[first - 1 + (uint64_t)k], want_len[k]);
        assert_memory_equal(nd.applied[first - 1 + (uint64_t)k], want[k], want_len[k]);
    }
    node_free(&nd);
}

/* Undurable entries are never evicted: the tail refuses proposals instead. */
static void test_propose_busy_when_undurable(void **state)
{
    (void)state;
    struct raft_conf c = conf_of(1);
    struct node nd;
    node_new(&nd, 1, &c, small_tail);
    drain(&nd);
    raft_campaign(nd.r, 0);
    drain(&nd);
    int rc = 0, k;
    for (k = 0; k < 100 && rc == 0; k++)
        rc = raft_propose(nd.r, 0, "x", 1, NULL, NULL);
    assert_int_equal(rc, -TRINE_EBUSY);
    assert_true(k <= 17);
    assert_int_equal(raft_propose(nd.r, 0, NULL, 65, NULL, NULL), -TRINE_ETOO_LARGE);
    drain(&nd); /* persisted: room again */
    assert_int_equal(raft_propose(nd.r, 0, "x", 1, NULL, NULL), 0);
    node_free(&nd);
}

static struct raft_msg append(uint64_t from, uint64_t term, uint64_t prev, uint64_t prev_term,
                              uint64_t commit, const struct raft_entry *e, uint32_t n)
{
    return (struct raft_msg){.type = RAFT_MSG_APPEND,
                             .from = from,
                             .to = 2,
                             .term = term,
                             .index = prev,
                             .log_term = prev_term,
                             .commit = commit,
                             .entries = e,
                             .n_entries = n};
}

static const struct raft_msg *find_out(struct node *nd, uint8_t type)
{
    for (uint32_t k = 0; k < nd->n_out; k++)
        if (nd->out[k].type == type) return &nd->out[k];
    return NULL;
}

/* Figure 3.1, AppendEntries receiver rule 5: commit = min(leaderCommit, last new entry), never
 * an unverified (possibly stale) entry beyond it. */
static void test_follower_commit_bound(void **state)
{
    (void)state;
    struct raft_conf c = conf_of(3);
    struct node nd;
    node_new(&nd, 2, &c, NULL);
    drain(&nd);
    struct raft_entry e[3] = {{.term = 2, .index = 2}, {.term = 2, .index = 3}};
    struct raft_msg m = append(1, 2, 1, 1, 0, e, 2);
    assert_int_equal(raft_recv(nd.r, 0, &m), 0);
    drain(&nd);
    assert_int_equal(status(&nd).last_index, 3);
    /* A leader of term 3 whose entry 3 differs sends an append covering only entry 2. */
    m = append(3, 3, 1, 1, 3, e, 1);
    assert_int_equal(raft_recv(nd.r, 0, &m), 0);
    drain(&nd);
    assert_int_equal(status(&nd).commit, 2);
    const struct raft_msg *o = find_out(&nd, RAFT_MSG_APPEND_RESP);
    assert_non_null(o);
    assert_false(o->reject);
    assert_int_equal(o->index, 2);
    assert_int_equal(status(&nd).leader, 3);
    node_free(&nd);
}

/* Fast backtracking: the rejection names the last index whose term is <= the leader's, and
 * that term. */
static void test_conflict_hints(void **state)
{
    (void)state;
    struct raft_conf c = conf_of(3);
    struct node nd;
    node_new(&nd, 2, &c, NULL);
    drain(&nd);
    struct raft_entry e[3] = {
        {.term = 2, .index = 2}, {.term = 2, .index = 3}, {.term = 4, .index = 4}};
    struct raft_msg m = append(1, 4, 1, 1, 0, e, 3);
    assert_int_equal(raft_recv(nd.r, 0, &m), 0);
    drain(&nd);
    /* prev beyond our log: hint = our last index. */
    m = append(1, 5, 9, 5, 0, NULL, 0);
    assert_int_equal(raft_recv(nd.r, 0, &m), 0);
    drain(&nd);
    const struct raft_msg *o = find_out(&nd, RAFT_MSG_APPEND_RESP);
    assert_non_null(o);
    assert_true(o->reject);
    assert_int_equal(o->index, 9);
    assert_int_equal(o->reject_hint, 4);
    assert_int_equal(o->conflict_term, 4);
    /* prev 4 of term 3: our entry 4 has term 4 > 3, skip back to the last entry of term <= 3. */
    m = append(1, 5, 4, 3, 0, NULL, 0);
    assert_int_equal(raft_recv(nd.r, 0, &m), 0);
    drain(&nd);
    o = find_out(&nd, RAFT_MSG_APPEND_RESP);
    assert_non_null(o);
    assert_true(o->reject);
    assert_int_equal(o->reject_hint, 3);
    assert_int_equal(o->conflict_term, 2);
    node_free(&nd);
}

/* raft_progress: only a leader answers; its own match is its durable index; a follower's
 * match follows its acknowledgements. */
static void test_progress_accessor(void **state)
{
    (void)state;
    struct raft_conf c = conf_of(3);
    struct node nd;
    node_new(&nd, 1, &c, NULL);
    drain(&nd);
    struct raft_progress pr;
    assert_int_equal(raft_progress(nd.r, 2, &pr), -TRINE_ENOT_LEADER);
    assert_int_equal(raft_campaign(nd.r, 0), 0);
    drain(&nd);
    struct raft_msg m = {.type = RAFT_MSG_PREVOTE_RESP, .from = 2, .to = 1, .term = 2};
    assert_int_equal(raft_recv(nd.r, 0, &m), 0);
    drain(&nd);
    m = (struct raft_msg){.type = RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = 2};
    assert_int_equal(raft_recv(nd.r, 0, &m), 0);
    drain(&nd);
    struct raft_status st = status(&nd);
    assert_int_equal(st.role, RAFT_LEADER);
    assert_int_equal(st.last_index, 2); /* conf entry, then the leader's no-op */
    assert_int_equal(raft_progress(nd.r, 1, &pr), 0);
    assert_int_equal(pr.match, 2);
    assert_true(pr.voter);
    assert_int_equal(raft_progress(nd.r, 2, &pr), 0);
    assert_int_equal(pr.match, 0);
    assert_int_equal(raft_progress(nd.r, 9, &pr), -TRINE_ENOT_FOUND);
    m = (struct raft_msg){
        .type = RAFT_MSG_APPEND_RESP, .from = 2, .to = 1, .term = 2, .index = 2, .log_term = 2};
    assert_int_equal(raft_recv(nd.r, 0, &m), 0);
    drain(&nd);
    assert_int_equal(raft_progress(nd.r, 2, &pr), 0);
    assert_int_equal(pr.match, 2);
    assert_true(pr.recent_active);
    assert_int_equal(raft_progress(nd.r, 3, &pr), 0);
    assert_int_equal(pr.match, 0);
    node_free(&nd);
}

static void test_malformed_messages(void **state)
{
    (void)state;
    struct raft_conf c = conf_of(3);
    struct node nd;
    node_new(&nd, 2, &c, NULL);
    drain(&nd);
    struct raft_entry e[2] = {{.term = 2, .index = 2}, {.term = 2, .index = 4}};
    struct raft_msg m = append(1, 2, 1, 1, 0, e, 2); /* not consecutive */
    assert_int_equal(raft_recv(nd.r, 0, &m), -TRINE_EBAD_REQUEST);
    e[1].index = 3;
    e[1].term = 5; /* newer than the message */
    assert_int_equal(raft_recv(nd.r, 0, &m), -TRINE_EBAD_REQUEST);
    e[1].term = 2;
    e[1].type = RAFT_ENTRY_CONF; /* undecodable configuration */
    e[1].data = (const uint8_t *)"zz";
    e[1].len = 2;
    assert_int_equal(raft_recv(nd.r, 0, &m), -TRINE_EBAD_REQUEST);
    m = append(1, 2, 1, 1, 0, NULL, 0);
    m.to = 7;
    assert_int_equal(raft_recv(nd.r, 0, &m), -TRINE_EBAD_REQUEST);
    m.to = 2;
    m.type = 99;
    assert_int_equal(raft_recv(nd.r, 0, &m), -TRINE_EBAD_REQUEST);
    m.type = RAFT_MSG_SNAPSHOT; /* without metadata */
    assert_int_equal(raft_recv(nd.r, 0, &m), -TRINE_EBAD_REQUEST);
    assert_non_null(strstr(raft_error(nd.r)->msg, "malformed"));
    struct raft_status st = status(&nd);
    assert_int_equal(st.term, 1); /* nothing took effect */
    assert_int_equal(st.last_index, 1);
    node_free(&nd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conf_codec),
        cmocka_unit_test(test_config_validation),
        cmocka_unit_test(test_single_voter_contract),
        cmocka_unit_test(test_tail_wraps_over_storage),
        cmocka_unit_test(test_propose_busy_when_undurable),
        cmocka_unit_test(test_follower_commit_bound),
        cmocka_unit_test(test_conflict_hints),
        cmocka_unit_test(test_malformed_messages),
        cmocka_unit_test(test_progress_accessor),
    };
    return cmocka_run_group_tests_name("raft", tests, NULL, NULL);
}
