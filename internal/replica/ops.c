/*
 * ops.c - client operations on hosted partitions and their waiters.
 *
 * Writes (leader only) are proposed at once; the waiter sits in the group's
 * `writes` list in index order and completes:
 *   fast    when u.leader_durable_index covers it in the term it was proposed
 *           (this node is still leader and has it durable): revision = index,
 *           version 0 (decided at apply, not known yet), acks 1+. A fast CAS is
 *           served as strong (its outcome exists only at apply) and says so.
 *   strong  when the entry is applied: the store's result.
 *   all     when applied AND every voter's durable match index (from append
 *           responses) reaches it; a voter unreachable before the proposal ->
 *           UNAVAILABLE and nothing is proposed; one lost while waiting ->
 *           UNAVAILABLE with the revision (it may be committed).
 * An entry applied at the waiter's index with another term means the
 * proposal was truncated: NOT_LEADER, "not applied". An exact rollback fails
 * the waiters of its range the same way. A timeout is TIMEOUT, outcome unknown.
 *
 * Reads: fast serves the local applied state (after min_revision, waiting up
 * to the timeout, else STALE); strong/all run raft_read_index (leader or
 * follower) and serve once applied >= max(read index, min_revision).
 *
 * Completions of writes and failures are queued (done_q) and delivered by
 * ops_flush_done outside any Raft iteration; a served read calls done directly
 * (its value points into the store's read buffer) from ops_serve_reads, which
 * runs after a group's updates are handled.
 */
#include <stdlib.h>
#include <string.h>

#include "base/assert.h"
#include "metrics/metrics.h"
#include "replica/replica_int.h"

#define SCAN_DEFAULT 1000u
#define SCAN_MAX     10000u

/* ---- waiters ---------------------------------------------------------------------------- */

static void wl_remove(struct wlist *l, struct waiter *w)
{
    if (!l) return;
    if (w->prev)
        w->prev->next = w->next;
    else
        l->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        l->tail = w->prev;
    w->prev = w->next = NULL;
    w->list = NULL;
}

static void wl_push(struct wlist *l, struct waiter *w)
{
    w->list = l;
    w->next = NULL;
    w->prev = l->tail;
    if (l->tail)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
}

/* Inserts in index order, after waiters with the same index (stable). */
static void wl_insert_sorted(struct wlist *l, struct waiter *w)
{
    w->list = l;
    struct waiter *after = l->tail;
    while (after && after->index > w->index)
        after = after->prev;
    w->prev = after;
    w->next = after ? after->next : l->head;
    if (w->next)
        w->next->prev = w;
    else
        l->tail = w;
    if (after)
        after->next = w;
    else
        l->head = w;
}

static struct waiter *waiter_new(struct replica *r, struct group *g, uint8_t kind,
                                 uint32_t timeout_ms, replica_done_fn done, void *arg)
{
    struct waiter *w = calloc(1, sizeof(*w));
    if (!w) return NULL;
    w->id = ++r->next_waiter_id;
    w->g = g;
    w->kind = kind;
    w->done = done;
    w->arg = arg;
    w->deadline_ms = rep_now_ms(r) + (timeout_ms ? timeout_ms : r->cfg.default_timeout_ms);
    w->gnext = r->all_head;
    if (r->all_head) r->all_head->gprev = w;
    r->all_head = w;
    r->n_waiters++;
    return w;
}

static void waiter_free(struct replica *r, struct waiter *w)
{
    wl_remove(w->list, w);
    if (w->gprev)
        w->gprev->gnext = w->gnext;
    else
        r->all_head = w->gnext;
    if (w->gnext) w->gnext->gprev = w->gprev;
    free(w->key);
    free(w->prefix);
    free(w->start_after);
    free(w);
    r->n_waiters--;
}

