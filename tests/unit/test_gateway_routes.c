/* test_gateway_routes.c - routing-table parser/validator and path matcher
 * (services/gateway/routes.c). */
#include "test.h"

#include "../../services/gateway/routes.h"

static routes *parse(const char *text, char *err, size_t errlen)
{
    routes *rt = NULL;
    err[0] = '\0';
    if (routes_parse(text, strlen(text), &rt, err, errlen) != 0) return NULL;
    return rt;
}

/* Expects a parse failure whose message contains want. */
static int fails_with(const char *text, const char *want)
{
    char err[512];
    routes *rt = parse(text, err, sizeof err);
    if (rt) {
        routes_destroy(rt);
        printf("  parsed but should not: %s\n", text);
        return 0;
    }
    if (!strstr(err, want)) {
        printf("  error \"%s\" lacks \"%s\"\n", err, want);
        return 0;
    }
    return 1;
}

static const char TABLE[] =
    "{\"routes\":["
    "{\"method\":\"GET\",\"path\":\"/api/orders\",\"auth\":\"bearer\",\"subject\":\"svc.orders.list\"},"
    "{\"method\":\"POST\",\"path\":\"/api/orders\",\"auth\":\"bearer\",\"subject\":\"svc.orders.create\"},"
    "{\"method\":\"GET\",\"path\":\"/api/orders/{id}\",\"auth\":\"bearer\",\"subject\":\"svc.orders.get\","
    " \"timeout_ms\":1500},"
    "{\"method\":\"GET\",\"path\":\"/api/orders/stats\",\"auth\":\"public\",\"subject\":\"svc.orders.stats\"},"
    "{\"method\":\"DELETE\",\"path\":\"/api/orders/{id}\",\"auth\":\"bearer\",\"subject\":\"svc.orders.del\"},"
    "{\"method\":\"GET\",\"path\":\"/api/{kind}/{id}/items/{item}\",\"auth\":\"public\",\"subject\":\"svc.items\"},"
    "{\"method\":\"GET\",\"path\":\"/\",\"auth\":\"public\",\"subject\":\"svc.root\"},"
    "{\"method\":\"GET\",\"path\":\"/api/dash\",\"auth\":\"bearer\",\"timeout_ms\":2000,"
    " \"compose\":{\"mode\":\"sequence\",\"calls\":["
    "   {\"key\":\"order\",\"subject\":\"svc.orders.get\",\"request\":{\"params\":{\"id\":\"${query.id}\"}}},"
    "   {\"key\":\"who\",\"subject\":\"presence.get\",\"optional\":true,"
    "    \"request\":{\"params\":{\"user\":\"${order.user_id}\",\"me\":\"${user}\"}}}]}}"
    "]}";

TEST(parses_the_table)
{
    char err[512];
    routes *rt = parse(TABLE, err, sizeof err);
    if (!rt) printf("  %s\n", err);
    REQUIRE(rt);
    CHECK_EQ_INT(rt->n, 8);
    CHECK_STR(rt->v[2].path, "/api/orders/{id}");
    CHECK_EQ_INT(rt->v[2].timeout_ms, 1500);
    CHECK_EQ_INT(rt->v[0].timeout_ms, ROUTES_DEFAULT_TIMEOUT_MS);
    CHECK_EQ_INT(rt->v[2].nparams, 1);
    CHECK_STR(rt->v[2].params[0], "id");
    CHECK_EQ_INT(rt->v[3].auth, ROUTE_AUTH_PUBLIC);
    CHECK_EQ_INT(rt->v[0].auth, ROUTE_AUTH_BEARER);
    CHECK_EQ_INT(rt->v[6].nsegs, 0);
    CHECK_EQ_INT(rt->v[7].mode, ROUTE_SEQUENCE);
    CHECK_EQ_INT(rt->v[7].ncalls, 2);
    CHECK_STR(rt->v[7].calls[1].key, "who");
    CHECK(rt->v[7].calls[1].optional);
    CHECK(!rt->v[7].calls[0].optional);
    CHECK(rt->v[7].calls[0].request != NULL);
    routes_destroy(rt);
}

