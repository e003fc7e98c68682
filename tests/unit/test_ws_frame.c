/* test_ws_frame.c - frame headers, masking and close payloads (common/ws/ws_frame.c):
 * RFC 6455 §5.7 examples, every §5.2 rule, length boundaries, fail-fast on partial headers,
 * §7.4 close codes. */
#include "test.h"

#include "ws/ws_frame.h"

#include <stdint.h>

static const ws_frame_rules from_client = {true, 0, UINT64_MAX};
static const ws_frame_rules from_server = {false, 0, UINT64_MAX};

#define B(...) ((const uint8_t[]){__VA_ARGS__}), sizeof((const uint8_t[]){__VA_ARGS__})

/* Decodes buf; checks that every shorter prefix is PARTIAL (or the same error). */
static int decode_all_prefixes(const uint8_t *buf, size_t len, const ws_frame_rules *rules,
                               ws_frame_header *h, ws_frame_err *err)
{
    int rc = ws_frame_decode(buf, len, rules, h, err);
    for (size_t k = 0; k < len; k++) {
        ws_frame_header h2;
        ws_frame_err e2 = WS_ERR_NONE;
        int r2 = ws_frame_decode(buf, k, rules, &h2, &e2);
        if (rc > 0 && (size_t)rc > k) {
            CHECK_EQ_INT(r2, SC_EINCOMPLETE);
        } else if (rc == SC_EMALFORMED) {
            CHECK(r2 == SC_EINCOMPLETE || (r2 == SC_EMALFORMED && e2 == *err));
        }
    }
    return rc;
}

