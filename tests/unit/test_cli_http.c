/* test_cli_http.c - the CLI's HTTP response reader (clients/sidecast/http.c): the head, a
 * Content-Length body, a chunked body (strictly parsed) and a body up to the close, fed in
 * every split so that "incomplete" and "complete" are decided right at each byte. */
#include "test.h"

#include "../../clients/sidecast/http.h"

#include <errno.h>

/* Feeds text split at every point: first part, then all; checks each step's verdict and the
 * body. want_rc: 0 (complete, body expected) or a negative errno. eof: the peer closes after
 * the last byte. */
static int run(const char *text, int eof, int head_request, int want_rc, const char *body)
{
    size_t n = strlen(text);
    char *buf = malloc(n + 1);
    int ok = 1;

    for (size_t cut = 0; cut <= n && ok; cut++) {
        http_reader rd;
        int rc;
        http_reader_init(&rd, head_request);
        memcpy(buf, text, n);
        rc = http_reader_step(&rd, buf, cut, 0);
        if (rc == 0 && cut < n && want_rc == 0) {
            /* complete early is only right when the rest is not part of the response */
            size_t bl;
            ok = http_reader_body(&rd, buf, cut, &bl) == 0 && strcmp(buf, body) == 0;
            continue;
        }
        if (rc < 0 && rc != SC_EINCOMPLETE) {
            ok = rc == want_rc;
            continue;
        }
        if (rc == SC_EINCOMPLETE) rc = http_reader_step(&rd, buf, n, eof);
        if (rc != want_rc) {
            ok = 0;
            break;
        }
        if (rc == 0) {
            size_t bl;
            ok = http_reader_body(&rd, buf, n, &bl) == 0 && bl == strlen(body) &&
                 strcmp(buf, body) == 0;
        }
    }
    free(buf);
    return ok;
}

TEST(content_length_body)
{
    CHECK(run("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 0, 0, 0, "hello"));
    CHECK(run("HTTP/1.1 200 OK\nContent-Length: 0\n\n", 0, 0, 0, ""));
    /* the peer closes before the announced length */
    CHECK(run("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello", 1, 0, -EPROTO, ""));
    CHECK(run("HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello", 0, 0, -EPROTO, ""));
    CHECK(run("HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", 0, 0, -EPROTO, ""));
    CHECK(run("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", 0, 0, -EMSGSIZE,
              ""));
}

TEST(chunked_body)
{
    CHECK(run("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
              0, 0, 0, "hello world"));
    CHECK(run("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\nA\n0123456789\n0\nX-T: 1\n\n", 0, 0,
              0, "0123456789"));
    /* a chunk that itself ends in "0\r\n\r\n" does not end the body */
    CHECK(run("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5\r\n0\r\n\r\n\r\n0\r\n\r\n",
              0, 0, 0, "0\r\n\r\n"));
    CHECK(run("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0, 0, -EPROTO, ""));
    CHECK(run("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\n\n\n", 0, 0, -EPROTO, ""));
    CHECK(run("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 0, 0, -EPROTO, ""));
    CHECK(run("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX", 0, 0, -EPROTO,
              ""));
    CHECK(run("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              "ffffffffffffffffffff\r\n",
              0, 0, -EPROTO, ""));
    /* cut short by the close */
    CHECK(run("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", 1, 0, -EPROTO, ""));
}

TEST(body_up_to_close_and_no_body)
{
    CHECK(run("HTTP/1.0 200 OK\r\nX: y\r\n\r\nall of it", 1, 0, 0, "all of it"));
    CHECK(run("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", 0, 0, 0, ""));
    CHECK(run("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", 0, 1, 0, ""));
}

TEST(bad_heads)
{
    CHECK(run("HTTP/2 200\r\n\r\n", 0, 0, -EPROTO, ""));
    CHECK(run("HTTP/1.1 2x0 OK\r\n\r\n", 0, 0, -EPROTO, ""));
    CHECK(run("HTTP/1.1 200 OK\r\nno colon\r\n\r\n", 0, 0, -EPROTO, ""));
    CHECK(run("HTTP/1.1 200 OK\r\n", 1, 0, -EPROTO, ""));
}

TEST_MAIN()
