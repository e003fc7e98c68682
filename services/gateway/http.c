/* http.c - the gateway's HTTP server; see http.h and docs/GATEWAY.md.
 *
 * Life of a request (one gw_req, created by MHD's URI-log callback with the raw URI and freed
 * in the completion callback, which also logs and counts it):
 *   1. first handler call, head only: admin paths, OPTIONS/CORS, route match, bearer token,
 *      Content-Length and Content-Type checks - failures are answered here, before any body
 *      is read (so no "100 Continue" is sent for them);
 *   2. body calls: bytes collected up to max_body (past it: 413 once the upload ends, or the
 *      connection is closed if the client keeps sending);
 *   3. last call: the in-flight bounds checked (GATEWAY_MAX_INFLIGHT: 503,
 *      GATEWAY_MAX_INFLIGHT_PER_IP: 429), query and body parsed, envelope built, the
 *      connection suspended and the route started over the bus (proxy.c);
 *   4. the route's answer (on a nats.c thread, the bus's timer thread, or at once when it
 *      failed before sending) is stored in the gw_req and the connection resumed: MHD calls
 *      the handler once more, on the connection's own thread, which queues the answer.
 * No HTTP thread waits for a service, so GATEWAY_THREADS epoll threads serve every
 * connection. A suspended connection is neither read nor timed out by MHD and its gw_req
 * stays alive until the completion callback, which cannot run before the resume: the reply
 * side never touches freed memory, and after MHD_resume_connection it touches nothing of the
 * request. A reply that comes after the route's deadline finds no pending request in bus.c
 * and is dropped there. MHD must not be stopped with suspended connections: http_destroy
 * waits for them (at most the longest route timeout).
 * MHD is told not to unescape the URL: paths are matched raw and decoded per segment, so an
 * encoded '/' stays inside its segment. */
#include "http.h"

#include "admin.h"
#include "cfg.h"
#include "compose.h"
#include "contract.h"
#include "form.h"
#include "log.h"
#include "meta.h"
#include "metrics.h"
#include "proxy.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HTTP_MAX_HEADERS 8       /* extra headers on one answer */
#define HTTP_MAX_SUB_TOPICS 4096 /* bytes of the Sidecast-Sub-Topics header */
#define HTTP_QUERY_MAX_PAIRS 64
#define HTTP_FORM_MAX_PAIRS 64
#define HTTP_TOKEN_MAX 8192
#define HTTP_IP_BUCKETS                                                                            \
    1024 /* in-flight requests per client address (GATEWAY_MAX_INFLIGHT_PER_IP) */
/* TLS 1.3 and 1.2 only, GnuTLS's NORMAL suites otherwise (docs/SECURITY.md). */
#define HTTP_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

static const char HTTP_CORS_ALLOW_HEADERS[] = "Authorization, Content-Type, X-Request-Id, "
                                              "traceparent";
static const char HTTP_CORS_EXPOSE_HEADERS[] = "X-Request-Id, Location, Retry-After, "
                                               "WWW-Authenticate";

/* One TCP connection, for the deadlines: by `deadline` the request being waited for must
 * be in (its head and body), or the response queued on it must have been read. 0 while
 * neither is pending (the request is being handled). */
typedef struct gw_conn {
    struct gw_conn *next, *prev;
    int fd;
    int64_t deadline; /* ms, CLOCK_MONOTONIC; guarded by the server's conns_lock */
    bool sending;     /* the deadline is a response's, not a request's */
    http_server *srv;
    tlscert_gen *tls_gen; /* HTTPS: the pair its handshake used, held until it closes */
    int listener;         /* 0 plain, 1 HTTPS: whose count it holds */
} gw_conn;

struct http_server {
    struct MHD_Daemon *d;    /* plain HTTP, or NULL */
    struct MHD_Daemon *dtls; /* HTTPS, or NULL */
    int tls_port;
    pthread_mutex_t conns_lock;
    gw_conn conns; /* list head */
    pthread_t watchdog;
    int watchdog_started, stop;
    /* The listening sockets are ours, not libmicrohttpd's: one thread accepts on both and
     * hands each connection to its daemon (MHD_add_connection), so draining is closing them.
     * MHD_quiesce_daemon races its own epoll threads over the listening socket (both remove
     * it from their epoll set; the loser aborts the process), which a busy gateway hit at
     * SIGTERM. One acceptor also takes connections in the order they came. */
    int lfd[2];   /* plain, TLS; -1 if none */
    int stop_efd; /* eventfd: wakes the acceptor to stop */
    pthread_t acceptor;
    int acceptor_started;
    /* Connections per listener, counted when handed over and until closed: the acceptor
     * closes one past GATEWAY_MAX_CONNECTIONS itself. libmicrohttpd's own limit is set so
     * high that it never refuses: 0.9.75 refuses a handed-over connection at its limit with
     * a mutex still held, and the next lock deadlocks that thread. */
    atomic_int nconn[2];  /* (one that libmicrohttpd takes but cannot start, for want of
                           * memory, keeps its count: it never reports it closed) */
    gw_conn untracked[2]; /* the context of a connection whose gw_conn could not be allocated */
    metric *m_limit_refused;
    metric *m_head_timeouts, *m_response_timeouts;
    http_cfg cfg;
    bus *bus;
    const routes *rt;
    keys *ks;
    const statics *st;
    int port;
    atomic_int inflight;
    metric *m_inflight, *m_conns;
    /* requests waiting for a service (suspended connections), bounded by cfg.max_inflight
     * and per client address by cfg.max_inflight_per_ip (ip_lock guards the table) */
    atomic_int waiting;
    pthread_mutex_t ip_lock;
    struct gw_ipcount *ips[HTTP_IP_BUCKETS];
    int max_route_ms;     /* the longest route timeout: how long http_destroy may wait */
    atomic_int suspended; /* connections suspended (until gw_on_answer has resumed them) */
    metric *m_waiting, *m_overload, *m_ip_overload;
};

/* Requests waiting for services from one client address. */
typedef struct gw_ipcount {
    struct gw_ipcount *next;
    unsigned char addr[16];
    unsigned count;
} gw_ipcount;

