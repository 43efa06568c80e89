/*
 * admin.c - the admin HTTP endpoint (--http), plain HTTP on a separate port:
 *
 *   GET /health    200 {"status":"serving",...} or 503 while shutting down
 *   GET /metrics   Prometheus text format (metrics.h)
 *   GET /status    JSON: this node's partitions (role, term, leader,
 *                  commit/applied/last index, per-peer match and lag in
 *                  entries and ms), peers
 *   GET /hash      JSON: content hash and applied index of every hosted
 *                  partition (replicas of a partition must agree at equal
 *                  applied indexes: the convergence check)
 *
 * Served on the loop thread; every answer is built from in-memory state
 * except /hash, which reads each partition's keys. /metrics runs the
 * registry's collectors (the replica's per-partition series and stats, the
 * transport counters below) here, on the loop thread, so they read loop state
 * without locks; nothing is kept up to date between scrapes for them.
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "raft/raft.h"
#include "server/server_int.h"

static void admin_send(struct evhttp_request *req, int code, const char *reason, const char *ctype,
                       struct evbuffer *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
    evhttp_send_reply(req, code, reason, body);
}

static void admin_health(struct server *s, struct evhttp_request *req, struct evbuffer *b)
{
    bool ok = !s->stopping;
    evbuffer_add_printf(b, "{\"status\":\"%s\",\"node\":%u,\"partitions\":%zu}\n",
                        ok ? "serving" : "stopping", s->cfg->id,
                        replica_partitions(s->rep, NULL, 0));
    admin_send(req, ok ? 200 : 503, ok ? "OK" : "Service Unavailable", "application/json", b);
}

static void admin_metrics(struct server *s, struct evhttp_request *req, struct evbuffer *b)
{
    struct buf out;
    buf_init(&out);
    if (metrics_render(s->metrics, &out) == 0) {
        evbuffer_add(b, out.data, out.len);
        admin_send(req, 200, "OK", "text/plain; version=0.0.4", b);
    } else {
        evbuffer_add_printf(b, "metrics: out of memory\n");
        admin_send(req, 500, "Internal Server Error", "text/plain", b);
    }
    buf_free(&out);
}

/* ---- scrape-time series: the transport's counters --------------------------------------- */

static void transport_collect(void *ctx, struct metrics_sink *k)
{
    struct server *s = ctx;
    struct transport_stats st;
    transport_stats(s->t, &st);
    const struct metrics_scalar rows[] = {
        {"trine_connections", "Open connections, clients and peers, both directions.",
         METRICS_GAUGE, st.conns_open},
        {"trine_connections_accepted_total", "TCP connections accepted.", METRICS_COUNTER,
         st.conns_accepted},
        {"trine_connections_refused_total", "Accepted connections closed at once: too many open.",
         METRICS_COUNTER, st.conns_refused},
        {"trine_peer_connects_total", "Dialed peer connections that completed the handshake.",
         METRICS_COUNTER, st.peer_connects},
        {"trine_tls_handshake_failures_total", "TLS handshakes that failed or timed out.",
         METRICS_COUNTER, st.handshake_failures},
        {"trine_tls_identity_mismatches_total",
         "Verified certificates whose identity is not acceptable.", METRICS_COUNTER,
         st.identity_mismatches},
        {"trine_network_received_bytes_total", "Framed bytes received, headers included.",
         METRICS_COUNTER, st.bytes_in},
        {"trine_network_sent_bytes_total", "Framed bytes handed to connections to send.",
         METRICS_COUNTER, st.bytes_out},
        {"trine_network_received_frames_total", "Frames received.", METRICS_COUNTER, st.frames_in},
        {"trine_network_sent_frames_total", "Frames handed to connections to send.",
         METRICS_COUNTER, st.frames_out},
        {"trine_oversize_frames_total", "Frames refused for exceeding --max-frame.",
         METRICS_COUNTER, st.oversize_frames},
        {"trine_backpressure_events_total", "Sends refused or reads paused by full buffers.",
         METRICS_COUNTER, st.backpressure_events},
        {"trine_stalled_closes_total", "Connections closed because they stopped making progress.",
         METRICS_COUNTER, st.stalled_closes},
    };
    metrics_emit_scalars(k, rows, sizeof(rows) / sizeof(rows[0]));
}

int admin_metrics_init(struct server *s, struct trine_err *err)
{
    return metrics_collector(s->metrics, transport_collect, s, err);
}

