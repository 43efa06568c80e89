/*
 * test_codec.c - round trips of every message type, exact wire bytes, foreign
 * encodings, older (shorter) and newer (longer) shapes of every message and
 * struct, every error class, truncation, seeded random mutation, and the
 * "huge declared length" attacks.
 *
 * Messages are built generically from the descriptor tables (fill_*), so a
 * new message in proto/trine.schema is covered without touching this file.
 * Every decode reads from an exact-size heap copy, so ASan sees any overread.
 *
 * Generator mode: CODEC_WRITE_CORPUS=dir test_codec writes a seed corpus of
 * valid bodies (tests/fuzz/corpus/codec/) and exits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/buf.h"
#include "base/rand.h"
#include "base/status.h"
#include "codec/codec.h"
#include "codec/codec_desc.h"
#include "testutil.h"

/* ---- a bump arena for the test's own message contents ------------------------ */

#define ARENA_BYTES (8u << 20)

struct arena {
    uint8_t *mem;
    size_t used;
};

static struct arena g_arena;

static void *arena_alloc(size_t n)
{
    size_t r = (n + 7) & ~(size_t)7;
    if (g_arena.mem == NULL) {
        g_arena.mem = malloc(ARENA_BYTES);
        assert_non_null(g_arena.mem);
    }
    assert_true(g_arena.used + r <= ARENA_BYTES);
    void *p = g_arena.mem + g_arena.used;
    g_arena.used += r;
    return p;
}

static void arena_reset(void)
{
    g_arena.used = 0;
}

/* ---- building messages from the descriptors --------------------------------- */

enum fill_mode { FILL_ZERO, FILL_RANDOM, FILL_MAX };

struct filler {
    enum fill_mode mode;
    struct rng *rng;
    const struct codec_limits *lim;
    uint32_t bytes_cap; /* RANDOM: longest str/bin */
    uint32_t count_cap; /* RANDOM: longest array */
};

static void store_uint(uint8_t *dst, uint32_t size, uint64_t v)
{
    uint8_t u8 = (uint8_t)v;
    uint16_t u16 = (uint16_t)v;
    uint32_t u32 = (uint32_t)v;
    switch (size) {
    case 1:
        memcpy(dst, &u8, 1);
        break;
    case 2:
        memcpy(dst, &u16, 2);
        break;
    case 4:
        memcpy(dst, &u32, 4);
        break;
    default:
        memcpy(dst, &v, 8);
        break;
    }
}

/* A random value of a random bit width, so every msgpack int form shows up. */
static uint64_t rand_uint(struct rng *r, uint32_t size)
{
    uint64_t bits = rng_below(r, 8 * size + 1);
    if (bits == 0) return 0;
    uint64_t v = rng_next(r);
    return bits < 64 ? v & ((UINT64_C(1) << bits) - 1) : v;
}

static uint32_t min_u32(uint32_t a, uint32_t b)
{
    return a < b ? a : b;
}

static void fill_struct(struct filler *fl, const struct codec_struct_desc *sd, uint8_t *base);

static void fill_value(struct filler *fl, const struct codec_field_desc *f, uint8_t *dst)
{
    switch (f->kind) {
    case CODEC_K_BOOL: {
        bool b = fl->mode == FILL_MAX || (fl->mode == FILL_RANDOM && (rng_next(fl->rng) & 1));
        memcpy(dst, &b, sizeof(b));
        break;
    }
    case CODEC_K_ENUM: {
        uint32_t i = 0;
        if (fl->mode == FILL_MAX) i = f->en->count - 1;
        if (fl->mode == FILL_RANDOM) i = (uint32_t)rng_below(fl->rng, f->en->count);
        *dst = f->en->values[i];
        break;
    }
    case CODEC_K_STR:
    case CODEC_K_BIN: {
        uint32_t bound = codec_field_bound(f, fl->lim);
        struct codec_bytes b = {NULL, 0};
        if (fl->mode == FILL_MAX) b.len = bound;
        if (fl->mode == FILL_RANDOM)
            b.len = (uint32_t)rng_below(fl->rng, min_u32(bound, fl->bytes_cap) + 1);
        if (b.len > 0) {
            uint8_t *p = arena_alloc(b.len);
            if (fl->mode == FILL_RANDOM)
                rng_fill(fl->rng, p, b.len);
            else
                memset(p, 0xa5, b.len);
            b.data = p;
        }
        memcpy(dst, &b, sizeof(b));
        break;
    }
    case CODEC_K_STRUCT:
        fill_struct(fl, f->sub, dst);
        break;
    default: {
        uint64_t v = 0;
        if (fl->mode == FILL_MAX) v = UINT64_MAX;
        if (fl->mode == FILL_RANDOM) v = rand_uint(fl->rng, f->elem_size);
        store_uint(dst, f->elem_size, v);
        break;
    }
    }
}

static void fill_struct(struct filler *fl, const struct codec_struct_desc *sd, uint8_t *base)
{
    memset(base, 0, sd->size);
    for (uint32_t i = 0; i < sd->nfields; i++) {
        const struct codec_field_desc *f = &sd->fields[i];
        if (!f->is_array) {
            fill_value(fl, f, base + f->offset);
            continue;
        }
        uint32_t bound = codec_field_bound(f, fl->lim), n = 0;
        if (fl->mode == FILL_MAX) n = bound;
        if (fl->mode == FILL_RANDOM)
            n = (uint32_t)rng_below(fl->rng, min_u32(bound, fl->count_cap) + 1);
        uint8_t *items = n ? arena_alloc((size_t)n * f->elem_size) : NULL;
        for (uint32_t k = 0; k < n; k++)
            fill_value(fl, f, items + (size_t)k * f->elem_size);
        codec_store_ptr(base, f->offset, items);
        memcpy(base + f->count_offset, &n, sizeof(n));
    }
}

static void fill_msg(struct filler *fl, uint8_t type, struct codec_msg *m)
{
    const struct codec_msg_desc *md = codec_msg_table[type];
    assert_non_null(md);
    memset(m, 0, sizeof(*m));
    m->type = type;
    fill_struct(fl, md->body, (uint8_t *)m + md->offset);
}

static void random_msg(struct rng *r, const struct codec_limits *lim, struct codec_msg *m)
{
    struct filler fl = {FILL_RANDOM, r, lim, 40, 3};
    fill_msg(&fl, codec_msg_types[rng_below(r, CODEC_MSG_TYPE_COUNT)], m);
}

/* Small limits so that "maximal" messages stay small, yet cross the msgpack
 * size classes: 300 bytes needs bin16/str16, 17 elements needs array16. */
static struct codec_limits max_limits(void)
{
    struct codec_limits l = codec_limits_default();
    for (unsigned id = 0; id < CODEC_LIMIT_COUNT; id++) {
        if (id == CODEC_LIMIT_FRAME || id == CODEC_LIMIT_DECODE_MEM) continue;
        uint32_t v = codec_limit_is_count[id] ? 17 : 300;
        memcpy((uint8_t *)&l + codec_limit_offsets[id], &v, sizeof(v));
    }
    return l;
}

/* ---- helpers ---------------------------------------------------------------- */

/* Decodes from an exact-size heap copy of p (ASan catches any overread),
 * freed on return: only for checking the status, *out's bytes dangle after. */
static int decode_copy(const uint8_t *p, size_t n, const struct codec_limits *lim,
                       struct codec_scratch *s, struct codec_msg *out, struct trine_err *err)
{
    uint8_t *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    if (n) memcpy(copy, p, n);
    int rc = codec_decode(copy, n, lim, s, out, err);
    free(copy);
    return rc;
}

