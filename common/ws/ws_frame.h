/* ws_frame.h - WebSocket frames (RFC 6455 §5): header decoder with every §5.2 rule checked,
 * payload unmasking (in pieces), header encoder, close-frame payloads (§5.5.1, §7.4).
 *
 * Pure functions: no I/O, no allocation, no global state. The decoder checks what a single
 * header can tell (RSV bits, opcodes, control frame rules, masking, length); what needs the
 * connection's history (continuation without a message, UTF-8 across fragments) is
 * ws_reader's job. Every failure is a ws_frame_err, which maps to the close code to send.
 * Prefix ws_frame_. */
#ifndef EDGE_WS_FRAME_H
#define EDGE_WS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

enum ws_opcode {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

/* Close codes (RFC 6455 §7.4.1, IANA registry). 1005 and 1006 are never sent: they stand
 * for "no code" and "no close frame" locally. Codes 4000-4999 belong to the application
 * (sidecast.v1's are in proto/msg.h); this library sends one only when its user asks. */
enum ws_close_code {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001, /* server draining */
    WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_UNSUPPORTED = 1003,
    WS_CLOSE_NO_STATUS = 1005,
    WS_CLOSE_ABNORMAL = 1006,
    WS_CLOSE_INVALID_DATA = 1007, /* invalid UTF-8 */
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_EXTENSION = 1010,
    WS_CLOSE_INTERNAL = 1011,
    WS_CLOSE_TRY_AGAIN = 1013, /* IANA: try again later */
};

/* Why a peer's frame or message was refused. ws_frame_err_code gives the close code. */
typedef enum ws_frame_err {
    WS_ERR_NONE = 0,
    WS_ERR_RSV,          /* 1002: RSV bit set that no extension negotiated */
    WS_ERR_OPCODE,       /* 1002: reserved opcode 3-7 or 11-15 */
    WS_ERR_CTRL_FRAG,    /* 1002: control frame with FIN = 0 */
    WS_ERR_CTRL_LEN,     /* 1002: control frame payload over 125 bytes */
    WS_ERR_UNMASKED,     /* 1002: client frame without a mask */
    WS_ERR_MASKED,       /* 1002: server frame with a mask */
    WS_ERR_LEN64,        /* 1002: 64-bit length with the most significant bit set */
    WS_ERR_FRAME_SIZE,   /* 1009: frame payload over the configured maximum */
    WS_ERR_CONT,         /* 1002: continuation frame with no message started */
    WS_ERR_INTERLEAVE,   /* 1002: new data frame while a fragmented message is in progress */
    WS_ERR_MSG_SIZE,     /* 1009: message over the configured maximum */
    WS_ERR_UTF8,         /* 1007: text message is not valid UTF-8 */
    WS_ERR_CLOSE_LEN,    /* 1002: close payload of 1 byte */
    WS_ERR_CLOSE_CODE,   /* 1002: close code not allowed on the wire */
    WS_ERR_CLOSE_UTF8,   /* 1007: close reason is not valid UTF-8 */
    WS_ERR_INFLATE,      /* 1007: compressed message is not valid deflate data (RFC 7692) */
    WS_ERR_INFLATE_SIZE, /* 1009: compressed message inflates past the configured maximum */
} ws_frame_err;

/* Close code to send for err (1002, 1007 or 1009; 1000 for WS_ERR_NONE). */
uint16_t ws_frame_err_code(ws_frame_err err);
/* Short static text for logs and close reasons ("reserved opcode"...); never NULL. */
const char *ws_frame_err_str(ws_frame_err err);

/* What the decoder checks a frame against. */
typedef struct ws_frame_rules {
    bool from_client;     /* true on a server: frames must be masked (§5.1); false on a
                           * client: frames must not be */
    uint8_t rsv_allowed;  /* RSV bits an extension negotiated, as in the header byte (0x40 =
                           * RSV1); allowed on TEXT/BINARY frames only. 0: none. */
    uint64_t max_payload; /* longest data frame payload accepted (control frames have
                           * their own 125); UINT64_MAX: only the protocol's 2^63-1 */
} ws_frame_rules;

/* A decoded frame header. */
typedef struct ws_frame_header {
    uint64_t len;   /* payload length */
    uint8_t opcode; /* enum ws_opcode */
    uint8_t rsv;    /* RSV bits as in the first header byte (0x70 mask) */
    bool fin;
    bool masked;
    uint8_t mask[4]; /* masking key (zeros when !masked) */
} ws_frame_header;

#define WS_FRAME_HEADER_MAX 14 /* 2 + 8 (length) + 4 (mask) */
#define WS_FRAME_CTRL_MAX 125  /* longest control payload (§5.5) */

/* Decodes the frame header at buf[0..len).
 * Returns the header length (2..14) with *h filled; SC_EINCOMPLETE when more bytes are
 * needed; or SC_EMALFORMED with *err set. Fail fast: a rule broken by the bytes present is
 * reported even when the header is not complete yet (a bad first byte alone is an error).
 * The length need not use the minimal encoding (the peer's MUST, not checked here).
 * Nothing is kept: on SC_EINCOMPLETE, call again with the same bytes and more. */
int ws_frame_decode(const uint8_t *buf, size_t len, const ws_frame_rules *rules, ws_frame_header *h,
                    ws_frame_err *err);

/* XORs n payload bytes at p with mask, in place. offset is how many payload bytes of the same
 * frame came before p (only offset % 4 matters), so a payload can be unmasked piece by piece
 * as it arrives. Works 8 bytes at a time; p need not be aligned. */
void ws_frame_unmask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset);

/* Writes a frame header into out (room for WS_FRAME_HEADER_MAX bytes) using the shortest
 * length encoding. opcode is one of enum ws_opcode; rsv as in ws_frame_header (0 without
 * extensions); mask NULL for a server frame, else the 4-byte key a client must use (the
 * caller masks the payload with ws_frame_unmask). Returns the header length (2..14).
 * Does not police what it is given (control frames over 125 bytes...): the caller's job. */
size_t ws_frame_header_encode(uint8_t *out, uint8_t opcode, bool fin, uint8_t rsv, uint64_t len,
                              const uint8_t *mask);

/* True when code may appear in a close frame on the wire (§7.4.1, §7.4.2, IANA registry):
 * 1000-1003, 1007-1014, 3000-4999. 1004, 1005, 1006, 1015 and all else are refused. */
bool ws_frame_close_code_valid(uint16_t code);

/* Writes a close payload into out (room for WS_FRAME_CTRL_MAX bytes): the code big-endian,
 * then reason (reason_len bytes of valid UTF-8, may be NULL when 0) cut at a character
 * boundary to fit 123 bytes. code 0 writes an empty payload (a close with no status).
 * Returns the payload length (0 or 2..125). */
size_t ws_frame_close_encode(uint8_t *out, uint16_t code, const char *reason, size_t reason_len);

/* Checks an (unmasked) close payload p[0..n): empty, or a valid code then a UTF-8 reason.
 * Returns 0 with *code (WS_CLOSE_NO_STATUS for an empty payload) and *reason / *reason_len
 * pointing into p (NULL / 0 when none), or SC_EMALFORMED with *err (WS_ERR_CLOSE_LEN,
 * _CODE or _UTF8). */
int ws_frame_close_parse(const uint8_t *p, size_t n, uint16_t *code, const uint8_t **reason,
                         size_t *reason_len, ws_frame_err *err);

#endif
