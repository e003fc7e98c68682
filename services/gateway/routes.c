/* routes.c - routing-table parser and path matcher; see routes.h. */
#include "routes.h"

#include "form.h"
#include "tmpl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const routes_methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
#define ROUTES_NMETHODS (sizeof routes_methods / sizeof routes_methods[0])

/* Envelope fields a template may reference, and so names no call key may take. */
static const char *const routes_reserved_roots[] = {"params", "query",  "body",
                                                    "user",   "method", "path"};
#define ROUTES_NRESERVED (sizeof routes_reserved_roots / sizeof routes_reserved_roots[0])

/* Paths answered by the gateway itself (admin_answer). */
static const char *const routes_reserved_paths[] = {"/healthz", "/readyz", "/metrics"};

static void routes_errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void routes_errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || !errlen) return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int routes_subject_valid(const char *s)
{
    size_t n = strlen(s), tok = 0;
    if (n == 0 || n > ROUTES_MAX_SUBJECT) return 0;
    for (size_t i = 0; i <= n; i++) {
        char c = s[i];
        if (c == '.' || c == '\0') {
            if (tok == 0) return 0;
            tok = 0;
        } else if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '_' || c == '-') {
            tok++;
        } else {
            return 0;
        }
    }
    return 1;
}

/* [A-Za-z_][A-Za-z0-9_]{0,62} */
static int routes_name_valid(const char *s, size_t n)
{
    if (n == 0 || n > ROUTES_MAX_NAME) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' ||
                 (i > 0 && c >= '0' && c <= '9');
        if (!ok) return 0;
    }
    return 1;
}

/* RFC 3986 pchar without '%' (literals are compared with decoded request segments) and
 * without anything that would need escaping in a metric label or a log line. */
static int routes_literal_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           strchr("-._~!$&'()*+,;=:@", c) != NULL;
}

static int routes_parse_path(route *r, const char *path, char *err, size_t errlen)
{
    size_t n = strlen(path);
    if (n == 0 || path[0] != '/') {
        routes_errf(err, errlen, "path: must start with '/'");
        return -1;
    }
    if (n > ROUTES_MAX_PATH) {
        routes_errf(err, errlen, "path: longer than %d bytes", ROUTES_MAX_PATH);
        return -1;
    }
    for (size_t i = 0; i < sizeof routes_reserved_paths / sizeof routes_reserved_paths[0]; i++) {
        if (strcmp(path, routes_reserved_paths[i]) == 0) {
            routes_errf(err, errlen, "path: %s is answered by the gateway itself", path);
            return -1;
        }
    }
    memcpy(r->path, path, n + 1);
    r->nsegs = r->nparams = 0;
    if (n == 1) return 0; /* "/" */
    size_t i = 1;
    while (i <= n) {
        size_t start = i;
        while (i < n && path[i] != '/') i++;
        size_t len = i - start;
        const char *seg = path + start;
        if (len == 0) {
            routes_errf(err, errlen, "path: empty segment at offset %zu", start);
            return -1;
        }
        if (r->nsegs == ROUTES_MAX_SEGMENTS) {
            routes_errf(err, errlen, "path: more than %d segments", ROUTES_MAX_SEGMENTS);
            return -1;
        }
        route_seg *s = &r->segs[r->nsegs++];
        if (seg[0] == '{') {
            if (seg[len - 1] != '}' || len < 3) {
                routes_errf(err, errlen, "path: a {param} must fill a whole segment (offset %zu)",
                            start);
                return -1;
            }
            if (!routes_name_valid(seg + 1, len - 2)) {
                routes_errf(err, errlen, "path: bad param name at offset %zu", start);
                return -1;
            }
            for (size_t p = 0; p < r->nparams; p++) {
                if (strlen(r->params[p]) == len - 2 &&
                    memcmp(r->params[p], seg + 1, len - 2) == 0) {
                    routes_errf(err, errlen, "path: param {%.*s} given twice", (int)(len - 2),
                                seg + 1);
                    return -1;
                }
            }
            if (r->nparams == ROUTES_MAX_PARAMS) {
                routes_errf(err, errlen, "path: more than %d params", ROUTES_MAX_PARAMS);
                return -1;
            }
            memcpy(r->params[r->nparams], seg + 1, len - 2);
            r->params[r->nparams][len - 2] = '\0';
            s->is_param = 1;
            s->off = (unsigned short)r->nparams++;
            s->len = 0;
        } else {
            for (size_t k = 0; k < len; k++) {
                if (!routes_literal_char(seg[k])) {
                    routes_errf(err, errlen, "path: character '%c' not allowed at offset %zu",
                                seg[k] >= 0x20 && seg[k] < 0x7f ? seg[k] : '?', start + k);
                    return -1;
                }
            }
            if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.')) {
                routes_errf(err, errlen, "path: dot segments are not allowed");
                return -1;
            }
            s->is_param = 0;
            s->off = (unsigned short)start;
            s->len = (unsigned short)len;
        }
        i++; /* skip '/' */
    }
    return 0;
}

