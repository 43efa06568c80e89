/*
 * config.c - the option table, flag and file parsing, validation.
 */
#include "server/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum opt_kind {
    OPT_STR,
    OPT_U32,
    OPT_SIZE,
    OPT_ONOFF,
    OPT_FLAG,
    OPT_LEVEL,
    OPT_MEMBERS,
    OPT_CONFIG
};

struct opt {
    const char *name;
    enum opt_kind kind;
    size_t offset;
    const char *def; /* NULL: no default */
    const char *help;
};

#define OFF(f) offsetof(struct server_config, f)

static const struct opt opts[] = {
    {"config", OPT_CONFIG, 0, NULL, "read options from FILE (name = value lines)"},
    {"id", OPT_U32, OFF(id), NULL, "this node's id (required; a member of --initial-cluster)"},
    {"listen", OPT_STR, OFF(listen), "127.0.0.1:7001", "HOST:PORT for clients and peers (TLS)"},
    {"http", OPT_STR, OFF(http), NULL, "HOST:PORT for /metrics, /health, /status (off if unset)"},
    {"data-dir", OPT_STR, OFF(data_dir), NULL, "directory for the WAL and leveldb (required)"},
    {"initial-cluster", OPT_MEMBERS, OFF(initial_cluster), NULL,
     "static membership: 1=host:port,2=host:port,... (required)"},
    {"partitions", OPT_U32, OFF(partitions), "64", "partition count, fixed at cluster creation"},
    {"vnodes", OPT_U32, OFF(vnodes), "64", "ring tokens per member"},
    {"tls-cert", OPT_STR, OFF(tls_cert), NULL, "this node's certificate (CN=node-<id>)"},
    {"tls-key", OPT_STR, OFF(tls_key), NULL, "its private key"},
    {"tls-ca", OPT_STR, OFF(tls_ca), NULL, "CA that signs every node and client certificate"},
    {"max-frame", OPT_SIZE, OFF(max_frame_bytes), "16MiB", "largest frame accepted"},
    {"max-key", OPT_SIZE, OFF(max_key_bytes), "4KiB", "largest key accepted"},
    {"max-value", OPT_SIZE, OFF(max_value_bytes), "1MiB", "largest value accepted"},
    {"log-level", OPT_LEVEL, OFF(log_level), "info", "debug | info | warn | error"},
    {"fsync", OPT_ONOFF, OFF(fsync), "on", "on | off (off loses data on power loss: tests only)"},
    {"store-memtable", OPT_SIZE, OFF(store_memtable_bytes), "16MiB",
     "leveldb memtable (larger: fewer flushes and compactions, more memory)"},
    {"store-key-cache", OPT_U32, OFF(store_key_cache), "524288",
     "per-key metadata cached in memory, entries of ~120 bytes (misses read leveldb)"},
    {"store-snappy", OPT_ONOFF, OFF(store_snappy), "off",
     "snappy-compress stored blocks (on: less disk for compressible values, more CPU)"},
    {"repair", OPT_FLAG, OFF(repair), NULL,
     "cut the WAL at a corrupt record (reported) instead of refusing to start"},
};

static const struct opt *opt_find(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0) return &opts[i];
    return NULL;
}

static char *config_own(struct server_config *c, const char *s, size_t len)
{
    if (c->nowned == sizeof(c->owned) / sizeof(c->owned[0])) return NULL;
    char *p = strndup(s, len);
    if (p) c->owned[c->nowned++] = p;
    return p;
}

static int parse_u64(const char *v, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*v)) return -1;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end) return -1;
    *out = x;
    return 0;
}

/* "16MiB", "4KiB", "1GiB", "512" (bytes). */
static int parse_size(const char *v, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*v)) return -1;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno) return -1;
    static const struct {
        const char *suffix;
        unsigned shift;
    } units[] = {{"", 0}, {"B", 0}, {"KiB", 10}, {"MiB", 20}, {"GiB", 30}};
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].suffix) == 0) {
            if (x > (UINT64_MAX >> units[i].shift)) return -1;
            *out = (uint64_t)x << units[i].shift;
            return 0;
        }
    }
    return -1;
}

/* Splits an owned copy of "1=host:port,2=host:port" in place: each member's
 * addr points into it. */
