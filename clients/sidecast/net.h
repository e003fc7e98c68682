/* net.h - the sidecast client's blocking connections with deadlines (plain TCP or TLS), and
 * the URLs it accepts.
 *
 * Every call that waits takes an absolute deadline on the monotonic clock (net_now_ms), so a
 * sequence of calls shares one bound. Sockets are non-blocking underneath: waits are poll(2)
 * calls that a signal interrupts (-EINTR), so Ctrl-C is noticed promptly. Errors are
 * negative errno values; two of them mean TLS failures and come with a reason in the
 * net_tls (NET_ETLS_VERIFY, NET_ETLS). Prefix net_. */
#ifndef SIDECAST_NET_H
#define SIDECAST_NET_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ws/ws_url.h"

/* The server's certificate was refused: an unknown CA, a name or address it is not for,
 * expired... (net_tls.error has OpenSSL's verify reason). */
#define NET_ETLS_VERIFY (-EKEYREJECTED)
/* The TLS handshake failed otherwise: the server does not speak TLS, no common protocol
 * version, an alert (net_tls.error says which). */
#define NET_ETLS (-ECONNABORTED)

/* A parsed http://, https://, ws:// or wss:// URL: the WebSocket library's (ws_url.h). */
typedef ws_url net_url;

/* ws_url_parse: 0, or -EINVAL for anything that is not
 * (http|https|ws|wss)://host[:port][/path] (no userinfo, port 1-65535). Pure. */
int net_url_parse(const char *s, net_url *u);

/* The TLS settings every TLS connection of the process uses. The OpenSSL context is made on
 * the first TLS connection (plain connections never pay for it), or by net_tls_load. One
 * thread. */
typedef struct net_tls {
    const char *cafile;     /* PEM CA bundle to trust instead of the system's; NULL: the
                             * system trust store. Not owned: must outlive the net_tls */
    struct ssl_ctx_st *ctx; /* owned; NULL until needed */
    char error[256];        /* why the last call failed with NET_ETLS_VERIFY or NET_ETLS */
} net_tls;

/* Makes the context now: reads cafile (when set) so that a bad file is reported at start.
 * 0, or -EINVAL with the reason in t->error. */
int net_tls_load(net_tls *t);

/* Frees the context; t may be reused. Accepts NULL. */
void net_tls_clear(net_tls *t);

/* One connection: a non-blocking socket, with a TLS session over it for https and wss. */
typedef struct net_conn {
    int fd;             /* -1 when closed */
    struct ssl_st *ssl; /* NULL: plain TCP */
    net_tls *tls;       /* where TLS failures are explained; NULL for plain */
    bool failed;        /* a fatal TLS error happened: no close_notify, no more I/O */
} net_conn;

/* Connects to u's host and port (every address getaddrinfo gives, in order) and, for a TLS
 * URL, completes the handshake, all before deadline: TLS 1.2 at least, ALPN http/1.1, SNI
 * for a host name, the certificate verified against tls's trust and for u->host (name or IP
 * address). Returns 0 with *c open (release with net_conn_close), or a negative errno of the
 * last failure: -ETIMEDOUT at the deadline, -EINTR when a signal arrived, -EHOSTUNREACH when
 * the name does not resolve, -ECONNREFUSED..., NET_ETLS_VERIFY or NET_ETLS (reason in
 * tls->error), -EINVAL (a TLS URL without tls). tls may be NULL for plain URLs. */
int net_conn_open(net_conn *c, const net_url *u, net_tls *tls, int64_t deadline);

/* Writes all n bytes, waiting for room until deadline. 0, -ETIMEDOUT or -errno. Signals do
 * not interrupt it (a short write must not tear a frame). */
int net_conn_write(net_conn *c, const void *p, size_t n, int64_t deadline);

/* Reads up to n bytes, waiting until deadline. Returns the count (> 0), 0 at the end of the
 * stream (TLS: the peer's close_notify), -ETIMEDOUT, -EINTR (a signal arrived: the caller
 * checks why) or -errno (TLS: -ECONNRESET for a stream cut without close_notify or a bad
 * record). Bytes already decrypted inside OpenSSL are returned before any wait, so a caller
 * that reads in a loop never leaves data stranded there. */
ssize_t net_conn_read(net_conn *c, void *p, size_t n, int64_t deadline);

/* Sends close_notify (TLS, best effort: no wait), closes the socket and frees the session.
 * Accepts a closed or zeroed-and-closed connection (fd -1). */
void net_conn_close(net_conn *c);

/* Milliseconds on the monotonic clock. */
int64_t net_now_ms(void);
/* Seconds since the epoch (wall clock), for token expiry times. */
int64_t net_wall_s(void);

/* Fills p with n random bytes (OpenSSL's generator). 0 or -EIO. */
int net_random(void *p, size_t n);

#endif
