/* test_ws_reader.c - message assembly (common/ws/ws_reader.c). Every stream is fed
 * whole, byte at a time and in several chunk patterns, with a fixed message buffer and with
 * one grown on demand (moved on every growth), and must give the same events each time.
 * Covers RFC 6455 §5.4 fragmentation with interleaved control frames, §5.5 control frames,
 * §5.6/§8.1 UTF-8 (fail fast, across fragments), §5.5.1/§7.4 close payloads, size limits. */
#include "test.h"

#include "ws/utf8.h"
#include "ws/ws_reader.h"

#include <stdint.h>

/* ---- stream builder: masked client frames ---- */

typedef struct sb {
    uint8_t *p;
    size_t n, cap;
} sb;

static void sb_raw(sb *s, const void *bytes, size_t len)
{
    if (s->n + len > s->cap) {
        s->cap = (s->n + len) * 2 + 64;
        s->p = realloc(s->p, s->cap);
        if (!s->p) abort();
    }
    if (len) memcpy(s->p + s->n, bytes, len);
    s->n += len;
}

/* Appends a frame: b0 is the first header byte (FIN | RSV | opcode); masked with a key that
 * changes from frame to frame. */
static void sb_frame(sb *s, uint8_t b0, const void *payload, size_t len)
{
    static uint8_t seed = 1;
    uint8_t key[4] = {(uint8_t)(0x37 + seed), 0xfa, (uint8_t)(0x21 ^ seed), 0x3d};
    uint8_t hdr[WS_FRAME_HEADER_MAX];
    seed += 7;
    size_t hl = ws_frame_header_encode(hdr, b0 & 0x0F, (b0 & 0x80) != 0, b0 & 0x70, len, key);
    sb_raw(s, hdr, hl);
    size_t at = s->n;
    sb_raw(s, payload, len);
    ws_frame_unmask(s->p + at, len, key, 0);
}

static void sb_free(sb *s)
{
    free(s->p);
    memset(s, 0, sizeof *s);
}

/* ---- event logs ---- */

#define MAXEV 64
typedef struct evrec {
    int type;
    uint16_t code;
    int err;
    size_t len;
    uint64_t hash;
} evrec;
typedef struct evlog {
    size_t n;
    evrec ev[MAXEV];
    size_t need_buffer; /* WS_EV_NEED_BUFFER events seen (not logged) */
} evlog;

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void log_add(evlog *l, int type, const void *data, size_t len, uint16_t code, int err)
{
    if (l->n == MAXEV) return;
    l->ev[l->n++] = (evrec){type, code, err, len, fnv(data, len)};
}

#define EXP_MSG(l, t, data, len) log_add(l, t, data, len, 0, 0)
#define EXP_CLOSE(l, code, reason) log_add(l, WS_EV_CLOSE, reason, strlen(reason), code, 0)
#define EXP_ERR(l, e) log_add(l, WS_EV_ERROR, NULL, 0, ws_frame_err_code(e), e)

/* BUF_AT_REST: on demand, and the reader is kept as the edge keeps it (wsc.c): after each
 * chunk, one at rest (ws_reader_at_rest) is dropped and a fresh one made for the next chunk;
 * one that is not is moved to another place (its old place scribbled over). */
enum { BUF_FIXED, BUF_ON_DEMAND, BUF_AT_REST };

