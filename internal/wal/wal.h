/*
 * wal.h - the node's single write-ahead log, shared by every partition (Raft
 * group) the node hosts.
 *
 * One directory holds segment files <16 hex digits of seq>.wal. Records carry
 * (partition, type, term, index, payload) and a CRC-32C chained to the previous
 * record; docs/formats.md and segment.c/record.c give the bytes. The active
 * segment's file is preallocated to segment_bytes (zeros after its last record);
 * sealed segments are cut back to their records.
 *
 * Threads. wal_open starts one "sync thread" that owns the active segment: it
 * takes every request queued since its last write, writes them with one
 * pwritev, runs one fdatasync, and only then completes them (group commit).
 * wal_append blocks until its records are durable; wal_submit returns at once
 * and its callback runs later ON THE SYNC THREAD, in submission order. All
 * functions are thread-safe except wal_open/wal_close, which the owner calls
 * once each.
 *
 * A failed write or fdatasync is never retried: the sync thread calls the
 * stop hook (default trine_fatal, which exits the process with code 70) before
 * completing anyone, so nothing from that batch is acknowledged.
 *
 * Ownership: record payloads passed in are copied before wal_append/wal_submit
 * return; payloads handed to callbacks are borrowed and valid only during the
 * callback. struct wal is freed by wal_close.
 */
#ifndef TRINE_WAL_WAL_H
#define TRINE_WAL_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/hist.h"
#include "base/status.h"
#include "wal/fs.h"

/* Record types. The WAL interprets only what is said here; payloads are opaque. */
enum wal_type {
    WAL_ENTRY = 1,     /* a Raft log entry (index, term); an ENTRY at i also discards
                          the partition's entries >= i written before it */
    WAL_HARDSTATE = 2, /* term (+ vote etc. in the payload); the latest one per
                          partition is kept alive across compaction */
    WAL_TRUNCATE = 3,  /* discard the partition's entries with index >= index */
    WAL_SNAPSHOT = 4,  /* snapshot mark (index, term, payload); latest kept alive */
};
#define WAL_TYPE_MAX 4

struct wal_record {
    uint32_t partition;
    uint8_t type; /* enum wal_type */
    uint64_t term;
    uint64_t index;
    const void *payload; /* borrowed */
    uint32_t len;
};

/* Replay: return 0 to go on, a negative status to make wal_open fail with it. */
typedef int (*wal_replay_fn)(void *ctx, const struct wal_record *rec);
/* Completion of wal_submit: status 0 = durable; -TRINE_EFSYNC when the log failed
 * (only seen when the stop hook returns, i.e. in tests); -TRINE_ECLOSED never. */
typedef void (*wal_done_fn)(void *ctx, int status);
/* wal_read: return 0 to go on, non-zero to stop early. */
typedef int (*wal_read_fn)(void *ctx, const struct wal_record *rec);
/* Called once with a message naming the file when a write/fsync fails. The
 * default calls trine_fatal("wal", ...) and does not return. A hook that returns
 * (tests) leaves the log failed: that batch and all later requests complete with
 * -TRINE_EFSYNC. */
typedef void (*wal_stop_fn)(void *ctx, const char *msg);
/* One group commit, reported on the sync thread after its write (and fdatasync)
 * returned, before its submissions complete: for metrics. Must be cheap, must
 * not block and must not call into the WAL. */
struct wal_batch_info {
    uint64_t records;  /* records written (re-appended ones included) */
    uint64_t bytes;    /* bytes written, headers included */
    bool synced;       /* an fdatasync was issued (false with sync_off) */
    uint64_t fsync_ns; /* its duration */
};
typedef void (*wal_batch_fn)(void *ctx, const struct wal_batch_info *info);

enum wal_replay_mode {
    WAL_REPLAY_LIVE = 0, /* every valid record in log order, except ENTRY records that a
                            later TRUNCATE or overwriting ENTRY discarded */
    WAL_REPLAY_ALL = 1,  /* every valid record in log order */
};

struct wal_options {
    const char *dir;             /* created if missing (not its parents) */
    const struct wal_fs *fs;     /* NULL: wal_fs_posix() */
    uint64_t segment_bytes;      /* roll size; 0: 64 MiB (a single huge batch may exceed it) */
    uint32_t batch_bytes_max;    /* bytes per write+fdatasync; 0: 4 MiB */
    uint32_t batch_records_max;  /* records per write+fdatasync; 0: 16384 */
    uint64_t queue_bytes_max;    /* queued, not yet taken; 0: 64 MiB */
    uint32_t payload_bytes_max;  /* per record, checked on append; 0: 16 MiB */
    bool sync_off;               /* no fdatasync at all: tests and benchmarks ONLY */
    bool no_preallocate;         /* don't reserve each segment's segment_bytes on disk up
                                    front (default: reserve, see segment.c) */
    bool repair;                 /* cut the log at mid-log corruption instead of failing */
    enum wal_replay_mode replay; /* which records replay_fn sees */
    wal_replay_fn replay_fn;     /* may be NULL */
    void *replay_ctx;
    wal_stop_fn stop; /* NULL: trine_fatal */
    void *stop_ctx;
    wal_batch_fn on_batch; /* NULL: none */
    void *on_batch_ctx;
};

