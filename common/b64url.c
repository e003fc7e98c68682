/* b64url.c - strict, unpadded base64url (see b64url.h for the contract). */
#include "b64url.h"

#include <stdint.h>
#include <stdlib.h>

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t b64url_encoded_len(size_t n) { return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1); }

size_t b64url_decoded_max(size_t n) { return n / 4 * 3 + (n % 4 == 0 ? 0 : n % 4 - 1); }

int b64url_encode(const void *in, size_t n, char *out, size_t cap)
{
    const unsigned char *p = in;
    size_t o = 0, i = 0;

    if (cap < b64url_encoded_len(n) + 1) return B64URL_ENOSPC;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
        out[o++] = b64url_alphabet[v >> 6 & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = b64url_alphabet[v >> 18 & 63];
        out[o++] = b64url_alphabet[v >> 12 & 63];
        out[o++] = b64url_alphabet[v >> 6 & 63];
    }
    out[o] = '\0';
    return B64URL_OK;
}

char *b64url_encode_alloc(const void *in, size_t n)
{
    size_t cap = b64url_encoded_len(n) + 1;
    char *s = malloc(cap);

    if (s == NULL) return NULL;
    (void)b64url_encode(in, n, s, cap);
    return s;
}

/* Character values for decoding: 0..63, or 64 for anything outside the url alphabet. */
static const unsigned char b64url_dtab[256] = {
#define X64_16 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64
    X64_16, X64_16, /* 0x00-0x1f */
    64,     64,     64,     64,     64,     64,     64,     64,
    64,     64,     64,     64,     64,     62,     64,     64, /* 0x20-0x2f: '-' */
    52,     53,     54,     55,     56,     57,     58,     59,
    60,     61,     64,     64,     64,     64,     64,     64, /* 0x30-0x3f: digits */
    64,     0,      1,      2,      3,      4,      5,      6,
    7,      8,      9,      10,     11,     12,     13,     14, /* 0x40-0x4f */
    15,     16,     17,     18,     19,     20,     21,     22,
    23,     24,     25,     64,     64,     64,     64,     63, /* 0x50-0x5f: '_' */
    64,     26,     27,     28,     29,     30,     31,     32,
    33,     34,     35,     36,     37,     38,     39,     40, /* 0x60-0x6f */
    41,     42,     43,     44,     45,     46,     47,     48,
    49,     50,     51,     64,     64,     64,     64,     64,     /* 0x70-0x7f */
    X64_16, X64_16, X64_16, X64_16, X64_16, X64_16, X64_16, X64_16, /* 0x80-0xff */
#undef X64_16
};

/* Four characters at a time (a token's signature and claims are a few hundred each, on
 * every handshake that is not in the verified-token cache), then the 2 or 3 left over. */
int b64url_decode(const char *in, size_t n, unsigned char *out, size_t cap, size_t *outlen)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t o = 0, i = 0, rest = n % 4;
    uint32_t bad = 0, v;

    if (rest == 1) return B64URL_EINVAL;
    if (cap < b64url_decoded_max(n)) return B64URL_ENOSPC;
    for (; i + 4 <= n; i += 4) {
        uint32_t a = b64url_dtab[p[i]], b = b64url_dtab[p[i + 1]], c = b64url_dtab[p[i + 2]],
                 d = b64url_dtab[p[i + 3]];
        bad |= a | b | c | d; /* bit 6 set only by an invalid character */
        v = a << 18 | b << 12 | c << 6 | d;
        out[o++] = (unsigned char)(v >> 16);
        out[o++] = (unsigned char)(v >> 8);
        out[o++] = (unsigned char)v;
    }
    if (rest >= 2) {
        uint32_t a = b64url_dtab[p[i]], b = b64url_dtab[p[i + 1]];
        uint32_t c = rest == 3 ? b64url_dtab[p[i + 2]] : 0;
        bad |= a | b | c;
        v = a << 18 | b << 12 | c << 6;
        out[o++] = (unsigned char)(v >> 16);
        if (rest == 3) out[o++] = (unsigned char)(v >> 8);
        /* Leftover bits (4 or 2) must be zero: otherwise two encodings decode alike. */
        if ((rest == 2 ? (b & 15) : (c & 3)) != 0 && !(bad & 64)) return B64URL_EINVAL;
    }
    if (bad & 64) return B64URL_EINVAL;
    *outlen = o;
    return B64URL_OK;
}
