/* ws_http.c - HTTP/1.1 request head parser (RFC 9112 §2-§5 subset a WebSocket client needs),
 * upgrade checks (RFC 6455 §4.2.1), handshake answers (§4.2.2). */
#include "ws_http.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* tchar (RFC 9110 §5.6.2): the characters of a method or header name. */
static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
    switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~': return true;
    default: return false;
    }
}

/* field-vchar / SP / HTAB (RFC 9110 §5.5), obs-text included. */
static bool is_value_char(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7F); }

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

static bool str_eq(ws_http_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && memcmp(s.p, lit, n) == 0;
}

static bool str_ieq(ws_http_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && strncasecmp(s.p, lit, n) == 0;
}

/* Finds the end of the line starting at pos. Returns 1 with the line's content [pos, *end)
 * and *next past its end, 0 when no line end is in buf yet, -1 on a CR not before LF. */
static int next_line(const char *buf, size_t len, size_t pos, size_t *end, size_t *next)
{
    const char *nl = memchr(buf + pos, '\n', len - pos);
    if (!nl) return 0;
    size_t e = (size_t)(nl - buf);
    *next = e + 1;
    if (e > pos && buf[e - 1] == '\r') e--;
    *end = e;
    return 1;
}

static int parse_request_line(const char *s, size_t n, ws_http_request *req)
{
    size_t i = 0, start;

    while (i < n && is_tchar((unsigned char)s[i])) i++;
    if (i == 0 || i >= n || s[i] != ' ') return SC_EMALFORMED;
    req->method = (ws_http_str){s, i};
    start = ++i;
    while (i < n && (unsigned char)s[i] > 0x20 && (unsigned char)s[i] < 0x7F) i++;
    if (i == start || i >= n || s[i] != ' ') return SC_EMALFORMED;
    req->target = (ws_http_str){s + start, i - start};
    i++;
    if (n - i != 8 || memcmp(s + i, "HTTP/1.", 7) != 0 || s[i + 7] < '0' || s[i + 7] > '9')
        return SC_EMALFORMED;
    req->minor_version = s[i + 7] - '0';

    const char *q = memchr(req->target.p, '?', req->target.n);
    if (q) {
        req->path = (ws_http_str){req->target.p, (size_t)(q - req->target.p)};
        req->query = (ws_http_str){q + 1, req->target.n - req->path.n - 1};
    } else {
        req->path = req->target;
        req->query = (ws_http_str){NULL, 0};
    }
    return 0;
}

static int parse_header_line(const char *s, size_t n, ws_http_header *h)
{
    size_t i = 0, vs, ve;

    while (i < n && is_tchar((unsigned char)s[i])) i++;
    if (i == 0 || i >= n || s[i] != ':') /* also: obs-fold, space before ':' */
        return SC_EMALFORMED;
    h->name = (ws_http_str){s, i};
    vs = i + 1;
    while (vs < n && is_ows(s[vs])) vs++;
    ve = n;
    while (ve > vs && is_ows(s[ve - 1])) ve--;
    for (size_t k = vs; k < ve; k++)
        if (!is_value_char((unsigned char)s[k])) return SC_EMALFORMED;
    h->value = (ws_http_str){s + vs, ve - vs};
    return 0;
}

