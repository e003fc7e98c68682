/* gw.c - token endpoint and orders API calls through the gateway. */
#include "gw.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "http.h"

static int net_error(int rc, const char *gateway, const net_tls *tls, char *err, size_t errlen)
{
    if (rc == -EINVAL) {
        snprintf(err, errlen, "bad gateway URL %s", gateway);
        return -EINVAL;
    }
    if (rc == NET_ETLS_VERIFY || rc == NET_ETLS) {
        snprintf(err, errlen, "gateway %s: %s", gateway, tls->error);
        return rc;
    }
    if (rc == -EPROTO || rc == -EMSGSIZE) {
        snprintf(err, errlen, "gateway %s sent an answer that is not HTTP or too large", gateway);
        return -EPROTO;
    }
    snprintf(err, errlen, "gateway %s unreachable: %s", gateway,
             rc == -ETIMEDOUT      ? "timed out"
             : rc == -EINTR        ? "interrupted"
             : rc == -EHOSTUNREACH ? "host not found or unreachable"
                                   : strerror(-rc));
    return -EHOSTUNREACH;
}

/* An RFC 6749 §5.2 or gateway error body: error code and description, when present. */
static void error_body(const http_response *r, char *code, size_t ccap, char *desc, size_t dcap)
{
    code[0] = desc[0] = '\0';
    json_t *o = json_loadb(r->body, r->body_len, 0, NULL);
    const char *c = json_string_value(json_object_get(o, "error"));
    const char *d = json_string_value(json_object_get(o, "error_description"));
    if (!d) d = json_string_value(json_object_get(o, "message"));
    if (c) snprintf(code, ccap, "%s", c);
    if (d) snprintf(desc, dcap, "%s", d);
    json_decref(o);
}

static int token_call(const char *gateway, const char *form, tok_set *t, net_tls *tls, char *err,
                      size_t errlen)
{
    http_response r;
    int rc = http_request(gateway, "POST", "/auth/token", "application/x-www-form-urlencoded", form,
                          strlen(form), NULL, GW_TIMEOUT_MS, tls, &r);
    if (rc < 0) return net_error(rc, gateway, tls, err, errlen);
    if (r.status == 200) {
        rc = tok_from_grant(t, r.body, r.body_len) == 0 ? SC_OK : -EPROTO;
        if (rc != SC_OK) snprintf(err, errlen, "the token endpoint's answer is malformed");
    } else {
        char code[64], desc[160];
        error_body(&r, code, sizeof code, desc, sizeof desc);
        if (strcmp(code, "invalid_grant") == 0 || strcmp(code, "invalid_client") == 0 ||
            r.status == 401) {
            snprintf(err, errlen, "%s", code[0] ? code : "unauthorized");
            rc = -EACCES;
        } else {
            snprintf(err, errlen, "token endpoint answered %d%s%s%s%s", r.status,
                     code[0] ? " " : "", code, desc[0] ? ": " : "", desc);
            rc = -EPROTO;
        }
    }
    explicit_bzero(r.body, r.body_len);
    http_response_clear(&r);
    return rc;
}

int gw_login(const char *gateway, const char *user, const char *password, tok_set *t, net_tls *tls,
             char *err, size_t errlen)
{
    char form[2048] = "";
    int rc = -EINVAL;
    if (http_form_append(form, sizeof form, "grant_type", "password") < 0 ||
        http_form_append(form, sizeof form, "username", user) < 0 ||
        http_form_append(form, sizeof form, "password", password) < 0)
        snprintf(err, errlen, "user name or password too long");
    else
        rc = token_call(gateway, form, t, tls, err, errlen);
    explicit_bzero(form, sizeof form);
    return rc;
}

int gw_refresh(tok_set *t, net_tls *tls, char *err, size_t errlen)
{
    char form[TOK_REFRESH_MAX * 3 + 64] = "";
    int rc = -EINVAL;
    if (t->refresh_token[0] == '\0' || t->gateway[0] == '\0') {
        snprintf(err, errlen, "no refresh token or gateway in the token file");
        return -EACCES;
    }
    if (http_form_append(form, sizeof form, "grant_type", "refresh_token") < 0 ||
        http_form_append(form, sizeof form, "refresh_token", t->refresh_token) < 0)
        snprintf(err, errlen, "refresh token too long");
    else
        rc = token_call(t->gateway, form, t, tls, err, errlen);
    explicit_bzero(form, sizeof form);
    return rc;
}

