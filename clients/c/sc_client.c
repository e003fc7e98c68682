/* sc_client.c - the Sidecast C client library: the connection's life (token, connect,
 * welcome, subscriptions with since, in-band refresh, reconnect with backoff), publishes and
 * rpcs with their timeouts. Transport in sc_conn.c, messages in sc_wire.c. */
#include "sidecast.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "sc_conn.h"
#include "sc_wire.h"

#define TOKEN_MAX 8192
#define MSG_OVERHEAD 512 /* a publish's or rpc's message around its data */

enum { P_FREE = 0, P_PUBLISH, P_RPC };

typedef struct pending {
    int kind;
    bool sent;
    uint64_t order;                /* creation order: resent publishes keep it */
    int64_t id_num;                /* rpc */
    char id[SC_CLIENT_ID_MAX + 1]; /* publish */
    int64_t deadline;              /* monotonic ms */
    char *msg;                     /* the encoded message, kept for a resend */
    size_t len;
    sc_client_ack_fn ack;
    sc_client_rpc_fn rpc;
    void *ud;
} pending;

typedef struct sub {
    bool used;
    char topic[SC_WIRE_TOPIC_MAX + 1];
    uint64_t last_seq; /* 0: none */
    int64_t id;        /* of the subscribe sent on this connection */
    bool resuming;     /* sent with since */
    int flags;         /* SC_CLIENT_SUB_FROM_LAST, SC_CLIENT_SUB_LATEST */
} sub;

struct sc_client {
    sc_client_config cfg;
    char *urls[SC_CLIENT_MAX_URLS];
    int url_at, url_cur; /* the next attempt's URL; the current (or last) one's */
    char *cafile;
    SSL_CTX *ctx;
    int epfd, evfd, reg_fd;
    uint32_t reg_events;
    sc_client_state state;
    volatile sig_atomic_t stop_req;
    int fatal_rc;
    sc_conn *conn;
    bool ready;
    char token[TOKEN_MAX + 1];
    bool have_token, token_waiting;
    uint64_t token_gen, conn_token_gen;
    bool refresh_wanted, refresh_pending;
    int64_t refresh_at; /* monotonic ms: ask the provider in band (0: no timer) */
    int64_t expires_at; /* the token's exp as the edge told it, epoch s */
    int64_t connect_deadline, backoff_until, ready_since;
    int attempt;
    bool pinged;
    char conn_id[64], edge[128];
    sub *subs;
    pending *pend;
    uint64_t order;
    int64_t next_id;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *sc_client_state_name(sc_client_state s)
{
    switch (s) {
    case SC_CLIENT_IDLE: return "idle";
    case SC_CLIENT_CONNECTING: return "connecting";
    case SC_CLIENT_READY: return "ready";
    case SC_CLIENT_BACKOFF: return "backoff";
    case SC_CLIENT_STOPPED: return "stopped";
    }
    return "?";
}

static void set_state(sc_client *c, sc_client_state s, int code, const char *why)
{
    c->state = s;
    if (c->cfg.on_state) c->cfg.on_state(c->cfg.ud, s, code, why ? why : "");
}

#define DEFAULT(field, v)                                                                          \
    do {                                                                                           \
        if (c->cfg.field == 0) c->cfg.field = (v);                                                 \
        if (c->cfg.field < 0) goto bad;                                                            \
    } while (0)

int sc_client_create(const sc_client_config *cfg, sc_client **out)
{
    *out = NULL;
    if (!cfg || !cfg->token || cfg->nurls < 1 || cfg->nurls > SC_CLIENT_MAX_URLS || !cfg->urls)
        return -EINVAL;
    for (int i = 0; i < cfg->nurls; i++) {
        sc_wire_url u;
        if (!cfg->urls[i] || sc_wire_url_parse(cfg->urls[i], &u) < 0) return -EINVAL;
    }
    sc_client *c = calloc(1, sizeof *c);
    if (!c) return -ENOMEM;
    c->epfd = c->evfd = c->reg_fd = -1;
    c->cfg = *cfg;
    DEFAULT(connect_timeout_ms, 10000);
    DEFAULT(backoff_base_ms, 200);
    DEFAULT(backoff_cap_ms, 10000);
    DEFAULT(stable_ms, 10000);
    DEFAULT(ping_idle_ms, 30000);
    DEFAULT(dead_idle_ms, 45000);
    DEFAULT(publish_timeout_ms, 10000);
    DEFAULT(rpc_timeout_ms, 10000);
    DEFAULT(refresh_retry_ms, 5000);
    DEFAULT(max_pending, 256);
    DEFAULT(max_subs, 256);
    if (c->cfg.max_message == 0) c->cfg.max_message = 1024 * 1024;
    if (c->cfg.max_out_bytes == 0) c->cfg.max_out_bytes = 4 * 1024 * 1024;
    if (c->cfg.max_message < 1024 || c->cfg.max_out_bytes < 4096) goto bad;
    c->cfg.urls = NULL;
    c->cfg.cafile = NULL;
    for (int i = 0; i < cfg->nurls; i++)
        if (!(c->urls[i] = strdup(cfg->urls[i]))) goto nomem;
    if (cfg->cafile && !(c->cafile = strdup(cfg->cafile))) goto nomem;
    c->subs = calloc((size_t)c->cfg.max_subs, sizeof *c->subs);
    c->pend = calloc((size_t)c->cfg.max_pending, sizeof *c->pend);
    if (!c->subs || !c->pend) goto nomem;
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    c->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->epfd < 0 || c->evfd < 0) goto nomem;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = c->evfd};
    if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->evfd, &ev) < 0) goto nomem;
    c->next_id = 1;
    *out = c;
    return 0;
