/*
 * test_wal.c - the write-ahead log: round trips over segments and partitions,
 * truncation semantics, wal_read, compaction, group commit, kill -9 under load,
 * faults (lost unsynced data, torn and zeroed tails, bit flips, missing
 * segments, failed writes and fsyncs) through tests/lib/fsfault, and segment
 * preallocation (free space after the records, sealed segments cut back, zero
 * tails after a crash, failed or unsupported preallocation).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/rand.h"
#include "fsfault.h"
#include "testutil.h"
#include "wal/wal.h"

/* ---- helpers ---- */

struct rec {
    uint32_t partition;
    uint8_t type;
    uint64_t term, index;
    uint32_t len;
    uint8_t *payload;
};

struct coll {
    struct rec *v;
    size_t n, cap;
};

static void coll_push(struct coll *c, const struct wal_record *r)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->v = realloc(c->v, c->cap * sizeof(*c->v));
        assert_non_null(c->v);
    }
    struct rec *x = &c->v[c->n++];
    *x = (struct rec){r->partition, r->type, r->term, r->index, r->len, malloc(r->len + 1)};
    assert_non_null(x->payload);
    if (r->len) memcpy(x->payload, r->payload, r->len);
}

static int coll_cb(void *ctx, const struct wal_record *r)
{
    coll_push(ctx, r);
    return 0;
}

static void coll_free(struct coll *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->v[i].payload);
    free(c->v);
    memset(c, 0, sizeof(*c));
}

static void assert_rec_eq(const struct rec *a, const struct rec *b)
{
    assert_int_equal(a->partition, b->partition);
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->term, b->term);
    assert_int_equal(a->index, b->index);
    assert_int_equal(a->len, b->len);
    assert_memory_equal(a->payload, b->payload, a->len);
}

static void fill(uint8_t *p, uint32_t len, uint64_t seed)
{
    struct rng r;
    rng_seed(&r, seed);
    rng_fill(&r, p, len);
}

static void opts_init(struct wal_options *o, const char *dir)
{
    memset(o, 0, sizeof(*o));
    o->dir = dir;
}

static struct wal *open_ok(struct wal_options *o, struct coll *c, struct wal_recovery *rep)
{
    struct wal *w = NULL;
    struct trine_err err = {0};
    o->replay_fn = c ? coll_cb : NULL;
    o->replay_ctx = c;
    int rc = wal_open(o, &w, rep, &err);
    if (rc != 0) fail_msg("wal_open: %s (%s)", err.msg, status_name(rc));
    return w;
}

static char *seg_path(char *out, size_t n, const char *dir, uint64_t seq)
{
    int k = snprintf(out, n, "%s/%016llx.wal", dir, (unsigned long long)seq);
    if (k < 0 || (size_t)k >= n) abort();
    return out;
}

/* Appends one ENTRY with a payload of len derived from (p, index, term). */
static void append_entry(struct wal *w, uint32_t p, uint64_t index, uint64_t term, uint32_t len)
{
    uint8_t buf[1024];
    assert_true(len <= sizeof(buf));
    fill(buf, len, p * 1000003ull + index * 31 + term);
    struct wal_record r = {.partition = p,
                           .type = WAL_ENTRY,
                           .term = term,
                           .index = index,
                           .payload = buf,
                           .len = len};
    assert_int_equal(wal_append(w, &r, 1), 0);
}

static void stop_quiet(void *ctx, const char *msg)
{
    int *n = ctx;
    (*n)++;
    fprintf(stderr, "test stop hook: %s\n", msg);
}

/* ---- a model of the log for the round trip ---- */

/* Expected LIVE replay: drop each ENTRY cut by a later TRUNCATE/ENTRY <= its index. */
static void expect_live(const struct coll *all, struct coll *out)
{
    uint64_t cut[16];
    for (int i = 0; i < 16; i++)
        cut[i] = UINT64_MAX;
    bool *keep = calloc(all->n, 1);
    for (size_t i = all->n; i-- > 0;) {
        const struct rec *r = &all->v[i];
        keep[i] = r->type != WAL_ENTRY || r->index < cut[r->partition];
        if ((r->type == WAL_ENTRY || r->type == WAL_TRUNCATE) && r->index < cut[r->partition])
            cut[r->partition] = r->index;
    }
    for (size_t i = 0; i < all->n; i++) {
        if (!keep[i]) continue;
        const struct rec *r = &all->v[i];
        struct wal_record wr = {r->partition, r->type, r->term, r->index, r->payload, r->len};
        coll_push(out, &wr);
    }
    free(keep);
}

static void assert_coll_eq(const struct coll *a, const struct coll *b)
{
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++)
        assert_rec_eq(&a->v[i], &b->v[i]);
}

static void check_reads(struct wal *w, const struct coll *live, struct rng *rng, uint32_t parts)
{
    for (int t = 0; t < 40; t++) {
        uint32_t p = (uint32_t)rng_below(rng, parts);
        uint64_t lo = 1 + rng_below(rng, 120), hi = lo + rng_below(rng, 80);
        struct coll got = {0}, want = {0};
        struct trine_err err = {0};
        assert_int_equal(wal_read(w, p, lo, hi, coll_cb, &got, &err), 0);
        for (size_t i = 0; i < live->n; i++) {
            const struct rec *r = &live->v[i];
            if (r->partition == p && r->type == WAL_ENTRY && r->index >= lo && r->index <= hi) {
                struct wal_record wr = {r->partition, r->type,    r->term,
                                        r->index,     r->payload, r->len};
                coll_push(&want, &wr);
            }
        }
        assert_coll_eq(&got, &want);
        coll_free(&got);
        coll_free(&want);
    }
}

/* Copies the ENTRY records of c (and the TRUNCATE ones if truncates) into out. */
static void coll_filter(const struct coll *c, struct coll *out, bool truncates)
{
    for (size_t i = 0; i < c->n; i++) {
        const struct rec *r = &c->v[i];
        if (r->type != WAL_ENTRY && !(truncates && r->type == WAL_TRUNCATE)) continue;
        struct wal_record wr = {r->partition, r->type, r->term, r->index, r->payload, r->len};
        coll_push(out, &wr);
    }
}

/* The last HARDSTATE of each partition in got equals the last one in want. */
static void assert_latest_hardstates(const struct coll *got, const struct coll *want,
                                     uint32_t parts)
{
    for (uint32_t p = 0; p < parts; p++) {
        const struct rec *want_hs = NULL, *got_hs = NULL;
        for (size_t i = 0; i < want->n; i++)
            if (want->v[i].partition == p && want->v[i].type == WAL_HARDSTATE)
                want_hs = &want->v[i];
        for (size_t i = 0; i < got->n; i++)
            if (got->v[i].partition == p && got->v[i].type == WAL_HARDSTATE) got_hs = &got->v[i];
        if (want_hs != NULL) {
            assert_non_null(got_hs);
            assert_rec_eq(got_hs, want_hs);
        }
    }
}

/* ---- tests ---- */

