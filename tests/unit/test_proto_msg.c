/* test_proto_msg.c - unit tests of common/proto/msg.c: the sidecast.v1 client message parser,
 * the edge message encoders (read back with jansson), the JSON check and string escaping. */
#include "test.h"

#include "proto/msg.h"

#include <jansson.h>

#include <stdint.h>

/* msg_parse on a C string (no NUL inside). */
static int parse(const char *text, msg_in *m) { return msg_parse(text, strlen(text), NULL, m); }

/* msg_parse with limits. */
static int parse_lim(const char *text, const msg_limits *lim, msg_in *m)
{
    return msg_parse(text, strlen(text), lim, m);
}

/* Loads text strictly (one value, no duplicate keys); NULL when it is not JSON. */
static json_t *load(const char *text, size_t len)
{
    return json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
}

/* 1 when the JSON texts a and b hold equal values. */
static int json_same(const char *a, const char *b)
{
    json_t *ja = load(a, strlen(a)), *jb = load(b, strlen(b));
    int eq = ja != NULL && jb != NULL && json_equal(ja, jb);

    json_decref(ja);
    json_decref(jb);
    return eq;
}

/* Builds `{"type":"publish","topic":"t","data":` + depth-1 nested arrays + `}`: a message of
 * the given nesting depth, the message object included. Caller frees. */
static char *nested_publish(int depth)
{
    size_t cap = 64 + 2 * (size_t)depth;
    char *s = malloc(cap);
    size_t n;

    if (s == NULL) return NULL;
    n = (size_t)snprintf(s, cap, "{\"type\":\"publish\",\"topic\":\"t\",\"data\":");
    for (int i = 1; i < depth; i++) s[n++] = '[';
    if (depth == 1) s[n++] = '0';
    for (int i = 1; i < depth; i++) s[n++] = ']';
    s[n++] = '}';
    s[n] = '\0';
    return s;
}

/* ---- parser: each type ---- */

TEST(parse_auth)
{
    msg_in m;

    REQUIRE(parse("{\"type\":\"auth\",\"token\":\"abc.def.ghi\"}", &m) == SC_OK);
    CHECK_EQ_INT(m.type, MSG_AUTH);
    CHECK_STR(m.token, "abc.def.ghi");
    CHECK_EQ_INT(m.token_len, 11);
    CHECK_STR(m.topic, "");
    CHECK_EQ_INT(m.since, -1);
    CHECK_STR(m.id, "");
    CHECK(m.data == NULL);
    CHECK(m.error == NULL);
    msg_in_clear(&m);
    CHECK(m.token == NULL);
}

TEST(parse_refresh)
{
    msg_in m;

    REQUIRE(parse(" \n{ \"token\" : \"t1\", \"type\" : \"refresh\", \"id\": \"r1\" }\t", &m) ==
            SC_OK);
    CHECK_EQ_INT(m.type, MSG_REFRESH);
    CHECK_STR(m.token, "t1");
    CHECK_STR(m.id, "\"r1\"");
    msg_in_clear(&m);
}

TEST(parse_subscribe)
{
    msg_in m;

    REQUIRE(parse("{\"type\":\"subscribe\",\"topic\":\"prices.BTC\"}", &m) == SC_OK);
    CHECK_EQ_INT(m.type, MSG_SUBSCRIBE);
    CHECK_STR(m.topic, "prices.BTC");
    CHECK_EQ_INT(m.since, -1);
    msg_in_clear(&m);

    REQUIRE(parse("{\"type\":\"subscribe\",\"topic\":\"user\",\"since\":42}", &m) == SC_OK);
    CHECK_STR(m.topic, "user");
    CHECK_EQ_INT(m.since, 42);
    msg_in_clear(&m);

    REQUIRE(parse("{\"type\":\"subscribe\",\"topic\":\"a\",\"since\":null}", &m) == SC_OK);
    CHECK_EQ_INT(m.since, -1);
    msg_in_clear(&m);

    REQUIRE(parse("{\"type\":\"subscribe\",\"topic\":\"a\",\"since\":0}", &m) == SC_OK);
    CHECK_EQ_INT(m.since, 0);
    msg_in_clear(&m);

    REQUIRE(parse("{\"type\":\"subscribe\",\"topic\":\"a\",\"since\":9007199254740992}", &m) ==
            SC_OK);
    CHECK_EQ_INT(m.since, 9007199254740992LL);
    msg_in_clear(&m);
}

TEST(parse_since_errors)
{
    static const char *bad[] = {
        "{\"type\":\"subscribe\",\"topic\":\"a\",\"since\":9007199254740993}",
        "{\"type\":\"subscribe\",\"topic\":\"a\",\"since\":-1}",
        "{\"type\":\"subscribe\",\"topic\":\"a\",\"since\":1.5}",
        "{\"type\":\"subscribe\",\"topic\":\"a\",\"since\":5.0}",
        "{\"type\":\"subscribe\",\"topic\":\"a\",\"since\":1e3}",
        "{\"type\":\"subscribe\",\"topic\":\"a\",\"since\":\"5\"}",
        "{\"type\":\"subscribe\",\"topic\":\"a\",\"since\":true}",
        "{\"type\":\"subscribe\",\"topic\":\"a\",\"since\":[1]}",
        "{\"type\":\"subscribe\",\"topic\":\"a\",\"since\":\"Last\"}",
        "{\"type\":\"subscribe\",\"topic\":\"a\",\"since\":\"last\\u0000\"}",
        "{\"type\":\"subscribe\",\"topic\":\"a\",\"mode\":\"all\"}",
        "{\"type\":\"subscribe\",\"topic\":\"a\",\"mode\":\"latest \"}",
        "{\"type\":\"subscribe\",\"topic\":\"a\",\"mode\":\"latest\\u0000\"}",
        "{\"type\":\"subscribe\",\"topic\":\"a\",\"mode\":1}",
        "{\"type\":\"subscribe\",\"topic\":\"a\",\"since\":\"last\",\"mode\":true}",
    };
    msg_in m;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ_INT(parse(bad[i], &m), SC_EMALFORMED);
        CHECK_EQ_INT(m.type, MSG_SUBSCRIBE);
        CHECK(m.error != NULL);
        CHECK_STR(m.topic, ""); /* nothing half-filled is left behind */
        CHECK_EQ_INT(m.since, -1);
        CHECK(!m.latest);
        msg_in_clear(&m);
    }
}

/* since "last" (the topic's latest event first) and mode "latest" (conflation) */
TEST(parse_since_last_and_mode_latest)
{
    msg_in m;

    REQUIRE(parse("{\"type\":\"subscribe\",\"topic\":\"a\",\"since\":\"last\"}", &m) == SC_OK);
    CHECK_EQ_INT(m.since, MSG_SINCE_LAST);
    CHECK(!m.latest);
    msg_in_clear(&m);

    REQUIRE(parse("{\"type\":\"subscribe\",\"topic\":\"a\",\"mode\":\"latest\"}", &m) == SC_OK);
    CHECK_EQ_INT(m.since, -1);
    CHECK(m.latest);
    msg_in_clear(&m);
    CHECK(!m.latest); /* cleared */

    REQUIRE(parse("{\"type\":\"subscribe\",\"topic\":\"a\",\"since\":7,\"mode\":null}", &m) ==
            SC_OK);
    CHECK_EQ_INT(m.since, 7);
    CHECK(!m.latest);
    msg_in_clear(&m);

    /* mode belongs to subscribe: elsewhere it is an unknown member, ignored */
    REQUIRE(parse("{\"type\":\"unsubscribe\",\"topic\":\"a\",\"mode\":\"latest\"}", &m) == SC_OK);
    CHECK(!m.latest);
    msg_in_clear(&m);
}

