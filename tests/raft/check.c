/*
 * check.c - the simulator's safety checker, one per group, fed by hooks in
 * sim.c after every update and every step.
 *
 * Invariants checked (dissertation Figure 3.2 and chapter 6):
 *   election safety      at most one leader per term (leader_of_term[]);
 *   log matching         two logs holding an entry with the same index and
 *                        term hold the same history up to it: every entry
 *                        any replica writes carries a chain hash of its whole
 *                        prefix, and (index, term) -> chain must be unique;
 *   leader completeness  a replica that becomes leader holds the newest
 *                        committed entry (hence all of them);
 *   state machine safety every applied entry's chain equals the committed
 *                        one at that index; installed snapshots too; commit
 *                        indexes reported by any replica agree with the
 *                        committed history;
 *   durability           no committed entry is ever lost: when the commit
 *                        index advances, the newest committed entry is on
 *                        the durable storage of a majority of the committing
 *                        leader's voters, and that count never drops;
 *   linearizability      writes are acknowledged by the node that took them
 *                        once it applies them; reads are served once the
 *                        serving replica applied its read index. With the
 *                        single committed order, a history is linearizable
 *                        iff each operation's result index is >= V at its
 *                        invocation, where V is the largest index any
 *                        completed operation has exposed so far (reads must
 *                        see everything visible before they began, writes
 *                        must be ordered after it);
 *   fast mode            every entry acknowledged by leader_durable_index is
 *                        either committed at that index and term or was
 *                        reported as a rollback by that node (chk_final).
 */
#include <stdlib.h>
#include <string.h>

#include "sim.h"

struct com_ent {
    uint64_t term;
    uint64_t chain;
};

struct wreq {
    uint64_t invoke;
    uint64_t v0;
    bool used;
    bool acked;
};

enum { RD_NONE = 0, RD_WAIT, RD_READY, RD_SERVED, RD_FAILED };

struct rread {
    uint64_t node;
    uint64_t invoke;
    uint64_t v0;
    uint64_t index;
    uint64_t served;
    int state;
};

struct fastack {
    uint64_t node;
    uint64_t index;
    uint64_t term;
};

struct rb {
    uint64_t node;
    uint64_t index;
    uint64_t term;
};

struct mapent {
    uint64_t index; /* 0 = empty */
    uint64_t term;
    uint64_t chain;
};

struct chk {
    struct com_ent *com; /* com[i - 1]: committed entry i */
    uint64_t n_com;
    uint64_t cap_com;
    uint32_t quorum;
    uint64_t *lot; /* leader of term */
    uint64_t cap_lot;
    struct mapent *map;
    uint64_t map_cap;
    uint64_t map_n;
    uint64_t V;
    struct wreq *reqs;
    uint64_t cap_reqs;
    struct rread *reads;
    uint64_t cap_reads;
    uint64_t *ready;
    uint32_t n_ready;
    uint32_t cap_ready;
    struct fastack *fasts;
    uint32_t n_fasts;
    uint32_t cap_fasts;
    struct rb *rbs;
    uint32_t n_rbs;
    uint32_t cap_rbs;
    uint64_t pending_writes;
    uint64_t pending_reads;
};

#define GROW(p, cap, need)                                                                         \
    do {                                                                                           \
        if ((need) > (cap)) {                                                                      \
            uint64_t nc = (cap) ? (cap) : 16;                                                      \
            while (nc < (need))                                                                    \
                nc *= 2;                                                                           \
            p = realloc(p, nc * sizeof(*(p)));                                                     \
            if (!p) abort();                                                                       \
            memset((p) + (cap), 0, (nc - (cap)) * sizeof(*(p)));                                   \
            cap = nc;                                                                              \
        }                                                                                          \
    } while (0)

static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

