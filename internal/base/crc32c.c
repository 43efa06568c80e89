/*
 * crc32c.c - the one boundary to ISA-L's CRC. ISA-L's crc32_iscsi works on the
 * un-inverted register and takes an int length, so this inverts on entry and
 * exit and feeds large buffers in pieces.
 */
#include "base/crc32c.h"

#include <isa-l/crc.h>
#include <limits.h>

uint32_t crc32c(uint32_t crc, const void *data, size_t len)
{
    /* ISA-L's prototype lacks const; it does not write the buffer. */
    unsigned char *p = (unsigned char *)(void *)(const void *)data;
    uint32_t reg = ~crc;
    while (len > 0) {
        int n = len > (size_t)INT_MAX ? INT_MAX : (int)len;
        reg = crc32_iscsi(p, n, reg);
        p += n;
        len -= (size_t)n;
    }
    return ~reg;
}
