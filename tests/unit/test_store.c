/*
 * test_store.c - the leveldb state machine: op semantics and versions, replay,
 * restart (clean and crashed), dedupe, TTL, scans, snapshots and installs
 * (round trip, replacement, corruption, interrupted), drop, and a randomized
 * comparison against an in-memory model (seeded by rng_test_seed).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/rand.h"
#include "store/store.h"
#include "testutil.h"

#define P 7 /* the partition most tests use */

/* --- helpers ------------------------------------------------------------------------ */

static struct store *open_opts(const char *dir, const struct store_options *o)
{
    struct store *s = NULL;
    struct trine_err err = {0};
    int rc = store_open(dir, o, &s, &err);
    if (rc) fprintf(stderr, "store_open: %s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_non_null(s);
    return s;
}

static struct store *open_dir(const char *dir)
{
    return open_opts(dir, NULL);
}

static struct store_op mk(enum store_op_type t, uint64_t idx, const char *key, const char *val)
{
    struct store_op op = {.index = idx, .term = 1, .type = t};
    if (key) {
        op.key = (const uint8_t *)key;
        op.key_len = strlen(key);
    }
    if (val) {
        op.value = (const uint8_t *)val;
        op.value_len = strlen(val);
    }
    return op;
}

static struct store_result apply1(struct store *s, uint32_t p, struct store_op op)
{
    struct store_result r;
    int rc = store_apply(s, p, &op, 1, &r);
    if (rc) fprintf(stderr, "store_apply: %s\n", store_err(s)->msg);
    assert_int_equal(rc, 0);
    return r;
}

/* Returns the get status; on success the value must equal want (if given). */
static int get_str(struct store *s, uint32_t p, const char *key, uint64_t now_ms, const char *want,
                   struct store_kv *kv_out)
{
    struct store_kv kv;
    int rc = store_get(s, p, (const uint8_t *)key, strlen(key), now_ms, &kv);
    if (rc == 0 && want) {
        assert_int_equal(kv.value_len, strlen(want));
        assert_memory_equal(kv.value, want, kv.value_len);
    }
    if (kv_out) *kv_out = kv;
    return rc;
}

static uint64_t hash_of(struct store *s, uint32_t p, uint64_t *applied)
{
    uint64_t h = 0, a = 0;
    assert_int_equal(store_content_hash(s, p, &h, &a), 0);
    if (applied) *applied = a;
    return h;
}

static uint64_t applied_of(struct store *s, uint32_t p)
{
    uint64_t idx = 0, term = 0;
    assert_int_equal(store_applied(s, p, &idx, &term), 0);
    return idx;
}

/* Streams partition p of src into dst in chunks of 1..chunk_max bytes (random
 * sizes if r != NULL). corrupt_at >= 0 flips that stream byte. Returns the
 * status of the first failing chunk or of finish. */
static int transfer(struct store *src, struct store *dst, uint32_t p, size_t chunk_max,
                    struct rng *r, long corrupt_at, size_t stop_after_bytes)
{
    struct store_snapshot *sn;
    assert_int_equal(store_snapshot_open(src, p, &sn), 0);
    struct store_install *in;
    assert_int_equal(store_install_begin(dst, p, &in), 0);
    struct buf chunk;
    buf_init(&chunk);
    size_t pos = 0;
    int rc = 0;
    bool last = false;
    while (!last) {
        size_t n = r ? 1 + (size_t)rng_below(r, chunk_max) : chunk_max;
        assert_int_equal(store_snapshot_next(sn, &chunk, n, &last), 0);
        assert_true(chunk.len <= n);
        assert_true(chunk.len > 0 || last);
        if (corrupt_at >= 0 && (size_t)corrupt_at >= pos && (size_t)corrupt_at < pos + chunk.len)
            chunk.data[corrupt_at - pos] ^= 0x40;
        pos += chunk.len;
        if (stop_after_bytes && pos >= stop_after_bytes) {
            /* Leave the install running: the caller simulates a crash. */
            assert_int_equal(store_install_chunk(in, chunk.data, chunk.len), 0);
            buf_free(&chunk);
            store_snapshot_close(sn);
            return 1;
        }
        rc = store_install_chunk(in, chunk.data, chunk.len);
        if (rc) break;
    }
    buf_free(&chunk);
    store_snapshot_close(sn);
    if (rc) {
        /* A failed install refuses more input, and finish reports the failure. */
        assert_int_equal(store_install_chunk(in, (const uint8_t *)"x", 1), rc);
        assert_int_equal(store_install_finish(in, NULL, NULL), rc);
        return rc;
    }
    uint64_t idx = 0, term = 0;
    rc = store_install_finish(in, &idx, &term);
    if (rc == 0) {
        uint64_t sidx, sterm;
        assert_int_equal(store_applied(src, p, &sidx, &sterm), 0);
        assert_int_equal(idx, sidx);
        assert_int_equal(term, sterm);
    }
    return rc;
}

static size_t stream_len(struct store *s, uint32_t p)
{
    struct store_snapshot *sn;
    assert_int_equal(store_snapshot_open(s, p, &sn), 0);
    struct buf chunk;
    buf_init(&chunk);
    size_t total = 0;
    bool last = false;
    while (!last) {
        assert_int_equal(store_snapshot_next(sn, &chunk, 4096, &last), 0);
        total += chunk.len;
    }
    /* After the end: empty chunks, still last. */
    assert_int_equal(store_snapshot_next(sn, &chunk, 4096, &last), 0);
    assert_int_equal(chunk.len, 0);
    assert_true(last);
    buf_free(&chunk);
    store_snapshot_close(sn);
    return total;
}

/* Fills partition p with n keys "<tag>NNN" from index start; every third has a
 * TTL, every fifth a dedupe identity. Returns the next free index. */
static uint64_t fill(struct store *s, uint32_t p, const char *tag, int n, uint64_t start)
{
    struct store_op ops[64];
    struct store_result res[64];
    char keys[64][32], vals[64][48];
    uint64_t idx = start;
    for (int base = 0; base < n; base += 64) {
        int m = n - base < 64 ? n - base : 64;
        for (int i = 0; i < m; i++) {
            snprintf(keys[i], sizeof(keys[i]), "%s%03d", tag, base + i);
            snprintf(vals[i], sizeof(vals[i]), "value-%s-%d-%llu", tag, base + i,
                     (unsigned long long)idx);
            ops[i] = mk(STORE_OP_PUT, idx++, keys[i], vals[i]);
            ops[i].term = 3;
            if ((base + i) % 3 == 0) ops[i].expire_at_ms = 5000 + (uint64_t)(base + i);
            if ((base + i) % 5 == 0) {
                ops[i].client_id = 100 + (uint64_t)(base + i) % 7;
                ops[i].seq = ops[i].index;
            }
        }
        assert_int_equal(store_apply(s, p, ops, (size_t)m, res), 0);
    }
    return idx;
}

/* --- op semantics ------------------------------------------------------------------------ */

static void test_put_get_delete_versions(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("store");
    struct store *s = open_dir(dir);
    struct store_kv kv;

    assert_int_equal(get_str(s, P, "a", 0, NULL, NULL), -TRINE_ENOT_FOUND);
    struct store_result r = apply1(s, P, mk(STORE_OP_PUT, 10, "a", "one"));
    assert_int_equal(r.status, 0);
    assert_int_equal(r.revision, 10);
    assert_int_equal(r.version, 1);
    assert_int_equal(get_str(s, P, "a", 0, "one", &kv), 0);
    assert_int_equal(kv.version, 1);
    assert_int_equal(kv.create_revision, 10);
    assert_int_equal(kv.mod_revision, 10);
    assert_int_equal(kv.expire_at_ms, 0);

    r = apply1(s, P, mk(STORE_OP_PUT, 11, "a", "two"));
    assert_int_equal(r.version, 2);
    assert_int_equal(get_str(s, P, "a", 0, "two", &kv), 0);
    assert_int_equal(kv.version, 2);
    assert_int_equal(kv.create_revision, 10);
    assert_int_equal(kv.mod_revision, 11);

    /* Empty values are values. */
    r = apply1(s, P, mk(STORE_OP_PUT, 12, "e", ""));
    assert_int_equal(get_str(s, P, "e", 0, "", &kv), 0);

    r = apply1(s, P, mk(STORE_OP_DELETE, 13, "a", NULL));
    assert_int_equal(r.status, 0);
    assert_int_equal(r.revision, 13);
    assert_int_equal(r.version, 0);
    assert_int_equal(get_str(s, P, "a", 0, NULL, NULL), -TRINE_ENOT_FOUND);

    r = apply1(s, P, mk(STORE_OP_DELETE, 14, "a", NULL));
    assert_int_equal(r.status, -TRINE_ENOT_FOUND);
    assert_int_equal(r.revision, 14);

    /* Re-created: version and create_revision restart. */
    r = apply1(s, P, mk(STORE_OP_PUT, 15, "a", "three"));
    assert_int_equal(r.version, 1);
    assert_int_equal(get_str(s, P, "a", 0, "three", &kv), 0);
    assert_int_equal(kv.create_revision, 15);

    r = apply1(s, P, mk(STORE_OP_NOOP, 16, NULL, NULL));
    assert_int_equal(r.status, 0);
    assert_int_equal(r.revision, 16);
    uint64_t idx, term;
    assert_int_equal(store_applied(s, P, &idx, &term), 0);
    assert_int_equal(idx, 16);
    assert_int_equal(term, 1);
    /* Other partitions are separate key spaces. */
    assert_int_equal(get_str(s, P + 1, "a", 0, NULL, NULL), -TRINE_ENOT_FOUND);
    assert_int_equal(applied_of(s, P + 1), 0);

    store_close(s);
    tu_rm_rf(dir);
}

static void test_cas_and_put_if_absent(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("store");
    struct store *s = open_dir(dir);
    struct store_kv kv;

    struct store_op op = mk(STORE_OP_CAS, 1, "k", "v1");
    op.expected_version = 0; /* create */
    struct store_result r = apply1(s, P, op);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.version, 1);

