/*
 * codec.c - the codec's small pieces: the decode scratch, limit lookup, frame
 * headers, deep equality and names.
 *
 * Scratch: a msgpack_zone (msgpack-c's chunked bump allocator). Allocations
 * are rounded to 8 bytes and counted in `used`, which the decoder keeps
 * under decode_mem. On reset, if the last message needed more than the first
 * chunk, the zone is rebuilt with one chunk big enough for it (capped at
 * SCRATCH_KEEP_MAX), so a stream of similar messages decodes without malloc.
 */
#include "codec/codec.h"

#include <stddef.h>

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec_desc.h"

#define SCRATCH_CHUNK_MIN 8192u
#define SCRATCH_KEEP_MAX  (4u << 20) /* never keep more than this between decodes */

struct codec_scratch {
    msgpack_zone zone;
    size_t chunk_bytes; /* the zone's chunk size: what it holds after a clear */
    size_t used;        /* bytes handed out since the last reset */
};

struct codec_scratch *codec_scratch_new(void)
{
    struct codec_scratch *s = malloc(sizeof(*s));
    if (s == NULL) return NULL;
    if (!msgpack_zone_init(&s->zone, SCRATCH_CHUNK_MIN)) {
        free(s);
        return NULL;
    }
    s->chunk_bytes = SCRATCH_CHUNK_MIN;
    s->used = 0;
    return s;
}

void codec_scratch_reset(struct codec_scratch *s)
{
    if (s->used > s->chunk_bytes && s->chunk_bytes < SCRATCH_KEEP_MAX) {
        size_t want = s->chunk_bytes;
        while (want < s->used && want < SCRATCH_KEEP_MAX)
            want *= 2;
        msgpack_zone bigger;
        if (msgpack_zone_init(&bigger, want)) {
            msgpack_zone_destroy(&s->zone);
            s->zone = bigger; /* the zone holds no pointers into itself */
            s->chunk_bytes = want;
            s->used = 0;
            return;
        }
        /* Out of memory: keep the old zone, just clear it. */
    }
    msgpack_zone_clear(&s->zone);
    s->used = 0;
}

void codec_scratch_free(struct codec_scratch *s)
{
    if (s == NULL) return;
    msgpack_zone_destroy(&s->zone);
    free(s);
}

size_t codec_scratch_used(const struct codec_scratch *s)
{
    return s->used;
}

int codec_scratch_alloc(struct codec_scratch *s, size_t n, size_t mem_max, void **out)
{
    if (n > SIZE_MAX - 7) return -TRINE_ETOO_LARGE;
    size_t r = (n + 7) & ~(size_t)7;
    if (s->used > mem_max || r > mem_max - s->used) return -TRINE_ETOO_LARGE;
    void *p = msgpack_zone_malloc(&s->zone, r);
    if (p == NULL) return -TRINE_ENOMEM;
    s->used += r;
    *out = p;
    return 0;
}

uint32_t codec_limit_get(const struct codec_limits *l, unsigned id)
{
    uint32_t v;
    memcpy(&v, (const uint8_t *)l + codec_limit_offsets[id], sizeof(v));
    return v;
}

uint32_t codec_field_bound(const struct codec_field_desc *f, const struct codec_limits *l)
{
    if (f->limit != CODEC_LIMIT_NONE) return codec_limit_get(l, f->limit);
    return f->bound ? f->bound : UINT32_MAX;
}

int codec_frame_length(const uint8_t hdr[CODEC_FRAME_HEADER_BYTES], const struct codec_limits *lim,
                       uint32_t *len, struct trine_err *err)
{
    struct codec_limits def;
    if (lim == NULL) {
        def = codec_limits_default();
        lim = &def;
    }
    uint32_t n = get_u32be(hdr);
    *len = 0;
    if (n == 0) return err_set(err, -TRINE_EBAD_REQUEST, "frame: empty body");
    if (n > lim->frame_bytes_max)
        return err_set(err, -TRINE_ETOO_LARGE, "frame: body of %u bytes exceeds the limit %u", n,
                       lim->frame_bytes_max);
    *len = n;
    return 0;
}

int codec_decode_frame(const uint8_t *p, size_t n, const struct codec_limits *lim,
                       struct codec_scratch *scratch, struct codec_msg *out, size_t *consumed,
                       struct trine_err *err)
{
    *consumed = 0;
    if (n < CODEC_FRAME_HEADER_BYTES) return -TRINE_EAGAIN;
    uint32_t len = 0;
    int rc = codec_frame_length(p, lim, &len, err);
    if (rc) return rc;
    if (n - CODEC_FRAME_HEADER_BYTES < len) return -TRINE_EAGAIN;
    rc = codec_decode(p + CODEC_FRAME_HEADER_BYTES, len, lim, scratch, out, err);
    if (rc) return rc;
    *consumed = CODEC_FRAME_HEADER_BYTES + (size_t)len;
    return 0;
}