bad:
    sc_client_destroy(c);
    return -EINVAL;
nomem:
    sc_client_destroy(c);
    return -ENOMEM;
}

static void unregister(sc_client *c)
{
    if (c->reg_fd >= 0) epoll_ctl(c->epfd, EPOLL_CTL_DEL, c->reg_fd, NULL);
    c->reg_fd = -1;
    c->reg_events = 0;
}

static void drop_conn(sc_client *c, uint16_t code)
{
    unregister(c);
    sc_conn_close(c->conn, code);
    c->conn = NULL;
    c->ready = false;
    c->conn_id[0] = c->edge[0] = '\0';
}

/* Ends one pending call with status: the slot is freed before the callback runs, so the
 * callback may publish again. */
static void pend_finish(pending *p, int status, bool duplicate, const char *code,
                        const char *message, const char *data, size_t data_len)
{
    pending cp = *p;
    p->msg = NULL;
    char id[SC_CLIENT_ID_MAX + 1];
    snprintf(id, sizeof id, "%s", p->id);
    free(cp.msg);
    memset(p, 0, sizeof *p);
    if (cp.kind == P_PUBLISH && cp.ack)
        cp.ack(cp.ud, status, id, duplicate, code ? code : "", message ? message : "");
    else if (cp.kind == P_RPC && cp.rpc)
        cp.rpc(cp.ud, status, data, data_len, code ? code : "", message ? message : "");
}

static void cancel_all(sc_client *c)
{
    for (int i = 0; i < c->cfg.max_pending; i++)
        if (c->pend[i].kind != P_FREE)
            pend_finish(&c->pend[i], -ECANCELED, false, NULL, NULL, NULL, 0);
}

void sc_client_destroy(sc_client *c)
{
    if (!c) return;
    drop_conn(c, 1000);
    if (c->pend) cancel_all(c);
    if (c->ctx) SSL_CTX_free(c->ctx);
    if (c->epfd >= 0) close(c->epfd);
    if (c->evfd >= 0) close(c->evfd);
    for (int i = 0; i < SC_CLIENT_MAX_URLS; i++) free(c->urls[i]);
    free(c->cafile);
    free(c->subs);
    free(c->pend);
    explicit_bzero(c->token, sizeof c->token);
    free(c);
}

int sc_client_start(sc_client *c)
{
    if (c->state != SC_CLIENT_IDLE) return -EALREADY;
    set_state(c, SC_CLIENT_CONNECTING, 0, "starting");
    return 0;
}

void sc_client_stop(sc_client *c)
{
    c->stop_req = 1;
    uint64_t one = 1;
    ssize_t w = write(c->evfd, &one, sizeof one); /* wakes a poll on sc_client_fd */
    (void)w;
}

