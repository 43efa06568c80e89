/*
 * async.c - many calls in flight from one thread (trine_async_*, trine.h).
 *
 * A call lives in a slot of a table of stable pointers. Each attempt gets
 * req_id = (attempt counter << ASYNC_SLOT_BITS) | slot, so a reply finds its
 * call in O(1), and a late reply to an earlier attempt (or to a call that
 * timed out) matches nothing and is dropped. An attempt appends its frame to
 * the output buffer of a connection to its target; trine_async_run writes
 * every buffer (all the frames queued since, in one write), polls, reads
 * what arrived (many replies per read) and completes or retries calls.
 * Routing, the retry table, backoff, redirects and the call identity
 * (client id, one seq per write kept by its retries) are call.c's, so an
 * async call behaves as a blocking one (trine.h "Retries").
 *
 * Connections: per_node to each endpoint, not shared with the pools of the
 * blocking calls, each opened on first need with client_conn_open
 * (blocking, at most CLIENT_CONNECT_MS) and then used without blocking. A
 * partition's calls always take the same one (partition % per_node), so a
 * client's writes to a partition reach its primary in the order they were
 * made: the cluster's dedupe remembers the last STORE_DEDUPE_PER_CLIENT
 * seqs per partition and client, and refuses (STALE) one older than those.
 * A connection that fails is closed and its calls retried like a failed
 * attempt in call.c: at once if their frame never went out, else after a
 * backoff, a write then being "uncertain".
 */
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "client/client_int.h"

#define ASYNC_SLOT_BITS    16
#define ASYNC_CALLS_MAX    (1u << ASYNC_SLOT_BITS) /* calls in flight per engine */
#define ASYNC_READ_CHUNK   ((size_t)64 * 1024)
#define ASYNC_READ_MAX     ((size_t)1 << 20)       /* bytes read from one connection per pass */
#define ASYNC_SCAN_NS      ((uint64_t)5 * 1000000) /* deadline check period */
#define ASYNC_PER_NODE_MAX 64

struct aconn {
    struct client_conn *cc;
    struct client_endpoint *ep;
    struct buf out;           /* frames not yet written */
    struct buf in;            /* bytes read that are not yet a whole frame */
    uint64_t queued, written; /* bytes ever queued / written on this connection */
    unsigned inflight;        /* calls whose current attempt is on it */
    unsigned idx;             /* which of the endpoint's per_node connections */
    short want;               /* what the last write waits for (0: nothing) */
    bool dead;
};

struct acall {
    bool live;       /* a call is in this slot */
    uint64_t req_id; /* the current attempt's (0 before the first send) */
    uint32_t slot;
    struct codec_msg msg; /* the request; key and value point into data */
    struct buf data;
    bool write, uncertain, last_replied;
    uint64_t start_ns, deadline_ns;
    uint64_t retry_at_ns; /* waiting to be sent (conn NULL) */
    uint64_t frame_end;   /* conn->queued just after this attempt's frame */
    unsigned backoffs, hops;
    int last; /* the last attempt's outcome */
    struct aconn *conn;
    struct client_endpoint *redirect;
    struct trine_result res;
    struct trine_err err;
    trine_async_fn fn;
    void *arg;
};

struct trine_async {
    struct trine_client *c;
    unsigned per_node;
    struct acall **slots;
    uint32_t n_slots;
    uint32_t *free_slots;
    uint32_t n_free;
    uint32_t active;  /* calls not completed */
    uint32_t waiting; /* of which waiting for a retry */
    struct aconn **conns;
    size_t n_conns, cap_conns;
    struct pollfd *pfds;
    struct aconn **pconns; /* pfds[i] is pconns[i]'s */
    size_t cap_pfds;
    struct codec_scratch *scratch;
    uint64_t attempts;
    uint64_t scan_at_ns;
    uint64_t retry_due_ns; /* earliest waiting retry at the last scan */
    unsigned done;         /* completions in this trine_async_run */
    bool in_run, closing;
};

static void call_send(struct trine_async *a, struct acall *k, uint64_t now);

/* The request's key field, and its value field in *value if asked (NULL
 * for get and delete). */