TEST(example_config_file_loads)
{
    routes *rt = NULL;
    char err[512] = "";
    int rc = routes_load("deploy/config/routes.json", &rt, err, sizeof err);
    if (rc != 0) rc = routes_load("../deploy/config/routes.json", &rt, err, sizeof err);
    if (rc != 0) printf("  %s\n", err);
    REQUIRE(rc == 0);
    route_match m;
    CHECK_EQ_INT(routes_match(rt, "POST", "/auth/token", &m), SC_OK);
    CHECK_STR(m.route->calls[0].subject, "auth.token");
    CHECK_EQ_INT(routes_match(rt, "GET", "/.well-known/jwks.json", &m), SC_OK);
    CHECK_EQ_INT(routes_match(rt, "GET", "/api/presence/alice", &m), SC_OK);
    CHECK_EQ_INT(routes_match(rt, "GET", "/api/dashboard", &m), SC_OK);
    CHECK_EQ_INT(m.route->mode, ROUTE_PARALLEL);
    routes_destroy(rt);
}

TEST(load_names_file)
{
    routes *rt = NULL;
    char err[512] = "";
    CHECK(routes_load("/nonexistent/routes.json", &rt, err, sizeof err) != 0);
    CHECK(strstr(err, "/nonexistent/routes.json") != NULL);
    CHECK(rt == NULL);
}

TEST(matches_literals_before_params)
{
    char err[512];
    routes *rt = parse(TABLE, err, sizeof err);
    REQUIRE(rt);
    route_match m;
    CHECK_EQ_INT(routes_match(rt, "GET", "/api/orders/stats", &m), SC_OK);
    CHECK_STR(m.route->calls[0].subject, "svc.orders.stats");
    CHECK_EQ_INT(m.nparams, 0);
    CHECK_EQ_INT(routes_match(rt, "GET", "/api/orders/42", &m), SC_OK);
    CHECK_STR(m.route->calls[0].subject, "svc.orders.get");
    REQUIRE(m.nparams == 1);
    CHECK_STR(m.names[0], "id");
    CHECK_STR(m.values[0], "42");
    /* DELETE /api/orders/stats: only the {id} route has DELETE */
    CHECK_EQ_INT(routes_match(rt, "DELETE", "/api/orders/stats", &m), SC_OK);
    CHECK_STR(m.values[0], "stats");
    CHECK_EQ_INT(routes_match(rt, "GET", "/", &m), SC_OK);
    CHECK_STR(m.route->calls[0].subject, "svc.root");
    routes_destroy(rt);
}

TEST(decodes_params_per_segment)
{
    char err[512];
    routes *rt = parse(TABLE, err, sizeof err);
    REQUIRE(rt);
    route_match m;
    CHECK_EQ_INT(routes_match(rt, "GET", "/api/orders/a%2Fb%20c", &m), SC_OK);
    CHECK_STR(m.values[0], "a/b c");
    /* an encoded literal still matches it */
    CHECK_EQ_INT(routes_match(rt, "GET", "/api/%6Frders", &m), SC_OK);
    CHECK_STR(m.route->calls[0].subject, "svc.orders.list");
    CHECK_EQ_INT(routes_match(rt, "GET", "/api/users/7/items/x", &m), SC_OK);
    REQUIRE(m.nparams == 3);
    CHECK_STR(m.names[0], "kind");
    CHECK_STR(m.values[0], "users");
    CHECK_STR(m.values[1], "7");
    CHECK_STR(m.names[2], "item");
    CHECK_STR(m.values[2], "x");
    routes_destroy(rt);
}