/* Feeds stream in chunks (pattern cycled; 0 = all at once) through a fresh reader. */
static void run(const uint8_t *stream, size_t n, const size_t *pattern, size_t max_message,
                int bufmode, bool from_client, evlog *log)
{
    ws_reader rs[2], *r = &rs[0];
    ws_reader_config cfg = {from_client, max_message};
    uint8_t *mbuf = NULL, *chunk = malloc(n ? n : 1);
    size_t mcap = 0, off = 0, pi = 0;

    memset(log, 0, sizeof *log);
    if (bufmode == BUF_FIXED) {
        mcap = max_message;
        mbuf = malloc(mcap ? mcap : 1);
    }
    ws_reader_init(r, &cfg, mbuf, mcap);
    while (off < n) {
        size_t k = n; /* pattern {0}: everything at once */
        if (pattern[0]) {
            k = pattern[pi++];
            if (pattern[pi] == 0) pi = 0;
        }
        if (k > n - off) k = n - off;
        memcpy(chunk, stream + off, k); /* a fresh read buffer, as from a socket */
        uint8_t *in = chunk;
        size_t left = k;
        while (left > 0) {
            ws_event ev;
            size_t used = ws_reader_feed(r, in, left, &ev);
            if (used > left) {
                CHECK(used <= left);
                goto out;
            }
            in += used;
            left -= used;
            if (ev.type == WS_EV_NONE) {
                CHECK_EQ_INT(left, 0);
                break;
            }
            if (ev.type == WS_EV_NEED_BUFFER) {
                size_t keep = ws_reader_buffered(r);
                CHECK(bufmode != BUF_FIXED);
                CHECK(ev.len > mcap && ev.len <= max_message && keep <= mcap);
                /* move on every growth, so a stale pointer would show under ASan */
                uint8_t *nb = malloc(ev.len);
                if (keep) memcpy(nb, mbuf, keep);
                free(mbuf);
                mbuf = nb;
                mcap = ev.len;
                ws_reader_set_buffer(r, mbuf, mcap);
                log->need_buffer++;
                continue;
            }
            if (ev.type != WS_EV_ERROR) CHECK(ev.data != NULL);
            if (ev.type == WS_EV_TEXT) CHECK(utf8_valid(ev.data, ev.len));
            log_add(log, ev.type, ev.data, ev.len, ev.code, ev.err);
        }
        off += k;
        if (bufmode == BUF_AT_REST) {
            ws_reader *next = r == &rs[0] ? &rs[1] : &rs[0];
            if (ws_reader_at_rest(r)) {
                CHECK_EQ_INT(ws_reader_buffered(r), 0);
                memset(next, 0xa5, sizeof *next);
                ws_reader_init(next, &cfg, mbuf, mcap);
            } else {
                memcpy(next, r, sizeof *next);
            }
            memset(r, 0x5a, sizeof *r);
            r = next;
        }
    }
out:
    free(chunk);
    free(mbuf);
}

static const char *ev_name(int t)
{
    static const char *names[] = {"NONE", "TEXT",  "BINARY", "PING",
                                  "PONG", "CLOSE", "ERROR",  "NEED_BUFFER"};
    return t >= 0 && t <= WS_EV_NEED_BUFFER ? names[t] : "?";
}

static int logs_equal(const evlog *a, const evlog *b, char *why, size_t wn)
{
    if (a->n != b->n) {
        snprintf(why, wn, "%zu events, expected %zu (first: %s)", a->n, b->n,
                 a->n ? ev_name(a->ev[0].type) : "-");
        return 0;
    }
    for (size_t i = 0; i < a->n; i++) {
        const evrec *x = &a->ev[i], *y = &b->ev[i];
        if (x->type != y->type || x->code != y->code || x->err != y->err || x->len != y->len ||
            x->hash != y->hash) {
            snprintf(why, wn,
                     "event %zu: %s code %u err %d len %zu, expected %s code %u err %d "
                     "len %zu%s",
                     i, ev_name(x->type), x->code, x->err, x->len, ev_name(y->type), y->code,
                     y->err, y->len, x->hash != y->hash ? " (data differs)" : "");
            return 0;
        }
    }
    return 1;
}

/* Runs stream with every chunking and both buffer modes; each must give `want`. */
static void check_stream_cfg(const sb *s, size_t max_message, bool from_client, const evlog *want)
{
    static const size_t p_all[] = {0}, p1[] = {1, 0}, p2[] = {2, 0}, p3[] = {3, 0}, p7[] = {7, 0},
                        p_var[] = {1, 5, 2, 13, 3, 64, 1, 1, 4, 0};
    static const size_t *patterns[] = {p_all, p1, p2, p3, p7, p_var};
    static const char *pnames[] = {"whole", "1", "2", "3", "7", "varied"};
    for (size_t p = 0; p < sizeof patterns / sizeof patterns[0]; p++) {
        for (int mode = BUF_FIXED; mode <= BUF_AT_REST; mode++) {
            evlog got;
            char why[300];
            run(s->p, s->n, patterns[p], max_message, mode, from_client, &got);
            if (!logs_equal(&got, want, why, sizeof why)) {
                char what[400];
                snprintf(what, sizeof what, "chunks %s, %s buffer: %s", pnames[p],
                         mode == BUF_FIXED       ? "fixed"
                         : mode == BUF_ON_DEMAND ? "on-demand"
                                                 : "at-rest",
                         why);
                test__fail(__FILE__, __LINE__, what);
                return;
            }
            if (mode == BUF_FIXED) CHECK_EQ_INT(got.need_buffer, 0);
        }
    }
}

static void check_stream(const sb *s, size_t max_message, const evlog *want)
{
    check_stream_cfg(s, max_message, true, want);
}

#define MAX 70000

/* ---- tests ---- */

