/*
 * tls.c - the client's TLS context, its socket BIO and the one boundary
 * where OpenSSL's error queue becomes a Trine status.
 *
 * Context: TLS 1.2 minimum, no renegotiation, peer verification mandatory
 * against the configured CA (OpenSSL's client default purpose "sslserver"
 * means a client-only certificate cannot pose as a node), and the host name
 * or IP of the endpoint is checked against the node certificate per
 * connection (conn.c). Our certificate and key are checked to match at open,
 * so a wrong file fails trine_client_open instead of every request.
 *
 * BIO: a minimal socket BIO that writes with send(MSG_NOSIGNAL). OpenSSL's
 * own socket BIO uses write(), which raises SIGPIPE on a connection the peer
 * closed, and a library must not kill its host process or touch its signal
 * handlers.
 */
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client/client_int.h"

int client_ssl_error(struct trine_err *err, int rc, const char *fmt, ...)
{
    char ctx[128];
    char msg[TRINE_ERR_MSG_MAX] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof(ctx), fmt, ap);
    va_end(ap);
    /* The oldest entries are the root cause: keep two, drain the rest so a
     * stale error is never blamed on the next call. */
    unsigned long e;
    int kept = 0;
    while ((e = ERR_get_error()) != 0) {
        if (kept++ >= 2) continue;
        char one[160];
        ERR_error_string_n(e, one, sizeof(one));
        size_t used = strlen(msg);
        snprintf(msg + used, sizeof(msg) - used, "%s%s", used ? "; " : "", one);
    }
    return err_set(err, rc, "%s: %s", ctx, kept ? msg : "no OpenSSL error recorded");
}

bool client_tls_is_auth_alert(unsigned long e)
{
    if (ERR_GET_LIB(e) != ERR_LIB_SSL) return false;
    static const int reasons[] = {
        SSL_R_CERTIFICATE_VERIFY_FAILED,
        SSL_R_SSLV3_ALERT_BAD_CERTIFICATE,
        SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE,
        SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED,
        SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED,
        SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN,
        SSL_R_TLSV1_ALERT_UNKNOWN_CA,
        SSL_R_TLSV1_ALERT_ACCESS_DENIED,
        SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED,
        SSL_R_SSLV3_ALERT_NO_CERTIFICATE,
    };
    int r = ERR_GET_REASON(e);
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
        if (reasons[i] == r) return true;
    }
    return false;
}

int client_tls_ctx_new(const struct trine_tls *tls, SSL_CTX **out, struct trine_err *err)
{
    *out = NULL;
    if (tls == NULL || tls->ca_file == NULL || tls->cert_file == NULL || tls->key_file == NULL)
        return err_set(err, -TRINE_EINVALID,
                       "TLS is required: give a CA file, a client certificate and its key");
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) return client_ssl_error(err, -TRINE_ENOMEM, "SSL_CTX_new");
    int rc;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        rc = client_ssl_error(err, -TRINE_EINTERNAL, "setting TLS 1.2 minimum");
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    /* One recv per reply instead of one for the record header and one for
     * its body. */
    SSL_CTX_set_read_ahead(ctx, 1);
    if (SSL_CTX_use_certificate_chain_file(ctx, tls->cert_file) != 1) {
        rc = client_ssl_error(err, -TRINE_EINVALID, "client certificate %s", tls->cert_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, tls->key_file, SSL_FILETYPE_PEM) != 1) {
        rc = client_ssl_error(err, -TRINE_EINVALID, "client key %s", tls->key_file);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        rc = client_ssl_error(err, -TRINE_EINVALID, "key %s does not match certificate %s",
                              tls->key_file, tls->cert_file);
        goto fail;
    }
    if (SSL_CTX_load_verify_locations(ctx, tls->ca_file, NULL) != 1) {
        rc = client_ssl_error(err, -TRINE_EINVALID, "CA file %s", tls->ca_file);
        goto fail;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_verify_depth(ctx, 4);
    *out = ctx;
    return 0;
fail:
    SSL_CTX_free(ctx);
    return rc;
}

/* ---- socket BIO: its data points at the connection's fd ---- */

static int bio_fd(BIO *b)
{
    const int *fd = BIO_get_data(b);
    return fd != NULL ? *fd : -1;
}

static int bio_sock_write(BIO *b, const char *p, int n)
{
    BIO_clear_retry_flags(b);
    ssize_t w;
    do {
        w = send(bio_fd(b), p, (size_t)n, MSG_NOSIGNAL);
    } while (w < 0 && errno == EINTR);
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_write(b);
    return (int)w;
}

static int bio_sock_read(BIO *b, char *p, int n)
{
    BIO_clear_retry_flags(b);
    ssize_t r;
    do {
        r = recv(bio_fd(b), p, (size_t)n, 0);
    } while (r < 0 && errno == EINTR);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_read(b);
    return (int)r;
}

static long bio_sock_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    /* OpenSSL flushes after each handshake flight; sends are unbuffered here. */
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_sock_create(BIO *b)
{
    BIO_set_data(b, NULL);
    BIO_set_init(b, 1);
    return 1;
}

int client_bio_method_new(BIO_METHOD **out, struct trine_err *err)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "trine socket");
    if (m == NULL || BIO_meth_set_write(m, bio_sock_write) != 1 ||
        BIO_meth_set_read(m, bio_sock_read) != 1 || BIO_meth_set_ctrl(m, bio_sock_ctrl) != 1 ||
        BIO_meth_set_create(m, bio_sock_create) != 1) {
        BIO_meth_free(m);
        return client_ssl_error(err, -TRINE_ENOMEM, "socket BIO");
    }
    *out = m;
    return 0;
}
