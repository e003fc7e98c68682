/* Unit tests of common/rds: REDIS_URL parsing (pure), and that a client for an unreachable
 * server is created, reports down and fails fast instead of blocking. */
#include "log.h"
#include "rds.h"
#include "test.h"

#include <time.h>

TEST(rds_url_defaults)
{
    rds_url u;
    char err[128];
    REQUIRE(rds_url_parse("redis://localhost", &u, err, sizeof err) == 0);
    CHECK_STR(u.host, "localhost");
    CHECK_EQ_INT(u.port, 6379);
    CHECK_EQ_INT(u.db, 0);
    CHECK_STR(u.user, "");
    CHECK_STR(u.password, "");
    REQUIRE(rds_url_parse("redis://127.0.0.1:6380/", &u, err, sizeof err) == 0);
    CHECK_EQ_INT(u.port, 6380);
    CHECK_EQ_INT(u.db, 0);
}

TEST(rds_url_full)
{
    rds_url u;
    char err[128];
    REQUIRE(rds_url_parse("redis://app:p%40ss%3Aw0rd@redis.svc:7000/3", &u, err, sizeof err) == 0);
    CHECK_STR(u.host, "redis.svc");
    CHECK_EQ_INT(u.port, 7000);
    CHECK_EQ_INT(u.db, 3);
    CHECK_STR(u.user, "app");
    CHECK_STR(u.password, "p@ss:w0rd");
    REQUIRE(rds_url_parse("redis://:secret@h/1", &u, err, sizeof err) == 0);
    CHECK_STR(u.user, "");
    CHECK_STR(u.password, "secret");
    REQUIRE(rds_url_parse("redis://secret@h", &u, err, sizeof err) == 0);
    CHECK_STR(u.password, "secret"); /* no colon: a password (requirepass style) */
    /* a '/', '?' or '#' in the password: the userinfo ends at the last '@', as in nats.c
     * (a generated base64 secret often holds a '/') */
    REQUIRE(rds_url_parse("redis://app:pa/ss?x#y@h:7001/2", &u, err, sizeof err) == 0);
    CHECK_STR(u.user, "app");
    CHECK_STR(u.password, "pa/ss?x#y");
    CHECK_STR(u.host, "h");
    CHECK_EQ_INT(u.port, 7001);
    CHECK_EQ_INT(u.db, 2);
    REQUIRE(rds_url_parse("redis://[::1]:6390/2", &u, err, sizeof err) == 0);
    CHECK_STR(u.host, "::1");
    CHECK_EQ_INT(u.port, 6390);
    CHECK_EQ_INT(u.db, 2);
}

TEST(rds_url_rejects)
{
    const char *bad[] = {"",
                         "http://h",
                         "rediss://h",
                         "redis://",
                         "redis://h:0",
                         "redis://h:65536",
                         "redis://h:x",
                         "redis://h/x",
                         "redis://h/1/2",
                         "redis://h?db=1",
                         "redis://:%zz@h",
                         "redis://:%00@h",
                         "redis://[::1",
                         "redis://h h",
                         "redis://:pw@",
                         "redis://h:",
                         NULL};
    rds_url u;
    char err[128];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = rds_url_parse(bad[i], &u, err, sizeof err);
        if (rc != -EINVAL) printf("  accepted %s\n", bad[i] ? bad[i] : "(null)");
        CHECK_EQ_INT(rc, -EINVAL);
    }
    /* the reason never contains the password */
    CHECK_EQ_INT(rds_url_parse("redis://:hunter2@h:99999", &u, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "hunter2") == NULL);
}

TEST(rds_down_fails_fast)
{
    rds *r = NULL;
    log_init("test", LOG_ERROR);
    /* port 1 on loopback: connection refused at once */
    REQUIRE(rds_create(&r, "redis://127.0.0.1:1/0", 200, "test") == 0);
    CHECK(!rds_up(r));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 100; i++) CHECK(rds_ping(r) < 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK(s < 1.0); /* backoff: no connect attempt per call */
    rds_script sc;
    rds_script_init(&sc, "return 1");
    CHECK_EQ_INT(strlen(sc.sha1), 40);
    CHECK(rds_eval(r, &sc, NULL, 0, NULL, 0, NULL) < 0);
    rds_destroy(r);
    rds_destroy(NULL);
    CHECK_EQ_INT(rds_create(&r, "bogus://", 100, NULL), -EINVAL);
    CHECK(r == NULL);
}

TEST_MAIN()