typedef struct gw_req {
    http_server *srv;
    struct timespec t0;
    char *query;        /* raw query string, or NULL */
    int started;        /* the handler has been called */
    int head_done;      /* gw_head() has run */
    int quiet;          /* admin paths: logged at debug, not counted */
    int status;         /* answered status, 0 while none */
    const char *method; /* normalised for logs and metrics (known methods only) */
    const char *label;  /* route template, or a fixed word: bounded metric labels */
    const char *origin; /* allowed CORS origin (owned by MHD's connection), or NULL */
    int auth_path;      /* path under /auth/: always no-store */
    bool tls;           /* came in over HTTPS */
    route_match match;
    char rid[META_RID_MAX + 1];
    char traceparent[META_TRACEPARENT_LEN + 1];
    int authed;
    char user[256];
    char *sub_topics; /* JSON array text, or NULL */
    enum meta_ctype ctype;
    char *body;
    size_t len, cap;
    int too_large;
    size_t discarded;
    /* the asynchronous part (step 4 of the file comment) */
    struct MHD_Connection *conn;
    int phase;        /* GW_IDLE, GW_WAITING (suspended) or GW_ANSWERED */
    gw_ipcount *ip;   /* counted in here while waiting (or NULL) */
    proxy_answer ans; /* written by proxy.c until done, read after the resume */
    json_t *env;      /* the envelope, alive while the route runs */
} gw_req;

enum { GW_IDLE = 0, GW_WAITING = 1, GW_ANSWERED = 2 };

typedef struct gw_hdr {
    const char *name, *value;
} gw_hdr;

/* ---- responses ---------------------------------------------------------------------- */

static void gw_common_headers(const gw_req *r, struct MHD_Response *resp, int has_cache)
{
    MHD_add_response_header(resp, "X-Request-Id", r->rid);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (!has_cache) MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (r->auth_path) MHD_add_response_header(resp, "Pragma", "no-cache");
    if (r->tls && r->srv->cfg.hsts[0])
        MHD_add_response_header(resp, "Strict-Transport-Security", r->srv->cfg.hsts);
    if (r->srv->cfg.cors_origins[0]) {
        MHD_add_response_header(resp, "Vary", "Origin");
        if (r->origin) {
            MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->origin);
            MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                                    HTTP_CORS_EXPOSE_HEADERS);
        }
    }
}

static void gw_response_queued(http_server *s, struct MHD_Connection *c);

/* Queues an answer. body: NULL for none; mode says who owns it (MUST_FREE: MHD frees it,
 * even when this fails). */
static enum MHD_Result gw_send(gw_req *r, struct MHD_Connection *c, int status, void *body,
                               size_t len, enum MHD_ResponseMemoryMode mode, const char *ctype,
                               const gw_hdr *hdrs, size_t nhdr)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, mode);
    if (!resp) {
        if (mode == MHD_RESPMEM_MUST_FREE) free(body);
        return MHD_NO;
    }
    int has_cache = 0;
    for (size_t i = 0; i < nhdr; i++) {
        if (strcmp(hdrs[i].name, "Cache-Control") == 0) {
            if (r->auth_path) continue; /* RFC 6749 §5.1: token answers are never cached */
            has_cache = 1;
        }
        MHD_add_response_header(resp, hdrs[i].name, hdrs[i].value);
    }
    gw_common_headers(r, resp, has_cache);
    if (body && ctype) MHD_add_response_header(resp, "Content-Type", ctype);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    if (ret == MHD_YES) {
        r->status = status;
        gw_response_queued(r->srv, c);
    }
    return ret;
}

static enum MHD_Result gw_error(gw_req *r, struct MHD_Connection *c, int status, const char *code,
                                const char *message, const gw_hdr *hdrs, size_t nhdr)
{
    size_t len = 0;
    char *body = compose_error_body(code, message, &len);
    if (!body) return MHD_NO;
    return gw_send(r, c, status, body, len, MHD_RESPMEM_MUST_FREE, "application/json", hdrs, nhdr);
}

/* ---- request head ------------------------------------------------------------------- */

static const char *gw_header(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

static const char *gw_method_label(const char *m)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(m, known[i]) == 0) return known[i];
    return "OTHER";
}

static int gw_ready(void *ud, char *detail, size_t detaillen)
{
    http_server *s = ud;
    int up = bus_connected(s->bus);
    snprintf(detail, detaillen, "nats=%s", up ? "up" : "down");
    return up;
}

/* Verifies the bearer token of a protected route; answers 401 itself on failure.
 * Returns 0 when the caller may go on, 1 when an answer was queued (*ret holds MHD's
 * result). */
/* The token's topic patterns as a JSON array of strings (a new reference), or NULL: the
 * configured claim (an array, or a string of patterns separated by spaces or commas, as an
 * OAuth "scope"), else the configured default. */
static json_t *sub_topics_of(const json_t *payload, const http_cfg *cfg)
{
    const char *name = cfg->sub_claim && cfg->sub_claim[0] ? cfg->sub_claim : "sub_topics";
    const json_t *v = payload ? json_object_get(payload, name) : NULL;
    if (!v) v = cfg->sub_default;
    json_t *out = json_array();
    if (!out) return NULL;
    if (json_is_string(v)) {
        const char *p = json_string_value(v), *end = p + json_string_length(v);
        while (p < end) {
            size_t n = strcspn(p, " ,");
            if (p + n > end) n = (size_t)(end - p);
            if (n) json_array_append_new(out, json_stringn(p, n));
            p += n + 1;
        }
    } else if (json_is_array(v)) {
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) {
            if (json_is_string(e)) json_array_append(out, (json_t *)e);
        }
    } else {
        json_decref(out);
        return NULL;
    }
    return out;
}

