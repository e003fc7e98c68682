/* bus.h - the one NATS wrapper (nats.c). Status codes are translated here: callers see 0 or
 * a negative code of err.h, never a natsStatus: SC_ENORESPONDERS (no responders on the
 * subject), -ETIMEDOUT (request deadline passed), -ENOTCONN (closed or not connected),
 * -EINVAL (bad argument: subject, size), -ENOMEM, -EAGAIN (too many requests pending),
 * -EIO (any other failure, logged).
 *
 * Connects to a comma-separated list of URLs, retries a failed first connect, reconnects
 * forever with backoff and jitter, and logs error/disconnect/reconnect/close events.
 * Callbacks of bus_subscribe() run on nats.c's delivery threads: they must not touch any
 * event-loop state directly. */
#ifndef SC_BUS_H
#define SC_BUS_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct bus bus;
typedef struct bus_msg bus_msg; /* a received message (wraps natsMsg) */
typedef struct bus_sub bus_sub;

typedef struct bus_hdr {
    const char *name;
    const char *value;
} bus_hdr;

/* nats.c delivers every subscription's messages on a shared pool of threads (not one thread
 * per subscription, which an edge with thousands of topics could not afford). Call before
 * the first bus_connect to size the pool (default 1; each subscription stays on one thread,
 * so its messages keep their order). */
void bus_set_delivery_threads(int n);

/* Whether a publish (a reply, a request of bus_request_async, an event) is written to the
 * socket at once (the default) or left to nats.c's flusher, which batches writes for
 * throughput at the cost of up to a millisecond per message: measured, an rpc through the
 * edge took 2.0 ms against 1.0 ms for a bare request, both waiting for that flusher. A
 * process that publishes a high rate and answers nothing (the bridge) turns it off. Call
 * before the first bus_connect. */
void bus_set_send_asap(bool on);

/* TLS and credentials for every bus_connect of the process, read from the environment by
 * the services' configuration tables through BUS_CFG_OPTIONS (cfg.h):
 *   NATS_TLS_CA    CA file: TLS is required and the server's certificate checked against it
 *   NATS_TLS_CERT, NATS_TLS_KEY   a client certificate and its key (mutual TLS)
 *   NATS_CREDS     a NATS credentials file (user JWT and NKey seed, decentralised auth)
 *   NATS_USER, NATS_PASSWORD   a user and its password (or user:pass@ in NATS_URL itself;
 *                  a URL's own userinfo wins)
 *   DEV_INSECURE_BUS   development only: allow NATS and Redis connections without any
 *                  credentials (bus_auth_problem, rds_auth_problem)
 * A token goes in NATS_URL itself (nats://token@host:4222); a tls:// URL asks for TLS with
 * the system's trust store. Empty: not used. */
typedef struct bus_security {
    char *ca_file, *cert_file, *key_file, *creds_file, *user, *password;
    int dev_insecure;
} bus_security;
extern bus_security bus_cfg_security;
/* clang-format off */
#define BUS_CFG_OPTIONS                                                                          \
    {"NATS_TLS_CA", CFG_FILE, "", "CA file for NATS over TLS (set: TLS required)", 0, 0, 0,      \
     &bus_cfg_security.ca_file},                                                                 \
    {"NATS_TLS_CERT", CFG_FILE, "", "client certificate for NATS mutual TLS", 0, 0, 0,           \
     &bus_cfg_security.cert_file},                                                               \
    {"NATS_TLS_KEY", CFG_FILE, "", "its private key", CFG_SECRET, 0, 0,                          \
     &bus_cfg_security.key_file},                                                                \
    {"NATS_CREDS", CFG_FILE, "", "NATS credentials file (user JWT + NKey seed)", CFG_SECRET, 0,  \
     0, &bus_cfg_security.creds_file},                                                           \
    {"NATS_USER", CFG_STR, "", "NATS user (with NATS_PASSWORD; user:pass@ in NATS_URL wins)", 0, \
     0, 0, &bus_cfg_security.user},                                                              \
    {"NATS_PASSWORD", CFG_STR, "", "NATS_USER's password", CFG_SECRET, 0, 0,                     \
     &bus_cfg_security.password},                                                                \
    {"DEV_INSECURE_BUS", CFG_BOOL, "off",                                                        \
     "development only: start with NATS and Redis connections that carry no credentials "      \
     "(otherwise refused at start)", 0, 0, 0, &bus_cfg_security.dev_insecure}
