/* test_cli_net.c - the CLI's URL parser (clients/sidecast/net.c): the four schemes and their
 * default ports, the TLS flag, IPv6 literals, paths and queries, and what it refuses. */
#include "test.h"

#include "../../clients/sidecast/net.h"

#include <errno.h>
#include <unistd.h>

TEST(schemes_and_default_ports)
{
    net_url u;
    REQUIRE(net_url_parse("http://gw.example", &u) == 0);
    CHECK_STR(u.scheme, "http");
    CHECK(!u.tls);
    CHECK_EQ_INT(u.port, 80);
    CHECK_STR(u.path, "/");
    CHECK_STR(u.hostport, "gw.example:80");

    REQUIRE(net_url_parse("https://gw.example", &u) == 0);
    CHECK_STR(u.scheme, "https");
    CHECK(u.tls);
    CHECK_EQ_INT(u.port, 443);
    CHECK_STR(u.host, "gw.example");
    CHECK_STR(u.hostport, "gw.example:443");

    REQUIRE(net_url_parse("ws://127.0.0.1:8090/ws", &u) == 0);
    CHECK_STR(u.scheme, "ws");
    CHECK(!u.tls);
    CHECK_EQ_INT(u.port, 8090);
    CHECK_STR(u.path, "/ws");

    REQUIRE(net_url_parse("wss://edge.example/ws", &u) == 0);
    CHECK_STR(u.scheme, "wss");
    CHECK(u.tls);
    CHECK_EQ_INT(u.port, 443);
    CHECK_STR(u.path, "/ws");
    CHECK_STR(u.hostport, "edge.example:443");
}

TEST(explicit_ports_ipv6_paths)
{
    net_url u;
    REQUIRE(net_url_parse("https://127.0.0.1:8443", &u) == 0);
    CHECK_STR(u.host, "127.0.0.1");
    CHECK_EQ_INT(u.port, 8443);
    CHECK(u.tls);

    REQUIRE(net_url_parse("wss://[::1]:8493/ws?x=1#frag", &u) == 0);
    CHECK_STR(u.host, "::1");
    CHECK_EQ_INT(u.port, 8493);
    CHECK_STR(u.path, "/ws?x=1");
    CHECK_STR(u.hostport, "[::1]:8493");

    REQUIRE(net_url_parse("wss://[::1]", &u) == 0);
    CHECK_EQ_INT(u.port, 443);
    CHECK_STR(u.hostport, "[::1]:443");

    REQUIRE(net_url_parse("https://gw.example/sidecast/", &u) == 0);
    CHECK_STR(u.path, "/sidecast/");
    REQUIRE(net_url_parse("https://gw.example?q", &u) == 0);
    CHECK_STR(u.path, "/?q");
}

TEST(refused)
{
    net_url u;
    static const char *bad[] = {
        "",
        "gw.example",
        "ftp://gw.example",
        "HTTPS://gw.example", /* the schemes are written in lower case */
        "https:/gw.example",
        "https://",
        "wss:///ws",
        "https://user:pw@gw.example", /* credentials never go in URLs */
        "https://gw.example:0",
        "https://gw.example:65536",
        "https://gw.example:44x",
        "https://gw.example:",
        "wss://[::1/ws",
        "wss://[::1]x/ws",
        "https://gw.example/a b",
        "tls://gw.example",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = net_url_parse(bad[i], &u);
        if (rc != -EINVAL) printf("  %s: %d\n", bad[i], rc);
        CHECK(rc == -EINVAL);
    }
}

TEST(tls_url_needs_tls_settings)
{
    /* a TLS URL without the TLS settings is refused before any connection is tried */
    net_url u;
    net_conn c;
    REQUIRE(net_url_parse("https://127.0.0.1:1", &u) == 0);
    CHECK_EQ_INT(net_conn_open(&c, &u, NULL, net_now_ms() + 1000), -EINVAL);
    CHECK_EQ_INT(c.fd, -1);
    net_conn_close(&c); /* a closed connection may be closed again */
}

TEST(cafile_errors_are_explained)
{
    net_tls t = {.cafile = "/nonexistent/ca.pem"};
    CHECK_EQ_INT(net_tls_load(&t), -EINVAL);
    CHECK(strstr(t.error, "/nonexistent/ca.pem") != NULL);
    CHECK(t.ctx == NULL);
    net_tls_clear(&t);
    net_tls_clear(NULL);

    char path[] = "/tmp/sidecast-test-ca-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, "not a certificate\n", 18) == 18);
    close(fd);
    t.cafile = path;
    CHECK_EQ_INT(net_tls_load(&t), -EINVAL);
    CHECK(strstr(t.error, "cannot use the CA file") != NULL);
    unlink(path);

    net_tls sys = {.cafile = NULL}; /* the system's store: always loads */
    CHECK_EQ_INT(net_tls_load(&sys), 0);
    CHECK(sys.ctx != NULL);
    CHECK_EQ_INT(net_tls_load(&sys), 0); /* once */
    net_tls_clear(&sys);
    CHECK(sys.ctx == NULL);
}

TEST_MAIN()
