/*
 * scenario.c - interpreter for the Raft scenario files.
 *
 * One command per line; '#' starts a comment. Nodes are numbered 1..n, one
 * group. Messages wait in a FIFO until delivered or dropped; fsyncs happen
 * right after each command. The checker of the seeded simulator runs after
 * every command and every delivery, so a scenario fails on any safety
 * violation even if its own expectations hold.
 *
 *   cluster N [voters K] [prevote on|off] [checkquorum on|off] [lease on|off]
 *           [msg-entries N] [inflight N] [election MS] [heartbeat MS] [tail N]
 *   campaign N                 start an election on N now
 *   elect N                    campaign, then deliver only (pre)vote traffic until quiet
 *   advance MS                 move time forward, ticking every due node (messages wait)
 *   run MS                     move time forward with a live network: each ms, tick and
 *                              deliver everything (over the links that work) until quiet
 *   deliver [A->B] [TYPE]      deliver matching messages, and their answers, until none
 *                              match (A or B may be *; TYPE as in raft_msg_type_name)
 *   deliver A<->B              deliver both ways between A and B until quiet
 *   deliver-once [A->B] [TYPE] deliver only the matching messages queued now
 *   drop [A->B] [TYPE]         discard matching queued messages
 *   partition 1 2 | 3 4 5      cut every link between the groups (both ways)
 *   cut A->B                   cut one direction
 *   isolate N | heal
 *   crash N | restart N
 *   propose N VALUE [-> STATUS]          a client write (STATUS: OK, NOT_LEADER, BUSY, ...)
 *   load N COUNT               COUNT client writes on N (all must be accepted)
 *   read N CTX [-> STATUS]                ReadIndex with request id CTX
 *   transfer N TO [-> STATUS]
 *   conf N add-learner|promote|remove ID [-> STATUS]
 *   compact N [KEEP]           snapshot at N's applied index, keep KEEP older entries
 *   expect N role follower|pre-candidate|candidate|leader
 *   expect N term T | leader L | commit I | applied I | snapshot I | last I
 *   expect N durable I         last leader_durable_index N reported (fast-mode acks)
 *   expect N log T1 T2 ...     terms of N's entries after its snapshot, in order
 *   expect N voters A B ... | learners A B ... (as N sees the configuration)
 *   expect read CTX INDEX|pending|failed
 *   expect queued [A->B] [TYPE] COUNT
 *   expect rollbacks N COUNT   rollback records N made so far (fast mode)
 */
#include "scenario.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

#define TOK_MAX 32

struct scn {
    struct sim *s;
    const char *path;
    int line;
    char *err;
    size_t err_len;
    FILE *trace;
};

static int fail(struct scn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct scn *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(c->err, c->err_len, "%s:%d: %s", c->path, c->line, msg);
    return -1;
}

static bool parse_u64(const char *t, uint64_t *v)
{
    char *end;
    if (!t || !*t) return false;
    *v = strtoull(t, &end, 10);
    return *end == '\0';
}

static int node_arg(struct scn *c, const char *t, uint64_t *n)
{
    if (!c->s) return fail(c, "no cluster yet");
    if (!parse_u64(t, n) || *n < 1 || *n > c->s->o.nodes)
        return fail(c, "bad node '%s'", t ? t : "");
    return 0;
}

static bool on_off(const char *t, bool *v)
{
    if (!t) return false;
    if (!strcmp(t, "on"))
        *v = true;
    else if (!strcmp(t, "off"))
        *v = false;
    else
        return false;
    return true;
}

static uint8_t msg_type(const char *t)
{
    for (uint8_t k = 1; k <= RAFT_MSG_TYPE_MAX; k++)
        if (!strcmp(t, raft_msg_type_name(k))) return k;
    return 0;
}

