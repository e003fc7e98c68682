/* compose.c - request envelopes, reply interpretation and merging; see compose.h. */
#include "compose.h"

#include "bus.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

json_t *compose_envelope(const char *method, const char *path, const route_match *m, json_t *query,
                         json_t *body)
{
    json_t *params = json_object();
    json_t *env = json_object();
    if (!params || !env) goto error;
    for (size_t i = 0; m && i < m->nparams; i++) {
        json_t *v = json_string(m->values[i]);
        if (!v || json_object_set_new(params, m->names[i], v) != 0) goto error;
    }
    json_t *q = query ? json_incref(query) : json_object();
    json_t *b = body ? json_incref(body) : json_null();
    json_t *mv = json_string(method), *pv = json_string(path);
    int bad = !q || !mv || !pv;
    bad |= json_object_set_new(env, "method", mv) != 0;
    bad |= json_object_set_new(env, "path", pv) != 0;
    bad |= json_object_set(env, "params", params) != 0;
    bad |= json_object_set_new(env, "query", q) != 0;
    bad |= json_object_set_new(env, "body", b) != 0;
    if (bad) goto error;
    json_decref(params);
    return env;
error:
    json_decref(params);
    json_decref(env);
    return NULL;
}

json_t *compose_context(const json_t *envelope, const char *user)
{
    json_t *ctx = json_copy((json_t *)envelope);
    if (!ctx) return NULL;
    if (user) {
        json_t *u = json_string(user);
        if (!u || json_object_set_new(ctx, "user", u) != 0) {
            json_decref(ctx);
            return NULL;
        }
    }
    return ctx;
}

json_t *compose_request(const json_t *envelope, const json_t *tmpl, const json_t *ctx,
                        tmpl_error *e)
{
    json_t *over = NULL;
    json_t *req = json_copy((json_t *)envelope);
    e->msg[0] = e->root[0] = '\0';
    if (!req) {
        snprintf(e->msg, sizeof e->msg, "out of memory");
        return NULL;
    }
    if (!tmpl) return req;
    over = tmpl_render(tmpl, ctx, e);
    if (!over) goto error;
    if (!json_is_object(over)) {
        snprintf(e->msg, sizeof e->msg, "request template did not render to an object");
        goto error;
    }
    if (json_object_update(req, over) != 0) {
        snprintf(e->msg, sizeof e->msg, "out of memory");
        goto error;
    }
    json_decref(over);
    return req;
error:
    json_decref(over);
    json_decref(req);
    return NULL;
}

int compose_status_parse(const char *s)
{
    if (!s || !*s) return 200;
    if (strlen(s) != 3) return -1;
    for (int i = 0; i < 3; i++)
        if (s[i] < '0' || s[i] > '9') return -1;
    int v = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    return v >= 200 && v <= 599 ? v : -1;
}

static const char *const compose_passthrough[] = {"Cache-Control", "Location", "WWW-Authenticate",
                                                  "Retry-After"};

int compose_http_header_parse(const char *s, char *name, size_t namelen, char *value,
                              size_t valuelen)
{
    if (!s) return -1;
    const char *colon = strchr(s, ':');
    if (!colon) return -1;
    size_t nlen = (size_t)(colon - s);
    const char *canon = NULL;
    for (size_t i = 0; i < sizeof compose_passthrough / sizeof compose_passthrough[0]; i++) {
        if (strlen(compose_passthrough[i]) == nlen &&
            strncasecmp(compose_passthrough[i], s, nlen) == 0)
            canon = compose_passthrough[i];
    }
    if (!canon || strlen(canon) + 1 > namelen) return -1;
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t') v++;
    size_t vlen = strlen(v);
    while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) vlen--;
    if (vlen == 0 || vlen + 1 > valuelen || vlen + 1 > COMPOSE_HDR_VALUE_MAX) return -1;
    for (size_t i = 0; i < vlen; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c != '\t' && (c < 0x20 || c > 0x7e)) return -1; /* no CR/LF: no header injection */
    }
    strcpy(name, canon);
    memcpy(value, v, vlen);
    value[vlen] = '\0';
    return 0;
}

/* ---- a strict JSON check without building the value (compose_json_valid) ---------------- */

