/*
 * transport.h - mutual-TLS framed messaging between nodes and clients, on
 * libevent bufferevents with OpenSSL.
 *
 * Frame layout (DESIGN.md section 5), the only bytes this module owns:
 *
 *   offset 0   u32 big-endian   L, body length, 0 <= L <= frame_bytes_max
 *   offset 4   L bytes          body: one msgpack value, opaque here (the
 *                               caller encodes and decodes it with codec/)
 *
 * A declared L above frame_bytes_max closes the connection (logged with the
 * peer and the size, counted, reported to on_close / on_peer_state with
 * -TRINE_ETOO_LARGE); a frame is never partially delivered.
 *
 * Identity. Every connection is TLS 1.2+ (1.3 when both sides have it) with
 * mutual authentication against the configured CA: the accepting side demands
 * a client certificate (SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT).
 * The certificate's single subject CN is the identity: "node-<id>" (id a
 * decimal u32 > 0) or "client". Dialing peer <id> requires CN "node-<id>";
 * an accepted connection is offered to on_accept with its verified identity
 * (transport_conn_identity) so the server can refuse a node whose
 * certificate does not match the id it claims. A CN that is neither form, or
 * the wrong node id, closes the connection: log_warn with the reason and
 * stats.identity_mismatches. A failed handshake (untrusted chain, plaintext,
 * garbage, timeout) is logged and counted in stats.handshake_failures; other
 * connections are unaffected.
 *
 * Bounds (STYLE.md "bound everything"):
 *   - input: a connection buffers at most frame_bytes_max + 4 decrypted bytes
 *     plus one TLS record before reading stops (bufferevent read watermark);
 *   - output: transport_conn_send is refused with -TRINE_EBUSY once the
 *     connection's unsent plaintext reaches output_bytes_max, so it never
 *     exceeds output_bytes_max + one frame (TLS then holds at most
 *     TRANSPORT_TLS_STAGE_BYTES more of ciphertext);
 *   - accepted connections stop being read (no more frames delivered) while
 *     their unsent output is above output_high_bytes and resume below
 *     output_low_bytes, so a client that never reads its replies cannot make
 *     the server buffer more. Dialed connections are always read, so two
 *     nodes that both stop reading cannot deadlock;
 *   - a connection with unsent output of which no byte drains for
 *     stall_timeout_ms is closed (stats.stalled_closes);
 *   - each peer has a send queue of at most peer_queue_frames_max frames and
 *     peer_queue_bytes_max bytes (beyond: -TRINE_EBUSY); accepted connections
 *     are capped at conns_max.
 *
 * Peers. transport_peer_add keeps one outbound connection to a node, redialed
 * with exponential backoff and jitter (backoff_min_ms doubling to
 * backoff_max_ms, each delay drawn uniformly from [d/2, d]). Frames sent with
 * transport_peer_send wait in the peer's queue while it is down and survive
 * reconnects; a frame already handed to a connection that then fails is lost
 * (at-most-once: Raft retransmits). Frames from the peer arrive through
 * on_frame like any other; up/down changes through on_peer_state.
 *
 * Threading: none. A transport lives on one event_base that the caller owns
 * and runs; every function here must be called from the thread running that
 * loop, and callbacks run on it. No locks are taken.
 *
 * Ownership:
 *   - transport_create allocates, transport_destroy frees everything it made
 *     (connections, peers, queues, SSL objects) without calling callbacks;
 *     the event_base must outlive it (libevent finishes freeing bufferevents
 *     on its next loop iteration or in event_base_free). Config strings are
 *     only read during transport_create.
 *   - struct transport_conn belongs to the transport. An accepted connection
 *     is valid from on_accept until on_close (which the transport calls when
 *     it closes the connection for any reason) or until the caller's own
 *     transport_conn_close, which frees it without calling on_close. A dialed
 *     (peer) connection must not be kept beyond the callback that showed it.
 *   - on_frame's body is borrowed: valid until on_frame returns.
 *   - callbacks may call transport_conn_send and transport_conn_close (also
 *     on the connection being reported; it is freed after the callback
 *     returns) and transport_peer_send; they must not call
 *     transport_peer_remove or transport_destroy.
 */
