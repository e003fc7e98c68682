/* Unit tests of the pure parts of common/: configuration values, addresses, log levels,
 * the metrics registry's text format, the names of the error codes. */
#include "cfg.h"
#include "err.h"
#include "log.h"
#include "metrics.h"
#include "test.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

TEST(cfg_int_range)
{
    long v = 0;
    cfg_opt o = {"X_INT", CFG_INT, "5", "an int", 0, 1, 10, &v};
    char err[256];
    CHECK_EQ_INT(cfg_parse_value(&o, "1", err, sizeof err), 0);
    CHECK_EQ_INT(cfg_parse_value(&o, "10", err, sizeof err), 0);
    CHECK_EQ_INT(cfg_parse_value(&o, "11", err, sizeof err), -1);
    CHECK(strstr(err, "out of range") != NULL);
    CHECK_EQ_INT(cfg_parse_value(&o, "0", err, sizeof err), -1);
    CHECK_EQ_INT(cfg_parse_value(&o, "abc", err, sizeof err), -1);
    CHECK(strstr(err, "not an integer") != NULL);
    CHECK_EQ_INT(cfg_parse_value(&o, "5x", err, sizeof err), -1);
    CHECK_EQ_INT(cfg_parse_value(&o, "", err, sizeof err), -1);
    CHECK_EQ_INT(cfg_parse_value(&o, " 5", err, sizeof err), -1);
    CHECK_EQ_INT(cfg_parse_value(&o, "99999999999999999999999", err, sizeof err), -1);
}