static struct codec_bytes *msg_key(struct codec_msg *m, struct codec_bytes **value)
{
    struct codec_bytes *key = &m->get_req.key, *val = NULL;
    if (m->type == CODEC_MSG_PUT_REQ) {
        key = &m->put_req.key;
        val = &m->put_req.value;
    } else if (m->type == CODEC_MSG_CAS_REQ) {
        key = &m->cas_req.key;
        val = &m->cas_req.value;
    } else if (m->type == CODEC_MSG_DELETE_REQ) {
        key = &m->delete_req.key;
    }
    if (value != NULL) *value = val;
    return key;
}

/* ---- completion ---- */

static void call_free_slot(struct trine_async *a, struct acall *k)
{
    k->live = false;
    k->req_id = 0;
    k->retry_at_ns = 0;
    k->conn = NULL;
    buf_reset(&k->data);
    a->free_slots[a->n_free++] = k->slot;
    a->active--;
}

static void call_complete(struct trine_async *a, struct acall *k, int rc, const void *value,
                          size_t value_len)
{
    if (k->conn != NULL) k->conn->inflight--;
    struct trine_result res = k->res;
    trine_async_fn fn = k->fn;
    void *arg = k->arg;
    if (rc != 0) {
        k->err.code = rc;
        client_fail(a->c, &k->err); /* trine_client_errmsg in the callback */
    }
    call_free_slot(a, k); /* fn may start a call in this very slot */
    a->done++;
    if (fn != NULL) fn(arg, rc, &res, value, value_len);
}

/* The deadline passed: client_call's verdicts. An attempt still in flight
 * ends as a receive that timed out (a write whose frame went out is then
 * uncertain). */
static void call_expire(struct trine_async *a, struct acall *k)
{
    if (k->conn != NULL) {
        k->last = -TRINE_ETIMEOUT;
        k->last_replied = false;
        if (k->write && k->conn->written >= k->frame_end) k->uncertain = true;
    }
    char last[sizeof(k->err.msg)];
    memcpy(last, k->err.msg, sizeof(last));
    struct client_verdict v = {.uncertain = k->uncertain,
                               .last = k->last,
                               .last_replied = k->last_replied,
                               .attempts = k->res.attempts,
                               .took_ms = (clock_mono_ns() - k->start_ns) / 1000000u,
                               .last_msg = last};
    call_complete(a, k, client_give_up(&k->err, &v), NULL, 0);
}

static void call_retry_later(struct trine_async *a, struct acall *k, uint64_t now, bool backoff)
{
    if (k->conn != NULL) k->conn->inflight--;
    k->conn = NULL;
    uint64_t at = backoff ? now + client_backoff_ns(a->c, k->backoffs++) : now;
    k->retry_at_ns = at < k->deadline_ns ? at : k->deadline_ns;
    a->waiting++;
}

/* ---- connections ---- */

static void conn_close(struct aconn *cn)
{
    client_conn_close(cn->cc);
    buf_free(&cn->out);
    buf_free(&cn->in);
    free(cn);
}

/* Fails every call on cn (rc: the transport error) and marks it for closing. */
static void conn_fail(struct trine_async *a, struct aconn *cn, int rc, const struct trine_err *why)
{
    if (cn->dead) return;
    cn->dead = true;
    if (rc != -TRINE_ETIMEOUT) client_endpoint_down(a->c, cn->ep);
    uint64_t now = clock_mono_ns();
    for (uint32_t i = 0; i < a->n_slots; i++) {
        struct acall *k = a->slots[i];
        if (!k->live || k->conn != cn) continue;
        bool sent = cn->written >= k->frame_end;
        k->last = rc;
        k->last_replied = false;
        k->err = *why;
        if (client_transport_fatal(rc)) {
            if (k->write && sent)
                err_set(&k->err, -TRINE_ETIMEOUT, "outcome unknown: the write was sent but %s",
                        why->msg);
            call_complete(a, k, k->write && sent ? -TRINE_ETIMEOUT : rc, NULL, 0);
            continue;
        }
        if (k->write && sent) k->uncertain = true;
        call_retry_later(a, k, now, sent);
    }
}

