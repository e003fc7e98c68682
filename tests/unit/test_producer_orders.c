/* test_producer_orders.c - the producer's pure parts: order validation, ids, JSON shapes and
 * the bounded store (services/producer/orders.c). */
#include "test.h"

#include <errno.h>

#include "../../services/producer/orders.h"
#include "../../services/producer/ticks.h"

static int validate(const char *body_json, order *o, char *err, size_t errlen)
{
    json_t *b = body_json ? json_loads(body_json, JSON_DECODE_ANY, NULL) : NULL;
    int rc;
    memset(o, 0, sizeof *o);
    err[0] = 0;
    rc = orders_validate(b, o, err, errlen);
    json_decref(b);
    return rc;
}

TEST(validate_accepts)
{
    order o;
    char err[160];
    REQUIRE(validate("{\"symbol\":\"BTC\",\"qty\":1}", &o, err, sizeof err) == 0);
    CHECK_STR(ticks_symbol(o.symbol), "BTC");
    CHECK(o.qty == 1.0);
    CHECK_EQ_INT(o.side, SIDE_BUY);
    REQUIRE(validate("{\"symbol\":\"SOL\",\"qty\":0.5,\"side\":\"sell\"}", &o, err, sizeof err) ==
            0);
    CHECK_STR(ticks_symbol(o.symbol), "SOL");
    CHECK(o.qty == 0.5);
    CHECK_EQ_INT(o.side, SIDE_SELL);
    REQUIRE(validate("{\"symbol\":\"ETH\",\"qty\":1000000,\"side\":\"buy\",\"x\":1}", &o, err,
                     sizeof err) == 0);
    CHECK_EQ_INT(o.side, SIDE_BUY);
    REQUIRE(validate("{\"symbol\":\"ETH\",\"qty\":2,\"side\":null}", &o, err, sizeof err) == 0);
}

TEST(validate_rejects_with_reasons)
{
    static const struct {
        const char *body, *reason_part;
    } cases[] = {
        {NULL, "body"},
        {"null", "body"},
        {"[1]", "object"},
        {"\"BTC\"", "object"},
        {"{}", "symbol"},
        {"{\"qty\":1}", "symbol"},
        {"{\"symbol\":\"DOGE\",\"qty\":1}", "symbol"},
        {"{\"symbol\":\"btc\",\"qty\":1}", "symbol"},
        {"{\"symbol\":7,\"qty\":1}", "symbol"},
        {"{\"symbol\":\"BTC\\u0000x\",\"qty\":1}", "symbol"},
        {"{\"symbol\":\"BTC\"}", "qty"},
        {"{\"symbol\":\"BTC\",\"qty\":\"1\"}", "qty"},
        {"{\"symbol\":\"BTC\",\"qty\":0}", "qty"},
        {"{\"symbol\":\"BTC\",\"qty\":-1}", "qty"},
        {"{\"symbol\":\"BTC\",\"qty\":1000000.5}", "qty"},
        {"{\"symbol\":\"BTC\",\"qty\":1e300}", "qty"},
        {"{\"symbol\":\"BTC\",\"qty\":1,\"side\":\"hold\"}", "side"},
        {"{\"symbol\":\"BTC\",\"qty\":1,\"side\":\"BUY\"}", "side"},
        {"{\"symbol\":\"BTC\",\"qty\":1,\"side\":1}", "side"},
    };
    order o;
    char err[160];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = validate(cases[i].body, &o, err, sizeof err);
        if (rc != -1 || !strstr(err, cases[i].reason_part))
            printf("  case %zu: %s -> rc=%d err=%s\n", i, cases[i].body ? cases[i].body : "-", rc,
                   err);
        CHECK_EQ_INT(rc, -1);
        CHECK(strstr(err, cases[i].reason_part) != NULL);
    }
}

TEST(envelope)
{
    json_t *r;
    char err[160];
    const char *ok = "{\"method\":\"POST\",\"body\":{\"symbol\":\"BTC\",\"qty\":1}}";
    REQUIRE(orders_parse_envelope(ok, strlen(ok), &r, err, sizeof err) == 0);
    CHECK(json_is_object(json_object_get(r, "body")));
    json_decref(r);
    CHECK_EQ_INT(orders_parse_envelope("nope", 4, &r, err, sizeof err), -1);
    CHECK(r == NULL);
    CHECK_EQ_INT(orders_parse_envelope("[]", 2, &r, err, sizeof err), -1);
    CHECK_EQ_INT(orders_parse_envelope("", 0, &r, err, sizeof err), -1);
}

TEST(user_and_id)
{
    char id[ORDER_ID_MAX];
    CHECK(orders_user_valid("alice"));
    CHECK(orders_user_valid("svc-1_a"));
    CHECK(!orders_user_valid(NULL));
    CHECK(!orders_user_valid(""));
    CHECK(!orders_user_valid("a b"));
    CHECK(!orders_user_valid("a.*"));
    CHECK(!orders_user_valid("a.>"));
    orders_make_id(id, 0xdeadbeef01234567ULL);
    CHECK_STR(id, "o-deadbeef01234567");
    CHECK(orders_id_valid(id));
    orders_make_id(id, 1);
    CHECK_STR(id, "o-0000000000000001");
    CHECK(!orders_id_valid("o-123"));
    CHECK(!orders_id_valid("x-deadbeef01234567"));
    CHECK(!orders_id_valid("o-DEADBEEF01234567"));
    CHECK(!orders_id_valid(NULL));
}

