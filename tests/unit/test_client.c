/*
 * test_client.c - the client library against fake Trine nodes.
 *
 * A fake node is a TLS server in threads (certificates from
 * scripts/gen-certs.sh in a temp dir) that speaks the real codec: a default
 * handler keeps an in-memory store and answers every client request, and a
 * per-test hook can replace any answer (NOT_LEADER with or without a hint,
 * UNAVAILABLE, drop the connection, never answer). Every request a fake
 * receives is logged with its header, so tests check what the client sent:
 * routing, retries with the same (client_id, seq, req_id), no retry.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/rand.h"
#include "base/status.h"
#include "client/client_int.h"
#include "codec/codec.h"
#include "ring/ring.h"
#include "testutil.h"

/* ---------------------------------------------------------------- fake node */

#define FAKE_LOG_MAX    2048
#define FAKE_KEYS_MAX   512
#define FAKE_CONNS_MAX  128
#define FAKE_PARTITIONS 8

enum fake_action { FAKE_DEFAULT, FAKE_REPLY, FAKE_DROP, FAKE_HOLD };

struct fake;
/* Called for every request before the default handler; may fill rep. */
typedef enum fake_action (*fake_hook)(struct fake *f, const struct codec_msg *req,
                                      struct codec_msg *rep);

struct fake_logged {
    uint8_t type;
    struct codec_req_header hdr;
    char key[64];
    uint32_t key_len;
    uint64_t ttl_ms;
};

struct fake_kv {
    char key[128];
    uint32_t klen;
    char *val;
    uint32_t vlen;
    uint64_t version, create_rev, mod_rev, expire_at_ms;
};

struct fake {
    uint64_t node_id;
    char addr[64];
    int lfd;
    SSL_CTX *ctx;
    pthread_t acceptor;
    pthread_t conns[FAKE_CONNS_MAX];
    int n_conns;
    int stop; /* atomic */
    /* everything below under fake_mu (one lock for every fake, so fakes can
     * share a store the way real nodes share the cluster's data) */
    struct fake *store; /* whose kv the default handler uses (self by default) */
    struct fake_logged log[FAKE_LOG_MAX];
    int n_log;
    int by_type[256];
    struct fake_kv kv[FAKE_KEYS_MAX];
    int n_kv;
    uint64_t rev;
    uint64_t leader[FAKE_PARTITIONS]; /* partition map answer */
    struct {
        uint64_t id;
        char addr[64];
    } members[4];
    int n_members;
    uint32_t scan_page; /* items per scan page (0 = limit) */
    fake_hook hook;
    int state; /* free for hooks */
};

static char cert_dir[512];
static pthread_mutex_t fake_mu = PTHREAD_MUTEX_INITIALIZER;

static void fake_tls(struct fake *f, const char *dir)
{
    char p[600], k[600], ca[600], name[32];
    snprintf(name, sizeof(name), "node-%llu.pem", (unsigned long long)f->node_id);
    tu_path(p, sizeof(p), dir, name);
    snprintf(name, sizeof(name), "node-%llu.key", (unsigned long long)f->node_id);
    tu_path(k, sizeof(k), dir, name);
    tu_path(ca, sizeof(ca), dir, "ca.pem");
    f->ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(f->ctx);
    assert_int_equal(SSL_CTX_use_certificate_chain_file(f->ctx, p), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(f->ctx, k, SSL_FILETYPE_PEM), 1);
    assert_int_equal(SSL_CTX_load_verify_locations(f->ctx, ca, NULL), 1);
    SSL_CTX_set_verify(f->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_num_tickets(f->ctx, 0);
}

/* Reads exactly n bytes; 0 ok, -1 on EOF, error or stop. */
static int fake_read(struct fake *f, SSL *ssl, int fd, uint8_t *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        if (SSL_pending(ssl) == 0) {
            struct pollfd pf = {.fd = fd, .events = POLLIN};
            int r = poll(&pf, 1, 20);
            if (__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) return -1;
            if (r <= 0) continue;
        }
        size_t k = 0;
        ERR_clear_error();
        if (SSL_read_ex(ssl, p + got, n - got, &k) != 1) {
            int e = SSL_get_error(ssl, 0);
            if (e == SSL_ERROR_WANT_READ) continue;
            return -1;
        }
        got += k;
    }
    return 0;
}

static struct fake_kv *fake_find(struct fake *f, struct codec_bytes key)
{
    for (int i = 0; i < f->n_kv; i++) {
        if (f->kv[i].klen == key.len && memcmp(f->kv[i].key, key.data, key.len) == 0)
            return &f->kv[i];
    }
    return NULL;
}

static int fake_kv_cmp(const void *a, const void *b)
{
    const struct fake_kv *x = *(const struct fake_kv *const *)a;
    const struct fake_kv *y = *(const struct fake_kv *const *)b;
    uint32_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    return c != 0 ? c : (int)x->klen - (int)y->klen;
}

static void fake_write(struct fake *f, struct codec_bytes key, struct codec_bytes val,
                       uint64_t ttl_ms, struct codec_rep_header *h, uint64_t *version)
{
    struct fake_kv *kv = fake_find(f, key);
    assert_true(key.len <= sizeof(kv->key));
    if (kv == NULL) {
        assert_true(f->n_kv < FAKE_KEYS_MAX);
        kv = &f->kv[f->n_kv++];
        memset(kv, 0, sizeof(*kv));
        memcpy(kv->key, key.data, key.len);
        kv->klen = key.len;
        kv->create_rev = f->rev + 1;
    }
    free(kv->val);
    kv->val = malloc(val.len + 1);
    assert_non_null(kv->val);
    if (val.len) memcpy(kv->val, val.data, val.len);
    kv->vlen = val.len;
    kv->version++;
    kv->mod_rev = ++f->rev;
    kv->expire_at_ms = ttl_ms ? 1700000000000ull + ttl_ms : 0;
    h->revision = f->rev;
    *version = kv->version;
}

/* The default answers: a tiny correct node. Caller holds fake_mu. rep fields
 * point into f (valid while mu is held). */
