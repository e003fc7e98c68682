/* test_proto_topic.c - topic names and NATS-style patterns (common/proto/topic.c). */
#include "test.h"

#include "proto/topic.h"

TEST(topic_valid)
{
    char t128[130];

    CHECK(topic_valid("prices"));
    CHECK(topic_valid("prices.BTC"));
    CHECK(topic_valid("chat.room-1.user_2"));
    CHECK(!topic_valid(""));
    CHECK(!topic_valid(NULL));
    CHECK(!topic_valid("."));
    CHECK(!topic_valid(".a"));
    CHECK(!topic_valid("a."));
    CHECK(!topic_valid("a..b"));
    CHECK(!topic_valid("a.*"));
    CHECK(!topic_valid("a.>"));
    CHECK(!topic_valid("a b"));
    CHECK(!topic_valid("caf\xc3\xa9"));
    memset(t128, 'a', 128);
    t128[128] = '\0';
    CHECK(topic_valid(t128));
    t128[128] = 'a';
    t128[129] = '\0';
    CHECK(!topic_valid(t128));
}

TEST(topic_match)
{
    CHECK(topic_match("prices.*", "prices.BTC"));
    CHECK(!topic_match("prices.*", "prices"));
    CHECK(!topic_match("prices.*", "prices.BTC.usd"));
    CHECK(topic_match("chat.>", "chat.room1"));
    CHECK(topic_match("chat.>", "chat.room1.thread.x"));
    CHECK(!topic_match("chat.>", "chat"));
    CHECK(!topic_match("chat.>", "chatter.x"));
    CHECK(topic_match(">", "anything.at.all"));
    CHECK(topic_match("*", "one"));
    CHECK(!topic_match("*", "one.two"));
    CHECK(topic_match("*.b.*", "a.b.c"));
    CHECK(!topic_match("*.b.*", "a.x.c"));
    CHECK(topic_match("prices.BTC", "prices.BTC"));
    CHECK(!topic_match("prices.BTC", "prices.BT"));
    CHECK(!topic_match("prices.BT", "prices.BTC"));
    CHECK(!topic_match("prices", "prices.BTC"));
    /* '>' only as the last token; '*' only as a whole token; no empty tokens. */
    CHECK(!topic_match("a.>.c", "a.b.c"));
    CHECK(!topic_match("pri*", "prices"));
    CHECK(!topic_match("a..b", "a.b"));
    CHECK(!topic_match("", "a"));
    CHECK(!topic_match("a.", "a.b"));
    /* A topic never carries wildcards: a client asking for "prices.*" gets no match. */
    CHECK(!topic_match("prices.*", "prices.*"));
    CHECK(!topic_match(">", "a.>"));
    CHECK(!topic_match(NULL, "a"));
    CHECK(!topic_match("a", NULL));
}

TEST(patterns_and_pattern_lists)
{
    CHECK(topic_pattern_valid_n("prices.*", 8));
    CHECK(topic_pattern_valid_n("chat.>", 6));
    CHECK(topic_pattern_valid_n(">", 1));
    CHECK(!topic_pattern_valid_n("chat.>.x", 8)); /* ">" only last */
    CHECK(!topic_pattern_valid_n("a..b", 4));
    CHECK(!topic_pattern_valid_n("a.", 2));
    CHECK(!topic_pattern_valid_n("a b", 3));
    CHECK(!topic_pattern_valid_n("", 0));
    CHECK(!topic_pattern_valid_n("pri*", 4)); /* a wildcard is a whole token */
    json_t *a = topic_patterns_json("prices.*,chat.>");
    REQUIRE(a != NULL);
    CHECK_EQ_INT((int)json_array_size(a), 2);
    CHECK_STR(json_string_value(json_array_get(a, 1)), "chat.>");
    json_decref(a);
    a = topic_patterns_json("");
    REQUIRE(a != NULL);
    CHECK_EQ_INT((int)json_array_size(a), 0);
    json_decref(a);
    CHECK(topic_patterns_json("prices.*,,chat") == NULL);
    CHECK(topic_patterns_json("bad topic") == NULL);
}

TEST_MAIN()
