/* test_bridge_zmap.c - the bridge's route file parser, topic mapping and payload conversion
 * (services/bridge/zmap.c). */
#include "test.h"

#include <errno.h>

#include "../../services/bridge/zmap.h"
#include "err.h"

static zmap *parse(const char *text)
{
    char err[512];
    zmap *m = NULL;
    if (zmap_parse(text, strlen(text), &m, err, sizeof err) != 0) {
        printf("  unexpected error: %s\n", err);
        return NULL;
    }
    return m;
}

/* Expects a parse failure whose message contains want. */
static int fails_with(const char *text, const char *want)
{
    char err[512] = "";
    zmap *m = NULL;
    if (zmap_parse(text, strlen(text), &m, err, sizeof err) == 0) {
        zmap_destroy(m);
        printf("  parsed but should not: %s\n", text);
        return 0;
    }
    if (m) return 0;
    if (!strstr(err, want)) {
        printf("  error \"%s\" lacks \"%s\"\n", err, want);
        return 0;
    }
    return 1;
}

#define EP(extra, map)                                                                             \
    "{\"endpoints\":[{\"endpoint\":\"tcp://127.0.0.1:5556\",\"socket\":\"sub\"" extra              \
    ",\"map\":" map "}]}"

TEST(parse_full_table)
{
    zmap *m = parse("{\"endpoints\":["
                    "{\"endpoint\":\"tcp://feed:5556\",\"socket\":\"sub\","
                    " \"subscribe\":[\"prices.\",\"\"],\"payload\":\"json\","
                    " \"map\":[{\"match\":\"prices.*\",\"topic\":\"prices.${1}\"},"
                    "          {\"match\":\"status\",\"topic\":\"feed.status\"}]},"
                    "{\"endpoint\":\"ipc:///run/work.sock\",\"socket\":\"pull\",\"bind\":true,"
                    " \"payload\":\"text\",\"map\":[{\"match\":\"*\",\"topic\":\"jobs.all\"}]},"
                    "{\"endpoint\":\"tcp://btc:28332\",\"socket\":\"sub\",\"payload\":\"base64\","
                    " \"sequence\":\"le32\","
                    " \"map\":[{\"match\":\"hashblock\",\"topic\":\"bitcoin.${topic}\"}]}]}");
    REQUIRE(m);
    REQUIRE(m->n == 3);
    const zmap_endpoint *a = &m->v[0], *b = &m->v[1], *c = &m->v[2];
    CHECK_STR(a->endpoint, "tcp://feed:5556");
    CHECK(a->socket == ZMAP_SUB && a->topic_frame && !a->bind && !a->seq_le32);
    CHECK(a->payload == ZMAP_JSON);
    CHECK_EQ_INT(a->nsubscribe, 2);
    CHECK_STR(a->subscribe[0], "prices.");
    CHECK_STR(a->subscribe[1], "");
    CHECK_EQ_INT(a->nrules, 2);
    CHECK(a->rules[0].prefix && a->rules[0].matchlen == 7);
    CHECK_STR(a->rules[0].match, "prices.");
    CHECK(!a->rules[1].prefix);
    CHECK(b->socket == ZMAP_PULL && b->bind && !b->topic_frame && b->payload == ZMAP_TEXT);
    CHECK_EQ_INT(b->nsubscribe, 0);
    CHECK(c->seq_le32 && c->payload == ZMAP_BASE64);
    CHECK_EQ_INT(c->nsubscribe, 1); /* from the rules: the exact match as a prefix */
    CHECK_STR(c->subscribe[0], "hashblock");
    zmap_destroy(m);
}

TEST(default_subscribe_follows_the_rules)
{
    zmap *m = parse(EP("", "[{\"match\":\"a.*\",\"topic\":\"x.${1}\"},"
                           "{\"match\":\"b\",\"topic\":\"y\"}]"));
    REQUIRE(m);
    CHECK_EQ_INT(m->v[0].nsubscribe, 2);
    CHECK_STR(m->v[0].subscribe[0], "a.");
    CHECK_STR(m->v[0].subscribe[1], "b");
    zmap_destroy(m);
    /* a "*" rule anywhere: everything, once */
    m = parse(EP("", "[{\"match\":\"b\",\"topic\":\"y\"},{\"match\":\"*\",\"topic\":\"z\"}]"));
    REQUIRE(m);
    CHECK_EQ_INT(m->v[0].nsubscribe, 1);
    CHECK_STR(m->v[0].subscribe[0], "");
    zmap_destroy(m);
}

