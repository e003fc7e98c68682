/* http.h - a tiny blocking HTTP/1.1 client for the gateway: one request per connection
 * (Connection: close), every wait under one deadline, every buffer bounded.
 *
 * Also the response-head parser the WebSocket handshake shares. Prefix http_. */
#ifndef SIDECAST_HTTP_H
#define SIDECAST_HTTP_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "net.h"

#define HTTP_HEAD_MAX 16384 /* bytes of a response head */
#define HTTP_MAX_HEADERS 48
#define HTTP_BODY_MAX (256 * 1024)

typedef struct http_head {
    int status;
    size_t nheaders;
    struct {
        const char *name, *value; /* point into the caller's buffer; not NUL-terminated */
        size_t name_len, value_len;
    } h[HTTP_MAX_HEADERS];
} http_head;

/* Parses a response head at buf[0..len) (status line, headers, empty line; CRLF or LF).
 * Returns the head's length (> 0), SC_EINCOMPLETE, SC_EMALFORMED, or SC_ETOOLARGE (over
 * HTTP_HEAD_MAX / HTTP_MAX_HEADERS). Pure. */
int http_head_parse(const char *buf, size_t len, http_head *h);

/* The first value of header name (case-insensitive), with *len, or NULL. */
const char *http_head_get(const http_head *h, const char *name, size_t *len);

/* The response reader http_request runs after each read, pure so that it can be fuzzed
 * (tests/fuzz/fuzz_http.c): Content-Length, chunked (strictly parsed) or up to the close,
 * every size bounded by HTTP_HEAD_MAX / HTTP_BODY_MAX. */
typedef struct http_reader {
    http_head h;
    int hlen;       /* the head's length, 0 until it is complete */
    long long clen; /* Content-Length, -1 when absent */
    int chunked;
    int head_request; /* a HEAD request: no body follows */
} http_reader;

void http_reader_init(http_reader *rd, int head_request);
/* buf[0..len): everything read so far; eof: the peer closed. Returns 0 when the response is
 * complete, SC_EINCOMPLETE when more is needed, -EPROTO (malformed or cut short) or
 * -EMSGSIZE. */
int http_reader_step(http_reader *rd, const char *buf, size_t len, int eof);
/* After step returned 0: the body (dechunked) moved to buf[0..*body_len) and NUL-terminated
 * (buf must hold len + 1 bytes). 0, or -EPROTO. */
int http_reader_body(const http_reader *rd, char *buf, size_t len, size_t *body_len);

typedef struct http_response {
    int status;
    char *body; /* malloc'd, NUL-terminated (body_len bytes before it); owned */
    size_t body_len;
} http_response;

/* Sends method path to the server of base_url (http://host:port or https://...), with body
 * (may be NULL) of content_type, and "Authorization: Bearer <bearer>" when bearer is not
 * NULL. https goes through tls (see net_conn_open; NULL refuses https with -EINVAL). Waits
 * at most timeout_ms for the whole exchange. Returns 0 with *resp filled (any status), or a
 * negative errno: -ECONNREFUSED/-EHOSTUNREACH/... (unreachable), -ETIMEDOUT, -EINTR (a
 * signal), NET_ETLS_VERIFY / NET_ETLS (TLS refused: the reason in tls->error), -EPROTO (not
 * an HTTP answer), -EMSGSIZE (answer over the bounds), -EINVAL (bad URL). Release resp with
 * http_response_clear. */
int http_request(const char *base_url, const char *method, const char *path,
                 const char *content_type, const char *body, size_t body_len, const char *bearer,
                 int timeout_ms, net_tls *tls, http_response *resp);

/* Frees what resp owns; accepts NULL. */
void http_response_clear(http_response *resp);

/* Appends s percent-encoded for application/x-www-form-urlencoded to out (cap bytes,
 * NUL-terminated). Returns 0, or -1 when it does not fit. */
int http_form_append(char *out, size_t cap, const char *name, const char *value);

#endif