TEST(parse_unsubscribe)
{
    msg_in m;

    REQUIRE(parse("{\"type\":\"unsubscribe\",\"topic\":\"chat.room-1\",\"since\":\"x\"}", &m) ==
            SC_OK); /* since is not a member of unsubscribe: ignored */
    CHECK_EQ_INT(m.type, MSG_UNSUBSCRIBE);
    CHECK_STR(m.topic, "chat.room-1");
    CHECK_EQ_INT(m.since, -1);
    msg_in_clear(&m);
}

TEST(parse_publish)
{
    msg_in m;

    REQUIRE(parse("{\"type\":\"publish\",\"topic\":\"chat.x\",\"id\":3,"
                  "\"data\": { \"b\" : [ true , null , 1.5 ] , \"a\" : \"\\u00e9\" } }",
                  &m) == SC_OK);
    CHECK_EQ_INT(m.type, MSG_PUBLISH);
    CHECK_STR(m.topic, "chat.x");
    CHECK_STR(m.id, "3");
    CHECK_STR(m.data, "{\"b\":[true,null,1.5],\"a\":\"\\u00e9\"}"); /* compact, as written */
    CHECK_EQ_INT(m.data_len, strlen(m.data));
    msg_in_clear(&m);
    CHECK(m.data == NULL);

    REQUIRE(parse("{\"type\":\"publish\",\"topic\":\"a\",\"data\":null}", &m) == SC_OK);
    CHECK_STR(m.data, "null");
    msg_in_clear(&m);

    REQUIRE(parse("{\"type\":\"publish\",\"topic\":\"a\",\"data\":\"s\\u0000t\"}", &m) == SC_OK);
    CHECK_STR(m.data, "\"s\\u0000t\"");
    msg_in_clear(&m);

    REQUIRE(parse("{\"type\":\"publish\",\"topic\":\"a\",\"data\":-12}", &m) == SC_OK);
    CHECK_STR(m.data, "-12");
    msg_in_clear(&m);

    CHECK_EQ_INT(parse("{\"type\":\"publish\",\"topic\":\"a\"}", &m), SC_EMALFORMED);
    msg_in_clear(&m);
    CHECK_EQ_INT(parse("{\"type\":\"publish\",\"data\":1}", &m), SC_EMALFORMED);
    msg_in_clear(&m);
}

/* data is the client's text with whitespace outside strings removed: numbers, escapes and
 * key order unchanged. */
TEST(parse_publish_data_as_written)
{
    static const struct {
        const char *msg, *data;
    } cases[] = {
        {"{\"type\":\"publish\",\"topic\":\"a\",\"data\":0.1}", "0.1"},
        {"{\"type\":\"publish\",\"topic\":\"a\",\"data\": [1.50, 1E5, -0, 1e-7 ] }",
         "[1.50,1E5,-0,1e-7]"},
        {"{\"data\" :\n\"a b\\\" \\\\ } ]\" , \"type\":\"publish\",\"topic\":\"a\"}",
         "\"a b\\\" \\\\ } ]\""},
        {"{\"type\":\"publish\",\"topic\":\"a\",\"\\u0064ata\":[1, 2],\"x\":{\"data\":3}}",
         "[1,2]"},
        {"{\"x\":{\"data\":3},\"type\":\"publish\",\"topic\":\"a\",\"data\":{ \"k\" : [ ] }}",
         "{\"k\":[]}"},
        {"{\"type\":\"publish\",\"topic\":\"a\",\"data\":\"\",\"z\":1}", "\"\""},
        {"{\"type\":\"publish\",\"topic\":\"a\",\"data\":true}", "true"},
        {"{\"type\":\"publish\",\"topic\":\"a\",\"data\":[\"\\\\\",{\"q\":\"]\"}]}",
         "[\"\\\\\",{\"q\":\"]\"}]"},
    };
    msg_in m;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        REQUIRE(parse(cases[i].msg, &m) == SC_OK);
        CHECK_STR(m.data, cases[i].data);
        CHECK_EQ_INT(m.data_len, strlen(cases[i].data));
        msg_in_clear(&m);
    }
}

TEST(parse_ping)
{
    msg_in m;

    REQUIRE(parse("{\"type\":\"ping\"}", &m) == SC_OK);
    CHECK_EQ_INT(m.type, MSG_PING);
    CHECK_STR(m.id, "");
    msg_in_clear(&m);

    REQUIRE(parse("{\"type\":\"ping\",\"id\":null}", &m) == SC_OK);
    CHECK_STR(m.id, "");
    msg_in_clear(&m);
}

TEST(parse_unknown_members_ignored)
{
    msg_in m;

    REQUIRE(parse("{\"v\":2,\"type\":\"ping\",\"x\":{\"y\":[1,{}]},\"since\":\"junk\","
                  "\"token\":5,\"topic\":\"..\"}",
                  &m) == SC_OK);
    CHECK_EQ_INT(m.type, MSG_PING);
    CHECK(m.token == NULL);
    CHECK_STR(m.topic, "");
    msg_in_clear(&m);
}

/* ---- ids ---- */

TEST(parse_ids_echoed)
{
    static const struct {
        const char *in, *id;
    } cases[] = {
        {"\"abc\"", "\"abc\""},
        {"\"\"", "\"\""},
        {"-17", "-17"},
        {"0", "0"},
        {"9223372036854775807", "9223372036854775807"},
        {"-9223372036854775808", "-9223372036854775808"},
        {"\"q\\\"\\\\\\/\\u00e9\\n\\u0001\\u2028\"", "\"q\\\"\\\\\\/\\u00e9\\n\\u0001\\u2028\""},
        {"\"\\ud83d\\ude00\"", "\"\\ud83d\\ude00\""},
        {"\"\xf0\x9f\x98\x80\xe2\x80\xa8\"", "\"\xf0\x9f\x98\x80\xe2\x80\xa8\""},
        {"-0", "-0"},
        {"\"a\\u0000b\"", "\"a\\u0000b\""},
    };
    char text[256], out[512];
    msg_in m;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(text, sizeof text, "{\"type\":\"ping\",\"id\":%s}", cases[i].in);
        REQUIRE(parse(text, &m) == SC_OK);
        CHECK_STR(m.id, cases[i].id);
        CHECK(json_same(m.id, cases[i].in)); /* the same value as the client sent */
        REQUIRE(msg_pong_build(out, sizeof out, m.id) > 0);
        json_t *j = load(out, strlen(out)), *want = load(cases[i].in, strlen(cases[i].in));
        CHECK(j != NULL && json_equal(json_object_get(j, "id"), want));
        json_decref(j);
        json_decref(want);
        msg_in_clear(&m);
    }
}

