/*
 * rand.c - xoshiro256** (Blackman and Vigna), public-domain algorithm.
 */
#include "base/rand.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/assert.h"
#include "base/clock.h"

uint64_t rng_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static uint64_t splitmix64(uint64_t *x)
{
    return rng_mix64(*x += 0x9e3779b97f4a7c15u);
}

void rng_seed(struct rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t rng_next(struct rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t rng_below(struct rng *r, uint64_t n)
{
    TRINE_ASSERT(n > 0);
    /* Rejection sampling keeps the distribution exactly uniform. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = rng_next(r);
    } while (x >= limit);
    return x % n;
}

void rng_fill(struct rng *r, void *p, uint64_t n)
{
    uint8_t *b = p;
    while (n > 0) {
        uint64_t x = rng_next(r);
        size_t k = n < 8 ? (size_t)n : 8;
        memcpy(b, &x, k);
        b += k;
        n -= k;
    }
}

uint64_t rng_test_seed(const char *name)
{
    const char *env = getenv("TRINE_SEED");
    uint64_t seed;
    if (env && *env) {
        seed = strtoull(env, NULL, 0);
    } else {
        uint64_t x = clock_mono_ns() ^ ((uint64_t)getpid() << 32);
        seed = splitmix64(&x);
    }
    fprintf(stderr, "%s: seed=%" PRIu64 " (replay with TRINE_SEED=%" PRIu64 ")\n", name, seed,
            seed);
    return seed;
}