TEST(reader_rfc_masked_hello)
{
    sb s = {0};
    evlog want = {0};
    const uint8_t f[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
    sb_raw(&s, f, sizeof f);
    EXP_MSG(&want, WS_EV_TEXT, "Hello", 5);
    check_stream(&s, MAX, &want);
    sb_free(&s);
}

/* Unmasked server frames on the client side (RFC §5.7 examples). */
TEST(reader_client_side_unmasked)
{
    sb s = {0};
    evlog want = {0};
    const uint8_t f[] = {0x01, 0x03, 'H', 'e',  'l',  0x89, 0x00, 0x80, 0x02, 'l', 'o',
                         0x8a, 0x01, 'x', 0x81, 0x05, 'H',  'e',  'l',  'l',  'o'};
    sb_raw(&s, f, sizeof f);
    EXP_MSG(&want, WS_EV_PING, "", 0);
    EXP_MSG(&want, WS_EV_TEXT, "Hello", 5);
    EXP_MSG(&want, WS_EV_PONG, "x", 1);
    EXP_MSG(&want, WS_EV_TEXT, "Hello", 5);
    check_stream_cfg(&s, MAX, false, &want);
    /* the same bytes at a server: unmasked client frame */
    evlog want2 = {0};
    EXP_ERR(&want2, WS_ERR_UNMASKED);
    check_stream_cfg(&s, MAX, true, &want2);
    sb_free(&s);
}

TEST(reader_fragmented_with_controls_between)
{
    sb s = {0};
    evlog want = {0};
    sb_frame(&s, 0x01, "Hel", 3);      /* TEXT, FIN = 0 */
    sb_frame(&s, 0x89, "ping!", 5);    /* PING between fragments */
    sb_frame(&s, 0x00, "", 0);         /* empty CONT */
    sb_frame(&s, 0x8A, "pong", 4);     /* PONG between fragments */
    sb_frame(&s, 0x80, "lo", 2);       /* CONT, FIN */
    sb_frame(&s, 0x82, "\x00\xff", 2); /* BINARY */
    sb_frame(&s, 0x02, "ab", 2);       /* BINARY in 3 fragments */
    sb_frame(&s, 0x00, "cd", 2);
    sb_frame(&s, 0x80, "ef", 2);
    EXP_MSG(&want, WS_EV_PING, "ping!", 5);
    EXP_MSG(&want, WS_EV_PONG, "pong", 4);
    EXP_MSG(&want, WS_EV_TEXT, "Hello", 5);
    EXP_MSG(&want, WS_EV_BINARY, "\x00\xff", 2);
    EXP_MSG(&want, WS_EV_BINARY, "abcdef", 6);
    check_stream(&s, MAX, &want);
    sb_free(&s);
}

TEST(reader_empty_messages)
{
    sb s = {0};
    evlog want = {0};
    sb_frame(&s, 0x81, "", 0);
    sb_frame(&s, 0x82, "", 0);
    sb_frame(&s, 0x01, "", 0);
    sb_frame(&s, 0x00, "", 0);
    sb_frame(&s, 0x80, "", 0);
    sb_frame(&s, 0x89, "", 0);
    EXP_MSG(&want, WS_EV_TEXT, "", 0);
    EXP_MSG(&want, WS_EV_BINARY, "", 0);
    EXP_MSG(&want, WS_EV_TEXT, "", 0);
    EXP_MSG(&want, WS_EV_PING, "", 0);
    check_stream(&s, MAX, &want);
    /* even with max_message 0 or 1 and no buffer at all */
    check_stream(&s, 1, &want);
    check_stream(&s, 0, &want);
    sb_frame(&s, 0x81, "x", 1);
    EXP_ERR(&want, WS_ERR_FRAME_SIZE);
    check_stream(&s, 0, &want);
    sb_free(&s);
}

/* 7/16/64-bit lengths at their boundaries, whole and fragmented (Autobahn 1.1, 1.2, 5.x). */
TEST(reader_length_boundaries)
{
    static const size_t lens[] = {0, 1, 125, 126, 127, 65535, 65536};
    uint8_t *text = malloc(65536), *bin = malloc(65536);
    for (size_t i = 0; i < 65536; i++) {
        text[i] = (uint8_t)('a' + i % 26);
        bin[i] = (uint8_t)(i * 7);
    }
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t L = lens[i];
        sb s = {0};
        evlog want = {0};
        sb_frame(&s, 0x81, text, L);
        sb_frame(&s, 0x82, bin, L);
        /* three fragments with a ping between */
        sb_frame(&s, 0x02, bin, L / 3);
        sb_frame(&s, 0x89, "p", 1);
        sb_frame(&s, 0x00, bin + L / 3, L / 3);
        sb_frame(&s, 0x80, bin + 2 * (L / 3), L - 2 * (L / 3));
        EXP_MSG(&want, WS_EV_TEXT, text, L);
        EXP_MSG(&want, WS_EV_BINARY, bin, L);
        EXP_MSG(&want, WS_EV_PING, "p", 1);
        EXP_MSG(&want, WS_EV_BINARY, bin, L);
        check_stream(&s, 65536, &want);
        if (L > 0) { /* one byte under the limit: 1009 before any payload */
            evlog want2 = {0};
            EXP_ERR(&want2, WS_ERR_FRAME_SIZE);
            check_stream(&s, L - 1, &want2);
        }
        sb_free(&s);
    }
    free(text);
    free(bin);
}

