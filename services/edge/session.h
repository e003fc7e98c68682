/* session.h - the sidecast.v1 protocol on top of the WebSocket core (wsc.h).
 *
 * One session per connection: its user and token (from the handshake or a first "auth"
 * message), its subscriptions (checked against the token's sub_topics), publishes (checked
 * against pub_topics, sent to client.<topic>), in-band refresh, token_expiring and expiry,
 * rate limit, and the user's inbox. Per worker: a map from topic / user to the sessions
 * subscribed there, fed by the worker's fabric port (fabric.h). Everything here runs on
 * the workers' threads, through the wsc_handlers that session_handlers() fills.
 * Prefix session_. */
#ifndef EDGE_SESSION_H
#define EDGE_SESSION_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "bus.h"
#include "fabric.h"
#include "keys.h"
#include "ns.h"
#include "perms.h"
#include "presence.h"
#include "quota.h"
#include "sse.h"
#include "token.h"
#include "ws/wsc.h"

typedef struct session_cfg {
    const char *edge_id;
    long auth_timeout_ms;        /* handshake without token: the first message must be auth */
    long token_warning_s;        /* token_expiring this long before exp */
    long rate_limit;             /* client messages per second (sustained) */
    long rate_burst;             /* ... and in a burst */
    long max_subscriptions;      /* per connection, the inbox excluded */
    long max_errors;             /* error replies before the connection is closed 1008 */
    size_t max_message;          /* client message bytes (the core closes 1009 above) */
    size_t max_publish;          /* compact JSON of a publish's data */
    size_t max_outbound;         /* the core's bound: replays wait while over half of it */
    const char *stream;          /* JetStream stream replays of topics read from */
    const char *inbox_stream;    /* ... and of the inbox (users.<sub>) */
    int replay_inflight;         /* direct-get requests in flight per worker */
    long replay_max_events;      /* per replay (over: error replay_limit, then live) */
    long max_per_user;           /* connections per user, all edges (0: no limit) */
    long inbox_hold_ms;          /* inbox events held after connect for a subscribe {user,since} */
    long stall_ms;               /* a replay that cannot send for this long: closed 4008 */
    size_t conflate_after;       /* mode "latest": over this many unsent bytes, conflate */
    bool query_token;            /* accept ?access_token= in the handshake (RFC 6750 2.3) */
    double publish_rate;         /* client publish bytes a second per connection ... */
    double publish_burst;        /* ... and at once (>= max_publish) */
    int rpc_timeout_ms;          /* an rpc not answered by then: error "timeout" */
    int rpc_inflight;            /* rpcs in flight per connection (more: error "busy") */
    size_t max_rpc_reply;        /* bytes of an rpc's reply passed on (more: "bad_reply") */
    bool stored_publish;         /* a publish with an id goes through the client stream */
    int publish_inflight;        /* ... of those waiting for their ack, per connection */
    int hook_timeout_ms;         /* a hook not answered by then has failed */
    int hook_inflight;           /* hooks waiting for their answer, this edge (more: failed) */
    bool hook_connect;           /* ask hooks.connect before welcome */
    bool hook_connect_fail_open; /* ... and let a connection in when it fails */
    bool hook_disconnect;        /* tell hooks.disconnect when an authenticated one ends */
} session_cfg;

typedef struct session_ctx {
    session_cfg cfg;
    bus *b;
    fabric *fab;
    keys *keys; /* the token keys, changing while it runs */
    token_policy policy;
    perms_source perms_src; /* where a token's topic patterns are (perms.h) */
    const ns_table *ns;     /* topic namespaces (ns.h): subscribe / publish rules, hooks */
    _Atomic int hooks_inflight;
    presence *pres;    /* NULL: no presence */
    quota *user_quota; /* client publish bytes per user on this edge (NULL: none) */
    sse_cfg sse;       /* Server-Sent Events on the same port (sse.h) */
    void *workers[64]; /* per-worker state, for presence verdicts */
} session_ctx;

/* Fills h with the protocol's handlers; ctx must outlive the server. */
void session_handlers(session_ctx *ctx, wsc_handlers *h);
/* presence_verdict_fn for ctx (ud): hands the verdict to the connection's worker. */
void session_presence_verdict(void *ud, int worker, uint64_t conn, bool allowed);

/* The server API's disconnect (api.c): every worker closes, with code and reason (at most
 * 123 bytes, cut), the authenticated connections of user, or (user NULL) the one whose
 * wsc_conn_id is conn, then calls done(ud, closed) on its own thread. Returns how many
 * workers were asked: done runs exactly that many times (with 0 for a worker that stops
 * first). Any thread. */
typedef void (*session_disconnect_fn)(void *ud, int closed);
int session_disconnect(session_ctx *ctx, const char *user, uint64_t conn, uint16_t code,
                       const char *reason, session_disconnect_fn done, void *ud);

#endif