static void result_base(struct group *g, struct replica_result *res)
{
    memset(res, 0, sizeof(*res));
    res->message = "";
    res->served_by = g ? g->rep->cfg.node_id : 0;
    if (!g) return;
    res->applied_index = g->applied;
    res->leader_hint = g->leader ? g->leader : raft_leader(g->raft);
}

static uint8_t acks_for(const struct group *g, uint64_t index)
{
    uint8_t n = 1;
    for (uint32_t i = 0; i < g->n_peers; i++)
        if (g->peers[i].voter && g->peers[i].match >= index) n++;
    return n;
}

/* Queues the completion and frees the waiter. */
static void finish(struct replica *r, struct waiter *w, const struct replica_result *res)
{
    if (r->n_done == r->cap_done) {
        uint32_t cap = r->cap_done ? r->cap_done * 2 : 64;
        struct done_item *n = realloc(r->done_q, cap * sizeof(*n));
        TRINE_ASSERT(n != NULL); /* cannot report an answer we lost; out of memory is fatal */
        r->done_q = n;
        r->cap_done = cap;
    }
    r->done_q[r->n_done++] = (struct done_item){.done = w->done, .arg = w->arg, .res = *res};
    waiter_free(r, w);
}

static void fail(struct replica *r, struct waiter *w, int status, const char *why)
{
    struct replica_result res;
    result_base(w->g, &res);
    res.status = status;
    res.message = why;
    res.consistency = w->served;
    if (w->kind == W_WRITE) {
        res.revision = w->applied ? w->index : 0;
        res.expire_at_ms = w->expire_at_ms;
        res.acks = acks_for(w->g, w->index);
    }
    finish(r, w, &res);
}

void ops_flush_done(struct replica *r)
{
    for (uint32_t i = 0; i < r->n_done; i++) {
        struct done_item it = r->done_q[i];
        if (it.done) it.done(it.arg, &it.res);
    }
    r->n_done = 0;
}

/* ---- writes ----------------------------------------------------------------------------- */

static void write_result(struct waiter *w, const struct store_result *sr,
                         struct replica_result *res)
{
    result_base(w->g, res);
    res->status = sr->status;
    res->message =
        sr->status == -TRINE_ESTALE ? "retry older than the dedupe window: not applied" : "";
    res->consistency = w->served;
    res->revision = sr->revision;
    res->version = sr->version;
    res->expire_at_ms = w->expire_at_ms;
    res->duplicate = (sr->flags & STORE_RESULT_DUPLICATE) != 0;
    res->acks = acks_for(w->g, w->index);
    if (sr->status == 0 && w->op != REPLICA_DELETE) {
        res->mod_revision = sr->revision;
        if (sr->version == 1) res->create_revision = sr->revision; /* else unknown here */
    }
}

void ops_on_leader_durable(struct group *g, uint64_t index, uint64_t term)
{
    struct replica *r = g->rep;
    struct waiter *w = g->writes.head;
    while (w && w->index <= index) {
        struct waiter *next = w->next;
        if (w->served == REPLICA_FAST && w->term == term) {
            struct replica_result res;
            result_base(g, &res);
            res.consistency = REPLICA_FAST;
            res.revision = w->index;
            res.expire_at_ms = w->expire_at_ms;
            res.acks = acks_for(g, w->index);
            finish(r, w, &res);
        }
        w = next;
    }
}

void ops_on_applied(struct group *g, const struct raft_entry *e, const struct store_result *sr,
                    const struct store_op *op)
{
    (void)op;
    struct replica *r = g->rep;
    struct waiter *w;
    while ((w = g->writes.head) != NULL && w->index <= e->index) {
        wl_remove(&g->writes, w);
        if (w->index < e->index) {
            fail(r, w, -TRINE_ETIMEOUT, "entry replaced by a snapshot; outcome unknown");
        } else if (w->term != e->term) {
            fail(r, w, -TRINE_ENOT_LEADER,
                 "leadership lost before commit; the write was not applied");
        } else if (w->want == REPLICA_ALL) {
            w->applied = true;
            w->sres = *sr;
            wl_push(&g->alls, w);
        } else {
            struct replica_result res;
            write_result(w, sr, &res);
            finish(r, w, &res);
        }
    }
}