int sc_client_set_token(sc_client *c, const char *token)
{
    size_t n = token ? strlen(token) : 0;
    if (n == 0 || n > TOKEN_MAX) return -EINVAL;
    explicit_bzero(c->token, sizeof c->token);
    memcpy(c->token, token, n);
    c->have_token = true;
    c->token_waiting = false;
    c->token_gen++;
    uint64_t one = 1;
    ssize_t w = write(c->evfd, &one, sizeof one); /* a token given later wakes the loop */
    (void)w;
    return 0;
}

static sub *sub_find(sc_client *c, const char *topic)
{
    for (int i = 0; i < c->cfg.max_subs; i++)
        if (c->subs[i].used && strcmp(c->subs[i].topic, topic) == 0) return &c->subs[i];
    return NULL;
}

/* Sends subscribe for s on the current connection (with since once a seq is known). */
static int send_subscribe(sc_client *c, sub *s)
{
    char msg[SC_WIRE_TOPIC_MAX + 128];
    s->id = c->next_id++;
    s->resuming = s->last_seq > 0;
    int n = sc_wire_subscribe(msg, sizeof msg, s->topic, s->id,
                              s->last_seq > 0 ? (int64_t)s->last_seq : -1,
                              (s->flags & SC_CLIENT_SUB_FROM_LAST) != 0,
                              (s->flags & SC_CLIENT_SUB_LATEST) != 0);
    return n < 0 ? n : sc_conn_send_text(c->conn, msg, (size_t)n);
}

int sc_client_subscribe(sc_client *c, const char *topic, uint64_t since_seq)
{
    return sc_client_subscribe_opts(c, topic, since_seq, 0);
}

int sc_client_subscribe_opts(sc_client *c, const char *topic, uint64_t since_seq, int flags)
{
    if (flags & ~(SC_CLIENT_SUB_FROM_LAST | SC_CLIENT_SUB_LATEST)) return -EINVAL;
    if (!topic || !sc_wire_topic_valid(topic) || since_seq > (1ULL << 53)) return -EINVAL;
    if (sub_find(c, topic)) return -EEXIST;
    for (int i = 0; i < c->cfg.max_subs; i++) {
        sub *s = &c->subs[i];
        if (s->used) continue;
        memset(s, 0, sizeof *s);
        s->used = true;
        snprintf(s->topic, sizeof s->topic, "%s", topic);
        s->last_seq = since_seq;
        s->flags = flags;
        if (c->ready) send_subscribe(c, s); /* a failure shows as a drop: resent then */
        return 0;
    }
    return -ENOBUFS;
}

int sc_client_unsubscribe(sc_client *c, const char *topic)
{
    sub *s = topic ? sub_find(c, topic) : NULL;
    if (!s) return -ENOENT;
    if (c->ready) {
        char msg[SC_WIRE_TOPIC_MAX + 64];
        int n = sc_wire_unsubscribe(msg, sizeof msg, s->topic);
        if (n > 0) sc_conn_send_text(c->conn, msg, (size_t)n);
    }
    memset(s, 0, sizeof *s);
    return 0;
}

uint64_t sc_client_last_seq(const sc_client *c, const char *topic)
{
    for (int i = 0; i < c->cfg.max_subs; i++)
        if (c->subs[i].used && strcmp(c->subs[i].topic, topic) == 0) return c->subs[i].last_seq;
    return 0;
}

static pending *pend_slot(sc_client *c)
{
    for (int i = 0; i < c->cfg.max_pending; i++)
        if (c->pend[i].kind == P_FREE) return &c->pend[i];
    return NULL;
}

static size_t queued_bytes(const sc_client *c)
{
    size_t n = 0;
    for (int i = 0; i < c->cfg.max_pending; i++)
        if (c->pend[i].kind != P_FREE && !c->pend[i].sent) n += c->pend[i].len;
    return n;
}

/* Sends p now when ready; a send that fails leaves it for the next connection. */
/* Sends what waits, oldest first, while the connection's queue takes it: a publish or rpc
 * made while disconnected, or while the queue was full, goes out in the order it was made. */
