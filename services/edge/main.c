/* edge - the WebSocket server of Sidecast: configuration and wiring.
 *
 * bus (NATS) -> fabric (frame once, a mailbox per worker) -> workers (wsc + session) -> sockets.
 * The main thread waits for signals; SIGTERM/SIGINT drain the connections with 1001 over
 * EDGE_DRAIN_TIMEOUT_MS, then exit 0. */
#include "api.h"
#include "bus.h"
#include "cfg.h"
#include "contract.h"
#include "fabric.h"
#include "keys.h"
#include "log.h"
#include "metrics.h"
#include "ns.h"
#include "proto/msg.h"
#include "proto/topic.h"
#include "rds.h"
#include "session.h"
#include "token.h"
#include "ws/tlsctx.h"
#include "ws/wsc.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define SERVICE "edge"

static struct {
    char *nats_url, *listen, *edge_id, *public_url, *origins, *keys_file, *issuer, *audience;
    char *jwks_url, *jwks_ca, *sub_claim, *pub_claim, *default_sub, *default_pub;
    char *rpc_claim, *default_rpc, *client_stream, *topics_file, *hook_connect_failure;
    int hook_connect, hook_disconnect;
    char *stream, *inbox_stream, *storage, *redis_url, *tls_listen, *tls_cert, *tls_key, *tls_ktls;
    int log_level, deflate, query_token;
    long workers, leeway, max_message, max_message_auth, max_connections, max_per_ip,
        outbound_limit, rate_limit, rate_burst, ping_ms, pong_ms, auth_ms, handshake_ms, drain_ms,
        close_ms, write_delay_ms, warning_s, max_subs, max_errors, history_age_s, history_bytes,
        history_replicas, inbox_bytes, inbox_per_user, max_publish, replay_inflight, replay_max,
        presence_ttl, max_per_user, inbox_hold_ms, deflate_min, stall_ms, pub_rate, pub_burst,
        user_pub_rate, user_pub_burst, keys_refresh_s, tls_hs_ms, rpc_timeout_ms, rpc_inflight,
        max_rpc_reply, client_age_s, client_bytes, dedup_window_s, pub_inflight, hook_timeout_ms,
        hook_inflight, conflate_after;
    long busy_hold_max_ms; /* EDGE_BUSY_HOLD_MAX_MS */
    int sse;
    long sse_retry_ms, sse_heartbeat_ms, sse_max_topics; /* Server-Sent Events (sse.h) */
    long api_threads, api_queue, api_max_request, api_max_data, api_topics, api_history,
        api_timeout_ms, api_gather_ms; /* the server API (api.h) */
} cfg;