static void fake_default(struct fake *f, struct fake *s, const struct codec_msg *req,
                         struct codec_msg *rep, struct fake_kv **scan_items)
{
    rep->type = (uint8_t)(req->type + 64);
    struct codec_rep_header *h = codec_rep_header((struct codec_msg *)rep);
    h->req_id = codec_req_header((struct codec_msg *)req)->req_id;
    h->served_by = f->node_id;
    h->acks = 3;
    /* Like trined: cas needs a linearizable read, so it is served strong at least. */
    h->consistency = codec_req_header((struct codec_msg *)req)->consistency;
    if (req->type == CODEC_MSG_CAS_REQ && h->consistency == CODEC_CONSISTENCY_FAST)
        h->consistency = CODEC_CONSISTENCY_STRONG;
    switch (req->type) {
    case CODEC_MSG_PUT_REQ:
        fake_write(s, req->put_req.key, req->put_req.value, req->put_req.ttl_ms, h,
                   &rep->put_reply.version);
        break;
    case CODEC_MSG_CAS_REQ: {
        struct fake_kv *kv = fake_find(s, req->cas_req.key);
        uint64_t cur = kv ? kv->version : 0;
        if (cur != req->cas_req.expected_version) {
            h->status = TRINE_ECAS_FAILED;
            rep->cas_reply.version = cur;
        } else {
            fake_write(s, req->cas_req.key, req->cas_req.value, req->cas_req.ttl_ms, h,
                       &rep->cas_reply.version);
        }
        break;
    }
    case CODEC_MSG_GET_REQ: {
        struct fake_kv *kv = fake_find(s, req->get_req.key);
        if (kv == NULL) {
            h->status = TRINE_ENOT_FOUND;
            break;
        }
        rep->get_reply.value = (struct codec_bytes){(const uint8_t *)kv->val, kv->vlen};
        rep->get_reply.version = kv->version;
        rep->get_reply.create_revision = kv->create_rev;
        rep->get_reply.mod_revision = kv->mod_rev;
        rep->get_reply.expire_at_ms = kv->expire_at_ms;
        h->revision = kv->mod_rev;
        break;
    }
    case CODEC_MSG_DELETE_REQ: {
        struct fake_kv *kv = fake_find(s, req->delete_req.key);
        h->revision = ++s->rev;
        if (kv != NULL) {
            free(kv->val);
            *kv = s->kv[--s->n_kv];
        }
        break;
    }
    case CODEC_MSG_SCAN_REQ: {
        const struct codec_scan_req *sr = &req->scan_req;
        int n = 0;
        for (int i = 0; i < s->n_kv; i++) {
            struct fake_kv *kv = &s->kv[i];
            if (kv->klen < sr->prefix.len || memcmp(kv->key, sr->prefix.data, sr->prefix.len) != 0)
                continue;
            struct fake_kv after = {.klen = sr->start_after.len};
            memcpy(after.key, sr->start_after.data, sr->start_after.len);
            const struct fake_kv *pa = &after, *pk = kv;
            if (sr->start_after.len > 0 && fake_kv_cmp(&pk, &pa) <= 0) continue;
            scan_items[n++] = kv;
        }
        qsort(scan_items, (size_t)n, sizeof(*scan_items), fake_kv_cmp);
        uint32_t take = sr->limit == 0 ? 1000 : sr->limit;
        if (f->scan_page != 0 && take > f->scan_page) take = f->scan_page;
        if ((uint32_t)n < take) take = (uint32_t)n;
        struct codec_kv_item *items = calloc(take ? take : 1, sizeof(*items));
        assert_non_null(items);
        for (uint32_t i = 0; i < take; i++) {
            items[i].key =
                (struct codec_bytes){(const uint8_t *)scan_items[i]->key, scan_items[i]->klen};
            items[i].value =
                (struct codec_bytes){(const uint8_t *)scan_items[i]->val, scan_items[i]->vlen};
            items[i].version = scan_items[i]->version;
        }
        rep->scan_reply.items = items; /* freed by the caller after encoding */
        rep->scan_reply.n_items = take;
        rep->scan_reply.more = (uint32_t)n > take;
        break;
    }
    case CODEC_MSG_PARTITION_MAP_REQ: {
        static uint64_t replicas[3] = {1, 2, 3};
        static struct codec_partition_info parts[FAKE_PARTITIONS];
        static struct codec_member_addr members[4];
        for (uint32_t p = 0; p < FAKE_PARTITIONS; p++)
            parts[p] = (struct codec_partition_info){
                .partition = p, .replicas = replicas, .n_replicas = 3, .leader = f->leader[p]};
        for (int i = 0; i < f->n_members; i++)
            members[i] =
                (struct codec_member_addr){f->members[i].id, codec_bytes_str(f->members[i].addr)};
        rep->partition_map_reply.epoch = 1;
        rep->partition_map_reply.partition_count = FAKE_PARTITIONS;
        rep->partition_map_reply.partitions = parts;
        rep->partition_map_reply.n_partitions = FAKE_PARTITIONS;
        rep->partition_map_reply.members = members;
        rep->partition_map_reply.n_members = (uint32_t)f->n_members;
        break;
    }
    case CODEC_MSG_CLUSTER_STATUS_REQ: {
        static struct codec_member_status ms[3];
        for (int i = 0; i < 3; i++)
            ms[i] = (struct codec_member_status){.node_id = (uint64_t)i + 1,
                                                 .address = codec_bytes_str("127.0.0.1:7001"),
                                                 .healthy = i != 2,
                                                 .partitions = 8,
                                                 .primaries = i == 2 ? 0 : 4,
                                                 .lag = (uint64_t)i * 5,
                                                 .lag_ms = (uint64_t)i * 1500};
        rep->cluster_status_reply.epoch = 9;
        rep->cluster_status_reply.members = ms;
        rep->cluster_status_reply.n_members = 3;
        break;
    }
    default:
        rep->type = CODEC_MSG_ERROR_REPLY;
        rep->error_reply.hdr.status = TRINE_EUNSUPPORTED;
    }
}

static void fake_log(struct fake *f, const struct codec_msg *req)
{
    f->by_type[req->type]++;
    if (f->n_log == FAKE_LOG_MAX) return;
    struct fake_logged *l = &f->log[f->n_log++];
    memset(l, 0, sizeof(*l));
    l->type = req->type;
    l->hdr = *codec_req_header((struct codec_msg *)req);
    struct codec_bytes key = {0};
    if (req->type == CODEC_MSG_PUT_REQ) key = req->put_req.key, l->ttl_ms = req->put_req.ttl_ms;
    if (req->type == CODEC_MSG_GET_REQ) key = req->get_req.key;
    if (req->type == CODEC_MSG_DELETE_REQ) key = req->delete_req.key;
    if (req->type == CODEC_MSG_CAS_REQ) key = req->cas_req.key;
    l->key_len = key.len < sizeof(l->key) ? key.len : (uint32_t)sizeof(l->key);
    if (l->key_len) memcpy(l->key, key.data, l->key_len);
}

struct fake_conn_arg {
    struct fake *f;
    int fd;
};

static void *fake_conn_main(void *p)
{
    struct fake_conn_arg a = *(struct fake_conn_arg *)p;
    free(p);
    struct fake *f = a.f;
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    setsockopt(a.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    SSL *ssl = SSL_new(f->ctx);
    SSL_set_fd(ssl, a.fd);
    struct codec_scratch *scratch = codec_scratch_new();
    struct buf body, out;
    buf_init(&body);
    buf_init(&out);
    if (SSL_accept(ssl) != 1) goto done;
    for (;;) {
        uint8_t hdr[4];
        if (fake_read(f, ssl, a.fd, hdr, 4) != 0) break;
        uint32_t len = get_u32be(hdr);
        buf_reset(&body);
        if (len == 0 || len > (1u << 24) || buf_reserve(&body, len) != 0) break;
        if (fake_read(f, ssl, a.fd, body.data, len) != 0) break;
        struct codec_msg req, rep;
        codec_scratch_reset(scratch);
        if (codec_decode(body.data, len, NULL, scratch, &req, NULL) != 0) break;
        memset(&rep, 0, sizeof(rep));
        struct fake_kv *scan_items[FAKE_KEYS_MAX];
        pthread_mutex_lock(&fake_mu);
        fake_log(f, &req);
        enum fake_action act = f->hook ? f->hook(f, &req, &rep) : FAKE_DEFAULT;
        if (act == FAKE_DEFAULT) fake_default(f, f->store, &req, &rep, scan_items);
        buf_reset(&out);
        if (act == FAKE_DEFAULT || act == FAKE_REPLY)
            assert_int_equal(codec_encode(&out, &rep, NULL, NULL), 0);
        if (act == FAKE_DEFAULT && rep.type == CODEC_MSG_SCAN_REPLY) free(rep.scan_reply.items);
        pthread_mutex_unlock(&fake_mu);
        if (act == FAKE_DROP) break;
        if (act == FAKE_HOLD) continue;
        size_t w = 0;
        if (SSL_write_ex(ssl, out.data, out.len, &w) != 1) break;
    }
done:
    SSL_free(ssl);
    close(a.fd);
    codec_scratch_free(scratch);
    buf_free(&body);
    buf_free(&out);
    return NULL;
}

static void *fake_accept_main(void *p)
{
    struct fake *f = p;
    while (!__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) {
        struct pollfd pf = {.fd = f->lfd, .events = POLLIN};
        if (poll(&pf, 1, 20) <= 0) continue;
        int fd = accept(f->lfd, NULL, NULL);
        if (fd < 0) continue;
        if (f->n_conns == FAKE_CONNS_MAX) {
            close(fd);
            continue;
        }
        struct fake_conn_arg *a = malloc(sizeof(*a));
        assert_non_null(a);
        *a = (struct fake_conn_arg){f, fd};
        assert_int_equal(pthread_create(&f->conns[f->n_conns++], NULL, fake_conn_main, a), 0);
    }
    for (int i = 0; i < f->n_conns; i++)
        pthread_join(f->conns[i], NULL);
    return NULL;
}

/* Listens on 127.0.0.1:<ephemeral>; certificate node-<id> from dir. */
static struct fake *fake_start_dir(uint64_t node_id, const char *dir)
{
    struct fake *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->node_id = node_id;
    f->store = f;
    fake_tls(f, dir);
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->lfd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(f->lfd, 64), 0);
    socklen_t sl = sizeof(sa);
    assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sa, &sl), 0);
    snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%u", ntohs(sa.sin_port));
    for (int p = 0; p < FAKE_PARTITIONS; p++)
        f->leader[p] = node_id;
    f->members[0].id = node_id;
    snprintf(f->members[0].addr, sizeof(f->members[0].addr), "%s", f->addr);
    f->n_members = 1;
    assert_int_equal(pthread_create(&f->acceptor, NULL, fake_accept_main, f), 0);
    return f;
}

static struct fake *fake_start(uint64_t node_id)
{
    return fake_start_dir(node_id, cert_dir);
}

static void fake_stop(struct fake *f)
{
    __atomic_store_n(&f->stop, 1, __ATOMIC_RELEASE);
    pthread_join(f->acceptor, NULL);
    close(f->lfd);
    SSL_CTX_free(f->ctx);
    for (int i = 0; i < f->n_kv; i++)
        free(f->kv[i].val);
    free(f);
}

