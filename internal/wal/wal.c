/*
 * wal.c - the public API: open/close, turning records into queued requests,
 * blocking and async appends, release marks and stats. The group commit itself
 * (the sync thread) is in commit.c, recovery in recover.c, compaction in
 * compact.c, reads in read.c. Byte layouts: segment.c and record.c.
 *
 * A request is one wal_append/wal_submit call: its records are encoded (and
 * CRC'ed, minus the chain) here, in the caller's thread, into one buffer that
 * the sync thread writes with a single iovec. The queue is bounded by
 * queue_bytes_max: wal_append waits for room, wal_submit answers BUSY.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "base/assert.h"
#include "base/clock.h"
#include "base/log.h"
#include "wal/wal_int.h"

#define WAL_KEEP_PAYLOAD_MAX (1u << 20) /* HARDSTATE/SNAPSHOT payloads are kept in memory */
#define WAL_SEGMENT_MIN      256

static const struct wal_options wal_defaults = {
    .segment_bytes = 64ull << 20,
    .batch_bytes_max = 4u << 20,
    .batch_records_max = 16384,
    .queue_bytes_max = 64ull << 20,
    .payload_bytes_max = 16u << 20,
};

static void wal_stop_default(void *ctx, const char *msg)
{
    (void)ctx;
    trine_fatal("wal", "%s", msg);
}

void wal_fail(struct wal *w, const char *msg)
{
    log_error("wal", "%s; the log is stopped, nothing in this batch is acknowledged", msg);
    w->opt.stop(w->opt.stop_ctx, msg);
    /* Only a test hook returns. Everything pending and later fails with FSYNC. */
    pthread_mutex_lock(&w->mu);
    w->failed = true;
    pthread_cond_broadcast(&w->cv_room);
    pthread_mutex_unlock(&w->mu);
}

void wal_req_complete(struct wal_req *r, int status)
{
    if (r->blocking) {
        /* The waiter owns r (on its stack): nothing may touch r after the post. */
        r->status = status;
        sem_post(&r->done);
        return;
    }
    if (r->cb != NULL) r->cb(r->ctx, status);
    free(r); /* async and internal requests are one allocation with their buffer */
}

/* Checks and sizes recs; *bytes = their encoded size. */
static int wal_check(const struct wal *w, const struct wal_record *recs, size_t n, uint64_t *bytes)
{
    if (recs == NULL || n == 0 || n > UINT32_MAX) return -TRINE_EINVALID;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        const struct wal_record *r = &recs[i];
        if (!wal_type_valid(r->type) || (r->len > 0 && r->payload == NULL) ||
            r->len > w->opt.payload_bytes_max)
            return -TRINE_EINVALID;
        if (r->type == WAL_ENTRY && r->index == 0) return -TRINE_EINVALID;
        if ((r->type == WAL_HARDSTATE || r->type == WAL_SNAPSHOT) && r->len > WAL_KEEP_PAYLOAD_MAX)
            return -TRINE_EINVALID;
        total += wal_rec_bytes(r->len);
    }
    if (total > SIZE_MAX / 2) return -TRINE_ETOO_LARGE;
    *bytes = total;
    return 0;
}

static void wal_encode_all(const struct wal *w, uint8_t *out, const struct wal_record *recs,
                           size_t n)
{
    for (size_t i = 0; i < n; i++) {
        wal_rec_encode(out, &recs[i], w->salt);
        out += wal_rec_bytes(recs[i].len);
    }
}

