/*
 * transport.c - creating and destroying a transport, checking its config,
 * reading its counters, and parsing "host:port".
 *
 * Invariants checked at create (a config that breaks them is refused, never
 * clamped silently): 0 < frame_bytes_max <= TRANSPORT_FRAME_BYTES_MAX,
 * output_low_bytes < output_high_bytes <= output_bytes_max, a peer queue
 * holds at least one maximal frame, 0 < backoff_min_ms <= backoff_max_ms,
 * and every timeout and count is positive.
 */
#include <event2/dns.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/assert.h"
#include "base/clock.h"
#include "base/log.h"
#include "transport/transport_impl.h"

void transport_config_default(struct transport_config *c)
{
    memset(c, 0, sizeof(*c));
    c->frame_bytes_max = 16u << 20;
    c->output_bytes_max = 32u << 20;
    c->output_high_bytes = 4u << 20;
    c->output_low_bytes = 1u << 20;
    c->stall_timeout_ms = 30000;
    c->handshake_timeout_ms = 10000;
    c->conns_max = 1024;
    c->peer_queue_bytes_max = 64u << 20;
    c->peer_queue_frames_max = 65536;
    c->backoff_min_ms = 50;
    c->backoff_max_ms = 5000;
}

static int transport_check_config(const struct transport_config *c, struct trine_err *err)
{
    if (!c->cert_file || !c->key_file || !c->ca_file)
        return err_set(err, -TRINE_EINVALID, "cert_file, key_file and ca_file are required");
    if (c->cb.on_frame == NULL) return err_set(err, -TRINE_EINVALID, "cb.on_frame is required");
    if (c->frame_bytes_max == 0 || c->frame_bytes_max > TRANSPORT_FRAME_BYTES_MAX)
        return err_set(err, -TRINE_EINVALID, "frame_bytes_max %u not in [1, %u]",
                       c->frame_bytes_max, TRANSPORT_FRAME_BYTES_MAX);
    if (!(c->output_low_bytes < c->output_high_bytes &&
          c->output_high_bytes <= c->output_bytes_max))
        return err_set(err, -TRINE_EINVALID,
                       "need output_low_bytes < output_high_bytes <= output_bytes_max "
                       "(%zu, %zu, %zu)",
                       c->output_low_bytes, c->output_high_bytes, c->output_bytes_max);
    if (c->peer_queue_bytes_max < (size_t)c->frame_bytes_max + TRANSPORT_FRAME_HEADER_BYTES ||
        c->peer_queue_frames_max == 0)
        return err_set(err, -TRINE_EINVALID,
                       "a peer queue must hold one frame of frame_bytes_max (%zu bytes, %u "
                       "frames)",
                       c->peer_queue_bytes_max, c->peer_queue_frames_max);
    if (c->backoff_min_ms == 0 || c->backoff_min_ms > c->backoff_max_ms)
        return err_set(err, -TRINE_EINVALID, "need 0 < backoff_min_ms <= backoff_max_ms");
    if (c->stall_timeout_ms == 0 || c->handshake_timeout_ms == 0 || c->conns_max == 0)
        return err_set(err, -TRINE_EINVALID,
                       "stall_timeout_ms, handshake_timeout_ms and conns_max must be > 0");
    return 0;
}

/* libevent writes sockets with writev, which raises SIGPIPE on a reset
 * connection; with the default action that kills the node. */
static void transport_ignore_sigpipe(void)
{
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL) {
        struct sigaction ign;
        memset(&ign, 0, sizeof(ign));
        ign.sa_handler = SIG_IGN;
        sigemptyset(&ign.sa_mask);
        sigaction(SIGPIPE, &ign, NULL);
    }
}

int transport_create(struct event_base *base, const struct transport_config *c,
                     struct transport **out, struct trine_err *err)
{
    *out = NULL;
    TRINE_ASSERT(base != NULL && c != NULL);
    int rc = transport_check_config(c, err);
    if (rc != 0) return rc;
    struct transport *t = calloc(1, sizeof(*t));
    if (t == NULL) return err_set(err, -TRINE_ENOMEM, "transport: out of memory");
    t->base = base;
    t->cfg = *c;
    rc = tls_ctx_new(c, &t->ssl_ctx, err);
    if (rc != 0) {
        free(t);
        return rc;
    }
    t->cfg.cert_file = t->cfg.key_file = t->cfg.ca_file = NULL;
    uint64_t seed = c->jitter_seed;
    if (seed == 0) seed = clock_mono_ns() ^ ((uint64_t)getpid() << 32);
    rng_seed(&t->rng, seed);
    transport_ignore_sigpipe();
    *out = t;
    return 0;
}

void transport_destroy(struct transport *t)
{
    if (t == NULL) return;
    TRINE_ASSERT(t->cb_depth == 0);
    listener_free(t);
    peer_free_all(t); /* detaches peer conns first, so no redial is scheduled */
    conn_free_all(t);
    if (t->dns) evdns_base_free(t->dns, 0);
    /* SSL objects hold references on the context; the last one frees it. */
    SSL_CTX_free(t->ssl_ctx);
    free(t);
}

void transport_stats(const struct transport *t, struct transport_stats *out)
{
    *out = t->stats;
}

bool transport_log_allowed(struct transport *t)
{
    uint64_t now = clock_mono_ns();
    if (now - t->log_window_ns >= 1000000000u) {
        if (t->log_suppressed > 0)
            log_warn("transport", "%llu similar warnings suppressed in the last second",
                     (unsigned long long)t->log_suppressed);
        t->log_window_ns = now;
        t->log_count = 0;
        t->log_suppressed = 0;
    }
    if (t->log_count < TRANSPORT_LOG_BURST) {
        t->log_count++;
        return true;
    }
    t->log_suppressed++;
    return false;
}

int transport_split_host_port(const char *s, char *host, size_t host_n, uint16_t *port)
{
    const char *colon;
    const char *h = s;
    size_t hlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':') return -TRINE_EINVALID;
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL) return -TRINE_EINVALID;
        hlen = (size_t)(colon - s);
        if (memchr(s, ':', hlen) != NULL) return -TRINE_EINVALID; /* bare IPv6 needs [] */
    }
    if (hlen >= host_n) return -TRINE_EINVALID;
    const char *p = colon + 1;
    if (*p == '\0' || strlen(p) > 5) return -TRINE_EINVALID;
    unsigned long v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9') return -TRINE_EINVALID;
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v > 65535) return -TRINE_EINVALID;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (uint16_t)v;
    return 0;
}