static int fake_count(struct fake *f, uint8_t type)
{
    pthread_mutex_lock(&fake_mu);
    int n = f->by_type[type];
    pthread_mutex_unlock(&fake_mu);
    return n;
}

/* The i-th logged request of a type (copy). */
static struct fake_logged fake_nth(struct fake *f, uint8_t type, int nth)
{
    struct fake_logged out = {0};
    pthread_mutex_lock(&fake_mu);
    for (int i = 0, k = 0; i < f->n_log; i++) {
        if (f->log[i].type == type && k++ == nth) {
            out = f->log[i];
            break;
        }
    }
    pthread_mutex_unlock(&fake_mu);
    assert_int_equal(out.type, type);
    return out;
}

/* Makes node b known to a's partition map. */
static void fake_add_member(struct fake *a, const struct fake *b)
{
    pthread_mutex_lock(&fake_mu);
    a->members[a->n_members].id = b->node_id;
    snprintf(a->members[a->n_members].addr, sizeof(a->members[0].addr), "%s", b->addr);
    a->n_members++;
    pthread_mutex_unlock(&fake_mu);
}

static void fake_set_hook(struct fake *f, fake_hook h)
{
    pthread_mutex_lock(&fake_mu);
    f->hook = h;
    f->state = 0;
    pthread_mutex_unlock(&fake_mu);
}

/* ------------------------------------------------------------------ helpers */

static trine_client_t *open_client_dir(const char *endpoints, const char *dir)
{
    char ca[600], cert[600], key[600], errbuf[256];
    struct trine_tls tls = {tu_path(ca, sizeof(ca), dir, "ca.pem"),
                            tu_path(cert, sizeof(cert), dir, "client.pem"),
                            tu_path(key, sizeof(key), dir, "client.key")};
    trine_client_t *c = NULL;
    int rc = trine_client_open(endpoints, &tls, &c, errbuf, sizeof(errbuf));
    if (rc != 0) fprintf(stderr, "open: %s\n", errbuf);
    assert_int_equal(rc, 0);
    assert_non_null(c);
    return c;
}

static trine_client_t *open_client(const char *endpoints)
{
    return open_client_dir(endpoints, cert_dir);
}

static uint64_t ms_since(uint64_t t0_ns)
{
    return (clock_mono_ns() - t0_ns) / 1000000u;
}

static void assert_same_identity(const struct fake_logged *a, const struct fake_logged *b)
{
    assert_true(a->hdr.client_id != 0);
    assert_true(a->hdr.seq != 0);
    assert_true(a->hdr.client_id == b->hdr.client_id);
    assert_true(a->hdr.seq == b->hdr.seq);
    assert_true(a->hdr.req_id == b->hdr.req_id);
}

/* -------------------------------------------------------------------- tests */

static void test_put_get_roundtrip(void **state)
{
    (void)state;
    struct fake *a = fake_start(1);
    trine_client_t *c = open_client(a->addr);
    assert_int_equal(fake_count(a, CODEC_MSG_PARTITION_MAP_REQ), 1); /* fetched on open */

    struct trine_result r;
    assert_int_equal(trine_kv_put(c, "alpha", 5, "one", 3, NULL, &r), 0);
    assert_int_equal(r.revision, 1);
    assert_int_equal(r.version, 1);
    assert_int_equal(r.served_by, 1);
    assert_int_equal(r.acks, 3);
    assert_int_equal(r.replicas, 3);
    assert_int_equal(r.leader, 1);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(r.consistency, TRINE_CONSISTENCY_STRONG);

    struct trine_opts fast = {.consistency = TRINE_CONSISTENCY_FAST, .ttl_ms = 1500};
    assert_int_equal(trine_kv_put(c, "alpha", 5, "two!", 4, &fast, &r), 0);
    assert_int_equal(r.version, 2);
    assert_int_equal(r.revision, 2);
    assert_int_equal(r.consistency, TRINE_CONSISTENCY_FAST);

    void *v = NULL;
    size_t vlen = 0;
    assert_int_equal(trine_kv_get(c, "alpha", 5, NULL, &v, &vlen, &r), 0);
    assert_int_equal(vlen, 4);
    assert_string_equal((char *)v, "two!"); /* NUL-terminated copy */
    assert_int_equal(r.version, 2);
    assert_int_equal(r.create_revision, 1);
    assert_int_equal(r.mod_revision, 2);
    assert_int_equal(r.expire_at_ms, 1700000000000ull + 1500);
    assert_int_equal(r.served_by, 1);
    trine_free(v);

    /* What went on the wire: identity, sequence, consistency, ttl, deadline. */
    struct fake_logged p1 = fake_nth(a, CODEC_MSG_PUT_REQ, 0);
    struct fake_logged p2 = fake_nth(a, CODEC_MSG_PUT_REQ, 1);
    struct fake_logged g1 = fake_nth(a, CODEC_MSG_GET_REQ, 0);
    assert_true(p1.hdr.client_id != 0 && p1.hdr.client_id == p2.hdr.client_id);
    assert_true(p2.hdr.seq == p1.hdr.seq + 1);
    assert_true(p1.hdr.req_id != p2.hdr.req_id);
    assert_int_equal(g1.hdr.seq, 0);
    assert_int_equal(p1.hdr.consistency, CODEC_CONSISTENCY_STRONG);
    assert_int_equal(p2.hdr.consistency, CODEC_CONSISTENCY_FAST);
    assert_int_equal(p2.ttl_ms, 1500);
    assert_in_range(p1.hdr.timeout_ms, 4000, 5000);
    assert_memory_equal(p1.key, "alpha", 5);

    /* Missing key, delete. */
    v = (void *)1;
    assert_int_equal(trine_kv_get(c, "nope", 4, NULL, &v, &vlen, &r), -TRINE_ENOT_FOUND);
    assert_null(v);
    assert_int_equal(r.served_by, 1);
    assert_non_null(strstr(trine_client_errmsg(c), "NOT_FOUND"));
    assert_int_equal(trine_kv_del(c, "alpha", 5, NULL, &r), 0);
    assert_int_equal(r.revision, 3);
    assert_string_equal(trine_client_errmsg(c), "");
    assert_int_equal(trine_kv_get(c, "alpha", 5, NULL, &v, &vlen, NULL), -TRINE_ENOT_FOUND);
    /* One connection served everything: the pool reuses it. */
    assert_int_equal(a->n_conns, 1);
    trine_client_close(c);

    /* By DNS name: the certificate's DNS SAN is checked instead of its IP. */
    char byname[64];
    snprintf(byname, sizeof(byname), "localhost:%s", strchr(a->addr, ':') + 1);
    c = open_client(byname);
    assert_int_equal(trine_kv_put(c, "beta", 4, "x", 1, NULL, &r), 0);
    trine_client_close(c);
    fake_stop(a);
}

static enum fake_action hook_not_leader_hint(struct fake *f, const struct codec_msg *req,
                                             struct codec_msg *rep)
{
    if (req->type != CODEC_MSG_PUT_REQ) return FAKE_DEFAULT;
    rep->type = CODEC_MSG_PUT_REPLY;
    rep->put_reply.hdr.req_id = req->put_req.hdr.req_id;
    rep->put_reply.hdr.status = TRINE_ENOT_LEADER;
    rep->put_reply.hdr.served_by = f->node_id;
    rep->put_reply.hdr.leader_hint.node_id = f->members[1].id;
    rep->put_reply.hdr.leader_hint.address = codec_bytes_str(f->members[1].addr);
    return FAKE_REPLY;
}

static void test_not_leader_hint(void **state)
{
    (void)state;
    struct fake *a = fake_start(1), *b = fake_start(2);
    fake_add_member(a, b);
    fake_set_hook(a, hook_not_leader_hint);
    trine_client_t *c = open_client(a->addr); /* only a is a seed */
    struct trine_result r;
    assert_int_equal(trine_kv_put(c, "k", 1, "v", 1, NULL, &r), 0);
    assert_int_equal(r.served_by, 2);
    assert_int_equal(r.attempts, 2);
    assert_int_equal(fake_count(a, CODEC_MSG_PUT_REQ), 1);
    assert_int_equal(fake_count(b, CODEC_MSG_PUT_REQ), 1);
    struct fake_logged pa = fake_nth(a, CODEC_MSG_PUT_REQ, 0);
    struct fake_logged pb = fake_nth(b, CODEC_MSG_PUT_REQ, 0);
    assert_same_identity(&pa, &pb);
    /* The hint updated the cache: the next write goes straight to b. */
    assert_int_equal(trine_kv_put(c, "k", 1, "w", 1, NULL, &r), 0);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(r.leader, 2);
    assert_int_equal(fake_count(a, CODEC_MSG_PUT_REQ), 1);
    assert_int_equal(fake_count(b, CODEC_MSG_PUT_REQ), 2);
    trine_client_close(c);
    fake_stop(a);
    fake_stop(b);
}

