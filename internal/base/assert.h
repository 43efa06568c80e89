/*
 * assert.h - invariant checks that stay on in release builds.
 *
 * Use TRINE_ASSERT for conditions that only a bug can break (preconditions,
 * postconditions, "cannot happen"). Never assert on bytes that came from the
 * network or the disk: those are errors, returned as a status.
 */
#ifndef TRINE_BASE_ASSERT_H
#define TRINE_BASE_ASSERT_H

#include <stdnoreturn.h>

noreturn void trine_assert_fail(const char *expr, const char *file, int line, const char *func);

#define TRINE_ASSERT(cond)                                                                         \
    ((cond) ? (void)0 : trine_assert_fail(#cond, __FILE__, __LINE__, __func__))

#define TRINE_UNREACHABLE() trine_assert_fail("unreachable", __FILE__, __LINE__, __func__)

/* Stops the process on an unrecoverable condition (e.g. a failed fsync),
 * after logging msg. Never returns. */
noreturn void trine_fatal(const char *module, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
