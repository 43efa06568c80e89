/*
 * recover.c - wal_open's two passes over the log.
 *
 * Pass 1 (wal_recover) verifies every segment in sequence order: header, then
 * records, each checked for structure, its CRC, its prev_crc against the
 * previous record's CRC (the chain; a segment header's start_crc continues it)
 * and its batch word (a batch's first record has the first flag and the next
 * batch number, the others repeat it; a segment starts with a first record).
 * Valid records go into the index. The first record that fails is the "bad
 * spot" X (at most the file's end), and everything hangs on telling
 * preallocated space, a torn tail and corruption apart. Z below is the start
 * of the run of zero bytes that ends the file (Z = the file size if its last
 * byte is not zero):
 *
 *  - Z <= X, i.e. only zeros from X to the end of the file: preallocated space
 *    (segment.c), not damage. X is the segment's logical size (s->size); no
 *    warning (log_debug), nothing counted in torn_bytes, nothing reported.
 *    The last segment keeps its file: appends go on at X, over the zeros. A
 *    non-last segment has its zeros only when the truncate at its roll did not
 *    reach the disk: it is truncated to X, but only after the next segment's
 *    header was found to continue the chain (start_crc, start_batch) from the
 *    last record before X. If records of it were zeroed instead, the chain
 *    breaks at that header: corruption, reported there. A zeroed final batch
 *    of the last segment (its data never reached the disk) looks the same as
 *    preallocated space and is taken as such: it was never acknowledged.
 *  - Otherwise, X in any segment but the last: corruption. Segments roll only
 *    after the previous batch's fdatasync, so a crash cannot damage a non-last
 *    segment.
 *  - X in the last segment: scan [X, end) for self-consistent records (valid
 *    structure and CRC; the log's salt makes payload bytes unlikely to pass;
 *    records start before Z, a header in the zeros cannot be one). Batch k+1
 *    is written only after batch k's fdatasync returned, so a crash can only
 *    damage the final batch written: with k the batch of the last valid
 *    record, a torn write leaves behind at most non-first records of batch k
 *    or k+1 (pages of one pwritev reach the disk in any order). Any other
 *    self-consistent record after X (a first-of-batch record, or a later
 *    batch) proves acknowledged data follows the bad spot: corruption.
 *  - A last segment shorter than its header or with a zeroed header is a torn
 *    creation and is removed; any other bad header is corruption.
 *
 * Torn: the tail is truncated at X (log_warn with file and offset; torn_bytes
 * = Z - X, the preallocated zeros after the torn bytes are not counted) and
 * wal_open preallocates the segment again. Corruption: wal_open fails with
 * -TRINE_ECORRUPT naming the file and offset, unless opts.repair, which
 * truncates at X, deletes every later segment and reports the bytes (zeros
 * ending a file not counted) and self-consistent records cut. A bit flip
 * inside the final batch cannot be told from a torn write of that batch; it
 * is truncated as torn.
 *
 * Pass 2 (wal_replay) reads the verified log again, each segment up to its
 * logical size, and hands records to the replay callback, skipping dead
 * entries in WAL_REPLAY_LIVE mode; liveness needs the cuts of the whole log,
 * which only pass 1 knows.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "wal/wal_int.h"

struct wal_chain {
    bool known;
    uint32_t salt, crc, batch;
};

struct wal_bad {
    bool set;
    bool header; /* the segment header itself is bad */
    bool benign; /* header cut short or zeroed (torn creation) */
    bool chain;  /* the header does not continue the previous segment's chain */
    uint64_t off;
    char why[192];
};

struct wal_seqs {
    uint64_t *v;
    size_t n, cap;
    size_t tmps;
    struct wal *w;
};

static int wal_list_one(void *arg, const char *name)
{
    struct wal_seqs *l = arg;
    uint64_t seq;
    size_t len = strlen(name);
    if (len == 24 && strcmp(name + 20, ".tmp") == 0) {
        l->tmps++; /* removed after listing */
        return 0;
    }
    if (!wal_seg_parse_name(name, &seq)) return 0;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 16;
        uint64_t *p = realloc(l->v, ncap * sizeof(*p));
        if (p == NULL) return -ENOMEM;
        l->v = p;
        l->cap = ncap;
    }
    l->v[l->n++] = seq;
    return 0;
}

