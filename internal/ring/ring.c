/*
 * ring.c - building a ring: token generation, clockwise placement, primary
 * rebalancing. Memory: one allocation for the tokens (freed after placement)
 * and one for the replica table (P * replicas ids).
 */
#include "ring/ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "base/assert.h"

struct ring {
    uint64_t epoch;
    uint32_t partitions;
    uint32_t replicas; /* per partition, = min(config replicas, members) */
    uint32_t *replica; /* partitions * replicas member ids */
};

struct ring_token {
    uint64_t token;
    uint32_t member;
};

void ring_config_default(struct ring_config *c)
{
    c->partitions = 64;
    c->vnodes = 64;
    c->replicas = 3;
}

uint64_t ring_key_hash(const void *key, size_t len)
{
    return XXH3_64bits(key, len);
}

uint32_t ring_partition_of_hash(uint32_t partitions, uint64_t hash)
{
    return (uint32_t)(((unsigned __int128)hash * partitions) >> 64);
}

uint32_t ring_partition_of_key(const struct ring *r, const void *key, size_t len)
{
    return ring_partition_of_hash(r->partitions, ring_key_hash(key, len));
}

static int ring_token_cmp(const void *a, const void *b)
{
    const struct ring_token *x = a, *y = b;
    if (x->token != y->token) return x->token < y->token ? -1 : 1;
    return x->member < y->member ? -1 : x->member > y->member; /* ties: deterministic */
}

/* First index in sorted tokens whose token >= t (wrapping to 0). */
static size_t ring_lower_bound(const struct ring_token *tok, size_t n, uint64_t t)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (tok[mid].token < t)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == n ? 0 : lo;
}

static void ring_place(struct ring *r, const struct ring_token *tok, size_t ntok)
{
    for (uint32_t p = 0; p < r->partitions; p++) {
        uint64_t start = (uint64_t)(((unsigned __int128)p << 64) / r->partitions);
        uint32_t *set = &r->replica[(size_t)p * r->replicas];
        uint32_t have = 0;
        for (size_t i = ring_lower_bound(tok, ntok, start), seen = 0;
             have < r->replicas && seen < ntok; i = (i + 1) % ntok, seen++) {
            uint32_t m = tok[i].member;
            int dup = 0;
            for (uint32_t k = 0; k < have; k++)
                dup |= set[k] == m;
            if (!dup) set[have++] = m;
        }
        TRINE_ASSERT(have == r->replicas);
    }
}

static size_t ring_member_index(const uint32_t *members, size_t n, uint32_t id)
{
    for (size_t i = 0; i < n; i++)
        if (members[i] == id) return i;
    TRINE_UNREACHABLE();
}

/* Moves preferred primaries between members of the same replica set until no
 * move from a member with c leaders to one with <= c - 2 remains. Each move
 * lowers the sum of squared leader counts, so this terminates. */
static void ring_balance_primaries(struct ring *r, const uint32_t *members, size_t n,
                                   uint32_t *lead)
{
    memset(lead, 0, n * sizeof(*lead));
    for (uint32_t p = 0; p < r->partitions; p++)
        lead[ring_member_index(members, n, r->replica[(size_t)p * r->replicas])]++;
    for (int moved = 1; moved;) {
        moved = 0;
        for (uint32_t p = 0; p < r->partitions; p++) {
            uint32_t *set = &r->replica[(size_t)p * r->replicas];
            size_t cur = ring_member_index(members, n, set[0]);
            uint32_t best_k = 0;
            size_t best = cur;
            for (uint32_t k = 1; k < r->replicas; k++) {
                size_t c = ring_member_index(members, n, set[k]);
                if (lead[c] + 1 < lead[best]) {
                    best = c;
                    best_k = k;
                }
            }
            if (best_k == 0) continue;
            /* Swap into position 0, keeping the others in ring order. */
            uint32_t m = set[best_k];
            memmove(&set[1], &set[0], best_k * sizeof(*set));
            set[0] = m;
            lead[cur]--;
            lead[best]++;
            moved = 1;
        }
    }
}

int ring_create(const struct ring_config *c, const uint32_t *members, size_t n, uint64_t epoch,
                struct ring **out, struct trine_err *err)
{
    *out = NULL;
    if (c->partitions == 0 || c->partitions > RING_PARTITIONS_MAX)
        return err_set(err, -TRINE_EINVALID, "partitions must be in [1, %d], not %u",
                       RING_PARTITIONS_MAX, c->partitions);
    if (c->vnodes == 0 || c->vnodes > RING_VNODES_MAX)
        return err_set(err, -TRINE_EINVALID, "vnodes must be in [1, %d], not %u", RING_VNODES_MAX,
                       c->vnodes);
    if (c->replicas == 0 || c->replicas > RING_REPLICAS_MAX)
        return err_set(err, -TRINE_EINVALID, "replicas must be in [1, %d], not %u",
                       RING_REPLICAS_MAX, c->replicas);
    if (n == 0 || n > RING_MEMBERS_MAX)
        return err_set(err, -TRINE_EINVALID, "a ring needs 1 to %d members, not %zu",
                       RING_MEMBERS_MAX, n);
    for (size_t i = 0; i < n; i++) {
        if (members[i] == 0) return err_set(err, -TRINE_EINVALID, "member id 0 is reserved");
        for (size_t j = 0; j < i; j++)
            if (members[i] == members[j])
                return err_set(err, -TRINE_EINVALID, "member id %u appears twice", members[i]);
    }

    struct ring *r = calloc(1, sizeof(*r));
    size_t ntok = n * c->vnodes;
    struct ring_token *tok = calloc(ntok, sizeof(*tok));
    uint32_t *lead = calloc(n, sizeof(*lead));
    if (r) {
        r->epoch = epoch;
        r->partitions = c->partitions;
        r->replicas = c->replicas < n ? c->replicas : (uint32_t)n;
        r->replica = calloc((size_t)r->partitions * r->replicas, sizeof(*r->replica));
    }
    if (!r || !tok || !lead || !r->replica) {
        free(tok);
        free(lead);
        ring_destroy(r);
        return err_set(err, -TRINE_ENOMEM, "ring: out of memory");
    }

    for (size_t i = 0, t = 0; i < n; i++) {
        for (uint32_t v = 0; v < c->vnodes; v++, t++) {
            char name[32];
            int len = snprintf(name, sizeof(name), "%u/%u", members[i], v);
            tok[t].token = XXH3_64bits(name, (size_t)len);
            tok[t].member = members[i];
        }
    }
    qsort(tok, ntok, sizeof(*tok), ring_token_cmp);
    ring_place(r, tok, ntok);
    ring_balance_primaries(r, members, n, lead);
    free(tok);
    free(lead);
    *out = r;
    return 0;
}

void ring_destroy(struct ring *r)
{
    if (r == NULL) return;
    free(r->replica);
    free(r);
}

uint64_t ring_epoch(const struct ring *r)
{
    return r->epoch;
}

uint32_t ring_partitions(const struct ring *r)
{
    return r->partitions;
}

const uint32_t *ring_replicas(const struct ring *r, uint32_t p, size_t *n)
{
    TRINE_ASSERT(p < r->partitions);
    *n = r->replicas;
    return &r->replica[(size_t)p * r->replicas];
}

int ring_holds(const struct ring *r, uint32_t p, uint32_t member)
{
    size_t n;
    const uint32_t *set = ring_replicas(r, p, &n);
    for (size_t i = 0; i < n; i++)
        if (set[i] == member) return 1;
    return 0;
}