static void send_waiting(sc_client *c)
{
    while (c->ready) {
        pending *first = NULL;
        for (int i = 0; i < c->cfg.max_pending; i++) {
            pending *p = &c->pend[i];
            if (p->kind != P_FREE && !p->sent && (!first || p->order < first->order)) first = p;
        }
        if (!first || sc_conn_send_text(c->conn, first->msg, first->len) < 0) return;
        first->sent = true;
    }
}

int sc_client_publish(sc_client *c, const char *topic, const char *data, size_t data_len,
                      const char *id, int timeout_ms, sc_client_ack_fn cb, void *ud)
{
    if (c->state == SC_CLIENT_STOPPED || c->stop_req) return -ESHUTDOWN;
    if (!topic || !data || timeout_ms < 0 || (id && (!*id || strlen(id) > SC_CLIENT_ID_MAX)))
        return -EINVAL;
    if (data_len + MSG_OVERHEAD > c->cfg.max_message) return -EINVAL; /* the edge's bound too */
    pending *p = pend_slot(c);
    if (!p) return -ENOBUFS;
    if (queued_bytes(c) + data_len + MSG_OVERHEAD > c->cfg.max_out_bytes) return -ENOBUFS;
    char gen[SC_CLIENT_ID_MAX + 1];
    if (!id) {
        uint8_t r[8];
        if (RAND_bytes(r, sizeof r) != 1) return -EIO;
        snprintf(gen, sizeof gen, "c%02x%02x%02x%02x%02x%02x%02x%02x-%" PRIu64, r[0], r[1], r[2],
                 r[3], r[4], r[5], r[6], r[7], c->order + 1);
        id = gen;
    }
    size_t cap = data_len + MSG_OVERHEAD;
    char *msg = malloc(cap);
    if (!msg) return -ENOMEM;
    int n = sc_wire_publish(msg, cap, topic, id, data, data_len);
    if (n < 0) {
        free(msg);
        return n == -ENOSPC ? -EINVAL : n;
    }
    memset(p, 0, sizeof *p);
    p->kind = P_PUBLISH;
    p->order = ++c->order;
    snprintf(p->id, sizeof p->id, "%s", id);
    p->deadline = now_ms() + (timeout_ms ? timeout_ms : c->cfg.publish_timeout_ms);
    p->msg = msg;
    p->len = (size_t)n;
    p->ack = cb;
    p->ud = ud;
    send_waiting(c);
    return 0;
}

int sc_client_rpc(sc_client *c, const char *method, const char *data, size_t data_len,
                  int timeout_ms, sc_client_rpc_fn cb, void *ud)
{
    if (c->state == SC_CLIENT_STOPPED || c->stop_req) return -ESHUTDOWN;
    if (!method || !data || timeout_ms < 0) return -EINVAL;
    if (data_len + MSG_OVERHEAD > c->cfg.max_message) return -EINVAL;
    pending *p = pend_slot(c);
    if (!p) return -ENOBUFS;
    if (queued_bytes(c) + data_len + MSG_OVERHEAD > c->cfg.max_out_bytes) return -ENOBUFS;
    size_t cap = data_len + MSG_OVERHEAD;
    char *msg = malloc(cap);
    if (!msg) return -ENOMEM;
    int64_t id = c->next_id++;
    int n = sc_wire_rpc(msg, cap, method, id, data, data_len);
    if (n < 0) {
        free(msg);
        return n == -ENOSPC ? -EINVAL : n;
    }
    memset(p, 0, sizeof *p);
    p->kind = P_RPC;
    p->order = ++c->order;
    p->id_num = id;
    p->deadline = now_ms() + (timeout_ms ? timeout_ms : c->cfg.rpc_timeout_ms);
    p->msg = msg;
    p->len = (size_t)n;
    p->rpc = cb;
    p->ud = ud;
    send_waiting(c);
    return 0;
}

int sc_client_fd(const sc_client *c) { return c->epfd; }
short sc_client_events(const sc_client *c)
{
    (void)c;
    return POLLIN; /* an epoll fd: readable when the socket is ready as the client wants */
}
sc_client_state sc_client_get_state(const sc_client *c) { return c->state; }
const char *sc_client_conn_id(const sc_client *c) { return c->conn_id; }
const char *sc_client_edge(const sc_client *c) { return c->edge; }
const char *sc_client_url(const sc_client *c) { return c->urls[c->url_cur]; }

