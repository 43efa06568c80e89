/*
 * rand.h - deterministic pseudo-random numbers (xoshiro256**, seeded through
 * splitmix64). Not for cryptography. Every randomized test takes its seed from
 * rng_test_seed(), prints it and so can be replayed.
 */
#ifndef TRINE_BASE_RAND_H
#define TRINE_BASE_RAND_H

#include <stdint.h>

struct rng {
    uint64_t s[4];
};

void rng_seed(struct rng *r, uint64_t seed);
/* splitmix64's finaliser: a bijection that spreads every input bit over the
 * output; for combining seeds so that nearby inputs do not collide. */
uint64_t rng_mix64(uint64_t x);
uint64_t rng_next(struct rng *r);
/* Uniform in [0, n); n > 0. */
uint64_t rng_below(struct rng *r, uint64_t n);
/* Fills p with n random bytes. */
void rng_fill(struct rng *r, void *p, uint64_t n);

/* The seed for a randomized test: $TRINE_SEED if set, else derived from the
 * time and pid. Prints "<name>: seed=<S> (replay with TRINE_SEED=<S>)" to stderr. */
uint64_t rng_test_seed(const char *name);

#endif