TEST(cfg_bool_values)
{
    int b = 0;
    cfg_opt o = {"X_BOOL", CFG_BOOL, "false", "a bool", 0, 0, 0, &b};
    char err[256];
    const char *good[] = {"1", "0", "true", "FALSE", "yes", "no", "on", "off"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        CHECK_EQ_INT(cfg_parse_value(&o, good[i], err, sizeof err), 0);
    CHECK_EQ_INT(cfg_parse_value(&o, "maybe", err, sizeof err), -1);
    CHECK_EQ_INT(cfg_parse_value(&o, "", err, sizeof err), -1);
}

TEST(cfg_addr_values)
{
    char *s = NULL;
    cfg_opt o = {"X_ADDR", CFG_ADDR, "0.0.0.0:8080", "an address", 0, 0, 0, &s};
    char err[256];
    CHECK_EQ_INT(cfg_parse_value(&o, "127.0.0.1:8080", err, sizeof err), 0);
    CHECK_EQ_INT(cfg_parse_value(&o, "[::1]:8080", err, sizeof err), 0);
    CHECK_EQ_INT(cfg_parse_value(&o, "localhost:1", err, sizeof err), 0);
    CHECK_EQ_INT(cfg_parse_value(&o, "127.0.0.1", err, sizeof err), -1);
    CHECK_EQ_INT(cfg_parse_value(&o, "127.0.0.1:65536", err, sizeof err), -1);
    CHECK_EQ_INT(cfg_parse_value(&o, ":8080", err, sizeof err), -1);
    CHECK_EQ_INT(cfg_parse_value(&o, "host:80a", err, sizeof err), -1);
    CHECK_EQ_INT(cfg_parse_value(&o, "", err, sizeof err), 0); /* none */
    o.flags = CFG_REQUIRED;
    CHECK_EQ_INT(cfg_parse_value(&o, "", err, sizeof err), -1);
    char host[64];
    int port = 0;
    CHECK_EQ_INT(cfg_split_addr("[::1]:9", host, sizeof host, &port), 0);
    CHECK_STR(host, "::1");
    CHECK_EQ_INT(port, 9);
}

TEST(cfg_required_and_file)
{
    char *s = NULL;
    cfg_opt req = {"X_REQ", CFG_STR, NULL, "needed", CFG_REQUIRED, 0, 0, &s};
    cfg_opt file = {"X_FILE", CFG_FILE, "", "a file", 0, 0, 0, &s};
    char err[256];
    CHECK_EQ_INT(cfg_parse_value(&req, "", err, sizeof err), -1);
    CHECK(strstr(err, "required") != NULL);
    CHECK_EQ_INT(cfg_parse_value(&req, "x", err, sizeof err), 0);
    CHECK_EQ_INT(cfg_parse_value(&file, "", err, sizeof err), 0);
    CHECK_EQ_INT(cfg_parse_value(&file, "/nonexistent/file", err, sizeof err), -1);
    CHECK(strstr(err, "cannot read") != NULL);
    CHECK_EQ_INT(cfg_parse_value(&file, "/etc/hostname", err, sizeof err), 0);
}

TEST(cfg_load_reads_environment)
{
    long n = 0;
    char *s = NULL;
    int lvl = 0;
    cfg_opt opts[] = {
        {"SC_TEST_N", CFG_INT, "3", "n", 0, 1, 100, &n},
        {"SC_TEST_S", CFG_STR, "dflt", "s", 0, 0, 0, &s},
        {"SC_TEST_LEVEL", CFG_LEVEL, "info", "level", 0, 0, 0, &lvl},
    };
    char *argv[] = {"prog", NULL};
    setenv("SC_TEST_N", "42", 1);
    unsetenv("SC_TEST_S");
    CHECK_EQ_INT(cfg_load("test", opts, CFG_COUNT(opts), 1, argv), 0);
    CHECK_EQ_INT(n, 42);
    CHECK_STR(s, "dflt");
    CHECK_EQ_INT(lvl, LOG_INFO);
    free(s);
    setenv("SC_TEST_N", "1000", 1);
    CHECK_EQ_INT(cfg_load("test", opts, CFG_COUNT(opts), 1, argv), -1);
    setenv("SC_TEST_N", "7", 1);
    setenv("SC_TEST_LEVEL", "loud", 1);
    CHECK_EQ_INT(cfg_load("test", opts, CFG_COUNT(opts), 1, argv), -1);
    unsetenv("SC_TEST_LEVEL");
    char *bad_argv[] = {"prog", "--port", NULL};
    CHECK_EQ_INT(cfg_load("test", opts, CFG_COUNT(opts), 2, bad_argv), -1);
    free(s);
}

TEST(cfg_mask_url_hides_every_password)
{
    char out[512];
    struct {
        const char *in, *want;
    } cases[] = {
        {"redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"},
        {"redis://:pw@127.0.0.1/0", "redis://:****@127.0.0.1/0"},
        {"redis://:ab,cdPW@host/0", "redis://:****@host/0"},
        {"redis://:p@ssPW@host/0", "redis://:****@host/0"},
        {"nats://sc:S3cret@127.0.0.1:4222", "nats://sc:****@127.0.0.1:4222"},
        {"nats://tok3n@127.0.0.1:4222", "nats://****@127.0.0.1:4222"},
        {"nats://u:a@h1:4222,nats://u:b,c@h2:4222,nats://h3:4222",
         "nats://u:****@h1:4222,nats://u:****@h2:4222,nats://h3:4222"},
        {"plain text, no url", "plain text, no url"},
        /* a '/' (or '?', '#') in the password: nats.c takes the last '@', and so does the
         * mask (generated base64 secrets often hold a '/') */
        {"nats://sc:pa/ss@nats:4222", "nats://sc:****@nats:4222"},
        {"nats://sc:Ab/+c=/d?e#f@h1:4222,nats://u:x/y@h2:4222",
         "nats://sc:****@h1:4222,nats://u:****@h2:4222"},
        {"redis://:a/b/c@host:6379/0", "redis://:****@host:6379/0"},
        {"nats://tok/en@127.0.0.1:4222", "nats://****@127.0.0.1:4222"},
        {"redis://host:6379/0", "redis://host:6379/0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cfg_mask_url(cases[i].in, out, sizeof out);
        CHECK_STR(out, cases[i].want);
    }
    /* a long value is masked before it is cut: no tail of the secret shows */
    char big[2048];
    snprintf(big, sizeof big, "redis://:%0900dSECRET@host/0", 7);
    cfg_mask_url(big, out, 64);
    CHECK(strstr(out, "SECRET") == NULL && strstr(out, "0000") == NULL);
}

TEST(log_level_names)
{
    enum log_level l;
    CHECK_EQ_INT(log_level_parse("debug", &l), 0);
    CHECK_EQ_INT(l, LOG_DEBUG);
    CHECK_EQ_INT(log_level_parse("WARN", &l), 0);
    CHECK_EQ_INT(l, LOG_WARN);
    CHECK_EQ_INT(log_level_parse("warning", &l), 0);
    CHECK_EQ_INT(log_level_parse("verbose", &l), -1);
}

TEST(metrics_text_format)
{
    metric *c = metrics_counter("t_requests_total", "code=\"200\"", "Requests");
    metric *c2 = metrics_counter("t_requests_total", "code=\"404\"", "Requests");
    metric *again = metrics_counter("t_requests_total", "code=\"200\"", "ignored");
    metric *g = metrics_gauge("t_inflight", NULL, "In flight");
    metric *h = metrics_histogram("t_latency_seconds", NULL, "Latency");
    CHECK(c == again);
    metric_inc(c);
    metric_add(c, 2);
    metric_inc(c2);
    metric_set(g, 7);
    metric_observe(h, 0.003);
    metric_observe(h, 20.0);
    CHECK_EQ_INT(metric_value(c), 3);
    size_t len = 0;
    char *text = metrics_render(&len);
    REQUIRE(text != NULL);
    CHECK_EQ_INT(len, strlen(text));
    CHECK(strstr(text, "# TYPE t_requests_total counter\n") != NULL);
    CHECK(strstr(text, "t_requests_total{code=\"200\"} 3\n") != NULL);
    CHECK(strstr(text, "t_requests_total{code=\"404\"} 1\n") != NULL);
    CHECK(strstr(text, "t_inflight 7\n") != NULL);
    CHECK(strstr(text, "t_latency_seconds_bucket{le=\"0.0025\"} 0\n") != NULL);
    CHECK(strstr(text, "t_latency_seconds_bucket{le=\"0.005\"} 1\n") != NULL);
    CHECK(strstr(text, "t_latency_seconds_bucket{le=\"+Inf\"} 2\n") != NULL);
    CHECK(strstr(text, "t_latency_seconds_count 2\n") != NULL);
    /* HELP/TYPE once per family, even with two label sets */
    const char *first = strstr(text, "# HELP t_requests_total");
    CHECK(first && strstr(first + 1, "# HELP t_requests_total") == NULL);
    free(text);
}

TEST(every_error_code_has_a_name)
{
    for (int e = SC_E_FIRST - 1; e > SC_E_LAST; e--) {
        const char *n = sc_strerror(e);
        bool gap = strcmp(n, "unknown error") == 0; /* a number the enum skips */
        bool named = e == SC_EINCOMPLETE || e == SC_EMALFORMED || e == SC_ETOOLARGE ||
                     e == SC_EJSON || e == SC_ETYPE || e == SC_ETOPIC || e == SC_EDUPLICATE ||
                     e == SC_ENORESPONDERS || e == SC_EREPLY || (e <= SC_EALG && e >= SC_EKEY) ||
                     e == SC_ECERT;
        CHECK(gap != named);
    }
    CHECK_STR(sc_strerror(0), "ok");
    CHECK_STR(sc_strerror(SC_EEXPIRED), "expired");
    CHECK_STR(sc_strerror(SC_ENORESPONDERS), "no responders");
    CHECK_STR(sc_strerror(-ETIMEDOUT), "timeout");
    CHECK_STR(sc_strerror(-ENOMEM), "out of memory");
    CHECK(strcmp(sc_strerror(-ECONNREFUSED), "unknown error") != 0); /* the C library's */
    CHECK_STR(sc_strerror(SC_E_LAST - 1), "unknown error");
    CHECK_STR(sc_strerror(7), "unknown error"); /* positive is no code */
}

TEST_MAIN()