TEST(not_found_method_and_bad_paths)
{
    char err[512];
    routes *rt = parse(TABLE, err, sizeof err);
    REQUIRE(rt);
    route_match m;
    CHECK_EQ_INT(routes_match(rt, "GET", "/api/nothing", &m), -ENOENT);
    CHECK_EQ_INT(routes_match(rt, "GET", "/api/orders/", &m), -ENOENT);
    CHECK_EQ_INT(routes_match(rt, "GET", "/api//orders", &m), -ENOENT);
    CHECK_EQ_INT(routes_match(rt, "GET", "api/orders", &m), -ENOENT);
    CHECK_EQ_INT(routes_match(rt, "GET", "", &m), -ENOENT);
    CHECK_EQ_INT(routes_match(rt, "PUT", "/api/orders", &m), -EOPNOTSUPP);
    CHECK_STR(m.allow, "GET, POST, OPTIONS");
    CHECK_EQ_INT(routes_match(rt, "POST", "/api/orders/1", &m), -EOPNOTSUPP);
    CHECK_STR(m.allow, "GET, DELETE, OPTIONS");
    CHECK_EQ_INT(routes_match(rt, "OPTIONS", "/api/orders/stats", &m), -EOPNOTSUPP);
    CHECK_STR(m.allow, "GET, DELETE, OPTIONS");
    CHECK_EQ_INT(routes_match(rt, "GET", "/api/orders/%zz", &m), SC_EMALFORMED);
    CHECK_EQ_INT(routes_match(rt, "GET", "/api/orders/%00", &m), SC_EMALFORMED);
    CHECK_EQ_INT(routes_match(rt, "GET", "/api/orders/%FF", &m), SC_EMALFORMED);
    CHECK_EQ_INT(routes_match(rt, "GET", "/api/orders/..", &m), SC_EMALFORMED);
    CHECK_EQ_INT(routes_match(rt, "GET", "/api/orders/%2e%2E", &m), SC_EMALFORMED);
    char longp[ROUTES_MAX_PATH + 8];
    memset(longp, 'a', sizeof longp);
    longp[0] = '/';
    longp[sizeof longp - 1] = '\0';
    CHECK_EQ_INT(routes_match(rt, "GET", longp, &m), -ENOENT);
    CHECK_EQ_INT(routes_match(NULL, "GET", "/x", &m), -ENOENT);
    routes_destroy(rt);
}

TEST(first_of_equals_wins)
{
    char err[512];
    routes *rt = parse(
        "{\"routes\":["
        "{\"method\":\"GET\",\"path\":\"/a/{x}/c\",\"auth\":\"public\",\"subject\":\"one\"},"
        "{\"method\":\"GET\",\"path\":\"/a/b/{y}\",\"auth\":\"public\",\"subject\":\"two\"}]}",
        err, sizeof err);
    REQUIRE(rt);
    route_match m;
    /* /a/b/c: "two" has the literal at the first place where they differ */
    CHECK_EQ_INT(routes_match(rt, "GET", "/a/b/c", &m), SC_OK);
    CHECK_STR(m.route->calls[0].subject, "two");
    CHECK_EQ_INT(routes_match(rt, "GET", "/a/z/c", &m), SC_OK);
    CHECK_STR(m.route->calls[0].subject, "one");
    routes_destroy(rt);
}

#define R(body) "{\"routes\":[" body "]}"
#define OK1 "{\"method\":\"GET\",\"path\":\"/ok\",\"auth\":\"public\",\"subject\":\"s.ok\"}"

TEST(rejects_bad_documents)
{
    CHECK(fails_with("", "line"));
    CHECK(fails_with("[]", "JSON object"));
    CHECK(fails_with("{\"routes\":{}}", "array"));
    CHECK(fails_with("{\"routes\":[],\"extra\":1}", "unknown field \"extra\""));
    CHECK(fails_with("{\"routes\":[], \"routes\":[]}", "line")); /* duplicate key */
}

