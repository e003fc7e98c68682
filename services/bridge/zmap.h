/* zmap.h - the bridge's route table: which ZeroMQ endpoints to read, and how a ZeroMQ
 * message becomes a Sidecast event (docs/BRIDGE.md has the file format and the rules).
 *
 * zmap_parse reads the JSON route file (BRIDGE_ROUTES) into a table, checking every bound;
 * zmap_topic maps one ZeroMQ topic frame to a Sidecast topic through an endpoint's rules;
 * zmap_data turns a body frame into the event's JSON data. Pure: no I/O, no logging; only
 * zmap_parse and zmap_data allocate. Prefix zmap_.
 *
 * Decisions the ZeroMQ side leaves open, fixed here:
 * - A message is [topic, body, extra...] when the endpoint has a topic frame (default for
 *   "sub"), [body, extra...] when not (default for "pull": its rules see the topic "").
 *   A missing body is the empty body. Frames after the body are ignored, but with
 *   "sequence": "le32" the last one, when it is 4 bytes long, is the publisher's
 *   little-endian message counter (Bitcoin Core's -zmqpub* convention): gaps in it are
 *   counted, as they are ZeroMQ's only visible trace of a SUB socket dropping at its
 *   high-water mark.
 * - Rules are tried in file order; the first whose "match" fits wins. A match ending in "*"
 *   is a prefix (the part before the "*"); any other is exact. "*" alone matches every
 *   topic, "" only the empty one.
 * - A topic template is literal text with "${topic}" (the whole ZeroMQ topic) and, in a
 *   prefix rule, "${1}" (what follows the prefix). Every result is checked as a Sidecast
 *   topic (topic_valid): bytes that are not topic characters make it invalid, never
 *   escaped or dropped silently. */
#ifndef SC_BRIDGE_ZMAP_H
#define SC_BRIDGE_ZMAP_H

#include <stddef.h>
#include <stdint.h>

#include "proto/topic.h"

#define ZMAP_MAX_FILE (1 << 20) /* bytes of route file */
#define ZMAP_MAX_ENDPOINTS 64
#define ZMAP_MAX_RULES 256 /* per endpoint */
#define ZMAP_MAX_SUBSCRIBE 64
#define ZMAP_MAX_ENDPOINT_LEN 255 /* "tcp://host:port" and the like */
#define ZMAP_MAX_MATCH 255        /* bytes of a match (and of a subscribe prefix) */
#define ZMAP_MAX_TEMPLATE 255

enum zmap_socket { ZMAP_SUB, ZMAP_PULL };
enum zmap_payload {
    ZMAP_JSON,   /* the body is one JSON text, published as it is */
    ZMAP_TEXT,   /* the body as a JSON string (invalid UTF-8 replaced by U+FFFD) */
    ZMAP_BASE64, /* the body as a JSON string of its standard base64 (RFC 4648 §4) */
};

typedef struct zmap_rule {
    char *match;     /* without the trailing "*" of a prefix rule */
    size_t matchlen; /* (a match may hold any byte but NUL) */
    int prefix;      /* 1: "match*" */
    char *topic;     /* the template */
} zmap_rule;

typedef struct zmap_endpoint {
    char *endpoint; /* ZeroMQ address, "tcp://host:port" or "ipc://path" */
    enum zmap_socket socket;
    int bind;        /* 1: bind instead of connect */
    int topic_frame; /* 1: the first frame is the topic */
    int seq_le32;    /* 1: "sequence": "le32" */
    enum zmap_payload payload;
    char **subscribe; /* SUB prefixes (nsubscribe >= 1 for SUB; "" is everything) */
    size_t nsubscribe;
    zmap_rule *rules;
    size_t nrules;
} zmap_endpoint;

typedef struct zmap {
    zmap_endpoint *v;
    size_t n; /* 1..ZMAP_MAX_ENDPOINTS */
} zmap;

/* Parses the route file text[0..len) (need not be NUL-terminated):
 *   {"endpoints": [{"endpoint": "tcp://127.0.0.1:5556", "socket": "sub" | "pull",
 *                   "bind"?: false, "topic_frame"?: bool, "subscribe"?: ["prefix", ...],
 *                   "payload"?: "json" | "text" | "base64", "sequence"?: "none" | "le32",
 *                   "map": [{"match": "prices.*", "topic": "prices.${1}"}, ...]}, ...]}
 * Unknown keys are errors (a misspelt key would otherwise be ignored). "subscribe" is for
 * "sub" sockets only; when absent, a SUB socket subscribes to what its rules can match (each
 * rule's match, "" for a "*" rule), so the publisher does not send what would be dropped.
 * Returns 0 and *out (free with zmap_destroy), or -1 with *out NULL and a message in err
 * naming the entry, e.g. "endpoints[1].map[0].topic: ${2} is not a variable". */
int zmap_parse(const char *text, size_t len, zmap **out, char *err, size_t errlen);
/* Frees; accepts NULL. */
void zmap_destroy(zmap *m);

/* Maps the ZeroMQ topic t[0..n) (any bytes) through ep's rules. Returns the index of the
 * rule that matched and writes the Sidecast topic, NUL-terminated, into out (TOPIC_MAX + 1
 * bytes); -ENOENT when no rule matches; SC_ETOPIC when the rule's result is not a valid
 * topic (out then holds a truncated, unchecked copy for a log line, or ""). */
int zmap_topic(const zmap_endpoint *ep, const char *t, size_t n, char out[TOPIC_MAX + 1]);

/* The event's JSON data for body b[0..n) in the given mode, as a malloc'd NUL-terminated text
 * (caller frees) in *out and its length in *outlen. Returns 0; SC_EJSON (ZMAP_JSON and the
 * body is not one JSON text, checked as the edge checks bus data); SC_ETOOLARGE when the
 * data would be longer than max bytes (nothing allocated); -ENOMEM. */
int zmap_data(enum zmap_payload mode, const void *b, size_t n, size_t max, char **out,
              size_t *outlen);

/* The 4-byte little-endian counter in f[0..n), or -1 when n != 4. */
int64_t zmap_le32(const void *f, size_t n);

#endif
