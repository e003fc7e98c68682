/* service.c - auth's NATS subscriptions: request in, grants.c, reply and events out. */
#include "service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "contract.h"
#include "log.h"
#include "metrics.h"

enum { MAX_SUBS = 2 * 64 + 2 };

struct handler {
    authsvc *svc;
    enum grant_op op;
    metric *latency;
};

struct authsvc {
    bus *b;
    const grant_cfg *g;
    struct handler h[4];
    bus_sub *subs[MAX_SUBS];
    size_t nsubs;
    metric *publish_errors;
};

static double elapsed(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Runs on a nats.c delivery thread; owns msg. */
static void on_request(bus_msg *msg, void *ud)
{
    struct handler *h = ud;
    authsvc *s = h->svc;
    grant_reply rep;
    struct timespec t0;
    const char *reply = bus_msg_reply(msg);
    char code[8];
    bus_hdr hdrs[2];
    size_t nhdr = 0;
    int rc;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    grant_handle(s->g, h->op, bus_msg_data(msg), bus_msg_len(msg), (long)time(NULL),
                 bus_msg_header(msg, HDR_REQUEST_ID), &rep);

    /* The event first: by the time the client reads 200, edges are being told. */
    if (rep.event) {
        rc = bus_publish(s->b, SUBJ_AUTH_REVOKED, NULL, rep.event, strlen(rep.event), NULL, 0);
        if (rc < 0) {
            metric_inc(s->publish_errors);
            log_error("auth.revoked not published", "err=\"%s\"", sc_strerror(rc));
        }
    }
    if (reply && *reply) {
        snprintf(code, sizeof code, "%d", rep.status);
        hdrs[nhdr++] = (bus_hdr){HDR_STATUS, code};
        if (rep.http_header) hdrs[nhdr++] = (bus_hdr){HDR_HTTP_HEADER, rep.http_header};
        rc = bus_respond(s->b, msg, rep.body ? rep.body : "", rep.body ? strlen(rep.body) : 0, hdrs,
                         nhdr);
        if (rc < 0)
            log_warn("reply failed", "subject=%s err=\"%s\"", bus_msg_subject(msg),
                     sc_strerror(rc));
    } else {
        log_debug("request without reply subject", "subject=%s", bus_msg_subject(msg));
    }
    if (rep.body) explicit_bzero(rep.body, strlen(rep.body)); /* may hold tokens */
    grant_reply_clear(&rep);
    metric_observe(h->latency, elapsed(&t0));
    bus_msg_destroy(msg);
}

static int sub(authsvc *s, const char *subject, struct handler *h)
{
    int rc;
    if (s->nsubs == MAX_SUBS) return -EINVAL;
    rc = bus_subscribe(s->b, subject, QUEUE_AUTH, on_request, h, &s->subs[s->nsubs]);
    if (rc == 0) s->nsubs++;
    return rc;
}

int authsvc_start(authsvc **out, bus *b, const grant_cfg *g, int workers)
{
    static const char *const names[4] = {"token", "refresh", "revoke", "jwks"};
    static const char help[] = "Time to answer an auth request, by subject.";
    authsvc *s;
    char labels[32];
    int rc = 0;

    *out = NULL;
    if (workers < 1) workers = 1;
    if (workers > 64) workers = 64;
    s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    s->b = b;
    s->g = g;
    grant_init_metrics();
    s->publish_errors = metrics_counter("sc_auth_event_publish_errors_total", NULL,
                                        "auth.revoked events that could not be published.");
    for (int i = 0; i < 4; i++) {
        s->h[i].svc = s;
        s->h[i].op = (enum grant_op)i;
        snprintf(labels, sizeof labels, "op=\"%s\"", names[i]);
        s->h[i].latency = metrics_histogram("sc_auth_request_seconds", labels, help);
    }
    for (int i = 0; rc == 0 && i < workers; i++) {
        rc = sub(s, SUBJ_AUTH_TOKEN, &s->h[GRANT_TOKEN]);
        if (rc == 0) rc = sub(s, SUBJ_AUTH_REFRESH, &s->h[GRANT_REFRESH]);
    }
    if (rc == 0) rc = sub(s, SUBJ_AUTH_REVOKE, &s->h[GRANT_REVOKE]);
    if (rc == 0) rc = sub(s, SUBJ_AUTH_JWKS, &s->h[GRANT_JWKS]);
    if (rc < 0) {
        authsvc_stop(s);
        return rc;
    }
    /* ready means answering: the server has the subscriptions before auth says it is up
     * (a request right after /readyz said 200 must not find no responders) */
    if (bus_flush(b, 2000) != 0)
        log_warn("auth subscriptions not confirmed by NATS yet", "timeout_ms=%d", 2000);
    log_info("auth subscribed", "queue=%s workers=%d", QUEUE_AUTH, workers);
    *out = s;
    return 0;
}

void authsvc_stop(authsvc *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->nsubs; i++) bus_unsubscribe(s->subs[i]);
    free(s);
}
