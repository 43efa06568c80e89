/*
 * buf.h - growable byte buffer and fixed-width big-endian helpers.
 *
 * A struct buf owns data (freed by buf_free). Growth doubles capacity; a
 * failed allocation leaves the buffer unchanged and returns -TRINE_ENOMEM.
 */
#ifndef TRINE_BASE_BUF_H
#define TRINE_BASE_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

void buf_init(struct buf *b);
/* Ensures room for `extra` more bytes after len. */
int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *p, size_t n);
/* Drops the contents, keeps the capacity. */
static inline void buf_reset(struct buf *b)
{
    b->len = 0;
}
/* Removes the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);
void buf_free(struct buf *b);

static inline void put_u16be(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void put_u32be(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline void put_u64be(uint8_t *p, uint64_t v)
{
    put_u32be(p, (uint32_t)(v >> 32));
    put_u32be(p + 4, (uint32_t)v);
}
static inline uint16_t get_u16be(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}
static inline uint32_t get_u32be(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t get_u64be(const uint8_t *p)
{
    return (uint64_t)get_u32be(p) << 32 | get_u32be(p + 4);
}

#endif
