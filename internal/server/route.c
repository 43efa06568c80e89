/*
 * route.c - the coordinator: every client request is decoded here, checked
 * against the configured limits, and either served by this node's replica or
 * forwarded to the node that can serve it (forward.c). Handlers are one table
 * indexed by request type.
 *
 * Routing rules (docs/architecture.md "Coordinator"):
 *   writes           the partition's primary; forwarded there if this node is
 *                    not it (leader known here, else the last hint seen, else the
 *                    preferred primary from the ring)
 *   fast reads       any replica: this node if it holds the partition, else the
 *                    preferred primary
 *   strong reads     this node if it holds the partition (ReadIndex works on a
 *                    follower), else as writes
 *   scans            partition 0 means all: fanned out per partition and merged
 *                    (scatter.c); a per-partition scan is served like a read
 * A request that came from another node is never forwarded again: it is
 * answered (NOT_LEADER with a hint) and the first node retries, so a request
 * makes at most a bounded number of hops.
 */
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "base/clock.h"
#include "base/log.h"
#include "server/server_int.h"

/* ---- ops ------------------------------------------------------------------------------ */

struct op *op_new(struct server *s, struct conn_state *cs, uint64_t req_id, uint8_t type,
                  uint8_t consistency, bool from_node, op_done_fn done)
{
    struct op *op = calloc(1, sizeof(*op));
    if (!op) return NULL;
    op->s = s;
    op->cs = cs;
    op->req_id = req_id;
    op->type = type;
    op->consistency = consistency <= CODEC_CONSISTENCY_ALL ? consistency : CODEC_CONSISTENCY_STRONG;
    op->from_node = from_node;
    op->start_ns = clock_mono_ns();
    op->done = done;
    if (cs) {
        op->next = cs->ops;
        if (cs->ops) cs->ops->prev = op;
        cs->ops = op;
    }
    return op;
}

void op_free(struct op *op)
{
    if (op->cs) {
        if (op->prev)
            op->prev->next = op->next;
        else
            op->cs->ops = op->next;
        if (op->next) op->next->prev = op->prev;
    }
    free(op);
}

static int wire_code(int status)
{
    if (status == 0) return 0;
    return status_is_wire(status) ? -status : TRINE_EINTERNAL;
}

void op_account(struct op *op, int status)
{
    struct server *s = op->s;
    unsigned idx = op->type >= CODEC_MSG_PUT_REQ && op->type <= CODEC_MSG_PARTITION_MAP_REQ
                       ? (unsigned)(op->type - CODEC_MSG_PUT_REQ)
                       : 0;
    if (op->parent) return; /* parts of a scatter are counted once, as the whole */
    metric_inc(s->m.requests[idx][op->consistency]);
    metric_observe(s->m.latency[idx][op->consistency],
                   (double)(clock_mono_ns() - op->start_ns) / 1e9);
    int code = wire_code(status);
    if (code > 0 && code < 64 && s->m.errors[code]) metric_inc(s->m.errors[code]);
}

void op_fill_header(struct op *op, struct codec_rep_header *h, int status, const char *msg)
{
    memset(h, 0, sizeof(*h));
    h->req_id = op->req_id;
    h->status = (uint16_t)wire_code(status);
    if (status && !status_is_wire(status)) {
        static char buf[TRINE_ERR_MSG_MAX + 32];
        snprintf(buf, sizeof(buf), "%s: %s", status_name(status), msg ? msg : "");
        msg = buf;
    }
    h->message = codec_bytes_str(msg ? msg : "");
    h->served_by = op->s->cfg->id;
    h->consistency = op->consistency;
}

/* Sends reply (its header's req_id already op->req_id) on op's connection. */
void op_send_reply(struct op *op, const struct codec_msg *reply)
{
    struct server *s = op->s;
    const struct codec_rep_header *h = codec_rep_header((struct codec_msg *)reply);
    op_account(op, h ? -(int)h->status : 0);
    if (op->cs) {
        struct trine_err err = {0};
        buf_reset(&s->out);
        int rc = codec_encode(&s->out, reply, &s->lim, &err);
        if (rc == 0) {
            rc = transport_conn_send(op->cs->conn, s->out.data + CODEC_FRAME_HEADER_BYTES,
                                     s->out.len - CODEC_FRAME_HEADER_BYTES);
            if (rc == -TRINE_EBUSY) {
                log_warn("server", "closing %s: it does not read its replies",
                         transport_conn_addr(op->cs->conn));
                struct conn_state *cs = op->cs;
                transport_conn_close(cs->conn); /* no on_close follows */
                conn_state_free(s, cs);         /* detaches op too */
            }
        } else {
            log_error("server", "cannot encode a %s: %s", codec_msg_name(reply->type), err.msg);
        }
    }
    op_free(op);
}

