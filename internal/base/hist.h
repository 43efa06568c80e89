/*
 * hist.h - a fixed-size log-linear latency histogram (HDR-style).
 *
 * Values (e.g. microseconds) land in buckets whose width is 1/16 of their
 * power of two, so any percentile is reported within 6.25 % of the truth,
 * with no allocation and O(1) record. Not thread-safe: keep one per thread
 * and hist_merge() them.
 */
#ifndef TRINE_BASE_HIST_H
#define TRINE_BASE_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 4
#define HIST_BUCKETS  (64 << HIST_SUB_BITS)

struct hist {
    uint64_t count;
    uint64_t sum;
    uint64_t min;
    uint64_t max;
    uint64_t buckets[HIST_BUCKETS];
};

void hist_init(struct hist *h);
void hist_record(struct hist *h, uint64_t value);
void hist_merge(struct hist *into, const struct hist *from);
/* Value at quantile q in [0, 1] (upper bound of its bucket, capped at max); 0 if empty. */
uint64_t hist_quantile(const struct hist *h, double q);
double hist_mean(const struct hist *h);

#endif
