/* session_int.h - what the files of the edge's protocol layer share: session.c (messages,
 * tokens, connection life, the worker's wiring), session_map.c (the topic map),
 * session_catchup.c (replay and the seam to live) and session_sse.c (Server-Sent Events). Not for
 * use outside them; the public interface is session.h. Everything here belongs to one worker
 * thread. */
#ifndef EDGE_SESSION_INT_H
#define EDGE_SESSION_INT_H

#include "session.h"

#include "metrics.h"
#include "perms.h"
#include "replay.h"
#include "rpc.h"
#include "seq.h"
#include "ws/ws_frame.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define MAP_BUCKETS 4096
#define REPLY_MAX 1024 /* every reply but events fits */
#define HOOK_CACHE_BUCKETS 1024
#define HOOK_CACHE_MAX 16384 /* entries per worker; full: emptied */

struct session;
struct catchup;

/* Sessions subscribed to one key ("e:<topic>" or "u:<user>") on one worker. */
typedef struct tentry {
    struct tentry *next;
    struct sub_rec **members;
    uint32_t n, cap;
    uint64_t last_seq; /* newest event delivered here: an older or equal one is a duplicate */
    uint64_t wait_seq; /* fab_watch's: a member waits until fab_port_settled reaches it */
    char key[];
} tentry;

/* One subscription of one session: its place in the entry's member array, and its position
 * in the topic (seq.h): every event of the topic between pos.first and pos.last was
 * delivered (each live event names the previous seq of its subject, so a gap is seen and
 * filled from the stream before going on). */
typedef struct sub_rec {
    tentry *t;
    struct session *s;
    uint32_t idx;
    seq_pos pos;
    struct catchup *cu; /* a replay running for this subscription, or NULL */
    bool latest;        /* subscribe mode "latest": conflated while the client is behind */
    uint32_t skipped;   /* events replaced while one waits in pending (told to the client) */
    wsc_frame *pending; /* the newest event, waiting for the queue to drain (held in the
                         * connection's bound: wsc_conn_hold), or NULL */
} sub_rec;

/* A subscription's replay. Seam mode (until 0): from the subscription's last position up
 * to live; live events are held meanwhile and released in order once the replay reaches
 * them. Bounded mode (until > 0): a subscription that is already live asked for older
 * events: (since, until) is replayed beside the live flow, which goes on untouched. */
typedef struct catchup {
    replay *r;
    sub_rec *rec;
    uint64_t until;
    uint64_t stalled_since; /* loop ms since the connection has been too full to go on */
    seq_holdq held;         /* live frames held, each counted in the connection's outbound bound
                             * (wsc_conn_hold); overflow: the replay fetches the rest instead */
} catchup;

/* A worker's protocol state. */
typedef struct wstate {
    session_ctx *ctx;
    wsc_worker *w;
    fab_port *port;
    replay_q *rq;
    rpc_q *rpcq;
    loop_io port_io;
    pthread_mutex_t vlock; /* verdicts from the presence thread */
    struct verdict *verdicts;
    struct session *awaiting;  /* sessions waiting for their presence verdict */
    struct session *corked;    /* sessions whose writes wait for NATS (fab_port_settled) */
    struct session *conflated; /* sessions with a subscription's event in pending */
    uint64_t uncorked_upto;    /* fab_port_settled when the corked list was last walked */
    tentry *buckets[MAP_BUCKETS];
    perms_table perms;
    struct hook_ok *hook_cache[HOOK_CACHE_BUCKETS]; /* subscribes a hook allowed, until when */
    uint32_t hook_cached;
    uint64_t delivered; /* events queued since the last loop turn: sc_edge_deliveries_total
                         * gets them once per turn (before_sleep), not an atomic per event */
} wstate;

typedef struct verdict {
    struct verdict *next;
    uint64_t conn;
    bool allowed;
} verdict;

typedef struct session {
    wsc_conn *c;
    wstate *ws;
    struct session *next_awaiting;
    bool awaiting; /* welcome waits for the presence verdict (per-user limit) */
    struct session *next_corked, *prev_corked;
    bool corked; /* its writes wait until fab_port_settled reaches cork_seq */
    uint64_t cork_seq;
    struct session *next_conflated, *prev_conflated;
    bool conflated;            /* in ws->conflated: some subscription has an event pending */
    bool registered;           /* presence_add done: presence_remove at close */
    uint64_t inbox_hold_until; /* loop ms: inbox events are held until then (0: not held) */
    char *user;                /* token sub; NULL until authenticated */
    char sid[64];              /* refresh-token family (claim "sid"), for auth.revoked */
    long exp;                  /* token expiry, Unix seconds */
    perms *perms;              /* the token's sub_topics / pub_topics (interned) */
    perms *granted;            /* what hooks.connect added (interned), or NULL */
    char *info;                /* hooks.connect's info (compact JSON), or NULL */
    bool hook_wait;            /* hooks.connect's answer is pending: nothing acts before it */
    json_t *claims_hold;       /* a handshake token's claims, for hooks.connect at open */
    sub_rec **subs;            /* [0] is the inbox once authenticated */
    uint16_t nsubs, capsubs;
    bool warned;    /* token_expiring sent for this exp */
    bool bad_token; /* a token came with the handshake and failed: close 4001 */
    const char *bad_reason;
    uint64_t auth_deadline;
    double tokens; /* rate-limit bucket */
    uint64_t refilled;
    double pub_tokens; /* publish bytes bucket (publish_rate, publish_burst) */
    uint64_t pub_at;
    uint32_t errors;
    struct rpc_pending *rpcs; /* calls and stored publishes in flight, cancelled with it */
    uint16_t nrpc, npub;
    struct sse_conn *sse; /* a Server-Sent Events stream (sse.c), or NULL: WebSocket */
} session;

