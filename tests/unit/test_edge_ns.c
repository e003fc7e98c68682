/* test_edge_ns.c - topic namespaces (services/edge/ns.c): the file's checks, each named, and
 * the longest-prefix lookup on dot boundaries. */
#include "test.h"

#include "../../services/edge/ns.h"

#include <string.h>

static int parse(ns_table *t, const char *text, char *err)
{
    ns_init(t);
    return ns_parse(t, text, strlen(text), err, 300);
}

TEST(defaults_are_todays_behaviour)
{
    ns_table t;
    ns_init(&t);
    const ns_policy *p = ns_find(&t, "anything.at.all");
    CHECK(p->subscribe == NS_CLAIM && p->publish == NS_CLAIM && p->history && p->occupancy);
    CHECK(!p->fail_open && p->hook_ttl_s == 60 && !p->latest && !p->rpc_anyone);
    CHECK(!ns_any_hook(&t));
    ns_free(&t);
}

TEST(longest_prefix_on_dot_boundaries)
{
    ns_table t;
    char err[300];
    REQUIRE(parse(&t,
                  "{\"namespaces\":[{\"prefix\":\"orders\",\"subscribe\":\"hook\"},"
                  "{\"prefix\":\"orders.vip\",\"publish\":\"nobody\",\"history\":false,"
                  "\"history_s\":600},"
                  "{\"prefix\":\"chat\",\"publish\":\"hook\",\"hook_failure\":\"allow\","
                  "\"hook_ttl_s\":0,\"occupancy\":false,\"latest\":true,"
                  "\"rpc\":\"anyone\"}]}",
                  err) == 0);
    CHECK(ns_find(&t, "orders.o-1")->subscribe == NS_HOOK);
    CHECK(ns_find(&t, "orders")->subscribe == NS_HOOK);
    CHECK(ns_find(&t, "ordersx.1")->subscribe == NS_CLAIM); /* not a dot boundary */
    const ns_policy *vip = ns_find(&t, "orders.vip.1");
    CHECK(vip->publish == NS_NOBODY && !vip->history && vip->subscribe == NS_CLAIM);
    CHECK(vip->history_s == 600 && ns_find(&t, "orders.o-1")->history_s == 0);
    const ns_policy *chat = ns_find(&t, "chat.room");
    CHECK(chat->publish == NS_HOOK && chat->fail_open && chat->hook_ttl_s == 0);
    CHECK(!chat->occupancy && chat->latest && !vip->latest);
    CHECK(chat->rpc_anyone && !vip->rpc_anyone && !ns_find(&t, "x")->rpc_anyone);
    CHECK(ns_any_hook(&t));
    ns_free(&t);
}

TEST(mistakes_are_named)
{
    static const struct {
        const char *text, *why;
    } bad[] = {
        {"[]", "one member \"namespaces\""},
        {"{\"namespaces\":[],\"x\":1}", "one member"},
        {"{\"namespaces\":[{}]}", "namespaces[0]: \"prefix\""},
        {"{\"namespaces\":[{\"prefix\":\"a.*\"}]}", "\"prefix\""},
        {"{\"namespaces\":[{\"prefix\":\"a\",\"subscribe\":\"nobody\"}]}", "\"subscribe\""},
        {"{\"namespaces\":[{\"prefix\":\"a\",\"publish\":\"maybe\"}]}", "\"publish\""},
        {"{\"namespaces\":[{\"prefix\":\"a\",\"history\":1}]}", "\"history\""},
        {"{\"namespaces\":[{\"prefix\":\"a\",\"hook_failure\":\"open\"}]}", "\"hook_failure\""},
        {"{\"namespaces\":[{\"prefix\":\"a\",\"hook_ttl_s\":-1}]}", "\"hook_ttl_s\""},
        {"{\"namespaces\":[{\"prefix\":\"a\",\"history_s\":\"1h\"}]}", "\"history_s\""},
        {"{\"namespaces\":[{\"prefix\":\"a\",\"ttl\":1}]}", "unknown member \"ttl\""},
        {"{\"namespaces\":[{\"prefix\":\"a\",\"latest\":\"yes\"}]}", "\"latest\": true or"},
        {"{\"namespaces\":[{\"prefix\":\"a\",\"latest\":true,\"history\":false}]}",
         "needs \"history\": true"},
        {"{\"namespaces\":[{\"prefix\":\"a\",\"rpc\":\"hook\"}]}", "\"rpc\": \"claim\" or"},
        {"{\"namespaces\":[{\"prefix\":\"a\"},{\"prefix\":\"a\"}]}", "namespaces[1]: prefix"},
        {"{\"namespaces\":[7]}", "namespaces[0]: an object"},
        {"{\"namespaces\":[{\"prefix\":\"a\"},{\"prefix\":\"a\"}", "not JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ns_table t;
        char err[300] = "";
        CHECK(parse(&t, bad[i].text, err) == -1);
        CHECK(strstr(err, bad[i].why) != NULL);
        CHECK(t.n == 0 && ns_find(&t, "a.b")->subscribe == NS_CLAIM); /* defaults left */
        ns_free(&t);
    }
}

TEST_MAIN()
