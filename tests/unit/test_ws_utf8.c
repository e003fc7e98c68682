/* test_ws_utf8.c - the incremental UTF-8 validator (common/ws/utf8.c): RFC 3629 and
 * Unicode Table 3-7 boundary cases, fail-fast positions, every split point, exhaustive
 * comparison with two independent reference validators. */
#include "test.h"

#include "ws/utf8.h"

#include <stdint.h>

/* Reference 1, Unicode Table 3-7 as ranges: the index of the first byte after which the input
 * cannot be valid, or n (*complete: it ends between characters). */
static size_t ref_check(const uint8_t *s, size_t n, int *complete)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i], lo = 0x80, hi = 0xBF;
        int need;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c == 0xE0) {
            need = 2, lo = 0xA0;
        } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
            need = 2;
        } else if (c == 0xED) {
            need = 2, hi = 0x9F;
        } else if (c == 0xF0) {
            need = 3, lo = 0x90;
        } else if (c >= 0xF1 && c <= 0xF3) {
            need = 3;
        } else if (c == 0xF4) {
            need = 3, hi = 0x8F;
        } else {
            *complete = 0;
            return i;
        }
        size_t j = i + 1;
        for (int k = 0; k < need; k++, j++) {
            if (j == n) {
                *complete = 0;
                return n;
            }
            uint8_t b = s[j];
            if (k == 0 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) {
                *complete = 0;
                return j;
            }
        }
        i = j;
    }
    *complete = 1;
    return n;
}

/* Reference 2, by decoding: code points from the bit patterns, then overlong, surrogate and
 * range checks. Only says whether the whole input is valid. */
static int ref_decode_valid(const uint8_t *s, size_t n)
{
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80)
            len = 1, cp = c;
        else if ((c & 0xE0) == 0xC0)
            len = 2, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0)
            len = 3, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0)
            len = 4, cp = c & 0x07;
        else
            return 0;
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (len > 1 && cp < min_cp[len]) return 0;
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += len;
    }
    return 1;
}

/* utf8_feed over s in one call; returns the accepted count and *state. */
static size_t one_shot(const uint8_t *s, size_t n, uint32_t *state)
{
    *state = UTF8_ACCEPT;
    return utf8_feed(state, s, n);
}

/* The same fed in pieces of `step` bytes: where it failed (or n) and the final state. */
static size_t pieces(const uint8_t *s, size_t n, size_t step, uint32_t *state)
{
    *state = UTF8_ACCEPT;
    for (size_t off = 0; off < n; off += step) {
        size_t k = n - off < step ? n - off : step;
        size_t ok = utf8_feed(state, s + off, k);
        if (ok < k) return off + ok;
    }
    return n;
}

/* Checks s against the reference with every chunking and split point. */
static void check_like_ref(const uint8_t *s, size_t n)
{
    int complete;
    size_t want = ref_check(s, n, &complete);
    uint32_t st;

    CHECK_EQ_INT(one_shot(s, n, &st), want);
    CHECK_EQ_INT(st == UTF8_ACCEPT, complete);
    CHECK_EQ_INT(st == UTF8_REJECT, want < n);
    CHECK_EQ_INT(utf8_valid(s, n), complete);
    for (size_t step = 1; step <= 4; step++) {
        CHECK_EQ_INT(pieces(s, n, step, &st), want);
        CHECK_EQ_INT(st == UTF8_ACCEPT, complete);
    }
    for (size_t cut = 0; cut <= n; cut++) { /* two pieces */
        st = UTF8_ACCEPT;
        size_t got = utf8_feed(&st, s, cut);
        if (got == cut) got = cut + utf8_feed(&st, s + cut, n - cut);
        CHECK_EQ_INT(got, want);
    }
}

#define S(lit) (const uint8_t *)(lit), sizeof(lit) - 1

TEST(utf8_ascii_and_empty)
{
    uint32_t st = UTF8_ACCEPT;
    CHECK(utf8_valid(NULL, 0));
    CHECK_EQ_INT(utf8_feed(&st, NULL, 0), 0);
    CHECK_EQ_INT(st, UTF8_ACCEPT);
    CHECK(utf8_valid(S("Hello-World")));
    uint8_t all[128];
    for (int i = 0; i < 128; i++) all[i] = (uint8_t)i;
    CHECK(utf8_valid(all, sizeof all)); /* NUL and controls are valid UTF-8 */
}