/* Parses optional "A->B" and TYPE starting at tok[i]. */
static int filter(struct scn *c, char **tok, int ntok, int i, uint64_t *from, uint64_t *to,
                  uint8_t *type, int *used)
{
    *from = *to = 0;
    *type = 0;
    int start = i;
    if (i < ntok && strstr(tok[i], "->")) {
        char a[16], b[16];
        const char *arrow = strstr(tok[i], "->");
        size_t la = (size_t)(arrow - tok[i]);
        if (la == 0 || la >= sizeof(a)) return fail(c, "bad link '%s'", tok[i]);
        memcpy(a, tok[i], la);
        a[la] = 0;
        snprintf(b, sizeof(b), "%s", arrow + 2);
        if (strcmp(a, "*") && node_arg(c, a, from) < 0) return -1;
        if (strcmp(b, "*") && node_arg(c, b, to) < 0) return -1;
        i++;
    }
    if (i < ntok && msg_type(tok[i])) {
        *type = msg_type(tok[i]);
        i++;
    }
    *used = i - start;
    return 0;
}

static const char *status_of(int rc)
{
    return rc == 0 ? "OK" : status_name(rc);
}

/* "-> STATUS" at tok[i]: compare. */
static int expect_status(struct scn *c, char **tok, int ntok, int i, int rc, const char *what)
{
    const char *want = "OK";
    if (i < ntok) {
        if (strcmp(tok[i], "->") || i + 1 >= ntok) return fail(c, "expected '-> STATUS'");
        want = tok[i + 1];
    }
    if (strcmp(status_of(rc), want))
        return fail(c, "%s returned %s, expected %s", what, status_of(rc), want);
    return 0;
}

static int cmd_cluster(struct scn *c, char **tok, int ntok)
{
    struct sim_opts o;
    sim_opts_default(&o);
    o.manual = true;
    o.cfg.tail_entries = 256;
    o.cfg.tail_bytes = 16384;
    o.cfg.msg_entries_max = 64;
    o.cfg.inflight_max = 8;
    uint64_t n;
    if (ntok < 2 || !parse_u64(tok[1], &n) || n < 1 || n > SIM_NODES_MAX)
        return fail(c, "cluster N (1..%d)", SIM_NODES_MAX);
    o.nodes = (uint32_t)n;
    o.voters = (uint32_t)n;
    for (int i = 2; i < ntok; i += 2) {
        const char *k = tok[i], *v = i + 1 < ntok ? tok[i + 1] : NULL;
        uint64_t x = 0;
        bool ok;
        if (!strcmp(k, "prevote")) {
            ok = on_off(v, &o.cfg.pre_vote);
        } else if (!strcmp(k, "checkquorum")) {
            ok = on_off(v, &o.cfg.check_quorum);
        } else if (!strcmp(k, "lease")) {
            ok = on_off(v, &o.cfg.lease_reads);
        } else if (!strcmp(k, "election")) {
            ok = parse_u64(v, &o.cfg.election_timeout_ms);
        } else if (!strcmp(k, "heartbeat")) {
            ok = parse_u64(v, &o.cfg.heartbeat_ms);
        } else {
            ok = parse_u64(v, &x) && x >= 1 && x <= UINT32_MAX;
            if (!strcmp(k, "voters") && x <= n)
                o.voters = (uint32_t)x;
            else if (!strcmp(k, "msg-entries"))
                o.cfg.msg_entries_max = (uint32_t)x;
            else if (!strcmp(k, "tail"))
                o.cfg.tail_entries = (uint32_t)x;
            else if (!strcmp(k, "inflight") && x <= RAFT_INFLIGHT_MAX)
                o.cfg.inflight_max = (uint32_t)x;
            else
                ok = false;
        }
        if (!ok) return fail(c, "bad cluster option '%s %s'", k, v ? v : "");
    }
    sim_free(c->s);
    c->s = sim_new(&o, 1);
    if (c->trace) {
        c->s->trace_mode = SIM_TRACE_PRINT;
        c->s->trace_out = c->trace;
    } else {
        sim_trace_ring(c->s, 80);
    }
    sim_sync_all(c->s);
    return c->s->failed ? fail(c, "%s", c->s->fail_msg) : 0;
}

static int deliver_loop(struct scn *c, uint64_t from, uint64_t to, uint8_t type)
{
    for (int round = 0; round < 1000; round++) {
        if (sim_pending(c->s, from, to, type) == 0) return 0;
        sim_deliver(c->s, from, to, type, false);
        if (c->s->failed) return 0;
    }
    return fail(c, "messages keep coming after 1000 rounds");
}

