/*
 * store_int.h - internals shared by the store's source files; the byte layout
 * of everything the store keeps in leveldb. Not a public header.
 *
 * All integers are big-endian so leveldb's bytewise order is numeric order.
 * p = partition id (u32), g = generation (u32), key = the user's key bytes.
 *
 *   key                                   value
 *   'F'                                   format u32 = 1 (whole database)
 *   'M' p                                 partition meta (21 bytes):
 *                                           fmt u8 = 1 | g u32 | applied_index u64
 *                                           | applied_term u64
 *   'G' p g                               generation marker, 1 byte:
 *                                           1 = install in progress, 2 = garbage
 *   'D' p g key                           data record: fmt u8 = 1 | version u64
 *                                           | create_revision u64 | mod_revision u64
 *                                           | expire_at_ms u64 | value bytes
 *   'X' p g expire_at_ms(u64) key         expiry index: mod_revision u64
 *   'C' p g client_id(u64)                dedupe record: last_index u64 | lru_index
 *                                           u64 | n u8 | n x (seq u64 | status u8
 *                                           | revision u64 | version u64)
 *   'L' p g lru_index(u64) client_id(u64) dedupe GC index: empty value
 *
 * Invariants:
 * - 'M' p names the partition's current generation g; only ('D'|'X'|'C'|'L', p,
 *   g) is live. Any other generation of p is either being installed (marker 1)
 *   or garbage (marker 2) and is deleted by gen.c, also at open after a crash.
 *   Generations of a partition only grow, so a stale one is never reused.
 * - An 'X' entry exists exactly for each 'D' record with expire_at_ms != 0, and
 *   carries that record's mod_revision.
 * - Every 'C' record has exactly one 'L' entry, at its lru_index. lru_index
 *   trails last_index by at most dedupe_window/2 so a busy client costs one
 *   'C' write per batch, not an 'L' delete+put per op.
 * - A dedupe record is live while last_index + dedupe_window > the index being
 *   applied. Decisions use liveness, never the physical presence of a record,
 *   so the GC's timing (which depends on batch boundaries) cannot make replicas
 *   decide differently.
 * - status in a dedupe entry is the positive status code (0..255).
 */
#ifndef TRINE_STORE_STORE_INT_H
#define TRINE_STORE_STORE_INT_H

#include <leveldb/c.h>
#include <stdatomic.h>
#include <string.h>

#include "base/buf.h"
#include "base/status.h"
#include "store/store.h"

enum {
    STORE_TAG_FORMAT = 'F',
    STORE_TAG_META = 'M',
    STORE_TAG_GEN = 'G',
    STORE_TAG_DATA = 'D',
    STORE_TAG_EXPIRY = 'X',
    STORE_TAG_CLIENT = 'C',
    STORE_TAG_LRU = 'L',
};

#define STORE_FORMAT         1u
#define STORE_META_LEN       21u
#define STORE_REC_FMT        1u
#define STORE_REC_HDR        33u /* fmt + 4 x u64 */
#define STORE_PFX_LEN        9u  /* tag + partition + generation */
#define STORE_GEN_INSTALLING 1u
#define STORE_GEN_GARBAGE    2u

#define STORE_DD_ENTRY   25u /* seq u64 | status u8 | revision u64 | version u64 */
#define STORE_DD_HDR     17u /* last_index u64 | lru_index u64 | n u8 */
#define STORE_DD_REC_MAX (STORE_DD_HDR + STORE_DEDUPE_PER_CLIENT * STORE_DD_ENTRY)
/* Dedupe GC: at most this many 'L' entries examined per batch. */
#define STORE_DD_GC_STEPS 256u

/* Keys up to this long are cached inline; longer ones always read leveldb. */
#define STORE_CACHE_KEY_MAX 56u

/* Per-key metadata, the first STORE_REC_HDR bytes of a data record. */
struct store_meta {
    uint64_t version;
    uint64_t create_revision;
    uint64_t mod_revision;
    uint64_t expire_at_ms;
};

/* Key-presence filter of a partition's current generation (filter.c). */
struct store_filter {
    uint32_t *slots; /* fingerprints, 0 = empty */
    uint32_t mask;
    uint32_t n;
    bool complete;     /* every stored key is in: "not in" proves absence */
    bool disabled;     /* over the memory cap: never consulted until reset */
    struct buf cursor; /* build scan: next user key to read (empty: start) */
};