/* a answers NOT_LEADER without a hint once, and from then on its map names b. */
static enum fake_action hook_not_leader_nohint(struct fake *f, const struct codec_msg *req,
                                               struct codec_msg *rep)
{
    if (req->type != CODEC_MSG_PUT_REQ) return FAKE_DEFAULT;
    rep->type = CODEC_MSG_PUT_REPLY;
    rep->put_reply.hdr.req_id = req->put_req.hdr.req_id;
    rep->put_reply.hdr.status = TRINE_ENOT_LEADER;
    for (int p = 0; p < FAKE_PARTITIONS; p++)
        f->leader[p] = f->members[1].id;
    return FAKE_REPLY;
}

static void test_not_leader_refreshes_map(void **state)
{
    (void)state;
    struct fake *a = fake_start(1), *b = fake_start(2);
    fake_add_member(a, b);
    fake_set_hook(a, hook_not_leader_nohint);
    trine_client_t *c = open_client(a->addr);
    struct trine_result r;
    assert_int_equal(trine_kv_put(c, "k", 1, "v", 1, NULL, &r), 0);
    assert_int_equal(r.served_by, 2);
    /* open fetched the map once; the NOT_LEADER without a hint made it
     * fetch again (from a or b, whichever it picked). */
    assert_true(fake_count(a, CODEC_MSG_PARTITION_MAP_REQ) +
                    fake_count(b, CODEC_MSG_PARTITION_MAP_REQ) >=
                2);
    assert_int_equal(fake_count(b, CODEC_MSG_PUT_REQ), 1);
    struct fake_logged pa = fake_nth(a, CODEC_MSG_PUT_REQ, 0);
    struct fake_logged pb = fake_nth(b, CODEC_MSG_PUT_REQ, 0);
    assert_same_identity(&pa, &pb);
    trine_client_close(c);
    fake_stop(a);
    fake_stop(b);
}

/* The first put is read and its connection dropped without an answer. */
static enum fake_action hook_drop_first_put(struct fake *f, const struct codec_msg *req,
                                            struct codec_msg *rep)
{
    (void)rep;
    if (req->type == CODEC_MSG_PUT_REQ && f->state++ == 0) return FAKE_DROP;
    return FAKE_DEFAULT;
}

static void test_dropped_connection_retried(void **state)
{
    (void)state;
    struct fake *a = fake_start(1);
    fake_set_hook(a, hook_drop_first_put);
    trine_client_t *c = open_client(a->addr);
    struct trine_result r;
    assert_int_equal(trine_kv_put(c, "k", 1, "v", 1, NULL, &r), 0);
    assert_int_equal(r.attempts, 2);
    assert_int_equal(r.version, 1);
    assert_int_equal(fake_count(a, CODEC_MSG_PUT_REQ), 2);
    struct fake_logged p0 = fake_nth(a, CODEC_MSG_PUT_REQ, 0);
    struct fake_logged p1 = fake_nth(a, CODEC_MSG_PUT_REQ, 1);
    assert_same_identity(&p0, &p1);
    trine_client_close(c);
    fake_stop(a);
}

static enum fake_action hook_unavailable_twice(struct fake *f, const struct codec_msg *req,
                                               struct codec_msg *rep)
{
    if (req->type != CODEC_MSG_PUT_REQ || f->state++ >= 2) return FAKE_DEFAULT;
    rep->type = CODEC_MSG_PUT_REPLY;
    rep->put_reply.hdr.req_id = req->put_req.hdr.req_id;
    rep->put_reply.hdr.status = f->state == 1 ? TRINE_EUNAVAILABLE : TRINE_EBUSY;
    rep->put_reply.hdr.message = codec_bytes_str("only 1 of 3 replicas reachable");
    return FAKE_REPLY;
}

static enum fake_action hook_always_unavailable(struct fake *f, const struct codec_msg *req,
                                                struct codec_msg *rep)
{
    f->state = 0;
    return hook_unavailable_twice(f, req, rep);
}

static void test_unavailable_then_success(void **state)
{
    (void)state;
    struct fake *a = fake_start(1);
    fake_set_hook(a, hook_unavailable_twice);
    trine_client_t *c = open_client(a->addr);
    struct trine_result r;
    uint64_t t0 = clock_mono_ns();
    assert_int_equal(trine_kv_put(c, "k", 1, "v", 1, NULL, &r), 0);
    assert_true(ms_since(t0) >= 10); /* backed off at least the minimum steps */
    assert_int_equal(r.attempts, 3);
    assert_int_equal(fake_count(a, CODEC_MSG_PUT_REQ), 3);
    struct fake_logged p0 = fake_nth(a, CODEC_MSG_PUT_REQ, 0);
    struct fake_logged p2 = fake_nth(a, CODEC_MSG_PUT_REQ, 2);
    assert_same_identity(&p0, &p2);
    /* UNAVAILABLE for the whole timeout: the caller gets UNAVAILABLE and the
     * node's message, after several attempts. */
    fake_set_hook(a, hook_always_unavailable);
    struct trine_opts o = {.timeout_ms = 200};
    assert_int_equal(trine_kv_put(c, "k", 1, "v", 1, &o, &r), -TRINE_EUNAVAILABLE);
    assert_true(r.attempts >= 3);
    assert_non_null(strstr(trine_client_errmsg(c), "only 1 of 3 replicas reachable"));
    trine_client_close(c);
    fake_stop(a);
}

static void test_cas(void **state)
{
    (void)state;
    struct fake *a = fake_start(1);
    trine_client_t *c = open_client(a->addr);
    struct trine_result r;
    /* expected_version 0: must not exist. */
    assert_int_equal(trine_kv_cas(c, "k", 1, 0, "a", 1, NULL, &r), 0);
    assert_int_equal(r.version, 1);
    assert_int_equal(trine_kv_cas(c, "k", 1, 0, "b", 1, NULL, &r), -TRINE_ECAS_FAILED);
    assert_int_equal(r.version, 1); /* the current version */
    assert_int_equal(trine_kv_cas(c, "k", 1, 7, "b", 1, NULL, &r), -TRINE_ECAS_FAILED);
    assert_int_equal(r.version, 1);
    assert_int_equal(r.served_by, 1);
    assert_non_null(strstr(trine_client_errmsg(c), "CAS_FAILED"));
    /* Never retried. */
    assert_int_equal(fake_count(a, CODEC_MSG_CAS_REQ), 3);
    /* A fast cas is served strong, and the result says so. */
    struct trine_opts fast = {.consistency = TRINE_CONSISTENCY_FAST};
    assert_int_equal(trine_kv_cas(c, "k", 1, 1, "b", 1, &fast, &r), 0);
    assert_int_equal(r.version, 2);
    assert_int_equal(r.consistency, TRINE_CONSISTENCY_STRONG);
    trine_client_close(c);
    fake_stop(a);
}

static void test_too_large_rejected_locally(void **state)
{
    (void)state;
    struct fake *a = fake_start(1);
    trine_client_t *c = open_client(a->addr);
    char *big = calloc(1, TRINE_VALUE_MAX + 1);
    assert_non_null(big);
    struct trine_result r;
    assert_int_equal(trine_kv_put(c, big, TRINE_KEY_MAX + 1, "v", 1, NULL, &r), -TRINE_ETOO_LARGE);
    assert_non_null(strstr(trine_client_errmsg(c), "4097"));
    assert_int_equal(trine_kv_put(c, "k", 1, big, TRINE_VALUE_MAX + 1, NULL, &r),
                     -TRINE_ETOO_LARGE);
    void *v;
    assert_int_equal(trine_kv_get(c, big, TRINE_KEY_MAX + 1, NULL, &v, NULL, &r),
                     -TRINE_ETOO_LARGE);
    assert_int_equal(trine_kv_put(c, "", 0, "v", 1, NULL, &r), -TRINE_EBAD_REQUEST);
    /* The largest legal key and value go through. */
    memset(big, 'x', TRINE_VALUE_MAX);
    assert_int_equal(trine_kv_put(c, big, 100, big, TRINE_VALUE_MAX, NULL, &r), 0);
    size_t vlen = 0;
    assert_int_equal(trine_kv_get(c, big, 100, NULL, &v, &vlen, &r), 0);
    assert_int_equal(vlen, TRINE_VALUE_MAX);
    trine_free(v);
    assert_int_equal(fake_count(a, CODEC_MSG_PUT_REQ), 1);
    assert_int_equal(fake_count(a, CODEC_MSG_GET_REQ), 1);
    free(big);
    trine_client_close(c);
    fake_stop(a);
}

