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

void cli_print_cluster(const struct cli *c, const struct trine_cluster *cl)
{
    uint64_t worst = 0, worst_node = 0;
    size_t healthy = 0;
    uint64_t primaries = 0;
    for (size_t i = 0; i < cl->n_members; i++) {
        const struct trine_member *m = &cl->members[i];
        healthy += m->healthy != 0;
        primaries += m->primaries;
        if (worst_node == 0 || m->lag > worst) {
            worst = m->lag;
            worst_node = m->node_id;
        }
    }
    if (c->json) {
        printf("{\"ok\":true,\"op\":\"cluster status\",\"epoch\":%" PRIu64 ",\"served_by\":%" PRIu64
               ",\"members\":[",
               cl->epoch, cl->served_by);
        for (size_t i = 0; i < cl->n_members; i++) {
            const struct trine_member *m = &cl->members[i];
            printf("%s{\"node_id\":%" PRIu64 ",\"address\":", i ? "," : "", m->node_id);
            cli_json_str(stdout, m->address);
            printf(",\"healthy\":%s,\"partitions\":%u,\"primaries\":%u,\"lag\":%" PRIu64 "}",
                   m->healthy ? "true" : "false", m->partitions, m->primaries, m->lag);
        }
        printf("],\"healthy\":%zu,\"worst_lag\":%" PRIu64 "}\n", healthy, worst);
        return;
    }
    printf("cluster epoch %" PRIu64 ", as seen by node %" PRIu64 "\n\n", cl->epoch, cl->served_by);
    printf("%-6s %-24s %-10s %10s %10s %8s\n", "NODE", "ADDRESS", "HEALTH", "PARTITIONS",
           "PRIMARIES", "LAG");
    for (size_t i = 0; i < cl->n_members; i++) {
        const struct trine_member *m = &cl->members[i];
        printf("%-6" PRIu64 " %-24s %-10s %10u %10u %8" PRIu64 "\n", m->node_id, m->address,
               m->healthy ? "healthy" : "DOWN", m->partitions, m->primaries, m->lag);
    }
    printf("\n%zu members, %zu healthy, %" PRIu64 " primaries", cl->n_members, healthy, primaries);
    if (cl->n_members > 0)
        printf("; worst lag %" PRIu64 " entries (node %" PRIu64 ")", worst, worst_node);
    printf("\n");
}
