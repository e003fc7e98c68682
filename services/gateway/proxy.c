/* proxy.c - a route's calls over the bus, and the HTTP answer they make; see proxy.h.
 *
 * Failure rules (docs/GATEWAY.md): a bus failure maps to 503/504/502; a reply that is not
 * JSON or has a bad status is 502; in a composition the first failing required call (in
 * route order) decides the answer - its own status and body when the service answered with
 * a non-2xx status - while a failing optional call contributes null. */
#include "proxy.h"

#include "contract.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
static void proxy_build_failed(const proxy_call *pc, const route_call *c, const tmpl_error *e,
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
        log_warn("request not built", "rid=%s subject=%s reason=\"%s\"", pc->rid, c->subject,
                 e->msg);
        proxy_answer_error(ans, 502, "bad_gateway", msg);
    }
}

static void proxy_bus_failed(const proxy_call *pc, const route_call *c, int rc, proxy_answer *ans)
{
    const char *code;
    char msg[256];
    int status = compose_bus_status(rc, &code);
    log_warn("service call failed", "rid=%s subject=%s err=\"%s\"", pc->rid, c->subject,
             sc_strerror(rc));
    if (c->key[0])
        snprintf(msg, sizeof msg, "call '%s': %s", c->key, sc_strerror(rc));
    else
        snprintf(msg, sizeof msg, "%s", sc_strerror(rc));
    proxy_answer_error(ans, status, code, msg);
}

/* Reads one reply. Returns 0 with *rep filled (caller clears), or -1 with ans set to 502. */
static int proxy_read_reply(const proxy_call *pc, const route_call *c, const bus_msg *msg,
                            compose_reply *rep, proxy_answer *ans)
{
    char why[128];
    int dropped = 0;
    if (compose_reply_parse(bus_msg_data(msg), bus_msg_len(msg), bus_msg_header(msg, HDR_STATUS),
                            bus_msg_header(msg, HDR_HTTP_HEADER), rep, &dropped, why,
                            sizeof why) != 0) {
        char m[256];
        log_warn("malformed answer", "rid=%s subject=%s reason=\"%s\"", pc->rid, c->subject, why);
        if (c->key[0])
            snprintf(m, sizeof m, "call '%s': malformed answer from service", c->key);
        else
            snprintf(m, sizeof m, "malformed answer from service");
        proxy_answer_error(ans, 502, "bad_gateway", m);
        return -1;
    }
    if (dropped) log_warn("pass-through header dropped", "rid=%s subject=%s", pc->rid, c->subject);
    return 0;
}