static int gw_authenticate(gw_req *r, struct MHD_Connection *c, enum MHD_Result *ret)
{
    static const gw_hdr missing[] = {{"WWW-Authenticate", "Bearer"}};
    static const gw_hdr invalid[] = {{"WWW-Authenticate", "Bearer error=\"invalid_token\""}};
    const http_server *s = r->srv;
    const char *tok;
    size_t len;
    token_claims claims;
    int rc = meta_bearer(gw_header(c, MHD_HTTP_HEADER_AUTHORIZATION), &tok, &len);
    if (rc == META_BEARER_NONE) {
        *ret = gw_error(r, c, 401, "unauthorized", "bearer token required", missing, 1);
        return 1;
    }
    if (rc != META_BEARER_OK || len > HTTP_TOKEN_MAX) {
        *ret = gw_error(r, c, 401, "invalid_token", "malformed bearer token", invalid, 1);
        return 1;
    }
    char *copy = strndup(tok, len);
    if (!copy) {
        *ret = gw_error(r, c, 500, "internal_error", "out of memory", NULL, 0);
        return 1;
    }
    rc = keys_verify(s->ks, &s->cfg.policy, copy, (long)time(NULL), &claims);
    free(copy);
    if (rc != SC_OK) {
        char msg[96];
        snprintf(msg, sizeof msg, "token rejected: %s", sc_strerror(rc));
        log_debug("token rejected", "rid=%s reason=\"%s\"", r->rid, sc_strerror(rc));
        *ret = gw_error(r, c, 401, "invalid_token", msg, invalid, 1);
        return 1;
    }
    /* sub travels in a NATS header: no control characters (header injection) */
    int sub_ok = claims.sub[0] != '\0';
    for (const char *p = claims.sub; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) sub_ok = 0;
    if (!sub_ok) {
        token_claims_clear(&claims);
        *ret = gw_error(r, c, 401, "invalid_token", "token rejected: bad subject", invalid, 1);
        return 1;
    }
    /* a route that requires a scope: the token's scope claim must name it (RFC 6750 3.1) */
    const char *want = r->match.route->scope;
    if (want[0]) {
        const json_t *sc = json_object_get(claims.payload, "scope");
        if (!meta_scope_has(json_string_value(sc), want)) {
            char www[ROUTES_MAX_SCOPE + 64], msg[ROUTES_MAX_SCOPE + 64];
            snprintf(www, sizeof www, "Bearer error=\"insufficient_scope\", scope=\"%s\"", want);
            snprintf(msg, sizeof msg, "this route requires the scope %s", want);
            gw_hdr h[] = {{"WWW-Authenticate", www}};
            token_claims_clear(&claims);
            *ret = gw_error(r, c, 403, "insufficient_scope", msg, h, 1);
            return 1;
        }
    }
    snprintf(r->user, sizeof r->user, "%s", claims.sub);
    r->authed = 1;
    json_t *topics = sub_topics_of(claims.payload, &r->srv->cfg);
    if (topics) {
        char *t = json_dumps(topics, JSON_COMPACT | JSON_ENSURE_ASCII);
        if (t && strlen(t) <= HTTP_MAX_SUB_TOPICS)
            r->sub_topics = t;
        else
            free(t);
        json_decref(topics);
    }
    token_claims_clear(&claims);
    return 0;
}

/* OPTIONS: CORS preflight (Origin + Access-Control-Request-Method) or a plain Allow query. */
static enum MHD_Result gw_options(gw_req *r, struct MHD_Connection *c, const char *url)
{
    const http_server *s = r->srv;
    int rc = routes_match(s->rt, "OPTIONS", url, &r->match);
    if (rc == SC_EMALFORMED)
        return gw_error(r, c, 400, "invalid_request", "malformed path", NULL, 0);
    if (rc == -ENOENT) return gw_error(r, c, 404, "not_found", "no such route", NULL, 0);
    r->label = "preflight";
    const char *origin = gw_header(c, "Origin");
    const char *want = gw_header(c, "Access-Control-Request-Method");
    if (!origin || !want) {
        gw_hdr h[] = {{"Allow", r->match.allow}};
        return gw_send(r, c, 204, NULL, 0, MHD_RESPMEM_PERSISTENT, NULL, h, 1);
    }
    if (!r->origin) return gw_error(r, c, 403, "forbidden", "origin not allowed", NULL, 0);
    gw_hdr h[] = {
        {"Allow", r->match.allow},
        {"Access-Control-Allow-Methods", r->match.allow},
        {"Access-Control-Allow-Headers", HTTP_CORS_ALLOW_HEADERS},
        {"Access-Control-Max-Age", "600"},
    };
    return gw_send(r, c, 204, NULL, 0, MHD_RESPMEM_PERSISTENT, NULL, h, 4);
}

static enum MHD_Result gw_static(gw_req *r, struct MHD_Connection *c, const char *url)
{
    int fd = -1;
    uint64_t size = 0;
    const char *ctype = NULL;
    r->label = "static";
    int rc = statics_open(r->srv->st, url, &fd, &size, &ctype);
    if (rc != 0) {
        if (rc != -ENOENT && rc != -EACCES)
            log_warn("static file error", "rid=%s err=\"%s\"", r->rid, strerror(-rc));
        return gw_error(r, c, 404, "not_found", "no such route", NULL, 0);
    }
    struct MHD_Response *resp = MHD_create_response_from_fd64(size, fd);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    gw_common_headers(r, resp, 1);
    enum MHD_Result ret = MHD_queue_response(c, 200, resp);
    MHD_destroy_response(resp);
    if (ret == MHD_YES) {
        r->status = 200;
        gw_response_queued(r->srv, c);
    }
    return ret;
}

