/*
 * store.h - Trine's state machine: every partition replica hosted by a node,
 * kept in ONE leveldb database (the only user of <leveldb/c.h>).
 *
 * The store knows nothing about msgpack or Raft. The replica layer decodes
 * committed Raft entries into struct store_op and hands them over in batches;
 * the store applies them deterministically, so every replica that applies
 * the same entries holds the same state (checked with store_content_hash).
 *
 * Durability: leveldb is written with sync OFF; the WAL is the durable record.
 * Each store_apply() writes the data AND the partition's applied index/term in
 * one leveldb WriteBatch, so after any crash the applied index matches the
 * data and the caller replays its WAL from store_applied() + 1. store_sync()
 * makes everything applied so far durable; call it before deleting WAL
 * segments (DESIGN.md section 6).
 *
 * Byte layout of every leveldb key and value: see the header comment of
 * store_int.h and docs/formats.md ("Store (leveldb) layout").
 *
 * Threads: a struct store is owned by one thread (the apply loop); every
 * function below must be called from it, except that a struct store_snapshot
 * may be read (next/close) on another thread while the owner keeps applying.
 * Close every snapshot before store_close().
 *
 * Ownership: the store never keeps pointers into caller memory after a call
 * returns. Pointers it hands out are borrowed: store_get()'s value until the
 * next store_get()/store_close(), callback arguments until the callback
 * returns. Handles (store, snapshot, install) are freed by their own
 * close/finish/abort.
 */
#ifndef TRINE_STORE_STORE_H
#define TRINE_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/status.h"

/* Hard limits of the store itself; the server enforces smaller, configurable
 * ones (DESIGN.md: keys 4 KiB, values 1 MiB by default). An op beyond these is
 * answered with -TRINE_ETOO_LARGE and changes nothing. */
#define STORE_KEY_MAX        ((size_t)64 * 1024 - 1)
#define STORE_VALUE_MAX      ((size_t)64 * 1024 * 1024)
#define STORE_PARTITIONS_MAX 65536u
/* Results remembered per client for dedupe (pipelining depth per client id). */
#define STORE_DEDUPE_PER_CLIENT 8

struct store;

struct store_options {
    size_t write_buffer_bytes; /* leveldb memtable; 0 = 16 MiB */
    bool snappy;               /* compress blocks (leveldb's default; off here) */
    size_t block_cache_bytes;  /* leveldb LRU block cache; 0 = 64 MiB */
    int bloom_bits_per_key;    /* leveldb bloom filter; 0 = 10, < 0 = none */
    int max_open_files;        /* 0 = 1000 */
    /* In-memory caches of per-key metadata and per-client dedupe records, so
     * most applies need no leveldb read. Slots, rounded up to a power of two;
     * 0 = defaults (524288 and 16384); SIZE_MAX disables. */
    size_t meta_cache_entries;
    size_t client_cache_entries;
    /* Cap on the per-partition key-presence filters (about 5-8 bytes per
     * stored key) that let applies of new keys skip the leveldb read; a
     * partition over the cap does without. 0 = 64 MiB; SIZE_MAX disables. */
    size_t key_filter_bytes;
    /* Dedupe window in revisions (log indexes): a client's entry is forgotten
     * once no write of it was applied for this many revisions. It changes
     * which retries are recognised, so it MUST be the same on every replica
     * (a cluster setting, not a per-node flag). 0 = 1048576. */
    uint64_t dedupe_window;
};

/* Opens (creating if missing) the store in directory `dir`. opt may be NULL
 * (defaults). Cleans up any partition generation left by an interrupted
 * install or drop. On failure *out is NULL and err (may be NULL) says why. */
int store_open(const char *dir, const struct store_options *opt, struct store **out,
               struct trine_err *err);
/* Frees the store. Any install still in progress is dropped as a crash would
 * drop it (its data is removed at the next open); its handle becomes invalid. */
void store_close(struct store *s);
/* Detail of the last failure of a call on s. */
const struct trine_err *store_err(const struct store *s);

/* Applied index and the Raft term of that entry; (0, 0) for a partition that
 * never applied anything. */
int store_applied(struct store *s, uint32_t partition, uint64_t *index, uint64_t *term);
/* Lists partitions with state (applied index > 0), ascending, at most max. */
int store_partitions(struct store *s, uint32_t *ids, size_t max, size_t *n);
/* Makes everything applied so far durable: forces leveldb's memtable to a
 * synced table file (a synced log write alone would not cover an older,
 * unsynced leveldb log). Costs one memtable flush: call it rarely, before WAL
 * segments are deleted. Blocks for the flush (tens to hundreds of ms). */
int store_sync(struct store *s);
/* Removes a partition's state entirely (durably); store_applied() is then 0. */
int store_drop(struct store *s, uint32_t partition);

/* --- apply ----------------------------------------------------------------- */