/* Queues r. blocking: wait for room; else BUSY when full. */
static int wal_enqueue(struct wal *w, struct wal_req *r, bool blocking)
{
    TRINE_ASSERT(!w->thread_started || !pthread_equal(pthread_self(), w->thread) || !blocking);
    pthread_mutex_lock(&w->mu);
    for (;;) {
        int rc = w->closing ? -TRINE_ECLOSED : w->failed ? -TRINE_EFSYNC : 0;
        if (rc != 0) {
            pthread_mutex_unlock(&w->mu);
            return rc;
        }
        /* One request bigger than the whole bound may go when the queue is empty. */
        if (w->queue_bytes == 0 || w->queue_bytes + r->len <= w->opt.queue_bytes_max) break;
        if (!blocking) {
            pthread_mutex_unlock(&w->mu);
            return -TRINE_EBUSY;
        }
        pthread_cond_wait(&w->cv_room, &w->mu);
    }
    r->next = NULL;
    if (w->tail)
        w->tail->next = r;
    else
        w->head = r;
    w->tail = r;
    w->queue_bytes += r->len;
    if (r->nrecs > 0) w->appends++;
    if (w->idle) pthread_cond_signal(&w->cv_work);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

static int wal_wait(struct wal *w, struct wal_req *r)
{
    r->blocking = true;
    sem_init(&r->done, 0, 0);
    int rc = wal_enqueue(w, r, true);
    if (rc == 0) {
        while (sem_wait(&r->done) != 0)
            TRINE_ASSERT(errno == EINTR);
        rc = r->status;
    }
    sem_destroy(&r->done);
    return rc;
}

int wal_append(struct wal *w, const struct wal_record *recs, size_t n)
{
    uint64_t bytes;
    int rc = wal_check(w, recs, n, &bytes);
    if (rc < 0) return rc;
    struct wal_req r = {.len = (size_t)bytes, .nrecs = (uint32_t)n};
    r.buf = malloc(r.len);
    if (r.buf == NULL) return -TRINE_ENOMEM;
    wal_encode_all(w, r.buf, recs, n);
    rc = wal_wait(w, &r);
    free(r.buf);
    return rc;
}

int wal_submit(struct wal *w, const struct wal_record *recs, size_t n, wal_done_fn cb, void *ctx)
{
    uint64_t bytes;
    int rc = wal_check(w, recs, n, &bytes);
    if (rc < 0) return rc;
    struct wal_req *r = malloc(sizeof(*r) + (size_t)bytes);
    if (r == NULL) return -TRINE_ENOMEM;
    *r = (struct wal_req){.buf = (uint8_t *)(r + 1),
                          .len = (size_t)bytes,
                          .nrecs = (uint32_t)n,
                          .cb = cb,
                          .ctx = ctx};
    wal_encode_all(w, r->buf, recs, n);
    rc = wal_enqueue(w, r, false);
    if (rc < 0) free(r);
    return rc;
}

int wal_flush(struct wal *w)
{
    struct wal_req r = {0};
    return wal_wait(w, &r);
}

/* Asks the sync thread to compact if the oldest segment may be deletable. */
static void wal_poke_compaction(struct wal *w, bool possible)
{
    if (!possible) return;
    pthread_mutex_lock(&w->mu);
    w->compact_wanted = true;
    if (w->idle) pthread_cond_signal(&w->cv_work);
    pthread_mutex_unlock(&w->mu);
}

void wal_release(struct wal *w, uint32_t partition, uint64_t index)
{
    pthread_mutex_lock(&w->idx_mu);
    struct wal_part *p = wal_part_get(&w->idx, partition);
    bool possible = false;
    if (p != NULL && index > p->released) {
        p->released = index;
        possible = wal_compact_possible(w);
    }
    pthread_mutex_unlock(&w->idx_mu);
    wal_poke_compaction(w, possible);
}

void wal_forget(struct wal *w, uint32_t partition)
{
    pthread_mutex_lock(&w->idx_mu);
    struct wal_part *p = wal_part_get(&w->idx, partition);
    bool possible = false;
    if (p != NULL && w->idx.nsegs > 0) {
        /* Everything indexed so far belongs to the old incarnation; a batch in
         * flight counts as new, which only keeps data longer. */
        struct wal_seg *last = w->idx.segs[w->idx.nsegs - 1];
        p->forget_seq = last->seq;
        p->forget_off = last->size;
        p->keep[0].present = p->keep[1].present = false;
        possible = wal_compact_possible(w);
    }
    pthread_mutex_unlock(&w->idx_mu);
    wal_poke_compaction(w, possible);
}

void wal_stats(struct wal *w, struct wal_stats *out)
{
    pthread_mutex_lock(&w->stats_mu);
    *out = w->stats;
    pthread_mutex_unlock(&w->stats_mu);
    pthread_mutex_lock(&w->mu);
    out->appends = w->appends;
    out->queue_bytes = w->queue_bytes;
    pthread_mutex_unlock(&w->mu);
}

/* ---- open / close ---- */

static void wal_free(struct wal *w)
{
    wal_index_free(&w->idx, w->fs);
    pthread_mutex_destroy(&w->mu);
    pthread_mutex_destroy(&w->idx_mu);
    pthread_mutex_destroy(&w->stats_mu);
    pthread_cond_destroy(&w->cv_work);
    pthread_cond_destroy(&w->cv_room);
    free(w->iov);
    free(w->dir);
    free(w);
}

static uint32_t wal_new_salt(void)
{
    uint32_t s = 0;
    if (getrandom(&s, sizeof(s), 0) != (ssize_t)sizeof(s))
        s = (uint32_t)(clock_mono_ns() ^ (clock_real_ms() << 20));
    return s;
}

/* The recovered active segment gets its preallocation now if it lacks it (a log
 * written without, a torn tail or repair cut it off), not only the next one. */
static void wal_prealloc_recovered(struct wal *w)
{
    uint64_t size = 0;
    if (w->fs->size(w->fs->ctx, w->active->fd, &size) < 0 || size >= w->opt.segment_bytes) return;
    char path[WAL_PATH_MAX];
    wal_seg_path(w, w->active->seq, "", path, sizeof(path));
    wal_seg_preallocate(w, w->active->fd, path);
}

int wal_open(const struct wal_options *opts, struct wal **out, struct wal_recovery *report,
             struct trine_err *err)
{
    struct wal_recovery scratch = {0};
    struct wal_recovery *rep = report ? report : &scratch;
    memset(rep, 0, sizeof(*rep));
    *out = NULL;
    if (opts == NULL || opts->dir == NULL || opts->dir[0] == '\0')
        return err_set(err, -TRINE_EINVALID, "wal_open: no directory");
    if (strlen(opts->dir) > WAL_PATH_MAX - 64)
        return err_set(err, -TRINE_EINVALID, "wal_open: directory path too long");
    if (opts->segment_bytes != 0 && opts->segment_bytes < WAL_SEGMENT_MIN)
        return err_set(err, -TRINE_EINVALID, "wal_open: segment_bytes below %d", WAL_SEGMENT_MIN);
    if (opts->payload_bytes_max > WAL_PAYLOAD_FORMAT_MAX) /* recovery would reject them */
        return err_set(err, -TRINE_EINVALID, "wal_open: payload_bytes_max above %u",
                       WAL_PAYLOAD_FORMAT_MAX);

    struct wal *w = calloc(1, sizeof(*w));
    if (w == NULL) return err_set(err, -TRINE_ENOMEM, "wal_open: out of memory");
    w->opt = *opts;
#define WAL_DEFAULT(f)                                                                             \
    if (w->opt.f == 0) w->opt.f = wal_defaults.f
    WAL_DEFAULT(segment_bytes);
    WAL_DEFAULT(batch_bytes_max);
    WAL_DEFAULT(batch_records_max);
    WAL_DEFAULT(queue_bytes_max);
    WAL_DEFAULT(payload_bytes_max);
#undef WAL_DEFAULT
    if (w->opt.stop == NULL) w->opt.stop = wal_stop_default;
    w->fs = opts->fs ? opts->fs : wal_fs_posix();
    w->dir = strdup(opts->dir);
    w->iov = calloc(WAL_IOV_MAX, sizeof(*w->iov));
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_init(&w->idx_mu, NULL);
    pthread_mutex_init(&w->stats_mu, NULL);
    pthread_cond_init(&w->cv_work, NULL);
    pthread_cond_init(&w->cv_room, NULL);
    wal_index_init(&w->idx);
    hist_init(&w->stats.fsync_us);
    hist_init(&w->stats.batch_records);
    hist_init(&w->stats.batch_bytes);
    if (w->dir == NULL || w->iov == NULL) {
        wal_free(w);
        return err_set(err, -TRINE_ENOMEM, "wal_open: out of memory");
    }
    w->opt.dir = w->dir;

    int rc = w->fs->mkdir(w->fs->ctx, w->dir);
    if (rc < 0) {
        err_set(err, status_from_errno(-rc), "mkdir %s: %s", w->dir, strerror(-rc));
        wal_free(w);
        return err ? err->code : -TRINE_EIO;
    }
    rc = wal_recover(w, rep, err);
    if (rc == 0 && w->active != NULL) wal_prealloc_recovered(w);
    if (rc == 0 && w->active == NULL) {
        char msg[WAL_PATH_MAX + 128];
        w->salt = wal_new_salt();
        w->chain_crc = 0;
        w->batch_no = 0;
        uint64_t seq = 1;
        rc = wal_seg_create(w, seq, msg, sizeof(msg));
        if (rc < 0) err_set(err, rc, "%s", msg);
    }
    if (rc == 0) rc = wal_replay(w, rep, err);
    if (rc == 0) {
        pthread_mutex_lock(&w->stats_mu);
        w->stats.segments = w->idx.nsegs;
        pthread_mutex_unlock(&w->stats_mu);
        rc = pthread_create(&w->thread, NULL, wal_sync_main, w);
        if (rc != 0) rc = err_set(err, -TRINE_ENOMEM, "wal_open: pthread_create: %s", strerror(rc));
    }
    if (rc < 0) {
        wal_free(w);
        return rc;
    }
    w->thread_started = true;
    log_info("wal", "opened %s: %u segments, %llu records, %llu replayed", w->dir,
             (unsigned)w->idx.nsegs, (unsigned long long)rep->records,
             (unsigned long long)rep->replayed);
    *out = w;
    return 0;
}

void wal_close(struct wal *w)
{
    if (w == NULL) return;
    TRINE_ASSERT(!pthread_equal(pthread_self(), w->thread));
    pthread_mutex_lock(&w->mu);
    w->closing = true;
    pthread_cond_signal(&w->cv_work);
    pthread_cond_broadcast(&w->cv_room);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    wal_free(w);
}