/* Connection idx to ep (see the header comment), opened if needed, or NULL. */
static struct aconn *conn_for(struct trine_async *a, struct client_endpoint *ep, unsigned idx,
                              uint64_t deadline_ns, struct trine_err *err)
{
    for (size_t i = 0; i < a->n_conns; i++) {
        struct aconn *cn = a->conns[i];
        if (cn->ep == ep && cn->idx == idx && !cn->dead) return cn;
    }
    if (a->n_conns == a->cap_conns) {
        size_t cap = a->cap_conns ? a->cap_conns * 2 : 8;
        struct aconn **p = realloc(a->conns, cap * sizeof(struct aconn *));
        if (p == NULL) {
            err_set(err, -TRINE_ENOMEM, "out of memory");
            return NULL;
        }
        a->conns = p;
        a->cap_conns = cap;
    }
    uint64_t now = clock_mono_ns(), cap_ns = now + (uint64_t)CLIENT_CONNECT_MS * 1000000u;
    struct client_conn *cc;
    int rc = client_conn_open(a->c, ep, deadline_ns < cap_ns ? deadline_ns : cap_ns, &cc, err);
    if (rc != 0) {
        if (rc != -TRINE_ETIMEOUT) client_endpoint_down(a->c, ep);
        return NULL;
    }
    struct aconn *cn = calloc(1, sizeof(*cn));
    if (cn == NULL) {
        client_conn_close(cc);
        err_set(err, -TRINE_ENOMEM, "out of memory");
        return NULL;
    }
    client_conn_set_pipelined(cc);
    cn->cc = cc;
    cn->ep = ep;
    cn->idx = idx;
    buf_init(&cn->out);
    buf_init(&cn->in);
    a->conns[a->n_conns++] = cn;
    return cn;
}

/* Closes the connections that failed (never while their calls are being
 * dispatched: run() reaps between passes). */
static void conns_reap(struct trine_async *a)
{
    size_t j = 0;
    for (size_t i = 0; i < a->n_conns; i++) {
        if (a->conns[i]->dead)
            conn_close(a->conns[i]);
        else
            a->conns[j++] = a->conns[i];
    }
    a->n_conns = j;
}

static void conn_flush(struct trine_async *a, struct aconn *cn)
{
    cn->want = 0;
    while (cn->out.len > 0 && !cn->dead) {
        size_t n = 0;
        struct trine_err err = {0};
        int rc = client_conn_write_some(cn->cc, cn->out.data, cn->out.len, &n, &cn->want, &err);
        if (rc != 0) {
            conn_fail(a, cn, rc, &err);
            return;
        }
        buf_consume(&cn->out, n);
        cn->written += n;
        if (cn->want != 0) return;
    }
}

/* ---- replies ---- */

static void call_answer(struct trine_async *a, struct acall *k, const struct codec_msg *rep, int rc)
{
    client_reply_result(&k->res, rep);
    const void *value = NULL;
    size_t value_len = 0;
    if (rep->type == CODEC_MSG_GET_REPLY && rc == 0) {
        value = rep->get_reply.value.data;
        value_len = rep->get_reply.value.len;
    }
    call_complete(a, k, rc, value, value_len);
}

