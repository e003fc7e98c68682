/* gateway - the HTTP front door: routes HTTP requests to NATS subjects (request/reply),
 * checks bearer tokens, composes several service calls into one answer, answers CORS and
 * serves the static demo page, over plain HTTP, HTTPS or both. main() only wires the modules
 * together. */
#include "bus.h"
#include "cfg.h"
#include "http.h"
#include "keys.h"
#include "log.h"
#include "proto/topic.h"
#include "routes.h"
#include "statics.h"
#include "tlscert.h"
#include "token.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define GW_DRAIN_MS 10000 /* longest wait for requests in flight at shutdown */
#define GW_BUS_DRAIN_MS 2000
#define GW_HSTS_MAX 256 /* bytes of GATEWAY_HSTS */

typedef struct gw_config {
    char *nats_url;
    int log_level;
    char *listen;
    char *tls_listen, *tls_cert, *tls_key, *hsts;
    char *routes;
    char *jwt_keys, *jwks_url, *jwks_ca;
    char *jwt_issuer;
    char *jwt_audience;
    char *sub_claim, *default_sub;
    long jwt_leeway, keys_refresh_s;
    long max_body;
    long max_connections, max_per_ip;
    long client_timeout;
    long request_timeout_ms, response_timeout_ms;
    long threads, max_inflight, max_inflight_per_ip;
    long conn_memory;
    char *cors_origins;
    char *static_dir;
} gw_config;

static gw_config gw_cfg;

