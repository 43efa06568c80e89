/*
 * segment.c - segment files: names, the header, creation, and a buffered
 * sequential reader.
 *
 * A segment is named "%016x.wal" after its sequence number (1, 2, ...; the
 * sequence never repeats and has no gaps among the files present, because only
 * the oldest segments are ever deleted). It starts with a 40-byte header
 * (integers big-endian), followed by records (record.c):
 *
 *   off size field
 *     0    8 magic        "TRINEWAL"
 *     8    4 version      1
 *    12    4 header_bytes 40
 *    16    8 seq          equals the number in the file name
 *    24    4 salt         random per log, the same in every segment
 *    28    4 start_crc    prev_crc expected of the first record (0 for a new log)
 *    32    4 start_batch  batch number of the record before this segment (0 new)
 *    36    4 crc          crc32c(0, bytes[0 .. 36))
 *
 * So the chain can be verified from the first remaining segment after older
 * ones were deleted. A segment is created as "<name>.tmp", its header written,
 * the file preallocated to segment_bytes (wal_fs.preallocate: fallocate), then
 * fdatasync'ed, renamed and the directory fsync'ed: a segment file either has
 * a whole header or does not exist. Segments change only between batches,
 * after the previous batch's fdatasync, so every segment but the last is
 * complete on disk.
 *
 * Preallocation: appends then write into space the file already has, so the
 * fdatasync of a batch does not also have to persist a new file size (ext4, a
 * 300-byte write + fdatasync: ~260-350 us appending, ~150-200 us into
 * preallocated space; docs/benchmarks.md). The price: a segment file has zeros
 * after its last record, so the file size is not the log's end. s->size (the
 * logical size) is; every reader stops there. At a roll the old segment is
 * truncated to its logical size (commit.c); recovery takes a bad spot followed
 * only by zeros as the logical end (recover.c). Preallocation is an
 * optimisation only: a file system that cannot do it, or a failure (ENOSPC),
 * leaves segments growing by their appends as before (logged once).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/crc32c.h"
#include "base/log.h"
#include "base/status.h"
#include "wal/wal_int.h"

static const uint8_t wal_magic[8] = {'T', 'R', 'I', 'N', 'E', 'W', 'A', 'L'};

void wal_seghdr_encode(uint8_t *out, const struct wal_seghdr *h)
{
    memcpy(out, wal_magic, 8);
    put_u32be(out + 8, WAL_VERSION);
    put_u32be(out + 12, WAL_SEG_HDR_BYTES);
    put_u64be(out + 16, h->seq);
    put_u32be(out + 24, h->salt);
    put_u32be(out + 28, h->start_crc);
    put_u32be(out + 32, h->start_batch);
    put_u32be(out + 36, crc32c(0, out, 36));
}

int wal_seghdr_decode(const uint8_t *p, struct wal_seghdr *h, const char **why)
{
    if (memcmp(p, wal_magic, 8) != 0) {
        *why = "bad segment magic";
        return -TRINE_ECORRUPT;
    }
    if (crc32c(0, p, 36) != get_u32be(p + 36)) {
        *why = "segment header CRC mismatch";
        return -TRINE_ECORRUPT;
    }
    if (get_u32be(p + 8) != WAL_VERSION || get_u32be(p + 12) != WAL_SEG_HDR_BYTES) {
        *why = "unsupported segment version";
        return -TRINE_EUNSUPPORTED;
    }
    h->seq = get_u64be(p + 16);
    h->salt = get_u32be(p + 24);
    h->start_crc = get_u32be(p + 28);
    h->start_batch = get_u32be(p + 32);
    if (h->start_batch > WAL_BATCH_MASK) {
        *why = "segment start batch out of range";
        return -TRINE_ECORRUPT;
    }
    return 0;
}

void wal_seg_name(char *out, size_t n, uint64_t seq)
{
    snprintf(out, n, "%016" PRIx64 ".wal", seq);
}

bool wal_seg_parse_name(const char *name, uint64_t *seq)
{
    if (strlen(name) != 20 || strcmp(name + 16, ".wal") != 0) return false;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = name[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return false;
        v = v << 4 | (uint64_t)d;
    }
    *seq = v;
    return v != 0;
}

void wal_seg_path(const struct wal *w, uint64_t seq, const char *suffix, char *out, size_t n)
{
    char name[32];
    wal_seg_name(name, sizeof(name), seq);
    snprintf(out, n, "%s/%s%s", w->dir, name, suffix);
}

void wal_seg_preallocate(struct wal *w, int fd, const char *path)
{
    const struct wal_fs *fs = w->fs;
    if (w->opt.no_preallocate || fs->preallocate == NULL) return;
    int rc = fs->preallocate(fs->ctx, fd, w->opt.segment_bytes);
    if (rc == 0) return;
    if (!w->prealloc_warned)
        log_warn("wal",
                 "preallocating %llu bytes for %s failed: %s; going on without (segments grow "
                 "by their appends; further failures are not logged)",
                 (unsigned long long)w->opt.segment_bytes, path, strerror(-rc));
    else
        log_debug("wal", "preallocating %s failed: %s", path, strerror(-rc));
    w->prealloc_warned = true;
}

void wal_seg_trim(struct wal *w, const struct wal_seg *s)
{
    char path[WAL_PATH_MAX];
    wal_seg_path(w, s->seq, "", path, sizeof(path));
    int rc = w->fs->ftruncate(w->fs->ctx, s->fd, s->size);
    if (rc < 0)
        log_warn("wal", "truncating %s to its %llu bytes of records: %s; its zero tail stays", path,
                 (unsigned long long)s->size, strerror(-rc));
    else
        log_debug("wal", "%s: preallocated space after offset %llu removed", path,
                  (unsigned long long)s->size);
}

int wal_seg_create(struct wal *w, uint64_t seq, char *msg, size_t msgn)
{
    char tmp[WAL_PATH_MAX], path[WAL_PATH_MAX];
    wal_seg_path(w, seq, ".tmp", tmp, sizeof(tmp));
    wal_seg_path(w, seq, "", path, sizeof(path));
    const struct wal_fs *fs = w->fs;
    int rc = fs->unlink(fs->ctx, tmp);
    if (rc < 0 && rc != -ENOENT) {
        snprintf(msg, msgn, "unlink %s: %s", tmp, strerror(-rc));
        return status_from_errno(-rc);
    }
    int fd = fs->open(fs->ctx, tmp, O_RDWR | O_CREAT | O_EXCL);
    if (fd < 0) {
        snprintf(msg, msgn, "create %s: %s", tmp, strerror(-fd));
        return status_from_errno(-fd);
    }
    uint8_t hdr[WAL_SEG_HDR_BYTES];
    struct wal_seghdr h = {
        .seq = seq, .salt = w->salt, .start_crc = w->chain_crc, .start_batch = w->batch_no};
    wal_seghdr_encode(hdr, &h);
    struct iovec iov = {.iov_base = hdr, .iov_len = sizeof(hdr)};
    ssize_t n = fs->pwritev(fs->ctx, fd, &iov, 1, 0);
    const char *what = NULL;
    if (n == (ssize_t)sizeof(hdr)) wal_seg_preallocate(w, fd, path); /* before the fdatasync */
    if (n != (ssize_t)sizeof(hdr)) {
        what = "write";
        rc = n < 0 ? (int)n : -EIO;
    } else if (!w->opt.sync_off && (rc = fs->fdatasync(fs->ctx, fd)) < 0) {
        what = "fdatasync";
    } else if ((rc = fs->rename(fs->ctx, tmp, path)) < 0) {
        what = "rename";
    } else if (!w->opt.sync_off && (rc = fs->sync_dir(fs->ctx, w->dir)) < 0) {
        what = "fsync of the directory after creating";
    }
    if (what != NULL) {
        snprintf(msg, msgn, "%s %s: %s", what, path, strerror(-rc));
        fs->close(fs->ctx, fd);
        return strcmp(what, "write") == 0 ? status_from_errno(-rc) : -TRINE_EFSYNC;
    }
    struct wal_seg *s = wal_seg_new(seq, fd);
    if (s == NULL) {
        fs->close(fs->ctx, fd);
        snprintf(msg, msgn, "out of memory creating %s", path);
        return -TRINE_ENOMEM;
    }
    s->size = WAL_SEG_HDR_BYTES;
    pthread_mutex_lock(&w->idx_mu);
    rc = wal_index_push_seg(&w->idx, s);
    pthread_mutex_unlock(&w->idx_mu);
    if (rc < 0) {
        wal_seg_unref(s, fs);
        snprintf(msg, msgn, "out of memory creating %s", path);
        return rc;
    }
    w->active = s;
    pthread_mutex_lock(&w->stats_mu);
    w->stats.segments_created++;
    w->stats.segments++;
    pthread_mutex_unlock(&w->stats_mu);
    return 0;
}

