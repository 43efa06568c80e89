/*
 * clock.c - system clocks.
 */
#include "base/clock.h"

#include <time.h>

uint64_t clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t clock_real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t clock_system_mono(void *ctx)
{
    (void)ctx;
    return clock_mono_ns();
}

static uint64_t clock_system_real(void *ctx)
{
    (void)ctx;
    return clock_real_ms();
}

const struct trine_clock clock_system = {clock_system_mono, clock_system_real, 0};