static int wal_rm_tmp(void *arg, const char *name)
{
    struct wal_seqs *l = arg;
    size_t len = strlen(name);
    if (len != 24 || strcmp(name + 20, ".tmp") != 0) return 0;
    char path[WAL_PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", l->w->dir, name);
    int rc = l->w->fs->unlink(l->w->fs->ctx, path);
    if (rc == 0) log_warn("wal", "removed %s left by an interrupted segment creation", path);
    return 0;
}

static int wal_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void wal_mark_bad(struct wal_bad *b, uint64_t off, const char *why)
{
    b->set = true;
    b->off = off;
    snprintf(b->why, sizeof(b->why), "%s", why);
}

/* Pass 1 over one segment. Returns 0 (bad->set tells whether it stopped early)
 * or a hard error (I/O, memory). */
static int wal_scan_segment(struct wal *w, struct wal_seg *s, uint64_t size, uint64_t prev_seq,
                            struct wal_chain *ch, struct wal_bad *bad, struct wal_recovery *rep)
{
    struct wal_reader rd;
    wal_reader_init(&rd, w->fs, s->fd, size);
    const uint8_t *p;
    int rc = wal_reader_get(&rd, 0, WAL_SEG_HDR_BYTES, &p);
    if (rc < 0) goto out;
    if (rc == 1) {
        wal_mark_bad(bad, 0, "segment shorter than its header");
        bad->header = bad->benign = true;
        rc = 0;
        goto out;
    }
    bool zero = true;
    for (int i = 0; i < WAL_SEG_HDR_BYTES && zero; i++)
        zero = p[i] == 0;
    struct wal_seghdr h;
    const char *why;
    if (zero) {
        wal_mark_bad(bad, 0, "zeroed segment header");
        bad->header = bad->benign = true;
    } else if (wal_seghdr_decode(p, &h, &why) < 0) {
        wal_mark_bad(bad, 0, why);
        bad->header = true;
    } else if (h.seq != s->seq) {
        wal_mark_bad(bad, 0, "sequence in the header does not match the file name");
        bad->header = true;
    } else if (ch->known && s->seq != prev_seq + 1) {
        snprintf(bad->why, sizeof(bad->why), "segment %llu is missing",
                 (unsigned long long)prev_seq + 1);
        bad->set = bad->header = true;
    } else if (ch->known &&
               (h.salt != ch->salt || h.start_crc != ch->crc || h.start_batch != ch->batch)) {
        wal_mark_bad(bad, 0, "chain broken at the segment header");
        bad->header = bad->chain = true;
    } else if (!ch->known) {
        *ch = (struct wal_chain){
            .known = true, .salt = h.salt, .crc = h.start_crc, .batch = h.start_batch};
    }
    if (bad->set) goto out;

    uint64_t off = WAL_SEG_HDR_BYTES;
    while (off < size) {
        uint64_t avail = size - off;
        rc = wal_reader_get(&rd, off, avail < WAL_REC_HDR_BYTES ? avail : WAL_REC_HDR_BYTES, &p);
        if (rc != 0) break;
        struct wal_rechdr rh;
        if (wal_rec_decode(p, avail, &rh, &why) < 0) {
            wal_mark_bad(bad, off, why);
            break;
        }
        rc = wal_reader_get(&rd, off, wal_rec_bytes(rh.len), &p);
        if (rc != 0) break;
        if (!wal_rec_crc_ok(p, &rh, ch->salt)) {
            wal_mark_bad(bad, off, "CRC mismatch");
            break;
        }
        if (rh.prev_crc != ch->crc) {
            wal_mark_bad(bad, off, "chain broken: prev_crc is not the previous record's CRC");
            break;
        }
        if (rh.first ? rh.batch != wal_batch_next(ch->batch)
                     : off == WAL_SEG_HDR_BYTES || rh.batch != ch->batch) {
            wal_mark_bad(bad, off, "batch sequence broken");
            break;
        }
        rc = wal_index_note(&w->idx, s, off, &rh, p + WAL_REC_HDR_BYTES);
        if (rc < 0) break;
        ch->crc = rh.crc;
        ch->batch = rh.batch;
        rep->records++;
        off += wal_rec_bytes(rh.len);
    }
    if (rc == 1) rc = -TRINE_EIO; /* the file shrank while we read it */
    s->size = bad->set ? bad->off : off;
out:
    wal_reader_free(&rd);
    return rc;
}

/* *z = Z of the file comment for fd's first size bytes, but not below from:
 * from when [from, size) holds only zeros. Reads backwards from the end and
 * stops at the first non-zero byte. Returns 0 or a negative status. */
static int wal_zero_tail(struct wal *w, int fd, uint64_t size, uint64_t from, uint64_t *z)
{
    uint8_t *buf = size > from ? malloc(WAL_READ_CHUNK) : NULL;
    if (size > from && buf == NULL) return -TRINE_ENOMEM;
    uint64_t end = size;
    int rc = 0;
    while (end > from) {
        size_t n = end - from < WAL_READ_CHUNK ? (size_t)(end - from) : WAL_READ_CHUNK;
        ssize_t got = w->fs->pread(w->fs->ctx, fd, buf, n, end - n);
        if (got != (ssize_t)n) {
            rc = got < 0 ? status_from_errno((int)-got) : -TRINE_EIO; /* shrank under us */
            break;
        }
        if (buf[0] == 0 && (n == 1 || memcmp(buf, buf + 1, n - 1) == 0)) {
            end -= n; /* all zero */
            continue;
        }
        size_t i = n;
        while (buf[i - 1] == 0)
            i--;
        end = end - n + i;
        break;
    }
    free(buf);
    *z = end;
    return rc;
}

/* Counts self-consistent records starting in [from, limit) of fd (records may
 * run on up to size); *later is set if one of them is not a non-first record
 * of batch k or k+1 (see the file comment). */
static int wal_scan_ahead(struct wal *w, int fd, uint64_t size, uint64_t from, uint64_t limit,
                          uint32_t salt, uint32_t k, uint64_t *found, bool *later)
{
    struct wal_reader rd;
    wal_reader_init(&rd, w->fs, fd, size);
    int rc = 0;
    uint64_t off = from;
    while (off < limit && off < size && size - off >= WAL_REC_HDR_BYTES) {
        const uint8_t *p;
        struct wal_rechdr h;
        const char *why;
        rc = wal_reader_get(&rd, off, WAL_REC_HDR_BYTES, &p);
        if (rc != 0) break;
        if (wal_rec_decode(p, size - off, &h, &why) < 0) {
            off++;
            continue;
        }
        rc = wal_reader_get(&rd, off, wal_rec_bytes(h.len), &p);
        if (rc != 0) break;
        if (!wal_rec_crc_ok(p, &h, salt)) {
            off++;
            continue;
        }
        (*found)++;
        if (h.first || (h.batch != k && h.batch != wal_batch_next(k))) *later = true;
        off += wal_rec_bytes(h.len);
    }
    wal_reader_free(&rd);
    return rc < 0 ? rc : 0;
}

/* Counts and measures segments seqs[from..n) (for the corruption report). */
static int wal_count_rest(struct wal *w, const uint64_t *seqs, size_t from, size_t n,
                          const struct wal_chain *ch, uint64_t *records, uint64_t *bytes)
{
    for (size_t i = from; i < n; i++) {
        char path[WAL_PATH_MAX];
        wal_seg_path(w, seqs[i], "", path, sizeof(path));
        int fd = w->fs->open(w->fs->ctx, path, O_RDONLY);
        if (fd < 0) return status_from_errno(-fd);
        uint64_t size = 0;
        uint8_t hb[WAL_SEG_HDR_BYTES];
        struct wal_seghdr h;
        const char *why;
        uint32_t salt = ch->salt;
        bool later = false;
        uint64_t z = 0;
        int rc = w->fs->size(w->fs->ctx, fd, &size);
        if (rc < 0) rc = status_from_errno(-rc);
        if (rc == 0 && w->fs->pread(w->fs->ctx, fd, hb, sizeof(hb), 0) == (ssize_t)sizeof(hb) &&
            wal_seghdr_decode(hb, &h, &why) == 0)
            salt = h.salt;
        if (rc == 0) rc = wal_zero_tail(w, fd, size, 0, &z); /* preallocated zeros: no records */
        if (rc == 0) rc = wal_scan_ahead(w, fd, size, 0, z, salt, 0, records, &later);
        w->fs->close(w->fs->ctx, fd);
        if (rc < 0) return rc;
        *bytes += z;
    }
    return 0;
}

/* Removes the last segment of the index (torn creation or repair). */
static int wal_drop_last(struct wal *w, const char *path)
{
    struct wal_seg *s = w->idx.segs[--w->idx.nsegs];
    wal_seg_unref(s, w->fs);
    int rc = w->fs->unlink(w->fs->ctx, path);
    return rc == -ENOENT ? 0 : rc;
}

/* Cuts the zero tail off a non-last segment (the truncate of its roll did not
 * reach the disk). Not synced, and a failure is only logged: the next open
 * finds the same zeros and accepts them again. */
static int wal_sync_or_err(struct wal *w, int fd, const char *path, struct trine_err *err)
{
    int rc = w->opt.sync_off ? 0
             : fd >= 0       ? w->fs->fdatasync(w->fs->ctx, fd)
                             : w->fs->sync_dir(w->fs->ctx, w->dir);
    if (rc < 0) return err_set(err, -TRINE_EFSYNC, "fsync of %s: %s", path, strerror(-rc));
    return 0;
}

/* Deals with the bad spot found in segment i of n; z: Z of the file comment,
 * above the bad spot. */
static int wal_settle(struct wal *w, const uint64_t *seqs, size_t i, size_t n, uint64_t size,
                      uint64_t z, const struct wal_chain *ch, const struct wal_bad *bad,
                      struct wal_recovery *rep, struct trine_err *err)
{
    struct wal_seg *s = w->idx.segs[w->idx.nsegs - 1];
    char path[WAL_PATH_MAX];
    wal_seg_path(w, s->seq, "", path, sizeof(path));
    size_t plen = strlen(path) < sizeof(rep->bad_file) ? strlen(path) : sizeof(rep->bad_file) - 1;
    memcpy(rep->bad_file, path, plen); /* the tail of an over-long path is dropped */
    rep->bad_file[plen] = '\0';
    rep->bad_offset = bad->off;
    bool last = i + 1 == n;

    uint64_t found = 0, rest_bytes = 0;
    bool later = false;
    int rc = 0;
    if (!bad->header)
        rc = wal_scan_ahead(w, s->fd, size, bad->off, z, ch->salt, ch->batch, &found, &later);
    else if (!bad->benign) /* only counted: a bad header decides by itself */
        rc = wal_scan_ahead(w, s->fd, size, WAL_SEG_HDR_BYTES, z, ch->salt, 0, &found, &later);
    if (rc < 0) return err_set(err, rc, "reading %s: %s", path, status_message(rc));

    if (last && (bad->header ? bad->benign : !later)) { /* torn tail */
        rep->torn_bytes = z - bad->off;
        char zeros[96] = "";
        if (size > z)
            snprintf(zeros, sizeof(zeros), " (and %llu bytes of preallocated space after them)",
                     (unsigned long long)(size - z));
        log_warn("wal", "torn tail in %s at offset %llu (%s): truncating %llu bytes%s", path,
                 (unsigned long long)bad->off, bad->why, (unsigned long long)rep->torn_bytes,
                 zeros);
        if (bad->header) {
            rc = wal_drop_last(w, path);
            if (rc < 0)
                return err_set(err, status_from_errno(-rc), "unlink %s: %s", path, strerror(-rc));
            return wal_sync_or_err(w, -1, w->dir, err);
        }
        rc = w->fs->ftruncate(w->fs->ctx, s->fd, bad->off);
        if (rc < 0)
            return err_set(err, status_from_errno(-rc), "truncate %s: %s", path, strerror(-rc));
        return wal_sync_or_err(w, s->fd, path, err);
    }

    /* Corruption with valid data after it. */
    rep->corrupt = true;
    rc = wal_count_rest(w, seqs, i + 1, n, ch, &found, &rest_bytes);
    if (rc < 0) return err_set(err, rc, "reading segments after %s: %s", path, status_message(rc));
    rep->cut_records = found;
    rep->cut_bytes = z - bad->off + rest_bytes;
    if (!w->opt.repair) {
        rep->cut_records = rep->cut_bytes = 0;
        return err_set(err, -TRINE_ECORRUPT,
                       "corrupt WAL: %s at offset %llu: %s; %llu valid record(s) follow; "
                       "refusing to open (repair=true cuts the log there)",
                       path, (unsigned long long)bad->off, bad->why, (unsigned long long)found);
    }
    for (size_t j = n; j-- > i + 1;) { /* newest first: a crash leaves a gap-free prefix */
        char later_path[WAL_PATH_MAX];
        wal_seg_path(w, seqs[j], "", later_path, sizeof(later_path));
        rc = w->fs->unlink(w->fs->ctx, later_path);
        if (rc < 0 && rc != -ENOENT)
            return err_set(err, status_from_errno(-rc), "unlink %s: %s", later_path, strerror(-rc));
    }
    if (bad->off == 0) {
        rc = wal_drop_last(w, path);
        if (rc < 0)
            return err_set(err, status_from_errno(-rc), "unlink %s: %s", path, strerror(-rc));
    } else {
        rc = w->fs->ftruncate(w->fs->ctx, s->fd, bad->off);
        if (rc < 0)
            return err_set(err, status_from_errno(-rc), "truncate %s: %s", path, strerror(-rc));
        if ((rc = wal_sync_or_err(w, s->fd, path, err)) < 0) return rc;
    }
    if ((rc = wal_sync_or_err(w, -1, w->dir, err)) < 0) return rc;
    rep->segments = (uint32_t)w->idx.nsegs;
    log_warn("wal",
             "repair: cut %s at offset %llu (%s): removed %llu bytes, %llu record(s), "
             "%zu later segment(s)",
             path, (unsigned long long)bad->off, bad->why, (unsigned long long)rep->cut_bytes,
             (unsigned long long)rep->cut_records, n - i - 1);
    return 0;
}

int wal_recover(struct wal *w, struct wal_recovery *rep, struct trine_err *err)
{
    struct wal_seqs l = {.w = w};
    int rc = w->fs->list(w->fs->ctx, w->dir, wal_list_one, &l);
    if (rc < 0) {
        free(l.v);
        return err_set(err, status_from_errno(-rc), "listing %s: %s", w->dir, strerror(-rc));
    }
    if (l.tmps > 0) w->fs->list(w->fs->ctx, w->dir, wal_rm_tmp, &l);
    if (l.n > 1) qsort(l.v, l.n, sizeof(*l.v), wal_cmp_u64);
    rep->segments = (uint32_t)l.n;

    struct wal_chain ch = {0};
    uint64_t prev_seq = 0;
    struct wal_seg *trim = NULL; /* a non-last segment ending in zeros, to cut to s->size */
    for (size_t i = 0; i < l.n && rc == 0; i++) {
        char path[WAL_PATH_MAX];
        wal_seg_path(w, l.v[i], "", path, sizeof(path));
        int fd = w->fs->open(w->fs->ctx, path, O_RDWR);
        if (fd < 0) {
            rc = err_set(err, status_from_errno(-fd), "open %s: %s", path, strerror(-fd));
            break;
        }
        struct wal_seg *s = wal_seg_new(l.v[i], fd);
        if (s == NULL || wal_index_push_seg(&w->idx, s) < 0) {
            if (s)
                wal_seg_unref(s, w->fs);
            else
                w->fs->close(w->fs->ctx, fd);
            rc = err_set(err, -TRINE_ENOMEM, "out of memory opening %s", path);
            break;
        }
        uint64_t size = 0;
        struct wal_bad bad = {0};
        rc = w->fs->size(w->fs->ctx, fd, &size);
        if (rc < 0) {
            rc = err_set(err, status_from_errno(-rc), "stat %s: %s", path, strerror(-rc));
            break;
        }
        rc = wal_scan_segment(w, s, size, prev_seq, &ch, &bad, rep);
        if (rc < 0) {
            err_set(err, rc, "reading %s: %s", path, status_message(rc));
            break;
        }
        prev_seq = l.v[i];
        if (trim != NULL && !(bad.set && bad.header)) {
            /* This header continues the chain: nothing was lost before the zeros. */
            wal_seg_trim(w, trim);
            trim = NULL;
        }
        uint64_t z = size;
        if (bad.set) {
            rc = wal_zero_tail(w, fd, size, bad.off, &z);
            if (rc < 0) {
                err_set(err, rc, "reading %s: %s", path, status_message(rc));
                break;
            }
        }
        if (bad.set && !bad.header && z == bad.off) { /* only zeros after the last record */
            log_debug("wal",
                      "%s: records end at offset %llu, then %llu bytes of preallocated space", path,
                      (unsigned long long)bad.off, (unsigned long long)(size - bad.off));
            if (i + 1 < l.n) trim = s;
            continue; /* s->size = bad.off already */
        }
        if (bad.set) {
            if (trim != NULL && bad.chain) {
                size_t k = strlen(bad.why);
                snprintf(bad.why + k, sizeof(bad.why) - k,
                         " (records of segment %llu before its zero tail at offset %llu are "
                         "missing)",
                         (unsigned long long)trim->seq, (unsigned long long)trim->size);
            }
            rc = wal_settle(w, l.v, i, l.n, size, z, &ch, &bad, rep, err);
            break;
        }
    }
    free(l.v);
    if (rc < 0) return rc;
    if (w->idx.nsegs > 0) {
        w->active = w->idx.segs[w->idx.nsegs - 1];
        w->salt = ch.salt;
        w->chain_crc = ch.crc;
        w->batch_no = ch.batch;
    }
    return 0;
}

int wal_replay(struct wal *w, struct wal_recovery *rep, struct trine_err *err)
{
    if (w->opt.replay_fn == NULL) return 0;
    int rc = 0;
    for (size_t i = 0; i < w->idx.nsegs && rc == 0; i++) {
        struct wal_seg *s = w->idx.segs[i];
        struct wal_reader rd;
        wal_reader_init(&rd, w->fs, s->fd, s->size);
        char path[WAL_PATH_MAX];
        wal_seg_path(w, s->seq, "", path, sizeof(path));
        for (uint64_t off = WAL_SEG_HDR_BYTES; off < s->size && rc == 0;) {
            const uint8_t *p;
            struct wal_rechdr h;
            const char *why = "changed while opening";
            rc = wal_reader_get(&rd, off, WAL_REC_HDR_BYTES, &p);
            if (rc == 0 && wal_rec_decode(p, s->size - off, &h, &why) == 0)
                rc = wal_reader_get(&rd, off, wal_rec_bytes(h.len), &p);
            else if (rc == 0)
                rc = -TRINE_ECORRUPT;
            if (rc == 0 && !wal_rec_crc_ok(p, &h, w->salt)) rc = -TRINE_ECORRUPT;
            if (rc != 0) {
                rc = err_set(err, rc < 0 ? rc : -TRINE_EIO, "replaying %s at offset %llu: %s", path,
                             (unsigned long long)off, why);
                break;
            }
            const struct wal_part *part = wal_part_find(&w->idx, h.partition);
            bool skip = w->opt.replay == WAL_REPLAY_LIVE && h.type == WAL_ENTRY && part != NULL &&
                        !wal_entry_live(part, s->seq, off, h.index);
            if (!skip) {
                struct wal_record rec = {.partition = h.partition,
                                         .type = h.type,
                                         .term = h.term,
                                         .index = h.index,
                                         .payload = p + WAL_REC_HDR_BYTES,
                                         .len = h.len};
                rc = w->opt.replay_fn(w->opt.replay_ctx, &rec);
                if (rc != 0) {
                    rc = err_set(err, rc < 0 ? rc : -TRINE_EINTERNAL,
                                 "replay callback failed at %s offset %llu", path,
                                 (unsigned long long)off);
                    break;
                }
                rep->replayed++;
            }
            off += wal_rec_bytes(h.len);
        }
        wal_reader_free(&rd);
    }
    return rc;
}
