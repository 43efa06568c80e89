/*
 * commit.c - group commit: the sync thread.
 *
 * Loop: take every queued request up to the batch bounds (bytes, records,
 * WAL_IOV_MAX requests) under w->mu, drop the lock, seal the records (chain CRC
 * + batch number, 8 bytes of CRC work per record: the appenders already CRC'ed
 * the rest), write them with one pwritev at the end of the active segment, run
 * one fdatasync, index them, then complete the requests in order (post the
 * blocked appenders, run the async callbacks). While it writes and syncs,
 * appenders keep queueing the next batch: no lock is held across I/O.
 *
 * Failure: a failed or short write, or a failed fdatasync, calls wal_fail (the
 * stop hook: trine_fatal by default) before anything is completed, and is never
 * retried. If a test hook returns, the batch and everything after it complete
 * with -TRINE_EFSYNC.
 *
 * Segment roll happens between batches, after the previous fdatasync: a batch
 * never spans two segments, and every non-last segment is complete on disk.
 * After the roll the old segment is truncated to its logical size, dropping
 * the preallocated zeros after its last record (segment.c). That truncate is
 * not synced and its failure is only logged: a crash or failure leaves a zero
 * tail in a non-last segment, which recovery accepts when the next segment's
 * header continues the chain from the last record before the zeros.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/clock.h"
#include "base/log.h"
#include "wal/faultpoint.h"
#include "wal/wal_int.h"

struct wal_batch {
    struct wal_req *head, *tail; /* taken requests, in order */
    uint64_t bytes;
    uint64_t records;
    int nreqs;
};

static void wal_batch_push(struct wal_batch *b, struct wal_req *r)
{
    r->next = NULL;
    if (b->tail)
        b->tail->next = r;
    else
        b->head = r;
    b->tail = r;
    b->bytes += r->len;
    b->records += r->nrecs;
    b->nreqs++;
}

/* Under w->mu: moves queued requests into b within the bounds (at least one). */
static void wal_batch_take(struct wal *w, struct wal_batch *b)
{
    while (w->head != NULL) {
        struct wal_req *r = w->head;
        if (b->nreqs > 0 &&
            (b->nreqs >= WAL_IOV_MAX - 1 || b->bytes + r->len > w->opt.batch_bytes_max ||
             b->records + r->nrecs > w->opt.batch_records_max))
            break;
        w->head = r->next;
        if (w->head == NULL) w->tail = NULL;
        w->queue_bytes -= r->len;
        wal_batch_push(b, r);
    }
}

static void wal_batch_complete(struct wal_batch *b, int status)
{
    for (struct wal_req *r = b->head, *next; r != NULL; r = next) {
        next = r->next; /* r may be gone after completion */
        wal_req_complete(r, status);
    }
}

/* Writes all of iov at off, looping over short writes. Returns 0 or -errno. */
static int wal_write_all(struct wal *w, int fd, struct iovec *iov, int n, uint64_t off)
{
    while (n > 0) {
        ssize_t k = w->fs->pwritev(w->fs->ctx, fd, iov, n, off);
        if (k < 0) return (int)k;
        if (k == 0) return -EIO;
        off += (uint64_t)k;
        while (n > 0 && (size_t)k >= iov->iov_len) {
            k -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + k;
            iov->iov_len -= (size_t)k;
        }
    }
    return 0;
}

/* Adds the batch's records, now durable at [base, ...) of the active segment,
 * to the index. Returns 0 or -TRINE_ENOMEM. */
static int wal_batch_index(struct wal *w, const struct wal_batch *b, uint64_t base)
{
    int rc = 0;
    pthread_mutex_lock(&w->idx_mu);
    uint64_t off = base;
    for (const struct wal_req *r = b->head; r != NULL && rc == 0; r = r->next) {
        const uint8_t *p = r->buf;
        for (uint32_t i = 0; i < r->nrecs && rc == 0; i++) {
            struct wal_rechdr h;
            const char *why;
            rc = wal_rec_decode(p, UINT64_MAX, &h, &why); /* our own bytes: cannot fail */
            if (rc == 0) rc = wal_index_note(&w->idx, w->active, off, &h, p + WAL_REC_HDR_BYTES);
            p += wal_rec_bytes(h.len);
            off += wal_rec_bytes(h.len);
        }
    }
    w->active->size = off;
    pthread_mutex_unlock(&w->idx_mu);
    return rc;
}