    op = mk(STORE_OP_CAS, 2, "k", "bad");
    op.expected_version = 5;
    r = apply1(s, P, op);
    assert_int_equal(r.status, -TRINE_ECAS_FAILED);
    assert_int_equal(r.version, 1); /* the current version */
    assert_int_equal(r.revision, 2);
    assert_int_equal(get_str(s, P, "k", 0, "v1", &kv), 0);
    assert_int_equal(kv.mod_revision, 1);
    assert_int_equal(applied_of(s, P), 2); /* a failed CAS still consumes its index */

    op = mk(STORE_OP_CAS, 3, "k", "v2");
    op.expected_version = 1;
    r = apply1(s, P, op);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.version, 2);
    assert_int_equal(get_str(s, P, "k", 0, "v2", &kv), 0);
    assert_int_equal(kv.create_revision, 1);

    r = apply1(s, P, mk(STORE_OP_PUT_IF_ABSENT, 4, "k", "nope"));
    assert_int_equal(r.status, -TRINE_ECAS_FAILED);
    assert_int_equal(r.version, 2);
    assert_int_equal(get_str(s, P, "k", 0, "v2", NULL), 0);

    r = apply1(s, P, mk(STORE_OP_PUT_IF_ABSENT, 5, "n", "fresh"));
    assert_int_equal(r.status, 0);
    assert_int_equal(r.version, 1);
    assert_int_equal(get_str(s, P, "n", 0, "fresh", NULL), 0);

    /* CAS against an absent key with a non-zero version fails with version 0. */
    op = mk(STORE_OP_CAS, 6, "missing", "x");
    op.expected_version = 1;
    r = apply1(s, P, op);
    assert_int_equal(r.status, -TRINE_ECAS_FAILED);
    assert_int_equal(r.version, 0);
    assert_int_equal(get_str(s, P, "missing", 0, NULL, NULL), -TRINE_ENOT_FOUND);

    store_close(s);
    tu_rm_rf(dir);
}

static void test_invalid_ops_consume_index(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("store");
    struct store *s = open_dir(dir);
    static uint8_t big[STORE_KEY_MAX + 1];
    struct store_op ops[4] = {
        mk(STORE_OP_PUT, 1, NULL, "v"), /* no key */
        mk(STORE_OP_PUT, 2, "k", "v"),
        mk(STORE_OP_PUT, 3, NULL, "v"),
        mk(STORE_OP_DELETE, 4, "k", NULL),
    };
    ops[2].key = big;
    ops[2].key_len = sizeof(big);
    ops[3].type = (enum store_op_type)99;
    struct store_result res[4];
    assert_int_equal(store_apply(s, P, ops, 4, res), 0);
    assert_int_equal(res[0].status, -TRINE_EBAD_REQUEST);
    assert_int_equal(res[1].status, 0);
    assert_int_equal(res[2].status, -TRINE_ETOO_LARGE);
    assert_int_equal(res[3].status, -TRINE_EBAD_REQUEST);
    assert_int_equal(res[3].revision, 4);
    assert_int_equal(applied_of(s, P), 4);
    assert_int_equal(get_str(s, P, "k", 0, "v", NULL), 0);
    /* Out-of-range partitions and bad arguments are errors, not results. */
    struct store_result r;
    struct store_op op = mk(STORE_OP_PUT, 5, "k", "v");
    assert_int_equal(store_apply(s, STORE_PARTITIONS_MAX, &op, 1, &r), -TRINE_EINVALID);
    struct store_kv kv;
    assert_int_equal(store_get(s, P, (const uint8_t *)"", 0, 0, &kv), -TRINE_EINVALID);
    store_close(s);
    tu_rm_rf(dir);
}

static void test_batch_sees_its_own_writes(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("store");
    struct store *s = open_dir(dir);
    struct store_op ops[6] = {
        mk(STORE_OP_PUT, 1, "x", "a"),           mk(STORE_OP_PUT, 2, "x", "b"),
        mk(STORE_OP_CAS, 3, "x", "c"),           mk(STORE_OP_DELETE, 4, "x", NULL),
        mk(STORE_OP_PUT_IF_ABSENT, 5, "x", "d"), mk(STORE_OP_PUT, 6, "x", "e"),
    };
    ops[2].expected_version = 2;
    struct store_result res[6];
    assert_int_equal(store_apply(s, P, ops, 6, res), 0);
    uint64_t want_version[6] = {1, 2, 3, 0, 1, 2};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(res[i].status, 0);
        assert_int_equal(res[i].version, want_version[i]);
    }
    struct store_kv kv;
    assert_int_equal(get_str(s, P, "x", 0, "e", &kv), 0);
    assert_int_equal(kv.version, 2);
    assert_int_equal(kv.create_revision, 5);
    assert_int_equal(kv.mod_revision, 6);
    store_close(s);
    tu_rm_rf(dir);
}

/* --- replay and restart ---------------------------------------------------------------------- */