static void test_roundtrip_segments_partitions(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-rt");
    struct rng rng;
    rng_seed(&rng, rng_test_seed("wal_roundtrip"));
    struct wal_options o;
    opts_init(&o, dir);
    o.segment_bytes = 4096;
    o.sync_off = true;
    struct wal *w = open_ok(&o, NULL, NULL);

    enum { PARTS = 4 };
    uint64_t last[PARTS] = {0}, term[PARTS] = {1, 1, 1, 1};
    struct coll all = {0};
    uint8_t payload[8][512];
    for (int op = 0; op < 700; op++) {
        uint32_t p = (uint32_t)rng_below(&rng, PARTS);
        struct wal_record recs[8];
        size_t n = 0;
        uint64_t dice = rng_below(&rng, 100);
        if (dice < 5 && last[p] > 2) { /* Raft conflict: explicit TRUNCATE, then new entries */
            uint64_t from = 1 + rng_below(&rng, last[p]);
            term[p]++;
            recs[n++] = (struct wal_record){p, WAL_TRUNCATE, term[p], from, NULL, 0};
            last[p] = from - 1;
        } else if (dice < 9 && last[p] > 2) { /* overwrite without TRUNCATE */
            term[p]++;
            last[p] = rng_below(&rng, last[p]); /* next entry index <= old last */
        } else if (dice < 14) {
            term[p]++;
            uint32_t len = 8;
            fill(payload[n], len, term[p]);
            recs[n] = (struct wal_record){p, WAL_HARDSTATE, term[p], last[p], payload[n], len};
            n++;
        }
        size_t k = 1 + rng_below(&rng, 4);
        for (size_t i = 0; i < k && n < 8; i++, n++) {
            uint32_t len = (uint32_t)rng_below(&rng, 300);
            fill(payload[n], len, rng_next(&rng));
            recs[n] = (struct wal_record){p, WAL_ENTRY, term[p], ++last[p], payload[n], len};
        }
        assert_int_equal(wal_append(w, recs, n), 0);
        for (size_t i = 0; i < n; i++)
            coll_push(&all, &recs[i]);
    }
    struct coll live = {0};
    expect_live(&all, &live);
    check_reads(w, &live, &rng, PARTS);
    struct wal_stats st;
    wal_stats(w, &st);
    assert_true(st.segments >= 10);
    /* Segments holding only dead entries may already be gone (with their
     * HARDSTATEs re-appended): nothing was released, but nothing there is live. */
    assert_int_equal(st.records, all.n + st.reappended);
    assert_int_equal(st.appends, 700);
    wal_close(w);

    /* Reopen: LIVE replay gives exactly the live entries, in order. */
    struct coll got = {0}, a = {0}, b = {0};
    struct wal_recovery rep;
    w = open_ok(&o, &got, &rep);
    assert_int_equal(rep.torn_bytes, 0);
    assert_false(rep.corrupt);
    coll_filter(&got, &a, false);
    coll_filter(&live, &b, false);
    assert_coll_eq(&a, &b);
    assert_latest_hardstates(&got, &live, PARTS);
    check_reads(w, &live, &rng, PARTS);
    wal_close(w);
    coll_free(&got);
    coll_free(&a);
    coll_free(&b);

    /* ALL replay: the ENTRY/TRUNCATE records are what was written minus whole
     * deleted segments (a subsequence), and include every live entry. */
    o.replay = WAL_REPLAY_ALL;
    w = open_ok(&o, &got, &rep);
    assert_int_equal(rep.records, got.n);
    coll_filter(&got, &a, true);
    coll_filter(&all, &b, true);
    size_t j = 0, live_seen = 0;
    for (size_t i = 0; i < a.n; i++) {
        while (j < b.n && !(a.v[i].partition == b.v[j].partition && a.v[i].type == b.v[j].type &&
                            a.v[i].index == b.v[j].index && a.v[i].term == b.v[j].term))
            j++;
        assert_true(j < b.n);
        assert_rec_eq(&a.v[i], &b.v[j++]);
    }
    for (size_t i = 0; i < live.n; i++)
        live_seen += live.v[i].type == WAL_ENTRY;
    size_t got_entries = 0;
    for (size_t i = 0; i < a.n; i++)
        got_entries += a.v[i].type == WAL_ENTRY;
    assert_true(got_entries >= live_seen);
    coll_free(&a);
    coll_free(&b);
    /* Appending after reopen continues the chain. */
    append_entry(w, 0, last[0] + 1, term[0], 10);
    wal_close(w);
    size_t before = got.n;
    coll_free(&got);
    w = open_ok(&o, &got, NULL);
    assert_int_equal(got.n, before + 1);
    coll_free(&got);

    /* Random releases: compaction removes segments, but every live entry above
     * its partition's release mark and the latest HARDSTATE stay. */
    uint64_t rel[PARTS];
    for (uint32_t p = 0; p < PARTS; p++) {
        rel[p] = last[p] - rng_below(&rng, last[p] < 30 ? last[p] + 1 : 30);
        wal_release(w, p, rel[p]);
    }
    assert_int_equal(wal_flush(w), 0);
    struct wal_stats st2;
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t p = 0; p < PARTS; p++) {
            struct coll want = {0};
            for (size_t i = 0; i < live.n; i++) {
                const struct rec *r = &live.v[i];
                if (r->partition != p || r->type != WAL_ENTRY || r->index <= rel[p]) continue;
                struct wal_record wr = {r->partition, r->type,    r->term,
                                        r->index,     r->payload, r->len};
                coll_push(&want, &wr);
            }
            if (p == 0 && rel[0] <= last[0]) { /* the entry appended after reopen */
                uint8_t pl[10];
                fill(pl, 10, 0 * 1000003ull + (last[0] + 1) * 31 + term[0]);
                struct wal_record wr = {0, WAL_ENTRY, term[0], last[0] + 1, pl, 10};
                coll_push(&want, &wr);
            }
            assert_int_equal(wal_read(w, p, rel[p] + 1, UINT64_MAX, coll_cb, &got, NULL), 0);
            assert_coll_eq(&got, &want);
            coll_free(&got);
            coll_free(&want);
        }
        wal_close(w);
        w = open_ok(&o, &got, NULL); /* the second pass checks the same after a reopen */
        assert_latest_hardstates(&got, &live, PARTS);
        coll_free(&got);
    }
    /* Everything released: only the active segment is left, with the latest
     * HARDSTATEs re-appended into it. */
    for (uint32_t p = 0; p < PARTS; p++)
        wal_release(w, p, last[p] + 1);
    assert_int_equal(wal_flush(w), 0);
    assert_int_equal(wal_flush(w), 0); /* the re-append may have rolled: one more round */
    wal_stats(w, &st2);
    assert_int_equal(st2.segments, 1);
    wal_close(w);
    w = open_ok(&o, &got, NULL);
    assert_latest_hardstates(&got, &live, PARTS);
    coll_free(&got);
    wal_close(w);

    coll_free(&all);
    coll_free(&live);
    tu_rm_rf(dir);
}

static void test_truncate_semantics(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-trunc");
    struct wal_options o;
    opts_init(&o, dir);
    o.sync_off = true;
    struct wal *w = open_ok(&o, NULL, NULL);
    for (uint64_t i = 1; i <= 10; i++)
        append_entry(w, 7, i, 1, 16);
    append_entry(w, 8, 1, 1, 16); /* another partition is unaffected */
    struct wal_record t = {.partition = 7, .type = WAL_TRUNCATE, .term = 2, .index = 6};
    assert_int_equal(wal_append(w, &t, 1), 0);
    for (uint64_t i = 6; i <= 8; i++)
        append_entry(w, 7, i, 2, 16);
    append_entry(w, 7, 8, 3, 16); /* overwrite of 8 without a TRUNCATE */

    uint64_t want_term[9] = {0, 1, 1, 1, 1, 1, 2, 2, 3};
    for (int pass = 0; pass < 2; pass++) {
        struct coll got = {0};
        assert_int_equal(wal_read(w, 7, 1, 100, coll_cb, &got, NULL), 0);
        assert_int_equal(got.n, 8);
        for (size_t i = 0; i < 8; i++) {
            assert_int_equal(got.v[i].index, i + 1);
            assert_int_equal(got.v[i].term, want_term[i + 1]);
        }
        coll_free(&got);
        assert_int_equal(wal_read(w, 7, 9, 100, coll_cb, &got, NULL), 0);
        assert_int_equal(got.n, 0);
        assert_int_equal(wal_read(w, 8, 1, 1, coll_cb, &got, NULL), 0);
        assert_int_equal(got.n, 1);
        coll_free(&got);
        wal_close(w);

        /* Replay honours the cuts: entries 1..5 (t1), TRUNCATE, 6,7 (t2), 8 (t3). */
        w = open_ok(&o, &got, NULL);
        size_t entries = 0, truncs = 0;
        for (size_t i = 0; i < got.n; i++) {
            if (got.v[i].partition != 7) continue;
            if (got.v[i].type == WAL_TRUNCATE) truncs++;
            if (got.v[i].type == WAL_ENTRY) {
                entries++;
                assert_int_equal(got.v[i].term, want_term[got.v[i].index]);
            }
        }
        assert_int_equal(entries, 8);
        assert_int_equal(truncs, 1);
        coll_free(&got);
    }
    wal_close(w);
    tu_rm_rf(dir);
}

static int count_segments(const char *dir, uint64_t *oldest)
{
    int n = 0;
    *oldest = UINT64_MAX;
    for (uint64_t s = 1; s < 4096; s++) {
        char p[512];
        if (access(seg_path(p, sizeof(p), dir, s), F_OK) == 0) {
            n++;
            if (s < *oldest) *oldest = s;
        }
    }
    return n;
}

static void test_compaction(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-compact");
    struct wal_options o;
    opts_init(&o, dir);
    o.segment_bytes = 2048;
    struct wal *w = open_ok(&o, NULL, NULL);

    /* p0's HARDSTATE lands in segment 1 and is never rewritten; p1's changes. */
    uint8_t vote0[8] = {'v', 'o', 't', 'e', '0'}, vote1[8];
    struct wal_record hs = {0, WAL_HARDSTATE, 3, 0, vote0, sizeof(vote0)};
    assert_int_equal(wal_append(w, &hs, 1), 0);
    struct wal_record snap = {1, WAL_SNAPSHOT, 2, 0, "snapmeta", 8};
    assert_int_equal(wal_append(w, &snap, 1), 0);
    for (uint64_t i = 1; i <= 60; i++) {
        append_entry(w, 0, i, 3, 100);
        append_entry(w, 1, i, 4, 100);
        if (i % 20 == 0) {
            memset(vote1, (int)i, sizeof(vote1));
            struct wal_record h1 = {1, WAL_HARDSTATE, 4 + i, i, vote1, sizeof(vote1)};
            assert_int_equal(wal_append(w, &h1, 1), 0);
        }
    }
    assert_int_equal(wal_flush(w), 0);
    uint64_t oldest;
    int before = count_segments(dir, &oldest);
    assert_true(before >= 6);
    assert_int_equal(oldest, 1);

    /* Only p0 released: p1's entries keep every segment. */
    wal_release(w, 0, 60);
    assert_int_equal(wal_flush(w), 0);
    assert_int_equal(count_segments(dir, &oldest), before);

    /* p1 released up to 30: the segments whose entries are all <= 30 go. */
    wal_release(w, 1, 30);
    assert_int_equal(wal_flush(w), 0);
    int mid = count_segments(dir, &oldest);
    assert_true(mid < before);
    assert_true(oldest > 1);
    struct coll got = {0};
    assert_int_equal(wal_read(w, 1, 1, 60, coll_cb, &got, NULL), 0);
    assert_true(got.n >= 30 && got.n < 60); /* 31..60 at least */
    assert_int_equal(got.v[got.n - 1].index, 60);
    for (size_t i = 1; i < got.n; i++)
        assert_int_equal(got.v[i].index, got.v[i - 1].index + 1);
    coll_free(&got);
    struct wal_stats st;
    wal_stats(w, &st);
    assert_true(st.reappended >= 2); /* p0's HARDSTATE and p1's SNAPSHOT */
    assert_int_equal(st.segments, (uint64_t)mid);

    /* Everything released: all but the active segment go. */
    wal_release(w, 1, 60);
    assert_int_equal(wal_flush(w), 0);
    assert_int_equal(wal_flush(w), 0); /* a re-append may roll: one more round */
    assert_int_equal(count_segments(dir, &oldest), 1);
    wal_close(w);

    /* The latest HARDSTATE/SNAPSHOT of each partition survived, the rest did not. */
    o.replay = WAL_REPLAY_ALL;
    w = open_ok(&o, &got, NULL);
    const struct rec *h0 = NULL, *h1 = NULL, *s1 = NULL;
    size_t entries = 0;
    for (size_t i = 0; i < got.n; i++) {
        const struct rec *r = &got.v[i];
        if (r->type == WAL_HARDSTATE && r->partition == 0) h0 = r;
        if (r->type == WAL_HARDSTATE && r->partition == 1) h1 = r;
        if (r->type == WAL_SNAPSHOT && r->partition == 1) s1 = r;
        entries += r->type == WAL_ENTRY;
    }
    assert_non_null(h0);
    assert_non_null(h1);
    assert_non_null(s1);
    assert_int_equal(h0->term, 3);
    assert_memory_equal(h0->payload, vote0, sizeof(vote0));
    assert_int_equal(h1->term, 64);
    assert_memory_equal(h1->payload, vote1, sizeof(vote1));
    assert_memory_equal(s1->payload, "snapmeta", 8);
    assert_true(entries < 20);
    coll_free(&got);
    wal_close(w);
    tu_rm_rf(dir);
}