int sc_client_retry_in_ms(const sc_client *c)
{
    if (c->state != SC_CLIENT_BACKOFF) return -1;
    int64_t d = c->backoff_until - now_ms();
    return d < 0 ? 0 : (int)d;
}

/* The client stops for good: rc is what sc_client_run returns. */
static void go_stopped(sc_client *c, int rc, int code, const char *why)
{
    drop_conn(c, 1000);
    c->fatal_rc = rc;
    cancel_all(c);
    set_state(c, SC_CLIENT_STOPPED, code, why);
}

/* The connection ended (or never came up): rpcs sent on it fail, publishes wait for the next
 * one, and the client waits its backoff, or stops when retrying cannot help. */
static void conn_ended(sc_client *c, int code, const char *why)
{
    bool was_ready = c->ready;
    drop_conn(c, 1000);
    for (int i = 0; i < c->cfg.max_pending; i++) {
        pending *p = &c->pend[i];
        if (p->kind == P_RPC && p->sent)
            pend_finish(p, -ECONNRESET, false, NULL, "the connection ended", NULL, 0);
        else if (p->kind == P_PUBLISH)
            p->sent = false; /* resent with the same id: the edge stores it once */
    }
    c->refresh_pending = c->refresh_wanted = false;
    c->refresh_at = 0;
    if (code == 4003 || code == 1015 || !sc_wire_close_retryable(code)) {
        go_stopped(c, code == 4003 ? -EPERM : code == 1015 ? -EKEYREJECTED : -EPROTO, code, why);
        return;
    }
    if (code == 4001) c->have_token = false;        /* renew before the next attempt */
    if (code == 1001 || code == 1006 || !was_ready) /* draining or gone: the next edge */
        c->url_at = (c->url_at + 1) % c->cfg.nurls;
    if (was_ready && now_ms() - c->ready_since >= c->cfg.stable_ms) c->attempt = 0;
    uint64_t r = 0;
    if (RAND_bytes((unsigned char *)&r, sizeof r) != 1) r = (uint64_t)now_ms() * 2654435761u;
    int64_t delay = sc_wire_backoff(c->attempt, c->cfg.backoff_base_ms, c->cfg.backoff_cap_ms, r);
    if (c->attempt < 62) c->attempt++;
    c->backoff_until = now_ms() + delay;
    set_state(c, SC_CLIENT_BACKOFF, code, why);
}

/* Asks the token provider. 0 when a token is there now; 1 when it will come later;
 * negative when the client stopped or must back off. */
static int ask_token(sc_client *c)
{
    c->token_waiting = true;
    int rc = c->cfg.token(c->cfg.ud, c);
    if (rc == -EINPROGRESS) return c->token_waiting ? 1 : 0;
    c->token_waiting = false;
    if (rc == -EACCES) {
        go_stopped(c, -EACCES, 4001, "the token provider gave up");
        return -EACCES;
    }
    if (rc < 0 || !c->have_token) return rc < 0 ? rc : -ENOENT;
    return 0;
}

static void connect_now(sc_client *c)
{
    if (!c->have_token) {
        if (c->token_waiting) return;
        int rc = ask_token(c);
        if (rc == 1 || c->state == SC_CLIENT_STOPPED) return;
        if (rc < 0) {
            conn_ended(c, 1006, "no token (the token provider failed)");
            return;
        }
    }
    c->url_cur = c->url_at;
    const char *url = c->urls[c->url_at];
    sc_wire_url u;
    sc_wire_url_parse(url, &u); /* checked at create */
    if (u.tls && !c->ctx) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        if (ctx) {
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
            int ok = SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) &&
                     (c->cafile ? SSL_CTX_load_verify_locations(ctx, c->cafile, NULL)
                                : SSL_CTX_set_default_verify_paths(ctx));
            ERR_clear_error();
            if (!ok) {
                SSL_CTX_free(ctx);
                go_stopped(c, -EINVAL, 1015, "cannot load the CA file");
                return;
            }
        }
        c->ctx = ctx;
        if (!ctx) {
            conn_ended(c, 1006, "cannot make a TLS context");
            return;
        }
    }
    char why[256];
    int rc = sc_conn_open(&u, c->token, c->ctx, c->cfg.max_message, c->cfg.max_out_bytes, &c->conn,
                          why, sizeof why);
    if (rc < 0) {
        conn_ended(c, 1006, why);
        return;
    }
    c->conn_token_gen = c->token_gen;
    c->connect_deadline = now_ms() + c->cfg.connect_timeout_ms;
}