uint64_t chain_next(uint64_t prev, uint64_t term, uint64_t index, uint8_t type, const uint8_t *data,
                    uint32_t len)
{
    uint64_t h = mix(prev + 0x9e3779b97f4a7c15u) ^ mix(term * 0x100000001b3u + index) ^ type;
    for (uint32_t i = 0; i < len; i++)
        h = (h ^ data[i]) * 0x100000001b3u;
    return mix(h);
}

struct chk *chk_new(void)
{
    struct chk *c = calloc(1, sizeof(*c));
    if (!c) abort();
    return c;
}

void chk_free(struct chk *c)
{
    if (!c) return;
    free(c->com);
    free(c->lot);
    free(c->map);
    free(c->reqs);
    free(c->reads);
    free(c->ready);
    free(c->fasts);
    free(c->rbs);
    free(c);
}

uint64_t chk_commit(const struct chk *c)
{
    return c->n_com;
}

uint64_t chk_pending_writes(const struct chk *c)
{
    return c->pending_writes;
}

bool chk_req_acked(const struct chk *c, uint64_t req)
{
    return req >= 1 && req <= c->cap_reqs && c->reqs[req - 1].acked;
}

uint64_t chk_pending_reads(const struct chk *c)
{
    return c->pending_reads;
}

static const struct sim_entry *at(const struct sim_log *l, uint64_t i)
{
    if (i <= l->base || i > l->base + l->n) return NULL;
    return &l->v[i - l->base - 1];
}

/* ---- log matching --------------------------------------------------------------------- */

static struct mapent *map_slot(struct mapent *map, uint64_t cap, uint64_t index, uint64_t term)
{
    uint64_t h = mix(index * 0x9e3779b97f4a7c15u ^ term) & (cap - 1);
    while (map[h].index && (map[h].index != index || map[h].term != term))
        h = (h + 1) & (cap - 1);
    return &map[h];
}

static void map_grow(struct chk *c)
{
    uint64_t nc = c->map_cap ? c->map_cap * 2 : 1024;
    struct mapent *m = calloc(nc, sizeof(*m));
    if (!m) abort();
    for (uint64_t i = 0; i < c->map_cap; i++)
        if (c->map[i].index) *map_slot(m, nc, c->map[i].index, c->map[i].term) = c->map[i];
    free(c->map);
    c->map = m;
    c->map_cap = nc;
}

void chk_on_append(struct sim_rep *rep, const struct sim_entry *e)
{
    struct chk *c = rep->g->chk;
    if (2 * (c->map_n + 1) > c->map_cap) map_grow(c);
    struct mapent *m = map_slot(c->map, c->map_cap, e->index, e->term);
    if (!m->index) {
        *m = (struct mapent){.index = e->index, .term = e->term, .chain = e->chain};
        c->map_n++;
        return;
    }
    if (m->chain != e->chain)
        sim_fail(rep->s,
                 "log matching: g%u n%llu wrote entry %llu of term %llu with a history that "
                 "differs from another replica's",
                 rep->g->gi, (unsigned long long)rep->id, (unsigned long long)e->index,
                 (unsigned long long)e->term);
}

/* ---- commitment ----------------------------------------------------------------------- */

static uint32_t holders(struct sim *s, struct sim_group *g, uint64_t i)
{
    const struct com_ent *ce = &g->chk->com[i - 1];
    uint32_t n = 0;
    for (uint64_t k = 1; k <= s->o.nodes; k++) {
        const struct sim_state *d = &g->reps[k - 1].d;
        const struct sim_entry *e = at(&d->log, i);
        if ((e && e->chain == ce->chain) || d->snap.meta.index >= i || d->log.base >= i) n++;
    }
    return n;
}

/* Does log l (with its snapshot) hold committed entry i? */
static bool holds(const struct chk *c, const struct sim_log *l, uint64_t i)
{
    if (i == 0) return true;
    const struct sim_entry *e = at(l, i);
    if (e) return e->chain == c->com[i - 1].chain;
    return i <= l->base && (l->base == 0 || l->base_chain == c->com[l->base - 1].chain);
}

