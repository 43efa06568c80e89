/*
 * log.h - structured logging: one JSON object per line, written with a single
 * write(2) so lines from many threads never interleave.
 *
 *   {"ts":"2026-11-21T21:56:14.123Z","level":"warn","node":1,"mod":"wal",
 *    "part":7,"msg":"torn tail truncated at 000001.wal+4096"}
 *
 * "node" appears once log_set_node() was called, "part" only from log_part().
 * The level and node are process-wide; setting them is not thread-safe and
 * belongs to start-up.
 */
#ifndef TRINE_BASE_LOG_H
#define TRINE_BASE_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum log_level {
    LOG_LEVEL_DEBUG,
    LOG_LEVEL_INFO,
    LOG_LEVEL_WARN,
    LOG_LEVEL_ERROR,
    LOG_LEVEL_FATAL
};

void log_set_level(enum log_level level);
/* Parses "debug|info|warn|error"; returns 0 or -TRINE_EINVALID. */
int log_parse_level(const char *name, enum log_level *out);
void log_set_node(uint32_t node_id);
/* Where lines go (default 2, stderr). */
void log_set_fd(int fd);
bool log_enabled(enum log_level level);

/* partition < 0 omits the field. */
void log_msg(enum log_level level, const char *module, int64_t partition, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define log_debug(mod, ...)             log_msg(LOG_LEVEL_DEBUG, mod, -1, __VA_ARGS__)
#define log_info(mod, ...)              log_msg(LOG_LEVEL_INFO, mod, -1, __VA_ARGS__)
#define log_warn(mod, ...)              log_msg(LOG_LEVEL_WARN, mod, -1, __VA_ARGS__)
#define log_error(mod, ...)             log_msg(LOG_LEVEL_ERROR, mod, -1, __VA_ARGS__)
#define log_part(level, mod, part, ...) log_msg(level, mod, (int64_t)(part), __VA_ARGS__)

#endif