TEST(json_shape)
{
    order o = {.symbol = 0, .qty = 1, .side = SIDE_SELL, .status = ORDER_ACCEPTED, .created_ms = 5};
    json_t *j;
    char *s;
    const char *want;
    orders_make_id(o.id, 42);
    j = orders_to_json(&o, "alice", 1);
    REQUIRE(j);
    s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
    want = "{\"created_at\":5,\"order_id\":\"o-000000000000002a\",\"qty\":1,"
           "\"side\":\"sell\",\"status\":\"accepted\",\"symbol\":\"BTC\","
           "\"user_id\":\"alice\"}";
    CHECK_STR(s, want);
    free(s);
    json_decref(j);
    o.status = ORDER_FILLED;
    o.price = 67000.12;
    o.qty = 0.25;
    o.filled_ms = 9;
    j = orders_to_json(&o, "alice", 0);
    s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
    want = "{\"created_at\":5,\"filled_at\":9,\"order_id\":\"o-000000000000002a\","
           "\"price\":67000.12,\"qty\":0.25,\"side\":\"sell\",\"status\":\"filled\","
           "\"symbol\":\"BTC\"}";
    CHECK_STR(s, want);
    free(s);
    json_decref(j);
}

static order mk(uint64_t n)
{
    order o;
    memset(&o, 0, sizeof o);
    orders_make_id(o.id, n);
    o.qty = (double)n;
    return o;
}

TEST(store_per_user_bound_newest_first)
{
    order_store *s;
    order out[8], one;
    REQUIRE(order_store_create(&s, 4, 5) == 0);
    for (uint64_t i = 1; i <= 12; i++) {
        order o = mk(i);
        REQUIRE(order_store_add(s, "alice", &o) == 0);
    }
    CHECK_EQ_INT(order_store_count(s), 5);
    CHECK_EQ_INT(order_store_list(s, "alice", out, 8), 5);
    CHECK(out[0].qty == 12 && out[4].qty == 8);
    CHECK_EQ_INT(order_store_list(s, "alice", out, 2), 2);
    CHECK(out[0].qty == 12 && out[1].qty == 11);
    {
        order o7 = mk(7), o8 = mk(8);
        CHECK_EQ_INT(order_store_get(s, "alice", o7.id, &one), -ENOENT); /* evicted */
        CHECK_EQ_INT(order_store_get(s, "alice", o8.id, &one), 0);
        CHECK_EQ_INT(order_store_get(s, "bob", o8.id, &one), -ENOENT); /* not bob's */
        CHECK_EQ_INT(order_store_fill(s, "alice", o8.id, 3.5, 77), 0);
        CHECK_EQ_INT(order_store_get(s, "alice", o8.id, &one), 0);
        CHECK_EQ_INT(one.status, ORDER_FILLED);
        CHECK(one.price == 3.5 && one.filled_ms == 77);
        CHECK_EQ_INT(order_store_fill(s, "bob", o8.id, 1, 1), -ENOENT);
        CHECK_EQ_INT(order_store_remove(s, "alice", o8.id), 0);
        CHECK_EQ_INT(order_store_remove(s, "alice", o8.id), -ENOENT);
        CHECK_EQ_INT(order_store_count(s), 4);
    }
    CHECK_EQ_INT(order_store_list(s, "nobody", out, 8), 0);
    order_store_destroy(s);
    order_store_destroy(NULL);
}

TEST(store_user_bound_lru)
{
    order_store *s;
    order out[4];
    char name[32];
    REQUIRE(order_store_create(&s, 3, 2) == 0);
    for (int u = 0; u < 3; u++) {
        order o = mk((uint64_t)u + 1);
        snprintf(name, sizeof name, "u%d", u);
        REQUIRE(order_store_add(s, name, &o) == 0);
    }
    {
        order o = mk(100); /* u0 becomes the most recently active */
        REQUIRE(order_store_add(s, "u0", &o) == 0);
    }
    {
        order o = mk(200); /* a fourth user: u1, the least recently active, goes */
        REQUIRE(order_store_add(s, "u3", &o) == 0);
    }
    CHECK_EQ_INT(order_store_users(s), 3);
    CHECK_EQ_INT(order_store_list(s, "u1", out, 4), 0);
    CHECK_EQ_INT(order_store_list(s, "u0", out, 4), 2);
    CHECK_EQ_INT(order_store_list(s, "u2", out, 4), 1);
    CHECK_EQ_INT(order_store_list(s, "u3", out, 4), 1);
    CHECK_EQ_INT(order_store_count(s), 4);
    for (int u = 10; u < 1000; u++) {
        order o = mk((uint64_t)u);
        snprintf(name, sizeof name, "u%d", u);
        REQUIRE(order_store_add(s, name, &o) == 0);
    }
    CHECK_EQ_INT(order_store_users(s), 3);
    CHECK_EQ_INT(order_store_count(s), 3);
    order_store_destroy(s);
    CHECK_EQ_INT(order_store_create(&s, 0, 1), -EINVAL);
}

TEST_MAIN()
