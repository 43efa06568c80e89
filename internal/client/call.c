/*
 * call.c - one logical request: pick a node, send, read the reply, and
 * retry until a final answer or the call's deadline.
 *
 * Identity: a call takes one req_id (handle-wide counter, so unique on every
 * connection) and, for a write, one seq; every attempt re-sends them with the
 * handle's client_id, so the cluster's dedupe (checked at apply) applies a
 * retried write once.
 *
 * Target of an attempt, first that applies: the node a NOT_LEADER/STALE hint
 * just named; the cached primary of the key's partition; any endpoint (round
 * robin, skipping ones that failed in the last CLIENT_DOWN_MS).
 *
 * What each outcome does is the table call_actions below; connection
 * failures back off and move on to another node. A write is "uncertain" once
 * a whole frame went out without a definite answer coming back (read failed,
 * or the node said TIMEOUT); if the deadline ends the call while it is
 * uncertain, the call returns TIMEOUT and says the outcome is unknown.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "client/client_int.h"

static const struct {
    int code;
    enum client_action act;
} call_actions[] = {
    {TRINE_ENOT_LEADER, CLIENT_ACT_REDIRECT}, {TRINE_ESTALE, CLIENT_ACT_REDIRECT},
    {TRINE_EUNAVAILABLE, CLIENT_ACT_BACKOFF}, {TRINE_EBUSY, CLIENT_ACT_BACKOFF},
    {TRINE_ETIMEOUT, CLIENT_ACT_UNCERTAIN},
};

static enum client_action call_action_of(int code)
{
    for (size_t i = 0; i < sizeof(call_actions) / sizeof(call_actions[0]); i++) {
        if (call_actions[i].code == code) return call_actions[i].act;
    }
    return CLIENT_ACT_FINAL;
}

/* The action for a reply: the table, except that UNAVAILABLE from the
 * partition's leader itself (it names itself as the leader) is its refusal
 * of an `all` write with a replica down, final: nothing was written and a
 * retry cannot help before the replica is back. UNAVAILABLE naming no leader
 * (its primary is down) is worth a retry. */
enum client_action client_reply_action(int rc, const struct codec_rep_header *h)
{
    if (rc == -TRINE_EUNAVAILABLE && h->leader_hint.node_id != 0 &&
        h->leader_hint.node_id == h->served_by)
        return CLIENT_ACT_FINAL;
    return call_action_of(-rc);
}

int client_status_from_wire(unsigned status)
{
    /* Unknown codes are INTERNAL (docs/protocol.md); local codes never travel. */
    if (status == 0) return 0;
    if (!status_is_wire(-(int)status) || status > 0xff) return -TRINE_EINTERNAL;
    return -(int)status;
}

static const uint8_t call_wire_consistency[] = {
    [TRINE_CONSISTENCY_FAST] = CODEC_CONSISTENCY_FAST,
    [TRINE_CONSISTENCY_STRONG] = CODEC_CONSISTENCY_STRONG,
    [TRINE_CONSISTENCY_ALL] = CODEC_CONSISTENCY_ALL,
};

struct codec_req_header *client_req_identity(struct trine_client *c, struct codec_msg *m,
                                             bool write, enum trine_consistency level)
{
    struct codec_req_header *hdr = codec_req_header(m);
    hdr->client_id = c->client_id;
    hdr->seq = write ? __atomic_add_fetch(&c->next_seq, 1, __ATOMIC_RELAXED) : 0;
    hdr->consistency = call_wire_consistency[level];
    return hdr;
}

void client_req_timeout(struct codec_req_header *hdr, uint64_t now_ns, uint64_t deadline_ns)
{
    uint64_t left_ms = now_ns < deadline_ns ? (deadline_ns - now_ns) / 1000000u : 0;
    hdr->timeout_ms = left_ms == 0 ? 1 : left_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)left_ms;
}

uint64_t client_backoff_ns(struct trine_client *c, unsigned n)
{
    uint64_t step_ms = CLIENT_BACKOFF_MIN_MS;
    for (unsigned i = 0; i < n && step_ms < CLIENT_BACKOFF_MAX_MS; i++)
        step_ms *= 2;
    if (step_ms > CLIENT_BACKOFF_MAX_MS) step_ms = CLIENT_BACKOFF_MAX_MS;
    pthread_mutex_lock(&c->mu);
    uint64_t jitter_ns = rng_below(&c->rng, step_ms * 500000u + 1);
    pthread_mutex_unlock(&c->mu);
    return step_ms * 500000u + jitter_ns;
}