static void on_welcome(sc_client *c, const sc_wire_msg *m)
{
    c->ready = true;
    c->ready_since = now_ms();
    c->pinged = false;
    snprintf(c->conn_id, sizeof c->conn_id, "%s", m->conn_id);
    snprintf(c->edge, sizeof c->edge, "%s", m->edge);
    c->expires_at = m->expires_at;
    c->refresh_pending = c->refresh_wanted = false;
    c->refresh_at = 0;
    if (m->expires_at > 0) { /* our own clock's reminder, in case token_expiring is missed */
        int64_t left = m->expires_at - (int64_t)time(NULL), margin = left < 90 ? left / 3 : 30;
        c->refresh_at = now_ms() + (left - margin) * 1000;
    }
    for (int i = 0; i < c->cfg.max_subs; i++)
        if (c->subs[i].used) send_subscribe(c, &c->subs[i]);
    send_waiting(c);
    set_state(c, SC_CLIENT_READY, 0, c->edge);
}

static void on_error_msg(sc_client *c, const sc_wire_msg *m)
{
    if (m->has_id_str) {
        for (int i = 0; i < c->cfg.max_pending; i++)
            if (c->pend[i].kind == P_PUBLISH && strcmp(c->pend[i].id, m->id_str) == 0) {
                pend_finish(&c->pend[i], -EREMOTEIO, false, m->code, m->message, NULL, 0);
                return;
            }
        return;
    }
    if (m->id_int) {
        for (int i = 0; i < c->cfg.max_pending; i++)
            if (c->pend[i].kind == P_RPC && c->pend[i].id_num == m->id_num) {
                pend_finish(&c->pend[i], -EREMOTEIO, false, m->code, m->message, NULL, 0);
                return;
            }
        for (int i = 0; i < c->cfg.max_subs; i++) {
            sub *s = &c->subs[i];
            if (!s->used || s->id != m->id_num) continue;
            char topic[SC_WIRE_TOPIC_MAX + 1];
            snprintf(topic, sizeof topic, "%s", s->topic);
            memset(s, 0, sizeof *s);
            if (c->cfg.on_sub)
                c->cfg.on_sub(c->cfg.ud, topic, SC_CLIENT_SUB_REFUSED, m->code, m->message, 0);
            return;
        }
        return;
    }
    if (m->topic[0] && c->cfg.on_sub) /* history_gone, replay_limit, replay_failed */
        c->cfg.on_sub(c->cfg.ud, m->topic, SC_CLIENT_SUB_GAP, m->code, m->message,
                      m->oldest > 0 ? (uint64_t)m->oldest : 0);
}