uint8_t route_reply_type(uint8_t req_type)
{
    return (uint8_t)(req_type + (CODEC_MSG_PUT_REPLY - CODEC_MSG_PUT_REQ));
}

/* Replies with only a header: an error, or a success without a body. */
static void op_reply_status(struct op *op, int status, const char *msg, uint64_t hint)
{
    struct codec_msg m;
    memset(&m, 0, sizeof(m));
    m.type = route_reply_type(op->type);
    struct codec_rep_header *h = codec_rep_header(&m);
    if (!h) {
        m.type = CODEC_MSG_ERROR_REPLY;
        h = &m.error_reply.hdr;
    }
    op_fill_header(op, h, status, msg);
    if (hint) {
        h->leader_hint.node_id = hint;
        h->leader_hint.address = codec_bytes_str(server_member_addr(op->s, hint));
    }
    op->done(op, &m);
}

void route_reply_error(struct server *s, struct conn_state *cs, uint64_t req_id, int rc,
                       const char *msg)
{
    struct op *op = op_new(s, cs, req_id, 0, CODEC_CONSISTENCY_STRONG, false, op_send_reply);
    if (!op) return;
    op_reply_status(op, rc, msg, 0);
}

/* ---- replica results -> replies ------------------------------------------------------ */

static void reply_from_result(void *arg, const struct replica_result *res)
{
    struct op *op = arg;
    struct server *s = op->s;
    struct codec_msg m;
    memset(&m, 0, sizeof(m));
    m.type = route_reply_type(op->type);
    struct codec_rep_header *h = codec_rep_header(&m);
    TRINE_ASSERT(h);
    uint8_t asked = op->consistency;
    op->consistency = res->consistency <= CODEC_CONSISTENCY_ALL ? res->consistency : asked;
    op_fill_header(op, h, res->status, res->message);
    h->revision = res->revision;
    h->applied_index = res->applied_index;
    h->served_by = res->served_by ? res->served_by : s->cfg->id;
    h->acks = res->acks;
    if (res->leader_hint) {
        h->leader_hint.node_id = res->leader_hint;
        h->leader_hint.address = codec_bytes_str(server_member_addr(s, res->leader_hint));
    }
    struct codec_kv_item *items = NULL;
    switch (m.type) {
    case CODEC_MSG_PUT_REPLY:
        m.put_reply.version = res->version;
        break;
    case CODEC_MSG_CAS_REPLY:
        m.cas_reply.version = res->version;
        break;
    case CODEC_MSG_GET_REPLY:
        m.get_reply.value = (struct codec_bytes){res->value, res->value_len};
        m.get_reply.version = res->version;
        m.get_reply.create_revision = res->create_revision;
        m.get_reply.mod_revision = res->mod_revision;
        m.get_reply.expire_at_ms = res->expire_at_ms;
        break;
    case CODEC_MSG_SCAN_REPLY:
        if (res->n_items) {
            items = calloc(res->n_items, sizeof(*items));
            if (!items) {
                op_fill_header(op, h, -TRINE_ENOMEM, "scan: out of memory");
                break;
            }
            for (uint32_t i = 0; i < res->n_items; i++) {
                const struct replica_kv *kv = &res->items[i];
                items[i] = (struct codec_kv_item){
                    .key = {kv->key, kv->key_len},
                    .value = {kv->value, kv->value_len},
                    .version = kv->version,
                    .create_revision = kv->create_revision,
                    .mod_revision = kv->mod_revision,
                    .expire_at_ms = kv->expire_at_ms,
                };
            }
            m.scan_reply.items = items;
            m.scan_reply.n_items = res->n_items;
        }
        m.scan_reply.more = res->more;
        break;
    default:
        break;
    }
    op->done(op, &m);
    free(items);
}

/* Runs a replica call that may answer now or later. */
typedef int (*replica_call_fn)(struct replica *, const void *, replica_done_fn, void *,
                               struct replica_result *);

static void run_local(struct op *op, int rc, const struct replica_result *res)
{
    if (rc == REPLICA_NOW) reply_from_result(op, res);
}

