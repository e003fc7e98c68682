/* session.c - sidecast.v1 sessions on the WebSocket core; see session.h. */
#include "session_int.h"

#include "contract.h"
#include "log.h"
#include "proto/msg.h"
#include "proto/topic.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

struct session_metrics session_m;

/* Refused authentications, by reason (the token's error, or "timeout"). */
static void count_auth_failure(const char *reason)
{
    char labels[96];
    snprintf(labels, sizeof labels, "result=\"refused\",reason=\"%s\"", reason);
    metric_inc(metrics_counter("sc_edge_auth_total", labels,
                               "authentications by result (refused: by reason)"));
}

static long wall_now(void) { return (long)time(NULL); }

/* ---- replies --------------------------------------------------------------------------------- */

void session_reply(session *s, const char *text, int n)
{
    if (n > 0 && s->sse)
        sse_reply(s, text, (size_t)n);
    else if (n > 0)
        wsc_conn_send_text(s->c, text, (size_t)n);
}

static void reply_error(session *s, const char *id, const char *code, const char *message)
{
    char out[REPLY_MAX];
    session_reply(s, out, msg_error_build(out, sizeof out, id, code, message));
    if (++s->errors > (uint32_t)s->ws->ctx->cfg.max_errors)
        wsc_conn_close(s->c, WS_CLOSE_POLICY, "too many errors");
}

/* ---- subscriptions --------------------------------------------------------------------------- */

static int sub_index(session *s, const char *key)
{
    for (int i = 0; i < s->nsubs; i++)
        if (strcmp(s->subs[i]->t->key, key) == 0) return i;
    return -1;
}

/* Until NATS confirms a new subscription, nothing is written to s's client: its
 * "subscribed" (or "welcome") and whatever follows wait in its queue (wsc_conn_cork). */
static void session_cork(session *s, uint64_t seq)
{
    wstate *ws = s->ws;
    assert(seq > 0); /* a ticket of the fabric's settler */
    if (!s->corked) {
        wsc_conn_cork(s->c);
        s->corked = true;
        s->prev_corked = NULL;
        s->next_corked = ws->corked;
        if (ws->corked) ws->corked->prev_corked = s;
        ws->corked = s;
    }
    if (seq > s->cork_seq) s->cork_seq = seq;
}

static void session_uncork(session *s, bool write)
{
    wstate *ws = s->ws;
    if (!s->corked) return;
    assert(s->prev_corked ? s->prev_corked->next_corked == s : ws->corked == s);
    assert(!s->next_corked || s->next_corked->prev_corked == s);
    if (s->prev_corked)
        s->prev_corked->next_corked = s->next_corked;
    else
        ws->corked = s->next_corked;
    if (s->next_corked) s->next_corked->prev_corked = s->prev_corked;
    s->corked = false;
    s->cork_seq = 0;
    if (write) wsc_conn_uncork(s->c);
}

/* The settler came back (or the loop is about to sleep): uncorks every session it covered.
 * Walks the list only when the settler got further: a session corked since waits for a
 * number past what was settled then (fab_watch, smap_join), so nothing else can be due, and
 * thousands of clients held through a NATS stall cost nothing per loop iteration. */
static void uncork_settled(wstate *ws)
{
    uint64_t done = fab_port_settled(ws->port);
    if (done == ws->uncorked_upto) return;
    ws->uncorked_upto = done;
    for (session *s = ws->corked, *next; s; s = next) {
        next = s->next_corked;
        if (s->cork_seq <= done) session_uncork(s, true);
    }
}

/* ---- conflation (subscribe mode "latest") ----------------------------------------------
 * While a connection has more than conflate_after bytes unsent, the newest event of each of
 * its "latest" topics waits in its subscription (one frame, counted in the outbound bound)
 * and replaces the one that waited before it, which is counted as skipped. before_sleep
 * sends what waits once the queue is back under the mark, with "skipped":N, so the client
 * knows how many it did not get. Other subscriptions keep the bound's rule (4008). */
static void conflated_link(session *s)
{
    wstate *ws = s->ws;
    if (s->conflated) return;
    s->conflated = true;
    s->prev_conflated = NULL;
    s->next_conflated = ws->conflated;
    if (ws->conflated) ws->conflated->prev_conflated = s;
    ws->conflated = s;
}

static void conflated_unlink(session *s)
{
    wstate *ws = s->ws;
    if (!s->conflated) return;
    if (s->prev_conflated)
        s->prev_conflated->next_conflated = s->next_conflated;
    else
        ws->conflated = s->next_conflated;
    if (s->next_conflated) s->next_conflated->prev_conflated = s->prev_conflated;
    s->conflated = false;
}

bool session_conflate(sub_rec *rec, wsc_frame *f)
{
    session *s = rec->s;
    if (!rec->pending && wsc_conn_queued(s->c) <= s->ws->ctx->cfg.conflate_after) return false;
    if (rec->pending) { /* the newer one replaces it */
        session_conflate_drop(rec);
        rec->skipped++;
        metric_inc(session_m.conflated);
    }
    if (wsc_conn_hold(s->c, wsc_frame_size(f)) != 0) return true; /* closed: too slow */
    rec->pending = wsc_frame_ref(f);
    conflated_link(s);
    return true;
}

void session_conflate_drop(sub_rec *rec)
{
    if (!rec->pending) return;
    wsc_conn_unhold(rec->s->c, wsc_frame_size(rec->pending));
    wsc_frame_unref(rec->pending);
    rec->pending = NULL;
}

/* f's event with ,"skipped":n before its closing brace (a new frame; NULL: f as it is). */
static wsc_frame *event_with_skipped(wsc_frame *f, uint32_t n)
{
    size_t len;
    const uint8_t *p = wsc_frame_payload(f, &len);
    if (!p || len < 2 || p[len - 1] != '}') return NULL;
    char tail[40];
    int tl = snprintf(tail, sizeof tail, ",\"skipped\":%u}", n);
    uint8_t *out;
    wsc_frame *e = wsc_frame_alloc(WS_OP_TEXT, len - 1 + (size_t)tl, &out);
    if (!e) return NULL;
    memcpy(out, p, len - 1);
    memcpy(out + len - 1, tail, (size_t)tl);
    return e;
}

void session_conflate_send(sub_rec *rec)
{
    wsc_frame *f = rec->pending;
    if (!f) return;
    wsc_frame_ref(f);
    session_conflate_drop(rec);
    wsc_frame *e = rec->skipped ? event_with_skipped(f, rec->skipped) : NULL;
    rec->skipped = 0;
    if (wsc_conn_send_event(rec->s->c, e ? e : f) == 0) rec->s->ws->delivered++;
    wsc_frame_unref(e);
    wsc_frame_unref(f);
}

/* Sends what waits for sessions whose queue is under the mark again. */
static void conflated_flush(wstate *ws)
{
    size_t mark = ws->ctx->cfg.conflate_after;
    for (session *s = ws->conflated, *next; s; s = next) {
        next = s->next_conflated;
        if (wsc_conn_queued(s->c) > mark) continue;
        conflated_unlink(s);
        for (int i = 0; i < s->nsubs; i++) session_conflate_send(s->subs[i]);
    }
}

static int sub_add(session *s, enum fab_kind kind, const char *name)
{
    if (s->nsubs == s->capsubs) {
        uint16_t ncap = s->capsubs ? (uint16_t)(s->capsubs * 2) : 2;
        sub_rec **ns = realloc(s->subs, sizeof *ns * ncap);
        if (!ns) return -1;
        s->subs = ns;
        s->capsubs = ncap;
    }
    uint64_t wait = 0;
    sub_rec *r = smap_join(s->ws, s, kind, name, &wait);
    if (!r) return -1;
    s->subs[s->nsubs++] = r;
    if (wait) session_cork(s, wait);
    return 0;
}

static void sub_remove(session *s, int i)
{
    smap_leave(s->ws, s->subs[i]);
    memmove(&s->subs[i], &s->subs[i + 1], sizeof *s->subs * (size_t)(s->nsubs - i - 1));
    s->nsubs--;
}

/* ---- tokens ---------------------------------------------------------------------------------- */