static int parse_members(struct server_config *c, char *spec, struct trine_err *err)
{
    c->nmembers = 0;
    for (char *save = NULL, *item = strtok_r(spec, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        uint64_t id;
        if (eq) *eq = 0;
        if (!eq || parse_u64(item, &id) || id == 0 || id > UINT32_MAX || !strchr(eq + 1, ':'))
            return err_set(err, -TRINE_EINVALID,
                           "--initial-cluster: '%s%s%s' is not ID=HOST:PORT with ID >= 1", item,
                           eq ? "=" : "", eq ? eq + 1 : "");
        if (c->nmembers == CONFIG_MEMBERS_MAX)
            return err_set(err, -TRINE_EINVALID, "--initial-cluster: more than %d members",
                           CONFIG_MEMBERS_MAX);
        for (size_t i = 0; i < c->nmembers; i++)
            if (c->members[i].id == id)
                return err_set(err, -TRINE_EINVALID, "--initial-cluster: id %llu appears twice",
                               (unsigned long long)id);
        c->members[c->nmembers].id = (uint32_t)id;
        c->members[c->nmembers].addr = eq + 1;
        c->nmembers++;
    }
    return 0;
}

static int config_set(struct server_config *c, const struct opt *o, const char *v,
                      struct trine_err *err)
{
    void *field = (char *)c + o->offset;
    uint64_t x;
    switch (o->kind) {
    case OPT_CONFIG:
        return config_load_file(c, v, err);
    case OPT_STR: {
        char *s = config_own(c, v, strlen(v));
        if (!s) return err_set(err, -TRINE_ENOMEM, "config: out of memory");
        *(char **)field = s;
        return 0;
    }
    case OPT_MEMBERS: {
        char *shown = config_own(c, v, strlen(v)), *split = config_own(c, v, strlen(v));
        if (!shown || !split) return err_set(err, -TRINE_ENOMEM, "config: out of memory");
        *(char **)field = shown;
        return parse_members(c, split, err);
    }
    case OPT_U32:
        if (parse_u64(v, &x) || x > UINT32_MAX)
            return err_set(err, -TRINE_EINVALID, "--%s: '%s' is not a number", o->name, v);
        *(uint32_t *)field = (uint32_t)x;
        return 0;
    case OPT_SIZE:
        if (parse_size(v, &x))
            return err_set(err, -TRINE_EINVALID,
                           "--%s: '%s' is not a size (bytes, or with KiB/MiB/GiB)", o->name, v);
        *(uint64_t *)field = x;
        return 0;
    case OPT_FLAG:
    case OPT_ONOFF:
        if (strcmp(v, "on") != 0 && strcmp(v, "off") != 0)
            return err_set(err, -TRINE_EINVALID, "--%s: '%s' is not on|off", o->name, v);
        *(bool *)field = strcmp(v, "on") == 0;
        return 0;
    case OPT_LEVEL:
        if (log_parse_level(v, (enum log_level *)field))
            return err_set(err, -TRINE_EINVALID, "--%s: '%s' is not debug|info|warn|error", o->name,
                           v);
        return 0;
    }
    return err_set(err, -TRINE_EINVALID, "--%s: unhandled option kind", o->name);
}

void config_init(struct server_config *c)
{
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        if (opts[i].def == NULL) continue;
        int rc = config_set(c, &opts[i], opts[i].def, NULL);
        (void)rc; /* defaults are literals above; a failure is caught by the unit test */
    }
}

void config_free(struct server_config *c)
{
    for (size_t i = 0; i < c->nowned; i++)
        free(c->owned[i]);
    c->nowned = 0;
}

void config_usage(FILE *out)
{
    fprintf(out, "usage: trined --id N --data-dir DIR --initial-cluster 1=H:P,... "
                 "--tls-cert F --tls-key F --tls-ca F [options]\n\noptions:\n");
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        char left[64];
        snprintf(left, sizeof(left), "--%s %s", opts[i].name,
                 opts[i].kind == OPT_ONOFF  ? "on|off"
                 : opts[i].kind == OPT_FLAG ? ""
                                            : "VALUE");
        fprintf(out, "  %-28s %s%s%s%s\n", left, opts[i].help, opts[i].def ? " (default " : "",
                opts[i].def ? opts[i].def : "", opts[i].def ? ")" : "");
    }
}