enum store_op_type {
    STORE_OP_NOOP = 0,
    STORE_OP_PUT,           /* create or overwrite */
    STORE_OP_DELETE,        /* remove; -TRINE_ENOT_FOUND if it did not exist */
    STORE_OP_CAS,           /* put if the key's version == expected_version (0 = absent) */
    STORE_OP_PUT_IF_ABSENT, /* CAS with expected_version 0 */
    STORE_OP_EXPIRE,        /* TTL delete: only if mod_revision == expected_mod_revision */
    STORE_OP__COUNT
};

struct store_op {
    uint64_t index; /* Raft log index; becomes the revision. Increasing within a batch */
    uint64_t term;  /* Raft term of the entry; recorded with the applied index and
                       carried by snapshots, so it must be filled in */
    enum store_op_type type;
    const uint8_t *key; /* borrowed for the call; NULL/0 for NOOP */
    size_t key_len;
    const uint8_t *value; /* PUT/CAS/PUT_IF_ABSENT */
    size_t value_len;
    uint64_t expected_version;      /* CAS */
    uint64_t expected_mod_revision; /* EXPIRE */
    /* Absolute expiry stamped by the primary; 0 = none. Writing a key without
     * one clears an earlier TTL (like Redis SET). */
    uint64_t expire_at_ms;
    /* The primary's wall clock when it proposed the entry. Apply treats a key
     * whose expire_at_ms <= now_ms as absent (a new write restarts it at
     * version 1; CAS sees version 0), so apply never reads a local clock and
     * every replica decides the same. 0 = every stored key counts as live. */
    uint64_t now_ms;
    /* Dedupe identity of a client write; client_id == 0 or seq == 0: none. */
    uint64_t client_id;
    uint64_t seq;
};

#define STORE_RESULT_SKIPPED   1u /* index <= applied index: ignored (replay) */
#define STORE_RESULT_DUPLICATE 2u /* (client_id, seq) seen: first result returned */

struct store_result {
    /* 0; -TRINE_ECAS_FAILED (CAS/PUT_IF_ABSENT version mismatch, EXPIRE with a
     * stale mod_revision); -TRINE_ENOT_FOUND (DELETE/EXPIRE of an absent key;
     * nothing changes); -TRINE_ETOO_LARGE / -TRINE_EBAD_REQUEST (invalid op,
     * nothing changes); -TRINE_ESTALE (a client retry older than every result
     * the dedupe table still holds for it: its outcome is unknown, it is not
     * applied). Every op except a skipped one consumes its index. */
    int status;
    uint32_t flags;    /* STORE_RESULT_* */
    uint64_t revision; /* op.index (for a duplicate: the first application's) */
    /* Version after the op: new version for a successful write, 0 after a
     * delete, the key's current version (0 = absent) for a failed CAS/EXPIRE. */
    uint64_t version;
};

/* Applies ops (n >= 1, all for one partition) in one leveldb WriteBatch together
 * with the new applied index and term. results[i] answers ops[i]. On error
 * (-TRINE_EIO, -TRINE_ECORRUPT, -TRINE_ENOMEM) nothing of the batch is applied;
 * the store should then be treated as failed. */
int store_apply(struct store *s, uint32_t partition, const struct store_op *ops, size_t n,
                struct store_result *results);

/* Deferred writes. With store_set_deferred(s, true), store_apply() leaves its
 * WriteBatch pending, so the applies of many partitions in one replica round
 * reach leveldb as ONE write (one log record, one write syscall, one writer
 * queue pass) at store_flush() instead of one per partition. Results and the
 * in-memory state (applied index, caches) are final when store_apply()
 * returns. Everything else that looks at stored state flushes first: a read,
 * scan or expiry scan of a partition in the batch, a second apply of such a
 * partition, snapshots, hashes, installs, drops, sync and close. A failed
 * flush (or an apply that fails while others are pending) fails the store for
 * good: the caller must stop; the WAL replays the entries after a restart, as
 * leveldb writes are unsynced anyway. */
void store_set_deferred(struct store *s, bool on);
int store_flush(struct store *s);

/* --- reads ------------------------------------------------------------------- */

struct store_kv {
    const uint8_t *key; /* borrowed, see the header comment */
    size_t key_len;
    const uint8_t *value; /* borrowed */
    size_t value_len;
    uint64_t version; /* 1 on create, +1 per update, restarts after delete/expiry */
    uint64_t create_revision;
    uint64_t mod_revision;
    uint64_t expire_at_ms; /* 0 = none */
};

/* Reads key. A key whose expire_at_ms <= now_ms reads as -TRINE_ENOT_FOUND but
 * stays stored until an EXPIRE op removes it. out->value is valid until the
 * next store_get() or store_close(). */
int store_get(struct store *s, uint32_t partition, const uint8_t *key, size_t key_len,
              uint64_t now_ms, struct store_kv *out);

/* Callbacks return 0 to continue, 1 to stop, or a negative status to abort
 * (returned by the caller of the iteration). */