int ws_http_parse_request(const char *buf, size_t len, const ws_http_limits *lim,
                          ws_http_request *req)
{
    ws_http_limits L = {WS_HTTP_DEFAULT_MAX_HEAD, WS_HTTP_DEFAULT_MAX_LINE, WS_HTTP_MAX_HEADERS};
    size_t pos = 0, end, next;
    int rc;

    if (lim) L = *lim;
    if (L.max_headers > WS_HTTP_MAX_HEADERS) L.max_headers = WS_HTTP_MAX_HEADERS;
    if (L.max_head > INT_MAX) L.max_head = INT_MAX; /* the length is returned as an int */

    /* Empty lines before the request line. */
    for (;;) {
        if (pos >= L.max_head) return SC_ETOOLARGE;
        if (pos == len) return SC_EINCOMPLETE;
        if (buf[pos] == '\n') {
            pos++;
        } else if (buf[pos] == '\r') {
            if (pos + 1 == len) return SC_EINCOMPLETE;
            if (buf[pos + 1] != '\n') return SC_EMALFORMED;
            pos += 2;
        } else {
            break;
        }
    }

    req->nheaders = 0;
    bool first = true;
    for (;;) {
        rc = next_line(buf, len, pos, &end, &next);
        if (rc == 0) {
            /* + 1: the line's CR may be here without its LF */
            if (len - pos > L.max_line + 1 || len >= L.max_head) return SC_ETOOLARGE;
            return SC_EINCOMPLETE;
        }
        if (end - pos > L.max_line || next > L.max_head) return SC_ETOOLARGE;
        if (memchr(buf + pos, '\r', end - pos)) return SC_EMALFORMED; /* a CR not ending the line */
        if (first) {
            if (parse_request_line(buf + pos, end - pos, req) < 0) return SC_EMALFORMED;
            first = false;
        } else if (end == pos) {
            return (int)next; /* the empty line: head complete */
        } else {
            if (req->nheaders == L.max_headers) return SC_ETOOLARGE;
            if (parse_header_line(buf + pos, end - pos, &req->headers[req->nheaders]) < 0)
                return SC_EMALFORMED;
            req->nheaders++;
        }
        pos = next;
    }
}

const ws_http_str *ws_http_header_get(const ws_http_request *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (str_ieq(req->headers[i].name, name)) return &req->headers[i].value;
    return NULL;
}

/* Number of headers named name; *first gets the first one's value. */
static size_t header_count(const ws_http_request *req, const char *name, ws_http_str *first)
{
    size_t count = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (!str_ieq(req->headers[i].name, name)) continue;
        if (count++ == 0 && first) *first = req->headers[i].value;
    }
    return count;
}

/* True when a comma-separated token list in any header named name has tok (elements trimmed
 * of spaces; compared ASCII case-insensitively or exactly). *any: some element was seen. */
static bool list_has(const ws_http_request *req, const char *name, const char *tok, bool icase,
                     bool *any)
{
    size_t tn = strlen(tok);
    bool found = false;

    for (size_t i = 0; i < req->nheaders; i++) {
        if (!str_ieq(req->headers[i].name, name)) continue;
        const char *p = req->headers[i].value.p, *e = p + req->headers[i].value.n;
        while (p < e) {
            const char *c = memchr(p, ',', (size_t)(e - p));
            const char *s = p, *t = c ? c : e;
            while (s < t && is_ows(*s)) s++;
            while (t > s && is_ows(t[-1])) t--;
            if (t > s) {
                if (any) *any = true;
                size_t n = (size_t)(t - s);
                if (n == tn && (icase ? strncasecmp(s, tok, n) == 0 : memcmp(s, tok, n) == 0))
                    found = true;
            }
            p = c ? c + 1 : e;
        }
    }
    return found;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Sec-WebSocket-Key: base64 of 16 bytes is 22 characters and "==" (RFC 6455 §4.1). */
static bool key_valid(ws_http_str k)
{
    if (k.n != 24 || k.p[22] != '=' || k.p[23] != '=') return false;
    for (size_t i = 0; i < 22; i++)
        if (b64_value((unsigned char)k.p[i]) < 0) return false;
    return true;
}

/* token68 (RFC 9110 §11.2): ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/", then "="s.
 * A bearer token is several hundred characters on every handshake: one table lookup each. */
static bool token68_char(unsigned char c)
{
    static const uint64_t set[4] = {
        /* 0x00-0x3f: + - . / 0-9 */
        (1ull << '+') | (1ull << '-') | (1ull << '.') | (1ull << '/') | (0x3ffull << '0'),
        /* 0x40-0x7f: A-Z _ a-z ~ */
        (0x3ffffffull << ('A' - 64)) | (1ull << ('_' - 64)) | (0x3ffffffull << ('a' - 64)) |
            (1ull << ('~' - 64)),
        0, 0};
    return (set[c >> 6] >> (c & 63)) & 1;
}

static bool token68_valid(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && token68_char((unsigned char)p[i])) i++;
    if (i == 0) return false;
    while (i < n && p[i] == '=') i++;
    return i == n;
}

