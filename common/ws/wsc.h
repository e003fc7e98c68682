/* wsc.h - the WebSocket core: listeners, worker threads, connections, outbound queues.
 *
 * Knows RFC 6455 and nothing of sidecast.v1: the protocol layer (session.c) and the
 * Autobahn echo server (tests/tools/wsecho.c) are both built on it through wsc_handlers.
 *
 * Threads. EDGE_WORKERS worker threads, each with its own loop (loop.h), its own
 * SO_REUSEPORT listener and the connections it accepted. A connection is touched only by
 * its worker: every handler runs there, and every wsc_conn_* function must be called there.
 * Other threads reach a worker through their own channel into its loop (the edge's
 * fabric uses a mailbox with an eventfd, added with wsc_worker_loop) or wsc_server_drain.
 *
 * Memory. An idle open connection holds its wsc_conn and whatever the handlers hang on it:
 * no read buffer (reads go into the worker's buffer and are handled in place), no write
 * queue (allocated when a write would block, freed when it empties), no message buffer
 * (allocated for a message that spans reads, freed after it), and no zlib state:
 * permessage-deflate is negotiated without context takeover, so one deflate and one inflate
 * stream per worker serve all its connections (a few bytes of parameters per connection).
 *
 * Lifetime. A connection is freed by its worker at the end of a loop iteration, after the
 * closed handler ran, never inside a handler: a handler may call wsc_conn_close on any
 * connection of its worker and go on using the pointer until it returns.
 * Prefix wsc_. */
#ifndef EDGE_WSC_H
#define EDGE_WSC_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "tlsctx.h"
#include "ws_http.h"

typedef struct wsc_server wsc_server;
typedef struct wsc_worker wsc_worker;
typedef struct wsc_conn wsc_conn;

/* An outbound frame (header and payload in one block), reference-counted so one broadcast
 * is framed once and queued on every recipient. References may be taken and dropped on any
 * thread. */
typedef struct wsc_frame wsc_frame;

/* A text or binary frame with a copy of payload; refcount 1. NULL on allocation failure. */
wsc_frame *wsc_frame_new(uint8_t opcode, const void *payload, size_t len);
/* A frame whose payload the caller writes: *payload points at len bytes to fill. */
wsc_frame *wsc_frame_alloc(uint8_t opcode, size_t len, uint8_t **payload);
/* A frame over bytes that are already a complete WebSocket frame (header and payload) and
 * that the caller keeps alive until destroy(ud) runs, at the last unref (on whichever
 * thread drops it). Zero copy: how a broadcast framed once on the bus thread reaches every
 * worker's recipients. */
wsc_frame *wsc_frame_wrap(const uint8_t *bytes, size_t len, void (*destroy)(void *ud), void *ud);
/* Attaches to f (before it is shared) the same message compressed for permessage-deflate
 * (a frame with RSV1, e.g. made once by the fabric for every recipient), taking over the
 * caller's reference to deflated; NULL says compressing f does not pay. Either way f is
 * not compressed again per connection: wsc_conn_send sends `deflated` to connections that
 * negotiated permessage-deflate (and whose window allows it), f to the others. */
void wsc_frame_set_deflated(wsc_frame *f, wsc_frame *deflated);
/* Bytes sent as they are, not a WebSocket frame: what a stream (wsc_handlers.stream) sends.
 * A copy of bytes; refcount 1. NULL on allocation failure. */
wsc_frame *wsc_frame_raw(const void *bytes, size_t len);
wsc_frame *wsc_frame_ref(wsc_frame *f);
void wsc_frame_unref(wsc_frame *f);        /* NULL ok */
size_t wsc_frame_size(const wsc_frame *f); /* bytes on the wire */
/* f's payload (uncompressed, as made; not NUL-terminated) and its length in *len; NULL when
 * f is not one whole data frame (its header could not be read). Valid while f is held. */
const uint8_t *wsc_frame_payload(const wsc_frame *f, size_t *len);