TEST(reader_control_frame_limits)
{
    uint8_t p[126];
    memset(p, 'x', sizeof p);
    sb s = {0};
    evlog want = {0};
    sb_frame(&s, 0x89, p, 125); /* Autobahn 2.4: 125 bytes is fine */
    sb_frame(&s, 0x8A, p, 125);
    EXP_MSG(&want, WS_EV_PING, p, 125);
    EXP_MSG(&want, WS_EV_PONG, p, 125);
    check_stream(&s, MAX, &want);
    sb_free(&s);

    static const uint8_t ops[] = {0x89, 0x8A, 0x88};
    for (size_t i = 0; i < 3; i++) { /* Autobahn 2.5, 7.3.6: 126 bytes */
        sb t = {0};
        evlog w = {0};
        sb_frame(&t, ops[i], p, 126);
        EXP_ERR(&w, WS_ERR_CTRL_LEN);
        check_stream(&t, MAX, &w);
        sb_free(&t);
    }
    for (size_t i = 0; i < 3; i++) { /* Autobahn 5.1, 5.2: fragmented control frames */
        sb t = {0};
        evlog w = {0};
        sb_frame(&t, ops[i] & 0x0F, p, 2);
        sb_frame(&t, 0x80, p, 2);
        EXP_ERR(&w, WS_ERR_CTRL_FRAG);
        check_stream(&t, MAX, &w);
        sb_free(&t);
    }
}

/* Autobahn 3.x: RSV bits without an extension; the frames before still count. */
TEST(reader_rsv_bits)
{
    for (uint8_t rsv = 0x10; rsv <= 0x70; rsv += 0x10) {
        static const uint8_t ops[] = {0x81, 0x82, 0x89, 0x8A, 0x88, 0x80};
        for (size_t i = 0; i < sizeof ops; i++) {
            sb s = {0};
            evlog want = {0};
            sb_frame(&s, 0x81, "Hello", 5);
            sb_frame(&s, ops[i] | rsv, "x", 1);
            sb_frame(&s, 0x89, "after", 5);
            EXP_MSG(&want, WS_EV_TEXT, "Hello", 5);
            EXP_ERR(&want, WS_ERR_RSV);
            check_stream(&s, MAX, &want);
            sb_free(&s);
        }
    }
}

/* Autobahn 4.x: reserved opcodes, alone and inside a fragmented message. */
TEST(reader_reserved_opcodes)
{
    for (int op = 3; op < 16; op++) {
        if (op >= 8 && op <= 10) continue;
        sb s = {0};
        evlog want = {0};
        sb_frame(&s, 0x81, "Hello", 5);
        sb_frame(&s, 0x01, "frag", 4);
        sb_frame(&s, (uint8_t)(0x80 | op), "", 0);
        sb_frame(&s, 0x89, "", 0);
        EXP_MSG(&want, WS_EV_TEXT, "Hello", 5);
        EXP_ERR(&want, WS_ERR_OPCODE);
        check_stream(&s, MAX, &want);
        sb_free(&s);
    }
}

/* Autobahn 5.x: continuation without a message; a new message inside a fragmented one. */
TEST(reader_fragmentation_errors)
{
    sb s = {0};
    evlog want = {0};
    sb_frame(&s, 0x80, "lo", 2); /* 5.9: CONT FIN with nothing started */
    EXP_ERR(&want, WS_ERR_CONT);
    check_stream(&s, MAX, &want);
    sb_free(&s);

    memset(&want, 0, sizeof want);
    sb_frame(&s, 0x81, "Hello", 5);
    sb_frame(&s, 0x00, "lo", 2); /* CONT after a complete message */
    EXP_MSG(&want, WS_EV_TEXT, "Hello", 5);
    EXP_ERR(&want, WS_ERR_CONT);
    check_stream(&s, MAX, &want);
    sb_free(&s);

    static const uint8_t second[] = {0x81, 0x01, 0x82, 0x02};
    for (size_t i = 0; i < sizeof second; i++) {
        memset(&want, 0, sizeof want);
        sb_frame(&s, 0x01, "Hel", 3);
        sb_frame(&s, 0x89, "p", 1);
        sb_frame(&s, second[i], "x", 1);
        EXP_MSG(&want, WS_EV_PING, "p", 1);
        EXP_ERR(&want, WS_ERR_INTERLEAVE);
        check_stream(&s, MAX, &want);
        sb_free(&s);
    }
}

