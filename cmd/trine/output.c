/*
 * output.c - what `trine` prints: results as one readable line (text) or one
 * JSON object (-o json), errors, the cluster table, and byte escaping
 * (keys and values are arbitrary bytes).
 */
#include <inttypes.h>
#include <stdint.h>
#include <string.h>

#include "cli.h"

static const struct {
    int code;
    int exit;
} cli_exits[] = {
    {0, CLI_EXIT_OK},
    {TRINE_ENOT_FOUND, CLI_EXIT_NOT_FOUND},
    {TRINE_EUNAVAILABLE, CLI_EXIT_UNAVAIL},
    {TRINE_ETIMEOUT, CLI_EXIT_UNAVAIL},
    {TRINE_EBUSY, CLI_EXIT_UNAVAIL},
    {TRINE_ESTALE, CLI_EXIT_UNAVAIL},
    {TRINE_ENOT_LEADER, CLI_EXIT_UNAVAIL},
    {TRINE_ECAS_FAILED, CLI_EXIT_CAS},
};

int cli_exit_code(int rc)
{
    int code = rc < 0 ? -rc : rc;
    for (size_t i = 0; i < sizeof(cli_exits) / sizeof(cli_exits[0]); i++) {
        if (cli_exits[i].code == code) return cli_exits[i].exit;
    }
    return CLI_EXIT_OTHER;
}

int cli_fail(const struct cli *c, int rc, const char *what)
{
    const char *detail = c->client ? trine_client_errmsg(c->client) : "";
    if (detail[0] == '\0') detail = trine_strerror(rc);
    if (c->json) {
        printf("{\"ok\":false,\"op\":");
        cli_json_str(stdout, c->cmd);
        printf(",\"error\":");
        cli_json_str(stdout, trine_status_name(rc));
        printf(",\"code\":%d,\"message\":", rc < 0 ? -rc : rc);
        cli_json_str(stdout, detail);
        printf("}\n");
    } else {
        fprintf(stderr, "trine %s: %s%s%s\n", c->cmd, what ? what : "", what ? ": " : "", detail);
    }
    return cli_exit_code(rc);
}

void cli_print_escaped(FILE *f, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = s[i];
        if (ch == '\\')
            fputs("\\\\", f);
        else if (ch == '\t')
            fputs("\\t", f);
        else if (ch == '\n')
            fputs("\\n", f);
        else if (ch < 0x20 || ch == 0x7f)
            fprintf(f, "\\x%02x", ch);
        else
            fputc(ch, f);
    }
}

/* Length of the UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t cli_utf8_len(const unsigned char *s, size_t n)
{
    static const struct {
        size_t len;
        uint32_t min;
        unsigned char mask, lead;
    } forms[] = {{1, 0, 0x80, 0x00},
                 {2, 0x80, 0xe0, 0xc0},
                 {3, 0x800, 0xf0, 0xe0},
                 {4, 0x10000, 0xf8, 0xf0}};
    for (size_t f = 0; f < sizeof(forms) / sizeof(forms[0]); f++) {
        if ((s[0] & forms[f].mask) != forms[f].lead) continue;
        size_t len = forms[f].len;
        if (len > n) return 0;
        uint32_t cp = s[0] & (unsigned char)~forms[f].mask;
        for (size_t i = 1; i < len; i++) {
            if ((s[i] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i] & 0x3f);
        }
        if (cp < forms[f].min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        return len;
    }
    return 0;
}

static void cli_json_raw(FILE *f, const unsigned char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = s[i];
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch == '\n')
            fputs("\\n", f);
        else if (ch == '\t')
            fputs("\\t", f);
        else if (ch < 0x20 || ch == 0x7f)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

void cli_json_str(FILE *f, const char *s)
{
    cli_json_raw(f, (const unsigned char *)s, strlen(s));
}

static void cli_base64(FILE *f, const unsigned char *s, size_t n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    fputc('"', f);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n) v |= (uint32_t)s[i + 1] << 8;
        if (i + 2 < n) v |= s[i + 2];
        fputc(tbl[v >> 18 & 63], f);
        fputc(tbl[v >> 12 & 63], f);
        fputc(i + 1 < n ? tbl[v >> 6 & 63] : '=', f);
        fputc(i + 2 < n ? tbl[v & 63] : '=', f);
    }
    fputc('"', f);
}

void cli_json_bytes(FILE *f, const char *name, const void *p, size_t n)
{
    const unsigned char *s = p;
    bool utf8 = true;
    for (size_t i = 0; i < n && utf8;) {
        size_t len = cli_utf8_len(s + i, n - i);
        if (len == 0) utf8 = false;
        i += len;
    }
    if (utf8) {
        fprintf(f, "\"%s\":", name);
        cli_json_raw(f, s, n);
    } else {
        fprintf(f, "\"%s_base64\":", name);
        cli_base64(f, s, n);
    }
}

void cli_text_meta(FILE *f, const struct trine_result *r, bool write)
{
    fprintf(f, "(served by node %" PRIu64 ", %s", r->served_by,
            trine_consistency_name(r->consistency));
    if (write) {
        if (r->replicas > 0)
            fprintf(f, ", %u/%u acks", r->acks, r->replicas);
        else
            fprintf(f, ", %u acks", r->acks);
    } else {
        fprintf(f, ", applied index %" PRIu64, r->applied_index);
    }
    if (r->attempts > 1) fprintf(f, ", %u attempts", r->attempts);
    fputc(')', f);
}

void cli_json_meta(FILE *f, const struct trine_result *r)
{
    fprintf(f,
            "\"revision\":%" PRIu64 ",\"served_by\":%" PRIu64 ",\"applied_index\":%" PRIu64
            ",\"acks\":%u,\"replicas\":%u,\"leader\":%" PRIu64
            ",\"consistency\":\"%s\",\"attempts\":%u",
            r->revision, r->served_by, r->applied_index, r->acks, r->replicas, r->leader,
            trine_consistency_name(r->consistency), r->attempts);
}

/* Worst replication lag: by age first (what an operator feels), then by entries. */
static bool lag_worse(const struct trine_member *a, const struct trine_member *b)
{
    return a->lag_ms != b->lag_ms ? a->lag_ms > b->lag_ms : a->lag > b->lag;
}

