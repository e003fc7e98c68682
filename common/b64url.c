/* b64url.c - strict, unpadded base64url (see b64url.h for the contract). */
#include "b64url.h"

#include <stdint.h>
#include <stdlib.h>

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Value of one url-alphabet character, or -1. */
static int b64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

size_t b64url_encoded_len(size_t n)
{
    return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
}

size_t b64url_decoded_max(size_t n)
{
    return n / 4 * 3 + (n % 4 == 0 ? 0 : n % 4 - 1);
}

int b64url_encode(const void *in, size_t n, char *out, size_t cap)
{
    const unsigned char *p = in;
    size_t o = 0, i = 0;

    if (cap < b64url_encoded_len(n) + 1)
        return B64URL_ENOSPC;
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

    if (s == NULL)
        return NULL;
    (void)b64url_encode(in, n, s, cap);
    return s;
}

int b64url_decode(const char *in, size_t n, unsigned char *out, size_t cap, size_t *outlen)
{
    size_t o = 0, i = 0;
    uint32_t acc = 0;
    int bits = 0;

    if (n % 4 == 1)
        return B64URL_EINVAL;
    if (cap < b64url_decoded_max(n))
        return B64URL_ENOSPC;
    for (; i < n; i++) {
        int v = b64url_value((unsigned char)in[i]);
        if (v < 0)
            return B64URL_EINVAL;
        acc = (acc << 6 | (uint32_t)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    /* Leftover bits (2 or 4) must be zero: otherwise two encodings decode alike. */
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return B64URL_EINVAL;
    *outlen = o;
    return B64URL_OK;
}