static void test_forget_and_roll_compaction(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-forget");
    struct wal_options o;
    opts_init(&o, dir);
    o.segment_bytes = 1024;
    o.sync_off = true;
    struct wal *w = open_ok(&o, NULL, NULL);
    uint64_t oldest;

    /* Segment 1 holds only p7 entries 1..7 (40 + 7 * 140 = 1020 bytes). Releasing
     * them while segment 1 is still the active one deletes nothing... */
    for (uint64_t i = 1; i <= 7; i++)
        append_entry(w, 7, i, 1, 100);
    wal_release(w, 7, 7);
    assert_int_equal(wal_flush(w), 0);
    assert_int_equal(count_segments(dir, &oldest), 1);
    /* ...but the roll to segment 2 makes it deletable without another release. */
    append_entry(w, 8, 1, 1, 100);
    assert_int_equal(wal_flush(w), 0);
    assert_int_equal(count_segments(dir, &oldest), 1);
    assert_int_equal(oldest, 2);

    /* p5 is moved away from this node: forgetting it frees its segments and its
     * HARDSTATE is not kept alive. */
    struct wal_record hs = {5, WAL_HARDSTATE, 9, 0, "v5", 2};
    assert_int_equal(wal_append(w, &hs, 1), 0);
    for (uint64_t i = 1; i <= 20; i++)
        append_entry(w, 5, i, 9, 100);
    wal_release(w, 8, 1);
    assert_int_equal(wal_flush(w), 0);
    assert_true(count_segments(dir, &oldest) >= 3);
    wal_forget(w, 5);
    assert_int_equal(wal_flush(w), 0);
    assert_int_equal(wal_flush(w), 0); /* a re-append may roll: one more round */
    assert_int_equal(count_segments(dir, &oldest), 1);
    struct wal_stats st;
    wal_stats(w, &st);
    assert_int_equal(st.reappended, 0);

    /* Hosted again: its new entries are kept until released. */
    for (uint64_t i = 1; i <= 3; i++)
        append_entry(w, 5, i, 10, 100);
    for (uint64_t i = 2; i <= 30; i++)
        append_entry(w, 8, i, 1, 100);
    wal_release(w, 8, 30);
    assert_int_equal(wal_flush(w), 0);
    int nseg = count_segments(dir, &oldest);
    assert_true(nseg >= 3);
    struct coll got = {0};
    assert_int_equal(wal_read(w, 5, 1, 3, coll_cb, &got, NULL), 0);
    assert_int_equal(got.n, 3);
    assert_int_equal(got.v[0].term, 10);
    coll_free(&got);
    wal_release(w, 5, 3);
    assert_int_equal(wal_flush(w), 0);
    assert_int_equal(wal_flush(w), 0); /* a re-append may roll: one more round */
    assert_int_equal(count_segments(dir, &oldest), 1);
    wal_close(w);

    /* Replay: p5's old HARDSTATE is gone with its segment. */
    o.replay = WAL_REPLAY_ALL;
    w = open_ok(&o, &got, NULL);
    for (size_t i = 0; i < got.n; i++)
        assert_false(got.v[i].partition == 5 && got.v[i].type == WAL_HARDSTATE);
    coll_free(&got);
    wal_close(w);
    tu_rm_rf(dir);
}

struct rdc {
    struct wal *w;
    _Atomic uint64_t last;
    _Atomic int done;
    uint64_t reads, full;
};

static int rdc_check(void *ctx, const struct wal_record *r)
{
    struct coll *c = ctx;
    uint8_t buf[100];
    fill(buf, sizeof(buf), 1 * 1000003ull + r->index * 31 + 1);
    if (r->len != sizeof(buf) || memcmp(buf, r->payload, sizeof(buf)) != 0) abort();
    coll_push(c, r);
    return 0;
}

static void *rdc_reader(void *arg)
{
    struct rdc *x = arg;
    while (!x->done) {
        uint64_t last = x->last;
        if (last < 2) continue;
        uint64_t lo = last > 40 ? last - 40 : 1;
        struct coll got = {0};
        struct trine_err err = {0};
        if (wal_read(x->w, 1, lo, last, rdc_check, &got, &err) != 0) abort();
        /* The writer may have released and deleted a prefix since: what comes
         * back is a contiguous run ending at last. */
        for (size_t i = 0; i < got.n; i++)
            if (got.v[i].index != last - (got.n - 1 - i)) abort();
        if (got.n == last - lo + 1) x->full++;
        coll_free(&got);
        x->reads++;
    }
    return NULL;
}

static void test_read_during_compaction(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-rdc");
    struct wal_options o;
    opts_init(&o, dir);
    o.segment_bytes = 4096;
    o.sync_off = true;
    struct rdc x = {0};
    x.w = open_ok(&o, NULL, NULL);
    pthread_t th[2];
    struct rdc *xp = &x;
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, rdc_reader, xp);
    for (uint64_t i = 1; i <= 1500; i++) {
        append_entry(x.w, 1, i, 1, 100);
        x.last = i;
        if (i % 50 == 0) wal_release(x.w, 1, i - 50);
    }
    x.done = 1;
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    struct wal_stats st;
    wal_stats(x.w, &st);
    assert_true(st.segments_deleted > 30);
    assert_true(x.reads > 0);
    assert_true(x.full > 0);
    wal_close(x.w);
    tu_rm_rf(dir);
}

/* ---- async submit and group commit ---- */

struct async_ctx {
    pthread_mutex_t mu;
    int done, failed;
    uint64_t next_expected[8];
    bool order_ok, thread_ok;
    pthread_t submitters[8];
    int nsub;
};

struct async_one {
    struct async_ctx *c;
    int thread;
    uint64_t seq;
};

static void async_done(void *ctx, int status)
{
    struct async_one *a = ctx;
    struct async_ctx *c = a->c;
    pthread_mutex_lock(&c->mu);
    if (status != 0) c->failed++;
    if (a->seq != c->next_expected[a->thread]) c->order_ok = false;
    c->next_expected[a->thread] = a->seq + 1;
    for (int i = 0; i < c->nsub; i++)
        if (pthread_equal(pthread_self(), c->submitters[i])) c->thread_ok = false;
    c->done++;
    pthread_mutex_unlock(&c->mu);
    free(a);
}

struct async_arg {
    struct wal *w;
    struct async_ctx *c;
    int thread;
};

static void *async_thread(void *arg)
{
    struct async_arg *a = arg;
    for (uint64_t s = 0; s < 100; s++) {
        struct async_one *one = malloc(sizeof(*one));
        *one = (struct async_one){a->c, a->thread, s};
        struct wal_record r = {(uint32_t)a->thread, WAL_ENTRY, 1, s + 1, &s, sizeof(s)};
        int rc;
        while ((rc = wal_submit(a->w, &r, 1, async_done, one)) == -TRINE_EBUSY)
            usleep(100);
        if (rc != 0) abort();
    }
    return NULL;
}

static void test_async_submit(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-async");
    struct wal_options o;
    opts_init(&o, dir);
    o.queue_bytes_max = 4096; /* small: exercises BUSY */
    struct wal *w = open_ok(&o, NULL, NULL);
    struct async_ctx c = {.mu = PTHREAD_MUTEX_INITIALIZER, .order_ok = true, .thread_ok = true};
    pthread_t th[4];
    struct async_arg args[4];
    c.nsub = 4;
    pthread_mutex_lock(&c.mu);
    for (int i = 0; i < 4; i++) {
        args[i] = (struct async_arg){w, &c, i};
        pthread_create(&th[i], NULL, async_thread, &args[i]);
        c.submitters[i] = th[i];
    }
    pthread_mutex_unlock(&c.mu);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(wal_flush(w), 0);
    assert_int_equal(c.done, 400);
    assert_int_equal(c.failed, 0);
    assert_true(c.order_ok);
    assert_true(c.thread_ok);
    struct wal_stats st;
    wal_stats(w, &st);
    assert_int_equal(st.records, 400);
    assert_true(st.fsyncs < 400); /* callbacks were grouped */
    wal_close(w);
    tu_rm_rf(dir);
}

