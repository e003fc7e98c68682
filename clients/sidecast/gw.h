/* gw.h - the gateway calls the sidecast client makes: the token endpoint (password and
 * refresh_token grants) and the orders API. Blocking, each bounded by GW_TIMEOUT_MS.
 *
 * Errors come back as enum gw_err with a one-line explanation in err (never a token or a
 * password). Prefix gw_. */
#ifndef SIDECAST_GW_H
#define SIDECAST_GW_H

#include <errno.h>
#include <stddef.h>

#include "err.h"
#include "net.h"

#include "http.h"
#include "tokens.h"

#define GW_TIMEOUT_MS 10000

/* Failures, each with a one-line explanation in err: -EACCES (credentials refused:
 * invalid_grant, invalid_client, 401), -EHOSTUNREACH (no answer: refused, unresolvable,
 * timed out), NET_ETLS_VERIFY / NET_ETLS (an https gateway whose certificate was refused,
 * or no TLS handshake: err names the gateway and OpenSSL's reason), -EPROTO (an answer, but
 * an error or not what the API promises), -EINVAL (a bad URL or argument).
 *
 * tls: the process's TLS settings, used for an https:// gateway (see net_conn_open). */

/* grant_type=password. On SC_OK, t holds the new tokens (t->user and t->gateway are the
 * caller's to set). */
int gw_login(const char *gateway, const char *user, const char *password, tok_set *t, net_tls *tls,
             char *err, size_t errlen);

/* grant_type=refresh_token with t->refresh_token against t->gateway; on SC_OK t holds the
 * rotated tokens (the caller saves them). */
int gw_refresh(tok_set *t, net_tls *tls, char *err, size_t errlen);

/* POST /api/orders {"symbol","qty","side"} with t's access token. qty is JSON number text
 * (checked by the caller). On SC_OK (202 or 200 with an order_id), order_id holds it. */
int gw_order(const tok_set *t, const char *symbol, const char *qty, const char *side, net_tls *tls,
             char *order_id, size_t idcap, char *err, size_t errlen);

/* grant_type=client_credentials for a back end's calls of the server API: the access token
 * into token (cap bytes; the caller wipes it). */
int gw_client_token(const char *gateway, const char *client, const char *secret, char *token,
                    size_t cap, net_tls *tls, char *err, size_t errlen);

/* One call of the server API (docs/openapi.yaml): method path with a JSON body (or NULL) and
 * the bearer token. On SC_OK, r holds the answer whatever its status (the caller clears it). */
int gw_api(const char *gateway, const char *token, const char *method, const char *path,
           const char *json, net_tls *tls, http_response *r, char *err, size_t errlen);

#endif
