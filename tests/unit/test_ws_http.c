/* test_ws_http.c - the opening handshake (common/ws/ws_http.c): request-head parsing
 * with its limits, upgrade checks (RFC 6455 §4.2.1), answers (§4.2.2), query parameters. */
#include "test.h"

#include "ws/ws_http.h"

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="

/* RFC 6455 §1.2, with sidecast.v1 among the offered protocols. */
static const char rfc_req[] = "GET /ws?access_token=abc HTTP/1.1\r\n"
                              "Host: server.example.com\r\n"
                              "Upgrade: websocket\r\n"
                              "Connection: Upgrade\r\n"
                              "Sec-WebSocket-Key: " KEY "\r\n"
                              "Origin: http://localhost:8080\r\n"
                              "Sec-WebSocket-Protocol: chat, sidecast.v1\r\n"
                              "Sec-WebSocket-Version: 13\r\n"
                              "\r\n";

static const char *const origins[] = {"http://localhost:8080", "http://127.0.0.1:8080"};
static const ws_http_upgrade_config cfg = {"/ws", origins, 2, "sidecast.v1", false};

static int parse(const char *s, ws_http_request *req)
{
    return ws_http_parse_request(s, strlen(s), NULL, req);
}

/* Parses a head built from a request line and header lines, then judges it. */
static int judge(const char *head, const ws_http_upgrade_config *c, ws_http_upgrade *up)
{
    static ws_http_request req;
    int rc = parse(head, &req);
    if (rc != (int)strlen(head)) return -1000 + rc;
    return ws_http_check_upgrade(&req, c, up);
}

#define BASE_HEADERS                                                                               \
    "Host: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
