/*
 * net.c - Raft messages to and from proto frames.
 *
 * Outbound: every message of a round is converted to a codec_raft_msg whose
 * entry data is copied into the round's arena (update pointers die at the
 * next call on that raft), grouped by destination node; at the end of the
 * round each node's messages become one raft_batch frame (several if over the
 * batch count or half the frame limit). Frames wait in the round until its
 * fsync (round.c). RAFT_MSG_SNAPSHOT never travels as a raft_msg: it starts a
 * snapshot_chunk stream (snap.c) whose last chunk the receiver turns back
 * into a RAFT_MSG_SNAPSHOT carrying the metadata of the data it received.
 *
 * Mappings (tables below): raft.h's message types <-> proto's raft_msg_type;
 * entry types: RAFT_ENTRY_NORMAL <-> normal, RAFT_ENTRY_NOOP <-> normal with
 * empty data (a command is never empty), RAFT_ENTRY_CONF <-> conf_change whose
 * data is raft_conf_encode() bytes. Entry flags are local and never sent.
 *
 * Inbound: frames are decoded with the codec's bounds into a scratch; a
 * message whose `from` is not the connection's peer is malformed; one for
 * another node or a partition not hosted here is ignored and counted.
 * Leaders also read successful append responses to learn each follower's
 * durable match index (for `all` writes) - raft.h has no query for it.
 */
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "metrics/metrics.h"
#include "replica/replica_int.h"

#define BATCH_MSGS_MAX 4096

static const uint8_t to_codec[RAFT_MSG_TYPE_MAX + 1] = {
    [RAFT_MSG_APPEND] = CODEC_RAFT_MSG_TYPE_APPEND,
    [RAFT_MSG_APPEND_RESP] = CODEC_RAFT_MSG_TYPE_APPEND_RESP,
    [RAFT_MSG_VOTE] = CODEC_RAFT_MSG_TYPE_VOTE,
    [RAFT_MSG_VOTE_RESP] = CODEC_RAFT_MSG_TYPE_VOTE_RESP,
    [RAFT_MSG_PREVOTE] = CODEC_RAFT_MSG_TYPE_PREVOTE,
    [RAFT_MSG_PREVOTE_RESP] = CODEC_RAFT_MSG_TYPE_PREVOTE_RESP,
    [RAFT_MSG_HEARTBEAT] = CODEC_RAFT_MSG_TYPE_HEARTBEAT,
    [RAFT_MSG_HEARTBEAT_RESP] = CODEC_RAFT_MSG_TYPE_HEARTBEAT_RESP,
    [RAFT_MSG_SNAPSHOT] = CODEC_RAFT_MSG_TYPE_SNAPSHOT,
    [RAFT_MSG_TIMEOUT_NOW] = CODEC_RAFT_MSG_TYPE_TIMEOUT_NOW,
    [RAFT_MSG_READ_INDEX] = CODEC_RAFT_MSG_TYPE_READ_INDEX,
    [RAFT_MSG_READ_INDEX_RESP] = CODEC_RAFT_MSG_TYPE_READ_INDEX_RESP,
};

static const uint8_t from_codec[] = {
    [CODEC_RAFT_MSG_TYPE_VOTE] = RAFT_MSG_VOTE,
    [CODEC_RAFT_MSG_TYPE_PREVOTE] = RAFT_MSG_PREVOTE,
    [CODEC_RAFT_MSG_TYPE_VOTE_RESP] = RAFT_MSG_VOTE_RESP,
    [CODEC_RAFT_MSG_TYPE_PREVOTE_RESP] = RAFT_MSG_PREVOTE_RESP,
    [CODEC_RAFT_MSG_TYPE_APPEND] = RAFT_MSG_APPEND,
    [CODEC_RAFT_MSG_TYPE_APPEND_RESP] = RAFT_MSG_APPEND_RESP,
    [CODEC_RAFT_MSG_TYPE_HEARTBEAT] = RAFT_MSG_HEARTBEAT,
    [CODEC_RAFT_MSG_TYPE_HEARTBEAT_RESP] = RAFT_MSG_HEARTBEAT_RESP,
    [CODEC_RAFT_MSG_TYPE_TIMEOUT_NOW] = RAFT_MSG_TIMEOUT_NOW,
    [CODEC_RAFT_MSG_TYPE_READ_INDEX] = RAFT_MSG_READ_INDEX,
    [CODEC_RAFT_MSG_TYPE_READ_INDEX_RESP] = RAFT_MSG_READ_INDEX_RESP,
    [CODEC_RAFT_MSG_TYPE_SNAPSHOT] = 0, /* only through snapshot_chunk */
};

/* ---- outbound ------------------------------------------------------------------------- */