/* clang-format off */
static const cfg_opt gw_opts[] = {
    {"NATS_URL", CFG_STR, "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated", 0, 0,
     0, &gw_cfg.nats_url},
    BUS_CFG_OPTIONS,
    {"LOG_LEVEL", CFG_LEVEL, "info", "debug, info, warn or error", 0, 0, 0, &gw_cfg.log_level},
    {"GATEWAY_LISTEN", CFG_ADDR, "0.0.0.0:8080",
     "HTTP listen address (host:port); empty: no plain HTTP (GATEWAY_TLS_LISTEN is then "
     "required)", 0, 0, 0, &gw_cfg.listen},
    {"GATEWAY_TLS_LISTEN", CFG_ADDR, "",
     "HTTPS listen address (host:port; TLS 1.2 and 1.3), beside GATEWAY_LISTEN; empty: no "
     "HTTPS", 0, 0, 0, &gw_cfg.tls_listen},
    {"GATEWAY_TLS_CERT", CFG_FILE, "",
     "certificate of GATEWAY_TLS_LISTEN (PEM: the leaf, then its chain); read again on SIGHUP",
     0, 0, 0, &gw_cfg.tls_cert},
    {"GATEWAY_TLS_KEY", CFG_FILE, "",
     "private key of GATEWAY_TLS_CERT (PEM, unencrypted); read again on SIGHUP", CFG_SECRET, 0,
     0, &gw_cfg.tls_key},
    {"GATEWAY_HSTS", CFG_STR, "",
     "Strict-Transport-Security value on HTTPS answers, e.g. max-age=31536000 (empty: none)",
     0, 0, 0, &gw_cfg.hsts},
    {"GATEWAY_ROUTES", CFG_FILE, NULL, "routing table (JSON, see docs/GATEWAY.md)",
     CFG_REQUIRED, 0, 0, &gw_cfg.routes},
    {"JWT_PUBLIC_KEYS", CFG_FILE, NULL,
     "token verification keys (JWKS or PEM public keys; this, JWT_JWKS_URL, or both)", 0, 0, 0,
     &gw_cfg.jwt_keys},
    {"JWT_JWKS_URL", CFG_STR, "",
     "https:// JWKS of an OpenID provider (its jwks_uri): its keys are fetched at start, again "
     "when its Cache-Control says, and on a token of an unknown kid", 0, 0, 0, &gw_cfg.jwks_url},
    {"JWT_JWKS_CA", CFG_STR, "",
     "CA certificates (PEM file) to trust for JWT_JWKS_URL instead of the system's", 0, 0, 0,
     &gw_cfg.jwks_ca},
    {"JWT_ISSUER", CFG_STR, "sidecast", "required iss of access tokens", 0, 0, 0,
     &gw_cfg.jwt_issuer},
    {"JWT_AUDIENCE", CFG_STR, "sidecast", "required aud of access tokens", 0, 0, 0,
     &gw_cfg.jwt_audience},
    {"JWT_LEEWAY", CFG_INT, "30", "clock skew allowed for exp/nbf/iat, seconds", 0, 0, 300,
     &gw_cfg.jwt_leeway},
    {"JWT_SUB_TOPICS_CLAIM", CFG_STR, "sub_topics",
     "the claim holding a token's subscribable topic patterns (an array, or a string of "
     "patterns separated by spaces or commas), passed to services as Sidecast-Sub-Topics",
     0, 0, 0, &gw_cfg.sub_claim},
    {"JWT_DEFAULT_SUB_TOPICS", CFG_STR, "",
     "patterns (comma-separated) for a token without JWT_SUB_TOPICS_CLAIM (empty: none)", 0, 0,
     0, &gw_cfg.default_sub},
    {"JWT_KEYS_REFRESH_MIN_S", CFG_INT, "10",
     "a token of an unknown kid asks auth for its keys (auth.jwks) at most this often; "
     "JWT_PUBLIC_KEYS is read again on SIGHUP, and auth's announcements (auth.keys) are "
     "taken as they come", 0, 1, 3600, &gw_cfg.keys_refresh_s},
    {"GATEWAY_MAX_BODY", CFG_INT, "65536", "largest request body in bytes (more: 413)", 0, 1,
     512 * 1024, &gw_cfg.max_body},
    {"GATEWAY_MAX_CONNECTIONS", CFG_INT, "16384",
     "concurrent HTTP connections per listener (idle keep-alive ones included; keep it "
     "under the process's file limit)", 0, 1, 65536,
     &gw_cfg.max_connections},
    {"GATEWAY_MAX_CONNECTIONS_PER_IP", CFG_INT, "0",
     "concurrent connections per client address; more are closed at once (0: no limit; "
     "leave it off behind an ingress, where every connection comes from the ingress)", 0, 0,
     65536, &gw_cfg.max_per_ip},
    {"GATEWAY_CLIENT_TIMEOUT", CFG_INT, "30", "idle/slow client timeout, seconds", 0, 1, 3600,
     &gw_cfg.client_timeout},
    {"GATEWAY_REQUEST_TIMEOUT_MS", CFG_INT, "10000",
     "a request's head and body must arrive within this (slow clients; kept-alive idle "
     "too)", 0, 100, 3600000, &gw_cfg.request_timeout_ms},
    {"GATEWAY_RESPONSE_TIMEOUT_MS", CFG_INT, "30000",
     "a response must be read by the client within this once it is ready (a slow reader "
     "of a large response is closed)", 0, 100, 3600000, &gw_cfg.response_timeout_ms},
    {"GATEWAY_THREADS", CFG_INT, "0",
     "epoll threads per listener, serving every connection (no thread waits for a service); "
     "0: one per core, at least 2", 0, 0, 256, &gw_cfg.threads},
    {"GATEWAY_MAX_INFLIGHT", CFG_INT, "8192",
     "requests waiting for services at once; more are answered 503 overloaded (at most "
     "the bus's pending requests over the calls a route may make)", 0, 1,
     BUS_MAX_ASYNC / ROUTES_MAX_CALLS, &gw_cfg.max_inflight},
    {"GATEWAY_MAX_INFLIGHT_PER_IP", CFG_INT, "0",
     "requests waiting for services from one client address; more are answered 429 "
     "too_many_requests (0: no limit; leave it off behind an ingress)", 0, 0, 65536,
     &gw_cfg.max_inflight_per_ip},
    {"GATEWAY_HEADER_MEMORY", CFG_INT, "6144",
     "per-connection memory (libmicrohttpd's pool: the request head, the answer's headers), "
     "bytes; a bigger head gets 431; an idle keep-alive connection keeps it resident", 0, 4096,
     1024 * 1024, &gw_cfg.conn_memory},
    {"GATEWAY_CORS_ORIGINS", CFG_STR, "http://localhost:8080,http://127.0.0.1:8080",
     "browser origins allowed by CORS, comma-separated; * for any; empty for none", 0, 0, 0,
     &gw_cfg.cors_origins},
    {"GATEWAY_STATIC_DIR", CFG_STR, "", "directory served at / (empty: none)", 0, 0, 0,
     &gw_cfg.static_dir},
};
/* clang-format on */

