/*
 * conn.c - one TLS connection: framing, output limits, backpressure, timers,
 * and closing with deferred free.
 *
 * Stack per connection: a socket bufferevent (owns the fd) under an OpenSSL
 * filter bufferevent (owns the SSL and the socket bufferevent; freeing it
 * frees all three). The filter rather than bufferevent_openssl_socket_new
 * because the socket flavour of libevent 2.1 stalls when reading resumes
 * while decrypted bytes wait inside the SSL object (libevent issues #690,
 * #854); the filter re-reads them when reading is enabled again. Callbacks
 * are deferred (BEV_OPT_DEFER_CALLBACKS) so none runs inside a send.
 *
 * Frames: u32 big-endian length, then the body (see transport.h). Input is
 * parsed only while the conn is OPEN and not paused; a frame is delivered
 * whole, from one contiguous pullup of the input buffer, and drained after
 * on_frame returns.
 *
 * Buffers and their bounds:
 *   filter input   read high watermark frame_bytes_max + 4 (libevent may
 *                  overrun it by the rest of one TLS record);
 *   filter output  plaintext; sends refused at output_bytes_max; an accepted
 *                  conn stops being read above output_high_bytes and resumes
 *                  at output_low_bytes (the write low watermark, whose
 *                  callback also refills from a peer queue);
 *   socket output  ciphertext, held under TRANSPORT_TLS_STAGE_BYTES by its
 *                  write high watermark (the filter waits for it to drain).
 * Stall: while the output is not empty a timer checks every
 * stall_timeout_ms that some of it drained (progress = queued_total minus
 * what is still buffered); a conn with no progress is closed. A healthy
 * conn's output empties into TLS at once, so the timer runs only while a
 * peer is slow.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "base/assert.h"
#include "base/buf.h"
#include "base/log.h"
#include "transport/transport_impl.h"

static struct evbuffer *conn_output(const struct transport_conn *c)
{
    return bufferevent_get_output(c->bev);
}

static uint64_t conn_drained(const struct transport_conn *c)
{
    return c->queued_total - evbuffer_get_length(conn_output(c));
}

static void conn_free(struct transport_conn *c)
{
    bufferevent_free(c->bev); /* BEV_OPT_CLOSE_ON_FREE: SSL, socket bufferevent, fd */
    event_free(c->timer);
    free(c);
}

void conn_hold(struct transport_conn *c)
{
    c->depth++;
}

void conn_release(struct transport_conn *c)
{
    TRINE_ASSERT(c->depth > 0);
    if (--c->depth == 0 && c->state == CONN_CLOSED) conn_free(c);
}

