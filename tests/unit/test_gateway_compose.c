/* test_gateway_compose.c - request templates (tmpl.c), envelopes, reply interpretation and
 * merging (compose.c). */
#include "test.h"

#include "../../services/gateway/compose.h"
#include "../../services/gateway/tmpl.h"
#include "bus.h"

static json_t *J(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    if (!v) printf("  bad test JSON: %s\n", text);
    return v;
}

/* 1 when a and b are equal JSON (prints both otherwise). */
static int same(const json_t *a, const char *b_text)
{
    json_t *b = J(b_text);
    int eq = a && b && json_equal((json_t *)a, b);
    if (!eq) {
        char *s = a ? json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS) : NULL;
        printf("  got %s, want %s\n", s ? s : "(null)", b_text);
        free(s);
    }
    json_decref(b);
    return eq;
}

static const char CTX[] =
    "{\"params\":{\"id\":\"42\"},\"query\":{\"q\":\"x y\"},"
    "\"user\":\"alice\",\"body\":{\"n\":3,\"f\":1.5,\"ok\":true,"
    "\"list\":[{\"id\":\"a\"},{\"id\":\"b\"}],\"obj\":{\"k\":1},\"nul\":null},"
    "\"order\":{\"user_id\":\"bob\",\"total\":12}}";

TEST(render_whole_value_keeps_type)
{
    json_t *ctx = J(CTX);
    json_t *t = J("{\"a\":\"${body.n}\",\"b\":\"${body.obj}\",\"c\":\"${body.list.1.id}\","
                  "\"d\":\"${order}\",\"e\":[\"${user}\",7,null,false],\"f\":\"${body.nul}\"}");
    tmpl_error e;
    json_t *out = tmpl_render(t, ctx, &e);
    CHECK(same(out, "{\"a\":3,\"b\":{\"k\":1},\"c\":\"b\",\"d\":{\"user_id\":\"bob\",\"total\":12},"
                    "\"e\":[\"alice\",7,null,false],\"f\":null}"));
    /* the result shares nothing with ctx: changing it leaves ctx alone */
    json_object_set_new(json_object_get(out, "b"), "k", json_integer(2));
    CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(json_object_get(ctx, "body"),
                                                                    "obj"),
                                                    "k")),
                 1);
    json_decref(out);
    json_decref(t);
    json_decref(ctx);
}

TEST(render_interpolates)
{
    json_t *ctx = J(CTX);
    json_t *t = J("{\"s\":\"order-${params.id}/${order.total}:${body.ok}:${body.f}\","
                  "\"lit\":\"cost $5 and $${not.a.ref} $\",\"q\":\"[${query.q}]\"}");
    tmpl_error e;
    json_t *out = tmpl_render(t, ctx, &e);
    CHECK(same(out, "{\"s\":\"order-42/12:true:1.5\",\"lit\":\"cost $5 and ${not.a.ref} $\","
                    "\"q\":\"[x y]\"}"));
    json_decref(out);
    json_decref(t);
    json_decref(ctx);
}

TEST(render_failures_name_the_root)
{
    json_t *ctx = J(CTX);
    tmpl_error e;
    json_t *t = J("{\"a\":\"${order.missing}\"}");
    CHECK(tmpl_render(t, ctx, &e) == NULL);
    CHECK_STR(e.root, "order");
    CHECK(strstr(e.msg, "${order.missing}") != NULL);
    json_decref(t);

    t = J("{\"a\":\"x${body.obj}\"}"); /* objects cannot be interpolated */
    CHECK(tmpl_render(t, ctx, &e) == NULL);
    CHECK_STR(e.root, "body");
    json_decref(t);

    t = J("{\"a\":\"${body.list.9.id}\"}");
    CHECK(tmpl_render(t, ctx, &e) == NULL);
    CHECK_STR(e.root, "body");
    json_decref(t);

    t = J("{\"a\":\"${body.list.x}\"}"); /* arrays take numeric indexes */
    CHECK(tmpl_render(t, ctx, &e) == NULL);
    json_decref(t);

    t = J("{\"a\":\"${body.n.deeper}\"}");
    CHECK(tmpl_render(t, ctx, &e) == NULL);
    json_decref(t);
    json_decref(ctx);
}

static int only_params(const char *ref, size_t len, size_t rootlen, void *ud)
{
    (void)len;
    (void)ud;
    return rootlen == 6 && memcmp(ref, "params", 6) == 0;
}