/* One reply frame from cn. */
static void dispatch(struct trine_async *a, struct aconn *cn, const uint8_t *body, uint32_t len)
{
    struct codec_msg rep;
    struct trine_err err = {0};
    codec_scratch_reset(a->scratch);
    int rc = codec_decode(body, len, &a->c->limits, a->scratch, &rep, &err);
    const struct codec_rep_header *h = rc == 0 ? codec_rep_header(&rep) : NULL;
    if (h == NULL) {
        if (rc == 0)
            err_set(&err, -TRINE_EBAD_REQUEST, "%s: a reply without a header", cn->ep->addr);
        conn_fail(a, cn, rc ? rc : -TRINE_EBAD_REQUEST, &err);
        return;
    }
    if (rep.type == CODEC_MSG_ERROR_REPLY && h->req_id == 0) {
        /* The node could not read a request at all: the stream is lost. */
        int st = client_status_from_wire(h->status);
        err_set(&err, st ? st : -TRINE_EBAD_REQUEST, "%s: %.*s", cn->ep->addr, (int)h->message.len,
                (const char *)h->message.data);
        conn_fail(a, cn, err.code, &err);
        return;
    }
    uint32_t slot = (uint32_t)(h->req_id & (ASYNC_CALLS_MAX - 1));
    struct acall *k = slot < a->n_slots ? a->slots[slot] : NULL;
    if (k == NULL || !k->live || k->req_id != h->req_id || k->conn != cn)
        return; /* an attempt given up on (timed out, or its call is done) */
    if (rep.type != k->msg.type + 64 && rep.type != CODEC_MSG_ERROR_REPLY) {
        err_set(&err, -TRINE_EBAD_REQUEST, "%s: unexpected reply %s", cn->ep->addr,
                codec_msg_name(rep.type) ? codec_msg_name(rep.type) : "?");
        conn_fail(a, cn, -TRINE_EBAD_REQUEST, &err);
        return;
    }
    rc = client_status_from_wire(h->status);
    const struct codec_bytes *key = msg_key(&k->msg, NULL);
    struct client_endpoint *hint = client_route_hint(a->c, key->data, key->len, &h->leader_hint);
    enum client_action act = client_reply_action(rc, h);
    k->last = rc;
    k->last_replied = true;
    if (rc != 0) client_reply_error(&k->err, rc, h, cn->ep->addr);
    if (rc == 0 || act == CLIENT_ACT_FINAL) {
        call_answer(a, k, &rep, rc);
        return;
    }
    uint64_t now = clock_mono_ns();
    if (act == CLIENT_ACT_UNCERTAIN && k->write) k->uncertain = true;
    if (act == CLIENT_ACT_REDIRECT) {
        if (hint != NULL && hint != cn->ep && k->hops < CLIENT_HINT_HOPS_MAX) {
            k->hops++;
            k->redirect = hint;
            cn->inflight--;
            k->conn = NULL;
            call_send(a, k, now);
            return;
        }
        client_route_invalidate(a->c);
    } else {
        k->hops = 0;
    }
    call_retry_later(a, k, now, true);
}

static void conn_read(struct trine_async *a, struct aconn *cn)
{
    size_t total = 0;
    while (!cn->dead && total < ASYNC_READ_MAX) {
        struct trine_err err = {0};
        if (buf_reserve(&cn->in, ASYNC_READ_CHUNK) != 0) {
            err_set(&err, -TRINE_ENOMEM, "receive: out of memory");
            conn_fail(a, cn, -TRINE_ENOMEM, &err);
            return;
        }
        size_t n = 0;
        short want = 0;
        int rc = client_conn_read_some(cn->cc, cn->in.data + cn->in.len, ASYNC_READ_CHUNK, &n,
                                       &want, &err);
        if (rc != 0) {
            conn_fail(a, cn, rc, &err);
            return;
        }
        cn->in.len += n;
        total += n;
        if (want != 0) break;
    }
    size_t off = 0;
    while (!cn->dead && cn->in.len - off >= CODEC_FRAME_HEADER_BYTES) {
        uint32_t len;
        struct trine_err err = {0};
        int rc = codec_frame_length(cn->in.data + off, &a->c->limits, &len, &err);
        if (rc != 0) {
            conn_fail(a, cn, rc, &err);
            return;
        }
        if (cn->in.len - off - CODEC_FRAME_HEADER_BYTES < len) break;
        dispatch(a, cn, cn->in.data + off + CODEC_FRAME_HEADER_BYTES, len);
        off += CODEC_FRAME_HEADER_BYTES + (size_t)len;
    }
    if (!cn->dead) buf_consume(&cn->in, off);
}

/* ---- attempts ---- */

