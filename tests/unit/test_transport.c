/*
 * test_transport.c - mutual TLS, framing, limits, identities, reconnects and
 * backpressure of internal/transport, over 127.0.0.1 ephemeral ports in one
 * process and one event loop.
 *
 * Certificates come from scripts/gen-certs.sh, run once into a temporary
 * directory (ca1: the cluster's CA, ca2: a stranger's CA). The repository
 * root is $TRINE_ROOT or the first parent of the working directory holding
 * scripts/gen-certs.sh. Every wait is bounded (RUN_UNTIL).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "base/buf.h"
#include "base/clock.h"
#include "base/rand.h"
#include "testutil.h"
#include "transport/transport.h"
#include "transport/transport_impl.h"

static char g_tmp[512];
static char g_ca1[600], g_ca2[600];
static uint64_t g_seed;

/* --- loop driving ------------------------------------------------------------- */

static uint64_t deadline_in(int ms)
{
    return clock_mono_ns() + (uint64_t)ms * 1000000u;
}

/* One short turn of the loop; false once the deadline passed. */
static bool loop_step(struct event_base *base, uint64_t deadline)
{
    if (clock_mono_ns() > deadline) return false;
    struct timeval tv = {.tv_sec = 0, .tv_usec = 2000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    return true;
}

#define RUN_UNTIL(base, cond, ms)                                                                  \
    for (uint64_t dl_ = deadline_in(ms); !(cond) && loop_step(base, dl_);) {                       \
    }

static void run_for(struct event_base *base, int ms)
{
    uint64_t dl = deadline_in(ms);
    while (loop_step(base, dl)) {
    }
}

/* --- a test node: one transport plus what its callbacks saw ------------------ */

struct tnode {
    struct transport *t;
    struct transport_config cfg;
    char cert[700], key[700], ca[700];
    /* expected frames per path: [0] on accepted conns, [1] on dialed conns */
    const uint32_t *expect[2];
    uint32_t expect_n[2];
    uint32_t got[2];
    uint32_t bad;
    uint32_t frames;
    size_t last_len;
    bool echo;           /* send every frame back on its conn */
    bool close_on_frame; /* transport_conn_close from inside on_frame */
    size_t reply_bytes;  /* reply to each frame with this many bytes */
    uint8_t *reply;
    uint32_t send_fails;
    size_t out_max; /* largest output seen right after a reply */
    struct transport_conn *accepted;
    struct transport_identity accepted_id;
    int accepts, refusals, closes, last_close_rc;
    uint32_t refuse_node; /* on_accept refuses this node id */
    int ups, downs, last_down_rc;
};

static uint8_t pat(uint32_t k, size_t i)
{
    return (uint8_t)(k * 131u + i * 7u + (i >> 9));
}

static uint8_t *make_body(uint32_t k, size_t len)
{
    uint8_t *b = malloc(len ? len : 1);
    assert_non_null(b);
    for (size_t i = 0; i < len; i++)
        b[i] = pat(k, i);
    return b;
}

static void on_frame(void *ctx, struct transport_conn *conn, const uint8_t *body, size_t len)
{
    struct tnode *n = ctx;
    int path = transport_conn_is_outbound(conn) ? 1 : 0;
    uint32_t k = n->got[path]++;
    n->frames++;
    n->last_len = len;
    if (n->expect[path]) {
        bool ok = k < n->expect_n[path] && len == n->expect[path][k];
        for (size_t i = 0; ok && i < len; i++)
            ok = body[i] == pat(k, i);
        if (!ok) n->bad++;
    }
    if (n->close_on_frame) {
        transport_conn_close(conn);
        /* Closed, not yet freed: sends are refused, the pointer stays usable
         * until on_frame returns. */
        if (transport_conn_send(conn, body, len) != -TRINE_ECLOSED) n->send_fails++;
        if (n->accepted == conn) n->accepted = NULL;
        return;
    }
    if (n->echo && transport_conn_send(conn, body, len) != 0) n->send_fails++;
    if (n->reply_bytes) {
        if (transport_conn_send(conn, n->reply, n->reply_bytes) != 0) n->send_fails++;
        size_t out = transport_conn_output_bytes(conn);
        if (out > n->out_max) n->out_max = out;
    }
}

static int on_accept(void *ctx, struct transport_conn *conn)
{
    struct tnode *n = ctx;
    const struct transport_identity *id = transport_conn_identity(conn);
    n->accepts++;
    n->accepted_id = *id;
    if (n->refuse_node && id->kind == TRANSPORT_PEER_NODE && id->node_id == n->refuse_node) {
        n->refusals++;
        return -1;
    }
    n->accepted = conn;
    return 0;
}

static void on_close(void *ctx, struct transport_conn *conn, int rc, const char *reason)
{
    struct tnode *n = ctx;
    (void)reason;
    n->closes++;
    n->last_close_rc = rc;
    if (n->accepted == conn) n->accepted = NULL;
}

static void on_peer_state(void *ctx, uint32_t id, bool up, int rc, const char *reason)
{
    struct tnode *n = ctx;
    (void)id;
    (void)reason;
    if (up) {
        n->ups++;
    } else {
        n->downs++;
        n->last_down_rc = rc;
    }
}

/* Fills n->cfg for certificate <name> from dir, trusting ca_dir's CA. */
static void node_config(struct tnode *n, const char *dir, const char *name, const char *ca_dir)
{
    memset(n, 0, sizeof(*n));
    snprintf(n->cert, sizeof(n->cert), "%s/%s.pem", dir, name);
    snprintf(n->key, sizeof(n->key), "%s/%s.key", dir, name);
    snprintf(n->ca, sizeof(n->ca), "%s/ca.pem", ca_dir);
    transport_config_default(&n->cfg);
    n->cfg.cert_file = n->cert;
    n->cfg.key_file = n->key;
    n->cfg.ca_file = n->ca;
    n->cfg.backoff_max_ms = 200;
    n->cfg.jitter_seed = g_seed;
    n->cfg.cb.on_frame = on_frame;
    n->cfg.cb.on_accept = on_accept;
    n->cfg.cb.on_close = on_close;
    n->cfg.cb.on_peer_state = on_peer_state;
    n->cfg.cb.ctx = n;
}

static void node_start(struct tnode *n, struct event_base *base, const char *listen)
{
    struct trine_err err = {0};
    int rc = transport_create(base, &n->cfg, &n->t, &err);
    if (rc != 0) fail_msg("transport_create: %s", err.msg);
    if (listen) {
        rc = transport_listen(n->t, listen, &err);
        if (rc != 0) fail_msg("transport_listen: %s", err.msg);
    }
}

static void node_stop(struct tnode *n)
{
    transport_destroy(n->t);
    n->t = NULL;
    free(n->reply);
    n->reply = NULL;
}

static void add_peer(struct tnode *n, uint32_t id, uint16_t port)
{
    char addr[64];
    struct trine_err err = {0};
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    int rc = transport_peer_add(n->t, id, addr, &err);
    if (rc != 0) fail_msg("transport_peer_add: %s", err.msg);
}

static struct transport_stats stats_of(struct tnode *n)
{
    struct transport_stats s;
    transport_stats(n->t, &s);
    return s;
}

static struct event_base *new_base(void)
{
    struct event_base *base = event_base_new();
    assert_non_null(base);
    return base;
}

/* A TCP socket connected to 127.0.0.1:port, non-blocking afterwards. */
static int raw_connect(uint16_t port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* Reads until the server closes fd (EOF or reset); false on timeout. */
static bool raw_wait_closed(struct event_base *base, int fd, int ms)
{
    uint64_t dl = deadline_in(ms);
    char buf[4096];
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return true;
        if (r > 0) continue; /* a TLS alert may come first */
        if (!loop_step(base, dl)) return false;
    }
}

/* --- tests ------------------------------------------------------------------ */

static void test_identity_from_cn(void **state)
{
    (void)state;
    static const struct {
        const char *cn;
        enum transport_peer_kind kind;
        uint32_t id;
    } cases[] = {
        {"node-1", TRANSPORT_PEER_NODE, 1},
        {"node-42", TRANSPORT_PEER_NODE, 42},
        {"node-4294967295", TRANSPORT_PEER_NODE, 4294967295u},
        {"node-4294967296", TRANSPORT_PEER_UNKNOWN, 0},
        {"node-0", TRANSPORT_PEER_UNKNOWN, 0},
        {"node-01", TRANSPORT_PEER_UNKNOWN, 0},
        {"node-", TRANSPORT_PEER_UNKNOWN, 0},
        {"node-1x", TRANSPORT_PEER_UNKNOWN, 0},
        {"node--1", TRANSPORT_PEER_UNKNOWN, 0},
        {"Node-1", TRANSPORT_PEER_UNKNOWN, 0},
        {"client", TRANSPORT_PEER_CLIENT, 0},
        {"client2", TRANSPORT_PEER_UNKNOWN, 0},
        {"", TRANSPORT_PEER_UNKNOWN, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct transport_identity id;
        tls_identity_from_cn(cases[i].cn, &id);
        assert_int_equal(id.kind, cases[i].kind);
        assert_int_equal(id.node_id, cases[i].id);
        assert_string_equal(id.cn, cases[i].cn);
    }
}

static void test_config_errors(void **state)
{
    (void)state;
    struct event_base *base = new_base();
    struct tnode n;
    struct transport *t = NULL;
    struct trine_err err = {0};

    node_config(&n, g_ca1, "node-1", g_ca1);
    snprintf(n.cert, sizeof(n.cert), "%s/missing.pem", g_ca1);
    assert_int_equal(transport_create(base, &n.cfg, &t, &err), -TRINE_EINVALID);
    assert_null(t);
    assert_non_null(strstr(err.msg, "missing.pem"));
    assert_non_null(strstr(err.msg, "No such file"));

    node_config(&n, g_ca1, "node-1", g_ca1);
    snprintf(n.key, sizeof(n.key), "%s/node-2.key", g_ca1);
    assert_int_equal(transport_create(base, &n.cfg, &t, &err), -TRINE_EINVALID);
    assert_non_null(strstr(err.msg, "node-2.key"));
    assert_non_null(strstr(err.msg, "mismatch"));

    node_config(&n, g_ca1, "node-1", g_ca1);
    n.cfg.output_high_bytes = n.cfg.output_bytes_max + 1;
    assert_int_equal(transport_create(base, &n.cfg, &t, &err), -TRINE_EINVALID);
    node_config(&n, g_ca1, "node-1", g_ca1);
    n.cfg.peer_queue_bytes_max = n.cfg.frame_bytes_max;
    assert_int_equal(transport_create(base, &n.cfg, &t, &err), -TRINE_EINVALID);

    node_config(&n, g_ca1, "node-1", g_ca1);
    node_start(&n, base, NULL);
    assert_int_equal(transport_listen_port(n.t), 0);
    assert_int_equal(transport_listen(n.t, "127.0.0.1", &err), -TRINE_EINVALID);
    assert_int_equal(transport_listen(n.t, "127.0.0.1:99999", &err), -TRINE_EINVALID);
    assert_int_equal(transport_listen(n.t, "127.0.0.1:0", &err), 0);
    assert_true(transport_listen_port(n.t) > 0);
    assert_int_equal(transport_listen(n.t, "127.0.0.1:0", &err), -TRINE_EEXISTS);
    assert_int_equal(transport_peer_add(n.t, 0, "127.0.0.1:1", &err), -TRINE_EINVALID);
    assert_int_equal(transport_peer_add(n.t, 2, "nonsense", &err), -TRINE_EINVALID);
    assert_int_equal(transport_peer_add(n.t, 2, "127.0.0.1:0", &err), -TRINE_EINVALID);
    assert_int_equal(transport_peer_add(n.t, 2, "127.0.0.1:1", &err), 0);
    assert_int_equal(transport_peer_add(n.t, 2, "127.0.0.1:2", &err), -TRINE_EEXISTS);
    assert_int_equal(transport_peer_remove(n.t, 2), 0);
    assert_int_equal(transport_peer_remove(n.t, 2), -TRINE_ENOT_FOUND);
    node_stop(&n);
    event_base_free(base);
}

/* Sizes for one direction: 0 first and last, one of exactly frame_max, TLS
 * record edges, the rest random up to 64 KiB. */
static uint32_t *make_sizes(struct rng *g, uint32_t count, uint32_t frame_max)
{
    uint32_t *s = calloc(count, sizeof(*s));
    assert_non_null(s);
    for (uint32_t i = 0; i < count; i++)
        s[i] = (uint32_t)rng_below(g, 65536);
    s[0] = 0;
    s[count - 1] = 0;
    s[count / 2] = frame_max;
    s[1] = 1;
    s[2] = 16384;
    s[3] = 16380;
    return s;
}

static void test_exchange(void **state)
{
    (void)state;
    enum { COUNT = 300 };
    struct event_base *base = new_base();
    struct rng g;
    rng_seed(&g, g_seed);
    struct tnode a, b;
    node_config(&a, g_ca1, "node-1", g_ca1);
    node_config(&b, g_ca1, "node-2", g_ca1);
    uint32_t max = a.cfg.frame_bytes_max;
    assert_int_equal(max, 16u << 20);               /* the default */
    uint32_t *sizes_a = make_sizes(&g, COUNT, max); /* a -> b, echoed back to a */
    uint32_t *sizes_b = make_sizes(&g, COUNT, max); /* b -> a */
    b.expect[0] = sizes_a;
    b.expect_n[0] = COUNT;
    b.echo = true;
    a.expect[0] = sizes_b;
    a.expect_n[0] = COUNT;
    a.expect[1] = sizes_a;
    a.expect_n[1] = COUNT;
    node_start(&a, base, "127.0.0.1:0");
    node_start(&b, base, "127.0.0.1:0");
    add_peer(&a, 2, transport_listen_port(b.t));
    add_peer(&b, 1, transport_listen_port(a.t));
    RUN_UNTIL(base, a.ups == 1 && b.ups == 1 && a.accepts == 1 && b.accepts == 1, 5000);
    assert_true(transport_peer_is_up(a.t, 2) && transport_peer_is_up(b.t, 1));
    assert_int_equal(b.accepted_id.kind, TRANSPORT_PEER_NODE);
    assert_int_equal(b.accepted_id.node_id, 1);
    assert_string_equal(b.accepted_id.cn, "node-1");
    assert_int_equal(a.accepted_id.node_id, 2);

    for (uint32_t k = 0; k < COUNT; k++) {
        uint8_t *body = make_body(k, sizes_a[k]);
        assert_int_equal(transport_peer_send(a.t, 2, body, sizes_a[k]), 0);
        free(body);
        body = make_body(k, sizes_b[k]);
        assert_int_equal(transport_peer_send(b.t, 1, body, sizes_b[k]), 0);
        free(body);
    }
    uint8_t one = 0;
    assert_int_equal(transport_peer_send(a.t, 2, &one, (size_t)max + 1), -TRINE_ETOO_LARGE);
    assert_int_equal(transport_peer_send(a.t, 7, &one, 1), -TRINE_ENOT_FOUND);

    RUN_UNTIL(base, a.got[0] == COUNT && a.got[1] == COUNT && b.got[0] == COUNT, 30000);
    assert_int_equal(b.got[0], COUNT);
    assert_int_equal(a.got[0], COUNT);
    assert_int_equal(a.got[1], COUNT);
    assert_int_equal(a.bad + b.bad, 0);
    assert_int_equal(b.send_fails, 0);
    struct transport_stats sa = stats_of(&a), sb = stats_of(&b);
    assert_int_equal(sa.frames_in, 2 * COUNT);
    assert_int_equal(sb.frames_in, COUNT);
    assert_int_equal(sb.frames_out, 2 * COUNT);
    assert_int_equal(sa.bytes_in, sb.bytes_out);
    assert_int_equal(sa.conns_open, 2);
    assert_int_equal(sa.handshake_failures + sb.handshake_failures, 0);
    assert_int_equal(sa.identity_mismatches + sb.identity_mismatches, 0);
    assert_int_equal(a.downs + b.downs, 0);
    node_stop(&a);
    node_stop(&b);
    free(sizes_a);
    free(sizes_b);
    event_base_free(base);
}

static void test_oversize_frame(void **state)
{
    (void)state;
    struct event_base *base = new_base();
    struct tnode s, c;
    node_config(&s, g_ca1, "node-1", g_ca1);
    s.cfg.frame_bytes_max = 1024;
    s.cfg.peer_queue_bytes_max = 2048;
    node_config(&c, g_ca1, "node-2", g_ca1);
    c.cfg.frame_bytes_max = 64 * 1024;
    node_start(&s, base, "127.0.0.1:0");
    node_start(&c, base, NULL);
    add_peer(&c, 1, transport_listen_port(s.t));
    RUN_UNTIL(base, c.ups == 1 && s.accepts == 1, 5000);
    assert_int_equal(c.ups, 1);

    uint8_t *big = make_body(0, 2000);
    assert_int_equal(transport_peer_send(c.t, 1, big, 2000), 0);
    free(big);
    RUN_UNTIL(base, s.closes == 1 && c.downs == 1, 5000);
    assert_int_equal(s.closes, 1);
    assert_int_equal(s.last_close_rc, -TRINE_ETOO_LARGE);
    assert_int_equal(stats_of(&s).oversize_frames, 1);
    assert_int_equal(s.frames, 0);
    assert_int_equal(c.downs, 1);

    /* The listener keeps serving: the peer redials and a good frame passes. */
    RUN_UNTIL(base, c.ups == 2 && s.accepts == 2, 5000);
    assert_int_equal(c.ups, 2);
    uint8_t *ok = make_body(0, 100);
    assert_int_equal(transport_peer_send(c.t, 1, ok, 100), 0);
    free(ok);
    RUN_UNTIL(base, s.frames == 1, 5000);
    assert_int_equal(s.frames, 1);
    assert_int_equal(s.last_len, 100);
    assert_int_equal(stats_of(&s).conns_accepted, 2);
    assert_int_equal(stats_of(&s).conns_open, 1);
    node_stop(&s);
    node_stop(&c);
    event_base_free(base);
}

static void test_garbage_on_tls_port(void **state)
{
    (void)state;
    struct event_base *base = new_base();
    struct tnode s, c;
    node_config(&s, g_ca1, "node-1", g_ca1);
    s.cfg.handshake_timeout_ms = 300;
    node_config(&c, g_ca1, "node-2", g_ca1);
    node_start(&s, base, "127.0.0.1:0");
    uint16_t port = transport_listen_port(s.t);
    /* A good connection first: it must live through everything below. */
    node_start(&c, base, NULL);
    add_peer(&c, 1, port);
    RUN_UNTIL(base, c.ups == 1 && s.accepts == 1, 5000);
    assert_int_equal(c.ups, 1);

    /* Plaintext HTTP. */
    int fd1 = raw_connect(port, 0);
    static const char http[] = "GET / HTTP/1.1\r\nHost: node-1\r\n\r\n";
    assert_int_equal(send(fd1, http, sizeof(http) - 1, 0), (ssize_t)sizeof(http) - 1);
    RUN_UNTIL(base, stats_of(&s).handshake_failures == 1, 5000);
    assert_int_equal(stats_of(&s).handshake_failures, 1);
    assert_true(raw_wait_closed(base, fd1, 5000));

    /* Random bytes. */
    struct rng g;
    rng_seed(&g, g_seed ^ 0x9e3779b97f4a7c15ull);
    uint8_t junk[4096];
    rng_fill(&g, junk, sizeof(junk));
    int fd2 = raw_connect(port, 0);
    assert_int_equal(send(fd2, junk, sizeof(junk), 0), (ssize_t)sizeof(junk));
    RUN_UNTIL(base, stats_of(&s).handshake_failures == 2, 5000);
    assert_int_equal(stats_of(&s).handshake_failures, 2);
    assert_true(raw_wait_closed(base, fd2, 5000));

    /* Silence: the handshake deadline closes it. */
    int fd3 = raw_connect(port, 0);
    RUN_UNTIL(base, stats_of(&s).handshake_failures == 3, 5000);
    assert_int_equal(stats_of(&s).handshake_failures, 3);
    assert_true(raw_wait_closed(base, fd3, 5000));
    close(fd1);
    close(fd2);
    close(fd3);

    /* Nothing leaked or announced; the good connection still carries
     * frames, and a new one still gets in. */
    assert_int_equal(s.accepts, 1);
    assert_int_equal(stats_of(&s).conns_open, 1);
    uint8_t *body = make_body(0, 10);
    assert_int_equal(transport_peer_send(c.t, 1, body, 10), 0);
    free(body);
    RUN_UNTIL(base, s.frames == 1, 5000);
    assert_int_equal(s.frames, 1);
    assert_int_equal(c.ups, 1);
    assert_int_equal(c.downs, 0);
    struct tnode d;
    node_config(&d, g_ca1, "node-3", g_ca1);
    node_start(&d, base, NULL);
    add_peer(&d, 1, port);
    RUN_UNTIL(base, d.ups == 1 && s.accepts == 2, 5000);
    assert_int_equal(s.accepts, 2);
    assert_int_equal(s.accepted_id.node_id, 3);
    assert_int_equal(stats_of(&s).conns_accepted, 5);
    assert_int_equal(stats_of(&s).handshake_failures, 3);
    node_stop(&d);
    node_stop(&c);
    node_stop(&s);
    event_base_free(base);
}

static void test_wrong_ca(void **state)
{
    (void)state;
    struct event_base *base = new_base();
    struct tnode s, c;
    /* A client certificate from another CA, presented to our server. */
    node_config(&s, g_ca1, "node-1", g_ca1);
    node_config(&c, g_ca2, "node-2", g_ca1);
    node_start(&s, base, "127.0.0.1:0");
    node_start(&c, base, NULL);
    add_peer(&c, 1, transport_listen_port(s.t));
    uint8_t hello[5] = "hello";
    assert_int_equal(transport_peer_send(c.t, 1, hello, sizeof(hello)), 0);
    RUN_UNTIL(base, stats_of(&s).handshake_failures >= 2, 5000);
    assert_true(stats_of(&s).handshake_failures >= 2); /* first dial and a redial */
    assert_int_equal(s.accepts, 0);
    assert_int_equal(s.frames, 0);
    assert_int_equal(stats_of(&s).frames_in, 0);
    node_stop(&c);
    node_stop(&s);

    /* Our client dialing a server whose certificate comes from another CA. */
    node_config(&s, g_ca2, "node-1", g_ca2);
    node_config(&c, g_ca1, "node-2", g_ca1);
    node_start(&s, base, "127.0.0.1:0");
    node_start(&c, base, NULL);
    add_peer(&c, 1, transport_listen_port(s.t));
    assert_int_equal(transport_peer_send(c.t, 1, hello, sizeof(hello)), 0);
    RUN_UNTIL(base, stats_of(&c).handshake_failures >= 1, 5000);
    assert_true(stats_of(&c).handshake_failures >= 1);
    assert_int_equal(c.ups, 0);
    assert_int_equal(s.frames, 0);
    uint32_t frames;
    size_t bytes;
    assert_int_equal(transport_peer_queued(c.t, 1, &frames, &bytes), 0);
    assert_int_equal(frames, 1); /* still queued for when the peer is fixed */
    assert_int_equal(bytes, 4 + sizeof(hello));
    node_stop(&c);
    node_stop(&s);
    event_base_free(base);
}

static void test_wrong_node_id(void **state)
{
    (void)state;
    struct event_base *base = new_base();
    struct tnode s, c;
    node_config(&s, g_ca1, "node-2", g_ca1);
    node_config(&c, g_ca1, "node-1", g_ca1);
    node_start(&s, base, "127.0.0.1:0");
    node_start(&c, base, NULL);
    uint16_t port = transport_listen_port(s.t);
    /* node-2's certificate answers where node-3 was expected. */
    add_peer(&c, 3, port);
    uint8_t hello[5] = "hello";
    assert_int_equal(transport_peer_send(c.t, 3, hello, sizeof(hello)), 0);
    RUN_UNTIL(base, stats_of(&c).identity_mismatches >= 2, 5000);
    assert_true(stats_of(&c).identity_mismatches >= 2);
    assert_int_equal(c.ups, 0);
    assert_false(transport_peer_is_up(c.t, 3));
    assert_int_equal(s.frames, 0);

    /* The server side refuses a node by id through on_accept. */
    assert_int_equal(transport_peer_remove(c.t, 3), 0);
    s.refuse_node = 1;
    add_peer(&c, 2, port);
    assert_int_equal(transport_peer_send(c.t, 2, hello, sizeof(hello)), 0);
    RUN_UNTIL(base, s.refusals >= 2, 5000);
    assert_true(s.refusals >= 2);
    assert_int_equal(s.frames, 0);
    assert_int_equal(s.closes, 0); /* refused conns were never kept */
    node_stop(&c);
    node_stop(&s);
    event_base_free(base);
}

static void test_reconnect_with_queue(void **state)
{
    (void)state;
    enum { BEFORE = 10, WHILE_DOWN = 20 };
    struct event_base *base = new_base();
    struct tnode a, b;
    uint32_t sizes[WHILE_DOWN];
    for (uint32_t k = 0; k < WHILE_DOWN; k++)
        sizes[k] = 100 + 37 * k;
    node_config(&a, g_ca1, "node-1", g_ca1);
    node_config(&b, g_ca1, "node-2", g_ca1);
    b.expect[0] = sizes;
    b.expect_n[0] = BEFORE;
    node_start(&a, base, NULL);
    node_start(&b, base, "127.0.0.1:0");
    uint16_t port = transport_listen_port(b.t);
    add_peer(&a, 2, port);
    RUN_UNTIL(base, a.ups == 1, 5000);
    for (uint32_t k = 0; k < BEFORE; k++) {
        uint8_t *body = make_body(k, sizes[k]);
        assert_int_equal(transport_peer_send(a.t, 2, body, sizes[k]), 0);
        free(body);
    }
    RUN_UNTIL(base, b.got[0] == BEFORE, 5000);
    assert_int_equal(b.got[0], BEFORE);
    assert_int_equal(b.bad, 0);

    /* b goes away; a notices and queues. */
    node_stop(&b);
    RUN_UNTIL(base, a.downs == 1, 5000);
    assert_int_equal(a.downs, 1);
    assert_int_equal(a.last_down_rc, -TRINE_ECLOSED);
    assert_false(transport_peer_is_up(a.t, 2));
    for (uint32_t k = 0; k < WHILE_DOWN; k++) {
        uint8_t *body = make_body(k, sizes[k]);
        assert_int_equal(transport_peer_send(a.t, 2, body, sizes[k]), 0);
        free(body);
    }
    uint32_t frames;
    size_t bytes;
    assert_int_equal(transport_peer_queued(a.t, 2, &frames, &bytes), 0);
    assert_int_equal(frames, WHILE_DOWN);
    run_for(base, 300); /* a few refused redials */
    assert_int_equal(a.ups, 1);

    /* b comes back on the same port: a redials and the queue drains. */
    node_config(&b, g_ca1, "node-2", g_ca1);
    b.expect[0] = sizes;
    b.expect_n[0] = WHILE_DOWN;
    char listen[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
    node_start(&b, base, listen);
    RUN_UNTIL(base, b.got[0] == WHILE_DOWN, 5000);
    assert_int_equal(b.got[0], WHILE_DOWN);
    assert_int_equal(b.bad, 0);
    assert_int_equal(a.ups, 2);
    assert_true(transport_peer_is_up(a.t, 2));
    assert_int_equal(transport_peer_queued(a.t, 2, &frames, &bytes), 0);
    assert_int_equal(frames, 0);
    assert_int_equal(bytes, 0);
    assert_int_equal(stats_of(&a).peer_connects, 2);
    node_stop(&a);
    node_stop(&b);
    event_base_free(base);
}

/* The caller closes a conn from inside on_frame: no on_close, the peer
 * notices and redials. */
static void test_close_in_callback(void **state)
{
    (void)state;
    struct event_base *base = new_base();
    struct tnode s, c;
    node_config(&s, g_ca1, "node-1", g_ca1);
    node_config(&c, g_ca1, "node-2", g_ca1);
    s.close_on_frame = true;
    node_start(&s, base, "127.0.0.1:0");
    node_start(&c, base, NULL);
    add_peer(&c, 1, transport_listen_port(s.t));
    RUN_UNTIL(base, c.ups == 1 && s.accepts == 1, 5000);
    assert_non_null(s.accepted);
    int marker;
    transport_conn_set_data(s.accepted, &marker);
    assert_ptr_equal(transport_conn_data(s.accepted), &marker);
    assert_false(transport_conn_is_outbound(s.accepted));
    assert_non_null(strstr(transport_conn_addr(s.accepted), "127.0.0.1:"));
    uint8_t bye[3] = "bye";
    assert_int_equal(transport_peer_send(c.t, 1, bye, sizeof(bye)), 0);
    RUN_UNTIL(base, c.downs == 1 && c.ups == 2, 5000);
    assert_int_equal(c.downs, 1);
    assert_int_equal(c.ups, 2);
    assert_int_equal(s.frames, 1);
    assert_int_equal(s.closes, 0);
    assert_int_equal(s.send_fails, 0);
    assert_int_equal(stats_of(&s).conns_open, 1); /* only the redialed conn */
    node_stop(&c);
    node_stop(&s);
    event_base_free(base);
}

/* Accepted connections are capped at conns_max. */
static void test_conns_max(void **state)
{
    (void)state;
    struct event_base *base = new_base();
    struct tnode s;
    node_config(&s, g_ca1, "node-1", g_ca1);
    s.cfg.conns_max = 2;
    node_start(&s, base, "127.0.0.1:0");
    uint16_t port = transport_listen_port(s.t);
    int fd[3];
    for (int i = 0; i < 3; i++)
        fd[i] = raw_connect(port, 0);
    RUN_UNTIL(base, stats_of(&s).conns_accepted == 3, 5000);
    struct transport_stats st = stats_of(&s);
    assert_int_equal(st.conns_accepted, 3);
    assert_int_equal(st.conns_refused, 1);
    assert_int_equal(st.conns_open, 2);
    assert_true(raw_wait_closed(base, fd[2], 5000));
    for (int i = 0; i < 3; i++)
        close(fd[i]);
    RUN_UNTIL(base, stats_of(&s).conns_open == 0, 5000);
    assert_int_equal(stats_of(&s).conns_open, 0);
    node_stop(&s);
    event_base_free(base);
}

/* A peer named by host name goes through evdns. */
static void test_peer_by_name(void **state)
{
    (void)state;
    struct event_base *base = new_base();
    struct tnode s, c;
    node_config(&s, g_ca1, "node-1", g_ca1);
    node_config(&c, g_ca1, "node-2", g_ca1);
    node_start(&s, base, NULL);
    /* Dual stack when there is IPv6, so "localhost" works either way. */
    struct trine_err err = {0};
    if (transport_listen(s.t, "[::]:0", &err) != 0)
        assert_int_equal(transport_listen(s.t, "127.0.0.1:0", &err), 0);
    node_start(&c, base, NULL);
    char addr[64];
    snprintf(addr, sizeof(addr), "localhost:%u", transport_listen_port(s.t));
    assert_int_equal(transport_peer_add(c.t, 1, addr, &err), 0);
    uint8_t hello[5] = "hello";
    assert_int_equal(transport_peer_send(c.t, 1, hello, sizeof(hello)), 0);
    RUN_UNTIL(base, s.frames == 1, 5000);
    assert_int_equal(s.frames, 1);
    assert_int_equal(c.ups, 1);
    node_stop(&c);
    node_stop(&s);
    event_base_free(base);
}

/* A raw TLS client (the CLI's certificate) that writes requests and never
 * reads a reply. */
struct rawtls {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
};

static void rawtls_open(struct rawtls *r, struct event_base *base, uint16_t port)
{
    char cert[700], key[700], ca[700];
    snprintf(cert, sizeof(cert), "%s/client.pem", g_ca1);
    snprintf(key, sizeof(key), "%s/client.key", g_ca1);
    snprintf(ca, sizeof(ca), "%s/ca.pem", g_ca1);
    r->ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(r->ctx);
    assert_int_equal(SSL_CTX_use_certificate_chain_file(r->ctx, cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(r->ctx, key, SSL_FILETYPE_PEM), 1);
    assert_int_equal(SSL_CTX_load_verify_locations(r->ctx, ca, NULL), 1);
    SSL_CTX_set_verify(r->ctx, SSL_VERIFY_PEER, NULL);
    r->fd = raw_connect(port, 16 * 1024);
    r->ssl = SSL_new(r->ctx);
    assert_non_null(r->ssl);
    SSL_set_fd(r->ssl, r->fd);
    SSL_set_connect_state(r->ssl);
    uint64_t dl = deadline_in(5000);
    for (;;) {
        int rc = SSL_do_handshake(r->ssl);
        if (rc == 1) break;
        int e = SSL_get_error(r->ssl, rc);
        assert_true(e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE);
        assert_true(loop_step(base, dl));
    }
}

static void rawtls_close(struct rawtls *r)
{
    SSL_free(r->ssl);
    SSL_CTX_free(r->ctx);
    close(r->fd);
}

static void test_client_never_reads(void **state)
{
    (void)state;
    enum { REPLY = 64 * 1024, REQ_BODY = 8, BATCH = 64 };
    struct event_base *base = new_base();
    struct tnode s;
    node_config(&s, g_ca1, "node-1", g_ca1);
    s.cfg.output_bytes_max = 1u << 20;
    s.cfg.output_high_bytes = 256u * 1024;
    s.cfg.output_low_bytes = 64u * 1024;
    s.cfg.stall_timeout_ms = 1000;
    s.reply_bytes = REPLY;
    s.reply = make_body(0, REPLY);
    node_start(&s, base, "127.0.0.1:0");
    struct rawtls r;
    rawtls_open(&r, base, transport_listen_port(s.t));

    /* A batch of small request frames, written again and again. */
    uint8_t batch[BATCH * (4 + REQ_BODY)];
    for (int i = 0; i < BATCH; i++) {
        put_u32be(batch + i * (4 + REQ_BODY), REQ_BODY);
        memset(batch + i * (4 + REQ_BODY) + 4, 'r', REQ_BODY);
    }
    uint64_t sent = 0;
    uint64_t dl = deadline_in(8000);
    uint64_t last_change = clock_mono_ns();
    uint64_t last_in = 0;
    while (loop_step(base, dl)) {
        for (int i = 0; i < 16; i++) {
            int rc = SSL_write(r.ssl, batch, sizeof(batch));
            if (rc <= 0) break; /* WANT_WRITE: retried with the same buffer */
            sent += BATCH;
        }
        uint64_t in = stats_of(&s).frames_in;
        if (in != last_in) {
            last_in = in;
            last_change = clock_mono_ns();
        }
        /* Done once the server has stopped taking requests for a while. */
        if (s.accepted && stats_of(&s).backpressure_events > 0 &&
            clock_mono_ns() - last_change > 300 * 1000000ull)
            break;
    }
    assert_int_equal(s.accepts, 1);
    assert_int_equal(s.accepted_id.kind, TRANSPORT_PEER_CLIENT);
    assert_string_equal(s.accepted_id.cn, "client");
    assert_non_null(s.accepted);
    struct transport_stats st = stats_of(&s);
    assert_true(st.backpressure_events >= 1);
    assert_true(st.frames_in < sent); /* reading stopped */
    assert_int_equal(s.send_fails, 0);
    /* Never more than the high watermark plus one reply while reading, so
     * certainly never more than the limit plus one frame. */
    assert_true(s.out_max > s.cfg.output_high_bytes);
    assert_true(s.out_max <= s.cfg.output_high_bytes + 4 + REPLY);
    assert_true(s.out_max <= s.cfg.output_bytes_max + 4 + REPLY);

    /* Direct sends fill the output to its limit, then are refused. */
    int rc = 0;
    for (int i = 0; i < 64 && rc == 0; i++)
        rc = transport_conn_send(s.accepted, s.reply, REPLY);
    assert_int_equal(rc, -TRINE_EBUSY);
    assert_true(transport_conn_output_bytes(s.accepted) >= s.cfg.output_bytes_max);
    assert_true(transport_conn_output_bytes(s.accepted) <= s.cfg.output_bytes_max + 4 + REPLY);

    /* Stuck with nothing drained: closed after stall_timeout_ms. */
    RUN_UNTIL(base, s.closes == 1, 5000);
    assert_int_equal(s.closes, 1);
    assert_int_equal(s.last_close_rc, -TRINE_ETIMEOUT);
    assert_int_equal(stats_of(&s).stalled_closes, 1);
    assert_int_equal(stats_of(&s).conns_open, 0);
    rawtls_close(&r);
    node_stop(&s);
    event_base_free(base);
}

static void test_queue_full(void **state)
{
    (void)state;
    struct event_base *base = new_base();
    /* A port that refuses: bound, never listening, held for the test. */
    int hold = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(hold, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t len = sizeof(sa);
    assert_int_equal(getsockname(hold, (struct sockaddr *)&sa, &len), 0);
    uint16_t port = ntohs(sa.sin_port);

    struct tnode a;
    node_config(&a, g_ca1, "node-1", g_ca1);
    a.cfg.frame_bytes_max = 4096;
    a.cfg.peer_queue_frames_max = 8;
    a.cfg.peer_queue_bytes_max = 4096 + 4 + 100;
    node_start(&a, base, NULL);
    add_peer(&a, 9, port);
    run_for(base, 50);
    uint8_t body[4097] = {0};
    for (int i = 0; i < 8; i++)
        assert_int_equal(transport_peer_send(a.t, 9, body, 10), 0);
    assert_int_equal(transport_peer_send(a.t, 9, body, 10), -TRINE_EBUSY); /* 9th frame */
    assert_int_equal(stats_of(&a).backpressure_events, 1);
    uint32_t frames;
    size_t bytes;
    assert_int_equal(transport_peer_queued(a.t, 9, &frames, &bytes), 0);
    assert_int_equal(frames, 8);
    assert_int_equal(bytes, 8 * 14);
    assert_int_equal(transport_peer_send(a.t, 9, body, 4097), -TRINE_ETOO_LARGE);

    /* The byte bound: one maximal frame fits, then 100 more bytes do not. */
    assert_int_equal(transport_peer_remove(a.t, 9), 0);
    add_peer(&a, 9, port);
    assert_int_equal(transport_peer_send(a.t, 9, body, 4096), 0);
    assert_int_equal(transport_peer_send(a.t, 9, body, 100), -TRINE_EBUSY);
    assert_int_equal(transport_peer_send(a.t, 9, body, 96), 0);
    assert_int_equal(transport_peer_send(a.t, 9, body, 0), -TRINE_EBUSY);
    run_for(base, 200); /* redials fail, the queue stays */
    assert_int_equal(transport_peer_queued(a.t, 9, &frames, &bytes), 0);
    assert_int_equal(frames, 2);
    assert_int_equal(bytes, 4096 + 4 + 96 + 4);
    assert_int_equal(a.ups, 0);
    node_stop(&a);
    close(hold);
    event_base_free(base);
}

/* --- setup ------------------------------------------------------------------ */

static bool find_root(char *out, size_t n)
{
    const char *env = getenv("TRINE_ROOT");
    char path[PATH_MAX + 32];
    if (env && *env) {
        snprintf(out, n, "%s", env);
        return true;
    }
    char dir[PATH_MAX];
    if (getcwd(dir, sizeof(dir)) == NULL) return false;
    for (int depth = 0; depth < 16; depth++) {
        snprintf(path, sizeof(path), "%s/scripts/gen-certs.sh", dir);
        if (access(path, X_OK) == 0) {
            snprintf(out, n, "%s", dir);
            return true;
        }
        char *slash = strrchr(dir, '/');
        if (slash == NULL || slash == dir) return false;
        *slash = '\0';
    }
    return false;
}

static int gen_certs(const char *root, const char *dir)
{
    char cmd[2 * PATH_MAX + 128];
    snprintf(cmd, sizeof(cmd), "'%s/scripts/gen-certs.sh' --dir '%s' --nodes 3 >/dev/null", root,
             dir);
    return system(cmd);
}

static int setup(void **state)
{
    (void)state;
    char root[PATH_MAX];
    if (!find_root(root, sizeof(root))) {
        fprintf(stderr, "test_transport: set TRINE_ROOT to the repository root\n");
        return -1;
    }
    snprintf(g_tmp, sizeof(g_tmp), "%s", tu_mkdtemp("transport"));
    snprintf(g_ca1, sizeof(g_ca1), "%s/ca1", g_tmp);
    snprintf(g_ca2, sizeof(g_ca2), "%s/ca2", g_tmp);
    if (gen_certs(root, g_ca1) != 0 || gen_certs(root, g_ca2) != 0) {
        fprintf(stderr, "test_transport: gen-certs.sh failed\n");
        return -1;
    }
    g_seed = rng_test_seed("test_transport");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tu_rm_rf(g_tmp);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_from_cn),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_exchange),
        cmocka_unit_test(test_oversize_frame),
        cmocka_unit_test(test_garbage_on_tls_port),
        cmocka_unit_test(test_wrong_ca),
        cmocka_unit_test(test_wrong_node_id),
        cmocka_unit_test(test_reconnect_with_queue),
        cmocka_unit_test(test_close_in_callback),
        cmocka_unit_test(test_conns_max),
        cmocka_unit_test(test_peer_by_name),
        cmocka_unit_test(test_client_never_reads),
        cmocka_unit_test(test_queue_full),
    };
    return cmocka_run_group_tests_name("transport", tests, setup, teardown);
}