/* The protocol layer's metrics (registered once, at the first worker's start). */
extern struct session_metrics {
    metric *auth_ok, *deliveries, *publishes, *rate_closes, *gaps, *dups, *quota_refused;
    metric *rpc_ok, *rpc_error, *rpc_timeout, *rpc_no_responders, *rpc_refused, *rpc_busy;
    metric *publish_dups, *conflated;
    metric *hook_allowed, *hook_denied, *hook_failed, *hook_cached;
} session_m;

/* session.c: sends a reply of n bytes (n <= 0: nothing, the builder failed). */
void session_reply(session *s, const char *text, int n);

/* session.c: conflation (mode "latest"). True when f is kept in rec->pending (or dropped:
 * the connection is being closed as too slow) instead of going out now: rec already waits,
 * or its connection has more than conflate_after bytes unsent. */
bool session_conflate(sub_rec *rec, wsc_frame *f);
/* Drops what waits in rec->pending (the subscription ends). */
void session_conflate_drop(sub_rec *rec);
/* Sends what waits in rec->pending now, whatever is queued: a replay is about to send events
 * newer than it, which must not overtake it. */
void session_conflate_send(sub_rec *rec);

/* session.c, for session_sse.c: a new session on c (its data; freed by the closed handler), or
 * NULL; a token's check (0, or the error, counted and logged); claims applied to s (0 or -ENOMEM);
 * a subscribe {topic, since} (since -1: none) as if the client had sent it. */
session *session_new(wsc_conn *c);
int session_verify(session *s, const char *token, token_claims *cl);
int session_take_claims(session *s, token_claims *cl);
void session_subscribe(session *s, const char *topic, int64_t since);

/* session_sse.c, for session*.c: s's reply as an SSE message; an event (seq 0: not stored; live:
 * from the live flow, not a replay or held back, and prev its subject's previous seq) queued
 * as an SSE message with its id
 * (wsc_conn_send_event's result); the stream's subscribes, once welcome went out; s->sse
 * freed. */
void sse_reply(session *s, const char *text, size_t n);
int sse_send_event(sub_rec *rec, wsc_frame *f, uint64_t seq, uint64_t prev, bool live);
void sse_begin(session *s);
void sse_free(session *s);

/* session_map.c. Joining may subscribe the worker to key on NATS: *wait is then the fabric's
 * ticket to wait for (fab_watch; 0: NATS has the subscription). Leaving cancels the
 * record's catch-up; the last member to leave drops the worker's interest. */
tentry *smap_find(wstate *ws, const char *key);
sub_rec *smap_join(wstate *ws, session *s, enum fab_kind kind, const char *name, uint64_t *wait);
void smap_leave(wstate *ws, sub_rec *r);

/* session_catchup.c */
/* Replays rec's topic after since: seam mode (until 0: live events are held, then released
 * in order when the replay reaches them) or beside live (until > 0). */
void catchup_start(sub_rec *rec, uint64_t since, bool check, uint64_t until);
/* A subscribe with since on rec (new or not). */
void catchup_subscribe_since(sub_rec *rec, uint64_t since);
/* A subscribe without since in a namespace with latest: the topic's last event, then live
 * (nothing when rec is live or catching up already). */
void catchup_subscribe_latest(sub_rec *rec);
/* Whether a live event goes out to rec now (its position advanced), or is a duplicate, or
 * is held while rec catches up (a gap starts a catch-up). */
bool catchup_live_accept(sub_rec *rec, wsc_frame *f, uint64_t seq, uint64_t prev);
/* Ends a hold without a replay: what is held goes out, in order, and rec is live. */
void catchup_release_hold(sub_rec *rec);
/* Queues a live event f (stream seq, its subject's previous prev; seq 0: not stored) on
 * every local member of key that should have it now (the live path: in this file with
 * catchup_live_accept, which it calls for each member). */
void catchup_deliver(wstate *ws, const char *key, wsc_frame *f, uint64_t seq, uint64_t prev);
/* Frees a catch-up (its replay already ended or cancelled), giving back what it holds. */
void catchup_free(catchup *cu);

#endif
