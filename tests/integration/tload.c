/*
 * tload.c - load driver of the integration tests (kill_primary.sh): COUNT
 * strong puts of distinct keys with known values, from THREADS threads
 * sharing ONE libtrine handle, spread evenly over DURATION_MS so the load
 * spans the faults the calling script injects.
 *
 *   tload ENDPOINTS CERTDIR COUNT THREADS DURATION_MS PREFIX ACKED_FILE [TIMEOUT_MS]
 *
 * Key i is PREFIX<i> with value "v<i>-<nonce>" (nonce: this run's pid and
 * start time, so a stale value from another run never matches). Thread t
 * writes keys t, t+THREADS, ...; key i is not sent before start + i *
 * DURATION_MS / COUNT. Every acknowledged put is appended to ACKED_FILE as
 * "key<TAB>value" (the caller then checks each is readable everywhere); a
 * failed put is reported on stderr with its status and detail. Prints one
 * summary line: acked, failed, worst latency. Exit 0 if the run completed
 * (whatever the puts' outcomes), 2 on usage or setup errors.
 *
 * Built by the script against the just-built static libtrine (only the
 * public header trine.h is used).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "trine.h"

struct load {
    trine_client_t *c;
    const char *prefix;
    unsigned count, threads, duration_ms, timeout_ms;
    uint64_t start_ms, nonce;
    FILE *acked;
    pthread_mutex_t mu; /* guards acked, the counters and stderr lines */
    unsigned n_acked, n_failed;
    uint64_t worst_ms;
};

struct worker {
    struct load *l;
    unsigned id;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct load *l = w->l;
    struct trine_opts o = {.consistency = TRINE_CONSISTENCY_STRONG, .timeout_ms = l->timeout_ms};
    for (unsigned i = w->id; i < l->count; i += l->threads) {
        uint64_t due = l->start_ms + (uint64_t)i * l->duration_ms / l->count;
        uint64_t t = now_ms();
        if (due > t) usleep((useconds_t)((due - t) * 1000u));
        char key[128], val[128];
        snprintf(key, sizeof(key), "%s%u", l->prefix, i);
        snprintf(val, sizeof(val), "v%u-%" PRIx64, i, l->nonce);
        struct trine_result r;
        uint64_t t0 = now_ms();
        int rc = trine_kv_put(l->c, key, strlen(key), val, strlen(val), &o, &r);
        uint64_t took = now_ms() - t0;
        pthread_mutex_lock(&l->mu);
        if (took > l->worst_ms) l->worst_ms = took;
        if (rc == 0) {
            l->n_acked++;
            fprintf(l->acked, "%s\t%s\n", key, val);
        } else {
            l->n_failed++;
            fprintf(stderr, "tload: put %s failed after %" PRIu64 " ms: %s (%s)\n", key, took,
                    trine_status_name(rc), trine_client_errmsg(l->c));
        }
        pthread_mutex_unlock(&l->mu);
    }
    return NULL;
}

static int parse_uint(const char *s, unsigned *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s == 0 || *end || v == 0 || v > 10000000ul) return -1;
    *out = (unsigned)v;
    return 0;
}

int main(int argc, char **argv)
{
    struct load l;
    memset(&l, 0, sizeof(l));
    l.timeout_ms = 8000;
    if (argc < 8 || argc > 9 || parse_uint(argv[3], &l.count) || parse_uint(argv[4], &l.threads) ||
        l.threads > 64 || parse_uint(argv[5], &l.duration_ms) ||
        (argc == 9 && parse_uint(argv[8], &l.timeout_ms))) {
        fprintf(stderr, "usage: tload ENDPOINTS CERTDIR COUNT THREADS(<=64) DURATION_MS PREFIX "
                        "ACKED_FILE [TIMEOUT_MS]\n");
        return 2;
    }
    char ca[512], cert[512], key[512], errbuf[256];
    snprintf(ca, sizeof(ca), "%s/ca.pem", argv[2]);
    snprintf(cert, sizeof(cert), "%s/client.pem", argv[2]);
    snprintf(key, sizeof(key), "%s/client.key", argv[2]);
    struct trine_tls tls = {ca, cert, key};
    if (trine_client_open(argv[1], &tls, &l.c, errbuf, sizeof(errbuf)) != 0) {
        fprintf(stderr, "tload: open %s: %s\n", argv[1], errbuf);
        return 2;
    }
    l.prefix = argv[6];
    if (!(l.acked = fopen(argv[7], "w"))) {
        perror(argv[7]);
        trine_client_close(l.c);
        return 2;
    }
    setvbuf(l.acked, NULL, _IOLBF, 0);
    pthread_mutex_init(&l.mu, NULL);
    l.start_ms = now_ms();
    l.nonce = ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL);

    pthread_t th[64];
    struct worker ws[64];
    unsigned started = 0;
    for (unsigned t = 0; t < l.threads; t++) {
        ws[t] = (struct worker){&l, t};
        if (pthread_create(&th[t], NULL, worker_main, &ws[t]) != 0) break;
        started++;
    }
    for (unsigned t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    printf("acked %u failed %u worst_latency_ms %" PRIu64 " elapsed_ms %" PRIu64 "\n", l.n_acked,
           l.n_failed, l.worst_ms, now_ms() - l.start_ms);
    fclose(l.acked);
    pthread_mutex_destroy(&l.mu);
    trine_client_close(l.c);
    return started == l.threads ? 0 : 2;
}
