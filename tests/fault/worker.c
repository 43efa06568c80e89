/*
 * worker.c - the client workload of the fault harness (tests/fault): many
 * logical clients, one thread and one libtrine handle each, that issue
 * operations and record what they saw as JSON lines.
 *
 *   worker --endpoints E --ca F --cert F --key F --out DIR --mode MODE
 *          [--clients N] [--client-base B] [--group G] [--keys K] [--seed S]
 *          [--seconds D] [--ops-max M] [--timeout-ms T] [--stop-file F]
 *
 * Modes:
 *   register  get/put/cas/delete on keys "r/<group>/<k>", strong. Clients are
 *             grouped G at a time (G <= 8); a group shares its K keys, so at
 *             most G clients ever touch a key. Values are unique ("c<client>-<n>").
 *   set       adds unique elements to keys "s/<group>/<k>": strong get, then
 *             cas(version, old + " " + element), up to 8 tries on CAS_FAILED.
 *   fast      puts at consistency fast, each to a unique key "f/<client>/<n>"
 *             whose value is the key: an acknowledged key missing after the
 *             faults heal was rolled back (and must be in a rollbacks.jsonl).
 *   final     reads every set key and scans the "f/" prefix, strong, retrying
 *             up to --seconds; writes final.jsonl.
 *
 * Output: DIR/hist-<client>.jsonl, one object per operation:
 *   {"c":client,"op":"get|put|cas|del|add","key":K,"v":V,"ev":expected_version,
 *    "call":ns,"ret":ns,"st":"ok|fail|unknown","out":V|null,"ver":N,"err":NAME,
 *    "rev":N,"srv":node}
 * call/ret come from CLOCK_MONOTONIC (one clock for every process on the
 * machine, network namespaces included). st: ok = the outcome is known and
 * reported (NOT_FOUND and CAS_FAILED are ok outcomes); fail = certainly had no
 * effect (any failed read; a write refused as malformed); unknown = a write
 * that may or may not have happened (TIMEOUT, UNAVAILABLE, connection loss...).
 *
 * Bounds: each client stops at --seconds, after --ops-max / clients ops, or
 * (checked every 16 ops) once --stop-file exists; an operation in flight is
 * always finished and recorded, so no history ends with a call unaccounted for.
 * Exit: 0 after writing every history; 2 on bad arguments or I/O errors.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "trine.h"

#define CLIENTS_MAX   64
#define GROUP_MAX     8
#define SET_VALUE_MAX 60000u /* a set key stops growing here (elements are ~10 bytes) */
#define CAS_TRIES     8

struct cfg {
    const char *endpoints, *out_dir, *mode;
    const char *stop_file; /* clients stop starting operations once it exists */
    struct trine_tls tls;
    unsigned clients, client_base, group, keys;
    uint64_t seed, ops_max;
    double seconds;
    uint32_t timeout_ms;
};

