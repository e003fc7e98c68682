/* session_sse.c - Server-Sent Events on the edge (module sse_, the protocol layer's file for
 * streams); see sse.h. */
#include "session_int.h"

#include "contract.h"
#include "log.h"
#include "proto/msg.h"
#include "proto/topic.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SSE_PATH "/sse"
#define ID_MAX_DIGITS 16 /* positions below 2^53 */

#define POS_UNKNOWN UINT64_MAX /* an empty field of the id: resumed as a new stream would be */

struct sse_conn;

/* A topic's starting position, asked of its stream when the request brought none (the
 * subject's last sequence now: what comes after it is new). */
typedef struct sse_look {
    session *s;
    replay *r; /* in flight, or NULL */
    uint16_t i;
} sse_look;

/* A stream's topics and what its id is made of. Its subscriptions only ever grow until it
 * closes (nothing unsubscribes a stream), so recs[] is rebuilt only when s->nsubs changed. */
typedef struct sse_conn {
    uint16_t ntopics;     /* [0] is the inbox ("user") */
    uint16_t mapped;      /* s->nsubs when recs[] was last made */
    uint64_t floor[2];    /* newest seq queued from the live flow: [0] events, [1] the inbox */
    uint64_t disruptions; /* fab_disruptions when the synced flags were last trusted */
    bool ended;           /* on_stream_end ran */
    uint64_t *since;      /* per topic: where it started (POS_UNKNOWN: not known yet) */
    uint64_t *sent;       /* per topic: the last seq sent (0: none) */
    bool *synced;         /* per topic: a live event came that followed on from what it had, so
                           * its live flow is whole: the floor may stand for its position */
    sub_rec **recs;       /* per topic: its subscription, or NULL (not yet: a look-up, a hook) */
    sse_look *looks;
    char **topics;
} sse_conn;

static struct {
    metric *ok, *bad, *unauthorized, *forbidden, *unavailable, *open;
} m;

static void metrics_once(void)
{
    static const char help[] = "Server-Sent Events requests (GET /sse) by result";
    m.ok = metrics_counter("sc_edge_sse_requests_total", "result=\"ok\"", help);
    m.bad = metrics_counter("sc_edge_sse_requests_total", "result=\"bad_request\"", help);
    m.unauthorized = metrics_counter("sc_edge_sse_requests_total", "result=\"unauthorized\"", help);
    m.forbidden = metrics_counter("sc_edge_sse_requests_total", "result=\"forbidden\"", help);
    m.unavailable = metrics_counter("sc_edge_sse_requests_total", "result=\"unavailable\"", help);
    m.open = metrics_gauge("sc_edge_sse_streams", NULL, "Server-Sent Events streams open");
}

/* ---- the id ---------------------------------------------------------------------------- */

int sse_parse_id(const char *text, size_t n, uint64_t *pos, size_t npos)
{
    size_t k = 0, i = 0;
    while (k < npos) {
        uint64_t v = 0;
        size_t digits = 0;
        while (i < n && text[i] >= '0' && text[i] <= '9') {
            if (++digits > ID_MAX_DIGITS) return -1;
            v = v * 10 + (uint64_t)(text[i++] - '0');
        }
        if (v >= (1ULL << 53)) return -1;
        pos[k++] = digits ? v : POS_UNKNOWN;
        if (k < npos) {
            if (i >= n || text[i] != '.') return -1;
            i++;
        }
    }
    return i == n ? 0 : -1;
}

/* Points recs[] at the stream's subscriptions (after one was added). */
static void map_recs(session *s, sse_conn *x)
{
    char key[300];
    for (uint16_t i = 0; i < x->ntopics; i++) {
        x->recs[i] = NULL;
        if (i == 0) {
            x->recs[0] = s->nsubs ? s->subs[0] : NULL; /* the inbox is subs[0] */
            continue;
        }
        snprintf(key, sizeof key, "e:%s", x->topics[i]);
        for (uint16_t j = 1; j < s->nsubs; j++)
            if (strcmp(s->subs[j]->t->key, key) == 0) x->recs[i] = s->subs[j];
    }
    x->mapped = s->nsubs;
}

