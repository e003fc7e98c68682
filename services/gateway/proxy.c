/* proxy.c - a route's calls over the bus, and the HTTP answer they make; see proxy.h.
 *
 * Failure rules (docs/GATEWAY.md): a bus failure maps to 503/504/502; a reply that is not
 * JSON or has a bad status is 502; in a composition the first failing required call (in
 * route order) decides the answer - its own status and body when the service answered with
 * a non-2xx status - while a failing optional call contributes null.
 *
 * A job runs in rounds: a single route is one round of one call, a parallel composition one
 * round of all its calls, a sequence one round per step. Each round counts one reference per
 * call sent plus one for the thread sending them; whoever drops the last one (a reply
 * callback, the bus's timer thread, or the sender itself) judges the round and starts the
 * next one or finishes. So no thread reads the job after another may have freed it, and a
 * reply callback that fires while its request is still being sent cannot end the round. */
#include "proxy.h"

#include "contract.h"
#include "log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROXY_MAX_HDRS 8

typedef struct proxy_job proxy_job;

typedef struct proxy_slot {
    struct proxy_job *job;
    size_t call;    /* index in route->calls */
    int result;     /* bus result (0: reply) */
    bus_msg *reply; /* owned */
} proxy_slot;

struct proxy_job {
    bus *b;
    const route *route;
    json_t *envelope; /* a reference */
    json_t *ctx;      /* compositions and templated single calls, or NULL */
    const char *user, *rid;
    bus_hdr hdrs[PROXY_MAX_HDRS];
    size_t nhdr;
    proxy_answer *ans;
    proxy_done_fn done;
    void *ud;
    long long deadline; /* ms, CLOCK_MONOTONIC */
    atomic_size_t refs; /* of the current round */
    size_t step;        /* sequence: next call to run */
    size_t nslot;       /* calls of the current round */
    proxy_slot slots[ROUTES_MAX_CALLS];
    json_t *answers[ROUTES_MAX_CALLS];
};

static long long proxy_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void proxy_answer_clear(proxy_answer *ans)
{
    if (!ans) return;
    free(ans->body);
    memset(ans, 0, sizeof *ans);
}

void proxy_answer_error(proxy_answer *ans, int status, const char *code, const char *message)
{
    free(ans->body);
    memset(ans, 0, sizeof *ans);
    ans->status = status;
    ans->error = code;
    ans->body = compose_error_body(code, message, &ans->len);
    if (!ans->body) ans->len = 0;
}

static char *proxy_dump(const json_t *v, size_t *len)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (s) *len = strlen(s);
    return s;
}

/* A request whose data cannot be built: the caller's data was missing (400) or an earlier
 * answer was (502). */
static void proxy_build_failed(const proxy_job *j, const route_call *c, const tmpl_error *e,
                               proxy_answer *ans)
{
    char msg[320];
    int client = strcmp(e->root, "query") == 0 || strcmp(e->root, "body") == 0 ||
                 strcmp(e->root, "params") == 0;
    if (c->key[0])
        snprintf(msg, sizeof msg, "call '%s': %s", c->key, e->msg);
    else
        snprintf(msg, sizeof msg, "%s", e->msg);
    if (client) {
        proxy_answer_error(ans, 400, "invalid_request", msg);
    } else {
        log_warn("request not built", "rid=%s subject=%s reason=\"%s\"", j->rid, c->subject,
                 e->msg);
        proxy_answer_error(ans, 502, "bad_gateway", msg);
    }
}

static void proxy_bus_failed(const proxy_job *j, const route_call *c, int rc, proxy_answer *ans)
{
    const char *code;
    char msg[256];
    int status = compose_bus_status(rc, &code);
    log_warn("service call failed", "rid=%s subject=%s err=\"%s\"", j->rid, c->subject,
             sc_strerror(rc));
    if (c->key[0])
        snprintf(msg, sizeof msg, "call '%s': %s", c->key, sc_strerror(rc));
    else
        snprintf(msg, sizeof msg, "%s", sc_strerror(rc));
    proxy_answer_error(ans, status, code, msg);
}

/* Reads one reply (build: parse its body, else only check it). Returns 0 with *rep filled
 * (caller clears), or -1 with ans set to 502. */
static int proxy_read_reply(const proxy_job *j, const route_call *c, const bus_msg *msg,
                            compose_reply *rep, proxy_answer *ans, int build)
{
    char why[128];
    int dropped = 0;
    int (*read)(const char *, size_t, const char *, const char *, compose_reply *, int *, char *,
                size_t) = build ? compose_reply_parse : compose_reply_check;
    if (read(bus_msg_data(msg), bus_msg_len(msg), bus_msg_header(msg, HDR_STATUS),
             bus_msg_header(msg, HDR_HTTP_HEADER), rep, &dropped, why, sizeof why) != 0) {
        char m[256];
        log_warn("malformed answer", "rid=%s subject=%s reason=\"%s\"", j->rid, c->subject, why);
        if (c->key[0])
            snprintf(m, sizeof m, "call '%s': malformed answer from service", c->key);
        else
            snprintf(m, sizeof m, "malformed answer from service");
        proxy_answer_error(ans, 502, "bad_gateway", m);
        return -1;
    }
    if (dropped) log_warn("pass-through header dropped", "rid=%s subject=%s", j->rid, c->subject);
    return 0;
}

