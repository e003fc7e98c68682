/* test_ws_deflate.c - permessage-deflate (common/ws/ws_deflate.c): offers parsed
 * strictly per RFC 7692 §5/§7 (good, bad, duplicated parameters), the answer, the 101 with
 * it (ws_http), one-message compression, the inflate bound (zip bombs), and RSV1 in the
 * reader (ws_reader with deflate negotiated or not). */
#include "test.h"

#include "ws/ws_deflate.h"
#include "ws/ws_http.h"
#include "ws/ws_reader.h"

#include <zlib.h>

static int offer(const char *s, ws_pmd *pm)
{
    memset(pm, 0xAA, sizeof *pm);
    return ws_pmd_offer(s, strlen(s), pm);
}

TEST(pmd_offer_plain)
{
    ws_pmd pm;
    CHECK_EQ_INT(offer("permessage-deflate", &pm), 1);
    CHECK_EQ_INT(pm.server_max_window_bits, 0);
    CHECK_EQ_INT(offer("  permessage-deflate  ", &pm), 1);
    CHECK_EQ_INT(offer("Permessage-Deflate", &pm), 1); /* tokens: ASCII case-insensitive */
    CHECK_EQ_INT(offer("permessage-deflate;client_max_window_bits", &pm), 1);
    CHECK_EQ_INT(offer("permessage-deflate; client_max_window_bits; server_no_context_takeover;"
                       " client_no_context_takeover; server_max_window_bits=10",
                       &pm),
                 1);
    CHECK_EQ_INT(pm.server_max_window_bits, 10);
    CHECK_EQ_INT(offer("permessage-deflate; server_max_window_bits=\"15\"", &pm), 1);
    CHECK_EQ_INT(pm.server_max_window_bits, 15);
    CHECK_EQ_INT(offer("permessage-deflate; server_max_window_bits = 8", &pm), 1);
    CHECK_EQ_INT(pm.server_max_window_bits, 8);
    CHECK_EQ_INT(offer("permessage-deflate; client_max_window_bits=9", &pm), 1);
    CHECK_EQ_INT(pm.server_max_window_bits, 0);
    CHECK_EQ_INT(offer("permessage-deflate; client_max_window_bits=\"\\1\\2\"", &pm), 1);
}

TEST(pmd_offer_declined)
{
    static const char *const bad[] = {
        "",
        ",,",
        "x-webkit-deflate-frame",
        "permessage-deflate-x",
        "permessage-deflate; foo", /* unknown parameter */
        "permessage-deflate; foo=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover", /* dup */
        "permessage-deflate; client_no_context_takeover; Client_No_Context_Takeover",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; server_no_context_takeover=1", /* no value allowed */
        "permessage-deflate; client_no_context_takeover=\"\"",
        "permessage-deflate; server_max_window_bits",   /* value required */
        "permessage-deflate; server_max_window_bits=7", /* 8..15 */
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=08", /* no leading zero */
        "permessage-deflate; server_max_window_bits=1a",
        "permessage-deflate; server_max_window_bits=\"10", /* unterminated quote */
        "permessage-deflate; server_max_window_bits=\"1 0\"",
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; client_max_window_bits=\"100\"",
        "permessage-deflate;", /* empty parameter */
        "permessage-deflate; ;client_max_window_bits",
        "permessage-deflate client_max_window_bits", /* broken syntax */
        "permessage-deflate; =10",
        "\"permessage-deflate\"",
        "permessage-deflate; server_max_window_bits=\"1111111111111111111111111\"",
    };
    ws_pmd pm;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (offer(bad[i], &pm) != 0) printf("  accepted: %s\n", bad[i]);
        CHECK_EQ_INT(offer(bad[i], &pm), 0);
    }
}

