/*
 * fsfault.h - a fault-injecting struct wal_fs for WAL tests (not product code).
 *
 * It wraps another wal_fs (the POSIX one by default) and remembers, per file,
 * what an fdatasync has made durable: the file's content when the fault fs
 * first opened it (assumed durable), plus every write/truncate covered by a
 * later fdatasync of that file. Model limits: creating, renaming and deleting
 * files are durable at once (the WAL fsyncs the directory right after them
 * anyway); writes are kept in order.
 *
 * Faults:
 *  - fsfault_crash: every tracked file is rewritten to its durable content plus
 *    the first keep_bytes of the unsynced writes (keep_bytes = 0 loses them all;
 *    a value inside a write tears it, keeping a prefix). Afterwards every call
 *    but close fails with EIO, as if the machine had died under the process.
 *  - fsfault_fail_write / fsfault_fail_fsync: the n-th pwritev / fdatasync from
 *    now fails with EIO (n = 1: the next one); writes then change nothing.
 *  - fsfault_fail_prealloc: the n-th preallocate from now fails with the given
 *    errno (ENOSPC, EIO, ...) and reserves nothing; fsfault_set_prealloc(false)
 *    makes the fs one without preallocate (NULL op). A preallocate that works
 *    is passed through (the POSIX fs: fallocate) and modelled as growing the
 *    file with zeros to the size it really got, durable at the next fdatasync.
 *  - fsfault_hold_sync: fdatasync blocks until released (or a crash), so a test
 *    can crash while a batch is written but not yet durable.
 *  - fsfault_flip_bit / fsfault_zero / fsfault_append_zeros: edit a file on disk
 *    directly (outside any fs), for corruption tests.
 *
 * Thread-safe. fsfault_free() must come after the WAL using it was closed.
 */
#ifndef TRINE_TESTS_FSFAULT_H
#define TRINE_TESTS_FSFAULT_H

#include <stdbool.h>
#include <stdint.h>

#include "wal/fs.h"

struct fsfault;

/* base NULL: wal_fs_posix(). Returns NULL only when out of memory. */
struct fsfault *fsfault_new(const struct wal_fs *base);
void fsfault_free(struct fsfault *f);
/* The interface to hand to wal_options.fs; valid until fsfault_free. */
const struct wal_fs *fsfault_fs(struct fsfault *f);

void fsfault_fail_write(struct fsfault *f, int nth);
void fsfault_fail_fsync(struct fsfault *f, int nth);
void fsfault_fail_prealloc(struct fsfault *f, int nth, int err);
/* Before handing the fs to a WAL: false = no preallocate op at all. */
void fsfault_set_prealloc(struct fsfault *f, bool supported);
void fsfault_hold_sync(struct fsfault *f, bool hold);
/* Waits up to timeout_ms until some fdatasync is blocked by hold; true if so. */
bool fsfault_wait_held(struct fsfault *f, int timeout_ms);
void fsfault_crash(struct fsfault *f, uint64_t keep_bytes);

/* Counters of calls seen (including failed ones). */
uint64_t fsfault_writes(struct fsfault *f);
uint64_t fsfault_fsyncs(struct fsfault *f);
uint64_t fsfault_preallocs(struct fsfault *f);
/* Bytes written but not yet covered by an fdatasync, over all files. */
uint64_t fsfault_unsynced_bytes(struct fsfault *f);

/* Direct edits of a file on disk. Return 0 or -1. */
int fsfault_flip_bit(const char *path, uint64_t off, int bit);
int fsfault_zero(const char *path, uint64_t off, uint64_t n);
int fsfault_append_zeros(const char *path, uint64_t n);
/* Size of a file, or -1. */
int64_t fsfault_file_size(const char *path);

#endif