static void test_replay_is_idempotent(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("store");
    struct store *s = open_dir(dir);
    struct store_op ops[4] = {
        mk(STORE_OP_PUT, 5, "a", "1"),
        mk(STORE_OP_PUT, 6, "a", "2"),
        mk(STORE_OP_DELETE, 7, "b", NULL),
        mk(STORE_OP_PUT, 8, "c", "3"),
    };
    struct store_result res[4];
    assert_int_equal(store_apply(s, P, ops, 4, res), 0);
    uint64_t h1 = hash_of(s, P, NULL);

    /* The same entries again (WAL replay after a crash): all skipped. */
    assert_int_equal(store_apply(s, P, ops, 4, res), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(res[i].flags, STORE_RESULT_SKIPPED);
        assert_int_equal(res[i].revision, 0);
    }
    assert_int_equal(hash_of(s, P, NULL), h1);
    struct store_kv kv;
    assert_int_equal(get_str(s, P, "a", 0, "2", &kv), 0);
    assert_int_equal(kv.version, 2);

    /* Overlapping: only the new tail applies. */
    struct store_op more[3] = {
        mk(STORE_OP_PUT, 7, "a", "stale"),
        mk(STORE_OP_PUT, 8, "a", "stale"),
        mk(STORE_OP_PUT, 9, "a", "new"),
    };
    assert_int_equal(store_apply(s, P, more, 3, res), 0);
    assert_int_equal(res[0].flags, STORE_RESULT_SKIPPED);
    assert_int_equal(res[1].flags, STORE_RESULT_SKIPPED);
    assert_int_equal(res[2].flags, 0);
    assert_int_equal(res[2].version, 3);
    assert_int_equal(get_str(s, P, "a", 0, "new", NULL), 0);
    assert_int_equal(applied_of(s, P), 9);
    store_close(s);
    tu_rm_rf(dir);
}

static void test_restart_keeps_state(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("store");
    struct store *s = open_dir(dir);
    uint64_t next = fill(s, P, "r", 150, 1);
    fill(s, P + 3, "q", 10, 1);
    uint64_t h1 = hash_of(s, P, NULL);
    store_close(s);

    s = open_dir(dir);
    uint64_t idx, term;
    assert_int_equal(store_applied(s, P, &idx, &term), 0);
    assert_int_equal(idx, next - 1);
    assert_int_equal(term, 3);
    assert_int_equal(hash_of(s, P, NULL), h1);
    assert_int_equal(get_str(s, P, "r001", 0, "value-r-1-2", NULL), 0);
    uint32_t ids[8];
    size_t n;
    assert_int_equal(store_partitions(s, ids, 8, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], P);
    assert_int_equal(ids[1], P + 3);
    /* Versions continue across the restart (metadata was not only cached). */
    struct store_result r = apply1(s, P, mk(STORE_OP_PUT, next, "r001", "again"));
    assert_int_equal(r.version, 2);
    assert_int_equal(store_sync(s), 0);
    store_close(s);
    tu_rm_rf(dir);
}

/* store_ldb_stats: leveldb's figures, from its properties. A store_sync flushes the
 * memtable into a table file, so some level holds a file afterwards. */
static void test_ldb_stats(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("store");
    struct store *s = open_dir(dir);
    struct store_ldb_stats st;
    store_ldb_stats(s, &st);
    uint64_t files = 0;
    for (int l = 0; l < STORE_LDB_LEVELS; l++)
        files += st.files[l];
    assert_true(st.memory_bytes > 0); /* the empty memtable and cache have a footprint */
    /* 3 MiB of incompressible values: the per-level figures of "leveldb.stats" (whole
     * MiB) become visible once flushed */
    static uint8_t val[64 * 1024];
    struct rng r;
    rng_seed(&r, 7);
    for (uint64_t i = 1; i <= 48; i++) {
        char key[16];
        snprintf(key, sizeof(key), "big%02llu", (unsigned long long)i);
        rng_fill(&r, val, sizeof(val));
        struct store_op op = mk(STORE_OP_PUT, i, key, NULL);
        op.value = val;
        op.value_len = sizeof(val);
        assert_int_equal(apply1(s, P, op).status, 0);
    }
    assert_int_equal(store_sync(s), 0);
    store_ldb_stats(s, &st);
    uint64_t after = 0, bytes = 0, written = 0;
    for (int l = 0; l < STORE_LDB_LEVELS; l++) {
        after += st.files[l];
        bytes += st.level_bytes[l];
        written += st.compaction_written[l];
    }
    assert_true(after > files);
    assert_true(bytes >= (2u << 20) && bytes <= (4u << 20));
    assert_true(written >= (2u << 20)); /* the memtable flush counts as a compaction */
    store_close(s);
    tu_rm_rf(dir);
}

static void test_crash_without_close(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("store");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* Child: apply with sync off and die without closing anything. */
        struct store *s = NULL;
        if (store_open(dir, NULL, &s, NULL)) _exit(2);
        struct store_op op = mk(STORE_OP_PUT, 41, "crash", "survives");
        op.term = 9;
        struct store_result r;
        if (store_apply(s, P, &op, 1, &r)) _exit(3);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* A process crash loses nothing leveldb wrote: applied index and data
     * agree (a machine crash may lose both together; the WAL replays them). */
    struct store *s = open_dir(dir);
    uint64_t idx, term;
    assert_int_equal(store_applied(s, P, &idx, &term), 0);
    assert_int_equal(idx, 41);
    assert_int_equal(term, 9);
    assert_int_equal(get_str(s, P, "crash", 0, "survives", NULL), 0);
    store_close(s);
    tu_rm_rf(dir);
}

/* --- scans ------------------------------------------------------------------------------- */

struct collect {
    char keys[64][32];
    int n;
    int stop_at;
};

static int collect_fn(void *arg, const struct store_kv *kv)
{
    struct collect *c = arg;
    assert_true(kv->key_len < sizeof(c->keys[0]));
    memcpy(c->keys[c->n], kv->key, kv->key_len);
    c->keys[c->n][kv->key_len] = 0;
    c->n++;
    assert_true(kv->version >= 1);
    return c->n == c->stop_at ? 1 : 0;
}

static int scan_str(struct store *s, const char *prefix, const char *after, size_t limit,
                    uint64_t now_ms, struct collect *c)
{
    memset(c, 0, sizeof(*c));
    return store_scan(s, P, (const uint8_t *)prefix, strlen(prefix), (const uint8_t *)after,
                      after ? strlen(after) : 0, limit, now_ms, collect_fn, c);
}

static void test_scan(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("store");
    struct store *s = open_dir(dir);
    const char *keys[] = {"b/2", "a/1", "b/1", "c", "b/3", "b/10", "bb"};
    uint64_t idx = 1;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        apply1(s, P, mk(STORE_OP_PUT, idx++, keys[i], "v"));
    struct store_op ttl = mk(STORE_OP_PUT, idx++, "b/0", "gone");
    ttl.expire_at_ms = 100;
    apply1(s, P, ttl);
    apply1(s, P + 1, mk(STORE_OP_PUT, 1, "b/9", "other partition"));

    struct collect c;
    assert_int_equal(scan_str(s, "b/", NULL, 100, 50, &c), 0);
    assert_int_equal(c.n, 5);
    const char *want[] = {"b/0", "b/1", "b/10", "b/2", "b/3"};
    for (int i = 0; i < 5; i++)
        assert_string_equal(c.keys[i], want[i]);

    /* now past the TTL: b/0 hidden but still stored. */
    assert_int_equal(scan_str(s, "b/", NULL, 100, 100, &c), 0);
    assert_int_equal(c.n, 4);
    assert_string_equal(c.keys[0], "b/1");

    assert_int_equal(scan_str(s, "b/", "b/10", 2, 100, &c), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.keys[0], "b/2");
    assert_string_equal(c.keys[1], "b/3");

    /* start_after before the prefix, and not an existing key. */
    assert_int_equal(scan_str(s, "b/", "a", 10, 100, &c), 0);
    assert_int_equal(c.n, 4);
    assert_int_equal(scan_str(s, "b/", "b/11", 10, 100, &c), 0);
    assert_int_equal(c.n, 2);
    assert_int_equal(scan_str(s, "b/", "z", 10, 100, &c), 0);
    assert_int_equal(c.n, 0);

    /* Whole partition, key order, callback stop. */
    assert_int_equal(scan_str(s, "", NULL, 100, 100, &c), 0);
    assert_int_equal(c.n, 7);
    assert_string_equal(c.keys[0], "a/1");
    assert_string_equal(c.keys[6], "c");
    memset(&c, 0, sizeof(c));
    c.stop_at = 3;
    assert_int_equal(store_scan(s, P, NULL, 0, NULL, 0, 100, 100, collect_fn, &c), 0);
    assert_int_equal(c.n, 3);
    assert_int_equal(scan_str(s, "", NULL, 0, 0, &c), -TRINE_EINVALID);
    store_close(s);
    tu_rm_rf(dir);
}

