/*
 * fs_posix.c - struct wal_fs over plain POSIX calls. EINTR is retried here so
 * callers see only real failures; nothing else is retried (in particular not
 * fdatasync: the caller stops the process when it fails). preallocate is
 * fallocate(fd, 0, 0, len); a file system without it makes it a no-op.
 */
#include "wal/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int posix_open(void *ctx, const char *path, int flags)
{
    (void)ctx;
    int fd;
    do {
        fd = open(path, flags | O_CLOEXEC, 0644);
    } while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

static ssize_t posix_pwritev(void *ctx, int fd, const struct iovec *iov, int iovcnt, uint64_t off)
{
    (void)ctx;
    ssize_t n;
    do {
        n = pwritev(fd, iov, iovcnt, (off_t)off);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

static ssize_t posix_pread(void *ctx, int fd, void *buf, size_t n, uint64_t off)
{
    (void)ctx;
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -errno;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static int posix_fdatasync(void *ctx, int fd)
{
    (void)ctx;
    /* Not retried on EINTR either: the page-cache state after a failed sync is unknown. */
    return fdatasync(fd) != 0 ? -errno : 0;
}

static int posix_ftruncate(void *ctx, int fd, uint64_t len)
{
    (void)ctx;
    int rc;
    do {
        rc = ftruncate(fd, (off_t)len);
    } while (rc != 0 && errno == EINTR);
    return rc != 0 ? -errno : 0;
}

static int posix_size(void *ctx, int fd, uint64_t *out)
{
    (void)ctx;
    struct stat st;
    if (fstat(fd, &st) != 0) return -errno;
    *out = (uint64_t)st.st_size;
    return 0;
}

static int posix_close(void *ctx, int fd)
{
    (void)ctx;
    /* No retry on EINTR: on Linux the fd is gone either way. */
    return close(fd) != 0 && errno != EINTR ? -errno : 0;
}

static int posix_unlink(void *ctx, const char *path)
{
    (void)ctx;
    return unlink(path) != 0 ? -errno : 0;
}

static int posix_rename(void *ctx, const char *from, const char *to)
{
    (void)ctx;
    return rename(from, to) != 0 ? -errno : 0;
}

static int posix_mkdir(void *ctx, const char *path)
{
    (void)ctx;
    if (mkdir(path, 0755) == 0) return 0;
    if (errno != EEXIST) return -errno;
    struct stat st;
    if (stat(path, &st) != 0) return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

static int posix_list(void *ctx, const char *dir, int (*fn)(void *arg, const char *name), void *arg)
{
    (void)ctx;
    DIR *d = opendir(dir);
    if (d == NULL) return -errno;
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (e == NULL) {
            if (errno != 0) rc = -errno;
            break;
        }
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        rc = fn(arg, e->d_name);
        if (rc != 0) break;
    }
    closedir(d);
    return rc;
}

static int posix_sync_dir(void *ctx, const char *dir)
{
    (void)ctx;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = fsync(fd) != 0 ? -errno : 0;
    close(fd);
    return rc;
}

static int posix_preallocate(void *ctx, int fd, uint64_t len)
{
    (void)ctx;
    /* Mode 0 sets the file size too: later appends into the reserved (unwritten)
     * extents change no size, so their fdatasync has less metadata to write
     * than appends that grow the file. */
    int rc;
    do {
        rc = fallocate(fd, 0, 0, (off_t)len);
    } while (rc != 0 && errno == EINTR);
    if (rc == 0) return 0;
    /* The file system cannot (some network or FUSE file systems, old kernels):
     * not an error, the WAL appends as it would without preallocation. */
    if (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL) return 0;
    return -errno;
}

static const struct wal_fs wal_fs_posix_impl = {
    .open = posix_open,
    .pwritev = posix_pwritev,
    .pread = posix_pread,
    .fdatasync = posix_fdatasync,
    .ftruncate = posix_ftruncate,
    .size = posix_size,
    .close = posix_close,
    .unlink = posix_unlink,
    .rename = posix_rename,
    .mkdir = posix_mkdir,
    .list = posix_list,
    .sync_dir = posix_sync_dir,
    .preallocate = posix_preallocate,
    .ctx = NULL,
};

const struct wal_fs *wal_fs_posix(void)
{
    return &wal_fs_posix_impl;
}
