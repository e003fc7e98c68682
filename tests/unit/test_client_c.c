/* test_client_c.c - the C client library's pure parts (clients/c/sc_wire.c: edge URLs, the
 * handshake's answer, the edge's messages, the client's messages, the reconnect delay) and
 * what sc_client does before any connection (argument checks, bounds, cancellation). */
#include "test.h"

#include "../../clients/c/sc_wire.h"
#include "../../clients/c/sidecast.h"
#include "err.h"

#include <errno.h>

TEST(url_parse)
{
    sc_wire_url u;
    REQUIRE(sc_wire_url_parse("ws://127.0.0.1:8090/ws", &u) == 0);
    CHECK(!u.tls);
    CHECK_STR(u.host, "127.0.0.1");
    CHECK_EQ_INT(u.port, 8090);
    CHECK_STR(u.path, "/ws");
    CHECK_STR(u.hostport, "127.0.0.1:8090");
    REQUIRE(sc_wire_url_parse("wss://edge.example", &u) == 0);
    CHECK(u.tls);
    CHECK_EQ_INT(u.port, 443);
    CHECK_STR(u.path, "/");
    REQUIRE(sc_wire_url_parse("ws://[::1]:9/ws?x=1", &u) == 0);
    CHECK_STR(u.host, "::1");
    CHECK_STR(u.hostport, "[::1]:9");
    CHECK_STR(u.path, "/ws?x=1");
    CHECK_EQ_INT(sc_wire_url_parse("http://edge/ws", &u), -EINVAL);
    CHECK_EQ_INT(sc_wire_url_parse("ws://user:pw@edge/ws", &u), -EINVAL);
    CHECK_EQ_INT(sc_wire_url_parse("ws://edge:0/ws", &u), -EINVAL);
    CHECK_EQ_INT(sc_wire_url_parse("ws://edge:70000/ws", &u), -EINVAL);
    CHECK_EQ_INT(sc_wire_url_parse("ws:///ws", &u), -EINVAL);
    CHECK_EQ_INT(sc_wire_url_parse("ws://edge/a b", &u), -EINVAL);
}

/* RFC 6455 1.3's example key and answer */
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

TEST(handshake_answer)
{
    int st;
    const char *ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: " ACCEPT "\r\n"
                     "Sec-WebSocket-Protocol: sidecast.v1\r\n\r\n\x81\x02hi";
    int hl = sc_wire_handshake_parse(ok, strlen(ok), ACCEPT, &st);
    CHECK_EQ_INT(hl, (int)strlen(ok) - 4); /* the frame after the head is left */
    CHECK_EQ_INT(st, 101);
    CHECK_EQ_INT(sc_wire_handshake_parse(ok, 40, ACCEPT, &st), SC_EINCOMPLETE);
    CHECK_EQ_INT(sc_wire_handshake_parse(ok, strlen(ok), "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", &st),
                 -EPROTO);
    const char *refused = "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
    CHECK_EQ_INT(sc_wire_handshake_parse(refused, strlen(refused), ACCEPT, &st), -EPROTO);
    CHECK_EQ_INT(st, 403);
    const char *ext = "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: " ACCEPT
                      "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n";
    CHECK_EQ_INT(sc_wire_handshake_parse(ext, strlen(ext), ACCEPT, &st), -EPROTO);
    const char *proto = "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: " ACCEPT
                        "\r\nSec-WebSocket-Protocol: other\r\n\r\n";
    CHECK_EQ_INT(sc_wire_handshake_parse(proto, strlen(proto), ACCEPT, &st), -EPROTO);
    const char *junk = "SSH-2.0-OpenSSH\r\n\r\n";
    CHECK_EQ_INT(sc_wire_handshake_parse(junk, strlen(junk), ACCEPT, &st), -EPROTO);
    CHECK_EQ_INT(st, 0);
    static char big[SC_WIRE_HEAD_MAX + 10];
    memset(big, 'a', sizeof big);
    CHECK_EQ_INT(sc_wire_handshake_parse(big, sizeof big, ACCEPT, &st), -EPROTO);
}

