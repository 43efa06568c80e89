/*
 * cmd.c - the `command` payload of Raft entries, and the rollback file.
 *
 * A command is proto's `command` message body (codec_encode_body). Its now_ms
 * is the primary's wall clock at proposal: store_op.now_ms makes TTL decisions
 * at apply identical on every replica.
 *
 * Rollback file (data_dir/rollbacks.jsonl): one JSON object a line, appended
 * and fdatasync'ed BEFORE the truncation that drops the entries is submitted:
 *   {"partition":P,"index":I,"term":T,"op":"put","key":"k","client_id":C,
 *    "seq":S,"time_ms":MS,"exact":true}
 * key bytes outside printable ASCII are written as \u00XX (one per byte).
 * exact=false: the cause was a snapshot, and the entry may in fact be
 * committed inside it (counted apart, as uncertain).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/assert.h"
#include "base/log.h"
#include "metrics/metrics.h"
#include "replica/replica_int.h"

int cmd_encode(struct replica *r, const struct cmd *c, struct buf *out)
{
    struct codec_msg m = {.type = CODEC_MSG_COMMAND};
    m.command.op = c->op;
    m.command.key = (struct codec_bytes){.data = c->key, .len = c->key_len};
    m.command.value = (struct codec_bytes){.data = c->value, .len = c->value_len};
    m.command.expected_version = c->expected_version;
    m.command.expire_at_ms = c->expire_at_ms;
    m.command.client_id = c->client_id;
    m.command.seq = c->seq;
    m.command.expect_mod_revision = c->expect_mod_revision;
    m.command.now_ms = c->now_ms;
    m.command.fast = c->fast;
    buf_reset(out);
    struct trine_err err = {0};
    int rc = codec_encode_body(out, &m, &r->lim, &err);
    return rc < 0 ? rc : 0;
}

int cmd_decode(struct replica *r, const uint8_t *data, uint32_t len, struct cmd *c)
{
    struct codec_msg m;
    struct trine_err err = {0};
    int rc = codec_decode(data, len, &r->lim, NULL, &m, &err);
    if (rc < 0) return rc;
    if (m.type != CODEC_MSG_COMMAND) return -TRINE_EBAD_REQUEST;
    memset(c, 0, sizeof(*c));
    c->op = m.command.op;
    c->key = m.command.key.data;
    c->key_len = m.command.key.len;
    c->value = m.command.value.data;
    c->value_len = m.command.value.len;
    c->expected_version = m.command.expected_version;
    c->expire_at_ms = m.command.expire_at_ms;
    c->client_id = m.command.client_id;
    c->seq = m.command.seq;
    c->expect_mod_revision = m.command.expect_mod_revision;
    c->now_ms = m.command.now_ms;
    c->fast = m.command.fast;
    return 0;
}

/* Command op -> store op: a table, indexed by enum codec_cmd_op. */
static const uint8_t op_map[] = {
    [CODEC_CMD_OP_NOOP] = STORE_OP_NOOP,     [CODEC_CMD_OP_PUT] = STORE_OP_PUT,
    [CODEC_CMD_OP_DELETE] = STORE_OP_DELETE, [CODEC_CMD_OP_CAS] = STORE_OP_CAS,
    [CODEC_CMD_OP_EXPIRE] = STORE_OP_EXPIRE, [CODEC_CMD_OP_CONF_CHANGE] = STORE_OP_NOOP,
};

void cmd_to_store_op(struct replica *r, const struct raft_entry *e, struct store_op *op)
{
    memset(op, 0, sizeof(*op));
    op->index = e->index;
    op->term = e->term;
    op->type = STORE_OP_NOOP;
    if (e->type != RAFT_ENTRY_NORMAL || e->len == 0) return;
    struct cmd c;
    if (cmd_decode(r, e->data, e->len, &c) < 0 || c.op >= sizeof(op_map)) {
        /* Never skip a committed entry: another replica (another binary version,
         * docs/testing.md anomaly 1) may decode it, and a skip would make this
         * replica's state diverge silently at the same applied index. */
        struct codec_msg m;
        struct trine_err err = {0};
        codec_decode(e->data, e->len, &r->lim, NULL, &m, &err); /* again, for the reason */
        trine_fatal("replica",
                    "committed entry %llu (term %llu, %u bytes) cannot be decoded (%s): "
                    "stopping rather than skipping it (was it written by a newer version "
                    "of trined?)",
                    (unsigned long long)e->index, (unsigned long long)e->term, e->len,
                    err.msg[0] ? err.msg : "not a command of a known op");
    }
    op->type = op_map[c.op];
    op->key = c.key;
    op->key_len = c.key_len;
    op->value = c.value;
    op->value_len = c.value_len;
    op->expected_version = c.expected_version;
    op->expected_mod_revision = c.expect_mod_revision;
    op->expire_at_ms = c.expire_at_ms;
    op->now_ms = c.now_ms;
    op->client_id = c.client_id;
    op->seq = c.seq;
}

/* ---- rollback file ------------------------------------------------------------------ */

static const char *const op_names[] = {"noop", "put", "delete", "cas", "expire", "conf_change"};