void ops_check_alls(struct group *g)
{
    struct waiter *w = g->alls.head;
    while (w) {
        struct waiter *next = w->next;
        if (acks_for(g, w->index) == g->n_peers + 1) {
            struct replica_result res;
            write_result(w, &w->sres, &res);
            finish(g->rep, w, &res);
        }
        w = next;
    }
}

void ops_unavailable_alls(struct group *g, uint64_t now_ms)
{
    const struct peer *down = NULL;
    for (uint32_t i = 0; i < g->n_peers && !down; i++)
        if (g->peers[i].voter && !group_peer_active(g, &g->peers[i], now_ms)) down = &g->peers[i];
    if (!down) return;
    struct wlist *lists[] = {&g->alls, &g->writes};
    for (size_t k = 0; k < 2; k++) {
        struct waiter *w = lists[k]->head;
        while (w) {
            struct waiter *next = w->next;
            if (w->want == REPLICA_ALL)
                fail(g->rep, w, -TRINE_EUNAVAILABLE,
                     w->applied ? "a replica became unreachable: committed (strong) but not on "
                                  "every replica"
                                : "a replica became unreachable; outcome unknown");
            w = next;
        }
    }
}

void ops_fail_range(struct group *g, uint64_t from, uint64_t to, int status, const char *why)
{
    struct waiter *w = g->writes.head;
    while (w && w->index <= to) {
        struct waiter *next = w->next;
        if (w->index >= from) fail(g->rep, w, status, why);
        w = next;
    }
}

void ops_fail_below(struct group *g, uint64_t upto, int status, const char *why)
{
    struct waiter *w = g->writes.head;
    while (w && w->index <= upto) {
        struct waiter *next = w->next;
        fail(g->rep, w, status, why);
        w = next;
    }
}

static const uint8_t cmd_ops[] = {
    [REPLICA_PUT] = CODEC_CMD_OP_PUT,
    [REPLICA_DELETE] = CODEC_CMD_OP_DELETE,
    [REPLICA_CAS] = CODEC_CMD_OP_CAS,
};

static int now_answer(struct replica_result *res, int status, const char *why)
{
    res->status = status;
    res->message = why;
    return REPLICA_NOW;
}