/* The head of a request. Queues an answer for anything that fails before the body. */
static enum MHD_Result gw_head(gw_req *r, struct MHD_Connection *c, const char *url,
                               const char *method)
{
    http_server *s = r->srv;
    enum MHD_Result ret = MHD_YES;

    r->method = gw_method_label(method);
    r->label = "unmatched";
    r->auth_path = strncmp(url, "/auth/", 6) == 0;
    const char *rid = gw_header(c, "X-Request-Id");
    if (meta_request_id_valid(rid))
        snprintf(r->rid, sizeof r->rid, "%s", rid);
    else
        meta_request_id_new(r->rid);
    meta_traceparent_next(gw_header(c, "traceparent"), r->traceparent);
    const char *origin = gw_header(c, "Origin");
    if (meta_origin_allowed(s->cfg.cors_origins, origin)) r->origin = origin;

    int admin_ret = MHD_NO;
    if (admin_answer(c, method, url, gw_ready, s, &admin_ret)) {
        r->quiet = 1;
        r->label = "admin";
        r->status = -1; /* answered by admin.c, status not known here */
        return (enum MHD_Result)admin_ret;
    }
    if (strcmp(method, "OPTIONS") == 0) return gw_options(r, c, url);

    int rc = routes_match(s->rt, method, url, &r->match);
    if (rc == SC_EMALFORMED)
        return gw_error(r, c, 400, "invalid_request", "malformed path", NULL, 0);
    if (rc == -ENOENT) {
        if (s->st && (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0))
            return gw_static(r, c, url);
        return gw_error(r, c, 404, "not_found", "no such route", NULL, 0);
    }
    if (rc == -EOPNOTSUPP) {
        gw_hdr h[] = {{"Allow", r->match.allow}};
        return gw_error(r, c, 405, "method_not_allowed", "method not allowed on this route", h, 1);
    }
    const route *ro = r->match.route;
    r->label = ro->path;
    r->auth_path |= strncmp(ro->path, "/auth/", 6) == 0; /* "/%61uth/..." matches it too */

    if (ro->auth == ROUTE_AUTH_BEARER && gw_authenticate(r, c, &ret)) return ret;

    const char *cl = gw_header(c, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = gw_header(c, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    unsigned long long clen = 0;
    if (cl && meta_content_length(cl, &clen) != 0)
        return gw_error(r, c, 400, "invalid_request", "bad Content-Length", NULL, 0);
    if (clen > s->cfg.max_body) {
        char msg[96];
        snprintf(msg, sizeof msg, "request body larger than %zu bytes", s->cfg.max_body);
        return gw_error(r, c, 413, "payload_too_large", msg, NULL, 0);
    }
    r->ctype = meta_content_type(gw_header(c, MHD_HTTP_HEADER_CONTENT_TYPE));
    if ((clen > 0 || te) && r->ctype != META_CT_JSON && r->ctype != META_CT_FORM)
        return gw_error(r, c, 415, "unsupported_media_type",
                        "body must be application/json or application/x-www-form-urlencoded", NULL,
                        0);
    if (clen > 0 && !(r->body = malloc(clen))) return MHD_NO;
    r->cap = clen;
    return MHD_YES;
}

/* A piece of the body. */
static enum MHD_Result gw_upload(gw_req *r, const char *data, size_t size)
{
    size_t max = r->srv->cfg.max_body;
    if (r->too_large || size > max - r->len) {
        /* keep reading (bounded) so that the client can get its 413 */
        r->too_large = 1;
        r->discarded += size;
        return r->discarded > max ? MHD_NO : MHD_YES;
    }
    if (r->len + size > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + size) cap *= 2;
        if (cap > max) cap = max;
        char *nb = realloc(r->body, cap);
        if (!nb) return MHD_NO;
        r->body = nb;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, size);
    r->len += size;
    return MHD_YES;
}

/* The client's address as 16 bytes (IPv4 mapped into IPv6): 0, or -1 when unknown. */
static int gw_client_addr(struct MHD_Connection *c, unsigned char addr[16])
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    memset(addr, 0, 16);
    if (sa && sa->sa_family == AF_INET) {
        addr[10] = addr[11] = 0xff;
        memcpy(addr + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa && sa->sa_family == AF_INET6) {
        memcpy(addr, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
        return 0;
    }
    return -1;
}

/* Counts r as waiting for a service, within GATEWAY_MAX_INFLIGHT (else 503) and
 * GATEWAY_MAX_INFLIGHT_PER_IP (else 429): 0, or -1 with the refusal queued (*ret). */
static int gw_admit(gw_req *r, struct MHD_Connection *c, enum MHD_Result *ret)
{
    http_server *s = r->srv;
    gw_hdr h[] = {{"Retry-After", "1"}};
    if (atomic_fetch_add(&s->waiting, 1) >= (int)s->cfg.max_inflight) {
        atomic_fetch_sub(&s->waiting, 1);
        metric_inc(s->m_overload);
        *ret = gw_error(r, c, 503, "overloaded",
                        "too many requests in flight in the gateway, try again later", h, 1);
        return -1;
    }
    unsigned char addr[16];
    if (s->cfg.max_inflight_per_ip == 0 || gw_client_addr(c, addr) != 0) return 0;
    unsigned hash = 2166136261u;
    for (int i = 0; i < 16; i++) hash = (hash ^ addr[i]) * 16777619u;
    pthread_mutex_lock(&s->ip_lock);
    gw_ipcount **head = &s->ips[hash % HTTP_IP_BUCKETS], *e = *head;
    while (e && memcmp(e->addr, addr, 16) != 0) e = e->next;
    if (!e && (e = calloc(1, sizeof *e))) {
        memcpy(e->addr, addr, 16);
        e->next = *head;
        *head = e;
    }
    int over = !e || e->count >= s->cfg.max_inflight_per_ip;
    if (!over) {
        e->count++;
        r->ip = e;
    }
    pthread_mutex_unlock(&s->ip_lock);
    if (!over) return 0;
    atomic_fetch_sub(&s->waiting, 1);
    metric_inc(s->m_ip_overload);
    *ret = gw_error(r, c, 429, "too_many_requests",
                    "too many requests in flight from this address, try again later", h, 1);
    return -1;
}

/* r no longer waits for a service (gw_admit undone); any thread. */
static void gw_release(gw_req *r)
{
    http_server *s = r->srv;
    atomic_fetch_sub(&s->waiting, 1);
    metric_add(s->m_waiting, -1);
    gw_ipcount *e = r->ip;
    if (!e) return;
    r->ip = NULL;
    pthread_mutex_lock(&s->ip_lock);
    if (--e->count == 0) {
        unsigned hash = 2166136261u;
        for (int i = 0; i < 16; i++) hash = (hash ^ e->addr[i]) * 16777619u;
        gw_ipcount **pp = &s->ips[hash % HTTP_IP_BUCKETS];
        while (*pp != e) pp = &(*pp)->next;
        *pp = e->next;
        free(e);
    }
    pthread_mutex_unlock(&s->ip_lock);
}

/* proxy.c's done: the answer is in r->ans. Runs on a nats.c thread, the bus's timer thread
 * or inside gw_run; once the connection is resumed, r belongs to MHD's thread again (the
 * completion callback may free it at once), so nothing of r is touched after that. */
static void gw_on_answer(void *ud)
{
    gw_req *r = ud;
    http_server *s = r->srv;
    struct MHD_Connection *c = r->conn;
    gw_release(r);
    r->phase = GW_ANSWERED;
    MHD_resume_connection(c); /* its lock orders the writes above before the handler's reads */
    atomic_fetch_sub(&s->suspended, 1);
}

/* The resumed connection: queue the route's answer. */
static enum MHD_Result gw_answer(gw_req *r, struct MHD_Connection *c)
{
    proxy_answer *ans = &r->ans;
    gw_hdr h[1];
    size_t nh = 0;
    r->phase = GW_IDLE;
    if (ans->hdr_name[0]) h[nh++] = (gw_hdr){ans->hdr_name, ans->hdr_value};
    if (ans->status == 401 && ans->error == NULL && !nh) {
        /* a service refusing the caller: keep RFC 6750's challenge */
        h[nh++] = (gw_hdr){"WWW-Authenticate", "Bearer"};
    }
    enum MHD_Result ret = gw_send(r, c, ans->status, ans->body, ans->len,
                                  ans->body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT,
                                  "application/json", h, nh);
    ans->body = NULL; /* owned by MHD now */
    return ret;
}

/* The request is complete: parse, check the bounds, start the route (the answer follows in
 * gw_answer). */
static enum MHD_Result gw_run(gw_req *r, struct MHD_Connection *c, const char *url,
                              const char *method)
{
    http_server *s = r->srv;
    char why[160];
    json_t *query = NULL, *body = NULL;
    enum MHD_Result ret;

    if (r->too_large) {
        snprintf(why, sizeof why, "request body larger than %zu bytes", s->cfg.max_body);
        return gw_error(r, c, 413, "payload_too_large", why, NULL, 0);
    }
    const char *q = r->query ? r->query : "";
    if (form_parse(q, strlen(q), 0, HTTP_QUERY_MAX_PAIRS, &query, why, sizeof why) != SC_OK) {
        char msg[200];
        snprintf(msg, sizeof msg, "query string: %s", why);
        ret = gw_error(r, c, 400, "invalid_request", msg, NULL, 0);
        goto done;
    }
    if (r->len > 0 && r->ctype == META_CT_JSON) {
        json_error_t je;
        /* duplicate names are refused, as in forms: parsers disagree on which one wins */
        body = json_loadb(r->body, r->len, JSON_REJECT_DUPLICATES, &je);
        if (!json_is_object(body)) {
            snprintf(why, sizeof why, "%s",
                     body ? "body must be a JSON object" : "malformed JSON body");
            ret = gw_error(r, c, 400, "invalid_request", why, NULL, 0);
            goto done;
        }
    } else if (r->len > 0) {
        if (form_parse(r->body, r->len, FORM_STRICT, HTTP_FORM_MAX_PAIRS, &body, why, sizeof why) !=
            SC_OK) {
            ret = gw_error(r, c, 400, "invalid_request", why, NULL, 0);
            goto done;
        }
    }
    if (gw_admit(r, c, &ret) != 0) goto done;
    metric_add(s->m_waiting, 1);
    if (!(r->env = compose_envelope(method, url, &r->match, query, body))) {
        gw_release(r);
        ret = gw_error(r, c, 500, "internal_error", "out of memory", NULL, 0);
        goto done;
    }
    bus_hdr hdrs[4] = {{HDR_REQUEST_ID, r->rid}, {HDR_TRACEPARENT, r->traceparent}};
    size_t nhdr = 2;
    if (r->authed) {
        hdrs[nhdr++] = (bus_hdr){HDR_USER, r->user};
        if (r->sub_topics) hdrs[nhdr++] = (bus_hdr){HDR_SCOPE_SUB, r->sub_topics};
    }
    proxy_call pc = {r->match.route, r->env, r->authed ? r->user : NULL, hdrs, nhdr, r->rid};
    /* suspended before anything is sent: the reply's resume always follows this */
    r->conn = c;
    r->phase = GW_WAITING;
    atomic_fetch_add(&s->suspended, 1);
    MHD_suspend_connection(c);
    proxy_start(s->bus, &pc, &r->ans, gw_on_answer, r);
    ret = MHD_YES;
done:
    json_decref(body);
    json_decref(query);
    return ret;
}

/* 1 when the request announces a body (MHD closes the connection after an answer queued
 * before the body was read, so only such requests are answered from their head). */
/* ---- the request and response deadlines --------------------------------------------------
 * libmicrohttpd's connection timeout counts idle time, so a client that sends its request
 * head or body one byte a second, or reads a large response one byte a second, keeps a
 * connection (and, by default, a thread) for ever. Each connection records by when the
 * request it waits for must be complete (request_timeout_ms after the wait began), or the
 * response queued on it must be read (response_timeout_ms after it was queued); a watchdog
 * shuts down the socket of a connection past its deadline, which makes libmicrohttpd close
 * it. */

static int64_t gw_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sets c's deadline (0: none) and what it is for. keep_sending: leave a response's deadline
 * as it is (an answer queued from the head keeps its own when the body comes in). */
static void gw_set_deadline(http_server *s, struct MHD_Connection *c, int64_t deadline,
                            bool sending, bool keep_sending)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    gw_conn *gc = ci ? ci->socket_context : NULL;
    if (!gc) return;
    pthread_mutex_lock(&s->conns_lock);
    if (!(keep_sending && gc->sending)) {
        gc->deadline = deadline;
        gc->sending = sending;
    }
    pthread_mutex_unlock(&s->conns_lock);
}

/* The next request is due on c (a new or kept-alive connection). */
static void gw_request_due(http_server *s, struct MHD_Connection *c)
{
    gw_set_deadline(s, c, gw_now_ms() + s->cfg.request_timeout_ms, false, false);
}

static void gw_request_arrived(http_server *s, struct MHD_Connection *c)
{
    gw_set_deadline(s, c, 0, false, true);
}

static void gw_response_queued(http_server *s, struct MHD_Connection *c)
{
    gw_set_deadline(s, c, gw_now_ms() + s->cfg.response_timeout_ms, true, false);
}

static void gw_notify_conn(void *cls, struct MHD_Connection *c, void **socket_context,
                           enum MHD_ConnectionNotificationCode code)
{
    http_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) metric_add(s->m_conns, 1);
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) metric_add(s->m_conns, -1);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        int l = MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION) != NULL;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        gw_conn *gc = ci ? calloc(1, sizeof *gc) : NULL;
        if (!gc) {
            /* no watchdog for this one; the listener's count is still given back at close */
            *socket_context = &s->untracked[l];
            return;
        }
        *socket_context = gc;
        gc->listener = l;
        gc->fd = ci->connect_fd;
        gc->srv = s;
        pthread_mutex_lock(&s->conns_lock);
        gc->deadline = gw_now_ms() + s->cfg.request_timeout_ms;
        gc->next = s->conns.next;
        gc->prev = &s->conns;
        s->conns.next->prev = gc;
        s->conns.next = gc;
        pthread_mutex_unlock(&s->conns_lock);
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        gw_conn *gc = *socket_context;
        *socket_context = NULL;
        if (!gc) return;
        atomic_fetch_sub(&s->nconn[gc->listener], 1);
        if (gc == &s->untracked[gc->listener]) return;
        pthread_mutex_lock(&s->conns_lock);
        gc->prev->next = gc->next;
        gc->next->prev = gc->prev;
        pthread_mutex_unlock(&s->conns_lock);
        tlscert_release(gc->tls_gen); /* MHD has run gnutls_deinit by now */
        free(gc);
    }
}