/* --- TTL ------------------------------------------------------------------------------------ */

struct expired_list {
    char keys[16][32];
    uint64_t mod[16];
    int n;
};

static int expired_fn(void *arg, const uint8_t *key, size_t key_len, uint64_t mod_revision,
                      uint64_t expire_at_ms)
{
    struct expired_list *l = arg;
    (void)expire_at_ms;
    memcpy(l->keys[l->n], key, key_len);
    l->keys[l->n][key_len] = 0;
    l->mod[l->n++] = mod_revision;
    return 0;
}

static void test_ttl(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("store");
    struct store *s = open_dir(dir);
    struct store_op op = mk(STORE_OP_PUT, 1, "t1", "a");
    op.expire_at_ms = 1000;
    apply1(s, P, op);
    op = mk(STORE_OP_PUT, 2, "t2", "b");
    op.expire_at_ms = 2000;
    apply1(s, P, op);
    apply1(s, P, mk(STORE_OP_PUT, 3, "forever", "c"));

    struct store_kv kv;
    assert_int_equal(get_str(s, P, "t1", 999, "a", &kv), 0);
    assert_int_equal(kv.expire_at_ms, 1000);
    assert_int_equal(get_str(s, P, "t1", 1000, NULL, NULL), -TRINE_ENOT_FOUND);
    uint64_t h_before = hash_of(s, P, NULL);

    struct expired_list l = {0};
    assert_int_equal(store_expired(s, P, 999, 10, expired_fn, &l), 0);
    assert_int_equal(l.n, 0);
    assert_int_equal(store_expired(s, P, 1500, 10, expired_fn, &l), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.keys[0], "t1");
    assert_int_equal(l.mod[0], 1);
    memset(&l, 0, sizeof(l));
    assert_int_equal(store_expired(s, P, 5000, 1, expired_fn, &l), 0); /* bounded */
    assert_int_equal(l.n, 1);
    memset(&l, 0, sizeof(l));
    assert_int_equal(store_expired(s, P, 5000, 10, expired_fn, &l), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.keys[1], "t2");

    /* Reading never deleted anything: still stored, visible to an earlier clock. */
    assert_int_equal(hash_of(s, P, NULL), h_before);
    assert_int_equal(get_str(s, P, "t1", 10, "a", NULL), 0);

    /* t1 is rewritten (no TTL) after the primary listed it: the EXPIRE with
     * the stale mod_revision must not delete the new value. */
    apply1(s, P, mk(STORE_OP_PUT, 4, "t1", "rewritten"));
    op = mk(STORE_OP_EXPIRE, 5, "t1", NULL);
    op.expected_mod_revision = 1;
    struct store_result r = apply1(s, P, op);
    assert_int_equal(r.status, -TRINE_ECAS_FAILED);
    assert_int_equal(get_str(s, P, "t1", 99999, "rewritten", &kv), 0);
    assert_int_equal(kv.expire_at_ms, 0);
    memset(&l, 0, sizeof(l));
    assert_int_equal(store_expired(s, P, 5000, 10, expired_fn, &l), 0);
    assert_int_equal(l.n, 1); /* t1 left the expiry index with its TTL */
    assert_string_equal(l.keys[0], "t2");

    /* EXPIRE with the listed mod_revision deletes. */
    op = mk(STORE_OP_EXPIRE, 6, "t2", NULL);
    op.expected_mod_revision = l.mod[0];
    r = apply1(s, P, op);
    assert_int_equal(r.status, 0);
    assert_int_equal(get_str(s, P, "t2", 0, NULL, NULL), -TRINE_ENOT_FOUND);
    memset(&l, 0, sizeof(l));
    assert_int_equal(store_expired(s, P, UINT64_MAX, 10, expired_fn, &l), 0);
    assert_int_equal(l.n, 0);
    r = apply1(s, P, op); /* a second EXPIRE: skipped (same index) */
    assert_int_equal(r.flags, STORE_RESULT_SKIPPED);
    op.index = 7;
    r = apply1(s, P, op);
    assert_int_equal(r.status, -TRINE_ENOT_FOUND);

    /* A write stamped after expiry treats the old key as absent. */
    op = mk(STORE_OP_PUT, 8, "t3", "old");
    op.expire_at_ms = 3000;
    apply1(s, P, op);
    op = mk(STORE_OP_PUT_IF_ABSENT, 9, "t3", "new");
    op.now_ms = 2999;
    r = apply1(s, P, op);
    assert_int_equal(r.status, -TRINE_ECAS_FAILED);
    assert_int_equal(r.version, 1);
    op.index = 10;
    op.now_ms = 3000;
    r = apply1(s, P, op);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.version, 1);
    assert_int_equal(get_str(s, P, "t3", 3000, "new", &kv), 0);
    assert_int_equal(kv.create_revision, 10);
    memset(&l, 0, sizeof(l));
    assert_int_equal(store_expired(s, P, UINT64_MAX, 10, expired_fn, &l), 0);
    assert_int_equal(l.n, 0);
    /* Deleting an expired key removes it but reports it absent. */
    op = mk(STORE_OP_PUT, 11, "t4", "x");
    op.expire_at_ms = 50;
    apply1(s, P, op);
    op = mk(STORE_OP_DELETE, 12, "t4", NULL);
    op.now_ms = 60;
    r = apply1(s, P, op);
    assert_int_equal(r.status, -TRINE_ENOT_FOUND);
    assert_int_equal(get_str(s, P, "t4", 1, NULL, NULL), -TRINE_ENOT_FOUND);
    memset(&l, 0, sizeof(l));
    assert_int_equal(store_expired(s, P, UINT64_MAX, 10, expired_fn, &l), 0);
    assert_int_equal(l.n, 0);

    /* The TTL index survives a restart. */
    op = mk(STORE_OP_PUT, 13, "t5", "x");
    op.expire_at_ms = 70;
    apply1(s, P, op);
    store_close(s);
    s = open_dir(dir);
    memset(&l, 0, sizeof(l));
    assert_int_equal(store_expired(s, P, 100, 10, expired_fn, &l), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.keys[0], "t5");
    assert_int_equal(l.mod[0], 13);
    store_close(s);
    tu_rm_rf(dir);
}

/* --- dedupe ------------------------------------------------------------------------------- */

static struct store_op client_op(enum store_op_type t, uint64_t idx, const char *key,
                                 const char *val, uint64_t client, uint64_t seq)
{
    struct store_op op = mk(t, idx, key, val);
    op.client_id = client;
    op.seq = seq;
    return op;
}

