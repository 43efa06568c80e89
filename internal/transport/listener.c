/*
 * listener.c - the listening socket: bind "host:port", accept, cap the
 * number of accepted connections, and hand each socket to conn.c for its TLS
 * handshake.
 *
 * Invariants: at most one listener per transport; at most conns_max accepted
 * connections exist at once (a socket over the cap is closed right after
 * accept and counted in conns_refused); an accept error that would repeat at
 * once (out of descriptors or memory) disables the listener for
 * LISTEN_RETRY_MS instead of spinning the loop.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "base/log.h"
#include "transport/transport_impl.h"

#define LISTEN_RETRY_MS 100
#define LISTEN_BACKLOG  512

static void listener_format_addr(const struct sockaddr *sa, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    uint16_t port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        evutil_inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        port = ntohs(in->sin_port);
        snprintf(out, n, "%s:%u", ip, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        evutil_inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        port = ntohs(in6->sin6_port);
        snprintf(out, n, "[%s]:%u", ip, port);
    } else {
        snprintf(out, n, "?");
    }
}

static void listener_acceptcb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                              int socklen, void *arg)
{
    (void)l;
    (void)socklen;
    struct transport *t = arg;
    char addr[TRANSPORT_ADDR_MAX];
    listener_format_addr(sa, addr, sizeof(addr));
    t->stats.conns_accepted++;
    if (t->accepted_open >= t->cfg.conns_max) {
        t->stats.conns_refused++;
        if (transport_log_allowed(t))
            log_warn("transport", "accept %s: %u connections open, refusing (%llu refused)", addr,
                     t->accepted_open, (unsigned long long)t->stats.conns_refused);
        evutil_closesocket(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct bufferevent *sock = bufferevent_socket_new(t->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (sock == NULL) {
        log_error("transport", "accept %s: out of memory", addr);
        evutil_closesocket(fd);
        return;
    }
    struct transport_conn *c;
    struct trine_err err = {0};
    if (conn_new(t, sock, true, NULL, addr, &c, &err) != 0)
        log_error("transport", "accept %s: %s", addr, err.msg);
}

static void listener_retrycb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct transport *t = arg;
    if (t->listener) evconnlistener_enable(t->listener);
}

static void listener_errorcb(struct evconnlistener *l, void *arg)
{
    struct transport *t = arg;
    int e = EVUTIL_SOCKET_ERROR();
    if (transport_log_allowed(t))
        log_warn("transport", "accept failed: %s", evutil_socket_error_to_string(e));
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        evconnlistener_disable(l);
        struct timeval tv = {.tv_sec = 0, .tv_usec = (suseconds_t)LISTEN_RETRY_MS * 1000};
        evtimer_add(t->listen_retry, &tv);
    }
}

int transport_listen(struct transport *t, const char *host_port, struct trine_err *err)
{
    if (t->listener) return err_set(err, -TRINE_EEXISTS, "transport already listens");
    char host[TRANSPORT_HOST_MAX];
    uint16_t port;
    if (transport_split_host_port(host_port, host, sizeof(host), &port) != 0)
        return err_set(err, -TRINE_EINVALID, "listen address \"%s\" is not host:port", host_port);
    struct evutil_addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    hints.ai_flags = EVUTIL_AI_PASSIVE | EVUTIL_AI_NUMERICSERV | EVUTIL_AI_ADDRCONFIG;
    char service[8];
    snprintf(service, sizeof(service), "%u", port);
    /* Blocking resolution is fine here: listening happens at start-up. */
    int gai = evutil_getaddrinfo(host[0] ? host : NULL, service, &hints, &ai);
    if (gai != 0 || ai == NULL)
        return err_set(err, -TRINE_EINVALID, "listen address %s: %s", host_port,
                       evutil_gai_strerror(gai));
    t->listen_retry = evtimer_new(t->base, listener_retrycb, t);
    if (t->listen_retry == NULL) {
        evutil_freeaddrinfo(ai);
        return err_set(err, -TRINE_ENOMEM, "out of memory");
    }
    errno = 0;
    t->listener =
        evconnlistener_new_bind(t->base, listener_acceptcb, t,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                LISTEN_BACKLOG, ai->ai_addr, (int)ai->ai_addrlen);
    int e = errno;
    evutil_freeaddrinfo(ai);
    if (t->listener == NULL) {
        event_free(t->listen_retry);
        t->listen_retry = NULL;
        return err_set(err, e ? status_from_errno(e) : -TRINE_EIO, "listen on %s: %s", host_port,
                       e ? strerror(e) : "failed");
    }
    evconnlistener_set_error_cb(t->listener, listener_errorcb);
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
        struct sockaddr_storage ss;
    } bound;
    memset(&bound, 0, sizeof(bound));
    socklen_t len = sizeof(bound);
    if (getsockname(evconnlistener_get_fd(t->listener), &bound.sa, &len) == 0)
        t->port = ntohs(bound.sa.sa_family == AF_INET6 ? bound.in6.sin6_port : bound.in.sin_port);
    log_info("transport", "listening on %s (port %u)", host_port, t->port);
    return 0;
}

uint16_t transport_listen_port(const struct transport *t)
{
    return t->port;
}

void listener_free(struct transport *t)
{
    if (t->listener) evconnlistener_free(t->listener);
    if (t->listen_retry) event_free(t->listen_retry);
    t->listener = NULL;
    t->listen_retry = NULL;
    t->port = 0;
}
