/* msg.h - the JSON messages of the WebSocket protocol sidecast.v1 (DESIGN.md): the parser of
 * what clients send, the encoders of what the edge sends, and the checks that let the edge
 * embed bus data in an event without parsing it once per recipient.
 *
 * Pure functions: no I/O, no global state. msg_parse allocates (jansson, and the token and
 * data it hands back, see msg_in); the encoders and checks never allocate. Prefix msg_.
 *
 * Decisions the protocol leaves open, fixed here:
 * - A client message is one JSON object with a string "type". Members this version does not
 *   know are ignored (forward compatibility); a known member of the wrong type is an error.
 * - Duplicate keys anywhere in a message are rejected, so no two readers of the same text
 *   can disagree about it. Nesting deeper than msg_limits.max_depth (the message object is
 *   level 1) is rejected before jansson sees the text (jansson recurses).
 * - Integers beyond 64 bits and reals beyond double range are rejected ("bad_json").
 * - "topic" is concrete: 1..128 bytes of [A-Za-z0-9_-] tokens separated by single dots, no
 *   wildcards, also for subscribe ("user" is the inbox). Permission checks are the caller's.
 * - "id" (any message) is a string of at most 64 bytes or an integer; its JSON text is kept
 *   byte for byte as the client wrote it and echoed in ack, error and pong. "id": null and
 *   "since": null mean absent.
 * - "data" (publish) is any JSON value, passed on as the client wrote it minus whitespace
 *   outside strings: numbers, escapes and key order unchanged (no re-serialization, which
 *   would turn 0.1 into 0.10000000000000001).
 * - "since" is an integer 0..2^53 (the largest a JavaScript client holds exactly), or the
 *   string "last" (the topic's latest retained event first: MSG_SINCE_LAST).
 * - "mode" (subscribe) is "latest" (conflate: a connection that falls behind gets the newest
 *   event of the topic instead of every one) or absent/null (every event).
 * - "\u0000" is allowed inside publish data and ids; a type, topic or token holding it is
 *   rejected. A raw NUL byte anywhere is invalid JSON. */
#ifndef EDGE_MSG_H
#define EDGE_MSG_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* msg_parse and msg_json_check return 0 or a code of err.h, and msg_code names each as the
 * "code" of an error reply: SC_EJSON "bad_json" (not one valid JSON text, or a duplicate
 * key, an overflow), SC_EMALFORMED "bad_message" (valid JSON, not a well-formed message),
 * SC_ETYPE "unknown_type" ("type" is a string this version lacks), SC_ETOPIC "bad_topic"
 * ("topic" is a string but not a valid topic), SC_ETOOLARGE "too_large" (over a size or
 * nesting limit), -ENOMEM "internal". */

/* The close codes sidecast.v1 adds to RFC 6455's (DESIGN.md). */
enum msg_close_code {
    MSG_CLOSE_TOKEN = 4001,      /* token missing, invalid or expired */
    MSG_CLOSE_FORBIDDEN = 4003,  /* forbidden or revoked */
    MSG_CLOSE_TOO_SLOW = 4008,   /* outbound queue over its bound */
    MSG_CLOSE_CONN_LIMIT = 4009, /* the user has MAX_CONNECTIONS_PER_USER connections */
    MSG_CLOSE_SERVER = 4010,     /* disconnected by the server API: may reconnect */
    MSG_CLOSE_RATE = 4029,       /* rate limited */
};

typedef enum msg_type {
    MSG_NONE = 0, /* not (yet) known: the parse failed before "type" was read */
    MSG_AUTH,
    MSG_SUBSCRIBE,
    MSG_UNSUBSCRIBE,
    MSG_PUBLISH,
    MSG_REFRESH,
    MSG_PING,
    MSG_RPC,
} msg_type;

#define MSG_TOPIC_MAX 128   /* bytes */
#define MSG_ID_STR_MAX 64   /* bytes of a string id's value */
#define MSG_ID_JSON_MAX 400 /* its JSON text: 2 quotes + 64 bytes each at most "\u00XX" */
#define MSG_SINCE_MAX 9007199254740992LL /* 2^53 */
#define MSG_SINCE_LAST (-2)              /* msg_in.since for "since": "last" */
#define MSG_DEPTH_CAP 256                /* the largest nesting limit any check accepts */
#define MSG_JSON_MAX_DEPTH 64            /* msg_json_valid's nesting limit, for bus data */

/* Limits on one client message; each a configuration value of the edge. */
typedef struct msg_limits {
    size_t max_text;  /* whole message, bytes */
    size_t max_data;  /* a publish's "data" (compacted JSON text), bytes */
    size_t max_token; /* "token" of auth / refresh, bytes */
    int max_depth;    /* JSON nesting, the message object included (1..MSG_DEPTH_CAP) */
} msg_limits;

#define MSG_LIMITS_DEFAULT                                                                         \
    {                                                                                              \
        65536, 65536, 8192, 32                                                                     \
    }

/* One parsed client message. Owns token and data (malloc'd, NUL-terminated); release with
 * msg_in_clear. Fields a type does not use are empty: topic "", since -1, token and data
 * NULL. */