/* ---- reader ---- */

void wal_reader_init(struct wal_reader *r, const struct wal_fs *fs, int fd, uint64_t size)
{
    memset(r, 0, sizeof(*r));
    r->fs = fs;
    r->fd = fd;
    r->size = size;
}

int wal_reader_get(struct wal_reader *r, uint64_t off, size_t n, const uint8_t **out)
{
    if (off > r->size || n > r->size - off) return 1;
    if (off >= r->off && off + n <= r->off + r->len) {
        *out = r->buf + (off - r->off);
        return 0;
    }
    /* Refill from off: at least n bytes, normally a whole chunk. */
    uint64_t want = n > WAL_READ_CHUNK ? n : WAL_READ_CHUNK;
    if (want > r->size - off) want = r->size - off;
    if (want > r->cap) {
        uint8_t *nb = realloc(r->buf, (size_t)want);
        if (nb == NULL) return -TRINE_ENOMEM;
        r->buf = nb;
        r->cap = (size_t)want;
    }
    ssize_t got = r->fs->pread(r->fs->ctx, r->fd, r->buf, (size_t)want, off);
    if (got < 0) return status_from_errno((int)-got);
    r->off = off;
    r->len = (size_t)got;
    if ((size_t)got < n) return 1; /* the file shrank under us */
    *out = r->buf;
    return 0;
}

void wal_reader_free(struct wal_reader *r)
{
    free(r->buf);
    r->buf = NULL;
    r->cap = r->len = 0;
}