#define REQ(extra) "GET /ws HTTP/1.1\r\n" BASE_HEADERS "Sec-WebSocket-Key: " KEY "\r\n" extra "\r\n"

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int str_is(ws_http_str s, const char *lit)
{
    return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

TEST(http_parse_rfc_request)
{
    ws_http_request req;
    size_t n = strlen(rfc_req);
    CHECK_EQ_INT(parse(rfc_req, &req), n);
    CHECK(str_is(req.method, "GET"));
    CHECK(str_is(req.target, "/ws?access_token=abc"));
    CHECK(str_is(req.path, "/ws"));
    CHECK(str_is(req.query, "access_token=abc"));
    CHECK_EQ_INT(req.minor_version, 1);
    CHECK_EQ_INT(req.nheaders, 7);
    CHECK(str_is(req.headers[0].name, "Host"));
    CHECK(str_is(req.headers[0].value, "server.example.com"));
    const ws_http_str *v = ws_http_header_get(&req, "sec-websocket-key");
    REQUIRE(v != NULL);
    CHECK(str_is(*v, KEY));
    CHECK(ws_http_header_get(&req, "Cookie") == NULL);
    /* no copies: everything points into the buffer */
    CHECK(req.method.p == rfc_req);
    /* every prefix is partial */
    for (size_t k = 0; k < n; k++)
        CHECK_EQ_INT(ws_http_parse_request(rfc_req, k, NULL, &req), SC_EINCOMPLETE);
    /* bytes after the head (a client's first frame) are not part of it */
    char more[1024];
    snprintf(more, sizeof more, "%s\x81\x85\x37\xfa\x21\x3d", rfc_req);
    CHECK_EQ_INT(parse(more, &req), n);
}

TEST(http_parse_line_endings_and_spaces)
{
    ws_http_request req;
    const char *lf = "GET /ws HTTP/1.1\nHost: a\nX-Empty:\nX-Pad: \t v a l \t\n\n";
    CHECK_EQ_INT(parse(lf, &req), strlen(lf));
    CHECK_EQ_INT(req.nheaders, 3);
    CHECK_EQ_INT(req.headers[1].value.n, 0);
    CHECK(str_is(req.headers[2].value, "v a l"));
    const char *lead = "\r\n\nGET / HTTP/1.0\r\n\r\n";
    CHECK_EQ_INT(parse(lead, &req), strlen(lead));
    CHECK_EQ_INT(req.minor_version, 0);
    CHECK_EQ_INT(req.nheaders, 0);
    CHECK(str_is(req.path, "/"));
    CHECK_EQ_INT(req.query.n, 0);
    const char *q = "GET /ws? HTTP/1.1\r\n\r\n";
    CHECK_EQ_INT(parse(q, &req), strlen(q));
    CHECK(str_is(req.path, "/ws"));
    CHECK_EQ_INT(req.query.n, 0);
    CHECK_EQ_INT(ws_http_parse_request("\r", 1, NULL, &req), SC_EINCOMPLETE);
    CHECK_EQ_INT(ws_http_parse_request("", 0, NULL, &req), SC_EINCOMPLETE);
}

TEST(http_parse_malformed)
{
    static const char *bad[] = {
        "GET\r\n\r\n",
        " GET / HTTP/1.1\r\n\r\n",
        "GET  / HTTP/1.1\r\n\r\n", /* two spaces */
        "GET / HTTP/1.1 \r\n\r\n",
        "GET / HTTP/2.0\r\n\r\n",
        "GET / HTTP/1.10\r\n\r\n",
        "GET / HTTP/1.x\r\n\r\n",
        "GET / http/1.1\r\n\r\n",
        "G(T / HTTP/1.1\r\n\r\n",      /* not a token */
        "GET /a\x01 HTTP/1.1\r\n\r\n", /* control in target */
        "GET /\x80 HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : h\r\n\r\n",   /* space before colon */
        "GET / HTTP/1.1\r\nHost\r\n\r\n",       /* no colon */
        "GET / HTTP/1.1\r\n: v\r\n\r\n",        /* empty name */
        "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", /* obs-fold */
        "GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n",
        "GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", /* bare CR */
        "GET / HTTP/1.1\r\nA: b\r\r\n\r\n",
        "\rGET / HTTP/1.1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ws_http_request req;
        int rc = parse(bad[i], &req);
        if (rc != SC_EMALFORMED) {
            char w[200];
            snprintf(w, sizeof w, "case %zu: %d, expected SC_EMALFORMED", i, rc);
            test__fail(__FILE__, __LINE__, w);
        }
    }
    /* NUL inside a header value */
    ws_http_request req;
    const char nul[] = "GET / HTTP/1.1\r\nA: b\0c\r\n\r\n";
    CHECK_EQ_INT(ws_http_parse_request(nul, sizeof nul - 1, NULL, &req), SC_EMALFORMED);
    /* a malformed request line fails before the head is complete */
    CHECK_EQ_INT(ws_http_parse_request("GET / HTTP/9.9\r\nHost", 20, NULL, &req), SC_EMALFORMED);
}

TEST(http_parse_limits)
{
    static char buf[20000];
    ws_http_request req;
    int n;

    /* 64 headers: fine; 65: too large */
    n = snprintf(buf, sizeof buf, "GET /ws HTTP/1.1\r\n");
    for (int i = 0; i < 64; i++)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "X-%d: %d\r\n", i, i);
    snprintf(buf + n, sizeof buf - (size_t)n, "\r\n");
    CHECK_EQ_INT(parse(buf, &req), n + 2);
    CHECK_EQ_INT(req.nheaders, 64);
    snprintf(buf + n, sizeof buf - (size_t)n, "X-64: 64\r\n\r\n");
    CHECK_EQ_INT(parse(buf, &req), SC_ETOOLARGE);

    /* a line over 4096 bytes, complete or not */
    n = snprintf(buf, sizeof buf, "GET /ws HTTP/1.1\r\nX: ");
    memset(buf + n, 'a', 4100);
    buf[n + 4100] = '\0';
    CHECK_EQ_INT(parse(buf, &req), SC_ETOOLARGE);
    strcpy(buf + n + 4100, "\r\n\r\n");
    CHECK_EQ_INT(parse(buf, &req), SC_ETOOLARGE);
    /* exactly 4096 is fine */
    n = snprintf(buf, sizeof buf, "GET /ws HTTP/1.1\r\nX: ");
    memset(buf + n, 'a', 4096 - 3);
    strcpy(buf + n + 4096 - 3, "\r\n\r\n");
    CHECK_EQ_INT(parse(buf, &req), (int)strlen(buf));

    /* a head over 8192 bytes in lines that are each fine */
    n = snprintf(buf, sizeof buf, "GET /ws HTTP/1.1\r\n");
    for (int i = 0; n < 8300; i++)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "X-%d: %0100d\r\n", i, 0);
    CHECK_EQ_INT(parse(buf, &req), SC_ETOOLARGE);
    strcpy(buf + n, "\r\n");
    CHECK_EQ_INT(parse(buf, &req), SC_ETOOLARGE);
    /* endless empty lines before the request line */
    memset(buf, '\n', 9000);
    CHECK_EQ_INT(ws_http_parse_request(buf, 9000, NULL, &req), SC_ETOOLARGE);

    /* caller's limits */
    ws_http_limits lim = {64, 30, 1};
    CHECK_EQ_INT(ws_http_parse_request("GET / HTTP/1.1\r\nA: b\r\n\r\n", 24, &lim, &req), 24);
    CHECK_EQ_INT(ws_http_parse_request("GET / HTTP/1.1\r\nA: b\r\nC: d\r\n\r\n", 30, &lim, &req),
                 SC_ETOOLARGE);
    CHECK_EQ_INT(ws_http_parse_request("GET /0123456789012345678901234 HTTP/1.1\r\n\r\n", 43, &lim,
                                       &req),
                 SC_ETOOLARGE);
    lim = (ws_http_limits){20, 100, 10};
    CHECK_EQ_INT(ws_http_parse_request("GET / HTTP/1.1\r\nA: b\r\n\r\n", 24, &lim, &req),
                 SC_ETOOLARGE);
}