TEST(parse_id_limits)
{
    char text[512], id[80];
    msg_in m;

    memset(id, 'x', 64);
    id[64] = '\0';
    snprintf(text, sizeof text, "{\"type\":\"ping\",\"id\":\"%s\"}", id);
    REQUIRE(parse(text, &m) == SC_OK);
    CHECK_EQ_INT(strlen(m.id), 66);
    msg_in_clear(&m);

    /* 64 bytes that all need \u00XX: the largest id text */
    text[0] = '\0';
    strcat(text, "{\"type\":\"ping\",\"id\":\"");
    for (int i = 0; i < 64; i++) strcat(text, "\\u001f");
    strcat(text, "\"}");
    REQUIRE(parse(text, &m) == SC_OK);
    CHECK_EQ_INT(strlen(m.id), 2 + 64 * 6);
    msg_in_clear(&m);

    id[64] = 'x';
    id[65] = '\0';
    snprintf(text, sizeof text, "{\"type\":\"ping\",\"id\":\"%s\"}", id);
    CHECK_EQ_INT(parse(text, &m), SC_EMALFORMED);
    CHECK_STR(m.id, "");
    msg_in_clear(&m);

    static const char *bad[] = {"1.5", "1e2", "true", "false", "[1]", "{\"a\":1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, "{\"type\":\"ping\",\"id\":%s}", bad[i]);
        CHECK_EQ_INT(parse(text, &m), SC_EMALFORMED);
        CHECK_STR(m.id, "");
        msg_in_clear(&m);
    }
}

TEST(parse_error_keeps_id_and_type)
{
    msg_in m;
    char out[256];
    json_t *j;

    CHECK_EQ_INT(parse("{\"type\":\"subscribe\",\"id\":\"s-1\",\"topic\":\"a..b\"}", &m),
                 SC_ETOPIC);
    CHECK_EQ_INT(m.type, MSG_SUBSCRIBE);
    CHECK_STR(m.id, "\"s-1\"");
    REQUIRE(msg_error_build(out, sizeof out, m.id, msg_code(SC_ETOPIC), m.error) > 0);
    j = load(out, strlen(out));
    REQUIRE(j != NULL);
    CHECK_STR(json_string_value(json_object_get(j, "type")), "error");
    CHECK_STR(json_string_value(json_object_get(j, "id")), "s-1");
    CHECK_STR(json_string_value(json_object_get(j, "code")), "bad_topic");
    CHECK_STR(json_string_value(json_object_get(j, "message")), m.error);
    json_decref(j);
    msg_in_clear(&m);

    CHECK_EQ_INT(parse("{\"type\":\"warp\",\"id\":9}", &m), SC_ETYPE);
    CHECK_EQ_INT(m.type, MSG_NONE);
    CHECK_STR(m.id, "9");
    msg_in_clear(&m);

    CHECK_EQ_INT(parse("{\"type\":\"publish\",\"id\":1,\"topic\":\"t\",\"data\":[1,2,3]}", &m),
                 SC_OK); /* sanity for the next one */
    msg_in_clear(&m);
    msg_limits lim = MSG_LIMITS_DEFAULT;
    lim.max_data = 6;
    CHECK_EQ_INT(parse_lim("{\"type\":\"publish\",\"id\":1,\"topic\":\"t\",\"data\":[1,2,3]}", &lim,
                           &m),
                 SC_ETOOLARGE);
    CHECK_STR(m.id, "1");
    CHECK(m.data == NULL);
    CHECK_STR(m.topic, "");
    msg_in_clear(&m);
}

/* ---- errors ---- */

TEST(parse_errors)
{
    static const struct {
        const char *text;
        int rc;
    } cases[] = {
        {"", SC_EJSON},
        {"   ", SC_EJSON},
        {"hello", SC_EJSON},
        {"{\"type\":\"ping\"", SC_EJSON},
        {"{\"type\":\"ping\"} x", SC_EJSON},
        {"{\"type\":\"ping\"}{}", SC_EJSON},
        {"{'type':'ping'}", SC_EJSON},
        {"{\"type\":\"ping\",}", SC_EJSON},
        {"{\"type\":\"p\xff\"}", SC_EJSON},
        {"[]", SC_EMALFORMED},
        {"[{\"type\":\"ping\"}]", SC_EMALFORMED},
        {"\"ping\"", SC_EMALFORMED},
        {"null", SC_EMALFORMED},
        {"42", SC_EMALFORMED},
        {"{}", SC_EMALFORMED},
        {"{\"type\":5}", SC_EMALFORMED},
        {"{\"type\":null}", SC_EMALFORMED},
        {"{\"type\":[\"ping\"]}", SC_EMALFORMED},
        {"{\"type\":\"nope\"}", SC_ETYPE},
        {"{\"type\":\"PING\"}", SC_ETYPE},
        {"{\"type\":\"ping \"}", SC_ETYPE},
        {"{\"type\":\"\"}", SC_ETYPE},
        {"{\"type\":\"ping\\u0000\"}", SC_ETYPE},
        {"{\"type\":\"auth\"}", SC_EMALFORMED},
        {"{\"type\":\"auth\",\"token\":5}", SC_EMALFORMED},
        {"{\"type\":\"auth\",\"token\":null}", SC_EMALFORMED},
        {"{\"type\":\"auth\",\"token\":\"\"}", SC_EMALFORMED},
        {"{\"type\":\"refresh\",\"token\":\"a\\u0000b\"}", SC_EMALFORMED},
        {"{\"type\":\"subscribe\"}", SC_EMALFORMED},
        {"{\"type\":\"subscribe\",\"topic\":7}", SC_EMALFORMED},
        {"{\"type\":\"subscribe\",\"topic\":null}", SC_EMALFORMED},
        {"{\"type\":\"unsubscribe\",\"topic\":[\"a\"]}", SC_EMALFORMED},
        {"{\"type\":\"unsubscribe\",\"topic\":\"\"}", SC_ETOPIC},
        {"{\"type\":\"publish\",\"topic\":\"a b\",\"data\":1}", SC_ETOPIC},
    };
    msg_in m;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = parse(cases[i].text, &m);
        if (rc != cases[i].rc) printf("  case %zu: %s\n", i, cases[i].text);
        CHECK_EQ_INT(rc, cases[i].rc);
        CHECK(m.error != NULL && m.error[0] != '\0');
        CHECK(m.token == NULL && m.data == NULL);
        msg_in_clear(&m);
    }
}