int replica_write(struct replica *r, const struct replica_write *wr, replica_done_fn done,
                  void *arg, struct replica_result *res)
{
    struct group *g = rep_group(r, wr->partition);
    result_base(g, res);
    res->consistency = wr->consistency;
    if (!g) return now_answer(res, -TRINE_ENOT_LEADER, "partition not hosted on this node");
    if (wr->op < REPLICA_PUT || wr->op > REPLICA_CAS || wr->consistency > REPLICA_ALL ||
        wr->key_len == 0 || !wr->key || (wr->value_len && !wr->value))
        return now_answer(res, -TRINE_EBAD_REQUEST, "bad write request");
    if (wr->key_len > r->lim.key_bytes_max || wr->value_len > r->lim.value_bytes_max)
        return now_answer(res, -TRINE_ETOO_LARGE, "key or value over the limit");
    if (r->shutting_down) return now_answer(res, -TRINE_ENOT_LEADER, "node shutting down");
    if (g->role != RAFT_LEADER) return now_answer(res, -TRINE_ENOT_LEADER, "not the primary");
    if (r->n_waiters >= r->cfg.pending_max)
        return now_answer(res, -TRINE_EBUSY, "too many operations pending");
    uint64_t now = rep_now_ms(r);
    if (wr->consistency == REPLICA_ALL) {
        for (uint32_t i = 0; i < g->n_peers; i++)
            if (g->peers[i].voter && !group_peer_active(g, &g->peers[i], now))
                return now_answer(res, -TRINE_EUNAVAILABLE,
                                  "a replica of the partition is unreachable; nothing written");
    }
    uint64_t real = rep_real_ms(r);
    struct cmd c = {.op = cmd_ops[wr->op],
                    .key = wr->key,
                    .key_len = wr->key_len,
                    .value = wr->op == REPLICA_DELETE ? NULL : wr->value,
                    .value_len = wr->op == REPLICA_DELETE ? 0 : wr->value_len,
                    .expected_version = wr->op == REPLICA_CAS ? wr->expected_version : 0,
                    .expire_at_ms = wr->ttl_ms && wr->op != REPLICA_DELETE ? real + wr->ttl_ms : 0,
                    .client_id = wr->client_id,
                    .seq = wr->seq,
                    .now_ms = real,
                    .fast = wr->consistency == REPLICA_FAST && wr->op != REPLICA_CAS};
    int rc = cmd_encode(r, &c, &r->cmd_buf);
    if (rc < 0) return now_answer(res, rc, "command does not encode");
    uint64_t index, term;
    rc = raft_propose(g->raft, now, r->cmd_buf.data, (uint32_t)r->cmd_buf.len, &index, &term);
    if (rc < 0) {
        res->leader_hint = raft_leader(g->raft);
        return now_answer(res, rc,
                          rc == -TRINE_EBUSY ? "primary busy (transfer or backlog)"
                                             : "proposal refused");
    }
    struct waiter *w = waiter_new(r, g, W_WRITE, wr->timeout_ms, done, arg);
    TRINE_ASSERT(w != NULL); /* the entry is in the log: its answer must not be lost */
    w->op = wr->op;
    w->want = wr->consistency;
    w->served =
        wr->op == REPLICA_CAS && wr->consistency == REPLICA_FAST ? REPLICA_STRONG : wr->consistency;
    w->index = index;
    w->term = term;
    w->expire_at_ms = c.expire_at_ms;
    wl_insert_sorted(&g->writes, w);
    r->stats.proposals++;
    if (r->m_proposals) metric_inc(r->m_proposals);
    r->dirty = true;
    return REPLICA_LATER;
}

/* ---- reads ------------------------------------------------------------------------------ */

struct scan_acc {
    struct replica *r;
    uint32_t n;
    int rc;
};

static int scan_one(void *arg, const struct store_kv *kv)
{
    struct scan_acc *a = arg;
    struct replica *r = a->r;
    if (a->n == r->cap_scan_items) {
        uint32_t cap = r->cap_scan_items ? r->cap_scan_items * 2 : 64;
        struct replica_kv *n = realloc(r->scan_items, cap * sizeof(*n));
        if (!n) return -TRINE_ENOMEM;
        r->scan_items = n;
        size_t *o = realloc(r->scan_offs, 2 * (size_t)cap * sizeof(*o));
        if (!o) return -TRINE_ENOMEM;
        r->scan_offs = o;
        r->cap_scan_items = cap;
    }
    /* Offsets now, pointers once the buffer stops moving. */
    size_t *off = &r->scan_offs[2 * (size_t)a->n];
    struct replica_kv *it = &r->scan_items[a->n++];
    off[0] = r->scan_buf.len;
    it->key_len = (uint32_t)kv->key_len;
    if (buf_append(&r->scan_buf, kv->key, kv->key_len) < 0) return -TRINE_ENOMEM;
    off[1] = r->scan_buf.len;
    it->value_len = (uint32_t)kv->value_len;
    if (buf_append(&r->scan_buf, kv->value, kv->value_len) < 0) return -TRINE_ENOMEM;
    it->version = kv->version;
    it->create_revision = kv->create_revision;
    it->mod_revision = kv->mod_revision;
    it->expire_at_ms = kv->expire_at_ms;
    return 0;
}