static int cmd_partition(struct scn *c, char **tok, int ntok)
{
    int set[SIM_NODES_MAX + 1] = {0};
    int cur = 1;
    for (int i = 1; i < ntok; i++) {
        if (!strcmp(tok[i], "|")) {
            cur++;
            continue;
        }
        uint64_t n;
        if (node_arg(c, tok[i], &n) < 0) return -1;
        set[n] = cur;
    }
    for (uint64_t a = 1; a <= c->s->o.nodes; a++)
        for (uint64_t b = 1; b <= c->s->o.nodes; b++)
            if (set[a] && set[b] && set[a] != set[b]) sim_set_link(c->s, a, b, false);
    sim_trace(c->s, "partition installed");
    return 0;
}

static int ids_match(struct scn *c, const struct raft_conf *conf, uint8_t role, char **tok,
                     int ntok, int i, const char *what)
{
    char have[128] = "", want[128] = "";
    for (uint32_t k = 0; k < conf->n; k++)
        if (conf->servers[k].role == role) {
            size_t l = strlen(have);
            snprintf(have + l, sizeof(have) - l, "%s%llu", l ? " " : "",
                     (unsigned long long)conf->servers[k].id);
        }
    for (; i < ntok; i++) {
        size_t l = strlen(want);
        snprintf(want + l, sizeof(want) - l, "%s%s", l ? " " : "", tok[i]);
    }
    /* Order-insensitive: compare as sets of ids. */
    uint64_t hv[RAFT_SERVERS_MAX], wv[RAFT_SERVERS_MAX];
    int nh = 0, nw = 0;
    for (uint32_t k = 0; k < conf->n; k++)
        if (conf->servers[k].role == role) hv[nh++] = conf->servers[k].id;
    for (char *p = want; *p && nw < RAFT_SERVERS_MAX;) {
        wv[nw++] = strtoull(p, &p, 10);
        while (*p == ' ')
            p++;
    }
    bool same = nh == nw;
    for (int a = 0; same && a < nh; a++) {
        bool found = false;
        for (int b = 0; b < nw; b++)
            found |= hv[a] == wv[b];
        same = found;
    }
    if (!same) return fail(c, "%s are [%s], expected [%s]", what, have, want);
    return 0;
}