/* ---- routing ------------------------------------------------------------------------- */

/* The node to send a partition's leader-bound request to (never 0). */
static uint32_t route_leader_guess(struct server *s, uint32_t p)
{
    uint64_t l = replica_leader(s->rep, p);
    if (l) return (uint32_t)l;
    if (s->leader_cache[p]) return s->leader_cache[p];
    size_t n;
    return ring_replicas(s->ring, p, &n)[0];
}

/* Forwards op's request to target, or answers with an error if that fails. */
static void route_forward(struct server *s, struct op *op, uint32_t target, uint32_t p,
                          const struct codec_msg *req)
{
    if (op->from_node) {
        /* Forwarded to us already: tell the first node where to go instead. */
        op_reply_status(op, -TRINE_ENOT_LEADER, "this node does not lead the partition", target);
        return;
    }
    if (!transport_peer_is_up(s->t, target)) {
        /* Its frames would wait in the transport until it is back (forward.c). Nothing
         * was sent: the client backs off and retries, by then at a new primary. */
        char msg[128];
        snprintf(msg, sizeof(msg), "node %u, the primary of partition %u as last known, is down",
                 target, p);
        op_reply_status(op, -TRINE_EUNAVAILABLE, msg, 0);
        return;
    }
    int rc = fwd_send(s, op, target, p, req);
    if (rc) {
        char msg[128];
        snprintf(msg, sizeof(msg), "cannot reach node %u, the primary of partition %u", target, p);
        op_reply_status(op, rc == -TRINE_EBUSY ? -TRINE_EBUSY : -TRINE_EUNAVAILABLE, msg, target);
    }
}

static int check_key(struct server *s, struct op *op, struct codec_bytes key, bool allow_empty)
{
    if (key.len == 0 && !allow_empty) {
        op_reply_status(op, -TRINE_EBAD_REQUEST, "the key is empty", 0);
        return -1;
    }
    if (key.len > s->cfg->max_key_bytes) {
        char msg[96];
        snprintf(msg, sizeof(msg), "key of %u bytes exceeds --max-key %llu", key.len,
                 (unsigned long long)s->cfg->max_key_bytes);
        op_reply_status(op, -TRINE_ETOO_LARGE, msg, 0);
        return -1;
    }
    return 0;
}

static int check_value(struct server *s, struct op *op, struct codec_bytes v)
{
    if (v.len > s->cfg->max_value_bytes) {
        char msg[96];
        snprintf(msg, sizeof(msg), "value of %u bytes exceeds --max-value %llu", v.len,
                 (unsigned long long)s->cfg->max_value_bytes);
        op_reply_status(op, -TRINE_ETOO_LARGE, msg, 0);
        return -1;
    }
    return 0;
}

static void route_write(struct server *s, struct op *op, const struct codec_msg *req,
                        const struct codec_req_header *hdr, struct replica_write *w,
                        struct codec_bytes key)
{
    uint32_t p = ring_partition_of_key(s->ring, key.data, key.len);
    w->partition = p;
    w->key = key.data;
    w->key_len = key.len;
    w->consistency = op->consistency;
    w->client_id = hdr->client_id;
    w->seq = hdr->seq;
    w->timeout_ms = hdr->timeout_ms;
    uint32_t target = route_leader_guess(s, p);
    if (replica_hosts(s->rep, p) && (target == s->cfg->id || op->from_node)) {
        struct replica_result res;
        run_local(op, replica_write(s->rep, w, reply_from_result, op, &res), &res);
        return;
    }
    route_forward(s, op, target, p, req);
}

static void h_put(struct server *s, struct op *op, const struct codec_msg *req)
{
    const struct codec_put_req *r = &req->put_req;
    if (check_key(s, op, r->key, false) || check_value(s, op, r->value)) return;
    struct replica_write w = {
        .op = REPLICA_PUT, .value = r->value.data, .value_len = r->value.len, .ttl_ms = r->ttl_ms};
    route_write(s, op, req, &r->hdr, &w, r->key);
}

static void h_delete(struct server *s, struct op *op, const struct codec_msg *req)
{
    const struct codec_delete_req *r = &req->delete_req;
    if (check_key(s, op, r->key, false)) return;
    struct replica_write w = {.op = REPLICA_DELETE};
    route_write(s, op, req, &r->hdr, &w, r->key);
}

