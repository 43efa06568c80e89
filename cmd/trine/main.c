/*
 * main.c - `trine`, the command-line client: parses arguments, opens a
 * libtrine handle, makes one call and prints the result (output.c).
 *
 *   trine [global options] COMMAND [args] [command options]
 *
 * Options may come before or after the command; `--` ends options (for keys
 * or values starting with '-'). Both the option table and the command table
 * below are data: adding either touches one row.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Command bits, to say which commands an option applies to. */
enum {
    C_PUT = 1 << 0,
    C_GET = 1 << 1,
    C_DEL = 1 << 2,
    C_CAS = 1 << 3,
    C_SCAN = 1 << 4,
    C_CLUSTER = 1 << 5,
    C_ALL = 0xff,
};

#define ARGS_MAX 3

struct args {
    const char *endpoints, *cacert, *cert, *key, *consistency, *output;
    uint64_t timeout_ms, ttl_s, min_revision, limit;
    bool help;
    const char *pos[ARGS_MAX + 1]; /* command word, then its arguments */
    int n_pos;
};

enum opt_kind { OPT_STR, OPT_U64, OPT_FLAG };

static const struct opt {
    const char *name;
    const char *alias;
    size_t off;
    const char *help;
    enum opt_kind kind;
    unsigned cmds;
} opts[] = {
    {"--endpoints", NULL, offsetof(struct args, endpoints),
     "H:P,...  nodes to contact (default $TRINE_ENDPOINTS, else 127.0.0.1:7001)", OPT_STR, C_ALL},
    {"--consistency", NULL, offsetof(struct args, consistency), "fast|strong|all  (default strong)",
     OPT_STR, C_ALL},
    {"--cacert", NULL, offsetof(struct args, cacert),
     "FILE  CA certificate (default $TRINE_CACERT)", OPT_STR, C_ALL},
    {"--cert", NULL, offsetof(struct args, cert), "FILE  client certificate (default $TRINE_CERT)",
     OPT_STR, C_ALL},
    {"--key", NULL, offsetof(struct args, key), "FILE  client key (default $TRINE_KEY)", OPT_STR,
     C_ALL},
    {"--timeout", NULL, offsetof(struct args, timeout_ms),
     "MS  whole call, retries included (default 5000)", OPT_U64, C_ALL},
    {"--output", "-o", offsetof(struct args, output), "text|json", OPT_STR, C_ALL},
    {"--ttl", NULL, offsetof(struct args, ttl_s), "SECONDS  expire the key after this long",
     OPT_U64, C_PUT | C_CAS},
    {"--min-revision", NULL, offsetof(struct args, min_revision),
     "R  read only from a replica that applied revision R", OPT_U64, C_GET | C_SCAN},
    {"--limit", NULL, offsetof(struct args, limit), "N  at most N keys (default 1000, 0 = all)",
     OPT_U64, C_SCAN},
    {"--help", "-h", offsetof(struct args, help), "show help", OPT_FLAG, C_ALL},
};

typedef int (*cmd_fn)(struct cli *c, const struct args *a, const struct trine_opts *o);

static int run_put(struct cli *c, const struct args *a, const struct trine_opts *o);
static int run_get(struct cli *c, const struct args *a, const struct trine_opts *o);
static int run_del(struct cli *c, const struct args *a, const struct trine_opts *o);
static int run_cas(struct cli *c, const struct args *a, const struct trine_opts *o);
static int run_scan(struct cli *c, const struct args *a, const struct trine_opts *o);
static int run_cluster(struct cli *c, const struct args *a, const struct trine_opts *o);

static const struct cmd {
    const char *name;
    unsigned bit;
    int nargs;
    cmd_fn run;
    const char *usage;
    const char *help;
} cmds[] = {
    {"put", C_PUT, 2, run_put, "put KEY VALUE [--ttl SECONDS]", "set KEY to VALUE"},
    {"get", C_GET, 1, run_get, "get KEY [--min-revision R]",
     "print KEY's value on stdout, its metadata on stderr (exit 1 if absent)"},
    {"del", C_DEL, 1, run_del, "del KEY", "delete KEY (succeeds if absent)"},
    {"cas", C_CAS, 3, run_cas, "cas KEY EXPECTED_VERSION VALUE [--ttl SECONDS]",
     "set KEY to VALUE if its version is EXPECTED_VERSION (0 = must not exist; exit 4 if not)"},
    {"scan", C_SCAN, 1, run_scan, "scan PREFIX [--limit N]",
     "keys starting with PREFIX in key order, one 'key<TAB>value' per line (\"\" = all)"},
    {"cluster", C_CLUSTER, 1, run_cluster, "cluster status",
     "members, health, partitions and primaries per node, worst lag"},
};