static void encode_ok(struct buf *b, const struct codec_msg *m, const struct codec_limits *lim)
{
    struct trine_err err;
    err_clear(&err);
    buf_reset(b);
    int rc = codec_encode_body(b, m, lim, &err);
    if (rc) fail_msg("encode %s: %s", codec_msg_name(m->type), err.msg);
}

/* Encodes m as a frame, decodes it, checks equality and that re-encoding
 * gives the same bytes. */
static void check_round_trip(const struct codec_msg *m, const struct codec_limits *lim,
                             struct codec_scratch *s)
{
    struct buf f1, f2;
    buf_init(&f1);
    buf_init(&f2);
    struct trine_err err;
    err_clear(&err);
    assert_int_equal(codec_encode(&f1, m, lim, &err), 0);
    assert_true(f1.len > CODEC_FRAME_HEADER_BYTES);
    uint32_t len = 0;
    assert_int_equal(codec_frame_length(f1.data, lim, &len, &err), 0);
    assert_int_equal(len, f1.len - CODEC_FRAME_HEADER_BYTES);

    struct codec_msg d;
    size_t used = 0;
    int rc = codec_decode_frame(f1.data, f1.len, lim, s, &d, &used, &err);
    if (rc) fail_msg("decode %s: %s", codec_msg_name(m->type), err.msg);
    assert_int_equal(used, f1.len);
    assert_int_equal(d.type, m->type);
    assert_true(codec_msg_equal(m, &d));
    assert_int_equal(codec_encode(&f2, &d, lim, &err), 0);
    assert_int_equal(f1.len, f2.len);
    assert_memory_equal(f1.data, f2.data, f1.len);
    buf_free(&f1);
    buf_free(&f2);
}

/* ---- round trips ----------------------------------------------------------- */

static void test_round_trip_all_types(void **state)
{
    (void)state;
    struct rng r;
    rng_seed(&r, rng_test_seed("codec round trip"));
    struct codec_scratch *s = codec_scratch_new();
    assert_non_null(s);
    struct codec_limits def = codec_limits_default(), maxl = max_limits();
    struct codec_msg m;
    for (unsigned t = 0; t < CODEC_MSG_TYPE_COUNT; t++) {
        uint8_t type = codec_msg_types[t];
        struct filler zero = {FILL_ZERO, &r, &def, 0, 0};
        fill_msg(&zero, type, &m);
        check_round_trip(&m, &def, s);
        for (int i = 0; i < 30; i++) {
            struct filler rnd = {FILL_RANDOM, &r, &def, 300, 20};
            fill_msg(&rnd, type, &m);
            check_round_trip(&m, &def, s);
            arena_reset();
        }
        struct filler mx = {FILL_MAX, &r, &maxl, 0, 0};
        fill_msg(&mx, type, &m);
        check_round_trip(&m, &maxl, s);
        arena_reset();
    }
    codec_scratch_free(s);
}

/* Changing any one field must change equality and the encoding: catches a
 * field the encoder or decoder silently drops. */
static void perturb_value(const struct codec_field_desc *f, uint8_t *v);

static void perturb_struct(const struct codec_struct_desc *sd, uint32_t i, uint8_t *base)
{
    const struct codec_field_desc *f = &sd->fields[i];
    if (!f->is_array) {
        perturb_value(f, base + f->offset);
        return;
    }
    uint32_t n = codec_load_count(base, f->count_offset);
    if (n > 0) {
        n--;
    } else {
        uint8_t *items = arena_alloc(f->elem_size);
        memset(items, 0, f->elem_size);
        if (f->kind == CODEC_K_STRUCT) {
            struct codec_limits def = codec_limits_default();
            struct filler z = {FILL_ZERO, NULL, &def, 0, 0};
            fill_struct(&z, f->sub, items);
        } else if (f->kind == CODEC_K_ENUM) {
            *items = f->en->values[0];
        }
        codec_store_ptr(base, f->offset, items);
        n = 1;
    }
    memcpy(base + f->count_offset, &n, sizeof(n));
}

static void perturb_value(const struct codec_field_desc *f, uint8_t *v)
{
    switch (f->kind) {
    case CODEC_K_BOOL: {
        bool b;
        memcpy(&b, v, sizeof(b));
        b = !b;
        memcpy(v, &b, sizeof(b));
        break;
    }
    case CODEC_K_ENUM:
        for (uint32_t i = 0; i < f->en->count; i++)
            if (f->en->values[i] == *v) {
                *v = f->en->values[(i + 1) % f->en->count];
                break;
            }
        break;
    case CODEC_K_STR:
    case CODEC_K_BIN: {
        struct codec_bytes b;
        memcpy(&b, v, sizeof(b));
        uint8_t *p = arena_alloc(b.len + 1);
        if (b.len) memcpy(p, b.data, b.len);
        if (b.len)
            p[0] ^= 1;
        else
            p[0] = 'x', b.len = 1;
        b.data = p;
        memcpy(v, &b, sizeof(b));
        break;
    }
    case CODEC_K_STRUCT:
        perturb_struct(f->sub, 0, v);
        break;
    default: {
        uint64_t x = 0;
        memcpy(&x, v, f->elem_size); /* little-endian: low bytes */
        store_uint(v, f->elem_size, x + 1);
        break;
    }
    }
}