/* Applies verified claims to s. Returns 0, or -ENOMEM (s unchanged). */
int session_take_claims(session *s, token_claims *cl)
{
    perms *p = perms_get(&s->ws->perms, cl->payload, &s->ws->ctx->perms_src);
    if (!p) return -ENOMEM;
    perms_put(&s->ws->perms, s->perms);
    s->perms = p;
    const char *sid = json_string_value(json_object_get(cl->payload, "sid"));
    snprintf(s->sid, sizeof s->sid, "%s", sid ? sid : "");
    s->exp = cl->exp;
    s->warned = false;
    return 0;
}

/* The app timer: auth deadline, token_expiring, expiry, whichever comes first. */
static void session_arm(session *s)
{
    loop *l = wsc_worker_loop(wsc_conn_worker(s->c));
    uint64_t now = loop_now(l);
    if (!s->user) {
        wsc_conn_timer(s->c, s->auth_deadline);
        return;
    }
    long warn_at = s->exp - s->ws->ctx->cfg.token_warning_s;
    long at = s->warned ? s->exp : warn_at;
    long delta = at - wall_now();
    uint64_t when = now + (uint64_t)(delta > 0 ? delta * 1000 : 1);
    if (s->inbox_hold_until && s->inbox_hold_until < when) when = s->inbox_hold_until;
    wsc_conn_timer(s->c, when);
}

/* The inbox is live from connect, but a client that resumes sends subscribe {user, since}
 * right after welcome: until then (or EDGE_INBOX_HOLD_MS, or any other message) live inbox
 * events are held, so that the replay and the live flow join in order. */
static void inbox_hold(session *s)
{
    long ms = s->ws->ctx->cfg.inbox_hold_ms;
    sub_rec *rec = s->nsubs ? s->subs[0] : NULL;
    if (ms <= 0 || !rec || rec->cu) return;
    catchup *cu = calloc(1, sizeof *cu);
    if (!cu) return;
    cu->rec = rec;
    rec->cu = cu;
    s->inbox_hold_until = loop_now(wsc_worker_loop(wsc_conn_worker(s->c))) + (uint64_t)ms;
}

static void inbox_release(session *s)
{
    if (!s->inbox_hold_until) return;
    s->inbox_hold_until = 0;
    if (s->nsubs) catchup_release_hold(s->subs[0]);
}

static void session_welcome(session *s)
{
    char out[REPLY_MAX], conn_id[96];
    snprintf(conn_id, sizeof conn_id, "%s-%llu", s->ws->ctx->cfg.edge_id,
             (unsigned long long)wsc_conn_id(s->c));
    session_reply(s, out,
                  msg_welcome_build(out, sizeof out, conn_id, s->user, s->exp,
                                    s->ws->ctx->cfg.edge_id));
    if (s->sse) sse_begin(s); /* the stream's topics, as its client would subscribe now */
}

/* An authenticated session goes live: inbox, presence, welcome (after the presence verdict
 * when a per-user limit is set), timers. */
static void session_begin(session *s)
{
    session_ctx *ctx = s->ws->ctx;
    assert(s->user && s->perms && s->nsubs == 0); /* the inbox becomes subs[0] */
    if (sub_add(s, FAB_USER, s->user) != 0) {
        wsc_conn_close(s->c, WS_CLOSE_INTERNAL, "bus unavailable");
        return;
    }
    metric_inc(session_m.auth_ok);
    wsc_conn_lift_message_limit(s->c); /* EDGE_MAX_MESSAGE from now on */
    log_debug("session authenticated", "conn=%llu user=%s", (unsigned long long)wsc_conn_id(s->c),
              s->user);
    inbox_hold(s);
    session_arm(s);
    if (ctx->pres) {
        bool check = ctx->cfg.max_per_user > 0;
        presence_add(ctx->pres, s->user, wsc_conn_id(s->c), wsc_worker_index(s->ws->w), check);
        s->registered = true;
        if (check) {
            s->awaiting = true;
            s->next_awaiting = s->ws->awaiting;
            s->ws->awaiting = s;
            return;
        }
    }
    session_welcome(s);
}

/* Authenticates s with a verified token (the first message was auth). */
static int hook_ask(session *s, const char *what, json_t *body, struct rpc_pending *p,
                    rpc_done_fn fn);
static void hook_connect_done(void *ud, int result, const bus_msg *reply);
static struct rpc_pending *pending_new(session *s, const char *id, int kind);

static void session_admit(session *s, json_t *claims);