TEST(errors_name_the_entry)
{
    CHECK(fails_with("", "not JSON"));
    CHECK(fails_with("[]", "must be an object"));
    CHECK(fails_with("{\"endpoints\":[],\"x\":1}", "unknown key \"x\""));
    CHECK(fails_with("{\"endpoints\":[]}", "endpoints: must be an array of 1 to 64"));
    CHECK(fails_with("{\"endpoints\":[1]}", "endpoints[0]: must be an object"));
    CHECK(fails_with(EP(",\"paylod\":\"json\"", "[]"), "endpoints[0]: unknown key \"paylod\""));
    CHECK(fails_with("{\"endpoints\":[{\"endpoint\":\"udp://x:1\",\"socket\":\"sub\"}]}",
                     "endpoints[0].endpoint"));
    CHECK(fails_with("{\"endpoints\":[{\"endpoint\":\"tcp://\",\"socket\":\"sub\"}]}",
                     "endpoints[0].endpoint"));
    CHECK(fails_with("{\"endpoints\":[{\"endpoint\":\"tcp://x:1\",\"socket\":\"pub\"}]}",
                     "endpoints[0].socket"));
    CHECK(fails_with(EP("", "[]"), "endpoints[0].map: must be a non-empty array"));
    CHECK(fails_with(EP("", "[{\"match\":\"a\"}]"), "endpoints[0].map[0].topic: missing"));
    CHECK(fails_with(EP("", "[{\"topic\":\"a\"}]"), "endpoints[0].map[0].match: missing"));
    CHECK(fails_with(EP("", "[{\"match\":\"a\",\"topic\":\"a\",\"x\":1}]"),
                     "endpoints[0].map[0]: unknown key \"x\""));
    CHECK(fails_with(EP("", "[{\"match\":\"a\",\"topic\":\"a\"},{\"match\":\"b\",\"topic\":\"\"}]"),
                     "endpoints[0].map[1].topic: empty"));
    CHECK(fails_with(EP("", "[{\"match\":\"a\",\"topic\":\"x.${1}\"}]"),
                     "${1} needs a prefix match"));
    CHECK(fails_with(EP("", "[{\"match\":\"a*\",\"topic\":\"x.${2}\"}]"),
                     "${2} is not a variable"));
    CHECK(fails_with(EP("", "[{\"match\":\"a*\",\"topic\":\"x.${1\"}]"), "is not a variable"));
    CHECK(fails_with(EP("", "[{\"match\":\"a*\",\"topic\":\"x..${1}\"}]"),
                     "does not make a valid topic"));
    CHECK(fails_with(EP("", "[{\"match\":\"a\",\"topic\":\"x y\"}]"),
                     "does not make a valid topic"));
    CHECK(fails_with(EP(",\"payload\":\"xml\"", "[]"), "endpoints[0].payload"));
    CHECK(fails_with(EP(",\"sequence\":\"be64\"", "[]"), "endpoints[0].sequence"));
    CHECK(fails_with(EP(",\"bind\":\"yes\"", "[]"), "endpoints[0].bind"));
    CHECK(fails_with(EP(",\"topic_frame\":false", "[{\"match\":\"a\",\"topic\":\"a\"}]"),
                     "endpoints[0].topic_frame"));
    CHECK(fails_with(EP(",\"subscribe\":[]", "[{\"match\":\"a\",\"topic\":\"a\"}]"),
                     "endpoints[0].subscribe"));
    CHECK(fails_with(EP(",\"subscribe\":[1]", "[{\"match\":\"a\",\"topic\":\"a\"}]"),
                     "endpoints[0].subscribe[0]"));
    CHECK(fails_with("{\"endpoints\":[{\"endpoint\":\"tcp://x:1\",\"socket\":\"pull\","
                     "\"subscribe\":[\"a\"],\"map\":[{\"match\":\"a\",\"topic\":\"a\"}]}]}",
                     "only a sub socket subscribes"));
    CHECK(fails_with("{\"endpoints\":[{\"endpoint\":\"tcp://x:1\",\"socket\":\"sub\","
                     "\"map\":[{\"match\":\"a\",\"topic\":\"a\"}]},"
                     "{\"endpoint\":\"tcp://x:1\",\"socket\":\"pull\","
                     "\"map\":[{\"match\":\"a\",\"topic\":\"a\"}]}]}",
                     "endpoints[1].endpoint: tcp://x:1 is endpoints[0] already"));
    CHECK(fails_with("{\"endpoints\":[],\"endpoints\":[]}", "not JSON")); /* duplicate key */
}