TEST(reader_unmasked_and_len64)
{
    sb s = {0};
    evlog want = {0};
    sb_raw(&s, "\x81\x02hi", 4); /* unmasked from a client */
    EXP_ERR(&want, WS_ERR_UNMASKED);
    check_stream(&s, MAX, &want);
    sb_free(&s);

    memset(&want, 0, sizeof want);
    sb_raw(&s, "\x82\xff\x80\x00\x00\x00\x00\x00\x00\x01\x01\x02\x03\x04", 14);
    EXP_ERR(&want, WS_ERR_LEN64);
    check_stream(&s, MAX, &want);
    sb_free(&s);

    memset(&want, 0, sizeof want); /* a legal but huge length: too big, before the payload */
    sb_raw(&s, "\x82\xff\x00\x00\x00\x01\x00\x00\x00\x00\x01\x02\x03\x04", 14);
    EXP_ERR(&want, WS_ERR_FRAME_SIZE);
    check_stream(&s, MAX, &want);
    sb_free(&s);
}

/* Message size = sum of fragments; 1009 as soon as a fragment's header would exceed it. */
TEST(reader_message_size_limit)
{
    uint8_t p[100];
    memset(p, 'z', sizeof p);
    sb s = {0};
    evlog want = {0};
    sb_frame(&s, 0x01, p, 40);
    sb_frame(&s, 0x00, p, 40);
    sb_frame(&s, 0x89, "still", 5); /* controls do not count */
    sb_frame(&s, 0x80, p, 20);      /* exactly 100 */
    sb_frame(&s, 0x02, p, 60);
    sb_frame(&s, 0x80, p, 41); /* 101 */
    EXP_MSG(&want, WS_EV_PING, "still", 5);
    EXP_MSG(&want, WS_EV_TEXT, p, 100);
    EXP_ERR(&want, WS_ERR_MSG_SIZE);
    check_stream(&s, 100, &want);
    sb_free(&s);
}

/* Autobahn 6.x: UTF-8 in text messages, across fragments, in every chunking. */
TEST(reader_utf8_text)
{
    static const char *valid[] = {
        "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",
        "Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!",
        "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbd",
    };
    static const char *invalid[] = {
        "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
        "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64",
        "\xc0\xaf",
        "\xf8\x88\x80\x80\x80",
        "\xed\xbf\xbf",
        "\xe0\x80\xaf",
        "abc\xff",
        "\x80",
        "\xce\xba\xe1\xbd", /* truncated at the end of the message */
    };
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        const char *t = valid[i];
        size_t n = strlen(t);
        for (size_t cut1 = 0; cut1 <= n; cut1++) {
            size_t cut2 = cut1 + (n - cut1) / 2;
            sb s = {0};
            evlog want = {0};
            sb_frame(&s, 0x01, t, cut1); /* split wherever, even inside a character */
            sb_frame(&s, 0x89, "", 0);
            sb_frame(&s, 0x00, t + cut1, cut2 - cut1);
            sb_frame(&s, 0x80, t + cut2, n - cut2);
            sb_frame(&s, 0x81, t, n);
            EXP_MSG(&want, WS_EV_PING, "", 0);
            EXP_MSG(&want, WS_EV_TEXT, t, n);
            EXP_MSG(&want, WS_EV_TEXT, t, n);
            check_stream(&s, MAX, &want);
            sb_free(&s);
        }
    }
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        const char *t = invalid[i];
        size_t n = strlen(t);
        for (size_t cut = 0; cut <= n; cut++) {
            sb s = {0};
            evlog want = {0};
            sb_frame(&s, 0x01, t, cut);
            sb_frame(&s, 0x80, t + cut, n - cut);
            EXP_ERR(&want, WS_ERR_UTF8);
            check_stream(&s, MAX, &want);
            sb_free(&s);
        }
        sb s = {0};
        evlog want = {0};
        sb_frame(&s, 0x81, t, n);
        EXP_ERR(&want, WS_ERR_UTF8);
        check_stream(&s, MAX, &want);
        sb_free(&s);
        /* the same bytes as binary are fine */
        memset(&want, 0, sizeof want);
        sb_frame(&s, 0x82, t, n);
        EXP_MSG(&want, WS_EV_BINARY, t, n);
        check_stream(&s, MAX, &want);
        sb_free(&s);
    }
}

/* Autobahn 6.4.x: the error comes when the invalid byte arrives, while the rest of the frame
 * (and message) has not. */