static enum fake_action hook_hold(struct fake *f, const struct codec_msg *req,
                                  struct codec_msg *rep)
{
    (void)f;
    (void)rep;
    return req->type == CODEC_MSG_PUT_REQ || req->type == CODEC_MSG_GET_REQ ? FAKE_HOLD
                                                                            : FAKE_DEFAULT;
}

static void test_timeout_outcome_unknown(void **state)
{
    (void)state;
    struct fake *a = fake_start(1);
    fake_set_hook(a, hook_hold);
    trine_client_t *c = open_client(a->addr);
    struct trine_opts o = {.timeout_ms = 300};
    struct trine_result r;
    uint64_t t0 = clock_mono_ns();
    assert_int_equal(trine_kv_put(c, "k", 1, "v", 1, &o, &r), -TRINE_ETIMEOUT);
    uint64_t took = ms_since(t0);
    assert_in_range(took, 290, 1500);
    assert_non_null(strstr(trine_client_errmsg(c), "outcome unknown"));
    /* A read that times out is just a timeout. */
    void *v;
    assert_int_equal(trine_kv_get(c, "k", 1, &o, &v, NULL, &r), -TRINE_ETIMEOUT);
    assert_null(strstr(trine_client_errmsg(c), "outcome unknown"));
    trine_client_close(c);
    fake_stop(a);
}

static void test_no_server(void **state)
{
    (void)state;
    /* A port nothing listens on. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    char ep[64];
    snprintf(ep, sizeof(ep), "127.0.0.1:%u", ntohs(sa.sin_port));
    trine_client_t *c = open_client(ep); /* opens lazily */
    struct trine_opts o = {.timeout_ms = 250};
    struct trine_result r;
    uint64_t t0 = clock_mono_ns();
    assert_int_equal(trine_kv_put(c, "k", 1, "v", 1, &o, &r), -TRINE_EUNAVAILABLE);
    assert_true(ms_since(t0) >= 240); /* retried until the timeout */
    assert_true(r.attempts >= 2);
    assert_non_null(strstr(trine_client_errmsg(c), "refused"));
    trine_client_close(c);
}

static void test_open_errors(void **state)
{
    (void)state;
    char ca[600], cert[600], key[600], errbuf[256];
    struct trine_tls tls = {tu_path(ca, sizeof(ca), cert_dir, "ca.pem"),
                            tu_path(cert, sizeof(cert), cert_dir, "client.pem"),
                            tu_path(key, sizeof(key), cert_dir, "client.key")};
    trine_client_t *c = (trine_client_t *)1;
    assert_int_equal(trine_client_open("nohostport", &tls, &c, errbuf, sizeof(errbuf)),
                     -TRINE_EINVALID);
    assert_null(c);
    assert_non_null(strstr(errbuf, "nohostport"));
    assert_int_equal(trine_client_open("h:99999", &tls, &c, errbuf, sizeof(errbuf)),
                     -TRINE_EINVALID);
    assert_int_equal(trine_client_open(" , ", &tls, &c, errbuf, sizeof(errbuf)), -TRINE_EINVALID);
    assert_int_equal(trine_client_open("h:1", NULL, &c, errbuf, sizeof(errbuf)), -TRINE_EINVALID);
    struct trine_tls bad = tls;
    bad.cert_file = "/nonexistent/client.pem";
    assert_int_equal(trine_client_open("h:1", &bad, &c, errbuf, sizeof(errbuf)), -TRINE_EINVALID);
    assert_non_null(strstr(errbuf, "/nonexistent/client.pem"));
    bad = tls;
    bad.key_file = ca; /* not the certificate's key */
    assert_int_equal(trine_client_open("h:1", &bad, &c, errbuf, sizeof(errbuf)), -TRINE_EINVALID);
    /* IPv6 and several endpoints parse. */
    assert_int_equal(trine_client_open("[::1]:1, 127.0.0.1:2", &tls, &c, errbuf, sizeof(errbuf)),
                     0);
    trine_client_close(c);
}

static void test_untrusted_node(void **state)
{
    (void)state;
    /* A node whose certificate comes from another CA: refused at once. */
    const char *other = tu_mkdtemp("client-othercerts");
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "scripts/gen-certs.sh --dir %s --nodes 1 >/dev/null", other);
    assert_int_equal(system(cmd), 0);
    struct fake *a = fake_start_dir(1, other);
    trine_client_t *c = open_client(a->addr);
    struct trine_result r;
    uint64_t t0 = clock_mono_ns();
    assert_int_equal(trine_kv_put(c, "k", 1, "v", 1, NULL, &r), -TRINE_EUNAUTHENTICATED);
    assert_true(ms_since(t0) < 1000); /* not retried for 5 s */
    assert_non_null(strstr(trine_client_errmsg(c), "certificate"));
    trine_client_close(c);
    /* And a client that trusts the node but whose certificate the node does
     * not trust (another CA signed it). */
    char ca[600], cert[600], key[600], errbuf[256];
    struct trine_tls tls = {tu_path(ca, sizeof(ca), other, "ca.pem"),
                            tu_path(cert, sizeof(cert), cert_dir, "client.pem"),
                            tu_path(key, sizeof(key), cert_dir, "client.key")};
    trine_client_t *c2 = NULL;
    assert_int_equal(trine_client_open(a->addr, &tls, &c2, errbuf, sizeof(errbuf)), 0);
    void *v = NULL;
    t0 = clock_mono_ns();
    assert_int_equal(trine_kv_get(c2, "k", 1, NULL, &v, NULL, &r), -TRINE_EUNAUTHENTICATED);
    assert_true(ms_since(t0) < 1000);
    assert_non_null(strstr(trine_client_errmsg(c2), "refused our certificate"));
    trine_client_close(c2);
    fake_stop(a);
    tu_rm_rf(other);
}

static void test_scan_pages(void **state)
{
    (void)state;
    struct fake *a = fake_start(1);
    a->scan_page = 3;
    trine_client_t *c = open_client(a->addr);
    const char *keys[] = {"a5", "a1", "b1", "a3", "a2", "a7", "a4", "a6", ""};
    for (int i = 0; keys[i][0]; i++)
        assert_int_equal(trine_kv_put(c, keys[i], 2, keys[i], 2, NULL, NULL), 0);
    struct trine_kvs *kvs = NULL;
    struct trine_result r;
    assert_int_equal(trine_kv_scan(c, "a", 1, NULL, 0, 0, NULL, &kvs, &r), 0);
    assert_int_equal(kvs->n, 7);
    assert_int_equal(kvs->more, 0);
    for (size_t i = 0; i < kvs->n; i++) {
        char want[3] = {'a', (char)('1' + i), 0};
        assert_string_equal((char *)kvs->items[i].key, want);
        assert_string_equal((char *)kvs->items[i].value, want);
        assert_int_equal(kvs->items[i].version, 1);
    }
    trine_kvs_free(kvs);
    assert_int_equal(fake_count(a, CODEC_MSG_SCAN_REQ), 3); /* 3 + 3 + 1 */
    assert_int_equal(trine_kv_scan(c, "a", 1, NULL, 0, 5, NULL, &kvs, &r), 0);
    assert_int_equal(kvs->n, 5);
    assert_int_equal(kvs->more, 1);
    assert_string_equal((char *)kvs->items[4].key, "a5");
    trine_kvs_free(kvs);
    assert_int_equal(trine_kv_scan(c, "a", 1, "a5", 2, 0, NULL, &kvs, &r), 0);
    assert_int_equal(kvs->n, 2);
    assert_string_equal((char *)kvs->items[0].key, "a6");
    trine_kvs_free(kvs);
    assert_int_equal(trine_kv_scan(c, "", 0, NULL, 0, 0, NULL, &kvs, &r), 0);
    assert_int_equal(kvs->n, 8);
    assert_string_equal((char *)kvs->items[7].key, "b1");
    trine_kvs_free(kvs);
    assert_int_equal(trine_kv_scan(c, "zz", 2, NULL, 0, 0, NULL, &kvs, &r), 0);
    assert_int_equal(kvs->n, 0);
    trine_kvs_free(kvs);
    trine_client_close(c);
    fake_stop(a);
}

static void test_cluster_status(void **state)
{
    (void)state;
    struct fake *a = fake_start(1);
    trine_client_t *c = open_client(a->addr);
    struct trine_cluster *cl = NULL;
    assert_int_equal(trine_cluster_status(c, NULL, &cl), 0);
    assert_int_equal(cl->epoch, 9);
    assert_int_equal(cl->served_by, 1);
    assert_int_equal(cl->n_members, 3);
    assert_int_equal(cl->members[1].node_id, 2);
    assert_string_equal(cl->members[1].address, "127.0.0.1:7001");
    assert_int_equal(cl->members[2].healthy, 0);
    assert_int_equal(cl->members[0].primaries, 4);
    assert_int_equal(cl->members[2].lag, 10);
    assert_int_equal(cl->members[2].lag_ms, 3000);
    trine_cluster_free(cl);
    trine_client_close(c);
    fake_stop(a);
}

