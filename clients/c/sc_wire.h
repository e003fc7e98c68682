/* sc_wire.h - the pure parts of the C client library (libsidecast): edge URLs, the 101
 * answer of the WebSocket handshake, sidecast.v1's client messages and the edge's messages,
 * and the reconnect delay. No I/O, no clock, no global state, so unit tests and fuzzers reach
 * them directly. Internal to clients/c (the public face is sidecast.h). Prefix sc_wire_.
 *
 * Decisions the protocol leaves open, fixed here:
 * - Ids the library makes for subscribe and rpc are JSON integers; a publish id is a JSON
 *   string (the caller's, or one the library makes), so the two never collide.
 * - An event's and an rpc_result's "data" is handed out as the raw JSON text the edge sent
 *   (numbers exactly as the publisher wrote them), found without re-serializing. */
#ifndef SC_WIRE_H
#define SC_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ws/ws_url.h"

#define SC_WIRE_TOPIC_MAX 128
#define SC_WIRE_ID_MAX 64     /* bytes of a publish id's value */
#define SC_WIRE_HEAD_MAX 8192 /* the handshake's answer head, bytes */

/* A parsed ws:// or wss:// URL (the WebSocket library's ws_url). */
typedef ws_url sc_wire_url;

/* Parses s: ws|wss://host[:port][/path] (no userinfo, port 1-65535). 0 or -EINVAL. */
int sc_wire_url_parse(const char *s, sc_wire_url *u);

/* Checks the head of the handshake's answer in buf[0..len): returns the head's length
 * (bytes after it are already WebSocket frames) when it is a valid 101 for accept (the
 * expected Sec-WebSocket-Accept) with subprotocol sidecast.v1 (or none) and no extension;
 * SC_EINCOMPLETE when the head has not all arrived (and len < SC_WIRE_HEAD_MAX);
 * -EPROTO otherwise, with *status the answer's status code (0 when there was none). */
int sc_wire_handshake_parse(const char *buf, size_t len, const char *accept, int *status);

/* The edge's messages the library acts on. */
typedef enum sc_wire_type {
    SC_WIRE_OTHER = 0, /* a type this version does not know: ignored */
    SC_WIRE_WELCOME,
    SC_WIRE_SUBSCRIBED,
    SC_WIRE_UNSUBSCRIBED,
    SC_WIRE_EVENT,
    SC_WIRE_ACK,
    SC_WIRE_ERROR,
    SC_WIRE_TOKEN_EXPIRING,
    SC_WIRE_REFRESHED,
    SC_WIRE_PONG,
    SC_WIRE_RPC_RESULT,
} sc_wire_type;

/* One parsed edge message. Strings are copies (NUL-terminated, cut to their arrays);
 * data points into the text given to sc_wire_parse and lives as long as it. */
typedef struct sc_wire_msg {
    sc_wire_type type;
    char topic[SC_WIRE_TOPIC_MAX + 1];
    int64_t seq;                     /* event: >= 0; else -1 */
    bool id_int;                     /* "id" is an integer (ours for subscribe / rpc) */
    int64_t id_num;                  /* when id_int */
    char id_str[SC_WIRE_ID_MAX + 1]; /* "id" is a string: its value (a publish id) */
    bool has_id_str;
    char code[64];      /* error */
    char message[256];  /* error */
    int64_t oldest;     /* error history_gone: the oldest retained seq, 0 when absent */
    int64_t expires_at; /* welcome, token_expiring, refreshed */
    bool duplicate;     /* ack: the store had this id already */
    int64_t skipped;    /* event (mode latest): the topic's events skipped before it */
    char conn_id[64];   /* welcome */
    char edge[128];     /* welcome */
    const char *data;   /* event, rpc_result: the raw JSON text of "data" */
    size_t data_len;
} sc_wire_msg;

/* Parses one text message of the edge. 0, or -EPROTO when it is not a JSON object with a
 * string "type", or a known type's members are missing or mistyped. Allocates only inside
 * (jansson), nothing is left to free. */
int sc_wire_parse(const char *text, size_t len, sc_wire_msg *m);

/* Encoders of the client's messages into out (cap bytes, NUL-terminated). Each returns the
 * length, or -ENOSPC when it does not fit, -EINVAL for a bad topic or data that is not one
 * JSON value. since < 0: left out. */
/* since_last: "since":"last" (when since < 0); latest: "mode":"latest". */
int sc_wire_subscribe(char *out, size_t cap, const char *topic, int64_t id, int64_t since,
                      bool since_last, bool latest);
int sc_wire_unsubscribe(char *out, size_t cap, const char *topic);
/* id: the publish id's value (a JSON string is written); data: JSON text. */
int sc_wire_publish(char *out, size_t cap, const char *topic, const char *id, const char *data,
                    size_t data_len);
int sc_wire_rpc(char *out, size_t cap, const char *method, int64_t id, const char *data,
                size_t data_len);
/* {"type":"refresh","token":...}: the caller wipes out after sending it. */
int sc_wire_refresh(char *out, size_t cap, const char *token);

/* 1 when s is a valid concrete topic (1-128 bytes of [A-Za-z0-9_-] tokens split by '.'). */
int sc_wire_topic_valid(const char *s);

/* The reconnect delay's ceiling for attempt (0 for the first retry): base * 2^attempt,
 * capped at cap_ms. The delay itself is uniform in [0, ceiling] (full jitter); rnd is a
 * random 64-bit number the caller draws. */
int64_t sc_wire_backoff(int attempt, int64_t base_ms, int64_t cap_ms, uint64_t rnd);

/* Whether a connection that ended with close code may be reconnected (1002, 1007, 1008,
 * 1009, 4003 may not: retrying cannot help). */
bool sc_wire_close_retryable(int code);

#endif
