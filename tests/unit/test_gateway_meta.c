/* test_gateway_meta.c - request ids, traceparent, bearer extraction, media types, CORS
 * origins (meta.c) and static path mapping (statics.c). */
#include "test.h"

#include "../../services/gateway/meta.h"
#include "../../services/gateway/statics.h"

TEST(request_ids)
{
    CHECK(meta_request_id_valid("abc-123_X.y:z"));
    CHECK(!meta_request_id_valid(""));
    CHECK(!meta_request_id_valid(NULL));
    CHECK(!meta_request_id_valid("a b"));
    CHECK(!meta_request_id_valid("a\r\nX-Evil: 1"));
    char big[META_RID_MAX + 2];
    memset(big, 'a', sizeof big);
    big[META_RID_MAX] = '\0';
    CHECK(meta_request_id_valid(big));
    big[META_RID_MAX] = 'a';
    big[META_RID_MAX + 1] = '\0';
    CHECK(!meta_request_id_valid(big));
    char a[33], b[33];
    meta_request_id_new(a);
    meta_request_id_new(b);
    CHECK_EQ_INT(strlen(a), 32);
    CHECK(meta_request_id_valid(a));
    CHECK(strcmp(a, b) != 0);
}

TEST(traceparent_parse)
{
    char trace[33], flags[3];
    const char *ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    CHECK_EQ_INT(meta_traceparent_parse(ok, trace, flags), 0);
    CHECK_STR(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK_STR(flags, "01");
    const char *bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",   /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", /* v00 too long */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  /* uppercase */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  /* zero trace */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  /* zero span */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* version ff */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* future, no '-' */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (meta_traceparent_parse(bad[i], trace, flags) == 0) printf("  accepted %s\n", bad[i]);
        CHECK(meta_traceparent_parse(bad[i], trace, flags) != 0);
    }
    /* a later version may carry more fields */
    CHECK_EQ_INT(meta_traceparent_parse(
                     "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-extra", trace, flags),
                 0);
}

