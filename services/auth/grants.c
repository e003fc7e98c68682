/* grants.c - token endpoint, revocation and JWKS (RFC 6749, RFC 7009, RFC 7517). */
#include "grants.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"

#define HDR_NO_STORE "Cache-Control: no-store"
#define HDR_JWKS_CACHE "Cache-Control: public, max-age=300"
#define HDR_RETRY "Retry-After: 1"
#define HDR_BASIC "WWW-Authenticate: Basic realm=\"sidecast\""

/* ---- metrics ------------------------------------------------------------------------ */

static struct {
    metric *issued_password, *issued_refresh, *issued_client;
    metric *reuse, *refresh_skipped, *revoked_family, *revoked_user, *throttled;
    metric *sign_cpu_ns, *hash_cpu_ns;
} m;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_init(void)
{
    static const char issued[] = "Access tokens issued, by grant type.";
    m.issued_password = metrics_counter("sc_auth_tokens_issued_total", "grant=\"password\"",
                                        issued);
    m.issued_refresh = metrics_counter("sc_auth_tokens_issued_total", "grant=\"refresh_token\"",
                                       issued);
    m.issued_client = metrics_counter("sc_auth_tokens_issued_total", "grant=\"client_credentials\"",
                                      issued);
    m.reuse = metrics_counter("sc_auth_refresh_reuse_total", NULL,
                              "Rotated refresh tokens presented again (family revoked).");
    m.refresh_skipped =
        metrics_counter("sc_auth_refresh_unavailable_total", NULL,
                        "Password grants answered without a refresh token (Redis down).");
    m.revoked_family = metrics_counter("sc_auth_revocations_total", "scope=\"family\"",
                                       "Revocations, by scope.");
    m.revoked_user = metrics_counter("sc_auth_revocations_total", "scope=\"user\"",
                                     "Revocations, by scope.");
    m.throttled = metrics_counter("sc_auth_login_throttled_total", NULL,
                                  "Logins refused (429 slow_down) after too many failures.");
    /* What the two costs auth cannot trim take, so that a bench can put the rest of a
     * grant beside them (bench/authgoals.sh): thread CPU time, not wall-clock. */
    m.sign_cpu_ns = metrics_counter("sc_auth_sign_cpu_nanoseconds_total", NULL,
                                    "Thread CPU time spent signing access tokens (libjwt).");
    m.hash_cpu_ns = metrics_counter("sc_auth_password_hash_cpu_nanoseconds_total", NULL,
                                    "Thread CPU time spent checking passwords and secrets.");
    static const char *const errors[] = {
        "invalid_request", "invalid_grant",           "invalid_client", "unsupported_grant_type",
        "invalid_scope",   "temporarily_unavailable", "server_error",   "slow_down"};
    for (size_t i = 0; i < sizeof errors / sizeof *errors; i++) {
        char labels[64];
        snprintf(labels, sizeof labels, "error=\"%s\"", errors[i]);
        metrics_counter("sc_auth_failures_total", labels,
                        "Failed auth requests, by OAuth error code.");
    }
}

void grant_init_metrics(void) { pthread_once(&metrics_once, metrics_init); }

static void count_failure(const char *error)
{
    char labels[64];
    snprintf(labels, sizeof labels, "error=\"%s\"", error);
    metric_inc(metrics_counter("sc_auth_failures_total", labels,
                               "Failed auth requests, by OAuth error code."));
}