static void test_routes_by_partition(void **state)
{
    (void)state;
    /* Even partitions led by a, odd by b; the client knows only a. */
    struct fake *a = fake_start(1), *b = fake_start(2);
    fake_add_member(a, b);
    for (int p = 0; p < FAKE_PARTITIONS; p++)
        a->leader[p] = p % 2 ? 2 : 1;
    trine_client_t *c = open_client(a->addr);
    for (int i = 0; i < 40; i++) {
        char k[16];
        int n = snprintf(k, sizeof(k), "key-%d", i);
        struct trine_result r;
        assert_int_equal(trine_kv_put(c, k, (size_t)n, "v", 1, NULL, &r), 0);
        uint32_t p = ring_partition_of_hash(FAKE_PARTITIONS, ring_key_hash(k, (size_t)n));
        assert_int_equal(r.served_by, p % 2 ? 2 : 1);
        assert_int_equal(r.attempts, 1);
    }
    assert_true(fake_count(a, CODEC_MSG_PUT_REQ) > 0);
    assert_true(fake_count(b, CODEC_MSG_PUT_REQ) > 0);
    assert_int_equal(fake_count(a, CODEC_MSG_PUT_REQ) + fake_count(b, CODEC_MSG_PUT_REQ), 40);
    trine_client_close(c);
    fake_stop(a);
    fake_stop(b);
}

#define THREADS    8
#define THREAD_OPS 40

struct thread_arg {
    trine_client_t *c;
    int id;
    int failures;
};