static void h_cas(struct server *s, struct op *op, const struct codec_msg *req)
{
    const struct codec_cas_req *r = &req->cas_req;
    if (check_key(s, op, r->key, false) || check_value(s, op, r->value)) return;
    struct replica_write w = {.op = REPLICA_CAS,
                              .value = r->value.data,
                              .value_len = r->value.len,
                              .ttl_ms = r->ttl_ms,
                              .expected_version = r->expected_version};
    route_write(s, op, req, &r->hdr, &w, r->key);
}

/* Reads: local when this node holds the partition, else the primary (or, for fast
 * reads, the preferred primary, which is the likeliest to be current). */
static void route_read(struct server *s, struct op *op, const struct codec_msg *req, uint32_t p,
                       struct replica_read *rd, bool scan)
{
    rd->partition = p;
    rd->consistency = op->consistency;
    if (replica_hosts(s->rep, p)) {
        struct replica_result res;
        int rc = scan ? replica_scan(s->rep, rd, reply_from_result, op, &res)
                      : replica_get(s->rep, rd, reply_from_result, op, &res);
        run_local(op, rc, &res);
        return;
    }
    route_forward(s, op, route_leader_guess(s, p), p, req);
}

static void h_get(struct server *s, struct op *op, const struct codec_msg *req)
{
    const struct codec_get_req *r = &req->get_req;
    if (check_key(s, op, r->key, false)) return;
    struct replica_read rd = {.key = r->key.data,
                              .key_len = r->key.len,
                              .min_revision = r->min_revision,
                              .timeout_ms = r->hdr.timeout_ms};
    route_read(s, op, req, ring_partition_of_key(s->ring, r->key.data, r->key.len), &rd, false);
}

static void h_scan(struct server *s, struct op *op, const struct codec_msg *req)
{
    const struct codec_scan_req *r = &req->scan_req;
    if (check_key(s, op, r->prefix, true) || check_key(s, op, r->start_after, true)) return;
    if (r->partition == 0) {
        scatter_scan(s, op, r);
        return;
    }
    if (r->partition > ring_partitions(s->ring)) {
        op_reply_status(op, -TRINE_EBAD_REQUEST, "no such partition", 0);
        return;
    }
    struct replica_read rd = {.prefix = r->prefix.data,
                              .prefix_len = r->prefix.len,
                              .start_after = r->start_after.data,
                              .start_after_len = r->start_after.len,
                              .limit = r->limit,
                              .min_revision = r->min_revision,
                              .timeout_ms = r->hdr.timeout_ms};
    route_read(s, op, req, r->partition - 1, &rd, true);
}

static void h_status(struct server *s, struct op *op, const struct codec_msg *req)
{
    if (req->cluster_status_req.local) {
        struct codec_member_status row;
        status_local_row(s, &row);
        struct codec_msg m;
        memset(&m, 0, sizeof(m));
        m.type = CODEC_MSG_CLUSTER_STATUS_REPLY;
        op_fill_header(op, &m.cluster_status_reply.hdr, 0, NULL);
        m.cluster_status_reply.epoch = ring_epoch(s->ring);
        m.cluster_status_reply.members = &row;
        m.cluster_status_reply.n_members = 1;
        op->done(op, &m);
        return;
    }
    scatter_status(s, op);
}

static void h_map(struct server *s, struct op *op, const struct codec_msg *req)
{
    (void)req;
    uint32_t np = ring_partitions(s->ring);
    struct codec_partition_info *parts = calloc(np, sizeof(*parts));
    uint64_t *ids = calloc((size_t)np * RING_REPLICAS_MAX, sizeof(*ids));
    struct codec_member_addr *mem = calloc(s->cfg->nmembers, sizeof(*mem));
    if (!parts || !ids || !mem) {
        free(parts);
        free(ids);
        free(mem);
        op_reply_status(op, -TRINE_ENOMEM, "partition map: out of memory", 0);
        return;
    }
    for (uint32_t p = 0; p < np; p++) {
        size_t n;
        const uint32_t *set = ring_replicas(s->ring, p, &n);
        for (size_t i = 0; i < n; i++)
            ids[(size_t)p * RING_REPLICAS_MAX + i] = set[i];
        parts[p].partition = p;
        parts[p].replicas = &ids[(size_t)p * RING_REPLICAS_MAX];
        parts[p].n_replicas = (uint32_t)n;
        uint64_t l = replica_leader(s->rep, p);
        parts[p].leader = l ? l : s->leader_cache[p];
    }
    for (size_t i = 0; i < s->cfg->nmembers; i++) {
        mem[i].node_id = s->cfg->members[i].id;
        mem[i].address = codec_bytes_str(s->cfg->members[i].addr);
    }
    struct codec_msg m;
    memset(&m, 0, sizeof(m));
    m.type = CODEC_MSG_PARTITION_MAP_REPLY;
    op_fill_header(op, &m.partition_map_reply.hdr, 0, NULL);
    m.partition_map_reply.epoch = ring_epoch(s->ring);
    m.partition_map_reply.partition_count = np;
    m.partition_map_reply.partitions = parts;
    m.partition_map_reply.n_partitions = np;
    m.partition_map_reply.members = mem;
    m.partition_map_reply.n_members = (uint32_t)s->cfg->nmembers;
    op->done(op, &m);
    free(parts);
    free(ids);
    free(mem);
}