static void session_start(session *s, token_claims *cl)
{
    assert(!s->user && s->nsubs == 0); /* a session authenticates once */
    s->user = strdup(cl->sub);
    if (!s->user || session_take_claims(s, cl) != 0) {
        wsc_conn_close(s->c, WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    session_admit(s, cl->payload);
}

/* An authenticated session: hooks.connect decides first when asked to (and may grant more;
 * nothing acts before its answer), then it begins. */
static void session_admit(session *s, json_t *claims)
{
    if (!s->ws->ctx->cfg.hook_connect) {
        session_begin(s);
        return;
    }
    struct rpc_pending *p = pending_new(s, "", 4 /* P_HOOK_CONNECT */);
    json_t *body = p ? json_pack("{s:s, s:O?}", "user", s->user, "claims", claims) : NULL;
    if (!p || !body) {
        json_decref(body);
        free(p);
        wsc_conn_close(s->c, WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    s->hook_wait = true;
    if (hook_ask(s, "connect", body, p, hook_connect_done) != 0) {
        free(p);
        s->hook_wait = false;
        metric_inc(session_m.hook_failed);
        if (s->ws->ctx->cfg.hook_connect_fail_open)
            session_begin(s);
        else
            wsc_conn_close(s->c, WS_CLOSE_TRY_AGAIN, "the back end's check is unavailable");
    }
}

int session_verify(session *s, const char *token, token_claims *cl)
{
    int rc = keys_verify(s->ws->ctx->keys, &s->ws->ctx->policy, token, wall_now(), cl);
    if (rc != 0) {
        count_auth_failure(sc_strerror(rc));
        log_info("token refused", "conn=%llu reason=\"%s\"", (unsigned long long)wsc_conn_id(s->c),
                 sc_strerror(rc));
    }
    return rc;
}

/* ---- client messages ----------------------------------------------------------------------- */

static void on_unsubscribe(session *s, msg_in *m)
{
    char out[REPLY_MAX], key[300];
    snprintf(key, sizeof key, "e:%s", m->topic);
    int i = strcmp(m->topic, "user") == 0 ? -1 : sub_index(s, key);
    if (i > 0) sub_remove(s, i);
    session_reply(s, out, msg_unsubscribed_build(out, sizeof out, m->topic));
}

/* ---- rpc: a client's call of a back-end method ---------------------------------------- */

/* A request in flight for a session (the session's list, cancelled with it): an rpc, a
 * stored publish waiting for its ack, or a hook's question. */
enum pending_kind { P_RPC, P_PUBLISH, P_HOOK_SUB, P_HOOK_PUB, P_HOOK_CONNECT };
typedef struct rpc_pending {
    struct rpc_pending *next;
    session *s;
    rpc_call *call;
    uint8_t kind;  /* enum pending_kind */
    int64_t since; /* P_HOOK_SUB: the subscribe's since */
    bool latest;   /* P_HOOK_SUB: its mode "latest" */
    char *topic;   /* P_HOOK_SUB, P_HOOK_PUB */
    char *data;    /* P_HOOK_PUB: the client's data */
    size_t data_len;
    char id[]; /* the client's id as JSON text, echoed in the answer */
} rpc_pending;

static void pending_free(rpc_pending *p)
{
    if (!p) return;
    free(p->topic);
    free(p->data);
    free(p);
}

static void rpc_unlink(session *s, rpc_pending *p)
{
    for (rpc_pending **pp = &s->rpcs; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            if (p->kind == P_PUBLISH)
                s->npub--;
            else if (p->kind == P_RPC)
                s->nrpc--;
            return;
        }
    }
}

/* A new entry of s's list for a request with the client's id (NULL: out of memory). */
static rpc_pending *pending_new(session *s, const char *id, int kind)
{
    size_t il = strlen(id);
    rpc_pending *p = calloc(1, sizeof *p + il + 1);
    if (!p) return NULL;
    memcpy(p->id, id, il + 1);
    p->s = s;
    p->kind = (uint8_t)kind;
    return p;
}

static void pending_add(session *s, rpc_pending *p)
{
    p->next = s->rpcs;
    s->rpcs = p;
    if (p->kind == P_PUBLISH)
        s->npub++;
    else if (p->kind == P_RPC)
        s->nrpc++;
}

/* The store's ack of a publish with an id (JetStream's PubAck), on the worker: the client's
 * ack says whether the store had the id already (a retry: kept once). */
static void publish_done(void *ud, int result, const bus_msg *reply)
{
    rpc_pending *p = ud;
    session *s = p->s;
    rpc_unlink(s, p);
    char out[REPLY_MAX];
    json_t *j = result == 0 && reply ? json_loadb(bus_msg_data(reply), bus_msg_len(reply), 0, NULL)
                                     : NULL;
    if (j && json_is_integer(json_object_get(j, "seq")) && !json_object_get(j, "error")) {
        metric_inc(session_m.publishes);
        int dup = json_is_true(json_object_get(j, "duplicate"));
        if (dup) metric_inc(session_m.publish_dups);
        session_reply(s, out, msg_ack_stored_build(out, sizeof out, p->id, dup));
    } else {
        const char *why = result == -ETIMEDOUT ? "the store did not answer in time, try again"
                                               : "the store is unavailable, try again";
        log_debug("stored publish failed", "conn=%llu result=\"%s\"",
                  (unsigned long long)wsc_conn_id(s->c), sc_strerror(result));
        session_reply(s, out, msg_error_build(out, sizeof out, p->id, "unavailable", why));
    }
    json_decref(j);
    pending_free(p);
}

/* The reply, on the worker: rpc_result with the service's JSON, or an error with a code. */
static void rpc_done(void *ud, int result, const bus_msg *reply)
{
    rpc_pending *p = ud;
    session *s = p->s;
    rpc_unlink(s, p);
    const char *code = NULL, *message = NULL;
    char msgbuf[256];
    if (result == -ETIMEDOUT) {
        metric_inc(session_m.rpc_timeout);
        code = "timeout", message = "the method did not answer in time";
    } else if (result == SC_ENORESPONDERS) {
        metric_inc(session_m.rpc_no_responders);
        code = "no_responders", message = "no service answers this method";
    } else if (result != 0 || !reply) {
        metric_inc(session_m.rpc_error);
        code = "unavailable", message = "the bus is unavailable, try again";
    } else if (bus_msg_header(reply, HDR_RPC_ERROR)) {
        /* the service refused: its code (a word), its message (a JSON string body) */
        metric_inc(session_m.rpc_refused);
        const char *c = bus_msg_header(reply, HDR_RPC_ERROR);
        bool word = c[0] != '\0' && strlen(c) <= 32;
        for (const char *q = c; word && *q; q++)
            word = (*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '_';
        code = word ? c : "refused";
        message = "the method refused the call";
        json_t *j = json_loadb(bus_msg_data(reply), bus_msg_len(reply), JSON_DECODE_ANY, NULL);
        if (json_is_string(j) && json_string_length(j) < sizeof msgbuf) {
            memcpy(msgbuf, json_string_value(j), json_string_length(j) + 1);
            message = msgbuf;
        }
        json_decref(j);
    } else if (bus_msg_len(reply) > s->ws->ctx->cfg.max_rpc_reply ||
               (bus_msg_len(reply) > 0 &&
                !msg_json_valid(bus_msg_data(reply), bus_msg_len(reply)))) {
        metric_inc(session_m.rpc_error);
        code = "bad_reply", message = "the method's reply is not JSON or too large";
    }
    if (code) {
        char out[REPLY_MAX];
        session_reply(s, out, msg_error_build(out, sizeof out, p->id, code, message));
    } else {
        metric_inc(session_m.rpc_ok);
        size_t cap = msg_rpc_result_size(strlen(p->id), bus_msg_len(reply));
        char *out = malloc(cap);
        if (out) {
            int n = msg_rpc_result_build(out, cap, p->id, bus_msg_data(reply), bus_msg_len(reply));
            wsc_frame *f = n > 0 ? wsc_frame_new(WS_OP_TEXT, out, (size_t)n) : NULL;
            if (f) wsc_conn_send(s->c, f);
            wsc_frame_unref(f);
            free(out);
        }
    }
    pending_free(p);
}

/* The headers a request or publish for s carries to the back end: who (user, connection,
 * edge) and the connect hook's info when it gave some. Returns how many of h are set. */
static int caller_hdrs(const session *s, char conn[32], bus_hdr h[4])
{
    snprintf(conn, 32, "%llu", (unsigned long long)wsc_conn_id(s->c));
    h[0] = (bus_hdr){HDR_USER, s->user};
    h[1] = (bus_hdr){HDR_CONN, conn};
    h[2] = (bus_hdr){HDR_EDGE, s->ws->ctx->cfg.edge_id};
    if (!s->info) return 3;
    h[3] = (bus_hdr){HDR_INFO, s->info};
    return 4;
}

static void on_rpc(session *s, msg_in *m)
{
    const session_cfg *cfg = &s->ws->ctx->cfg;
    if (!ns_find(s->ws->ctx->ns, m->topic)->rpc_anyone && !perms_allow_rpc(s->perms, m->topic) &&
        !perms_allow_rpc(s->granted, m->topic)) {
        metric_inc(session_m.rpc_refused);
        reply_error(s, m->id, "forbidden", "calling this method is not allowed");
        return;
    }
    if (s->nrpc >= cfg->rpc_inflight) {
        metric_inc(session_m.rpc_busy);
        reply_error(s, m->id, "busy", "too many calls in flight on this connection");
        return;
    }
    rpc_pending *p = pending_new(s, m->id, P_RPC);
    if (!p) {
        reply_error(s, m->id, "internal", "out of memory");
        return;
    }
    char conn[32];
    bus_hdr h[4];
    int nh = caller_hdrs(s, conn, h);
    int err = 0;
    char subject[200];
    snprintf(subject, sizeof subject, "%s%s", SUBJ_RPC_PREFIX, m->topic);
    p->call = rpc_start(s->ws->rpcq, subject, m->data, m->data_len, h, nh, 0, rpc_done, p, &err);
    if (!p->call) {
        free(p);
        metric_inc(session_m.rpc_error);
        reply_error(s, m->id, err == -EAGAIN ? "busy" : "unavailable",
                    "the bus is unavailable, try again");
        return;
    }
    pending_add(s, p);
}

/* Publishes data to client.<topic> (a hook may have rewritten it): through the client stream
 * when it has an id (acked once stored), else at once. */
static void publish_now(session *s, const char *topic, const char *data, size_t len, const char *id)
{
    char out[REPLY_MAX], subject[160], conn[32];
    const session_cfg *cfg = &s->ws->ctx->cfg;
    snprintf(subject, sizeof subject, "%s%s", SUBJ_CLIENT_PREFIX, topic);
    bus_hdr h[5];
    int nh = caller_hdrs(s, conn, h);
    if (id[0] && cfg->stored_publish) {
        /* through the client stream with the id as its message id: a retry after a lost
         * ack is stored once, and the ack says so */
        if (s->npub >= cfg->publish_inflight) {
            reply_error(s, id, "busy", "too many publishes waiting for their ack");
            return;
        }
        char msgid[700];
        snprintf(msgid, sizeof msgid, "%s:%s", s->user, id); /* ids are per user */
        h[nh] = (bus_hdr){"Nats-Msg-Id", msgid};
        rpc_pending *p = pending_new(s, id, P_PUBLISH);
        int err = 0;
        if (p && !(p->call = rpc_start(s->ws->rpcq, subject, data, len, h, nh + 1, 0, publish_done,
                                       p, &err))) {
            free(p);
            p = NULL;
        }
        if (!p) {
            reply_error(s, id, err == -EAGAIN ? "busy" : "unavailable",
                        "the bus is unavailable, try again");
            return;
        }
        pending_add(s, p);
        return;
    }
    if (bus_publish(s->ws->ctx->b, subject, NULL, data, len, h, nh) != 0) {
        reply_error(s, id, "unavailable", "the bus is unavailable, try again");
        return;
    }
    metric_inc(session_m.publishes);
    if (id[0]) session_reply(s, out, msg_ack_build(out, sizeof out, id));
}

/* ---- hooks: the back end decides (hooks.connect, .subscribe, .publish; .disconnect told) -- */

typedef struct hook_ok {
    struct hook_ok *next;
    uint64_t until; /* loop ms */
    char key[];     /* "<user>\t<topic>" */
} hook_ok;

static unsigned long hook_hash(const char *k)
{
    unsigned long h = 5381;
    while (*k) h = h * 33 + (unsigned char)*k++;
    return h % HOOK_CACHE_BUCKETS;
}

static void hook_cache_clear(wstate *ws)
{
    for (int b = 0; b < HOOK_CACHE_BUCKETS; b++) {
        for (hook_ok *e = ws->hook_cache[b], *next; e; e = next) {
            next = e->next;
            free(e);
        }
        ws->hook_cache[b] = NULL;
    }
    ws->hook_cached = 0;
}

/* Whether a hook allowed user on topic not long ago (an expired entry goes). */
static bool hook_cache_ok(wstate *ws, const char *user, const char *topic, uint64_t now)
{
    char key[400];
    snprintf(key, sizeof key, "%s\t%s", user, topic);
    for (hook_ok **pp = &ws->hook_cache[hook_hash(key)]; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->key, key) != 0) continue;
        if ((*pp)->until > now) return true;
        hook_ok *gone = *pp;
        *pp = gone->next;
        free(gone);
        ws->hook_cached--;
        return false;
    }
    return false;
}

static void hook_cache_put(wstate *ws, const char *user, const char *topic, uint64_t until)
{
    char key[400];
    int kl = snprintf(key, sizeof key, "%s\t%s", user, topic);
    if (kl <= 0 || (size_t)kl >= sizeof key) return;
    if (ws->hook_cached >= HOOK_CACHE_MAX) hook_cache_clear(ws); /* bounded: start over */
    hook_ok *e = malloc(sizeof *e + (size_t)kl + 1);
    if (!e) return;
    memcpy(e->key, key, (size_t)kl + 1);
    e->until = until;
    unsigned long h = hook_hash(key);
    e->next = ws->hook_cache[h];
    ws->hook_cache[h] = e;
    ws->hook_cached++;
}

/* Asks hooks.<what> with body (stolen); the answer comes to fn with p (added to s's list).
 * -1 when it could not be asked (over EDGE_HOOK_INFLIGHT, the bus): the hook has failed. */
static int hook_ask(session *s, const char *what, json_t *body, rpc_pending *p, rpc_done_fn fn)
{
    session_ctx *ctx = s->ws->ctx;
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL, subject[200], conn[32];
    json_decref(body);
    if (!text || atomic_fetch_add(&ctx->hooks_inflight, 1) >= ctx->cfg.hook_inflight) {
        if (text) atomic_fetch_sub(&ctx->hooks_inflight, 1);
        free(text);
        return -1;
    }
    snprintf(subject, sizeof subject, "%s%s", SUBJ_HOOKS_PREFIX, what);
    bus_hdr h[4];
    int nh = caller_hdrs(s, conn, h);
    int err = 0;
    p->call = rpc_start(s->ws->rpcq, subject, text, strlen(text), h, nh, ctx->cfg.hook_timeout_ms,
                        fn, p, &err);
    free(text);
    if (!p->call) {
        atomic_fetch_sub(&ctx->hooks_inflight, 1);
        return -1;
    }
    pending_add(s, p);
    return 0;
}

/* A hook's answer: 1 allowed, 0 refused (*why: its reason, or NULL), -1 failed (no answer, no
 * JSON object with a boolean "allow"). *out: the answer, for the caller's other members. */
static int hook_verdict(session *s, int result, const bus_msg *reply, json_t **out,
                        const char **why)
{
    atomic_fetch_sub(&s->ws->ctx->hooks_inflight, 1);
    *out = NULL;
    *why = NULL;
    json_t *j = result == 0 && reply ? json_loadb(bus_msg_data(reply), bus_msg_len(reply), 0, NULL)
                                     : NULL;
    json_t *allow = json_object_get(j, "allow");
    if (!json_is_boolean(allow)) {
        json_decref(j);
        metric_inc(session_m.hook_failed);
        log_info("hook failed", "conn=%llu result=\"%s\"", (unsigned long long)wsc_conn_id(s->c),
                 result ? sc_strerror(result) : "no {\"allow\": bool} in the answer");
        return -1;
    }
    *out = j;
    *why = json_string_value(json_object_get(j, "reason"));
    metric_inc(json_is_true(allow) ? session_m.hook_allowed : session_m.hook_denied);
    return json_is_true(allow) ? 1 : 0;
}

/* The reason a hook gave, or a default, as an error's message (bounded). */
static void refuse(session *s, const char *id, const char *why, const char *dflt)
{
    char msg[200];
    snprintf(msg, sizeof msg, "%.190s", why && why[0] ? why : dflt);
    reply_error(s, id, "forbidden", msg);
}

static void subscribe_now(session *s, const char *topic, int64_t since, bool latest,
                          const char *id);

/* hooks.subscribe's answer: {"allow":true,"ttl_s":N} or {"allow":false,"reason":...}. */
static void hook_sub_done(void *ud, int result, const bus_msg *reply)
{
    rpc_pending *p = ud;
    session *s = p->s;
    rpc_unlink(s, p);
    const ns_policy *ns = ns_find(s->ws->ctx->ns, p->topic);
    json_t *j;
    const char *why;
    int v = hook_verdict(s, result, reply, &j, &why);
    if (v < 0) v = ns->fail_open;
    if (v == 1) {
        json_t *ttl = json_object_get(j, "ttl_s");
        long long t = json_is_integer(ttl) ? json_integer_value(ttl) : ns->hook_ttl_s;
        if (t > 86400) t = 86400;
        if (ns->hook_ttl_s == 0) t = 0; /* the namespace remembers nothing, whatever it says */
        if (t > 0)
            hook_cache_put(s->ws, s->user, p->topic,
                           loop_now(wsc_worker_loop(wsc_conn_worker(s->c))) + (uint64_t)t * 1000);
        subscribe_now(s, p->topic, p->since, p->latest, p->id);
    } else {
        refuse(s, p->id, why, "the back end refused this subscription");
    }
    json_decref(j);
    pending_free(p);
}

/* hooks.publish's answer: {"allow":true,"data":<rewritten>?} or {"allow":false,...}. */
static void hook_pub_done(void *ud, int result, const bus_msg *reply)
{
    rpc_pending *p = ud;
    session *s = p->s;
    rpc_unlink(s, p);
    const ns_policy *ns = ns_find(s->ws->ctx->ns, p->topic);
    json_t *j;
    const char *why;
    int v = hook_verdict(s, result, reply, &j, &why);
    if (v < 0) v = ns->fail_open;
    if (v == 1) {
        json_t *data = json_object_get(j, "data");
        char *rewritten = data ? json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        if (rewritten && strlen(rewritten) <= s->ws->ctx->cfg.max_publish)
            publish_now(s, p->topic, rewritten, strlen(rewritten), p->id);
        else if (data)
            reply_error(s, p->id, "bad_reply", "the back end's data is too large");
        else
            publish_now(s, p->topic, p->data, p->data_len, p->id);
        free(rewritten);
    } else {
        refuse(s, p->id, why, "the back end refused this publish");
    }
    json_decref(j);
    pending_free(p);
}

/* hooks.connect's answer: {"allow":true,"grant":{"sub_topics":[...],"pub_topics":[...],
 * "rpc_methods":[...]}} (all optional) or {"allow":false,"reason":...}. */
static void hook_connect_done(void *ud, int result, const bus_msg *reply)
{
    rpc_pending *p = ud;
    session *s = p->s;
    rpc_unlink(s, p);
    s->hook_wait = false;
    json_t *j;
    const char *why;
    int v = hook_verdict(s, result, reply, &j, &why);
    if (v < 0) {
        if (s->ws->ctx->cfg.hook_connect_fail_open)
            session_begin(s);
        else
            wsc_conn_close(s->c, WS_CLOSE_TRY_AGAIN, "the back end's check is unavailable");
    } else if (v == 0) {
        char msg[120];
        snprintf(msg, sizeof msg, "%.110s", why && why[0] ? why : "connection refused");
        wsc_conn_close(s->c, MSG_CLOSE_FORBIDDEN, msg);
    } else {
        json_t *grant = json_object_get(j, "grant"), *info = json_object_get(j, "info");
        if (json_is_object(grant)) s->granted = perms_get(&s->ws->perms, grant, NULL);
        char *text = json_is_object(info) ? json_dumps(info, JSON_COMPACT) : NULL;
        if (text && strlen(text) <= INFO_MAX) {
            s->info = text;
        } else {
            if (text) /* too big to ride on every request: the back end hears it here */
                log_warn("hooks.connect info dropped: over its bound", "user=%s bytes=%zu max=%d",
                         s->user, strlen(text), INFO_MAX);
            free(text);
        }
        session_begin(s);
    }
    json_decref(j);
    pending_free(p);
}

static void on_publish(session *s, msg_in *m)
{
    const ns_policy *ns = ns_find(s->ws->ctx->ns, m->topic);
    if (ns->publish == NS_NOBODY ||
        (ns->publish == NS_CLAIM && !perms_allow(s->perms, true, m->topic) &&
         !perms_allow(s->granted, true, m->topic))) {
        reply_error(s, m->id, "forbidden", "publishing to this topic is not allowed");
        return;
    }
    /* Byte budgets, the connection's and the user's on this edge: the message rate alone
     * let a few sockets of one user write tens of MB/s into the history stream. */
    const session_cfg *cfg = &s->ws->ctx->cfg;
    size_t cost = m->data_len + strlen(m->topic);
    uint64_t now = loop_now(wsc_worker_loop(wsc_conn_worker(s->c)));
    double conn_left = s->pub_tokens;
    uint64_t conn_at = s->pub_at;
    if (!quota_bucket_take(&conn_left, &conn_at, cfg->publish_rate, cfg->publish_burst, cost,
                           now)) {
        metric_inc(session_m.quota_refused);
        reply_error(s, m->id, "publish_quota",
                    "over this connection's publish budget (EDGE_PUBLISH_BYTES_PER_S)");
        return;
    }
    if (s->ws->ctx->user_quota && !quota_take(s->ws->ctx->user_quota, s->user, cost, now)) {
        metric_inc(session_m.quota_refused);
        reply_error(s, m->id, "publish_quota",
                    "over this user's publish budget (EDGE_USER_PUBLISH_BYTES_PER_S)");
        return;
    }
    s->pub_tokens = conn_left;
    s->pub_at = conn_at;
    if (ns->publish == NS_HOOK) { /* the back end may refuse or rewrite it first */
        rpc_pending *p = pending_new(s, m->id, P_HOOK_PUB);
        json_t *body = p ? json_pack("{s:s, s:s}", "user", s->user, "topic", m->topic) : NULL;
        json_t *data = body ? json_loadb(m->data, m->data_len, JSON_DECODE_ANY, NULL) : NULL;
        if (data) json_object_set_new(body, "data", data);
        if (p && data) {
            p->topic = strdup(m->topic);
            p->data = malloc(m->data_len + 1);
            if (p->data) memcpy(p->data, m->data, m->data_len + 1);
            p->data_len = m->data_len;
        }
        bool ready = p && body && data && p->topic && p->data;
        if (!ready) json_decref(body);
        char what[160]; /* hooks.publish.<topic> */
        snprintf(what, sizeof what, "publish.%s", m->topic);
        if (!ready || hook_ask(s, what, body, p, hook_pub_done) != 0) {
            if (ready && ns->fail_open) /* could not ask: the policy */
                publish_now(s, m->topic, m->data, m->data_len, m->id);
            else
                reply_error(s, m->id, "unavailable", "the back end's check is unavailable");
            metric_inc(session_m.hook_failed);
            pending_free(p);
        }
        return;
    }
    publish_now(s, m->topic, m->data, m->data_len, m->id);
}

/* Joins topic (allowed by the token or a hook), then the replay since asked for (since
 * MSG_SINCE_LAST: the topic's last event; -1: what the namespace says). */
static void subscribe_now(session *s, const char *topic, int64_t since, bool latest, const char *id)
{
    char out[REPLY_MAX], key[300];
    snprintf(key, sizeof key, "e:%s", topic);
    int i = sub_index(s, key);
    if (i < 0) {
        if (s->nsubs - 1 >= s->ws->ctx->cfg.max_subscriptions) {
            reply_error(s, id, "too_many_subscriptions", "subscription limit reached");
            return;
        }
        if (sub_add(s, FAB_EVENT, topic) != 0) {
            reply_error(s, id, "unavailable", "subscription failed, try again");
            return;
        }
        i = s->nsubs - 1;
    }
    s->subs[i]->latest = latest;
    session_reply(s, out, msg_subscribed_build(out, sizeof out, topic));
    if (since >= 0)
        catchup_subscribe_since(s->subs[i], (uint64_t)since);
    else if (since == MSG_SINCE_LAST || ns_find(s->ws->ctx->ns, topic)->latest)
        catchup_subscribe_latest(s->subs[i]);
}

static void on_subscribe(session *s, msg_in *m)
{
    char out[REPLY_MAX];
    if (strcmp(m->topic, "user") == 0) { /* the inbox: always there */
        if (m->since == MSG_SINCE_LAST || m->latest) {
            reply_error(s, m->id, "bad_message",
                        "the inbox takes no since \"last\" or mode \"latest\": every message "
                        "counts");
            return;
        }
        session_reply(s, out, msg_subscribed_build(out, sizeof out, m->topic));
        if (m->since >= 0)
            catchup_subscribe_since(s->subs[0], (uint64_t)m->since);
        else
            inbox_release(s);
        return;
    }
    const ns_policy *ns = ns_find(s->ws->ctx->ns, m->topic);
    if ((m->since >= 0 || m->since == MSG_SINCE_LAST) && !ns->history) {
        reply_error(s, m->id, "history_off", "this topic's namespace keeps no replay");
        return;
    }
    if (ns->subscribe == NS_HOOK) { /* the back end decides (a recent yes is remembered) */
        uint64_t now = loop_now(wsc_worker_loop(wsc_conn_worker(s->c)));
        if (hook_cache_ok(s->ws, s->user, m->topic, now)) {
            metric_inc(session_m.hook_cached);
            subscribe_now(s, m->topic, m->since, m->latest, m->id);
            return;
        }
        rpc_pending *p = pending_new(s, m->id, P_HOOK_SUB);
        json_t *body = p ? json_pack("{s:s, s:s}", "user", s->user, "topic", m->topic) : NULL;
        if (p) {
            p->since = m->since;
            p->latest = m->latest;
            p->topic = strdup(m->topic);
        }
        char what[160]; /* hooks.subscribe.<topic>: a service answers for its prefix */
        snprintf(what, sizeof what, "subscribe.%s", m->topic);
        if (!p || !p->topic || hook_ask(s, what, body, p, hook_sub_done) != 0) {
            if (!p || !p->topic) json_decref(body);
            metric_inc(session_m.hook_failed);
            if (p && p->topic && ns->fail_open)
                subscribe_now(s, m->topic, m->since, m->latest, m->id);
            else
                reply_error(s, m->id, "unavailable", "the back end's check is unavailable");
            pending_free(p);
        }
        return;
    }
    if (!perms_allow(s->perms, false, m->topic) && !perms_allow(s->granted, false, m->topic)) {
        reply_error(s, m->id, "forbidden", "topic not allowed by the token");
        return;
    }
    subscribe_now(s, m->topic, m->since, m->latest, m->id);
}

void session_subscribe(session *s, const char *topic, int64_t since)
{
    msg_in m = {.type = MSG_SUBSCRIBE, .since = since};
    snprintf(m.topic, sizeof m.topic, "%s", topic);
    on_subscribe(s, &m);
}

static void on_refresh(session *s, msg_in *m)
{
    char out[REPLY_MAX];
    token_claims cl;
    if (session_verify(s, m->token, &cl) != 0) {
        reply_error(s, m->id, "invalid_token", "refresh token refused");
        return;
    }
    if (strcmp(cl.sub, s->user) != 0) {
        token_claims_clear(&cl);
        wsc_conn_close(s->c, MSG_CLOSE_FORBIDDEN, "token of another user");
        return;
    }
    int took = session_take_claims(s, &cl);
    token_claims_clear(&cl);
    if (took != 0) {
        reply_error(s, m->id, "unavailable", "refresh failed, try again");
        return;
    }
    /* subscriptions the new token no longer allows end here */
    for (int i = s->nsubs - 1; i >= 1; i--) {
        const char *topic = s->subs[i]->t->key + 2;
        if (ns_find(s->ws->ctx->ns, topic)->subscribe == NS_CLAIM &&
            !perms_allow(s->perms, false, topic) && !perms_allow(s->granted, false, topic)) {
            char note[REPLY_MAX];
            session_reply(s, note, msg_unsubscribed_build(note, sizeof note, topic));
            sub_remove(s, i);
        }
    }
    session_reply(s, out, msg_refreshed_build(out, sizeof out, s->exp));
    session_arm(s);
}

static bool rate_ok(session *s)
{
    const session_cfg *cfg = &s->ws->ctx->cfg;
    return quota_bucket_take(&s->tokens, &s->refilled, (double)cfg->rate_limit,
                             (double)cfg->rate_burst, 1,
                             loop_now(wsc_worker_loop(wsc_conn_worker(s->c))));
}

static void on_message(wsc_conn *c, uint8_t opcode, uint8_t *data, size_t len)
{
    session *s = wsc_conn_data(c);
    char out[REPLY_MAX];
    if (!rate_ok(s)) {
        metric_inc(session_m.rate_closes);
        log_info("rate limit exceeded", "conn=%llu user=%s", (unsigned long long)wsc_conn_id(c),
                 s->user ? s->user : "-");
        wsc_conn_close(c, MSG_CLOSE_RATE, "rate limited");
        return;
    }
    if (opcode != WS_OP_TEXT) {
        reply_error(s, NULL, "bad_message", "messages are JSON text frames");
        return;
    }
    msg_limits lim = MSG_LIMITS_DEFAULT;
    lim.max_text = s->ws->ctx->cfg.max_message;
    lim.max_data = s->ws->ctx->cfg.max_publish;
    msg_in m = {0};
    int rc = msg_parse((const char *)data, len, &lim, &m);
    if (rc != SC_OK) {
        reply_error(s, m.id, msg_code(rc), m.error);
        msg_in_clear(&m);
        return;
    }
    if (!s->user) {
        if (m.type != MSG_AUTH) {
            msg_in_clear(&m);
            wsc_conn_close(c, MSG_CLOSE_TOKEN, "authenticate first");
            return;
        }
        token_claims cl;
        if (session_verify(s, m.token, &cl) != 0) {
            msg_in_clear(&m);
            wsc_conn_close(c, MSG_CLOSE_TOKEN, "invalid token");
            return;
        }
        session_start(s, &cl);
        token_claims_clear(&cl);
        msg_in_clear(&m);
        return;
    }
    if (s->awaiting || s->hook_wait) { /* a verdict is pending: nothing acts before it */
        reply_error(s, m.id, "not_ready", "wait for welcome");
        msg_in_clear(&m);
        return;
    }
    if (m.type != MSG_SUBSCRIBE) inbox_release(s);
    switch (m.type) {
    case MSG_SUBSCRIBE: on_subscribe(s, &m); break;
    case MSG_UNSUBSCRIBE: on_unsubscribe(s, &m); break;
    case MSG_PUBLISH: on_publish(s, &m); break;
    case MSG_REFRESH: on_refresh(s, &m); break;
    case MSG_PING: session_reply(s, out, msg_pong_build(out, sizeof out, m.id)); break;
    case MSG_RPC: on_rpc(s, &m); break;
    case MSG_AUTH: reply_error(s, m.id, "bad_message", "already authenticated; use refresh"); break;
    default: reply_error(s, m.id, "unknown_type", "unknown message type"); break;
    }
    msg_in_clear(&m);
}

/* ---- connection life ---------------------------------------------------------------------- */

static void unlink_awaiting(session *s)
{
    for (session **pp = &s->ws->awaiting; *pp; pp = &(*pp)->next_awaiting) {
        if (*pp == s) {
            *pp = s->next_awaiting;
            break;
        }
    }
    s->awaiting = false;
}

static void on_closed_free(session *s)
{
    while (s->rpcs) { /* the replies still to come find no session */
        rpc_pending *p = s->rpcs;
        s->rpcs = p->next;
        rpc_cancel(p->call);
        if (p->kind >= P_HOOK_SUB) atomic_fetch_sub(&s->ws->ctx->hooks_inflight, 1);
        pending_free(p);
    }
    perms_put(&s->ws->perms, s->granted);
    free(s->info);
    json_decref(s->claims_hold);
    if (s->awaiting) unlink_awaiting(s);
    session_uncork(s, false);
    conflated_unlink(s);
    if (s->registered) presence_remove(s->ws->ctx->pres, s->user, wsc_conn_id(s->c));
    assert(!s->corked && !s->awaiting);
    while (s->nsubs > 0) sub_remove(s, s->nsubs - 1);
    free(s->subs);
    perms_put(&s->ws->perms, s->perms);
    sse_free(s);
    free(s->user);
    free(s);
}

session *session_new(wsc_conn *c)
{
    wstate *ws = wsc_worker_data(wsc_conn_worker(c));
    session *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->c = c;
    s->ws = ws;
    s->tokens = (double)ws->ctx->cfg.rate_burst;
    s->pub_tokens = ws->ctx->cfg.publish_burst;
    s->refilled = s->pub_at = loop_now(wsc_worker_loop(wsc_conn_worker(c)));
    wsc_conn_set_data(c, s);
    return s;
}

static int on_upgrade(wsc_conn *c, const ws_http_request *req, const ws_http_upgrade *up,
                      const char **body)
{
    (void)req;
    (void)body;
    wstate *ws = wsc_worker_data(wsc_conn_worker(c));
    session *s = session_new(c);
    if (!s) return 503;
    /* A token in the handshake (header, or access_token per RFC 6750 §2.3) is checked now;
     * a bad one still gets the upgrade, then close 4001, which a browser can see. */
    char token[8193];
    int tl = -1;
    if (up->bearer.n > 0 && up->bearer.n < sizeof token) {
        memcpy(token, up->bearer.p, up->bearer.n);
        token[up->bearer.n] = '\0';
        tl = (int)up->bearer.n;
    } else if (up->query.n > 0) {
        tl = ws_http_query_param(up->query.p, up->query.n, "access_token", token, sizeof token);
        if (tl == -2) {
            s->bad_token = true;
            s->bad_reason = "malformed access_token";
        } else if (tl > 0 && !ws->ctx->cfg.query_token) {
            /* turned off (EDGE_QUERY_TOKEN): proxies log query strings; said, not ignored */
            explicit_bzero(token, (size_t)tl);
            tl = -1;
            s->bad_token = true;
            s->bad_reason = "access_token in the URL is turned off on this edge";
        }
    }
    if (tl > 0) {
        token_claims cl;
        if (session_verify(s, token, &cl) == 0) { /* started at open: no frames before */
            int took = session_take_claims(s, &cl);
            s->user = strdup(cl.sub);
            if (s->ws->ctx->cfg.hook_connect) s->claims_hold = json_incref(cl.payload);
            token_claims_clear(&cl);
            if (took != 0 || !s->user) {
                on_closed_free(s);
                wsc_conn_set_data(c, NULL);
                return 503;
            }
        } else {
            s->bad_token = true;
            s->bad_reason = "invalid token";
        }
    }
    return 101;
}

static void on_open(wsc_conn *c)
{
    session *s = wsc_conn_data(c);
    loop *l = wsc_worker_loop(wsc_conn_worker(c));
    if (s->bad_token) {
        wsc_conn_close(c, MSG_CLOSE_TOKEN, s->bad_reason);
        return;
    }
    if (s->user) {
        json_t *claims = s->claims_hold; /* hooks.connect shows them */
        s->claims_hold = NULL;
        session_admit(s, claims);
        json_decref(claims);
        return;
    }
    s->auth_deadline = loop_now(l) + (uint64_t)s->ws->ctx->cfg.auth_timeout_ms;
    session_arm(s);
}

static void on_timer(wsc_conn *c)
{
    session *s = wsc_conn_data(c);
    char out[REPLY_MAX];
    if (!s->user) {
        count_auth_failure("timeout");
        wsc_conn_close(c, MSG_CLOSE_TOKEN, "no token before the deadline");
        return;
    }
    if (s->inbox_hold_until && loop_now(wsc_worker_loop(wsc_conn_worker(c))) >= s->inbox_hold_until)
        inbox_release(s);
    long now = wall_now();
    if (now >= s->exp) {
        log_info("token expired", "conn=%llu user=%s", (unsigned long long)wsc_conn_id(c), s->user);
        wsc_conn_close(c, MSG_CLOSE_TOKEN, "token expired");
        return;
    }
    if (!s->warned && now >= s->exp - s->ws->ctx->cfg.token_warning_s) {
        s->warned = true;
        session_reply(s, out, msg_token_expiring_build(out, sizeof out, s->exp));
    }
    session_arm(s);
}

/* At most 10 slow-client lines a second per process: a stalled network can close thousands
 * of clients at once, and the metric counts them all anyway. */
static bool slow_log_allowed(unsigned long *suppressed)
{
    static _Atomic long window;
    static _Atomic unsigned long in_window, dropped;
    long now = wall_now();
    if (atomic_exchange(&window, now) != now) {
        atomic_store(&in_window, 0);
        *suppressed = atomic_exchange(&dropped, 0);
    } else {
        *suppressed = 0;
    }
    if (atomic_fetch_add(&in_window, 1) < 10) return true;
    atomic_fetch_add(&dropped, 1);
    return false;
}

static void on_closed(wsc_conn *c, uint16_t code)
{
    session *s = wsc_conn_data(c);
    if (!s) return;
    unsigned long suppressed = 0;
    if (code == MSG_CLOSE_TOO_SLOW && slow_log_allowed(&suppressed))
        log_warn("slow client closed", "conn=%llu user=%s code=4008 suppressed_before=%lu",
                 (unsigned long long)wsc_conn_id(c), s->user ? s->user : "-", suppressed);
    if (s->user && s->ws->ctx->cfg.hook_disconnect) { /* told, not asked: no answer awaited */
        char body[400], conn[32];
        snprintf(conn, sizeof conn, "%llu", (unsigned long long)wsc_conn_id(c));
        int n = snprintf(body, sizeof body,
                         "{\"user\":\"%s\",\"conn\":\"%s\",\"edge\":\"%s\",\"code\":%u}", s->user,
                         conn, s->ws->ctx->cfg.edge_id, code);
        bus_hdr h[4];
        int nh = caller_hdrs(s, conn, h);
        if (n > 0 && (size_t)n < sizeof body)
            (void)bus_publish(s->ws->ctx->b, SUBJ_HOOKS_PREFIX "disconnect", NULL, body, (size_t)n,
                              h, nh);
    }
    on_closed_free(s);
    wsc_conn_set_data(c, NULL);
}

/* ---- bus messages into the worker ------------------------------------------------------------ */

/* After a NATS reconnection: every subscription with a position looks for what it missed. */
static void resync(wstate *ws)
{
    for (int b = 0; b < MAP_BUCKETS; b++)
        for (tentry *t = ws->buckets[b]; t; t = t->next)
            for (uint32_t i = 0; i < t->n; i++)
                if (t->members[i]->pos.last && !t->members[i]->cu)
                    catchup_start(t->members[i], t->members[i]->pos.last, false, 0);
}

static void revoke(wstate *ws, const char *json)
{
    json_t *v = json_loads(json, 0, NULL);
    const char *sub = json_string_value(json_object_get(v, "sub"));
    const char *fam = json_string_value(json_object_get(v, "family"));
    char key[300];
    if (sub) {
        snprintf(key, sizeof key, "u:%s", sub);
        tentry *t = smap_find(ws, key);
        for (uint32_t i = 0; t && i < t->n; i++) {
            session *s = t->members[i]->s;
            if (!fam || !fam[0] || strcmp(fam, s->sid) == 0) {
                log_info("session revoked", "conn=%llu user=%s",
                         (unsigned long long)wsc_conn_id(s->c), s->user);
                wsc_conn_close(s->c, MSG_CLOSE_FORBIDDEN, "revoked");
            }
        }
    }
    json_decref(v);
}

static void drain_port(wstate *ws)
{
    fab_msg m;
    bool aged = false;
    for (int i = 0; i < 100000 && fab_port_recv(ws->port, &m); i++) {
        char key[300];
        switch (m.kind) {
        case FAB_EVENT:
        case FAB_USER:
            if (!aged) { /* the oldest of this drain: did the worker fall behind? */
                wsc_worker_event_age(ws->w, m.queued_us);
                aged = true;
            }
            snprintf(key, sizeof key, "%c:%s", (char)m.kind, m.name);
            catchup_deliver(ws, key, m.frame, m.seq, m.prev);
            wsc_frame_unref(m.frame);
            break;
        case FAB_REVOKED:
            revoke(ws, m.data);
            free(m.data);
            break;
        case FAB_RESYNC: resync(ws); break;
        case FAB_SETTLED: uncork_settled(ws); break;
        }
    }
}

static pthread_mutex_t workers_lock = PTHREAD_MUTEX_INITIALIZER; /* ctx->workers */

void session_presence_verdict(void *ud, int worker, uint64_t conn, bool allowed)
{
    session_ctx *ctx = ud;
    verdict *v = malloc(sizeof *v);
    if (!v) return; /* no memory: that connection gets no welcome; its client times out */
    v->conn = conn;
    v->allowed = allowed;
    pthread_mutex_lock(&workers_lock);
    wstate *ws = worker >= 0 && worker < 64 ? ctx->workers[worker] : NULL;
    if (ws) {
        pthread_mutex_lock(&ws->vlock);
        v->next = ws->verdicts;
        ws->verdicts = v;
        pthread_mutex_unlock(&ws->vlock);
        loop_wake(wsc_worker_loop(ws->w));
    } else {
        free(v);
    }
    pthread_mutex_unlock(&workers_lock);
}

static void take_verdicts(wstate *ws)
{
    pthread_mutex_lock(&ws->vlock);
    verdict *list = ws->verdicts;
    ws->verdicts = NULL;
    pthread_mutex_unlock(&ws->vlock);
    while (list) {
        verdict *v = list;
        list = v->next;
        session *s = ws->awaiting;
        while (s && wsc_conn_id(s->c) != v->conn) s = s->next_awaiting;
        if (s) {
            unlink_awaiting(s);
            if (v->allowed) {
                session_welcome(s);
            } else {
                log_info("connection over the per-user limit", "conn=%llu user=%s",
                         (unsigned long long)v->conn, s->user);
                wsc_conn_close(s->c, MSG_CLOSE_CONN_LIMIT, "too many connections for this user");
            }
        }
        free(v);
    }
}

/* ---- disconnects asked by the server API (api.c) ---------------------------------------- */

/* One request per worker, queued like the verdicts; the list is here, not in wstate, so
 * that the API's hook stays within this file. */
typedef struct disc_req {
    struct disc_req *next;
    char *user; /* NULL: by connection */
    uint64_t conn;
    uint16_t code;
    char reason[124]; /* a close frame's reason: at most 123 bytes */
    session_disconnect_fn done;
    void *ud;
} disc_req;

static pthread_mutex_t disc_lock = PTHREAD_MUTEX_INITIALIZER; /* disc_q */
static disc_req *disc_q[64];                                  /* per worker index */

int session_disconnect(session_ctx *ctx, const char *user, uint64_t conn, uint16_t code,
                       const char *reason, session_disconnect_fn done, void *ud)
{
    int posted = 0;
    pthread_mutex_lock(&workers_lock);
    for (int i = 0; i < 64; i++) {
        wstate *ws = ctx->workers[i];
        if (!ws) continue;
        disc_req *d = calloc(1, sizeof *d);
        if (!d || (user && !(d->user = strdup(user)))) {
            free(d);
            continue;
        }
        d->conn = conn;
        d->code = code;
        snprintf(d->reason, sizeof d->reason, "%s", reason ? reason : "");
        d->done = done;
        d->ud = ud;
        pthread_mutex_lock(&disc_lock);
        d->next = disc_q[i];
        disc_q[i] = d;
        pthread_mutex_unlock(&disc_lock);
        loop_wake(wsc_worker_loop(ws->w));
        posted++;
    }
    pthread_mutex_unlock(&workers_lock);
    return posted;
}

static disc_req *take_disc_list(int idx)
{
    if (idx < 0 || idx >= 64) return NULL;
    pthread_mutex_lock(&disc_lock);
    disc_req *list = disc_q[idx];
    disc_q[idx] = NULL;
    pthread_mutex_unlock(&disc_lock);
    return list;
}

static int disc_close(session *s, const disc_req *d)
{
    log_info("session disconnected by the server API", "conn=%llu user=%s code=%u",
             (unsigned long long)wsc_conn_id(s->c), s->user, (unsigned)d->code);
    wsc_conn_close(s->c, d->code, d->reason);
    return 1;
}

/* On the worker: closes what matches (every connection of the user, or the one connection
 * whose id is d->conn; only authenticated sessions, which sit in their inbox's entry). */
static void take_disconnects(wstate *ws)
{
    disc_req *list = take_disc_list(wsc_worker_index(ws->w));
    while (list) {
        disc_req *d = list;
        list = d->next;
        int closed = 0;
        char key[300];
        if (d->user) {
            snprintf(key, sizeof key, "u:%s", d->user);
            tentry *t = smap_find(ws, key);
            for (uint32_t i = 0; t && i < t->n; i++) closed += disc_close(t->members[i]->s, d);
        } else {
            for (int b = 0; b < MAP_BUCKETS && !closed; b++)
                for (tentry *t = ws->buckets[b]; t && !closed; t = t->next)
                    for (uint32_t i = 0; t->key[0] == 'u' && i < t->n; i++)
                        if (wsc_conn_id(t->members[i]->s->c) == d->conn) {
                            closed += disc_close(t->members[i]->s, d);
                            break;
                        }
        }
        d->done(d->ud, closed);
        free(d->user);
        free(d);
    }
}

/* The loop's wake-up: presence verdicts and replay replies from other threads. */
static void on_wake(void *ud)
{
    wstate *ws = ud;
    take_verdicts(ws);
    take_disconnects(ws);
    replay_q_poll(ws->rq);
    rpc_q_poll(ws->rpcq);
}

static void on_port_io(loop_io *io, uint32_t events)
{
    (void)events;
    wstate *ws = (wstate *)((char *)io - offsetof(wstate, port_io));
    fab_port_ack(ws->port);
    drain_port(ws);
}

static void before_sleep(wsc_worker *w)
{
    wstate *ws = wsc_worker_data(w);
    fab_port_settle(ws->port); /* new subscriptions of this iteration: the settler confirms */
    uncork_settled(ws);
    drain_port(ws); /* what came since the last wake-up, without waiting for it */
    if (ws->conflated) conflated_flush(ws);
    if (ws->delivered) {
        metric_add(session_m.deliveries, ws->delivered);
        ws->delivered = 0;
    }
}

static int on_worker_start(wsc_worker *w, void *ud)
{
    session_ctx *ctx = ud;
    wstate *ws = calloc(1, sizeof *ws);
    if (!ws) return -ENOMEM;
    ws->ctx = ctx;
    ws->w = w;
    int rc = fab_port_open(ctx->fab, &ws->port);
    if (rc != 0) {
        free(ws);
        return rc;
    }
    ws->port_io.fd = fab_port_fd(ws->port);
    ws->port_io.fn = on_port_io;
    if ((rc = loop_add(wsc_worker_loop(w), &ws->port_io, EPOLLIN)) != 0) {
        fab_port_close(ws->port);
        free(ws);
        return rc;
    }
    replay_cfg rc_cfg = {
        .stream = ctx->cfg.stream,
        .inbox_stream = ctx->cfg.inbox_stream,
        .inflight = ctx->cfg.replay_inflight,
        .max_events = ctx->cfg.replay_max_events,
        .timeout_ms = 2000,
    };
    rpc_cfg rp_cfg = {.timeout_ms = ctx->cfg.rpc_timeout_ms,
                      .max_timeout_ms = ctx->cfg.hook_timeout_ms};
    if ((rc = replay_q_create(&ws->rq, ctx->b, wsc_worker_loop(w), &rc_cfg)) != 0 ||
        (rc = rpc_q_create(&ws->rpcq, ctx->b, wsc_worker_loop(w), &rp_cfg)) != 0) {
        replay_q_destroy(ws->rq);
        loop_del(wsc_worker_loop(w), &ws->port_io);
        fab_port_close(ws->port);
        free(ws);
        return rc;
    }
    pthread_mutex_init(&ws->vlock, NULL);
    int idx = wsc_worker_index(w);
    pthread_mutex_lock(&workers_lock);
    if (idx >= 0 && idx < 64) ctx->workers[idx] = ws;
    pthread_mutex_unlock(&workers_lock);
    loop_set_wake(wsc_worker_loop(w), on_wake, ws);
    wsc_worker_set_data(w, ws);
    wsc_worker_set_before_sleep(w, before_sleep);
    return 0;
}

static void on_worker_stop(wsc_worker *w, void *ud)
{
    (void)ud;
    wstate *ws = wsc_worker_data(w);
    if (!ws) return;
    loop_del(wsc_worker_loop(w), &ws->port_io);
    fab_port_close(ws->port);
    hook_cache_clear(ws);
    replay_q_destroy(ws->rq);
    rpc_q_destroy(ws->rpcq);
    loop_set_wake(wsc_worker_loop(w), NULL, NULL);
    /* verdicts may still come (the presence thread stops after the workers): they find no
     * worker once it is unhooked here */
    int idx = wsc_worker_index(w);
    pthread_mutex_lock(&workers_lock);
    if (idx >= 0 && idx < 64) ws->ctx->workers[idx] = NULL;
    pthread_mutex_unlock(&workers_lock);
    pthread_mutex_lock(&ws->vlock);
    verdict *list = ws->verdicts;
    ws->verdicts = NULL;
    pthread_mutex_unlock(&ws->vlock);
    while (list) {
        verdict *v = list;
        list = v->next;
        free(v);
    }
    pthread_mutex_destroy(&ws->vlock);
    for (disc_req *d = take_disc_list(idx), *next; d; d = next) { /* unhooked: none closed */
        next = d->next;
        d->done(d->ud, 0);
        free(d->user);
        free(d);
    }
    free(ws);
}

void session_handlers(session_ctx *ctx, wsc_handlers *h)
{
    session_m.auth_ok = metrics_counter("sc_edge_auth_total", "result=\"ok\"",
                                        "authentications by result (refused: by reason)");
    session_m.deliveries = metrics_counter("sc_edge_deliveries_total", NULL,
                                           "events queued to subscribers");
    session_m.publishes = metrics_counter("sc_edge_publishes_total", NULL,
                                          "client publishes sent on");
    session_m.quota_refused = metrics_counter("sc_edge_publish_quota_refused_total", NULL,
                                              "client publishes refused: over a byte budget");
    session_m.rate_closes = metrics_counter("sc_edge_rate_closes_total", NULL,
                                            "connections closed 4029 (rate limited)");
    session_m.gaps = metrics_counter("sc_edge_gaps_total", NULL,
                                     "live gaps seen (an event's predecessor never came), filled "
                                     "from the stream");
    session_m.dups = metrics_counter("sc_edge_duplicates_dropped_total", NULL,
                                     "live events not sent because a replay had sent them");
    static const char rpc_help[] = "client rpc calls by result";
    session_m.rpc_ok = metrics_counter("sc_edge_rpc_total", "result=\"ok\"", rpc_help);
    session_m.rpc_error = metrics_counter("sc_edge_rpc_total", "result=\"error\"", rpc_help);
    session_m.rpc_timeout = metrics_counter("sc_edge_rpc_total", "result=\"timeout\"", rpc_help);
    session_m.rpc_no_responders = metrics_counter("sc_edge_rpc_total", "result=\"no_responders\"",
                                                  rpc_help);
    session_m.rpc_refused = metrics_counter("sc_edge_rpc_total", "result=\"refused\"", rpc_help);
    session_m.rpc_busy = metrics_counter("sc_edge_rpc_total", "result=\"busy\"", rpc_help);
    static const char hook_help[] = "hook answers (hooks.connect, .subscribe, .publish) by result";
    session_m.hook_allowed = metrics_counter("sc_edge_hooks_total", "result=\"allowed\"",
                                             hook_help);
    session_m.hook_denied = metrics_counter("sc_edge_hooks_total", "result=\"denied\"", hook_help);
    session_m.hook_failed = metrics_counter("sc_edge_hooks_total", "result=\"failed\"", hook_help);
    session_m.hook_cached = metrics_counter("sc_edge_hooks_total", "result=\"cached\"", hook_help);
    session_m.conflated =
        metrics_counter("sc_edge_conflated_total", NULL,
                        "events of mode \"latest\" subscriptions replaced by a newer one "
                        "while their client was behind (told to it as skipped)");
    session_m.publish_dups =
        metrics_counter("sc_edge_publish_duplicates_total", NULL,
                        "client publishes with an id the store had already (kept once)");
    memset(h, 0, sizeof *h);
    h->ud = ctx;
    h->worker_start = on_worker_start;
    h->worker_stop = on_worker_stop;
    h->upgrade = on_upgrade;
    h->open = on_open;
    h->message = on_message;
    h->timer = on_timer;
    h->closed = on_closed;
}
