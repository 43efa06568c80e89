/*
 * scatter.c - requests that fan out over partitions or members and merge:
 *
 *   scan (partition 0)   one per-partition scan per partition (local or
 *                        forwarded, like any read), merged in key order,
 *                        cut to the limit and to what fits in one frame
 *   cluster status       this node's own row, plus one `local` status request
 *                        per reachable peer; unreachable peers are listed as
 *                        unhealthy with their ring placement
 *
 * Parts complete in any order (some at once, some later); the merge state
 * copies what it keeps, because a part's reply is borrowed. A failed part
 * fails the whole request (a scan never silently skips a partition).
 *
 * Memory: a scan keeps at most what its reply could carry (limit items and one
 * frame of bytes): whenever the kept items pass that, they are sorted and the
 * tail is dropped (the reply then says `more`; the client resumes after its
 * last key). At most SCANS_ACTIVE_MAX scans run at once on a node; more are
 * answered BUSY (the client retries), so a client that pipelines scans without
 * reading the replies cannot make the node hold many frames' worth of items.
 */
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "server/server_int.h"

#define SCAN_DEFAULT_LIMIT  1000u
#define FRAME_SLACK_BYTES   4096u /* headers and msgpack overhead per reply */
#define ITEM_OVERHEAD_BYTES 64u
#define SCANS_ACTIVE_MAX    4u /* scatter scans in progress at once on this node */

struct scan_item {
    size_t key_off, value_off; /* into arena */
    uint32_t key_len, value_len;
    uint64_t version, create_revision, mod_revision, expire_at_ms;
};

struct scatter {
    struct op *parent;
    uint32_t remaining;
    int status;
    char msg[TRINE_ERR_MSG_MAX];
    uint64_t hint;
    /* scan */
    uint32_t limit;
    bool more;
    uint64_t applied_min;
    struct scan_item *items;
    uint32_t n, cap;
    struct buf arena;
    /* status */
    struct codec_member_status *rows;
    uint32_t n_rows;
};

static struct scatter *scatter_new(struct op *parent, uint32_t parts)
{
    struct scatter *sc = calloc(1, sizeof(*sc));
    if (!sc) return NULL;
    sc->parent = parent;
    sc->remaining = parts;
    sc->applied_min = UINT64_MAX;
    buf_init(&sc->arena);
    return sc;
}

static void scatter_free(struct scatter *sc)
{
    buf_free(&sc->arena);
    free(sc->items);
    free(sc->rows);
    free(sc);
}

static void scatter_fail(struct scatter *sc, const struct codec_rep_header *h)
{
    if (sc->status) return; /* keep the first failure */
    sc->status = -(int)h->status;
    if (h->message.len && h->message.data)
        snprintf(sc->msg, sizeof(sc->msg), "%.*s", (int)h->message.len,
                 (const char *)h->message.data);
    sc->hint = h->leader_hint.node_id;
}

static void scatter_reply_error(struct scatter *sc)
{
    struct codec_msg m;
    memset(&m, 0, sizeof(m));
    m.type = route_reply_type(sc->parent->type);
    struct codec_rep_header *h = codec_rep_header(&m);
    op_fill_header(sc->parent, h, sc->status, sc->msg);
    if (sc->hint) {
        h->leader_hint.node_id = sc->hint;
        h->leader_hint.address = codec_bytes_str(server_member_addr(sc->parent->s, sc->hint));
    }
    sc->parent->done(sc->parent, &m);
}

/* ---- scan ------------------------------------------------------------------------ */

static int scan_keep(struct scatter *sc, const struct codec_kv_item *it)
{
    if (sc->n == sc->cap) {
        uint32_t cap = sc->cap ? sc->cap * 2 : 64;
        struct scan_item *p = realloc(sc->items, cap * sizeof(*p));
        if (!p) return -TRINE_ENOMEM;
        sc->items = p;
        sc->cap = cap;
    }
    struct scan_item *d = &sc->items[sc->n];
    d->key_off = sc->arena.len;
    d->key_len = it->key.len;
    if (buf_append(&sc->arena, it->key.data, it->key.len)) return -TRINE_ENOMEM;
    d->value_off = sc->arena.len;
    d->value_len = it->value.len;
    if (buf_append(&sc->arena, it->value.data, it->value.len)) return -TRINE_ENOMEM;
    d->version = it->version;
    d->create_revision = it->create_revision;
    d->mod_revision = it->mod_revision;
    d->expire_at_ms = it->expire_at_ms;
    sc->n++;
    return 0;
}

