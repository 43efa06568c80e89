/*
 * status.h - Trine's single error convention.
 *
 * Every fallible function returns int: 0 on success, or -TRINE_E<NAME> (the
 * codes live in proto/trine.schema; status_codes.h is generated from it).
 * Detail goes into a fixed-size struct trine_err owned by the object that
 * failed, never into a heap string, so reporting an error cannot fail.
 * Foreign conventions (errno, leveldb errptr, OpenSSL's error queue) are
 * converted at exactly one boundary each: status_from_errno() here, the others
 * in store/ and transport/.
 */
#ifndef TRINE_BASE_STATUS_H
#define TRINE_BASE_STATUS_H

#include <stdarg.h>
#include <stdbool.h>

#include "base/status_codes.h"

#define TRINE_ERR_MSG_MAX 256

struct trine_err {
    int code;                    /* 0 or -TRINE_E* of the last failure */
    char msg[TRINE_ERR_MSG_MAX]; /* NUL-terminated, human readable */
};

/* Name of a status ("NOT_FOUND") for rc = 0 or -code; "UNKNOWN" otherwise. */
const char *status_name(int rc);

/* Default one-line description of a status. Static storage. */
const char *status_message(int rc);

/* True if the code may be sent on the wire (scope `wire` in the schema). */
bool status_is_wire(int rc);

/* Records rc and a printf-style message in err (may be NULL) and returns rc,
 * so callers can write `return err_set(&x->err, -TRINE_EIO, "...", ...)`. */
int err_set(struct trine_err *err, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int err_setv(struct trine_err *err, int rc, const char *fmt, va_list ap);

/* Clears err to success. */
void err_clear(struct trine_err *err);

/* Maps an errno value to a status: ENOSPC -> NOSPACE, ENOMEM -> NOMEM,
 * EEXIST -> EXISTS, EAGAIN -> AGAIN, everything else -> IO. */
int status_from_errno(int e);

#endif
