/* ws_http.h - the HTTP/1.1 side of the WebSocket opening handshake (RFC 6455 §4.2): parse a
 * request head, judge it as an upgrade to sidecast.v1 on /ws, and write the answer (101 with
 * Sec-WebSocket-Accept, or 400/403/404/405/426/431 with a short text body).
 *
 * Pure functions in the manner of picohttpparser: no I/O, no allocation, no global state, no
 * copies. Every ws_http_str points into the caller's buffer, which must outlive the parsed
 * request and anything derived from it (ws_http_upgrade). Prefix ws_http_. */
#ifndef EDGE_WS_HTTP_H
#define EDGE_WS_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "err.h"
#include "ws_deflate.h"
#include "ws_key.h"

/* ws_http_parse_request fails with a code of err.h: SC_EINCOMPLETE (the head is not all
 * there: read more, call again), SC_EMALFORMED (answer 400 and close) or SC_ETOOLARGE (a
 * limit was exceeded: answer 431 and close). */

#define WS_HTTP_MAX_HEADERS 64 /* capacity of ws_http_request.headers */
#define WS_HTTP_DEFAULT_MAX_HEAD 8192
#define WS_HTTP_DEFAULT_MAX_LINE 4096
#define WS_HTTP_RESPONSE_MAX 512 /* room that every answer written here fits in */

/* A byte range in the caller's buffer; not NUL-terminated. n = 0 (p may be NULL): absent. */
typedef struct ws_http_str {
    const char *p;
    size_t n;
} ws_http_str;

typedef struct ws_http_header {
    ws_http_str name;  /* a token, case as sent */
    ws_http_str value; /* leading and trailing spaces/tabs removed */
} ws_http_header;

typedef struct ws_http_limits {
    size_t max_head;    /* bytes of the whole head, request line to empty line */
    size_t max_line;    /* bytes of one line (request line or header) */
    size_t max_headers; /* header lines; at most WS_HTTP_MAX_HEADERS */
} ws_http_limits;

typedef struct ws_http_request {
    ws_http_str method; /* "GET" */
    ws_http_str target; /* request-target as sent: path and query */
    ws_http_str path;   /* target up to '?' */
    ws_http_str query;  /* after '?', without it; n = 0 when none */
    int minor_version;  /* 1 for HTTP/1.1, 0 for HTTP/1.0 */
    size_t nheaders;
    ws_http_header headers[WS_HTTP_MAX_HEADERS];
} ws_http_request;

/* Parses the request head at buf[0..len): request line, header lines, empty line. Line ends
 * may be CRLF or a bare LF; empty lines before the request line are skipped (RFC 9112
 * §2.2); obs-fold, whitespace before a colon, control characters, and HTTP versions other
 * than 1.0/1.1 are malformed. lim NULL: the defaults (8 KiB head, 4 KiB line, 64 headers).
 * Returns the head's length (> 0; bytes after it, e.g. frames sent early, are not part of
 * it), SC_EINCOMPLETE, SC_EMALFORMED or SC_ETOOLARGE. Stateless: on SC_EINCOMPLETE
 * call again from the start with more bytes; the cost is bounded by max_head. *req is meaningful
 * (pointing into buf) only when the head is complete. */
int ws_http_parse_request(const char *buf, size_t len, const ws_http_limits *lim,
                          ws_http_request *req);

/* The value of the first header named name (case-insensitive), or NULL. */
const ws_http_str *ws_http_header_get(const ws_http_request *req, const char *name);

/* How a server accepts upgrades. Strings are borrowed. */
typedef struct ws_http_upgrade_config {
    const char *path;           /* the WebSocket endpoint, e.g. "/ws"; others: 404 */
    const char *const *origins; /* Origin values allowed (exact, ASCII case-insensitive;
                                 * "*" allows any). A request without Origin (not a
                                 * browser) is always allowed; another origin: 403 */
    size_t norigins;
    const char *subprotocol;  /* e.g. "sidecast.v1": selected when the client offers
                               * it; NULL: never select one (an echo server) */
    bool require_subprotocol; /* 400 unless the client offers subprotocol */
    bool deflate;             /* accept a permessage-deflate offer (RFC 7692) */
} ws_http_upgrade_config;

