/*
 * faultpoint.h - crash and failure points on the write path, compiled into
 * test builds only (tests/fault/crash_matrix.py, docs/testing.md).
 *
 * Without TRINE_FAULT_POINTS (every product build) both macros are constants
 * and generate no code. With it (the fault-point flavour, `make fault-points`,
 * build/fp), a point named NAME fires when the environment says so:
 *
 *   TRINE_FAULT_POINT=NAME[@N][:kill|:fail]
 *
 * on its N-th hit in this process (default 1): `kill` (default) raises SIGKILL
 * at that exact instruction, as a crash of the process would; `fail` makes
 * TRINE_FAULT_POINT() return true once, and the call site turns that into the
 * error the real operation would report; `drop` (TRINE_FAULT_POINT_FD sites
 * only) truncates the file to the bytes known durable, gives it its size back
 * as unwritten space (zeros, what a power cut leaves in a preallocated
 * segment; where fallocate is missing the file stays cut) and then kills: a
 * power loss that takes the unsynced tail with it. Only one point is armed
 * per process. The points (each at one call site):
 *
 *   wal.append          a batch is about to be written to the active segment
 *   wal.fsync           written, before its fdatasync (fail: the fdatasync fails;
 *                       drop: the batch's bytes are lost, as in a power cut)
 *   replica.apply       committed entries applied to the store, Raft not yet told
 *   replica.snap_build  store synced for a compaction, before the WAL mark
 *   replica.snap_install a received snapshot is current in the store, before the WAL mark
 *   wal.segment_delete  a released segment is about to be unlinked
 *
 * TRINE_FAULT_TUNE(var, NAME) overrides a tunable from TRINE_FAULT_TUNE_<NAME>
 * in the same builds (small snapshot and segment thresholds make the rare
 * steps happen within a test); a no-op elsewhere.
 */
#ifndef TRINE_WAL_FAULTPOINT_H
#define TRINE_WAL_FAULTPOINT_H

#ifdef TRINE_FAULT_POINTS
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"

/* fd >= 0: the point may also `drop` (truncate fd to keep_bytes, then SIGKILL). */
static inline bool faultpoint_hit_fd(const char *name, int fd, long long keep_bytes)
{
    /* One counter per translation unit is enough: each point has one call site. */
    static atomic_ulong faultpoint_hits_;
    const char *spec = getenv("TRINE_FAULT_POINT");
    size_t n = strlen(name);
    if (spec == NULL || strncmp(spec, name, n) != 0) return false;
    const char *rest = spec + n;
    if (*rest != '\0' && *rest != '@' && *rest != ':') return false; /* a longer name */
    unsigned long want = 1;
    if (*rest == '@') want = strtoul(rest + 1, NULL, 10);
    const char *act = strchr(rest, ':');
    if (atomic_fetch_add(&faultpoint_hits_, 1) + 1 != want) return false;
    if (act != NULL && strcmp(act + 1, "drop") == 0 && fd >= 0) {
        log_warn("faultpoint", "%s: unsynced bytes past %lld lost, SIGKILL (hit %lu)", name,
                 keep_bytes, want);
        struct stat st;
        if (fstat(fd, &st) != 0 || ftruncate(fd, (off_t)keep_bytes) != 0) abort();
        if (st.st_size > (off_t)keep_bytes) (void)fallocate(fd, 0, 0, st.st_size);
        kill(getpid(), SIGKILL);
    }
    if (act != NULL && strcmp(act + 1, "fail") == 0) {
        log_warn("faultpoint", "%s: failing (hit %lu)", name, want);
        return true;
    }
    log_warn("faultpoint", "%s: SIGKILL (hit %lu)", name, want);
    kill(getpid(), SIGKILL);
    return false;
}

#define TRINE_FAULT_POINT(name)                    faultpoint_hit_fd(name, -1, 0)
#define TRINE_FAULT_POINT_FD(name, fd, keep_bytes) faultpoint_hit_fd(name, fd, keep_bytes)
#define TRINE_FAULT_TUNE(var, name)                                                                \
    do {                                                                                           \
        const char *v_ = getenv("TRINE_FAULT_TUNE_" name);                                         \
        if (v_ != NULL) (var) = strtoull(v_, NULL, 10);                                            \
    } while (0)
#else
#define TRINE_FAULT_POINT(name)                    0
#define TRINE_FAULT_POINT_FD(name, fd, keep_bytes) 0
#define TRINE_FAULT_TUNE(var, name)                ((void)0)
#endif

#endif