static void test_dedupe(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("store");
    struct store *s = open_dir(dir);

    struct store_result r1 = apply1(s, P, client_op(STORE_OP_PUT, 10, "d", "first", 77, 1));
    assert_int_equal(r1.status, 0);
    assert_int_equal(r1.version, 1);
    uint64_t h = hash_of(s, P, NULL);

    /* The retry, committed later at another index, with another value. */
    struct store_result r = apply1(s, P, client_op(STORE_OP_PUT, 11, "d", "retry", 77, 1));
    assert_int_equal(r.flags, STORE_RESULT_DUPLICATE);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.revision, 10);
    assert_int_equal(r.version, 1);
    struct store_kv kv;
    assert_int_equal(get_str(s, P, "d", 0, "first", &kv), 0);
    assert_int_equal(kv.version, 1);
    assert_int_equal(applied_of(s, P), 11);
    assert_int_equal(hash_of(s, P, NULL), h); /* nothing but the index moved */

    /* A failed CAS is remembered as failed, even once it would succeed. */
    struct store_op cas = client_op(STORE_OP_CAS, 12, "d", "cas", 77, 2);
    cas.expected_version = 2;
    r = apply1(s, P, cas);
    assert_int_equal(r.status, -TRINE_ECAS_FAILED);
    apply1(s, P, mk(STORE_OP_PUT, 13, "d", "second"));
    cas.index = 14;
    r = apply1(s, P, cas);
    assert_int_equal(r.flags, STORE_RESULT_DUPLICATE);
    assert_int_equal(r.status, -TRINE_ECAS_FAILED);
    assert_int_equal(r.revision, 12);
    assert_int_equal(get_str(s, P, "d", 0, "second", NULL), 0);

    /* Same (client, seq) twice inside one batch; other clients unaffected. */
    struct store_op ops[3] = {
        client_op(STORE_OP_PUT, 15, "e", "e1", 78, 1),
        client_op(STORE_OP_PUT, 16, "e", "e2", 78, 1),
        client_op(STORE_OP_PUT, 17, "e", "e3", 79, 1),
    };
    struct store_result res[3];
    assert_int_equal(store_apply(s, P, ops, 3, res), 0);
    assert_int_equal(res[0].flags, 0);
    assert_int_equal(res[1].flags, STORE_RESULT_DUPLICATE);
    assert_int_equal(res[1].revision, 15);
    assert_int_equal(res[2].flags, 0);
    assert_int_equal(res[2].version, 2);

    /* Pipelined seqs may arrive out of order; the oldest beyond the window of
     * remembered results is refused as stale, not applied. */
    uint64_t idx = 20;
    r = apply1(s, P, client_op(STORE_OP_PUT, idx++, "p", "s3", 90, 3));
    assert_int_equal(r.status, 0);
    r = apply1(s, P, client_op(STORE_OP_PUT, idx++, "p", "s2", 90, 2));
    assert_int_equal(r.status, 0);
    assert_int_equal(r.flags, 0);
    for (uint64_t seq = 4; seq < 4 + STORE_DEDUPE_PER_CLIENT; seq++)
        apply1(s, P, client_op(STORE_OP_PUT, idx++, "p", "more", 90, seq));
    r = apply1(s, P, client_op(STORE_OP_PUT, idx++, "p", "old", 90, 1));
    assert_int_equal(r.status, -TRINE_ESTALE);
    assert_int_equal(get_str(s, P, "p", 0, "more", NULL), 0);
    /* The newest results are all still known. */
    r = apply1(s, P, client_op(STORE_OP_PUT, idx++, "p", "x", 90, 3 + STORE_DEDUPE_PER_CLIENT));
    assert_int_equal(r.flags, STORE_RESULT_DUPLICATE);

    /* Remembered across a restart. */
    store_close(s);
    s = open_opts(dir, &(struct store_options){.meta_cache_entries = SIZE_MAX,
                                               .client_cache_entries = SIZE_MAX});
    r = apply1(s, P, client_op(STORE_OP_PUT, idx++, "d", "late", 77, 1));
    assert_int_equal(r.flags, STORE_RESULT_DUPLICATE);
    assert_int_equal(r.revision, 10);
    store_close(s);
    tu_rm_rf(dir);
}

static void test_dedupe_window(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("store");
    const uint64_t window = 10;
    struct store_options o = {.dedupe_window = window};
    struct store *s = open_opts(dir, &o);
    struct store_result r = apply1(s, P, client_op(STORE_OP_PUT, 1, "w", "a", 5, 1));
    assert_int_equal(r.version, 1);
    for (uint64_t i = 2; i < window; i++)
        apply1(s, P, mk(STORE_OP_NOOP, i, NULL, NULL));
    /* index 10: last_index 1 + window 10 > 10: still remembered. */
    r = apply1(s, P, client_op(STORE_OP_PUT, window, "w", "b", 5, 1));
    assert_int_equal(r.flags, STORE_RESULT_DUPLICATE);
    /* index 11: 1 + 10 > 11 is false (a duplicate does not refresh): forgotten,
     * so the retry is applied as a new write. */
    r = apply1(s, P, client_op(STORE_OP_PUT, window + 1, "w", "b", 5, 1));
    assert_int_equal(r.flags, 0);
    assert_int_equal(r.version, 2);

    /* Many short-lived clients: their records are collected, and the hash
     * (live records only) stays equal to a store that never saw them. */
    uint64_t idx = 20;
    for (uint64_t c = 1000; c < 1300; c++)
        apply1(s, P, client_op(STORE_OP_PUT, idx++, "many", "v", c, 1));
    for (int i = 0; i < 40; i++)
        apply1(s, P, mk(STORE_OP_NOOP, idx++, NULL, NULL));
    r = apply1(s, P, client_op(STORE_OP_PUT, idx++, "many", "v", 1000, 1));
    assert_int_equal(r.flags, 0); /* long forgotten */

    /* A replica that applied the same entries in other batch sizes converges. */
    const char *dir2 = tu_mkdtemp("store");
    struct store *s2 = open_opts(
        dir2, &(struct store_options){.dedupe_window = window, .client_cache_entries = 2});
    struct store_op ops[400];
    struct store_result res[400];
    size_t n = 0;
    ops[n++] = client_op(STORE_OP_PUT, 1, "w", "a", 5, 1);
    for (uint64_t i = 2; i < window; i++)
        ops[n++] = mk(STORE_OP_NOOP, i, NULL, NULL);
    ops[n++] = client_op(STORE_OP_PUT, window, "w", "b", 5, 1);
    ops[n++] = client_op(STORE_OP_PUT, window + 1, "w", "b", 5, 1);
    idx = 20;
    for (uint64_t c = 1000; c < 1300; c++)
        ops[n++] = client_op(STORE_OP_PUT, idx++, "many", "v", c, 1);
    for (int i = 0; i < 40; i++)
        ops[n++] = mk(STORE_OP_NOOP, idx++, NULL, NULL);
    ops[n++] = client_op(STORE_OP_PUT, idx++, "many", "v", 1000, 1);
    assert_true(n <= 400);
    assert_int_equal(store_apply(s2, P, ops, 200, res), 0);
    assert_int_equal(store_apply(s2, P, ops + 200, n - 200, res + 200), 0);
    uint64_t a1, a2;
    assert_int_equal(hash_of(s, P, &a1), hash_of(s2, P, &a2));
    assert_int_equal(a1, a2);
    store_close(s2);
    tu_rm_rf(dir2);
    store_close(s);
    tu_rm_rf(dir);
}

/* --- snapshots ------------------------------------------------------------------------------- */

