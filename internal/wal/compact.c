/*
 * compact.c - deleting segments nobody needs.
 *
 * A segment may go when it is not the active one and, for every partition with
 * ENTRY records in it, each of those entries is released (index <= the
 * partition's wal_release mark), dead (discarded by a later cut: the index keeps
 * an upper bound of the highest live entry per segment, lowered by every cut)
 * or written before wal_forget. TRUNCATE
 * records never hold a segment: with only the oldest segments deleted, every
 * entry a deleted TRUNCATE discarded was in an even older, already deleted
 * segment. The latest HARDSTATE and SNAPSHOT of each partition must survive:
 * they are re-appended (same partition, type, term, index, payload) at the head
 * of the sync thread's next batch, and the segments are deleted only after that
 * batch's fdatasync returned.
 *
 * Only a prefix of the log is deleted (oldest first), so the sequence numbers of
 * the remaining files have no gaps and the first remaining segment's header
 * holds the chain's starting CRC: recovery can tell a compacted log from one
 * that lost a segment. A released segment behind an unreleased older one waits.
 *
 * Runs on the sync thread; wal_release only marks and pokes it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "wal/faultpoint.h"
#include "wal/wal_int.h"

/* Under idx_mu: whether every ENTRY in s is released or dead. */
static bool wal_seg_released(struct wal *w, const struct wal_seg *s)
{
    for (uint32_t i = 0; i < s->nparts; i++) {
        const struct wal_segpart *sp = &s->parts[i];
        const struct wal_part *p = wal_part_find(&w->idx, sp->partition);
        if (p == NULL) return false; /* cannot happen: noting an entry creates its part */
        /* live_max bounds every live entry here; dead ones are not needed. */
        if (sp->live_max <= p->released) continue;
        /* Written before wal_forget: an earlier incarnation of the partition. */
        if (s->seq < p->forget_seq || (s->seq == p->forget_seq && sp->last_off < p->forget_off))
            continue;
        return false;
    }
    return true;
}

bool wal_compact_possible(struct wal *w)
{
    return w->idx.nsegs >= 2 && wal_seg_released(w, w->idx.segs[0]);
}

size_t wal_compact_plan(struct wal *w, struct wal_req **reappend)
{
    struct wal_index *x = &w->idx;
    *reappend = NULL;
    size_t n = 0;
    while (n + 1 < x->nsegs && x->segs[n] != w->active && wal_seg_released(w, x->segs[n]))
        n++;
    if (n == 0) return 0;
    uint64_t upto = x->segs[n - 1]->seq;

    /* Latest HARDSTATE/SNAPSHOT records living in the doomed segments. */
    size_t count = 0;
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < x->nparts; i++)
        for (int k = 0; k < 2; k++) {
            const struct wal_keep *kp = &x->parts[i].keep[k];
            if (kp->present && kp->seq <= upto) {
                count++;
                bytes += wal_rec_bytes((uint32_t)kp->payload.len);
            }
        }
    if (count == 0) return n;
    struct wal_req *r = malloc(sizeof(*r) + (size_t)bytes);
    if (r == NULL) {
        log_warn("wal", "compaction postponed: out of memory");
        return 0;
    }
    *r =
        (struct wal_req){.buf = (uint8_t *)(r + 1), .len = (size_t)bytes, .nrecs = (uint32_t)count};
    uint8_t *p = r->buf;
    for (uint32_t i = 0; i < x->nparts; i++)
        for (int k = 0; k < 2; k++) {
            const struct wal_keep *kp = &x->parts[i].keep[k];
            if (!kp->present || kp->seq > upto) continue;
            struct wal_record rec = {.partition = x->parts[i].partition,
                                     .type = k ? WAL_SNAPSHOT : WAL_HARDSTATE,
                                     .term = kp->term,
                                     .index = kp->index,
                                     .payload = kp->payload.data,
                                     .len = (uint32_t)kp->payload.len};
            wal_rec_encode(p, &rec, w->salt);
            p += wal_rec_bytes(rec.len);
        }
    *reappend = r;
    pthread_mutex_lock(&w->stats_mu);
    w->stats.reappended += count;
    pthread_mutex_unlock(&w->stats_mu);
    return n;
}

/* Deletes up to 64 of the oldest segments; returns how many left the index. */
static size_t wal_compact_delete_some(struct wal *w, size_t n, size_t *deleted, bool *stop)
{
    struct wal_index *x = &w->idx;
    struct wal_seg *gone[64];
    if (n > sizeof(gone) / sizeof(gone[0])) n = sizeof(gone) / sizeof(gone[0]);

    pthread_mutex_lock(&w->idx_mu);
    /* The plan still holds: releases only grow, cuts only add, and the keeps
     * it re-appended now live in the active segment. */
    if (n >= x->nsegs) n = x->nsegs - 1;
    memcpy(gone, x->segs, n * sizeof(struct wal_seg *));
    memmove(x->segs, x->segs + n, (x->nsegs - n) * sizeof(struct wal_seg *));
    x->nsegs -= n;
    if (n > 0) wal_index_prune(x, gone[n - 1]->seq);
    pthread_mutex_unlock(&w->idx_mu);

    /* Oldest first, stopping at the first failure: the files left behind stay a
     * gap-free prefix that the next open simply replays again. */
    char path[WAL_PATH_MAX];
    for (size_t i = 0; i < n && !*stop; i++) {
        wal_seg_path(w, gone[i]->seq, "", path, sizeof(path));
        (void)TRINE_FAULT_POINT("wal.segment_delete");
        int rc = w->fs->unlink(w->fs->ctx, path);
        if (rc < 0 && rc != -ENOENT) {
            log_error("wal", "unlink %s: %s; left in place", path, strerror(-rc));
            *stop = true;
            break;
        }
        (*deleted)++;
    }
    pthread_mutex_lock(&w->idx_mu);
    for (size_t i = 0; i < n; i++) {
        gone[i]->unlinked = true;
        wal_seg_unref(gone[i], w->fs); /* closed now, or by the last wal_read using it */
    }
    pthread_mutex_unlock(&w->idx_mu);
    return n;
}

void wal_compact_delete(struct wal *w, size_t n)
{
    size_t deleted = 0, dropped = 0;
    bool stop = false;
    while (dropped < n) {
        size_t k = wal_compact_delete_some(w, n - dropped, &deleted, &stop);
        if (k == 0) break;
        dropped += k;
    }
    if (deleted > 0 && !w->opt.sync_off) {
        int rc = w->fs->sync_dir(w->fs->ctx, w->dir);
        if (rc < 0) {
            char msg[WAL_PATH_MAX + 96];
            snprintf(msg, sizeof(msg), "fsync of directory %s after deleting segments: %s", w->dir,
                     strerror(-rc));
            wal_fail(w, msg);
        }
    }
    pthread_mutex_lock(&w->stats_mu);
    w->stats.segments_deleted += dropped;
    w->stats.segments -= dropped;
    pthread_mutex_unlock(&w->stats_mu);
    if (deleted > 0) log_info("wal", "compaction deleted %zu segment(s) in %s", deleted, w->dir);
}