TEST(reader_utf8_fail_fast_mid_frame)
{
    const char *t = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69"
                    "\x74\x65\x64";
    size_t n = strlen(t);
    for (int fragmented = 0; fragmented < 2; fragmented++) {
        sb s = {0};
        sb_frame(&s, fragmented ? 0x01 : 0x81, t, n);
        size_t hdr = s.n - n;
        ws_reader r;
        ws_reader_config cfg = {true, 1000};
        uint8_t mbuf[1000];
        ws_event ev;
        ws_reader_init(&r, &cfg, mbuf, sizeof mbuf);
        /* header and the first 12 payload bytes (up to the F4, still a valid prefix) */
        CHECK_EQ_INT(ws_reader_feed(&r, s.p, hdr + 12, &ev), hdr + 12);
        CHECK_EQ_INT(ev.type, WS_EV_NONE);
        /* the 0x90 alone: refused now, 8 bytes of the frame still to come */
        CHECK_EQ_INT(ws_reader_feed(&r, s.p + hdr + 12, 1, &ev), 0);
        CHECK_EQ_INT(ev.type, WS_EV_ERROR);
        CHECK_EQ_INT(ev.code, 1007);
        CHECK_EQ_INT(ev.err, WS_ERR_UTF8);
        sb_free(&s);
    }
    /* across fragments: the first fragment ends with F4, the second starts with 90 */
    sb s = {0};
    sb_frame(&s, 0x01, t, 12);
    size_t first = s.n;
    sb_frame(&s, 0x80, t + 12, n - 12);
    ws_reader r;
    ws_reader_config cfg = {true, 1000};
    uint8_t mbuf[1000];
    ws_event ev;
    ws_reader_init(&r, &cfg, mbuf, sizeof mbuf);
    CHECK_EQ_INT(ws_reader_feed(&r, s.p, first, &ev), first);
    CHECK_EQ_INT(ev.type, WS_EV_NONE);
    CHECK(ws_reader_in_message(&r));
    CHECK_EQ_INT(ws_reader_buffered(&r), 12);
    /* the second fragment's header and its first byte */
    CHECK_EQ_INT(ws_reader_feed(&r, s.p + first, 6 + 1, &ev), 6);
    CHECK_EQ_INT(ev.type, WS_EV_ERROR);
    CHECK_EQ_INT(ev.code, 1007);
    sb_free(&s);
}

/* Oversized frames are refused on the header alone, before any payload arrives. */
TEST(reader_too_big_before_payload)
{
    sb s = {0};
    uint8_t p[300] = {0};
    sb_frame(&s, 0x82, p, 300);
    ws_reader r;
    ws_reader_config cfg = {true, 299};
    ws_event ev;
    ws_reader_init(&r, &cfg, NULL, 0);
    CHECK_EQ_INT(ws_reader_feed(&r, s.p, 4, &ev), 0); /* 2 + 16-bit length */
    CHECK_EQ_INT(ev.type, WS_EV_ERROR);
    CHECK_EQ_INT(ev.code, 1009);
    CHECK_EQ_INT(ev.err, WS_ERR_FRAME_SIZE);
    sb_free(&s);
}

/* ws_reader_set_max_message: a raised limit holds for the next header and for the rest of
 * a message in progress (the edge raises it when a client authenticates). */
TEST(reader_limit_raised_mid_stream)
{
    sb s = {0};
    uint8_t p[300];
    memset(p, 'a', sizeof p);
    sb_frame(&s, 0x01, p, 100); /* text, not FIN: 100 */
    sb_frame(&s, 0x80, p, 150); /* continuation, FIN: 250 in all */
    ws_reader r;
    ws_reader_config cfg = {true, 120};
    ws_event ev;
    uint8_t buf[300];
    ws_reader_init(&r, &cfg, buf, sizeof buf);
    size_t k = ws_reader_feed(&r, s.p, s.n, &ev); /* 100 fit; the second frame does not */
    CHECK_EQ_INT(ev.type, WS_EV_ERROR);
    CHECK_EQ_INT(ev.code, 1009);
    ws_reader_init(&r, &cfg, buf, sizeof buf);
    k = ws_reader_feed(&r, s.p, 106, &ev); /* the first frame whole: nothing yet */
    CHECK_EQ_INT(ev.type, WS_EV_NONE);
    ws_reader_set_max_message(&r, 300);
    k = ws_reader_feed(&r, s.p + 106, s.n - 106, &ev);
    CHECK_EQ_INT(ev.type, WS_EV_TEXT);
    CHECK_EQ_INT(ev.len, 250);
    CHECK_EQ_INT(k, s.n - 106);
    sb_free(&s);
}