static void admin_status(struct server *s, struct evhttp_request *req, struct evbuffer *b)
{
    uint32_t np = ring_partitions(s->ring);
    evbuffer_add_printf(b, "{\"node\":%u,\"listen\":\"%s\",\"stopping\":%s,\"peers\":[", s->cfg->id,
                        s->cfg->listen, s->stopping ? "true" : "false");
    bool first = true;
    for (size_t i = 0; i < s->cfg->nmembers; i++) {
        uint32_t id = s->cfg->members[i].id;
        if (id == s->cfg->id) continue;
        evbuffer_add_printf(b, "%s{\"id\":%u,\"address\":\"%s\",\"up\":%s}", first ? "" : ",", id,
                            s->cfg->members[i].addr,
                            transport_peer_is_up(s->t, id) ? "true" : "false");
        first = false;
    }
    evbuffer_add_printf(b, "],\"partitions\":[");
    first = true;
    for (uint32_t p = 0; p < np; p++) {
        struct replica_part_status st;
        if (replica_status(s->rep, p, &st)) continue;
        evbuffer_add_printf(b,
                            "%s{\"partition\":%u,\"role\":\"%s\",\"term\":%" PRIu64
                            ",\"leader\":%" PRIu64 ",\"preferred\":%" PRIu64 ",\"commit\":%" PRIu64
                            ",\"applied\":%" PRIu64 ",\"last_index\":%" PRIu64
                            ",\"snapshot_index\":%" PRIu64 ",\"peers\":[",
                            first ? "" : ",", p, raft_role_name(st.role), st.term, st.leader,
                            st.preferred, st.commit, st.applied, st.last_index, st.snapshot_index);
        for (uint32_t i = 0; i < st.n_peers; i++)
            evbuffer_add_printf(b,
                                "%s{\"id\":%" PRIu64
                                ",\"voter\":%s,\"active\":%s,\"match\":%" PRIu64 ",\"lag\":%" PRIu64
                                ",\"lag_ms\":%" PRIu64 "}",
                                i ? "," : "", st.peers[i].id, st.peers[i].voter ? "true" : "false",
                                st.peers[i].active ? "true" : "false", st.peers[i].match,
                                st.peers[i].lag, st.peers[i].lag_ms);
        evbuffer_add_printf(b, "]}");
        first = false;
    }
    evbuffer_add_printf(b, "]}\n");
    admin_send(req, 200, "OK", "application/json", b);
}

static void admin_hash(struct server *s, struct evhttp_request *req, struct evbuffer *b)
{
    uint32_t np = ring_partitions(s->ring);
    evbuffer_add_printf(b, "{\"node\":%u,\"partitions\":[", s->cfg->id);
    bool first = true;
    for (uint32_t p = 0; p < np; p++) {
        uint64_t hash, applied;
        if (!replica_hosts(s->rep, p) || replica_content_hash(s->rep, p, &hash, &applied)) continue;
        evbuffer_add_printf(
            b, "%s{\"partition\":%u,\"applied\":%" PRIu64 ",\"hash\":\"%016" PRIx64 "\"}",
            first ? "" : ",", p, applied, hash);
        first = false;
    }
    evbuffer_add_printf(b, "]}\n");
    admin_send(req, 200, "OK", "application/json", b);
}

static const struct {
    const char *path;
    void (*fn)(struct server *, struct evhttp_request *, struct evbuffer *);
} admin_routes[] = {
    {"/health", admin_health},
    {"/metrics", admin_metrics},
    {"/status", admin_status},
    {"/hash", admin_hash},
};

static void admin_dispatch(struct evhttp_request *req, void *arg)
{
    struct server *s = arg;
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        evhttp_send_error(req, 405, "only GET");
    } else {
        size_t i = 0, n = sizeof(admin_routes) / sizeof(admin_routes[0]);
        for (; i < n; i++)
            if (path && strcmp(path, admin_routes[i].path) == 0) break;
        if (i < n)
            admin_routes[i].fn(s, req, b);
        else
            evhttp_send_error(req, 404, "try /health, /metrics, /status or /hash");
    }
    evbuffer_free(b);
    server_kick(s);
}

int admin_start(struct server *s, const char *host_port, struct trine_err *err)
{
    const char *colon = strrchr(host_port, ':');
    if (!colon) return err_set(err, -TRINE_EINVALID, "--http %s: expected HOST:PORT", host_port);
    char host[256];
    size_t hl = (size_t)(colon - host_port);
    if (hl >= sizeof(host)) return err_set(err, -TRINE_EINVALID, "--http: host too long");
    memcpy(host, host_port, hl);
    host[hl] = 0;
    long port = strtol(colon + 1, NULL, 10);
    if (port < 0 || port > 65535)
        return err_set(err, -TRINE_EINVALID, "--http %s: bad port", host_port);
    s->http = evhttp_new(s->base);
    if (!s->http) return err_set(err, -TRINE_ENOMEM, "evhttp_new failed");
    evhttp_set_gencb(s->http, admin_dispatch, s);
    evhttp_set_timeout(s->http, 10);
    evhttp_set_max_body_size(s->http, 4096);
    if (!evhttp_bind_socket_with_handle(s->http, hl ? host : "0.0.0.0", (uint16_t)port))
        return err_set(err, -TRINE_EIO, "--http %s: cannot listen (port in use?)", host_port);
    log_info("server", "admin HTTP on %s (/health /metrics /status /hash)", host_port);
    return 0;
}

void admin_stop(struct server *s)
{
    if (s->http) evhttp_free(s->http);
    s->http = NULL;
}