static void test_submit_busy(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-busy");
    struct fsfault *ff = fsfault_new(NULL);
    struct wal_options o;
    opts_init(&o, dir);
    o.fs = fsfault_fs(ff);
    o.queue_bytes_max = 200;
    struct wal *w = open_ok(&o, NULL, NULL);
    struct async_ctx c = {.mu = PTHREAD_MUTEX_INITIALIZER, .order_ok = true, .thread_ok = true};
    uint8_t pl[100] = {0};
    struct wal_record r = {1, WAL_ENTRY, 1, 1, pl, sizeof(pl)};
    fsfault_hold_sync(ff, true);
    struct async_one *a = malloc(sizeof(*a));
    *a = (struct async_one){&c, 0, 0};
    assert_int_equal(wal_submit(w, &r, 1, async_done, a), 0);
    assert_true(fsfault_wait_held(ff, 5000)); /* taken and written, fsync held */
    struct async_one *b = malloc(sizeof(*b));
    *b = (struct async_one){&c, 0, 1};
    r.index = 2;
    assert_int_equal(wal_submit(w, &r, 1, async_done, b), 0); /* queue was empty */
    r.index = 3;
    assert_int_equal(wal_submit(w, &r, 1, async_done, NULL), -TRINE_EBUSY);
    assert_int_equal(c.done, 0); /* nothing acknowledged while the fsync is held */
    fsfault_hold_sync(ff, false);
    assert_int_equal(wal_flush(w), 0);
    assert_int_equal(c.done, 2);
    assert_true(c.order_ok);
    wal_close(w);
    fsfault_free(ff);
    tu_rm_rf(dir);
}

struct gc_arg {
    struct wal *w;
    uint32_t thread;
};

static void *gc_thread(void *arg)
{
    struct gc_arg *a = arg;
    for (uint64_t i = 1; i <= 40; i++) {
        uint8_t pl[256];
        fill(pl, sizeof(pl), i);
        struct wal_record r = {a->thread, WAL_ENTRY, 1, i, pl, sizeof(pl)};
        if (wal_append(a->w, &r, 1) != 0) abort();
    }
    return NULL;
}

/* on_batch: called on the sync thread only (no lock needed for these sums). */
struct batch_sums {
    uint64_t batches, records, bytes, synced, fsync_ns;
};

static void on_batch(void *ctx, const struct wal_batch_info *b)
{
    struct batch_sums *s = ctx;
    s->batches++;
    s->records += b->records;
    s->bytes += b->bytes;
    s->synced += b->synced ? 1 : 0;
    s->fsync_ns += b->fsync_ns;
}

static void test_group_commit(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-gc");
    struct wal_options o;
    opts_init(&o, dir);
    struct batch_sums sums = {0};
    o.on_batch = on_batch;
    o.on_batch_ctx = &sums;
    struct wal *w = open_ok(&o, NULL, NULL);
    pthread_t th[16];
    struct gc_arg args[16];
    for (uint32_t i = 0; i < 16; i++) {
        args[i] = (struct gc_arg){w, i};
        pthread_create(&th[i], NULL, gc_thread, &args[i]);
    }
    for (int i = 0; i < 16; i++)
        pthread_join(th[i], NULL);
    struct wal_stats st;
    wal_stats(w, &st);
    assert_int_equal(st.records, 640);
    assert_int_equal(st.appends, 640);
    assert_true(st.fsyncs < 640 / 2); /* appenders shared fsyncs */
    assert_true(st.batch_records.max > 1);
    assert_int_equal(st.fsync_us.count, st.fsyncs);
    /* the metrics hook saw every group commit, as the stats did (all appends returned, so
     * every batch was reported before its appenders woke) */
    assert_int_equal(sums.batches, st.batches);
    assert_int_equal(sums.records, st.records);
    assert_int_equal(sums.bytes, st.bytes);
    assert_int_equal(sums.synced, st.fsyncs);
    assert_int_equal(sums.fsync_ns, st.fsync_ns_total);
    wal_close(w);
    o.on_batch = NULL;
    struct coll got = {0};
    w = open_ok(&o, &got, NULL);
    assert_int_equal(got.n, 640);
    uint64_t next[16] = {0};
    for (size_t i = 0; i < got.n; i++) { /* each thread's records in its order */
        assert_int_equal(got.v[i].index, ++next[got.v[i].partition]);
    }
    coll_free(&got);
    wal_close(w);
    tu_rm_rf(dir);
}

static void test_invalid_args(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-inval");
    struct wal_options o;
    opts_init(&o, dir);
    o.sync_off = true;
    o.payload_bytes_max = 100;
    struct wal *w = open_ok(&o, NULL, NULL);
    uint8_t big[101] = {0};
    struct wal_record r = {1, WAL_ENTRY, 1, 0, NULL, 0};
    assert_int_equal(wal_append(w, &r, 1), -TRINE_EINVALID); /* index 0 */
    r.index = 1;
    r.type = 9;
    assert_int_equal(wal_append(w, &r, 1), -TRINE_EINVALID);
    r.type = WAL_ENTRY;
    r.payload = big;
    r.len = sizeof(big);
    assert_int_equal(wal_append(w, &r, 1), -TRINE_EINVALID);
    assert_int_equal(wal_append(w, &r, 0), -TRINE_EINVALID);
    assert_int_equal(wal_read(w, 1, 5, 4, coll_cb, NULL, NULL), -TRINE_EINVALID);
    wal_close(w);
    struct trine_err err = {0};
    o.segment_bytes = 10;
    assert_int_equal(wal_open(&o, &w, NULL, &err), -TRINE_EINVALID);
    o.segment_bytes = 0;
    o.payload_bytes_max = 2u << 30;
    assert_int_equal(wal_open(&o, &w, NULL, &err), -TRINE_EINVALID);
    o.dir = NULL;
    assert_int_equal(wal_open(&o, &w, NULL, &err), -TRINE_EINVALID);
    tu_rm_rf(dir);
}

/* ---- kill -9 under group commit ---- */

#define K9_THREADS 4
#define K9_RUNS    50

struct k9_arg {
    struct wal *w;
    int fd;
    uint32_t run, thread;
};

static void *k9_thread(void *arg)
{
    struct k9_arg *a = arg;
    for (uint64_t seq = 0;; seq++) {
        uint64_t id = (uint64_t)a->run << 40 | (uint64_t)a->thread << 32 | seq;
        uint8_t pl[256];
        uint32_t len = 8 + (uint32_t)(id * 2654435761u % 200);
        fill(pl + 8, len - 8, id);
        memcpy(pl, &id, 8);
        struct wal_record r = {a->thread, WAL_ENTRY, a->run + 1, (uint64_t)a->run << 32 | (seq + 1),
                               pl,        len};
        if (wal_append(a->w, &r, 1) != 0) _exit(4);
        if (write(a->fd, &id, sizeof(id)) != sizeof(id)) _exit(5); /* acknowledged */
    }
    return NULL;
}

static void k9_child(const char *dir, uint32_t run, int fd)
{
    alarm(10); /* never outlive the test */
    struct wal_options o;
    opts_init(&o, dir);
    o.segment_bytes = 64 << 10;
    struct wal *w = NULL;
    struct trine_err err = {0};
    if (wal_open(&o, &w, NULL, &err) != 0) {
        fprintf(stderr, "k9 child: %s\n", err.msg);
        _exit(3);
    }
    pthread_t th[K9_THREADS];
    struct k9_arg args[K9_THREADS];
    for (uint32_t t = 0; t < K9_THREADS; t++) {
        args[t] = (struct k9_arg){w, fd, run, t};
        pthread_create(&th[t], NULL, k9_thread, &args[t]);
    }
    for (;;)
        pause();
}

static size_t k9_read(int fd, uint64_t *ids, size_t n, size_t cap)
{
    for (;;) {
        ssize_t k = read(fd, (uint8_t *)(ids + n), (cap - n) * sizeof(*ids));
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return n;
        assert_int_equal(k % 8, 0); /* 8-byte writes to a pipe are atomic */
        n += (size_t)k / 8;
        assert_true(n < cap);
        return n;
    }
}