static void test_every_field_matters(void **state)
{
    (void)state;
    struct rng r;
    rng_seed(&r, rng_test_seed("codec fields"));
    struct codec_scratch *s = codec_scratch_new();
    struct codec_limits def = codec_limits_default();
    struct buf a, b;
    buf_init(&a);
    buf_init(&b);
    for (unsigned t = 0; t < CODEC_MSG_TYPE_COUNT; t++) {
        const struct codec_msg_desc *md = codec_msg_table[codec_msg_types[t]];
        struct codec_msg m, p;
        struct filler rnd = {FILL_RANDOM, &r, &def, 30, 3};
        fill_msg(&rnd, md->type, &m);
        encode_ok(&a, &m, &def);
        for (uint32_t i = 0; i < md->body->nfields; i++) {
            p = m;
            perturb_struct(md->body, i, (uint8_t *)&p + md->offset);
            if (codec_msg_equal(&m, &p))
                fail_msg("%s.%s: perturbed message still equal", md->name,
                         md->body->fields[i].name);
            encode_ok(&b, &p, &def);
            assert_false(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
            check_round_trip(&p, &def, s);
        }
        arena_reset();
    }
    buf_free(&a);
    buf_free(&b);
    codec_scratch_free(s);
}

static void test_limits_default(void **state)
{
    (void)state;
    struct codec_limits l = codec_limits_default();
    assert_int_equal(l.key_bytes_max, 4096);
    assert_int_equal(l.value_bytes_max, 1u << 20);
    assert_int_equal(l.frame_bytes_max, 16u << 20);
    assert_int_equal(codec_limit_get(&l, CODEC_LIMIT_KEY), 4096);
    assert_string_equal(codec_msg_name(CODEC_MSG_PUT_REQ), "put_req");
    assert_string_equal(codec_msg_name(CODEC_MSG_COMMAND), "command");
    assert_null(codec_msg_name(250));
    for (unsigned t = 0; t < CODEC_MSG_TYPE_COUNT; t++)
        assert_non_null(codec_msg_table[codec_msg_types[t]]);
}

/* ---- exact bytes and foreign encodings ---------------------------------------- */

static void test_golden_put_req(void **state)
{
    (void)state;
    struct codec_msg m = {.type = CODEC_MSG_PUT_REQ};
    m.put_req.hdr = (struct codec_req_header){.req_id = 7,
                                              .client_id = 9,
                                              .seq = 3,
                                              .consistency = CODEC_CONSISTENCY_STRONG,
                                              .timeout_ms = 1000};
    m.put_req.key = codec_bytes_str("k");
    m.put_req.value = codec_bytes_str("vv");
    static const uint8_t want[] = {
        0x00, 0x00, 0x00, 0x12,                         /* body length 18 */
        0x95, 0x01,                                     /* [1, */
        0x95, 0x07, 0x09, 0x03, 0x01, 0xcd, 0x03, 0xe8, /* [7, 9, 3, 1, 1000], */
        0xc4, 0x01, 'k',  0xc4, 0x02, 'v',  'v',        /* bin "k", bin "vv", */
        0x00,                                           /* ttl 0] */
    };
    struct buf b;
    buf_init(&b);
    assert_int_equal(codec_encode(&b, &m, NULL, NULL), 0);
    assert_int_equal(b.len, sizeof(want));
    assert_memory_equal(b.data, want, sizeof(want));
    /* Appending keeps what was there. */
    assert_int_equal(codec_encode(&b, &m, NULL, NULL), 0);
    assert_memory_equal(b.data + sizeof(want), want, sizeof(want));
    buf_free(&b);
}

/* delete_req written the way another msgpack library might: wide and signed
 * ints, str for bin. */
static void test_foreign_encodings_accepted(void **state)
{
    (void)state;
    static const uint8_t body[] = {
        0x93,                                        /* 3 elements: type + 2 fields */
        0xd3, 0,    0,    0,    0,    0, 0, 0, 0x03, /* int64 3 = delete_req */
        0x95,                                        /* header */
        0xcf, 0,    0,    0,    0,    0, 0, 0, 0x07, /* req_id: uint64 7 */
        0xd0, 0x05,                                  /* client_id: int8 5 */
        0xd1, 0x01, 0x00,                            /* seq: int16 256 */
        0xcc, 0x02,                                  /* consistency: uint8 2 */
        0xce, 0x00, 0x00, 0x27, 0x10,                /* timeout_ms: uint32 10000 */
        0xa3, 'a',  'b',  'c',                       /* key as fixstr "abc" */
    };
    struct codec_msg m;
    struct trine_err err;
    err_clear(&err);
    int rc = codec_decode(body, sizeof(body), NULL, NULL, &m, &err); /* m points into body */
    if (rc) fail_msg("%s", err.msg);
    assert_int_equal(m.type, CODEC_MSG_DELETE_REQ);
    assert_int_equal(m.delete_req.hdr.req_id, 7);
    assert_int_equal(m.delete_req.hdr.client_id, 5);
    assert_int_equal(m.delete_req.hdr.seq, 256);
    assert_int_equal(m.delete_req.hdr.consistency, CODEC_CONSISTENCY_ALL);
    assert_int_equal(m.delete_req.hdr.timeout_ms, 10000);
    assert_int_equal(m.delete_req.key.len, 3);
    assert_memory_equal(m.delete_req.key.data, "abc", 3);
}

/* Decoded bytes point into the input buffer: no copy. */
static void test_zero_copy(void **state)
{
    (void)state;
    struct codec_msg m = {.type = CODEC_MSG_GET_REPLY};
    m.get_reply.value = codec_bytes_str("some value");
    m.get_reply.hdr.message = codec_bytes_str("ok");
    struct buf b;
    buf_init(&b);
    assert_int_equal(codec_encode_body(&b, &m, NULL, NULL), 0);
    struct codec_msg d;
    assert_int_equal(codec_decode(b.data, b.len, NULL, NULL, &d, NULL), 0);
    assert_true(d.get_reply.value.data > b.data && d.get_reply.value.data < b.data + b.len);
    assert_true(d.get_reply.hdr.message.data > b.data);
    buf_free(&b);
}

/* A command body inside an append entry inside a batch: the layering used by
 * the replica (entry data = command body). */
static void test_nested_command_in_batch(void **state)
{
    (void)state;
    struct codec_msg cmd = {.type = CODEC_MSG_COMMAND};
    cmd.command.op = CODEC_CMD_OP_PUT;
    cmd.command.key = codec_bytes_str("user/1");
    cmd.command.value = codec_bytes_str("{\"n\":1}");
    cmd.command.client_id = 42;
    cmd.command.seq = 7;
    struct buf data, frame;
    buf_init(&data);
    buf_init(&frame);
    assert_int_equal(codec_encode_body(&data, &cmd, NULL, NULL), 0);

    struct codec_entry ents[2] = {{.term = 3, .index = 10, .data = {data.data, (uint32_t)data.len}},
                                  {.term = 3, .index = 11}};
    uint64_t voters[3] = {1, 2, 3};
    struct codec_raft_msg msgs[2] = {
        {.partition = 5,
         .type = CODEC_RAFT_MSG_TYPE_APPEND,
         .from = 1,
         .to = 2,
         .term = 3,
         .entries = ents,
         .n_entries = 2},
        {.partition = 6,
         .type = CODEC_RAFT_MSG_TYPE_HEARTBEAT,
         .from = 1,
         .to = 3,
         .term = 9,
         .snapshot = {.index = 4, .voters = voters, .n_voters = 3}},
    };
    struct codec_msg batch = {.type = CODEC_MSG_RAFT_BATCH};
    batch.raft_batch.msgs = msgs;
    batch.raft_batch.n_msgs = 2;
    assert_int_equal(codec_encode(&frame, &batch, NULL, NULL), 0);

    struct codec_scratch *s = codec_scratch_new();
    struct codec_msg d, c;
    size_t used;
    assert_int_equal(codec_decode_frame(frame.data, frame.len, NULL, s, &d, &used, NULL), 0);
    assert_true(codec_msg_equal(&batch, &d));
    assert_int_equal(d.raft_batch.n_msgs, 2);
    assert_int_equal(d.raft_batch.msgs[1].snapshot.voters[2], 3);
    const struct codec_entry *e = &d.raft_batch.msgs[0].entries[0];
    assert_int_equal(codec_decode(e->data.data, e->data.len, NULL, NULL, &c, NULL), 0);
    assert_true(codec_msg_equal(&cmd, &c));
    assert_true(codec_scratch_used(s) > 0);
    codec_scratch_free(s);
    buf_free(&data);
    buf_free(&frame);
}

/* ---- errors ---------------------------------------------------------------- */

struct bad_case {
    const char *name;
    uint8_t bytes[48];
    size_t len;
    int rc;
};

static void test_malformed_bodies(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        {"empty body", {0}, 0, -TRINE_EBAD_REQUEST},
        {"not an array", {0x81, 0x01, 0x02}, 3, -TRINE_EBAD_REQUEST},
        {"empty array", {0x90}, 1, -TRINE_EBAD_REQUEST},
        {"type is a str", {0x91, 0xa1, 'x'}, 3, -TRINE_EBAD_REQUEST},
        {"negative type", {0x91, 0xff}, 2, -TRINE_EBAD_REQUEST},
        {"unknown type 200", {0x91, 0xcc, 200}, 3, -TRINE_EUNSUPPORTED},
        {"unknown type 0", {0x91, 0x00}, 2, -TRINE_EUNSUPPORTED},
        {"type 300", {0x91, 0xcd, 0x01, 0x2c}, 4, -TRINE_EUNSUPPORTED},
        {"reserved byte", {0x92, 0x03, 0xc1}, 3, -TRINE_EBAD_REQUEST},
        /* delete_req [3, hdr, key] variants */
        {"type only", {0x91, 0x03}, 2, -TRINE_EBAD_REQUEST},
        {"empty header", {0x93, 0x03, 0x90, 0xc4, 0}, 5, -TRINE_EBAD_REQUEST},
        {"extra field", {0x94, 0x03, 0x95, 1, 1, 1, 0, 0, 0xc4, 0, 0x00}, 11, -TRINE_EUNSUPPORTED},
        {"extra nil field",
         {0x94, 0x03, 0x95, 1, 1, 1, 0, 0, 0xc4, 0, 0xc0},
         11,
         -TRINE_EUNSUPPORTED},
        {"header with an extra field",
         {0x93, 0x03, 0x96, 1, 1, 1, 0, 0, 0, 0xc4, 0},
         11,
         -TRINE_EUNSUPPORTED},
        {"array claims a missing element",
         {0x93, 0x03, 0x95, 1, 1, 1, 0, 0},
         8,
         -TRINE_EBAD_REQUEST},
        {"header claims a missing element",
         {0x93, 0x03, 0x95, 1, 1, 1, 0, 0xc4, 0},
         9,
         -TRINE_EBAD_REQUEST},
        {"key is an int", {0x93, 0x03, 0x95, 1, 1, 1, 0, 0, 0x05}, 9, -TRINE_EBAD_REQUEST},
        {"key is nil", {0x93, 0x03, 0x95, 1, 1, 1, 0, 0, 0xc0}, 9, -TRINE_EBAD_REQUEST},
        {"req_id is a str",
         {0x93, 0x03, 0x95, 0xa1, 'x', 1, 1, 0, 0, 0xc4, 0},
         11,
         -TRINE_EBAD_REQUEST},
        {"req_id negative",
         {0x93, 0x03, 0x95, 0xd0, 0x80, 1, 1, 0, 0, 0xc4, 0},
         11,
         -TRINE_EBAD_REQUEST},
        {"req_id a float",
         {0x93, 0x03, 0x95, 0xca, 0, 0, 0, 0, 1, 1, 0, 0, 0xc4, 0},
         14,
         -TRINE_EBAD_REQUEST},
        {"consistency 3", {0x93, 0x03, 0x95, 1, 1, 1, 3, 0, 0xc4, 0}, 10, -TRINE_EBAD_REQUEST},
        {"timeout_ms 2^32",
         {0x93, 0x03, 0x95, 1, 1, 1, 0, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0, 0xc4, 0},
         18,
         -TRINE_EBAD_REQUEST},
        {"header is a map",
         {0x93, 0x03, 0x85, 1, 1, 1, 0, 0, 0, 0, 0, 0xc4, 0},
         13,
         -TRINE_EBAD_REQUEST},
        {"trailing byte",
         {0x93, 0x03, 0x95, 1, 1, 1, 0, 0, 0xc4, 0, 0x00},
         11,
         -TRINE_EBAD_REQUEST},
        {"second value",
         {0x93, 0x03, 0x95, 1, 1, 1, 0, 0, 0xc4, 0, 0x91, 0x03},
         12,
         -TRINE_EBAD_REQUEST},
        {"truncated key",
         {0x93, 0x03, 0x95, 1, 1, 1, 0, 0, 0xc4, 5, 'a', 'b'},
         12,
         -TRINE_EBAD_REQUEST},
        /* snapshot_ack [132, partition, from, to, term, snap_index, next_offset, done, reject] */
        {"bool is an int",
         {0x99, 0xcc, 132, 1, 1, 1, 1, 1, 1, 0x01, 0xc2},
         11,
         -TRINE_EBAD_REQUEST},
        {"partition is bool",
         {0x99, 0xcc, 132, 0xc3, 1, 1, 1, 1, 1, 0xc2, 0xc2},
         11,
         -TRINE_EBAD_REQUEST},
        {"extra field nested 38 deep",
         {0x94, 0x03, 0x95, 1,    1,    1,    0,    0,    0xc4, 0,    0x91, 0x91,
          0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91,
          0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91,
          0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x90},
         48,
         -TRINE_EUNSUPPORTED},
        {"extra field map count",
         {0x9a, 0xcc, 132, 1, 1, 1, 1, 1, 1, 0xc2, 0xc2, 0xdf, 0x7f, 0xff, 0xff, 0xff},
         16,
         -TRINE_EUNSUPPORTED},
        {"extra field claims more than the body",
         {0x9a, 0xcc, 132, 1, 1, 1, 1, 1, 1, 0xc2, 0xc2},
         11,
         -TRINE_EBAD_REQUEST},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct codec_msg m;
        struct trine_err err;
        err_clear(&err);
        int rc = decode_copy(cases[i].bytes, cases[i].len, NULL, NULL, &m, &err);
        if (rc != cases[i].rc)
            fail_msg("%s: rc %d (%s), want %d", cases[i].name, rc, err.msg, cases[i].rc);
        assert_int_equal(err.code, rc);
        assert_true(strlen(err.msg) > 0);
    }
    /* Sanity: the valid base of the delete_req cases decodes. */
    static const uint8_t ok[] = {0x93, 0x03, 0x95, 1, 1, 1, 0, 0, 0xc4, 0};
    struct codec_msg m;
    assert_int_equal(decode_copy(ok, sizeof(ok), NULL, NULL, &m, NULL), 0);
}