static int routes_is_reserved_root(const char *s, size_t n)
{
    for (size_t i = 0; i < ROUTES_NRESERVED; i++)
        if (strlen(routes_reserved_roots[i]) == n && memcmp(routes_reserved_roots[i], s, n) == 0)
            return 1;
    return 0;
}

/* What a template of call `ncall` of route r may reference. */
typedef struct routes_refctx {
    const route *r;
    size_t ncall;
} routes_refctx;

static int routes_ref_ok(const char *ref, size_t len, size_t rootlen, void *ud)
{
    const routes_refctx *rc = ud;
    const route *r = rc->r;
    if (rootlen == 6 && memcmp(ref, "params", 6) == 0) {
        if (len == rootlen) return 1;
        const char *name = ref + 7;
        const char *dot = memchr(name, '.', len - 7);
        size_t nlen = dot ? (size_t)(dot - name) : len - 7;
        for (size_t i = 0; i < r->nparams; i++)
            if (strlen(r->params[i]) == nlen && memcmp(r->params[i], name, nlen) == 0) return 1;
        return 0;
    }
    if (rootlen == 4 && memcmp(ref, "user", 4) == 0)
        return len == rootlen && r->auth == ROUTE_AUTH_BEARER;
    if (routes_is_reserved_root(ref, rootlen)) return 1;
    if (r->mode != ROUTE_SEQUENCE) return 0;
    for (size_t i = 0; i < rc->ncall; i++)
        if (strlen(r->calls[i].key) == rootlen && memcmp(r->calls[i].key, ref, rootlen) == 0)
            return 1;
    return 0;
}

/* Checks that obj has only the given keys. */
static int routes_only_keys(const json_t *obj, const char *const *keys, size_t n, char *err,
                            size_t errlen, const char *where)
{
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)obj, k, v) {
        size_t i;
        for (i = 0; i < n; i++)
            if (strcmp(k, keys[i]) == 0) break;
        if (i == n) {
            routes_errf(err, errlen, "%sunknown field \"%.64s\"", where, k);
            return -1;
        }
    }
    return 0;
}

static int routes_parse_template(const json_t *tmpl, route *r, size_t ncall, char *err,
                                 size_t errlen, const char *where)
{
    char why[200];
    routes_refctx rc = {r, ncall};
    if (!json_is_object(tmpl)) {
        routes_errf(err, errlen, "%srequest: must be an object", where);
        return -1;
    }
    if (tmpl_check(tmpl, routes_ref_ok, &rc, why, sizeof why) != 0) {
        routes_errf(err, errlen, "%srequest: %s", where, why);
        return -1;
    }
    r->calls[ncall].request = json_deep_copy(tmpl);
    if (!r->calls[ncall].request) {
        routes_errf(err, errlen, "%sout of memory", where);
        return -1;
    }
    return 0;
}

static int routes_parse_subject(const json_t *v, route_call *c, char *err, size_t errlen,
                                const char *where)
{
    const char *s = json_string_value(v);
    if (!s || !routes_subject_valid(s)) {
        routes_errf(err, errlen,
                    "%ssubject: must be a NATS subject of [A-Za-z0-9_-] tokens (no wildcards), "
                    "at most %d bytes",
                    where, ROUTES_MAX_SUBJECT);
        return -1;
    }
    memcpy(c->subject, s, strlen(s) + 1);
    return 0;
}

