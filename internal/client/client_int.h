/*
 * client_int.h - internals of the client library shared by its files:
 *   tls.c    TLS context and the OpenSSL error boundary
 *   conn.c   one blocking TLS connection with deadlines (frames in and out)
 *   pool.c   endpoints and their idle-connection pools
 *   route.c  partition map cache and leader hints
 *   call.c   one request with routing, retries and backoff
 *   client.c open/close, error reporting, status names
 *   kv.c     the public get/put/del/cas/scan/cluster calls
 *   async.c  many calls in flight from one thread (trine_async_*)
 *
 * Locking: one mutex per handle (c->mu) guards the endpoint table, every
 * pool, the route cache and the jitter PRNG. It is never held across I/O: a
 * thread takes a connection out of a pool, uses it alone, and gives it back.
 * Endpoint structs are never freed before trine_client_close, so a pointer to
 * one stays valid without the lock.
 *
 * Include order: base/ and codec/ headers before client/trine.h (trine.h
 * skips its copy of the status enum when base/status_codes.h came first).
 */
#ifndef TRINE_CLIENT_CLIENT_INT_H
#define TRINE_CLIENT_CLIENT_INT_H

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/rand.h"
#include "base/status.h"
#include "codec/codec.h"
#include "client/codes.h"
#include "client/trine.h"

#define CLIENT_SEEDS_MAX      64   /* endpoints given to trine_client_open */
#define CLIENT_ENDPOINTS_MAX  1100 /* seeds + members of the partition map */
#define CLIENT_IDLE_MAX       8    /* idle connections kept per endpoint */
#define CLIENT_CONNS_MAX      32   /* open connections per endpoint */
#define CLIENT_CONNECT_MS     1000 /* cap on connect + handshake of one attempt */
#define CLIENT_DOWN_MS        500  /* skip an endpoint this long after it failed */
#define CLIENT_BACKOFF_MIN_MS 10
#define CLIENT_BACKOFF_MAX_MS 500
#define CLIENT_HINT_HOPS_MAX  4    /* consecutive NOT_LEADER redirects without backoff */
#define CLIENT_OPEN_MAP_MS    2000 /* budget of the partition map fetch in open */
#define CLIENT_REFRESH_GAP_MS 200  /* least time between two map refreshes */
#define CLIENT_HOST_MAX       (TRINE_ADDR_MAX)

struct client_conn;

struct client_endpoint {
    char addr[TRINE_ADDR_MAX];  /* "host:port" as configured or advertised */
    char host[CLIENT_HOST_MAX]; /* without brackets */
    char port[8];
    uint64_t node_id; /* 0 until the partition map names it */
    uint64_t down_until_ns;
    struct client_conn *idle[CLIENT_IDLE_MAX];
    int n_idle;
    int n_open; /* idle + in use */
};

/* The cached partition map. partitions = 0: none yet (send anywhere). */
struct client_route {
    uint32_t partitions;
    uint64_t epoch;
    uint64_t *leader;    /* [partitions] node id of the primary, 0 unknown */
    uint8_t *n_replicas; /* [partitions] */
    bool stale;          /* a reply said the cache is wrong: refresh */
    bool refreshing;     /* one thread is fetching; the others do not pile on */
    uint64_t refreshed_ns;
};

struct trine_client {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a connection slot was freed (CLOCK_MONOTONIC) */
    SSL_CTX *ssl_ctx;
    BIO_METHOD *bio_method; /* socket BIO that never raises SIGPIPE */
    struct codec_limits limits;
    uint64_t client_id;
    uint64_t next_seq;    /* atomic */
    uint64_t next_req_id; /* atomic */
    struct client_endpoint *eps[CLIENT_ENDPOINTS_MAX];
    size_t n_eps;
    size_t n_seeds;
    size_t rr; /* round robin over endpoints for "send anywhere" */
    struct client_route route;
    struct rng rng;
};

/* ---- tls.c ---- */