/* What wal_open found; filled even when it fails. */
struct wal_recovery {
    uint32_t segments;    /* segment files found */
    uint64_t records;     /* valid records found */
    uint64_t replayed;    /* records handed to replay_fn */
    uint64_t torn_bytes;  /* torn tail bytes truncated (zeros after them not counted:
                             preallocated space, see recover.c) */
    uint64_t cut_bytes;   /* bytes removed by repair */
    uint64_t cut_records; /* self-consistent records inside what repair removed */
    bool corrupt;         /* mid-log corruption seen (open failed unless repair) */
    char bad_file[256];   /* where the torn tail or corruption starts ("" if none) */
    uint64_t bad_offset;  /* byte offset in bad_file */
};

struct wal_stats {
    uint64_t appends; /* accepted wal_append + wal_submit calls */
    uint64_t records; /* records written */
    uint64_t bytes;   /* bytes written, headers included */
    uint64_t batches; /* pwritev calls (one per batch) */
    uint64_t fsyncs;  /* fdatasync calls on segments */
    uint64_t fsync_ns_total;
    uint64_t segments;         /* segment files now */
    uint64_t segments_created; /* since open */
    uint64_t segments_deleted; /* since open */
    uint64_t reappended;       /* HARDSTATE/SNAPSHOT records re-appended by compaction */
    uint64_t queue_bytes;      /* queued now */
    struct hist fsync_us;      /* fdatasync latency, microseconds */
    struct hist batch_records; /* records per batch */
    struct hist batch_bytes;   /* bytes per batch */
};

struct wal;

/* Opens (or creates) the log in opts->dir, runs recovery and replay, starts the
 * sync thread. On failure returns -TRINE_E* with detail in err (may be NULL);
 * mid-log corruption gives -TRINE_ECORRUPT naming the file and offset. report
 * (may be NULL) is filled in both cases. */
int wal_open(const struct wal_options *opts, struct wal **out, struct wal_recovery *report,
             struct trine_err *err);

/* Completes everything queued (callbacks run), stops the thread, frees w. */
void wal_close(struct wal *w);

/* Appends n records (n >= 1) as one unit and returns once an fdatasync covering
 * them has returned. -TRINE_EINVALID (bad type, index 0 ENTRY, payload too big),
 * -TRINE_ECLOSED, -TRINE_EFSYNC (log failed), -TRINE_ENOMEM. Blocks while the
 * queue is over queue_bytes_max. Must not be called from a WAL callback. */
int wal_append(struct wal *w, const struct wal_record *recs, size_t n);

/* Queues n records; cb(ctx, status) runs on the sync thread after the covering
 * fdatasync. Returns 0 (cb will run exactly once) or an error (cb will not run):
 * as wal_append, plus -TRINE_EBUSY when the queue is full (never blocks). */
int wal_submit(struct wal *w, const struct wal_record *recs, size_t n, wal_done_fn cb, void *ctx);

/* Returns after everything submitted before it is durable and any compaction
 * requested before it (wal_release) is done. (Re-appending for a compaction can
 * roll the log and make the old active segment deletable: the next flush
 * deletes it.) Not from a WAL callback. */
int wal_flush(struct wal *w);

/* Calls fn for each live ENTRY of partition with lo <= index <= hi, in index
 * order, from durable data. Indexes the log no longer holds are simply absent
 * (the caller falls back to a snapshot). Returns 0, or -TRINE_ECORRUPT /
 * -TRINE_EIO / -TRINE_ENOMEM with detail in err (may be NULL). */
int wal_read(struct wal *w, uint32_t partition, uint64_t lo, uint64_t hi, wal_read_fn fn, void *ctx,
             struct trine_err *err);

/* Entries of partition with index <= index are no longer needed (leveldb is
 * durable past them). Segments whose records are all released are deleted by
 * the sync thread, oldest first, after re-appending any latest HARDSTATE or
 * SNAPSHOT they hold. Releases are not persisted: after wal_open nothing is
 * released until the caller says so again. */
void wal_release(struct wal *w, uint32_t partition, uint64_t index);

/* The node no longer hosts partition: every record of it indexed so far counts
 * as released and its latest HARDSTATE/SNAPSHOT are no longer kept alive. If
 * the partition is hosted again later, its new records are handled as usual. */
void wal_forget(struct wal *w, uint32_t partition);

void wal_stats(struct wal *w, struct wal_stats *out);

#endif