TEST(pmd_offer_first_acceptable)
{
    ws_pmd pm;
    /* declined offers are skipped, the next acceptable one wins (§5) */
    CHECK_EQ_INT(offer("permessage-deflate; foo, permessage-deflate; server_max_window_bits=12",
                       &pm),
                 1);
    CHECK_EQ_INT(pm.server_max_window_bits, 12);
    CHECK_EQ_INT(offer("x-webkit-deflate-frame; no_context_takeover, permessage-deflate", &pm), 1);
    CHECK_EQ_INT(pm.server_max_window_bits, 0);
    CHECK_EQ_INT(offer("permessage-deflate; server_max_window_bits=9, permessage-deflate", &pm), 1);
    CHECK_EQ_INT(pm.server_max_window_bits, 9);
    /* a comma inside a quoted value does not end the offer */
    CHECK_EQ_INT(offer("foo; a=\"x,permessage-deflate\", permessage-deflate; "
                       "server_max_window_bits=11",
                       &pm),
                 1);
    CHECK_EQ_INT(pm.server_max_window_bits, 11);
    CHECK_EQ_INT(offer("permessage-deflate; server_max_window_bits=7, permessage-deflate; x", &pm),
                 0);
    CHECK_EQ_INT(offer("permessage-deflate client, permessage-deflate", &pm), 1);
}

TEST(pmd_response)
{
    char out[WS_PMD_RESPONSE_MAX];
    ws_pmd pm = {0};
    CHECK_EQ_INT(ws_pmd_response(out, sizeof out, &pm) > 0, 1);
    CHECK_STR(out, "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    pm.server_max_window_bits = 9;
    CHECK_EQ_INT(ws_pmd_response(out, sizeof out, &pm) > 0, 1);
    CHECK_STR(out, "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                   "server_max_window_bits=9");
    CHECK_EQ_INT(ws_pmd_response(out, 20, &pm), -1);
    CHECK(ws_pmd_fits_window(&pm, 512));
    CHECK(!ws_pmd_fits_window(&pm, 513));
    pm.server_max_window_bits = 0;
    CHECK(ws_pmd_fits_window(&pm, (size_t)1 << 30));
}

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define HEAD                                                                                       \
    "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"                 \
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " KEY "\r\n"

static int upgrade(const char *head, bool deflate, ws_http_upgrade *up, char *out, size_t cap)
{
    static ws_http_request req;
    ws_http_upgrade_config cfg = {"/ws", NULL, 0, NULL, false, deflate};
    if (ws_http_parse_request(head, strlen(head), NULL, &req) != (int)strlen(head)) return -1;
    int st = ws_http_check_upgrade(&req, &cfg, up);
    if (ws_http_write_response(out, cap, up) < 0) return -2;
    return st;
}

TEST(pmd_http_upgrade)
{
    ws_http_upgrade up;
    char out[WS_HTTP_RESPONSE_MAX];

    CHECK_EQ_INT(upgrade(HEAD "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n", true, &up,
                         out, sizeof out),
                 101);
    CHECK(up.deflate);
    CHECK(strstr(out, "\r\nSec-WebSocket-Extensions: permessage-deflate; "
                      "server_no_context_takeover; client_no_context_takeover\r\n") != NULL);
    /* off: no answer, the offer is ignored */
    CHECK_EQ_INT(upgrade(HEAD "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n", false, &up,
                         out, sizeof out),
                 101);
    CHECK(!up.deflate);
    CHECK(strstr(out, "Sec-WebSocket-Extensions") == NULL);
    /* a bad offer is declined, the handshake goes on without the extension */
    CHECK_EQ_INT(upgrade(HEAD "Sec-WebSocket-Extensions: permessage-deflate; bogus\r\n\r\n", true,
                         &up, out, sizeof out),
                 101);
    CHECK(!up.deflate);
    CHECK(strstr(out, "Sec-WebSocket-Extensions") == NULL);
    /* offers over several headers: the first acceptable one, with its window bits */
    CHECK_EQ_INT(upgrade(HEAD "Sec-WebSocket-Extensions: permessage-deflate; x=1\r\n"
                              "Sec-WebSocket-Extensions: foo, permessage-deflate; "
                              "server_max_window_bits=10; client_max_window_bits\r\n\r\n",
                         true, &up, out, sizeof out),
                 101);
    CHECK(up.deflate);
    CHECK_EQ_INT(up.pmd.server_max_window_bits, 10);
    CHECK(strstr(out, "client_no_context_takeover; server_max_window_bits=10\r\n") != NULL);
    CHECK(strstr(out, "client_max_window_bits") == NULL);
    /* the longest answer fits, with a subprotocol too */
    static ws_http_request req;
    const char *h = HEAD
        "Sec-WebSocket-Protocol: sidecast.v1\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=15\r\n"
        "\r\n";
    ws_http_upgrade_config cfg = {"/ws", NULL, 0, "sidecast.v1", true, true};
    REQUIRE(ws_http_parse_request(h, strlen(h), NULL, &req) == (int)strlen(h));
    CHECK_EQ_INT(ws_http_check_upgrade(&req, &cfg, &up), 101);
    CHECK(ws_http_write_response(out, sizeof out, &up) > 0);
    CHECK(strstr(out, "Sec-WebSocket-Protocol: sidecast.v1\r\n") != NULL);
    CHECK(strstr(out, "server_max_window_bits=15\r\n\r\n") != NULL);
}

/* Inflates with zlib as a peer would (raw, tail appended). */
static size_t peer_inflate(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, -15) != Z_OK) return (size_t)-1;
    uint8_t tmp[4096 + 4];
    size_t total = 0;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    for (size_t off = 0; off < n + 4;) {
        size_t k = n + 4 - off > 4096 ? 4096 : n + 4 - off;
        for (size_t i = 0; i < k; i++)
            tmp[i] = off + i < n ? in[off + i] : (uint8_t[]){0, 0, 0xff, 0xff}[off + i - n];
        z.next_in = tmp;
        z.avail_in = (uInt)k;
        int rc = inflate(&z, Z_SYNC_FLUSH);
        if (rc != Z_OK && rc != Z_BUF_ERROR && rc != Z_STREAM_END) {
            inflateEnd(&z);
            return (size_t)-1;
        }
        off += k;
    }
    total = cap - z.avail_out;
    inflateEnd(&z);
    return total;
}

