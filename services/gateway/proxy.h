/* proxy.h - runs a matched route over the bus: one request/reply, or a composition of
 * calls (all at once, or a sequence whose steps read earlier answers), and turns the outcome
 * into an HTTP answer. Asynchronous: no thread waits for a service (bus_request_async); the
 * answer is final at most the route's timeout_ms (plus the bus's timer granularity) after
 * the start. */
#ifndef GW_PROXY_H
#define GW_PROXY_H

#include <jansson.h>
#include <stddef.h>

#include "bus.h"
#include "compose.h"
#include "routes.h"

typedef struct proxy_call {
    const route *route;
    const json_t *envelope; /* compose_envelope() */
    const char *user;       /* the token's sub, or NULL on public routes */
    const bus_hdr *hdrs;    /* identity, request id, traceparent */
    size_t nhdr;
    const char *rid; /* for log lines */
} proxy_call;

typedef struct proxy_answer {
    int status;
    char *body; /* malloc'd (NULL: no body); JSON when non-NULL */
    size_t len;
    char hdr_name[COMPOSE_HDR_NAME_MAX]; /* pass-through header, "" if none */
    char hdr_value[COMPOSE_HDR_VALUE_MAX];
    const char *error; /* the gateway's error code when it made the answer itself, else NULL */
} proxy_answer;

typedef void (*proxy_done_fn)(void *ud);

/* Starts pc's route; done(ud) runs exactly once when *ans is filled (release it with
 * proxy_answer_clear): on a nats.c thread or the bus's timer thread, or inside proxy_start
 * when the route failed before anything was sent. Always produces an answer: failures become
 * 4xx/5xx JSON errors; logs a warning for each failed call. pc is copied, but the strings it
 * points to (user, rid, header values) and ans must stay valid until done runs; done is the
 * job's last act (it touches nothing of pc or ans afterwards). */
void proxy_start(bus *b, const proxy_call *pc, proxy_answer *ans, proxy_done_fn done, void *ud);
void proxy_answer_clear(proxy_answer *ans);

/* Fills ans with a gateway error {"error":code,"message":message}. */
void proxy_answer_error(proxy_answer *ans, int status, const char *code, const char *message);

#endif