/* Converts OpenSSL's error queue (drained) into err with rc and a context. */
int client_ssl_error(struct trine_err *err, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Client TLS context: TLS >= 1.2, peer verified against ca_file, our
 * certificate and key. -TRINE_EINVALID with the file named on error. */
int client_tls_ctx_new(const struct trine_tls *tls, SSL_CTX **out, struct trine_err *err);
/* The BIO method used for sockets (send with MSG_NOSIGNAL). */
int client_bio_method_new(BIO_METHOD **out, struct trine_err *err);
/* True if the OpenSSL reason code is a TLS alert about certificates. */
bool client_tls_is_auth_alert(unsigned long e);

/* ---- conn.c ---- */

/* Connects to ep (TCP, then the TLS handshake with the host name or IP
 * checked against the node's certificate) before deadline_ns. Errors:
 * -TRINE_ETIMEOUT, -TRINE_EUNAUTHENTICATED (certificates), -TRINE_EIO. */
int client_conn_open(struct trine_client *c, const struct client_endpoint *ep, uint64_t deadline_ns,
                     struct client_conn **out, struct trine_err *err);
void client_conn_close(struct client_conn *conn);
/* True if an idle connection was closed by its peer (or has stray bytes). */
bool client_conn_stale(struct client_conn *conn);
/* Writes the whole frame. -TRINE_ETIMEOUT, -TRINE_ECLOSED, -TRINE_EIO. */
int client_conn_send(struct client_conn *conn, const uint8_t *p, size_t n, uint64_t deadline_ns,
                     struct trine_err *err);
/* Reads one frame and decodes it into *out, which points into conn's
 * buffers until the next call on conn. -TRINE_ETIMEOUT, -TRINE_ECLOSED,
 * -TRINE_EIO, -TRINE_EUNAUTHENTICATED (the node refused our certificate),
 * or the codec's -TRINE_EBAD_REQUEST/-TRINE_ETOO_LARGE for a bad frame. */
int client_conn_recv(struct client_conn *conn, const struct codec_limits *lim, uint64_t deadline_ns,
                     struct codec_msg *out, struct trine_err *err);
struct client_endpoint *client_conn_endpoint(const struct client_conn *conn);
/* Non-blocking use by async.c: many requests in flight, the caller polls
 * the fd. The _some calls move what they can without waiting: *n bytes (0
 * with *want = POLLIN/POLLOUT: wait for that, then call again with the
 * same or more bytes; a write must be retried). Errors as client_conn_send
 * and client_conn_recv, and the connection must then be closed. */
int client_conn_fd(const struct client_conn *conn);
void client_conn_set_pipelined(struct client_conn *conn);
bool client_conn_has_pending(const struct client_conn *conn);
int client_conn_write_some(struct client_conn *conn, const uint8_t *p, size_t len, size_t *n,
                           short *want, struct trine_err *err);
int client_conn_read_some(struct client_conn *conn, uint8_t *p, size_t len, size_t *n, short *want,
                          struct trine_err *err);

/* ---- pool.c ---- */

/* Parses "host:port" / "[v6]:port" into ep (zeroed first). -TRINE_EINVALID. */
int client_endpoint_parse(const char *s, size_t len, struct client_endpoint *ep,
                          struct trine_err *err);
/* Endpoint with this address, added if new (caller holds c->mu). NULL if the
 * address is malformed or the table is full. */
struct client_endpoint *client_endpoint_intern(struct trine_client *c, const char *addr,
                                               size_t len);
/* A connection to ep: an idle one if it is still good, else a new one.
 * *reused tells which. Waits for a slot if CLIENT_CONNS_MAX are in use. */
int client_pool_get(struct trine_client *c, struct client_endpoint *ep, uint64_t deadline_ns,
                    struct client_conn **out, bool *reused, struct trine_err *err);
/* Returns conn to its pool if healthy, else closes it. */
void client_pool_put(struct trine_client *c, struct client_conn *conn, bool healthy);
/* Marks ep as failing for CLIENT_DOWN_MS. */
void client_endpoint_down(struct trine_client *c, struct client_endpoint *ep);
/* Next endpoint for a request that may go anywhere, skipping failing ones
 * when possible. Never NULL (there is at least one seed). */
struct client_endpoint *client_endpoint_any(struct trine_client *c);
/* Closes every idle connection and frees every endpoint (close only). */
void client_pool_destroy(struct trine_client *c);

/* ---- route.c ---- */

uint32_t client_route_partition(uint32_t partitions, const void *key, size_t len);
/* Endpoint of the cached primary of key's partition, or NULL (send anywhere).
 * *replicas gets the partition's replica count (0 unknown), *partition
 * (may be NULL) the partition (0 without a map). */
struct client_endpoint *client_route_leader(struct trine_client *c, const void *key, size_t len,
                                            uint32_t *replicas, uint64_t *leader,
                                            uint32_t *partition);
/* Applies a reply's leader hint for key (key NULL: only learns the address).
 * Returns the hinted endpoint, or NULL if the hint has no usable address. */
struct client_endpoint *client_route_hint(struct trine_client *c, const void *key, size_t len,
                                          const struct codec_leader_hint *hint);
/* Marks the map stale (NOT_LEADER without a hint). */
void client_route_invalidate(struct trine_client *c);
/* Fetches the partition map if there is none or it is stale, unless another
 * thread is at it or it was fetched very recently. One pass over the
 * endpoints, bounded by deadline_ns; failure only leaves the cache as it was. */
void client_route_refresh(struct trine_client *c, uint64_t deadline_ns, bool force);
/* Installs a partition_map_reply (tests use it through the refresh path). */
int client_route_install(struct trine_client *c, const struct codec_partition_map_reply *m,
                         struct trine_err *err);
void client_route_free(struct client_route *r);

/* ---- call.c ---- */

/* Copies what the caller needs out of a final reply while its bytes live.
 * Called for OK and for final error statuses that carry a reply. */
typedef int (*client_reply_fn)(void *arg, const struct codec_msg *reply);

struct client_req {
    struct codec_msg *msg; /* request; the call fills its header */
    const void *key;       /* routing key, NULL: any node */
    size_t key_len;
    bool write; /* uses (client_id, seq); outcome may be unknown */
    const struct trine_opts *opts;
    client_reply_fn on_reply; /* may be NULL */
    void *arg;
};

/* Sends req with routing and retries (see trine.h). Returns 0 or -code; res
 * gets the header fields of the final reply; err the detail. */
int client_call(struct trine_client *c, const struct client_req *req, struct trine_result *res,
                struct trine_err *err);

/* What an outcome makes a call do next (call.c's table; async.c shares it). */
enum client_action {
    CLIENT_ACT_FINAL,     /* return the status to the caller */
    CLIENT_ACT_REDIRECT,  /* go to the hinted node now; without a hint refresh the map and back off
                           */
    CLIENT_ACT_BACKOFF,   /* back off and try again (maybe elsewhere) */
    CLIENT_ACT_UNCERTAIN, /* as BACKOFF, and a write's outcome is now unknown */
};
/* The action for a reply with status rc (an `all` refusal by the leader
 * itself is final). */
enum client_action client_reply_action(int rc, const struct codec_rep_header *h);
/* Copies a final reply's header fields into res. */
void client_fill_result(struct trine_result *res, const struct codec_rep_header *h);
/* client_fill_result, plus what the reply type carries: version (put, cas,
 * CAS_FAILED's current one), a found key's metadata (get). */
void client_reply_result(struct trine_result *res, const struct codec_msg *rep);
/* err = a failed reply's status, naming the node (and its message). Returns rc. */
int client_reply_error(struct trine_err *err, int rc, const struct codec_rep_header *h,
                       const char *addr);
/* A transport failure that no retry fixes (certificates, refused frame, memory). */
bool client_transport_fatal(int rc);
/* How a call ended without a final answer (its deadline passed). */
struct client_verdict {
    bool uncertain;    /* a write went out without a definite answer */
    int last;          /* the last attempt's outcome */
    bool last_replied; /* last came from a reply */
    unsigned attempts;
    uint64_t took_ms;
    const char *last_msg;
};
/* The status and message of such a call: TIMEOUT "outcome unknown" for an
 * uncertain write, TIMEOUT, else the last reply's status or UNAVAILABLE. */
int client_give_up(struct trine_err *err, const struct client_verdict *v);
/* The n-th retry's backoff: equal jitter over an exponential step. */
uint64_t client_backoff_ns(struct trine_client *c, unsigned n);
/* Sets m's header identity for a new call: the handle's client id, a new
 * seq for a write (kept by every retry), the wire level. Returns the header. */
struct codec_req_header *client_req_identity(struct trine_client *c, struct codec_msg *m,
                                             bool write, enum trine_consistency level);
/* hdr->timeout_ms: what is left of the call before deadline_ns (>= 1). */
void client_req_timeout(struct codec_req_header *hdr, uint64_t now_ns, uint64_t deadline_ns);

/* Wire status (0 = ok) as a return code; unknown codes become INTERNAL. */
int client_status_from_wire(unsigned status);

/* ---- kv.c ---- */

/* Argument checks of a key/value call (sizes against the codec limits, so an
 * oversize key fails locally with TOO_LARGE and nothing is sent). */
int client_kv_check(struct trine_client *c, const void *key, size_t key_len, const void *value,
                    size_t value_len, bool key_required, struct trine_err *err);

/* ---- client.c ---- */

/* Records the calling thread's last error on c and returns err->code. */
int client_fail(const struct trine_client *c, const struct trine_err *err);
/* Clears the calling thread's last error on c. */
void client_ok(const struct trine_client *c);
uint64_t client_deadline_ns(const struct trine_opts *opts);
enum trine_consistency client_consistency(const struct trine_opts *opts);

#endif