TEST(pmd_compress_roundtrip)
{
    z_stream zd, zi;
    REQUIRE(ws_pmd_deflate_init(&zd) == 0);
    REQUIRE(ws_pmd_inflate_init(&zi) == 0);
    const char *ev = "{\"type\":\"event\",\"topic\":\"prices.BTC\",\"seq\":123456,\"data\":"
                     "{\"symbol\":\"BTC\",\"price\":\"64012.55\",\"bid\":\"64012.50\","
                     "\"ask\":\"64012.60\",\"ts\":1764380000123}}";
    size_t n = strlen(ev);
    uint8_t z[1024], back[1024];
    long zn = ws_pmd_compress(&zd, (const uint8_t *)ev, n, z, n + 3);
    REQUIRE(zn > 0 && (size_t)zn < n);
    CHECK_EQ_INT(peer_inflate(z, (size_t)zn, back, sizeof back), n);
    CHECK(memcmp(back, ev, n) == 0);
    /* the same message again gives the same bytes: no context carried over */
    uint8_t z2[1024];
    CHECK_EQ_INT(ws_pmd_compress(&zd, (const uint8_t *)ev, n, z2, n + 3), zn);
    CHECK(memcmp(z, z2, (size_t)zn) == 0);
    /* and our own inflater */
    uint8_t *buf = NULL;
    size_t cap = 0, len = 0;
    CHECK_EQ_INT(ws_pmd_inflate(&zi, z, (size_t)zn, 65536, &buf, &cap, &len), 0);
    CHECK_EQ_INT(len, n);
    CHECK(buf && memcmp(buf, ev, n) == 0);
    /* incompressible: does not fit in n + 3 */
    uint8_t noise[256];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof noise; i++) {
        x = x * 1103515245 + 12345;
        noise[i] = (uint8_t)(x >> 16);
    }
    CHECK_EQ_INT(ws_pmd_compress(&zd, noise, sizeof noise, z, sizeof noise + 3), -1);
    /* empty message: never smaller */
    CHECK_EQ_INT(ws_pmd_compress(&zd, noise, 0, z, 3), -1);
    free(buf);
    deflateEnd(&zd);
    inflateEnd(&zi);
}

/* Compresses n bytes of c with zlib (a zip bomb when n is large) into a malloc'd block. */
static uint8_t *bomb(size_t n, size_t *zn)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    deflateInit2(&z, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    size_t cap = n / 500 + 1024;
    uint8_t *out = malloc(cap), chunk[65536];
    memset(chunk, 'A', sizeof chunk);
    z.next_out = out;
    z.avail_out = (uInt)cap;
    for (size_t left = n; left > 0;) {
        size_t k = left < sizeof chunk ? left : sizeof chunk;
        z.next_in = chunk;
        z.avail_in = (uInt)k;
        deflate(&z, Z_NO_FLUSH);
        left -= k;
    }
    z.avail_in = 0;
    deflate(&z, Z_SYNC_FLUSH);
    *zn = cap - z.avail_out - 4;
    deflateEnd(&z);
    return out;
}