static void *thread_main(void *p)
{
    struct thread_arg *t = p;
    for (int i = 0; i < THREAD_OPS; i++) {
        char k[32], v[32];
        int kn = snprintf(k, sizeof(k), "t%d-%d", t->id, i);
        int vn = snprintf(v, sizeof(v), "value-%d-%d", t->id, i);
        if (trine_kv_put(t->c, k, (size_t)kn, v, (size_t)vn, NULL, NULL) != 0) t->failures++;
        void *got = NULL;
        size_t glen = 0;
        if (trine_kv_get(t->c, k, (size_t)kn, NULL, &got, &glen, NULL) != 0 || glen != (size_t)vn ||
            memcmp(got, v, glen) != 0)
            t->failures++;
        trine_free(got);
        /* Each thread's error state is its own. */
        if (trine_kv_get(t->c, "missing", 7, NULL, &got, NULL, NULL) != -TRINE_ENOT_FOUND ||
            strstr(trine_client_errmsg(t->c), "NOT_FOUND") == NULL)
            t->failures++;
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_threads_share_handle(void **state)
{
    (void)state;
    struct fake *a = fake_start(1), *b = fake_start(2);
    fake_add_member(a, b);
    for (int p = 0; p < FAKE_PARTITIONS; p++)
        a->leader[p] = p % 2 ? 2 : 1;
    /* b drops a connection mid-request: a retry under concurrency. Both
     * serve one store, as a real cluster would after forwarding. */
    fake_set_hook(b, hook_drop_first_put);
    b->store = a;
    char eps[160];
    snprintf(eps, sizeof(eps), "%s,%s", a->addr, b->addr);
    trine_client_t *c = open_client(eps);
    pthread_t th[THREADS];
    struct thread_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (struct thread_arg){c, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, thread_main, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
    /* Every write has its own seq; b saw one of them twice (the dropped one). */
    int na = fake_count(a, CODEC_MSG_PUT_REQ), nb = fake_count(b, CODEC_MSG_PUT_REQ);
    assert_int_equal(na + nb, THREADS * THREAD_OPS + 1);
    uint64_t *seqs = calloc((size_t)(na + nb), sizeof(*seqs));
    assert_non_null(seqs);
    for (int i = 0; i < na; i++)
        seqs[i] = fake_nth(a, CODEC_MSG_PUT_REQ, i).hdr.seq;
    for (int i = 0; i < nb; i++)
        seqs[na + i] = fake_nth(b, CODEC_MSG_PUT_REQ, i).hdr.seq;
    qsort(seqs, (size_t)(na + nb), sizeof(*seqs), cmp_u64);
    int dups = 0;
    for (int i = 1; i < na + nb; i++)
        dups += seqs[i] == seqs[i - 1];
    assert_int_equal(dups, 1);
    free(seqs);
    trine_client_close(c);
    fake_stop(a);
    fake_stop(b);
}

/* ---------------------------------------------------------------- the CLI */

static char cli_out[8192], cli_err[8192];

/* Runs "$BINDIR/trine <args>" (env_prefix first) and returns its exit code;
 * stdout and stderr land in cli_out / cli_err. */
static int run_cli(const char *env_prefix, const char *args)
{
    const char *bindir = getenv("BINDIR");
    char bin[512];
    snprintf(bin, sizeof(bin), "%s/trine", bindir && *bindir ? bindir : "bin");
    if (access(bin, X_OK) != 0) fail_msg("%s is not built (run make first)", bin);
    char errf[600], cmd[4096];
    tu_path(errf, sizeof(errf), cert_dir, "cli.stderr");
    snprintf(cmd, sizeof(cmd), "%s %s %s 2>%s", env_prefix, bin, args, errf);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(cli_out, 1, sizeof(cli_out) - 1, p);
    cli_out[n] = '\0';
    int st = pclose(p);
    FILE *e = fopen(errf, "r");
    assert_non_null(e);
    n = fread(cli_err, 1, sizeof(cli_err) - 1, e);
    cli_err[n] = '\0';
    fclose(e);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void test_cli(void **state)
{
    (void)state;
    struct fake *a = fake_start(1);
    char env[2048], flags[2048];
    snprintf(env, sizeof(env),
             "TRINE_ENDPOINTS=%s TRINE_CACERT=%s/ca.pem TRINE_CERT=%s/client.pem "
             "TRINE_KEY=%s/client.key",
             a->addr, cert_dir, cert_dir, cert_dir);
    snprintf(flags, sizeof(flags),
             "--endpoints %s --cacert %s/ca.pem --cert %s/client.pem --key %s/client.key", a->addr,
             cert_dir, cert_dir, cert_dir);
    char args[4096];
    snprintf(args, sizeof(args), "%s put greeting hello", flags);
    assert_int_equal(run_cli("", args), 0);
    assert_string_equal(cli_out, "OK revision=1 version=1 (served by node 1, strong, 3/3 acks)\n");
    /* Settings from the environment; the value alone on stdout. */
    assert_int_equal(run_cli(env, "get greeting"), 0);
    assert_string_equal(cli_out, "hello\n");
    assert_non_null(strstr(cli_err, "version=1"));
    assert_non_null(strstr(cli_err, "served by node 1"));
    assert_int_equal(run_cli(env, "-o json get greeting"), 0);
    assert_non_null(strstr(cli_out, "\"value\":\"hello\""));
    assert_non_null(strstr(cli_out, "\"version\":1"));
    assert_non_null(strstr(cli_out, "\"served_by\":1"));
    assert_non_null(strstr(cli_out, "\"revision\":1"));
    assert_int_equal(run_cli(env, "--consistency fast put --ttl 60 greeting again -o json"), 0);
    assert_non_null(strstr(cli_out, "\"version\":2"));
    assert_non_null(strstr(cli_out, "\"consistency\":\"fast\""));
    assert_int_equal(fake_nth(a, CODEC_MSG_PUT_REQ, 1).ttl_ms, 60000);
    /* Exit codes. */
    assert_int_equal(run_cli(env, "get nothing-here"), 1);
    assert_non_null(strstr(cli_err, "NOT_FOUND"));
    assert_int_equal(run_cli(env, "cas greeting 7 x"), 4);
    assert_non_null(strstr(cli_err, "is at version 2, not 7"));
    assert_int_equal(run_cli(env, "cas greeting 2 x"), 0);
    assert_int_equal(run_cli(env, "put onlykey"), 2);
    assert_int_equal(run_cli(env, "frobnicate"), 2);
    assert_int_equal(run_cli(env, "get k --limit 3"), 2);
    assert_int_equal(run_cli(env, "--consistency eventual get k"), 2);
    assert_int_equal(run_cli("", "get k"), 2); /* no certificates */
    assert_int_equal(run_cli(env, "put --help"), 0);
    assert_non_null(strstr(cli_out, "usage: trine [options] put KEY VALUE [--ttl SECONDS]"));
    assert_int_equal(run_cli(env, "--help"), 0);
    assert_non_null(strstr(cli_out, "cluster status"));
    /* Scan and delete. */
    assert_int_equal(run_cli(env, "put -- -dash \"two words\""), 0);
    assert_int_equal(run_cli(env, "scan ''"), 0);
    assert_string_equal(cli_out, "-dash\ttwo words\ngreeting\tx\n");
    assert_non_null(strstr(cli_err, "2 keys"));
    assert_int_equal(run_cli(env, "scan gr -o json"), 0);
    assert_non_null(strstr(cli_out, "\"count\":1"));
    assert_int_equal(run_cli(env, "del greeting"), 0);
    assert_non_null(strstr(cli_out, "OK revision="));
    assert_int_equal(run_cli(env, "get greeting"), 1);
    /* Cluster status as a table. */
    assert_int_equal(run_cli(env, "cluster status"), 0);
    assert_non_null(strstr(cli_out, "NODE"));
    assert_non_null(strstr(cli_out, "DOWN"));
    /* the worst lag of the reachable members (a DOWN one's is unknown) */
    assert_non_null(strstr(cli_out, "worst replication lag 5 entries, 1.500 s"));
    assert_non_null(strstr(cli_out, "node 2 leads"));
    assert_int_equal(run_cli(env, "cluster status -o json"), 0);
    assert_non_null(strstr(cli_out, "\"worst_lag\":5,\"worst_lag_ms\":1500"));
    assert_non_null(strstr(cli_out, "\"lag_ms\":3000"));
    /* A node that never answers: exit 3 with "outcome unknown". */
    fake_set_hook(a, hook_hold);
    assert_int_equal(run_cli(env, "--timeout 200 put k v"), 3);
    assert_non_null(strstr(cli_err, "outcome unknown"));
    fake_stop(a);
}

static void test_status_codes_match_proto(void **state)
{
    (void)state;
    /* trine.h's copy of the codes against the generated base/status_codes.h. */
    size_t n = 0;
#define CHECK(NAME, CODE, WIRE, MSG)                                                               \
    do {                                                                                           \
        bool found = false;                                                                        \
        for (size_t i = 0; i < client_public_codes_n; i++) {                                       \
            if (strcmp(client_public_codes[i].name, #NAME) == 0) {                                 \
                assert_int_equal(client_public_codes[i].code, CODE);                               \
                found = true;                                                                      \
            }                                                                                      \
        }                                                                                          \
        assert_true(found);                                                                        \
        assert_string_equal(trine_strerror(-(CODE)), MSG);                                         \
        assert_string_equal(trine_status_name(-(CODE)), #NAME);                                    \
        n++;                                                                                       \
    } while (0);
    TRINE_STATUS_TABLE(CHECK)
#undef CHECK
    assert_int_equal(n, client_public_codes_n);
    enum trine_consistency l;
    assert_int_equal(trine_consistency_parse("all", &l), 0);
    assert_int_equal(l, TRINE_CONSISTENCY_ALL);
    assert_int_equal(trine_consistency_parse("eventual", &l), -TRINE_EINVALID);
    assert_string_equal(trine_consistency_name(TRINE_CONSISTENCY_DEFAULT), "strong");
}

/* ------------------------------------------------------------ async calls */

struct async_rec {
    int calls; /* callbacks seen */
    int rc;
    struct trine_result res;
    char value[64];
    size_t value_len;
    char errmsg[TRINE_ERR_MSG_MAX];
};

static trine_client_t *async_client; /* for the errmsg in callbacks */

static void async_done(void *arg, int rc, const struct trine_result *res, const void *value,
                       size_t value_len)
{
    struct async_rec *r = arg;
    r->calls++;
    r->rc = rc;
    r->res = *res;
    r->value_len = value_len;
    if (value_len > 0 && value_len < sizeof(r->value)) memcpy(r->value, value, value_len);
    snprintf(r->errmsg, sizeof(r->errmsg), "%s", rc ? trine_client_errmsg(async_client) : "");
}

/* Runs a until nothing is in flight (bounded). */
static void async_drain(trine_async_t *a)
{
    uint64_t t0 = clock_mono_ns();
    while (trine_async_inflight(a) > 0) {
        assert_true(trine_async_run(a, 100) >= 0);
        assert_true(ms_since(t0) < 10000);
    }
}

static void test_async_pipelined(void **state)
{
    (void)state;
    enum { N = 200 };
    struct fake *f = fake_start(1);
    trine_client_t *c = open_client(f->addr);
    async_client = c;
    trine_async_t *a = NULL;
    assert_int_equal(trine_async_open(c, 1, &a), 0);
    static struct async_rec rec[N];
    memset(rec, 0, sizeof(rec));
    char key[32], val[32];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "ak%03d", i);
        snprintf(val, sizeof(val), "value-%d", i);
        struct trine_opts o = {.consistency =
                                   i % 2 ? TRINE_CONSISTENCY_FAST : TRINE_CONSISTENCY_STRONG};
        assert_int_equal(
            trine_async_put(a, key, strlen(key), val, strlen(val), &o, async_done, &rec[i]), 0);
    }
    assert_int_equal(trine_async_inflight(a), N);
    async_drain(a);
    for (int i = 0; i < N; i++) {
        assert_int_equal(rec[i].calls, 1);
        assert_int_equal(rec[i].rc, 0);
        assert_int_equal(rec[i].res.version, 1);
        assert_int_equal(rec[i].res.served_by, 1);
        assert_int_equal(rec[i].res.attempts, 1);
        assert_int_equal(rec[i].res.consistency,
                         i % 2 ? TRINE_CONSISTENCY_FAST : TRINE_CONSISTENCY_STRONG);
    }
    /* One identity, a seq per write; every put went out once. */
    assert_int_equal(fake_count(f, CODEC_MSG_PUT_REQ), N);
    struct fake_logged first = fake_nth(f, CODEC_MSG_PUT_REQ, 0);
    for (int i = 1; i < N; i++) {
        struct fake_logged p = fake_nth(f, CODEC_MSG_PUT_REQ, i);
        assert_true(p.hdr.client_id == first.hdr.client_id);
        assert_true(p.hdr.seq == first.hdr.seq + (uint64_t)i);
        assert_true(p.hdr.req_id != first.hdr.req_id);
    }
    /* Reads hand the value to the callback; a missing key is NOT_FOUND. */
    memset(rec, 0, sizeof(rec));
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "ak%03d", i);
        assert_int_equal(trine_async_get(a, key, strlen(key), NULL, async_done, &rec[i]), 0);
    }
    struct async_rec missing = {0};
    assert_int_equal(trine_async_get(a, "none", 4, NULL, async_done, &missing), 0);
    async_drain(a);
    for (int i = 0; i < N; i++) {
        snprintf(val, sizeof(val), "value-%d", i);
        assert_int_equal(rec[i].rc, 0);
        assert_int_equal(rec[i].value_len, strlen(val));
        assert_memory_equal(rec[i].value, val, strlen(val));
        assert_int_equal(rec[i].res.version, 1);
    }
    assert_int_equal(missing.rc, -TRINE_ENOT_FOUND);
    assert_non_null(strstr(missing.errmsg, "NOT_FOUND"));
    /* The pooled connection of open's map fetch, and the engine's one. */
    assert_int_equal(f->n_conns, 2);
    trine_async_close(a);
    trine_client_close(c);
    fake_stop(f);
}

/* Closed loop: each callback starts the stream's next call. */
struct async_stream {
    trine_async_t *a;
    int left, ok;
};

static void stream_next(void *arg, int rc, const struct trine_result *res, const void *value,
                        size_t value_len)
{
    (void)res;
    (void)value;
    (void)value_len;
    struct async_stream *s = arg;
    if (rc == 0) s->ok++;
    if (--s->left > 0)
        assert_int_equal(trine_async_put(s->a, "loop", 4, "v", 1, NULL, stream_next, s), 0);
}

static void test_async_closed_loop(void **state)
{
    (void)state;
    struct fake *f = fake_start(1);
    trine_client_t *c = open_client(f->addr);
    trine_async_t *a = NULL;
    assert_int_equal(trine_async_open(c, 2, &a), 0);
    struct async_stream st[8];
    for (int i = 0; i < 8; i++) {
        st[i] = (struct async_stream){.a = a, .left = 25};
        assert_int_equal(trine_async_put(a, "loop", 4, "v", 1, NULL, stream_next, &st[i]), 0);
    }
    async_drain(a);
    for (int i = 0; i < 8; i++)
        assert_int_equal(st[i].ok, 25);
    assert_int_equal(fake_count(f, CODEC_MSG_PUT_REQ), 200);
    /* A callback must not run the engine; running with nothing in flight returns 0. */
    assert_int_equal(trine_async_run(a, 50), 0);
    trine_async_close(a);
    trine_client_close(c);
    fake_stop(f);
}

static void test_async_cas_del(void **state)
{
    (void)state;
    struct fake *f = fake_start(1);
    trine_client_t *c = open_client(f->addr);
    async_client = c;
    trine_async_t *a = NULL;
    assert_int_equal(trine_async_open(c, 1, &a), 0);
    struct async_rec r[6];
    memset(r, 0, sizeof(r));
    /* Queued together, applied in order on the partition's connection. */
    assert_int_equal(trine_async_cas(a, "c", 1, 0, "v1", 2, NULL, async_done, &r[0]), 0);
    assert_int_equal(trine_async_cas(a, "c", 1, 1, "v2", 2, NULL, async_done, &r[1]), 0);
    assert_int_equal(trine_async_cas(a, "c", 1, 1, "v3", 2, NULL, async_done, &r[2]), 0);
    assert_int_equal(trine_async_get(a, "c", 1, NULL, async_done, &r[3]), 0);
    assert_int_equal(trine_async_del(a, "c", 1, NULL, async_done, &r[4]), 0);
    assert_int_equal(trine_async_get(a, "c", 1, NULL, async_done, &r[5]), 0);
    async_drain(a);
    assert_int_equal(r[0].rc, 0);
    assert_int_equal(r[0].res.version, 1);
    assert_int_equal(r[1].rc, 0);
    assert_int_equal(r[1].res.version, 2);
    assert_int_equal(r[2].rc, -TRINE_ECAS_FAILED);
    assert_int_equal(r[2].res.version, 2); /* the current one */
    assert_int_equal(r[3].rc, 0);
    assert_memory_equal(r[3].value, "v2", 2);
    assert_int_equal(r[4].rc, 0);
    assert_int_equal(r[5].rc, -TRINE_ENOT_FOUND);
    /* Writes: one seq each, in the order they were made. */
    struct fake_logged c0 = fake_nth(f, CODEC_MSG_CAS_REQ, 0);
    struct fake_logged c2 = fake_nth(f, CODEC_MSG_CAS_REQ, 2);
    struct fake_logged d0 = fake_nth(f, CODEC_MSG_DELETE_REQ, 0);
    assert_true(c2.hdr.seq == c0.hdr.seq + 2 && d0.hdr.seq == c0.hdr.seq + 3);
    trine_async_close(a);
    trine_client_close(c);
    fake_stop(f);
}

static void test_async_retries(void **state)
{
    (void)state;
    /* NOT_LEADER with a hint: the call follows it, with the same identity. */
    struct fake *a = fake_start(1), *b = fake_start(2);
    fake_add_member(a, b);
    fake_set_hook(a, hook_not_leader_hint);
    trine_client_t *c = open_client(a->addr);
    trine_async_t *e = NULL;
    assert_int_equal(trine_async_open(c, 1, &e), 0);
    struct async_rec r = {0};
    assert_int_equal(trine_async_put(e, "k", 1, "v", 1, NULL, async_done, &r), 0);
    async_drain(e);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.res.served_by, 2);
    assert_int_equal(r.res.attempts, 2);
    struct fake_logged pa = fake_nth(a, CODEC_MSG_PUT_REQ, 0);
    struct fake_logged pb = fake_nth(b, CODEC_MSG_PUT_REQ, 0);
    assert_true(pa.hdr.client_id == pb.hdr.client_id && pa.hdr.seq == pb.hdr.seq);
    trine_async_close(e);
    trine_client_close(c);
    fake_stop(a);
    fake_stop(b);

    /* A dropped connection: the write goes again on a new one, same seq;
     * UNAVAILABLE / BUSY back off and retry. */
    a = fake_start(1);
    fake_set_hook(a, hook_drop_first_put);
    c = open_client(a->addr);
    assert_int_equal(trine_async_open(c, 1, &e), 0);
    memset(&r, 0, sizeof(r));
    assert_int_equal(trine_async_put(e, "k", 1, "v", 1, NULL, async_done, &r), 0);
    async_drain(e);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.res.attempts, 2);
    struct fake_logged p0 = fake_nth(a, CODEC_MSG_PUT_REQ, 0);
    struct fake_logged p1 = fake_nth(a, CODEC_MSG_PUT_REQ, 1);
    assert_true(p0.hdr.client_id == p1.hdr.client_id && p0.hdr.seq == p1.hdr.seq);
    fake_set_hook(a, hook_unavailable_twice);
    memset(&r, 0, sizeof(r));
    assert_int_equal(trine_async_put(e, "k2", 2, "v", 1, NULL, async_done, &r), 0);
    async_drain(e);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.res.attempts, 3);
    /* Always UNAVAILABLE: retried until the deadline, then UNAVAILABLE. */
    fake_set_hook(a, hook_always_unavailable);
    memset(&r, 0, sizeof(r));
    struct trine_opts o = {.timeout_ms = 200};
    uint64_t t0 = clock_mono_ns();
    assert_int_equal(trine_async_put(e, "k3", 2, "v", 1, &o, async_done, &r), 0);
    async_drain(e);
    assert_int_equal(r.rc, -TRINE_EUNAVAILABLE);
    assert_true(r.res.attempts >= 2);
    assert_in_range(ms_since(t0), 150, 2000);
    trine_async_close(e);
    trine_client_close(c);
    fake_stop(a);
}

