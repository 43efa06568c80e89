/*
 * test_ring.c - partition ranges, placement, determinism, balance, movement.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "base/rand.h"
#include "ring/ring.h"

static struct ring *make_ring(uint32_t nmembers, uint32_t partitions, uint64_t epoch)
{
    uint32_t ids[64];
    for (uint32_t i = 0; i < nmembers; i++)
        ids[i] = i + 1;
    struct ring_config c;
    ring_config_default(&c);
    c.partitions = partitions;
    struct ring *r = NULL;
    struct trine_err err = {0};
    assert_int_equal(ring_create(&c, ids, nmembers, epoch, &r, &err), 0);
    return r;
}

static void test_partition_ranges(void **state)
{
    (void)state;
    /* Partition i owns [i * 2^64 / P, (i + 1) * 2^64 / P). */
    assert_int_equal(ring_partition_of_hash(64, 0), 0);
    assert_int_equal(ring_partition_of_hash(64, UINT64_MAX), 63);
    assert_int_equal(ring_partition_of_hash(64, (1ull << 58) - 1), 0);
    assert_int_equal(ring_partition_of_hash(64, 1ull << 58), 1);
    assert_int_equal(ring_partition_of_hash(3, UINT64_MAX / 3), 0);
    assert_int_equal(ring_partition_of_hash(3, UINT64_MAX / 3 + 1), 1);
    assert_int_equal(ring_partition_of_hash(1, UINT64_MAX), 0);
    /* The key hash is part of the on-disk contract: XXH3-64 of "" is fixed. */
    assert_true(ring_key_hash("", 0) == 0x2D06800538D394C2ull);

    uint64_t seed = rng_test_seed("test_ring.keys");
    struct rng g;
    rng_seed(&g, seed);
    struct ring *r = make_ring(5, 64, 1);
    int count[64] = {0};
    for (int i = 0; i < 64000; i++) {
        uint64_t k = rng_next(&g);
        count[ring_partition_of_key(r, &k, sizeof(k))]++;
    }
    for (int p = 0; p < 64; p++)
        assert_in_range(count[p], 700, 1300);
    ring_destroy(r);
}

static void test_replica_sets(void **state)
{
    (void)state;
    struct ring *r = make_ring(5, 64, 7);
    assert_int_equal(ring_epoch(r), 7);
    assert_int_equal(ring_partitions(r), 64);
    int held[6] = {0};
    for (uint32_t p = 0; p < 64; p++) {
        size_t n;
        const uint32_t *set = ring_replicas(r, p, &n);
        assert_int_equal(n, 3);
        for (size_t i = 0; i < n; i++) {
            assert_in_range(set[i], 1, 5);
            held[set[i]]++;
            assert_true(ring_holds(r, p, set[i]));
            for (size_t j = 0; j < i; j++)
                assert_int_not_equal(set[i], set[j]);
        }
    }
    /* Every member holds about 3/5 of the partitions (38.4 of 64). */
    for (int m = 1; m <= 5; m++)
        assert_in_range(held[m], 26, 51);
    ring_destroy(r);

    /* Fewer members than replicas: every member holds every partition. */
    r = make_ring(2, 8, 1);
    size_t n;
    ring_replicas(r, 0, &n);
    assert_int_equal(n, 2);
    ring_destroy(r);
}

static void test_deterministic(void **state)
{
    (void)state;
    struct ring *a = make_ring(7, 128, 1), *b = make_ring(7, 128, 1);
    for (uint32_t p = 0; p < 128; p++) {
        size_t na, nb;
        const uint32_t *sa = ring_replicas(a, p, &na), *sb = ring_replicas(b, p, &nb);
        assert_int_equal(na, nb);
        assert_memory_equal(sa, sb, na * sizeof(*sa));
    }
    ring_destroy(a);
    ring_destroy(b);
}

static void test_primaries_balanced(void **state)
{
    (void)state;
    for (uint32_t members = 3; members <= 12; members++) {
        for (uint32_t parts = 16; parts <= 256; parts *= 2) {
            struct ring *r = make_ring(members, parts, 1);
            int lead[13] = {0};
            for (uint32_t p = 0; p < parts; p++) {
                size_t n;
                lead[ring_replicas(r, p, &n)[0]]++;
            }
            int lo = lead[1], hi = lead[1];
            for (uint32_t m = 1; m <= members; m++) {
                lo = lead[m] < lo ? lead[m] : lo;
                hi = lead[m] > hi ? lead[m] : hi;
            }
            /* Within +-1 of even: the spread is at most 2 and, where P divides
             * evenly, at most 1 above the floor. */
            assert_true(hi - lo <= 2);
            assert_true(hi <= (int)((parts + members - 1) / members) + 1);
            assert_true(lo >= (int)(parts / members) - 1);
            ring_destroy(r);
        }
    }
}

static void test_adding_member_moves_little(void **state)
{
    (void)state;
    /* Consistent hashing: adding a 7th member changes the member set of a
     * partition only where the new member joins it. */
    struct ring *a = make_ring(6, 256, 1), *b = make_ring(7, 256, 2);
    int changed = 0;
    for (uint32_t p = 0; p < 256; p++) {
        size_t na, nb;
        const uint32_t *sa = ring_replicas(a, p, &na), *sb = ring_replicas(b, p, &nb);
        int gained_new = ring_holds(b, p, 7);
        int same = 1;
        for (size_t i = 0; i < na; i++)
            same &= ring_holds(b, p, sa[i]);
        if (!same) {
            changed++;
            assert_true(gained_new);
        }
        (void)sb;
        (void)nb;
    }
    /* The new member should take about 3/7 of the partitions' slots. */
    assert_in_range(changed, 256 / 7, 256 * 5 / 7);
    ring_destroy(a);
    ring_destroy(b);
}

static void test_bad_config(void **state)
{
    (void)state;
    struct ring_config c;
    ring_config_default(&c);
    struct ring *r = NULL;
    struct trine_err err = {0};
    uint32_t dup[] = {1, 2, 1};
    assert_int_equal(ring_create(&c, dup, 3, 1, &r, &err), -TRINE_EINVALID);
    assert_non_null(strstr(err.msg, "twice"));
    uint32_t zero[] = {0};
    assert_int_equal(ring_create(&c, zero, 1, 1, &r, &err), -TRINE_EINVALID);
    assert_int_equal(ring_create(&c, dup, 0, 1, &r, &err), -TRINE_EINVALID);
    c.partitions = 0;
    uint32_t ok[] = {1};
    assert_int_equal(ring_create(&c, ok, 1, 1, &r, &err), -TRINE_EINVALID);
    assert_null(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_partition_ranges),
        cmocka_unit_test(test_replica_sets),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_primaries_balanced),
        cmocka_unit_test(test_adding_member_moves_little),
        cmocka_unit_test(test_bad_config),
    };
    return cmocka_run_group_tests_name("ring", tests, NULL, NULL);
}