void chk_on_soft(struct sim_rep *rep, uint8_t role, uint64_t term, uint64_t commit)
{
    struct chk *c = rep->g->chk;
    struct sim *s = rep->s;
    unsigned gi = rep->g->gi;
    unsigned long long id = rep->id;
    if (role == RAFT_LEADER) {
        GROW(c->lot, c->cap_lot, term + 1);
        if (c->lot[term] == 0) {
            c->lot[term] = rep->id;
            s->elections++;
            if (!holds(c, &rep->w.log, c->n_com))
                sim_fail(s,
                         "leader completeness: g%u n%llu leads term %llu without committed "
                         "entry %llu",
                         gi, id, (unsigned long long)term, (unsigned long long)c->n_com);
        } else if (c->lot[term] != rep->id) {
            sim_fail(s, "election safety: g%u has two leaders in term %llu: n%llu and n%llu", gi,
                     (unsigned long long)term, (unsigned long long)c->lot[term], id);
        }
    }
    if (commit > c->n_com) {
        GROW(c->com, c->cap_com, commit);
        for (uint64_t i = c->n_com + 1; i <= commit; i++) {
            const struct sim_entry *e = at(&rep->w.log, i);
            if (!e) {
                sim_fail(s, "g%u n%llu commits %llu beyond its log (%llu, %llu]", gi, id,
                         (unsigned long long)commit, (unsigned long long)rep->w.log.base,
                         (unsigned long long)(rep->w.log.base + rep->w.log.n));
                return;
            }
            c->com[i - 1] = (struct com_ent){.term = e->term, .chain = e->chain};
        }
        if (!holds(c, &rep->w.log, c->n_com)) {
            sim_fail(s, "g%u n%llu: commit %llu extends a different history", gi, id,
                     (unsigned long long)commit);
            return;
        }
        c->n_com = commit;
        struct raft_status st;
        raft_status(rep->r, &st);
        uint32_t voters = 0;
        for (uint32_t k = 0; k < st.conf.n; k++)
            voters += st.conf.servers[k].role == RAFT_VOTER;
        c->quorum = voters / 2 + 1;
        uint32_t h = holders(s, rep->g, commit);
        if (h < c->quorum)
            sim_fail(s,
                     "durability: g%u entry %llu committed by n%llu is durable on %u nodes, "
                     "quorum %u",
                     gi, (unsigned long long)commit, id, h, c->quorum);
        return;
    }
    if (commit > 0 && commit > rep->w.log.base && !holds(c, &rep->w.log, commit))
        sim_fail(s, "g%u n%llu: its commit index %llu disagrees with the committed entry", gi, id,
                 (unsigned long long)commit);
}

void chk_on_apply(struct sim_rep *rep, const struct raft_entry *e, uint64_t chain)
{
    struct chk *c = rep->g->chk;
    struct sim *s = rep->s;
    if (e->index > c->n_com) {
        sim_fail(s, "g%u n%llu applied %llu beyond the commit index %llu", rep->g->gi,
                 (unsigned long long)rep->id, (unsigned long long)e->index,
                 (unsigned long long)c->n_com);
        return;
    }
    if (c->com[e->index - 1].chain != chain) {
        sim_fail(s,
                 "state machine safety: g%u n%llu applied a different entry %llu (term %llu, "
                 "committed term %llu)",
                 rep->g->gi, (unsigned long long)rep->id, (unsigned long long)e->index,
                 (unsigned long long)e->term, (unsigned long long)c->com[e->index - 1].term);
        return;
    }
    for (uint32_t k = 0; k < rep->n_att; k++) {
        const struct sim_attempt *a = &rep->att[k];
        if (a->index != e->index || a->term != e->term) continue;
        uint64_t req;
        memcpy(&req, e->data, 8);
        if (e->len < 8 || req != a->req) {
            sim_fail(s, "g%u n%llu: entry %llu is not the proposal it acknowledged", rep->g->gi,
                     (unsigned long long)rep->id, (unsigned long long)e->index);
            return;
        }
        struct wreq *w = &c->reqs[a->req - 1];
        if (w->acked) continue;
        if (e->index <= w->v0)
            sim_fail(s,
                     "linearizability: g%u write req %llu acked at index %llu but %llu was "
                     "already visible when it was issued",
                     rep->g->gi, (unsigned long long)a->req, (unsigned long long)e->index,
                     (unsigned long long)w->v0);
        w->acked = true;
        c->pending_writes--;
        if (e->index > c->V) c->V = e->index;
    }
}