/* clang-format off */
static const cfg_opt options[] = {
    {"NATS_URL", CFG_STR, "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated",
     CFG_REQUIRED, 0, 0, &cfg.nats_url},
    BUS_CFG_OPTIONS,
    RDS_CFG_OPTIONS,
    {"LOG_LEVEL", CFG_LEVEL, "info", "debug, info, warn or error", 0, 0, 0, &cfg.log_level},
    {"EDGE_LISTEN", CFG_ADDR, "0.0.0.0:8090",
     "plain-text WebSocket listen address (path /ws); empty: none (EDGE_TLS_LISTEN only)", 0, 0,
     0, &cfg.listen},
    {"EDGE_TLS_LISTEN", CFG_ADDR, "",
     "TLS (wss://) listen address beside EDGE_LISTEN; empty: no TLS listener", 0, 0, 0,
     &cfg.tls_listen},
    {"EDGE_TLS_CERT", CFG_FILE, "",
     "PEM file: the TLS certificate, then its chain (read again on SIGHUP)", 0, 0, 0,
     &cfg.tls_cert},
    {"EDGE_TLS_KEY", CFG_FILE, "", "PEM file: the certificate's private key (read again on "
     "SIGHUP)", 0, 0, 0, &cfg.tls_key},
    {"EDGE_TLS_HANDSHAKE_TIMEOUT_MS", CFG_INT, "5000",
     "time from TCP accept to a complete TLS handshake", 0, 100, 600000, &cfg.tls_hs_ms},
    {"EDGE_TLS_KTLS", CFG_STR, "auto",
     "auto: after the TLS handshake the kernel seals what is sent (kTLS TX) where it offers "
     "the tls ULP and the suite, else the edge does; off: the edge always does", 0, 0, 0,
     &cfg.tls_ktls},
    {"EDGE_ID", CFG_STR, "", "this edge's name in welcome and logs (default: host name)", 0, 0,
     0, &cfg.edge_id},
    {"EDGE_WORKERS", CFG_INT, "0", "I/O worker threads (0: one per core)", 0, 0, 64,
     &cfg.workers},
    {"EDGE_PUBLIC_URL", CFG_STR, "ws://localhost:8090/ws", "URL clients use (logged)", 0, 0, 0,
     &cfg.public_url},
    {"ALLOWED_ORIGINS", CFG_STR, "http://localhost:8080,http://127.0.0.1:8080",
     "browser origins allowed (comma-separated; * for any; no Origin is always allowed)", 0, 0,
     0, &cfg.origins},
    {"JWT_PUBLIC_KEYS", CFG_FILE, NULL,
     "JWKS or PEM public keys of the token signer (this, JWT_JWKS_URL, or both)", 0, 0, 0,
     &cfg.keys_file},
    {"JWT_JWKS_URL", CFG_STR, "",
     "https:// JWKS of an OpenID provider (its jwks_uri): its keys are fetched at start, again "
     "when its Cache-Control says, and on a token of an unknown kid", 0, 0, 0, &cfg.jwks_url},
    {"JWT_JWKS_CA", CFG_STR, "",
     "CA certificates (PEM file) to trust for JWT_JWKS_URL instead of the system's", 0, 0, 0,
     &cfg.jwks_ca},
    {"JWT_ISSUER", CFG_STR, "sidecast", "required iss", CFG_REQUIRED, 0, 0, &cfg.issuer},
    {"JWT_AUDIENCE", CFG_STR, "sidecast", "required member of aud", CFG_REQUIRED, 0, 0,
     &cfg.audience},
    {"JWT_LEEWAY", CFG_INT, "30", "seconds of clock skew for exp/nbf/iat", 0, 0, 300,
     &cfg.leeway},
    {"JWT_SUB_TOPICS_CLAIM", CFG_STR, "sub_topics",
     "the claim with the topic patterns a token may subscribe to (an array, or a string of "
     "patterns separated by spaces or commas): tokens of another identity provider name it "
     "their own way", 0, 0, 0, &cfg.sub_claim},
    {"JWT_PUB_TOPICS_CLAIM", CFG_STR, "pub_topics",
     "the same for the patterns it may publish to", 0, 0, 0, &cfg.pub_claim},
    {"JWT_DEFAULT_SUB_TOPICS", CFG_STR, "",
     "patterns (comma-separated) for a token without JWT_SUB_TOPICS_CLAIM (empty: none; the "
     "user's own inbox is always allowed)", 0, 0, 0, &cfg.default_sub},
    {"JWT_DEFAULT_PUB_TOPICS", CFG_STR, "",
     "patterns (comma-separated) for a token without JWT_PUB_TOPICS_CLAIM (empty: none)", 0,
     0, 0, &cfg.default_pub},
    {"JWT_RPC_CLAIM", CFG_STR, "rpc_methods",
     "the claim with the methods a client may call over its socket (rpc): patterns as for "
     "topics, an array or a string separated by spaces or commas", 0, 0, 0, &cfg.rpc_claim},
    {"JWT_DEFAULT_RPC_METHODS", CFG_STR, "",
     "method patterns (comma-separated) for a token without JWT_RPC_CLAIM (empty: none)", 0, 0,
     0, &cfg.default_rpc},
    {"EDGE_TOPICS", CFG_FILE, "",
     "topic namespaces (JSON): per topic prefix, who may subscribe (claim, hook) and publish "
     "(claim, hook, nobody), replay, occupancy events, what a failed hook means "
     "(docs/BACKENDS.md); empty: every topic as the token's claims say", 0, 0, 0,
     &cfg.topics_file},
    {"EDGE_HOOK_TIMEOUT_MS", CFG_INT, "2000",
     "a hook (hooks.connect, .subscribe, .publish) not answered by then has failed", 0, 50,
     60000, &cfg.hook_timeout_ms},
    {"EDGE_HOOK_INFLIGHT", CFG_INT, "1024",
     "hooks waiting for their answer on this edge; more have failed at once", 0, 1, 100000,
     &cfg.hook_inflight},
    {"EDGE_HOOK_CONNECT", CFG_BOOL, "false",
     "ask hooks.connect before welcome: it may refuse (4003) or grant more topics", 0, 0, 0,
     &cfg.hook_connect},
    {"EDGE_HOOK_CONNECT_FAILURE", CFG_STR, "deny",
     "a hooks.connect that fails: deny (close 1013, try again later) or allow", 0, 0, 0,
     &cfg.hook_connect_failure},
    {"EDGE_HOOK_DISCONNECT", CFG_BOOL, "false",
     "tell hooks.disconnect when an authenticated connection ends", 0, 0, 0,
     &cfg.hook_disconnect},
    {"EDGE_RPC_TIMEOUT_MS", CFG_INT, "5000",
     "a client's rpc (a NATS request to rpc.<method>) not answered by then: error timeout", 0,
     100, 600000, &cfg.rpc_timeout_ms},
    {"EDGE_RPC_INFLIGHT", CFG_INT, "8", "rpc calls in flight per connection (more: error busy)",
     0, 1, 1024, &cfg.rpc_inflight},
    {"EDGE_MAX_RPC_REPLY", CFG_INT, "65536",
     "bytes of an rpc's reply passed on to the client (more: error bad_reply)", 0, 2, 1048576,
     &cfg.max_rpc_reply},
    {"JWT_KEYS_REFRESH_MIN_S", CFG_INT, "10",
     "a token of an unknown kid asks auth for its keys (auth.jwks) at most this often; "
     "JWT_PUBLIC_KEYS is read again on SIGHUP, and auth's announcements (auth.keys) are "
     "taken as they come", 0, 1, 3600, &cfg.keys_refresh_s},
    {"EDGE_QUERY_TOKEN", CFG_BOOL, "on",
     "accept the access token in the URL (?access_token=, RFC 6750 2.3: browsers cannot set "
     "headers on a WebSocket; it is never logged, but proxies log query strings). off: the "
     "Authorization header or an auth message only; a URL token is closed 4001", 0, 0, 0,
     &cfg.query_token},
    {"EDGE_MAX_MESSAGE", CFG_INT, "65536", "largest client message in bytes (over: 1009)", 0,
     128, 16777216, &cfg.max_message},
    {"EDGE_MAX_MESSAGE_BEFORE_AUTH", CFG_INT, "16384",
     "largest client message in bytes until the client has authenticated (over: 1009): an "
     "auth message fits, an unauthenticated client cannot hold EDGE_MAX_MESSAGE bytes", 0,
     128, 16777216, &cfg.max_message_auth},
    {"EDGE_DEFLATE", CFG_BOOL, "on",
     "accept permessage-deflate (RFC 7692, no context takeover both ways): each event is "
     "compressed once for all the clients that negotiated it", 0, 0, 0, &cfg.deflate},
    {"EDGE_DEFLATE_MIN", CFG_INT, "64",
     "messages shorter than this (payload bytes) go out uncompressed", 0, 0, 16777216,
     &cfg.deflate_min},
    {"EDGE_MAX_PUBLISH", CFG_INT, "65536", "largest publish data (compact JSON bytes)", 0, 16,
     16777216, &cfg.max_publish},
    {"EDGE_PUBLISH_BYTES_PER_S", CFG_INT, "65536",
     "client publish bytes (data and topic) a second per connection; over: error "
     "publish_quota", 0, 1, 1073741824, &cfg.pub_rate},
    {"EDGE_PUBLISH_BYTES_BURST", CFG_INT, "262144",
     "... and at once (at least EDGE_MAX_PUBLISH)", 0, 16, 1073741824, &cfg.pub_burst},
    {"EDGE_USER_PUBLISH_BYTES_PER_S", CFG_INT, "131072",
     "client publish bytes a second per user on this edge, all its connections together; "
     "over: error publish_quota", 0, 1, 1073741824, &cfg.user_pub_rate},
    {"EDGE_USER_PUBLISH_BYTES_BURST", CFG_INT, "524288",
     "... and at once (at least EDGE_MAX_PUBLISH)", 0, 16, 1073741824, &cfg.user_pub_burst},
    {"EDGE_MAX_CONNECTIONS", CFG_INT, "10000", "connections per edge process (over: 503)", 0,
     1, 1000000, &cfg.max_connections},
    {"EDGE_MAX_CONNECTIONS_PER_IP", CFG_INT, "0",
     "connections per source address (IPv6: per /64) on this edge; over: the upgrade is "
     "answered 429 (0: no limit; leave it off behind a proxy or ingress, where every "
     "connection comes from the proxy's address)", 0, 0, 1000000, &cfg.max_per_ip},
    {"EDGE_OUTBOUND_LIMIT", CFG_INT, "1048576",
     "bytes queued for one client before it is closed 4008", 0, 4096, 1073741824,
     &cfg.outbound_limit},
    {"EDGE_CONFLATE_AFTER", CFG_INT, "65536",
     "subscriptions with mode \"latest\": while more than this many bytes wait to be written "
     "to the client, their topic's newest event replaces the one waiting before it (told as "
     "\"skipped\") instead of queuing (below EDGE_OUTBOUND_LIMIT)", 0, 0, 1073741824,
     &cfg.conflate_after},
    {"EDGE_RATE_LIMIT", CFG_INT, "50", "client messages per second (over: 4029)", 0, 1,
     1000000, &cfg.rate_limit},
    {"EDGE_RATE_BURST", CFG_INT, "100", "client messages in a burst", 0, 1, 1000000,
     &cfg.rate_burst},
    {"EDGE_PING_INTERVAL_MS", CFG_INT, "25000", "ping after this much client silence", 0, 1000,
     3600000, &cfg.ping_ms},
    {"EDGE_PONG_TIMEOUT_MS", CFG_INT, "10000", "no answer to a ping for this long: closed", 0,
     100, 3600000, &cfg.pong_ms},
    {"EDGE_AUTH_TIMEOUT_MS", CFG_INT, "5000", "time for the first auth message", 0, 100,
     600000, &cfg.auth_ms},
    {"EDGE_HANDSHAKE_TIMEOUT_MS", CFG_INT, "10000", "time for the HTTP upgrade request", 0, 100,
     600000, &cfg.handshake_ms},
    {"EDGE_CLOSE_TIMEOUT_MS", CFG_INT, "2000",
     "after our close frame: wait this long for the peer's, then drop the connection", 0, 100,
     600000, &cfg.close_ms},
    {"EDGE_WRITE_DELAY_MS", CFG_INT, "0",
     "events wait up to this long to share one write per connection with the events after "
     "them (fewer writes, more latency); replies never wait. 0: no fixed delay (see "
     "EDGE_BUSY_HOLD_MAX_MS)", 0, 0, 10000,
     &cfg.write_delay_ms},
    {"EDGE_BUSY_HOLD_MAX_MS", CFG_INT, "100",
     "with EDGE_WRITE_DELAY_MS 0: while a worker is busy (events keep coming within one write "
     "pass's CPU time, often enough to share writes), its next pass waits three times "
     "the last one's CPU time (at least 5 ms, at most this), so events share writes; an idle "
     "worker writes at once. 0: off", 0, 0, 1000, &cfg.busy_hold_max_ms},
    {"EDGE_DRAIN_TIMEOUT_MS", CFG_INT, "10000", "SIGTERM: close every connection within", 0, 0,
     600000, &cfg.drain_ms},
    {"EDGE_TOKEN_WARNING_S", CFG_INT, "30", "token_expiring this long before exp", 0, 1, 3600,
     &cfg.warning_s},
    {"EDGE_MAX_SUBSCRIPTIONS", CFG_INT, "100", "topics per connection", 0, 1, 100000,
     &cfg.max_subs},
    {"EDGE_SSE", CFG_BOOL, "on",
     "Server-Sent Events on the edge's port: GET /sse?topic=A&topic=B (docs/EDGE.md)", 0, 0, 0,
     &cfg.sse},
    {"EDGE_SSE_RETRY_MS", CFG_INT, "2000",
     "the retry: an SSE stream sends first: how long a browser waits before it reconnects",
     0, 100, 600000, &cfg.sse_retry_ms},
    {"EDGE_SSE_HEARTBEAT_MS", CFG_INT, "15000",
     "an SSE stream quiet for this long gets a comment (\": ping\"): proxies keep it, a dead "
     "peer is found by the write (0: none)", 0, 0, 3600000, &cfg.sse_heartbeat_ms},
    {"EDGE_SSE_MAX_TOPICS", CFG_INT, "32",
     "topics of one SSE request (and at most EDGE_MAX_SUBSCRIPTIONS; over: 400)", 0, 1, 1024,
     &cfg.sse_max_topics},
    {"EDGE_MAX_ERRORS", CFG_INT, "20", "error replies before a connection is closed 1008", 0,
     1, 1000000, &cfg.max_errors},
    {"EDGE_REPLAY_INFLIGHT", CFG_INT, "32",
     "stream reads in flight per worker for replays (since, gaps)", 0, 1, 4096,
     &cfg.replay_inflight},
    {"EDGE_REPLAY_MAX_EVENTS", CFG_INT, "10000",
     "events one replay may send (over: error replay_limit, then live)", 0, 1, 100000000,
     &cfg.replay_max},
    {"EDGE_INBOX_HOLD_MS", CFG_INT, "500",
     "after connect, inbox events wait this long (at most) for a subscribe {user, since}, so "
     "that a resuming client gets its inbox in order (0: no wait)", 0, 0, 10000,
     &cfg.inbox_hold_ms},
    {"EDGE_STALL_TIMEOUT_MS", CFG_INT, "15000",
     "a replay (since, a gap) whose client reads nothing, its outbound queue over half its "
     "bound, for this long: closed 4008", 0, 100, 3600000, &cfg.stall_ms},
    {"REDIS_URL", CFG_STR, "redis://127.0.0.1:6379/0",
     "Redis for presence (empty: no presence, no per-user limit)", 0, 0, 0, &cfg.redis_url},
    {"PRESENCE_TTL_S", CFG_INT, "15",
     "heartbeat TTL: a dead edge's connections vanish from presence within it", 0, 3, 3600,
     &cfg.presence_ttl},
    {"MAX_CONNECTIONS_PER_USER", CFG_INT, "0",
     "connections per user on all edges, checked in Redis at connect (over: close 4009; 0: "
     "no limit)", 0, 0, 1000000, &cfg.max_per_user},
    {"HISTORY_STREAM", CFG_STR, "SIDECAST", "JetStream stream of topic events (events.>)", 0,
     0, 0, &cfg.stream},
    {"HISTORY_INBOX_STREAM", CFG_STR, "SIDECAST_INBOX",
     "JetStream stream of the users' inboxes (users.>): kept apart, so that topic traffic "
     "can never evict them", 0, 0, 0, &cfg.inbox_stream},
    {"HISTORY_MAX_AGE_S", CFG_INT, "3600", "how long events and inbox messages are kept for "
     "replay", 0, 1, 31536000, &cfg.history_age_s},
    {"HISTORY_MAX_BYTES", CFG_INT, "1073741824", "events stream size bound in bytes", 0,
     1048576, 0x7fffffffffffffffL, &cfg.history_bytes},
    {"HISTORY_INBOX_MAX_BYTES", CFG_INT, "268435456", "inbox stream size bound in bytes", 0,
     1048576, 0x7fffffffffffffffL, &cfg.inbox_bytes},
    {"HISTORY_INBOX_MAX_PER_USER", CFG_INT, "10000",
     "inbox messages kept per user (older ones go first): one user's flood cannot evict "
     "the others' inboxes", 0, 1, 100000000, &cfg.inbox_per_user},
    {"HISTORY_STORAGE", CFG_STR, "file", "file or memory", 0, 0, 0, &cfg.storage},
    {"HISTORY_CLIENT_STREAM", CFG_STR, "SIDECAST_CLIENT",
     "JetStream stream of what clients publish (client.>): a publish with an id is stored "
     "through it with the id as its message id, so a retry is stored once (empty: none; a "
     "publish with an id is then acked at once, without that)", 0, 0, 0, &cfg.client_stream},
    {"HISTORY_CLIENT_MAX_AGE_S", CFG_INT, "3600", "how long client publishes are kept", 0, 60,
     365L * 86400, &cfg.client_age_s},
    {"HISTORY_CLIENT_MAX_BYTES", CFG_INT, "268435456", "client stream size bound in bytes", 0,
     1048576, 0x7fffffffffffffffL, &cfg.client_bytes},
    {"PUBLISH_DEDUP_WINDOW_S", CFG_INT, "120",
     "a client publish with an id already stored within this window is a duplicate: not "
     "stored again, acked with duplicate:true", 0, 1, 86400, &cfg.dedup_window_s},
    {"EDGE_PUBLISH_INFLIGHT", CFG_INT, "64",
     "publishes with an id waiting for their store's ack, per connection (more: error busy)",
     0, 1, 4096, &cfg.pub_inflight},
    {"HISTORY_REPLICAS", CFG_INT, "1", "stream replicas (a NATS cluster: 3)", 0, 1, 5,
     &cfg.history_replicas},
    {"EDGE_API_THREADS", CFG_INT, "2",
     "threads answering the server API (api.*; 0: this edge does not serve it, but still "
     "answers the other edges' disconnects and counts)", 0, 0, 64,
     &cfg.api_threads},
    {"EDGE_API_QUEUE", CFG_INT, "256",
     "server API requests waiting for those threads (more: 503 busy)", 0, 1, 65536,
     &cfg.api_queue},
    {"EDGE_API_MAX_REQUEST", CFG_INT, "262144", "largest server API request in bytes (over: 413)",
     0, 256, 1048576, &cfg.api_max_request},
    {"EDGE_API_MAX_DATA", CFG_INT, "65536",
     "largest data of an api.publish or api.broadcast (compact JSON bytes)", 0, 16, 1048576,
     &cfg.api_max_data},
    {"EDGE_API_MAX_TOPICS", CFG_INT, "100", "topics of one api.broadcast", 0, 1, 1000,
     &cfg.api_topics},
    {"EDGE_API_HISTORY_MAX", CFG_INT, "1000", "largest limit of an api.history request", 0, 1,
     10000, &cfg.api_history},
    {"EDGE_API_TIMEOUT_MS", CFG_INT, "3000",
     "each bus call a server API request makes (a JetStream ack, a direct get, presence)", 0,
     100, 60000, &cfg.api_timeout_ms},
    {"EDGE_API_GATHER_MS", CFG_INT, "300",
     "how long api.disconnect and api.counts gather the answers of every edge", 0, 20, 10000,
     &cfg.api_gather_ms},
};
/* clang-format on */

