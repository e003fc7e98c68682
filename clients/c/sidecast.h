/* sidecast.h - the Sidecast C client library (libsidecast): one connection to an edge
 * speaking sidecast.v1, kept up for you. docs/CLIENT-C.md is the guide.
 *
 * What it does: connects (ws:// or wss://, OpenSSL), gets a token from your provider, keeps
 * your subscriptions and the last seq seen per topic, reconnects after a drop (exponential
 * backoff with full jitter, capped, reset once a connection has stayed up a while), moves to
 * the next URL of a list when an edge drains or vanishes, resubscribes with `since` so that
 * no event is lost or delivered twice, renews the token in band (token_expiring -> your
 * provider -> refresh), publishes with an id, an ack and a timeout, and makes rpc calls.
 *
 * Two ways to drive it:
 * - event loop: poll sc_client_fd() for sc_client_events(), wake after sc_client_timeout_ms(),
 *   then call sc_client_step(). The fd is the same for the client's whole life (an epoll fd
 *   holding the socket of the moment), so it is registered once.
 * - blocking: sc_client_run() steps until sc_client_stop() (from a callback, or another
 *   thread through sc_client_stop only) or a fatal error.
 *
 * Rules:
 * - Every call returns 0 (or a count) or a negative errno. One client, one thread: every
 *   function but sc_client_stop must be called from the thread that steps the client.
 * - Callbacks run inside sc_client_step / sc_client_run only, never inside the call that
 *   registered them; the one exception is sc_client_start, which reports the state
 *   "connecting" through on_state before it returns. A function that takes a callback and fails
 * never calls it; one that succeeds calls it exactly once (publish, rpc), or until
 * sc_client_destroy (events).
 * - Strings handed to a callback live until it returns; copy what you keep.
 * - sc_client_destroy must not be called from a callback: call sc_client_stop there.
 * - Everything is bounded (sc_client_config): message size, pending publishes and rpcs,
 *   subscriptions, queued bytes, the reconnect delay.
 * - Blocking parts: name resolution (getaddrinfo) and your token provider run inside
 *   sc_client_step; the rest never waits.
 * - Logging: none. What happens reaches you through on_state (with a reason) and the
 *   status of each call's callback. No token is ever put in a reason.
 * Prefix sc_client_ (and SC_CLIENT_ for constants). */
#ifndef SIDECAST_CLIENT_H
#define SIDECAST_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sc_client sc_client;

/* The connection's state, reported to on_state on every change. */
typedef enum sc_client_state {
    SC_CLIENT_IDLE = 0,   /* created, not started */
    SC_CLIENT_CONNECTING, /* token, TCP, TLS, WebSocket handshake, waiting for welcome */
    SC_CLIENT_READY,      /* welcome received; subscriptions (re)sent */
    SC_CLIENT_BACKOFF,    /* the connection ended; waiting before the next attempt */
    SC_CLIENT_STOPPED,    /* sc_client_stop, or a fatal error (see on_state's code) */
} sc_client_state;

/* How a subscription stands, reported to on_sub. */
typedef enum sc_client_sub_status {
    SC_CLIENT_SUB_LIVE = 0, /* subscribed, with no earlier position: live events */
    SC_CLIENT_SUB_RESUMED,  /* resubscribed with since = the last seq seen: the edge
                             * replays what was missed before live events */
    SC_CLIENT_SUB_GAP,      /* the edge could not replay everything (code:
                             * history_gone, with oldest; replay_limit; replay_failed):
                             * events were lost; live events go on */
    SC_CLIENT_SUB_REFUSED,  /* subscribe refused (code: forbidden, bad_topic,
                             * too_many_subscriptions): the subscription is dropped */
} sc_client_sub_status;

/* One event. Every pointer (not NUL-terminated but topic) lives until the callback returns. */
typedef struct sc_client_event {
    const char *topic;
    uint64_t seq;     /* increases per topic; the position for since */
    const char *data; /* the raw JSON text the publisher sent (numbers as written) */
    size_t data_len;
    const char *json; /* the whole event message as the edge sent it */
    size_t json_len;
    uint64_t skipped; /* SC_CLIENT_SUB_LATEST: the topic's events skipped before this one */
} sc_client_event;

/* The token provider: called at start (before the first connect), on token_expiring (and
 * before the token's own expiry, per the welcome), and after a close 4001. It either calls
 * sc_client_set_token(c, token) and returns 0, or returns -EINPROGRESS and calls
 * sc_client_set_token later (from the client's thread), or fails: -EACCES (the credentials
 * are refused for good: the client stops, on_state gets SC_CLIENT_STOPPED with code 4001),
 * any other negative errno (try again: a connect waits for the backoff; an in-band refresh
 * is tried again after refresh_retry_ms). */
