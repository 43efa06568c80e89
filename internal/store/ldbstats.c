/*
 * ldbstats.c - leveldb's own statistics for metrics (store_ldb_stats).
 *
 * "leveldb.stats" (leveldb 1.23, db_impl.cc) is a table with one row per
 * level that has files or compaction time:
 *
 *                                Compactions
 *   Level  Files Size(MB) Time(sec) Read(MB) Write(MB)
 *   --------------------------------------------------
 *     0        2        3         0        0         4
 *
 * every figure printed with "%.0f". Rows that do not parse are skipped, so a
 * format change loses figures rather than inventing them; the file counts come
 * from "leveldb.num-files-at-level<N>", which is exact.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

#define MIB 1048576.0

static int ldb_number(struct store *s, const char *name, uint64_t *out)
{
    char *v = leveldb_property_value(s->db, name);
    if (!v) return -1;
    char *end = NULL;
    unsigned long long n = strtoull(v, &end, 10);
    int rc = end != v ? 0 : -1;
    if (rc == 0) *out = n;
    leveldb_free(v);
    return rc;
}

static uint64_t mib_to_bytes(double mib)
{
    return mib > 0 ? (uint64_t)(mib * MIB) : 0;
}

void store_ldb_stats(struct store *s, struct store_ldb_stats *out)
{
    memset(out, 0, sizeof(*out));
    char name[64];
    for (int l = 0; l < STORE_LDB_LEVELS; l++) {
        snprintf(name, sizeof(name), "leveldb.num-files-at-level%d", l);
        (void)ldb_number(s, name, &out->files[l]);
    }
    (void)ldb_number(s, "leveldb.approximate-memory-usage", &out->memory_bytes);
    char *text = leveldb_property_value(s->db, "leveldb.stats");
    if (!text) return;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        int level, files;
        double size, secs, rd, wr;
        if (sscanf(line, "%d %d %lf %lf %lf %lf", &level, &files, &size, &secs, &rd, &wr) != 6 ||
            level < 0 || level >= STORE_LDB_LEVELS)
            continue;
        out->level_bytes[level] = mib_to_bytes(size);
        out->compaction_seconds[level] = secs;
        out->compaction_read[level] = mib_to_bytes(rd);
        out->compaction_written[level] = mib_to_bytes(wr);
    }
    leveldb_free(text);
}