static void usage(FILE *f, const struct cmd *only)
{
    if (only != NULL) {
        fprintf(f, "usage: trine [options] %s\n\n%s.\n\n", only->usage, only->help);
    } else {
        fprintf(f, "usage: trine [options] COMMAND [args]\n\ncommands:\n");
        for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
            fprintf(f, "  %-48s %s\n", cmds[i].usage, cmds[i].help);
        fprintf(f, "\n");
    }
    fprintf(f, "options:\n");
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        if (only != NULL && !(opts[i].cmds & only->bit)) continue;
        if (only == NULL && opts[i].cmds != C_ALL) continue;
        char name[40];
        snprintf(name, sizeof(name), "%s%s%s", opts[i].alias ? opts[i].alias : "",
                 opts[i].alias ? ", " : "", opts[i].name);
        fprintf(f, "  %-18s %s\n", name, opts[i].help);
    }
    fprintf(f, "\nexit codes: 0 ok, 1 not found, 2 usage, 3 unavailable or timeout, "
               "4 CAS failed, 5 other error\n");
}

static int usage_error(const struct cmd *cmd, const char *fmt, const char *arg)
{
    fprintf(stderr, "trine: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(try: trine %s%s--help)\n", cmd ? cmd->name : "", cmd ? " " : "");
    if (cmd) fprintf(stderr, "usage: trine [options] %s\n", cmd->usage);
    return CLI_EXIT_USAGE;
}

static const struct cmd *find_cmd(const char *name)
{
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        if (strcmp(cmds[i].name, name) == 0) return &cmds[i];
    }
    return NULL;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-') return -1;
    *out = v;
    return 0;
}

/* Fills a; returns -1 after printing a usage error. */
static int parse_args(int argc, char **argv, struct args *a, const struct opt **seen,
                      size_t *n_seen)
{
    bool only_pos = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!only_pos && strcmp(arg, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (only_pos || arg[0] != '-' || arg[1] == '\0') {
            if (a->n_pos > ARGS_MAX) {
                usage_error(a->n_pos ? find_cmd(a->pos[0]) : NULL, "too many arguments (%s)", arg);
                return -1;
            }
            a->pos[a->n_pos++] = arg;
            continue;
        }
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        const struct opt *o = NULL;
        for (size_t k = 0; k < sizeof(opts) / sizeof(opts[0]) && o == NULL; k++) {
            if ((strlen(opts[k].name) == len && strncmp(opts[k].name, arg, len) == 0) ||
                (opts[k].alias && strlen(opts[k].alias) == len &&
                 strncmp(opts[k].alias, arg, len) == 0))
                o = &opts[k];
        }
        if (o == NULL) {
            usage_error(NULL, "unknown option %s", arg);
            return -1;
        }
        seen[(*n_seen)++] = o;
        char *field = (char *)a + o->off;
        if (o->kind == OPT_FLAG) {
            *(bool *)field = true;
            continue;
        }
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (val == NULL) {
            usage_error(NULL, "option %s needs a value", o->name);
            return -1;
        }
        if (o->kind == OPT_STR) {
            *(const char **)field = val;
        } else if (parse_u64(val, (uint64_t *)field) != 0) {
            usage_error(NULL, "option %s: not a non-negative integer", o->name);
            return -1;
        }
    }
    return 0;
}

static const char *env_or(const char *v, const char *env, const char *dflt)
{
    if (v != NULL) return v;
    const char *e = getenv(env);
    return e != NULL && e[0] != '\0' ? e : dflt;
}