/* The service's own answer, as it sent it (data already checked to be JSON or empty). */
static void proxy_pass_through(const bus_msg *msg, const compose_reply *rep, proxy_answer *ans)
{
    memset(ans, 0, sizeof *ans);
    ans->status = rep->status;
    if (rep->has_body) {
        size_t len = bus_msg_len(msg);
        ans->body = malloc(len + 1);
        if (!ans->body) {
            proxy_answer_error(ans, 500, "internal_error", "out of memory");
            return;
        }
        memcpy(ans->body, bus_msg_data(msg), len);
        ans->body[len] = '\0';
        ans->len = len;
    }
    memcpy(ans->hdr_name, rep->hdr_name, sizeof ans->hdr_name);
    memcpy(ans->hdr_value, rep->hdr_value, sizeof ans->hdr_value);
}

/* Judges one composed call's outcome. On success *answer gets the reply's body (a new
 * reference, NULL for an empty reply) and 0 is returned. On failure of a required call ans
 * gets the route's answer and -1 is returned; an optional call's failure is logged and
 * returns 0 with *answer NULL. */
static int proxy_judge(const proxy_job *j, const route_call *c, int rc, const bus_msg *msg,
                       json_t **answer, proxy_answer *ans)
{
    compose_reply rep = {0};
    proxy_answer tmp = {0};
    *answer = NULL;
    if (rc != 0) {
        proxy_bus_failed(j, c, rc, &tmp);
    } else if (proxy_read_reply(j, c, msg, &rep, &tmp, 1) == 0) {
        if (rep.status >= 200 && rep.status <= 299) {
            *answer = rep.body;
            return 0;
        }
        log_info("service call refused", "rid=%s subject=%s status=%d", j->rid, c->subject,
                 rep.status);
        proxy_pass_through(msg, &rep, &tmp);
        if (!tmp.body) {
            char m[160];
            snprintf(m, sizeof m, "call '%s' answered %d", c->key, rep.status);
            int st = tmp.status;
            proxy_answer_error(&tmp, st, "upstream_error", m);
        }
        compose_reply_clear(&rep);
    }
    if (c->optional) {
        proxy_answer_clear(&tmp);
        return 0;
    }
    proxy_answer_clear(ans);
    *ans = tmp;
    return -1;
}

/* ---- the job ------------------------------------------------------------------------------ */

static void proxy_round_end(proxy_job *j);

/* Frees the job, then tells its owner: the last thing a job does. */
static void proxy_finish(proxy_job *j)
{
    proxy_done_fn done = j->done;
    void *ud = j->ud;
    for (size_t i = 0; i < ROUTES_MAX_CALLS; i++) {
        json_decref(j->answers[i]);
        bus_msg_destroy(j->slots[i].reply);
    }
    json_decref(j->ctx);
    json_decref(j->envelope);
    free(j);
    done(ud);
}

static void proxy_unref(proxy_job *j)
{
    if (atomic_fetch_sub_explicit(&j->refs, 1, memory_order_acq_rel) == 1) proxy_round_end(j);
}

static void proxy_on_reply(int result, bus_msg *reply, void *ud)
{
    proxy_slot *sl = ud;
    sl->result = result;
    sl->reply = reply;
    proxy_unref(sl->job);
}

/* Builds call i's data into *data (malloc'd) or fills the job's answer: 1 built, 0 skipped
 * (an optional call that cannot be built), -1 failed. */
static int proxy_build(proxy_job *j, size_t i, char **data, size_t *len)
{
    const route_call *c = &j->route->calls[i];
    tmpl_error te;
    json_t *req = compose_request(j->envelope, c->request, j->ctx, &te);
    if (!req) {
        if (c->optional && j->route->mode != ROUTE_SINGLE) return 0;
        proxy_build_failed(j, c, &te, j->ans);
        return -1;
    }
    *data = proxy_dump(req, len);
    json_decref(req);
    if (!*data) {
        proxy_answer_error(j->ans, 500, "internal_error", "out of memory");
        return -1;
    }
    if (*len > BUS_MAX_PAYLOAD) {
        free(*data);
        *data = NULL;
        proxy_answer_error(j->ans, 413, "payload_too_large", "request too large for the bus");
        return -1;
    }
    return 1;
}

/* Sends the round's calls (first..first+n-1, each built first: a required call that cannot
 * be built fails the job before anything is sent) and drops the sender's reference. */
