/* ws_reader.h - the receiving half of a WebSocket connection (RFC 6455 §5, §6.2, §7): turns
 * the bytes a peer sends, cut anywhere, into messages, control frames and errors.
 *
 * On top of ws_frame: a header split across reads is kept (up to 14 bytes); payloads are
 * unmasked as they arrive; fragments are assembled into one message; ping/pong/close may come
 * between the fragments of a message; text is validated as UTF-8 as its bytes arrive,
 * across fragment boundaries, failing on the first invalid byte even mid-frame; close
 * payloads are checked (code, UTF-8 reason); messages and frames over max_message fail with
 * 1009 as soon as their header says so, before any payload is read.
 *
 * Delivery model: complete messages. A message that arrives as one frame wholly inside the
 * bytes given to one ws_reader_feed call is delivered in place (zero copy: unmasked inside
 * the caller's input). Any other message is assembled into a message buffer that the caller
 * owns and provides, either once (capacity = max_message, never asked for more) or on
 * demand: the reader then stops with WS_EV_NEED_BUFFER saying how much room it needs, and
 * the caller grows the buffer (realloc-like, keeping the bytes already assembled) and feeds
 * again. So an idle connection needs no message buffer at all.
 *
 * No I/O, no allocation, no global state; one reader per connection, used by one thread.
 * Prefix ws_reader_. */
#ifndef EDGE_WS_READER_H
#define EDGE_WS_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ws_frame.h"

typedef struct ws_reader_config {
    bool from_client;   /* true on the server: the peer must mask every frame */
    size_t max_message; /* largest message (sum of its frames) in bytes; larger: 1009.
                         * 0 allows empty messages only; SIZE_MAX: no limit (tools) */
    bool deflate;       /* permessage-deflate was negotiated: RSV1 on the first frame of a
                         * message marks it compressed (RFC 7692 §6); without it RSV1 is
                         * 1002 as every reserved bit */
} ws_reader_config;

typedef enum ws_event_type {
    WS_EV_NONE = 0,    /* every byte given was consumed; feed more when it arrives */
    WS_EV_TEXT,        /* a complete text message (valid UTF-8 unless compressed): data,
                        * len */
    WS_EV_BINARY,      /* a complete binary message: data, len */
    WS_EV_PING,        /* data, len: the payload (0..125) to echo in a pong */
    WS_EV_PONG,        /* data, len: the payload */
    WS_EV_CLOSE,       /* the peer's close: code (WS_CLOSE_NO_STATUS when it sent none),
                        * data, len: the reason (valid UTF-8, may be empty). Final. */
    WS_EV_ERROR,       /* a protocol violation: code is the close code to send (1002, 1007,
                        * 1009), err says why. Final. */
    WS_EV_NEED_BUFFER, /* len: message buffer capacity needed to go on (> the current one,
                        * <= max_message); call ws_reader_set_buffer, then feed again */
} ws_event_type;

typedef struct ws_event {
    ws_event_type type;
    const uint8_t *data; /* never NULL for TEXT/BINARY/PING/PONG/CLOSE; see ws_reader_feed
                          * for how long it stays valid */
    size_t len;
    uint16_t code;    /* CLOSE: peer's code; ERROR: code to send */
    ws_frame_err err; /* ERROR: the reason (ws_frame_err_str for text) */
    bool compressed;  /* TEXT/BINARY: the message had RSV1 (deflate negotiated): data is
                       * the compressed bytes, not checked as UTF-8 here; the caller
                       * inflates (ws_pmd_inflate) and validates the text */
} ws_event;

/* One connection's reader. Embed it; the fields are private (read them through the
 * functions below). */
typedef struct ws_reader {
    ws_frame_rules rules;
    size_t max_message;
    uint8_t *buf; /* caller's message buffer, cap bytes */
    size_t cap;
    ws_frame_header fh;  /* current frame */
    uint64_t frame_done; /* payload bytes of the current frame consumed so far */
    size_t msg_len;      /* bytes of the current message in buf */
    uint32_t utf8;       /* validator state of the current text message */
    uint8_t state;       /* header, payload or done */
    uint8_t msg_op;      /* opcode of the message in progress, 0 when none */
    bool msg_deflated;   /* ... and whether its first frame had RSV1 */
    uint8_t hdr_have;    /* bytes of a split header kept in hdr */
    uint8_t hdr[WS_FRAME_HEADER_MAX];
    uint8_t ctrl[WS_FRAME_CTRL_MAX]; /* payload of the current control frame */
} ws_reader;

/* Prepares r for a new connection. cfg is copied. buf (cap bytes, may be NULL / 0) is the
 * message buffer, owned by the caller, which must keep it alive until it gives another
 * through ws_reader_set_buffer or stops using r. There is nothing to destroy. */
void ws_reader_init(ws_reader *r, const ws_reader_config *cfg, uint8_t *buf, size_t cap);

/* Gives r another message buffer. Its first ws_reader_buffered(r) bytes must hold what the
 * old one held there (realloc does that); the old one is no longer used. Allowed at any
 * time; with nothing buffered (between messages) a connection may drop its buffer
 * (NULL, 0) and get one back on WS_EV_NEED_BUFFER. */
void ws_reader_set_buffer(ws_reader *r, uint8_t *buf, size_t cap);

/* Changes the largest message (and frame) from the next header on; a message in progress
 * is held to the new limit for its remaining frames. The edge raises it once a connection
 * has authenticated. */
void ws_reader_set_max_message(ws_reader *r, size_t max_message);

/* Bytes of a message in progress held in the message buffer (0 between messages). */
size_t ws_reader_buffered(const ws_reader *r);

/* True while a fragmented message has started and not ended. */
bool ws_reader_in_message(const ws_reader *r);

/* True between frames with no message in progress: r holds nothing a fresh reader (same
 * config, no buffer) would not, so a caller may drop it and make a new one when bytes come.
 * False after WS_EV_CLOSE or WS_EV_ERROR (the reader is finished, not fresh). */
bool ws_reader_at_rest(const ws_reader *r);

/* Consumes bytes of in[0..n) until one event is complete or the bytes are used up.
 * Returns how many bytes were consumed and sets *ev. With WS_EV_NONE all n were consumed.
 * With any other event the rest (in + returned, n - returned) has not been looked at: handle
 * the event, then call again with it. Typical loop:
 *     while (n > 0) { size_t k = ws_reader_feed(r, in, n, &ev); in += k; n -= k;
 *                     if (ev.type == WS_EV_NONE) break; ... handle ev ... }
 * in[] is modified: payloads are unmasked in place. ev->data points into in[] (zero copy),
 * into the message buffer, or into r, and stays valid until the next call on r and for as
 * long as the caller leaves in[] and the buffer alone. After WS_EV_CLOSE or WS_EV_ERROR the
 * reader is finished: later calls discard what they are given (return n, WS_EV_NONE), since
 * nothing a peer sends after its close frame is data (RFC 6455 §5.5.1). */
size_t ws_reader_feed(ws_reader *r, uint8_t *in, size_t n, ws_event *ev);

#endif