TEST(a_route_may_require_a_scope)
{
    char err[512];
    routes *rt = parse(R("{\"method\":\"GET\",\"path\":\"/api/v1/counts\",\"auth\":\"bearer\","
                         "\"scope\":\"sidecast.api\",\"subject\":\"api.counts\"}," OK1),
                       err, sizeof err);
    REQUIRE(rt);
    CHECK_STR(rt->v[0].scope, "sidecast.api");
    CHECK_STR(rt->v[1].scope, ""); /* none */
    routes_destroy(rt);
    CHECK(fails_with(R("{\"method\":\"GET\",\"path\":\"/x\",\"auth\":\"public\","
                       "\"scope\":\"a\",\"subject\":\"s\"}"),
                     "route 0: scope: only a bearer route"));
    CHECK(fails_with(R("{\"method\":\"GET\",\"path\":\"/x\",\"auth\":\"bearer\","
                       "\"scope\":\"a b\",\"subject\":\"s\"}"),
                     "route 0: scope:"));
    CHECK(fails_with(R("{\"method\":\"GET\",\"path\":\"/x\",\"auth\":\"bearer\","
                       "\"scope\":\"\",\"subject\":\"s\"}"),
                     "route 0: scope:"));
    CHECK(fails_with(R("{\"method\":\"GET\",\"path\":\"/x\",\"auth\":\"bearer\","
                       "\"scope\":[\"a\"],\"subject\":\"s\"}"),
                     "route 0: scope:"));
}

TEST(rejects_bad_routes_naming_the_index)
{
    CHECK(fails_with(R(OK1 ",{\"method\":\"GET\",\"path\":\"/x\",\"auth\":\"public\"}"),
                     "route 1: needs exactly one of"));
    CHECK(
        fails_with(R("{\"method\":\"get\",\"path\":\"/x\",\"auth\":\"public\",\"subject\":\"a\"}"),
                   "route 0: method"));
    CHECK(fails_with(
        R("{\"method\":\"OPTIONS\",\"path\":\"/x\",\"auth\":\"public\",\"subject\":\"a\"}"),
        "route 0: method"));
    CHECK(fails_with(R(OK1 "," OK1 ","
                           "{\"method\":\"GET\",\"path\":\"/x\",\"subject\":\"a\"}"),
                     "route 1: GET /ok duplicates route 0"));
    CHECK(fails_with(R(OK1 ","
                           "{\"method\":\"GET\",\"path\":\"/x\",\"subject\":\"a\"}"),
                     "route 1: auth"));
    CHECK(fails_with(R("{\"method\":\"GET\",\"path\":\"/x\",\"auth\":\"none\",\"subject\":\"a\"}"),
                     "route 0: auth"));
    CHECK(fails_with(
        R("{\"method\":\"GET\",\"path\":\"/x\",\"auth\":\"public\",\"subject\":\"a.*\"}"),
        "subject"));
    CHECK(fails_with(
        R("{\"method\":\"GET\",\"path\":\"/x\",\"auth\":\"public\",\"subject\":\"a..b\"}"),
        "subject"));
    CHECK(fails_with(R("{\"method\":\"GET\",\"path\":\"/x\",\"auth\":\"public\",\"subject\":\"a\","
                       "\"timeout_ms\":0}"),
                     "timeout_ms"));
    CHECK(fails_with(R("{\"method\":\"GET\",\"path\":\"/x\",\"auth\":\"public\",\"subject\":\"a\","
                       "\"timeout_ms\":60001}"),
                     "timeout_ms"));
    CHECK(fails_with(R("{\"method\":\"GET\",\"path\":\"/x\",\"auth\":\"public\",\"subject\":\"a\","
                       "\"tmeout_ms\":10}"),
                     "unknown field \"tmeout_ms\""));
}

