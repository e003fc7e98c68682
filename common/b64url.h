/* b64url.h - base64url (RFC 4648 §5) without padding, as JOSE uses it (RFC 7515 §2).
 *
 * The decoder is strict on purpose: only the url alphabet, no '=' padding, no whitespace, no
 * length that leaves a lone character, and the unused low bits of the last character must be
 * zero, so every byte string has exactly one accepted encoding (no signature malleability).
 * Pure functions: no I/O, no allocation except b64url_encode_alloc. Prefix b64url_. */
#ifndef SC_B64URL_H
#define SC_B64URL_H

#include <stddef.h>

enum b64url_err {
    B64URL_OK = 0,
    B64URL_EINVAL = -1, /* not canonical unpadded base64url */
    B64URL_ENOSPC = -2, /* output buffer too small */
};

/* Characters needed to encode n bytes (no NUL). */
size_t b64url_encoded_len(size_t n);
/* Largest byte count that n characters can decode to. */
size_t b64url_decoded_max(size_t n);

/* Encodes n bytes of in into out (cap bytes, room for the NUL included).
 * Returns 0 and a NUL-terminated string, or B64URL_ENOSPC. */
int b64url_encode(const void *in, size_t n, char *out, size_t cap);
/* The same into a malloc'd string (caller frees), or NULL when out of memory. */
char *b64url_encode_alloc(const void *in, size_t n);

/* Decodes the n characters of in (need not be NUL-terminated) into out (cap bytes).
 * Returns 0 and *outlen, or B64URL_EINVAL / B64URL_ENOSPC. */
int b64url_decode(const char *in, size_t n, unsigned char *out, size_t cap, size_t *outlen);

#endif