/* The id after what is queued now: every topic's position (sse.h). Returns its length. */
static size_t make_id(session *s, sse_conn *x, char *out, size_t cap)
{
    if (x->mapped != s->nsubs) map_recs(s, x);
    size_t n = 0;
    for (uint16_t i = 0; i < x->ntopics && n + 18 <= cap; i++) {
        const sub_rec *r = x->recs[i];
        uint64_t p = x->since[i];
        if (r) {
            p = r->pos.last;
            uint64_t fl = x->floor[i == 0];
            /* live and whole: everything of its stream up to fl has come */
            if (!r->cu && x->synced[i] && fl > p) p = fl;
            if (p == 0 && x->since[i] == POS_UNKNOWN) p = POS_UNKNOWN; /* live, no position */
        }
        if (i) out[n++] = '.';
        if (p != POS_UNKNOWN)
            n += (size_t)snprintf(out + n, cap - n, "%llu", (unsigned long long)p);
    }
    return n;
}

/* ---- messages out ---------------------------------------------------------------------- */

/* Writes "data: <json>\n\n" at out: the JSON on one line (its line breaks, whitespace
 * outside strings, become spaces). out has len + 8 bytes. Returns the bytes written. */
static size_t put_data(char *out, const char *json, size_t len)
{
    memcpy(out, "data: ", 6);
    for (size_t i = 0; i < len; i++)
        out[6 + i] = json[i] == '\n' || json[i] == '\r' ? ' ' : json[i];
    out[6 + len] = '\n';
    out[7 + len] = '\n';
    return len + 8;
}

static int send_raw(wsc_conn *c, const char *bytes, size_t n, bool event)
{
    wsc_frame *f = wsc_frame_raw(bytes, n);
    if (!f) {
        wsc_conn_close(c, WS_CLOSE_INTERNAL, "out of memory");
        return -ENOMEM;
    }
    int rc = event ? wsc_conn_send_event(c, f) : wsc_conn_send(c, f);
    wsc_frame_unref(f);
    return rc;
}

void sse_reply(session *s, const char *text, size_t n)
{
    char stack[REPLY_MAX + 16];
    char *out = n + 8 <= sizeof stack ? stack : malloc(n + 8);
    if (!out) return;
    send_raw(s->c, out, put_data(out, text, n), false);
    if (out != stack) free(out);
}

int sse_send_event(sub_rec *rec, wsc_frame *f, uint64_t seq, uint64_t prev, bool live)
{
    session *s = rec->s;
    sse_conn *x = s->sse;
    size_t plen;
    const uint8_t *payload = wsc_frame_payload(f, &plen);
    if (!payload) return -EINVAL; /* not an event's frame: never made by the fabric */
    int k = rec->t->key[0] == FAB_USER;
    if (x->mapped != s->nsubs) map_recs(s, x);
    /* A bus message lost on the way (a full mailbox, a disconnect, a slow consumer) leaves
     * a gap that its topic shows only at its next event: until each topic proves its flow
     * whole again, the floor must not stand for it, or the id would claim the lost event. */
    uint64_t d = fab_disruptions(s->ws->ctx->fab);
    if (d != x->disruptions) {
        x->disruptions = d;
        memset(x->synced, 0, sizeof *x->synced * x->ntopics);
    }
    uint16_t i = 0;
    while (i < x->ntopics && x->recs[i] != rec) i++;
    if (i < x->ntopics && seq) {
        /* A live event whose predecessor the stream had already (sent, or before where the
         * topic started) proves the topic's live flow whole from here on: an event stored
         * while its NATS subscription was being made, and so never seen, cannot hide behind
         * the floor. */
        uint64_t had = x->sent[i] > x->since[i] || x->since[i] == POS_UNKNOWN ? x->sent[i]
                                                                              : x->since[i];
        if (live && prev <= had && (had || x->since[i] != POS_UNKNOWN)) x->synced[i] = true;
        x->sent[i] = seq;
    }
    if (live && seq > x->floor[k]) x->floor[k] = seq;
    size_t idcap = (size_t)x->ntopics * 18 + 8, cap = 4 + idcap + 1 + plen + 8;
    char stack[2048];
    char *out = cap <= sizeof stack ? stack : malloc(cap);
    if (!out) {
        wsc_conn_close(s->c, WS_CLOSE_INTERNAL, "out of memory");
        return -ENOMEM;
    }
    size_t n = 0;
    if (seq) { /* an event that is not stored moves no position */
        memcpy(out, "id: ", 4);
        n = 4 + make_id(s, x, out + 4, idcap);
        out[n++] = '\n';
    }
    n += put_data(out + n, (const char *)payload, plen);
    int rc = send_raw(s->c, out, n, true);
    if (out != stack) free(out);
    return rc;
}