#ifndef TRINE_TRANSPORT_TRANSPORT_H
#define TRINE_TRANSPORT_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

struct event_base;
struct transport;
struct transport_conn;

#define TRANSPORT_FRAME_HEADER_BYTES 4
#define TRANSPORT_FRAME_BYTES_MAX    (1u << 30) /* ceiling for frame_bytes_max */
/* Ciphertext TLS may hold beyond a connection's plaintext output limit. */
#define TRANSPORT_TLS_STAGE_BYTES ((size_t)256 * 1024)
#define TRANSPORT_CN_MAX          64

enum transport_peer_kind {
    TRANSPORT_PEER_UNKNOWN = 0, /* not yet authenticated, or an unusable CN */
    TRANSPORT_PEER_NODE,        /* CN "node-<id>" */
    TRANSPORT_PEER_CLIENT,      /* CN "client" */
};

/* The verified identity of the far end of a connection. */
struct transport_identity {
    enum transport_peer_kind kind;
    uint32_t node_id;          /* kind == NODE */
    char cn[TRANSPORT_CN_MAX]; /* certificate subject CN, NUL-terminated */
};

struct transport_callbacks {
    /* A complete frame arrived on conn (accepted or dialed). Required. */
    void (*on_frame)(void *ctx, struct transport_conn *conn, const uint8_t *body, size_t len);
    /* An accepted connection finished its handshake; its identity is
     * verified. Return 0 to keep it, anything else to refuse it (closed,
     * on_close not called). NULL keeps every node and client. */
    int (*on_accept)(void *ctx, struct transport_conn *conn);
    /* The transport closed an accepted connection that on_accept kept: rc is
     * -TRINE_ECLOSED (peer closed), -TRINE_EIO, -TRINE_ETOO_LARGE (oversize
     * frame), -TRINE_ETIMEOUT (stalled) ...; reason is a borrowed message.
     * conn is freed when the callback returns. May be NULL. */
    void (*on_close)(void *ctx, struct transport_conn *conn, int rc, const char *reason);
    /* Peer `peer_id` became reachable (up, rc 0) or was lost (rc and reason
     * say why). Called once per transition. May be NULL. */
    void (*on_peer_state)(void *ctx, uint32_t peer_id, bool up, int rc, const char *reason);
    void *ctx;
};

struct transport_config {
    const char *cert_file;          /* PEM chain: this node's (or client's) certificate */
    const char *key_file;           /* PEM private key */
    const char *ca_file;            /* PEM CA that every peer must chain to */
    uint32_t frame_bytes_max;       /* largest body accepted or sent (16 MiB) */
    size_t output_bytes_max;        /* per-connection unsent limit (32 MiB) */
    size_t output_high_bytes;       /* stop reading an accepted conn above (4 MiB) */
    size_t output_low_bytes;        /* resume reading at or below (1 MiB) */
    uint32_t stall_timeout_ms;      /* close when output drains nothing this long (30 s) */
    uint32_t handshake_timeout_ms;  /* TCP connect + TLS handshake deadline (10 s) */
    uint32_t conns_max;             /* accepted connections at once (1024) */
    size_t peer_queue_bytes_max;    /* per-peer queue, framed bytes (64 MiB) */
    uint32_t peer_queue_frames_max; /* per-peer queue, frames (65536) */
    uint32_t backoff_min_ms;        /* first redial delay (50 ms) */
    uint32_t backoff_max_ms;        /* redial delay ceiling (5 s) */
    uint64_t jitter_seed;           /* backoff jitter PRNG seed; 0 = clock and pid */
    struct transport_callbacks cb;
};

