/* fuzz_ws_http.c - libFuzzer target for common/ws/ws_http.c.
 *
 * Byte 0 picks the limits and an output capacity; the rest is a request head (and whatever
 * follows it). Oracles: the parser's result is one of its documented values; a complete head
 * lies inside the input, every field points into it, the same head alone parses to the same
 * length and any shorter prefix of it is PARTIAL; the verdict is one of the documented
 * statuses and its answer fits WS_HTTP_RESPONSE_MAX; a 101 carries a 24-character key and
 * the accept header; query decoding stays inside its buffer and NUL-terminates. Bit 5 of
 * byte 0 turns permessage-deflate on: an accepted offer's answer is in the 101, and only
 * then.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined tests/fuzz/fuzz_ws_http.c \
 *   common/ws/ws_http.c -o fuzz_ws_http $(pkg-config --libs libcrypto) */
#include "ws/ws_http.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ASSERT(c)                                                                                  \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

static const ws_http_limits limits[4] = {
    {WS_HTTP_DEFAULT_MAX_HEAD, WS_HTTP_DEFAULT_MAX_LINE, WS_HTTP_MAX_HEADERS},
    {256, 64, 4},
    {100000, 100000, 1000}, /* clamped to 64 headers */
    {64, 1000, 64},
};

static void in_buf(ws_http_str s, const char *buf, size_t len)
{
    if (s.n == 0) return;
    ASSERT(s.p >= buf && s.p + s.n <= buf + len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const origins[] = {"http://localhost:8080", "*"};
    if (size < 1) return 0;
    const ws_http_limits *lim = &limits[data[0] & 3];
    const ws_http_upgrade_config cfg = {"/ws",
                                        origins,
                                        (data[0] & 4) ? 2 : 1,
                                        (data[0] & 8) ? NULL : "sidecast.v1",
                                        (data[0] & 16) != 0,
                                        (data[0] & 32) != 0};
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;
    ws_http_request req;

    int rc = ws_http_parse_request(buf, len, lim, &req);
    ASSERT(rc == SC_EINCOMPLETE || rc == SC_EMALFORMED || rc == SC_ETOOLARGE || rc > 0);
    if (rc <= 0) return 0;

    size_t head = (size_t)rc;
    size_t max_headers = lim->max_headers < WS_HTTP_MAX_HEADERS ? lim->max_headers
                                                                : WS_HTTP_MAX_HEADERS;
    ASSERT(head <= len && head <= lim->max_head);
    ASSERT(req.nheaders <= max_headers);
    ASSERT(req.method.n > 0 && req.target.n > 0);
    ASSERT(req.minor_version >= 0 && req.minor_version <= 9);
    in_buf(req.method, buf, head);
    in_buf(req.target, buf, head);
    in_buf(req.path, buf, head);
    in_buf(req.query, buf, head);
    ASSERT(req.path.n + (req.query.p ? req.query.n + 1 : 0) == req.target.n);
    for (size_t i = 0; i < req.nheaders; i++) {
        ASSERT(req.headers[i].name.n > 0);
        in_buf(req.headers[i].name, buf, head);
        in_buf(req.headers[i].value, buf, head);
    }

    /* the head alone parses the same; every shorter prefix tried is partial */
    ws_http_request req2;
    ASSERT(ws_http_parse_request(buf, head, lim, &req2) == rc);
    ASSERT(req2.nheaders == req.nheaders);
    ASSERT(ws_http_parse_request(buf, head - 1, lim, &req2) == SC_EINCOMPLETE);
    ASSERT(ws_http_parse_request(buf, head / 2, lim, &req2) == SC_EINCOMPLETE);

    ws_http_upgrade up;
    int st = ws_http_check_upgrade(&req, &cfg, &up);
    ASSERT(st == up.status && up.reason != NULL);
    ASSERT(st == 101 || st == 400 || st == 403 || st == 404 || st == 405 || st == 426);
    char out[WS_HTTP_RESPONSE_MAX];
    int n = ws_http_write_response(out, sizeof out, &up);
    ASSERT(n > 0 && (size_t)n < sizeof out && out[n] == '\0');
    if (st == 101) {
        ASSERT(up.key.n == 24);
        in_buf(up.key, buf, head);
        ASSERT(strstr(out, "\r\nSec-WebSocket-Accept: ") != NULL);
        ASSERT((up.protocol != NULL) == (strstr(out, "Sec-WebSocket-Protocol") != NULL));
        ASSERT(up.deflate == (strstr(out, "Sec-WebSocket-Extensions: permessage-deflate") != NULL));
        ASSERT(!up.deflate || cfg.deflate);
        in_buf(up.bearer, buf, head);
        in_buf(up.origin, buf, head);
    }

    /* query decoding into a buffer of a size chosen by the input */
    size_t cap = (size_t)(data[0] >> 5) * 9;
    char *dec = malloc(cap ? cap : 1);
    int q = ws_http_query_param(req.query.p, req.query.n, "access_token", dec, cap);
    ASSERT(q == -1 || q == -2 || (q >= 0 && (size_t)q < cap && dec[q] == '\0'));
    if (q >= 0) ASSERT(memchr(dec, '\0', (size_t)q) == NULL);
    free(dec);
    return 0;
}