typedef int (*sc_client_token_fn)(void *ud, sc_client *c);
typedef void (*sc_client_event_fn)(void *ud, const sc_client_event *ev);
/* code: the close code that ended a connection (1006 for a drop or a failed connect, 1015
 * for a refused certificate / failed TLS handshake), 0 when none; why: a short reason. */
typedef void (*sc_client_state_fn)(void *ud, sc_client_state state, int code, const char *why);
/* code, message: the edge's error code and message for GAP and REFUSED, else ""; oldest:
 * history_gone's oldest retained seq (0 when unknown). */
typedef void (*sc_client_sub_fn)(void *ud, const char *topic, sc_client_sub_status status,
                                 const char *code, const char *message, uint64_t oldest);
/* The edge took a new token in band ("refreshed"): it is valid until expires_at (epoch s). */
typedef void (*sc_client_refreshed_fn)(void *ud, int64_t expires_at);
/* A publish's outcome: status 0 (acked; duplicate: the edge's store had this id already),
 * -ETIMEDOUT (no ack within the timeout), -EREMOTEIO (the edge refused it: code and message
 * say why, e.g. "forbidden"), -ECANCELED (the client was stopped or destroyed first). */
typedef void (*sc_client_ack_fn)(void *ud, int status, const char *id, bool duplicate,
                                 const char *code, const char *message);
/* An rpc's outcome: status 0 with data (raw JSON text), -ETIMEDOUT, -EREMOTEIO (an error:
 * code, message), -ECONNRESET (the connection ended before the answer: an rpc is not
 * resent, it may have run), -ECANCELED. */
typedef void (*sc_client_rpc_fn)(void *ud, int status, const char *data, size_t data_len,
                                 const char *code, const char *message);

/* Settings. Zero means the default (in brackets); every bound has one. */
typedef struct sc_client_config {
    const char *const *urls;  /* edge URLs, ws:// or wss://, tried in turn (copied) */
    int nurls;                /* 1..SC_CLIENT_MAX_URLS */
    const char *cafile;       /* PEM CA bundle for wss:// (copied); NULL: the system's store */
    sc_client_token_fn token; /* required */
    sc_client_event_fn on_event;
    sc_client_state_fn on_state;
    sc_client_sub_fn on_sub;
    sc_client_refreshed_fn on_refreshed;
    void *ud; /* passed to every callback above */

    int connect_timeout_ms; /* TCP + TLS + handshake + welcome [10000] */
    int backoff_base_ms;    /* first retry's ceiling [200] */
    int backoff_cap_ms;     /* the largest delay [10000] */
    int stable_ms;          /* a connection up this long resets the backoff [10000] */
    int ping_idle_ms;       /* nothing heard this long: ping [30000] */
    int dead_idle_ms;       /* nothing heard this long: the connection is dead [45000] */
    int publish_timeout_ms; /* default ack timeout [10000] */
    int rpc_timeout_ms;     /* default rpc timeout [10000] */
    int refresh_retry_ms;   /* a failed in-band refresh is retried after this [5000] */
    size_t max_message;     /* largest message received, bytes [1 MiB] */
    size_t max_out_bytes;   /* bytes queued for the socket [4 MiB] */
    int max_pending;        /* publishes + rpcs waiting for an answer [256] */
    int max_subs;           /* subscriptions [256] */
} sc_client_config;

#define SC_CLIENT_MAX_URLS 16
#define SC_CLIENT_ID_MAX 64 /* bytes of a publish id */

/* Makes a client (SC_CLIENT_IDLE). cfg is copied. 0 with *out (release with
 * sc_client_destroy), -EINVAL (no urls or token provider, a bad URL, a negative value),
 * -ENOMEM. */
int sc_client_create(const sc_client_config *cfg, sc_client **out);

/* Closes the connection (a close frame when open; no wait), cancels what is pending (their
 * callbacks run, with -ECANCELED, before it returns) and frees c. Accepts NULL. Not from a
 * callback. */
void sc_client_destroy(sc_client *c);

/* Starts connecting (the token provider is called at the next step). 0, -EALREADY. */
int sc_client_start(sc_client *c);

/* Stops: the connection is closed with 1000, pending calls end with -ECANCELED, state
 * SC_CLIENT_STOPPED, sc_client_run returns. Takes effect at the next step; safe from a
 * callback, a signal handler or another thread (it only sets a flag and wakes the fd). */
void sc_client_stop(sc_client *c);

