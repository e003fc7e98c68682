/* utf8.h - incremental UTF-8 validation (RFC 3629, Unicode Table 3-7) for WebSocket text
 * messages and close reasons, whose bytes arrive in pieces (RFC 6455 §5.6, §8.1).
 *
 * A DFA whose state is carried across calls, so a character split across reads or fragments
 * is validated exactly as if it had arrived whole. Rejects overlong forms, surrogates
 * (U+D800..U+DFFF), code points above U+10FFFF, lone continuation bytes and C0, C1, F5..FF.
 * Fail fast: the input is rejected at the first byte after which no continuation could make
 * it valid (e.g. at the 0xA0 of ED A0, at the 0x90 of F4 90), not at the end of a character.
 * Pure functions: no I/O, no allocation, no global state. Prefix utf8_. */
#ifndef EDGE_UTF8_H
#define EDGE_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* States of the validator; every other value means "inside a character". Start (and end) a
 * text at UTF8_ACCEPT; UTF8_REJECT is final. */
#define UTF8_ACCEPT 0u
#define UTF8_REJECT 6u

/* Validates n bytes of s continuing from *state (UTF8_ACCEPT for a new text).
 * Returns the number of bytes accepted: n when no byte was invalid (then *state is
 * UTF8_ACCEPT at a character boundary, another non-reject value inside a character), or
 * the index of the first invalid byte (< n) with *state = UTF8_REJECT. Once rejected, later
 * calls return 0 and leave UTF8_REJECT. s may be NULL when n is 0. */
size_t utf8_feed(uint32_t *state, const uint8_t *s, size_t n);

/* One shot: true when the n bytes of s are complete, valid UTF-8 (n = 0 is valid). */
bool utf8_valid(const uint8_t *s, size_t n);

/* Length of the longest prefix of s[0..n) that ends at a character boundary and is at most
 * max bytes, for truncating a valid string without splitting a character (s must be valid
 * UTF-8; returns n when n <= max). */
size_t utf8_truncate(const uint8_t *s, size_t n, size_t max);

#endif