/* Hand-written older shapes: shorter arrays decode with a zero tail. */
static void test_older_shapes_by_hand(void **state)
{
    (void)state;
    struct codec_msg m;
    struct trine_err err;
    /* delete_req without its key, header with req_id only. */
    static const uint8_t del[] = {0x92, 0x03, 0x91, 0x07};
    memset(&m, 0xa5, sizeof(m));
    assert_int_equal(decode_copy(del, sizeof(del), NULL, NULL, &m, &err), 0);
    assert_int_equal(m.type, CODEC_MSG_DELETE_REQ);
    assert_int_equal(m.delete_req.hdr.req_id, 7);
    assert_int_equal(m.delete_req.hdr.client_id, 0);
    assert_int_equal(m.delete_req.hdr.consistency, CODEC_CONSISTENCY_FAST);
    assert_int_equal(m.delete_req.hdr.timeout_ms, 0);
    assert_int_equal(m.delete_req.key.len, 0);
    assert_null(m.delete_req.key.data);

    /* cluster_status_reply as a node before member_status.lag_ms wrote it:
     * [70, [req_id 9], epoch 3, [[node 1, "a", true, 4, 2, lag 5]]]. */
    static const uint8_t csr[] = {0x94, 0x46, 0x91, 0x09, 0x03, 0x91, 0x96,
                                  0x01, 0xa1, 'a',  0xc3, 0x04, 0x02, 0x05};
    struct codec_scratch *s = codec_scratch_new();
    err_clear(&err);
    int rc = codec_decode(csr, sizeof(csr), NULL, s, &m, &err);
    if (rc) fail_msg("%s", err.msg);
    assert_int_equal(m.cluster_status_reply.hdr.req_id, 9);
    assert_int_equal(m.cluster_status_reply.hdr.status, 0);
    assert_int_equal(m.cluster_status_reply.hdr.leader_hint.address.len, 0);
    assert_int_equal(m.cluster_status_reply.epoch, 3);
    assert_int_equal(m.cluster_status_reply.n_members, 1);
    const struct codec_member_status *ms = &m.cluster_status_reply.members[0];
    assert_int_equal(ms->node_id, 1);
    assert_true(ms->healthy);
    assert_int_equal(ms->partitions, 4);
    assert_int_equal(ms->primaries, 2);
    assert_int_equal(ms->lag, 5);
    assert_int_equal(ms->lag_ms, 0);

    /* The same with one field more than this version knows: refused, named. */
    static const uint8_t newer[] = {0x94, 0x46, 0x91, 0x09, 0x03, 0x91, 0x98, 0x01,
                                    0xa1, 'a',  0xc3, 0x04, 0x02, 0x05, 0x06, 0x07};
    err_clear(&err);
    assert_int_equal(codec_decode(newer, sizeof(newer), NULL, s, &m, &err), -TRINE_EUNSUPPORTED);
    assert_string_equal(err.msg, "decode: message cluster_status_reply: struct member_status has "
                                 "8 fields, this version knows 7; upgrade this node");
    static const uint8_t newer_top[] = {0x95, 0x46, 0x91, 0x09, 0x03, 0x90, 0x00};
    err_clear(&err);
    assert_int_equal(codec_decode(newer_top, sizeof(newer_top), NULL, s, &m, &err),
                     -TRINE_EUNSUPPORTED);
    assert_string_equal(err.msg, "decode: message cluster_status_reply has 4 fields, this "
                                 "version knows 3; upgrade this node");
    codec_scratch_free(s);
}