static void cj_ws(const char *s, size_t n, size_t *i)
{
    while (*i < n && (s[*i] == ' ' || s[*i] == '\t' || s[*i] == '\r' || s[*i] == '\n')) (*i)++;
}

static int cj_hex4(const char *s, size_t n, size_t i, unsigned *v)
{
    if (n - i < 4) return -1;
    *v = 0;
    for (size_t k = 0; k < 4; k++) {
        char c = s[i + k];
        unsigned d = (c >= '0' && c <= '9')   ? (unsigned)(c - '0')
                     : (c >= 'a' && c <= 'f') ? (unsigned)(c - 'a' + 10)
                     : (c >= 'A' && c <= 'F') ? (unsigned)(c - 'A' + 10)
                                              : 16u;
        if (d > 15) return -1;
        *v = *v * 16 + d;
    }
    return 0;
}

/* A string from its opening quote; *i ends past the closing one. UTF-8 is checked (no
 * overlong forms, no surrogates, at most U+10FFFF); \u escapes must pair surrogates and
 * must not be \u0000 (jansson's rules without JSON_ALLOW_NUL). */
static int cj_string(const char *s, size_t n, size_t *i)
{
    size_t k = *i + 1;
    while (k < n) {
        unsigned char c = (unsigned char)s[k];
        if (c == '"') {
            *i = k + 1;
            return 0;
        }
        if (c < 0x20) return -1;
        if (c == '\\') {
            if (++k >= n) return -1;
            char e = s[k];
            if (e == 'u') {
                unsigned u;
                if (cj_hex4(s, n, k + 1, &u) != 0 || u == 0) return -1;
                k += 5;
                if (u >= 0xDC00 && u <= 0xDFFF) return -1;
                if (u >= 0xD800 && u <= 0xDBFF) {
                    unsigned lo;
                    if (n - k < 6 || s[k] != '\\' || s[k + 1] != 'u' ||
                        cj_hex4(s, n, k + 2, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF)
                        return -1;
                    k += 6;
                }
                continue;
            }
            if (!strchr("\"\\/bfnrt", e) || e == '\0') return -1;
            k++;
            continue;
        }
        if (c < 0x80) {
            k++;
            continue;
        }
        size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
        if (len == 0 || c > 0xF4 || n - k < len) return -1;
        unsigned cp = c & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
        for (size_t m = 1; m < len; m++) {
            unsigned char cc = (unsigned char)s[k + m];
            if ((cc & 0xC0) != 0x80) return -1;
            cp = (cp << 6) | (cc & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return -1;
        k += len;
    }
    return -1;
}

static int cj_digits(const char *s, size_t n, size_t *i)
{
    size_t start = *i;
    while (*i < n && s[*i] >= '0' && s[*i] <= '9') (*i)++;
    return *i > start ? 0 : -1;
}

static int cj_number(const char *s, size_t n, size_t *i)
{
    if (s[*i] == '-') (*i)++;
    if (*i < n && s[*i] == '0')
        (*i)++;
    else if (cj_digits(s, n, i) != 0)
        return -1;
    if (*i < n && s[*i] == '.') {
        (*i)++;
        if (cj_digits(s, n, i) != 0) return -1;
    }
    if (*i < n && (s[*i] == 'e' || s[*i] == 'E')) {
        (*i)++;
        if (*i < n && (s[*i] == '+' || s[*i] == '-')) (*i)++;
        if (cj_digits(s, n, i) != 0) return -1;
    }
    return 0;
}

static int cj_value(const char *s, size_t n, size_t *i, int depth)
{
    cj_ws(s, n, i);
    if (*i >= n) return -1;
    char c = s[*i];
    if (c == '"') return cj_string(s, n, i);
    if (c == '-' || (c >= '0' && c <= '9')) return cj_number(s, n, i);
    static const char *const lits[] = {"true", "false", "null"};
    for (size_t k = 0; k < 3; k++) {
        size_t l = strlen(lits[k]);
        if (n - *i >= l && memcmp(s + *i, lits[k], l) == 0) {
            *i += l;
            return 0;
        }
    }
    if (c != '[' && c != '{') return -1;
    if (depth >= COMPOSE_JSON_MAX_DEPTH) return -1;
    char close = c == '[' ? ']' : '}';
    (*i)++;
    cj_ws(s, n, i);
    if (*i < n && s[*i] == close) {
        (*i)++;
        return 0;
    }
    for (;;) {
        if (close == '}') {
            cj_ws(s, n, i);
            if (*i >= n || s[*i] != '"' || cj_string(s, n, i) != 0) return -1;
            cj_ws(s, n, i);
            if (*i >= n || s[*i] != ':') return -1;
            (*i)++;
        }
        if (cj_value(s, n, i, depth + 1) != 0) return -1;
        cj_ws(s, n, i);
        if (*i >= n) return -1;
        if (s[*i] == close) {
            (*i)++;
            return 0;
        }
        if (s[*i] != ',') return -1;
        (*i)++;
    }
}

int compose_json_valid(const char *s, size_t n)
{
    size_t i = 0;
    if (cj_value(s, n, &i, 0) != 0) return 0;
    cj_ws(s, n, &i);
    return i == n;
}

static int compose_reply_read(const char *data, size_t len, const char *status_hdr,
                              const char *http_hdr, compose_reply *out, int *hdr_dropped, char *err,
                              size_t errlen, int build)
{
    memset(out, 0, sizeof *out);
    *hdr_dropped = 0;
    out->status = compose_status_parse(status_hdr);
    if (out->status < 0) {
        snprintf(err, errlen, "bad Sidecast-Status header");
        return -1;
    }
    if (http_hdr && compose_http_header_parse(http_hdr, out->hdr_name, sizeof out->hdr_name,
                                              out->hdr_value, sizeof out->hdr_value) != 0) {
        out->hdr_name[0] = out->hdr_value[0] = '\0';
        *hdr_dropped = 1;
    }
    size_t i = 0;
    while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n'))
        i++;
    if (i == len) return 0; /* empty: no body */
    out->has_body = 1;
    if (build) {
        json_error_t je;
        out->body = json_loadb(data, len, JSON_DECODE_ANY, &je);
    }
    if (build ? !out->body : !compose_json_valid(data, len)) {
        out->has_body = 0;
        snprintf(err, errlen, "answer is not JSON");
        return -1;
    }
    return 0;
}

int compose_reply_parse(const char *data, size_t len, const char *status_hdr, const char *http_hdr,
                        compose_reply *out, int *hdr_dropped, char *err, size_t errlen)
{
    return compose_reply_read(data, len, status_hdr, http_hdr, out, hdr_dropped, err, errlen, 1);
}

int compose_reply_check(const char *data, size_t len, const char *status_hdr, const char *http_hdr,
                        compose_reply *out, int *hdr_dropped, char *err, size_t errlen)
{
    return compose_reply_read(data, len, status_hdr, http_hdr, out, hdr_dropped, err, errlen, 0);
}

void compose_reply_clear(compose_reply *r)
{
    if (!r) return;
    json_decref(r->body);
    r->body = NULL;
}

json_t *compose_merge(const route *r, json_t *const *answers)
{
    json_t *o = json_object();
    if (!o) return NULL;
    for (size_t i = 0; i < r->ncalls; i++) {
        json_t *v = answers[i] ? json_incref(answers[i]) : json_null();
        if (json_object_set_new(o, r->calls[i].key, v) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

char *compose_error_body(const char *code, const char *message, size_t *len)
{
    json_t *o = json_pack("{s:s, s:s}", "error", code, "message", message ? message : "");
    if (!o) {
        /* message was not UTF-8: drop it rather than fail the answer */
        o = json_pack("{s:s, s:s}", "error", code, "message", "");
        if (!o) return NULL;
    }
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!text) return NULL;
    size_t n = strlen(text);
    char *out = realloc(text, n + 2);
    if (!out) {
        free(text);
        return NULL;
    }
    out[n] = '\n';
    out[n + 1] = '\0';
    *len = n + 1;
    return out;
}

int compose_bus_status(int bus_rc, const char **code)
{
    switch (bus_rc) {
    case SC_ENORESPONDERS:
    case -ENOTCONN: *code = "service_unavailable"; return 503;
    case -ETIMEDOUT: *code = "gateway_timeout"; return 504;
    default: *code = "bad_gateway"; return 502;
    }
}