TEST(utf8_valid_boundaries)
{
    CHECK(utf8_valid(S("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"))); /* κόσμε */
    CHECK(utf8_valid(S("\x7f")));                                         /* U+007F */
    CHECK(utf8_valid(S("\xc2\x80")));                                     /* U+0080 */
    CHECK(utf8_valid(S("\xdf\xbf")));                                     /* U+07FF */
    CHECK(utf8_valid(S("\xe0\xa0\x80")));                                 /* U+0800 */
    CHECK(utf8_valid(S("\xed\x9f\xbf")));                                 /* U+D7FF */
    CHECK(utf8_valid(S("\xee\x80\x80")));                                 /* U+E000 */
    CHECK(utf8_valid(S("\xef\xbf\xbd")));                                 /* U+FFFD */
    CHECK(utf8_valid(S("\xef\xbf\xbf")));     /* U+FFFF (a noncharacter, still valid) */
    CHECK(utf8_valid(S("\xf0\x90\x80\x80"))); /* U+10000 */
    CHECK(utf8_valid(S("\xf4\x8f\xbf\xbf"))); /* U+10FFFF */
    CHECK(utf8_valid(S("\xef\xbb\xbf")));     /* BOM */
}

TEST(utf8_invalid_sequences)
{
    CHECK(!utf8_valid(S("\x80"))); /* lone continuation */
    CHECK(!utf8_valid(S("\xbf")));
    CHECK(!utf8_valid(S("\xc0\x80")));                 /* overlong NUL */
    CHECK(!utf8_valid(S("\xc1\xbf")));                 /* overlong U+007F */
    CHECK(!utf8_valid(S("\xe0\x80\x80")));             /* overlong */
    CHECK(!utf8_valid(S("\xe0\x9f\xbf")));             /* overlong U+07FF */
    CHECK(!utf8_valid(S("\xf0\x80\x80\x80")));         /* overlong */
    CHECK(!utf8_valid(S("\xf0\x8f\xbf\xbf")));         /* overlong U+FFFF */
    CHECK(!utf8_valid(S("\xed\xa0\x80")));             /* U+D800 */
    CHECK(!utf8_valid(S("\xed\xbf\xbf")));             /* U+DFFF */
    CHECK(!utf8_valid(S("\xed\xa0\x80\xed\xb0\x80"))); /* surrogate pair in CESU-8 */
    CHECK(!utf8_valid(S("\xf4\x90\x80\x80")));         /* U+110000 */
    CHECK(!utf8_valid(S("\xf7\xbf\xbf\xbf")));
    CHECK(!utf8_valid(S("\xf8\x88\x80\x80\x80"))); /* 5-byte form */
    CHECK(!utf8_valid(S("\xfc\x84\x80\x80\x80\x80")));
    CHECK(!utf8_valid(S("\xfe")));
    CHECK(!utf8_valid(S("\xff")));
    CHECK(!utf8_valid(S("\xc2\x41")));     /* lead then ASCII */
    CHECK(!utf8_valid(S("\xe1\x80")));     /* truncated */
    CHECK(!utf8_valid(S("\xf0\x90\x80"))); /* truncated */
    CHECK(!utf8_valid(S("\xc2")));
}

/* The offending byte is reported as soon as no continuation could make the input valid. */
TEST(utf8_fail_fast_positions)
{
    uint32_t st;
    CHECK_EQ_INT(one_shot(S("ab\xed\xa0\x80"), &st), 3); /* at A0 */
    CHECK_EQ_INT(st, UTF8_REJECT);
    CHECK_EQ_INT(one_shot(S("\xf4\x90"), &st), 1); /* at 90 */
    CHECK_EQ_INT(one_shot(S("\xe0\x80"), &st), 1); /* at 80 */
    CHECK_EQ_INT(one_shot(S("\xf0\x8f"), &st), 1);
    CHECK_EQ_INT(one_shot(S("x\xc0"), &st), 1); /* C0 is never valid */
    CHECK_EQ_INT(one_shot(S("xy\xf5"), &st), 2);
    CHECK_EQ_INT(one_shot(S("\xe1\x80\x41"), &st), 2); /* at the ASCII byte */
    /* Autobahn 6.3.1: κόσμε with ED A0 80 inside: rejected at the A0, index 12 */
    CHECK_EQ_INT(one_shot(S("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"
                            "\x65\x64\x69\x74\x65\x64"),
                          &st),
                 12);
    /* a prefix that can still become valid is not an error */
    CHECK_EQ_INT(one_shot(S("\xf4\x8f\xbf"), &st), 3);
    CHECK(st != UTF8_ACCEPT && st != UTF8_REJECT);
    /* incomplete across calls, then completed */
    st = UTF8_ACCEPT;
    CHECK_EQ_INT(utf8_feed(&st, S("\xf0\x9f")), 2);
    CHECK_EQ_INT(utf8_feed(&st, S("\x98")), 1);
    CHECK_EQ_INT(utf8_feed(&st, S("\x80")), 1);
    CHECK_EQ_INT(st, UTF8_ACCEPT);
}