static int cmd_expect(struct scn *c, char **tok, int ntok)
{
    struct sim *s = c->s;
    if (ntok < 3) return fail(c, "expect what?");
    if (!strcmp(tok[1], "read")) {
        uint64_t ctx, idx = 0, want;
        if (!parse_u64(tok[2], &ctx) || ntok < 4) return fail(c, "expect read CTX INDEX");
        int st = chk_read_result(s->groups[0].chk, ctx, &idx);
        if (!strcmp(tok[3], "pending")) {
            if (st != 0)
                return fail(c, "read %llu is not pending (%d)", (unsigned long long)ctx, st);
            return 0;
        }
        if (!strcmp(tok[3], "failed")) {
            if (st != -1) return fail(c, "read %llu did not fail", (unsigned long long)ctx);
            return 0;
        }
        if (!parse_u64(tok[3], &want)) return fail(c, "bad index '%s'", tok[3]);
        if (st != 1)
            return fail(c, "read %llu not served (%s)", (unsigned long long)ctx,
                        st == 0 ? "pending" : "failed");
        if (idx != want)
            return fail(c, "read %llu served at index %llu, expected %llu", (unsigned long long)ctx,
                        (unsigned long long)idx, (unsigned long long)want);
        return 0;
    }
    if (!strcmp(tok[1], "queued")) {
        uint64_t from, to, want;
        uint8_t type;
        int used;
        if (filter(c, tok, ntok, 2, &from, &to, &type, &used) < 0) return -1;
        if (2 + used >= ntok || !parse_u64(tok[2 + used], &want))
            return fail(c, "expect queued ... COUNT");
        uint32_t have = sim_pending(s, from, to, type);
        if (have != want)
            return fail(c, "%u messages queued, expected %llu", have, (unsigned long long)want);
        return 0;
    }
    if (!strcmp(tok[1], "rollbacks")) {
        uint64_t n, want;
        if (node_arg(c, tok[2], &n) < 0) return -1;
        if (ntok < 4 || !parse_u64(tok[3], &want)) return fail(c, "expect rollbacks N COUNT");
        uint64_t have = sim_rep(s, 0, n)->rollbacks;
        if (have != want)
            return fail(c, "n%llu recorded %llu rollbacks, expected %llu", (unsigned long long)n,
                        (unsigned long long)have, (unsigned long long)want);
        return 0;
    }
    uint64_t n;
    if (node_arg(c, tok[1], &n) < 0) return -1;
    struct sim_rep *rep = sim_rep(s, 0, n);
    if (!rep->r) return fail(c, "n%llu is down", (unsigned long long)n);
    struct raft_status st;
    raft_status(rep->r, &st);
    const char *what = tok[2];
    if (!strcmp(what, "role")) {
        if (ntok < 4) return fail(c, "expect N role ROLE");
        if (strcmp(raft_role_name(st.role), tok[3]))
            return fail(c, "n%llu is %s, expected %s", (unsigned long long)n,
                        raft_role_name(st.role), tok[3]);
        return 0;
    }
    if (!strcmp(what, "log")) {
        const struct sim_log *l = &rep->w.log;
        char have[512] = "";
        for (uint32_t k = 0; k < l->n; k++) {
            size_t len = strlen(have);
            snprintf(have + len, sizeof(have) - len, "%s%llu", k ? " " : "",
                     (unsigned long long)l->v[k].term);
        }
        char want[512] = "";
        for (int i = 3; i < ntok; i++) {
            size_t len = strlen(want);
            snprintf(want + len, sizeof(want) - len, "%s%s", i > 3 ? " " : "", tok[i]);
        }
        if (strcmp(have, want))
            return fail(c, "n%llu log terms after %llu are [%s], expected [%s]",
                        (unsigned long long)n, (unsigned long long)l->base, have, want);
        return 0;
    }
    if (!strcmp(what, "voters")) return ids_match(c, &st.conf, RAFT_VOTER, tok, ntok, 3, "voters");
    if (!strcmp(what, "learners"))
        return ids_match(c, &st.conf, RAFT_LEARNER, tok, ntok, 3, "learners");
    uint64_t want, have;
    if (ntok < 4 || !parse_u64(tok[3], &want)) return fail(c, "expect N %s VALUE", what);
    if (!strcmp(what, "term"))
        have = st.term;
    else if (!strcmp(what, "leader"))
        have = st.leader;
    else if (!strcmp(what, "commit"))
        have = st.commit;
    else if (!strcmp(what, "applied"))
        have = rep->applied;
    else if (!strcmp(what, "snapshot"))
        have = rep->d.snap.meta.index;
    else if (!strcmp(what, "last"))
        have = st.last_index;
    else if (!strcmp(what, "durable"))
        have = rep->durable_index;
    else
        return fail(c, "unknown expectation '%s'", what);
    if (have != want)
        return fail(c, "n%llu %s is %llu, expected %llu", (unsigned long long)n, what,
                    (unsigned long long)have, (unsigned long long)want);
    return 0;
}