TEST(rejects_bad_paths)
{
#define P(path)                                                                                    \
    R("{\"method\":\"GET\",\"path\":\"" path "\",\"auth\":\"public\",\"subject\":\"a\"}")
    CHECK(fails_with(P("x"), "must start with '/'"));
    CHECK(fails_with(P(""), "must start with '/'"));
    CHECK(fails_with(P("/a//b"), "empty segment"));
    CHECK(fails_with(P("/a/"), "empty segment"));
    CHECK(fails_with(P("/a/{id"), "whole segment"));
    CHECK(fails_with(P("/a/x{id}"), "not allowed"));
    CHECK(fails_with(P("/a/{}"), "whole segment"));
    CHECK(fails_with(P("/a/{1d}"), "bad param name"));
    CHECK(fails_with(P("/a/{id}/{id}"), "given twice"));
    CHECK(fails_with(P("/a/%20"), "not allowed"));
    CHECK(fails_with(P("/a/../b"), "dot segments"));
    CHECK(fails_with(P("/a b"), "not allowed"));
    CHECK(fails_with(P("/healthz"), "answered by the gateway"));
    CHECK(fails_with(P("/metrics"), "answered by the gateway"));
    /* 17 params */
    CHECK(fails_with(P("/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}/{j}/{k}/{l}/{m}/{n}/{o}/{p}/{q}"),
                     "more than 16 params"));
#undef P
    char big[ROUTES_MAX_PATH + 200], doc[ROUTES_MAX_PATH + 400];
    memset(big, 'a', ROUTES_MAX_PATH + 1);
    big[0] = '/';
    big[ROUTES_MAX_PATH + 1] = '\0';
    snprintf(doc, sizeof doc,
             R("{\"method\":\"GET\",\"path\":\"%s\",\"auth\":\"public\",\"subject\":\"a\"}"), big);
    CHECK(fails_with(doc, "longer than 512"));
    big[ROUTES_MAX_PATH] = '\0'; /* exactly 512: fine */
    snprintf(doc, sizeof doc,
             R("{\"method\":\"GET\",\"path\":\"%s\",\"auth\":\"public\",\"subject\":\"a\"}"), big);
    char err[256];
    routes *rt = parse(doc, err, sizeof err);
    CHECK(rt != NULL);
    routes_destroy(rt);
}

