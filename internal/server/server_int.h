/*
 * server_int.h - the server's internals, shared by its source files:
 *   server.c   life cycle, loop, timers, wakeup, signals, transport callbacks
 *   route.c    client requests: decode, validate, dispatch by type (a table),
 *              local replica calls or forwarding, reply encoding
 *   forward.c  requests forwarded to another node and their replies
 *   scatter.c  requests that fan out: cross-partition scan, cluster status
 *   admin.c    HTTP /health, /metrics, /status
 *
 * Every in-flight request is a struct op. Its reply goes to op->done: for a
 * client request that encodes the reply and sends it on the client's
 * connection (if it is still open); for a part of a scatter it merges into
 * the parent. Ops on a connection are listed on its struct conn_state so a
 * closed connection detaches them (their replies are then dropped).
 */
#ifndef TRINE_SERVER_SERVER_INT_H
#define TRINE_SERVER_SERVER_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "base/buf.h"
#include "codec/codec.h"
#include "metrics/metrics.h"
#include "replica/replica.h"
#include "ring/ring.h"
#include "server/server.h"
#include "transport/transport.h"

struct event_base;
struct event;
struct evhttp;
struct op;

/* Per accepted connection. */
struct conn_state {
    struct transport_conn *conn;
    struct op *ops; /* in-flight ops answering on this connection */
    bool hello_ok;  /* a node connection whose hello matched this cluster (server.c) */
    struct conn_state *prev, *next; /* on server.conns (freed at the latest by server_destroy) */
};

typedef void (*op_done_fn)(struct op *op, const struct codec_msg *reply);

struct op {
    struct server *s;
    struct conn_state *cs;  /* NULL once detached or for internal ops */
    struct op *prev, *next; /* on cs->ops */
    uint64_t req_id;        /* the requester's id, restored in the reply */
    uint8_t type;           /* request message type */
    uint8_t consistency;
    bool from_node; /* the requester is a node (a forwarded request) */
    uint64_t start_ns;
    op_done_fn done;
    void *parent;       /* scatter this op is part of */
    uint32_t partition; /* scatter: which part */
};

#define FWD_SLOTS 65536u /* forwarded requests in flight at once (power of two) */

struct fwd {
    uint64_t id; /* req_id on the wire to the target; 0 = free slot */
    struct op *op;
    uint32_t target;
    uint32_t partition;
    uint8_t attempts;
    uint64_t deadline_ns;
    struct buf frame;        /* the request as sent (for a retry at a new leader) */
    struct fwd *prev, *next; /* active list */
};

struct server_metrics {
    struct metric *requests[8][3]; /* [op][consistency] */
    struct metric *latency[8][3];  /* seconds */
    struct metric *errors[64];     /* by wire status code */
    struct metric *forwards;
    struct metric *forward_retries;
    struct metric *bad_frames;
    struct metric *unintroduced; /* peer frames before a valid hello */
};

struct server {
    const struct server_config *cfg;
    struct event_base *base;
    struct event *timer_ev;
    uint64_t timer_due_ms; /* when timer_ev fires, if pending (mono ms) */
    struct event *wake_ev;
    struct event *sig_ev[2];
    struct evhttp *http;
    struct transport *t;
    struct replica *rep;
    struct ring *ring;
    struct metrics *metrics;
    struct server_metrics m;
    struct codec_limits lim;
    struct codec_scratch *scratch;
    struct buf out;         /* encode buffer, reused */
    uint32_t *leader_cache; /* per partition: last leader seen in a hint (0 = none) */
    uint64_t next_fwd_id;
    struct fwd *fwd; /* FWD_SLOTS */
    struct fwd *fwd_active;
    uint32_t fwd_count;
    uint32_t scans_active;         /* scatter scans in progress (scatter.c) */
    struct conn_state *conns;      /* every accepted connection's state */
    uint64_t hello_refused_log_ns; /* last "refusing it" log line (rate limit) */
    uint32_t hello_refused_quiet;  /* refusals not logged since */
    volatile int stop_requested;   /* set by signals / server_stop */
    bool stopping;
    uint64_t stop_deadline_ns;
    int exit_rc;
    struct trine_err err;
};

/* server.c */
uint64_t server_now_ns(void);
const char *server_member_addr(const struct server *s, uint64_t id);
void server_pump(struct server *s);
void server_kick(struct server *s); /* pump once, after this loop iteration's callbacks */

/* Detaches cs's ops (their replies are dropped) and frees cs. Call after the connection
 * was closed or is being destroyed. */
void conn_state_free(struct server *s, struct conn_state *cs);

/* route.c */
void route_frame(struct server *s, struct conn_state *cs, bool from_node, const uint8_t *body,
                 size_t len);
void route_reply_error(struct server *s, struct conn_state *cs, uint64_t req_id, int rc,
                       const char *msg);
struct op *op_new(struct server *s, struct conn_state *cs, uint64_t req_id, uint8_t type,
                  uint8_t consistency, bool from_node, op_done_fn done);
void op_free(struct op *op);
void op_send_reply(struct op *op, const struct codec_msg *reply);
/* Fills a reply header for op from a status. */
void op_fill_header(struct op *op, struct codec_rep_header *h, int status, const char *msg);
void op_account(struct op *op, int status);
/* Dispatches a decoded request as if it came on op (used by scatter). */
void route_execute(struct server *s, struct op *op, const struct codec_msg *req);
uint8_t route_reply_type(uint8_t req_type);
/* Message type of a frame body without decoding it, or -1. */
int route_peek_type(const uint8_t *body, size_t len);

/* forward.c */
int fwd_init(struct server *s);
void fwd_free(struct server *s);
/* Sends req (its hdr.req_id is replaced) to node target for op. */
int fwd_send(struct server *s, struct op *op, uint32_t target, uint32_t partition,
             const struct codec_msg *req);
/* A reply frame arrived from a peer on our outbound connection. */
void fwd_reply(struct server *s, uint32_t from, const struct codec_msg *reply);
void fwd_expire(struct server *s, uint64_t now_ns);
/* Peer went down: its forwards are answered now (TIMEOUT, outcome unknown). */
void fwd_peer_down(struct server *s, uint32_t peer);

/* scatter.c */
void scatter_scan(struct server *s, struct op *op, const struct codec_scan_req *req);
void scatter_status(struct server *s, struct op *op);
void status_local_row(struct server *s, struct codec_member_status *row);

/* admin.c */
/* Registers the scrape-time series the server owns (transport counters). */
int admin_metrics_init(struct server *s, struct trine_err *err);
int admin_start(struct server *s, const char *host_port, struct trine_err *err);
void admin_stop(struct server *s);

#endif
