/* ws_frame.c - WebSocket frame header decoding and encoding, unmasking, close payloads
 * (RFC 6455 §5.2, §5.3, §5.5.1, §7.4). */
#include "ws_frame.h"

#include "utf8.h"

#include <string.h>

uint16_t ws_frame_err_code(ws_frame_err err)
{
    switch (err) {
    case WS_ERR_NONE: return WS_CLOSE_NORMAL;
    case WS_ERR_FRAME_SIZE:
    case WS_ERR_MSG_SIZE:
    case WS_ERR_INFLATE_SIZE: return WS_CLOSE_TOO_BIG;
    case WS_ERR_UTF8:
    case WS_ERR_CLOSE_UTF8:
    case WS_ERR_INFLATE: return WS_CLOSE_INVALID_DATA;
    default: return WS_CLOSE_PROTOCOL;
    }
}

const char *ws_frame_err_str(ws_frame_err err)
{
    switch (err) {
    case WS_ERR_NONE: return "ok";
    case WS_ERR_RSV: return "reserved bits set";
    case WS_ERR_OPCODE: return "reserved opcode";
    case WS_ERR_CTRL_FRAG: return "fragmented control frame";
    case WS_ERR_CTRL_LEN: return "control frame too long";
    case WS_ERR_UNMASKED: return "unmasked client frame";
    case WS_ERR_MASKED: return "masked server frame";
    case WS_ERR_LEN64: return "invalid 64-bit length";
    case WS_ERR_FRAME_SIZE: return "frame too big";
    case WS_ERR_CONT: return "continuation without a message";
    case WS_ERR_INTERLEAVE: return "data frame inside a fragmented message";
    case WS_ERR_MSG_SIZE: return "message too big";
    case WS_ERR_UTF8: return "invalid UTF-8 in text";
    case WS_ERR_CLOSE_LEN: return "close payload of 1 byte";
    case WS_ERR_CLOSE_CODE: return "invalid close code";
    case WS_ERR_CLOSE_UTF8: return "invalid UTF-8 in close reason";
    case WS_ERR_INFLATE: return "invalid compressed data";
    case WS_ERR_INFLATE_SIZE: return "message too big once inflated";
    }
    return "unknown error";
}

static int decode_fail(ws_frame_err *err, ws_frame_err why)
{
    *err = why;
    return SC_EMALFORMED;
}

int ws_frame_decode(const uint8_t *buf, size_t len, const ws_frame_rules *rules, ws_frame_header *h,
                    ws_frame_err *err)
{
    if (len < 1) return SC_EINCOMPLETE;

    uint8_t b0 = buf[0];
    uint8_t op = b0 & 0x0F, rsv = b0 & 0x70;
    bool fin = (b0 & 0x80) != 0, control = (op & 0x08) != 0;

    if ((op >= 0x3 && op <= 0x7) || op >= 0xB) return decode_fail(err, WS_ERR_OPCODE);
    /* An extension's bits belong to a message's first frame (RFC 7692 §6). */
    uint8_t rsv_ok = (op == WS_OP_TEXT || op == WS_OP_BINARY) ? rules->rsv_allowed : 0;
    if (rsv & ~rsv_ok) return decode_fail(err, WS_ERR_RSV);
    if (control && !fin) return decode_fail(err, WS_ERR_CTRL_FRAG);
    if (len < 2) return SC_EINCOMPLETE;

    uint8_t b1 = buf[1], len7 = b1 & 0x7F;
    bool masked = (b1 & 0x80) != 0;
    if (rules->from_client && !masked) return decode_fail(err, WS_ERR_UNMASKED);
    if (!rules->from_client && masked) return decode_fail(err, WS_ERR_MASKED);
    if (control && len7 > WS_FRAME_CTRL_MAX) return decode_fail(err, WS_ERR_CTRL_LEN);

    size_t extlen = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    size_t hlen = 2 + extlen + (masked ? 4 : 0);
    if (len7 == 127 && len >= 3 && (buf[2] & 0x80)) return decode_fail(err, WS_ERR_LEN64);
    if (len < 2 + extlen) return SC_EINCOMPLETE;

    uint64_t plen = len7;
    if (extlen) {
        plen = 0;
        for (size_t i = 0; i < extlen; i++) plen = (plen << 8) | buf[2 + i];
    }
    if (!control && plen > rules->max_payload) return decode_fail(err, WS_ERR_FRAME_SIZE);
    if (len < hlen) return SC_EINCOMPLETE;

    h->len = plen;
    h->opcode = op;
    h->rsv = rsv;
    h->fin = fin;
    h->masked = masked;
    if (masked)
        memcpy(h->mask, buf + 2 + extlen, 4);
    else
        memset(h->mask, 0, 4);
    return (int)hlen;
}

void ws_frame_unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset)
{
    uint8_t m[4];
    uint32_t m32;
    uint64_t m64, v;
    size_t i = 0;

    for (int k = 0; k < 4; k++) m[k] = mask[(offset + (uint64_t)k) & 3];
    memcpy(&m32, m, 4);
    m64 = ((uint64_t)m32 << 32) | m32; /* m[0..3] twice in memory order, either endianness */
    for (; n - i >= 32; i += 32) {
        for (int k = 0; k < 32; k += 8) {
            memcpy(&v, p + i + k, 8);
            v ^= m64;
            memcpy(p + i + k, &v, 8);
        }
    }
    for (; n - i >= 8; i += 8) {
        memcpy(&v, p + i, 8);
        v ^= m64;
        memcpy(p + i, &v, 8);
    }
    for (; i < n; i++) p[i] ^= m[i & 3];
}

size_t ws_frame_header_encode(uint8_t *out, uint8_t opcode, bool fin, uint8_t rsv, uint64_t len,
                              const uint8_t *mask)
{
    uint8_t mbit = mask ? 0x80 : 0;
    size_t n;

    out[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv & 0x70) | (opcode & 0x0F));
    if (len < 126) {
        out[1] = (uint8_t)(mbit | len);
        n = 2;
    } else if (len <= 0xFFFF) {
        out[1] = mbit | 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        n = 4;
    } else {
        out[1] = mbit | 127;
        for (int i = 0; i < 8; i++) out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
        n = 10;
    }
    if (mask) {
        memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

bool ws_frame_close_code_valid(uint16_t code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

size_t ws_frame_close_encode(uint8_t *out, uint16_t code, const char *reason, size_t reason_len)
{
    size_t r;

    if (code == 0) return 0;
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    r = reason_len ? utf8_truncate((const uint8_t *)reason, reason_len, WS_FRAME_CTRL_MAX - 2) : 0;
    if (r) memcpy(out + 2, reason, r);
    return 2 + r;
}

int ws_frame_close_parse(const uint8_t *p, size_t n, uint16_t *code, const uint8_t **reason,
                         size_t *reason_len, ws_frame_err *err)
{
    *reason = NULL;
    *reason_len = 0;
    if (n == 0) {
        *code = WS_CLOSE_NO_STATUS;
        return 0;
    }
    if (n == 1) return decode_fail(err, WS_ERR_CLOSE_LEN);
    *code = (uint16_t)(p[0] << 8 | p[1]);
    if (!ws_frame_close_code_valid(*code)) return decode_fail(err, WS_ERR_CLOSE_CODE);
    if (!utf8_valid(p + 2, n - 2)) return decode_fail(err, WS_ERR_CLOSE_UTF8);
    if (n > 2) {
        *reason = p + 2;
        *reason_len = n - 2;
    }
    return 0;
}