typedef struct msg_in {
    msg_type type;
    char topic[MSG_TOPIC_MAX + 1]; /* subscribe, unsubscribe, publish; rpc: the method */
    int64_t since;                 /* subscribe: 0..2^53, MSG_SINCE_LAST, or -1 when absent */
    bool latest;                   /* subscribe: "mode": "latest" (conflation) */
    char id[MSG_ID_JSON_MAX + 1];  /* JSON text of "id" as sent ("7", "\"a\""), "" if absent */
    char *token;                   /* auth, refresh: 1..max_token bytes */
    size_t token_len;
    char *data; /* publish, rpc: JSON text of "data", compacted (may be "null"; rpc without
                 * "data": "null") */
    size_t data_len;
    const char *error; /* after a failure: short reason for the error reply's
                        * "message" (static storage, never echoes input) */
} msg_in;

/* Parses one client message: len bytes of text (a text frame's payload; need not be
 * NUL-terminated). lim NULL means MSG_LIMITS_DEFAULT. Returns SC_OK, or a negative
 * code (above) with out->error set. On failure out owns nothing (msg_in_clear is still
 * safe), but out->type and out->id hold what could be read before the failure, so the error
 * reply can name the request (echo out->id). out must not own anything on entry. */
int msg_parse(const char *text, size_t len, const msg_limits *lim, msg_in *out);

/* Frees what in owns and empties it. Accepts NULL and an already cleared msg_in. */
void msg_in_clear(msg_in *in);

/* The "code" string of an error reply for a status of msg_parse ("bad_json", ...;
 * "internal" for -ENOMEM and unknown values). Static storage. */
const char *msg_code(int status);

/* The wire name of a type ("subscribe", ...), "" for MSG_NONE. Static storage. */
const char *msg_type_name(msg_type type);

/* 1 when topic[0..len) is a valid concrete topic (see above), else 0. */
int msg_topic_valid(const char *topic, size_t len);

/* Checks that text[0..len) is exactly one JSON value (RFC 8259; surrounding whitespace
 * allowed) in valid UTF-8, with no lone surrogate escape and nesting at most max_depth
 * (clamped to 1..MSG_DEPTH_CAP). No allocation, one pass. Returns SC_OK, SC_EJSON or
 * SC_ETOOLARGE (too deep). Numbers are checked for form only, not range. */
int msg_json_check(const char *text, size_t len, int max_depth);

/* 1 when bus data text[0..len) can be embedded raw as an event's "data": msg_json_check with
 * MSG_JSON_MAX_DEPTH. Meant to run once per bus message, not per recipient. */
int msg_json_valid(const char *text, size_t len);

/* Writes bytes s[0..n) (any bytes) as a JSON string literal, quotes included, to out:
 * ", \ and control characters escaped (also U+2028, U+2029), every invalid UTF-8 sequence
 * (maximal subpart) replaced by U+FFFD. The result is always valid JSON and valid UTF-8.
 * Returns its length (out is NUL-terminated), or -1 when it does not fit in cap - 1 bytes or
 * exceeds INT_MAX. */
int msg_json_string(char *out, size_t cap, const char *s, size_t n);

/* Exact length msg_json_string would write for s[0..n), NUL excluded. */
size_t msg_json_string_len(const char *s, size_t n);

/* Encoders of edge -> client messages. Each writes one compact JSON object, "type" first,
 * to out and NUL-terminates it; returns its length, or -1 when it does not fit in cap - 1
 * bytes (out's content is then unspecified). Strings are escaped as by msg_json_string.
 * id_json: the JSON text of a client's id as msg_in.id holds it, embedded raw; NULL or ""
 * leaves "id" out. */

/* {"type":"event","topic":...,"seq":...,"data":<data_json>}. data_json is embedded raw: it
 * must have passed msg_json_valid (or be msg_json_string's output); data_len 0 writes null.
 * The hot path: one pass, copies only. */
int msg_event_build(char *out, size_t cap, const char *topic, uint64_t seq, const char *data_json,
                    size_t data_len);

/* Upper bound of msg_event_build's length for these sizes, NUL included. */
size_t msg_event_size(size_t topic_len, size_t data_len);

int msg_welcome_build(char *out, size_t cap, const char *conn_id, const char *user,
                      int64_t expires_at, const char *edge);
int msg_subscribed_build(char *out, size_t cap, const char *topic);
int msg_unsubscribed_build(char *out, size_t cap, const char *topic);
int msg_ack_build(char *out, size_t cap, const char *id_json);
/* The ack of a stored publish: {"type":"ack","id":...,"duplicate":true|false} (duplicate:
 * the store had this id already and kept the first). */
int msg_ack_stored_build(char *out, size_t cap, const char *id_json, int duplicate);
/* {"type":"error","id":...,"code":...,"message":...}; id left out when absent. */
int msg_error_build(char *out, size_t cap, const char *id_json, const char *code,
                    const char *message);
/* A replay that could not give everything asked for:
 * {"type":"error","code":...,"message":...,"topic":...,"oldest":N}, oldest left out when 0
 * (history_gone: the oldest retained seq of the topic, 0 when none is retained). */
int msg_replay_error_build(char *out, size_t cap, const char *topic, const char *code,
                           const char *message, uint64_t oldest);
int msg_token_expiring_build(char *out, size_t cap, int64_t expires_at);
int msg_refreshed_build(char *out, size_t cap, int64_t expires_at);
int msg_pong_build(char *out, size_t cap, const char *id_json);
/* {"type":"rpc_result","id":...,"data":<data_json>}: data_json embedded raw as by
 * msg_event_build (it must have passed msg_json_valid); data_len 0 writes null. */
int msg_rpc_result_build(char *out, size_t cap, const char *id_json, const char *data_json,
                         size_t data_len);
/* Upper bound of msg_rpc_result_build's length, NUL included. */
size_t msg_rpc_result_size(size_t id_len, size_t data_len);

#endif
