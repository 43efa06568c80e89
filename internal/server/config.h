/*
 * config.h - trined's configuration: command-line flags and an optional
 * config file with the same names.
 *
 * Precedence: built-in defaults < config file (--config FILE) < flags. The
 * file holds one `name = value` per line (names as the flags, without the
 * dashes; `#` starts a comment; values may be quoted). Every option is a row
 * of one table (config.c), which also produces --help.
 *
 * Ownership: strings in struct server_config point into storage owned by the
 * struct (config_free releases it).
 */
#ifndef TRINE_SERVER_CONFIG_H
#define TRINE_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/log.h"
#include "base/status.h"

#define CONFIG_MEMBERS_MAX 1024

struct config_member {
    uint32_t id;
    char *addr; /* host:port */
};

struct server_config {
    uint32_t id;
    char *listen; /* host:port, client and peer traffic (TLS) */
    char *http;   /* host:port, admin HTTP; NULL = off */
    char *data_dir;
    char *initial_cluster; /* "1=host:port,2=host:port,..." as given */
    struct config_member members[CONFIG_MEMBERS_MAX];
    size_t nmembers;
    uint32_t partitions;
    uint32_t vnodes;
    char *tls_cert;
    char *tls_key;
    char *tls_ca;
    uint64_t max_frame_bytes;
    uint64_t max_key_bytes;
    uint64_t max_value_bytes;
    enum log_level log_level;
    bool fsync;
    uint64_t store_memtable_bytes;
    uint32_t store_key_cache; /* entries */
    bool store_snappy;
    bool repair;     /* --repair: cut a corrupt WAL instead of refusing to start */
    char *owned[64]; /* heap copies behind the char * fields, freed by config_free */
    size_t nowned;
};

/* Fills defaults. */
void config_init(struct server_config *c);
void config_free(struct server_config *c);

/* Parses argv (argv[0] is skipped): `--name value`, `--name=value`, `--help`.
 * Returns 0, 1 when --help was printed to out, or -TRINE_EINVALID with a
 * message naming the flag in err. Validates the result (config_validate). */
int config_parse_args(struct server_config *c, int argc, char **argv, FILE *out,
                      struct trine_err *err);

/* Applies one config file; same names and rules. */
int config_load_file(struct server_config *c, const char *path, struct trine_err *err);

/* Checks required options and cross-option rules (id listed in
 * initial-cluster, limits ordered: key + value fit in a frame). */
int config_validate(const struct server_config *c, struct trine_err *err);

void config_usage(FILE *out);

#endif