static int routes_parse_compose(const json_t *comp, route *r, char *err, size_t errlen)
{
    static const char *const keys[] = {"mode", "calls"};
    static const char *const call_keys[] = {"key", "subject", "request", "optional"};
    if (!json_is_object(comp)) {
        routes_errf(err, errlen, "compose: must be an object");
        return -1;
    }
    if (routes_only_keys(comp, keys, 2, err, errlen, "compose: ") != 0) return -1;
    const char *mode = json_string_value(json_object_get(comp, "mode"));
    if (mode && strcmp(mode, "parallel") == 0) {
        r->mode = ROUTE_PARALLEL;
    } else if (mode && strcmp(mode, "sequence") == 0) {
        r->mode = ROUTE_SEQUENCE;
    } else {
        routes_errf(err, errlen, "compose: mode: must be \"parallel\" or \"sequence\"");
        return -1;
    }
    const json_t *calls = json_object_get(comp, "calls");
    if (!json_is_array(calls) || json_array_size(calls) == 0 ||
        json_array_size(calls) > ROUTES_MAX_CALLS) {
        routes_errf(err, errlen, "compose: calls: must be an array of 1 to %d calls",
                    ROUTES_MAX_CALLS);
        return -1;
    }
    size_t i;
    const json_t *cv;
    json_array_foreach(calls, i, cv) {
        char where[48];
        snprintf(where, sizeof where, "compose: call %zu: ", i);
        route_call *c = &r->calls[i];
        if (!json_is_object(cv)) {
            routes_errf(err, errlen, "%smust be an object", where);
            return -1;
        }
        if (routes_only_keys(cv, call_keys, 4, err, errlen, where) != 0) return -1;
        const char *key = json_string_value(json_object_get(cv, "key"));
        if (!key || !routes_name_valid(key, strlen(key))) {
            routes_errf(err, errlen, "%skey: must match [A-Za-z_][A-Za-z0-9_]* (at most %d bytes)",
                        where, ROUTES_MAX_NAME);
            return -1;
        }
        if (routes_is_reserved_root(key, strlen(key))) {
            routes_errf(err, errlen, "%skey: \"%s\" is reserved", where, key);
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(r->calls[j].key, key) == 0) {
                routes_errf(err, errlen, "%skey: \"%s\" given twice", where, key);
                return -1;
            }
        }
        memcpy(c->key, key, strlen(key) + 1);
        if (routes_parse_subject(json_object_get(cv, "subject"), c, err, errlen, where) != 0)
            return -1;
        const json_t *opt = json_object_get(cv, "optional");
        if (opt && !json_is_boolean(opt)) {
            routes_errf(err, errlen, "%soptional: must be true or false", where);
            return -1;
        }
        c->optional = json_is_true(opt);
        r->ncalls = i + 1; /* templates may see earlier keys only */
        const json_t *tmpl = json_object_get(cv, "request");
        if (tmpl && routes_parse_template(tmpl, r, i, err, errlen, where) != 0) return -1;
    }
    return 0;
}

static int routes_parse_one(const json_t *rv, route *r, char *err, size_t errlen)
{
    static const char *const keys[] = {"method",     "path",    "auth",    "scope",      "subject",
                                       "timeout_ms", "request", "compose", "description"};
    if (!json_is_object(rv)) {
        routes_errf(err, errlen, "must be an object");
        return -1;
    }
    if (routes_only_keys(rv, keys, sizeof keys / sizeof keys[0], err, errlen, "") != 0) return -1;

    const char *method = json_string_value(json_object_get(rv, "method"));
    size_t m;
    for (m = 0; method && m < ROUTES_NMETHODS; m++)
        if (strcmp(method, routes_methods[m]) == 0) break;
    if (!method || m == ROUTES_NMETHODS) {
        routes_errf(err, errlen, "method: must be one of GET, POST, PUT, PATCH, DELETE");
        return -1;
    }
    strcpy(r->method, method);

    const char *path = json_string_value(json_object_get(rv, "path"));
    if (!path) {
        routes_errf(err, errlen, "path: required string");
        return -1;
    }
    if (routes_parse_path(r, path, err, errlen) != 0) return -1;

    const char *auth = json_string_value(json_object_get(rv, "auth"));
    if (auth && strcmp(auth, "bearer") == 0) {
        r->auth = ROUTE_AUTH_BEARER;
    } else if (auth && strcmp(auth, "public") == 0) {
        r->auth = ROUTE_AUTH_PUBLIC;
    } else {
        routes_errf(err, errlen, "auth: required, \"bearer\" or \"public\"");
        return -1;
    }

    const json_t *scope = json_object_get(rv, "scope");
    if (scope) {
        const char *sv = json_string_value(scope);
        int ok = sv && sv[0] && strlen(sv) <= ROUTES_MAX_SCOPE;
        for (const char *p = sv; ok && *p; p++) /* RFC 6749 3.3 scope-token, no quote/backslash */
            if (*p < 0x21 || *p > 0x7e || *p == '"' || *p == '\\') ok = 0;
        if (!ok) {
            routes_errf(err, errlen, "scope: a scope name of 1..%d printable bytes, no spaces",
                        ROUTES_MAX_SCOPE);
            return -1;
        }
        if (r->auth != ROUTE_AUTH_BEARER) {
            routes_errf(err, errlen, "scope: only a bearer route can require a scope");
            return -1;
        }
        strcpy(r->scope, sv);
    }

    const json_t *to = json_object_get(rv, "timeout_ms");
    r->timeout_ms = ROUTES_DEFAULT_TIMEOUT_MS;
    if (to) {
        if (!json_is_integer(to) || json_integer_value(to) < 1 ||
            json_integer_value(to) > ROUTES_MAX_TIMEOUT_MS) {
            routes_errf(err, errlen, "timeout_ms: must be an integer in 1..%d",
                        ROUTES_MAX_TIMEOUT_MS);
            return -1;
        }
        r->timeout_ms = (int)json_integer_value(to);
    }

    const json_t *desc = json_object_get(rv, "description");
    if (desc && !json_is_string(desc)) {
        routes_errf(err, errlen, "description: must be a string");
        return -1;
    }

    const json_t *subject = json_object_get(rv, "subject");
    const json_t *compose = json_object_get(rv, "compose");
    if (!!subject == !!compose) {
        routes_errf(err, errlen, "needs exactly one of \"subject\" and \"compose\"");
        return -1;
    }
    if (subject) {
        r->mode = ROUTE_SINGLE;
        r->ncalls = 1;
        if (routes_parse_subject(subject, &r->calls[0], err, errlen, "") != 0) return -1;
        const json_t *tmpl = json_object_get(rv, "request");
        if (tmpl && routes_parse_template(tmpl, r, 0, err, errlen, "") != 0) return -1;
        return 0;
    }
    if (json_object_get(rv, "request")) {
        routes_errf(err, errlen, "request: goes inside each compose call");
        return -1;
    }
    return routes_parse_compose(compose, r, err, errlen);
}