/* This thread's CPU time in ns (0 if the clock fails: the counters then only undercount). */
static int64_t thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* users_verify, its CPU time counted (one crypt(3) of the file's scheme). */
static int verify_timed(const grant_cfg *g, enum users_kind kind, const char *name,
                        const char *secret, const users_entry **e)
{
    int64_t t0 = thread_cpu_ns();
    int rc = users_verify(g->users, kind, name, secret, e);
    metric_add(m.hash_cpu_ns, thread_cpu_ns() - t0);
    return rc;
}

/* ---- pure helpers ------------------------------------------------------------------- */

int grant_parse_params(const char *data, size_t len, size_t max, json_t **params, char *err,
                       size_t errlen)
{
    json_error_t jerr;
    json_t *root, *body;

    *params = NULL;
    if (max && len > max) {
        snprintf(err, errlen, "request too large");
        return -1;
    }
    root = json_loadb(data ? data : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        snprintf(err, errlen, "request is not valid JSON (or repeats a parameter)");
        return -1;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        snprintf(err, errlen, "request must be a JSON object");
        return -1;
    }
    if (json_object_get(root, "body") || json_object_get(root, "method")) {
        body = json_object_get(root, "body");
        if (!body || json_is_null(body)) {
            json_decref(root);
            *params = json_object();
            return *params ? 0 : -1;
        }
        if (!json_is_object(body)) {
            json_decref(root);
            snprintf(err, errlen,
                     "body must be application/x-www-form-urlencoded or a JSON object");
            return -1;
        }
        json_incref(body);
        json_decref(root);
        *params = body;
        return 0;
    }
    *params = root;
    return 0;
}

int grant_param(const json_t *params, const char *name, const char **out)
{
    json_t *v = json_object_get(params, name);

    *out = NULL;
    if (!v || json_is_null(v)) return GRANT_PARAM_ABSENT;
    if (!json_is_string(v)) return GRANT_PARAM_BAD;
    if (json_string_length(v) == 0) return GRANT_PARAM_ABSENT;
    if (strlen(json_string_value(v)) != json_string_length(v)) return GRANT_PARAM_BAD;
    *out = json_string_value(v);
    return GRANT_PARAM_OK;
}

int grant_flag(const json_t *params, const char *name)
{
    json_t *v = json_object_get(params, name);
    const char *s;

    if (json_is_true(v)) return 1;
    if (!json_is_string(v)) return 0;
    s = json_string_value(v);
    return strcmp(s, "true") == 0 || strcmp(s, "1") == 0 || strcmp(s, "yes") == 0 ||
           strcmp(s, "on") == 0;
}

char *grant_error_json(const char *error, const char *description)
{
    json_t *o = json_pack("{s:s, s:s}", "error", error, "error_description", description);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* Bytes a JSON string escape takes for c: 1 (as is), 2 (\" \\ \b \f \n \r \t) or 6 (\u00XX). */
static size_t json_esc_len(unsigned char c)
{
    if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t')
        return 2;
    return c < 0x20 ? 6 : 1;
}

/* The length of s written as a JSON string, quotes included. */
static size_t json_str_len(const char *s)
{
    size_t n = 2;
    for (; *s; s++) n += json_esc_len((unsigned char)*s);
    return n;
}

/* Writes s as a JSON string at out (json_str_len(s) bytes, no NUL), escaping as jansson does
 * (short escapes, \u00XX in upper case for other control characters, UTF-8 as is); returns
 * the end. Runs of plain bytes (all of a token) are copied whole. */
static char *json_put_str(char *out, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    *out++ = '"';
    while (*s) {
        size_t run = 0;
        while (s[run] && json_esc_len((unsigned char)s[run]) == 1) run++;
        memcpy(out, s, run);
        out += run;
        s += run;
        if (!*s) break;
        unsigned char c = (unsigned char)*s++;
        const char *sh = c == '"'    ? "\\\""
                         : c == '\\' ? "\\\\"
                         : c == '\b' ? "\\b"
                         : c == '\f' ? "\\f"
                         : c == '\n' ? "\\n"
                         : c == '\r' ? "\\r"
                         : c == '\t' ? "\\t"
                                     : NULL;
        if (sh) {
            *out++ = sh[0];
            *out++ = sh[1];
        } else {
            memcpy(out, "\\u00", 4);
            out[4] = hex[c >> 4];
            out[5] = hex[c & 15];
            out += 6;
        }
    }
    *out++ = '"';
    return out;
}

char *grant_answer_json(const char *access_token, long expires_in, const char *ws_url,
                        const char *refresh, const char *scope)
{
    static const char k_tok[] = "{\"access_token\":",
                      k_mid[] = ",\"token_type\":\"Bearer\",\"expires_in\":",
                      k_url[] = ",\"ws_url\":", k_rt[] = ",\"refresh_token\":",
                      k_scope[] = ",\"scope\":";
    char num[24];
    int nn = snprintf(num, sizeof num, "%ld", expires_in);
    if (nn < 0 || (size_t)nn >= sizeof num) return NULL;
    if (scope && !*scope) scope = NULL;
    /* the exact size: one pass to measure, one to write */
    size_t cap = sizeof k_tok + sizeof k_mid + sizeof k_url + sizeof k_rt + sizeof k_scope +
                 (size_t)nn + json_str_len(access_token) + json_str_len(ws_url) +
                 (refresh ? json_str_len(refresh) : 0) + (scope ? json_str_len(scope) : 0) + 2;
    char *buf = malloc(cap), *o = buf;
    if (!buf) return NULL;
#define PUT(lit, len)                                                                              \
    do {                                                                                           \
        memcpy(o, lit, len);                                                                       \
        o += len;                                                                                  \
    } while (0)
    PUT(k_tok, sizeof k_tok - 1);
    o = json_put_str(o, access_token);
    PUT(k_mid, sizeof k_mid - 1);
    PUT(num, (size_t)nn);
    PUT(k_url, sizeof k_url - 1);
    o = json_put_str(o, ws_url);
    if (refresh) {
        PUT(k_rt, sizeof k_rt - 1);
        o = json_put_str(o, refresh);
    }
    if (scope) {
        PUT(k_scope, sizeof k_scope - 1);
        o = json_put_str(o, scope);
    }
#undef PUT
    *o++ = '}';
    *o = '\0';
    return buf;
}

void grant_reply_clear(grant_reply *r)
{
    if (!r) return;
    free(r->body);
    free(r->event);
    memset(r, 0, sizeof *r);
}

/* ---- request context ---------------------------------------------------------------- */

typedef struct req {
    const grant_cfg *g;
    grant_reply *out;
    json_t *params;
    long now;
    int login_failures; /* failed logins counted for the name (rtstore_login_blocked) */
    char id[65];        /* sanitised request id, for logs */
    char who[72];       /* sanitised user/client name, for logs */
} req;

static void set_who(req *r, const char *name)
{
    /* users_name_valid bounds the name to USERS_NAME_MAX (< sizeof who) */
    const char *n = users_name_valid(name) ? name : "-";
    size_t len = strnlen(n, sizeof r->who - 1);
    memcpy(r->who, n, len);
    r->who[len] = '\0';
}

/* Fills an RFC 6749 §5.2 error answer. Always returns -1 (for `return fail(...)`). */
static int fail(req *r, int status, const char *error, const char *description)
{
    free(r->out->body);
    r->out->status = status;
    r->out->body = grant_error_json(error, description);
    r->out->http_header = status == 401 ? HDR_BASIC : status == 503 ? HDR_RETRY : HDR_NO_STORE;
    count_failure(error);
    return -1;
}

static int fail_internal(req *r, const char *what)
{
    log_error("request failed", "req=%s user=%s err=\"%s\"", r->id, r->who, what);
    return fail(r, 500, "server_error", "internal error");
}

static int fail_store(req *r, int rc)
{
    log_warn("token store unavailable", "req=%s user=%s err=\"%s\"", r->id, r->who,
             sc_strerror(rc));
    return fail(r, 503, "temporarily_unavailable",
                "the refresh token store is unavailable; retry later");
}

/* Reads one required string parameter; on absence or a bad value answers invalid_request. */
static int need(req *r, const char *name, const char **out)
{
    char d[128];
    switch (grant_param(r->params, name, out)) {
    case GRANT_PARAM_OK: return 0;
    case GRANT_PARAM_ABSENT:
        snprintf(d, sizeof d, "missing parameter: %s", name);
        return fail(r, 400, "invalid_request", d);
    default:
        snprintf(d, sizeof d, "parameter %s must be given once, as a string", name);
        return fail(r, 400, "invalid_request", d);
    }
}

/* Optional string parameter: 0 (value or NULL), or an invalid_request answer. */
static int optional(req *r, const char *name, const char **out)
{
    char d[128];
    if (grant_param(r->params, name, out) != GRANT_PARAM_BAD) return 0;
    snprintf(d, sizeof d, "parameter %s must be given once, as a string", name);
    return fail(r, 400, "invalid_request", d);
}

static json_t *strv_json(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        if (json_array_append_new(a, json_string(v[i])) < 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* Signs an access token and fills the 200 answer. refresh and fam may be NULL. */
static int issue(req *r, const char *sub, const users_perms *perms, const char *fam,
                 const char *refresh, const char *scope, const char *api_scope)
{
    const grant_cfg *g = r->g;
    char jti[33], *jwt = NULL;
    json_t *claims = NULL;
    int rc = -1;

    if (rtstore_random_hex(jti, 16) < 0) return fail_internal(r, "no randomness");
    claims = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:o, s:o}", "iss", g->issuer, "aud",
                       g->audience, "sub", sub, "iat", (json_int_t)r->now, "nbf",
                       (json_int_t)r->now, "exp", (json_int_t)(r->now + g->access_ttl), "jti", jti,
                       "sub_topics", strv_json(perms->sub, perms->nsub), "pub_topics",
                       strv_json(perms->pub, perms->npub));
    if (!claims) return fail_internal(r, "out of memory");
    if (fam && json_object_set_new(claims, "sid", json_string(fam)) < 0) goto nomem;
    /* API scopes (RFC 9068 2.2.3: space-separated), what a gateway route may require */
    if (api_scope && *api_scope && json_object_set_new(claims, "scope", json_string(api_scope)) < 0)
        goto nomem;
    int64_t t0 = thread_cpu_ns();
    rc = token_sign(signkeys_current(g->keys), claims, &jwt);
    metric_add(m.sign_cpu_ns, thread_cpu_ns() - t0);
    if (rc < 0) {
        log_error("token signing failed", "req=%s user=%s err=\"%s\"", r->id, r->who,
                  sc_strerror(rc));
        json_decref(claims);
        return fail(r, 500, "server_error", "internal error");
    }
    /* The answer written directly: through jansson it cost as much CPU as the rest of the
     * grant's JSON together (an object built, then dumped escaping the token byte by byte). */
    free(r->out->body);
    r->out->body = grant_answer_json(jwt, g->access_ttl, g->ws_url, refresh, scope);
    if (!r->out->body) goto nomem;
    r->out->status = 200;
    r->out->http_header = HDR_NO_STORE;
    rc = 0;
    goto done;
nomem:
    rc = fail_internal(r, "out of memory");
done:
    if (jwt) {
        explicit_bzero(jwt, strlen(jwt));
        free(jwt);
    }
    json_decref(claims);
    return rc;
}

/* Builds the auth.revoked event {"sub"[, "family"][, "reason"]}. */
static void set_event(req *r, const char *sub, const char *fam, const char *reason)
{
    json_t *e = json_pack("{s:s}", "sub", sub);
    if (!e) return;
    if (fam && *fam) json_object_set_new(e, "family", json_string(fam));
    if (reason) json_object_set_new(e, "reason", json_string(reason));
    free(r->out->event);
    r->out->event = json_dumps(e, JSON_COMPACT);
    json_decref(e);
}

/* The scope parameter narrowed against base; 0 or an invalid_scope answer. Its API scope
 * items (no "sub:"/"pub:") are users_api_scope's business, not the topics'. */
static int narrow(req *r, const users_perms *base, const char *scope, users_perms *out)
{
    char why[200], items[USERS_SCOPE_MAX + 1];
    if (scope && strlen(scope) > USERS_SCOPE_MAX)
        return fail(r, 400, "invalid_scope", "scope too long");
    if (scope) users_perms_items(scope, items);
    int rc = users_perms_narrow(base, scope ? items : NULL, out, why, sizeof why);
    if (rc == -EINVAL) return fail(r, 400, "invalid_scope", why);
    if (rc < 0) return fail_internal(r, "out of memory");
    return 0;
}

/* The token's API scopes for e (users_api_scope) into buf; 0 or an invalid_scope answer. */
static int api_scope(req *r, const users_entry *e, const char *scope, char *buf, size_t len)
{
    char why[200];
    if (users_api_scope(e, scope, buf, len, why, sizeof why) < 0)
        return fail(r, 400, "invalid_scope", why);
    return 0;
}

/* ---- grants ------------------------------------------------------------------------- */

/* Failed-login throttling (store.c): before the hash is checked, a name with
 * login_max failures in the window is refused with 429 slow_down, costing no crypt(3).
 * Redis unavailable: allowed (logged), like the rest of auth without Redis. */
static int throttled(req *r, char kind, const char *name)
{
    r->login_failures = 1;
    if (!r->g->store || r->g->login_max <= 0) return 0;
    long wait = rtstore_login_blocked(r->g->store, kind, name, r->g->login_max, &r->login_failures);
    if (wait < 0) {
        log_warn("login throttle unavailable", "req=%s err=\"%s\"", r->id, sc_strerror((int)wait));
        return 0;
    }
    if (wait == 0) return 0;
    char why[128];
    snprintf(why, sizeof why, "too many failed attempts for this name; retry in %ld s", wait);
    log_info("login throttled", "req=%s user=%s retry_s=%ld", r->id, r->who, wait);
    metric_inc(m.throttled);
    fail(r, 429, "slow_down", why);
    return -1;
}

static void login_result(req *r, char kind, const char *name, int ok)
{
    if (!r->g->store || r->g->login_max <= 0) return;
    if (ok && !r->login_failures) return; /* nothing to clear */
    int rc = ok ? rtstore_login_ok(r->g->store, kind, name)
                : rtstore_login_failed(r->g->store, kind, name, r->g->login_window);
    if (rc < 0) log_warn("login throttle not updated", "req=%s err=\"%s\"", r->id, sc_strerror(rc));
}

static int grant_password(req *r)
{
    const char *username, *password, *scope;
    const users_entry *e = NULL;
    users_perms perms = {0};
    char fam[STORE_FAMILY_LEN + 1], refresh[STORE_TOKEN_LEN + 1], stored[STORE_SCOPE_MAX + 1];
    int rc, have_refresh = 0;

    if (need(r, "username", &username) < 0 || need(r, "password", &password) < 0 ||
        optional(r, "scope", &scope) < 0)
        return -1;
    set_who(r, username);
    if (throttled(r, 'u', username) < 0) return -1;
    rc = verify_timed(r->g, USERS_USER, username, password, &e);
    if (rc < 0) return fail_internal(r, "out of memory");
    login_result(r, 'u', username, rc == 1);
    if (rc == 0) {
        log_info("login failed", "req=%s grant=password user=%s", r->id, r->who);
        return fail(r, 400, "invalid_grant", "invalid username or password");
    }
    char apis[USERS_SCOPE_MAX + 1];
    if (api_scope(r, e, scope, apis, sizeof apis) < 0) return -1;
    if (narrow(r, &e->perms, scope, &perms) < 0) return -1;
    if (users_perms_scope(&perms, stored, sizeof stored) < 0) stored[0] = '\0';
    if (!scope) stored[0] = '\0'; /* full permissions: follow later changes of the file */

    if (rtstore_random_hex(fam, 16) < 0) {
        users_perms_clear(&perms);
        return fail_internal(r, "no randomness");
    }
    if (r->g->store) {
        rc = rtstore_issue(r->g->store, e->name, fam, stored, refresh);
        if (rc == 0)
            have_refresh = 1;
        else {
            /* Degrade, do not fail: the access token needs no Redis. */
            log_warn("refresh token not issued", "req=%s user=%s err=\"%s\"", r->id, r->who,
                     sc_strerror(rc));
            metric_inc(m.refresh_skipped);
        }
    }
    rc = issue(r, e->name, &perms, have_refresh ? fam : NULL, have_refresh ? refresh : NULL, scope,
               apis);
    explicit_bzero(refresh, sizeof refresh);
    users_perms_clear(&perms);
    if (rc == 0) {
        metric_inc(m.issued_password);
        log_info("token issued", "req=%s grant=password user=%s refresh=%s", r->id, r->who,
                 have_refresh ? "yes" : "no");
    }
    return rc;
}

static int grant_client(req *r)
{
    const char *id, *secret, *scope;
    const users_entry *e = NULL;
    users_perms perms = {0};
    int rc;

    if (need(r, "client_id", &id) < 0 || need(r, "client_secret", &secret) < 0 ||
        optional(r, "scope", &scope) < 0)
        return -1;
    set_who(r, id);
    if (throttled(r, 'c', id) < 0) return -1;
    rc = verify_timed(r->g, USERS_CLIENT, id, secret, &e);
    if (rc < 0) return fail_internal(r, "out of memory");
    login_result(r, 'c', id, rc == 1);
    if (rc == 0) {
        log_info("login failed", "req=%s grant=client_credentials client=%s", r->id, r->who);
        return fail(r, 401, "invalid_client", "client authentication failed");
    }
    char apis[USERS_SCOPE_MAX + 1];
    if (api_scope(r, e, scope, apis, sizeof apis) < 0) return -1;
    if (narrow(r, &e->perms, scope, &perms) < 0) return -1;
    /* RFC 6749 §4.4.3: no refresh token for client credentials. */
    rc = issue(r, e->name, &perms, NULL, NULL, scope, apis);
    users_perms_clear(&perms);
    if (rc == 0) {
        metric_inc(m.issued_client);
        log_info("token issued", "req=%s grant=client_credentials client=%s", r->id, r->who);
    }
    return rc;
}

/* After a rotation that cannot be answered (user gone, permissions shrunk): kill the family
 * so that the successor nobody received is dead too. */
static void drop_family(req *r, const rtstore_info *info, const char *why)
{
    int rc = rtstore_revoke_family(r->g->store, info->fam);
    log_warn("refresh family revoked", "req=%s user=%s reason=\"%s\" stored=%s", r->id, r->who, why,
             rc == 0 ? "yes" : "no");
    metric_inc(m.revoked_family);
    set_event(r, info->sub, info->fam, "revoked");
}

static int grant_refresh(req *r)
{
    const char *old, *scope;
    rtstore_info info;
    const users_entry *e;
    users_perms base = {0}, perms = {0};
    char fresh[STORE_TOKEN_LEN + 1];
    int rc;

    if (need(r, "refresh_token", &old) < 0 || optional(r, "scope", &scope) < 0) return -1;
    if (scope) {
        /* Syntax first, before the rotation spends the token. */
        char *all[] = {">"};
        users_perms any = {all, 1, all, 1};
        if (narrow(r, &any, scope, &perms) < 0) return -1;
        users_perms_clear(&perms);
    }
    if (!r->g->store) return fail_store(r, -ENOTCONN);
    if (!rtstore_token_shape(old)) {
        log_info("refresh failed", "req=%s reason=malformed", r->id);
        return fail(r, 400, "invalid_grant", "refresh token is invalid or expired");
    }
    rc = rtstore_rotate(r->g->store, old, fresh, &info);
    if (rc < 0) return fail_store(r, rc);
    set_who(r, info.sub);
    switch (rc) {
    case RT_UNKNOWN:
        log_info("refresh failed", "req=%s reason=unknown", r->id);
        return fail(r, 400, "invalid_grant", "refresh token is invalid or expired");
    case RT_REVOKED:
        log_info("refresh failed", "req=%s user=%s reason=revoked", r->id, r->who);
        return fail(r, 400, "invalid_grant", "refresh token has been revoked");
    case RT_EXPIRED:
        log_info("refresh failed", "req=%s user=%s reason=session_lifetime", r->id, r->who);
        return fail(r, 400, "invalid_grant",
                    "the session has reached its maximum lifetime; log in again");
    case RT_REUSE:
        log_warn("refresh token reuse", "req=%s user=%s family=%s action=family_revoked", r->id,
                 r->who, info.fam);
        metric_inc(m.reuse);
        metric_inc(m.revoked_family);
        set_event(r, info.sub, info.fam, "reuse");
        return fail(r, 400, "invalid_grant",
                    "refresh token was already used; the session has been revoked");
    default: break;
    }

    e = users_find(r->g->users, USERS_USER, info.sub);
    if (!e || e->hash[0] != '$') { /* removed, or locked ("!") since the session began */
        drop_family(r, &info, e ? "user locked" : "user no longer exists");
        return fail(r, 400, "invalid_grant", "refresh token is invalid or expired");
    }
    /* The family's scope, against the user's permissions as they are now. */
    if (users_perms_narrow(&e->perms, info.scope, &base, NULL, 0) < 0) {
        drop_family(r, &info, "permissions changed");
        return fail(r, 400, "invalid_grant", "the permissions of this session have changed");
    }
    if (narrow(r, &base, scope, &perms) < 0) {
        /* The successor was never handed out: end the family rather than strand it. */
        drop_family(r, &info, "invalid scope on refresh");
        users_perms_clear(&base);
        return -1;
    }
    /* API scopes: the entry's, for a family that began without a scope parameter (it
     * follows the file); none for a narrowed one (its stored scope holds topics only) */
    char apis[USERS_SCOPE_MAX + 1] = "";
    if (!info.scope[0] && users_api_scope(e, NULL, apis, sizeof apis, NULL, 0) < 0) apis[0] = '\0';
    rc = issue(r, e->name, &perms, info.fam, fresh, scope, apis);
    explicit_bzero(fresh, sizeof fresh);
    users_perms_clear(&base);
    users_perms_clear(&perms);
    if (rc == 0) {
        metric_inc(m.issued_refresh);
        log_info("token refreshed", "req=%s user=%s", r->id, r->who);
    }
    return rc;
}

static int handle_token(req *r, int refresh_only)
{
    const char *gt;
    int rc = grant_param(r->params, "grant_type", &gt);

    if (rc == GRANT_PARAM_BAD)
        return fail(r, 400, "invalid_request", "parameter grant_type must be given once");
    if (rc == GRANT_PARAM_ABSENT) {
        if (refresh_only) return grant_refresh(r);
        return fail(r, 400, "invalid_request", "missing parameter: grant_type");
    }
    if (strcmp(gt, "refresh_token") == 0) return grant_refresh(r);
    if (refresh_only)
        return fail(r, 400, "unsupported_grant_type",
                    "this endpoint accepts only grant_type=refresh_token");
    if (strcmp(gt, "password") == 0) return grant_password(r);
    if (strcmp(gt, "client_credentials") == 0) return grant_client(r);
    return fail(r, 400, "unsupported_grant_type",
                "grant_type must be password, refresh_token or client_credentials");
}

/* ---- revocation (RFC 7009) ---------------------------------------------------------- */

static int revoke_access_token(req *r, const char *tok, int everywhere)
{
    token_policy pol = {r->g->issuer, r->g->audience, 30, 8192};
    token_claims c;
    const char *fam = NULL;
    json_t *sid;
    int rc;

    token_keyset *ours = signkeys_public(r->g->keys);
    rc = ours ? token_verify(ours, &pol, tok, r->now, &c) : SC_EKEY;
    token_keyset_destroy(ours);
    if (rc != SC_OK) {
        log_info("revoke ignored", "req=%s reason=\"not a valid access token\"", r->id);
        return 0; /* RFC 7009 §2.2: invalid tokens get 200 too */
    }
    set_who(r, c.sub);
    sid = json_object_get(c.payload, "sid");
    if (json_is_string(sid)) fam = json_string_value(sid);
    if (everywhere) {
        rc = r->g->store ? rtstore_revoke_user(r->g->store, c.sub) : -ENOTCONN;
        if (rc < 0) goto store_down;
        metric_inc(m.revoked_user);
        set_event(r, c.sub, NULL, "logout_all");
        log_info("sessions revoked", "req=%s user=%s scope=user families=%d", r->id, r->who, rc);
    } else if (fam) {
        rc = r->g->store ? rtstore_revoke_family(r->g->store, fam) : -ENOTCONN;
        if (rc < 0) goto store_down;
        metric_inc(m.revoked_family);
        set_event(r, c.sub, fam, "revoked");
        log_info("sessions revoked", "req=%s user=%s scope=family", r->id, r->who);
    } else {
        /* A client-credentials token: nothing stored; it simply expires. */
        log_info("revoke ignored", "req=%s user=%s reason=\"token without session\"", r->id,
                 r->who);
    }
    token_claims_clear(&c);
    return 0;
store_down:
    token_claims_clear(&c);
    return fail_store(r, rc);
}

static int handle_revoke(req *r)
{
    const char *tok, *hint;
    int everywhere, rc;
    rtstore_info info;

    if (need(r, "token", &tok) < 0 || optional(r, "token_type_hint", &hint) < 0) return -1;
    everywhere = grant_flag(r->params, "everywhere") || grant_flag(r->params, "logout_all");
    free(r->out->body);
    r->out->body = strdup("{}");
    r->out->status = 200;
    r->out->http_header = HDR_NO_STORE;
    if (!r->out->body) return fail_internal(r, "out of memory");

    /* The hint only saves a lookup (RFC 7009 §2.1); the token's shape decides. */
    if (strchr(tok, '.')) return revoke_access_token(r, tok, everywhere) < 0 ? -1 : 0;
    if (!rtstore_token_shape(tok)) {
        log_info("revoke ignored", "req=%s reason=\"unknown token\"", r->id);
        return 0;
    }
    if (!r->g->store) return fail_store(r, -ENOTCONN);
    rc = rtstore_revoke_token(r->g->store, tok, &info);
    if (rc < 0) return fail_store(r, rc);
    if (rc != RT_REVOKE_DONE) {
        /* A stale token may be one an attacker kept: it must not reach `everywhere`. */
        log_info("revoke ignored", "req=%s reason=\"%s\"", r->id,
                 rc == RT_REVOKE_STALE ? "token no longer active" : "unknown token");
        return 0;
    }
    set_who(r, info.sub);
    metric_inc(m.revoked_family);
    if (everywhere) {
        rc = rtstore_revoke_user(r->g->store, info.sub);
        if (rc < 0) return fail_store(r, rc);
        metric_inc(m.revoked_user);
        set_event(r, info.sub, NULL, "logout_all");
        log_info("sessions revoked", "req=%s user=%s scope=user families=%d", r->id, r->who,
                 rc + 1);
    } else {
        set_event(r, info.sub, info.fam, "revoked");
        log_info("sessions revoked", "req=%s user=%s scope=family", r->id, r->who);
    }
    return 0;
}

static int handle_jwks(req *r)
{
    char *jwks = signkeys_jwks(r->g->keys);
    if (!jwks) return fail_internal(r, "cannot render JWKS");
    free(r->out->body);
    r->out->body = jwks;
    r->out->status = 200;
    r->out->http_header = HDR_JWKS_CACHE;
    return 0;
}

int grant_handle(const grant_cfg *g, enum grant_op op, const char *data, size_t len, long now,
                 const char *reqid, grant_reply *out)
{
    req r = {0};
    char why[160];
    size_t i = 0;

    grant_init_metrics();
    memset(out, 0, sizeof *out);
    r.g = g;
    r.out = out;
    r.now = now;
    snprintf(r.who, sizeof r.who, "-");
    for (; reqid && reqid[i] && i < sizeof r.id - 1; i++) {
        char c = reqid[i];
        r.id[i] = ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '-' || c == '_' || c == '.')
                      ? c
                      : '_';
    }
    r.id[i] = '\0';
    if (!i) snprintf(r.id, sizeof r.id, "-");

    if (op == GRANT_JWKS) {
        handle_jwks(&r);
    } else if (grant_parse_params(data, len, g->max_body, &r.params, why, sizeof why) < 0) {
        log_info("bad request", "req=%s err=\"%s\"", r.id, why);
        fail(&r, len > g->max_body ? 413 : 400, "invalid_request", why);
    } else if (op == GRANT_REVOKE) {
        handle_revoke(&r);
    } else {
        handle_token(&r, op == GRANT_REFRESH);
    }
    json_decref(r.params);
    if (!out->body) {
        out->status = 500;
        return -1;
    }
    return 0;
}
