/*
 * fs.h - the file-system interface every WAL file access goes through, so tests
 * can inject faults (tests/lib/fsfault.h) and the fuzzer can run recovery on
 * arbitrary bytes. wal_fs_posix() is the real one.
 *
 * Conventions: every operation returns >= 0 on success (an fd, a byte count or
 * 0) and -errno on failure; it must be callable from any thread. Paths are
 * complete (dir + "/" + name). pwritev may write less than asked (the caller
 * loops); pread returns fewer bytes only at end of file. Implementations own
 * nothing the caller passes in. preallocate may be NULL; every other operation
 * is required.
 */
#ifndef TRINE_WAL_FS_H
#define TRINE_WAL_FS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct wal_fs {
    /* flags: O_RDONLY or O_RDWR, optionally | O_CREAT | O_EXCL; returns an fd. */
    int (*open)(void *ctx, const char *path, int flags);
    ssize_t (*pwritev)(void *ctx, int fd, const struct iovec *iov, int iovcnt, uint64_t off);
    ssize_t (*pread)(void *ctx, int fd, void *buf, size_t n, uint64_t off);
    int (*fdatasync)(void *ctx, int fd);
    int (*ftruncate)(void *ctx, int fd, uint64_t len);
    int (*size)(void *ctx, int fd, uint64_t *out);
    int (*close)(void *ctx, int fd);
    int (*unlink)(void *ctx, const char *path);
    int (*rename)(void *ctx, const char *from, const char *to);
    /* Creates dir (not its parents); an existing directory is not an error. */
    int (*mkdir)(void *ctx, const char *path);
    /* Calls fn for each entry name of dir except "." and ".."; stops and returns
     * fn's value if it is non-zero. */
    int (*list)(void *ctx, const char *dir, int (*fn)(void *arg, const char *name), void *arg);
    /* fsync of the directory itself, after creating, renaming or deleting in it. */
    int (*sync_dir)(void *ctx, const char *dir);
    /* Reserves disk space for bytes [0, len) of fd and makes the file at least
     * len bytes long, the new bytes reading as zeros (never shrinks it). 0 also
     * when the file system cannot (nothing done); -errno for a real failure
     * (ENOSPC, EIO). NULL: not supported. Not durable until the next fdatasync. */
    int (*preallocate)(void *ctx, int fd, uint64_t len);
    void *ctx;
};

/* The POSIX implementation (static storage, ctx unused). */
const struct wal_fs *wal_fs_posix(void);

#endif
