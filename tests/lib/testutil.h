/*
 * testutil.h - helpers shared by the test binaries (not part of the product).
 */
#ifndef TRINE_TESTS_TESTUTIL_H
#define TRINE_TESTS_TESTUTIL_H

#include <stddef.h>

/* Creates a fresh directory under $TMPDIR (or /tmp) named trine-<tag>-XXXXXX
 * and returns its path (static storage per call slot; copy it if you keep
 * more than 8 at once). Aborts the test binary on failure. */
const char *tu_mkdtemp(const char *tag);

/* Removes a directory tree; returns 0 or -1. */
int tu_rm_rf(const char *path);

/* Joins dir and name into out (size n); aborts on overflow. Returns out. */
char *tu_path(char *out, size_t n, const char *dir, const char *name);

#endif