static void call_send(struct trine_async *a, struct acall *k, uint64_t now)
{
    if (now >= k->deadline_ns) {
        call_expire(a, k);
        return;
    }
    struct trine_client *c = a->c;
    const struct codec_bytes *key = msg_key(&k->msg, NULL);
    struct client_endpoint *ep = k->redirect;
    k->redirect = NULL;
    if (ep == NULL) client_route_refresh(c, k->deadline_ns, false);
    uint32_t replicas = 0, partition = 0;
    uint64_t leader = 0;
    struct client_endpoint *primary =
        client_route_leader(c, key->data, key->len, &replicas, &leader, &partition);
    if (ep == NULL) ep = primary;
    if (ep == NULL) ep = client_endpoint_any(c);
    k->res.replicas = replicas;
    k->res.leader = leader;
    struct trine_err err = {0};
    struct aconn *cn = conn_for(a, ep, partition % a->per_node, k->deadline_ns, &err);
    k->res.attempts++;
    if (cn == NULL) {
        k->last = err.code ? err.code : -TRINE_EUNAVAILABLE;
        k->last_replied = false;
        k->err = err;
        if (client_transport_fatal(k->last)) {
            call_complete(a, k, k->last, NULL, 0);
            return;
        }
        call_retry_later(a, k, now, true);
        return;
    }
    struct codec_req_header *hdr = codec_req_header(&k->msg);
    k->req_id = (++a->attempts << ASYNC_SLOT_BITS) | k->slot;
    hdr->req_id = k->req_id;
    client_req_timeout(hdr, now, k->deadline_ns);
    size_t before = cn->out.len;
    int rc = codec_encode(&cn->out, &k->msg, &c->limits, &err);
    if (rc != 0) {
        k->conn = NULL;
        call_complete(a, k, rc, NULL, 0);
        return;
    }
    cn->queued += cn->out.len - before;
    k->frame_end = cn->queued;
    k->conn = cn;
    cn->inflight++;
}

/* Due retries, and calls whose deadline passed (checked every ASYNC_SCAN_NS).
 * Notes the earliest retry still waiting in a->retry_due_ns. */
static void calls_scan(struct trine_async *a, uint64_t now)
{
    bool deadlines = now >= a->scan_at_ns;
    if (deadlines) a->scan_at_ns = now + ASYNC_SCAN_NS;
    a->retry_due_ns = UINT64_MAX;
    for (uint32_t i = 0; i < a->n_slots && (a->waiting > 0 || deadlines); i++) {
        struct acall *k = a->slots[i];
        if (!k->live) continue;
        if (k->conn == NULL && k->retry_at_ns != 0) {
            if (k->retry_at_ns > now) {
                if (k->retry_at_ns < a->retry_due_ns) a->retry_due_ns = k->retry_at_ns;
                continue;
            }
            k->retry_at_ns = 0;
            a->waiting--;
            call_send(a, k, now);
            if (k->live && k->retry_at_ns != 0 && k->retry_at_ns < a->retry_due_ns)
                a->retry_due_ns = k->retry_at_ns; /* it failed again and waits */
        } else if (deadlines && k->conn != NULL && now >= k->deadline_ns) {
            call_expire(a, k);
        }
    }
}

/* ---- the public calls ---- */

int trine_async_open(trine_client_t *c, unsigned conns_per_node, trine_async_t **out)
{
    if (out == NULL) return -TRINE_EINVALID;
    *out = NULL;
    if (c == NULL) return -TRINE_EINVALID;
    struct trine_async *a = calloc(1, sizeof(*a));
    if (a == NULL) return -TRINE_ENOMEM;
    a->c = c;
    a->per_node = conns_per_node == 0                   ? 1
                  : conns_per_node > ASYNC_PER_NODE_MAX ? ASYNC_PER_NODE_MAX
                                                        : conns_per_node;
    a->scratch = codec_scratch_new();
    if (a->scratch == NULL) {
        free(a);
        return -TRINE_ENOMEM;
    }
    *out = a;
    return 0;
}

/* A free slot (growing the table), or NULL at ASYNC_CALLS_MAX / out of memory. */
static struct acall *call_new(struct trine_async *a)
{
    if (a->n_free == 0 && a->n_slots < ASYNC_CALLS_MAX) {
        uint32_t cap = a->n_slots ? a->n_slots * 2 : 64;
        if (cap > ASYNC_CALLS_MAX) cap = ASYNC_CALLS_MAX;
        struct acall **s = realloc(a->slots, (size_t)cap * sizeof(struct acall *));
        if (s != NULL) a->slots = s;
        uint32_t *f = realloc(a->free_slots, (size_t)cap * sizeof(uint32_t));
        if (f != NULL) a->free_slots = f;
        for (uint32_t i = a->n_slots; s != NULL && f != NULL && i < cap; i++) {
            struct acall *k = calloc(1, sizeof(*k));
            if (k == NULL) break;
            k->slot = i;
            buf_init(&k->data);
            a->slots[a->n_slots++] = k;
            a->free_slots[a->n_free++] = i;
        }
    }
    if (a->n_free == 0) return NULL;
    struct acall *k = a->slots[a->free_slots[--a->n_free]];
    struct buf keep = k->data;
    uint32_t slot = k->slot;
    memset(k, 0, sizeof(*k));
    k->data = keep;
    k->slot = slot;
    k->live = true;
    a->active++;
    return k;
}

