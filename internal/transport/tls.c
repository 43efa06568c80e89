/*
 * tls.c - the TLS context, certificate identities and the conversion of
 * OpenSSL's error queue into Trine statuses (the only file that reads it).
 *
 * Context: TLS 1.2 minimum (1.3 negotiated when both ends have it), no
 * renegotiation, no session tickets or cache (every connection does a full
 * handshake, so every connection re-verifies the peer's certificate), peer
 * verification mandatory in both directions against one CA file.
 *
 * Identity: the subject of a verified peer certificate must hold exactly one
 * CN; "node-<id>" with id a decimal u32 in [1, 2^32) written without leading
 * zeros, or "client". Anything else is kind UNKNOWN, which every caller in
 * this module refuses. The CA signs both kinds, so the CN, not the chain,
 * tells a node from a client and one node from another.
 */
#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

#include "transport/transport_impl.h"

/* Appends OpenSSL error e to msg as "; <text>". */
static void tls_append_error(char *msg, size_t n, unsigned long e)
{
    char one[200];
    ERR_error_string_n(e, one, sizeof(one));
    size_t used = strlen(msg);
    if (used + 3 < n) snprintf(msg + used, n - used, "%s%s", used ? "; " : "", one);
}

int transport_ssl_error(struct trine_err *err, int rc, const char *fmt, ...)
{
    char msg[TRINE_ERR_MSG_MAX] = "";
    char ctx[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof(ctx), fmt, ap);
    va_end(ap);
    /* The earliest entries are the root cause; keep three, drain the rest so
     * a stale error never leaks into the next report. */
    int kept = 0;
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        if (kept++ < 3) tls_append_error(msg, sizeof(msg), e);
    }
    return err_set(err, rc, "%s: %s", ctx, kept ? msg : "no OpenSSL error recorded");
}

bool tls_conn_failed_in_tls(struct bufferevent *bev)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    if (ssl == NULL) return false;
    if (SSL_get_verify_result(ssl) != X509_V_OK) return true;
    /* Any byte from the far end means TCP worked and TLS is what failed. */
    BIO *rbio = SSL_get_rbio(ssl);
    return rbio != NULL && BIO_number_read(rbio) > 0;
}

int tls_conn_error(struct trine_err *err, int rc, struct bufferevent *bev, int sock_err,
                   const char *context)
{
    char msg[TRINE_ERR_MSG_MAX] = "";
    /* libevent moved the OpenSSL errors of this connection off the thread's
     * queue into the bufferevent; it hands them back newest first, mixed
     * with bare SSL_get_error() codes (library 0), which say nothing more. */
    unsigned long e;
    int n = 0;
    while ((e = bufferevent_get_openssl_error(bev)) != 0) {
        if (ERR_GET_LIB(e) != 0 && n++ < 3) tls_append_error(msg, sizeof(msg), e);
    }
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (v != X509_V_OK) {
        size_t used = strlen(msg);
        snprintf(msg + used, sizeof(msg) - used, "%scertificate verify: %s", used ? "; " : "",
                 X509_verify_cert_error_string(v));
    }
    if (msg[0] == '\0') {
        if (sock_err != 0)
            snprintf(msg, sizeof(msg), "%s", strerror(sock_err));
        else
            snprintf(msg, sizeof(msg), "connection closed");
    }
    /* Errors of other connections must not be blamed on the next one. */
    ERR_clear_error();
    return err_set(err, rc, "%s: %s", context, msg);
}