TEST(parse_event_keeps_raw_data)
{
    sc_wire_msg m;
    const char *t = "{\"type\":\"event\",\"topic\":\"prices.BTC\",\"seq\":42,"
                    "\"data\":{\"price\":0.10,\"n\":1e3,\"s\":\"a\\\"data\\\":b\"}}";
    REQUIRE(sc_wire_parse(t, strlen(t), &m) == 0);
    CHECK_EQ_INT(m.type, SC_WIRE_EVENT);
    CHECK_STR(m.topic, "prices.BTC");
    CHECK_EQ_INT(m.seq, 42);
    REQUIRE(m.data != NULL);
    char d[128];
    snprintf(d, sizeof d, "%.*s", (int)m.data_len, m.data);
    CHECK_STR(d, "{\"price\":0.10,\"n\":1e3,\"s\":\"a\\\"data\\\":b\"}");
    /* members after data (mode latest's "skipped") are not part of it; scalars too */
    const char *sk = "{\"type\":\"event\",\"topic\":\"a\",\"seq\":9,\"data\":[\"]}\",{}],"
                     "\"skipped\":3}";
    REQUIRE(sc_wire_parse(sk, strlen(sk), &m) == 0);
    snprintf(d, sizeof d, "%.*s", (int)m.data_len, m.data);
    CHECK_STR(d, "[\"]}\",{}]");
    CHECK_EQ_INT(m.skipped, 3);
    const char *sc = "{\"type\":\"event\",\"topic\":\"a\",\"seq\":9,\"data\":-1.5e3 ,\"x\":1}";
    REQUIRE(sc_wire_parse(sc, strlen(sc), &m) == 0);
    snprintf(d, sizeof d, "%.*s", (int)m.data_len, m.data);
    CHECK_STR(d, "-1.5e3");
    const char *st = "{\"type\":\"event\",\"topic\":\"a\",\"seq\":9,\"data\":\"q\\\"}\"}";
    REQUIRE(sc_wire_parse(st, strlen(st), &m) == 0);
    snprintf(d, sizeof d, "%.*s", (int)m.data_len, m.data);
    CHECK_STR(d, "\"q\\\"}\"");
    const char *no_seq = "{\"type\":\"event\",\"topic\":\"a\",\"data\":1}";
    CHECK_EQ_INT(sc_wire_parse(no_seq, strlen(no_seq), &m), -EPROTO);
    const char *neg = "{\"type\":\"event\",\"topic\":\"a\",\"seq\":-1,\"data\":1}";
    CHECK_EQ_INT(sc_wire_parse(neg, strlen(neg), &m), -EPROTO);
}

