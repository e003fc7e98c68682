/* grants.h - the OAuth 2.0 logic of auth: token endpoint (RFC 6749 password, refresh_token
 * and client_credentials grants), revocation (RFC 7009) and JWKS, from request bytes to
 * reply status, JSON body and the auth.revoked event to publish.
 *
 * No bus code here: the caller (service.c) feeds request data and sends what comes out, so
 * unit tests drive grant_handle() directly. Safe to call from several threads at once on
 * one grant_cfg (everything it points to is immutable or thread-safe). */
#ifndef SC_AUTH_GRANTS_H
#define SC_AUTH_GRANTS_H

#include <jansson.h>
#include <stddef.h>

#include "signkeys.h"
#include "store.h"
#include "token.h"
#include "users.h"

typedef struct grant_cfg {
    const users *users;
    signkeys *keys; /* signs; its public keys recognise our access tokens in auth.revoke */
    rtstore *store; /* NULL: refresh tokens disabled */
    const char *issuer;
    const char *audience;
    const char *ws_url;
    long access_ttl;   /* seconds */
    size_t max_body;   /* largest request accepted, bytes */
    long login_max;    /* failed checks per name in the window, then 429 (0: off) */
    long login_window; /* seconds */
} grant_cfg;

enum grant_op { GRANT_TOKEN, GRANT_REFRESH, GRANT_REVOKE, GRANT_JWKS };

typedef struct grant_reply {
    int status;              /* HTTP status for the Sidecast-Status header */
    char *body;              /* JSON text, malloc'd */
    const char *http_header; /* "Name: value" for Sidecast-Http-Header (static), or NULL */
    char *event;             /* JSON to publish on auth.revoked, malloc'd, or NULL */
} grant_reply;

/* Handles one request (data: len bytes of JSON, the gateway envelope or a bare body
 * object). now: seconds since the epoch. reqid: request id for log lines (may be NULL;
 * sanitised). Always fills *out (free with grant_reply_clear); returns 0, or -1 when even
 * the error answer could not be built (out->body NULL: answer 500 without a body). */
/* The 200 answer of a token grant, RFC 6749 5.1: {"access_token", "token_type":"Bearer",
 * "expires_in", "ws_url"[, "refresh_token"][, "scope" when non-empty]} as compact JSON, in
 * that order. malloc'd (the caller wipes and frees it: it holds tokens), or NULL. Pure. */
char *grant_answer_json(const char *access_token, long expires_in, const char *ws_url,
                        const char *refresh, const char *scope);

int grant_handle(const grant_cfg *g, enum grant_op op, const char *data, size_t len, long now,
                 const char *reqid, grant_reply *out);
void grant_reply_clear(grant_reply *r);
/* Registers auth's metrics (so they show as 0 before the first request). Idempotent. */
void grant_init_metrics(void);

/* ---- pure helpers, exposed for unit tests ------------------------------------------- */

/* Parses request bytes and finds the parameter object: the envelope's "body" (null or
 * absent body in an envelope: an empty object) or, without "method"/"body" keys, the whole
 * object. Duplicate JSON keys are rejected. Returns 0 and a new reference in *params, or -1
 * with a description (safe to send to the client) in err. */
int grant_parse_params(const char *data, size_t len, size_t max, json_t **params, char *err,
                       size_t errlen);

enum { GRANT_PARAM_OK = 0, GRANT_PARAM_ABSENT = 1, GRANT_PARAM_BAD = -1 };
/* One string parameter: GRANT_PARAM_OK and *out (owned by params), GRANT_PARAM_ABSENT when
 * missing or empty (RFC 6749 §3.1: "sent without a value" = omitted), GRANT_PARAM_BAD when
 * repeated (an array) or not a string. */
int grant_param(const json_t *params, const char *name, const char **out);
/* 1 when a boolean-ish parameter is set: JSON true, or a string true/1/yes/on. */
int grant_flag(const json_t *params, const char *name);

/* RFC 6749 §5.2 error body {"error","error_description"}: malloc'd JSON or NULL. */
char *grant_error_json(const char *error, const char *description);

#endif