typedef struct wsc_handlers {
    void *ud;
    /* On the worker's thread before it accepts anything / after its last connection is
     * gone. start returns 0, or a negative code that stops the server from starting. */
    int (*worker_start)(wsc_worker *w, void *ud);
    void (*worker_stop)(wsc_worker *w, void *ud);
    /* Any request head, before it is judged as an upgrade: return 1 with a complete HTTP
     * response in *response (malloc'd, *len bytes; the core frees it) to answer it and close,
     * or 0 to go on with the upgrade. For /healthz, /readyz and /metrics on the same port. */
    int (*http)(wsc_conn *c, const ws_http_request *req, char **response, size_t *len);
    /* Any request head that http declined, before it is judged as an upgrade: a response the
     * app streams for as long as the connection lives (Server-Sent Events). Return 0 to go on
     * with the upgrade, or answer with a complete HTTP response head (and body) in *response
     * (malloc'd, *len bytes; the core frees it): WSC_STREAM_ANSWER sends it and closes,
     * WSC_STREAM_OPEN sends it and keeps the connection open as a stream (while draining the
     * core answers 503 instead). An open stream lives as a WebSocket connection does (open,
     * timer and closed run; max_outbound, the slow rule, cork, drain and the connection
     * limits hold), without frames: wsc_conn_send takes wsc_frame_raw bytes, what the peer
     * sends is read and dropped, there are no pings (stream_keepalive instead), and
     * wsc_conn_close calls stream_end, then ends the TCP connection after what is queued.
     * closed runs for every connection this returned non-zero for (wsc_conn_data may be
     * NULL); the request's strings are valid only during the call. */
    int (*stream)(wsc_conn *c, const ws_http_request *req, char **response, size_t *len);
    /* A stream is being closed (wsc_conn_close, drain) with code and reason: the app may
     * still queue its last bytes (not when closed as too slow). */
    void (*stream_end)(wsc_conn *c, uint16_t code, const char *reason);
    /* The handshake was judged acceptable by RFC 6455 and the server's upgrade config;
     * the handler may still refuse it: return 101 to accept, or an HTTP status (401, 403,
     * 503...) to answer instead; *body is an optional one-line text for that answer. The
     * request's strings are valid only during the call. */
    int (*upgrade)(wsc_conn *c, const ws_http_request *req, const ws_http_upgrade *up,
                   const char **body);
    /* The 101 answer is queued; frames may be sent. */
    void (*open)(wsc_conn *c);
    /* A complete text (valid UTF-8) or binary message. data is valid during the call only
     * (it may point into the worker's read buffer) and may be modified. */
    void (*message)(wsc_conn *c, uint8_t opcode, uint8_t *data, size_t len);
    /* The connection's app timer fired (wsc_conn_timer). */
    void (*timer)(wsc_conn *c);
    /* The connection is gone (code: what was sent or received, 1006 for an abort). Called
     * once for every connection whose upgrade handler ran (whatever it answered); release
     * what the app hung on it (wsc_conn_data may be NULL). */
    void (*closed)(wsc_conn *c, uint16_t code);
} wsc_handlers;

#define WSC_STREAM_ANSWER 1 /* wsc_handlers.stream: answer and close */
#define WSC_STREAM_OPEN 2   /* ... answer and stream */