/* The service's own answer, as it sent it (data already checked to be JSON or empty). */
static void proxy_pass_through(const bus_msg *msg, const compose_reply *rep, proxy_answer *ans)
{
    memset(ans, 0, sizeof *ans);
    ans->status = rep->status;
    if (rep->body) {
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

static void proxy_single(bus *b, const proxy_call *pc, proxy_answer *ans)
{
    const route *r = pc->route;
    const route_call *c = &r->calls[0];
    tmpl_error te;
    json_t *ctx = NULL, *req = NULL;
    char *data = NULL;
    size_t len = 0;
    bus_msg *msg = NULL;
    compose_reply rep = {0};

    if (c->request && !(ctx = compose_context(pc->envelope, pc->user))) {
        proxy_answer_error(ans, 500, "internal_error", "out of memory");
        goto done;
    }
    if (!(req = compose_request(pc->envelope, c->request, ctx, &te))) {
        proxy_build_failed(pc, c, &te, ans);
        goto done;
    }
    if (!(data = proxy_dump(req, &len))) {
        proxy_answer_error(ans, 500, "internal_error", "out of memory");
        goto done;
    }
    if (len > BUS_MAX_PAYLOAD) {
        proxy_answer_error(ans, 413, "payload_too_large", "request too large for the bus");
        goto done;
    }
    int rc = bus_request(b, c->subject, data, len, pc->hdrs, pc->nhdr, r->timeout_ms, &msg);
    if (rc != 0) {
        proxy_bus_failed(pc, c, rc, ans);
        goto done;
    }
    if (proxy_read_reply(pc, c, msg, &rep, ans) != 0) goto done;
    proxy_pass_through(msg, &rep, ans);
done:
    compose_reply_clear(&rep);
    bus_msg_destroy(msg);
    free(data);
    json_decref(req);
    json_decref(ctx);
}

/* Judges one composed call's outcome. On success *answer gets the reply's body (a new
 * reference, NULL for an empty reply) and 0 is returned. On failure of a required call ans
 * gets the route's answer and -1 is returned; an optional call's failure is logged and
 * returns 0 with *answer NULL. */
static int proxy_judge(const proxy_call *pc, const route_call *c, int rc, const bus_msg *msg,
                       json_t **answer, proxy_answer *ans)
{
    compose_reply rep = {0};
    proxy_answer tmp = {0};
    *answer = NULL;
    if (rc != 0) {
        proxy_bus_failed(pc, c, rc, &tmp);
    } else if (proxy_read_reply(pc, c, msg, &rep, &tmp) == 0) {
        if (rep.status >= 200 && rep.status <= 299) {
            *answer = rep.body;
            return 0;
        }
        log_info("service call refused", "rid=%s subject=%s status=%d", pc->rid, c->subject,
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

static void proxy_parallel(bus *b, const proxy_call *pc, json_t *ctx, json_t **answers,
                           proxy_answer *ans, int *failed)
{
    const route *r = pc->route;
    bus_req reqs[ROUTES_MAX_CALLS];
    size_t slot[ROUTES_MAX_CALLS]; /* reqs index -> call index */
    char *data[ROUTES_MAX_CALLS] = {0};
    bus_msg *replies[ROUTES_MAX_CALLS] = {0};
    int results[ROUTES_MAX_CALLS] = {0};
    size_t n = 0;

    for (size_t i = 0; i < r->ncalls; i++) {
        const route_call *c = &r->calls[i];
        tmpl_error te;
        size_t len = 0;
        json_t *req = compose_request(pc->envelope, c->request, ctx, &te);
        if (!req) {
            if (c->optional) continue;
            proxy_build_failed(pc, c, &te, ans);
            goto fail;
        }
        data[n] = proxy_dump(req, &len);
        json_decref(req);
        if (!data[n]) {
            proxy_answer_error(ans, 500, "internal_error", "out of memory");
            goto fail;
        }
        if (len > BUS_MAX_PAYLOAD) {
            proxy_answer_error(ans, 413, "payload_too_large", "request too large for the bus");
            n++;
            goto fail;
        }
        reqs[n] = (bus_req){c->subject, data[n], len, pc->hdrs, pc->nhdr};
        slot[n++] = i;
    }
    if (n > 0) {
        int rc = bus_request_many(b, reqs, n, r->timeout_ms, replies, results);
        if (rc != 0) {
            proxy_bus_failed(pc, &r->calls[slot[0]], rc, ans);
            goto fail;
        }
    }
    for (size_t k = 0; k < n; k++) {
        const route_call *c = &r->calls[slot[k]];
        if (proxy_judge(pc, c, results[k], replies[k], &answers[slot[k]], ans) != 0) goto fail;
    }
    goto done;
fail:
    *failed = 1;
done:
    for (size_t k = 0; k < n; k++) {
        bus_msg_destroy(replies[k]);
        free(data[k]);
    }
}

static void proxy_sequence(bus *b, const proxy_call *pc, json_t *ctx, json_t **answers,
                           proxy_answer *ans, int *failed)
{
    const route *r = pc->route;
    long long deadline = proxy_now_ms() + r->timeout_ms;
    for (size_t i = 0; i < r->ncalls; i++) {
        const route_call *c = &r->calls[i];
        tmpl_error te;
        size_t len = 0;
        bus_msg *msg = NULL;
        int rc;
        json_t *req = compose_request(pc->envelope, c->request, ctx, &te);
        if (!req) {
            if (!c->optional) {
                proxy_build_failed(pc, c, &te, ans);
                *failed = 1;
                return;
            }
            json_object_set_new(ctx, c->key, json_null());
            continue;
        }
        char *data = proxy_dump(req, &len);
        json_decref(req);
        if (!data) {
            proxy_answer_error(ans, 500, "internal_error", "out of memory");
            *failed = 1;
            return;
        }
        if (len > BUS_MAX_PAYLOAD) {
            free(data);
            proxy_answer_error(ans, 413, "payload_too_large", "request too large for the bus");
            *failed = 1;
            return;
        }
        long long left = deadline - proxy_now_ms();
        if (left <= 0)
            rc = -ETIMEDOUT;
        else
            rc = bus_request(b, c->subject, data, len, pc->hdrs, pc->nhdr, (int)left, &msg);
        free(data);
        int bad = proxy_judge(pc, c, rc, msg, &answers[i], ans);
        bus_msg_destroy(msg);
        if (bad) {
            *failed = 1;
            return;
        }
        /* later steps read this answer as ${key...}; a failed optional step reads as null */
        json_object_set(ctx, c->key, answers[i] ? answers[i] : json_null());
    }
}

static void proxy_compose(bus *b, const proxy_call *pc, proxy_answer *ans)
{
    const route *r = pc->route;
    json_t *answers[ROUTES_MAX_CALLS] = {0};
    int failed = 0;
    json_t *ctx = compose_context(pc->envelope, pc->user);
    if (!ctx) {
        proxy_answer_error(ans, 500, "internal_error", "out of memory");
        return;
    }
    if (r->mode == ROUTE_PARALLEL)
        proxy_parallel(b, pc, ctx, answers, ans, &failed);
    else
        proxy_sequence(b, pc, ctx, answers, ans, &failed);
    if (!failed) {
        json_t *merged = compose_merge(r, answers);
        size_t len = 0;
        char *text = merged ? proxy_dump(merged, &len) : NULL;
        json_decref(merged);
        if (!text) {
            proxy_answer_error(ans, 500, "internal_error", "out of memory");
        } else {
            proxy_answer_clear(ans);
            ans->status = 200;
            ans->body = text;
            ans->len = len;
        }
    }
    for (size_t i = 0; i < ROUTES_MAX_CALLS; i++) json_decref(answers[i]);
    json_decref(ctx);
}

void proxy_run(bus *b, const proxy_call *pc, proxy_answer *ans)
{
    memset(ans, 0, sizeof *ans);
    if (pc->route->mode == ROUTE_SINGLE)
        proxy_single(b, pc, ans);
    else
        proxy_compose(b, pc, ans);
}