int main(int argc, char **argv)
{
    struct args a = {.limit = 1000};
    const struct opt *seen[256];
    size_t n_seen = 0;
    if (argc > 200) return usage_error(NULL, "too many arguments%s", "");
    if (parse_args(argc, argv, &a, seen, &n_seen) != 0) return CLI_EXIT_USAGE;
    const struct cmd *cmd = a.n_pos > 0 ? find_cmd(a.pos[0]) : NULL;
    if (a.n_pos > 0 && cmd == NULL) return usage_error(NULL, "unknown command '%s'", a.pos[0]);
    if (a.help) {
        usage(stdout, cmd);
        return CLI_EXIT_OK;
    }
    if (cmd == NULL) {
        usage(stderr, NULL);
        return CLI_EXIT_USAGE;
    }
    for (size_t i = 0; i < n_seen; i++) {
        if (!(seen[i]->cmds & cmd->bit))
            return usage_error(cmd, "option %s does not apply to this command", seen[i]->name);
    }
    if (a.n_pos - 1 != cmd->nargs) return usage_error(cmd, "wrong number of arguments%s", "");
    if (cmd->bit == C_CLUSTER && (a.n_pos < 2 || strcmp(a.pos[1], "status") != 0))
        return usage_error(cmd, "unknown cluster command '%s'", a.pos[1]);

    struct cli c = {.cmd = cmd->name};
    const char *output = a.output ? a.output : "text";
    if (strcmp(output, "json") == 0)
        c.json = true;
    else if (strcmp(output, "text") != 0)
        return usage_error(cmd, "-o takes text or json, not '%s'", output);
    struct trine_opts o = {.ttl_ms = a.ttl_s * 1000, .min_revision = a.min_revision};
    if (a.ttl_s > UINT64_MAX / 1000) return usage_error(cmd, "--ttl too large%s", "");
    if (a.timeout_ms > UINT32_MAX) return usage_error(cmd, "--timeout too large%s", "");
    o.timeout_ms = (uint32_t)a.timeout_ms;
    if (a.limit > UINT32_MAX) return usage_error(cmd, "--limit too large%s", "");
    if (a.consistency != NULL && trine_consistency_parse(a.consistency, &o.consistency) != 0)
        return usage_error(cmd, "--consistency takes fast, strong or all, not '%s'", a.consistency);
    c.consistency = o.consistency;

    struct trine_tls tls = {env_or(a.cacert, "TRINE_CACERT", NULL),
                            env_or(a.cert, "TRINE_CERT", NULL), env_or(a.key, "TRINE_KEY", NULL)};
    if (tls.ca_file == NULL || tls.cert_file == NULL || tls.key_file == NULL)
        return usage_error(cmd,
                           "TLS certificates needed: --cacert, --cert and --key, or "
                           "TRINE_CACERT, TRINE_CERT and TRINE_KEY%s\n"
                           "(for a local cluster: eval \"$(scripts/cluster.sh env)\")",
                           "");
    const char *endpoints = env_or(a.endpoints, "TRINE_ENDPOINTS", "127.0.0.1:7001");
    char errbuf[256];
    int rc = trine_client_open(endpoints, &tls, &c.client, errbuf, sizeof(errbuf));
    if (rc != 0) {
        if (c.json) return cli_fail(&c, rc, NULL);
        fprintf(stderr, "trine: %s\n", errbuf);
        return rc == -TRINE_EINVALID ? CLI_EXIT_USAGE : cli_exit_code(rc);
    }
    int code = cmd->run(&c, &a, &o);
    trine_client_close(c.client);
    return code;
}

/* ---- commands ---- */

static void json_head(const char *op, const char *key)
{
    printf("{\"ok\":true,\"op\":\"%s\"", op);
    if (key != NULL) {
        printf(",");
        cli_json_bytes(stdout, "key", key, strlen(key));
    }
}

static int print_write(struct cli *c, const char *key, const struct trine_result *r, bool version)
{
    if (c->json) {
        json_head(c->cmd, key);
        if (version) printf(",\"version\":%" PRIu64, r->version);
        printf(",");
        cli_json_meta(stdout, r);
        printf("}\n");
        return CLI_EXIT_OK;
    }
    printf("OK revision=%" PRIu64, r->revision);
    /* A fast write is acknowledged before it is applied: no version is known yet. */
    if (version && !(r->version == 0 && r->consistency == TRINE_CONSISTENCY_FAST))
        printf(" version=%" PRIu64, r->version);
    printf(" ");
    cli_text_meta(stdout, r, true);
    printf("\n");
    return CLI_EXIT_OK;
}

static int run_put(struct cli *c, const struct args *a, const struct trine_opts *o)
{
    const char *key = a->pos[1], *val = a->pos[2];
    struct trine_result r;
    int rc = trine_kv_put(c->client, key, strlen(key), val, strlen(val), o, &r);
    if (rc != 0) return cli_fail(c, rc, NULL);
    return print_write(c, key, &r, true);
}

static int run_get(struct cli *c, const struct args *a, const struct trine_opts *o)
{
    const char *key = a->pos[1];
    void *val = NULL;
    size_t len = 0;
    struct trine_result r;
    int rc = trine_kv_get(c->client, key, strlen(key), o, &val, &len, &r);
    if (rc != 0) return cli_fail(c, rc, NULL);
    if (c->json) {
        json_head("get", key);
        printf(",");
        cli_json_bytes(stdout, "value", val, len);
        printf(",\"version\":%" PRIu64 ",\"create_revision\":%" PRIu64 ",\"mod_revision\":%" PRIu64
               ",\"expire_at_ms\":%" PRIu64 ",",
               r.version, r.create_revision, r.mod_revision, r.expire_at_ms);
        cli_json_meta(stdout, &r);
        printf("}\n");
    } else {
        /* The value alone on stdout, so $(trine get k) is the value. */
        fwrite(val, 1, len, stdout);
        fputc('\n', stdout);
        fprintf(stderr, "version=%" PRIu64 " created=%" PRIu64 " modified=%" PRIu64, r.version,
                r.create_revision, r.mod_revision);
        if (r.expire_at_ms != 0) fprintf(stderr, " expire_at_ms=%" PRIu64, r.expire_at_ms);
        fprintf(stderr, " ");
        cli_text_meta(stderr, &r, false);
        fprintf(stderr, "\n");
    }
    trine_free(val);
    return CLI_EXIT_OK;
}

