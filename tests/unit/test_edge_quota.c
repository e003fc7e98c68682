/* test_edge_quota.c - client publish byte budgets (services/edge/quota.c): the bucket's
 * refill and cap, users kept apart, a refilled user's slot reused, and a full bucket of
 * busy users sharing a budget rather than growing the table or letting anyone past it. */
#include "test.h"

#include "../../services/edge/quota.h"

#include <stdio.h>

TEST(quota_bucket_refills_up_to_burst)
{
    double t = 100;
    uint64_t at = 1000;
    CHECK(quota_bucket_take(&t, &at, 50, 100, 60, 1000));  /* 40 left */
    CHECK(!quota_bucket_take(&t, &at, 50, 100, 60, 1000)); /* not enough: nothing taken */
    CHECK(t > 39.9 && t < 40.1);
    CHECK(quota_bucket_take(&t, &at, 50, 100, 60, 1400)); /* +20 after 400 ms: 60 */
    CHECK(t < 0.1);
    CHECK(quota_bucket_take(&t, &at, 50, 100, 100, 100000)); /* capped at burst, not more */
    CHECK(!quota_bucket_take(&t, &at, 50, 100, 1, 100000));
    CHECK(!quota_bucket_take(&t, &at, 50, 100, 101, 200000)); /* more than a burst: never */
    CHECK(quota_bucket_take(&t, &at, 50, 100, 10, 99000));    /* a clock step back adds nothing */
}

TEST(quota_users_have_their_own_budgets)
{
    quota *q = NULL;
    REQUIRE(quota_create(&q, 1000, 1000, 4000) == 0);
    CHECK(quota_take(q, "alice", 4000, 10));
    CHECK(!quota_take(q, "alice", 1, 10));
    CHECK(quota_take(q, "bob", 4000, 10));     /* alice's spending is not bob's */
    CHECK(!quota_take(q, "bob", 1000, 500));   /* 500 ms: 500 back, not 1000 */
    CHECK(quota_take(q, "alice", 1000, 1010)); /* alice: 1000 ms later, 1000 back */
    CHECK(quota_create(&(quota *){NULL}, 0, 1, 1) < 0);
    quota_destroy(q);
    quota_destroy(NULL);
}

/* One bucket (four slots): a fifth busy user shares a budget, never gets a fresh one; once
 * a user's budget is whole again its slot serves someone else. */
TEST(quota_table_is_bounded)
{
    quota *q = NULL;
    char name[32];
    REQUIRE(quota_create(&q, 1, 100, 1000) == 0);
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "u%d", i);
        CHECK(quota_take(q, name, 1000, 0)); /* four users, each spent */
    }
    CHECK(!quota_take(q, "newcomer", 500, 0)); /* shares an empty budget */
    /* 10 s later every budget is whole: the newcomer gets a slot of its own */
    CHECK(quota_take(q, "newcomer", 1000, 10000));
    CHECK(!quota_take(q, "newcomer", 1, 10000));
    /* 100000 distinct users through a small table: memory stays what it was */
    int ok = 0;
    for (int i = 0; i < 100000; i++) {
        snprintf(name, sizeof name, "n%d", i);
        ok += quota_take(q, name, 10, 20000 + (uint64_t)i);
    }
    CHECK(ok > 0);
    quota_destroy(q);
}

TEST_MAIN()