TEST(traceparent_next)
{
    char out[META_TRACEPARENT_LEN + 1], trace[33], flags[3];
    const char *in = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    CHECK_EQ_INT(meta_traceparent_next(in, out), 1);
    CHECK_EQ_INT(strlen(out), META_TRACEPARENT_LEN);
    CHECK_EQ_INT(meta_traceparent_parse(out, trace, flags), 0);
    CHECK_STR(trace, "4bf92f3577b34da6a3ce929d0e0e4736"); /* same trace */
    CHECK_STR(flags, "00");
    CHECK(strncmp(out + 36, "00f067aa0ba902b7", 16) != 0); /* new span */

    CHECK_EQ_INT(meta_traceparent_next("garbage", out), 0);
    CHECK_EQ_INT(meta_traceparent_parse(out, trace, flags), 0);
    CHECK_STR(flags, "01");
    CHECK_EQ_INT(meta_traceparent_next(NULL, out), 0);
    CHECK_EQ_INT(meta_traceparent_parse(out, trace, flags), 0);

    CHECK_EQ_INT(
        meta_traceparent_next("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-extra", out),
        1);
    CHECK(strncmp(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36) == 0);
    CHECK_STR(out + 53, "01");

    meta_traceparent_format("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "01", out);
    CHECK_STR(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
}

TEST(bearer)
{
    const char *tok = NULL;
    size_t len = 0;
    CHECK_EQ_INT(meta_bearer("Bearer abc.def-_~+/==", &tok, &len), META_BEARER_OK);
    CHECK_EQ_INT(len, 14);
    CHECK(strncmp(tok, "abc.def-_~+/==", len) == 0);
    CHECK_EQ_INT(meta_bearer("bearer   x.y.z  ", &tok, &len), META_BEARER_OK);
    CHECK_EQ_INT(len, 5);
    CHECK_EQ_INT(meta_bearer(NULL, &tok, &len), META_BEARER_NONE);
    CHECK_EQ_INT(meta_bearer("Basic dXNlcjpwYXNz", &tok, &len), META_BEARER_NONE);
    CHECK_EQ_INT(meta_bearer("Bearerabc", &tok, &len), META_BEARER_NONE);
    CHECK_EQ_INT(meta_bearer("Bearer", &tok, &len), META_BEARER_INVALID);
    CHECK_EQ_INT(meta_bearer("Bearer ", &tok, &len), META_BEARER_INVALID);
    CHECK_EQ_INT(meta_bearer("Bearer a b", &tok, &len), META_BEARER_INVALID);
    CHECK_EQ_INT(meta_bearer("Bearer a=b", &tok, &len), META_BEARER_INVALID);
    CHECK_EQ_INT(meta_bearer("Bearer ===", &tok, &len), META_BEARER_INVALID);
}

TEST(scope_claims)
{
    CHECK(meta_scope_has("sidecast.api", "sidecast.api"));
    CHECK(meta_scope_has("openid  sidecast.api profile", "sidecast.api"));
    CHECK(!meta_scope_has("sidecast.apix sidecast", "sidecast.api"));
    CHECK(!meta_scope_has("", "sidecast.api"));
    CHECK(!meta_scope_has(NULL, "sidecast.api"));
    CHECK(!meta_scope_has("a", ""));
}

TEST(content_types)
{
    CHECK_EQ_INT(meta_content_type(NULL), META_CT_NONE);
    CHECK_EQ_INT(meta_content_type(""), META_CT_NONE);
    CHECK_EQ_INT(meta_content_type("application/json"), META_CT_JSON);
    CHECK_EQ_INT(meta_content_type("Application/JSON; charset=UTF-8"), META_CT_JSON);
    CHECK_EQ_INT(meta_content_type("application/json;charset=\"utf-8\""), META_CT_JSON);
    CHECK_EQ_INT(meta_content_type("application/json; charset=latin1"), META_CT_OTHER);
    CHECK_EQ_INT(meta_content_type("application/merge-patch+json"), META_CT_JSON);
    CHECK_EQ_INT(meta_content_type("application/x-www-form-urlencoded"), META_CT_FORM);
    CHECK_EQ_INT(meta_content_type("application/x-www-form-urlencoded ; charset=utf-8"),
                 META_CT_FORM);
    CHECK_EQ_INT(meta_content_type("text/plain"), META_CT_OTHER);
    CHECK_EQ_INT(meta_content_type("multipart/form-data; boundary=x"), META_CT_OTHER);
    CHECK_EQ_INT(meta_content_type("application/jsonx"), META_CT_OTHER);
}

TEST(cors_origins)
{
    const char *list = "http://localhost:8080, http://127.0.0.1:8080 ,https://app.example";
    CHECK(meta_origin_allowed(list, "http://localhost:8080"));
    CHECK(meta_origin_allowed(list, "http://127.0.0.1:8080"));
    CHECK(meta_origin_allowed(list, "https://app.example"));
    CHECK(!meta_origin_allowed(list, "http://localhost:8081"));
    CHECK(!meta_origin_allowed(list, "http://localhost"));
    CHECK(!meta_origin_allowed(list, "https://app.example.evil"));
    CHECK(!meta_origin_allowed(list, "null"));
    CHECK(!meta_origin_allowed(list, NULL));
    CHECK(!meta_origin_allowed("", "http://localhost:8080"));
    CHECK(meta_origin_allowed("*", "http://anything"));
}

TEST(content_length)
{
    unsigned long long v = 1;
    CHECK_EQ_INT(meta_content_length("0", &v), 0);
    CHECK_EQ_INT(v, 0);
    CHECK_EQ_INT(meta_content_length("65536", &v), 0);
    CHECK_EQ_INT(v, 65536);
    CHECK_EQ_INT(meta_content_length("", &v), -1);
    CHECK_EQ_INT(meta_content_length("-1", &v), -1);
    CHECK_EQ_INT(meta_content_length("12a", &v), -1);
    CHECK_EQ_INT(meta_content_length("99999999999999999999", &v), -1);
}

TEST(static_paths)
{
    char out[600];
    CHECK_EQ_INT(statics_rel_path("/", out, sizeof out), 0);
    CHECK_STR(out, "index.html");
    CHECK_EQ_INT(statics_rel_path("/app.js", out, sizeof out), 0);
    CHECK_STR(out, "app.js");
    CHECK_EQ_INT(statics_rel_path("/css/site%20a.css", out, sizeof out), 0);
    CHECK_STR(out, "css/site a.css");
    CHECK_EQ_INT(statics_rel_path("/docs/", out, sizeof out), 0);
    CHECK_STR(out, "docs/index.html");
    CHECK_EQ_INT(statics_rel_path("/../etc/passwd", out, sizeof out), -1);
    CHECK_EQ_INT(statics_rel_path("/a/%2e%2e/b", out, sizeof out), -1);
    CHECK_EQ_INT(statics_rel_path("/%2e%2e%2fetc", out, sizeof out), -1);
    CHECK_EQ_INT(statics_rel_path("/.git/config", out, sizeof out), -1);
    CHECK_EQ_INT(statics_rel_path("/a//b", out, sizeof out), -1);
    CHECK_EQ_INT(statics_rel_path("/a\\..\\b", out, sizeof out), -1);
    CHECK_EQ_INT(statics_rel_path("/a%00b", out, sizeof out), -1);
    CHECK_EQ_INT(statics_rel_path("relative", out, sizeof out), -1);
    CHECK_STR(statics_content_type("index.html"), "text/html; charset=utf-8");
    CHECK_STR(statics_content_type("a.JS"), "text/javascript; charset=utf-8");
    CHECK_STR(statics_content_type("noext"), "application/octet-stream");
}

TEST_MAIN()
