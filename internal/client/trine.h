/*
 * trine.h - the C client library of the Trine key-value store (libtrine).
 *
 * Link with `pkg-config --cflags --libs trine` (shared) or
 * `pkg-config --static --cflags --libs trine` (static). docs/client.md has a
 * tour; docs/example.c is a complete program.
 *
 * Errors. Every fallible function returns int: 0 on success or a NEGATIVE
 * status code, -TRINE_E<NAME> (the same numbers the wire protocol carries,
 * see docs/protocol.md). trine_strerror(rc) describes a code;
 * trine_client_errmsg(c) gives the detail of the calling thread's last failed
 * call on c (which node, which file, why a write's outcome is unknown, ...).
 *
 * Threads. A trine_client_t may be shared by any number of threads: every
 * call may run concurrently with every other call on the same handle except
 * trine_client_close, which must be the last call (no call in flight). The
 * handle keeps a small pool of TLS connections per node; one call uses one
 * connection at a time.
 *
 * Ownership. Every pointer this library returns to you is yours and is freed
 * with the function named next to it: a value from trine_kv_get with
 * trine_free, a scan result with trine_kvs_free, a cluster status with
 * trine_cluster_free, the handle with trine_client_close. Pointers you pass in
 * (keys, values, options, file names) are only read during the call.
 * trine_strerror and trine_status_name return static strings;
 * trine_client_errmsg returns a thread-local string valid until the calling
 * thread's next call into the library.
 *
 * Retries. A call retries by itself (exponential backoff with jitter) on
 * connection failures, UNAVAILABLE, BUSY, TIMEOUT and STALE until its timeout
 * (default 5000 ms) runs out. Writes are retried too: every write carries
 * this handle's random client id and a sequence number, kept across its
 * retries, so the cluster applies it at most once. CAS_FAILED, NOT_FOUND,
 * TOO_LARGE, BAD_REQUEST and UNAUTHENTICATED are never retried. When the
 * timeout runs out after a write may have reached the cluster, the call
 * returns -TRINE_ETIMEOUT and the error message says the outcome is unknown.
 */
#ifndef TRINE_H
#define TRINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes (proto/trine.schema). Calls return 0 or -code. Inside the
 * Trine tree base/status_codes.h defines the same enum; it must then be
 * included first. */
#ifndef TRINE_BASE_STATUS_CODES_H
enum trine_status_code {
    TRINE_EOK = 0,              /* ok */
    TRINE_ENOT_FOUND = 1,       /* key not found */
    TRINE_ENOT_LEADER = 2,      /* node is not the partition's primary (handled inside) */
    TRINE_EUNAVAILABLE = 3,     /* not enough replicas reachable, or no node answered */
    TRINE_ETIMEOUT = 4,         /* timed out; a write's outcome is unknown */
    TRINE_ECAS_FAILED = 5,      /* compare-and-set: the key's version did not match */
    TRINE_ETOO_LARGE = 6,       /* key, value or frame over the limit */
    TRINE_EBAD_REQUEST = 7,     /* malformed or invalid request */
    TRINE_EUNAUTHENTICATED = 8, /* certificate missing or not trusted (either side) */
    TRINE_EINTERNAL = 9,        /* internal error */
    TRINE_EUNSUPPORTED = 10,    /* unknown message type or unsupported version */
    TRINE_EBUSY = 11,           /* server overloaded (retried inside) */
    TRINE_ESTALE = 12,          /* replica behind min_revision (retried inside) */
    TRINE_EIO = 32,             /* I/O error */
    TRINE_ECORRUPT = 33,        /* corrupt data */
    TRINE_ENOMEM = 34,          /* out of memory */
    TRINE_EINVALID = 35,        /* invalid argument (NULL handle, bad endpoint, bad file) */
    TRINE_ECLOSED = 36,         /* connection closed */
    TRINE_EFSYNC = 37,          /* (server only) */
    TRINE_ENOSPACE = 38,        /* (server only) */
    TRINE_EEXISTS = 39,         /* already exists */
    TRINE_EAGAIN = 40,          /* try again */
};
#endif

/* Bounds the cluster enforces by default; the library checks them before
 * sending so an oversize key or value fails at once with -TRINE_ETOO_LARGE. */
#define TRINE_KEY_MAX   4096u
#define TRINE_VALUE_MAX 1048576u
#define TRINE_ADDR_MAX  256u

/* Default per-call timeout (trine_opts.timeout_ms = 0). */
#define TRINE_TIMEOUT_DEFAULT_MS 5000u

/* How much a call pays for safety (docs/consistency.md). */
enum trine_consistency {
    TRINE_CONSISTENCY_DEFAULT = 0, /* strong */
    TRINE_CONSISTENCY_FAST = 1,    /* write: primary fsynced; read: any replica, maybe stale */
    TRINE_CONSISTENCY_STRONG = 2,  /* write: majority fsynced; read: linearizable */
    TRINE_CONSISTENCY_ALL = 3,     /* write: every replica fsynced */
};