/* GnuTLS asks for the certificate of a handshake (gnutls_certificate_retrieve_function2):
 * the current pair, referenced by the connection until it closes (tlscert.h). libmicrohttpd
 * sets the session's pointer to its connection (its own PSK callback relies on it too), and
 * the connection's socket context is our gw_conn, made before the handshake starts. */
static int gw_tls_cert(gnutls_session_t session, const gnutls_datum_t *req_ca_rdn, int nreqs,
                       const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                       gnutls_pcert_st **pcert, unsigned int *pcert_length,
                       gnutls_privkey_t *privkey)
{
    (void)req_ca_rdn;
    (void)nreqs;
    (void)pk_algos;
    (void)pk_algos_length;
    struct MHD_Connection *c = gnutls_session_get_ptr(session);
    const union MHD_ConnectionInfo *ci =
        c ? MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT) : NULL;
    gw_conn *gc = ci ? ci->socket_context : NULL;
    if (!gc || !gc->srv->cfg.certs) return -1; /* no bookkeeping: refuse the handshake */
    tlscert_gen *g = tlscert_acquire(gc->srv->cfg.certs);
    tlscert_release(gc->tls_gen); /* a second handshake on one connection: the newer wins */
    gc->tls_gen = g;
    tlscert_gen_pair(g, pcert, pcert_length, privkey);
    return 0;
}