/* The verdict on a request. Strings point into the request's buffer. */
typedef struct ws_http_upgrade {
    int status;           /* 101, or the status to answer: 400, 403, 404, 405, 426 */
    const char *reason;   /* static text: why (for the log and the error body) */
    ws_http_str key;      /* Sec-WebSocket-Key, 24 characters (when 101) */
    const char *protocol; /* cfg->subprotocol when selected, else NULL */
    ws_http_str origin;   /* Origin, n = 0 when absent */
    ws_http_str bearer;   /* the token of "Authorization: Bearer <token>", n = 0 when
                           * absent or another scheme */
    ws_http_str query;    /* the query string, for ws_http_query_param */
    bool deflate;         /* permessage-deflate accepted (cfg->deflate and an acceptable
                           * offer), with these parameters: */
    ws_pmd pmd;
} ws_http_upgrade;

/* Judges a parsed request as a WebSocket upgrade (RFC 6455 §4.2.1) and fills *up. Checks, in
 * this order: path (404), method GET (405), HTTP/1.1 (400), one Host (400), Upgrade token
 * list has "websocket" (400), Connection token list has "upgrade" (400), exactly one
 * Sec-WebSocket-Version and it is 13 (426, also when absent), one Sec-WebSocket-Key that is
 * base64 of 16 bytes (400), one Origin that is allowed (403), a well-formed Bearer token
 * when the Authorization scheme is Bearer (400), subprotocol (400 when the client offers
 * protocols but not cfg->subprotocol, or offers none and require_subprotocol is set).
 * Then, with cfg->deflate, the Sec-WebSocket-Extensions headers in order: the first
 * acceptable permessage-deflate offer (ws_pmd_offer) sets up->deflate and up->pmd; offers
 * that are not acceptable are declined, never a reason to refuse the handshake.
 * Does not verify the token: that is the caller's business. Returns up->status. */
int ws_http_check_upgrade(const ws_http_request *req, const ws_http_upgrade_config *cfg,
                          ws_http_upgrade *up);

/* Whether origin (an Origin header's value) is one of cfg->origins (ASCII case-insensitive;
 * "*" allows any). */
bool ws_http_origin_allowed(const ws_http_upgrade_config *cfg, ws_http_str origin);

/* The token of the request's "Authorization: Bearer <token>" into *token (n = 0 when there is
 * no Authorization header or it has another scheme). Returns 0, -1 when there is more than
 * one Authorization header, -2 when the Bearer token is not token68. */
int ws_http_bearer(const ws_http_request *req, ws_http_str *token);

/* Finds name=value in a query string (application/x-www-form-urlencoded: '&' separated, '+'
 * is a space, %XX escapes) and decodes the first value for name into out (cap bytes),
 * NUL-terminated. Names are compared as sent, undecoded. Returns the decoded length (>= 0),
 * -1 when name is absent, -2 when the value is malformed (bad escape, %00) or does not fit
 * with its NUL. */
int ws_http_query_param(const char *query, size_t qlen, const char *name, char *out, size_t cap);

/* Writes the answer to an upgrade verdict into out (cap bytes; WS_HTTP_RESPONSE_MAX is
 * enough): for 101 the switching-protocols head (Upgrade, Connection, Sec-WebSocket-Accept,
 * Sec-WebSocket-Protocol when one was selected, Sec-WebSocket-Extensions (ws_pmd_response)
 * when up->deflate); otherwise ws_http_write_error with
 * up->status and up->reason. Returns the length written (no NUL counted), or -1 when cap
 * is too small (nothing usable written). */
int ws_http_write_response(char *out, size_t cap, const ws_http_upgrade *up);

/* Writes an error answer: status line, Content-Type text/plain, Content-Length,
 * Connection: close, plus Sec-WebSocket-Version: 13 for 426 and Allow: GET for 405, and
 * body (a short line of text, a newline appended; NULL: the status text). Meant for
 * 400/403/404/405/426/431/500/503; the connection is to be closed after it. Returns the
 * length written, or -1 when cap is too small. */
int ws_http_write_error(char *out, size_t cap, int status, const char *body);

#endif