static void conn_unlink(struct transport_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->t->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void conn_set_nodelay(struct transport_conn *c)
{
    struct bufferevent *sock = bufferevent_get_underlying(c->bev);
    evutil_socket_t fd = sock ? bufferevent_getfd(sock) : -1;
    int one = 1;
    if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void conn_add_timer(struct transport_conn *c, uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

void conn_close(struct transport_conn *c, int rc, const char *reason, bool notify)
{
    if (c->state == CONN_CLOSED) return;
    struct transport *t = c->t;
    c->state = CONN_CLOSED;
    /* No libevent callback may reach c from now on. */
    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    event_del(c->timer);
    conn_unlink(c);
    t->stats.conns_open--;
    /* Held, not released, around the callbacks: a transport_conn_close(c)
     * from one of them must not free c under us; whoever called conn_close
     * frees c (conn_release, or conn_free_all). */
    c->depth++;
    if (c->peer) {
        struct transport_peer *p = c->peer;
        c->peer = NULL;
        peer_conn_lost(p, rc, reason);
    } else if (!c->outbound) {
        t->accepted_open--;
        if (notify && c->announced) TRANSPORT_CALL(t, on_close, c, rc, reason);
    }
    c->depth--;
}

void conn_free_all(struct transport *t)
{
    struct transport_conn *next;
    for (struct transport_conn *c = t->conns; c; c = next) {
        next = c->next;
        TRINE_ASSERT(c->depth == 0);
        c->peer = NULL;
        conn_close(c, -TRINE_ECLOSED, "transport destroyed", false);
        conn_free(c);
    }
    TRINE_ASSERT(t->conns == NULL);
}

/* Output is waiting: check later that some of it drained. */
static void conn_watch_stall(struct transport_conn *c)
{
    if (c->state != CONN_OPEN || c->stall_armed) return;
    c->stall_armed = true;
    c->stall_mark = conn_drained(c);
    conn_add_timer(c, c->t->cfg.stall_timeout_ms);
}

/* Output grew: watch for a stall; above the high watermark, pause reading
 * an accepted conn. */
static void conn_after_output(struct transport_conn *c)
{
    struct transport *t = c->t;
    size_t pending = evbuffer_get_length(conn_output(c));
    if (pending > 0) conn_watch_stall(c);
    /* Only accepted conns pause: a dialed conn keeps reading so that two
     * nodes whose outputs are both full still drain each other. */
    if (pending > t->cfg.output_high_bytes && !c->outbound && !c->paused && c->state == CONN_OPEN) {
        c->paused = true;
        t->stats.backpressure_events++;
        bufferevent_disable(c->bev, EV_READ);
        log_debug("transport", "%s (%s): output over %zu bytes, reading paused", c->addr, c->id.cn,
                  t->cfg.output_high_bytes);
    }
}

int conn_write_frame(struct transport_conn *c, const void *body, size_t len)
{
    struct transport *t = c->t;
    struct evbuffer *out = conn_output(c);
    if (evbuffer_get_length(out) >= t->cfg.output_bytes_max) {
        t->stats.backpressure_events++;
        conn_watch_stall(c);
        return -TRINE_EBUSY;
    }
    /* Build the frame aside and move it in with one call: the output never
     * holds half a frame, and TLS sees header and body together. */
    struct evbuffer *frame = evbuffer_new();
    if (frame == NULL) return -TRINE_ENOMEM;
    uint8_t hdr[TRANSPORT_FRAME_HEADER_BYTES];
    put_u32be(hdr, (uint32_t)len);
    int rc = 0;
    if (evbuffer_expand(frame, sizeof(hdr) + len) != 0 || evbuffer_add(frame, hdr, sizeof(hdr)) ||
        (len > 0 && evbuffer_add(frame, body, len) != 0) || evbuffer_add_buffer(out, frame) != 0)
        rc = -TRINE_ENOMEM;
    evbuffer_free(frame);
    if (rc != 0) return rc;
    c->queued_total += sizeof(hdr) + len;
    t->stats.frames_out++;
    t->stats.bytes_out += sizeof(hdr) + len;
    conn_after_output(c);
    return 0;
}

int conn_take_frames(struct transport_conn *c, struct evbuffer *queue, uint32_t *queue_frames)
{
    struct transport *t = c->t;
    struct evbuffer *out = conn_output(c);
    int moved = 0;
    while (*queue_frames > 0 && c->state == CONN_OPEN &&
           evbuffer_get_length(out) < t->cfg.output_high_bytes) {
        uint8_t hdr[TRANSPORT_FRAME_HEADER_BYTES];
        ev_ssize_t got = evbuffer_copyout(queue, hdr, sizeof(hdr));
        TRINE_ASSERT(got == (ev_ssize_t)sizeof(hdr)); /* the queue holds whole frames */
        size_t n = sizeof(hdr) + get_u32be(hdr);
        TRINE_ASSERT(evbuffer_get_length(queue) >= n);
        if (evbuffer_remove_buffer(queue, out, n) != (int)n) {
            /* A partial move would leave both streams torn mid-frame. */
            evbuffer_drain(queue, evbuffer_get_length(queue));
            *queue_frames = 0;
            conn_close(c, -TRINE_ENOMEM, "out of memory moving queued frames", true);
            return -TRINE_ENOMEM;
        }
        (*queue_frames)--;
        moved++;
        c->queued_total += n;
        t->stats.frames_out++;
        t->stats.bytes_out += n;
    }
    if (moved > 0) conn_after_output(c);
    return moved;
}

/* Delivers every whole frame in the input, stopping when paused or closed. */
static void conn_deliver(struct transport_conn *c)
{
    struct transport *t = c->t;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    static const uint8_t empty[1];
    while (c->state == CONN_OPEN && !c->paused) {
        size_t avail = evbuffer_get_length(in);
        uint8_t hdr[TRANSPORT_FRAME_HEADER_BYTES];
        if (avail < sizeof(hdr)) return;
        evbuffer_copyout(in, hdr, sizeof(hdr));
        uint32_t len = get_u32be(hdr);
        if (len > t->cfg.frame_bytes_max) {
            struct trine_err e;
            t->stats.oversize_frames++;
            err_set(&e, -TRINE_ETOO_LARGE, "frame of %u bytes exceeds the %u byte limit", len,
                    t->cfg.frame_bytes_max);
            if (transport_log_allowed(t))
                log_warn("transport", "%s (%s): %s; closing", c->addr, c->id.cn, e.msg);
            conn_close(c, e.code, e.msg, true);
            return;
        }
        if (avail - sizeof(hdr) < len) return;
        evbuffer_drain(in, sizeof(hdr));
        const uint8_t *body = len ? evbuffer_pullup(in, len) : empty;
        if (body == NULL) {
            conn_close(c, -TRINE_ENOMEM, "out of memory assembling a frame", true);
            return;
        }
        t->stats.frames_in++;
        t->stats.bytes_in += sizeof(hdr) + len;
        TRANSPORT_CALL(t, on_frame, c, body, len);
        if (c->state != CONN_OPEN) return; /* closed in the callback: input goes with it */
        evbuffer_drain(in, len);
    }
}

static void conn_readcb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct transport_conn *c = arg;
    conn_hold(c);
    conn_deliver(c);
    conn_release(c);
}

static void conn_writecb(struct bufferevent *bev, void *arg)
{
    struct transport_conn *c = arg;
    struct transport *t = c->t;
    conn_hold(c);
    if (c->state == CONN_OPEN) {
        if (c->paused && evbuffer_get_length(conn_output(c)) <= t->cfg.output_low_bytes) {
            c->paused = false;
            bufferevent_enable(bev, EV_READ);
            /* Frames may already wait in the input; no new byte would
             * trigger a read callback for them. */
            bufferevent_trigger(bev, EV_READ,
                                BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
            log_debug("transport", "%s (%s): output drained, reading resumed", c->addr, c->id.cn);
        }
        if (c->peer) peer_flush(c->peer);
    }
    conn_release(c);
}

/* The handshake completed: check the identity, then open the conn. */
static void conn_established(struct transport_conn *c)
{
    struct transport *t = c->t;
    if (c->state != CONN_HANDSHAKE) return;
    struct trine_err e = {0};
    int rc = tls_peer_identity(bufferevent_openssl_get_ssl(c->bev), &c->id, &e);
    if (rc == 0 && c->peer && (c->id.kind != TRANSPORT_PEER_NODE || c->id.node_id != c->peer->id))
        rc = err_set(&e, -TRINE_EUNAUTHENTICATED, "certificate CN \"%s\" is not node-%u", c->id.cn,
                     c->peer->id);
    if (rc == 0 && !c->peer && c->id.kind == TRANSPORT_PEER_UNKNOWN)
        rc = err_set(&e, -TRINE_EUNAUTHENTICATED,
                     "certificate CN \"%s\" is neither node-<id> nor client", c->id.cn);
    if (rc != 0) {
        t->stats.identity_mismatches++;
        if (transport_log_allowed(t))
            log_warn("transport", "%s %s: identity rejected: %s", c->peer ? "dial" : "accept",
                     c->addr, e.msg);
        conn_close(c, rc, e.msg, true);
        return;
    }
    event_del(c->timer);
    c->state = CONN_OPEN;
    conn_set_nodelay(c);
    if (c->peer) {
        t->stats.peer_connects++;
        peer_conn_up(c->peer);
    } else {
        c->announced = true;
        int keep = 0;
        if (t->cfg.cb.on_accept) {
            t->cb_depth++;
            keep = t->cfg.cb.on_accept(t->cfg.cb.ctx, c);
            t->cb_depth--;
        }
        if (keep != 0 && c->state == CONN_OPEN) {
            c->announced = false;
            conn_close(c, -TRINE_EUNAUTHENTICATED, "refused by on_accept", false);
        }
    }
    if (c->state == CONN_OPEN && evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

static void conn_failed(struct transport_conn *c, short what, int sock_err)
{
    struct transport *t = c->t;
    struct trine_err e = {0};
    if (c->state == CONN_HANDSHAKE) {
        /* An accepted socket always got as far as TLS; a dial may have
         * failed before (refused, unreachable): the peer reports that. */
        if (!c->peer || tls_conn_failed_in_tls(c->bev)) {
            t->stats.handshake_failures++;
            tls_conn_error(&e, -TRINE_EUNAUTHENTICATED, c->bev, sock_err, "TLS handshake failed");
            if (transport_log_allowed(t))
                log_warn("transport", "%s %s: %s", c->peer ? "dial" : "accept", c->addr, e.msg);
        } else {
            struct bufferevent *sock = bufferevent_get_underlying(c->bev);
            int dns = sock ? bufferevent_socket_get_dns_error(sock) : 0;
            if (dns != 0)
                err_set(&e, -TRINE_EUNAVAILABLE, "resolving %s: %s", c->addr,
                        evutil_gai_strerror(dns));
            else
                tls_conn_error(&e, -TRINE_EUNAVAILABLE, c->bev, sock_err, "connect failed");
        }
    } else if (what & BEV_EVENT_EOF) {
        err_set(&e, -TRINE_ECLOSED, "closed by peer");
    } else {
        tls_conn_error(&e, -TRINE_EIO, c->bev, sock_err, "connection error");
    }
    if (c->state == CONN_OPEN) {
        if (c->id.kind == TRANSPORT_PEER_NODE)
            log_info("transport", "%s (%s): %s", c->addr, c->id.cn, e.msg);
        else
            log_debug("transport", "%s (%s): %s", c->addr, c->id.cn, e.msg);
    }
    conn_close(c, e.code, e.msg, true);
}

static void conn_eventcb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    int sock_err = errno; /* libevent restores the socket error for deferred callbacks */
    struct transport_conn *c = arg;
    conn_hold(c);
    if (what & BEV_EVENT_CONNECTED)
        conn_established(c);
    else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        conn_failed(c, what, sock_err);
    conn_release(c);
}

static void conn_timercb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct transport_conn *c = arg;
    struct transport *t = c->t;
    struct trine_err e;
    conn_hold(c);
    if (c->state == CONN_HANDSHAKE) {
        bool tls = !c->peer || tls_conn_failed_in_tls(c->bev);
        err_set(&e, -TRINE_ETIMEOUT, "%s not done after %u ms", tls ? "TLS handshake" : "connect",
                t->cfg.handshake_timeout_ms);
        if (tls) {
            t->stats.handshake_failures++;
            if (transport_log_allowed(t))
                log_warn("transport", "%s %s: %s", c->peer ? "dial" : "accept", c->addr, e.msg);
        }
        conn_close(c, e.code, e.msg, true);
    } else if (c->state == CONN_OPEN && c->stall_armed) {
        c->stall_armed = false;
        size_t pending = evbuffer_get_length(conn_output(c));
        if (pending > 0 && conn_drained(c) == c->stall_mark) {
            t->stats.stalled_closes++;
            err_set(&e, -TRINE_ETIMEOUT, "output stuck at %zu bytes for %u ms", pending,
                    t->cfg.stall_timeout_ms);
            if (transport_log_allowed(t))
                log_warn("transport", "%s (%s): %s; closing", c->addr, c->id.cn, e.msg);
            conn_close(c, e.code, e.msg, true);
        } else if (pending > 0) {
            conn_watch_stall(c); /* progress: keep watching */
        }
    }
    conn_release(c);
}

int conn_new(struct transport *t, struct bufferevent *sock, bool accepting,
             struct transport_peer *peer, const char *addr, struct transport_conn **out,
             struct trine_err *err)
{
    *out = NULL;
    SSL *ssl = SSL_new(t->ssl_ctx);
    struct transport_conn *c = calloc(1, sizeof(*c));
    struct event *timer = c ? evtimer_new(t->base, conn_timercb, c) : NULL;
    struct bufferevent *bev = NULL;
    if (ssl && timer) {
        /* The filter owns ssl and sock from here on. */
        bev = bufferevent_openssl_filter_new(
            t->base, sock, ssl, accepting ? BUFFEREVENT_SSL_ACCEPTING : BUFFEREVENT_SSL_CONNECTING,
            BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    }
    if (bev == NULL) {
        int rc = ssl ? err_set(err, -TRINE_ENOMEM, "out of memory creating a connection")
                     : transport_ssl_error(err, -TRINE_ENOMEM, "SSL_new");
        if (timer) event_free(timer);
        free(c);
        if (!ssl || !timer) {
            SSL_free(ssl);
            bufferevent_free(sock);
        }
        /* else the filter failed (only when out of memory): libevent 2.1 may
         * or may not have freed ssl already, so both are leaked rather than
         * risk a double free. */
        return rc;
    }
    c->t = t;
    c->bev = bev;
    c->timer = timer;
    c->peer = peer;
    c->outbound = peer != NULL;
    c->state = CONN_HANDSHAKE;
    snprintf(c->addr, sizeof(c->addr), "%s", addr);
    snprintf(c->id.cn, sizeof(c->id.cn), "?");
    /* A peer closing TCP without close_notify is an EOF, not an error. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    bufferevent_setwatermark(bev, EV_READ, 0, (size_t)t->cfg.frame_bytes_max + 4);
    bufferevent_setwatermark(bev, EV_WRITE, t->cfg.output_low_bytes, 0);
    bufferevent_setwatermark(sock, EV_WRITE, 0, TRANSPORT_TLS_STAGE_BYTES);
    bufferevent_setcb(bev, conn_readcb, conn_writecb, conn_eventcb, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    conn_add_timer(c, t->cfg.handshake_timeout_ms);
    c->next = t->conns;
    if (t->conns) t->conns->prev = c;
    t->conns = c;
    t->stats.conns_open++;
    if (!peer) t->accepted_open++;
    *out = c;
    return 0;
}

/* --- public ------------------------------------------------------------------ */

int transport_conn_send(struct transport_conn *conn, const void *body, size_t len)
{
    if (conn->state != CONN_OPEN) return -TRINE_ECLOSED;
    if (len > conn->t->cfg.frame_bytes_max) return -TRINE_ETOO_LARGE;
    return conn_write_frame(conn, body, len);
}

void transport_conn_close(struct transport_conn *conn)
{
    conn_hold(conn);
    conn_close(conn, -TRINE_ECLOSED, "closed by caller", false);
    conn_release(conn); /* frees it unless a callback of conn is on the stack */
}

const struct transport_identity *transport_conn_identity(const struct transport_conn *conn)
{
    return &conn->id;
}

bool transport_conn_is_outbound(const struct transport_conn *conn)
{
    return conn->outbound;
}

const char *transport_conn_addr(const struct transport_conn *conn)
{
    return conn->addr;
}

size_t transport_conn_output_bytes(const struct transport_conn *conn)
{
    return evbuffer_get_length(conn_output(conn));
}

void transport_conn_set_data(struct transport_conn *conn, void *data)
{
    conn->data = data;
}

void *transport_conn_data(const struct transport_conn *conn)
{
    return conn->data;
}