static void on_message(void *ud, const char *text, size_t len)
{
    sc_client *c = ud;
    if (c->state == SC_CLIENT_STOPPED || c->stop_req) return; /* nothing after a stop */
    sc_wire_msg m;
    if (sc_wire_parse(text, len, &m) < 0) return; /* not sidecast.v1: ignored */
    if (!c->ready && m.type != SC_WIRE_WELCOME) return;
    switch (m.type) {
    case SC_WIRE_WELCOME: on_welcome(c, &m); break;
    case SC_WIRE_SUBSCRIBED: {
        sub *s = sub_find(c, m.topic);
        if (s && c->cfg.on_sub)
            c->cfg.on_sub(c->cfg.ud, s->topic,
                          s->resuming ? SC_CLIENT_SUB_RESUMED : SC_CLIENT_SUB_LIVE, "", "", 0);
        break;
    }
    case SC_WIRE_EVENT: {
        sub *s = sub_find(c, m.topic);
        if (s) {
            if ((uint64_t)m.seq <= s->last_seq) break; /* seen already: never twice */
            s->last_seq = (uint64_t)m.seq;
        }
        if (c->cfg.on_event) {
            sc_client_event ev = {.topic = m.topic,
                                  .seq = (uint64_t)m.seq,
                                  .data = m.data,
                                  .data_len = m.data_len,
                                  .json = text,
                                  .json_len = len,
                                  .skipped = (uint64_t)m.skipped};
            c->cfg.on_event(c->cfg.ud, &ev);
        }
        break;
    }
    case SC_WIRE_ACK:
        for (int i = 0; m.has_id_str && i < c->cfg.max_pending; i++)
            if (c->pend[i].kind == P_PUBLISH && strcmp(c->pend[i].id, m.id_str) == 0) {
                pend_finish(&c->pend[i], 0, m.duplicate, NULL, NULL, NULL, 0);
                break;
            }
        break;
    case SC_WIRE_RPC_RESULT:
        for (int i = 0; i < c->cfg.max_pending; i++)
            if (c->pend[i].kind == P_RPC && c->pend[i].id_num == m.id_num) {
                pend_finish(&c->pend[i], 0, false, NULL, NULL, m.data, m.data_len);
                break;
            }
        break;
    case SC_WIRE_ERROR: on_error_msg(c, &m); break;
    case SC_WIRE_TOKEN_EXPIRING:
        if (!c->refresh_pending) c->refresh_wanted = true;
        break;
    case SC_WIRE_REFRESHED:
        c->refresh_pending = false;
        if (m.expires_at > 0) {
            c->expires_at = m.expires_at;
            int64_t left = m.expires_at - (int64_t)time(NULL), margin = left < 90 ? left / 3 : 30;
            c->refresh_at = now_ms() + (left - margin) * 1000;
        }
        if (c->cfg.on_refreshed) c->cfg.on_refreshed(c->cfg.ud, m.expires_at);
        break;
    default: break;
    }
}

/* In band: a token newer than the one the connection holds goes to the edge. */
static void send_refresh(sc_client *c)
{
    if (!c->ready || c->token_gen == c->conn_token_gen) return;
    char msg[TOKEN_MAX * 6 + 64];
    int n = sc_wire_refresh(msg, sizeof msg, c->token);
    if (n > 0 && sc_conn_send_text(c->conn, msg, (size_t)n) == 0) {
        c->conn_token_gen = c->token_gen;
        c->refresh_pending = true;
    }
    explicit_bzero(msg, sizeof msg);
}

static void timers(sc_client *c, int64_t now)
{
    for (int i = 0; i < c->cfg.max_pending; i++)
        if (c->pend[i].kind != P_FREE && now >= c->pend[i].deadline)
            pend_finish(&c->pend[i], -ETIMEDOUT, false, NULL, "no answer in time", NULL, 0);
}

static void update_poll(sc_client *c)
{
    if (!c->conn) return;
    int fd = sc_conn_fd(c->conn);
    uint32_t want = EPOLLIN | (sc_conn_want_write(c->conn) ? EPOLLOUT : 0);
    if (fd == c->reg_fd && want == c->reg_events) return;
    struct epoll_event ev = {.events = want, .data.fd = fd};
    if (fd != c->reg_fd) {
        unregister(c);
        if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) return;
    } else if (epoll_ctl(c->epfd, EPOLL_CTL_MOD, fd, &ev) < 0) {
        return;
    }
    c->reg_fd = fd;
    c->reg_events = want;
}