/* Counters since transport_create; conns_open is a gauge. */
struct transport_stats {
    uint64_t conns_accepted;      /* TCP connections accepted by the listener */
    uint64_t conns_refused;       /* ... closed at once because conns_max was reached */
    uint64_t conns_open;          /* connections alive now, both directions, any state */
    uint64_t peer_connects;       /* dialed connections that passed the handshake */
    uint64_t handshake_failures;  /* TLS handshakes that failed or timed out */
    uint64_t identity_mismatches; /* verified certificates with an unacceptable CN */
    uint64_t frames_in;
    uint64_t frames_out; /* handed to a connection (not known to be delivered) */
    uint64_t bytes_in;   /* framed bytes, headers included */
    uint64_t bytes_out;
    uint64_t oversize_frames;     /* declared lengths over frame_bytes_max */
    uint64_t backpressure_events; /* -TRINE_EBUSY returns and read pauses */
    uint64_t stalled_closes;      /* connections closed by the stall timeout */
};

void transport_config_default(struct transport_config *c);

/* Loads the certificate, key and CA, builds the TLS context. Ignores SIGPIPE
 * process-wide if it was at its default (libevent writes with writev, which
 * would otherwise kill the process when a peer resets). Returns 0,
 * -TRINE_EINVALID (bad config, unreadable or mismatched PEM files; detail in
 * err) or -TRINE_ENOMEM. */
int transport_create(struct event_base *base, const struct transport_config *c,
                     struct transport **out, struct trine_err *err);
/* Closes everything; must not be called from a transport callback. */
void transport_destroy(struct transport *t);

/* Listens on "host:port" ("[v6]:port", ":port" = every address; port 0 picks
 * an ephemeral port). One listener per transport. */
int transport_listen(struct transport *t, const char *host_port, struct trine_err *err);
/* The bound port, 0 before transport_listen. */
uint16_t transport_listen_port(const struct transport *t);

/* Frames body and queues it on conn. 0, -TRINE_ETOO_LARGE (len over
 * frame_bytes_max), -TRINE_EBUSY (output at its limit: drop or retry later),
 * -TRINE_ECLOSED (conn is closing or not yet established), -TRINE_ENOMEM. */
int transport_conn_send(struct transport_conn *conn, const void *body, size_t len);
/* Closes conn now, dropping unsent output; conn is invalid afterwards (freed
 * after the current callback if called from one). on_close is not called. */
void transport_conn_close(struct transport_conn *conn);
const struct transport_identity *transport_conn_identity(const struct transport_conn *conn);
/* True for a connection this transport dialed (a peer's). */
bool transport_conn_is_outbound(const struct transport_conn *conn);
/* Remote address "ip:port" (accepted) or the peer's "host:port" (dialed). */
const char *transport_conn_addr(const struct transport_conn *conn);
/* Unsent plaintext bytes (what output_bytes_max bounds). */
size_t transport_conn_output_bytes(const struct transport_conn *conn);
/* A caller pointer carried by the connection (NULL initially). */
void transport_conn_set_data(struct transport_conn *conn, void *data);
void *transport_conn_data(const struct transport_conn *conn);

/* Starts keeping a connection to node `id` at "host:port" (a name is
 * resolved with evdns at each dial). -TRINE_EEXISTS if id is already a peer,
 * -TRINE_EINVALID for id 0 or a bad address. */
int transport_peer_add(struct transport *t, uint32_t id, const char *host_port,
                       struct trine_err *err);
/* Drops the peer, its connection and its queue. Not from a callback.
 * -TRINE_ENOT_FOUND if unknown. */
int transport_peer_remove(struct transport *t, uint32_t id);
/* Queues one frame for peer id (sent now if it is up and has room). 0,
 * -TRINE_ENOT_FOUND, -TRINE_ETOO_LARGE, -TRINE_EBUSY (queue full), -TRINE_ENOMEM. */
int transport_peer_send(struct transport *t, uint32_t id, const void *body, size_t len);
bool transport_peer_is_up(const struct transport *t, uint32_t id);
/* Frames and framed bytes waiting in the peer's queue (not yet handed to a
 * connection). -TRINE_ENOT_FOUND if unknown. */
int transport_peer_queued(const struct transport *t, uint32_t id, uint32_t *frames, size_t *bytes);

void transport_stats(const struct transport *t, struct transport_stats *out);

/* The one place OpenSSL's error queue becomes a Trine status: drains the
 * queue into err as "<context>: <first OpenSSL errors>" and returns rc. */
int transport_ssl_error(struct trine_err *err, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