/* RFC 6455 §5.7: a single-frame unmasked text message. */
TEST(frame_rfc_unmasked_hello)
{
    const uint8_t f[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    ws_frame_header h;
    ws_frame_err err = WS_ERR_NONE;
    CHECK_EQ_INT(decode_all_prefixes(f, sizeof f, &from_server, &h, &err), 2);
    CHECK(h.fin);
    CHECK_EQ_INT(h.opcode, WS_OP_TEXT);
    CHECK_EQ_INT(h.len, 5);
    CHECK(!h.masked);
    CHECK_EQ_INT(h.rsv, 0);
    /* a server must refuse it: clients mask */
    CHECK_EQ_INT(ws_frame_decode(f, sizeof f, &from_client, &h, &err), SC_EMALFORMED);
    CHECK_EQ_INT(err, WS_ERR_UNMASKED);
    CHECK_EQ_INT(ws_frame_err_code(err), 1002);
}

/* RFC 6455 §5.7: a single-frame masked text message. */
TEST(frame_rfc_masked_hello)
{
    uint8_t f[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    ws_frame_header h;
    ws_frame_err err = WS_ERR_NONE;
    CHECK_EQ_INT(decode_all_prefixes(f, sizeof f, &from_client, &h, &err), 6);
    CHECK(h.masked);
    CHECK_EQ_INT(h.len, 5);
    CHECK(memcmp(h.mask, "\x37\xfa\x21\x3d", 4) == 0);
    ws_frame_unmask(f + 6, 5, h.mask, 0);
    CHECK(memcmp(f + 6, "Hello", 5) == 0);
    /* a client must refuse a masked frame from a server */
    CHECK_EQ_INT(ws_frame_decode(f, sizeof f, &from_server, &h, &err), SC_EMALFORMED);
    CHECK_EQ_INT(err, WS_ERR_MASKED);
}

/* RFC 6455 §5.7: fragmented unmasked text, ping, masked pong, 256 B and 64 KiB binary. */
TEST(frame_rfc_other_examples)
{
    ws_frame_header h;
    ws_frame_err err;
    CHECK_EQ_INT(ws_frame_decode(B(0x01, 0x03, 0x48, 0x65, 0x6c), &from_server, &h, &err), 2);
    CHECK(!h.fin);
    CHECK_EQ_INT(h.opcode, WS_OP_TEXT);
    CHECK_EQ_INT(ws_frame_decode(B(0x80, 0x02, 0x6c, 0x6f), &from_server, &h, &err), 2);
    CHECK(h.fin);
    CHECK_EQ_INT(h.opcode, WS_OP_CONT);
    CHECK_EQ_INT(ws_frame_decode(B(0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f), &from_server, &h,
                                 &err),
                 2);
    CHECK_EQ_INT(h.opcode, WS_OP_PING);
    uint8_t pong[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    CHECK_EQ_INT(ws_frame_decode(pong, sizeof pong, &from_client, &h, &err), 6);
    CHECK_EQ_INT(h.opcode, WS_OP_PONG);
    ws_frame_unmask(pong + 6, 5, h.mask, 0);
    CHECK(memcmp(pong + 6, "Hello", 5) == 0);
    CHECK_EQ_INT(decode_all_prefixes(B(0x82, 0x7E, 0x01, 0x00), &from_server, &h, &err), 4);
    CHECK_EQ_INT(h.len, 256);
    CHECK_EQ_INT(h.opcode, WS_OP_BINARY);
    CHECK_EQ_INT(decode_all_prefixes(B(0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0), &from_server, &h, &err),
                 10);
    CHECK_EQ_INT(h.len, 65536);
}

TEST(frame_rsv_bits)
{
    ws_frame_header h;
    ws_frame_err err;
    for (uint8_t rsv = 0x10; rsv <= 0x70; rsv += 0x10) {
        uint8_t f[] = {(uint8_t)(0x81 | rsv), 0x80, 1, 2, 3, 4};
        err = WS_ERR_NONE;
        CHECK_EQ_INT(ws_frame_decode(f, sizeof f, &from_client, &h, &err), SC_EMALFORMED);
        CHECK_EQ_INT(err, WS_ERR_RSV);
        CHECK_EQ_INT(ws_frame_decode(f, 1, &from_client, &h, &err), SC_EMALFORMED); /* fast */
    }
    /* an extension's RSV1: on TEXT/BINARY only */
    ws_frame_rules deflate = {true, 0x40, UINT64_MAX};
    CHECK_EQ_INT(ws_frame_decode(B(0xC1, 0x80, 1, 2, 3, 4), &deflate, &h, &err), 6);
    CHECK_EQ_INT(h.rsv, 0x40);
    CHECK_EQ_INT(ws_frame_decode(B(0xC2, 0x80, 1, 2, 3, 4), &deflate, &h, &err), 6);
    CHECK_EQ_INT(ws_frame_decode(B(0xC0, 0x80, 1, 2, 3, 4), &deflate, &h, &err), SC_EMALFORMED);
    CHECK_EQ_INT(ws_frame_decode(B(0xC9, 0x80, 1, 2, 3, 4), &deflate, &h, &err), SC_EMALFORMED);
    CHECK_EQ_INT(ws_frame_decode(B(0xA1, 0x80, 1, 2, 3, 4), &deflate, &h, &err), SC_EMALFORMED);
    CHECK_EQ_INT(err, WS_ERR_RSV);
}

TEST(frame_opcodes)
{
    ws_frame_header h;
    ws_frame_err err;
    for (int op = 0; op < 16; op++) {
        uint8_t f[] = {(uint8_t)(0x80 | op), 0x80, 1, 2, 3, 4};
        bool ok = op <= 2 || (op >= 8 && op <= 10);
        err = WS_ERR_NONE;
        int rc = ws_frame_decode(f, sizeof f, &from_client, &h, &err);
        CHECK_EQ_INT(rc, ok ? 6 : SC_EMALFORMED);
        if (!ok) {
            CHECK_EQ_INT(err, WS_ERR_OPCODE);
            CHECK_EQ_INT(ws_frame_err_code(err), 1002);
            CHECK_EQ_INT(ws_frame_decode(f, 1, &from_client, &h, &err), SC_EMALFORMED);
        } else {
            CHECK_EQ_INT(h.opcode, op);
        }
    }
}

TEST(frame_control_rules)
{
    ws_frame_header h;
    ws_frame_err err;
    for (int op = 8; op <= 10; op++) {
        /* FIN = 0: a fragmented control frame, refused at the first byte */
        err = WS_ERR_NONE;
        CHECK_EQ_INT(ws_frame_decode(B((uint8_t)op), &from_client, &h, &err), SC_EMALFORMED);
        CHECK_EQ_INT(err, WS_ERR_CTRL_FRAG);
        /* 125 bytes: fine; 126 (16-bit length) and 127 (64-bit): refused at the second byte */
        CHECK_EQ_INT(ws_frame_decode(B((uint8_t)(0x80 | op), 0xFD, 1, 2, 3, 4), &from_client, &h,
                                     &err),
                     6);
        CHECK_EQ_INT(h.len, 125);
        err = WS_ERR_NONE;
        CHECK_EQ_INT(ws_frame_decode(B((uint8_t)(0x80 | op), 0xFE), &from_client, &h, &err),
                     SC_EMALFORMED);
        CHECK_EQ_INT(err, WS_ERR_CTRL_LEN);
        CHECK_EQ_INT(ws_frame_decode(B((uint8_t)(0x80 | op), 0xFF), &from_client, &h, &err),
                     SC_EMALFORMED);
        CHECK_EQ_INT(err, WS_ERR_CTRL_LEN);
        CHECK_EQ_INT(ws_frame_err_code(err), 1002);
    }
}

TEST(frame_length_msb)
{
    ws_frame_header h;
    ws_frame_err err = WS_ERR_NONE;
    /* refused as soon as the first length byte is there */
    CHECK_EQ_INT(ws_frame_decode(B(0x82, 0xFF, 0x80), &from_client, &h, &err), SC_EMALFORMED);
    CHECK_EQ_INT(err, WS_ERR_LEN64);
    CHECK_EQ_INT(ws_frame_err_code(err), 1002);
    CHECK_EQ_INT(ws_frame_decode(B(0x82, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2,
                                   3, 4),
                                 &from_client, &h, &err),
                 SC_EMALFORMED);
    /* 2^63 - 1 is the largest legal length */
    CHECK_EQ_INT(ws_frame_decode(B(0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2,
                                   3, 4),
                                 &from_client, &h, &err),
                 14);
    CHECK(h.len == 0x7FFFFFFFFFFFFFFFull);
}

TEST(frame_max_payload)
{
    ws_frame_rules r = {true, 0, 1000};
    ws_frame_header h;
    ws_frame_err err = WS_ERR_NONE;
    CHECK_EQ_INT(ws_frame_decode(B(0x82, 0xFE, 0x03, 0xE8, 1, 2, 3, 4), &r, &h, &err), 8);
    CHECK_EQ_INT(h.len, 1000);
    /* 1001: refused once the length is known, before the mask */
    CHECK_EQ_INT(ws_frame_decode(B(0x82, 0xFE, 0x03, 0xE9), &r, &h, &err), SC_EMALFORMED);
    CHECK_EQ_INT(err, WS_ERR_FRAME_SIZE);
    CHECK_EQ_INT(ws_frame_err_code(err), 1009);
    CHECK_EQ_INT(ws_frame_decode(B(0x80, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0), &r, &h, &err),
                 SC_EMALFORMED);
    CHECK_EQ_INT(err, WS_ERR_FRAME_SIZE);
    /* control frames answer to their own 125, not to max_payload */
    ws_frame_rules tiny = {true, 0, 0};
    CHECK_EQ_INT(ws_frame_decode(B(0x89, 0xFD, 1, 2, 3, 4), &tiny, &h, &err), 6);
    CHECK_EQ_INT(ws_frame_decode(B(0x81, 0x80, 1, 2, 3, 4), &tiny, &h, &err), 6);
    CHECK_EQ_INT(ws_frame_decode(B(0x81, 0x81, 1, 2, 3, 4), &tiny, &h, &err), SC_EMALFORMED);
}

/* Non-minimal length encodings are a sender's error the decoder tolerates. */
TEST(frame_non_minimal_length_accepted)
{
    ws_frame_header h;
    ws_frame_err err;
    CHECK_EQ_INT(ws_frame_decode(B(0x82, 0x7E, 0x00, 0x05), &from_server, &h, &err), 4);
    CHECK_EQ_INT(h.len, 5);
    CHECK_EQ_INT(ws_frame_decode(B(0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0, 5), &from_server, &h, &err),
                 10);
    CHECK_EQ_INT(h.len, 5);
}

/* Length boundaries through the encoder and back, masked and not. */
TEST(frame_encode_decode_lengths)
{
    static const uint64_t lens[] = {
        0, 1, 125, 126, 127, 65535, 65536, 0xFFFFFFFFull, 0x7FFFFFFFFFFFFFFFull};
    static const size_t hlen[] = {2, 2, 2, 4, 4, 4, 10, 10, 10};
    const uint8_t key[4] = {9, 8, 7, 6};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        for (int m = 0; m < 2; m++) {
            uint8_t out[WS_FRAME_HEADER_MAX];
            ws_frame_header h;
            ws_frame_err err;
            size_t n = ws_frame_header_encode(out, WS_OP_BINARY, i % 2 == 0, 0, lens[i],
                                              m ? key : NULL);
            CHECK_EQ_INT(n, hlen[i] + (m ? 4 : 0));
            int rc = decode_all_prefixes(out, n, m ? &from_client : &from_server, &h, &err);
            CHECK_EQ_INT(rc, n);
            CHECK(h.len == lens[i]);
            CHECK_EQ_INT(h.fin, i % 2 == 0);
            CHECK_EQ_INT(h.opcode, WS_OP_BINARY);
            CHECK_EQ_INT(h.masked, m);
            if (m) CHECK(memcmp(h.mask, key, 4) == 0);
        }
    }
    uint8_t out[WS_FRAME_HEADER_MAX];
    CHECK_EQ_INT(ws_frame_header_encode(out, WS_OP_CLOSE, true, 0, 2, NULL), 2);
    CHECK_EQ_INT(out[0], 0x88);
    CHECK_EQ_INT(out[1], 0x02);
    CHECK_EQ_INT(ws_frame_header_encode(out, WS_OP_TEXT, false, 0x40, 126, NULL), 4);
    CHECK_EQ_INT(out[0], 0x41);
    CHECK_EQ_INT(out[1], 126);
    CHECK_EQ_INT(out[2], 0);
    CHECK_EQ_INT(out[3], 126);
}

static void naive_mask(uint8_t *p, size_t n, const uint8_t m[4], size_t off)
{
    for (size_t i = 0; i < n; i++) p[i] ^= m[(off + i) & 3];
}

/* Unmasking in pieces at any offset (and unaligned) equals unmasking at once. */
TEST(frame_unmask_pieces)
{
    const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
    uint8_t src[200], a[201], b[200];
    for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)(i * 131 + 7);
    for (size_t n = 0; n <= 100; n++) {
        for (size_t start = 0; start < 9; start++) {
            /* a piece at payload offset `start`, at an unaligned address */
            memcpy(a + 1, src, n);
            memcpy(b, src, n);
            ws_frame_unmask(a + 1, n, key, start);
            naive_mask(b, n, key, start);
            CHECK(memcmp(a + 1, b, n) == 0);
        }
        for (size_t cut = 0; cut <= n; cut += 3) {
            memcpy(a, src, n);
            memcpy(b, src, n);
            ws_frame_unmask(a, cut, key, 0);
            ws_frame_unmask(a + cut, n - cut, key, cut);
            naive_mask(b, n, key, 0);
            CHECK(memcmp(a, b, n) == 0);
        }
    }
    /* masking twice is the identity */
    memcpy(a, src, sizeof src);
    ws_frame_unmask(a, sizeof src, key, 5);
    ws_frame_unmask(a, sizeof src, key, 5);
    CHECK(memcmp(a, src, sizeof src) == 0);
}

/* RFC 6455 §7.4.1, §7.4.2 and the IANA registry, every 16-bit value. */
TEST(frame_close_code_validity)
{
    long bad = 0;
    for (uint32_t c = 0; c <= 0xFFFF; c++) {
        bool want = (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) ||
                    (c >= 3000 && c <= 4999);
        if (ws_frame_close_code_valid((uint16_t)c) != want) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(!ws_frame_close_code_valid(1004));
    CHECK(!ws_frame_close_code_valid(1005));
    CHECK(!ws_frame_close_code_valid(1006));
    CHECK(!ws_frame_close_code_valid(1015));
    CHECK(!ws_frame_close_code_valid(1016));
    CHECK(!ws_frame_close_code_valid(2999));
    CHECK(ws_frame_close_code_valid(1012));
    CHECK(ws_frame_close_code_valid(3000));
    CHECK(ws_frame_close_code_valid(4999));
    CHECK(!ws_frame_close_code_valid(5000));
}

TEST(frame_close_parse)
{
    uint16_t code = 0;
    const uint8_t *reason;
    size_t rlen;
    ws_frame_err err = WS_ERR_NONE;

    CHECK_EQ_INT(ws_frame_close_parse(NULL, 0, &code, &reason, &rlen, &err), 0);
    CHECK_EQ_INT(code, WS_CLOSE_NO_STATUS);
    CHECK(reason == NULL);
    CHECK_EQ_INT(rlen, 0);

    CHECK_EQ_INT(ws_frame_close_parse(B(0x03), &code, &reason, &rlen, &err), SC_EMALFORMED);
    CHECK_EQ_INT(err, WS_ERR_CLOSE_LEN);
    CHECK_EQ_INT(ws_frame_err_code(err), 1002);

    CHECK_EQ_INT(ws_frame_close_parse(B(0x03, 0xE8), &code, &reason, &rlen, &err), 0);
    CHECK_EQ_INT(code, 1000);
    CHECK_EQ_INT(rlen, 0);

    const uint8_t bye[] = {0x0F, 0xA0, 'b', 'y', 'e'};
    CHECK_EQ_INT(ws_frame_close_parse(bye, sizeof bye, &code, &reason, &rlen, &err), 0);
    CHECK_EQ_INT(code, 4000);
    REQUIRE(rlen == 3);
    CHECK(memcmp(reason, "bye", 3) == 0);

    static const uint16_t invalid[] = {0,    999,  1004, 1005, 1006, 1015,
                                       1016, 1100, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        uint8_t p[2] = {(uint8_t)(invalid[i] >> 8), (uint8_t)invalid[i]};
        err = WS_ERR_NONE;
        CHECK_EQ_INT(ws_frame_close_parse(p, 2, &code, &reason, &rlen, &err), SC_EMALFORMED);
        CHECK_EQ_INT(err, WS_ERR_CLOSE_CODE);
        CHECK_EQ_INT(ws_frame_err_code(err), 1002);
    }
    static const uint16_t valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                     1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999};
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        uint8_t p[2] = {(uint8_t)(valid[i] >> 8), (uint8_t)valid[i]};
        CHECK_EQ_INT(ws_frame_close_parse(p, 2, &code, &reason, &rlen, &err), 0);
        CHECK_EQ_INT(code, valid[i]);
    }

    /* Autobahn 7.5.1: a reason that is not UTF-8 */
    const uint8_t bad[] = {0x03, 0xE8, 0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc,
                           0xce, 0xb5, 0xed, 0xa0, 0x80, 0x65, 0x64, 0x69, 0x74, 0x65, 0x64};
    CHECK_EQ_INT(ws_frame_close_parse(bad, sizeof bad, &code, &reason, &rlen, &err), SC_EMALFORMED);
    CHECK_EQ_INT(err, WS_ERR_CLOSE_UTF8);
    CHECK_EQ_INT(ws_frame_err_code(err), 1007);
    /* the longest: code and 123 bytes */
    uint8_t big[125];
    big[0] = 0x03, big[1] = 0xE8;
    memset(big + 2, '*', 123);
    CHECK_EQ_INT(ws_frame_close_parse(big, sizeof big, &code, &reason, &rlen, &err), 0);
    CHECK_EQ_INT(rlen, 123);
}