/* Per-call options. NULL or a zeroed struct means: strong, no TTL, no
 * min_revision, TRINE_TIMEOUT_DEFAULT_MS. */
struct trine_opts {
    enum trine_consistency consistency;
    uint64_t ttl_ms;       /* put, cas: time to live (0 = never expires) */
    uint64_t min_revision; /* get, scan: serve only once the replica applied this revision */
    uint32_t timeout_ms;   /* whole call including retries (0 = default); scan: per page */
};

/* What a call achieved. Filled on success and, where the server answered,
 * on NOT_FOUND and CAS_FAILED too (zeroed otherwise). */
struct trine_result {
    uint64_t revision;        /* partition log index where the operation took effect */
    uint64_t version;         /* key's version (writes since creation); cas failure: current */
    uint64_t create_revision; /* get: revision that created the key */
    uint64_t mod_revision;    /* get: revision of the last write */
    uint64_t expire_at_ms;    /* get: absolute expiry, ms since the epoch (0 = never) */
    uint64_t served_by;       /* node id of the replica that served the call */
    uint64_t applied_index;   /* that replica's applied index when it answered */
    uint64_t leader;          /* partition's primary as last known (0 = unknown) */
    uint32_t acks;            /* replicas that had the write durable when acknowledged */
    uint32_t replicas;        /* size of the key's replica set (0 = unknown) */
    uint32_t attempts;        /* requests sent or tried, retries included */
    enum trine_consistency consistency; /* level the node served (a fast cas runs strong) */
};

/* TLS material, PEM files. All three are required: the cluster uses mutual TLS. */
struct trine_tls {
    const char *ca_file;   /* CA that signed the nodes' certificates */
    const char *cert_file; /* this client's certificate */
    const char *key_file;  /* its private key (unencrypted) */
};

typedef struct trine_client trine_client_t;

/* Opens a handle on the cluster reachable at endpoints ("host:port,host:port",
 * IPv6 as "[addr]:port"). Tries once to fetch the partition map; if no node
 * answers yet it is fetched lazily by the first call, so open succeeds with no
 * server running. Fails only on bad arguments or TLS files (-TRINE_EINVALID)
 * or -TRINE_ENOMEM, with the detail in errbuf (may be NULL). *out is freed
 * with trine_client_close. */
int trine_client_open(const char *endpoints, const struct trine_tls *tls, trine_client_t **out,
                      char *errbuf, size_t errlen);

/* Closes every connection and frees c. NULL is a no-op. */
void trine_client_close(trine_client_t *c);

/* Detail of the calling thread's last failed call on c ("" if none). */
const char *trine_client_errmsg(const trine_client_t *c);

/* Sets key to value. res (may be NULL) gets revision, version, served_by, acks. */
int trine_kv_put(trine_client_t *c, const void *key, size_t key_len, const void *value,
                 size_t value_len, const struct trine_opts *opts, struct trine_result *res);

/* Reads key. On success *value is a malloc'd copy (freed with trine_free) with
 * a NUL byte after its *value_len bytes, so text values can be used as C
 * strings. -TRINE_ENOT_FOUND if absent (*value = NULL). */
int trine_kv_get(trine_client_t *c, const void *key, size_t key_len, const struct trine_opts *opts,
                 void **value, size_t *value_len, struct trine_result *res);

/* Removes key; succeeds whether or not it existed. */
int trine_kv_del(trine_client_t *c, const void *key, size_t key_len, const struct trine_opts *opts,
                 struct trine_result *res);

/* Sets key to value if its version is expected_version (0 = key must not
 * exist). -TRINE_ECAS_FAILED on mismatch, with res->version the current
 * version (0 = absent). */
int trine_kv_cas(trine_client_t *c, const void *key, size_t key_len, uint64_t expected_version,
                 const void *value, size_t value_len, const struct trine_opts *opts,
                 struct trine_result *res);

/* One key of a scan. key and value are NUL-terminated after their lengths. */
struct trine_kv {
    void *key;
    size_t key_len;
    void *value;
    size_t value_len;
    uint64_t version;
    uint64_t create_revision;
    uint64_t mod_revision;
    uint64_t expire_at_ms;
};

/* A scan result: n items in key order; more = 1 if more keys match than
 * limit allowed (continue with start_after = items[n-1].key). */
struct trine_kvs {
    size_t n;
    struct trine_kv *items;
    int more;
};

/* Keys starting with prefix (empty = every key), greater than start_after
 * (NULL/empty = from the start), in key order across all partitions, at most
 * limit of them (0 = all). The cluster merges partitions; the library pages
 * through it. *out is freed with trine_kvs_free. */
int trine_kv_scan(trine_client_t *c, const void *prefix, size_t prefix_len, const void *start_after,
                  size_t start_after_len, uint32_t limit, const struct trine_opts *opts,
                  struct trine_kvs **out, struct trine_result *res);

