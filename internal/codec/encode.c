/*
 * encode.c - struct codec_msg -> msgpack, driven by the descriptor tables.
 *
 * msgpack-c's packer writes straight into the caller's struct buf (its write
 * callback is buf_append), integers in their shortest form. A message is
 * [type, field1, ...], a nested struct [field1, ...], an array field a msgpack
 * array. Bounds are enforced while packing with the decoder's rules, so
 * whatever is encoded under some limits decodes under the same limits; on any
 * error the buffer is cut back to its length on entry.
 */
#include "codec/codec.h"

#include <msgpack.h>
#include <string.h>

#include "codec/codec_desc.h"

struct enc {
    msgpack_packer pk;
    const struct codec_limits *lim;
    struct trine_err *err;
};

static int enc_write(void *data, const char *p, size_t n)
{
    return buf_append(data, p, n) == 0 ? 0 : -1;
}

/* msgpack-c returns the write callback's result: nonzero only when buf_append failed. */
#define PACK(e, call)                                                                              \
    do {                                                                                           \
        if ((call) != 0) return err_set((e)->err, -TRINE_ENOMEM, "encode: out of memory");         \
    } while (0)

static uint64_t load_uint(const uint8_t *v, uint32_t size)
{
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    switch (size) {
    case 1:
        memcpy(&u8, v, 1);
        return u8;
    case 2:
        memcpy(&u16, v, 2);
        return u16;
    case 4:
        memcpy(&u32, v, 4);
        return u32;
    default:
        memcpy(&u64, v, 8);
        return u64;
    }
}

static bool enum_has(const struct codec_enum_desc *en, uint8_t v)
{
    for (uint32_t i = 0; i < en->count; i++)
        if (en->values[i] == v) return true;
    return false;
}

static int enc_fields(struct enc *e, const struct codec_struct_desc *sd, const uint8_t *base);

static int enc_value(struct enc *e, const struct codec_struct_desc *sd,
                     const struct codec_field_desc *f, const uint8_t *v)
{
    switch (f->kind) {
    case CODEC_K_BOOL: {
        bool b;
        memcpy(&b, v, sizeof(b));
        PACK(e, b ? msgpack_pack_true(&e->pk) : msgpack_pack_false(&e->pk));
        return 0;
    }
    case CODEC_K_ENUM:
        if (!enum_has(f->en, *v))
            return err_set(e->err, -TRINE_EINVALID, "encode %s.%s: %u is not a %s", sd->name,
                           f->name, *v, f->en->name);
        PACK(e, msgpack_pack_uint64(&e->pk, *v));
        return 0;
    case CODEC_K_STR:
    case CODEC_K_BIN: {
        struct codec_bytes b;
        memcpy(&b, v, sizeof(b));
        uint32_t max = codec_field_bound(f, e->lim);
        if (b.len > max)
            return err_set(e->err, -TRINE_ETOO_LARGE, "encode %s.%s: %u bytes exceed the limit %u",
                           sd->name, f->name, b.len, max);
        if (b.len > 0 && b.data == NULL)
            return err_set(e->err, -TRINE_EINVALID, "encode %s.%s: NULL data", sd->name, f->name);
        if (f->kind == CODEC_K_STR) {
            PACK(e, msgpack_pack_str(&e->pk, b.len));
            PACK(e, msgpack_pack_str_body(&e->pk, b.data, b.len));
        } else {
            PACK(e, msgpack_pack_bin(&e->pk, b.len));
            PACK(e, msgpack_pack_bin_body(&e->pk, b.data, b.len));
        }
        return 0;
    }
    case CODEC_K_STRUCT:
        PACK(e, msgpack_pack_array(&e->pk, f->sub->nfields));
        return enc_fields(e, f->sub, v);
    default: /* CODEC_K_U8 .. CODEC_K_U64 */
        PACK(e, msgpack_pack_uint64(&e->pk, load_uint(v, f->elem_size)));
        return 0;
    }
}

static int enc_fields(struct enc *e, const struct codec_struct_desc *sd, const uint8_t *base)
{
    for (uint32_t i = 0; i < sd->nfields; i++) {
        const struct codec_field_desc *f = &sd->fields[i];
        int rc;
        if (!f->is_array) {
            rc = enc_value(e, sd, f, base + f->offset);
            if (rc) return rc;
            continue;
        }
        uint32_t n = codec_load_count(base, f->count_offset);
        const uint8_t *items = codec_load_ptr(base, f->offset);
        uint32_t max = codec_field_bound(f, e->lim);
        if (n > max)
            return err_set(e->err, -TRINE_ETOO_LARGE,
                           "encode %s.%s: %u elements exceed the limit %u", sd->name, f->name, n,
                           max);
        if (n > 0 && items == NULL)
            return err_set(e->err, -TRINE_EINVALID, "encode %s.%s: NULL array", sd->name, f->name);
        PACK(e, msgpack_pack_array(&e->pk, n));
        for (uint32_t k = 0; k < n; k++) {
            rc = enc_value(e, sd, f, items + (size_t)k * f->elem_size);
            if (rc) return rc;
        }
    }
    return 0;
}

int codec_encode_body(struct buf *out, const struct codec_msg *m, const struct codec_limits *lim,
                      struct trine_err *err)
{
    struct codec_limits def;
    if (lim == NULL) {
        def = codec_limits_default();
        lim = &def;
    }
    const struct codec_msg_desc *md = codec_msg_table[m->type];
    if (md == NULL)
        return err_set(err, -TRINE_EINVALID, "encode: unknown message type %u", m->type);
    struct enc e = {.lim = lim, .err = err};
    msgpack_packer_init(&e.pk, out, enc_write);
    size_t start = out->len;
    int rc = 0;
    if (msgpack_pack_array(&e.pk, 1 + md->body->nfields) != 0 ||
        msgpack_pack_uint64(&e.pk, m->type) != 0)
        rc = err_set(err, -TRINE_ENOMEM, "encode: out of memory");
    if (rc == 0) rc = enc_fields(&e, md->body, (const uint8_t *)m + md->offset);
    if (rc == 0 && out->len - start > lim->frame_bytes_max)
        rc = err_set(err, -TRINE_ETOO_LARGE,
                     "encode %s: body of %zu bytes exceeds the frame limit %u", md->name,
                     out->len - start, lim->frame_bytes_max);
    if (rc) out->len = start;
    return rc;
}

int codec_encode(struct buf *out, const struct codec_msg *m, const struct codec_limits *lim,
                 struct trine_err *err)
{
    size_t start = out->len;
    uint8_t hdr[CODEC_FRAME_HEADER_BYTES] = {0};
    if (buf_append(out, hdr, sizeof(hdr)) != 0)
        return err_set(err, -TRINE_ENOMEM, "encode: out of memory");
    int rc = codec_encode_body(out, m, lim, err);
    if (rc) {
        out->len = start;
        return rc;
    }
    put_u32be(out->data + start, (uint32_t)(out->len - start - CODEC_FRAME_HEADER_BYTES));
    return 0;
}
