/*
 * wal_int.h - what the wal source files share; not for users of the module.
 *
 * Locks, in the order they may be nested: w->mu (request queue, flags) is never
 * held while taking idx_mu; w->idx_mu (segment list, per-segment index,
 * per-partition state) is never held during file I/O except in wal_open/close;
 * w->stats_mu is a leaf. The sync thread is the only writer of segment files
 * after wal_open returns.
 */
#ifndef TRINE_WAL_INT_H
#define TRINE_WAL_INT_H

#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "wal/wal.h"

#define WAL_SEG_HDR_BYTES      40
#define WAL_REC_HDR_BYTES      40
#define WAL_VERSION            1
#define WAL_BATCH_FIRST        0x80000000u /* batch word: first record of its batch */
#define WAL_BATCH_MASK         0x7fffffffu /* batch word: batch number, wraps */
#define WAL_PAYLOAD_FORMAT_MAX (1u << 30)  /* recovery rejects longer records */
#define WAL_MARK_EVERY         64          /* sparse offset mark per N entries */
#define WAL_PATH_MAX           4096
#define WAL_IOV_MAX            1024 /* requests per batch (one iovec each) */
#define WAL_READ_CHUNK         (256u << 10)

/* ---- record.c: one record's bytes ---- */

struct wal_rechdr {
    uint32_t crc;
    uint32_t prev_crc;
    uint32_t batch; /* number only, without the first flag */
    bool first;
    uint8_t type;
    uint32_t len;
    uint32_t partition;
    uint64_t term;
    uint64_t index;
};

static inline uint64_t wal_rec_bytes(uint32_t len)
{
    return WAL_REC_HDR_BYTES + (uint64_t)len;
}
static inline uint32_t wal_batch_next(uint32_t b)
{
    return (b + 1) & WAL_BATCH_MASK;
}
bool wal_type_valid(uint8_t type);
/* Writes everything but the chain fields; bytes 0..3 hold the partial CRC until sealed. */
void wal_rec_encode(uint8_t *out, const struct wal_record *r, uint32_t salt);
/* Fills prev_crc and the batch word, finishes the CRC; returns the record's CRC. */
uint32_t wal_rec_seal(uint8_t *rec, uint32_t prev_crc, uint32_t batch, bool first);
/* Decodes the header at p. avail = bytes from p to the end of the file. Returns
 * 0 if the header is well-formed and the record fits, else -TRINE_ECORRUPT with
 * the reason in *why. Does not check the CRC. */
int wal_rec_decode(const uint8_t *p, uint64_t avail, struct wal_rechdr *h, const char **why);
/* CRC of a decoded record whose wal_rec_bytes(h->len) bytes are at rec. */
bool wal_rec_crc_ok(const uint8_t *rec, const struct wal_rechdr *h, uint32_t salt);

/* ---- segment.c: segment files ---- */

struct wal_seghdr {
    uint64_t seq;
    uint32_t salt;
    uint32_t start_crc;   /* prev_crc of the segment's first record */
    uint32_t start_batch; /* batch number of the record before the segment */
};
void wal_seghdr_encode(uint8_t *out, const struct wal_seghdr *h);
int wal_seghdr_decode(const uint8_t *p, struct wal_seghdr *h, const char **why);
void wal_seg_name(char *out, size_t n, uint64_t seq);
bool wal_seg_parse_name(const char *name, uint64_t *seq);

/* Sequential reader over one file through wal_fs, for recovery and wal_read. */
struct wal_reader {
    const struct wal_fs *fs;
    int fd;
    uint64_t size;
    uint8_t *buf;
    size_t cap;
    uint64_t off; /* file offset of buf[0] */
    size_t len;
};
void wal_reader_init(struct wal_reader *r, const struct wal_fs *fs, int fd, uint64_t size);
/* Points *out at bytes [off, off + n). Returns 0, 1 if they run past r->size,
 * or -TRINE_EIO/-TRINE_ENOMEM. The pointer is valid until the next call. */
int wal_reader_get(struct wal_reader *r, uint64_t off, size_t n, const uint8_t **out);
void wal_reader_free(struct wal_reader *r);

/* ---- index.c: in-memory per-segment, per-partition index ---- */

struct wal_u32map { /* open addressing; u32 key -> u32 value */
    uint32_t *keys;
    uint32_t *vals; /* UINT32_MAX = empty slot */
    uint32_t cap;   /* power of two or 0 */
    uint32_t n;
};

struct wal_mark {
    uint64_t index;
    uint64_t off;
};

struct wal_segpart { /* one partition's ENTRY records in one segment */
    uint32_t partition;
    uint32_t entries;
    uint64_t entry_min, entry_max; /* over all ENTRY records, dead ones too */
    uint64_t live_max;             /* >= the highest live entry here (0: none) */
    uint64_t first_off, last_off;
    struct wal_mark *marks; /* every WAL_MARK_EVERY-th entry, in log order */
    uint32_t nmarks, cap_marks;
};

struct wal_seg {
    uint64_t seq;
    int fd;
    uint64_t size;         /* bytes indexed (durable, for the active one): the logical
                              size; the file may be longer (preallocated zeros) */
    uint32_t refs;         /* 1 for the list + 1 per wal_read in progress */
    bool unlinked;         /* gone from the list and the directory; closed at refs 0 */
    struct wal_u32map map; /* partition -> parts[] */
    struct wal_segpart *parts;
    uint32_t nparts, cap_parts;
};

struct wal_cut { /* entries of the partition >= index written before (seq, off) are dead */
    uint64_t seq, off, index;
};

struct wal_keep { /* the latest HARDSTATE or SNAPSHOT of a partition */
    bool present;
    uint64_t seq, term, index;
    struct buf payload;
};

