/*
 * conn.c - one client connection: TCP + TLS over a non-blocking socket that
 * every call drives to completion with poll() against an absolute deadline,
 * so the library never blocks past a call's timeout (except in
 * getaddrinfo, whose DNS lookups have no deadline; numeric addresses do not
 * look anything up).
 *
 * Frames (docs/protocol.md): u32 big-endian body length, then the msgpack
 * body. A length over the codec's frame limit is refused before any body byte
 * is read, and the connection must then be closed (the caller does: a conn
 * that returned an error is never pooled).
 *
 * A pooled connection carries one request at a time; its read buffer and
 * decode scratch hold the last reply until the next call on it. async.c
 * drives its own connections with the non-blocking calls at the end
 * (client_conn_*_some), many requests in flight on each.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/clock.h"
#include "client/client_int.h"

struct client_conn {
    int fd;
    SSL *ssl;
    struct client_endpoint *ep;
    struct buf body;
    struct codec_scratch *scratch;
};

struct client_endpoint *client_conn_endpoint(const struct client_conn *conn)
{
    return conn->ep;
}

/* Waits until fd is ready for events or the deadline passes. */
static int conn_wait(int fd, short events, uint64_t deadline_ns, const char *what,
                     struct trine_err *err)
{
    for (;;) {
        uint64_t now = clock_mono_ns();
        if (now >= deadline_ns) return err_set(err, -TRINE_ETIMEOUT, "%s: timed out", what);
        uint64_t left_ms = (deadline_ns - now + 999999) / 1000000;
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, left_ms > 60000 ? 60000 : (int)left_ms);
        if (r > 0) return 0;
        if (r < 0 && errno != EINTR)
            return err_set(err, -TRINE_EIO, "%s: poll: %s", what, strerror(errno));
    }
}

/* Non-blocking connect to one resolved address. */
static int conn_tcp(const struct addrinfo *ai, uint64_t deadline_ns, int *out_fd,
                    struct trine_err *err)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) return err_set(err, status_from_errno(errno), "socket: %s", strerror(errno));
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int rc = 0;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS) {
            rc = err_set(err, -TRINE_EIO, "connect: %s", strerror(errno));
            goto fail;
        }
        rc = conn_wait(fd, POLLOUT, deadline_ns, "connect", err);
        if (rc != 0) goto fail;
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) soerr = errno;
        if (soerr != 0) {
            rc = err_set(err, -TRINE_EIO, "connect: %s", strerror(soerr));
            goto fail;
        }
    }
    *out_fd = fd;
    return 0;
fail:
    close(fd);
    return rc;
}

/* Classifies a failed SSL_* call (after SSL_get_error) into a status. */
static int conn_ssl_fail(SSL *ssl, int sslerr, const char *what, struct trine_err *err)
{
    long v = SSL_get_verify_result(ssl);
    if (v != X509_V_OK) {
        ERR_clear_error();
        return err_set(err, -TRINE_EUNAUTHENTICATED, "%s: node certificate not trusted: %s", what,
                       X509_verify_cert_error_string(v));
    }
    if (sslerr == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        return err_set(err, -TRINE_ECLOSED, "%s: connection closed by the node", what);
    }
    unsigned long e = ERR_peek_error();
    if (e != 0 && client_tls_is_auth_alert(e))
        return client_ssl_error(err, -TRINE_EUNAUTHENTICATED,
                                "%s: the node refused our certificate", what);
    if (sslerr == SSL_ERROR_SYSCALL && e == 0) {
        int en = errno;
        ERR_clear_error();
        if (en == 0 || en == ECONNRESET || en == EPIPE)
            return err_set(err, -TRINE_ECLOSED, "%s: connection closed by the node", what);
        return err_set(err, -TRINE_EIO, "%s: %s", what, strerror(en));
    }
    return client_ssl_error(err, -TRINE_EIO, "%s", what);
}