static struct peer_out *peer_out(struct replica *r, uint64_t to, bool now)
{
    struct peer_outs *set = &r->outs[now ? OUT_NOW : OUT_HELD];
    for (uint32_t i = 0; i < set->n; i++)
        if (set->v[i].to == to) return &set->v[i];
    if (set->n == set->cap) {
        uint32_t cap = set->cap ? set->cap * 2 : 8;
        struct peer_out *n = realloc(set->v, cap * sizeof(*n));
        if (!n) return NULL;
        set->v = n;
        set->cap = cap;
    }
    struct peer_out *po = &set->v[set->n++];
    memset(po, 0, sizeof(*po));
    po->to = to;
    return po;
}

static int flush_peer(struct replica *r, struct peer_out *po, bool now)
{
    if (po->n == 0) return 0;
    struct codec_msg m = {.type = CODEC_MSG_RAFT_BATCH};
    m.raft_batch.msgs = po->msgs;
    m.raft_batch.n_msgs = po->n;
    struct buf frame;
    buf_init(&frame);
    struct trine_err err = {0};
    int rc = codec_encode(&frame, &m, &r->lim, &err);
    if (rc == 0 && now) {
        if (r->cfg.send) (void)r->cfg.send(r->cfg.cb_ctx, po->to, frame.data, frame.len);
    } else if (rc == 0) {
        rc = round_add_frame(r, po->to, &frame);
    } else {
        /* Raft retries what is lost; never fail the round for one peer. */
        log_warn("replica", "dropping %u raft messages to node %llu: %s", po->n,
                 (unsigned long long)po->to, err.msg);
        rc = 0;
    }
    buf_free(&frame);
    po->n = 0;
    po->bytes = 0;
    return rc;
}

int net_queue_msg(struct replica *r, struct group *g, const struct raft_msg *m, bool now)
{
    if (m->type == 0 || m->type > RAFT_MSG_TYPE_MAX) return 0;
    struct peer_out *po = peer_out(r, m->to, now);
    if (!po) return -TRINE_ENOMEM;
    if (po->n == po->cap) {
        uint32_t cap = po->cap ? po->cap * 2 : 16;
        struct codec_raft_msg *n = realloc(po->msgs, cap * sizeof(*n));
        if (!n) return -TRINE_ENOMEM;
        po->msgs = n;
        po->cap = cap;
    }
    struct codec_raft_msg *c = &po->msgs[po->n];
    memset(c, 0, sizeof(*c));
    c->partition = g->partition;
    c->type = to_codec[m->type];
    c->from = m->from;
    c->to = m->to;
    c->term = m->term;
    c->log_term = m->log_term;
    c->index = m->index;
    c->commit = m->commit;
    c->reject = m->reject;
    c->reject_hint = m->reject_hint;
    c->conflict_term = m->conflict_term;
    c->context = m->context;
    uint64_t bytes = 96;
    if (m->n_entries) {
        c->entries = arena_alloc(&r->arena, m->n_entries * sizeof(*c->entries));
        if (!c->entries) return -TRINE_ENOMEM;
        for (uint32_t k = 0; k < m->n_entries; k++) {
            const struct raft_entry *e = &m->entries[k];
            struct codec_entry *ce = &c->entries[k];
            ce->term = e->term;
            ce->index = e->index;
            ce->type =
                e->type == RAFT_ENTRY_CONF ? CODEC_ENTRY_TYPE_CONF_CHANGE : CODEC_ENTRY_TYPE_NORMAL;
            uint32_t len = e->type == RAFT_ENTRY_NOOP ? 0 : e->len;
            ce->data.len = len;
            ce->data.data = len ? arena_copy(&r->arena, e->data, len) : NULL;
            if (len && !ce->data.data) return -TRINE_ENOMEM;
            bytes += len + 32;
        }
        c->n_entries = m->n_entries;
    }
    po->n++;
    po->bytes += bytes;
    if (po->n >= BATCH_MSGS_MAX || po->bytes > r->lim.frame_bytes_max / 2)
        return flush_peer(r, po, now);
    return 0;
}

int net_flush_outs(struct replica *r)
{
    for (uint32_t i = 0; i < r->outs[OUT_NOW].n; i++)
        (void)flush_peer(r, &r->outs[OUT_NOW].v[i], true);
    for (uint32_t i = 0; i < r->outs[OUT_HELD].n; i++) {
        int rc = flush_peer(r, &r->outs[OUT_HELD].v[i], false);
        if (rc < 0) return rc;
    }
    return 0;
}

int net_send_frame(struct replica *r, uint64_t to, const struct codec_msg *m)
{
    struct buf frame;
    buf_init(&frame);
    struct trine_err err = {0};
    int rc = codec_encode(&frame, m, &r->lim, &err);
    if (rc == 0 && r->cfg.send) rc = r->cfg.send(r->cfg.cb_ctx, to, frame.data, frame.len);
    buf_free(&frame);
    return rc;
}