TEST(pmd_inflate_bound)
{
    z_stream zi;
    REQUIRE(ws_pmd_inflate_init(&zi) == 0);
    size_t zn;
    uint8_t *b = bomb((size_t)64 << 20, &zn); /* 64 MiB of 'A' in ~64 KiB */
    REQUIRE(zn < ((size_t)1 << 20));
    uint8_t *buf = NULL;
    size_t cap = 0, len = 0;
    /* over the bound: refused, and the buffer never grew past max + 1 */
    CHECK_EQ_INT(ws_pmd_inflate(&zi, b, zn, 65536, &buf, &cap, &len), WS_PMD_TOO_BIG);
    CHECK(cap <= 65537);
    free(b);
    /* exactly at the bound: accepted; one byte more: refused */
    b = bomb(65536, &zn);
    CHECK_EQ_INT(ws_pmd_inflate(&zi, b, zn, 65536, &buf, &cap, &len), 0);
    CHECK_EQ_INT(len, 65536);
    CHECK(buf[0] == 'A' && buf[65535] == 'A');
    CHECK_EQ_INT(ws_pmd_inflate(&zi, b, zn, 65535, &buf, &cap, &len), WS_PMD_TOO_BIG);
    free(b);
    /* max 0: only the empty message */
    b = bomb(1, &zn);
    CHECK_EQ_INT(ws_pmd_inflate(&zi, b, zn, 0, &buf, &cap, &len), WS_PMD_TOO_BIG);
    free(b);
    free(buf);
    inflateEnd(&zi);
}

TEST(pmd_inflate_corrupt)
{
    z_stream zi;
    REQUIRE(ws_pmd_inflate_init(&zi) == 0);
    uint8_t *buf = NULL;
    size_t cap = 0, len = 0;
    static const uint8_t bad_type[] = {0xff, 0xff, 0xff}; /* BTYPE 11: reserved */
    CHECK_EQ_INT(ws_pmd_inflate(&zi, bad_type, sizeof bad_type, 1000, &buf, &cap, &len),
                 WS_PMD_CORRUPT);
    /* a back-reference inside the message: literal 'a', then length 3 at distance 1 (a
     * fixed Huffman block) is "aaaa" */
    static const uint8_t within[] = {0x4b, 0x04, 0x02, 0x00};
    CHECK_EQ_INT(ws_pmd_inflate(&zi, within, sizeof within, 1000, &buf, &cap, &len), 0);
    CHECK(len == 4 && memcmp(buf, "aaaa", 4) == 0);
    /* the same match with nothing before it in the message, right after one that had its
     * bytes (what context takeover by the client would look like): corrupt, since we
     * promised no context (each message starts with an empty window) */
    static const uint8_t before[] = {0x03, 0x02, 0x00};
    CHECK_EQ_INT(ws_pmd_inflate(&zi, before, sizeof before, 1000, &buf, &cap, &len),
                 WS_PMD_CORRUPT);
    /* the stream goes on working after an error (reset per message) */
    uint8_t z[64];
    z_stream zd;
    REQUIRE(ws_pmd_deflate_init(&zd) == 0);
    long zn = ws_pmd_compress(&zd, (const uint8_t *)"hello hello hello hello", 23, z, sizeof z);
    REQUIRE(zn > 0);
    CHECK_EQ_INT(ws_pmd_inflate(&zi, z, (size_t)zn, 1000, &buf, &cap, &len), 0);
    CHECK_EQ_INT(len, 23);
    /* a final block (BFINAL) is accepted, as RFC 7692 §7.2.3.4 allows */
    CHECK_EQ_INT(ws_pmd_inflate(&zi, (const uint8_t *)"\x03\x00", 2, 1000, &buf, &cap, &len), 0);
    CHECK_EQ_INT(len, 0);
    free(buf);
    deflateEnd(&zd);
    inflateEnd(&zi);
}