static void *gw_watchdog(void *arg)
{
    http_server *s = arg;
    pthread_mutex_lock(&s->conns_lock);
    while (!s->stop) {
        int64_t now = gw_now_ms();
        for (gw_conn *gc = s->conns.next; gc != &s->conns; gc = gc->next) {
            if (gc->deadline && now > gc->deadline) {
                gc->deadline = 0;
                shutdown(gc->fd, SHUT_RDWR);
                metric_inc(gc->sending ? s->m_response_timeouts : s->m_head_timeouts);
            }
        }
        pthread_mutex_unlock(&s->conns_lock);
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&s->conns_lock);
    }
    pthread_mutex_unlock(&s->conns_lock);
    return NULL;
}

static int gw_expects_body(struct MHD_Connection *c)
{
    const char *cl = gw_header(c, MHD_HTTP_HEADER_CONTENT_LENGTH);
    return gw_header(c, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL || (cl && strcmp(cl, "0") != 0);
}

static enum MHD_Result gw_handler(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)cls;
    (void)version;
    gw_req *r = *con_cls;
    if (!r) return MHD_NO; /* the URI callback could not allocate */
    if (r->phase == GW_ANSWERED) return gw_answer(r, c);
    if (r->phase == GW_WAITING) return MHD_YES; /* MHD does not call a suspended one */
    if (!r->started) {
        r->started = 1;
        /* Without a body the last call follows at once: the head is judged there, so that
         * answers to it keep the connection alive. */
        if (!gw_expects_body(c)) {
            gw_request_arrived(r->srv, c);
            return MHD_YES;
        }
        r->head_done = 1;
        return gw_head(r, c, url, method);
    }
    if (*upload_data_size) {
        enum MHD_Result ret = gw_upload(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return ret;
    }
    gw_request_arrived(r->srv, c); /* the body is complete: the deadline is met */
    if (!r->head_done) {
        r->head_done = 1;
        enum MHD_Result ret = gw_head(r, c, url, method);
        if (ret != MHD_YES || r->status != 0) return ret;
    }
    return gw_run(r, c, url, method);
}

/* ---- per-request bookkeeping ---------------------------------------------------------- */

static void *gw_uri_cb(void *cls, const char *uri, struct MHD_Connection *c)
{
    http_server *s = cls;
    gw_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->srv = s;
    /* a TLS session, not the daemon: with a thread pool the connection's daemon is a worker */
    r->tls = c && MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION) != NULL;
    r->method = "OTHER";
    r->label = "unmatched";
    clock_gettime(CLOCK_MONOTONIC, &r->t0);
    const char *q = uri ? strchr(uri, '?') : NULL;
    if (q) {
        size_t n = strcspn(q + 1, "#");
        r->query = strndup(q + 1, n);
    }
    atomic_fetch_add(&s->inflight, 1);
    metric_add(s->m_inflight, 1);
    return r;
}

static void gw_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    http_server *s = cls;
    gw_req *r = *con_cls;
    *con_cls = NULL;
    if (c) gw_request_due(s, c); /* kept alive: the next head is due */
    if (!r) return;
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - r->t0.tv_sec) + (double)(t1.tv_nsec - r->t0.tv_nsec) / 1e9;
    char code[16];
    if (r->status > 0)
        snprintf(code, sizeof code, "%d", r->status);
    else
        snprintf(code, sizeof code, "%s", r->status < 0 ? "-" : "aborted");
    if (r->quiet) {
        log_debug("request", "method=%s route=%s status=%s dur_ms=%.1f rid=%s", r->method, r->label,
                  code, secs * 1000, r->rid);
    } else if (r->started) {
        char labels[ROUTES_MAX_PATH + 96];
        log_info("request", "method=%s route=%s status=%s dur_ms=%.1f rid=%s trace=%.32s%s",
                 r->method, r->label, code, secs * 1000, r->rid, r->traceparent + 3,
                 toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " aborted=1");
        snprintf(labels, sizeof labels, "route=\"%s\",method=\"%s\",code=\"%s\"", r->label,
                 r->method, code);
        metric_inc(metrics_counter("sc_gateway_requests_total", labels,
                                   "HTTP requests by route, method and status"));
        snprintf(labels, sizeof labels, "route=\"%s\"", r->label);
        metric_observe(metrics_histogram("sc_gateway_request_duration_seconds", labels,
                                         "HTTP request latency by route, in seconds"),
                       secs);
    }
    atomic_fetch_sub(&s->inflight, 1);
    metric_add(s->m_inflight, -1);
    proxy_answer_clear(&r->ans);
    json_decref(r->env);
    free(r->query);
    free(r->sub_topics);
    free(r->body);
    free(r);
}

/* Leaves the URL as the client sent it (see the file comment). */
static size_t gw_unescape_none(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

static void gw_mhd_log(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
static void gw_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char buf[256];
    vsnprintf(buf, sizeof buf, fmt, ap);
    for (char *p = buf; *p; p++)
        if (*p == '"' || *p == '\n' || *p == '\r') *p = (*p == '"') ? '\'' : ' ';
    /* a client that left before its answer is no fault of ours (and one line each would
     * let clients flood the log) */
    if (strstr(buf, "closed by remote peer") || strstr(buf, "reset by peer"))
        log_debug("http server", "detail=\"%s\"", buf);
    else
        log_warn("http server", "detail=\"%s\"", buf);
}

/* ---- server ----------------------------------------------------------------------------- */

/* Starts one listener on addr (tls: HTTPS with the server's certificates). 0 and *d and
 * *port, or a negative errno after logging why. */
/* ---- the acceptor ------------------------------------------------------------------------ */

/* A listening socket as libmicrohttpd would make it (SO_REUSEADDR; IPv6 only on an IPv6
 * address), non-blocking. Returns the fd or -errno; *port is the bound port. */
static int gw_listen_socket(const struct sockaddr_storage *ss, unsigned sslen, int *port)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss->ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    if (bind(fd, (const struct sockaddr *)ss, sslen) != 0 || listen(fd, SOMAXCONN) != 0 ||
        getsockname(fd, (struct sockaddr *)&bound, &blen) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    *port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                              : ((struct sockaddr_in *)&bound)->sin_port);
    return fd;
}

