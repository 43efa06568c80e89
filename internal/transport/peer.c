/*
 * peer.c - outbound connections to other nodes: dial, redial with backoff,
 * and a bounded per-peer send queue that survives reconnects.
 *
 * States of a peer: waiting on its timer (no conn), dialing (conn in
 * HANDSHAKE), up (conn OPEN, identity checked as node-<id>). Any loss goes
 * back to waiting; the delay before dial number k after the last success is
 * d = min(backoff_max_ms, backoff_min_ms * 2^k), drawn uniformly from
 * [d/2, d] ("equal jitter": spread out, yet never far below the schedule), so
 * nodes restarted together do not redial in lockstep.
 *
 * Queue layout: an evbuffer of whole frames exactly as on the wire (u32
 * big-endian length + body). Invariant: it holds queue_frames whole frames,
 * never a partial one, so a connection always starts at a frame boundary.
 * Frames move from the queue to the connection's output only while that
 * output is below output_high_bytes; the rest waits and survives a
 * reconnect. Bounds: peer_queue_frames_max frames and peer_queue_bytes_max
 * bytes; beyond them transport_peer_send returns -TRINE_EBUSY.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "base/assert.h"
#include "base/buf.h"
#include "base/log.h"
#include "transport/transport_impl.h"

static struct transport_peer *peer_find(const struct transport *t, uint32_t id)
{
    for (struct transport_peer *p = t->peers; p; p = p->next)
        if (p->id == id) return p;
    return NULL;
}

static uint32_t peer_backoff_ms(struct transport_peer *p)
{
    const struct transport_config *c = &p->t->cfg;
    uint32_t shift = p->attempts < 20 ? p->attempts : 20;
    uint64_t d = (uint64_t)c->backoff_min_ms << shift;
    if (d > c->backoff_max_ms) d = c->backoff_max_ms;
    uint64_t half = d / 2;
    return (uint32_t)(d - half + rng_below(&p->t->rng, half + 1));
}

static void peer_schedule(struct transport_peer *p, uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(p->timer, &tv);
}

/* A dial did not get as far as a connection object: log once, retry later. */
static void peer_dial_failed(struct transport_peer *p, const char *reason)
{
    if (!p->quiet) {
        p->quiet = true;
        log_warn("transport", "peer %u (%s) unreachable: %s; retrying with backoff", p->id, p->addr,
                 reason);
    }
    peer_schedule(p, peer_backoff_ms(p));
    p->attempts++;
}