static int run_line(struct scn *c, char **tok, int ntok)
{
    const char *cmd = tok[0];
    if (!strcmp(cmd, "cluster")) return cmd_cluster(c, tok, ntok);
    if (!c->s) return fail(c, "the first command must be 'cluster'");
    struct sim *s = c->s;
    sim_sync_all(s); /* messages held for an fsync are on the wire before any command */
    uint64_t n = 0, m = 0, from, to;
    uint8_t type;
    int used;
    if (!strcmp(cmd, "campaign")) {
        if (ntok < 2 || node_arg(c, tok[1], &n) < 0) return -1;
        return expect_status(c, tok, ntok, 2, sim_campaign(s, 0, n), "campaign");
    }
    if (!strcmp(cmd, "elect")) {
        /* campaign, then deliver only election traffic until it settles */
        if (ntok < 2 || node_arg(c, tok[1], &n) < 0) return -1;
        sim_campaign(s, 0, n);
        sim_sync_all(s);
        static const uint8_t types[] = {RAFT_MSG_PREVOTE, RAFT_MSG_PREVOTE_RESP, RAFT_MSG_VOTE,
                                        RAFT_MSG_VOTE_RESP};
        for (int round = 0; round < 100 && !s->failed; round++) {
            uint32_t any = 0;
            for (size_t k = 0; k < sizeof(types); k++)
                any += sim_pending(s, 0, 0, types[k]);
            if (!any) return 0;
            for (size_t k = 0; k < sizeof(types); k++)
                sim_deliver(s, 0, 0, types[k], false);
        }
        return 0;
    }
    if (ntok == 2 && strstr(tok[1], "<->") && !strcmp(cmd, "deliver")) {
        char a[16] = "", b[16] = "";
        if (sscanf(tok[1], "%15[0-9]<->%15[0-9]", a, b) != 2 || node_arg(c, a, &from) < 0 ||
            node_arg(c, b, &to) < 0)
            return fail(c, "deliver A<->B");
        for (int round = 0; round < 1000 && !s->failed; round++) {
            if (!sim_pending(s, from, to, 0) && !sim_pending(s, to, from, 0)) return 0;
            sim_deliver(s, from, to, 0, false);
            sim_deliver(s, to, from, 0, false);
        }
        return fail(c, "messages keep coming after 1000 rounds");
    }
    if (!strcmp(cmd, "run")) {
        /* a live network: every millisecond, tick and deliver everything deliverable */
        if (ntok < 2 || !parse_u64(tok[1], &m)) return fail(c, "run MS");
        for (uint64_t k = 0; k < m && !s->failed; k++) {
            sim_advance(s, s->now + 1);
            sim_tick_due(s);
            sim_sync_all(s);
            if (deliver_loop(c, 0, 0, 0) < 0) return -1;
        }
        return 0;
    }
    if (!strcmp(cmd, "advance")) {
        if (ntok < 2 || !parse_u64(tok[1], &m)) return fail(c, "advance MS");
        /* Step in 1 ms increments so every deadline fires at its time. */
        for (uint64_t k = 0; k < m && !s->failed; k++) {
            sim_advance(s, s->now + 1);
            sim_tick_due(s);
            sim_sync_all(s);
        }
        return 0;
    }
    if (!strcmp(cmd, "deliver") || !strcmp(cmd, "deliver-once") || !strcmp(cmd, "drop")) {
        if (filter(c, tok, ntok, 1, &from, &to, &type, &used) < 0) return -1;
        if (1 + used != ntok) return fail(c, "unexpected '%s'", tok[1 + used]);
        if (!strcmp(cmd, "deliver")) return deliver_loop(c, from, to, type);
        sim_deliver(s, from, to, type, !strcmp(cmd, "drop"));
        return 0;
    }
    if (!strcmp(cmd, "partition")) return cmd_partition(c, tok, ntok);
    if (!strcmp(cmd, "cut")) {
        if (ntok != 2 || filter(c, tok, ntok, 1, &from, &to, &type, &used) < 0 || !from || !to)
            return fail(c, "cut A->B");
        sim_set_link(s, from, to, false);
        sim_trace(s, "cut n%llu -> n%llu", (unsigned long long)from, (unsigned long long)to);
        return 0;
    }
    if (!strcmp(cmd, "isolate")) {
        if (ntok < 2 || node_arg(c, tok[1], &n) < 0) return -1;
        for (uint64_t b = 1; b <= s->o.nodes; b++) {
            sim_set_link(s, n, b, false);
            sim_set_link(s, b, n, false);
        }
        sim_trace(s, "isolate n%llu", (unsigned long long)n);
        return 0;
    }
    if (!strcmp(cmd, "heal")) {
        sim_heal(s);
        return 0;
    }
    if (!strcmp(cmd, "crash") || !strcmp(cmd, "restart")) {
        if (ntok < 2 || node_arg(c, tok[1], &n) < 0) return -1;
        if (!strcmp(cmd, "crash"))
            sim_crash(s, n);
        else
            sim_restart(s, n);
        return 0;
    }
    if (!strcmp(cmd, "propose")) {
        if (ntok < 3 || node_arg(c, tok[1], &n) < 0 || !parse_u64(tok[2], &m))
            return fail(c, "propose N VALUE");
        return expect_status(c, tok, ntok, 3, sim_propose(s, 0, n, m), "propose");
    }
    if (!strcmp(cmd, "load")) {
        uint64_t count;
        if (ntok != 3 || node_arg(c, tok[1], &n) < 0 || !parse_u64(tok[2], &count))
            return fail(c, "load N COUNT");
        for (uint64_t k = 0; k < count; k++) {
            int rc = sim_propose(s, 0, n, 1000000 + s->groups[0].next_req++);
            sim_sync_all(s);
            if (rc < 0)
                return fail(c, "load: write %llu returned %s", (unsigned long long)k,
                            status_of(rc));
        }
        return 0;
    }
    if (!strcmp(cmd, "read")) {
        if (ntok < 3 || node_arg(c, tok[1], &n) < 0 || !parse_u64(tok[2], &m) || m == 0)
            return fail(c, "read N CTX");
        return expect_status(c, tok, ntok, 3, sim_read(s, 0, n, m), "read");
    }
    if (!strcmp(cmd, "transfer")) {
        if (ntok < 3 || node_arg(c, tok[1], &n) < 0 || node_arg(c, tok[2], &m) < 0) return -1;
        return expect_status(c, tok, ntok, 3, sim_transfer(s, 0, n, m), "transfer");
    }
    if (!strcmp(cmd, "conf")) {
        static const char *const ops[] = {NULL, "add-learner", "promote", "remove"};
        if (ntok < 4 || node_arg(c, tok[1], &n) < 0 || !parse_u64(tok[3], &m))
            return fail(c, "conf N OP ID");
        int op = 0;
        for (int k = 1; k <= 3; k++)
            if (!strcmp(tok[2], ops[k])) op = k;
        if (!op) return fail(c, "unknown conf op '%s'", tok[2]);
        return expect_status(c, tok, ntok, 4, sim_conf_change(s, 0, n, (enum raft_conf_op)op, m),
                             "conf");
    }
    if (!strcmp(cmd, "compact")) {
        if (ntok < 2 || node_arg(c, tok[1], &n) < 0) return -1;
        uint64_t keep = 0;
        if (ntok > 2 && !parse_u64(tok[2], &keep)) return fail(c, "compact N [KEEP]");
        sim_compact(s, 0, n, (uint32_t)keep);
        return 0;
    }
    if (!strcmp(cmd, "expect")) return cmd_expect(c, tok, ntok);
    return fail(c, "unknown command '%s'", cmd);
}