#define GW_ACCEPT_BURST 64 /* connections taken from one listener before looking at the other */
#define GW_MHD_LIMIT_FACTOR 512 /* above GATEWAY_THREADS' largest value, 256 */

static void *gw_acceptor_main(void *arg)
{
    http_server *s = arg;
    struct MHD_Daemon *ds[2] = {s->d, s->dtls};
    struct pollfd p[3];
    int n = 0, which[3];
    for (int i = 0; i < 2; i++)
        if (s->lfd[i] >= 0) {
            p[n] = (struct pollfd){.fd = s->lfd[i], .events = POLLIN};
            which[n++] = i;
        }
    p[n] = (struct pollfd){.fd = s->stop_efd, .events = POLLIN};
    int64_t last_warn = 0;
    bool pause = false; /* after a failure for want of files or memory: wait, don't spin */
    for (;;) {
        /* while paused only the stop is watched: the listeners stay readable */
        int r = pause ? poll(&p[n], 1, 10) : poll(p, (nfds_t)n + 1, -1);
        if (r < 0 && errno != EINTR) {
            log_error("the acceptor stops: poll failed", "error=\"%s\"", strerror(errno));
            break;
        }
        if (p[n].revents) break; /* asked to stop */
        if (pause || r <= 0) {
            pause = false;
            continue;
        }
        for (int k = 0; k < n; k++) {
            if (!(p[k].revents & POLLIN)) continue;
            for (int b = 0; b < GW_ACCEPT_BURST; b++) {
                struct sockaddr_storage peer;
                socklen_t plen = sizeof peer;
                int c = accept4(p[k].fd, (struct sockaddr *)&peer, &plen,
                                SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (c < 0) {
                    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                        int64_t now = gw_now_ms();
                        if (now - last_warn >= 1000) {
                            log_warn("cannot accept a connection", "error=\"%s\"", strerror(errno));
                            last_warn = now;
                        }
                        pause = true;
                    }
                    break; /* EAGAIN, or a client gone before it was taken */
                }
                int l = which[k];
                if (atomic_fetch_add(&s->nconn[l], 1) >= (int)s->cfg.max_connections) {
                    atomic_fetch_sub(&s->nconn[l], 1);
                    close(c); /* closed at once (libmicrohttpd left them in the backlog) */
                    metric_inc(s->m_limit_refused);
                    continue;
                }
                /* libmicrohttpd owns c from here: it closes it when over the per-address
                 * limit (MHD_NO) or, once started, gives the count back at close */
                if (MHD_add_connection(ds[l], c, (const struct sockaddr *)&peer, plen) != MHD_YES)
                    atomic_fetch_sub(&s->nconn[l], 1);
            }
        }
    }
    return NULL;
}

static int gw_acceptor_start(http_server *s)
{
    s->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->stop_efd < 0) return -errno;
    if (pthread_create(&s->acceptor, NULL, gw_acceptor_main, s) != 0) return -EAGAIN;
    s->acceptor_started = 1;
    return 0;
}

/* Stops taking connections and closes the listening sockets; idempotent. */
static void gw_acceptor_stop(http_server *s)
{
    if (s->acceptor_started) {
        uint64_t one = 1;
        if (write(s->stop_efd, &one, sizeof one) != (ssize_t)sizeof one)
            log_warn("cannot wake the acceptor", "error=\"%s\"", strerror(errno));
        pthread_join(s->acceptor, NULL);
        s->acceptor_started = 0;
    }
    for (int i = 0; i < 2; i++)
        if (s->lfd[i] >= 0) {
            close(s->lfd[i]);
            s->lfd[i] = -1;
        }
}

static int gw_listen(http_server *s, const char *addr, bool tls, struct MHD_Daemon **d, int *port)
{
    const http_cfg *cfg = &s->cfg;
    struct sockaddr_storage ss;
    unsigned sslen = 0;
    const char *what = tls ? "tls_listen" : "listen";
    if (cfg_resolve_addr(addr, &ss, &sslen) != 0) {
        log_error("bad listen address", "%s=%s", what, addr);
        return -EINVAL;
    }
    int fd = gw_listen_socket(&ss, sslen, port);
    if (fd < 0) {
        log_error(tls ? "cannot start HTTPS server" : "cannot start HTTP server",
                  "%s=%s error=\"%s\"", what, addr, strerror(-fd));
        return fd;
    }
    s->lfd[tls] = fd;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG |
                     MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_NO_LISTEN_SOCKET;
    if (tls) flags |= MHD_USE_TLS;
    /* the TLS options are cut off (MHD_OPTION_END) on the plain listener */
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)gw_mhd_log, NULL}, /* first: see MHD docs */
        /* never reached: the acceptor holds the listener to cfg->max_connections (see
         * nconn), and each of a pool's threads gets this over the pool's size */
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)cfg->max_connections * GW_MHD_LIMIT_FACTOR, NULL},
        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, cfg->max_per_ip, NULL}, /* 0: none */
        {MHD_OPTION_CONNECTION_TIMEOUT, cfg->client_timeout_s, NULL},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)cfg->conn_memory, NULL},
        {MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)gw_uri_cb, s},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)gw_completed, s},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)gw_notify_conn, s},
        {MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)gw_unescape_none, NULL},
        {MHD_OPTION_STRICT_FOR_CLIENT, 1, NULL},
        {cfg->threads > 1 ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_STRICT_FOR_CLIENT,
         cfg->threads > 1 ? (intptr_t)cfg->threads : 1, NULL},
        {tls ? MHD_OPTION_HTTPS_PRIORITIES : MHD_OPTION_END, 0, (void *)HTTP_TLS_PRIORITIES},
        {MHD_OPTION_HTTPS_CERT_CALLBACK, 0, (void *)gw_tls_cert},
        {MHD_OPTION_END, 0, NULL},
    };
    *d = MHD_start_daemon(flags, 0, NULL, NULL, gw_handler, s, MHD_OPTION_ARRAY, opts,
                          MHD_OPTION_END);
    if (!*d) {
        log_error(tls ? "cannot start HTTPS server" : "cannot start HTTP server", "%s=%s", what,
                  addr);
        return -EADDRINUSE;
    }
    return 0;
}

/* Raises the soft file limit toward the hard one as far as the connection limit needs. When
 * it still falls short, the per-listener limit is lowered to what fits (with a warning): a
 * connection past the file limit would fail at accept (EMFILE) and be dropped unanswered,
 * while one past the connection limit is refused cleanly, and the files the gateway needs
 * for itself (NATS, its admin port, a reload) stay free. */
