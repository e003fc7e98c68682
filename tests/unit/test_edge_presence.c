/* test_edge_presence.c - presence.get's access rule (services/edge/presence.c). */
#include "test.h"

#include "../../services/edge/presence.h"

TEST(the_user_and_bus_services_may_read)
{
    CHECK(presence_may_read("alice", NULL, "alice"));
    CHECK(presence_may_read(NULL, NULL, "alice")); /* a service on the bus, no gateway */
    CHECK(!presence_may_read("bob", NULL, "alice"));
    CHECK(!presence_may_read("alicex", NULL, "alice"));
    CHECK(!presence_may_read("", NULL, "alice"));
}

TEST(a_sub_topics_grant_may_read)
{
    CHECK(presence_may_read("ops", "[\"presence.>\"]", "alice"));
    CHECK(presence_may_read("ops", "[\"prices.*\",\"presence.*\"]", "alice"));
    CHECK(presence_may_read("ops", "[\"presence.alice\"]", "alice"));
    CHECK(!presence_may_read("ops", "[\"presence.alice\"]", "bob"));
    CHECK(!presence_may_read("ops", "[\"prices.*\",\"chat.>\"]", "alice"));
    CHECK(!presence_may_read("ops", "[\"presence\"]", "alice"));
    CHECK(!presence_may_read("ops", "not json", "alice"));
    CHECK(!presence_may_read("ops", "{\"presence.>\":1}", "alice"));
    CHECK(!presence_may_read("ops", "[]", "alice"));
    /* ">" alone grants everything, presence included */
    CHECK(presence_may_read("ops", "[\">\"]", "alice"));
}

TEST_MAIN()