struct store_part {
    uint32_t id;
    uint32_t gen;
    uint64_t applied_index;
    uint64_t applied_term;
    /* In memory only: no dedupe GC pass is needed before this index (0: one
     * is, e.g. after open); dedupe_gc_new: the same for 'L' entries written by
     * the batch being built (UINT64_MAX: none). */
    uint64_t dedupe_gc_due;
    uint64_t dedupe_gc_new;
    struct store_install *install; /* in progress, or NULL */
    struct store_filter filter;
    uint64_t batch_epoch; /* == store.batch_epoch: applied into the pending batch */
};

/* Bounded set-associative cache of committed per-key state (cache.c). */
struct store_cache {
    uint8_t *mem;
    uint32_t *tags; /* per slot: bits 32..63 of the hash (0 = empty) */
    size_t mask;    /* sets - 1; mem == NULL: disabled */
    size_t slot_size;
    size_t val_max;
};

/* Per-batch overlay: state written by the batch being built, read before the
 * cache and leveldb so later ops of a batch see earlier ones (state.c). */
struct store_ov_ent {
    uint64_t hash;
    uint32_t key_off, key_len, val_off, val_len;
    uint8_t kind, present, dirty;
};
struct store_overlay {
    struct store_ov_ent *ents;
    uint32_t n, cap;
    uint64_t *slots; /* epoch << 32 | entry index */
    uint32_t nslots; /* power of two */
    uint32_t epoch;
    struct buf arena; /* keys and values of ents */
};

struct store {
    leveldb_t *db;
    leveldb_options_t *ldb_opts;
    leveldb_cache_t *ldb_cache;
    leveldb_filterpolicy_t *ldb_bloom;
    leveldb_readoptions_t *ro;
    leveldb_readoptions_t *ro_scan;  /* bulk scans: do not evict the block cache */
    leveldb_writeoptions_t *wo;      /* sync off: the WAL is the durable record */
    leveldb_writeoptions_t *wo_sync; /* generation flips, drops */
    leveldb_writebatch_t *wb;        /* the batch store_apply builds */
    struct store_options opt;
    struct store_part **parts; /* indexed by partition id, grown on demand */
    uint32_t nparts;
    struct store_cache meta_cache;   /* kind 'D': the record header */
    struct store_cache client_cache; /* kind 'C': the dedupe record */
    struct store_overlay ov;
    struct buf kbuf, kbuf2, vbuf; /* scratch for keys and values */
    struct buf hashes;            /* store_apply: state hash per op */
    size_t filter_bytes;          /* memory of every partition's filter */
    char *get_val;                /* leveldb-owned, borrowed by the last store_get */
    atomic_int snapshots_open;
    struct store_stats stats;
    /* The batch of applies waiting in wb (store_set_deferred): n_batch applies;
     * a partition is in it while its batch_epoch equals this one. */
    bool deferred;
    int failed; /* a deferred batch was lost: every later flush fails */
    uint32_t n_batch;
    uint64_t batch_epoch;
    struct trine_err err;
};

/* --- store.c ---------------------------------------------------------------- */

/* THE conversion point of leveldb's errptr convention: 0 if *errptr is NULL,
 * else records "<what>: <leveldb message>" in err (may be NULL), frees and
 * clears *errptr and returns the mapped status (IO, NOSPACE, CORRUPT, ...). */
int store_ldb_status(struct trine_err *err, char **errptr, const char *what);

/* store_part_get, then flush the deferred batch if it holds that partition:
 * for every read of a partition's state outside store_apply. */
int store_part_read(struct store *s, uint32_t id, struct store_part **out);
static inline bool store_in_batch(const struct store *s, const struct store_part *p)
{
    return s->n_batch > 0 && p->batch_epoch == s->batch_epoch;
}
/* Empties wb and starts a new batch epoch. */
void store_batch_reset(struct store *s);
/* Loads (once) the partition's in-memory state from its meta record. */
int store_part_get(struct store *s, uint32_t id, struct store_part **out);
void store_meta_encode(uint8_t out[STORE_META_LEN], uint32_t gen, uint64_t applied_index,
                       uint64_t applied_term);
int store_meta_decode(const uint8_t *p, size_t n, uint32_t *gen, uint64_t *applied_index,
                      uint64_t *applied_term);
/* Reads a key with s->ro. Returns 1 and a leveldb-owned *val (leveldb_free),
 * 0 if absent, or a negative status. */