/* The stream ends (wsc_conn_close, drain): a last message says why; the browser reconnects
 * after retry (a drain sends it to another edge) with Last-Event-ID. */
static void on_stream_end(wsc_conn *c, uint16_t code, const char *reason)
{
    session *s = wsc_conn_data(c);
    if (!s || !s->sse || s->sse->ended) return;
    s->sse->ended = true; /* once: a send that fails closes, which would end it again */
    json_t *j = json_pack("{s:s, s:i, s:s}", "type", "close", "code", (int)code, "reason",
                          reason ? reason : "");
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text) sse_reply(s, text, strlen(text));
    free(text);
    json_decref(j);
}

/* ---- the stream's subscriptions -------------------------------------------------------- */

/* Subscribes topic i from since (-1: live only), as subscribe {topic, since} would. */
static void subscribe_at(session *s, uint16_t i, int64_t since)
{
    sse_conn *x = s->sse;
    if (since >= 0) x->since[i] = (uint64_t)since;
    session_subscribe(s, x->topics[i], since);
}

static bool look_ready(void *ud)
{
    (void)ud;
    return true;
}

/* The subject's last message: the topic starts after it. */
static bool look_event(void *ud, uint64_t seq, const char *data, size_t len)
{
    sse_look *l = ud;
    (void)data;
    (void)len;
    l->r = NULL; /* freed when this returns false */
    subscribe_at(l->s, l->i, (int64_t)seq);
    return false;
}

/* None at all: everything of the subject that the stream will hold is new (since 0). The
 * stream did not answer: live, without a position until the first event. */
static bool look_end(void *ud, enum replay_end why, uint64_t oldest)
{
    sse_look *l = ud;
    (void)oldest;
    l->r = NULL;
    if (why != REPLAY_CAUGHT_UP)
        log_info("sse start position unknown", "conn=%llu topic=%s",
                 (unsigned long long)wsc_conn_id(l->s->c), l->s->sse->topics[l->i]);
    subscribe_at(l->s, l->i, why == REPLAY_CAUGHT_UP ? 0 : -1);
    return false;
}

static const replay_ops look_ops = {look_ready, look_event, look_end};

/* Each topic resumes from the request's position, or, for a new stream, starts after the
 * subject's last message (one direct get), so that even a topic with no event before a cut
 * resumes with nothing lost; a namespace with latest or without history starts live. */
void sse_begin(session *s)
{
    sse_conn *x = s->sse;
    wstate *ws = s->ws;
    for (uint16_t i = 0; i < x->ntopics; i++) {
        const ns_policy *ns = i ? ns_find(ws->ctx->ns, x->topics[i]) : NULL;
        if (ns && !ns->history) {
            subscribe_at(s, i, -1);
        } else if (x->since[i] != POS_UNKNOWN) {
            subscribe_at(s, i, (int64_t)x->since[i]);
        } else if (ns && ns->latest) {
            subscribe_at(s, i, -1); /* its last event first, then live */
        } else {
            char subject[300];
            snprintf(subject, sizeof subject, "%s%s", i ? SUBJ_EVENTS_PREFIX : SUBJ_USERS_PREFIX,
                     i ? x->topics[i] : s->user);
            x->looks[i] = (sse_look){s, NULL, i};
            x->looks[i].r = replay_start(ws->rq, i == 0, subject, REPLAY_LATEST, false, 0,
                                         &look_ops, &x->looks[i]);
            if (!x->looks[i].r) subscribe_at(s, i, -1);
        }
    }
}

