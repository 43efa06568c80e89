/*
 * decode.c - bounded msgpack -> struct codec_msg, driven by the descriptor tables.
 *
 * A cursor walks the body once. Invariants that make hostile input harmless:
 *   - every declared str/bin length is checked against its limit and against
 *     the bytes left before the cursor moves past it;
 *   - every declared array count is checked against its limit and against
 *     the bytes left (count * smallest possible element encoding) BEFORE the
 *     array is allocated, and allocations come from the caller's scratch,
 *     capped at decode_mem; so a 40-byte body declaring 2^32 elements is
 *     rejected without allocating anything;
 *   - every value consumes at least one byte, and nesting follows the schema
 *     (capped at DEPTH_MAX all the same), so work is O(body length).
 * str/bin results point into the body (zero-copy). Bytes from the network
 * are never asserted on: every failure is a status with a message.
 *
 * Versions (docs/protocol.md, "Compatibility between versions"): a struct or
 * message array may hold FEWER elements than the schema declares (at least
 * one): it comes from an older sender, and the fields it did not know decode
 * as zero / empty. MORE elements than declared come from a newer sender and
 * are refused with -TRINE_EUNSUPPORTED: this version would silently drop
 * what it does not understand (for a replicated command, that is a replica
 * applying the entry differently from the others).
 *
 * msgpack tags handled (spec: github.com/msgpack/msgpack/blob/master/spec.md):
 * positive/negative fixint, fixmap, fixarray, fixstr, and 0xc0-0xdf in
 * mp_forms below; 0xc1 is reserved and rejected.
 */
#include "codec/codec.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "codec/codec_desc.h"

#define DEPTH_MAX 32

enum mp_kind {
    MP_BAD,
    MP_NIL,
    MP_BOOL,
    MP_UINT,
    MP_INT,
    MP_NINT,
    MP_FLOAT,
    MP_STR,
    MP_BIN,
    MP_ARRAY,
    MP_MAP,
    MP_EXT
};

static const char *const mp_kind_names[] = {
    "reserved byte", "nil", "bool", "integer", "integer", "negative integer",
    "float",         "str", "bin",  "array",   "map",     "ext",
};

/* Tags 0xc0..0xdf: kind, bytes of the big-endian length/value after the tag,
 * and fixed payload bytes after that (ext type byte, float, fixext data). */
static const struct {
    uint8_t kind, arg, extra;
} mp_forms[32] = {
    {MP_NIL, 0, 0},   {MP_BAD, 0, 0},   {MP_BOOL, 0, 0}, {MP_BOOL, 0, 0}, /* c0-c3 */
    {MP_BIN, 1, 0},   {MP_BIN, 2, 0},   {MP_BIN, 4, 0},                   /* c4-c6 */
    {MP_EXT, 1, 1},   {MP_EXT, 2, 1},   {MP_EXT, 4, 1},                   /* c7-c9 */
    {MP_FLOAT, 0, 4}, {MP_FLOAT, 0, 8},                                   /* ca-cb */
    {MP_UINT, 1, 0},  {MP_UINT, 2, 0},  {MP_UINT, 4, 0}, {MP_UINT, 8, 0}, /* cc-cf */
    {MP_INT, 1, 0},   {MP_INT, 2, 0},   {MP_INT, 4, 0},  {MP_INT, 8, 0},  /* d0-d3 */
    {MP_EXT, 0, 2},   {MP_EXT, 0, 3},   {MP_EXT, 0, 5},  {MP_EXT, 0, 9},  /* d4-d7 */
    {MP_EXT, 0, 17},                                                      /* d8 */
    {MP_STR, 1, 0},   {MP_STR, 2, 0},   {MP_STR, 4, 0},                   /* d9-db */
    {MP_ARRAY, 2, 0}, {MP_ARRAY, 4, 0}, {MP_MAP, 2, 0},  {MP_MAP, 4, 0},  /* dc-df */
};

/* One decoded tag. v: an integer's value, a bool, a str/bin length, an array
 * count, a map's pair count, or the payload bytes of a float/ext. */
struct mp_head {
    uint8_t kind;
    uint64_t v;
};

