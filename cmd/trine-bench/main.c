/*
 * trine-bench - storage benchmarks (cluster benchmarks come with the client).
 *
 *   trine-bench storage --workload wal|apply|snapshot|recovery|fsync|leveldb
 *       [--appenders N] [--record-size BYTES] [--batch N] [--seconds S]
 *       [--dir DIR] [--no-fsync] [--json]
 */
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "bench/bench.h"
#include "bench/cluster.h"
#include "client/trine.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: trine-bench storage --workload W [options]\n"
               "  --workload W       wal | apply | snapshot | recovery | fsync | leveldb\n"
               "  --appenders N      concurrent appender threads (wal; default 1)\n"
               "  --record-size B    record / value size in bytes (default 256)\n"
               "  --batch N          records per fsync (fsync, default = appenders),\n"
               "                     puts per batch (leveldb, apply; default 64)\n"
               "  --seconds S        measured time (default 5)\n"
               "  --dir DIR          scratch directory on the disk to measure (default $TMPDIR)\n"
               "  --no-fsync         skip fdatasync (for comparison only)\n"
               "  --json             one JSON object instead of a table\n");
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int parse_uint(const char *name, const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || end == s || v > max) {
        fprintf(stderr, "trine-bench: %s: '%s' is not a number in [0, %lu]\n", name, s, max);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (*end || end == s || v <= 0 || v > 86400) {
        fprintf(stderr, "trine-bench: --seconds: '%s' is not in (0, 86400]\n", s);
        return -1;
    }
    *out = v;
    return 0;
}

static int storage_main(int argc, char **argv)
{
    struct bench_opts o;
    log_set_level(LOG_LEVEL_WARN); /* keep the table clean */
    bench_opts_default(&o);
    const char *parent = NULL;
    static const struct option longopts[] = {{"workload", required_argument, 0, 'w'},
                                             {"appenders", required_argument, 0, 'a'},
                                             {"record-size", required_argument, 0, 'r'},
                                             {"batch", required_argument, 0, 'b'},
                                             {"seconds", required_argument, 0, 's'},
                                             {"dir", required_argument, 0, 'd'},
                                             {"json", no_argument, 0, 'j'},
                                             {"no-fsync", no_argument, 0, 'F'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    int c;
    unsigned long v;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'w':
            o.workload = optarg;
            break;
        case 'a':
            if (parse_uint("--appenders", optarg, 4096, &v) || v == 0) return 2;
            o.appenders = (int)v;
            break;
        case 'r':
            if (parse_uint("--record-size", optarg, 16u << 20, &v)) return 2;
            o.record_bytes = (uint32_t)v;
            break;
        case 'b':
            if (parse_uint("--batch", optarg, 1u << 20, &v)) return 2;
            o.batch = (uint32_t)v;
            break;
        case 's':
            if (parse_seconds(optarg, &o.seconds)) return 2;
            break;
        case 'd':
            parent = optarg;
            break;
        case 'j':
            o.json = true;
            break;
        case 'F':
            o.fsync = false;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }

    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/trine-bench-XXXXXX",
             parent        ? parent
             : tmp && *tmp ? tmp
                           : "/tmp");
    if (mkdtemp(dir) == NULL) {
        fprintf(stderr, "trine-bench: cannot create a scratch directory in %s: %s\n",
                parent ? parent : "$TMPDIR", strerror(errno));
        return 1;
    }
    o.dir = dir;

    struct bench_result r;
    struct trine_err err = {0};
    int rc = bench_storage_run(&o, &r, &err);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    if (rc) {
        fprintf(stderr, "trine-bench: %s: %s\n", status_name(rc), err.msg);
        return 1;
    }
    bench_report(&o, &r);
    return 0;
}

static void cluster_usage(FILE *f)
{
    fprintf(f,
            "usage: trine-bench cluster --workload W [options]\n"
            "  --endpoints H:P,...   cluster (default $TRINE_ENDPOINTS)\n"
            "  --cacert F --cert F --key F   TLS (default $TRINE_CACERT, $TRINE_CERT, $TRINE_KEY)\n"
            "  --workload W          write | read | mixed:R/W | ycsb-a | ycsb-b | ycsb-c\n"
            "  --consistency C       fast | strong | all (default strong)\n"
            "  --clients N           closed-loop clients, one call outstanding each (default 16)\n"
            "  --pipeline N          calls outstanding per client (default 1)\n"
            "  --threads N           async engine threads (default 1)\n"
            "  --conns N             connections per node per engine thread (default 2)\n"
            "  --sync                blocking API instead: a handle per client, a thread per call\n"
            "  --keys N              key space (default 100000; read workloads preload it)\n"
            "  --key-dist D          uniform | zipf (ycsb-* use zipf)\n"
            "  --value-size B        bytes per value (default 256)\n"
            "  --seconds S           measured time (default 10)\n"
            "  --seed N              key/op choice seed (default 1)\n"
            "  --json                one JSON object instead of a table\n");
}

