/* replay.c - paced direct-get walks through the stream; see replay.h.
 *
 * A replay is in one of three places: the queue's FIFO (waiting for a request slot), its
 * own timer (waiting for its connection to drain, or to look again), or in flight (one
 * request; the bus calls back exactly once, so a cancelled replay is freed when its reply
 * comes back through the mailbox, never before). */
#include "replay.h"

#include "log.h"
#include "metrics.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define REPLAY_ERRORS                                                                              \
    6 /* failed requests in a row before REPLAY_FAILED (200 ms, 400 ms,                            \
       * ... apart: about 4 s, long enough for a NATS failover) */

enum step { STEP_CHECK, STEP_OLDEST, STEP_LAST, STEP_NEXT };

struct replay {
    replay_q *q;
    replay *next; /* FIFO link */
    const replay_ops *ops;
    void *ud;
    loop_timer timer; /* waits (back-pressure, look again, after an error) */
    enum step step;
    bool queued, inflight, cancelled;
    uint8_t errors, retries;
    const char *api; /* the queue's $JS.API.DIRECT.GET.<stream> of its stream */
    uint64_t cursor; /* last message handed over (or the starting position) */
    uint64_t handed;
    int64_t not_before_ms; /* a first message stored before this (Unix ms) counts as gone */
    /* the answer to its one request in flight, handed over by a nats.c thread through the
     * queue's mailbox: kept here, so that handing it over never allocates */
    replay *next_mail;
    int result;
    bus_msg *msg;
    char subject[];
};

struct replay_q {
    bus *b;
    loop *l;
    replay_cfg cfg;
    char api[160];       /* $JS.API.DIRECT.GET.<stream> */
    char inbox_api[160]; /* ... of the inbox stream */
    replay *head, *tail; /* FIFO waiting for a request slot */
    int inflight;
    pthread_mutex_t lock;        /* the mailbox */
    replay *inbox, **inbox_tail; /* replays whose reply arrived (linked by next_mail) */
};

static metric *m_started, *m_fetched, *m_requests, *m_failed;

static void q_pump(replay_q *q);

static void q_push(replay *r)
{
    replay_q *q = r->q;
    r->next = NULL;
    r->queued = true;
    if (q->tail)
        q->tail->next = r;
    else
        q->head = r;
    q->tail = r;
}

static void q_unlink(replay *r)
{
    replay_q *q = r->q;
    replay *prev = NULL;
    for (replay *it = q->head; it; prev = it, it = it->next) {
        if (it != r) continue;
        if (prev)
            prev->next = r->next;
        else
            q->head = r->next;
        if (q->tail == r) q->tail = prev;
        break;
    }
    r->queued = false;
}

static void replay_free(replay *r)
{
    if (r->queued) q_unlink(r);
    loop_timer_cancel(&r->timer);
    free(r);
}

/* Waits ms on the replay's own timer, then back into the FIFO. */
static void replay_later(replay *r, int ms)
{
    loop_timer_set(r->q->l, &r->timer, loop_now(r->q->l) + (uint64_t)ms);
}

static void on_timer(loop_timer *t)
{
    replay *r = (replay *)((char *)t - offsetof(replay, timer));
    q_push(r);
    q_pump(r->q);
}

/* nats.c thread (or the bus's timer thread): into the mailbox, wake the worker. */
static void on_reply(int result, bus_msg *msg, void *ud)
{
    replay *r = ud;
    replay_q *q = r->q;
    r->result = result; /* r is not touched by the worker while its request is in flight */
    r->msg = msg;
    r->next_mail = NULL;
    pthread_mutex_lock(&q->lock);
    *q->inbox_tail = r;
    q->inbox_tail = &r->next_mail;
    pthread_mutex_unlock(&q->lock);
    loop_wake(q->l);
}

static int send_request(replay *r)
{
    char body[400];
    int n;
    switch (r->step) {
    case STEP_CHECK:
        n = snprintf(body, sizeof body, "{\"seq\":%llu}", (unsigned long long)r->cursor);
        break;
    case STEP_OLDEST:
        n = snprintf(body, sizeof body, "{\"seq\":0,\"next_by_subj\":\"%s\"}", r->subject);
        break;
    case STEP_LAST: n = snprintf(body, sizeof body, "{\"last_by_subj\":\"%s\"}", r->subject); break;
    default:
        n = snprintf(body, sizeof body, "{\"seq\":%llu,\"next_by_subj\":\"%s\"}",
                     (unsigned long long)(r->cursor + 1), r->subject);
        break;
    }
    if (n < 0 || (size_t)n >= sizeof body) return -EINVAL;
    int rc = bus_request_async(r->q->b, r->api, body, (size_t)n, r->q->cfg.timeout_ms, on_reply, r);
    if (rc == 0) {
        r->inflight = true;
        r->q->inflight++;
        metric_inc(m_requests);
    }
    return rc;
}