/* Sleeps the attempt's backoff, never past the deadline. */
static void call_backoff(struct trine_client *c, unsigned n, uint64_t deadline_ns)
{
    uint64_t sleep_ns = client_backoff_ns(c, n);
    uint64_t now = clock_mono_ns();
    if (now >= deadline_ns) return;
    if (now + sleep_ns > deadline_ns) sleep_ns = deadline_ns - now;
    struct timespec ts = {.tv_sec = (time_t)(sleep_ns / 1000000000u),
                          .tv_nsec = (long)(sleep_ns % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static const enum trine_consistency call_public_consistency[] = {
    [CODEC_CONSISTENCY_FAST] = TRINE_CONSISTENCY_FAST,
    [CODEC_CONSISTENCY_STRONG] = TRINE_CONSISTENCY_STRONG,
    [CODEC_CONSISTENCY_ALL] = TRINE_CONSISTENCY_ALL,
};

void client_fill_result(struct trine_result *res, const struct codec_rep_header *h)
{
    /* The level the node actually served (a fast cas runs strong): report
     * it, so a change is never silent. */
    if (h->status == 0 && h->consistency <= CODEC_CONSISTENCY_ALL)
        res->consistency = call_public_consistency[h->consistency];
    res->revision = h->revision;
    res->served_by = h->served_by;
    res->applied_index = h->applied_index;
    res->acks = h->acks;
    if (h->leader_hint.node_id != 0) res->leader = h->leader_hint.node_id;
}

void client_reply_result(struct trine_result *res, const struct codec_msg *rep)
{
    const struct codec_rep_header *h = codec_rep_header((struct codec_msg *)rep);
    client_fill_result(res, h);
    if (rep->type == CODEC_MSG_PUT_REPLY) res->version = rep->put_reply.version;
    if (rep->type == CODEC_MSG_CAS_REPLY)
        res->version = rep->cas_reply.version; /* CAS_FAILED too */
    if (rep->type == CODEC_MSG_GET_REPLY && h->status == 0) {
        const struct codec_get_reply *g = &rep->get_reply;
        res->version = g->version;
        res->create_revision = g->create_revision;
        res->mod_revision = g->mod_revision;
        res->expire_at_ms = g->expire_at_ms;
    }
}

int client_reply_error(struct trine_err *err, int rc, const struct codec_rep_header *h,
                       const char *addr)
{
    if (h->message.len > 0)
        return err_set(err, rc, "%s (node %llu at %s): %.*s", status_name(rc),
                       (unsigned long long)h->served_by, addr, (int)h->message.len,
                       (const char *)h->message.data);
    return err_set(err, rc, "%s (node %llu at %s): %s", status_name(rc),
                   (unsigned long long)h->served_by, addr, status_message(rc));
}

bool client_transport_fatal(int rc)
{
    /* Certificates, a frame the node refused, memory: no retry fixes them. */
    return rc == -TRINE_EUNAUTHENTICATED || rc == -TRINE_EBAD_REQUEST || rc == -TRINE_ETOO_LARGE ||
           rc == -TRINE_ENOMEM;
}

int client_give_up(struct trine_err *err, const struct client_verdict *v)
{
    if (v->uncertain)
        return err_set(err, -TRINE_ETIMEOUT,
                       "outcome unknown: the write may or may not have been applied (no answer "
                       "within %llu ms after %u attempts; last: %s)",
                       (unsigned long long)v->took_ms, v->attempts, v->last_msg);
    if (v->last == -TRINE_ETIMEOUT)
        return err_set(err, -TRINE_ETIMEOUT,
                       "no answer within %llu ms after %u attempts (last: %s)",
                       (unsigned long long)v->took_ms, v->attempts, v->last_msg);
    /* The last answer was UNAVAILABLE/BUSY/STALE/NOT_LEADER, or no node could
     * be reached at all (UNAVAILABLE). */
    int code = v->last_replied && v->last != 0 ? v->last : -TRINE_EUNAVAILABLE;
    return err_set(err, code,
                   "no node could serve the request within %llu ms (%u attempts; last: %s)",
                   (unsigned long long)v->took_ms, v->attempts, v->last_msg);
}

/* One attempt's outcome. */
struct call_try {
    int rc;                       /* 0, a reply status, or a transport error */
    bool replied;                 /* rc came from a reply */
    bool sent;                    /* the whole frame went out */
    bool conn_ok;                 /* the connection may be pooled again */
    bool reused;                  /* the connection came from the pool */
    struct client_endpoint *hint; /* leader hint's endpoint, if any */
    enum client_action act;       /* for a reply */
};

static void call_attempt(struct trine_client *c, const struct client_req *req,
                         struct client_endpoint *ep, const struct buf *frame, uint64_t req_id,
                         uint64_t deadline_ns, struct call_try *t, struct trine_result *res,
                         struct trine_err *err)
{
    memset(t, 0, sizeof(*t));
    struct client_conn *conn;
    t->rc = client_pool_get(c, ep, deadline_ns, &conn, &t->reused, err);
    if (t->rc != 0) return;
    t->rc = client_conn_send(conn, frame->data, frame->len, deadline_ns, err);
    if (t->rc != 0) goto out;
    t->sent = true;
    struct codec_msg rep;
    t->rc = client_conn_recv(conn, &c->limits, deadline_ns, &rep, err);
    if (t->rc != 0) goto out;
    t->conn_ok = true;
    const struct codec_rep_header *h = codec_rep_header(&rep);
    bool ours =
        h != NULL && (h->req_id == req_id || (rep.type == CODEC_MSG_ERROR_REPLY && h->req_id == 0));
    bool expected = rep.type == req->msg->type + 64 || rep.type == CODEC_MSG_ERROR_REPLY;
    if (!ours || !expected) {
        t->conn_ok = false;
        t->rc = err_set(err, -TRINE_EBAD_REQUEST, "%s: unexpected reply (%s, req_id %llu)",
                        ep->addr, codec_msg_name(rep.type) ? codec_msg_name(rep.type) : "?",
                        h ? (unsigned long long)h->req_id : 0ull);
        goto out;
    }
    t->replied = true;
    t->rc = client_status_from_wire(h->status);
    t->hint = client_route_hint(c, req->key, req->key_len, &h->leader_hint);
    t->act = client_reply_action(t->rc, h);
    if (t->rc != 0) client_reply_error(err, t->rc, h, ep->addr);
    if (t->act == CLIENT_ACT_FINAL) {
        client_reply_result(res, &rep);
        if (req->on_reply != NULL && rep.type != CODEC_MSG_ERROR_REPLY) {
            int rc = req->on_reply(req->arg, &rep);
            if (rc != 0) t->rc = err_set(err, rc, "copying the reply: %s", status_message(rc));
        }
    }
out:
    client_pool_put(c, conn, t->conn_ok);
}

int client_call(struct trine_client *c, const struct client_req *req, struct trine_result *res,
                struct trine_err *err)
{
    memset(res, 0, sizeof(*res));
    uint64_t start_ns = clock_mono_ns();
    uint64_t deadline_ns = client_deadline_ns(req->opts);
    enum trine_consistency level = client_consistency(req->opts);
    res->consistency = level;
    struct codec_req_header *hdr = client_req_identity(c, req->msg, req->write, level);
    hdr->req_id = __atomic_add_fetch(&c->next_req_id, 1, __ATOMIC_RELAXED);

    struct buf frame;
    buf_init(&frame);
    struct client_endpoint *redirect = NULL;
    bool uncertain = false, last_replied = false;
    unsigned backoffs = 0, hops = 0;
    int last = -TRINE_EUNAVAILABLE;
    struct trine_err last_err = {0};
    err_set(&last_err, last, "no node tried");
    for (;;) {
        uint64_t now = clock_mono_ns();
        if (now >= deadline_ns) break;
        /* No map yet (no node answered so far) or a stale one: fetch it,
         * at most every CLIENT_REFRESH_GAP_MS across the handle. */
        if (redirect == NULL) client_route_refresh(c, deadline_ns, false);
        uint32_t replicas = 0;
        uint64_t leader = 0;
        struct client_endpoint *ep = redirect;
        redirect = NULL;
        if (ep == NULL && req->key != NULL)
            ep = client_route_leader(c, req->key, req->key_len, &replicas, &leader, NULL);
        else if (req->key != NULL)
            (void)client_route_leader(c, req->key, req->key_len, &replicas, &leader, NULL);
        if (ep == NULL) ep = client_endpoint_any(c);
        res->replicas = replicas;
        res->leader = leader;

        client_req_timeout(hdr, now, deadline_ns);
        buf_reset(&frame);
        int rc = codec_encode(&frame, req->msg, &c->limits, err);
        if (rc != 0) {
            buf_free(&frame);
            return rc;
        }
        res->attempts++;
        struct call_try t;
        call_attempt(c, req, ep, &frame, hdr->req_id, deadline_ns, &t, res, &last_err);
        last = t.rc;
        last_replied = t.replied;
        if (t.rc == 0 || (t.replied && t.act == CLIENT_ACT_FINAL)) {
            buf_free(&frame);
            if (t.rc != 0) err_set(err, t.rc, "%s", last_err.msg);
            return t.rc;
        }
        if (!t.replied) {
            /* Transport failure. Certificates will not fix themselves. */
            if (client_transport_fatal(t.rc)) {
                buf_free(&frame);
                if (req->write && t.sent)
                    return err_set(err, -TRINE_ETIMEOUT,
                                   "outcome unknown: the write was sent but %s", last_err.msg);
                return err_set(err, t.rc, "%s", last_err.msg);
            }
            if (req->write && t.sent) uncertain = true;
            if (t.reused && !t.sent) continue; /* a pooled conn went bad: just redo it */
            if (t.rc != -TRINE_ETIMEOUT) client_endpoint_down(c, ep);
            call_backoff(c, backoffs++, deadline_ns);
            continue;
        }
        enum client_action act = t.act;
        if (act == CLIENT_ACT_UNCERTAIN && req->write) uncertain = true;
        if (act == CLIENT_ACT_REDIRECT) {
            if (t.hint != NULL && t.hint != ep && hops < CLIENT_HINT_HOPS_MAX) {
                hops++;
                redirect = t.hint;
                continue;
            }
            client_route_invalidate(c);
            call_backoff(c, backoffs++, deadline_ns);
            continue;
        }
        hops = 0;
        call_backoff(c, backoffs++, deadline_ns);
    }
    buf_free(&frame);
    struct client_verdict v = {.uncertain = uncertain,
                               .last = last,
                               .last_replied = last_replied,
                               .attempts = res->attempts,
                               .took_ms = (clock_mono_ns() - start_ns) / 1000000u,
                               .last_msg = last_err.msg};
    return client_give_up(err, &v);
}
