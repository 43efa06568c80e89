/*
 * assert.c - failure paths for TRINE_ASSERT and trine_fatal.
 */
#include "base/assert.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/log.h"

void trine_assert_fail(const char *expr, const char *file, int line, const char *func)
{
    log_msg(LOG_LEVEL_FATAL, "assert", -1, "assertion failed: %s at %s:%d in %s()", expr, file,
            line, func);
    abort();
}

void trine_fatal(const char *module, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_msg(LOG_LEVEL_FATAL, module, -1, "%s; stopping", msg);
    /* _exit: no atexit handlers, no stdio flushes that might touch the disk again. */
    _exit(70);
}