void cli_print_cluster(const struct cli *c, const struct trine_cluster *cl)
{
    const struct trine_member *worst = NULL;
    size_t healthy = 0;
    uint64_t primaries = 0;
    for (size_t i = 0; i < cl->n_members; i++) {
        const struct trine_member *m = &cl->members[i];
        healthy += m->healthy != 0;
        primaries += m->primaries;
        if (m->healthy && (!worst || lag_worse(m, worst))) worst = m;
    }
    if (c->json) {
        printf("{\"ok\":true,\"op\":\"cluster status\",\"epoch\":%" PRIu64 ",\"served_by\":%" PRIu64
               ",\"members\":[",
               cl->epoch, cl->served_by);
        for (size_t i = 0; i < cl->n_members; i++) {
            const struct trine_member *m = &cl->members[i];
            printf("%s{\"node_id\":%" PRIu64 ",\"address\":", i ? "," : "", m->node_id);
            cli_json_str(stdout, m->address);
            printf(",\"healthy\":%s,\"partitions\":%u,\"primaries\":%u,\"lag\":%" PRIu64
                   ",\"lag_ms\":%" PRIu64 "}",
                   m->healthy ? "true" : "false", m->partitions, m->primaries, m->lag, m->lag_ms);
        }
        printf("],\"healthy\":%zu,\"primaries\":%" PRIu64 ",\"worst_lag\":%" PRIu64
               ",\"worst_lag_ms\":%" PRIu64 "}\n",
               healthy, primaries, worst ? worst->lag : 0, worst ? worst->lag_ms : 0);
        return;
    }
    printf("cluster epoch %" PRIu64 ", as seen by node %" PRIu64 "\n\n", cl->epoch, cl->served_by);
    /* LAG: over the partitions the node leads, its slowest follower: entries it lacks and
     * the age of the oldest of them (docs/operations.md, "Replication lag"). */
    printf("%-6s %-24s %-8s %10s %10s %12s %10s\n", "NODE", "ADDRESS", "HEALTH", "PARTITIONS",
           "PRIMARIES", "LAG ENTRIES", "LAG SECS");
    for (size_t i = 0; i < cl->n_members; i++) {
        const struct trine_member *m = &cl->members[i];
        if (m->healthy)
            printf("%-6" PRIu64 " %-24s %-8s %10u %10u %12" PRIu64 " %10.3f\n", m->node_id,
                   m->address, "healthy", m->partitions, m->primaries, m->lag,
                   (double)m->lag_ms / 1000.0);
        else /* unreachable: its placement is known, its state is not */
            printf("%-6" PRIu64 " %-24s %-8s %10u %10s %12s %10s\n", m->node_id, m->address, "DOWN",
                   m->partitions, "-", "-", "-");
    }
    printf("\n%zu members, %zu healthy, %" PRIu64 " primaries", cl->n_members, healthy, primaries);
    if (worst && (worst->lag || worst->lag_ms))
        printf("; worst replication lag %" PRIu64 " entries, %.3f s (a follower of a partition "
               "node %" PRIu64 " leads)",
               worst->lag, (double)worst->lag_ms / 1000.0, worst->node_id);
    else if (worst)
        printf("; every follower caught up");
    printf("\n");
}