void sse_free(session *s)
{
    sse_conn *x = s->sse;
    if (!x) return;
    metric_add(m.open, -1);
    for (uint16_t i = 0; i < x->ntopics; i++) {
        if (x->looks[i].r) replay_cancel(x->looks[i].r);
        free(x->topics[i]);
    }
    free(x->looks);
    free(x->sent);
    free(x->synced);
    free(x->topics);
    free(x->recs);
    free(x->since);
    free(x);
    s->sse = NULL;
}

/* ---- the request ----------------------------------------------------------------------- */

typedef struct answer {
    char **resp;
    size_t *len;
    char cors[400]; /* Access-Control-Allow-Origin and Vary lines, or "" */
} answer;

static const char *status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 405: return "Method Not Allowed";
    default: return "Service Unavailable";
    }
}

/* An error answer with a one-line text body; the connection closes after it. */
static int fail(answer *a, metric *counter, int status, const char *body)
{
    metric_inc(counter);
    char out[1024];
    int n = snprintf(out, sizeof out,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nCache-Control: no-store\r\n%s%s%s"
                     "Connection: close\r\n\r\n%s\n",
                     status, status_text(status), strlen(body) + 1, a->cors,
                     status == 401 ? "WWW-Authenticate: Bearer\r\n" : "",
                     status == 405 ? "Allow: GET, OPTIONS\r\n" : "", body);
    if (n < 0 || (size_t)n >= sizeof out || !(*a->resp = malloc((size_t)n)))
        return WSC_STREAM_ANSWER; /* nothing to say: the core closes */
    memcpy(*a->resp, out, (size_t)n);
    *a->len = (size_t)n;
    return WSC_STREAM_ANSWER;
}