/* ---- older and newer shapes of every message and struct ---------------------- */

/* A minimal msgpack reader over the encoder's own output (well-formed). */
static uint64_t be_read(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Bytes of the one complete value at p. */
static size_t mp_size(const uint8_t *p)
{
    uint8_t t = p[0];
    uint64_t n = 0;
    size_t at = 1;
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) return 1;
    if (t >= 0xa0 && t <= 0xbf) return 1 + (t & 0x1fu);
    if (t >= 0xcc && t <= 0xcf) return 1 + (1u << (t - 0xcc));
    if (t >= 0xd0 && t <= 0xd3) return 1 + (1u << (t - 0xd0));
    if (t == 0xc4 || t == 0xd9) return 2 + p[1];
    if (t == 0xc5 || t == 0xda) return 3 + be_read(p + 1, 2);
    if (t == 0xc6 || t == 0xdb) return 5 + be_read(p + 1, 4);
    if (t >= 0x90 && t <= 0x9f) {
        n = t & 0x0fu;
    } else if (t == 0xdc) {
        n = be_read(p + 1, 2);
        at = 3;
    } else if (t == 0xdd) {
        n = be_read(p + 1, 4);
        at = 5;
    } else {
        fail_msg("mp_size: unexpected tag 0x%02x", t);
    }
    for (uint64_t i = 0; i < n; i++)
        at += mp_size(p + at);
    return at;
}

/* An array header: its element count, and its size in *hlen. */
static uint32_t mp_array(const uint8_t *p, size_t *hlen)
{
    if ((p[0] & 0xf0) == 0x90) return *hlen = 1, p[0] & 0x0fu;
    if (p[0] == 0xdc) return *hlen = 3, (uint32_t)be_read(p + 1, 2);
    assert_int_equal(p[0], 0xdd);
    return *hlen = 5, (uint32_t)be_read(p + 1, 4);
}

static void put_array(struct buf *o, uint32_t n)
{
    uint8_t h[5];
    size_t len = 1;
    if (n <= 15) {
        h[0] = (uint8_t)(0x90 | n);
    } else if (n <= 0xffff) {
        h[0] = 0xdc, h[1] = (uint8_t)(n >> 8), h[2] = (uint8_t)n, len = 3;
    } else {
        h[0] = 0xdd, len = 5;
        put_u32be(h + 1, n);
    }
    assert_int_equal(buf_append(o, h, len), 0);
}

/* Rewrites an encoding so that every instance of struct `target` holds `keep`
 * fields: the first ones if keep is smaller, the rest as fixint 0 if larger
 * (a newer sender's). hits counts the instances. */
struct reshape {
    const struct codec_struct_desc *target;
    uint32_t keep;
    struct buf *out;
    uint32_t hits;
};

static void reshape_struct(struct reshape *r, const struct codec_struct_desc *sd, const uint8_t **p,
                           bool with_type);

static void reshape_field(struct reshape *r, const struct codec_field_desc *f, const uint8_t **p)
{
    if (f->kind != CODEC_K_STRUCT) {
        size_t n = mp_size(*p);
        assert_int_equal(buf_append(r->out, *p, n), 0);
        *p += n;
    } else if (!f->is_array) {
        reshape_struct(r, f->sub, p, false);
    } else {
        size_t hl;
        uint32_t n = mp_array(*p, &hl);
        assert_int_equal(buf_append(r->out, *p, hl), 0);
        *p += hl;
        for (uint32_t k = 0; k < n; k++)
            reshape_struct(r, f->sub, p, false);
    }
}

static void reshape_struct(struct reshape *r, const struct codec_struct_desc *sd, const uint8_t **p,
                           bool with_type)
{
    size_t hl;
    uint32_t n = mp_array(*p, &hl) - (with_type ? 1 : 0);
    assert_int_equal(n, sd->nfields); /* the encoder writes every field */
    *p += hl;
    uint32_t keep = n;
    if (sd == r->target) {
        keep = r->keep;
        r->hits++;
    }
    put_array(r->out, keep + (with_type ? 1 : 0));
    if (with_type) {
        size_t tn = mp_size(*p);
        assert_int_equal(buf_append(r->out, *p, tn), 0);
        *p += tn;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (i < keep) {
            reshape_field(r, &sd->fields[i], p);
        } else {
            *p += mp_size(*p);
        }
    }
    for (uint32_t i = n; i < keep; i++)
        assert_int_equal(buf_append(r->out, "\0", 1), 0);
}

/* What the decoder must make of the reshaped encoding: every instance of
 * target with its fields from keep on zero / empty. */
static void zero_tail(const struct codec_struct_desc *sd, uint8_t *base,
                      const struct codec_struct_desc *target, uint32_t keep)
{
    for (uint32_t i = 0; i < sd->nfields; i++) {
        const struct codec_field_desc *f = &sd->fields[i];
        if (sd == target && i >= keep) {
            codec_field_zero(base, f);
        } else if (f->kind == CODEC_K_STRUCT && !f->is_array) {
            zero_tail(f->sub, base + f->offset, target, keep);
        } else if (f->kind == CODEC_K_STRUCT) {
            /* Copy the elements before zeroing: they belong to the original. */
            uint32_t n = codec_load_count(base, f->count_offset);
            if (n == 0) continue;
            uint8_t *items = arena_alloc((size_t)n * f->elem_size);
            memcpy(items, codec_load_ptr(base, f->offset), (size_t)n * f->elem_size);
            for (uint32_t k = 0; k < n; k++)
                zero_tail(f->sub, items + (size_t)k * f->elem_size, target, keep);
            codec_store_ptr(base, f->offset, items);
        }
    }
}

/* Every struct reachable from sd (sd included), each once. */
static void collect_structs(const struct codec_struct_desc *sd,
                            const struct codec_struct_desc **list, size_t *n, size_t cap)
{
    for (size_t i = 0; i < *n; i++)
        if (list[i] == sd) return;
    assert_true(*n < cap);
    list[(*n)++] = sd;
    for (uint32_t i = 0; i < sd->nfields; i++)
        if (sd->fields[i].kind == CODEC_K_STRUCT) collect_structs(sd->fields[i].sub, list, n, cap);
}

/* Every message, and every struct inside it, written with each possible
 * smaller field count (1 .. nfields): decodes to the message with the
 * missing fields zero, which re-encodes in full. Written with 0 fields:
 * BAD_REQUEST; with one field more than known: UNSUPPORTED, naming it. */