/* One masked frame (mask 0: payload as is). */
static size_t frame(uint8_t *out, uint8_t b0, const uint8_t *p, size_t n)
{
    out[0] = b0;
    out[1] = (uint8_t)(0x80 | n);
    memset(out + 2, 0, 4);
    memcpy(out + 6, p, n);
    return 6 + n;
}

TEST(pmd_reader_rsv1)
{
    ws_reader r;
    ws_event ev;
    uint8_t buf[256], msg[256];
    ws_reader_config on = {true, 256, true}, off = {true, 256, false};
    static const uint8_t z[] = {0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}; /* "Hello" */

    /* negotiated: RSV1 on the first frame marks a compressed message; no UTF-8 check yet */
    ws_reader_init(&r, &on, msg, sizeof msg);
    size_t n = frame(buf, 0x80 | 0x40 | WS_OP_TEXT, z, sizeof z);
    CHECK_EQ_INT(ws_reader_feed(&r, buf, n, &ev), n);
    CHECK_EQ_INT(ev.type, WS_EV_TEXT);
    CHECK(ev.compressed);
    CHECK_EQ_INT(ev.len, sizeof z);
    /* without RSV1: a plain message */
    n = frame(buf, 0x80 | WS_OP_TEXT, (const uint8_t *)"hi", 2);
    CHECK_EQ_INT(ws_reader_feed(&r, buf, n, &ev), n);
    CHECK_EQ_INT(ev.type, WS_EV_TEXT);
    CHECK(!ev.compressed);
    /* fragmented: RSV1 on the first frame only, the message is compressed */
    n = frame(buf, 0x40 | WS_OP_BINARY, z, 3);
    n += frame(buf + n, 0x80 | WS_OP_CONT, z + 3, sizeof z - 3);
    CHECK_EQ_INT(ws_reader_feed(&r, buf, n, &ev), n);
    CHECK_EQ_INT(ev.type, WS_EV_BINARY);
    CHECK(ev.compressed);
    CHECK_EQ_INT(ev.len, sizeof z);
    /* RSV1 on a continuation frame: 1002 */
    n = frame(buf, 0x40 | WS_OP_BINARY, z, 3);
    n += frame(buf + n, 0x80 | 0x40 | WS_OP_CONT, z + 3, sizeof z - 3);
    ws_reader_feed(&r, buf, n, &ev);
    CHECK_EQ_INT(ev.type, WS_EV_ERROR);
    CHECK_EQ_INT(ev.code, 1002);
    /* RSV1 on a control frame: 1002 */
    ws_reader_init(&r, &on, msg, sizeof msg);
    n = frame(buf, 0x80 | 0x40 | WS_OP_PING, z, 2);
    ws_reader_feed(&r, buf, n, &ev);
    CHECK_EQ_INT(ev.type, WS_EV_ERROR);
    CHECK_EQ_INT(ev.code, 1002);
    /* RSV2 / RSV3 stay errors */
    ws_reader_init(&r, &on, msg, sizeof msg);
    n = frame(buf, 0x80 | 0x20 | WS_OP_TEXT, z, 2);
    ws_reader_feed(&r, buf, n, &ev);
    CHECK_EQ_INT(ev.type, WS_EV_ERROR);
    CHECK_EQ_INT(ev.code, 1002);
    /* not negotiated: RSV1 is 1002 as before */
    ws_reader_init(&r, &off, msg, sizeof msg);
    n = frame(buf, 0x80 | 0x40 | WS_OP_TEXT, z, sizeof z);
    ws_reader_feed(&r, buf, n, &ev);
    CHECK_EQ_INT(ev.type, WS_EV_ERROR);
    CHECK_EQ_INT(ev.code, 1002);
    CHECK_EQ_INT(ev.err, WS_ERR_RSV);
    /* the compressed size is bounded by max_message too (1009 on the header) */
    ws_reader_config tiny = {true, 4, true};
    ws_reader_init(&r, &tiny, msg, 4);
    n = frame(buf, 0x80 | 0x40 | WS_OP_TEXT, z, sizeof z);
    ws_reader_feed(&r, buf, n, &ev);
    CHECK_EQ_INT(ev.type, WS_EV_ERROR);
    CHECK_EQ_INT(ev.code, 1009);
}

TEST_MAIN()