typedef struct wsc_config {
    /* The application's policy: the core writes no name, metric or 4xxx code of its own. */
    const char *name;             /* names the worker threads ("<name>-w0"), log lines and
                                   * the 503 texts ("<name> full: ...") [NULL: "ws"] */
    const char *metric_prefix;    /* metric families "<prefix>_connections", ... [NULL: "ws"] */
    uint16_t slow_close_code;     /* sent when max_outbound is passed [0: 1008, policy] */
    const char *listen;           /* HOST:PORT (port 0: one free port for every worker);
                                   * NULL or "": no plain-text listener */
    const char *tls_listen;       /* HOST:PORT of a TLS listener beside it (wss://); NULL or
                                   * "": none. Both may run at once. */
    tlsctx *tls;                  /* tls_listen's certificate and settings (tlsctx.h), shared
                                   * and reloadable; borrowed, must outlive the server */
    int tls_handshake_timeout_ms; /* TCP accept to complete TLS handshake; then
                                   * handshake_timeout_ms runs for the upgrade request */
    bool tls_ktls;                /* after the handshake, the kernel seals what is sent
                                   * where it offers kTLS (ktls.h); else, and false: tlsrec */
    int workers;                  /* 1..64 */
    ws_http_upgrade_config upgrade;
    size_t max_message;         /* largest incoming message; larger: close 1009 */
    size_t max_message_initial; /* the same until wsc_conn_lift_message_limit (a client
                                 * not yet authenticated holds no more than this);
                                 * 0 or over max_message: max_message */
    size_t max_outbound;        /* bytes queued for one connection; over: closed with
                                 * slow_close_code */
    int max_connections;        /* per process; over: the handshake is answered 503 */
    int max_per_ip;             /* per source address (IPv6: per /64), every worker;
                                 * over: answered 429 (0: no limit) */
    int handshake_timeout_ms;   /* TCP accept to complete upgrade request */
    int ping_interval_ms;       /* a ping after this much silence from the peer (0: off) */
    int pong_timeout_ms;        /* no traffic at all for this long after a ping: abort */
    int close_timeout_ms;       /* wait for the peer's close frame after ours */
    size_t deflate_min;         /* permessage-deflate (upgrade.deflate): messages shorter
                                 * than this are sent uncompressed */
    atomic_int *deflate_live;   /* optional: kept equal to the open connections that
                                 * negotiated permessage-deflate (the edge's fabric compresses
                                 * each event ahead only while there is one); borrowed, must
                                 * outlive the server */
    int write_delay_ms;         /* events (wsc_conn_send_event) wait up to this long for
                                 * more to share their writes; 0: written at once */
    int busy_hold_max_ms;       /* write_delay_ms 0: while the worker is busy (an event came
                                 * within one flush pass's CPU time of the last pass's end,
                                 * and more are expected within the hold), events wait until
                                 * three times its CPU time after that pass, at least 5 ms,
                                 * at most this (0: off); an idle worker, or one behind,
                                 * writes at once */

    /* Streams (wsc_handlers.stream) */
    int stream_keepalive_ms;      /* stream_keepalive is queued after this long with nothing
                                   * queued (0: never) */
    const char *stream_keepalive; /* ... those bytes (an SSE comment); borrowed */
} wsc_config;

/* Starts the workers (each binds its listener first, so a bad address fails here). Returns
 * 0 and *out, or a negative errno after logging why. cfg and h are copied; the strings in
 * cfg->upgrade are borrowed and must outlive the server. */
int wsc_server_start(wsc_server **out, const wsc_config *cfg, const wsc_handlers *h);
/* The ports bound (useful with port 0); 0 for a listener that is not configured. */
int wsc_server_port(const wsc_server *s);
int wsc_server_tls_port(const wsc_server *s);
/* Any thread: stop accepting, then close every connection with 1001 ("<name> draining"),
 * spread in batches over timeout_ms so clients do not all reconnect at once. Returns at
 * once. */
void wsc_server_drain(wsc_server *s, int timeout_ms);
/* Any thread: connections open right now, all workers. */
int wsc_server_connections(const wsc_server *s);
/* Stops the workers (closing what is still open with 1001, no waiting) and frees. NULL ok. */
void wsc_server_stop(wsc_server *s);

/* Worker accessors (worker thread). */
int wsc_worker_index(const wsc_worker *w);
loop *wsc_worker_loop(wsc_worker *w);
void *wsc_worker_data(const wsc_worker *w);
void wsc_worker_set_data(wsc_worker *w, void *data);
/* Deferred work on the worker thread at the end of each loop iteration, before the
 * iteration's writes (and again before each further round of them): draining the
 * fabric's mailbox, confirming new NATS subscriptions before "subscribed" goes
 * out. */
void wsc_worker_set_before_sleep(wsc_worker *w, void (*fn)(wsc_worker *w));