void chk_on_install(struct sim_rep *rep, const struct sim_snap *snap)
{
    struct chk *c = rep->g->chk;
    uint64_t i = snap->meta.index;
    if (i > c->n_com || c->com[i - 1].chain != snap->chain || c->com[i - 1].term != snap->meta.term)
        sim_fail(rep->s, "g%u n%llu installed a snapshot at %llu that is not the committed state",
                 rep->g->gi, (unsigned long long)rep->id, (unsigned long long)i);
}

/* ---- client operations ---------------------------------------------------------------- */

void chk_on_write(struct sim_rep *rep, uint64_t req, uint64_t index, uint64_t term)
{
    struct chk *c = rep->g->chk;
    (void)index;
    (void)term;
    GROW(c->reqs, c->cap_reqs, req);
    struct wreq *w = &c->reqs[req - 1];
    if (w->used) return;
    w->used = true;
    w->invoke = rep->s->now;
    w->v0 = c->V;
    c->pending_writes++;
}

void chk_on_read(struct sim_rep *rep, uint64_t ctx)
{
    struct chk *c = rep->g->chk;
    GROW(c->reads, c->cap_reads, ctx);
    struct rread *r = &c->reads[ctx - 1];
    *r = (struct rread){.node = rep->id, .invoke = rep->s->now, .v0 = c->V, .state = RD_WAIT};
    c->pending_reads++;
}

void chk_on_read_ready(struct sim_rep *rep, const struct raft_read *rd)
{
    struct chk *c = rep->g->chk;
    if (rd->context == 0 || rd->context > c->cap_reads) return;
    struct rread *r = &c->reads[rd->context - 1];
    if (r->state != RD_WAIT || r->node != rep->id) return; /* duplicate answer */
    if (rd->status != 0) {
        r->state = RD_FAILED;
        c->pending_reads--;
        return;
    }
    if (rd->index > c->n_com) {
        sim_fail(rep->s, "g%u n%llu: read ctx %llu got read index %llu beyond commit %llu",
                 rep->g->gi, (unsigned long long)rep->id, (unsigned long long)rd->context,
                 (unsigned long long)rd->index, (unsigned long long)c->n_com);
        return;
    }
    r->state = RD_READY;
    r->index = rd->index;
    GROW(c->ready, c->cap_ready, c->n_ready + 1u);
    c->ready[c->n_ready++] = rd->context;
}

int chk_read_result(const struct chk *c, uint64_t ctx, uint64_t *index)
{
    if (ctx == 0 || ctx > c->cap_reads) return -1;
    const struct rread *r = &c->reads[ctx - 1];
    if (r->state == RD_SERVED) {
        *index = r->served;
        return 1;
    }
    return r->state == RD_FAILED || r->state == RD_NONE ? -1 : 0;
}

void chk_on_crash(struct sim_rep *rep)
{
    struct chk *c = rep->g->chk;
    for (uint32_t k = 0; k < c->n_ready;) {
        struct rread *r = &c->reads[c->ready[k] - 1];
        if (r->node == rep->id) {
            r->state = RD_FAILED;
            c->pending_reads--;
            c->ready[k] = c->ready[--c->n_ready];
            continue;
        }
        k++;
    }
    for (uint64_t i = 0; i < c->cap_reads; i++)
        if (c->reads[i].state == RD_WAIT && c->reads[i].node == rep->id) {
            c->reads[i].state = RD_FAILED;
            c->pending_reads--;
        }
}