TEST(parse_duplicate_keys)
{
    msg_in m;

    CHECK_EQ_INT(parse("{\"type\":\"ping\",\"type\":\"auth\"}", &m), SC_EJSON);
    CHECK_STR(m.error, "duplicate key");
    msg_in_clear(&m);
    CHECK_EQ_INT(parse("{\"type\":\"ping\",\"type\":\"ping\"}", &m), SC_EJSON);
    msg_in_clear(&m);
    CHECK_EQ_INT(parse("{\"type\":\"subscribe\",\"topic\":\"a\",\"topic\":\"b\"}", &m), SC_EJSON);
    msg_in_clear(&m);
    CHECK_EQ_INT(parse("{\"type\":\"publish\",\"topic\":\"a\",\"data\":{\"x\":1,\"y\":[{\"z\":1,"
                       "\"z\":2}]}}",
                       &m),
                 SC_EJSON);
    msg_in_clear(&m);
    /* the same key in two different objects is fine */
    CHECK_EQ_INT(parse("{\"type\":\"publish\",\"topic\":\"a\",\"data\":{\"type\":{\"type\":1}}}",
                       &m),
                 SC_OK);
    msg_in_clear(&m);
}

TEST(parse_depth)
{
    msg_in m;
    char *s;
    msg_limits lim = MSG_LIMITS_DEFAULT;

    s = nested_publish(32);
    REQUIRE(s != NULL);
    CHECK_EQ_INT(parse(s, &m), SC_OK);
    CHECK_EQ_INT(m.data_len, 2 * 31);
    msg_in_clear(&m);
    free(s);

    s = nested_publish(33);
    REQUIRE(s != NULL);
    CHECK_EQ_INT(parse(s, &m), SC_ETOOLARGE);
    CHECK_STR(m.error, "JSON nested too deep");
    msg_in_clear(&m);
    free(s);

    /* objects count as well as arrays */
    CHECK_EQ_INT(parse("{\"type\":\"ping\",\"x\":{\"a\":[{}]}}", &m), SC_OK);
    msg_in_clear(&m);
    lim.max_depth = 3;
    CHECK_EQ_INT(parse_lim("{\"type\":\"ping\",\"x\":{\"a\":[]}}", &lim, &m), SC_OK);
    msg_in_clear(&m);
    CHECK_EQ_INT(parse_lim("{\"type\":\"ping\",\"x\":{\"a\":[{}]}}", &lim, &m), SC_ETOOLARGE);
    msg_in_clear(&m);

    /* brackets inside strings are not nesting */
    lim.max_depth = 1;
    CHECK_EQ_INT(parse_lim("{\"type\":\"ping\",\"x\":\"[[[{{{\\\"[[\"}", &lim, &m), SC_OK);
    msg_in_clear(&m);

    /* very deep input is rejected cheaply, whatever follows */
    size_t n = 200000;
    s = malloc(n);
    REQUIRE(s != NULL);
    memset(s, '[', n);
    lim = (msg_limits)MSG_LIMITS_DEFAULT;
    lim.max_text = n;
    CHECK_EQ_INT(msg_parse(s, n, &lim, &m), SC_ETOOLARGE);
    msg_in_clear(&m);
    free(s);
}

TEST(parse_huge_numbers)
{
    msg_in m;

    CHECK_EQ_INT(parse("{\"type\":\"publish\",\"topic\":\"a\",\"data\":1e400}", &m), SC_EJSON);
    CHECK_STR(m.error, "number out of range");
    msg_in_clear(&m);
    CHECK_EQ_INT(parse("{\"type\":\"publish\",\"topic\":\"a\",\"data\":-1e400}", &m), SC_EJSON);
    msg_in_clear(&m);
    CHECK_EQ_INT(parse("{\"type\":\"publish\",\"topic\":\"a\",\"data\":[99999999999999999999]}",
                       &m),
                 SC_EJSON);
    CHECK_STR(m.error, "number out of range");
    msg_in_clear(&m);
    CHECK_EQ_INT(parse("{\"type\":\"subscribe\",\"topic\":\"a\",\"since\":9223372036854775808}",
                       &m),
                 SC_EJSON);
    msg_in_clear(&m);
    CHECK_EQ_INT(parse("{\"type\":\"ping\",\"id\":-9223372036854775809}", &m), SC_EJSON);
    msg_in_clear(&m);

    REQUIRE(parse("{\"type\":\"publish\",\"topic\":\"a\",\"data\":[1e300,-0,1E-5]}", &m) == SC_OK);
    CHECK(json_same(m.data, "[1e300,0,0.00001]"));
    msg_in_clear(&m);
}

TEST(parse_nul_bytes)
{
    static const char a[] = "{\"type\":\"ping\"}\0";
    static const char b[] = "{\"type\":\"pi\0ng\"}";
    static const char c[] = "\0{\"type\":\"ping\"}";
    msg_in m;

    CHECK_EQ_INT(msg_parse(a, sizeof a - 1, NULL, &m), SC_EJSON);
    CHECK_STR(m.error, "NUL byte in message");
    msg_in_clear(&m);
    CHECK_EQ_INT(msg_parse(b, sizeof b - 1, NULL, &m), SC_EJSON);
    msg_in_clear(&m);
    CHECK_EQ_INT(msg_parse(c, sizeof c - 1, NULL, &m), SC_EJSON);
    msg_in_clear(&m);
    /* the same text without the NUL, and not NUL-terminated: read len bytes only */
    CHECK_EQ_INT(msg_parse(a, sizeof a - 2, NULL, &m), SC_OK);
    msg_in_clear(&m);
    CHECK_EQ_INT(msg_parse("{\"type\":\"ping\"}garbage", 15, NULL, &m), SC_OK);
    msg_in_clear(&m);
    CHECK_EQ_INT(msg_parse(NULL, 0, NULL, &m), SC_EJSON);
    msg_in_clear(&m);
}

TEST(parse_topics)
{
    static const char *good[] = {"a",       "user",         "prices.BTC", "chat.room-1.x_y",
                                 "A-Z_0-9", "a.b.c.d.e.f.g"};
    static const char *bad[] = {"",     ".",           "..",  "a..b", ".a",      "a.",
                                "a.*",  "a.>",         "*",   ">",    "a b",     " a",
                                "a\\t", "caf\xc3\xa9", "a/b", "a,b",  "\\u00e9", "a\\u0000b"};
    char text[512], topic[200];
    msg_in m;

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(text, sizeof text, "{\"type\":\"subscribe\",\"topic\":\"%s\"}", good[i]);
        CHECK_EQ_INT(parse(text, &m), SC_OK);
        CHECK_STR(m.topic, good[i]);
        CHECK(msg_topic_valid(good[i], strlen(good[i])));
        msg_in_clear(&m);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, "{\"type\":\"subscribe\",\"topic\":\"%s\"}", bad[i]);
        int rc = parse(text, &m);
        if (rc != SC_ETOPIC) printf("  topic %s\n", bad[i]);
        CHECK_EQ_INT(rc, SC_ETOPIC);
        CHECK_STR(m.topic, "");
        msg_in_clear(&m);
    }

    memset(topic, 'a', 128);
    topic[128] = '\0';
    topic[64] = '.';
    CHECK(msg_topic_valid(topic, 128));
    snprintf(text, sizeof text, "{\"type\":\"publish\",\"topic\":\"%s\",\"data\":0}", topic);
    CHECK_EQ_INT(parse(text, &m), SC_OK);
    CHECK_STR(m.topic, topic);
    msg_in_clear(&m);
    topic[128] = 'a';
    topic[129] = '\0';
    CHECK(!msg_topic_valid(topic, 129));
    snprintf(text, sizeof text, "{\"type\":\"publish\",\"topic\":\"%s\",\"data\":0}", topic);
    CHECK_EQ_INT(parse(text, &m), SC_ETOPIC);
    msg_in_clear(&m);

    CHECK(!msg_topic_valid(NULL, 0));
    CHECK(!msg_topic_valid("ab", 0));
    CHECK(msg_topic_valid("ab.", 2)); /* length-bounded */
    CHECK(!msg_topic_valid("a\0b", 3));
}