TEST(rejects_bad_compositions)
{
#define C(calls) R("{\"method\":\"GET\",\"path\":\"/c\",\"auth\":\"bearer\",\"compose\":" calls "}")
    CHECK(fails_with(C("{\"mode\":\"both\",\"calls\":[{\"key\":\"a\",\"subject\":\"s\"}]}"),
                     "mode"));
    CHECK(fails_with(C("{\"mode\":\"parallel\",\"calls\":[]}"), "1 to 8 calls"));
    CHECK(fails_with(C("{\"mode\":\"parallel\",\"calls\":["
                       "{\"key\":\"a\",\"subject\":\"s\"},{\"key\":\"a\",\"subject\":\"s\"}]}"),
                     "given twice"));
    CHECK(fails_with(C("{\"mode\":\"parallel\",\"calls\":[{\"key\":\"body\",\"subject\":\"s\"}]}"),
                     "reserved"));
    CHECK(fails_with(C("{\"mode\":\"parallel\",\"calls\":[{\"key\":\"a-b\",\"subject\":\"s\"}]}"),
                     "key"));
    CHECK(fails_with(C("{\"mode\":\"parallel\",\"calls\":[{\"key\":\"a\"}]}"), "call 0: subject"));
    CHECK(fails_with(C("{\"mode\":\"parallel\",\"calls\":[{\"key\":\"a\",\"subject\":\"s\","
                       "\"optional\":1}]}"),
                     "optional"));
    /* parallel calls cannot read each other's answers */
    CHECK(fails_with(C("{\"mode\":\"parallel\",\"calls\":[{\"key\":\"a\",\"subject\":\"s\"},"
                       "{\"key\":\"b\",\"subject\":\"s\",\"request\":{\"x\":\"${a.id}\"}}]}"),
                     "call 1: request: unknown reference ${a.id}"));
    /* a sequence step reads only earlier steps */
    CHECK(fails_with(C("{\"mode\":\"sequence\",\"calls\":[{\"key\":\"a\",\"subject\":\"s\","
                       "\"request\":{\"x\":\"${b.id}\"}},{\"key\":\"b\",\"subject\":\"s\"}]}"),
                     "call 0: request: unknown reference ${b.id}"));
    CHECK(fails_with(C("{\"mode\":\"sequence\",\"calls\":[{\"key\":\"a\",\"subject\":\"s\","
                       "\"request\":{\"x\":\"${params.nope}\"}}]}"),
                     "unknown reference ${params.nope}"));
    CHECK(fails_with(C("{\"mode\":\"sequence\",\"calls\":[{\"key\":\"a\",\"subject\":\"s\","
                       "\"request\":{\"x\":\"${query.a\"}}]}"),
                     "unterminated"));
    CHECK(fails_with(C("{\"mode\":\"sequence\",\"calls\":[{\"key\":\"a\",\"subject\":\"s\","
                       "\"request\":[1]}]}"),
                     "must be an object"));
    CHECK(fails_with(C("{\"mode\":\"parallel\",\"calls\":["
                       "{\"key\":\"a\",\"subject\":\"s\"},{\"key\":\"b\",\"subject\":\"s\"},"
                       "{\"key\":\"c\",\"subject\":\"s\"},{\"key\":\"d\",\"subject\":\"s\"},"
                       "{\"key\":\"e\",\"subject\":\"s\"},{\"key\":\"f\",\"subject\":\"s\"},"
                       "{\"key\":\"g\",\"subject\":\"s\"},{\"key\":\"h\",\"subject\":\"s\"},"
                       "{\"key\":\"i\",\"subject\":\"s\"}]}"),
                     "1 to 8 calls"));
#undef C
    /* ${user} needs an authenticated route */
    CHECK(fails_with(R("{\"method\":\"GET\",\"path\":\"/p\",\"auth\":\"public\",\"subject\":\"s\","
                       "\"request\":{\"u\":\"${user}\"}}"),
                     "unknown reference ${user}"));
    CHECK(fails_with(
        R("{\"method\":\"GET\",\"path\":\"/p\",\"auth\":\"public\",\"subject\":\"s\","
          "\"compose\":{\"mode\":\"parallel\",\"calls\":[{\"key\":\"a\",\"subject\":\"s\"}]}}"),
        "exactly one of"));
}

TEST(route_count_bound)
{
    size_t cap = 80 * (ROUTES_MAX + 2) + 64;
    char *doc = malloc(cap);
    REQUIRE(doc);
    size_t n = (size_t)snprintf(doc, cap, "{\"routes\":[");
    for (int i = 0; i <= ROUTES_MAX; i++)
        n += (size_t)snprintf(
            doc + n, cap - n,
            "%s{\"method\":\"GET\",\"path\":\"/r%d\",\"auth\":\"public\",\"subject\":\"s\"}",
            i ? "," : "", i);
    snprintf(doc + n, cap - n, "]}");
    CHECK(fails_with(doc, "more than 256 routes"));
    free(doc);
}

TEST(subject_validation)
{
    CHECK(routes_subject_valid("svc.orders.get"));
    CHECK(routes_subject_valid("a"));
    CHECK(routes_subject_valid("a-b_c.D9"));
    CHECK(!routes_subject_valid(""));
    CHECK(!routes_subject_valid(".a"));
    CHECK(!routes_subject_valid("a."));
    CHECK(!routes_subject_valid("a..b"));
    CHECK(!routes_subject_valid("a.>"));
    CHECK(!routes_subject_valid("a b"));
}

TEST_MAIN()