static bool str_is(ws_http_str s, const char *lit)
{
    return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

/* The query's topics (decoded, checked, "user" and duplicates left out) after the inbox at
 * [0], the token and the last id. Returns 0, or the HTTP status with *why. */
typedef struct sse_req {
    char *topics[1 + 1024];
    uint16_t ntopics;
    char token[8193];
    int token_len;
    char last_id[4096];
    int last_len;
} sse_req;

static void sse_req_clear(sse_req *r)
{
    for (uint16_t i = 0; i < r->ntopics; i++) free(r->topics[i]);
    r->ntopics = 0;
    explicit_bzero(r->token, sizeof r->token);
}

static int parse_query(const ws_http_request *req, long max_topics, sse_req *r, const char **why)
{
    static _Thread_local char msg[200]; /* *why may point here: one per worker thread */
    r->topics[0] = strdup("user");
    if (!r->topics[0]) return 503;
    r->ntopics = 1;
    r->token_len = r->last_len = -1;
    const char *q = req->query.p, *end = q ? q + req->query.n : NULL;
    while (q && q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        size_t pl = amp ? (size_t)(amp - q) : (size_t)(end - q);
        char v[TOPIC_MAX + 2];
        int vl;
        if ((vl = ws_http_query_param(q, pl, "topic", v, sizeof v)) != -1) {
            if (vl < 0 || !topic_valid(v)) {
                *why = "bad topic: a topic is dot-separated words of letters, digits, - and _ "
                       "(no wildcards)";
                return 400;
            }
            bool dup = false;
            for (uint16_t i = 0; i < r->ntopics && !dup; i++) dup = strcmp(r->topics[i], v) == 0;
            if (!dup) {
                if (r->ntopics - 1 >= max_topics) {
                    snprintf(msg, sizeof msg, "too many topics: at most %ld", max_topics);
                    *why = msg;
                    return 400;
                }
                if (!(r->topics[r->ntopics] = strdup(v))) return 503;
                r->ntopics++;
            }
        } else if ((vl = ws_http_query_param(q, pl, "access_token", r->token, sizeof r->token)) !=
                   -1) {
            if (vl < 0) {
                *why = "malformed access_token";
                return 400;
            }
            r->token_len = vl;
        } else if ((vl = ws_http_query_param(q, pl, "last_event_id", r->last_id,
                                             sizeof r->last_id)) != -1) {
            if (vl < 0) {
                *why = "malformed last_event_id";
                return 400;
            }
            r->last_len = vl;
        }
        q = amp ? amp + 1 : end;
    }
    return 0;
}

/* GET /sse: the checks a WebSocket client meets at its subscribes, answered here with an
 * HTTP status before the stream starts; then a session on c, and the stream. */
static int on_stream(wsc_conn *c, const ws_http_request *req, char **resp, size_t *len)
{
    if (!str_is(req->path, SSE_PATH)) return 0;
    wstate *ws = wsc_worker_data(wsc_conn_worker(c));
    session_ctx *ctx = ws->ctx;
    const sse_cfg *cfg = &ctx->sse;
    answer a = {resp, len, ""};
    const ws_http_str *origin = ws_http_header_get(req, "Origin");
    ws_http_upgrade_config oc = {.origins = cfg->origins, .norigins = cfg->norigins};
    if (origin && origin->n > 0) {
        if (!ws_http_origin_allowed(&oc, *origin) || origin->n > 300)
            return fail(&a, m.forbidden, 403, "origin not allowed");
        snprintf(a.cors, sizeof a.cors, "Access-Control-Allow-Origin: %.*s\r\nVary: Origin\r\n",
                 (int)origin->n, origin->p);
    }
    if (str_is(req->method, "OPTIONS")) { /* a preflight (fetch with Authorization) */
        char out[1024];
        int n = snprintf(out, sizeof out,
                         "HTTP/1.1 204 No Content\r\n%sAccess-Control-Allow-Methods: GET\r\n"
                         "Access-Control-Allow-Headers: Authorization, Last-Event-ID, "
                         "Cache-Control\r\nAccess-Control-Max-Age: 600\r\n"
                         "Content-Length: 0\r\nConnection: close\r\n\r\n",
                         a.cors);
        if (n > 0 && (size_t)n < sizeof out && (*resp = malloc((size_t)n))) {
            memcpy(*resp, out, (size_t)n);
            *len = (size_t)n;
        }
        return WSC_STREAM_ANSWER;
    }
    if (!str_is(req->method, "GET")) return fail(&a, m.bad, 405, "use GET");

    sse_req rq = {0}; /* on the stack: a request's few KiB leave no hole in the heap */
    sse_req *r = &rq;
    const char *why = NULL;
    int status = parse_query(req,
                             cfg->max_topics < ctx->cfg.max_subscriptions
                                 ? cfg->max_topics
                                 : ctx->cfg.max_subscriptions,
                             r, &why);
    metric *counter = status == 400 ? m.bad : m.unavailable;
    ws_http_str bearer;
    int brc = status ? 0 : ws_http_bearer(req, &bearer);
    if (status == 0 && brc != 0) {
        status = 400, counter = m.bad;
        why = brc == -1 ? "more than one Authorization header" : "malformed Bearer token";
    }
    if (status == 0 && bearer.n > 0) {
        if (bearer.n >= sizeof r->token) {
            status = 401, counter = m.unauthorized, why = "invalid token";
        } else {
            memcpy(r->token, bearer.p, bearer.n);
            r->token[bearer.n] = '\0';
            r->token_len = (int)bearer.n;
        }
    } else if (status == 0 && r->token_len > 0 && !ctx->cfg.query_token) {
        status = 401, counter = m.unauthorized;
        why = "access_token in the URL is turned off on this edge";
    }
    if (status == 0 && r->token_len <= 0)
        status = 401, counter = m.unauthorized,
        why = "token required: Authorization: Bearer or "
              "access_token";
    /* where the stream resumes: the browser's header, or the query (curl, a new EventSource) */
    uint64_t since[1 + 1024];
    for (size_t i = 0; i < sizeof since / sizeof *since; i++) since[i] = POS_UNKNOWN;
    const ws_http_str *hid = ws_http_header_get(req, "Last-Event-ID");
    const char *idp = hid && hid->n ? hid->p : r->last_len > 0 ? r->last_id : NULL;
    size_t idn = hid && hid->n ? hid->n : r->last_len > 0 ? (size_t)r->last_len : 0;
    bool resumed = idp != NULL;
    if (status == 0 && idp && sse_parse_id(idp, idn, since, r->ntopics) != 0) {
        status = 400, counter = m.bad;
        why = "Last-Event-ID is not an id of this stream's topics (one position per topic, the "
              "inbox first)";
    }
    if (status != 0) {
        sse_req_clear(r);
        return fail(&a, counter, status, why ? why : "unavailable");
    }

    session *s = session_new(c);
    sse_conn *x = s ? calloc(1, sizeof *x) : NULL;
    if (!s || !x || !(x->since = calloc(r->ntopics, sizeof *x->since)) ||
        !(x->recs = calloc(r->ntopics, sizeof *x->recs)) ||
        !(x->looks = calloc(r->ntopics, sizeof *x->looks)) ||
        !(x->sent = calloc(r->ntopics, sizeof *x->sent)) ||
        !(x->synced = calloc(r->ntopics, sizeof *x->synced)) ||
        !(x->topics = calloc(r->ntopics, sizeof *x->topics))) {
        if (x) {
            free(x->since);
            free(x->recs);
            free(x->looks);
            free(x->sent);
            free(x->synced);
            free(x);
        }
        sse_req_clear(r);
        return fail(&a, m.unavailable, 503, "out of memory");
    }
    x->ntopics = r->ntopics;
    x->disruptions = fab_disruptions(s->ws->ctx->fab);
    memcpy(x->since, since, sizeof *since * r->ntopics);
    memcpy(x->topics, r->topics, sizeof *r->topics * r->ntopics);
    r->ntopics = 0; /* the topics are x's now */
    s->sse = x;
    metric_add(m.open, 1);
    x->mapped = UINT16_MAX;

    token_claims cl;
    int vrc = session_verify(s, r->token, &cl);
    sse_req_clear(r);
    if (vrc != 0) return fail(&a, m.unauthorized, 401, "invalid token");
    /* A topic the token does not allow is refused now, unless hooks.connect may grant it
     * (then, as a hook's refusal, it is an error message in the stream). */
    perms *p = perms_get(&ws->perms, cl.payload, &ctx->perms_src);
    for (uint16_t i = 1; p && i < x->ntopics; i++) {
        const ns_policy *ns = ns_find(ctx->ns, x->topics[i]);
        if (ns->subscribe == NS_NOBODY || (ns->subscribe == NS_CLAIM && !ctx->cfg.hook_connect &&
                                           !perms_allow(p, false, x->topics[i]))) {
            char msg[200];
            snprintf(msg, sizeof msg, "topic not allowed by the token: %s", x->topics[i]);
            perms_put(&ws->perms, p);
            token_claims_clear(&cl);
            return fail(&a, m.forbidden, 403, msg);
        }
    }
    perms_put(&ws->perms, p);
    if (!p || session_take_claims(s, &cl) != 0 || !(s->user = strdup(cl.sub))) {
        token_claims_clear(&cl);
        return fail(&a, m.unavailable, 503, "out of memory");
    }
    if (ctx->cfg.hook_connect) s->claims_hold = json_incref(cl.payload);
    token_claims_clear(&cl);

    char head[1024];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     "Cache-Control: no-store\r\nX-Accel-Buffering: no\r\n%s\r\n"
                     "retry: %ld\n: sidecast.v1 stream\n\n",
                     a.cors, cfg->retry_ms);
    if (n < 0 || (size_t)n >= sizeof head || !(*resp = malloc((size_t)n)))
        return fail(&a, m.unavailable, 503, "out of memory");
    memcpy(*resp, head, (size_t)n);
    *len = (size_t)n;
    metric_inc(m.ok);
    log_debug("sse stream", "conn=%llu user=%s topics=%u resumed=%s",
              (unsigned long long)wsc_conn_id(c), s->user, (unsigned)x->ntopics - 1,
              resumed ? "yes" : "no");
    return WSC_STREAM_OPEN; /* open (session.c) admits the session, then sse_begin */
}

void sse_handlers(wsc_handlers *h)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, metrics_once);
    h->stream = on_stream;
    h->stream_end = on_stream_end;
}
