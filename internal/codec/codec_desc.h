/*
 * codec_desc.h - the descriptor tables that drive the codec (internal to codec/
 * and its tests).
 *
 * scripts/gen-proto.py turns every struct and message of proto/trine.schema
 * into a struct codec_struct_desc in msgs_gen.c: one codec_field_desc per field,
 * in wire order, with the C offset of the field, its kind, and its bound. The
 * encoder (encode.c), the bounded decoder (decode.c) and codec_msg_equal
 * (codec.c) walk these tables, so adding a message touches only the schema.
 * All tables are static const data; nothing here is ever freed.
 */
#ifndef TRINE_CODEC_CODEC_DESC_H
#define TRINE_CODEC_CODEC_DESC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "codec/msgs_gen.h"

/* Kind of a field's value (or of each element, for arrays). */
enum codec_kind {
    CODEC_K_U8,
    CODEC_K_U16,
    CODEC_K_U32,
    CODEC_K_U64,
    CODEC_K_BOOL,
    CODEC_K_ENUM,   /* uint8_t in C, one of the enum's values on the wire */
    CODEC_K_STR,    /* struct codec_bytes, msgpack str */
    CODEC_K_BIN,    /* struct codec_bytes, msgpack bin */
    CODEC_K_STRUCT, /* nested struct, a msgpack array of its fields */
};

/* A field bound given as a number rather than a limit name. */
#define CODEC_LIMIT_NONE 0xffu

struct codec_enum_desc {
    const char *name;
    uint32_t count;
    const uint8_t *values;    /* count valid numbers */
    const char *const *names; /* their names */
};

struct codec_struct_desc;

struct codec_field_desc {
    const char *name;
    uint8_t kind;          /* enum codec_kind */
    uint8_t is_array;      /* 1: a pointer + uint32_t count of elements */
    uint8_t limit;         /* enum codec_limit_id bounding length/count, or CODEC_LIMIT_NONE */
    uint32_t bound;        /* the bound when limit is CODEC_LIMIT_NONE (0: none) */
    uint32_t offset;       /* of the value, or of an array's element pointer */
    uint32_t count_offset; /* arrays: of the uint32_t element count */
    uint32_t elem_size;    /* sizeof the value, or of one array element */
    const struct codec_struct_desc *sub; /* CODEC_K_STRUCT */
    const struct codec_enum_desc *en;    /* CODEC_K_ENUM */
};

struct codec_struct_desc {
    const char *name;
    uint32_t size;      /* sizeof the C struct */
    uint32_t min_bytes; /* smallest possible msgpack encoding of one instance */
    uint32_t nfields;
    const struct codec_field_desc *fields;
};

struct codec_msg_desc {
    uint8_t type;                         /* enum codec_msg_type */
    const char *name;                     /* schema name, e.g. "put_req" */
    uint32_t offset;                      /* of the body inside struct codec_msg */
    const struct codec_struct_desc *body; /* the fields after the type id */
};

/* Indexed by message type; NULL for an unknown type. */
extern const struct codec_msg_desc *const codec_msg_table[256];
/* offsetof(struct codec_limits, <member>) and the schema name of each limit. */
extern const uint32_t codec_limit_offsets[CODEC_LIMIT_COUNT];
extern const char *const codec_limit_names[CODEC_LIMIT_COUNT];
/* 1 for a count limit (arrays), 0 for a byte limit. */
extern const uint8_t codec_limit_is_count[CODEC_LIMIT_COUNT];

/* The value of limit id (< CODEC_LIMIT_COUNT) in l. */
uint32_t codec_limit_get(const struct codec_limits *l, unsigned id);

/* The bound on a field's length or count under l (UINT32_MAX if unbounded). */
uint32_t codec_field_bound(const struct codec_field_desc *f, const struct codec_limits *l);

struct codec_scratch;
/* Takes n bytes (8-byte aligned) from s for a decoded array. -TRINE_ETOO_LARGE
 * if the decode would then hold more than mem_max bytes, -TRINE_ENOMEM. */
int codec_scratch_alloc(struct codec_scratch *s, size_t n, size_t mem_max, void **out);

/* Pointer stored at base + off (an array field's element pointer). Every
 * object pointer has the same representation on the platforms Trine targets,
 * so the generic code moves them as void *. */
static inline void *codec_load_ptr(const uint8_t *base, uint32_t off)
{
    void *p;
    memcpy(&p, base + off, sizeof(p));
    return p;
}
static inline void codec_store_ptr(uint8_t *base, uint32_t off, void *p)
{
    memcpy(base + off, &p, sizeof(p));
}
/* A field an older sender did not send: zero, empty string/bytes, empty array. */
static inline void codec_field_zero(uint8_t *base, const struct codec_field_desc *f)
{
    if (f->is_array) {
        uint32_t zero = 0;
        codec_store_ptr(base, f->offset, NULL);
        memcpy(base + f->count_offset, &zero, sizeof(zero));
    } else {
        memset(base + f->offset, 0, f->elem_size);
    }
}
static inline uint32_t codec_load_count(const uint8_t *base, uint32_t off)
{
    uint32_t n;
    memcpy(&n, base + off, sizeof(n));
    return n;
}

#endif
