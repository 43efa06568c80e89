/*
 * record.c - encodings of the data record and the dedupe record.
 *
 *   data record ('D' value):   fmt u8 = 1 | version u64 | create_revision u64
 *                              | mod_revision u64 | expire_at_ms u64 | value
 *   dedupe record ('C' value): last_index u64 | lru_index u64 | n u8
 *                              | n x (seq u64 | status u8 | revision u64 | version u64)
 *   canonical dedupe record (snapshots, hashes): the same without lru_index.
 *
 * Decoders check every length and count: the bytes come from disk or from a
 * snapshot stream sent by another node.
 */
#include "store/store_int.h"

void store_rec_encode_hdr(uint8_t out[STORE_REC_HDR], const struct store_meta *m)
{
    out[0] = STORE_REC_FMT;
    put_u64be(out + 1, m->version);
    put_u64be(out + 9, m->create_revision);
    put_u64be(out + 17, m->mod_revision);
    put_u64be(out + 25, m->expire_at_ms);
}

int store_rec_decode(const uint8_t *p, size_t n, struct store_meta *m, const uint8_t **value,
                     size_t *value_len)
{
    if (n < STORE_REC_HDR || p[0] != STORE_REC_FMT) return -TRINE_ECORRUPT;
    if (n - STORE_REC_HDR > STORE_VALUE_MAX) return -TRINE_ECORRUPT;
    m->version = get_u64be(p + 1);
    m->create_revision = get_u64be(p + 9);
    m->mod_revision = get_u64be(p + 17);
    m->expire_at_ms = get_u64be(p + 25);
    /* A stored key always has version >= 1 and was created no later than it
     * was last modified. */
    if (m->version == 0 || m->create_revision > m->mod_revision) return -TRINE_ECORRUPT;
    if (value) *value = p + STORE_REC_HDR;
    if (value_len) *value_len = n - STORE_REC_HDR;
    return 0;
}

static size_t dd_put_entries(uint8_t *out, const struct store_dd_rec *r)
{
    out[0] = r->n;
    uint8_t *q = out + 1;
    for (unsigned i = 0; i < r->n; i++, q += STORE_DD_ENTRY) {
        put_u64be(q, r->e[i].seq);
        q[8] = r->e[i].status;
        put_u64be(q + 9, r->e[i].revision);
        put_u64be(q + 17, r->e[i].version);
    }
    return (size_t)(q - out);
}

static int dd_get_entries(const uint8_t *p, size_t n, struct store_dd_rec *r)
{
    if (n < 1 || p[0] > STORE_DEDUPE_PER_CLIENT || n != 1 + (size_t)p[0] * STORE_DD_ENTRY)
        return -TRINE_ECORRUPT;
    r->n = p[0];
    const uint8_t *q = p + 1;
    for (unsigned i = 0; i < r->n; i++, q += STORE_DD_ENTRY) {
        r->e[i].seq = get_u64be(q);
        r->e[i].status = q[8];
        r->e[i].revision = get_u64be(q + 9);
        r->e[i].version = get_u64be(q + 17);
        if (r->e[i].seq == 0) return -TRINE_ECORRUPT;
    }
    return 0;
}

size_t store_dd_encode(uint8_t out[STORE_DD_REC_MAX], const struct store_dd_rec *r)
{
    put_u64be(out, r->last_index);
    put_u64be(out + 8, r->lru_index);
    return 16 + dd_put_entries(out + 16, r);
}

int store_dd_decode(const uint8_t *p, size_t n, struct store_dd_rec *r)
{
    if (n < STORE_DD_HDR) return -TRINE_ECORRUPT;
    r->last_index = get_u64be(p);
    r->lru_index = get_u64be(p + 8);
    if (r->lru_index > r->last_index) return -TRINE_ECORRUPT;
    return dd_get_entries(p + 16, n - 16, r);
}

size_t store_dd_encode_canon(uint8_t out[STORE_DD_REC_MAX], const struct store_dd_rec *r)
{
    put_u64be(out, r->last_index);
    return 8 + dd_put_entries(out + 8, r);
}

int store_dd_decode_canon(const uint8_t *p, size_t n, struct store_dd_rec *r)
{
    if (n < 9) return -TRINE_ECORRUPT;
    r->last_index = get_u64be(p);
    r->lru_index = r->last_index;
    return dd_get_entries(p + 8, n - 8, r);
}