int sc_client_step(sc_client *c)
{
    uint64_t drain;
    while (read(c->evfd, &drain, sizeof drain) > 0) continue;
    if (c->state == SC_CLIENT_STOPPED) return -ESHUTDOWN;
    if (c->stop_req) {
        go_stopped(c, 0, 0, "stopped");
        return -ESHUTDOWN;
    }
    if (c->state == SC_CLIENT_IDLE) return 0;
    int64_t now = now_ms();
    timers(c, now);
    if (c->state == SC_CLIENT_BACKOFF && now >= c->backoff_until)
        set_state(c, SC_CLIENT_CONNECTING, 0, c->urls[c->url_at]);
    if (c->state == SC_CLIENT_CONNECTING && !c->conn) connect_now(c);
    if (c->conn) {
        int code = 1006;
        char why[256];
        if (sc_conn_io(c->conn, on_message, c, &code, why, sizeof why) < 0) {
            if (c->state != SC_CLIENT_STOPPED) conn_ended(c, code, why);
        } else if (!c->ready && now >= c->connect_deadline) {
            conn_ended(c, 1006,
                       sc_conn_open_done(c->conn) ? "no welcome in time" : "connect timed out");
        }
    }
    if (c->ready && !c->stop_req) {
        now = now_ms();
        int64_t idle = now - sc_conn_last_rx(c->conn);
        if (idle >= c->cfg.dead_idle_ms) {
            conn_ended(c, 1006, "the edge went silent");
        } else {
            if (idle >= c->cfg.ping_idle_ms && !c->pinged) c->pinged = sc_conn_ping(c->conn) == 0;
            if (idle < c->cfg.ping_idle_ms) c->pinged = false;
            if (c->refresh_at && now >= c->refresh_at && !c->refresh_pending) {
                c->refresh_wanted = true;
                c->refresh_at = 0;
            }
            if (c->refresh_wanted && !c->token_waiting) {
                c->refresh_wanted = false;
                int rc = ask_token(c);
                if (rc < 0 && c->state != SC_CLIENT_STOPPED)
                    c->refresh_at = now + c->cfg.refresh_retry_ms;
            }
            if (c->ready) send_refresh(c);
            send_waiting(c); /* what a full queue held back */
            if (c->ready && now - c->ready_since >= c->cfg.stable_ms) c->attempt = 0;
        }
    }
    if (c->conn) {
        int code;
        char why[256];
        if (sc_conn_io(c->conn, on_message, c, &code, why, sizeof why) < 0 &&
            c->state != SC_CLIENT_STOPPED)
            conn_ended(c, code, why); /* flushes what the callbacks queued */
    }
    if (c->stop_req && c->state != SC_CLIENT_STOPPED) go_stopped(c, 0, 0, "stopped");
    if (c->state == SC_CLIENT_STOPPED) return -ESHUTDOWN;
    update_poll(c);
    return 0;
}

static int64_t min64(int64_t a, int64_t b) { return a < 0 ? b : (b < 0 || a < b) ? a : b; }

int sc_client_timeout_ms(const sc_client *c)
{
    if (c->stop_req) return 0;
    if (c->state == SC_CLIENT_STOPPED || c->state == SC_CLIENT_IDLE) return -1;
    int64_t now = now_ms(), at = -1;
    for (int i = 0; i < c->cfg.max_pending; i++)
        if (c->pend[i].kind != P_FREE) at = min64(at, c->pend[i].deadline);
    if (c->state == SC_CLIENT_BACKOFF) at = min64(at, c->backoff_until);
    if (c->state == SC_CLIENT_CONNECTING) {
        if (!c->conn && !c->token_waiting) return 0;
        if (c->conn && sc_conn_more(c->conn)) return 0;
        if (c->conn) at = min64(at, c->connect_deadline);
    }
    if (c->ready) {
        if (sc_conn_more(c->conn) || c->refresh_wanted) return 0;
        int64_t rx = sc_conn_last_rx(c->conn);
        at = min64(at, rx + (c->pinged ? c->cfg.dead_idle_ms : c->cfg.ping_idle_ms));
        if (c->refresh_at) at = min64(at, c->refresh_at);
        if (c->attempt) at = min64(at, c->ready_since + c->cfg.stable_ms);
    }
    if (at < 0) return -1;
    int64_t d = at - now;
    return d <= 0 ? 0 : d > 60000 ? 60000 : (int)d;
}

int sc_client_run(sc_client *c)
{
    if (c->state == SC_CLIENT_IDLE) sc_client_start(c);
    for (;;) {
        if (sc_client_step(c) == -ESHUTDOWN) break;
        struct pollfd p = {.fd = c->epfd, .events = POLLIN};
        int t = sc_client_timeout_ms(c);
        if (poll(&p, 1, t) < 0 && errno != EINTR) return -errno;
    }
    return c->fatal_rc;
}