/* Queues a call: copies key and value, takes its identity and sends it. */
static int async_start(struct trine_async *a, struct codec_msg *m, const void *key, size_t key_len,
                       const void *value, size_t value_len, bool write,
                       const struct trine_opts *opts, trine_async_fn fn, void *arg)
{
    struct trine_err err = {0};
    if (a == NULL) return -TRINE_EINVALID;
    if (a->closing) return -TRINE_ECLOSED;
    int rc = client_kv_check(a->c, key, key_len, value, value_len, true, &err);
    if (rc != 0) return client_fail(a->c, &err);
    struct acall *k = call_new(a);
    if (k == NULL) {
        err_set(&err, -TRINE_EBUSY, "%u async calls in flight", a->active);
        return client_fail(a->c, &err);
    }
    buf_reset(&k->data);
    if (buf_reserve(&k->data, key_len + value_len) != 0) {
        call_free_slot(a, k);
        err_set(&err, -TRINE_ENOMEM, "out of memory");
        return client_fail(a->c, &err);
    }
    if (key_len) memcpy(k->data.data, key, key_len);
    if (value_len) memcpy(k->data.data + key_len, value, value_len);
    k->data.len = key_len + value_len;
    k->msg = *m;
    struct codec_bytes *kb, *vb;
    kb = msg_key(&k->msg, &vb);
    *kb = (struct codec_bytes){.data = k->data.data, .len = (uint32_t)key_len};
    if (vb != NULL)
        *vb = (struct codec_bytes){.data = k->data.data + key_len, .len = (uint32_t)value_len};
    enum trine_consistency level = client_consistency(opts);
    (void)client_req_identity(a->c, &k->msg, write, level);
    k->write = write;
    k->res.consistency = level;
    k->start_ns = clock_mono_ns();
    k->deadline_ns = client_deadline_ns(opts);
    k->fn = fn;
    k->arg = arg;
    k->last = -TRINE_EUNAVAILABLE;
    err_set(&k->err, k->last, "no node tried");
    call_send(a, k, k->start_ns);
    return 0;
}

int trine_async_put(trine_async_t *a, const void *key, size_t key_len, const void *value,
                    size_t value_len, const struct trine_opts *opts, trine_async_fn fn, void *arg)
{
    struct codec_msg m = {.type = CODEC_MSG_PUT_REQ};
    m.put_req.ttl_ms = opts != NULL ? opts->ttl_ms : 0;
    return async_start(a, &m, key, key_len, value, value_len, true, opts, fn, arg);
}

int trine_async_get(trine_async_t *a, const void *key, size_t key_len,
                    const struct trine_opts *opts, trine_async_fn fn, void *arg)
{
    struct codec_msg m = {.type = CODEC_MSG_GET_REQ};
    m.get_req.min_revision = opts != NULL ? opts->min_revision : 0;
    return async_start(a, &m, key, key_len, NULL, 0, false, opts, fn, arg);
}

int trine_async_del(trine_async_t *a, const void *key, size_t key_len,
                    const struct trine_opts *opts, trine_async_fn fn, void *arg)
{
    struct codec_msg m = {.type = CODEC_MSG_DELETE_REQ};
    return async_start(a, &m, key, key_len, NULL, 0, true, opts, fn, arg);
}

int trine_async_cas(trine_async_t *a, const void *key, size_t key_len, uint64_t expected_version,
                    const void *value, size_t value_len, const struct trine_opts *opts,
                    trine_async_fn fn, void *arg)
{
    struct codec_msg m = {.type = CODEC_MSG_CAS_REQ};
    m.cas_req.expected_version = expected_version;
    m.cas_req.ttl_ms = opts != NULL ? opts->ttl_ms : 0;
    return async_start(a, &m, key, key_len, value, value_len, true, opts, fn, arg);
}