struct read_args {
    uint8_t kind;
    const uint8_t *key, *prefix, *start_after;
    uint32_t key_len, prefix_len, start_after_len, limit;
};

static void serve(struct group *g, const struct read_args *a, uint8_t served,
                  struct replica_result *res)
{
    struct replica *r = g->rep;
    result_base(g, res);
    res->consistency = served;
    res->revision = g->applied;
    uint64_t now = rep_real_ms(r);
    if (a->kind == W_GET) {
        struct store_kv kv;
        int rc = store_get(r->store, g->partition, a->key, a->key_len, now, &kv);
        res->status = rc;
        if (rc == 0) {
            res->value = kv.value;
            res->value_len = (uint32_t)kv.value_len;
            res->version = kv.version;
            res->create_revision = kv.create_revision;
            res->mod_revision = kv.mod_revision;
            res->expire_at_ms = kv.expire_at_ms;
        } else if (rc != -TRINE_ENOT_FOUND) {
            res->message = store_err(r->store)->msg;
        }
        return;
    }
    uint32_t limit = a->limit ? a->limit : SCAN_DEFAULT;
    if (limit > SCAN_MAX) limit = SCAN_MAX;
    buf_reset(&r->scan_buf);
    struct scan_acc acc = {.r = r};
    int rc = store_scan(r->store, g->partition, a->prefix, a->prefix_len, a->start_after,
                        a->start_after_len, limit + 1, now, scan_one, &acc);
    res->status = rc;
    if (rc < 0) {
        res->message = store_err(r->store)->msg;
        return;
    }
    res->more = acc.n > limit;
    res->n_items = acc.n > limit ? limit : acc.n;
    for (uint32_t i = 0; i < res->n_items; i++) {
        struct replica_kv *it = &r->scan_items[i];
        it->key = r->scan_buf.data + r->scan_offs[2 * (size_t)i];
        it->value = r->scan_buf.data + r->scan_offs[2 * (size_t)i + 1];
    }
    res->items = r->scan_items;
}

static uint8_t *dup(const uint8_t *p, uint32_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    if (d && n) memcpy(d, p, n);
    return d;
}

static int start_read(struct replica *r, const struct replica_read *rd, uint8_t kind,
                      replica_done_fn done, void *arg, struct replica_result *res)
{
    struct group *g = rep_group(r, rd->partition);
    result_base(g, res);
    if (!g) return now_answer(res, -TRINE_ENOT_LEADER, "partition not hosted on this node");
    struct read_args a = {.kind = kind,
                          .key = rd->key,
                          .key_len = rd->key_len,
                          .prefix = rd->prefix,
                          .prefix_len = rd->prefix_len,
                          .start_after = rd->start_after,
                          .start_after_len = rd->start_after_len,
                          .limit = rd->limit};
    if (rd->consistency > REPLICA_ALL || (kind == W_GET && (rd->key_len == 0 || !rd->key)))
        return now_answer(res, -TRINE_EBAD_REQUEST, "bad read request");
    if (rd->key_len > r->lim.key_bytes_max || rd->prefix_len > r->lim.key_bytes_max ||
        rd->start_after_len > r->lim.key_bytes_max)
        return now_answer(res, -TRINE_ETOO_LARGE, "key over the limit");
    uint8_t served = rd->consistency == REPLICA_FAST ? REPLICA_FAST : REPLICA_STRONG;
    if (served == REPLICA_FAST && g->applied >= rd->min_revision) {
        serve(g, &a, served, res);
        return REPLICA_NOW;
    }
    if (r->n_waiters >= r->cfg.pending_max)
        return now_answer(res, -TRINE_EBUSY, "too many operations pending");
    struct waiter *w = waiter_new(r, g, kind, rd->timeout_ms, done, arg);
    if (!w) return now_answer(res, -TRINE_ENOMEM, "out of memory");
    w->want = rd->consistency;
    w->served = served;
    w->min_revision = rd->min_revision;
    w->key_len = rd->key_len;
    w->prefix_len = rd->prefix_len;
    w->start_after_len = rd->start_after_len;
    w->limit = rd->limit;
    w->key = dup(rd->key, rd->key_len);
    w->prefix = dup(rd->prefix, rd->prefix_len);
    w->start_after = dup(rd->start_after, rd->start_after_len);
    wl_push(&g->reads, w);
    if (!w->key || !w->prefix || !w->start_after) {
        waiter_free(r, w);
        return now_answer(res, -TRINE_ENOMEM, "out of memory");
    }
    if (served == REPLICA_FAST) {
        w->ready = true;
        w->min_wait = true;
        w->index = rd->min_revision;
        return REPLICA_LATER;
    }
    int rc = raft_read_index(g->raft, rep_now_ms(r), w->id);
    if (rc < 0) {
        waiter_free(r, w);
        res->leader_hint = raft_leader(g->raft);
        return now_answer(res, rc,
                          rc == -TRINE_EBUSY ? "too many reads pending"
                                             : "no leader known for ReadIndex");
    }
    r->dirty = true;
    return REPLICA_LATER;
}