#define GW_FD_RESERVE 128
static void gw_fd_check(http_cfg *cfg, bool plain, bool tls)
{
    struct rlimit rl;
    unsigned listeners = (unsigned)(plain + tls);
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return;
    rlim_t need = (rlim_t)cfg->max_connections * listeners + GW_FD_RESERVE;
    if (need > rl.rlim_cur && rl.rlim_max > rl.rlim_cur) {
        rl.rlim_cur = need < rl.rlim_max ? need : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (need <= rl.rlim_cur) return;
    rlim_t fit = rl.rlim_cur > 2 * GW_FD_RESERVE ? (rl.rlim_cur - GW_FD_RESERVE) / listeners : 64;
    log_warn("GATEWAY_MAX_CONNECTIONS lowered to fit the file limit",
             "max_connections=%u listeners=%u nofile=%llu now=%llu", cfg->max_connections,
             listeners, (unsigned long long)rl.rlim_cur, (unsigned long long)fit);
    cfg->max_connections = (unsigned)fit;
}

int http_create(http_server **out, const http_cfg *cfg, bus *b, const routes *rt, keys *ks,
                const statics *st)
{
    int rc = 0;
    bool plain = cfg->listen && cfg->listen[0], tls = cfg->tls_listen && cfg->tls_listen[0];
    if (!plain && !tls) {
        log_error("no listener", "listen=\"\" tls_listen=\"\"");
        return -EINVAL;
    }
    if (tls && !cfg->certs) {
        log_error("a TLS listener needs a certificate", "tls_listen=%s", cfg->tls_listen);
        return -EINVAL;
    }
    http_server *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    s->lfd[0] = s->lfd[1] = s->stop_efd = -1;
    s->cfg = *cfg;
    if (!s->cfg.cors_origins) s->cfg.cors_origins = "";
    if (!s->cfg.hsts) s->cfg.hsts = "";
    s->bus = b;
    s->rt = rt;
    s->ks = ks;
    s->st = st;
    s->m_inflight = metrics_gauge("sc_gateway_requests_in_flight", NULL,
                                  "HTTP requests being handled");
    s->m_conns = metrics_gauge("sc_gateway_connections", NULL,
                               "open HTTP connections (counted once the server took them, "
                               "after the per-address and total limits)");
    s->m_limit_refused = metrics_counter("sc_gateway_connections_refused_total", NULL,
                                         "connections closed at once: GATEWAY_MAX_CONNECTIONS "
                                         "reached on their listener");
    s->m_waiting = metrics_gauge("sc_gateway_requests_waiting", NULL,
                                 "HTTP requests waiting for a service (GATEWAY_MAX_INFLIGHT)");
    s->m_overload = metrics_counter("sc_gateway_overload_total", NULL,
                                    "requests refused with 503: GATEWAY_MAX_INFLIGHT reached");
    s->m_ip_overload = metrics_counter("sc_gateway_ip_overload_total", NULL,
                                       "requests refused with 429: GATEWAY_MAX_INFLIGHT_PER_IP "
                                       "reached");
    for (size_t i = 0; i < rt->n; i++)
        if (rt->v[i].timeout_ms > s->max_route_ms) s->max_route_ms = rt->v[i].timeout_ms;
    pthread_mutex_init(&s->ip_lock, NULL);
    gw_fd_check(&s->cfg, plain, tls);
    s->m_head_timeouts = metrics_counter("sc_gateway_head_timeouts_total", NULL,
                                         "connections closed for a request (head and body) "
                                         "slower than GATEWAY_REQUEST_TIMEOUT_MS");
    s->m_response_timeouts = metrics_counter("sc_gateway_response_timeouts_total", NULL,
                                             "connections closed for a response not read "
                                             "within GATEWAY_RESPONSE_TIMEOUT_MS");
    pthread_mutex_init(&s->conns_lock, NULL);
    s->conns.next = s->conns.prev = &s->conns;
    if (s->cfg.request_timeout_ms > 0) {
        if (pthread_create(&s->watchdog, NULL, gw_watchdog, s) != 0) {
            log_error("cannot start the head watchdog", "error=%s", "pthread_create");
            rc = -EAGAIN;
            goto error;
        }
        s->watchdog_started = 1;
    }
    /* HTTPS first: its start (GnuTLS) is the slow one, and an answer on the plain port
     * (/readyz) must mean both listen */
    if (tls && (rc = gw_listen(s, cfg->tls_listen, true, &s->dtls, &s->tls_port)) != 0) goto error;
    if (plain && (rc = gw_listen(s, cfg->listen, false, &s->d, &s->port)) != 0) goto error;
    if ((rc = gw_acceptor_start(s)) != 0) {
        log_error("cannot start the acceptor", "error=\"%s\"", strerror(-rc));
        goto error;
    }
    *out = s;
    return 0;
error:
    http_destroy(s);
    return rc;
}

int http_port(const http_server *s) { return s->port; }

int http_tls_port(const http_server *s) { return s->tls_port; }

void http_drain(http_server *s, int timeout_ms)
{
    if (!s) return;
    gw_acceptor_stop(s); /* the listening sockets closed: new clients are refused */
    for (int waited = 0; waited < timeout_ms && atomic_load(&s->inflight) > 0; waited += 20) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

void http_destroy(http_server *s)
{
    if (!s) return;
    gw_acceptor_stop(s); /* before the daemons: it hands connections to them */
    /* MHD must not stop with suspended connections; each is resumed by its route's answer,
     * at the latest when the bus times it out */
    int waited = 0, limit = s->max_route_ms + 2000;
    for (; atomic_load(&s->suspended) > 0 && waited < limit; waited += 10) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&s->suspended) > 0) {
        /* cannot happen while the bus is alive (it times every request out); stopping MHD
         * now would free connections a reply is about to resume */
        log_error("requests still waiting for services at shutdown, server left running",
                  "waiting=%d", atomic_load(&s->suspended));
        return;
    }
    if (s->watchdog_started) {
        pthread_mutex_lock(&s->conns_lock);
        s->stop = 1;
        pthread_mutex_unlock(&s->conns_lock);
        pthread_join(s->watchdog, NULL);
    }
    if (s->stop_efd >= 0) close(s->stop_efd);
    if (s->d) MHD_stop_daemon(s->d);
    if (s->dtls) MHD_stop_daemon(s->dtls);
    pthread_mutex_destroy(&s->conns_lock);
    pthread_mutex_destroy(&s->ip_lock);
    free(s);
}