/* Writes and syncs one batch. Returns 0, or a negative status after wal_fail. */
static int wal_batch_write(struct wal *w, struct wal_batch *b)
{
    char msg[WAL_PATH_MAX + 160], path[WAL_PATH_MAX];
    if (b->records == 0) return 0; /* barriers only */
    if (w->active->size > WAL_SEG_HDR_BYTES && w->active->size + b->bytes > w->opt.segment_bytes) {
        struct wal_seg *old = w->active;
        int rc = wal_seg_create(w, w->active->seq + 1, msg, sizeof(msg));
        if (rc < 0) {
            wal_fail(w, msg);
            return rc;
        }
        /* Sealed: only its records stay (its last fdatasync was the previous batch's). */
        wal_seg_trim(w, old);
        /* The old active segment may be fully released already: look again
         * after this batch, even if no wal_release comes. */
        pthread_mutex_lock(&w->idx_mu);
        bool possible = wal_compact_possible(w);
        pthread_mutex_unlock(&w->idx_mu);
        if (possible) {
            pthread_mutex_lock(&w->mu);
            w->compact_wanted = true;
            pthread_mutex_unlock(&w->mu);
        }
    }

    uint32_t batch = wal_batch_next(w->batch_no);
    bool first = true;
    int n = 0;
    for (struct wal_req *r = b->head; r != NULL; r = r->next) {
        uint8_t *p = r->buf;
        for (uint32_t i = 0; i < r->nrecs; i++) {
            w->chain_crc = wal_rec_seal(p, w->chain_crc, batch, first);
            first = false;
            p += WAL_REC_HDR_BYTES + (size_t)get_u32be(p + 16);
        }
        if (r->len > 0) w->iov[n++] = (struct iovec){.iov_base = r->buf, .iov_len = r->len};
    }
    w->batch_no = batch;

    struct wal_seg *s = w->active;
    uint64_t base = s->size;
    wal_seg_path(w, s->seq, "", path, sizeof(path));
    (void)TRINE_FAULT_POINT("wal.append");
    int rc = wal_write_all(w, s->fd, w->iov, n, base);
    if (rc < 0) {
        snprintf(msg, sizeof(msg), "write of %llu bytes to %s at offset %llu failed: %s",
                 (unsigned long long)b->bytes, path, (unsigned long long)base, strerror(-rc));
        wal_fail(w, msg);
        return -TRINE_EFSYNC;
    }
    uint64_t t0 = clock_mono_ns(), t1 = t0;
    if (!w->opt.sync_off) {
        rc = TRINE_FAULT_POINT_FD("wal.fsync", s->fd, (long long)base)
                 ? -EIO
                 : w->fs->fdatasync(w->fs->ctx, s->fd);
        t1 = clock_mono_ns();
        if (rc < 0) {
            snprintf(msg, sizeof(msg), "fdatasync of %s failed: %s (not retried)", path,
                     strerror(-rc));
            wal_fail(w, msg);
            return -TRINE_EFSYNC;
        }
    }
    if (wal_batch_index(w, b, base) < 0) {
        snprintf(msg, sizeof(msg), "out of memory indexing %s", path);
        wal_fail(w, msg);
        return -TRINE_ENOMEM;
    }
    pthread_mutex_lock(&w->stats_mu);
    w->stats.records += b->records;
    w->stats.bytes += b->bytes;
    w->stats.batches++;
    hist_record(&w->stats.batch_records, b->records);
    hist_record(&w->stats.batch_bytes, b->bytes);
    if (!w->opt.sync_off) {
        w->stats.fsyncs++;
        w->stats.fsync_ns_total += t1 - t0;
        hist_record(&w->stats.fsync_us, (t1 - t0) / 1000);
    }
    pthread_mutex_unlock(&w->stats_mu);
    if (w->opt.on_batch) {
        struct wal_batch_info info = {.records = b->records,
                                      .bytes = b->bytes,
                                      .synced = !w->opt.sync_off,
                                      .fsync_ns = t1 - t0};
        w->opt.on_batch(w->opt.on_batch_ctx, &info);
    }
    return 0;
}

void *wal_sync_main(void *arg)
{
    struct wal *w = arg;
    for (;;) {
        struct wal_batch b = {0};
        pthread_mutex_lock(&w->mu);
        while (w->head == NULL && !w->compact_wanted && !w->closing) {
            w->idle = true;
            pthread_cond_wait(&w->cv_work, &w->mu);
            w->idle = false;
        }
        if (w->head == NULL && !w->compact_wanted) { /* closing, drained */
            pthread_mutex_unlock(&w->mu);
            break;
        }
        wal_batch_take(w, &b);
        bool compact = w->compact_wanted && !w->failed;
        bool failed = w->failed;
        w->compact_wanted = false;
        if (b.nreqs > 0) pthread_cond_broadcast(&w->cv_room);
        pthread_mutex_unlock(&w->mu);

        if (failed) {
            wal_batch_complete(&b, -TRINE_EFSYNC);
            continue;
        }
        size_t ndel = 0;
        if (compact) {
            struct wal_req *re = NULL;
            pthread_mutex_lock(&w->idx_mu);
            ndel = wal_compact_plan(w, &re);
            pthread_mutex_unlock(&w->idx_mu);
            if (re != NULL) { /* re-appended records go first in the batch */
                re->next = b.head;
                b.head = re;
                if (b.tail == NULL) b.tail = re;
                b.bytes += re->len;
                b.records += re->nrecs;
                b.nreqs++;
            }
        }
        if (wal_batch_write(w, &b) < 0) {
            wal_batch_complete(&b, -TRINE_EFSYNC);
            continue;
        }
        if (ndel > 0) wal_compact_delete(w, ndel);
        wal_batch_complete(&b, 0);
    }
    return NULL;
}