TEST(check_syntax)
{
    char err[200];
    json_t *t = J("{\"a\":\"${params.id}\",\"b\":[\"$${x}\",{\"c\":\"${params}\"}]}");
    CHECK_EQ_INT(tmpl_check(t, only_params, NULL, err, sizeof err), 0);
    json_decref(t);
    const char *bad[] = {"\"${}\"",   "\"${a\"",   "\"${a b}\"", "\"${a..b}\"",
                         "\"${.a}\"", "\"${a.}\"", "\"${q}\"",   "\"${a/b}\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        t = J(bad[i]);
        int rc = tmpl_check(t, only_params, NULL, err, sizeof err);
        if (rc == 0) printf("  accepted %s\n", bad[i]);
        CHECK(rc != 0);
        json_decref(t);
    }
    /* nesting is bounded */
    char deep[200] = "";
    for (int i = 0; i < TMPL_MAX_DEPTH + 2; i++) strcat(deep, "[");
    for (int i = 0; i < TMPL_MAX_DEPTH + 2; i++) strcat(deep, "]");
    t = J(deep);
    CHECK(tmpl_check(t, NULL, NULL, err, sizeof err) != 0);
    json_decref(t);
    /* reference length is bounded */
    char longref[TMPL_MAX_REF + 20] = "\"${";
    for (int i = 0; i < TMPL_MAX_REF + 1; i++) strcat(longref, "a");
    strcat(longref, "}\"");
    t = J(longref);
    CHECK(tmpl_check(t, NULL, NULL, err, sizeof err) != 0);
    json_decref(t);
}

TEST(envelope_and_request)
{
    route_match m;
    memset(&m, 0, sizeof m);
    m.nparams = 1;
    m.names[0] = "id";
    m.values[0] = "42";
    json_t *q = J("{\"a\":\"1\"}");
    json_t *b = J("{\"symbol\":\"BTC\"}");
    json_t *env = compose_envelope("GET", "/api/orders/42", &m, q, b);
    CHECK(same(env, "{\"method\":\"GET\",\"path\":\"/api/orders/42\",\"params\":{\"id\":\"42\"},"
                    "\"query\":{\"a\":\"1\"},\"body\":{\"symbol\":\"BTC\"}}"));
    json_t *env2 = compose_envelope("POST", "/x", NULL, NULL, NULL);
    CHECK(same(env2,
               "{\"method\":\"POST\",\"path\":\"/x\",\"params\":{},\"query\":{},\"body\":null}"));

    json_t *ctx = compose_context(env, "alice");
    CHECK_STR(json_string_value(json_object_get(ctx, "user")), "alice");
    CHECK(json_object_get(env, "user") == NULL); /* the envelope is not changed */

    tmpl_error e;
    json_t *req = compose_request(env, NULL, ctx, &e);
    CHECK(same(req, "{\"method\":\"GET\",\"path\":\"/api/orders/42\",\"params\":{\"id\":\"42\"},"
                    "\"query\":{\"a\":\"1\"},\"body\":{\"symbol\":\"BTC\"}}"));
    json_decref(req);

    json_t *t = J("{\"params\":{\"user\":\"${user}\",\"order\":\"${params.id}\"},\"limit\":5}");
    req = compose_request(env, t, ctx, &e);
    CHECK(same(req, "{\"method\":\"GET\",\"path\":\"/api/orders/42\","
                    "\"params\":{\"user\":\"alice\",\"order\":\"42\"},"
                    "\"query\":{\"a\":\"1\"},\"body\":{\"symbol\":\"BTC\"},\"limit\":5}"));
    json_decref(req);
    json_decref(t);

    t = J("{\"params\":{\"u\":\"${nobody.x}\"}}");
    CHECK(compose_request(env, t, ctx, &e) == NULL);
    CHECK_STR(e.root, "nobody");
    json_decref(t);

    json_decref(ctx);
    json_decref(env2);
    json_decref(env);
    json_decref(b);
    json_decref(q);
}