static void peer_dial(struct transport_peer *p)
{
    struct transport *t = p->t;
    TRINE_ASSERT(p->conn == NULL);
    struct bufferevent *sock = bufferevent_socket_new(t->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (sock == NULL) {
        peer_dial_failed(p, "out of memory");
        return;
    }
    int rc;
    errno = 0;
    if (p->numeric) {
        rc = bufferevent_socket_connect(sock, (struct sockaddr *)&p->sa, p->sa_len);
    } else {
        /* evdns resolves without blocking the loop; it reads resolv.conf and
         * /etc/hosts once, and is only created if some peer is a name. */
        if (t->dns == NULL)
            t->dns = evdns_base_new(t->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                                 EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        rc = t->dns ? bufferevent_socket_connect_hostname(sock, t->dns, AF_UNSPEC, p->host, p->port)
                    : -1;
    }
    if (rc != 0) {
        int e = errno;
        bufferevent_free(sock);
        peer_dial_failed(p, t->dns || p->numeric ? (e ? strerror(e) : "connect failed")
                                                 : "no DNS resolver");
        return;
    }
    struct trine_err err = {0};
    if (conn_new(t, sock, false, p, p->addr, &p->conn, &err) != 0) {
        p->conn = NULL;
        peer_dial_failed(p, err.msg);
    }
}

static void peer_timercb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct transport_peer *p = arg;
    if (p->conn == NULL) peer_dial(p);
}

void peer_conn_up(struct transport_peer *p)
{
    p->up = true;
    p->attempts = 0;
    p->quiet = false;
    log_info("transport", "peer %u (%s) up", p->id, p->addr);
    TRANSPORT_CALL(p->t, on_peer_state, p->id, true, 0, "connected");
    peer_flush(p);
}

void peer_conn_lost(struct transport_peer *p, int rc, const char *reason)
{
    p->conn = NULL;
    if (p->up) {
        p->up = false;
        log_info("transport", "peer %u (%s) down: %s", p->id, p->addr, reason);
        TRANSPORT_CALL(p->t, on_peer_state, p->id, false, rc, reason);
    } else if (!p->quiet) {
        p->quiet = true;
        log_warn("transport", "peer %u (%s) unreachable: %s; retrying with backoff", p->id, p->addr,
                 reason);
    }
    /* The callback above may have sent or even reconnected nothing (it
     * cannot dial); the timer is ours to set. */
    if (p->conn == NULL) {
        peer_schedule(p, peer_backoff_ms(p));
        p->attempts++;
    }
}

void peer_flush(struct transport_peer *p)
{
    struct transport_conn *c = p->conn;
    if (c == NULL || !p->up || p->queue_frames == 0) return;
    conn_hold(c); /* a failed move closes c; free it only once we are done */
    conn_take_frames(c, p->queue, &p->queue_frames);
    conn_release(c);
}

static void peer_free(struct transport_peer *p)
{
    if (p->conn) {
        struct transport_conn *c = p->conn;
        c->peer = NULL; /* no redial, no on_peer_state */
        p->conn = NULL;
        conn_hold(c);
        conn_close(c, -TRINE_ECLOSED, "peer removed", false);
        conn_release(c);
    }
    event_free(p->timer);
    evbuffer_free(p->queue);
    free(p);
}

void peer_free_all(struct transport *t)
{
    while (t->peers) {
        struct transport_peer *p = t->peers;
        t->peers = p->next;
        peer_free(p);
    }
}

/* --- public ------------------------------------------------------------------ */

int transport_peer_add(struct transport *t, uint32_t id, const char *host_port,
                       struct trine_err *err)
{
    if (id == 0) return err_set(err, -TRINE_EINVALID, "peer id 0 is reserved");
    if (peer_find(t, id)) return err_set(err, -TRINE_EEXISTS, "peer %u already added", id);
    struct transport_peer *p = calloc(1, sizeof(*p));
    if (p == NULL) return err_set(err, -TRINE_ENOMEM, "out of memory");
    if (transport_split_host_port(host_port, p->host, sizeof(p->host), &p->port) != 0 ||
        p->host[0] == '\0' || p->port == 0 || strlen(host_port) >= sizeof(p->addr)) {
        free(p);
        return err_set(err, -TRINE_EINVALID, "peer %u address \"%s\" is not host:port", id,
                       host_port);
    }
    p->t = t;
    p->id = id;
    snprintf(p->addr, sizeof(p->addr), "%s", host_port);
    p->sa_len = (int)sizeof(p->sa);
    p->numeric = evutil_parse_sockaddr_port(host_port, (struct sockaddr *)&p->sa, &p->sa_len) == 0;
    p->timer = evtimer_new(t->base, peer_timercb, p);
    p->queue = evbuffer_new();
    if (p->timer == NULL || p->queue == NULL) {
        if (p->timer) event_free(p->timer);
        if (p->queue) evbuffer_free(p->queue);
        free(p);
        return err_set(err, -TRINE_ENOMEM, "out of memory");
    }
    p->next = t->peers;
    t->peers = p;
    peer_schedule(p, 0); /* dial from the loop, not from inside this call */
    return 0;
}

int transport_peer_remove(struct transport *t, uint32_t id)
{
    TRINE_ASSERT(t->cb_depth == 0);
    for (struct transport_peer **pp = &t->peers; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            struct transport_peer *p = *pp;
            *pp = p->next;
            peer_free(p);
            return 0;
        }
    }
    return -TRINE_ENOT_FOUND;
}

int transport_peer_send(struct transport *t, uint32_t id, const void *body, size_t len)
{
    struct transport_peer *p = peer_find(t, id);
    if (p == NULL) return -TRINE_ENOT_FOUND;
    if (len > t->cfg.frame_bytes_max) return -TRINE_ETOO_LARGE;
    /* Fast path: nothing waits and the connection has room. */
    if (p->up && p->queue_frames == 0 &&
        transport_conn_output_bytes(p->conn) < t->cfg.output_high_bytes)
        return conn_write_frame(p->conn, body, len);
    size_t n = TRANSPORT_FRAME_HEADER_BYTES + len;
    if (p->queue_frames >= t->cfg.peer_queue_frames_max ||
        evbuffer_get_length(p->queue) + n > t->cfg.peer_queue_bytes_max) {
        t->stats.backpressure_events++;
        return -TRINE_EBUSY;
    }
    /* Built aside so a failure cannot leave half a frame in the queue. */
    struct evbuffer *frame = evbuffer_new();
    if (frame == NULL) return -TRINE_ENOMEM;
    uint8_t hdr[TRANSPORT_FRAME_HEADER_BYTES];
    put_u32be(hdr, (uint32_t)len);
    int rc = 0;
    if (evbuffer_expand(frame, n) != 0 || evbuffer_add(frame, hdr, sizeof(hdr)) != 0 ||
        (len > 0 && evbuffer_add(frame, body, len) != 0) ||
        evbuffer_add_buffer(p->queue, frame) != 0)
        rc = -TRINE_ENOMEM;
    evbuffer_free(frame);
    if (rc != 0) return rc;
    p->queue_frames++;
    peer_flush(p);
    return 0;
}

bool transport_peer_is_up(const struct transport *t, uint32_t id)
{
    const struct transport_peer *p = peer_find(t, id);
    return p != NULL && p->up;
}

int transport_peer_queued(const struct transport *t, uint32_t id, uint32_t *frames, size_t *bytes)
{
    const struct transport_peer *p = peer_find(t, id);
    if (p == NULL) return -TRINE_ENOT_FOUND;
    *frames = p->queue_frames;
    *bytes = evbuffer_get_length(p->queue);
    return 0;
}
