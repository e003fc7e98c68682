/* api.h - the server API: what a back end asks of Sidecast as a whole, on NATS (api.*) and,
 * through the gateway's /api/v1 routes, over HTTP (docs/BACKENDS.md, "The server API").
 *
 *   api.publish          {"topic","data","idempotency_key"?} -> {"topic","seq","duplicate"}
 *   api.broadcast        {"topics":[...],"data","idempotency_key"?} -> {"results":[...],..}
 *   api.disconnect       {"user"|"conn","reason"?,"reconnect"?} -> {"closed","edges","code"}
 *   api.presence.user    {"user"}  -> presence.get's answer
 *   api.presence.topic   {"topic"} -> presence.occupancy's answer
 *   api.history          {"topic","since"?,"limit"?} -> {"topic","events":[...],"next","more"}
 *   api.counts           {} -> {"connections","users","topics","edges","by_edge":[...]}
 *
 * Every edge subscribes api.> in the queue group "edge", so one edge answers each request.
 * What must reach every edge goes out again on the control subjects (edges.disconnect,
 * edges.counts), which every edge subscribes without a queue and answers at once; the edge
 * that took the request gathers the answers for EDGE_API_GATHER_MS.
 *
 * A request is either the object above (a back end on NATS) or the gateway's envelope
 * {"method","path","params","query","body"}: a field is then looked up in body, params and
 * query, in that order (a query's numbers are decimal strings). Unknown fields are ignored.
 *
 * Threads: requests arrive on nats.c's delivery thread (which carries every event of the
 * edge) and are queued (bounded: EDGE_API_QUEUE, over: 503 at once) to EDGE_API_THREADS
 * threads of their own, which may block on the bus (JetStream acks, direct gets, presence).
 * Control messages are answered on the delivery thread without blocking: a disconnect is
 * handed to the workers (api_disconnect_fn) and answered by the last worker to finish.
 * Prefix api_. */
#ifndef EDGE_API_H
#define EDGE_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"

typedef struct api api;

typedef enum api_action {
    API_PUBLISH,
    API_BROADCAST,
    API_DISCONNECT,
    API_PRESENCE_USER,
    API_PRESENCE_TOPIC,
    API_HISTORY,
    API_COUNTS,
} api_action;

#define API_KEY_MAX 64     /* bytes of an idempotency key */
#define API_REASON_MAX 123 /* bytes of a disconnect reason: a close frame's room */
#define API_USER_MAX 128   /* bytes of a user id */

typedef struct api_limits {
    size_t max_data;   /* compact JSON bytes of "data" */
    int max_topics;    /* topics of one broadcast */
    int max_history;   /* largest "limit" of a history request */
    int default_limit; /* "limit" when absent */
} api_limits;

/* One parsed request. Strings are owned by it (api_req_free). */
typedef struct api_req {
    api_action action;
    char *topic;   /* publish, presence.topic, history */
    char **topics; /* broadcast */
    int ntopics;
    char *data; /* publish, broadcast: compact JSON text */
    char *key;  /* idempotency key, or NULL */
    char *user; /* disconnect (or NULL), presence.user */
    char *conn; /* disconnect by connection: "<edge>-<n>" as in welcome, or NULL */
    char *reason;
    bool reconnect;
    uint64_t since;
    int limit;
} api_req;

/* The action of a subject ("api.publish" ...): 0 and *out, or -1 for any other subject.
 * Pure. */
int api_action_of(const char *subject, api_action *out);

/* Parses a request of action from data[0..len) (an object or the gateway's envelope) within
 * lim. 0 and *out (free with api_req_free), or -1 with a message for a 400 in why (cut to
 * whylen). Pure (no I/O, no logging). */
int api_parse(api_action action, const char *data, size_t len, const api_limits *lim, api_req *out,
              char *why, size_t whylen);
void api_req_free(api_req *r); /* its strings; NULL ok */

/* Splits a connection id "<edge>-<n>": 0 when its edge part is edge_id (*conn = n), else -1.
 * Pure. */
int api_conn_on_edge(const char *conn_id, const char *edge_id, uint64_t *conn);

/* The close code a disconnect uses: MSG_CLOSE_FORBIDDEN (4003, do not reconnect) or
 * MSG_CLOSE_SERVER (4010, may reconnect). */
uint16_t api_close_code(bool reconnect);

/* Closes this edge's connections of user (or, user NULL, connection conn) with code and
 * reason on their workers; done(done_ud, closed) runs once per worker asked, on its thread.
 * Returns how many workers were asked (session_disconnect). */
typedef void (*api_done_fn)(void *done_ud, int closed);
typedef int (*api_disconnect_fn)(void *ud, const char *user, uint64_t conn, uint16_t code,
                                 const char *reason, api_done_fn done, void *done_ud);
/* This edge's figures for api.counts. Quick: runs on the delivery thread. */
typedef void (*api_counts_fn)(void *ud, long *connections, long *users, long *topics);

typedef struct api_cfg {
    const char *edge_id;
    const char *stream; /* the events stream (history reads it by direct get) */
    api_limits lim;
    size_t max_request; /* bytes of a request (more: 413) */
    int threads;        /* request threads (0: no api.> subscription, control subjects only) */
    int queue;          /* requests waiting for them (more: 503 busy) */
    int timeout_ms;     /* each bus call a request makes */
    int gather_ms;      /* how long answers of every edge are gathered */
    api_disconnect_fn disconnect;
    void *disconnect_ud;
    api_counts_fn counts;
    void *counts_ud;
} api_cfg;

/* Subscribes api.> (queue group "edge") and the control subjects, starts the threads.
 * cfg's strings are copied. 0 or a negative code. */
int api_create(api **out, const api_cfg *cfg, bus *b);
/* Unsubscribes, lets the threads finish what they hold, frees. NULL ok. Disconnects handed
 * to the workers answer on their own (they hold no reference to the api). */
void api_destroy(api *a);

#endif