int store_ldb_get(struct store *s, const uint8_t *key, size_t klen, char **val, size_t *vlen);

/* Key builders: reset b and write the full leveldb key. */
int store_key_part(struct buf *b, uint8_t tag, uint32_t part);
int store_key_gen(struct buf *b, uint8_t tag, uint32_t part, uint32_t gen);
int store_key_data(struct buf *b, uint32_t part, uint32_t gen, const uint8_t *key, size_t n);
/* True if leveldb key k (length n) starts with the n_pfx bytes of pfx. */
static inline bool store_has_prefix(const char *k, size_t n, const uint8_t *pfx, size_t n_pfx)
{
    return n >= n_pfx && memcmp(k, pfx, n_pfx) == 0;
}

/* --- record.c (data and dedupe record encodings) ---------------------------- */

void store_rec_encode_hdr(uint8_t out[STORE_REC_HDR], const struct store_meta *m);
/* Parses a data record; value points into p. -TRINE_ECORRUPT if malformed. */
int store_rec_decode(const uint8_t *p, size_t n, struct store_meta *m, const uint8_t **value,
                     size_t *value_len);

struct store_dd_entry {
    uint64_t seq;
    uint8_t status; /* positive code */
    uint64_t revision;
    uint64_t version;
};
struct store_dd_rec {
    uint64_t last_index;
    uint64_t lru_index;
    uint8_t n;
    struct store_dd_entry e[STORE_DEDUPE_PER_CLIENT];
};
/* Stored form (with lru_index); returns its length. */
size_t store_dd_encode(uint8_t out[STORE_DD_REC_MAX], const struct store_dd_rec *r);
int store_dd_decode(const uint8_t *p, size_t n, struct store_dd_rec *r);
/* Canonical form for snapshots and hashes: the stored form without
 * lru_index, which differs between replicas. */
size_t store_dd_encode_canon(uint8_t out[STORE_DD_REC_MAX], const struct store_dd_rec *r);
int store_dd_decode_canon(const uint8_t *p, size_t n, struct store_dd_rec *r);

/* --- hash.c ------------------------------------------------------------------ */

/* Fast 64-bit hash of bytes (not cryptographic). Stable across platforms. */
uint64_t store_hash64(uint64_t seed, const void *data, size_t n);
uint64_t store_state_hash(uint32_t part, uint32_t gen, uint8_t kind, const uint8_t *key,
                          size_t klen);

/* --- cache.c ----------------------------------------------------------------- */

int store_cache_init(struct store_cache *c, size_t entries, size_t val_max);
void store_cache_free(struct store_cache *c);
void store_cache_clear(struct store_cache *c);
/* 1 present (val/val_len filled), 0 known absent, -1 unknown. */
int store_cache_get(const struct store_cache *c, uint64_t h, uint32_t part, uint32_t gen,
                    uint8_t kind, const uint8_t *key, size_t klen, uint8_t *val, size_t *val_len);
/* Two-step prefetch for a batch: the tags of h's set, then (once those are
 * in) the slot whose tag matches. */
void store_cache_prefetch(const struct store_cache *c, uint64_t h);
void store_cache_prefetch_slot(const struct store_cache *c, uint64_t h);
void store_cache_put(struct store_cache *c, uint64_t h, uint32_t part, uint32_t gen, uint8_t kind,
                     const uint8_t *key, size_t klen, const uint8_t *val, size_t val_len,
                     bool present);

/* --- state.c: overlay -> cache -> leveldb ---------------------------------------- */

void store_ov_free(struct store_overlay *ov);
/* Current state of (kind, key) for the batch being built: 1 present (at most
 * val_max bytes copied to val: the record header for 'D', the whole record
 * for 'C'), 0 absent, or a negative status. h = store_state_hash() of it. */
int store_state_get(struct store *s, const struct store_part *p, uint8_t kind, const uint8_t *key,
                    size_t klen, uint64_t h, uint8_t *val, size_t val_max, size_t *val_len);
/* Records the batch's new state of (kind, key). dirty: also write it to
 * leveldb (put / delete) at store_state_flush(); otherwise the caller already
 * added the leveldb write to s->wb. */
int store_state_set(struct store *s, const struct store_part *p, uint8_t kind, const uint8_t *key,
                    size_t klen, const uint8_t *val, size_t vlen, bool present, bool dirty);