static bus *B;
static wsc_server *S;
static presence *P;
static api *A;
static quota *Q;
static _Atomic int stream_ok, draining;

/* The TLS listener's certificate: loaded at start (a bad file stops the edge), read again on
 * SIGHUP (a bad file is logged and the old pair kept; open connections are not touched). */
static tlsctx *T;
static metric *m_tls_reload_ok, *m_tls_reload_failed, *m_tls_not_after;

static int tls_open(void)
{
    bool any = cfg.tls_listen[0] || cfg.tls_cert[0] || cfg.tls_key[0];
    if (!any) return 0;
    if (!cfg.tls_listen[0] || !cfg.tls_cert[0] || !cfg.tls_key[0]) {
        fprintf(stderr, "edge: config: EDGE_TLS_LISTEN, EDGE_TLS_CERT and EDGE_TLS_KEY go "
                        "together\n");
        return -1;
    }
    char err[512];
    if (tlsctx_create(&T, cfg.tls_cert, cfg.tls_key, err, sizeof err) != 0) {
        fprintf(stderr, "edge: config: EDGE_TLS_CERT / EDGE_TLS_KEY: %s\n", err);
        return -1;
    }
    static const char help[] = "certificate reloads (SIGHUP) by result";
    m_tls_reload_ok = metrics_counter("sc_edge_tls_reloads_total", "result=\"ok\"", help);
    m_tls_reload_failed = metrics_counter("sc_edge_tls_reloads_total", "result=\"failed\"", help);
    m_tls_not_after = metrics_gauge("sc_edge_tls_cert_not_after_seconds", NULL,
                                    "the TLS certificate's notAfter (Unix time)");
    metric_set(m_tls_not_after, tlsctx_not_after(T));
    return 0;
}