typedef void (*route_handler_fn)(struct server *, struct op *, const struct codec_msg *);

static const route_handler_fn route_handlers[] = {
    [CODEC_MSG_PUT_REQ] = h_put,           [CODEC_MSG_GET_REQ] = h_get,
    [CODEC_MSG_DELETE_REQ] = h_delete,     [CODEC_MSG_CAS_REQ] = h_cas,
    [CODEC_MSG_SCAN_REQ] = h_scan,         [CODEC_MSG_CLUSTER_STATUS_REQ] = h_status,
    [CODEC_MSG_PARTITION_MAP_REQ] = h_map,
};

void route_execute(struct server *s, struct op *op, const struct codec_msg *req)
{
    route_handlers[req->type](s, op, req);
}

void route_frame(struct server *s, struct conn_state *cs, bool from_node, const uint8_t *body,
                 size_t len)
{
    struct codec_msg req;
    struct trine_err err = {0};
    int rc = codec_decode(body, len, &s->lim, s->scratch, &req, &err);
    if (rc) {
        metric_inc(s->m.bad_frames);
        log_warn("server", "bad request from %s: %s", cs ? transport_conn_addr(cs->conn) : "?",
                 err.msg);
        route_reply_error(s, cs, 0, rc, err.msg);
        return;
    }
    const struct codec_req_header *hdr = codec_req_header(&req);
    if (!hdr || req.type >= sizeof(route_handlers) / sizeof(route_handlers[0]) ||
        !route_handlers[req.type]) {
        char msg[96];
        snprintf(msg, sizeof(msg), "a %s is not a request", codec_msg_name(req.type));
        route_reply_error(s, cs, 0, -TRINE_EUNSUPPORTED, msg);
        return;
    }
    struct op *op =
        op_new(s, cs, hdr->req_id, req.type, hdr->consistency, from_node, op_send_reply);
    if (!op) {
        route_reply_error(s, cs, hdr->req_id, -TRINE_EBUSY, "server out of memory");
        return;
    }
    if (s->stopping && req.type != CODEC_MSG_CLUSTER_STATUS_REQ) {
        op_reply_status(op, -TRINE_EUNAVAILABLE, "node is shutting down", 0);
        return;
    }
    route_execute(s, op, &req);
}

int route_peek_type(const uint8_t *body, size_t len)
{
    size_t i;
    if (len < 2) return -1;
    if ((body[0] & 0xf0) == 0x90)
        i = 1;
    else if (body[0] == 0xdc)
        i = 3;
    else if (body[0] == 0xdd)
        i = 5;
    else
        return -1;
    if (i >= len) return -1;
    uint8_t b = body[i];
    if (b <= 0x7f) return b;
    /* uint8..uint64 / int8..int64 with a value that fits a type id */
    static const uint8_t widths[] = {[0xcc - 0xcc] = 1, [0xcd - 0xcc] = 2, [0xce - 0xcc] = 4,
                                     [0xcf - 0xcc] = 8, [0xd0 - 0xcc] = 1, [0xd1 - 0xcc] = 2,
                                     [0xd2 - 0xcc] = 4, [0xd3 - 0xcc] = 8};
    if (b < 0xcc || b > 0xd3) return -1;
    size_t w = widths[b - 0xcc];
    if (i + w >= len) return -1;
    uint64_t v = 0;
    for (size_t k = 1; k <= w; k++)
        v = v << 8 | body[i + k];
    if (b >= 0xd0 && (body[i + 1] & 0x80)) return -1; /* negative */
    return v <= 255 ? (int)v : -1;
}