TEST(parse_size_limits)
{
    msg_limits lim = MSG_LIMITS_DEFAULT;
    char *text, *tok;
    msg_in m;
    size_t n = 8192;

    tok = malloc(n + 2);
    text = malloc(n + 64);
    REQUIRE(tok != NULL && text != NULL);
    memset(tok, 'k', n);
    tok[n] = '\0';
    snprintf(text, n + 64, "{\"type\":\"auth\",\"token\":\"%s\"}", tok);
    REQUIRE(parse(text, &m) == SC_OK);
    CHECK_EQ_INT(m.token_len, n);
    CHECK_EQ_INT(strlen(m.token), n);
    msg_in_clear(&m);

    tok[n] = 'k';
    tok[n + 1] = '\0';
    snprintf(text, n + 64, "{\"type\":\"refresh\",\"token\":\"%s\"}", tok);
    CHECK_EQ_INT(parse(text, &m), SC_ETOOLARGE);
    CHECK(m.token == NULL);
    msg_in_clear(&m);

    lim.max_token = 3;
    CHECK_EQ_INT(parse_lim("{\"type\":\"auth\",\"token\":\"abc\"}", &lim, &m), SC_OK);
    msg_in_clear(&m);
    CHECK_EQ_INT(parse_lim("{\"type\":\"auth\",\"token\":\"abcd\"}", &lim, &m), SC_ETOOLARGE);
    msg_in_clear(&m);

    /* data: the limit applies to its compact form */
    lim.max_data = 7;
    CHECK_EQ_INT(parse_lim("{\"type\":\"publish\",\"topic\":\"a\",\"data\": [ 1 , 2 , 3 ] }", &lim,
                           &m),
                 SC_OK);
    CHECK_STR(m.data, "[1,2,3]");
    msg_in_clear(&m);
    CHECK_EQ_INT(parse_lim("{\"type\":\"publish\",\"topic\":\"a\",\"data\":[1,2,34]}", &lim, &m),
                 SC_ETOOLARGE);
    CHECK_STR(m.error, "data too large");
    msg_in_clear(&m);

    /* the whole message */
    lim = (msg_limits)MSG_LIMITS_DEFAULT;
    lim.max_text = 15;
    CHECK_EQ_INT(parse_lim("{\"type\":\"ping\"}", &lim, &m), SC_OK);
    msg_in_clear(&m);
    CHECK_EQ_INT(parse_lim("{\"type\":\"ping\"} ", &lim, &m), SC_ETOOLARGE);
    msg_in_clear(&m);

    free(tok);
    free(text);
}

TEST(codes_and_names)
{
    CHECK_STR(msg_code(SC_EJSON), "bad_json");
    CHECK_STR(msg_code(SC_EMALFORMED), "bad_message");
    CHECK_STR(msg_code(SC_ETYPE), "unknown_type");
    CHECK_STR(msg_code(SC_ETOPIC), "bad_topic");
    CHECK_STR(msg_code(SC_ETOOLARGE), "too_large");
    CHECK_STR(msg_code(-ENOMEM), "internal");
    CHECK_STR(msg_code(-99), "internal");
    CHECK_STR(msg_type_name(MSG_AUTH), "auth");
    CHECK_STR(msg_type_name(MSG_SUBSCRIBE), "subscribe");
    CHECK_STR(msg_type_name(MSG_UNSUBSCRIBE), "unsubscribe");
    CHECK_STR(msg_type_name(MSG_PUBLISH), "publish");
    CHECK_STR(msg_type_name(MSG_REFRESH), "refresh");
    CHECK_STR(msg_type_name(MSG_PING), "ping");
    CHECK_STR(msg_type_name(MSG_NONE), "");
}

TEST(clear_is_idempotent)
{
    msg_in m;

    msg_in_clear(NULL);
    REQUIRE(parse("{\"type\":\"auth\",\"token\":\"x\"}", &m) == SC_OK);
    msg_in_clear(&m);
    msg_in_clear(&m);
    CHECK(m.token == NULL && m.type == MSG_NONE && m.since == -1);
}

/* ---- JSON check ---- */

TEST(json_check_valid)
{
    static const char *good[] = {
        "0",
        "-0",
        "1",
        "-1",
        "10",
        "1.5",
        "-0.0e+1",
        "1E5",
        "1e-5",
        "123456789012345678901234",
        "true",
        "false",
        "null",
        "\"\"",
        "\"a\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0000\\uABcd\"",
        "\"\\ud83d\\ude00\"",
        "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\"",
        "[]",
        "{}",
        " [ 1 , [ ] , { } ] ",
        "{\"a\":{\"b\":[null,{\"c\":\"d\"}]}}",
        "\t\r\n1\n",
        "{\"a\":1,\"a\":2}", /* duplicates are a parser rule, not a JSON-check one */
        "\"\x7f\"",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int rc = msg_json_check(good[i], strlen(good[i]), 32);
        if (rc != SC_OK) printf("  good %zu: %s\n", i, good[i]);
        CHECK_EQ_INT(rc, SC_OK);
        CHECK(msg_json_valid(good[i], strlen(good[i])));
    }
}

TEST(json_check_invalid)
{
    static const char *bad[] = {
        "",
        " ",
        "01",
        "-01",
        "1.",
        ".5",
        "-",
        "+1",
        "1e",
        "1e+",
        "0x10",
        "1.e5",
        "NaN",
        "Infinity",
        "tru",
        "nul",
        "True",
        "[1,]",
        "[,1]",
        "[1 2]",
        "{\"a\"}",
        "{\"a\":}",
        "{\"a\":1,}",
        "{1:2}",
        "{\"a\" 1}",
        "{,}",
        "\"\\x\"",
        "\"abc",
        "\"\t\"",
        "\"\n\"",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"\\ud800\\u0041\"",
        "\"\\ud800x\"",
        "\"\\u12\"",
        "\"\\u12g4\"",
        "[] []",
        "1 2",
        "[",
        "]",
        "{",
        "}",
        "[}",
        "{]",
        "\"\xff\"",
        "\"\xc0\x80\"",
        "\"\xc1\xbf\"",
        "\"\xe0\x80\xaf\"",
        "\"\xf0\x80\x80\xaf\"",
        "\"\xed\xa0\x80\"",
        "\"\xf4\x90\x80\x80\"",
        "\"\xf5\x80\x80\x80\"",
        "\"\x80\"",
        "\"\xe2\x82\"",
        "\"\xe2\x82",
        "\xc3\xa9",
        "[1]\xef\xbb\xbf",
        "\xef\xbb\xbf[1]",
        "/* */1",
        "'a'",
        "\"\\",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = msg_json_check(bad[i], strlen(bad[i]), 32);
        if (rc != SC_EJSON) printf("  bad %zu: %s\n", i, bad[i]);
        CHECK_EQ_INT(rc, SC_EJSON);
        CHECK(!msg_json_valid(bad[i], strlen(bad[i])));
    }
    CHECK_EQ_INT(msg_json_check("\"a\0b\"", 5, 32), SC_EJSON);
    CHECK_EQ_INT(msg_json_check("1\0", 2, 32), SC_EJSON);
    CHECK_EQ_INT(msg_json_check(NULL, 0, 32), SC_EJSON);
    CHECK(msg_json_check("12", 1, 32) == SC_OK); /* length-bounded */
}

