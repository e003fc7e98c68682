/* routes.h - the gateway's routing table: parser/validator and path matcher.
 *
 * The table is a JSON document (format in docs/GATEWAY.md):
 *   {"routes":[{"method":"GET","path":"/api/orders/{id}","auth":"bearer",
 *               "subject":"svc.orders.get","timeout_ms":3000}, ...]}
 * A route either names one "subject" or has a "compose" block of up to ROUTES_MAX_CALLS
 * calls run in parallel or in sequence, whose answers are merged under their keys.
 *
 * Pure: routes_parse() and routes_match() do no I/O and no logging; a parsed table is
 * read-only and may be shared by every thread. */
#ifndef GW_ROUTES_H
#define GW_ROUTES_H

#include <errno.h>
#include <jansson.h>
#include <stddef.h>

#include "err.h"

#define ROUTES_MAX 256
#define ROUTES_MAX_CALLS 8
#define ROUTES_MAX_PATH 512    /* bytes of a path template and of a matched request path */
#define ROUTES_MAX_PARAMS 16   /* {param}s in one path */
#define ROUTES_MAX_SEGMENTS 64 /* '/'-separated segments of a path */
#define ROUTES_MAX_NAME 63     /* bytes of a param name or a call key */
#define ROUTES_MAX_SUBJECT 128 /* bytes of a NATS subject */
#define ROUTES_MAX_SCOPE 128   /* bytes of a route's required scope */
#define ROUTES_MAX_FILE (1024 * 1024)
#define ROUTES_DEFAULT_TIMEOUT_MS 5000
#define ROUTES_MAX_TIMEOUT_MS 60000

enum route_auth { ROUTE_AUTH_PUBLIC = 0, ROUTE_AUTH_BEARER = 1 };
enum route_mode { ROUTE_SINGLE = 0, ROUTE_PARALLEL = 1, ROUTE_SEQUENCE = 2 };

typedef struct route_call {
    char key[ROUTES_MAX_NAME + 1]; /* "" for a single-subject route */
    char subject[ROUTES_MAX_SUBJECT + 1];
    json_t *request; /* template (see tmpl.h) or NULL: the plain envelope */
    int optional;    /* a failure yields null instead of failing the route */
} route_call;

typedef struct route_seg {
    unsigned short off, len; /* literal: bytes of route.path; param: index in route.params */
    unsigned char is_param;
} route_seg;

typedef struct route {
    size_t index;   /* position in the file, 0-based */
    char method[8]; /* GET, POST, PUT, PATCH or DELETE */
    char path[ROUTES_MAX_PATH + 1];
    enum route_auth auth;
    char scope[ROUTES_MAX_SCOPE + 1]; /* bearer: the token's scope claim must name it ("": none) */
    enum route_mode mode;
    int timeout_ms; /* whole route, every call included */
    size_t ncalls;  /* 1 for ROUTE_SINGLE */
    route_call calls[ROUTES_MAX_CALLS];
    size_t nsegs, nparams;
    route_seg segs[ROUTES_MAX_SEGMENTS];
    char params[ROUTES_MAX_PARAMS][ROUTES_MAX_NAME + 1];
} route;

typedef struct routes {
    size_t n;
    route *v;
} routes;

/* Parses and validates a table from text[0..len). Returns 0 and *out (release with
 * routes_destroy), or -1 with a message in err such as "route 3: path: '{' not closed". */
int routes_parse(const char *text, size_t len, routes **out, char *err, size_t errlen);
/* Reads a file (at most ROUTES_MAX_FILE bytes) and parses it; err names the file. */
int routes_load(const char *file, routes **out, char *err, size_t errlen);
void routes_destroy(routes *rt); /* accepts NULL */

/* routes_match: 0 (SC_OK) or -ENOENT (no route has this path: 404), -EOPNOTSUPP (the path
 * exists for other methods, see allow: 405), SC_EMALFORMED (malformed %-escape, NUL,
 * invalid UTF-8 or a dot segment: 400). */

typedef struct route_match {
    const route *route;
    size_t nparams;
    const char *names[ROUTES_MAX_PARAMS];  /* borrowed from the route */
    const char *values[ROUTES_MAX_PARAMS]; /* decoded, pointing into buf */
    char allow[64];                        /* on -EOPNOTSUPP/FOUND: "GET, POST, OPTIONS" */
    char buf[ROUTES_MAX_PATH + ROUTES_MAX_SEGMENTS + 1];
} route_match;

/* Matches a raw (still %-encoded) request path, without its query string, against the
 * table. Literal segments beat {param}s at the first position where candidates differ;
 * among equals the first in the table wins. Fills m (no allocation). */
int routes_match(const routes *rt, const char *method, const char *path, route_match *m);

/* 1 when s is a NATS subject of [A-Za-z0-9_-] tokens separated by single dots. */
int routes_subject_valid(const char *s);

#endif