static void test_kill9_group_commit(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-k9");
    struct rng rng;
    rng_seed(&rng, rng_test_seed("wal_kill9"));
    size_t cap = 1 << 20;
    uint64_t *acked = malloc(cap * sizeof(*acked));
    assert_non_null(acked);
    uint64_t total_acked = 0, t0 = clock_mono_ns();
    static uint64_t acks[K9_RUNS][K9_THREADS]; /* acknowledged per run and thread */
    memset(acks, 0, sizeof(acks));
    for (uint32_t run = 0; run < K9_RUNS; run++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            k9_child(dir, run, fds[1]);
        }
        close(fds[1]);
        size_t n = 0;
        uint64_t until = clock_mono_ns() + (30 + rng_below(&rng, 250)) * 1000000ull;
        while (clock_mono_ns() < until) {
            struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
            if (poll(&pfd, 1, 5) > 0) n = k9_read(fds[0], acked, n, cap);
        }
        kill(pid, SIGKILL);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFSIGNALED(status)) fail_msg("child of run %u exited with %d", run, status);
        size_t m;
        while ((m = k9_read(fds[0], acked, n, cap)) != n)
            n = m;
        close(fds[0]);
        total_acked += n;

        for (size_t i = 0; i < n; i++) {
            assert_int_equal(acked[i] >> 40, run);
            acks[run][(acked[i] >> 32) & 0xff]++;
        }

        /* Every record acknowledged in this or any earlier run is there, runs in
         * order, each thread's records in its order, the chain intact (no repair). */
        struct wal_options o;
        opts_init(&o, dir);
        o.replay = WAL_REPLAY_ALL;
        struct coll got = {0};
        struct wal_recovery rep;
        struct wal *w = open_ok(&o, &got, &rep);
        assert_false(rep.corrupt);
        static uint64_t count[K9_RUNS][K9_THREADS];
        memset(count, 0, sizeof(count));
        uint64_t prev_run = 0;
        for (size_t i = 0; i < got.n; i++) {
            uint64_t id;
            memcpy(&id, got.v[i].payload, 8);
            uint64_t r = id >> 40, t = (id >> 32) & 0xff;
            assert_true(r <= run && r >= prev_run && t < K9_THREADS);
            prev_run = r;
            assert_int_equal(id & 0xffffffffu, count[r][t]); /* no gap, no reorder */
            count[r][t]++;
        }
        for (uint32_t r = 0; r <= run; r++)
            for (int t = 0; t < K9_THREADS; t++) {
                assert_true(count[r][t] >= acks[r][t]);     /* nothing acknowledged lost */
                assert_true(count[r][t] <= acks[r][t] + 1); /* at most the one in flight */
            }
        wal_close(w);
        coll_free(&got);
    }
    fprintf(stderr, "kill9: %d runs, %llu acknowledged records, %.1f s\n", K9_RUNS,
            (unsigned long long)total_acked, (double)(clock_mono_ns() - t0) / 1e9);
    assert_true(total_acked > 50);
    free(acked);
    tu_rm_rf(dir);
}

/* ---- faults ---- */

struct crash_setup {
    const char *dir;
    struct fsfault *ff;
    struct wal *w;
    int stops;
    struct async_ctx c;
};

/* 20 acknowledged records (16-byte payloads), then one batch of 5 records (100 bytes
 * each) written but held before its fdatasync, then a crash keeping keep bytes. */
static void crash_after_unsynced(struct crash_setup *s, uint64_t keep, bool no_preallocate)
{
    s->ff = fsfault_new(NULL);
    struct wal_options o;
    opts_init(&o, s->dir);
    o.no_preallocate = no_preallocate;
    o.fs = fsfault_fs(s->ff);
    o.stop = stop_quiet;
    o.stop_ctx = &s->stops;
    s->w = open_ok(&o, NULL, NULL);
    for (uint64_t i = 1; i <= 20; i++)
        append_entry(s->w, 1, i, 1, 16);
    s->c = (struct async_ctx){.mu = PTHREAD_MUTEX_INITIALIZER, .order_ok = true};
    uint8_t pl[5][100];
    struct wal_record recs[5];
    for (int i = 0; i < 5; i++) {
        fill(pl[i], 100, 1000 + (uint64_t)i);
        recs[i] = (struct wal_record){1, WAL_ENTRY, 1, 21 + (uint64_t)i, pl[i], 100};
    }
    fsfault_hold_sync(s->ff, true);
    struct async_one *a = malloc(sizeof(*a));
    *a = (struct async_one){&s->c, 0, 0};
    assert_int_equal(wal_submit(s->w, recs, 5, async_done, a), 0);
    assert_true(fsfault_wait_held(s->ff, 5000));
    assert_int_equal(fsfault_unsynced_bytes(s->ff), 5 * 140);
    fsfault_crash(s->ff, keep);
    wal_close(s->w); /* the held fsync fails: stop hook, batch not acknowledged */
    assert_int_equal(s->stops, 1);
    assert_int_equal(s->c.done, 1);
    assert_int_equal(s->c.failed, 1);
    fsfault_free(s->ff);
}

static void test_unsynced_lost(void **state)
{
    (void)state;
    struct crash_setup s = {.dir = tu_mkdtemp("wal-lost")};
    crash_after_unsynced(&s, 0, false);
    struct wal_options o;
    opts_init(&o, s.dir);
    struct coll got = {0};
    struct wal_recovery rep;
    struct wal *w = open_ok(&o, &got, &rep);
    assert_int_equal(got.n, 20);
    for (size_t i = 0; i < 20; i++)
        assert_int_equal(got.v[i].index, i + 1);
    assert_int_equal(rep.torn_bytes, 0);
    append_entry(w, 1, 21, 1, 16);
    wal_close(w);
    coll_free(&got);
    tu_rm_rf(s.dir);
}

/* Returns the log written so far as one string (tests capture it in a file). */
static void read_log(int logfd, char *buf, size_t n)
{
    memset(buf, 0, n);
    assert_true(pread(logfd, buf, n - 1, 0) >= 0);
}

/* A torn write of the last batch, inside preallocated space or (no_preallocate)
 * at the end of the file, is truncated as torn. */
static void check_torn_tail(bool no_preallocate)
{
    struct crash_setup s = {.dir = tu_mkdtemp("wal-torn")};
    crash_after_unsynced(&s, 2 * 140 + 50, no_preallocate); /* 2 records and a piece */
    char path[512], logpath[512];
    seg_path(path, sizeof(path), s.dir, 1);
    int64_t size = fsfault_file_size(path);
    uint64_t end_ok = 40 + 20 * 56 + 2 * 140;
    /* The torn bytes sit in the preallocated space, zeros after them. */
    assert_int_equal(size, no_preallocate ? (int64_t)end_ok + 50 : 64 << 20);

    /* The truncation is logged with the file and offset. */
    int logfd = open(tu_path(logpath, sizeof(logpath), s.dir, "log"), O_CREAT | O_RDWR, 0644);
    log_set_fd(logfd);
    struct wal_options o;
    opts_init(&o, s.dir);
    o.no_preallocate = no_preallocate;
    struct coll got = {0};
    struct wal_recovery rep;
    struct wal *w = open_ok(&o, &got, &rep);
    log_set_fd(2);
    char logbuf[8192];
    read_log(logfd, logbuf, sizeof(logbuf));
    close(logfd);
    char needle[64];
    snprintf(needle, sizeof(needle), "at offset %llu", (unsigned long long)end_ok);
    assert_non_null(strstr(logbuf, "torn tail"));
    assert_non_null(strstr(logbuf, "0000000000000001.wal"));
    assert_non_null(strstr(logbuf, needle));

    assert_int_equal(rep.torn_bytes, 50); /* the zeros after them are not counted */
    assert_int_equal(rep.bad_offset, end_ok);
    assert_false(rep.corrupt);
    assert_int_equal(got.n, 22); /* 20 acknowledged + 2 whole unacknowledged ones */
    for (size_t i = 0; i < got.n; i++)
        assert_int_equal(got.v[i].index, i + 1);
    /* Cut at the bad spot, then preallocated again. */
    assert_int_equal(fsfault_file_size(path), no_preallocate ? (int64_t)end_ok : 64 << 20);
    append_entry(w, 1, 23, 1, 16);
    wal_close(w);
    coll_free(&got);
    w = open_ok(&o, &got, &rep);
    assert_int_equal(got.n, 23);
    assert_int_equal(rep.torn_bytes, 0);
    assert_string_equal(rep.bad_file, "");
    wal_close(w);
    coll_free(&got);
    tu_rm_rf(s.dir);
}

static void test_torn_tail(void **state)
{
    (void)state;
    check_torn_tail(false);
    check_torn_tail(true);
}

/* Writes n single-record batches of 16-byte payloads into a fresh log. */
static void write_batches_opt(const char *dir, int n, uint64_t segment_bytes, bool no_preallocate)
{
    struct wal_options o;
    opts_init(&o, dir);
    o.sync_off = true;
    o.segment_bytes = segment_bytes;
    o.no_preallocate = no_preallocate;
    struct wal *w = open_ok(&o, NULL, NULL);
    for (int i = 1; i <= n; i++)
        append_entry(w, 2, (uint64_t)i, 1, 16);
    wal_close(w);
}

static void write_batches(const char *dir, int n, uint64_t segment_bytes)
{
    write_batches_opt(dir, n, segment_bytes, false);
}

/* Zeros after the last record of the last segment (a file grown by a crash whose
 * data never came, or preallocated space) are the log's free space: kept, not
 * torn, not logged, and the next append goes right after the last record. */
static void check_zeroed_tail(bool no_preallocate)
{
    const char *dir = tu_mkdtemp("wal-zero");
    write_batches_opt(dir, 30, 0, no_preallocate);
    char path[512], logpath[512];
    seg_path(path, sizeof(path), dir, 1);
    int64_t size = fsfault_file_size(path);
    assert_int_equal(size, no_preallocate ? 40 + 30 * 56 : 64 << 20);
    assert_int_equal(fsfault_append_zeros(path, 4096), 0);
    int logfd = open(tu_path(logpath, sizeof(logpath), dir, "log"), O_CREAT | O_RDWR, 0644);
    log_set_fd(logfd);
    struct wal_options o;
    opts_init(&o, dir);
    o.no_preallocate = no_preallocate;
    struct coll got = {0};
    struct wal_recovery rep;
    struct wal *w = open_ok(&o, &got, &rep);
    assert_int_equal(got.n, 30);
    assert_int_equal(rep.torn_bytes, 0);
    assert_false(rep.corrupt);
    assert_string_equal(rep.bad_file, "");
    assert_int_equal(fsfault_file_size(path), size + 4096); /* untouched */
    append_entry(w, 2, 31, 1, 16);
    wal_close(w);
    coll_free(&got);
    w = open_ok(&o, &got, &rep);
    log_set_fd(2);
    char logbuf[8192];
    read_log(logfd, logbuf, sizeof(logbuf));
    close(logfd);
    assert_null(strstr(logbuf, "\"warn\"")); /* neither open warned */
    assert_int_equal(got.n, 31);
    for (size_t i = 0; i < got.n; i++)
        assert_int_equal(got.v[i].index, i + 1);
    assert_int_equal(rep.torn_bytes, 0);
    assert_int_equal(fsfault_file_size(path), size + 4096);
    wal_close(w);
    coll_free(&got);
    tu_rm_rf(dir);
}