TEST(frame_close_encode)
{
    uint8_t out[WS_FRAME_CTRL_MAX];
    CHECK_EQ_INT(ws_frame_close_encode(out, 0, "ignored", 7), 0);
    CHECK_EQ_INT(ws_frame_close_encode(out, 1001, NULL, 0), 2);
    CHECK_EQ_INT(out[0], 0x03);
    CHECK_EQ_INT(out[1], 0xE9);
    CHECK_EQ_INT(ws_frame_close_encode(out, 4008, "too slow", 8), 10);
    CHECK(memcmp(out, "\x0f\xa8too slow", 10) == 0);

    /* a long reason is cut at a character boundary within 123 bytes */
    char reason[200];
    for (int i = 0; i < 100; i++) memcpy(reason + 2 * i, "\xc3\xa9", 2); /* é */
    size_t n = ws_frame_close_encode(out, 1000, reason, 200);
    CHECK_EQ_INT(n, 2 + 122);
    uint16_t code;
    const uint8_t *r;
    size_t rlen;
    ws_frame_err err;
    CHECK_EQ_INT(ws_frame_close_parse(out, n, &code, &r, &rlen, &err), 0);
    memset(reason, 'x', sizeof reason);
    CHECK_EQ_INT(ws_frame_close_encode(out, 1000, reason, 200), 125);
}

TEST(frame_err_table)
{
    for (int e = WS_ERR_NONE; e <= WS_ERR_INFLATE_SIZE; e++) {
        uint16_t c = ws_frame_err_code((ws_frame_err)e);
        const char *s = ws_frame_err_str((ws_frame_err)e);
        CHECK(s != NULL && s[0] != '\0');
        CHECK(c == 1000 || c == 1002 || c == 1007 || c == 1009);
    }
    CHECK_EQ_INT(ws_frame_err_code(WS_ERR_UTF8), 1007);
    CHECK_EQ_INT(ws_frame_err_code(WS_ERR_MSG_SIZE), 1009);
    CHECK_EQ_INT(ws_frame_err_code(WS_ERR_CONT), 1002);
    CHECK_EQ_INT(ws_frame_err_code(WS_ERR_INTERLEAVE), 1002);
    CHECK_EQ_INT(ws_frame_err_code(WS_ERR_INFLATE), 1007);
    CHECK_EQ_INT(ws_frame_err_code(WS_ERR_INFLATE_SIZE), 1009);
}

TEST_MAIN()
