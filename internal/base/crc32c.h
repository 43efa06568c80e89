/*
 * crc32c.h - CRC-32C (Castagnoli), hardware-accelerated through Intel ISA-L.
 *
 * crc32c(0, p, n) is the standard CRC-32C of p ("123456789" -> 0xE3069283);
 * crc32c(crc32c(0, a, n), b, m) equals the CRC of a followed by b.
 */
#ifndef TRINE_BASE_CRC32C_H
#define TRINE_BASE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t crc32c(uint32_t crc, const void *data, size_t len);

#endif
