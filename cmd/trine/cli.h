/*
 * cli.h - the `trine` command: argument parsing (main.c) and output
 * (output.c). All cluster logic is in libtrine (internal/client/trine.h);
 * this program only turns arguments into calls and results into text or
 * JSON.
 *
 * Exit codes (docs/client.md): 0 ok, 1 not found, 2 usage error,
 * 3 unavailable or timeout, 4 CAS failed, 5 any other error.
 */
#ifndef TRINE_CMD_TRINE_CLI_H
#define TRINE_CMD_TRINE_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "client/trine.h"

#define CLI_EXIT_OK        0
#define CLI_EXIT_NOT_FOUND 1
#define CLI_EXIT_USAGE     2
#define CLI_EXIT_UNAVAIL   3
#define CLI_EXIT_CAS       4
#define CLI_EXIT_OTHER     5

struct cli {
    const char *cmd; /* "put", ... */
    bool json;
    enum trine_consistency consistency;
    struct trine_client *client;
};

/* Exit code for a library status. */
int cli_exit_code(int rc);

/* Reports a failed call (stderr in text mode, a JSON object on stdout with
 * -o json) and returns the exit code. */
int cli_fail(const struct cli *c, int rc, const char *what);

/* Text: bytes with anything unprintable (and tab, newline, backslash) as
 * \xNN / \t / \n / \\. */
void cli_print_escaped(FILE *f, const void *p, size_t n);

/* JSON: "name":"text" if p is valid UTF-8, else "name_base64":"...". */
void cli_json_bytes(FILE *f, const char *name, const void *p, size_t n);
/* JSON string of a NUL-terminated text. */
void cli_json_str(FILE *f, const char *s);

/* "(served by node 2, strong, 3/3 acks)" and the JSON fields of a result. */
void cli_text_meta(FILE *f, const struct trine_result *r, bool write);
void cli_json_meta(FILE *f, const struct trine_result *r);

void cli_print_cluster(const struct cli *c, const struct trine_cluster *cl);

#endif
