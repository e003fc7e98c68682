/* sse.h - Server-Sent Events on the edge's port: GET /sse?topic=A&topic=B, for clients and
 * networks where WebSocket is not an option, with no SDK (a browser's EventSource, curl).
 *
 * An SSE connection is a sidecast.v1 session (session.c) whose client sends nothing: the
 * request names the topics, the token comes in Authorization or access_token, and the
 * session subscribes them as if the client had sent subscribe {topic, since}. Everything
 * else is the WebSocket path's: token check, sub_topics and namespace rules (hooks too),
 * replay and the seam to live, gap healing, the outbound bound and the slow rule, drain,
 * the connection limits, presence, token expiry. Only the wire differs: the core (wsc.h,
 * wsc_handlers.stream) writes raw bytes, and this module turns each server message into
 * one SSE message whose data is that message's JSON ({"type":"event",...},
 * {"type":"error",...}), and each event's id into the stream position of every topic of
 * the request.
 *
 * The id. `<inbox>.<t1>.<t2>...`: one decimal position per topic, the inbox first, then the
 * request's topics in the order they were given (duplicates and "user" left out). A
 * position p says: every event of the topic with seq <= p was delivered or came before the
 * stream. It is the topic's last delivered seq (or where it started) or, for a topic that
 * is live (not catching up) and whose live flow is known whole (a live event of it followed
 * on from what the stream had: its prev was not newer), the newest seq of its stream
 * (events, or the inbox stream) that reached the connection live, if higher, since the live
 * flow of one stream arrives in the stream's order (one sequence counter for all subjects). A new
 * stream starts each topic after its subject's last message (one direct get per topic; 0 when it
 * has none: all that the stream will hold of it is new), so a topic cut before its first event
 * loses nothing either. An empty field is a position not known (the look-up failed, or a namespace
 * with latest or without history): resumed as a new stream would start it. Sent back as
 * Last-Event-ID (a browser's reconnect) or ?last_event_id=, each position resumes its topic as
 * subscribe {topic, since} would: nothing lost, nothing twice.
 *
 * Threads: everything runs on the connection's worker, like session.c. Prefix sse_. */
#ifndef EDGE_SSE_H
#define EDGE_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ws/wsc.h"

typedef struct sse_cfg {
    bool enabled;               /* EDGE_SSE */
    const char *const *origins; /* ALLOWED_ORIGINS (borrowed): CORS, and 403 for others */
    size_t norigins;
    long retry_ms;   /* the retry: sent at start (a browser's reconnect delay) */
    long max_topics; /* topics of one request (and at most max_subscriptions) */
} sse_cfg;

struct session_ctx;

/* The wsc handlers for streams: h->stream and h->stream_end (after session_handlers). The
 * metrics are registered here. */
void sse_handlers(wsc_handlers *h);

/* Parses an id (text, n bytes): exactly npos decimal positions separated by '.', each below
 * 2^53, into pos. Returns 0, or -1 when it is not one. Pure. */
int sse_parse_id(const char *text, size_t n, uint64_t *pos, size_t npos);

#endif
