/* utf8.c - incremental UTF-8 validator: a byte-class table (as in Bjoern Hoehrmann's decoder)
 * and a 9-state shift-based DFA, plus an ASCII fast path that skips 16 bytes at a time
 * between characters.
 *
 * The states follow Unicode Table 3-7 (well-formed byte sequences): after a lead byte the
 * DFA knows the exact range its next byte must fall in, which is what makes it fail fast. */
#include "utf8.h"

#include <string.h>

/* Byte classes: 0 00..7F, 1 80..8F, 2 90..9F, 3 A0..BF, 4 C2..DF, 5 E0, 6 E1..EC EE..EF,
 * 7 ED, 8 F0, 9 F1..F3, 10 F4, 11 C0 C1 F5..FF (never valid). */
/* clang-format off */
static const uint8_t utf8_class[256] = {
    /* 00..7F */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 80..8F, 90..9F */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    /* A0..BF */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    /* C0 C1, C2..DF */
    11, 11, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    /* E0, E1..EC, ED, EE EF */
    5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7, 6, 6,
    /* F0, F1..F3, F4, F5..FF */
    8, 9, 9, 9, 10, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11,
};
/* clang-format on */

/* A shift-based DFA: the state is a bit offset (index * 6) and utf8_row[class] packs, for
 * every state, the next state's offset in that state's 6 bits. A step is
 * (row >> state) & 63, where row depends only on the byte, so the chain from one state to
 * the next is a shift and a mask instead of a table load. */
enum {
    S_ACCEPT = 0 * 6, /* between characters */
    S_REJECT = 1 * 6, /* final */
    S_C1 = 2 * 6,     /* one continuation byte (80..BF) left */
    S_C2 = 3 * 6,     /* two left */
    S_C3 = 4 * 6,     /* three left */
    S_E0 = 5 * 6,     /* after E0: A0..BF (no overlong 3-byte form), then one more */
    S_ED = 6 * 6,     /* after ED: 80..9F (no surrogates), then one more */
    S_F0 = 7 * 6,     /* after F0: 90..BF (no overlong 4-byte form), then two more */
    S_F4 = 8 * 6,     /* after F4: 80..8F (nothing above U+10FFFF), then two more */
};

/* Next states from ACCEPT, REJECT, C1, C2, C3, E0, ED, F0, F4, in that order. */
#define ROW(a, r, c1, c2, c3, e0, ed, f0, f4)                                                      \
    ((uint64_t)(a) << S_ACCEPT | (uint64_t)(r) << S_REJECT | (uint64_t)(c1) << S_C1 |              \
     (uint64_t)(c2) << S_C2 | (uint64_t)(c3) << S_C3 | (uint64_t)(e0) << S_E0 |                    \
     (uint64_t)(ed) << S_ED | (uint64_t)(f0) << S_F0 | (uint64_t)(f4) << S_F4)
#define R S_REJECT
static const uint64_t utf8_row[12] = {
    /* 00..7F */ ROW(S_ACCEPT, R, R, R, R, R, R, R, R),
    /* 80..8F */ ROW(R, R, S_ACCEPT, S_C1, S_C2, R, S_C1, R, S_C2),
    /* 90..9F */ ROW(R, R, S_ACCEPT, S_C1, S_C2, R, S_C1, S_C2, R),
    /* A0..BF */ ROW(R, R, S_ACCEPT, S_C1, S_C2, S_C1, R, S_C2, R),
    /* C2..DF */ ROW(S_C1, R, R, R, R, R, R, R, R),
    /* E0     */ ROW(S_E0, R, R, R, R, R, R, R, R),
    /* E1..EF */ ROW(S_C2, R, R, R, R, R, R, R, R),
    /* ED     */ ROW(S_ED, R, R, R, R, R, R, R, R),
    /* F0     */ ROW(S_F0, R, R, R, R, R, R, R, R),
    /* F1..F3 */ ROW(S_C3, R, R, R, R, R, R, R, R),
    /* F4     */ ROW(S_F4, R, R, R, R, R, R, R, R),
    /* bad    */ ROW(R, R, R, R, R, R, R, R, R),
};
#undef R
#undef ROW

_Static_assert(UTF8_ACCEPT == S_ACCEPT && UTF8_REJECT == S_REJECT, "public states match");

static inline uint32_t step(uint32_t st, uint8_t c)
{
    return (uint32_t)(utf8_row[utf8_class[c]] >> st) & 63;
}

/* True when the 16 bytes at p are all ASCII. */
static inline bool ascii16(const uint8_t *p)
{
    uint64_t a, b;
    memcpy(&a, p, 8);
    memcpy(&b, p + 8, 8);
    return ((a | b) & 0x8080808080808080ull) == 0;
}

size_t utf8_feed(uint32_t *state, const uint8_t *s, size_t n)
{
    uint32_t st = *state;
    size_t i = 0;

    if (st == S_REJECT) return 0;
    while (i < n) {
        if (st == S_ACCEPT) {
            while (n - i >= 16 && ascii16(s + i)) i += 16;
            while (i < n && s[i] < 0x80) i++;
            if (i == n) break;
        }
        st = step(st, s[i]);
        if (st == S_REJECT) {
            *state = st;
            return i;
        }
        i++;
    }
    *state = st;
    return n;
}

bool utf8_valid(const uint8_t *s, size_t n)
{
    uint32_t st = UTF8_ACCEPT;
    return utf8_feed(&st, s, n) == n && st == UTF8_ACCEPT;
}

size_t utf8_truncate(const uint8_t *s, size_t n, size_t max)
{
    size_t k = max;

    if (n <= max) return n;
    while (k > 0 && (s[k] & 0xC0) == 0x80) k--;
    return k;
}