int config_parse_args(struct server_config *c, int argc, char **argv, FILE *out,
                      struct trine_err *err)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            config_usage(out);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0)
            return err_set(err, -TRINE_EINVALID, "unexpected argument '%s' (flags start with --)",
                           a);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const struct opt *o = opt_find(name, len);
        if (!o)
            return err_set(err, -TRINE_EINVALID, "unknown flag --%.*s (see --help)", (int)len,
                           name);
        const char *v = eq ? eq + 1 : (o->kind == OPT_FLAG ? "on" : NULL);
        if (!v) {
            if (i + 1 >= argc) return err_set(err, -TRINE_EINVALID, "--%s needs a value", o->name);
            v = argv[++i];
        }
        int rc = config_set(c, o, v, err);
        if (rc) return rc;
    }
    return config_validate(c, err);
}

int config_load_file(struct server_config *c, const char *path, struct trine_err *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return err_set(err, status_from_errno(errno), "config file %s: %s", path, strerror(errno));
    char line[4096];
    int lineno = 0, rc = 0;
    while (!rc && fgets(line, sizeof(line), f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *s = line;
        while (isspace((unsigned char)*s))
            s++;
        char *e = s + strlen(s);
        while (e > s && isspace((unsigned char)e[-1]))
            *--e = 0;
        if (!*s) continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = err_set(err, -TRINE_EINVALID, "%s:%d: expected name = value", path, lineno);
            break;
        }
        char *ne = eq;
        while (ne > s && isspace((unsigned char)ne[-1]))
            ne--;
        char *v = eq + 1;
        while (isspace((unsigned char)*v))
            v++;
        size_t vl = strlen(v);
        if (vl >= 2 && (v[0] == '"' || v[0] == '\'') && v[vl - 1] == v[0]) {
            v[vl - 1] = 0;
            v++;
        }
        const struct opt *o = opt_find(s, (size_t)(ne - s));
        if (!o || o->kind == OPT_CONFIG) {
            rc = err_set(err, -TRINE_EINVALID, "%s:%d: unknown option '%.*s'", path, lineno,
                         (int)(ne - s), s);
            break;
        }
        rc = config_set(c, o, v, err);
        if (rc) {
            char inner[TRINE_ERR_MSG_MAX];
            snprintf(inner, sizeof(inner), "%s", err ? err->msg : "");
            err_set(err, rc, "%s:%d: %s", path, lineno, inner);
        }
    }
    fclose(f);
    return rc;
}

int config_validate(const struct server_config *c, struct trine_err *err)
{
    if (c->id == 0) return err_set(err, -TRINE_EINVALID, "--id is required (a number >= 1)");
    if (!c->data_dir) return err_set(err, -TRINE_EINVALID, "--data-dir is required");
    if (c->nmembers == 0) return err_set(err, -TRINE_EINVALID, "--initial-cluster is required");
    int found = 0;
    for (size_t i = 0; i < c->nmembers; i++)
        found |= c->members[i].id == c->id;
    if (!found)
        return err_set(err, -TRINE_EINVALID, "--id %u is not a member of --initial-cluster %s",
                       c->id, c->initial_cluster);
    if (!c->tls_cert || !c->tls_key || !c->tls_ca)
        return err_set(err, -TRINE_EINVALID,
                       "--tls-cert, --tls-key and --tls-ca are required (mutual TLS)");
    if (c->partitions == 0 || c->partitions > 65536)
        return err_set(err, -TRINE_EINVALID, "--partitions must be in [1, 65536]");
    if (c->vnodes == 0 || c->vnodes > 1024)
        return err_set(err, -TRINE_EINVALID, "--vnodes must be in [1, 1024]");
    if (c->max_key_bytes == 0 || c->max_value_bytes == 0)
        return err_set(err, -TRINE_EINVALID, "--max-key and --max-value must be > 0");
    if (c->store_key_cache < 1024 || c->store_key_cache > (1u << 28))
        return err_set(err, -TRINE_EINVALID, "--store-key-cache must be 1024..268435456");
    if (c->store_memtable_bytes < (1ull << 20) || c->store_memtable_bytes > (1ull << 30))
        return err_set(err, -TRINE_EINVALID, "--store-memtable must be 1MiB..1GiB");
    if (c->max_frame_bytes > (1ull << 31))
        return err_set(err, -TRINE_EINVALID, "--max-frame must be at most 2GiB");
    if (c->max_key_bytes + c->max_value_bytes + 4096 > c->max_frame_bytes)
        return err_set(err, -TRINE_EINVALID,
                       "--max-frame (%llu) must exceed --max-key + --max-value + 4KiB",
                       (unsigned long long)c->max_frame_bytes);
    return 0;
}