/* One member as seen by the node that answered trine_cluster_status. */
struct trine_member {
    uint64_t node_id;
    char address[TRINE_ADDR_MAX]; /* client address host:port, NUL-terminated */
    int healthy;                  /* reachable and serving */
    uint32_t partitions;          /* partition replicas it holds */
    uint32_t primaries;           /* partitions it is primary of */
    uint64_t lag;                 /* worst follower lag over the partitions it leads, entries */
    uint64_t lag_ms;              /* the same in ms: age of the oldest entry a follower lacks */
};

struct trine_cluster {
    uint64_t epoch;     /* ring epoch */
    uint64_t served_by; /* node that answered */
    size_t n_members;
    struct trine_member *members;
};

/* Members and health as seen by any reachable node. *out is freed with
 * trine_cluster_free. */
int trine_cluster_status(trine_client_t *c, const struct trine_opts *opts,
                         struct trine_cluster **out);

/* ---- asynchronous calls ----------------------------------------------------
 * A trine_async_t runs many calls at once from ONE thread, pipelined over a
 * few connections per node (etcd's and Redis's clients work the same way):
 * trine_async_put/get queue a call and return at once; trine_async_run does
 * the I/O and calls each call's callback when it completes. Routing,
 * retries, redirects, deadlines (opts->timeout_ms for the whole call) and
 * the at-most-once identity of writes are those of the blocking calls.
 *
 * The engine belongs to the thread that runs it; the handle c may be used by
 * other threads (blocking calls, other engines) at the same time. Its
 * connections are its own: up to conns_per_node (1..64) to each node,
 * opened when first needed (that connect and handshake blocks the thread,
 * at most about a second). A partition's calls always take the same
 * connection, so a client's writes to a partition arrive in order.
 *
 * Callbacks run inside trine_async_run (and trine_async_close). rc is 0 or
 * -TRINE_E* as the blocking call would return it; res is filled as there;
 * value/value_len (get) are valid only during the callback; for a failing
 * call trine_client_errmsg(c) has the detail during the callback. A
 * callback may start new calls, but must not run or close the engine. */
typedef struct trine_async trine_async_t;
typedef void (*trine_async_fn)(void *arg, int rc, const struct trine_result *res, const void *value,
                               size_t value_len);

int trine_async_open(trine_client_t *c, unsigned conns_per_node, trine_async_t **out);
/* Queue a put / get (del and cas below). 0, or -TRINE_E* at once for bad arguments (as the
 * blocking call), -TRINE_EBUSY with 65536 calls in flight, -TRINE_ECLOSED;
 * then fn is never called. */
int trine_async_put(trine_async_t *a, const void *key, size_t key_len, const void *value,
                    size_t value_len, const struct trine_opts *opts, trine_async_fn fn, void *arg);
int trine_async_get(trine_async_t *a, const void *key, size_t key_len,
                    const struct trine_opts *opts, trine_async_fn fn, void *arg);
/* Delete and compare-and-set, as trine_kv_del / trine_kv_cas (a cas that
 * fails completes with -TRINE_ECAS_FAILED and res->version the current one). */
int trine_async_del(trine_async_t *a, const void *key, size_t key_len,
                    const struct trine_opts *opts, trine_async_fn fn, void *arg);
int trine_async_cas(trine_async_t *a, const void *key, size_t key_len, uint64_t expected_version,
                    const void *value, size_t value_len, const struct trine_opts *opts,
                    trine_async_fn fn, void *arg);
/* Sends what is queued and waits up to timeout_ms (< 0: no limit) until at
 * least one call completes; returns how many completed (0: none in time, or
 * nothing in flight), or -TRINE_EINVALID if called from a callback. */
int trine_async_run(trine_async_t *a, int timeout_ms);
/* Calls queued and not yet completed. */
unsigned trine_async_inflight(const trine_async_t *a);
/* Completes every call still in flight with -TRINE_ECLOSED (a write's
 * outcome is then unknown), closes the engine's connections, frees it. */
void trine_async_close(trine_async_t *a);

void trine_free(void *p);
void trine_kvs_free(struct trine_kvs *kvs);
void trine_cluster_free(struct trine_cluster *cl);

/* "key not found" for -TRINE_ENOT_FOUND (also accepts the positive code). */
const char *trine_strerror(int rc);
/* "NOT_FOUND" for -TRINE_ENOT_FOUND; "OK" for 0; "UNKNOWN" otherwise. */
const char *trine_status_name(int rc);
/* "fast", "strong" or "all" (DEFAULT is strong). */
const char *trine_consistency_name(enum trine_consistency c);
/* Parses "fast" | "strong" | "all"; 0 or -TRINE_EINVALID. */
int trine_consistency_parse(const char *s, enum trine_consistency *out);

#ifdef __cplusplus
}
#endif

#endif