/* The access token to use (copied; the client wipes its copy when done). While connected,
 * a new token is sent in band ("refresh"). 0, -EINVAL (empty or over 8192 bytes). */
int sc_client_set_token(sc_client *c, const char *token);

/* Adds a subscription (sent now when ready, and on every reconnect, with since once an event
 * was seen; since_seq > 0 starts from that position, 0 from now). 0, -EINVAL (bad topic),
 * -EEXIST, -ENOBUFS (max_subs). */
int sc_client_subscribe(sc_client *c, const char *topic, uint64_t since_seq);

/* Options of sc_client_subscribe_opts (flags, or-ed). */
enum {
    /* With no position yet: the topic's latest retained event first, then live ones
     * (since "last"). Once an event was seen, reconnects resume from its seq as always. */
    SC_CLIENT_SUB_FROM_LAST = 1,
    /* Conflation (mode "latest"): when the connection falls behind, older undelivered events
     * of the topic give way to the newest, which tells how many were skipped
     * (sc_client_event.skipped), instead of the edge closing the connection (4008). */
    SC_CLIENT_SUB_LATEST = 2,
};

/* sc_client_subscribe with options (flags above). 0, or as sc_client_subscribe; -EINVAL for
 * an unknown flag. */
int sc_client_subscribe_opts(sc_client *c, const char *topic, uint64_t since_seq, int flags);

/* Removes a subscription. 0, -ENOENT. */
int sc_client_unsubscribe(sc_client *c, const char *topic);

/* The last seq delivered on topic (0 when none). */
uint64_t sc_client_last_seq(const sc_client *c, const char *topic);

/* Publishes data (JSON text, data_len bytes) to topic with id (NULL: one is made; the same
 * id is resent after a reconnect, so the edge stores it once). cb (may be NULL) gets the
 * outcome once; timeout_ms 0: the default. Queued while not connected. 0, -EINVAL (bad
 * topic, id or JSON), -ENOBUFS (max_pending or max_out_bytes), -ESHUTDOWN (stopped). */
int sc_client_publish(sc_client *c, const char *topic, const char *data, size_t data_len,
                      const char *id, int timeout_ms, sc_client_ack_fn cb, void *ud);

/* Calls rpc method (the back end's rpc.<method>) with data (JSON text). cb gets the outcome
 * once. Queued while not connected. 0, -EINVAL, -ENOBUFS, -ESHUTDOWN. */
int sc_client_rpc(sc_client *c, const char *method, const char *data, size_t data_len,
                  int timeout_ms, sc_client_rpc_fn cb, void *ud);

/* The fd to poll: valid from sc_client_create to sc_client_destroy, the same across
 * reconnects (an epoll fd: readable when the socket is ready as the client needs, or when
 * sc_client_stop / sc_client_set_token wakes it). Owned by the client: do not close it. */
int sc_client_fd(const sc_client *c);
/* The poll events to wait for on sc_client_fd: POLLIN (always). */
short sc_client_events(const sc_client *c);
/* Milliseconds until sc_client_step has timed work (0: now; -1: none). */
int sc_client_timeout_ms(const sc_client *c);

/* Does whatever is due: reads, writes, timers, reconnects, callbacks. Never waits
 * (but see "Blocking parts"). 0, or -ESHUTDOWN once stopped. */
int sc_client_step(sc_client *c);

/* Starts when idle, then polls and steps until stopped. 0 after sc_client_stop, or the
 * negative errno of the fatal error that stopped it (-EACCES: the token provider gave
 * up; -EPERM: close 4003; -EPROTO: a close code that cannot be retried (1002, 1007, 1008,
 * 1009); -EKEYREJECTED: the edge's certificate was refused or the TLS handshake failed;
 * -EINVAL: the CA file cannot be used). Returns at once when already stopped. */
int sc_client_run(sc_client *c);

sc_client_state sc_client_get_state(const sc_client *c);

/* The welcome's conn_id and edge of the current connection ("" when not ready). Owned by
 * the client, valid until the next step. */
const char *sc_client_conn_id(const sc_client *c);
const char *sc_client_edge(const sc_client *c);

/* The URL of the connection (or attempt) in progress, or, in SC_CLIENT_BACKOFF and
 * SC_CLIENT_STOPPED, of the one that just ended. Owned by the client (lives as long). */
const char *sc_client_url(const sc_client *c);

/* In SC_CLIENT_BACKOFF: milliseconds until the next attempt; else -1. */
int sc_client_retry_in_ms(const sc_client *c);

/* A short name for a state ("ready"...). Static storage. */
const char *sc_client_state_name(sc_client_state s);

#ifdef __cplusplus
}
#endif

#endif