TEST(parse_bounds)
{
    char *big = malloc(ZMAP_MAX_FILE + 2);
    REQUIRE(big);
    memset(big, ' ', ZMAP_MAX_FILE + 1);
    big[ZMAP_MAX_FILE + 1] = '\0';
    CHECK(fails_with(big, "larger than"));
    free(big);
    /* 257 rules */
    size_t cap = 64 + 257 * 40;
    char *t = malloc(cap);
    REQUIRE(t);
    size_t o = (size_t)
        snprintf(t, cap,
                 "{\"endpoints\":[{\"endpoint\":\"tcp://x:1\",\"socket\":\"sub\",\"map\":[");
    for (int i = 0; i < 257; i++)
        o += (size_t)snprintf(t + o, cap - o, "%s{\"match\":\"a%d\",\"topic\":\"a\"}", i ? "," : "",
                              i);
    snprintf(t + o, cap - o, "]}]}");
    CHECK(fails_with(t, "more than 256 rules"));
    free(t);
}

static zmap *one(const char *rules)
{
    char text[2048];
    snprintf(text, sizeof text,
             "{\"endpoints\":[{\"endpoint\":\"tcp://x:1\",\"socket\":\"sub\",\"map\":%s}]}", rules);
    return parse(text);
}

TEST(topic_mapping)
{
    char out[TOPIC_MAX + 1];
    zmap *m = one("[{\"match\":\"prices.*\",\"topic\":\"md.${1}\"},"
                  "{\"match\":\"hashblock\",\"topic\":\"bitcoin.${topic}\"},"
                  "{\"match\":\"p*\",\"topic\":\"other.p\"},"
                  "{\"match\":\"raw*\",\"topic\":\"raw${1}\"}]");
    REQUIRE(m);
    const zmap_endpoint *ep = &m->v[0];
    CHECK_EQ_INT(zmap_topic(ep, "prices.BTC", 10, out), 0);
    CHECK_STR(out, "md.BTC");
    CHECK_EQ_INT(zmap_topic(ep, "prices.BTC.USD", 14, out), 0); /* the rest may hold dots */
    CHECK_STR(out, "md.BTC.USD");
    CHECK_EQ_INT(zmap_topic(ep, "hashblock", 9, out), 1);
    CHECK_STR(out, "bitcoin.hashblock");
    CHECK_EQ_INT(zmap_topic(ep, "hashblock2", 10, out), -ENOENT); /* exact means exact */
    CHECK_EQ_INT(zmap_topic(ep, "pears", 5, out), 2);             /* first match wins */
    CHECK_STR(out, "other.p");
    CHECK_EQ_INT(zmap_topic(ep, "prices.", 7, out), SC_ETOPIC); /* md. : empty token */
    CHECK_EQ_INT(zmap_topic(ep, "prices.BTC/USD", 14, out), SC_ETOPIC);
    CHECK_EQ_INT(zmap_topic(ep, "prices.a\0b", 10, out), SC_ETOPIC);
    CHECK_EQ_INT(zmap_topic(ep, "prices..x", 9, out), SC_ETOPIC);
    CHECK_EQ_INT(zmap_topic(ep, "raw", 3, out), 3);
    CHECK_STR(out, "raw");
    CHECK_EQ_INT(zmap_topic(ep, "", 0, out), -ENOENT);
    CHECK_EQ_INT(zmap_topic(ep, "x", 1, out), -ENOENT);
    /* exactly TOPIC_MAX bytes pass, one more does not */
    char t[300];
    memcpy(t, "prices.", 7);
    memset(t + 7, 'a', sizeof t - 7);
    CHECK_EQ_INT(zmap_topic(ep, t, 7 + TOPIC_MAX - 3, out), 0);
    CHECK_EQ_INT(strlen(out), TOPIC_MAX);
    CHECK_EQ_INT(zmap_topic(ep, t, 7 + TOPIC_MAX - 2, out), SC_ETOPIC);
    CHECK_EQ_INT(zmap_topic(ep, t, sizeof t, out), SC_ETOPIC);
    CHECK(strlen(out) <= TOPIC_MAX);
    zmap_destroy(m);

    /* "*" catches all; "" only the empty topic (a pull socket's messages) */
    m = one("[{\"match\":\"\",\"topic\":\"empty\"},{\"match\":\"*\",\"topic\":\"all.${topic}\"}]");
    REQUIRE(m);
    CHECK_EQ_INT(zmap_topic(&m->v[0], "", 0, out), 0);
    CHECK_STR(out, "empty");
    CHECK_EQ_INT(zmap_topic(&m->v[0], "abc", 3, out), 1);
    CHECK_STR(out, "all.abc");
    zmap_destroy(m);
}

