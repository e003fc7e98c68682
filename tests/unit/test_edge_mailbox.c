/* test_edge_mailbox.c - the fabric's per-worker mailbox (services/edge/mailbox.c): order,
 * growth across the ring's end, the bound, wake-ups only on empty -> not empty, and several
 * producers against one consumer waiting in epoll (edge-triggered, as the edge's loop). */
#include "test.h"

#include "../../services/edge/mailbox.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <unistd.h>

static int readable(const mbox *m)
{
    struct pollfd pfd = {.fd = mbox_fd(m), .events = POLLIN};
    return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN);
}

TEST(fifo_order_across_growth_and_wraparound)
{
    mbox m;
    REQUIRE(mbox_init(&m, sizeof(uint64_t), 100000) == 0);
    uint64_t next_in = 0, next_out = 0, buf[300];
    /* keep the ring partly full while it wraps and doubles several times */
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 1000 + round * 40; i++) {
            REQUIRE(mbox_put(&m, &next_in) >= 0);
            next_in++;
        }
        uint32_t n = mbox_take(&m, buf, 300);
        for (uint32_t i = 0; i < n; i++) CHECK_EQ_INT(buf[i], next_out++);
    }
    uint32_t n;
    while ((n = mbox_take(&m, buf, 300)) > 0)
        for (uint32_t i = 0; i < n; i++) CHECK_EQ_INT(buf[i], next_out++);
    CHECK_EQ_INT(next_out, next_in);
    mbox_destroy(&m, NULL);
}

TEST(the_bound_refuses_and_keeps_what_was_queued)
{
    mbox m;
    REQUIRE(mbox_init(&m, sizeof(int), 3000) == 0);
    for (int i = 0; i < 3000; i++) REQUIRE(mbox_put(&m, &i) >= 0);
    int x = 3000;
    CHECK_EQ_INT(mbox_put(&m, &x), -ENOBUFS);
    int buf[4000];
    CHECK_EQ_INT(mbox_take(&m, buf, 4000), 3000);
    CHECK_EQ_INT(buf[0], 0);
    CHECK_EQ_INT(buf[2999], 2999);
    CHECK(mbox_put(&m, &x) == 1); /* room again, and empty: a wake-up */
    mbox_destroy(&m, NULL);
    CHECK_EQ_INT(mbox_init(&m, sizeof(int), 0), -EINVAL);
}

TEST(wakes_only_when_it_goes_from_empty_to_not_empty)
{
    mbox m;
    REQUIRE(mbox_init(&m, sizeof(int), 100) == 0);
    CHECK(!readable(&m));
    int v = 1, buf[8];
    CHECK_EQ_INT(mbox_put(&m, &v), 1);
    CHECK_EQ_INT(mbox_put(&m, &v), 0);
    CHECK_EQ_INT(mbox_put(&m, &v), 0);
    CHECK(readable(&m));
    mbox_ack(&m);
    CHECK(!readable(&m));
    CHECK_EQ_INT(mbox_take(&m, buf, 2), 2);
    CHECK_EQ_INT(mbox_put(&m, &v), 0); /* one still queued: no new wake-up */
    CHECK(!readable(&m));
    CHECK_EQ_INT(mbox_take(&m, buf, 8), 2);
    CHECK_EQ_INT(mbox_take(&m, buf, 8), 0);
    CHECK_EQ_INT(mbox_put(&m, &v), 1);
    CHECK(readable(&m));
    mbox_destroy(&m, NULL);
}

static int released;
static void count_release(void *e)
{
    (void)e;
    released++;
}

TEST(destroy_releases_what_is_still_queued)
{
    mbox m;
    REQUIRE(mbox_init(&m, sizeof(int), 5000) == 0);
    for (int i = 0; i < 2500; i++) REQUIRE(mbox_put(&m, &i) >= 0);
    int buf[100];
    CHECK_EQ_INT(mbox_take(&m, buf, 100), 100);
    released = 0;
    mbox_destroy(&m, count_release);
    CHECK_EQ_INT(released, 2400);
}

#define PRODUCERS 4
#define PER_PRODUCER 200000

struct producer {
    mbox *m;
    int id;
    long full; /* puts refused (bound reached): retried */
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    for (uint32_t i = 0; i < PER_PRODUCER; i++) {
        uint64_t v = (uint64_t)p->id << 32 | i;
        while (mbox_put(p->m, &v) == -ENOBUFS) {
            p->full++;
            sched_yield();
        }
    }
    return NULL;
}

/* Several threads put, one consumer sleeps in epoll_wait (edge-triggered) between wake-ups,
 * acks, and takes until empty: every element arrives, each producer's in order, and the
 * consumer never sleeps through a put (the wait would time out). */
TEST(many_producers_one_consumer_in_epoll_loses_nothing)
{
    mbox m;
    REQUIRE(mbox_init(&m, sizeof(uint64_t), 4096) == 0); /* small: the bound is hit too */
    int ep = epoll_create1(0);
    REQUIRE(ep >= 0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET};
    REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, mbox_fd(&m), &ev) == 0);
    struct producer prod[PRODUCERS];
    pthread_t th[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        prod[i] = (struct producer){.m = &m, .id = i};
        REQUIRE(pthread_create(&th[i], NULL, produce, &prod[i]) == 0);
    }
    uint32_t next[PRODUCERS] = {0};
    long total = 0, wakeups = 0, timeouts = 0;
    uint64_t buf[256];
    while (total < (long)PRODUCERS * PER_PRODUCER && timeouts == 0) {
        struct epoll_event out;
        int n = epoll_wait(ep, &out, 1, 5000);
        if (n == 0) {
            timeouts++;
            break;
        }
        if (n < 0) continue;
        wakeups++;
        mbox_ack(&m);
        uint32_t got;
        while ((got = mbox_take(&m, buf, 256)) > 0) {
            for (uint32_t i = 0; i < got; i++) {
                int id = (int)(buf[i] >> 32);
                uint32_t seq = (uint32_t)buf[i];
                if (id < 0 || id >= PRODUCERS || seq != next[id]) {
                    CHECK(!"out of order or unknown");
                    timeouts++;
                    break;
                }
                next[id]++;
            }
            total += got;
        }
    }
    for (int i = 0; i < PRODUCERS; i++) pthread_join(th[i], NULL);
    CHECK_EQ_INT(timeouts, 0);
    CHECK_EQ_INT(total, (long)PRODUCERS * PER_PRODUCER);
    CHECK(wakeups > 0 && wakeups <= total);
    printf("  %ld elements, %ld wake-ups\n", total, wakeups);
    close(ep);
    mbox_destroy(&m, NULL);
}

TEST_MAIN()
