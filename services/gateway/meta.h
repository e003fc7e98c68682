/* meta.h - what the gateway reads from and adds to HTTP request heads, with no I/O: request
 * ids, W3C trace context, bearer credentials, media types and CORS origin lists. Only the
 * *_new functions draw random bytes (libcrypto). */
#ifndef GW_META_H
#define GW_META_H

#include <stddef.h>

#define META_RID_MAX 64         /* longest accepted incoming X-Request-Id */
#define META_TRACEPARENT_LEN 55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */

/* 1 when s is 1..META_RID_MAX bytes of [A-Za-z0-9._:-] (safe in headers and logs). */
int meta_request_id_valid(const char *s);
/* Writes 32 lowercase hex characters of fresh randomness and a NUL into out. */
void meta_request_id_new(char out[33]);

/* Parses a W3C traceparent (version 00 exactly 55 bytes; a later version at least 55 bytes,
 * with '-' after them if longer; version ff invalid; lowercase hex; ids not all zero).
 * Returns 0 and copies trace id (32 hex + NUL) and flags (2 hex + NUL), or -1. */
int meta_traceparent_parse(const char *s, char trace_id[33], char flags[3]);
/* Writes the traceparent to send on: the incoming trace continued with a new span id when
 * incoming parses, else a new trace (flags 01). Returns 1 when continued, 0 when new. */
int meta_traceparent_next(const char *incoming, char out[META_TRACEPARENT_LEN + 1]);
/* Builds "00-<trace>-<span>-<flags>" from parts (pure, for tests). */
void meta_traceparent_format(const char trace_id[33], const char span_id[17], const char flags[3],
                             char out[META_TRACEPARENT_LEN + 1]);

enum meta_bearer_result {
    META_BEARER_OK = 0,
    META_BEARER_NONE = -1,    /* no Authorization header, or another scheme */
    META_BEARER_INVALID = -2, /* "Bearer" with a missing or malformed b64token */
};
/* Finds the token in an Authorization header value (scheme case-insensitive, RFC 6750 §2.1
 * b64token syntax). On META_BEARER_OK *tok points into header and *len is its length. */
int meta_bearer(const char *header, const char **tok, size_t *len);
/* 1 when a token's scope claim (RFC 9068 2.2.3: scope names separated by spaces) names
 * want, else 0 (claim NULL: 0). Pure. */
int meta_scope_has(const char *claim, const char *want);

enum meta_ctype { META_CT_NONE = 0, META_CT_JSON, META_CT_FORM, META_CT_OTHER };
/* Classifies a Content-Type value: application/json or any application/...+json, and
 * application/x-www-form-urlencoded, parameters (charset) ignored, case-insensitive. A
 * charset other than utf-8 (or us-ascii) makes it META_CT_OTHER. NULL/empty: META_CT_NONE. */
enum meta_ctype meta_content_type(const char *value);

/* 1 when origin is in list: comma-separated origins ("scheme://host[:port]", compared
 * exactly, whitespace around commas ignored) or "*" for any. NULL/empty origin: 0. */
int meta_origin_allowed(const char *list, const char *origin);

/* Parses a Content-Length value: 0 and *out, or -1 for anything but 1..19 digits. */
int meta_content_length(const char *value, unsigned long long *out);

#endif
