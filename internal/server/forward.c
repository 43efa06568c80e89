/*
 * forward.c - requests this node passes to the node that can serve them.
 *
 * A forwarded request is re-encoded with a fresh req_id (the forward id) and
 * sent on the peer connection; the peer's reply comes back on that same
 * connection with the forward id, is matched here, given the requester's
 * req_id back and handed to the op. A NOT_LEADER reply with a hint is
 * re-sent to the hinted node (at most FWD_ATTEMPTS times in all), so a
 * client that talks to any node is served after at most a few hops.
 *
 * Slots: FWD_SLOTS, indexed by forward id; ids increase, so a slot still busy
 * when its index comes round again means FWD_SLOTS forwards are in flight and
 * the new one is refused with BUSY. Active slots are also on a list checked
 * for deadlines by the timer.
 *
 * Only peers that are up are sent to (route.c checks before fwd_send, and a
 * hint naming a down node is not followed): the transport would queue the frame
 * until the peer comes back, long after the client gave up, and a write applied
 * then would surprise everyone. When a peer goes down, its forwards are answered
 * at once (TIMEOUT, outcome unknown) instead of at their deadline, so the client
 * retries at the partition's new primary while the request still has time.
 */
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "server/server_int.h"

#define FWD_ATTEMPTS   3
#define FWD_GRACE_MS   500 /* on top of the request's own timeout */
#define FWD_DEFAULT_MS 5000

int fwd_init(struct server *s)
{
    s->fwd = calloc(FWD_SLOTS, sizeof(*s->fwd));
    return s->fwd ? 0 : -TRINE_ENOMEM;
}

static void fwd_release(struct server *s, struct fwd *f)
{
    if (f->prev)
        f->prev->next = f->next;
    else
        s->fwd_active = f->next;
    if (f->next) f->next->prev = f->prev;
    f->prev = f->next = NULL;
    f->id = 0;
    f->op = NULL;
    buf_reset(&f->frame);
    s->fwd_count--;
}

void fwd_free(struct server *s)
{
    if (!s->fwd) return;
    while (s->fwd_active) {
        struct fwd *f = s->fwd_active;
        struct op *op = f->op;
        fwd_release(s, f);
        op_free(op); /* the loop is gone: nobody to answer */
    }
    for (uint32_t i = 0; i < FWD_SLOTS; i++)
        buf_free(&s->fwd[i].frame);
    free(s->fwd);
    s->fwd = NULL;
}

static int fwd_transmit(struct server *s, struct fwd *f)
{
    return transport_peer_send(s->t, f->target, f->frame.data + CODEC_FRAME_HEADER_BYTES,
                               f->frame.len - CODEC_FRAME_HEADER_BYTES);
}

int fwd_send(struct server *s, struct op *op, uint32_t target, uint32_t partition,
             const struct codec_msg *req)
{
    uint64_t id = ++s->next_fwd_id;
    if (id == 0) id = ++s->next_fwd_id;
    struct fwd *f = &s->fwd[id & (FWD_SLOTS - 1)];
    if (f->id != 0) return -TRINE_EBUSY;

    struct codec_msg copy = *req;
    struct codec_req_header *h = codec_req_header(&copy);
    if (!h) return -TRINE_EINVALID;
    uint32_t timeout_ms = h->timeout_ms ? h->timeout_ms : FWD_DEFAULT_MS;
    h->req_id = id;
    buf_reset(&f->frame);
    int rc = codec_encode(&f->frame, &copy, &s->lim, NULL);
    if (rc) return rc;

    f->id = id;
    f->op = op;
    f->target = target;
    f->partition = partition;
    f->attempts = 1;
    f->deadline_ns = server_now_ns() + ((uint64_t)timeout_ms + FWD_GRACE_MS) * 1000000u;
    rc = fwd_transmit(s, f);
    if (rc) {
        f->id = 0;
        buf_reset(&f->frame);
        return rc;
    }
    f->next = s->fwd_active;
    if (s->fwd_active) s->fwd_active->prev = f;
    s->fwd_active = f;
    s->fwd_count++;
    metric_inc(s->m.forwards);
    return 0;
}

void fwd_reply(struct server *s, uint32_t from, const struct codec_msg *reply)
{
    struct codec_msg m = *reply;
    struct codec_rep_header *h = codec_rep_header(&m);
    if (!h) {
        log_warn("server", "node %u sent a %s where a reply was expected", from,
                 codec_msg_name(m.type));
        return;
    }
    struct fwd *f = &s->fwd[h->req_id & (FWD_SLOTS - 1)];
    if (f->id == 0 || f->id != h->req_id || f->target != from) return; /* late or unknown */

    uint32_t hint = (uint32_t)h->leader_hint.node_id;
    if (hint && f->partition < ring_partitions(s->ring)) s->leader_cache[f->partition] = hint;
    if (-(int)h->status == -TRINE_ENOT_LEADER && hint && hint != from &&
        f->attempts < FWD_ATTEMPTS && transport_peer_is_up(s->t, hint)) {
        f->target = hint;
        f->attempts++;
        metric_inc(s->m.forward_retries);
        if (fwd_transmit(s, f) == 0) return;
    }
    struct op *op = f->op;
    fwd_release(s, f);
    h->req_id = op->req_id;
    op->done(op, &m);
}

/* Answers a forward that will get no reply: TIMEOUT, since the request may have
 * reached the target (a write's outcome is unknown; the client's retry carries the
 * same client_id/seq, so it is applied at most once). */
static void fwd_fail(struct server *s, struct fwd *f, const char *why)
{
    struct op *op = f->op;
    uint32_t target = f->target;
    fwd_release(s, f);
    struct codec_msg m;
    memset(&m, 0, sizeof(m));
    m.type = route_reply_type(op->type);
    struct codec_rep_header *h = codec_rep_header(&m);
    char msg[160];
    snprintf(msg, sizeof(msg), "forwarded to node %u, %s: outcome unknown", target, why);
    op_fill_header(op, h, -TRINE_ETIMEOUT, msg);
    op->done(op, &m);
}

void fwd_expire(struct server *s, uint64_t now_ns)
{
    for (struct fwd *f = s->fwd_active, *next; f; f = next) {
        next = f->next;
        if (f->deadline_ns <= now_ns) fwd_fail(s, f, "no answer in time");
    }
}

void fwd_peer_down(struct server *s, uint32_t peer)
{
    for (struct fwd *f = s->fwd_active, *next; f; f = next) {
        next = f->next;
        if (f->target == peer) fwd_fail(s, f, "which went down before answering");
    }
}