TEST(utf8_reject_is_final)
{
    uint32_t st = UTF8_ACCEPT;
    CHECK_EQ_INT(utf8_feed(&st, S("\xff")), 0);
    CHECK_EQ_INT(st, UTF8_REJECT);
    CHECK_EQ_INT(utf8_feed(&st, S("abc")), 0);
    CHECK_EQ_INT(st, UTF8_REJECT);
    CHECK_EQ_INT(utf8_feed(&st, NULL, 0), 0);
}

/* The 16-byte ASCII fast path: a non-ASCII byte at every offset of long ASCII runs. */
TEST(utf8_fast_path_offsets)
{
    uint8_t buf[80];
    for (size_t len = 1; len <= sizeof buf; len++) {
        for (size_t at = 0; at < len; at++) {
            memset(buf, 'a', len);
            buf[at] = 0x80; /* invalid here */
            check_like_ref(buf, len);
            if (at + 1 < len) {
                buf[at] = 0xC3; /* é, valid */
                buf[at + 1] = 0xA9;
                check_like_ref(buf, len);
            }
        }
    }
}

TEST(utf8_every_split_point)
{
    static const char *cases[] = {
        "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",
        ("Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4"
         "\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!"),
        "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\xed\x9f\xbf",
        "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
        "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64",
        "abc\xe0\xa0",
        "\xf8\x88\x80\x80\x80",
        "a\xc0\xaf",
        "\xef\xbf\xbe\xef\xbf\xbf",
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_like_ref((const uint8_t *)cases[i], strlen(cases[i]));
}

/* Every sequence of 1, 2 and 3 bytes: same verdict and same failing index as Table 3-7, and
 * (for whole inputs) the same verdict as decoding. */
TEST(utf8_exhaustive_up_to_3_bytes)
{
    uint8_t s[3];
    long mismatches = 0;
    for (uint32_t v = 0; v < (1u << 24); v++) {
        s[0] = (uint8_t)(v >> 16), s[1] = (uint8_t)(v >> 8), s[2] = (uint8_t)v;
        for (size_t n = 1; n <= 3; n++) {
            if (n < 3 && (v & ((1u << (8 * (3 - n))) - 1)) != 0)
                continue; /* shorter lengths once per prefix */
            int complete;
            uint32_t st = UTF8_ACCEPT;
            size_t want = ref_check(s, n, &complete), got = utf8_feed(&st, s, n);
            if (got != want || (st == UTF8_ACCEPT) != complete ||
                ref_decode_valid(s, n) != complete)
                mismatches++;
        }
    }
    CHECK_EQ_INT(mismatches, 0);
}

/* Four-byte sequences: every lead F0..F7 with continuation bytes and their neighbours. */
TEST(utf8_exhaustive_4_byte_forms)
{
    static const uint8_t tail[] = {0x00, 0x41, 0x7F, 0xC0, 0xC2, 0xE0, 0xF0, 0xFF};
    uint8_t vals[64 + sizeof tail];
    size_t nv = 0;
    long mismatches = 0;
    for (int b = 0x80; b <= 0xBF; b++) vals[nv++] = (uint8_t)b;
    memcpy(vals + nv, tail, sizeof tail);
    nv += sizeof tail;
    for (int lead = 0xF0; lead <= 0xF7; lead++)
        for (size_t a = 0; a < nv; a++)
            for (size_t b = 0; b < nv; b++)
                for (size_t c = 0; c < nv; c++) {
                    uint8_t s[4] = {(uint8_t)lead, vals[a], vals[b], vals[c]};
                    int complete;
                    uint32_t st = UTF8_ACCEPT;
                    size_t want = ref_check(s, 4, &complete), got = utf8_feed(&st, s, 4);
                    if (got != want || (st == UTF8_ACCEPT) != complete ||
                        ref_decode_valid(s, 4) != complete)
                        mismatches++;
                }
    CHECK_EQ_INT(mismatches, 0);
}

TEST(utf8_truncate_at_boundary)
{
    const uint8_t *s = (const uint8_t *)"a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"; /* aé€😀 */
    CHECK_EQ_INT(utf8_truncate(s, 10, 20), 10);
    CHECK_EQ_INT(utf8_truncate(s, 10, 10), 10);
    CHECK_EQ_INT(utf8_truncate(s, 10, 9), 6);
    CHECK_EQ_INT(utf8_truncate(s, 10, 6), 6);
    CHECK_EQ_INT(utf8_truncate(s, 10, 5), 3);
    CHECK_EQ_INT(utf8_truncate(s, 10, 2), 1);
    CHECK_EQ_INT(utf8_truncate(s, 10, 1), 1);
    CHECK_EQ_INT(utf8_truncate(s, 10, 0), 0);
}

TEST_MAIN()