static const char *env_or(const char *v, const char *name)
{
    return v ? v : getenv(name);
}

static int cluster_main(int argc, char **argv)
{
    struct bench_cluster_opts o;
    bench_cluster_opts_default(&o);
    log_set_level(LOG_LEVEL_WARN);
    const char *eps = NULL, *ca = NULL, *cert = NULL, *key = NULL;
    static const struct option longopts[] = {{"endpoints", required_argument, 0, 'e'},
                                             {"cacert", required_argument, 0, 'A'},
                                             {"cert", required_argument, 0, 'C'},
                                             {"key", required_argument, 0, 'K'},
                                             {"workload", required_argument, 0, 'w'},
                                             {"consistency", required_argument, 0, 'c'},
                                             {"clients", required_argument, 0, 'n'},
                                             {"pipeline", required_argument, 0, 'p'},
                                             {"threads", required_argument, 0, 'T'},
                                             {"conns", required_argument, 0, 'N'},
                                             {"sync", no_argument, 0, 'Y'},
                                             {"keys", required_argument, 0, 'k'},
                                             {"key-dist", required_argument, 0, 'd'},
                                             {"value-size", required_argument, 0, 'v'},
                                             {"seconds", required_argument, 0, 's'},
                                             {"seed", required_argument, 0, 'S'},
                                             {"json", no_argument, 0, 'j'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    int c;
    unsigned long v;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'e':
            eps = optarg;
            break;
        case 'A':
            ca = optarg;
            break;
        case 'C':
            cert = optarg;
            break;
        case 'K':
            key = optarg;
            break;
        case 'w':
            o.workload = optarg;
            break;
        case 'c': {
            enum trine_consistency lv;
            if (trine_consistency_parse(optarg, &lv) != 0) {
                fprintf(stderr, "trine-bench: --consistency: fast | strong | all\n");
                return 2;
            }
            o.consistency = (int)lv;
            break;
        }
        case 'n':
            if (parse_uint("--clients", optarg, 4096, &v) || v == 0) return 2;
            o.clients = (uint32_t)v;
            break;
        case 'p':
            if (parse_uint("--pipeline", optarg, 256, &v) || v == 0) return 2;
            o.pipeline = (uint32_t)v;
            break;
        case 'T':
            if (parse_uint("--threads", optarg, 64, &v) || v == 0) return 2;
            o.threads = (uint32_t)v;
            break;
        case 'N':
            if (parse_uint("--conns", optarg, 64, &v) || v == 0) return 2;
            o.conns = (uint32_t)v;
            break;
        case 'Y':
            o.sync = true;
            break;
        case 'k':
            if (parse_uint("--keys", optarg, 100000000, &v) || v == 0) return 2;
            o.keys = v;
            break;
        case 'd':
            if (strcmp(optarg, "zipf") != 0 && strcmp(optarg, "uniform") != 0) {
                fprintf(stderr, "trine-bench: --key-dist: uniform | zipf\n");
                return 2;
            }
            o.zipf = strcmp(optarg, "zipf") == 0;
            break;
        case 'v':
            if (parse_uint("--value-size", optarg, 1u << 20, &v)) return 2;
            o.value_bytes = (uint32_t)v;
            break;
        case 's':
            if (parse_seconds(optarg, &o.seconds)) return 2;
            break;
        case 'S':
            if (parse_uint("--seed", optarg, ~0ul, &v)) return 2;
            o.seed = v;
            break;
        case 'j':
            o.json = true;
            break;
        case 'h':
            cluster_usage(stdout);
            return 0;
        default:
            cluster_usage(stderr);
            return 2;
        }
    }
    o.endpoints = env_or(eps, "TRINE_ENDPOINTS");
    o.ca_file = env_or(ca, "TRINE_CACERT");
    o.cert_file = env_or(cert, "TRINE_CERT");
    o.key_file = env_or(key, "TRINE_KEY");
    if (!o.endpoints || !o.ca_file || !o.cert_file || !o.key_file) {
        fprintf(stderr, "trine-bench: give --endpoints and the TLS files (or TRINE_ENDPOINTS, "
                        "TRINE_CACERT, TRINE_CERT, TRINE_KEY)\n");
        return 2;
    }
    struct trine_err err = {0};
    int rc = bench_cluster_run(&o, &err);
    if (rc) {
        fprintf(stderr, "trine-bench: %s: %s\n", status_name(rc), err.msg);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "storage") == 0) return storage_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "cluster") == 0) return cluster_main(argc - 1, argv + 1);
    fprintf(
        argc >= 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr,
        "usage: trine-bench storage|cluster --workload W [options]   (trine-bench storage --help,\n"
        "       trine-bench cluster --help)\n");
    return argc >= 2 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
}