/* RFC 6455 §1.3 / §4.2.2 example. */
TEST(http_accept_key_rfc)
{
    char out[WS_KEY_ACCEPT_LEN + 1];
    ws_key_accept(KEY, out);
    CHECK_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST(http_upgrade_ok_and_answer)
{
    ws_http_request req;
    ws_http_upgrade up;
    REQUIRE(parse(rfc_req, &req) > 0);
    CHECK_EQ_INT(ws_http_check_upgrade(&req, &cfg, &up), 101);
    CHECK_STR(up.protocol, "sidecast.v1");
    CHECK(str_is(up.key, KEY));
    CHECK(str_is(up.origin, "http://localhost:8080"));
    CHECK_EQ_INT(up.bearer.n, 0);
    CHECK(str_is(up.query, "access_token=abc"));

    char out[WS_HTTP_RESPONSE_MAX];
    int n = ws_http_write_response(out, sizeof out, &up);
    static const char want[] = "HTTP/1.1 101 Switching Protocols\r\n"
                               "Upgrade: websocket\r\n"
                               "Connection: Upgrade\r\n"
                               "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                               "Sec-WebSocket-Protocol: sidecast.v1\r\n"
                               "\r\n";
    CHECK_STR(out, want);
    CHECK_EQ_INT(n, strlen(out));
    CHECK_EQ_INT(ws_http_write_response(out, (size_t)n, &up), -1); /* no room for the NUL */
    CHECK_EQ_INT(ws_http_write_response(out, (size_t)n + 1, &up), n);
}

/* No Sec-WebSocket-Protocol at all (Autobahn, command-line tools): accepted, none selected. */
TEST(http_upgrade_subprotocol_rules)
{
    ws_http_upgrade up;
    char out[WS_HTTP_RESPONSE_MAX];
    CHECK_EQ_INT(judge(REQ(""), &cfg, &up), 101);
    CHECK(up.protocol == NULL);
    ws_http_write_response(out, sizeof out, &up);
    CHECK(strstr(out, "Sec-WebSocket-Protocol") == NULL);
    CHECK(strstr(out, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != NULL);

    CHECK_EQ_INT(judge(REQ("Sec-WebSocket-Protocol: sidecast.v1\r\n"), &cfg, &up), 101);
    CHECK_STR(up.protocol, "sidecast.v1");
    /* offered over several headers */
    CHECK_EQ_INT(judge(REQ("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: x, "
                           "sidecast.v1\r\n"),
                       &cfg, &up),
                 101);
    CHECK_STR(up.protocol, "sidecast.v1");
    /* offered, but not ours: 400 */
    CHECK_EQ_INT(judge(REQ("Sec-WebSocket-Protocol: chat, superchat\r\n"), &cfg, &up), 400);
    CHECK_EQ_INT(judge(REQ("Sec-WebSocket-Protocol: Sidecast.V1\r\n"), &cfg, &up), 400);
    /* an empty list is no offer */
    CHECK_EQ_INT(judge(REQ("Sec-WebSocket-Protocol: , \r\n"), &cfg, &up), 101);
    /* required */
    ws_http_upgrade_config strict = cfg;
    strict.require_subprotocol = true;
    CHECK_EQ_INT(judge(REQ(""), &strict, &up), 400);
    CHECK_EQ_INT(judge(REQ("Sec-WebSocket-Protocol: sidecast.v1\r\n"), &strict, &up), 101);
    /* none configured (an echo server): never selected, offers tolerated */
    ws_http_upgrade_config echo = {"/", NULL, 0, NULL, false};
    CHECK_EQ_INT(judge("GET / HTTP/1.1\r\n" BASE_HEADERS "Sec-WebSocket-Key: " KEY "\r\n"
                       "Sec-WebSocket-Protocol: chat\r\n\r\n",
                       &echo, &up),
                 101);
    CHECK(up.protocol == NULL);
}

TEST(http_upgrade_path_method_version)
{
    ws_http_upgrade up;
    char out[WS_HTTP_RESPONSE_MAX];
    CHECK_EQ_INT(judge("GET /other HTTP/1.1\r\n" BASE_HEADERS "\r\n", &cfg, &up), 404);
    CHECK_EQ_INT(judge("GET /ws/ HTTP/1.1\r\n" BASE_HEADERS "\r\n", &cfg, &up), 404);
    CHECK_EQ_INT(judge("GET /WS HTTP/1.1\r\n" BASE_HEADERS "\r\n", &cfg, &up), 404);
    CHECK_EQ_INT(judge("GET / HTTP/1.1\r\n" BASE_HEADERS "\r\n", &cfg, &up), 404);
    CHECK_EQ_INT(judge("POST /ws HTTP/1.1\r\n" BASE_HEADERS "Sec-WebSocket-Key: " KEY "\r\n\r\n",
                       &cfg, &up),
                 405);
    int n = ws_http_write_response(out, sizeof out, &up);
    CHECK(n > 0 && starts(out, "HTTP/1.1 405 Method Not Allowed\r\n"));
    CHECK(strstr(out, "\r\nAllow: GET\r\n") != NULL);
    CHECK_EQ_INT(judge("get /ws HTTP/1.1\r\n" BASE_HEADERS "\r\n", &cfg, &up), 405);
    CHECK_EQ_INT(judge("GET /ws HTTP/1.0\r\n" BASE_HEADERS "Sec-WebSocket-Key: " KEY "\r\n\r\n",
                       &cfg, &up),
                 400);
    CHECK_EQ_INT(judge("GET /ws?x=1 HTTP/1.1\r\n" BASE_HEADERS "Sec-WebSocket-Key: " KEY "\r\n\r\n",
                       &cfg, &up),
                 101);
}

TEST(http_upgrade_headers)
{
    ws_http_upgrade up;
    const char *key = "Sec-WebSocket-Key: " KEY "\r\n";
    char head[1024];
#define H(lines) (snprintf(head, sizeof head, "GET /ws HTTP/1.1\r\n%s%s\r\n", lines, key), head)
    CHECK_EQ_INT(judge(H("Host: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n"
                         "Sec-WebSocket-Version: 13\r\n"),
                       &cfg, &up),
                 101);
    CHECK_EQ_INT(judge(H("Host: h\r\nUpgrade: h2c, websocket\r\nConnection: upgrade\r\n"
                         "Sec-WebSocket-Version: 13\r\n"),
                       &cfg, &up),
                 101);
    CHECK_EQ_INT(judge(H("Host: h\r\nConnection: keep-alive\r\nConnection: Upgrade\r\n"
                         "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"),
                       &cfg, &up),
                 101);
    /* Host: none, empty, twice */
    CHECK_EQ_INT(judge(H("Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Version: 13\r\n"),
                       &cfg, &up),
                 400);
    CHECK_EQ_INT(judge(H("Host:\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Version: 13\r\n"),
                       &cfg, &up),
                 400);
    CHECK_EQ_INT(judge(H("Host: a\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Version: 13\r\n"),
                       &cfg, &up),
                 400);
    /* Upgrade / Connection */
    CHECK_EQ_INT(judge(H("Host: h\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"), &cfg,
                       &up),
                 400);
    CHECK_EQ_INT(judge(H("Host: h\r\nUpgrade: websockets\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Version: 13\r\n"),
                       &cfg, &up),
                 400);
    CHECK_EQ_INT(judge(H("Host: h\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"), &cfg,
                       &up),
                 400);
    CHECK_EQ_INT(judge(H("Host: h\r\nUpgrade: websocket\r\nConnection: close\r\n"
                         "Sec-WebSocket-Version: 13\r\n"),
                       &cfg, &up),
                 400);
#undef H
}

TEST(http_upgrade_version_426)
{
    ws_http_upgrade up;
    char out[WS_HTTP_RESPONSE_MAX];
    static const char *bad[] = {
        "Sec-WebSocket-Version: 8\r\n",
        "Sec-WebSocket-Version: 13, 8\r\n",
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n",
        "",
        "Sec-WebSocket-Version: 013\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char head[512];
        snprintf(head, sizeof head,
                 "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: " KEY "\r\n%s\r\n",
                 bad[i]);
        CHECK_EQ_INT(judge(head, &cfg, &up), 426);
    }
    int n = ws_http_write_response(out, sizeof out, &up);
    CHECK(n > 0);
    CHECK(starts(out, "HTTP/1.1 426 Upgrade Required\r\n"));
    CHECK(strstr(out, "\r\nSec-WebSocket-Version: 13\r\n") != NULL);
    CHECK(strstr(out, "\r\nConnection: close\r\n") != NULL);
}

TEST(http_upgrade_key_400)
{
    ws_http_upgrade up;
    char out[WS_HTTP_RESPONSE_MAX];
    static const char *bad[] = {
        "",
        "Sec-WebSocket-Key: \r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=\r\n",   /* 23 chars */
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ===\r\n", /* 25 chars */
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQAA\r\n",  /* 18 bytes' worth */
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZ*==\r\n",  /* not base64 */
        "Sec-WebSocket-Key: dGhlIHNhbXBs ZSBub25jZQ==\r\n",
        "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Key: " KEY "\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char head[512];
        snprintf(head, sizeof head, "GET /ws HTTP/1.1\r\n" BASE_HEADERS "%s\r\n", bad[i]);
        int rc = judge(head, &cfg, &up);
        if (rc != 400) {
            char w[100];
            snprintf(w, sizeof w, "case %zu: %d, expected 400", i, rc);
            test__fail(__FILE__, __LINE__, w);
        }
    }
    int n = ws_http_write_response(out, sizeof out, &up);
    CHECK(n > 0 && starts(out, "HTTP/1.1 400 Bad Request\r\n"));
    /* the body is the reason and the length says so */
    const char *body = strstr(out, "\r\n\r\n");
    REQUIRE(body != NULL);
    body += 4;
    char cl[64];
    snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", strlen(body));
    CHECK(strstr(out, cl) != NULL);
    CHECK(strstr(body, "Sec-WebSocket-Key") != NULL);
}

TEST(http_upgrade_origin_403)
{
    ws_http_upgrade up;
    char out[WS_HTTP_RESPONSE_MAX];
    CHECK_EQ_INT(judge(REQ("Origin: http://127.0.0.1:8080\r\n"), &cfg, &up), 101);
    CHECK_EQ_INT(judge(REQ("Origin: HTTP://LOCALHOST:8080\r\n"), &cfg, &up), 101);
    CHECK_EQ_INT(judge(REQ("Origin: http://evil.example\r\n"), &cfg, &up), 403);
    ws_http_write_response(out, sizeof out, &up);
    CHECK(starts(out, "HTTP/1.1 403 Forbidden\r\n"));
    CHECK_EQ_INT(judge(REQ("Origin: http://localhost:8081\r\n"), &cfg, &up), 403);
    CHECK_EQ_INT(judge(REQ("Origin: http://localhost:8080.evil\r\n"), &cfg, &up), 403);
    CHECK_EQ_INT(judge(REQ("Origin: null\r\n"), &cfg, &up), 403);
    CHECK_EQ_INT(judge(REQ("Origin: http://localhost:8080\r\nOrigin: http://evil\r\n"), &cfg, &up),
                 403);
    /* no Origin: not a browser, allowed */
    CHECK_EQ_INT(judge(REQ(""), &cfg, &up), 101);
    CHECK_EQ_INT(up.origin.n, 0);
    /* "*" allows any; an empty list none */
    static const char *const any[] = {"*"};
    ws_http_upgrade_config c = cfg;
    c.origins = any;
    c.norigins = 1;
    CHECK_EQ_INT(judge(REQ("Origin: http://evil.example\r\n"), &c, &up), 101);
    c.norigins = 0;
    CHECK_EQ_INT(judge(REQ("Origin: http://localhost:8080\r\n"), &c, &up), 403);
}

TEST(http_upgrade_bearer)
{
    ws_http_upgrade up;
    CHECK_EQ_INT(judge(REQ("Authorization: Bearer eyJhbGciOi.eyJzdWIi-_~+/.c2ln==\r\n"), &cfg, &up),
                 101);
    CHECK(str_is(up.bearer, "eyJhbGciOi.eyJzdWIi-_~+/.c2ln=="));
    CHECK_EQ_INT(judge(REQ("Authorization: bearer   abc\r\n"), &cfg, &up), 101);
    CHECK(str_is(up.bearer, "abc"));
    CHECK_EQ_INT(judge(REQ("Authorization: Basic YWxpY2U6eA==\r\n"), &cfg, &up), 101);
    CHECK_EQ_INT(up.bearer.n, 0);
    CHECK_EQ_INT(judge(REQ("Authorization: BearerX abc\r\n"), &cfg, &up), 101);
    CHECK_EQ_INT(up.bearer.n, 0);
    CHECK_EQ_INT(judge(REQ("Authorization: Bearer\r\n"), &cfg, &up), 400);
    CHECK_EQ_INT(judge(REQ("Authorization: Bearer a b\r\n"), &cfg, &up), 400);
    CHECK_EQ_INT(judge(REQ("Authorization: Bearer a=b\r\n"), &cfg, &up), 400);
    CHECK_EQ_INT(judge(REQ("Authorization: Bearer a\r\nAuthorization: Bearer b\r\n"), &cfg, &up),
                 400);
}

TEST(http_query_param)
{
    char out[64];
    const char *q = "x=1&access_token=abc.def&y";
    CHECK_EQ_INT(ws_http_query_param(q, strlen(q), "access_token", out, sizeof out), 7);
    CHECK_STR(out, "abc.def");
    CHECK_EQ_INT(ws_http_query_param(q, strlen(q), "y", out, sizeof out), 0);
    CHECK_STR(out, "");
    CHECK_EQ_INT(ws_http_query_param(q, strlen(q), "z", out, sizeof out), -1);
    CHECK_EQ_INT(ws_http_query_param(q, strlen(q), "access", out, sizeof out), -1);
    CHECK_EQ_INT(ws_http_query_param(NULL, 0, "x", out, sizeof out), -1);
    q = "xaccess_token=1&access_token=2&access_token=3";
    CHECK_EQ_INT(ws_http_query_param(q, strlen(q), "access_token", out, sizeof out), 1);
    CHECK_STR(out, "2");
    q = "access_token=a%2Bb%2fc+d%7E";
    CHECK_EQ_INT(ws_http_query_param(q, strlen(q), "access_token", out, sizeof out), 8);
    CHECK_STR(out, "a+b/c d~");
    q = "access_token=";
    CHECK_EQ_INT(ws_http_query_param(q, strlen(q), "access_token", out, sizeof out), 0);
    static const char *bad[] = {"t=%", "t=%4", "t=%4g", "t=%G1", "t=a%00b", "t=ab%2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ_INT(ws_http_query_param(bad[i], strlen(bad[i]), "t", out, sizeof out), -2);
    /* the value and its NUL must fit */
    q = "t=abcd";
    CHECK_EQ_INT(ws_http_query_param(q, strlen(q), "t", out, 4), -2);
    CHECK_EQ_INT(ws_http_query_param(q, strlen(q), "t", out, 0), -2);
    CHECK_EQ_INT(ws_http_query_param(q, strlen(q), "t", out, 5), 4);
    CHECK_STR(out, "abcd");
    CHECK_EQ_INT(ws_http_query_param("t=", 2, "t", out, 0), -2);
    CHECK_EQ_INT(ws_http_query_param("t=", 2, "t", out, 1), 0);
    /* the query a request carries, through the verdict */
    ws_http_upgrade up;
    CHECK_EQ_INT(judge("GET /ws?access_token=eyJ%2E1 HTTP/1.1\r\n" BASE_HEADERS
                       "Sec-WebSocket-Key: " KEY "\r\n\r\n",
                       &cfg, &up),
                 101);
    CHECK_EQ_INT(ws_http_query_param(up.query.p, up.query.n, "access_token", out, sizeof out), 5);
    CHECK_STR(out, "eyJ.1");
}

TEST(http_write_error)
{
    char out[WS_HTTP_RESPONSE_MAX];
    int n = ws_http_write_error(out, sizeof out, 431, NULL);
    static const char want[] = "HTTP/1.1 431 Request Header Fields Too Large\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n"
                               "Content-Length: 32\r\n"
                               "Connection: close\r\n"
                               "\r\n"
                               "Request Header Fields Too Large\n";
    CHECK_STR(out, want);
    CHECK_EQ_INT(n, strlen(out));
    n = ws_http_write_error(out, sizeof out, 404, "not found");
    CHECK(n > 0 && strstr(out, "Content-Length: 10\r\n") && strstr(out, "\r\n\r\nnot found\n"));
    CHECK_EQ_INT(ws_http_write_error(out, 20, 404, "not found"), -1);
    n = ws_http_write_error(out, sizeof out, 503, "draining");
    CHECK(n > 0 && starts(out, "HTTP/1.1 503 Service Unavailable\r\n"));
}

TEST_MAIN()
