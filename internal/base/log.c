/*
 * log.c - JSON-lines logger. A line is built in a stack buffer (truncated, never
 * allocated) and written with one write(2).
 */
#include "base/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "base/status.h"

#define LOG_LINE_MAX 4096

static enum log_level log_level_min = LOG_LEVEL_INFO;
static int log_fd = 2;
static int64_t log_node = -1;

static const char *const log_level_names[] = {"debug", "info", "warn", "error", "fatal"};

void log_set_level(enum log_level level)
{
    log_level_min = level;
}

int log_parse_level(const char *name, enum log_level *out)
{
    for (int i = 0; i <= LOG_LEVEL_ERROR; i++) {
        if (strcasecmp(name, log_level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -TRINE_EINVALID;
}

void log_set_node(uint32_t node_id)
{
    log_node = node_id;
}

void log_set_fd(int fd)
{
    log_fd = fd;
}

bool log_enabled(enum log_level level)
{
    return level >= log_level_min;
}

/* Appends s JSON-escaped into out[*n..cap-1], keeping room for the line end. */
static void log_escape(char *out, size_t *n, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (; *s && *n + 8 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[(*n)++] = '\\';
            out[(*n)++] = (char)c;
        } else if (c == '\n') {
            out[(*n)++] = '\\';
            out[(*n)++] = 'n';
        } else if (c < 0x20) {
            out[(*n)++] = '\\';
            out[(*n)++] = 'u';
            out[(*n)++] = '0';
            out[(*n)++] = '0';
            out[(*n)++] = hex[c >> 4];
            out[(*n)++] = hex[c & 15];
        } else {
            out[(*n)++] = (char)c;
        }
    }
}

static void log_append(char *out, size_t *n, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void log_append(char *out, size_t *n, size_t cap, const char *fmt, ...)
{
    if (*n >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(out + *n, cap - *n, fmt, ap);
    va_end(ap);
    if (w > 0) *n += (size_t)w < cap - *n ? (size_t)w : cap - *n - 1;
}

void log_msg(enum log_level level, const char *module, int64_t partition, const char *fmt, ...)
{
    if (level < log_level_min) return;
    int saved_errno = errno;

    char msg[LOG_LINE_MAX / 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);

    char line[LOG_LINE_MAX];
    size_t n = 0, cap = sizeof(line) - 3; /* room for "}\n" */
    log_append(line, &n, cap, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\"",
               tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
               ts.tv_nsec / 1000000, log_level_names[level]);
    if (log_node >= 0) log_append(line, &n, cap, ",\"node\":%lld", (long long)log_node);
    log_append(line, &n, cap, ",\"mod\":\"%s\"", module);
    if (partition >= 0) log_append(line, &n, cap, ",\"part\":%lld", (long long)partition);
    log_append(line, &n, cap, ",\"msg\":\"");
    log_escape(line, &n, cap - 1, msg);
    line[n++] = '"';
    line[n++] = '}';
    line[n++] = '\n';

    ssize_t w = write(log_fd, line, n);
    (void)w; /* nowhere to report a failed log write */
    errno = saved_errno;
}