static void test_older_and_newer_shapes(void **state)
{
    (void)state;
    struct codec_limits lim = codec_limits_default();
    for (unsigned id = 0; id < CODEC_LIMIT_COUNT; id++) {
        if (id == CODEC_LIMIT_FRAME || id == CODEC_LIMIT_DECODE_MEM) continue;
        uint32_t v = codec_limit_is_count[id] ? 2 : 3;
        memcpy((uint8_t *)&lim + codec_limit_offsets[id], &v, sizeof(v));
    }
    struct codec_scratch *s = codec_scratch_new();
    struct buf full, out, re, want;
    buf_init(&full);
    buf_init(&out);
    buf_init(&re);
    buf_init(&want);
    unsigned variants = 0;
    for (unsigned t = 0; t < CODEC_MSG_TYPE_COUNT; t++) {
        const struct codec_msg_desc *md = codec_msg_table[codec_msg_types[t]];
        struct codec_msg m;
        /* Every field non-zero (enums at their last value, which is not 0),
         * every array non-empty: each zeroed field shows. */
        struct filler mx = {FILL_MAX, NULL, &lim, 0, 0};
        fill_msg(&mx, md->type, &m);
        encode_ok(&full, &m, &lim);
        const struct codec_struct_desc *structs[32];
        size_t nstructs = 0;
        collect_structs(md->body, structs, &nstructs, 32);
        for (size_t si = 0; si < nstructs; si++) {
            const struct codec_struct_desc *sd = structs[si];
            for (uint32_t keep = 0; keep <= sd->nfields + 1; keep++) {
                struct reshape r = {sd, keep, &out, 0};
                buf_reset(&out);
                const uint8_t *p = full.data;
                reshape_struct(&r, md->body, &p, true);
                assert_ptr_equal(p, full.data + full.len);
                assert_true(r.hits > 0);
                struct codec_msg d;
                struct trine_err err;
                err_clear(&err);
                int rc = decode_copy(out.data, out.len, &lim, s, &d, &err);
                if (keep == 0) {
                    if (rc != -TRINE_EBAD_REQUEST)
                        fail_msg("%s with an empty %s: rc %d", md->name, sd->name, rc);
                    continue;
                }
                if (keep > sd->nfields) {
                    if (rc != -TRINE_EUNSUPPORTED)
                        fail_msg("%s with a longer %s: rc %d", md->name, sd->name, rc);
                    char text[200];
                    if (sd == md->body)
                        snprintf(text, sizeof(text),
                                 "message %s has %u fields, this version knows %u; upgrade this "
                                 "node",
                                 md->name, keep, sd->nfields);
                    else
                        snprintf(text, sizeof(text),
                                 "message %s: struct %s has %u fields, this version knows %u; "
                                 "upgrade this node",
                                 md->name, sd->name, keep, sd->nfields);
                    if (strstr(err.msg, text) == NULL) fail_msg("%s: want \"%s\"", err.msg, text);
                    continue;
                }
                /* out's copy was freed: decode again from out itself so d may point
                 * into it. */
                rc = codec_decode(out.data, out.len, &lim, s, &d, &err);
                if (rc) fail_msg("%s with %s of %u fields: %s", md->name, sd->name, keep, err.msg);
                struct codec_msg exp = m;
                zero_tail(md->body, (uint8_t *)&exp + md->offset, sd, keep);
                if (!codec_msg_equal(&exp, &d))
                    fail_msg("%s with %s of %u fields: not the zero-filled message", md->name,
                             sd->name, keep);
                if (keep < sd->nfields && codec_msg_equal(&m, &d))
                    fail_msg("%s with %s of %u fields: nothing was zeroed", md->name, sd->name,
                             keep);
                encode_ok(&re, &d, &lim);
                encode_ok(&want, &exp, &lim);
                assert_int_equal(re.len, want.len);
                assert_memory_equal(re.data, want.data, re.len);
                variants++;
            }
        }
        arena_reset();
    }
    print_message("codec shapes: %u older variants decoded\n", variants);
    buf_free(&full);
    buf_free(&out);
    buf_free(&re);
    buf_free(&want);
    codec_scratch_free(s);
}

static void test_too_large(void **state)
{
    (void)state;
    struct codec_limits def = codec_limits_default(), big = def;
    big.key_bytes_max = 1u << 20;
    big.value_bytes_max = 4u << 20;
    uint8_t *blob = calloc(1, (2u << 20) + 1);
    assert_non_null(blob);
    struct buf b;
    buf_init(&b);
    struct trine_err err;
    struct codec_msg m = {.type = CODEC_MSG_PUT_REQ}, d;

    /* Exactly at the limits: fine. */
    m.put_req.key = (struct codec_bytes){blob, def.key_bytes_max};
    m.put_req.value = (struct codec_bytes){blob, def.value_bytes_max};
    check_round_trip(&m, &def, NULL);

    /* One byte over: the encoder refuses and leaves the buffer alone... */
    m.put_req.key.len = def.key_bytes_max + 1;
    assert_int_equal(codec_encode(&b, &m, &def, &err), -TRINE_ETOO_LARGE);
    assert_int_equal(b.len, 0);
    /* ...and a decoder with default limits refuses what a laxer peer sent. */
    assert_int_equal(codec_encode_body(&b, &m, &big, &err), 0);
    assert_int_equal(decode_copy(b.data, b.len, &def, NULL, &d, &err), -TRINE_ETOO_LARGE);
    assert_non_null(strstr(err.msg, "put_req.key"));

    buf_reset(&b);
    m.put_req.key.len = 10;
    m.put_req.value.len = def.value_bytes_max + 1;
    assert_int_equal(codec_encode_body(&b, &m, &def, &err), -TRINE_ETOO_LARGE);
    assert_int_equal(codec_encode_body(&b, &m, &big, &err), 0);
    assert_int_equal(decode_copy(b.data, b.len, &def, NULL, &d, &err), -TRINE_ETOO_LARGE);
    assert_non_null(strstr(err.msg, "put_req.value"));

    /* Array over its count limit. */
    struct codec_limits small = def;
    small.entries_max = 2;
    struct codec_entry ents[3] = {{.term = 1}, {.term = 1}, {.term = 1}};
    struct codec_msg rm = {.type = CODEC_MSG_RAFT_MSG};
    rm.raft_msg.entries = ents;
    rm.raft_msg.n_entries = 3;
    buf_reset(&b);
    assert_int_equal(codec_encode_body(&b, &rm, &small, &err), -TRINE_ETOO_LARGE);
    assert_int_equal(codec_encode_body(&b, &rm, &def, &err), 0);
    struct codec_scratch *s = codec_scratch_new();
    assert_int_equal(decode_copy(b.data, b.len, &small, s, &d, &err), -TRINE_ETOO_LARGE);
    assert_int_equal(codec_scratch_used(s), 0);

    /* Whole body over the frame limit, on both sides. */
    small = def;
    small.frame_bytes_max = 64;
    buf_reset(&b);
    m.put_req.value.len = 100;
    assert_int_equal(codec_encode(&b, &m, &small, &err), -TRINE_ETOO_LARGE);
    assert_int_equal(b.len, 0);
    assert_int_equal(codec_encode_body(&b, &m, &def, &err), 0);
    assert_int_equal(decode_copy(b.data, b.len, &small, NULL, &d, &err), -TRINE_ETOO_LARGE);

    /* Frame headers. */
    uint32_t len;
    uint8_t hdr[4];
    put_u32be(hdr, 16u << 20);
    assert_int_equal(codec_frame_length(hdr, NULL, &len, &err), 0);
    assert_int_equal(len, 16u << 20);
    put_u32be(hdr, (16u << 20) + 1);
    assert_int_equal(codec_frame_length(hdr, NULL, &len, &err), -TRINE_ETOO_LARGE);
    put_u32be(hdr, UINT32_MAX);
    assert_int_equal(codec_frame_length(hdr, NULL, &len, &err), -TRINE_ETOO_LARGE);
    put_u32be(hdr, 0);
    assert_int_equal(codec_frame_length(hdr, NULL, &len, &err), -TRINE_EBAD_REQUEST);

    /* The decode_mem cap: many small messages in one batch. */
    struct codec_raft_msg many[64];
    memset(many, 0, sizeof(many));
    struct codec_msg bm = {.type = CODEC_MSG_RAFT_BATCH};
    bm.raft_batch.msgs = many;
    bm.raft_batch.n_msgs = 64;
    buf_reset(&b);
    assert_int_equal(codec_encode_body(&b, &bm, &def, &err), 0);
    small = def;
    small.decode_mem_bytes_max = 16 * sizeof(struct codec_raft_msg);
    assert_int_equal(decode_copy(b.data, b.len, &small, s, &d, &err), -TRINE_ETOO_LARGE);
    assert_non_null(strstr(err.msg, "decode_mem"));
    assert_int_equal(codec_decode(b.data, b.len, &def, s, &d, &err), 0);
    assert_true(codec_msg_equal(&bm, &d));
    /* An array needs a scratch. */
    assert_int_equal(decode_copy(b.data, b.len, &def, NULL, &d, &err), -TRINE_EINVALID);

    codec_scratch_free(s);
    buf_free(&b);
    free(blob);
}