static void test_zeroed_tail(void **state)
{
    (void)state;
    check_zeroed_tail(false);
    check_zeroed_tail(true);
}

static void test_bitflip_mid_log(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-flip");
    write_batches(dir, 60, 0);
    char path[512];
    seg_path(path, sizeof(path), dir, 1);
    int64_t size = fsfault_file_size(path);
    assert_int_equal(size, 64 << 20);                  /* preallocated */
    uint64_t rec30 = 40 + 29 * 56, end = 40 + 60 * 56; /* record 30 of 60, each 56 bytes */
    assert_int_equal(fsfault_flip_bit(path, rec30 + 45, 3), 0);

    struct wal_options o;
    opts_init(&o, dir);
    struct wal *w = NULL;
    struct trine_err err = {0};
    struct wal_recovery rep;
    assert_int_equal(wal_open(&o, &w, &rep, &err), -TRINE_ECORRUPT);
    assert_null(w);
    char needle[64];
    snprintf(needle, sizeof(needle), "at offset %llu", (unsigned long long)rec30);
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, needle));
    assert_true(rep.corrupt);
    assert_int_equal(rep.bad_offset, rec30);
    assert_int_equal(fsfault_file_size(path), size); /* nothing touched */

    o.repair = true;
    struct coll got = {0};
    w = open_ok(&o, &got, &rep);
    assert_int_equal(got.n, 29);
    assert_int_equal(rep.cut_records, 30);           /* the 30 valid ones after the flip */
    assert_int_equal(rep.cut_bytes, end - rec30);    /* records only, not the free space */
    assert_int_equal(fsfault_file_size(path), size); /* cut at rec30, preallocated again */
    append_entry(w, 2, 30, 2, 16);
    wal_close(w);
    coll_free(&got);
    o.repair = false;
    w = open_ok(&o, &got, &rep);
    assert_int_equal(got.n, 30);
    wal_close(w);
    coll_free(&got);
    tu_rm_rf(dir);
}

static void test_corrupt_earlier_segment(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-segflip");
    write_batches(dir, 100, 1024); /* ~17 records per segment */
    char p1[512], p2[512], p3[512];
    uint64_t oldest;
    int nseg = count_segments(dir, &oldest);
    assert_true(nseg >= 5);
    /* Flip the last byte of segment 2: corrupt even though it ends "like" a tail. */
    seg_path(p2, sizeof(p2), dir, 2);
    assert_int_equal(fsfault_flip_bit(p2, (uint64_t)fsfault_file_size(p2) - 1, 0), 0);
    struct wal_options o;
    opts_init(&o, dir);
    struct wal *w = NULL;
    struct trine_err err = {0};
    struct wal_recovery rep;
    assert_int_equal(wal_open(&o, &w, &rep, &err), -TRINE_ECORRUPT);
    assert_non_null(strstr(err.msg, "0000000000000002.wal"));
    o.repair = true;
    struct coll got = {0};
    w = open_ok(&o, &got, &rep);
    assert_int_equal(count_segments(dir, &oldest), 2);
    assert_int_equal(got.n, rep.records);
    assert_true(rep.cut_records > 50);
    wal_close(w);
    coll_free(&got);

    /* A missing middle segment is corruption too. */
    write_batches(tu_path(p1, sizeof(p1), dir, "b"), 100, 1024);
    seg_path(p3, sizeof(p3), p1, 3);
    assert_int_equal(unlink(p3), 0);
    opts_init(&o, p1);
    assert_int_equal(wal_open(&o, &w, &rep, &err), -TRINE_ECORRUPT);
    assert_non_null(strstr(err.msg, "missing"));
    tu_rm_rf(dir);
}

static void test_hole_in_last_batch_is_torn(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-hole");
    struct wal_options o;
    opts_init(&o, dir);
    o.sync_off = true;
    struct wal *w = open_ok(&o, NULL, NULL);
    for (uint64_t i = 1; i <= 10; i++)
        append_entry(w, 3, i, 1, 16); /* 10 batches */
    uint8_t pl[8][100];
    struct wal_record recs[8];
    for (int i = 0; i < 8; i++) {
        fill(pl[i], 100, (uint64_t)i);
        recs[i] = (struct wal_record){3, WAL_ENTRY, 1, 11 + (uint64_t)i, pl[i], 100};
    }
    assert_int_equal(wal_append(w, recs, 8), 0); /* one batch of 8 */
    wal_close(w);
    char path[512];
    seg_path(path, sizeof(path), dir, 1);
    uint64_t batch = 40 + 10 * 56;
    /* Pages of the last batch reached the disk out of order: records 3-4 are zero. */
    assert_int_equal(fsfault_zero(path, batch + 2 * 140, 2 * 140), 0);
    struct coll got = {0};
    struct wal_recovery rep;
    o.sync_off = false;
    w = open_ok(&o, &got, &rep);
    assert_false(rep.corrupt);
    assert_int_equal(got.n, 12);
    assert_int_equal(rep.torn_bytes, 6 * 140);
    wal_close(w);
    coll_free(&got);

    /* The same hole in an earlier batch, with later batches intact: corruption. */
    for (uint64_t i = 13; i <= 14; i++) {
        w = open_ok(&o, NULL, NULL);
        append_entry(w, 3, i, 1, 16);
        wal_close(w);
    }
    assert_int_equal(fsfault_zero(path, batch + 140, 10), 0);
    struct trine_err err = {0};
    assert_int_equal(wal_open(&o, &w, &rep, &err), -TRINE_ECORRUPT);
    tu_rm_rf(dir);
}

/* ---- preallocation ---- */

static int64_t seg_size(const char *dir, uint64_t seq)
{
    char p[512];
    return fsfault_file_size(seg_path(p, sizeof(p), dir, seq));
}

/* Opens dir with o, the log going to a file; *logbuf gets what was logged. */
static struct wal *open_logged(struct wal_options *o, struct coll *c, struct wal_recovery *rep,
                               const char *dir, char *logbuf, size_t n)
{
    char logpath[512];
    int logfd =
        open(tu_path(logpath, sizeof(logpath), dir, "log"), O_CREAT | O_RDWR | O_TRUNC, 0644);
    assert_true(logfd >= 0);
    log_set_fd(logfd);
    struct wal *w = open_ok(o, c, rep);
    log_set_fd(2);
    read_log(logfd, logbuf, n);
    close(logfd);
    return w;
}

static void assert_reads_1_to(struct wal *w, uint32_t p, uint64_t n)
{
    struct coll got = {0};
    assert_int_equal(wal_read(w, p, 1, UINT64_MAX, coll_cb, &got, NULL), 0);
    assert_int_equal(got.n, n);
    for (size_t i = 0; i < got.n; i++) {
        uint8_t want[16];
        fill(want, 16, p * 1000003ull + (i + 1) * 31 + 1);
        assert_int_equal(got.v[i].index, i + 1);
        assert_memory_equal(got.v[i].payload, want, 16);
    }
    coll_free(&got);
}

/* 16-byte entries (56 bytes each) in 4096-byte segments: 72 per segment. */
#define PA_SEG    4096
#define PA_SEALED (40 + 72 * 56)

/* A new segment's file is segment_bytes long from its creation on; at the roll
 * the old one is cut back to its records; all of it reads back, before and
 * after a reopen, and appends after the reopen go on at the logical end. */