/* The TLS settings agree with each other: NULL, or what is wrong (naming the variable). */
static const char *gw_tls_problem(const gw_config *c)
{
    bool tls = c->tls_listen[0], cert = c->tls_cert[0], key = c->tls_key[0];
    if (!c->listen[0] && !tls) return "GATEWAY_LISTEN and GATEWAY_TLS_LISTEN are both empty";
    if (tls && (!cert || !key))
        return "GATEWAY_TLS_LISTEN needs GATEWAY_TLS_CERT and GATEWAY_TLS_KEY";
    if (!tls && (cert || key))
        return "GATEWAY_TLS_CERT and GATEWAY_TLS_KEY are only read with GATEWAY_TLS_LISTEN";
    if (!tls && c->hsts[0]) return "GATEWAY_HSTS is only sent with GATEWAY_TLS_LISTEN";
    if (strlen(c->hsts) > GW_HSTS_MAX) return "GATEWAY_HSTS: longer than 256 bytes";
    for (const char *p = c->hsts; *p; p++)
        if (*p < 0x20 || *p > 0x7e) return "GATEWAY_HSTS: printable ASCII only";
    return NULL;
}

int main(int argc, char **argv)
{
    int rc = 1, sig = 0;
    char err[600];
    routes *rt = NULL;
    keys *ks = NULL;
    statics *st = NULL;
    bus *b = NULL;
    http_server *srv = NULL;
    tlscert *certs = NULL;
    json_t *sub_default = NULL;
    sigset_t sigs;

    log_init("gateway", LOG_INFO);
    if (cfg_load("gateway", gw_opts, CFG_COUNT(gw_opts), argc, argv) != 0) return 2;
    const char *why = bus_auth_problem(gw_cfg.nats_url); /* no open bus */
    if (why) {
        fprintf(stderr, "gateway: config: %s\n", why);
        return 2;
    }
    if ((why = gw_tls_problem(&gw_cfg))) {
        fprintf(stderr, "gateway: config: %s\n", why);
        return 2;
    }
    log_set_level((enum log_level)gw_cfg.log_level);
    cfg_log(gw_opts, CFG_COUNT(gw_opts));

    /* Every thread started from here on (nats.c, libmicrohttpd) inherits this mask, so the
     * signals reach only sigwait() below. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (routes_load(gw_cfg.routes, &rt, err, sizeof err) != 0) {
        fprintf(stderr, "gateway: GATEWAY_ROUTES: %s\n", err);
        rc = 2;
        goto done;
    }
    if (!(gw_cfg.jwt_keys && gw_cfg.jwt_keys[0]) && !gw_cfg.jwks_url[0]) {
        fprintf(stderr, "gateway: JWT_PUBLIC_KEYS or JWT_JWKS_URL is required\n");
        rc = 2;
        goto done;
    }
    if (keys_open(&ks, gw_cfg.jwt_keys, (int)gw_cfg.keys_refresh_s * 1000) != 0) {
        fprintf(stderr, "gateway: JWT_PUBLIC_KEYS: %s: no usable key\n", gw_cfg.jwt_keys);
        rc = 2;
        goto done;
    }
    if (gw_cfg.jwks_url[0] && keys_attach_url(ks, gw_cfg.jwks_url, gw_cfg.jwks_ca) != 0) {
        fprintf(stderr, "gateway: JWT_JWKS_URL: an https:// URL is required\n");
        rc = 2;
        goto done;
    }
    if (gw_cfg.static_dir[0]) {
        int e = statics_create(&st, gw_cfg.static_dir);
        if (e != 0) {
            fprintf(stderr, "gateway: GATEWAY_STATIC_DIR: %s: %s\n", gw_cfg.static_dir,
                    strerror(-e));
            rc = 2;
            goto done;
        }
    }
    if (gw_cfg.tls_listen[0] &&
        tlscert_open(&certs, gw_cfg.tls_cert, gw_cfg.tls_key, err, sizeof err) != 0) {
        fprintf(stderr, "gateway: GATEWAY_TLS_CERT, GATEWAY_TLS_KEY: %s\n", err);
        rc = 2;
        goto done;
    }
    log_info("routing table loaded", "file=%s routes=%zu keys=%zu", gw_cfg.routes, rt->n,
             keys_count(ks));
    if (bus_connect(&b, gw_cfg.nats_url, "gateway") != 0) {
        char masked[512];
        cfg_mask_url(gw_cfg.nats_url, masked, sizeof masked);
        log_error("cannot set up NATS", "url=%s", masked);
        goto done;
    }
    if (keys_attach_bus(ks, b) != 0) goto done;
    if (!(sub_default = topic_patterns_json(gw_cfg.default_sub))) {
        fprintf(stderr, "gateway: config: JWT_DEFAULT_SUB_TOPICS: a pattern is not a topic "
                        "pattern\n");
        rc = 2;
        goto done;
    }
    if (json_array_size(sub_default) == 0) { /* none: no header for a token without them */
        json_decref(sub_default);
        sub_default = NULL;
    }
    http_cfg hc = {
        .listen = gw_cfg.listen,
        .tls_listen = gw_cfg.tls_listen,
        .certs = certs,
        .hsts = gw_cfg.hsts,
        .max_body = (size_t)gw_cfg.max_body,
        .max_connections = (unsigned)gw_cfg.max_connections,
        .max_per_ip = (unsigned)gw_cfg.max_per_ip,
        .client_timeout_s = (unsigned)gw_cfg.client_timeout,
        .request_timeout_ms = gw_cfg.request_timeout_ms,
        .response_timeout_ms = gw_cfg.response_timeout_ms,
        .threads = (unsigned)gw_cfg.threads,
        .max_inflight = (unsigned)gw_cfg.max_inflight,
        .max_inflight_per_ip = (unsigned)gw_cfg.max_inflight_per_ip,
        .conn_memory = (size_t)gw_cfg.conn_memory,
        .cors_origins = gw_cfg.cors_origins,
        .policy = {.issuer = gw_cfg.jwt_issuer,
                   .audience = gw_cfg.jwt_audience,
                   .leeway = gw_cfg.jwt_leeway},
        .sub_claim = gw_cfg.sub_claim,
        .sub_default = sub_default,
    };
    if (hc.threads == 0) { /* one per core, at least 2: one can answer while another parses */
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        hc.threads = n < 2 ? 2 : n > 64 ? 64 : (unsigned)n;
    }
    if (http_create(&srv, &hc, b, rt, ks, st) != 0) goto done;
    log_info("listening", "listen=%s port=%d tls_listen=%s tls_port=%d threads=%u",
             gw_cfg.listen[0] ? gw_cfg.listen : "off", http_port(srv),
             gw_cfg.tls_listen[0] ? gw_cfg.tls_listen : "off", http_tls_port(srv), hc.threads);

    for (;;) {
        if (sigwait(&sigs, &sig) != 0) continue;
        if (sig != SIGHUP) break;
        keys_reload(ks);                  /* JWT_PUBLIC_KEYS again; a bad file keeps the keys */
        if (certs) tlscert_reload(certs); /* the same rule for the TLS pair */
    }
    log_info("shutting down", "signal=%d", sig);
    http_drain(srv, GW_DRAIN_MS);
    rc = 0;
done:
    http_destroy(srv);
    tlscert_close(certs); /* after the connections: each let go of its pair on close */
    json_decref(sub_default);
    keys_close(ks);
    bus_destroy(b, GW_BUS_DRAIN_MS);
    statics_destroy(st);
    routes_destroy(rt);
    if (rc == 0) log_info("stopped", "signal=%d", sig);
    return rc;
}
