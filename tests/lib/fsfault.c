/*
 * fsfault.c - the fault-injecting wal_fs (see fsfault.h for the model).
 *
 * Per tracked file: `durable` (bytes an fdatasync made durable) and a list of
 * unsynced operations (write at offset / truncate / preallocate) applied to the
 * real file at once and to `durable` at the next fdatasync of that file.
 */
#include "fsfault.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"

struct ff_op {
    struct ff_op *next;
    bool truncate;
    bool prealloc; /* grows the file to off with zeros, never shrinks it */
    uint64_t off;  /* write offset, or truncate / preallocate length */
    size_t len;
    uint8_t data[]; /* len bytes for a write */
};

struct ff_file {
    struct ff_file *next;
    char *path;
    struct buf durable;
    struct ff_op *ops, *ops_tail;
};

struct ff_fd {
    int fd;
    struct ff_file *file;
};

struct fsfault {
    struct wal_fs fs;
    const struct wal_fs *base;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct ff_file *files;
    struct ff_fd *fds;
    size_t nfds, cap_fds;
    int fail_write, fail_fsync, fail_prealloc; /* countdowns, 0 = off */
    int prealloc_errno;                        /* what the failing preallocate returns */
    bool hold, dead;
    int held; /* fdatasyncs blocked now */
    uint64_t writes, fsyncs, preallocs;
};

static void ff_free_ops(struct ff_file *file)
{
    for (struct ff_op *o = file->ops, *n; o; o = n) {
        n = o->next;
        free(o);
    }
    file->ops = file->ops_tail = NULL;
}

static struct ff_file *ff_find(struct fsfault *f, const char *path)
{
    for (struct ff_file *x = f->files; x; x = x->next)
        if (strcmp(x->path, path) == 0) return x;
    return NULL;
}

static void ff_drop(struct fsfault *f, struct ff_file *file)
{
    for (struct ff_file **pp = &f->files; *pp; pp = &(*pp)->next)
        if (*pp == file) {
            *pp = file->next;
            break;
        }
    for (size_t i = 0; i < f->nfds; i++)
        if (f->fds[i].file == file) f->fds[i].file = NULL;
    ff_free_ops(file);
    buf_free(&file->durable);
    free(file->path);
    free(file);
}

static struct ff_file *ff_of_fd(struct fsfault *f, int fd)
{
    for (size_t i = 0; i < f->nfds; i++)
        if (f->fds[i].fd == fd) return f->fds[i].file;
    return NULL;
}

/* Applies one op to an image. */
static void ff_apply(struct buf *img, const struct ff_op *o, size_t len)
{
    if (o->truncate || o->prealloc) {
        if (o->off < img->len && o->truncate) {
            img->len = (size_t)o->off;
        } else if (o->off > img->len) {
            size_t grow = (size_t)o->off - img->len;
            if (buf_reserve(img, grow) == 0) {
                memset(img->data + img->len, 0, grow);
                img->len += grow;
            }
        }
        return;
    }
    size_t end = (size_t)o->off + len;
    if (end > img->len) {
        size_t grow = end - img->len;
        if (buf_reserve(img, grow) != 0) return;
        memset(img->data + img->len, 0, grow);
        img->len = end;
    }
    memcpy(img->data + o->off, o->data, len);
}

static int ff_open(void *ctx, const char *path, int flags)
{
    struct fsfault *f = ctx;
    pthread_mutex_lock(&f->mu);
    int fd = f->dead ? -EIO : f->base->open(f->base->ctx, path, flags);
    if (fd >= 0) {
        struct ff_file *file = ff_find(f, path);
        if (file == NULL && (file = calloc(1, sizeof(*file))) != NULL) {
            file->path = strdup(path);
            buf_init(&file->durable);
            /* What is on disk before we ever saw it counts as durable. */
            uint64_t size = 0;
            if (f->base->size(f->base->ctx, fd, &size) == 0 && size > 0 &&
                buf_reserve(&file->durable, (size_t)size) == 0) {
                ssize_t n = f->base->pread(f->base->ctx, fd, file->durable.data, (size_t)size, 0);
                file->durable.len = n > 0 ? (size_t)n : 0;
            }
            file->next = f->files;
            f->files = file;
        }
        if (f->nfds == f->cap_fds) {
            size_t ncap = f->cap_fds ? f->cap_fds * 2 : 16;
            struct ff_fd *nf = realloc(f->fds, ncap * sizeof(*f->fds));
            if (nf == NULL) abort(); /* test code: out of memory is fatal */
            f->fds = nf;
            f->cap_fds = ncap;
        }
        f->fds[f->nfds++] = (struct ff_fd){.fd = fd, .file = file};
    }
    pthread_mutex_unlock(&f->mu);
    return fd;
}