/* clang-format on */

/* Why the process must not start on NATS_URL (urls): no credentials at all (no user info in
 * every URL, no NATS_USER with NATS_PASSWORD, no NATS_CREDS, no client certificate) and no
 * DEV_INSECURE_BUS. NULL when it may: a static message otherwise, naming the flag. Pure
 * (reads bus_cfg_security). */
const char *bus_auth_problem(const char *urls);

/* Connects (name: shown in the NATS monitoring endpoints). If no server is reachable yet it
 * keeps retrying in the background and returns 0; check bus_connected(). Returns 0 and *out,
 * or a negative code for invalid URLs / allocation failure. */
int bus_connect(bus **out, const char *urls, const char *name);
/* Drains subscriptions (up to timeout_ms), closes and frees; accepts NULL. */
void bus_destroy(bus *b, int timeout_ms);
int bus_connected(bus *b);
/* How many times messages may have been lost on the way in: disconnects and asynchronous
 * errors (a slow consumer's dropped messages) since the start. Only grows. Thread-safe. */
uint64_t bus_disruptions(bus *b);
/* Bytes published but not yet written to the server (nats.c's buffer; while disconnected,
 * what it keeps for the reconnection), or 0 when unknown. A publisher that must bound what
 * it has in flight checks this before publishing. Thread-safe. */
size_t bus_buffered(bus *b);

/* Publishes data (len bytes) with optional reply subject and headers (nhdr may be 0). */
int bus_publish(bus *b, const char *subject, const char *reply, const void *data, size_t len,
                const bus_hdr *hdrs, size_t nhdr);

/* Publishes through JetStream and waits until a stream has stored it: what a service uses
 * for a message that must not be lost (a core publish while the stream elects a new leader
 * is dropped). Retries through a leader election or a reconnection until timeout_ms; msg_id
 * (may be NULL) lets the stream drop a retried duplicate (Nats-Msg-Id, 2 min window).
 * Returns 0 and, when seq is not NULL, the stream sequence; or a negative code. Blocks:
 * not for a delivery callback that must stay quick. */
int bus_publish_stored(bus *b, const char *subject, const void *data, size_t len,
                       const char *msg_id, int timeout_ms, uint64_t *seq);

/* One request with a deadline. On success *reply is a message the caller frees with
 * bus_msg_destroy(). */
int bus_request(bus *b, const char *subject, const void *data, size_t len, const bus_hdr *hdrs,
                size_t nhdr, int timeout_ms, bus_msg **reply);

/* Several requests in flight at once, sharing one deadline. reqs[i] are sent together;
 * results[i] gets 0 or a bus_err and replies[i] the reply (or NULL). Returns 0 when every
 * request was sent (even if some failed), else a negative code. */
typedef struct bus_req {
    const char *subject;
    const void *data;
    size_t len;
    const bus_hdr *hdrs;
    size_t nhdr;
} bus_req;
int bus_request_many(bus *b, const bus_req *reqs, size_t n, int timeout_ms, bus_msg **replies,
                     int *results);

/* An asynchronous request: fn runs exactly once, on a nats.c thread or the bus's timer
 * thread, never inside bus_request_async: with result 0 and the reply (owned by fn: free it
 * with bus_msg_destroy), or with -ETIMEDOUT / SC_ENORESPONDERS / -ENOTCONN (bus_destroy)
 * and NULL. A reply whose header "Status" is set (404, say) is a reply like any other.
 * Returns 0 (fn will run), or a negative code when nothing was sent (fn will not run).
 * At most BUS_MAX_ASYNC requests are pending per bus; over that: -EAGAIN. */
#define BUS_MAX_ASYNC 65536
typedef void (*bus_reply_fn)(int result, bus_msg *reply, void *ud);
int bus_request_async(bus *b, const char *subject, const void *data, size_t len, int timeout_ms,
                      bus_reply_fn fn, void *ud);
