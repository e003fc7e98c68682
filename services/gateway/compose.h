/* compose.h - the request/reply envelope between the gateway and services (contract.h),
 * built and read without I/O: request data for each call of a route (envelope plus rendered
 * template), interpretation of a service's reply (status, pass-through header, JSON body),
 * merging of composed answers and the gateway's own JSON error bodies. Pure. */
#ifndef GW_COMPOSE_H
#define GW_COMPOSE_H

#include <jansson.h>
#include <stddef.h>

#include "routes.h"
#include "tmpl.h"

#define COMPOSE_HDR_NAME_MAX 32
#define COMPOSE_HDR_VALUE_MAX 1024

/* The request envelope {"method","path","params","query","body"} (contract.h). query and
 * body are borrowed (a reference is taken; NULL: {} and null). Returns a new object or NULL
 * on allocation failure. */
json_t *compose_envelope(const char *method, const char *path, const route_match *m, json_t *query,
                         json_t *body);

/* The context templates are rendered against: the envelope's fields plus "user" (when user
 * is not NULL). Answers of sequence steps are added under their keys by the caller. New
 * object (shallow: values shared with the envelope) or NULL. */
json_t *compose_context(const json_t *envelope, const char *user);

/* Data for one call: a shallow copy of the envelope whose top-level fields are replaced by
 * those of the rendered template (tmpl NULL: the envelope as is). New object, or NULL with
 * *e filled (e.root names the root of an unresolved reference). */
json_t *compose_request(const json_t *envelope, const json_t *tmpl, const json_t *ctx,
                        tmpl_error *e);

/* A service's reply, read. */
typedef struct compose_reply {
    int status;                          /* 200..599 */
    json_t *body;                        /* parsed data, NULL when the data was empty */
    int has_body;                        /* the data was not empty (and is JSON) */
    char hdr_name[COMPOSE_HDR_NAME_MAX]; /* pass-through header, "" if none */
    char hdr_value[COMPOSE_HDR_VALUE_MAX];
} compose_reply;

/* Sidecast-Status value: "200".."599" (three digits, nothing else) -> the number, else -1
 * (NULL or empty: 200). 1xx is refused: it cannot be a final HTTP answer. */
int compose_status_parse(const char *s);

/* Sidecast-Http-Header value "Name: value": 0 when Name is on the allow-list
 * (Cache-Control, Location, WWW-Authenticate, Retry-After; any case, written back in canonical
 * case) and value is 1..COMPOSE_HDR_VALUE_MAX-1 bytes of visible ASCII, space or tab; else -1. */
int compose_http_header_parse(const char *s, char *name, size_t namelen, char *value,
                              size_t valuelen);

/* Reads a reply: status header (see compose_status_parse), optional pass-through header (a
 * bad one is dropped and reported through *hdr_dropped), data: empty, or one JSON value.
 * Returns 0 with *out filled (compose_reply_clear releases it), or -1 with a reason in err
 * (bad status, data that is not JSON): the gateway answers 502. */
int compose_reply_parse(const char *data, size_t len, const char *status_hdr, const char *http_hdr,
                        compose_reply *out, int *hdr_dropped, char *err, size_t errlen);
void compose_reply_clear(compose_reply *r);
/* The same checks without building the body (out->body stays NULL, has_body tells): for a
 * reply passed through as it came, where parsing it cost a quarter of the gateway's
 * instructions per request. compose_json_valid decides what is JSON. */
int compose_reply_check(const char *data, size_t len, const char *status_hdr, const char *http_hdr,
                        compose_reply *out, int *hdr_dropped, char *err, size_t errlen);

/* 1 when s[0..n) is one JSON value (RFC 8259, whitespace around it allowed) under jansson's
 * rules: valid UTF-8, no \u0000, surrogates paired, nesting at most COMPOSE_JSON_MAX_DEPTH;
 * numbers are checked for form only (jansson also refuses integers past 64 bits). Pure, no
 * allocation. */
#define COMPOSE_JSON_MAX_DEPTH 2048
int compose_json_valid(const char *s, size_t n);

/* {"key1": answer1, ...} in route order; answers[i] NULL stands for null. New object or
 * NULL. answers are borrowed. */
json_t *compose_merge(const route *r, json_t *const *answers);

/* {"error":code,"message":message} + "\n" as malloc'd text (caller frees) and its length;
 * NULL on allocation failure. message is any UTF-8 text (escaped here). */
char *compose_error_body(const char *code, const char *message, size_t *len);

/* The gateway's answer for a failed bus request (bus.h codes): 503 for no responders or no
 * connection, 504 for a timeout, else 502. *code gets the JSON error code. */
int compose_bus_status(int bus_rc, const char **code);

#endif