TEST(status_header)
{
    CHECK_EQ_INT(compose_status_parse(NULL), 200);
    CHECK_EQ_INT(compose_status_parse(""), 200);
    CHECK_EQ_INT(compose_status_parse("202"), 202);
    CHECK_EQ_INT(compose_status_parse("599"), 599);
    CHECK_EQ_INT(compose_status_parse("200"), 200);
    CHECK_EQ_INT(compose_status_parse("600"), -1);
    CHECK_EQ_INT(compose_status_parse("100"), -1);
    CHECK_EQ_INT(compose_status_parse("199"), -1);
    CHECK_EQ_INT(compose_status_parse("099"), -1);
    CHECK_EQ_INT(compose_status_parse("20"), -1);
    CHECK_EQ_INT(compose_status_parse("2000"), -1);
    CHECK_EQ_INT(compose_status_parse(" 200"), -1);
    CHECK_EQ_INT(compose_status_parse("abc"), -1);
    CHECK_EQ_INT(compose_status_parse("-20"), -1);
}

TEST(pass_through_header)
{
    char n[COMPOSE_HDR_NAME_MAX], v[COMPOSE_HDR_VALUE_MAX];
    CHECK_EQ_INT(compose_http_header_parse("location: /api/orders/7", n, sizeof n, v, sizeof v), 0);
    CHECK_STR(n, "Location");
    CHECK_STR(v, "/api/orders/7");
    CHECK_EQ_INT(compose_http_header_parse("Retry-After:5  ", n, sizeof n, v, sizeof v), 0);
    CHECK_STR(v, "5");
    CHECK_EQ_INT(compose_http_header_parse("Cache-Control: max-age=60", n, sizeof n, v, sizeof v),
                 0);
    CHECK_EQ_INT(compose_http_header_parse("WWW-Authenticate: Bearer realm=\"x\"", n, sizeof n, v,
                                           sizeof v),
                 0);
    CHECK_EQ_INT(compose_http_header_parse("Set-Cookie: a=b", n, sizeof n, v, sizeof v), -1);
    CHECK_EQ_INT(compose_http_header_parse("Location", n, sizeof n, v, sizeof v), -1);
    CHECK_EQ_INT(compose_http_header_parse("Location: ", n, sizeof n, v, sizeof v), -1);
    CHECK_EQ_INT(compose_http_header_parse("Location: /a\r\nSet-Cookie: x=1", n, sizeof n, v,
                                           sizeof v),
                 -1);
    CHECK_EQ_INT(compose_http_header_parse("Location : /a", n, sizeof n, v, sizeof v), -1);
    CHECK_EQ_INT(compose_http_header_parse(NULL, n, sizeof n, v, sizeof v), -1);
}

