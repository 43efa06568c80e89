/*
 * example.c - a complete libtrine program: open a handle, write a key, read
 * it back, close. docs/client.md explains every call.
 *
 * Build against an installed libtrine (make install PREFIX=$p):
 *   export PKG_CONFIG_PATH=$p/lib/pkgconfig
 *   cc example.c -o example $(pkg-config --cflags --libs trine)          # shared
 *   cc example.c -o example $(pkg-config --cflags trine) \
 *      $(pkg-config --static --libs trine | sed 's/-ltrine/-l:libtrine.a/') # static
 *
 * Run (with a local cluster: eval "$(scripts/cluster.sh env)"):
 *   ./example [ENDPOINTS]
 * ENDPOINTS defaults to $TRINE_ENDPOINTS, then 127.0.0.1:7001; the
 * certificates come from $TRINE_CACERT, $TRINE_CERT and $TRINE_KEY.
 *
 * Exit codes: 0 ok; 2 the handle could not be opened (bad endpoints or
 * certificate files); 3 the cluster could not be reached or timed out;
 * 1 any other error.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <trine.h>

/* Prints why a call failed and picks the exit code. */
static int report(trine_client_t *c, const char *what, int rc)
{
    /* trine_strerror: what the code means; trine_client_errmsg: this
     * thread's detail (which node, why, whether a write may have happened). */
    fprintf(stderr, "example: %s failed: %s: %s (%s)\n", what, trine_status_name(rc),
            trine_strerror(rc), trine_client_errmsg(c));
    return rc == -TRINE_EUNAVAILABLE || rc == -TRINE_ETIMEOUT ? 3 : 1;
}

int main(int argc, char **argv)
{
    const char *endpoints = argc > 1 ? argv[1] : getenv("TRINE_ENDPOINTS");
    if (endpoints == NULL) endpoints = "127.0.0.1:7001";
    struct trine_tls tls = {
        .ca_file = getenv("TRINE_CACERT"),
        .cert_file = getenv("TRINE_CERT"),
        .key_file = getenv("TRINE_KEY"),
    };

    /* Opening succeeds even when no node is up yet: the partition map is
     * then fetched by the first call. It fails only on bad arguments. */
    char errbuf[256];
    trine_client_t *c = NULL;
    int rc = trine_client_open(endpoints, &tls, &c, errbuf, sizeof(errbuf));
    if (rc != 0) {
        fprintf(stderr, "example: cannot open a client for %s: %s\n", endpoints, errbuf);
        return 2;
    }

    /* Strong write: acknowledged once a majority of the key's replicas
     * fsynced it. The call retries by itself for up to timeout_ms. */
    struct trine_opts opts = {.consistency = TRINE_CONSISTENCY_STRONG, .timeout_ms = 2000};
    struct trine_result res;
    const char *key = "example/greeting", *value = "hello, trine";
    rc = trine_kv_put(c, key, strlen(key), value, strlen(value), &opts, &res);
    if (rc != 0) {
        int code = report(c, "put", rc);
        trine_client_close(c);
        return code;
    }
    printf("put %s: revision %" PRIu64 ", version %" PRIu64 ", node %" PRIu64 ", %u acks\n", key,
           res.revision, res.version, res.served_by, res.acks);

    /* Read it back. The value is ours to free, with trine_free. Passing the
     * write's revision as min_revision gives read-your-writes on any replica. */
    opts.min_revision = res.revision;
    void *got = NULL;
    size_t got_len = 0;
    rc = trine_kv_get(c, key, strlen(key), &opts, &got, &got_len, &res);
    if (rc == -TRINE_ENOT_FOUND) {
        fprintf(stderr, "example: %s vanished (deleted by someone else?)\n", key);
        trine_client_close(c);
        return 1;
    }
    if (rc != 0) {
        int code = report(c, "get", rc);
        trine_client_close(c);
        return code;
    }
    printf("get %s: \"%.*s\" (version %" PRIu64 ", served by node %" PRIu64 ")\n", key,
           (int)got_len, (const char *)got, res.version, res.served_by);
    trine_free(got);

    trine_client_close(c);
    return 0;
}