int gw_order(const tok_set *t, const char *symbol, const char *qty, const char *side, net_tls *tls,
             char *order_id, size_t idcap, char *err, size_t errlen)
{
    json_t *q = json_loads(qty, JSON_DECODE_ANY, NULL);
    json_t *body = json_is_number(q)
                       ? json_pack("{s:s, s:O, s:s}", "symbol", symbol, "qty", q, "side", side)
                       : NULL;
    json_decref(q);
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(body);
    if (!text) {
        snprintf(err, errlen, "bad order (qty must be a number)");
        return -EINVAL;
    }
    http_response r;
    int rc = http_request(t->gateway, "POST", "/api/orders", "application/json", text, strlen(text),
                          t->access_token, GW_TIMEOUT_MS, tls, &r);
    free(text);
    if (rc < 0) return net_error(rc, t->gateway, tls, err, errlen);
    json_t *o = json_loadb(r.body, r.body_len, 0, NULL);
    const char *id = json_string_value(json_object_get(o, "order_id"));
    json_t *idn = json_object_get(o, "order_id");
    if ((r.status == 202 || r.status == 200) && (id || json_is_integer(idn))) {
        if (id)
            snprintf(order_id, idcap, "%s", id);
        else
            snprintf(order_id, idcap, "%" JSON_INTEGER_FORMAT, json_integer_value(idn));
        rc = SC_OK;
    } else {
        char code[64], desc[160];
        error_body(&r, code, sizeof code, desc, sizeof desc);
        if (r.status == 401) {
            snprintf(err, errlen, "the gateway refused the access token (401)");
            rc = -EACCES;
        } else {
            snprintf(err, errlen, "order refused: HTTP %d%s%s%s%s", r.status, code[0] ? " " : "",
                     code, desc[0] ? ": " : "", desc);
            rc = -EPROTO;
        }
    }
    json_decref(o);
    http_response_clear(&r);
    return rc;
}

int gw_client_token(const char *gateway, const char *client, const char *secret, char *token,
                    size_t cap, net_tls *tls, char *err, size_t errlen)
{
    char form[2048] = "";
    if (http_form_append(form, sizeof form, "grant_type", "client_credentials") < 0 ||
        http_form_append(form, sizeof form, "client_id", client) < 0 ||
        http_form_append(form, sizeof form, "client_secret", secret) < 0) {
        explicit_bzero(form, sizeof form);
        snprintf(err, errlen, "client id or secret too long");
        return -EINVAL;
    }
    http_response r;
    int rc = http_request(gateway, "POST", "/auth/token", "application/x-www-form-urlencoded", form,
                          strlen(form), NULL, GW_TIMEOUT_MS, tls, &r);
    explicit_bzero(form, sizeof form);
    if (rc < 0) return net_error(rc, gateway, tls, err, errlen);
    json_t *o = json_loadb(r.body, r.body_len, 0, NULL);
    const char *at = json_string_value(json_object_get(o, "access_token"));
    if (r.status == 200 && at && strlen(at) < cap) {
        snprintf(token, cap, "%s", at);
        rc = SC_OK;
    } else {
        char code[64], desc[160];
        error_body(&r, code, sizeof code, desc, sizeof desc);
        snprintf(err, errlen, "client credentials refused: HTTP %d%s%s%s%s", r.status,
                 code[0] ? " " : "", code, desc[0] ? ": " : "", desc);
        rc = r.status == 401 || r.status == 400 ? -EACCES : -EPROTO;
    }
    json_decref(o);
    explicit_bzero(r.body, r.body_len);
    http_response_clear(&r);
    return rc;
}

int gw_api(const char *gateway, const char *token, const char *method, const char *path,
           const char *json, net_tls *tls, http_response *r, char *err, size_t errlen)
{
    int rc = http_request(gateway, method, path, json ? "application/json" : NULL, json,
                          json ? strlen(json) : 0, token, GW_TIMEOUT_MS, tls, r);
    return rc < 0 ? net_error(rc, gateway, tls, err, errlen) : SC_OK;
}
