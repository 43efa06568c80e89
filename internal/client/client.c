/*
 * client.c - opening and closing a handle, error reporting, and the small
 * public helpers (status names, consistency names, trine_free).
 *
 * The last-error message is thread-local and tagged with the handle it came
 * from: threads sharing a handle never see (or overwrite) each other's
 * messages, and no lock is needed to report one.
 */
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "client/client_int.h"

static _Thread_local struct {
    const struct trine_client *c;
    char msg[TRINE_ERR_MSG_MAX];
} client_last;

int client_fail(const struct trine_client *c, const struct trine_err *err)
{
    client_last.c = c;
    snprintf(client_last.msg, sizeof(client_last.msg), "%s", err->msg);
    return err->code;
}

void client_ok(const struct trine_client *c)
{
    if (client_last.c == c) client_last.msg[0] = '\0';
}

const char *trine_client_errmsg(const trine_client_t *c)
{
    return c != NULL && client_last.c == c ? client_last.msg : "";
}

uint64_t client_deadline_ns(const struct trine_opts *opts)
{
    uint32_t ms =
        opts != NULL && opts->timeout_ms != 0 ? opts->timeout_ms : TRINE_TIMEOUT_DEFAULT_MS;
    return clock_mono_ns() + (uint64_t)ms * 1000000u;
}

enum trine_consistency client_consistency(const struct trine_opts *opts)
{
    if (opts == NULL) return TRINE_CONSISTENCY_STRONG;
    switch (opts->consistency) {
    case TRINE_CONSISTENCY_FAST:
    case TRINE_CONSISTENCY_STRONG:
    case TRINE_CONSISTENCY_ALL:
        return opts->consistency;
    default:
        return TRINE_CONSISTENCY_STRONG;
    }
}

/* Splits "a:1, b:2" into seed endpoints. */
static int client_add_seeds(struct trine_client *c, const char *endpoints, struct trine_err *err)
{
    const char *p = endpoints;
    while (*p != '\0') {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == '\0') break;
        const char *end = p;
        while (*end != '\0' && *end != ',' && *end != ' ')
            end++;
        if (c->n_eps == CLIENT_SEEDS_MAX)
            return err_set(err, -TRINE_EINVALID, "more than %d endpoints", CLIENT_SEEDS_MAX);
        struct client_endpoint tmp;
        int rc = client_endpoint_parse(p, (size_t)(end - p), &tmp, err);
        if (rc != 0) return rc;
        struct client_endpoint *ep = client_endpoint_intern(c, tmp.addr, strlen(tmp.addr));
        if (ep == NULL) return err_set(err, -TRINE_ENOMEM, "out of memory");
        p = end;
    }
    if (c->n_eps == 0) return err_set(err, -TRINE_EINVALID, "no endpoint given (host:port,...)");
    c->n_seeds = c->n_eps;
    return 0;
}

static int client_init(struct trine_client *c, const char *endpoints, const struct trine_tls *tls,
                       struct trine_err *err)
{
    c->limits = codec_limits_default();
    int rc = client_add_seeds(c, endpoints, err);
    if (rc != 0) return rc;
    rc = client_tls_ctx_new(tls, &c->ssl_ctx, err);
    if (rc != 0) return rc;
    rc = client_bio_method_new(&c->bio_method, err);
    if (rc != 0) return rc;
    /* The client id must differ between every handle the cluster ever sees
     * (dedupe is per (client_id, seq)): 64 random bits, never 0 (= none). */
    while (c->client_id == 0) {
        if (RAND_bytes((unsigned char *)&c->client_id, sizeof(c->client_id)) != 1)
            return client_ssl_error(err, -TRINE_EINTERNAL, "RAND_bytes");
    }
    rng_seed(&c->rng, c->client_id ^ clock_mono_ns());
    return 0;
}

int trine_client_open(const char *endpoints, const struct trine_tls *tls, trine_client_t **out,
                      char *errbuf, size_t errlen)
{
    struct trine_err err = {0};
    if (errbuf != NULL && errlen > 0) errbuf[0] = '\0';
    if (out == NULL || endpoints == NULL) {
        err_set(&err, -TRINE_EINVALID, "trine_client_open: NULL endpoints or out");
        goto fail_early;
    }
    *out = NULL;
    struct trine_client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        err_set(&err, -TRINE_ENOMEM, "out of memory");
        goto fail_early;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&c->mu, NULL);
    if (client_init(c, endpoints, tls, &err) != 0) {
        trine_client_close(c);
        goto fail_early;
    }
    /* Best effort: with no node up yet the first call fetches the map. */
    client_route_refresh(c, clock_mono_ns() + (uint64_t)CLIENT_OPEN_MAP_MS * 1000000u, true);
    *out = c;
    return 0;
fail_early:
    if (errbuf != NULL && errlen > 0) snprintf(errbuf, errlen, "%s", err.msg);
    return err.code;
}

void trine_client_close(trine_client_t *c)
{
    if (c == NULL) return;
    client_pool_destroy(c);
    client_route_free(&c->route);
    SSL_CTX_free(c->ssl_ctx);
    BIO_meth_free(c->bio_method);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    if (client_last.c == c) client_last.c = NULL;
    free(c);
}

void trine_free(void *p)
{
    free(p);
}

const char *trine_strerror(int rc)
{
    return status_message(rc);
}

const char *trine_status_name(int rc)
{
    return status_name(rc);
}

static const char *const client_level_names[] = {
    [TRINE_CONSISTENCY_DEFAULT] = "strong",
    [TRINE_CONSISTENCY_FAST] = "fast",
    [TRINE_CONSISTENCY_STRONG] = "strong",
    [TRINE_CONSISTENCY_ALL] = "all",
};

const char *trine_consistency_name(enum trine_consistency level)
{
    if ((unsigned)level >= sizeof(client_level_names) / sizeof(client_level_names[0]))
        return "strong";
    return client_level_names[level];
}

int trine_consistency_parse(const char *s, enum trine_consistency *out)
{
    for (unsigned i = TRINE_CONSISTENCY_FAST; i <= TRINE_CONSISTENCY_ALL; i++) {
        if (s != NULL && strcmp(s, client_level_names[i]) == 0) {
            *out = (enum trine_consistency)i;
            return 0;
        }
    }
    return -TRINE_EINVALID;
}