TEST(json_check_depth)
{
    char s[600];

    for (int d = 1; d <= MSG_DEPTH_CAP + 1; d++) {
        memset(s, '[', (size_t)d);
        memset(s + d, ']', (size_t)d);
        int want64 = d <= MSG_JSON_MAX_DEPTH;
        CHECK_EQ_INT(msg_json_valid(s, 2 * (size_t)d), want64);
        CHECK_EQ_INT(msg_json_check(s, 2 * (size_t)d, 1000),
                     d <= MSG_DEPTH_CAP ? SC_OK : SC_ETOOLARGE);
    }
    CHECK_EQ_INT(msg_json_check("[{\"a\":[]}]", 10, 3), SC_OK);
    CHECK_EQ_INT(msg_json_check("[{\"a\":[]}]", 10, 2), SC_ETOOLARGE);
    CHECK_EQ_INT(msg_json_check("1", 1, 0), SC_OK);  /* scalars have no depth */
    CHECK_EQ_INT(msg_json_check("[]", 2, 0), SC_OK); /* clamped to 1 */
}

/* Differential: every string literal of one or two arbitrary bytes and every text of one or
 * two bytes, checked by msg_json_check and by jansson; they must agree. Except texts with a
 * NUL byte: jansson takes NUL for the end of the input ("0\0" loads), which msg_parse never
 * lets it see. */
TEST(json_check_agrees_with_jansson)
{
    char s[4];
    int disagree = 0;

    for (unsigned a = 0; a < 256; a++) {
        for (unsigned b = 0; b < 257; b++) {
            size_t n = b < 256 ? 2 : 1;
            s[0] = (char)a;
            s[1] = (char)b;
            json_t *j = load(s, n);
            int ours = msg_json_check(s, n, 32) == SC_OK;
            if (memchr(s, '\0', n) != NULL)
                CHECK(!ours);
            else if (ours != (j != NULL) && disagree++ < 5)
                printf("  text %02x %02x: ours %d jansson %d\n", a, b, ours, j != NULL);
            json_decref(j);

            s[0] = '"';
            s[1] = (char)a;
            s[2] = (char)b;
            s[n + 1] = '"';
            j = load(s, n + 2);
            ours = msg_json_check(s, n + 2, 32) == SC_OK;
            if (ours != (j != NULL) && disagree++ < 5)
                printf("  string %02x %02x: ours %d jansson %d\n", a, b, ours, j != NULL);
            json_decref(j);
        }
    }
    CHECK_EQ_INT(disagree, 0);
}

/* ---- JSON string escaping ---- */

/* Escapes in[0..n), checks the result is valid JSON (both checkers), and returns the decoded
 * string through *dec (caller frees) and the escaped text in out. */
static int escape_roundtrip(const char *in, size_t n, char *out, size_t cap, char **dec,
                            size_t *dec_len)
{
    int len = msg_json_string(out, cap, in, n);
    json_t *j;

    *dec = NULL;
    if (len < 0 || (size_t)len != msg_json_string_len(in, n) || strlen(out) != (size_t)len)
        return 0;
    if (msg_json_check(out, (size_t)len, 1) != SC_OK) return 0;
    if ((j = load(out, (size_t)len)) == NULL || !json_is_string(j)) {
        json_decref(j);
        return 0;
    }
    *dec_len = json_string_length(j);
    *dec = malloc(*dec_len + 1);
    memcpy(*dec, json_string_value(j), *dec_len + 1);
    json_decref(j);
    return 1;
}

