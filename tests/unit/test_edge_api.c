/* test_edge_api.c - the server API's pure parts (services/edge/api.c): subjects, requests
 * (an object from a back end, or the gateway's envelope with body, params and query), their
 * bounds, connection ids and the close code of a disconnect. */
#include "test.h"

#include "../../services/edge/api.h"
#include "proto/msg.h"

#include <stdio.h>
#include <string.h>

static const api_limits LIM = {
    .max_data = 64, .max_topics = 3, .max_history = 10, .default_limit = 5};

static int parse(api_action a, const char *text, api_req *r, char *why)
{
    return api_parse(a, text, strlen(text), &LIM, r, why, 200);
}

/* Expects a 400 whose message contains want. */
static int refused(api_action a, const char *text, const char *want)
{
    api_req r;
    char why[200] = "";
    if (parse(a, text, &r, why) == 0) {
        api_req_free(&r);
        printf("  accepted but should not: %s\n", text);
        return 0;
    }
    if (!strstr(why, want)) {
        printf("  message \"%s\" lacks \"%s\"\n", why, want);
        return 0;
    }
    return 1;
}

TEST(subjects_name_actions)
{
    api_action a;
    CHECK(api_action_of("api.publish", &a) == 0 && a == API_PUBLISH);
    CHECK(api_action_of("api.presence.topic", &a) == 0 && a == API_PRESENCE_TOPIC);
    CHECK(api_action_of("api.counts", &a) == 0 && a == API_COUNTS);
    CHECK(api_action_of("api.publishx", &a) == -1);
    CHECK(api_action_of("api.", &a) == -1);
    CHECK(api_action_of(NULL, &a) == -1);
}

TEST(publish_from_an_object_and_an_envelope)
{
    api_req r;
    char why[200];
    REQUIRE(parse(API_PUBLISH,
                  "{\"topic\":\"prices.BTC\",\"data\":{\"p\": 1},"
                  "\"idempotency_key\":\"k-1\"}",
                  &r, why) == 0);
    CHECK_STR(r.topic, "prices.BTC");
    CHECK_STR(r.data, "{\"p\":1}"); /* compact */
    CHECK_STR(r.key, "k-1");
    api_req_free(&r);
    REQUIRE(parse(API_PUBLISH,
                  "{\"method\":\"POST\",\"path\":\"/api/v1/publish\",\"params\":{},"
                  "\"query\":{},\"body\":{\"topic\":\"a.b\",\"data\":\"x\"}}",
                  &r, why) == 0);
    CHECK_STR(r.topic, "a.b");
    CHECK_STR(r.data, "\"x\"");
    CHECK(r.key == NULL);
    api_req_free(&r);
    REQUIRE(parse(API_PUBLISH, "{\"topic\":\"a\",\"data\":null}", &r, why) == 0);
    CHECK_STR(r.data, "null");
    api_req_free(&r);
    api_req_free(NULL);
}

TEST(publish_refusals)
{
    CHECK(refused(API_PUBLISH, "", "topic")); /* empty: {} */
    CHECK(refused(API_PUBLISH, "[1]", "JSON object"));
    CHECK(refused(API_PUBLISH, "{\"topic\":\"a\",\"topic\":\"b\",\"data\":1}", "JSON object"));
    CHECK(refused(API_PUBLISH, "{\"data\":1}", "topic"));
    CHECK(refused(API_PUBLISH, "{\"topic\":\"a.*\",\"data\":1}", "not a topic"));
    CHECK(refused(API_PUBLISH, "{\"topic\":\"a..b\",\"data\":1}", "not a topic"));
    CHECK(refused(API_PUBLISH, "{\"topic\":\"a\"}", "data"));
    CHECK(refused(API_PUBLISH,
                  "{\"topic\":\"a\",\"data\":\"0123456789012345678901234567890123456789"
                  "012345678901234567890123456789\"}",
                  "over 64 bytes"));
    CHECK(refused(API_PUBLISH, "{\"topic\":\"a\",\"data\":1,\"idempotency_key\":\"\"}",
                  "idempotency_key"));
    CHECK(refused(API_PUBLISH, "{\"topic\":\"a\",\"data\":1,\"idempotency_key\":\"a b\"}",
                  "idempotency_key"));
    CHECK(refused(API_PUBLISH, "{\"topic\":\"a\",\"data\":1,\"idempotency_key\":7}",
                  "idempotency_key"));
    /* data from a query string is not data */
    CHECK(refused(API_PUBLISH,
                  "{\"method\":\"GET\",\"path\":\"/x\",\"body\":null,"
                  "\"query\":{\"topic\":\"a\",\"data\":\"1\"}}",
                  "data"));
}

TEST(broadcast_bounds)
{
    api_req r;
    char why[200];
    REQUIRE(parse(API_BROADCAST, "{\"topics\":[\"a\",\"b.c\"],\"data\":true}", &r, why) == 0);
    CHECK_EQ_INT(r.ntopics, 2);
    CHECK_STR(r.topics[1], "b.c");
    api_req_free(&r);
    CHECK(refused(API_BROADCAST, "{\"topics\":[],\"data\":1}", "1..3"));
    CHECK(refused(API_BROADCAST, "{\"topics\":\"a\",\"data\":1}", "array"));
    CHECK(refused(API_BROADCAST, "{\"topics\":[\"a\",\"b\",\"c\",\"d\"],\"data\":1}", "at most 3"));
    CHECK(refused(API_BROADCAST, "{\"topics\":[\"a\",\"a\"],\"data\":1}", "twice"));
    CHECK(refused(API_BROADCAST, "{\"topics\":[\"a\",1],\"data\":1}", "topics[1]"));
    CHECK(refused(API_BROADCAST, "{\"topics\":[\"a\"]}", "data"));
}