void chk_on_rollback(struct sim_rep *rep, const struct sim_entry *e, bool exact)
{
    struct chk *c = rep->g->chk;
    (void)exact;
    GROW(c->rbs, c->cap_rbs, c->n_rbs + 1u);
    c->rbs[c->n_rbs++] = (struct rb){.node = rep->id, .index = e->index, .term = e->term};
}

void chk_on_fast(struct sim_rep *rep, uint64_t term, uint64_t durable_index)
{
    struct chk *c = rep->g->chk;
    for (uint32_t k = 0; k < rep->n_att; k++) {
        struct sim_attempt *a = &rep->att[k];
        if (a->fast || a->term != term || a->index > durable_index) continue;
        a->fast = true;
        GROW(c->fasts, c->cap_fasts, c->n_fasts + 1u);
        c->fasts[c->n_fasts++] =
            (struct fastack){.node = rep->id, .index = a->index, .term = a->term};
    }
}

/* ---- per step and final --------------------------------------------------------------- */

void chk_step(struct sim *s)
{
    for (uint32_t gi = 0; gi < s->o.groups && !s->failed; gi++) {
        struct sim_group *g = &s->groups[gi];
        struct chk *c = g->chk;
        if (c->n_com && c->quorum) {
            uint32_t h = holders(s, g, c->n_com);
            if (h < c->quorum)
                sim_fail(s,
                         "durability: g%u committed entry %llu now durable on %u nodes, "
                         "quorum %u",
                         gi, (unsigned long long)c->n_com, h, c->quorum);
        }
        for (uint32_t k = 0; k < c->n_ready;) {
            struct rread *r = &c->reads[c->ready[k] - 1];
            struct sim_rep *rep = sim_rep(s, gi, r->node);
            if (rep->applied < r->index) {
                k++;
                continue;
            }
            r->served = rep->applied;
            if (r->served < r->v0)
                sim_fail(s,
                         "linearizability: g%u n%llu served read ctx %llu at index %llu, but "
                         "%llu was visible when it was issued",
                         gi, (unsigned long long)r->node, (unsigned long long)c->ready[k],
                         (unsigned long long)r->served, (unsigned long long)r->v0);
            if (r->served > c->V) c->V = r->served;
            r->state = RD_SERVED;
            c->pending_reads--;
            s->reads_served++;
            c->ready[k] = c->ready[--c->n_ready];
        }
    }
}

void chk_final(struct sim *s)
{
    for (uint32_t gi = 0; gi < s->o.groups && !s->failed; gi++) {
        struct sim_group *g = &s->groups[gi];
        struct chk *c = g->chk;
        uint64_t leader = sim_leader(s, gi);
        struct raft_status st = {0};
        if (leader) raft_status(sim_rep(s, gi, leader)->r, &st);
        for (uint32_t k = 0; k < c->n_fasts; k++) {
            const struct fastack *f = &c->fasts[k];
            if (f->index <= c->n_com && c->com[f->index - 1].term == f->term) continue;
            bool found = false;
            for (uint32_t j = 0; j < c->n_rbs && !found; j++)
                found = c->rbs[j].node == f->node && c->rbs[j].index == f->index &&
                        c->rbs[j].term == f->term;
            if (found) continue;
            if (leader && !raft_conf_role(&st.conf, f->node)) continue; /* removed: never told */
            sim_fail(s,
                     "fast mode: g%u entry %llu/%llu acked by n%llu was lost without a "
                     "rollback record",
                     gi, (unsigned long long)f->index, (unsigned long long)f->term,
                     (unsigned long long)f->node);
            return;
        }
    }
}