TEST(json_string_escaping)
{
    static const struct {
        const char *in;
        size_t n;
        const char *out;
    } cases[] = {
        {"abc", 3, "\"abc\""},
        {"", 0, "\"\""},
        {"q\"b\\s/", 6, "\"q\\\"b\\\\s/\""},
        {"\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\""},
        {"\x01\x1f\x7f", 3, "\"\\u0001\\u001f\x7f\""},
        {"a\0b", 3, "\"a\\u0000b\""},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14,
         "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""},
        {"\xe2\x80\xa8|\xe2\x80\xa9|\xe2\x80\xaa", 11, "\"\\u2028|\\u2029|\xe2\x80\xaa\""},
        {"\xff", 1, "\"\xef\xbf\xbd\""},
        {"a\xe2\x82", 3, "\"a\xef\xbf\xbd\""}, /* truncated: one U+FFFD */
        {"\xe2\x82\x41", 3,
         "\"\xef\xbf\xbd"
         "A\""}, /* maximal subpart, then A */
        {"\xed\xa0\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""}, /* surrogate */
        {"\xc0\xaf", 2, "\"\xef\xbf\xbd\xef\xbf\xbd\""},                 /* overlong */
        {"\xe0\x80\xaf", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""}, /* overlong */
        {"\xf0\x8f\xbf\xbf", 4,
         "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""}, /* overlong */
        {"\xf0\x9f\x98", 3, "\"\xef\xbf\xbd\""},
        {"\xf4\x90\x80\x80", 4,
         "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""}, /* above U+10FFFF */
        {"\x80\"", 2, "\"\xef\xbf\xbd\\\"\""},
    };
    char out[256];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *dec;
        size_t dn;
        int len = msg_json_string(out, sizeof out, cases[i].in, cases[i].n);
        CHECK_STR(out, cases[i].out);
        CHECK_EQ_INT(len, strlen(cases[i].out));
        CHECK(escape_roundtrip(cases[i].in, cases[i].n, out, sizeof out, &dec, &dn));
        free(dec);
    }
}

TEST(json_string_roundtrip_valid_utf8)
{
    static const char in[] = "\"x\"\\\n\x01 caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x80\xa8 end";
    char out[256], *dec;
    size_t dn;

    REQUIRE(escape_roundtrip(in, sizeof in - 1, out, sizeof out, &dec, &dn));
    CHECK_EQ_INT(dn, sizeof in - 1);
    CHECK(memcmp(dec, in, dn) == 0); /* valid UTF-8 comes back byte for byte */
    free(dec);
}

TEST(json_string_all_byte_pairs)
{
    char in[2], out[32], *dec;
    size_t dn;
    int bad = 0;

    for (unsigned a = 0; a < 256; a++) {
        for (unsigned b = 0; b < 256; b++) {
            in[0] = (char)a;
            in[1] = (char)b;
            if (!escape_roundtrip(in, 2, out, sizeof out, &dec, &dn) && bad++ < 5)
                printf("  bytes %02x %02x\n", a, b);
            free(dec);
        }
    }
    CHECK_EQ_INT(bad, 0);
}

TEST(json_string_capacity)
{
    char out[16];
    int len = msg_json_string(out, sizeof out, "ab\n", 3); /* "ab\n" quoted: 6 bytes */

    CHECK_EQ_INT(len, 6);
    for (size_t cap = 0; cap <= 6; cap++) CHECK_EQ_INT(msg_json_string(out, cap, "ab\n", 3), -1);
    CHECK_EQ_INT(msg_json_string(out, 7, "ab\n", 3), 6);
    CHECK_STR(out, "\"ab\\n\"");
    CHECK_EQ_INT(msg_json_string(NULL, 0, "x", 1), -1);
    CHECK_EQ_INT(msg_json_string_len("\x01\xff", 2), 2 + 6 + 3);
    CHECK_EQ_INT(msg_json_string_len("", 0), 2);
}

/* ---- encoders ---- */

/* Loads out (len bytes) and checks it is an object whose first member is "type": want. */
static json_t *load_msg(const char *out, int len, const char *want)
{
    char head[64];
    json_t *j;

    if (len < 0 || (size_t)len != strlen(out)) return NULL;
    snprintf(head, sizeof head, "{\"type\":\"%s\"", want);
    if (strncmp(out, head, strlen(head)) != 0) return NULL;
    if ((j = load(out, (size_t)len)) == NULL || !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

TEST(build_welcome)
{
    char out[512];
    int len = msg_welcome_build(out, sizeof out, "c-1", "al\"ice\\\n\x01\xc3\xa9\xff", 1800000000,
                                "edge-a");
    json_t *j = load_msg(out, len, "welcome");

    REQUIRE(j != NULL);
    CHECK_STR(json_string_value(json_object_get(j, "conn_id")), "c-1");
    CHECK_STR(json_string_value(json_object_get(j, "user")), "al\"ice\\\n\x01\xc3\xa9\xef\xbf\xbd");
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "expires_at")), 1800000000);
    CHECK(json_is_integer(json_object_get(j, "expires_at")));
    CHECK_STR(json_string_value(json_object_get(j, "edge")), "edge-a");
    CHECK_EQ_INT(json_object_size(j), 5);
    json_decref(j);

    len = msg_welcome_build(out, sizeof out, NULL, "", -5, "e");
    j = load_msg(out, len, "welcome");
    REQUIRE(j != NULL);
    CHECK_STR(json_string_value(json_object_get(j, "conn_id")), "");
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "expires_at")), -5);
    json_decref(j);

    len = msg_welcome_build(out, sizeof out, "c", "u", INT64_MIN, "e");
    CHECK(strstr(out, "\"expires_at\":-9223372036854775808,") != NULL);
    j = load_msg(out, len, "welcome");
    CHECK(j != NULL && json_integer_value(json_object_get(j, "expires_at")) == INT64_MIN);
    json_decref(j);
}

TEST(build_subscribed_unsubscribed)
{
    char out[256];
    json_t *j;
    int len;

    len = msg_subscribed_build(out, sizeof out, "prices.BTC");
    CHECK_STR(out, "{\"type\":\"subscribed\",\"topic\":\"prices.BTC\"}");
    CHECK_EQ_INT(len, strlen(out));
    len = msg_unsubscribed_build(out, sizeof out, "a\"b");
    j = load_msg(out, len, "unsubscribed");
    REQUIRE(j != NULL);
    CHECK_STR(json_string_value(json_object_get(j, "topic")), "a\"b");
    json_decref(j);
}

TEST(build_event)
{
    static const char data[] = "{\"order_id\":\"o-1\",\"px\":[1.5,null]}";
    char out[256];
    json_t *j, *d;
    int len;

    len = msg_event_build(out, sizeof out, "user", 42, data, sizeof data - 1);
    static const char want[] = "{\"type\":\"event\",\"topic\":\"user\",\"seq\":42,\"data\":"
                               "{\"order_id\":\"o-1\",\"px\":[1.5,null]}}";
    CHECK_STR(out, want);
    j = load_msg(out, len, "event");
    REQUIRE(j != NULL);
    CHECK_STR(json_string_value(json_object_get(j, "topic")), "user");
    CHECK_EQ_INT(json_integer_value(json_object_get(j, "seq")), 42);
    d = load(data, sizeof data - 1);
    CHECK(json_equal(json_object_get(j, "data"), d));
    json_decref(d);
    json_decref(j);
    CHECK((size_t)len + 1 <= msg_event_size(4, sizeof data - 1));

    len = msg_event_build(out, sizeof out, "t", 0, NULL, 0);
    CHECK_STR(out, "{\"type\":\"event\",\"topic\":\"t\",\"seq\":0,\"data\":null}");
    CHECK((size_t)len + 1 <= msg_event_size(1, 0));

    len = msg_event_build(out, sizeof out, "t", UINT64_MAX, "1", 1);
    CHECK_STR(out, "{\"type\":\"event\",\"topic\":\"t\",\"seq\":18446744073709551615,\"data\":1}");
    CHECK((size_t)len + 1 <= msg_event_size(1, 1));
    CHECK(msg_json_valid(out, (size_t)len));

    /* the largest escaped topic and seq still fit the bound */
    char topic[129];
    memset(topic, '\x01', 128);
    topic[128] = '\0';
    char big[1024];
    len = msg_event_build(big, sizeof big, topic, UINT64_MAX, "null", 4);
    REQUIRE(len > 0);
    CHECK_EQ_INT(msg_event_size(128, 4), (size_t)len + 1);
}

TEST(build_event_capacity)
{
    char out[128];
    int full = msg_event_build(out, sizeof out, "a.b", 7, "[1,2]", 5);

    REQUIRE(full > 0);
    for (size_t cap = 0; cap <= (size_t)full; cap++)
        CHECK_EQ_INT(msg_event_build(out, cap, "a.b", 7, "[1,2]", 5), -1);
    CHECK_EQ_INT(msg_event_build(out, (size_t)full + 1, "a.b", 7, "[1,2]", 5), full);
    CHECK_EQ_INT(strlen(out), full);
}

TEST(build_event_with_wrapped_bus_data)
{
    static const char raw[] = "not json \"\xff\x01";
    char esc[64], out[256];
    int n, len;
    json_t *j;

    CHECK(!msg_json_valid(raw, sizeof raw - 1));
    n = msg_json_string(esc, sizeof esc, raw, sizeof raw - 1);
    REQUIRE(n > 0);
    CHECK(msg_json_valid(esc, (size_t)n));
    len = msg_event_build(out, sizeof out, "prices.BTC", 9, esc, (size_t)n);
    j = load_msg(out, len, "event");
    REQUIRE(j != NULL);
    CHECK_STR(json_string_value(json_object_get(j, "data")), "not json \"\xef\xbf\xbd\x01");
    json_decref(j);
}