static void tls_reload(void)
{
    if (!T) return;
    char err[512];
    if (tlsctx_reload(T, err, sizeof err) != 0) {
        metric_inc(m_tls_reload_failed);
        log_error("tls certificate not reloaded: the old one stays", "error=\"%s\"", err);
        return;
    }
    metric_inc(m_tls_reload_ok);
    metric_set(m_tls_not_after, tlsctx_not_after(T));
    log_info("tls certificate reloaded", "cert=%s not_after=%lld", cfg.tls_cert,
             (long long)tlsctx_not_after(T));
}

static int is_ready(char *detail, size_t n)
{
    int nats = B && bus_connected(B);
    snprintf(detail, n, "nats=%s stream=%s presence=%s draining=%s", nats ? "up" : "down",
             atomic_load(&stream_ok) ? "ok" : "missing",
             !P                     ? "off"
             : presence_degraded(P) ? "degraded"
                                    : "ok",
             atomic_load(&draining) ? "yes" : "no");
    return nats && atomic_load(&stream_ok) && !atomic_load(&draining);
}

static int http_answer(char **resp, size_t *len, int status, const char *ctype, const char *body,
                       size_t blen)
{
    const char *text = status == 200   ? "OK"
                       : status == 503 ? "Service Unavailable"
                                       : "Method Not Allowed";
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                      status, text, ctype, blen);
    *resp = malloc((size_t)hl + blen);
    if (!*resp) return 1;
    memcpy(*resp, head, (size_t)hl);
    memcpy(*resp + hl, body, blen);
    *len = (size_t)hl + blen;
    return 1;
}