enum conn_op { CONN_HANDSHAKE, CONN_READ, CONN_WRITE };

/* One SSL_connect, SSL_read_ex or SSL_write_ex that does not wait: *n bytes
 * moved (0 for the handshake), or 0 with *want the poll event to wait for. */
static int conn_ssl_some(struct client_conn *c, enum conn_op op, void *p, size_t len, size_t *n,
                         short *want, const char *what, struct trine_err *err)
{
    *n = 0;
    *want = 0;
    ERR_clear_error();
    errno = 0;
    int r = op == CONN_HANDSHAKE ? SSL_connect(c->ssl)
            : op == CONN_READ    ? SSL_read_ex(c->ssl, p, len, n)
                                 : SSL_write_ex(c->ssl, (const uint8_t *)p, len, n);
    if (r == 1) return 0;
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *want = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        return 0;
    }
    return conn_ssl_fail(c->ssl, e, what, err);
}

/* Drives one SSL operation to completion before the deadline. */
static int conn_ssl_io(struct client_conn *c, enum conn_op op, void *p, size_t n,
                       uint64_t deadline_ns, const char *what, struct trine_err *err)
{
    size_t done = 0;
    for (;;) {
        size_t got;
        short want;
        void *at = op == CONN_HANDSHAKE ? NULL : (uint8_t *)p + done;
        int rc = conn_ssl_some(c, op, at, n - done, &got, &want, what, err);
        if (rc != 0) return rc;
        done += got;
        if (want == 0 && (op == CONN_HANDSHAKE || done == n)) return 0;
        if (want != 0 && (rc = conn_wait(c->fd, want, deadline_ns, what, err)) != 0) return rc;
    }
}

/* Sets the identity the node's certificate must show: IP SAN for a literal
 * address, DNS name (and SNI) otherwise. */
static int conn_set_peer_name(SSL *ssl, const char *host, struct trine_err *err)
{
    unsigned char bin[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1)
            return client_ssl_error(err, -TRINE_EINVALID, "expected IP %s", host);
        return 0;
    }
    if (SSL_set1_host(ssl, host) != 1 || SSL_set_tlsext_host_name(ssl, host) != 1)
        return client_ssl_error(err, -TRINE_EINVALID, "expected host %s", host);
    return 0;
}

static int conn_tls(struct trine_client *cl, struct client_conn *c, uint64_t deadline_ns,
                    struct trine_err *err)
{
    ERR_clear_error();
    c->ssl = SSL_new(cl->ssl_ctx);
    if (c->ssl == NULL) return client_ssl_error(err, -TRINE_ENOMEM, "SSL_new");
    BIO *bio = BIO_new(cl->bio_method);
    if (bio == NULL) return client_ssl_error(err, -TRINE_ENOMEM, "BIO_new");
    BIO_set_data(bio, &c->fd);     /* c outlives c->ssl, which owns bio */
    SSL_set_bio(c->ssl, bio, bio); /* ssl owns bio */
    int rc = conn_set_peer_name(c->ssl, c->ep->host, err);
    if (rc != 0) return rc;
    return conn_ssl_io(c, CONN_HANDSHAKE, NULL, 0, deadline_ns, "TLS handshake", err);
}

int client_conn_open(struct trine_client *cl, const struct client_endpoint *ep,
                     uint64_t deadline_ns, struct client_conn **out, struct trine_err *err)
{
    *out = NULL;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(ep->host, ep->port, &hints, &res);
    if (g != 0)
        return err_set(err, -TRINE_EIO, "%s: cannot resolve: %s", ep->addr, gai_strerror(g));
    int fd = -1, rc = -TRINE_EIO;
    struct trine_err one = {0};
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        rc = conn_tcp(ai, deadline_ns, &fd, &one);
        if (rc == -TRINE_ETIMEOUT) break;
    }
    freeaddrinfo(res);
    if (fd < 0) return err_set(err, rc, "%s: %s", ep->addr, one.msg);

    struct client_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return err_set(err, -TRINE_ENOMEM, "out of memory");
    }
    c->fd = fd;
    c->ep = (struct client_endpoint *)ep;
    buf_init(&c->body);
    c->scratch = codec_scratch_new();
    if (c->scratch == NULL) {
        client_conn_close(c);
        return err_set(err, -TRINE_ENOMEM, "out of memory");
    }
    rc = conn_tls(cl, c, deadline_ns, &one);
    if (rc != 0) {
        client_conn_close(c);
        return err_set(err, rc, "%s: %s", ep->addr, one.msg);
    }
    *out = c;
    return 0;
}

