/* http.h - the gateway's HTTP server (libmicrohttpd): routing, bearer tokens, bodies, CORS,
 * static files, admin paths, and one log line and metrics per request.
 *
 * Threads: by default one thread per connection (handlers block on NATS requests, so a slow
 * service holds only the connections waiting for it), bounded by max_connections; with
 * threads > 0, that many epoll polling threads share the connections instead. */
#ifndef GW_HTTP_H
#define GW_HTTP_H

#include <stddef.h>

#include "bus.h"
#include "keys.h"
#include "routes.h"
#include "statics.h"
#include "tlscert.h"
#include "token.h"

typedef struct http_cfg {
    const char *listen;     /* plain HTTP "host:port" (port 0: any free port, see http_port);
                               "" or NULL: no plain listener */
    const char *tls_listen; /* HTTPS "host:port" (port 0 as above); "" or NULL: none */
    tlscert *certs;         /* the certificate and key of tls_listen (required with it) */
    const char *hsts;       /* Strict-Transport-Security value on HTTPS answers ("": none) */
    size_t max_body;        /* bytes of a request body; more: 413 */
    unsigned max_connections;
    unsigned max_per_ip;       /* connections per client address (0: no limit); over: closed */
    unsigned client_timeout_s; /* idle connections and slow clients are closed after it */
    long request_timeout_ms;   /* a request's head and body (kept-alive idle too) within it */
    long response_timeout_ms;  /* a response, once queued, must be read within it */
    unsigned threads;          /* 0: a thread per connection; N: N polling threads */
    size_t conn_memory;        /* per-connection memory for the request head (431 past it) */
    const char *cors_origins;  /* comma-separated allowed origins, "*" or "" (none) */
    token_policy policy;
} http_cfg;

typedef struct http_server http_server;

/* Starts serving: plain HTTP on listen, HTTPS (TLS 1.2 and 1.3, certificate from certs) on
 * tls_listen, the same handler behind both; at least one of them is set. Everything passed
 * is borrowed and must outlive the server (strings in cfg included); st may be NULL (no
 * static files). Returns 0 and *out, or a negative errno after logging why. */
int http_create(http_server **out, const http_cfg *cfg, bus *b, const routes *rt, keys *ks,
                const statics *st);
/* Port actually bound by the plain listener, and by the TLS one (0: that listener is off). */
int http_port(const http_server *s);
int http_tls_port(const http_server *s);
/* Stops accepting connections (both listeners), then waits up to timeout_ms for requests in flight.
 */
void http_drain(http_server *s, int timeout_ms);
/* Stops (closing every connection) and frees; accepts NULL. */
void http_destroy(http_server *s);

#endif