/* /healthz, /readyz, /metrics on the WebSocket port (a worker thread). */
static int on_http(wsc_conn *c, const ws_http_request *req, char **resp, size_t *len)
{
    (void)c;
    const char *paths[] = {"/healthz", "/readyz", "/metrics"};
    int which = -1;
    for (int i = 0; i < 3; i++)
        if (req->path.n == strlen(paths[i]) && memcmp(req->path.p, paths[i], req->path.n) == 0)
            which = i;
    if (which < 0) return 0;
    if (req->method.n != 3 || memcmp(req->method.p, "GET", 3) != 0) {
        static const char msg[] = "{\"error\":\"method_not_allowed\"}\n";
        return http_answer(resp, len, 405, "application/json", msg, sizeof msg - 1);
    }
    if (which == 0) {
        static const char ok[] = "{\"status\":\"ok\"}\n";
        return http_answer(resp, len, 200, "application/json", ok, sizeof ok - 1);
    }
    if (which == 1) {
        char detail[160], body[256];
        int ready = is_ready(detail, sizeof detail);
        int n = snprintf(body, sizeof body, "{\"status\":\"%s\",\"detail\":\"%s\"}\n",
                         ready ? "ready" : "not_ready", detail);
        return http_answer(resp, len, ready ? 200 : 503, "application/json", body, (size_t)n);
    }
    size_t ml = 0;
    char *text = metrics_render(&ml);
    if (!text) return 0;
    http_answer(resp, len, 200, "text/plain; version=0.0.4", text, ml);
    free(text);
    return 1;
}

/* Splits ALLOWED_ORIGINS (modified in place) into at most max entries. */
static size_t split_origins(char *list, const char **out, size_t max)
{
    size_t n = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok && n < max;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        if (*tok) out[n++] = tok;
    }
    return n;
}

/* The two history streams: topic events, and the users' inboxes apart, so that no amount
 * of topic traffic evicts an inbox (an order fill). The events stream is ensured first: a
 * stream of an older edge held users.> too, and the inbox stream cannot take the subjects
 * until it has let them go. */