static void test_encode_rejects_caller_bugs(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    struct trine_err err;
    struct codec_msg m = {.type = 99};
    assert_int_equal(codec_encode(&b, &m, NULL, &err), -TRINE_EINVALID);
    m = (struct codec_msg){.type = CODEC_MSG_GET_REQ};
    m.get_req.hdr.consistency = 7;
    assert_int_equal(codec_encode(&b, &m, NULL, &err), -TRINE_EINVALID);
    m.get_req.hdr.consistency = CODEC_CONSISTENCY_FAST;
    m.get_req.key.len = 3; /* NULL data */
    assert_int_equal(codec_encode(&b, &m, NULL, &err), -TRINE_EINVALID);
    m = (struct codec_msg){.type = CODEC_MSG_SCAN_REPLY};
    m.scan_reply.n_items = 2; /* NULL items */
    assert_int_equal(codec_encode(&b, &m, NULL, &err), -TRINE_EINVALID);
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

/* Tiny bodies that declare enormous lengths must fail fast and allocate
 * nothing, even with every limit lifted. */
static void test_huge_declared_lengths(void **state)
{
    (void)state;
    struct codec_limits def = codec_limits_default(), open = def;
    for (unsigned id = 0; id < CODEC_LIMIT_COUNT; id++)
        memset((uint8_t *)&open + codec_limit_offsets[id], 0xff, sizeof(uint32_t));
    /* raft_batch [130, msgs: array32 of 2^32-1] padded to 40 bytes. */
    uint8_t batch[40] = {0x92, 0xcc, 130, 0xdd, 0xff, 0xff, 0xff, 0xff};
    /* raft_msg with entries = array32 2^32-1 */
    uint8_t entries[40] = {0x9f, 0xcc, 129, 0, 4, 1,    2,    3,    0,    0,
                           0,    0xc2, 0,   0, 0, 0xdd, 0xff, 0xff, 0xff, 0xff};
    /* put_req with key = bin32 of 2^32-1 bytes */
    uint8_t bin[40] = {0x95, 0x01, 0x95, 1, 1, 1, 0, 0, 0xc6, 0xff, 0xff, 0xff, 0xff};
    /* the top-level array claims 2^32-1 elements */
    uint8_t top[40] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x03};
    /* a field this version does not know: array32 of 2^32-1 */
    uint8_t skip[40] = {0x94, 0x03, 0x95, 1, 1, 1, 0, 0, 0xc4, 0, 0xdd, 0xff, 0xff, 0xff, 0xff};
    /* deep nesting in a field this version does not know */
    uint8_t deep[40] = {0x94, 0x03, 0x95, 1, 1, 1, 0, 0, 0xc4, 0};
    for (int i = 10; i < 40; i++)
        deep[i] = 0x91;
    const uint8_t *bodies[] = {batch, entries, bin, top, skip, deep};
    const struct codec_limits *lims[] = {&def, &open};
    struct codec_scratch *s = codec_scratch_new();
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
        for (int l = 0; l < 2; l++) {
            struct codec_msg m;
            struct trine_err err;
            err_clear(&err);
            int rc = decode_copy(bodies[i], 40, lims[l], s, &m, &err);
            if (rc != -TRINE_EBAD_REQUEST && rc != -TRINE_ETOO_LARGE && rc != -TRINE_EUNSUPPORTED)
                fail_msg("body %zu limits %d: rc %d %s", i, l, rc, err.msg);
            assert_int_equal(codec_scratch_used(s), 0);
        }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    assert_true(ms < 100.0);
    codec_scratch_free(s);
}

/* ---- truncation and mutation ---------------------------------------------- */

/* A byte stream cut short is not an older sender's shorter array: its array
 * headers still declare every field, so every prefix must fail. */
static void test_truncated_prefixes(void **state)
{
    (void)state;
    struct rng r;
    rng_seed(&r, rng_test_seed("codec truncation"));
    struct codec_scratch *s = codec_scratch_new();
    struct codec_limits def = codec_limits_default();
    struct buf b;
    buf_init(&b);
    for (unsigned t = 0; t < CODEC_MSG_TYPE_COUNT; t++) {
        for (int rep = 0; rep < 4; rep++) {
            struct codec_msg m, d;
            struct filler fl = {rep == 0 ? FILL_ZERO : FILL_RANDOM, &r, &def, 24, 3};
            fill_msg(&fl, codec_msg_types[t], &m);
            buf_reset(&b);
            assert_int_equal(codec_encode(&b, &m, &def, NULL), 0);
            const uint8_t *body = b.data + CODEC_FRAME_HEADER_BYTES;
            size_t blen = b.len - CODEC_FRAME_HEADER_BYTES;
            for (size_t n = 0; n < blen; n++) {
                struct trine_err err;
                err_clear(&err);
                int rc = decode_copy(body, n, &def, s, &d, &err);
                if (rc != -TRINE_EBAD_REQUEST && rc != -TRINE_ETOO_LARGE)
                    fail_msg("%s prefix %zu/%zu: rc %d (%s)", codec_msg_name(m.type), n, blen, rc,
                             err.msg);
            }
            for (size_t n = 0; n < b.len; n++) {
                size_t used = 1;
                assert_int_equal(codec_decode_frame(b.data, n, &def, s, &d, &used, NULL),
                                 -TRINE_EAGAIN);
                assert_int_equal(used, 0);
            }
            arena_reset();
        }
    }
    buf_free(&b);
    codec_scratch_free(s);
}

/* One random edit of a frame: flip, overwrite, insert, delete, or rewrite a
 * length (the frame prefix or a msgpack str/bin/array length). */
static void mutate(struct rng *r, struct buf *f)
{
    size_t n = f->len;
    switch (rng_below(r, 6)) {
    case 0:
        f->data[rng_below(r, n)] ^= (uint8_t)(1u << rng_below(r, 8));
        break;
    case 1:
        f->data[rng_below(r, n)] = (uint8_t)rng_next(r);
        break;
    case 2: {
        size_t at = rng_below(r, n + 1), k = 1 + rng_below(r, 4);
        assert_int_equal(buf_reserve(f, k), 0);
        memmove(f->data + at + k, f->data + at, n - at);
        rng_fill(r, f->data + at, k);
        f->len += k;
        break;
    }
    case 3: {
        size_t at = rng_below(r, n), k = 1 + rng_below(r, n - at < 4 ? n - at : 4);
        memmove(f->data + at, f->data + at + k, n - at - k);
        f->len -= k;
        break;
    }
    case 4: { /* frame length prefix */
        static const uint32_t edits[] = {0, 1, UINT32_MAX, 16u << 20, (16u << 20) + 1};
        uint32_t v =
            rng_below(r, 2) ? edits[rng_below(r, 5)] : (uint32_t)(n - 4 + rng_below(r, 9) - 4);
        if (n >= 4) put_u32be(f->data, v);
        break;
    }
    default: { /* a length or count inside the body */
        for (int tries = 0; tries < 16; tries++) {
            size_t at = CODEC_FRAME_HEADER_BYTES + rng_below(r, n - CODEC_FRAME_HEADER_BYTES);
            uint8_t t = f->data[at];
            size_t w = t == 0xc4 || t == 0xd9                ? 1
                       : t == 0xc5 || t == 0xda || t == 0xdc ? 2
                       : t == 0xc6 || t == 0xdb || t == 0xdd ? 4
                                                             : 0;
            if ((t & 0xf0) == 0x90) { /* fixarray */
                f->data[at] = (uint8_t)(0x90 | rng_below(r, 16));
                return;
            }
            if ((t & 0xe0) == 0xa0) { /* fixstr */
                f->data[at] = (uint8_t)(0xa0 | rng_below(r, 32));
                return;
            }
            if (w == 0 || at + w >= n) continue;
            uint64_t v = rng_below(r, 2) ? rng_next(r) : rng_below(r, 64);
            for (size_t i = 0; i < w; i++)
                f->data[at + 1 + i] = (uint8_t)(v >> (8 * i));
            return;
        }
        break;
    }
    }
}