static int run_del(struct cli *c, const struct args *a, const struct trine_opts *o)
{
    const char *key = a->pos[1];
    struct trine_result r;
    int rc = trine_kv_del(c->client, key, strlen(key), o, &r);
    if (rc != 0) return cli_fail(c, rc, NULL);
    return print_write(c, key, &r, false);
}

static int run_cas(struct cli *c, const struct args *a, const struct trine_opts *o)
{
    const char *key = a->pos[1], *val = a->pos[3];
    uint64_t expected;
    if (parse_u64(a->pos[2], &expected) != 0)
        return usage_error(find_cmd("cas"), "EXPECTED_VERSION must be a number, not '%s'",
                           a->pos[2]);
    struct trine_result r;
    int rc = trine_kv_cas(c->client, key, strlen(key), expected, val, strlen(val), o, &r);
    if (rc == -TRINE_ECAS_FAILED && !c->json) {
        fprintf(stderr, "trine cas: CAS failed: ");
        cli_print_escaped(stderr, key, strlen(key));
        if (r.version == 0)
            fprintf(stderr, " does not exist (expected version %" PRIu64 ")\n", expected);
        else
            fprintf(stderr, " is at version %" PRIu64 ", not %" PRIu64 "\n", r.version, expected);
        return CLI_EXIT_CAS;
    }
    if (rc == -TRINE_ECAS_FAILED) {
        printf("{\"ok\":false,\"op\":\"cas\",");
        cli_json_bytes(stdout, "key", key, strlen(key));
        printf(",\"error\":\"CAS_FAILED\",\"code\":%d,\"expected_version\":%" PRIu64
               ",\"version\":%" PRIu64 ",",
               TRINE_ECAS_FAILED, expected, r.version);
        cli_json_meta(stdout, &r);
        printf("}\n");
        return CLI_EXIT_CAS;
    }
    if (rc != 0) return cli_fail(c, rc, NULL);
    return print_write(c, key, &r, true);
}

static int run_scan(struct cli *c, const struct args *a, const struct trine_opts *o)
{
    const char *prefix = a->pos[1];
    struct trine_kvs *kvs = NULL;
    struct trine_result r;
    int rc =
        trine_kv_scan(c->client, prefix, strlen(prefix), NULL, 0, (uint32_t)a->limit, o, &kvs, &r);
    if (rc != 0) return cli_fail(c, rc, NULL);
    if (c->json) {
        json_head("scan", NULL);
        printf(",\"count\":%zu,\"more\":%s,\"items\":[", kvs->n, kvs->more ? "true" : "false");
        for (size_t i = 0; i < kvs->n; i++) {
            const struct trine_kv *kv = &kvs->items[i];
            printf("%s{", i ? "," : "");
            cli_json_bytes(stdout, "key", kv->key, kv->key_len);
            printf(",");
            cli_json_bytes(stdout, "value", kv->value, kv->value_len);
            printf(",\"version\":%" PRIu64 ",\"create_revision\":%" PRIu64
                   ",\"mod_revision\":%" PRIu64 ",\"expire_at_ms\":%" PRIu64 "}",
                   kv->version, kv->create_revision, kv->mod_revision, kv->expire_at_ms);
        }
        printf("],");
        cli_json_meta(stdout, &r);
        printf("}\n");
    } else {
        for (size_t i = 0; i < kvs->n; i++) {
            cli_print_escaped(stdout, kvs->items[i].key, kvs->items[i].key_len);
            fputc('\t', stdout);
            cli_print_escaped(stdout, kvs->items[i].value, kvs->items[i].value_len);
            fputc('\n', stdout);
        }
        fprintf(stderr, "%zu key%s%s ", kvs->n, kvs->n == 1 ? "" : "s",
                kvs->more ? " (more match: raise --limit)" : "");
        cli_text_meta(stderr, &r, false);
        fprintf(stderr, "\n");
    }
    trine_kvs_free(kvs);
    return CLI_EXIT_OK;
}

static int run_cluster(struct cli *c, const struct args *a, const struct trine_opts *o)
{
    (void)a;
    c->cmd = "cluster status";
    struct trine_cluster *cl = NULL;
    int rc = trine_cluster_status(c->client, o, &cl);
    if (rc != 0) return cli_fail(c, rc, NULL);
    cli_print_cluster(c, cl);
    trine_cluster_free(cl);
    return CLI_EXIT_OK;
}