TEST(reply_parse)
{
    compose_reply r;
    int dropped;
    char err[128];
    CHECK_EQ_INT(compose_reply_parse("{\"a\":1}", 7, NULL, NULL, &r, &dropped, err, sizeof err), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(same(r.body, "{\"a\":1}"));
    CHECK_STR(r.hdr_name, "");
    compose_reply_clear(&r);

    CHECK_EQ_INT(compose_reply_parse("[1,2]", 5, "202", "Location: /x", &r, &dropped, err,
                                     sizeof err),
                 0);
    CHECK_EQ_INT(r.status, 202);
    CHECK_STR(r.hdr_name, "Location");
    CHECK_EQ_INT(dropped, 0);
    compose_reply_clear(&r);

    CHECK_EQ_INT(compose_reply_parse("", 0, "204", "Set-Cookie: a=b", &r, &dropped, err,
                                     sizeof err),
                 0);
    CHECK(r.body == NULL);
    CHECK_EQ_INT(dropped, 1);
    CHECK_STR(r.hdr_name, "");
    compose_reply_clear(&r);

    CHECK_EQ_INT(compose_reply_parse("not json", 8, NULL, NULL, &r, &dropped, err, sizeof err), -1);
    CHECK_EQ_INT(compose_reply_parse("{\"a\":1} x", 9, NULL, NULL, &r, &dropped, err, sizeof err),
                 -1);
    CHECK_EQ_INT(compose_reply_parse("{}", 2, "700", NULL, &r, &dropped, err, sizeof err), -1);
    CHECK_EQ_INT(compose_reply_parse("\"s\"", 3, "404", NULL, &r, &dropped, err, sizeof err), 0);
    CHECK_EQ_INT(r.status, 404);
    compose_reply_clear(&r);
}

/* compose_json_valid agrees with jansson (JSON_DECODE_ANY) on every case here, numbers past
 * 64 bits aside (form only, see compose.h); and compose_reply_check with compose_reply_parse. */
TEST(json_valid_agrees_with_jansson)
{
    static const char *const cases[] = {
        "{}",
        "[]",
        "0",
        "-0",
        "1.5e3",
        "-1.25E-2",
        "\"s\"",
        "true",
        "false",
        "null",
        " {\"a\" : [1, 2, {\"b\": null}], \"c\": \"\\u00e9\\n\\\"\"} ",
        "\"\\ud83d\\ude00\"",
        "\"\xc3\xa9\"",
        "\"\xf0\x9f\x98\x80\"",
        "[[[[[]]]]]",
        "",
        " ",
        "{",
        "}",
        "[1,]",
        "{\"a\":1,}",
        "{\"a\"}",
        "{1:2}",
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "+1",
        "tru",
        "truex",
        "nul",
        "[1 2]",
        "\"abc",
        "\"a\x01\"",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\\u0000\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"\\ud800\\u0041\"",
        "\"\xc0\xaf\"",
        "\"\xe0\x80\xaf\"",
        "\"\xed\xa0\x80\"",
        "\"\xf4\x90\x80\x80\"",
        "\"\xff\"",
        "\"\xc3\"",
        "{\"a\":1} x",
        "[1]]",
        "NaN",
        "[1,2,3]\n",
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        json_error_t je;
        json_t *v = json_loadb(cases[i], strlen(cases[i]), JSON_DECODE_ANY, &je);
        int want = v != NULL;
        json_decref(v);
        if (compose_json_valid(cases[i], strlen(cases[i])) != want)
            fprintf(stderr, "  disagrees on [%s]\n", cases[i]);
        CHECK_EQ_INT(compose_json_valid(cases[i], strlen(cases[i])), want);
    }
    /* nesting: at the limit, and past it */
    static char deep[2 * (COMPOSE_JSON_MAX_DEPTH + 1) + 1];
    for (int d = COMPOSE_JSON_MAX_DEPTH; d <= COMPOSE_JSON_MAX_DEPTH + 1; d++) {
        memset(deep, '[', (size_t)d);
        memset(deep + d, ']', (size_t)d);
        deep[2 * d] = '\0';
        CHECK_EQ_INT(compose_json_valid(deep, (size_t)(2 * d)), d <= COMPOSE_JSON_MAX_DEPTH);
    }
    compose_reply r;
    int dropped;
    char err[128];
    CHECK_EQ_INT(compose_reply_check("{\"a\":1}", 7, "201", NULL, &r, &dropped, err, sizeof err),
                 0);
    CHECK(r.body == NULL && r.has_body == 1 && r.status == 201);
    CHECK_EQ_INT(compose_reply_check(" \n", 2, NULL, NULL, &r, &dropped, err, sizeof err), 0);
    CHECK(r.has_body == 0);
    CHECK_EQ_INT(compose_reply_check("{\"a\":1} x", 9, NULL, NULL, &r, &dropped, err, sizeof err),
                 -1);
}

TEST(merge_and_errors)
{
    route ro;
    memset(&ro, 0, sizeof ro);
    ro.ncalls = 3;
    strcpy(ro.calls[0].key, "orders");
    strcpy(ro.calls[1].key, "presence");
    strcpy(ro.calls[2].key, "empty");
    json_t *a[3] = {J("[1,2]"), NULL, J("{\"x\":true}")};
    json_t *m = compose_merge(&ro, a);
    CHECK(same(m, "{\"orders\":[1,2],\"presence\":null,\"empty\":{\"x\":true}}"));
    json_decref(m);
    json_decref(a[0]);
    json_decref(a[2]);

    size_t len = 0;
    char *body = compose_error_body("not_found", "no \"such\" route", &len);
    REQUIRE(body);
    CHECK_EQ_INT(len, strlen(body));
    CHECK(body[len - 1] == '\n');
    json_t *o = J(body);
    CHECK(same(o, "{\"error\":\"not_found\",\"message\":\"no \\\"such\\\" route\"}"));
    json_decref(o);
    free(body);
    body = compose_error_body("x", "\xff bad utf8", &len); /* never fails on a bad message */
    REQUIRE(body);
    free(body);

    const char *code;
    CHECK_EQ_INT(compose_bus_status(SC_ENORESPONDERS, &code), 503);
    CHECK_STR(code, "service_unavailable");
    CHECK_EQ_INT(compose_bus_status(-ENOTCONN, &code), 503);
    CHECK_EQ_INT(compose_bus_status(-ETIMEDOUT, &code), 504);
    CHECK_STR(code, "gateway_timeout");
    CHECK_EQ_INT(compose_bus_status(-EIO, &code), 502);
}

TEST_MAIN()
