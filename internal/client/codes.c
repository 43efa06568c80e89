/*
 * codes.c - every status code of the public header trine.h, by name. This
 * file must include trine.h and nothing from base/: it sees trine.h's own
 * copy of the enum, which test_client compares with base/status_codes.h.
 */
#include "client/codes.h"
#include "client/trine.h"

#define ROW(n)                                                                                     \
    {                                                                                              \
#n, TRINE_E##n                                                                             \
    }
const struct client_code_row client_public_codes[] = {
    ROW(OK),          ROW(NOT_FOUND),   ROW(NOT_LEADER),
    ROW(UNAVAILABLE), ROW(TIMEOUT),     ROW(CAS_FAILED),
    ROW(TOO_LARGE),   ROW(BAD_REQUEST), ROW(UNAUTHENTICATED),
    ROW(INTERNAL),    ROW(UNSUPPORTED), ROW(BUSY),
    ROW(STALE),       ROW(IO),          ROW(CORRUPT),
    ROW(NOMEM),       ROW(INVALID),     ROW(CLOSED),
    ROW(FSYNC),       ROW(NOSPACE),     ROW(EXISTS),
    ROW(AGAIN),
};
#undef ROW
const size_t client_public_codes_n = sizeof(client_public_codes) / sizeof(client_public_codes[0]);