typedef int (*store_scan_fn)(void *arg, const struct store_kv *kv);
/* Calls fn for up to limit (>= 1) live keys with the given prefix (may be
 * empty), in key order, starting strictly after start_after (NULL = from the
 * start of the prefix). Expired keys are skipped. */
int store_scan(struct store *s, uint32_t partition, const uint8_t *prefix, size_t prefix_len,
               const uint8_t *start_after, size_t start_after_len, size_t limit, uint64_t now_ms,
               store_scan_fn fn, void *arg);

typedef int (*store_expired_fn)(void *arg, const uint8_t *key, size_t key_len,
                                uint64_t mod_revision, uint64_t expire_at_ms);
/* Calls fn for up to max keys with expire_at_ms <= now_ms, oldest expiry first
 * (from an expiry index, not a scan), so the primary can propose
 * EXPIRE(key, mod_revision) ops. */
int store_expired(struct store *s, uint32_t partition, uint64_t now_ms, size_t max,
                  store_expired_fn fn, void *arg);

/* Deterministic 64-bit hash of a partition's replicated content (keys, values,
 * metadata, live dedupe entries; not the generation or cache state) and the
 * applied index it covers. Equal applied index => equal hash on every replica. */
int store_content_hash(struct store *s, uint32_t partition, uint64_t *hash,
                       uint64_t *applied_index);

/* --- snapshots --------------------------------------------------------------- */

struct store_snapshot;

/* Opens a consistent stream of one partition as of now (a leveldb snapshot):
 * its applied index and term, every record, and a CRC-32C over the stream. */
int store_snapshot_open(struct store *s, uint32_t partition, struct store_snapshot **out);
void store_snapshot_info(const struct store_snapshot *snap, uint64_t *applied_index,
                         uint64_t *applied_term);
/* Replaces chunk's contents with the next 1..bytes_max bytes of the stream
 * (chunk boundaries are arbitrary; records may span chunks). *last is set when
 * this chunk ends the stream; after that chunk comes back empty. */
int store_snapshot_next(struct store_snapshot *snap, struct buf *chunk, size_t bytes_max,
                        bool *last);
/* Detail of the snapshot's last failure. */
const struct trine_err *store_snapshot_err(const struct store_snapshot *snap);
void store_snapshot_close(struct store_snapshot *snap);

struct store_install;

/* Starts replacing a partition with a snapshot stream. The new state is built
 * in a fresh generation of the partition's key space, invisible until
 * store_install_finish() flips generation + applied index in one synced
 * batch; a crash at any point leaves the old state or the new one, never a
 * mix. -TRINE_EBUSY if an install of that partition is already running. */
int store_install_begin(struct store *s, uint32_t partition, struct store_install **out);
/* Feeds the next bytes of the stream (any chunking). A malformed stream gives
 * -TRINE_ECORRUPT; the install is then dead (finish/abort it), old state intact. */
int store_install_chunk(struct store_install *in, const uint8_t *data, size_t len);
/* Verifies the stream (complete, CRC-32C) and makes it the partition's state,
 * durably. Frees in whatever the result; on error the old state stays. */
int store_install_finish(struct store_install *in, uint64_t *applied_index, uint64_t *applied_term);
/* Drops the install; the old state stays. Frees in. */
void store_install_abort(struct store_install *in);

/* --- introspection ----------------------------------------------------------- */

struct store_stats {
    uint64_t applied_ops;
    uint64_t batches; /* store_apply calls that applied something */
    uint64_t writes;  /* leveldb writes for them (fewer when deferred) */
    uint64_t duplicates;
    uint64_t cache_hits;   /* metadata/dedupe lookups answered by a cache */
    uint64_t filter_skips; /* new keys proven absent by the key filter */
    uint64_t leveldb_reads;
};
void store_stats(const struct store *s, struct store_stats *out);

/* leveldb's own figures, read from its properties ("leveldb.num-files-at-level<N>",
 * "leveldb.stats", "leveldb.approximate-memory-usage"). leveldb prints the
 * per-level sizes and compaction figures of "leveldb.stats" rounded to whole MiB
 * and whole seconds; they are passed on at that resolution. */
#define STORE_LDB_LEVELS 7
struct store_ldb_stats {
    uint64_t files[STORE_LDB_LEVELS];              /* table files per level */
    uint64_t level_bytes[STORE_LDB_LEVELS];        /* bytes per level (1 MiB resolution) */
    double compaction_seconds[STORE_LDB_LEVELS];   /* time compacting into the level (1 s) */
    uint64_t compaction_read[STORE_LDB_LEVELS];    /* bytes read by those compactions (1 MiB) */
    uint64_t compaction_written[STORE_LDB_LEVELS]; /* bytes written by them (1 MiB) */
    uint64_t memory_bytes; /* memtables and block cache in use (approximate-memory-usage) */
};
/* Fills *out (fields leveldb did not answer stay 0). Takes leveldb's mutex briefly;
 * meant for a metrics scrape, not a hot path. */
void store_ldb_stats(struct store *s, struct store_ldb_stats *out);

#endif