/* Same method and same shape (literals equal, params at the same places): a duplicate. */
static int routes_same_shape(const route *a, const route *b)
{
    if (strcmp(a->method, b->method) != 0 || a->nsegs != b->nsegs) return 0;
    for (size_t i = 0; i < a->nsegs; i++) {
        const route_seg *x = &a->segs[i], *y = &b->segs[i];
        if (x->is_param != y->is_param) return 0;
        if (!x->is_param &&
            (x->len != y->len || memcmp(a->path + x->off, b->path + y->off, x->len) != 0))
            return 0;
    }
    return 1;
}

static void routes_free_calls(route *r)
{
    for (size_t c = 0; c < ROUTES_MAX_CALLS; c++) {
        json_decref(r->calls[c].request);
        r->calls[c].request = NULL;
    }
}

void routes_destroy(routes *rt)
{
    if (!rt) return;
    for (size_t i = 0; i < rt->n; i++) routes_free_calls(&rt->v[i]);
    free(rt->v);
    free(rt);
}

int routes_parse(const char *text, size_t len, routes **out, char *err, size_t errlen)
{
    json_error_t je;
    routes *rt = NULL;
    char why[256];
    *out = NULL;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        routes_errf(err, errlen, "line %d column %d: %s", je.line, je.column, je.text);
        return -1;
    }
    static const char *const top_keys[] = {"routes", "description"};
    if (!json_is_object(doc)) {
        routes_errf(err, errlen, "the table must be a JSON object {\"routes\":[...]}");
        goto error;
    }
    if (routes_only_keys(doc, top_keys, 2, err, errlen, "") != 0) goto error;
    const json_t *list = json_object_get(doc, "routes");
    if (!json_is_array(list)) {
        routes_errf(err, errlen, "\"routes\" must be an array");
        goto error;
    }
    if (json_array_size(list) > ROUTES_MAX) {
        routes_errf(err, errlen, "more than %d routes", ROUTES_MAX);
        goto error;
    }
    if (!(rt = calloc(1, sizeof *rt)) ||
        (json_array_size(list) && !(rt->v = calloc(json_array_size(list), sizeof *rt->v)))) {
        routes_errf(err, errlen, "out of memory");
        goto error;
    }
    size_t i;
    const json_t *rv;
    json_array_foreach(list, i, rv) {
        route *r = &rt->v[i];
        r->index = i;
        rt->n = i + 1; /* so routes_destroy frees this route's templates too */
        if (routes_parse_one(rv, r, why, sizeof why) != 0) {
            routes_errf(err, errlen, "route %zu: %s", i, why);
            goto error;
        }
        for (size_t j = 0; j < i; j++) {
            if (routes_same_shape(&rt->v[j], r)) {
                routes_errf(err, errlen, "route %zu: %s %s duplicates route %zu", i, r->method,
                            r->path, j);
                goto error;
            }
        }
    }
    json_decref(doc);
    *out = rt;
    return 0;
error:
    json_decref(doc);
    routes_destroy(rt);
    return -1;
}

