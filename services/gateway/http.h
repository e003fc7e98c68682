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
#include "token.h"

typedef struct http_cfg {
    const char *listen; /* "host:port" (port 0: any free port, see http_port) */
    size_t max_body;    /* bytes of a request body; more: 413 */
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

/* Starts serving. Everything passed is borrowed and must outlive the server (strings in cfg
 * included); st may be NULL (no static files). Returns 0 and *out, or a negative errno after
 * logging why. */
int http_create(http_server **out, const http_cfg *cfg, bus *b, const routes *rt, keys *ks,
                const statics *st);
/* Port actually bound. */
int http_port(const http_server *s);
/* Stops accepting connections, then waits up to timeout_ms for requests in flight. */
void http_drain(http_server *s, int timeout_ms);
/* Stops (closing every connection) and frees; accepts NULL. */
void http_destroy(http_server *s);

#endif