static void test_prealloc_segments(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-prealloc");
    struct fsfault *ff = fsfault_new(NULL);
    struct wal_options o;
    opts_init(&o, dir);
    o.fs = fsfault_fs(ff);
    o.segment_bytes = PA_SEG;
    struct wal *w = open_ok(&o, NULL, NULL);
    assert_int_equal(seg_size(dir, 1), PA_SEG); /* a header and free space */
    assert_int_equal(fsfault_preallocs(ff), 1);
    for (uint64_t i = 1; i <= 200; i++)
        append_entry(w, 1, i, 1, 16);
    struct wal_stats st;
    wal_stats(w, &st);
    assert_int_equal(st.segments, 3); /* 72 + 72 + 56 */
    assert_int_equal(fsfault_preallocs(ff), 3);
    assert_int_equal(seg_size(dir, 1), PA_SEALED);
    assert_int_equal(seg_size(dir, 2), PA_SEALED);
    assert_int_equal(seg_size(dir, 3), PA_SEG);
    assert_reads_1_to(w, 1, 200);
    wal_close(w);

    char logbuf[8192];
    struct coll got = {0};
    struct wal_recovery rep;
    w = open_logged(&o, &got, &rep, dir, logbuf, sizeof(logbuf));
    assert_null(strstr(logbuf, "\"warn\""));
    assert_int_equal(got.n, 200);
    assert_int_equal(rep.records, 200);
    assert_int_equal(rep.torn_bytes, 0);
    assert_false(rep.corrupt);
    assert_string_equal(rep.bad_file, "");
    assert_int_equal(fsfault_preallocs(ff), 3); /* the active one has its space already */
    assert_reads_1_to(w, 1, 200);
    append_entry(w, 1, 201, 1, 16);
    assert_reads_1_to(w, 1, 201);
    wal_close(w);
    assert_int_equal(seg_size(dir, 3), PA_SEG);
    /* Record 201 went right after record 200, over the zeros. */
    char p3[512];
    int fd = open(seg_path(p3, sizeof(p3), dir, 3), O_RDONLY);
    uint8_t hdr[40];
    assert_int_equal(pread(fd, hdr, sizeof(hdr), 40 + 56 * 56), (ssize_t)sizeof(hdr));
    close(fd);
    assert_int_equal(hdr[12], WAL_ENTRY);
    assert_int_equal(hdr[39], 201); /* index, big-endian */
    coll_free(&got);
    w = open_ok(&o, &got, &rep);
    assert_int_equal(got.n, 201);
    assert_int_equal(rep.torn_bytes, 0);
    wal_close(w);
    coll_free(&got);
    fsfault_free(ff);
    tu_rm_rf(dir);
}

/* Restart over a preallocated active segment (real fdatasyncs, default sizes):
 * no torn tail, no warning, appends continue at the logical end. */
static void test_prealloc_restart(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-prerestart");
    struct wal_options o;
    opts_init(&o, dir);
    struct wal *w = open_ok(&o, NULL, NULL);
    for (uint64_t i = 1; i <= 10; i++)
        append_entry(w, 2, i, 1, 16);
    wal_close(w);
    assert_int_equal(seg_size(dir, 1), 64 << 20);
    for (uint64_t run = 0; run < 3; run++) {
        char logbuf[8192];
        struct coll got = {0};
        struct wal_recovery rep;
        w = open_logged(&o, &got, &rep, dir, logbuf, sizeof(logbuf));
        assert_null(strstr(logbuf, "torn"));
        assert_null(strstr(logbuf, "\"warn\""));
        assert_int_equal(rep.torn_bytes, 0);
        assert_false(rep.corrupt);
        assert_string_equal(rep.bad_file, "");
        assert_int_equal(got.n, 10 + run);
        for (size_t i = 0; i < got.n; i++)
            assert_int_equal(got.v[i].index, i + 1);
        append_entry(w, 2, 11 + run, 1, 16);
        wal_close(w);
        coll_free(&got);
        assert_int_equal(seg_size(dir, 1), 64 << 20);
    }
    tu_rm_rf(dir);
}

/* A crash after rolls, before the truncates of the sealed segments reached the
 * disk: their zero tails come back, and recovery accepts them (the next header
 * continues the chain) and cuts them off. */
static void test_prealloc_sealed_zero_tail(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-sealedzero");
    struct fsfault *ff = fsfault_new(NULL);
    struct wal_options o;
    opts_init(&o, dir);
    o.fs = fsfault_fs(ff);
    o.segment_bytes = PA_SEG;
    struct wal *w = open_ok(&o, NULL, NULL);
    for (uint64_t i = 1; i <= 200; i++)
        append_entry(w, 1, i, 1, 16);
    assert_int_equal(seg_size(dir, 1), PA_SEALED);
    fsfault_crash(ff, 0); /* every record was synced; the truncates were not */
    wal_close(w);
    fsfault_free(ff);
    assert_int_equal(seg_size(dir, 1), PA_SEG);
    assert_int_equal(seg_size(dir, 2), PA_SEG);

    opts_init(&o, dir);
    o.segment_bytes = PA_SEG;
    char logbuf[8192];
    struct coll got = {0};
    struct wal_recovery rep;
    w = open_logged(&o, &got, &rep, dir, logbuf, sizeof(logbuf));
    assert_null(strstr(logbuf, "\"warn\""));
    assert_false(rep.corrupt);
    assert_int_equal(rep.torn_bytes, 0);
    assert_int_equal(got.n, 200);
    assert_int_equal(seg_size(dir, 1), PA_SEALED);
    assert_int_equal(seg_size(dir, 2), PA_SEALED);
    assert_int_equal(seg_size(dir, 3), PA_SEG);
    assert_reads_1_to(w, 1, 200);
    append_entry(w, 1, 201, 1, 16);
    wal_close(w);
    coll_free(&got);

    /* The same with zeros added by hand to a sealed segment. */
    char p2[512];
    assert_int_equal(fsfault_append_zeros(seg_path(p2, sizeof(p2), dir, 2), 1000), 0);
    w = open_logged(&o, &got, &rep, dir, logbuf, sizeof(logbuf));
    assert_null(strstr(logbuf, "\"warn\""));
    assert_int_equal(got.n, 201);
    assert_int_equal(seg_size(dir, 2), PA_SEALED);
    wal_close(w);
    coll_free(&got);
    tu_rm_rf(dir);
}

/* A non-last segment whose last records were zeroed looks like one ending in
 * free space, but the next segment's header does not continue its chain:
 * corruption, and nothing is touched without repair. */
static void test_prealloc_nonlast_lost_records(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-nonlastzero");
    write_batches(dir, 200, PA_SEG); /* 72 + 72 + 56 */
    char p2[512];
    seg_path(p2, sizeof(p2), dir, 2);
    assert_int_equal(seg_size(dir, 2), PA_SEALED);
    assert_int_equal(fsfault_zero(p2, PA_SEALED - 2 * 56, 2 * 56), 0);

    struct wal_options o;
    opts_init(&o, dir);
    o.segment_bytes = PA_SEG;
    struct wal *w = NULL;
    struct trine_err err = {0};
    struct wal_recovery rep;
    assert_int_equal(wal_open(&o, &w, &rep, &err), -TRINE_ECORRUPT);
    assert_null(w);
    assert_true(rep.corrupt);
    assert_non_null(strstr(err.msg, "0000000000000003.wal"));
    assert_non_null(strstr(err.msg, "chain broken at the segment header"));
    assert_non_null(strstr(err.msg, "segment 2"));
    assert_int_equal(rep.bad_offset, 0);
    assert_int_equal(seg_size(dir, 2), PA_SEALED); /* nothing touched */
    assert_int_equal(seg_size(dir, 3), PA_SEG);

    /* Repair cuts segment 3 off; segment 2 ends the log at its last whole record. */
    o.repair = true;
    struct coll got = {0};
    w = open_ok(&o, &got, &rep);
    assert_int_equal(got.n, 72 + 70);
    assert_int_equal(rep.cut_records, 56);
    assert_int_equal(rep.cut_bytes, 40 + 56 * 56); /* segment 3's records, not its free space */
    uint64_t oldest;
    assert_int_equal(count_segments(dir, &oldest), 2);
    append_entry(w, 2, 143, 2, 16);
    wal_close(w);
    coll_free(&got);
    o.repair = false;
    w = open_ok(&o, &got, &rep);
    assert_int_equal(got.n, 143);
    assert_false(rep.corrupt);
    assert_int_equal(rep.torn_bytes, 0);
    wal_close(w);
    coll_free(&got);
    tu_rm_rf(dir);
}

