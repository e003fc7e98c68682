/* test_ws_iplimit.c - connections per source address (common/ws/iplimit.c): the cap,
 * IPv6 counted per /64, IPv4-mapped addresses as IPv4, a full table, and random acquire /
 * release sequences against a plain model (backward-shift deletion keeps every key
 * findable). */
#include "test.h"

#include "ws/iplimit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>

static void v4(const char *ip, uint8_t key[16])
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(1234)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    iplimit_key((struct sockaddr *)&a, key);
}

static void v6(const char *ip, uint8_t key[16])
{
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(1234)};
    inet_pton(AF_INET6, ip, &a.sin6_addr);
    iplimit_key((struct sockaddr *)&a, key);
}

TEST(the_cap_holds_per_source_and_frees_on_release)
{
    iplimit *l;
    REQUIRE(iplimit_create(&l, 3, 100) == 0);
    uint8_t a[16], b[16];
    v4("192.0.2.1", a);
    v4("192.0.2.2", b);
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(iplimit_acquire(l, a), 1);
    CHECK_EQ_INT(iplimit_acquire(l, a), 0);
    CHECK_EQ_INT(iplimit_acquire(l, b), 1); /* another source is not affected */
    CHECK_EQ_INT(iplimit_count(l, a), 3);
    iplimit_release(l, a);
    CHECK_EQ_INT(iplimit_acquire(l, a), 1);
    CHECK_EQ_INT(iplimit_sources(l), 2);
    for (int i = 0; i < 3; i++) iplimit_release(l, a);
    iplimit_release(l, b);
    CHECK_EQ_INT(iplimit_sources(l), 0);
    CHECK_EQ_INT(iplimit_count(l, a), 0);
    iplimit_release(l, a); /* not counted: nothing happens */
    CHECK_EQ_INT(iplimit_sources(l), 0);
    iplimit_destroy(l);
}

TEST(ipv6_counts_per_64_and_mapped_ipv4_as_ipv4)
{
    uint8_t a[16], b[16], c[16];
    v6("2001:db8:1:2::1", a);
    v6("2001:db8:1:2:ffff:1:2:3", b);
    v6("2001:db8:1:3::1", c);
    CHECK(memcmp(a, b, 16) == 0);
    CHECK(memcmp(a, c, 16) != 0);
    v6("::ffff:192.0.2.7", a);
    v4("192.0.2.7", b);
    CHECK(memcmp(a, b, 16) == 0);
    struct sockaddr un = {.sa_family = AF_UNIX};
    CHECK_EQ_INT(iplimit_key(&un, a), -1);
}

TEST(a_full_table_refuses_new_sources_only)
{
    iplimit *l;
    REQUIRE(iplimit_create(&l, 5, 4) == 0);
    uint8_t k[16];
    char ip[32];
    for (int i = 0; i < 4; i++) {
        snprintf(ip, sizeof ip, "198.51.100.%d", i + 1);
        v4(ip, k);
        CHECK_EQ_INT(iplimit_acquire(l, k), 1);
    }
    v4("198.51.100.99", k);
    CHECK_EQ_INT(iplimit_acquire(l, k), 0);
    v4("198.51.100.1", k);
    CHECK_EQ_INT(iplimit_acquire(l, k), 1); /* a known source still gets its share */
    iplimit_destroy(l);
    CHECK(iplimit_create(&l, 0, 4) != 0);
}

/* xorshift: reproducible random operations */
static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

TEST(random_operations_match_a_model)
{
    enum { KEYS = 600, OPS = 200000, CAP = 4 };
    iplimit *l;
    REQUIRE(iplimit_create(&l, CAP, KEYS) == 0); /* 2048 slots: long runs, many shifts */
    static uint32_t model[KEYS];
    uint8_t keys[KEYS][16];
    for (int i = 0; i < KEYS; i++) {
        char ip[32];
        snprintf(ip, sizeof ip, "10.%d.%d.1", i / 256, i % 256);
        v4(ip, keys[i]);
    }
    int bad = 0;
    uint32_t sources = 0;
    for (int op = 0; op < OPS && bad < 5; op++) {
        int i = (int)(rnd() % KEYS);
        if (rnd() % 2) {
            int want = model[i] < CAP;
            int got = iplimit_acquire(l, keys[i]);
            if (got != want) bad++;
            if (got && model[i]++ == 0) sources++;
        } else if (model[i]) {
            iplimit_release(l, keys[i]);
            if (--model[i] == 0) sources--;
        }
        if (op % 1000 == 0) {
            for (int k = 0; k < KEYS; k++)
                if (iplimit_count(l, keys[k]) != model[k]) bad++;
            if (iplimit_sources(l) != sources) bad++;
        }
    }
    CHECK_EQ_INT(bad, 0);
    iplimit_destroy(l);
}

TEST_MAIN()
