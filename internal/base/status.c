/*
 * status.c - the status table (generated from proto/trine.schema) and the
 * errno boundary.
 */
#include "base/status.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

struct status_row {
    int code;
    int wire;
    const char *name;
    const char *msg;
};

#define STATUS_ROW(NAME, CODE, WIRE, MSG) {CODE, WIRE, #NAME, MSG},
static const struct status_row status_rows[] = {TRINE_STATUS_TABLE(STATUS_ROW)};
#undef STATUS_ROW

static const struct status_row *status_find(int rc)
{
    int code = rc < 0 ? -rc : rc;
    for (size_t i = 0; i < sizeof(status_rows) / sizeof(status_rows[0]); i++) {
        if (status_rows[i].code == code) return &status_rows[i];
    }
    return NULL;
}

const char *status_name(int rc)
{
    const struct status_row *r = status_find(rc);
    return r ? r->name : "UNKNOWN";
}

const char *status_message(int rc)
{
    const struct status_row *r = status_find(rc);
    return r ? r->msg : "unknown status code";
}

bool status_is_wire(int rc)
{
    const struct status_row *r = status_find(rc);
    return r && r->wire;
}

int err_setv(struct trine_err *err, int rc, const char *fmt, va_list ap)
{
    if (err == NULL) return rc;
    err->code = rc;
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    return rc;
}

int err_set(struct trine_err *err, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_setv(err, rc, fmt, ap);
    va_end(ap);
    return rc;
}

void err_clear(struct trine_err *err)
{
    err->code = 0;
    err->msg[0] = '\0';
}

int status_from_errno(int e)
{
    switch (e) {
    case ENOSPC:
    case EDQUOT:
        return -TRINE_ENOSPACE;
    case ENOMEM:
        return -TRINE_ENOMEM;
    case EEXIST:
        return -TRINE_EEXISTS;
    case EAGAIN:
        return -TRINE_EAGAIN;
    case EINVAL:
        return -TRINE_EINVALID;
    default:
        return -TRINE_EIO;
    }
}
