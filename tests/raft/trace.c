/*
 * trace.c - the simulator's readable trace and failure reporting.
 *
 * Modes: off (normal seeded runs: nothing is formatted), print (every line
 * to trace_out as it happens: `raft_sim --seed S --trace`), ring (the last
 * ring_cap lines kept in memory, dumped when a check fails; used to replay a
 * failing seed of a batch run, which is deterministic).
 *
 * Line format: "<time>ms <what>", e.g.
 *   "   1234ms g0 n1->n2 append t3 prev 5/2 +3 commit 4"
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

static void emit(struct sim *s, const char *line)
{
    if (s->trace_mode == SIM_TRACE_PRINT) {
        fprintf(s->trace_out ? s->trace_out : stdout, "%8llums %s\n", (unsigned long long)s->now,
                line);
        return;
    }
    if (s->trace_mode == SIM_TRACE_RING && s->ring) {
        snprintf(s->ring[s->ring_n % s->ring_cap], sizeof(s->ring[0]), "%8llums %s",
                 (unsigned long long)s->now, line);
        s->ring_n++;
    }
}

void sim_trace(struct sim *s, const char *fmt, ...)
{
    if (s->trace_mode == SIM_TRACE_OFF) return;
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    emit(s, line);
}

void sim_fail(struct sim *s, const char *fmt, ...)
{
    if (s->failed) return;
    s->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->fail_msg, sizeof(s->fail_msg), fmt, ap);
    va_end(ap);
    if (s->trace_mode != SIM_TRACE_OFF) {
        char line[256];
        snprintf(line, sizeof(line), "VIOLATION: %.240s", s->fail_msg);
        emit(s, line);
    }
}

void sim_trace_ring(struct sim *s, uint32_t cap)
{
    free(s->ring);
    s->ring = calloc(cap, sizeof(*s->ring));
    s->ring_cap = cap;
    s->ring_n = 0;
    s->trace_mode = SIM_TRACE_RING;
}

void sim_trace_dump(struct sim *s, FILE *f)
{
    if (!s->ring) return;
    uint64_t from = s->ring_n > s->ring_cap ? s->ring_n - s->ring_cap : 0;
    if (from > 0) fprintf(f, "... (%llu earlier lines)\n", (unsigned long long)from);
    for (uint64_t i = from; i < s->ring_n; i++)
        fprintf(f, "%s\n", s->ring[i % s->ring_cap]);
}

const char *sim_msg_str(const struct raft_msg *m, char *buf, size_t n)
{
    int k = snprintf(buf, n, "n%llu->n%llu %s t%llu", (unsigned long long)m->from,
                     (unsigned long long)m->to, raft_msg_type_name(m->type),
                     (unsigned long long)m->term);
    if (k < 0 || (size_t)k >= n) return buf;
    char *p = buf + k;
    size_t left = n - (size_t)k;
    switch (m->type) {
    case RAFT_MSG_APPEND:
        snprintf(p, left, " prev %llu/%llu +%u commit %llu", (unsigned long long)m->index,
                 (unsigned long long)m->log_term, m->n_entries, (unsigned long long)m->commit);
        break;
    case RAFT_MSG_APPEND_RESP:
        if (m->reject)
            snprintf(p, left, " reject %llu hint %llu/%llu", (unsigned long long)m->index,
                     (unsigned long long)m->reject_hint, (unsigned long long)m->conflict_term);
        else
            snprintf(p, left, " ok %llu", (unsigned long long)m->index);
        break;
    case RAFT_MSG_VOTE:
    case RAFT_MSG_PREVOTE:
        snprintf(p, left, " last %llu/%llu%s", (unsigned long long)m->index,
                 (unsigned long long)m->log_term,
                 m->context == RAFT_CTX_TRANSFER ? " transfer" : "");
        break;
    case RAFT_MSG_VOTE_RESP:
    case RAFT_MSG_PREVOTE_RESP:
    case RAFT_MSG_READ_INDEX_RESP:
        snprintf(p, left, "%s", m->reject ? " reject" : " grant");
        if (m->type == RAFT_MSG_READ_INDEX_RESP)
            snprintf(p, left, " ctx %llu index %llu%s", (unsigned long long)m->context,
                     (unsigned long long)m->index, m->reject ? " reject" : "");
        break;
    case RAFT_MSG_HEARTBEAT:
        snprintf(p, left, " commit %llu round %llu", (unsigned long long)m->commit,
                 (unsigned long long)m->context);
        break;
    case RAFT_MSG_HEARTBEAT_RESP:
        snprintf(p, left, " round %llu", (unsigned long long)m->context);
        break;
    case RAFT_MSG_SNAPSHOT:
        snprintf(p, left, " snap %llu/%llu", (unsigned long long)m->index,
                 (unsigned long long)m->log_term);
        break;
    case RAFT_MSG_READ_INDEX:
        snprintf(p, left, " ctx %llu", (unsigned long long)m->context);
        break;
    default:
        break;
    }
    return buf;
}