static ssize_t ff_pwritev(void *ctx, int fd, const struct iovec *iov, int iovcnt, uint64_t off)
{
    struct fsfault *f = ctx;
    pthread_mutex_lock(&f->mu);
    f->writes++;
    ssize_t rc;
    if (f->dead || (f->fail_write > 0 && --f->fail_write == 0)) {
        rc = -EIO;
    } else {
        rc = f->base->pwritev(f->base->ctx, fd, iov, iovcnt, off);
        struct ff_file *file = ff_of_fd(f, fd);
        if (rc > 0 && file != NULL) {
            struct ff_op *o = malloc(sizeof(*o) + (size_t)rc);
            if (o == NULL) abort(); /* test code: out of memory is fatal */
            *o = (struct ff_op){.off = off, .len = (size_t)rc};
            size_t got = 0;
            for (int i = 0; i < iovcnt && got < (size_t)rc; i++) {
                size_t k = iov[i].iov_len < (size_t)rc - got ? iov[i].iov_len : (size_t)rc - got;
                memcpy(o->data + got, iov[i].iov_base, k);
                got += k;
            }
            if (file->ops_tail)
                file->ops_tail->next = o;
            else
                file->ops = o;
            file->ops_tail = o;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static ssize_t ff_pread(void *ctx, int fd, void *buf, size_t n, uint64_t off)
{
    struct fsfault *f = ctx;
    pthread_mutex_lock(&f->mu);
    bool dead = f->dead;
    pthread_mutex_unlock(&f->mu);
    return dead ? -EIO : f->base->pread(f->base->ctx, fd, buf, n, off);
}

static int ff_fdatasync(void *ctx, int fd)
{
    struct fsfault *f = ctx;
    pthread_mutex_lock(&f->mu);
    f->fsyncs++;
    while (f->hold && !f->dead) {
        f->held++;
        pthread_cond_broadcast(&f->cv);
        pthread_cond_wait(&f->cv, &f->mu);
        f->held--;
    }
    int rc = 0;
    if (f->dead || (f->fail_fsync > 0 && --f->fail_fsync == 0)) {
        rc = -EIO;
    } else {
        rc = f->base->fdatasync(f->base->ctx, fd);
        struct ff_file *file = ff_of_fd(f, fd);
        if (rc == 0 && file != NULL) {
            for (struct ff_op *o = file->ops; o; o = o->next)
                ff_apply(&file->durable, o, o->len);
            ff_free_ops(file);
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

/* Queues a truncate or preallocate op (no data) on file. */
static void ff_push_op(struct ff_file *file, bool prealloc, uint64_t len)
{
    struct ff_op *o = malloc(sizeof(*o));
    if (o == NULL) abort(); /* test code: out of memory is fatal */
    *o = (struct ff_op){.truncate = !prealloc, .prealloc = prealloc, .off = len};
    if (file->ops_tail)
        file->ops_tail->next = o;
    else
        file->ops = o;
    file->ops_tail = o;
}

static int ff_ftruncate(void *ctx, int fd, uint64_t len)
{
    struct fsfault *f = ctx;
    pthread_mutex_lock(&f->mu);
    int rc = f->dead ? -EIO : f->base->ftruncate(f->base->ctx, fd, len);
    struct ff_file *file = ff_of_fd(f, fd);
    if (rc == 0 && file != NULL) ff_push_op(file, false, len);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static int ff_preallocate(void *ctx, int fd, uint64_t len)
{
    struct fsfault *f = ctx;
    pthread_mutex_lock(&f->mu);
    f->preallocs++;
    int rc = 0;
    if (f->dead) {
        rc = -EIO;
    } else if (f->fail_prealloc > 0 && --f->fail_prealloc == 0) {
        rc = -f->prealloc_errno; /* nothing reserved */
    } else if (f->base->preallocate != NULL) {
        rc = f->base->preallocate(f->base->ctx, fd, len);
        uint64_t size = 0;
        struct ff_file *file = ff_of_fd(f, fd);
        /* What the file really became (the base may have done nothing). */
        if (rc == 0 && file != NULL && f->base->size(f->base->ctx, fd, &size) == 0)
            ff_push_op(file, true, size);
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static int ff_size(void *ctx, int fd, uint64_t *out)
{
    struct fsfault *f = ctx;
    return f->base->size(f->base->ctx, fd, out);
}

static int ff_close(void *ctx, int fd)
{
    struct fsfault *f = ctx;
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < f->nfds; i++)
        if (f->fds[i].fd == fd) {
            f->fds[i] = f->fds[--f->nfds];
            break;
        }
    int rc = f->base->close(f->base->ctx, fd);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static int ff_unlink(void *ctx, const char *path)
{
    struct fsfault *f = ctx;
    pthread_mutex_lock(&f->mu);
    int rc = f->dead ? -EIO : f->base->unlink(f->base->ctx, path);
    struct ff_file *file = ff_find(f, path);
    if (rc == 0 && file != NULL) ff_drop(f, file);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static int ff_rename(void *ctx, const char *from, const char *to)
{
    struct fsfault *f = ctx;
    pthread_mutex_lock(&f->mu);
    int rc = f->dead ? -EIO : f->base->rename(f->base->ctx, from, to);
    if (rc == 0) {
        struct ff_file *old = ff_find(f, to), *file = ff_find(f, from);
        if (old != NULL) ff_drop(f, old);
        if (file != NULL) {
            free(file->path);
            file->path = strdup(to);
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static int ff_mkdir(void *ctx, const char *path)
{
    struct fsfault *f = ctx;
    return f->dead ? -EIO : f->base->mkdir(f->base->ctx, path);
}

static int ff_list(void *ctx, const char *dir, int (*fn)(void *arg, const char *name), void *arg)
{
    struct fsfault *f = ctx;
    return f->dead ? -EIO : f->base->list(f->base->ctx, dir, fn, arg);
}

static int ff_sync_dir(void *ctx, const char *dir)
{
    struct fsfault *f = ctx;
    pthread_mutex_lock(&f->mu);
    int rc = f->dead ? -EIO : f->base->sync_dir(f->base->ctx, dir);
    pthread_mutex_unlock(&f->mu);
    return rc;
}

struct fsfault *fsfault_new(const struct wal_fs *base)
{
    struct fsfault *f = calloc(1, sizeof(*f));
    if (f == NULL) return NULL;
    f->base = base ? base : wal_fs_posix();
    f->fs = (struct wal_fs){.open = ff_open,
                            .pwritev = ff_pwritev,
                            .pread = ff_pread,
                            .fdatasync = ff_fdatasync,
                            .ftruncate = ff_ftruncate,
                            .size = ff_size,
                            .close = ff_close,
                            .unlink = ff_unlink,
                            .rename = ff_rename,
                            .mkdir = ff_mkdir,
                            .list = ff_list,
                            .sync_dir = ff_sync_dir,
                            .preallocate = ff_preallocate,
                            .ctx = f};
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    return f;
}

void fsfault_free(struct fsfault *f)
{
    if (f == NULL) return;
    while (f->files)
        ff_drop(f, f->files);
    free(f->fds);
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cv);
    free(f);
}

const struct wal_fs *fsfault_fs(struct fsfault *f)
{
    return &f->fs;
}

void fsfault_fail_write(struct fsfault *f, int nth)
{
    pthread_mutex_lock(&f->mu);
    f->fail_write = nth;
    pthread_mutex_unlock(&f->mu);
}

void fsfault_fail_fsync(struct fsfault *f, int nth)
{
    pthread_mutex_lock(&f->mu);
    f->fail_fsync = nth;
    pthread_mutex_unlock(&f->mu);
}

void fsfault_fail_prealloc(struct fsfault *f, int nth, int err)
{
    pthread_mutex_lock(&f->mu);
    f->fail_prealloc = nth;
    f->prealloc_errno = err;
    pthread_mutex_unlock(&f->mu);
}

void fsfault_set_prealloc(struct fsfault *f, bool supported)
{
    f->fs.preallocate = supported ? ff_preallocate : NULL;
}

void fsfault_hold_sync(struct fsfault *f, bool hold)
{
    pthread_mutex_lock(&f->mu);
    f->hold = hold;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

bool fsfault_wait_held(struct fsfault *f, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&f->mu);
    int rc = 0;
    while (f->held == 0 && rc == 0)
        rc = pthread_cond_timedwait(&f->cv, &f->mu, &until);
    bool held = f->held > 0;
    pthread_mutex_unlock(&f->mu);
    return held;
}

void fsfault_crash(struct fsfault *f, uint64_t keep_bytes)
{
    pthread_mutex_lock(&f->mu);
    for (struct ff_file *file = f->files; file; file = file->next) {
        /* Unsynced operations survive in order while the budget lasts. */
        for (struct ff_op *o = file->ops; o && keep_bytes > 0; o = o->next) {
            size_t len = o->truncate || o->prealloc
                             ? 0
                             : (keep_bytes < o->len ? (size_t)keep_bytes : o->len);
            ff_apply(&file->durable, o, len);
            keep_bytes -= len;
        }
        ff_free_ops(file);
        int fd = open(file->path, O_WRONLY | O_TRUNC | O_CLOEXEC);
        if (fd >= 0) {
            size_t done = 0;
            while (done < file->durable.len) {
                ssize_t n = write(fd, file->durable.data + done, file->durable.len - done);
                if (n <= 0) break;
                done += (size_t)n;
            }
            close(fd);
        }
    }
    f->dead = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

uint64_t fsfault_writes(struct fsfault *f)
{
    pthread_mutex_lock(&f->mu);
    uint64_t n = f->writes;
    pthread_mutex_unlock(&f->mu);
    return n;
}

uint64_t fsfault_fsyncs(struct fsfault *f)
{
    pthread_mutex_lock(&f->mu);
    uint64_t n = f->fsyncs;
    pthread_mutex_unlock(&f->mu);
    return n;
}

uint64_t fsfault_preallocs(struct fsfault *f)
{
    pthread_mutex_lock(&f->mu);
    uint64_t n = f->preallocs;
    pthread_mutex_unlock(&f->mu);
    return n;
}

uint64_t fsfault_unsynced_bytes(struct fsfault *f)
{
    uint64_t n = 0;
    pthread_mutex_lock(&f->mu);
    for (struct ff_file *file = f->files; file; file = file->next)
        for (struct ff_op *o = file->ops; o; o = o->next)
            n += o->len;
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* ---- direct edits ---- */

static int ff_edit(const char *path, uint64_t off, uint64_t n, int bit)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = 0;
    for (uint64_t i = 0; i < n && rc == 0; i++) {
        uint8_t b = 0;
        if (bit >= 0 && pread(fd, &b, 1, (off_t)(off + i)) != 1) rc = -1;
        b = bit >= 0 ? (uint8_t)(b ^ (1u << bit)) : 0;
        if (rc == 0 && pwrite(fd, &b, 1, (off_t)(off + i)) != 1) rc = -1;
    }
    close(fd);
    return rc;
}

int fsfault_flip_bit(const char *path, uint64_t off, int bit)
{
    return ff_edit(path, off, 1, bit & 7);
}

int fsfault_zero(const char *path, uint64_t off, uint64_t n)
{
    return ff_edit(path, off, n, -1);
}

int fsfault_append_zeros(const char *path, uint64_t n)
{
    int64_t size = fsfault_file_size(path);
    return size < 0 ? -1 : ff_edit(path, (uint64_t)size, n, -1);
}

int64_t fsfault_file_size(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    off_t end = lseek(fd, 0, SEEK_END);
    close(fd);
    return end;
}
