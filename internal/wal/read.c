/*
 * read.c - wal_read: a partition's live entries in [lo, hi], read back from the
 * segment files (Raft feeds slow followers from here).
 *
 * Under idx_mu it plans: the segments whose ENTRY range for the partition meets
 * [lo, hi], for each a start offset (the last sparse mark that is a live entry
 * with index <= lo: every live entry before it has a smaller index, see
 * index.c) and an end (the partition's last ENTRY in the segment), takes a
 * reference on each segment so compaction cannot close it, and copies the
 * partition's cuts. Then it reads without the lock, checking each record's CRC
 * (not the chain: reads start mid-segment), and stops after the first live
 * entry >= hi. Only durable, indexed bytes are read.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wal/wal_int.h"

struct wal_plan {
    struct wal_seg *s;
    uint64_t from, to, size;
};

/* Under idx_mu. Fills plan (room for nsegs) and a private copy of p's cuts. */
static int wal_read_plan(struct wal *w, const struct wal_part *p, uint64_t lo, uint64_t hi,
                         struct wal_plan *plan, size_t *np, struct wal_part *cuts)
{
    if (p->ncuts > 0) {
        cuts->cuts = malloc(p->ncuts * sizeof(*cuts->cuts));
        cuts->cut_min = malloc(p->ncuts * sizeof(*cuts->cut_min));
        if (cuts->cuts == NULL || cuts->cut_min == NULL) return -TRINE_ENOMEM;
        memcpy(cuts->cuts, p->cuts, p->ncuts * sizeof(*cuts->cuts));
        memcpy(cuts->cut_min, p->cut_min, p->ncuts * sizeof(*cuts->cut_min));
        cuts->ncuts = p->ncuts;
    }
    *np = 0;
    for (size_t i = 0; i < w->idx.nsegs; i++) {
        struct wal_seg *s = w->idx.segs[i];
        const struct wal_segpart *sp = wal_segpart_find(s, p->partition);
        if (sp == NULL || sp->entries == 0 || sp->entry_max < lo || sp->entry_min > hi) continue;
        uint64_t from = sp->first_off;
        for (uint32_t m = 0; m < sp->nmarks; m++) {
            const struct wal_mark *mk = &sp->marks[m];
            if (mk->index <= lo && wal_entry_live(p, s->seq, mk->off, mk->index)) from = mk->off;
        }
        s->refs++;
        plan[(*np)++] =
            (struct wal_plan){.s = s, .from = from, .to = sp->last_off, .size = s->size};
    }
    return 0;
}

int wal_read(struct wal *w, uint32_t partition, uint64_t lo, uint64_t hi, wal_read_fn fn, void *ctx,
             struct trine_err *err)
{
    if (fn == NULL || lo > hi) return err_set(err, -TRINE_EINVALID, "wal_read: bad arguments");
    struct wal_part cuts = {.partition = partition};
    struct wal_plan *plan = NULL;
    size_t np = 0;
    int rc = 0;

    pthread_mutex_lock(&w->idx_mu);
    const struct wal_part *p = wal_part_find(&w->idx, partition);
    if (p != NULL) {
        plan = malloc((w->idx.nsegs ? w->idx.nsegs : 1) * sizeof(*plan));
        rc = plan == NULL ? -TRINE_ENOMEM : wal_read_plan(w, p, lo, hi, plan, &np, &cuts);
    }
    pthread_mutex_unlock(&w->idx_mu);
    if (rc < 0) err_set(err, rc, "wal_read: out of memory");

    bool done = false;
    for (size_t i = 0; i < np && rc == 0 && !done; i++) {
        const struct wal_plan *pl = &plan[i];
        struct wal_reader rd;
        wal_reader_init(&rd, w->fs, pl->s->fd, pl->size);
        for (uint64_t off = pl->from; off <= pl->to && rc == 0 && !done;) {
            const uint8_t *b;
            struct wal_rechdr h;
            const char *why = "record cut short";
            rc = wal_reader_get(&rd, off, WAL_REC_HDR_BYTES, &b);
            if (rc == 0 && wal_rec_decode(b, pl->size - off, &h, &why) == 0)
                rc = wal_reader_get(&rd, off, wal_rec_bytes(h.len), &b);
            else if (rc == 0)
                rc = -TRINE_ECORRUPT;
            if (rc == 0 && !wal_rec_crc_ok(b, &h, w->salt)) {
                why = "CRC mismatch";
                rc = -TRINE_ECORRUPT;
            }
            if (rc != 0) {
                char path[WAL_PATH_MAX];
                wal_seg_path(w, pl->s->seq, "", path, sizeof(path));
                rc = err_set(err, rc < 0 ? rc : -TRINE_ECORRUPT, "wal_read: %s at offset %llu: %s",
                             path, (unsigned long long)off, why);
                break;
            }
            if (h.partition == partition && h.type == WAL_ENTRY && h.index >= lo &&
                wal_entry_live(&cuts, pl->s->seq, off, h.index)) {
                if (h.index <= hi) {
                    struct wal_record rec = {.partition = partition,
                                             .type = WAL_ENTRY,
                                             .term = h.term,
                                             .index = h.index,
                                             .payload = b + WAL_REC_HDR_BYTES,
                                             .len = h.len};
                    if (fn(ctx, &rec) != 0) done = true;
                }
                if (h.index >= hi) done = true; /* live entries only grow from here */
            }
            off += wal_rec_bytes(h.len);
        }
        wal_reader_free(&rd);
    }

    pthread_mutex_lock(&w->idx_mu);
    for (size_t i = 0; i < np; i++)
        wal_seg_unref(plan[i].s, w->fs);
    pthread_mutex_unlock(&w->idx_mu);
    free(plan);
    free(cuts.cuts);
    free(cuts.cut_min);
    return rc;
}
