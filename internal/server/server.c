/*
 * server.c - life cycle and the event loop: transport callbacks, the replica
 * timer, the WAL wakeup, signals and graceful shutdown.
 *
 * An event that may have given the replica work (a frame, a request, a WAL
 * wakeup) calls server_kick(), which activates the one wake event; libevent
 * appends it to the tail of the active queue, so it runs once, after every
 * callback already made active in this loop iteration. server_pump() then runs
 * one replica_process() for all of them — one WAL submission and one frame per
 * peer for everything that arrived together — and re-arms the single timer at
 * replica_next_deadline(). Calling replica_process() per frame instead cost a
 * 64-group scan, a WAL submission and a peer write per request (docs/benchmarks.md).
 */
#include "server/server_int.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/assert.h"
#include "base/clock.h"
#include "base/log.h"

#define SHUTDOWN_HANDOFF_MS 5000

uint64_t server_now_ns(void)
{
    return clock_mono_ns();
}

const char *server_member_addr(const struct server *s, uint64_t id)
{
    for (size_t i = 0; i < s->cfg->nmembers; i++)
        if (s->cfg->members[i].id == id) return s->cfg->members[i].addr;
    return "";
}

static void server_arm_timer(struct server *s)
{
    uint64_t now_ms = clock_mono_ns() / 1000000u;
    uint64_t due = replica_next_deadline(s->rep);
    /* Forward deadlines and shutdown progress are checked at least every 100 ms. */
    if (due > now_ms + 100) due = now_ms + 100;
    /* Only ever move the timer earlier: re-arming on every event would push a
     * capped timer back forever under steady traffic (heartbeats every 100 ms),
     * and the tick would never run. */
    if (evtimer_pending(s->timer_ev, NULL) && due >= s->timer_due_ms) return;
    s->timer_due_ms = due;
    uint64_t wait_ms = due > now_ms ? due - now_ms : 0;
    struct timeval tv = {(time_t)(wait_ms / 1000), (suseconds_t)(wait_ms % 1000) * 1000};
    evtimer_add(s->timer_ev, &tv);
}

static void server_fail(struct server *s, int rc)
{
    const struct trine_err *e = replica_error(s->rep);
    log_error("server", "stopping: the replica failed: %s (%s)", e->msg, status_name(rc));
    s->exit_rc = rc;
    event_base_loopbreak(s->base);
}

void server_pump(struct server *s)
{
    int rc = replica_process(s->rep);
    if (rc) {
        server_fail(s, rc);
        return;
    }
    server_arm_timer(s);
}

static void server_send_hello(struct server *s, uint32_t peer);