/* Adds the dirty entries' writes to s->wb. */
int store_state_flush(struct store *s, const struct store_part *p);
/* After the batch was written: moves the overlay into the caches. */
void store_state_commit(struct store *s, const struct store_part *p);
/* Forgets the overlay (batch abandoned). */
void store_state_reset(struct store *s);

/* --- filter.c ----------------------------------------------------------------- */

/* Advances the filter's build scan by a bounded step (called per apply). */
int store_filter_step(struct store *s, struct store_part *p);
/* Records that the key with state hash h is stored. */
void store_filter_add(struct store *s, struct store_part *p, uint64_t h);
/* True only if the key with state hash h is certainly not stored. */
bool store_filter_absent(const struct store_part *p, uint64_t h);
void store_filter_prefetch(const struct store_part *p, uint64_t h);
/* Frees the filter; it rebuilds from scratch (generation changed, close). */
void store_filter_reset(struct store *s, struct store_part *p);

/* --- ttl.c --------------------------------------------------------------------- */

int store_ttl_index_put(struct store *s, const struct store_part *p, const uint8_t *key,
                        size_t klen, uint64_t expire_at_ms, uint64_t mod_revision);
int store_ttl_index_del(struct store *s, const struct store_part *p, const uint8_t *key,
                        size_t klen, uint64_t expire_at_ms);
/* Appends the 'X' key of (exp, key) under generation gen to b (after reset). */
int store_key_expiry(struct buf *b, uint32_t part, uint32_t gen, uint64_t expire_at_ms,
                     const uint8_t *key, size_t klen);

/* --- dedupe.c ------------------------------------------------------------------ */

struct store_dd_ctx {
    struct store_dd_rec rec;
    bool phys; /* a record is stored (live or not) */
    bool active;
};
/* Returns 1 if the op must not be applied (r filled: duplicate or stale),
 * 0 to apply it, or a negative status. */
int store_dedupe_check(struct store *s, struct store_part *p, const struct store_op *op,
                       struct store_result *r, struct store_dd_ctx *ctx);
/* Remembers op's result (after store_dedupe_check returned 0). */
int store_dedupe_record(struct store *s, struct store_part *p, const struct store_op *op,
                        const struct store_result *r, struct store_dd_ctx *ctx);
/* Bounded GC of forgotten clients, at the end of a batch applied up to index.
 * *due: the next index at which a pass is needed for committed entries. */
int store_dedupe_gc(struct store *s, struct store_part *p, uint64_t index, uint64_t *due);
/* Key of client c's record / GC entry under generation gen. */
int store_key_client(struct buf *b, uint32_t part, uint32_t gen, uint64_t client_id);
int store_key_lru(struct buf *b, uint32_t part, uint32_t gen, uint64_t lru_index,
                  uint64_t client_id);

/* --- gen.c --------------------------------------------------------------------- */

/* Deletes every key of (part, gen) and then its 'G' marker. */
int store_gen_delete(struct store *s, uint32_t part, uint32_t gen);
/* At open: deletes generations left by interrupted installs and drops. */
int store_gen_recover(struct store *s);
/* Highest generation of part mentioned by its meta or a marker. */
int store_gen_max(struct store *s, const struct store_part *p, uint32_t *out);
/* Drops every cached entry (the caches cannot tell generations apart cheaply
 * after a flip, and flips are rare). */
void store_caches_clear(struct store *s);

/* --- install.c ----------------------------------------------------------------- */

/* Frees an install without cleaning up (store_close: as a crash would). */
void store_install_drop(struct store_install *in);

/* --- snapshot stream layout (snapshot.c, install.c) ---------------------------- *
 *
 *   header  (32): magic "TRNSNAP1" | format u32 = 1 | partition u32
 *                 | applied_index u64 | applied_term u64
 *   records     : tag u8 | key_len u32 | val_len u32 | key | val
 *                 'D': key = user key, val = data record (as stored)
 *                 'C': key = client_id u64, val = canonical dedupe record
 *                 (live entries only); 'D' records first, each kind in key order
 *   trailer (13): 'E' | record_count u64 | crc32c u32 of every byte before it
 */
#define STORE_SNAP_MAGIC   "TRNSNAP1"
#define STORE_SNAP_FORMAT  1u
#define STORE_SNAP_HDR_LEN 32u
#define STORE_SNAP_REC_HDR 9u
#define STORE_SNAP_TRAILER 13u
#define STORE_SNAP_TAG_END 'E'

#endif