static const uint8_t *scan_arena; /* for the qsort comparator (single-threaded) */

static int scan_item_cmp(const void *a, const void *b)
{
    const struct scan_item *x = a, *y = b;
    uint32_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(scan_arena + x->key_off, scan_arena + y->key_off, n);
    if (c) return c;
    return (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

/* Bytes of items one scan reply may carry: the frame limit less some slack. */
static uint64_t scan_budget(const struct server *s)
{
    return s->lim.frame_bytes_max > FRAME_SLACK_BYTES ? s->lim.frame_bytes_max - FRAME_SLACK_BYTES
                                                      : 0;
}

/* Sorts the kept items by key; returns how many of the first ones fit in one
 * reply (at most limit, within budget bytes, and at least one). */
static uint32_t scan_sort_fit(struct scatter *sc, uint64_t budget)
{
    scan_arena = sc->arena.data;
    if (sc->n > 1) qsort(sc->items, sc->n, sizeof(*sc->items), scan_item_cmp);
    uint32_t n = sc->n < sc->limit ? sc->n : sc->limit;
    uint64_t used = 0;
    uint32_t fit = 0;
    for (; fit < n; fit++) {
        uint64_t need =
            (uint64_t)sc->items[fit].key_len + sc->items[fit].value_len + ITEM_OVERHEAD_BYTES;
        if (used + need > budget && fit > 0) break;
        used += need;
    }
    return fit;
}

/* Drops the items no reply could carry (see the memory note at the top). */
static int scan_trim(struct scatter *sc, uint64_t budget)
{
    uint32_t keep = scan_sort_fit(sc, budget);
    if (keep == sc->n) return 0;
    struct buf arena;
    buf_init(&arena);
    for (uint32_t i = 0; i < keep; i++) {
        struct scan_item *it = &sc->items[i];
        size_t key_off = arena.len;
        if (buf_append(&arena, sc->arena.data + it->key_off, it->key_len)) goto nomem;
        size_t value_off = arena.len;
        if (buf_append(&arena, sc->arena.data + it->value_off, it->value_len)) goto nomem;
        it->key_off = key_off;
        it->value_off = value_off;
    }
    buf_free(&sc->arena);
    sc->arena = arena;
    sc->n = keep;
    sc->more = true;
    return 0;
nomem:
    buf_free(&arena);
    return -TRINE_ENOMEM;
}

static void scan_finish(struct scatter *sc)
{
    struct op *parent = sc->parent;
    struct server *s = parent->s;
    if (sc->status) {
        s->scans_active--;
        scatter_reply_error(sc);
        scatter_free(sc);
        return;
    }
    s->scans_active--;
    uint32_t n = scan_sort_fit(sc, scan_budget(s));
    bool more = sc->more || n < sc->n;

    struct codec_kv_item *out = n ? calloc(n, sizeof(*out)) : NULL;
    struct codec_msg m;
    memset(&m, 0, sizeof(m));
    m.type = CODEC_MSG_SCAN_REPLY;
    if (n && !out) {
        op_fill_header(parent, &m.scan_reply.hdr, -TRINE_ENOMEM, "scan: out of memory");
    } else {
        for (uint32_t i = 0; i < n; i++) {
            const struct scan_item *it = &sc->items[i];
            out[i] = (struct codec_kv_item){
                .key = {sc->arena.data + it->key_off, it->key_len},
                .value = {sc->arena.data + it->value_off, it->value_len},
                .version = it->version,
                .create_revision = it->create_revision,
                .mod_revision = it->mod_revision,
                .expire_at_ms = it->expire_at_ms,
            };
        }
        op_fill_header(parent, &m.scan_reply.hdr, 0, NULL);
        m.scan_reply.hdr.applied_index = sc->applied_min == UINT64_MAX ? 0 : sc->applied_min;
        m.scan_reply.items = out;
        m.scan_reply.n_items = n;
        m.scan_reply.more = more;
    }
    parent->done(parent, &m);
    free(out);
    scatter_free(sc);
}

static void scan_part_done(struct op *op, const struct codec_msg *reply)
{
    struct scatter *sc = op->parent;
    struct codec_msg m = *reply;
    struct codec_rep_header *h = codec_rep_header(&m);
    if (!h || h->status || m.type != CODEC_MSG_SCAN_REPLY) {
        if (h)
            scatter_fail(sc, h);
        else
            sc->status = -TRINE_EINTERNAL;
    } else {
        for (uint32_t i = 0; i < m.scan_reply.n_items && !sc->status; i++) {
            if (scan_keep(sc, &m.scan_reply.items[i])) {
                sc->status = -TRINE_ENOMEM;
                snprintf(sc->msg, sizeof(sc->msg), "scan: out of memory");
            }
        }
        sc->more |= m.scan_reply.more;
        if (h->applied_index < sc->applied_min) sc->applied_min = h->applied_index;
        uint64_t budget = scan_budget(op->s);
        if (!sc->status && (sc->n > sc->limit || sc->arena.len > budget) && scan_trim(sc, budget)) {
            sc->status = -TRINE_ENOMEM;
            snprintf(sc->msg, sizeof(sc->msg), "scan: out of memory");
        }
    }
    op_free(op);
    if (--sc->remaining == 0) scan_finish(sc);
}

static void scan_refuse(struct op *op, int status, const char *msg)
{
    struct scatter tmp = {.parent = op, .status = status};
    snprintf(tmp.msg, sizeof(tmp.msg), "%s", msg);
    scatter_reply_error(&tmp);
}

void scatter_scan(struct server *s, struct op *op, const struct codec_scan_req *req)
{
    uint32_t np = ring_partitions(s->ring);
    if (s->scans_active >= SCANS_ACTIVE_MAX) {
        scan_refuse(op, -TRINE_EBUSY, "too many scans in progress on this node; retry");
        return;
    }
    /* One extra count, dropped after the loop, keeps sc alive while parts start
     * (some complete at once). */
    struct scatter *sc = scatter_new(op, np + 1);
    if (!sc) {
        scan_refuse(op, -TRINE_ENOMEM, "scan: out of memory");
        return;
    }
    s->scans_active++;
    sc->limit = req->limit ? req->limit : SCAN_DEFAULT_LIMIT;
    if (sc->limit > s->lim.scan_results_max) sc->limit = s->lim.scan_results_max;
    for (uint32_t p = 0; p < np; p++) {
        struct codec_msg part;
        memset(&part, 0, sizeof(part));
        part.type = CODEC_MSG_SCAN_REQ;
        part.scan_req = *req;
        part.scan_req.partition = p + 1;
        part.scan_req.limit = sc->limit;
        struct op *child =
            op_new(s, NULL, op->req_id, CODEC_MSG_SCAN_REQ, op->consistency, false, scan_part_done);
        if (!child) {
            sc->status = -TRINE_ENOMEM;
            snprintf(sc->msg, sizeof(sc->msg), "scan: out of memory");
            sc->remaining--; /* never reaches 0 here: the extra count */
            continue;
        }
        child->parent = sc;
        child->partition = p;
        route_execute(s, child, &part);
    }
    if (--sc->remaining == 0) scan_finish(sc);
}

/* ---- cluster status --------------------------------------------------------------- */

void status_local_row(struct server *s, struct codec_member_status *row)
{
    memset(row, 0, sizeof(*row));
    row->node_id = s->cfg->id;
    /* The address peers and clients dial (--initial-cluster), not --listen, which
     * may be a wildcard such as 0.0.0.0:7001 (containers). */
    row->address = codec_bytes_str(server_member_addr(s, s->cfg->id));
    row->healthy = !s->stopping;
    uint32_t np = ring_partitions(s->ring);
    for (uint32_t p = 0; p < np; p++) {
        struct replica_part_status st;
        if (replica_status(s->rep, p, &st)) continue;
        row->partitions++;
        if (st.role != 3 /* RAFT_LEADER */) continue;
        row->primaries++;
        for (uint32_t i = 0; i < st.n_peers; i++) {
            if (st.peers[i].lag > row->lag) row->lag = st.peers[i].lag;
            if (st.peers[i].lag_ms > row->lag_ms) row->lag_ms = st.peers[i].lag_ms;
        }
    }
}

static uint32_t ring_count(struct server *s, uint32_t member)
{
    uint32_t n = 0, np = ring_partitions(s->ring);
    for (uint32_t p = 0; p < np; p++)
        n += ring_holds(s->ring, p, member) ? 1 : 0;
    return n;
}

static int row_cmp(const void *a, const void *b)
{
    const struct codec_member_status *x = a, *y = b;
    return (x->node_id > y->node_id) - (x->node_id < y->node_id);
}

static void status_finish(struct scatter *sc)
{
    struct op *parent = sc->parent;
    struct server *s = parent->s;
    qsort(sc->rows, sc->n_rows, sizeof(*sc->rows), row_cmp);
    struct codec_msg m;
    memset(&m, 0, sizeof(m));
    m.type = CODEC_MSG_CLUSTER_STATUS_REPLY;
    op_fill_header(parent, &m.cluster_status_reply.hdr, 0, NULL);
    m.cluster_status_reply.epoch = ring_epoch(s->ring);
    m.cluster_status_reply.members = sc->rows;
    m.cluster_status_reply.n_members = sc->n_rows;
    parent->done(parent, &m);
    scatter_free(sc);
}

static struct codec_member_status *status_row(struct scatter *sc, uint64_t id)
{
    for (uint32_t i = 0; i < sc->n_rows; i++)
        if (sc->rows[i].node_id == id) return &sc->rows[i];
    return NULL;
}

static void status_part_done(struct op *op, const struct codec_msg *reply)
{
    struct scatter *sc = op->parent;
    struct codec_member_status *row = status_row(sc, op->partition);
    if (row && reply->type == CODEC_MSG_CLUSTER_STATUS_REPLY &&
        reply->cluster_status_reply.hdr.status == 0 && reply->cluster_status_reply.n_members == 1) {
        const struct codec_member_status *r = &reply->cluster_status_reply.members[0];
        row->healthy = r->healthy;
        row->partitions = r->partitions;
        row->primaries = r->primaries;
        row->lag = r->lag;
        row->lag_ms = r->lag_ms;
    }
    op_free(op);
    if (--sc->remaining == 0) status_finish(sc);
}

void scatter_status(struct server *s, struct op *op)
{
    size_t nm = s->cfg->nmembers;
    struct scatter *sc = scatter_new(op, 1);
    if (sc) sc->rows = calloc(nm, sizeof(*sc->rows));
    if (!sc || !sc->rows) {
        if (sc) scatter_free(sc);
        struct codec_rep_header h = {.status = TRINE_ENOMEM};
        struct scatter tmp = {.parent = op};
        scatter_fail(&tmp, &h);
        scatter_reply_error(&tmp);
        return;
    }
    for (size_t i = 0; i < nm; i++) {
        uint32_t id = s->cfg->members[i].id;
        struct codec_member_status *row = &sc->rows[sc->n_rows++];
        if (id == s->cfg->id) {
            status_local_row(s, row);
            continue;
        }
        *row = (struct codec_member_status){.node_id = id,
                                            .address = codec_bytes_str(s->cfg->members[i].addr),
                                            .partitions = ring_count(s, id)};
        if (!transport_peer_is_up(s->t, id)) continue;
        struct codec_msg req;
        memset(&req, 0, sizeof(req));
        req.type = CODEC_MSG_CLUSTER_STATUS_REQ;
        req.cluster_status_req.local = true;
        req.cluster_status_req.hdr.timeout_ms = 1000;
        struct op *child = op_new(s, NULL, op->req_id, CODEC_MSG_CLUSTER_STATUS_REQ,
                                  op->consistency, false, status_part_done);
        if (!child) continue;
        child->parent = sc;
        child->partition = id; /* which row */
        sc->remaining++;
        if (fwd_send(s, child, id, UINT32_MAX, &req)) {
            sc->remaining--;
            op_free(child);
        }
    }
    /* The initial count of 1 kept the merge from finishing while parts were sent. */
    if (--sc->remaining == 0) status_finish(sc);
}
