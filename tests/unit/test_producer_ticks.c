/* test_producer_ticks.c - the producer's random walk and tick format (ticks.c) and the
 * pending-fill heap (fills.c). */
#include "test.h"

#include <errno.h>
#include <math.h>
#include <time.h>

#include "../../services/producer/fills.h"
#include "../../services/producer/ticks.h"

TEST(symbols)
{
    CHECK_EQ_INT(ticks_symbol_index("BTC"), 0);
    CHECK_EQ_INT(ticks_symbol_index("ETH"), 1);
    CHECK_EQ_INT(ticks_symbol_index("SOL"), 2);
    CHECK_EQ_INT(ticks_symbol_index("sol"), -1);
    CHECK_EQ_INT(ticks_symbol_index(""), -1);
    CHECK_EQ_INT(ticks_symbol_index(NULL), -1);
    CHECK(ticks_symbol(3) == NULL);
    CHECK(ticks_start_price(0) > 1000);
}

TEST(walk_stays_in_band_and_moves_in_small_steps)
{
    uint64_t rng = 12345;
    for (int i = 0; i < TICKS_NSYMBOLS; i++) {
        walk w;
        double prev, lo = 1e300, hi = 0;
        walk_init(&w, ticks_start_price(i));
        prev = w.price;
        for (int k = 0; k < 200000; k++) {
            double p = walk_step(&w, ticks_uniform(&rng));
            REQUIRE(p >= w.lo && p <= w.hi);
            /* one step: at most WALK_MAX_STEP of the price, plus a cent of rounding */
            REQUIRE(fabs(p - prev) <= prev * WALK_MAX_STEP + 0.011);
            REQUIRE(fabs(p * 100 - round(p * 100)) < 1e-6);
            if (p < lo) lo = p;
            if (p > hi) hi = p;
            prev = p;
        }
        CHECK(hi > lo); /* it does move */
    }
}

TEST(walk_reflects_at_the_edges)
{
    walk w;
    walk_init(&w, 100.0);
    for (int k = 0; k < 10000; k++) walk_step(&w, 1.0);
    CHECK(w.price <= 200.0 && w.price > 199.0);
    for (int k = 0; k < 10000; k++) walk_step(&w, -1.0);
    CHECK(w.price >= 50.0 && w.price < 51.0);
    /* out-of-range and NaN draws are clamped */
    walk_step(&w, 7.0);
    CHECK(w.price >= 50.0 && w.price <= 200.0);
    walk_step(&w, NAN);
    CHECK(w.price >= 50.0 && w.price <= 200.0);
}

TEST(uniform_range)
{
    uint64_t rng = 99;
    double lo = 1, hi = -1;
    for (int k = 0; k < 100000; k++) {
        double u = ticks_uniform(&rng);
        REQUIRE(u >= -1.0 && u <= 1.0);
        if (u < lo) lo = u;
        if (u > hi) hi = u;
    }
    CHECK(lo < -0.99 && hi > 0.99);
}

TEST(tick_format)
{
    char out[128];
    CHECK(ticks_format(out, sizeof out, "BTC", 67000.123, 1700000000123LL) > 0);
    CHECK_STR(out, "{\"symbol\":\"BTC\",\"price\":67000.12,\"ts\":1700000000123}");
    CHECK_EQ_INT(ticks_format(out, 10, "BTC", 1, 1), -1);
}

static fill_job job(int64_t due, int tag)
{
    fill_job j;
    memset(&j, 0, sizeof j);
    j.due_ms = due;
    j.o.qty = tag;
    return j;
}

TEST(fillq_orders_by_due_time_then_insertion)
{
    fillq q;
    fill_job out;
    static const int64_t due[] = {50, 10, 30, 10, 70, 0, 30, 90, 20, 10};
    int64_t last = -1;
    double last_tag_at_10 = -1;
    fillq_init(&q, 100);
    for (int i = 0; i < 10; i++) {
        fill_job j = job(due[i], i);
        REQUIRE(fillq_push(&q, &j) == 0);
    }
    CHECK(fillq_peek(&q)->due_ms == 0);
    for (int i = 0; i < 10; i++) {
        REQUIRE(fillq_pop(&q, &out) == 0);
        CHECK(out.due_ms >= last);
        if (out.due_ms == 10) {
            CHECK(out.o.qty > last_tag_at_10); /* FIFO among equal times */
            last_tag_at_10 = out.o.qty;
        }
        last = out.due_ms;
    }
    CHECK_EQ_INT(fillq_pop(&q, &out), -ENOENT);
    CHECK(fillq_peek(&q) == NULL);
    fillq_clear(&q);
}

TEST(fillq_bound_and_random_order)
{
    fillq q;
    fill_job out;
    uint64_t rng = 7;
    int64_t last = -1;
    fillq_init(&q, 1000);
    for (int i = 0; i < 1000; i++) {
        fill_job j = job((int64_t)(ticks_rand(&rng) % 5000), i);
        REQUIRE(fillq_push(&q, &j) == 0);
    }
    {
        fill_job j = job(1, 1);
        CHECK_EQ_INT(fillq_push(&q, &j), -ENOSPC);
    }
    for (int i = 0; i < 1000; i++) {
        REQUIRE(fillq_pop(&q, &out) == 0);
        REQUIRE(out.due_ms >= last);
        last = out.due_ms;
    }
    fillq_clear(&q);
}

static int fired;
static void count_fire(const fill_job *j, void *ud)
{
    (void)j;
    (void)ud;
    __atomic_add_fetch(&fired, 1, __ATOMIC_SEQ_CST);
}

TEST(filler_fires_due_jobs_and_bounds_pending)
{
    filler *f;
    fill_job j = job(0, 0);
    REQUIRE(filler_start(&f, 3, count_fire, NULL) == 0);
    CHECK_EQ_INT(filler_add(f, &j, 20), 0);
    CHECK_EQ_INT(filler_add(f, &j, 0), 0);
    CHECK_EQ_INT(filler_add(f, &j, 60000), 0); /* not due before the stop */
    for (int i = 0; i < 200 && __atomic_load_n(&fired, __ATOMIC_SEQ_CST) < 2; i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    CHECK_EQ_INT(__atomic_load_n(&fired, __ATOMIC_SEQ_CST), 2);
    CHECK_EQ_INT(filler_pending(f), 1);
    CHECK_EQ_INT(filler_add(f, &j, 60000), 0);
    CHECK_EQ_INT(filler_add(f, &j, 60000), 0);
    CHECK_EQ_INT(filler_add(f, &j, 60000), -ENOSPC);
    filler_stop(f);
    CHECK_EQ_INT(__atomic_load_n(&fired, __ATOMIC_SEQ_CST), 2);
    filler_stop(NULL);
}

TEST_MAIN()