/* §5.5.1, §7.4 (Autobahn 7.x): close payloads. */
TEST(reader_close_frames)
{
    struct {
        const char *payload;
        size_t len;
        int err;
        uint16_t code;
        const char *reason;
    } cases[] = {
        {"", 0, 0, 1005, ""},                 /* 7.3.1: no status */
        {"\x03", 1, WS_ERR_CLOSE_LEN, 0, ""}, /* 7.3.2: 1 byte */
        {"\x03\xe8", 2, 0, 1000, ""},         /* 7.3.3 */
        {"\x03\xe8"
         "bye",
         5, 0, 1000, "bye"}, /* 7.3.4 */
        {"\x0f\xa1", 2, 0, 4001, ""},
        {"\x03\xf4", 2, 0, 1012, ""},
        {"\x03\xec", 2, WS_ERR_CLOSE_CODE, 0, ""}, /* 1004 */
        {"\x03\xed", 2, WS_ERR_CLOSE_CODE, 0, ""}, /* 1005 */
        {"\x03\xee", 2, WS_ERR_CLOSE_CODE, 0, ""}, /* 1006 */
        {"\x03\xf7", 2, WS_ERR_CLOSE_CODE, 0, ""}, /* 1015 */
        {"\x03\xf8", 2, WS_ERR_CLOSE_CODE, 0, ""}, /* 1016 */
        {"\x0b\xb7", 2, WS_ERR_CLOSE_CODE, 0, ""}, /* 2999 */
        {"\x00\x00", 2, WS_ERR_CLOSE_CODE, 0, ""},
        {"\x13\x88", 2, WS_ERR_CLOSE_CODE, 0, ""},                     /* 5000 */
        {"\x03\xe8\xce\xba\xed\xa0\x80", 7, WS_ERR_CLOSE_UTF8, 0, ""}, /* 7.5.1 */
        {"\x03\xe8\xce", 3, WS_ERR_CLOSE_UTF8, 0, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sb s = {0};
        evlog want = {0};
        sb_frame(&s, 0x81, "Hello", 5);
        sb_frame(&s, 0x01, "He", 2); /* the close comes inside a fragmented message */
        sb_frame(&s, 0x88, cases[i].payload, cases[i].len);
        sb_frame(&s, 0x80, "llo", 3); /* after the close: ignored */
        sb_frame(&s, 0x89, "", 0);
        sb_raw(&s, "\xff\xff garbage", 10);
        EXP_MSG(&want, WS_EV_TEXT, "Hello", 5);
        if (cases[i].err)
            EXP_ERR(&want, cases[i].err);
        else
            EXP_CLOSE(&want, cases[i].code, cases[i].reason);
        check_stream(&s, MAX, &want);
        sb_free(&s);
    }
    /* the longest close: code + 123-byte reason (7.3.5) */
    uint8_t p[125];
    p[0] = 0x03, p[1] = 0xe8;
    memset(p + 2, '*', 123);
    sb s = {0};
    evlog want = {0};
    sb_frame(&s, 0x88, p, 125);
    log_add(&want, WS_EV_CLOSE, p + 2, 123, 1000, 0);
    check_stream(&s, MAX, &want);
    sb_free(&s);
}

/* After CLOSE or ERROR the reader takes everything and reports nothing. */
TEST(reader_finished_discards)
{
    sb s = {0};
    sb_frame(&s, 0x88, "\x03\xe8", 2);
    ws_reader r;
    ws_reader_config cfg = {true, 100};
    ws_event ev;
    ws_reader_init(&r, &cfg, NULL, 0);
    CHECK_EQ_INT(ws_reader_feed(&r, s.p, s.n, &ev), s.n);
    CHECK_EQ_INT(ev.type, WS_EV_CLOSE);
    CHECK_EQ_INT(ev.code, 1000);
    uint8_t more[] = {0x81, 0x80, 1, 2, 3, 4};
    CHECK_EQ_INT(ws_reader_feed(&r, more, sizeof more, &ev), sizeof more);
    CHECK_EQ_INT(ev.type, WS_EV_NONE);

    ws_reader_init(&r, &cfg, NULL, 0);
    uint8_t bad[] = {0x83, 0x80, 1, 2, 3, 4};
    CHECK_EQ_INT(ws_reader_feed(&r, bad, sizeof bad, &ev), 0);
    CHECK_EQ_INT(ev.type, WS_EV_ERROR);
    CHECK_EQ_INT(ev.code, 1002);
    CHECK_EQ_INT(ws_reader_feed(&r, bad, sizeof bad, &ev), sizeof bad);
    CHECK_EQ_INT(ev.type, WS_EV_NONE);
    sb_free(&s);
}

/* A whole one-frame message in the input is delivered in place; pieces go to the buffer. */
TEST(reader_zero_copy_and_buffer)
{
    sb s = {0};
    sb_frame(&s, 0x81, "Hello", 5);
    sb_frame(&s, 0x82, "World", 5);
    ws_reader r;
    ws_reader_config cfg = {true, 100};
    uint8_t mbuf[100];
    ws_event ev;
    ws_reader_init(&r, &cfg, mbuf, sizeof mbuf);
    size_t k = ws_reader_feed(&r, s.p, s.n, &ev);
    CHECK_EQ_INT(k, 11);
    CHECK_EQ_INT(ev.type, WS_EV_TEXT);
    CHECK(ev.data == s.p + 6); /* in place, unmasked */
    CHECK(memcmp(ev.data, "Hello", 5) == 0);
    k += ws_reader_feed(&r, s.p + k, s.n - k, &ev);
    CHECK_EQ_INT(k, s.n);
    CHECK_EQ_INT(ev.type, WS_EV_BINARY);
    CHECK(ev.data == s.p + 17);
    sb_free(&s);

    /* split: assembled in the message buffer */
    sb_frame(&s, 0x81, "Hello", 5);
    ws_reader_init(&r, &cfg, mbuf, sizeof mbuf);
    CHECK_EQ_INT(ws_reader_feed(&r, s.p, 8, &ev), 8);
    CHECK_EQ_INT(ev.type, WS_EV_NONE);
    CHECK_EQ_INT(ws_reader_feed(&r, s.p + 8, s.n - 8, &ev), s.n - 8);
    CHECK_EQ_INT(ev.type, WS_EV_TEXT);
    CHECK(ev.data == mbuf);
    CHECK(memcmp(ev.data, "Hello", 5) == 0);
    sb_free(&s);
}

/* On-demand buffers: NEED_BUFFER asks for exactly what the current frame needs. */
TEST(reader_need_buffer)
{
    uint8_t p[1000];
    for (size_t i = 0; i < sizeof p; i++) p[i] = (uint8_t)i;
    sb s = {0};
    sb_frame(&s, 0x82, p, 1000);
    ws_reader r;
    ws_reader_config cfg = {true, 4096};
    ws_event ev;
    ws_reader_init(&r, &cfg, NULL, 0);
    /* header (8 bytes) and 10 payload bytes: needs 1000 */
    CHECK_EQ_INT(ws_reader_feed(&r, s.p, 18, &ev), 8);
    CHECK_EQ_INT(ev.type, WS_EV_NEED_BUFFER);
    CHECK_EQ_INT(ev.len, 1000);
    uint8_t *b1 = malloc(1000);
    ws_reader_set_buffer(&r, b1, 1000);
    CHECK_EQ_INT(ws_reader_feed(&r, s.p + 8, 10, &ev), 10);
    CHECK_EQ_INT(ev.type, WS_EV_NONE);
    CHECK_EQ_INT(ws_reader_feed(&r, s.p + 18, s.n - 18, &ev), s.n - 18);
    CHECK_EQ_INT(ev.type, WS_EV_BINARY);
    CHECK(ev.data == b1 && ev.len == 1000 && memcmp(b1, p, 1000) == 0);
    CHECK_EQ_INT(ws_reader_buffered(&r), 0);
    /* between messages the buffer may go */
    ws_reader_set_buffer(&r, NULL, 0);
    free(b1);
    sb_free(&s);

    /* fragments: each asks for the total so far plus its own length */
    sb_frame(&s, 0x02, p, 300);
    sb_frame(&s, 0x80, p + 300, 500);
    size_t off = 0, needs[4], nn = 0;
    uint8_t *buf = NULL;
    size_t cap = 0;
    for (;;) {
        size_t k = ws_reader_feed(&r, s.p + off, s.n - off, &ev);
        off += k;
        if (ev.type != WS_EV_NEED_BUFFER) break;
        if (nn < 4) needs[nn++] = ev.len;
        buf = realloc(buf, ev.len);
        cap = ev.len;
        ws_reader_set_buffer(&r, buf, cap);
    }
    CHECK_EQ_INT(ev.type, WS_EV_BINARY);
    CHECK_EQ_INT(ev.len, 800);
    CHECK(memcmp(ev.data, p, 800) == 0);
    REQUIRE(nn == 2);
    CHECK_EQ_INT(needs[0], 300);
    CHECK_EQ_INT(needs[1], 800);
    free(buf);
    sb_free(&s);
}

/* Several messages in one read come out one per call, in order. */
TEST(reader_many_messages_one_read)
{
    sb s = {0};
    evlog want = {0};
    char msg[16];
    for (int i = 0; i < 40; i++) {
        int n = snprintf(msg, sizeof msg, "{\"n\":%d}", i);
        sb_frame(&s, i % 5 == 4 ? 0x89 : 0x81, msg, (size_t)n);
        EXP_MSG(&want, i % 5 == 4 ? WS_EV_PING : WS_EV_TEXT, msg, (size_t)n);
    }
    check_stream(&s, MAX, &want);
    sb_free(&s);
}

TEST_MAIN()
