/*
 * transport_impl.h - the transport's internal structures, shared by its
 * files and by nothing else:
 *
 *   transport.c  create/destroy, config checks, stats, address parsing
 *   tls.c        SSL_CTX, certificate identity, OpenSSL error conversion
 *   conn.c       one TLS connection: framing, output limits, read pausing,
 *                stall and handshake timers, close and deferred free
 *   listener.c   evconnlistener, accept, connection cap
 *   peer.c       outbound peers: dial, backoff with jitter, bounded queues
 *
 * Liveness rule: a transport_conn is freed only when it is closed and no
 * transport code for it is on the stack (conn->depth == 0). Every libevent
 * callback holds the conn for its duration, so a user callback may close it.
 */
#ifndef TRINE_TRANSPORT_TRANSPORT_IMPL_H
#define TRINE_TRANSPORT_TRANSPORT_IMPL_H

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/rand.h"
#include "transport/transport.h"

struct bufferevent;
struct event;
struct evbuffer;
struct evconnlistener;
struct evdns_base;

#define TRANSPORT_ADDR_MAX 300
#define TRANSPORT_HOST_MAX 256

enum conn_state {
    CONN_HANDSHAKE, /* TCP connect and/or TLS handshake under way */
    CONN_OPEN,      /* identity verified; frames flow */
    CONN_CLOSED,    /* unlinked; freed once depth reaches 0 */
};

struct transport_peer;

struct transport_conn {
    struct transport *t;
    struct transport_conn *prev, *next; /* t->conns, while not closed */
    struct bufferevent *bev;            /* TLS filter: owns the socket bufferevent and SSL */
    struct event *timer;                /* handshake deadline, then stall checks */
    struct transport_peer *peer;        /* dialing peer, NULL if accepted */
    enum conn_state state;
    bool outbound;         /* dialed by a peer (peer may since have been cleared) */
    unsigned depth;        /* transport frames on the stack for this conn */
    bool announced;        /* on_accept kept it: on_close is owed */
    bool paused;           /* reading stopped by output backpressure */
    bool stall_armed;      /* timer is a stall check */
    uint64_t queued_total; /* plaintext bytes ever put in the output */
    uint64_t stall_mark;   /* drained bytes when the stall check was armed */
    struct transport_identity id;
    char addr[TRANSPORT_ADDR_MAX];
    void *data;
};

struct transport_peer {
    struct transport *t;
    struct transport_peer *next;
    uint32_t id;
    char host[TRANSPORT_HOST_MAX];
    uint16_t port;
    char addr[TRANSPORT_ADDR_MAX];
    bool numeric; /* sa holds the address; else resolve host at each dial */
    struct sockaddr_storage sa;
    int sa_len;
    struct transport_conn *conn; /* current connection, any state, or NULL */
    bool up;
    bool quiet;        /* a dial failure was logged since the last up */
    uint32_t attempts; /* failed dials since the last up: the backoff exponent */
    struct event *timer;
    struct evbuffer *queue; /* whole frames (header + body) not yet handed to conn */
    uint32_t queue_frames;
};

struct transport {
    struct event_base *base;
    struct transport_config cfg; /* file names cleared: not kept */
    SSL_CTX *ssl_ctx;
    struct evconnlistener *listener;
    struct event *listen_retry; /* re-enables the listener after EMFILE and friends */
    uint16_t port;
    struct evdns_base *dns; /* created on the first peer given by name */
    struct rng rng;         /* backoff jitter */
    struct transport_conn *conns;
    uint32_t accepted_open;
    struct transport_peer *peers;
    struct transport_stats stats;
    unsigned cb_depth; /* user callbacks on the stack */
    /* Warnings caused by remote input, at most TRANSPORT_LOG_BURST a second. */
    uint64_t log_window_ns;
    uint32_t log_count;
    uint64_t log_suppressed;
};

#define TRANSPORT_LOG_BURST 20

/* Runs a user callback if set, tracking that one is on the stack. */
#define TRANSPORT_CALL(t, name, ...)                                                               \
    do {                                                                                           \
        if ((t)->cfg.cb.name) {                                                                    \
            (t)->cb_depth++;                                                                       \
            (t)->cfg.cb.name((t)->cfg.cb.ctx, __VA_ARGS__);                                        \
            (t)->cb_depth--;                                                                       \
        }                                                                                          \
    } while (0)

/* transport.c */
/* True if one more warning caused by a remote may be logged this second;
 * otherwise counts it, and the next allowed line says how many were dropped
 * (a handshake flood must not fill the disk with log lines). */
bool transport_log_allowed(struct transport *t);
int transport_split_host_port(const char *s, char *host, size_t host_n, uint16_t *port);

/* tls.c */
int tls_ctx_new(const struct transport_config *c, SSL_CTX **out, struct trine_err *err);
/* Verified identity of ssl's peer; -TRINE_EUNAUTHENTICATED with a reason. */
int tls_peer_identity(SSL *ssl, struct transport_identity *id, struct trine_err *err);
/* Parses a CN into kind and node id (kind UNKNOWN if neither form). */
void tls_identity_from_cn(const char *cn, struct transport_identity *id);
/* Why a TLS bufferevent failed: OpenSSL errors it recorded, the certificate
 * verify result, else errno (sock_err). Writes a message into err. */
int tls_conn_error(struct trine_err *err, int rc, struct bufferevent *bev, int sock_err,
                   const char *context);
/* True if the failed bufferevent saw a TLS-level problem (not just TCP). */
bool tls_conn_failed_in_tls(struct bufferevent *bev);

/* conn.c */
/* Wraps the socket bufferevent `sock` (ownership passes, also on failure)
 * in TLS and links a new conn. peer NULL = accepted. */
int conn_new(struct transport *t, struct bufferevent *sock, bool accepting,
             struct transport_peer *peer, const char *addr, struct transport_conn **out,
             struct trine_err *err);
/* Closes c (idempotent) but never frees it: the caller holds c, or frees
 * it after (conn_release). notify: call on_close (a peer is always told). */
void conn_close(struct transport_conn *c, int rc, const char *reason, bool notify);
/* Pins c; conn_release unpins and frees c if it is closed and unpinned. */
void conn_hold(struct transport_conn *c);
void conn_release(struct transport_conn *c);
/* Frees every conn; for transport_destroy only. */
void conn_free_all(struct transport *t);
/* Appends one frame; applies output limits. */
int conn_write_frame(struct transport_conn *c, const void *body, size_t len);
/* Moves whole frames from a peer queue while the output is below the high
 * watermark. Returns frames moved or a negative status (conn closed). */
int conn_take_frames(struct transport_conn *c, struct evbuffer *queue, uint32_t *queue_frames);

/* peer.c */
void peer_conn_up(struct transport_peer *p);
void peer_conn_lost(struct transport_peer *p, int rc, const char *reason);
/* The output of p's conn drained: move more of the queue. */
void peer_flush(struct transport_peer *p);
void peer_free_all(struct transport *t);

/* listener.c */
void listener_free(struct transport *t);

#endif