static void server_begin_stop(struct server *s)
{
    if (s->stopping) return;
    s->stopping = true;
    s->stop_deadline_ns = clock_mono_ns() + (uint64_t)SHUTDOWN_HANDOFF_MS * 1000000u;
    log_info("server", "shutting down: handing off leadership (up to %d ms)", SHUTDOWN_HANDOFF_MS);
    replica_shutdown(s->rep, SHUTDOWN_HANDOFF_MS);
    /* Tell the peers, or they hand leadership straight back to us (we are the
     * preferred primary of our partitions). */
    for (size_t i = 0; i < s->cfg->nmembers; i++)
        if (s->cfg->members[i].id != s->cfg->id) server_send_hello(s, s->cfg->members[i].id);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct server *s = arg;
    if (s->stop_requested) server_begin_stop(s);
    int rc = replica_tick(s->rep);
    if (rc) {
        server_fail(s, rc);
        return;
    }
    fwd_expire(s, clock_mono_ns());
    if (s->stopping && (replica_shutdown_done(s->rep) || clock_mono_ns() >= s->stop_deadline_ns)) {
        log_info("server", "leadership handed off; stopping");
        event_base_loopexit(s->base, NULL);
        return;
    }
    server_pump(s);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    server_pump(arg);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct server *s = arg;
    log_info("server", "received %s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    s->stop_requested = 1;
    server_begin_stop(s);
    event_active(s->timer_ev, EV_TIMEOUT, 0);
}

void server_kick(struct server *s)
{
    event_active(s->wake_ev, EV_READ, 0); /* a no-op while it is already active */
}

/* Called on the WAL's sync thread: only schedules a pump on the loop. */
static void replica_wakeup(void *ctx)
{
    server_kick(ctx);
}

static int replica_send(void *ctx, uint64_t to, const uint8_t *frame, size_t len)
{
    struct server *s = ctx;
    TRINE_ASSERT(len >= CODEC_FRAME_HEADER_BYTES);
    return transport_peer_send(s->t, (uint32_t)to, frame + CODEC_FRAME_HEADER_BYTES,
                               len - CODEC_FRAME_HEADER_BYTES);
}

/* ---- transport callbacks ---------------------------------------------------------- */

static void server_hello_check(struct server *s, struct transport_conn *conn, const uint8_t *body,
                               size_t len);

static bool is_member(const struct server *s, uint32_t id)
{
    for (size_t i = 0; i < s->cfg->nmembers; i++)
        if (s->cfg->members[i].id == id) return true;
    return false;
}

static int on_accept(void *ctx, struct transport_conn *conn)
{
    struct server *s = ctx;
    const struct transport_identity *id = transport_conn_identity(conn);
    if (id->kind == TRANSPORT_PEER_NODE && !is_member(s, id->node_id)) {
        log_warn("server", "refused %s: certificate names node %u, which is not a member",
                 transport_conn_addr(conn), id->node_id);
        return -1;
    }
    struct conn_state *cs = calloc(1, sizeof(*cs));
    if (!cs) return -1;
    cs->conn = conn;
    cs->next = s->conns;
    if (s->conns) s->conns->prev = cs;
    s->conns = cs;
    transport_conn_set_data(conn, cs);
    return 0;
}

void conn_state_free(struct server *s, struct conn_state *cs)
{
    for (struct op *op = cs->ops; op; op = op->next)
        op->cs = NULL;
    if (cs->prev)
        cs->prev->next = cs->next;
    else
        s->conns = cs->next;
    if (cs->next) cs->next->prev = cs->prev;
    free(cs);
}

static void on_close(void *ctx, struct transport_conn *conn, int rc, const char *reason)
{
    (void)rc;
    (void)reason;
    struct conn_state *cs = transport_conn_data(conn);
    if (!cs) return;
    transport_conn_set_data(conn, NULL);
    conn_state_free(ctx, cs);
}

static void on_frame(void *ctx, struct transport_conn *conn, const uint8_t *body, size_t len)
{
    struct server *s = ctx;
    const struct transport_identity *id = transport_conn_identity(conn);
    bool node = id->kind == TRANSPORT_PEER_NODE;
    /* Peek the message type to tell peer traffic from client requests without
     * decoding twice (the replica decodes Raft frames itself). */
    int type = route_peek_type(body, len);
    if (node && type == CODEC_MSG_HELLO) {
        server_hello_check(s, conn, body, len);
        return;
    }
    if (node && type > CODEC_MSG_HELLO && type < CODEC_MSG_COMMAND) {
        struct conn_state *hs = transport_conn_data(conn);
        if (hs && !hs->hello_ok) {
            /* Not (yet) introduced: a node of another cluster shape must not reach Raft
             * (its votes would depose our leaders). A peer's queued frames may precede
             * its hello on a new connection; Raft resends what is dropped here. */
            metric_inc(s->m.unintroduced);
            return;
        }
        int rc = replica_recv_frame(s->rep, id->node_id, body, len);
        if (rc) {
            metric_inc(s->m.bad_frames);
            log_warn("server", "bad peer frame from node %u: %s (%s)", id->node_id,
                     replica_error(s->rep)->msg, status_name(rc));
        }
        server_kick(s);
        return;
    }
    if (transport_conn_is_outbound(conn)) {
        /* Our dialed connection to a peer carries only replies to forwarded requests. */
        struct codec_msg reply;
        struct trine_err err = {0};
        int rc = codec_decode(body, len, &s->lim, s->scratch, &reply, &err);
        if (rc == 0)
            fwd_reply(s, id->node_id, &reply);
        else
            log_warn("server", "undecodable reply from node %u: %s", id->node_id, err.msg);
        server_kick(s);
        return;
    }
    struct conn_state *cs = transport_conn_data(conn);
    route_frame(s, cs, node, body, len);
    server_kick(s);
}

/* A refused node redials at once: log its refusal at most every 10 s, with the count of
 * those not logged (written into note for the caller's message). */
static bool server_hello_log_allowed(struct server *s, char *note, size_t n)
{
    uint64_t now = clock_mono_ns();
    if (s->hello_refused_log_ns && now - s->hello_refused_log_ns < 10000000000ull) {
        s->hello_refused_quiet++;
        return false;
    }
    note[0] = 0;
    if (s->hello_refused_quiet)
        snprintf(note, n, " (%u more refusals not logged)", s->hello_refused_quiet);
    s->hello_refused_log_ns = now;
    s->hello_refused_quiet = 0;
    return true;
}

/* Closes conn (no on_close follows) and frees its state. */
static void server_refuse_conn(struct server *s, struct transport_conn *conn, struct conn_state *cs)
{
    transport_conn_close(conn);
    if (cs) conn_state_free(s, cs);
}

/* Peers introduce themselves with a hello: a node created with another partition count or
 * protocol version is cut off with a reason in the log. Until a connection's hello has
 * matched, its Raft frames are dropped (on_frame). */
static void server_hello_check(struct server *s, struct transport_conn *conn, const uint8_t *body,
                               size_t len)
{
    struct codec_msg m;
    struct trine_err err = {0};
    const struct transport_identity *id = transport_conn_identity(conn);
    int rc = codec_decode(body, len, &s->lim, s->scratch, &m, &err);
    struct conn_state *cs = transport_conn_data(conn);
    char note[64];
    if (rc == 0 && m.hello.partitions != s->cfg->partitions) {
        if (server_hello_log_allowed(s, note, sizeof(note)))
            log_error("server",
                      "node %u runs with %u partitions, this node with %u: refusing it (the "
                      "partition count is fixed when a cluster is created)%s",
                      id->node_id, m.hello.partitions, s->cfg->partitions, note);
        server_refuse_conn(s, conn, cs);
    } else if (rc == 0 && m.hello.node_id != id->node_id) {
        if (server_hello_log_allowed(s, note, sizeof(note)))
            log_error("server", "node %u's hello claims id %llu: refusing it%s", id->node_id,
                      (unsigned long long)m.hello.node_id, note);
        server_refuse_conn(s, conn, cs);
    } else if (rc) {
        log_warn("server", "bad hello from node %u: %s", id->node_id, err.msg);
    } else if (cs) {
        cs->hello_ok = true;
        if (m.hello.draining) {
            /* Stop handing it leadership (and fail `all` writes at once) until it
             * reconnects after its restart. */
            log_info("server", "node %u is shutting down", id->node_id);
            replica_peer_reachable(s->rep, id->node_id, false);
        }
    }
}

static void server_send_hello(struct server *s, uint32_t peer)
{
    struct codec_msg m;
    memset(&m, 0, sizeof(m));
    m.type = CODEC_MSG_HELLO;
    m.hello.node_id = s->cfg->id;
    m.hello.partitions = s->cfg->partitions;
    m.hello.protocol_version = CODEC_PROTOCOL_VERSION;
    m.hello.address = codec_bytes_str(s->cfg->listen);
    m.hello.draining = s->stopping;
    buf_reset(&s->out);
    if (codec_encode(&s->out, &m, &s->lim, NULL) == 0)
        transport_peer_send(s->t, peer, s->out.data + CODEC_FRAME_HEADER_BYTES,
                            s->out.len - CODEC_FRAME_HEADER_BYTES);
}

static void on_peer_state(void *ctx, uint32_t peer_id, bool up, int rc, const char *reason)
{
    struct server *s = ctx;
    replica_peer_reachable(s->rep, peer_id, up);
    if (!up) fwd_peer_down(s, peer_id);
    if (up) server_send_hello(s, peer_id);
    if (up)
        log_info("server", "peer %u is up", peer_id);
    else
        log_warn("server", "peer %u is down: %s (%s)", peer_id, reason, status_name(rc));
}

/* ---- create / run / destroy ---------------------------------------------------------- */

static int server_metrics_init(struct server *s, struct trine_err *err)
{
    static const char *const ops[] = {"put", "get", "delete", "cas", "scan", "status", "map"};
    static const char *const levels[] = {"fast", "strong", "all"};
    for (int o = 0; o < 7; o++) {
        for (int c = 0; c < 3; c++) {
            char labels[64];
            snprintf(labels, sizeof(labels), "op=\"%s\",consistency=\"%s\"", ops[o], levels[c]);
            s->m.requests[o][c] = metrics_counter(s->metrics, "trine_requests_total",
                                                  "Client requests answered.", labels, err);
            s->m.latency[o][c] =
                metrics_histogram(s->metrics, "trine_request_duration_seconds",
                                  "Time from a request's arrival to its reply.", labels,
                                  metrics_latency_buckets, metrics_latency_buckets_n, err);
            if (!s->m.requests[o][c] || !s->m.latency[o][c]) return err->code;
        }
    }
#define ERR_ROW(NAME, CODE, WIRE, MSG)                                                             \
    if ((WIRE) && (CODE) > 0 && (CODE) < 64) {                                                     \
        s->m.errors[(CODE)] = metrics_counter(s->metrics, "trine_request_errors_total",            \
                                              "Requests answered with an error, by code.",         \
                                              "code=\"" #NAME "\"", err);                          \
        if (!s->m.errors[(CODE)]) return err->code;                                                \
    }
    TRINE_STATUS_TABLE(ERR_ROW)
#undef ERR_ROW
    s->m.forwards = metrics_counter(s->metrics, "trine_forwards_total",
                                    "Requests forwarded to the partition's primary.", NULL, err);
    s->m.forward_retries = metrics_counter(s->metrics, "trine_forward_retries_total",
                                           "Forwards re-sent to a new leader hint.", NULL, err);
    s->m.bad_frames = metrics_counter(s->metrics, "trine_bad_frames_total",
                                      "Frames that could not be decoded.", NULL, err);
    s->m.unintroduced =
        metrics_counter(s->metrics, "trine_peer_frames_before_hello_total",
                        "Raft frames dropped because their peer had not (yet) been introduced by "
                        "a valid hello; a few at each reconnect are normal, Raft resends them.",
                        NULL, err);
    if (!s->m.forwards || !s->m.forward_retries || !s->m.bad_frames || !s->m.unintroduced)
        return err->code;
    return 0;
}

static int server_open_ring(struct server *s, struct trine_err *err)
{
    uint32_t ids[CONFIG_MEMBERS_MAX];
    for (size_t i = 0; i < s->cfg->nmembers; i++)
        ids[i] = s->cfg->members[i].id;
    struct ring_config rc;
    ring_config_default(&rc);
    rc.partitions = s->cfg->partitions;
    rc.vnodes = s->cfg->vnodes;
    return ring_create(&rc, ids, s->cfg->nmembers, 1, &s->ring, err);
}

int server_create(const struct server_config *cfg, struct server **out, struct trine_err *err)
{
    *out = NULL;
    struct server *s = calloc(1, sizeof(*s));
    if (!s) return err_set(err, -TRINE_ENOMEM, "server: out of memory");
    s->cfg = cfg;
    buf_init(&s->out);
    log_set_node(cfg->id);
    log_set_level(cfg->log_level);
    if (!cfg->fsync)
        log_warn("server", "--fsync=off: acknowledged writes can be LOST on power failure or "
                           "kernel crash; use this only for tests and benchmarks");

    /* Decode with generous limits; the configured key/value limits are checked per
     * request so the client gets TOO_LARGE with its req_id (route.c). */
    s->lim = codec_limits_default();
    s->lim.frame_bytes_max = (uint32_t)cfg->max_frame_bytes;
    if (s->lim.value_bytes_max < cfg->max_value_bytes)
        s->lim.value_bytes_max = (uint32_t)cfg->max_value_bytes;
    if (s->lim.key_bytes_max < cfg->max_key_bytes)
        s->lim.key_bytes_max = (uint32_t)cfg->max_key_bytes;
    s->lim.entry_bytes_max = s->lim.value_bytes_max + s->lim.key_bytes_max + 4096;

    int rc = 0;
    if (evthread_use_pthreads() != 0) rc = err_set(err, -TRINE_EINTERNAL, "libevent threads");
    if (!rc) {
        /* The changelist folds a write event added and removed in one loop
         * iteration (every reply) into no epoll_ctl at all. */
        struct event_config *ec = event_config_new();
        if (ec) event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        s->base = ec ? event_base_new_with_config(ec) : NULL;
        if (ec) event_config_free(ec);
        if (!s->base) rc = err_set(err, -TRINE_ENOMEM, "event_base_new failed");
    }
    if (!rc && !(s->metrics = metrics_create()))
        rc = err_set(err, -TRINE_ENOMEM, "metrics: out of memory");
    if (!rc && !(s->scratch = codec_scratch_new()))
        rc = err_set(err, -TRINE_ENOMEM, "codec scratch: out of memory");
    if (!rc && !(s->leader_cache = calloc(cfg->partitions, sizeof(*s->leader_cache))))
        rc = err_set(err, -TRINE_ENOMEM, "server: out of memory");
    if (!rc) rc = server_metrics_init(s, err);
    if (!rc) rc = server_open_ring(s, err);
    if (!rc) rc = fwd_init(s);
    if (rc == -TRINE_ENOMEM && !err->msg[0]) err_set(err, rc, "server: out of memory");

    if (!rc) {
        struct transport_config tc;
        transport_config_default(&tc);
        tc.cert_file = cfg->tls_cert;
        tc.key_file = cfg->tls_key;
        tc.ca_file = cfg->tls_ca;
        tc.frame_bytes_max = (uint32_t)cfg->max_frame_bytes;
        tc.cb = (struct transport_callbacks){on_frame, on_accept, on_close, on_peer_state, s};
        rc = transport_create(s->base, &tc, &s->t, err);
    }
    if (!rc) rc = admin_metrics_init(s, err);
    struct replica_set *sets = NULL;
    if (!rc) {
        sets = calloc(cfg->partitions, sizeof(*sets));
        if (!sets) rc = err_set(err, -TRINE_ENOMEM, "server: out of memory");
        for (uint32_t p = 0; sets && p < cfg->partitions; p++) {
            size_t n;
            const uint32_t *set = ring_replicas(s->ring, p, &n);
            sets[p].n = (uint32_t)n;
            memcpy(sets[p].nodes, set, n * sizeof(*set));
        }
    }
    struct store_options so = {.write_buffer_bytes = (size_t)cfg->store_memtable_bytes,
                               .snappy = cfg->store_snappy,
                               .meta_cache_entries = cfg->store_key_cache};
    if (!rc) {
        struct replica_config c = {
            .store = &so,
            .node_id = cfg->id,
            .data_dir = cfg->data_dir,
            .partitions = cfg->partitions,
            .sets = sets,
            .send = replica_send,
            .wakeup = replica_wakeup,
            .cb_ctx = s,
            .clock = clock_system,
            .metrics = s->metrics,
            .frame_bytes_max = (uint32_t)cfg->max_frame_bytes,
            .key_bytes_max = (uint32_t)cfg->max_key_bytes,
            .value_bytes_max = (uint32_t)cfg->max_value_bytes,
            .wal_sync_off = !cfg->fsync,
            .wal_repair = cfg->repair,
        };
        rc = replica_open(&c, &s->rep, err);
    }
    free(sets); /* copied by replica_open */
    if (!rc) rc = transport_listen(s->t, cfg->listen, err);
    for (size_t i = 0; !rc && i < cfg->nmembers; i++) {
        if (cfg->members[i].id == cfg->id) continue;
        rc = transport_peer_add(s->t, cfg->members[i].id, cfg->members[i].addr, err);
    }
    if (!rc && cfg->http) rc = admin_start(s, cfg->http, err);
    if (!rc) {
        s->timer_ev = evtimer_new(s->base, on_timer, s);
        s->wake_ev = event_new(s->base, -1, 0, on_wake, s);
        s->sig_ev[0] = evsignal_new(s->base, SIGTERM, on_signal, s);
        s->sig_ev[1] = evsignal_new(s->base, SIGINT, on_signal, s);
        if (!s->timer_ev || !s->wake_ev || !s->sig_ev[0] || !s->sig_ev[1] ||
            event_add(s->sig_ev[0], NULL) || event_add(s->sig_ev[1], NULL))
            rc = err_set(err, -TRINE_ENOMEM, "libevent: cannot create events");
    }
    if (rc) {
        server_destroy(s);
        return rc;
    }
    *out = s;
    return 0;
}

int server_run(struct server *s)
{
    log_info("server", "node %u serving on %s (%u partitions, %zu members, %zu hosted)", s->cfg->id,
             s->cfg->listen, s->cfg->partitions, s->cfg->nmembers,
             replica_partitions(s->rep, NULL, 0));
    server_pump(s);
    event_base_dispatch(s->base);
    return s->exit_rc;
}

void server_stop(struct server *s)
{
    s->stop_requested = 1;
}

void server_destroy(struct server *s)
{
    if (!s) return;
    admin_stop(s);
    if (s->rep) replica_close(s->rep); /* fails pending ops; their replies are dropped below */
    if (s->t) transport_destroy(s->t); /* frees its connections without on_close */
    for (struct conn_state *cs = s->conns, *next; cs; cs = next) {
        next = cs->next;
        conn_state_free(s, cs);
    }
    fwd_free(s);
    for (int i = 0; i < 2; i++)
        if (s->sig_ev[i]) event_free(s->sig_ev[i]);
    if (s->timer_ev) event_free(s->timer_ev);
    if (s->wake_ev) event_free(s->wake_ev);
    if (s->base) event_base_free(s->base);
    ring_destroy(s->ring);
    metrics_destroy(s->metrics);
    codec_scratch_free(s->scratch);
    free(s->leader_cache);
    buf_free(&s->out);
    free(s);
}