static void proxy_round(proxy_job *j, size_t first, size_t n)
{
    char *data[ROUTES_MAX_CALLS] = {0};
    size_t len[ROUTES_MAX_CALLS] = {0};
    size_t calls[ROUTES_MAX_CALLS];
    size_t m = 0;
    for (size_t i = first; i < first + n; i++) {
        int rc = proxy_build(j, i, &data[m], &len[m]);
        if (rc < 0) {
            for (size_t k = 0; k < m; k++) free(data[k]);
            proxy_finish(j);
            return;
        }
        if (rc == 0) {
            if (j->route->mode == ROUTE_SEQUENCE)
                json_object_set_new(j->ctx, j->route->calls[i].key, json_null());
            continue;
        }
        calls[m++] = i;
    }
    j->nslot = m;
    atomic_store(&j->refs, m + 1);
    long long left = j->deadline - proxy_now_ms();
    for (size_t k = 0; k < m; k++) {
        proxy_slot *sl = &j->slots[k];
        *sl = (proxy_slot){j, calls[k], -ETIMEDOUT, NULL};
        int rc = left <= 0 ? -ETIMEDOUT
                           : bus_request_async_hdrs(j->b, j->route->calls[calls[k]].subject,
                                                    data[k], len[k], j->hdrs, j->nhdr, (int)left,
                                                    proxy_on_reply, sl);
        free(data[k]);
        if (rc != 0) {
            sl->result = rc;
            proxy_unref(j); /* its callback will not run; never the last reference here */
        }
    }
    proxy_unref(j);
}

/* Every call of the round has an outcome: judge it, then the next round or the answer. */
static void proxy_round_end(proxy_job *j)
{
    const route *r = j->route;
    if (r->mode == ROUTE_SINGLE) {
        proxy_slot *sl = &j->slots[0];
        compose_reply rep = {0};
        if (sl->result != 0)
            proxy_bus_failed(j, &r->calls[0], sl->result, j->ans);
        else if (proxy_read_reply(j, &r->calls[0], sl->reply, &rep, j->ans, 0) == 0)
            proxy_pass_through(sl->reply, &rep, j->ans);
        compose_reply_clear(&rep);
        proxy_finish(j);
        return;
    }
    for (size_t k = 0; k < j->nslot; k++) {
        proxy_slot *sl = &j->slots[k];
        const route_call *c = &r->calls[sl->call];
        int bad = proxy_judge(j, c, sl->result, sl->reply, &j->answers[sl->call], j->ans);
        bus_msg_destroy(sl->reply);
        sl->reply = NULL;
        if (bad) {
            proxy_finish(j);
            return;
        }
        /* later steps read this answer as ${key...}; a failed optional step reads as null */
        if (r->mode == ROUTE_SEQUENCE) {
            json_t *a = j->answers[sl->call];
            json_object_set(j->ctx, c->key, a ? a : json_null());
        }
    }
    j->nslot = 0;
    if (r->mode == ROUTE_SEQUENCE && j->step < r->ncalls) {
        size_t i = j->step++;
        proxy_round(j, i, 1);
        return;
    }
    json_t *merged = compose_merge(r, j->answers);
    size_t len = 0;
    char *text = merged ? proxy_dump(merged, &len) : NULL;
    json_decref(merged);
    if (!text) {
        proxy_answer_error(j->ans, 500, "internal_error", "out of memory");
    } else {
        proxy_answer_clear(j->ans);
        j->ans->status = 200;
        j->ans->body = text;
        j->ans->len = len;
    }
    proxy_finish(j);
}

void proxy_start(bus *b, const proxy_call *pc, proxy_answer *ans, proxy_done_fn done, void *ud)
{
    const route *r = pc->route;
    memset(ans, 0, sizeof *ans);
    proxy_job *j = calloc(1, sizeof *j);
    if (!j || pc->nhdr > PROXY_MAX_HDRS) {
        free(j);
        proxy_answer_error(ans, 500, "internal_error", "out of memory");
        done(ud);
        return;
    }
    j->b = b;
    j->route = r;
    j->envelope = json_incref((json_t *)pc->envelope);
    j->user = pc->user;
    j->rid = pc->rid;
    memcpy(j->hdrs, pc->hdrs, pc->nhdr * sizeof *pc->hdrs);
    j->nhdr = pc->nhdr;
    j->ans = ans;
    j->done = done;
    j->ud = ud;
    j->deadline = proxy_now_ms() + r->timeout_ms;
    if ((r->mode != ROUTE_SINGLE || r->calls[0].request) &&
        !(j->ctx = compose_context(pc->envelope, pc->user))) {
        proxy_answer_error(ans, 500, "internal_error", "out of memory");
        proxy_finish(j);
        return;
    }
    if (r->mode == ROUTE_SEQUENCE) {
        j->step = 1;
        proxy_round(j, 0, 1);
    } else {
        proxy_round(j, 0, r->ncalls);
    }
}