struct client {
    const struct cfg *cfg;
    unsigned id;  /* global client number (client_base + index) */
    unsigned grp; /* key group */
    uint64_t rng;
    FILE *out;
    trine_client_t *h;
    uint64_t n;      /* operations issued */
    uint64_t *known; /* register: last version seen per key of the group */
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void json_str(FILE *f, const char *p, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

/* One history record. value/out may be NULL (absent). */
struct rec {
    const char *op, *key, *v;
    uint64_t ev, call, ret, ver, rev, srv;
    const char *st, *err;
    const char *out;
    size_t out_len;
    bool has_ev;
};

static void rec_write(struct client *c, const struct rec *r)
{
    FILE *f = c->out;
    fprintf(f, "{\"c\":%u,\"op\":\"%s\",\"key\":", c->id, r->op);
    json_str(f, r->key, strlen(r->key));
    if (r->v) {
        fputs(",\"v\":", f);
        json_str(f, r->v, strlen(r->v));
    }
    if (r->has_ev) fprintf(f, ",\"ev\":%" PRIu64, r->ev);
    fprintf(f, ",\"call\":%" PRIu64 ",\"ret\":%" PRIu64 ",\"st\":\"%s\"", r->call, r->ret, r->st);
    if (r->out) {
        fputs(",\"out\":", f);
        json_str(f, r->out, r->out_len);
    }
    fprintf(f, ",\"ver\":%" PRIu64 ",\"rev\":%" PRIu64 ",\"srv\":%" PRIu64, r->ver, r->rev, r->srv);
    if (r->err) fprintf(f, ",\"err\":\"%s\"", r->err);
    fputs("}\n", f);
}

/* A write's status from its return code: only a malformed request certainly
 * did nothing; every other failure may have been applied. */
static const char *write_status(int rc)
{
    /* NOT_FOUND: a delete of an absent key (answered, so applied as a no-op). */
    if (rc == 0 || rc == -TRINE_ECAS_FAILED || rc == -TRINE_ENOT_FOUND) return "ok";
    if (rc == -TRINE_EBAD_REQUEST || rc == -TRINE_ETOO_LARGE || rc == -TRINE_EUNSUPPORTED ||
        rc == -TRINE_EINVALID)
        return "fail";
    return "unknown";
}

static struct trine_opts opts_of(const struct client *c, enum trine_consistency lvl)
{
    struct trine_opts o = {.consistency = lvl, .timeout_ms = c->cfg->timeout_ms};
    return o;
}

static void op_register(struct client *c)
{
    const struct cfg *cfg = c->cfg;
    unsigned k = (unsigned)(rnd(&c->rng) % cfg->keys);
    char key[64], val[64];
    snprintf(key, sizeof(key), "r/%u/%u", c->grp, k);
    snprintf(val, sizeof(val), "c%u-%" PRIu64, c->id, c->n);
    struct trine_opts o = opts_of(c, TRINE_CONSISTENCY_STRONG);
    struct trine_result res = {0};
    struct rec r = {.key = key};
    unsigned dice = (unsigned)(rnd(&c->rng) % 100);
    int rc;
    void *got = NULL;
    size_t got_len = 0;
    r.call = mono_ns();
    if (dice < 40) {
        r.op = "get";
        rc = trine_kv_get(c->h, key, strlen(key), &o, &got, &got_len, &res);
        r.ret = mono_ns();
        if (rc == 0) {
            r.st = "ok";
            r.out = got;
            r.out_len = got_len;
            c->known[k] = res.version;
        } else if (rc == -TRINE_ENOT_FOUND) {
            r.st = "ok";
            c->known[k] = 0;
        } else {
            r.st = "fail";
        }
    } else if (dice < 65) {
        r.op = "put";
        r.v = val;
        rc = trine_kv_put(c->h, key, strlen(key), val, strlen(val), &o, &res);
        r.ret = mono_ns();
        r.st = write_status(rc);
        if (rc == 0) c->known[k] = res.version;
    } else if (dice < 90) {
        r.op = "cas";
        r.v = val;
        r.has_ev = true;
        /* Mostly the version last seen (likely to succeed), sometimes a guess. */
        r.ev = rnd(&c->rng) % 4 ? c->known[k] : rnd(&c->rng) % 3;
        rc = trine_kv_cas(c->h, key, strlen(key), r.ev, val, strlen(val), &o, &res);
        r.ret = mono_ns();
        r.st = write_status(rc);
        if (rc == 0 || rc == -TRINE_ECAS_FAILED) c->known[k] = res.version;
    } else {
        r.op = "del";
        rc = trine_kv_del(c->h, key, strlen(key), &o, &res);
        r.ret = mono_ns();
        r.st = write_status(rc);
        if (rc == 0) c->known[k] = 0;
    }
    r.ver = res.version;
    r.rev = res.revision;
    r.srv = res.served_by;
    if (rc != 0) r.err = trine_status_name(rc);
    rec_write(c, &r);
    trine_free(got);
}

/* Adds element "<client>.<n>" to a set key: strong read, then cas on its version. */
static void op_set(struct client *c)
{
    const struct cfg *cfg = c->cfg;
    unsigned k = (unsigned)(rnd(&c->rng) % cfg->keys);
    char key[64], el[48];
    snprintf(key, sizeof(key), "s/%u/%u", c->grp, k);
    snprintf(el, sizeof(el), "%u.%" PRIu64, c->id, c->n);
    struct trine_opts o = opts_of(c, TRINE_CONSISTENCY_STRONG);
    struct rec r = {.op = "add", .key = key, .v = el, .st = "fail"};
    r.call = mono_ns();
    char *nv = NULL;
    int rc = 0;
    for (int t = 0; t < CAS_TRIES; t++) {
        void *cur = NULL;
        size_t cur_len = 0;
        struct trine_result res = {0};
        rc = trine_kv_get(c->h, key, strlen(key), &o, &cur, &cur_len, &res);
        if (rc != 0 && rc != -TRINE_ENOT_FOUND) break; /* nothing written: fail */
        if (cur_len > SET_VALUE_MAX) {
            trine_free(cur);
            rc = -TRINE_ETOO_LARGE;
            break;
        }
        uint64_t ver = rc == 0 ? res.version : 0;
        size_t nl = cur_len + 1 + strlen(el);
        nv = realloc(nv, nl + 1);
        if (nv == NULL) abort();
        snprintf(nv, nl + 1, "%.*s%s%s", (int)cur_len, cur ? (char *)cur : "", cur_len ? " " : "",
                 el);
        trine_free(cur);
        rc = trine_kv_cas(c->h, key, strlen(key), ver, nv, strlen(nv), &o, &res);
        if (rc == -TRINE_ECAS_FAILED) continue;
        r.st = rc == 0 ? "ok" : write_status(rc);
        r.rev = res.revision;
        r.srv = res.served_by;
        break;
    }
    r.ret = mono_ns();
    if (rc != 0) r.err = trine_status_name(rc);
    free(nv);
    rec_write(c, &r);
}

static void op_fast(struct client *c)
{
    char key[64];
    snprintf(key, sizeof(key), "f/%u/%" PRIu64, c->id, c->n);
    struct trine_opts o = opts_of(c, TRINE_CONSISTENCY_FAST);
    struct trine_result res = {0};
    struct rec r = {.op = "put", .key = key, .v = key};
    r.call = mono_ns();
    int rc = trine_kv_put(c->h, key, strlen(key), key, strlen(key), &o, &res);
    r.ret = mono_ns();
    r.st = write_status(rc);
    r.rev = res.revision;
    r.srv = res.served_by;
    if (rc != 0) r.err = trine_status_name(rc);
    rec_write(c, &r);
}

/* Final reads, after the faults healed: every set key, then the fast keys. */
static int run_final(struct client *c)
{
    const struct cfg *cfg = c->cfg;
    uint64_t deadline = mono_ns() + (uint64_t)(cfg->seconds * 1e9);
    struct trine_opts o = opts_of(c, TRINE_CONSISTENCY_STRONG);
    unsigned groups = (cfg->clients + cfg->group - 1) / cfg->group;
    int bad = 0;
    for (unsigned g = 0; g < groups; g++) {
        for (unsigned k = 0; k < cfg->keys; k++) {
            char key[64];
            snprintf(key, sizeof(key), "s/%u/%u", g, k);
            int rc;
            void *v = NULL;
            size_t vl = 0;
            struct trine_result res = {0};
            do {
                rc = trine_kv_get(c->h, key, strlen(key), &o, &v, &vl, &res);
            } while (rc != 0 && rc != -TRINE_ENOT_FOUND && mono_ns() < deadline);
            struct rec r = {.op = "final",
                            .key = key,
                            .st = rc == 0 || rc == -TRINE_ENOT_FOUND ? "ok" : "fail"};
            r.out = rc == 0 ? v : NULL;
            r.out_len = vl;
            r.ver = res.version;
            r.call = r.ret = mono_ns();
            if (rc != 0) r.err = trine_status_name(rc);
            if (rc != 0 && rc != -TRINE_ENOT_FOUND) bad = 1;
            rec_write(c, &r);
            trine_free(v);
        }
    }
    /* Every fast key, page by page. */
    char after[128] = "";
    for (;;) {
        struct trine_kvs *kvs = NULL;
        int rc;
        do {
            rc = trine_kv_scan(c->h, "f/", 2, after, strlen(after), 1000, &o, &kvs, NULL);
        } while (rc != 0 && mono_ns() < deadline);
        if (rc != 0) {
            struct rec r = {.op = "fscan", .key = "f/", .st = "fail", .err = trine_status_name(rc)};
            r.call = r.ret = mono_ns();
            rec_write(c, &r);
            return 1;
        }
        for (size_t i = 0; i < kvs->n; i++) {
            struct rec r = {.op = "fkey", .key = kvs->items[i].key, .st = "ok"};
            r.out = kvs->items[i].value;
            r.out_len = kvs->items[i].value_len;
            r.call = r.ret = mono_ns();
            rec_write(c, &r);
        }
        size_t n = kvs->n;
        int more = kvs->more;
        if (n > 0) snprintf(after, sizeof(after), "%s", (char *)kvs->items[n - 1].key);
        trine_kvs_free(kvs);
        if (!more || n == 0) break;
    }
    return bad;
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    const struct cfg *cfg = c->cfg;
    uint64_t deadline = mono_ns() + (uint64_t)(cfg->seconds * 1e9);
    uint64_t my_max = cfg->ops_max / cfg->clients + 1;
    void (*op)(struct client *) = strcmp(cfg->mode, "register") == 0 ? op_register
                                  : strcmp(cfg->mode, "set") == 0    ? op_set
                                                                     : op_fast;
    while (c->n < my_max && mono_ns() < deadline) {
        if (cfg->stop_file && (c->n & 15) == 0 && access(cfg->stop_file, F_OK) == 0) break;
        op(c);
        c->n++;
    }
    return NULL;
}

static int usage(void)
{
    fprintf(stderr, "usage: worker --endpoints E --ca F --cert F --key F --out DIR "
                    "--mode register|set|fast|final [--clients N] [--client-base B] [--group G] "
                    "[--keys K] [--seed S] [--seconds D] [--ops-max M] [--timeout-ms T] "
                    "[--stop-file F]\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct cfg cfg = {.clients = 8,
                      .group = 8,
                      .keys = 4,
                      .seed = 1,
                      .ops_max = 1000000,
                      .seconds = 30,
                      .timeout_ms = 2000};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--endpoints"))
            cfg.endpoints = v;
        else if (!strcmp(a, "--ca"))
            cfg.tls.ca_file = v;
        else if (!strcmp(a, "--cert"))
            cfg.tls.cert_file = v;
        else if (!strcmp(a, "--key"))
            cfg.tls.key_file = v;
        else if (!strcmp(a, "--out"))
            cfg.out_dir = v;
        else if (!strcmp(a, "--mode"))
            cfg.mode = v;
        else if (!strcmp(a, "--clients"))
            cfg.clients = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--client-base"))
            cfg.client_base = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--group"))
            cfg.group = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--keys"))
            cfg.keys = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--seed"))
            cfg.seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--seconds"))
            cfg.seconds = strtod(v, NULL);
        else if (!strcmp(a, "--ops-max"))
            cfg.ops_max = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--stop-file"))
            cfg.stop_file = v;
        else if (!strcmp(a, "--timeout-ms"))
            cfg.timeout_ms = (uint32_t)strtoul(v, NULL, 10);
        else
            return usage();
    }
    if (!cfg.endpoints || !cfg.out_dir || !cfg.mode || !cfg.tls.ca_file || cfg.clients == 0 ||
        cfg.clients > CLIENTS_MAX || cfg.group == 0 || cfg.group > GROUP_MAX || cfg.keys == 0)
        return usage();
    if (strcmp(cfg.mode, "register") && strcmp(cfg.mode, "set") && strcmp(cfg.mode, "fast") &&
        strcmp(cfg.mode, "final"))
        return usage();
    bool final = strcmp(cfg.mode, "final") == 0;
    unsigned n = final ? 1 : cfg.clients;
    struct client cl[CLIENTS_MAX];
    memset(cl, 0, sizeof(cl));
    int rc = 0;
    for (unsigned i = 0; i < n; i++) {
        struct client *c = &cl[i];
        c->cfg = &cfg;
        c->id = cfg.client_base + i;
        c->grp = i / cfg.group;
        c->rng = cfg.seed * 1000003u + c->id;
        c->known = calloc(cfg.keys, sizeof(uint64_t));
        char path[4096], err[256];
        snprintf(path, sizeof(path), final ? "%s/final.jsonl" : "%s/hist-%u.jsonl", cfg.out_dir,
                 c->id);
        c->out = fopen(path, "w");
        if (c->out == NULL || c->known == NULL) {
            fprintf(stderr, "worker: %s: %s\n", path, strerror(errno));
            return 2;
        }
        if (trine_client_open(cfg.endpoints, &cfg.tls, &c->h, err, sizeof(err)) != 0) {
            fprintf(stderr, "worker: open: %s\n", err);
            return 2;
        }
    }
    if (final) {
        rc = run_final(&cl[0]);
    } else {
        pthread_t th[CLIENTS_MAX];
        for (unsigned i = 0; i < n; i++)
            pthread_create(&th[i], NULL, client_main, &cl[i]);
        for (unsigned i = 0; i < n; i++)
            pthread_join(th[i], NULL);
    }
    uint64_t total = 0;
    for (unsigned i = 0; i < n; i++) {
        total += cl[i].n;
        if (fclose(cl[i].out) != 0) rc = 2;
        trine_client_close(cl[i].h);
        free(cl[i].known);
    }
    fprintf(stderr, "worker %s: %u clients, %" PRIu64 " ops\n", cfg.mode, n, total);
    return rc;
}