static int count_str(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* A failed preallocation (a full disk) is logged once and the log goes on:
 * that segment grows by its appends. */
static void test_prealloc_failure(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-prefail");
    struct fsfault *ff = fsfault_new(NULL);
    struct wal_options o;
    opts_init(&o, dir);
    o.fs = fsfault_fs(ff);
    o.segment_bytes = PA_SEG;
    fsfault_fail_prealloc(ff, 1, ENOSPC); /* segment 1's */
    char logbuf[8192];
    struct wal *w = open_logged(&o, NULL, NULL, dir, logbuf, sizeof(logbuf));
    assert_int_equal(count_str(logbuf, "preallocating"), 1);
    assert_non_null(strstr(logbuf, strerror(ENOSPC)));
    assert_int_equal(seg_size(dir, 1), 40);
    for (uint64_t i = 1; i <= 100; i++) /* segment 2 preallocated */
        append_entry(w, 1, i, 1, 16);
    assert_int_equal(seg_size(dir, 1), PA_SEALED);
    assert_int_equal(seg_size(dir, 2), PA_SEG);
    fsfault_fail_prealloc(ff, 1, ENOSPC); /* segment 3's: not logged again */
    char logpath[512];
    int logfd = open(tu_path(logpath, sizeof(logpath), dir, "log2"), O_CREAT | O_RDWR, 0644);
    log_set_fd(logfd);
    for (uint64_t i = 101; i <= 150; i++)
        append_entry(w, 1, i, 1, 16);
    assert_reads_1_to(w, 1, 150);
    wal_close(w);
    log_set_fd(2);
    read_log(logfd, logbuf, sizeof(logbuf));
    close(logfd);
    assert_int_equal(count_str(logbuf, "preallocating"), 0);
    assert_int_equal(seg_size(dir, 3), 40 + 6 * 56); /* grew by its appends */

    /* Reopen: the short active segment is preallocated now; if that fails too,
     * the open still succeeds. */
    fsfault_fail_prealloc(ff, 1, EIO);
    struct coll got = {0};
    struct wal_recovery rep;
    w = open_logged(&o, &got, &rep, dir, logbuf, sizeof(logbuf));
    assert_int_equal(count_str(logbuf, "preallocating"), 1);
    assert_int_equal(got.n, 150);
    assert_int_equal(rep.torn_bytes, 0);
    assert_int_equal(seg_size(dir, 3), 40 + 6 * 56);
    wal_close(w);
    coll_free(&got);
    w = open_ok(&o, &got, &rep);
    assert_int_equal(seg_size(dir, 3), PA_SEG);
    append_entry(w, 1, 151, 1, 16);
    assert_reads_1_to(w, 1, 151);
    wal_close(w);
    coll_free(&got);
    fsfault_free(ff);
    tu_rm_rf(dir);

    /* A file system without preallocate (NULL op): segments grow as before. */
    dir = tu_mkdtemp("wal-prenone");
    ff = fsfault_new(NULL);
    fsfault_set_prealloc(ff, false);
    opts_init(&o, dir);
    o.fs = fsfault_fs(ff);
    o.segment_bytes = PA_SEG;
    w = open_logged(&o, NULL, NULL, dir, logbuf, sizeof(logbuf));
    assert_null(strstr(logbuf, "\"warn\""));
    for (uint64_t i = 1; i <= 100; i++)
        append_entry(w, 1, i, 1, 16);
    assert_int_equal(fsfault_preallocs(ff), 0);
    assert_int_equal(seg_size(dir, 1), PA_SEALED);
    assert_int_equal(seg_size(dir, 2), 40 + 28 * 56);
    wal_close(w);
    w = open_ok(&o, &got, &rep);
    assert_int_equal(got.n, 100);
    wal_close(w);
    coll_free(&got);
    fsfault_free(ff);
    tu_rm_rf(dir);
}

/* no_preallocate: files hold exactly their records, as before preallocation;
 * reopening such a log without the flag preallocates its active segment. */
static void test_no_preallocate(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-noprealloc");
    struct fsfault *ff = fsfault_new(NULL);
    struct wal_options o;
    opts_init(&o, dir);
    o.fs = fsfault_fs(ff);
    o.segment_bytes = PA_SEG;
    o.no_preallocate = true;
    struct wal *w = open_ok(&o, NULL, NULL);
    for (uint64_t i = 1; i <= 200; i++)
        append_entry(w, 1, i, 1, 16);
    assert_int_equal(fsfault_preallocs(ff), 0);
    assert_int_equal(seg_size(dir, 1), PA_SEALED);
    assert_int_equal(seg_size(dir, 2), PA_SEALED);
    assert_int_equal(seg_size(dir, 3), 40 + 56 * 56);
    wal_close(w);
    struct coll got = {0};
    struct wal_recovery rep;
    w = open_ok(&o, &got, &rep);
    assert_int_equal(got.n, 200);
    assert_int_equal(fsfault_preallocs(ff), 0);
    assert_int_equal(seg_size(dir, 3), 40 + 56 * 56);
    wal_close(w);
    coll_free(&got);

    /* Upgrade: the active segment gets its space at open. */
    o.no_preallocate = false;
    w = open_ok(&o, &got, &rep);
    assert_int_equal(got.n, 200);
    assert_int_equal(rep.torn_bytes, 0);
    assert_int_equal(fsfault_preallocs(ff), 1);
    assert_int_equal(seg_size(dir, 3), PA_SEG);
    append_entry(w, 1, 201, 1, 16);
    assert_reads_1_to(w, 1, 201);
    wal_close(w);
    coll_free(&got);
    w = open_ok(&o, &got, &rep);
    assert_int_equal(got.n, 201);
    assert_int_equal(rep.torn_bytes, 0);
    wal_close(w);
    coll_free(&got);
    fsfault_free(ff);
    tu_rm_rf(dir);
}

struct fail_arg {
    struct wal *w;
    int rc;
};

static void *fail_append_thread(void *arg)
{
    struct fail_arg *a = arg;
    struct wal_record r = {4, WAL_ENTRY, 1, 100, "x", 1};
    a->rc = wal_append(a->w, &r, 1);
    return NULL;
}

static void check_io_failure(bool on_write)
{
    const char *dir = tu_mkdtemp("wal-fsyncfail");
    struct fsfault *ff = fsfault_new(NULL);
    int stops = 0;
    struct wal_options o;
    opts_init(&o, dir);
    o.fs = fsfault_fs(ff);
    o.stop = stop_quiet;
    o.stop_ctx = &stops;
    struct wal *w = open_ok(&o, NULL, NULL);
    for (uint64_t i = 1; i <= 5; i++)
        append_entry(w, 4, i, 1, 16);
    uint64_t fsyncs = fsfault_fsyncs(ff);
    /* Hold the next fsync so the failing batch gathers several requests. */
    fsfault_hold_sync(ff, true);
    struct async_ctx c = {.mu = PTHREAD_MUTEX_INITIALIZER, .order_ok = true};
    struct async_one *a = malloc(sizeof(*a));
    *a = (struct async_one){&c, 0, 0};
    struct wal_record r = {4, WAL_ENTRY, 1, 6, "y", 1};
    assert_int_equal(wal_submit(w, &r, 1, async_done, a), 0);
    assert_true(fsfault_wait_held(ff, 5000));
    if (on_write)
        fsfault_fail_write(ff, 1);
    else
        fsfault_fail_fsync(ff, 2); /* the held one succeeds, the next batch's fails */
    pthread_t th[3];
    struct fail_arg args[3];
    for (int i = 0; i < 3; i++) {
        args[i] = (struct fail_arg){w, 0};
        pthread_create(&th[i], NULL, fail_append_thread, &args[i]);
    }
    struct async_one *b = malloc(sizeof(*b));
    *b = (struct async_one){&c, 0, 1};
    while (wal_submit(w, &r, 1, async_done, b) == -TRINE_EBUSY)
        usleep(100);
    usleep(20000); /* let the appenders queue behind the held fsync */
    fsfault_hold_sync(ff, false);
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].rc, -TRINE_EFSYNC); /* not acknowledged */
    }
    assert_int_equal(stops, 1);
    assert_int_equal(wal_append(w, &r, 1), -TRINE_EFSYNC); /* the log stays stopped */
    assert_int_equal(wal_flush(w), -TRINE_EFSYNC);
    wal_close(w); /* joins the sync thread: every callback has run */
    assert_int_equal(c.done, 2);
    assert_int_equal(c.failed, 1); /* the first batch was durable, the second not */
    assert_true(fsfault_fsyncs(ff) >= fsyncs + (on_write ? 1 : 2));
    fsfault_free(ff);
    tu_rm_rf(dir);
}

static void test_fsync_failure_stops(void **state)
{
    (void)state;
    check_io_failure(false);
}

static void test_write_failure_stops(void **state)
{
    (void)state;
    check_io_failure(true);
}

/* With the default stop (trine_fatal) the process exits with 70 and the failed
 * batch is never acknowledged. */
static void test_fsync_failure_fatal_child(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("wal-fatal");
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        alarm(10);
        int devnull = open("/dev/null", O_WRONLY);
        log_set_fd(devnull);
        struct fsfault *ff = fsfault_new(NULL);
        struct wal_options o;
        opts_init(&o, dir);
        o.fs = fsfault_fs(ff);
        struct wal *w = NULL;
        if (wal_open(&o, &w, NULL, NULL) != 0) _exit(3);
        struct wal_record r = {5, WAL_ENTRY, 1, 1, "a", 1};
        if (wal_append(w, &r, 1) != 0) _exit(4);
        if (write(fds[1], "A", 1) != 1) _exit(5);
        fsfault_fail_fsync(ff, 1);
        r.index = 2;
        int rc = wal_append(w, &r, 1);
        if (write(fds[1], rc == 0 ? "B" : "E", 1) != 1) _exit(5);
        _exit(0);
    }
    close(fds[1]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 70);
    char buf[8] = {0};
    assert_int_equal(read(fds[0], buf, sizeof(buf)), 1);
    assert_int_equal(buf[0], 'A');
    close(fds[0]);
    tu_rm_rf(dir);
}

int main(void)
{
    log_set_level(LOG_LEVEL_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_segments_partitions),
        cmocka_unit_test(test_truncate_semantics),
        cmocka_unit_test(test_compaction),
        cmocka_unit_test(test_forget_and_roll_compaction),
        cmocka_unit_test(test_read_during_compaction),
        cmocka_unit_test(test_async_submit),
        cmocka_unit_test(test_submit_busy),
        cmocka_unit_test(test_group_commit),
        cmocka_unit_test(test_invalid_args),
        cmocka_unit_test(test_unsynced_lost),
        cmocka_unit_test(test_torn_tail),
        cmocka_unit_test(test_zeroed_tail),
        cmocka_unit_test(test_bitflip_mid_log),
        cmocka_unit_test(test_corrupt_earlier_segment),
        cmocka_unit_test(test_hole_in_last_batch_is_torn),
        cmocka_unit_test(test_prealloc_segments),
        cmocka_unit_test(test_prealloc_restart),
        cmocka_unit_test(test_prealloc_sealed_zero_tail),
        cmocka_unit_test(test_prealloc_nonlast_lost_records),
        cmocka_unit_test(test_prealloc_failure),
        cmocka_unit_test(test_no_preallocate),
        cmocka_unit_test(test_fsync_failure_stops),
        cmocka_unit_test(test_write_failure_stops),
        cmocka_unit_test(test_fsync_failure_fatal_child),
        cmocka_unit_test(test_kill9_group_commit),
    };
    return cmocka_run_group_tests_name("wal", tests, NULL, NULL);
}