/* The same with headers on the request (the caller's identity, say). */
int bus_request_async_hdrs(bus *b, const char *subject, const void *data, size_t len,
                           const bus_hdr *hdrs, size_t nhdr, int timeout_ms, bus_reply_fn fn,
                           void *ud);

/* fn(ud) runs on a nats.c thread after every reconnection (not the first connect): what
 * was published while disconnected is lost for the core subscriptions, so their owner may
 * want to look for gaps. One hook per bus; set it before the connection can drop. */
void bus_set_reconnect_hook(bus *b, void (*fn)(void *ud), void *ud);

/* Message callback: runs on a nats.c thread; msg is owned by the callee (bus_msg_destroy). */
typedef void (*bus_msg_fn)(bus_msg *msg, void *ud);

/* Subscribes (queue may be NULL). The callback may reply with bus_respond(). */
int bus_subscribe(bus *b, const char *subject, const char *queue, bus_msg_fn fn, void *ud,
                  bus_sub **out);
/* Unsubscribes, waits (at most 5 s) until the callback can no longer run, and frees; accepts
 * NULL. Returns 0, or -ETIMEDOUT when that could not be confirmed: the subscription is then
 * left allocated and the caller must not free the callback's ud either. Never call it from
 * the subscription's own callback. */
int bus_unsubscribe(bus_sub *s);

/* Round trip to the server (bounded): every subscription and publish made before it is in
 * effect there when it returns 0. */
int bus_flush(bus *b, int timeout_ms);

/* A fresh reply subject under this connection's own prefix ("_INBOX.<name>.<nuid>"), for a
 * caller that gathers several replies to one publish on a subscription of its own. 0, or
 * -ENOMEM / -EINVAL (buf too small). */
int bus_new_inbox(bus *b, char *buf, size_t len);

/* Unsubscribes without waiting: release(ud) runs on a nats.c thread once the callback can no
 * longer run (free ud there), and the subscription is freed later by the bus. For event
 * loops that must not block. 0, or -EIO (nothing released: the subscription is kept). */
int bus_unsubscribe_later(bus_sub *s, void (*release)(void *ud));

/* Replies to msg (which must carry a reply subject) with data and headers. */
int bus_respond(bus *b, const bus_msg *msg, const void *data, size_t len, const bus_hdr *hdrs,
                size_t nhdr);
/* Replies with JSON text and a Sidecast-Status header (status 0: no header). */
int bus_respond_json(bus *b, const bus_msg *msg, int status, const char *json);

const char *bus_msg_subject(const bus_msg *m);
const char *bus_msg_reply(const bus_msg *m);
const char *bus_msg_data(const bus_msg *m); /* NUL-terminated by nats.c */
size_t bus_msg_len(const bus_msg *m);
/* Header value or NULL; the string is owned by the message. */
const char *bus_msg_header(const bus_msg *m, const char *name);
void bus_msg_destroy(bus_msg *m);

/* JetStream: makes the stream, or updates it to this configuration when it exists (so every
 * process that owns it may call this at start). republish_to, when set, makes the server
 * republish each stored message to "<republish_to>.<original subject>" with the headers
 * Nats-Stream, Nats-Sequence, Nats-Time-Stamp and Nats-Last-Sequence: live subscribers then
 * see each message's stream sequence without a consumer of their own. */
typedef struct bus_stream_cfg {
    const char *name;
    const char *const *subjects;
    size_t nsubjects;
    int64_t max_age_s;            /* 0: unlimited */
    int64_t max_bytes;            /* -1 or 0: unlimited */
    int64_t max_msgs;             /* -1 or 0: unlimited */
    int64_t max_msgs_per_subject; /* -1 or 0: unlimited */
    int file_storage;             /* 1: file, 0: memory */
    int replicas;                 /* 1..5 */
    const char *republish_to;
    int64_t duplicate_window_s; /* Nats-Msg-Id dedup window; 0: the server's (2 min) */
} bus_stream_cfg;
int bus_stream_ensure(bus *b, const bus_stream_cfg *cfg);

/* Stats for /metrics and /readyz. */
typedef struct bus_stats {
    uint64_t in_msgs, out_msgs, in_bytes, out_bytes, reconnects;
} bus_stats;
void bus_get_stats(bus *b, bus_stats *st);

#endif