static int verdict(ws_http_upgrade *up, int status, const char *reason)
{
    up->status = status;
    up->reason = reason;
    return status;
}

bool ws_http_origin_allowed(const ws_http_upgrade_config *cfg, ws_http_str origin)
{
    for (size_t i = 0; i < cfg->norigins; i++)
        if (strcmp(cfg->origins[i], "*") == 0 || str_ieq(origin, cfg->origins[i])) return true;
    return false;
}

int ws_http_bearer(const ws_http_request *req, ws_http_str *token)
{
    ws_http_str v = {0};
    *token = (ws_http_str){0};
    size_t nauth = header_count(req, "Authorization", &v);
    if (nauth > 1) return -1;
    if (nauth == 1 && v.n >= 6 && strncasecmp(v.p, "Bearer", 6) == 0 &&
        (v.n == 6 || is_ows(v.p[6]))) {
        size_t i = 6;
        while (i < v.n && v.p[i] == ' ') i++;
        if (!token68_valid(v.p + i, v.n - i)) return -2;
        *token = (ws_http_str){v.p + i, v.n - i};
    }
    return 0;
}

int ws_http_check_upgrade(const ws_http_request *req, const ws_http_upgrade_config *cfg,
                          ws_http_upgrade *up)
{
    ws_http_str v = {NULL, 0};

    memset(up, 0, sizeof *up);
    up->query = req->query;
    if (!str_eq(req->path, cfg->path)) return verdict(up, 404, "not found");
    if (!str_eq(req->method, "GET")) return verdict(up, 405, "method not allowed");
    if (req->minor_version != 1) return verdict(up, 400, "HTTP/1.1 required");
    if (header_count(req, "Host", &v) != 1 || v.n == 0)
        return verdict(up, 400, "one Host header required");
    if (!list_has(req, "Upgrade", "websocket", true, NULL))
        return verdict(up, 400, "not a WebSocket upgrade (Upgrade: websocket)");
    if (!list_has(req, "Connection", "upgrade", true, NULL))
        return verdict(up, 400, "not a WebSocket upgrade (Connection: Upgrade)");
    if (header_count(req, "Sec-WebSocket-Version", &v) != 1 || !str_eq(v, "13"))
        return verdict(up, 426, "WebSocket version 13 required");
    if (header_count(req, "Sec-WebSocket-Key", &up->key) != 1 || !key_valid(up->key))
        return verdict(up, 400, "missing or invalid Sec-WebSocket-Key");

    size_t norigin = header_count(req, "Origin", &up->origin);
    if (norigin > 1) return verdict(up, 403, "origin not allowed");
    if (norigin == 1 && !ws_http_origin_allowed(cfg, up->origin))
        return verdict(up, 403, "origin not allowed");

    int brc = ws_http_bearer(req, &up->bearer);
    if (brc == -1) return verdict(up, 400, "more than one Authorization header");
    if (brc == -2) return verdict(up, 400, "malformed Bearer token");

    /* Subprotocol names are compared exactly (RFC 6455 §11.3.4). With none configured, an
     * offer is answered without a selection and the client decides (§4.2.2). */
    bool offered_any = false;
    bool offered = list_has(req, "Sec-WebSocket-Protocol", cfg->subprotocol ? cfg->subprotocol : "",
                            false, &offered_any);
    if (offered && cfg->subprotocol) {
        up->protocol = cfg->subprotocol;
    } else if (cfg->subprotocol && (offered_any || cfg->require_subprotocol)) {
        return verdict(up, 400, "subprotocol not offered");
    }
    if (cfg->deflate) {
        for (size_t i = 0; i < req->nheaders && !up->deflate; i++)
            if (str_ieq(req->headers[i].name, "Sec-WebSocket-Extensions"))
                up->deflate = ws_pmd_offer(req->headers[i].value.p, req->headers[i].value.n,
                                           &up->pmd) == 1;
    }
    return verdict(up, 101, "switching protocols");
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int ws_http_query_param(const char *query, size_t qlen, const char *name, char *out, size_t cap)
{
    size_t nn = strlen(name);
    const char *p = query, *e = query + qlen;

    while (p < e) {
        const char *amp = memchr(p, '&', (size_t)(e - p));
        const char *pe = amp ? amp : e;
        const char *eq = memchr(p, '=', (size_t)(pe - p));
        const char *ke = eq ? eq : pe;
        if ((size_t)(ke - p) == nn && memcmp(p, name, nn) == 0) {
            size_t o = 0;
            for (const char *s = eq ? eq + 1 : pe; s < pe; s++) {
                int c = (unsigned char)*s;
                if (c == '+') {
                    c = ' ';
                } else if (c == '%') {
                    int hi = pe - s > 2 ? hex_value((unsigned char)s[1]) : -1;
                    int lo = hi >= 0 ? hex_value((unsigned char)s[2]) : -1;
                    if (lo < 0 || (hi | lo) == 0) return -2;
                    c = hi << 4 | lo;
                    s += 2;
                }
                if (o + 1 >= cap) return -2;
                out[o++] = (char)c;
            }
            if (o >= cap) return -2;
            out[o] = '\0';
            return (int)o;
        }
        p = amp ? amp + 1 : e;
    }
    return -1;
}

static const char *status_text(int status)
{
    switch (status) {
    case 101: return "Switching Protocols";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

/* snprintf's result as this module's: the length, or -1 when it did not fit. */
static int fitted(int n, size_t cap) { return n >= 0 && (size_t)n < cap ? n : -1; }

int ws_http_write_error(char *out, size_t cap, int status, const char *body)
{
    const char *extra = status == 426   ? "Sec-WebSocket-Version: 13\r\n"
                        : status == 405 ? "Allow: GET\r\n"
                                        : "";
    if (!body) body = status_text(status);
    return fitted(snprintf(out, cap,
                           "HTTP/1.1 %d %s\r\n"
                           "Content-Type: text/plain; charset=utf-8\r\n"
                           "Content-Length: %zu\r\n"
                           "%s"
                           "Connection: close\r\n"
                           "\r\n"
                           "%s\n",
                           status, status_text(status), strlen(body) + 1, extra, body),
                  cap);
}

int ws_http_write_response(char *out, size_t cap, const ws_http_upgrade *up)
{
    char accept[WS_KEY_ACCEPT_LEN + 1], ext[WS_PMD_RESPONSE_MAX];

    if (up->status != 101) return ws_http_write_error(out, cap, up->status, up->reason);
    ws_key_accept(up->key.p, accept);
    if (!up->deflate || ws_pmd_response(ext, sizeof ext, &up->pmd) < 0) ext[0] = '\0';
    return fitted(snprintf(out, cap,
                           "HTTP/1.1 101 Switching Protocols\r\n"
                           "Upgrade: websocket\r\n"
                           "Connection: Upgrade\r\n"
                           "Sec-WebSocket-Accept: %s\r\n"
                           "%s%s%s"
                           "%s%s%s"
                           "\r\n",
                           accept, up->protocol ? "Sec-WebSocket-Protocol: " : "",
                           up->protocol ? up->protocol : "", up->protocol ? "\r\n" : "",
                           ext[0] ? "Sec-WebSocket-Extensions: " : "", ext, ext[0] ? "\r\n" : ""),
                  cap);
}