TEST(build_ack_pong)
{
    char out[256];
    json_t *j;
    int len;

    len = msg_ack_build(out, sizeof out, "7");
    CHECK_STR(out, "{\"type\":\"ack\",\"id\":7}");
    CHECK_EQ_INT(len, strlen(out));
    len = msg_ack_build(out, sizeof out, "\"p-1\"");
    j = load_msg(out, len, "ack");
    REQUIRE(j != NULL);
    CHECK_STR(json_string_value(json_object_get(j, "id")), "p-1");
    json_decref(j);
    msg_ack_build(out, sizeof out, NULL);
    CHECK_STR(out, "{\"type\":\"ack\"}");
    msg_ack_build(out, sizeof out, "");
    CHECK_STR(out, "{\"type\":\"ack\"}");

    len = msg_pong_build(out, sizeof out, NULL);
    CHECK_STR(out, "{\"type\":\"pong\"}");
    j = load_msg(out, len, "pong");
    CHECK(j != NULL);
    json_decref(j);
    msg_pong_build(out, sizeof out, "-3");
    CHECK_STR(out, "{\"type\":\"pong\",\"id\":-3}");
    CHECK_EQ_INT(msg_pong_build(out, 15, NULL), -1);
    CHECK_EQ_INT(msg_pong_build(out, 16, NULL), 15);
}

TEST(build_error)
{
    char out[512];
    json_t *j;
    int len;

    len = msg_error_build(out, sizeof out, NULL, "bad_json", "invalid JSON");
    CHECK_STR(out, "{\"type\":\"error\",\"code\":\"bad_json\",\"message\":\"invalid JSON\"}");
    CHECK_EQ_INT(len, strlen(out));

    len = msg_error_build(out, sizeof out, "\"x\\\"y\"", "forbidden",
                          "no \"way\"\n\ttab \xe2\x80\xa8 \x1b \xc3");
    j = load_msg(out, len, "error");
    REQUIRE(j != NULL);
    CHECK_STR(json_string_value(json_object_get(j, "id")), "x\"y");
    CHECK_STR(json_string_value(json_object_get(j, "code")), "forbidden");
    const char *msg = json_string_value(json_object_get(j, "message"));
    CHECK_STR(msg, "no \"way\"\n\ttab \xe2\x80\xa8 \x1b \xef\xbf\xbd");
    CHECK(strstr(out, "\\u2028") != NULL && strstr(out, "\\u001b") != NULL);
    CHECK_EQ_INT(json_object_size(j), 4);
    json_decref(j);
}

TEST(build_expiry)
{
    char out[128];
    json_t *j;
    int len;

    len = msg_token_expiring_build(out, sizeof out, 1800000300);
    CHECK_STR(out, "{\"type\":\"token_expiring\",\"expires_at\":1800000300}");
    j = load_msg(out, len, "token_expiring");
    CHECK(j != NULL && json_integer_value(json_object_get(j, "expires_at")) == 1800000300);
    json_decref(j);

    len = msg_refreshed_build(out, sizeof out, 0);
    CHECK_STR(out, "{\"type\":\"refreshed\",\"expires_at\":0}");
    j = load_msg(out, len, "refreshed");
    CHECK(j != NULL);
    json_decref(j);
    CHECK_EQ_INT(msg_refreshed_build(out, 10, 5), -1);
}

/* Each client message type, parsed, answered, and the answer parsed back. */
TEST(roundtrip_publish_ack)
{
    msg_in m;
    char out[256];
    json_t *j;
    int len;

    REQUIRE(parse("{\"type\":\"publish\",\"topic\":\"chat.lobby\",\"id\":\"m\\u00e9-1\","
                  "\"data\":{\"text\":\"hi \\\"there\\\"\"}}",
                  &m) == SC_OK);
    len = msg_ack_build(out, sizeof out, m.id);
    j = load_msg(out, len, "ack");
    REQUIRE(j != NULL);
    CHECK_STR(json_string_value(json_object_get(j, "id")), "m\xc3\xa9-1");
    json_decref(j);

    len = msg_event_build(out, sizeof out, m.topic, 1, m.data, m.data_len);
    j = load_msg(out, len, "event");
    REQUIRE(j != NULL);
    CHECK_STR(json_string_value(json_object_get(json_object_get(j, "data"), "text")),
              "hi \"there\"");
    json_decref(j);
    msg_in_clear(&m);
}

TEST(rpc_parse_and_result)
{
    msg_in m;
    char out[256];
    REQUIRE(parse("{\"type\":\"rpc\",\"id\":7,\"method\":\"prices.quote\","
                  "\"data\":{ \"symbol\" : \"BTC\" }}",
                  &m) == SC_OK);
    CHECK(m.type == MSG_RPC);
    CHECK_STR(m.topic, "prices.quote");
    CHECK_STR(m.id, "7");
    CHECK_STR(m.data, "{\"symbol\":\"BTC\"}"); /* compacted, as a publish's */
    msg_in_clear(&m);
    REQUIRE(parse("{\"type\":\"rpc\",\"id\":\"a\",\"method\":\"echo.who\"}", &m) == SC_OK);
    CHECK_STR(m.data, "null"); /* no data: null is passed on */
    msg_in_clear(&m);
    CHECK(parse("{\"type\":\"rpc\",\"method\":\"echo.who\"}", &m) == SC_EMALFORMED);
    CHECK(strstr(m.error, "id") != NULL);
    msg_in_clear(&m);
    CHECK(parse("{\"type\":\"rpc\",\"id\":1,\"method\":\"a b\"}", &m) == SC_EMALFORMED);
    CHECK_STR(m.id, "1"); /* named in the error */
    msg_in_clear(&m);
    CHECK(parse("{\"type\":\"rpc\",\"id\":1,\"method\":\"echo.*\"}", &m) == SC_EMALFORMED);
    msg_in_clear(&m);
    CHECK(parse("{\"type\":\"rpc\",\"id\":1}", &m) == SC_EMALFORMED);
    msg_in_clear(&m);
    CHECK(parse("{\"type\":\"rpc\",\"id\":1,\"method\":7}", &m) == SC_EMALFORMED);
    msg_in_clear(&m);
    CHECK_STR(msg_type_name(MSG_RPC), "rpc");
    int n = msg_rpc_result_build(out, sizeof out, "\"c1\"", "{\"p\":1}", 7);
    CHECK_STR(out, "{\"type\":\"rpc_result\",\"id\":\"c1\",\"data\":{\"p\":1}}");
    CHECK((size_t)n + 1 <= msg_rpc_result_size(4, 7));
    n = msg_rpc_result_build(out, sizeof out, "3", NULL, 0);
    CHECK_STR(out, "{\"type\":\"rpc_result\",\"id\":3,\"data\":null}");
    CHECK(msg_rpc_result_build(out, 20, "3", "{}", 2) == -1);
    msg_ack_stored_build(out, sizeof out, "\"m-1\"", 1);
    CHECK_STR(out, "{\"type\":\"ack\",\"id\":\"m-1\",\"duplicate\":true}");
    msg_ack_stored_build(out, sizeof out, "7", 0);
    CHECK_STR(out, "{\"type\":\"ack\",\"id\":7,\"duplicate\":false}");
}

TEST_MAIN()
