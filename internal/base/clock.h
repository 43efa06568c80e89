/*
 * clock.h - time sources. Pure modules (raft, ring, codec) never read a clock;
 * they are handed time by their caller. I/O modules take a struct trine_clock
 * so tests can substitute a fake one.
 */
#ifndef TRINE_BASE_CLOCK_H
#define TRINE_BASE_CLOCK_H

#include <stdint.h>

/* Monotonic nanoseconds (CLOCK_MONOTONIC). */
uint64_t clock_mono_ns(void);
/* Wall-clock milliseconds since the Unix epoch (CLOCK_REALTIME). */
uint64_t clock_real_ms(void);

struct trine_clock {
    uint64_t (*mono_ns)(void *ctx);
    uint64_t (*real_ms)(void *ctx);
    void *ctx;
};

/* The process's real clocks. */
extern const struct trine_clock clock_system;

#endif