struct wal_part {
    uint32_t partition;
    uint64_t last_index;             /* highest live entry, 0 = none */
    uint64_t released;               /* entries <= released are not needed */
    uint64_t forget_seq, forget_off; /* entries before this position: forgotten (0: never) */
    struct wal_cut *cuts;            /* log order */
    uint64_t *cut_min;               /* cut_min[i] = min index of cuts[i..] */
    uint32_t ncuts, cap_cuts;
    struct wal_keep keep[2]; /* [0] HARDSTATE, [1] SNAPSHOT */
};

struct wal_index {
    struct wal_seg **segs; /* by seq, oldest first; the last is the active one */
    size_t nsegs, cap_segs;
    struct wal_u32map pmap; /* partition -> parts[] */
    struct wal_part *parts;
    uint32_t nparts, cap_parts;
};

int wal_u32map_get(const struct wal_u32map *m, uint32_t key, uint32_t *val);
int wal_u32map_put(struct wal_u32map *m, uint32_t key, uint32_t val);
void wal_u32map_free(struct wal_u32map *m);

void wal_index_init(struct wal_index *x);
void wal_index_free(struct wal_index *x, const struct wal_fs *fs);
struct wal_seg *wal_seg_new(uint64_t seq, int fd);
int wal_index_push_seg(struct wal_index *x, struct wal_seg *s);
/* Drops one reference; the last one closes the fd and frees. */
void wal_seg_unref(struct wal_seg *s, const struct wal_fs *fs);
struct wal_part *wal_part_find(struct wal_index *x, uint32_t partition);
struct wal_part *wal_part_get(struct wal_index *x, uint32_t partition); /* NULL: no memory */
struct wal_segpart *wal_segpart_find(struct wal_seg *s, uint32_t partition);
/* Indexes one durable record of s at off. */
int wal_index_note(struct wal_index *x, struct wal_seg *s, uint64_t off, const struct wal_rechdr *h,
                   const uint8_t *payload);
/* Smallest cut index of p strictly after position (seq, off); UINT64_MAX if none. */
uint64_t wal_part_cut_after(const struct wal_part *p, uint64_t seq, uint64_t off);
static inline bool wal_entry_live(const struct wal_part *p, uint64_t seq, uint64_t off,
                                  uint64_t index)
{
    return p->ncuts == 0 || wal_part_cut_after(p, seq, off) > index;
}
/* Forgets cuts and keeps located in segments with seq <= upto (deleted). */
void wal_index_prune(struct wal_index *x, uint64_t upto);

/* ---- wal.c / commit.c / compact.c / recover.c ---- */

struct wal_req {
    struct wal_req *next;
    uint8_t *buf; /* encoded records, owned */
    size_t len;
    uint32_t nrecs;
    wal_done_fn cb; /* async completion, or */
    void *ctx;
    bool blocking; /* the caller waits on done (r lives on its stack) */
    sem_t done;    /* blocking completion: status set, then posted */
    int status;
};

struct wal {
    struct wal_options opt; /* copy; opt.dir points at dir */
    char *dir;
    const struct wal_fs *fs;
    uint32_t salt;

    pthread_mutex_t mu;
    pthread_cond_t cv_work; /* sync thread waits for requests */
    pthread_cond_t cv_room; /* wal_append waits for queue room */
    struct wal_req *head, *tail;
    uint64_t queue_bytes;
    uint64_t appends; /* accepted requests with records */
    bool closing, failed, compact_wanted, idle;
    pthread_t thread;
    bool thread_started;

    /* Sync thread only (wal_open before it starts). */
    struct wal_seg *active;
    uint32_t chain_crc; /* CRC of the last record written */
    uint32_t batch_no;  /* batch number of the last record written */
    struct iovec *iov;
    bool prealloc_warned; /* a failed preallocation was logged (once per open) */

    pthread_mutex_t idx_mu;
    struct wal_index idx;

    pthread_mutex_t stats_mu;
    struct wal_stats stats;
};

void wal_seg_path(const struct wal *w, uint64_t seq, const char *suffix, char *out, size_t n);
void *wal_sync_main(void *arg);
/* Creates segment seq (via a .tmp file + rename + directory fsync) and makes it
 * the active one. Returns 0 or a status with detail in msg. */
int wal_seg_create(struct wal *w, uint64_t seq, char *msg, size_t msgn);
/* Reserves segment_bytes for the segment file fd (path names it in the log)
 * unless opts.no_preallocate or the fs cannot. A failure is not fatal: logged
 * once per open, the segment then grows by its appends as without it. */
void wal_seg_preallocate(struct wal *w, int fd, const char *path);
/* Cuts a sealed segment's file to its records (s->size): its preallocated
 * zeros go; a failure only logs (recovery accepts a zero tail). */
void wal_seg_trim(struct wal *w, const struct wal_seg *s);
/* Stops the log: stop hook, failed flag. msg names the file. */
void wal_fail(struct wal *w, const char *msg);
void wal_req_complete(struct wal_req *r, int status);

/* compact.c */
/* Under idx_mu: how many of the oldest segments can go now, and the records
 * to re-append first (an allocated request, or NULL if none are needed). */
size_t wal_compact_plan(struct wal *w, struct wal_req **reappend);
/* Deletes the n oldest segments (sync thread, after the re-append is durable). */
void wal_compact_delete(struct wal *w, size_t n);
bool wal_compact_possible(struct wal *w); /* under idx_mu: cheap check of the oldest */

/* recover.c */
int wal_recover(struct wal *w, struct wal_recovery *rep, struct trine_err *err);
int wal_replay(struct wal *w, struct wal_recovery *rep, struct trine_err *err);

#endif
