/*
 * ring.h - consistent-hash placement of partitions on members. Pure: no I/O,
 * no clock; the same inputs give the same ring on every node.
 *
 * Keys map to partitions by hash range, never through the ring: partition i
 * owns [i * 2^64 / P, (i + 1) * 2^64 / P) of XXH3-64(key), so P is fixed for
 * the life of a cluster. The ring decides only which members hold partition
 * i: each member has `vnodes` tokens XXH3-64("<member id>/<vnode>"), and the
 * replica set of partition i is the first `replicas` distinct members met
 * clockwise from the token i * 2^64 / P.
 *
 * The replica list is ordered: element 0 is the partition's preferred
 * primary. Ring order alone leaves primaries uneven (64 vnodes give about
 * +-12 % per member), so after placement the preferred primaries are
 * rebalanced within each replica set until no member leads more than one
 * partition above another member that could take one over (+-1 of even when
 * the replica sets allow it). The rest of the list keeps ring order.
 *
 * A ring is immutable; a membership change builds a new one with a higher
 * epoch. Ownership: ring_create allocates, ring_destroy frees; pointers
 * returned by accessors are borrowed and live as long as the ring.
 */
#ifndef TRINE_RING_RING_H
#define TRINE_RING_RING_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

#define RING_MEMBERS_MAX    1024
#define RING_PARTITIONS_MAX 65536
#define RING_VNODES_MAX     1024
#define RING_REPLICAS_MAX   7

struct ring_config {
    uint32_t partitions; /* P, fixed at cluster creation (default 64) */
    uint32_t vnodes;     /* tokens per member (default 64) */
    uint32_t replicas;   /* N (default 3); fewer if there are fewer members */
};

struct ring;

void ring_config_default(struct ring_config *c);

/* Builds the ring for `n` distinct member ids. Returns 0, -TRINE_EINVALID
 * (bad config, duplicate or zero ids; detail in err) or -TRINE_ENOMEM. */
int ring_create(const struct ring_config *c, const uint32_t *members, size_t n, uint64_t epoch,
                struct ring **out, struct trine_err *err);
void ring_destroy(struct ring *r);

uint64_t ring_epoch(const struct ring *r);
uint32_t ring_partitions(const struct ring *r);

/* The 64-bit key hash that decides the partition (XXH3-64, seed 0). */
uint64_t ring_key_hash(const void *key, size_t len);
/* Partition owning a hash: floor(hash * P / 2^64). */
uint32_t ring_partition_of_hash(uint32_t partitions, uint64_t hash);
uint32_t ring_partition_of_key(const struct ring *r, const void *key, size_t len);

/* Replica set of partition p, preferred primary first; *n gets its length. */
const uint32_t *ring_replicas(const struct ring *r, uint32_t p, size_t *n);
/* True if member holds a replica of p. */
int ring_holds(const struct ring *r, uint32_t p, uint32_t member);

#endif