static void ensure_stream(void)
{
    static const char *const events[] = {SUBJ_EVENTS_PREFIX ">"};
    static const char *const inbox[] = {SUBJ_USERS_PREFIX ">"};
    bus_stream_cfg sc = {
        .name = cfg.stream,
        .subjects = events,
        .nsubjects = 1,
        .max_age_s = cfg.history_age_s,
        .max_bytes = cfg.history_bytes,
        .file_storage = strcmp(cfg.storage, "memory") != 0,
        .replicas = (int)cfg.history_replicas,
        .republish_to = "live",
    };
    if (bus_stream_ensure(B, &sc) != 0) return;
    sc.name = cfg.inbox_stream;
    sc.subjects = inbox;
    sc.max_bytes = cfg.inbox_bytes;
    sc.max_msgs_per_subject = cfg.inbox_per_user;
    if (bus_stream_ensure(B, &sc) != 0) return;
    if (cfg.client_stream[0]) { /* no republish: nothing reads it live but the back ends */
        static const char *const client[] = {SUBJ_CLIENT_PREFIX ">"};
        sc = (bus_stream_cfg){
            .name = cfg.client_stream,
            .subjects = client,
            .nsubjects = 1,
            .max_age_s = cfg.client_age_s,
            .max_bytes = cfg.client_bytes,
            .file_storage = strcmp(cfg.storage, "memory") != 0,
            .replicas = (int)cfg.history_replicas,
            .duplicate_window_s = cfg.dedup_window_s,
        };
        if (bus_stream_ensure(B, &sc) != 0) return;
    }
    atomic_store(&stream_ok, 1);
}

/* The server API's hooks: a disconnect goes to the workers; counts come from the core and
 * the fabric. */
static int api_disconnect(void *ud, const char *user, uint64_t conn, uint16_t code,
                          const char *reason, api_done_fn done, void *done_ud)
{
    return session_disconnect(ud, user, conn, code, reason, done, done_ud);
}

static void api_counts(void *ud, long *connections, long *users, long *topics)
{
    *connections = S ? wsc_server_connections(S) : 0;
    fab_counts(ud, topics, users);
}

static ns_table NS; /* topic namespaces (EDGE_TOPICS) */

/* The fabric's first or last interest in a topic: presence tells every edge's view (unless
 * the topic's namespace says no occupancy). */
static void occupancy_changed(void *ud, const char *topic, bool on)
{
    if (ns_find(&NS, topic)->occupancy) presence_occupancy(ud, topic, on);
}

/* EDGE_TOPICS, read and checked at start: 0, or -1 after saying why on stderr. */
static int load_topics(void)
{
    ns_init(&NS);
    if (strcmp(cfg.hook_connect_failure, "deny") != 0 &&
        strcmp(cfg.hook_connect_failure, "allow") != 0) {
        fprintf(stderr, "edge: config: EDGE_HOOK_CONNECT_FAILURE: deny or allow\n");
        return -1;
    }
    if (strcmp(cfg.tls_ktls, "auto") != 0 && strcmp(cfg.tls_ktls, "off") != 0) {
        fprintf(stderr, "edge: config: EDGE_TLS_KTLS: auto or off\n");
        return -1;
    }
    if (!cfg.topics_file[0]) return 0;
    FILE *f = fopen(cfg.topics_file, "rb");
    char *text = malloc(1 << 20);
    size_t n = f && text ? fread(text, 1, (1 << 20) - 1, f) : 0;
    bool whole = f && !ferror(f) && feof(f);
    if (f) fclose(f);
    char err[300];
    int rc = -1;
    if (!text || !whole)
        fprintf(stderr, "edge: config: EDGE_TOPICS: %s cannot be read whole (1 MiB at most)\n",
                cfg.topics_file);
    else if ((rc = ns_parse(&NS, text, n, err, sizeof err)) != 0)
        fprintf(stderr, "edge: config: EDGE_TOPICS: %s: %s\n", cfg.topics_file, err);
    else
        log_info("topic namespaces loaded", "file=%s namespaces=%zu hooks=%s", cfg.topics_file,
                 NS.n, ns_any_hook(&NS) ? "yes" : "no");
    free(text);
    return rc;
}