TEST(parse_other_messages)
{
    sc_wire_msg m;
    const char *w = "{\"type\":\"welcome\",\"conn_id\":\"c1\",\"user\":\"alice\","
                    "\"expires_at\":1700000000,\"edge\":\"edge-1\"}";
    REQUIRE(sc_wire_parse(w, strlen(w), &m) == 0);
    CHECK_EQ_INT(m.type, SC_WIRE_WELCOME);
    CHECK_STR(m.conn_id, "c1");
    CHECK_STR(m.edge, "edge-1");
    CHECK_EQ_INT(m.expires_at, 1700000000);
    const char *a = "{\"type\":\"ack\",\"id\":\"m1\",\"duplicate\":true}";
    REQUIRE(sc_wire_parse(a, strlen(a), &m) == 0);
    CHECK(m.type == SC_WIRE_ACK && m.has_id_str && m.duplicate);
    CHECK_STR(m.id_str, "m1");
    const char *r = "{\"type\":\"rpc_result\",\"id\":7,\"data\":[1, 2.50]}";
    REQUIRE(sc_wire_parse(r, strlen(r), &m) == 0);
    CHECK(m.type == SC_WIRE_RPC_RESULT && m.id_int && m.id_num == 7);
    char d[32];
    snprintf(d, sizeof d, "%.*s", (int)m.data_len, m.data);
    CHECK_STR(d, "[1, 2.50]");
    const char *g = "{\"type\":\"error\",\"code\":\"history_gone\",\"message\":\"gone\","
                    "\"topic\":\"prices.BTC\",\"oldest\":17}";
    REQUIRE(sc_wire_parse(g, strlen(g), &m) == 0);
    CHECK(m.type == SC_WIRE_ERROR && !m.id_int && !m.has_id_str);
    CHECK_STR(m.code, "history_gone");
    CHECK_STR(m.topic, "prices.BTC");
    CHECK_EQ_INT(m.oldest, 17);
    const char *u = "{\"type\":\"news_from_the_future\",\"x\":1}";
    REQUIRE(sc_wire_parse(u, strlen(u), &m) == 0);
    CHECK_EQ_INT(m.type, SC_WIRE_OTHER);
    const char *bad[] = {"",
                         "[1]",
                         "{\"type\":1}",
                         "{\"type\":\"event\"",
                         "null",
                         "{\"type\":\"ack\",\"type\":\"ack\"}",
                         "{\"type\":\"error\",\"id\":3}",
                         "{\"type\":\"subscribed\"}",
                         "{\"type\":\"rpc_result\",\"id\":\"x\",\"data\":1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ_INT(sc_wire_parse(bad[i], strlen(bad[i]), &m), -EPROTO);
}

TEST(encoders)
{
    char out[256];
    int n = sc_wire_subscribe(out, sizeof out, "prices.BTC", 3, -1, false, false);
    CHECK_STR(out, "{\"type\":\"subscribe\",\"topic\":\"prices.BTC\",\"id\":3}");
    CHECK_EQ_INT(n, (int)strlen(out));
    sc_wire_subscribe(out, sizeof out, "user", 4, 99, false, false);
    CHECK_STR(out, "{\"type\":\"subscribe\",\"topic\":\"user\",\"id\":4,\"since\":99}");
    CHECK_EQ_INT(sc_wire_subscribe(out, sizeof out, "prices.*", 1, -1, false, false), -EINVAL);
    sc_wire_subscribe(out, sizeof out, "prices.BTC", 5, -1, true, true);
    CHECK_STR(out, "{\"type\":\"subscribe\",\"topic\":\"prices.BTC\",\"id\":5,"
                   "\"since\":\"last\",\"mode\":\"latest\"}");
    sc_wire_subscribe(out, sizeof out, "prices.BTC", 6, 12, true, false); /* a position wins */
    CHECK_STR(out, "{\"type\":\"subscribe\",\"topic\":\"prices.BTC\",\"id\":6,\"since\":12}");
    CHECK_EQ_INT(sc_wire_subscribe(out, 10, "prices.BTC", 1, -1, false, false), -ENOSPC);
    sc_wire_publish(out, sizeof out, "chat.lobby", "a\"b", "{\"x\":0.1}", 9);
    CHECK_STR(out, "{\"type\":\"publish\",\"topic\":\"chat.lobby\",\"id\":\"a\\\"b\","
                   "\"data\":{\"x\":0.1}}");
    CHECK_EQ_INT(sc_wire_publish(out, sizeof out, "chat.lobby", "1", "{x", 2), -EINVAL);
    CHECK_EQ_INT(sc_wire_publish(out, sizeof out, "chat.lobby", "1", "1 2", 3), -EINVAL);
    CHECK_EQ_INT(sc_wire_publish(out, 30, "chat.lobby", "1", "1", 1), -ENOSPC);
    sc_wire_rpc(out, sizeof out, "prices.quote", 9, "{\"symbol\":\"BTC\"}", 16);
    CHECK_STR(out, "{\"type\":\"rpc\",\"id\":9,\"method\":\"prices.quote\","
                   "\"data\":{\"symbol\":\"BTC\"}}");
    sc_wire_refresh(out, sizeof out, "a.b.c");
    CHECK_STR(out, "{\"type\":\"refresh\",\"token\":\"a.b.c\"}");
    sc_wire_unsubscribe(out, sizeof out, "chat.lobby");
    CHECK_STR(out, "{\"type\":\"unsubscribe\",\"topic\":\"chat.lobby\"}");
}

TEST(backoff_full_jitter_capped)
{
    /* the ceiling doubles from the base up to the cap; the delay is rnd mod (ceiling + 1) */
    CHECK_EQ_INT(sc_wire_backoff(0, 200, 10000, UINT64_MAX - 0), UINT64_MAX % 201);
    CHECK_EQ_INT(sc_wire_backoff(0, 200, 10000, 200), 200);
    CHECK_EQ_INT(sc_wire_backoff(0, 200, 10000, 201), 0);
    CHECK_EQ_INT(sc_wire_backoff(3, 200, 10000, 1600), 1600);
    CHECK_EQ_INT(sc_wire_backoff(3, 200, 10000, 1601), 0);
    CHECK_EQ_INT(sc_wire_backoff(10, 200, 10000, 10000), 10000);
    CHECK_EQ_INT(sc_wire_backoff(1000, 200, 10000, 10000), 10000);
    CHECK_EQ_INT(sc_wire_backoff(1000, 200, 10000, 10001), 0);
    for (uint64_t r = 0; r < 100000; r += 997) CHECK(sc_wire_backoff(62, 200, 10000, r) <= 10000);
    CHECK(sc_wire_close_retryable(1006) && sc_wire_close_retryable(4001) &&
          sc_wire_close_retryable(1001) && sc_wire_close_retryable(4008));
    CHECK(!sc_wire_close_retryable(4003) && !sc_wire_close_retryable(1002) &&
          !sc_wire_close_retryable(1008) && !sc_wire_close_retryable(1009));
}

static int no_token(void *ud, sc_client *c)
{
    (void)ud;
    (void)c;
    return -EINPROGRESS;
}

static int acks, last_status;
static void count_ack(void *ud, int status, const char *id, bool dup, const char *code,
                      const char *message)
{
    (void)ud, (void)id, (void)dup, (void)code, (void)message;
    acks++;
    last_status = status;
}

TEST(client_checks_and_bounds_before_connecting)
{
    const char *urls[] = {"ws://127.0.0.1:9/ws"}, *bad[] = {"http://x/"};
    sc_client_config cfg = {
        .urls = urls, .nurls = 1, .token = no_token, .max_pending = 2, .max_subs = 2};
    sc_client *c = NULL;
    sc_client_config nt = cfg;
    nt.token = NULL;
    CHECK_EQ_INT(sc_client_create(&nt, &c), -EINVAL);
    sc_client_config nu = cfg;
    nu.urls = bad;
    CHECK_EQ_INT(sc_client_create(&nu, &c), -EINVAL);
    sc_client_config neg = cfg;
    neg.backoff_cap_ms = -1;
    CHECK_EQ_INT(sc_client_create(&neg, &c), -EINVAL);
    REQUIRE(sc_client_create(&cfg, &c) == 0);
    CHECK(sc_client_fd(c) >= 0);
    CHECK_EQ_INT(sc_client_get_state(c), SC_CLIENT_IDLE);
    CHECK_EQ_INT(sc_client_subscribe(c, "a.b", 0), 0);
    CHECK_EQ_INT(sc_client_subscribe(c, "a.b", 0), -EEXIST);
    CHECK_EQ_INT(sc_client_subscribe(c, "a.>", 0), -EINVAL);
    CHECK_EQ_INT(sc_client_subscribe(c, "user", 5), 0);
    CHECK_EQ_INT(sc_client_subscribe_opts(c, "c", 0, 4), -EINVAL);
    CHECK_EQ_INT(sc_client_subscribe(c, "c", 0), -ENOBUFS);
    CHECK_EQ_INT(sc_client_last_seq(c, "user"), 5);
    CHECK_EQ_INT(sc_client_unsubscribe(c, "a.b"), 0);
    CHECK_EQ_INT(sc_client_unsubscribe(c, "a.b"), -ENOENT);
    /* a call that fails never calls its callback */
    CHECK_EQ_INT(sc_client_publish(c, "chat.x", "{x", 2, "p0", 0, count_ack, NULL), -EINVAL);
    CHECK_EQ_INT(sc_client_publish(c, "chat.*", "1", 1, "p0", 0, count_ack, NULL), -EINVAL);
    CHECK_EQ_INT(sc_client_publish(c, "chat.x", "1", 1, "", 0, count_ack, NULL), -EINVAL);
    CHECK_EQ_INT(sc_client_publish(c, "chat.x", "1", 1, "p1", 0, count_ack, NULL), 0);
    CHECK_EQ_INT(sc_client_publish(c, "chat.x", "2", 1, NULL, 0, count_ack, NULL), 0);
    CHECK_EQ_INT(sc_client_publish(c, "chat.x", "3", 1, "p3", 0, count_ack, NULL), -ENOBUFS);
    CHECK_EQ_INT(acks, 0);
    CHECK_EQ_INT(sc_client_timeout_ms(c), -1); /* idle: nothing timed */
    CHECK_EQ_INT(sc_client_step(c), 0);
    CHECK_EQ_INT(acks, 0);
    /* destroy ends what waits, once each */
    sc_client_destroy(c);
    CHECK_EQ_INT(acks, 2);
    CHECK_EQ_INT(last_status, -ECANCELED);
    sc_client_destroy(NULL);
}

TEST(client_stop_cancels_and_refuses_more)
{
    const char *urls[] = {"ws://127.0.0.1:9/ws"};
    sc_client_config cfg = {.urls = urls, .nurls = 1, .token = no_token};
    sc_client *c = NULL;
    REQUIRE(sc_client_create(&cfg, &c) == 0);
    acks = 0;
    CHECK_EQ_INT(sc_client_start(c), 0);
    CHECK_EQ_INT(sc_client_start(c), -EALREADY);
    CHECK_EQ_INT(sc_client_publish(c, "chat.x", "1", 1, "p1", 0, count_ack, NULL), 0);
    CHECK_EQ_INT(sc_client_step(c), 0); /* asks for the token: it will come later */
    CHECK_EQ_INT(sc_client_get_state(c), SC_CLIENT_CONNECTING);
    sc_client_stop(c);
    CHECK_EQ_INT(sc_client_timeout_ms(c), 0);
    CHECK_EQ_INT(sc_client_step(c), -ESHUTDOWN);
    CHECK_EQ_INT(sc_client_get_state(c), SC_CLIENT_STOPPED);
    CHECK_EQ_INT(acks, 1);
    CHECK_EQ_INT(last_status, -ECANCELED);
    CHECK_EQ_INT(sc_client_publish(c, "chat.x", "1", 1, "p2", 0, count_ack, NULL), -ESHUTDOWN);
    CHECK_EQ_INT(sc_client_run(c), 0);
    sc_client_destroy(c);
    CHECK_EQ_INT(acks, 1);
}

TEST_MAIN()
