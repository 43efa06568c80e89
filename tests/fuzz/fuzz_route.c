/*
 * fuzz_route.c - libFuzzer target for the client-request handler (server/route.c).
 *
 * A real single-node server (server_create: ring, replica with its WAL and
 * store in a temporary directory, --fsync off, TLS listener on a free
 * loopback port) receives each input as a request frame body, exactly as
 * on_frame hands a client's frame to the router. Its event loop runs once
 * (non-blocking) after every input, so the node elects itself, serves the
 * requests and answers the ones waiting.
 *
 * Input: one mode byte, then the frame body.
 *   bit 0  from_node: the frame came from a peer (never forwarded)
 *   bit 1  decode and dispatch through route_execute with a reply hook that
 *          checks every reply: it encodes (codec_encode succeeds), decodes back,
 *          is the reply type of the request and carries the request's req_id.
 *          Otherwise the frame goes through route_frame (replies dropped: no
 *          connection).
 * Properties: no crash or sanitizer report for any bytes; every reply well
 * formed. Certificates come from scripts/gen-certs.sh (run from the repo root).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "base/buf.h"
#include "base/log.h"
#include "server/config.h"
#include "server/server_int.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct server_config g_cfg;
static struct server *g_s;
static struct codec_scratch *g_scratch;
static char g_dir[256];

static void die(const char *what, const char *why)
{
    fprintf(stderr, "fuzz_route: %s: %s\n", what, why);
    abort();
}

static void cleanup(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "fuzz_route: could not remove %s\n", g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(g_dir, sizeof(g_dir), "/tmp/fuzz_route.XXXXXX");
    if (!mkdtemp(g_dir)) die("mkdtemp", "failed");
    atexit(cleanup);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "scripts/gen-certs.sh --dir %s/certs --nodes 1 >/dev/null", g_dir);
    if (system(cmd) != 0) die("gen-certs", "run me from the repository root");

    /* A free port: a few tries (each with its own data dir), as the port is
     * only known to be taken when the listener fails. */
    struct trine_err err = {0};
    for (int attempt = 0; attempt < 16 && !g_s; attempt++) {
        char args[8][300];
        int port = 20000 + (int)((getpid() * 7919u + (unsigned)attempt * 104729u) % 30000u);
        snprintf(args[0], sizeof(args[0]), "--id=1");
        snprintf(args[1], sizeof(args[1]), "--listen=127.0.0.1:%d", port);
        snprintf(args[2], sizeof(args[2]), "--initial-cluster=1=127.0.0.1:%d", port);
        snprintf(args[3], sizeof(args[3]), "--data-dir=%s/data%d", g_dir, attempt);
        snprintf(args[4], sizeof(args[4]), "--tls-cert=%s/certs/node-1.pem", g_dir);
        snprintf(args[5], sizeof(args[5]), "--tls-key=%s/certs/node-1.key", g_dir);
        snprintf(args[6], sizeof(args[6]), "--tls-ca=%s/certs/ca.pem", g_dir);
        snprintf(args[7], sizeof(args[7]), "--partitions=4");
        char *av[] = {"trined",
                      args[0],
                      args[1],
                      args[2],
                      args[3],
                      args[4],
                      args[5],
                      args[6],
                      args[7],
                      "--fsync=off",
                      "--log-level=error",
                      NULL};
        config_free(&g_cfg);
        config_init(&g_cfg);
        if (config_parse_args(&g_cfg, 11, av, stderr, &err) != 0) die("config", err.msg);
        if (server_create(&g_cfg, &g_s, &err) != 0) g_s = NULL;
    }
    if (!g_s) die("server_create", err.msg);
    g_scratch = codec_scratch_new();
    if (!g_scratch) die("codec_scratch_new", "out of memory");
    return 0;
}

/* Reply hook: what op_send_reply would send must be a well-formed reply. */
static void check_reply(struct op *op, const struct codec_msg *reply)
{
    struct buf b;
    struct trine_err err = {0};
    buf_init(&b);
    if (codec_encode(&b, reply, &op->s->lim, &err) != 0) die("reply does not encode", err.msg);
    struct codec_msg back;
    if (codec_decode(b.data + CODEC_FRAME_HEADER_BYTES, b.len - CODEC_FRAME_HEADER_BYTES,
                     &op->s->lim, g_scratch, &back, &err) != 0)
        die("reply does not decode", err.msg);
    const struct codec_rep_header *h = codec_rep_header(&back);
    if (!h) die("reply", "no reply header");
    if (back.type != route_reply_type(op->type)) die("reply", "wrong reply type");
    if (h->req_id != op->req_id) die("reply", "req_id not restored");
    buf_free(&b);
    op_free(op);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t mode = data[0];
    const uint8_t *body = data + 1;
    size_t len = size - 1;
    bool from_node = mode & 1;
    if (mode & 2) {
        struct codec_msg req;
        struct trine_err err = {0};
        if (codec_decode(body, len, &g_s->lim, g_s->scratch, &req, &err) == 0) {
            const struct codec_req_header *hdr = codec_req_header(&req);
            if (hdr) {
                struct op *op = op_new(g_s, NULL, hdr->req_id, req.type, hdr->consistency,
                                       from_node, check_reply);
                if (op) route_execute(g_s, op, &req);
            }
        }
    } else {
        route_frame(g_s, NULL, from_node, body, len);
    }
    server_pump(g_s);
    event_base_loop(g_s->base, EVLOOP_NONBLOCK);
    return 0;
}