/* Connection functions: the connection's worker thread only. */
wsc_worker *wsc_conn_worker(const wsc_conn *c);
uint64_t wsc_conn_id(const wsc_conn *c); /* unique in the process */
void *wsc_conn_data(const wsc_conn *c);
void wsc_conn_set_data(wsc_conn *c, void *data);
/* Queues a frame (takes its own reference; the caller keeps its). Returns 0, -EPIPE when
 * the connection no longer sends (closing), -ENOBUFS when the queue went over max_outbound
 * (the connection is then being closed with slow_close_code), or -ENOMEM (aborted). With
 * permessage-deflate negotiated, a data frame goes out compressed: its attached compressed twin
 * (wsc_frame_set_deflated), or else, if nobody considered compressing it yet, compressed here by
 * the worker's deflate stream when it is at least deflate_min bytes and the result is smaller. */
int wsc_conn_send(wsc_conn *c, wsc_frame *f);
/* The same for a broadcast event: with write_delay_ms, the worker writes it within that
 * delay, together with whatever else queued meanwhile (one write per connection for all
 * of it), unless something else (a reply, a control frame) makes the worker write sooner. */
int wsc_conn_send_event(wsc_conn *c, wsc_frame *f);
/* The oldest event this loop turn takes was handed to the worker at queued_us
 * (CLOCK_MONOTONIC microseconds, by another thread). One that has waited longer than two of
 * the busy rule's periods (a pass and its hold) and 5 ms says the worker is behind, not
 * merely busy: this turn's writes are then
 * not held by the busy rule (a fixed write_delay_ms still applies), so a worker that fell
 * behind catches up at full speed. Worker thread; once per turn is enough. */
void wsc_worker_event_age(wsc_worker *w, uint64_t queued_us);
/* Holds the connection's writes: what is queued stays queued (still bounded by max_outbound)
 * until wsc_conn_uncork. Only an open connection is corked, and a closing handshake uncorks
 * it. The edge corks a client whose "subscribed" or "welcome" must wait for NATS. */
void wsc_conn_cork(wsc_conn *c);
void wsc_conn_uncork(wsc_conn *c);
/* Counts n bytes that the app keeps for c outside its queue (events held back while a
 * subscription catches up) in max_outbound, as if queued. Returns 0; -EPIPE when c no
 * longer sends; -ENOBUFS when that would pass the bound: c is then being closed with
 * slow_close_code, as by wsc_conn_send. wsc_conn_unhold gives bytes back when they are sent or
 * dropped. */
int wsc_conn_hold(wsc_conn *c, size_t n);
void wsc_conn_unhold(wsc_conn *c, size_t n);
/* Closes c with slow_close_code and reason at once, dropping what is queued but the frame being
 * written (a peer that reads nothing will not read that either). */
void wsc_conn_close_slow(wsc_conn *c, const char *reason);
/* From now on the connection may send messages up to max_message instead of
 * max_message_initial (the edge calls it when the client has authenticated). Idempotent. */
void wsc_conn_lift_message_limit(wsc_conn *c);
/* Convenience: a new text frame with a copy of text, sent and released. */
int wsc_conn_send_text(wsc_conn *c, const char *text, size_t len);
/* Starts the closing handshake with code and reason (<= 123 bytes of UTF-8): nothing more
 * is sent or delivered; the TCP connection is closed after the peer's close frame or
 * close_timeout_ms. Idempotent. */
void wsc_conn_close(wsc_conn *c, uint16_t code, const char *reason);
/* Arms the app timer at `when` on the worker's loop clock (loop_now), 0 to cancel. */
void wsc_conn_timer(wsc_conn *c, uint64_t when);
/* Bytes queued and not yet written. */
size_t wsc_conn_queued(const wsc_conn *c);
/* Peer address as text (for logs), "" when unknown. */
const char *wsc_conn_peer(const wsc_conn *c);
/* True when c came through the TLS listener. */
int wsc_conn_tls(const wsc_conn *c);
/* True when c is a stream (wsc_handlers.stream), not a WebSocket connection. */
int wsc_conn_is_stream(const wsc_conn *c);

#endif