struct dec {
    const uint8_t *p, *end;
    const struct codec_limits *lim;
    struct codec_scratch *scratch;
    struct trine_err *err;
    const struct codec_msg_desc *msg; /* the message being decoded (NULL before its type) */
    const char *sname, *fname;        /* where we are, for messages */
};

static int fail(struct dec *d, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(struct dec *d, int rc, const char *fmt, ...)
{
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    err_set(d->err, rc, "decode %s.%s: %s", d->sname, d->fname, msg);
    return rc; /* not err_set's result: lets the analyzer see rc != 0 */
}

static size_t left(const struct dec *d)
{
    return (size_t)(d->end - d->p);
}

static int mp_head(struct dec *d, struct mp_head *h)
{
    *h = (struct mp_head){MP_BAD, 0};
    if (d->p >= d->end) return fail(d, -TRINE_EBAD_REQUEST, "truncated");
    uint8_t t = *d->p++;
    if (t <= 0x7f) {
        *h = (struct mp_head){MP_UINT, t};
    } else if (t <= 0x8f) {
        *h = (struct mp_head){MP_MAP, t & 0x0fu};
    } else if (t <= 0x9f) {
        *h = (struct mp_head){MP_ARRAY, t & 0x0fu};
    } else if (t <= 0xbf) {
        *h = (struct mp_head){MP_STR, t & 0x1fu};
    } else if (t >= 0xe0) {
        *h = (struct mp_head){MP_NINT, 0};
    } else {
        uint8_t kind = mp_forms[t - 0xc0].kind, arg = mp_forms[t - 0xc0].arg;
        if (kind == MP_BAD) return fail(d, -TRINE_EBAD_REQUEST, "reserved msgpack byte 0xc1");
        if (left(d) < arg) return fail(d, -TRINE_EBAD_REQUEST, "truncated");
        uint64_t v = 0;
        for (uint8_t i = 0; i < arg; i++)
            v = v << 8 | *d->p++;
        if (kind == MP_BOOL) v = t & 1u;
        if (kind == MP_INT && arg > 0)                             /* every int form has arg 1..8 */
            kind = (v >> (8u * arg - 1)) & 1u ? MP_NINT : MP_UINT; /* sign bit */
        if (kind == MP_EXT || kind == MP_FLOAT) v += mp_forms[t - 0xc0].extra;
        *h = (struct mp_head){kind, v};
    }
    return 0;
}

static bool enum_has(const struct codec_enum_desc *en, uint64_t v)
{
    for (uint32_t i = 0; i < en->count; i++)
        if (en->values[i] == v) return true;
    return false;
}

static int dec_fields(struct dec *d, const struct codec_struct_desc *sd, uint8_t *base,
                      uint64_t count, int depth);

static int want(struct dec *d, const struct mp_head *h, uint8_t kind, const char *what)
{
    if (h->kind == kind) return 0;
    return fail(d, -TRINE_EBAD_REQUEST, "expected %s, got %s", what, mp_kind_names[h->kind]);
}

static int dec_uint(struct dec *d, const struct codec_field_desc *f, uint8_t *dst)
{
    struct mp_head h;
    int rc = mp_head(d, &h);
    if (rc) return rc;
    if ((rc = want(d, &h, MP_UINT, "an unsigned integer"))) return rc;
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    if (f->kind == CODEC_K_ENUM) {
        if (!enum_has(f->en, h.v))
            return fail(d, -TRINE_EBAD_REQUEST, "%llu is not a %s", (unsigned long long)h.v,
                        f->en->name);
        u8 = (uint8_t)h.v;
        memcpy(dst, &u8, 1);
        return 0;
    }
    if (f->elem_size < 8 && h.v >> (8 * f->elem_size))
        return fail(d, -TRINE_EBAD_REQUEST, "%llu does not fit %u bytes", (unsigned long long)h.v,
                    f->elem_size);
    switch (f->elem_size) {
    case 1:
        u8 = (uint8_t)h.v;
        memcpy(dst, &u8, 1);
        break;
    case 2:
        u16 = (uint16_t)h.v;
        memcpy(dst, &u16, 2);
        break;
    case 4:
        u32 = (uint32_t)h.v;
        memcpy(dst, &u32, 4);
        break;
    default:
        memcpy(dst, &h.v, 8);
        break;
    }
    return 0;
}

/* One value of field f's kind (one element, for an array field) into dst. */
static int dec_value(struct dec *d, const struct codec_field_desc *f, uint8_t *dst, int depth)
{
    struct mp_head h;
    int rc;
    switch (f->kind) {
    case CODEC_K_BOOL: {
        if ((rc = mp_head(d, &h)) || (rc = want(d, &h, MP_BOOL, "a bool"))) return rc;
        bool b = h.v != 0;
        memcpy(dst, &b, sizeof(b));
        return 0;
    }
    case CODEC_K_STR:
    case CODEC_K_BIN: {
        if ((rc = mp_head(d, &h))) return rc;
        if (h.kind != MP_STR && h.kind != MP_BIN) /* either is accepted, for interop */
            return fail(d, -TRINE_EBAD_REQUEST, "expected str or bin, got %s",
                        mp_kind_names[h.kind]);
        uint32_t max = codec_field_bound(f, d->lim);
        if (h.v > max)
            return fail(d, -TRINE_ETOO_LARGE, "%llu bytes exceed the limit %u",
                        (unsigned long long)h.v, max);
        if (h.v > left(d))
            return fail(d, -TRINE_EBAD_REQUEST, "truncated %s", mp_kind_names[h.kind]);
        struct codec_bytes b = {d->p, (uint32_t)h.v};
        memcpy(dst, &b, sizeof(b));
        d->p += h.v;
        return 0;
    }
    case CODEC_K_STRUCT:
        if ((rc = mp_head(d, &h)) || (rc = want(d, &h, MP_ARRAY, "an array"))) return rc;
        return dec_fields(d, f->sub, dst, h.v, depth + 1);
    default: /* integers and enums */
        return dec_uint(d, f, dst);
    }
}

static int dec_array(struct dec *d, const struct codec_field_desc *f, uint8_t *base, int depth)
{
    struct mp_head h;
    int rc;
    if ((rc = mp_head(d, &h)) || (rc = want(d, &h, MP_ARRAY, "an array"))) return rc;
    uint32_t max = codec_field_bound(f, d->lim);
    if (h.v > max)
        return fail(d, -TRINE_ETOO_LARGE, "%llu elements exceed the limit %u",
                    (unsigned long long)h.v, max);
    uint64_t min_elem = f->kind == CODEC_K_STRUCT ? f->sub->min_bytes : 1;
    if (h.v * min_elem > left(d)) /* h.v < 2^32 and min_elem is small: no overflow */
        return fail(d, -TRINE_EBAD_REQUEST, "%llu elements cannot fit in %zu bytes",
                    (unsigned long long)h.v, left(d));
    uint32_t n = (uint32_t)h.v;
    void *items = NULL;
    if (n > 0) {
        if (d->scratch == NULL)
            return fail(d, -TRINE_EINVALID, "an array needs a struct codec_scratch");
        rc = codec_scratch_alloc(d->scratch, (size_t)n * f->elem_size, d->lim->decode_mem_bytes_max,
                                 &items);
        if (rc == -TRINE_ETOO_LARGE)
            return fail(d, rc, "arrays exceed the decode_mem limit %u",
                        d->lim->decode_mem_bytes_max);
        if (rc) return fail(d, rc, "out of memory");
        memset(items, 0, (size_t)n * f->elem_size);
    }
    codec_store_ptr(base, f->offset, items);
    memcpy(base + f->count_offset, &n, sizeof(n));
    const char *sname = d->sname, *fname = d->fname;
    for (uint32_t k = 0; k < n; k++) {
        rc = dec_value(d, f, (uint8_t *)items + (size_t)k * f->elem_size, depth);
        if (rc) return rc;
        d->sname = sname; /* a nested struct moved them */
        d->fname = fname;
    }
    return 0;
}

/* The field count of a sender newer than this binary: refused, naming the
 * struct and the message it is in. */
static int fail_newer(struct dec *d, const struct codec_struct_desc *sd, uint64_t count)
{
    if (sd == d->msg->body)
        err_set(d->err, -TRINE_EUNSUPPORTED,
                "decode: message %s has %llu fields, this version knows %u; upgrade this node",
                d->msg->name, (unsigned long long)count, sd->nfields);
    else
        err_set(d->err, -TRINE_EUNSUPPORTED,
                "decode: message %s: struct %s has %llu fields, this version knows %u; upgrade "
                "this node",
                d->msg->name, sd->name, (unsigned long long)count, sd->nfields);
    return -TRINE_EUNSUPPORTED;
}

/* The fields of sd from an array of count elements whose header is consumed.
 * Fields past count (an older sender's array) are left zero: codec_decode
 * zeroes *out and dec_array its elements, and this zeroes them again so the
 * rule does not depend on where base came from. */
static int dec_fields(struct dec *d, const struct codec_struct_desc *sd, uint8_t *base,
                      uint64_t count, int depth)
{
    if (depth > DEPTH_MAX) return fail(d, -TRINE_EBAD_REQUEST, "nested deeper than %d", DEPTH_MAX);
    d->sname = sd->name;
    d->fname = "(fields)";
    if (count > left(d))
        return fail(d, -TRINE_EBAD_REQUEST, "%llu fields cannot fit in %zu bytes",
                    (unsigned long long)count, left(d));
    if (count > sd->nfields) return fail_newer(d, sd, count);
    /* Every struct and message has had its first field since it was introduced
     * (fields are only appended), so no version writes an empty array. */
    uint32_t min = sd->nfields > 0 ? 1 : 0;
    if (count < min)
        return fail(d, -TRINE_EBAD_REQUEST, "%llu fields, at least %u required",
                    (unsigned long long)count, min);
    uint32_t i = 0;
    for (; i < (uint32_t)count; i++) {
        const struct codec_field_desc *f = &sd->fields[i];
        d->sname = sd->name;
        d->fname = f->name;
        int rc =
            f->is_array ? dec_array(d, f, base, depth) : dec_value(d, f, base + f->offset, depth);
        if (rc) return rc;
    }
    for (; i < sd->nfields; i++) /* unknown to the sender: zero / empty */
        codec_field_zero(base, &sd->fields[i]);
    d->sname = sd->name;
    return 0;
}

int codec_decode(const uint8_t *body, size_t len, const struct codec_limits *lim,
                 struct codec_scratch *scratch, struct codec_msg *out, struct trine_err *err)
{
    struct codec_limits def;
    if (lim == NULL) {
        def = codec_limits_default();
        lim = &def;
    }
    memset(out, 0, sizeof(*out));
    if (scratch) codec_scratch_reset(scratch);
    /* No arithmetic on a NULL body (len 0): it is undefined behaviour. */
    struct dec d = {body, len ? body + len : body, lim, scratch, err, NULL, "message", "(type)"};
    if (len > lim->frame_bytes_max)
        return fail(&d, -TRINE_ETOO_LARGE, "body of %zu bytes exceeds the frame limit %u", len,
                    lim->frame_bytes_max);
    struct mp_head h;
    int rc;
    if ((rc = mp_head(&d, &h)) || (rc = want(&d, &h, MP_ARRAY, "an array"))) return rc;
    if (h.v == 0) return fail(&d, -TRINE_EBAD_REQUEST, "empty array, no type");
    uint64_t count = h.v - 1;
    if ((rc = mp_head(&d, &h)) || (rc = want(&d, &h, MP_UINT, "a type id"))) return rc;
    const struct codec_msg_desc *md = h.v < 256 ? codec_msg_table[h.v] : NULL;
    if (md == NULL)
        return fail(&d, -TRINE_EUNSUPPORTED, "unknown message type %llu", (unsigned long long)h.v);
    out->type = md->type;
    d.msg = md;
    rc = dec_fields(&d, md->body, (uint8_t *)out + md->offset, count, 1);
    if (rc) return rc;
    if (d.p != d.end) {
        d.sname = md->name;
        d.fname = "(end)";
        return fail(&d, -TRINE_EBAD_REQUEST, "%zu bytes after the message", left(&d));
    }
    return 0;
}
