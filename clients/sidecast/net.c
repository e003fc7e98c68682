/* net.c - blocking-with-deadline connections (TCP, TLS over OpenSSL) and URL parsing for the
 * sidecast client. */
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

int64_t net_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t net_wall_s(void) { return (int64_t)time(NULL); }

int net_random(void *p, size_t n) { return RAND_bytes(p, (int)n) == 1 ? 0 : -EIO; }

int net_url_parse(const char *s, net_url *u) { return ws_url_parse(s, u); }

static int wait_fd(int fd, short events, int64_t deadline, int interruptible)
{
    for (;;) {
        int64_t left = deadline - net_now_ms();
        if (left <= 0) return -ETIMEDOUT;
        struct pollfd pfd = {.fd = fd, .events = events};
        int rc = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
        if (rc > 0) return 0;
        if (rc < 0) {
            if (errno != EINTR) return -errno;
            if (interruptible) return -EINTR;
        }
    }
}

/* A TCP connection to host:port before deadline: a non-blocking socket or a negative errno. */
static int tcp_connect(const char *host, int port, int64_t deadline)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0) return gai == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
    int err = -ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0) {
            err = -errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            freeaddrinfo(res);
            return fd;
        }
        if (errno == EINPROGRESS) {
            int rc = wait_fd(fd, POLLOUT, deadline, 1);
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            if (rc == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0) {
                freeaddrinfo(res);
                return fd;
            }
            err = rc < 0 ? rc : -(soerr ? soerr : ECONNREFUSED);
        } else {
            err = -errno;
        }
        close(fd);
        if (err == -ETIMEDOUT || err == -EINTR) break;
    }
    freeaddrinfo(res);
    return err;
}

/* OpenSSL's reason for the error at the head of its queue, or fallback. */
static const char *ssl_reason(const char *fallback)
{
    const char *r = ERR_reason_error_string(ERR_peek_last_error());
    return r ? r : fallback;
}

