/*
 * hist.c - log-linear histogram. Bucket b < 2*SUB holds the value b exactly;
 * above that, a value v with highest set bit e (e >= SUB_BITS) goes to bucket
 * (e - SUB_BITS + 1) * SUB + (the SUB_BITS bits below the top bit).
 */
#include "base/hist.h"

#include <string.h>

#define SUB (1u << HIST_SUB_BITS)

void hist_init(struct hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

static unsigned hist_bucket(uint64_t v)
{
    if (v < 2ull * SUB) return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    unsigned sub = (unsigned)(v >> (e - HIST_SUB_BITS)) & (SUB - 1);
    return (e - HIST_SUB_BITS + 1) * SUB + sub;
}

/* Largest value that falls into bucket b. */
static uint64_t hist_bucket_top(unsigned b)
{
    if (b < 2 * SUB) return b;
    unsigned e = b / SUB + HIST_SUB_BITS - 1;
    uint64_t sub = b % SUB;
    uint64_t base = (1ull << e) | (sub << (e - HIST_SUB_BITS));
    return base + (1ull << (e - HIST_SUB_BITS)) - 1;
}

void hist_record(struct hist *h, uint64_t value)
{
    h->buckets[hist_bucket(value)]++;
    h->count++;
    h->sum += value;
    if (value < h->min) h->min = value;
    if (value > h->max) h->max = value;
}

void hist_merge(struct hist *into, const struct hist *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->buckets[i] += from->buckets[i];
    into->count += from->count;
    into->sum += from->sum;
    if (from->min < into->min) into->min = from->min;
    if (from->max > into->max) into->max = from->max;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->count == 0) return 0;
    if (q <= 0) return h->min;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.5);
    if (rank < 1) rank = 1;
    if (rank > h->count) rank = h->count;
    uint64_t seen = 0;
    for (unsigned b = 0; b < HIST_BUCKETS; b++) {
        seen += h->buckets[b];
        if (seen >= rank) {
            uint64_t top = hist_bucket_top(b);
            return top > h->max ? h->max : top;
        }
    }
    return h->max;
}

double hist_mean(const struct hist *h)
{
    return h->count ? (double)h->sum / (double)h->count : 0.0;
}
