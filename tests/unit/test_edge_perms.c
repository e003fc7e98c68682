/* test_edge_perms.c - interned topic permissions (services/edge/perms.c): equal lists share
 * one set, the split between sub_topics and pub_topics counts, patterns that cannot match
 * are left out, oversized lists are refused, and the last reference frees the set. */
#include "test.h"

#include "../../services/edge/perms.h"

static json_t *claims(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_ALLOW_NUL, &e);
    if (!j) fprintf(stderr, "bad test JSON: %s\n", e.text);
    return j;
}

TEST(equal_lists_share_one_set)
{
    perms_table t = {0};
    json_t *a = claims("{\"sub_topics\":[\"prices.*\",\"chat.>\"],\"pub_topics\":[\"chat.>\"]}");
    json_t *b = claims("{\"sub_topics\":[\"prices.*\",\"chat.>\"],\"pub_topics\":[\"chat.>\"],"
                       "\"sub\":\"bob\"}");
    perms *pa = perms_get(&t, a, NULL), *pb = perms_get(&t, b, NULL);
    REQUIRE(pa && pb);
    CHECK(pa == pb);
    CHECK_EQ_INT(pa->refs, 2);
    CHECK(perms_allow(pa, false, "prices.BTC"));
    CHECK(perms_allow(pa, false, "chat.room1"));
    CHECK(!perms_allow(pa, true, "prices.BTC"));
    CHECK(perms_allow(pa, true, "chat.room1"));
    CHECK(!perms_allow(NULL, false, "prices.BTC"));
    perms_put(&t, pa);
    perms_put(&t, pb);
    perms_put(&t, NULL);
    json_decref(a);
    json_decref(b);
}

TEST(where_the_lists_split_counts)
{
    perms_table t = {0};
    json_t *a = claims("{\"sub_topics\":[\"x\",\"y\"],\"pub_topics\":[]}");
    json_t *b = claims("{\"sub_topics\":[\"x\"],\"pub_topics\":[\"y\"]}");
    perms *pa = perms_get(&t, a, NULL), *pb = perms_get(&t, b, NULL);
    REQUIRE(pa && pb);
    CHECK(pa != pb);
    CHECK(perms_allow(pa, false, "y"));
    CHECK(!perms_allow(pa, true, "y"));
    CHECK(!perms_allow(pb, false, "y"));
    CHECK(perms_allow(pb, true, "y"));
    perms_put(&t, pa);
    perms_put(&t, pb);
    json_decref(a);
    json_decref(b);
}

TEST(unmatchable_patterns_left_out_and_absent_lists_allow_nothing)
{
    perms_table t = {0};
    json_t *a = claims("{\"sub_topics\":[7,null,\"a\\u0000b\",\"ok\"]}");
    REQUIRE(a != NULL);
    perms *p = perms_get(&t, a, NULL);
    REQUIRE(p != NULL);
    CHECK_EQ_INT(p->len, 3); /* "ok\0" only */
    CHECK(perms_allow(p, false, "ok"));
    CHECK(!perms_allow(p, false, "a"));
    CHECK(!perms_allow(p, true, "ok"));
    perms_put(&t, p);
    json_decref(a);
}

TEST(oversized_lists_refused)
{
    perms_table t = {0};
    json_t *a = json_object(), *arr = json_array();
    char pat[100];
    memset(pat, 'a', sizeof pat - 1);
    pat[sizeof pat - 1] = '\0';
    for (int i = 0; i < PERMS_MAX / 100 + 1; i++) json_array_append_new(arr, json_string(pat));
    json_object_set_new(a, "sub_topics", arr);
    CHECK(perms_get(&t, a, NULL) == NULL);
    json_decref(a);
}

TEST(claims_named_otherwise_strings_and_defaults)
{
    perms_table t = {0};
    json_t *subs = json_pack("[s]", "news.*"), *pubs = json_pack("[]");
    perms_source src = {"scope_topics", "write_topics", subs, pubs};
    json_t *a = claims("{\"scope_topics\":\"prices.* chat.>,orders.o1\",\"sub_topics\":[\"x\"]}");
    REQUIRE(a != NULL);
    perms *p = perms_get(&t, a, &src);
    REQUIRE(p != NULL);
    CHECK(perms_allow(p, false, "prices.BTC"));
    CHECK(perms_allow(p, false, "chat.room"));
    CHECK(perms_allow(p, false, "orders.o1"));
    CHECK(!perms_allow(p, false, "x"));        /* sub_topics is not the claim any more */
    CHECK(!perms_allow(p, true, "chat.room")); /* no write_topics: the default, empty */
    json_t *b = claims("{\"sub\":\"bob\"}");   /* no claim at all: the default */
    perms *q = perms_get(&t, b, &src);
    REQUIRE(q != NULL);
    CHECK(perms_allow(q, false, "news.today"));
    CHECK(!perms_allow(q, false, "prices.BTC"));
    perms_put(&t, p);
    perms_put(&t, q);
    json_decref(a);
    json_decref(b);
    json_decref(subs);
    json_decref(pubs);
}

TEST(rpc_methods_are_a_third_list)
{
    perms_table t = {0};
    json_t *def = json_pack("[s]", "prices.quote");
    perms_source src = {NULL, NULL, NULL, NULL, "rpc", def};
    json_t *a = claims("{\"sub_topics\":[\"prices.*\"],\"pub_topics\":[\"chat.*\"],"
                       "\"rpc\":\"orders.* echo.who\"}");
    perms *p = perms_get(&t, a, &src);
    REQUIRE(p != NULL);
    CHECK(perms_allow_rpc(p, "orders.cancel"));
    CHECK(perms_allow_rpc(p, "echo.who"));
    CHECK(!perms_allow_rpc(p, "prices.quote")); /* the claim, not the default */
    CHECK(!perms_allow_rpc(p, "prices.BTC"));   /* a sub_topics pattern is no method */
    CHECK(perms_allow(p, true, "chat.room"));   /* the lists do not bleed into each other */
    CHECK(!perms_allow(p, true, "orders.cancel"));
    json_t *b = claims("{\"sub_topics\":[\"prices.*\"],\"pub_topics\":[\"chat.*\"]}");
    perms *q = perms_get(&t, b, &src);
    REQUIRE(q != NULL && q != p); /* the same topics, other methods: another set */
    CHECK(perms_allow_rpc(q, "prices.quote"));
    CHECK(!perms_allow_rpc(NULL, "prices.quote"));
    perms_put(&t, p);
    perms_put(&t, q);
    json_decref(a);
    json_decref(b);
    json_decref(def);
}

TEST_MAIN()
