/*
 * codes.h - the status codes as the public header trine.h spells them.
 * codes.c builds this table from trine.h alone (no base/ header), so a unit
 * test can check trine.h against base/status_codes.h, which proto/ generates.
 */
#ifndef TRINE_CLIENT_CODES_H
#define TRINE_CLIENT_CODES_H

#include <stddef.h>

struct client_code_row {
    const char *name;
    int code;
};

extern const struct client_code_row client_public_codes[];
extern const size_t client_public_codes_n;

#endif