TEST(payload_conversion)
{
    char *d;
    size_t n;
    CHECK_EQ_INT(zmap_data(ZMAP_JSON, "{\"a\":1}", 7, 100, &d, &n), 0);
    CHECK_STR(d, "{\"a\":1}");
    CHECK_EQ_INT(n, 7);
    free(d);
    CHECK_EQ_INT(zmap_data(ZMAP_JSON, "42", 2, 100, &d, &n), 0);
    free(d);
    CHECK_EQ_INT(zmap_data(ZMAP_JSON, "{\"a\":", 5, 100, &d, &n), SC_EJSON);
    CHECK(d == NULL);
    CHECK_EQ_INT(zmap_data(ZMAP_JSON, "", 0, 100, &d, &n), SC_EJSON);
    CHECK_EQ_INT(zmap_data(ZMAP_JSON, "[1,2,3]", 7, 6, &d, &n), SC_ETOOLARGE);
    CHECK_EQ_INT(zmap_data(ZMAP_JSON, "[1,2,3]", 7, 7, &d, &n), 0);
    free(d);

    CHECK_EQ_INT(zmap_data(ZMAP_TEXT, "hi \"you\"", 8, 100, &d, &n), 0);
    CHECK_STR(d, "\"hi \\\"you\\\"\"");
    CHECK_EQ_INT(n, strlen(d));
    free(d);
    CHECK_EQ_INT(zmap_data(ZMAP_TEXT, "a\xff", 2, 100, &d, &n), 0); /* U+FFFD */
    CHECK_STR(d, "\"a\xef\xbf\xbd\"");
    free(d);
    CHECK_EQ_INT(zmap_data(ZMAP_TEXT, "", 0, 100, &d, &n), 0);
    CHECK_STR(d, "\"\"");
    free(d);
    CHECK_EQ_INT(zmap_data(ZMAP_TEXT, "abcd", 4, 5, &d, &n), SC_ETOOLARGE); /* 6 with quotes */
    CHECK_EQ_INT(zmap_data(ZMAP_TEXT, "abcd", 4, 6, &d, &n), 0);
    free(d);

    CHECK_EQ_INT(zmap_data(ZMAP_BASE64, "\x00\x01\x02\xff", 4, 100, &d, &n), 0);
    CHECK_STR(d, "\"AAEC/w==\"");
    CHECK_EQ_INT(n, 10);
    free(d);
    CHECK_EQ_INT(zmap_data(ZMAP_BASE64, "", 0, 100, &d, &n), 0);
    CHECK_STR(d, "\"\"");
    free(d);
    CHECK_EQ_INT(zmap_data(ZMAP_BASE64, "abc", 3, 5, &d, &n), SC_ETOOLARGE);
    CHECK_EQ_INT(zmap_data(ZMAP_BASE64, "abc", 3, 6, &d, &n), 0);
    CHECK_STR(d, "\"YWJj\"");
    free(d);
}

TEST(le32_sequence)
{
    CHECK_EQ_INT(zmap_le32("\x01\x00\x00\x00", 4), 1);
    CHECK_EQ_INT(zmap_le32("\xff\xff\xff\xff", 4), 4294967295LL);
    CHECK_EQ_INT(zmap_le32("\x00\x01\x00\x00", 4), 256);
    CHECK_EQ_INT(zmap_le32("\x01\x00\x00", 3), -1);
    CHECK_EQ_INT(zmap_le32("\x01\x00\x00\x00\x00", 5), -1);
}

TEST(destroy_accepts_null) { zmap_destroy(NULL); }

TEST_MAIN()