void client_conn_close(struct client_conn *c)
{
    if (c == NULL) return;
    /* No close_notify: the node treats EOF the same, and a blocked peer must
     * not stall us. */
    SSL_free(c->ssl);
    if (c->fd >= 0) close(c->fd);
    buf_free(&c->body);
    codec_scratch_free(c->scratch);
    free(c);
}

bool client_conn_stale(struct client_conn *c)
{
    if (SSL_has_pending(c->ssl)) return true;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    /* Nothing is due on an idle connection: readable means EOF, a reset or
     * stray bytes, and the connection cannot be trusted either way. */
    return poll(&p, 1, 0) != 0;
}

int client_conn_send(struct client_conn *c, const uint8_t *p, size_t n, uint64_t deadline_ns,
                     struct trine_err *err)
{
    return conn_ssl_io(c, CONN_WRITE, (void *)p, n, deadline_ns, "send", err);
}

int client_conn_recv(struct client_conn *c, const struct codec_limits *lim, uint64_t deadline_ns,
                     struct codec_msg *out, struct trine_err *err)
{
    uint8_t hdr[CODEC_FRAME_HEADER_BYTES];
    /* The reply cannot be there yet: wait for it rather than fail a recv first. */
    int rc = SSL_has_pending(c->ssl) ? 0 : conn_wait(c->fd, POLLIN, deadline_ns, "receive", err);
    if (rc == 0) rc = conn_ssl_io(c, CONN_READ, hdr, sizeof(hdr), deadline_ns, "receive", err);
    if (rc != 0) return rc;
    uint32_t len;
    rc = codec_frame_length(hdr, lim, &len, err);
    if (rc != 0) return rc;
    /* A connection keeps its buffer between calls, but not a huge one. */
    if (c->body.cap > (4u << 20) && len < (1u << 20)) buf_free(&c->body);
    buf_reset(&c->body);
    rc = buf_reserve(&c->body, len);
    if (rc != 0) return err_set(err, rc, "reply of %u bytes: out of memory", len);
    rc = conn_ssl_io(c, CONN_READ, c->body.data, len, deadline_ns, "receive", err);
    if (rc != 0) return rc;
    c->body.len = len;
    codec_scratch_reset(c->scratch);
    return codec_decode(c->body.data, len, lim, c->scratch, out, err);
}

/* ---- non-blocking use (async.c) ---- */

int client_conn_fd(const struct client_conn *c)
{
    return c->fd;
}

void client_conn_set_pipelined(struct client_conn *c)
{
    /* The caller's output buffer grows (and moves) between a write that
     * wanted to wait and its retry. */
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
}

bool client_conn_has_pending(const struct client_conn *c)
{
    return SSL_has_pending(c->ssl) == 1;
}

int client_conn_write_some(struct client_conn *c, const uint8_t *p, size_t len, size_t *n,
                           short *want, struct trine_err *err)
{
    return conn_ssl_some(c, CONN_WRITE, (void *)p, len, n, want, "send", err);
}

int client_conn_read_some(struct client_conn *c, uint8_t *p, size_t len, size_t *n, short *want,
                          struct trine_err *err)
{
    return conn_ssl_some(c, CONN_READ, p, len, n, want, "receive", err);
}