unsigned trine_async_inflight(const trine_async_t *a)
{
    return a != NULL ? a->active : 0;
}

/* Poll set: every connection with something to write or to wait for. */
static size_t build_pollset(struct trine_async *a, bool *ready_now)
{
    if (a->cap_pfds < a->n_conns) {
        size_t cap = a->n_conns * 2;
        struct pollfd *p = realloc(a->pfds, cap * sizeof(*p));
        if (p != NULL) a->pfds = p;
        struct aconn **q = realloc(a->pconns, cap * sizeof(struct aconn *));
        if (q != NULL) a->pconns = q;
        if (p == NULL || q == NULL) return 0;
        a->cap_pfds = cap;
    }
    size_t n = 0;
    for (size_t i = 0; i < a->n_conns; i++) {
        struct aconn *cn = a->conns[i];
        if (cn->dead || (cn->inflight == 0 && cn->out.len == 0)) continue;
        if (client_conn_has_pending(cn->cc)) *ready_now = true;
        short ev = POLLIN;
        if (cn->out.len > 0 && cn->want == POLLOUT) ev |= POLLOUT;
        a->pfds[n] = (struct pollfd){.fd = client_conn_fd(cn->cc), .events = ev};
        a->pconns[n++] = cn;
    }
    return n;
}

int trine_async_run(trine_async_t *a, int timeout_ms)
{
    if (a == NULL || a->in_run || a->closing) return -TRINE_EINVALID;
    a->in_run = true;
    a->done = 0;
    uint64_t start = clock_mono_ns();
    uint64_t end = timeout_ms < 0 ? UINT64_MAX : start + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        uint64_t now = clock_mono_ns();
        calls_scan(a, now);
        for (size_t i = 0; i < a->n_conns; i++)
            if (a->conns[i]->out.len > 0 && a->conns[i]->want != POLLOUT)
                conn_flush(a, a->conns[i]);
        conns_reap(a);
        if (a->done > 0 || a->active == 0 || now >= end) {
            a->in_run = false;
            return (int)a->done;
        }
        bool ready_now = false;
        size_t n = build_pollset(a, &ready_now);
        /* Wake for the next deadline check or due retry (the scan above saw them all). */
        uint64_t until = a->scan_at_ns < a->retry_due_ns ? a->scan_at_ns : a->retry_due_ns;
        if (until < now) until = now;
        if (end < until) until = end;
        uint64_t wait_ms = ready_now ? 0 : (until - now + 999999u) / 1000000u;
        int r = poll(a->pfds, n, wait_ms > 1000 ? 1000 : (int)wait_ms);
        if (r <= 0 && !ready_now) continue;
        for (size_t i = 0; i < n; i++) {
            struct aconn *cn = a->pconns[i];
            short re = a->pfds[i].revents;
            if (cn->dead) continue;
            if ((re & POLLOUT) || (cn->want == POLLIN && (re & POLLIN))) conn_flush(a, cn);
            if (!cn->dead &&
                ((re & (POLLIN | POLLERR | POLLHUP)) || client_conn_has_pending(cn->cc)))
                conn_read(a, cn);
        }
    }
}

void trine_async_close(trine_async_t *a)
{
    if (a == NULL) return;
    a->closing = true; /* callbacks run below cannot start calls */
    for (uint32_t i = 0; i < a->n_slots; i++) {
        struct acall *k = a->slots[i];
        if (!k->live) continue;
        if (k->retry_at_ns != 0) a->waiting--;
        err_set(&k->err, -TRINE_ECLOSED, "the async engine was closed");
        call_complete(a, k, -TRINE_ECLOSED, NULL, 0);
    }
    for (size_t i = 0; i < a->n_conns; i++)
        conn_close(a->conns[i]);
    for (uint32_t i = 0; i < a->n_slots; i++) {
        buf_free(&a->slots[i]->data);
        free(a->slots[i]);
    }
    free(a->slots);
    free(a->free_slots);
    free(a->conns);
    free(a->pfds);
    free(a->pconns);
    codec_scratch_free(a->scratch);
    free(a);
}