int tls_ctx_new(const struct transport_config *c, SSL_CTX **out, struct trine_err *err)
{
    *out = NULL;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL) return transport_ssl_error(err, -TRINE_ENOMEM, "SSL_CTX_new");
    int rc = 0;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        rc = transport_ssl_error(err, -TRINE_EINTERNAL, "setting TLS 1.2 minimum");
        goto fail;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    /* Idle connections give their 2 x 16 KiB record buffers back. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, c->cert_file) != 1) {
        rc = transport_ssl_error(err, -TRINE_EINVALID, "certificate %s", c->cert_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, c->key_file, SSL_FILETYPE_PEM) != 1) {
        rc = transport_ssl_error(err, -TRINE_EINVALID, "private key %s", c->key_file);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        rc = transport_ssl_error(err, -TRINE_EINVALID, "key %s does not match certificate %s",
                                 c->key_file, c->cert_file);
        goto fail;
    }
    if (SSL_CTX_load_verify_locations(ctx, c->ca_file, NULL) != 1) {
        rc = transport_ssl_error(err, -TRINE_EINVALID, "CA file %s", c->ca_file);
        goto fail;
    }
    /* Tell clients which CA we want (helps them pick a certificate). */
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(c->ca_file);
    if (names == NULL) {
        rc = transport_ssl_error(err, -TRINE_EINVALID, "CA names in %s", c->ca_file);
        goto fail;
    }
    SSL_CTX_set_client_CA_list(ctx, names); /* takes ownership */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_verify_depth(ctx, 4);
    *out = ctx;
    return 0;
fail:
    SSL_CTX_free(ctx);
    return rc;
}

/* Strict "node-<id>": digits only, no leading zero, fits u32, not 0. */
static bool tls_parse_node_cn(const char *cn, uint32_t *id)
{
    static const char prefix[] = "node-";
    if (strncmp(cn, prefix, sizeof(prefix) - 1) != 0) return false;
    const char *d = cn + sizeof(prefix) - 1;
    size_t n = strlen(d);
    if (n == 0 || n > 10 || d[0] == '0') return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (d[i] < '0' || d[i] > '9') return false;
        v = v * 10 + (uint64_t)(d[i] - '0');
    }
    if (v > UINT32_MAX) return false;
    *id = (uint32_t)v;
    return true;
}

void tls_identity_from_cn(const char *cn, struct transport_identity *id)
{
    memset(id, 0, sizeof(*id));
    snprintf(id->cn, sizeof(id->cn), "%s", cn);
    if (strcmp(cn, "client") == 0)
        id->kind = TRANSPORT_PEER_CLIENT;
    else if (tls_parse_node_cn(cn, &id->node_id))
        id->kind = TRANSPORT_PEER_NODE;
    else
        id->kind = TRANSPORT_PEER_UNKNOWN;
}

int tls_peer_identity(SSL *ssl, struct transport_identity *id, struct trine_err *err)
{
    memset(id, 0, sizeof(*id));
    X509 *cert = SSL_get0_peer_certificate(ssl);
    if (cert == NULL) return err_set(err, -TRINE_EUNAUTHENTICATED, "no peer certificate");
    long v = SSL_get_verify_result(ssl);
    if (v != X509_V_OK)
        return err_set(err, -TRINE_EUNAUTHENTICATED, "peer certificate not verified: %s",
                       X509_verify_cert_error_string(v));
    X509_NAME *subject = X509_get_subject_name(cert);
    int at = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (at < 0) return err_set(err, -TRINE_EUNAUTHENTICATED, "peer certificate has no CN");
    if (X509_NAME_get_index_by_NID(subject, NID_commonName, at) >= 0)
        return err_set(err, -TRINE_EUNAUTHENTICATED, "peer certificate has several CNs");
    ASN1_STRING *data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at));
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, data);
    if (n < 0) {
        ERR_clear_error();
        return err_set(err, -TRINE_EUNAUTHENTICATED, "peer certificate CN is not a string");
    }
    /* An embedded NUL or an overlong CN could make two names compare equal. */
    bool bad = (size_t)n >= TRANSPORT_CN_MAX || memchr(utf8, '\0', (size_t)n) != NULL;
    char cn[TRANSPORT_CN_MAX] = "";
    if (!bad) memcpy(cn, utf8, (size_t)n);
    OPENSSL_free(utf8);
    if (bad) return err_set(err, -TRINE_EUNAUTHENTICATED, "peer certificate CN is malformed");
    tls_identity_from_cn(cn, id);
    return 0;
}