static void test_random_mutations(void **state)
{
    (void)state;
    struct rng r;
    rng_seed(&r, rng_test_seed("codec mutation"));
    struct codec_scratch *s1 = codec_scratch_new(), *s2 = codec_scratch_new();
    struct codec_limits def = codec_limits_default();
    struct buf f, e1, e2;
    buf_init(&f);
    buf_init(&e1);
    buf_init(&e2);
    int decoded = 0;
    for (int i = 0; i < 10000; i++) {
        struct codec_msg m, d, d2;
        random_msg(&r, &def, &m);
        buf_reset(&f);
        assert_int_equal(codec_encode(&f, &m, &def, NULL), 0);
        int edits = 1 + (int)rng_below(&r, 3);
        for (int k = 0; k < edits && f.len > CODEC_FRAME_HEADER_BYTES; k++)
            mutate(&r, &f);
        arena_reset();

        /* As a frame (exact-size copy) and as a bare body. */
        uint8_t *copy = malloc(f.len ? f.len : 1);
        assert_non_null(copy);
        memcpy(copy, f.data, f.len);
        size_t used;
        struct trine_err err;
        int rc = codec_decode_frame(copy, f.len, &def, s1, &d, &used, &err);
        free(copy);
        if (rc != 0 && rc != -TRINE_EAGAIN && rc != -TRINE_EBAD_REQUEST &&
            rc != -TRINE_EUNSUPPORTED && rc != -TRINE_ETOO_LARGE)
            fail_msg("mutation %d: frame rc %d", i, rc);
        if (f.len <= CODEC_FRAME_HEADER_BYTES) continue;
        /* d points into body: keep it until the comparisons are done. */
        uint8_t *body = malloc(f.len - 4);
        assert_non_null(body);
        memcpy(body, f.data + 4, f.len - 4);
        rc = codec_decode(body, f.len - 4, &def, s1, &d, &err);
        if (rc != 0 && rc != -TRINE_EBAD_REQUEST && rc != -TRINE_EUNSUPPORTED &&
            rc != -TRINE_ETOO_LARGE)
            fail_msg("mutation %d: body rc %d", i, rc);
        if (rc) {
            free(body);
            continue;
        }
        /* A decodable mutation is a valid message: it must round-trip. */
        decoded++;
        buf_reset(&e1);
        buf_reset(&e2);
        assert_int_equal(codec_encode_body(&e1, &d, &def, &err), 0);
        assert_int_equal(codec_decode(e1.data, e1.len, &def, s2, &d2, &err), 0);
        assert_true(codec_msg_equal(&d, &d2));
        assert_int_equal(codec_encode_body(&e2, &d2, &def, &err), 0);
        assert_int_equal(e1.len, e2.len);
        assert_memory_equal(e1.data, e2.data, e1.len);
        free(body);
    }
    print_message("codec mutation: %d of 10000 mutated frames still decoded\n", decoded);
    buf_free(&f);
    buf_free(&e1);
    buf_free(&e2);
    codec_scratch_free(s1);
    codec_scratch_free(s2);
}

/* ---- seed corpus for tests/fuzz/fuzz_codec ------------------------------------ */

static int write_corpus(const char *dir)
{
    struct rng r;
    rng_seed(&r, 1);
    struct codec_limits def = codec_limits_default(), small = def;
    small.key_bytes_max = small.value_bytes_max = small.text_bytes_max = 40;
    small.entry_bytes_max = small.chunk_bytes_max = small.addr_bytes_max = 40;
    small.entries_max = small.scan_results_max = small.members_max = 3;
    small.partitions_max = small.replicas_max = small.batch_msgs_max = 3;
    struct buf b;
    buf_init(&b);
    int files = 0;
    for (unsigned t = 0; t < CODEC_MSG_TYPE_COUNT; t++) {
        for (int mode = 0; mode < 3; mode++) {
            struct codec_msg m;
            struct filler fl = {(enum fill_mode)mode, &r, &small, 16, 2};
            fill_msg(&fl, codec_msg_types[t], &m);
            buf_reset(&b);
            if (codec_encode_body(&b, &m, &def, NULL) != 0) return 1;
            char name[64], path[512];
            snprintf(name, sizeof(name), "%s-%s", codec_msg_name(m.type),
                     mode == 0   ? "zero"
                     : mode == 1 ? "random"
                                 : "max");
            FILE *fp = fopen(tu_path(path, sizeof(path), dir, name), "wb");
            if (fp == NULL || fwrite(b.data, 1, b.len, fp) != b.len || fclose(fp) != 0) return 1;
            files++;
            arena_reset();
        }
    }
    /* Older shapes: each message with only its first field, and without its
     * last one. */
    struct buf o;
    buf_init(&o);
    for (unsigned t = 0; t < CODEC_MSG_TYPE_COUNT; t++) {
        const struct codec_msg_desc *md = codec_msg_table[codec_msg_types[t]];
        struct codec_msg m;
        struct filler fl = {FILL_MAX, &r, &small, 16, 2};
        fill_msg(&fl, md->type, &m);
        buf_reset(&b);
        if (codec_encode_body(&b, &m, &def, NULL) != 0) return 1;
        for (uint32_t keep = 1; keep < md->body->nfields; keep = md->body->nfields - 1) {
            struct reshape rs = {md->body, keep, &o, 0};
            const uint8_t *p = b.data;
            buf_reset(&o);
            reshape_struct(&rs, md->body, &p, true);
            char name[64], path[512];
            snprintf(name, sizeof(name), "%s-%s", md->name, keep == 1 ? "first" : "older");
            FILE *fp = fopen(tu_path(path, sizeof(path), dir, name), "wb");
            if (fp == NULL || fwrite(o.data, 1, o.len, fp) != o.len || fclose(fp) != 0) return 1;
            files++;
            if (keep == md->body->nfields - 1) break;
        }
        arena_reset();
    }
    buf_free(&o);
    buf_free(&b);
    printf("wrote %d corpus files to %s\n", files, dir);
    return 0;
}

int main(void)
{
    const char *corpus = getenv("CODEC_WRITE_CORPUS");
    if (corpus && *corpus) return write_corpus(corpus);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits_default),
        cmocka_unit_test(test_round_trip_all_types),
        cmocka_unit_test(test_every_field_matters),
        cmocka_unit_test(test_golden_put_req),
        cmocka_unit_test(test_foreign_encodings_accepted),
        cmocka_unit_test(test_zero_copy),
        cmocka_unit_test(test_nested_command_in_batch),
        cmocka_unit_test(test_malformed_bodies),
        cmocka_unit_test(test_older_shapes_by_hand),
        cmocka_unit_test(test_older_and_newer_shapes),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_encode_rejects_caller_bugs),
        cmocka_unit_test(test_huge_declared_lengths),
        cmocka_unit_test(test_truncated_prefixes),
        cmocka_unit_test(test_random_mutations),
    };
    int rc = cmocka_run_group_tests_name("codec", tests, NULL, NULL);
    free(g_arena.mem);
    return rc;
}