int main(int argc, char **argv)
{
    fabric *fab = NULL;
    keys *K = NULL;
    static session_ctx ctx;
    int status = 1;
    char host[128];

    if (cfg_load(SERVICE, options, CFG_COUNT(options), argc, argv) < 0) return 2;
    /* no open bus, no open Redis: credentials, or the development flag that says so */
    const char *why = bus_auth_problem(cfg.nats_url);
    if (!why) why = rds_auth_problem(cfg.redis_url, bus_cfg_security.dev_insecure);
    if (why) {
        fprintf(stderr, SERVICE ": config: %s\n", why);
        return 2;
    }
    log_init(SERVICE, (enum log_level)cfg.log_level);
    if (strcmp(cfg.storage, "file") != 0 && strcmp(cfg.storage, "memory") != 0) {
        fprintf(stderr, "edge: config: HISTORY_STORAGE: must be file or memory\n");
        return 2;
    }
    if (cfg.pub_burst < cfg.max_publish || cfg.user_pub_burst < cfg.max_publish) {
        fprintf(stderr,
                "edge: config: %s: must be at least EDGE_MAX_PUBLISH (%ld), or the "
                "largest publish could never be sent\n",
                cfg.pub_burst < cfg.max_publish ? "EDGE_PUBLISH_BYTES_BURST"
                                                : "EDGE_USER_PUBLISH_BYTES_BURST",
                cfg.max_publish);
        return 2;
    }
    if (cfg.conflate_after >= cfg.outbound_limit) {
        fprintf(stderr,
                "edge: config: EDGE_CONFLATE_AFTER: must be below EDGE_OUTBOUND_LIMIT "
                "(%ld), or conflation would start only after the client is closed "
                "4008\n",
                cfg.outbound_limit);
        return 2;
    }
    if (strcmp(cfg.stream, cfg.inbox_stream) == 0) {
        fprintf(stderr, "edge: config: HISTORY_INBOX_STREAM: must differ from HISTORY_STREAM "
                        "(inboxes are kept apart from topic traffic)\n");
        return 2;
    }
    if (!cfg.edge_id[0]) {
        if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "edge");
        host[sizeof host - 1] = '\0';
        cfg.edge_id = host;
    }
    if (cfg.workers == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        cfg.workers = cores > 0 ? (cores > 64 ? 64 : cores) : 1;
    }
    cfg_log(options, CFG_COUNT(options));
    /* Every connection is a file: the soft limit (1024 in many containers) would cap the
     * edge long before EDGE_MAX_CONNECTIONS, so raise it to the hard limit. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur < cfg.max_connections + 64)
        log_warn("open-file limit below EDGE_MAX_CONNECTIONS", "nofile=%llu max_connections=%ld",
                 (unsigned long long)rl.rlim_cur, cfg.max_connections);

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (!cfg.listen[0] && !cfg.tls_listen[0]) {
        fprintf(stderr, "edge: config: EDGE_LISTEN or EDGE_TLS_LISTEN is required\n");
        return 2;
    }
    if (!(cfg.keys_file && cfg.keys_file[0]) && !cfg.jwks_url[0]) {
        fprintf(stderr, "edge: config: JWT_PUBLIC_KEYS or JWT_JWKS_URL is required\n");
        return 2;
    }
    if (keys_open(&K, cfg.keys_file, (int)cfg.keys_refresh_s * 1000) != 0) {
        fprintf(stderr, "edge: config: JWT_PUBLIC_KEYS: no usable key in %s\n", cfg.keys_file);
        return 2;
    }
    if (cfg.jwks_url[0] && keys_attach_url(K, cfg.jwks_url, cfg.jwks_ca) != 0) {
        fprintf(stderr, "edge: config: JWT_JWKS_URL: an https:// URL is required\n");
        keys_close(K);
        return 2;
    }
    if (tls_open() != 0 || load_topics() != 0) {
        keys_close(K);
        tlsctx_destroy(T);
        return 2;
    }
    /* One delivery thread: every bus message goes through the fabric's PUB socket in order. */
    bus_set_delivery_threads(1);
    if (bus_connect(&B, cfg.nats_url, SERVICE) != 0) goto done;
    if (keys_attach_bus(K, B) != 0) goto done;
    for (int i = 0; i < 100 && !bus_connected(B); i++) usleep(50000);
    if (bus_connected(B)) ensure_stream();
    if (fab_create(&fab, B, (size_t)cfg.max_publish * 4, cfg.deflate != 0,
                   (size_t)cfg.deflate_min) != 0)
        goto done;

    const char *origins[32];
    size_t norigins = split_origins(cfg.origins, origins, 32);
    ctx.cfg = (session_cfg){
        .edge_id = cfg.edge_id,
        .auth_timeout_ms = cfg.auth_ms,
        .token_warning_s = cfg.warning_s,
        .rate_limit = cfg.rate_limit,
        .rate_burst = cfg.rate_burst,
        .max_subscriptions = cfg.max_subs,
        .max_errors = cfg.max_errors,
        .max_message = (size_t)cfg.max_message,
        .max_publish = (size_t)cfg.max_publish,
        .max_outbound = (size_t)cfg.outbound_limit,
        .stream = cfg.stream,
        .inbox_stream = cfg.inbox_stream,
        .replay_inflight = (int)cfg.replay_inflight,
        .replay_max_events = cfg.replay_max,
        .max_per_user = cfg.max_per_user,
        .inbox_hold_ms = cfg.inbox_hold_ms,
        .stall_ms = cfg.stall_ms,
        .conflate_after = (size_t)cfg.conflate_after,
        .query_token = cfg.query_token != 0,
        .publish_rate = (double)cfg.pub_rate,
        .publish_burst = (double)cfg.pub_burst,
        .rpc_timeout_ms = (int)cfg.rpc_timeout_ms,
        .rpc_inflight = (int)cfg.rpc_inflight,
        .max_rpc_reply = (size_t)cfg.max_rpc_reply,
        .stored_publish = cfg.client_stream[0] != '\0',
        .publish_inflight = (int)cfg.pub_inflight,
        .hook_timeout_ms = (int)cfg.hook_timeout_ms,
        .hook_inflight = (int)cfg.hook_inflight,
        .hook_connect = cfg.hook_connect != 0,
        .hook_connect_fail_open = strcmp(cfg.hook_connect_failure, "allow") == 0,
        .hook_disconnect = cfg.hook_disconnect != 0,
    };
    ctx.b = B;
    ctx.fab = fab;
    ctx.ns = &NS;
    ctx.keys = K;
    ctx.policy = (token_policy){cfg.issuer, cfg.audience, cfg.leeway, 0};
    json_t *dsub = topic_patterns_json(cfg.default_sub),
           *dpub = topic_patterns_json(cfg.default_pub);
    if (!dsub || !dpub) {
        fprintf(stderr, "edge: config: JWT_DEFAULT_SUB_TOPICS / JWT_DEFAULT_PUB_TOPICS: a "
                        "pattern is not a topic pattern\n");
        json_decref(dsub);
        json_decref(dpub);
        status = 2;
        goto done;
    }
    json_t *drpc = topic_patterns_json(cfg.default_rpc);
    if (!drpc) {
        fprintf(stderr, "edge: config: JWT_DEFAULT_RPC_METHODS: a pattern is not a method "
                        "pattern\n");
        json_decref(dsub);
        json_decref(dpub);
        status = 2;
        goto done;
    }
    ctx.perms_src = (perms_source){cfg.sub_claim, cfg.pub_claim, dsub, dpub, cfg.rpc_claim, drpc};
    /* about as many users as connections may publish at once: the table never grows */
    if (quota_create(&Q, (size_t)cfg.max_connections, (double)cfg.user_pub_rate,
                     (double)cfg.user_pub_burst) != 0)
        goto done;
    ctx.user_quota = Q;
    if (cfg.redis_url[0]) {
        presence_cfg pc = {
            .redis_url = cfg.redis_url,
            .edge_id = cfg.edge_id,
            .ttl_s = (int)cfg.presence_ttl,
            .max_per_user = cfg.max_per_user,
            .verdict = session_presence_verdict,
            .verdict_ud = &ctx,
        };
        if (presence_create(&P, &pc, B) != 0) goto done;
        ctx.pres = P;
        fab_set_interest_fn(fab, occupancy_changed, P); /* occupancy.<topic> through Redis */
    } else if (cfg.max_per_user > 0) {
        fprintf(stderr, "edge: config: MAX_CONNECTIONS_PER_USER needs REDIS_URL\n");
        goto done;
    }
    ctx.sse = (sse_cfg){.enabled = cfg.sse != 0,
                        .origins = origins,
                        .norigins = norigins,
                        .retry_ms = cfg.sse_retry_ms,
                        .max_topics = cfg.sse_max_topics};
    wsc_handlers h;
    session_handlers(&ctx, &h);
    h.http = on_http;
    if (ctx.sse.enabled) sse_handlers(&h); /* GET /sse on the same port */
    wsc_config wc = {
        .name = "edge",
        .metric_prefix = "sc_edge",
        .slow_close_code = MSG_CLOSE_TOO_SLOW,
        .listen = cfg.listen,
        .tls_listen = cfg.tls_listen,
        .tls = T,
        .tls_handshake_timeout_ms = (int)cfg.tls_hs_ms,
        .tls_ktls = strcmp(cfg.tls_ktls, "auto") == 0,
        .workers = (int)cfg.workers,
        .upgrade = {.path = "/ws",
                    .origins = origins,
                    .norigins = norigins,
                    .subprotocol = "sidecast.v1",
                    .require_subprotocol = false,
                    .deflate = cfg.deflate != 0},
        .max_message = (size_t)cfg.max_message,
        .max_message_initial = (size_t)cfg.max_message_auth,
        .max_outbound = (size_t)cfg.outbound_limit,
        .max_connections = (int)cfg.max_connections,
        .max_per_ip = (int)cfg.max_per_ip,
        .handshake_timeout_ms = (int)cfg.handshake_ms,
        .ping_interval_ms = (int)cfg.ping_ms,
        .pong_timeout_ms = (int)cfg.pong_ms,
        .close_timeout_ms = (int)cfg.close_ms,
        .write_delay_ms = (int)cfg.write_delay_ms,
        .busy_hold_max_ms = (int)cfg.busy_hold_max_ms,
        .deflate_min = (size_t)cfg.deflate_min,
        .deflate_live = fab_deflate_live(fab),
        .stream_keepalive_ms = (int)cfg.sse_heartbeat_ms,
        .stream_keepalive = ": ping\n\n",
    };
    if (wsc_server_start(&S, &wc, &h) != 0) goto done;
    api_cfg ac = {.edge_id = cfg.edge_id,
                  .stream = cfg.stream,
                  .lim = {(size_t)cfg.api_max_data, (int)cfg.api_topics, (int)cfg.api_history,
                          cfg.api_history < 100 ? (int)cfg.api_history : 100},
                  .max_request = (size_t)cfg.api_max_request,
                  .threads = (int)cfg.api_threads,
                  .queue = (int)cfg.api_queue,
                  .timeout_ms = (int)cfg.api_timeout_ms,
                  .gather_ms = (int)cfg.api_gather_ms,
                  .disconnect = api_disconnect,
                  .disconnect_ud = &ctx,
                  .counts = api_counts,
                  .counts_ud = fab};
    if (api_create(&A, &ac, B) != 0) goto done;
    log_info("edge listening",
             "listen=%s port=%d tls_listen=%s tls_port=%d workers=%ld id=%s url=%s", cfg.listen,
             wsc_server_port(S), cfg.tls_listen, wsc_server_tls_port(S), cfg.workers, cfg.edge_id,
             cfg.public_url);

    for (;;) {
        struct timespec ts = {1, 0};
        int sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT) break;
        if (sig == SIGHUP) {
            keys_reload(K);
            tls_reload();
        }
        if (!atomic_load(&stream_ok) && bus_connected(B)) ensure_stream();
    }
    /* Drain: not ready, stop accepting, close everyone with 1001 in batches, then go. */
    atomic_store(&draining, 1);
    log_info("edge draining", "connections=%d timeout_ms=%ld", wsc_server_connections(S),
             cfg.drain_ms);
    wsc_server_drain(S, (int)cfg.drain_ms);
    for (long waited = 0; waited < cfg.drain_ms + 3000 && wsc_server_connections(S) > 0;
         waited += 50)
        usleep(50000);
    log_info("edge drained", "left=%d", wsc_server_connections(S));
    status = 0;
done:
    api_destroy(A);
    wsc_server_stop(S);
    presence_destroy(P);
    quota_destroy(Q);
    fab_destroy(fab);
    keys_close(K);
    tlsctx_destroy(T);
    ns_free(&NS);
    bus_destroy(B, 2000);
    json_decref((json_t *)ctx.perms_src.sub_default);
    json_decref((json_t *)ctx.perms_src.pub_default);
    json_decref((json_t *)ctx.perms_src.rpc_default);
    return status;
}
