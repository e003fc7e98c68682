/* rpc.c - a connection's requests whose replies come back to its worker; see rpc.h. */
#include "rpc.h"

#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct rpc_call {
    rpc_q *q;
    rpc_call *next_mail; /* the queue's inbox */
    rpc_done_fn fn;
    void *ud;
    int result;
    bus_msg *msg;
    bool cancelled; /* worker only */
};

struct rpc_q {
    bus *b;
    loop *l;
    rpc_cfg cfg;
    int inflight; /* worker only */
    pthread_mutex_t lock;
    rpc_call *inbox, **inbox_tail; /* under lock: answered calls for the worker */
};

/* nats.c thread (or the bus's timer thread): into the inbox, wake the worker. */
static void on_reply(int result, bus_msg *msg, void *ud)
{
    rpc_call *c = ud;
    rpc_q *q = c->q;
    c->result = result; /* the worker does not touch c->result or c->msg meanwhile */
    c->msg = msg;
    c->next_mail = NULL;
    pthread_mutex_lock(&q->lock);
    *q->inbox_tail = c;
    q->inbox_tail = &c->next_mail;
    pthread_mutex_unlock(&q->lock);
    loop_wake(q->l);
}

int rpc_q_create(rpc_q **out, bus *b, loop *l, const rpc_cfg *cfg)
{
    rpc_q *q = calloc(1, sizeof *q);
    if (!q) return -ENOMEM;
    q->b = b;
    q->l = l;
    q->cfg = *cfg;
    q->inbox_tail = &q->inbox;
    pthread_mutex_init(&q->lock, NULL);
    *out = q;
    return 0;
}

void rpc_q_poll(rpc_q *q)
{
    pthread_mutex_lock(&q->lock);
    rpc_call *list = q->inbox;
    q->inbox = NULL;
    q->inbox_tail = &q->inbox;
    pthread_mutex_unlock(&q->lock);
    while (list) {
        rpc_call *c = list;
        list = c->next_mail;
        q->inflight--;
        if (!c->cancelled) c->fn(c->ud, c->result, c->msg);
        if (c->msg) bus_msg_destroy(c->msg);
        free(c);
    }
}

void rpc_q_destroy(rpc_q *q)
{
    if (!q) return;
    /* every call in flight is answered or times out (the bus promises it): wait, bounded */
    int longest = q->cfg.max_timeout_ms > q->cfg.timeout_ms ? q->cfg.max_timeout_ms
                                                            : q->cfg.timeout_ms;
    long waited = 0, limit = (long)longest + 2000;
    while (q->inflight > 0 && waited < limit) {
        rpc_q_poll(q);
        if (q->inflight > 0) {
            usleep(10000);
            waited += 10;
        }
    }
    if (q->inflight > 0) { /* the bus broke its promise: leak rather than free under it */
        log_warn("rpc calls still in flight at stop", "count=%d", q->inflight);
        return;
    }
    pthread_mutex_destroy(&q->lock);
    free(q);
}

rpc_call *rpc_start(rpc_q *q, const char *subject, const char *data, size_t len,
                    const bus_hdr *hdrs, size_t nhdr, int timeout_ms, rpc_done_fn fn, void *ud,
                    int *err)
{
    rpc_call *c = calloc(1, sizeof *c);
    if (!c) {
        *err = -ENOMEM;
        return NULL;
    }
    c->q = q;
    c->fn = fn;
    c->ud = ud;
    int rc = bus_request_async_hdrs(q->b, subject, data, len, hdrs, nhdr,
                                    timeout_ms > 0 ? timeout_ms : q->cfg.timeout_ms, on_reply, c);
    if (rc != 0) {
        free(c);
        *err = rc;
        return NULL;
    }
    q->inflight++;
    return c;
}

void rpc_cancel(rpc_call *c) { c->cancelled = true; }