static void test_snapshot_roundtrip(void **state)
{
    (void)state;
    struct rng r;
    rng_seed(&r, rng_test_seed("store_snapshot_roundtrip"));
    const char *da = tu_mkdtemp("store");
    const char *db = tu_mkdtemp("store");
    struct store *a = open_dir(da);
    struct store *b = open_dir(db);
    uint64_t next = fill(a, P, "k", 300, 1);
    /* A large value spanning many chunks. */
    static char bigv[300000];
    for (size_t i = 0; i < sizeof(bigv) - 1; i++)
        bigv[i] = (char)('a' + i % 26);
    apply1(a, P, mk(STORE_OP_PUT, next++, "big", bigv));
    fill(a, P + 1, "o", 20, 1); /* not part of P's stream */

    /* An empty partition streams and installs too. */
    assert_int_equal(transfer(a, b, 40, 7, NULL, -1, 0), 0);
    uint64_t ha, hb, ia, ib;
    ha = hash_of(a, 40, &ia);
    hb = hash_of(b, 40, &ib);
    assert_int_equal(ha, hb);
    assert_int_equal(ib, 0);

    assert_int_equal(transfer(a, b, P, 5000, &r, -1, 0), 0);
    ha = hash_of(a, P, &ia);
    hb = hash_of(b, P, &ib);
    assert_int_equal(ha, hb);
    assert_int_equal(ia, ib);
    assert_int_equal(ia, next - 1);
    uint64_t idx, term;
    assert_int_equal(store_applied(b, P, &idx, &term), 0);
    assert_int_equal(idx, next - 1);
    assert_int_equal(term, 1);
    assert_int_equal(get_str(b, P, "big", 0, bigv, NULL), 0);
    struct store_kv kv;
    assert_int_equal(get_str(b, P, "k003", 0, NULL, &kv), 0);
    assert_int_equal(kv.expire_at_ms, 5003);
    assert_int_equal(get_str(b, P + 1, "o001", 0, NULL, NULL), -TRINE_ENOT_FOUND);
    /* The expiry index was rebuilt. */
    struct expired_list l = {0};
    assert_int_equal(store_expired(b, P, 5003, 16, expired_fn, &l), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.keys[0], "k000");
    assert_string_equal(l.keys[1], "k003");
    /* The dedupe table came along: a retry is recognised on the new replica. */
    struct store_result res =
        apply1(b, P, client_op(STORE_OP_PUT, next, "k295", "x", 100 + 295 % 7, 1 + 295));
    assert_int_equal(res.flags, STORE_RESULT_DUPLICATE);
    assert_int_equal(res.revision, 1 + 295);
    /* ... and the installed state keeps working: same next write, same hash. */
    apply1(a, P, client_op(STORE_OP_PUT, next, "k295", "x", 100 + 295 % 7, 1 + 295));
    assert_int_equal(hash_of(a, P, NULL), hash_of(b, P, NULL));
    next++;
    apply1(a, P, mk(STORE_OP_PUT, next, "k001", "new"));
    apply1(b, P, mk(STORE_OP_PUT, next, "k001", "new"));
    assert_int_equal(hash_of(a, P, NULL), hash_of(b, P, NULL));
    assert_int_equal(get_str(b, P, "k001", 0, "new", &kv), 0);
    assert_int_equal(kv.version, 2);

    /* Survives a restart. */
    store_close(b);
    b = open_dir(db);
    assert_int_equal(hash_of(a, P, NULL), hash_of(b, P, NULL));

    /* Chunking does not change the stream; a snapshot ignores later applies. */
    size_t len = stream_len(a, P);
    struct store_snapshot *sn;
    assert_int_equal(store_snapshot_open(a, P, &sn), 0);
    store_snapshot_info(sn, &idx, &term);
    assert_int_equal(idx, next);
    apply1(a, P, mk(STORE_OP_PUT, next + 1, "k002", "after the snapshot"));
    struct buf chunk;
    buf_init(&chunk);
    size_t total = 0;
    bool last = false;
    while (!last) {
        assert_int_equal(store_snapshot_next(sn, &chunk, 1 + rng_below(&r, 3000), &last), 0);
        total += chunk.len;
    }
    buf_free(&chunk);
    store_snapshot_close(sn);
    assert_int_equal(total, len);

    store_close(a);
    store_close(b);
    tu_rm_rf(da);
    tu_rm_rf(db);
}

static void test_install_replaces_stale_partition(void **state)
{
    (void)state;
    const char *da = tu_mkdtemp("store");
    const char *db = tu_mkdtemp("store");
    struct store *a = open_dir(da);
    struct store *b = open_dir(db);
    fill(a, P, "new", 50, 1);
    /* b holds an older, different P: keys the snapshot does not have, more of
     * them, with TTLs and dedupe records of its own. */
    fill(b, P, "old", 120, 1);
    fill(b, P + 1, "keep", 10, 1);
    uint64_t keep = hash_of(b, P + 1, NULL);

    assert_int_equal(transfer(a, b, P, 333, NULL, -1, 0), 0);
    assert_int_equal(hash_of(a, P, NULL), hash_of(b, P, NULL));
    assert_int_equal(get_str(b, P, "old001", 0, NULL, NULL), -TRINE_ENOT_FOUND);
    struct collect c;
    assert_int_equal(scan_str(b, "old", NULL, 10, 0, &c), 0);
    assert_int_equal(c.n, 0);
    struct expired_list l = {0};
    assert_int_equal(store_expired(b, P, UINT64_MAX, 16, expired_fn, &l), 0);
    for (int i = 0; i < l.n; i++)
        assert_memory_equal(l.keys[i], "new", 3);
    /* The old dedupe table went with the old generation: b had applied
     * (client 100, seq 106) for key old105, the snapshot never saw it. */
    struct store_result r = apply1(b, P, client_op(STORE_OP_PUT, 1000, "x", "y", 100, 106));
    assert_int_equal(r.flags, 0);
    r = apply1(b, P, client_op(STORE_OP_PUT, 1001, "x", "y", 100, 36)); /* but a's is there */
    assert_int_equal(r.flags, STORE_RESULT_DUPLICATE);
    assert_int_equal(r.revision, 36);
    assert_int_equal(hash_of(b, P + 1, NULL), keep);

    /* Twice in a row, and after a restart. */
    assert_int_equal(transfer(a, b, P, 64, NULL, -1, 0), 0);
    store_close(b);
    b = open_dir(db);
    assert_int_equal(hash_of(a, P, NULL), hash_of(b, P, NULL));
    assert_int_equal(hash_of(b, P + 1, NULL), keep);
    store_close(a);
    store_close(b);
    tu_rm_rf(da);
    tu_rm_rf(db);
}

static void test_install_rejects_corruption(void **state)
{
    (void)state;
    struct rng r;
    rng_seed(&r, rng_test_seed("store_install_corrupt"));
    const char *da = tu_mkdtemp("store");
    const char *db = tu_mkdtemp("store");
    struct store *a = open_dir(da);
    struct store *b = open_dir(db);
    fill(a, P, "src", 40, 1);
    fill(b, P, "dst", 30, 1);
    uint64_t hb = hash_of(b, P, NULL), ib = applied_of(b, P);
    size_t len = stream_len(a, P);

    /* Header, first record, somewhere random, the trailer's count and CRC. */
    long at[] = {0, 13, 35, (long)rng_below(&r, len), (long)len - 10, (long)len - 1};
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
        int rc = transfer(a, b, P, 100, &r, at[i], 0);
        assert_int_equal(rc, -TRINE_ECORRUPT);
        assert_int_equal(hash_of(b, P, NULL), hb);
        assert_int_equal(applied_of(b, P), ib);
        assert_int_equal(get_str(b, P, "dst003", 0, NULL, NULL), 0);
    }

    /* Truncated: finish without the trailer. */
    struct store_snapshot *sn;
    struct store_install *in;
    struct buf chunk;
    buf_init(&chunk);
    bool last;
    assert_int_equal(store_snapshot_open(a, P, &sn), 0);
    assert_int_equal(store_install_begin(b, P, &in), 0);
    struct store_install *in2;
    assert_int_equal(store_install_begin(b, P, &in2), -TRINE_EBUSY);
    assert_int_equal(store_snapshot_next(sn, &chunk, len - 5, &last), 0);
    assert_false(last);
    assert_int_equal(store_install_chunk(in, chunk.data, chunk.len), 0);
    assert_int_equal(store_install_finish(in, NULL, NULL), -TRINE_ECORRUPT);
    store_snapshot_close(sn);

    /* Trailing garbage after a complete stream. */
    assert_int_equal(store_snapshot_open(a, P, &sn), 0);
    assert_int_equal(store_install_begin(b, P, &in), 0);
    assert_int_equal(store_snapshot_next(sn, &chunk, len + 100, &last), 0);
    assert_true(last);
    assert_int_equal(chunk.len, len);
    assert_int_equal(buf_append(&chunk, "zz", 2), 0);
    assert_int_equal(store_install_chunk(in, chunk.data, chunk.len), -TRINE_ECORRUPT);
    assert_int_equal(store_install_finish(in, NULL, NULL), -TRINE_ECORRUPT);
    store_snapshot_close(sn);

    /* A stream of another partition. */
    fill(a, P + 2, "other", 3, 1);
    assert_int_equal(store_snapshot_open(a, P + 2, &sn), 0);
    assert_int_equal(store_install_begin(b, P, &in), 0);
    assert_int_equal(store_snapshot_next(sn, &chunk, 1 << 20, &last), 0);
    assert_int_equal(store_install_chunk(in, chunk.data, chunk.len), -TRINE_ECORRUPT);
    store_install_abort(in);
    store_snapshot_close(sn);
    buf_free(&chunk);

    assert_int_equal(hash_of(b, P, NULL), hb);
    /* A good stream still installs afterwards. */
    assert_int_equal(transfer(a, b, P, 100, &r, -1, 0), 0);
    assert_int_equal(hash_of(b, P, NULL), hash_of(a, P, NULL));
    store_close(a);
    store_close(b);
    tu_rm_rf(da);
    tu_rm_rf(db);
}