int scenario_run_file(const char *path, FILE *trace, char *err, size_t err_len)
{
    struct scn c = {.path = path, .err = err, .err_len = err_len, .trace = trace};
    err[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, err_len, "%s: cannot open", path);
        return -1;
    }
    char buf[512];
    int rc = 0;
    while (rc == 0 && fgets(buf, sizeof(buf), f)) {
        c.line++;
        char *hash = strchr(buf, '#');
        if (hash) *hash = 0;
        char *tok[TOK_MAX];
        int ntok = 0;
        for (char *p = strtok(buf, " \t\r\n"); p && ntok < TOK_MAX; p = strtok(NULL, " \t\r\n"))
            tok[ntok++] = p;
        if (ntok == 0) continue;
        if (c.s) sim_trace(c.s, "> %s:%d", path, c.line);
        rc = run_line(&c, tok, ntok);
        if (rc == 0 && c.s) {
            sim_sync_all(c.s);
            chk_step(c.s);
            if (c.s->failed) rc = fail(&c, "invariant violated: %s", c.s->fail_msg);
        }
    }
    fclose(f);
    if (rc < 0 && c.s && !trace) {
        size_t len = strlen(err);
        snprintf(err + len, err_len - len, "\n---- last trace lines ----\n");
        FILE *mem = fmemopen(err + strlen(err), err_len - strlen(err) - 1, "w");
        if (mem) {
            sim_trace_dump(c.s, mem);
            fclose(mem);
        }
    }
    if (rc == 0 && c.s && c.s->failed) rc = fail(&c, "invariant violated: %s", c.s->fail_msg);
    sim_free(c.s);
    return rc;
}
