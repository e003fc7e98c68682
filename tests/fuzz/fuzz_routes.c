/* fuzz_routes.c - libFuzzer target for the gateway's routing table (services/gateway/routes.c),
 * its request templates (tmpl.c) and the form/percent decoder (common/form.c).
 *
 * The first input byte picks what the rest feeds:
 *   0  routing-table text -> routes_parse (then a few fixed paths are matched against it)
 *   1  second byte picks a method, the rest is a request path -> routes_match, fixed table
 *   2  "TABLE\0PATH" -> routes_parse, then routes_match of PATH against it (or the fixed table)
 *   3  "TEMPLATE\0CONTEXT" (two JSON texts) -> tmpl_check, tmpl_render
 *   4  form text -> form_parse (strict and lenient), form_pct_decode
 * Oracles: a match names a route of the method asked, with as many params as the route has,
 * each non-empty valid UTF-8 without NUL; a successful parse respects every documented bound;
 * a render shares nothing with its template; the rest is for the sanitizers.
 *
 * Build (sources: tests/fuzz/fuzz_routes.c services/gateway/routes.c services/gateway/tmpl.c
 * common/form.c, library: jansson):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Icommon $(pkg-config --cflags jansson) \
 *     tests/fuzz/fuzz_routes.c services/gateway/routes.c services/gateway/tmpl.c common/form.c \
 *     $(pkg-config --libs jansson) -o fuzz_routes */
#include "../../services/gateway/routes.h"
#include "../../services/gateway/tmpl.h"
#include "form.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char FIXED[] =
    "{\"routes\":["
    "{\"method\":\"GET\",\"path\":\"/\",\"auth\":\"public\",\"subject\":\"root\"},"
    "{\"method\":\"GET\",\"path\":\"/api/orders\",\"auth\":\"bearer\",\"subject\":\"o.list\"},"
    "{\"method\":\"POST\",\"path\":\"/api/orders\",\"auth\":\"bearer\",\"subject\":\"o.create\"},"
    "{\"method\":\"GET\",\"path\":\"/api/orders/{id}\",\"auth\":\"bearer\",\"subject\":\"o.get\"},"
    "{\"method\":\"GET\",\"path\":\"/api/orders/stats\",\"auth\":\"public\",\"subject\":\"o.stats\"},"
    "{\"method\":\"DELETE\",\"path\":\"/api/{a}/{b}/{c}\",\"auth\":\"bearer\",\"subject\":\"x\"},"
    "{\"method\":\"GET\",\"path\":\"/api/{a}/x/{c}\",\"auth\":\"bearer\",\"subject\":\"y\"},"
    "{\"method\":\"GET\",\"path\":\"/d\",\"auth\":\"bearer\",\"timeout_ms\":100,"
    " \"compose\":{\"mode\":\"sequence\",\"calls\":["
    "  {\"key\":\"a\",\"subject\":\"s.a\",\"request\":{\"p\":\"${query.x}\"}},"
    "  {\"key\":\"b\",\"subject\":\"s.b\",\"optional\":true,\"request\":{\"p\":\"${a.id}-${user}\"}}]}}"
    "]}";