static void test_install_interrupted(void **state)
{
    (void)state;
    const char *da = tu_mkdtemp("store");
    const char *db = tu_mkdtemp("store");
    struct store *a = open_dir(da);
    struct store *b = open_dir(db);
    fill(a, P, "src", 200, 1);
    fill(b, P, "dst", 30, 1);
    uint64_t hb = hash_of(b, P, NULL), ib = applied_of(b, P);
    size_t len = stream_len(a, P);

    /* Close in the middle (as a crash would leave leveldb). */
    assert_int_equal(transfer(a, b, P, 512, NULL, -1, len / 2), 1);
    store_close(b);
    b = open_dir(db);
    assert_int_equal(hash_of(b, P, NULL), hb);
    assert_int_equal(applied_of(b, P), ib);
    assert_int_equal(get_str(b, P, "src001", 0, NULL, NULL), -TRINE_ENOT_FOUND);
    store_close(b);

    /* A real process crash in the middle of an install. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct store *c = NULL;
        if (store_open(db, NULL, &c, NULL)) _exit(2);
        /* transfer() asserts through cmocka; here only the bytes matter. */
        struct store_snapshot *sn;
        struct store_install *in;
        struct buf chunk;
        buf_init(&chunk);
        bool last = false;
        if (store_snapshot_open(a, P, &sn) || store_install_begin(c, P, &in)) _exit(3);
        for (size_t sent = 0; sent < len * 3 / 4;) {
            if (store_snapshot_next(sn, &chunk, 1000, &last)) _exit(4);
            if (store_install_chunk(in, chunk.data, chunk.len)) _exit(5);
            sent += chunk.len;
        }
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    b = open_dir(db);
    assert_int_equal(hash_of(b, P, NULL), hb);
    assert_int_equal(applied_of(b, P), ib);

    /* The abandoned generations are gone: a full install then matches the
     * source exactly, and applying on top behaves. */
    assert_int_equal(transfer(a, b, P, 4096, NULL, -1, 0), 0);
    assert_int_equal(hash_of(b, P, NULL), hash_of(a, P, NULL));
    store_close(a);
    store_close(b);
    tu_rm_rf(da);
    tu_rm_rf(db);
}

/* The key filter is rebuilt after a restart by a scan spread over applies;
 * until it completes, and when it is over its memory cap, applies fall back
 * to reading leveldb. Versions must be right in every phase. */
static void test_key_filter_rebuild(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("store");
    struct store *s = open_dir(dir);
    const int n = 20000;
    uint64_t next = fill(s, P, "f", n, 1);
    struct store_stats st;
    store_stats(s, &st);
    assert_true(st.filter_skips >= (uint64_t)n - 64); /* new keys needed no read */
    store_close(s);

    size_t caps[2] = {0, 4096}; /* default, and a cap the partition exceeds */
    for (int c = 0; c < 2; c++) {
        s = open_opts(dir, &(struct store_options){.key_filter_bytes = caps[c]});
        /* Each apply advances the scan; probe old keys and new ones at every stage. */
        for (int round = 0; round < 8; round++) {
            char old[16], fresh[24];
            snprintf(old, sizeof(old), "f%03d", (round * 2731) % n);
            snprintf(fresh, sizeof(fresh), "new-%d-%d", c, round);
            struct store_op ops[2] = {mk(STORE_OP_PUT, next, old, "x"),
                                      mk(STORE_OP_PUT, next + 1, fresh, "y")};
            next += 2;
            struct store_result res[2];
            assert_int_equal(store_apply(s, P, ops, 2, res), 0);
            assert_int_equal(res[0].version, (uint64_t)(2 + c));
            assert_int_equal(res[1].version, 1);
        }
        store_stats(s, &st);
        if (c == 0)
            assert_true(st.filter_skips > 0); /* completed within the rounds */
        else
            assert_int_equal(st.filter_skips, 0); /* gave up: always reads */
        store_close(s);
    }
    tu_rm_rf(dir);
}

static void test_drop(void **state)
{
    (void)state;
    const char *dir = tu_mkdtemp("store");
    struct store *s = open_dir(dir);
    fill(s, P, "a", 20, 1);
    fill(s, P + 1, "b", 20, 1);
    uint64_t keep = hash_of(s, P + 1, NULL);
    assert_int_equal(store_drop(s, P), 0);
    assert_int_equal(applied_of(s, P), 0);
    assert_int_equal(get_str(s, P, "a001", 0, NULL, NULL), -TRINE_ENOT_FOUND);
    assert_int_equal(hash_of(s, P + 1, NULL), keep);
    struct store_result r = apply1(s, P, mk(STORE_OP_PUT, 1, "a001", "again"));
    assert_int_equal(r.version, 1);
    uint32_t ids[4];
    size_t n;
    store_close(s);
    s = open_dir(dir);
    assert_int_equal(get_str(s, P, "a001", 0, "again", NULL), 0);
    assert_int_equal(get_str(s, P, "a002", 0, NULL, NULL), -TRINE_ENOT_FOUND);
    assert_int_equal(store_partitions(s, ids, 4, &n), 0);
    assert_int_equal(n, 2);
    store_close(s);
    tu_rm_rf(dir);
}

/* --- randomized comparison against a model ------------------------------------------------- */

#define MKEYS 24

struct mkey {
    bool stored;
    uint8_t val[40];
    size_t len;
    uint64_t version, create, mod, expire;
};

static bool m_live(const struct mkey *k, uint64_t now_ms)
{
    return k->stored && !(k->expire && now_ms && k->expire <= now_ms);
}

/* The model of one op; returns the expected result. */
static struct store_result m_apply(struct mkey *k, const struct store_op *op)
{
    struct store_result r = {.revision = op->index};
    bool live = m_live(k, op->now_ms);
    uint64_t cur = live ? k->version : 0;
    bool write = false;
    switch (op->type) {
    case STORE_OP_PUT:
        write = true;
        break;
    case STORE_OP_CAS:
    case STORE_OP_PUT_IF_ABSENT: {
        uint64_t want = op->type == STORE_OP_CAS ? op->expected_version : 0;
        write = cur == want;
        if (!write) {
            r.status = -TRINE_ECAS_FAILED;
            r.version = cur;
        }
        break;
    }
    case STORE_OP_DELETE:
        if (!live) r.status = -TRINE_ENOT_FOUND;
        k->stored = false;
        break;
    case STORE_OP_EXPIRE:
        if (!k->stored) {
            r.status = -TRINE_ENOT_FOUND;
        } else if (k->mod != op->expected_mod_revision) {
            r.status = -TRINE_ECAS_FAILED;
            r.version = cur;
        } else {
            k->stored = false;
        }
        break;
    default:
        break;
    }
    if (write) {
        k->version = cur + 1;
        if (!live) k->create = op->index;
        k->mod = op->index;
        k->expire = op->expire_at_ms;
        k->len = op->value_len;
        memcpy(k->val, op->value, op->value_len);
        k->stored = true;
        r.version = k->version;
    }
    return r;
}