/* Ends r (the owner's end callback decides whether to look again). */
static void replay_end(replay *r, enum replay_end why, uint64_t oldest)
{
    if (why == REPLAY_FAILED) metric_inc(m_failed);
    bool again = r->ops->end(r->ud, why, oldest);
    if (why == REPLAY_CAUGHT_UP && again) {
        if (++r->retries <= REPLAY_RETRIES) {
            replay_later(r, REPLAY_RETRY_MS);
            return;
        }
        metric_inc(m_failed);
        r->ops->end(r->ud, REPLAY_FAILED, 0);
    }
    replay_free(r);
}

static void q_pump(replay_q *q)
{
    /* each replay in the FIFO gets at most one look per pump, so a full queue of replays
     * whose connections are busy cannot spin here */
    for (int budget = 1024; q->head && q->inflight < q->cfg.inflight && budget > 0; budget--) {
        replay *r = q->head;
        q->head = r->next;
        if (!q->head) q->tail = NULL;
        r->queued = false;
        if (!r->ops->ready(r->ud)) {
            replay_later(r, LOOP_TICK_MS);
            continue;
        }
        int rc = send_request(r);
        if (rc == 0) continue;
        if (++r->errors > REPLAY_ERRORS) {
            log_warn("replay request failed", "subject=%s error=\"%s\"", r->subject,
                     sc_strerror(rc));
            replay_end(r, REPLAY_FAILED, 0);
        } else {
            replay_later(r, 200 * r->errors);
        }
    }
}

/* When the stream stored msg (its Nats-Time-Stamp, RFC 3339 in UTC), Unix ms; 0: unknown. */
static int64_t msg_time_ms(const bus_msg *m)
{
    const char *v = bus_msg_header(m, "Nats-Time-Stamp");
    struct tm tm = {0};
    int frac_len = 0;
    char frac[16] = "";
    if (!v || sscanf(v, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &frac_len) != 6)
        return 0;
    if (v[frac_len] == '.') sscanf(v + frac_len + 1, "%3[0-9]", frac);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    int64_t ms = (int64_t)timegm(&tm) * 1000;
    for (int i = 0; i < 3; i++)
        ms += (frac[i] >= '0' && frac[i] <= '9' ? frac[i] - '0' : 0) * (i == 0   ? 100
                                                                        : i == 1 ? 10
                                                                                 : 1);
    return ms;
}

static uint64_t msg_seq(const bus_msg *m)
{
    const char *v = bus_msg_header(m, "Nats-Sequence");
    return v ? strtoull(v, NULL, 10) : 0;
}

/* A reply, on the worker. Status 404: no such message; other statuses: errors. */
static void handle(replay *r, int result, bus_msg *msg)
{
    const char *status = msg ? bus_msg_header(msg, "Status") : NULL;
    bool found = result == 0 && !status && msg_seq(msg) > 0;
    bool missing = result == 0 && status && strcmp(status, "404") == 0;
    if (!found && !missing) {
        if (++r->errors > REPLAY_ERRORS) {
            log_warn("replay request failed", "subject=%s error=\"%s\" status=%s", r->subject,
                     sc_strerror(result), status ? status : "-");
            replay_end(r, REPLAY_FAILED, 0);
        } else {
            replay_later(r, 200 * r->errors);
        }
        return;
    }
    r->errors = 0;
    switch (r->step) {
    case STEP_CHECK:
        r->step = found ? STEP_NEXT : STEP_OLDEST;
        q_push(r);
        return;
    case STEP_OLDEST:
        /* since is not retained; nothing was lost only if the subject's oldest retained
         * message comes right after it (since = oldest - 1: "everything you have") */
        if (found && msg_seq(msg) == r->cursor + 1) {
            r->step = STEP_NEXT;
            q_push(r);
            return;
        }
        replay_end(r, REPLAY_GONE, found ? msg_seq(msg) : 0);
        return;
    case STEP_LAST: /* the walk starts just before the last message: it is handed over next */
        if (found) {
            r->cursor = msg_seq(msg) - 1;
            r->step = STEP_NEXT;
        }
        /* fall through */
    case STEP_NEXT:
        if (missing) {
            replay_end(r, REPLAY_CAUGHT_UP, 0);
            return;
        }
        uint64_t seq = msg_seq(msg);
        if (seq <= r->cursor) { /* cannot happen with a sane server; do not loop on it */
            replay_end(r, REPLAY_FAILED, 0);
            return;
        }
        if (r->handed == 0 && r->not_before_ms > 0) { /* the namespace keeps less (history_s) */
            int64_t at = msg_time_ms(msg);
            if (at > 0 && at < r->not_before_ms) {
                replay_end(r, REPLAY_GONE, 0);
                return;
            }
        }
        r->cursor = seq;
        r->retries = 0;
        r->handed++;
        metric_inc(m_fetched);
        if (!r->ops->event(r->ud, seq, bus_msg_data(msg), bus_msg_len(msg))) {
            replay_free(r);
            return;
        }
        if (r->handed >= r->q->cfg.max_events) {
            replay_end(r, REPLAY_LIMIT, 0);
            return;
        }
        q_push(r);
        return;
    }
}