TEST(disconnect_by_user_or_conn)
{
    api_req r;
    char why[200];
    REQUIRE(parse(API_DISCONNECT, "{\"user\":\"alice\"}", &r, why) == 0);
    CHECK_STR(r.user, "alice");
    CHECK(r.conn == NULL && r.reconnect);
    CHECK_STR(r.reason, "disconnected by the server");
    api_req_free(&r);
    REQUIRE(parse(API_DISCONNECT, "{\"conn\":\"edge-1-42\",\"reconnect\":false,\"reason\":\"bye\"}",
                  &r, why) == 0);
    CHECK_STR(r.conn, "edge-1-42");
    CHECK(!r.reconnect);
    CHECK_STR(r.reason, "bye");
    api_req_free(&r);
    CHECK(refused(API_DISCONNECT, "{}", "either"));
    CHECK(refused(API_DISCONNECT, "{\"user\":\"a\",\"conn\":\"e-1\"}", "either"));
    CHECK(refused(API_DISCONNECT, "{\"user\":\"a b\"}", "user"));
    CHECK(refused(API_DISCONNECT, "{\"user\":\"\"}", "user"));
    CHECK(refused(API_DISCONNECT, "{\"conn\":\"edge\"}", "conn"));
    CHECK(refused(API_DISCONNECT, "{\"conn\":\"edge-\"}", "conn"));
    CHECK(refused(API_DISCONNECT, "{\"conn\":\"-7\"}", "conn"));
    CHECK(refused(API_DISCONNECT, "{\"conn\":\"edge-1x\"}", "conn"));
    CHECK(refused(API_DISCONNECT, "{\"user\":\"a\",\"reconnect\":1}", "reconnect"));
    char big[300];
    snprintf(big, sizeof big, "{\"user\":\"a\",\"reason\":\"%0124d\"}", 0);
    CHECK(refused(API_DISCONNECT, big, "reason"));
    snprintf(big, sizeof big, "{\"user\":\"a\",\"reason\":\"%0123d\"}", 0);
    REQUIRE(parse(API_DISCONNECT, big, &r, why) == 0); /* 123 bytes: a close frame's room */
    api_req_free(&r);
    CHECK_EQ_INT(api_close_code(true), MSG_CLOSE_SERVER);
    CHECK_EQ_INT(api_close_code(false), MSG_CLOSE_FORBIDDEN);
}

TEST(history_since_and_limit_from_query_strings)
{
    api_req r;
    char why[200];
    REQUIRE(parse(API_HISTORY, "{\"topic\":\"a\"}", &r, why) == 0);
    CHECK(r.since == 0);
    CHECK_EQ_INT(r.limit, 5);
    api_req_free(&r);
    REQUIRE(parse(API_HISTORY,
                  "{\"method\":\"GET\",\"path\":\"/api/v1/history/a\",\"body\":null,"
                  "\"params\":{\"topic\":\"a.b\"},"
                  "\"query\":{\"since\":\"42\",\"limit\":\"10\"}}",
                  &r, why) == 0);
    CHECK_STR(r.topic, "a.b");
    CHECK(r.since == 42);
    CHECK_EQ_INT(r.limit, 10);
    api_req_free(&r);
    CHECK(refused(API_HISTORY, "{\"topic\":\"a\",\"limit\":11}", "limit: 1..10"));
    CHECK(refused(API_HISTORY, "{\"topic\":\"a\",\"limit\":0}", "limit"));
    CHECK(refused(API_HISTORY, "{\"topic\":\"a\",\"since\":-1}", "since"));
    CHECK(refused(API_HISTORY, "{\"topic\":\"a\",\"since\":\"5\"}", "since")); /* not a query */
    CHECK(refused(API_HISTORY, "{\"topic\":\"a\",\"since\":9007199254740993}", "since"));
    CHECK(refused(API_HISTORY,
                  "{\"method\":\"GET\",\"path\":\"/h\",\"body\":null,"
                  "\"query\":{\"topic\":\"a\",\"since\":\"1e3\"}}",
                  "since"));
    CHECK(refused(API_HISTORY,
                  "{\"method\":\"GET\",\"path\":\"/h\",\"body\":null,"
                  "\"query\":{\"topic\":\"a\",\"limit\":\"\"}}",
                  "limit"));
}

TEST(presence_and_counts)
{
    api_req r;
    char why[200];
    REQUIRE(parse(API_PRESENCE_USER, "{\"user\":\"bob\"}", &r, why) == 0);
    CHECK_STR(r.user, "bob");
    api_req_free(&r);
    REQUIRE(parse(API_PRESENCE_TOPIC, "{\"topic\":\"prices.BTC\"}", &r, why) == 0);
    api_req_free(&r);
    REQUIRE(parse(API_COUNTS, "", &r, why) == 0); /* an empty request is {} */
    api_req_free(&r);
    CHECK(refused(API_PRESENCE_USER, "{}", "user"));
    CHECK(refused(API_PRESENCE_TOPIC, "{\"topic\":\">\"}", "topic"));
}

TEST(connection_ids)
{
    uint64_t c = 0;
    CHECK(api_conn_on_edge("edge-1-42", "edge-1", &c) == 0 && c == 42);
    CHECK(api_conn_on_edge("edge-1-42", "edge-2", &c) == -1);
    CHECK(api_conn_on_edge("edge-1-42", "edge", &c) == -1);
    CHECK(api_conn_on_edge("edge-1-", "edge-1", &c) == -1);
    CHECK(api_conn_on_edge("edge-1-4x", "edge-1", &c) == -1);
    CHECK(api_conn_on_edge("x", "x", &c) == -1);
}

TEST_MAIN()