static void test_async_timeout_and_close(void **state)
{
    (void)state;
    struct fake *f = fake_start(1);
    fake_set_hook(f, hook_hold);
    trine_client_t *c = open_client(f->addr);
    async_client = c;
    trine_async_t *a = NULL;
    assert_int_equal(trine_async_open(c, 1, &a), 0);
    struct trine_opts o = {.timeout_ms = 300};
    struct async_rec w = {0}, g = {0}, closed = {0};
    uint64_t t0 = clock_mono_ns();
    assert_int_equal(trine_async_put(a, "k", 1, "v", 1, &o, async_done, &w), 0);
    assert_int_equal(trine_async_get(a, "k", 1, &o, async_done, &g), 0);
    async_drain(a);
    assert_in_range(ms_since(t0), 290, 1500);
    assert_int_equal(w.rc, -TRINE_ETIMEOUT);
    assert_non_null(strstr(w.errmsg, "outcome unknown"));
    assert_int_equal(g.rc, -TRINE_ETIMEOUT);
    assert_null(strstr(g.errmsg, "outcome unknown"));
    /* Bad arguments fail at once, without a callback. */
    char big[70000];
    memset(big, 'k', sizeof(big));
    assert_int_equal(trine_async_put(a, big, sizeof(big), "v", 1, NULL, async_done, &closed),
                     -TRINE_ETOO_LARGE);
    assert_int_equal(trine_async_get(a, "", 0, NULL, async_done, &closed), -TRINE_EBAD_REQUEST);
    assert_int_equal(closed.calls, 0);
    /* Close completes what is in flight with CLOSED. */
    assert_int_equal(trine_async_put(a, "k", 1, "v", 1, NULL, async_done, &closed), 0);
    assert_int_equal(trine_async_run(a, 20), 0);
    trine_async_close(a);
    assert_int_equal(closed.calls, 1);
    assert_int_equal(closed.rc, -TRINE_ECLOSED);
    trine_client_close(c);
    fake_stop(f);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(cert_dir, sizeof(cert_dir), "%s", tu_mkdtemp("client-certs"));
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "scripts/gen-certs.sh --dir %s --nodes 3 >/dev/null", cert_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    tu_rm_rf(cert_dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_codes_match_proto),
        cmocka_unit_test(test_put_get_roundtrip),
        cmocka_unit_test(test_not_leader_hint),
        cmocka_unit_test(test_not_leader_refreshes_map),
        cmocka_unit_test(test_dropped_connection_retried),
        cmocka_unit_test(test_unavailable_then_success),
        cmocka_unit_test(test_cas),
        cmocka_unit_test(test_too_large_rejected_locally),
        cmocka_unit_test(test_timeout_outcome_unknown),
        cmocka_unit_test(test_no_server),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_untrusted_node),
        cmocka_unit_test(test_scan_pages),
        cmocka_unit_test(test_cluster_status),
        cmocka_unit_test(test_routes_by_partition),
        cmocka_unit_test(test_threads_share_handle),
        cmocka_unit_test(test_cli),
        cmocka_unit_test(test_async_pipelined),
        cmocka_unit_test(test_async_closed_loop),
        cmocka_unit_test(test_async_cas_del),
        cmocka_unit_test(test_async_retries),
        cmocka_unit_test(test_async_timeout_and_close),
    };
    return cmocka_run_group_tests_name("client", tests, group_setup, group_teardown);
}