static const char *const METHODS[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"};

static routes *fixed_table(void)
{
    static routes *rt;
    if (!rt) {
        char err[256];
        if (routes_parse(FIXED, strlen(FIXED), &rt, err, sizeof err) != 0) {
            fprintf(stderr, "fixed table: %s\n", err);
            abort();
        }
    }
    return rt;
}

static void check_table(const routes *rt)
{
    if (rt->n > ROUTES_MAX) abort();
    for (size_t i = 0; i < rt->n; i++) {
        const route *r = &rt->v[i];
        if (r->path[0] != '/' || strlen(r->path) > ROUTES_MAX_PATH) abort();
        if (r->nparams > ROUTES_MAX_PARAMS || r->nsegs > ROUTES_MAX_SEGMENTS) abort();
        if (r->ncalls < 1 || r->ncalls > ROUTES_MAX_CALLS) abort();
        if (r->timeout_ms < 1 || r->timeout_ms > ROUTES_MAX_TIMEOUT_MS) abort();
        for (size_t c = 0; c < r->ncalls; c++)
            if (!routes_subject_valid(r->calls[c].subject)) abort();
    }
}

static void match_one(const routes *rt, const char *method, const char *path)
{
    route_match m;
    int rc = routes_match(rt, method, path, &m);
    if (rc == SC_OK) {
        const route *r = m.route;
        if (!r || strcmp(r->method, method) != 0 || m.nparams != r->nparams) abort();
        for (size_t i = 0; i < m.nparams; i++) {
            size_t n = strlen(m.values[i]);
            if (n == 0 || !form_utf8_valid(m.values[i], n)) abort();
            if (strcmp(m.names[i], r->params[i]) != 0) abort();
        }
        if (!strstr(m.allow, method)) abort();
        route_match again;
        if (routes_match(rt, method, path, &again) != SC_OK || again.route != r) abort();
    } else if (rc == -EOPNOTSUPP) {
        if (m.route || !m.allow[0]) abort();
    } else if (rc != -ENOENT && rc != SC_EMALFORMED) {
        abort();
    }
}

static void fuzz_render(const char *tmpl_text, size_t tlen, const char *ctx_text, size_t clen)
{
    json_error_t je;
    json_t *tmpl = json_loadb(tmpl_text, tlen, JSON_DECODE_ANY, &je);
    json_t *ctx = json_loadb(ctx_text, clen, 0, &je);
    if (!ctx) ctx = json_object();
    char err[256];
    if (tmpl && tmpl_check(tmpl, NULL, NULL, err, sizeof err) == 0) {
        char *before = json_dumps(tmpl, JSON_ENCODE_ANY | JSON_COMPACT);
        tmpl_error te;
        json_t *out = tmpl_render(tmpl, ctx, &te);
        char *after = json_dumps(tmpl, JSON_ENCODE_ANY | JSON_COMPACT);
        if (before && after && strcmp(before, after) != 0) abort(); /* template not changed */
        free(before);
        free(after);
        json_decref(out);
    }
    json_decref(tmpl);
    json_decref(ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t mode = data[0] % 5;
    const char *rest = (const char *)data + 1;
    size_t n = size - 1;
    char err[512];
    routes *rt = NULL;

    switch (mode) {
    case 0:
        if (routes_parse(rest, n, &rt, err, sizeof err) == 0) {
            check_table(rt);
            match_one(rt, "GET", "/");
            match_one(rt, "GET", "/api/orders/1");
            match_one(rt, "POST", "/a/b/c");
            routes_destroy(rt);
        }
        break;
    case 1: {
        if (n < 1) break;
        const char *method = METHODS[(uint8_t)rest[0] % (sizeof METHODS / sizeof METHODS[0])];
        char *path = strndup(rest + 1, n - 1);
        if (path) match_one(fixed_table(), method, path);
        free(path);
        break;
    }
    case 2: {
        const char *nul = memchr(rest, '\0', n);
        if (!nul) break;
        size_t tlen = (size_t)(nul - rest);
        if (routes_parse(rest, tlen, &rt, err, sizeof err) == 0) check_table(rt);
        char *path = strndup(nul + 1, n - tlen - 1);
        if (path) {
            for (size_t i = 0; i < sizeof METHODS / sizeof METHODS[0]; i++)
                match_one(rt ? rt : fixed_table(), METHODS[i], path);
        }
        free(path);
        routes_destroy(rt);
        break;
    }
    case 3: {
        const char *nul = memchr(rest, '\0', n);
        size_t tlen = nul ? (size_t)(nul - rest) : n;
        fuzz_render(rest, tlen, nul ? nul + 1 : "{}", nul ? n - tlen - 1 : 2);
        break;
    }
    case 4: {
        json_t *o = NULL;
        if (form_parse(rest, n, FORM_STRICT, 0, &o, err, sizeof err) == SC_OK) {
            if (!json_is_object(o)) abort();
            json_decref(o);
        }
        if (form_parse(rest, n, 0, 8, &o, err, sizeof err) == SC_OK) {
            if (json_object_size(o) > 8) abort();
            json_decref(o);
        }
        char *buf = malloc(n + 1);
        if (buf) {
            long d = form_pct_decode(rest, n, 1, buf);
            if (d >= 0 &&
                ((size_t)d > n || !form_utf8_valid(buf, (size_t)d) || strlen(buf) != (size_t)d))
                abort();
            free(buf);
        }
        break;
    }
    }
    return 0;
}