int replica_get(struct replica *r, const struct replica_read *rd, replica_done_fn done, void *arg,
                struct replica_result *res)
{
    return start_read(r, rd, W_GET, done, arg, res);
}

int replica_scan(struct replica *r, const struct replica_read *rd, replica_done_fn done, void *arg,
                 struct replica_result *res)
{
    return start_read(r, rd, W_SCAN, done, arg, res);
}

void ops_on_read_index(struct group *g, const struct raft_read *rd)
{
    for (struct waiter *w = g->reads.head; w; w = w->next) {
        if (w->id != rd->context || w->ready) continue;
        if (rd->status < 0) {
            fail(g->rep, w, rd->status, "leadership changed during ReadIndex; retry");
            return;
        }
        w->ready = true;
        w->index = rd->index > w->min_revision ? rd->index : w->min_revision;
        return;
    }
}

void ops_fail_unready_reads(struct group *g, int status, const char *why)
{
    struct waiter *w = g->reads.head;
    while (w) {
        struct waiter *next = w->next;
        if (!w->ready && !w->min_wait) fail(g->rep, w, status, why);
        w = next;
    }
}

void ops_serve_reads(struct group *g)
{
    struct waiter *w = g->reads.head;
    while (w) {
        struct waiter *next = w->next;
        if (w->ready && g->applied >= w->index) {
            struct read_args a = {.kind = w->kind,
                                  .key = w->key,
                                  .key_len = w->key_len,
                                  .prefix = w->prefix,
                                  .prefix_len = w->prefix_len,
                                  .start_after = w->start_after,
                                  .start_after_len = w->start_after_len,
                                  .limit = w->limit};
            struct replica_result res;
            serve(g, &a, w->served, &res);
            replica_done_fn done = w->done;
            void *arg = w->arg;
            waiter_free(g->rep, w);
            if (done) done(arg, &res);
        }
        w = next;
    }
}

void ops_timeouts(struct replica *r, uint64_t now_ms)
{
    struct waiter *w = r->all_head;
    while (w) {
        struct waiter *next = w->gnext;
        if (w->deadline_ms <= now_ms) {
            if (w->kind == W_WRITE)
                fail(r, w, -TRINE_ETIMEOUT, "timed out; the outcome of the write is unknown");
            else if (w->min_wait)
                fail(r, w, -TRINE_ESTALE, "this replica has not applied min_revision yet");
            else
                fail(r, w, -TRINE_ETIMEOUT, "read timed out");
        }
        w = next;
    }
}

void ops_fail_all(struct replica *r, int status, const char *why)
{
    struct waiter *w = r->all_head;
    while (w) {
        struct waiter *next = w->gnext;
        fail(r, w, status, why);
        w = next;
    }
    ops_flush_done(r);
}
