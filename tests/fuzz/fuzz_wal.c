/*
 * fuzz_wal.c - libFuzzer target for WAL recovery.
 *
 * Input: one mode byte, then the bytes of segment 1 (and, with MODE_SPLIT, of
 * segment 2: the next two bytes give the split point). With MODE_FIX the
 * harness rewrites the header CRC and every record's prev_crc and CRC so that
 * mutations of the other fields reach the deep paths (batch rules, truncation
 * semantics, wal_read) instead of dying at the first CRC.
 *
 * Property: wal_open never crashes; it either fails with a status or recovers
 * a prefix. After a successful open the log is clean: wal_read works, one more
 * record can be appended, and a second open succeeds with exactly one record
 * more, no torn tail and no corruption.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/crc32c.h"
#include "base/log.h"
#include "wal/wal.h"

#define MODE_REPAIR 0x01
#define MODE_FIX    0x02
#define MODE_ALL    0x04
#define MODE_SPLIT  0x08

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_dir[256];

static void fuzz_clean(void)
{
    DIR *d = opendir(fuzz_dir);
    if (d == NULL) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", fuzz_dir, e->d_name);
        unlink(p);
    }
    closedir(d);
}

static void fuzz_atexit(void)
{
    fuzz_clean();
    rmdir(fuzz_dir);
}

/* Makes the CRCs of a segment image consistent (see the file comment). */
static void fuzz_fix(uint8_t *p, size_t n, uint32_t *chain, bool first_seg)
{
    if (n < 40) return;
    put_u32be(p + 36, crc32c(0, p, 36));
    uint32_t salt = get_u32be(p + 24);
    if (first_seg)
        *chain = get_u32be(p + 28);
    else
        put_u32be(p + 28, *chain);
    size_t off = 40;
    while (n - off >= 40) {
        uint8_t *r = p + off;
        uint32_t len = get_u32be(r + 16);
        if (len > n - off - 40) break;
        put_u32be(r + 4, *chain);
        uint32_t c = crc32c(crc32c(salt, r + 12, 28 + (size_t)len), r + 4, 8);
        put_u32be(r, c);
        *chain = c;
        off += 40 + (size_t)len;
    }
}

static void fuzz_write(uint64_t seq, const uint8_t *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%016llx.wal", fuzz_dir, (unsigned long long)seq);
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0) abort();
    if (n > 0 && write(fd, p, n) != (ssize_t)n) abort();
    close(fd);
}

static int fuzz_count(void *ctx, const struct wal_record *r)
{
    uint64_t *n = ctx;
    (*n)++;
    /* Touch the payload so ASan checks the borrowed bytes. */
    volatile uint8_t sink = 0;
    for (uint32_t i = 0; i < r->len; i++)
        sink ^= ((const uint8_t *)r->payload)[i];
    (void)sink;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fuzz_dir[0] == '\0') {
        const char *tmp = getenv("TMPDIR");
        snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/trine-fuzz-wal-XXXXXX",
                 tmp && *tmp ? tmp : "/tmp");
        if (mkdtemp(fuzz_dir) == NULL) abort();
        atexit(fuzz_atexit);
        log_set_level(LOG_LEVEL_ERROR);
    }
    if (size < 1 || size > (1u << 20)) return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    size_t split = size;
    if ((mode & MODE_SPLIT) && size >= 2) {
        split = ((size_t)data[0] << 8 | data[1]) % (size - 1);
        data += 2;
        size -= 2;
    }
    uint8_t *img = malloc(size + 1);
    if (img == NULL) return 0;
    if (size) memcpy(img, data, size);
    uint32_t chain = 0;
    if (mode & MODE_FIX) {
        fuzz_fix(img, split, &chain, true);
        if (split < size) fuzz_fix(img + split, size - split, &chain, false);
    }
    fuzz_clean();
    fuzz_write(1, img, split);
    if (split < size) fuzz_write(2, img + split, size - split);
    free(img);

    struct wal_options o = {.dir = fuzz_dir, .sync_off = true, .segment_bytes = 4096};
    o.repair = (mode & MODE_REPAIR) != 0;
    o.replay = (mode & MODE_ALL) ? WAL_REPLAY_ALL : WAL_REPLAY_LIVE;
    uint64_t replayed = 0;
    o.replay_fn = fuzz_count;
    o.replay_ctx = &replayed;
    struct wal *w = NULL;
    struct wal_recovery rep;
    struct trine_err err = {0};
    int rc = wal_open(&o, &w, &rep, &err);
    if (rc != 0) {
        if (rc > 0 || w != NULL || err.msg[0] == '\0') abort();
        return 0;
    }
    if (replayed != rep.replayed || rep.replayed > rep.records) abort();
    for (uint32_t p = 0; p < 4; p++) {
        uint64_t n = 0;
        if (wal_read(w, p, 1, UINT64_MAX, fuzz_count, &n, &err) != 0) abort();
    }
    struct wal_record r = {
        .partition = 1, .type = WAL_ENTRY, .term = 1, .index = 1, .payload = "fuzz", .len = 4};
    if (wal_append(w, &r, 1) != 0) abort();
    wal_close(w);

    /* The recovered log is clean now. */
    uint64_t before = rep.records;
    o.repair = false;
    o.replay = WAL_REPLAY_ALL;
    replayed = 0;
    rc = wal_open(&o, &w, &rep, &err);
    if (rc != 0) {
        fprintf(stderr, "second open failed: %s\n", err.msg);
        abort();
    }
    if (rep.records != before + 1 || rep.torn_bytes != 0 || rep.corrupt || replayed != rep.records)
        abort();
    wal_close(w);
    return 0;
}
