/*
 * pool.c - the endpoints a handle knows (the seeds it was opened with plus
 * every member address a partition map or leader hint named) and a small
 * pool of idle connections per endpoint.
 *
 * Invariants (under c->mu): 0 <= n_idle <= CLIENT_IDLE_MAX, n_idle <= n_open
 * <= CLIENT_CONNS_MAX; an endpoint, once added, lives until
 * trine_client_close and its address never changes, so threads keep pointers
 * to it without the lock. A connection is either in exactly one idle slot or
 * held by exactly one thread.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/assert.h"
#include "base/clock.h"
#include "client/client_int.h"

int client_endpoint_parse(const char *s, size_t len, struct client_endpoint *ep,
                          struct trine_err *err)
{
    memset(ep, 0, sizeof(*ep));
    if (len == 0 || len >= sizeof(ep->addr))
        return err_set(err, -TRINE_EINVALID, "endpoint '%.*s': empty or too long", (int)len, s);
    memcpy(ep->addr, s, len);
    const char *host = ep->addr, *colon;
    size_t host_len;
    if (ep->addr[0] == '[') { /* [v6]:port */
        const char *close = strchr(ep->addr, ']');
        if (close == NULL || close[1] != ':')
            return err_set(err, -TRINE_EINVALID, "endpoint '%s': expected [address]:port",
                           ep->addr);
        host = ep->addr + 1;
        host_len = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(ep->addr, ':');
        if (colon == NULL || memchr(ep->addr, ':', (size_t)(colon - ep->addr)) != NULL)
            return err_set(err, -TRINE_EINVALID, "endpoint '%s': expected host:port", ep->addr);
        host_len = (size_t)(colon - ep->addr);
    }
    const char *port = colon + 1;
    size_t port_len = strlen(port);
    if (host_len == 0 || port_len == 0 || port_len >= sizeof(ep->port))
        return err_set(err, -TRINE_EINVALID, "endpoint '%s': expected host:port", ep->addr);
    unsigned long v = 0;
    for (size_t i = 0; i < port_len; i++) {
        if (port[i] < '0' || port[i] > '9')
            return err_set(err, -TRINE_EINVALID, "endpoint '%s': bad port", ep->addr);
        v = v * 10 + (unsigned long)(port[i] - '0');
    }
    if (v == 0 || v > 65535)
        return err_set(err, -TRINE_EINVALID, "endpoint '%s': port out of range", ep->addr);
    memcpy(ep->host, host, host_len);
    memcpy(ep->port, port, port_len);
    return 0;
}

struct client_endpoint *client_endpoint_intern(struct trine_client *c, const char *addr, size_t len)
{
    for (size_t i = 0; i < c->n_eps; i++) {
        if (strlen(c->eps[i]->addr) == len && memcmp(c->eps[i]->addr, addr, len) == 0)
            return c->eps[i];
    }
    if (c->n_eps == CLIENT_ENDPOINTS_MAX) return NULL;
    struct client_endpoint tmp;
    if (client_endpoint_parse(addr, len, &tmp, NULL) != 0) return NULL;
    struct client_endpoint *ep = malloc(sizeof(*ep));
    if (ep == NULL) return NULL;
    *ep = tmp;
    c->eps[c->n_eps++] = ep;
    return ep;
}

static struct timespec pool_abstime(uint64_t deadline_ns)
{
    return (struct timespec){.tv_sec = (time_t)(deadline_ns / 1000000000u),
                             .tv_nsec = (long)(deadline_ns % 1000000000u)};
}

int client_pool_get(struct trine_client *c, struct client_endpoint *ep, uint64_t deadline_ns,
                    struct client_conn **out, bool *reused, struct trine_err *err)
{
    *out = NULL;
    *reused = false;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (ep->n_idle > 0) {
            struct client_conn *conn = ep->idle[--ep->n_idle];
            pthread_mutex_unlock(&c->mu);
            if (!client_conn_stale(conn)) {
                *out = conn;
                *reused = true;
                return 0;
            }
            client_conn_close(conn);
            pthread_mutex_lock(&c->mu);
            ep->n_open--;
        }
        if (ep->n_open < CLIENT_CONNS_MAX) break;
        struct timespec ts = pool_abstime(deadline_ns);
        if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT) {
            pthread_mutex_unlock(&c->mu);
            return err_set(err, -TRINE_ETIMEOUT, "%s: all %d connections busy", ep->addr,
                           CLIENT_CONNS_MAX);
        }
    }
    ep->n_open++;
    pthread_mutex_unlock(&c->mu);

    uint64_t connect_deadline = clock_mono_ns() + (uint64_t)CLIENT_CONNECT_MS * 1000000u;
    if (connect_deadline > deadline_ns) connect_deadline = deadline_ns;
    int rc = client_conn_open(c, ep, connect_deadline, out, err);
    if (rc != 0) {
        pthread_mutex_lock(&c->mu);
        ep->n_open--;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
    return rc;
}

void client_pool_put(struct trine_client *c, struct client_conn *conn, bool healthy)
{
    struct client_endpoint *ep = client_conn_endpoint(conn);
    pthread_mutex_lock(&c->mu);
    if (healthy && ep->n_idle < CLIENT_IDLE_MAX) {
        ep->idle[ep->n_idle++] = conn;
        conn = NULL;
    } else {
        ep->n_open--;
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    client_conn_close(conn);
}

void client_endpoint_down(struct trine_client *c, struct client_endpoint *ep)
{
    pthread_mutex_lock(&c->mu);
    ep->down_until_ns = clock_mono_ns() + (uint64_t)CLIENT_DOWN_MS * 1000000u;
    pthread_mutex_unlock(&c->mu);
}

struct client_endpoint *client_endpoint_any(struct trine_client *c)
{
    pthread_mutex_lock(&c->mu);
    TRINE_ASSERT(c->n_eps > 0); /* open refuses an empty endpoint list */
    uint64_t now = clock_mono_ns();
    struct client_endpoint *pick = NULL;
    for (size_t i = 0; i < c->n_eps && pick == NULL; i++) {
        struct client_endpoint *ep = c->eps[(c->rr + i) % c->n_eps];
        if (ep->down_until_ns <= now) pick = ep;
    }
    /* Every endpoint failed recently: try the next one anyway, the backoff
     * between attempts keeps this from spinning. */
    if (pick == NULL) pick = c->eps[c->rr % c->n_eps];
    c->rr++;
    pthread_mutex_unlock(&c->mu);
    return pick;
}

void client_pool_destroy(struct trine_client *c)
{
    for (size_t i = 0; i < c->n_eps; i++) {
        struct client_endpoint *ep = c->eps[i];
        for (int j = 0; j < ep->n_idle; j++)
            client_conn_close(ep->idle[j]);
        free(ep);
    }
    c->n_eps = 0;
}
