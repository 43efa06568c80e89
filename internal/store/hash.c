/*
 * hash.c - a fast 64-bit hash for cache slots and replica content hashes.
 *
 * Each 8-byte little-endian word goes through the splitmix64 finalizer and is
 * folded into the state with an xor and an odd multiply (both bijections),
 * so the result depends on every byte and on the order. Loads are explicit
 * little-endian so every platform computes the same content hash. Not
 * resistant to deliberate collisions; nothing here needs that.
 */
#include "store/store_int.h"

#define GOLDEN 0x9e3779b97f4a7c15ull

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static inline uint64_t load64le(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

uint64_t store_hash64(uint64_t seed, const void *data, size_t n)
{
    const uint8_t *p = data;
    uint64_t h = mix64(seed ^ ((uint64_t)n * GOLDEN));
    for (; n >= 8; p += 8, n -= 8)
        h = (h ^ mix64(load64le(p))) * GOLDEN;
    uint64_t t = 0;
    for (size_t i = 0; i < n; i++)
        t |= (uint64_t)p[i] << (8 * i);
    h = (h ^ mix64(t ^ (uint64_t)n << 59)) * GOLDEN;
    return mix64(h);
}

uint64_t store_state_hash(uint32_t part, uint32_t gen, uint8_t kind, const uint8_t *key,
                          size_t klen)
{
    uint64_t seed = ((uint64_t)part << 32 | gen) ^ ((uint64_t)kind << 56);
    return store_hash64(seed, key, klen);
}