void replay_q_poll(replay_q *q)
{
    pthread_mutex_lock(&q->lock);
    replay *list = q->inbox;
    q->inbox = NULL;
    q->inbox_tail = &q->inbox;
    pthread_mutex_unlock(&q->lock);
    while (list) {
        replay *r = list;
        list = r->next_mail;
        bus_msg *msg = r->msg; /* handle() may free r */
        int result = r->result;
        r->msg = NULL;
        r->inflight = false;
        q->inflight--;
        if (r->cancelled)
            replay_free(r);
        else
            handle(r, result, msg);
        if (msg) bus_msg_destroy(msg);
    }
    q_pump(q);
}

int replay_q_create(replay_q **out, bus *b, loop *l, const replay_cfg *cfg)
{
    if (!m_started) {
        m_started = metrics_counter("sc_edge_replays_total", NULL,
                                    "replays started (subscribe with since, gaps healed)");
        m_fetched = metrics_counter("sc_edge_replayed_total", NULL,
                                    "retained events fetched from the stream for replays");
        m_requests = metrics_counter("sc_edge_replay_requests_total", NULL,
                                     "direct-get requests sent to the stream");
        m_failed = metrics_counter("sc_edge_replay_failures_total", NULL,
                                   "replays that ended without reaching the live position");
    }
    replay_q *q = calloc(1, sizeof *q);
    if (!q) return -ENOMEM;
    q->b = b;
    q->l = l;
    q->cfg = *cfg;
    if (q->cfg.inflight < 1) q->cfg.inflight = 1;
    if (q->cfg.max_events < 1) q->cfg.max_events = 1;
    const char *inbox = cfg->inbox_stream ? cfg->inbox_stream : cfg->stream;
    int n = snprintf(q->api, sizeof q->api, "$JS.API.DIRECT.GET.%s", cfg->stream);
    int m = snprintf(q->inbox_api, sizeof q->inbox_api, "$JS.API.DIRECT.GET.%s", inbox);
    if (n < 0 || (size_t)n >= sizeof q->api || m < 0 || (size_t)m >= sizeof q->inbox_api) {
        free(q);
        return -EINVAL;
    }
    q->cfg.stream = q->cfg.inbox_stream = NULL;
    pthread_mutex_init(&q->lock, NULL);
    q->inbox_tail = &q->inbox;
    *out = q;
    return 0;
}

void replay_q_destroy(replay_q *q)
{
    if (!q) return;
    while (q->head) replay_cancel(q->head);
    /* every request in flight is answered or times out: wait for that, bounded */
    long waited = 0, limit = (long)q->cfg.timeout_ms + 2000;
    while (q->inflight > 0 && waited < limit) {
        replay_q_poll(q);
        if (q->inflight > 0) {
            usleep(10000);
            waited += 10;
        }
    }
    if (q->inflight > 0) { /* the bus broke its promise: leak rather than free under it */
        log_warn("replay requests still in flight at stop", "count=%d", q->inflight);
        return;
    }
    pthread_mutex_destroy(&q->lock);
    free(q);
}

replay *replay_start(replay_q *q, bool inbox, const char *subject, uint64_t since, bool check,
                     int64_t not_before_ms, const replay_ops *ops, void *ud)
{
    size_t sl = strlen(subject);
    replay *r = calloc(1, sizeof *r + sl + 1);
    if (!r) return NULL;
    memcpy(r->subject, subject, sl + 1);
    r->q = q;
    r->api = inbox ? q->inbox_api : q->api;
    r->ops = ops;
    r->ud = ud;
    bool latest = since == REPLAY_LATEST;
    r->cursor = latest ? 0 : since;
    r->not_before_ms = latest ? 0 : not_before_ms;
    r->step = latest ? STEP_LAST : check && since > 0 ? STEP_CHECK : STEP_NEXT;
    r->timer.fn = on_timer;
    metric_inc(m_started);
    q_push(r);
    loop_wake(q->l); /* pumped from the loop, never inside the caller: no callback runs here */
    return r;
}

void replay_cancel(replay *r)
{
    if (!r) return;
    if (r->inflight) { /* freed when its reply comes back */
        r->cancelled = true;
        if (r->queued) q_unlink(r);
        loop_timer_cancel(&r->timer);
        return;
    }
    replay_free(r);
}
