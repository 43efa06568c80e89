/*
 * testutil.c - temporary directories and paths for tests.
 */
#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *tu_mkdtemp(const char *tag)
{
    static char slots[8][512];
    static int next;
    char *p = slots[next++ % 8];
    const char *tmp = getenv("TMPDIR");
    snprintf(p, sizeof(slots[0]), "%s/trine-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag);
    if (mkdtemp(p) == NULL) {
        perror("mkdtemp");
        abort();
    }
    return p;
}

static int tu_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int tu_rm_rf(const char *path)
{
    return nftw(path, tu_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

char *tu_path(char *out, size_t n, const char *dir, const char *name)
{
    int w = snprintf(out, n, "%s/%s", dir, name);
    if (w < 0 || (size_t)w >= n) abort();
    return out;
}
