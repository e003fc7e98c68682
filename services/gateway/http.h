/* http.h - the gateway's HTTP server (libmicrohttpd): routing, bearer tokens, bodies, CORS,
 * static files, admin paths, and one log line and metrics per request.
 *
 * Threads: `threads` epoll threads per listener share every connection; no handler waits for
 * a service (the connection is suspended while its route runs over the bus and resumed by
 * the answer), so a slow service holds memory, not threads. Bounds: max_connections per
 * listener, max_inflight requests waiting for services (503 past it), max_inflight_per_ip
 * of them per client address (429 past it); a connection carries one request at a time. */
#ifndef GW_HTTP_H
#define GW_HTTP_H

#include <stddef.h>

#include <jansson.h>

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
    unsigned max_per_ip;          /* connections per client address (0: no limit); over: closed */
    unsigned client_timeout_s;    /* idle connections and slow clients are closed after it */
    long request_timeout_ms;      /* a request's head and body (kept-alive idle too) within it */
    long response_timeout_ms;     /* a response, once queued, must be read within it */
    unsigned threads;             /* epoll threads per listener (1..) */
    unsigned max_inflight;        /* requests waiting for services; more: 503 */
    unsigned max_inflight_per_ip; /* of them per client address (0: no limit); more: 429 */
    size_t conn_memory;           /* per-connection memory for the request head (431 past it) */
    const char *cors_origins;     /* comma-separated allowed origins, "*" or "" (none) */
    token_policy policy;
    /* The token's topic patterns, passed to services (Sidecast-Sub-Topics): the claim that
     * holds them (NULL or "": sub_topics), an array or a string of patterns separated by
     * spaces or commas; and the list (a JSON array) for a token without it, or NULL. */
    const char *sub_claim;
    const json_t *sub_default;
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
