/*
 * record.c - encoding and checking of one WAL record.
 *
 * Record layout (all integers big-endian), WAL_REC_HDR_BYTES = 40:
 *
 *   off size field
 *     0    4 crc        see below
 *     4    4 prev_crc   crc of the previous record in the log (for a segment's
 *                       first record: the segment header's start_crc)
 *     8    4 batch      bit 31: first record of its batch; bits 0..30: batch
 *                       number (+1 per write+fdatasync, wraps at 2^31)
 *    12    1 type       1 ENTRY, 2 HARDSTATE, 3 TRUNCATE, 4 SNAPSHOT
 *    13    3 reserved   zero
 *    16    4 len        payload bytes
 *    20    4 partition
 *    24    8 term
 *    32    8 index
 *    40  len payload
 *
 *   crc = crc32c(crc32c(salt, bytes[12 .. 40+len)), bytes[4 .. 12))
 *
 * with crc32c(c, p, n) continuing CRC c over p (base/crc32c.h) and salt the
 * log's random 32-bit value from the segment header. So the CRC covers the
 * whole record including prev_crc (a gap or a reorder breaks the chain), and the
 * part that only the sync thread knows (prev_crc, batch) comes last: appenders
 * CRC their own records in parallel and the sync thread adds 8 bytes per record.
 * The salt means bytes inside a payload (e.g. a client value that looks like a
 * record) cannot pass as a record when recovery scans past a bad spot.
 *
 * Invariant: wal_rec_decode never reads past `avail`; nothing here asserts on
 * bytes read from disk.
 */
#include <string.h>

#include "base/buf.h"
#include "base/crc32c.h"
#include "base/status.h"
#include "wal/wal_int.h"

bool wal_type_valid(uint8_t type)
{
    return type >= WAL_ENTRY && type <= WAL_TYPE_MAX;
}

void wal_rec_encode(uint8_t *out, const struct wal_record *r, uint32_t salt)
{
    memset(out + 4, 0, 12);
    out[12] = r->type;
    put_u32be(out + 16, r->len);
    put_u32be(out + 20, r->partition);
    put_u64be(out + 24, r->term);
    put_u64be(out + 32, r->index);
    if (r->len > 0) memcpy(out + WAL_REC_HDR_BYTES, r->payload, r->len);
    put_u32be(out, crc32c(salt, out + 12, WAL_REC_HDR_BYTES - 12 + (size_t)r->len));
}

uint32_t wal_rec_seal(uint8_t *rec, uint32_t prev_crc, uint32_t batch, bool first)
{
    put_u32be(rec + 4, prev_crc);
    put_u32be(rec + 8, (batch & WAL_BATCH_MASK) | (first ? WAL_BATCH_FIRST : 0));
    uint32_t crc = crc32c(get_u32be(rec), rec + 4, 8);
    put_u32be(rec, crc);
    return crc;
}

int wal_rec_decode(const uint8_t *p, uint64_t avail, struct wal_rechdr *h, const char **why)
{
    if (avail < WAL_REC_HDR_BYTES) {
        *why = "record header cut short";
        return -TRINE_ECORRUPT;
    }
    h->crc = get_u32be(p);
    h->prev_crc = get_u32be(p + 4);
    uint32_t bw = get_u32be(p + 8);
    h->batch = bw & WAL_BATCH_MASK;
    h->first = (bw & WAL_BATCH_FIRST) != 0;
    h->type = p[12];
    h->len = get_u32be(p + 16);
    h->partition = get_u32be(p + 20);
    h->term = get_u64be(p + 24);
    h->index = get_u64be(p + 32);
    if (!wal_type_valid(h->type)) {
        *why = h->type == 0 && h->crc == 0 ? "zeroed bytes" : "bad record type";
        return -TRINE_ECORRUPT;
    }
    if (p[13] != 0 || p[14] != 0 || p[15] != 0) {
        *why = "reserved bytes not zero";
        return -TRINE_ECORRUPT;
    }
    if (h->len > WAL_PAYLOAD_FORMAT_MAX) {
        *why = "record length out of range";
        return -TRINE_ECORRUPT;
    }
    if (wal_rec_bytes(h->len) > avail) {
        *why = "record runs past the end of the file";
        return -TRINE_ECORRUPT;
    }
    return 0;
}

bool wal_rec_crc_ok(const uint8_t *rec, const struct wal_rechdr *h, uint32_t salt)
{
    uint32_t c = crc32c(salt, rec + 12, WAL_REC_HDR_BYTES - 12 + (size_t)h->len);
    return crc32c(c, rec + 4, 8) == h->crc;
}
