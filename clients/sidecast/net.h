/* net.h - the sidecast client's blocking TCP I/O with deadlines, and the URLs it accepts.
 *
 * Every call that waits takes an absolute deadline on the monotonic clock (net_now_ms), so a
 * sequence of calls shares one bound. Sockets are non-blocking underneath: waits are poll(2)
 * calls that a signal interrupts (-EINTR), so Ctrl-C is noticed promptly. Errors are
 * negative errno values. Prefix net_. */
#ifndef SIDECAST_NET_H
#define SIDECAST_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define NET_HOST_MAX 255
#define NET_PATH_MAX 2048

/* A parsed http:// or ws:// URL. */
typedef struct net_url {
    char scheme[8];                   /* "http" or "ws" */
    char host[NET_HOST_MAX + 1];      /* name or address, without [] for IPv6 */
    int port;                         /* explicit, else 80 */
    char path[NET_PATH_MAX + 1];      /* path and query, "/" when absent */
    char hostport[NET_HOST_MAX + 10]; /* as the Host header wants it */
} net_url;

/* Parses s. Returns 0; -EPROTONOSUPPORT for https:// and wss:// (no TLS in this client);
 * -EINVAL for anything else that is not http://host[:port][/path] or ws://... */
int net_url_parse(const char *s, net_url *u);

/* Milliseconds on the monotonic clock. */
int64_t net_now_ms(void);
/* Seconds since the epoch (wall clock), for token expiry times. */
int64_t net_wall_s(void);

/* Connects to host:port (every address getaddrinfo gives, in order) before deadline.
 * Returns a non-blocking socket, or a negative errno of the last failure (-ETIMEDOUT at the
 * deadline, -EINTR when a signal arrived, -EHOSTUNREACH when the name does not resolve). */
int net_connect(const char *host, int port, int64_t deadline);

/* Writes all n bytes, waiting for room until deadline. 0, -ETIMEDOUT or -errno. Signals do
 * not interrupt it (a short write must not tear a frame). */
int net_write_all(int fd, const void *p, size_t n, int64_t deadline);

/* Reads up to n bytes, waiting until deadline. Returns the count (> 0), 0 at end of stream,
 * -ETIMEDOUT, -EINTR (a signal arrived: the caller checks why) or -errno. */
ssize_t net_read(int fd, void *p, size_t n, int64_t deadline);

/* Fills p with n random bytes (OpenSSL's generator). 0 or -EIO. */
int net_random(void *p, size_t n);

#endif