int routes_load(const char *file, routes **out, char *err, size_t errlen)
{
    char why[320];
    char *buf = NULL;
    size_t len = 0;
    int rc = -1;
    FILE *f = fopen(file, "rb");
    *out = NULL;
    if (!f) {
        routes_errf(err, errlen, "%s: %s", file, strerror(errno));
        return -1;
    }
    if (!(buf = malloc(ROUTES_MAX_FILE + 1))) {
        routes_errf(err, errlen, "%s: out of memory", file);
        goto done;
    }
    len = fread(buf, 1, ROUTES_MAX_FILE + 1, f);
    if (ferror(f)) {
        routes_errf(err, errlen, "%s: read error", file);
        goto done;
    }
    if (len > ROUTES_MAX_FILE) {
        routes_errf(err, errlen, "%s: larger than %d bytes", file, ROUTES_MAX_FILE);
        goto done;
    }
    if (routes_parse(buf, len, out, why, sizeof why) != 0) {
        routes_errf(err, errlen, "%s: %s", file, why);
        goto done;
    }
    rc = 0;
done:
    free(buf);
    fclose(f);
    return rc;
}

/* Bit per method in routes_methods order, for the Allow header. */
static unsigned routes_method_bit(const char *method)
{
    for (size_t i = 0; i < ROUTES_NMETHODS; i++)
        if (strcmp(method, routes_methods[i]) == 0) return 1u << i;
    return 0;
}

static void routes_format_allow(unsigned bits, char *out, size_t outlen)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < ROUTES_NMETHODS; i++) {
        if (!(bits & (1u << i))) continue;
        used += (size_t)snprintf(out + used, outlen - used, "%s, ", routes_methods[i]);
    }
    snprintf(out + used, outlen - used, "OPTIONS");
}

/* -1 when a is more specific than b (a literal where b has a param, first such place). */
static int routes_cmp_specific(const route *a, const route *b)
{
    for (size_t i = 0; i < a->nsegs; i++) {
        if (a->segs[i].is_param == b->segs[i].is_param) continue;
        return a->segs[i].is_param ? 1 : -1;
    }
    return 0;
}

int routes_match(const routes *rt, const char *method, const char *path, route_match *m)
{
    size_t plen = strlen(path);
    const char *seg[ROUTES_MAX_SEGMENTS];
    size_t seglen[ROUTES_MAX_SEGMENTS];
    size_t nseg = 0, used = 0;
    m->route = NULL;
    m->nparams = 0;
    m->allow[0] = '\0';
    m->buf[0] = '\0';
    if (plen == 0 || path[0] != '/' || plen > ROUTES_MAX_PATH) return -ENOENT;
    if (plen > 1) {
        size_t i = 1;
        while (i <= plen) {
            size_t start = i;
            while (i < plen && path[i] != '/') i++;
            if (i == start) return -ENOENT; /* empty segment: "//" or trailing '/' */
            if (nseg == ROUTES_MAX_SEGMENTS) return -ENOENT;
            long d = form_pct_decode(path + start, i - start, 0, m->buf + used);
            if (d < 0) return SC_EMALFORMED;
            seg[nseg] = m->buf + used;
            seglen[nseg] = (size_t)d;
            if ((d == 1 && seg[nseg][0] == '.') ||
                (d == 2 && seg[nseg][0] == '.' && seg[nseg][1] == '.'))
                return SC_EMALFORMED;
            nseg++;
            used += (size_t)d + 1;
            i++;
        }
    }
    unsigned allow = 0;
    const route *best = NULL;
    for (size_t r = 0; rt && r < rt->n; r++) {
        const route *ro = &rt->v[r];
        if (ro->nsegs != nseg) continue;
        size_t i;
        for (i = 0; i < nseg; i++) {
            const route_seg *s = &ro->segs[i];
            if (s->is_param) continue;
            if (s->len != seglen[i] || memcmp(ro->path + s->off, seg[i], s->len) != 0) break;
        }
        if (i < nseg) continue;
        allow |= routes_method_bit(ro->method);
        if (strcmp(ro->method, method) != 0) continue;
        if (!best || routes_cmp_specific(ro, best) < 0) best = ro;
    }
    if (!allow) return -ENOENT;
    routes_format_allow(allow, m->allow, sizeof m->allow);
    if (!best) return -EOPNOTSUPP;
    m->route = best;
    m->nparams = best->nparams;
    for (size_t i = 0; i < nseg; i++) {
        if (!best->segs[i].is_param) continue;
        size_t p = best->segs[i].off;
        m->names[p] = best->params[p];
        m->values[p] = seg[i];
    }
    return SC_OK;
}
