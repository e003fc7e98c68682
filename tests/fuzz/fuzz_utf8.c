/* fuzz_utf8.c - libFuzzer target for common/ws/utf8.c.
 *
 * The first input byte seeds the chunking; the rest is the text. Oracles: the one-shot
 * verdict and failing index equal an independent validator written from Unicode Table 3-7
 * (ranges) and a decoding validator (code point arithmetic); feeding the same bytes in
 * random pieces gives the same index and final state; utf8_valid agrees; utf8_truncate of a
 * valid text stays valid and within bounds.
 *
 * Build: clang -g -O1 -fsanitize=fuzzer,address,undefined tests/fuzz/fuzz_utf8.c \
 *   common/ws/utf8.c -o fuzz_utf8 */
#include "ws/utf8.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ASSERT(c)                                                                                  \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

/* Table 3-7: index of the first byte after which the input cannot be valid, or n. */
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
            if (k == 0 ? (s[j] < lo || s[j] > hi) : (s[j] < 0x80 || s[j] > 0xBF)) {
                *complete = 0;
                return j;
            }
        }
        i = j;
    }
    *complete = 1;
    return n;
}

/* By decoding: whole-input verdict only. */
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
        if ((len > 1 && cp < min_cp[len]) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

static uint32_t rng_next(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint32_t rng = 0x9E3779B9u ^ data[0];
    const uint8_t *s = data + 1;
    size_t n = size - 1;

    int complete;
    size_t want = ref_check(s, n, &complete);
    ASSERT(ref_decode_valid(s, n) == complete);

    uint32_t st = UTF8_ACCEPT;
    size_t got = utf8_feed(&st, s, n);
    ASSERT(got == want);
    ASSERT((st == UTF8_ACCEPT) == complete);
    ASSERT((st == UTF8_REJECT) == (want < n));
    ASSERT(utf8_valid(s, n) == complete);

    /* random pieces, including empty ones */
    uint32_t st2 = UTF8_ACCEPT;
    size_t off = 0, fail = n;
    while (off < n) {
        size_t k = rng_next(&rng) % 40;
        if (k > n - off) k = n - off;
        size_t ok = utf8_feed(&st2, s + off, k);
        if (ok < k) {
            fail = off + ok;
            break;
        }
        off += k;
    }
    ASSERT(fail == want);
    ASSERT(st2 == st);
    /* rejected stays rejected */
    if (st2 == UTF8_REJECT) ASSERT(utf8_feed(&st2, s, n) == 0 && st2 == UTF8_REJECT);

    /* the longest valid prefix is itself valid up to its last complete character */
    if (want < n) {
        uint32_t st3 = UTF8_ACCEPT;
        ASSERT(utf8_feed(&st3, s, want) == want && st3 != UTF8_REJECT);
    }

    if (complete) {
        size_t max = rng_next(&rng) % (n + 2);
        size_t t = utf8_truncate(s, n, max);
        ASSERT(t <= n && (t <= max || t == n));
        ASSERT(n <= max ? t == n : t + 3 >= max);
        ASSERT(utf8_valid(s, t));
    }
    return 0;
}