struct rb_ctx {
    struct replica *r;
    struct group *g;
    struct buf *out;
    bool exact;
    uint64_t n;
    uint64_t now;
};

static int json_key(struct buf *b, const uint8_t *k, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        char tmp[8];
        int len;
        if (k[i] >= 0x20 && k[i] < 0x7f && k[i] != '"' && k[i] != '\\') {
            tmp[0] = (char)k[i];
            len = 1;
        } else {
            len = snprintf(tmp, sizeof(tmp), "\\u%04x", k[i]);
        }
        if (buf_append(b, tmp, (size_t)len) < 0) return -TRINE_ENOMEM;
    }
    return 0;
}

static int rb_one(void *arg, const struct raft_entry *e)
{
    struct rb_ctx *c = arg;
    if (!(e->flags & RAFT_ENTRY_LOCAL) || e->type != RAFT_ENTRY_NORMAL || e->len == 0) return 0;
    struct cmd cmd;
    if (cmd_decode(c->r, e->data, e->len, &cmd) < 0) {
        memset(&cmd, 0, sizeof(cmd));
        cmd.fast = true; /* cannot tell: record it rather than risk a silent loss */
    }
    /* Only a fast write can have been acknowledged before commit; a truncated strong or
     * all write was never acknowledged (its waiter fails "not applied"). */
    if (!cmd.fast) return 0;
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "{\"partition\":%u,\"index\":%llu,\"term\":%llu,\"op\":\"%s\",\"key\":\"",
                     c->g->partition, (unsigned long long)e->index, (unsigned long long)e->term,
                     cmd.op < 6 ? op_names[cmd.op] : "?");
    if (buf_append(c->out, head, (size_t)n) < 0 || json_key(c->out, cmd.key, cmd.key_len) < 0)
        return -TRINE_ENOMEM;
    n = snprintf(head, sizeof(head),
                 "\",\"client_id\":%llu,\"seq\":%llu,\"time_ms\":%llu,\"exact\":%s}\n",
                 (unsigned long long)cmd.client_id, (unsigned long long)cmd.seq,
                 (unsigned long long)c->now, c->exact ? "true" : "false");
    if (buf_append(c->out, head, (size_t)n) < 0) return -TRINE_ENOMEM;
    c->n++;
    return 0;
}

static int rb_write(struct replica *r, const struct buf *b)
{
    if (r->rollback_fd < 0) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/rollbacks.jsonl", r->dir);
        r->rollback_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (r->rollback_fd < 0)
            return err_set(&r->err, status_from_errno(errno), "replica: open %s: %s", path,
                           strerror(errno));
    }
    size_t off = 0;
    while (off < b->len) {
        ssize_t w = write(r->rollback_fd, b->data + off, b->len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0)
            return err_set(&r->err, status_from_errno(errno), "replica: rollback file: %s",
                           strerror(errno));
        off += (size_t)w;
    }
    if (!r->cfg.wal_sync_off && fdatasync(r->rollback_fd) < 0)
        return err_set(&r->err, -TRINE_EFSYNC, "replica: rollback file fdatasync: %s",
                       strerror(errno));
    return 0;
}

int rollback_record(struct replica *r, struct group *g, uint64_t from, uint64_t to, bool exact)
{
    if (to > g->log.last) to = g->log.last;
    if (from < g->log.first) from = g->log.first;
    if (from > to) return 0;
    struct buf out;
    buf_init(&out);
    struct rb_ctx c = {.r = r, .g = g, .out = &out, .exact = exact, .now = rep_real_ms(r)};
    uint64_t count = 0;
    int rc = plog_read(g, from, to, rb_one, &c, &count);
    if (rc == 0 && count < to - from + 1) {
        /* Some are still on their way to disk (submitted, not yet synced): wait for them. */
        wal_flush(r->wal);
        buf_reset(&out);
        c.n = 0;
        rc = plog_read(g, from, to, rb_one, &c, &count);
        /* The rest were proposed but never submitted: never durable, never acknowledged
         * (their waiters fail with "not applied"), so there is nothing to record. */
        if (rc == 0 && count < to - from + 1)
            log_part(LOG_LEVEL_INFO, "replica", g->partition,
                     "rollback of [%llu, %llu]: %llu entries were never persisted",
                     (unsigned long long)from, (unsigned long long)to,
                     (unsigned long long)(to - from + 1 - count));
    }
    if (rc == 0 && out.len > 0) rc = rb_write(r, &out);
    buf_free(&out);
    if (rc < 0) return rc;
    if (c.n > 0) {
        if (exact) {
            r->stats.fast_rollbacks += c.n;
            if (r->m_rollbacks) metric_add(r->m_rollbacks, c.n);
        } else {
            r->stats.fast_rollbacks_uncertain += c.n;
            if (r->m_rollbacks_uncertain) metric_add(r->m_rollbacks_uncertain, c.n);
        }
        log_part(LOG_LEVEL_WARN, "replica", g->partition,
                 "%llu fast-mode entr%s in [%llu, %llu] rolled back%s (see rollbacks.jsonl)",
                 (unsigned long long)c.n, c.n == 1 ? "y" : "ies", (unsigned long long)from,
                 (unsigned long long)to, exact ? "" : " (snapshot: possibly committed)");
    }
    return 0;
}