/* ---- equality ---------------------------------------------------------------- */

static bool eq_struct(const struct codec_struct_desc *sd, const uint8_t *a, const uint8_t *b);

static bool eq_value(const struct codec_field_desc *f, const uint8_t *a, const uint8_t *b)
{
    switch (f->kind) {
    case CODEC_K_BOOL: {
        bool x, y;
        memcpy(&x, a, sizeof(x));
        memcpy(&y, b, sizeof(y));
        return x == y;
    }
    case CODEC_K_STR:
    case CODEC_K_BIN: {
        struct codec_bytes x, y;
        memcpy(&x, a, sizeof(x));
        memcpy(&y, b, sizeof(y));
        return x.len == y.len && (x.len == 0 || memcmp(x.data, y.data, x.len) == 0);
    }
    case CODEC_K_STRUCT:
        return eq_struct(f->sub, a, b);
    default: /* integers and enums: compare the stored bytes */
        return memcmp(a, b, f->elem_size) == 0;
    }
}

static bool eq_struct(const struct codec_struct_desc *sd, const uint8_t *a, const uint8_t *b)
{
    for (uint32_t i = 0; i < sd->nfields; i++) {
        const struct codec_field_desc *f = &sd->fields[i];
        if (!f->is_array) {
            if (!eq_value(f, a + f->offset, b + f->offset)) return false;
            continue;
        }
        uint32_t n = codec_load_count(a, f->count_offset);
        if (n != codec_load_count(b, f->count_offset)) return false;
        const uint8_t *ea = codec_load_ptr(a, f->offset);
        const uint8_t *eb = codec_load_ptr(b, f->offset);
        for (uint32_t k = 0; k < n; k++)
            if (!eq_value(f, ea + (size_t)k * f->elem_size, eb + (size_t)k * f->elem_size))
                return false;
    }
    return true;
}

bool codec_msg_equal(const struct codec_msg *a, const struct codec_msg *b)
{
    if (a->type != b->type) return false;
    const struct codec_msg_desc *md = codec_msg_table[a->type];
    if (md == NULL) return false;
    return eq_struct(md->body, (const uint8_t *)a + md->offset, (const uint8_t *)b + md->offset);
}

const char *codec_msg_name(unsigned type)
{
    if (type > 255 || codec_msg_table[type] == NULL) return NULL;
    return codec_msg_table[type]->name;
}

struct codec_bytes codec_bytes_str(const char *s)
{
    struct codec_bytes b = {(const uint8_t *)s, (uint32_t)strlen(s)};
    return b;
}

/* Every request and reply starts with its common header, `hdr` (schema field #1). */
/* f names a union member: it cannot be parenthesized. */
/* NOLINTBEGIN(bugprone-macro-parentheses) */
#define REP(t, f)                                                                                  \
    {                                                                                              \
        CODEC_MSG_##t, offsetof(struct codec_msg, f.hdr)                                           \
    }
static const struct {
    uint8_t type;
    size_t off;
} codec_rep_hdrs[] = {
    REP(ERROR_REPLY, error_reply),
    REP(PUT_REPLY, put_reply),
    REP(GET_REPLY, get_reply),
    REP(DELETE_REPLY, delete_reply),
    REP(CAS_REPLY, cas_reply),
    REP(SCAN_REPLY, scan_reply),
    REP(CLUSTER_STATUS_REPLY, cluster_status_reply),
    REP(PARTITION_MAP_REPLY, partition_map_reply),
};
static const struct {
    uint8_t type;
    size_t off;
} codec_req_hdrs[] = {
    REP(PUT_REQ, put_req),
    REP(GET_REQ, get_req),
    REP(DELETE_REQ, delete_req),
    REP(CAS_REQ, cas_req),
    REP(SCAN_REQ, scan_req),
    REP(CLUSTER_STATUS_REQ, cluster_status_req),
    REP(PARTITION_MAP_REQ, partition_map_req),
};
#undef REP
/* NOLINTEND(bugprone-macro-parentheses) */

struct codec_rep_header *codec_rep_header(struct codec_msg *m)
{
    for (size_t i = 0; i < sizeof(codec_rep_hdrs) / sizeof(codec_rep_hdrs[0]); i++) {
        if (codec_rep_hdrs[i].type == m->type)
            return (struct codec_rep_header *)((char *)m + codec_rep_hdrs[i].off);
    }
    return NULL;
}

struct codec_req_header *codec_req_header(struct codec_msg *m)
{
    for (size_t i = 0; i < sizeof(codec_req_hdrs) / sizeof(codec_req_hdrs[0]); i++) {
        if (codec_req_hdrs[i].type == m->type)
            return (struct codec_req_header *)((char *)m + codec_req_hdrs[i].off);
    }
    return NULL;
}
