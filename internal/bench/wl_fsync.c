/*
 * wl_fsync.c - the bare-disk baseline: one thread appends records to a plain
 * file, `batch` records per write(2) + fdatasync(2), exactly the I/O pattern a
 * perfectly coalescing group commit would produce. Latency per op is the
 * latency of the batch that carried it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench.h"

int bench_wl_fsync(const struct bench_opts *o, struct bench_result *r, struct trine_err *err)
{
    uint32_t batch = o->batch ? o->batch : (uint32_t)o->appenders;
    size_t chunk = (size_t)batch * o->record_bytes;
    r->batch = batch;
    char path[4096];
    snprintf(path, sizeof(path), "%s/fsync.dat", o->dir);
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return err_set(err, status_from_errno(errno), "open %s: %s", path, strerror(errno));
    char *data = malloc(chunk);
    if (data == NULL) {
        close(fd);
        return err_set(err, -TRINE_ENOMEM, "allocating %zu bytes", chunk);
    }
    memset(data, 'x', chunk);

    int rc = 0;
    uint64_t t0 = bench_now_us(), deadline = t0 + (uint64_t)(o->seconds * 1e6);
    uint64_t written = 0;
    for (uint64_t now = t0; now < deadline;) {
        ssize_t w = write(fd, data, chunk);
        if (w != (ssize_t)chunk) {
            rc = err_set(err, w < 0 ? status_from_errno(errno) : -TRINE_EIO, "write %s: %s", path,
                         w < 0 ? strerror(errno) : "short write");
            break;
        }
        if (o->fsync && fdatasync(fd) != 0) {
            rc = err_set(err, -TRINE_EFSYNC, "fdatasync %s: %s", path, strerror(errno));
            break;
        }
        uint64_t end = bench_now_us();
        for (uint32_t i = 0; i < batch; i++)
            hist_record(&r->lat_us, end - now);
        r->ops += batch;
        r->bytes += chunk;
        r->fsyncs += o->fsync;
        written += chunk;
        now = end;
        /* Keep the file from growing without bound on fast disks: start over
         * past 1 GiB, as a WAL would move to a new segment. */
        if (written > (1u << 30)) {
            if (ftruncate(fd, 0) != 0) break;
            written = 0;
        }
    }
    r->seconds = (double)(bench_now_us() - t0) / 1e6;
    free(data);
    close(fd);
    unlink(path);
    return rc;
}