int net_tls_load(net_tls *t)
{
    if (t->ctx) return 0;
    t->error[0] = '\0';
    ERR_clear_error();
    if (t->cafile) { /* the usual cause first, in the system's words */
        FILE *f = fopen(t->cafile, "r");
        if (!f) {
            snprintf(t->error, sizeof t->error, "cannot read the CA file %s: %s", t->cafile,
                     strerror(errno));
            return -EINVAL;
        }
        fclose(f);
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(t->error, sizeof t->error, "cannot make a TLS context: %s",
                 ssl_reason("out of memory"));
        return -ENOMEM;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (ok && t->cafile && !SSL_CTX_load_verify_locations(ctx, t->cafile, NULL)) {
        snprintf(t->error, sizeof t->error, "cannot use the CA file %s: %s", t->cafile,
                 ssl_reason("no PEM certificate in it"));
        SSL_CTX_free(ctx);
        ERR_clear_error();
        return -EINVAL;
    }
    if (ok && !t->cafile) ok = SSL_CTX_set_default_verify_paths(ctx);
    if (!ok) {
        snprintf(t->error, sizeof t->error, "cannot set up TLS: %s", ssl_reason("unknown"));
        SSL_CTX_free(ctx);
        ERR_clear_error();
        return -EINVAL;
    }
    t->ctx = ctx;
    return 0;
}

void net_tls_clear(net_tls *t)
{
    if (!t) return;
    SSL_CTX_free(t->ctx);
    t->ctx = NULL;
}

/* Frees the TLS session and the socket without close_notify (after a failure). */
static void conn_drop(net_conn *c)
{
    SSL_free(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    ERR_clear_error();
}

/* Why SSL_connect failed (e: SSL_get_error, sys: errno after the call). A negative errno. */
static int handshake_error(net_conn *c, int e, int sys)
{
    long v = SSL_get_verify_result(c->ssl);
    if (v != X509_V_OK) {
        snprintf(c->tls->error, sizeof c->tls->error, "certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
        return NET_ETLS_VERIFY;
    }
    if (e == SSL_ERROR_SYSCALL && sys != 0) return -sys; /* the network's failure */
    int why = ERR_GET_REASON(ERR_peek_last_error());
    bool plain = why == SSL_R_WRONG_VERSION_NUMBER || why == SSL_R_UNEXPECTED_EOF_WHILE_READING ||
                 e == SSL_ERROR_SYSCALL;
    snprintf(c->tls->error, sizeof c->tls->error, "TLS handshake failed: %s%s",
             e == SSL_ERROR_SYSCALL ? "the server closed the connection"
                                    : ssl_reason("protocol error"),
             plain ? " (a plain, not a TLS, server on that port?)" : "");
    return NET_ETLS;
}

static int tls_handshake(net_conn *c, const char *host, int64_t deadline)
{
    int rc = net_tls_load(c->tls);
    if (rc < 0) return rc == -EINVAL ? NET_ETLS : rc;
    c->tls->error[0] = '\0';
    ERR_clear_error();
    c->ssl = SSL_new(c->tls->ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) return -ENOMEM;
    /* the name (or address) the certificate must be for; SNI only for names (RFC 6066 §3) */
    unsigned char addr[sizeof(struct in6_addr)];
    bool ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
    X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, host)
                : X509_VERIFY_PARAM_set1_host(vp, host, 0) &&
                      SSL_set_tlsext_host_name(c->ssl, host);
    static const unsigned char alpn[] = "\x08http/1.1";
    if (!ok || SSL_set_alpn_protos(c->ssl, alpn, sizeof alpn - 1) != 0) { /* 0 is success */
        snprintf(c->tls->error, sizeof c->tls->error, "cannot set up TLS: %s",
                 ssl_reason("bad host name"));
        return NET_ETLS;
    }
    for (;;) {
        ERR_clear_error();
        errno = 0;
        int r = SSL_connect(c->ssl);
        if (r == 1) return 0;
        int sys = errno, e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            rc = wait_fd(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline, 1);
            if (rc < 0) return rc;
            continue;
        }
        return handshake_error(c, e, sys);
    }
}

int net_conn_open(net_conn *c, const net_url *u, net_tls *tls, int64_t deadline)
{
    c->fd = -1;
    c->ssl = NULL;
    c->tls = u->tls ? tls : NULL;
    c->failed = false;
    if (u->tls && !tls) return -EINVAL;
    c->fd = tcp_connect(u->host, u->port, deadline);
    if (c->fd < 0) return c->fd;
    if (!u->tls) return 0;
    int rc = tls_handshake(c, u->host, deadline);
    if (rc < 0) conn_drop(c);
    return rc;
}

/* After SSL_read/SSL_write returned r with SSL_get_error e: 1 to wait for the socket as
 * *events says, or a negative errno (a fatal TLS error marks the connection failed). */
static int tls_step(net_conn *c, int e, int sys, short *events)
{
    switch (e) {
    case SSL_ERROR_WANT_READ: *events = POLLIN; return 1;
    case SSL_ERROR_WANT_WRITE: *events = POLLOUT; return 1;
    case SSL_ERROR_ZERO_RETURN: return 0;
    case SSL_ERROR_SYSCALL: /* fatal (an EINTR would have been WANT_READ/WRITE) */
        c->failed = true;
        return sys ? -sys : -ECONNRESET;
    default:
        c->failed = true;
        snprintf(c->tls->error, sizeof c->tls->error, "TLS: %s", ssl_reason("protocol error"));
        return -ECONNRESET; /* a bad record, or the stream cut without close_notify */
    }
}

int net_conn_write(net_conn *c, const void *p, size_t n, int64_t deadline)
{
    const char *b = p;
    while (n > 0) {
        short events = POLLOUT;
        if (c->ssl) {
            size_t w = 0;
            ERR_clear_error();
            errno = 0;
            if (SSL_write_ex(c->ssl, b, n, &w) == 1) { /* no partial writes: all of it */
                b += w;
                n -= w;
                continue;
            }
            int sys = errno, rc = tls_step(c, SSL_get_error(c->ssl, 0), sys, &events);
            if (rc == 0) return -EPIPE; /* close_notify while writing */
            if (rc < 0) return rc;
        } else {
            ssize_t w = send(c->fd, b, n, MSG_NOSIGNAL);
            if (w > 0) {
                b += w;
                n -= (size_t)w;
                continue;
            }
            if (w < 0 && errno == EINTR) continue;
            if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
        }
        int rc = wait_fd(c->fd, events, deadline, 0);
        if (rc < 0) return rc;
    }
    return 0;
}

ssize_t net_conn_read(net_conn *c, void *p, size_t n, int64_t deadline)
{
    for (;;) {
        short events = POLLIN;
        if (c->ssl) { /* SSL_read first: what OpenSSL holds already needs no wait */
            size_t got = 0;
            ERR_clear_error();
            errno = 0;
            if (SSL_read_ex(c->ssl, p, n, &got) == 1) return (ssize_t)got;
            int sys = errno, rc = tls_step(c, SSL_get_error(c->ssl, 0), sys, &events);
            if (rc <= 0) return rc;
        } else {
            ssize_t r = recv(c->fd, p, n, 0);
            if (r >= 0) return r;
            if (errno == EINTR) return -EINTR;
            if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
        }
        int rc = wait_fd(c->fd, events, deadline, 1);
        if (rc < 0) return rc;
    }
}

void net_conn_close(net_conn *c)
{
    if (c->ssl && !c->failed) {
        ERR_clear_error();
        SSL_shutdown(c->ssl); /* close_notify if the socket takes it now; no wait for the peer's */
    }
    conn_drop(c);
}