static void check_model(struct store *s, const struct mkey *m, char names[][8], uint64_t now_ms)
{
    for (int i = 0; i < MKEYS; i++) {
        struct store_kv kv;
        int rc = store_get(s, P, (const uint8_t *)names[i], strlen(names[i]), now_ms, &kv);
        if (!m_live(&m[i], now_ms)) {
            assert_int_equal(rc, -TRINE_ENOT_FOUND);
            continue;
        }
        assert_int_equal(rc, 0);
        assert_int_equal(kv.value_len, m[i].len);
        if (m[i].len) assert_memory_equal(kv.value, m[i].val, m[i].len);
        assert_int_equal(kv.version, m[i].version);
        assert_int_equal(kv.create_revision, m[i].create);
        assert_int_equal(kv.mod_revision, m[i].mod);
        assert_int_equal(kv.expire_at_ms, m[i].expire);
    }
}

static void test_random_against_model(void **state)
{
    (void)state;
    struct rng r;
    rng_seed(&r, rng_test_seed("store_random_model"));
    const char *d1 = tu_mkdtemp("store");
    const char *d2 = tu_mkdtemp("store");
    /* Two replicas: default caches vs tiny caches (constant eviction) with
     * different batch boundaries and deferred writes (the same ops also go to a
     * second partition in the same pending batch, and a second apply of a
     * partition in it must see the first); they must agree with the model and
     * each other. */
    struct store *s1 = open_dir(d1);
    struct store_options tiny = {
        .meta_cache_entries = 4, .client_cache_entries = 2, .write_buffer_bytes = 64 << 10};
    struct store *s2 = open_opts(d2, &tiny);
    store_set_deferred(s2, true);
    struct mkey m[MKEYS];
    memset(m, 0, sizeof(m));
    char names[MKEYS][8];
    for (int i = 0; i < MKEYS; i++)
        snprintf(names[i], sizeof(names[i]), "m%02d", i);
    static uint8_t vals[4096][40];

    enum { ROUNDS = 60, OPS_MAX = 64, CLIENTS = 3, SEQS = ROUNDS * OPS_MAX + 1 };
    struct store_op ops[OPS_MAX];
    struct store_result res[OPS_MAX], res2[OPS_MAX], res3[OPS_MAX];
    /* Dedupe model: every result per (client, seq); clients send seqs in
     * order and retry one of their STORE_DEDUPE_PER_CLIENT newest. */
    static struct store_result seen[CLIENTS][SEQS];
    uint64_t next_seq[CLIENTS] = {1, 1, 1};
    uint64_t idx = 1, now = 1000, last_index = 0;
    size_t vi = 0;
    for (int round = 0; round < ROUNDS; round++) {
        size_t n = 1 + (size_t)rng_below(&r, OPS_MAX);
        now += rng_below(&r, 40);
        for (size_t i = 0; i < n; i++) {
            int k = (int)rng_below(&r, MKEYS);
            uint64_t t = rng_below(&r, 10);
            enum store_op_type type = t < 4   ? STORE_OP_PUT
                                      : t < 5 ? STORE_OP_DELETE
                                      : t < 7 ? STORE_OP_CAS
                                      : t < 8 ? STORE_OP_PUT_IF_ABSENT
                                      : t < 9 ? STORE_OP_EXPIRE
                                              : STORE_OP_NOOP;
            uint8_t *v = vals[vi++ % 4096];
            size_t vlen = (size_t)rng_below(&r, 40);
            rng_fill(&r, v, vlen);
            ops[i] = (struct store_op){.index = idx, .term = 2, .type = type, .now_ms = now};
            if (type != STORE_OP_NOOP) {
                ops[i].key = (const uint8_t *)names[k];
                ops[i].key_len = strlen(names[k]);
            }
            ops[i].value = v;
            ops[i].value_len = vlen;
            ops[i].expected_version =
                m[k].stored ? m[k].version - rng_below(&r, 2) : rng_below(&r, 2);
            ops[i].expected_mod_revision = rng_below(&r, 3) ? m[k].mod : m[k].mod + 1;
            if (rng_below(&r, 3) == 0) ops[i].expire_at_ms = now + rng_below(&r, 100);
            if (rng_below(&r, 2) == 0) {
                unsigned c = (unsigned)rng_below(&r, CLIENTS);
                ops[i].client_id = 500 + c;
                uint64_t have = next_seq[c] - 1;
                if (have > 0 && rng_below(&r, 3) == 0) {
                    uint64_t back = have < STORE_DEDUPE_PER_CLIENT ? have : STORE_DEDUPE_PER_CLIENT;
                    ops[i].seq = next_seq[c] - 1 - rng_below(&r, back);
                } else {
                    ops[i].seq = next_seq[c]++;
                }
            }
            last_index = idx;
            idx += 1 + rng_below(&r, 2); /* indexes may skip (config entries) */
        }
        assert_int_equal(store_apply(s1, P, ops, n, res), 0);
        size_t cut = (size_t)rng_below(&r, n + 1);
        assert_int_equal(store_apply(s2, P + 1, ops, n, res3), 0);
        if (cut) assert_int_equal(store_apply(s2, P, ops, cut, res2), 0);
        if (cut < n) assert_int_equal(store_apply(s2, P, ops + cut, n - cut, res2 + cut), 0);
        for (size_t i = 0; i < n; i++) {
            struct store_result want;
            struct store_result *rec = NULL;
            if (ops[i].client_id) rec = &seen[ops[i].client_id - 500][ops[i].seq];
            if (rec && rec->revision) {
                want = *rec;
                want.flags = STORE_RESULT_DUPLICATE;
            } else {
                struct mkey dummy = {0};
                struct mkey *mk_ = &dummy;
                if (ops[i].type != STORE_OP_NOOP)
                    mk_ = &m[(ops[i].key[1] - '0') * 10 + (ops[i].key[2] - '0')];
                want = m_apply(mk_, &ops[i]);
                if (rec) *rec = want;
            }
            assert_int_equal(res[i].flags, want.flags);
            assert_int_equal(res[i].status, want.status);
            assert_int_equal(res[i].version, want.version);
            assert_int_equal(res[i].revision, want.revision);
            assert_int_equal(res2[i].flags, want.flags);
            assert_int_equal(res2[i].status, want.status);
            assert_int_equal(res2[i].version, want.version);
            assert_int_equal(res2[i].revision, want.revision);
            assert_int_equal(res3[i].status, want.status);
            assert_int_equal(res3[i].version, want.version);
        }
        if (rng_below(&r, 2)) assert_int_equal(store_flush(s2), 0);
        check_model(s1, m, names, now);
        check_model(s2, m, names, 0);
        if (round % 20 == 19) {
            store_close(s2); /* writes the pending batch */
            s2 = open_opts(d2, &tiny);
            store_set_deferred(s2, true);
        }
    }
    uint64_t a1, a2;
    assert_int_equal(hash_of(s1, P, &a1), hash_of(s2, P, &a2));
    assert_int_equal(a1, last_index);
    assert_int_equal(a2, last_index);
    (void)hash_of(s2, P + 1, &a2);
    assert_int_equal(a2, last_index);
    store_close(s1);
    store_close(s2);
    tu_rm_rf(d1);
    tu_rm_rf(d2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_delete_versions),
        cmocka_unit_test(test_cas_and_put_if_absent),
        cmocka_unit_test(test_invalid_ops_consume_index),
        cmocka_unit_test(test_batch_sees_its_own_writes),
        cmocka_unit_test(test_replay_is_idempotent),
        cmocka_unit_test(test_restart_keeps_state),
        cmocka_unit_test(test_crash_without_close),
        cmocka_unit_test(test_scan),
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_dedupe),
        cmocka_unit_test(test_dedupe_window),
        cmocka_unit_test(test_snapshot_roundtrip),
        cmocka_unit_test(test_install_replaces_stale_partition),
        cmocka_unit_test(test_install_rejects_corruption),
        cmocka_unit_test(test_install_interrupted),
        cmocka_unit_test(test_key_filter_rebuild),
        cmocka_unit_test(test_drop),
        cmocka_unit_test(test_random_against_model),
        cmocka_unit_test(test_ldb_stats),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