/* ---- inbound -------------------------------------------------------------------------- */

static int recv_raft(struct replica *r, uint64_t from_node, const struct codec_raft_msg *cm)
{
    if (cm->from != from_node) return -TRINE_EBAD_REQUEST;
    struct group *g = rep_group(r, cm->partition);
    struct peer *p = g ? group_peer(g, cm->from) : NULL;
    if (cm->to != r->cfg.node_id || !g || !p || cm->type >= sizeof(from_codec) ||
        from_codec[cm->type] == 0) {
        r->stats.ignored_msgs++;
        if (r->m_ignored) metric_inc(r->m_ignored);
        return 0;
    }
    if (cm->n_entries > r->cap_in_ents) {
        struct raft_entry *n = realloc(r->in_ents, cm->n_entries * sizeof(*n));
        if (!n) return -TRINE_ENOMEM;
        r->in_ents = n;
        r->cap_in_ents = cm->n_entries;
    }
    for (uint32_t k = 0; k < cm->n_entries; k++) {
        const struct codec_entry *ce = &cm->entries[k];
        struct raft_entry *e = &r->in_ents[k];
        e->term = ce->term;
        e->index = ce->index;
        e->data = ce->data.data;
        e->len = ce->data.len;
        e->flags = 0;
        if (ce->type == CODEC_ENTRY_TYPE_CONF_CHANGE)
            e->type = RAFT_ENTRY_CONF;
        else
            e->type = ce->data.len == 0 ? RAFT_ENTRY_NOOP : RAFT_ENTRY_NORMAL;
    }
    struct raft_msg m = {
        .type = from_codec[cm->type],
        .reject = cm->reject,
        .from = cm->from,
        .to = cm->to,
        .term = cm->term,
        .log_term = cm->log_term,
        .index = cm->index,
        .commit = cm->commit,
        .reject_hint = cm->reject_hint,
        .conflict_term = cm->conflict_term,
        .context = cm->context,
        .entries = cm->n_entries ? r->in_ents : NULL,
        .n_entries = cm->n_entries,
    };
    uint64_t now = rep_now_ms(r);
    p->heard_ms = now;
    if (m.type == RAFT_MSG_APPEND_RESP && !m.reject && g->role == RAFT_LEADER &&
        m.term == g->term && m.index > p->match && m.index <= g->log.last)
        p->match = m.index;
    int rc = raft_recv(g->raft, now, &m);
    return rc == -TRINE_EBAD_REQUEST ? rc : 0;
}

int replica_recv_frame(struct replica *r, uint64_t from_node, const uint8_t *body, size_t len)
{
    struct codec_msg m;
    struct trine_err err = {0};
    int rc = codec_decode(body, len, &r->lim, r->scratch, &m, &err);
    int bad = 0;
    r->dirty = true;
    if (rc == 0) {
        switch (m.type) {
        case CODEC_MSG_RAFT_BATCH:
            for (uint32_t i = 0; i < m.raft_batch.n_msgs; i++) {
                int rc2 = recv_raft(r, from_node, &m.raft_batch.msgs[i]);
                if (rc2 < 0 && !bad) bad = rc2;
            }
            break;
        case CODEC_MSG_RAFT_MSG:
            bad = recv_raft(r, from_node, &m.raft_msg);
            break;
        case CODEC_MSG_SNAPSHOT_CHUNK: {
            const struct codec_snapshot_chunk *c = &m.snapshot_chunk;
            struct group *g = rep_group(r, c->partition);
            if (c->from != from_node)
                bad = -TRINE_EBAD_REQUEST;
            else if (!g || c->to != r->cfg.node_id || !group_peer(g, c->from))
                r->stats.ignored_msgs++;
            else
                bad = snap_on_chunk(r, g, c);
            break;
        }
        case CODEC_MSG_SNAPSHOT_ACK: {
            const struct codec_snapshot_ack *a = &m.snapshot_ack;
            struct group *g = rep_group(r, a->partition);
            if (a->from != from_node)
                bad = -TRINE_EBAD_REQUEST;
            else if (!g || a->to != r->cfg.node_id || !group_peer(g, a->from))
                r->stats.ignored_msgs++;
            else
                snap_on_ack(r, g, a);
            break;
        }
        default:
            bad = -TRINE_EUNSUPPORTED;
            err_set(&err, bad, "replica: %s is not a peer message",
                    codec_msg_name(m.type) ? codec_msg_name(m.type) : "?");
            break;
        }
    } else {
        bad = rc;
    }
    if (bad < 0) {
        r->stats.bad_frames++;
        if (r->m_bad) metric_inc(r->m_bad);
        err_set(&r->err, bad, "replica: bad frame from node %llu: %s",
                (unsigned long long)from_node, err.msg[0] ? err.msg : status_name(bad));
    }
    return bad;
}
